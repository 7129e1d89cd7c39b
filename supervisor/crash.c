/* crash.c: charging workers' deaths to the entries they held. See crash.h. */
#include "supervisor/crash.h"
#include "supervisor/master.h"
#include "child/child.h"
#include "common/log.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* Charges counted per pool name, so that a reload's new generation goes on counting. */
struct crash_pool {
    char *name;
    uint64_t charges[SB_NCAUSES];
};

struct crash {
    struct crash_pool *v;
    size_t n;
};

static struct crash_pool *pool_of(struct crash *cr, const char *name)
{
    for (size_t i = 0; i < cr->n; i++)
        if (strcmp(cr->v[i].name, name) == 0)
            return &cr->v[i];
    cr->v = xrealloc(cr->v, (cr->n + 1) * sizeof *cr->v);
    struct crash_pool *p = &cr->v[cr->n++];
    memset(p, 0, sizeof *p);
    p->name = xstrdup(name);
    return p;
}

/* Whether the death is the message's doing, and which cause: -1 when it is not. */
static int cause_of(const struct proc *p, int status)
{
    if (p->killed_for_heartbeat)
        return SB_CAUSE_WATCHDOG;
    if (WIFEXITED(status) && WEXITSTATUS(status) == CHILD_EXIT_MEMORY)
        return SB_CAUSE_MEMORY;
    if (!WIFSIGNALED(status))
        return -1;
    switch (WTERMSIG(status)) {
    case SIGSEGV: case SIGBUS: case SIGILL: case SIGFPE: case SIGABRT: case SIGSYS: case SIGTRAP:
        return SB_CAUSE_CRASH;
    default:
        return -1;
    }
}

void crash_note(struct master *m, const struct proc *p, int status)
{
    int cause = cause_of(p, status);
    const struct pool_conf *pc = p->pool->conf;
    if (cause < 0 || p->sb < 0 || pc->crash_limit <= 0)
        return;
    const struct sb_slot *slot = &m->sb.slot[p->sb];
    uint64_t pool = sb_pool_key(p->pool->name);
    uint64_t now = (uint64_t)master_now_ms();
    uint64_t ms, n;
    struct sb_held_copy held;
    if (sb_get_held(slot, &held) == -1)
        held.count = 0;
    if (sb_id_get(&slot->alone, &ms, &n) == -1) {
        if (held.count != 1 || held.n != 1) {
            /* Several in its hands and none alone in the handler: which one did it is not
             * known. Each is run alone next, and charged then if it kills again. */
            for (unsigned i = 0; i < held.n; i++)
                sb_charge(&m->sb, pool, held.id[i].ms, held.id[i].n, (enum sb_cause)cause, false, now);
            if (held.n > 0)
                log_info("worker %d of pool %s died (%s) holding %llu entries: the %u held longest run "
                         "alone next", p->index, p->pool->name, sb_cause_name[cause],
                         (unsigned long long)held.count, held.n);
            return;
        }
        ms = held.id[0].ms;
        n = held.id[0].n;
    }
    unsigned charges = sb_charge(&m->sb, pool, ms, n, (enum sb_cause)cause, true, now);
    if (m->crash == NULL)
        m->crash = xcalloc(1, sizeof *m->crash);
    pool_of(m->crash, p->pool->name)->charges[cause]++;
    log_warnx("entry %llu-%llu of pool %s charged with the death of worker %d (%s): %u of crash_limit %d%s",
              (unsigned long long)ms, (unsigned long long)n, p->pool->name, p->index, sb_cause_name[cause],
              charges, pc->crash_limit, charges >= (unsigned)pc->crash_limit ? ": it goes to the dead letters" : "");
}

uint64_t crash_charges_total(const struct crash *cr, const char *pool, enum sb_cause cause)
{
    if (cr == NULL)
        return 0;
    for (size_t i = 0; i < cr->n; i++)
        if (strcmp(cr->v[i].name, pool) == 0)
            return cr->v[i].charges[cause];
    return 0;
}

void crash_free(struct crash *cr)
{
    if (cr == NULL)
        return;
    for (size_t i = 0; i < cr->n; i++)
        free(cr->v[i].name);
    free(cr->v);
    free(cr);
}
