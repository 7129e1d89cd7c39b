/* conf.c: read the INI file with inih, check every key against one table, then check the rules
 * that span keys in one place (validate()). Every problem is collected, so one run of
 * `streamfleet -t` shows them all, each as "FILE:LINE: message".
 *
 * inih (Debian r55) is used through ini_parse_stream() and a reader of our own, because of how
 * that build behaves (INI_HANDLER_LINENO=0, INI_MAX_LINE 200 on the stack):
 *   - a line longer than the buffer is split, and its tail is parsed as a line of its own: a
 *     long value ending in "admin_token=hijacked" silently creates that key;
 *   - section and key names are cut at 49 characters, so two long names sharing a prefix merge;
 *   - the handler is given no line number, and is not called at all for a syntax error or for a
 *     section header, so an empty section is invisible to it;
 *   - ini_parse_stream() reports only the first syntax error.
 * The reader therefore sees every raw line first: it counts lines, rejects what inih would
 * mangle (handing inih an empty line in its place, so line numbers stay in step and nothing of
 * the line is parsed), reports malformed lines itself, and opens sections. inih is left to split
 * "key = value" lines, which is all it is trusted with.
 *
 * Syntax, as inih reads it with our settings: "[section]", "key = value" (or "key: value"),
 * whole-line comments starting with ';' or '#', and inline comments: " ;" (a ';' after
 * whitespace) starts a comment that runs to the end of the line, so a value can never contain
 * " ;" (a password in the Redis URL can: percent-encode it, "%20;"). Multi-line continuation is
 * off: an indented line is an ordinary line. */
#include "common/conf.h"
#include "common/argv.h"
#include "common/buf.h"
#include "common/cluster.h"
#include "common/dur.h"
#include "common/log.h"
#include "common/sb.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <unistd.h>

/* inih keeps 49 characters of a section or key name (MAX_SECTION, MAX_NAME = 50 with the NUL).
 * We accept one fewer, so a name inih would cut is always an error, never a merge. */
#define NAME_MAX_INI 48

#define KEYS_MAX 96             /* rows of the key table, at most */

#define SECOND (1000L)
#define MINUTE (60 * SECOND)
#define HOUR   (60 * MINUTE)
#define DAY    (24 * HOUR)

/* SEC_HANDLER: a [handler:NAME] section. It takes the rows of SEC_POOL that are not KEY_POOL
 * (the handler keys), through the same setters into a struct pool_conf of its own. */
enum section { SEC_NONE, SEC_FLEET, SEC_POOL, SEC_HANDLER, SEC_SKIP };

/* One problem found while loading. line orders the report (0: about the whole file or the
 * environment); seq keeps problems of one line in the order they were found. */
struct problem {
    int line;
    size_t seq;
    char *msg;
};

struct key;

/* A key = value line of a pool or handler section that was accepted, kept until the end of the
 * load: a routed pool's targets are made by setting the pool's KEY_POOL lines and a handler
 * section's lines again, through the same setters, into a fresh pool_conf. value may be a
 * secret (a header): wiped before it is freed. */
struct pair {
    enum section sec;
    size_t idx;                 /* c->pools or c->handlers */
    const struct key *k;
    char *value;
};

/* The state of one conf_load(). The reader and the handler share it: inih calls the reader for
 * line N, then the handler for line N (if it holds a pair), before it asks for line N+1, so
 * lineno and the current section are always those of the line the handler is given. */
struct loader {
    const char *path;
    struct conf *c;
    FILE *fp;
    char *raw;                  /* getline() buffer; wiped at the end, it held secrets */
    size_t rawcap;
    int read_errno;
    int lineno;                 /* lines read so far = the line inih is working on */
    enum section sec;
    char section[NAME_MAX_INI + 1];
    size_t pool;                /* index into c->pools when sec == SEC_POOL */
    int fleet_line;             /* line of [fleet], 0: none yet */
    bool pool_headers;          /* some [pool:...] header was seen, even a rejected one */
    /* For each key of the table, the line where it was first set in [fleet] (fleet_keys) and in
     * each pool (pool_keys, parallel to c->pools). 0: not set; negative: set, but the value was
     * rejected (already reported, so later rules must not trust the field). */
    int fleet_keys[KEYS_MAX];
    int (*pool_keys)[KEYS_MAX];
    size_t handler;             /* index into c->handlers when sec == SEC_HANDLER */
    int (*handler_keys)[KEYS_MAX];      /* as pool_keys, for each [handler:NAME] */
    bool *handler_used;
    struct pair *pairs;
    size_t npairs;
    struct problem *probs;
    size_t nprobs;
};

/* A key's setter checks value and stores it into base (struct conf for [fleet], struct
 * pool_conf for a pool). On error it returns -1 with a message in err that does not repeat the
 * key name, and that never contains a secret. */
typedef int key_setter(const struct key *k, void *base, const char *value, char *err, size_t len);

/* Flags of a key. KEY_HTTP with KEY_REQUIRED: required in every pool with handler = http. */
#define KEY_REQUIRED 0x1u       /* must appear in every section of its kind */
#define KEY_HTTP     0x2u       /* only applies to handler = http */
#define KEY_REPEAT   0x4u       /* may appear more than once */
#define KEY_POOL     0x8u       /* a pool's own (reading, retries, supervision): not a handler
                                 * key, so not in [handler:NAME]. Every other pool key is a
                                 * handler key, accepted in [handler:NAME] too. */
#define KEY_PROC     0x10u       /* only applies to handler = exec and subprocess (with KEY_HTTP:
                                 * to those and http) */

struct key {
    enum section sec;
    const char *name;
    key_setter *set;
    size_t off;                 /* where the value goes in base */
    long min, max;              /* bounds for numbers and durations */
    unsigned flags;
};

static key_setter set_redis, set_listen, set_int, set_dur, set_bool, set_log_level,
    set_log_format, set_handler, set_method, set_name, set_field, set_url, set_content_type,
    set_header, set_file, set_backoff, set_percent, set_size, set_path, set_account, set_long,
    set_group_start, set_plugin, set_fields, set_command, set_env, set_pass_env, set_stdin, set_trim,
    set_workers, set_streams, set_priority;

#define F(field) offsetof(struct conf, field)
#define P(field) offsetof(struct pool_conf, field)

/* Every key, one row each. A new key is one row here, a field in conf.h, and a default in
 * conf_defaults() or pool_defaults(); rules that span keys go in validate_pool() (a handler's:
 * check_handler_keys(), which checks pools and [handler:NAME] sections alike). A SEC_POOL row
 * without KEY_POOL is a handler key: [handler:NAME] takes it too, with no more work. */
static const struct key keys[] = {
    { SEC_FLEET, "redis",         set_redis,      F(redis),            0, 0, 0 },
    { SEC_FLEET, "listen",        set_listen,     F(listen_host),      0, 0, 0 },
    { SEC_FLEET, "drain_timeout", set_dur,        F(drain_timeout_ms), 0, HOUR, 0 },
    { SEC_FLEET, "poll_interval", set_dur,        F(poll_interval_ms), 100, HOUR, 0 },
    { SEC_FLEET, "log_level",     set_log_level,  F(log_level),        0, 0, 0 },
    { SEC_FLEET, "log_format",    set_log_format, F(log_format),       0, 0, 0 },
    { SEC_FLEET, "log_file",      set_path,       F(log_file),         0, 0, 0 },
    { SEC_FLEET, "stats_interval", set_dur,       F(stats_interval_ms), 0, DAY, 0 },
    { SEC_FLEET, "pidfile",       set_path,       F(pidfile),          0, 0, 0 },
    { SEC_FLEET, "user",          set_account,    F(user),             0, 0, 0 },
    { SEC_FLEET, "group",         set_account,    F(group),            0, 0, 0 },
    { SEC_FLEET, "allow_root",    set_bool,       F(allow_root),       0, 0, 0 },
    { SEC_FLEET, "listen_token_file", set_file,   F(listen_token_file), 0, 0, 0 },
    { SEC_FLEET, "admin_token_file", set_file,    F(admin_token_file), 0, 0, 0 },
    { SEC_FLEET, "redis_tls_ca",   set_file,      F(redis.tls_ca),     0, 0, 0 },
    { SEC_FLEET, "redis_tls_cert", set_file,      F(redis.tls_cert),   0, 0, 0 },
    { SEC_FLEET, "redis_tls_key",  set_file,      F(redis.tls_key),    0, 0, 0 },
    { SEC_FLEET, "redis_tls_server_name", set_name, F(redis.tls_server_name), 0, 0, 0 },
    { SEC_FLEET, "redis_tls_verify", set_bool,    F(redis.tls_verify), 0, 0, 0 },
    { SEC_FLEET, "sentinel_password_file", set_file, F(redis.sentinel_password_file), 0, 0, 0 },

    { SEC_POOL, "stream",   set_streams, P(stream),   0, 0, KEY_REQUIRED | KEY_POOL },
    { SEC_POOL, "priority", set_priority, P(priority), 0, 0, KEY_POOL },
    { SEC_POOL, "group",    set_name,    P(group),    0, 0, KEY_REQUIRED | KEY_POOL },
    { SEC_POOL, "workers",  set_workers, P(workers),  1, CONF_WORKERS_MAX, KEY_POOL },
    { SEC_POOL, "batch",    set_int,     P(batch),    1, CONF_BATCH_MAX, KEY_POOL },
    { SEC_POOL, "block",    set_dur,     P(block_ms), 1, 30 * SECOND, KEY_POOL },
    { SEC_POOL, "handler",  set_handler, P(handler),  0, 0, KEY_REQUIRED },

    { SEC_POOL, "url",                 set_url,          P(url),                 0, 0, KEY_HTTP | KEY_REQUIRED },
    { SEC_POOL, "method",              set_method,       P(method),              0, 0, KEY_HTTP },
    { SEC_POOL, "body_field",          set_field,        P(body_field),          0, 0, KEY_HTTP | KEY_PROC },
    { SEC_POOL, "content_type",        set_content_type, P(content_type),        0, 0, KEY_HTTP },
    { SEC_POOL, "header",              set_header,       P(headers),             0, 0, KEY_HTTP | KEY_REPEAT },
    { SEC_POOL, "inflight",            set_int,          P(inflight),            1, CONF_INFLIGHT_MAX, KEY_HTTP | KEY_PROC },
    { SEC_POOL, "connect_timeout",     set_dur,          P(connect_timeout_ms),  1, MINUTE, KEY_HTTP },
    { SEC_POOL, "timeout",             set_dur,          P(timeout_ms),          1, HOUR, KEY_HTTP | KEY_PROC },
    { SEC_POOL, "tls_ca",              set_file,         P(tls_ca),              0, 0, KEY_HTTP },
    { SEC_POOL, "tls_cert",            set_file,         P(tls_cert),            0, 0, KEY_HTTP },
    { SEC_POOL, "tls_key",             set_file,         P(tls_key),             0, 0, KEY_HTTP },
    { SEC_POOL, "tls_verify",          set_bool,         P(tls_verify),          0, 0, KEY_HTTP },
    { SEC_POOL, "signing_secret_file", set_file,         P(signing_secret_file), 0, 0, KEY_HTTP },
    { SEC_POOL, "id_field",            set_field,        P(id_field),            0, 0, KEY_HTTP },
    { SEC_POOL, "adaptive",            set_bool,         P(adaptive),            0, 0, KEY_HTTP },

    /* handler = plugin; its `plugin.KEY = value` lines are taken by on_pair() */
    { SEC_POOL, "plugin",              set_plugin,       P(plugin),              0, 0, 0 },

    { SEC_POOL, "command",             set_command,      P(command),             0, 0, KEY_PROC | KEY_REQUIRED },
    { SEC_POOL, "shell",               set_bool,         P(shell),               0, 0, KEY_PROC },
    { SEC_POOL, "env",                 set_env,          P(env),                 0, 0, KEY_PROC | KEY_REPEAT },
    { SEC_POOL, "pass_env",            set_pass_env,     P(pass_env),            0, 0, KEY_PROC },
    { SEC_POOL, "stdin",               set_stdin,        P(stdin_body),          0, 0, KEY_PROC },

    { SEC_POOL, "max_attempts",      set_int,     P(max_attempts),      1, 1000, KEY_POOL },
    { SEC_POOL, "crash_limit",       set_int,     P(crash_limit),       0, 1000, KEY_POOL },
    { SEC_POOL, "backoff",           set_backoff, P(backoff),           0, 0, KEY_POOL },
    { SEC_POOL, "backoff_base",      set_dur,     P(backoff_base_ms),   1, DAY, KEY_POOL },
    { SEC_POOL, "backoff_max",       set_dur,     P(backoff_max_ms),    1, DAY, KEY_POOL },
    { SEC_POOL, "backoff_jitter",    set_percent, P(backoff_jitter_pct), 0, 100, KEY_POOL },
    { SEC_POOL, "claim_idle",        set_dur,     P(claim_idle_ms),     1000, 7 * DAY, KEY_POOL },
    { SEC_POOL, "dlq",               set_name,    P(dlq),               0, 0, KEY_POOL },
    { SEC_POOL, "dedupe_ttl",        set_dur,     P(dedupe_ttl_ms),     0, 365 * DAY, KEY_POOL },
    { SEC_POOL, "max_message_bytes", set_size,    P(max_message_bytes), 1024, 512L * 1024 * 1024, KEY_POOL },
    { SEC_POOL, "heartbeat_timeout", set_dur,     P(heartbeat_timeout_ms), 1000, DAY, KEY_POOL },
    { SEC_POOL, "max_messages",      set_long,    P(max_messages),      0, 1000000000L, KEY_POOL },
    { SEC_POOL, "max_messages_jitter", set_long,  P(max_messages_jitter), 0, 1000000000L, KEY_POOL },
    { SEC_POOL, "memory_limit",      set_size,    P(memory_limit),      0, 64L * 1024 * 1024 * 1024, KEY_POOL },
    { SEC_POOL, "max_lag",           set_long,    P(max_lag),           0, 1000000000000L, KEY_POOL },
    { SEC_POOL, "max_pending_age",   set_dur,     P(max_pending_age_ms), 0, 365 * DAY, KEY_POOL },
    { SEC_POOL, "group_start",       set_group_start, P(group_start_latest), 0, 0, KEY_POOL },
    { SEC_POOL, "created_field",     set_field,   P(created_field),     0, 0, KEY_POOL },
    { SEC_POOL, "require_fields",    set_fields,  P(require_fields),    0, 0, KEY_POOL },
    { SEC_POOL, "route_field",       set_field,   P(route_field),       0, 0, KEY_POOL },
    { SEC_POOL, "watch",             set_bool,    P(watch),             0, 0, KEY_POOL },
    { SEC_POOL, "trim",              set_trim,    P(trim_acked),        0, 0, KEY_POOL },
    { SEC_POOL, "retain",            set_dur,     P(retain_ms),         0, 365 * DAY, KEY_POOL },
    { SEC_POOL, "scale_up_after",    set_dur,     P(scale_up_after_ms), 100, DAY, KEY_POOL },
    { SEC_POOL, "scale_down_after",  set_dur,     P(scale_down_after_ms), 0, DAY, KEY_POOL },
    { SEC_POOL, "scale_interval",    set_dur,     P(scale_interval_ms), 100, HOUR, KEY_POOL },
    { SEC_POOL, "canary_timeout",    set_dur,     P(canary_timeout_ms), 0, DAY, KEY_POOL },
    { SEC_POOL, "canary_messages",   set_long,    P(canary_messages),   0, 1000000L, KEY_POOL },
};

#define NKEYS (sizeof keys / sizeof keys[0])
_Static_assert(NKEYS <= KEYS_MAX, "struct loader: fleet_keys and pool_keys need a slot per key");

/* ---- problems ---- */

static void add_problem(struct loader *l, int line, char *msg)
{
    l->probs = xrealloc(l->probs, (l->nprobs + 1) * sizeof *l->probs);
    l->probs[l->nprobs] = (struct problem){ line, l->nprobs, msg };
    l->nprobs++;
}

/* Report a problem at line of the file (0: the file as a whole). */
static void problem(struct loader *l, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void problem(struct loader *l, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct buf b = BUF_INIT;
    if (line > 0)
        buf_printf(&b, "%s:%d: %s", l->path, line, msg);
    else
        buf_printf(&b, "%s: %s", l->path, msg);
    add_problem(l, line, b.p);
}

static bool has_problem_at(const struct loader *l, int line)
{
    for (size_t i = 0; i < l->nprobs; i++)
        if (l->probs[i].line == line)
            return true;
    return false;
}

static int problem_cmp(const void *a, const void *b)
{
    const struct problem *x = a, *y = b;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* ---- small checks shared by the setters ---- */

static bool is_name_char(int c)
{
    return isalnum(c) || c == '_' || c == '.' || c == '-';
}

/* 1..CONF_NAME_MAX characters of [A-Za-z0-9_.-]: pool names and message field names. */
static bool valid_name(const char *s, size_t n)
{
    if (n == 0 || n > CONF_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!is_name_char((unsigned char)s[i]))
            return false;
    return true;
}

static bool has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static char **str_field(const struct key *k, void *base)
{
    return (char **)((char *)base + k->off);
}

static void set_str(const struct key *k, void *base, const char *v)
{
    char **f = str_field(k, base);
    free(*f);
    *f = xstrdup(v);
}

/* Find v in words (NULL-terminated); *idx is its position. */
static int pick_word(const char *const *words, const char *v, int *idx, char *err, size_t len)
{
    for (int i = 0; words[i]; i++) {
        if (strcmp(v, words[i]) == 0) {
            *idx = i;
            return 0;
        }
    }
    struct buf b = BUF_INIT;
    for (int i = 0; words[i]; i++)
        buf_printf(&b, "%s%s", i ? ", " : "", words[i]);
    snprintf(err, len, "must be one of %s (got '%s')", b.p, v);
    buf_release(&b);
    return -1;
}

/* ---- setters, one per kind of value ---- */

/* v as a whole number within the key's bounds. */
static int whole_number(const struct key *k, const char *v, long *n, char *err, size_t len)
{
    if (int_parse(v, k->min, k->max, n) == -1) {
        snprintf(err, len, "must be a whole number from %ld to %ld (got '%s')", k->min, k->max, v);
        return -1;
    }
    return 0;
}

static int set_int(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    long n;
    if (whole_number(k, v, &n, err, len) == -1)
        return -1;
    *(int *)((char *)base + k->off) = (int)n;
    return 0;
}

static int set_dur(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    long ms;
    if (dur_parse(v, &ms) == -1) {
        snprintf(err, len, "not a duration (got '%s'); write e.g. 250ms, 5s, 2m, 1h, 7d", v);
        return -1;
    }
    if (ms < k->min || ms > k->max) {
        char lo[32], hi[32];
        snprintf(err, len, "must be from %s to %s (got '%s')", dur_format(k->min, lo, sizeof lo),
                 dur_format(k->max, hi, sizeof hi), v);
        return -1;
    }
    *(long *)((char *)base + k->off) = ms;
    return 0;
}

static int set_bool(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "no", "yes", "false", "true", "off", "on", "0", "1", NULL };
    int i;
    if (pick_word(words, v, &i, err, len) == -1)
        return -1;
    *(bool *)((char *)base + k->off) = i % 2;
    return 0;
}

static int set_long(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    long n;
    if (whole_number(k, v, &n, err, len) == -1)
        return -1;
    *(long *)((char *)base + k->off) = n;
    return 0;
}

/* A file we will create (log, pidfile): an absolute or relative path whose folder exists. */
static int set_path(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    if (!*v || has_ctl(v)) {
        snprintf(err, len, "not a usable path");
        return -1;
    }
    char *dir = xstrdup(v);
    char *slash = strrchr(dir, '/');
    struct stat st;
    int ok = 1;
    if (slash) {
        *slash = '\0';
        ok = stat(*dir ? dir : "/", &st) == 0 && S_ISDIR(st.st_mode);
    }
    free(dir);
    if (!ok) {
        snprintf(err, len, "the folder of '%s' does not exist", v);
        return -1;
    }
    set_str(k, base, v);
    return 0;
}

/* A user or group name (checked against the system when the master starts as root). */
static int set_account(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    for (const char *p = v; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.') {
            snprintf(err, len, "not a user or group name: '%s'", v);
            return -1;
        }
    if (!*v) {
        snprintf(err, len, "empty name");
        return -1;
    }
    set_str(k, base, v);
    return 0;
}

/* "20%" or "20": a whole percentage within the key's bounds. */
static int set_percent(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    char num[32];
    size_t n = strlen(v);
    if (n > 0 && v[n - 1] == '%')
        n--;
    long pct;
    if (n == 0 || n >= sizeof num || (memcpy(num, v, n), num[n] = '\0', int_parse(num, k->min, k->max, &pct)) == -1) {
        snprintf(err, len, "must be a percentage from %ld%% to %ld%% (got '%s')", k->min, k->max, v);
        return -1;
    }
    *(int *)((char *)base + k->off) = (int)pct;
    return 0;
}

static int set_size(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    long long bytes;
    if (size_parse(v, &bytes) == -1 || bytes < k->min || bytes > k->max) {
        snprintf(err, len, "must be a size from %ldK to %ldM, e.g. 512K or 1M (got '%s')", k->min / 1024,
                 k->max / (1024 * 1024), v);
        return -1;
    }
    *(long long *)((char *)base + k->off) = bytes;
    return 0;
}

static int set_backoff(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "exponential", "linear", "fixed", NULL };
    static const enum backoff_kind vals[] = { BACKOFF_EXPONENTIAL, BACKOFF_LINEAR, BACKOFF_FIXED };
    int i;
    (void)k;
    if (pick_word(words, v, &i, err, len) == -1)
        return -1;
    ((struct pool_conf *)base)->backoff = vals[i];
    return 0;
}

/* A yes/no key written with two words of its own: the bool field is whether v is words[1]. */
static int set_either(const char *const *words, const struct key *k, void *base, const char *v, char *err,
                      size_t len)
{
    int i;
    if (pick_word(words, v, &i, err, len) == -1)
        return -1;
    *(bool *)((char *)base + k->off) = i == 1;
    return 0;
}

/* Where a group starts when it is first created: the whole stream, or only what comes next.
 * It decides nothing once the fleet has read from the group (a lost group is re-created
 * after the last entry the fleet had delivered). */
static int set_group_start(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "earliest", "latest", NULL };
    return set_either(words, k, base, v, err, len);
}

static int set_trim(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "off", "acked", NULL };
    return set_either(words, k, base, v, err, len);
}

/* workers = N, or a range MIN..MAX the master scales within (supervisor/scale.h). */
static int set_workers(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct pool_conf *p = base;
    const char *dots = strstr(v, "..");
    long lo, hi;
    if (dots == NULL) {
        if (whole_number(k, v, &lo, err, len) == -1)
            return -1;
        p->workers = (int)lo;
        p->workers_max = 0;
        return 0;
    }
    char first[32];
    if ((size_t)(dots - v) >= sizeof first)
        goto bad;
    memcpy(first, v, (size_t)(dots - v));
    first[dots - v] = '\0';
    if (int_parse(first, k->min, k->max, &lo) == -1 || int_parse(dots + 2, k->min, k->max, &hi) == -1 || lo > hi)
        goto bad;
    p->workers = (int)lo;
    p->workers_max = (int)hi;
    return 0;
bad:
    snprintf(err, len, "must be a range MIN..MAX of whole numbers from %ld to %ld, MIN no more than MAX (got '%s')",
             k->min, k->max, v);
    return -1;
}

/* The enums get a setter each, so that each field is written through its own type. */
static int set_log_level(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "debug", "info", "warn", "error", NULL };
    static const enum log_level vals[] = { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
    int i;
    (void)k;
    if (pick_word(words, v, &i, err, len) == -1)
        return -1;
    ((struct conf *)base)->log_level = vals[i];
    return 0;
}

static int set_log_format(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "text", "json", NULL };
    static const enum log_format vals[] = { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
    int i;
    (void)k;
    if (pick_word(words, v, &i, err, len) == -1)
        return -1;
    ((struct conf *)base)->log_format = vals[i];
    return 0;
}

/* A kind, or (in a pool) the NAME of a [handler:NAME] section, resolved once every section is
 * read (resolve_routes()). */
static int set_handler(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "log", "noop", "http", "exec", "subprocess", "plugin", NULL };
    static const enum handler_kind vals[] = { HANDLER_LOG, HANDLER_NOOP, HANDLER_HTTP, HANDLER_EXEC,
                                              HANDLER_SUBPROCESS, HANDLER_PLUGIN };
    struct pool_conf *p = base;
    (void)k;
    free(p->handler_name);
    p->handler_name = NULL;
    for (int i = 0; words[i]; i++) {
        if (strcmp(words[i], v) == 0) {
            p->handler = vals[i];
            return 0;
        }
    }
    if (!valid_name(v, strlen(v))) {
        snprintf(err, len, "must be log, noop, http, exec, subprocess, plugin, or the NAME of a [handler:NAME] section (got '%s')", v);
        return -1;
    }
    p->handler_name = xstrdup(v);
    return 0;
}

static int set_method(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "POST", "PUT", "PATCH", NULL };
    static const enum http_method vals[] = { HTTP_POST, HTTP_PUT, HTTP_PATCH };
    int i;
    (void)k;
    if (pick_word(words, v, &i, err, len) == -1)
        return -1;
    ((struct pool_conf *)base)->method = vals[i];
    return 0;
}

/* Stream and group names: Redis allows anything, we allow what survives logs and metrics
 * labels unquoted: 1..CONF_NAME_MAX printable characters, no spaces. */
static int set_name(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    size_t n = strlen(v);
    bool ok = n > 0 && n <= CONF_NAME_MAX;
    for (size_t i = 0; ok && i < n; i++)
        ok = isgraph((unsigned char)v[i]);
    if (!ok) {
        snprintf(err, len, "must be 1 to %d printable characters without spaces (got '%s')",
                 CONF_NAME_MAX, v);
        return -1;
    }
    set_str(k, base, v);
    return 0;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* A shard range in a stream name, `{A..B}` (A <= B, decimal): *lo, *hi and the offsets of its
 * '{' (at) and of what follows its '}' (after). Returns 1 when the name holds one, 0 when it
 * holds none (braces without `digits..` are a plain hash tag), -1 when it starts one that is
 * malformed (err). Only the first range counts: `{0..3}x{0..3}` is a name with a '{' left in. */
static int shard_range(const char *s, size_t w, long *lo, long *hi, size_t *at, size_t *after, char *err,
                       size_t len)
{
    for (size_t i = 0; i < w; i++) {
        if (s[i] != '{' || i + 1 >= w || !isdigit((unsigned char)s[i + 1]))
            continue;
        size_t j = i + 1;
        while (j < w && isdigit((unsigned char)s[j]))
            j++;
        if (j + 1 >= w || s[j] != '.' || s[j + 1] != '.')
            continue;           /* `{12}`, `{1.5}`: a hash tag, not a range */
        char num[16];
        size_t a = j - (i + 1), k = j + 2;
        while (k < w && isdigit((unsigned char)s[k]))
            k++;
        size_t b = k - (j + 2);
        if (b == 0 || k >= w || s[k] != '}' || a > 9 || b > 9) {
            snprintf(err, len, "'%.*s': a shard range is {A..B}, A and B numbers of up to 9 digits",
                     (int)(w > 60 ? 60 : w), s);
            return -1;
        }
        snprintf(num, sizeof num, "%.*s", (int)a, s + i + 1);
        *lo = strtol(num, NULL, 10);
        snprintf(num, sizeof num, "%.*s", (int)b, s + j + 2);
        *hi = strtol(num, NULL, 10);
        if (*lo > *hi) {
            snprintf(err, len, "'%.*s': the shard range {%ld..%ld} goes down: write {%ld..%ld}",
                     (int)(w > 60 ? 60 : w), s, *lo, *hi, *hi, *lo);
            return -1;
        }
        *at = i;
        *after = k + 1;
        return 1;
    }
    return 0;
}

/* stream: one name, or several separated by spaces, read in that order of priority (the
 * `priority` key says how). Each name as set_name() wants it; no name twice (one group on
 * a stream is one reader). A name with a range `{A..B}` stands for the shards A to B: the
 * name with each number in the braces (Redis's hash tag, so that each shard and its dead
 * letters and markers live in one slot of a cluster). p->stream is the first: what a pool of
 * one stream uses. */
static int set_streams(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct pool_conf *p = base;
    (void)k;
    char **names = NULL;
    size_t n = 0;
    bool sharded = false;
    for (const char *s = v + strspn(v, " \t"); *s; s += strspn(s, " \t")) {
        size_t w = strcspn(s, " \t");
        long lo = 0, hi = 0;
        size_t at = 0, after = 0;
        int range = shard_range(s, w, &lo, &hi, &at, &after, err, len);
        if (range == -1)
            goto fail;
        if (range == 1 && hi - lo >= (long)(CONF_STREAMS_MAX - n)) {
            snprintf(err, len, "'%.*s' names %ld shards: more than %d streams in all",
                     (int)(w > 60 ? 60 : w), s, hi - lo + 1, CONF_STREAMS_MAX);
            goto fail;
        }
        sharded = sharded || range == 1;
        for (long x = lo; x <= hi; x++) {
            char name[CONF_NAME_MAX + 2];
            size_t nw = w;
            const char *nm = s;
            if (range == 1) {
                int m = snprintf(name, sizeof name, "%.*s{%ld}%.*s", (int)at, s, x, (int)(w - after), s + after);
                nw = m < 0 ? sizeof name : (size_t)m;
                nm = name;
            }
            bool ok = nw <= CONF_NAME_MAX;
            for (size_t i = 0; ok && i < nw; i++)
                ok = isgraph((unsigned char)nm[i]);
            if (!ok) {
                snprintf(err, len, "'%.*s' is not a stream name (1 to %d printable characters without spaces)",
                         (int)(nw > 60 ? 60 : nw), nm, CONF_NAME_MAX);
                goto fail;
            }
            for (size_t i = 0; i < n; i++) {
                if (strlen(names[i]) == nw && memcmp(names[i], nm, nw) == 0) {
                    snprintf(err, len, "names stream '%s' twice", names[i]);
                    goto fail;
                }
            }
            if (n == CONF_STREAMS_MAX) {
                snprintf(err, len, "names more than %d streams", CONF_STREAMS_MAX);
                goto fail;
            }
            names = xrealloc(names, (n + 1) * sizeof *names);
            names[n++] = xstrndup(nm, nw);
        }
        s += w;
    }
    if (n == 0) {
        snprintf(err, len, "must name a stream");
        goto fail;
    }
    free_strv(p->streams, p->nstreams);
    free(p->stream);
    p->streams = names;
    p->nstreams = n;
    p->sharded = sharded;
    p->stream = xstrdup(names[0]);
    return 0;
fail:
    free_strv(names, n);
    return -1;
}

/* priority = strict, or weighted W1 W2 ... (a weight per stream, checked against the streams
 * in validate_pool(): the keys may come in any order). */
static int set_priority(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct pool_conf *p = base;
    (void)k;
    size_t w = strcspn(v, " \t");
    if (w == 6 && strncmp(v, "strict", 6) == 0 && v[w + strspn(v + w, " \t")] == '\0') {
        p->priority = PRIORITY_STRICT;
        free(p->weights);
        p->weights = NULL;
        p->nweights = 0;
        return 0;
    }
    if (w != 8 || strncmp(v, "weighted", 8) != 0) {
        snprintf(err, len, "must be strict, or weighted and a weight per stream, e.g. weighted 8 4 2 1 (got '%s')", v);
        return -1;
    }
    int *weights = NULL;
    size_t n = 0;
    for (const char *s = v + w + strspn(v + w, " \t"); *s; s += strspn(s, " \t")) {
        size_t ww = strcspn(s, " \t");
        char num[24];
        long x;
        snprintf(num, sizeof num, "%.*s", (int)(ww < sizeof num ? ww : sizeof num - 1), s);
        if (ww >= sizeof num || int_parse(num, 1, CONF_WEIGHT_MAX, &x) == -1 || n == CONF_STREAMS_MAX) {
            snprintf(err, len, "weights must be whole numbers from 1 to %d, at most %d of them (got '%.*s')",
                     CONF_WEIGHT_MAX, CONF_STREAMS_MAX, (int)(ww > 30 ? 30 : ww), s);
            free(weights);
            return -1;
        }
        weights = xrealloc(weights, (n + 1) * sizeof *weights);
        weights[n++] = (int)x;
        s += ww;
    }
    if (n == 0) {
        snprintf(err, len, "weighted needs a weight per stream, e.g. weighted 8 4 2 1");
        return -1;
    }
    free(p->weights);
    p->priority = PRIORITY_WEIGHTED;
    p->weights = weights;
    p->nweights = n;
    return 0;
}

/* A message field name (body_field, id_field): the same characters a URL placeholder allows. */
static int set_field(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    if (!valid_name(v, strlen(v))) {
        snprintf(err, len, "must be a field name of 1 to %d characters of A-Z a-z 0-9 _ . - (got '%s')",
                 CONF_NAME_MAX, v);
        return -1;
    }
    set_str(k, base, v);
    return 0;
}

/* require_fields: field names or paths separated by spaces. */
static int set_fields(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct pool_conf *p = base;
    (void)k;
    char **names = NULL;
    size_t n = 0;
    for (const char *s = v + strspn(v, " \t"); *s; s += strspn(s, " \t")) {
        size_t w = strcspn(s, " \t");
        if (!valid_name(s, w)) {
            snprintf(err, len, "'%.*s' is not a field name or path (1 to %d characters of A-Z a-z 0-9 _ . -)",
                     (int)(w > 60 ? 60 : w), s, CONF_NAME_MAX);
            goto fail;
        }
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrndup(s, w);
        s += w;
    }
    if (n == 0) {
        snprintf(err, len, "must name at least one field");
        goto fail;
    }
    free_strv(p->require_fields, p->nrequire_fields);
    p->require_fields = names;
    p->nrequire_fields = n;
    return 0;
fail:
    free_strv(names, n);
    return -1;
}

/* A URL template. Placeholders are filled from message fields at delivery time, so where they
 * may stand is a security rule: never in the scheme, host or port (a field must not choose
 * where a message goes), only in the path and after it. Messages do not repeat the URL: its
 * query may carry a token. */
static int check_url(const char *u, char *err, size_t len)
{
    const char *rest;
    if (strncmp(u, "http://", 7) == 0) {
        rest = u + 7;
    } else if (strncmp(u, "https://", 8) == 0) {
        rest = u + 8;
    } else {
        snprintf(err, len, "must start with http:// or https://");
        return -1;
    }
    for (const char *p = u; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f) {
            snprintf(err, len, "contains a space or control character");
            return -1;
        }
    }
    size_t authority = strcspn(rest, "/");
    if (authority == 0 || rest[0] == '?' || rest[0] == '#') {
        snprintf(err, len, "has no host");
        return -1;
    }
    if (memchr(rest, '{', authority) || memchr(rest, '}', authority)) {
        snprintf(err, len, "placeholders are not allowed in the scheme, host or port; only after the first '/'");
        return -1;
    }
    const char *brace = NULL;          /* the '{' of the placeholder being read */
    for (const char *p = rest + authority; *p; p++) {
        if (*p == '{') {
            if (brace) {
                snprintf(err, len, "unbalanced braces: '{' inside a placeholder");
                return -1;
            }
            brace = p;
        } else if (*p == '}') {
            if (!brace) {
                snprintf(err, len, "unbalanced braces: '}' without '{'");
                return -1;
            }
            const char *name = brace + 1;
            size_t n = (size_t)(p - name);
            if (!valid_name(name, n)) {
                snprintf(err, len, "bad placeholder {%.*s}: use {stream}, {id} or {field} with a field name "
                         "of 1 to %d characters of A-Z a-z 0-9 _ . -", (int)(n > 60 ? 60 : n), name,
                         CONF_NAME_MAX);
                return -1;
            }
            brace = NULL;
        }
    }
    if (brace) {
        snprintf(err, len, "unbalanced braces: '{' is never closed");
        return -1;
    }
    return 0;
}

static int set_url(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    if (check_url(v, err, len) == -1)
        return -1;
    set_str(k, base, v);
    return 0;
}

/* A value used as it is written (content_type, command): non-empty, without control
 * characters. what names it in the message. */
static int set_text(const char *what, const struct key *k, void *base, const char *v, char *err, size_t len)
{
    if (!*v || has_ctl(v)) {
        snprintf(err, len, "must be a non-empty %s without control characters", what);
        return -1;
    }
    set_str(k, base, v);
    return 0;
}

static int set_content_type(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    return set_text("media type", k, base, v, err, len);
}

static bool is_tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* ---- handler = exec and subprocess ---- */

/* The command as written; it is split (or given to /bin/sh) and checked in validate_proc(),
 * once shell is known. */
static int set_command(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    return set_text("command", k, base, v, err, len);
}

/* An environment variable name: what a shell accepts. */
static bool env_name(const char *s, size_t n)
{
    if (n == 0 || isdigit((unsigned char)s[0]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '_')
            return false;
    return true;
}

/* env = NAME=value (repeatable). The STREAMFLEET_ names are ours: the handler's contract. */
static int set_env(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct pool_conf *p = base;
    (void)k;
    const char *eq = strchr(v, '=');
    if (eq == NULL || !env_name(v, (size_t)(eq - v)) || has_ctl(v)) {
        snprintf(err, len, "must be NAME=value with a name of A-Z a-z 0-9 _ (got '%s')", v);
        return -1;
    }
    if (strncmp(v, "STREAMFLEET_", 12) == 0) {
        snprintf(err, len, "%.*s is set by streamfleet for each message", (int)(eq - v), v);
        return -1;
    }
    for (size_t i = 0; i < p->nenv; i++) {
        if (strncmp(p->env[i], v, (size_t)(eq - v) + 1) == 0) {
            snprintf(err, len, "%.*s is set twice", (int)(eq - v), v);
            return -1;
        }
    }
    p->env = xrealloc(p->env, (p->nenv + 1) * sizeof *p->env);
    p->env[p->nenv++] = xstrdup(v);
    return 0;
}

/* pass_env = NAME NAME ...: names whose values the handler gets from the worker's environment. */
static int set_pass_env(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct pool_conf *p = base;
    (void)k;
    for (const char *s = v; *s;) {
        size_t n = strcspn(s, " \t");
        if (n == 0) {
            s++;
            continue;
        }
        if (!env_name(s, n) || strncmp(s, "STREAMFLEET_", 12) == 0) {
            snprintf(err, len, "'%.*s' is not a variable name a handler can be given", (int)n, s);
            return -1;
        }
        p->pass_env = xrealloc(p->pass_env, (p->npass_env + 1) * sizeof *p->pass_env);
        p->pass_env[p->npass_env++] = xstrndup(s, n);
        s += n;
    }
    if (p->npass_env == 0) {
        snprintf(err, len, "must name at least one variable");
        return -1;
    }
    return 0;
}

static int set_stdin(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const char *const words[] = { "json", "body", NULL };
    return set_either(words, k, base, v, err, len);
}

/* Whether name can be executed: a path (with a slash) to an executable file, or a name found
 * in PATH, as execvp() will look for it. */
static bool executable(const char *name)
{
    struct stat st;
    if (strchr(name, '/'))
        return stat(name, &st) == 0 && S_ISREG(st.st_mode) && access(name, X_OK) == 0;
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/usr/local/bin:/usr/bin:/bin";
    bool found = false;
    struct buf b = BUF_INIT;
    for (const char *d = path; !found;) {
        size_t n = strcspn(d, ":");
        buf_reset(&b);
        buf_printf(&b, "%.*s/%s", (int)n, n ? d : ".", name);
        found = stat(b.p, &st) == 0 && S_ISREG(st.st_mode) && access(b.p, X_OK) == 0;
        if (d[n] == '\0')
            break;
        d += n + 1;
    }
    buf_release(&b);
    return found;
}

/* "Name: value", stored normalised as "Name: value". The value is never repeated in a message:
 * headers are where tokens live (Authorization). Framing headers belong to curl, and
 * Content-Type has a key of its own, so a second one cannot sneak in. */
static int set_header(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    static const struct {
        const char *name, *hint;
    } reserved[] = {
        { "Content-Length", "" }, { "Transfer-Encoding", "" }, { "Content-Type", "; use content_type" },
    };
    struct pool_conf *p = base;
    (void)k;
    const char *colon = strchr(v, ':');
    if (!colon) {
        snprintf(err, len, "must be 'Name: value'");
        return -1;
    }
    size_t n = (size_t)(colon - v);
    while (n > 0 && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    bool ok = n > 0;
    for (size_t i = 0; ok && i < n; i++)
        ok = is_tchar((unsigned char)v[i]);
    if (!ok) {
        snprintf(err, len, "invalid header name '%.*s'", (int)(n > 60 ? 60 : n), v);
        return -1;
    }
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        if (strlen(reserved[i].name) == n && strncasecmp(v, reserved[i].name, n) == 0) {
            snprintf(err, len, "header '%.*s' cannot be set here%s", (int)n, v, reserved[i].hint);
            return -1;
        }
    }
    const char *val = colon + 1;
    val += strspn(val, " \t");
    if (!*val) {
        snprintf(err, len, "header '%.*s' has no value", (int)n, v);
        return -1;
    }
    for (const char *c = val; *c; c++) {
        if (((unsigned char)*c < 0x20 && *c != '\t') || *c == 0x7f) {
            snprintf(err, len, "header '%.*s': value contains a control character", (int)n, v);
            return -1;
        }
    }
    if (p->nheaders == CONF_HEADERS_MAX) {
        snprintf(err, len, "too many headers (at most %d)", CONF_HEADERS_MAX);
        return -1;
    }
    struct buf b = BUF_INIT;
    buf_printf(&b, "%.*s: %s", (int)n, v, val);
    p->headers = xrealloc(p->headers, (p->nheaders + 1) * sizeof *p->headers);
    p->headers[p->nheaders++] = b.p;
    return 0;
}

/* A file the children will open later (CA, certificate, key, secret): checked now, so a typo
 * fails `streamfleet -t` instead of every delivery. */
static int set_file(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct stat st;
    if (!*v) {
        snprintf(err, len, "empty path");
        return -1;
    }
    if (access(v, R_OK) == -1 || stat(v, &st) == -1) {
        snprintf(err, len, "cannot read '%s': %s", v, strerror(errno));
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, len, "'%s' is not a regular file", v);
        return -1;
    }
    set_str(k, base, v);
    return 0;
}

/* ---- handler = plugin ---- */

/* plugin = /path/NAME.so: absolute (dlopen() searches the library path for a bare name, and a
 * relative one would depend on the worker's directory), and readable now. Whether it loads
 * is for -t's forked check and the worker: the master never loads plugin code. */
static int set_plugin(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    if (v[0] != '/' || has_ctl(v)) {
        snprintf(err, len, "must be an absolute path to a shared object (got '%s')", v);
        return -1;
    }
    return set_file(k, base, v, err, len);
}

#define PLUGIN_PREFIX "plugin."

static int key_index(enum section sec, const char *name);
static bool str_same(const char *a, const char *b);

/* plugin.KEY = value: any KEY of name characters, repeatable, kept in the order of the file
 * for the plugin's init(). */
static void plugin_param(struct loader *l, const char *key, const char *value)
{
    struct pool_conf *p = l->sec == SEC_POOL ? &l->c->pools[l->pool] : &l->c->handlers[l->handler];
    if (!valid_name(key, strlen(key))) {
        problem(l, l->lineno, "%s%s: the parameter name must be 1 to %d characters of A-Z a-z 0-9 _ . -",
                PLUGIN_PREFIX, key, CONF_NAME_MAX);
        return;
    }
    p->plugin_params = xrealloc(p->plugin_params, (2 * p->nplugin_params + 2) * sizeof *p->plugin_params);
    p->plugin_params[2 * p->nplugin_params] = xstrdup(key);
    p->plugin_params[2 * p->nplugin_params + 1] = xstrdup(value);
    p->nplugin_params++;
    if (p->plugin_params_line == 0)
        p->plugin_params_line = l->lineno;
}

/* The plugin keys go with handler = plugin, and it needs its file. */
static void validate_plugin(struct loader *l, struct pool_conf *p, const int *seen, bool handler_ok,
                            const char *where)
{
    int line = seen[key_index(SEC_POOL, "plugin")];
    bool plugin = handler_ok && p->handler == HANDLER_PLUGIN;
    p->plugin_line = abs(line);
    if (plugin && !line)
        problem(l, p->line, "%s missing required key 'plugin' (handler = plugin)", where);
    if (handler_ok && !plugin && line)
        problem(l, abs(line), "key 'plugin' only applies to handler = plugin");
    if (handler_ok && !plugin && p->plugin_params_line)
        problem(l, p->plugin_params_line, "keys '%s*' only apply to handler = plugin", PLUGIN_PREFIX);
}

static bool plugin_same(const struct pool_conf *a, const struct pool_conf *b)
{
    if (!str_same(a->plugin, b->plugin) || a->nplugin_params != b->nplugin_params)
        return false;
    for (size_t i = 0; i < 2 * a->nplugin_params; i++)
        if (strcmp(a->plugin_params[i], b->plugin_params[i]) != 0)
            return false;
    return true;
}

static void wipe_free(char *s);

/* A parameter may be the plugin's password: wiped like a header. */
static void plugin_release(struct pool_conf *p)
{
    free(p->plugin);
    for (size_t i = 0; i < 2 * p->nplugin_params; i++)
        wipe_free(p->plugin_params[i]);
    free(p->plugin_params);
}

/* host:port with a numeric address: the metrics endpoint binds exactly what is written, and a
 * name that resolves to every interface must not be the surprise. */
static int set_listen(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct conf *c = base;
    char host[INET6_ADDRSTRLEN];
    const char *port;
    unsigned char addr[sizeof(struct in6_addr)];
    (void)k;
    if (v[0] == '[') {
        const char *close = strchr(v, ']');
        size_t n = close ? (size_t)(close - v - 1) : 0;
        if (!close || close[1] != ':' || n == 0 || n >= sizeof host) {
            snprintf(err, len, "must be [IPv6 address]:port (got '%s')", v);
            return -1;
        }
        memcpy(host, v + 1, n);
        host[n] = '\0';
        port = close + 2;
        if (inet_pton(AF_INET6, host, addr) != 1) {
            snprintf(err, len, "'%s' is not a numeric IPv6 address", host);
            return -1;
        }
    } else {
        const char *colon = strrchr(v, ':');
        size_t n = colon ? (size_t)(colon - v) : 0;
        if (!colon || n == 0 || n >= sizeof host) {
            snprintf(err, len, "must be address:port, e.g. 127.0.0.1:9100 (got '%s')", v);
            return -1;
        }
        memcpy(host, v, n);
        host[n] = '\0';
        port = colon + 1;
        if (strchr(host, ':')) {
            snprintf(err, len, "an IPv6 address must be in brackets, e.g. [::1]:9100 (got '%s')", v);
            return -1;
        }
        if (inet_pton(AF_INET, host, addr) != 1) {
            snprintf(err, len, "'%s' is not a numeric IPv4 address (or [IPv6])", host);
            return -1;
        }
    }
    long p;
    if (int_parse(port, 1, 65535, &p) == -1) {
        snprintf(err, len, "port must be from 1 to 65535 (got '%s')", port);
        return -1;
    }
    free(c->listen_host);
    c->listen_host = xstrdup(host);
    c->listen_port = (int)p;
    return 0;
}

/* The redis_tls_* keys and sentinel_password_file are set apart from the URL, before or after
 * it: a new URL takes them over from the address it replaces. */
static void redis_take_tls(struct redis_addr *to, struct redis_addr *from)
{
    to->sentinel_password_file = from->sentinel_password_file;
    from->sentinel_password_file = NULL;
    to->tls_verify = from->tls_verify;
    to->tls_ca = from->tls_ca;
    to->tls_cert = from->tls_cert;
    to->tls_key = from->tls_key;
    to->tls_server_name = from->tls_server_name;
    from->tls_ca = from->tls_cert = from->tls_key = from->tls_server_name = NULL;
}

static int set_redis(const struct key *k, void *base, const char *v, char *err, size_t len)
{
    struct redis_addr a;
    (void)k;
    if (conf_parse_redis(v, &a, err, len) == -1)
        return -1;
    struct conf *c = base;
    redis_take_tls(&a, &c->redis);
    conf_redis_release(&c->redis);
    c->redis = a;
    return 0;
}

/* ---- Redis addresses ---- */

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decode s[0..n) into a new string, or NULL for a bad or NUL escape. */
static char *pct_decode(const char *s, size_t n)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '%') {
            out[o++] = s[i];
            continue;
        }
        int hi = i + 2 < n ? hexval((unsigned char)s[i + 1]) : -1;
        int lo = i + 2 < n ? hexval((unsigned char)s[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
            explicit_bzero(out, n + 1);
            free(out);
            return NULL;
        }
        out[o++] = (char)(hi * 16 + lo);
        i += 2;
    }
    out[o] = '\0';
    return out;
}

static int parse_unix(const char *p, struct redis_addr *a, char *err, size_t errlen)
{
    if (*p != '/') {
        snprintf(err, errlen, "unix socket path must be absolute (unix:///path/to.sock)");
        return -1;
    }
    size_t n = strcspn(p, "?");
    if (n >= sizeof ((struct sockaddr_un *)0)->sun_path) {
        snprintf(err, errlen, "unix socket path too long (at most %zu bytes)",
                 sizeof ((struct sockaddr_un *)0)->sun_path - 1);
        return -1;
    }
    if (p[n - 1] == '/') {
        snprintf(err, errlen, "unix socket path names a directory");
        return -1;
    }
    if (p[n] == '?') {
        long db;
        if (strncmp(p + n + 1, "db=", 3) != 0) {
            snprintf(err, errlen, "only ?db=N may follow a unix socket path");
            return -1;
        }
        if (int_parse(p + n + 4, 0, 1000000, &db) == -1) {
            snprintf(err, errlen, "database must be a number from 0 to 1000000");
            return -1;
        }
        a->db = (int)db;
    }
    a->unix_path = xstrndup(p, n);
    return 0;
}

/* host[:port] or [IPv6][:port], the whole of p[0..n): fills *host and *port (left as it is
 * when no port is written). what names the part in messages ("" or "sentinel 2: "). */
static int parse_host_port(const char *p, size_t n, char **host, int *port, const char *what, char *err,
                           size_t errlen)
{
    const char *end = p + n;
    if (n && *p == '[') {
        const char *close = memchr(p, ']', n);
        unsigned char addr[sizeof(struct in6_addr)];
        char h[INET6_ADDRSTRLEN];
        size_t hn = close ? (size_t)(close - p - 1) : 0;
        if (!close || hn == 0 || hn >= sizeof h) {
            snprintf(err, errlen, "%sbad IPv6 address: write it as [address]", what);
            return -1;
        }
        memcpy(h, p + 1, hn);
        h[hn] = '\0';
        if (inet_pton(AF_INET6, h, addr) != 1) {
            snprintf(err, errlen, "%sbad IPv6 address", what);
            return -1;
        }
        *host = xstrdup(h);
        p = close + 1;
    } else {
        const char *colon = memchr(p, ':', n);
        size_t hn = colon ? (size_t)(colon - p) : n;
        if (hn == 0) {
            snprintf(err, errlen, "%smissing host", what);
            return -1;
        }
        for (size_t i = 0; i < hn; i++) {
            if (!isalnum((unsigned char)p[i]) && !strchr("-._", p[i])) {
                snprintf(err, errlen, "%sbad host name (letters, digits, '-', '.', '_'; IPv6 in brackets)", what);
                return -1;
            }
        }
        if (hn > 253) {
            snprintf(err, errlen, "%shost name too long", what);
            return -1;
        }
        *host = xstrndup(p, hn);
        p += hn;
    }
    if (p < end && *p == ':') {
        char num[8];
        long v;
        size_t pn = (size_t)(end - ++p);
        if (pn >= sizeof num) {
            snprintf(err, errlen, "%sport must be a number from 1 to 65535", what);
            return -1;
        }
        memcpy(num, p, pn);
        num[pn] = '\0';
        if (int_parse(num, 1, 65535, &v) == -1) {
            snprintf(err, errlen, "%sport must be a number from 1 to 65535", what);
            return -1;
        }
        *port = (int)v;
        p = end;
    }
    if (p < end) {
        snprintf(err, errlen, "%sunexpected text after the host", what);
        return -1;
    }
    return 0;
}

/* The database after the last '/', or "" for 0. */
static int parse_db(const char *p, struct redis_addr *a, char *err, size_t errlen)
{
    long v;
    if (*p && int_parse(p, 0, 1000000, &v) == -1) {
        snprintf(err, errlen, "database must be a number from 0 to 1000000");
        return -1;
    }
    a->db = *p ? (int)v : 0;
    return 0;
}

/* What differs between the node lists of redis-sentinel:// and redis-cluster://. */
struct node_list {
    const char *one;            /* names a node in messages: "sentinel 2: " */
    const char *many;           /* "more than 64 sentinels" */
    const char *none;           /* the message for an empty list */
    int port;                   /* a node's when it is not written */
};

static const struct node_list sentinel_list = {
    "sentinel", "sentinels", "no sentinel: write redis-sentinel://host:port,host:port/MASTERNAME", 26379
};
static const struct node_list seed_list = {
    "seed", "seed nodes", "no seed node: write redis-cluster://host:port,host:port/", 6379
};

/* The nodes host[:port],host[:port]... of p[0..n), at least one and at most 64, into *nodes
 * and *count. */
static int parse_nodes(const char *p, size_t n, const struct node_list *kind, struct redis_node **nodes,
                       size_t *count, char *err, size_t errlen)
{
    const char *end = p + n;
    if (n == 0) {
        snprintf(err, errlen, "%s", kind->none);
        return -1;
    }
    while (p <= end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t sn = comma ? (size_t)(comma - p) : (size_t)(end - p);
        char where[32];
        snprintf(where, sizeof where, "%s %zu: ", kind->one, *count + 1);
        if (*count == 64) {
            snprintf(err, errlen, "more than 64 %s", kind->many);
            return -1;
        }
        *nodes = xrealloc(*nodes, (*count + 1) * sizeof **nodes);
        struct redis_node *node = &(*nodes)[(*count)++];
        node->host = NULL;
        node->port = kind->port;
        if (parse_host_port(p, sn, &node->host, &node->port, where, err, errlen) == -1)
            return -1;
        if (!comma)
            break;
        p = comma + 1;
    }
    return 0;
}

/* The sentinels host[:port],host[:port]... of p[0..n), then /MASTERNAME[/db] in rest. */
static int parse_sentinels(const char *p, size_t n, const char *rest, struct redis_addr *a, char *err, size_t errlen)
{
    if (parse_nodes(p, n, &sentinel_list, &a->sentinels, &a->nsentinels, err, errlen) == -1)
        return -1;
    if (*rest != '/' || rest[1] == '\0' || rest[1] == '/') {
        snprintf(err, errlen, "missing master name: write redis-sentinel://host:port,.../MASTERNAME[/db]");
        return -1;
    }
    rest++;
    size_t mn = strcspn(rest, "/");
    for (size_t i = 0; i < mn; i++) {
        if (!isalnum((unsigned char)rest[i]) && !strchr("-._:", rest[i])) {
            snprintf(err, errlen, "bad master name (letters, digits, '-', '.', '_', ':')");
            return -1;
        }
    }
    a->sentinel_master = xstrndup(rest, mn);
    rest += mn;
    return *rest == '/' ? parse_db(rest + 1, a, err, errlen) : 0;
}

/* The seeds host[:port],host[:port]... of p[0..n) of redis-cluster://, then an optional "/"
 * (a cluster has database 0 only). */
static int parse_seeds(const char *p, size_t n, const char *rest, struct redis_addr *a, char *err, size_t errlen)
{
    if (parse_nodes(p, n, &seed_list, &a->seeds, &a->nseeds, err, errlen) == -1)
        return -1;
    if (*rest && strcmp(rest, "/") != 0 && strcmp(rest, "/0") != 0) {
        snprintf(err, errlen, "a cluster has database 0 only: write redis-cluster://host:port,host:port/");
        return -1;
    }
    a->host = xstrdup(a->seeds[0].host);
    a->port = a->seeds[0].port;
    return 0;
}

/* Messages never quote any part of the address: wherever the parse went wrong, the text in
 * question may be the password, misplaced. The line number says where to look. */
int conf_parse_redis(const char *url, struct redis_addr *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    a->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        if (parse_unix(url + 7, a, err, errlen) == -1)
            goto fail;
        return 0;
    }
    bool sentinel = false;
    const char *p;
    if (strncmp(url, "redis-cluster://", 16) == 0) {
        a->cluster = true;
        p = url + 16;
    } else if (strncmp(url, "rediss-cluster://", 17) == 0) {
        a->cluster = a->tls = true;
        p = url + 17;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        a->tls = true;
        p = url + 9;
    } else if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "redis-sentinel://", 17) == 0) {
        sentinel = true;
        p = url + 17;
    } else if (strncmp(url, "rediss-sentinel://", 18) == 0) {
        snprintf(err, errlen, "rediss-sentinel:// is not supported: sentinel works over plain TCP only");
        goto fail;
    } else {
        snprintf(err, errlen, "address must start with redis://, rediss://, redis-sentinel://, redis-cluster:// or unix://");
        goto fail;
    }
    /* The last '@' ends the credentials: a host, port, db or master name never holds one, a
     * password may. */
    const char *at = strrchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (!colon) {
            snprintf(err, errlen, "credentials must be written as [user]:password@");
            goto fail;
        }
        if (colon > p && !(a->user = pct_decode(p, (size_t)(colon - p)))) {
            snprintf(err, errlen, "bad %%-escape in the user name");
            goto fail;
        }
        if (!(a->password = pct_decode(colon + 1, (size_t)(at - colon - 1)))) {
            snprintf(err, errlen, "bad %%-escape in the password");
            goto fail;
        }
        if (!*a->password) {
            snprintf(err, errlen, "empty password");
            goto fail;
        }
        p = at + 1;
    }
    size_t n = strcspn(p, "/");
    if (sentinel) {
        if (parse_sentinels(p, n, p + n, a, err, errlen) == -1)
            goto fail;
        return 0;
    }
    if (a->cluster) {
        if (parse_seeds(p, n, p + n, a, err, errlen) == -1)
            goto fail;
        return 0;
    }
    if (parse_host_port(p, n, &a->host, &a->port, "", err, errlen) == -1)
        goto fail;
    p += n;
    if (*p == '/' && parse_db(p + 1, a, err, errlen) == -1)
        goto fail;
    return 0;

fail:
    conf_redis_release(a);
    return -1;
}

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

void conf_redis_release(struct redis_addr *a)
{
    free(a->host);
    free(a->unix_path);
    wipe_free(a->user);
    wipe_free(a->password);
    free(a->tls_ca);
    free(a->tls_cert);
    free(a->tls_key);
    free(a->tls_server_name);
    free(a->sentinel_master);
    for (size_t i = 0; i < a->nsentinels; i++)
        free(a->sentinels[i].host);
    free(a->sentinels);
    free(a->sentinel_password_file);
    for (size_t i = 0; i < a->nseeds; i++)
        free(a->seeds[i].host);
    free(a->seeds);
    memset(a, 0, sizeof *a);
}

const char *conf_redis_display(const struct redis_addr *a, char *buf, size_t len)
{
    if (a->unix_path && a->db)
        snprintf(buf, len, "unix://%s?db=%d", a->unix_path, a->db);
    else if (a->unix_path)
        snprintf(buf, len, "unix://%s", a->unix_path);
    else if (a->cluster) {
        size_t o = (size_t)snprintf(buf, len, "%s://", a->tls ? "rediss-cluster" : "redis-cluster");
        for (size_t i = 0; i < a->nseeds && o < len; i++)
            o += (size_t)snprintf(buf + o, len - o, strchr(a->seeds[i].host, ':') ? "%s[%s]:%d" : "%s%s:%d",
                                  i ? "," : "", a->seeds[i].host, a->seeds[i].port);
        if (o < len)
            snprintf(buf + o, len - o, "/");
    } else if (a->sentinel_master) {
        size_t o = (size_t)snprintf(buf, len, "redis-sentinel://");
        for (size_t i = 0; i < a->nsentinels && o < len; i++)
            o += (size_t)snprintf(buf + o, len - o, strchr(a->sentinels[i].host, ':') ? "%s[%s]:%d" : "%s%s:%d",
                                  i ? "," : "", a->sentinels[i].host, a->sentinels[i].port);
        if (o < len)
            snprintf(buf + o, len - o, "/%s/%d", a->sentinel_master, a->db);
    } else if (!a->host)
        snprintf(buf, len, "(none)");
    else if (strchr(a->host, ':'))
        snprintf(buf, len, "%s://[%s]:%d/%d", a->tls ? "rediss" : "redis", a->host, a->port, a->db);
    else
        snprintf(buf, len, "%s://%s:%d/%d", a->tls ? "rediss" : "redis", a->host, a->port, a->db);
    return buf;
}

/* ---- the reader: every raw line passes here before inih sees it ---- */

/* Where inih's name[=:]value split or section parse stops: at one of chars, or at an inline
 * comment (a comment prefix after whitespace). Mirrors ini_find_chars_or_comment() in r55, and
 * reads the same runtime settings, so our view of a line and inih's cannot differ. */
static const char *find_chars_or_comment(const char *s, const char *chars)
{
    bool was_space = false;
    for (; *s; s++) {
        if (chars && strchr(chars, *s))
            break;
        if (ini_allow_inline_comments && was_space && strchr(ini_inline_comment_prefixes, *s))
            break;
        was_space = isspace((unsigned char)*s);
    }
    return s;
}

static const char *skip_space(const char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return s;
}

static void pool_defaults(struct pool_conf *p, const char *name, size_t n, int line)
{
    memset(p, 0, sizeof *p);
    p->name = xstrndup(name, n);
    p->line = line;
    p->workers = 1;
    p->scale_up_after_ms = 10 * SECOND;
    p->scale_down_after_ms = MINUTE;
    p->scale_interval_ms = 10 * SECOND;
    p->batch = 10;
    p->block_ms = 2 * SECOND;
    p->handler = HANDLER_LOG;           /* required: validate() insists it was set */
    p->method = HTTP_POST;
    p->content_type = xstrdup("application/json");
    p->inflight = 16;
    p->connect_timeout_ms = 2 * SECOND;
    p->timeout_ms = 30 * SECOND;
    p->tls_verify = true;
    p->adaptive = true;
    p->max_attempts = 5;
    p->crash_limit = 3;
    p->backoff = BACKOFF_EXPONENTIAL;
    p->backoff_base_ms = 2 * SECOND;
    p->backoff_max_ms = HOUR;
    p->backoff_jitter_pct = 20;
    p->claim_idle_ms = 5 * MINUTE;
    p->max_message_bytes = 1024 * 1024;
    p->heartbeat_timeout_ms = MINUTE;
    p->canary_timeout_ms = 30 * SECOND;
}

/* Enter [handler:NAME], NAME being name[0..n). */
static int open_handler(struct loader *l, const char *name, size_t n)
{
    struct conf *c = l->c;
    if (!valid_name(name, n)) {
        problem(l, l->lineno, "invalid handler name '%.*s' (1 to %d characters of A-Z a-z 0-9 _ . -)",
                (int)n, name, CONF_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < c->nhandlers; i++) {
        if (strlen(c->handlers[i].name) == n && memcmp(c->handlers[i].name, name, n) == 0) {
            problem(l, l->lineno, "duplicate [handler:%.*s], first at line %d", (int)n, name, c->handlers[i].line);
            return -1;
        }
    }
    c->handlers = xrealloc(c->handlers, (c->nhandlers + 1) * sizeof *c->handlers);
    l->handler_keys = xrealloc(l->handler_keys, (c->nhandlers + 1) * sizeof *l->handler_keys);
    l->handler_used = xrealloc(l->handler_used, (c->nhandlers + 1) * sizeof *l->handler_used);
    pool_defaults(&c->handlers[c->nhandlers], name, n, l->lineno);
    memset(l->handler_keys[c->nhandlers], 0, sizeof l->handler_keys[c->nhandlers]);
    l->handler_used[c->nhandlers] = false;
    l->handler = c->nhandlers++;
    l->sec = SEC_HANDLER;
    return 0;
}

/* Enter the section named s[0..n) (already known to fit inih). Returns -1 after reporting why
 * it cannot be entered; its keys are then skipped, not misfiled under the previous section. */
static int open_section(struct loader *l, const char *s, size_t n)
{
    struct conf *c = l->c;
    l->sec = SEC_SKIP;
    memcpy(l->section, s, n);
    l->section[n] = '\0';
    if (strcmp(l->section, "fleet") == 0) {
        if (l->fleet_line) {
            problem(l, l->lineno, "duplicate [fleet], first at line %d", l->fleet_line);
            return -1;
        }
        l->fleet_line = l->lineno;
        l->sec = SEC_FLEET;
        return 0;
    }
    if (strncmp(l->section, "handler:", 8) == 0)
        return open_handler(l, l->section + 8, n - 8);
    if (strncmp(l->section, "pool:", 5) != 0) {
        problem(l, l->lineno, "unknown section [%s] (expected [fleet], [pool:NAME] or [handler:NAME])", l->section);
        return -1;
    }
    const char *name = l->section + 5;
    if (!valid_name(name, n - 5)) {
        problem(l, l->lineno, "invalid pool name '%s' (1 to %d characters of A-Z a-z 0-9 _ . -)",
                name, CONF_NAME_MAX);
        return -1;
    }
    for (size_t i = 0; i < c->npools; i++) {
        if (strcmp(c->pools[i].name, name) == 0) {
            problem(l, l->lineno, "duplicate [pool:%s], first at line %d", name, c->pools[i].line);
            return -1;
        }
    }
    c->pools = xrealloc(c->pools, (c->npools + 1) * sizeof *c->pools);
    l->pool_keys = xrealloc(l->pool_keys, (c->npools + 1) * sizeof *l->pool_keys);
    pool_defaults(&c->pools[c->npools], name, n - 5, l->lineno);
    memset(l->pool_keys[c->npools], 0, sizeof l->pool_keys[c->npools]);
    l->pool = c->npools++;
    l->sec = SEC_POOL;
    return 0;
}

/* A line starting with '[' (s, after leading whitespace). */
static int check_section(struct loader *l, const char *s)
{
    const char *end = find_chars_or_comment(s + 1, "]");
    if (*end != ']') {
        l->sec = SEC_SKIP;
        problem(l, l->lineno, "section header without ']'");
        return -1;
    }
    size_t n = (size_t)(end - s - 1);
    if (strncmp(s + 1, "pool:", 5) == 0)
        l->pool_headers = true;         /* even if rejected: "no pools" would mislead */
    const char *t = skip_space(end + 1);
    if (*t && !strchr(ini_start_comment_prefixes, *t)) {
        l->sec = SEC_SKIP;
        problem(l, l->lineno, "unexpected text after section header");
        return -1;
    }
    if (n > NAME_MAX_INI) {
        l->sec = SEC_SKIP;
        if (strncmp(s + 1, "pool:", 5) == 0)
            problem(l, l->lineno, "section name too long (%zu characters, at most %d: a pool name "
                    "at most %d)", n, NAME_MAX_INI, NAME_MAX_INI - 5);
        else
            problem(l, l->lineno, "section name too long (%zu characters, at most %d)", n, NAME_MAX_INI);
        return -1;
    }
    return open_section(l, s + 1, n);
}

/* Any other line that is not blank or a comment must be key = value (or key: value). The line
 * is not quoted in messages: it may be a secret that lost its '='. */
static int check_pair(struct loader *l, const char *s)
{
    const char *end = find_chars_or_comment(s, "=:");
    if (*end != '=' && *end != ':') {
        problem(l, l->lineno, "expected 'key = value' or '[section]'");
        return -1;
    }
    size_t n = (size_t)(end - s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        n--;
    if (n == 0) {
        problem(l, l->lineno, "missing key name before '%c'", *end);
        return -1;
    }
    if (n > NAME_MAX_INI) {
        problem(l, l->lineno, "key name too long (%zu characters, at most %d)", n, NAME_MAX_INI);
        return -1;
    }
    return 0;
}

/* Decide whether inih may see this line (len bytes, '\n' removed; room: inih's buffer size). */
static int check_line(struct loader *l, const char *line, size_t len, size_t room)
{
    if (memchr(line, '\0', len)) {
        problem(l, l->lineno, "NUL byte in line");
        return -1;
    }
    /* inih needs room for the line, its '\n' and a NUL; less and it splits the line. */
    if (len + 2 > room) {
        problem(l, l->lineno, "line too long (%zu bytes, at most %zu)", len, room - 2);
        return -1;
    }
    const char *s = skip_space(line);
    if (!*s || strchr(ini_start_comment_prefixes, *s))
        return 0;
    if (*s == '[')
        return check_section(l, s);
    return check_pair(l, s);
}

/* The ini_reader: fgets-shaped, but one call is always exactly one line of the file. */
static char *read_line(char *str, int num, void *stream)
{
    struct loader *l = stream;
    if (num < 2)
        return NULL;
    errno = 0;
    ssize_t got = getline(&l->raw, &l->rawcap, l->fp);
    if (got < 0) {
        l->read_errno = errno;
        return NULL;
    }
    l->lineno++;
    size_t len = (size_t)got;
    if (len > 0 && l->raw[len - 1] == '\n')
        l->raw[--len] = '\0';
    const char *line = l->raw;
    if (l->lineno == 1 && len >= 3 && memcmp(line, "\xef\xbb\xbf", 3) == 0) {
        line += 3;              /* UTF-8 byte order mark */
        len -= 3;
    }
    if (check_line(l, line, len, (size_t)num) == -1) {
        strcpy(str, "\n");
        return str;
    }
    memcpy(str, line, len);
    str[len] = '\n';
    str[len + 1] = '\0';
    return str;
}

/* ---- the handler: one call per key = value line that passed the reader ---- */

static const struct key *key_find(enum section sec, const char *name)
{
    for (size_t i = 0; i < NKEYS; i++)
        if (keys[i].sec == sec && strcmp(keys[i].name, name) == 0)
            return &keys[i];
    return NULL;
}

static int key_index(enum section sec, const char *name)
{
    const struct key *k = key_find(sec, name);
    return k ? (int)(k - keys) : -1;
}

/* route.TYPE = NAME, or route.default = NAME, in a pool. */
static void set_route(struct loader *l, const char *type, const char *value)
{
    struct pool_conf *p = &l->c->pools[l->pool];
    if (!valid_name(type, strlen(type))) {
        problem(l, l->lineno, "route.%s: the type must be 1 to %d characters of A-Z a-z 0-9 _ . -",
                type, CONF_NAME_MAX);
        return;
    }
    if (!valid_name(value, strlen(value))) {
        problem(l, l->lineno, "route.%s: must be the NAME of a [handler:NAME] section (got '%s')", type, value);
        return;
    }
    struct route_conf *r = NULL;
    if (strcmp(type, "default") == 0) {
        r = &p->route_default;
    } else {
        for (size_t i = 0; i < p->nroutes; i++)
            if (strcmp(p->routes[i].type, type) == 0)
                r = &p->routes[i];
        if (r == NULL) {
            if (p->nroutes == CONF_ROUTES_MAX) {
                problem(l, l->lineno, "route.%s: too many routes (at most %d per pool)", type, CONF_ROUTES_MAX);
                return;
            }
            p->routes = xrealloc(p->routes, (p->nroutes + 1) * sizeof *p->routes);
            r = &p->routes[p->nroutes++];
            *r = (struct route_conf){ .type = xstrdup(type) };
        }
    }
    if (r->handler) {
        problem(l, l->lineno, "duplicate key 'route.%s', first at line %d", type, r->line);
        return;
    }
    r->handler = xstrdup(value);
    r->line = l->lineno;
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    struct loader *l = user;
    if (l->sec == SEC_NONE) {
        problem(l, l->lineno, "key '%s' before any section", name);
        return 1;
    }
    if (l->sec == SEC_SKIP)
        return 1;               /* its section was rejected: that one error is enough */
    if (strcmp(section, l->section) != 0) {
        problem(l, l->lineno, "internal error: inih read section [%s], we read [%s]", section, l->section);
        return 1;
    }
    if ((l->sec == SEC_POOL || l->sec == SEC_HANDLER) && strncmp(name, PLUGIN_PREFIX, strlen(PLUGIN_PREFIX)) == 0) {
        plugin_param(l, name + strlen(PLUGIN_PREFIX), value);
        return 1;
    }
    if (l->sec == SEC_POOL && strncmp(name, "route.", 6) == 0) {
        set_route(l, name + 6, value);
        return 1;
    }
    const struct key *k = key_find(l->sec == SEC_HANDLER ? SEC_POOL : l->sec, name);
    if (!k) {
        problem(l, l->lineno, "unknown key '%s' in [%s]", name, l->section);
        return 1;
    }
    if (l->sec == SEC_HANDLER && (k->flags & KEY_POOL)) {
        problem(l, l->lineno, "key '%s' belongs to a pool, not to [%s] (it holds the handler's keys)",
                name, l->section);
        return 1;
    }
    int *seen = l->sec == SEC_FLEET  ? l->fleet_keys
                : l->sec == SEC_POOL ? l->pool_keys[l->pool]
                                     : l->handler_keys[l->handler];
    size_t ki = (size_t)(k - keys);
    if (seen[ki] && !(k->flags & KEY_REPEAT)) {
        problem(l, l->lineno, "duplicate key '%s', first at line %d", name, abs(seen[ki]));
        return 1;
    }
    void *base = l->sec == SEC_FLEET  ? (void *)l->c
                 : l->sec == SEC_POOL ? (void *)&l->c->pools[l->pool]
                                      : (void *)&l->c->handlers[l->handler];
    char err[400];
    if (k->set(k, base, value, err, sizeof err) == -1) {
        problem(l, l->lineno, "%s: %s", name, err);
        if (!seen[ki])
            seen[ki] = -l->lineno;
        return 1;
    }
    if (l->sec != SEC_FLEET) {
        l->pairs = xrealloc(l->pairs, (l->npairs + 1) * sizeof *l->pairs);
        l->pairs[l->npairs++] = (struct pair){ l->sec, l->sec == SEC_POOL ? l->pool : l->handler, k,
                                               xstrdup(value) };
    }
    if (seen[ki] <= 0)
        seen[ki] = l->lineno;
    /* Always "success": our problems are collected above, so a nonzero return from
     * ini_parse_stream() can only be a syntax error the reader failed to catch. */
    return 1;
}

/* ---- rules that span keys ---- */

/* handler = exec and subprocess: what runs, and whether it can (a command that cannot be
 * executed fails `streamfleet -t`, not every message). */
static void validate_proc(struct loader *l, struct pool_conf *p, const int *seen)
{
    int cl = abs(seen[key_index(SEC_POOL, "command")]);
    if (p->command == NULL)
        return;                         /* missing: reported by the caller */
    char err[256];
    if (p->shell) {
        p->argv = xcalloc(4, sizeof *p->argv);
        p->argv[0] = xstrdup("/bin/sh");
        p->argv[1] = xstrdup("-c");
        p->argv[2] = xstrdup(p->command);
    } else {
        int n = argv_split(p->command, &p->argv, err, sizeof err);
        if (n == -1) {
            problem(l, cl, "command: %s", err);
            return;
        }
        if (n == 0) {
            problem(l, cl, "command: no program named");
            return;
        }
    }
    if (!executable(p->argv[0]))
        problem(l, cl, "command: '%s' %s", p->argv[0],
                strchr(p->argv[0], '/') ? "is not an executable file" : "is not found in PATH");
    int si = seen[key_index(SEC_POOL, "stdin")];
    if (si > 0 && p->handler == HANDLER_SUBPROCESS)
        problem(l, si, "stdin = body only applies to handler = exec (a subprocess reads JSON lines)");
    else if (p->stdin_body && p->body_field == NULL)
        problem(l, abs(si), "stdin = body needs body_field (the field whose value is the input)");
}

/* Which handler-only keys apply to p's handler: KEY_HTTP, KEY_PROC, or 0 (neither, or the
 * handler is not known: !handler_ok). */
static unsigned handler_kind(const struct pool_conf *p, bool handler_ok)
{
    if (handler_ok && p->handler == HANDLER_HTTP)
        return KEY_HTTP;
    if (handler_ok && (p->handler == HANDLER_EXEC || p->handler == HANDLER_SUBPROCESS))
        return KEY_PROC;
    return 0;
}

/* The SEC_POOL keys of a pool or handler section where ("[pool:NAME]", "[handler:NAME]"),
 * the KEY_POOL ones when pool_own, else the handler keys: those required and missing, and
 * those set for a handler kind (kind, from handler_kind()) they do not apply to. */
static void check_keys(struct loader *l, const struct pool_conf *p, const int *seen, bool pool_own,
                       bool handler_ok, unsigned kind, const char *where)
{
    for (size_t k = 0; k < NKEYS; k++) {
        if (keys[k].sec != SEC_POOL || ((keys[k].flags & KEY_POOL) != 0) != pool_own)
            continue;
        unsigned only = keys[k].flags & (KEY_HTTP | KEY_PROC);
        const char *which = only == KEY_HTTP ? "handler = http"
                          : only == KEY_PROC ? "handler = exec or subprocess"
                                             : "handler = http, exec or subprocess";
        if ((keys[k].flags & KEY_REQUIRED) && !seen[k] && (!only || (only & kind)))
            problem(l, p->line, "%s missing required key '%s'%s%s%s", where, keys[k].name,
                    only ? " (" : "", only ? which : "", only ? ")" : "");
        if (only && seen[k] && handler_ok && !(only & kind))
            problem(l, abs(seen[k]), "key '%s' only applies to %s", keys[k].name, which);
    }
}

/* The keys of a handler (a [handler:NAME], or a pool's inline handler): what is required, and
 * what applies to http alone. where: "[pool:NAME]" or "[handler:NAME]". */
static void check_handler_keys(struct loader *l, struct pool_conf *p, const int *seen, const char *where)
{
    int ih = key_index(SEC_POOL, "handler");
    bool handler_ok = seen[ih] > 0 && p->handler_name == NULL;
    unsigned kind = handler_kind(p, handler_ok);
    bool http = kind == KEY_HTTP, proc = kind == KEY_PROC;
    check_keys(l, p, seen, false, handler_ok, kind, where);
    validate_plugin(l, p, seen, handler_ok, where);
    if (proc)
        validate_proc(l, p, seen);
    if (!http)
        return;
    int cert = seen[key_index(SEC_POOL, "tls_cert")], key = seen[key_index(SEC_POOL, "tls_key")];
    if (!cert != !key)
        problem(l, abs(cert ? cert : key), "tls_cert and tls_key go together: %s is missing",
                cert ? "tls_key" : "tls_cert");

    int ct = seen[key_index(SEC_POOL, "connect_timeout")], to = seen[key_index(SEC_POOL, "timeout")];
    if (ct >= 0 && to >= 0 && p->connect_timeout_ms > p->timeout_ms) {
        char a[32], b[32];
        problem(l, ct > to ? ct : to, "connect_timeout (%s) is longer than timeout (%s)",
                dur_format(p->connect_timeout_ms, a, sizeof a), dur_format(p->timeout_ms, b, sizeof b));
    }
}

/* A [handler:NAME]: its handler must be a kind, with that kind's keys. */
static void validate_handler(struct loader *l, size_t i)
{
    struct pool_conf *h = &l->c->handlers[i];
    const int *seen = l->handler_keys[i];
    int ih = seen[key_index(SEC_POOL, "handler")];
    char where[CONF_NAME_MAX + 16];
    snprintf(where, sizeof where, "[handler:%s]", h->name);
    if (ih > 0 && h->handler_name)
        problem(l, ih, "[handler:%s] handler must be a kind (log, noop, http, exec, subprocess, plugin), not the name '%s'", h->name,
                h->handler_name);
    check_handler_keys(l, h, seen, where);
}

static int find_handler(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->nhandlers; i++)
        if (strcmp(c->handlers[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* The config of pool i's target for [handler:h]: the pool's own keys (KEY_POOL) and the
 * section's, set again through the same setters (so every key of the table works in both). */
static void build_target(struct loader *l, size_t i, size_t h, struct pool_conf *t)
{
    const struct pool_conf *p = &l->c->pools[i];
    pool_defaults(t, p->name, strlen(p->name), p->line);
    char err[400];
    for (size_t k = 0; k < l->npairs; k++) {
        const struct pair *pr = &l->pairs[k];
        if ((pr->sec == SEC_POOL && pr->idx == i && (pr->k->flags & KEY_POOL)) ||
            (pr->sec == SEC_HANDLER && pr->idx == h))
            pr->k->set(pr->k, t, pr->value, err, sizeof err);      /* accepted once already */
    }
    const struct pool_conf *hs = &l->c->handlers[h];   /* plugin.KEY lines are no table row */
    for (size_t k = 0; k < 2 * hs->nplugin_params; k += 2) {
        t->plugin_params = xrealloc(t->plugin_params, (2 * t->nplugin_params + 2) * sizeof *t->plugin_params);
        t->plugin_params[2 * t->nplugin_params] = xstrdup(hs->plugin_params[k]);
        t->plugin_params[2 * t->nplugin_params + 1] = xstrdup(hs->plugin_params[k + 1]);
        t->nplugin_params++;
    }
    t->plugin_line = hs->plugin_line;
    t->plugin_params_line = hs->plugin_params_line;
    /* What runs (exec, subprocess) is made from command and shell by validate_proc(), which
     * checked the section: no setter makes it, so take the section's. */
    if (hs->argv) {
        size_t n = 0;
        while (hs->argv[n])
            n++;
        t->argv = xcalloc(n + 1, sizeof *t->argv);
        for (size_t k = 0; k < n; k++)
            t->argv[k] = xstrdup(hs->argv[k]);
    }
}

/* A routed pool (handler = NAME, or route.*): check its routes, make its targets, and sum them
 * up into its own handler, inflight and timeout (see conf.h). */
static void resolve_routes(struct loader *l, size_t i)
{
    struct conf *c = l->c;
    struct pool_conf *p = &c->pools[i];
    const int *seen = l->pool_keys[i];
    int ih = seen[key_index(SEC_POOL, "handler")], irf = seen[key_index(SEC_POOL, "route_field")];
    bool routes = p->nroutes > 0 || p->route_default.handler;
    if (!routes && p->handler_name == NULL) {
        if (irf)
            problem(l, abs(irf), "route_field needs route.TYPE = NAME lines");
        return;
    }
    if (routes && ih) {
        problem(l, abs(ih), "handler and route.* exclude each other (route.default = NAME sends the rest to one handler)");
        return;
    }
    if (!routes && find_handler(c, p->handler_name) < 0) {
        /* most likely a kind mistyped: that one error, not one more per handler key */
        problem(l, abs(ih), "handler: '%s' is neither a kind (log, noop, http, exec, subprocess, plugin) nor a [handler:NAME] section",
                p->handler_name);
        return;
    }
    p->routed = true;
    if (!routes) {
        p->route_default = (struct route_conf){ .handler = p->handler_name, .line = abs(ih) };
        p->handler_name = NULL;
    }
    if (p->nroutes && !irf)
        problem(l, p->routes[0].line, "route.%s needs route_field (the field or path holding the type)",
                p->routes[0].type);
    for (size_t k = 0; k < NKEYS; k++)
        if (keys[k].sec == SEC_POOL && !(keys[k].flags & KEY_POOL) && seen[k] && k != (size_t)key_index(SEC_POOL, "handler"))
            problem(l, abs(seen[k]), "key '%s' is a handler key: a pool with a named handler takes it from "
                    "its [handler:NAME] section", keys[k].name);
    if (p->plugin_params_line)
        problem(l, p->plugin_params_line, "keys '%s*' are handler keys: a pool with a named handler takes "
                "them from its [handler:NAME] section", PLUGIN_PREFIX);
    /* targets: one per section named, in the order first named (routes, then the default) */
    size_t nr = p->nroutes + 1;
    int *sec = xcalloc(nr, sizeof *sec);
    bool ok = true;
    for (size_t r = 0; r < nr; r++) {
        struct route_conf *rc = r < p->nroutes ? &p->routes[r] : &p->route_default;
        if (rc->handler == NULL) {
            sec[r] = -1;
            continue;
        }
        sec[r] = find_handler(c, rc->handler);
        if (sec[r] < 0) {
            problem(l, rc->line, "route.%s: no [handler:%s] section", rc->type ? rc->type : "default",
                    rc->handler);
            ok = false;
            continue;
        }
        l->handler_used[sec[r]] = true;
        if (c->handlers[sec[r]].handler_name)
            ok = false;                 /* reported by validate_handler() */
    }
    if (!ok) {
        free(sec);
        return;
    }
    int *used = xcalloc(c->nhandlers, sizeof *used);     /* target index + 1 of each section */
    p->handler = HANDLER_LOG;
    p->inflight = 0;
    long capacity = 0, timeout = 0;
    for (size_t r = 0; r < nr; r++) {
        struct route_conf *rc = r < p->nroutes ? &p->routes[r] : &p->route_default;
        if (sec[r] < 0)
            continue;
        if (!used[sec[r]]) {
            p->targets = xrealloc(p->targets, (p->ntargets + 1) * sizeof *p->targets);
            struct pool_conf *t = &p->targets[p->ntargets];
            build_target(l, i, (size_t)sec[r], t);
            used[sec[r]] = (int)++p->ntargets;
            if (t->handler == HANDLER_HTTP || t->handler == HANDLER_EXEC || t->handler == HANDLER_SUBPROCESS) {
                /* the routed pool takes the most demanding kind for its own rules: a process
                 * (kill grace) over http over the others */
                if (t->handler != HANDLER_HTTP)
                    p->handler = HANDLER_EXEC;
                else if (p->handler != HANDLER_EXEC)
                    p->handler = HANDLER_HTTP;
                capacity += t->inflight;
                if (t->timeout_ms > timeout)
                    timeout = t->timeout_ms;
            } else {
                capacity += p->batch;
            }
        }
        rc->target = (size_t)used[sec[r]] - 1;
    }
    p->inflight = capacity < CONF_INFLIGHT_MAX ? (int)capacity : CONF_INFLIGHT_MAX;
    if (p->handler == HANDLER_HTTP || p->handler == HANDLER_EXEC)
        p->timeout_ms = timeout;
    free(used);
    free(sec);
}

/* On a cluster a pool's keys must share one slot: the dead-letter script moves an entry from
 * the stream to the dead-letter stream atomically (both keys in one EVAL), and the dedupe
 * markers go with them in a reshard. The keys the worker derives from the stream name start
 * with it ("<stream>:dlq", "<stream>:<group>:done:<id>"): a hash tag in the stream name puts
 * them all in its slot. */
static void check_cluster_keys(struct loader *l, const struct pool_conf *p)
{
    int line = l->pool_keys[p - l->c->pools][key_index(SEC_POOL, "stream")];
    line = line ? abs(line) : p->line;
    /* Each stream of several (shards: events:{0..15}) on its own: its dead-letter stream must
     * share its slot; the streams need not share one (the worker reads each on its own). */
    for (size_t k = 0; k < p->nstreams; k++) {
        const char *st = p->streams[k];
        const char *dlq = p->dlqs && p->dlqs[k] ? p->dlqs[k] : p->dlq;
        if (!cluster_has_tag(st, strlen(st))) {
            problem(l, line, "on a cluster, stream '%s' needs a hash tag, e.g. stream = {%s}, so that its "
                    "dead-letter stream and markers are in its slot", st, st);
            return;
        }
        if (dlq && cluster_keyslot(dlq, strlen(dlq)) != cluster_keyslot(st, strlen(st))) {
            int dl = l->pool_keys[p - l->c->pools][key_index(SEC_POOL, "dlq")];
            problem(l, dl ? abs(dl) : line, "on a cluster, dlq '%s' must be in the slot of stream '%s': give it the "
                    "stream's hash tag%s", dlq, st, p->nstreams > 1 ? " (or leave dlq out: each stream's own)" : "");
            return;
        }
    }
}

static void validate_pool(struct loader *l, size_t i)
{
    struct pool_conf *p = &l->c->pools[i];
    const int *seen = l->pool_keys[i];
    int ih = key_index(SEC_POOL, "handler");
    bool handler_ok = seen[ih] > 0 || p->routed;
    unsigned kind = handler_kind(p, handler_ok);
    bool http = kind == KEY_HTTP, proc = kind == KEY_PROC;
    char where[CONF_NAME_MAX + 16];
    snprintf(where, sizeof where, "[pool:%s]", p->name);
    if (!p->routed && p->handler_name == NULL)
        check_handler_keys(l, p, seen, where);
    check_keys(l, p, seen, true, handler_ok, kind, where);
    /* A live worker's message must never look orphaned: claim_idle has to outlast the longest
     * a worker may legitimately hold one (a blocking read, or twice the HTTP timeout). A
     * failed message waiting for its retry (up to backoff_max) stays pending too: its worker
     * resets its idle time every claim_idle/3, between requests, so a blocking read may delay
     * that by block (and a loop turn): claim_idle/3 + block + 500ms must stay below it. */
    long hold = http ? 2 * p->timeout_ms : proc ? 2 * p->timeout_ms + 2 * SECOND : p->block_ms + 5 * SECOND;
    const char *why = http ? "twice the timeout" : proc ? "twice the timeout + 2s (the kill grace)" : "block + 5s";
    long touch = 3 * (p->block_ms + 500) / 2;
    if (touch > hold) {
        hold = touch;
        why = "1.5 x (block + 500ms): a retry waiting in a worker is kept fresh every claim_idle/3, "
              "late by up to a blocking read";
    }
    if (p->claim_idle_ms < hold) {
        char a[32], b[32];
        int ci = seen[key_index(SEC_POOL, "claim_idle")];
        problem(l, ci ? abs(ci) : p->line, "claim_idle (%s) must be at least %s (%s)",
                dur_format(p->claim_idle_ms, a, sizeof a), dur_format(hold, b, sizeof b), why);
    }
    if (p->backoff_base_ms > p->backoff_max_ms) {
        char a[32], b[32];
        int bb = seen[key_index(SEC_POOL, "backoff_base")];
        problem(l, bb ? abs(bb) : p->line, "backoff_base (%s) is longer than backoff_max (%s)",
                dur_format(p->backoff_base_ms, a, sizeof a), dur_format(p->backoff_max_ms, b, sizeof b));
    }
    /* The master kills a worker silent this long. A worker's loop never waits on Redis nor on
     * an endpoint (every command and transfer is polled with a deadline) and stamps its
     * heartbeat at least every second, so a few seconds suffice whatever timeout and block
     * are; the key's own minimum (1s) is the only bound. */
    int pl = abs(seen[key_index(SEC_POOL, "priority")]);
    if (pl && p->nstreams == 1)
        problem(l, pl, "priority needs several streams (stream = first second ...), [pool:%s] reads one",
                p->name);
    else if (pl && p->sharded)
        problem(l, pl, "priority does not apply to shards ({A..B} in stream): [pool:%s] reads its shards as equals",
                p->name);
    else if (p->priority == PRIORITY_WEIGHTED && p->nweights != p->nstreams)
        problem(l, pl, "priority = weighted has %zu weights for %zu streams: give one per stream, in their order",
                p->nweights, p->nstreams);
    /* One dead-letter stream per stream by default: a dead letter stays beside its kind. An
     * explicit dlq takes them all (dlq.stream says where each came from). */
    bool explicit_dlq = p->dlq != NULL;
    if (p->dlq == NULL && p->stream) {
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s:dlq", p->stream);
        p->dlq = b.p;
    }
    free_strv(p->dlqs, p->dlqs ? p->nstreams : 0);
    p->dlqs = p->nstreams ? xcalloc(p->nstreams, sizeof *p->dlqs) : NULL;
    for (size_t s = 0; s < p->nstreams; s++) {
        struct buf b = BUF_INIT;
        buf_printf(&b, explicit_dlq ? "%s" : "%s:dlq", explicit_dlq ? p->dlq : p->streams[s]);
        p->dlqs[s] = b.p;
    }
    for (size_t s = 0; s < p->nstreams; s++) {
        for (size_t d = 0; d < p->nstreams; d++) {
            if (strcmp(p->dlqs[d], p->streams[s]) == 0) {
                if (p->nstreams == 1)
                    problem(l, p->line, "[pool:%s] dlq must not be the stream itself", p->name);
                else
                    problem(l, p->line, "[pool:%s] dead-letter stream '%s' is also one of its streams",
                            p->name, p->dlqs[d]);
                s = d = p->nstreams;
            }
        }
    }
    if (p->workers_max == 0)
        p->workers_max = p->workers;
    /* The scale_* keys steer a range only: with a fixed count they would do nothing. */
    static const char *const scale_keys[] = { "scale_up_after", "scale_down_after", "scale_interval" };
    for (size_t k = 0; k < 3; k++)
        if (p->workers_max == p->workers && seen[key_index(SEC_POOL, scale_keys[k])])
            problem(l, abs(seen[key_index(SEC_POOL, scale_keys[k])]),
                    "%s only applies with workers = MIN..MAX (a range to scale within)", scale_keys[k]);
    /* retain only holds trimming back: alone it would read as "trim what is older", which it
     * is not. */
    if (p->retain_ms > 0 && !p->trim_acked)
        problem(l, abs(seen[key_index(SEC_POOL, "retain")]),
                "retain only applies with trim = acked (it keeps acknowledged entries; it never trims by itself)");
    /* A routed pool watches the files of those of its handlers that have one. */
    if (p->watch && handler_ok && !p->routed && p->handler != HANDLER_EXEC && p->handler != HANDLER_SUBPROCESS &&
        p->handler != HANDLER_PLUGIN)
        problem(l, abs(seen[key_index(SEC_POOL, "watch")]),
                "watch = yes only applies to handler = exec, subprocess or plugin (their files are watched)");
}

/* Two pools reading one stream as one group would be one consumer group with two configs:
 * whichever child claims an entry decides how it is delivered. */
/* admin_token_file: read now, so that a token that cannot work is said at its line rather than
 * at the first click. It must not be the read token: whoever may look (listen_token_file) must
 * not thereby be able to replay or purge. */
static void check_admin_token(struct loader *l, const struct conf *c)
{
    int line = l->fleet_keys[key_index(SEC_FLEET, "admin_token_file")];
    if (!line || c->admin_token_file == NULL)
        return;
    char err[300];
    char *admin = conf_read_token(c->admin_token_file, err, sizeof err);
    if (admin == NULL) {
        problem(l, line, "admin_token_file %s is empty", c->admin_token_file);
        return;
    }
    char *reader = c->listen_token_file ? conf_read_token(c->listen_token_file, err, sizeof err) : NULL;
    if (reader && strcmp(reader, admin) == 0)
        problem(l, line, "admin_token_file holds the same token as listen_token_file: the admin token must "
                         "differ from the read token");
    if (reader) {
        explicit_bzero(reader, strlen(reader));
        free(reader);
    }
    explicit_bzero(admin, strlen(admin));
    free(admin);
}

static void check_pairs_unique(struct loader *l)
{
    const struct conf *c = l->c;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool_conf *p = &c->pools[i];
        const char *same = NULL;
        const struct pool_conf *q = NULL;
        for (size_t j = 0; p->group && j < i && !same; j++) {
            q = &c->pools[j];
            for (size_t a = 0; q->group && strcmp(p->group, q->group) == 0 && a < p->nstreams && !same; a++)
                for (size_t b = 0; b < q->nstreams && !same; b++)
                    if (strcmp(p->streams[a], q->streams[b]) == 0)
                        same = p->streams[a];
        }
        if (same)
            problem(l, p->line, "[pool:%s] reads stream '%s' as group '%s', like [pool:%s] at line %d",
                    p->name, same, p->group, q->name, q->line);
    }
}

/* Each worker takes a scoreboard slot, which the master maps once at start: a config wanting
 * more than there are would run short of workers without saying so at load. Reported at the
 * pool whose workers cross the limit. */
static void check_slots(struct loader *l)
{
    long total = 0;
    int iw = key_index(SEC_POOL, "workers");
    for (size_t i = 0; i < l->c->npools; i++) {
        const struct pool_conf *p = &l->c->pools[i];
        total += p->workers_max;       /* a range may grow to its maximum */
        if (total > SB_SLOTS_MAX) {
            int line = l->pool_keys[i][iw] > 0 ? l->pool_keys[i][iw] : p->line;
            problem(l, line, "the pools up to [pool:%s] want %ld workers in all, more than the %d there are slots for",
                    p->name, total, SB_SLOTS_MAX);
            return;
        }
    }
}

static void validate(struct loader *l)
{
    struct conf *c = l->c;
    const char *env = getenv("STREAMFLEET_REDIS");
    if (env) {
        struct redis_addr a;
        char err[300];
        if (conf_parse_redis(env, &a, err, sizeof err) == -1) {
            struct buf b = BUF_INIT;
            buf_printf(&b, "STREAMFLEET_REDIS: %s", err);
            add_problem(l, 0, b.p);
        } else {
            redis_take_tls(&a, &c->redis);
            conf_redis_release(&c->redis);
            c->redis = a;
            c->redis_from_env = true;
        }
    } else if (!l->fleet_keys[key_index(SEC_FLEET, "redis")]) {
        if (l->fleet_line)
            problem(l, l->fleet_line, "[fleet] missing required key 'redis' (or set STREAMFLEET_REDIS)");
        else
            problem(l, 1, "missing [fleet] section with redis = ... (or set STREAMFLEET_REDIS)");
    }
    c->redis_line = l->fleet_keys[key_index(SEC_FLEET, "redis")];
    int tc = l->fleet_keys[key_index(SEC_FLEET, "redis_tls_cert")];
    int tk = l->fleet_keys[key_index(SEC_FLEET, "redis_tls_key")];
    if (tc && !tk)
        problem(l, tc, "redis_tls_cert needs redis_tls_key");
    else if (tk && !tc)
        problem(l, tk, "redis_tls_key needs redis_tls_cert");
    check_admin_token(l, c);
    int sp = l->fleet_keys[key_index(SEC_FLEET, "sentinel_password_file")];
    if (sp && !c->redis.sentinel_master && (c->redis.host || c->redis.unix_path))
        problem(l, sp, "sentinel_password_file needs redis = redis-sentinel://...");
    if (!c->redis.tls && (c->redis.host || c->redis.sentinel_master)) {
        static const char *const tls_keys[] = { "redis_tls_ca", "redis_tls_cert", "redis_tls_key",
                                                "redis_tls_server_name", "redis_tls_verify" };
        for (size_t i = 0; i < sizeof tls_keys / sizeof tls_keys[0]; i++) {
            int line = l->fleet_keys[key_index(SEC_FLEET, tls_keys[i])];
            if (line)
                problem(l, line, "%s needs redis = rediss://...", tls_keys[i]);
        }
    }
    if (!l->pool_headers)
        problem(l, 1, "no [pool:NAME] section: nothing to run");
    for (size_t i = 0; i < c->nhandlers; i++)
        validate_handler(l, i);
    for (size_t i = 0; i < c->npools; i++)
        resolve_routes(l, i);
    for (size_t i = 0; i < c->npools; i++)
        validate_pool(l, i);
    for (size_t i = 0; i < c->nhandlers; i++) {
        if (l->handler_used[i])
            continue;
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s:%d: warning: [handler:%s] is used by no pool", l->path, c->handlers[i].line,
                   c->handlers[i].name);
        c->warnings = xrealloc(c->warnings, (c->nwarnings + 1) * sizeof *c->warnings);
        c->warnings[c->nwarnings++] = b.p;
    }
    check_slots(l);
    check_pairs_unique(l);
    if (c->redis.cluster)
        for (size_t i = 0; i < c->npools; i++)
            check_cluster_keys(l, &c->pools[i]);
}

/* ---- loading ---- */

static void conf_defaults(struct conf *c, const char *path)
{
    c->path = xstrdup(path);
    c->listen_host = xstrdup("127.0.0.1");
    c->listen_port = 9100;
    c->drain_timeout_ms = 30 * SECOND;
    c->poll_interval_ms = 5 * SECOND;
    c->log_level = LOG_INFO;
    c->log_format = LOG_FORMAT_TEXT;
    c->stats_interval_ms = MINUTE;
    c->redis.tls_verify = true;
}

struct conf *conf_load(const char *path, struct conf_errors *errs)
{
    struct loader l = { .path = path, .sec = SEC_NONE };
    struct conf *c = xcalloc(1, sizeof *c);
    conf_defaults(c, path);
    l.c = c;

    l.fp = fopen(path, "r");
    struct stat st;
    if (!l.fp) {
        problem(&l, 0, "cannot open: %s", strerror(errno));
        goto out;
    }
    if (fstat(fileno(l.fp), &st) == 0 && S_ISDIR(st.st_mode)) {
        problem(&l, 0, "cannot open: %s", strerror(EISDIR));
        goto out;
    }

    /* The reader mirrors inih's rules for these settings: set them, do not inherit them. */
    ini_allow_multiline = false;
    ini_allow_inline_comments = true;
    ini_allow_no_value = false;
    ini_stop_on_first_error = false;
    int rc = ini_parse_stream(read_line, &l, on_pair, &l);
    if (ferror(l.fp))
        problem(&l, 0, "read error: %s", strerror(l.read_errno ? l.read_errno : EIO));
    else if (rc > 0 && !has_problem_at(&l, rc))
        problem(&l, rc, "syntax error");
    else if (rc < 0)
        problem(&l, 0, "inih failed (%d)", rc);
    validate(&l);

out:
    if (l.fp)
        fclose(l.fp);
    if (l.raw)
        explicit_bzero(l.raw, l.rawcap);
    free(l.raw);
    free(l.pool_keys);
    free(l.handler_keys);
    free(l.handler_used);
    for (size_t i = 0; i < l.npairs; i++) {
        explicit_bzero(l.pairs[i].value, strlen(l.pairs[i].value));
        free(l.pairs[i].value);
    }
    free(l.pairs);
    if (l.nprobs) {
        qsort(l.probs, l.nprobs, sizeof *l.probs, problem_cmp);
        errs->msg = xrealloc(errs->msg, (errs->n + l.nprobs) * sizeof *errs->msg);
        for (size_t i = 0; i < l.nprobs; i++)
            errs->msg[errs->n++] = l.probs[i].msg;
    }
    free(l.probs);
    if (l.nprobs) {
        conf_free(c);
        return NULL;
    }
    return c;
}

static void pool_release(struct pool_conf *p)
{
    free(p->name);
    free(p->stream);
    free_strv(p->streams, p->nstreams);
    free(p->weights);
    free_strv(p->dlqs, p->dlqs ? p->nstreams : 0);
    free(p->group);
    free(p->url);
    free(p->body_field);
    free(p->content_type);
    for (size_t i = 0; i < p->nheaders; i++)
        wipe_free(p->headers[i]);       /* Authorization and friends */
    free(p->headers);
    free(p->tls_ca);
    free(p->tls_cert);
    free(p->tls_key);
    free(p->signing_secret_file);
    free(p->id_field);
    free(p->created_field);
    free_strv(p->require_fields, p->nrequire_fields);
    free(p->dlq);
    plugin_release(p);
    free(p->handler_name);
    free(p->route_field);
    for (size_t i = 0; i < p->nroutes; i++) {
        free(p->routes[i].type);
        free(p->routes[i].handler);
    }
    free(p->routes);
    free(p->route_default.handler);
    for (size_t i = 0; i < p->ntargets; i++)
        pool_release(&p->targets[i]);
    free(p->targets);
    free(p->command);
    argv_free(p->argv);
    free_strv(p->env, p->nenv);
    free_strv(p->pass_env, p->npass_env);
}

void conf_free(struct conf *c)
{
    if (!c)
        return;
    free(c->path);
    conf_redis_release(&c->redis);
    free(c->listen_host);
    free(c->log_file);
    free(c->pidfile);
    free(c->user);
    free(c->group);
    free(c->listen_token_file);
    free(c->admin_token_file);
    for (size_t i = 0; i < c->npools; i++)
        pool_release(&c->pools[i]);
    free(c->pools);
    for (size_t i = 0; i < c->nhandlers; i++)
        pool_release(&c->handlers[i]);
    free(c->handlers);
    free_strv(c->warnings, c->nwarnings);
    free(c);
}

void conf_errors_release(struct conf_errors *errs)
{
    free_strv(errs->msg, errs->n);
    errs->msg = NULL;
    errs->n = 0;
}

const struct pool_conf *conf_pool(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->npools; i++)
        if (strcmp(c->pools[i].name, name) == 0)
            return &c->pools[i];
    return NULL;
}

static bool str_same(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a && b && strcmp(a, b) == 0);
}

static bool sentinels_same(const struct redis_addr *a, const struct redis_addr *b)
{
    for (size_t i = 0; i < a->nsentinels && i < b->nsentinels; i++)
        if (!str_same(a->sentinels[i].host, b->sentinels[i].host) || a->sentinels[i].port != b->sentinels[i].port)
            return false;
    if (a->cluster != b->cluster || a->nseeds != b->nseeds)
        return false;
    for (size_t i = 0; i < a->nseeds; i++)
        if (!str_same(a->seeds[i].host, b->seeds[i].host) || a->seeds[i].port != b->seeds[i].port)
            return false;
    return true;
}

bool conf_redis_same(const struct redis_addr *a, const struct redis_addr *b)
{
    return str_same(a->host, b->host) && a->port == b->port && str_same(a->unix_path, b->unix_path) &&
           str_same(a->user, b->user) && str_same(a->password, b->password) && a->db == b->db &&
           a->tls == b->tls && a->tls_verify == b->tls_verify && str_same(a->tls_ca, b->tls_ca) &&
           str_same(a->tls_cert, b->tls_cert) && str_same(a->tls_key, b->tls_key) &&
           str_same(a->tls_server_name, b->tls_server_name) && str_same(a->sentinel_master, b->sentinel_master) &&
           a->nsentinels == b->nsentinels && str_same(a->sentinel_password_file, b->sentinel_password_file) &&
           sentinels_same(a, b);
}

/* Two lists of strings, element by element. */
static bool strs_same(char *const *a, size_t na, char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

bool conf_pool_same(const struct pool_conf *a, const struct pool_conf *b)
{
    if (a->nheaders != b->nheaders || a->nrequire_fields != b->nrequire_fields)
        return false;
    if (!str_same(a->command, b->command) || a->shell != b->shell || a->stdin_body != b->stdin_body ||
        !strs_same(a->env, a->nenv, b->env, b->nenv) ||
        !strs_same(a->pass_env, a->npass_env, b->pass_env, b->npass_env))
        return false;
    for (size_t i = 0; i < a->nheaders; i++)
        if (strcmp(a->headers[i], b->headers[i]) != 0)
            return false;
    if (!plugin_same(a, b))
        return false;
    for (size_t i = 0; i < a->nrequire_fields; i++)
        if (strcmp(a->require_fields[i], b->require_fields[i]) != 0)
            return false;
    if (!str_same(a->created_field, b->created_field) || a->routed != b->routed ||
        !str_same(a->route_field, b->route_field) || a->nroutes != b->nroutes ||
        !str_same(a->route_default.handler, b->route_default.handler) || a->ntargets != b->ntargets)
        return false;
    for (size_t i = 0; i < a->nroutes; i++)
        if (!str_same(a->routes[i].type, b->routes[i].type) || !str_same(a->routes[i].handler, b->routes[i].handler))
            return false;
    for (size_t i = 0; i < a->ntargets; i++)
        if (!conf_pool_same(&a->targets[i], &b->targets[i]))
            return false;
    if (a->nstreams != b->nstreams || a->priority != b->priority || a->nweights != b->nweights)
        return false;
    for (size_t i = 0; i < a->nstreams; i++)
        if (!str_same(a->streams[i], b->streams[i]) ||
            (a->dlqs && b->dlqs && !str_same(a->dlqs[i], b->dlqs[i])))
            return false;
    for (size_t i = 0; i < a->nweights; i++)
        if (a->weights[i] != b->weights[i])
            return false;
    return str_same(a->name, b->name) && str_same(a->stream, b->stream) && str_same(a->group, b->group) &&
           a->batch == b->batch && a->block_ms == b->block_ms && a->handler == b->handler &&
           str_same(a->url, b->url) && a->method == b->method && str_same(a->body_field, b->body_field) &&
           str_same(a->content_type, b->content_type) && a->inflight == b->inflight &&
           a->connect_timeout_ms == b->connect_timeout_ms && a->timeout_ms == b->timeout_ms &&
           str_same(a->tls_ca, b->tls_ca) && str_same(a->tls_cert, b->tls_cert) &&
           str_same(a->tls_key, b->tls_key) && a->tls_verify == b->tls_verify &&
           a->adaptive == b->adaptive &&
           str_same(a->signing_secret_file, b->signing_secret_file) && str_same(a->id_field, b->id_field) &&
           a->max_attempts == b->max_attempts && a->crash_limit == b->crash_limit && a->backoff == b->backoff &&
           a->backoff_base_ms == b->backoff_base_ms && a->backoff_max_ms == b->backoff_max_ms &&
           a->backoff_jitter_pct == b->backoff_jitter_pct && a->claim_idle_ms == b->claim_idle_ms &&
           str_same(a->dlq, b->dlq) && a->dedupe_ttl_ms == b->dedupe_ttl_ms &&
           a->max_message_bytes == b->max_message_bytes && a->heartbeat_timeout_ms == b->heartbeat_timeout_ms &&
           a->max_messages == b->max_messages && a->max_messages_jitter == b->max_messages_jitter &&
           a->memory_limit == b->memory_limit && a->max_lag == b->max_lag &&
           a->max_pending_age_ms == b->max_pending_age_ms &&
           a->group_start_latest == b->group_start_latest && a->watch == b->watch;
}

char *conf_read_token(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read listen_token_file %s: %s", path, strerror(errno));
        return NULL;
    }
    char buf[512];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
        buf[--n] = '\0';
    char *t = n ? xstrdup(buf) : NULL;
    if (t == NULL)
        snprintf(err, errlen, "listen_token_file %s is empty", path);
    explicit_bzero(buf, sizeof buf);
    return t;
}

struct conf *conf_load_or_report(const char *path, size_t *nproblems)
{
    struct conf_errors errs = { 0 };
    struct conf *c = conf_load(path, &errs);
    for (size_t i = 0; i < errs.n; i++)
        fprintf(stderr, "%s\n", errs.msg[i]);
    for (size_t i = 0; c && i < c->nwarnings; i++)
        fprintf(stderr, "%s\n", c->warnings[i]);
    if (nproblems)
        *nproblems = errs.n;
    conf_errors_release(&errs);
    return c;
}
