/* rediscli.c: the command-line tools' Redis connection. */
#include "supervisor/rediscli.h"

#include <stdio.h>

struct redis *rediscli_connect(const struct redis_addr *a, long timeout_ms, char *err, size_t errlen)
{
    char why[400];
    struct redis *r = redis_connect_blocking(a, timeout_ms, why, sizeof why);
    if (r == NULL)
        snprintf(err, errlen, "cannot connect to redis: %s", why);
    return r;
}
