/* redis.h: our Redis client, the only code that includes hiredis (for its command formatter
 * and its reply parser) and, for Redis, OpenSSL. All I/O is ours and non-blocking: the owner
 * puts redis_fd()/redis_events() into its poll() with redis_timeout_ms(), and calls
 * redis_run() after every poll. Commands are pipelined: each queued command has a reply
 * callback and a deadline, and replies are dispatched in order. A connection that fails, or a
 * command that misses its deadline (a frozen server), drops the connection: every queued
 * command then gets an error reply, exactly once, and the client reconnects after a capped,
 * jittered backoff. On every connect it sends AUTH, SELECT and CLIENT SETNAME first.
 *
 * With redis-sentinel:// the client asks the sentinels for the master's address inside its
 * connect, checks ROLE, and asks again on every reconnect, when the master answers READONLY
 * and when the sentinel that answered publishes +switch-master (it stays subscribed): the
 * connection is then dropped. redis_fd() is then an epoll descriptor over the connections
 * (POLLIN is all it takes): ask redis_fd() anew before every poll, as always.
 *
 * With redis-cluster:// the client learns the slot map from the seeds (CLUSTER SLOTS), routes
 * each command to the master of its key's slot (one connection per node, pipelined), follows
 * MOVED and ASK, retries TRYAGAIN and CLUSTERDOWN within the command's deadline, and after a
 * failover asks the map again and waits, within the deadline, for the promoted replica.
 * redis_fd() is then an epoll descriptor over the node connections (POLLIN). A MULTI..EXEC
 * group goes whole to the node of its first key: its keys must share a slot (a hash tag).
 *
 * redis_call() is a blocking helper for the short-lived command-line tools, on the same code.
 *
 * Not thread-safe. A connection is never shared across fork(): open it after the fork. */
#ifndef SF_REDIS_H
#define SF_REDIS_H

#include <stdbool.h>
#include <stddef.h>

#include "common/conf.h"

enum redis_type {
    REDIS_T_STRING = 1,
    REDIS_T_ARRAY,
    REDIS_T_INTEGER,
    REDIS_T_NIL,
    REDIS_T_STATUS,
    REDIS_T_ERROR,
};

/* What went wrong, for a reply of type REDIS_T_ERROR: the first group is ours (the command may
 * or may not have run), the second classifies the server's error reply by its prefix. */
enum redis_errkind {
    REDIS_E_NONE = 0,
    REDIS_E_IO,          /* connection failed or dropped before the reply came */
    REDIS_E_TIMEOUT,     /* no reply by the command's deadline; the connection was dropped */
    REDIS_E_TOOBIG,      /* the reply outgrew the client's max_reply_bytes; connection dropped */
    REDIS_E_PROTO,       /* the server sent something that is not RESP; connection dropped */
    REDIS_E_AUTH,        /* NOAUTH, WRONGPASS, NOPERM, or AUTH refused at connect */
    REDIS_E_NOGROUP,
    REDIS_E_WRONGTYPE,
    REDIS_E_OOM,
    REDIS_E_BUSYGROUP,
    REDIS_E_READONLY,
    REDIS_E_NOSCRIPT,
    REDIS_E_OTHER,
};

/* A reply, as the callback sees it. It lives in the client's reply arena and is valid only
 * during the callback: copy out what you keep (or redis_reply_dup() it). */
struct redis_reply {
    enum redis_type type;
    enum redis_errkind err;     /* REDIS_T_ERROR only */
    long long integer;          /* REDIS_T_INTEGER */
    const char *str;            /* STRING, STATUS, ERROR: NUL-terminated (may hold NULs) */
    size_t len;
    size_t elements;            /* REDIS_T_ARRAY */
    struct redis_reply **element;
};

/* Called once per command with its reply (never NULL; a failure is a REDIS_T_ERROR reply).
 * It may queue new commands; it must not free the client. */
typedef void redis_cb(void *arg, const struct redis_reply *reply);

struct redis_opts {
    long connect_timeout_ms;    /* TCP connect plus TLS handshake; 0: 2000 */
    long backoff_min_ms;        /* reconnect delays: 0: 250 */
    long backoff_max_ms;        /* 0: 5000 */
    size_t max_reply_bytes;     /* one reply's bytes as the server sent them; 0: no bound */
    const char *client_name;    /* CLIENT SETNAME; NULL: none (copied) */
    bool no_reconnect;          /* a failed connection stays closed (the blocking helper) */
};

struct redis;

/* A client for a (copied: a may be freed after) that starts connecting at once. Never NULL. */
struct redis *redis_open(const struct redis_addr *a, const struct redis_opts *o);
/* Close and free; queued commands are dropped without their callbacks. */
void redis_free(struct redis *r);

/* The descriptor to poll, or -1 when there is none (waiting to reconnect, or closed). It may
 * change from one redis_run() to the next. */
int redis_fd(const struct redis *r);
/* POLLIN and/or POLLOUT, as the client wants them now. */
short redis_events(const struct redis *r);
/* Milliseconds until redis_run() is due without I/O (connect or command deadline, reconnect);
 * -1 when nothing is due. now: CLOCK_MONOTONIC milliseconds, as redis_now_ms(). */
long redis_timeout_ms(const struct redis *r, long long now);
/* Do all the work that can be done without blocking: connect and TLS handshake progress,
 * write, read, dispatch replies, fire deadlines, reconnect. revents: of redis_fd(), or 0. */
void redis_run(struct redis *r, short revents, long long now);
long long redis_now_ms(void);

/* Queue a command (binary-safe argv, copied) whose reply goes to cb(arg, reply) within
 * timeout_ms. While connecting it waits behind the handshake. Returns -1 when there is no
 * connection (waiting to reconnect, or closed): redis_error() says why; cb is not called. */
int redis_command(struct redis *r, int argc, const char **argv, const size_t *argvlen, redis_cb *cb,
                  void *arg, long timeout_ms);
/* The same with C strings, NULL-terminated. */
int redis_commandv(struct redis *r, redis_cb *cb, void *arg, long timeout_ms, ...);

/* Change the bound on one reply's buffered bytes (0: none) from the next read on. */
void redis_set_max_reply_bytes(struct redis *r, size_t max_reply_bytes);
/* Connected, and the connect-time commands answered. */
bool redis_ready(const struct redis *r);
/* How many times a connection was dropped so far: a change tells the owner that what it
 * learnt on the connection (CONFIG, CLIENT ID) must be asked again, even when no command of its
 * was queued to see the drop. */
unsigned redis_drops(const struct redis *r);
/* Why the last connection failed or dropped ("" when none did); never holds the password. */
const char *redis_error(const struct redis *r);
enum redis_errkind redis_error_kind(const struct redis *r);
/* Commands queued and not yet answered. */
size_t redis_pending(const struct redis *r);

/* Blocking helper for the command-line tools: connect and run the connect-time commands within
 * timeout_ms. Returns NULL with err filled when that fails. Free with redis_free(). */
struct redis *redis_connect_blocking(const struct redis_addr *a, long timeout_ms, char *err, size_t errlen);
/* Run one command and wait for its reply, at most timeout_ms. Never NULL: a failure is a
 * REDIS_T_ERROR reply. Caller owns the result; free with redis_reply_free(). */
struct redis_reply *redis_call(struct redis *r, int argc, const char **argv, const size_t *argvlen,
                               long timeout_ms);
/* The same with C strings, NULL-terminated. */
struct redis_reply *redis_callv(struct redis *r, long timeout_ms, ...);

/* A deep copy on the heap. Caller owns the result; free with redis_reply_free(). */
struct redis_reply *redis_reply_dup(const struct redis_reply *v);
void redis_reply_free(struct redis_reply *v);
/* The element of a [key, value, key, value...] array whose key is the string key, or NULL. */
const struct redis_reply *redis_reply_map_get(const struct redis_reply *v, const char *key);

/* What the cluster clients of this process met so far (a process-wide sum: a worker's own,
 * once it subtracts what it inherited at fork): redirections and map refreshes. */
struct redis_cluster_counts {
    unsigned long long moved, ask, refreshes;
};
void redis_cluster_counts(struct redis_cluster_counts *out);

/* A sentinel's answer to SENTINEL get-master-addr-by-name ([host, port], bytes from the
 * network): 0 with host (NUL-terminated) and port filled, or -1 when it is not a plausible one
 * (nil: the sentinel does not know the master). */
int redis_sentinel_addr(const struct redis_reply *v, char *host, size_t hostlen, int *port);

/* The kind of a server error reply, from its first word ("NOGROUP No such key..."). */
enum redis_errkind redis_classify(const char *str, size_t len);
const char *redis_errkind_name(enum redis_errkind k);

/* The read path alone, for the fuzzer and unit tests: feed raw bytes from the server to a
 * client that has n commands outstanding (as if sent), dispatching replies to cb. Returns the
 * number of replies dispatched, or -1 once the input was rejected (the commands still queued
 * got their error replies). */
struct redis *redis_open_detached(size_t max_reply_bytes);
int redis_feed_detached(struct redis *r, const char *data, size_t len, size_t n, redis_cb *cb, void *arg);

#endif
