/* statuscmd.c: `streamfleet status -c FILE [--json] [--workers] [--watch [SECONDS]]`.
 *
 * Asks the running master for GET /status.json (libcurl, 2 s, with the bearer token of
 * [fleet] listen_token_file) and prints it as a table. When the master does not answer, it
 * asks Redis itself (common/redis.c, 2 s) what it can tell per pool: stream length, pending, lag,
 * the oldest pending entry, dead letters; workers, rates and restarts are then unknown, and
 * it says so. Both ways end in the same JSON document, which --json prints and the table is
 * drawn from, so scripts and eyes see the same figures.
 *
 * A short-lived process of its own: the master's rule (no curl before fork) is not
 * concerned. Exit status: 0 all pools ok, 1 degraded or down, 2 usage. */
#include "supervisor/statuscmd.h"
#include "supervisor/rediscli.h"
#include "common/buf.h"
#include "common/conf.h"
#include "common/dur.h"
#include "common/json.h"
#include "common/log.h"
#include "common/redis.h"

#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FETCH_TIMEOUT_MS 2000
#define BODY_MAX (8u << 20)         /* a /status.json larger than this is not ours */

static void usage(FILE *out)
{
    fprintf(out, "usage: streamfleet status [-c FILE] [--json] [--workers] [--watch [SECONDS]]\n"
                 "Show the fleet at a glance: from the running master, or from Redis when it does not answer.\n"
                 "  -c, --config FILE  configuration file (default /etc/streamfleet/streamfleet.ini)\n"
                 "  -j, --json         print the status as JSON (for scripts)\n"
                 "  -W, --workers      also a table of each pool's workers (pid, state, what each holds)\n"
                 "  -w, --watch [N]    refresh every N seconds (default 2) until Ctrl-C\n"
                 "  -h, --help         print this help and exit\n"
                 "  -V, --version      print the version and exit\n"
                 "exit status: 0 every pool ok, 1 a pool degraded or the fleet down, 2 usage\n");
}

/* A usage mistake (said already): point to --help, as GNU programs do. */
static int usage_error(void)
{
    fprintf(stderr, "usage: streamfleet status [-c FILE] [--json] [--workers] [--watch [SECONDS]]\n"
                    "Try 'streamfleet status --help' for more information.\n");
    return 2;
}

/* ---- from the master ---- */

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
    struct buf *b = arg;
    if (b->len + size * n > BODY_MAX)
        return 0;                   /* curl fails the transfer */
    buf_add(b, data, size * n);
    return size * n;
}


/* The URL of the master's /status.json: a wildcard listen address is reached on loopback. */
static void status_url(const struct conf *c, char *url, size_t len)
{
    const char *host = c->listen_host;
    if (strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    bool v6 = strchr(host, ':') != NULL;
    snprintf(url, len, "http://%s%s%s:%d/status.json", v6 ? "[" : "", host, v6 ? "]" : "", c->listen_port);
}

/* GET url into body. Returns 0 on a 200, else -1 with err filled. */
static int fetch_status(const struct conf *c, const char *url, struct buf *body, char *err, size_t errlen)
{
    char *token = NULL;
    if (c->listen_token_file && (token = conf_read_token(c->listen_token_file, err, errlen)) == NULL)
        return -1;
    CURL *h = curl_easy_init();
    if (h == NULL) {
        snprintf(err, errlen, "curl_easy_init failed");
        free(token);
        return -1;
    }
    struct curl_slist *headers = NULL;
    char *auth = NULL;
    if (token) {
        size_t n = strlen(token) + sizeof "Authorization: Bearer ";
        auth = xmalloc(n);
        snprintf(auth, n, "Authorization: Bearer %s", token);
        headers = curl_slist_append(NULL, auth);   /* copies */
        explicit_bzero(auth, n);
        explicit_bzero(token, strlen(token));
    }
    char cerr[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");     /* http_proxy must not take a loopback request */
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)FETCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)FETCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, body);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "streamfleet-status/" SF_VERSION);
    if (headers)
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    int status = -1;
    if (rc != CURLE_OK)
        snprintf(err, errlen, "%s", cerr[0] ? cerr : curl_easy_strerror(rc));
    else if (code == 401)
        snprintf(err, errlen, "it answered 401: the token of listen_token_file is not the one it expects");
    else if (code != 200)
        snprintf(err, errlen, "it answered HTTP %ld", code);
    else
        status = 0;
    curl_easy_cleanup(h);
    /* The slist holds a copy of the header: wipe it before it goes back to malloc. */
    for (struct curl_slist *s = headers; s; s = s->next)
        explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(headers);
    free(auth);
    free(token);
    return status;
}

/* ---- from Redis, when the master does not answer ---- */

/* A reply that says the connection failed, not the command. */
static bool conn_failed(const struct redis_reply *r)
{
    return r->type == REDIS_T_ERROR &&
           (r->err == REDIS_E_IO || r->err == REDIS_E_TIMEOUT || r->err == REDIS_E_TOOBIG || r->err == REDIS_E_PROTO);
}

/* One integer reply, or -1 when the command failed (a missing key is 0 for XLEN); *broken when
 * the connection failed. */
static long long redis_int(struct redis *rc, const char *cmd, const char *key, bool *broken)
{
    struct redis_reply *r = redis_callv(rc, FETCH_TIMEOUT_MS, cmd, key, NULL);
    long long v = r->type == REDIS_T_INTEGER ? r->integer : -1;
    *broken |= conn_failed(r);
    redis_reply_free(r);
    return v;
}

/* ,"key":n or ,"key":null when n is negative (unknown). */
static void json_count(struct buf *out, const char *key, long long n)
{
    if (n >= 0)
        buf_printf(out, ",\"%s\":%lld", key, n);
    else
        buf_printf(out, ",\"%s\":null", key);
}

/* One stream's figures in Redis (lag -1, oldest -1: unknown). */
struct stream_fig {
    long long length, dlq, pending, lag;
    double oldest;
    bool group;
};

/* Ask Redis for the figures of stream st (dead letters in dlq) of pool p. Returns -1 when the
 * connection failed midway. */
static int stream_figures(struct redis *rc, const struct pool_conf *p, const char *st, const char *dlq,
                          double now, struct stream_fig *f)
{
    bool broken = false;
    *f = (struct stream_fig){ .lag = -1, .oldest = -1 };
    f->length = redis_int(rc, "XLEN", st, &broken);
    f->dlq = redis_int(rc, "XLEN", dlq, &broken);
    struct redis_reply *r = redis_callv(rc, FETCH_TIMEOUT_MS, "XINFO", "GROUPS", st, NULL);
    broken |= conn_failed(r);
    for (size_t i = 0; r->type == REDIS_T_ARRAY && i < r->elements; i++) {
        const struct redis_reply *name = redis_reply_map_get(r->element[i], "name");
        if (name == NULL || name->type != REDIS_T_STRING || strcmp(name->str, p->group) != 0)
            continue;
        const struct redis_reply *pe = redis_reply_map_get(r->element[i], "pending");
        const struct redis_reply *lg = redis_reply_map_get(r->element[i], "lag");
        f->group = true;
        f->pending = pe && pe->type == REDIS_T_INTEGER ? pe->integer : 0;
        f->lag = lg && lg->type == REDIS_T_INTEGER ? lg->integer : -1;
    }
    redis_reply_free(r);
    if (f->group) {
        /* XPENDING summary: [count, smallest id, greatest id, consumers]. */
        r = redis_callv(rc, FETCH_TIMEOUT_MS, "XPENDING", st, p->group, NULL);
        broken |= conn_failed(r);
        if (r->type == REDIS_T_ARRAY && r->elements >= 2 && r->element[1]->type == REDIS_T_STRING) {
            double ms = atof(r->element[1]->str);
            f->oldest = now * 1000 > ms ? (now * 1000 - ms) / 1000.0 : 0;
        }
        redis_reply_free(r);
    }
    return broken ? -1 : 0;
}

/* What Redis tells of pool p, as one element of the "pools" array of /status.json, with
 * workers, rates and restarts null. A pool of several streams (shards, each perhaps on its
 * own node of a cluster): their figures added up, and each one's in "streams", as the
 * master's document has them. Returns -1 when the connection failed midway. */
static int redis_pool_json(struct redis *rc, const struct pool_conf *p, double now, struct buf *out)
{
    size_t n = p->nstreams && p->streams ? p->nstreams : 1;
    struct stream_fig *figs = xcalloc(n, sizeof *figs);
    long long length = 0, dlq = 0, pending = 0, lag = 0;
    double oldest = -1;
    bool group = true;
    const char *missing = NULL;
    for (size_t k = 0; k < n; k++) {
        const char *st = n > 1 ? p->streams[k] : p->stream;
        const char *dl = n > 1 && p->dlqs ? p->dlqs[k] : p->dlq;
        if (stream_figures(rc, p, st, dl, now, &figs[k]) == -1) {
            free(figs);
            return -1;
        }
        length += figs[k].length;
        /* One dead-letter stream for all (dlq = ...) is counted once. */
        bool counted = false;
        for (size_t j = 0; j < k && n > 1 && p->dlqs; j++)
            counted = counted || strcmp(p->dlqs[j], dl) == 0;
        dlq += counted ? 0 : figs[k].dlq;
        pending += figs[k].pending;
        lag = lag < 0 || figs[k].lag < 0 ? -1 : lag + figs[k].lag;
        if (figs[k].oldest > oldest)
            oldest = figs[k].oldest;
        if (!figs[k].group && missing == NULL)
            missing = st;
        group = group && figs[k].group;
    }

    struct buf why = BUF_INIT;
    if (p->max_lag > 0 && lag > p->max_lag)
        buf_printf(&why, "pool %s: lag %lld over max_lag %ld", p->name, lag, p->max_lag);
    if (p->max_pending_age_ms > 0 && oldest * 1000 > (double)p->max_pending_age_ms)
        buf_printf(&why, "%spool %s: oldest pending entry %.0f s old, over max_pending_age %.0f s",
                   why.len ? "; " : "", p->name, oldest, (double)p->max_pending_age_ms / 1000.0);
    if (!group)
        buf_printf(&why, "%sgroup %s does not exist on %s", why.len ? "; " : "", p->group, missing);

    buf_adds(out, "{\"name\":\"");
    buf_add_json_str(out, p->name, strlen(p->name));
    buf_adds(out, "\",\"stream\":\"");
    buf_add_json_str(out, p->stream, strlen(p->stream));
    buf_adds(out, "\",\"group\":\"");
    buf_add_json_str(out, p->group, strlen(p->group));
    buf_printf(out, "\",\"status\":\"%s\",\"reason\":\"", why.len && group ? "degraded" : "unknown");
    if (why.len)
        buf_add_json_str(out, why.p, why.len);
    buf_printf(out, "\",\"group_exists\":%s,\"worker_counts\":null,\"workers\":null,\"restarts\":null,\"rate\":null",
               group ? "true" : "false");
    json_count(out, "stream_length", length);
    json_count(out, "pending", pending);
    json_count(out, "lag", lag);
    if (oldest >= 0)
        buf_printf(out, ",\"oldest_pending_age\":%.3f", oldest);
    else
        buf_adds(out, ",\"oldest_pending_age\":null");
    json_count(out, "dlq_length", dlq);
    buf_printf(out, ",\"redis_polled\":%.3f", now);
    if (n > 1) {
        buf_adds(out, ",\"streams\":[");
        for (size_t k = 0; k < n; k++) {
            buf_adds(out, k ? ",{\"stream\":\"" : "{\"stream\":\"");
            buf_add_json_str(out, p->streams[k], strlen(p->streams[k]));
            buf_addc(out, '"');
            json_count(out, "stream_length", figs[k].length);
            json_count(out, "pending", figs[k].pending);
            json_count(out, "lag", figs[k].lag);
            if (figs[k].oldest >= 0)
                buf_printf(out, ",\"oldest_pending_age\":%.3f", figs[k].oldest);
            else
                buf_adds(out, ",\"oldest_pending_age\":null");
            json_count(out, "dlq_length", figs[k].dlq);
            buf_addc(out, '}');
        }
        buf_addc(out, ']');
    }
    buf_adds(out, ",\"history\":[],\"last_errors\":[]}");
    buf_release(&why);
    free(figs);
    return 0;
}

/* A /status.json-like document built from Redis alone, into out. why: why the master did not
 * answer. */
static void from_redis(const struct conf *c, const char *url, const char *why, struct buf *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    double now = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
    char where[300], err[300] = "";
    conf_redis_display(&c->redis, where, sizeof where);
    struct buf pools = BUF_INIT;
    struct redis *rc = rediscli_connect(&c->redis, FETCH_TIMEOUT_MS, err, sizeof err);
    for (size_t i = 0; rc && i < c->npools; i++) {
        if (i)
            buf_addc(&pools, ',');
        if (redis_pool_json(rc, &c->pools[i], now, &pools) == -1) {
            snprintf(err, sizeof err, "%s", redis_error(rc));
            redis_free(rc);
            rc = NULL;
        }
    }
    struct buf reason = BUF_INIT;
    buf_printf(&reason, "no status from the master at %s: %s", url, why);
    if (rc == NULL)
        buf_printf(&reason, "; redis %s is unreachable: %s", where, err);
    buf_printf(out, "{\"source\":\"redis\",\"time\":%.3f,\"status\":\"down\",\"reason\":\"", now);
    buf_add_json_str(out, reason.p, reason.len);
    buf_printf(out, "\",\"redis\":{\"up\":%s,\"address\":\"", rc ? "true" : "false");
    buf_add_json_str(out, where, strlen(where));
    buf_addc(out, '"');
    if (rc == NULL) {
        buf_adds(out, ",\"error\":\"");
        buf_add_json_str(out, err, strlen(err));
        buf_addc(out, '"');
    }
    buf_printf(out, "},\"pools\":[%s]}\n", rc && pools.p ? pools.p : "");
    if (rc)
        redis_free(rc);
    buf_release(&pools);
    buf_release(&reason);
}

/* ---- the table ---- */

/* 0.4s, 12s, 3m 05s, 2h 10m, 3d 04h */
static void fmt_age(double s, char *out, size_t len)
{
    /* A document is not trusted to hold sane figures: out of long's range (or NaN), the
     * conversion below would be undefined (found by tests/fuzz/fuzz_status.c). */
    if (!(fabs(s) < 1e15)) {
        snprintf(out, len, "?");
        return;
    }
    long n = (long)s;
    if (s < 10)
        snprintf(out, len, "%.1fs", s);
    else if (n < 60)
        snprintf(out, len, "%lds", n);
    else if (n < 3600)
        snprintf(out, len, "%ldm %02lds", n / 60, n % 60);
    else if (n < 86400)
        snprintf(out, len, "%ldh %02ldm", n / 3600, n % 3600 / 60);
    else
        snprintf(out, len, "%ldd %02ldh", n / 86400, n % 86400 / 3600);
}

static void fmt_int(const struct json *o, const char *key, char *out, size_t len)
{
    double v;
    if (json_num(o, key, &v))
        snprintf(out, len, "%.0f", v);
    else
        snprintf(out, len, "-");
}

enum { COL_POOL, COL_STATUS, COL_WORKERS, COL_RATE, COL_PENDING, COL_LAG, COL_OLDEST, COL_DLQ, COL_RESTARTS, NCOLS };
static const char *const col_title[NCOLS] = { "POOL", "STATUS", "WORKERS", "MSGS/S", "PENDING", "LAG",
                                              "OLDEST PENDING", "DEAD LETTERS", "RESTARTS" };

struct row {
    char cell[NCOLS][96];
};

static void pool_row(const struct json *p, struct row *r)
{
    const char *name = json_str(p, "name"), *status = json_str(p, "status");
    snprintf(r->cell[COL_POOL], sizeof r->cell[0], "%s", name ? name : "?");
    snprintf(r->cell[COL_STATUS], sizeof r->cell[0], "%s", status ? status : "?");
    const struct json *w = json_get(p, "worker_counts");
    double running, starting, draining, expected, v;
    if (json_num(w, "running", &running) && json_num(w, "expected", &expected)) {
        /* n stays inside the cell even when a huge figure was cut short (1e308 is 309 digits). */
        size_t room = sizeof r->cell[0], n;
        n = (size_t)snprintf(r->cell[COL_WORKERS], room, "%.0f/%.0f", running, expected);
        if (json_num(w, "starting", &starting) && starting > 0 && n < room)
            n += (size_t)snprintf(r->cell[COL_WORKERS] + n, room - n, " +%.0f starting", starting);
        if (json_num(w, "draining", &draining) && draining > 0 && n < room)
            snprintf(r->cell[COL_WORKERS] + n, room - n, " +%.0f draining", draining);
    } else {
        snprintf(r->cell[COL_WORKERS], sizeof r->cell[0], "?");
    }
    if (json_num(p, "rate", &v))
        snprintf(r->cell[COL_RATE], sizeof r->cell[0], "%.1f", v);
    else
        snprintf(r->cell[COL_RATE], sizeof r->cell[0], "?");
    fmt_int(p, "pending", r->cell[COL_PENDING], sizeof r->cell[0]);
    fmt_int(p, "lag", r->cell[COL_LAG], sizeof r->cell[0]);
    if (json_num(p, "oldest_pending_age", &v))
        fmt_age(v, r->cell[COL_OLDEST], sizeof r->cell[0]);
    else
        snprintf(r->cell[COL_OLDEST], sizeof r->cell[0], "-");
    fmt_int(p, "dlq_length", r->cell[COL_DLQ], sizeof r->cell[0]);
    if (json_num(p, "restarts", &v))
        snprintf(r->cell[COL_RESTARTS], sizeof r->cell[0], "%.0f", v);
    else
        snprintf(r->cell[COL_RESTARTS], sizeof r->cell[0], "?");
}

/* "2026-12-03 13:30:01" in local time (as the last errors are shown), "?" when t is not sane. */
static void fmt_stamp(double t, char *out, size_t len)
{
    snprintf(out, len, "?");
    time_t tt = fabs(t) < 1e15 ? (time_t)t : 0;
    struct tm tm;
    if (fabs(t) < 1e15 && localtime_r(&tt, &tm))
        strftime(out, len, "%Y-%m-%d %H:%M:%S", &tm);
}

/* When the Redis figures of the table (length, pending, lag, oldest, dead letters) were
 * polled: the master polls every poll_interval and a Redis that stops answering leaves the
 * last ones standing, so a figure can be older than the table. Said for the pool with the
 * oldest poll; the Redis fallback has just asked, and says "now". */
static void polled_line(struct buf *out, const struct json *s, bool from_master)
{
    const struct json *pools = json_get(s, "pools");
    size_t n = json_len(pools);
    double oldest = 0, t, polled;
    const char *which = NULL;
    bool found = false, unknown = false;
    for (size_t i = 0; i < n; i++) {
        const struct json *p = json_at(pools, i);
        if (!json_num(p, "redis_polled", &polled))
            unknown = true;
        else if (!found || polled < oldest)
            oldest = polled, which = json_str(p, "name"), found = true;
    }
    if (n == 0)
        return;
    if (!found) {
        buf_adds(out, "redis figures: not polled yet\n");
        return;
    }
    char stamp[32], age[32];
    fmt_stamp(oldest, stamp, sizeof stamp);
    if (!from_master) {
        buf_printf(out, "redis figures polled now, %s\n", stamp);
        return;
    }
    if (json_num(s, "time", &t))
        fmt_age(t > oldest ? t - oldest : 0, age, sizeof age);
    else
        snprintf(age, sizeof age, "?");
    buf_printf(out, "redis figures polled %s, %s before this status", stamp, age);
    if (n > 1)
        buf_printf(out, " (oldest: pool %s)", which ? which : "?");
    if (unknown)
        buf_adds(out, "; some pools not polled yet");
    buf_addc(out, '\n');
}

static void render_table(struct buf *out, const struct json *s, const char *url)
{
    const char *source = json_str(s, "source");
    bool from_master = source == NULL || strcmp(source, "master") == 0;
    const char *status = json_str(s, "status"), *reason = json_str(s, "reason");
    const struct json *redis = json_get(s, "redis");
    double t, start;

    if (from_master) {
        buf_printf(out, "streamfleet %s at %s", json_str(s, "version") ? json_str(s, "version") : "?", url);
        if (json_num(s, "time", &t) && json_num(s, "start_time", &start)) {
            char up[32];
            fmt_age(t - start, up, sizeof up);
            buf_printf(out, ", up %s", up);
        }
        buf_printf(out, ": %s\n", status ? status : "?");
        buf_printf(out, "redis: %s", json_bool(redis, "up") == 1 ? "up" : "DOWN");
        if (json_bool(redis, "up") != 1 && json_str(redis, "error"))
            buf_printf(out, " (%s)", json_str(redis, "error"));
        int durable = json_bool(redis, "durable");
        if (durable != -1)
            buf_printf(out, ", %s", durable ? "durable" : "NOT DURABLE");
        if (json_str(redis, "durability") && json_str(redis, "durability")[0])
            buf_printf(out, ": %s", json_str(redis, "durability"));
        buf_addc(out, '\n');
    } else {
        buf_printf(out, "streamfleet: DOWN: %s\n", reason ? reason : "?");
        if (json_bool(redis, "up") == 1)
            buf_printf(out, "from redis %s directly: workers, rates and restarts unknown\n",
                       json_str(redis, "address") ? json_str(redis, "address") : "");
    }
    polled_line(out, s, from_master);

    const struct json *pools = json_get(s, "pools");
    size_t n = json_len(pools);
    struct row *rows = xcalloc(n + 1, sizeof *rows);
    for (int c = 0; c < NCOLS; c++)
        snprintf(rows[0].cell[c], sizeof rows[0].cell[c], "%s", col_title[c]);
    for (size_t i = 0; i < n; i++)
        pool_row(json_at(pools, i), &rows[i + 1]);
    int width[NCOLS] = { 0 };
    for (size_t i = 0; i <= n; i++)
        for (int c = 0; c < NCOLS; c++) {
            int l = (int)strlen(rows[i].cell[c]);
            if (l > width[c])
                width[c] = l;
        }
    if (n)
        buf_addc(out, '\n');
    for (size_t i = 0; n && i <= n; i++) {
        for (int c = 0; c < NCOLS; c++) {
            bool left = c <= COL_WORKERS;
            const char *sep = c == NCOLS - 1 ? "\n" : "  ";
            if (c == NCOLS - 1)
                buf_printf(out, "%*s%s", width[c], rows[i].cell[c], sep);
            else
                buf_printf(out, left ? "%-*s%s" : "%*s%s", width[c], rows[i].cell[c], sep);
        }
    }
    free(rows);

    /* Why, and the newest error of each pool: what an operator looks at next. */
    bool said = false;
    for (size_t i = 0; i < n; i++) {
        const struct json *p = json_at(pools, i);
        const char *why = json_str(p, "reason");
        if (why && why[0]) {
            buf_printf(out, "%s%s\n", said ? "" : "\n", why);
            said = true;
        }
    }
    if (from_master && status && strcmp(status, "ok") != 0 && !said && reason)
        buf_printf(out, "\n%s\n", reason);
    said = false;
    for (size_t i = 0; i < n; i++) {
        const struct json *p = json_at(pools, i);
        const struct json *last = json_at(json_get(p, "last_errors"), 0);
        double when, worker;
        if (!json_num(last, "time", &when))
            continue;
        char stamp[32];
        fmt_stamp(when, stamp, sizeof stamp);
        if (!json_num(last, "worker", &worker))
            worker = -1;
        buf_printf(out, "%slast error of %s: %s worker %.0f: %s\n", said ? "" : "\n", json_str(p, "name"), stamp,
                   worker, json_str(last, "error") ? json_str(last, "error") : "");
        said = true;
    }
}

/* ---- the workers (--workers) ---- */

enum { WC_SLOT, WC_PID, WC_GEN, WC_STATE, WC_UPTIME, WC_HANDLED, WC_INFLIGHT, WC_HELD, WC_OLDEST, WC_HELD_FOR,
       WC_RSS, WC_RESTARTS, WC_ERROR, NWCOLS };
static const char *const wcol_title[NWCOLS] = { "SLOT", "PID", "GEN", "STATE", "UPTIME", "HANDLED", "INFLIGHT",
                                                "HELD", "OLDEST HELD", "HELD FOR", "RSS", "RESTARTS",
                                                "LAST ERROR" };

struct wrow {
    char cell[NWCOLS][128];
};

/* The error text on one line of a terminal: control characters (a newline, an escape
 * sequence from a handler's output) become spaces. */
static void fmt_error(const struct json *w, char *out, size_t len)
{
    const char *e = json_str(json_get(w, "last_error"), "error");
    snprintf(out, len, "%s", e && e[0] ? e : "-");
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = ' ';
}

static void worker_row(const struct json *w, struct wrow *r)
{
    size_t room = sizeof r->cell[0];
    double v;
    fmt_int(w, "slot", r->cell[WC_SLOT], room);
    fmt_int(w, "pid", r->cell[WC_PID], room);
    fmt_int(w, "generation", r->cell[WC_GEN], room);
    snprintf(r->cell[WC_STATE], room, "%s", json_str(w, "state") ? json_str(w, "state") : "?");
    if (json_num(w, "uptime", &v))
        fmt_age(v, r->cell[WC_UPTIME], room);
    else
        snprintf(r->cell[WC_UPTIME], room, "-");
    fmt_int(w, "handled", r->cell[WC_HANDLED], room);
    fmt_int(w, "inflight", r->cell[WC_INFLIGHT], room);
    fmt_int(w, "held", r->cell[WC_HELD], room);
    const struct json *oldest = json_get(w, "held_oldest");
    const char *id = json_str(oldest, "id");
    snprintf(r->cell[WC_OLDEST], room, "%s", id ? id : "-");
    if (json_num(oldest, "age", &v))
        fmt_age(v, r->cell[WC_HELD_FOR], room);
    else
        snprintf(r->cell[WC_HELD_FOR], room, "-");
    if (json_num(w, "rss_bytes", &v) && fabs(v) < 1e15)
        snprintf(r->cell[WC_RSS], room, "%.1f MiB", v / 1048576.0);
    else
        snprintf(r->cell[WC_RSS], room, "-");
    fmt_int(w, "restarts", r->cell[WC_RESTARTS], room);
    fmt_error(w, r->cell[WC_ERROR], room);
}

int status_show_workers(const char *doc, size_t len, struct buf *out)
{
    char why[200];
    struct json *s = json_parse(doc, len, why, sizeof why);
    if (s == NULL)
        return -1;
    const struct json *pools = json_get(s, "pools");
    for (size_t i = 0; i < json_len(pools); i++) {
        const struct json *p = json_at(pools, i);
        const char *name = json_str(p, "name");
        const struct json *list = json_get(p, "workers");
        size_t n = json_len(list);
        if (json_kind(list) != JSON_K_ARRAY) {
            buf_printf(out, "\nworkers of pool %s: unknown (the master does not answer)\n", name ? name : "?");
            continue;
        }
        buf_printf(out, "\nworkers of pool %s:\n", name ? name : "?");
        struct wrow *rows = xcalloc(n + 1, sizeof *rows);
        for (int c = 0; c < NWCOLS; c++)
            snprintf(rows[0].cell[c], sizeof rows[0].cell[c], "%s", wcol_title[c]);
        for (size_t k = 0; k < n; k++)
            worker_row(json_at(list, k), &rows[k + 1]);
        int width[NWCOLS] = { 0 };
        for (size_t k = 0; k <= n; k++)
            for (int c = 0; c < NWCOLS; c++) {
                int l = (int)strlen(rows[k].cell[c]);
                if (l > width[c])
                    width[c] = l;
            }
        for (size_t k = 0; k <= n; k++)
            for (int c = 0; c < NWCOLS; c++) {
                bool left = c == WC_STATE || c == WC_OLDEST || c == WC_ERROR;
                if (c == NWCOLS - 1)
                    buf_printf(out, "%s\n", rows[k].cell[c]);
                else
                    buf_printf(out, left ? "%-*s  " : "%*s  ", width[c], rows[k].cell[c]);
            }
        free(rows);
    }
    json_free(s);
    return 0;
}

int status_show(const char *doc, size_t len, const char *url, bool table, struct buf *out)
{
    char why[200];
    struct json *s = json_parse(doc, len, why, sizeof why);
    if (s == NULL)
        return -1;
    const char *st = json_str(s, "status");
    int status = st && strcmp(st, "ok") == 0 ? 0 : 1;
    if (table) {
        render_table(out, s, url);
    } else {
        buf_add(out, doc, len);
        if (len && doc[len - 1] != '\n')
            buf_addc(out, '\n');
    }
    json_free(s);
    return status;
}

/* ---- one look, and the loop ---- */

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* Take one look at the fleet and put what is to be printed into out. Returns the exit status. */
static int look(const struct conf *c, bool json, bool workers, struct buf *out)
{
    char url[300], why[CURL_ERROR_SIZE + 200] = "";
    status_url(c, url, sizeof url);
    struct buf body = BUF_INIT, doc = BUF_INIT;
    if (fetch_status(c, url, &body, why, sizeof why) == 0 && body.len > 1 && body.p[0] == '{') {
        /* Say where the figures come from, as the Redis fallback does. */
        buf_adds(&doc, "{\"source\":\"master\",");
        buf_add(&doc, body.p + 1, body.len - 1);
    } else {
        if (why[0] == '\0')
            snprintf(why, sizeof why, "its answer is not a status document");
        from_redis(c, url, why, &doc);
    }
    buf_release(&body);

    /* The table names the master without the document's path. */
    char shown[300];
    snprintf(shown, sizeof shown, "%s", url);
    char *tail = strstr(shown, "/status.json");
    if (tail)
        *tail = '\0';
    int status = status_show(doc.p ? doc.p : "", doc.len, shown, !json, out);
    if (status != -1 && workers && !json)
        status_show_workers(doc.p, doc.len, out);
    if (status == -1) {
        buf_printf(out, "streamfleet: %s: the status document cannot be read\n", url);
        status = 1;
    }
    buf_release(&doc);
    return status;
}

int status_main(int argc, char **argv)
{
    const char *path = "/etc/streamfleet/streamfleet.ini";
    bool json = false, watch = false, workers = false;
    long every_ms = 2000;
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' }, { "json", no_argument, NULL, 'j' },
        { "watch", optional_argument, NULL, 'w' },  { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },      { "workers", no_argument, NULL, 'W' },
        { NULL, 0, NULL, 0 },
    };
    optind = 1;
    int o;
    while ((o = getopt_long(argc, argv, "c:jwWhV", opts, NULL)) != -1) {
        switch (o) {
        case 'c': path = optarg; break;
        case 'j': json = true; break;
        case 'W': workers = true; break;
        case 'w': {
            watch = true;
            /* --watch=N, or --watch N when the next word is a duration. */
            const char *arg = optarg;
            long ms;
            if (arg == NULL && optind < argc && dur_parse(argv[optind], &ms) == 0)
                arg = argv[optind++];
            if (arg && (dur_parse(arg, &every_ms) == -1 || every_ms < 100 || every_ms > 86400000L)) {
                fprintf(stderr, "streamfleet: --watch: not a duration from 100ms to 1d: %s\n", arg);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        case 'V': printf("streamfleet %s\n", SF_VERSION); return 0;
        default: return usage_error();      /* getopt said what was wrong */
        }
    }
    if (optind != argc) {
        fprintf(stderr, "streamfleet status: unexpected argument '%s'\n", argv[optind]);
        return usage_error();
    }

    struct conf *c = conf_load_or_report(path, NULL);
    if (c == NULL) {
        fprintf(stderr, "streamfleet: %s cannot be used: no status\n", path);
        return 2;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "streamfleet: curl_global_init failed\n");
        conf_free(c);
        return 1;
    }

    int status;
    struct buf out = BUF_INIT;
    if (!watch) {
        status = look(c, json, workers, &out);
        fwrite(out.p ? out.p : "", 1, out.len, stdout);
    } else {
        /* Ctrl-C ends the loop (and an unfinished sleep) and we exit with the last look's status. */
        struct sigaction sa = { .sa_handler = on_interrupt };
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
        char every[32];
        dur_format(every_ms, every, sizeof every);
        do {
            buf_reset(&out);
            time_t now = time(NULL);
            struct tm tm;
            char stamp[32] = "";
            if (localtime_r(&now, &tm))
                strftime(stamp, sizeof stamp, "%Y-%m-%d %H:%M:%S", &tm);
            buf_adds(&out, "\033[H\033[2J");
            if (!json)
                buf_printf(&out, "every %s, Ctrl-C to stop%*s\n\n", every, 40, stamp);
            status = look(c, json, workers, &out);
            fwrite(out.p, 1, out.len, stdout);
            fflush(stdout);
            struct timespec ts = { every_ms / 1000, (every_ms % 1000) * 1000000L };
            while (!interrupted && nanosleep(&ts, &ts) == -1 && errno == EINTR)
                ;
        } while (!interrupted);
    }
    fflush(stdout);
    buf_release(&out);
    curl_global_cleanup();
    conf_free(c);
    return status;
}
