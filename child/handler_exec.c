/* handler_exec.c: one process per message (handler = exec).
 *
 * submit() starts the pool's command with the message on its stdin (a JSON object, or the
 * raw body_field with stdin = body) and its identity in the environment; the process's exit
 * decides the outcome: 0 ack; 65 (EX_DATAERR) dead-letter, reason exec_rejected; anything
 * else (75, EX_TEMPFAIL, another code, a signal) retry. Up to `inflight` run at once (the
 * worker's capacity). Nothing blocks: the pipes are non-blocking and polled with the
 * process's pidfd through fds() and run(); stdin is written as the pipe takes it.
 *
 * A process still running after `timeout` gets SIGTERM, and SIGKILL KILL_GRACE_MS later (to
 * its process group: what it started too); its message is retried with the error "timeout".
 * stdout and stderr are kept up to OUTPUT_CAP bytes each (the rest is read and dropped, so a
 * chatty process never stalls on a full pipe: stdout's first bytes, stderr's last, where its
 * last words are); the last non-empty line of stderr is the error text of a retry or dead
 * letter, and is logged. A program that cannot be executed (found missing after the config
 * was checked, or a shell's 126 and 127) is dead-lettered with reason exec_failed: every
 * attempt would fail alike. */
#include "child/handler.h"
#include "child/msgjson.h"
#include "child/proc.h"
#include "common/clock.h"
#include "common/log.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OUTPUT_CAP (64 * 1024)      /* bytes of stdout and of stderr kept per process */
#define KILL_GRACE_MS 2000          /* from SIGTERM to SIGKILL */
#define EXIT_REJECTED 65            /* EX_DATAERR: the message is bad, never retry */
#define NFDS_MAX 4                  /* a job's descriptors to poll: stdin, stdout, stderr, pidfd */

/* One message's process. */
struct job {
    struct job *next;
    struct ticket *ticket;
    struct proc p;
    struct buf in;                  /* what its stdin gets */
    size_t in_off;                  /* how much of it went */
    struct buf out, err;            /* what it wrote (capped) */
    size_t out_dropped, err_dropped;
    char id[64];                    /* the entry id, for the log */
    long long started_ms;
    long long term_ms;              /* when SIGTERM went (timeout); 0: not sent */
    bool killed;                    /* SIGKILL went */
    bool exited;
    int status;
    int pfd_at, npfd;               /* where fds() put its descriptors this turn */
};

struct handler {
    struct child *child;
    const struct pool_conf *pool;
    struct job *jobs;               /* running, oldest first */
    struct job **jobs_end;
    unsigned njobs;
    char error[512];
};

static void job_free(struct job *j)
{
    proc_close(&j->p);
    buf_release(&j->in);
    buf_release(&j->out);
    buf_release(&j->err);
    free(j);
}

static void report(struct ticket *t, enum disposition d, const char *reason, const char *error,
                   double seconds)
{
    struct outcome o = { .disp = d, .reason = reason, .retry_after_ms = -1, .error = error,
                         .seconds = seconds };
    ticket_done(t, &o);
}

/* The message's input: the JSON object, or the raw body. Returns 0, or -1 when stdin = body
 * and the message lacks the field (with the reason in h->error). */
static int make_input(struct handler *h, const struct msg *m, struct buf *b)
{
    const struct pool_conf *p = h->pool;
    if (p->stdin_body) {
        const struct str *body = msg_get(m, p->body_field);
        if (body == NULL) {
            snprintf(h->error, sizeof h->error, "the message has no field '%s' (body_field) for stdin",
                     p->body_field);
            return -1;
        }
        buf_add(b, body->p, body->len);
        return 0;
    }
    buf_adds(b, "{\"pool\":\"");
    buf_add_json_str(b, p->name, strlen(p->name));
    buf_adds(b, "\",\"stream\":\"");
    buf_add_json_str(b, m->stream, strlen(m->stream));
    buf_adds(b, "\",\"id\":\"");
    buf_add_json_str(b, m->id.p, m->id.len);
    buf_printf(b, "\",\"attempt\":%lld,\"fields\":", m->attempt);
    msgjson_fields(b, m, true);
    buf_adds(b, "}\n");
    return 0;
}

static void exec_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    const struct pool_conf *p = h->pool;
    struct job *j = xcalloc(1, sizeof *j);
    if (make_input(h, m, &j->in) == -1) {
        job_free(j);
        report(t, DISP_DEAD, "bad_message", h->error, -1);
        return;
    }
    snprintf(j->id, sizeof j->id, "%.*s", (int)m->id.len, m->id.p);

    struct buf e[4] = { BUF_INIT, BUF_INIT, BUF_INIT, BUF_INIT };
    buf_printf(&e[0], "STREAMFLEET_POOL=%s", p->name);
    buf_printf(&e[1], "STREAMFLEET_STREAM=%s", m->stream);
    buf_printf(&e[2], "STREAMFLEET_ID=%s", j->id);
    buf_printf(&e[3], "STREAMFLEET_ATTEMPT=%lld", m->attempt);
    char *extra[4] = { e[0].p, e[1].p, e[2].p, e[3].p };
    char **envp = proc_env(p, extra, 4);
    int r = proc_spawn(&j->p, p->argv, envp, false, h->error, sizeof h->error);
    proc_env_free(envp);
    for (int i = 0; i < 4; i++)
        buf_release(&e[i]);
    if (r == -1 && j->p.exec_errno) {
        snprintf(h->error, sizeof h->error, "cannot execute %s: %s", p->argv[0], strerror(j->p.exec_errno));
        log_warnx("message %s: %s: dead-lettered (exec_failed)", j->id, h->error);
        job_free(j);
        report(t, DISP_DEAD, "exec_failed", h->error, -1);
        return;
    }
    if (r == -1) {
        /* Out of processes or descriptors: the system's trouble, not the message's. */
        log_warnx("message %s: cannot start the command: %s", j->id, h->error);
        job_free(j);
        report(t, DISP_RETRY, NULL, h->error, -1);
        return;
    }
    j->ticket = t;
    j->started_ms = clock_mono_ms();
    *h->jobs_end = j;
    h->jobs_end = &j->next;
    h->njobs++;
}

/* Feed stdin what it takes now; close it when all went or the process stopped reading. */
static void feed(struct job *j)
{
    while (j->p.in >= 0 && j->in_off < j->in.len) {
        ssize_t w = write(j->p.in, j->in.p + j->in_off, j->in.len - j->in_off);
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1 && errno == EAGAIN)
            return;
        if (w == -1) {
            proc_close_fd(&j->p.in);    /* EPIPE: it did not want (all of) it; its exit decides */
            return;
        }
        j->in_off += (size_t)w;
    }
    proc_close_fd(&j->p.in);
}

/* stdout keeps its first OUTPUT_CAP bytes, stderr its last (where the error line is). */
static void drain(int *fd, struct buf *b, bool tail, size_t *dropped)
{
    if (*fd >= 0 && proc_read(*fd, b, OUTPUT_CAP, tail, dropped) != 1)
        proc_close_fd(fd);
}

/* The process has exited: report its message's outcome. */
static void finish(struct handler *h, struct job *j, long long now)
{
    const struct pool_conf *p = h->pool;
    /* What it wrote before exiting is in the pipes; a grandchild that holds them could keep
     * them open for ever, so take what is there and close them. */
    drain(&j->p.out, &j->out, false, &j->out_dropped);
    drain(&j->p.err, &j->err, true, &j->err_dropped);
    proc_close(&j->p);
    double seconds = (double)(now - j->started_ms) / 1000.0;
    char line[300], how[64];
    const char *last = proc_last_line(&j->err, line, sizeof line);
    int st = j->status;
    proc_status_text(st, how, sizeof how);
    if (j->out.len || j->out_dropped)
        log_debug("message %s: stdout: %zu bytes%s", j->id, j->out.len + j->out_dropped,
                  j->out_dropped ? " (cut at 64 KiB)" : "");

    if (j->term_ms) {
        log_warnx("message %s: still running after %ld ms (timeout): %s; retried%s%s", j->id,
                  p->timeout_ms, j->killed ? "killed" : "stopped", last ? ": " : "", last ? last : "");
        report(j->ticket, DISP_RETRY, NULL, "timeout", seconds);
    } else if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        report(j->ticket, DISP_ACK, NULL, NULL, seconds);
    } else if (p->shell && WIFEXITED(st) && (WEXITSTATUS(st) == 126 || WEXITSTATUS(st) == 127)) {
        snprintf(h->error, sizeof h->error, "%s", last ? last : "the shell cannot run the command");
        log_warnx("message %s: /bin/sh %s: %s: dead-lettered (exec_failed)", j->id, how, h->error);
        report(j->ticket, DISP_DEAD, "exec_failed", h->error, seconds);
    } else {
        bool rejected = WIFEXITED(st) && WEXITSTATUS(st) == EXIT_REJECTED;
        snprintf(h->error, sizeof h->error, "%s", last ? last : how);
        log_warnx("message %s: %s%s%s: %s", j->id, how, last ? ": " : "", last ? last : "",
                  rejected ? "dead-lettered (exec_rejected)" : "retried");
        report(j->ticket, rejected ? DISP_DEAD : DISP_RETRY, rejected ? "exec_rejected" : NULL,
               h->error, seconds);
    }
}

static long left_ms(long long deadline, long long now)
{
    return deadline > now ? (long)(deadline - now) : 0;
}

/* The job's next deadline: its timeout, or SIGKILL after SIGTERM; -1: none. */
static long long deadline(const struct handler *h, const struct job *j)
{
    if (j->killed)
        return -1;
    return j->term_ms ? j->term_ms + KILL_GRACE_MS : j->started_ms + h->pool->timeout_ms;
}

static int exec_fds(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms)
{
    long long now = clock_mono_ms();
    int n = 0;
    for (struct job *j = h->jobs; j; j = j->next) {
        long long d = deadline(h, j);
        if (d >= 0 && (*timeout_ms < 0 || left_ms(d, now) < *timeout_ms))
            *timeout_ms = left_ms(d, now);
        j->npfd = 0;
        if (max - n < NFDS_MAX) {
            /* No room to poll it this turn: look again soon (run() tries it unasked). */
            if (*timeout_ms < 0 || *timeout_ms > 10)
                *timeout_ms = 10;
            continue;
        }
        j->pfd_at = n;
        if (j->p.in >= 0)
            pfd[n++] = (struct pollfd){ .fd = j->p.in, .events = POLLOUT };
        if (j->p.out >= 0)
            pfd[n++] = (struct pollfd){ .fd = j->p.out, .events = POLLIN };
        if (j->p.err >= 0)
            pfd[n++] = (struct pollfd){ .fd = j->p.err, .events = POLLIN };
        if (j->p.pidfd >= 0)
            pfd[n++] = (struct pollfd){ .fd = j->p.pidfd, .events = POLLIN };
        j->npfd = n - j->pfd_at;
    }
    return n;
}

/* What poll() said of fd for job j: its revents, or "try" when j was not polled this turn. */
static short revents_of(const struct job *j, const struct pollfd *pfd, int n, int fd)
{
    if (j->npfd == 0)
        return POLLIN | POLLOUT;
    for (int i = j->pfd_at; i < j->pfd_at + j->npfd && i < n; i++)
        if (pfd[i].fd == fd)
            return pfd[i].revents;
    return 0;
}

static void exec_run(struct handler *h, const struct pollfd *pfd, int n)
{
    long long now = clock_mono_ms();
    struct job **link = &h->jobs;
    while (*link) {
        struct job *j = *link;
        if (j->p.in >= 0 && revents_of(j, pfd, n, j->p.in))
            feed(j);
        if (j->p.out >= 0 && revents_of(j, pfd, n, j->p.out))
            drain(&j->p.out, &j->out, false, &j->out_dropped);
        if (j->p.err >= 0 && revents_of(j, pfd, n, j->p.err))
            drain(&j->p.err, &j->err, true, &j->err_dropped);
        if (j->p.pidfd >= 0 && revents_of(j, pfd, n, j->p.pidfd))
            j->exited = proc_reap(&j->p, &j->status) == 1;
        if (!j->exited) {
            long long d = deadline(h, j);
            if (d >= 0 && now >= d) {
                if (j->term_ms == 0) {
                    j->term_ms = now;
                    proc_kill(&j->p, SIGTERM);
                } else {
                    j->killed = true;
                    proc_kill(&j->p, SIGKILL);
                }
            }
            link = &j->next;
            continue;
        }
        *link = j->next;
        if (h->jobs_end == &j->next)
            h->jobs_end = link;
        h->njobs--;
        finish(h, j, now);
        job_free(j);
    }
}

static unsigned exec_inflight(struct handler *h)
{
    return h->njobs;
}

/* The worker exits with processes running (it gave up waiting): stop them; their messages
 * stay pending. */
static void exec_close(struct handler *h)
{
    while (h->jobs) {
        struct job *j = h->jobs;
        h->jobs = j->next;
        proc_kill(&j->p, SIGKILL);
        job_free(j);
    }
    free(h);
}

static struct handler *exec_open(struct child *c, const struct pool_conf *p)
{
    struct handler *h = xcalloc(1, sizeof *h);
    h->child = c;
    h->pool = p;
    h->jobs_end = &h->jobs;
    return h;
}

const struct handler_ops handler_exec_ops = {
    .name = "exec",
    .open = exec_open,
    .submit = exec_submit,
    .fds = exec_fds,
    .run = exec_run,
    .inflight = exec_inflight,
    .close = exec_close,
};
