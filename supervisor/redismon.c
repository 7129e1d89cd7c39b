/* redismon.c: the master's Redis connection, a user of common/redis.c's non-blocking client
 * driven by the master's poll loop: PING every second with a 2 s deadline (a frozen Redis
 * drops the connection and the client reconnects with backoff), CONFIG GET once per
 * connection for the durability check, and the pools' stream figures every poll_interval.
 * Commands are queued only while the client has a connection; each callback runs exactly
 * once, with an error reply when the connection went away. */
#include "supervisor/redismon.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/redis.h"
#include "supervisor/trim.h"

#include <assert.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PING_EVERY_MS 1000
#define PING_TIMEOUT_MS 2000
#define STATS_TIMEOUT_MS 5000
#define RECONNECT_MIN_MS 500
#define RECONNECT_MAX_MS 5000

enum { Q_XLEN, Q_GROUPS, Q_PENDING, Q_DLQ, Q_KINDS };

struct redismon {
    const struct redis_addr *addr;
    struct redis *rc;               /* NULL until the first redismon_run() */
    struct redis_pool_stats *pools;
    size_t npools;
    unsigned gen;                   /* bumped by redismon_set_pools: late replies are dropped */
    long poll_every_ms;
    long long next_poll_ms;
    /* The tags of the stats commands in flight, oldest first: their replies come in order. */
    uintptr_t *tags;
    size_t tag_head, tag_len, tag_cap;
    bool up;
    bool ping_out;                  /* a PING is in flight */
    bool config_asked;              /* on this connection */
    unsigned config_drops;          /* redis_drops() when it was asked */
    char error[400];
    long long next_ping_ms;
    char appendonly[16];            /* CONFIG GET answers, "" until known */
    char policy[32];
    char durability[200];           /* why Redis may lose or evict our data, "" when it won't */
    struct trim *trim;              /* the master's, run at each poll; NULL: none */
};

static void set_down(struct redismon *m, const char *why)
{
    if (m->up || strcmp(m->error, why) != 0)
        log_warnx("redis is down: %s", why);
    m->up = false;
    snprintf(m->error, sizeof m->error, "%s", why);
}

/* A reply that means the connection went away (the next one will ask CONFIG again). */
static bool conn_lost(const struct redis_reply *v)
{
    return v->type == REDIS_T_ERROR && (v->err == REDIS_E_IO || v->err == REDIS_E_TIMEOUT ||
                                        v->err == REDIS_E_TOOBIG || v->err == REDIS_E_PROTO ||
                                        v->err == REDIS_E_AUTH);
}

static void on_pong(void *arg, const struct redis_reply *v)
{
    struct redismon *m = arg;
    m->ping_out = false;
    if (conn_lost(v))
        m->config_asked = false;
    if (v->type == REDIS_T_ERROR) {
        set_down(m, v->err == REDIS_E_TIMEOUT ? "no answer to PING within 2s" : v->str);
        return;
    }
    if (!m->up)
        log_info("redis is up");
    m->up = true;
    m->error[0] = '\0';
}

/* At-least-once needs Redis to keep what it acknowledged: AOF on and no eviction. Debian's
 * redis-server ships RDB-only, where a crash can lose a whole consumer group. */
static void judge_durability(struct redismon *m)
{
    if (!m->appendonly[0] || !m->policy[0])
        return;
    char was[sizeof m->durability];
    snprintf(was, sizeof was, "%s", m->durability);
    m->durability[0] = '\0';
    if (strcmp(m->appendonly, "yes") != 0)
        snprintf(m->durability, sizeof m->durability,
                 "appendonly is %s: a redis crash can lose acknowledged messages and the consumer group",
                 m->appendonly);
    else if (strcmp(m->policy, "noeviction") != 0)
        snprintf(m->durability, sizeof m->durability,
                 "maxmemory-policy is %s: redis may evict streams and pending lists", m->policy);
    if (m->durability[0] && strcmp(was, m->durability) != 0)
        log_warnx("REDIS IS NOT DURABLE: %s (set appendonly yes and maxmemory-policy noeviction)",
                  m->durability);
}

static void on_config(struct redismon *m, const struct redis_reply *v, char *dst, size_t len)
{
    if (conn_lost(v)) {
        m->config_asked = false;
        return;
    }
    if (v->type == REDIS_T_ARRAY && v->elements == 2 && v->element[1]->type == REDIS_T_STRING)
        snprintf(dst, len, "%s", v->element[1]->str);
    else
        snprintf(dst, len, "?");        /* CONFIG refused (renamed, ACL): unknown */
    judge_durability(m);
}

static void on_appendonly(void *arg, const struct redis_reply *v)
{
    struct redismon *m = arg;
    on_config(m, v, m->appendonly, sizeof m->appendonly);
}

static void on_policy(void *arg, const struct redis_reply *v)
{
    struct redismon *m = arg;
    on_config(m, v, m->policy, sizeof m->policy);
}

/* The tag of a stats command: which pool, which of its streams, which query, of which
 * generation of the pool list. */
static uintptr_t tag(const struct redismon *m, size_t idx, size_t stream, int kind)
{
    return ((uintptr_t)(m->gen & 0xffff) << 32) | (idx << 9) | (stream << 3) | (uintptr_t)kind;
}
/* 6 bits of stream index in a tag, 3 of kind. */
static_assert(CONF_STREAMS_MAX <= 64, "a tag holds a stream index of 6 bits");

/* The pool's figures from its streams' (one stream: the same figures). */
static void add_up(struct redis_pool_stats *ps)
{
    ps->length = ps->pending = ps->dlq_length = 0;
    ps->lag = 0;
    ps->oldest_pending_ms = -1;
    ps->group_exists = true;
    for (size_t k = 0; k < ps->nstreams; k++) {
        const struct redis_stream_stats *s = &ps->streams[k];
        ps->length += s->length;
        ps->pending += s->pending;
        ps->lag = ps->lag < 0 || s->lag < 0 ? -1 : ps->lag + s->lag;
        if (s->oldest_pending_ms >= 0 && (ps->oldest_pending_ms < 0 || s->oldest_pending_ms < ps->oldest_pending_ms))
            ps->oldest_pending_ms = s->oldest_pending_ms;
        if (s->pending_polled_ms > ps->pending_polled_ms)
            ps->pending_polled_ms = s->pending_polled_ms;
        ps->group_exists = ps->group_exists && s->group_exists;
        bool counted = false;           /* dlq = one for all: counted once */
        for (size_t j = 0; j < k; j++)
            counted = counted || strcmp(ps->streams[j].dlq, s->dlq) == 0;
        if (!counted)
            ps->dlq_length += s->dlq_length;
    }
}

static void tag_push(struct redismon *m, uintptr_t t)
{
    if (m->tag_head + m->tag_len == m->tag_cap) {
        if (m->tag_head) {
            memmove(m->tags, m->tags + m->tag_head, m->tag_len * sizeof *m->tags);
            m->tag_head = 0;
        } else {
            m->tag_cap = m->tag_cap ? m->tag_cap * 2 : 64;
            m->tags = xrealloc(m->tags, m->tag_cap * sizeof *m->tags);
        }
    }
    m->tags[m->tag_head + m->tag_len++] = t;
}

static long long id_ms(const char *id)
{
    return id ? atoll(id) : -1;
}

static void on_stats(void *arg, const struct redis_reply *reply)
{
    struct redismon *m = arg;
    if (m->tag_len == 0)
        return;
    uintptr_t t = m->tags[m->tag_head++];
    if (--m->tag_len == 0)
        m->tag_head = 0;
    size_t idx = (t & 0xffffffffu) >> 9;
    size_t k = (t >> 3) & 63;
    int kind = (int)(t & 7);
    if ((unsigned)(t >> 32) != (m->gen & 0xffff) || idx >= m->npools || k >= m->pools[idx].nstreams)
        return;
    struct redis_pool_stats *pool = &m->pools[idx];
    struct redis_stream_stats *ps = &pool->streams[k];
    bool err = reply->type == REDIS_T_ERROR;
    switch (kind) {
    case Q_XLEN:
        ps->length = reply->type == REDIS_T_INTEGER ? reply->integer : 0;
        pool->known = true;
        break;
    case Q_DLQ: {
        ps->dlq_length = reply->type == REDIS_T_INTEGER ? reply->integer : 0;
        /* The last of a pool's replies (its last stream's dlq): `streamfleet status` says how
         * old the figures are (a Redis that stopped answering leaves them as they were). */
        if (k + 1 == pool->nstreams)
            pool->polled_ms = clock_wall_ms();
        break;
    }
    case Q_GROUPS:
        /* XINFO GROUPS: lag is nil when Redis cannot tell (after XDEL, in 7.0). */
        ps->pending = 0;
        ps->lag = -1;
        ps->group_exists = false;
        for (size_t i = 0; !err && reply->type == REDIS_T_ARRAY && i < reply->elements; i++) {
            const struct redis_reply *g = reply->element[i];
            const struct redis_reply *name = redis_reply_map_get(g, "name");
            if (name == NULL || name->type != REDIS_T_STRING || strcmp(name->str, pool->group) != 0)
                continue;
            const struct redis_reply *pending = redis_reply_map_get(g, "pending");
            const struct redis_reply *lag = redis_reply_map_get(g, "lag");
            const struct redis_reply *last = redis_reply_map_get(g, "last-delivered-id");
            /* The workers re-create a lost group of the first stream there (sb_set_delivered). */
            if (k == 0 && last && last->type == REDIS_T_STRING)
                snprintf(pool->last_delivered, sizeof pool->last_delivered, "%s", last->str);
            ps->group_exists = true;
            ps->pending = pending && pending->type == REDIS_T_INTEGER ? pending->integer : 0;
            ps->lag = lag && lag->type == REDIS_T_INTEGER ? lag->integer : -1;
        }
        break;
    case Q_PENDING:
        /* XPENDING summary: [count, smallest id, greatest id, consumers]. */
        ps->oldest_pending_ms = -1;
        ps->pending_polled_ms = clock_wall_ms();
        if (!err && reply->type == REDIS_T_ARRAY && reply->elements >= 2 &&
            reply->element[1]->type == REDIS_T_STRING)
            ps->oldest_pending_ms = id_ms(reply->element[1]->str);
        break;
    }
    add_up(pool);
}

/* Ask Redis how each pool's stream stands. Replies land in on_stats(). */
static void poll_stats(struct redismon *m)
{
    for (size_t i = 0; i < m->npools; i++) {
        const struct redis_pool_stats *pool = &m->pools[i];
        for (size_t k = 0; k < pool->nstreams; k++) {
            const struct redis_stream_stats *ps = &pool->streams[k];
            if (redis_commandv(m->rc, on_stats, m, STATS_TIMEOUT_MS, "XLEN", ps->stream, NULL) == 0)
                tag_push(m, tag(m, i, k, Q_XLEN));
            if (redis_commandv(m->rc, on_stats, m, STATS_TIMEOUT_MS, "XINFO", "GROUPS", ps->stream, NULL) == 0)
                tag_push(m, tag(m, i, k, Q_GROUPS));
            if (redis_commandv(m->rc, on_stats, m, STATS_TIMEOUT_MS, "XPENDING", ps->stream, pool->group, NULL) == 0)
                tag_push(m, tag(m, i, k, Q_PENDING));
            if (redis_commandv(m->rc, on_stats, m, STATS_TIMEOUT_MS, "XLEN", ps->dlq, NULL) == 0)
                tag_push(m, tag(m, i, k, Q_DLQ));
        }
    }
}

static void free_pools(struct redismon *m)
{
    for (size_t i = 0; i < m->npools; i++) {
        free(m->pools[i].name);
        free(m->pools[i].stream);
        free(m->pools[i].group);
        free(m->pools[i].dlq);
        for (size_t k = 0; k < m->pools[i].nstreams; k++) {
            free(m->pools[i].streams[k].stream);
            free(m->pools[i].streams[k].dlq);
        }
    }
    free(m->pools);
    m->pools = NULL;
    m->npools = 0;
}

void redismon_set_pools(struct redismon *m, const struct conf *c)
{
    free_pools(m);
    m->gen++;
    m->npools = c->npools;
    m->pools = xcalloc(c->npools ? c->npools : 1, sizeof *m->pools);
    for (size_t i = 0; i < c->npools; i++) {
        m->pools[i].name = xstrdup(c->pools[i].name);
        m->pools[i].stream = xstrdup(c->pools[i].stream);
        m->pools[i].group = xstrdup(c->pools[i].group);
        m->pools[i].dlq = xstrdup(c->pools[i].dlq);
        m->pools[i].lag = -1;
        m->pools[i].oldest_pending_ms = -1;
        const struct pool_conf *p = &c->pools[i];
        size_t n = p->nstreams && p->streams ? p->nstreams : 1;
        m->pools[i].nstreams = n;
        for (size_t k = 0; k < n; k++) {
            struct redis_stream_stats *s = &m->pools[i].streams[k];
            s->stream = xstrdup(n > 1 ? p->streams[k] : p->stream);
            s->dlq = xstrdup(n > 1 ? p->dlqs[k] : p->dlq);
            s->lag = -1;
            s->oldest_pending_ms = -1;
        }
    }
    m->poll_every_ms = c->poll_interval_ms;
    m->next_poll_ms = 0;
}

const struct redis_pool_stats *redismon_pool(const struct redismon *m, const char *name)
{
    for (size_t i = 0; i < m->npools; i++)
        if (strcmp(m->pools[i].name, name) == 0)
            return m->pools[i].known ? &m->pools[i] : NULL;
    return NULL;
}

static void open_client(struct redismon *m)
{
    struct redis_opts o = {
        .connect_timeout_ms = PING_TIMEOUT_MS,
        .backoff_min_ms = RECONNECT_MIN_MS,
        .backoff_max_ms = RECONNECT_MAX_MS,
        .client_name = "streamfleet-master",
    };
    m->rc = redis_open(m->addr, &o);
    m->config_asked = false;
    m->ping_out = false;
}

struct redismon *redismon_open(const struct redis_addr *addr)
{
    struct redismon *m = xcalloc(1, sizeof *m);
    m->addr = addr;
    snprintf(m->error, sizeof m->error, "not connected yet");
    return m;
}

void redismon_free(struct redismon *m)
{
    if (m == NULL)
        return;
    redis_free(m->rc);              /* drops queued commands without their callbacks */
    if (m->trim)
        trim_abandon(m->trim);
    free_pools(m);
    free(m->tags);
    free(m);
}

int redismon_fds(struct redismon *m, struct pollfd *pfd)
{
    if (m->rc == NULL || redis_fd(m->rc) < 0)
        return 0;
    pfd->fd = redis_fd(m->rc);
    pfd->events = redis_events(m->rc);
    pfd->revents = 0;
    return 1;
}

void redismon_run(struct redismon *m, short revents, long long now)
{
    if (m->rc == NULL)
        open_client(m);
    redis_run(m->rc, revents, now);
    /* A connection dropped while idle (CLIENT KILL, a restart between two PINGs) gets no
     * error reply of ours: its count tells that the new one must be asked again. */
    if (m->config_asked && redis_drops(m->rc) != m->config_drops)
        m->config_asked = false;
    if (!m->config_asked && redis_ready(m->rc)) {
        m->config_drops = redis_drops(m->rc);
        m->appendonly[0] = m->policy[0] = '\0';
        m->config_asked =
            redis_commandv(m->rc, on_appendonly, m, STATS_TIMEOUT_MS, "CONFIG", "GET", "appendonly", NULL) == 0 &&
            redis_commandv(m->rc, on_policy, m, STATS_TIMEOUT_MS, "CONFIG", "GET", "maxmemory-policy", NULL) == 0;
    }
    if (m->up && m->npools && now >= m->next_poll_ms) {
        m->next_poll_ms = now + m->poll_every_ms;
        poll_stats(m);
        if (m->trim)
            trim_poll(m->trim, m->rc);
    }
    if (!m->ping_out && now >= m->next_ping_ms) {
        m->next_ping_ms = now + PING_EVERY_MS;
        if (redis_commandv(m->rc, on_pong, m, PING_TIMEOUT_MS, "PING", NULL) == 0)
            m->ping_out = true;
        else
            set_down(m, redis_error(m->rc));    /* waiting to reconnect: why */
    }
}

long redismon_timeout_ms(struct redismon *m, long long now)
{
    long long due = m->ping_out ? -1 : m->next_ping_ms;
    if (m->up && m->npools && (due == -1 || m->next_poll_ms < due))
        due = m->next_poll_ms;
    long t = due == -1 ? -1 : due <= now ? 0 : (long)(due - now);
    long c = m->rc ? redis_timeout_ms(m->rc, now) : 0;
    if (c >= 0 && (t < 0 || c < t))
        t = c;
    return t < 0 ? 1000 : t;
}

bool redismon_up(const struct redismon *m)
{
    return m->up;
}

const char *redismon_error(const struct redismon *m)
{
    return m->error;
}

int redismon_durable(const struct redismon *m)
{
    if (!m->appendonly[0] || !m->policy[0] || m->appendonly[0] == '?' || m->policy[0] == '?')
        return -1;
    return m->durability[0] ? 0 : 1;
}

const char *redismon_durability(const struct redismon *m)
{
    return m->durability;
}

void redismon_set_trim(struct redismon *m, struct trim *t)
{
    m->trim = t;
}

void redismon_set_addr(struct redismon *m, const struct redis_addr *addr)
{
    m->addr = addr;
}
