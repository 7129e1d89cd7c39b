/* sb.c: the scoreboard in shared memory. See sb.h for who writes what. */
#include "common/sb.h"

#include <math.h>
#include <string.h>
#include <sys/mman.h>

const double sb_bucket_le[SB_NBUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 0.5, 1, 2.5, 5, 10, 30, INFINITY,
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
    "max_attempts", "bad_message", "too_large", "http_400", "http_401", "http_403",
    "http_404", "http_410", "http_413", "http_422", "http_other", "other",
};

int sb_dlq_index(const char *reason)
{
    for (int i = 0; i < SB_NDLQ - 2; i++)
        if (strcmp(sb_dlq_label[i], reason) == 0)
            return SB_DLQ_FIRST + i;
    if (strncmp(reason, "http_", 5) == 0)
        return SB_DLQ_LAST - 1;
    return SB_DLQ_LAST;
}

int sb_open(struct sb *sb, size_t nslots)
{
    void *p = mmap(NULL, nslots * sizeof(struct sb_slot), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    sb->slot = p;
    sb->nslots = nslots;
    return 0;
}

void sb_close(struct sb *sb)
{
    if (sb->slot)
        munmap(sb->slot, sb->nslots * sizeof(struct sb_slot));
    sb->slot = NULL;
    sb->nslots = 0;
}

void sb_slot_reset(struct sb_slot *s)
{
    atomic_store(&s->heartbeat_ms, 0);
    atomic_store(&s->inflight, 0);
    atomic_store(&s->circuit_open, 0);
    for (int i = 0; i < SB_NCOUNTERS; i++)
        atomic_store(&s->c[i], 0);
    atomic_store(&s->pid, 0);
    atomic_store(&s->state, SB_FREE);
}

void sb_observe(struct sb_slot *s, enum sb_counter first, double seconds)
{
    int b = 0;
    while (b < SB_NBUCKETS - 1 && seconds > sb_bucket_le[b])
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
