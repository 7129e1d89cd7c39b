/* plugincheck.h: -t's check of handler = plugin pools, each in a forked process, so that the
 * master never runs plugin code. */
#ifndef SF_PLUGINCHECK_H
#define SF_PLUGINCHECK_H

#include <stddef.h>

#include "common/conf.h"

/* For each pool with handler = plugin, fork a checker that loads the plugin and runs its
 * init() and fini() (as [fleet] user when started as root, like a worker). Prints each
 * failure on stderr as "FILE:LINE: [pool:NAME] plugin PATH: reason" (the line of its
 * `plugin =` key). Returns the number of failures. */
size_t plugincheck_conf(const struct conf *c);
/* For a reload from old to c: check, the same way, each plugin pool of c that is new or whose
 * settings changed, and log each failure (log_errorx, "reload: FILE:LINE: ..."). The master
 * waits for the checkers (each at most 10 s). Returns the number of failures. */
size_t plugincheck_reload(const struct conf *old, const struct conf *c);
/* For watch = yes: check, the same way, the plugins of pool (of c) as they are on disk now,
 * and log each failure (log_errorx, "watch: FILE:LINE: ..."). Returns the number of failures. */
size_t plugincheck_pool(const struct conf *c, const struct pool_conf *pool);

#endif
