/* sb.c: the scoreboard in shared memory. See sb.h for who writes what. */
#include "common/sb.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>

const double sb_bucket_le[SB_NBUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1, 2.5, 5, 10, 30, INFINITY,
};

const double sb_age_le[SB_NBUCKETS] = {
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5,
    10, 30, 60, 300, 900, 3600, 21600, INFINITY,
};

/* The status codes we count one by one; any other status is counted under its class. */
static const long http_codes[] = {
    200, 201, 202, 204, 301, 302, 307, 308, 400, 401, 403, 404, 405, 408,
    409, 410, 413, 422, 425, 429, 500, 501, 502, 503, 504,
};
#define NCODES (sizeof http_codes / sizeof http_codes[0])

const char *const sb_http_label[SB_NHTTP] = {
    "error", "200", "201", "202", "204", "301", "302", "307", "308", "400", "401", "403", "404",
    "405", "408", "409", "410", "413", "422", "425", "429", "500", "501", "502", "503", "504",
    "1xx", "2xx", "3xx", "4xx", "5xx", "other",
};

int sb_http_index(long status)
{
    if (status <= 0)
        return SB_HTTP_FIRST;
    for (size_t i = 0; i < NCODES; i++)
        if (http_codes[i] == status)
            return SB_HTTP_FIRST + 1 + (int)i;
    if (status >= 100 && status < 600)
        return SB_HTTP_FIRST + 1 + (int)NCODES + (int)(status / 100 - 1);
    return SB_HTTP_LAST;
}

static_assert(1 + sizeof http_codes / sizeof http_codes[0] + 5 + 1 == SB_NHTTP,
              "labels, codes and counters must line up");

const char *const sb_dlq_label[SB_NDLQ] = {
    "max_attempts", "bad_message", "too_large", "no_route", "exec_rejected", "exec_failed",
    "crash", "watchdog", "memory",
    "http_400", "http_401", "http_403", "http_404", "http_410", "http_413", "http_422", "http_other",
    "other",
};

const char *const sb_cause_name[SB_NCAUSES] = { "crash", "watchdog", "memory" };

int sb_dlq_index(const char *reason)
{
    for (int i = 0; i < SB_NDLQ - 2; i++)
        if (strcmp(sb_dlq_label[i], reason) == 0)
            return SB_DLQ_FIRST + i;
    if (strncmp(reason, "http_", 5) == 0)
        return SB_DLQ_LAST - 1;
    return SB_DLQ_LAST;
}

/* The charge table of this process's scoreboard, for workers: they get it with the master's
 * image (fork), and sb_charge_get() needs no handle that child_main() would have to carry. */
static struct sb_charges *charges_map;

int sb_open(struct sb *sb, size_t nslots)
{
    void *p = mmap(NULL, nslots * sizeof(struct sb_slot), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    sb->slot = p;
    sb->nslots = nslots;
    void *t = mmap(NULL, sizeof *sb->charges, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (t == MAP_FAILED) {
        munmap(p, nslots * sizeof(struct sb_slot));
        sb->slot = NULL;
        return -1;
    }
    sb->charges = t;
    charges_map = t;
    return 0;
}

void sb_close(struct sb *sb)
{
    if (sb->slot)
        munmap(sb->slot, sb->nslots * sizeof(struct sb_slot));
    sb->slot = NULL;
    sb->nslots = 0;
    if (sb->charges) {
        if (charges_map == sb->charges)
            charges_map = NULL;
        munmap(sb->charges, sizeof *sb->charges);
    }
    sb->charges = NULL;
}

uint64_t sb_pool_key(const char *pool)
{
    uint64_t h = 1469598103934665603ULL;        /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)pool; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h ? h : 1;
}

/* The filter bit of entry ms-n of pool. */
static unsigned charge_bit(uint64_t pool, uint64_t ms, uint64_t n)
{
    uint64_t h = (pool ^ (ms * 0x9e3779b97f4a7c15ULL) ^ (n * 0xc2b2ae3d27d4eb4fULL)) * 0xff51afd7ed558ccdULL;
    return (unsigned)(h >> 52) % SB_CHARGE_FILTER_BITS;
}

static void filter_set(struct sb_charges *t, unsigned bit)
{
    atomic_fetch_or_explicit(&t->filter[bit / 64], 1ULL << (bit % 64), memory_order_release);
}

/* After an entry was replaced: the bits of the entries there now, word by word. A word's store
 * keeps every bit of an entry still there, so a reader never misses one. */
static void filter_rebuild(struct sb_charges *t, uint32_t used)
{
    uint64_t f[SB_CHARGE_FILTER_BITS / 64] = {0};
    for (uint32_t i = 0; i < used; i++) {
        const struct sb_charge *e = &t->e[i];
        unsigned bit = charge_bit(atomic_load_explicit(&e->pool, memory_order_relaxed),
                                  atomic_load_explicit(&e->ms, memory_order_relaxed),
                                  atomic_load_explicit(&e->n, memory_order_relaxed));
        f[bit / 64] |= 1ULL << (bit % 64);
    }
    for (size_t w = 0; w < SB_CHARGE_FILTER_BITS / 64; w++)
        atomic_store_explicit(&t->filter[w], f[w], memory_order_release);
}

static void charge_write(struct sb_charge *e, uint64_t pool, uint64_t ms, uint64_t n, uint32_t charges,
                         uint32_t cause)
{
    uint32_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->pool, pool, memory_order_relaxed);
    atomic_store_explicit(&e->ms, ms, memory_order_relaxed);
    atomic_store_explicit(&e->n, n, memory_order_relaxed);
    atomic_store_explicit(&e->charges, charges, memory_order_relaxed);
    atomic_store_explicit(&e->cause, cause, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
}

unsigned sb_charge(struct sb *sb, uint64_t pool, uint64_t ms, uint64_t n, enum sb_cause cause, bool charge,
                   uint64_t now)
{
    struct sb_charges *t = sb->charges;
    uint32_t used = atomic_load_explicit(&t->used, memory_order_relaxed);
    struct sb_charge *e = NULL, *stalest = NULL;
    for (uint32_t i = 0; i < used && e == NULL; i++) {
        struct sb_charge *x = &t->e[i];
        if (atomic_load_explicit(&x->pool, memory_order_relaxed) == pool &&
            atomic_load_explicit(&x->ms, memory_order_relaxed) == ms &&
            atomic_load_explicit(&x->n, memory_order_relaxed) == n)
            e = x;
        else if (stalest == NULL || x->touched_ms < stalest->touched_ms)
            stalest = x;
    }
    unsigned charges = 0;
    bool replaced = false;
    if (e) {
        charges = atomic_load_explicit(&e->charges, memory_order_relaxed);
    } else if (used < SB_CHARGES_MAX) {
        /* A reader that finds it before charge_write() is done sees a free entry or an odd seq. */
        e = &t->e[used];
        atomic_store_explicit(&t->used, used + 1, memory_order_release);
        used++;
    } else {
        /* Full: forget the entry untouched longest (dead-lettered or handled long ago, most
         * likely; at worst one that will need crash_limit deaths again). */
        e = stalest;
        replaced = true;
    }
    if (charge)
        charges++;
    e->touched_ms = now;
    charge_write(e, pool, ms, n, charges, charge ? (uint32_t)cause
                                                 : atomic_load_explicit(&e->cause, memory_order_relaxed));
    if (replaced)
        filter_rebuild(t, used);
    else
        filter_set(t, charge_bit(pool, ms, n));
    return charges;
}

bool sb_charge_get(uint64_t pool, uint64_t ms, uint64_t n, unsigned *charges, enum sb_cause *cause)
{
    const struct sb_charges *t = charges_map;
    if (t == NULL)
        return false;
    unsigned bit = charge_bit(pool, ms, n);
    if (!(atomic_load_explicit(&t->filter[bit / 64], memory_order_acquire) & (1ULL << (bit % 64))))
        return false;
    uint32_t used = atomic_load_explicit(&t->used, memory_order_acquire);
    for (uint32_t i = 0; i < used && i < SB_CHARGES_MAX; i++) {
        const struct sb_charge *e = &t->e[i];
        if (atomic_load_explicit(&e->ms, memory_order_relaxed) != ms)
            continue;
        for (int tries = 0; tries < 100; tries++) {
            uint32_t before = atomic_load_explicit(&e->seq, memory_order_acquire);
            if (before & 1)
                continue;
            uint64_t p = atomic_load_explicit(&e->pool, memory_order_relaxed);
            uint64_t m = atomic_load_explicit(&e->ms, memory_order_relaxed);
            uint64_t k = atomic_load_explicit(&e->n, memory_order_relaxed);
            uint32_t c = atomic_load_explicit(&e->charges, memory_order_relaxed);
            uint32_t why = atomic_load_explicit(&e->cause, memory_order_relaxed);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&e->seq, memory_order_relaxed) != before)
                continue;
            if (p == pool && m == ms && k == n) {
                *charges = c;
                *cause = why < SB_NCAUSES ? (enum sb_cause)why : SB_CAUSE_CRASH;
                return true;
            }
            break;
        }
    }
    return false;
}

/* The text fields of a slot (error, circuit_error): text cut to fit field[0..cap), always
 * terminated. Their readers check a sequence or time around text_get(), not the text itself. */
static void text_put(char *field, size_t cap, const char *text)
{
    size_t n = strlen(text);
    if (n >= cap)
        n = cap - 1;
    memcpy(field, text, n);
    field[n] = '\0';
}

/* Copy field (cap bytes) into buf (len > 0 bytes), cut to fit and terminated. */
static void text_get(char *buf, size_t len, const char *field, size_t cap)
{
    size_t n = len < cap ? len : cap;
    memcpy(buf, field, n);
    buf[n - 1] = '\0';
}

void sb_set_error(struct sb_slot *s, const char *text, uint64_t unix_ms)
{
    uint32_t seq = atomic_load_explicit(&s->error_seq, memory_order_relaxed);
    atomic_store_explicit(&s->error_seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    text_put(s->error, sizeof s->error, text);
    atomic_store_explicit(&s->error_unix_ms, unix_ms, memory_order_relaxed);
    atomic_store_explicit(&s->error_seq, seq + 2, memory_order_release);
}

uint64_t sb_get_error(const struct sb_slot *s, char *buf, size_t len)
{
    uint32_t before = atomic_load_explicit(&s->error_seq, memory_order_acquire);
    if (before & 1 || len == 0)
        return 0;
    text_get(buf, len, s->error, sizeof s->error);
    uint64_t when = atomic_load_explicit(&s->error_unix_ms, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->error_seq, memory_order_relaxed) != before)
        return 0;
    return when;
}

void sb_set_circuit(struct sb_slot *s, uint64_t unix_ms, const char *text)
{
    if (unix_ms == 0) {
        atomic_store_explicit(&s->circuit_since_ms, 0, memory_order_release);
        atomic_store_explicit(&s->circuit_open, 0, memory_order_relaxed);
        return;
    }
    /* Closed first, so that a master copying meanwhile sees the time change. */
    atomic_store_explicit(&s->circuit_since_ms, 0, memory_order_release);
    atomic_thread_fence(memory_order_release);
    text_put(s->circuit_error, sizeof s->circuit_error, text);
    atomic_store_explicit(&s->circuit_since_ms, unix_ms, memory_order_release);
    atomic_store_explicit(&s->circuit_open, 1, memory_order_relaxed);
}

uint64_t sb_get_circuit(const struct sb_slot *s, char *buf, size_t len)
{
    uint64_t since = atomic_load_explicit(&s->circuit_since_ms, memory_order_acquire);
    if (since == 0 || len == 0)
        return 0;
    text_get(buf, len, s->circuit_error, sizeof s->circuit_error);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->circuit_since_ms, memory_order_relaxed) != since)
        return 0;
    return since;
}

void sb_set_held(struct sb_slot *s, const struct sb_held_copy *h)
{
    unsigned n = h->n < SB_HELD_MAX ? h->n : SB_HELD_MAX;
    atomic_fetch_add_explicit(&s->held.seq, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&s->held.count, h->count, memory_order_relaxed);
    atomic_store_explicit(&s->held.n, n, memory_order_relaxed);
    for (unsigned i = 0; i < n; i++) {
        atomic_store_explicit(&s->held.id[i].ms, h->id[i].ms, memory_order_relaxed);
        atomic_store_explicit(&s->held.id[i].n, h->id[i].n, memory_order_relaxed);
        atomic_store_explicit(&s->held.id[i].since_unix_ms, h->id[i].since_unix_ms, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&s->held.seq, 1, memory_order_release);
}

int sb_get_held(const struct sb_slot *s, struct sb_held_copy *h)
{
    uint32_t before = atomic_load_explicit(&s->held.seq, memory_order_acquire);
    memset(h, 0, sizeof *h);
    if (before & 1)
        return -1;
    struct sb_held_copy c;
    c.count = atomic_load_explicit(&s->held.count, memory_order_relaxed);
    c.n = atomic_load_explicit(&s->held.n, memory_order_relaxed);
    if (c.n > SB_HELD_MAX)
        c.n = SB_HELD_MAX;
    for (unsigned i = 0; i < c.n; i++) {
        c.id[i].ms = atomic_load_explicit(&s->held.id[i].ms, memory_order_relaxed);
        c.id[i].n = atomic_load_explicit(&s->held.id[i].n, memory_order_relaxed);
        c.id[i].since_unix_ms = atomic_load_explicit(&s->held.id[i].since_unix_ms, memory_order_relaxed);
    }
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&s->held.seq, memory_order_relaxed) != before)
        return -1;
    *h = c;
    return 0;
}

void sb_slot_reset(struct sb_slot *s)
{
    /* A child killed while it wrote left seq odd: the next one starts even. */
    static const struct sb_held_copy none;
    atomic_store(&s->held.seq, 0);
    sb_set_held(s, &none);
    atomic_store(&s->rss_bytes, 0);
    atomic_store(&s->handler_rss_bytes, 0);
    atomic_store(&s->error_seq, 0);
    atomic_store(&s->error_unix_ms, 0);
    s->error[0] = '\0';
    atomic_store(&s->heartbeat_ms, 0);
    atomic_store(&s->ready_ms, 0);
    atomic_store(&s->inflight, 0);
    atomic_store(&s->circuit_open, 0);
    atomic_store(&s->circuit_since_ms, 0);
    s->circuit_error[0] = '\0';
    for (int i = 0; i < SB_NCOUNTERS; i++)
        atomic_store(&s->c[i], 0);
    atomic_store(&s->group_state, SB_GROUP_OK);
    sb_id_set(&s->seen, 0, 0);      /* a slot may serve another pool next */
    sb_id_set(&s->delivered, 0, 0);
    atomic_store(&s->alone.seq, 0);
    sb_id_set(&s->alone, 0, 0);
    atomic_store(&s->pid, 0);
    atomic_store(&s->state, SB_FREE);
}

void sb_observe(struct sb_slot *s, enum sb_counter first, double seconds)
{
    const double *le = first == SB_AGE_FIRST ? sb_age_le : sb_bucket_le;
    int b = 0;
    while (b < SB_NBUCKETS - 1 && seconds > le[b])
        b++;
    sb_add(s, first + b, 1);
    sb_add(s, first + SB_NBUCKETS, 1);
    sb_add(s, first + SB_NBUCKETS + 1, seconds > 0 ? (uint64_t)(seconds * 1e6) : 0);
}

void sb_fold(uint64_t totals[SB_NCOUNTERS], const struct sb_slot *s)
{
    for (int i = 0; i < SB_NCOUNTERS; i++)
        totals[i] += atomic_load_explicit(&s->c[i], memory_order_acquire);
}
