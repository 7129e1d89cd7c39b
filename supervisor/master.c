/* master.c: the master's loop. Signals arrive on a signalfd (they are blocked, never handled
 * asynchronously); the HTTP endpoint and the Redis monitor each give one descriptor; child
 * exits are reaped on SIGCHLD; restarts and the drain have deadlines. No threads: fork() is
 * safe from here. */
#include "supervisor/master.h"
#include "common/log.h"
#include "supervisor/httpd.h"
#include "supervisor/redismon.h"
#include "supervisor/view.h"

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

static double wall_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The fleet as it is now. The caller frees v->pools. */
static void build_view(struct master *m, struct fleet_view *v)
{
    v->version = SF_VERSION;
    v->start_time = m->start_time;
    v->redis_up = redismon_up(m->mon);
    v->redis_error = redismon_error(m->mon);
    v->npools = (unsigned)m->npools;
    v->pools = xcalloc(m->npools, sizeof *v->pools);
    for (size_t i = 0; i < m->npools; i++) {
        struct pool_view *pv = &v->pools[i];
        struct pool_state *ps = &m->pools[i];
        pv->name = ps->conf->name;
        memcpy(pv->c, ps->retired, sizeof pv->c);
        pv->workers_expected = (unsigned)ps->workers;
        pv->restarts = ps->restarts;
    }
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct proc *p = &m->procs[i];
        struct pool_view *pv = &v->pools[p->pool - m->pools];
        if (p->pid == 0 && p->quick_deaths > 0)
            pv->crash_loop = true;
        if (p->sb < 0)
            continue;
        const struct sb_slot *slot = &m->sb.slot[p->sb];
        sb_fold(pv->c, slot);
        if (p->pid > 0)
            pv->workers_live++;
        pv->inflight += atomic_load_explicit(&slot->inflight, memory_order_acquire);
        pv->circuit_open += atomic_load_explicit(&slot->circuit_open, memory_order_acquire) != 0;
    }
}

static int serve(void *arg, const char *path, const char *query_pool, struct buf *body,
                 const char **ctype)
{
    struct master *m = arg;
    if (strcmp(path, "/metrics") == 0 || strcmp(path, "/health") == 0) {
        struct fleet_view v;
        build_view(m, &v);
        int status = 200;
        if (path[1] == 'm') {
            metrics_render(body, &v);
            *ctype = "text/plain; version=0.0.4; charset=utf-8";
        } else {
            status = health_render(body, &v, query_pool);
            *ctype = "application/json";
        }
        free(v.pools);
        return status;
    }
    buf_adds(body, "not found\n");
    return 404;
}

static void start_drain(struct master *m, const char *why, long long now)
{
    if (m->draining)
        return;
    m->draining = true;
    m->drain_deadline_ms = now + m->conf->drain_timeout_ms;
    log_info("%s: draining %u workers (at most %ld ms)", why, procs_live(m), m->conf->drain_timeout_ms);
    procs_signal_all(m, SIGTERM);
}

/* Read every pending signal. Returns false when the loop must end at once. */
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
            /* Fast stop: what the children hold stays pending in Redis. */
            log_info("SIGQUIT: stopping %u workers now", procs_live(m));
            start_drain(m, "SIGQUIT", now);
            procs_signal_all(m, SIGKILL);
            m->killed_stragglers = true;
            break;
        default:
            log_warnx("signal %d (%s) is not handled by this version: ignored", (int)si.ssi_signo,
                      strsignal((int)si.ssi_signo));
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
    /* hiredis writes without MSG_NOSIGNAL; a peer that goes away must not kill us. */
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

int master_run(struct conf *conf)
{
    struct master m;
    memset(&m, 0, sizeof m);
    m.conf = conf;
    m.start_time = wall_seconds();

    if ((m.sigfd = setup_signals()) == -1)
        fatal("signalfd");
    if (sb_open(&m.sb, SB_SLOTS_MAX) == -1)
        fatal("mmap of the scoreboard");
    m.sb_used = xcalloc(m.sb.nslots, sizeof *m.sb_used);

    m.npools = conf->npools;
    m.pools = xcalloc(m.npools, sizeof *m.pools);
    unsigned workers = 0;
    for (size_t i = 0; i < m.npools; i++) {
        m.pools[i].conf = &conf->pools[i];
        m.pools[i].workers = conf->pools[i].workers;
        workers += (unsigned)conf->pools[i].workers;
    }

    char err[256];
    m.httpd = httpd_open(conf->listen_host, conf->listen_port,
                         (struct httpd_route){ .fn = serve, .arg = &m }, err, sizeof err);
    if (m.httpd == NULL)
        fatalx("%s", err);
    m.mon = redismon_open(&conf->redis);

    char where[300];
    log_info("streamfleet %s: %zu pools, %u workers, redis %s, http://%s%s%s:%d/metrics", SF_VERSION,
             m.npools, workers, conf_redis_display(&conf->redis, where, sizeof where),
             strchr(conf->listen_host, ':') ? "[" : "", conf->listen_host,
             strchr(conf->listen_host, ':') ? "]" : "", conf->listen_port);

    long long now = master_now_ms();
    procs_init(&m);
    for (size_t i = 0; i < m.nprocs; i++)
        procs_spawn(&m, &m.procs[i], now);

    for (;;) {
        now = master_now_ms();
        if (m.draining && procs_live(&m) == 0)
            break;
        if (m.draining && !m.killed_stragglers && now >= m.drain_deadline_ms) {
            log_warnx("drain timeout: killing %u workers (what they hold stays pending in redis)",
                      procs_live(&m));
            procs_signal_all(&m, SIGKILL);
            m.killed_stragglers = true;
        }

        long timeout = LOOP_MAX_MS;
        timeout = min_timeout(timeout, httpd_timeout_ms(m.httpd));
        timeout = min_timeout(timeout, redismon_timeout_ms(m.mon, now));
        timeout = min_timeout(timeout, procs_timeout_ms(&m, now));
        if (m.draining && !m.killed_stragglers)
            timeout = min_timeout(timeout, m.drain_deadline_ms > now ? (long)(m.drain_deadline_ms - now) : 0);

        struct pollfd pfd[3] = {
            { .fd = m.sigfd, .events = POLLIN },
            { .fd = httpd_fd(m.httpd), .events = POLLIN },
        };
        int n = 2;
        n += redismon_fds(m.mon, &pfd[2]);
        if (poll(pfd, (nfds_t)n, (int)timeout) == -1 && errno != EINTR)
            fatal("poll");

        now = master_now_ms();
        if (pfd[0].revents)
            handle_signals(&m, now);
        httpd_run(m.httpd);
        redismon_run(m.mon, n > 2 ? pfd[2].revents : 0, now);
        procs_reap(&m, now);
        procs_respawn_due(&m, now);
    }

    log_info("all workers stopped: exiting");
    httpd_close(m.httpd);
    redismon_free(m.mon);
    procs_release(&m);
    free(m.pools);
    free(m.sb_used);
    sb_close(&m.sb);
    close(m.sigfd);
    return 0;
}
