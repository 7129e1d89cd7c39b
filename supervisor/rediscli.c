/* rediscli.c: the command-line tools' Redis connection. */
#include "supervisor/rediscli.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>

struct redisContext *rediscli_connect(const struct redis_addr *a, long timeout_ms, char *err, size_t errlen)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    redisContext *rc = a->unix_path ? redisConnectUnixWithTimeout(a->unix_path, tv)
                                    : redisConnectWithTimeout(a->host, a->port, tv);
    if (rc == NULL || rc->err) {
        snprintf(err, errlen, "cannot connect to redis: %s", rc ? rc->errstr : "out of memory");
        if (rc)
            redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv);
    redisReply *r = NULL;
    if (a->password) {
        const char *argv[3] = { "AUTH", a->user ? a->user : a->password, a->password };
        size_t len[3] = { 4, strlen(argv[1]), strlen(argv[2]) };
        r = redisCommandArgv(rc, a->user ? 3 : 2, argv, len);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "redis refused our credentials: %s", r ? r->str : rc->errstr);
            goto fail;
        }
        freeReplyObject(r);
    }
    r = a->db ? redisCommand(rc, "SELECT %d", a->db) : redisCommand(rc, "PING");
    if (r == NULL || r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s", r ? r->str : rc->errstr);
        goto fail;
    }
    freeReplyObject(r);
    return rc;
fail:
    if (r)
        freeReplyObject(r);
    redisFree(rc);
    return NULL;
}
