/* route.c: admission of a message by its fields, and routing by type. See route.h. */
#include "child/route.h"
#include "child/fields.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* A path that a key names must resolve; a plain field name keeps the meaning its key gives a
 * missing field (url: bad_message from the handler; id_field: the entry id; body_field: all
 * fields). */
static int check_path(const struct msg *m, const char *key, const char *name, size_t n, char *err,
                      size_t errlen)
{
    if (!fields_is_path(name, n))
        return 0;
    struct fields_value v;
    char why[256];
    if (fields_get(m, name, n, &v, why, sizeof why) == -1) {
        snprintf(err, errlen, "%s: %s", key, why);
        return -1;
    }
    fields_value_release(&v);
    return 0;
}

/* The placeholders of a URL template but {stream} and {id}. */
static int check_url(const struct msg *m, const char *tmpl, char *err, size_t errlen)
{
    for (const char *p = tmpl; (p = strchr(p, '{')) != NULL;) {
        const char *close = strchr(p + 1, '}');
        if (close == NULL)
            break;
        const char *name = p + 1;
        size_t n = (size_t)(close - name);
        if (check_path(m, "url", name, n, err, errlen) == -1)
            return -1;
        p = close + 1;
    }
    return 0;
}

int route_admit(const struct pool_conf *p, const struct msg *m, long long *created_ms, char *err,
                size_t errlen)
{
    *created_ms = -1;
    for (size_t i = 0; i < p->nrequire_fields; i++) {
        const char *name = p->require_fields[i];
        struct fields_value v;
        char why[256];
        if (fields_get(m, name, strlen(name), &v, why, sizeof why) == -1) {
            snprintf(err, errlen, "require_fields: %s", why);
            return -1;
        }
        fields_value_release(&v);
    }
    if (p->url && check_url(m, p->url, err, errlen) == -1)
        return -1;
    if (p->id_field && check_path(m, "id_field", p->id_field, strlen(p->id_field), err, errlen) == -1)
        return -1;
    if (p->body_field && check_path(m, "body_field", p->body_field, strlen(p->body_field), err, errlen) == -1)
        return -1;
    if (p->created_field) {
        struct fields_value v;
        char why[256];
        if (fields_get(m, p->created_field, strlen(p->created_field), &v, why, sizeof why) == -1) {
            snprintf(err, errlen, "created_field: %s", why);
            return -1;
        }
        *created_ms = fields_time_ms(v.v.p, v.v.len);
        if (*created_ms < 0)
            snprintf(err, errlen, "created_field '%s': not a time (RFC 3339, or unix seconds or "
                     "milliseconds)", p->created_field);
        fields_value_release(&v);
        if (*created_ms < 0)
            return -1;
    }
    return 0;
}
