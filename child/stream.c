/* stream.c: a child's Redis commands, on hiredis 0.14's synchronous context. */
#include "child/stream.h"
#include "common/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

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
    snprintf(s->consumer, sizeof s->consumer, "%s", consumer);
}

static void set_err(struct stream *s, enum stream_error e, const char *what, const char *detail)
{
    s->err = e;
    snprintf(s->errstr, sizeof s->errstr, "%s: %s", what, detail);
}

/* Classify an error reply by its code (the first word). */
static enum stream_error reply_error_kind(const char *str)
{
    /* Redis 7.0 tells a reader blocked on a stream that was deleted "UNBLOCKED the stream key
     * no longer exists": the group went with it, exactly as NOGROUP says. */
    if (strncmp(str, "NOGROUP", 7) == 0 || strncmp(str, "UNBLOCKED", 9) == 0)
        return SERR_NOGROUP;
    if (strncmp(str, "WRONGTYPE", 9) == 0)
        return SERR_WRONGTYPE;
    if (strncmp(str, "NOAUTH", 6) == 0 || strncmp(str, "WRONGPASS", 9) == 0 ||
        strncmp(str, "NOPERM", 6) == 0)
        return SERR_AUTH;
    return SERR_REPLY;
}

/* Drop a broken connection but keep the batch being handled: its messages point into it. */
static void drop(struct stream *s)
{
    if (s->rc)
        redisFree(s->rc);
    s->rc = NULL;
    s->expect = 0;
}

/* Run one command and check its reply. Returns the reply (caller frees) or NULL with s->err.
 * An I/O error leaves the context unusable: it is dropped here. */
static redisReply *command(struct stream *s, const char *what, int argc, const char **argv,
                           const size_t *argvlen)
{
    s->err = SERR_NONE;
    redisReply *r = redisCommandArgv(s->rc, argc, argv, argvlen);
    if (r == NULL) {
        set_err(s, SERR_IO, what, s->rc->errstr[0] ? s->rc->errstr : "connection lost");
        drop(s);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        set_err(s, reply_error_kind(r->str), what, r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int stream_connect(struct stream *s)
{
    const struct timeval connect_tv = { 2, 0 };
    /* The socket timeout must outlast the longest BLOCK, or every idle read fails. A timeout
     * that fires kills the context, and hiredis 0.14's redisReconnect() forgets it: we never
     * reconnect in place, we build a new context and set it again. */
    long sock_ms = s->block_ms + 5000;
    struct timeval sock_tv = { sock_ms / 1000, (sock_ms % 1000) * 1000 };

    if (s->addr->unix_path)
        s->rc = redisConnectUnixWithTimeout(s->addr->unix_path, connect_tv);
    else
        s->rc = redisConnectWithTimeout(s->addr->host, s->addr->port, connect_tv);
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "connect", "out of memory");
        return -1;
    }
    if (s->rc->err) {
        set_err(s, SERR_IO, "connect", s->rc->errstr);
        stream_disconnect(s);
        return -1;
    }
    if (redisSetTimeout(s->rc, sock_tv) != REDIS_OK) {
        set_err(s, SERR_IO, "set socket timeout", s->rc->errstr);
        stream_disconnect(s);
        return -1;
    }
    redisEnableKeepAlive(s->rc);

    redisReply *r;
    if (s->addr->password) {
        /* By argv, never formatted: the password must not pass through a format string. */
        const char *argv[3] = { "AUTH", s->addr->user, s->addr->password };
        size_t len[3] = { 4, s->addr->user ? strlen(s->addr->user) : 0, strlen(s->addr->password) };
        if (s->addr->user) {
            r = command(s, "auth", 3, argv, len);
        } else {
            argv[1] = s->addr->password;
            len[1] = len[2];
            r = command(s, "auth", 2, argv, len);
        }
        if (r == NULL) {
            stream_disconnect(s);
            return -1;
        }
        freeReplyObject(r);
    }
    if (s->addr->db != 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", s->addr->db);
        const char *argv[2] = { "SELECT", db };
        size_t len[2] = { 6, strlen(db) };
        if ((r = command(s, "select", 2, argv, len)) == NULL) {
            stream_disconnect(s);
            return -1;
        }
        freeReplyObject(r);
    }
    if (stream_create_group(s, false) == -1) {
        stream_disconnect(s);
        return -1;
    }
    return 0;
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

int stream_create_group(struct stream *s, bool forward)
{
    const char *first = s->start_latest ? "$" : "0";
    const char *argv[8] = { "EVAL", group_lua, "1", s->key, s->group, s->resume, first, forward ? "1" : "0" };
    size_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = strlen(argv[i]);
    s->group_created = false;
    redisReply *r = command(s, "create group", 8, argv, len);
    if (r == NULL) {
        /* At maxmemory Redis refuses XGROUP CREATE (a write). The group is missing (the script
         * looked first), so nothing can be read: an error like any other, retried with backoff. */
        if (s->err == SERR_REPLY && strstr(s->errstr, "OOM "))
            s->err = SERR_OOM;
        return -1;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        set_err(s, SERR_REPLY, "create group", "unexpected reply");
        freeReplyObject(r);
        return -1;
    }
    s->group_created = r->element[0]->integer == 1;
    snprintf(s->group_at, sizeof s->group_at, "%s", r->element[1]->str);
    freeReplyObject(r);
    return 0;
}

void stream_disconnect(struct stream *s)
{
    stream_batch_release(s);
    drop(s);
}

bool stream_connected(const struct stream *s)
{
    return s->rc != NULL;
}

int stream_fd(const struct stream *s)
{
    return s->rc ? s->rc->fd : -1;
}

/* Append XACK key group id... to the output buffer. */
static int append_ack(struct stream *s, const struct idlist *ids)
{
    size_t argc = 3 + ids->n;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *len = xmalloc(argc * sizeof *len);
    argv[0] = "XACK";
    len[0] = 4;
    argv[1] = s->key;
    len[1] = strlen(s->key);
    argv[2] = s->group;
    len[2] = strlen(s->group);
    for (size_t i = 0; i < ids->n; i++) {
        argv[3 + i] = ids->id[i];
        len[3 + i] = strlen(ids->id[i]);
    }
    int rc = redisAppendCommandArgv(s->rc, (int)argc, argv, len);
    free(argv);
    free(len);
    return rc == REDIS_OK ? 0 : -1;
}

static int flush(struct stream *s)
{
    int done = 0;
    while (!done) {
        if (redisBufferWrite(s->rc, &done) != REDIS_OK) {
            set_err(s, SERR_IO, "write", s->rc->errstr);
            stream_disconnect(s);
            return -1;
        }
    }
    return 0;
}

int stream_send_read(struct stream *s, const struct idlist *acks, const char *from, int count,
                     long block_ms)
{
    s->expect = 0;
    s->acked = 0;
    s->acks_sent = false;
    s->err = SERR_NONE;         /* stream_recv() tells an XACK that failed by it */
    if (acks && acks->n) {
        if (append_ack(s, acks) == -1)
            goto fail;
        s->acks_sent = true;
        s->expect++;
    }
    char cnt[16], blk[24];
    snprintf(cnt, sizeof cnt, "%d", count);
    snprintf(blk, sizeof blk, "%ld", block_ms);
    const char *argv[11] = { "XREADGROUP", "GROUP", s->group, s->consumer, "COUNT", cnt };
    int argc = 6;
    if (block_ms >= 0) {
        argv[argc++] = "BLOCK";
        argv[argc++] = blk;
    }
    argv[argc++] = "STREAMS";
    argv[argc++] = s->key;
    argv[argc++] = from;
    size_t len[11];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    if (redisAppendCommandArgv(s->rc, argc, argv, len) != REDIS_OK)
        goto fail;
    s->expect++;
    return flush(s);
fail:
    set_err(s, SERR_IO, "xreadgroup", s->rc->errstr);
    stream_disconnect(s);
    return -1;
}

/* Turn a list of entries [[id, [f, v, ...] | nil], ...] into s->msgs. */
static void parse_entries(struct stream *s, redisReply *entries)
{
    size_t nfields = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        redisReply *e = entries->element[i];
        if (e->type == REDIS_REPLY_ARRAY && e->elements == 2 && e->element[1]->type == REDIS_REPLY_ARRAY)
            nfields += e->element[1]->elements;
    }
    if (entries->elements > s->mcap) {
        s->mcap = entries->elements;
        s->msgs = xrealloc(s->msgs, s->mcap * sizeof *s->msgs);
    }
    if (nfields > s->fcap) {
        s->fcap = nfields;
        s->fields = xrealloc(s->fields, s->fcap * sizeof *s->fields);
    }
    struct str *f = s->fields;
    const char *last = NULL;
    for (size_t i = 0; i < entries->elements; i++) {
        redisReply *e = entries->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING) {
            log_warnx("skipping malformed entry %zu in xreadgroup reply", i);
            continue;
        }
        redisReply *id = e->element[0];
        redisReply *kv = e->element[1];
        last = id->str;
        if (kv->type != REDIS_REPLY_ARRAY) {
            /* Re-reading our own pending list returns deleted or trimmed entries with a nil
             * field list: nothing to handle, they only need to leave the PEL. */
            idlist_add(&s->vanished, id->str);
            continue;
        }
        struct msg *m = &s->msgs[s->n++];
        m->stream = s->key;
        m->id.p = id->str;
        m->id.len = id->len;
        m->f = f;
        m->attempt = 1;
        /* Redis never stores an odd field count, but a reply is input: pair what pairs. */
        size_t pairs = kv->elements / 2;
        for (size_t j = 0; j < 2 * pairs; j++) {
            f->p = kv->element[j]->type == REDIS_REPLY_STRING ? kv->element[j]->str : "";
            f->len = kv->element[j]->type == REDIS_REPLY_STRING ? kv->element[j]->len : 0;
            f++;
        }
        m->nf = pairs;
    }
    if (last)
        snprintf(s->last_id, sizeof s->last_id, "%s", last);
}

/* Turn the XREADGROUP reply into s->msgs. A well-formed reply is nil (timeout) or
 * [[key, [[id, [f, v, ...] | nil], ...]]]; anything else is an error, never a crash. */
static int parse_batch(struct stream *s, redisReply *r)
{
    s->n = 0;
    s->vanished.n = 0;
    if (r->type == REDIS_REPLY_NIL)
        return 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_REPLY_ARRAY ||
        r->element[0]->elements != 2 || r->element[0]->element[1]->type != REDIS_REPLY_ARRAY) {
        set_err(s, SERR_REPLY, "xreadgroup", "unexpected reply shape");
        return -1;
    }
    parse_entries(s, r->element[0]->element[1]);
    return 0;
}

/* XCLAIM ids to ourselves with min-idle 0, followed by the options opts[0..nopts). */
static redisReply *xclaim(struct stream *s, const char *what, const struct idlist *ids, const char **opts,
                          size_t nopts)
{
    size_t argc = 5 + ids->n + nopts;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *len = xmalloc(argc * sizeof *len);
    argv[0] = "XCLAIM";
    argv[1] = s->key;
    argv[2] = s->group;
    argv[3] = s->consumer;
    argv[4] = "0";
    for (size_t i = 0; i < ids->n; i++)
        argv[5 + i] = ids->id[i];
    for (size_t i = 0; i < nopts; i++)
        argv[5 + ids->n + i] = opts[i];
    for (size_t i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    redisReply *r = command(s, what, (int)argc, argv, len);
    free(argv);
    free(len);
    return r;
}

int stream_claim(struct stream *s, const struct idlist *ids, long long retrycount)
{
    stream_batch_release(s);
    char rc[24];
    snprintf(rc, sizeof rc, "%lld", retrycount);
    const char *opts[2] = { "RETRYCOUNT", rc };
    redisReply *r = xclaim(s, "xclaim", ids, opts, retrycount >= 0 ? 2 : 0);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_ARRAY) {
        set_err(s, SERR_REPLY, "xclaim", "unexpected reply shape");
        freeReplyObject(r);
        return -1;
    }
    s->reply = r;
    parse_entries(s, r);
    return 0;
}

int stream_recv(struct stream *s)
{
    if (redisBufferRead(s->rc) != REDIS_OK) {
        set_err(s, SERR_IO, "read", s->rc->errstr[0] ? s->rc->errstr : "connection lost");
        stream_disconnect(s);
        return -1;
    }
    while (s->expect > 0) {
        void *v = NULL;
        if (redisGetReplyFromReader(s->rc, &v) != REDIS_OK) {
            set_err(s, SERR_IO, "read", s->rc->errstr);
            stream_disconnect(s);
            return -1;
        }
        if (v == NULL) {
            /* Nothing more is here: wait in poll() (a blocking read may take `block`). */
            if (s->rc->reader->pos >= s->rc->reader->len)
                return 0;
            /* Part of a reply is here: Redis writes a reply whole, so the rest is on its way.
             * Read it now rather than going back to poll() for every 16 KiB. */
            if (redisBufferRead(s->rc) != REDIS_OK) {
                set_err(s, SERR_IO, "read", s->rc->errstr[0] ? s->rc->errstr : "connection lost");
                stream_disconnect(s);
                return -1;
            }
            continue;
        }
        redisReply *r = v;
        s->expect--;
        if (s->acks_sent) {
            s->acks_sent = false;
            if (r->type == REDIS_REPLY_INTEGER) {
                s->acked = (uint64_t)r->integer;
            } else {
                set_err(s, r->type == REDIS_REPLY_ERROR ? reply_error_kind(r->str) : SERR_REPLY,
                        "xack", r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
                freeReplyObject(r);
                /* The read that follows still answers: drain it so the connection stays in step. */
                if (s->expect > 0)
                    continue;
                return -1;
            }
            freeReplyObject(r);
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR) {
            set_err(s, reply_error_kind(r->str), "xreadgroup", r->str);
            freeReplyObject(r);
            return -1;
        }
        if (s->err != SERR_NONE) {      /* the XACK before it failed */
            freeReplyObject(r);
            return -1;
        }
        stream_batch_release(s);
        s->reply = r;
        if (parse_batch(s, r) == -1) {
            stream_batch_release(s);
            return -1;
        }
        return 1;
    }
    return 0;
}

void stream_batch_release(struct stream *s)
{
    if (s->reply)
        freeReplyObject(s->reply);
    s->reply = NULL;
    s->n = 0;
    s->vanished.n = 0;
}

int stream_ack(struct stream *s, const struct idlist *ids, uint64_t *acked)
{
    if (ids->n == 0) {
        *acked = 0;
        return 0;
    }
    if (append_ack(s, ids) == -1) {
        set_err(s, SERR_IO, "xack", s->rc->errstr);
        stream_disconnect(s);
        return -1;
    }
    void *v = NULL;
    if (redisGetReply(s->rc, &v) != REDIS_OK) {
        set_err(s, SERR_IO, "xack", s->rc->errstr);
        stream_disconnect(s);
        return -1;
    }
    redisReply *r = v;
    int rc = 0;
    if (r->type == REDIS_REPLY_INTEGER) {
        *acked = (uint64_t)r->integer;
    } else {
        set_err(s, r->type == REDIS_REPLY_ERROR ? reply_error_kind(r->str) : SERR_REPLY, "xack",
                r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        rc = -1;
    }
    freeReplyObject(r);
    return rc;
}

int stream_delivery_counts(struct stream *s, const struct msg *msgs, size_t n, size_t limit,
                           long long *counts)
{
    for (size_t i = 0; i < n; i++)
        counts[i] = 0;
    if (n == 0)
        return 0;
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%zu", limit > n ? limit : n);
    const char *argv[7] = { "XPENDING", s->key, s->group, msgs[0].id.p, msgs[n - 1].id.p, cnt, s->consumer };
    size_t len[7];
    for (int i = 0; i < 7; i++)
        len[i] = strlen(argv[i]);
    redisReply *r = command(s, "xpending", 7, argv, len);
    if (r == NULL)
        return -1;
    /* Both lists are in id order: walk them together. */
    size_t j = 0;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements; i++) {
        redisReply *e = r->element[i];
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 || e->element[0]->type != REDIS_REPLY_STRING)
            continue;
        while (j < n && strcmp(msgs[j].id.p, e->element[0]->str) != 0)
            j++;
        if (j == n)
            break;
        counts[j++] = e->element[3]->integer;
    }
    freeReplyObject(r);
    return 0;
}

/* Move one entry to the dead-letter stream and acknowledge it, in one atomic step. A Lua
 * script, not MULTI/EXEC: EXEC does not roll back, so a failing XADD (wrong key type, out of
 * memory) would still let the XACK run and lose the message. The script reads the fields
 * from the stream itself, so the dead letter holds them exactly as they were added.
 * KEYS: stream, dlq. ARGV: group, id, consumer, reason, attempts, error, time. */
static const char dead_letter_lua[] =
    "local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)\n"
    "if #p == 0 or p[1][2] ~= ARGV[3] then return 0 end\n"
    "local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])\n"
    "if #e == 0 then\n"
    "  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "  return -1\n"
    "end\n"
    "local f = e[1][2]\n"
    "local extra = {'dlq.stream', KEYS[1], 'dlq.id', ARGV[2], 'dlq.reason', ARGV[4],\n"
    "               'dlq.attempts', ARGV[5], 'dlq.error', ARGV[6], 'dlq.time', ARGV[7]}\n"
    "for i = 1, #extra do f[#f + 1] = extra[i] end\n"
    "redis.call('XADD', KEYS[2], '*', unpack(f))\n"
    "redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])\n"
    "return 1\n";

int stream_dead_letter(struct stream *s, const char *dlq, const char *id, const char *reason,
                       long long attempts, const char *error, long long now_unix_ms)
{
    char att[24], when[24];
    snprintf(att, sizeof att, "%lld", attempts);
    snprintf(when, sizeof when, "%lld", now_unix_ms);
    const char *argv[12] = { "EVAL", dead_letter_lua, "2", s->key, dlq, s->group, id, s->consumer,
                             reason, att, error ? error : "", when };
    size_t len[12];
    for (int i = 0; i < 12; i++)
        len[i] = strlen(argv[i]);
    redisReply *r = command(s, "dead-letter", 12, argv, len);
    if (r == NULL)
        return -2;
    int rc = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -2;
    freeReplyObject(r);
    return rc;
}

int stream_autoclaim(struct stream *s, long min_idle_ms, char cursor[STREAM_ID_MAX], int count,
                     size_t *deleted)
{
    stream_batch_release(s);
    *deleted = 0;
    char idle[24], cnt[16];
    snprintf(idle, sizeof idle, "%ld", min_idle_ms);
    snprintf(cnt, sizeof cnt, "%d", count);
    const char *argv[8] = { "XAUTOCLAIM", s->key, s->group, s->consumer, idle, cursor, "COUNT", cnt };
    size_t len[8];
    for (int i = 0; i < 8; i++)
        len[i] = strlen(argv[i]);
    redisReply *r = command(s, "xautoclaim", 8, argv, len);
    if (r == NULL)
        return -1;
    /* [next-cursor, [entries], [deleted ids]] (Redis 7). The deleted ids are entries whose
     * data was trimmed or deleted: Redis already dropped them from the pending list. */
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 2 || r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_ARRAY) {
        set_err(s, SERR_REPLY, "xautoclaim", "unexpected reply shape");
        freeReplyObject(r);
        return -1;
    }
    snprintf(cursor, STREAM_ID_MAX, "%s", r->element[0]->str);
    if (r->elements >= 3 && r->element[2]->type == REDIS_REPLY_ARRAY)
        *deleted = r->element[2]->elements;
    s->reply = r;
    parse_entries(s, r->element[1]);
    return 0;
}

int stream_set_count(struct stream *s, const char *id, long long count)
{
    struct idlist one = { 0 };
    idlist_add(&one, id);
    char rc[24];
    snprintf(rc, sizeof rc, "%lld", count);
    const char *opts[3] = { "RETRYCOUNT", rc, "JUSTID" };
    redisReply *r = xclaim(s, "xclaim retrycount", &one, opts, 3);
    idlist_release(&one);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int stream_touch(struct stream *s, const struct idlist *ids)
{
    if (ids->n == 0)
        return 0;
    const char *opts[1] = { "JUSTID" };
    redisReply *r = xclaim(s, "xclaim justid", ids, opts, 1);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int stream_seen(struct stream *s, char **keys, size_t n, bool *seen)
{
    for (size_t i = 0; i < n; i++)
        seen[i] = false;
    if (n == 0)
        return 0;
    const char **argv = xmalloc((n + 1) * sizeof *argv);
    size_t *len = xmalloc((n + 1) * sizeof *len);
    argv[0] = "MGET";
    len[0] = 4;
    for (size_t i = 0; i < n; i++) {
        argv[1 + i] = keys[i];
        len[1 + i] = strlen(keys[i]);
    }
    redisReply *r = command(s, "mget", (int)n + 1, argv, len);
    free(argv);
    free(len);
    if (r == NULL)
        return -1;
    for (size_t i = 0; r->type == REDIS_REPLY_ARRAY && i < r->elements && i < n; i++)
        seen[i] = r->element[i]->type != REDIS_REPLY_NIL;
    freeReplyObject(r);
    return 0;
}

int stream_mark_done(struct stream *s, char **keys, size_t n, long ttl_ms)
{
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    for (size_t i = 0; i < n; i++) {
        const char *argv[5] = { "SET", keys[i], "1", "PX", ttl };
        size_t len[5] = { 3, strlen(keys[i]), 1, 2, strlen(ttl) };
        if (redisAppendCommandArgv(s->rc, 5, argv, len) != REDIS_OK) {
            set_err(s, SERR_IO, "set done-marker", s->rc->errstr);
            stream_disconnect(s);
            return -1;
        }
    }
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        void *v = NULL;
        if (redisGetReply(s->rc, &v) != REDIS_OK) {
            set_err(s, SERR_IO, "set done-marker", s->rc->errstr);
            stream_disconnect(s);
            return -1;
        }
        redisReply *r = v;
        if (r->type == REDIS_REPLY_ERROR && rc == 0) {
            set_err(s, reply_error_kind(r->str), "set done-marker", r->str);
            rc = -1;
        }
        freeReplyObject(r);
    }
    return rc;
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

int stream_prune_consumers(struct stream *s, long idle_ms, long long *removed)
{
    char idle[24];
    snprintf(idle, sizeof idle, "%ld", idle_ms);
    const char *argv[7] = { "EVAL", prune_lua, "1", s->key, s->group, idle, s->consumer };
    size_t len[7];
    for (int i = 0; i < 7; i++)
        len[i] = strlen(argv[i]);
    redisReply *r = command(s, "prune consumers", 7, argv, len);
    if (r == NULL)
        return -1;
    *removed = r->type == REDIS_REPLY_INTEGER ? r->integer : 0;
    freeReplyObject(r);
    return 0;
}

int stream_adopt(struct stream *s, const char *id, long long count, bool *adopted)
{
    /* An idle time no entry reaches: an entry in someone's pending list is left alone, only
     * one in nobody's is created (FORCE), with its delivery count, as ours. */
    char cnt[24];
    snprintf(cnt, sizeof cnt, "%lld", count > 0 ? count : 1);
    const char *argv[10] = { "XCLAIM", s->key, s->group, s->consumer, "4000000000000000", id,
                             "FORCE", "JUSTID", "RETRYCOUNT", cnt };
    size_t len[10];
    for (int i = 0; i < 10; i++)
        len[i] = strlen(argv[i]);
    redisReply *r = command(s, "xclaim force", 10, argv, len);
    if (r == NULL)
        return -1;
    *adopted = r->type == REDIS_REPLY_ARRAY && r->elements == 1;
    freeReplyObject(r);
    return 0;
}
