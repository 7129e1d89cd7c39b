/* fields.c: field names and paths into JSON fields. See fields.h. */
#include "child/fields.h"
#include "common/json.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEPTH_MAX 32            /* segments of a path followed, at most */

static const struct str *field_n(const struct msg *m, const char *name, size_t n)
{
    for (size_t i = 0; i < m->nf; i++) {
        const struct str *k = &m->f[2 * i];
        if (k->len == n && (n == 0 || memcmp(k->p, name, n) == 0))
            return &m->f[2 * i + 1];
    }
    return NULL;
}

bool fields_is_path(const char *name, size_t n)
{
    return memchr(name, '.', n) != NULL;
}

void fields_value_release(struct fields_value *v)
{
    free(v->owned);
    v->owned = NULL;
    v->v = (struct str){ NULL, 0 };
}

/* An array index: digits only, no sign, no leading zero but "0". */
static bool array_index(const char *s, size_t n, size_t *out)
{
    if (n == 0 || n > 9 || (n > 1 && s[0] == '0'))
        return false;
    size_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (size_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

/* Follow rest[0..n) (keys separated by dots) from v; the final value goes into out. */
static int walk(const struct json *v, const char *path, size_t pathlen, const char *rest, size_t n,
                struct fields_value *out, char *err, size_t errlen)
{
    int depth = 0;
    for (;;) {
        const char *dot = memchr(rest, '.', n);
        size_t seg = dot ? (size_t)(dot - rest) : n;
        if (++depth > DEPTH_MAX) {
            snprintf(err, errlen, "'%.*s': deeper than %d levels", (int)pathlen, path, DEPTH_MAX);
            return -1;
        }
        const struct json *next = NULL;
        size_t idx;
        if (json_kind(v) == JSON_K_OBJECT)
            next = json_getn(v, rest, seg);
        else if (json_kind(v) == JSON_K_ARRAY && array_index(rest, seg, &idx))
            next = json_at(v, idx);
        if (next == NULL || json_kind(next) == JSON_K_NULL) {
            /* name the part of the path reached, and what went wrong one step further */
            int reached = (int)(rest - path - 1);
            if (next)
                snprintf(err, errlen, "'%.*s': '%.*s' is null", (int)pathlen, path, reached + 1 + (int)seg, path);
            else if (json_kind(v) == JSON_K_OBJECT)
                snprintf(err, errlen, "'%.*s': '%.*s' has no key '%.*s'", (int)pathlen, path, reached, path,
                         (int)seg, rest);
            else if (json_kind(v) == JSON_K_ARRAY)
                snprintf(err, errlen, "'%.*s': '%.*s' has no element '%.*s'", (int)pathlen, path, reached,
                         path, (int)seg, rest);
            else
                snprintf(err, errlen, "'%.*s': '%.*s' is not an object", (int)pathlen, path, reached, path);
            return -1;
        }
        v = next;
        if (dot == NULL)
            break;
        rest = dot + 1;
        n -= seg + 1;
    }
    const char *s = json_strval(v);
    out->owned = s ? xstrdup(s) : json_dump(v);
    out->v = (struct str){ out->owned, strlen(out->owned) };
    return 0;
}

/* The last document parsed, by its text: the keys of one message (require_fields, the url,
 * created_field, route_field, ...) mostly look into the same field, which is then parsed once,
 * not once per key (a noop pool with three paths into one field: 3.7 to 1.9 us of worker CPU
 * per message). Keyed by the text itself, never by its address: the next batch may reuse the
 * memory. Still reachable at exit, never freed: one document at a time. */
static struct {
    char *text;
    size_t len;
    struct json *doc;           /* NULL: the text is not JSON (why in err) */
    char err[160];
} cache;

static const struct json *parse_cached(const struct str *f, char *why, size_t whylen)
{
    if (cache.text == NULL || cache.len != f->len || memcmp(cache.text, f->p, f->len) != 0) {
        json_free(cache.doc);
        free(cache.text);
        cache.text = xmalloc(f->len + 1);
        memcpy(cache.text, f->p, f->len);
        cache.text[f->len] = '\0';
        cache.len = f->len;
        cache.doc = json_parse(f->p, f->len, cache.err, sizeof cache.err);
        /* jansson quotes the token it choked on: a byte of the message, headed for a log line */
        for (char *e = cache.err; cache.doc == NULL && *e; e++)
            if ((unsigned char)*e < 0x20 || *e == 0x7f)
                *e = '?';
    }
    if (cache.doc == NULL)
        snprintf(why, whylen, "%s", cache.err);
    return cache.doc;
}

int fields_get(const struct msg *m, const char *name, size_t n, struct fields_value *out, char *err,
               size_t errlen)
{
    *out = (struct fields_value){ { NULL, 0 }, NULL };
    const struct str *f = field_n(m, name, n);
    if (f) {
        out->v = *f;
        return 0;
    }
    if (!fields_is_path(name, n)) {
        snprintf(err, errlen, "no field '%.*s'", (int)n, name);
        return -1;
    }
    /* The longest prefix before a dot that names a field holds the document. */
    for (size_t cut = n; cut-- > 0;) {
        if (name[cut] != '.')
            continue;
        f = field_n(m, name, cut);
        if (f == NULL)
            continue;
        char why[160];
        const struct json *doc = parse_cached(f, why, sizeof why);
        if (doc == NULL) {
            snprintf(err, errlen, "'%.*s': field '%.*s' is not JSON (%s)", (int)n, name, (int)cut, name, why);
            return -1;
        }
        return walk(doc, name, n, name + cut + 1, n - cut - 1, out, err, errlen);
    }
    const char *dot = memchr(name, '.', n);
    snprintf(err, errlen, "'%.*s': no field '%.*s'", (int)n, name, (int)(dot - name), name);
    return -1;
}

/* ---- times ------------------------------------------------------------------------------- */

/* n digits at s as a number, or -1. */
static int digits(const char *s, size_t n)
{
    int v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/* "YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)" */
static long long rfc3339_ms(const char *s, size_t n)
{
    if (n < 20 || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        s[13] != ':' || s[16] != ':')
        return -1;
    int year = digits(s, 4), mon = digits(s + 5, 2), day = digits(s + 8, 2);
    int hour = digits(s + 11, 2), min = digits(s + 14, 2), sec = digits(s + 17, 2);
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour < 0 || hour > 23 ||
        min < 0 || min > 59 || sec < 0 || sec > 60)
        return -1;
    size_t i = 19;
    long long ms = 0;
    if (i < n && s[i] == '.') {
        size_t start = ++i;
        long long scale = 100;
        for (; i < n && s[i] >= '0' && s[i] <= '9'; i++) {
            ms += (s[i] - '0') * scale;
            scale /= 10;
        }
        if (i == start)
            return -1;
    }
    long offset_s = 0;
    if (i + 1 == n && (s[i] == 'Z' || s[i] == 'z')) {
        i++;
    } else if (i + 6 == n && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
        int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
        if (oh < 0 || oh > 23 || om < 0 || om > 59)
            return -1;
        offset_s = (oh * 3600L + om * 60L) * (s[i] == '+' ? 1 : -1);
        i += 6;
    } else {
        return -1;
    }
    struct tm tm = { .tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day, .tm_hour = hour,
                     .tm_min = min, .tm_sec = sec };
    time_t t = timegm(&tm);
    if (t == (time_t)-1 || tm.tm_mday != day)       /* February 30th normalised away */
        return -1;
    long long r = ((long long)t - offset_s) * 1000 + ms;
    return r >= 0 ? r : -1;
}

long long fields_time_ms(const char *s, size_t n)
{
    if (n == 0 || n > 64)
        return -1;
    if (s[0] >= '0' && s[0] <= '9' && n >= 5 && s[4] == '-')
        return rfc3339_ms(s, n);
    /* A decimal number, maybe with a fraction: no sign, no exponent. */
    char text[65];
    memcpy(text, s, n);
    text[n] = '\0';
    size_t i = 0, int_digits = 0;
    while (i < n && text[i] >= '0' && text[i] <= '9')
        i++, int_digits++;
    if (i < n && text[i] == '.') {
        i++;
        while (i < n && text[i] >= '0' && text[i] <= '9')
            i++;
    }
    if (int_digits == 0 || int_digits > 16 || i != n)
        return -1;
    double v = strtod(text, NULL);
    return (long long)(v < 1e11 ? v * 1000.0 : v);
}
