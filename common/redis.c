/* redis.c: our Redis client. hiredis 0.14 gives us two pure pieces, the command formatter
 * (redisFormatCommandArgv, and its sds form for the owner's commands) and the reply parser
 * (redisReader); the socket, TLS (OpenSSL), pipelining, deadlines and reconnects are ours, so
 * nothing here ever blocks (but the name lookup of a host name: getaddrinfo has no
 * non-blocking form; numeric addresses and unix sockets never wait).
 *
 * A connection's life: WAIT (backoff) -> [SENTINEL] -> CONNECTING (non-blocking connect, each
 * address in turn) -> TLS (handshake, SSL_ERROR_WANT_READ/WRITE) -> UP. Any failure goes through
 * conn_drop(), the one place that closes the socket, fails every queued command exactly once
 * and schedules the next attempt.
 *
 * With redis-sentinel:// the SENTINEL step comes first: a client of our own kind (plain,
 * no_reconnect) on one sentinel at a time asks SENTINEL get-master-addr-by-name, and the
 * answer becomes the address of CONNECTING. ROLE is the last connect-time command: a replica
 * (sentinel's answer was stale) is no master of ours. Until ROLE has said "master", the owner's
 * commands wait in `held`, unsent; a connection that fails before then goes back to asking,
 * on the same sentinel connection, after a short pause, for as long as the connect timeout
 * allows: a failover is a few seconds of "refused" and stale answers, ridden out inside one
 * connect. READONLY on a connection that was a master ends it, and so does +switch-master on
 * the watch (the sentinel that answered, kept and subscribed): the next connect asks again.
 * The owner polls the data connection and the watch as one epoll descriptor.
 *
 * Replies are built by our reply-object functions in an arena that is reset once the reply's
 * callback has returned. */
#include "common/redis.h"
#include "common/arena.h"
#include "common/backoff.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/cluster.h"
#include "common/log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECT_MS 2000
#define DEFAULT_BACKOFF_MIN_MS 250
#define DEFAULT_BACKOFF_MAX_MS 5000
/* One read takes up to 64 KiB, so a reply of a batch of 100 entries comes in one system call
 * (hiredis 0.14 reads 16 KiB at a time). A TLS read returns one record: 16 KiB at most. */
#define READ_CHUNK 65536
#define TLS_RECORD_MAX 16384
/* An array header asks us to allocate its element pointers before any element arrives: with
 * no byte bound set, this caps what a hostile or broken server can make us allocate. */
#define ARRAY_BYTES_MAX ((size_t)512 * 1024 * 1024)
#define ARGV_MAX 64
/* Asking one sentinel: at most this long (or the connect timeout, when shorter). */
#define SENTINEL_ASK_MS 1000
/* Between a master that failed us and asking the sentinel again: a failover is slow (seconds),
 * asking in a tight loop would only burn CPU. */
#define SENTINEL_PAUSE_MS 150

enum state { ST_CLOSED, ST_WAIT, ST_SENTINEL, ST_CONNECTING, ST_TLS, ST_UP, ST_DETACHED };

struct cmd {
    redis_cb *cb;
    void *arg;
    long long deadline;
    long timeout_ms;
};

struct redis {
    struct redis_addr addr;         /* our copy; the password is wiped on free */
    struct redis_opts opts;
    char *client_name;
    enum state state;
    int fd;
    struct addrinfo *ai, *ai_next;  /* the addresses of a host, tried in turn */
    int last_errno;
    SSL_CTX *ctx;
    SSL *ssl;
    short tls_want;                 /* POLLIN or POLLOUT, during the handshake */
    long long connect_deadline;
    long long next_connect;
    long long attempt;              /* failed connections in a row */
    uint64_t rng;                   /* for the backoff's jitter (xorshift64) */
    unsigned gen;                   /* bumped by each drop: a dispatch loop stops on a change */
    redisReader *reader;
    struct arena arena;
    bool toobig;                    /* an array header alone broke the bound */
    size_t raw;                     /* bytes of the reply being read that the reader consumed */
    struct buf out;                 /* formatted commands not yet written */
    size_t out_off;
    bool out_secret;                /* out has held AUTH's password since it was last wiped */
    struct cmd *q;                  /* commands awaiting a reply, oldest at q[qhead] */
    size_t qhead, qlen, qcap;
    size_t setup_left;              /* connect-time commands not yet answered */
    bool got_reply;                 /* on this connection */
    char error[320];
    enum redis_errkind error_kind;

    /* redis-sentinel:// only (addr.sentinel_master set); addr.host and port are the answer. */
    struct redis *sen;              /* our client on the sentinel being asked, during a round */
    size_t sen_next;                /* the sentinel to ask next; a round starts with the last
                                     * one that answered */
    size_t sen_left;                /* sentinels not yet opened in this round */
    size_t sen_node;                /* the one sen is connected to */
    bool sen_asked;                 /* a question is out on sen */
    int sen_answer;                 /* 1: sen_host/sen_port hold an answer; -1: it failed */
    char sen_host[256];
    int sen_port;
    char *sen_password;             /* read from sentinel_password_file each round; wiped */
    long long sen_retry_at;         /* ask again then (0: not pausing) */
    long long resolve_deadline;     /* the round gives up then */
    enum redis_errkind sen_kind;    /* of the last failure in the round */
    char sen_why[320];              /* the last failure in the round */
    struct buf held;                /* the owner's commands, formatted, until ROLE said master */
    struct redis *watch;            /* the sentinel that answered, subscribed to +switch-master,
                                     * while the data connection is ours */
    /* Under sentinel the owner polls one descriptor for two connections (the data one, or the
     * sentinel being asked, and the watch): an epoll set, level-triggered, of both. */
    int epfd;
    int ep_fd[2];                   /* what is registered: [0] data or sentinel, [1] watch */
    bool switched;                  /* it said our master moved: drop the data connection */
    char switch_why[256];
    /* On a subscribed connection (watch): the replies no command asked for, the messages. */
    redis_cb *push_cb;
    void *push_arg;
    bool was_up;                    /* reached ST_UP once: a command queued may have gone out */

    /* redis-cluster:// only (addr.cluster): the nodes, the slot map and the owner's commands,
     * each routed to a node's connection (a plain client of ours). See "the cluster" below. */
    struct cl_node *nodes;
    size_t nnodes;
    int *slot_node;                 /* CLUSTER_SLOTS entries: an index in nodes, -1: unknown */
    bool have_map;
    bool refreshing;                /* a CLUSTER SLOTS is out, to refresh_node */
    int refresh_result;             /* its answer, for cl_run: 1 taken, -1 failed, 0 none */
    size_t refresh_node, refresh_next, refresh_tried;
    long long refresh_at;           /* ask again then (0: not due) */
    struct ccmd *cl_head, *cl_tail; /* the owner's commands, oldest first */
    size_t ncl;
    unsigned txn_seq, txn_open;     /* MULTI..EXEC groups (txn_open: the one being queued) */
    char cl_why[320];               /* the last node failure, for a command that times out */
};

static void conn_drop(struct redis *r, enum redis_errkind kind, const char *why);

long long redis_now_ms(void)
{
    return clock_mono_ms();
}

/* ---- error classification ---- */

enum redis_errkind redis_classify(const char *s, size_t len)
{
    static const struct {
        const char *prefix;
        enum redis_errkind kind;
    } known[] = {
        { "NOGROUP", REDIS_E_NOGROUP },     { "WRONGTYPE", REDIS_E_WRONGTYPE },
        { "OOM", REDIS_E_OOM },             { "BUSYGROUP", REDIS_E_BUSYGROUP },
        { "READONLY", REDIS_E_READONLY },   { "NOAUTH", REDIS_E_AUTH },
        { "WRONGPASS", REDIS_E_AUTH },      { "NOPERM", REDIS_E_AUTH },
        { "NOSCRIPT", REDIS_E_NOSCRIPT },
    };
    size_t word = 0;
    while (word < len && s[word] != ' ')
        word++;
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strlen(known[i].prefix) == word && memcmp(s, known[i].prefix, word) == 0)
            return known[i].kind;
    /* Redis < 6 answers a wrong password with a plain ERR. */
    if (len >= 20 && memcmp(s, "ERR invalid password", 20) == 0)
        return REDIS_E_AUTH;
    return REDIS_E_OTHER;
}

const char *redis_errkind_name(enum redis_errkind k)
{
    static const char *const names[] = {
        [REDIS_E_NONE] = "none",           [REDIS_E_IO] = "io",
        [REDIS_E_TIMEOUT] = "timeout",     [REDIS_E_TOOBIG] = "toobig",
        [REDIS_E_PROTO] = "protocol",      [REDIS_E_AUTH] = "auth",
        [REDIS_E_NOGROUP] = "nogroup",     [REDIS_E_WRONGTYPE] = "wrongtype",
        [REDIS_E_OOM] = "oom",             [REDIS_E_BUSYGROUP] = "busygroup",
        [REDIS_E_READONLY] = "readonly",   [REDIS_E_NOSCRIPT] = "noscript",
        [REDIS_E_OTHER] = "other",
    };
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "other";
}

/* ---- replies: hiredis's reader builds our struct redis_reply in the arena ---- */

/* hiredis 0.14 copies the reader's privdata into every read task, so each object function
 * finds its client; an element is linked into its parent as it is made. */
static struct redis_reply *reply_new(const redisReadTask *task, enum redis_type type)
{
    struct redis *r = task->privdata;
    struct redis_reply *v = arena_alloc(&r->arena, sizeof *v);
    v->type = type;
    if (task->parent) {
        struct redis_reply *parent = task->parent->obj;
        if (parent && task->idx >= 0 && (size_t)task->idx < parent->elements)
            parent->element[task->idx] = v;
    }
    return v;
}

static void *reply_string(const redisReadTask *task, char *s, size_t len)
{
    enum redis_type t = task->type == REDIS_REPLY_ERROR    ? REDIS_T_ERROR
                        : task->type == REDIS_REPLY_STATUS ? REDIS_T_STATUS
                                                           : REDIS_T_STRING;
    struct redis *r = task->privdata;
    struct redis_reply *v = reply_new(task, t);
    v->str = arena_strndup(&r->arena, s, len);
    v->len = len;
    if (t == REDIS_T_ERROR)
        v->err = redis_classify(s, len);
    return v;
}

static void *reply_array(const redisReadTask *task, int elements)
{
    struct redis *r = task->privdata;
    size_t n = elements > 0 ? (size_t)elements : 0;
    /* With a bound, the header may not announce more element slots than it allows (the bytes
     * themselves are counted in dispatch()); without one, what the objects take is capped. */
    size_t bound = r->opts.max_reply_bytes ? r->opts.max_reply_bytes : ARRAY_BYTES_MAX;
    if (n > bound / sizeof(struct redis_reply *) ||
        (!r->opts.max_reply_bytes && r->arena.used + n * sizeof(struct redis_reply *) > bound)) {
        r->toobig = true;
        return NULL;                /* the reader fails with an out-of-memory error */
    }
    struct redis_reply *v = reply_new(task, REDIS_T_ARRAY);
    v->elements = n;
    v->element = n ? arena_alloc(&r->arena, n * sizeof *v->element) : NULL;
    return v;
}

static void *reply_integer(const redisReadTask *task, long long value)
{
    struct redis_reply *v = reply_new(task, REDIS_T_INTEGER);
    v->integer = value;
    return v;
}

static void *reply_nil(const redisReadTask *task)
{
    return reply_new(task, REDIS_T_NIL);
}

/* The arena frees everything at once: hiredis's calls to free one object are no-ops. */
static void reply_free_noop(void *obj)
{
    (void)obj;
}

static redisReplyObjectFunctions reply_fns = {
    reply_string, reply_array, reply_integer, reply_nil, reply_free_noop,
};

static void reader_reset(struct redis *r)
{
    if (r->reader)
        redisReaderFree(r->reader);
    r->reader = redisReaderCreateWithFunctions(&reply_fns);
    if (r->reader == NULL)
        fatal("out of memory");
    r->reader->privdata = r;
    arena_reset(&r->arena);
    r->toobig = false;
    r->raw = 0;
}

struct redis_reply *redis_reply_dup(const struct redis_reply *v)
{
    struct redis_reply *d = xcalloc(1, sizeof *d);
    *d = *v;
    d->str = NULL;
    d->element = NULL;
    if (v->str) {
        char *s = xmalloc(v->len + 1);
        memcpy(s, v->str, v->len);
        s[v->len] = '\0';
        d->str = s;
    }
    if (v->elements) {
        d->element = xcalloc(v->elements, sizeof *d->element);
        for (size_t i = 0; i < v->elements; i++)
            d->element[i] = v->element[i] ? redis_reply_dup(v->element[i]) : NULL;
    }
    return d;
}

void redis_reply_free(struct redis_reply *v)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < v->elements; i++)
        redis_reply_free(v->element[i]);
    free(v->element);
    free((char *)v->str);
    free(v);
}

const struct redis_reply *redis_reply_map_get(const struct redis_reply *v, const char *key)
{
    size_t klen = strlen(key);
    for (size_t i = 0; v->type == REDIS_T_ARRAY && i + 1 < v->elements; i += 2) {
        const struct redis_reply *k = v->element[i];
        if (k && k->type == REDIS_T_STRING && k->len == klen && memcmp(k->str, key, klen) == 0)
            return v->element[i + 1];
    }
    return NULL;
}

/* ---- the command queue ---- */

static void queue_add(struct redis *r, struct cmd c)
{
    if (r->qhead + r->qlen == r->qcap) {
        if (r->qhead > 0) {
            memmove(r->q, r->q + r->qhead, r->qlen * sizeof *r->q);
            r->qhead = 0;
        } else {
            r->qcap = r->qcap ? r->qcap * 2 : 16;
            r->q = xrealloc(r->q, r->qcap * sizeof *r->q);
        }
    }
    r->q[r->qhead + r->qlen++] = c;
}

static void queue_push(struct redis *r, redis_cb *cb, void *arg, long timeout_ms)
{
    queue_add(r, (struct cmd){ cb, arg, redis_now_ms() + timeout_ms, timeout_ms });
}

static struct cmd queue_pop(struct redis *r)
{
    struct cmd c = r->q[r->qhead++];
    if (--r->qlen == 0)
        r->qhead = 0;
    return c;
}

static void fail_reply(struct redis_reply *v, enum redis_errkind kind, const char *text)
{
    memset(v, 0, sizeof *v);
    v->type = REDIS_T_ERROR;
    v->err = kind;
    v->str = text;
    v->len = strlen(text);
}

/* Every queued command gets its error reply, oldest first. The queue is emptied before the
 * first callback, so a callback that queues a command (refused: we are not connected) or
 * looks at redis_pending() sees the dropped state. */
static void queue_fail(struct redis *r, enum redis_errkind kind, const char *why)
{
    size_t n = r->qlen, head = r->qhead;
    struct cmd *q = r->q;
    r->q = NULL;
    r->qlen = r->qhead = r->qcap = 0;
    long long now = redis_now_ms();
    char other[sizeof r->error + 32];
    snprintf(other, sizeof other, "connection dropped: %s", why);
    for (size_t i = 0; i < n; i++) {
        const struct cmd *c = &q[head + i];
        struct redis_reply v;
        /* The command that timed out, or that the oversized or garbled reply was for, gets
         * that kind; the ones behind it only lost their connection. */
        if (kind == REDIS_E_TIMEOUT && c->deadline <= now)
            fail_reply(&v, REDIS_E_TIMEOUT, why);
        else if ((kind == REDIS_E_TOOBIG || kind == REDIS_E_PROTO) && i == 0)
            fail_reply(&v, kind, why);
        else if (kind == REDIS_E_TIMEOUT || kind == REDIS_E_TOOBIG || kind == REDIS_E_PROTO)
            fail_reply(&v, REDIS_E_IO, other);
        else
            fail_reply(&v, kind, why);
        if (c->cb)
            c->cb(c->arg, &v);
    }
    free(q);
}

/* ---- the socket and TLS ---- */

/* Empty the output buffer; the password of AUTH does not stay behind in the heap. */
static void out_reset(struct redis *r)
{
    if (r->out_secret && r->out.p)
        explicit_bzero(r->out.p, r->out.cap);
    r->out_secret = false;
    buf_reset(&r->out);
    r->out_off = 0;
}

/* Append to the output buffer. While it holds the password, growing it moves the bytes by
 * hand, so the old block is wiped before it is freed (realloc would not). */
static void out_add(struct redis *r, const char *p, size_t n)
{
    if (r->out_secret && r->out.len + n + 1 > r->out.cap) {
        struct buf nb = BUF_INIT;
        buf_grow(&nb, 2 * (r->out.len + n));
        buf_add(&nb, r->out.p, r->out.len);
        explicit_bzero(r->out.p, r->out.cap);
        buf_release(&r->out);
        r->out = nb;
    }
    buf_add(&r->out, p, n);
}

static void conn_close(struct redis *r)
{
    if (r->ssl) {
        SSL_free(r->ssl);
        r->ssl = NULL;
    }
    if (r->ctx) {
        SSL_CTX_free(r->ctx);
        r->ctx = NULL;
    }
    if (r->fd >= 0)
        close(r->fd);
    r->fd = -1;
    if (r->ai)
        freeaddrinfo(r->ai);
    r->ai = r->ai_next = NULL;
    out_reset(r);
    r->setup_left = 0;
}

static bool sentinel_retry(struct redis *r, enum redis_errkind kind, const char *why);
static void sentinel_end(struct redis *r);
static void sentinel_watch(struct redis *r);

/* One place where a connection ends: close, remember why, schedule the next attempt, then
 * fail what was queued (callbacks last, with the client already in its new state). Under
 * sentinel, a master that fails us before it was ours is only a reason to ask again. */
static void conn_drop(struct redis *r, enum redis_errkind kind, const char *why)
{
    if (sentinel_retry(r, kind, why))
        return;
    conn_close(r);
    sentinel_end(r);
    redis_free(r->watch);
    r->watch = NULL;
    r->switched = false;
    buf_reset(&r->held);
    r->gen++;
    snprintf(r->error, sizeof r->error, "%s", why);
    r->error_kind = kind;
    if (r->state == ST_DETACHED || r->opts.no_reconnect) {
        r->state = ST_CLOSED;
    } else {
        r->state = ST_WAIT;
        r->attempt++;
        /* Jitter, so that clients cut off together do not come back together. */
        r->rng ^= r->rng << 13, r->rng ^= r->rng >> 7, r->rng ^= r->rng << 17;
        long d = backoff_ms(BACKOFF_EXPONENTIAL, r->opts.backoff_min_ms, r->opts.backoff_max_ms, 20, r->attempt,
                            (double)(r->rng >> 11) / 9007199254740992.0);
        r->next_connect = redis_now_ms() + d;
    }
    char text[sizeof r->error];
    snprintf(text, sizeof text, "%s", r->error);
    queue_fail(r, kind, text);
}

/* The reason of the last TLS failure, with a hint at the likely cause. OpenSSL 3.0's reason
 * strings: a peer that speaks plain TCP gives "wrong version number" (or "packet length too
 * long"); a server that wants a client certificate we did not send gives "tlsv13 alert
 * certificate required", and only on the first read after the handshake (TLS 1.3). */
static void tls_reason(struct redis *r, const char *what, int sslerr, char *out, size_t len)
{
    /* Without verification OpenSSL still records what it found: not our reason then. */
    long v = r->ssl && r->addr.tls_verify ? SSL_get_verify_result(r->ssl) : X509_V_OK;
    if (v != X509_V_OK) {
        const char *hint = v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH
                               ? " (set redis_tls_server_name to a name in the server's certificate)"
                           : v == X509_V_ERR_CERT_HAS_EXPIRED ? ""
                                                              : " (is redis_tls_ca the CA that signed the server's certificate?)";
        snprintf(out, len, "tls: server certificate verify failed: %s%s", X509_verify_cert_error_string(v), hint);
        return;
    }
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    if (reason) {
        const char *hint = "";
        if (strstr(reason, "wrong version number") || strstr(reason, "packet length too long") ||
            strstr(reason, "record layer failure"))
            hint = " (does the server speak TLS on this port? use redis:// for a plain one)";
        else if (strstr(reason, "certificate required"))
            hint = " (the server wants a client certificate: set redis_tls_cert and redis_tls_key)";
        else if (strstr(reason, "alert"))
            hint = " (the server refused our client certificate)";
        snprintf(out, len, "tls: %s: %s%s", what, reason, hint);
    } else if (sslerr == SSL_ERROR_SYSCALL && errno) {
        snprintf(out, len, "tls: %s: %s", what, strerror(errno));
    } else {
        snprintf(out, len, "tls: %s: connection closed by the server%s", what,
                 r->state == ST_TLS ? " (does the server speak TLS on this port?)" : "");
    }
    ERR_clear_error();
}

/* A context per connection attempt: a CA or key file fixed on disk is read again on the next
 * attempt. The files were checked to exist when the config loaded; here they may fail anyway. */
static int tls_setup(struct redis *r)
{
    char why[sizeof r->error];
    const struct redis_addr *a = &r->addr;
    ERR_clear_error();
    r->ctx = SSL_CTX_new(TLS_client_method());
    if (r->ctx == NULL)
        fatal("out of memory");
    SSL_CTX_set_min_proto_version(r->ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(r->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(r->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    /* Read ahead: a read takes what the socket holds (up to a 64 KiB buffer), not a record's
     * header and then its body in two system calls. Bytes so buffered are invisible to
     * poll(): read_all() and redis_run() read on while SSL_has_pending() says so. */
    SSL_CTX_set_read_ahead(r->ctx, 1);
    SSL_CTX_set_default_read_buffer_len(r->ctx, READ_CHUNK);
    if (a->tls_verify) {
        SSL_CTX_set_verify(r->ctx, SSL_VERIFY_PEER, NULL);
        int ok = a->tls_ca ? SSL_CTX_load_verify_locations(r->ctx, a->tls_ca, NULL)
                           : SSL_CTX_set_default_verify_paths(r->ctx);
        if (ok != 1) {
            unsigned long e = ERR_peek_last_error();
            snprintf(why, sizeof why, "tls: cannot load the CA file %s: %s", a->tls_ca ? a->tls_ca : "(system)",
                     e && ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unreadable");
            goto fail;
        }
    }
    if (a->tls_cert) {
        if (SSL_CTX_use_certificate_chain_file(r->ctx, a->tls_cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(r->ctx, a->tls_key ? a->tls_key : a->tls_cert, SSL_FILETYPE_PEM) != 1 ||
            SSL_CTX_check_private_key(r->ctx) != 1) {
            unsigned long e = ERR_peek_last_error();
            snprintf(why, sizeof why, "tls: cannot use the client certificate %s: %s", a->tls_cert,
                     e && ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unreadable");
            goto fail;
        }
    }
    r->ssl = SSL_new(r->ctx);
    if (r->ssl == NULL || SSL_set_fd(r->ssl, r->fd) != 1)
        fatal("out of memory");
    const char *name = a->tls_server_name ? a->tls_server_name : a->host;
    unsigned char ip[sizeof(struct in6_addr)];
    bool numeric = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (!numeric)
        SSL_set_tlsext_host_name(r->ssl, name);     /* SNI carries names only (RFC 6066) */
    if (a->tls_verify) {
        X509_VERIFY_PARAM *param = SSL_get0_param(r->ssl);
        int ok = numeric ? X509_VERIFY_PARAM_set1_ip_asc(param, name) : SSL_set1_host(r->ssl, name);
        if (ok != 1)
            fatal("out of memory");
    }
    ERR_clear_error();
    return 0;
fail:
    ERR_clear_error();
    conn_drop(r, REDIS_E_IO, why);
    return -1;
}

static redis_cb auth_cb, select_cb, setname_cb, role_cb;

/* Format one setup command into the output buffer and queue cb for its reply. secret: the
 * command holds the password (AUTH), so the buffer is wiped once it is sent, and the
 * formatted copy now. */
static void setup_push(struct redis *r, int argc, const char **argv, const size_t *len, redis_cb *cb,
                       bool secret)
{
    char *cmd = NULL;
    int n = redisFormatCommandArgv(&cmd, argc, argv, len);
    if (n < 0)
        fatal("out of memory");
    out_add(r, cmd, (size_t)n);
    if (secret) {
        r->out_secret = true;
        explicit_bzero(cmd, (size_t)n);
    }
    redisFreeCommand(cmd);
    queue_push(r, cb, r, r->opts.connect_timeout_ms);
    r->setup_left++;
}

/* What each connection says first, pipelined ahead of anything the owner queued (the owner's
 * commands, queued while we were resolving the master, move behind; their deadlines count
 * from now). */
static void queue_setup(struct redis *r)
{
    const struct redis_addr *a = &r->addr;
    char db[16];
    struct cmd *owner = r->q;
    size_t head = r->qhead, nowner = r->qlen;
    r->q = NULL;
    r->qhead = r->qlen = r->qcap = 0;
    if (a->password) {
        const char *argv[3] = { "AUTH", a->user ? a->user : a->password, a->password };
        size_t len[3] = { 4, strlen(argv[1]), strlen(argv[2]) };
        setup_push(r, a->user ? 3 : 2, argv, len, auth_cb, true);
    }
    if (a->db) {
        snprintf(db, sizeof db, "%d", a->db);
        const char *argv[2] = { "SELECT", db };
        size_t len[2] = { 6, strlen(db) };
        setup_push(r, 2, argv, len, select_cb, false);
    }
    if (r->client_name) {
        const char *argv[3] = { "CLIENT", "SETNAME", r->client_name };
        size_t len[3] = { 6, 7, strlen(r->client_name) };
        setup_push(r, 3, argv, len, setname_cb, false);
    }
    if (a->sentinel_master) {
        const char *argv[1] = { "ROLE" };
        size_t len[1] = { 4 };
        setup_push(r, 1, argv, len, role_cb, false);
    }
    long long now = redis_now_ms();
    for (size_t i = 0; i < nowner; i++) {
        struct cmd c = owner[head + i];
        c.deadline = now + c.timeout_ms;
        queue_add(r, c);
    }
    free(owner);
}

/* The replies to the connect-time commands. A failed AUTH or SELECT ends the connection (the
 * commands behind it would only get NOAUTH or run in the wrong database); a refused name is
 * no reason to refuse a server. */
static bool setup_answered(struct redis *r, const struct redis_reply *v)
{
    if (r->state != ST_UP)
        return false;               /* the connection is already gone (queue_fail) */
    if (r->setup_left)
        r->setup_left--;
    return v->type == REDIS_T_ERROR;
}

static void auth_cb(void *arg, const struct redis_reply *v)
{
    struct redis *r = arg;
    if (setup_answered(r, v)) {
        char why[sizeof r->error];
        snprintf(why, sizeof why, "redis refused our credentials: %.200s", v->str);
        conn_drop(r, REDIS_E_AUTH, why);
    }
}

static void select_cb(void *arg, const struct redis_reply *v)
{
    struct redis *r = arg;
    if (setup_answered(r, v)) {
        char why[sizeof r->error];
        snprintf(why, sizeof why, "select db %d: %.200s", r->addr.db, v->str);
        conn_drop(r, REDIS_E_OTHER, why);
    }
}

static void setname_cb(void *arg, const struct redis_reply *v)
{
    setup_answered(arg, v);
}

/* The last connect-time command under sentinel. A replica is refused (the failure is one that
 * sends us back to the sentinels); an error (an ACL without ROLE) is no proof either way: the
 * sentinel's word stands, and READONLY would tell us later. */
static void role_cb(void *arg, const struct redis_reply *v)
{
    struct redis *r = arg;
    if (r->state != ST_UP)
        return;
    setup_answered(r, v);
    if (v->type == REDIS_T_ARRAY && v->elements > 0 && v->element[0] && v->element[0]->type == REDIS_T_STRING &&
        strcmp(v->element[0]->str, "master") != 0) {
        char why[sizeof r->error];
        snprintf(why, sizeof why, "sentinel named %s:%d as master '%s', but it is a %.20s", r->addr.host,
                 r->addr.port, r->addr.sentinel_master, v->element[0]->str);
        conn_drop(r, REDIS_E_IO, why);
        return;
    }
    /* Ours: the owner's commands go now, behind what is still unwritten. */
    long long now = redis_now_ms();
    for (size_t i = 0; i < r->qlen; i++)
        r->q[r->qhead + i].deadline = now + r->q[r->qhead + i].timeout_ms;
    if (r->held.len)
        out_add(r, r->held.p, r->held.len);
    buf_reset(&r->held);
    sentinel_watch(r);
}

static void conn_up(struct redis *r)
{
    r->state = ST_UP;
    r->was_up = true;
}

static void tls_step(struct redis *r)
{
    ERR_clear_error();
    errno = 0;
    int rc = SSL_connect(r->ssl);
    if (rc == 1) {
        r->tls_want = 0;
        conn_up(r);
        return;
    }
    int e = SSL_get_error(r->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) {
        r->tls_want = POLLIN;
    } else if (e == SSL_ERROR_WANT_WRITE) {
        r->tls_want = POLLOUT;
    } else {
        char why[sizeof r->error];
        tls_reason(r, "handshake failed", e, why, sizeof why);
        conn_drop(r, REDIS_E_IO, why);
    }
}

static void connected(struct redis *r)
{
    int one = 1;
    if (r->addr.unix_path == NULL)
        setsockopt(r->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!r->addr.tls) {
        conn_up(r);
        return;
    }
    r->state = ST_TLS;
    if (tls_setup(r) == 0)
        tls_step(r);
}

/* Try the remaining addresses of the host until one connects or is in progress. */
static void connect_next(struct redis *r)
{
    while (r->ai_next) {
        struct addrinfo *ai = r->ai_next;
        r->ai_next = ai->ai_next;
        r->fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (r->fd == -1) {
            r->last_errno = errno;
            continue;
        }
        if (connect(r->fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            connected(r);
            return;
        }
        if (errno == EINPROGRESS)
            return;
        r->last_errno = errno;
        close(r->fd);
        r->fd = -1;
    }
    char why[sizeof r->error];
    snprintf(why, sizeof why, "cannot connect to %s:%d: %s", r->addr.host, r->addr.port, strerror(r->last_errno));
    conn_drop(r, REDIS_E_IO, why);
}

static void sentinel_start(struct redis *r);
static void data_start(struct redis *r);

static void conn_start(struct redis *r)
{
    if (r->addr.sentinel_master)
        sentinel_start(r);
    else
        data_start(r);
}

/* Connect to addr.host:port (or the unix socket): the data connection. */
static void data_start(struct redis *r)
{
    char why[sizeof r->error];
    reader_reset(r);
    r->got_reply = false;
    r->state = ST_CONNECTING;
    r->tls_want = 0;
    r->connect_deadline = redis_now_ms() + r->opts.connect_timeout_ms;
    queue_setup(r);
    if (r->addr.unix_path) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof sa.sun_path, "%s", r->addr.unix_path);
        r->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (r->fd == -1)
            fatal("socket");
        if (connect(r->fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            connected(r);
            return;
        }
        if (errno == EINPROGRESS || errno == EAGAIN)
            return;
        snprintf(why, sizeof why, "cannot connect to %s: %s", r->addr.unix_path, strerror(errno));
        conn_drop(r, REDIS_E_IO, why);
        return;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
    char port[16];
    snprintf(port, sizeof port, "%d", r->addr.port);
    int rc = getaddrinfo(r->addr.host, port, &hints, &r->ai);
    if (rc != 0) {
        r->ai = NULL;
        snprintf(why, sizeof why, "cannot resolve %s: %s", r->addr.host, gai_strerror(rc));
        conn_drop(r, REDIS_E_IO, why);
        return;
    }
    r->ai_next = r->ai;
    r->last_errno = ECONNREFUSED;
    connect_next(r);
}

/* ---- sentinel: who the master is ---- */

/* A sentinel's answer to get-master-addr-by-name: [host, port]. The bytes come from the
 * network: the host must be a plausible name or address, the port a port. */
int redis_sentinel_addr(const struct redis_reply *v, char *host, size_t hostlen, int *port)
{
    if (v->type != REDIS_T_ARRAY || v->elements != 2 || !v->element[0] || !v->element[1] ||
        v->element[0]->type != REDIS_T_STRING || v->element[1]->type != REDIS_T_STRING)
        return -1;
    const struct redis_reply *h = v->element[0], *p = v->element[1];
    if (h->len == 0 || h->len >= hostlen || p->len == 0 || p->len > 5)
        return -1;
    for (size_t i = 0; i < h->len; i++)
        if (!(h->str[i] >= '0' && h->str[i] <= '9') && !(h->str[i] >= 'a' && h->str[i] <= 'z') &&
            !(h->str[i] >= 'A' && h->str[i] <= 'Z') && !strchr("-._:", h->str[i]))
            return -1;
    long n = 0;
    for (size_t i = 0; i < p->len; i++) {
        if (p->str[i] < '0' || p->str[i] > '9')
            return -1;
        n = n * 10 + (p->str[i] - '0');
    }
    if (n < 1 || n > 65535)
        return -1;
    memcpy(host, h->str, h->len);
    host[h->len] = '\0';
    *port = (int)n;
    return 0;
}

static void sentinel_cb(void *arg, const struct redis_reply *v)
{
    struct redis *r = arg;
    const struct redis_node *node = &r->addr.sentinels[r->sen_node];
    r->sen_asked = false;
    if (redis_sentinel_addr(v, r->sen_host, sizeof r->sen_host, &r->sen_port) == 0) {
        r->sen_answer = 1;
        return;
    }
    r->sen_answer = -1;
    r->sen_kind = v->type == REDIS_T_ERROR ? v->err : REDIS_E_OTHER;
    if (v->type == REDIS_T_NIL)
        snprintf(r->sen_why, sizeof r->sen_why, "sentinel %s:%d does not know master '%s'", node->host, node->port,
                 r->addr.sentinel_master);
    else if (v->type == REDIS_T_ERROR)
        snprintf(r->sen_why, sizeof r->sen_why, "sentinel %s:%d: %.200s", node->host, node->port, v->str);
    else
        snprintf(r->sen_why, sizeof r->sen_why, "sentinel %s:%d: unexpected answer to get-master-addr-by-name",
                 node->host, node->port);
}

/* The end of a round, answered or not: the sentinel connection goes. */
static void sentinel_end(struct redis *r)
{
    redis_free(r->sen);
    r->sen = NULL;
    r->sen_left = 0;
    r->sen_asked = false;
    r->sen_answer = 0;
    r->sen_retry_at = 0;
    if (r->sen_password) {
        explicit_bzero(r->sen_password, strlen(r->sen_password));
        free(r->sen_password);
        r->sen_password = NULL;
    }
}

/* The password of sentinel_password_file, read again each round (a fixed file is picked up);
 * NULL with sen_why filled when it cannot be read. */
static char *sentinel_password(struct redis *r)
{
    const char *path = r->addr.sentinel_password_file;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(r->sen_why, sizeof r->sen_why, "cannot read sentinel_password_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && strchr("\r\n \t", buf[n - 1]))
        buf[--n] = '\0';
    char *pw = n ? xstrdup(buf) : NULL;
    if (pw == NULL)
        snprintf(r->sen_why, sizeof r->sen_why, "sentinel_password_file %s is empty", path);
    explicit_bzero(buf, sizeof buf);
    return pw;
}

static long sentinel_ask_ms(const struct redis *r)
{
    return r->opts.connect_timeout_ms < SENTINEL_ASK_MS ? r->opts.connect_timeout_ms : SENTINEL_ASK_MS;
}

/* The round failed: every sentinel was asked, or time ran out. */
static void sentinel_fail(struct redis *r)
{
    char why[sizeof r->error];
    enum redis_errkind kind = r->sen_kind == REDIS_E_AUTH ? REDIS_E_AUTH : REDIS_E_IO;
    snprintf(why, sizeof why, "master '%.48s' through the sentinels: %.230s", r->addr.sentinel_master,
             r->sen_why[0] ? r->sen_why : "no answer in time");
    sentinel_end(r);                /* so that conn_drop does not take it for a retry */
    conn_drop(r, kind, why);
}

/* Ask the sentinel we are connected to, or the next one that takes our question; the round
 * fails when none is left. */
static void sentinel_ask(struct redis *r)
{
    r->sen_retry_at = 0;
    for (;;) {
        if (r->sen == NULL) {
            if (r->sen_left == 0) {
                sentinel_fail(r);
                return;
            }
            const struct redis_node *node = &r->addr.sentinels[r->sen_next];
            r->sen_node = r->sen_next;
            r->sen_next = (r->sen_next + 1) % r->addr.nsentinels;
            r->sen_left--;
            struct redis_addr sa = { .host = node->host, .port = node->port, .password = r->sen_password };
            struct redis_opts o = { .connect_timeout_ms = sentinel_ask_ms(r), .no_reconnect = true };
            r->sen = redis_open(&sa, &o);
        }
        r->sen_answer = 0;
        if (redis_commandv(r->sen, sentinel_cb, r, sentinel_ask_ms(r), "SENTINEL", "get-master-addr-by-name",
                           r->addr.sentinel_master, NULL) == 0) {
            r->sen_asked = true;
            return;
        }
        const struct redis_node *node = &r->addr.sentinels[r->sen_node];
        snprintf(r->sen_why, sizeof r->sen_why, "sentinel %s:%d: %.200s", node->host, node->port, redis_error(r->sen));
        r->sen_kind = redis_error_kind(r->sen);
        redis_free(r->sen);
        r->sen = NULL;
    }
}

/* A round: ask the sentinels in turn, starting with the one that answered last time. */
static void sentinel_start(struct redis *r)
{
    sentinel_end(r);
    r->state = ST_SENTINEL;
    r->sen_left = r->addr.nsentinels;
    r->sen_why[0] = '\0';
    r->sen_kind = REDIS_E_NONE;
    r->resolve_deadline = redis_now_ms() + r->opts.connect_timeout_ms;
    if (r->addr.sentinel_password_file && !(r->sen_password = sentinel_password(r))) {
        char why[sizeof r->error];
        snprintf(why, sizeof why, "%s", r->sen_why);
        conn_drop(r, REDIS_E_IO, why);
        return;
    }
    sentinel_ask(r);
}

/* ST_SENTINEL, after a poll: move the question on, and connect to the answer. */
static void sentinel_run(struct redis *r, short revents, long long now)
{
    if (r->sen)
        redis_run(r->sen, revents, now);
    if (r->sen_answer == 1) {
        r->sen_answer = 0;
        r->sen_next = r->sen_node;
        if (r->addr.host == NULL || strcmp(r->addr.host, r->sen_host) != 0 || r->addr.port != r->sen_port)
            log_info("sentinel: master '%s' is at %s:%d", r->addr.sentinel_master, r->sen_host, r->sen_port);
        free(r->addr.host);
        r->addr.host = xstrdup(r->sen_host);
        r->addr.port = r->sen_port;
        data_start(r);              /* the sentinel connection stays, for a retry */
        return;
    }
    bool sen_gone = r->sen && !r->sen_asked && redis_fd(r->sen) == -1;
    if (r->sen_answer == -1 || sen_gone) {
        /* This sentinel failed us: the next one, now. */
        if (sen_gone && r->sen_answer == 0) {
            snprintf(r->sen_why, sizeof r->sen_why, "sentinel connection: %.200s", redis_error(r->sen));
            r->sen_kind = redis_error_kind(r->sen);
        }
        redis_free(r->sen);
        r->sen = NULL;
        sentinel_ask(r);
        return;
    }
    if (r->sen_retry_at && now >= r->sen_retry_at)
        sentinel_ask(r);
    else if (r->sen == NULL && !r->sen_retry_at)
        sentinel_ask(r);
}

/* A message on the watch: "+switch-master" "NAME OLDIP OLDPORT NEWIP NEWPORT". Our master
 * moving elsewhere ends our connection to it, even when that connection still works (a master
 * cut off from the sentinels, or frozen): whatever it accepts now is lost in the failover. */
static void watch_cb(void *arg, const struct redis_reply *v)
{
    struct redis *r = arg;
    if (v->type != REDIS_T_ARRAY || v->elements != 3 || !v->element[0] || !v->element[2] ||
        v->element[0]->type != REDIS_T_STRING || strcmp(v->element[0]->str, "message") != 0 ||
        v->element[2]->type != REDIS_T_STRING)
        return;
    char name[64], oldh[64], newh[64];
    int oldp, newp;
    if (sscanf(v->element[2]->str, "%63s %63s %d %63s %d", name, oldh, &oldp, newh, &newp) != 5 ||
        strcmp(name, r->addr.sentinel_master) != 0)
        return;
    if (r->addr.host && strcmp(newh, r->addr.host) == 0 && newp == r->addr.port)
        return;
    r->switched = true;
    snprintf(r->switch_why, sizeof r->switch_why, "sentinel announced +switch-master: '%s' moved to %s:%d",
             name, newh, newp);
}

static void watch_subscribed_cb(void *arg, const struct redis_reply *v)
{
    (void)arg;
    (void)v;                        /* an error leaves a watch that never speaks: harmless */
}

/* The data connection is ours: the sentinel that answered stays, subscribed to +switch-master. */
static void sentinel_watch(struct redis *r)
{
    struct redis *w = r->sen;
    r->sen = NULL;
    sentinel_end(r);
    redis_free(r->watch);
    r->watch = NULL;
    r->switched = false;
    if (w && redis_fd(w) != -1 &&
        redis_commandv(w, watch_subscribed_cb, r, r->opts.connect_timeout_ms, "SUBSCRIBE", "+switch-master",
                       NULL) == 0) {
        w->push_cb = watch_cb;
        w->push_arg = r;
        r->watch = w;
        return;
    }
    redis_free(w);
}

/* The watch had something (revents from the epoll set), or the owner just runs us. */
static void watch_run(struct redis *r, short revents, long long now)
{
    redis_run(r->watch, revents, now);
    if (redis_fd(r->watch) == -1) {
        /* The sentinel went away: the next connect subscribes anew; meanwhile a disconnect
         * and READONLY still tell us. */
        redis_free(r->watch);
        r->watch = NULL;
    }
    if (r->switched) {
        char why[sizeof r->switch_why];
        snprintf(why, sizeof why, "%s", r->switch_why);
        conn_drop(r, REDIS_E_IO, why);
    }
}

/* conn_drop()'s question: is this failure one more reason to ask the sentinels again, within
 * the round's time? Only for a connection that failed before it was ours (connect refused or
 * timed out, a replica) and while a sentinel is at hand or left to ask; credentials and a bad
 * db are the config's fault, and asking again would not help. */
static bool sentinel_retry(struct redis *r, enum redis_errkind kind, const char *why)
{
    long long now = redis_now_ms();
    if (!r->addr.sentinel_master || (r->state != ST_CONNECTING && r->state != ST_TLS && r->state != ST_UP) ||
        (r->sen == NULL && r->sen_left == 0) || (kind != REDIS_E_IO && kind != REDIS_E_TIMEOUT) ||
        now + SENTINEL_PAUSE_MS >= r->resolve_deadline)
        return false;
    /* The connect-time commands not yet answered lead the queue: they go with the socket; the
     * owner's commands stay, unsent (held), for the next master. */
    r->qhead += r->setup_left;
    r->qlen -= r->setup_left;
    if (r->qlen == 0)
        r->qhead = 0;
    conn_close(r);
    r->gen++;                       /* a dispatch loop in progress stops */
    snprintf(r->sen_why, sizeof r->sen_why, "%s", why);
    r->sen_kind = kind;
    r->state = ST_SENTINEL;
    r->sen_retry_at = now + SENTINEL_PAUSE_MS;
    if (r->sen && redis_fd(r->sen) == -1) {
        redis_free(r->sen);
        r->sen = NULL;
    }
    /* Without a sentinel connection there is nothing to poll while pausing (and an owner takes
     * redis_fd() == -1 for the end): ask the next sentinel now. */
    if (r->sen == NULL)
        sentinel_ask(r);
    return true;
}

/* ---- reading and writing ---- */

/* A plain connection that the server ends before any reply may be one to a TLS port (Redis
 * 7.0 resets it when the handshake it expected does not come): say so. */
static const char *plain_hint(const struct redis *r)
{
    if (r->got_reply)
        return "";
    return r->addr.tls ? " before any reply" : " before any reply (does the server speak TLS on this port? then use rediss://)";
}

/* A recv()/send() that returned < 0: -1 (errno EAGAIN) when it is only "not now", else the
 * connection is dropped with the reason and -2. */
static ssize_t sock_failed(struct redis *r, const char *what, const char *hint)
{
    if (errno == EAGAIN || errno == EINTR)
        return -1;
    char why[sizeof r->error];
    snprintf(why, sizeof why, "%s: %s%s", what, strerror(errno), hint);
    conn_drop(r, REDIS_E_IO, why);
    return -2;
}

/* The same for an SSL_read()/SSL_write() whose SSL_get_error() is e. */
static ssize_t tls_failed(struct redis *r, const char *what, int e)
{
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    char why[sizeof r->error];
    tls_reason(r, what, e, why, sizeof why);
    conn_drop(r, REDIS_E_IO, why);
    return -2;
}

/* >0 bytes, 0 at end of stream, -1 with errno EAGAIN when nothing more now, -2 on an error
 * (the connection has been dropped). */
static ssize_t conn_read(struct redis *r, char *p, size_t n)
{
    if (r->ssl == NULL) {
        ssize_t got = recv(r->fd, p, n, 0);
        return got >= 0 ? got : sock_failed(r, "read", plain_hint(r));
    }
    ERR_clear_error();
    errno = 0;
    int got = SSL_read(r->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (got > 0)
        return got;
    int e = SSL_get_error(r->ssl, got);
    return e == SSL_ERROR_ZERO_RETURN ? 0 : tls_failed(r, "read", e);
}

static ssize_t conn_write(struct redis *r, const char *p, size_t n)
{
    if (r->ssl == NULL) {
        /* MSG_NOSIGNAL: a server gone away must not kill us with SIGPIPE. */
        ssize_t put = send(r->fd, p, n, MSG_NOSIGNAL);
        return put >= 0 ? put : sock_failed(r, "write", "");
    }
    ERR_clear_error();
    errno = 0;
    int put = SSL_write(r->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (put > 0)
        return put;
    int e = SSL_get_error(r->ssl, put);
    if (e == SSL_ERROR_SYSCALL) {
        /* TLS 1.3: a server that refuses our certificate (or its absence) says so in an
         * alert after our handshake has finished, and closes; our first write then meets a
         * reset. The alert came first: read it for the reason. */
        char scratch[256];
        ERR_clear_error();
        int got = SSL_read(r->ssl, scratch, sizeof scratch);
        if (got <= 0 && SSL_get_error(r->ssl, got) == SSL_ERROR_SSL)
            return tls_failed(r, "refused", SSL_ERROR_SSL);
    }
    return tls_failed(r, "write", e);
}

static void flush_out(struct redis *r)
{
    while (r->state == ST_UP && r->out_off < r->out.len) {
        ssize_t n = conn_write(r, r->out.p + r->out_off, r->out.len - r->out_off);
        if (n < 0)
            return;
        r->out_off += (size_t)n;
    }
    if (r->state == ST_UP && r->out_off == r->out.len)
        out_reset(r);
}

/* Hand every complete reply in the reader to its command, in order; each reply's memory goes
 * back to the arena right after its callback. Returns the number dispatched, or -1 once the
 * connection was dropped. */
static int dispatch(struct redis *r)
{
    int n = 0;
    unsigned gen = r->gen;
    for (;;) {
        void *obj = NULL;
        size_t left = r->reader->len - r->reader->pos;
        if (redisReaderGetReply(r->reader, &obj) != REDIS_OK) {
            char why[sizeof r->error];
            if (r->toobig)
                snprintf(why, sizeof why, "reply larger than %zu bytes", r->opts.max_reply_bytes);
            else
                snprintf(why, sizeof why, "protocol error: %s", r->reader->errstr);
            conn_drop(r, r->toobig ? REDIS_E_TOOBIG : REDIS_E_PROTO, why);
            return -1;
        }
        /* The reader's compaction moves pos and len alike: what is left tells what it read. */
        r->raw += left - (r->reader->len - r->reader->pos);
        if (obj == NULL)
            break;
        r->raw = 0;
        const struct redis_reply *v = obj;
        if (r->qlen == 0 && r->push_cb) {
            r->push_cb(r->push_arg, v);
            if (r->gen != gen)
                return -1;
            arena_reset(&r->arena);
            n++;
            continue;
        }
        if (r->qlen == 0) {
            char why[sizeof r->error];
            snprintf(why, sizeof why, "protocol error: a reply to no command: %.200s",
                     v->type == REDIS_T_ERROR || v->type == REDIS_T_STATUS ? v->str : "(data)");
            conn_drop(r, REDIS_E_PROTO, why);
            return -1;
        }
        struct cmd c = queue_pop(r);
        r->got_reply = true;
        bool answered = v->type != REDIS_T_ERROR;
        bool readonly = v->type == REDIS_T_ERROR && v->err == REDIS_E_READONLY;
        if (c.cb)
            c.cb(c.arg, v);
        if (r->gen != gen)
            return -1;
        if (readonly && r->addr.sentinel_master) {
            /* Our master was made a replica (a failover we did not see): not ours any more. */
            char why[sizeof r->error];
            snprintf(why, sizeof why, "master '%s' at %s:%d answered READONLY: asking the sentinels again",
                     r->addr.sentinel_master, r->addr.host, r->addr.port);
            conn_drop(r, REDIS_E_IO, why);
            return -1;
        }
        arena_reset(&r->arena);     /* v is gone */
        n++;
        if (r->setup_left == 0 && answered)
            r->attempt = 0;         /* a connection that answers ends the backoff */
    }
    /* The bytes of the reply being read, as they came from the server (its objects take more:
     * a one-byte string is some 70 bytes of them, so the bound is in the server's terms, the
     * terms in which an entry's size can be known before it is read). */
    if (r->opts.max_reply_bytes && r->raw + (r->reader->len - r->reader->pos) > r->opts.max_reply_bytes) {
        char why[sizeof r->error];
        snprintf(why, sizeof why, "reply larger than %zu bytes", r->opts.max_reply_bytes);
        conn_drop(r, REDIS_E_TOOBIG, why);
        return -1;
    }
    return n;
}

static void read_all(struct redis *r)
{
    char chunk[READ_CHUNK];
    while (r->state == ST_UP) {
        ssize_t n = conn_read(r, chunk, sizeof chunk);
        if (n == -1 || n == -2)
            return;
        if (n == 0) {
            char why[sizeof r->error];
            snprintf(why, sizeof why, "connection closed by the server%s", plain_hint(r));
            conn_drop(r, REDIS_E_IO, why);
            return;
        }
        if (redisReaderFeed(r->reader, chunk, (size_t)n) != REDIS_OK)
            fatal("out of memory");
        if (dispatch(r) == -1)
            return;
        /* A short read emptied the socket: the next read would only meet EAGAIN (a system
         * call a batch, a tenth of a worker's calls at batch 10). poll() is level-triggered,
         * so bytes that arrive meanwhile wake the owner's loop. Over TLS a read returns one
         * record (16 KiB at most), so only a short record with nothing more in OpenSSL's
         * read-ahead buffer (which poll() cannot see) tells the same. */
        if (r->ssl == NULL ? (size_t)n < sizeof chunk : n < TLS_RECORD_MAX && !SSL_has_pending(r->ssl))
            return;
    }
}

static void check_deadlines(struct redis *r, long long now)
{
    if (r->state == ST_SENTINEL && now >= r->resolve_deadline) {
        sentinel_fail(r);
        return;
    }
    if ((r->state == ST_CONNECTING || r->state == ST_TLS) && now >= r->connect_deadline) {
        char why[sizeof r->error];
        /* A plain server takes a TLS hello for the start of a command and waits for the rest. */
        snprintf(why, sizeof why, "%s timed out after %ld ms%s", r->state == ST_TLS ? "tls handshake" : "connect",
                 r->opts.connect_timeout_ms,
                 r->state == ST_TLS ? " (does the server speak TLS on this port? use redis:// for a plain one)" : "");
        conn_drop(r, REDIS_E_TIMEOUT, why);
        return;
    }
    if (r->state != ST_UP)
        return;
    /* The owner's commands held behind ROLE are not on the wire: their time starts later. */
    size_t n = r->addr.sentinel_master && r->setup_left ? r->setup_left : r->qlen;
    for (size_t i = 0; i < n; i++) {
        const struct cmd *c = &r->q[r->qhead + i];
        if (c->deadline <= now) {
            char why[sizeof r->error];
            snprintf(why, sizeof why, "no reply within %ld ms", c->timeout_ms);
            conn_drop(r, REDIS_E_TIMEOUT, why);
            return;
        }
    }
}

/* The readiness of our descriptors in the epoll set: the owner's revents are the set's. */
static void ep_revents(struct redis *r, short *revents, short *wrevents)
{
    struct epoll_event ev[2];
    *revents = *wrevents = 0;
    int n = epoll_wait(r->epfd, ev, 2, 0);
    for (int i = 0; i < n; i++) {
        short re = (short)((ev[i].events & EPOLLIN ? POLLIN : 0) | (ev[i].events & EPOLLOUT ? POLLOUT : 0) |
                           (ev[i].events & EPOLLERR ? POLLERR : 0) | (ev[i].events & EPOLLHUP ? POLLHUP : 0));
        if (ev[i].data.u32 == 1)
            *wrevents = re;
        else
            *revents = re;
    }
}

static int inner_fd(const struct redis *r);
static short inner_events(const struct redis *r);

/* Register what we want to hear of now. Always MOD (ADD when absent): a closed descriptor
 * left the set by itself, and its number may be back as a new socket, even in the other slot. */
static void ep_add(struct redis *r, int slot, int fd, short events)
{
    struct epoll_event ev = { .events = (events & POLLIN ? EPOLLIN : 0) | (events & POLLOUT ? EPOLLOUT : 0),
                              .data.u32 = (uint32_t)slot };
    if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, fd, &ev) == -1 && errno == ENOENT &&
        epoll_ctl(r->epfd, EPOLL_CTL_ADD, fd, &ev) == -1)
        fatal("epoll_ctl");
}

static void ep_sync(struct redis *r)
{
    if (r->epfd < 0)
        return;
    int want[2] = { inner_fd(r), r->watch ? redis_fd(r->watch) : -1 };
    for (int i = 0; i < 2; i++)
        if (r->ep_fd[i] >= 0 && r->ep_fd[i] != want[0] && r->ep_fd[i] != want[1])
            epoll_ctl(r->epfd, EPOLL_CTL_DEL, r->ep_fd[i], NULL);    /* closed already: ENOENT */
    if (want[0] >= 0)
        ep_add(r, 0, want[0], inner_events(r));
    if (want[1] >= 0)
        ep_add(r, 1, want[1], redis_events(r->watch));
    r->ep_fd[0] = want[0];
    r->ep_fd[1] = want[1];
}

static void run(struct redis *r, short revents, long long now, short wrevents);
static void cl_run(struct redis *c, long long now);
static void cl_ep_sync(struct redis *c);
static long cl_timeout_ms(const struct redis *c, long long now);

void redis_run(struct redis *r, short revents, long long now)
{
    if (r->addr.cluster) {
        cl_run(r, now);
        cl_ep_sync(r);
        return;
    }
    short wrevents = 0;
    if (r->epfd >= 0)
        ep_revents(r, &revents, &wrevents);
    run(r, revents, now, wrevents);
    ep_sync(r);
}

static void run(struct redis *r, short revents, long long now, short wrevents)
{
    if (r->state == ST_WAIT && now >= r->next_connect)
        conn_start(r);
    if (r->state == ST_SENTINEL) {
        sentinel_run(r, revents, now);
        revents = 0;                /* they were the sentinel connection's */
    }
    if (r->state == ST_CONNECTING && r->fd >= 0 && (revents & (POLLOUT | POLLERR | POLLHUP))) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(r->fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
            err = errno;
        if (err == 0) {
            connected(r);
        } else if (r->addr.unix_path) {
            char why[sizeof r->error];
            snprintf(why, sizeof why, "cannot connect to %s: %s", r->addr.unix_path, strerror(err));
            conn_drop(r, REDIS_E_IO, why);
        } else {
            r->last_errno = err;
            close(r->fd);
            r->fd = -1;
            connect_next(r);
        }
        revents = 0;                /* consumed by the connect */
    } else if (r->state == ST_TLS && revents) {
        tls_step(r);
        revents = 0;
    }
    if (r->state == ST_UP && r->watch)
        watch_run(r, wrevents, now);
    if (r->state == ST_UP) {
        flush_out(r);
        if (r->state == ST_UP && (revents & (POLLIN | POLLERR | POLLHUP)))
            read_all(r);
        /* A TLS record can arrive with the handshake's last flight, and read-ahead may hold
         * bytes poll() cannot see: read them anyway. */
        if (r->state == ST_UP && r->ssl && SSL_has_pending(r->ssl))
            read_all(r);
        flush_out(r);
    }
    check_deadlines(r, now);
}

int redis_fd(const struct redis *r)
{
    if (r->addr.cluster)
        return r->state == ST_CLOSED || r->state == ST_WAIT ? -1 : r->epfd;
    int fd = inner_fd(r);
    return fd >= 0 && r->epfd >= 0 ? r->epfd : fd;
}

short redis_events(const struct redis *r)
{
    return r->epfd >= 0 ? POLLIN : inner_events(r);
}

static int inner_fd(const struct redis *r)
{
    if (r->state == ST_SENTINEL)
        return r->sen ? redis_fd(r->sen) : -1;
    return r->state == ST_CONNECTING || r->state == ST_TLS || r->state == ST_UP ? r->fd : -1;
}

static short inner_events(const struct redis *r)
{
    switch (r->state) {
    case ST_SENTINEL: return r->sen ? redis_events(r->sen) : 0;
    case ST_CONNECTING: return POLLOUT;
    case ST_TLS: return r->tls_want ? r->tls_want : POLLIN;
    case ST_UP: return (short)(POLLIN | (r->out_off < r->out.len ? POLLOUT : 0));
    default: return 0;
    }
}

long redis_timeout_ms(const struct redis *r, long long now)
{
    if (r->addr.cluster)
        return cl_timeout_ms(r, now);
    long long due = -1;
    if (r->state == ST_WAIT)
        due = r->next_connect;
    else if (r->state == ST_CONNECTING || r->state == ST_TLS)
        due = r->connect_deadline;
    else if (r->state == ST_UP)
        for (size_t i = 0; i < (r->addr.sentinel_master && r->setup_left ? r->setup_left : r->qlen); i++)
            if (due == -1 || r->q[r->qhead + i].deadline < due)
                due = r->q[r->qhead + i].deadline;
    if (r->state == ST_SENTINEL) {
        due = r->resolve_deadline;
        if (r->sen_retry_at && r->sen_retry_at < due)
            due = r->sen_retry_at;
        long t = r->sen ? redis_timeout_ms(r->sen, now) : -1;
        if (t >= 0 && now + t < due)
            due = now + t;
    }
    if (due == -1)
        return -1;
    return due <= now ? 0 : (long)(due - now);
}

/* ---- the cluster ----
 *
 * With redis-cluster:// the client is a router over plain clients of our own kind, one per
 * node (no_reconnect: a node connection that fails is freed, and opened again when a command
 * needs it). The slot map comes from CLUSTER SLOTS, asked of the seeds first and then of any
 * node. Each owner's command is a ccmd, kept here until its final reply: routed by the slot of
 * its key (cluster_key_index()), it is sent on its node's connection, so that commands to one
 * node are pipelined on it (a worker reading many shard keys writes one batch per node).
 * Their replies decide:
 *   MOVED slot host:port  the slot lives there now: the map is corrected, refreshed, and the
 *                         command resent there;
 *   ASK slot host:port    this key is being migrated: ASKING then the command, once, there;
 *   TRYAGAIN, CLUSTERDOWN a migration or failover in progress: sent again after a capped
 *                         backoff, within the command's deadline;
 *   a connection that failed before it was ever up (connect refused: a master killed) never
 *                         carried the command: the map is refreshed and the command waits
 *                         for it, within its deadline (a failover promotes the replica);
 *   anything else         is the owner's answer, as without a cluster (a connection lost
 *                         after the command went out gets its error: it may have run).
 * A MULTI..EXEC group goes whole to the node of its first key, with no redirection followed
 * inside it (Redis aborts the EXEC of a transaction with a MOVED in it). The owner polls one
 * epoll descriptor over the node connections (redis_fd(), POLLIN). */

#define CL_MAX_REDIRECTS 8
#define CL_RETRY_MIN_MS 10
#define CL_RETRY_MAX_MS 250
#define CL_DOWN_RETRY_MS 100        /* a node that refused us: ask the map, try again then */
#define CL_REFRESH_PAUSE_MS 200     /* between rounds of asking every node for the map */
#define CL_ASK_MS 2000

struct cl_node {
    char *host;
    int port;
    struct redis *conn;             /* NULL until a command needs it */
    int ep_fd;                      /* registered in the epoll set, or -1 */
    long long down_until;           /* a connect failed: not again before then */
};

struct ccmd {
    struct redis *c;
    struct ccmd *prev, *next;
    redis_cb *cb;
    void *arg;
    long long deadline;
    size_t max_reply;
    int slot;                       /* -1: no key (any node) */
    int node;                       /* the node it is out on; -1: waiting here */
    long long retry_at;             /* waiting: not before then */
    int redirects, tries;
    int ask_node;                   /* >= 0: ASKING, then the command, there (once) */
    unsigned txn;                   /* its MULTI..EXEC group, 0: none */
    bool txn_end;                   /* EXEC or DISCARD */
    int argc;
    const char **argv;              /* in the same allocation */
    size_t *len;
};

static struct redis_cluster_counts cl_counts;

void redis_cluster_counts(struct redis_cluster_counts *out)
{
    *out = cl_counts;
}

static int cl_node(struct redis *c, const char *host, int port)
{
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].port == port && strcmp(c->nodes[i].host, host) == 0)
            return (int)i;
    c->nodes = xrealloc(c->nodes, (c->nnodes + 1) * sizeof *c->nodes);
    c->nodes[c->nnodes] = (struct cl_node){ xstrdup(host), port, NULL, -1, 0 };
    return (int)c->nnodes++;
}

/* The connection to node n, opened when there is none. */
static struct redis *cl_conn(struct redis *c, int n)
{
    struct cl_node *node = &c->nodes[n];
    if (node->conn == NULL) {
        struct redis_addr a = c->addr;
        a.host = node->host;
        a.port = node->port;
        a.cluster = false;
        a.seeds = NULL;
        a.nseeds = 0;
        /* A name the certificate holds (redis_tls_server_name), or the node's address. */
        struct redis_opts o = { .connect_timeout_ms = c->opts.connect_timeout_ms, .no_reconnect = true,
                                .client_name = c->opts.client_name };
        node->conn = redis_open(&a, &o);
    }
    return node->conn;
}

static void cl_refresh_soon(struct redis *c)
{
    long long now = redis_now_ms();
    if (!c->refreshing && (c->refresh_at == 0 || c->refresh_at > now))
        c->refresh_at = now;
}

static void cl_unlink(struct redis *c, struct ccmd *cc)
{
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        c->cl_head = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    else
        c->cl_tail = cc->prev;
    c->ncl--;
}

static long cl_backoff(int tries)
{
    long d = CL_RETRY_MIN_MS << (tries < 5 ? tries : 5);
    return d > CL_RETRY_MAX_MS ? CL_RETRY_MAX_MS : d;
}

/* A node's reply to one of the owner's commands. Nothing is freed here but the ccmd: the
 * node's client is running us (cl_run frees closed connections afterwards). */
static void ccmd_cb(void *arg, const struct redis_reply *v)
{
    struct ccmd *cc = arg;
    struct redis *c = cc->c;
    int node = cc->node;
    cc->node = -1;
    long long now = redis_now_ms();
    if (v->type == REDIS_T_ERROR && node >= 0) {
        unsigned slot;
        char host[CLUSTER_HOST_MAX];
        int port;
        enum cluster_redirect k = cluster_parse_redirect(v->str, v->len, &slot, host, sizeof host, &port);
        if (k == CLUSTER_R_MOVED || k == CLUSTER_R_ASK) {
            int to = cl_node(c, host[0] ? host : c->nodes[node].host, port);
            if (k == CLUSTER_R_MOVED) {
                cl_counts.moved++;
                c->slot_node[slot] = to;
                cl_refresh_soon(c);
            } else {
                cl_counts.ask++;
            }
            if (!cc->txn && cc->redirects < CL_MAX_REDIRECTS) {
                cc->redirects++;
                cc->ask_node = k == CLUSTER_R_ASK ? to : -1;
                cc->retry_at = 0;
                return;             /* waiting again: cl_pump() sends it */
            }
        } else if ((k == CLUSTER_R_TRYAGAIN || k == CLUSTER_R_CLUSTERDOWN) && !cc->txn &&
                   now + cl_backoff(cc->tries) < cc->deadline) {
            cc->retry_at = now + cl_backoff(cc->tries++);
            cc->ask_node = -1;
            if (k == CLUSTER_R_CLUSTERDOWN)
                cl_refresh_soon(c);
            return;
        } else if (v->err == REDIS_E_IO || v->err == REDIS_E_TIMEOUT) {
            struct redis *nc = c->nodes[node].conn;
            snprintf(c->cl_why, sizeof c->cl_why, "node %s:%d: %.200s", c->nodes[node].host, c->nodes[node].port,
                     v->str);
            cl_refresh_soon(c);
            if (nc && nc->was_up)
                c->gen++;           /* what went out on it may be lost: the owner's drop */
            else {
                c->nodes[node].down_until = now + CL_DOWN_RETRY_MS;
                if (!cc->txn && now + CL_DOWN_RETRY_MS < cc->deadline) {
                    cc->retry_at = now + CL_DOWN_RETRY_MS;     /* never went out: again */
                    cc->ask_node = -1;
                    return;
                }
            }
        }
    }
    cl_unlink(c, cc);
    if (cc->cb)
        cc->cb(cc->arg, v);
    free(cc);
}

static void asking_cb(void *arg, const struct redis_reply *v)
{
    (void)arg;
    (void)v;                        /* the command behind it says what came of it */
}

/* Put cc on node n's connection; -1 when that connection is gone (cc stays waiting). */
static int cl_send(struct redis *c, struct ccmd *cc, int n, long long now)
{
    struct redis *nc = cl_conn(c, n);
    long left = cc->deadline > now ? (long)(cc->deadline - now) : 1;
    redis_set_max_reply_bytes(nc, cc->max_reply);
    if (cc->ask_node >= 0) {
        static const char *const asking[1] = { "ASKING" };
        static const size_t asking_len[1] = { 6 };
        if (redis_command(nc, 1, (const char **)asking, asking_len, asking_cb, NULL, left) == -1)
            goto gone;
    }
    if (redis_command(nc, cc->argc, cc->argv, cc->len, ccmd_cb, cc, left) == -1)
        goto gone;
    cc->node = n;
    cc->ask_node = -1;
    return 0;
gone:
    snprintf(c->cl_why, sizeof c->cl_why, "node %s:%d: %.200s", c->nodes[n].host, c->nodes[n].port,
             redis_error(nc)[0] ? redis_error(nc) : "not connected");
    c->nodes[n].down_until = now + CL_DOWN_RETRY_MS;
    cl_refresh_soon(c);
    return -1;
}

/* The node a command without a key goes to: one we are connected to, else the first one the
 * map names. */
static int cl_any_node(const struct redis *c)
{
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].conn && redis_ready(c->nodes[i].conn))
            return (int)i;
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++)
        if (c->slot_node[s] >= 0)
            return c->slot_node[s];
    return -1;
}

static int cl_route(const struct redis *c, const struct ccmd *cc)
{
    if (cc->ask_node >= 0)
        return cc->ask_node;
    return cc->slot >= 0 ? c->slot_node[cc->slot] : cl_any_node(c);
}

/* Send what waits and may go now, in the owner's order. */
static void cl_pump(struct redis *c, long long now)
{
    if (!c->have_map)
        return;
    for (struct ccmd *cc = c->cl_head; cc; cc = cc->next) {
        if (cc->node >= 0 || cc->retry_at > now)
            continue;
        if (cc->txn) {
            /* The whole group, once it is all queued, to the node of its first key. */
            struct ccmd *end = cc, *keyed = NULL;
            while (end && end->txn == cc->txn && !end->txn_end) {
                if (!keyed && end->slot >= 0)
                    keyed = end;
                end = end->next;
            }
            if (end == NULL || end->txn != cc->txn)
                break;              /* not all queued yet: nothing behind it overtakes it */
            int n = keyed ? c->slot_node[keyed->slot] : cl_any_node(c);
            if (n < 0 || c->nodes[n].down_until > now) {
                cl_refresh_soon(c);
                break;
            }
            for (struct ccmd *m = cc;; m = m->next) {
                if (cl_send(c, m, n, now) == -1) {
                    /* The node went away mid-group: what was sent of it fails with the
                     * connection; the rest is failed by its deadline. */
                    break;
                }
                if (m == end)
                    break;
            }
            cc = end;
            continue;
        }
        int n = cl_route(c, cc);
        if (n < 0) {
            cl_refresh_soon(c);     /* a slot no master serves (yet) */
            cc->retry_at = now + CL_DOWN_RETRY_MS;
            continue;
        }
        if (c->nodes[n].down_until > now) {
            cc->retry_at = c->nodes[n].down_until;
            continue;
        }
        if (cl_send(c, cc, n, now) == -1)
            cc->retry_at = now + CL_DOWN_RETRY_MS;
    }
}

static void refresh_cb(void *arg, const struct redis_reply *v)
{
    struct redis *c = arg;
    const struct cl_node *node = &c->nodes[c->refresh_node];
    struct cluster_range *ranges = NULL;
    size_t n = 0;
    c->refreshing = false;
    if (v->type == REDIS_T_ERROR) {
        snprintf(c->cl_why, sizeof c->cl_why, "cluster slots from %s:%d: %.200s", node->host, node->port, v->str);
        c->refresh_result = v->err == REDIS_E_AUTH ? -2 : -1;
        return;
    }
    if (cluster_parse_slots(v, &ranges, &n) == -1 || n == 0) {
        snprintf(c->cl_why, sizeof c->cl_why, "cluster slots from %s:%d: %s", node->host, node->port,
                 n == 0 && v->type == REDIS_T_ARRAY ? "no slot is served (is the cluster created?)"
                                                    : "not a slot map (is it a cluster node?)");
        free(ranges);
        c->refresh_result = -1;
        return;
    }
    char asked[CLUSTER_HOST_MAX];
    snprintf(asked, sizeof asked, "%s", node->host);
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++)
        c->slot_node[s] = -1;
    for (size_t i = 0; i < n; i++) {
        int to = cl_node(c, ranges[i].host[0] ? ranges[i].host : asked, ranges[i].port);
        for (unsigned s = ranges[i].lo; s <= ranges[i].hi; s++)
            c->slot_node[s] = to;
    }
    free(ranges);
    if (c->have_map)
        cl_counts.refreshes++;
    c->have_map = true;
    c->refresh_result = 1;
}

/* Ask the next node for the map: the ones we are connected to first, then the rest in
 * turn (the seeds lead the list). */
static void cl_refresh_start(struct redis *c, long long now)
{
    c->refresh_at = 0;
    while (c->refresh_tried < c->nnodes) {
        size_t i = c->refresh_next % c->nnodes;
        for (size_t k = 0; k < c->nnodes && c->refresh_tried == 0; k++) {
            size_t j = (c->refresh_next + k) % c->nnodes;
            if (c->nodes[j].conn && redis_ready(c->nodes[j].conn)) {
                i = j;
                break;
            }
        }
        c->refresh_next = i + 1;
        c->refresh_tried++;
        if (c->nodes[i].down_until > now && c->have_map)
            continue;
        struct redis *nc = cl_conn(c, (int)i);
        redis_set_max_reply_bytes(nc, 0);
        long t = c->opts.connect_timeout_ms < CL_ASK_MS ? c->opts.connect_timeout_ms : CL_ASK_MS;
        if (redis_commandv(nc, refresh_cb, c, t, "CLUSTER", "SLOTS", NULL) == 0) {
            c->refresh_node = i;
            c->refreshing = true;
            return;
        }
        snprintf(c->cl_why, sizeof c->cl_why, "node %s:%d: %.200s", c->nodes[i].host, c->nodes[i].port,
                 redis_error(nc));
        c->nodes[i].down_until = now + CL_DOWN_RETRY_MS;
    }
    c->refresh_result = -1;         /* nobody left to ask in this round */
}

/* Every node connection goes, without callbacks; every command of the owner's gets its error. */
static void cl_fail(struct redis *c, enum redis_errkind kind, const char *why)
{
    for (size_t i = 0; i < c->nnodes; i++) {
        redis_free(c->nodes[i].conn);
        c->nodes[i].conn = NULL;
        c->nodes[i].ep_fd = -1;     /* closing removed it from the set */
    }
    snprintf(c->error, sizeof c->error, "%s", why);
    c->error_kind = kind;
    c->gen++;
    c->have_map = c->refreshing = false;
    c->refresh_result = 0;
    c->refresh_tried = 0;
    c->refresh_at = 0;
    if (c->opts.no_reconnect) {
        c->state = ST_CLOSED;
    } else {
        c->state = ST_WAIT;
        c->attempt++;
        c->rng ^= c->rng << 13, c->rng ^= c->rng >> 7, c->rng ^= c->rng << 17;
        c->next_connect = redis_now_ms() + backoff_ms(BACKOFF_EXPONENTIAL, c->opts.backoff_min_ms,
                                                      c->opts.backoff_max_ms, 20, c->attempt,
                                                      (double)(c->rng >> 11) / 9007199254740992.0);
    }
    struct ccmd *list = c->cl_head;
    c->cl_head = c->cl_tail = NULL;
    c->ncl = 0;
    while (list) {
        struct ccmd *cc = list;
        list = cc->next;
        struct redis_reply v;
        fail_reply(&v, kind, c->error);
        if (cc->cb)
            cc->cb(cc->arg, &v);
        free(cc);
    }
}

static void cl_start(struct redis *c)
{
    c->state = ST_CONNECTING;
    c->refresh_tried = 0;
    c->refresh_next = 0;
    c->refresh_result = 0;
    c->cl_why[0] = '\0';
    cl_refresh_start(c, redis_now_ms());
}

static void cl_ep_sync(struct redis *c)
{
    for (size_t i = 0; i < c->nnodes; i++) {
        struct cl_node *n = &c->nodes[i];
        int want = n->conn ? redis_fd(n->conn) : -1;
        if (n->ep_fd < 0 || n->ep_fd == want)
            continue;
        bool taken = false;         /* its number is another node's socket now */
        for (size_t j = 0; j < c->nnodes && !taken; j++)
            taken = j != i && c->nodes[j].conn && redis_fd(c->nodes[j].conn) == n->ep_fd;
        if (!taken)
            epoll_ctl(c->epfd, EPOLL_CTL_DEL, n->ep_fd, NULL);
        n->ep_fd = -1;
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        struct cl_node *n = &c->nodes[i];
        int want = n->conn ? redis_fd(n->conn) : -1;
        if (want >= 0)
            ep_add(c, (int)i, want, redis_events(n->conn));
        n->ep_fd = want;
    }
}

static void cl_run(struct redis *c, long long now)
{
    if (c->state == ST_WAIT && now >= c->next_connect)
        cl_start(c);
    if (c->state == ST_CLOSED || c->state == ST_WAIT)
        return;
    short rev[64] = { 0 };
    struct epoll_event ev[64];
    int ne = epoll_wait(c->epfd, ev, 64, 0);
    for (int i = 0; i < ne; i++) {
        short re = (short)((ev[i].events & EPOLLIN ? POLLIN : 0) | (ev[i].events & EPOLLOUT ? POLLOUT : 0) |
                           (ev[i].events & EPOLLERR ? POLLERR : 0) | (ev[i].events & EPOLLHUP ? POLLHUP : 0));
        if (ev[i].data.u32 < 64)
            rev[ev[i].data.u32] |= re;
    }
    /* Every node runs (deadlines, TLS bytes poll() cannot see); callbacks may add nodes. */
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].conn)
            redis_run(c->nodes[i].conn, i < 64 ? rev[i] : POLLIN, now);
    for (size_t i = 0; i < c->nnodes; i++) {
        struct redis *nc = c->nodes[i].conn;
        if (nc && redis_fd(nc) == -1 && redis_pending(nc) == 0) {
            redis_free(nc);
            c->nodes[i].conn = NULL;
        }
    }
    if (c->refresh_result == 1) {
        c->refresh_result = 0;
        c->refresh_tried = 0;
        c->state = ST_UP;
        c->attempt = 0;
    } else if (c->refresh_result == -2) {
        char why[sizeof c->error];
        snprintf(why, sizeof why, "redis refused our credentials: %.280s", c->cl_why);
        cl_fail(c, REDIS_E_AUTH, why);
        return;
    } else if (c->refresh_result == -1) {
        c->refresh_result = 0;
        if (c->refresh_tried < c->nnodes) {
            cl_refresh_start(c, now);
        } else if (!c->have_map) {
            char why[sizeof c->error];
            snprintf(why, sizeof why, "no cluster node answered: %.280s", c->cl_why);
            cl_fail(c, REDIS_E_IO, why);
            return;
        } else {
            c->refresh_tried = 0;
            c->refresh_at = now + CL_REFRESH_PAUSE_MS;
        }
    }
    if (!c->refreshing && c->refresh_at && now >= c->refresh_at && c->refresh_result == 0) {
        c->refresh_tried = 0;
        cl_refresh_start(c, now);
    }
    /* What waits past its deadline: its error now. */
    for (struct ccmd *cc = c->cl_head, *next; cc; cc = next) {
        next = cc->next;
        if (cc->node >= 0 || cc->deadline > now)
            continue;
        char why[sizeof c->error];
        snprintf(why, sizeof why, "no reply within its deadline%s%.280s", c->cl_why[0] ? ": " : "", c->cl_why);
        struct redis_reply v;
        fail_reply(&v, REDIS_E_TIMEOUT, why);
        cl_unlink(c, cc);
        if (cc->cb)
            cc->cb(cc->arg, &v);
        free(cc);
        next = c->cl_head;          /* the callback may have queued or failed others */
    }
    cl_pump(c, now);
    /* What was just put on a node's connection goes out now, not one poll later (as without a
     * cluster, where the owner's poll() after redis_command() asks for POLLOUT). */
    for (size_t i = 0; i < c->nnodes; i++)
        if (c->nodes[i].conn && redis_ready(c->nodes[i].conn) && (redis_events(c->nodes[i].conn) & POLLOUT))
            redis_run(c->nodes[i].conn, 0, now);
}

static long cl_timeout_ms(const struct redis *c, long long now)
{
    long long due = -1;
#define DUE(t) do { long long t_ = (t); if (due == -1 || t_ < due) due = t_; } while (0)
    if (c->state == ST_WAIT)
        DUE(c->next_connect);
    if (c->state == ST_CLOSED || c->state == ST_WAIT)
        return due == -1 ? -1 : due <= now ? 0 : (long)(due - now);
    if (c->refresh_result)
        DUE(now);
    if (c->refresh_at && !c->refreshing)
        DUE(c->refresh_at);
    for (const struct ccmd *cc = c->cl_head; cc; cc = cc->next) {
        if (cc->node >= 0)
            continue;
        DUE(cc->deadline);
        if (c->have_map)
            DUE(cc->retry_at);
    }
    for (size_t i = 0; i < c->nnodes; i++) {
        long t = c->nodes[i].conn ? redis_timeout_ms(c->nodes[i].conn, now) : -1;
        if (t >= 0)
            DUE(now + t);
    }
#undef DUE
    return due == -1 ? -1 : due <= now ? 0 : (long)(due - now);
}

static int cl_command(struct redis *c, int argc, const char **argv, const size_t *argvlen, redis_cb *cb, void *arg,
                      long timeout_ms)
{
    if (c->state == ST_CLOSED || c->state == ST_WAIT) {
        if (c->error[0] == '\0')
            snprintf(c->error, sizeof c->error, "not connected");
        return -1;
    }
    size_t bytes = sizeof(struct ccmd) + (size_t)argc * (sizeof(char *) + sizeof(size_t));
    for (int i = 0; i < argc; i++)
        bytes += argvlen[i] + 1;
    struct ccmd *cc = xcalloc(1, bytes);
    cc->len = (size_t *)(cc + 1);
    cc->argv = (const char **)(cc->len + argc);
    char *p = (char *)(cc->argv + argc);
    for (int i = 0; i < argc; i++) {
        memcpy(p, argv[i], argvlen[i]);
        p[argvlen[i]] = '\0';
        cc->argv[i] = p;
        cc->len[i] = argvlen[i];
        p += argvlen[i] + 1;
    }
    cc->argc = argc;
    cc->c = c;
    cc->cb = cb;
    cc->arg = arg;
    cc->deadline = redis_now_ms() + timeout_ms;
    cc->max_reply = c->opts.max_reply_bytes;
    cc->node = cc->ask_node = -1;
    int k = cluster_key_index(argc, argv, argvlen);
    cc->slot = k >= 0 && k < argc ? (int)cluster_keyslot(argv[k], argvlen[k]) : -1;
    bool multi = argc == 1 && argvlen[0] == 5 && strncasecmp(argv[0], "MULTI", 5) == 0;
    bool end = argc == 1 && ((argvlen[0] == 4 && strncasecmp(argv[0], "EXEC", 4) == 0) ||
                             (argvlen[0] == 7 && strncasecmp(argv[0], "DISCARD", 7) == 0));
    if (multi)
        c->txn_open = ++c->txn_seq ? c->txn_seq : ++c->txn_seq;
    cc->txn = c->txn_open;
    if (end && c->txn_open) {
        cc->txn_end = true;
        c->txn_open = 0;
    }
    cc->prev = c->cl_tail;
    if (c->cl_tail)
        c->cl_tail->next = cc;
    else
        c->cl_head = cc;
    c->cl_tail = cc;
    c->ncl++;
    return 0;
}

static void cl_open(struct redis *c, const struct redis_addr *a)
{
    c->addr.cluster = true;
    c->addr.nseeds = a->nseeds;
    c->addr.seeds = xcalloc(a->nseeds ? a->nseeds : 1, sizeof *c->addr.seeds);
    for (size_t i = 0; i < a->nseeds; i++)
        c->addr.seeds[i] = (struct redis_node){ xstrdup(a->seeds[i].host), a->seeds[i].port };
    c->slot_node = xmalloc(CLUSTER_SLOTS * sizeof *c->slot_node);
    for (unsigned s = 0; s < CLUSTER_SLOTS; s++)
        c->slot_node[s] = -1;
    for (size_t i = 0; i < a->nseeds; i++)
        cl_node(c, a->seeds[i].host, a->seeds[i].port);
    if (c->nnodes == 0)
        cl_node(c, a->host, a->port);
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (c->epfd == -1)
        fatal("epoll_create1");
    cl_start(c);
    cl_ep_sync(c);
}

static void cl_release(struct redis *c)
{
    for (size_t i = 0; i < c->nnodes; i++) {
        redis_free(c->nodes[i].conn);
        free(c->nodes[i].host);
    }
    free(c->nodes);
    free(c->slot_node);
    while (c->cl_head) {
        struct ccmd *cc = c->cl_head;
        c->cl_head = cc->next;
        free(cc);
    }
}

/* ---- the public face ---- */

static char *dup_or_null(const char *s)
{
    return s ? xstrdup(s) : NULL;
}

static struct redis *client_new(const struct redis_opts *o)
{
    struct redis *r = xcalloc(1, sizeof *r);
    if (o)
        r->opts = *o;
    if (r->opts.connect_timeout_ms <= 0)
        r->opts.connect_timeout_ms = DEFAULT_CONNECT_MS;
    if (r->opts.backoff_min_ms <= 0)
        r->opts.backoff_min_ms = DEFAULT_BACKOFF_MIN_MS;
    if (r->opts.backoff_max_ms < r->opts.backoff_min_ms)
        r->opts.backoff_max_ms = r->opts.backoff_min_ms > DEFAULT_BACKOFF_MAX_MS ? r->opts.backoff_min_ms
                                                                                  : DEFAULT_BACKOFF_MAX_MS;
    r->client_name = dup_or_null(r->opts.client_name);
    r->opts.client_name = r->client_name;
    r->fd = -1;
    r->epfd = -1;
    r->ep_fd[0] = r->ep_fd[1] = -1;
    r->rng = ((uint64_t)getpid() << 32 ^ (uint64_t)redis_now_ms()) | 1;
    struct buf empty = BUF_INIT;
    r->out = empty;
    r->held = empty;
    return r;
}

struct redis *redis_open(const struct redis_addr *a, const struct redis_opts *o)
{
    struct redis *r = client_new(o);
    r->addr.host = dup_or_null(a->host);
    r->addr.port = a->port;
    r->addr.unix_path = dup_or_null(a->unix_path);
    r->addr.user = dup_or_null(a->user);
    r->addr.password = dup_or_null(a->password);
    r->addr.db = a->db;
    r->addr.tls = a->tls;
    r->addr.tls_verify = a->tls_verify;
    r->addr.tls_ca = dup_or_null(a->tls_ca);
    r->addr.tls_cert = dup_or_null(a->tls_cert);
    r->addr.tls_key = dup_or_null(a->tls_key);
    r->addr.tls_server_name = dup_or_null(a->tls_server_name);
    r->addr.sentinel_master = dup_or_null(a->sentinel_master);
    r->addr.sentinel_password_file = dup_or_null(a->sentinel_password_file);
    if (a->nsentinels) {
        r->addr.nsentinels = a->nsentinels;
        r->addr.sentinels = xcalloc(a->nsentinels, sizeof *r->addr.sentinels);
        for (size_t i = 0; i < a->nsentinels; i++)
            r->addr.sentinels[i] = (struct redis_node){ xstrdup(a->sentinels[i].host), a->sentinels[i].port };
    }
    if (a->cluster) {
        cl_open(r, a);
        return r;
    }
    if (r->addr.sentinel_master) {
        r->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (r->epfd == -1)
            fatal("epoll_create1");
    }
    conn_start(r);
    ep_sync(r);
    return r;
}

void redis_free(struct redis *r)
{
    if (r == NULL)
        return;
    conn_close(r);
    sentinel_end(r);
    redis_free(r->watch);
    if (r->addr.cluster)
        cl_release(r);
    buf_release(&r->held);
    if (r->epfd >= 0)
        close(r->epfd);
    if (r->reader)
        redisReaderFree(r->reader);
    arena_release(&r->arena);
    buf_release(&r->out);
    free(r->q);
    free(r->client_name);
    conf_redis_release(&r->addr);
    free(r);
}

int redis_command(struct redis *r, int argc, const char **argv, const size_t *argvlen, redis_cb *cb, void *arg,
                  long timeout_ms)
{
    if (r->addr.cluster)
        return cl_command(r, argc, argv, argvlen, cb, arg, timeout_ms);
    if (r->state != ST_SENTINEL && r->state != ST_CONNECTING && r->state != ST_TLS && r->state != ST_UP) {
        if (r->error[0] == '\0')
            snprintf(r->error, sizeof r->error, "not connected");
        return -1;
    }
    /* hiredis 0.14's redisFormatCommandArgv() writes each "$LEN" with sprintf(); its sds form,
     * which hiredis's own redisAppendCommandArgv() uses, writes the same bytes cheaper. */
    sds cmd = NULL;
    int n = redisFormatSdsCommandArgv(&cmd, argc, argv, argvlen);
    if (n < 0)
        fatal("out of memory");
    /* Under sentinel, nothing of the owner's goes out before ROLE said "master". */
    if (r->addr.sentinel_master && !redis_ready(r))
        buf_add(&r->held, cmd, (size_t)n);
    else
        out_add(r, cmd, (size_t)n);
    sdsfree(cmd);
    queue_push(r, cb, arg, timeout_ms);
    ep_sync(r);                     /* POLLOUT, now that there is something to write */
    return 0;
}

/* The strings of a NULL-terminated list, for the *v forms. */
static int collect(va_list ap, const char **argv, size_t *len)
{
    int argc = 0;
    const char *s;
    while ((s = va_arg(ap, const char *)) != NULL) {
        if (argc == ARGV_MAX)
            fatal("redis: more than %d arguments", ARGV_MAX);
        argv[argc] = s;
        len[argc++] = strlen(s);
    }
    return argc;
}

int redis_commandv(struct redis *r, redis_cb *cb, void *arg, long timeout_ms, ...)
{
    const char *argv[ARGV_MAX];
    size_t len[ARGV_MAX];
    va_list ap;
    va_start(ap, timeout_ms);
    int argc = collect(ap, argv, len);
    va_end(ap);
    return redis_command(r, argc, argv, len, cb, arg, timeout_ms);
}

void redis_set_max_reply_bytes(struct redis *r, size_t max_reply_bytes)
{
    r->opts.max_reply_bytes = max_reply_bytes;
}

bool redis_ready(const struct redis *r)
{
    if (r->addr.cluster)
        return r->state == ST_UP && r->have_map;
    return r->state == ST_UP && r->setup_left == 0;
}

unsigned redis_drops(const struct redis *r)
{
    return r->gen;
}

const char *redis_error(const struct redis *r)
{
    return r->error;
}

enum redis_errkind redis_error_kind(const struct redis *r)
{
    return r->error_kind;
}

size_t redis_pending(const struct redis *r)
{
    return r->addr.cluster ? r->ncl : r->qlen;
}

/* ---- the blocking helper ---- */

struct waiter {
    bool done;
    struct redis_reply *reply;
};

static void wait_cb(void *arg, const struct redis_reply *v)
{
    struct waiter *w = arg;
    w->reply = redis_reply_dup(v);
    w->done = true;
}

static struct redis_reply *error_dup(enum redis_errkind kind, const char *text)
{
    struct redis_reply v;
    fail_reply(&v, kind, text);
    return redis_reply_dup(&v);
}

/* The poll loop of the blocking helper, until w is answered. Every queued command has a
 * deadline, so this ends. */
static void wait_for(struct redis *r, struct waiter *w)
{
    while (!w->done) {
        long long now = redis_now_ms();
        struct pollfd pfd = { .fd = redis_fd(r), .events = redis_events(r) };
        long t = redis_timeout_ms(r, now);
        if (pfd.fd >= 0 || t >= 0) {
            int n = poll(&pfd, pfd.fd >= 0 ? 1 : 0, t < 0 ? 1000 : (int)(t > 1000 ? 1000 : t));
            if (n == -1 && errno != EINTR)
                fatal("poll");
        }
        redis_run(r, pfd.fd >= 0 ? pfd.revents : 0, redis_now_ms());
        if (!w->done && r->state == ST_CLOSED && redis_pending(r) == 0)
            break;
    }
}

struct redis_reply *redis_call(struct redis *r, int argc, const char **argv, const size_t *argvlen, long timeout_ms)
{
    struct waiter w = { false, NULL };
    if (redis_command(r, argc, argv, argvlen, wait_cb, &w, timeout_ms) == -1)
        return error_dup(r->error_kind ? r->error_kind : REDIS_E_IO, r->error);
    wait_for(r, &w);
    return w.reply ? w.reply : error_dup(REDIS_E_IO, r->error[0] ? r->error : "connection closed");
}

struct redis_reply *redis_callv(struct redis *r, long timeout_ms, ...)
{
    const char *argv[ARGV_MAX];
    size_t len[ARGV_MAX];
    va_list ap;
    va_start(ap, timeout_ms);
    int argc = collect(ap, argv, len);
    va_end(ap);
    return redis_call(r, argc, argv, len, timeout_ms);
}

struct redis *redis_connect_blocking(const struct redis_addr *a, long timeout_ms, char *err, size_t errlen)
{
    /* A short-lived tool has no signalfd: a server that goes away mid-write must not kill it
     * with SIGPIPE (OpenSSL writes through write(), without MSG_NOSIGNAL). */
    signal(SIGPIPE, SIG_IGN);
    struct redis_opts o = { .connect_timeout_ms = timeout_ms, .no_reconnect = true, .client_name = "streamfleet-cli" };
    struct redis *r = redis_open(a, &o);
    /* PING answers once AUTH and SELECT have: their failure is its failure. */
    struct redis_reply *v = redis_callv(r, timeout_ms, "PING", NULL);
    if (v->type == REDIS_T_ERROR) {
        snprintf(err, errlen, "%s", r->error[0] ? r->error : v->str);
        redis_reply_free(v);
        redis_free(r);
        return NULL;
    }
    redis_reply_free(v);
    return r;
}

/* ---- the read path alone ---- */

struct redis *redis_open_detached(size_t max_reply_bytes)
{
    struct redis_opts o = { .max_reply_bytes = max_reply_bytes, .no_reconnect = true };
    struct redis *r = client_new(&o);
    r->state = ST_DETACHED;
    reader_reset(r);
    return r;
}

int redis_feed_detached(struct redis *r, const char *data, size_t len, size_t n, redis_cb *cb, void *arg)
{
    if (r->state != ST_DETACHED)
        return -1;
    for (size_t i = 0; i < n; i++)
        queue_push(r, cb, arg, 3600 * 1000L);
    if (redisReaderFeed(r->reader, data, len) != REDIS_OK)
        fatal("out of memory");
    return dispatch(r);
}
