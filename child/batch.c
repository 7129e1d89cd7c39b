/* batch.c: a message's way through the handler. A batch from Redis (a read, a claim of due
 * retries, orphans taken over) is sorted: entries waiting for a retry or a dead-letter move are
 * left to their schedule, messages over their attempts or too large go to the dead letters,
 * duplicates are acknowledged; the rest get a ledger record (IN_HANDLER) and a ticket, and go
 * to the handler. The handler's outcome for the ticket moves the record on: ACK_DUE (through
 * MARKER_DUE with dedupe), RETRY_DUE or DEAD_DUE. What is counted is counted here, from the
 * outcome: handlers count nothing. */
#include "child/route.h"
#include "child/worker.h"
#include "common/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- tickets ----------------------------------------------------------------------------- */

static struct ticket *ticket_get(struct child *c, const char *id)
{
    struct ticket *t = c->free_tickets;
    if (t)
        c->free_tickets = t->next;
    else
        t = xcalloc(1, sizeof *t);
    t->child = c;
    t->next = NULL;
    t->live = true;
    /* On the per-message path: a plain copy, no formatting. */
    size_t n = strnlen(id, sizeof t->id - 1);
    memcpy(t->id, id, n);
    t->id[n] = '\0';
    return t;
}

static void ticket_put(struct child *c, struct ticket *t)
{
    t->live = false;
    t->next = c->free_tickets;
    c->free_tickets = t;
}

/* The outcome of entry id: count it, and move its record on. */
static void outcome(struct child *c, const char *id, const struct outcome *o)
{
    /* Every message handed over gets one duration: the handler's own measure, or for an
     * asynchronous handler that decided at once (a bad message), zero. A synchronous handler's
     * submit() is timed by batch_submit(). */
    if (o->seconds >= 0)
        sb_observe(c->slot, SB_DUR_FIRST, o->seconds);
    else if (c->ops->fds)
        sb_observe(c->slot, SB_DUR_FIRST, 0);
    if (o->http.done) {
        sb_add(c->slot, sb_http_index(o->http.status), 1);
        sb_observe(c->slot, SB_HTTP_DUR_FIRST, o->http.seconds);
    }
    struct ledger_rec *r = ledger_get(&c->ledger, id);
    if (r == NULL || r->state != LEDGER_IN_HANDLER) {
        /* Never happens while each entry has one ticket at a time; should it, the outcome
         * still counts, for a record made for it. */
        log_warnx("message %s: an outcome for a message not in the handler", id);
        r = ledger_add(&c->ledger, id, LEDGER_IN_HANDLER);
        r->attempt = 1;
    }
    if (o->disp != DISP_ACK) {
        free((char *)r->marker.p);
        r->marker = (struct str){ NULL, 0 };
    }
    switch (o->disp) {
    case DISP_ACK:
        if (r->marker.p) {
            ledger_set_state(&c->ledger, r, LEDGER_MARKER_DUE);
            idlist_add(&c->marks, id);
        } else {
            ledger_set_state(&c->ledger, r, LEDGER_ACK_DUE);
            idlist_add(&c->acks, id);
        }
        break;
    case DISP_RETRY:
        /* It stays in our pending list (never acked before it succeeded or was dead-lettered)
         * and is taken again with XCLAIM when its delay is over. */
        sb_add(c->slot, SB_FAILED, 1);
        child_publish_error(c, "%s: %s", id, o->error ? o->error : "failed, will retry");
        retry_schedule(c, r, o);
        break;
    case DISP_DEAD:
        sb_add(c->slot, SB_FAILED, 1);
        if (o->reason && strcmp(o->reason, "bad_message") == 0)
            sb_add(c->slot, SB_BAD_MESSAGE, 1);
        log_warnx("message %s failed for good (%s): %s", id, o->reason ? o->reason : "?",
                  o->error ? o->error : "");
        child_publish_error(c, "%s: %s%s%s", id, o->reason ? o->reason : "failed", o->error ? ": " : "",
                            o->error ? o->error : "");
        retry_dead(c, id, o->reason, r->attempt > 0 ? r->attempt : 1, o->error);
        break;
    }
    /* It was in flight when the group was re-created: it is pending nowhere now, and a retry
     * or a dead-letter move needs it in our pending list. */
    if (o->disp != DISP_ACK && c->adopt_upto[0] && group_id_cmp(id, c->adopt_upto) <= 0) {
        r = ledger_get(&c->ledger, id);
        if (r)
            group_mark_adopt(c, r);
    }
}

void ticket_done(struct ticket *t, const struct outcome *o)
{
    if (!t->live) {
        log_errorx("message %s: a second outcome for one ticket (a handler bug): ignored", t->id);
        return;
    }
    struct child *c = t->child;
    char id[STREAM_ID_MAX];
    memcpy(id, t->id, sizeof id);
    ticket_put(c, t);
    outcome(c, id, o);
}

/* ---- batches ----------------------------------------------------------------------------- */

void batch_fetch_attempts(struct child *c)
{
    struct stream *st = &c->st;
    if (st->n == 0)
        return;
    long long *counts = xcalloc(st->n, sizeof *counts);
    /* Rows between the batch's entries that are not in it: deleted ones, our others. */
    size_t limit = st->n + st->vanished.n + ledger_count(&c->ledger, LEDGER_RETRY_DUE) +
                   ledger_count(&c->ledger, LEDGER_DEAD_DUE) + child_inflight(c) + 16;
    if (stream_delivery_counts(st, st->msgs, st->n, limit, counts) == 0)
        for (size_t i = 0; i < st->n; i++)
            st->msgs[i].attempt = counts[i] > 0 ? counts[i] : 1;
    free(counts);
}

void batch_handle(struct child *c)
{
    struct stream *st = &c->st;
    if (c->read_one && !c->pending_phase) {
        /* A read of new entries went through one at a time: back to whole batches. */
        c->read_one = false;
        st->entry_limit = 0;
    }
    for (size_t i = 0; i < st->vanished.n; i++) {
        log_warnx("pending entry %s has no data any more (deleted or trimmed): acknowledging it",
                  st->vanished.id[i]);
        idlist_add(&c->acks, st->vanished.id[i]);
        sb_add(c->slot, SB_VANISHED, 1);
    }
    if (c->pending_phase) {
        if (st->n == 0 && st->vanished.n == 0) {
            c->pending_phase = false;
            snprintf(c->from, sizeof c->from, ">");
        } else {
            snprintf(c->from, sizeof c->from, "%s", st->last_id);
            batch_fetch_attempts(c);
        }
    }
    batch_submit(c);
}

static size_t msg_bytes(const struct msg *m)
{
    size_t n = 0;
    for (size_t i = 0; i < 2 * m->nf; i++)
        n += m->f[i].len;
    return n;
}

void batch_submit(struct child *c)
{
    struct stream *st = &c->st;
    const struct pool_conf *p = c->pool;
    struct str *keys = NULL;
    bool *dup = p->dedupe_ttl_ms > 0 && st->n ? dedupe_find(c, &keys) : NULL;
    long long arrived = child_unix_ms();
    for (size_t i = 0; i < st->n; i++) {
        const struct msg *m = &st->msgs[i];
        if (c->pending_phase) {
            const struct ledger_rec *r = ledger_get(&c->ledger, m->id.p);
            if (r && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_DEAD_DUE)) {
                /* Re-reading our pending list counted a delivery of an entry that only waits
                 * for its retry: set its counter back, so that reconnects do not use up
                 * attempts. */
                if (r->state == LEDGER_RETRY_DUE && r->attempt > 0 &&
                    stream_set_count(st, m->id.p, r->attempt) == -1)
                    child_log_redis_error(c);
                continue;
            }
        }
        sb_add(c->slot, SB_READ, 1);
        if (m->attempt > p->max_attempts) {
            /* Delivered more often than allowed without an outcome: it crashed or hung its
             * workers (or they were killed while holding it). */
            log_warnx("message %s was delivered %lld times without an outcome: dead-lettering it",
                      m->id.p, m->attempt);
            retry_dead(c, m->id.p, "max_attempts", m->attempt, "delivered without an outcome");
            continue;
        }
        size_t bytes = msg_bytes(m);
        if ((long long)bytes > p->max_message_bytes) {
            char err[96];
            snprintf(err, sizeof err, "%zu bytes, max_message_bytes is %lld", bytes, p->max_message_bytes);
            log_warnx("message %s is too large (%s): dead-lettering it", m->id.p, err);
            retry_dead(c, m->id.p, "too_large", m->attempt, err);
            continue;
        }
        if (dup && dup[i]) {
            log_debug("message %s was handled already: acknowledging it", m->id.p);
            sb_add(c->slot, SB_DUPLICATE, 1);
            idlist_add(&c->acks, m->id.p);
            continue;
        }
        /* A message without what the config says it holds (require_fields, a path a key
         * names, created_field's time) is bad before any handler sees it. */
        char why[ERROR_TEXT_MAX];
        long long added;
        if (route_admit(p, m, &added, why, sizeof why) == -1) {
            log_warnx("message %s is bad (%s): dead-lettering it", m->id.p, why);
            /* counted as a handler's bad_message is: read, aged, handled in no time */
            long long at = msg_id_ms(&m->id);
            if (at > 0)
                sb_observe(c->slot, SB_AGE_FIRST, arrived > at ? (double)(arrived - at) / 1000.0 : 0);
            sb_observe(c->slot, SB_DUR_FIRST, 0);
            sb_add(c->slot, SB_FAILED, 1);
            sb_add(c->slot, SB_BAD_MESSAGE, 1);
            child_publish_error(c, "%s: bad_message: %s", m->id.p, why);
            retry_dead(c, m->id.p, "bad_message", m->attempt, why);
            continue;
        }
        struct ledger_rec *r = ledger_add(&c->ledger, m->id.p, LEDGER_IN_HANDLER);
        r->attempt = m->attempt;
        if (keys) {
            r->marker = keys[i];
            keys[i].p = NULL;
        }
        if (added < 0)
            added = msg_id_ms(&m->id);
        if (added > 0)
            sb_observe(c->slot, SB_AGE_FIRST, arrived > added ? (double)(arrived - added) / 1000.0 : 0);
        double t0 = now_s();
        c->handled++;
        c->ops->submit(c->h, m, ticket_get(c, m->id.p));
        if (c->ops->fds == NULL)
            sb_observe(c->slot, SB_DUR_FIRST, now_s() - t0);
    }
    if (keys)
        for (size_t i = 0; i < st->n; i++)
            free((char *)keys[i].p);
    free(keys);
    free(dup);
    stream_batch_release(st);
    atomic_store_explicit(&c->slot->inflight, child_inflight(c), memory_order_relaxed);
}
