/* redismon.c: the master's Redis connection on hiredis 0.14's async API, with a small
 * adapter to our poll loop: hiredis tells us through ev.addRead/addWrite which events it
 * wants, and we call redisAsyncHandleRead/Write when poll() reports them.
 *
 * hiredis frees the async context itself after a failed connect or a disconnect (right after
 * our callback returns): the callbacks forget the pointer, and only redismon_run() outside any
 * callback calls redisAsyncFree(). */
#include "supervisor/redismon.h"
#include "common/log.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PING_EVERY_MS 1000
#define PING_TIMEOUT_MS 2000
#define RECONNECT_MIN_MS 500
#define RECONNECT_MAX_MS 5000

enum { Q_XLEN, Q_GROUPS, Q_PENDING, Q_DLQ, Q_KINDS };

struct redismon {
    const struct redis_addr *addr;
    struct redis_pool_stats *pools;
    size_t npools;
    unsigned gen;                   /* bumped by redismon_set_pools: late replies are dropped */
    long poll_every_ms;
    long long next_poll_ms;
    redisAsyncContext *ac;
    bool want_read, want_write;
    bool connected;
    bool up;
    char error[256];
    char auth_error[256];
    long long ping_sent_ms;         /* 0: no PING outstanding */
    long long next_ping_ms;
    long long next_connect_ms;
    long backoff_ms;
    long long now;                  /* of the current redismon_run() */
    char appendonly[16];            /* CONFIG GET answers, "" until known */
    char policy[32];
    char durability[200];           /* why Redis may lose or evict our data, "" when it won't */
};

static void ev_add_read(void *p) { ((struct redismon *)p)->want_read = true; }
static void ev_del_read(void *p) { ((struct redismon *)p)->want_read = false; }
static void ev_add_write(void *p) { ((struct redismon *)p)->want_write = true; }
static void ev_del_write(void *p) { ((struct redismon *)p)->want_write = false; }
static void ev_cleanup(void *p)
{
    struct redismon *m = p;
    m->want_read = m->want_write = false;
}

static void set_down(struct redismon *m, const char *why)
{
    if (m->up || strcmp(m->error, why) != 0)
        log_warnx("redis is down: %s", why);
    m->up = false;
    snprintf(m->error, sizeof m->error, "%s", why);
}

static void schedule_reconnect(struct redismon *m)
{
    m->ac = NULL;
    m->connected = false;
    m->ping_sent_ms = 0;
    m->backoff_ms = m->backoff_ms ? m->backoff_ms * 2 : RECONNECT_MIN_MS;
    if (m->backoff_ms > RECONNECT_MAX_MS)
        m->backoff_ms = RECONNECT_MAX_MS;
    m->next_connect_ms = m->now + m->backoff_ms;
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redismon *m = ac->data;
    if (status != REDIS_OK) {
        set_down(m, ac->errstr[0] ? ac->errstr : "connect failed");
        schedule_reconnect(m);       /* hiredis frees ac after we return */
        return;
    }
    m->connected = true;
    m->backoff_ms = 0;
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct redismon *m = ac->data;
    if (m == NULL)                  /* we freed it ourselves */
        return;
    if (status != REDIS_OK)
        set_down(m, ac->errstr[0] ? ac->errstr : "connection lost");
    schedule_reconnect(m);
}

static void on_auth(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    struct redismon *m = priv;
    redisReply *reply = r;
    if (reply && reply->type == REDIS_REPLY_ERROR)
        snprintf(m->auth_error, sizeof m->auth_error, "authentication failed: %s", reply->str);
    else if (reply)
        m->auth_error[0] = '\0';
}

static void on_pong(redisAsyncContext *ac, void *r, void *priv)
{
    (void)ac;
    struct redismon *m = priv;
    redisReply *reply = r;
    if (reply == NULL)              /* the context is going away */
        return;
    m->ping_sent_ms = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        set_down(m, m->auth_error[0] ? m->auth_error : reply->str);
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

static void on_config(redisAsyncContext *ac, void *r, void *priv)
{
    struct redismon *m = ac->data;
    redisReply *reply = r;
    char *dst = priv;
    if (m == NULL || reply == NULL)
        return;
    size_t len = dst == m->appendonly ? sizeof m->appendonly : sizeof m->policy;
    if (reply->type == REDIS_REPLY_ARRAY && reply->elements == 2 && reply->element[1]->type == REDIS_REPLY_STRING)
        snprintf(dst, len, "%s", reply->element[1]->str);
    else
        snprintf(dst, len, "?");        /* CONFIG refused (renamed, ACL): unknown */
    judge_durability(m);
}

/* privdata of a stats reply: which pool, which query, of which generation of the pool list. */
static void *tag(const struct redismon *m, size_t idx, int kind)
{
    return (void *)(uintptr_t)(((uintptr_t)(m->gen & 0xffff) << 32) | (idx << 2) | (uintptr_t)kind);
}

static long long id_ms(const char *id)
{
    return id ? atoll(id) : -1;
}

static const redisReply *map_get(const redisReply *r, const char *key)
{
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i + 1 < r->elements; i += 2)
        if (r->element[i]->type == REDIS_REPLY_STRING && strcmp(r->element[i]->str, key) == 0)
            return r->element[i + 1];
    return NULL;
}

static void on_stats(redisAsyncContext *ac, void *r, void *priv)
{
    struct redismon *m = ac->data;
    redisReply *reply = r;
    if (m == NULL || reply == NULL)
        return;
    uintptr_t t = (uintptr_t)priv;
    size_t idx = (t & 0xffffffffu) >> 2;
    int kind = (int)(t & 3);
    if ((unsigned)(t >> 32) != (m->gen & 0xffff) || idx >= m->npools)
        return;
    struct redis_pool_stats *ps = &m->pools[idx];
    bool err = reply->type == REDIS_REPLY_ERROR;
    switch (kind) {
    case Q_XLEN:
        ps->length = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
        ps->known = true;
        break;
    case Q_DLQ:
        ps->dlq_length = reply->type == REDIS_REPLY_INTEGER ? reply->integer : 0;
        break;
    case Q_GROUPS:
        /* XINFO GROUPS: lag is nil when Redis cannot tell (after XDEL, in 7.0). */
        ps->pending = 0;
        ps->lag = -1;
        ps->group_exists = false;
        for (size_t i = 0; !err && reply->type == REDIS_REPLY_ARRAY && i < reply->elements; i++) {
            const redisReply *g = reply->element[i];
            const redisReply *name = map_get(g, "name");
            if (name == NULL || name->type != REDIS_REPLY_STRING || strcmp(name->str, ps->group) != 0)
                continue;
            const redisReply *pending = map_get(g, "pending");
            const redisReply *lag = map_get(g, "lag");
            const redisReply *last = map_get(g, "last-delivered-id");
            if (last && last->type == REDIS_REPLY_STRING)
                snprintf(ps->last_delivered, sizeof ps->last_delivered, "%s", last->str);
            ps->group_exists = true;
            ps->pending = pending && pending->type == REDIS_REPLY_INTEGER ? pending->integer : 0;
            ps->lag = lag && lag->type == REDIS_REPLY_INTEGER ? lag->integer : -1;
        }
        break;
    case Q_PENDING:
        /* XPENDING summary: [count, smallest id, greatest id, consumers]. */
        ps->oldest_pending_ms = -1;
        if (!err && reply->type == REDIS_REPLY_ARRAY && reply->elements >= 2 &&
            reply->element[1]->type == REDIS_REPLY_STRING)
            ps->oldest_pending_ms = id_ms(reply->element[1]->str);
        break;
    }
}

/* Ask Redis how each pool's stream stands. Replies land in on_stats(). */
static void poll_stats(struct redismon *m)
{
    for (size_t i = 0; i < m->npools; i++) {
        const struct redis_pool_stats *ps = &m->pools[i];
        redisAsyncCommand(m->ac, on_stats, tag(m, i, Q_XLEN), "XLEN %s", ps->stream);
        redisAsyncCommand(m->ac, on_stats, tag(m, i, Q_GROUPS), "XINFO GROUPS %s", ps->stream);
        redisAsyncCommand(m->ac, on_stats, tag(m, i, Q_PENDING), "XPENDING %s %s", ps->stream, ps->group);
        redisAsyncCommand(m->ac, on_stats, tag(m, i, Q_DLQ), "XLEN %s", ps->dlq);
    }
}

static void free_pools(struct redismon *m)
{
    for (size_t i = 0; i < m->npools; i++) {
        free(m->pools[i].name);
        free(m->pools[i].stream);
        free(m->pools[i].group);
        free(m->pools[i].dlq);
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

/* AUTH by argv: the password never goes through a format string. */
static void send_auth(struct redismon *m)
{
    const char *argv[3] = { "AUTH", m->addr->user ? m->addr->user : m->addr->password, m->addr->password };
    size_t len[3] = { 4, strlen(argv[1]), strlen(argv[2]) };
    redisAsyncCommandArgv(m->ac, on_auth, m, m->addr->user ? 3 : 2, argv, len);
}

static void connect_now(struct redismon *m)
{
    redisAsyncContext *ac = m->addr->unix_path ? redisAsyncConnectUnix(m->addr->unix_path)
                                               : redisAsyncConnect(m->addr->host, m->addr->port);
    if (ac == NULL) {
        set_down(m, "out of memory");
        schedule_reconnect(m);
        return;
    }
    if (ac->err) {
        set_down(m, ac->errstr);
        redisAsyncFree(ac);
        schedule_reconnect(m);
        return;
    }
    m->ac = ac;
    ac->data = m;
    ac->ev.data = m;
    ac->ev.addRead = ev_add_read;
    ac->ev.delRead = ev_del_read;
    ac->ev.addWrite = ev_add_write;
    ac->ev.delWrite = ev_del_write;
    ac->ev.cleanup = ev_cleanup;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    /* Commands queue until the connection is up. */
    if (m->addr->password)
        send_auth(m);
    if (m->addr->db)
        redisAsyncCommand(ac, NULL, NULL, "SELECT %d", m->addr->db);
    m->ping_sent_ms = m->now;
    m->next_ping_ms = m->now + PING_EVERY_MS;
    redisAsyncCommand(ac, on_pong, m, "PING");
    m->appendonly[0] = m->policy[0] = '\0';
    redisAsyncCommand(ac, on_config, m->appendonly, "CONFIG GET appendonly");
    redisAsyncCommand(ac, on_config, m->policy, "CONFIG GET maxmemory-policy");
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
    free_pools(m);
    if (m->ac) {
        m->ac->data = NULL;
        redisAsyncContext *ac = m->ac;
        m->ac = NULL;
        /* Callbacks run with NULL replies; on_disconnect sees data NULL and returns. */
        redisAsyncFree(ac);
    }
    free(m);
}

int redismon_fds(struct redismon *m, struct pollfd *pfd)
{
    if (m->ac == NULL || (!m->want_read && !m->want_write))
        return 0;
    pfd->fd = m->ac->c.fd;
    pfd->events = (short)((m->want_read ? POLLIN : 0) | (m->want_write ? POLLOUT : 0));
    pfd->revents = 0;
    return 1;
}

void redismon_run(struct redismon *m, short revents, long long now)
{
    m->now = now;
    if (m->ac && (revents & (POLLIN | POLLERR | POLLHUP)))
        redisAsyncHandleRead(m->ac);
    if (m->ac && (revents & POLLOUT))
        redisAsyncHandleWrite(m->ac);

    if (m->ac && m->ping_sent_ms && now - m->ping_sent_ms > PING_TIMEOUT_MS) {
        set_down(m, "no answer to PING within 2s");
        redisAsyncContext *ac = m->ac;
        ac->data = NULL;
        redisAsyncFree(ac);
        schedule_reconnect(m);
        return;
    }
    if (m->ac == NULL) {
        if (now >= m->next_connect_ms)
            connect_now(m);
        return;
    }
    if (m->connected && m->up && m->npools && now >= m->next_poll_ms) {
        m->next_poll_ms = now + m->poll_every_ms;
        poll_stats(m);
    }
    if (m->connected && m->ping_sent_ms == 0 && now >= m->next_ping_ms) {
        m->ping_sent_ms = now;
        m->next_ping_ms = now + PING_EVERY_MS;
        if (m->addr->password && m->auth_error[0])
            send_auth(m);       /* try again: an ACL may have been fixed */
        redisAsyncCommand(m->ac, on_pong, m, "PING");
    }
}

long redismon_timeout_ms(struct redismon *m, long long now)
{
    long long due;
    if (m->ac == NULL)
        due = m->next_connect_ms;
    else if (m->ping_sent_ms)
        due = m->ping_sent_ms + PING_TIMEOUT_MS + 1;
    else
        due = m->next_ping_ms;
    if (m->ac && m->up && m->npools && m->next_poll_ms < due)
        due = m->next_poll_ms;
    return due <= now ? 0 : (long)(due - now);
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

void redismon_set_addr(struct redismon *m, const struct redis_addr *addr)
{
    m->addr = addr;
}
