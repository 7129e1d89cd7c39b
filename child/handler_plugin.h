/* handler_plugin.h: handler = plugin, a C handler loaded into the worker (the ABI is
 * include/streamfleet/plugin.h). The ops are in handler.h; this is what -t needs. */
#ifndef SF_HANDLER_PLUGIN_H
#define SF_HANDLER_PLUGIN_H

#include <stddef.h>

#include "common/conf.h"

/* Load pool p's plugin into this process, check its ABI version and entry points, run its
 * init() with the pool's plugin.* parameters, then its fini(). Returns 0, or -1 with the
 * reason in err. Runs plugin code: call it only in a process made for it (a forked checker),
 * never in the master. */
int handler_plugin_check(const struct pool_conf *p, char *err, size_t len);

#endif
