/* deliver.c: libcurl's multi_socket interface driven by the child's poll() loop.
 *
 * libcurl tells us through two callbacks what to wait for: socket_cb() which sockets for which
 * events (kept in a small table that deliver_fds() copies into the pollfd array), timer_cb()
 * when to call it back even if nothing happens (kept as one deadline). deliver_run() passes
 * each ready socket and an expired deadline to curl_multi_socket_action() and then collects
 * finished transfers with curl_multi_info_read(). See curl's docs/examples/hiperfifo.c for
 * the same shape around libevent. */
#include "child/deliver.h"
#include "common/clock.h"
#include "common/log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

struct xfer {
    CURL *easy;
    struct curl_slist *headers;
    void *user;
    bool busy;                      /* in the multi handle */
    struct xfer *next;              /* in the free list */
    struct xfer *all_next;          /* every handle ever made, for deliver_free() */
    char errbuf[CURL_ERROR_SIZE];
};

struct sock {
    curl_socket_t fd;
    short events;
};

struct deliver {
    const struct deliver_conf *conf;
    void (*done)(void *arg, void *user, const struct deliver_result *r);
    void *arg;
    CURLM *multi;
    struct xfer *free;              /* idle easy handles, options set, ready for reuse */
    struct xfer *all;
    unsigned active;
    struct sock *socks;
    size_t nsocks, capsocks;
    long long deadline_ms;          /* when libcurl wants to be called back; -1: never */
};

/* ---- libcurl's callbacks: they only record; never call libcurl from inside them ---------- */

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *clientp, void *socketp)
{
    (void)easy;
    (void)socketp;
    struct deliver *d = clientp;
    size_t i = 0;
    while (i < d->nsocks && d->socks[i].fd != fd)
        i++;
    if (what == CURL_POLL_REMOVE) {
        if (i < d->nsocks)
            d->socks[i] = d->socks[--d->nsocks];
        return 0;
    }
    if (i == d->nsocks) {
        if (d->nsocks == d->capsocks) {
            d->capsocks = d->capsocks ? 2 * d->capsocks : 16;
            d->socks = xrealloc(d->socks, d->capsocks * sizeof *d->socks);
        }
        d->socks[d->nsocks++].fd = fd;
    }
    d->socks[i].events = (short)(((what & CURL_POLL_IN) ? POLLIN : 0) |
                                 ((what & CURL_POLL_OUT) ? POLLOUT : 0));
    return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *clientp)
{
    (void)multi;
    struct deliver *d = clientp;
    d->deadline_ms = timeout_ms < 0 ? -1 : clock_mono_ms() + timeout_ms;
    return 0;
}

/* The answer's body means nothing to us: read and drop it (libcurl's default would write it
 * to our stdout, which handler = log owns). */
static size_t discard_cb(char *p, size_t size, size_t n, void *userdata)
{
    (void)p;
    (void)userdata;
    return size * n;
}

/* ---- easy handles ------------------------------------------------------------------------ */

#define SET(easy, opt, val)                                                                  \
    do {                                                                                     \
        if ((rc = curl_easy_setopt(easy, opt, val)) != CURLE_OK) {                           \
            what = #opt;                                                                     \
            goto fail;                                                                       \
        }                                                                                    \
    } while (0)

/* A new easy handle with every option that does not change between requests. */
static struct xfer *xfer_new(struct deliver *d, char *err, size_t errlen)
{
    const struct deliver_conf *c = d->conf;
    struct xfer *x = xcalloc(1, sizeof *x);
    CURLcode rc = CURLE_OK;
    const char *what = "curl_easy_init";
    x->easy = curl_easy_init();
    if (x->easy == NULL)
        goto fail;
    CURL *e = x->easy;
    SET(e, CURLOPT_PRIVATE, x);
    SET(e, CURLOPT_ERRORBUFFER, x->errbuf);
    SET(e, CURLOPT_NOSIGNAL, 1L);
    SET(e, CURLOPT_FOLLOWLOCATION, 0L);
    SET(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* A daemon's environment is often an accident: http_proxy must not reroute webhooks. */
    SET(e, CURLOPT_PROXY, "");
    SET(e, CURLOPT_CONNECTTIMEOUT_MS, c->connect_timeout_ms);
    SET(e, CURLOPT_TIMEOUT_MS, c->timeout_ms);
    SET(e, CURLOPT_TCP_KEEPALIVE, 1L);
    SET(e, CURLOPT_WRITEFUNCTION, discard_cb);
    if (c->user_agent)
        SET(e, CURLOPT_USERAGENT, c->user_agent);
    if (strcmp(c->method, "POST") == 0)
        SET(e, CURLOPT_POST, 1L);
    else
        SET(e, CURLOPT_CUSTOMREQUEST, c->method);
    if (c->tls_ca)
        SET(e, CURLOPT_CAINFO, c->tls_ca);
    SET(e, CURLOPT_SSL_VERIFYPEER, c->tls_verify ? 1L : 0L);
    SET(e, CURLOPT_SSL_VERIFYHOST, c->tls_verify ? 2L : 0L);
    if (c->tls_cert)
        SET(e, CURLOPT_SSLCERT, c->tls_cert);
    if (c->tls_key)
        SET(e, CURLOPT_SSLKEY, c->tls_key);
    x->all_next = d->all;
    d->all = x;
    return x;
fail:
    snprintf(err, errlen, "%s: %s", what, rc != CURLE_OK ? curl_easy_strerror(rc) : "failed");
    if (x->easy)
        curl_easy_cleanup(x->easy);
    free(x);
    return NULL;
}

/* ---- the multi handle -------------------------------------------------------------------- */

struct deliver *deliver_open(const struct deliver_conf *conf,
                             void (*done)(void *arg, void *user, const struct deliver_result *r),
                             void *arg, char *err, size_t errlen)
{
    CURLcode grc = curl_global_init(CURL_GLOBAL_DEFAULT);
    if (grc != CURLE_OK) {
        snprintf(err, errlen, "curl_global_init: %s", curl_easy_strerror(grc));
        return NULL;
    }
    struct deliver *d = xcalloc(1, sizeof *d);
    d->conf = conf;
    d->done = done;
    d->arg = arg;
    d->deadline_ms = -1;
    d->multi = curl_multi_init();
    if (d->multi == NULL) {
        snprintf(err, errlen, "curl_multi_init failed");
        goto fail;
    }
    long maxconn = conf->max_connections ? (long)conf->max_connections : 1;
    CURLMcode mrc;
    if ((mrc = curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, socket_cb)) != CURLM_OK ||
        (mrc = curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d)) != CURLM_OK ||
        (mrc = curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, timer_cb)) != CURLM_OK ||
        (mrc = curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d)) != CURLM_OK ||
        (mrc = curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, maxconn)) != CURLM_OK ||
        (mrc = curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, maxconn)) != CURLM_OK) {
        snprintf(err, errlen, "curl_multi_setopt: %s", curl_multi_strerror(mrc));
        goto fail;
    }
    /* One handle now, so that a bad option (a TLS file libcurl cannot take) shows at start. */
    struct xfer *x = xfer_new(d, err, errlen);
    if (x == NULL)
        goto fail;
    d->free = x;
    return d;
fail:
    deliver_free(d);
    return NULL;
}

void deliver_free(struct deliver *d)
{
    if (d == NULL)
        return;
    /* What is still in flight is abandoned: its messages stay pending in Redis. */
    for (struct xfer *x = d->all, *next; x; x = next) {
        next = x->all_next;
        if (x->busy)
            curl_multi_remove_handle(d->multi, x->easy);
        curl_easy_cleanup(x->easy);
        curl_slist_free_all(x->headers);
        free(x);
    }
    /* libcurl may still call socket_cb while it closes cached connections: the table lives
     * until after this. */
    if (d->multi)
        curl_multi_cleanup(d->multi);
    free(d->socks);
    free(d);
    curl_global_cleanup();
}

int deliver_start(struct deliver *d, const char *url, const char *const *headers, size_t nheaders,
                  const void *body, size_t len, void *user, char *err, size_t errlen)
{
    struct xfer *x = d->free;
    if (x)
        d->free = x->next;
    else if ((x = xfer_new(d, err, errlen)) == NULL)
        return -1;
    x->next = NULL;
    x->user = user;
    x->errbuf[0] = '\0';
    struct curl_slist *h = NULL;
    for (size_t i = 0; i < nheaders; i++) {
        struct curl_slist *t = curl_slist_append(h, headers[i]);
        if (t == NULL)
            goto nomem;
        h = t;
    }
    /* libcurl 7.88 asks for "Expect: 100-continue" before bodies over 1 KiB and then waits
     * up to a second for a 100 that many servers never send: send the body at once. */
    struct curl_slist *t = curl_slist_append(h, "Expect:");
    if (t == NULL)
        goto nomem;
    h = t;
    curl_slist_free_all(x->headers);
    x->headers = h;

    CURLcode rc;
    const char *what;
    SET(x->easy, CURLOPT_URL, url);
    SET(x->easy, CURLOPT_HTTPHEADER, x->headers);
    SET(x->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    SET(x->easy, CURLOPT_POSTFIELDS, len ? body : "");
    CURLMcode mrc = curl_multi_add_handle(d->multi, x->easy);
    if (mrc != CURLM_OK) {
        snprintf(err, errlen, "curl_multi_add_handle: %s", curl_multi_strerror(mrc));
        goto back;
    }
    x->busy = true;
    d->active++;
    return 0;
nomem:
    curl_slist_free_all(h);
    snprintf(err, errlen, "out of memory for headers");
    goto back;
fail:
    snprintf(err, errlen, "%s: %s", what, curl_easy_strerror(rc));
back:
    x->user = NULL;
    x->next = d->free;
    d->free = x;
    return -1;
}

int deliver_fds(struct deliver *d, struct pollfd *pfd, int max, long *timeout_ms)
{
    int n = 0;
    for (size_t i = 0; i < d->nsocks && n < max; i++) {
        if (d->socks[i].events == 0)
            continue;
        pfd[n++] = (struct pollfd){ .fd = d->socks[i].fd, .events = d->socks[i].events };
    }
    if (d->deadline_ms >= 0) {
        long long left = d->deadline_ms - clock_mono_ms();
        if (left < 0)
            left = 0;
        if (left < *timeout_ms || *timeout_ms < 0)
            *timeout_ms = (long)left;
    }
    return n;
}

/* Report every transfer libcurl has finished. */
static void collect(struct deliver *d)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        CURL *e = m->easy_handle;
        struct xfer *x = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
        struct deliver_result r = { .code = (int)m->data.result, .error = "" };
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r.status);
        curl_off_t us = 0;
        curl_easy_getinfo(e, CURLINFO_TOTAL_TIME_T, &us);
        r.seconds = (double)us / 1e6;
        /* Copied out: the header store belongs to the handle, which goes back to the pool. */
        char retry_after[64];
        struct curl_header *ra;
        if (r.status && curl_easy_header(e, "Retry-After", 0, CURLH_HEADER, -1, &ra) == CURLHE_OK) {
            snprintf(retry_after, sizeof retry_after, "%s", ra->value);
            r.retry_after = retry_after;
        }
        char error[CURL_ERROR_SIZE];
        if (r.code != CURLE_OK) {
            snprintf(error, sizeof error, "%s", x->errbuf[0] ? x->errbuf :
                     curl_easy_strerror(m->data.result));
            size_t n = strlen(error);
            if (n && error[n - 1] == '\n')
                error[n - 1] = '\0';
            r.error = error;
        }
        void *user = x->user;
        /* m is invalid after this: everything needed was copied above. */
        curl_multi_remove_handle(d->multi, e);
        x->busy = false;
        x->user = NULL;
        x->next = d->free;
        d->free = x;
        d->active--;
        d->done(d->arg, user, &r);
    }
}

void deliver_run(struct deliver *d, const struct pollfd *pfd, int n)
{
    int running;
    for (int i = 0; i < n; i++) {
        if (pfd[i].revents == 0 || (pfd[i].revents & POLLNVAL))
            continue;
        int ev = 0;
        if (pfd[i].revents & (POLLIN | POLLHUP))
            ev |= CURL_CSELECT_IN;
        if (pfd[i].revents & POLLOUT)
            ev |= CURL_CSELECT_OUT;
        if (pfd[i].revents & POLLERR)
            ev |= CURL_CSELECT_ERR;
        curl_multi_socket_action(d->multi, pfd[i].fd, ev, &running);
    }
    if (d->deadline_ms >= 0 && clock_mono_ms() >= d->deadline_ms) {
        d->deadline_ms = -1;
        curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    }
    collect(d);
}

unsigned deliver_active(const struct deliver *d)
{
    return d->active;
}
