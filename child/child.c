/* child.c: a worker process: the setup after fork() and the consume loop.
 *
 * One poll() loop waits on the Redis connection and on the handler's descriptors, and never
 * on Redis alone: every command (the read, acks, claims, dead-letter moves, markers...) is
 * queued with a deadline and its reply handled by a callback when the loop has seen it come,
 * so curl's transfers and the heartbeat go on however slow or frozen Redis is. A frozen Redis
 * is found by a command's deadline: the connection is dropped, what it carried is due again,
 * and the loop reconnects with backoff, connecting without blocking too. A signal interrupts
 * poll(), so a drain starts at once even while XREADGROUP blocks in Redis; the loop then waits
 * at most `block` for that last reply, hands what it brought to the handler, waits for what
 * is in flight, acknowledges, exits.
 *
 * Each turn of the loop is a list of named steps; what each message is at (in the handler,
 * ack due, retry due, dead-letter due) is in the ledger (c->ledger), and the steps that act on
 * it live in their own files (worker.h). */
#include "child/proc.h"
#include "child/route.h"
#include "child/worker.h"
#include "common/clock.h"
#include "common/cluster.h"
#include "common/log.h"
#include "common/redis.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define POLL_MAX (2 * CONF_INFLIGHT_MAX + 16) /* Redis, and curl's sockets (two per transfer
                                                * while happy eyeballs tries v4 and v6) */
#define HEARTBEAT_MS 1000      /* the longest the loop sleeps between two stamps */
#define SHARD_BLOCK_MS 100     /* shards on a cluster: the wait on one shard after a round found
                                * all empty (entries on the others wait at most this long) */
#define SHARD_REPEATS 8        /* ... shards that filled a round are asked again this often */
#define SHARD_COUNT_MIN 100    /* ... a round asks each shard for at least this many */
#define BUSY_BLOCK_MS 50       /* BLOCK while deliveries are in flight, so acks are not held */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000
#define LOG_REPEAT_MS 60000    /* the same Redis problem is logged again after this long */
#define READ_MARGIN_MS 5000    /* a read unanswered for block + this: Redis is frozen */

volatile sig_atomic_t child_stopping;
static volatile sig_atomic_t reopen_log;

static void on_stop(int sig)
{
    (void)sig;
    child_stopping = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    reopen_log = 1;
}

long long child_now_ms(void)
{
    return clock_mono_ms();
}

long long child_unix_ms(void)
{
    return clock_wall_ms();
}

void child_publish_error(struct child *c, const char *fmt, ...)
{
    char text[sizeof c->slot->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sb_set_error(c->slot, text, (uint64_t)child_unix_ms());
}

void child_event(struct child *c, enum handler_event e, const char *text)
{
    switch (e) {
    case HANDLER_CIRCUIT_OPEN:
        c->circuit_open = true;
        sb_set_circuit(c->slot, (uint64_t)child_unix_ms(), text ? text : "");
        break;
    case HANDLER_CIRCUIT_CLOSED:
        c->circuit_open = false;
        sb_set_circuit(c->slot, 0, NULL);
        break;
    }
}

unsigned child_inflight(struct child *c)
{
    return c->ops->inflight(c->h);
}

bool child_accepting(struct child *c)
{
    if (c->solo[0] || (c->solo_wait[0] && child_inflight(c) > 0))
        return false;       /* a suspect entry runs alone, or is to (batch.c) */
    return c->ops->accepting ? c->ops->accepting(c->h) : true;
}

/* Undo what the master's image carries that is not ours: its descriptors (the HTTP listener,
 * its epoll and signal fds, its Redis connection, accepted clients), its blocked signal mask,
 * and its signal dispositions. Then tie our life to the master's. */
static void detach_from_master(pid_t master)
{
    close_range(3, ~0U, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = SIG_IGN;
    /* A handler process that closed its stdin (a pipe we write to), or libcurl on a socket the
     * peer closed, must not kill the worker: the write fails with EPIPE instead. */
    sigaction(SIGPIPE, &sa, NULL);
    /* Signals meant for the master that a terminal or a careless kill sends to the group. */
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGTTIN, &sa, NULL);
    sigaction(SIGTTOU, &sa, NULL);
    sa.sa_handler = on_usr1;                /* the master asks us to reopen the log file */
    sigaction(SIGUSR1, &sa, NULL);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);

    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    /* After any credential change (which clears it), never before. SIGTERM: a master that
     * dies takes its children through a normal drain. The getppid() check closes the race
     * of a master that died before prctl(). */
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master)
        _exit(0);
}

/* ---- several streams ---------------------------------------------------------------------- */

_Static_assert(CONF_STREAMS_MAX <= 100, "child_key() writes a stream's index in two digits at most");

const char *child_key(const struct child *c, const char *stream, const char *id, char key[LEDGER_ID_MAX])
{
    if (c->pool->nstreams <= 1)
        return id;
    /* "K/ID" by hand: several times a message (snprintf was a tenth of a 12-shard worker's
     * time). The index has at most two digits (CONF_STREAMS_MAX); an id longer than the
     * room is cut, as snprintf cut it. */
    size_t k = child_stream_index(c, stream), n = 0;
    if (k >= 10)
        key[n++] = (char)('0' + k / 10);
    key[n++] = (char)('0' + k % 10);
    key[n++] = '/';
    size_t len = strnlen(id, LEDGER_ID_MAX - 1 - n);
    memcpy(key + n, id, len);
    key[n + len] = '\0';
    return key;
}

const char *child_key_id(const struct child *c, const char *key, size_t *stream)
{
    *stream = 0;
    if (c->pool->nstreams <= 1)
        return key;
    char *end;
    unsigned long k = strtoul(key, &end, 10);
    if (*end != '/' || k >= c->pool->nstreams)
        return key;             /* never made by child_key(): taken as the first stream's */
    *stream = k;
    return end + 1;
}

size_t child_stream_index(const struct child *c, const char *stream)
{
    const struct pool_conf *p = c->pool;
    if (stream == NULL || p->nstreams <= 1)
        return 0;
    /* A message names its stream by the pool's own string when it was read alone (shards,
     * claims); a read of several streams names it in the reply. */
    for (size_t i = 0; i < p->nstreams; i++)
        if (stream == p->streams[i])
            return i;
    for (size_t i = 0; i < p->nstreams; i++)
        if (strcmp(stream, p->streams[i]) == 0)
            return i;
    return 0;
}

void child_use(struct child *c, size_t k)
{
    /* One stream: s->key stays what stream_init() set, every command as it always was. */
    if (c->pool->nstreams > 1)
        stream_use(&c->st, c->pool->streams[k]);
}

/* ---- Redis trouble ----------------------------------------------------------------------- */

void child_log_redis_error(struct child *c)
{
    long long now = child_now_ms();
    if (c->st.err == c->last_error && now - c->last_error_log_ms < LOG_REPEAT_MS) {
        c->error_repeats++;
        return;
    }
    child_publish_error(c, "redis: %s", c->st.errstr);
    if (c->error_repeats)
        log_warnx("redis: %s (and %u more times)", c->st.errstr, c->error_repeats);
    else
        log_warnx("redis: %s", c->st.errstr);
    c->last_error = c->st.err;
    c->last_error_log_ms = now;
    c->error_repeats = 0;
}

void child_redis_failed(struct child *c)
{
    if (c->redis_failed || !stream_connected(&c->st))
        return;
    c->redis_failed = true;
    c->fail_err = c->st.err != SERR_NONE ? c->st.err : SERR_IO;
    snprintf(c->fail_errstr, sizeof c->fail_errstr, "%s", c->st.errstr);
}

void child_redis_trouble(struct child *c)
{
    if (stream_closed(&c->st) || c->st.err == SERR_IO)
        child_redis_failed(c);
    else
        child_log_redis_error(c);
}

bool child_redis_idle(struct child *c)
{
    return stream_connected(&c->st) && c->ready && !c->reading && !c->redis_failed &&
           stream_outstanding(&c->st) == 0;
}

/* The lost group's re-creation answered. */
static void group_recreated(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    (void)s;
    if (v == NULL) {
        /* Redis at maxmemory cannot create it, or the key became something else: wait with
         * backoff like any other failure (logged once, then once a minute). */
        child_redis_failed(c);
        return;
    }
    if (c->st.group_created)
        group_report_recreated(c, "");
    else
        log_warnx("group %s of stream %s was missing and another worker re-created it: going on "
                  "after entry %s", c->pool->group, c->pool->stream, c->st.group_at);
    group_set_state(c, SB_GROUP_OK);
    group_reconcile_held(c, 0);
    child_start_pending_phase(c);
    c->ready = true;
}

int child_redis_error(struct child *c)
{
    c->redis_failed = false;
    sb_add(c->slot, SB_REDIS_ERRORS, 1);
    child_log_redis_error(c);
    /* Nothing can be read while these last: /health says why (the key of another type is our
     * stream's: the other keys we touch are written by scripts that do not end up here). */
    if (c->st.err == SERR_WRONGTYPE)
        group_set_state(c, SB_GROUP_WRONGTYPE);
    else if (c->st.err == SERR_OOM)
        group_set_state(c, SB_GROUP_NOT_CREATED);
    switch (c->st.err) {
    case SERR_AUTH:
        log_errorx("redis refused our credentials: exiting, the config cannot work");
        return -1;
    case SERR_NOGROUP:
        /* The stream or group is gone (deleted, or Redis came back from an old snapshot):
         * re-create it after the last entry the fleet is known to have had delivered. */
        if (!stream_connected(&c->st) || stream_closed(&c->st))
            break;
        /* Several streams: the reply does not say whose group is gone. The new connection
         * makes sure of every one (connected()), each after the last entry it delivered. */
        if (c->pool->nstreams > 1)
            break;
        group_set_resume(c, 0);
        /* Nothing is read until its reply is in (group_recreated()). */
        if (stream_create_group(&c->st, true, group_recreated, c) == 0) {
            c->ready = false;
            return 0;
        }
        break;
    default:
        break;
    }
    /* Everything else waits with capped, jittered backoff, on a fresh connection. */
    stream_disconnect(&c->st);
    c->reading = false;
    c->ready = false;
    c->redis_failed = false;        /* what the drop failed was due to it */
    c->reconnect_ms = c->reconnect_ms ? c->reconnect_ms * 2 : RECONNECT_MIN_MS;
    if (c->reconnect_ms > RECONNECT_MAX_MS)
        c->reconnect_ms = RECONNECT_MAX_MS;
    c->next_connect_ms = child_now_ms() + c->reconnect_ms / 2 + rand() % (c->reconnect_ms / 2 + 1);
    return 0;
}

/* Read our pending list from the start: at start-up, and after a reconnect, when a read in
 * flight may have delivered entries we never saw. The entries waiting for a retry or a
 * dead-letter move are in that list too: batch_submit() leaves them to their schedule. */
void child_start_pending_phase(struct child *c)
{
    c->pending_phase = true;
    c->cur = 0;
    c->all_empty = false;
    snprintf(c->from, sizeof c->from, "0");
}

/* ---- the steps of a turn ----------------------------------------------------------------- */

/* The Redis Cluster redirections and map refreshes of our client, into our slot's counters.
 * The client's sums are the process's: what the master's monitor had counted before the fork
 * is the first baseline, not ours. */
static void cluster_counts(struct child *c)
{
    static struct redis_cluster_counts last;
    static bool started;
    struct redis_cluster_counts now;
    redis_cluster_counts(&now);
    if (started) {
        if (now.moved != last.moved)
            sb_add(c->slot, SB_CLUSTER_MOVED, now.moved - last.moved);
        if (now.ask != last.ask)
            sb_add(c->slot, SB_CLUSTER_ASK, now.ask - last.ask);
        if (now.refreshes != last.refreshes)
            sb_add(c->slot, SB_CLUSTER_REFRESHES, now.refreshes - last.refreshes);
    }
    last = now;
    started = true;
}

/* The connection is up and the group made sure of (of each stream in turn, one reply each):
 * what was held is reconciled, our pending list is read first. */
static void connected(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    const struct pool_conf *pool = c->pool;
    (void)s;
    if (v == NULL) {
        child_redis_failed(c);
        return;
    }
    size_t k = c->group_next;
    if (c->st.group_created && (c->connected_once || c->st.resume[0]))
        /* Gone while we were away (Redis restarted from a snapshot that predates it, or the
         * stream was deleted): re-created where the fleet was. */
        group_report_recreated(c, ", found so after reconnecting");
    else if (c->st.group_created)
        log_info("created group %s on stream %s at %s", pool->group, pool->streams[k],
                 pool->group_start_latest ? "its end (group_start = latest)" : "its start");
    /* Only a group made anew needs what we hold put back: adopting (XCLAIM FORCE) into a group
     * that lived on would bring back an entry a lost reply had in fact acknowledged or moved
     * to the dead letters (a Redis restart mid-move), and it would be handled twice. */
    if (c->connected_once && c->st.group_created)
        group_reconcile_held(c, k);
    if (k + 1 < pool->nstreams) {
        /* The next stream's group: nothing is read before every one is made sure of. */
        c->group_next = k + 1;
        child_use(c, k + 1);
        group_set_resume(c, k + 1);
        if (stream_create_group(&c->st, false, connected, c) == -1)
            child_redis_failed(c);
        return;
    }
    group_set_state(c, SB_GROUP_OK);
    c->connected_once = true;
    if (c->reconnect_ms)
        log_info("redis: connected again");
    c->reconnect_ms = 0;
    c->last_error = SERR_NONE;
    c->error_repeats = 0;
    /* What an earlier read delivered to us before the connection broke is in our pending
     * list: read it first, as at start. */
    child_start_pending_phase(c);
    if (c->skip_pending) {
        c->pending_phase = false;
        snprintf(c->from, sizeof c->from, ">");
    }
    c->skip_pending = false;
    c->ready = true;
}

/* Connect (again), without waiting: connected() goes on when the group's reply is in. */
static void connect_redis(struct child *c)
{
    c->group_next = 0;
    child_use(c, 0);
    group_set_resume(c, 0);
    c->ready = false;
    c->redis_failed = false;
    if (stream_connect(&c->st, connected, c) == -1 && child_redis_error(c) == -1)
        exit(CHILD_EXIT_CONFIG);
}

/* The acks queued are on their way: their records are done. */
static void acks_sent(struct child *c)
{
    for (size_t i = 0; i < c->acks.n; i++) {
        struct ledger_rec *r = ledger_get(&c->ledger, c->acks.id[i]);
        if (r && r->state == LEDGER_ACK_DUE)
            ledger_drop(&c->ledger, r);
    }
    c->acks.n = 0;
}

/* XACK's reply, for acks sent alone. */
static void acked(struct stream *s, void *arg, const struct redis_reply *v)
{
    struct child *c = arg;
    (void)s;
    if (v && v->type == REDIS_T_INTEGER)
        sb_add(c->slot, SB_ACKED, (uint64_t)v->integer);
    else if (v == NULL)
        child_redis_failed(c);
}

/* Several streams: an XACK per stream that has acks, queued before the read (the same
 * connection: Redis runs them first). Lost with the connection, they are still pending and
 * come back through the pending-list read. Returns 0 or -1 (c->st.err). */
static int send_acks_apart(struct child *c)
{
    /* One pass over the acks, sorted by stream (a pass per stream cost a parse of every ack
     * per stream: with 12 shards, a good part of a worker's CPU per message). */
    struct idlist ids[CONF_STREAMS_MAX] = { 0 };
    for (size_t i = 0; i < c->acks.n; i++) {
        size_t sk;
        const char *id = child_key_id(c, c->acks.id[i], &sk);
        idlist_add(&ids[sk], id);
    }
    int rc = 0;
    for (size_t k = 0; k < c->pool->nstreams && rc == 0; k++) {
        if (ids[k].n) {
            child_use(c, k);
            rc = stream_ack(&c->st, &ids[k], acked, c);
        }
    }
    for (size_t k = 0; k < c->pool->nstreams; k++)
        idlist_release(&ids[k]);
    if (rc == -1)
        return -1;
    acks_sent(c);
    return 0;
}

/* Several streams: send the read. Our pending lists one stream at a time (the batch is one
 * stream's: its delivery counts, its last id); new entries from the first stream in the
 * priority's order that has any (a script: nothing taken from a later one while an earlier
 * has entries); when that found them all empty, a read blocking on every stream. */
static int send_read_several(struct child *c, int count, long block)
{
    const struct pool_conf *p = c->pool;
    c->read_first = false;
    c->shard_blocked = false;
    if (c->pending_phase) {
        child_use(c, c->cur);
        return stream_send_read(&c->st, NULL, c->from, count, -1);
    }
    if (c->sharded) {
        /* Streams in different slots of a cluster: neither the script nor a read of several
         * keys may span them (CROSSSLOT). A round asks some shards at once, a command each,
         * without BLOCK (pipelined: a round trip per node). When a turn of rounds found them
         * all empty, block on one shard, in turn, for at most SHARD_BLOCK_MS, then go round
         * again: a blocked command holds its node's connection (acks to it wait), and entries
         * that come to the other shards meanwhile wait that long. Every worker reads every
         * shard (docs/scaling.md says why, and what shard k to worker k mod N measured). */
        if (!c->all_empty) {
            /* A command's cost is mostly per command, not per entry: a round asks only as
             * many shards, next in turn, as get SHARD_COUNT_MIN entries of count each (a
             * backlog on 12 shards, batch 100, at 8 entries a command cost twice the CPU per
             * message of one stream; docs/scaling.md). The worker blocks only after a whole
             * turn found every shard empty (batch.c). */
            size_t w = (size_t)count / SHARD_COUNT_MIN;
            w = w < 1 ? 1 : w > p->nstreams ? p->nstreams : w;
            /* Shards that filled the last round's whole share are asked again, up to
             * SHARD_REPEATS rounds: the acks of a batch go to its shard's node, and a read
             * to the same node goes out with them (one round trip, not two). */
            size_t first = c->shard_next;
            if (c->shard_full && c->shard_repeats < SHARD_REPEATS) {
                first = c->shard_prev;
                c->shard_repeats++;
            } else {
                c->shard_repeats = 0;
            }
            const char *keys[CONF_STREAMS_MAX];
            for (size_t i = 0; i < w; i++)
                keys[i] = p->streams[(first + i) % p->nstreams];
            c->shard_prev = first;
            c->shard_next = (first + w) % p->nstreams;
            c->shard_asked = w;
            int share = count / (int)w;
            share = share > 0 ? share : 1;
            c->shard_want = (size_t)share * w;
            return stream_send_read_shards(&c->st, keys, w, share);
        }
        child_use(c, c->block_shard);
        c->block_shard = (c->block_shard + 1) % p->nstreams;
        c->shard_blocked = true;
        return stream_send_read(&c->st, NULL, ">", count, block < SHARD_BLOCK_MS ? block : SHARD_BLOCK_MS);
    }
    if (!c->all_empty) {
        const char *keys[CONF_STREAMS_MAX];
        priority_order(&c->prio, c->read_order);
        for (size_t i = 0; i < p->nstreams; i++)
            keys[i] = p->streams[c->read_order[i]];
        c->read_first = true;
        return stream_send_read_first(&c->st, keys, p->nstreams, count);
    }
    /* COUNT is per stream: entries that came to several streams before the read would bring
     * count from each, over our room. A share each keeps the batch near count; the reads
     * that follow take whole batches again (through the script). */
    int share = count / (int)p->nstreams;
    return stream_send_read_all(&c->st, (const char *const *)p->streams, p->nstreams, share > 0 ? share : 1,
                                block);
}

/* Send the next request if there is room for more work; else just acknowledge. */
static void request(struct child *c)
{
    unsigned busy = child_inflight(c);
    c->claim_yield = false;
    if (dedupe_write_markers(c) == -1) {
        child_redis_error(c);
        return;
    }
    if (c->pool->nstreams > 1 && c->acks.n && send_acks_apart(c) == -1) {
        child_redis_error(c);
        return;
    }
    /* Our pending list is only re-read with nothing in flight: what is in flight is in it. */
    if (!child_stopping && child_accepting(c) && busy < c->capacity && !(c->pending_phase && busy > 0) &&
        !batch_isolating(c)) {
        unsigned room = c->capacity - busy;
        int count = room < (unsigned)c->pool->batch ? (int)room : c->pool->batch;
        if (c->read_one)
            count = 1;
        long block = -1;
        if (!c->pending_phase) {
            block = busy > 0 && c->pool->block_ms > BUSY_BLOCK_MS ? BUSY_BLOCK_MS : c->pool->block_ms;
            if (c->sharded && block > SHARD_BLOCK_MS)
                block = SHARD_BLOCK_MS;
            /* Redis holds a blocked read: a retry that falls due must not wait behind it. */
            long rt = retry_due_in(c, child_now_ms(), true, true);
            if (rt >= 0 && rt < block)
                block = rt > 0 ? rt : 1;
        }
        if (c->pool->nstreams > 1 && !c->pending_phase && !c->all_empty)
            block = -1;         /* the script does not block */
        if ((c->pool->nstreams > 1 ? send_read_several(c, count, block)
                                   : stream_send_read(&c->st, &c->acks, c->from, count, block)) == -1) {
            child_redis_error(c);
            return;
        }
        /* The acks are on the wire. Should the connection break before the reply, they are
         * simply still pending, and come back to us through the pending-list read. */
        acks_sent(c);
        c->reading = true;
        c->read_count = count;
        c->read_deadline_ms = child_now_ms() + (block > 0 ? block : 0) + READ_MARGIN_MS;
    } else if (c->acks.n) {
        /* On their way like the acks of a read: lost with the connection, they are still
         * pending, and come back through the pending-list read. */
        if (stream_ack(&c->st, &c->acks, acked, c) == -1) {
            child_redis_error(c);
            return;
        }
        acks_sent(c);
    }
}

/* Everything that talks to Redis between two reads, in order. A step that sent something
 * ends the turn's steps: the next ones run when its replies are in (they may depend on them,
 * and a claim's or a read's batch is taken in one at a time). */
static void redis_steps(struct child *c, long long now)
{
    /* Before any retry or dead-letter move: they need their entries pending as ours. */
    if (c->nadopt && group_adopt_held(c) == -1)
        child_redis_error(c);
    if (c->adopt_upto[0] && child_inflight(c) == 0 && c->nadopt == 0)
        c->adopt_upto[0] = '\0';
    if (child_redis_idle(c) && c->probe_due)
        oversize_probe(c);
    if (child_redis_idle(c) && ledger_count(&c->ledger, LEDGER_DEAD_DUE))
        retry_move_dead(c, now);
    if (child_redis_idle(c))
        reclaim_run(c, now);
    if (child_redis_idle(c))
        retry_claim_due(c, now);
    if (child_redis_idle(c))
        request(c);
}

/* What the read's reply brought so far (stream_run() took it in). */
static void read_reply(struct child *c)
{
    int r = stream_recv(&c->st);
    if (r == 0)
        return;
    /* XACK's reply comes at once, before a blocking read's: count it now. */
    if (c->st.acked) {
        sb_add(c->slot, SB_ACKED, c->st.acked);
        c->st.acked = 0;
    }
    if (r == 1) {
        c->reading = false;
        c->reconnect_ms = 0;
        if (c->from[0] == '>' && c->st.n + c->st.vanished.n > 0)
            group_note_seen(c);
        batch_handle(c);
    } else if (r == -1) {
        c->reading = false;
        if (c->st.err == SERR_OVERSIZE)
            oversize_note(c);
        if (child_redis_error(c) == -1)
            exit(CHILD_EXIT_CONFIG);
    }
}

/* Redis is frozen or the network ate the reply: rebuild the connection. */
static void read_timed_out(struct child *c)
{
    c->reading = false;
    c->st.err = SERR_IO;
    snprintf(c->st.errstr, sizeof c->st.errstr, "read: no reply within %ld ms", c->pool->block_ms + READ_MARGIN_MS);
    child_redis_error(c);
}

/* What to wait on, and for how long: Redis while a read is out, the handler's descriptors,
 * and the next deadline (reconnect, read, due retry or dead-letter move, heartbeat). Returns
 * the number of descriptors; *first_handler: where the handler's start. */
static int wait_set(struct child *c, long long now, struct pollfd *pfd, long *timeout, int *first_handler)
{
    int n = 0;
    *timeout = HEARTBEAT_MS;
    if (stream_connected(&c->st) && stream_fd(&c->st) >= 0) {
        /* Always: a reply, a deadline, or the server closing the connection. */
        pfd[n++] = (struct pollfd){ .fd = stream_fd(&c->st), .events = stream_events(&c->st) | POLLIN };
        long due = stream_timeout_ms(&c->st);
        if (due >= 0 && due < *timeout)
            *timeout = due;
    }
    if (c->reading && c->read_deadline_ms - now < *timeout)
        *timeout = c->read_deadline_ms > now ? (long)(c->read_deadline_ms - now) : 0;
    else if (!stream_connected(&c->st) && c->next_connect_ms - now < *timeout)
        *timeout = c->next_connect_ms > now ? (long)(c->next_connect_ms - now) : 0;
    /* Wake for a due retry or dead-letter move only when one could be acted on: not while
     * disconnected (the reconnect timer rules), reading (the read's BLOCK is bounded by it)
     * or holding off (circuit open, no room) — else a due entry would spin the loop. */
    if (child_redis_idle(c)) {
        long rt = retry_due_in(c, now, !child_stopping && child_accepting(c) &&
                               child_inflight(c) < c->capacity, true);
        if (rt >= 0 && rt < *timeout)
            *timeout = rt;
    }
    *first_handler = n;
    if (c->ops->fds)
        n += c->ops->fds(c->h, pfd + n, POLL_MAX - n, timeout);
    return n;
}

/* A completion failed: now, outside of the client's callbacks, decide what it means. */
static void redis_trouble(struct child *c)
{
    if (!c->redis_failed)
        return;
    c->st.err = c->fail_err;
    snprintf(c->st.errstr, sizeof c->st.errstr, "%s", c->fail_errstr);
    if (child_redis_error(c) == -1)
        exit(CHILD_EXIT_CONFIG);
}

/* Reasons to stop on our own: recycling after max_messages, the memory limit, the master's
 * death. Each starts the same drain as SIGTERM; the exit code tells the master why. */
static void check_limits(struct child *c, long long now)
{
    if (child_stopping)
        return;
    if (c->recycle_at && c->handled >= c->recycle_at) {
        log_info("handled %llu messages (max_messages): finishing, to be replaced", c->handled);
        c->exit_code = CHILD_EXIT_RECYCLE;
        child_stopping = 1;
        return;
    }
    if (now >= c->next_memory_check_ms) {
        /* Every second with a limit to enforce, else every 5 s for /metrics. */
        c->next_memory_check_ms = now + (c->pool->memory_limit ? 1000 : 5000);
        long long rss = proc_rss(0);
        atomic_store_explicit(&c->slot->rss_bytes, (uint64_t)rss, memory_order_relaxed);
        if (c->pool->memory_limit && rss > c->pool->memory_limit) {
            log_warnx("resident memory %lld KiB exceeds memory_limit %lld KiB: finishing, to be replaced",
                      rss / 1024, c->pool->memory_limit / 1024);
            c->exit_code = CHILD_EXIT_MEMORY;
            child_stopping = 1;
        }
    }
}

/* Whether the loop is over: drained (nothing in flight or on the wire, nothing left to tell
 * a connected Redis), or the master died and our grace ran out. */
static bool finished(struct child *c, long long now)
{
    if (child_stopping && c->orphan_deadline_ms == 0 && getppid() != c->master) {
        /* No master to wait for us or to kill us: do not wait out a blocking read, and
         * give what is in flight a short while. What is left stays pending in Redis. */
        c->orphan_deadline_ms = now + 1500;
        if (c->reading || stream_outstanding(&c->st)) {
            c->reading = false;
            stream_disconnect(&c->st);
        }
    }
    if (c->orphan_deadline_ms && now >= c->orphan_deadline_ms) {
        log_warnx("master gone: exiting with %u messages in flight (they stay pending)", child_inflight(c));
        return true;
    }
    return child_stopping && !c->reading && child_inflight(c) == 0 && stream_outstanding(&c->st) == 0 &&
           ((c->acks.n == 0 && c->marks.n == 0 && ledger_count(&c->ledger, LEDGER_DEAD_DUE) == 0) ||
            !stream_connected(&c->st));
}

/* Fill c for the pool, name the consumer, open the handler. */
static void setup(struct child *c, const struct conf *conf, const struct pool_conf *pool, int index,
                  struct sb_slot *slot, pid_t master)
{
    c->conf = conf;
    c->pool = pool;
    c->slot = slot;
    priority_init(&c->prio, pool);
    /* Shards on a cluster read one command per shard (send_read_several()) unless every one
     * is in the same slot (one hash tag): then the script and the blocking read work as on
     * one server. */
    for (size_t k = 1; conf->redis.cluster && k < pool->nstreams; k++)
        c->sharded = c->sharded || cluster_keyslot(pool->streams[k], strlen(pool->streams[k])) !=
                                   cluster_keyslot(pool->streams[0], strlen(pool->streams[0]));
    c->block_shard = (size_t)index % (pool->nstreams ? pool->nstreams : 1);
    c->shard_next = c->block_shard;     /* workers start their turns on different shards */
    /* A routed pool's handler hands each message to one of its named handlers (route.c). */
    c->ops = pool->routed ? &handler_route_ops : handler_ops_for(pool->handler);
    c->index = index;
    c->master = master;
    ledger_init(&c->ledger);
    if (pool->max_messages)
        c->recycle_at = (unsigned long long)pool->max_messages +
                        (pool->max_messages_jitter ? (unsigned long long)rand() % (unsigned long long)(pool->max_messages_jitter + 1) : 0);
    c->capacity = pool->handler == HANDLER_HTTP || pool->handler == HANDLER_EXEC ||
                  pool->handler == HANDLER_SUBPROCESS ? (unsigned)pool->inflight : (unsigned)pool->batch;
    for (size_t k = 0; k < CONF_STREAMS_MAX; k++)
        snprintf(c->claim_cursor[k], sizeof c->claim_cursor[k], "0-0");
    /* Spread the first orphan scans of a pool's workers over a few seconds. */
    c->next_claim_ms = child_now_ms() + 1000 + rand() % 4000;

    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char consumer[320];
    snprintf(consumer, sizeof consumer, "%s:%s:%d", host, pool->name, index);
    stream_init(&c->st, &conf->redis, pool, consumer);

    c->h = c->ops->open(c, pool);
    if (c->h == NULL)
        exit(CHILD_EXIT_CONFIG);
    log_debug("consumer %s started", consumer);
}

/* Close the handler (what it holds stays pending), let go of Redis, free what we hold. */
static void teardown(struct child *c)
{
    c->ops->close(c->h);
    if (c->circuit_open)
        sb_set_circuit(c->slot, 0, NULL);
    stream_disconnect(&c->st);
    idlist_release(&c->st.vanished);
    idlist_release(&c->st.lost);
    idlist_release(&c->acks);
    idlist_release(&c->marks);
    size_t waiting = ledger_count(&c->ledger, LEDGER_RETRY_DUE);
    ledger_release(&c->ledger);
    while (c->free_tickets) {
        struct ticket *t = c->free_tickets;
        c->free_tickets = t->next;
        free(t);
    }
    if (waiting)
        log_info("%zu messages waiting for a retry stay pending for the next start", waiting);
    log_debug("consumer %s drained", c->st.consumer);
}

/* The drain report: once stopping and no read is on the wire, what we hold is fixed (nothing
 * more is read, no retry starts). Those waiting for a retry are released at once; the others
 * are finished as they leave the handler and the acknowledgement queue. What is still in
 * progress if we are killed, the master counts as abandoned (HELD - FINISHED - RELEASED). */
static void drain_report(struct child *c, struct sb_slot *slot, bool exiting)
{
    static bool started;
    static uint64_t held, released, finished;
    size_t total = 0;
    for (int s = 0; s < LEDGER_NSTATES; s++)
        total += ledger_count(&c->ledger, (enum ledger_state)s);
    size_t waiting = ledger_count(&c->ledger, LEDGER_RETRY_DUE);
    if (!started) {
        if (c->reading)
            return;
        started = true;
        held = total;
        released = waiting;
        sb_add(slot, SB_DRAIN_HELD, held);
        sb_add(slot, SB_DRAIN_RELEASED, released);
    }
    /* Entries that fail now wait for a retry too, but they were finished (to an outcome). */
    uint64_t busy = total - waiting;
    uint64_t done = held - released > busy ? held - released - busy : 0;
    if (done > finished) {
        sb_add(slot, SB_DRAIN_FINISHED, done - finished);
        finished = done;
    }
    /* Leaving with acknowledgements unsent (Redis gone): those stay pending too. */
    if (exiting && held > released + finished) {
        sb_add(slot, SB_DRAIN_RELEASED, held - released - finished);
        released = held - finished;
    }
}

_Noreturn void child_main(const struct conf *conf, const struct pool_conf *pool, int index,
                          struct sb_slot *slot, pid_t master, bool fresh)
{
    detach_from_master(master);
    log_set_origin(pool->name, index);
    char name[16];
    snprintf(name, sizeof name, "sf:%s", pool->name);
    prctl(PR_SET_NAME, name);
    srand((unsigned)getpid() ^ (unsigned)child_now_ms());

    static struct child c;
    setup(&c, conf, pool, index, slot, master);
    /* The generation we replace still holds its pending entries under our name: a fresh
     * child leaves them alone on its first connection (not after a reconnect). */
    c.skip_pending = fresh;

    struct pollfd pfd[POLL_MAX];
    for (;;) {
        long long now = child_now_ms();
        atomic_store_explicit(&slot->heartbeat_ms, (uint64_t)now, memory_order_relaxed);
        check_limits(&c, now);
        held_publish(&c, now);
        if (reopen_log) {
            reopen_log = 0;
            if (conf->log_file && log_open_file(conf->log_file) == -1)
                log_warn("cannot reopen %s", conf->log_file);
        }
        if (finished(&c, now))
            break;
        if (!stream_connected(&c.st) && now >= c.next_connect_ms)
            connect_redis(&c);
        if (c.reading && now >= c.read_deadline_ms)
            read_timed_out(&c);
        if (child_redis_idle(&c))
            redis_steps(&c, now);
        redis_trouble(&c);

        long timeout;
        int first_handler;
        int n = wait_set(&c, now, pfd, &timeout, &first_handler);
        if (poll(pfd, (nfds_t)n, (int)timeout) == -1) {
            if (errno != EINTR)
                fatal("poll");
            continue;
        }
        if (stream_connected(&c.st)) {
            stream_run(&c.st, first_handler > 0 ? pfd[0].revents : 0);
            if (c.reading)
                read_reply(&c);
            if (stream_connected(&c.st) && stream_closed(&c.st) && !c.redis_failed) {
                /* Dropped with nothing of ours on the wire to tell (the server closed it). */
                c.st.err = SERR_IO;
                snprintf(c.st.errstr, sizeof c.st.errstr, "connection lost");
                child_redis_failed(&c);
            }
            redis_trouble(&c);
        }
        if (c.ops->run)
            c.ops->run(c.h, pfd + first_handler, n - first_handler);
        atomic_store_explicit(&slot->inflight, child_inflight(&c), memory_order_relaxed);
        cluster_counts(&c);
        if (child_stopping)
            drain_report(&c, slot, false);
        bool ready = stream_connected(&c.st) && c.ready && child_accepting(&c);
        uint64_t since = atomic_load_explicit(&slot->ready_ms, memory_order_relaxed);
        if (ready != (since != 0))
            atomic_store_explicit(&slot->ready_ms, ready ? (uint64_t)child_now_ms() : 0, memory_order_relaxed);
    }
    if (child_stopping)
        drain_report(&c, slot, true);
    teardown(&c);
    exit(c.exit_code);
}
