/* aimd.c: adaptive concurrency per destination in shared memory. See aimd.h for the contract
 * and for who writes what. */
#include "common/aimd.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static struct aimd_table *shared;
static int worker = -1;

/* ---- keys -------------------------------------------------------------------------------- */

int aimd_dest_key(const char *url, char *key, size_t len)
{
    const char *sep = strstr(url, "://");
    if (sep == NULL || sep == url)
        return -1;
    size_t slen = (size_t)(sep - url);
    const char *host = sep + 3;
    size_t alen = strcspn(host, "/?#");             /* the authority: [userinfo@]host[:port] */
    const char *at = memrchr(host, '@', alen);
    if (at) {
        alen -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    size_t hlen = alen;
    const char *port = NULL;
    if (alen && host[0] == '[') {                   /* [v6]:port */
        const char *close = memchr(host, ']', alen);
        if (close == NULL)
            return -1;
        hlen = (size_t)(close + 1 - host);
        if (hlen < alen && host[hlen] == ':')
            port = host + hlen + 1;
    } else {
        const char *colon = memchr(host, ':', alen);
        if (colon) {
            hlen = (size_t)(colon - host);
            port = colon + 1;
        }
    }
    if (hlen == 0)
        return -1;
    char scheme[16];
    if (slen >= sizeof scheme)
        return -1;
    for (size_t i = 0; i < slen; i++)
        scheme[i] = (char)tolower((unsigned char)url[i]);
    scheme[slen] = '\0';
    char portbuf[8];
    size_t plen = port ? (size_t)(host + alen - port) : 0;
    if (plen == 0 || plen >= sizeof portbuf)
        snprintf(portbuf, sizeof portbuf, "%s", strcmp(scheme, "https") == 0 ? "443" : "80");
    else
        snprintf(portbuf, sizeof portbuf, "%.*s", (int)plen, port);
    int n = snprintf(key, len, "%s://%.*s:%s", scheme, (int)hlen, host, portbuf);
    if (n < 0 || (size_t)n >= len)
        return -1;
    for (char *c = key + slen + 3; *c && c < key + slen + 3 + hlen; c++)
        *c = (char)tolower((unsigned char)*c);
    return 0;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 14695981039346656037ULL;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ? h : 1;                               /* 0 marks a free entry */
}

/* Raise *a to at least v. */
static void atomic_max32(_Atomic uint32_t *a, uint32_t v)
{
    uint32_t cur = atomic_load(a);
    while (cur < v && !atomic_compare_exchange_weak(a, &cur, v))
        ;
}

int aimd_lookup(struct aimd_table *t, const char *key, uint32_t ceiling)
{
    if (ceiling < 1)
        ceiling = 1;
    uint64_t h = fnv1a(key);
    for (unsigned probe = 0; probe < AIMD_DESTS; probe++) {
        unsigned i = (unsigned)((h + probe) % AIMD_DESTS);
        struct aimd_dest *d = &t->dest[i];
        uint64_t cur = atomic_load(&d->hash);
        if (cur == 0) {
            if (atomic_compare_exchange_strong(&d->hash, &cur, h)) {
                /* Ours: set it up before anyone can take a slot (a limit of 0 takes none). */
                snprintf(d->key, sizeof d->key, "%s", key);
                atomic_store(&d->ceiling, ceiling);
                atomic_store(&d->limit, ceiling * AIMD_UNIT);
                atomic_store_explicit(&d->ready, 1, memory_order_release);
                return (int)i;
            }
            /* someone claimed it meanwhile: cur now holds their hash */
        }
        if (cur == h) {
            /* A pool with more room: the limit climbs towards the higher ceiling. */
            atomic_max32(&d->ceiling, ceiling);
            return (int)i;
        }
    }
    return -1;
}

/* ---- the limit --------------------------------------------------------------------------- */

long aimd_held_off_ms(const struct aimd_table *t, int d, int64_t now_us)
{
    int64_t until = atomic_load(&t->dest[d].blocked_until_us);
    return until > now_us ? (long)((until - now_us + 999) / 1000) : 0;
}

uint32_t aimd_limit(const struct aimd_table *t, int d)
{
    uint32_t l = atomic_load_explicit(&t->dest[d].limit, memory_order_relaxed) / AIMD_UNIT;
    return l ? l : 1;
}

bool aimd_take(struct aimd_table *t, int d, int w, int64_t now_us)
{
    struct aimd_dest *e = &t->dest[d];
    if (!atomic_load_explicit(&e->ready, memory_order_acquire))
        return false;
    if (now_us < atomic_load(&e->blocked_until_us))
        return false;
    uint32_t limit = aimd_limit(t, d);
    uint32_t n = atomic_load(&e->inflight);
    do {
        if (n >= limit)
            return false;
    } while (!atomic_compare_exchange_weak(&e->inflight, &n, n + 1));
    /* One writer per row: a plain load and store (no lock prefix). */
    uint32_t held = atomic_load_explicit(&t->held[w][d], memory_order_relaxed);
    atomic_store_explicit(&t->held[w][d], held + 1, memory_order_relaxed);
    return true;
}

/* Lower the limit once for the overload a request that started at started_us ran into. */
static void decrease(struct aimd_dest *e, int64_t started_us, int64_t now_us)
{
    int64_t last = atomic_load(&e->last_decrease_us);
    do {
        /* It was sent before the last decrease: that decrease answered this overload. */
        if (started_us <= last)
            return;
    } while (!atomic_compare_exchange_weak(&e->last_decrease_us, &last, now_us));
    uint32_t cur = atomic_load(&e->limit), next;
    do {
        next = (uint32_t)((uint64_t)cur * AIMD_DECREASE_NUM / AIMD_DECREASE_DEN);
        if (next < AIMD_UNIT)
            next = AIMD_UNIT;
    } while (!atomic_compare_exchange_weak(&e->limit, &cur, next));
    atomic_fetch_add_explicit(&e->decreases, 1, memory_order_relaxed);
}

/* One success: 1/limit more, so a limit's worth of successes adds one request. */
static void increase(struct aimd_dest *e)
{
    uint32_t top = atomic_load(&e->ceiling) * AIMD_UNIT;
    uint32_t cur = atomic_load(&e->limit), next;
    do {
        if (cur >= top)
            return;
        uint32_t whole = cur / AIMD_UNIT ? cur / AIMD_UNIT : 1;
        next = cur + AIMD_UNIT / whole;
        if (next > top)
            next = top;
    } while (!atomic_compare_exchange_weak(&e->limit, &cur, next));
}

void aimd_give(struct aimd_table *t, int d, int w, enum aimd_signal s, int64_t started_us,
               int64_t now_us, long retry_after_ms)
{
    struct aimd_dest *e = &t->dest[d];
    if (s == AIMD_SUCCESS)
        increase(e);
    else if (s == AIMD_OVERLOAD)
        decrease(e, started_us, now_us);
    if (retry_after_ms >= 0) {
        int64_t until = now_us + (int64_t)retry_after_ms * 1000;
        int64_t cur = atomic_load(&e->blocked_until_us);
        while (cur < until && !atomic_compare_exchange_weak(&e->blocked_until_us, &cur, until))
            ;
    }
    uint32_t held = atomic_load_explicit(&t->held[w][d], memory_order_relaxed);
    if (held == 0)
        return;                     /* not ours (cannot happen): never wrap the count */
    atomic_store_explicit(&t->held[w][d], held - 1, memory_order_relaxed);
    atomic_fetch_sub(&e->inflight, 1);
}

void aimd_reap(struct aimd_table *t, int w)
{
    if (t == NULL || w < 0 || w >= AIMD_WORKERS)
        return;
    for (int d = 0; d < AIMD_DESTS; d++) {
        uint32_t n = atomic_exchange(&t->held[w][d], 0);
        if (n == 0)
            continue;
        /* Never below 0, should a count be off by the one a SIGKILL mid-take leaves. */
        uint32_t cur = atomic_load(&t->dest[d].inflight);
        while (!atomic_compare_exchange_weak(&t->dest[d].inflight, &cur, cur > n ? cur - n : 0))
            ;
    }
}

unsigned aimd_snapshot(const struct aimd_table *t, int64_t now_us, struct aimd_view *out,
                       unsigned max)
{
    unsigned n = 0;
    if (t == NULL)
        return 0;
    for (int d = 0; d < AIMD_DESTS && n < max; d++) {
        const struct aimd_dest *e = &t->dest[d];
        if (!atomic_load_explicit(&e->ready, memory_order_acquire))
            continue;
        struct aimd_view *v = &out[n++];
        snprintf(v->key, sizeof v->key, "%s", e->key);
        v->limit = (double)atomic_load(&e->limit) / AIMD_UNIT;
        v->inflight = atomic_load(&e->inflight);
        v->decreases = atomic_load(&e->decreases);
        v->blocked = now_us < atomic_load(&e->blocked_until_us);
    }
    return n;
}

/* ---- the process's table ----------------------------------------------------------------- */

int aimd_open(void)
{
    void *p = mmap(NULL, sizeof *shared, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    shared = p;                     /* zero-filled: every entry free */
    return 0;
}

struct aimd_table *aimd_shared(void)
{
    return shared;
}

void aimd_set_worker(int w)
{
    worker = w >= 0 && w < AIMD_WORKERS ? w : -1;
}

int aimd_worker(void)
{
    return worker;
}

int64_t aimd_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}
