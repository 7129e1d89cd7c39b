/* rediscli.h: a synchronous Redis connection for the short-lived command-line tools
 * (`streamfleet dlq`, `streamfleet status` when the master does not answer). */
#ifndef SF_REDISCLI_H
#define SF_REDISCLI_H

#include <stddef.h>

#include "common/conf.h"

struct redisContext;

/* Connect to a with a timeout for the connection and every command, AUTH (by argv: the
 * password never goes through a format string) and SELECT. Returns the context (free with
 * redisFree()) or NULL with err filled (never holding the password). */
struct redisContext *rediscli_connect(const struct redis_addr *a, long timeout_ms, char *err, size_t errlen);

#endif
