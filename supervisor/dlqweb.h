/* dlqweb.h: the dead letters on the web (GET /dlq, /dlq.json, /dlq/letter.json; POST
 * /dlq/replay, /dlq/purge). The master never waits on Redis, and the dead-letter functions
 * (supervisor/dlq.c) do: each request runs in a short-lived child forked here, with a blocking
 * connection of its own, and writes its answer to a pipe that the master's loop reads; the
 * HTTP request stays suspended meanwhile. At most DLQWEB_CHILDREN run at once (503 beyond),
 * each for at most DLQWEB_DEADLINE_MS (then killed: 504). */
#ifndef SF_DLQWEB_H
#define SF_DLQWEB_H

#include <poll.h>

#include "common/buf.h"
#include "common/conf.h"
#include "supervisor/httpd.h"

#define DLQWEB_CHILDREN 2
#define DLQWEB_DEADLINE_MS 10000

struct dlqweb;

/* Caller owns the result; free with dlqweb_free(), which kills the children still running. */
struct dlqweb *dlqweb_open(void);
void dlqweb_free(struct dlqweb *w);
/* An httpd_route req_fn for the config c in force: answers the /dlq paths (HTTPD_SUSPENDED
 * while a child works on it), HTTPD_PASS for the others. Writing needs the token of c's
 * admin_token_file in the X-Streamfleet-Admin header (else 403). */
int dlqweb_request(struct dlqweb *w, const struct conf *c, struct httpd_req *req, struct buf *body,
                   const char **content_type);
/* The pipes of the running children, at most DLQWEB_CHILDREN, into pfd; returns how many. */
int dlqweb_fds(struct dlqweb *w, struct pollfd *pfd);
/* Read what the children wrote; answer the requests of those done (on h) or past their
 * deadline (killed). The children themselves are reaped by procs_reap()'s waitpid(-1). */
void dlqweb_run(struct dlqweb *w, struct httpd *h, long long now_ms);
/* Milliseconds until the next deadline, or -1. */
long dlqweb_timeout_ms(struct dlqweb *w, long long now_ms);

#endif
