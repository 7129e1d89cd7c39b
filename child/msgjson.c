/* msgjson.c: a message as JSON text. */
#include "child/msgjson.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

/* qsort_r's order of field positions (size_t) of the msg arg: by name, then by position. */
static int by_name(const void *a, const void *b, void *arg)
{
    const struct msg *m = arg;
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    const struct str *x = &m->f[2 * i], *y = &m->f[2 * j];
    size_t n = x->len < y->len ? x->len : y->len;
    int c = n ? memcmp(x->p, y->p, n) : 0;
    if (c == 0 && x->len != y->len)
        c = x->len < y->len ? -1 : 1;
    if (c == 0)
        c = i < j ? -1 : i > j;
    return c;
}

/* Which fields of m repeat an earlier field's name: NULL when none can (fewer than two
 * fields), else an array of m->nf flags. Sorting positions by name makes this O(n log n):
 * comparing each name with all earlier ones took seconds for a message of 20,000 fields.
 * Caller owns the result; free with free(). */
static bool *repeated_names(const struct msg *m)
{
    if (m->nf < 2)
        return NULL;
    size_t *pos = xcalloc(m->nf, sizeof *pos);
    bool *rep = xcalloc(m->nf, sizeof *rep);
    for (size_t i = 0; i < m->nf; i++)
        pos[i] = i;
    qsort_r(pos, m->nf, sizeof *pos, by_name, (void *)m);
    for (size_t k = 1; k < m->nf; k++) {
        const struct str *a = &m->f[2 * pos[k - 1]], *b = &m->f[2 * pos[k]];
        rep[pos[k]] = a->len == b->len && (a->len == 0 || memcmp(a->p, b->p, a->len) == 0);
    }
    free(pos);
    return rep;
}

void msgjson_base64(struct buf *b, const char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *u = (const unsigned char *)s;
    buf_grow(b, (n + 2) / 3 * 4);
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)u[i] << 16 | (unsigned)u[i + 1] << 8 | u[i + 2];
        char q[4] = { tab[v >> 18], tab[(v >> 12) & 63], tab[(v >> 6) & 63], tab[v & 63] };
        buf_add(b, q, 4);
    }
    if (i < n) {
        unsigned v = (unsigned)u[i] << 16 | (i + 1 < n ? (unsigned)u[i + 1] << 8 : 0);
        char q[4] = { tab[v >> 18], tab[(v >> 12) & 63], i + 1 < n ? tab[(v >> 6) & 63] : '=', '=' };
        buf_add(b, q, 4);
    }
}

void msgjson_fields(struct buf *b, const struct msg *m, bool base64)
{
    bool *rep = repeated_names(m);
    buf_addc(b, '{');
    bool first = true;
    for (size_t i = 0; i < m->nf; i++) {
        const struct str *k = &m->f[2 * i], *v = &m->f[2 * i + 1];
        if (rep && rep[i])
            continue;
        if (!first)
            buf_addc(b, ',');
        first = false;
        buf_addc(b, '"');
        buf_add_json_str(b, k->p, k->len);
        if (base64 && !buf_utf8_valid(v->p, v->len)) {
            buf_adds(b, "\":{\"$base64\":\"");
            msgjson_base64(b, v->p, v->len);
            buf_adds(b, "\"}");
            continue;
        }
        buf_adds(b, "\":\"");
        buf_add_json_str(b, v->p, v->len);
        buf_addc(b, '"');
    }
    buf_addc(b, '}');
    free(rep);
}
