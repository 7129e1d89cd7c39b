/* dur.h: durations ("250ms", "5s", "2m", "1h", "7d"; a bare number means seconds), sizes
 * ("256M", "1K", "512"; binary units) and bounded integers, as written in the config. */
#ifndef SF_DUR_H
#define SF_DUR_H

/* Parse a duration into milliseconds. Returns 0, or -1 when s is empty, negative, has an
 * unknown unit, trailing garbage, or overflows. */
int dur_parse(const char *s, long *ms);
/* Parse a size in bytes: a number with an optional K, M, G suffix (powers of 1024). */
int size_parse(const char *s, long long *bytes);
/* Parse a decimal integer within [min, max]. */
int int_parse(const char *s, long min, long max, long *out);
/* Write ms as the shortest exact form ("1500ms", "5s", "2m"). */
const char *dur_format(long ms, char *buf, unsigned len);

#endif
