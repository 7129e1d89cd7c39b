/* worker.h: a worker's state, shared by the files that each do one step of a message's life
 * in it. child.c: post-fork setup and the loop; batch.c: a batch from Redis to the handler,
 * and each outcome into the ledger; retry.c: retries and dead letters; dedupe.c: done-markers;
 * reclaim.c: orphans, idle refresh, consumer pruning; oversize.c: reads that outgrew their
 * bound; group.c: a lost group re-created. Not for handlers: they see handler.h alone. */
#ifndef SF_WORKER_H
#define SF_WORKER_H

#include <assert.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

#include "child/child.h"
#include "child/handler.h"
#include "child/ledger.h"
#include "child/priority.h"
#include "child/stream.h"
#include "common/redis.h"          /* the replies handed to completions */
#include "common/sb.h"

static_assert(LEDGER_ID_MAX == STREAM_ID_MAX, "the ledger keys entry ids");

#define ERROR_TEXT_MAX 200     /* dlq.error keeps at most this much of the last error */

/* A message's handle in its handler's hands (handler.h). It names the entry by its ledger key
 * (child_key()), not its ledger record: records move when the ledger grows. */
struct ticket {
    struct child *child;
    struct ticket *next;            /* in the free list */
    bool live;                      /* handed out, its outcome not yet reported */
    char id[STREAM_ID_MAX];
};

struct child {
    const struct conf *conf;
    const struct pool_conf *pool;
    struct sb_slot *slot;
    struct stream st;
    const struct handler_ops *ops;
    struct handler *h;
    unsigned capacity;              /* messages it may hold at once */
    struct ledger ledger;           /* every message held, by ledger key (child_key()), and its
                                     * state */
    struct idlist acks;             /* ledger keys to acknowledge with the next request: ACK_DUE
                                     * records, and entries held by no record (vanished,
                                     * duplicates) */
    struct idlist marks;            /* MARKER_DUE records (keys), in the order they succeeded */
    size_t nadopt;                  /* records with adopt set */
    struct ticket *free_tickets;
    bool circuit_open;              /* the handler said so (child_event) */
    bool pending_phase;             /* still reading our own pending entries (ID 0 and on) */
    bool connected_once;
    bool ready;                     /* the group was made sure of on this connection */
    bool skip_pending;              /* the connection being made skips our pending list */
    bool redis_failed;              /* a command's completion failed: handle it in the loop */
    enum stream_error fail_err;     /* ... with this error */
    char fail_errstr[256];
    struct str *intake_keys;        /* the done-marker keys of the batch in intake (dedupe) */
    size_t intake_n;                /* ... one per message of it */
    size_t adopting;                /* adoptions on the wire */
    size_t adopted;                 /* of which put back */
    char from[STREAM_ID_MAX];       /* the pending phase: of stream cur */
    size_t cur;                     /* several streams: the one whose pending list is read */
    struct priority prio;           /* several streams: which one the next read takes from */
    size_t read_order[CONF_STREAMS_MAX]; /* the order the read on the wire tried them in */
    bool read_first;                /* the read on the wire is the script (stream_send_read_first) */
    bool all_empty;                 /* it found every stream empty: block on them all next */
    bool sharded;                   /* streams in different slots of a cluster: a read each */
    bool shard_blocked;             /* ... the read on the wire waits on one of them */
    size_t block_shard;             /* ... the one the next wait is on */
    size_t shard_next;              /* ... the first the next round asks */
    size_t shard_asked;             /* ... how many the round on the wire asked */
    size_t shard_want;              /* ... and the entries it asked for in all */
    size_t shard_prev;              /* ... the first it asked */
    bool shard_full;                /* ... the last round brought all it asked for */
    unsigned shard_repeats;         /* ... rounds in a row on the same shards */
    size_t shard_empty_run;         /* ... found empty in a row since entries came */
    size_t group_next;              /* connecting: the stream whose group is made sure of */
    bool reading;                   /* a read request is on the wire */
    int read_count;                 /* the COUNT of that read */
    bool read_one;                  /* a read outgrew its bound: read one entry at a time */
    bool probe_due;                 /* one entry alone did: size it in Redis (oversize_probe) */
    char probe_after[STREAM_ID_MAX];/* it is our first pending entry after this id */
    long long read_deadline_ms;
    char claim_cursor[CONF_STREAMS_MAX][STREAM_ID_MAX]; /* each stream's orphan scan */
    size_t claim_stream;            /* the stream the orphan scan is at */
    bool claim_yield;               /* an orphan scan goes on: let a request go first */
    long long next_claim_ms;        /* next XAUTOCLAIM pass for orphans */
    long long next_touch_ms;        /* next idle reset of the entries waiting for a retry */
    long long next_prune_ms;        /* next removal of long-dead consumers (slot 0 only) */
    int index;
    pid_t master;
    unsigned long long handled;     /* messages handed to the handler */
    unsigned long long recycle_at;  /* max_messages plus jitter; 0: never */
    int exit_code;                  /* what the loop ends with (recycle, memory) */
    long long next_memory_check_ms;
    long long orphan_deadline_ms;   /* the master died: exit by then whatever we hold */
    long reconnect_ms;
    long long next_connect_ms;
    long long last_error_log_ms;
    enum stream_error last_error;
    unsigned error_repeats;
    char seen[CONF_STREAMS_MAX][STREAM_ID_MAX]; /* the last entry each stream's group delivered
                                     * to us through ">" */
    char adopt_upto[STREAM_ID_MAX]; /* in flight when the group was re-created: ids up to this
                                     * that fail are put back too; "" when none */
    /* Entries that killed workers (crash_limit; batch.c). */
    uint64_t pool_key;              /* sb_pool_key() of our pool; 0: not computed yet */
    char alone[STREAM_ID_MAX];      /* the key published as alone in the handler; "": none */
    char solo[STREAM_ID_MAX];       /* a suspect in the handler alone: nothing joins it */
    char solo_wait[STREAM_ID_MAX];  /* a suspect waiting for the handler to empty: no reads */
};

/* Set by SIGTERM/SIGINT, and by the worker's own reasons to stop: drain and exit. */
extern volatile sig_atomic_t child_stopping;

/* child.c */
long long child_now_ms(void);
long long child_unix_ms(void);
unsigned child_inflight(struct child *c);
bool child_accepting(struct child *c);
/* Show an error on the status page (the last one per worker). */
void child_publish_error(struct child *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Log the Redis problem in c->st once, then again only every minute while it lasts. */
void child_log_redis_error(struct child *c);
/* Decide what the failed Redis call in c->st means (reconnect with backoff, re-create the
 * group). Returns -1 when the child must exit. Not from a command's completion (it may drop
 * the connection): there, child_redis_failed(). */
int child_redis_error(struct child *c);
/* From a command's completion: the failure in c->st is handled by the loop, once it is back
 * (the first one counts; none once the connection is gone). */
void child_redis_failed(struct child *c);
/* A completion's failure that need not cost the connection (an error reply): log it; a lost
 * connection goes the way of child_redis_failed(). */
void child_redis_trouble(struct child *c);
/* Ledger keys. A pool of one stream keys its records by entry id (key is id itself); one of
 * several by "<stream index>/<entry id>" (key filled; entry ids repeat across streams). */
const char *child_key(const struct child *c, const char *stream, const char *id, char key[LEDGER_ID_MAX]);
/* The entry id in key, and (stream) the index of its stream in the pool's streams. */
const char *child_key_id(const struct child *c, const char *key, size_t *stream);
/* The index in the pool's streams of stream (a name; NULL: the first). */
size_t child_stream_index(const struct child *c, const char *stream);
/* The next commands are about the pool's stream k (nothing to do with one stream). */
void child_use(struct child *c, size_t k);
/* Connected, the group made sure of, nothing on the wire: a step may talk to Redis. */
bool child_redis_idle(struct child *c);
/* Read our pending list from the start. */
void child_start_pending_phase(struct child *c);

/* batch.c */
/* A read's batch arrived in c->st: acknowledge what vanished, go on in the pending list,
 * hand the messages over (batch_intake()). */
void batch_handle(struct child *c);
/* Take in the batch in c->st, in stages whose replies the loop waits for without blocking:
 * with counts, the attempts of its entries from Redis's delivery counters; with dedupe_ttl,
 * which were handled already (their done-markers); then hand every message to the handler
 * (but those waiting for a retry or a dead-letter move, over their attempts, too large, or
 * already handled), and free the batch. */
void batch_intake(struct child *c, bool counts);
/* Whether a suspect entry runs alone in the handler, or waits to (crash_limit): then the
 * worker reads nothing new, and takes nothing while the handler is busy. */
bool batch_isolating(struct child *c);

/* retry.c */
/* A failed outcome o of record r: retry due after backoff, or dead-letter due. */
void retry_schedule(struct child *c, struct ledger_rec *r, const struct outcome *o);
/* Entry id is to be moved to the dead-letter stream (now): returns its record. */
struct ledger_rec *retry_dead(struct child *c, const char *id, const char *reason, long long attempts,
                              const char *error);
/* Take the retries that are due back from Redis and hand them over, while there is room. */
void retry_claim_due(struct child *c, long long now);
/* Move the dead letters that are due; a move that fails is tried again later. */
void retry_move_dead(struct child *c, long long now);
/* Milliseconds until the first retry (retries) or dead-letter move (dead) is due, or -1. */
long retry_due_in(struct child *c, long long now, bool retries, bool dead);
/* Whether entry id waits for a retry or a dead-letter move. */
bool retry_scheduled(struct child *c, const char *id);

/* dedupe.c */
/* The done-marker key of message m (caller owns key.p). */
struct str dedupe_marker_key(const struct child *c, const struct msg *m);
/* Queue the done-markers due, then their XACKs (which go after them on the connection).
 * Returns -1 when there is no connection. */
int dedupe_write_markers(struct child *c);

/* reclaim.c */
/* Keep our waiting entries from looking orphaned, prune dead consumers (slot 0), and take
 * over orphans while there is room. */
void reclaim_run(struct child *c, long long now);

/* oversize.c */
/* A read failed with SERR_OVERSIZE: read one entry at a time, or size the entry in Redis. */
void oversize_note(struct child *c);
/* Size in Redis the entry that outgrew a read alone (when c->probe_due). */
void oversize_probe(struct child *c);

/* held.c */
/* Publish in the slot what the ledger holds (a few times a second; now: child_now_ms()). */
void held_publish(struct child *c, long long now);
/* Publish it at once: a batch went to the handler, and should the worker die of it before
 * the next publication, the master must know what it held (crash_limit). */
void held_publish_now(struct child *c);

/* group.c */
/* Order of two entry ids "ms-seq" (a missing seq counts as 0). */
int group_id_cmp(const char *a, const char *b);
/* Where the lost group of stream k restarts (c->st.resume). */
void group_set_resume(struct child *c, size_t k);
/* Remember the last entry ">" brought. */
void group_note_seen(struct child *c);
void group_set_state(struct child *c, enum sb_group_state state);
/* The group was created again after it was lost: say so, count it. */
void group_report_recreated(struct child *c, const char *when);
/* The group of stream k exists again (at c->st.group_at): what we hold of it must be pending
 * in it, as ours. */
void group_reconcile_held(struct child *c, size_t k);
/* Put the records marked adopt back into our pending list (queued). Returns 0 or -1. */
int group_adopt_held(struct child *c);
/* Record r (failed, held) was in flight when the group was re-created: put it back too. */
void group_mark_adopt(struct child *c, struct ledger_rec *r);

#endif
