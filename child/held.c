/* held.c: what the worker holds, published in its scoreboard slot: how many entries, and the
 * ids of those held longest with since when. The status page shows them; a later feature
 * can charge a dead worker's death to the entries it held (the master reads the slot after
 * the death, before the slot is reset).
 *
 * The ledger knows every entry held; walking it costs one pass, so it is done at most 4 times
 * a second (and at least once a loop turn, every second or sooner), not every turn. A record
 * handed to the handler is stamped then (batch.c); any other (a dead letter decided before
 * the handler) gets its time when a walk first sees it. */
#include "child/worker.h"

#include <stdlib.h>
#include <string.h>

#define HELD_PERIOD_MS 250

/* Put (ms, n, since) into h, which keeps the SB_HELD_MAX oldest, oldest first. */
static void keep_oldest(struct sb_held_copy *h, uint64_t ms, uint64_t n, uint64_t since)
{
    unsigned at = h->n;
    while (at > 0 && (h->id[at - 1].since_unix_ms > since ||
                      (h->id[at - 1].since_unix_ms == since &&
                       (h->id[at - 1].ms > ms || (h->id[at - 1].ms == ms && h->id[at - 1].n > n)))))
        at--;
    if (at >= SB_HELD_MAX)
        return;
    unsigned last = h->n < SB_HELD_MAX ? h->n : SB_HELD_MAX - 1;
    memmove(&h->id[at + 1], &h->id[at], (last - at) * sizeof h->id[0]);
    h->id[at].ms = ms;
    h->id[at].n = n;
    h->id[at].since_unix_ms = since;
    if (h->n < SB_HELD_MAX)
        h->n++;
}

static long long next_ms;

void held_publish_now(struct child *c)
{
    next_ms = 0;
    held_publish(c, child_now_ms());
}

void held_publish(struct child *c, long long now)
{
    if (now < next_ms)
        return;
    next_ms = now + HELD_PERIOD_MS;
    long long unix_ms = child_unix_ms();
    struct sb_held_copy h;
    memset(&h, 0, sizeof h);
    size_t pos = 0;
    struct ledger_rec *r;
    while ((r = ledger_next(&c->ledger, &pos)) != NULL) {
        if (r->held_ms == 0)
            r->held_ms = unix_ms;
        char *end;
        unsigned long long ms = strtoull(r->id, &end, 10);
        unsigned long long n = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
        h.count++;
        keep_oldest(&h, ms, n, (uint64_t)r->held_ms);
    }
    sb_set_held(c->slot, &h);
}
