/* handler_subprocess.c: one long-lived process per worker, many messages in flight
 * (handler = subprocess).
 *
 * The worker writes each message as one JSON line on the process's stdin:
 *   {"id":"<entry id>","stream":"...","attempt":N,"fields":{...}}
 * (a value that is not valid UTF-8 as {"$base64":"..."}), and reads answers, one JSON line
 * each, from its stdout in any order:
 *   {"id":"...","result":"ack"|"retry"|"dead","reason":"...","error":"...","retry_after":S}
 * Up to `inflight` messages are out at once (the worker's capacity). Nothing blocks: lines
 * wait in a buffer until stdin takes them (POLLOUT), stdout and stderr are read as they come.
 *
 * The process is not trusted to keep the protocol. An answer with an unknown id, one that is
 * not JSON of that shape, a line over LINE_MAX bytes, or a stdin it closed is a protocol
 * error: logged, the process stopped (SIGTERM to its process group, SIGKILL KILL_GRACE_MS
 * later) and started again, its messages retried. A process that exits is started again with
 * a doubling delay (RESTART_MIN_MS .. RESTART_MAX_MS, back to the minimum once one answers),
 * its messages retried: one that exits at once cannot spin the worker. A message unanswered
 * after `timeout` is retried (a late answer for it is ignored); a process that answers
 * nothing for `timeout` while it holds messages is restarted. Its stderr goes to the log,
 * line by line (the worker's log lines carry pool and slot), at most STDERR_LINES_PER_S.
 *
 * Memory: the process's resident memory counts with the worker's towards memory_limit (the
 * worker then finishes and is replaced, as when it grows itself), and in the pool's
 * resident memory on /metrics (the slot's handler_rss_bytes). Draining (SIGTERM to the
 * worker) closes the process's stdin once every line went: it answers what it holds, and the
 * worker waits for that as for any message in flight (drain_timeout). */
#include "child/handler.h"
#include "child/msgjson.h"
#include "child/proc.h"
#include "child/worker.h"           /* child_stopping, the memory exit, the status page's error */
#include "common/json.h"
#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define LINE_MAX_BYTES (1024 * 1024) /* the longest answer line */
#define STDERR_LINE_MAX 4096        /* a longer stderr line is logged cut */
#define STDERR_LINES_PER_S 100      /* stderr lines logged a second, at most */
#define KILL_GRACE_MS 2000          /* from SIGTERM to SIGKILL */
#define RESTART_MIN_MS 100
#define RESTART_MAX_MS 10000
#define MEMORY_CHECK_MS 1000

enum state { DOWN, RUNNING, STOPPING };

/* A message sent to the process. An entry expects an answer for its ticket, and one for
 * each time it was retried after its timeout (late): a late answer is no unknown id. The
 * answers to one id cannot be told apart, so the first to come is taken for the ticket. */
struct sent {
    char id[64];
    struct ticket *ticket;          /* NULL: only late answers are expected */
    unsigned late;
    long long sent_ms;
};

struct handler {
    struct child *child;
    const struct pool_conf *pool;
    enum state state;
    struct proc p;
    long long started_ms;
    long long term_ms;              /* STOPPING: when SIGTERM went */
    bool killed;
    long long restart_ms;           /* DOWN: when to start again */
    long restart_delay_ms;
    bool answered;                  /* this process answered at least once */
    bool stdin_closed;              /* draining: no more lines */
    long long last_answer_ms;       /* or when it last went from no message to some */

    struct buf wbuf;                /* lines not yet taken by stdin */
    size_t woff;
    struct buf rbuf, ebuf;          /* stdout and stderr up to their next newline */
    bool ebuf_cut;                  /* the stderr line in ebuf was too long: rest dropped */
    long long err_window_ms;        /* stderr lines logged since then, and not logged */
    unsigned err_lines, err_dropped;

    struct sent *sent;
    size_t nsent, cap;
    unsigned held;                  /* entries of sent with a ticket */
    long long next_memory_ms;
    int pfd_in, pfd_out, pfd_err, pfd_pid; /* where fds() put them this turn; -1: not */
    char error[512];
};

/* ---- the messages out ---------------------------------------------------------------- */

static struct sent *find(struct handler *h, const char *id, size_t len)
{
    for (size_t i = 0; i < h->nsent; i++)
        if (strlen(h->sent[i].id) == len && memcmp(h->sent[i].id, id, len) == 0)
            return &h->sent[i];
    return NULL;
}

static void forget(struct handler *h, struct sent *s)
{
    if (s->ticket)
        h->held--;
    *s = h->sent[--h->nsent];
}

/* Report s's ticket; the entry stays while late answers are still expected. */
static void done(struct handler *h, struct sent *s, enum disposition d, const char *reason,
                 const char *error, long retry_after_ms)
{
    struct ticket *t = s->ticket;
    double seconds = (double)(child_now_ms() - s->sent_ms) / 1000.0;
    s->ticket = NULL;
    h->held--;
    if (s->late == 0)
        forget(h, s);
    struct outcome o = { .disp = d, .reason = reason, .retry_after_ms = retry_after_ms,
                         .error = error, .seconds = seconds };
    ticket_done(t, &o);
}

/* Every message the process holds goes back for a retry (it stopped, or broke the protocol). */
static void retry_all(struct handler *h, const char *why)
{
    while (h->nsent) {
        struct sent *s = &h->sent[h->nsent - 1];
        s->late = 0;                /* a new process answers nothing of the old one's */
        if (s->ticket)
            done(h, s, DISP_RETRY, NULL, why, -1);
        else
            forget(h, s);
    }
}

/* ---- the process ----------------------------------------------------------------------- */

static void start(struct handler *h)
{
    char slot[32];
    snprintf(slot, sizeof slot, "STREAMFLEET_SLOT=%d", h->child->index);
    struct buf pool = BUF_INIT, stream = BUF_INIT;
    buf_printf(&pool, "STREAMFLEET_POOL=%s", h->pool->name);
    buf_printf(&stream, "STREAMFLEET_STREAM=%s", h->pool->stream);
    char *extra[] = { pool.p, stream.p, slot };
    char **envp = proc_env(h->pool, extra, 3);
    int r = proc_spawn(&h->p, h->pool->argv, envp, true, h->error, sizeof h->error);
    proc_env_free(envp);
    buf_release(&pool);
    buf_release(&stream);
    buf_reset(&h->wbuf);
    buf_reset(&h->rbuf);
    buf_reset(&h->ebuf);
    h->woff = 0;
    h->ebuf_cut = false;
    h->answered = false;
    h->killed = false;
    long long now = child_now_ms();
    if (r == -1) {
        log_warnx("cannot start the handler process: %s; again in %ld ms", h->error, h->restart_delay_ms);
        child_publish_error(h->child, "cannot start the handler process: %s", h->error);
        h->state = DOWN;
        h->restart_ms = now + h->restart_delay_ms;
        h->restart_delay_ms = h->restart_delay_ms * 2 > RESTART_MAX_MS ? RESTART_MAX_MS : h->restart_delay_ms * 2;
        return;
    }
    h->state = RUNNING;
    h->started_ms = now;
    h->last_answer_ms = now;
    log_debug("handler process %d started", (int)h->p.pid);
}

/* Stop the process because of what it did (why: for the log and the retries). */
static void stop(struct handler *h, const char *why)
{
    if (h->state != RUNNING)
        return;
    log_warnx("handler process %d: %s: restarting it, %u messages retried", (int)h->p.pid, why, h->held);
    child_publish_error(h->child, "handler process: %s", why);
    retry_all(h, why);
    h->state = STOPPING;
    h->term_ms = child_now_ms();
    proc_kill(&h->p, SIGTERM);
    proc_close_fd(&h->p.in);
    proc_close_fd(&h->p.out);       /* nothing it says now counts; its stderr still goes to the log */
}

/* Log the stderr line in ebuf: at most STDERR_LINES_PER_S a second, so that a process
 * printing in a loop cannot fill the disk; the others are counted and the count logged. */
static void flush_stderr(struct handler *h)
{
    long long now = child_now_ms();
    if (now - h->err_window_ms >= 1000) {
        if (h->err_dropped)
            log_warnx("handler stderr: %u more lines not logged", h->err_dropped);
        h->err_window_ms = now;
        h->err_lines = h->err_dropped = 0;
    }
    if (h->ebuf.len && h->err_lines++ < STDERR_LINES_PER_S)
        log_warnx("handler stderr: %.*s%s", (int)h->ebuf.len, h->ebuf.p, h->ebuf_cut ? "..." : "");
    else if (h->ebuf.len)
        h->err_dropped++;
    buf_reset(&h->ebuf);
    h->ebuf_cut = false;
}

/* The process has exited (reaped): retry what it held, start again later. */
static void exited(struct handler *h, int status)
{
    char how[64];
    proc_status_text(status, how, sizeof how);
    flush_stderr(h);
    snprintf(h->error, sizeof h->error, "handler process exited (%s)", how);
    if (h->state == RUNNING) {
        log_warnx("handler process %d: %s, %u messages retried", (int)h->p.pid, h->error, h->held);
        child_publish_error(h->child, "%s", h->error);
    }
    retry_all(h, h->error);
    /* What it started (a grandchild holding our pipes) goes with it. */
    proc_kill(&h->p, SIGKILL);
    proc_close(&h->p);
    h->p.pid = 0;
    h->state = DOWN;
    atomic_store_explicit(&h->child->slot->handler_rss_bytes, 0, memory_order_relaxed);
    h->next_memory_ms = 0;
    if (h->answered)
        h->restart_delay_ms = RESTART_MIN_MS;
    h->restart_ms = child_now_ms() + h->restart_delay_ms;
    if (!child_stopping)
        log_info("handler process starts again in %ld ms", h->restart_delay_ms);
    h->restart_delay_ms = h->restart_delay_ms * 2 > RESTART_MAX_MS ? RESTART_MAX_MS : h->restart_delay_ms * 2;
}

/* ---- the protocol ---------------------------------------------------------------------- */

static void sub_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    struct outcome o = { .disp = DISP_RETRY, .retry_after_ms = -1, .seconds = -1,
                         .error = "handler process not running" };
    if (h->state != RUNNING || h->stdin_closed) {
        /* accepting() said no: only a read already on the wire brings these. Not the
         * message's fault: the attempt does not count. */
        long long left = h->restart_ms - child_now_ms();
        o.outage = true;
        o.retry_after_ms = h->state == DOWN && left > RESTART_MIN_MS ? (long)left : RESTART_MIN_MS;
        ticket_done(t, &o);
        return;
    }
    if (m->id.len >= sizeof h->sent[0].id) {
        o.disp = DISP_DEAD;
        o.reason = "bad_message";
        o.error = "entry id too long";
        ticket_done(t, &o);
        return;
    }
    struct sent *old = find(h, m->id.p, m->id.len);
    if (old && old->ticket) {
        /* The worker never gives one entry twice at once; should it, keep the first. */
        o.error = "already in flight";
        ticket_done(t, &o);
        return;
    }
    struct sent *s = old;           /* a message retried after its timeout: late answers too */
    if (s == NULL) {
        if (h->nsent == h->cap) {
            h->cap = h->cap ? 2 * h->cap : 16;
            h->sent = xrealloc(h->sent, h->cap * sizeof *h->sent);
        }
        s = &h->sent[h->nsent++];
        snprintf(s->id, sizeof s->id, "%.*s", (int)m->id.len, m->id.p);
        s->late = 0;
    }
    s->ticket = t;
    s->sent_ms = child_now_ms();
    if (h->held++ == 0)
        h->last_answer_ms = s->sent_ms;  /* silence is counted from here */

    struct buf *b = &h->wbuf;
    buf_adds(b, "{\"id\":\"");
    buf_add_json_str(b, m->id.p, m->id.len);
    buf_adds(b, "\",\"stream\":\"");
    buf_add_json_str(b, m->stream, strlen(m->stream));
    buf_printf(b, "\",\"attempt\":%lld,\"fields\":", m->attempt);
    msgjson_fields(b, m, true);
    buf_adds(b, "}\n");
    /* No write here: the lines of a whole batch go in one write(2) from sub_run(), which the
     * worker's loop calls right after the batch was handed out (and sub_fds() asks for
     * POLLOUT while lines wait, so lines given at another time go at the next turn). A write
     * per message cost a system call per message and woke the handler process per line. */
}

/* A reason is a label (dead letters, metrics): lowercase word characters, bounded. */
static const char *clean_reason(const char *r, char *out, size_t len)
{
    size_t n = 0;
    for (; r && r[n] && n + 1 < len; n++) {
        char c = r[n];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return "rejected";
        out[n] = c;
    }
    if (n == 0 || (r && r[n]))
        return "rejected";
    out[n] = '\0';
    return out;
}

/* One answer line. Returns 0, or -1 on a protocol error (why in h->error). */
static int answer(struct handler *h, const char *line, size_t len)
{
    char err[160];
    struct json *doc = json_parse(line, len, err, sizeof err);
    if (doc == NULL) {
        snprintf(h->error, sizeof h->error, "answer is not JSON (%s): %.60s", err, line);
        return -1;
    }
    int rc = -1;
    const char *id = json_str(doc, "id"), *result = json_str(doc, "result");
    const char *reason = json_str(doc, "reason"), *error = json_str(doc, "error");
    double ra = -1;
    if (id == NULL || result == NULL) {
        snprintf(h->error, sizeof h->error, "answer without \"id\" and \"result\" strings: %.60s", line);
        goto out;
    }
    struct sent *s = find(h, id, strlen(id));
    if (s == NULL) {
        snprintf(h->error, sizeof h->error, "answer for an unknown id '%.64s'", id);
        goto out;
    }
    enum disposition d;
    if (strcmp(result, "ack") == 0) {
        d = DISP_ACK;
    } else if (strcmp(result, "retry") == 0) {
        d = DISP_RETRY;
    } else if (strcmp(result, "dead") == 0) {
        d = DISP_DEAD;
    } else {
        snprintf(h->error, sizeof h->error, "answer for %s with result '%.20s' (not ack, retry or dead)",
                 s->id, result);
        goto out;
    }
    if (json_num(doc, "retry_after", &ra) && (ra < 0 || ra > 365.0 * 86400)) {
        snprintf(h->error, sizeof h->error, "answer for %s with retry_after %g (seconds, 0 or more)", s->id, ra);
        goto out;
    }
    h->answered = true;
    h->last_answer_ms = child_now_ms();
    rc = 0;
    if (s->ticket == NULL) {
        log_debug("late answer for %s (retried after its timeout): ignored", s->id);
        if (--s->late == 0)
            forget(h, s);
        goto out;
    }
    char rbuf[33], ebuf[300];
    const char *why = NULL;
    if (error) {
        snprintf(ebuf, sizeof ebuf, "%s", error);
        for (char *c = ebuf; *c; c++)
            if ((unsigned char)*c < 0x20)
                *c = ' ';
        why = ebuf;
    }
    if (d != DISP_ACK)
        log_info("message %s: %s%s%s%s%s%s", s->id, result, reason ? " (" : "", reason ? reason : "",
                 reason ? ")" : "", why ? ": " : "", why ? why : "");
    done(h, s, d, d == DISP_DEAD ? clean_reason(reason, rbuf, sizeof rbuf) : NULL, why,
         d == DISP_RETRY && ra >= 0 ? (long)(ra * 1000) : -1);
out:
    json_free(doc);
    return rc;
}

/* Take every whole line of stdout; a line growing past LINE_MAX_BYTES is a protocol error. */
static int read_answers(struct handler *h)
{
    size_t dropped = 0;
    int r = proc_read(h->p.out, &h->rbuf, LINE_MAX_BYTES + 1, false, &dropped);
    size_t start = 0;
    while (start < h->rbuf.len) {
        char *nl = memchr(h->rbuf.p + start, '\n', h->rbuf.len - start);
        if (nl == NULL)
            break;
        size_t len = (size_t)(nl - (h->rbuf.p + start));
        if (len > LINE_MAX_BYTES) {
            snprintf(h->error, sizeof h->error, "an answer line longer than %d bytes", LINE_MAX_BYTES);
            return -1;
        }
        if (len > 0 && !(len == 1 && h->rbuf.p[start] == '\r') && answer(h, h->rbuf.p + start, len) == -1)
            return -1;
        start += len + 1;
        if (h->state != RUNNING)
            return 0;
    }
    if (start) {
        memmove(h->rbuf.p, h->rbuf.p + start, h->rbuf.len - start);
        h->rbuf.len -= start;
    }
    if (h->rbuf.len > LINE_MAX_BYTES || dropped) {
        snprintf(h->error, sizeof h->error, "an answer line longer than %d bytes", LINE_MAX_BYTES);
        return -1;
    }
    if (r == 0)
        proc_close_fd(&h->p.out);   /* it closed stdout: its exit (or silence) will tell */
    return 0;
}

static void read_stderr(struct handler *h)
{
    char chunk[8192];
    for (;;) {
        ssize_t n = read(h->p.err, chunk, sizeof chunk);
        if (n == -1 && errno == EINTR)
            continue;
        if (n == 0 || (n == -1 && errno != EAGAIN)) {
            proc_close_fd(&h->p.err);
            return;
        }
        if (n == -1)
            return;
        for (ssize_t i = 0; i < n; i++) {
            char c = chunk[i];
            if (c == '\n') {
                flush_stderr(h);
                continue;
            }
            if (h->ebuf.len >= STDERR_LINE_MAX) {
                h->ebuf_cut = true;
                continue;
            }
            buf_addc(&h->ebuf, (unsigned char)c < 0x20 && c != '\t' ? '?' : c);
        }
    }
}

/* Give stdin what it takes now; the rest waits for POLLOUT. */
static void write_lines(struct handler *h)
{
    while (h->p.in >= 0 && h->woff < h->wbuf.len) {
        ssize_t w = write(h->p.in, h->wbuf.p + h->woff, h->wbuf.len - h->woff);
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1 && errno == EAGAIN)
            return;
        if (w == -1) {
            stop(h, "it closed its stdin");
            return;
        }
        h->woff += (size_t)w;
    }
    buf_reset(&h->wbuf);
    h->woff = 0;
}

/* Publish the process's resident memory (the master adds it to the worker's, for /metrics),
 * and enforce memory_limit on the two together: every second with a limit, else every 5 s. */
static void check_memory(struct handler *h, long long now)
{
    if (h->state != RUNNING || now < h->next_memory_ms)
        return;
    h->next_memory_ms = now + (h->pool->memory_limit ? MEMORY_CHECK_MS : 5 * MEMORY_CHECK_MS);
    long long its = proc_rss(h->p.pid);
    atomic_store_explicit(&h->child->slot->handler_rss_bytes, (uint64_t)its, memory_order_relaxed);
    if (!h->pool->memory_limit || child_stopping)
        return;
    long long mine = proc_rss(0);
    if (mine + its > h->pool->memory_limit) {
        log_warnx("resident memory %lld KiB (worker %lld + handler process %lld) exceeds memory_limit "
                  "%lld KiB: finishing, to be replaced", (mine + its) / 1024, mine / 1024, its / 1024,
                  h->pool->memory_limit / 1024);
        h->child->exit_code = CHILD_EXIT_MEMORY;
        child_stopping = 1;
    }
}

/* ---- the handler interface ------------------------------------------------------------- */

static long long next_deadline(const struct handler *h)
{
    long long d = -1;
#define SOONER(t) do { long long t_ = (t); if (d < 0 || t_ < d) d = t_; } while (0)
    if (h->state == DOWN && !child_stopping)
        SOONER(h->restart_ms);
    if (h->state == STOPPING && !h->killed)
        SOONER(h->term_ms + KILL_GRACE_MS);
    if (h->state == RUNNING && h->held) {
        SOONER(h->last_answer_ms + h->pool->timeout_ms);
        for (size_t i = 0; i < h->nsent; i++)
            if (h->sent[i].ticket)
                SOONER(h->sent[i].sent_ms + h->pool->timeout_ms);
    }
    if (h->state == RUNNING && h->pool->memory_limit)
        SOONER(h->next_memory_ms);
#undef SOONER
    return d;
}

static int sub_fds(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms)
{
    int n = 0;
    h->pfd_in = h->pfd_out = h->pfd_err = h->pfd_pid = -1;
    /* Draining: once every line went, stdin closes and the process answers what it holds. */
    if (child_stopping && h->state == RUNNING && !h->stdin_closed && h->woff >= h->wbuf.len) {
        h->stdin_closed = true;
        proc_close_fd(&h->p.in);
    }
    if (h->state != DOWN && max >= 4) {
        /* stdin is watched even with nothing to write: POLLERR says the process closed its
         * end, which would otherwise show only at the next write, or after timeout. */
        if (h->p.in >= 0) {
            h->pfd_in = n;
            pfd[n++] = (struct pollfd){ .fd = h->p.in, .events = h->woff < h->wbuf.len ? POLLOUT : 0 };
        }
        if (h->p.out >= 0) {
            h->pfd_out = n;
            pfd[n++] = (struct pollfd){ .fd = h->p.out, .events = POLLIN };
        }
        if (h->p.err >= 0) {
            h->pfd_err = n;
            pfd[n++] = (struct pollfd){ .fd = h->p.err, .events = POLLIN };
        }
        if (h->p.pidfd >= 0) {
            h->pfd_pid = n;
            pfd[n++] = (struct pollfd){ .fd = h->p.pidfd, .events = POLLIN };
        }
    }
    long long d = next_deadline(h);
    if (d >= 0) {
        long long left = d - child_now_ms();
        if (left < 0)
            left = 0;
        if (*timeout_ms < 0 || left < *timeout_ms)
            *timeout_ms = (long)left;
    }
    return n;
}

static bool ready(const struct pollfd *pfd, int n, int at)
{
    return at >= 0 && at < n && pfd[at].revents;
}

static void sub_run(struct handler *h, const struct pollfd *pfd, int n)
{
    long long now = child_now_ms();
    /* Its stdin closed while it lives on (an exit is the pidfd's to tell, with its status). */
    if (h->state == RUNNING && h->pfd_in >= 0 && h->pfd_in < n && (pfd[h->pfd_in].revents & (POLLERR | POLLHUP)) &&
        !ready(pfd, n, h->pfd_pid))
        stop(h, "it closed its stdin");
    if (h->state == RUNNING && h->woff < h->wbuf.len)
        write_lines(h);
    if (h->state != DOWN && h->p.out >= 0 && (ready(pfd, n, h->pfd_out) || h->pfd_out < 0) &&
        read_answers(h) == -1)
        stop(h, h->error);
    if (h->state != DOWN && h->p.err >= 0 && (ready(pfd, n, h->pfd_err) || h->pfd_err < 0))
        read_stderr(h);
    if (h->state != DOWN && h->p.pidfd >= 0) {
        int status;
        if ((ready(pfd, n, h->pfd_pid) || h->pfd_pid < 0) && proc_reap(&h->p, &status) == 1) {
            /* What it wrote before it went is still ours to read. */
            if (h->state == RUNNING && h->p.out >= 0 && read_answers(h) == -1)
                log_warnx("handler process %d: %s", (int)h->p.pid, h->error);
            if (h->p.err >= 0)
                read_stderr(h);
            exited(h, status);
        }
    }
    if (h->state == RUNNING && h->held) {
        if (now - h->last_answer_ms >= h->pool->timeout_ms) {
            snprintf(h->error, sizeof h->error, "no answer for %ld ms with %u messages out",
                     h->pool->timeout_ms, h->held);
            stop(h, h->error);
        } else {
            for (size_t i = 0; i < h->nsent; i++) {
                struct sent *s = &h->sent[i];
                if (s->ticket && now - s->sent_ms >= h->pool->timeout_ms) {
                    log_warnx("message %s: no answer within %ld ms: retried", s->id, h->pool->timeout_ms);
                    struct ticket *t = s->ticket;
                    s->ticket = NULL;       /* kept: a late answer is no protocol error */
                    s->late++;
                    h->held--;
                    struct outcome o = { .disp = DISP_RETRY, .retry_after_ms = -1, .error = "timeout",
                                         .seconds = (double)(now - s->sent_ms) / 1000.0 };
                    ticket_done(t, &o);
                }
            }
            /* Expired ones are kept no longer than there are messages in flight. */
            size_t expired = h->nsent - h->held;
            for (size_t i = 0; expired > (size_t)h->pool->inflight && i < h->nsent;) {
                if (h->sent[i].ticket == NULL) {
                    forget(h, &h->sent[i]);
                    expired--;
                } else {
                    i++;
                }
            }
        }
    }
    if (h->state == STOPPING && !h->killed && now >= h->term_ms + KILL_GRACE_MS) {
        h->killed = true;
        proc_kill(&h->p, SIGKILL);
    }
    if (h->state == DOWN && !child_stopping && now >= h->restart_ms)
        start(h);
    check_memory(h, now);
}

static unsigned sub_inflight(struct handler *h)
{
    return h->held;
}

static bool sub_accepting(struct handler *h)
{
    return h->state == RUNNING && !h->stdin_closed;
}

/* The worker exits: close stdin, give the process a moment to go on its own, then stop it. */
static void sub_close(struct handler *h)
{
    if (h->state != DOWN) {
        proc_close_fd(&h->p.in);
        proc_close_fd(&h->p.out);
        proc_close_fd(&h->p.err);
        for (int i = 0; i < 3 * KILL_GRACE_MS / 100; i++) {
            int status;
            if (proc_reap(&h->p, &status) == 1)
                break;
            if (i == KILL_GRACE_MS / 100)
                proc_kill(&h->p, SIGTERM);
            if (i == 2 * KILL_GRACE_MS / 100)
                proc_kill(&h->p, SIGKILL);
            struct pollfd pf = { .fd = h->p.pidfd, .events = POLLIN };
            poll(&pf, h->p.pidfd >= 0 ? 1 : 0, 100);
        }
        proc_close(&h->p);
    }
    buf_release(&h->wbuf);
    buf_release(&h->rbuf);
    buf_release(&h->ebuf);
    free(h->sent);
    free(h);
}

static struct handler *sub_open(struct child *c, const struct pool_conf *p)
{
    struct handler *h = xcalloc(1, sizeof *h);
    h->child = c;
    h->pool = p;
    h->p = (struct proc){ .pid = 0, .pidfd = -1, .in = -1, .out = -1, .err = -1 };
    h->restart_delay_ms = RESTART_MIN_MS;
    start(h);
    return h;
}

const struct handler_ops handler_subprocess_ops = {
    .name = "subprocess",
    .open = sub_open,
    .submit = sub_submit,
    .fds = sub_fds,
    .run = sub_run,
    .inflight = sub_inflight,
    .accepting = sub_accepting,
    .close = sub_close,
};
