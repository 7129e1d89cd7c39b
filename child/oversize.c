/* oversize.c: reads that outgrew their bound. A read's reply larger than the bound made for it
 * (SERR_OVERSIZE) drops the connection rather than hold it; what it carried stays pending for
 * us, and the pending list is read again after the reconnect, one entry at a time. When one
 * entry alone outgrew the bound, it is sized in Redis without reading it: too large, it is
 * dead-lettered server-side; else it is read alone again with a bound made for it. */
#include "child/worker.h"
#include "common/log.h"

#include <stdio.h>

void oversize_note(struct child *c)
{
    log_warnx("a read of %d entries outgrew its bound (%s): reading one at a time", c->read_count,
              c->st.errstr);
    if (c->read_count > 1 || !c->pending_phase) {
        c->read_one = true;
        return;
    }
    c->probe_due = true;
    snprintf(c->probe_after, sizeof c->probe_after, "%s", c->from);
}

/* The probe's reply. An entry of many small fields takes more room in RESP than its bytes:
 * the bound for it. */
static void probed(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    char id[STREAM_ID_MAX];
    long long count = 0, bytes = 0, values = 0;
    int r = v ? stream_parse_probe(s, v, id, &count, &bytes, &values) : -1;
    if (r == -1) {
        child_redis_failed(c);      /* probe_due stays: tried again once connected */
        return;
    }
    c->probe_due = false;
    char keybuf[LEDGER_ID_MAX];
    const char *key = r == 1 ? child_key(c, s->op_key, id, keybuf) : id;
    if (r == 0 || bytes < 0 || retry_scheduled(c, key))
        return;
    if (bytes > c->pool->max_message_bytes) {
        char err[96];
        snprintf(err, sizeof err, "%lld bytes, max_message_bytes is %lld", bytes, c->pool->max_message_bytes);
        log_warnx("message %s is too large (%s): dead-lettering it without reading it", id, err);
        sb_add(c->slot, SB_READ, 1);
        retry_dead(c, key, "too_large", count > 0 ? count : 1, err);
        return;
    }
    /* RESP frames each name and value in at most 25 bytes; never below the usual bound. */
    size_t need = (size_t)bytes + 32 * (size_t)values + 65536;
    size_t usual = (size_t)c->pool->max_message_bytes * 2 + 65536;
    s->entry_limit = need > usual ? need : usual;
}

/* Size in Redis the entry that outgrew a read alone. */
void oversize_probe(struct child *c)
{
    child_use(c, c->cur);       /* the stream whose pending list the read was at */
    if (stream_probe_pending(&c->st, c->probe_after, probed, c) == -1)
        child_redis_error(c);      /* probe_due stays: tried again once connected */
}
