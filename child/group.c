/* group.c: the consumer group as this worker sees it: where a lost group restarts, the last
 * entry the group delivered to us, and what we still hold when it was re-created (it is
 * pending nowhere then, and a retry or a dead-letter move needs it pending as ours). */
#include "child/worker.h"
#include "common/log.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int group_id_cmp(const char *a, const char *b)
{
    struct str x = { a, strlen(a) }, y = { b, strlen(b) };
    return stream_id_cmp(&x, &y);
}

void group_set_state(struct child *c, enum sb_group_state state)
{
    atomic_store_explicit(&c->slot->group_state, (int)state, memory_order_relaxed);
}

/* Where a lost group restarts: after the last entry the fleet is known to have had delivered,
 * our own last one or the one the master last saw the group deliver, whichever is later. Both
 * were delivered by the group, so nothing after them is skipped. The master watches the
 * pool's first stream. */
void group_set_resume(struct child *c, size_t k)
{
    char polled[STREAM_ID_MAX] = "";
    uint64_t ms, n;
    if (k == 0 && sb_id_get(&c->slot->delivered, &ms, &n) == 0)
        snprintf(polled, sizeof polled, "%" PRIu64 "-%" PRIu64, ms, n);
    const char *best = c->seen[k];
    if (polled[0] && (!best[0] || group_id_cmp(polled, best) > 0))
        best = polled;
    snprintf(c->st.resume, sizeof c->st.resume, "%s", best);
}

/* Remember the last entry ">" brought (and tell the master, for the pool's other workers: of
 * the first stream, the one it watches). A read of several streams: each one's last entry. */
void group_note_seen(struct child *c)
{
    if (c->pool->nstreams > 1) {
        /* A read of new entries lists each stream's together and in id order, all naming it
         * by one string: the last of each run is the one to compare, once a run rather than
         * once a message. */
        for (size_t i = 0; i < c->st.n; i++) {
            const struct msg *m = &c->st.msgs[i];
            if (i + 1 < c->st.n && c->st.msgs[i + 1].stream == m->stream)
                continue;
            size_t k = child_stream_index(c, m->stream);
            if (!c->seen[k][0] || group_id_cmp(m->id.p, c->seen[k]) > 0)
                snprintf(c->seen[k], sizeof c->seen[k], "%s", m->id.p);
        }
        if (c->st.n == 0 || child_stream_index(c, c->st.msgs[0].stream) != 0)
            return;
    } else {
        snprintf(c->seen[0], sizeof c->seen[0], "%s", c->st.last_id);
    }
    char *end;
    unsigned long long ms = strtoull(c->seen[0], &end, 10);
    unsigned long long n = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
    sb_id_set(&c->slot->seen, ms, n);
}

/* The group was created again after it was lost: say so loudly (later entries are delivered,
 * earlier ones not again; what was pending in the lost group is pending only here), count it. */
void group_report_recreated(struct child *c, const char *when)
{
    sb_add(c->slot, SB_GROUP_RECREATED, 1);
    const struct pool_conf *p = c->pool;
    if (c->st.resume[0])
        log_warnx("group %s of stream %s is missing: re-creating it after entry %s%s (the fleet had "
                  "delivered up to %s): later entries are delivered, earlier ones not again",
                  p->group, c->st.key, c->st.group_at, when, c->st.resume);
    else
        log_warnx("group %s of stream %s is missing: re-creating it %s%s (nothing is known of what was "
                  "delivered before)", p->group, c->st.key,
                  p->group_start_latest ? "after its last entry (group_start = latest)"
                                        : "from the start, messages may be delivered again", when);
    child_publish_error(c, "group %s was missing: re-created after %s", p->group, c->st.group_at);
}

void group_mark_adopt(struct child *c, struct ledger_rec *r)
{
    if (!r->adopt)
        c->nadopt++;
    r->adopt = true;
}

/* The group exists (again): what we still hold must be pending in it, as ours. Entries up to
 * where the group stands go back into our pending list when they are pending nowhere (after a
 * loss); later ones are delivered again through ">" and are forgotten here. Those in flight
 * are put back if they fail (batch.c). A walk of the whole ledger: this happens once per
 * loss of the group. */
void group_reconcile_held(struct child *c, size_t k)
{
    const char *at = c->st.group_at;
    size_t dropped = 0, pos = 0;
    struct ledger_rec *r;
    while ((r = ledger_next(&c->ledger, &pos)) != NULL) {
        size_t sk;
        const char *id = child_key_id(c, r->id, &sk);
        if (sk != k || (r->state != LEDGER_RETRY_DUE && r->state != LEDGER_DEAD_DUE))
            continue;
        if (group_id_cmp(id, at) > 0) {
            dropped++;
            if (r->adopt)
                c->nadopt--;
            ledger_drop(&c->ledger, r);
            continue;
        }
        group_mark_adopt(c, r);
    }
    if (child_inflight(c) > 0)
        snprintf(c->adopt_upto, sizeof c->adopt_upto, "%s", at);
    if (dropped)
        log_warnx("%zu messages waiting here for a retry or a dead-letter move lie after entry %s, where "
                  "the group restarted: they are delivered again from there", dropped, at);
}

struct adoption {
    struct child *c;
    char id[LEDGER_ID_MAX];     /* its ledger key */
};

/* An adoption's reply. One that failed is marked again, for the next connection. */
static void adopted(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct adoption *a = arg;
    struct child *c = a->c;
    (void)s;
    if (v == NULL) {
        struct ledger_rec *r = ledger_get(&c->ledger, a->id);
        if (r && (r->state == LEDGER_RETRY_DUE || r->state == LEDGER_DEAD_DUE))
            group_mark_adopt(c, r);
        child_redis_failed(c);
    } else if (v->type == REDIS_T_ARRAY && v->elements == 1) {
        c->adopted++;
    }
    free(a);
    if (--c->adopting == 0 && c->adopted) {
        log_warnx("put %zu messages this worker holds back into the pending list of the re-created group",
                  c->adopted);
        c->adopted = 0;
    }
}

/* Put the records marked by group_reconcile_held() and batch.c back into our pending list,
 * with their delivery count (the attempt each has had): queued, pipelined. */
int group_adopt_held(struct child *c)
{
    size_t pos = 0;
    struct ledger_rec *r;
    while (c->nadopt > 0 && (r = ledger_next(&c->ledger, &pos)) != NULL) {
        if (!r->adopt)
            continue;
        struct adoption *a = xcalloc(1, sizeof *a);
        a->c = c;
        snprintf(a->id, sizeof a->id, "%s", r->id);
        size_t sk;
        const char *id = child_key_id(c, r->id, &sk);
        child_use(c, sk);
        if (stream_adopt(&c->st, id, r->attempt > 0 ? r->attempt : 1, adopted, a) == -1) {
            free(a);
            return -1;
        }
        c->adopting++;
        r->adopt = false;
        c->nadopt--;
    }
    c->nadopt = 0;      /* none is left marked: the walk saw every record */
    return 0;
}
