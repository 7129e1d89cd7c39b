/* handler_http.c: placeholder until the HTTP delivery handler lands: a pool with
 * handler = http refuses to start, with a clear error, instead of pretending to deliver. */
#include "child/handler.h"
#include "common/log.h"

#include <stddef.h>

static struct handler *http_open(struct child *c, const struct pool_conf *p)
{
    (void)c;
    log_errorx("pool %s: handler = http is not available in this build", p->name);
    return NULL;
}

const struct handler_ops handler_http_ops = {
    .name = "http",
    .open = http_open,
};
