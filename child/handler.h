/* handler.h: what a child does with each message, and the contract between a handler and the
 * worker that feeds it.
 *
 * The worker hands a handler one message at a time through submit(), with a ticket. The
 * handler does its work (at once, or over many turns of the worker's poll() loop through
 * fds() and run()) and reports the message's outcome by calling ticket_done() with that
 * ticket, exactly once. The handler sees messages and tickets, never the worker's state: it
 * does not talk to Redis, count, or touch the scoreboard. What Redis is told (XACK, a retry,
 * a dead-letter move, a done-marker) and what is counted is the worker's alone, from the
 * outcome. Anything a handler learns that is about no one message (an endpoint going down)
 * it reports with child_event().
 *
 * Tickets:
 * - A ticket is opaque. It is valid from submit() until the handler's ticket_done() call on it
 *   returns; after that the handler must not use it (the worker reuses it).
 * - ticket_done() is called exactly once per ticket: from inside submit() (a handler that
 *   decides at once: log, noop, a bad message), or later from run() (http: when its delivery
 *   ends). Never from fds(), inflight(), accepting(), or close(), and never twice.
 * - ticket_done() calls nothing back into the handler (no submit(), no close()): a handler
 *   is never re-entered from its own call, and may call it with its state half updated.
 * - The struct outcome and the strings it points to need live only during the call: the
 *   worker copies what it keeps.
 *
 * Messages: a struct msg and everything it points to belong to the worker's batch and are
 * valid only during submit(): a handler that needs anything later copies it (msg.h).
 *
 * Closing: close() is called once, when the worker exits. Tickets the handler still holds
 * then are abandoned without an outcome: their messages stay pending in Redis under this
 * consumer and are delivered again (our pending-list read on the next start, or another
 * worker's orphan scan). close() frees the handler and calls neither ticket_done() nor
 * child_event(). */
#ifndef SF_HANDLER_H
#define SF_HANDLER_H

#include <poll.h>
#include <stdbool.h>

#include "child/msg.h"
#include "common/conf.h"

struct child;
struct handler;
struct ticket;

enum disposition {
    DISP_ACK,        /* handled: XACK */
    DISP_RETRY,      /* transient failure: stays pending, tried again later */
    DISP_DEAD,       /* permanent failure or bad message: dead-letter, no retry */
};

struct outcome {
    enum disposition disp;
    const char *reason;      /* DISP_DEAD: "http_422", "bad_message", ... */
    long retry_after_ms;     /* DISP_RETRY: the endpoint's Retry-After, or -1 */
    const char *error;       /* a short text of what went wrong, or NULL */
    double seconds;          /* how long handling took; < 0: the worker measures submit() */
    bool outage;             /* DISP_RETRY because the endpoint is down (circuit breaker):
                              * the attempt does not count towards the message's limit */
    struct {
        bool done;           /* an HTTP request was made for this outcome (the rest is set) */
        long status;         /* its status, 0 when no answer came (refused, timeout, TLS) */
        double seconds;      /* how long the request took */
    } http;
};

/* Ticket-less news from a handler, for the status page. */
enum handler_event {
    HANDLER_CIRCUIT_OPEN,    /* the endpoint is down: text says why */
    HANDLER_CIRCUIT_CLOSED,  /* it answers again (text unused) */
};

struct handler_ops {
    const char *name;
    /* Build the handler for pool p, on behalf of worker c (opaque: only for child_event()).
     * Returns NULL with a logged reason when it cannot work. */
    struct handler *(*open)(struct child *c, const struct pool_conf *p);
    /* Take message m (valid only during the call) and its ticket (valid until its
     * ticket_done()). Must not block. */
    void (*submit)(struct handler *h, const struct msg *m, struct ticket *t);
    /* Add the descriptors to wait on to pfd (at most max) and lower *timeout_ms to the
     * handler's next deadline. Returns how many it added. NULL for synchronous handlers. */
    int (*fds)(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms);
    /* Do the work that poll() found ready (pfd: what fds() added, with revents). */
    void (*run)(struct handler *h, const struct pollfd *pfd, int n);
    /* Tickets held: submitted and not yet done. */
    unsigned (*inflight)(struct handler *h);
    /* Whether it takes new messages now (false while a circuit breaker is open). NULL:
     * always. */
    bool (*accepting)(struct handler *h);
    /* Free the handler; tickets still held are abandoned (see above). */
    void (*close)(struct handler *h);
};

extern const struct handler_ops handler_log_ops;
extern const struct handler_ops handler_noop_ops;
extern const struct handler_ops handler_http_ops;
extern const struct handler_ops handler_plugin_ops;
extern const struct handler_ops handler_exec_ops;
extern const struct handler_ops handler_subprocess_ops;

/* The handler of kind k (child/route.c: an inline handler and a [handler:NAME] alike). */
const struct handler_ops *handler_ops_for(enum handler_kind k);

/* Report the outcome of the message of ticket t, exactly once (see the contract above). */
void ticket_done(struct ticket *t, const struct outcome *o);
/* Report news about no one message (text: may be NULL, copied). */
void child_event(struct child *c, enum handler_event e, const char *text);

#endif
