/* rediscli.h: the Redis connection of the short-lived command-line tools (`streamfleet dlq`,
 * `streamfleet status` when the master does not answer), on common/redis.c's blocking helper:
 * TCP, unix socket or TLS (rediss://), as the config says. */
#ifndef SF_REDISCLI_H
#define SF_REDISCLI_H

#include <stddef.h>

#include "common/conf.h"
#include "common/redis.h"

/* Connect to a within timeout_ms, with AUTH (the password never goes through a format string)
 * and SELECT answered. Returns the client (free with redis_free(); run commands with
 * redis_call()) or NULL with err filled (never holding the password). */
struct redis *rediscli_connect(const struct redis_addr *a, long timeout_ms, char *err, size_t errlen);

#endif
