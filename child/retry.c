/* retry.c: messages that failed. A transient failure stays in our pending list (never acked
 * before it succeeded or was dead-lettered) as a RETRY_DUE record, and is taken again with
 * XCLAIM when its delay is over; a permanent one, or one out of attempts, is a DEAD_DUE record
 * until it is moved to the dead-letter stream. Both are queued between requests, never while a
 * read is on the wire, and their replies move the records on: a record whose command is on the
 * wire is out of its schedule (a claim's are IN_HANDLER, a move's is due far away), so it is
 * never sent twice, and a command that failed puts it back on its schedule, so it is never
 * lost. */
#include "child/worker.h"
#include "common/backoff.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DLQ_RETRY_MS 5000      /* a dead-letter move that failed is tried again after this */
#define SENT_MS (24LL * 3600 * 1000) /* a record whose command is on the wire is due no sooner */

/* A claim on the wire: the entries it asked for (ledger keys, all of one stream), and for an
 * outage retry its attempt. */
struct claim {
    struct child *c;
    struct idlist ids;
    size_t stream;
    bool outage;
    long long attempt;
};

/* The dead-letter stream of the pool's stream k (of a pool of one: dlq, as ever). */
static const char *dlq_of(const struct child *c, size_t k)
{
    return c->pool->nstreams > 1 ? c->pool->dlqs[k] : c->pool->dlq;
}

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

/* The claim's reply: the entries still ours are handed over again, those another consumer
 * holds now are its own, and a failed claim puts every one back on its schedule, due at once
 * (still pending for us, or, should the group be gone, to be adopted by the new one). */
static void claimed(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct claim *k = arg;
    struct child *c = k->c;
    if (v == NULL) {
        for (size_t i = 0; i < k->ids.n; i++) {
            struct ledger_rec *r = ledger_get(&c->ledger, k->ids.id[i]);
            retry_again(c, k->ids.id[i], k->outage ? k->attempt : r ? r->attempt : 1, k->outage);
        }
        child_redis_failed(c);
    } else if (k->outage) {
        /* The endpoint was down: that attempt does not count, the counter stayed. */
        if (s->lost.n) {
            log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                     s->lost.id[0]);
        } else if (s->n == 0) {
            log_warnx("a message waiting for a retry was deleted from the stream meanwhile");
            sb_add(c->slot, SB_VANISHED, 1);
        }
        for (size_t i = 0; i < s->n; i++)
            s->msgs[i].attempt = k->attempt;
        batch_intake(c, false);
    } else {
        /* XCLAIM counted a delivery: this is the next attempt. */
        for (size_t i = 0; i < s->n; i++) {
            char key[LEDGER_ID_MAX];
            struct ledger_rec *r = ledger_get(&c->ledger, child_key(c, s->msgs[i].stream, s->msgs[i].id.p, key));
            s->msgs[i].attempt = r ? r->attempt + 1 : 2;
        }
        for (size_t i = 0; i < k->ids.n; i++) {
            struct ledger_rec *r = ledger_get(&c->ledger, k->ids.id[i]);
            if (r && r->state == LEDGER_IN_HANDLER)
                ledger_drop(&c->ledger, r);
        }
        /* Entries another consumer took over meanwhile are its now: not a failure, not
         * vanished, simply no longer ours to retry. */
        for (size_t i = 0; i < s->lost.n; i++)
            log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                     s->lost.id[i]);
        if (s->n + s->lost.n < k->ids.n) {
            log_warnx("%zu messages waiting for a retry were deleted from the stream meanwhile",
                      k->ids.n - s->n - s->lost.n);
            sb_add(c->slot, SB_VANISHED, k->ids.n - s->n - s->lost.n);
        }
        batch_intake(c, false);
    }
    idlist_release(&k->ids);
    free(k);
}

/* Send the claim of k's entries (their records are out of the schedule). */
static void claim_send(struct child *c, struct claim *k)
{
    struct idlist ids = { 0 };
    for (size_t i = 0; i < k->ids.n; i++) {
        size_t sk;
        idlist_add(&ids, child_key_id(c, k->ids.id[i], &sk));
    }
    child_use(c, k->stream);
    int rc = stream_claim(&c->st, &ids, k->outage ? k->attempt : -1, claimed, k);
    idlist_release(&ids);
    if (rc == 0)
        return;
    for (size_t i = 0; i < k->ids.n; i++) {
        struct ledger_rec *r = ledger_get(&c->ledger, k->ids.id[i]);
        retry_again(c, k->ids.id[i], k->outage ? k->attempt : r ? r->attempt : 1, k->outage);
    }
    idlist_release(&k->ids);
    free(k);
    child_redis_error(c);
}

void retry_claim_due(struct child *c, long long now)
{
    unsigned busy = child_inflight(c);
    if (child_stopping || ledger_count(&c->ledger, LEDGER_RETRY_DUE) == 0 || !child_accepting(c) ||
        busy >= c->capacity)
        return;
    /* The due ones are taken off the schedule (IN_HANDLER: on their way back to the handler)
     * and keep their attempt for when the claim's reply is in. One claim at a time: its reply
     * is the batch taken in next. An outage retry is claimed alone, keeping its counter. */
    struct claim *k = xcalloc(1, sizeof *k);
    k->c = c;
    struct ledger_rec *r;
    while (busy + k->ids.n < c->capacity && (r = ledger_first_due(&c->ledger, LEDGER_RETRY_DUE, now))) {
        /* A claim names one stream: another stream's due entries go with the next one. */
        size_t sk;
        child_key_id(c, r->id, &sk);
        if (k->ids.n > 0 && sk != k->stream)
            break;
        k->stream = sk;
        if (r->outage) {
            if (k->ids.n > 0)
                break;
            k->outage = true;
            k->attempt = r->attempt;
            idlist_add(&k->ids, r->id);
            ledger_drop(&c->ledger, r);
            break;
        }
        idlist_add(&k->ids, r->id);
        ledger_set_state(&c->ledger, r, LEDGER_IN_HANDLER);
    }
    if (k->ids.n == 0) {
        free(k);
        return;
    }
    claim_send(c, k);
}

/* A dead-letter move on the wire: the entry it moves (its ledger key). */
struct move {
    struct child *c;
    char id[LEDGER_ID_MAX];
};

/* A dead-letter move's reply. */
static void moved(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct move *mv = arg;
    struct child *c = mv->c;
    char id[STREAM_ID_MAX];
    memcpy(id, mv->id, sizeof id);
    free(mv);
    size_t k;
    const char *eid = child_key_id(c, id, &k);
    const char *dlq = dlq_of(c, k);
    struct ledger_rec *r = ledger_get(&c->ledger, id);
    if (r && r->state != LEDGER_DEAD_DUE)
        r = NULL;
    if (v == NULL) {
        sb_add(c->slot, SB_DLQ_FAILURES, 1);
        log_warnx("cannot move message %s to %s, it stays pending: %s", eid, dlq, s->errstr);
        /* Lost with the connection: again as soon as it is back; refused: a while later. */
        bool lost = stream_closed(s) || s->err == SERR_IO;
        if (r)
            ledger_schedule(&c->ledger, r, LEDGER_DEAD_DUE, child_now_ms() + (lost ? 0 : DLQ_RETRY_MS));
        if (lost)
            child_redis_failed(c);
        return;
    }
    long long rc = v->integer;
    if (rc == 1) {
        sb_add(c->slot, SB_DEAD_LETTERED, 1);
        if (r)
            sb_add(c->slot, sb_dlq_index(r->reason), 1);
        log_info("message %s moved to %s (%s)", eid, dlq, r ? r->reason : "?");
    } else if (rc == -1) {
        sb_add(c->slot, SB_VANISHED, 1);
        log_warnx("message %s to dead-letter has no data any more: acknowledged", eid);
    } else {
        log_info("message %s is no longer ours: not dead-lettered by us", eid);
    }
    if (r) {
        if (r->adopt)
            c->nadopt--;
        ledger_drop(&c->ledger, r);
    }
}

void retry_move_dead(struct child *c, long long now)
{
    long long unix_now = child_unix_ms();
    struct ledger_rec *r;
    while ((r = ledger_first_due(&c->ledger, LEDGER_DEAD_DUE, now))) {
        struct move *mv = xcalloc(1, sizeof *mv);
        mv->c = c;
        snprintf(mv->id, sizeof mv->id, "%s", r->id);
        /* Each stream's letters go to its own dead-letter stream. */
        size_t k;
        const char *eid = child_key_id(c, r->id, &k);
        child_use(c, k);
        if (stream_dead_letter(&c->st, dlq_of(c, k), eid, r->reason, r->attempt, r->error ? r->error : "",
                               unix_now, moved, mv) == -1) {
            free(mv);
            sb_add(c->slot, SB_DLQ_FAILURES, 1);
            log_warnx("cannot move message %s to %s, it stays pending: %s", eid, dlq_of(c, k), c->st.errstr);
            ledger_schedule(&c->ledger, r, LEDGER_DEAD_DUE, now);
            child_redis_error(c);
            return;
        }
        /* On the wire: out of the schedule until its reply (moved()). */
        ledger_schedule(&c->ledger, r, LEDGER_DEAD_DUE, now + SENT_MS);
    }
}
