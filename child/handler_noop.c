/* handler_noop.c: acknowledges every message without looking at it. For benchmarks, and for
 * draining a stream on purpose. */
#include "child/handler.h"

#include <stdlib.h>

struct handler {
    struct child *child;
};

static struct handler *noop_open(struct child *c, const struct pool_conf *p)
{
    (void)p;
    static struct handler h;
    h.child = c;
    return &h;
}

static void noop_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    (void)h;
    (void)m;
    static const struct outcome ok = { .disp = DISP_ACK, .retry_after_ms = -1, .seconds = -1 };
    ticket_done(t, &ok);
}

static unsigned noop_inflight(struct handler *h)
{
    (void)h;
    return 0;
}

static void noop_close(struct handler *h)
{
    (void)h;
}

const struct handler_ops handler_noop_ops = {
    .name = "noop",
    .open = noop_open,
    .submit = noop_submit,
    .inflight = noop_inflight,
    .close = noop_close,
};
