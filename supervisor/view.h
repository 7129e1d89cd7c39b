/* view.h: a snapshot of the fleet as the master sees it at one moment, built from the
 * scoreboard and the master's own tables. /metrics and /health are rendered from a view by
 * pure functions (metrics.c), so what they print can be tested without processes. */
#ifndef SF_VIEW_H
#define SF_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/sb.h"

/* Why a worker was replaced: the label of streamfleet_worker_restarts_total. */
enum restart_reason { RESTART_EXIT, RESTART_SIGNAL, RESTART_HEARTBEAT, RESTART_MEMORY, RESTART_RECYCLE, RESTART_NREASONS };
extern const char *const restart_reason_name[RESTART_NREASONS];

struct pool_view {
    const char *name;
    uint64_t c[SB_NCOUNTERS];       /* retired children's totals plus the live ones' */
    unsigned workers_live;          /* running: started and not told to stop */
    unsigned workers_starting;      /* forked, not yet through their first loop turn */
    unsigned workers_draining;      /* finishing what they hold */
    unsigned workers_expected;
    uint64_t restarts;              /* all reasons */
    uint64_t restarts_by[RESTART_NREASONS];
    unsigned inflight;
    unsigned circuit_open;          /* children whose circuit breaker is open */
    bool crash_loop;                /* a slot is waiting out a restart delay */
};

struct fleet_view {
    const char *version;
    double start_time;              /* Unix seconds */
    bool redis_up;
    const char *redis_error;        /* why not, when !redis_up */
    int redis_durable;              /* 1, 0, or -1 unknown */
    const char *durability;         /* why not durable */
    uint64_t reloads_ok, reloads_failed;
    struct pool_view *pools;
    unsigned npools;
};

/* Prometheus text format 0.0.4 of v, appended to out. */
void metrics_render(struct buf *out, const struct fleet_view *v);
/* The /health JSON of v (only pool `only` when not NULL), appended to out. Returns the HTTP
 * status: 200 when Redis answers and every pool has all its workers, else 503; 404 when `only`
 * names no pool. */
int health_render(struct buf *out, const struct fleet_view *v, const char *only);

#endif
