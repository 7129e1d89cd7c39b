/* producer.c: fills a stream for scripts/bench.
 *
 *   producer -p PORT -s STREAM -n COUNT [-g GROUP] [-z BYTES] [-P DEPTH] [-f NAME=VALUE]
 *       preload: COUNT entries (fields `type` and a BYTES-long `payload`, 200 by default,
 *       and with -f one more field, e.g. the `to` that examples/handlers/handler.py wants),
 *       DEPTH XADDs per round trip (1000); with -g, then create GROUP at ID 0.
 *   producer -p PORT -s STREAM -n COUNT -r RATE [-z BYTES]
 *       fixed rate: RATE entries a second on an absolute schedule (late ones go out at once,
 *       together, so the schedule does not slip), each stamped with `t`, the CLOCK_REALTIME
 *       nanoseconds taken just before its XADD is written, for latency measurements.
 *
 * Prints one line: `added N seconds S rate R` (and `late_max_us L` at a fixed rate). */
#include <errno.h>
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
    fprintf(stderr, "usage: producer [-h HOST] -p PORT -s STREAM -n COUNT [-g GROUP] [-z BYTES] "
                    "[-P DEPTH] [-r RATE] [-f NAME=VALUE]\n");
    exit(2);
}

/* A reply that must not be an error; exits otherwise. */
static void check(redisContext *rc, redisReply *r, const char *what)
{
    if (r == NULL) {
        fprintf(stderr, "producer: %s: %s\n", what, rc->errstr);
        exit(1);
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "producer: %s: %s\n", what, r->str);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *stream = NULL, *group = NULL, *extra = NULL;
    int port = 0, opt;
    long count = -1, depth = 1000, bytes = 200;
    double rate = 0;
    while ((opt = getopt(argc, argv, "h:p:s:n:g:z:P:r:f:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': stream = optarg; break;
        case 'n': count = atol(optarg); break;
        case 'g': group = optarg; break;
        case 'z': bytes = atol(optarg); break;
        case 'P': depth = atol(optarg); break;
        case 'r': rate = atof(optarg); break;
        case 'f': extra = optarg; break;
        default: usage();
        }
    }
    if (port <= 0 || stream == NULL || count < 0 || depth < 1 || bytes < 0 || rate < 0 ||
        (extra != NULL && (strchr(extra, '=') == NULL || rate > 0)))
        usage();

    char *payload = malloc((size_t)bytes + 1);
    if (payload == NULL)
        return 1;
    /* Printable, and nothing a JSON encoder must escape: every consumer sees the same bytes. */
    for (long i = 0; i < bytes; i++)
        payload[i] = (char)('a' + i % 26);
    payload[bytes] = '\0';

    redisContext *rc = bench_redis_connect(host, port);

    long long t0 = bench_mono_ns();
    long long late_max = 0;
    if (rate == 0) {
        const char *av[9] = { "XADD", stream, "*", "type", "bench", "payload", payload, NULL, NULL };
        size_t al[9] = { 4, strlen(stream), 1, 4, 5, 7, (size_t)bytes, 0, 0 };
        int ac = 7;
        if (extra != NULL) {
            const char *eq = strchr(extra, '=');
            av[7] = extra;
            al[7] = (size_t)(eq - extra);
            av[8] = eq + 1;
            al[8] = strlen(eq + 1);
            ac = 9;
        }
        for (long done = 0; done < count;) {
            long n = count - done < depth ? count - done : depth;
            for (long i = 0; i < n; i++)
                redisAppendCommandArgv(rc, ac, av, al);
            for (long i = 0; i < n; i++) {
                void *v = NULL;
                if (redisGetReply(rc, &v) != REDIS_OK)
                    v = NULL;
                check(rc, v, "xadd");
                freeReplyObject(v);
            }
            done += n;
        }
    } else {
        /* Every entry that is due goes out now, each stamped as it is written; when the
         * producer fell behind (a round trip, a late wake-up), the late ones go together in
         * one pipeline, so the rate holds without a drift. */
        double step = 1e9 / rate;
        char (*t)[24] = malloc((size_t)depth * sizeof *t);
        if (t == NULL)
            return 1;
        for (long i = 0; i < count;) {
            long long due = t0 + (long long)(step * (double)i);
            long long now = bench_mono_ns();
            if (due > now) {
                struct timespec ts = { due / 1000000000LL, due % 1000000000LL };
                while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                    ;
                now = bench_mono_ns();
            }
            if (now - due > late_max)
                late_max = now - due;
            long n = 0;
            while (i + n < count && n < depth && t0 + (long long)(step * (double)(i + n)) <= now) {
                int tl = snprintf(t[n], sizeof t[n], "%lld", bench_real_ns());
                const char *av[9] = { "XADD", stream, "*", "type", "bench", "t", t[n], "payload", payload };
                size_t al[9] = { 4, strlen(stream), 1, 4, 5, 1, (size_t)tl, 7, (size_t)bytes };
                redisAppendCommandArgv(rc, 9, av, al);
                n++;
            }
            for (long k = 0; k < n; k++) {
                void *v = NULL;
                if (redisGetReply(rc, &v) != REDIS_OK)
                    v = NULL;
                check(rc, v, "xadd");
                freeReplyObject(v);
            }
            i += n;
        }
        free(t);
    }
    double secs = (double)(bench_mono_ns() - t0) / 1e9;

    if (group) {
        redisReply *r = redisCommand(rc, "XGROUP CREATE %s %s 0", stream, group);
        check(rc, r, "xgroup create");
        freeReplyObject(r);
    }
    redisFree(rc);
    free(payload);
    printf("added %ld seconds %.6f rate %.0f", count, secs, secs > 0 ? (double)count / secs : 0.0);
    if (rate > 0)
        printf(" late_max_us %lld", late_max / 1000);
    printf("\n");
    return 0;
}
