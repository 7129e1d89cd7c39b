/* child.c: the consume loop of a worker process.
 *
 * One poll() loop waits on the Redis connection (a read request is sent, then waited for) and
 * on the handler's descriptors. A signal interrupts poll(), so a drain starts at once even
 * while XREADGROUP blocks in Redis; the loop then waits at most `block` for that last reply,
 * hands what it brought to the handler, waits for what is in flight, acknowledges, exits. */
#include "child/child.h"
#include "child/handler.h"
#include "child/stream.h"
#include "common/backoff.h"
#include "common/buf.h"
#include "common/log.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
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
#define BUSY_BLOCK_MS 50       /* BLOCK while deliveries are in flight, so acks are not held */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000
#define LOG_REPEAT_MS 60000    /* the same Redis problem is logged again after this long */
#define READ_MARGIN_MS 5000    /* a read unanswered for block + this: Redis is frozen */
#define DLQ_RETRY_MS 5000      /* a dead-letter move that failed is tried again after this */
#define ERROR_TEXT_MAX 200     /* dlq.error keeps at most this much of the last error */

/* A message that failed for now and waits in our pending list for its next attempt. */
struct retry {
    char id[STREAM_ID_MAX];
    long long due_ms;
    long long attempt;          /* the attempt that failed */
    bool outage;                /* failed because the endpoint was down: does not count */
};

/* A message to move to the dead-letter stream (done between requests, never while a read
 * is on the wire: the connection carries one conversation at a time). */
struct dead {
    char id[STREAM_ID_MAX];
    char reason[32];
    char error[ERROR_TEXT_MAX + 1];
    long long attempts;
    long long due_ms;
};

/* An entry this worker still holds (in flight, waiting for a retry or a dead-letter move)
 * from a group that was lost: it is put back into the new group's pending list as ours. */
struct adopt {
    char id[STREAM_ID_MAX];
    long long count;            /* its delivery count */
};

/* The done-marker key of a message being handled (dedupe_ttl), by entry id. */
struct marker {
    char id[STREAM_ID_MAX];
    struct str key;             /* owns key.p; binary (the id may hold any byte) */
};

struct child {
    const struct conf *conf;
    const struct pool_conf *pool;
    struct sb_slot *slot;
    struct stream st;
    const struct handler_ops *ops;
    struct handler *h;
    unsigned capacity;              /* messages it may hold at once */
    struct idlist acks;             /* done, to be acknowledged with the next request */
    struct retry *retries;          /* unordered; a scan finds what is due */
    size_t nretries, retries_cap;
    struct dead *dead;
    size_t ndead, dead_cap;
    struct marker *markers;         /* in flight, with dedupe_ttl */
    size_t nmarkers, markers_cap;
    struct str *done_keys;          /* succeeded, markers to write before their XACK (owned) */
    size_t ndone_keys, done_keys_cap;
    bool pending_phase;             /* still reading our own pending entries (ID 0 and on) */
    bool connected_once;
    char from[STREAM_ID_MAX];
    bool reading;                   /* a read request is on the wire */
    int read_count;                 /* the COUNT of that read */
    bool read_one;                  /* a read outgrew its bound: read one entry at a time */
    bool probe_due;                 /* one entry alone did: size it in Redis (probe_oversized) */
    char probe_after[STREAM_ID_MAX];/* it is our first pending entry after this id */
    long long read_deadline_ms;
    char claim_cursor[STREAM_ID_MAX];
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
    char seen[STREAM_ID_MAX];       /* the last entry the group delivered to us through ">" */
    struct adopt *adopt;            /* entries to put back after the group was re-created */
    size_t nadopt, adopt_cap;
    char adopt_upto[STREAM_ID_MAX]; /* in flight when the group was re-created: ids up to this
                                     * that fail are put back too; "" when none */
};

static volatile sig_atomic_t stopping;
static volatile sig_atomic_t reopen_log;

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static void on_usr1(int sig)
{
    (void)sig;
    reopen_log = 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Show an error on the status page (the last one per worker). */
static void publish_error(struct child *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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
    /* hiredis 0.14 writes without MSG_NOSIGNAL: a dropped connection must not kill us. */
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

static const struct handler_ops *handler_for(enum handler_kind k)
{
    switch (k) {
    case HANDLER_LOG: return &handler_log_ops;
    case HANDLER_NOOP: return &handler_noop_ops;
    case HANDLER_HTTP: return &handler_http_ops;
    }
    return NULL;
}

static double rnd(void)
{
    return (double)rand() / ((double)RAND_MAX + 1);
}

static void queue_dead(struct child *c, const char *id, const char *reason, long long attempts,
                       const char *error)
{
    if (c->ndead == c->dead_cap) {
        c->dead_cap = c->dead_cap ? c->dead_cap * 2 : 16;
        c->dead = xrealloc(c->dead, c->dead_cap * sizeof *c->dead);
    }
    struct dead *d = &c->dead[c->ndead++];
    snprintf(d->id, sizeof d->id, "%s", id);
    snprintf(d->reason, sizeof d->reason, "%s", reason ? reason : "other");
    snprintf(d->error, sizeof d->error, "%s", error ? error : "");
    d->attempts = attempts;
    d->due_ms = 0;
}

/* Entry id waits in our pending list for attempt + 1, due at due_ms. */
static void add_retry(struct child *c, const char *id, long long due_ms, long long attempt,
                      bool outage)
{
    if (c->nretries == c->retries_cap) {
        c->retries_cap = c->retries_cap ? c->retries_cap * 2 : 64;
        c->retries = xrealloc(c->retries, c->retries_cap * sizeof *c->retries);
    }
    struct retry *r = &c->retries[c->nretries++];
    snprintf(r->id, sizeof r->id, "%s", id);
    r->due_ms = due_ms;
    r->attempt = attempt;
    r->outage = outage;
}

static void schedule_retry(struct child *c, const char *id, const struct outcome *o)
{
    const struct pool_conf *p = c->pool;
    long long attempt = o->attempt > 0 ? o->attempt : 1;
    if (!o->outage && attempt >= p->max_attempts) {
        log_warnx("message %s failed %lld times: dead-lettering it: %s", id, attempt,
                  o->error ? o->error : "");
        queue_dead(c, id, "max_attempts", attempt, o->error);
        return;
    }
    long delay = backoff_ms(p->backoff, p->backoff_base_ms, p->backoff_max_ms,
                            p->backoff_jitter_pct, attempt, rnd());
    /* The endpoint's Retry-After replaces our schedule, even when shorter. But "0", or a date
     * already past, would have us retry at once and burn every attempt in milliseconds: then
     * our own schedule applies, and never sooner than backoff_base. */
    if (o->retry_after_ms > 0)
        delay = o->retry_after_ms < p->backoff_max_ms ? o->retry_after_ms : p->backoff_max_ms;
    else if (o->retry_after_ms == 0 && delay < p->backoff_base_ms)
        delay = p->backoff_base_ms;
    add_retry(c, id, now_ms() + delay, attempt, o->outage);
    sb_add(c->slot, SB_RETRIED, 1);
    log_debug("message %s failed (attempt %lld%s): retry in %ld ms: %s", id, attempt,
              o->outage ? ", endpoint down" : "", delay, o->error ? o->error : "?");
}

static long until(long long due, long long now)
{
    return due <= now ? 0 : (long)(due - now);
}

/* Milliseconds until the first retry is due (retries) or the first dead-letter move (dead),
 * or -1 when none waits. */
static long due_in_ms(const struct child *c, long long now, bool retries, bool dead)
{
    long best = -1;
    for (size_t i = 0; retries && i < c->nretries; i++) {
        long t = until(c->retries[i].due_ms, now);
        if (best < 0 || t < best)
            best = t;
    }
    for (size_t i = 0; dead && i < c->ndead; i++) {
        long t = until(c->dead[i].due_ms, now);
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

static long retry_timeout_ms(const struct child *c, long long now)
{
    return due_in_ms(c, now, true, true);
}

/* The done-marker key of entry id, taken out of the in-flight table ({NULL, 0}: none). */
static struct str take_marker(struct child *c, const char *id)
{
    for (size_t i = 0; i < c->nmarkers; i++)
        if (strcmp(c->markers[i].id, id) == 0) {
            struct str key = c->markers[i].key;
            c->markers[i] = c->markers[--c->nmarkers];
            return key;
        }
    return (struct str){ NULL, 0 };
}

/* Order of two entry ids "ms-seq" (a missing seq counts as 0). */
static int id_cmp(const char *a, const char *b)
{
    char *end;
    unsigned long long am = strtoull(a, &end, 10);
    unsigned long long as = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
    unsigned long long bm = strtoull(b, &end, 10);
    unsigned long long bs = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

static void queue_adopt(struct child *c, const char *id, long long count)
{
    if (c->nadopt == c->adopt_cap) {
        c->adopt_cap = c->adopt_cap ? c->adopt_cap * 2 : 16;
        c->adopt = xrealloc(c->adopt, c->adopt_cap * sizeof *c->adopt);
    }
    struct adopt *a = &c->adopt[c->nadopt++];
    snprintf(a->id, sizeof a->id, "%s", id);
    a->count = count > 0 ? count : 1;
}

static void publish_error(struct child *c, const char *fmt, ...)
{
    char text[sizeof c->slot->error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    sb_set_error(c->slot, text, (uint64_t)unix_ms());
}

void child_done(struct child *c, const char *id, const struct outcome *o)
{
    /* Every message handed over gets one duration: the handler's own measure, or for an
     * asynchronous handler that decided at once (a bad message), zero. A synchronous handler's
     * submit() is timed by submit_all(). */
    if (o->seconds >= 0)
        sb_observe(c->slot, SB_DUR_FIRST, o->seconds);
    else if (c->ops->fds)
        sb_observe(c->slot, SB_DUR_FIRST, 0);
    struct str marker = c->nmarkers ? take_marker(c, id) : (struct str){ NULL, 0 };
    /* It was in flight when the group was re-created: it is pending nowhere now, and a retry
     * or a dead-letter move needs it in our pending list. */
    if (o->disp != DISP_ACK && c->adopt_upto[0] && id_cmp(id, c->adopt_upto) <= 0)
        queue_adopt(c, id, o->attempt);
    switch (o->disp) {
    case DISP_ACK:
        if (marker.p) {
            if (c->ndone_keys == c->done_keys_cap) {
                c->done_keys_cap = c->done_keys_cap ? c->done_keys_cap * 2 : 64;
                c->done_keys = xrealloc(c->done_keys, c->done_keys_cap * sizeof *c->done_keys);
            }
            c->done_keys[c->ndone_keys++] = marker;
            marker.p = NULL;
        }
        idlist_add(&c->acks, id);
        break;
    case DISP_RETRY:
        /* It stays in our pending list (never acked before it succeeded or was dead-lettered)
         * and is taken again with XCLAIM when its delay is over. */
        sb_add(c->slot, SB_FAILED, 1);
        publish_error(c, "%s: %s", id, o->error ? o->error : "failed, will retry");
        schedule_retry(c, id, o);
        break;
    case DISP_DEAD:
        sb_add(c->slot, SB_FAILED, 1);
        if (o->reason && strcmp(o->reason, "bad_message") == 0)
            sb_add(c->slot, SB_BAD_MESSAGE, 1);
        log_warnx("message %s failed for good (%s): %s", id, o->reason ? o->reason : "?",
                  o->error ? o->error : "");
        publish_error(c, "%s: %s%s%s", id, o->reason ? o->reason : "failed", o->error ? ": " : "",
                      o->error ? o->error : "");
        queue_dead(c, id, o->reason, o->attempt > 0 ? o->attempt : 1, o->error);
        break;
    }
    free((char *)marker.p);
}

struct sb_slot *child_slot(struct child *c)
{
    return c->slot;
}

static unsigned inflight(struct child *c)
{
    return c->ops->inflight(c->h);
}

static bool accepting(struct child *c)
{
    return c->ops->accepting ? c->ops->accepting(c->h) : true;
}

/* Log a Redis problem once, then again only every LOG_REPEAT_MS while it lasts. */
static void log_redis_error(struct child *c)
{
    long long now = now_ms();
    if (c->st.err == c->last_error && now - c->last_error_log_ms < LOG_REPEAT_MS) {
        c->error_repeats++;
        return;
    }
    publish_error(c, "redis: %s", c->st.errstr);
    if (c->error_repeats)
        log_warnx("redis: %s (and %u more times)", c->st.errstr, c->error_repeats);
    else
        log_warnx("redis: %s", c->st.errstr);
    c->last_error = c->st.err;
    c->last_error_log_ms = now;
    c->error_repeats = 0;
}

static void start_pending_phase(struct child *c);

static void set_group_state(struct child *c, enum sb_group_state state)
{
    atomic_store_explicit(&c->slot->group_state, (int)state, memory_order_relaxed);
}

/* Where a lost group restarts: after the last entry the fleet is known to have had delivered,
 * our own last one or the one the master last saw the group deliver, whichever is later. Both
 * were delivered by the group, so nothing after them is skipped. */
static void set_resume(struct child *c)
{
    char polled[STREAM_ID_MAX] = "";
    uint64_t ms, n;
    if (sb_id_get(&c->slot->delivered, &ms, &n) == 0)
        snprintf(polled, sizeof polled, "%" PRIu64 "-%" PRIu64, ms, n);
    const char *best = c->seen;
    if (polled[0] && (!best[0] || id_cmp(polled, best) > 0))
        best = polled;
    snprintf(c->st.resume, sizeof c->st.resume, "%s", best);
}

/* Remember the last entry ">" brought (and tell the master, for the pool's other workers). */
static void note_seen(struct child *c)
{
    snprintf(c->seen, sizeof c->seen, "%s", c->st.last_id);
    char *end;
    unsigned long long ms = strtoull(c->seen, &end, 10);
    unsigned long long n = *end == '-' ? strtoull(end + 1, NULL, 10) : 0;
    sb_id_set(&c->slot->seen, ms, n);
}

/* The group was created again after it was lost: say so loudly (later entries are delivered,
 * earlier ones not again; what was pending in the lost group is pending only here), count it. */
static void report_recreated(struct child *c, const char *when)
{
    sb_add(c->slot, SB_GROUP_RECREATED, 1);
    const struct pool_conf *p = c->pool;
    if (c->st.resume[0])
        log_warnx("group %s of stream %s is missing: re-creating it after entry %s%s (the fleet had "
                  "delivered up to %s): later entries are delivered, earlier ones not again",
                  p->group, p->stream, c->st.group_at, when, c->st.resume);
    else
        log_warnx("group %s of stream %s is missing: re-creating it %s%s (nothing is known of what was "
                  "delivered before)", p->group, p->stream,
                  p->group_start_latest ? "after its last entry (group_start = latest)"
                                        : "from the start, messages may be delivered again", when);
    publish_error(c, "group %s was missing: re-created after %s", p->group, c->st.group_at);
}

/* The group exists (again): what we still hold must be pending in it, as ours. Entries up to
 * where the group stands go back into our pending list when they are pending nowhere (after a
 * loss); later ones are delivered again through ">" and are forgotten here. Those in flight
 * are put back if they fail (child_done). */
static void reconcile_held(struct child *c)
{
    const char *at = c->st.group_at;
    size_t kept = 0, dropped = 0;
    for (size_t i = 0; i < c->nretries; i++) {
        if (id_cmp(c->retries[i].id, at) > 0) {
            dropped++;
            continue;
        }
        queue_adopt(c, c->retries[i].id, c->retries[i].attempt);
        c->retries[kept++] = c->retries[i];
    }
    c->nretries = kept;
    kept = 0;
    for (size_t i = 0; i < c->ndead; i++) {
        if (id_cmp(c->dead[i].id, at) > 0) {
            dropped++;
            continue;
        }
        queue_adopt(c, c->dead[i].id, c->dead[i].attempts);
        c->dead[kept++] = c->dead[i];
    }
    c->ndead = kept;
    if (inflight(c) > 0)
        snprintf(c->adopt_upto, sizeof c->adopt_upto, "%s", at);
    if (dropped)
        log_warnx("%zu messages waiting here for a retry or a dead-letter move lie after entry %s, where "
                  "the group restarted: they are delivered again from there", dropped, at);
}

/* Put the entries queued by reconcile_held() and child_done() back into our pending list. */
static int adopt_held(struct child *c)
{
    size_t adopted = 0;
    while (c->nadopt > 0) {
        const struct adopt *a = &c->adopt[c->nadopt - 1];
        bool back = false;
        if (stream_adopt(&c->st, a->id, a->count, &back) == -1)
            return -1;
        adopted += back;
        c->nadopt--;
    }
    if (adopted)
        log_warnx("put %zu messages this worker holds back into the pending list of the re-created group",
                  adopted);
    return 0;
}

/* Decide what a failed Redis call means. Returns -1 when the child must exit. */
static int on_redis_error(struct child *c)
{
    sb_add(c->slot, SB_REDIS_ERRORS, 1);
    log_redis_error(c);
    /* Nothing can be read while these last: /health says why (the key of another type is our
     * stream's: the other keys we touch are written by scripts that do not end up here). */
    if (c->st.err == SERR_WRONGTYPE)
        set_group_state(c, SB_GROUP_WRONGTYPE);
    else if (c->st.err == SERR_OOM)
        set_group_state(c, SB_GROUP_NOT_CREATED);
    switch (c->st.err) {
    case SERR_AUTH:
        log_errorx("redis refused our credentials: exiting, the config cannot work");
        return -1;
    case SERR_NOGROUP:
        /* The stream or group is gone (deleted, or Redis came back from an old snapshot):
         * re-create it after the last entry the fleet is known to have had delivered. */
        if (!stream_connected(&c->st))
            break;
        set_resume(c);
        if (stream_create_group(&c->st, true) == 0) {
            if (c->st.group_created)
                report_recreated(c, "");
            else
                log_warnx("group %s of stream %s was missing and another worker re-created it: going on "
                          "after entry %s", c->pool->group, c->pool->stream, c->st.group_at);
            set_group_state(c, SB_GROUP_OK);
            reconcile_held(c);
            start_pending_phase(c);
            return 0;
        }
        /* Redis at maxmemory cannot create it, or the key became something else: wait with
         * backoff like any other failure (logged once, then once a minute). */
        log_redis_error(c);
        if (c->st.err == SERR_WRONGTYPE)
            set_group_state(c, SB_GROUP_WRONGTYPE);
        else if (c->st.err == SERR_OOM)
            set_group_state(c, SB_GROUP_NOT_CREATED);
        break;
    default:
        break;
    }
    /* Everything else waits with capped, jittered backoff, on a fresh connection. */
    stream_disconnect(&c->st);
    c->reading = false;
    c->reconnect_ms = c->reconnect_ms ? c->reconnect_ms * 2 : RECONNECT_MIN_MS;
    if (c->reconnect_ms > RECONNECT_MAX_MS)
        c->reconnect_ms = RECONNECT_MAX_MS;
    c->next_connect_ms = now_ms() + c->reconnect_ms / 2 + rand() % (c->reconnect_ms / 2 + 1);
    return 0;
}

/* Read our pending list from the start: at start-up, and after a reconnect, when a read in
 * flight may have delivered entries we never saw. The entries waiting for a retry or a
 * dead-letter move are in that list too: submit_all() leaves them to their schedule. */
static void start_pending_phase(struct child *c)
{
    c->pending_phase = true;
    snprintf(c->from, sizeof c->from, "0");
}

static void submit_all(struct child *c);

/* Attempts of the batch's entries from Redis's delivery counter (for entries that were
 * delivered before: our pending list, reclaimed orphans). */
static void fetch_attempts(struct child *c)
{
    struct stream *st = &c->st;
    if (st->n == 0)
        return;
    long long *counts = xcalloc(st->n, sizeof *counts);
    /* Rows between the batch's entries that are not in it: deleted ones, our others. */
    size_t limit = st->n + st->vanished.n + c->nretries + c->ndead + inflight(c) + 16;
    if (stream_delivery_counts(st, st->msgs, st->n, limit, counts) == 0)
        for (size_t i = 0; i < st->n; i++)
            st->msgs[i].attempt = counts[i] > 0 ? counts[i] : 1;
    free(counts);
}

/* A batch arrived: pass each message to the handler. */
static void handle_batch(struct child *c)
{
    struct stream *st = &c->st;
    if (c->read_one && !c->pending_phase) {
        /* A read of new entries went through one at a time: back to whole batches. */
        c->read_one = false;
        st->entry_limit = 0;
    }
    for (size_t i = 0; i < st->vanished.n; i++) {
        log_warnx("pending entry %s has no data any more (deleted or trimmed): acknowledging it",
                  st->vanished.id[i]);
        idlist_add(&c->acks, st->vanished.id[i]);
        sb_add(c->slot, SB_VANISHED, 1);
    }
    if (c->pending_phase) {
        if (st->n == 0 && st->vanished.n == 0) {
            c->pending_phase = false;
            snprintf(c->from, sizeof c->from, ">");
        } else {
            snprintf(c->from, sizeof c->from, "%s", st->last_id);
            fetch_attempts(c);
        }
    }
    submit_all(c);
}

static size_t msg_bytes(const struct msg *m)
{
    size_t n = 0;
    for (size_t i = 0; i < 2 * m->nf; i++)
        n += m->f[i].len;
    return n;
}

/* The id that identifies a message to the producer: id_field's value, else the entry id. */
static struct str message_id(const struct child *c, const struct msg *m)
{
    const struct str *v = c->pool->id_field ? msg_get(m, c->pool->id_field) : NULL;
    return v && v->len ? *v : m->id;
}

/* The done-marker key of m: stream:group:done:<message id>, with every byte of the id (a
 * NUL in id_field's value must not shorten it, or "abc\0zzz" would pass for "abc"). Caller
 * owns key.p. */
static struct str marker_key(const struct child *c, const struct msg *m)
{
    struct str id = message_id(c, m);
    struct buf b = BUF_INIT;
    buf_printf(&b, "%s:%s:done:", c->pool->stream, c->pool->group);
    buf_add(&b, id.p, id.len);
    return (struct str){ b.p, b.len };
}

/* With dedupe_ttl: which messages of the batch were already handled (their done-marker is
 * there). On a Redis error nothing is skipped: handling twice is better than not at all. */
static bool *find_duplicates(struct child *c, struct str **keysp)
{
    struct stream *st = &c->st;
    struct str *keys = xcalloc(st->n, sizeof *keys);
    bool *seen = xcalloc(st->n, sizeof *seen);
    for (size_t i = 0; i < st->n; i++)
        keys[i] = marker_key(c, &st->msgs[i]);
    if (stream_seen(st, keys, st->n, seen) == -1) {
        log_redis_error(c);
        for (size_t i = 0; i < st->n; i++)
            seen[i] = false;
    }
    *keysp = keys;
    return seen;
}

/* The failed attempt of entry id waiting for a retry, or 0. */
static long long retry_attempt(const struct child *c, const char *id)
{
    for (size_t i = 0; i < c->nretries; i++)
        if (strcmp(c->retries[i].id, id) == 0)
            return c->retries[i].attempt;
    return 0;
}

/* Whether entry id already waits for a retry or a dead-letter move. */
static bool scheduled(const struct child *c, const char *id)
{
    for (size_t i = 0; i < c->nretries; i++)
        if (strcmp(c->retries[i].id, id) == 0)
            return true;
    for (size_t i = 0; i < c->ndead; i++)
        if (strcmp(c->dead[i].id, id) == 0)
            return true;
    return false;
}

/* Hand every message of the batch in c->st to the handler, then free the batch. Messages
 * that are over their attempts, too large, or already handled do not reach the handler. */
static void submit_all(struct child *c)
{
    struct stream *st = &c->st;
    const struct pool_conf *p = c->pool;
    struct str *keys = NULL;
    bool *dup = p->dedupe_ttl_ms > 0 && st->n ? find_duplicates(c, &keys) : NULL;
    long long arrived = unix_ms();
    for (size_t i = 0; i < st->n; i++) {
        const struct msg *m = &st->msgs[i];
        if (c->pending_phase && scheduled(c, m->id.p)) {
            /* Re-reading our pending list counted a delivery of an entry that only waits for
             * its retry: set its counter back, so that reconnects do not use up attempts. */
            long long attempt = retry_attempt(c, m->id.p);
            if (attempt > 0 && stream_set_count(st, m->id.p, attempt) == -1)
                log_redis_error(c);
            continue;
        }
        sb_add(c->slot, SB_READ, 1);
        if (m->attempt > p->max_attempts) {
            /* Delivered more often than allowed without an outcome: it crashed or hung its
             * workers (or they were killed while holding it). */
            log_warnx("message %s was delivered %lld times without an outcome: dead-lettering it",
                      m->id.p, m->attempt);
            queue_dead(c, m->id.p, "max_attempts", m->attempt, "delivered without an outcome");
            continue;
        }
        size_t bytes = msg_bytes(m);
        if ((long long)bytes > p->max_message_bytes) {
            char err[96];
            snprintf(err, sizeof err, "%zu bytes, max_message_bytes is %lld", bytes, p->max_message_bytes);
            log_warnx("message %s is too large (%s): dead-lettering it", m->id.p, err);
            queue_dead(c, m->id.p, "too_large", m->attempt, err);
            continue;
        }
        if (dup && dup[i]) {
            log_debug("message %s was handled already: acknowledging it", m->id.p);
            sb_add(c->slot, SB_DUPLICATE, 1);
            idlist_add(&c->acks, m->id.p);
            continue;
        }
        if (keys) {
            if (c->nmarkers == c->markers_cap) {
                c->markers_cap = c->markers_cap ? c->markers_cap * 2 : 64;
                c->markers = xrealloc(c->markers, c->markers_cap * sizeof *c->markers);
            }
            struct marker *mk = &c->markers[c->nmarkers++];
            snprintf(mk->id, sizeof mk->id, "%s", m->id.p);
            mk->key = keys[i];
            keys[i].p = NULL;
        }
        long long added = msg_id_ms(&m->id);
        if (added > 0)
            sb_observe(c->slot, SB_AGE_FIRST, arrived > added ? (double)(arrived - added) / 1000.0 : 0);
        double t0 = now_s();
        c->handled++;
        c->ops->submit(c->h, m);
        if (c->ops->fds == NULL)
            sb_observe(c->slot, SB_DUR_FIRST, now_s() - t0);
    }
    if (keys)
        for (size_t i = 0; i < st->n; i++)
            free((char *)keys[i].p);
    free(keys);
    free(dup);
    stream_batch_release(st);
    atomic_store_explicit(&c->slot->inflight, inflight(c), memory_order_relaxed);
}

/* Move the queued dead letters. A move that fails leaves the message pending (nothing is
 * lost) and is tried again later. */
static void move_dead_letters(struct child *c, long long now)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long unix_ms = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (size_t i = 0; i < c->ndead && stream_connected(&c->st);) {
        struct dead *d = &c->dead[i];
        if (d->due_ms > now) {
            i++;
            continue;
        }
        int r = stream_dead_letter(&c->st, c->pool->dlq, d->id, d->reason, d->attempts, d->error, unix_ms);
        if (r == -2) {
            sb_add(c->slot, SB_DLQ_FAILURES, 1);
            log_warnx("cannot move message %s to %s, it stays pending: %s", d->id, c->pool->dlq, c->st.errstr);
            d->due_ms = now + DLQ_RETRY_MS;
            if (!stream_connected(&c->st)) {
                on_redis_error(c);
                return;
            }
            i++;
            continue;
        }
        if (r == 1) {
            sb_add(c->slot, SB_DEAD_LETTERED, 1);
            sb_add(c->slot, sb_dlq_index(d->reason), 1);
            log_info("message %s moved to %s (%s)", d->id, c->pool->dlq, d->reason);
        } else if (r == -1) {
            sb_add(c->slot, SB_VANISHED, 1);
            log_warnx("message %s to dead-letter has no data any more: acknowledged", d->id);
        } else {
            log_info("message %s is no longer ours: not dead-lettered by us", d->id);
        }
        *d = c->dead[--c->ndead];
    }
}

/* Write the done-markers of the messages that succeeded, before their XACK goes out. */
static int write_markers(struct child *c)
{
    if (c->ndone_keys == 0)
        return 0;
    int rc = stream_mark_done(&c->st, c->done_keys, c->ndone_keys, c->pool->dedupe_ttl_ms);
    for (size_t i = 0; i < c->ndone_keys; i++)
        free((char *)c->done_keys[i].p);
    c->ndone_keys = 0;
    if (rc == -1 && stream_connected(&c->st))
        log_redis_error(c);     /* a marker lost: at worst a duplicate later, never a loss */
    return stream_connected(&c->st) ? 0 : -1;
}

/* Drop the retries whose entries another consumer holds now (c->st.lost, from a touch): they
 * are its to handle. Their dead-letter moves find out by themselves (the move does nothing). */
static void forget_lost(struct child *c)
{
    for (size_t k = 0; k < c->st.lost.n; k++)
        for (size_t i = 0; i < c->nretries; i++)
            if (strcmp(c->retries[i].id, c->st.lost.id[k]) == 0) {
                log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                         c->retries[i].id);
                c->retries[i] = c->retries[--c->nretries];
                break;
            }
    c->st.lost.n = 0;
}

/* Orphans: entries pending for longer than claim_idle belong to consumers that died (a
 * killed worker, another host, a renamed pool). Take them over, following XAUTOCLAIM's
 * cursor across turns until it comes back to 0-0. Also keep our own waiting retries from
 * looking orphaned, and (slot 0) remove consumers that are long dead and hold nothing. */
static void reclaim_orphans(struct child *c, long long now)
{
    const struct pool_conf *p = c->pool;
    if (now >= c->next_touch_ms && (c->nretries || c->ndead)) {
        /* Entries waiting here (for a retry, or for a dead-letter move that failed) are ours:
         * reset their idle time so that no orphan scan, ours included, takes them. */
        struct idlist ids = { 0 };
        for (size_t i = 0; i < c->nretries; i++)
            idlist_add(&ids, c->retries[i].id);
        for (size_t i = 0; i < c->ndead; i++)
            idlist_add(&ids, c->dead[i].id);
        int rc = stream_touch(&c->st, &ids);
        if (rc == 0)
            forget_lost(c);
        idlist_release(&ids);
        c->next_touch_ms = now + p->claim_idle_ms / 3;
        if (rc == -1) {
            /* A lost connection goes the way of every other: counted, backoff, reconnect. */
            if (!stream_connected(&c->st)) {
                on_redis_error(c);
                return;
            }
            log_redis_error(c);
        }
    }
    if (!stream_connected(&c->st))
        return;
    if (c->index == 0 && now >= c->next_prune_ms) {
        long long removed = 0;
        long idle = p->claim_idle_ms * 4 > 3600000 ? p->claim_idle_ms * 4 : 3600000;
        if (stream_prune_consumers(&c->st, idle, &removed) == 0 && removed > 0)
            log_info("removed %lld consumers of group %s idle for over %ld s with nothing pending",
                     removed, p->group, idle / 1000);
        c->next_prune_ms = now + 600000;
    }
    unsigned busy = inflight(c);
    if (now < c->next_claim_ms || stopping || !accepting(c) || busy >= c->capacity || !stream_connected(&c->st))
        return;
    int room = (int)(c->capacity - busy);
    size_t deleted = 0;
    if (stream_autoclaim(&c->st, p->claim_idle_ms, c->claim_cursor, room, &deleted) == -1) {
        on_redis_error(c);
        return;
    }
    if (deleted) {
        sb_add(c->slot, SB_VANISHED, deleted);
        log_warnx("%zu pending entries of dead consumers had no data any more (trimmed or deleted)", deleted);
    }
    if (c->st.n) {
        sb_add(c->slot, SB_RECLAIMED, c->st.n);
        log_info("took over %zu messages of dead consumers (idle over %ld ms)", c->st.n, p->claim_idle_ms);
        fetch_attempts(c);
        submit_all(c);
    } else {
        stream_batch_release(&c->st);
    }
    /* Back at the start of the pending list: wait. Otherwise go on next turn. */
    if (strcmp(c->claim_cursor, "0-0") == 0) {
        long every = p->claim_idle_ms / 4;
        if (every < 1000)
            every = 1000;
        if (every > 60000)
            every = 60000;
        c->next_claim_ms = now + every;
    }
}

static void claim_due_retries(struct child *c, long long now)
{
    unsigned busy = inflight(c);
    if (stopping || c->nretries == 0 || !accepting(c) || busy >= c->capacity)
        return;
    struct idlist due = { 0 };
    long long *attempts = xcalloc(c->capacity, sizeof *attempts);
    for (size_t i = 0; i < c->nretries && busy + due.n < c->capacity;) {
        struct retry *r = &c->retries[i];
        if (r->due_ms > now) {
            i++;
            continue;
        }
        if (r->outage) {
            /* The endpoint was down: that attempt does not count. Claim it alone, keeping
             * its delivery counter where it was. */
            struct idlist one = { 0 };
            idlist_add(&one, r->id);
            char one_id[STREAM_ID_MAX];
            snprintf(one_id, sizeof one_id, "%s", r->id);
            long long attempt = r->attempt;
            *r = c->retries[--c->nretries];
            int rc = stream_claim(&c->st, &one, attempt);
            idlist_release(&one);
            if (rc == -1) {
                /* Still pending for us (or, should the group be gone, to be adopted by the
                 * new one): keep waiting for it, never forget it. */
                add_retry(c, one_id, now_ms(), attempt, true);
                on_redis_error(c);
                break;
            }
            if (c->st.lost.n) {
                log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                         c->st.lost.id[0]);
            } else if (c->st.n == 0) {
                log_warnx("a message waiting for a retry was deleted from the stream meanwhile");
                sb_add(c->slot, SB_VANISHED, 1);
            }
            for (size_t k = 0; k < c->st.n; k++)
                c->st.msgs[k].attempt = attempt;
            submit_all(c);
            busy = inflight(c);
            continue;
        }
        attempts[due.n] = r->attempt;
        idlist_add(&due, r->id);
        *r = c->retries[--c->nretries];
    }
    if (due.n > 0 && stream_connected(&c->st)) {
        if (stream_claim(&c->st, &due, -1) == -1) {
            for (size_t i = 0; i < due.n; i++)
                add_retry(c, due.id[i], now_ms(), attempts[i], false);
            on_redis_error(c);
        } else {
            /* XCLAIM counted a delivery: this is the next attempt. */
            struct stream *st = &c->st;
            for (size_t i = 0; i < st->n; i++) {
                size_t j = 0;
                while (j < due.n && strcmp(due.id[j], st->msgs[i].id.p) != 0)
                    j++;
                st->msgs[i].attempt = j < due.n ? attempts[j] + 1 : 2;
            }
            /* Entries another consumer took over meanwhile are its now: not a failure, not
             * vanished, simply no longer ours to retry. */
            for (size_t i = 0; i < st->lost.n; i++)
                log_info("message %s waiting for a retry is held by another consumer now: leaving it",
                         st->lost.id[i]);
            if (st->n + st->lost.n < due.n) {
                log_warnx("%zu messages waiting for a retry were deleted from the stream meanwhile",
                          due.n - st->n - st->lost.n);
                sb_add(c->slot, SB_VANISHED, due.n - st->n - st->lost.n);
            }
            submit_all(c);
        }
    }
    free(attempts);
    idlist_release(&due);
}

/* A read's reply outgrew its bound (SERR_OVERSIZE) and the connection was dropped: what it
 * carried stays pending for us, and the pending list is read again after the reconnect. Read
 * one entry at a time from now on; when a read of one entry of our pending list outgrew the
 * bound, that entry is sized in Redis once connected again (probe_oversized()). */
static void note_oversize(struct child *c)
{
    log_warnx("a read of %d entries outgrew its bound (%s): reading one at a time", c->read_count,
              c->st.errstr);
    if (c->read_count > 1 || !c->pending_phase) {
        c->read_one = true;
        return;
    }
    c->probe_due = true;
    snprintf(c->probe_after, sizeof c->probe_after, "%s", c->from);
}

/* Size in Redis the entry that outgrew a read alone: over max_message_bytes, it is
 * dead-lettered (server-side: its body never comes here); else it is read alone again with a
 * bound made for it (an entry of many small fields takes more room in RESP than its bytes). */
static void probe_oversized(struct child *c)
{
    char id[STREAM_ID_MAX];
    long long count = 0, bytes = 0, values = 0;
    int r = stream_probe_pending(&c->st, c->probe_after, id, &count, &bytes, &values);
    if (r == -1) {
        on_redis_error(c);      /* probe_due stays: tried again once connected */
        return;
    }
    c->probe_due = false;
    if (r == 0 || bytes < 0 || scheduled(c, id))
        return;
    if (bytes > c->pool->max_message_bytes) {
        char err[96];
        snprintf(err, sizeof err, "%lld bytes, max_message_bytes is %lld", bytes, c->pool->max_message_bytes);
        log_warnx("message %s is too large (%s): dead-lettering it without reading it", id, err);
        sb_add(c->slot, SB_READ, 1);
        queue_dead(c, id, "too_large", count > 0 ? count : 1, err);
        return;
    }
    /* RESP frames each name and value in at most 25 bytes; never below the usual bound. */
    size_t need = (size_t)bytes + 32 * (size_t)values + 65536;
    size_t usual = (size_t)c->pool->max_message_bytes * 2 + 65536;
    c->st.entry_limit = need > usual ? need : usual;
}

/* Send the next request if there is room for more work; else just acknowledge. */
static void maybe_request(struct child *c)
{
    unsigned busy = inflight(c);
    if (write_markers(c) == -1) {
        on_redis_error(c);
        return;
    }
    /* Our pending list is only re-read with nothing in flight: what is in flight is in it. */
    if (!stopping && accepting(c) && busy < c->capacity && !(c->pending_phase && busy > 0)) {
        unsigned room = c->capacity - busy;
        int count = room < (unsigned)c->pool->batch ? (int)room : c->pool->batch;
        if (c->read_one)
            count = 1;
        long block = -1;
        if (!c->pending_phase) {
            block = busy > 0 && c->pool->block_ms > BUSY_BLOCK_MS ? BUSY_BLOCK_MS : c->pool->block_ms;
            /* Redis holds a blocked read: a retry that falls due must not wait behind it. */
            long rt = retry_timeout_ms(c, now_ms());
            if (rt >= 0 && rt < block)
                block = rt > 0 ? rt : 1;
        }
        if (stream_send_read(&c->st, &c->acks, c->from, count, block) == -1) {
            on_redis_error(c);
            return;
        }
        /* The acks are on the wire. Should the connection break before the reply, they are
         * simply still pending, and come back to us through the pending-list read. */
        c->acks.n = 0;
        c->reading = true;
        c->read_count = count;
        c->read_deadline_ms = now_ms() + (block > 0 ? block : 0) + READ_MARGIN_MS;
    } else if (c->acks.n) {
        uint64_t acked;
        if (stream_ack(&c->st, &c->acks, &acked) == -1) {
            on_redis_error(c);
            return;
        }
        sb_add(c->slot, SB_ACKED, acked);
        c->acks.n = 0;
    }
}

/* Resident memory in bytes, from /proc/self/statm, or 0 when unknown. */
static long long resident_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (f == NULL)
        return 0;
    long long size = 0, rss = 0;
    int n = fscanf(f, "%lld %lld", &size, &rss);
    fclose(f);
    return n == 2 ? rss * sysconf(_SC_PAGESIZE) : 0;
}

/* Reasons to stop on our own: recycling after max_messages, the memory limit, the master's
 * death. Each starts the same drain as SIGTERM; the exit code tells the master why. */
static void check_limits(struct child *c, long long now)
{
    if (stopping)
        return;
    if (c->recycle_at && c->handled >= c->recycle_at) {
        log_info("handled %llu messages (max_messages): finishing, to be replaced", c->handled);
        c->exit_code = CHILD_EXIT_RECYCLE;
        stopping = 1;
        return;
    }
    if (now >= c->next_memory_check_ms) {
        /* Every second with a limit to enforce, else every 5 s for /metrics. */
        c->next_memory_check_ms = now + (c->pool->memory_limit ? 1000 : 5000);
        long long rss = resident_bytes();
        atomic_store_explicit(&c->slot->rss_bytes, (uint64_t)rss, memory_order_relaxed);
        if (c->pool->memory_limit && rss > c->pool->memory_limit) {
            log_warnx("resident memory %lld KiB exceeds memory_limit %lld KiB: finishing, to be replaced",
                      rss / 1024, c->pool->memory_limit / 1024);
            c->exit_code = CHILD_EXIT_MEMORY;
            stopping = 1;
        }
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
    srand((unsigned)getpid() ^ (unsigned)now_ms());

    static struct child c;
    c.conf = conf;
    c.pool = pool;
    c.slot = slot;
    c.ops = handler_for(pool->handler);
    c.index = index;
    c.master = master;
    if (pool->max_messages)
        c.recycle_at = (unsigned long long)pool->max_messages +
                       (pool->max_messages_jitter ? (unsigned long long)rand() % (unsigned long long)(pool->max_messages_jitter + 1) : 0);
    c.capacity = pool->handler == HANDLER_HTTP ? (unsigned)pool->inflight : (unsigned)pool->batch;
    snprintf(c.claim_cursor, sizeof c.claim_cursor, "0-0");
    /* Spread the first orphan scans of a pool's workers over a few seconds. */
    c.next_claim_ms = now_ms() + 1000 + rand() % 4000;

    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char consumer[320];
    snprintf(consumer, sizeof consumer, "%s:%s:%d", host, pool->name, index);
    stream_init(&c.st, &conf->redis, pool, consumer);

    c.h = c.ops->open(&c, pool);
    if (c.h == NULL)
        exit(CHILD_EXIT_CONFIG);
    /* The generation we replace still holds its pending entries under our name: a fresh
     * child leaves them alone on its first connection (not after a reconnect). */
    bool skip_pending = fresh;
    log_debug("consumer %s started", consumer);

    struct pollfd pfd[POLL_MAX];
    for (;;) {
        long long now = now_ms();
        atomic_store_explicit(&slot->heartbeat_ms, (uint64_t)now, memory_order_relaxed);
        check_limits(&c, now);
        if (reopen_log) {
            reopen_log = 0;
            if (conf->log_file && log_open_file(conf->log_file) == -1)
                log_warn("cannot reopen %s", conf->log_file);
        }
        if (stopping && c.orphan_deadline_ms == 0 && getppid() != master) {
            /* No master to wait for us or to kill us: do not wait out a blocking read, and
             * give what is in flight a short while. What is left stays pending in Redis. */
            c.orphan_deadline_ms = now + 1500;
            if (c.reading) {
                c.reading = false;
                stream_disconnect(&c.st);
            }
        }
        if (c.orphan_deadline_ms && now >= c.orphan_deadline_ms) {
            log_warnx("master gone: exiting with %u messages in flight (they stay pending)", inflight(&c));
            break;
        }

        if (stopping && !c.reading && inflight(&c) == 0 &&
            ((c.acks.n == 0 && c.ndead == 0) || !stream_connected(&c.st)))
            break;

        if (!stream_connected(&c.st) && now >= c.next_connect_ms) {
            set_resume(&c);
            if (stream_connect(&c.st) == -1) {
                if (on_redis_error(&c) == -1)
                    exit(CHILD_EXIT_CONFIG);
            } else {
                if (c.st.group_created && (c.connected_once || c.st.resume[0]))
                    /* Gone while we were away (Redis restarted from a snapshot that predates
                     * it, or the stream was deleted): re-created where the fleet was. */
                    report_recreated(&c, ", found so after reconnecting");
                else if (c.st.group_created)
                    log_info("created group %s on stream %s at %s", pool->group, pool->stream,
                             pool->group_start_latest ? "its end (group_start = latest)" : "its start");
                if (c.connected_once)
                    reconcile_held(&c);
                set_group_state(&c, SB_GROUP_OK);
                c.connected_once = true;
                if (c.reconnect_ms)
                    log_info("redis: connected again");
                c.reconnect_ms = 0;
                c.last_error = SERR_NONE;
                c.error_repeats = 0;
                /* What an earlier read delivered to us before the connection broke is in our
                 * pending list: read it first, as at start. */
                start_pending_phase(&c);
                if (skip_pending) {
                    c.pending_phase = false;
                    snprintf(c.from, sizeof c.from, ">");
                }
                skip_pending = false;
            }
        }
        if (c.reading && now >= c.read_deadline_ms) {
            /* Redis is frozen or the network ate the reply: rebuild the connection. */
            c.reading = false;
            c.st.err = SERR_IO;
            snprintf(c.st.errstr, sizeof c.st.errstr, "read: no reply within %ld ms", c.pool->block_ms + READ_MARGIN_MS);
            on_redis_error(&c);
        }
        /* Before any retry or dead-letter move: they need their entries pending as ours. */
        if (stream_connected(&c.st) && !c.reading && c.nadopt && adopt_held(&c) == -1)
            on_redis_error(&c);
        if (c.adopt_upto[0] && inflight(&c) == 0 && c.nadopt == 0)
            c.adopt_upto[0] = '\0';
        if (stream_connected(&c.st) && !c.reading && c.probe_due)
            probe_oversized(&c);
        if (stream_connected(&c.st) && !c.reading && c.ndead)
            move_dead_letters(&c, now);
        if (stream_connected(&c.st) && !c.reading)
            reclaim_orphans(&c, now);
        if (stream_connected(&c.st) && !c.reading)
            claim_due_retries(&c, now);
        if (stream_connected(&c.st) && !c.reading)
            maybe_request(&c);

        int n = 0;
        long timeout = HEARTBEAT_MS;
        if (c.reading) {
            pfd[n++] = (struct pollfd){ .fd = stream_fd(&c.st), .events = stream_events(&c.st) };
            if (c.read_deadline_ms - now < timeout)
                timeout = c.read_deadline_ms > now ? (long)(c.read_deadline_ms - now) : 0;
        }
        else if (!stream_connected(&c.st) && c.next_connect_ms - now < timeout)
            timeout = c.next_connect_ms > now ? (long)(c.next_connect_ms - now) : 0;
        /* Wake for a due retry or dead-letter move only when one could be acted on: not while
         * disconnected (the reconnect timer rules), reading (the read's BLOCK is bounded by it)
         * or holding off (circuit open, no room) — else a due entry would spin the loop. */
        if (stream_connected(&c.st) && !c.reading) {
            long rt = due_in_ms(&c, now, !stopping && accepting(&c) && inflight(&c) < c.capacity, true);
            if (rt >= 0 && rt < timeout)
                timeout = rt;
        }
        int first_handler_fd = n;
        if (c.ops->fds)
            n += c.ops->fds(c.h, pfd + n, POLL_MAX - n, &timeout);

        int ready = poll(pfd, (nfds_t)n, (int)timeout);
        if (ready == -1) {
            if (errno != EINTR)
                fatal("poll");
            continue;
        }
        if (c.reading && pfd[0].revents) {
            int r = stream_recv(&c.st);
            /* XACK's reply comes at once, before a blocking read's: count it now. */
            if (c.st.acked) {
                sb_add(slot, SB_ACKED, c.st.acked);
                c.st.acked = 0;
            }
            if (r == 1) {
                c.reading = false;
                c.reconnect_ms = 0;
                if (c.from[0] == '>' && c.st.n + c.st.vanished.n > 0)
                    note_seen(&c);
                handle_batch(&c);
            } else if (r == -1) {
                c.reading = false;
                if (c.st.err == SERR_OVERSIZE)
                    note_oversize(&c);
                if (on_redis_error(&c) == -1)
                    exit(CHILD_EXIT_CONFIG);
            }
        }
        if (c.ops->run)
            c.ops->run(c.h, pfd + first_handler_fd, n - first_handler_fd);
        atomic_store_explicit(&slot->inflight, inflight(&c), memory_order_relaxed);
    }

    c.ops->close(c.h);
    stream_disconnect(&c.st);
    idlist_release(&c.st.vanished);
    idlist_release(&c.st.lost);
    idlist_release(&c.acks);
    free(c.retries);
    free(c.dead);
    free(c.adopt);
    for (size_t i = 0; i < c.nmarkers; i++)
        free((char *)c.markers[i].key.p);
    free(c.markers);
    for (size_t i = 0; i < c.ndone_keys; i++)
        free((char *)c.done_keys[i].p);
    free(c.done_keys);
    if (c.nretries)
        log_info("%zu messages waiting for a retry stay pending for the next start", c.nretries);
    log_debug("consumer %s drained", consumer);
    exit(c.exit_code);
}
