/* view.h: a snapshot of the fleet as the master sees it at one moment, built from the
 * scoreboard and the master's own tables. /metrics and /health are rendered from a view by
 * pure functions (metrics.c), so what they print can be tested without processes. */
#ifndef SF_VIEW_H
#define SF_VIEW_H

#include <stdbool.h>
#include <stdint.h>

#include "common/aimd.h"
#include "common/buf.h"
#include "common/conf.h"            /* CONF_STREAMS_MAX */
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
    unsigned workers_canary;        /* a reload's canary on trial (not counted above) */
    uint64_t restarts;              /* all reasons */
    uint64_t restarts_by[RESTART_NREASONS];
    unsigned inflight;
    unsigned circuit_open;          /* children whose circuit breaker is open */
    double circuit_since;           /* Unix seconds the longest-open of them opened; 0: unknown */
    char circuit_error[120];        /* the error that opened that one */
    bool crash_loop;                /* a slot is waiting out a restart delay */
    bool short_too_long;            /* below its worker count for longer than the start-up grace */
    double restarts_per_min;        /* over the last 5 minutes */
    const char *stream, *group, *handler;
    /* Routes (a routed pool): the label of SB_ROUTE_FIRST + i, and whether it has a default
     * (SB_ROUTE_LAST, route="default"). Only these are shown, so the labels stay bounded. */
    const char *route_type[SB_NROUTES];
    unsigned nroutes;
    bool route_default;
    uint64_t rss_bytes;             /* resident memory of its workers */
    bool watch;                     /* watch = yes */
    uint64_t watch_restarts;        /* new generations started because a watched file changed */
    uint64_t trimmed;               /* entries trim = acked removed from its stream */
    uint64_t crash_charges[SB_NCAUSES]; /* workers' deaths charged to its entries, by cause */

    /* From the master's Redis poll (redis_known false until the first one). */
    bool redis_known;
    long long stream_length, pending, lag, dlq_length;    /* lag -1: unknown */
    double oldest_pending_age;      /* seconds; -1: nothing pending */
    double redis_polled;            /* Unix seconds of the poll these figures are from; 0: unknown */
    unsigned group_not_created;     /* workers that find the group missing, Redis refusing to create it */
    unsigned group_wrongtype;       /* workers that find the stream key holding another type */
    /* A pool of several streams: each one's figures (the ones above add them up). */
    unsigned nstreams;              /* 0: one stream */
    struct stream_view {
        const char *stream;
        long long stream_length, pending, lag, dlq_length;
        double oldest_pending_age;
    } streams[CONF_STREAMS_MAX];
    long max_lag;                   /* thresholds of the pool, 0: off */
    double max_pending_age;

    /* For the status page. */
    double rate;                    /* messages read per second, recently */
    float history[90];              /* messages per second, 10 s apart, oldest first */
    unsigned nhistory;
    float p50[90], p99[90];         /* handler duration quantiles (s) of the same steps; -1: none */
    struct view_error {
        double time;
        int worker;
        char text[120];
    } errors[5];                    /* newest first */
    unsigned nerrors;
};

/* One worker slot of a pool, as the status page shows it (php-fpm's full status). */
struct worker_view {
    const char *pool;
    int slot;                       /* its consumer name's SLOT */
    int pid;                        /* 0: not running (waiting to be restarted) */
    unsigned generation;            /* of its pool's config: 1, then one more per reload or watch change */
    const char *state;              /* starting, running, draining, restarting */
    double uptime;                  /* seconds since its fork; 0 when not running */
    uint64_t handled, acked;        /* by this process (its slot's counters) */
    unsigned inflight;
    struct sb_held_copy held;       /* what it holds, oldest first (since: Unix ms) */
    uint64_t rss_bytes;             /* its own and its handler process's, from /proc/PID/statm */
    double error_time;              /* Unix seconds of its last error; 0: none */
    char error[120];
    unsigned restarts;              /* times its slot's worker was replaced */
};

struct fleet_view {
    const char *version;
    double start_time;              /* Unix seconds */
    bool redis_up;
    const char *redis_error;        /* why not, when !redis_up */
    int redis_durable;              /* 1, 0, or -1 unknown */
    const char *durability;         /* why not durable */
    uint64_t reloads_ok, reloads_failed, reloads_rolled_back;
    const char *last_reload;        /* its result ("ok", "failed", "rolled_back", "canary"); NULL: none */
    double last_reload_time;
    const char *last_reload_reason; /* why it failed or was rolled back ("" when it did not) */
    double now;                     /* Unix seconds of the snapshot */
    uint64_t master_rss_bytes;
    struct pool_view *pools;
    unsigned npools;
    struct worker_view *workers;    /* by pool, then slot */
    unsigned nworkers;
    struct aimd_view dests[AIMD_DESTS];     /* http destinations with adaptive concurrency */
    unsigned ndests;
};

/* The q-quantile (0..1) of a histogram's bucket counts (not cumulative; le: upper bounds, the
 * last +Inf), interpolated within its bucket as Prometheus's histogram_quantile(); a quantile
 * in the +Inf bucket is the highest finite bound. -1 when the counts are all 0. */
double metrics_quantile(const uint64_t *counts, const double *le, int nbuckets, double q);

/* Prometheus text format 0.0.4 of v, appended to out. */
void metrics_render(struct buf *out, const struct fleet_view *v);
/* The /status.json of v: everything the status page and `streamfleet status` show. */
void status_render(struct buf *out, const struct fleet_view *v);
/* Whether pool p is degraded, and why (appended to why when not NULL). */
bool pool_degraded(const struct pool_view *p, struct buf *why);

/* The /health JSON of v (only pool `only` when not NULL), appended to out. Returns the HTTP
 * status: 200 when Redis answers and every pool has all its workers, else 503; 404 when `only`
 * names no pool. */
int health_render(struct buf *out, const struct fleet_view *v, const char *only);

#endif
