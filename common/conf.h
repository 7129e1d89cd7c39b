/* conf.h: the configuration, read from an INI file by inih into one struct and validated in
 * one place (conf.c). Once conf_load() returns, a struct conf is immutable: the master and the
 * children only read it, and a reload builds a new one beside the old. */
#ifndef SF_CONF_H
#define SF_CONF_H

#include <stdbool.h>
#include <stddef.h>

#include "common/backoff.h"

#define CONF_NAME_MAX   48     /* stream and group names; pool names: 43 ("pool:" + 43 = 48) */
#define CONF_WORKERS_MAX 256
#define CONF_BATCH_MAX  10000
#define CONF_INFLIGHT_MAX 1024
#define CONF_HEADERS_MAX 32
#define CONF_STREAMS_MAX 64    /* stream = k1 k2 ... or k{0..63}: streams of one pool */
#define CONF_WEIGHT_MAX 1000
#define CONF_ROUTES_MAX 31     /* route.TYPE lines per pool (with route.default: a scoreboard
                                * counter each, SB_NROUTES) */

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };
enum handler_kind { HANDLER_LOG, HANDLER_NOOP, HANDLER_HTTP, HANDLER_EXEC, HANDLER_SUBPROCESS, HANDLER_PLUGIN };
enum http_method { HTTP_POST, HTTP_PUT, HTTP_PATCH };
/* How a pool of several streams picks the next one to read (priority = ...). */
enum priority_kind { PRIORITY_STRICT, PRIORITY_WEIGHTED };

/* A sentinel of redis-sentinel://, or a seed of redis-cluster://. */
struct redis_node {
    char *host;
    int port;
};

/* Where Redis is. Exactly one of host, unix_path or sentinel_master is set. password (and user)
 * are secrets: never log them; conf_redis_display() gives a printable form without them. */
struct redis_addr {
    char *host;
    int port;
    char *unix_path;
    char *user;          /* NULL: AUTH with the password alone */
    char *password;      /* NULL: no AUTH */
    int db;
    bool tls;            /* rediss:// */
    bool tls_verify;     /* redis_tls_verify, default yes: the server's chain and name */
    char *tls_ca;        /* redis_tls_ca: PEM CA file; NULL: the system's */
    char *tls_cert;      /* redis_tls_cert, redis_tls_key: our client certificate, or NULL */
    char *tls_key;
    char *tls_server_name; /* redis_tls_server_name: SNI and the name checked; NULL: the host */
    /* redis-sentinel://: the sentinels are asked for the address of the master of this name;
     * user, password and db are the data master's. */
    char *sentinel_master;
    struct redis_node *sentinels;
    size_t nsentinels;
    char *sentinel_password_file; /* [fleet] sentinel_password_file: AUTH to the sentinels */
    /* redis-cluster:// (rediss-cluster://): the seed nodes the slot map is first asked of;
     * host and port are the first seed's. user, password and the TLS keys are every node's. */
    bool cluster;
    struct redis_node *seeds;
    size_t nseeds;
};

/* route.TYPE = NAME (or route.default = NAME, type NULL) of a pool. */
struct route_conf {
    char *type;
    char *handler;              /* the [handler:NAME] section it names; NULL: not set */
    int line;
    size_t target;              /* its handler's config: pool_conf.targets[target] */
};

/* A new key is also compared in conf_pool_same(): a reload restarts a pool whose settings changed. */
struct pool_conf {
    char *name;
    int line;                   /* line of its [pool:NAME] header, for messages */
    char *stream;               /* the first of streams: the pool's one stream, usually */
    char **streams;             /* stream = k1 k2 ...: in order of priority, no duplicates */
    size_t nstreams;            /* 1..CONF_STREAMS_MAX */
    bool sharded;               /* a {A..B} range in stream: shards, read as equals */
    enum priority_kind priority;/* with several streams (default strict) */
    int *weights;               /* priority = weighted W1 W2 ...: one per stream, 1..CONF_WEIGHT_MAX */
    size_t nweights;
    char *group;                /* created on each stream */
    int workers;                /* 1..CONF_WORKERS_MAX; with a range, its minimum */
    int workers_max;            /* workers = MIN..MAX: the maximum; else the same as workers */
    long scale_up_after_ms;     /* a range: one more worker while an entry waits this long */
    long scale_down_after_ms;   /* ... one fewer once none has for this long */
    long scale_interval_ms;     /* ... at most one change per this long */
    int batch;                  /* XREADGROUP COUNT, 1..CONF_BATCH_MAX */
    long block_ms;              /* XREADGROUP BLOCK, 1 ms .. 30 s */
    enum handler_kind handler;

    /* handler = http */
    char *url;                  /* template: {field}, {stream}, {id} */
    enum http_method method;
    char *body_field;           /* NULL: body is a JSON object of all fields */
    char *content_type;
    char **headers;             /* "Name: value", repeatable key `header` */
    size_t nheaders;
    int inflight;               /* 1..CONF_INFLIGHT_MAX */
    long connect_timeout_ms;
    long timeout_ms;
    char *tls_ca, *tls_cert, *tls_key;
    bool tls_verify;
    char *signing_secret_file;
    char *id_field;             /* NULL: the stream entry id is the message id */
    bool adaptive;              /* default yes: the fleet's concurrency per destination adapts
                                 * (common/aimd.h) between 1 and inflight x workers */

    /* handler = exec, subprocess (with inflight, timeout and body_field above) */
    char *command;              /* as written */
    char **argv;                /* what is executed: command split (argv.h), or /bin/sh -c command */
    bool shell;                 /* shell = yes: argv is /bin/sh -c command */
    char **env;                 /* "NAME=value", repeatable key `env` */
    size_t nenv;
    char **pass_env;            /* names copied from the worker's environment */
    size_t npass_env;
    bool stdin_body;            /* exec's stdin = body: the raw body_field, not the JSON object */

    /* handler = plugin */
    char *plugin;               /* absolute path of the shared object */
    int plugin_line;            /* line of its `plugin =` key, for -t's messages */
    char **plugin_params;       /* `plugin.KEY = value` lines: key, value, key, value, ... */
    size_t nplugin_params;      /* number of pairs, in the order of the file */
    int plugin_params_line;     /* line of the first of them; 0: none */

    /* message fields (each a field name or a path into a JSON field: child/fields.h) */
    char *created_field;        /* when the message was made, for the age histogram; NULL:
                                 * the entry id's time */
    char **require_fields;      /* a message lacking any is dead-lettered bad_message */
    size_t nrequire_fields;

    /* retries, dead letters, orphans, duplicates */
    int max_attempts;           /* deliveries before dead-lettering, 1..1000 */
    int crash_limit;            /* worker deaths charged to one entry before it is dead-lettered
                                 * (crash, watchdog, memory), 0..1000; 0: off */
    enum backoff_kind backoff;
    long backoff_base_ms;
    long backoff_max_ms;        /* also caps Retry-After and the circuit breaker's probe delay */
    int backoff_jitter_pct;     /* 0..100 */
    long claim_idle_ms;         /* a pending entry idle this long belongs to a dead consumer */
    char *dlq;                  /* dead-letter stream, default "<stream>:dlq" */
    char **dlqs;                /* that of each of streams: dlq when set, else "<stream>:dlq" */
    long dedupe_ttl_ms;         /* 0: off */
    long long max_message_bytes;

    /* supervision */
    long heartbeat_timeout_ms;  /* a worker silent this long is killed and replaced */
    long max_messages;          /* recycle a worker after this many messages; 0: never */
    long max_messages_jitter;   /* plus a random 0..this, so workers do not recycle together */
    long long memory_limit;     /* replace a worker whose resident memory exceeds this; 0: off */

    /* health */
    long max_lag;               /* /health degraded above this many undelivered entries; 0: off */
    long max_pending_age_ms;    /* ... or when the oldest pending entry is older; 0: off */

    /* group_start: a group created for the first time starts after the entries already in
     * the stream ("$") instead of at its start ("0"). */
    bool group_start_latest;

    /* watch = yes (for development): the master replaces the pool's workers when the file of
     * its command (exec, subprocess) or plugin changes (supervisor/watch.c). */
    bool watch;

    /* trim = acked: the master trims the stream below what every group of it still needs
     * (supervisor/trim.h), keeping acknowledged entries younger than retain_ms (0: none).
     * The master's alone: not compared by conf_pool_same(), a reload applies them without
     * restarting the pool's workers. */
    bool trim_acked;
    long retain_ms;

    /* A reload that changes the pool starts one worker of the new generation first (the
     * canary, supervisor/master.c): it must be ready within canary_timeout_ms (0: no canary,
     * the whole generation starts at once) and handle canary_messages entries successfully,
     * or the reload is rolled back for this pool. The master's alone, read from the new
     * config: not compared by conf_pool_same(). */
    long canary_timeout_ms;
    long canary_messages;

    /* Named handlers and routes. A routed pool (handler = NAME, or route.* keys) hands each
     * message to one of its targets: a config per [handler:NAME] section it uses, made of the
     * pool's own settings and that section's handler keys (a handler opens with its target as
     * its pool_conf). Its own handler, inflight and timeout then sum up its targets: any http
     * makes it http (inflight: their capacities added up; timeout: the longest), so the rules
     * and the worker's capacity read as for an inline handler. */
    bool routed;
    char *handler_name;         /* handler = NAME */
    char *route_field;          /* a field or path holding the message's type */
    struct route_conf *routes;  /* route.TYPE, in file order */
    size_t nroutes;
    struct route_conf route_default;    /* route.default, or handler = NAME */
    struct pool_conf *targets;
    size_t ntargets;
};

struct conf {
    char *path;
    struct redis_addr redis;
    bool redis_from_env;        /* STREAMFLEET_REDIS overrode [fleet] redis */
    int redis_line;             /* of [fleet] redis, for messages; 0: not in the file */
    char *listen_host;          /* numeric address, default 127.0.0.1 */
    int listen_port;            /* default 9100 */
    long drain_timeout_ms;      /* default 30 s */
    long poll_interval_ms;      /* master's Redis poll, default 5 s */
    enum log_level log_level;
    enum log_format log_format;
    char *log_file;             /* NULL: stderr */
    long stats_interval_ms;     /* a stats line per pool this often; 0: never */
    char *pidfile;
    char *user, *group;         /* drop to these when started as root */
    bool allow_root;            /* run workers as root (no user given) without complaint */
    char *listen_token_file;    /* bearer token for the HTTP endpoint (but /livez) */
    char *admin_token_file;     /* token of the dead-letter actions on the web; NULL: read-only */
    struct pool_conf *pools;
    size_t npools;
    /* [handler:NAME] sections, as parsed (name, line and handler keys; the rest at defaults) */
    struct pool_conf *handlers;
    size_t nhandlers;
    /* "FILE:LINE: warning: ..." (an unused [handler:NAME]): the config works as it is */
    char **warnings;
    size_t nwarnings;
};

/* Problems found while loading, each already formatted as "FILE:LINE: message". */
struct conf_errors {
    char **msg;
    size_t n;
};

/* Read and validate path. On success returns a new conf (free with conf_free()) and leaves
 * errs empty; on any problem returns NULL and appends every problem found to errs (free with
 * conf_errors_release()). The environment variable STREAMFLEET_REDIS, when set, overrides
 * [fleet] redis. */
struct conf *conf_load(const char *path, struct conf_errors *errs);
void conf_free(struct conf *c);
void conf_errors_release(struct conf_errors *errs);
/* conf_load() for the command line: every problem is printed on stderr, one per line, and
 * counted in *nproblems (when not NULL). */
struct conf *conf_load_or_report(const char *path, size_t *nproblems);

/* Parse a Redis address: redis://[[user]:password@]host[:port][/db], unix:///path[?db=N] or
 * redis-sentinel://[[user]:password@]host[:port],host[:port].../MASTERNAME[/db] or
 * redis-cluster://[[user]:password@]host[:port],host[:port].../ (rediss-cluster:// for TLS).
 * Fills a (free contents with conf_redis_release()); returns 0, or -1 with a message that
 * never contains the password in err. */
int conf_parse_redis(const char *url, struct redis_addr *a, char *err, size_t errlen);
void conf_redis_release(struct redis_addr *a);
/* "redis://host:port/db", "unix:///path" or "redis-sentinel://h:p,h:p/name/db", never the
 * credentials. Writes into buf. */
const char *conf_redis_display(const struct redis_addr *a, char *buf, size_t len);

/* Whether two pools would run the same way: every setting but workers (and the line). A
 * reload keeps the children of a pool whose settings are the same. */
bool conf_pool_same(const struct pool_conf *a, const struct pool_conf *b);
bool conf_redis_same(const struct redis_addr *a, const struct redis_addr *b);

/* The bearer token in path (listen_token_file), trailing whitespace removed; NULL when it
 * cannot be read or is empty (err says why). Caller wipes (explicit_bzero) and frees it. */
char *conf_read_token(const char *path, char *err, size_t errlen);

/* Find a pool by name, or NULL. */
const struct pool_conf *conf_pool(const struct conf *c, const char *name);

#endif
