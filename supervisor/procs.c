/* procs.c: the child table: fork, reap, respawn with a growing delay after quick deaths,
 * heartbeats, and the per-child drain. */
#include "supervisor/master.h"
#include "supervisor/crash.h"
#include "child/child.h"
#include "common/aimd.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A worker's row of destination slots is its scoreboard slot's index. */
static_assert(AIMD_WORKERS >= SB_SLOTS_MAX, "one row of destination slots per scoreboard slot");

#define QUICK_DEATH_MS 5000          /* dying sooner than this after start is a crash loop */
#define RESPAWN_MIN_MS 1000
#define RESPAWN_MAX_MS 30000

long long master_now_ms(void)
{
    return clock_mono_ms();
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

struct proc *procs_add(struct master *m, struct pool_state *pool, int index, long long now)
{
    if (m->nprocs == m->procs_cap) {
        m->procs_cap = m->procs_cap ? m->procs_cap * 2 : 16;
        m->procs = xrealloc(m->procs, m->procs_cap * sizeof *m->procs);
    }
    struct proc *p = &m->procs[m->nprocs++];
    memset(p, 0, sizeof *p);
    p->pool = pool;
    p->index = index;
    p->sb = -1;
    procs_spawn(m, p, now);
    return p;
}

int procs_spawn(struct master *m, struct proc *p, long long now)
{
    if (p->sb < 0 && (p->sb = take_slot(m)) < 0) {
        log_errorx("no free scoreboard slot for pool %s (at most %d workers)", p->pool->name, SB_SLOTS_MAX);
        p->respawn_at_ms = now + RESPAWN_MAX_MS;
        return -1;
    }
    struct sb_slot *slot = &m->sb.slot[p->sb];
    atomic_store(&slot->state, SB_STARTING);
    atomic_store(&slot->heartbeat_ms, (uint64_t)now);
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        /* EAGAIN (RLIMIT_NPROC, pid or memory exhaustion) does not clear in a second: wait
         * 1 s, doubling up to 30 s, so that the retries and their log lines stay few. */
        int e = errno;
        p->fork_failures++;
        long delay = backoff_ms(BACKOFF_EXPONENTIAL, RESPAWN_MIN_MS, RESPAWN_MAX_MS, 0, p->fork_failures, 0.5);
        log_warnx("fork for worker %d of pool %s: %s (%u in a row): next attempt in %ld ms", p->index,
                  p->pool->name, strerror(e), p->fork_failures, delay);
        p->respawn_at_ms = now + delay;
        return -1;
    }
    p->fork_failures = 0;
    /* Only the first child of a slot of a new generation skips its pending list (the old
     * generation still works on it); a replacement must recover what its predecessor held. */
    bool fresh = p->pool->fresh && !p->started_before;
    if (pid == 0) {
        aimd_set_worker(p->sb);
        child_main(p->pool->owner, p->pool->conf, p->index, slot, master, fresh);
    }
    p->started_before = true;
    p->pid = pid;
    p->started_ms = now;
    p->respawn_at_ms = 0;
    p->killed_for_heartbeat = false;
    atomic_store(&slot->pid, pid);
    atomic_store(&slot->state, SB_RUNNING);
    log_debug("started worker %d of pool %s: pid %d", p->index, p->pool->name, (int)pid);
    return 0;
}

void procs_drain(struct master *m, struct proc *p, long long now)
{
    p->draining = true;
    if (p->pid > 0) {
        kill(p->pid, SIGTERM);
        p->kill_at_ms = now + m->conf->drain_timeout_ms;
        if (p->sb >= 0)
            atomic_store(&m->sb.slot[p->sb].state, SB_DRAINING);
    }
}

static void drop(struct master *m, struct proc *p)
{
    size_t i = (size_t)(p - m->procs);
    m->procs[i] = m->procs[--m->nprocs];
}

/* Why it ended, for the log and the restart counter. */
static enum restart_reason reason_of(const struct proc *p, int status)
{
    if (p->killed_for_heartbeat)
        return RESTART_HEARTBEAT;
    if (WIFSIGNALED(status))
        return RESTART_SIGNAL;
    if (WEXITSTATUS(status) == CHILD_EXIT_RECYCLE)
        return RESTART_RECYCLE;
    if (WEXITSTATUS(status) == CHILD_EXIT_MEMORY)
        return RESTART_MEMORY;
    return RESTART_EXIT;
}

/* A child ended: keep what it counted, free its slot, and decide when to replace it. */
static void on_exit_of(struct master *m, struct proc *p, int status, long long now)
{
    struct sb_slot *slot = &m->sb.slot[p->sb];
    crash_note(m, p, status);       /* while the slot still says what it held */
    sb_fold(p->pool->retired, slot);
    /* The slots it held at HTTP destinations go back to the fleet, however it died. */
    aimd_reap(aimd_shared(), p->sb);
    /* What it held at its drain and neither finished nor released was lost with it (killed
     * at drain_timeout, or died): it stays pending in Redis. */
    uint64_t held = atomic_load(&slot->c[SB_DRAIN_HELD]), done = atomic_load(&slot->c[SB_DRAIN_FINISHED]) +
                                                             atomic_load(&slot->c[SB_DRAIN_RELEASED]);
    if (held > done)
        p->pool->retired[SB_DRAIN_ABANDONED] += held - done;
    m->sb_used[p->sb] = false;
    atomic_store(&slot->state, SB_FREE);
    p->sb = -1;
    pid_t pid = p->pid;
    p->pid = 0;
    const char *pool = p->pool->name;

    if (p->draining || m->draining || p->pool->removed || p->index >= p->pool->workers) {
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
            log_debug("worker %d of pool %s (pid %d) drained", p->index, pool, (int)pid);
        else if (WIFSIGNALED(status))
            log_warnx("worker %d of pool %s (pid %d) killed by signal %d while draining", p->index, pool,
                      (int)pid, WTERMSIG(status));
        else
            log_warnx("worker %d of pool %s (pid %d) exited with status %d while draining", p->index,
                      pool, (int)pid, WEXITSTATUS(status));
        drop(m, p);
        return;
    }

    enum restart_reason why = reason_of(p, status);
    bool config_exit = WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EXIT_CONFIG;
    switch (why) {
    case RESTART_RECYCLE:
        log_info("worker %d of pool %s (pid %d) recycled after max_messages: replacing it", p->index, pool, (int)pid);
        break;
    case RESTART_MEMORY:
        log_warnx("worker %d of pool %s (pid %d) exceeded memory_limit: replacing it", p->index, pool, (int)pid);
        break;
    case RESTART_HEARTBEAT:
        log_warnx("worker %d of pool %s (pid %d) killed for silence: replacing it", p->index, pool, (int)pid);
        break;
    case RESTART_SIGNAL:
        log_warnx("worker %d of pool %s (pid %d) killed by signal %d (%s): replacing it", p->index, pool,
                  (int)pid, WTERMSIG(status), strsignal(WTERMSIG(status)));
        break;
    default:
        if (config_exit)
            log_errorx("worker %d of pool %s (pid %d) cannot work with this config (exit %d)", p->index, pool,
                       (int)pid, WEXITSTATUS(status));
        else
            log_warnx("worker %d of pool %s (pid %d) exited with status %d: replacing it", p->index, pool,
                      (int)pid, WEXITSTATUS(status));
        break;
    }
    p->pool->restarts[why]++;
    p->restarts++;
    p->pool->restart_ms[p->pool->nrestarts++ % 16] = now;

    /* A child that dies soon after it started would be restarted in a hot loop: wait 1 s,
     * doubling up to 30 s, until one lives long enough. A config that cannot work waits the
     * longest at once. */
    /* Recycling is not dying: a busy pool with a small max_messages recycles often, by design.
     * But a worker over memory_limit right after its start would be replaced in a hot loop
     * just like one that crashes: soon is soon. */
    if ((why != RESTART_RECYCLE && now - p->started_ms < QUICK_DEATH_MS) || config_exit)
        p->quick_deaths++;
    else
        p->quick_deaths = 0;
    long delay = 0;
    if (config_exit) {
        delay = RESPAWN_MAX_MS;
    } else if (p->quick_deaths > 0) {
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

static struct proc *find(struct master *m, pid_t pid)
{
    for (size_t i = 0; i < m->nprocs; i++)
        if (m->procs[i].pid == pid)
            return &m->procs[i];
    return NULL;
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
        if (p->pid == 0 && !p->draining && now >= p->respawn_at_ms)
            procs_spawn(m, p, now);
    }
}

void procs_check(struct master *m, long long now)
{
    for (size_t i = 0; i < m->nprocs; i++) {
        struct proc *p = &m->procs[i];
        if (p->pid <= 0 || p->sb < 0)
            continue;
        if (p->draining && p->kill_at_ms && now >= p->kill_at_ms) {
            log_warnx("worker %d of pool %s (pid %d) still busy after drain_timeout: killing it "
                      "(what it holds stays pending in redis)", p->index, p->pool->name, (int)p->pid);
            kill(p->pid, SIGKILL);
            p->kill_at_ms = 0;
            continue;
        }
        if (p->draining || p->killed_for_heartbeat)
            continue;
        uint64_t beat = atomic_load_explicit(&m->sb.slot[p->sb].heartbeat_ms, memory_order_acquire);
        long long silent = now - (long long)beat;
        if (silent > p->pool->conf->heartbeat_timeout_ms) {
            log_warnx("worker %d of pool %s (pid %d) silent for %lld ms (heartbeat_timeout %ld ms): killing it",
                      p->index, p->pool->name, (int)p->pid, silent, p->pool->conf->heartbeat_timeout_ms);
            p->killed_for_heartbeat = true;
            kill(p->pid, SIGKILL);
            /* A stopped process dies of SIGKILL too: no SIGCONT needed. */
        }
    }
}

long procs_timeout_ms(struct master *m, long long now)
{
    long best = -1;
    for (size_t i = 0; i < m->nprocs; i++) {
        const struct proc *p = &m->procs[i];
        long long due = 0;
        if (p->pid == 0 && !p->draining && !m->draining)
            due = p->respawn_at_ms;
        else if (p->pid > 0 && p->draining && p->kill_at_ms)
            due = p->kill_at_ms;
        else
            continue;
        long t = due <= now ? 0 : (long)(due - now);
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

void procs_release(struct master *m)
{
    free(m->procs);
    m->procs = NULL;
    m->nprocs = m->procs_cap = 0;
}
