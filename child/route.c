/* route.c: admission of a message by its fields, and routing by type. See route.h. */
#include "child/route.h"
#include "child/fields.h"
#include "child/worker.h"
#include "common/log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static_assert(CONF_ROUTES_MAX + 1 <= SB_NROUTES, "a counter per route and one for the default");

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

/* The paths the handler keys of p name (url, id_field, body_field). */
static int admit_handler_paths(const struct pool_conf *p, const struct msg *m, char *err, size_t errlen)
{
    if (p->url && check_url(m, p->url, err, errlen) == -1)
        return -1;
    if (p->id_field && check_path(m, "id_field", p->id_field, strlen(p->id_field), err, errlen) == -1)
        return -1;
    if (p->body_field && check_path(m, "body_field", p->body_field, strlen(p->body_field), err, errlen) == -1)
        return -1;
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
    if (admit_handler_paths(p, m, err, errlen) == -1)
        return -1;
    if (p->route_field && check_path(m, "route_field", p->route_field, strlen(p->route_field), err, errlen) == -1)
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

/* ---- the router --------------------------------------------------------------------------- */

struct target {
    const struct handler_ops *ops;
    struct handler *h;
    const struct pool_conf *conf;
    int nfds;                       /* what its fds() added this turn */
};

struct handler {
    struct child *child;
    const struct pool_conf *pool;
    struct target *t;
    size_t nt;
    char error[ERROR_TEXT_MAX];
};

const struct handler_ops *handler_ops_for(enum handler_kind k)
{
    switch (k) {
    case HANDLER_LOG: return &handler_log_ops;
    case HANDLER_NOOP: return &handler_noop_ops;
    case HANDLER_HTTP: return &handler_http_ops;
    case HANDLER_EXEC: return &handler_exec_ops;
    case HANDLER_SUBPROCESS: return &handler_subprocess_ops;
    case HANDLER_PLUGIN: return &handler_plugin_ops;
    }
    return NULL;
}

static void dead(struct handler *h, struct ticket *t, const char *reason)
{
    struct outcome o = { .disp = DISP_DEAD, .reason = reason, .retry_after_ms = -1, .error = h->error,
                         .seconds = -1 };
    ticket_done(t, &o);
}

/* A type for a message: printable, cut short (it goes into a log line and dlq.error). */
static void printable(char *out, size_t len, const struct str *v)
{
    size_t n = 0;
    for (size_t i = 0; i < v->len && n + 4 < len; i++) {
        unsigned char ch = (unsigned char)v->p[i];
        out[n++] = ch >= 0x20 && ch < 0x7f && ch != '\'' ? (char)ch : '?';
    }
    if (n + 4 >= len && n < v->len)
        out[n++] = '.', out[n++] = '.', out[n++] = '.';
    out[n] = '\0';
}

/* Which route m takes: its index (p->nroutes: the default), or -1 for none (error set). */
static int pick(struct handler *h, const struct msg *m)
{
    const struct pool_conf *p = h->pool;
    struct fields_value v = { { NULL, 0 }, NULL };
    char why[256] = "no route_field";
    bool has = p->route_field && fields_get(m, p->route_field, strlen(p->route_field), &v, why, sizeof why) == 0;
    int r = -1;
    for (size_t i = 0; has && i < p->nroutes; i++) {
        const char *type = p->routes[i].type;
        if (strlen(type) == v.v.len && memcmp(type, v.v.p, v.v.len) == 0) {
            r = (int)i;
            break;
        }
    }
    if (r < 0 && p->route_default.handler)
        r = (int)p->nroutes;
    if (r < 0) {
        char type[72];
        if (has) {
            printable(type, sizeof type, &v.v);
            snprintf(h->error, sizeof h->error, "%s is '%s': no route.%s and no route.default",
                     p->route_field, type, type);
        } else {
            snprintf(h->error, sizeof h->error, "route_field: %.150s, and no route.default", why);
        }
    }
    fields_value_release(&v);
    return r;
}

static void route_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    const struct pool_conf *p = h->pool;
    int r = pick(h, m);
    if (r < 0) {
        dead(h, t, "no_route");
        return;
    }
    const struct route_conf *rc = (size_t)r < p->nroutes ? &p->routes[r] : &p->route_default;
    struct target *tg = &h->t[rc->target];
    /* The paths its handler's keys name (url, id_field, body_field) must resolve too; the
     * pool's own were checked before (route_admit()). */
    if (admit_handler_paths(tg->conf, m, h->error, sizeof h->error) == -1) {
        dead(h, t, "bad_message");
        return;
    }
    sb_add(h->child->slot, (size_t)r < p->nroutes ? SB_ROUTE_FIRST + r : SB_ROUTE_LAST, 1);
    tg->ops->submit(tg->h, m, t);
}

static int route_fds(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms)
{
    int n = 0;
    for (size_t i = 0; i < h->nt; i++) {
        struct target *tg = &h->t[i];
        tg->nfds = tg->ops->fds ? tg->ops->fds(tg->h, pfd + n, max - n, timeout_ms) : 0;
        n += tg->nfds;
    }
    return n;
}

static void route_run(struct handler *h, const struct pollfd *pfd, int n)
{
    int at = 0;
    for (size_t i = 0; i < h->nt; i++) {
        struct target *tg = &h->t[i];
        if (tg->ops->run)
            tg->ops->run(tg->h, pfd + at, at + tg->nfds <= n ? tg->nfds : 0);
        at += tg->nfds;
    }
}

static unsigned route_inflight(struct handler *h)
{
    unsigned n = 0;
    for (size_t i = 0; i < h->nt; i++)
        n += h->t[i].ops->inflight(h->t[i].h);
    return n;
}

/* While any target takes messages: one endpoint down must not stop the other routes (a
 * message for it is handed back untried, its attempt not counted: handler_http.c). */
static bool route_accepting(struct handler *h)
{
    for (size_t i = 0; i < h->nt; i++)
        if (!h->t[i].ops->accepting || h->t[i].ops->accepting(h->t[i].h))
            return true;
    return false;
}

static void route_close(struct handler *h)
{
    for (size_t i = 0; i < h->nt; i++)
        if (h->t[i].h)
            h->t[i].ops->close(h->t[i].h);
    free(h->t);
    free(h);
}

static struct handler *route_open(struct child *c, const struct pool_conf *p)
{
    struct handler *h = xcalloc(1, sizeof *h);
    h->child = c;
    h->pool = p;
    h->t = xcalloc(p->ntargets ? p->ntargets : 1, sizeof *h->t);
    h->nt = p->ntargets;
    for (size_t i = 0; i < h->nt; i++) {
        struct target *tg = &h->t[i];
        tg->conf = &p->targets[i];
        tg->ops = handler_ops_for(tg->conf->handler);
        tg->h = tg->ops ? tg->ops->open(c, tg->conf) : NULL;
        if (tg->h == NULL) {
            route_close(h);
            return NULL;
        }
    }
    return h;
}

const struct handler_ops handler_route_ops = {
    .name = "route",
    .open = route_open,
    .submit = route_submit,
    .fds = route_fds,
    .run = route_run,
    .inflight = route_inflight,
    .accepting = route_accepting,
    .close = route_close,
};
