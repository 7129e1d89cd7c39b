/* reclaim.c: orphans. Entries pending for longer than claim_idle belong to consumers that died
 * (a killed worker, another host, a renamed pool): take them over, following XAUTOCLAIM's
 * cursor across turns until it comes back to 0-0. Also keep our own waiting entries from
 * looking orphaned, and (slot 0) remove consumers that are long dead and hold nothing. */
#include "child/worker.h"
#include "common/log.h"

#include <stdio.h>
#include <string.h>

/* Drop the retries whose entries another consumer holds now (c->st.lost, from a touch): they
 * are its to handle. Their dead-letter moves find out by themselves (the move does nothing). */
static void forget_lost(struct child *c)
{
    for (size_t k = 0; k < c->st.lost.n; k++) {
        char key[LEDGER_ID_MAX];
        struct ledger_rec *r = ledger_get(&c->ledger, child_key(c, c->st.op_key, c->st.lost.id[k], key));
        if (r == NULL || r->state != LEDGER_RETRY_DUE)
            continue;
        log_info("message %s waiting for a retry is held by another consumer now: leaving it", r->id);
        if (r->adopt)
            c->nadopt--;
        ledger_drop(&c->ledger, r);
    }
    c->st.lost.n = 0;
}

static void touched(struct stream *s, void *arg, const struct redis_reply *v)
{
    (void)s;
    if (v == NULL)
        child_redis_trouble(arg);
    else
        forget_lost(arg);
}

/* Entries waiting here (for a retry, or for a dead-letter move that failed) are ours: reset
 * their idle time so that no orphan scan, ours included, takes them. Every claim_idle / 3, a
 * walk of the ledger: the only place that needs every waiting id at once. Returns -1 when
 * the connection was lost (handled). */
static int touch_waiting(struct child *c, long long now)
{
    int rc = 0;
    /* One XCLAIM per stream that has waiting entries (a walk of the ledger each: streams are
     * few, and this runs every claim_idle / 3). */
    for (size_t k = 0; k < c->pool->nstreams && rc == 0; k++) {
        struct idlist ids = { 0 };
        size_t pos = 0;
        struct ledger_rec *r;
        while ((r = ledger_next(&c->ledger, &pos)) != NULL) {
            size_t sk;
            const char *id = child_key_id(c, r->id, &sk);
            if (sk == k && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_DEAD_DUE))
                idlist_add(&ids, id);
        }
        if (ids.n) {
            child_use(c, k);
            rc = stream_touch(&c->st, &ids, touched, c);
        }
        idlist_release(&ids);
    }
    c->next_touch_ms = now + c->pool->claim_idle_ms / 3;
    if (rc == -1) {
        /* A lost connection goes the way of every other: counted, backoff, reconnect. */
        child_redis_error(c);
        return -1;
    }
    return 0;
}

static void pruned(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    (void)s;
    long idle = c->pool->claim_idle_ms * 4 > 3600000 ? c->pool->claim_idle_ms * 4 : 3600000;
    if (v && v->type == REDIS_T_INTEGER && v->integer > 0)
        log_info("removed %lld consumers of group %s idle for over %ld s with nothing pending",
                 v->integer, c->pool->group, idle / 1000);
    else if (v == NULL)
        child_redis_trouble(c);
}

static void prune_consumers(struct child *c, long long now)
{
    const struct pool_conf *p = c->pool;
    long idle = p->claim_idle_ms * 4 > 3600000 ? p->claim_idle_ms * 4 : 3600000;
    c->next_prune_ms = now + 600000;
    for (size_t k = 0; k < p->nstreams; k++) {
        child_use(c, k);
        if (stream_prune_consumers(&c->st, idle, pruned, c) == -1) {
            child_redis_error(c);
            return;
        }
    }
}

static void claimed_orphans(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    const struct pool_conf *p = c->pool;
    if (v == NULL) {
        child_redis_failed(c);
        return;
    }
    char *cursor = c->claim_cursor[c->claim_stream];
    snprintf(cursor, STREAM_ID_MAX, "%s", s->cursor);
    if (s->deleted) {
        sb_add(c->slot, SB_VANISHED, s->deleted);
        log_warnx("%zu pending entries of dead consumers had no data any more (trimmed or deleted)", s->deleted);
    }
    /* Back at the start of the pending list: the next stream's, or (the last) wait. Otherwise
     * go on after the next request. */
    bool done = strcmp(cursor, "0-0") == 0;
    if (done && c->claim_stream + 1 < p->nstreams) {
        c->claim_stream++;
        done = false;
    } else if (done) {
        c->claim_stream = 0;
    }
    c->claim_yield = !done;
    if (done) {
        long every = p->claim_idle_ms / 4;
        if (every < 1000)
            every = 1000;
        if (every > 60000)
            every = 60000;
        c->next_claim_ms = child_now_ms() + every;
    }
    if (s->n) {
        sb_add(c->slot, SB_RECLAIMED, s->n);
        log_info("took over %zu messages of dead consumers (idle over %ld ms)", s->n, p->claim_idle_ms);
        batch_intake(c, true);
    } else {
        stream_batch_release(s);
    }
}

static void claim_orphans(struct child *c)
{
    const struct pool_conf *p = c->pool;
    int room = (int)(c->capacity - child_inflight(c));
    child_use(c, c->claim_stream);
    if (stream_autoclaim(&c->st, p->claim_idle_ms, c->claim_cursor[c->claim_stream], room, claimed_orphans, c) == -1)
        child_redis_error(c);
}

/* One command a turn at most (each step's reply may change what the next one does). */
void reclaim_run(struct child *c, long long now)
{
    if (now >= c->next_touch_ms &&
        (ledger_count(&c->ledger, LEDGER_RETRY_DUE) || ledger_count(&c->ledger, LEDGER_DEAD_DUE))) {
        touch_waiting(c, now);
        return;
    }
    if (c->index == 0 && now >= c->next_prune_ms) {
        prune_consumers(c, now);
        return;
    }
    if (now < c->next_claim_ms || c->claim_yield || child_stopping || !child_accepting(c) ||
        child_inflight(c) >= c->capacity || !stream_connected(&c->st))
        return;
    claim_orphans(c);
}
