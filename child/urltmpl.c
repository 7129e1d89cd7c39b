/* urltmpl.c: URL template filling. See urltmpl.h. */
#include "child/urltmpl.h"
#include "child/fields.h"

#include <stdbool.h>
#include <string.h>

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

static void add_pct(struct buf *out, unsigned char c)
{
    static const char hex[] = "0123456789ABCDEF";
    char e[3] = { '%', hex[c >> 4], hex[c & 15] };
    buf_add(out, e, 3);
}

void urltmpl_escape(struct buf *out, const char *s, size_t n)
{
    buf_grow(out, n);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c))
            buf_addc(out, (char)c);
        else
            add_pct(out, c);
    }
}

/* A value of dots alone would be a dot-segment once it stands between two slashes: libcurl
 * (7.88) resolves "/events/.." to "/" before sending, but leaves "%2E%2E" alone. */
static void add_value(struct buf *out, const char *s, size_t n)
{
    size_t dots = 0;
    while (dots < n && s[dots] == '.')
        dots++;
    if (n > 0 && dots == n) {
        for (size_t i = 0; i < n; i++)
            add_pct(out, '.');
        return;
    }
    urltmpl_escape(out, s, n);
}

int urltmpl_fill(struct buf *out, const char *tmpl, const struct msg *m, const char **missing,
                 size_t *missing_len)
{
    buf_reset(out);
    const char *p = tmpl;
    while (*p) {
        const char *open = strchr(p, '{');
        const char *close = open ? strchr(open + 1, '}') : NULL;
        if (close == NULL) {
            /* conf.c rejects unbalanced braces; should one slip through, it is text */
            buf_adds(out, p);
            break;
        }
        buf_add(out, p, (size_t)(open - p));
        const char *name = open + 1;
        size_t n = (size_t)(close - name);
        if (n == 6 && memcmp(name, "stream", 6) == 0) {
            add_value(out, m->stream, strlen(m->stream));
        } else if (n == 2 && memcmp(name, "id", 2) == 0) {
            add_value(out, m->id.p, m->id.len);
        } else {
            struct fields_value v;
            char err[256];
            if (fields_get(m, name, n, &v, err, sizeof err) == -1) {
                *missing = name;
                *missing_len = n;
                return -1;
            }
            add_value(out, v.v.p, v.v.len);
            fields_value_release(&v);
        }
        p = close + 1;
    }
    return 0;
}
