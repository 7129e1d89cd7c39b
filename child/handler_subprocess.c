/* handler_subprocess.c: placeholder until the subprocess handler lands. */
#include "child/handler.h"
#include "common/log.h"

static struct handler *sub_open(struct child *c, const struct pool_conf *p)
{
    (void)c;
    log_errorx("pool %s: handler = subprocess is not built yet", p->name);
    return NULL;
}

const struct handler_ops handler_subprocess_ops = {
    .name = "subprocess",
    .open = sub_open,
};
