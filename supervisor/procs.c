/* procs.c: the child table: fork, reap, respawn with a growing delay after quick deaths. */
#include "supervisor/master.h"
#include "child/child.h"
#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QUICK_DEATH_MS 5000          /* dying sooner than this after start is a crash loop */
#define RESPAWN_MIN_MS 1000
#define RESPAWN_MAX_MS 30000

long long master_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void procs_init(struct master *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->npools; i++)
        n += (size_t)m->pools[i].workers;
    m->procs = xcalloc(n, sizeof *m->procs);
    m->nprocs = 0;
    for (size_t i = 0; i < m->npools; i++)
        for (int k = 0; k < m->pools[i].workers; k++) {
            struct proc *p = &m->procs[m->nprocs++];
            p->pool = &m->pools[i];
            p->index = k;
            p->sb = -1;
        }
}

void procs_release(struct master *m)
{
    free(m->procs);
    m->procs = NULL;
    m->nprocs = 0;
}

static int take_slot(struct master *m)
{
    for (size_t i = 0; i < m->sb.nslots; i++)
        if (!m->sb_used[i]) {
            m->sb_used[i] = true;
            sb_slot_reset(&m->sb.slot[i]);
            return (int)i;
        }
    return -1;
}

int procs_spawn(struct master *m, struct proc *p, long long now)
{
    if (p->sb < 0 && (p->sb = take_slot(m)) < 0) {
        log_errorx("no free scoreboard slot for pool %s", p->pool->conf->name);
        return -1;
    }
    struct sb_slot *slot = &m->sb.slot[p->sb];
    atomic_store(&slot->state, SB_STARTING);
    atomic_store(&slot->heartbeat_ms, (uint64_t)now);
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        log_warn("fork for pool %s", p->pool->conf->name);
        p->respawn_at_ms = now + RESPAWN_MIN_MS;
        return -1;
    }
    if (pid == 0)
        child_main(m->conf, p->pool->conf, p->index, slot, master);
    p->pid = pid;
    p->started_ms = now;
    p->respawn_at_ms = 0;
    atomic_store(&slot->pid, pid);
    atomic_store(&slot->state, SB_RUNNING);
    log_debug("started worker %d of pool %s: pid %d", p->index, p->pool->conf->name, (int)pid);
    return 0;
}

static struct proc *find(struct master *m, pid_t pid)
{
    for (size_t i = 0; i < m->nprocs; i++)
        if (m->procs[i].pid == pid)
            return &m->procs[i];
    return NULL;
}

/* A child ended: keep what it counted, free its slot, and decide when to replace it. */
static void on_exit_of(struct master *m, struct proc *p, int status, long long now)
{
    struct sb_slot *slot = &m->sb.slot[p->sb];
    sb_fold(p->pool->retired, slot);
    m->sb_used[p->sb] = false;
    atomic_store(&slot->state, SB_FREE);
    p->sb = -1;
    pid_t pid = p->pid;
    p->pid = 0;

    const char *pool = p->pool->conf->name;
    if (m->draining) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            log_debug("worker %d of pool %s (pid %d) drained", p->index, pool, (int)pid);
        else if (WIFSIGNALED(status))
            log_warnx("worker %d of pool %s (pid %d) killed by signal %d while draining", p->index, pool,
                      (int)pid, WTERMSIG(status));
        else
            log_warnx("worker %d of pool %s (pid %d) exited with status %d while draining", p->index,
                      pool, (int)pid, WEXITSTATUS(status));
        return;
    }

    if (WIFSIGNALED(status))
        log_warnx("worker %d of pool %s (pid %d) killed by signal %d (%s): replacing it", p->index,
                  pool, (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
    else if (WEXITSTATUS(status) == CHILD_EXIT_CONFIG)
        log_errorx("worker %d of pool %s (pid %d) cannot work with this config (exit %d)", p->index,
                   pool, (int)pid, WEXITSTATUS(status));
    else
        log_warnx("worker %d of pool %s (pid %d) exited with status %d: replacing it", p->index, pool,
                  (int)pid, WEXITSTATUS(status));
    p->pool->restarts++;

    /* A child that dies soon after it started would be restarted in a hot loop: wait 1 s,
     * doubling up to 30 s, until one lives long enough. A config that cannot work waits the
     * longest at once. */
    bool config_exit = WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EXIT_CONFIG;
    if (now - p->started_ms < QUICK_DEATH_MS || config_exit)
        p->quick_deaths++;
    else
        p->quick_deaths = 0;
    long delay = 0;
    if (config_exit)
        delay = RESPAWN_MAX_MS;
    else if (p->quick_deaths > 0) {
        delay = RESPAWN_MIN_MS;
        for (unsigned i = 1; i < p->quick_deaths && delay < RESPAWN_MAX_MS; i++)
            delay *= 2;
        if (delay > RESPAWN_MAX_MS)
            delay = RESPAWN_MAX_MS;
        log_warnx("worker %d of pool %s died %u times in a row soon after start: next start in %ld ms",
                  p->index, pool, p->quick_deaths, delay);
    }
    p->respawn_at_ms = now + delay;
}

void procs_reap(struct master *m, long long now)
{
    /* SIGCHLD coalesces: reap until there is nothing left. */
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid == 0)
            return;
        if (pid == -1) {
            if (errno == EINTR)
                continue;
            return;
        }
        struct proc *p = find(m, pid);
        if (p)
            on_exit_of(m, p, status, now);
    }
}

void procs_respawn_due(struct master *m, long long now)
{
    if (m->draining)
        return;
    for (size_t i = 0; i < m->nprocs; i++) {
        struct proc *p = &m->procs[i];
        if (p->pid == 0 && now >= p->respawn_at_ms)
            procs_spawn(m, p, now);
    }
}

long procs_timeout_ms(struct master *m, long long now)
{
    long best = -1;
    if (m->draining)
        return -1;
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct proc *p = &m->procs[i];
        if (p->pid != 0)
            continue;
        long t = p->respawn_at_ms <= now ? 0 : (long)(p->respawn_at_ms - now);
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

void procs_signal_all(struct master *m, int sig)
{
    for (size_t i = 0; i < m->nprocs; i++)
        if (m->procs[i].pid > 0)
            kill(m->procs[i].pid, sig);
}

unsigned procs_live(const struct master *m)
{
    unsigned n = 0;
    for (size_t i = 0; i < m->nprocs; i++)
        n += m->procs[i].pid > 0;
    return n;
}
