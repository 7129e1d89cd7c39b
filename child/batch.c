/* batch.c: a message's way through the handler. A batch from Redis (a read, a claim of due
 * retries, orphans taken over) is taken in by stages, each a command whose reply the loop
 * waits for without blocking (the delivery counters of re-read entries, the done-markers with
 * dedupe), then sorted: entries waiting for a retry or a dead-letter move are
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

/* ---- entries that killed workers (crash_limit, supervisor/crash.h) ----------------------- */

/* The numbers of the entry id in ledger key. */
static void key_numbers(const struct child *c, const char *key, uint64_t *ms, uint64_t *n)
{
    size_t k;
    char *end;
    const char *id = child_key_id(c, key, &k);
    *ms = strtoull(id, &end, 10);
    *n = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
}

/* Whether the master charged entry key with deaths, or suspects it (*charges 0). */
static bool charged(struct child *c, const char *key, unsigned *charges, enum sb_cause *cause)
{
    if (c->pool->crash_limit <= 0)
        return false;
    if (c->pool_key == 0)
        c->pool_key = sb_pool_key(c->pool->name);
    uint64_t ms, n;
    key_numbers(c, key, &ms, &n);
    return sb_charge_get(c->pool_key, ms, n, charges, cause);
}

static void alone_clear(struct child *c)
{
    c->alone[0] = '\0';
    sb_id_set(&c->slot->alone, 0, 0);
}

/* The handler is about to take entry key: it is alone there when nothing else is, and the
 * one that was alone no longer is. What the master charges a death to. */
static void alone_enter(struct child *c, const char *key)
{
    if (child_inflight(c) > 0) {
        if (c->alone[0])
            alone_clear(c);
        return;
    }
    uint64_t ms, n;
    key_numbers(c, key, &ms, &n);
    snprintf(c->alone, sizeof c->alone, "%s", key);
    sb_id_set(&c->slot->alone, ms, n);
}

/* Entry key waits until the handler is free for it (or, a suspect, for it alone): it stays
 * in our pending list, due at once, and the claim that takes it back counts no attempt. */
static void defer(struct child *c, const char *key, long long attempt)
{
    struct ledger_rec *r = ledger_add(&c->ledger, key, LEDGER_RETRY_DUE);
    r->attempt = attempt > 1 ? attempt - 1 : 0;
    r->outage = false;
    ledger_schedule(&c->ledger, r, LEDGER_RETRY_DUE, child_now_ms());
}

bool batch_isolating(struct child *c)
{
    if (c->solo[0])
        return true;
    if (c->solo_wait[0]) {
        /* It waits as a retry due, or is on the wire in a claim; anything else (dead-lettered,
         * gone from Redis) ends the wait. */
        const struct ledger_rec *r = ledger_get(&c->ledger, c->solo_wait);
        if (r && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_IN_HANDLER))
            return true;
        c->solo_wait[0] = '\0';
    }
    return false;
}

/* The outcome of entry id: count it, and move its record on. */
static void outcome(struct child *c, const char *id, const struct outcome *o)
{
    if (c->alone[0] && strcmp(c->alone, id) == 0)
        alone_clear(c);
    if (c->solo[0] && strcmp(c->solo, id) == 0)
        c->solo[0] = '\0';
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
    size_t k;
    if (o->disp != DISP_ACK && c->adopt_upto[0] && group_id_cmp(child_key_id(c, id, &k), c->adopt_upto) <= 0) {
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

/* Several streams: a read of new entries served by the stream of its first message (the
 * script's reply is one stream's), or by none: tell the priority, and block on every stream
 * next when none had entries. */
static void charge_read(struct child *c)
{
    struct stream *st = &c->st;
    size_t n = c->pool->nstreams;
    if (c->shard_blocked || (c->sharded && st->n)) {
        /* The wait on one shard is over, with entries or not, or a round found entries: a
         * new turn of rounds over the shards next (the same shards first when they filled
         * the round: send_read_several()). */
        c->shard_full = !c->shard_blocked && st->n >= c->shard_want;
        c->shard_blocked = false;
        c->shard_empty_run = 0;
        c->all_empty = false;
        return;
    }
    if (c->sharded) {
        /* Every shard empty only once a whole turn of rounds found none. */
        c->shard_full = false;
        c->shard_empty_run += c->shard_asked;
        c->all_empty = c->shard_empty_run >= n;
        if (c->all_empty)
            c->shard_empty_run = 0;
        return;
    }
    if (st->n == 0) {
        if (c->read_first)
            priority_charge(&c->prio, c->read_order, n, 0);
        c->all_empty = true;
        return;
    }
    c->all_empty = false;
    if (!c->read_first)
        return;                 /* a blocking read serves whichever stream got entries first */
    size_t served = child_stream_index(c, st->msgs[0].stream);
    for (size_t i = 0; i < n; i++)
        if (c->read_order[i] == served)
            priority_charge(&c->prio, c->read_order, i + 1, st->n);
}

void batch_handle(struct child *c)
{
    struct stream *st = &c->st;
    const struct pool_conf *p = c->pool;
    if (c->read_one && !c->pending_phase) {
        /* A read of new entries went through one at a time: back to whole batches. */
        c->read_one = false;
        st->entry_limit = 0;
    }
    /* Only a pending-list read (one stream's, c->cur) brings entries without data. */
    for (size_t i = 0; i < st->vanished.n; i++) {
        char key[LEDGER_ID_MAX];
        log_warnx("pending entry %s has no data any more (deleted or trimmed): acknowledging it",
                  st->vanished.id[i]);
        idlist_add(&c->acks, child_key(c, p->streams[c->cur], st->vanished.id[i], key));
        sb_add(c->slot, SB_VANISHED, 1);
    }
    if (c->pending_phase) {
        if (st->n == 0 && st->vanished.n == 0 && c->cur + 1 < p->nstreams) {
            /* This stream's pending list is read: the next one's, from its start. */
            c->cur++;
            snprintf(c->from, sizeof c->from, "0");
        } else if (st->n == 0 && st->vanished.n == 0) {
            c->pending_phase = false;
            snprintf(c->from, sizeof c->from, ">");
        } else {
            snprintf(c->from, sizeof c->from, "%s", st->last_id);
            batch_intake(c, true);
            return;
        }
    } else if (p->nstreams > 1) {
        charge_read(c);
    }
    batch_intake(c, false);
}

static size_t msg_bytes(const struct msg *m)
{
    size_t n = 0;
    for (size_t i = 0; i < 2 * m->nf; i++)
        n += m->f[i].len;
    return n;
}

/* Re-reading our pending list counted a delivery of an entry that only waits for its retry:
 * its counter was set back. */
static void count_set(struct stream *s, void *arg, const struct redis_reply *v)
{
    (void)s;
    if (v == NULL)
        child_redis_trouble(arg);
}

/* Hand the batch over. keys, dup: each message's done-marker key and whether it exists (with
 * dedupe; taken over). */
static void submit(struct child *c, struct str *keys, bool *dup)
{
    struct stream *st = &c->st;
    const struct pool_conf *p = c->pool;
    long long arrived = child_unix_ms();
    /* A handler with several messages in flight (fds): a suspect entry of the batch runs alone
     * and the rest waits for it, or, the handler busy, the whole batch waits until it is
     * free. A synchronous handler has each alone anyway. */
    size_t solo_at = SIZE_MAX;
    bool isolate = c->solo[0] != '\0';
    if (c->ops->fds && p->crash_limit > 0 && !isolate) {
        for (size_t i = 0; i < st->n && !isolate; i++) {
            char keybuf[LEDGER_ID_MAX];
            const char *key = child_key(c, st->msgs[i].stream, st->msgs[i].id.p, keybuf);
            const struct ledger_rec *r = c->pending_phase ? ledger_get(&c->ledger, key) : NULL;
            if (r && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_DEAD_DUE))
                continue;
            unsigned charges;
            enum sb_cause cause;
            if (!charged(c, key, &charges, &cause) || charges >= (unsigned)p->crash_limit)
                continue;
            isolate = true;
            if (child_inflight(c) == 0) {
                solo_at = i;
            } else {
                snprintf(c->solo_wait, sizeof c->solo_wait, "%s", key);
                log_info("message %s is suspected of killing a worker: it waits to run alone", st->msgs[i].id.p);
            }
        }
    }
    for (size_t i = 0; i < st->n; i++) {
        const struct msg *m = &st->msgs[i];
        char keybuf[LEDGER_ID_MAX];
        const char *key = child_key(c, m->stream, m->id.p, keybuf);
        if (c->pending_phase) {
            const struct ledger_rec *r = ledger_get(&c->ledger, key);
            if (r && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_DEAD_DUE)) {
                /* Re-reading our pending list counted a delivery of an entry that only waits
                 * for its retry: set its counter back, so that reconnects do not use up
                 * attempts. */
                if (r->state == LEDGER_RETRY_DUE && r->attempt > 0) {
                    child_use(c, child_stream_index(c, m->stream));
                    if (stream_set_count(st, m->id.p, r->attempt, count_set, c) == -1)
                        child_log_redis_error(c);
                }
                continue;
            }
        }
        unsigned charges;
        enum sb_cause cause;
        if (m->attempt <= p->max_attempts && charged(c, key, &charges, &cause) &&
            charges >= (unsigned)p->crash_limit) {
            /* It killed crash_limit workers, alone in their handlers: no more. */
            char err[96];
            snprintf(err, sizeof err, "killed %u workers (%s), crash_limit is %d", charges, sb_cause_name[cause],
                     p->crash_limit);
            sb_add(c->slot, SB_READ, 1);
            sb_add(c->slot, SB_FAILED, 1);
            log_warnx("message %s %s: dead-lettering it", m->id.p, err);
            child_publish_error(c, "%s: %s: %s", m->id.p, sb_cause_name[cause], err);
            retry_dead(c, key, sb_cause_name[cause], m->attempt, err);
            continue;
        }
        if (isolate && i != solo_at) {
            defer(c, key, m->attempt);
            continue;
        }
        sb_add(c->slot, SB_READ, 1);
        if (m->attempt > p->max_attempts) {
            /* Delivered more often than allowed without an outcome: it crashed or hung its
             * workers (or they were killed while holding it). */
            log_warnx("message %s was delivered %lld times without an outcome: dead-lettering it",
                      m->id.p, m->attempt);
            retry_dead(c, key, "max_attempts", m->attempt, "delivered without an outcome");
            continue;
        }
        size_t bytes = msg_bytes(m);
        if ((long long)bytes > p->max_message_bytes) {
            char err[96];
            snprintf(err, sizeof err, "%zu bytes, max_message_bytes is %lld", bytes, p->max_message_bytes);
            log_warnx("message %s is too large (%s): dead-lettering it", m->id.p, err);
            retry_dead(c, key, "too_large", m->attempt, err);
            continue;
        }
        if (dup && dup[i]) {
            log_debug("message %s was handled already: acknowledging it", m->id.p);
            sb_add(c->slot, SB_DUPLICATE, 1);
            idlist_add(&c->acks, key);
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
            retry_dead(c, key, "bad_message", m->attempt, why);
            continue;
        }
        struct ledger_rec *r = ledger_add(&c->ledger, key, LEDGER_IN_HANDLER);
        r->attempt = m->attempt;
        if (r->held_ms == 0)
            r->held_ms = child_unix_ms();       /* held since now (status page, held.c) */
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
        if (i == solo_at) {
            /* Cleared by its outcome: nothing joins it in the handler until then. */
            log_info("message %s is suspected of killing a worker: running it alone", m->id.p);
            snprintf(c->solo, sizeof c->solo, "%s", key);
            c->solo_wait[0] = '\0';
        }
        alone_enter(c, key);
        c->ops->submit(c->h, m, ticket_get(c, key));
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
    /* Several in the handler at once: should one kill the worker, the master must know every
     * entry it held to suspect them (with one, the slot's alone names it, and a synchronous
     * handler has none left by now). */
    if (p->crash_limit > 0 && child_inflight(c) > 1)
        held_publish_now(c);
}

/* The done-markers' reply (MGET): on a Redis error nothing is skipped, handling twice is
 * better than not at all. */
static void seen_reply(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    struct str *keys = c->intake_keys;
    c->intake_keys = NULL;
    if (s->n != c->intake_n) {
        /* The connection was dropped: the batch went with it (its entries stay pending). */
        for (size_t i = 0; i < c->intake_n; i++)
            free((char *)keys[i].p);
        free(keys);
        return;
    }
    bool *dup = xcalloc(s->n ? s->n : 1, sizeof *dup);
    if (v)
        stream_parse_seen(v, s->n, dup);
    else
        child_redis_trouble(c);
    submit(c, keys, dup);
}

/* The second stage: with dedupe, look the batch's done-markers up. */
static void intake_seen(struct child *c)
{
    struct stream *st = &c->st;
    if (c->pool->dedupe_ttl_ms <= 0 || st->n == 0) {
        submit(c, NULL, NULL);
        return;
    }
    struct str *keys = xcalloc(st->n, sizeof *keys);
    for (size_t i = 0; i < st->n; i++)
        keys[i] = dedupe_marker_key(c, &st->msgs[i]);
    if (stream_seen(st, keys, st->n, seen_reply, c) == 0) {
        c->intake_keys = keys;
        c->intake_n = st->n;
        return;
    }
    child_log_redis_error(c);
    submit(c, keys, xcalloc(st->n, sizeof(bool)));
}

/* The delivery counters' reply (XPENDING): each entry's attempt (left as read on an error). */
static void counts_reply(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    (void)s;
    if (v == NULL)
        child_redis_trouble(c);
    intake_seen(c);
}

void batch_intake(struct child *c, bool counts)
{
    struct stream *st = &c->st;
    if (counts && st->n > 0) {
        /* Rows between the batch's entries that are not in it: deleted ones, our others. */
        size_t limit = st->n + st->vanished.n + ledger_count(&c->ledger, LEDGER_RETRY_DUE) +
                       ledger_count(&c->ledger, LEDGER_DEAD_DUE) + child_inflight(c) + 16;
        if (stream_delivery_counts(st, limit, counts_reply, c) == 0)
            return;
        child_log_redis_error(c);
    }
    intake_seen(c);
}
