/* handler_log.c: prints each message as one JSON line on stdout, then acknowledges it.
 * {"pool":"emails","stream":"s","id":"1-0","fields":{"type":"x","payload":"..."}}
 * Each line goes out in one write(2): lines up to PIPE_BUF bytes from different children
 * never interleave on a shared pipe. A write that fails leaves the message pending. */
#include "child/handler.h"
#include "common/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct handler {
    struct child *child;
    const struct pool_conf *pool;
    struct buf line;
};

static struct handler *log_open(struct child *c, const struct pool_conf *p)
{
    static struct handler h;
    h.child = c;
    h.pool = p;
    return &h;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void log_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    struct buf *b = &h->line;
    buf_reset(b);
    buf_adds(b, "{\"pool\":\"");
    buf_add_json_str(b, h->pool->name, strlen(h->pool->name));
    buf_adds(b, "\",\"stream\":\"");
    buf_add_json_str(b, m->stream, strlen(m->stream));
    buf_adds(b, "\",\"id\":\"");
    buf_add_json_str(b, m->id.p, m->id.len);
    buf_adds(b, "\",\"fields\":{");
    for (size_t i = 0; i < m->nf; i++) {
        buf_adds(b, i ? ",\"" : "\"");
        buf_add_json_str(b, m->f[2 * i].p, m->f[2 * i].len);
        buf_adds(b, "\":\"");
        buf_add_json_str(b, m->f[2 * i + 1].p, m->f[2 * i + 1].len);
        buf_addc(b, '"');
    }
    buf_adds(b, "}}\n");

    struct outcome o = { .disp = DISP_ACK, .retry_after_ms = -1, .seconds = -1 };
    if (write_all(STDOUT_FILENO, b->p, b->len) == -1) {
        o.disp = DISP_RETRY;
        o.error = "write to stdout failed";
    }
    ticket_done(t, &o);
}

static unsigned log_inflight(struct handler *h)
{
    (void)h;
    return 0;
}

static void log_close(struct handler *h)
{
    buf_release(&h->line);
}

const struct handler_ops handler_log_ops = {
    .name = "log",
    .open = log_open,
    .submit = log_submit,
    .inflight = log_inflight,
    .close = log_close,
};
