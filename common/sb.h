/* sb.h: the scoreboard, the shared-memory region through which children report to the master.
 *
 * One slot per child, in a MAP_SHARED|MAP_ANONYMOUS mapping made by the master before the
 * first fork. Each field has one writer: a child writes the counters, gauges and heartbeat of
 * its own slot and nothing else; the master reads them. There are no locks: a child that dies
 * must never leave one held. Counters are monotonic while a child lives; when it dies the
 * master folds its final values into the pool's retired totals (sb_fold) before the slot is
 * reused, so what /metrics shows never goes back. */
#ifndef SF_SB_H
#define SF_SB_H

#include <assert.h>
#include <stdbool.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Every counter a child keeps, as one flat array so that merging is one loop.
 * Histograms are bucket counters (not cumulative) plus a count and a sum in microseconds. */
enum sb_counter {
    SB_READ,            /* entries handed to the handler */
    SB_ACKED,           /* entries XACKed after success */
    SB_FAILED,          /* handler failures (transient or permanent) */
    SB_RETRIED,
    SB_DEAD_LETTERED,
    SB_DUPLICATE,
    SB_RECLAIMED,
    SB_VANISHED,        /* pending entries whose stream data was deleted or trimmed */
    SB_BAD_MESSAGE,     /* failures that were the message's fault */
    SB_REDIS_ERRORS,
    SB_DLQ_FAILURES,    /* dead-letter moves that failed (the entry stayed pending) */
    SB_GROUP_RECREATED, /* NOGROUP: the group was created again */
    SB_CLUSTER_MOVED,   /* Redis Cluster: MOVED redirections followed */
    SB_CLUSTER_ASK,     /* ASK redirections followed */
    SB_CLUSTER_REFRESHES, /* slot maps asked again (CLUSTER SLOTS) after the first */
    /* A drain (SIGTERM, a reload, a scale-down): what the worker held once it stopped reading,
     * and what became of it. HELD (not exported) = FINISHED + RELEASED + ABANDONED. */
    SB_DRAIN_HELD,
    SB_DRAIN_FINISHED,  /* handled to an outcome (acked, dead-lettered, or failed to a retry) */
    SB_DRAIN_RELEASED,  /* waiting for a retry, never started again: left pending under its name */
    SB_DRAIN_ABANDONED, /* still in progress when it was killed; the master counts these */
    SB_DLQ_FIRST,                         /* streamfleet_messages_dead_lettered_total{reason} */
    SB_DLQ_LAST = SB_DLQ_FIRST + 17,
    SB_HTTP_FIRST,                        /* streamfleet_http_requests_total{code} */
    SB_HTTP_LAST = SB_HTTP_FIRST + 31,
    SB_DUR_FIRST,                         /* streamfleet_handler_duration_seconds */
    SB_DUR_LAST = SB_DUR_FIRST + 15,
    SB_DUR_COUNT,
    SB_DUR_SUM_US,
    SB_HTTP_DUR_FIRST,                    /* streamfleet_http_request_duration_seconds */
    SB_HTTP_DUR_LAST = SB_HTTP_DUR_FIRST + 15,
    SB_HTTP_DUR_COUNT,
    SB_HTTP_DUR_SUM_US,
    SB_AGE_FIRST,                         /* streamfleet_message_age_seconds */
    SB_AGE_LAST = SB_AGE_FIRST + 15,
    SB_AGE_COUNT,
    SB_AGE_SUM_US,
    SB_ROUTE_FIRST,                       /* streamfleet_messages_routed_total{route}: the pool's */
    SB_ROUTE_LAST = SB_ROUTE_FIRST + 31,  /* route.TYPE lines in order, route.default last */
    SB_NCOUNTERS
};

/* Histogram bucket upper bounds in seconds; the last one is +Inf. Durations of handling and
 * of HTTP requests use sb_bucket_le; the age of messages (which may wait for hours in a
 * backlog) uses sb_age_le. */
#define SB_NBUCKETS 16
extern const double sb_bucket_le[SB_NBUCKETS];
extern const double sb_age_le[SB_NBUCKETS];

/* The label of streamfleet_http_requests_total for counter SB_HTTP_FIRST + i. */
#define SB_NHTTP (SB_HTTP_LAST - SB_HTTP_FIRST + 1)
extern const char *const sb_http_label[SB_NHTTP];
/* The counter index for an HTTP status (0: a transport error). */
int sb_http_index(long status);

/* Routes of a pool: counter SB_ROUTE_FIRST + i for its route i, SB_ROUTE_LAST for its default. */
#define SB_NROUTES (SB_ROUTE_LAST - SB_ROUTE_FIRST + 1)

/* The label of streamfleet_messages_dead_lettered_total for counter SB_DLQ_FIRST + i. */
#define SB_NDLQ (SB_DLQ_LAST - SB_DLQ_FIRST + 1)
extern const char *const sb_dlq_label[SB_NDLQ];
/* The counter index for a dead-letter reason ("max_attempts", "http_422", ...). */
int sb_dlq_index(const char *reason);

enum sb_state { SB_FREE, SB_STARTING, SB_RUNNING, SB_DRAINING };

/* A stream entry id ms-n in shared memory, with one writer: seq is odd while it writes (as
 * error_seq), so a reader never takes half of one id and half of another. 0-0: not known. */
struct sb_id {
    _Atomic uint32_t seq;
    _Atomic uint64_t ms, n;
};

/* Whether a worker can read from its group, for /health: a reason to call the pool degraded
 * that neither the worker count nor Redis's PING shows. */
enum sb_group_state {
    SB_GROUP_OK,
    SB_GROUP_NOT_CREATED,   /* the group is missing and Redis (at maxmemory) refuses to create it */
    SB_GROUP_WRONGTYPE,     /* the stream key holds another type */
};

/* The entries a worker holds (read and not yet settled with Redis: in its handler, or waiting
 * to be acked, retried or dead-lettered), for the status page and, later, to charge a dead
 * worker's death to what it held: how many, and the ids of the SB_HELD_MAX held longest,
 * oldest first, each with since when (Unix ms). One writer, the child, which makes seq odd
 * while it writes (as error_seq); the master keeps a copy only when seq was even and the same
 * before and after it. */
#define SB_HELD_MAX 8
struct sb_held {
    _Atomic uint32_t seq;
    _Atomic uint32_t n;                  /* ids below, at most SB_HELD_MAX */
    _Atomic uint64_t count;              /* entries held in all */
    struct {
        _Atomic uint64_t ms, n, since_unix_ms;
    } id[SB_HELD_MAX];
};

/* A plain copy of struct sb_held, for the master. */
struct sb_held_copy {
    uint64_t count;
    unsigned n;
    struct {
        uint64_t ms, n, since_unix_ms;
    } id[SB_HELD_MAX];
};

struct sb_slot {
    /* Written by the master only. */
    _Atomic int state;
    _Atomic int pid;
    /* Written by the child only. */
    _Atomic uint64_t heartbeat_ms;       /* CLOCK_MONOTONIC milliseconds of its last loop turn */
    /* Since when (CLOCK_MONOTONIC ms) it has been ready without a break: connected, its group
     * made sure of, its handler accepting (a subprocess running, a circuit closed); 0 while it
     * is not. The master promotes a canary only after it stayed ready a while. */
    _Atomic uint64_t ready_ms;
    _Atomic uint32_t inflight;
    _Atomic uint32_t circuit_open;
    _Atomic uint64_t rss_bytes;          /* resident memory, refreshed every few seconds */
    _Atomic uint64_t handler_rss_bytes;  /* that of its handler's own process (subprocess), 0: none */
    /* The last error, for the status page. The child makes seq odd while it writes and even
     * after; the master copies only when seq is even and unchanged across the copy (a dead
     * child leaves at worst an odd seq, never a lock). */
    _Atomic uint32_t error_seq;
    _Atomic uint64_t error_unix_ms;
    char error[120];
    /* While the child's circuit breaker is open: since when (Unix ms, 0 while closed) and the
     * error that opened it, for /health. The child writes the text first and the time after
     * it (release), and leaves the text alone while the time is set; the master keeps its copy
     * only when the time reads the same, non-zero, before and after copying. */
    _Atomic uint64_t circuit_since_ms;
    char circuit_error[120];
    _Atomic uint64_t c[SB_NCOUNTERS];
    /* Written by the child only: enum sb_group_state; the last entry its group delivered to it. */
    _Atomic int group_state;
    struct sb_id seen;
    /* Written by the master only: the latest entry its pool's group is known to have delivered
     * (its last poll's last-delivered-id, or a later one its workers saw), so that a worker
     * that re-creates a lost group knows where the fleet was, even a fresh worker. */
    struct sb_id delivered;
    /* Written by the child only: what it holds (sb_set_held). */
    struct sb_held held;
    /* Written by the child only: the entry in its handler while it is the only one there
     * (0-0: none, or several), so that the master can charge a death to it (crash_limit). */
    struct sb_id alone;
} __attribute__((aligned(64)));

static_assert(sizeof(struct sb_slot) % 64 == 0, "slots must not share a cache line");
static_assert(SB_DUR_LAST - SB_DUR_FIRST + 1 == SB_NBUCKETS, "one counter per bucket");
static_assert(SB_HTTP_DUR_LAST - SB_HTTP_DUR_FIRST + 1 == SB_NBUCKETS, "one counter per bucket");
static_assert(SB_AGE_LAST - SB_AGE_FIRST + 1 == SB_NBUCKETS, "one counter per bucket");

#define SB_SLOTS_MAX 1024

struct sb {
    struct sb_slot *slot;
    size_t nslots;
    struct sb_charges *charges;     /* master-written, worker-read (sb_charge) */
};

/* Map the region (master, before any fork). Returns 0 or -1 with errno. */
int sb_open(struct sb *sb, size_t nslots);
void sb_close(struct sb *sb);
/* Clear a slot before it is given to a new child. Master only. */
void sb_slot_reset(struct sb_slot *s);

/* Child side: one writer per slot, so a relaxed load and store is enough (no lock prefix). */
static inline void sb_add(struct sb_slot *s, enum sb_counter i, uint64_t n)
{
    uint64_t v = atomic_load_explicit(&s->c[i], memory_order_relaxed);
    atomic_store_explicit(&s->c[i], v + n, memory_order_release);
}
/* Record one observation of d seconds into the histogram starting at counter first (whose
 * bounds are sb_age_le for SB_AGE_FIRST, sb_bucket_le otherwise). */
void sb_observe(struct sb_slot *s, enum sb_counter first, double seconds);
/* Child side: publish the last error text. */
void sb_set_error(struct sb_slot *s, const char *text, uint64_t unix_ms);
/* Master side: copy the last error into buf (len bytes); returns its time, or 0 when there is
 * none or it was being written. */
uint64_t sb_get_error(const struct sb_slot *s, char *buf, size_t len);

/* Child side: the circuit breaker opened at unix_ms (> 0) because of text; or, with unix_ms 0,
 * it closed (text unused). Also sets circuit_open. */
void sb_set_circuit(struct sb_slot *s, uint64_t unix_ms, const char *text);
/* Master side: copy the error that opened the circuit into buf (len bytes); returns since when
 * it is open (Unix ms), or 0 when it is closed or was changing. */
uint64_t sb_get_circuit(const struct sb_slot *s, char *buf, size_t len);
/* Child side: publish what it holds (h->n ids, oldest first). */
void sb_set_held(struct sb_slot *s, const struct sb_held_copy *h);
/* Master side: copy what the child holds into h. Returns 0, or -1 when it was being written
 * (h then says nothing is held). */
int sb_get_held(const struct sb_slot *s, struct sb_held_copy *h);

/* Its one writer stores id ms-n (seen: the child; delivered: the master). */
static inline void sb_id_set(struct sb_id *id, uint64_t ms, uint64_t n)
{
    if (atomic_load(&id->ms) == ms && atomic_load(&id->n) == n)
        return;
    atomic_fetch_add(&id->seq, 1);
    atomic_store(&id->ms, ms);
    atomic_store(&id->n, n);
    atomic_fetch_add(&id->seq, 1);
}
/* Read it. Returns 0, or -1 when it is not known (or was being written). */
static inline int sb_id_get(const struct sb_id *id, uint64_t *ms, uint64_t *n)
{
    uint32_t before = atomic_load(&id->seq);
    *ms = atomic_load(&id->ms);
    *n = atomic_load(&id->n);
    if ((before & 1) || atomic_load(&id->seq) != before || (*ms == 0 && *n == 0))
        return -1;
    return 0;
}

/* Entries charged with the deaths of the workers that held them (crash_limit). A worker that
 * died by a crash signal, for its heartbeat or for memory_limit is charged to the entry alone
 * in its handler; when several were there, those it held become suspects (0 charges), which
 * workers then run alone. One writer, the master, which makes seq odd while it writes an
 * entry; workers read (sb_charge_get). The table is one mapping made by sb_open() before the
 * first fork, so every worker sees it; it lives as long as the master: a master restart
 * forgets every charge. An entry is named by its pool (sb_pool_key) and its id, not its
 * stream: in a pool of several streams an id charged in one applies to the same id in the
 * others (ids from the same millisecond and sequence in two streams of one pool). */
enum sb_cause { SB_CAUSE_CRASH, SB_CAUSE_WATCHDOG, SB_CAUSE_MEMORY, SB_NCAUSES };
extern const char *const sb_cause_name[SB_NCAUSES];     /* also the dead-letter reasons */

#define SB_CHARGES_MAX 256
struct sb_charge {
    _Atomic uint32_t seq;
    _Atomic uint64_t pool;                /* sb_pool_key() of its pool; 0: a free entry */
    _Atomic uint64_t ms, n;
    _Atomic uint32_t charges;             /* deaths charged to it alone */
    _Atomic uint32_t cause;               /* enum sb_cause of the last of them */
    uint64_t touched_ms;                  /* the master's own: the stalest goes when full */
};
#define SB_CHARGE_FILTER_BITS 4096      /* ~6% of lookups scan when the table is full */
struct sb_charges {
    _Atomic uint32_t used;                /* entries [0, used) may be taken: readers stop there */
    /* A bit per hash of (pool, ms, n) of the entries in the table, set after the entry is
     * written: a worker scans the table only for an id whose bit is set, so every message
     * is not a scan of SB_CHARGES_MAX entries once one was charged. Rebuilt when an entry is
     * forgotten (a bit of one still there is never cleared, not even for a moment). */
    _Atomic uint64_t filter[SB_CHARGE_FILTER_BITS / 64];
    struct sb_charge e[SB_CHARGES_MAX];
};

/* A pool's name as a key of the table: never 0. */
uint64_t sb_pool_key(const char *pool);
/* Master side: charge (charge true) or only suspect (false) entry ms-n of pool with cause,
 * at now (any clock, for choosing what to forget when the table is full). Returns the
 * entry's charges after it. */
unsigned sb_charge(struct sb *sb, uint64_t pool, uint64_t ms, uint64_t n, enum sb_cause cause, bool charge,
                   uint64_t now);
/* Worker side: whether entry ms-n of pool is in the table (a suspect, or charged: *charges
 * and *cause say). One load for most ids that are not (the filter). */
bool sb_charge_get(uint64_t pool, uint64_t ms, uint64_t n, unsigned *charges, enum sb_cause *cause);

/* Master side: add a slot's counters into totals (acquire loads). */
void sb_fold(uint64_t totals[SB_NCOUNTERS], const struct sb_slot *s);

#endif
