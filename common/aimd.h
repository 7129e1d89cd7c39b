/* aimd.h: adaptive concurrency per HTTP destination (scheme, host, port), shared by every
 * worker of the fleet.
 *
 * A table of AIMD_DESTS destinations in a MAP_SHARED|MAP_ANONYMOUS mapping the master makes
 * before the first fork, so that every worker sees the same limits. Each destination has a
 * limit between 1 and its ceiling (the largest inflight x workers of a pool that sends to it):
 * a success raises it by 1/limit (one per window of a limit's worth of successes), a 429, a 503
 * or a timeout lowers it to AIMD_DECREASE of itself, at most once per window: a request that
 * started before the last decrease reports the overload that decrease already answered. A
 * Retry-After stops new requests to the destination until it passes.
 *
 * A worker takes a slot (in flight < limit) before it sends and gives it back when the request
 * ends. There are no locks, only C11 atomics, so a dead worker can hold nothing but slots: the
 * table counts each worker's slots per destination (one writer: that worker), and the master
 * gives back a dead worker's count when it reaps it (aimd_reap). A SIGKILL landing between
 * the two atomic steps of a take or a give can leave one slot off; that window is a few
 * instructions wide.
 *
 * Destinations are found by a 64-bit FNV-1a hash of "scheme://host:port" with open addressing;
 * an entry, once claimed, stays for the life of the master (64 is far more than a fleet's
 * endpoints). A hash collision would make two destinations share a limit: with 64-bit hashes
 * and 64 entries that is not a practical concern. */
#ifndef SF_AIMD_H
#define SF_AIMD_H

#include <assert.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AIMD_DESTS 64
#define AIMD_WORKERS 1024           /* scoreboard slots (SB_SLOTS_MAX): one row of counts each */
#define AIMD_KEY_MAX 120            /* "https://host:port", NUL included */
#define AIMD_UNIT 1000              /* limits are kept in thousandths of a request */
#define AIMD_DECREASE_NUM 9         /* a decrease keeps 9/10 of the limit: gentle enough that */
#define AIMD_DECREASE_DEN 10        /* the fleet hovers just under the endpoint's capacity */

struct aimd_dest {
    _Atomic uint64_t hash;          /* 0: free; claimed once by compare-and-swap, never freed */
    _Atomic uint32_t ready;         /* 1 once key is written (by the claimer, then release) */
    char key[AIMD_KEY_MAX];
    _Atomic uint32_t ceiling;       /* the highest limit (inflight x workers), in requests */
    _Atomic uint32_t limit;         /* in AIMD_UNITs, 1 .. ceiling */
    _Atomic uint32_t inflight;      /* slots taken, all workers together */
    _Atomic int64_t last_decrease_us;   /* CLOCK_MONOTONIC microseconds of the last decrease */
    _Atomic int64_t blocked_until_us;   /* no new request before this (Retry-After) */
    _Atomic uint64_t decreases;
} __attribute__((aligned(64)));

static_assert(sizeof(struct aimd_dest) % 64 == 0, "entries must not share a cache line");

struct aimd_table {
    struct aimd_dest dest[AIMD_DESTS];
    /* held[w][d]: slots of destination d worker w holds. Written by worker w only (and by the
     * master after w died); read by the master when it reaps w. */
    _Atomic uint32_t held[AIMD_WORKERS][AIMD_DESTS];
};

/* How a request ended, as far as the limit cares. */
enum aimd_signal {
    AIMD_NEUTRAL,                   /* says nothing about load (a 4xx, a 500, no connection) */
    AIMD_SUCCESS,                   /* 2xx: additive increase */
    AIMD_OVERLOAD,                  /* 429, 503, a timeout: multiplicative decrease */
};

/* ---- pure logic over a table (any memory: the unit tests use calloc) -------------------- */

/* "scheme://host:port" of url (userinfo dropped, host lowercased, the scheme's default port
 * filled in) into key (len bytes). Returns 0, or -1 when url has no scheme://host. */
int aimd_dest_key(const char *url, char *key, size_t len);
/* The index of the destination key in t, claiming a free entry for it (limit and ceiling
 * set to ceiling) when it has none; an entry it already has keeps its limit and gets the
 * higher ceiling. Returns -1 when the table is full. */
int aimd_lookup(struct aimd_table *t, const char *key, uint32_t ceiling);
/* Take a slot of destination d for worker w at time now_us: true when fewer than the
 * limit are in flight and no Retry-After holds it off. */
bool aimd_take(struct aimd_table *t, int d, int w, int64_t now_us);
/* Give back the slot of a request that started at started_us and ended at now_us with
 * signal s; retry_after_ms >= 0 holds off new requests that long. */
void aimd_give(struct aimd_table *t, int d, int w, enum aimd_signal s, int64_t started_us,
               int64_t now_us, long retry_after_ms);
/* How long a Retry-After still holds d off at now_us, in ms (0: it does not). */
long aimd_held_off_ms(const struct aimd_table *t, int d, int64_t now_us);
/* The limit of d in whole requests (at least 1). */
uint32_t aimd_limit(const struct aimd_table *t, int d);
/* Give back every slot worker w holds (it died, or is about to exit). */
void aimd_reap(struct aimd_table *t, int w);

/* What /metrics and /status.json show of one destination. */
struct aimd_view {
    char key[AIMD_KEY_MAX];
    double limit;
    uint32_t inflight;
    uint64_t decreases;
    bool blocked;                   /* a Retry-After holds it off now */
};
/* Copy the destinations in use into out (at most max); returns how many. */
unsigned aimd_snapshot(const struct aimd_table *t, int64_t now_us, struct aimd_view *out,
                       unsigned max);

/* ---- the process's table ---------------------------------------------------------------- */

/* Map the shared table (master, before any fork). Returns 0 or -1 with errno. */
int aimd_open(void);
/* The shared table, or NULL before aimd_open(). */
struct aimd_table *aimd_shared(void);
/* In a child right after fork: the scoreboard slot whose row of counts it writes. */
void aimd_set_worker(int w);
/* This process's row (set by aimd_set_worker), or -1. */
int aimd_worker(void);
/* CLOCK_MONOTONIC in microseconds: the one clock of every worker's timestamps. */
int64_t aimd_now_us(void);

#endif
