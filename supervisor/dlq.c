/* dlq.c: the dead-letter stream of a pool, seen and handled from the command line.
 *   streamfleet dlq list   -c FILE --pool NAME [--count N]
 *   streamfleet dlq replay -c FILE --pool NAME (--all | ID...)
 *   streamfleet dlq purge  -c FILE --pool NAME (--all | --before DURATION)
 * A short-lived process with one synchronous hiredis connection. */
#include "supervisor/dlq.h"
#include "supervisor/rediscli.h"
#include "common/conf.h"
#include "common/dur.h"
#include "common/log.h"

#include <getopt.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Put a dead letter back on its source stream without its dlq.* fields and remove it from the
 * dead-letter stream, in one step. KEYS: dlq, stream. ARGV: id. Returns the new id, or nil when
 * the dead letter does not exist. */
static const char replay_lua[] =
    "local e = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1])\n"
    "if #e == 0 then return false end\n"
    "local f, out = e[1][2], {}\n"
    "for i = 1, #f, 2 do\n"
    "  if string.sub(f[i], 1, 4) ~= 'dlq.' then out[#out + 1] = f[i]; out[#out + 1] = f[i + 1] end\n"
    "end\n"
    "if #out == 0 then return redis.error_reply('dead letter ' .. ARGV[1] .. ' has no original fields') end\n"
    "local id = redis.call('XADD', KEYS[2], '*', unpack(out))\n"
    "redis.call('XDEL', KEYS[1], ARGV[1])\n"
    "return id\n";

static void usage(void)
{
    fprintf(stderr, "usage: streamfleet dlq list   -c FILE --pool NAME [--count N]\n"
                    "       streamfleet dlq replay -c FILE --pool NAME (--all | ID...)\n"
                    "       streamfleet dlq purge  -c FILE --pool NAME (--all | --before DURATION)\n");
}

static redisContext *connect_redis(const struct redis_addr *a)
{
    char err[300], where[300];
    redisContext *rc = rediscli_connect(a, 5000, err, sizeof err);
    if (rc == NULL)
        fprintf(stderr, "streamfleet: %s (%s)\n", err, conf_redis_display(a, where, sizeof where));
    return rc;
}

/* The value of field name in a flat [f, v, f, v...] reply, or "". */
static const char *field(const redisReply *kv, const char *name)
{
    for (size_t i = 0; kv->type == REDIS_REPLY_ARRAY && i + 1 < kv->elements; i += 2)
        if (kv->element[i]->type == REDIS_REPLY_STRING && strcmp(kv->element[i]->str, name) == 0)
            return kv->element[i + 1]->type == REDIS_REPLY_STRING ? kv->element[i + 1]->str : "";
    return "";
}

static int do_list(redisContext *rc, const struct pool_conf *p, long count)
{
    redisReply *r = redisCommand(rc, "XRANGE %s - + COUNT %ld", p->dlq, count);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "streamfleet: xrange %s: %s\n", p->dlq, r ? r->str : rc->errstr);
        if (r)
            freeReplyObject(r);
        return 1;
    }
    printf("%-22s %-20s %-14s %-8s %-22s %s\n", "DLQ ID", "TIME (UTC)", "REASON", "ATTEMPTS", "SOURCE ID", "ERROR");
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2)
            continue;
        const redisReply *kv = e->element[1];
        long long ms = atoll(field(kv, "dlq.time"));
        char when[32] = "-";
        if (ms > 0) {
            time_t t = (time_t)(ms / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
        }
        printf("%-22s %-20s %-14s %-8s %-22s %s\n", e->element[0]->str, when, field(kv, "dlq.reason"),
               field(kv, "dlq.attempts"), field(kv, "dlq.id"), field(kv, "dlq.error"));
    }
    printf("%zu dead letter%s in %s\n", r->elements, r->elements == 1 ? "" : "s", p->dlq);
    freeReplyObject(r);
    return 0;
}

static int replay_one(redisContext *rc, const struct pool_conf *p, const char *id, char *newid, size_t len)
{
    const char *argv[6] = { "EVAL", replay_lua, "2", p->dlq, p->stream, id };
    size_t alen[6];
    for (int i = 0; i < 6; i++)
        alen[i] = strlen(argv[i]);
    redisReply *r = redisCommandArgv(rc, 6, argv, alen);
    if (r == NULL) {
        fprintf(stderr, "streamfleet: replay %s: %s\n", id, rc->errstr);
        return -1;
    }
    int rc2 = 0;
    if (r->type == REDIS_REPLY_STRING) {
        snprintf(newid, len, "%s", r->str);
    } else if (r->type == REDIS_REPLY_NIL) {
        rc2 = 1;
    } else {
        fprintf(stderr, "streamfleet: replay %s: %s\n", id, r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc2 = -1;
    }
    freeReplyObject(r);
    return rc2;
}

static int do_replay(redisContext *rc, const struct pool_conf *p, bool all, char **ids, int nids)
{
    long n = 0;
    char newid[64];
    if (!all) {
        /* Every ID must exist before any is replayed: a typo must not replay half a list. */
        for (int i = 0; i < nids; i++) {
            redisReply *r = redisCommand(rc, "XRANGE %s %s %s", p->dlq, ids[i], ids[i]);
            bool found = r && r->type == REDIS_REPLY_ARRAY && r->elements == 1;
            if (r == NULL || r->type == REDIS_REPLY_ERROR) {
                fprintf(stderr, "streamfleet: %s: %s\n", ids[i], r ? r->str : rc->errstr);
                if (r)
                    freeReplyObject(r);
                return 1;
            }
            freeReplyObject(r);
            if (!found) {
                fprintf(stderr, "streamfleet: no dead letter %s in %s: nothing replayed\n", ids[i], p->dlq);
                return 1;
            }
        }
        for (int i = 0; i < nids; i++) {
            int r = replay_one(rc, p, ids[i], newid, sizeof newid);
            if (r == -1)
                return 1;
            if (r == 0) {
                printf("%s -> %s %s\n", ids[i], p->stream, newid);
                n++;
            }
        }
    } else {
        for (;;) {
            redisReply *r = redisCommand(rc, "XRANGE %s - + COUNT 100", p->dlq);
            if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
                fprintf(stderr, "streamfleet: xrange %s: %s\n", p->dlq, r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
                if (r)
                    freeReplyObject(r);
                return 1;
            }
            size_t got = r->elements;
            for (size_t i = 0; i < got; i++) {
                const char *id = r->element[i]->element[0]->str;
                int rr = replay_one(rc, p, id, newid, sizeof newid);
                if (rr == -1) {
                    freeReplyObject(r);
                    printf("replayed %ld dead letter%s to %s before the error\n", n, n == 1 ? "" : "s", p->stream);
                    return 1;
                }
                n += rr == 0;
            }
            freeReplyObject(r);
            if (got == 0)
                break;
        }
    }
    printf("replayed %ld dead letter%s to %s\n", n, n == 1 ? "" : "s", p->stream);
    return 0;
}

static int do_purge(redisContext *rc, const struct pool_conf *p, bool all, long before_ms)
{
    redisReply *r;
    if (all) {
        r = redisCommand(rc, "XTRIM %s MAXLEN 0", p->dlq);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long cut = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - before_ms;
        /* Dead-letter entry ids are the time of the move: MINID trims everything older. */
        r = redisCommand(rc, "XTRIM %s MINID %lld-0", p->dlq, cut < 0 ? 0 : cut);
    }
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        fprintf(stderr, "streamfleet: xtrim %s: %s\n", p->dlq, r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
        if (r)
            freeReplyObject(r);
        return 1;
    }
    printf("purged %lld dead letter%s from %s\n", r->integer, r->integer == 1 ? "" : "s", p->dlq);
    freeReplyObject(r);
    return 0;
}

int dlq_main(int argc, char **argv)
{
    if (argc < 2) {
        usage();
        return 2;
    }
    const char *verb = argv[1];
    const char *path = "/etc/streamfleet/streamfleet.ini", *pool = NULL, *before = NULL;
    long count = 100;
    bool all = false;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "pool", required_argument, NULL, 'p' },
        { "count", required_argument, NULL, 'n' },  { "all", no_argument, NULL, 'a' },
        { "before", required_argument, NULL, 'b' }, { NULL, 0, NULL, 0 },
    };
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "c:p:n:ab:", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'p': pool = optarg; break;
        case 'a': all = true; break;
        case 'b': before = optarg; break;
        case 'n':
            if (int_parse(optarg, 1, 1000000, &count) == -1) {
                fprintf(stderr, "streamfleet: --count must be a number from 1 to 1000000\n");
                return 2;
            }
            break;
        default: usage(); return 2;
        }
    }
    bool is_list = strcmp(verb, "list") == 0, is_replay = strcmp(verb, "replay") == 0,
         is_purge = strcmp(verb, "purge") == 0;
    if ((!is_list && !is_replay && !is_purge) || pool == NULL) {
        usage();
        return 2;
    }
    long before_ms = 0;
    if (is_purge && (all == (before != NULL))) {
        fprintf(stderr, "streamfleet: dlq purge needs exactly one of --all or --before DURATION\n");
        return 2;
    }
    if (before && dur_parse(before, &before_ms) == -1) {
        fprintf(stderr, "streamfleet: --before: not a duration: %s\n", before);
        return 2;
    }
    if (is_replay && (all == (optind < argc))) {
        fprintf(stderr, "streamfleet: dlq replay needs --all or IDs, not both\n");
        return 2;
    }

    struct conf *c = conf_load_or_report(path, NULL);
    if (c == NULL)
        return 1;
    int status = 1;
    const struct pool_conf *p = conf_pool(c, pool);
    if (p == NULL) {
        fprintf(stderr, "streamfleet: %s has no pool named '%s'\n", path, pool);
        goto out;
    }
    redisContext *rc = connect_redis(&c->redis);
    if (rc == NULL)
        goto out;
    if (is_list)
        status = do_list(rc, p, count);
    else if (is_replay)
        status = do_replay(rc, p, all, argv + optind, argc - optind);
    else
        status = do_purge(rc, p, all, before_ms);
    redisFree(rc);
out:
    conf_free(c);
    return status;
}
