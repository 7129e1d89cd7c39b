/* dlq.c: the dead-letter stream of a pool, seen and handled from the command line.
 *   streamfleet dlq list   -c FILE --pool NAME [--count N] [--fields]
 *   streamfleet dlq replay -c FILE --pool NAME (--all | ID...)
 *   streamfleet dlq purge  -c FILE --pool NAME (--all | --before DURATION)
 * (each with --help; exit status 0 done, 1 failed, 2 usage)
 * A pool of several streams has a dead-letter stream each (or one for all): the verbs act on
 * every one, and a replayed letter goes back to the stream it left (its dlq.stream).
 * A short-lived process with one connection on common/redis.c's blocking helper. The status
 * page's dead letters (dlq_web(), at the end) run here too, in a child the master forks for
 * each request (supervisor/dlqweb.c): replay and purge are the same functions. */
#include "supervisor/dlq.h"
#include "supervisor/rediscli.h"
#include "common/conf.h"
#include "common/buf.h"
#include "common/dur.h"
#include "common/log.h"
#include "common/redis.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The worker writes a dead letter as the message's own fields, in their order, followed by these
 * six, last and in this order (child/stream.c). Only that tail is metadata: a message may carry
 * fields of the same names (its own "dlq.reason"), and they are the message's, kept on replay
 * and shown as fields by list. */
#define DLQ_META 6
static const char *const dlq_meta[DLQ_META] = { "dlq.stream", "dlq.id",    "dlq.reason",
                                                "dlq.attempts", "dlq.error", "dlq.time" };
enum { META_STREAM, META_ID, META_REASON, META_ATTEMPTS, META_ERROR, META_TIME };

/* Entries read per page by replay --all: a dead letter can hold up to max_message_bytes, so
 * pages stay small. */
#define DLQ_PAGE 20
/* Every command's deadline: a frozen Redis fails the tool instead of hanging it. */
#define CALL_MS 10000

/* A dead letter, read from an XRANGE reply it points into: kv is the flat [f, v, f, v...] list,
 * norig the number of original fields (pairs) before the metadata. */
struct letter {
    const char *id;
    const struct redis_reply *kv;
    size_t norig;
};

/* Replay is one MULTI/EXEC: a script notes the stream's last entry, the client's XADD puts the
 * original fields back, a second script checks that the XADD added an entry and only then
 * deletes the dead letter. The XADD is the client's, not a script's: Lua 5.1 cannot pass more
 * than about 8,000 values to redis.call (LUAI_MAXCSTACK; "too many results to unpack"), and a
 * dead letter can have more fields than that. EXEC does not roll back a failed command, hence
 * the check: when the XADD failed (wrong type, out of memory) the dead letter stays as it was;
 * when the dead letter vanished since we read it (replayed or purged by someone else) the new
 * entry is deleted again. The note lives in a scratch key that exists only inside the
 * transaction: nothing can run between the three commands.
 * KEYS: stream, scratch. */
static const char replay_before_lua[] =
    "local t = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\n"
    "redis.call('SET', KEYS[2], t[1] and t[1][1] or 'none')\n"
    "return 1\n";

/* KEYS: stream, scratch, dlq. ARGV: dead-letter id. Returns the new entry's id, nil when the
 * dead letter was gone (and the new entry is deleted again), or an error when nothing was added. */
static const char replay_after_lua[] =
    "local before = redis.call('GET', KEYS[2])\n"
    "redis.call('DEL', KEYS[2])\n"
    "if not before then return redis.error_reply('the stream could not be read') end\n"
    "local t = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)\n"
    "if not t[1] or t[1][1] == before then return redis.error_reply('the entry was not added') end\n"
    "local id = t[1][1]\n"
    "if #redis.call('XRANGE', KEYS[3], ARGV[1], ARGV[1]) == 0 then\n"
    "  redis.call('XDEL', KEYS[1], id)\n"
    "  return false\n"
    "end\n"
    "redis.call('XDEL', KEYS[3], ARGV[1])\n"
    "return id\n";

/* The help of each verb: its synopsis (also printed after a usage mistake) and its options. */
static const struct dlq_verb {
    const char *name, *synopsis, *help;
} dlq_verbs[] = {
    { "list", "streamfleet dlq list   [-c FILE] --pool NAME [--count N] [--fields]",
      "Show a pool's dead letters, oldest first, and how many of how many there are.\n"
      "  -n, --count N      show at most N (1 to 1000000, default 100)\n"
      "  -f, --fields       also show each message's own fields\n" },
    { "replay", "streamfleet dlq replay [-c FILE] --pool NAME (--all | ID...)",
      "Put dead letters back on the pool's stream, each one atomically (added there, then\n"
      "deleted from the dead letters).\n"
      "  -a, --all          every dead letter there is when it starts\n"
      "  ID...              these dead letters: all must exist, or none is replayed\n" },
    { "purge", "streamfleet dlq purge  [-c FILE] --pool NAME (--all | --before DURATION)",
      "Delete dead letters.\n"
      "  -a, --all          every one\n"
      "  -b, --before DUR   those older than DUR (e.g. 7d, 12h)\n" },
};
#define DLQ_NVERBS (sizeof dlq_verbs / sizeof dlq_verbs[0])

/* Help for verb v, or for all of them when v is NULL, on out. */
static void usage(FILE *out, const struct dlq_verb *v)
{
    for (size_t i = 0; i < DLQ_NVERBS; i++)
        if (v == NULL || v == &dlq_verbs[i])
            fprintf(out, "%s %s\n", i == 0 || v ? "usage:" : "      ", dlq_verbs[i].synopsis);
    if (v)
        fputs(v->help, out);
    else
        fputs("Each command's own options: streamfleet dlq COMMAND --help\n", out);
    fputs("  -c, --config FILE  configuration file (default /etc/streamfleet/streamfleet.ini)\n"
          "  -p, --pool NAME    the pool ([pool:NAME]) whose dead letters (its dlq key) to use\n"
          "  -h, --help         print this help and exit\n"
          "  -V, --version      print the version and exit\n"
          "exit status: 0 done, 1 failed, 2 usage\n", out);
}

/* A usage mistake, said on stderr: msg (when not NULL), the synopsis, where to find more.
 * Returns the exit status for it. */
static int usage_error(const struct dlq_verb *v, const char *msg)
{
    if (msg)
        fprintf(stderr, "streamfleet dlq%s%s: %s\n", v ? " " : "", v ? v->name : "", msg);
    for (size_t i = 0; i < DLQ_NVERBS; i++)
        if (v == NULL || v == &dlq_verbs[i])
            fprintf(stderr, "%s %s\n", i == 0 || v ? "usage:" : "      ", dlq_verbs[i].synopsis);
    fprintf(stderr, "Try 'streamfleet dlq%s%s --help' for more information.\n", v ? " " : "", v ? v->name : "");
    return 2;
}

static struct redis *connect_redis(const struct redis_addr *a)
{
    char err[300], where[300];
    struct redis *rc = rediscli_connect(a, 5000, err, sizeof err);
    if (rc == NULL)
        fprintf(stderr, "streamfleet: %s (%s)\n", err, conf_redis_display(a, where, sizeof where));
    return rc;
}

/* The length of the UTF-8 sequence at s (n bytes left) with its code point in *cp, or 0 when
 * it is not one: truncated, overlong, a surrogate, beyond U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n, unsigned *cp)
{
    unsigned c = s[0], min;
    size_t len;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xe0) == 0xc0) {
        len = 2, c &= 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, c &= 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, c &= 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

/* Characters a terminal acts on instead of showing: C0 and C1 controls, DEL, and the
 * bidirectional-text controls that reorder what follows them. */
static bool unsafe_char(unsigned cp)
{
    return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) || cp == 0x61c || cp == 0x200e || cp == 0x200f ||
           (cp >= 0x2028 && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
}

/* Append s[0..n) to b as text a terminal shows and cannot be driven by: unsafe characters and
 * bytes that are not UTF-8 become \xNN (\n, \r and \t as such) and a backslash \\, so that no
 * escape can be forged; printable UTF-8 stays as it is. Fields are whatever a producer wrote:
 * raw, an ESC sequence could clear the screen, and a newline could forge a row of the table. */
static void add_escaped(struct buf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        size_t len = utf8_seq(u + i, n - i, &cp);
        if (len == 0) {
            buf_printf(b, "\\x%02x", u[i++]);
            continue;
        }
        if (cp == '\\')
            buf_adds(b, "\\\\");
        else if (cp == '\n')
            buf_adds(b, "\\n");
        else if (cp == '\r')
            buf_adds(b, "\\r");
        else if (cp == '\t')
            buf_adds(b, "\\t");
        else if (unsafe_char(cp))
            for (size_t k = 0; k < len; k++)
                buf_printf(b, "\\x%02x", u[i + k]);
        else
            buf_add(b, u + i, len);
        i += len;
    }
}

/* The escaped text of a string reply in b (reset first), "" for any other reply. */
static const char *escaped(struct buf *b, const struct redis_reply *v)
{
    buf_reset(b);
    buf_adds(b, "");
    if (v->type == REDIS_T_STRING)
        add_escaped(b, v->str, v->len);
    return b->p;
}

/* Read the entry e of an XRANGE reply as a dead letter: 0 when it ends with the six metadata
 * fields in the worker's order, -1 when it does not (l->id and l->kv are set either way). */
static int letter_parse(const struct redis_reply *e, struct letter *l)
{
    l->id = NULL, l->kv = NULL, l->norig = 0;
    if (e->type != REDIS_T_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_T_STRING)
        return -1;
    l->id = e->element[0]->str;
    l->kv = e->element[1];
    if (l->kv->type != REDIS_T_ARRAY || l->kv->elements % 2 != 0 || l->kv->elements < 2 * DLQ_META)
        return -1;
    for (size_t i = 0; i < l->kv->elements; i++)
        if (l->kv->element[i]->type != REDIS_T_STRING)
            return -1;
    size_t first = l->kv->elements - 2 * DLQ_META;
    for (int m = 0; m < DLQ_META; m++) {
        const struct redis_reply *name = l->kv->element[first + 2 * (size_t)m];
        if (name->len != strlen(dlq_meta[m]) || memcmp(name->str, dlq_meta[m], name->len) != 0)
            return -1;
    }
    l->norig = first / 2;
    return 0;
}

static const struct redis_reply *letter_meta(const struct letter *l, int m)
{
    return l->kv->element[2 * l->norig + 2 * (size_t)m + 1];
}

static int do_list(struct redis *rc, const struct pool_conf *p, long count, bool fields)
{
    char n[24];
    snprintf(n, sizeof n, "%ld", count);
    struct redis_reply *r = redis_callv(rc, CALL_MS, "XRANGE", p->dlq, "-", "+", "COUNT", n, NULL);
    if (r->type != REDIS_T_ARRAY) {
        fprintf(stderr, "streamfleet: xrange %s: %s\n", p->dlq,
                r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
        redis_reply_free(r);
        return 1;
    }
    struct buf reason = BUF_INIT, attempts = BUF_INIT, source = BUF_INIT, error = BUF_INIT,
               name = BUF_INIT, value = BUF_INIT;
    printf("%-22s %-20s %-14s %-8s %-22s %s\n", "DLQ ID", "TIME (UTC)", "REASON", "ATTEMPTS", "SOURCE ID", "ERROR");
    for (size_t i = 0; i < r->elements; i++) {
        struct letter l;
        bool ok = letter_parse(r->element[i], &l) == 0;
        if (l.id == NULL)
            continue;
        if (!ok) {
            printf("%-22s %-20s %-14s %-8s %-22s %s\n", l.id, "-", "-", "-", "-",
                   "not a dead letter: it does not end with the dlq.* fields");
        } else {
            long long ms = atoll(letter_meta(&l, META_TIME)->str);
            char when[32] = "-";
            if (ms > 0) {
                time_t t = (time_t)(ms / 1000);
                struct tm tm;
                gmtime_r(&t, &tm);
                strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
            }
            printf("%-22s %-20s %-14s %-8s %-22s %s\n", l.id, when, escaped(&reason, letter_meta(&l, META_REASON)),
                   escaped(&attempts, letter_meta(&l, META_ATTEMPTS)), escaped(&source, letter_meta(&l, META_ID)),
                   escaped(&error, letter_meta(&l, META_ERROR)));
        }
        /* The message's own fields: all of them when the entry is not in the dead-letter format. */
        size_t nshow = ok ? 2 * l.norig : l.kv->type == REDIS_T_ARRAY ? l.kv->elements : 0;
        for (size_t k = 0; fields && k + 1 < nshow; k += 2)
            printf("    %s = %s\n", escaped(&name, l.kv->element[k]), escaped(&value, l.kv->element[k + 1]));
    }
    /* How many of how many: XLEN after the XRANGE, so entries added in between only make the
     * total larger, never smaller than what is shown. */
    struct redis_reply *len = redis_callv(rc, CALL_MS, "XLEN", p->dlq, NULL);
    long long total = len->type == REDIS_T_INTEGER ? len->integer : -1;
    redis_reply_free(len);
    if (total >= 0 && (size_t)total > r->elements)
        printf("%zu of %lld dead letters in %s\n", r->elements, total, p->dlq);
    else if (total >= 0)
        printf("%zu dead letter%s in %s\n", r->elements, r->elements == 1 ? "" : "s", p->dlq);
    else
        printf("%zu dead letter%s shown of %s (the total is unknown)\n", r->elements,
               r->elements == 1 ? "" : "s", p->dlq);
    buf_release(&reason);
    buf_release(&attempts);
    buf_release(&source);
    buf_release(&error);
    buf_release(&name);
    buf_release(&value);
    redis_reply_free(r);
    return 0;
}

/* Say why l cannot be replayed (on stderr), or return 0 when it can. */
static int letter_check(const struct letter *l, bool parsed, const char *dlq)
{
    if (!parsed) {
        fprintf(stderr, "streamfleet: %s in %s is not a dead letter (it does not end with the fields %s ... %s): "
                        "not replayed\n", l->id, dlq, dlq_meta[0], dlq_meta[DLQ_META - 1]);
        return -1;
    }
    if (l->norig == 0) {
        fprintf(stderr, "streamfleet: dead letter %s has no original fields: not replayed\n", l->id);
        return -1;
    }
    return 0;
}

/* Where a replayed letter goes: for a pool of several streams, the one it left (dlq.stream),
 * when that is one of the pool's; else the pool's stream, as for a pool of one. */
static const char *letter_target(const struct pool_conf *p, const struct letter *l)
{
    const struct redis_reply *from = letter_meta(l, META_STREAM);
    for (size_t k = 0; p->nstreams > 1 && k < p->nstreams; k++)
        if (from->len == strlen(p->streams[k]) && memcmp(from->str, p->streams[k], from->len) == 0)
            return p->streams[k];
    return p->stream;
}

/* What the summary lines name as where the letters went. */
static const char *targets(const struct pool_conf *p)
{
    return p->nstreams > 1 ? "their streams" : p->stream;
}

/* The pool's dead-letter streams, each once (one for all when dlq is set): returns how many. */
static size_t pool_dlqs(const struct pool_conf *p, const char *dlqs[CONF_STREAMS_MAX])
{
    size_t n = 0;
    if (p->nstreams <= 1 || p->dlqs == NULL) {
        dlqs[n++] = p->dlq;
        return n;
    }
    for (size_t k = 0; k < p->nstreams; k++) {
        bool seen = false;
        for (size_t j = 0; j < n; j++)
            seen = seen || strcmp(dlqs[j], p->dlqs[k]) == 0;
        if (!seen)
            dlqs[n++] = p->dlqs[k];
    }
    return n;
}

/* A pipelined command's reply, kept for after the last one has come. */
static void keep_reply(void *arg, const struct redis_reply *v)
{
    *(struct redis_reply **)arg = redis_reply_dup(v);
}

/* Put the dead letter l back on the pool's stream and delete it from the dead-letter stream,
 * atomically (see replay_before_lua). Returns 0 with the new entry id in newid, 1 when the
 * dead letter was gone meanwhile (nothing changed), -1 on an error (said on stderr; nothing
 * changed, unless the connection broke before the outcome was known). *to: the stream it went
 * back to (letter_target()). */
static int replay_letter(struct redis *rc, const struct pool_conf *p, const struct letter *l, char *newid, size_t len,
                         const char **to)
{
    int status = -1;
    const char *stream = *to = letter_target(p, l);
    struct buf scratch = BUF_INIT;
    buf_printf(&scratch, "%s:replay-tx", p->dlq);
    size_t nx = 3 + 2 * l->norig;
    const char **argv = malloc(nx * sizeof *argv);
    size_t *alen = malloc(nx * sizeof *alen);
    if (argv == NULL || alen == NULL) {
        fprintf(stderr, "streamfleet: replay %s: out of memory\n", l->id);
        goto out;
    }
    argv[0] = "XADD", argv[1] = stream, argv[2] = "*";
    for (size_t i = 0; i < 2 * l->norig; i++)
        argv[3 + i] = l->kv->element[i]->str, alen[3 + i] = l->kv->element[i]->len;
    for (size_t i = 0; i < 3; i++)
        alen[i] = strlen(argv[i]);
    const char *before[5] = { "EVAL", replay_before_lua, "2", stream, scratch.p };
    const char *after[7] = { "EVAL", replay_after_lua, "3", stream, scratch.p, p->dlq, l->id };
    size_t blen[5], aflen[7];
    for (int i = 0; i < 5; i++)
        blen[i] = strlen(before[i]);
    for (int i = 0; i < 7; i++)
        aflen[i] = strlen(after[i]);
    /* One round trip: MULTI, the three commands, EXEC; then their five replies in order. */
    struct redis_reply *queued[4] = { NULL, NULL, NULL, NULL };
    const char *multi[1] = { "MULTI" };
    size_t mlen[1] = { 5 };
    redis_command(rc, 1, multi, mlen, keep_reply, &queued[0], CALL_MS);
    redis_command(rc, 5, before, blen, keep_reply, &queued[1], CALL_MS);
    redis_command(rc, (int)nx, argv, alen, keep_reply, &queued[2], CALL_MS);
    redis_command(rc, 7, after, aflen, keep_reply, &queued[3], CALL_MS);
    struct redis_reply *r = redis_callv(rc, CALL_MS, "EXEC", NULL);    /* waits for all five */
    char queue_err[256] = "";
    for (int i = 0; i < 4; i++) {
        if (queued[i] && queued[i]->type == REDIS_T_ERROR && queue_err[0] == '\0')
            snprintf(queue_err, sizeof queue_err, "%s", queued[i]->str);
        redis_reply_free(queued[i]);
    }
    if (r->type == REDIS_T_ERROR && (r->err == REDIS_E_IO || r->err == REDIS_E_TIMEOUT)) {
        fprintf(stderr, "streamfleet: replay %s: %s\n", l->id, r->str);
    } else if (r->type != REDIS_T_ARRAY || r->elements != 3) {
        /* EXECABORT: a command was refused when queued (out of memory, ...): nothing ran. */
        fprintf(stderr, "streamfleet: replay %s: %s\n", l->id,
                queue_err[0] ? queue_err : r->type == REDIS_T_ERROR ? r->str : "unexpected reply to exec");
    } else {
        const struct redis_reply *xadd = r->element[1], *res = r->element[2];
        if (res->type == REDIS_T_STRING) {
            snprintf(newid, len, "%s", res->str);
            status = 0;
        } else if (res->type == REDIS_T_NIL) {
            status = 1;
        } else {
            /* The first failure is the cause: the note, then the XADD, then the check. */
            const struct redis_reply *why = r->element[0]->type == REDIS_T_ERROR ? r->element[0]
                                    : xadd->type == REDIS_T_ERROR        ? xadd
                                                                             : res;
            fprintf(stderr, "streamfleet: replay %s: %s\n", l->id,
                    why->type == REDIS_T_ERROR ? why->str : "unexpected reply");
        }
    }
    redis_reply_free(r);
out:
    free(argv);
    free(alen);
    buf_release(&scratch);
    return status;
}

/* Fetch the dead letter id from dlq and check it can be replayed. Returns 0 with *reply (free
 * it) and l filled, 1 when there is no such entry, -1 when it cannot be replayed or Redis
 * failed (said on stderr). */
static int letter_fetch_from(struct redis *rc, const char *dlq, const char *id, struct redis_reply **reply,
                             struct letter *l)
{
    *reply = NULL;
    struct redis_reply *r = redis_callv(rc, CALL_MS, "XRANGE", dlq, id, id, NULL);
    if (r->type != REDIS_T_ARRAY) {
        fprintf(stderr, "streamfleet: %s: %s\n", id,
                r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
        redis_reply_free(r);
        return -1;
    }
    if (r->elements != 1) {
        redis_reply_free(r);
        return 1;
    }
    bool parsed = letter_parse(r->element[0], l) == 0;
    if (l->id == NULL)
        l->id = id;
    if (letter_check(l, parsed, dlq) == -1) {
        redis_reply_free(r);
        return -1;
    }
    *reply = r;
    return 0;
}

/* letter_fetch_from() the first of the pool's dead-letter streams that has id; *dlq: which
 * (the first when none has it). */
static int letter_fetch(struct redis *rc, const struct pool_conf *p, const char *id, struct redis_reply **reply,
                        struct letter *l, const char **dlq)
{
    const char *dlqs[CONF_STREAMS_MAX];
    size_t n = pool_dlqs(p, dlqs);
    *dlq = dlqs[0];
    for (size_t k = 0; k < n; k++) {
        int got = letter_fetch_from(rc, dlqs[k], id, reply, l);
        if (got != 1) {
            *dlq = dlqs[k];
            return got;
        }
    }
    return 1;
}

static int replay_ids(struct redis *rc, const struct pool_conf *p, char **ids, int nids, long *done)
{
    long n = 0;
    *done = 0;
    char newid[64];
    struct letter l;
    struct redis_reply *r;
    const char *dlq, *to;
    /* Every ID must be a dead letter before any is replayed: a typo must not replay half a list. */
    for (int i = 0; i < nids; i++) {
        int got = letter_fetch(rc, p, ids[i], &r, &l, &dlq);
        if (r)
            redis_reply_free(r);
        if (got == 1)
            fprintf(stderr, "streamfleet: no dead letter %s in %s: nothing replayed\n", ids[i], dlq);
        if (got != 0)
            return 1;
    }
    for (int i = 0; i < nids; i++) {
        int got = letter_fetch(rc, p, ids[i], &r, &l, &dlq);
        if (got == 1)
            continue;       /* replayed or purged by someone else since the check */
        struct pool_conf from = *p;     /* the dead-letter stream it was found in */
        from.dlq = (char *)dlq;
        int rr = got == 0 ? replay_letter(rc, &from, &l, newid, sizeof newid, &to) : -1;
        if (r)
            redis_reply_free(r);
        if (rr == -1) {
            printf("replayed %ld dead letter%s to %s before the error\n", n, n == 1 ? "" : "s", targets(p));
            return 1;
        }
        if (rr == 0) {
            printf("%s -> %s %s\n", ids[i], to, newid);
            *done = ++n;
        }
    }
    printf("replayed %ld dead letter%s to %s\n", n, n == 1 ? "" : "s", targets(p));
    return 0;
}

/* replay --all: the dead letters present when it starts, up to the last one then. Replayed
 * messages that fail again come back to the dead-letter stream with newer ids while this
 * runs; they are not replayed a second time (re-reading until the stream is empty would go on
 * as long as they keep failing). An entry that is not a dead letter is skipped and said. */
static int replay_all(struct redis *rc, const struct pool_conf *p, long *done)
{
    long n = 0, skipped = 0;
    *done = 0;
    char newid[64], last[64], cursor[80] = "-";
    struct redis_reply *r = redis_callv(rc, CALL_MS, "XREVRANGE", p->dlq, "+", "-", "COUNT", "1", NULL);
    if (r->type != REDIS_T_ARRAY) {
        fprintf(stderr, "streamfleet: xrevrange %s: %s\n", p->dlq,
                r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
        redis_reply_free(r);
        return 1;
    }
    struct letter l = { 0 };
    if (r->elements > 0)
        letter_parse(r->element[0], &l);
    bool empty = l.id == NULL;
    if (!empty)
        snprintf(last, sizeof last, "%s", l.id);
    redis_reply_free(r);
    while (!empty) {
        char page[16];
        snprintf(page, sizeof page, "%d", DLQ_PAGE);
        r = redis_callv(rc, CALL_MS, "XRANGE", p->dlq, cursor, last, "COUNT", page, NULL);
        if (r->type != REDIS_T_ARRAY) {
            fprintf(stderr, "streamfleet: xrange %s: %s\n", p->dlq,
                    r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
            redis_reply_free(r);
            printf("replayed %ld dead letter%s to %s before the error\n", n, n == 1 ? "" : "s", targets(p));
            return 1;
        }
        for (size_t i = 0; i < r->elements; i++) {
            bool parsed = letter_parse(r->element[i], &l) == 0;
            if (l.id == NULL)
                continue;
            snprintf(cursor, sizeof cursor, "(%s", l.id);
            if (letter_check(&l, parsed, p->dlq) == -1) {
                skipped++;
                continue;
            }
            const char *to;
            int rr = replay_letter(rc, p, &l, newid, sizeof newid, &to);
            if (rr == -1) {
                redis_reply_free(r);
                printf("replayed %ld dead letter%s to %s before the error\n", n, n == 1 ? "" : "s", targets(p));
                return 1;
            }
            n += rr == 0;
            *done = n;
        }
        bool last_page = r->elements < DLQ_PAGE || strcmp(cursor + 1, last) == 0;
        redis_reply_free(r);
        if (last_page)
            break;
    }
    printf("replayed %ld dead letter%s to %s\n", n, n == 1 ? "" : "s", targets(p));
    if (skipped) {
        fprintf(stderr, "streamfleet: %ld entr%s of %s not replayed (see above)\n", skipped,
                skipped == 1 ? "y" : "ies", p->dlq);
        return 1;
    }
    return 0;
}

static int do_purge(struct redis *rc, const struct pool_conf *p, bool all, long before_ms, long *done)
{
    struct redis_reply *r;
    *done = 0;
    if (all) {
        r = redis_callv(rc, CALL_MS, "XTRIM", p->dlq, "MAXLEN", "0", NULL);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        long long cut = (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - before_ms;
        /* Dead-letter entry ids are the time of the move: MINID trims everything older. */
        char minid[32];
        snprintf(minid, sizeof minid, "%lld-0", cut < 0 ? 0 : cut);
        r = redis_callv(rc, CALL_MS, "XTRIM", p->dlq, "MINID", minid, NULL);
    }
    if (r->type != REDIS_T_INTEGER) {
        fprintf(stderr, "streamfleet: xtrim %s: %s\n", p->dlq, r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
        redis_reply_free(r);
        return 1;
    }
    printf("purged %lld dead letter%s from %s\n", r->integer, r->integer == 1 ? "" : "s", p->dlq);
    *done = (long)r->integer;
    redis_reply_free(r);
    return 0;
}

int dlq_main(int argc, char **argv)
{
    if (argc < 2)
        return usage_error(NULL, "which one: list, replay or purge?");
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(stdout, NULL);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0 || strcmp(argv[1], "-V") == 0) {
        printf("streamfleet %s\n", SF_VERSION);
        return 0;
    }
    const struct dlq_verb *v = NULL;
    for (size_t i = 0; i < DLQ_NVERBS; i++)
        if (strcmp(argv[1], dlq_verbs[i].name) == 0)
            v = &dlq_verbs[i];
    if (v == NULL) {
        char msg[160];
        snprintf(msg, sizeof msg, "unknown command '%.100s' (list, replay, purge)", argv[1]);
        return usage_error(NULL, msg);
    }
    const char *path = "/etc/streamfleet/streamfleet.ini", *pool = NULL, *before = NULL;
    long count = 100;
    bool all = false, fields = false;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "pool", required_argument, NULL, 'p' },
        { "count", required_argument, NULL, 'n' },  { "all", no_argument, NULL, 'a' },
        { "before", required_argument, NULL, 'b' }, { "fields", no_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },         { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    optind = 2;
    int o;
    while ((o = getopt_long(argc, argv, "c:p:n:ab:fhV", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'p': pool = optarg; break;
        case 'a': all = true; break;
        case 'b': before = optarg; break;
        case 'f': fields = true; break;
        case 'n':
            if (int_parse(optarg, 1, 1000000, &count) == -1) {
                fprintf(stderr, "streamfleet: --count must be a number from 1 to 1000000\n");
                return 2;
            }
            break;
        case 'h': usage(stdout, v); return 0;
        case 'V': printf("streamfleet %s\n", SF_VERSION); return 0;
        default: return usage_error(v, NULL);      /* getopt said what was wrong */
        }
    }
    bool is_list = v == &dlq_verbs[0], is_replay = v == &dlq_verbs[1], is_purge = v == &dlq_verbs[2];
    if (pool == NULL)
        return usage_error(v, "--pool NAME is required");
    if (fields && !is_list) {
        fprintf(stderr, "streamfleet: --fields is for dlq list\n");
        return 2;
    }
    long before_ms = 0;
    if (is_purge && (all == (before != NULL))) {
        fprintf(stderr, "streamfleet: dlq purge needs exactly one of --all or --before DURATION\n");
        return 2;
    }
    if (before && dur_parse(before, &before_ms) == -1) {
        fprintf(stderr, "streamfleet: --before: not a duration: %s\n", before);
        return 2;
    }
    if (is_replay && (all == (optind < argc))) {
        fprintf(stderr, "streamfleet: dlq replay needs --all or IDs, not both\n");
        return 2;
    }

    struct conf *c = conf_load_or_report(path, NULL);
    if (c == NULL)
        return 1;
    int status = 1;
    const struct pool_conf *p = conf_pool(c, pool);
    if (p == NULL) {
        fprintf(stderr, "streamfleet: %s has no pool named '%s'\n", path, pool);
        goto out;
    }
    struct redis *rc = connect_redis(&c->redis);
    if (rc == NULL)
        goto out;
    long done;
    if (is_replay && !all) {
        status = replay_ids(rc, p, argv + optind, argc - optind, &done);
    } else {
        /* Each of the pool's dead-letter streams in turn (one, for a pool of one stream). */
        const char *dlqs[CONF_STREAMS_MAX];
        size_t ndlqs = pool_dlqs(p, dlqs);
        status = 0;
        for (size_t k = 0; k < ndlqs; k++) {
            struct pool_conf one = *p;
            one.dlq = (char *)dlqs[k];
            int st = is_list ? do_list(rc, &one, count, fields) : is_replay ? replay_all(rc, &one, &done)
                                                                            : do_purge(rc, &one, all, before_ms, &done);
            status = st ? st : status;
        }
    }
    redis_free(rc);
out:
    conf_free(c);
    return status;
}

/* ---- the same for the web page (supervisor/dlqweb.c runs it in a child of the master) ---- */

#define WEB_PREVIEW_FIELDS 4
#define WEB_PREVIEW_BYTES 80
/* A reason filter reads the dead letters newest first, page by page, up to this many: a
 * filter that matches nothing must not read a million entries. */
#define WEB_SCAN_MAX 5000

/* A JSON string of s[0..n), quotes included. */
static void json_s(struct buf *b, const char *s, size_t n)
{
    buf_addc(b, '"');
    buf_add_json_str(b, s, n);
    buf_addc(b, '"');
}

static void json_reply(struct buf *b, const struct redis_reply *v)
{
    if (v->type == REDIS_T_STRING)
        json_s(b, v->str, v->len);
    else
        buf_adds(b, "null");
}

static bool reply_is(const struct redis_reply *v, const char *s)
{
    return v->type == REDIS_T_STRING && v->len == strlen(s) && memcmp(v->str, s, v->len) == 0;
}

/* The dead-letter streams the request is about: the pool's, or only stream's (and then, when
 * it shares its dead-letter stream with others, *shared is set: filter on dlq.stream). Returns
 * how many, 0 when stream is none of the pool's: then out has the answer, for a 404. */
static size_t web_dlqs(const struct pool_conf *p, const char *stream, const char *dlqs[CONF_STREAMS_MAX],
                       bool *shared, struct buf *out)
{
    *shared = false;
    if (stream == NULL || *stream == '\0')
        return pool_dlqs(p, dlqs);
    if (p->nstreams <= 1) {
        if (strcmp(stream, p->stream) == 0) {
            dlqs[0] = p->dlq;
            return 1;
        }
    } else {
        for (size_t k = 0; k < p->nstreams; k++)
            if (strcmp(stream, p->streams[k]) == 0) {
                dlqs[0] = p->dlqs ? p->dlqs[k] : p->dlq;
                for (size_t j = 0; j < p->nstreams; j++)
                    *shared = *shared || (j != k && (p->dlqs == NULL || strcmp(p->dlqs[j], dlqs[0]) == 0));
                return 1;
            }
    }
    buf_adds(out, "{\"error\":\"no such stream in this pool\"}");
    return 0;
}

/* Entry ids compared as Redis orders them ("ms-seq"). */
static int id_cmp(const char *a, const char *b)
{
    unsigned long long am = strtoull(a, NULL, 10), bm = strtoull(b, NULL, 10);
    const char *ad = strchr(a, '-'), *bd = strchr(b, '-');
    unsigned long long as = ad ? strtoull(ad + 1, NULL, 10) : 0, bs = bd ? strtoull(bd + 1, NULL, 10) : 0;
    return am != bm ? (am < bm ? -1 : 1) : as != bs ? (as < bs ? -1 : 1) : 0;
}

/* One dead letter as the list shows it: its metadata and a preview of its first fields, or
 * all its fields (full). */
static void web_letter(struct buf *b, const struct redis_reply *e, const char *dlq, bool full)
{
    struct letter l;
    bool ok = letter_parse(e, &l) == 0;
    buf_adds(b, "{\"id\":");
    json_s(b, l.id, strlen(l.id));
    buf_adds(b, ",\"dlq\":");
    json_s(b, dlq, strlen(dlq));
    buf_printf(b, ",\"valid\":%s", ok ? "true" : "false");
    if (ok) {
        static const char *const keys[DLQ_META] = { "stream", "source_id", "reason", "attempts", "error", "time" };
        for (int m = 0; m < DLQ_META; m++) {
            buf_printf(b, ",\"%s\":", keys[m]);
            json_reply(b, letter_meta(&l, m));
        }
    }
    size_t nfields = ok ? l.norig : l.kv && l.kv->type == REDIS_T_ARRAY ? l.kv->elements / 2 : 0;
    size_t show = full || nfields < WEB_PREVIEW_FIELDS ? nfields : WEB_PREVIEW_FIELDS;
    buf_printf(b, ",\"nfields\":%zu,\"fields\":[", nfields);
    for (size_t k = 0; k < show; k++) {
        const struct redis_reply *name = l.kv->element[2 * k], *value = l.kv->element[2 * k + 1];
        buf_adds(b, k ? ",[" : "[");
        json_reply(b, name);
        buf_addc(b, ',');
        if (!full && value->type == REDIS_T_STRING && value->len > WEB_PREVIEW_BYTES) {
            /* Cut at a character's start: half a UTF-8 sequence would show as garbage. */
            size_t n = WEB_PREVIEW_BYTES;
            while (n > 0 && ((unsigned char)value->str[n] & 0xc0) == 0x80)
                n--;
            json_s(b, value->str, n);
        } else {
            json_reply(b, value);
        }
        buf_addc(b, ']');
    }
    buf_adds(b, "]}");
}

/* Whether the entry e (an XRANGE element) passes the filters: its dlq.reason is reason, its
 * dlq.stream is stream (each when not NULL). */
static bool web_match(const struct redis_reply *e, const char *reason, const char *stream)
{
    struct letter l;
    if (reason == NULL && stream == NULL)
        return true;
    if (letter_parse(e, &l) == -1)
        return false;
    return (reason == NULL || reply_is(letter_meta(&l, META_REASON), reason)) &&
           (stream == NULL || reply_is(letter_meta(&l, META_STREAM), stream));
}

struct web_hit {
    const struct redis_reply *e;        /* an entry of an XREVRANGE reply */
    size_t d;                           /* of which dead-letter stream */
};

/* The newest count dead letters of the request's streams older than rq->before, with the
 * filters; "next" is the id to ask for the page after (null at the end). */
static int web_list(struct redis *rc, const struct pool_conf *p, const struct dlq_request *rq, struct buf *out)
{
    const char *dlqs[CONF_STREAMS_MAX];
    bool shared;
    size_t n = web_dlqs(p, rq->stream, dlqs, &shared, out);
    if (n == 0)
        return 404;
    const char *reason = rq->reason && *rq->reason ? rq->reason : NULL;
    const char *stream = shared ? rq->stream : NULL;
    /* Per dead-letter stream, up to count matches, newest first; then the newest count of all. */
    struct redis_reply *pages[CONF_STREAMS_MAX][WEB_SCAN_MAX / DLQ_PAGE];
    size_t npages[CONF_STREAMS_MAX] = { 0 };
    struct web_hit *hits = xcalloc(n * (size_t)rq->count + 1, sizeof *hits);
    size_t nhits = 0;
    long long lengths[CONF_STREAMS_MAX];
    bool more = false;
    int status = 200;
    for (size_t d = 0; d < n; d++) {
        struct redis_reply *len = redis_callv(rc, CALL_MS, "XLEN", dlqs[d], NULL);
        lengths[d] = len->type == REDIS_T_INTEGER ? len->integer : -1;
        redis_reply_free(len);
        char cursor[80], page[24];
        if (rq->before && *rq->before)
            snprintf(cursor, sizeof cursor, "(%s", rq->before);
        else
            snprintf(cursor, sizeof cursor, "+");
        long found = 0, scanned = 0;
        long want = reason || stream ? DLQ_PAGE * 5 : rq->count + 1;
        while (found <= rq->count && scanned < WEB_SCAN_MAX && npages[d] < WEB_SCAN_MAX / DLQ_PAGE) {
            snprintf(page, sizeof page, "%ld", want);
            struct redis_reply *r = redis_callv(rc, CALL_MS, "XREVRANGE", dlqs[d], cursor, "-", "COUNT", page, NULL);
            if (r->type != REDIS_T_ARRAY) {
                buf_reset(out);
                buf_adds(out, "{\"error\":");
                char msg[300];
                snprintf(msg, sizeof msg, "xrevrange %s: %s", dlqs[d], r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
                json_s(out, msg, strlen(msg));
                buf_adds(out, "}");
                redis_reply_free(r);
                status = 502;
                goto out;
            }
            pages[d][npages[d]++] = r;
            for (size_t i = 0; i < r->elements; i++) {
                const struct redis_reply *e = r->element[i];
                if (e->type != REDIS_T_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_T_STRING)
                    continue;
                snprintf(cursor, sizeof cursor, "(%s", e->element[0]->str);
                if (!web_match(e, reason, stream))
                    continue;
                if (found++ < rq->count)
                    hits[nhits++] = (struct web_hit){ e, d };
                else
                    more = true;
            }
            scanned += (long)r->elements;
            if ((long)r->elements < want)
                break;
        }
        more = more || (found <= rq->count && scanned >= WEB_SCAN_MAX);
    }
    /* Newest first over every dead-letter stream (each is already). */
    for (size_t i = 1; i < nhits; i++)
        for (size_t j = i; j > 0 && id_cmp(hits[j - 1].e->element[0]->str, hits[j].e->element[0]->str) < 0; j--) {
            struct web_hit t = hits[j];
            hits[j] = hits[j - 1];
            hits[j - 1] = t;
        }
    if (nhits > (size_t)rq->count) {
        nhits = (size_t)rq->count;
        more = true;
    }
    buf_adds(out, "{\"pool\":");
    json_s(out, p->name, strlen(p->name));
    buf_adds(out, ",\"streams\":[");
    for (size_t k = 0; k < (p->nstreams > 1 ? p->nstreams : 1); k++) {
        const char *s = p->nstreams > 1 ? p->streams[k] : p->stream;
        buf_adds(out, k ? "," : "");
        json_s(out, s, strlen(s));
    }
    buf_printf(out, "],\"writable\":%s,\"dlqs\":[", rq->writable ? "true" : "false");
    for (size_t d = 0; d < n; d++) {
        buf_adds(out, d ? ",{\"name\":" : "{\"name\":");
        json_s(out, dlqs[d], strlen(dlqs[d]));
        buf_printf(out, ",\"length\":%lld}", lengths[d]);
    }
    buf_adds(out, "],\"letters\":[");
    for (size_t i = 0; i < nhits; i++) {
        buf_adds(out, i ? "," : "");
        web_letter(out, hits[i].e, dlqs[hits[i].d], false);
    }
    buf_adds(out, "],\"next\":");
    if (more && nhits > 0)
        json_s(out, hits[nhits - 1].e->element[0]->str, hits[nhits - 1].e->element[0]->len);
    else
        buf_adds(out, "null");
    buf_adds(out, "}");
out:
    for (size_t d = 0; d < n; d++)
        for (size_t k = 0; k < npages[d]; k++)
            redis_reply_free(pages[d][k]);
    free(hits);
    return status;
}

/* One dead letter with all its fields. */
static int web_one(struct redis *rc, const struct pool_conf *p, const char *id, struct buf *out)
{
    const char *dlqs[CONF_STREAMS_MAX];
    size_t n = pool_dlqs(p, dlqs);
    for (size_t d = 0; d < n; d++) {
        struct redis_reply *r = redis_callv(rc, CALL_MS, "XRANGE", dlqs[d], id, id, NULL);
        if (r->type != REDIS_T_ARRAY) {
            buf_adds(out, "{\"error\":");
            json_reply(out, r);
            buf_adds(out, "}");
            redis_reply_free(r);
            return 502;
        }
        if (r->elements == 1 && r->element[0]->type == REDIS_T_ARRAY && r->element[0]->elements == 2 &&
            r->element[0]->element[0]->type == REDIS_T_STRING) {
            web_letter(out, r->element[0], dlqs[d], true);
            redis_reply_free(r);
            return 200;
        }
        redis_reply_free(r);
    }
    buf_adds(out, "{\"error\":\"no such dead letter\"}");
    return 404;
}

/* Purge the dead letters ids of the dead-letter streams dlqs[0..n) (XDEL, one command each):
 * those no longer there are not counted. */
static int purge_ids(struct redis *rc, const char *const *dlqs, size_t n, char **ids, int nids, long *done)
{
    *done = 0;
    const char **argv = xcalloc((size_t)nids + 2, sizeof *argv);
    size_t *alen = xcalloc((size_t)nids + 2, sizeof *alen);
    int status = 0;
    argv[0] = "XDEL";
    for (int i = 0; i < nids; i++)
        argv[2 + i] = ids[i];
    for (size_t d = 0; d < n && status == 0; d++) {
        argv[1] = dlqs[d];
        for (int i = 0; i < nids + 2; i++)
            alen[i] = strlen(argv[i]);
        struct redis_reply *r = redis_call(rc, nids + 2, argv, alen, CALL_MS);
        if (r->type == REDIS_T_INTEGER) {
            *done += (long)r->integer;
            printf("purged %lld dead letter%s from %s\n", r->integer, r->integer == 1 ? "" : "s", dlqs[d]);
        } else {
            fprintf(stderr, "streamfleet: xdel %s: %s\n", dlqs[d], r->type == REDIS_T_ERROR ? r->str : "unexpected reply");
            status = 1;
        }
        redis_reply_free(r);
    }
    free(argv);
    free(alen);
    return status;
}

/* Replay or purge, by the functions of the command line; what they print becomes "output"
 * and "errors" of the answer. */
static int web_act(struct redis *rc, const struct pool_conf *p, const struct dlq_request *rq, struct buf *out)
{
    const char *dlqs[CONF_STREAMS_MAX];
    bool shared;
    size_t n = web_dlqs(p, rq->stream, dlqs, &shared, out);
    if (n == 0)
        return 404;
    if (rq->all && shared) {
        buf_adds(out, "{\"error\":\"this stream shares its dead-letter stream with others: choose the letters\"}");
        return 400;
    }
    char *text = NULL, *errs = NULL;
    size_t ntext = 0, nerrs = 0;
    fflush(stdout);
    fflush(stderr);
    FILE *saved_out = stdout, *saved_err = stderr;
    FILE *o = open_memstream(&text, &ntext), *e = open_memstream(&errs, &nerrs);
    if (o == NULL || e == NULL)
        fatal("open_memstream");
    stdout = o, stderr = e;
    long done = 0, total = 0;
    int st = 0;
    bool replay = rq->op == DLQ_OP_REPLAY;
    if (!rq->all) {
        st = replay ? replay_ids(rc, p, rq->ids, rq->nids, &done) : purge_ids(rc, dlqs, n, rq->ids, rq->nids, &done);
        total = done;
    } else {
        for (size_t k = 0; k < n && st == 0; k++) {
            struct pool_conf one = *p;
            one.dlq = (char *)dlqs[k];
            st = replay ? replay_all(rc, &one, &done) : do_purge(rc, &one, true, 0, &done);
            total += done;
        }
    }
    stdout = saved_out, stderr = saved_err;
    fclose(o);
    fclose(e);
    buf_printf(out, "{\"ok\":%s,\"count\":%ld,\"output\":", st == 0 ? "true" : "false", total);
    json_s(out, text, ntext);
    buf_adds(out, ",\"errors\":");
    json_s(out, errs, nerrs);
    buf_adds(out, "}");
    free(text);
    free(errs);
    return st == 0 ? 200 : 409;
}

int dlq_web(const struct conf *c, const struct dlq_request *rq, struct buf *out)
{
    const struct pool_conf *p = conf_pool(c, rq->pool ? rq->pool : "");
    if (p == NULL) {
        buf_adds(out, "{\"error\":\"no such pool\"}");
        return 404;
    }
    char err[300];
    struct redis *rc = rediscli_connect(&c->redis, 5000, err, sizeof err);
    if (rc == NULL) {
        buf_adds(out, "{\"error\":");
        json_s(out, err, strlen(err));
        buf_adds(out, "}");
        return 502;
    }
    int status;
    switch (rq->op) {
    case DLQ_OP_LIST: status = web_list(rc, p, rq, out); break;
    case DLQ_OP_LETTER: status = web_one(rc, p, rq->id, out); break;
    default: status = web_act(rc, p, rq, out); break;
    }
    redis_free(rc);
    return status;
}
