/* watch.c: times how long the consumers of a group take to drain a preloaded stream.
 *
 *   watch -p PORT -s STREAM -g GROUP -r PRELOADED -n COUNT [-T SECONDS] [-i MICROSECONDS]
 *
 * The consumers (fleet workers or ceiling processes) are already blocked in XREADGROUP on
 * STREAM. PRELOADED is a stream holding COUNT entries with GROUP created at ID 0. watch
 * RENAMEs it onto STREAM, which wakes every blocked reader at the same instant (Redis 7.0
 * serves readers blocked on a key that RENAME replaces), and from then on polls XINFO GROUPS
 * every 1 ms (-i) until GROUP has read everything (lag 0) and holds nothing pending.
 *
 * One clock for the fleet and the ceiling: the start is when RENAME was sent, the end is the
 * first poll that sees the group drained (at most one interval late: 1 ms in 300 ms or more).
 * Prints `msgs N seconds S rate R`; exits 1 when the group has not drained within -T (60 s). */
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
    fprintf(stderr, "usage: watch [-h HOST] -p PORT -s STREAM -g GROUP -r PRELOADED -n COUNT "
                    "[-T SECONDS] [-i MICROSECONDS]\n");
    exit(2);
}

/* The integer field name of a flat [name, value, ...] reply, or -1 when absent or nil. */
static long long field(const redisReply *a, const char *name)
{
    for (size_t i = 0; i + 1 < a->elements; i += 2) {
        const redisReply *k = a->element[i], *v = a->element[i + 1];
        if (k->type != REDIS_REPLY_STRING && k->type != REDIS_REPLY_STATUS)
            continue;
        if (strcmp(k->str, name) == 0)
            return v->type == REDIS_REPLY_INTEGER ? v->integer : -1;
    }
    return -1;
}

static int is_group(const redisReply *a, const char *group)
{
    for (size_t i = 0; i + 1 < a->elements; i += 2)
        if (a->element[i]->type == REDIS_REPLY_STRING && strcmp(a->element[i]->str, "name") == 0)
            return a->element[i + 1]->type == REDIS_REPLY_STRING &&
                   strcmp(a->element[i + 1]->str, group) == 0;
    return 0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *stream = NULL, *group = NULL, *preloaded = NULL;
    int port = 0, opt;
    long count = -1, interval_us = 1000;
    double timeout_s = 60;
    while ((opt = getopt(argc, argv, "h:p:s:g:r:n:T:i:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': stream = optarg; break;
        case 'g': group = optarg; break;
        case 'r': preloaded = optarg; break;
        case 'n': count = atol(optarg); break;
        case 'T': timeout_s = atof(optarg); break;
        case 'i': interval_us = atol(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || !stream || !group || !preloaded || count < 0 || interval_us < 1)
        usage();

    redisContext *rc = bench_redis_connect(host, port);
    long long t0 = bench_mono_ns();
    redisReply *r = redisCommand(rc, "RENAME %s %s", preloaded, stream);
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "watch: rename %s %s: %s\n", preloaded, stream, r ? r->str : rc->errstr);
        return 1;
    }
    freeReplyObject(r);

    long long deadline = t0 + (long long)(timeout_s * 1e9);
    long long read = -1, lag = -1, pending = -1;
    struct timespec pause = { interval_us / 1000000, (interval_us % 1000000) * 1000 };
    for (;;) {
        long long now = bench_mono_ns();
        r = redisCommand(rc, "XINFO GROUPS %s", stream);
        if (r == NULL) {
            fprintf(stderr, "watch: xinfo groups: %s\n", rc->errstr);
            return 1;
        }
        for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
            const redisReply *g = r->element[i];
            if (g->type != REDIS_REPLY_ARRAY || !is_group(g, group))
                continue;
            read = field(g, "entries-read");
            lag = field(g, "lag");
            pending = field(g, "pending");
        }
        freeReplyObject(r);
        if (lag == 0 && pending == 0 && read >= count) {
            double secs = (double)(now - t0) / 1e9;
            printf("msgs %ld seconds %.6f rate %.0f\n", count, secs, (double)count / secs);
            return 0;
        }
        if (now > deadline) {
            fprintf(stderr, "watch: group %s of %s not drained after %.0f s: entries-read %lld, "
                            "lag %lld, pending %lld\n", group, stream, timeout_s, read, lag, pending);
            return 1;
        }
        nanosleep(&pause, NULL);
    }
}
