/* bench_redis.h: the hiredis steps the bench programs share: connecting, failing on a bad
 * reply, the entries of an XREADGROUP reply, and the XACK argument vector. Messages start with
 * the program's name (program_invocation_short_name: each binary is named after its file). */
#ifndef SF_TESTS_BENCH_BENCH_REDIS_H
#define SF_TESTS_BENCH_BENCH_REDIS_H

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A connection to host:port, or the program exits 1 saying why. */
static inline redisContext *bench_redis_connect(const char *host, int port)
{
    redisContext *rc = redisConnect(host, port);
    if (rc == NULL || rc->err) {
        fprintf(stderr, "%s: connect %s:%d: %s\n", program_invocation_short_name, host, port,
                rc ? rc->errstr : "no memory");
        exit(1);
    }
    return rc;
}

/* Exit 1 for a failed command: the error reply r when there is one, else the context's error. */
static inline void bench_redis_die(redisContext *rc, const char *what, const redisReply *r)
{
    fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what,
            r && r->type == REDIS_REPLY_ERROR ? r->str : rc->errstr);
    exit(1);
}

/* The entries of an XREADGROUP reply ([[key, [[id, [f, v, ...]], ...]]]), or NULL when nil. */
static inline const redisReply *bench_redis_entries(const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[0]->elements != 2 || r->element[0]->element[1]->type != REDIS_REPLY_ARRAY)
        return NULL;
    return r->element[0]->element[1];
}

/* The argument vector of `XACK stream group` with room for n ids from index 3 on (the caller
 * fills them, and their lengths, for each batch); exits 1 when out of memory. The vectors live
 * until the program exits. */
static inline void bench_redis_xack_args(const char *stream, const char *group, size_t n,
                                         const char ***ack, size_t **acklen)
{
    *ack = malloc((n + 3) * sizeof **ack);
    *acklen = malloc((n + 3) * sizeof **acklen);
    if (*ack == NULL || *acklen == NULL)
        exit(1);
    (*ack)[0] = "XACK";
    (*ack)[1] = stream;
    (*ack)[2] = group;
    (*acklen)[0] = 4;
    (*acklen)[1] = strlen(stream);
    (*acklen)[2] = strlen(group);
}

#endif
