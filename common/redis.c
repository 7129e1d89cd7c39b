/* redis.c: our Redis client. hiredis 0.14 gives us two pure pieces, the command formatter
 * (redisFormatCommandArgv: for the connection's own commands; the owner's commands are
 * formatted by out_command(), the same RESP without its cost) and the reply parser
 * (redisReader); the socket, TLS (OpenSSL), pipelining, deadlines and reconnects are ours, so
 * nothing here ever blocks (but the name lookup of a host name: getaddrinfo has no
 * non-blocking form; numeric addresses and unix sockets never wait).
 *
 * A connection's life: WAIT (backoff) -> CONNECTING (non-blocking connect, each address in
 * turn) -> TLS (handshake, SSL_ERROR_WANT_READ/WRITE) -> UP. Any failure goes through
 * conn_drop(), the one place that closes the socket, fails every queued command exactly once
 * and schedules the next attempt. Replies are built by our reply-object functions in an arena
 * that is reset once the reply's callback has returned. */
#include "common/redis.h"
#include "common/arena.h"
#include "common/backoff.h"
#include "common/buf.h"
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

enum state { ST_CLOSED, ST_WAIT, ST_CONNECTING, ST_TLS, ST_UP, ST_DETACHED };

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
};

static void conn_drop(struct redis *r, enum redis_errkind kind, const char *why);

long long redis_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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

static void queue_push(struct redis *r, redis_cb *cb, void *arg, long timeout_ms)
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
    r->q[r->qhead + r->qlen++] = (struct cmd){ cb, arg, redis_now_ms() + timeout_ms, timeout_ms };
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

/* Room for n more bytes (and a NUL) at the end of the output buffer. While it holds the
 * password, growing it moves the bytes by hand, so the old block is wiped before it is freed
 * (realloc would not). */
static void out_reserve(struct redis *r, size_t n)
{
    if (r->out_secret && r->out.len + n + 1 > r->out.cap) {
        struct buf nb = BUF_INIT;
        buf_grow(&nb, 2 * (r->out.len + n));
        buf_add(&nb, r->out.p, r->out.len);
        explicit_bzero(r->out.p, r->out.cap);
        buf_release(&r->out);
        r->out = nb;
    }
    buf_grow(&r->out, n);
}

static void out_add(struct redis *r, const char *p, size_t n)
{
    out_reserve(r, n);
    buf_add(&r->out, p, n);
}

/* Decimal digits of v written backwards from end; returns where they start. */
static char *put_digits(char *end, size_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

static char *put_header(char *p, char type, size_t v)
{
    char digits[24], *d = put_digits(digits + sizeof digits, v);
    size_t n = (size_t)(digits + sizeof digits - d);
    *p++ = type;
    memcpy(p, d, n);
    p += n;
    *p++ = '\r';
    *p++ = '\n';
    return p;
}

/* A command as RESP (an array of bulk strings: binary-safe, the bytes hiredis's formatter
 * writes) straight into the output buffer. hiredis 0.14's formatters cost a noop worker at
 * batch 10 about 1,500 instructions a message (redisFormatCommandArgv: sprintf per
 * argument; its sds form: sdscatfmt and sdscatlen per argument, both growing an sds); this
 * is some 30 per argument, and no allocation once the buffer has grown. */
static void out_command(struct redis *r, int argc, const char **argv, const size_t *len)
{
    size_t total = 1 + 20 + 2;
    for (int i = 0; i < argc; i++) {
        if (len[i] > SIZE_MAX / 2 - total)
            fatal("out of memory");
        total += 1 + 20 + 2 + len[i] + 2;
    }
    out_reserve(r, total);
    char *p = put_header(r->out.p + r->out.len, '*', (size_t)argc);
    for (int i = 0; i < argc; i++) {
        p = put_header(p, '$', len[i]);
        if (len[i])
            memcpy(p, argv[i], len[i]);
        p += len[i];
        *p++ = '\r';
        *p++ = '\n';
    }
    r->out.len = (size_t)(p - r->out.p);
    r->out.p[r->out.len] = '\0';
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

/* One place where a connection ends: close, remember why, schedule the next attempt, then
 * fail what was queued (callbacks last, with the client already in its new state). */
static void conn_drop(struct redis *r, enum redis_errkind kind, const char *why)
{
    conn_close(r);
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

static redis_cb auth_cb, select_cb, setname_cb;

/* What each connection says first, pipelined ahead of anything the owner queued. */
static void queue_setup(struct redis *r)
{
    const struct redis_addr *a = &r->addr;
    char db[16];
    if (a->password) {
        const char *argv[3] = { "AUTH", a->user ? a->user : a->password, a->password };
        size_t len[3] = { 4, strlen(argv[1]), strlen(argv[2]) };
        char *cmd = NULL;
        int n = redisFormatCommandArgv(&cmd, a->user ? 3 : 2, argv, len);
        if (n < 0)
            fatal("out of memory");
        out_add(r, cmd, (size_t)n);
        r->out_secret = true;
        explicit_bzero(cmd, (size_t)n);
        redisFreeCommand(cmd);
        queue_push(r, auth_cb, r, r->opts.connect_timeout_ms);
        r->setup_left++;
    }
    if (a->db) {
        snprintf(db, sizeof db, "%d", a->db);
        const char *argv[2] = { "SELECT", db };
        size_t len[2] = { 6, strlen(db) };
        char *cmd = NULL;
        int n = redisFormatCommandArgv(&cmd, 2, argv, len);
        if (n < 0)
            fatal("out of memory");
        out_add(r, cmd, (size_t)n);
        redisFreeCommand(cmd);
        queue_push(r, select_cb, r, r->opts.connect_timeout_ms);
        r->setup_left++;
    }
    if (r->client_name) {
        const char *argv[3] = { "CLIENT", "SETNAME", r->client_name };
        size_t len[3] = { 6, 7, strlen(r->client_name) };
        char *cmd = NULL;
        int n = redisFormatCommandArgv(&cmd, 3, argv, len);
        if (n < 0)
            fatal("out of memory");
        out_add(r, cmd, (size_t)n);
        redisFreeCommand(cmd);
        queue_push(r, setname_cb, r, r->opts.connect_timeout_ms);
        r->setup_left++;
    }
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

static void conn_up(struct redis *r)
{
    r->state = ST_UP;
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

static void conn_start(struct redis *r)
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

/* ---- reading and writing ---- */

/* A plain connection that the server ends before any reply may be one to a TLS port (Redis
 * 7.0 resets it when the handshake it expected does not come): say so. */
static const char *plain_hint(const struct redis *r)
{
    if (r->got_reply)
        return "";
    return r->addr.tls ? " before any reply" : " before any reply (does the server speak TLS on this port? then use rediss://)";
}

/* >0 bytes, 0 at end of stream, -1 with errno EAGAIN when nothing more now, -2 on an error
 * (the connection has been dropped). */
static ssize_t conn_read(struct redis *r, char *p, size_t n)
{
    if (r->ssl == NULL) {
        ssize_t got = recv(r->fd, p, n, 0);
        if (got >= 0)
            return got;
        if (errno == EAGAIN || errno == EINTR)
            return -1;
        char why[sizeof r->error];
        snprintf(why, sizeof why, "read: %s%s", strerror(errno), plain_hint(r));
        conn_drop(r, REDIS_E_IO, why);
        return -2;
    }
    ERR_clear_error();
    errno = 0;
    int got = SSL_read(r->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (got > 0)
        return got;
    int e = SSL_get_error(r->ssl, got);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    char why[sizeof r->error];
    tls_reason(r, "read", e, why, sizeof why);
    conn_drop(r, REDIS_E_IO, why);
    return -2;
}

static ssize_t conn_write(struct redis *r, const char *p, size_t n)
{
    if (r->ssl == NULL) {
        /* MSG_NOSIGNAL: a server gone away must not kill us with SIGPIPE. */
        ssize_t put = send(r->fd, p, n, MSG_NOSIGNAL);
        if (put >= 0)
            return put;
        if (errno == EAGAIN || errno == EINTR)
            return -1;
        char why[sizeof r->error];
        snprintf(why, sizeof why, "write: %s", strerror(errno));
        conn_drop(r, REDIS_E_IO, why);
        return -2;
    }
    ERR_clear_error();
    errno = 0;
    int put = SSL_write(r->ssl, p, (int)(n > INT32_MAX ? INT32_MAX : n));
    if (put > 0)
        return put;
    int e = SSL_get_error(r->ssl, put);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    char why[sizeof r->error];
    if (e == SSL_ERROR_SYSCALL) {
        /* TLS 1.3: a server that refuses our certificate (or its absence) says so in an
         * alert after our handshake has finished, and closes; our first write then meets a
         * reset. The alert came first: read it for the reason. */
        char scratch[256];
        ERR_clear_error();
        int got = SSL_read(r->ssl, scratch, sizeof scratch);
        if (got <= 0 && SSL_get_error(r->ssl, got) == SSL_ERROR_SSL) {
            tls_reason(r, "refused", SSL_ERROR_SSL, why, sizeof why);
            conn_drop(r, REDIS_E_IO, why);
            return -2;
        }
    }
    tls_reason(r, "write", e, why, sizeof why);
    conn_drop(r, REDIS_E_IO, why);
    return -2;
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
        if (c.cb)
            c.cb(c.arg, v);
        if (r->gen != gen)
            return -1;
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
    for (size_t i = 0; i < r->qlen; i++) {
        const struct cmd *c = &r->q[r->qhead + i];
        if (c->deadline <= now) {
            char why[sizeof r->error];
            snprintf(why, sizeof why, "no reply within %ld ms", c->timeout_ms);
            conn_drop(r, REDIS_E_TIMEOUT, why);
            return;
        }
    }
}

void redis_run(struct redis *r, short revents, long long now)
{
    if (r->state == ST_WAIT && now >= r->next_connect)
        conn_start(r);
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
    return r->state == ST_CONNECTING || r->state == ST_TLS || r->state == ST_UP ? r->fd : -1;
}

short redis_events(const struct redis *r)
{
    switch (r->state) {
    case ST_CONNECTING: return POLLOUT;
    case ST_TLS: return r->tls_want ? r->tls_want : POLLIN;
    case ST_UP: return (short)(POLLIN | (r->out_off < r->out.len ? POLLOUT : 0));
    default: return 0;
    }
}

long redis_timeout_ms(const struct redis *r, long long now)
{
    long long due = -1;
    if (r->state == ST_WAIT)
        due = r->next_connect;
    else if (r->state == ST_CONNECTING || r->state == ST_TLS)
        due = r->connect_deadline;
    else if (r->state == ST_UP)
        for (size_t i = 0; i < r->qlen; i++)
            if (due == -1 || r->q[r->qhead + i].deadline < due)
                due = r->q[r->qhead + i].deadline;
    if (due == -1)
        return -1;
    return due <= now ? 0 : (long)(due - now);
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
    r->rng = ((uint64_t)getpid() << 32 ^ (uint64_t)redis_now_ms()) | 1;
    struct buf empty = BUF_INIT;
    r->out = empty;
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
    conn_start(r);
    return r;
}

void redis_free(struct redis *r)
{
    if (r == NULL)
        return;
    conn_close(r);
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
    if (r->state != ST_CONNECTING && r->state != ST_TLS && r->state != ST_UP) {
        if (r->error[0] == '\0')
            snprintf(r->error, sizeof r->error, "not connected");
        return -1;
    }
    out_command(r, argc, argv, argvlen);
    queue_push(r, cb, arg, timeout_ms);
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
    return r->qlen;
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
        if (!w->done && r->state == ST_CLOSED && r->qlen == 0)
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
