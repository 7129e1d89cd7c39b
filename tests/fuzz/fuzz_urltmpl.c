// links: child/urltmpl.c child/msg.c child/fields.c
/* fuzz_urltmpl.c: URL template filling with a template and a message made of the input.
 *
 * The input is split at NUL bytes: template, stream, entry id, then field name and value
 * pairs. Beyond not crashing: a value that fills a placeholder arrives in the URL made only of
 * unreserved characters and %XX escapes, and decodes back to itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "child/msg.h"
#include "child/urltmpl.h"
#include "common/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARTS 19                /* template, stream, id, 8 pairs */

static int unhex(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* out must be exactly the escaping of s[0..n). */
static void check_escaped(const struct buf *out, const char *s, size_t n)
{
    size_t j = 0;
    for (size_t i = 0; i < out->len; i++) {
        char c = out->p[i];
        int ch;
        if (c == '%') {
            if (i + 2 >= out->len)
                abort();
            int hi = unhex(out->p[i + 1]), lo = unhex(out->p[i + 2]);
            if (hi < 0 || lo < 0)
                abort();
            ch = hi * 16 + lo;
            i += 2;
        } else if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                   c == '-' || c == '.' || c == '_' || c == '~') {
            ch = (unsigned char)c;
        } else {
            abort();                /* a reserved character got through */
        }
        if (j >= n || (unsigned char)s[j] != ch)
            abort();
        j++;
    }
    if (j != n)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A NUL-terminated copy, cut into parts at each NUL. */
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *part[MAX_PARTS];
    size_t len[MAX_PARTS], n = 0;
    for (size_t at = 0; n < MAX_PARTS && at <= size; n++) {
        part[n] = copy + at;
        len[n] = strlen(part[n]);
        at += len[n] + 1;
    }
    static const char empty[] = "";
    while (n < 3) {
        part[n] = empty;
        len[n++] = 0;
    }

    struct str f[MAX_PARTS - 3];
    size_t nf = 0;
    for (size_t i = 3; i + 1 < n; i += 2, nf++) {
        f[2 * nf] = (struct str){ part[i], len[i] };
        f[2 * nf + 1] = (struct str){ part[i + 1], len[i + 1] };
    }
    struct msg m = { .stream = part[1], .id = { part[2], len[2] }, .f = f, .nf = nf, .attempt = 1 };

    struct buf out = BUF_INIT;
    const char *missing = NULL;
    size_t missing_len = 0;
    if (urltmpl_fill(&out, part[0], &m, &missing, &missing_len) == -1) {
        if (missing == NULL || missing < part[0] || missing + missing_len > part[0] + len[0])
            abort();                /* the missing name points into the template */
    }

    /* A placeholder alone is its value, escaped. */
    if (m.nf > 0 && f[0].len > 0 && strchr(f[0].p, '}') == NULL && strchr(f[0].p, '{') == NULL &&
        strcmp(f[0].p, "stream") != 0 && strcmp(f[0].p, "id") != 0) {
        char tmpl[300];
        if (f[0].len < sizeof tmpl - 3) {
            tmpl[0] = '{';
            memcpy(tmpl + 1, f[0].p, f[0].len);
            memcpy(tmpl + 1 + f[0].len, "}", 2);
            if (urltmpl_fill(&out, tmpl, &m, &missing, &missing_len) != 0)
                abort();
            const struct str *v = msg_get(&m, f[0].p);
            check_escaped(&out, v->p, v->len);  /* ".." too: its dots are escaped */
        }
    }
    buf_release(&out);
    free(copy);
    return 0;
}
