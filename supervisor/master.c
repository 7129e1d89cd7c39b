/* master.c: the master's loop. Signals arrive on a signalfd (they are blocked, never handled
 * asynchronously); the HTTP endpoint and the Redis monitor each give one descriptor; child
 * exits are reaped on SIGCHLD; restarts, heartbeats, stats lines and drains have deadlines.
 * No threads: fork() is safe from here.
 *
 *   SIGTERM, SIGINT  drain: workers finish what they hold; exit 0
 *   SIGQUIT          fast stop: workers are killed; what they held stays pending in Redis
 *   SIGHUP           reload the config (see reload())
 *   SIGTTIN/SIGTTOU  one more / one fewer worker in every pool, until the next reload
 *   SIGUSR1          reopen the log file
 *
 * A pool with watch = yes also gets new workers when a file of its handlers changes
 * (replace_watched()). */
#include "supervisor/master.h"
#include "common/aimd.h"
#include "common/log.h"
#include "supervisor/crash.h"
#include "supervisor/dlqweb.h"
#include "supervisor/httpd.h"
#include "supervisor/notify.h"
#include "supervisor/plugincheck.h"
#include "supervisor/redismon.h"
#include "supervisor/trim.h"
#include "supervisor/view.h"
#include "supervisor/watch.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_MS 1000
#define START_GRACE_MS 10000       /* a pool short of workers this long is degraded */

extern const char status_page_html[];   /* statuspage.c */

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the view: what /metrics and /health show ---- */

static struct pool_view *view_pool(struct fleet_view *v, const char *name)
{
    for (unsigned i = 0; i < v->npools; i++)
        if (strcmp(v->pools[i].name, name) == 0)
            return &v->pools[i];
    struct pool_view *pv = &v->pools[v->npools++];
    pv->name = name;
    return pv;
}

static struct history *history_of(struct master *m, const char *name)
{
    for (size_t i = 0; i < m->nhist; i++)
        if (strcmp(m->hist[i].name, name) == 0)
            return &m->hist[i];
    m->hist = xrealloc(m->hist, (m->nhist + 1) * sizeof *m->hist);
    struct history *h = &m->hist[m->nhist++];
    memset(h, 0, sizeof *h);
    h->name = xstrdup(name);
    return h;
}

/* Resident memory of process pid (0: this one), from /proc/PID/statm; 0 when unknown. */
static long long resident_bytes(pid_t pid)
{
    char path[40];
    if (pid)
        snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
    else
        snprintf(path, sizeof path, "/proc/self/statm");
    FILE *f = fopen(path, "r");
    long long size = 0, rss = 0;
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lld %lld", &size, &rss) != 2)
        rss = 0;
    fclose(f);
    return rss * sysconf(_SC_PAGESIZE);
}

static const char *handler_name(enum handler_kind k)
{
    static const char *const names[] = { [HANDLER_LOG] = "log", [HANDLER_NOOP] = "noop",
                                         [HANDLER_HTTP] = "http", [HANDLER_EXEC] = "exec",
                                         [HANDLER_SUBPROCESS] = "subprocess",
                                         [HANDLER_PLUGIN] = "plugin" };
    return names[k];
}

/* Keep the last errors of a pool, newest first. */
static void add_error(struct pool_view *pv, double when, int worker, const char *text)
{
    unsigned max = sizeof pv->errors / sizeof pv->errors[0];
    unsigned at = 0;
    while (at < pv->nerrors && pv->errors[at].time >= when)
        at++;
    if (at >= max)
        return;
    unsigned last = pv->nerrors < max ? pv->nerrors : max - 1;
    memmove(&pv->errors[at + 1], &pv->errors[at], (last - at) * sizeof pv->errors[0]);
    pv->errors[at].time = when;
    pv->errors[at].worker = worker;
    snprintf(pv->errors[at].text, sizeof pv->errors[at].text, "%s", text);
    if (pv->nerrors < max)
        pv->nerrors++;
}

static int worker_cmp(const void *a, const void *b)
{
    const struct worker_view *x = a, *y = b;
    int c = strcmp(x->pool, y->pool);
    if (c)
        return c;
    if (x->slot != y->slot)
        return x->slot < y->slot ? -1 : 1;
    return x->generation < y->generation ? -1 : x->generation > y->generation;
}

/* Worker p as the status page shows it. */
static void view_worker(struct master *m, const struct proc *p, struct worker_view *w, long long now)
{
    memset(w, 0, sizeof *w);
    w->pool = p->pool->name;
    w->slot = p->index;
    w->pid = p->pid;
    w->generation = p->pool->generation;
    w->restarts = p->restarts;
    if (p->pid <= 0 || p->sb < 0) {
        w->state = "restarting";
        return;
    }
    const struct sb_slot *slot = &m->sb.slot[p->sb];
    if (p->draining || p->pool->removed)
        w->state = "draining";
    else if (atomic_load_explicit(&slot->heartbeat_ms, memory_order_acquire) <= (uint64_t)p->started_ms)
        w->state = "starting";
    else
        w->state = "running";
    w->uptime = now > p->started_ms ? (double)(now - p->started_ms) / 1000.0 : 0;
    w->handled = atomic_load_explicit(&slot->c[SB_READ], memory_order_relaxed);
    w->acked = atomic_load_explicit(&slot->c[SB_ACKED], memory_order_relaxed);
    w->inflight = atomic_load_explicit(&slot->inflight, memory_order_relaxed);
    /* Torn by the child writing meanwhile: one more try, else it shows nothing held. */
    if (sb_get_held(slot, &w->held) == -1)
        sb_get_held(slot, &w->held);
    /* The master reads the worker's own figure: the child's is up to 5 s old. */
    w->rss_bytes = (uint64_t)resident_bytes(p->pid) +
                   atomic_load_explicit(&slot->handler_rss_bytes, memory_order_relaxed);
    uint64_t when = sb_get_error(slot, w->error, sizeof w->error);
    w->error_time = when ? (double)when / 1000.0 : 0;
    if (!when)
        w->error[0] = '\0';
}

/* Seconds since the Unix ms in an entry id (now: Unix seconds), or -1 for none. */
static double age_of(double now, long long id_ms)
{
    if (id_ms < 0)
        return -1;
    return now * 1000 > (double)id_ms ? (now * 1000 - (double)id_ms) / 1000.0 : 0;
}

/* The fleet as it is now, pools added up by name (a pool being replaced by a new generation
 * shows as one), with each worker when workers is true (it costs a read of /proc per worker,
 * which /metrics and /health do without). The caller frees v->pools and v->workers. */
static void build_view(struct master *m, struct fleet_view *v, bool workers)
{
    memset(v, 0, sizeof *v);
    v->version = SF_VERSION;
    v->start_time = m->start_time;
    v->redis_up = redismon_up(m->mon);
    v->redis_error = redismon_error(m->mon);
    v->redis_durable = redismon_durable(m->mon);
    v->durability = redismon_durability(m->mon);
    v->reloads_ok = m->reloads_ok;
    v->reloads_failed = m->reloads_failed;
    v->reloads_rolled_back = m->reloads_rolled_back;
    v->last_reload = m->last_reload.result;
    v->last_reload_time = m->last_reload.time;
    v->last_reload_reason = m->last_reload.reason;
    v->pools = xcalloc(m->npools ? m->npools : 1, sizeof *v->pools);
    for (size_t i = 0; i < m->npools; i++) {
        const struct pool_state *ps = m->pools[i];
        struct pool_view *pv = view_pool(v, ps->name);
        for (int k = 0; k < SB_NCOUNTERS; k++)
            pv->c[k] += ps->retired[k];
        for (int k = 0; k < RESTART_NREASONS; k++) {
            pv->restarts_by[k] += ps->restarts[k];
            pv->restarts += ps->restarts[k];
        }
        if (!ps->removed && ps->canary_of == NULL) {
            pv->workers_expected += (unsigned)ps->workers;
            pv->stream = ps->conf->stream;
            pv->group = ps->conf->group;
            pv->handler = handler_name(ps->conf->handler);
            pv->nroutes = 0;
            for (size_t r = 0; r < ps->conf->nroutes && r < SB_NROUTES - 1; r++)
                pv->route_type[pv->nroutes++] = ps->conf->routes[r].type;
            pv->route_default = ps->conf->route_default.handler != NULL;
            pv->max_lag = ps->conf->max_lag;
            pv->max_pending_age = (double)ps->conf->max_pending_age_ms / 1000.0;
            pv->watch = ps->conf->watch;
        }
        long long now = master_now_ms();
        unsigned recent = 0;
        for (unsigned k = 0; k < 16 && k < ps->nrestarts; k++)
            recent += now - ps->restart_ms[k] < 300000;
        pv->restarts_per_min += recent / 5.0;
    }
    if (workers) {
        v->workers = xcalloc(m->nprocs ? m->nprocs : 1, sizeof *v->workers);
        long long now_ms = master_now_ms();
        for (size_t i = 0; i < m->nprocs; i++)
            view_worker(m, &m->procs[i], &v->workers[v->nworkers++], now_ms);
        qsort(v->workers, v->nworkers, sizeof *v->workers, worker_cmp);
    }
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct proc *p = &m->procs[i];
        struct pool_view *pv = view_pool(v, p->pool->name);
        if (p->pid == 0 && p->quick_deaths > 0)
            pv->crash_loop = true;
        if (p->sb < 0)
            continue;
        const struct sb_slot *slot = &m->sb.slot[p->sb];
        sb_fold(pv->c, slot);
        if (p->pid > 0 && (p->draining || p->pool->removed)) {
            pv->workers_draining++;
        } else if (p->pid > 0 && p->pool->canary_of) {
            pv->workers_canary++;
        } else if (p->pid > 0) {
            pv->workers_live++;
            /* Starting until its first loop turn stamps a heartbeat later than its fork. */
            if (atomic_load_explicit(&slot->heartbeat_ms, memory_order_acquire) <= (uint64_t)p->started_ms)
                pv->workers_starting++;
        }
        pv->inflight += atomic_load_explicit(&slot->inflight, memory_order_acquire);
        pv->circuit_open += atomic_load_explicit(&slot->circuit_open, memory_order_acquire) != 0;
        char why[sizeof slot->circuit_error];
        uint64_t since = sb_get_circuit(slot, why, sizeof why);
        if (since && (pv->circuit_since == 0 || (double)since / 1000.0 < pv->circuit_since)) {
            pv->circuit_since = (double)since / 1000.0;
            snprintf(pv->circuit_error, sizeof pv->circuit_error, "%s", why);
        }
        if (p->pid > 0) {
            int gs = atomic_load_explicit(&slot->group_state, memory_order_relaxed);
            pv->group_not_created += gs == SB_GROUP_NOT_CREATED;
            pv->group_wrongtype += gs == SB_GROUP_WRONGTYPE;
        }
        pv->rss_bytes += atomic_load_explicit(&slot->rss_bytes, memory_order_relaxed) +
                         atomic_load_explicit(&slot->handler_rss_bytes, memory_order_relaxed);
        char text[sizeof slot->error];
        uint64_t when = sb_get_error(slot, text, sizeof text);
        if (when)
            add_error(pv, (double)when / 1000.0, p->index, text);
    }
    v->now = wall_seconds();
    v->master_rss_bytes = (uint64_t)resident_bytes(0);
    v->ndests = aimd_snapshot(aimd_shared(), aimd_now_us(), v->dests, AIMD_DESTS);
    long long now = master_now_ms();
    for (unsigned i = 0; i < v->npools; i++) {
        struct pool_view *pv = &v->pools[i];
        const struct redis_pool_stats *rs = redismon_pool(m->mon, pv->name);
        if (rs) {
            pv->redis_known = true;
            pv->stream_length = rs->length;
            pv->pending = rs->pending;
            pv->lag = rs->lag;
            pv->dlq_length = rs->dlq_length;
            pv->redis_polled = (double)rs->polled_ms / 1000.0;
            pv->oldest_pending_age = age_of(v->now, rs->oldest_pending_ms);
            pv->nstreams = rs->nstreams > 1 ? (unsigned)rs->nstreams : 0;
            for (unsigned k = 0; k < pv->nstreams; k++) {
                const struct redis_stream_stats *s = &rs->streams[k];
                pv->streams[k] = (struct stream_view){ s->stream, s->length, s->pending, s->lag, s->dlq_length,
                                                       age_of(v->now, s->oldest_pending_ms) };
            }
        }
        struct history *h = history_of(m, pv->name);
        pv->short_too_long = h->short_since_ms && now - h->short_since_ms > START_GRACE_MS;
        pv->nhistory = h->n;
        for (unsigned k = 0; k < h->n; k++) {
            unsigned at = (h->head + HISTORY_POINTS - h->n + k) % HISTORY_POINTS;
            pv->history[k] = h->rate[at];
            pv->p50[k] = h->p50[at];
            pv->p99[k] = h->p99[at];
        }
        pv->rate = h->n ? pv->history[h->n - 1] : 0;
        pv->watch_restarts = h->watch_restarts;
        pv->trimmed = trim_total(m->trim, pv->name);
        for (int k = 0; k < SB_NCAUSES; k++)
            pv->crash_charges[k] = crash_charges_total(m->crash, pv->name, (enum sb_cause)k);
    }
}

static bool id_after(uint64_t ams, uint64_t an, uint64_t bms, uint64_t bn)
{
    return ams > bms || (ams == bms && an > bn);
}

/* Tell every worker the latest entry its pool's group is known to have delivered: the last
 * poll's last-delivered-id, or a later entry one of the pool's workers received since. A
 * worker that finds the group lost re-creates it there, even one started after the loss. */
static void publish_delivered(struct master *m)
{
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct proc *p = &m->procs[i];
        if (p->sb < 0)
            continue;
        const struct redis_pool_stats *rs = redismon_pool(m->mon, p->pool->name);
        unsigned long long pms = 0, pn = 0;
        uint64_t ms = 0, n = 0;
        if (rs && sscanf(rs->last_delivered, "%llu-%llu", &pms, &pn) == 2) {
            ms = pms;
            n = pn;
        }
        for (size_t k = 0; k < m->nprocs; k++) {
            const struct proc *q = &m->procs[k];
            uint64_t sms, sn;
            if (q->sb >= 0 && q->pool == p->pool && sb_id_get(&m->sb.slot[q->sb].seen, &sms, &sn) == 0 &&
                id_after(sms, sn, ms, n)) {
                ms = sms;
                n = sn;
            }
        }
        if (ms || n)
            sb_id_set(&m->sb.slot[p->sb].delivered, ms, n);
    }
}

/* Every HISTORY_STEP_MS: one point of each pool's rate; and whether it is short of workers. */
static void sample(struct master *m, long long now)
{
    struct fleet_view v;
    build_view(m, &v, false);
    for (unsigned i = 0; i < v.npools; i++) {
        const struct pool_view *pv = &v.pools[i];
        struct history *h = history_of(m, pv->name);
        if (pv->workers_live < pv->workers_expected) {
            if (!h->short_since_ms)
                h->short_since_ms = now;
        } else {
            h->short_since_ms = 0;
        }
        if (h->last_ms == 0) {
            h->last_ms = now;
            h->last_read = pv->c[SB_READ];
            memcpy(h->last_dur, &pv->c[SB_DUR_FIRST], sizeof h->last_dur);
        } else if (now - h->last_ms >= HISTORY_STEP_MS) {
            double secs = (double)(now - h->last_ms) / 1000.0;
            h->rate[h->head] = (float)((double)(pv->c[SB_READ] - h->last_read) / secs);
            /* The step's own durations: the totals never go back (retired children's are
             * folded in), so the difference of two readings is what the step observed. */
            uint64_t step[SB_NBUCKETS];
            for (int k = 0; k < SB_NBUCKETS; k++) {
                uint64_t c = pv->c[SB_DUR_FIRST + k];
                step[k] = c >= h->last_dur[k] ? c - h->last_dur[k] : 0;
                h->last_dur[k] = c;
            }
            h->p50[h->head] = (float)metrics_quantile(step, sb_bucket_le, SB_NBUCKETS, 0.50);
            h->p99[h->head] = (float)metrics_quantile(step, sb_bucket_le, SB_NBUCKETS, 0.99);
            h->head = (h->head + 1) % HISTORY_POINTS;
            if (h->n < HISTORY_POINTS)
                h->n++;
            h->last_ms = now;
            h->last_read = pv->c[SB_READ];
        }
    }
    free(v.pools);
    free(v.workers);
}

static int serve(void *arg, const char *path, const char *query_pool, struct buf *body,
                 const char **ctype)
{
    struct master *m = arg;
    if (strcmp(path, "/livez") == 0) {
        /* The loop runs: that is all a liveness probe may ask (not Redis, not the workers). */
        buf_adds(body, "ok\n");
        return 200;
    }
    if (strcmp(path, "/") == 0) {
        buf_adds(body, status_page_html);
        *ctype = "text/html; charset=utf-8";
        return 200;
    }
    if (strcmp(path, "/metrics") == 0 || strcmp(path, "/health") == 0 || strcmp(path, "/status.json") == 0) {
        struct fleet_view v;
        build_view(m, &v, path[1] == 's');
        int status = 200;
        if (path[1] == 'm') {
            metrics_render(body, &v);
            *ctype = "text/plain; version=0.0.4; charset=utf-8";
        } else if (path[1] == 'h') {
            status = health_render(body, &v, query_pool);
            *ctype = "application/json";
        } else {
            status_render(body, &v);
            *ctype = "application/json";
        }
        free(v.pools);
        free(v.workers);
        return status;
    }
    buf_adds(body, "not found\n");
    return 404;
}

/* The dead letters on the web: answered by a child each (supervisor/dlqweb.h). */
static int serve_req(void *arg, struct httpd_req *req, struct buf *body, const char **ctype)
{
    struct master *m = arg;
    if (m->dlqweb == NULL)
        m->dlqweb = dlqweb_open();
    return dlqweb_request(m->dlqweb, m->conf, req, body, ctype);
}

/* ---- pools ---- */

static struct pool_state *pool_new(struct master *m, const struct conf *owner, const struct pool_conf *pc,
                                   long long now)
{
    struct pool_state *ps = xcalloc(1, sizeof *ps);
    ps->name = xstrdup(pc->name);
    ps->conf = pc;
    ps->owner = owner;
    ps->workers = pc->workers;
    ps->workers_min = pc->workers;
    ps->workers_max = pc->workers_max;
    ps->started_ms = now;
    ps->generation = ++history_of(m, pc->name)->generations;
    ps->stats_ms = now;
    m->pools = xrealloc(m->pools, (m->npools + 1) * sizeof *m->pools);
    m->pools[m->npools++] = ps;
    return ps;
}

static void pool_start(struct master *m, struct pool_state *ps, long long now)
{
    for (int k = 0; k < ps->workers; k++)
        procs_add(m, ps, k, now);
}

static unsigned pool_procs(const struct master *m, const struct pool_state *ps)
{
    unsigned n = 0;
    for (size_t i = 0; i < m->nprocs; i++)
        n += m->procs[i].pool == ps;
    return n;
}

/* Tell every child of ps to finish; ps goes when the last one has exited. */
static void pool_retire(struct master *m, struct pool_state *ps, long long now)
{
    ps->removed = true;
    for (size_t i = 0; i < m->nprocs; i++)
        if (m->procs[i].pool == ps)
            procs_drain(m, &m->procs[i], now);
}

/* Set the number of children of ps: start the missing slots, drain the ones above. */
static void pool_scale(struct master *m, struct pool_state *ps, int workers, long long now)
{
    int old = ps->workers;
    ps->workers = workers;
    for (int k = old; k < workers; k++) {
        bool have = false;
        for (size_t i = 0; i < m->nprocs && !have; i++)
            have = m->procs[i].pool == ps && m->procs[i].index == k && !m->procs[i].draining;
        if (!have)
            procs_add(m, ps, k, now);
    }
    for (size_t i = 0; i < m->nprocs; i++) {
        struct proc *p = &m->procs[i];
        if (p->pool == ps && p->index >= workers && !p->draining) {
            if (p->pid > 0)
                procs_drain(m, p, now);
            else
                p->draining = true;     /* waiting for a respawn: simply not started again */
        }
    }
}

/* Free the pools whose last child has gone (their counters pass to a successor of the same
 * name, so that nothing goes back), and the configs nothing points into any more. */
static void collect(struct master *m)
{
    for (size_t i = 0; i < m->npools;) {
        struct pool_state *ps = m->pools[i];
        if (!ps->removed || pool_procs(m, ps) > 0) {
            i++;
            continue;
        }
        /* Children waiting for a respawn of a removed pool: drop them too. */
        for (size_t k = 0; k < m->npools; k++) {
            struct pool_state *heir = m->pools[k];
            if (heir != ps && !heir->removed && heir->canary_of == NULL && strcmp(heir->name, ps->name) == 0) {
                for (int c = 0; c < SB_NCOUNTERS; c++)
                    heir->retired[c] += ps->retired[c];
                for (int c = 0; c < RESTART_NREASONS; c++)
                    heir->restarts[c] += ps->restarts[c];
                break;
            }
        }
        log_debug("pool %s: old generation gone", ps->name);
        free(ps->name);
        free(ps);
        m->pools[i] = m->pools[--m->npools];
    }
    for (size_t i = 0; i < m->nconfs;) {
        struct conf *c = m->confs[i];
        bool used = c == m->conf;
        for (size_t k = 0; k < m->npools && !used; k++)
            used = m->pools[k]->owner == c;
        if (used) {
            i++;
            continue;
        }
        conf_free(c);
        m->confs[i] = m->confs[--m->nconfs];
    }
}

/* Waiting children of removed slots (pid 0, draining) are never started: drop them. */
static void drop_idle_drained(struct master *m)
{
    for (size_t i = 0; i < m->nprocs;) {
        struct proc *p = &m->procs[i];
        if (p->pid == 0 && (p->draining || p->pool->removed)) {
            if (p->sb >= 0) {
                m->sb_used[p->sb] = false;
                p->sb = -1;
            }
            m->procs[i] = m->procs[--m->nprocs];
            continue;
        }
        i++;
    }
}

/* ---- the listener ---- */

/* The bearer token of conf: 0 with *token set (NULL when conf asks for none), or -1 (logged). */
static int token_of(const struct conf *conf, char **token)
{
    char err[300];
    *token = NULL;
    if (conf->listen_token_file == NULL)
        return 0;
    if ((*token = conf_read_token(conf->listen_token_file, err, sizeof err)) == NULL) {
        log_errorx("%s", err);
        return -1;
    }
    return 0;
}

static void token_free(char *token)
{
    if (token) {
        explicit_bzero(token, strlen(token));
        free(token);
    }
}

/* A listener for conf (its address and token), or NULL (logged). */
static struct httpd *listen_for(struct master *m, const struct conf *conf)
{
    char *token;
    char err[300];
    if (token_of(conf, &token) == -1)
        return NULL;
    struct httpd *h = httpd_open(conf->listen_host, conf->listen_port, token,
                                 (struct httpd_route){ .fn = serve, .req_fn = serve_req, .arg = m }, err, sizeof err);
    if (h == NULL)
        log_errorx("%s", err);
    token_free(token);
    return h;
}

/* Anyone who reaches a non-loopback address without a token reads the fleet's state: say so
 * at every start and reload, where it cannot be missed. */
static void warn_if_open(const struct conf *conf)
{
    if (conf->listen_token_file == NULL && !httpd_host_is_loopback(conf->listen_host))
        log_warnx("listen %s:%d is not a loopback address and has no listen_token_file: anyone who can "
                  "reach it reads /metrics, /health and the status page", conf->listen_host, conf->listen_port);
}

int master_listen(struct master *m, struct conf *conf)
{
    m->httpd = listen_for(m, conf);
    if (m->httpd)
        warn_if_open(conf);
    return m->httpd ? 0 : -1;
}

/* Give the listener nc's address and token. Everything that can fail (reading the token,
 * binding the new address) is done before the old listener is touched: on failure it keeps
 * serving with its old address and token, and -1 is returned (logged). The same address
 * keeps its socket and only changes its token, so a scraper sees no gap. */
static int relisten(struct master *m, const struct conf *oc, const struct conf *nc)
{
    bool same_addr = strcmp(oc->listen_host, nc->listen_host) == 0 && oc->listen_port == nc->listen_port;
    bool same_token = (oc->listen_token_file == NULL) == (nc->listen_token_file == NULL) &&
                      (oc->listen_token_file == NULL || strcmp(oc->listen_token_file, nc->listen_token_file) == 0);
    if (same_addr && same_token)
        return 0;
    char *token;
    if (token_of(nc, &token) == -1)
        return -1;
    int rc = 0;
    if (same_addr) {
        httpd_set_token(m->httpd, token);
        log_info("reload: listener on %s:%d now %s", nc->listen_host, nc->listen_port,
                 token ? "requires the token of listen_token_file" : "requires no token");
    } else {
        char err[300];
        struct httpd *h = httpd_open(nc->listen_host, nc->listen_port, token,
                                     (struct httpd_route){ .fn = serve, .req_fn = serve_req, .arg = m }, err, sizeof err);
        if (h == NULL) {
            log_errorx("reload: %s", err);
            rc = -1;
        } else {
            httpd_close(m->httpd);
            m->httpd = h;
            log_info("reload: now listening on %s:%d", nc->listen_host, nc->listen_port);
        }
    }
    token_free(token);
    return rc;
}

/* ---- reload ---- */

/* Remember how the last reload ended, for /health and /status.json. */
static void note_reload(struct master *m, const char *result, const char *reason)
{
    m->last_reload.result = result;
    m->last_reload.time = wall_seconds();
    snprintf(m->last_reload.reason, sizeof m->last_reload.reason, "%s", reason);
}

/* A canary of the last reload was promoted or rolled back: once the last one is, the reload
 * counts as ok, or as rolled back when any of its pools was. */
static void canary_settled(struct master *m)
{
    if (m->canaries == 0 || --m->canaries > 0)
        return;
    if (m->canary_failed) {
        m->reloads_rolled_back++;
        note_reload(m, "rolled_back", m->canary_why);
    } else {
        m->reloads_ok++;
        note_reload(m, "ok", "");
        log_info("reload: done: every canary proved itself");
    }
}

/* Stop canary c: its worker drains (SIGTERM), and what it held stays pending in Redis under
 * its consumer name, which it shares with slot 0 of the generation it was to replace: that
 * generation reclaims it after claim_idle. The old generation runs on untouched, with its
 * old settings, so that the next SIGHUP tries the new ones again. */
static void canary_roll_back(struct master *m, struct pool_state *c, const char *why, long long now)
{
    log_errorx("reload: pool %s rolled back: its canary %s; the running workers keep their settings", c->name, why);
    c->canary_of = NULL;
    pool_retire(m, c, now);
    m->canary_failed = true;
    snprintf(m->canary_why, sizeof m->canary_why, "pool %s: canary %s", c->name, why);
    canary_settled(m);
}

/* Canary c proved itself: the rest of its generation starts and the old one drains, as a
 * reload without canaries does at once. */
static void canary_promote(struct master *m, struct pool_state *c, uint64_t handled, long long now)
{
    struct pool_state *old = c->canary_of;
    log_info("reload: pool %s: the canary is ready and handled %llu messages: starting the new generation "
             "of %d workers", c->name, (unsigned long long)handled, c->conf->workers);
    c->canary_of = NULL;
    pool_scale(m, c, c->conf->workers, now);
    pool_retire(m, old, now);
    canary_settled(m);
}

/* A ready flag that flickers (a subprocess that starts and dies at once) proves nothing: the
 * canary must stay ready this long without a break. */
#define CANARY_STEADY_MS 1000

/* Decide the canaries on trial: promote the ones ready (for CANARY_STEADY_MS) that handled
 * canary_messages entries successfully; roll back the ones that dead-lettered, failed as
 * many entries as they had to handle, died, or ran out of canary_timeout. */
static void check_canaries(struct master *m, long long now)
{
    for (size_t i = 0; i < m->npools; i++) {
        struct pool_state *c = m->pools[i];
        if (c->canary_of == NULL || c->removed)
            continue;
        const struct proc *p = NULL;
        for (size_t k = 0; k < m->nprocs && p == NULL; k++)
            if (m->procs[k].pool == c)
                p = &m->procs[k];
        uint64_t ok = c->retired[SB_ACKED], failed = c->retired[SB_FAILED], dead = c->retired[SB_DEAD_LETTERED];
        uint64_t ready_ms = 0;
        char err[sizeof m->sb.slot[0].error] = "";
        if (p && p->pid > 0 && p->sb >= 0) {
            const struct sb_slot *slot = &m->sb.slot[p->sb];
            ok += atomic_load_explicit(&slot->c[SB_ACKED], memory_order_acquire);
            failed += atomic_load_explicit(&slot->c[SB_FAILED], memory_order_acquire);
            dead += atomic_load_explicit(&slot->c[SB_DEAD_LETTERED], memory_order_acquire);
            ready_ms = atomic_load_explicit(&slot->ready_ms, memory_order_acquire);
            if (sb_get_error(slot, err, sizeof err) == 0)
                err[0] = '\0';
        }
        long need = c->conf->canary_messages;
        bool ready = ready_ms && now - (long long)ready_ms >= CANARY_STEADY_MS;
        char why[200] = "";
        if (ready && ok >= (uint64_t)need) {
            canary_promote(m, c, ok, now);
            continue;
        }
        if (dead > 0)
            snprintf(why, sizeof why, "dead-lettered %llu messages", (unsigned long long)dead);
        else if (need > 0 && failed >= (uint64_t)need)
            snprintf(why, sizeof why, "failed %llu messages before %ld succeeded%s%s", (unsigned long long)failed,
                     need, err[0] ? ": " : "", err);
        else if (p == NULL || (p->pid == 0 && p->quick_deaths > 0))
            snprintf(why, sizeof why, "worker exited%s%s", err[0] ? ": " : "", err);
        else if (now >= c->canary_deadline_ms && !ready)
            snprintf(why, sizeof why, "was not ready within canary_timeout (%ld ms)%s%s",
                     c->conf->canary_timeout_ms, err[0] ? ": " : "", err);
        else if (now >= c->canary_deadline_ms)
            snprintf(why, sizeof why, "handled %llu of %ld messages within canary_timeout (%ld ms)",
                     (unsigned long long)ok, need, c->conf->canary_timeout_ms);
        if (why[0])
            canary_roll_back(m, c, why, now);
    }
}

/* A reload while canaries of the last one are on trial: they stop (the pools they were for
 * keep running as they are), and the new reload compares against those pools' settings. */
static void supersede_canaries(struct master *m, long long now)
{
    for (size_t i = 0; i < m->npools; i++) {
        struct pool_state *c = m->pools[i];
        if (c->canary_of && !c->removed) {
            log_warnx("reload: pool %s: the canary of the previous reload is stopped: a newer reload replaces it",
                      c->name);
            c->canary_of = NULL;
            pool_retire(m, c, now);
        }
    }
    if (m->canaries) {
        m->canaries = 0;
        m->reloads_rolled_back++;
        note_reload(m, "rolled_back", "superseded by a newer reload before its canaries proved themselves");
    }
}

static void set_logging(const struct conf *c)
{
    log_init(c->log_level, c->log_format);
}

static size_t slots_free(const struct master *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->sb.nslots; i++)
        n += !m->sb_used[i];
    return n;
}

/* Scoreboard slots a reload to nc takes beyond those in use: a changed pool starts its new
 * generation while the old one still holds its slots until it has drained, an added pool
 * starts whole, a scaled-up pool adds the difference. A reload that would run out part-way
 * must not start: it would drain old workers that nothing replaces. */
static size_t slots_wanted(const struct master *m, const struct conf *nc, bool redis_changed)
{
    size_t want = 0;
    for (size_t i = 0; i < nc->npools; i++) {
        const struct pool_conf *pc = &nc->pools[i];
        const struct pool_state *ps = NULL;
        for (size_t k = 0; k < m->npools && ps == NULL; k++)
            if (!m->pools[k]->removed && m->pools[k]->canary_of == NULL && strcmp(m->pools[k]->name, pc->name) == 0)
                ps = m->pools[k];
        if (ps == NULL || redis_changed || !conf_pool_same(ps->conf, pc))
            want += (size_t)pc->workers;
        else if (pc->workers > ps->workers)
            want += (size_t)(pc->workers - ps->workers);
    }
    return want;
}

/* Re-read the config. Invalid, or a listener (address, token) that cannot start, or more
 * workers than free scoreboard slots: the reasons are logged, the reload counts as failed and
 * nothing changes. Valid: new pools
 * start; removed pools drain; a pool whose settings changed gets a new generation of
 * children, started before the old one drains, so it never has zero workers; a pool whose
 * only change is `workers` is scaled; unchanged pools keep their children. */
static void reload(struct master *m, long long now)
{
    notify("RELOADING=1");
    struct conf_errors errs = { 0 };
    struct conf *nc = conf_load(m->conf->path, &errs);
    if (nc == NULL) {
        for (size_t i = 0; i < errs.n; i++)
            log_errorx("reload: %s", errs.msg[i]);
        log_errorx("reload: %zu problem%s in %s: keeping the running config", errs.n, errs.n == 1 ? "" : "s",
                   m->conf->path);
        conf_errors_release(&errs);
        m->reloads_failed++;
        note_reload(m, "failed", "the config has errors (see the log)");
        notify("READY=1");
        return;
    }
    for (size_t i = 0; i < nc->nwarnings; i++)
        log_warnx("reload: %s", nc->warnings[i]);
    struct conf *oc = m->conf;
    bool redis_changed = !conf_redis_same(&oc->redis, &nc->redis);
    /* What can fail is tried before anything changes: a reload either applies whole or not. */
    size_t want = slots_wanted(m, nc, redis_changed), free_slots = slots_free(m);
    bool refused = true;
    if (want > free_slots)
        log_errorx("reload: the new workers need %zu scoreboard slots beside the draining ones, %zu are free",
                   want, free_slots);
    else if (plugincheck_reload(oc, nc) > 0)
        log_errorx("reload: a plugin the reload would start does not load");
    else if (relisten(m, oc, nc) == -1)
        log_errorx("reload: the new listener cannot start");
    else
        refused = false;
    if (refused) {
        log_errorx("reload: keeping the running config (and the listener on %s:%d as it was)", oc->listen_host,
                   oc->listen_port);
        conf_free(nc);
        m->reloads_failed++;
        note_reload(m, "failed", "refused: workers, plugin or listener (see the log)");
        notify("READY=1");
        return;
    }
    warn_if_open(nc);
    if (redis_changed) {
        redismon_free(m->mon);
        m->mon = redismon_open(&nc->redis);
        redismon_set_trim(m->mon, m->trim);
    } else {
        redismon_set_addr(m->mon, &nc->redis);
    }
    redismon_set_pools(m->mon, nc);
    trim_set_pools(m->trim, nc);
    set_logging(nc);

    supersede_canaries(m, now);
    unsigned started = 0, replaced = 0, removed = 0, scaled = 0, canaries = 0;
    size_t nold = m->npools;
    for (size_t i = 0; i < nold; i++) {
        struct pool_state *ps = m->pools[i];
        if (ps->removed)
            continue;
        const struct pool_conf *pc = conf_pool(nc, ps->name);
        if (pc == NULL) {
            log_info("reload: pool %s removed: draining its workers", ps->name);
            pool_retire(m, ps, now);
            removed++;
        } else if (!redis_changed && conf_pool_same(ps->conf, pc)) {
            ps->conf = pc;
            ps->owner = nc;
            /* A range keeps the count the scaling reached, within the new bounds. */
            ps->workers_min = pc->workers;
            ps->workers_max = pc->workers_max;
            int count = ps->workers < pc->workers ? pc->workers : ps->workers > pc->workers_max ? pc->workers_max
                                                                                                 : ps->workers;
            if (ps->workers != count) {
                log_info("reload: pool %s: %d -> %d workers", ps->name, ps->workers, count);
                pool_scale(m, ps, count, now);
                scaled++;
            }
        } else if (pc->canary_timeout_ms > 0) {
            log_info("reload: pool %s changed: starting one canary worker of the new generation (ready within "
                     "%ld ms, %ld messages handled)", ps->name, pc->canary_timeout_ms, pc->canary_messages);
            struct pool_state *next = pool_new(m, nc, pc, now);
            next->fresh = true;
            next->workers = 1;
            next->canary_of = ps;
            next->canary_deadline_ms = now + pc->canary_timeout_ms;
            procs_add(m, next, 0, now);
            canaries++;
        } else {
            log_info("reload: pool %s changed: starting a new generation of %d workers", ps->name, pc->workers);
            struct pool_state *next = pool_new(m, nc, pc, now);
            next->fresh = true;
            ps = m->pools[i];           /* pool_new may move the array */
            pool_start(m, next, now);
            pool_retire(m, ps, now);
            replaced++;
        }
    }
    for (size_t i = 0; i < nc->npools; i++) {
        bool have = false;
        for (size_t k = 0; k < nold && !have; k++)
            have = !m->pools[k]->removed && strcmp(m->pools[k]->name, nc->pools[i].name) == 0;
        for (size_t k = nold; k < m->npools && !have; k++)
            have = strcmp(m->pools[k]->name, nc->pools[i].name) == 0;
        if (have)
            continue;
        log_info("reload: pool %s added: starting %d workers", nc->pools[i].name, nc->pools[i].workers);
        pool_start(m, pool_new(m, nc, &nc->pools[i], now), now);
        started++;
    }

    m->confs = xrealloc(m->confs, (m->nconfs + 1) * sizeof *m->confs);
    m->confs[m->nconfs++] = nc;
    m->conf = nc;
    drop_idle_drained(m);
    collect(m);
    watch_set(m->watch, nc);
    if (canaries) {
        /* Counted when the last canary is promoted or rolled back (check_canaries()). */
        m->canaries = canaries;
        m->canary_failed = false;
        note_reload(m, "canary", "");
    } else {
        m->reloads_ok++;
        note_reload(m, "ok", "");
    }
    log_info("reload: done (%u pools added, %u removed, %u restarted with new settings, %u rescaled, "
             "%u on trial with a canary)", started, removed, replaced, scaled, canaries);
    notify("READY=1");
}

/* watch = yes: a file of the handlers of pool name changed. Its workers are replaced as a
 * reload replaces a changed pool (a new generation started, the old one drained), with the
 * config as it is: nothing is re-read. What a reload would refuse is refused here too, and the
 * running workers stay: a plugin that no longer loads (the same forked check), or too few
 * free scoreboard slots for the new generation beside the old. */
static void replace_watched(struct master *m, const char *name, const char *file, long long now)
{
    struct pool_state *ps = NULL;
    for (size_t i = 0; i < m->npools && ps == NULL; i++)
        if (!m->pools[i]->removed && m->pools[i]->canary_of == NULL && strcmp(m->pools[i]->name, name) == 0)
            ps = m->pools[i];
    if (ps == NULL || !ps->conf->watch || m->draining)
        return;
    /* The canary's promotion retires ps: a generation started here would be drained with it,
     * and ps freed under the canary. The canary started after the change runs the new file. */
    for (size_t i = 0; i < m->npools; i++)
        if (m->pools[i]->canary_of == ps) {
            log_warnx("watch: %s changed: pool %s has a reload's canary on trial: left to it", file, name);
            return;
        }
    size_t free_slots = slots_free(m);
    if ((size_t)ps->workers > free_slots) {
        log_errorx("watch: %s changed: pool %s keeps its workers: the new ones need %d scoreboard slots "
                   "beside the draining ones, %zu are free", file, name, ps->workers, free_slots);
        return;
    }
    if (plugincheck_pool(ps->owner, ps->conf) > 0) {
        log_errorx("watch: %s changed: pool %s keeps its workers: the plugin as it is now does not load",
                   file, name);
        return;
    }
    log_info("watch: %s changed: pool %s: starting a new generation of %d workers", file, name, ps->workers);
    struct pool_state *next = pool_new(m, ps->owner, ps->conf, now);
    next->workers = ps->workers;        /* as SIGTTIN/SIGTTOU or the scaling left it */
    next->workers_min = ps->workers_min;
    next->workers_max = ps->workers_max;
    next->scale = ps->scale;
    next->fresh = true;
    pool_start(m, next, now);
    pool_retire(m, ps, now);
    drop_idle_drained(m);
    history_of(m, name)->watch_restarts++;
}

/* SIGTTIN (+1) and SIGTTOU (-1): every pool, never below one worker. A range moves whole
 * (2..16 becomes 3..17), and the count with it. */
static void rescale_all(struct master *m, int delta, long long now)
{
    for (size_t i = 0; i < m->npools; i++) {
        struct pool_state *ps = m->pools[i];
        if (ps->removed || ps->canary_of)
            continue;
        int want = ps->workers + delta;
        if (ps->workers_min + delta < 1 || ps->workers_max + delta > CONF_WORKERS_MAX || want < 1 ||
            want > CONF_WORKERS_MAX)
            continue;
        ps->workers_min += delta;
        ps->workers_max += delta;
        if (ps->workers_min == ps->workers_max)
            log_info("pool %s: %d -> %d workers (%s)", ps->name, ps->workers, want, delta > 0 ? "SIGTTIN" : "SIGTTOU");
        else
            log_info("pool %s: %d -> %d workers, range %d..%d (%s)", ps->name, ps->workers, want, ps->workers_min,
                     ps->workers_max, delta > 0 ? "SIGTTIN" : "SIGTTOU");
        pool_scale(m, ps, want, now);
    }
    drop_idle_drained(m);
}

/* workers = MIN..MAX: one more worker while the pool's oldest pending entry waits too long,
 * one fewer once it has not for a while (supervisor/scale.h). A worker to add needs a free
 * scoreboard slot; one to retire drains what it holds. */
static void autoscale(struct master *m, long long now)
{
    for (size_t i = 0; i < m->npools; i++) {
        struct pool_state *ps = m->pools[i];
        if (ps->removed || ps->canary_of || ps->workers_min == ps->workers_max)
            continue;
        const struct redis_pool_stats *rs = redismon_pool(m->mon, ps->name);
        struct scale_input in = {
            .workers = ps->workers,
            .min = ps->workers_min,
            .max = ps->workers_max,
            /* Figures of a Redis that went away would only age: no decision on them. */
            .known = rs != NULL && redismon_up(m->mon),
            /* As of the poll: between two polls the entry may have been acknowledged. */
            .oldest_wait_ms = rs == NULL || rs->oldest_pending_ms < 0 ? -1
                              : rs->pending_polled_ms - rs->oldest_pending_ms,
            .up_after_ms = ps->conf->scale_up_after_ms,
            .down_after_ms = ps->conf->scale_down_after_ms,
            .interval_ms = ps->conf->scale_interval_ms,
        };
        int want = scale_decide(&ps->scale, &in, now);
        if (want == ps->workers || (want > ps->workers && slots_free(m) < (size_t)(want - ps->workers)))
            continue;
        log_info("pool %s: %d -> %d workers (%s)", ps->name, ps->workers, want,
                 want > ps->workers ? "an entry waits longer than scale_up_after" : "caught up");
        pool_scale(m, ps, want, now);
    }
    drop_idle_drained(m);
}

/* ---- stats lines ---- */

static void log_stats(struct master *m, long long now)
{
    if (m->conf->stats_interval_ms <= 0)
        return;
    struct fleet_view v;
    bool due = false;
    for (size_t i = 0; i < m->npools && !due; i++)
        due = !m->pools[i]->removed && now - m->pools[i]->stats_ms >= m->conf->stats_interval_ms;
    if (!due)
        return;
    build_view(m, &v, false);
    for (unsigned i = 0; i < v.npools; i++) {
        const struct pool_view *pv = &v.pools[i];
        struct pool_state *ps = NULL;
        for (size_t k = 0; k < m->npools && !ps; k++)
            if (!m->pools[k]->removed && m->pools[k]->canary_of == NULL && strcmp(m->pools[k]->name, pv->name) == 0)
                ps = m->pools[k];
        if (ps == NULL || now - ps->stats_ms < m->conf->stats_interval_ms)
            continue;
        double secs = (double)(now - ps->stats_ms) / 1000.0;
        double rate = secs > 0 ? (double)(pv->c[SB_READ] - ps->stats_read) / secs : 0;
        log_info("stats pool=%s workers=%u/%u read=%llu acked=%llu failed=%llu retried=%llu dead_lettered=%llu "
                 "duplicates=%llu inflight=%u rate=%.1f/s",
                 pv->name, pv->workers_live, pv->workers_expected, (unsigned long long)pv->c[SB_READ],
                 (unsigned long long)pv->c[SB_ACKED], (unsigned long long)pv->c[SB_FAILED],
                 (unsigned long long)pv->c[SB_RETRIED], (unsigned long long)pv->c[SB_DEAD_LETTERED],
                 (unsigned long long)pv->c[SB_DUPLICATE], pv->inflight, rate);
        ps->stats_ms = now;
        ps->stats_read = pv->c[SB_READ];
    }
    free(v.pools);
    free(v.workers);
}

/* ---- signals and the loop ---- */

static void start_drain(struct master *m, const char *why, long long now)
{
    if (m->draining)
        return;
    m->draining = true;
    m->drain_deadline_ms = now + m->conf->drain_timeout_ms;
    notify("STOPPING=1");
    log_info("%s: draining %u workers (at most %ld ms)", why, procs_live(m), m->conf->drain_timeout_ms);
    for (size_t i = 0; i < m->nprocs; i++)
        procs_drain(m, &m->procs[i], now);
}

static void handle_signals(struct master *m, long long now)
{
    struct signalfd_siginfo si;
    while (read(m->sigfd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            procs_reap(m, now);
            break;
        case SIGTERM:
        case SIGINT:
            start_drain(m, si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", now);
            break;
        case SIGQUIT:
            log_info("SIGQUIT: stopping %u workers now (what they hold stays pending in redis)", procs_live(m));
            start_drain(m, "SIGQUIT", now);
            procs_signal_all(m, SIGKILL);
            m->fast_stop = true;
            break;
        case SIGHUP:
            if (m->draining)
                log_warnx("SIGHUP while draining: ignored");
            else
                reload(m, now);
            break;
        case SIGTTIN:
        case SIGTTOU:
            if (!m->draining)
                rescale_all(m, si.ssi_signo == SIGTTIN ? 1 : -1, now);
            break;
        case SIGUSR1:
            if (m->conf->log_file) {
                if (log_open_file(m->conf->log_file) == -1)
                    log_warn("SIGUSR1: cannot reopen %s, still writing to the old file", m->conf->log_file);
                else
                    log_info("SIGUSR1: log file reopened");
                procs_signal_all(m, SIGUSR1);
            }
            break;
        default:
            log_warnx("signal %d (%s) ignored", (int)si.ssi_signo, strsignal((int)si.ssi_signo));
            break;
        }
    }
}

static int setup_signals(void)
{
    sigset_t set;
    sigemptyset(&set);
    int sigs[] = { SIGCHLD, SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN, SIGTTOU };
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&set, sigs[i]);
    if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
        return -1;
    /* OpenSSL (the monitor over TLS) writes without MSG_NOSIGNAL; a peer that goes away must
     * not kill us. */
    signal(SIGPIPE, SIG_IGN);
    return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static long min_timeout(long a, long b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

int master_run(struct master *m, struct conf *conf)
{
    m->conf = conf;
    m->confs = xcalloc(1, sizeof *m->confs);
    m->confs[m->nconfs++] = conf;
    m->start_time = wall_seconds();

    if ((m->sigfd = setup_signals()) == -1)
        fatal("signalfd");
    if (sb_open(&m->sb, SB_SLOTS_MAX) == -1)
        fatal("mmap of the scoreboard");
    if (aimd_open() == -1)
        fatal("mmap of the destination table");
    m->sb_used = xcalloc(m->sb.nslots, sizeof *m->sb_used);
    m->mon = redismon_open(&conf->redis);
    redismon_set_pools(m->mon, conf);
    m->trim = trim_open();
    trim_set_pools(m->trim, conf);
    redismon_set_trim(m->mon, m->trim);

    long long now = master_now_ms();
    unsigned workers = 0;
    for (size_t i = 0; i < conf->npools; i++) {
        pool_new(m, conf, &conf->pools[i], now);
        workers += (unsigned)conf->pools[i].workers;
    }
    char where[300];
    log_info("streamfleet %s: %zu pools, %u workers, redis %s, http://%s%s%s:%d/metrics", SF_VERSION,
             conf->npools, workers, conf_redis_display(&conf->redis, where, sizeof where),
             strchr(conf->listen_host, ':') ? "[" : "", conf->listen_host,
             strchr(conf->listen_host, ':') ? "]" : "", conf->listen_port);
    for (size_t i = 0; i < m->npools; i++)
        pool_start(m, m->pools[i], now);
    m->watch = watch_open();
    watch_set(m->watch, conf);
    notify("READY=1");

    for (;;) {
        now = master_now_ms();
        if (m->draining && procs_live(m) == 0)
            break;
        if (m->draining && !m->fast_stop && now >= m->drain_deadline_ms) {
            log_warnx("drain timeout: killing %u workers (what they hold stays pending in redis)", procs_live(m));
            procs_signal_all(m, SIGKILL);
            m->fast_stop = true;
        }

        long timeout = LOOP_MAX_MS;
        timeout = min_timeout(timeout, httpd_timeout_ms(m->httpd));
        if (m->dlqweb)
            timeout = min_timeout(timeout, dlqweb_timeout_ms(m->dlqweb, now));
        timeout = min_timeout(timeout, redismon_timeout_ms(m->mon, now));
        timeout = min_timeout(timeout, procs_timeout_ms(m, now));
        timeout = min_timeout(timeout, watch_timeout_ms(m->watch, now));
        timeout = min_timeout(timeout, m->next_check_ms > now ? (long)(m->next_check_ms - now) : 0);
        if (m->draining && !m->fast_stop)
            timeout = min_timeout(timeout, m->drain_deadline_ms > now ? (long)(m->drain_deadline_ms - now) : 0);

        struct pollfd pfd[4 + DLQWEB_CHILDREN] = {
            { .fd = m->sigfd, .events = POLLIN },
            { .fd = httpd_fd(m->httpd), .events = POLLIN },
        };
        int n = 2;
        n += redismon_fds(m->mon, &pfd[2]);
        int wi = n;                     /* the inotify descriptor: -1 (ignored by poll) when unused */
        pfd[n++] = (struct pollfd){ .fd = watch_fd(m->watch), .events = POLLIN };
        if (m->dlqweb)
            n += dlqweb_fds(m->dlqweb, &pfd[n]);      /* read in dlqweb_run() */
        if (poll(pfd, (nfds_t)n, (int)timeout) == -1 && errno != EINTR)
            fatal("poll");

        now = master_now_ms();
        if (pfd[0].revents)
            handle_signals(m, now);
        httpd_run(m->httpd);
        if (m->dlqweb)
            dlqweb_run(m->dlqweb, m->httpd, now);
        redismon_run(m->mon, wi > 2 ? pfd[2].revents : 0, now);
        if (pfd[wi].revents)
            watch_read(m->watch, now);
        const char *changed, *file;
        while ((changed = watch_next_due(m->watch, now, &file)) != NULL)
            replace_watched(m, changed, file, now);
        procs_reap(m, now);
        procs_respawn_due(m, now);
        if (now >= m->next_check_ms) {
            procs_check(m, now);
            log_stats(m, now);
            sample(m, now);
            publish_delivered(m);
            if (!m->draining) {
                check_canaries(m, now);
                autoscale(m, now);
            }
            m->next_check_ms = now + 500;
        }
        collect(m);
    }

    /* The drain report: one line per pool of what its workers held when told to finish. */
    struct fleet_view v;
    build_view(m, &v, false);
    for (unsigned i = 0; i < v.npools; i++)
        log_info("drained pool=%s held=%llu finished=%llu released=%llu abandoned=%llu", v.pools[i].name,
                 (unsigned long long)v.pools[i].c[SB_DRAIN_HELD], (unsigned long long)v.pools[i].c[SB_DRAIN_FINISHED],
                 (unsigned long long)v.pools[i].c[SB_DRAIN_RELEASED],
                 (unsigned long long)v.pools[i].c[SB_DRAIN_ABANDONED]);
    free(v.pools);
    log_info("all workers stopped: exiting");
    dlqweb_free(m->dlqweb);
    httpd_close(m->httpd);
    redismon_free(m->mon);
    trim_free(m->trim);
    crash_free(m->crash);
    watch_free(m->watch);
    procs_release(m);
    for (size_t i = 0; i < m->npools; i++) {
        free(m->pools[i]->name);
        free(m->pools[i]);
    }
    free(m->pools);
    for (size_t i = 0; i < m->nconfs; i++)
        conf_free(m->confs[i]);
    free(m->confs);
    free(m->sb_used);
    for (size_t i = 0; i < m->nhist; i++)
        free(m->hist[i].name);
    free(m->hist);
    sb_close(&m->sb);
    close(m->sigfd);
    return 0;
}
