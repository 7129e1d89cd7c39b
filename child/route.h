/* route.h: what a message must hold before any handler sees it (require_fields, the paths the
 * pool's keys name), and, in a pool with routes, which handler it goes to. */
#ifndef SF_ROUTE_H
#define SF_ROUTE_H

#include <stddef.h>

#include "child/handler.h"
#include "child/msg.h"
#include "common/conf.h"

/* Check m against pool p before it is handed over: every field of require_fields present,
 * every path (a name with a dot that is no field of its own) the pool's url, id_field,
 * body_field and created_field name resolves, and created_field holds a time. Returns 0 with
 * *created_ms set (created_field's time in ms since the epoch, or -1 without created_field),
 * or -1 with a one-line reason naming the field or path in err: the message is bad. */
int route_admit(const struct pool_conf *p, const struct msg *m, long long *created_ms, char *err,
                size_t errlen);

/* The handler of a routed pool (pool_conf.routed): it opens one handler per target (each
 * [handler:NAME] the pool uses, with that target as its pool_conf) and hands each message to
 * the one its type routes to (route_field's value: route.TYPE, else route.default), with the
 * message's own ticket, so the outcome goes from that handler to the worker directly. A
 * message with no route is dead-lettered no_route; one missing a path its target's keys name,
 * bad_message. Counts each message handed over by route (SB_ROUTE_FIRST + i, SB_ROUTE_LAST for
 * the default). */
extern const struct handler_ops handler_route_ops;

#endif
