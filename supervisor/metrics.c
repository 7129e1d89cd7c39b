/* metrics.c: /metrics and /health from a fleet view. Pure: no I/O, no clock. */
#include "supervisor/view.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <time.h>

const char *const restart_reason_name[RESTART_NREASONS] = { "exit", "signal", "heartbeat", "memory", "recycle" };

struct counter_def {
    const char *name;
    const char *help;
    enum sb_counter idx;
};

static const struct counter_def counters[] = {
    { "streamfleet_messages_read_total", "Stream entries handed to the handler.", SB_READ },
    { "streamfleet_messages_acked_total", "Stream entries acknowledged after success.", SB_ACKED },
    { "streamfleet_messages_failed_total", "Handler failures, transient or permanent.", SB_FAILED },
    { "streamfleet_messages_retried_total", "Failed messages scheduled for another attempt.", SB_RETRIED },
    { "streamfleet_messages_reclaimed_total", "Pending entries of dead consumers taken over (XAUTOCLAIM).", SB_RECLAIMED },
    { "streamfleet_messages_duplicate_total", "Messages skipped because their id was already handled (dedupe_ttl).", SB_DUPLICATE },
    { "streamfleet_messages_bad_total", "Messages the handler could not use (bad_message).", SB_BAD_MESSAGE },
    { "streamfleet_messages_vanished_total", "Pending entries whose data was deleted or trimmed.", SB_VANISHED },
    { "streamfleet_redis_errors_total", "Failed Redis commands and connections in children.", SB_REDIS_ERRORS },
    { "streamfleet_dlq_failures_total", "Dead-letter moves that failed; the message stayed pending.", SB_DLQ_FAILURES },
    { "streamfleet_group_recreated_total", "Times the consumer group was missing and created again.", SB_GROUP_RECREATED },
    { "streamfleet_redis_cluster_refreshes_total", "Redis Cluster slot maps asked again (CLUSTER SLOTS) by workers.", SB_CLUSTER_REFRESHES },
};

static void family(struct buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values are pool names (checked to [A-Za-z0-9_.-] by the config), but escape anyway. */
static void label(struct buf *out, const char *v)
{
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            buf_addc(out, '\\');
        if (*p == '\n') {
            buf_adds(out, "\\n");
            continue;
        }
        buf_addc(out, *p);
    }
}

/* One sample of a pool: NAME{pool="POOL"} N, or NAME{pool="POOL",KEY="VAL"} N when key is not
 * NULL (a second label: outcome, state, reason...). */
static void sample(struct buf *out, const char *name, const char *pool, const char *key, const char *val,
                   uint64_t n)
{
    buf_printf(out, "%s{pool=\"", name);
    label(out, pool);
    if (key) {
        buf_printf(out, "\",%s=\"", key);
        label(out, val);
    }
    buf_printf(out, "\"} %" PRIu64 "\n", n);
}

static void histogram(struct buf *out, const struct fleet_view *v, const char *name,
                      const char *help, enum sb_counter first)
{
    const double *le = first == SB_AGE_FIRST ? sb_age_le : sb_bucket_le;
    family(out, name, "histogram", help);
    for (unsigned i = 0; i < v->npools; i++) {
        const struct pool_view *p = &v->pools[i];
        uint64_t cum = 0;
        for (int b = 0; b < SB_NBUCKETS; b++) {
            cum += p->c[first + b];
            buf_printf(out, "%s_bucket{pool=\"", name);
            label(out, p->name);
            if (isinf(le[b]))
                buf_printf(out, "\",le=\"+Inf\"} %" PRIu64 "\n", cum);
            else
                buf_printf(out, "\",le=\"%g\"} %" PRIu64 "\n", le[b], cum);
        }
        buf_printf(out, "%s_sum{pool=\"", name);
        label(out, p->name);
        buf_printf(out, "\"} %.6f\n", (double)p->c[first + SB_NBUCKETS + 1] / 1e6);
        buf_printf(out, "%s_count{pool=\"", name);
        label(out, p->name);
        /* The count is the +Inf bucket: the two can never disagree, even mid-update. */
        buf_printf(out, "\"} %" PRIu64 "\n", cum);
    }
}

/* Adaptive concurrency, per destination (the whole fleet's, not a pool's). */
static void destinations(struct buf *out, const struct fleet_view *v)
{
    static const char *const fam[][2] = {
        { "streamfleet_destination_concurrency_limit", "gauge\tRequests the fleet may have in flight to the destination at once (adaptive)." },
        { "streamfleet_destination_inflight", "gauge\tRequests the fleet has in flight to the destination." },
        { "streamfleet_destination_decreases_total", "counter\tTimes the destination's limit was lowered (429, 503, timeout), once per overload." },
    };
    for (int f = 0; f < 3; f++) {
        const char *tab = strchr(fam[f][1], '\t');
        buf_printf(out, "# HELP %s %s\n# TYPE %s %.*s\n", fam[f][0], tab + 1, fam[f][0],
                   (int)(tab - fam[f][1]), fam[f][1]);
        for (unsigned i = 0; i < v->ndests; i++) {
            const struct aimd_view *d = &v->dests[i];
            buf_printf(out, "%s{destination=\"", fam[f][0]);
            label(out, d->key);
            if (f == 0)
                buf_printf(out, "\"} %.3f\n", d->limit);
            else if (f == 1)
                buf_printf(out, "\"} %u\n", d->inflight);
            else
                buf_printf(out, "\"} %" PRIu64 "\n", d->decreases);
        }
    }
}

void metrics_render(struct buf *out, const struct fleet_view *v)
{
    family(out, "streamfleet_build_info", "gauge", "Version of the running streamfleet.");
    buf_printf(out, "streamfleet_build_info{version=\"%s\"} 1\n", v->version);
    family(out, "process_start_time_seconds", "gauge", "Start time of the master, Unix seconds.");
    buf_printf(out, "process_start_time_seconds %.3f\n", v->start_time);
    family(out, "streamfleet_redis_up", "gauge", "Whether the master's Redis connection answers PING.");
    buf_printf(out, "streamfleet_redis_up %d\n", v->redis_up ? 1 : 0);
    if (v->redis_durable >= 0) {
        family(out, "streamfleet_redis_durable", "gauge",
               "1 when redis keeps what it acknowledged (appendonly yes, maxmemory-policy noeviction).");
        buf_printf(out, "streamfleet_redis_durable %d\n", v->redis_durable);
    }

    for (size_t k = 0; k < sizeof counters / sizeof counters[0]; k++) {
        family(out, counters[k].name, "counter", counters[k].help);
        for (unsigned i = 0; i < v->npools; i++)
            sample(out, counters[k].name, v->pools[i].name, NULL, NULL, v->pools[i].c[counters[k].idx]);
    }

    family(out, "streamfleet_drain_messages_total", "counter",
           "Entries workers held when told to finish, by what became of them: finished, released "
           "(left pending, never started again), abandoned (in progress when killed at drain_timeout).");
    static const struct { const char *outcome; enum sb_counter idx; } drained[] = {
        { "finished", SB_DRAIN_FINISHED }, { "released", SB_DRAIN_RELEASED }, { "abandoned", SB_DRAIN_ABANDONED },
    };
    for (unsigned i = 0; i < v->npools; i++)
        for (size_t k = 0; k < sizeof drained / sizeof drained[0]; k++)
            sample(out, "streamfleet_drain_messages_total", v->pools[i].name, "outcome", drained[k].outcome,
                   v->pools[i].c[drained[k].idx]);

    family(out, "streamfleet_workers", "gauge", "Worker processes by state.");
    for (unsigned i = 0; i < v->npools; i++) {
        const struct pool_view *p = &v->pools[i];
        const char *states[3] = { "running", "starting", "draining" };
        unsigned n[3] = { p->workers_live - p->workers_starting, p->workers_starting, p->workers_draining };
        for (int k = 0; k < 3; k++)
            sample(out, "streamfleet_workers", p->name, "state", states[k], n[k]);
    }
    family(out, "streamfleet_workers_expected", "gauge", "Worker processes the config asks for.");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_workers_expected", v->pools[i].name, NULL, NULL, v->pools[i].workers_expected);
    family(out, "streamfleet_workers_desired", "gauge",
           "Worker processes the pool aims at: its count, or where workers = MIN..MAX scaling stands.");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_workers_desired", v->pools[i].name, NULL, NULL, v->pools[i].workers_expected);
    family(out, "streamfleet_worker_restarts_total", "counter", "Workers replaced, by reason.");
    for (unsigned i = 0; i < v->npools; i++)
        for (int k = 0; k < RESTART_NREASONS; k++)
            sample(out, "streamfleet_worker_restarts_total", v->pools[i].name, "reason", restart_reason_name[k],
                   v->pools[i].restarts_by[k]);
    family(out, "streamfleet_crash_charges_total", "counter",
           "Workers' deaths (crash, watchdog, memory) charged to the one entry they were handling (crash_limit).");
    for (unsigned i = 0; i < v->npools; i++)
        for (int k = 0; k < SB_NCAUSES; k++)
            sample(out, "streamfleet_crash_charges_total", v->pools[i].name, "cause", sb_cause_name[k],
                   v->pools[i].crash_charges[k]);
    /* Only pools that watch (or did): a fleet without watch = yes shows a bare family. */
    family(out, "streamfleet_watch_restarts_total", "counter",
           "New generations of workers started because a watched handler file changed (watch = yes).");
    for (unsigned i = 0; i < v->npools; i++)
        if (v->pools[i].watch || v->pools[i].watch_restarts)
            sample(out, "streamfleet_watch_restarts_total", v->pools[i].name, NULL, NULL, v->pools[i].watch_restarts);
    family(out, "streamfleet_reloads_total", "counter", "Configuration reloads (SIGHUP), by result.");
    buf_printf(out, "streamfleet_reloads_total{result=\"ok\"} %" PRIu64 "\n", v->reloads_ok);
    buf_printf(out, "streamfleet_reloads_total{result=\"failed\"} %" PRIu64 "\n", v->reloads_failed);
    buf_printf(out, "streamfleet_reloads_total{result=\"rolled_back\"} %" PRIu64 "\n", v->reloads_rolled_back);
    family(out, "streamfleet_pool_degraded", "gauge", "1 when /health counts the pool as degraded (see its reason there).");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_pool_degraded", v->pools[i].name, NULL, NULL, pool_degraded(&v->pools[i], NULL));
    family(out, "streamfleet_inflight", "gauge", "Messages being handled right now.");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_inflight", v->pools[i].name, NULL, NULL, v->pools[i].inflight);
    family(out, "streamfleet_circuit_open", "gauge", "1 while a worker of the pool holds off a failing endpoint.");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_circuit_open", v->pools[i].name, NULL, NULL, v->pools[i].circuit_open > 0);
    destinations(out, v);

    struct { const char *name, *help; int which; } gauges[] = {
        { "streamfleet_stream_length", "Entries in the stream (XLEN).", 0 },
        { "streamfleet_group_pending", "Entries delivered to the group and not acknowledged.", 1 },
        { "streamfleet_group_lag", "Entries not yet delivered to the group (XINFO GROUPS; absent when Redis cannot tell).", 2 },
        { "streamfleet_oldest_pending_age_seconds", "Age of the oldest pending entry (0: none).", 3 },
        { "streamfleet_dlq_length", "Entries in the dead-letter stream.", 4 },
    };
    for (size_t k = 0; k < sizeof gauges / sizeof gauges[0]; k++) {
        family(out, gauges[k].name, "gauge", gauges[k].help);
        for (unsigned i = 0; i < v->npools; i++) {
            const struct pool_view *p = &v->pools[i];
            if (!p->redis_known)
                continue;
            /* A pool of several streams: one series per stream, labelled with it (and none
             * for the pool: a sum beside its parts would be counted twice). */
            unsigned n = p->nstreams ? p->nstreams : 1;
            for (unsigned s = 0; s < n; s++) {
                struct stream_view one = { p->stream, p->stream_length, p->pending, p->lag, p->dlq_length,
                                           p->oldest_pending_age };
                const struct stream_view *sv = p->nstreams ? &p->streams[s] : &one;
                if (gauges[k].which == 2 && sv->lag < 0)
                    continue;
                buf_printf(out, "%s{pool=\"", gauges[k].name);
                label(out, p->name);
                if (p->nstreams) {
                    buf_adds(out, "\",stream=\"");
                    label(out, sv->stream);
                }
                switch (gauges[k].which) {
                case 0: buf_printf(out, "\"} %lld\n", sv->stream_length); break;
                case 1: buf_printf(out, "\"} %lld\n", sv->pending); break;
                case 2: buf_printf(out, "\"} %lld\n", sv->lag); break;
                case 3: buf_printf(out, "\"} %.3f\n", sv->oldest_pending_age > 0 ? sv->oldest_pending_age : 0); break;
                default: buf_printf(out, "\"} %lld\n", sv->dlq_length); break;
                }
            }
        }
    }
    family(out, "streamfleet_trimmed_entries_total", "counter",
           "Entries trim = acked removed from the pool's stream (needed by no group, older than retain).");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_trimmed_entries_total", v->pools[i].name, NULL, NULL, v->pools[i].trimmed);
    family(out, "streamfleet_master_resident_memory_bytes", "gauge", "Resident memory of the master.");
    buf_printf(out, "streamfleet_master_resident_memory_bytes %" PRIu64 "\n", v->master_rss_bytes);
    family(out, "streamfleet_workers_resident_memory_bytes", "gauge", "Resident memory of a pool's workers, added up.");
    for (unsigned i = 0; i < v->npools; i++)
        sample(out, "streamfleet_workers_resident_memory_bytes", v->pools[i].name, NULL, NULL, v->pools[i].rss_bytes);

    family(out, "streamfleet_redis_cluster_redirects_total", "counter",
           "Redis Cluster redirections workers followed, by kind (moved: the slot moved; ask: a key mid-migration).");
    for (unsigned i = 0; i < v->npools; i++)
        for (int k = 0; k < 2; k++)
            sample(out, "streamfleet_redis_cluster_redirects_total", v->pools[i].name, "kind", k ? "ask" : "moved",
                   v->pools[i].c[k ? SB_CLUSTER_ASK : SB_CLUSTER_MOVED]);

    family(out, "streamfleet_messages_dead_lettered_total", "counter", "Messages moved to the dead-letter stream, by reason.");
    for (unsigned i = 0; i < v->npools; i++)
        for (int k = 0; k < SB_NDLQ; k++)
            sample(out, "streamfleet_messages_dead_lettered_total", v->pools[i].name, "reason", sb_dlq_label[k],
                   v->pools[i].c[SB_DLQ_FIRST + k]);

    family(out, "streamfleet_messages_routed_total", "counter",
           "Messages handed to a handler, by route (route_field's value, or default).");
    for (unsigned i = 0; i < v->npools; i++) {
        const struct pool_view *p = &v->pools[i];
        for (unsigned k = 0; k < p->nroutes + 1; k++) {
            bool dflt = k == p->nroutes;
            if (dflt && !p->route_default)
                break;
            sample(out, "streamfleet_messages_routed_total", p->name, "route", dflt ? "default" : p->route_type[k],
                   p->c[dflt ? SB_ROUTE_LAST : SB_ROUTE_FIRST + (int)k]);
        }
    }

    family(out, "streamfleet_http_requests_total", "counter", "HTTP deliveries by status code (error: no response).");
    for (unsigned i = 0; i < v->npools; i++)
        for (int k = 0; k < SB_NHTTP; k++) {
            uint64_t n = v->pools[i].c[SB_HTTP_FIRST + k];
            if (n == 0)
                continue;
            sample(out, "streamfleet_http_requests_total", v->pools[i].name, "code", sb_http_label[k], n);
        }

    histogram(out, v, "streamfleet_handler_duration_seconds", "Time from handing a message to the handler to its outcome.",
              SB_DUR_FIRST);
    histogram(out, v, "streamfleet_http_request_duration_seconds", "Time of one HTTP delivery attempt.",
              SB_HTTP_DUR_FIRST);
    histogram(out, v, "streamfleet_message_age_seconds", "Time from XADD (the entry id) to the handler's start.",
              SB_AGE_FIRST);
}

static void json_str(struct buf *out, const char *s)
{
    buf_addc(out, '"');
    buf_add_json_str(out, s, strlen(s));
    buf_addc(out, '"');
}

bool pool_degraded(const struct pool_view *p, struct buf *why)
{
    bool bad = false;
    const char *sep = "";
#define WHY(...)                                  \
    do {                                          \
        bad = true;                               \
        if (why) {                                \
            buf_adds(why, sep);                   \
            buf_printf(why, __VA_ARGS__);         \
        }                                         \
        sep = "; ";                               \
    } while (0)
    if (p->crash_loop)
        WHY("pool %s: crash loop (%u of %u workers)", p->name, p->workers_live, p->workers_expected);
    else if (p->short_too_long)
        WHY("pool %s has %u of %u workers", p->name, p->workers_live, p->workers_expected);
    if (p->circuit_open) {
        /* A worker holds off its endpoint: messages wait, whether the endpoint is down or
         * refuses our TLS settings. Say since when and why, for whoever gets paged. */
        char since[32] = "";
        time_t t = (time_t)p->circuit_since;
        struct tm tm;
        if (p->circuit_since > 0 && gmtime_r(&t, &tm))
            strftime(since, sizeof since, " since %Y-%m-%dT%H:%M:%SZ", &tm);
        WHY("pool %s: circuit open%s: %s", p->name, since,
            p->circuit_error[0] ? p->circuit_error : "endpoint failing");
    }
    if (p->group_not_created)
        WHY("pool %s: group %s of stream %s is missing and redis refuses to create it (maxmemory)",
            p->name, p->group ? p->group : "?", p->stream ? p->stream : "?");
    if (p->group_wrongtype)
        WHY("pool %s: key %s holds another type than a stream (WRONGTYPE)", p->name,
            p->stream ? p->stream : "?");
    if (p->redis_known && p->max_lag > 0 && p->lag > p->max_lag)
        WHY("pool %s: lag %lld over max_lag %ld", p->name, p->lag, p->max_lag);
    if (p->redis_known && p->max_pending_age > 0 && p->oldest_pending_age > p->max_pending_age)
        WHY("pool %s: oldest pending entry %.0f s old, over max_pending_age %.0f s", p->name,
            p->oldest_pending_age, p->max_pending_age);
#undef WHY
    return bad;
}

/* ,"last_reload":{...} of v, when there was a reload. */
static void last_reload_render(struct buf *out, const struct fleet_view *v)
{
    if (v->last_reload == NULL)
        return;
    buf_adds(out, ",\"last_reload\":{\"result\":");
    json_str(out, v->last_reload);
    buf_printf(out, ",\"time\":%.3f,\"reason\":", v->last_reload_time);
    json_str(out, v->last_reload_reason ? v->last_reload_reason : "");
    buf_addc(out, '}');
}

int health_render(struct buf *out, const struct fleet_view *v, const char *only)
{
    const struct pool_view *sel = NULL;
    if (only) {
        for (unsigned i = 0; i < v->npools && !sel; i++)
            if (strcmp(v->pools[i].name, only) == 0)
                sel = &v->pools[i];
        if (!sel) {
            buf_adds(out, "{\"status\":\"unknown pool\",\"pool\":");
            json_str(out, only);
            buf_adds(out, "}\n");
            return 404;
        }
    }

    struct buf reasons = BUF_INIT;
    if (!v->redis_up) {
        buf_adds(&reasons, "redis unreachable");
        if (v->redis_error && v->redis_error[0]) {
            buf_adds(&reasons, ": ");
            buf_adds(&reasons, v->redis_error);
        }
    }
    for (unsigned i = 0; i < v->npools; i++) {
        const struct pool_view *p = &v->pools[i];
        if (sel && p != sel)
            continue;
        if (reasons.len && pool_degraded(p, NULL))
            buf_adds(&reasons, "; ");
        pool_degraded(p, &reasons);
    }
    int status = reasons.len ? 503 : 200;
    buf_printf(out, "{\"status\":\"%s\"", status == 200 ? "ok" : "degraded");
    if (reasons.len) {
        buf_adds(out, ",\"reason\":");
        json_str(out, reasons.p);
    }
    buf_printf(out, ",\"redis\":{\"up\":%s", v->redis_up ? "true" : "false");
    if (v->redis_durable >= 0)
        buf_printf(out, ",\"durable\":%s", v->redis_durable ? "true" : "false");
    if (v->durability && v->durability[0]) {
        buf_adds(out, ",\"durability\":");
        json_str(out, v->durability);
    }
    if (!v->redis_up && v->redis_error) {
        buf_adds(out, ",\"error\":");
        json_str(out, v->redis_error);
    }
    buf_addc(out, '}');
    /* A rolled-back reload is a warning, not an outage: the fleet runs as before it. */
    last_reload_render(out, v);
    buf_adds(out, ",\"pools\":{");
    bool first = true;
    for (unsigned i = 0; i < v->npools; i++) {
        const struct pool_view *p = &v->pools[i];
        if (sel && p != sel)
            continue;
        if (!first)
            buf_addc(out, ',');
        first = false;
        json_str(out, p->name);
        buf_printf(out,
                   ":{\"status\":\"%s\",\"workers\":%u,\"expected\":%u,\"restarts\":%" PRIu64 ","
                   "\"restarts_per_min\":%.2f,\"crash_loop\":%s,\"inflight\":%u,\"circuit_open\":%s",
                   pool_degraded(p, NULL) ? "degraded" : "ok", p->workers_live, p->workers_expected, p->restarts,
                   p->restarts_per_min, p->crash_loop ? "true" : "false", p->inflight,
                   p->circuit_open ? "true" : "false");
        if (p->redis_known) {
            buf_printf(out, ",\"pending\":%lld,\"lag\":", p->pending);
            if (p->lag >= 0)
                buf_printf(out, "%lld", p->lag);
            else
                buf_adds(out, "null");
            buf_adds(out, ",\"oldest_pending_age\":");
            if (p->oldest_pending_age >= 0)
                buf_printf(out, "%.3f", p->oldest_pending_age);
            else
                buf_adds(out, "null");
        }
        buf_addc(out, '}');
    }
    buf_adds(out, "}}\n");
    buf_release(&reasons);
    return status;
}

static void json_num_or_null(struct buf *out, const char *key, bool known, double v, bool integer)
{
    buf_printf(out, ",\"%s\":", key);
    if (!known)
        buf_adds(out, "null");
    else if (integer)
        buf_printf(out, "%.0f", v);
    else
        buf_printf(out, "%.3f", v);
}

double metrics_quantile(const uint64_t *counts, const double *le, int nbuckets, double q)
{
    uint64_t total = 0;
    for (int i = 0; i < nbuckets; i++)
        total += counts[i];
    if (total == 0)
        return -1;
    double rank = q * (double)total, below = 0;
    for (int i = 0; i < nbuckets; i++) {
        if (below + (double)counts[i] >= rank && counts[i] > 0) {
            if (i == nbuckets - 1)
                return nbuckets > 1 ? le[nbuckets - 2] : 0;
            double lo = i ? le[i - 1] : 0;
            return lo + (le[i] - lo) * (rank - below) / (double)counts[i];
        }
        below += (double)counts[i];
    }
    return nbuckets > 1 ? le[nbuckets - 2] : 0;
}

/* A series of quantiles: null where a step observed nothing. */
static void quantile_series(struct buf *out, const char *key, const float *q, unsigned n)
{
    buf_printf(out, "\"%s\":[", key);
    for (unsigned k = 0; k < n; k++) {
        if (k)
            buf_addc(out, ',');
        if (q[k] < 0)
            buf_adds(out, "null");
        else
            buf_printf(out, "%.6f", (double)q[k]);
    }
    buf_addc(out, ']');
}

/* The workers of pool name, one object per slot, for the status page. */
static void workers_render(struct buf *out, const struct fleet_view *v, const char *name)
{
    bool first = true;
    for (unsigned i = 0; i < v->nworkers; i++) {
        const struct worker_view *w = &v->workers[i];
        if (strcmp(w->pool, name) != 0)
            continue;
        buf_printf(out, "%s{\"slot\":%d,\"pid\":", first ? "" : ",", w->slot);
        first = false;
        if (w->pid > 0)
            buf_printf(out, "%d", w->pid);
        else
            buf_adds(out, "null");
        buf_printf(out, ",\"generation\":%u,\"state\":\"%s\",\"restarts\":%u", w->generation, w->state,
                   w->restarts);
        if (w->pid <= 0) {
            buf_adds(out, ",\"uptime\":null,\"handled\":null,\"acked\":null,\"inflight\":null,\"held\":null"
                          ",\"held_oldest\":null,\"held_ids\":[],\"rss_bytes\":null,\"last_error\":null}");
            continue;
        }
        buf_printf(out, ",\"uptime\":%.3f,\"handled\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"inflight\":%u"
                   ",\"held\":%" PRIu64, w->uptime, w->handled, w->acked, w->inflight, w->held.count);
        /* held_oldest is the head of held_ids (oldest first, at most SB_HELD_MAX) */
        double now_ms = v->now * 1000;
        struct buf ids = BUF_INIT;
        for (unsigned k = 0; k < w->held.n; k++) {
            double since = (double)w->held.id[k].since_unix_ms;
            buf_printf(&ids, "%s{\"id\":\"%" PRIu64 "-%" PRIu64 "\",\"age\":%.3f}", k ? "," : "",
                       w->held.id[k].ms, w->held.id[k].n, now_ms > since ? (now_ms - since) / 1000.0 : 0);
        }
        if (w->held.n) {
            const char *comma = strchr(ids.p, '}');
            buf_printf(out, ",\"held_oldest\":%.*s", (int)(comma - ids.p + 1), ids.p);
            buf_printf(out, ",\"held_ids\":[%s]", ids.p);
        } else {
            buf_adds(out, ",\"held_oldest\":null,\"held_ids\":[]");
        }
        buf_release(&ids);
        buf_printf(out, ",\"rss_bytes\":%" PRIu64 ",\"last_error\":", w->rss_bytes);
        if (w->error_time > 0) {
            buf_printf(out, "{\"time\":%.3f,\"error\":", w->error_time);
            json_str(out, w->error);
            buf_addc(out, '}');
        } else {
            buf_adds(out, "null");
        }
        buf_addc(out, '}');
    }
}

void status_render(struct buf *out, const struct fleet_view *v)
{
    struct buf reasons = BUF_INIT;
    int status = health_render(&reasons, v, NULL);
    buf_printf(out, "{\"version\":\"%s\",\"time\":%.3f,\"start_time\":%.3f,\"status\":\"%s\"", v->version,
               v->now, v->start_time, status == 200 ? "ok" : "degraded");
    buf_printf(out, ",\"reloads\":{\"ok\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"rolled_back\":%" PRIu64 "}",
               v->reloads_ok, v->reloads_failed, v->reloads_rolled_back);
    last_reload_render(out, v);
    buf_printf(out, ",\"master_rss_bytes\":%" PRIu64, v->master_rss_bytes);
    buf_printf(out, ",\"redis\":{\"up\":%s", v->redis_up ? "true" : "false");
    if (!v->redis_up && v->redis_error) {
        buf_adds(out, ",\"error\":");
        json_str(out, v->redis_error);
    }
    if (v->redis_durable >= 0)
        buf_printf(out, ",\"durable\":%s", v->redis_durable ? "true" : "false");
    if (v->durability && v->durability[0]) {
        buf_adds(out, ",\"durability\":");
        json_str(out, v->durability);
    }
    buf_adds(out, "},\"pools\":[");
    for (unsigned i = 0; i < v->npools; i++) {
        const struct pool_view *p = &v->pools[i];
        struct buf why = BUF_INIT;
        bool bad = pool_degraded(p, &why);
        buf_adds(out, i ? ",{\"name\":" : "{\"name\":");
        json_str(out, p->name);
        buf_adds(out, ",\"stream\":");
        json_str(out, p->stream ? p->stream : "");
        buf_adds(out, ",\"group\":");
        json_str(out, p->group ? p->group : "");
        buf_adds(out, ",\"handler\":");
        json_str(out, p->handler ? p->handler : "");
        buf_printf(out, ",\"status\":\"%s\",\"reason\":", bad ? "degraded" : "ok");
        json_str(out, why.p ? why.p : "");
        buf_release(&why);
        /* worker_counts: processes by state; workers: one object per slot, the workers' own
         * figures */
        buf_printf(out, ",\"worker_counts\":{\"running\":%u,\"starting\":%u,\"draining\":%u,\"expected\":%u,\"canary\":%u},"
                   "\"workers\":[",
                   p->workers_live - p->workers_starting, p->workers_starting, p->workers_draining,
                   p->workers_expected, p->workers_canary);
        workers_render(out, v, p->name);
        buf_printf(out,
                   "],\"restarts\":%" PRIu64 ",\"restarts_per_min\":%.2f,\"crash_loop\":%s"
                   ",\"inflight\":%u,\"circuit_open\":%s,\"rss_bytes\":%" PRIu64,
                   p->restarts, p->restarts_per_min, p->crash_loop ? "true" : "false",
                   p->inflight, p->circuit_open ? "true" : "false", p->rss_bytes);
        json_num_or_null(out, "circuit_open_since", p->circuit_open && p->circuit_since > 0,
                         p->circuit_since, false);
        /* a routed pool: messages handed over per route, as /metrics counts them */
        if (p->nroutes || p->route_default) {
            buf_adds(out, ",\"routes\":{");
            for (unsigned k = 0; k < p->nroutes + (p->route_default ? 1 : 0); k++) {
                bool dflt = k == p->nroutes;
                if (k)
                    buf_addc(out, ',');
                json_str(out, dflt ? "default" : p->route_type[k]);
                buf_printf(out, ":%" PRIu64, p->c[dflt ? SB_ROUTE_LAST : SB_ROUTE_FIRST + (int)k]);
            }
            buf_addc(out, '}');
        }
        buf_printf(out,
                   ",\"messages\":{\"read\":%" PRIu64 ",\"acked\":%" PRIu64 ",\"failed\":%" PRIu64
                   ",\"retried\":%" PRIu64 ",\"dead_lettered\":%" PRIu64 ",\"duplicate\":%" PRIu64
                   ",\"reclaimed\":%" PRIu64 ",\"vanished\":%" PRIu64 "}",
                   p->c[SB_READ], p->c[SB_ACKED], p->c[SB_FAILED], p->c[SB_RETRIED], p->c[SB_DEAD_LETTERED],
                   p->c[SB_DUPLICATE], p->c[SB_RECLAIMED], p->c[SB_VANISHED]);
        buf_printf(out, ",\"rate\":%.2f", p->rate);
        json_num_or_null(out, "stream_length", p->redis_known, (double)p->stream_length, true);
        json_num_or_null(out, "pending", p->redis_known, (double)p->pending, true);
        json_num_or_null(out, "lag", p->redis_known && p->lag >= 0, (double)p->lag, true);
        json_num_or_null(out, "oldest_pending_age", p->redis_known && p->oldest_pending_age >= 0,
                         p->oldest_pending_age, false);
        json_num_or_null(out, "dlq_length", p->redis_known, (double)p->dlq_length, true);
        json_num_or_null(out, "redis_polled", p->redis_known && p->redis_polled > 0, p->redis_polled, false);
        /* A pool of several streams (shards): each one's figures; the pool's above add them up. */
        if (p->nstreams) {
            buf_adds(out, ",\"streams\":[");
            for (unsigned k = 0; k < p->nstreams; k++) {
                const struct stream_view *sv = &p->streams[k];
                buf_adds(out, k ? ",{\"stream\":" : "{\"stream\":");
                json_str(out, sv->stream);
                json_num_or_null(out, "stream_length", p->redis_known, (double)sv->stream_length, true);
                json_num_or_null(out, "pending", p->redis_known, (double)sv->pending, true);
                json_num_or_null(out, "lag", p->redis_known && sv->lag >= 0, (double)sv->lag, true);
                json_num_or_null(out, "oldest_pending_age", p->redis_known && sv->oldest_pending_age >= 0,
                                 sv->oldest_pending_age, false);
                json_num_or_null(out, "dlq_length", p->redis_known, (double)sv->dlq_length, true);
                buf_addc(out, '}');
            }
            buf_addc(out, ']');
        }
        buf_adds(out, ",\"history\":[");
        for (unsigned k = 0; k < p->nhistory; k++)
            buf_printf(out, k ? ",%.2f" : "%.2f", (double)p->history[k]);
        buf_adds(out, "],\"latency\":{");
        quantile_series(out, "p50", p->p50, p->nhistory);
        buf_addc(out, ',');
        quantile_series(out, "p99", p->p99, p->nhistory);
        buf_adds(out, "},\"last_errors\":[");
        for (unsigned k = 0; k < p->nerrors; k++) {
            buf_printf(out, "%s{\"time\":%.3f,\"worker\":%d,\"error\":", k ? "," : "", p->errors[k].time,
                       p->errors[k].worker);
            json_str(out, p->errors[k].text);
            buf_addc(out, '}');
        }
        buf_adds(out, "]}");
    }
    buf_adds(out, "],\"destinations\":[");
    for (unsigned i = 0; i < v->ndests; i++) {
        const struct aimd_view *d = &v->dests[i];
        buf_adds(out, i ? ",{\"destination\":" : "{\"destination\":");
        json_str(out, d->key);
        buf_printf(out, ",\"limit\":%.3f,\"inflight\":%u,\"decreases\":%" PRIu64 ",\"held_off\":%s}",
                   d->limit, d->inflight, d->decreases, d->blocked ? "true" : "false");
    }
    buf_adds(out, "]}\n");
    buf_release(&reasons);
}
