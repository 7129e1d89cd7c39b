/* handler_plugin.c: handler = plugin, a C handler the worker loads and calls in-process.
 *
 * The ABI is include/streamfleet/plugin.h. open() loads the shared object after fork (dlopen
 * RTLD_NOW | RTLD_LOCAL: an unresolved symbol fails here, not in the middle of a message,
 * and the plugin's symbols cannot shadow ours), checks the ABI version and the entry points,
 * and runs init(). submit() gives each message to handle() as a struct sf_message (a view of
 * the worker's batch: nothing is copied but the array of field pointers) with a struct
 * sf_call standing for its ticket; the answer, at once or later through host->done(), maps
 * onto a struct outcome. fds()/run() pass the worker's poll() through to an asynchronous
 * plugin.
 *
 * Nothing is isolated: a plugin that crashes takes the worker with it. The master replaces
 * the worker (slowly when it keeps dying soon after start, 30 s when open() fails: exit 78),
 * and the message it held stays pending until claim_idle hands it to a worker again. */
#include "child/handler.h"
#include "child/handler_plugin.h"
#include "common/log.h"
#include "include/streamfleet/plugin.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define REASON_MAX 31                   /* the longest dead-letter reason a plugin may give */
#define REASON_DEFAULT "plugin_rejected"

/* One message in the plugin's hands: what the plugin knows as its call. */
struct sf_call {
    struct sf_call *next;               /* in the free list */
    struct sf_call *all;                /* every call made, for close() */
    struct handler *h;
    struct ticket *ticket;              /* NULL: answered (in the free list) */
    struct timespec start;
};

struct handler {
    struct child *child;
    const struct pool_conf *pool;
    const struct sf_plugin *pl;
    void *state;
    struct sf_host host;
    struct sf_bytes *fields;            /* the message view's field array, reused */
    size_t fields_cap;
    struct sf_call *free;
    struct sf_call *all;
    unsigned inflight;                  /* calls between submit() and their answer */
    bool closing;                       /* in close(): fini() may not answer */
    char error[256];                    /* scratch for outcome texts */
};

/* ---- loading ----------------------------------------------------------------------------- */

static void host_log(int level, const char *text)
{
    if (text == NULL)
        return;
    switch (level) {
    case 0: log_debug("plugin: %s", text); break;
    case 1: log_info("plugin: %s", text); break;
    case 2: log_warnx("plugin: %s", text); break;
    default: log_errorx("plugin: %s", text); break;
    }
}

/* Load p's plugin, check it, and run its init(). Returns 0 with *pl and *state set, or -1
 * with the reason in err. The library stays loaded for the life of the process, even on
 * failure: init() may have started anything (a thread, an atexit handler) that needs its
 * code, and the process ends soon after either way. */
static int load(const struct pool_conf *p, const struct sf_host *host, const struct sf_plugin **pl,
                void **state, char *err, size_t len)
{
    void *so = dlopen(p->plugin, RTLD_NOW | RTLD_LOCAL);
    if (so == NULL) {
        snprintf(err, len, "cannot load: %s", dlerror());
        return -1;
    }
    const struct sf_plugin *x = dlsym(so, STREAMFLEET_PLUGIN_SYMBOL);
    if (x == NULL) {
        snprintf(err, len, "no symbol '%s': not a streamfleet plugin", STREAMFLEET_PLUGIN_SYMBOL);
        return -1;
    }
    if (x->abi != STREAMFLEET_PLUGIN_ABI) {
        snprintf(err, len, "built for plugin ABI version %u, this streamfleet speaks version %d: "
                 "rebuild it against this include/streamfleet/plugin.h", x->abi, STREAMFLEET_PLUGIN_ABI);
        return -1;
    }
    const char *missing = x->init == NULL ? "init" : x->handle == NULL ? "handle" :
                          x->fds && x->run == NULL ? "run (it has fds)" : NULL;
    if (missing) {
        snprintf(err, len, "%s.%s is NULL", STREAMFLEET_PLUGIN_SYMBOL, missing);
        return -1;
    }

    struct sf_param *params = xcalloc(p->nplugin_params + 1, sizeof *params);
    for (size_t i = 0; i < p->nplugin_params; i++)
        params[i] = (struct sf_param){ p->plugin_params[2 * i], p->plugin_params[2 * i + 1] };
    char perr[256] = "";
    *state = NULL;
    int rc = x->init(host, params, p->nplugin_params, state, perr, sizeof perr);
    free(params);
    if (rc != 0) {
        perr[sizeof perr - 1] = '\0';
        snprintf(err, len, "init failed: %s", perr[0] ? perr : "(no reason given)");
        return -1;
    }
    *pl = x;
    return 0;
}

/* host->done() where no call can be answered: the check's init() and fini(). */
static void no_done(struct sf_call *call, const struct sf_answer *a)
{
    (void)call;
    (void)a;
    log_errorx("plugin: done() outside handle() and run() (a plugin bug): ignored");
}

int handler_plugin_check(const struct pool_conf *p, char *err, size_t len)
{
    struct sf_host host = { .abi = STREAMFLEET_PLUGIN_ABI, .done = no_done, .log = host_log };
    const struct sf_plugin *pl;
    void *state;
    if (load(p, &host, &pl, &state, err, len) == -1)
        return -1;
    if (pl->fini)
        pl->fini(state);
    return 0;
}

/* ---- answers ----------------------------------------------------------------------------- */

static bool valid_reason(const char *r)
{
    size_t n = r ? strlen(r) : 0;
    if (n == 0 || n > REASON_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '_'))
            return false;
    return true;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

/* Report call's answer with its ticket and put the call back. timed: the answer came later
 * (the worker measured only submit(), so we say how long it took). */
static void finish(struct handler *h, struct sf_call *call, int result, const struct sf_answer *a, bool timed)
{
    struct outcome o = { .disp = DISP_RETRY, .retry_after_ms = -1, .seconds = -1 };
    switch (result) {
    case SF_ACK:
        o.disp = DISP_ACK;
        break;
    case SF_RETRY:
        o.disp = DISP_RETRY;
        snprintf(h->error, sizeof h->error, "%s", a->error ? a->error : "the plugin asked for a retry");
        o.error = h->error;
        o.retry_after_ms = a->retry_after_ms >= 0 ? a->retry_after_ms : -1;
        break;
    case SF_DEAD:
        o.disp = DISP_DEAD;
        o.reason = valid_reason(a->reason) ? a->reason : REASON_DEFAULT;
        if (a->error)
            snprintf(h->error, sizeof h->error, "%s", a->error);
        else if (a->reason && o.reason != a->reason)
            snprintf(h->error, sizeof h->error, "(the plugin's reason was not 1 to %d of [a-z0-9_])", REASON_MAX);
        else
            h->error[0] = '\0';
        o.error = h->error[0] ? h->error : NULL;
        break;
    default:
        /* A plugin bug must not lose the message: it stays pending and is tried again. */
        snprintf(h->error, sizeof h->error, "the plugin answered %d, not ack, retry or dead", result);
        o.error = h->error;
        break;
    }
    if (timed)
        o.seconds = seconds_since(&call->start);
    struct ticket *t = call->ticket;
    call->ticket = NULL;
    call->next = h->free;
    h->free = call;
    h->inflight--;
    ticket_done(t, &o);
}

/* host->done(): the answer of a call handle() left pending. */
static void host_done(struct sf_call *call, const struct sf_answer *a)
{
    if (call == NULL || call->ticket == NULL) {
        log_errorx("plugin: done() for a call that was already answered (a plugin bug): ignored");
        return;
    }
    if (call->h->closing) {
        /* The worker is exiting: its tickets are abandoned and stay pending (handler.h). */
        log_errorx("plugin: done() from fini() (a plugin bug): ignored, the message stays pending");
        return;
    }
    static const struct sf_answer none = { .result = SF_RETRY, .retry_after_ms = -1 };
    if (a == NULL)
        a = &none;
    finish(call->h, call, a->result == SF_PENDING ? -1 : (int)a->result, a, true);
}

/* ---- the handler ------------------------------------------------------------------------- */

static struct handler *plugin_open(struct child *c, const struct pool_conf *p)
{
    static struct handler h;
    h.child = c;
    h.pool = p;
    h.host = (struct sf_host){ .abi = STREAMFLEET_PLUGIN_ABI, .done = host_done, .log = host_log };
    char err[512];
    if (load(p, &h.host, &h.pl, &h.state, err, sizeof err) == -1) {
        log_errorx("plugin %s: %s", p->plugin, err);
        return NULL;
    }
    log_debug("plugin %s (%s) loaded", p->plugin, h.pl->name ? h.pl->name : "no name");
    return &h;
}

static struct sf_call *call_get(struct handler *h)
{
    struct sf_call *call = h->free;
    if (call) {
        h->free = call->next;
    } else {
        call = xcalloc(1, sizeof *call);
        call->h = h;
        call->all = h->all;
        h->all = call;
    }
    call->next = NULL;
    return call;
}

static void plugin_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    if (2 * m->nf > h->fields_cap) {
        h->fields_cap = 2 * m->nf;
        h->fields = xrealloc(h->fields, h->fields_cap * sizeof *h->fields);
    }
    for (size_t i = 0; i < 2 * m->nf; i++)
        h->fields[i] = (struct sf_bytes){ m->f[i].p, m->f[i].len };
    struct sf_message view = {
        .pool = h->pool->name,
        .stream = m->stream,
        .id = m->id.p,
        .attempt = m->attempt,
        .fields = h->fields,
        .nfields = m->nf,
    };

    struct sf_call *call = call_get(h);
    call->ticket = t;
    clock_gettime(CLOCK_MONOTONIC, &call->start);
    h->inflight++;
    struct sf_answer a = { .result = SF_ACK, .retry_after_ms = -1 };
    int r = h->pl->handle(h->state, &view, &a, call);
    if (call->ticket == NULL) {
        /* done() came from inside handle(): the message is answered. */
        if (r != SF_PENDING)
            log_errorx("plugin: handle() answered %d after calling done() for message %s (a plugin bug): "
                       "the done() answer stands", r, view.id);
        return;
    }
    if (r == SF_PENDING)
        return;
    finish(h, call, r, &a, false);
}

static int plugin_fds(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms)
{
    if (h->pl->fds == NULL)
        return 0;
    long was = *timeout_ms;
    int n = h->pl->fds(h->state, pfd, max, timeout_ms);
    /* It may only lower the wait: a negative one (poll()'s "forever") would stop the
     * worker's own deadlines and heartbeat. */
    if (*timeout_ms < 0 || *timeout_ms > was)
        *timeout_ms = was;
    return n < 0 ? 0 : n > max ? max : n;
}

static void plugin_run(struct handler *h, const struct pollfd *pfd, int n)
{
    if (h->pl->run)
        h->pl->run(h->state, pfd, n);
}

static unsigned plugin_inflight(struct handler *h)
{
    return h->inflight;
}

/* What the plugin still holds is abandoned: it stays pending in Redis (handler.h). */
static void plugin_close(struct handler *h)
{
    h->closing = true;
    if (h->pl->fini)
        h->pl->fini(h->state);
    while (h->all) {
        struct sf_call *call = h->all;
        h->all = call->all;
        free(call);
    }
    h->free = NULL;
    free(h->fields);
    h->fields = NULL;
    h->fields_cap = 0;
}

const struct handler_ops handler_plugin_ops = {
    .name = "plugin",
    .open = plugin_open,
    .submit = plugin_submit,
    .fds = plugin_fds,
    .run = plugin_run,
    .inflight = plugin_inflight,
    .close = plugin_close,
};
