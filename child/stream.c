/* stream.c: a child's Redis commands, on our client (common/redis.c): one connection, opened
 * by stream_connect() and never reconnected in place (no_reconnect): the child schedules
 * reconnects itself, with its backoff. Each command is built here and queued with a deadline
 * (a frozen Redis is found by it, never waited for); its reply is parsed here and handed to
 * the caller's callback while the child's loop polls. Nothing here blocks. */
#include "child/stream.h"
#include "common/log.h"
#include "common/redis.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONNECT_MS 2000         /* TCP connect plus TLS handshake */

void idlist_add(struct idlist *l, const char *id)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->id = xrealloc(l->id, l->cap * sizeof *l->id);
    }
    /* On the per-message path: a plain copy, no formatting. */
    size_t n = strnlen(id, STREAM_ID_MAX - 1);
    memcpy(l->id[l->n], id, n);
    l->id[l->n++][n] = '\0';
}

void idlist_release(struct idlist *l)
{
    free(l->id);
    l->id = NULL;
    l->n = l->cap = 0;
}

void stream_init(struct stream *s, const struct redis_addr *addr, const struct pool_conf *p,
                 const char *consumer)
{
    memset(s, 0, sizeof *s);
    s->addr = addr;
    s->key = p->stream;
    s->group = p->group;
    s->block_ms = p->block_ms;
    s->start_latest = p->group_start_latest;
    s->max_message_bytes = p->max_message_bytes;
    snprintf(s->consumer, sizeof s->consumer, "%s", consumer);
}

void stream_use(struct stream *s, const char *key)
{
    s->key = key;
}

static void set_err(struct stream *s, enum stream_error e, const char *what, const char *detail)
{
    s->err = e;
    snprintf(s->errstr, sizeof s->errstr, "%s: %s", what, detail);
}

/* Deadline of a command: as long as the longest BLOCK and then some. A frozen Redis is found
 * by it and the connection dropped; nothing waits for it meanwhile. */
static long command_ms(const struct stream *s)
{
    return (s->block_ms > 0 ? s->block_ms : 0) + 5000;
}

/* What a failed command means to the child. OOM is a plain error reply here: only the
 * creation of the group makes it SERR_OOM (stream_create_group), for the other writes
 * (a done-marker, a dead letter) it says nothing about the group. */
static enum stream_error error_kind(const struct redis_reply *v)
{
    switch (v->err) {
    case REDIS_E_IO:
    case REDIS_E_TIMEOUT:
    case REDIS_E_PROTO:
        return SERR_IO;
    case REDIS_E_TOOBIG:
        return SERR_OVERSIZE;
    case REDIS_E_AUTH:
        return SERR_AUTH;
    case REDIS_E_NOGROUP:
        return SERR_NOGROUP;
    case REDIS_E_WRONGTYPE:
        return SERR_WRONGTYPE;
    default:
        break;
    }
    /* Redis 7.0 tells a reader blocked on a stream that was deleted "UNBLOCKED the stream key
     * no longer exists": the group went with it, exactly as NOGROUP says (a destroyed group
     * answers NOGROUP itself). Any other UNBLOCKED ("client unblocked via CLIENT UNBLOCK",
     * "force unblock from blocking operation, instance state changed (master -> replica?)")
     * says nothing about the group: treat it as a connection event, keeping what waits. */
    if (v->str && strncmp(v->str, "UNBLOCKED", 9) == 0)
        return strstr(v->str, "no longer exists") || strstr(v->str, "destroyed") ? SERR_NOGROUP : SERR_IO;
    return SERR_REPLY;
}

/* The error of a reply that is not the one expected: an error reply says why. */
static void set_reply_err(struct stream *s, const char *what, const struct redis_reply *v)
{
    if (v->type == REDIS_T_ERROR)
        set_err(s, error_kind(v), what, v->str);
    else
        set_err(s, SERR_REPLY, what, "unexpected reply");
}

/* Drop the connection but keep the batch being handled: its messages point into s->arena. */
static void drop(struct stream *s)
{
    redis_free(s->rc);
    s->rc = NULL;
    s->expect = 0;
}

/* A deep copy of v into the batch's arena: a reply handed to a callback lives only as long as
 * the callback, and the batch's messages point into it until stream_batch_release(). */
static struct redis_reply *copy_reply(struct arena *a, const struct redis_reply *v)
{
    struct redis_reply *d = arena_alloc(a, sizeof *d);
    *d = *v;
    if (v->str)
        d->str = arena_strndup(a, v->str, v->len);
    if (v->elements) {
        struct redis_reply **e = arena_alloc(a, v->elements * sizeof *e);
        for (size_t i = 0; i < v->elements; i++)
            e[i] = v->element[i] ? copy_reply(a, v->element[i]) : NULL;
        d->element = e;
    }
    return d;
}

/* ---- commands on the wire -------------------------------------------------------------- */

/* A command of ours on the wire, until its reply (or its failure) has been handled. Listed in
 * s->ops so that a connection we drop ourselves (redis_free() calls nobody back) still ends
 * each one: every command's completion runs exactly once, whatever happens to the connection. */
struct stream_op {
    struct stream *s;
    struct stream_op *prev, *next;
    const char *what;
    /* The reply, or NULL when the command failed (s->err, s->errstr say why). */
    void (*on_reply)(struct stream_op *op, const struct redis_reply *v);
    /* For on_reply = op_done: turn a reply into s's state first (-1: malformed, s->err). */
    int (*parse)(struct stream *s, const struct redis_reply *v);
    const char *key;            /* the stream it is about (s->key when it was sent) */
    stream_done *cb;
    void *arg;
    struct dead_move *move;     /* the dead-letter move this command is a step of */
};

static void op_unlink(struct stream_op *op)
{
    struct stream *s = op->s;
    if (op->prev)
        op->prev->next = op->next;
    else
        s->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        s->ops_tail = op->prev;
    op->prev = op->next = NULL;
}

/* The client's callback for every command of ours. */
static void op_cb(void *arg, const struct redis_reply *v)
{
    struct stream_op *op = arg;
    struct stream *s = op->s;
    op_unlink(op);
    if (v->type == REDIS_T_ERROR) {
        set_err(s, error_kind(v), op->what, v->str);
        /* A connection that never came up says why itself ("tls: server certificate verify
         * failed...", "redis refused our credentials..."), not as the command's failure. */
        if (s->connecting && s->rc && redis_fd(s->rc) == -1 && redis_error(s->rc)[0])
            snprintf(s->errstr, sizeof s->errstr, "%s", redis_error(s->rc));
        op->on_reply(op, NULL);
    } else {
        op->on_reply(op, v);
    }
    free(op);
}

/* The usual completion: parse, then the caller's callback. */
static void op_done(struct stream_op *op, const struct redis_reply *v)
{
    op->s->op_key = op->key;
    if (v && op->parse && op->parse(op->s, v) == -1)
        v = NULL;
    op->cb(op->s, op->arg, v);
    op->s->op_key = NULL;
}

#define OP_CSTR_MAX 16          /* arguments of a command given as C strings */

/* Queue a command (len NULL: argv are C strings, at most OP_CSTR_MAX of them); its completion
 * comes through on_reply (op_done: parse, then cb). Returns the op, or NULL with s->err when
 * there is no connection (nothing will be called). Nothing is written here: the loop's poll()
 * asks for POLLOUT, and no callback runs inside a step. */
static struct stream_op *op_send(struct stream *s, const char *what, int argc, const char **argv,
                                 const size_t *len, void (*on_reply)(struct stream_op *, const struct redis_reply *),
                                 int (*parse)(struct stream *, const struct redis_reply *), stream_done *cb,
                                 void *arg)
{
    s->err = SERR_NONE;
    if (s->rc == NULL) {
        set_err(s, SERR_IO, what, "not connected");
        return NULL;
    }
    size_t cstr_len[OP_CSTR_MAX];
    if (len == NULL) {
        if (argc > OP_CSTR_MAX)
            fatalx("%s: %d arguments, over %d", what, argc, OP_CSTR_MAX);
        for (int i = 0; i < argc; i++)
            cstr_len[i] = strlen(argv[i]);
        len = cstr_len;
    }
    struct stream_op *op = xcalloc(1, sizeof *op);
    op->s = s;
    op->what = what;
    op->on_reply = on_reply ? on_reply : op_done;
    op->parse = parse;
    op->key = s->key;
    op->cb = cb;
    op->arg = arg;
    /* Only a read is bounded (stream_send_read): a claimed or probed entry may be large. */
    redis_set_max_reply_bytes(s->rc, 0);
    if (redis_command(s->rc, argc, argv, len, op_cb, op, command_ms(s)) == -1) {
        set_err(s, SERR_IO, what, redis_error(s->rc)[0] ? redis_error(s->rc) : "not connected");
        free(op);
        return NULL;
    }
    op->prev = s->ops_tail;
    if (s->ops_tail)
        s->ops_tail->next = op;
    else
        s->ops = op;
    s->ops_tail = op;
    return op;
}

/* The same with C strings, the reply parsed by parse. */
static struct stream_op *op_sendv(struct stream *s, const char *what, int argc, const char **argv,
                                  int (*parse)(struct stream *, const struct redis_reply *), stream_done *cb,
                                  void *arg)
{
    return op_send(s, what, argc, argv, NULL, NULL, parse, cb, arg);
}

/* A command's arguments of a length known only at run time (ids, keys, an entry's fields),
 * gathered with their lengths (binary-safe). The strings are borrowed: they must live until
 * the command is queued (the client copies them). */
struct args {
    const char **argv;
    size_t *len;
    int argc;
};

/* Room for max arguments. Release with args_release(). */
static void args_init(struct args *a, size_t max)
{
    a->argv = xmalloc(max * sizeof *a->argv);
    a->len = xmalloc(max * sizeof *a->len);
    a->argc = 0;
}

static void args_add(struct args *a, const char *p, size_t len)
{
    a->argv[a->argc] = p;
    a->len[a->argc++] = len;
}

/* A C string. */
static void args_adds(struct args *a, const char *s)
{
    args_add(a, s, strlen(s));
}

/* n C strings. */
static void args_addv(struct args *a, size_t n, const char *const *v)
{
    for (size_t i = 0; i < n; i++)
        args_adds(a, v[i]);
}

static void args_release(struct args *a)
{
    free(a->argv);
    free(a->len);
}

/* End every command still listed as failed: the connection is gone. */
static void fail_ops(struct stream *s)
{
    while (s->ops) {
        struct stream_op *op = s->ops;
        op_unlink(op);
        set_err(s, SERR_IO, op->what, "connection closed");
        op->on_reply(op, NULL);
        free(op);
    }
}

void stream_run(struct stream *s, short revents)
{
    if (s->rc == NULL)
        return;
    redis_run(s->rc, revents, redis_now_ms());
}

long stream_timeout_ms(const struct stream *s)
{
    return s->rc ? redis_timeout_ms(s->rc, redis_now_ms()) : -1;
}

bool stream_closed(const struct stream *s)
{
    return s->rc && redis_fd(s->rc) == -1;
}

size_t stream_outstanding(const struct stream *s)
{
    size_t n = 0;
    for (const struct stream_op *op = s->ops; op; op = op->next)
        n++;
    return n;
}

/* Make sure the group exists, atomically. KEYS: stream. ARGV: group; where to re-create a
 * group the fleet has read from before ("" when we know of no such read); where a group
 * starts when it is first created ("0" or "$"); "1" to move an existing group forward to
 * ARGV[2] (another worker re-created it after the same loss, knowing less than we do).
 * Returns {1 when it created the group, 0 when it existed; the group's last-delivered-id}.
 *
 * The known id comes from what the fleet received: every entry up to it was delivered by the
 * lost group. Entries after it were not, or not surely, so the new group starts there: never
 * later (that would skip entries), and never back at 0 (that would deliver the whole stream
 * again). A stream restored from an older snapshot may end before that id: then the group
 * starts at its last entry, so that whatever is added next is delivered. XINFO GROUPS first,
 * which is a read: at maxmemory an existing group is found without the XGROUP CREATE that
 * Redis would refuse. */
static const char group_lua[] =
    "local function parse(id)\n"
    "  local ms, sq = string.match(id, '^(%d+)-(%d+)$')\n"
    "  if ms == nil then ms, sq = string.match(id, '^(%d+)$'), '0' end\n"
    "  return tonumber(ms) or 0, tonumber(sq) or 0\n"
    "end\n"
    "local function less(a, b)\n"
    "  local am, as = parse(a)\n"
    "  local bm, bs = parse(b)\n"
    "  return am < bm or (am == bm and as < bs)\n"
    "end\n"
    "local function last_delivered()\n"
    "  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])\n"
    "  if not ok then\n"
    "    local e = type(groups) == 'table' and groups.err or tostring(groups)\n"
    "    if string.find(e, 'WRONGTYPE', 1, true) then return nil, e end\n"
    "    return nil\n"
    "  end\n"
    "  for _, g in ipairs(groups) do\n"
    "    local name, last\n"
    "    for i = 1, #g, 2 do\n"
    "      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end\n"
    "    end\n"
    "    if name == ARGV[1] then return last end\n"
    "  end\n"
    "  return nil\n"
    "end\n"
    "local last, err = last_delivered()\n"
    "if err then return redis.error_reply(err) end\n"
    "if last then\n"
    "  if ARGV[4] == '1' and ARGV[2] ~= '' and less(last, ARGV[2]) then\n"
    "    local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\n"
    "    local to = ARGV[2]\n"
    "    if #top > 0 and less(top[1][1], to) then to = top[1][1] end\n"
    "    if less(last, to) then\n"
    "      redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], to)\n"
    "      last = to\n"
    "    end\n"
    "  end\n"
    "  return {0, last}\n"
    "end\n"
    "local start = ARGV[3]\n"
    "if ARGV[2] ~= '' then\n"
    "  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\n"
    "  start = '0'\n"
    "  if #top > 0 then\n"
    "    start = ARGV[2]\n"
    "    if less(top[1][1], start) then start = top[1][1] end\n"
    "  end\n"
    "end\n"
    "redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], start, 'MKSTREAM')\n"
    "return {1, last_delivered() or start}\n";

static int parse_group(struct stream *s, const struct redis_reply *r)
{
    if (r->type != REDIS_T_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_T_INTEGER ||
        r->element[1]->type != REDIS_T_STRING) {
        set_err(s, SERR_REPLY, "create group", "unexpected reply");
        return -1;
    }
    s->group_created = r->element[0]->integer == 1;
    snprintf(s->group_at, sizeof s->group_at, "%s", r->element[1]->str);
    return 0;
}

/* The group's reply: at maxmemory Redis refuses XGROUP CREATE (a write). The group is missing
 * (the script looked first), so nothing can be read: an error like any other, retried with
 * backoff, but one /health names. */
static void group_reply(struct stream_op *op, const struct redis_reply *v)
{
    struct stream *s = op->s;
    if (v == NULL && s->err == SERR_REPLY && strstr(s->errstr, "OOM "))
        s->err = SERR_OOM;
    s->connecting = false;
    op_done(op, v);
}

static struct stream_op *create_group(struct stream *s, bool forward, stream_done *cb, void *arg)
{
    const char *first = s->start_latest ? "$" : "0";
    const char *argv[8] = { "EVAL", group_lua, "1", s->key, s->group, s->resume, first, forward ? "1" : "0" };
    s->group_created = false;
    struct stream_op *op = op_sendv(s, "create group", 8, argv, parse_group, cb, arg);
    if (op)
        op->on_reply = group_reply;
    return op;
}

int stream_create_group(struct stream *s, bool forward, stream_done *cb, void *arg)
{
    return create_group(s, forward, cb, arg) ? 0 : -1;
}

int stream_connect(struct stream *s, stream_done *cb, void *arg)
{
    /* One connection, never reconnected by the client: the child decides when to try again
     * (with its backoff), and rebuilds what it holds on the new connection. The client sends
     * AUTH and SELECT first, then our first command: the creation of the group, whose reply
     * says the connection is ready. Nothing here waits: the loop drives the connection. */
    struct redis_opts o = { .connect_timeout_ms = CONNECT_MS, .no_reconnect = true,
                            .client_name = "streamfleet-worker" };
    stream_disconnect(s);
    s->rc = redis_open(s->addr, &o);
    s->connecting = true;
    if (create_group(s, false, cb, arg) == NULL) {
        s->connecting = false;
        stream_disconnect(s);
        return -1;
    }
    return 0;
}

void stream_disconnect(struct stream *s)
{
    stream_batch_release(s);
    arena_release(&s->arena);
    if (s->rc)
        drop(s);
    s->connecting = false;
    /* After the drop: a completion that sends again finds no connection. */
    fail_ops(s);
}

bool stream_connected(const struct stream *s)
{
    return s->rc != NULL;
}

int stream_fd(const struct stream *s)
{
    return s->rc ? redis_fd(s->rc) : -1;
}

short stream_events(const struct stream *s)
{
    return s->rc ? redis_events(s->rc) : 0;
}

/* XACK key group id... into a (args_init()ed here: the caller releases it). */
static void ack_args(const struct stream *s, const struct idlist *ids, struct args *a)
{
    args_init(a, 3 + ids->n);
    args_addv(a, 3, (const char *[]){ "XACK", s->key, s->group });
    for (size_t i = 0; i < ids->n; i++)
        args_adds(a, ids->id[i]);
}

/* XACK's reply to the acks sent with a read. */
static void read_ack_cb(void *arg, const struct redis_reply *v)
{
    struct stream *s = arg;
    s->expect--;
    s->acks_sent = false;
    if (v->type == REDIS_T_INTEGER)
        s->acked = (uint64_t)v->integer;
    else
        set_reply_err(s, "xack", v);    /* the read that follows still answers: it fails too */
}

/* XREADGROUP's reply: the next batch, copied out of the client before it goes. */
static void read_cb(void *arg, const struct redis_reply *v)
{
    struct stream *s = arg;
    s->expect--;
    if (v->type == REDIS_T_ERROR) {
        set_err(s, error_kind(v), "xreadgroup", v->str);
        s->read_state = -1;
        return;
    }
    if (s->err != SERR_NONE) {      /* the XACK before it failed */
        s->read_state = -1;
        return;
    }
    stream_batch_release(s);
    s->reply = copy_reply(&s->arena, v);
    if (stream_parse_read(s, s->reply) == -1) {
        stream_batch_release(s);
        s->read_state = -1;
        return;
    }
    s->read_state = 1;
}

/* A read's commands queued (all, or, when queued is false, not): write now what can be written
 * (the rest goes when stream_events() asks for POLLOUT). A command that could not be queued or
 * written says what failed and drops the connection. */
static int read_sent(struct stream *s, bool queued, const char *what)
{
    if (queued) {
        redis_run(s->rc, 0, redis_now_ms());
        if (redis_fd(s->rc) != -1)
            return 0;
    }
    set_err(s, SERR_IO, what, redis_error(s->rc)[0] ? redis_error(s->rc) : "not connected");
    stream_disconnect(s);
    return -1;
}

/* XREADGROUP of keys[0..nkeys), each from `from` (stream_send_read(), stream_send_read_all()). */
static int send_read(struct stream *s, const struct idlist *acks, const char *const *keys, size_t nkeys,
                     const char *from, int count, long block_ms)
{
    s->expect = 0;
    s->acked = 0;
    s->acks_sent = false;
    s->read_state = 0;
    /* An entry's names and values are at most max_message_bytes; RESP adds a few bytes to
     * each, and the ids come on top: twice the size plus 64 KiB leaves room for entries of
     * many small fields. */
    size_t entry = s->entry_limit ? s->entry_limit : (size_t)s->max_message_bytes * 2 + 65536;
    /* COUNT is per stream: a read of several may bring count from each. */
    s->read_limit = (size_t)(count > 0 ? count : 1) * (nkeys ? nkeys : 1) * entry;
    s->err = SERR_NONE;         /* stream_recv() tells an XACK that failed by it */
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "xreadgroup", "not connected");
        return -1;
    }
    /* The client holds a whole reply before it hands it over: an entry of hundreds of MB would
     * be held (then copied) before max_message_bytes could be checked, and kill the worker,
     * and its replacement would read the same batch. So a reply that outgrows the bound drops
     * the connection (REDIS_E_TOOBIG); the entries it carried stay pending for us, and the
     * caller reads them one by one. */
    redis_set_max_reply_bytes(s->rc, s->read_limit);
    long timeout = (block_ms > 0 ? block_ms : 0) + 5000;
    if (acks && acks->n) {
        struct args a;
        ack_args(s, acks, &a);
        int rc = redis_command(s->rc, a.argc, a.argv, a.len, read_ack_cb, s, timeout);
        args_release(&a);
        if (rc == -1)
            return read_sent(s, false, "xreadgroup");
        s->acks_sent = true;
        s->expect++;
    }
    char cnt[16], blk[24];
    snprintf(cnt, sizeof cnt, "%d", count);
    snprintf(blk, sizeof blk, "%ld", block_ms);
    const char *argv[9 + 2 * CONF_STREAMS_MAX] = { "XREADGROUP", "GROUP", s->group, s->consumer, "COUNT", cnt };
    int argc = 6;
    if (block_ms >= 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = blk;
    }
    argv[argc++] = "STREAMS";
    if (nkeys > CONF_STREAMS_MAX)
        nkeys = CONF_STREAMS_MAX;
    for (size_t i = 0; i < nkeys; i++)
        argv[argc++] = keys[i];
    for (size_t i = 0; i < nkeys; i++)
        argv[argc++] = from;
    size_t len[9 + 2 * CONF_STREAMS_MAX];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    if (redis_command(s->rc, argc, argv, len, read_cb, s, timeout) == -1)
        return read_sent(s, false, "xreadgroup");
    s->expect++;
    return read_sent(s, true, "xreadgroup");
}

int stream_send_read(struct stream *s, const struct idlist *acks, const char *from, int count,
                     long block_ms)
{
    return send_read(s, acks, &s->key, 1, from, count, block_ms);
}

int stream_send_read_all(struct stream *s, const char *const *keys, size_t nkeys, int count, long block_ms)
{
    return send_read(s, NULL, keys, nkeys, ">", count, block_ms);
}

/* A shard's reply to stream_send_read_shards(): its [key, entries] pair (if any) is copied
 * into the batch's reply as it comes; the last reply completes the read. The first reply
 * releases the previous batch, as read_cb() does: until then it may still be in use. */
static void shard_cb(void *arg, const struct redis_reply *v)
{
    struct stream *s = arg;
    s->expect--;
    if (s->shard_fresh) {
        s->shard_fresh = false;
        stream_batch_release(s);
        s->reply = arena_alloc(&s->arena, sizeof *s->reply);
        *s->reply = (struct redis_reply){ .type = REDIS_T_ARRAY };
        s->reply->element = arena_alloc(&s->arena, s->shard_cap * sizeof *s->reply->element);
    }
    if (v->type == REDIS_T_ERROR) {
        if (s->err == SERR_NONE)
            set_err(s, error_kind(v), "xreadgroup", v->str);
    } else if (v->type == REDIS_T_ARRAY && s->err == SERR_NONE) {
        /* One key asked: at most one pair; more would be a server's error, taken up to cap. */
        for (size_t i = 0; i < v->elements && s->reply->elements < s->shard_cap; i++)
            s->reply->element[s->reply->elements++] = copy_reply(&s->arena, v->element[i]);
    } else if (v->type != REDIS_T_NIL && s->err == SERR_NONE) {
        set_err(s, SERR_REPLY, "xreadgroup", "unexpected reply shape");
    }
    if (s->expect > 0)
        return;
    if (s->err != SERR_NONE) {
        stream_batch_release(s);
        s->read_state = -1;
        return;
    }
    if (s->reply->elements == 0)
        s->reply->type = REDIS_T_NIL;
    if (stream_parse_read(s, s->reply) == -1) {
        stream_batch_release(s);
        s->read_state = -1;
        return;
    }
    s->read_state = 1;
}

int stream_send_read_shards(struct stream *s, const char *const *keys, size_t nkeys, int count)
{
    s->expect = 0;
    s->acked = 0;
    s->acks_sent = false;
    s->read_state = 0;
    s->shard_fresh = true;
    s->shard_cap = nkeys;
    size_t entry = s->entry_limit ? s->entry_limit : (size_t)s->max_message_bytes * 2 + 65536;
    s->read_limit = (size_t)(count > 0 ? count : 1) * entry;      /* each reply is one shard's */
    s->err = SERR_NONE;
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "xreadgroup", "not connected");
        return -1;
    }
    redis_set_max_reply_bytes(s->rc, s->read_limit);
    char cnt[16];
    snprintf(cnt, sizeof cnt, "%d", count);
    for (size_t i = 0; i < nkeys; i++) {
        const char *argv[] = { "XREADGROUP", "GROUP", s->group, s->consumer, "COUNT", cnt, "STREAMS", keys[i], ">" };
        size_t len[sizeof argv / sizeof argv[0]];
        for (size_t j = 0; j < sizeof argv / sizeof argv[0]; j++)
            len[j] = strlen(argv[j]);
        if (redis_command(s->rc, (int)(sizeof argv / sizeof argv[0]), argv, len, shard_cb, s, 5000) == -1)
            return read_sent(s, false, "xreadgroup");
        s->expect++;
    }
    return read_sent(s, true, "xreadgroup");
}

/* Read new entries from the first of KEYS that has any, in one round trip and without taking
 * anything from a later stream (XREADGROUP is allowed in a script, BLOCK is not: the caller
 * blocks on all the streams with stream_send_read_all() when every one was empty). The reply
 * has XREADGROUP's shape: nil, or [[key, entries]]. A missing group on any of them is NOGROUP,
 * as from XREADGROUP. */
static const char read_first_lua[] =
    "for _, k in ipairs(KEYS) do\n"
    "  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', ARGV[3], 'STREAMS', k, '>')\n"
    "  if r then return r end\n"
    "end\n"
    "return false\n";

int stream_send_read_first(struct stream *s, const char *const *keys, size_t nkeys, int count)
{
    s->expect = 0;
    s->acked = 0;
    s->acks_sent = false;
    s->read_state = 0;
    size_t entry = s->entry_limit ? s->entry_limit : (size_t)s->max_message_bytes * 2 + 65536;
    s->read_limit = (size_t)(count > 0 ? count : 1) * entry;
    s->err = SERR_NONE;
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "read script", "not connected");
        return -1;
    }
    redis_set_max_reply_bytes(s->rc, s->read_limit);
    char nk[16], cnt[16];
    snprintf(nk, sizeof nk, "%zu", nkeys);
    snprintf(cnt, sizeof cnt, "%d", count);
    struct args a;
    args_init(&a, 3 + nkeys + 3);
    args_addv(&a, 3, (const char *[]){ "EVAL", read_first_lua, nk });
    args_addv(&a, nkeys, keys);
    args_addv(&a, 3, (const char *[]){ s->group, s->consumer, cnt });
    int rc = redis_command(s->rc, a.argc, a.argv, a.len, read_cb, s, 5000);
    args_release(&a);
    if (rc == -1)
        return read_sent(s, false, "read script");
    s->expect++;
    return read_sent(s, true, "read script");
}

/* The names and values of a list of entries [[id, [f, v, ...] | nil], ...]. */
static size_t count_fields(const struct redis_reply *entries)
{
    size_t nfields = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        struct redis_reply *e = entries->element[i];
        if (e->type == REDIS_T_ARRAY && e->elements == 2 && e->element[1]->type == REDIS_T_ARRAY)
            nfields += e->element[1]->elements;
    }
    return nfields;
}

/* Room in s->msgs and s->fields for a batch of nmsgs entries of nfields names and values in
 * all. Before the first parse_entries() of a batch only: the messages point into s->fields. */
static void batch_reserve(struct stream *s, size_t nmsgs, size_t nfields)
{
    if (nmsgs > s->mcap) {
        s->mcap = nmsgs;
        s->msgs = xrealloc(s->msgs, s->mcap * sizeof *s->msgs);
    }
    if (nfields > s->fcap) {
        s->fcap = nfields;
        s->fields = xrealloc(s->fields, s->fcap * sizeof *s->fields);
    }
}

/* Add a list of entries [[id, [f, v, ...] | nil], ...] of stream key to s->msgs, their names
 * and values from s->fields[*fused] on (batch_reserve() made room for them). */
static void parse_entries(struct stream *s, const struct redis_reply *entries, const char *key, size_t *fused)
{
    struct str *f = s->fields + *fused;
    const char *last = NULL;
    for (size_t i = 0; i < entries->elements; i++) {
        struct redis_reply *e = entries->element[i];
        if (e->type != REDIS_T_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_T_STRING) {
            log_warnx("skipping malformed entry %zu in xreadgroup reply", i);
            continue;
        }
        struct redis_reply *id = e->element[0];
        struct redis_reply *kv = e->element[1];
        last = id->str;
        if (kv->type != REDIS_T_ARRAY) {
            /* Re-reading our own pending list returns deleted or trimmed entries with a nil
             * field list: nothing to handle, they only need to leave the PEL. */
            idlist_add(&s->vanished, id->str);
            continue;
        }
        struct msg *m = &s->msgs[s->n++];
        m->stream = key;
        m->id.p = id->str;
        m->id.len = id->len;
        m->f = f;
        m->attempt = 1;
        /* Redis never stores an odd field count, but a reply is input: pair what pairs. */
        size_t pairs = kv->elements / 2;
        for (size_t j = 0; j < 2 * pairs; j++) {
            f->p = kv->element[j]->type == REDIS_T_STRING ? kv->element[j]->str : "";
            f->len = kv->element[j]->type == REDIS_T_STRING ? kv->element[j]->len : 0;
            f++;
        }
        m->nf = pairs;
    }
    *fused = (size_t)(f - s->fields);
    if (last)
        snprintf(s->last_id, sizeof s->last_id, "%s", last);
}

/* One list of entries (a claim's), of our stream. */
static void parse_list(struct stream *s, const struct redis_reply *entries)
{
    size_t fused = 0;
    batch_reserve(s, entries->elements, count_fields(entries));
    parse_entries(s, entries, s->op_key ? s->op_key : s->key, &fused);
}

/* The XREADGROUP reply: nil (timeout) or [[key, [[id, [f, v, ...] | nil], ...]], ...], a
 * [key, entries] pair per stream that had entries (a read of several streams may bring
 * several; each message names its stream, pointing into r). Anything else is an error, never
 * a crash. s->last_id: the last entry of the last stream. */
int stream_parse_read(struct stream *s, const struct redis_reply *r)
{
    s->n = 0;
    s->vanished.n = 0;
    if (r->type == REDIS_T_NIL)
        return 0;
    bool ok = r->type == REDIS_T_ARRAY && r->elements >= 1;
    size_t nmsgs = 0, nfields = 0;
    for (size_t k = 0; ok && k < r->elements; k++) {
        const struct redis_reply *pair = r->element[k];
        ok = pair->type == REDIS_T_ARRAY && pair->elements == 2 && pair->element[0]->type == REDIS_T_STRING &&
             pair->element[1]->type == REDIS_T_ARRAY;
        if (ok) {
            nmsgs += pair->element[1]->elements;
            nfields += count_fields(pair->element[1]);
        }
    }
    if (!ok) {
        set_err(s, SERR_REPLY, "xreadgroup", "unexpected reply shape");
        return -1;
    }
    batch_reserve(s, nmsgs, nfields);
    size_t fused = 0;
    for (size_t k = 0; k < r->elements; k++)
        parse_entries(s, r->element[k]->element[1], r->element[k]->element[0]->str, &fused);
    return 0;
}

/* What the claim script answers: [[entries as XCLAIM gives them], [ids not ours]]. */
int stream_parse_claim(struct stream *s, const struct redis_reply *r)
{
    s->n = 0;
    s->vanished.n = 0;
    s->lost.n = 0;
    if (r->type != REDIS_T_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_T_ARRAY ||
        r->element[1]->type != REDIS_T_ARRAY) {
        set_err(s, SERR_REPLY, "xclaim", "unexpected reply shape");
        return -1;
    }
    parse_list(s, r->element[0]);
    const struct redis_reply *lost = r->element[1];
    for (size_t i = 0; i < lost->elements; i++)
        if (lost->element[i]->type == REDIS_T_STRING)
            idlist_add(&s->lost, lost->element[i]->str);
    return 0;
}

/* [next-cursor, [entries], [deleted ids]] (Redis 7). The deleted ids are entries whose data
 * was trimmed or deleted: Redis already dropped them from the pending list. */
int stream_parse_autoclaim(struct stream *s, const struct redis_reply *r, char cursor[STREAM_ID_MAX],
                           size_t *deleted)
{
    s->n = 0;
    s->vanished.n = 0;
    *deleted = 0;
    if (r->type != REDIS_T_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_T_STRING ||
        r->element[1]->type != REDIS_T_ARRAY) {
        set_err(s, SERR_REPLY, "xautoclaim", "unexpected reply shape");
        return -1;
    }
    snprintf(cursor, STREAM_ID_MAX, "%s", r->element[0]->str);
    if (r->elements >= 3 && r->element[2]->type == REDIS_T_ARRAY)
        *deleted = r->element[2]->elements;
    parse_list(s, r->element[1]);
    return 0;
}

/* An entry id "ms-seq" as two numbers. Returns 0, or -1 when text is not one. */
/* An entry id: "MS-SEQ", or "MS" alone (sequence 0, as Redis reads it: a group created at
 * "0" reports last-delivered-id "0-0", but our own resume point may be written "0"). */
static int parse_id(const struct str *id, unsigned long long *ms, unsigned long long *seq)
{
    unsigned long long v[2] = { 0, 0 };
    size_t i = 0;
    for (int part = 0; part < 2; part++) {
        size_t start = i;
        for (; i < id->len && id->p[i] >= '0' && id->p[i] <= '9'; i++) {
            if (v[part] > (~0ULL - 9) / 10)
                return -1;
            v[part] = v[part] * 10 + (unsigned)(id->p[i] - '0');
        }
        if (i == start)
            return -1;
        if (part == 0) {
            if (i == id->len)
                break;          /* "MS" */
            if (id->p[i] != '-')
                return -1;
            i++;
        }
    }
    if (i != id->len)
        return -1;
    *ms = v[0];
    *seq = v[1];
    return 0;
}

int stream_id_cmp(const struct str *a, const struct str *b)
{
    unsigned long long am, as, bm, bs;
    int av = parse_id(a, &am, &as) == 0, bv = parse_id(b, &bm, &bs) == 0;
    if (av && bv) {
        if (am != bm)
            return am < bm ? -1 : 1;
        return as == bs ? 0 : as < bs ? -1 : 1;
    }
    if (av != bv)
        return av ? -1 : 1;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->p, b->p, n);
    return c ? c : a->len == b->len ? 0 : a->len < b->len ? -1 : 1;
}

void stream_match_counts(const struct msg *msgs, size_t n, const struct str *ids,
                         const long long *cnt, size_t m, long long *counts)
{
    for (size_t i = 0; i < n; i++)
        counts[i] = 0;
    /* Both lists are in id order: walk them together. A row for no message of the batch (an
     * entry deleted from the stream, another pending entry of ours) is passed over; it must
     * not end the walk, or every later message would count as a first delivery. */
    size_t j = 0;
    for (size_t k = 0; k < m && j < n; k++) {
        while (j < n && stream_id_cmp(&msgs[j].id, &ids[k]) < 0)
            j++;
        if (j < n && stream_id_cmp(&msgs[j].id, &ids[k]) == 0)
            counts[j++] = cnt[k];
    }
}

void stream_parse_pending(const struct redis_reply *r, const struct msg *msgs, size_t n, long long *counts)
{
    size_t m = r->type == REDIS_T_ARRAY ? r->elements : 0;
    struct str *ids = xcalloc(m ? m : 1, sizeof *ids);
    long long *cnt = xcalloc(m ? m : 1, sizeof *cnt);
    size_t k = 0;
    for (size_t i = 0; i < m; i++) {
        const struct redis_reply *e = r->element[i];
        if (e->type != REDIS_T_ARRAY || e->elements < 4 || e->element[0]->type != REDIS_T_STRING ||
            e->element[3]->type != REDIS_T_INTEGER)
            continue;
        ids[k].p = e->element[0]->str;
        ids[k].len = e->element[0]->len;
        cnt[k++] = e->element[3]->integer;
    }
    stream_match_counts(msgs, n, ids, cnt, k, counts);
    free(ids);
    free(cnt);
}

/* Claim ids to ourselves only while they are still pending for us, atomically: a retry or an
 * idle reset must never take back an entry another consumer claimed meanwhile (XCLAIM with
 * min-idle 0 would, whoever holds it). One XCLAIM an id: Lua 5.1 limits a C call's arguments.
 * KEYS: stream. ARGV: group, consumer, retrycount (-1: none), justid (0/1), ids... Returns
 * [[entries], [ids not ours]]: held by another consumer, or acknowledged by someone while
 * their data is still there. An id in neither list had its data deleted (vanished). */
static const char claim_own_lua[] =
    "local out, lost = {}, {}\n"
    "for i = 5, #ARGV do\n"
    "  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)\n"
    "  if #p == 1 and p[1][2] == ARGV[2] then\n"
    "    local a = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], '0', ARGV[i]}\n"
    "    if ARGV[3] ~= '-1' then a[#a + 1] = 'RETRYCOUNT'; a[#a + 1] = ARGV[3] end\n"
    "    if ARGV[4] == '1' then a[#a + 1] = 'JUSTID' end\n"
    "    for _, e in ipairs(redis.call(unpack(a))) do out[#out + 1] = e end\n"
    "  elseif #p == 1 or #redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i]) == 1 then\n"
    "    lost[#lost + 1] = ARGV[i]\n"
    "  end\n"
    "end\n"
    "return {out, lost}\n";

static struct stream_op *claim_own(struct stream *s, const char *what, const struct idlist *ids,
                                   long long retrycount, bool justid,
                                   int (*parse)(struct stream *, const struct redis_reply *), stream_done *cb,
                                   void *arg)
{
    char rc[24];
    snprintf(rc, sizeof rc, "%lld", retrycount < 0 ? -1 : retrycount);
    struct args a;
    args_init(&a, 8 + ids->n);
    args_addv(&a, 8, (const char *[]){ "EVAL", claim_own_lua, "1", s->key, s->group, s->consumer, rc,
                                       justid ? "1" : "0" });
    for (size_t i = 0; i < ids->n; i++)
        args_adds(&a, ids->id[i]);
    struct stream_op *op = op_send(s, what, a.argc, a.argv, a.len, NULL, parse, cb, arg);
    args_release(&a);
    return op;
}

/* A claim's reply becomes the batch, in the batch's arena like a read's: one way to own and
 * release a batch. */
static int parse_claim(struct stream *s, const struct redis_reply *v)
{
    stream_batch_release(s);
    s->lost.n = 0;
    s->reply = copy_reply(&s->arena, v);
    if (stream_parse_claim(s, s->reply) == -1) {
        stream_batch_release(s);
        return -1;
    }
    return 0;
}

int stream_claim(struct stream *s, const struct idlist *ids, long long retrycount, stream_done *cb, void *arg)
{
    return claim_own(s, "xclaim", ids, retrycount, false, parse_claim, cb, arg) ? 0 : -1;
}

int stream_recv(struct stream *s)
{
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "read", "not connected");
        return -1;
    }
    /* The replies go to read_ack_cb() and read_cb() as they complete. Called when poll()
     * saw the descriptor ready: reading finds nothing harmlessly (EAGAIN) when it was only
     * writable, so POLLIN always. */
    if (s->read_state == 1) {
        s->read_state = 0;
        return 1;
    }
    if (s->read_state == -1 || redis_fd(s->rc) == -1) {
        if (s->err == SERR_NONE)
            set_err(s, SERR_IO, "read", redis_error(s->rc)[0] ? redis_error(s->rc) : "connection lost");
        s->read_state = 0;
        if (redis_fd(s->rc) == -1)
            stream_disconnect(s);
        return -1;
    }
    return 0;
}

void stream_batch_release(struct stream *s)
{
    arena_reset(&s->arena);
    s->reply = NULL;
    s->n = 0;
    s->vanished.n = 0;
}

int stream_ack(struct stream *s, const struct idlist *ids, stream_done *cb, void *arg)
{
    struct args a;
    ack_args(s, ids, &a);
    struct stream_op *op = op_send(s, "xack", a.argc, a.argv, a.len, NULL, NULL, cb, arg);
    args_release(&a);
    return op ? 0 : -1;
}

/* XPENDING's rows become the attempts of the batch's entries (1 for those not listed). */
static int parse_counts(struct stream *s, const struct redis_reply *v)
{
    long long *counts = xcalloc(s->n ? s->n : 1, sizeof *counts);
    stream_parse_pending(v, s->msgs, s->n, counts);
    for (size_t i = 0; i < s->n; i++)
        s->msgs[i].attempt = counts[i] > 0 ? counts[i] : 1;
    free(counts);
    return 0;
}

int stream_delivery_counts(struct stream *s, size_t limit, stream_done *cb, void *arg)
{
    size_t n = s->n;
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", limit > n ? limit : n);
    const char *argv[7] = { "XPENDING", s->msgs[0].stream, s->group, s->msgs[0].id.p, s->msgs[n - 1].id.p, cnt, s->consumer };
    return op_sendv(s, "xpending", 7, argv, parse_counts, cb, arg) ? 0 : -1;
}

/* Lua 5.1 in Redis 7.0 passes at most about 8,000 values to a C function (LUAI_MAXCSTACK):
 * redis.call('XADD', ..., unpack(fields)) fails above that. Entries with more names and
 * values than this take the MULTI/EXEC path below. */
#define DEAD_LETTER_LUA_VALUES 7000

/* Move one entry to the dead-letter stream and acknowledge it, in one atomic step. A Lua
 * script, not MULTI/EXEC: EXEC does not roll back, so a failing XADD (wrong key type, out of
 * memory) would still let the XACK run and lose the message. The script reads the fields
 * from the stream itself, so the dead letter holds them exactly as they were added, and a
 * large entry never passes through the worker. Returns -4, doing nothing, for an entry with
 * too many fields for unpack(). KEYS: stream, dlq. ARGV: group, id, consumer, reason,
 * attempts, error, time, the most values. */
static const char dead_letter_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end\n"
    "local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])\n"
    "if #e == 0 then\n"
    "  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "  return -1\n"
    "end\n"
    "local f = e[1][2]\n"
    "if #f > tonumber(ARGV[8]) then return -4 end\n"
    "local extra = {'dlq.stream', KEYS[1], 'dlq.id', ARGV[2], 'dlq.reason', ARGV[4],\n"
    "               'dlq.attempts', ARGV[5], 'dlq.error', ARGV[6], 'dlq.time', ARGV[7]}\n"
    "for i = 1, #extra do f[#f + 1] = extra[i] end\n"
    "redis.call('XADD', KEYS[2], '*', unpack(f))\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "return 1\n";

/* The second half of a move of an entry with many fields, run in the same MULTI/EXEC right
 * after the XADD of its copy (EXEC runs them with nothing in between, but does not roll
 * back): the copy is the dead-letter stream's last entry if the XADD worked. When the entry
 * is still pending for us, acknowledge it; when someone else has it now, delete the copy.
 * Returns 1 (moved), 0 (not ours: nothing left behind), -3 (no copy was added: nothing
 * done). KEYS: stream, dlq. ARGV: group, id, consumer, time. */
static const char dead_letter_check_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "local ours = #p == 1 and p[1][2] == ARGV[3]\n"
    "local added\n"
    "if redis.call('TYPE', KEYS[2]).ok == 'stream' then\n"
    "  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)\n"
    "  if #last == 1 then\n"
    "    local f, id, t = last[1][2], nil, nil\n"
    "    local i = #f - 1\n"
    "    while i >= 1 and i >= #f - 13 do\n"
    "      if f[i] == 'dlq.id' and id == nil then id = f[i + 1] end\n"
    "      if f[i] == 'dlq.time' and t == nil then t = f[i + 1] end\n"
    "      i = i - 2\n"
    "    end\n"
    "    if id == ARGV[2] and t == ARGV[4] then added = last[1][1] end\n"
    "  end\n"
    "end\n"
    "if not added then\n"
    "  if ours then return -3 end\n"
    "  return 0\n"
    "end\n"
    "if not ours then\n"
    "  redis.call('XDEL', KEYS[2], added)\n"
    "  return 0\n"
    "end\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "return 1\n";

/* A dead-letter move on its way: the script, and for an entry with many fields the XRANGE and
 * the MULTI/EXEC after it. Each command of it holds a reference; the caller's callback runs
 * once, with the move's outcome. */
struct dead_move {
    stream_done *cb;
    void *arg;
    unsigned refs;
    bool finished;
    bool quiet;                     /* being started: a failure is returned, not called back */
    int round;
    const char *key;                /* the stream it leaves (s->key when it was started) */
    char *dlq, *id, *reason, *att, *error, *when;
    struct redis_reply *queued[3];  /* MULTI's, XADD's and the check's immediate replies */
    int nqueued;
};

static void move_put(struct dead_move *m)
{
    if (--m->refs)
        return;
    for (int i = 0; i < 3; i++)
        redis_reply_free(m->queued[i]);
    free(m->dlq);
    free(m->id);
    free(m->reason);
    free(m->att);
    free(m->error);
    free(m->when);
    free(m);
}

/* The outcome, once: rc 1 moved, 0 not ours, -1 its data was gone; -2 failed (s->err). */
static void move_finish(struct stream *s, struct dead_move *m, int rc)
{
    if (m->finished)
        return;
    m->finished = true;
    if (m->quiet)
        return;
    if (rc == -2) {
        m->cb(s, m->arg, NULL);
        return;
    }
    struct redis_reply out = { .type = REDIS_T_INTEGER, .integer = rc };
    m->cb(s, m->arg, &out);
}

/* A command of the move m (len NULL: C strings, as op_send); the op holds a reference to m. */
static struct stream_op *move_send(struct stream *s, struct dead_move *m, const char *what, int argc,
                                   const char **argv, const size_t *len,
                                   void (*on_reply)(struct stream_op *, const struct redis_reply *))
{
    struct stream_op *op = op_send(s, what, argc, argv, len, on_reply, NULL, NULL, NULL);
    if (op) {
        op->move = m;
        m->refs++;
    }
    return op;
}

static void move_script(struct stream *s, struct dead_move *m);

/* MULTI's, XADD's and the check's immediate replies, kept for EXEC's. */
static void move_keep(struct stream_op *op, const struct redis_reply *v)
{
    struct dead_move *m = op->move;
    if (m->nqueued < 3)
        m->queued[m->nqueued++] = v ? redis_reply_dup(v) : NULL;
    move_put(m);
}

static void move_exec(struct stream_op *op, const struct redis_reply *x)
{
    struct stream *s = op->s;
    struct dead_move *m = op->move;
    int rc = -2;
    if (x) {
        const struct redis_reply *why = NULL;   /* the first error, for s->errstr */
        for (int i = 0; i < m->nqueued && why == NULL; i++)
            if (m->queued[i] && m->queued[i]->type == REDIS_T_ERROR)
                why = m->queued[i];
        if (x->type == REDIS_T_ARRAY && x->elements == 2 && x->element[1]->type == REDIS_T_INTEGER) {
            rc = (int)x->element[1]->integer;
            if (rc == -3) {         /* the XADD failed: say why */
                why = x->element[0]->type == REDIS_T_ERROR ? x->element[0] : NULL;
                rc = -2;
            }
        } else if (x->type == REDIS_T_ARRAY && x->elements == 2 && x->element[1]->type == REDIS_T_ERROR) {
            why = x->element[1];
        }
        if (rc == -2)
            set_err(s, why ? error_kind(why) : SERR_REPLY, "dead-letter", why ? why->str : "unexpected reply");
    }
    move_finish(s, m, rc);
    move_put(m);
}

/* The move of an entry with more fields than Lua can pass on: the worker has read the entry
 * (e), and sends MULTI; XADD dlq * <fields, by argv: binary-safe> <dlq.*>; EVAL check; EXEC
 * in one round trip. */
static void move_xrange(struct stream_op *op, const struct redis_reply *e)
{
    struct stream *s = op->s;
    struct dead_move *m = op->move;
    if (e == NULL) {
        move_finish(s, m, -2);
    } else if (e->type != REDIS_T_ARRAY || e->elements == 0 || e->element[0]->type != REDIS_T_ARRAY ||
               e->element[0]->elements != 2 || e->element[0]->element[1]->type != REDIS_T_ARRAY) {
        /* Gone meanwhile (or odd): the script decides, once more. */
        if (m->round++ < 1)
            move_script(s, m);
        else
            move_finish(s, m, 0);
    } else {
        const char *const extra[12] = { "dlq.stream", m->key, "dlq.id", m->id, "dlq.reason", m->reason,
                                         "dlq.attempts", m->att, "dlq.error", m->error, "dlq.time", m->when };
        const struct redis_reply *kv = e->element[0]->element[1];
        struct args a;
        args_init(&a, 3 + kv->elements + 12);
        args_addv(&a, 3, (const char *[]){ "XADD", m->dlq, "*" });
        for (size_t i = 0; i < kv->elements; i++) {
            const struct redis_reply *v = kv->element[i];
            args_add(&a, v->type == REDIS_T_STRING ? v->str : "", v->type == REDIS_T_STRING ? v->len : 0);
        }
        args_addv(&a, 12, extra);
        const char *margv[1] = { "MULTI" }, *xargv[1] = { "EXEC" };
        const char *cargv[9] = { "EVAL", dead_letter_check_lua, "2", m->key, m->dlq, s->group, m->id,
                                 s->consumer, m->when };
        if (move_send(s, m, "dead-letter multi", 1, margv, NULL, move_keep) == NULL ||
            move_send(s, m, "dead-letter xadd", a.argc, a.argv, a.len, move_keep) == NULL ||
            move_send(s, m, "dead-letter check", 9, cargv, NULL, move_keep) == NULL ||
            move_send(s, m, "dead-letter exec", 1, xargv, NULL, move_exec) == NULL)
            move_finish(s, m, -2);
        args_release(&a);
    }
    move_put(m);
}

static void move_script_reply(struct stream_op *op, const struct redis_reply *v)
{
    struct stream *s = op->s;
    struct dead_move *m = op->move;
    if (v == NULL) {
        move_finish(s, m, -2);
    } else if (v->type != REDIS_T_INTEGER) {
        set_err(s, SERR_REPLY, "dead-letter", "unexpected reply");
        move_finish(s, m, -2);
    } else if (v->integer == -4) {
        const char *argv[4] = { "XRANGE", m->key, m->id, m->id };
        if (move_send(s, m, "dead-letter xrange", 4, argv, NULL, move_xrange) == NULL)
            move_finish(s, m, -2);
    } else {
        move_finish(s, m, (int)v->integer);
    }
    move_put(m);
}

static void move_script(struct stream *s, struct dead_move *m)
{
    char most[24];
    snprintf(most, sizeof most, "%d", DEAD_LETTER_LUA_VALUES);
    const char *argv[13] = { "EVAL", dead_letter_lua, "2", m->key, m->dlq, s->group, m->id, s->consumer,
                             m->reason, m->att, m->error, m->when, most };
    if (move_send(s, m, "dead-letter", 13, argv, NULL, move_script_reply) == NULL)
        move_finish(s, m, -2);
}

int stream_dead_letter(struct stream *s, const char *dlq, const char *id, const char *reason,
                       long long attempts, const char *error, long long now_unix_ms, stream_done *cb,
                       void *arg)
{
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "dead-letter", "not connected");
        return -1;
    }
    struct dead_move *m = xcalloc(1, sizeof *m);
    char att[24], when[24];
    snprintf(att, sizeof att, "%lld", attempts);
    snprintf(when, sizeof when, "%lld", now_unix_ms);
    m->cb = cb;
    m->arg = arg;
    m->refs = 1;
    m->key = s->key;
    m->dlq = xstrdup(dlq);
    m->id = xstrdup(id);
    m->reason = xstrdup(reason);
    m->att = xstrdup(att);
    m->error = xstrdup(error ? error : "");
    m->when = xstrdup(when);
    /* A send that fails at once ends the move at once: the caller hears of it by the return
     * value only. */
    m->quiet = true;
    move_script(s, m);
    m->quiet = false;
    int rc = m->finished ? -1 : 0;
    move_put(m);
    return rc;
}

static int parse_autoclaim(struct stream *s, const struct redis_reply *v)
{
    stream_batch_release(s);
    s->reply = copy_reply(&s->arena, v);
    if (stream_parse_autoclaim(s, s->reply, s->cursor, &s->deleted) == -1) {
        stream_batch_release(s);
        return -1;
    }
    return 0;
}

int stream_autoclaim(struct stream *s, long min_idle_ms, const char *cursor, int count, stream_done *cb,
                     void *arg)
{
    stream_batch_release(s);
    s->deleted = 0;
    snprintf(s->cursor, sizeof s->cursor, "%s", cursor);
    char idle[24], cnt[16];
    snprintf(idle, sizeof idle, "%ld", min_idle_ms);
    snprintf(cnt, sizeof cnt, "%d", count);
    const char *argv[8] = { "XAUTOCLAIM", s->key, s->group, s->consumer, idle, s->cursor, "COUNT", cnt };
    return op_sendv(s, "xautoclaim", 8, argv, parse_autoclaim, cb, arg) ? 0 : -1;
}

int stream_set_count(struct stream *s, const char *id, long long count, stream_done *cb, void *arg)
{
    struct idlist one = { 0 };
    idlist_add(&one, id);
    struct stream_op *op = claim_own(s, "xclaim retrycount", &one, count, true, NULL, cb, arg);
    idlist_release(&one);
    return op ? 0 : -1;
}

/* Only the ids another consumer holds are of use from a touch (s->msgs is not touched). */
static int parse_touch(struct stream *s, const struct redis_reply *r)
{
    s->lost.n = 0;
    if (r->type == REDIS_T_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_T_ARRAY)
        for (size_t i = 0; i < r->element[1]->elements; i++)
            if (r->element[1]->element[i]->type == REDIS_T_STRING)
                idlist_add(&s->lost, r->element[1]->element[i]->str);
    return 0;
}

int stream_touch(struct stream *s, const struct idlist *ids, stream_done *cb, void *arg)
{
    return claim_own(s, "xclaim justid", ids, -1, true, parse_touch, cb, arg) ? 0 : -1;
}

int stream_seen(struct stream *s, const struct str *keys, size_t n, stream_done *cb, void *arg)
{
    struct args a;
    args_init(&a, n + 1);
    args_adds(&a, "MGET");
    for (size_t i = 0; i < n; i++)
        args_add(&a, keys[i].p, keys[i].len);
    struct stream_op *op = op_send(s, "mget", a.argc, a.argv, a.len, NULL, NULL, cb, arg);
    args_release(&a);
    return op ? 0 : -1;
}

void stream_parse_seen(const struct redis_reply *r, size_t n, bool *seen)
{
    for (size_t i = 0; i < n; i++)
        seen[i] = false;
    for (size_t i = 0; r && r->type == REDIS_T_ARRAY && i < r->elements && i < n; i++)
        seen[i] = r->element[i]->type != REDIS_T_NIL;
}

int stream_mark_done(struct stream *s, const struct str *key, long ttl_ms, stream_done *cb, void *arg)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    const char *argv[5] = { "SET", key->p, "1", "PX", ttl };
    size_t len[5] = { 3, key->len, 1, 2, strlen(ttl) };
    return op_send(s, "set done-marker", 5, argv, len, NULL, NULL, cb, arg) ? 0 : -1;
}

/* Our first pending entry after ARGV[2] ('-' or '(id'), sized without sending it: [id,
 * delivery count, bytes of its names and values (-1: its data is gone), their number], or []
 * when there is none. KEYS: stream. ARGV: group, start, consumer. */
static const char probe_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], '+', 1, ARGV[3])\n"
    "if #p == 0 then return {} end\n"
    "local id = p[1][1]\n"
    "local e = redis.call('XRANGE', KEYS[1], id, id)\n"
    "if #e == 0 then return {id, p[1][4], -1, 0} end\n"
    "local n = 0\n"
    "for _, v in ipairs(e[1][2]) do n = n + #v end\n"
    "return {id, p[1][4], n, #e[1][2]}\n";

int stream_probe_pending(struct stream *s, const char *after, stream_done *cb, void *arg)
{
    char start[STREAM_ID_MAX + 1];
    if (strcmp(after, "0") == 0)
        snprintf(start, sizeof start, "-");
    else
        snprintf(start, sizeof start, "(%s", after);
    const char *argv[7] = { "EVAL", probe_lua, "1", s->key, s->group, start, s->consumer };
    return op_sendv(s, "probe pending entry", 7, argv, NULL, cb, arg) ? 0 : -1;
}

int stream_parse_probe(struct stream *s, const struct redis_reply *r, char id[STREAM_ID_MAX], long long *count,
                       long long *bytes, long long *values)
{
    if (r->type == REDIS_T_ARRAY && r->elements == 4 && r->element[0]->type == REDIS_T_STRING &&
        r->element[1]->type == REDIS_T_INTEGER && r->element[2]->type == REDIS_T_INTEGER &&
        r->element[3]->type == REDIS_T_INTEGER) {
        snprintf(id, STREAM_ID_MAX, "%s", r->element[0]->str);
        *count = r->element[1]->integer;
        *bytes = r->element[2]->integer;
        *values = r->element[3]->integer;
        return 1;
    }
    if (r->type != REDIS_T_ARRAY || r->elements != 0) {
        set_err(s, SERR_REPLY, "probe pending entry", "unexpected reply shape");
        return -1;
    }
    return 0;
}

/* Delete consumers of the group that hold nothing and have been idle for long, atomically:
 * XGROUP DELCONSUMER silently drops a consumer's pending entries, so the check and the
 * delete must see the same state. KEYS: stream. ARGV: group, idle ms, our own name. */
static const char prune_lua[] =
    "local n = 0\n"
    "for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do\n"
    "  local name, pending, idle\n"
    "  for i = 1, #c, 2 do\n"
    "    if c[i] == 'name' then name = c[i + 1]\n"
    "    elseif c[i] == 'pending' then pending = c[i + 1]\n"
    "    elseif c[i] == 'idle' then idle = c[i + 1] end\n"
    "  end\n"
    "  if name ~= ARGV[3] and pending == 0 and idle >= tonumber(ARGV[2]) then\n"
    "    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], name)\n"
    "    n = n + 1\n"
    "  end\n"
    "end\n"
    "return n\n";

int stream_prune_consumers(struct stream *s, long idle_ms, stream_done *cb, void *arg)
{
    char idle[24];
    snprintf(idle, sizeof idle, "%ld", idle_ms);
    const char *argv[7] = { "EVAL", prune_lua, "1", s->key, s->group, idle, s->consumer };
    return op_sendv(s, "prune consumers", 7, argv, NULL, cb, arg) ? 0 : -1;
}

int stream_adopt(struct stream *s, const char *id, long long count, stream_done *cb, void *arg)
{
    /* An idle time no entry reaches: an entry in someone's pending list is left alone, only
     * one in nobody's is created (FORCE), with its delivery count, as ours. */
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%lld", count > 0 ? count : 1);
    const char *argv[10] = { "XCLAIM", s->key, s->group, s->consumer, "4000000000000000", id,
                             "FORCE", "JUSTID", "RETRYCOUNT", cnt };
    return op_sendv(s, "xclaim force", 10, argv, NULL, cb, arg) ? 0 : -1;
}
