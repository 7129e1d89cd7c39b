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
#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#define POLL_MAX 1100          /* the Redis connection and the handler's descriptors */
#define HEARTBEAT_MS 1000      /* the longest the loop sleeps between two stamps */
#define BUSY_BLOCK_MS 50       /* BLOCK while deliveries are in flight, so acks are not held */
#define RECONNECT_MIN_MS 100
#define RECONNECT_MAX_MS 5000
#define LOG_REPEAT_MS 30000    /* the same Redis problem is logged again after this long */
#define RETRY_BASE_MS 1000     /* first retry delay, doubling per attempt up to backoff_max */
#define RETRY_JITTER_PCT 20

/* A message that failed for now and waits in our pending list for its next attempt. */
struct retry {
    char id[STREAM_ID_MAX];
    long long due_ms;
    long long attempt;          /* the attempt that failed */
};

struct child {
    const struct conf *conf;
    const struct pool_conf *pool;
    struct sb_slot *slot;
    struct stream st;
    const struct handler_ops *ops;
    struct handler *h;
    struct idlist acks;             /* done, to be acknowledged with the next request */
    struct retry *retries;          /* unordered; a scan finds what is due */
    size_t nretries, retries_cap;
    bool pending_phase;             /* still reading our own pending entries (ID 0 and on) */
    char from[STREAM_ID_MAX];
    bool reading;                   /* a read request is on the wire */
    long reconnect_ms;
    long long next_connect_ms;
    long long last_error_log_ms;
    enum stream_error last_error;
    unsigned error_repeats;
};

static volatile sig_atomic_t stopping;

static void on_stop(int sig)
{
    (void)sig;
    stopping = 1;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGTTIN, &sa, NULL);
    sigaction(SIGTTOU, &sa, NULL);
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

static void schedule_retry(struct child *c, const char *id, const struct outcome *o)
{
    long long attempt = o->attempt > 0 ? o->attempt : 1;
    long delay = backoff_ms(BACKOFF_EXPONENTIAL, RETRY_BASE_MS, c->pool->backoff_max_ms,
                            RETRY_JITTER_PCT, attempt, (double)rand() / ((double)RAND_MAX + 1));
    if (o->retry_after_ms >= 0)
        delay = o->retry_after_ms < c->pool->backoff_max_ms ? o->retry_after_ms : c->pool->backoff_max_ms;
    if (c->nretries == c->retries_cap) {
        c->retries_cap = c->retries_cap ? c->retries_cap * 2 : 64;
        c->retries = xrealloc(c->retries, c->retries_cap * sizeof *c->retries);
    }
    struct retry *r = &c->retries[c->nretries++];
    snprintf(r->id, sizeof r->id, "%s", id);
    r->due_ms = now_ms() + delay;
    r->attempt = attempt;
    sb_add(c->slot, SB_RETRIED, 1);
    log_debug("message %s failed (attempt %lld): retry in %ld ms: %s", id, attempt, delay,
              o->error ? o->error : "?");
}

/* Milliseconds until the first retry is due, or -1 when none waits. */
static long retry_timeout_ms(const struct child *c, long long now)
{
    long best = -1;
    for (size_t i = 0; i < c->nretries; i++) {
        long t = c->retries[i].due_ms <= now ? 0 : (long)(c->retries[i].due_ms - now);
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}

void child_done(struct child *c, const char *id, const struct outcome *o)
{
    if (o->seconds >= 0)
        sb_observe(c->slot, SB_DUR_FIRST, o->seconds);
    switch (o->disp) {
    case DISP_ACK:
        idlist_add(&c->acks, id);
        return;
    case DISP_RETRY:
        /* It stays in our pending list (never acked before it succeeded) and is taken again
         * with XCLAIM when its delay is over. */
        sb_add(c->slot, SB_FAILED, 1);
        schedule_retry(c, id, o);
        return;
    case DISP_DEAD:
        /* Left pending too until a dead-letter stream exists: counted and logged, not lost. */
        sb_add(c->slot, SB_FAILED, 1);
        if (o->reason && strcmp(o->reason, "bad_message") == 0)
            sb_add(c->slot, SB_BAD_MESSAGE, 1);
        log_warnx("message %s failed for good (%s): %s", id, o->reason ? o->reason : "?",
                  o->error ? o->error : "");
        return;
    }
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
    if (c->error_repeats)
        log_warnx("redis: %s (and %u more times)", c->st.errstr, c->error_repeats);
    else
        log_warnx("redis: %s", c->st.errstr);
    c->last_error = c->st.err;
    c->last_error_log_ms = now;
    c->error_repeats = 0;
}

/* Decide what a failed Redis call means. Returns -1 when the child must exit. */
static int on_redis_error(struct child *c)
{
    sb_add(c->slot, SB_REDIS_ERRORS, 1);
    log_redis_error(c);
    switch (c->st.err) {
    case SERR_AUTH:
        log_errorx("redis refused our credentials: exiting, the config cannot work");
        return -1;
    case SERR_NOGROUP:
        /* The stream or group is gone (deleted, or Redis came back from an old snapshot):
         * re-create it from the start of the stream; duplicates are better than loss. */
        log_warnx("group %s of stream %s is missing: re-creating it from the start", c->pool->group,
                  c->pool->stream);
        if (stream_connected(&c->st) && stream_create_group(&c->st) == 0)
            return 0;
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
 * flight may have delivered entries we never saw. The retries we had scheduled are in that
 * list too, so they are forgotten here rather than claimed twice. */
static void start_pending_phase(struct child *c)
{
    c->nretries = 0;
    c->pending_phase = true;
    snprintf(c->from, sizeof c->from, "0");
}

static void submit_all(struct child *c);

/* A batch arrived: pass each message to the handler. */
static void handle_batch(struct child *c)
{
    struct stream *st = &c->st;
    if (st->acked)
        sb_add(c->slot, SB_ACKED, st->acked);
    for (size_t i = 0; i < st->nvanished; i++) {
        log_warnx("pending entry %s has no data any more (deleted or trimmed): acknowledging it",
                  st->vanished_ids[i]);
        idlist_add(&c->acks, st->vanished_ids[i]);
        sb_add(c->slot, SB_VANISHED, 1);
    }
    if (c->pending_phase) {
        if (st->n == 0 && st->nvanished == 0) {
            c->pending_phase = false;
            snprintf(c->from, sizeof c->from, ">");
        } else {
            snprintf(c->from, sizeof c->from, "%s", st->last_id);
            long long *counts = xcalloc(st->n, sizeof *counts);
            if (stream_delivery_counts(st, st->msgs, st->n, counts) == 0)
                for (size_t i = 0; i < st->n; i++)
                    st->msgs[i].attempt = counts[i] > 0 ? counts[i] : 1;
            free(counts);
        }
    }
    submit_all(c);
}

/* Hand every message of the batch in c->st to the handler, then free the batch. */
static void submit_all(struct child *c)
{
    struct stream *st = &c->st;
    for (size_t i = 0; i < st->n; i++) {
        sb_add(c->slot, SB_READ, 1);
        double t0 = now_s();
        c->ops->submit(c->h, &st->msgs[i]);
        if (inflight(c) == 0 && c->ops->fds == NULL)
            sb_observe(c->slot, SB_DUR_FIRST, now_s() - t0);
    }
    stream_batch_release(st);
    atomic_store_explicit(&c->slot->inflight, inflight(c), memory_order_relaxed);
}

/* Take the retries that are due (as many as there is room for) and hand them over again. */
static void claim_due_retries(struct child *c, long long now)
{
    unsigned busy = inflight(c);
    unsigned cap = c->pool->handler == HANDLER_HTTP ? (unsigned)c->pool->inflight : (unsigned)c->pool->batch;
    if (stopping || c->nretries == 0 || !accepting(c) || busy >= cap)
        return;
    struct idlist due = { 0 };
    long long attempts[CONF_INFLIGHT_MAX];
    for (size_t i = 0; i < c->nretries && busy + due.n < cap && due.n < CONF_INFLIGHT_MAX;) {
        if (c->retries[i].due_ms > now) {
            i++;
            continue;
        }
        attempts[due.n] = c->retries[i].attempt;
        idlist_add(&due, c->retries[i].id);
        c->retries[i] = c->retries[--c->nretries];
    }
    if (due.n == 0)
        return;
    if (stream_claim(&c->st, &due) == -1) {
        idlist_release(&due);
        on_redis_error(c);
        return;
    }
    /* XCLAIM counted a delivery: this is the next attempt. Entries are in the order asked. */
    struct stream *st = &c->st;
    for (size_t i = 0, j = 0; i < st->n; i++) {
        while (j < due.n && strcmp(due.id[j], st->msgs[i].id.p) != 0)
            j++;
        st->msgs[i].attempt = j < due.n ? attempts[j] + 1 : 2;
    }
    if (st->n < due.n)
        log_warnx("%zu messages waiting for a retry were deleted from the stream meanwhile",
                  due.n - st->n);
    idlist_release(&due);
    submit_all(c);
}

/* Send the next request if there is room for more work. */
static void maybe_request(struct child *c)
{
    unsigned busy = inflight(c);
    unsigned cap = c->pool->handler == HANDLER_HTTP ? (unsigned)c->pool->inflight : (unsigned)c->pool->batch;
    /* Our pending list is only re-read with nothing in flight: what is in flight is in it. */
    if (!stopping && accepting(c) && busy < cap && !(c->pending_phase && busy > 0)) {
        unsigned room = cap - busy;
        int count = room < (unsigned)c->pool->batch ? (int)room : c->pool->batch;
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

_Noreturn void child_main(const struct conf *conf, const struct pool_conf *pool, int index,
                          struct sb_slot *slot, pid_t master)
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

    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char consumer[320];
    snprintf(consumer, sizeof consumer, "%s:%s:%d", host, pool->name, index);
    stream_init(&c.st, &conf->redis, pool, consumer);

    c.h = c.ops->open(&c, pool);
    if (c.h == NULL)
        exit(CHILD_EXIT_CONFIG);
    start_pending_phase(&c);
    log_debug("consumer %s started", consumer);

    struct pollfd pfd[POLL_MAX];
    for (;;) {
        long long now = now_ms();
        atomic_store_explicit(&slot->heartbeat_ms, (uint64_t)now, memory_order_relaxed);

        if (stopping && !c.reading && inflight(&c) == 0 &&
            (c.acks.n == 0 || !stream_connected(&c.st)))
            break;

        if (!stream_connected(&c.st) && now >= c.next_connect_ms) {
            if (stream_connect(&c.st) == -1) {
                if (on_redis_error(&c) == -1)
                    exit(CHILD_EXIT_CONFIG);
            } else {
                if (c.reconnect_ms)
                    log_info("redis: connected again");
                c.reconnect_ms = 0;
                c.last_error = SERR_NONE;
                c.error_repeats = 0;
                /* What an earlier read delivered to us before the connection broke is in our
                 * pending list: read it first, as at start. */
                start_pending_phase(&c);
            }
        }
        if (stream_connected(&c.st) && !c.reading)
            claim_due_retries(&c, now);
        if (stream_connected(&c.st) && !c.reading)
            maybe_request(&c);

        int n = 0;
        long timeout = HEARTBEAT_MS;
        if (c.reading)
            pfd[n++] = (struct pollfd){ .fd = stream_fd(&c.st), .events = POLLIN };
        else if (!stream_connected(&c.st) && c.next_connect_ms - now < timeout)
            timeout = c.next_connect_ms > now ? (long)(c.next_connect_ms - now) : 0;
        long rt = retry_timeout_ms(&c, now);
        if (rt >= 0 && rt < timeout)
            timeout = rt;
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
            if (r == 1) {
                c.reading = false;
                c.reconnect_ms = 0;
                handle_batch(&c);
            } else if (r == -1) {
                c.reading = false;
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
    idlist_release(&c.acks);
    free(c.retries);
    if (c.nretries)
        log_info("%zu messages waiting for a retry stay pending for the next start", c.nretries);
    log_debug("consumer %s drained", consumer);
    exit(0);
}
