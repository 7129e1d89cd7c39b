/* retry.c: messages that failed. A transient failure stays in our pending list (never acked
 * before it succeeded or was dead-lettered) as a RETRY_DUE record, and is taken again with
 * XCLAIM when its delay is over; a permanent one, or one out of attempts, is a DEAD_DUE record
 * until it is moved to the dead-letter stream. Both are done between requests, never while a
 * read is on the wire: the connection carries one conversation at a time. */
#include "child/worker.h"
#include "common/backoff.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DLQ_RETRY_MS 5000      /* a dead-letter move that failed is tried again after this */

static double rnd(void)
{
    return (double)rand() / ((double)RAND_MAX + 1);
}

struct ledger_rec *retry_dead(struct child *c, const char *id, const char *reason, long long attempts,
                              const char *error)
{
    struct ledger_rec *r = ledger_get(&c->ledger, id);
    if (r == NULL)
        r = ledger_add(&c->ledger, id, LEDGER_DEAD_DUE);
    snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "other");
    char text[ERROR_TEXT_MAX + 1];
    snprintf(text, sizeof text, "%s", error ? error : "");
    ledger_set_error(r, text);
    r->attempt = attempts;
    r->outage = false;
    ledger_schedule(&c->ledger, r, LEDGER_DEAD_DUE, 0);
    return r;
}

void retry_schedule(struct child *c, struct ledger_rec *r, const struct outcome *o)
{
    const struct pool_conf *p = c->pool;
    long long attempt = r->attempt > 0 ? r->attempt : 1;
    if (!o->outage && attempt >= p->max_attempts) {
        log_warnx("message %s failed %lld times: dead-lettering it: %s", r->id, attempt,
                  o->error ? o->error : "");
        retry_dead(c, r->id, "max_attempts", attempt, o->error);
        return;
    }
    long delay = backoff_ms(p->backoff, p->backoff_base_ms, p->backoff_max_ms,
                            p->backoff_jitter_pct, attempt, rnd());
    /* The endpoint's Retry-After replaces our schedule, even when shorter. But "0", or a date
     * already past, would have us retry at once and burn every attempt in milliseconds: then
     * our own schedule applies, and never sooner than backoff_base. */
    if (o->retry_after_ms > 0)
        delay = o->retry_after_ms < p->backoff_max_ms ? o->retry_after_ms : p->backoff_max_ms;
    else if (o->retry_after_ms == 0 && delay < p->backoff_base_ms)
        delay = p->backoff_base_ms;
    r->attempt = attempt;
    r->outage = o->outage;
    ledger_schedule(&c->ledger, r, LEDGER_RETRY_DUE, child_now_ms() + delay);
    sb_add(c->slot, SB_RETRIED, 1);
    log_debug("message %s failed (attempt %lld%s): retry in %ld ms: %s", r->id, attempt,
              o->outage ? ", endpoint down" : "", delay, o->error ? o->error : "?");
}

static long until(long long due, long long now)
{
    return due <= now ? 0 : (long)(due - now);
}

/* The heaps of the ledger know the next due time of each state: no scan. */
long retry_due_in(struct child *c, long long now, bool retries, bool dead)
{
    long best = -1;
    long long t;
    if (retries && (t = ledger_next_due(&c->ledger, LEDGER_RETRY_DUE)) >= 0)
        best = until(t, now);
    if (dead && (t = ledger_next_due(&c->ledger, LEDGER_DEAD_DUE)) >= 0) {
        long d = until(t, now);
        if (best < 0 || d < best)
            best = d;
    }
    return best;
}

bool retry_scheduled(struct child *c, const char *id)
{
    const struct ledger_rec *r = ledger_get(&c->ledger, id);
    return r && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_DEAD_DUE);
}

/* A retry whose claim failed: it is still pending for us (or, should the group be gone, to be
 * adopted by the new one), so it waits again, due at once; never forgotten. */
static void retry_again(struct child *c, const char *id, long long attempt, bool outage)
{
    struct ledger_rec *r = ledger_get(&c->ledger, id);
    if (r == NULL)
        r = ledger_add(&c->ledger, id, LEDGER_RETRY_DUE);
    r->attempt = attempt;
    r->outage = outage;
    ledger_schedule(&c->ledger, r, LEDGER_RETRY_DUE, child_now_ms());
}

/* The endpoint was down when r failed: that attempt does not count. Claim it alone, keeping
 * its delivery counter where it was, and hand it over. Returns 0 or -1 (Redis failed). */
static int claim_outage(struct child *c, struct ledger_rec *r)
{
    char id[STREAM_ID_MAX];
    memcpy(id, r->id, sizeof id);
    long long attempt = r->attempt;
    ledger_del(&c->ledger, id);
    struct idlist one = { 0 };
    idlist_add(&one, id);
    int rc = stream_claim(&c->st, &one, attempt);
    idlist_release(&one);
    if (rc == -1) {
        retry_again(c, id, attempt, true);
        child_redis_error(c);
        return -1;
    }
    if (c->st.lost.n) {
        log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                 c->st.lost.id[0]);
    } else if (c->st.n == 0) {
        log_warnx("a message waiting for a retry was deleted from the stream meanwhile");
        sb_add(c->slot, SB_VANISHED, 1);
    }
    for (size_t k = 0; k < c->st.n; k++)
        c->st.msgs[k].attempt = attempt;
    batch_submit(c);
    return 0;
}

void retry_claim_due(struct child *c, long long now)
{
    unsigned busy = child_inflight(c);
    if (child_stopping || ledger_count(&c->ledger, LEDGER_RETRY_DUE) == 0 || !child_accepting(c) ||
        busy >= c->capacity)
        return;
    /* The due ones are taken off the schedule (IN_HANDLER: on their way back to the handler)
     * and keep their attempt for when the claim's reply is in. */
    struct idlist due = { 0 };
    struct ledger_rec *r;
    while (busy + due.n < c->capacity && (r = ledger_first_due(&c->ledger, LEDGER_RETRY_DUE, now))) {
        if (r->outage) {
            if (claim_outage(c, r) == -1)
                break;
            busy = child_inflight(c);
            continue;
        }
        idlist_add(&due, r->id);
        ledger_set_state(&c->ledger, r, LEDGER_IN_HANDLER);
    }
    if (due.n > 0 && !stream_connected(&c->st)) {
        for (size_t i = 0; i < due.n; i++) {
            r = ledger_get(&c->ledger, due.id[i]);
            retry_again(c, due.id[i], r ? r->attempt : 1, false);
        }
    } else if (due.n > 0) {
        if (stream_claim(&c->st, &due, -1) == -1) {
            for (size_t i = 0; i < due.n; i++) {
                r = ledger_get(&c->ledger, due.id[i]);
                retry_again(c, due.id[i], r ? r->attempt : 1, false);
            }
            child_redis_error(c);
        } else {
            /* XCLAIM counted a delivery: this is the next attempt. */
            struct stream *st = &c->st;
            for (size_t i = 0; i < st->n; i++) {
                r = ledger_get(&c->ledger, st->msgs[i].id.p);
                st->msgs[i].attempt = r ? r->attempt + 1 : 2;
            }
            for (size_t i = 0; i < due.n; i++)
                ledger_del(&c->ledger, due.id[i]);
            /* Entries another consumer took over meanwhile are its now: not a failure, not
             * vanished, simply no longer ours to retry. */
            for (size_t i = 0; i < st->lost.n; i++)
                log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                         st->lost.id[i]);
            if (st->n + st->lost.n < due.n) {
                log_warnx("%zu messages waiting for a retry were deleted from the stream meanwhile",
                          due.n - st->n - st->lost.n);
                sb_add(c->slot, SB_VANISHED, due.n - st->n - st->lost.n);
            }
            batch_submit(c);
        }
    }
    idlist_release(&due);
}

void retry_move_dead(struct child *c, long long now)
{
    long long unix_now = child_unix_ms();
    struct ledger_rec *r;
    while (stream_connected(&c->st) && (r = ledger_first_due(&c->ledger, LEDGER_DEAD_DUE, now))) {
        int rc = stream_dead_letter(&c->st, c->pool->dlq, r->id, r->reason, r->attempt,
                                    r->error ? r->error : "", unix_now);
        if (rc == -2) {
            sb_add(c->slot, SB_DLQ_FAILURES, 1);
            log_warnx("cannot move message %s to %s, it stays pending: %s", r->id, c->pool->dlq, c->st.errstr);
            ledger_schedule(&c->ledger, r, LEDGER_DEAD_DUE, now + DLQ_RETRY_MS);
            if (!stream_connected(&c->st)) {
                child_redis_error(c);
                return;
            }
            continue;
        }
        if (rc == 1) {
            sb_add(c->slot, SB_DEAD_LETTERED, 1);
            sb_add(c->slot, sb_dlq_index(r->reason), 1);
            log_info("message %s moved to %s (%s)", r->id, c->pool->dlq, r->reason);
        } else if (rc == -1) {
            sb_add(c->slot, SB_VANISHED, 1);
            log_warnx("message %s to dead-letter has no data any more: acknowledged", r->id);
        } else {
            log_info("message %s is no longer ours: not dead-lettered by us", r->id);
        }
        if (r->adopt)
            c->nadopt--;
        ledger_drop(&c->ledger, r);
    }
}
