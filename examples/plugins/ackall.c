/* ackall.c: an example streamfleet plugin. It acknowledges every message, except:
 *   plugin.dead_if = FIELD    a message that has FIELD is dead-lettered (reason "ackall_dead",
 *                             the field's value as the error)
 *   plugin.retry_if = FIELD   a message that has FIELD is retried (retry_after_ms from
 *                             plugin.retry_after_ms, default: the pool's backoff) until its
 *                             attempt reaches the field's value as a number, then acked
 *   plugin.async = yes        answer every message through host->done() on the next turn of
 *                             the worker's loop (woken through a pipe), to show the
 *                             asynchronous half of the ABI
 *   plugin.fail_init = TEXT   init() fails with TEXT (to see how a failing plugin is reported)
 *
 * Build: cc -std=c11 -fPIC -shared -I include -o ackall.so examples/plugins/ackall.c
 * (`make` builds it into build/plain/plugins/ackall.so). */
#include <streamfleet/plugin.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pending {
    struct sf_call *call;
    struct sf_answer a;
    char error[128];
};

struct ackall {
    const struct sf_host *host;
    char *dead_if;
    char *retry_if;
    long retry_after_ms;
    int async;
    int wake[2];                    /* async: a byte in the pipe means answers are queued */
    struct pending *q;
    size_t nq, capq;
};

static const struct sf_bytes *field(const struct sf_message *m, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < m->nfields; i++)
        if (m->fields[2 * i].len == n && memcmp(m->fields[2 * i].p, name, n) == 0)
            return &m->fields[2 * i + 1];
    return NULL;
}

static void ackall_fini(void *state)
{
    struct ackall *s = state;
    if (s == NULL)
        return;
    if (s->async) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    free(s->dead_if);
    free(s->retry_if);
    free(s->q);
    free(s);
}

static int ackall_init(const struct sf_host *host, const struct sf_param *params, size_t n,
                       void **state, char *err, size_t errlen)
{
    struct ackall *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    s->host = host;
    s->retry_after_ms = -1;
    for (size_t i = 0; i < n; i++) {
        const char *k = params[i].key, *v = params[i].value;
        if (strcmp(k, "dead_if") == 0) {
            free(s->dead_if);
            s->dead_if = strdup(v);
        } else if (strcmp(k, "retry_if") == 0) {
            free(s->retry_if);
            s->retry_if = strdup(v);
        } else if (strcmp(k, "retry_after_ms") == 0) {
            s->retry_after_ms = atol(v);
        } else if (strcmp(k, "async") == 0) {
            s->async = strcmp(v, "yes") == 0;
        } else if (strcmp(k, "fail_init") == 0) {
            snprintf(err, errlen, "%s", v);
            ackall_fini(s);
            return -1;
        } else {
            snprintf(err, errlen, "unknown parameter plugin.%s", k);
            ackall_fini(s);
            return -1;
        }
    }
    if (s->async && pipe2(s->wake, O_NONBLOCK | O_CLOEXEC) == -1) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        s->async = 0;
        ackall_fini(s);
        return -1;
    }
    *state = s;
    return 0;
}

/* Decide what becomes of m (the same decision, at once or later). */
static int decide(struct ackall *s, const struct sf_message *m, struct sf_answer *a, char *error, size_t len)
{
    const struct sf_bytes *v;
    if (s->dead_if && (v = field(m, s->dead_if)) != NULL) {
        snprintf(error, len, "%.*s", (int)(v->len > 100 ? 100 : v->len), v->p);
        a->reason = "ackall_dead";
        a->error = error;
        return SF_DEAD;
    }
    if (s->retry_if && (v = field(m, s->retry_if)) != NULL && m->attempt < atoll(v->p)) {
        snprintf(error, len, "attempt %lld of %s", m->attempt, v->p);
        a->error = error;
        a->retry_after_ms = s->retry_after_ms;
        return SF_RETRY;
    }
    return SF_ACK;
}

static int ackall_handle(void *state, const struct sf_message *m, struct sf_answer *a, struct sf_call *call)
{
    struct ackall *s = state;
    static char error[128];
    if (!s->async)
        return decide(s, m, a, error, sizeof error);

    if (s->nq == s->capq) {
        size_t cap = s->capq ? 2 * s->capq : 16;
        struct pending *q = realloc(s->q, cap * sizeof *q);
        if (q == NULL) {
            a->error = "out of memory";
            return SF_RETRY;
        }
        s->q = q;
        s->capq = cap;
    }
    struct pending *p = &s->q[s->nq++];
    memset(p, 0, sizeof *p);
    p->call = call;
    p->a.retry_after_ms = -1;
    p->a.result = decide(s, m, &p->a, p->error, sizeof p->error);
    if (write(s->wake[1], "x", 1) == -1 && errno != EAGAIN)
        s->host->log(2, "ackall: cannot wake the worker");
    return SF_PENDING;
}

static int ackall_fds(void *state, struct pollfd *pfd, int max, long *timeout_ms)
{
    struct ackall *s = state;
    (void)timeout_ms;
    if (!s->async || max < 1)
        return 0;
    pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
    return 1;
}

static void ackall_run(void *state, const struct pollfd *pfd, int n)
{
    struct ackall *s = state;
    if (!s->async || n < 1 || !(pfd[0].revents & POLLIN))
        return;
    char buf[256];
    while (read(s->wake[0], buf, sizeof buf) > 0)
        ;
    /* done() never calls back into us, so the queue cannot change under this loop. */
    for (size_t i = 0; i < s->nq; i++) {
        struct pending *p = &s->q[i];
        if (p->a.error)
            p->a.error = p->error;  /* the queue may have moved since handle() (realloc) */
        s->host->done(p->call, &p->a);
    }
    s->nq = 0;
}

const struct sf_plugin streamfleet_plugin = {
    .abi = STREAMFLEET_PLUGIN_ABI,
    .name = "ackall",
    .init = ackall_init,
    .handle = ackall_handle,
    .fds = ackall_fds,
    .run = ackall_run,
    .fini = ackall_fini,
};
