/* ceiling_noop.c: the least a consumer-group worker can do, as fast as hiredis goes: the
 * ceiling that streamfleet's noop handler is measured against.
 *
 *   ceiling_noop -p PORT -s STREAM -g GROUP -c CONSUMER -b BATCH [-w MS] [-k MS]
 *                [-L FILE [-n COUNT] [-T SECONDS]] [-P]
 *
 * The loop: XREADGROUP COUNT BATCH; then XACK of that whole batch and the next XREADGROUP,
 * written together (one round trip for both). The first read blocks up to -w ms (10000), for
 * the stream to be filled; the later ones do not block (-k MS makes them block) and the first
 * empty one ends the run: the stream was preloaded, so an empty read means it is drained.
 *
 * Latency mode (-L FILE): every read blocks (-k, 2000 by default: the fleet's default block),
 * the run ends after -T seconds (120) or -n COUNT messages, and for each message carrying a
 * field `t` (CLOCK_REALTIME ns at XADD, see producer.c) the time from `t` to the arrival of its
 * batch here is written to FILE, one nanosecond figure per line.
 *
 * Prints `handled N seconds S` (S: from the first message to the last acknowledgement). -P: then
 * wait until stdin is closed before exiting, so the caller can read this process's CPU time
 * (/proc/PID/stat) after the run. */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench.h"
#include "tests/bench/bench_redis.h"

static void usage(void)
{
    fprintf(stderr, "usage: ceiling_noop [-h HOST] -p PORT -s STREAM -g GROUP -c CONSUMER -b BATCH "
                    "[-w MS] [-k MS] [-L FILE [-n COUNT] [-T SECONDS]] [-P]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *stream = NULL, *group = NULL, *consumer = NULL;
    const char *latfile = NULL;
    int port = 0, opt, hold = 0;
    long batch = 0, first_block = 10000, block = -1, limit = -1;
    double timeout_s = 120;
    while ((opt = getopt(argc, argv, "h:p:s:g:c:b:w:k:n:L:T:P")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': stream = optarg; break;
        case 'g': group = optarg; break;
        case 'c': consumer = optarg; break;
        case 'b': batch = atol(optarg); break;
        case 'w': first_block = atol(optarg); break;
        case 'k': block = atol(optarg); break;
        case 'n': limit = atol(optarg); break;
        case 'L': latfile = optarg; break;
        case 'T': timeout_s = atof(optarg); break;
        case 'P': hold = 1; break;
        default: usage();
        }
    }
    if (port <= 0 || !stream || !group || !consumer || batch < 1 || (limit >= 0 && !latfile))
        usage();
    if (latfile && block < 0)
        block = 2000;

    long long *lat = NULL;
    size_t nlat = 0, caplat = 0;

    redisContext *rc = bench_redis_connect(host, port);

    /* XACK's arguments point into the batch's reply, which lives until the XACK is written. */
    const char **ack;
    size_t *acklen;
    bench_redis_xack_args(stream, group, (size_t)batch, &ack, &acklen);

    char cnt[24], blk[24], first[24];
    snprintf(cnt, sizeof cnt, "%ld", batch);
    snprintf(blk, sizeof blk, "%ld", block);
    snprintf(first, sizeof first, "%ld", first_block);
    /* The first read waits for the stream to be filled; the next ones block only with -k. */
    const char *rd0[11] = { "XREADGROUP", "GROUP", group, consumer, "COUNT", cnt, "BLOCK", first,
                            "STREAMS", stream, ">" };
    const char *rd[11] = { "XREADGROUP", "GROUP", group, consumer, "COUNT", cnt, "BLOCK", blk,
                           "STREAMS", stream, ">" };
    int nrd = 11;
    if (block < 0) {
        memmove(&rd[6], &rd[8], 3 * sizeof rd[0]);
        nrd = 9;
    }
    size_t rd0len[11], rdlen[11];
    for (int i = 0; i < 11; i++)
        rd0len[i] = strlen(rd0[i]);
    for (int i = 0; i < nrd; i++)
        rdlen[i] = strlen(rd[i]);

    long long handled = 0, t_first = 0, t_last = 0;
    long long deadline = bench_mono_ns() + (long long)(timeout_s * 1e9);
    redisReply *r = redisCommandArgv(rc, 11, rd0, rd0len);
    for (;;) {
        if (r == NULL || r->type == REDIS_REPLY_ERROR)
            bench_redis_die(rc, "xreadgroup", r);
        const redisReply *e = bench_redis_entries(r);
        size_t n = e ? e->elements : 0;
        if (n && t_first == 0)
            t_first = bench_mono_ns();
        for (size_t i = 0; i < n; i++) {
            const redisReply *id = e->element[i]->element[0];
            const redisReply *kv = e->element[i]->element[1];
            ack[3 + i] = id->str;
            acklen[3 + i] = id->len;
            if (latfile && kv->type == REDIS_REPLY_ARRAY) {
                for (size_t j = 0; j + 1 < kv->elements; j += 2)
                    if (kv->element[j]->len == 1 && kv->element[j]->str[0] == 't') {
                        if (nlat == caplat) {
                            caplat = caplat ? 2 * caplat : 65536;
                            if ((lat = realloc(lat, caplat * sizeof *lat)) == NULL)
                                return 1;
                        }
                        lat[nlat++] = bench_real_ns() - atoll(kv->element[j + 1]->str);
                        break;
                    }
            }
        }
        handled += (long long)n;
        int done = latfile ? ((limit >= 0 && handled >= limit) || bench_mono_ns() > deadline) : n == 0;

        /* The next read goes out with the acknowledgement of this batch. */
        int expect = 0;
        if (n) {
            redisAppendCommandArgv(rc, (int)(3 + n), ack, acklen);
            expect++;
        }
        if (!done) {
            redisAppendCommandArgv(rc, nrd, rd, rdlen);
            expect++;
        }
        freeReplyObject(r);
        r = NULL;
        if (expect == 0)
            break;
        void *v = NULL;
        if (n) {
            if (redisGetReply(rc, &v) != REDIS_OK || ((redisReply *)v)->type != REDIS_REPLY_INTEGER)
                bench_redis_die(rc, "xack", v);
            t_last = bench_mono_ns();
            freeReplyObject(v);
        }
        if (done)
            break;
        if (redisGetReply(rc, &v) != REDIS_OK)
            v = NULL;
        r = v;
    }
    redisFree(rc);

    if (latfile) {
        FILE *f = fopen(latfile, "w");
        if (f == NULL) {
            perror(latfile);
            return 1;
        }
        for (size_t i = 0; i < nlat; i++)
            fprintf(f, "%lld\n", lat[i]);
        fclose(f);
    }
    bench_report_handled(handled, t_first, t_last, hold);
    free(lat);
    return limit >= 0 && handled < limit ? 1 : 0;
}
