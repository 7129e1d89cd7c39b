/* stream.c: a child's Redis commands, on our client (common/redis.c): one connection, opened
 * by stream_connect() and never reconnected in place (no_reconnect): the child schedules
 * reconnects itself, with its backoff. The synchronous commands wait in redis_call() with a
 * deadline, so a frozen Redis is found by the deadline; the read is queued with
 * redis_command() and its replies come by callback into the batch, while the child polls. */
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

static void set_err(struct stream *s, enum stream_error e, const char *what, const char *detail)
{
    s->err = e;
    snprintf(s->errstr, sizeof s->errstr, "%s: %s", what, detail);
}

/* Deadline of a command: as long as the longest BLOCK and then some, as the socket timeout of
 * hiredis's context was. A frozen Redis is found by it and the connection dropped. */
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

/* The client closes a connection that failed (no_reconnect): then it is of no more use. */
static void drop_if_closed(struct stream *s)
{
    if (s->rc && redis_fd(s->rc) == -1)
        drop(s);
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

/* Run one command and wait for its reply, at most command_ms(). Returns the reply (caller
 * frees with redis_reply_free()) or NULL with s->err. A connection that failed or missed the
 * deadline is closed by the client: it is dropped here. */
static struct redis_reply *command(struct stream *s, const char *what, int argc, const char **argv,
                                   const size_t *argvlen)
{
    s->err = SERR_NONE;
    if (s->rc == NULL) {
        set_err(s, SERR_IO, what, "not connected");
        return NULL;
    }
    /* Only a read is bounded (stream_send_read): a claimed or probed entry may be large. */
    redis_set_max_reply_bytes(s->rc, 0);
    struct redis_reply *r = redis_call(s->rc, argc, argv, argvlen, command_ms(s));
    if (r->type == REDIS_T_ERROR) {
        set_err(s, error_kind(r), what, r->str);
        /* A connection that never came up says why itself ("tls: server certificate verify
         * failed...", "redis refused our credentials..."), not as the command's failure. */
        if (s->connecting && redis_fd(s->rc) == -1 && redis_error(s->rc)[0])
            snprintf(s->errstr, sizeof s->errstr, "%s", redis_error(s->rc));
        redis_reply_free(r);
        drop_if_closed(s);
        return NULL;
    }
    return r;
}

int stream_connect(struct stream *s)
{
    /* One connection, never reconnected by the client: the child decides when to try again
     * (with its backoff), and rebuilds what it holds on the new connection. The client sends
     * AUTH and SELECT first, then our first command: the creation of the group. */
    struct redis_opts o = { .connect_timeout_ms = CONNECT_MS, .no_reconnect = true,
                            .client_name = "streamfleet-worker" };
    stream_disconnect(s);
    s->rc = redis_open(s->addr, &o);
    s->connecting = true;
    int rc = stream_create_group(s, false);
    s->connecting = false;
    if (rc == -1) {
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
    struct redis_reply *r = command(s, "create group", 8, argv, len);
    if (r == NULL) {
        /* At maxmemory Redis refuses XGROUP CREATE (a write). The group is missing (the script
         * looked first), so nothing can be read: an error like any other, retried with backoff. */
        if (s->err == SERR_REPLY && strstr(s->errstr, "OOM "))
            s->err = SERR_OOM;
        return -1;
    }
    if (r->type != REDIS_T_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_T_INTEGER ||
        r->element[1]->type != REDIS_T_STRING) {
        set_err(s, SERR_REPLY, "create group", "unexpected reply");
        redis_reply_free(r);
        return -1;
    }
    s->group_created = r->element[0]->integer == 1;
    snprintf(s->group_at, sizeof s->group_at, "%s", r->element[1]->str);
    redis_reply_free(r);
    return 0;
}

void stream_disconnect(struct stream *s)
{
    stream_batch_release(s);
    arena_release(&s->arena);
    if (s->rc)
        drop(s);
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

/* The argv of XACK key group id... Caller frees both. */
static int ack_argv(const struct stream *s, const struct idlist *ids, const char ***argvp, size_t **lenp)
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
    *argvp = argv;
    *lenp = len;
    return (int)argc;
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

int stream_send_read(struct stream *s, const struct idlist *acks, const char *from, int count,
                     long block_ms)
{
    s->expect = 0;
    s->acked = 0;
    s->acks_sent = false;
    s->read_state = 0;
    /* An entry's names and values are at most max_message_bytes; RESP adds a few bytes to
     * each, and the ids come on top: twice the size plus 64 KiB leaves room for entries of
     * many small fields. */
    size_t entry = s->entry_limit ? s->entry_limit : (size_t)s->max_message_bytes * 2 + 65536;
    s->read_limit = (size_t)(count > 0 ? count : 1) * entry;
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
        const char **argv;
        size_t *len;
        int argc = ack_argv(s, acks, &argv, &len);
        int rc = redis_command(s->rc, argc, argv, len, read_ack_cb, s, timeout);
        free(argv);
        free(len);
        if (rc == -1)
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
    if (redis_command(s->rc, argc, argv, len, read_cb, s, timeout) == -1)
        goto fail;
    s->expect++;
    /* Write now what can be written; the rest goes when stream_events() asks for POLLOUT. */
    redis_run(s->rc, 0, redis_now_ms());
    if (redis_fd(s->rc) == -1)
        goto fail;
    return 0;
fail:
    set_err(s, SERR_IO, "xreadgroup", redis_error(s->rc)[0] ? redis_error(s->rc) : "not connected");
    stream_disconnect(s);
    return -1;
}

/* Turn a list of entries [[id, [f, v, ...] | nil], ...] into s->msgs. */
static void parse_entries(struct stream *s, const struct redis_reply *entries)
{
    size_t nfields = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        struct redis_reply *e = entries->element[i];
        if (e->type == REDIS_T_ARRAY && e->elements == 2 && e->element[1]->type == REDIS_T_ARRAY)
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
        m->stream = s->key;
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
    if (last)
        snprintf(s->last_id, sizeof s->last_id, "%s", last);
}

/* The XREADGROUP reply: nil (timeout) or [[key, [[id, [f, v, ...] | nil], ...]]]; anything
 * else is an error, never a crash. */
int stream_parse_read(struct stream *s, const struct redis_reply *r)
{
    s->n = 0;
    s->vanished.n = 0;
    if (r->type == REDIS_T_NIL)
        return 0;
    if (r->type != REDIS_T_ARRAY || r->elements < 1 || r->element[0]->type != REDIS_T_ARRAY ||
        r->element[0]->elements != 2 || r->element[0]->element[1]->type != REDIS_T_ARRAY) {
        set_err(s, SERR_REPLY, "xreadgroup", "unexpected reply shape");
        return -1;
    }
    parse_entries(s, r->element[0]->element[1]);
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
    parse_entries(s, r->element[0]);
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
    parse_entries(s, r->element[1]);
    return 0;
}

/* An entry id "ms-seq" as two numbers. Returns 0, or -1 when text is not one. */
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
            if (i >= id->len || id->p[i] != '-')
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

static struct redis_reply *claim_own(struct stream *s, const char *what, const struct idlist *ids,
                             long long retrycount, bool justid)
{
    char rc[24];
    snprintf(rc, sizeof rc, "%lld", retrycount < 0 ? -1 : retrycount);
    size_t argc = 8 + ids->n;
    const char **argv = xmalloc(argc * sizeof *argv);
    size_t *len = xmalloc(argc * sizeof *len);
    argv[0] = "EVAL";
    argv[1] = claim_own_lua;
    argv[2] = "1";
    argv[3] = s->key;
    argv[4] = s->group;
    argv[5] = s->consumer;
    argv[6] = rc;
    argv[7] = justid ? "1" : "0";
    for (size_t i = 0; i < ids->n; i++)
        argv[8 + i] = ids->id[i];
    for (size_t i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    struct redis_reply *r = command(s, what, (int)argc, argv, len);
    free(argv);
    free(len);
    return r;
}

int stream_claim(struct stream *s, const struct idlist *ids, long long retrycount)
{
    stream_batch_release(s);
    s->lost.n = 0;
    struct redis_reply *r = claim_own(s, "xclaim", ids, retrycount, false);
    if (r == NULL)
        return -1;
    /* Into the batch's arena, like a read's reply: one way to own and release a batch. */
    s->reply = copy_reply(&s->arena, r);
    redis_reply_free(r);
    if (stream_parse_claim(s, s->reply) == -1) {
        stream_batch_release(s);
        return -1;
    }
    return 0;
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
    redis_run(s->rc, POLLIN, redis_now_ms());
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

int stream_ack(struct stream *s, const struct idlist *ids, uint64_t *acked)
{
    if (ids->n == 0) {
        *acked = 0;
        return 0;
    }
    const char **argv;
    size_t *len;
    int argc = ack_argv(s, ids, &argv, &len);
    struct redis_reply *r = command(s, "xack", argc, argv, len);
    free(argv);
    free(len);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_T_INTEGER) {
        *acked = (uint64_t)r->integer;
    } else {
        set_reply_err(s, "xack", r);
        rc = -1;
    }
    redis_reply_free(r);
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
    struct redis_reply *r = command(s, "xpending", 7, argv, len);
    if (r == NULL)
        return -1;
    stream_parse_pending(r, msgs, n, counts);
    redis_reply_free(r);
    return 0;
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

/* Keep a reply of a pipeline (a copy in *arg), for the caller to look at once the last
 * command of the pipeline has answered: replies come in order. */
static void keep_cb(void *arg, const struct redis_reply *v)
{
    *(struct redis_reply **)arg = redis_reply_dup(v);
}

/* The move of an entry with more fields than Lua can pass on: the worker reads the entry,
 * then sends MULTI; XADD dlq * <fields, by argv: binary-safe> <dlq.*>; EVAL check; EXEC. */
static int dead_letter_many(struct stream *s, const char *dlq, const char *id, const char *const extra[12])
{
    const char *rargv[4] = { "XRANGE", s->key, id, id };
    size_t rlen[4] = { 6, strlen(s->key), strlen(id), strlen(id) };
    struct redis_reply *e = command(s, "dead-letter xrange", 4, rargv, rlen);
    if (e == NULL)
        return -2;
    int rc = -2;
    const char **argv = NULL;
    size_t *len = NULL;
    if (e->type != REDIS_T_ARRAY || e->elements == 0 || e->element[0]->type != REDIS_T_ARRAY ||
        e->element[0]->elements != 2 || e->element[0]->element[1]->type != REDIS_T_ARRAY) {
        rc = -5;        /* gone meanwhile (or odd): the script path decides */
        goto out;
    }
    const struct redis_reply *kv = e->element[0]->element[1];
    size_t argc = 3 + kv->elements + 12;
    argv = xmalloc(argc * sizeof *argv);
    len = xmalloc(argc * sizeof *len);
    argv[0] = "XADD";
    len[0] = 4;
    argv[1] = dlq;
    len[1] = strlen(dlq);
    argv[2] = "*";
    len[2] = 1;
    size_t k = 3;
    for (size_t i = 0; i < kv->elements; i++, k++) {
        const struct redis_reply *v = kv->element[i];
        argv[k] = v->type == REDIS_T_STRING ? v->str : "";
        len[k] = v->type == REDIS_T_STRING ? v->len : 0;
    }
    for (size_t i = 0; i < 12; i++, k++) {
        argv[k] = extra[i];
        len[k] = strlen(extra[i]);
    }
    const char *margv[1] = { "MULTI" };
    size_t mlen[1] = { 5 };
    const char *xargv[1] = { "EXEC" };
    size_t xlen[1] = { 4 };
    const char *cargv[9] = { "EVAL", dead_letter_check_lua, "2", s->key, dlq, s->group, id, s->consumer,
                             extra[11] };
    size_t clen[9];
    for (int i = 0; i < 9; i++)
        clen[i] = strlen(cargv[i]);
    /* MULTI's +OK, two +QUEUED (or errors: EXEC then aborts), EXEC's [xadd, eval]: one round
     * trip, EXEC's reply waited for last. A connection that fails gives each its error. */
    struct redis_reply *queued[3] = { NULL, NULL, NULL };
    redis_set_max_reply_bytes(s->rc, 0);
    long timeout = command_ms(s);
    if (redis_command(s->rc, 1, margv, mlen, keep_cb, &queued[0], timeout) == -1 ||
        redis_command(s->rc, (int)k, argv, len, keep_cb, &queued[1], timeout) == -1 ||
        redis_command(s->rc, 9, cargv, clen, keep_cb, &queued[2], timeout) == -1) {
        set_err(s, SERR_IO, "dead-letter", redis_error(s->rc)[0] ? redis_error(s->rc) : "not connected");
        drop(s);
        for (int i = 0; i < 3; i++)
            redis_reply_free(queued[i]);
        goto out;
    }
    struct redis_reply *x = redis_call(s->rc, 1, xargv, xlen, timeout);
    for (int i = 0; i < 3; i++)
        if (queued[i] == NULL)      /* not answered: never so while EXEC's reply came after */
            queued[i] = redis_reply_dup(x);
    if (x) {
        const struct redis_reply *why = NULL;   /* the first error, for s->errstr */
        for (int i = 0; i < 3 && why == NULL; i++)
            if (queued[i]->type == REDIS_T_ERROR)
                why = queued[i];
        if (x->type == REDIS_T_ARRAY && x->elements == 2 && x->element[1]->type == REDIS_T_INTEGER) {
            rc = (int)x->element[1]->integer;
            if (rc == -3) {         /* the XADD failed: say why */
                why = x->element[0]->type == REDIS_T_ERROR ? x->element[0] : NULL;
                rc = -2;
            }
        } else if (x->type == REDIS_T_ARRAY && x->elements == 2 && x->element[1]->type == REDIS_T_ERROR) {
            why = x->element[1];
        } else if (x->type == REDIS_T_ERROR && why == NULL) {
            why = x;
        }
        if (rc == -2)
            set_err(s, why ? error_kind(why) : SERR_REPLY, "dead-letter", why ? why->str : "unexpected reply");
        redis_reply_free(x);
    }
    for (int i = 0; i < 3; i++)
        redis_reply_free(queued[i]);
    drop_if_closed(s);
out:
    free(argv);
    free(len);
    redis_reply_free(e);
    return rc;
}

int stream_dead_letter(struct stream *s, const char *dlq, const char *id, const char *reason,
                       long long attempts, const char *error, long long now_unix_ms)
{
    char att[24], when[24], most[24];
    snprintf(att, sizeof att, "%lld", attempts);
    snprintf(when, sizeof when, "%lld", now_unix_ms);
    snprintf(most, sizeof most, "%d", DEAD_LETTER_LUA_VALUES);
    /* Twice at most: an entry with many fields deleted between the two paths comes back to
     * the script, which acknowledges it. */
    for (int round = 0; round < 2; round++) {
        const char *argv[13] = { "EVAL", dead_letter_lua, "2", s->key, dlq, s->group, id, s->consumer,
                                 reason, att, error ? error : "", when, most };
        size_t len[13];
        for (int i = 0; i < 13; i++)
            len[i] = strlen(argv[i]);
        struct redis_reply *r = command(s, "dead-letter", 13, argv, len);
        if (r == NULL)
            return -2;
        int rc = r->type == REDIS_T_INTEGER ? (int)r->integer : -2;
        redis_reply_free(r);
        if (rc != -4)
            return rc;
        const char *const extra[12] = { "dlq.stream", s->key, "dlq.id", id, "dlq.reason", reason,
                                         "dlq.attempts", att, "dlq.error", error ? error : "",
                                         "dlq.time", when };
        rc = dead_letter_many(s, dlq, id, extra);
        if (rc != -5)
            return rc;
    }
    return 0;
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
    struct redis_reply *r = command(s, "xautoclaim", 8, argv, len);
    if (r == NULL)
        return -1;
    /* Into the batch's arena, like a read's reply: one way to own and release a batch. */
    s->reply = copy_reply(&s->arena, r);
    redis_reply_free(r);
    if (stream_parse_autoclaim(s, s->reply, cursor, deleted) == -1) {
        stream_batch_release(s);
        return -1;
    }
    return 0;
}

int stream_set_count(struct stream *s, const char *id, long long count)
{
    struct idlist one = { 0 };
    idlist_add(&one, id);
    struct redis_reply *r = claim_own(s, "xclaim retrycount", &one, count, true);
    idlist_release(&one);
    if (r == NULL)
        return -1;
    redis_reply_free(r);
    return 0;
}

int stream_touch(struct stream *s, const struct idlist *ids)
{
    s->lost.n = 0;
    if (ids->n == 0)
        return 0;
    struct redis_reply *r = claim_own(s, "xclaim justid", ids, -1, true);
    if (r == NULL)
        return -1;
    /* Only the ids another consumer holds are of use here (s->msgs is not touched). */
    if (r->type == REDIS_T_ARRAY && r->elements == 2 && r->element[1]->type == REDIS_T_ARRAY)
        for (size_t i = 0; i < r->element[1]->elements; i++)
            if (r->element[1]->element[i]->type == REDIS_T_STRING)
                idlist_add(&s->lost, r->element[1]->element[i]->str);
    redis_reply_free(r);
    return 0;
}

int stream_seen(struct stream *s, const struct str *keys, size_t n, bool *seen)
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
        argv[1 + i] = keys[i].p;
        len[1 + i] = keys[i].len;
    }
    struct redis_reply *r = command(s, "mget", (int)n + 1, argv, len);
    free(argv);
    free(len);
    if (r == NULL)
        return -1;
    for (size_t i = 0; r->type == REDIS_T_ARRAY && i < r->elements && i < n; i++)
        seen[i] = r->element[i]->type != REDIS_T_NIL;
    redis_reply_free(r);
    return 0;
}

/* The replies to a pipeline of SETs: the first error is kept in s. */
static void mark_done_cb(void *arg, const struct redis_reply *v)
{
    struct stream *s = arg;
    if (v->type == REDIS_T_ERROR && s->err == SERR_NONE)
        set_err(s, error_kind(v), "set done-marker", v->str);
}

int stream_mark_done(struct stream *s, const struct str *keys, size_t n, long ttl_ms)
{
    s->err = SERR_NONE;
    if (n == 0)
        return 0;
    if (s->rc == NULL) {
        set_err(s, SERR_IO, "set done-marker", "not connected");
        return -1;
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%ld", ttl_ms);
    /* Pipelined: all but the last by callback, the last waited for (replies come in order,
     * so the others have answered by then, or failed with the connection). */
    redis_set_max_reply_bytes(s->rc, 0);
    for (size_t i = 0; i + 1 < n; i++) {
        const char *argv[5] = { "SET", keys[i].p, "1", "PX", ttl };
        size_t len[5] = { 3, keys[i].len, 1, 2, strlen(ttl) };
        if (redis_command(s->rc, 5, argv, len, mark_done_cb, s, command_ms(s)) == -1) {
            set_err(s, SERR_IO, "set done-marker", redis_error(s->rc)[0] ? redis_error(s->rc) : "not connected");
            stream_disconnect(s);
            return -1;
        }
    }
    const char *argv[5] = { "SET", keys[n - 1].p, "1", "PX", ttl };
    size_t len[5] = { 3, keys[n - 1].len, 1, 2, strlen(ttl) };
    struct redis_reply *r = redis_call(s->rc, 5, argv, len, command_ms(s));
    mark_done_cb(s, r);
    redis_reply_free(r);
    if (s->rc && redis_fd(s->rc) == -1) {
        stream_disconnect(s);
        return -1;
    }
    return s->err == SERR_NONE ? 0 : -1;
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

int stream_probe_pending(struct stream *s, const char *after, char id[STREAM_ID_MAX],
                         long long *count, long long *bytes, long long *values)
{
    char start[STREAM_ID_MAX + 1];
    if (strcmp(after, "0") == 0)
        snprintf(start, sizeof start, "-");
    else
        snprintf(start, sizeof start, "(%s", after);
    const char *argv[7] = { "EVAL", probe_lua, "1", s->key, s->group, start, s->consumer };
    size_t len[7];
    for (int i = 0; i < 7; i++)
        len[i] = strlen(argv[i]);
    struct redis_reply *r = command(s, "probe pending entry", 7, argv, len);
    if (r == NULL)
        return -1;
    int rc = 0;
    if (r->type == REDIS_T_ARRAY && r->elements == 4 && r->element[0]->type == REDIS_T_STRING &&
        r->element[1]->type == REDIS_T_INTEGER && r->element[2]->type == REDIS_T_INTEGER &&
        r->element[3]->type == REDIS_T_INTEGER) {
        snprintf(id, STREAM_ID_MAX, "%s", r->element[0]->str);
        *count = r->element[1]->integer;
        *bytes = r->element[2]->integer;
        *values = r->element[3]->integer;
        rc = 1;
    } else if (r->type != REDIS_T_ARRAY || r->elements != 0) {
        set_err(s, SERR_REPLY, "probe pending entry", "unexpected reply shape");
        rc = -1;
    }
    redis_reply_free(r);
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
    struct redis_reply *r = command(s, "prune consumers", 7, argv, len);
    if (r == NULL)
        return -1;
    *removed = r->type == REDIS_T_INTEGER ? r->integer : 0;
    redis_reply_free(r);
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
    struct redis_reply *r = command(s, "xclaim force", 10, argv, len);
    if (r == NULL)
        return -1;
    *adopted = r->type == REDIS_T_ARRAY && r->elements == 1;
    redis_reply_free(r);
    return 0;
}
