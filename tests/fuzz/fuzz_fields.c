// links: child/fields.c
/* fuzz_fields.c: a field name or path looked up in a message made of the input, and the same
 * text read as a created_field time.
 *
 * The input is split at NUL bytes: the path, then field name and value pairs (values are
 * often JSON). Beyond not crashing: a lookup either finds a value or says why not; a field
 * literally named like the path is what it finds; a time is -1 or not before 1970. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "child/fields.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_PARTS 17                /* the path, 8 pairs */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *copy = malloc(size + 1);
    memcpy(copy, data, size);
    copy[size] = '\0';
    struct str part[MAX_PARTS];
    size_t n = 0;
    const char *p = copy, *end = copy + size;
    while (n < MAX_PARTS && p <= end) {
        const char *z = memchr(p, '\0', (size_t)(end - p));
        size_t len = z ? (size_t)(z - p) : (size_t)(end - p);
        part[n++] = (struct str){ p, len };
        p += len + 1;
    }
    struct msg m = { "s", { "1-0", 3 }, part + 1, (n - 1) / 2, 1 };
    const struct str *path = &part[0];

    struct fields_value v;
    char err[256] = "";
    int rc = fields_get(&m, path->p, path->len, &v, err, sizeof err);
    if (rc == 0) {
        if (v.v.p == NULL)
            abort();
        for (size_t i = 0; i < m.nf; i++) {
            const struct str *k = &m.f[2 * i];
            if (k->len == path->len && memcmp(k->p, path->p, k->len) == 0) {
                if (v.v.p != m.f[2 * i + 1].p)
                    abort();            /* the literal field must win */
                break;
            }
        }
        long long t = fields_time_ms(v.v.p, v.v.len);
        if (t < -1)
            abort();
        fields_value_release(&v);
    } else if (rc != -1 || err[0] == '\0' || v.owned != NULL) {
        abort();
    }
    if (fields_time_ms(path->p, path->len) < -1)
        abort();
    free(copy);
    return 0;
}
