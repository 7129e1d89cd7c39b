/* msg.c: looking into stream entries. */
#include "child/msg.h"

#include <string.h>

const struct str *msg_get(const struct msg *m, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < m->nf; i++) {
        const struct str *k = &m->f[2 * i];
        if (k->len == n && memcmp(k->p, name, n) == 0)
            return &m->f[2 * i + 1];
    }
    return NULL;
}

long long msg_id_ms(const struct str *id)
{
    long long ms = 0;
    size_t i = 0;
    for (; i < id->len && id->p[i] >= '0' && id->p[i] <= '9'; i++) {
        if (ms > (long long)9e15)
            return -1;
        ms = ms * 10 + (id->p[i] - '0');
    }
    return i > 0 && i < id->len && id->p[i] == '-' ? ms : -1;
}
