/* deliver.h: many HTTP requests in flight from one single-threaded process, through libcurl's
 * multi_socket interface. The only file that includes libcurl is deliver.c.
 *
 * The caller owns the event loop: deliver_fds() says which sockets to poll and for how long,
 * deliver_run() hands back what poll() found and reports every finished request through the
 * done callback. Connections are kept alive in the one multi handle and reused; easy handles
 * are reused from a free list. Redirects are never followed. */
#ifndef SF_DELIVER_H
#define SF_DELIVER_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

struct deliver;

struct deliver_conf {
    const char *method;             /* "POST", "PUT" or "PATCH" */
    long connect_timeout_ms;
    long timeout_ms;                /* the whole request, connection included */
    const char *tls_ca;             /* NULL: the system's CAs */
    const char *tls_cert, *tls_key; /* both or neither: mutual TLS */
    bool tls_verify;                /* false: no peer or host name verification */
    unsigned max_connections;       /* per host, and the size of the connection cache */
    const char *user_agent;
};

/* How one request ended. Valid during the done callback only. */
struct deliver_result {
    int code;                       /* libcurl's CURLcode: 0 when an HTTP answer came */
    long status;                    /* HTTP status, 0 when none was received */
    double seconds;                 /* the request's total time */
    const char *retry_after;        /* the answer's Retry-After value, or NULL */
    const char *error;              /* libcurl's explanation when code != 0, else "" */
};

/* Initialise libcurl (in the child: never in the master) and build the multi handle. The
 * strings of conf must outlive the handle. done(arg, user, result) is called once for each
 * request started with deliver_start(), from deliver_run(); it may start new requests.
 * Caller owns the result; free with deliver_free(). Returns NULL with the reason in err. */
struct deliver *deliver_open(const struct deliver_conf *conf,
                             void (*done)(void *arg, void *user, const struct deliver_result *r),
                             void *arg, char *err, size_t errlen);
/* Abort what is in flight (without calling done), close every connection, free everything. */
void deliver_free(struct deliver *d);

/* Start a request: headers[0..nheaders) are "Name: value" lines (copied); body[0..len) is
 * borrowed and must stay unchanged until done is called for user. Returns 0, or -1 with the
 * reason in err (done will not be called). */
int deliver_start(struct deliver *d, const char *url, const char *const *headers, size_t nheaders,
                  const void *body, size_t len, void *user, char *err, size_t errlen);

/* Add the sockets to poll to pfd (at most max) and lower *timeout_ms to libcurl's next
 * deadline. Returns how many were added. */
int deliver_fds(struct deliver *d, struct pollfd *pfd, int max, long *timeout_ms);
/* Act on what poll() found (pfd[0..n) as deliver_fds() filled them, with revents) and on an
 * expired deadline, then report finished requests. Call it every loop turn. */
void deliver_run(struct deliver *d, const struct pollfd *pfd, int n);
/* Requests started and not yet reported. */
unsigned deliver_active(const struct deliver *d);

#endif
