/* redismon.h: the master's own Redis connection, used to know whether Redis answers (PING
 * every second) for /health and /metrics. It runs on common/redis.c, driven by the
 * master's poll loop, so a frozen or unreachable Redis never stalls the loop: a PING
 * unanswered for 2 s marks Redis down and the connection is rebuilt. */
#ifndef SF_REDISMON_H
#define SF_REDISMON_H

#include <poll.h>
#include <stdbool.h>

#include "common/conf.h"

struct redismon;

/* How one stream of a pool stands in Redis (a pool of several streams has one each). */
struct redis_stream_stats {
    char *stream, *dlq;
    bool group_exists;
    long long length, pending, lag, oldest_pending_ms, dlq_length;  /* as below */
    long long pending_polled_ms;
};

/* How a pool's stream stands in Redis, from the master's periodic poll. A pool of several
 * streams: the figures below add its streams up (lag -1 when one is unknown; the oldest
 * pending entry of them all; each dead-letter stream counted once), streams[] has each. */
struct redis_pool_stats {
    char *name, *stream, *group, *dlq;
    bool known;                     /* polled at least once */
    bool group_exists;
    long long length;               /* XLEN */
    long long pending;              /* the group's pending entries */
    long long lag;                  /* entries not yet delivered to the group; -1: unknown */
    long long oldest_pending_ms;    /* Unix ms in the id of the oldest pending entry; -1: none */
    long long pending_polled_ms;    /* Unix ms when that was answered (its age then: the wait) */
    long long dlq_length;
    long long polled_ms;            /* Unix ms of the last poll's last reply: when these were true */
    /* The group's last-delivered-id at the last poll that found the group ("" before any):
     * kept while the group is missing, for workers that re-create it (sb_set_delivered). */
    char last_delivered[48];
    size_t nstreams;
    struct redis_stream_stats streams[CONF_STREAMS_MAX];
};

/* addr must outlive the monitor. Connects lazily, on the first redismon_tick(). */
struct redismon *redismon_open(const struct redis_addr *addr);
void redismon_free(struct redismon *m);
/* The same address, in a newer config (the old one is about to be freed). */
void redismon_set_addr(struct redismon *m, const struct redis_addr *addr);
/* Fill *pfd with the descriptor to wait on; returns 0 when there is none. */
int redismon_fds(struct redismon *m, struct pollfd *pfd);
/* Handle readiness (revents of the pollfd that redismon_fds gave, or 0) and timers. */
void redismon_run(struct redismon *m, short revents, long long now_ms);
/* Milliseconds until redismon_run() is due. */
long redismon_timeout_ms(struct redismon *m, long long now_ms);
bool redismon_up(const struct redismon *m);
/* Why Redis is not up (never holds the password). */
const char *redismon_error(const struct redismon *m);

/* Poll the streams of c's pools every c->poll_interval from now on (c may be freed after). */
void redismon_set_pools(struct redismon *m, const struct conf *c);
/* The last poll of pool name, or NULL when there is none yet. */
const struct redis_pool_stats *redismon_pool(const struct redismon *m, const char *name);

struct trim;
/* Run t's rounds (supervisor/trim.h) on this connection at every poll. t must outlive the
 * monitor; the monitor's end abandons t's rounds in flight. */
void redismon_set_trim(struct redismon *m, struct trim *t);

/* 1 when Redis keeps what it acknowledged (appendonly yes, maxmemory-policy noeviction), 0 when
 * it may lose or evict data (redismon_durability() says why), -1 while unknown. */
int redismon_durable(const struct redismon *m);
const char *redismon_durability(const struct redismon *m);

#endif
