/* handler.h: what a child does with each message. A handler receives messages one at a time
 * through submit() and reports each one's outcome exactly once through child_done(), either
 * before submit() returns (log, noop) or later from run() (http, which keeps many deliveries
 * in flight). The child's loop polls the handler's descriptors together with Redis. */
#ifndef SF_HANDLER_H
#define SF_HANDLER_H

#include <poll.h>
#include <stdbool.h>

#include "child/msg.h"
#include "common/conf.h"

struct child;
struct handler;

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
    double seconds;          /* how long handling took; < 0: the child measures submit() */
    long long attempt;       /* the msg's attempt (copy msg->attempt); 0: unknown, taken as 1 */
    bool outage;             /* DISP_RETRY because the endpoint is down (circuit breaker):
                              * the attempt does not count towards the message's limit */
};

struct handler_ops {
    const char *name;
    /* Build the handler for pool p. Returns NULL with a logged reason when it cannot work. */
    struct handler *(*open)(struct child *c, const struct pool_conf *p);
    void (*submit)(struct handler *h, const struct msg *m);
    /* Add the descriptors to wait on to pfd (at most max) and lower *timeout_ms to the
     * handler's next deadline. Returns how many it added. NULL for synchronous handlers. */
    int (*fds)(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms);
    /* Do the work that poll() found ready (pfd: what fds() added, with revents). */
    void (*run)(struct handler *h, const struct pollfd *pfd, int n);
    /* Messages submitted and not yet done. */
    unsigned (*inflight)(struct handler *h);
    /* Whether it takes new messages now (false while a circuit breaker is open). */
    bool (*accepting)(struct handler *h);
    void (*close)(struct handler *h);
};

extern const struct handler_ops handler_log_ops;
extern const struct handler_ops handler_noop_ops;
extern const struct handler_ops handler_http_ops;

/* Report the outcome of message id (a NUL-terminated entry id). Called by handlers. */
void child_done(struct child *c, const char *id, const struct outcome *o);
/* The child's scoreboard slot, for handler-specific counters (HTTP codes, durations). */
struct sb_slot *child_slot(struct child *c);

#endif
