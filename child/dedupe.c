/* dedupe.c: done-markers (dedupe_ttl). Before a batch goes to the handler, the markers of its
 * messages are looked up: a message whose marker exists was handled already (by a worker that
 * died before its XACK) and is only acknowledged. A message that succeeds has its marker
 * written before its XACK goes out (its record goes MARKER_DUE, then ACK_DUE), so that a crash
 * between the two leaves the marker, never an unmarked ack. */
#include "child/fields.h"
#include "child/worker.h"
#include "common/buf.h"
#include "common/log.h"

#include <stdlib.h>

/* The done-marker key of m: stream:group:done:<message id>, where the message id is
 * id_field's value (a field or a path), else the entry id; with every byte of the id (a NUL
 * in id_field's value must not shorten it, or "abc\0zzz" would pass for "abc"). An id_field
 * path that does not resolve makes the message bad (route_admit()): its key is never used.
 * Caller owns key.p. */
struct str dedupe_marker_key(const struct child *c, const struct msg *m)
{
    const char *idf = c->pool->id_field;
    struct fields_value v = { { NULL, 0 }, NULL };
    char err[256];
    struct str id = m->id;
    if (idf && fields_get(m, idf, strlen(idf), &v, err, sizeof err) == 0 && v.v.len)
        id = v.v;
    /* Entry ids are per stream (two streams of a pool may both hold 1700000000000-0): keyed
     * by the entry id, a marker names the message's stream. A business id (id_field) is the
     * pool's, whichever of its streams brought it: keyed by the first. One stream: the same. */
    const char *scope = id.p == m->id.p && m->stream ? m->stream : c->pool->stream;
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s:%s:done:", scope, c->pool->group);
    buf_add(&b, id.p, id.len);
    fields_value_release(&v);
    return (struct str){ b.p, b.len };
}

/* A marker's reply. One that could not be written is dropped (at worst a duplicate later,
 * never a loss): its XACK went after it all the same. */
static void marked(struct stream *s, void *arg, const struct redis_reply *v)
{
    (void)s;
    if (v == NULL)
        child_redis_trouble(arg);
}

/* The SETs are queued before the XACKs of the same messages, on the one connection: Redis runs
 * them in that order, so a crash between the two leaves the marker, never an unmarked ack. */
int dedupe_write_markers(struct child *c)
{
    if (c->marks.n == 0)
        return 0;
    for (size_t i = 0; i < c->marks.n; i++) {
        struct ledger_rec *r = ledger_get(&c->ledger, c->marks.id[i]);
        if (r == NULL || r->state != LEDGER_MARKER_DUE)
            continue;
        if (r->marker.p && stream_connected(&c->st))
            stream_mark_done(&c->st, &r->marker, c->pool->dedupe_ttl_ms, marked, c);
        free((char *)r->marker.p);
        r->marker = (struct str){ NULL, 0 };
        ledger_set_state(&c->ledger, r, LEDGER_ACK_DUE);
        idlist_add(&c->acks, r->id);
    }
    c->marks.n = 0;
    return stream_connected(&c->st) ? 0 : -1;
}
