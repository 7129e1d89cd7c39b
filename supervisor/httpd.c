/* httpd.c: libmicrohttpd wrapper (the only file that includes it). */
#include "supervisor/httpd.h"
#include "common/clock.h"
#include "common/log.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <stdbool.h>
#include <netdb.h>
#include <strings.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define REQUEST_DEADLINE_MS 10000   /* a request must arrive whole within this */
/* Admission. One address may hold PER_ADDRESS_MAX connections; past CONNS_MAX in all, each new
 * connection pushes out the one idle the longest, so that a probe always gets in however many
 * addresses hold idle connections (libmicrohttpd 0.9.75, once at its own limit, stops
 * accepting: a /livez would wait in the backlog until the idle ones time out). Its own limit
 * sits above ours only so that it keeps accepting while the pushed-out ones close. */
#define CONNS_MAX 256
#define PER_ADDRESS_MAX 64
#define MHD_CONNS_MAX (CONNS_MAX + 64)

/* One open connection. libmicrohttpd's own timeout counts from the last byte received, so a
 * client trickling one byte a second would hold its slot for ever (slowloris); we count from
 * the connection's start, or from its last answered request. */
struct conn {
    struct conn *prev, *next;
    int fd;
    long long since_ms;
    bool waiting;                   /* its request is suspended: our answer is late, not the client */
};

/* One request (libmicrohttpd's per-request context): its body, and while it is suspended its
 * place among the suspended ones and then the answer to give when it is resumed. */
#define BODY_MAX (64 * 1024)
struct httpd_req {
    struct httpd_req *prev, *next;  /* the suspended ones */
    struct MHD_Connection *conn;
    struct conn *c;
    const char *method, *path;      /* libmicrohttpd's, valid during the request */
    struct buf body;
    bool started, too_big, suspended, ready;
    unsigned long long id;
    int status;
    const char *ctype;
    const char *allow;              /* the Allow header of a 405 (NULL: GET, HEAD) */
    struct buf answer;
};

struct httpd {
    struct MHD_Daemon *d;
    struct httpd_route route;
    char *token;                    /* NULL: no authentication */
    struct conn *conns;             /* newest first */
    unsigned nconns;
    bool cut;                       /* connections were shut down: run libmicrohttpd again */
    struct httpd_req *waiting;      /* suspended requests */
};

static unsigned long long next_req_id = 1;     /* unique across listeners (a reload may open another) */

/* Shut down the connection (but keep) that has waited the longest for a request; libmicrohttpd
 * sees the socket end and closes it on its next run. */
static void push_out_idlest(struct httpd *h, const struct conn *keep)
{
    struct conn *idlest = NULL;
    for (struct conn *c = h->conns; c; c = c->next)
        if (c != keep && c->fd >= 0 && (idlest == NULL || c->since_ms <= idlest->since_ms))
            idlest = c;
    if (idlest) {
        shutdown(idlest->fd, SHUT_RDWR);
        idlest->fd = -1;
        h->cut = true;
    }
}

static void on_connection(void *cls, struct MHD_Connection *connection, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct httpd *h = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *info = MHD_get_connection_info(connection, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct conn *c = xcalloc(1, sizeof *c);
        c->fd = info ? info->connect_fd : -1;
        c->since_ms = clock_mono_ms();
        c->next = h->conns;
        if (h->conns)
            h->conns->prev = c;
        h->conns = c;
        *socket_context = c;
        if (++h->nconns > CONNS_MAX)
            push_out_idlest(h, c);
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        struct conn *c = *socket_context;
        if (c->prev)
            c->prev->next = c->next;
        else
            h->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        free(c);
        h->nconns--;
        *socket_context = NULL;
    }
}

/* Constant time in the length of the expected token: a wrong guess takes as long as a
 * nearly right one. The scheme is case-insensitive (RFC 7235 section 2.1). */
static bool token_ok(const char *expected, const char *header)
{
    static const char scheme[] = "Bearer";
    if (header == NULL || strncasecmp(header, scheme, sizeof scheme - 1) != 0 || header[sizeof scheme - 1] != ' ')
        return false;
    const char *got = header + sizeof scheme - 1;
    while (*got == ' ')
        got++;
    size_t n = strlen(expected), m = strlen(got);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(expected[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

static enum MHD_Result respond(struct MHD_Connection *conn, const char *allow, int status, const char *ctype,
                               struct buf *body)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(body->len, body->p ? body->p : (char *)"",
                                                                MHD_RESPMEM_MUST_COPY);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (status == 405)
        MHD_add_response_header(resp, "Allow", allow ? allow : "GET, HEAD");
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"streamfleet\"");
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)version;
    struct httpd *h = cls;
    struct httpd_req *rq = *con_cls;
    if (rq == NULL) {
        rq = *con_cls = xcalloc(1, sizeof *rq);
        rq->conn = conn;
        rq->id = next_req_id++;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
        rq->c = ci ? ci->socket_context : NULL;
    }
    rq->method = method;
    rq->path = url;
    if (rq->ready) {
        /* Resumed: give the answer that came meanwhile. */
        if (rq->c)
            rq->c->since_ms = clock_mono_ms(), rq->c->waiting = false;
        enum MHD_Result r = respond(conn, rq->allow, rq->status, rq->ctype, &rq->answer);
        rq->ready = false;
        return r;
    }
    bool post = strcmp(method, "POST") == 0;
    if (*upload_data_size != 0) {
        /* A POST's body, kept up to BODY_MAX; any other body is dropped. We answer once it has
         * been read. */
        if (post && rq->body.len + *upload_data_size <= BODY_MAX)
            buf_add(&rq->body, upload_data, *upload_data_size);
        else
            rq->too_big = post;
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (post && !rq->started) {
        rq->started = true;     /* the first call: the body (if any) comes next */
        return MHD_YES;
    }
    rq->started = true;
    if (rq->c)
        rq->c->since_ms = clock_mono_ms();    /* a request arrived whole */

    struct buf body = BUF_INIT;
    const char *ctype = "text/plain; charset=utf-8";
    int status = HTTPD_PASS;
    bool unauthorized = h->token && strcmp(url, "/livez") != 0 &&
                        !token_ok(h->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"));
    if (unauthorized) {
        status = 401;
        buf_adds(&body, "unauthorized\n");
    } else if (rq->too_big) {
        status = 413;
        buf_adds(&body, "request body too large\n");
    } else if (h->route.req_fn) {
        status = h->route.req_fn(h->route.arg, rq, &body, &ctype);
    }
    if (status == HTTPD_SUSPENDED) {
        /* The answer comes with httpd_resume(); until then libmicrohttpd leaves it alone. */
        rq->suspended = true;
        rq->next = h->waiting;
        if (h->waiting)
            h->waiting->prev = rq;
        h->waiting = rq;
        if (rq->c)
            rq->c->waiting = true;
        MHD_suspend_connection(conn);
        buf_release(&body);
        return MHD_YES;
    }
    if (status != HTTPD_PASS) {
        /* the route said */
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = 405;
        buf_adds(&body, "method not allowed\n");
    } else {
        const char *pool = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "pool");
        status = h->route.fn(h->route.arg, url, pool, &body, &ctype);
    }
    enum MHD_Result r = respond(conn, rq->allow, status, ctype, &body);
    buf_release(&body);
    return r;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    struct httpd_req *rq = *con_cls;
    if (rq == NULL)
        return;
    buf_release(&rq->body);
    buf_release(&rq->answer);
    free(rq);
    *con_cls = NULL;
}

const char *httpd_req_method(const struct httpd_req *rq)
{
    return rq->method;
}

const char *httpd_req_path(const struct httpd_req *rq)
{
    return rq->path;
}

const char *httpd_req_arg(const struct httpd_req *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_GET_ARGUMENT_KIND, name);
}

const char *httpd_req_header(const struct httpd_req *rq, const char *name)
{
    return MHD_lookup_connection_value(rq->conn, MHD_HEADER_KIND, name);
}

const char *httpd_req_body(const struct httpd_req *rq, size_t *len)
{
    *len = rq->body.len;
    return rq->body.p ? rq->body.p : "";
}

void httpd_req_set_allow(struct httpd_req *rq, const char *allow)
{
    rq->allow = allow;
}

unsigned long long httpd_req_id(const struct httpd_req *rq)
{
    return rq->id;
}

int httpd_resume(struct httpd *h, unsigned long long id, int status, const char *ctype, const char *body, size_t len)
{
    struct httpd_req *rq = h->waiting;
    while (rq && rq->id != id)
        rq = rq->next;
    if (rq == NULL)
        return -1;
    if (rq->prev)
        rq->prev->next = rq->next;
    else
        h->waiting = rq->next;
    if (rq->next)
        rq->next->prev = rq->prev;
    rq->prev = rq->next = NULL;
    rq->suspended = false;
    rq->ready = true;
    rq->status = status;
    rq->ctype = ctype;
    buf_reset(&rq->answer);
    buf_add(&rq->answer, body, len);
    MHD_resume_connection(rq->conn);
    MHD_run(h->d);
    return 0;
}

static void mhd_log(void *arg, const char *fmt, va_list ap)
{
    (void)arg;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

struct httpd *httpd_open(const char *host, int port, const char *token, struct httpd_route route, char *err,
                         size_t errlen)
{
    struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "listen address %s: %s", host, gai_strerror(gai));
        return NULL;
    }
    struct httpd *h = xcalloc(1, sizeof *h);
    h->route = route;
    h->token = token ? xstrdup(token) : NULL;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG | MHD_ALLOW_SUSPEND_RESUME;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Binding by port alone would listen on every address: always give the address. The
     * limits keep slow or hostile clients from holding the master: few connections, each
     * with a small memory budget and an idle timeout. No MHD_OPTION_LISTENING_ADDRESS_REUSE:
     * it sets SO_REUSEPORT, which lets a second instance bind the same port and take half
     * the scrapes; without it libmicrohttpd sets SO_REUSEADDR only, so that a restart can
     * bind again at once. */
    h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, answer, h,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)MHD_CONNS_MAX,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)PER_ADDRESS_MAX,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (h->d == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not an address of this host)", host, port);
        free(h->token);
        free(h);
        return NULL;
    }
    return h;
}

int httpd_set_token(struct httpd *h, const char *token)
{
    if (h->token) {
        explicit_bzero(h->token, strlen(h->token));
        free(h->token);
    }
    h->token = token ? xstrdup(token) : NULL;
    return 0;
}

bool httpd_host_is_loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) ||
               (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return false;
}

int httpd_fd(struct httpd *h)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

long httpd_timeout_ms(struct httpd *h)
{
    MHD_UNSIGNED_LONG_LONG t;
    long ms = MHD_get_timeout(h->d, &t) == MHD_YES ? (t > 60000 ? 60000 : (long)t) : -1;
    if (h->conns && (ms < 0 || ms > 1000))
        ms = 1000;          /* come back to check the request deadlines */
    return ms;
}

void httpd_run(struct httpd *h)
{
    MHD_run(h->d);
    /* Shut down connections that have not sent a whole request within the deadline:
     * libmicrohttpd sees the socket end and closes the connection on its next run. */
    long long now = clock_mono_ms();
    for (struct conn *c = h->conns; c; c = c->next)
        if (c->fd >= 0 && !c->waiting && now - c->since_ms > REQUEST_DEADLINE_MS) {
            shutdown(c->fd, SHUT_RDWR);
            c->fd = -1;
            h->cut = true;
        }
    if (h->cut) {
        h->cut = false;
        MHD_run(h->d);
    }
}

void httpd_close(struct httpd *h)
{
    if (h == NULL)
        return;
    /* libmicrohttpd 0.9.75 must not be stopped with suspended connections: answer them. */
    while (h->waiting) {
        static const char gone[] = "the listener closed\n";
        httpd_resume(h, h->waiting->id, 503, "text/plain; charset=utf-8", gone, sizeof gone - 1);
    }
    MHD_stop_daemon(h->d);
    while (h->conns) {
        struct conn *c = h->conns;
        h->conns = c->next;
        free(c);
    }
    if (h->token) {
        explicit_bzero(h->token, strlen(h->token));
        free(h->token);
    }
    free(h);
}
