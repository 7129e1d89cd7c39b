/* httpd.h: the master's HTTP endpoint, libmicrohttpd in external mode with epoll (0.9.75 has
 * no thread-free internal mode): one descriptor goes into the master's poll loop and
 * httpd_run() does the work when it is ready or its timeout is due. No threads. */
#ifndef SF_HTTPD_H
#define SF_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

struct httpd;
/* One request, valid during the call of req_fn (its strings too). */
struct httpd_req;

#define HTTPD_PASS (-1)         /* req_fn: not mine, fn answers (GET and HEAD only) */
#define HTTPD_SUSPENDED 0       /* req_fn: the answer comes later, by httpd_resume() */

/* fn answers one GET: fills body and *content_type, returns the HTTP status. query_pool is the
 * ?pool= argument or NULL. req_fn (may be NULL) sees every request first, any method and
 * with its body (up to 64 KiB; more is 413), after the token check: it answers as fn does,
 * or returns HTTPD_PASS or HTTPD_SUSPENDED. content_type must be a string constant. */
struct httpd_route {
    int (*fn)(void *arg, const char *path, const char *query_pool, struct buf *body,
              const char **content_type);
    int (*req_fn)(void *arg, struct httpd_req *req, struct buf *body, const char **content_type);
    void *arg;
};

const char *httpd_req_method(const struct httpd_req *req);
const char *httpd_req_path(const struct httpd_req *req);
/* The query argument name (?name=value, decoded), or NULL. */
const char *httpd_req_arg(const struct httpd_req *req, const char *name);
/* The request header name (any case), or NULL. */
const char *httpd_req_header(const struct httpd_req *req, const char *name);
/* The request's body (NUL-terminated is not promised: use *len). */
const char *httpd_req_body(const struct httpd_req *req, size_t *len);
/* The methods a 405 answer names in its Allow header (a string constant; default "GET, HEAD"). */
void httpd_req_set_allow(struct httpd_req *req, const char *allow);
/* What names a suspended request for httpd_resume(); never reused. */
unsigned long long httpd_req_id(const struct httpd_req *req);
/* Answer the suspended request id with status, content type (a string constant) and body
 * (copied). Returns -1 when there is no such request (it was answered on httpd_close()). */
int httpd_resume(struct httpd *h, unsigned long long id, int status, const char *content_type, const char *body,
                 size_t len);

/* Listen on host:port (numeric address; loopback by default in the config). With token, every
 * path but /livez needs "Authorization: Bearer <token>" (scheme in any case; else 401). The
 * port is bound without SO_REUSEPORT: a second process cannot share it. Returns NULL with err
 * filled when it cannot. */
struct httpd *httpd_open(const char *host, int port, const char *token, struct httpd_route route, char *err,
                         size_t errlen);
/* Require token from now on (NULL: none), on the same listening socket. Copies it. */
int httpd_set_token(struct httpd *h, const char *token);
/* Whether the numeric address host is a loopback address (127.0.0.0/8, ::1, ::ffff:127.x). */
bool httpd_host_is_loopback(const char *host);
int httpd_fd(struct httpd *h);
/* Milliseconds until httpd_run() must be called even if nothing is ready, or -1. */
long httpd_timeout_ms(struct httpd *h);
void httpd_run(struct httpd *h);
/* Suspended requests are answered 503 first. */
void httpd_close(struct httpd *h);

#endif
