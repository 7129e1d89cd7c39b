/* httpd.h: the master's HTTP endpoint, libmicrohttpd in external mode with epoll (0.9.75 has
 * no thread-free internal mode): one descriptor goes into the master's poll loop and
 * httpd_run() does the work when it is ready or its timeout is due. No threads. */
#ifndef SF_HTTPD_H
#define SF_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

struct httpd;

/* Answers one GET: fills body and *content_type, returns the HTTP status. query_pool is the
 * ?pool= argument or NULL. */
struct httpd_route {
    int (*fn)(void *arg, const char *path, const char *query_pool, struct buf *body,
              const char **content_type);
    void *arg;
};

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
void httpd_close(struct httpd *h);

#endif
