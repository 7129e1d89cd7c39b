/* dlqweb.c: the dead letters on the web, one forked child per request (see dlqweb.h).
 *
 * Why a child: supervisor/dlq.c, shared with `streamfleet dlq`, runs on common/redis.c's
 * blocking helper, and a frozen Redis must never stall the master's loop (signals, reaping,
 * /livez). The child is the master's image (the config is there already), connects on its
 * own, runs the very function the command line runs, writes "STATUS\n" and the JSON answer to
 * a pipe and exits. The master reads the pipe from its poll loop and resumes the request.
 *
 * Why a header and no cookie: a browser adds cookies (and cached Basic credentials) to a
 * cross-site request by itself, never a custom header; a cross-site fetch() that sets one
 * needs a CORS preflight, which is refused (405). So no other site can make a visitor's browser
 * replay or purge. State changes only on POST. */
#include "supervisor/dlqweb.h"
#include "supervisor/dlq.h"
#include "common/clock.h"
#include "common/dur.h"
#include "common/json.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

extern const char dlq_page_html[];      /* dlqpage.c */

#define ANSWER_MAX (32 * 1024 * 1024)   /* a dead letter holds up to max_message_bytes */
#define IDS_MAX 1000
#define JSON_TYPE "application/json"

/* A child at work on one request. */
struct job {
    pid_t pid;                      /* 0: the entry is free */
    int fd;                         /* the pipe's read end */
    unsigned long long req;         /* the suspended request */
    long long deadline_ms;
    struct buf out;
    enum dlq_op op;
    char pool[128];
};

struct dlqweb {
    struct job jobs[DLQWEB_CHILDREN];
};

struct dlqweb *dlqweb_open(void)
{
    struct dlqweb *w = xcalloc(1, sizeof *w);
    for (int i = 0; i < DLQWEB_CHILDREN; i++)
        w->jobs[i].fd = -1;
    return w;
}

static void job_end(struct job *j)
{
    if (j->fd >= 0)
        close(j->fd);
    j->fd = -1;
    j->pid = 0;
    buf_release(&j->out);
}

void dlqweb_free(struct dlqweb *w)
{
    if (w == NULL)
        return;
    for (int i = 0; i < DLQWEB_CHILDREN; i++)
        if (w->jobs[i].pid > 0) {
            /* Its pipe is open, so it has not exited: the pid is still its own. */
            kill(w->jobs[i].pid, SIGKILL);
            job_end(&w->jobs[i]);
        }
    free(w);
}

/* The admin token of c, read at each request: a small local file, and no cache that a reload
 * could leave stale. Caller wipes and frees it (token_free()); NULL: writing is off. */
static char *admin_token(const struct conf *c)
{
    if (c->admin_token_file == NULL)
        return NULL;
    char err[300];
    char *t = conf_read_token(c->admin_token_file, err, sizeof err);
    if (t == NULL)
        log_errorx("dead letters on the web are read-only: admin_token_file: %s", err);
    return t;
}

static void token_free(char *t)
{
    if (t) {
        explicit_bzero(t, strlen(t));
        free(t);
    }
}

/* Constant time in the length of the expected token. */
static bool same_token(const char *expected, const char *got)
{
    if (got == NULL)
        return false;
    size_t n = strlen(expected), m = strlen(got);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(expected[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

/* An entry id as Redis writes one: digits, a dash, digits. */
static bool id_ok(const char *s)
{
    size_t n = strspn(s, "0123456789");
    if (n == 0 || n > 20 || s[n] != '-')
        return false;
    size_t k = strspn(s + n + 1, "0123456789");
    return k > 0 && k <= 20 && s[n + 1 + k] == '\0';
}

static int error_json(struct buf *body, const char **ctype, int status, const char *msg)
{
    buf_adds(body, "{\"error\":\"");
    buf_add_json_str(body, msg, strlen(msg));
    buf_adds(body, "\"}");
    *ctype = JSON_TYPE;
    return status;
}

/* Run rq in a child; the request stays suspended until dlqweb_run() answers it. */
static int start_job(struct dlqweb *w, const struct conf *c, struct httpd_req *req, const struct dlq_request *rq,
                     struct buf *body, const char **ctype)
{
    struct job *j = NULL;
    for (int i = 0; i < DLQWEB_CHILDREN && j == NULL; i++)
        if (w->jobs[i].pid == 0)
            j = &w->jobs[i];
    if (j == NULL)
        return error_json(body, ctype, 503, "busy: too many dead-letter requests at once, try again");
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) == -1)
        return error_json(body, ctype, 503, "cannot make a pipe");
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        close(pfd[0]);
        close(pfd[1]);
        return error_json(body, ctype, 503, "cannot fork");
    }
    if (pid == 0) {
        /* Keep the pipe alone (on fd 3): not the listener, not the clients, not the signalfd. */
        if (pfd[1] != 3 && dup2(pfd[1], 3) == -1)
            _exit(1);
        close_range(4, ~0U, 0);
        struct sigaction sa = { .sa_handler = SIG_DFL };
        sigemptyset(&sa.sa_mask);
        for (int s = 1; s < NSIG; s++)
            sigaction(s, &sa, NULL);        /* fails harmlessly for SIGKILL, SIGSTOP, the RT gaps */
        sa.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &sa, NULL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != master)
            _exit(1);
        prctl(PR_SET_NAME, "sf-dlqweb");
        struct buf out = BUF_INIT;
        int status = dlq_web(c, rq, &out);
        char head[16];
        int hn = snprintf(head, sizeof head, "%d\n", status);
        struct buf all = BUF_INIT;
        buf_add(&all, head, (size_t)hn);
        buf_add(&all, out.p ? out.p : "", out.len);
        for (size_t done = 0; done < all.len;) {
            ssize_t n = write(3, all.p + done, all.len - done);
            if (n == -1 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            done += (size_t)n;
        }
        /* _exit: nothing of the master's (atexit, stdio of the log) is this child's to flush. */
        _exit(0);
    }
    close(pfd[1]);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    j->pid = pid;
    j->fd = pfd[0];
    j->req = httpd_req_id(req);
    j->deadline_ms = clock_mono_ms() + DLQWEB_DEADLINE_MS;
    j->op = rq->op;
    snprintf(j->pool, sizeof j->pool, "%s", rq->pool);
    return HTTPD_SUSPENDED;
}

/* The body of a POST: {"pool": P, "stream": S, "ids": [ID...]} or {..., "all": true}. */
static int read_action(const struct httpd_req *req, struct dlq_request *rq, struct json **doc, char *err, size_t len)
{
    size_t n;
    const char *text = httpd_req_body(req, &n);
    if ((*doc = json_parse(text, n, err, len)) == NULL)
        return -1;
    rq->pool = json_str(*doc, "pool");
    rq->stream = json_str(*doc, "stream");
    rq->all = json_bool(*doc, "all") == 1;
    const struct json *ids = json_get(*doc, "ids");
    if (rq->pool == NULL) {
        snprintf(err, len, "pool is required");
        return -1;
    }
    if (rq->all == (ids != NULL)) {
        snprintf(err, len, "give ids or \"all\": true, not both");
        return -1;
    }
    size_t k = json_len(ids);
    if (ids && (json_kind(ids) != JSON_K_ARRAY || k == 0 || k > IDS_MAX)) {
        snprintf(err, len, "ids must be a list of 1 to %d entry ids", IDS_MAX);
        return -1;
    }
    rq->ids = xcalloc(k + 1, sizeof *rq->ids);
    for (size_t i = 0; i < k; i++) {
        const char *id = json_strval(json_at(ids, i));
        if (id == NULL || !id_ok(id)) {
            snprintf(err, len, "ids[%zu] is not an entry id", i);
            return -1;
        }
        rq->ids[i] = (char *)id;
    }
    rq->nids = (int)k;
    return 0;
}

static int request(struct dlqweb *w, const struct conf *c, const char *admin, struct httpd_req *req,
                   struct buf *body, const char **ctype)
{
    const char *path = httpd_req_path(req), *method = httpd_req_method(req);
    bool get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0, post = strcmp(method, "POST") == 0;
    bool act = strcmp(path, "/dlq/replay") == 0 || strcmp(path, "/dlq/purge") == 0;
    bool look = strcmp(path, "/dlq.json") == 0 || strcmp(path, "/dlq/letter.json") == 0;
    if (strcmp(path, "/dlq") != 0 && !act && !look)
        return HTTPD_PASS;
    if ((act && !post) || (!act && !get)) {
        httpd_req_set_allow(req, act ? "POST" : "GET, HEAD");
        buf_adds(body, "method not allowed\n");
        return 405;
    }
    if (strcmp(path, "/dlq") == 0) {
        buf_adds(body, dlq_page_html);
        *ctype = "text/html; charset=utf-8";
        return 200;
    }
    struct dlq_request rq = { .count = 50 };
    if (look) {
        rq.pool = httpd_req_arg(req, "pool");
        if (rq.pool == NULL)
            return error_json(body, ctype, 400, "pool is required");
        if (path[4] == '.') {
            rq.op = DLQ_OP_LIST;
            rq.writable = admin != NULL;
            rq.stream = httpd_req_arg(req, "stream");
            rq.reason = httpd_req_arg(req, "reason");
            rq.before = httpd_req_arg(req, "before");
            const char *count = httpd_req_arg(req, "count");
            if (count && int_parse(count, 1, 1000, &rq.count) == -1)
                return error_json(body, ctype, 400, "count must be a number from 1 to 1000");
            if (rq.before && *rq.before && !id_ok(rq.before))
                return error_json(body, ctype, 400, "before must be an entry id");
        } else {
            rq.op = DLQ_OP_LETTER;
            rq.id = httpd_req_arg(req, "id");
            if (rq.id == NULL || !id_ok(rq.id))
                return error_json(body, ctype, 400, "id must be an entry id");
        }
        if (conf_pool(c, rq.pool) == NULL)
            return error_json(body, ctype, 404, "no such pool");
        return start_job(w, c, req, &rq, body, ctype);
    }
    /* Replay and purge. */
    if (admin == NULL)
        return error_json(body, ctype, 403, "dead letters are read-only here: [fleet] admin_token_file is not set");
    if (!same_token(admin, httpd_req_header(req, "X-Streamfleet-Admin"))) {
        log_warnx("dlq web: %s refused: no or wrong X-Streamfleet-Admin token", path);
        return error_json(body, ctype, 403, "the X-Streamfleet-Admin header must hold the admin token");
    }
    rq.op = path[5] == 'r' ? DLQ_OP_REPLAY : DLQ_OP_PURGE;
    struct json *doc = NULL;
    char err[300];
    int status;
    if (read_action(req, &rq, &doc, err, sizeof err) == -1)
        status = error_json(body, ctype, 400, err);
    else if (conf_pool(c, rq.pool) == NULL)
        status = error_json(body, ctype, 404, "no such pool");
    else
        status = start_job(w, c, req, &rq, body, ctype);
    if (status == HTTPD_SUSPENDED && rq.all)
        log_info("dlq web: %s of every dead letter of pool %s started", rq.op == DLQ_OP_REPLAY ? "replay" : "purge",
                 rq.pool);
    else if (status == HTTPD_SUSPENDED)
        log_info("dlq web: %s of %d dead letter%s of pool %s started", rq.op == DLQ_OP_REPLAY ? "replay" : "purge",
                 rq.nids, rq.nids == 1 ? "" : "s", rq.pool);
    free(rq.ids);
    json_free(doc);
    return status;
}

int dlqweb_request(struct dlqweb *w, const struct conf *c, struct httpd_req *req, struct buf *body,
                   const char **ctype)
{
    const char *path = httpd_req_path(req);
    if (strncmp(path, "/dlq", 4) != 0)
        return HTTPD_PASS;
    char *admin = admin_token(c);
    int status = request(w, c, admin, req, body, ctype);
    token_free(admin);
    return status;
}

int dlqweb_fds(struct dlqweb *w, struct pollfd *pfd)
{
    int n = 0;
    for (int i = 0; i < DLQWEB_CHILDREN; i++)
        if (w->jobs[i].pid > 0)
            pfd[n++] = (struct pollfd){ .fd = w->jobs[i].fd, .events = POLLIN };
    return n;
}

/* The child's answer is whole (its pipe ended): give it, and log what replay and purge did. */
static void job_answer(struct job *j, struct httpd *h, bool killed)
{
    static const char broken[] = "{\"error\":\"the dead-letter request ended without an answer\"}";
    static const char late[] = "{\"error\":\"the dead-letter request took too long (is redis answering?)\"}";
    const char *nl = j->out.p ? memchr(j->out.p, '\n', j->out.len) : NULL;
    int status = nl ? atoi(j->out.p) : 0;
    if (killed || nl == NULL || status < 200 || status > 599) {
        const char *msg = killed ? late : broken;
        status = killed ? 504 : 502;
        httpd_resume(h, j->req, status, JSON_TYPE, msg, strlen(msg));
        if (j->op == DLQ_OP_REPLAY || j->op == DLQ_OP_PURGE)
            log_warnx("dlq web: %s of pool %s: %s", j->op == DLQ_OP_REPLAY ? "replay" : "purge", j->pool,
                      killed ? "killed at its deadline" : "ended without an answer");
        return;
    }
    const char *json = nl + 1;
    size_t len = j->out.len - (size_t)(json - j->out.p);
    if (j->op == DLQ_OP_REPLAY || j->op == DLQ_OP_PURGE) {
        char err[200];
        double count = -1;
        struct json *doc = json_parse(json, len, err, sizeof err);
        json_num(doc, "count", &count);
        const char *errors = json_str(doc, "errors");
        if (json_bool(doc, "ok") == 1)
            log_info("dlq web: %s %.0f dead letter%s of pool %s", j->op == DLQ_OP_REPLAY ? "replayed" : "purged",
                     count, count == 1 ? "" : "s", j->pool);
        else
            log_warnx("dlq web: %s of pool %s: %.0f done, then: %s", j->op == DLQ_OP_REPLAY ? "replay" : "purge",
                      j->pool, count, errors && *errors ? errors : "failed");
        json_free(doc);
    }
    httpd_resume(h, j->req, status, JSON_TYPE, json, len);
}

void dlqweb_run(struct dlqweb *w, struct httpd *h, long long now_ms)
{
    for (int i = 0; i < DLQWEB_CHILDREN; i++) {
        struct job *j = &w->jobs[i];
        if (j->pid == 0)
            continue;
        char chunk[65536];
        ssize_t n;
        while ((n = read(j->fd, chunk, sizeof chunk)) > 0 && j->out.len < ANSWER_MAX)
            buf_add(&j->out, chunk, (size_t)n);
        bool ended = n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR) || j->out.len >= ANSWER_MAX;
        if (ended) {
            job_answer(j, h, false);
            if (n != 0)
                kill(j->pid, SIGKILL);      /* too much, or a broken pipe: its pipe is still open */
            job_end(j);
        } else if (now_ms >= j->deadline_ms) {
            kill(j->pid, SIGKILL);
            job_answer(j, h, true);
            job_end(j);
        }
    }
}

long dlqweb_timeout_ms(struct dlqweb *w, long long now_ms)
{
    long best = -1;
    for (int i = 0; i < DLQWEB_CHILDREN; i++) {
        const struct job *j = &w->jobs[i];
        if (j->pid == 0)
            continue;
        long t = j->deadline_ms <= now_ms ? 0 : (long)(j->deadline_ms - now_ms);
        if (best < 0 || t < best)
            best = t;
    }
    return best;
}
