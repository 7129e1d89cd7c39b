/* stream.h: every Redis command a child sends, over one connection of our client
 * (common/redis.c, the only file that includes hiredis; TLS on rediss://). A child reads its
 * pool's stream through the consumer group with XREADGROUP and acknowledges with XACK; an
 * XACK of the previous batch and the XREADGROUP of the next share a round trip (pipelined).
 * Every command is queued, never waited for: the caller polls stream_fd()/stream_events()
 * within stream_timeout_ms() and calls stream_run(); the read's outcome is then taken with
 * stream_recv(), every other command's comes to the callback given when it was sent
 * (stream_done), exactly once, also when the connection is dropped. So a signal, a handler's
 * descriptors or the heartbeat are never held up by Redis. */
#ifndef SF_STREAM_H
#define SF_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "child/msg.h"
#include "common/arena.h"
#include "common/conf.h"

#define STREAM_ID_MAX 48        /* "18446744073709551615-18446744073709551615" fits */

/* A list of entry ids to acknowledge. Owns its memory: idlist_release(). */
struct idlist {
    char (*id)[STREAM_ID_MAX];
    size_t n, cap;
};
void idlist_add(struct idlist *l, const char *id);
void idlist_release(struct idlist *l);

enum stream_error {
    SERR_NONE,
    SERR_IO,          /* connection lost or refused, timeout: reconnect with backoff */
    SERR_AUTH,        /* wrong password or ACL: the config cannot work */
    SERR_NOGROUP,     /* the group or the stream is gone: re-create it */
    SERR_WRONGTYPE,   /* the key holds something else than a stream */
    SERR_REPLY,       /* any other error reply */
    SERR_OOM,         /* Redis at maxmemory refused to create the missing group */
    SERR_OVERSIZE,    /* a read's reply outgrew its bound: the connection was dropped */
};

struct redis;
struct redis_reply;
struct stream;
struct stream_op;

/* The completion of a command: v is its reply (valid during the call only; already parsed into
 * s where the function says so), or NULL when it failed (s->err, s->errstr say why: an error
 * reply, a deadline missed, the connection lost or dropped). */
typedef void stream_done(struct stream *s, void *arg, const struct redis_reply *v);

struct stream {
    const struct redis_addr *addr;
    const char *key;
    const char *group;
    char consumer[300];
    long block_ms;
    long long max_message_bytes;
    struct redis *rc;           /* NULL: not connected */
    enum stream_error err;
    char errstr[256];
    bool group_created;         /* stream_create_group() made the group (it did not exist) */
    bool start_latest;          /* group_start = latest: a first creation starts at "$" */
    char resume[STREAM_ID_MAX]; /* set by the caller: the last entry the fleet is known to have
                                 * had delivered ("": none known), where a lost group restarts */
    char group_at[STREAM_ID_MAX]; /* the group's last-delivered-id after stream_create_group() */

    /* The batch being received: entries point into reply, a copy in arena, valid until
     * stream_batch_release. */
    struct redis_reply *reply;
    struct arena arena;
    struct msg *msgs;
    size_t n, mcap;
    struct str *fields;
    size_t fcap;
    char last_id[STREAM_ID_MAX]; /* the last entry id of the batch, vanished ones included */
    struct idlist vanished;     /* entries of the batch whose data was deleted (nil fields) */
    int expect;                 /* replies still to come for the request sent */
    bool acks_sent;
    uint64_t acked;             /* XACK's count for the acks sent with the request */
    int read_state;             /* the read's outcome, set by its reply: 1 done, -1 failed */
    bool shard_fresh;           /* stream_send_read_shards(): no shard has answered yet */
    size_t shard_cap;           /* ... the shards asked (the most pairs its reply can hold) */
    bool connecting;            /* until the group's reply after stream_connect(): a failure
                                 * is the connection's */
    size_t read_limit;          /* more than this for one read: SERR_OVERSIZE */
    size_t entry_limit;         /* the bound of one entry in a read (0: from max_message_bytes) */
    struct idlist lost;         /* ids a claim found held by another consumer (not claimed) */
    char cursor[STREAM_ID_MAX]; /* XAUTOCLAIM's next cursor ("0-0": scanned to the end) */
    size_t deleted;             /* entries XAUTOCLAIM found without data */
    struct stream_op *ops, *ops_tail; /* commands on the wire (the read excepted) */
    const char *op_key;         /* during a command's completion: the stream it was about
                                 * (claims fill s->msgs with it: s->key may have changed) */
};

/* Fill s for the pool's stream and group under consumer name consumer. No I/O. */
void stream_init(struct stream *s, const struct redis_addr *addr, const struct pool_conf *p,
                 const char *consumer);
/* Start connecting (TLS for rediss://; the client sends AUTH, SELECT, SETNAME first) and queue
 * the creation of the group (stream_create_group()): cb says when the connection is ready.
 * Returns 0, or -1 with s->err, s->errstr (cb is not called). */
int stream_connect(struct stream *s, stream_done *cb, void *arg);
/* The stream the next commands are about (a pool of several streams; one of the pool's
 * stream names, which outlive s). A command keeps the key it was sent with: its completion
 * sees it in s->op_key. */
void stream_use(struct stream *s, const char *key);
/* Drop the connection; every command still on the wire completes now, failed. */
void stream_disconnect(struct stream *s);
bool stream_connected(const struct stream *s);
/* The connection failed (a deadline, an I/O error): stream_disconnect() it. */
bool stream_closed(const struct stream *s);
/* Do what the connection can do without blocking (revents: of stream_fd(), or 0): write,
 * read, dispatch replies to their callbacks, fire deadlines. */
void stream_run(struct stream *s, short revents);
/* Milliseconds until stream_run() is due without I/O (a deadline), or -1. */
long stream_timeout_ms(const struct stream *s);
/* Commands on the wire (the read excepted). */
size_t stream_outstanding(const struct stream *s);
/* The descriptor to poll while a read is outstanding, and the events to poll it for (POLLIN,
 * and POLLOUT while part of the request is still to be written); -1 and 0 when not connected.
 * Call stream_recv() when it is ready. */
int stream_fd(const struct stream *s);
short stream_events(const struct stream *s);
/* Make sure the group exists (MKSTREAM), atomically. A missing group is created after
 * s->resume, the last entry the fleet is known to have had delivered (or at the stream's last
 * entry when that is older), or, with no such knowledge, at the start of the stream ("0") or
 * after its end ("$", group_start = latest). With forward, an existing group behind s->resume
 * (re-created by another worker after the same loss) is moved up to it, never back. Sets
 * s->group_created and s->group_at before cb. A failure: s->err (SERR_OOM: Redis at maxmemory
 * cannot create the missing group; SERR_WRONGTYPE: the key is no stream). Returns 0 or -1. */
int stream_create_group(struct stream *s, bool forward, stream_done *cb, void *arg);
/* Put entry id back into our pending list, with delivery count count, unless it is in some
 * consumer's pending list already (XCLAIM FORCE JUSTID with an unreachable idle time): after
 * the group was re-created, the entries this worker still holds (in flight, waiting for a
 * retry or a dead-letter move) are pending nowhere. The reply is an array of one id when it
 * was put back. Returns 0 or -1 with s->err. An entry deleted from the stream is not put back. */
int stream_adopt(struct stream *s, const char *id, long long count, stream_done *cb, void *arg);

/* Send XACK of acks (when any) and XREADGROUP COUNT count [BLOCK block_ms] from id `from`
 * ("0" or an id: this consumer's pending entries after it; ">": new entries). block_ms < 0:
 * no BLOCK. The reply may take count x s->entry_limit bytes (by default twice
 * max_message_bytes plus 64 KiB an entry); beyond that stream_recv() drops the connection
 * rather than hold it, and fails with SERR_OVERSIZE. Returns 0 or -1. */
int stream_send_read(struct stream *s, const struct idlist *acks, const char *from, int count,
                     long block_ms);
/* Several streams (priority): read up to count new entries from the first of keys[0..nkeys)
 * that has any, in one round trip (a script: nothing is taken from a later stream while an
 * earlier one has entries), without BLOCK. Its outcome comes like a read's (stream_recv()).
 * Returns 0 or -1. */
int stream_send_read_first(struct stream *s, const char *const *keys, size_t nkeys, int count);
/* Several streams: XREADGROUP COUNT count [BLOCK block_ms] of new entries (">") of every one
 * of keys[0..nkeys) (at most CONF_STREAMS_MAX), no acks. Redis serves a blocked read from the
 * stream that got entries; a reply may still carry entries of several (each message names its
 * stream). Its outcome comes like a read's (stream_recv()). Returns 0 or -1. */
int stream_send_read_all(struct stream *s, const char *const *keys, size_t nkeys, int count, long block_ms);
/* Shards on a cluster (streams in different slots: no script nor read may span them): an
 * XREADGROUP COUNT count of new entries per key of keys[0..nkeys), all sent at once without
 * BLOCK (the cluster client pipelines those to one node: a round trip per node). Its outcome
 * comes like a read's (stream_recv()) once every shard answered: their entries in one batch
 * (each message names its stream); an error from any fails it. Returns 0 or -1. */
int stream_send_read_shards(struct stream *s, const char *const *keys, size_t nkeys, int count);
/* What stream_run() has received for the request. Returns 1 when the batch is complete
 * (s->msgs[0..n), s->acked), 0 when more must be waited for, -1 on error (s->err; an error
 * reply to XACK or XREADGROUP is an error too). */
int stream_recv(struct stream *s);
void stream_batch_release(struct stream *s);

/* Take entries ids of our own pending list again for another attempt (XCLAIM to ourselves,
 * which counts a delivery, or with retrycount >= 0 sets the count to it), atomically only
 * those still pending for us: the ids another consumer holds now (or nobody) are left alone
 * and listed in s->lost. Fills s->msgs like a read (before cb); entries whose data is gone are
 * dropped from the pending list by Redis 7 and appear in neither. Returns 0 or -1. */
int stream_claim(struct stream *s, const struct idlist *ids, long long retrycount, stream_done *cb, void *arg);

/* Move entry id to the dead-letter stream dlq with its original fields plus dlq.stream,
 * dlq.id, dlq.reason, dlq.attempts, dlq.error, dlq.time, and acknowledge it, atomically (a Lua
 * script; an entry with too many fields for Lua goes through MULTI/EXEC). cb gets an integer:
 * 1 when moved, 0 when the entry is no longer pending for us (someone else has it now:
 * nothing done), -1 when its data was gone (acknowledged, nothing to keep); or NULL on error
 * (s->err; the entry stays pending). Returns 0, or -1 when it could not be sent (no cb). */
int stream_dead_letter(struct stream *s, const char *dlq, const char *id, const char *reason,
                       long long attempts, const char *error, long long now_unix_ms, stream_done *cb,
                       void *arg);

/* XAUTOCLAIM to us up to count entries idle for at least min_idle_ms, from cursor. Before cb:
 * s->msgs filled like a read, s->cursor the next cursor ("0-0" when the whole pending list was
 * scanned), s->deleted the entries whose data was gone (Redis dropped them from the pending
 * list). Returns 0 or -1. */
int stream_autoclaim(struct stream *s, long min_idle_ms, const char *cursor, int count, stream_done *cb,
                     void *arg);

/* Set the delivery counter of our pending entry id to count (XCLAIM RETRYCOUNT JUSTID: it
 * counts no delivery itself), if it is still ours. */
int stream_set_count(struct stream *s, const char *id, long long count, stream_done *cb, void *arg);

/* Reset the idle time of our pending entries ids (XCLAIM JUSTID to ourselves, which does not
 * count a delivery), so that entries waiting for a retry are not reclaimed as orphans. Entries
 * another consumer holds now are left alone (listed in s->lost before cb). */
int stream_touch(struct stream *s, const struct idlist *ids, stream_done *cb, void *arg);

/* XACK ids (not empty); cb gets how many were pending (an integer). */
int stream_ack(struct stream *s, const struct idlist *ids, stream_done *cb, void *arg);

/* The delivery counts of the batch's entries s->msgs[0..n) (n > 0, in id order) of this
 * consumer, from XPENDING over their id range, looking at up to limit entries (our other
 * pending entries may lie between them): before cb, each entry's attempt is its count (1 when
 * not found). Returns 0 or -1. */
int stream_delivery_counts(struct stream *s, size_t limit, stream_done *cb, void *arg);

/* Which of keys[0..n) (n > 0) exist (MGET): the done-markers of handled message ids. Keys are
 * binary (message ids may hold any byte). stream_parse_seen() reads the reply. */
int stream_seen(struct stream *s, const struct str *keys, size_t n, stream_done *cb, void *arg);
void stream_parse_seen(const struct redis_reply *r, size_t n, bool *seen);
/* SET key with a time to live. Returns 0 or -1. */
int stream_mark_done(struct stream *s, const struct str *key, long ttl_ms, stream_done *cb, void *arg);

/* After a read failed with SERR_OVERSIZE: our first pending entry after id `after` ("0": the
 * first one), sized in Redis without reading it (a script). Returns 0 or -1. */
int stream_probe_pending(struct stream *s, const char *after, stream_done *cb, void *arg);
/* Its reply: 1 with *id, its delivery count, its bytes (field names and values; -1 when its
 * data is gone) and its number of names and values; 0 when there is none; -1 (s->err) when
 * the reply is malformed. */
int stream_parse_probe(struct stream *s, const struct redis_reply *r, char id[STREAM_ID_MAX], long long *count,
                       long long *bytes, long long *values);
/* Reply parsers, pure (exposed for the fuzz target). An XREADGROUP reply, an XCLAIM reply (a
 * list of entries) and an XAUTOCLAIM reply fill s->msgs (pointing into r, which the caller
 * keeps while it uses them); a malformed reply is an error (-1, s->err), never a crash. */
int stream_parse_read(struct stream *s, const struct redis_reply *r);
int stream_parse_claim(struct stream *s, const struct redis_reply *r);
int stream_parse_autoclaim(struct stream *s, const struct redis_reply *r, char cursor[STREAM_ID_MAX],
                           size_t *deleted);
/* The delivery counts of msgs[0..n) from an XPENDING reply (counts[i] = 0 when not listed). */
void stream_parse_pending(const struct redis_reply *r, const struct msg *msgs, size_t n,
                          long long *counts);

/* Entry ids ("MS-SEQ", or "MS" for MS-0) in numeric order: <0, 0, >0. Text that is not an id
 * sorts after every id. */
int stream_id_cmp(const struct str *a, const struct str *b);
/* Match pending rows (ids[0..m), their delivery counts cnt[0..m)) to msgs[0..n), both in id
 * order: counts[i] is the count of msgs[i], or 0 when no row is for it. Rows that are not in
 * the batch (deleted entries, our other pending entries) are passed over. */
void stream_match_counts(const struct msg *msgs, size_t n, const struct str *ids,
                         const long long *cnt, size_t m, long long *counts);

/* Remove the group's consumers that hold no pending entry and were idle for idle_ms or more
 * (never ourselves), atomically. cb gets how many (an integer). */
int stream_prune_consumers(struct stream *s, long idle_ms, stream_done *cb, void *arg);

#endif
