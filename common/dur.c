/* dur.c: durations, sizes and bounded integers as they are written in the config.
 *
 * Every parser here is strict on purpose: no leading '+' or whitespace, no fractions, no
 * trailing text, no wrap-around. A config value that is not exactly what we understand is an
 * error the operator sees at load time, not a surprise (a "1.5s" read as 1 s, a "-1" read as a
 * huge unsigned number) found in production. */
#include "common/dur.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Read the leading run of decimal digits of s into *n. Returns the number of digits read (0 when
 * s does not start with a digit), or -1 when the number does not fit in a long. */
static int read_digits(const char *s, long *n)
{
    long v = 0;
    int i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        int d = s[i] - '0';
        if (v > (LONG_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *n = v;
    return i;
}

/* Multiply n by unit, refusing what would overflow a long. */
static int scale(long n, long unit, long *out)
{
    if (n > LONG_MAX / unit)
        return -1;
    *out = n * unit;
    return 0;
}

int dur_parse(const char *s, long *ms)
{
    static const struct {
        const char *suffix;
        long ms;
    } units[] = {
        { "ms", 1 }, { "s", 1000 }, { "m", 60 * 1000L }, { "h", 3600 * 1000L },
        { "d", 86400 * 1000L }, { "", 1000 },     /* a bare number means seconds */
    };
    long n;
    int nd = read_digits(s, &n);
    if (nd <= 0)
        return -1;      /* empty, negative, not a number, or too many digits */
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (strcmp(s + nd, units[i].suffix) == 0)
            return scale(n, units[i].ms, ms);
    return -1;
}

int size_parse(const char *s, long long *bytes)
{
    long n;
    int nd = read_digits(s, &n);
    if (nd <= 0)
        return -1;
    const char *u = s + nd;
    int shift;
    if (*u == '\0')
        shift = 0;
    else if (strcmp(u, "K") == 0)
        shift = 10;
    else if (strcmp(u, "M") == 0)
        shift = 20;
    else if (strcmp(u, "G") == 0)
        shift = 30;
    else
        return -1;
    if ((long long)n > (LLONG_MAX >> shift))
        return -1;
    *bytes = (long long)n << shift;
    return 0;
}

int int_parse(const char *s, long min, long max, long *out)
{
    /* strtol alone would accept leading whitespace and '+', and report no error for "". */
    const char *p = s;
    if (*p == '-')
        p++;
    if (*p < '0' || *p > '9')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno == ERANGE || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

const char *dur_format(long ms, char *buf, unsigned len)
{
    static const struct {
        const char *suffix;
        long ms;
    } units[] = {
        { "d", 86400 * 1000L }, { "h", 3600 * 1000L }, { "m", 60 * 1000L }, { "s", 1000 },
    };
    if (ms == 0) {
        snprintf(buf, len, "0s");
        return buf;
    }
    /* The largest unit that divides ms exactly gives the shortest exact form; negative
     * durations never come out of dur_parse(), so they are printed plainly. */
    for (size_t i = 0; ms > 0 && i < sizeof units / sizeof units[0]; i++) {
        if (ms % units[i].ms == 0) {
            snprintf(buf, len, "%ld%s", ms / units[i].ms, units[i].suffix);
            return buf;
        }
    }
    snprintf(buf, len, "%ldms", ms);
    return buf;
}
