/* stamps.c: latency of handler = log, read from the fleet's stdout.
 *
 *   bin/streamfleet -c FILE | stamps -n COUNT -o FILE
 *
 * Each line the log handler prints is one JSON object per message, written in one write(2)
 * when the handler starts on it (handler_log.c). A line holding `"t":"NANOSECONDS"` (the
 * CLOCK_REALTIME stamp producer.c puts into each entry just before its XADD) gives one
 * sample: the time the line arrived here minus t, that is from XADD to handler start plus
 * the JSON formatting, one pipe write and this process's wake-up (a few microseconds).
 *
 * After COUNT samples it writes them to FILE (ns, one a line; through FILE.tmp and rename(),
 * so FILE appears complete) and then goes on reading until EOF, so the fleet never writes
 * into a closed pipe. Prints `samples N lines L` at EOF. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench.h"

static int write_samples(const char *path, const long long *s, size_t n)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        perror(tmp);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%lld\n", s[i]);
    if (fclose(f) != 0 || rename(tmp, path) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *out = NULL;
    long count = -1;
    int opt;
    while ((opt = getopt(argc, argv, "n:o:")) != -1) {
        switch (opt) {
        case 'n': count = atol(optarg); break;
        case 'o': out = optarg; break;
        default:
            fprintf(stderr, "usage: stamps -n COUNT -o FILE\n");
            return 2;
        }
    }
    if (count < 1 || out == NULL) {
        fprintf(stderr, "usage: stamps -n COUNT -o FILE\n");
        return 2;
    }
    long long *samples = malloc((size_t)count * sizeof *samples);
    if (samples == NULL)
        return 1;
    size_t n = 0;
    unsigned long long lines = 0;
    int written = 0;

    static char buf[1 << 20];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(0, buf + len, sizeof buf - len);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        long long now = bench_real_ns();
        len += (size_t)r;
        char *p = buf, *end = buf + len, *nl;
        while ((nl = memchr(p, '\n', (size_t)(end - p))) != NULL) {
            lines++;
            *nl = '\0';
            char *t = (size_t)n < (size_t)count ? strstr(p, "\"t\":\"") : NULL;
            if (t)
                samples[n++] = now - atoll(t + 5);
            p = nl + 1;
        }
        len = (size_t)(end - p);
        memmove(buf, p, len);
        if (len == sizeof buf)
            len = 0;            /* a line longer than the buffer: not ours, drop it */
        if (!written && (long)n >= count) {
            if (write_samples(out, samples, n) == -1)
                return 1;
            written = 1;
        }
    }
    if (!written && write_samples(out, samples, n) == -1)
        return 1;
    printf("samples %zu lines %llu\n", n, lines);
    return (long)n >= count ? 0 : 1;
}
