/* trim.c: safe trimming, see trim.h. A round for one stream is three steps on the monitor's
 * connection: XINFO GROUPS (every group of the stream and its last-delivered-id), XPENDING
 * for each group with entries pending (its oldest one), then, when trim_minid() finds
 * something no group needs, the guard script below with that MINID. Each step's callback
 * queues the next; a connection that drops ends the round with an error reply and the next
 * poll starts a fresh one.
 *
 * Exact MINID, not `~`: an approximate trim would also be safe (it can only keep more, whole
 * macro nodes of up to 100 entries), but the exact one removes what we decided and no less,
 * so the stream's length is what the groups need, and at poll_interval its cost is small.
 *
 * Neither lag nor entries-read is used: Redis 7.0 reports them wrongly after XDEL and XTRIM.
 * The PEL and last-delivered-id are what XREADGROUP itself goes by. */
#include "supervisor/trim.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/redis.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TRIM_TIMEOUT_MS 5000

/* The guard: KEYS[1] the stream, ARGV[1] the MINID, ARGV[2] the id just below it. Atomically,
 * every group now on the stream must still need nothing below the MINID (oldest pending at or
 * above it, last-delivered-id at or above the id just below it), or nothing is trimmed and -1
 * returned: a group created at an old id, moved back by XGROUP SETID, or given an old entry by
 * XCLAIM FORCE since we looked. Ids are compared as decimal strings (Lua numbers are doubles:
 * a 64-bit sequence would lose precision). Returns what XTRIM removed. */
static const char guard_script[] =
    "local function below(a, b)\n"
    "  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')\n"
    "  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')\n"
    "  if #a1 ~= #b1 then return #a1 < #b1 end\n"
    "  if a1 ~= b1 then return a1 < b1 end\n"
    "  if #a2 ~= #b2 then return #a2 < #b2 end\n"
    "  return a2 < b2\n"
    "end\n"
    "local groups = redis.call('XINFO', 'GROUPS', KEYS[1])\n"
    "if #groups == 0 then return -1 end\n"
    "for _, g in ipairs(groups) do\n"
    "  local name, last\n"
    "  for i = 1, #g, 2 do\n"
    "    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end\n"
    "  end\n"
    "  if not name or not last or below(last, ARGV[2]) then return -1 end\n"
    "  local p = redis.call('XPENDING', KEYS[1], name)\n"
    "  if p[1] > 0 and below(p[2], ARGV[1]) then return -1 end\n"
    "end\n"
    "return redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])\n";

/* ---- the decision ---- */

int trim_id_parse(const char *s, struct trim_id *id)
{
    char *end;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    unsigned long long ms = strtoull(s, &end, 10);
    if (*end != '-' || end[1] < '0' || end[1] > '9')
        return -1;
    unsigned long long seq = strtoull(end + 1, &end, 10);
    if (*end != '\0')
        return -1;
    /* strtoull saturates at ULLONG_MAX on overflow: an id Redis cannot have. */
    if (ms == ~0ULL || seq == ~0ULL)
        return -1;
    id->ms = ms;
    id->seq = seq;
    return 0;
}

void trim_id_format(struct trim_id id, char *buf, size_t len)
{
    snprintf(buf, len, "%" PRIu64 "-%" PRIu64, id.ms, id.seq);
}

int trim_id_cmp(struct trim_id a, struct trim_id b)
{
    if (a.ms != b.ms)
        return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq)
        return a.seq < b.seq ? -1 : 1;
    return 0;
}

/* The first id after id: what a group whose last-delivered-id is id reads next, at the earliest. */
static struct trim_id succ(struct trim_id id)
{
    if (id.seq != UINT64_MAX)
        return (struct trim_id){ id.ms, id.seq + 1 };
    return (struct trim_id){ id.ms + 1, 0 };
}

static struct trim_id pred(struct trim_id id)
{
    if (id.seq != 0)
        return (struct trim_id){ id.ms, id.seq - 1 };
    return (struct trim_id){ id.ms - 1, UINT64_MAX };
}

bool trim_minid(const struct trim_group *g, size_t n, long long keep_from_ms, struct trim_id *minid)
{
    if (n == 0)
        return false;
    /* A group needs its oldest pending entry (a retry, a reclaim) and every entry after its
     * last-delivered-id (the next reads). The entries in between were acknowledged. The first
     * entry after last-delivered-id is trimmed the same as the id right after it: no entry
     * lies between them, and a new one can only come after the stream's top. */
    struct trim_id low = { UINT64_MAX, UINT64_MAX };
    for (size_t i = 0; i < n; i++) {
        struct trim_id need = succ(g[i].last_delivered);
        if (g[i].pending && trim_id_cmp(g[i].oldest_pending, need) < 0)
            need = g[i].oldest_pending;
        if (trim_id_cmp(need, low) < 0)
            low = need;
    }
    if (keep_from_ms >= 0) {
        struct trim_id keep = { (uint64_t)keep_from_ms, 0 };
        if (trim_id_cmp(keep, low) < 0)
            low = keep;
    }
    /* No entry has the id 0-0: below 0-1 there is nothing. */
    if (trim_id_cmp(low, (struct trim_id){ 0, 1 }) <= 0)
        return false;
    *minid = low;
    return true;
}

/* ---- the rounds ---- */

struct trim_total {
    char *pool;
    uint64_t n;
};

/* One stream of one pool. Heap-allocated: its callbacks hold it. A job replaced by
 * trim_set_pools() while its round runs is kept (orphan) until the round ends. */
struct trim_job {
    struct trim *t;
    size_t total;                   /* index into t->totals */
    char *stream, *group;
    long retain_ms;                 /* 0: none */
    bool busy;                      /* a round is in flight */
    bool orphan;                    /* replaced: free it when the round ends */
    struct redis *rc;               /* of the round in flight */
    struct trim_group *groups;
    size_t ngroups, cap;
    size_t nwait;                   /* XPENDING replies still due */
    size_t next_reply;              /* the group the next XPENDING reply is for */
    bool failed;
    char error[200];                /* the last error logged, to log each one once */
};

struct trim {
    struct trim_job **jobs, **orphans;
    size_t njobs, norphans;
    struct trim_total *totals;
    size_t ntotals;
};

struct trim *trim_open(void)
{
    return xcalloc(1, sizeof(struct trim));
}

static void job_free(struct trim_job *j)
{
    free(j->stream);
    free(j->group);
    free(j->groups);
    free(j);
}

static void drop_orphan(struct trim *t, struct trim_job *j)
{
    for (size_t i = 0; i < t->norphans; i++) {
        if (t->orphans[i] == j) {
            t->orphans[i] = t->orphans[--t->norphans];
            break;
        }
    }
    job_free(j);
}

void trim_abandon(struct trim *t)
{
    for (size_t i = 0; i < t->njobs; i++)
        t->jobs[i]->busy = false;
    while (t->norphans)
        job_free(t->orphans[--t->norphans]);
}

void trim_free(struct trim *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < t->njobs; i++)
        job_free(t->jobs[i]);
    for (size_t i = 0; i < t->norphans; i++)
        job_free(t->orphans[i]);
    for (size_t i = 0; i < t->ntotals; i++)
        free(t->totals[i].pool);
    free(t->jobs);
    free(t->orphans);
    free(t->totals);
    free(t);
}

static size_t total_index(struct trim *t, const char *pool)
{
    for (size_t i = 0; i < t->ntotals; i++)
        if (strcmp(t->totals[i].pool, pool) == 0)
            return i;
    t->totals = xrealloc(t->totals, (t->ntotals + 1) * sizeof *t->totals);
    t->totals[t->ntotals] = (struct trim_total){ xstrdup(pool), 0 };
    return t->ntotals++;
}

uint64_t trim_total(const struct trim *t, const char *pool)
{
    for (size_t i = 0; t && i < t->ntotals; i++)
        if (strcmp(t->totals[i].pool, pool) == 0)
            return t->totals[i].n;
    return 0;
}

/* Whether name is the dead-letter stream of a pool of c: never trimmed here, even when a pool
 * reads it (the dead letters are kept until someone replays or deletes them). */
static bool is_dlq(const struct conf *c, const char *name)
{
    for (size_t i = 0; i < c->npools; i++)
        if (c->pools[i].dlq && strcmp(c->pools[i].dlq, name) == 0)
            return true;
    return false;
}

void trim_set_pools(struct trim *t, const struct conf *c)
{
    for (size_t i = 0; i < t->njobs; i++) {
        struct trim_job *j = t->jobs[i];
        if (j->busy) {
            j->orphan = true;
            t->orphans = xrealloc(t->orphans, (t->norphans + 1) * sizeof *t->orphans);
            t->orphans[t->norphans++] = j;
        } else {
            job_free(j);
        }
    }
    t->njobs = 0;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool_conf *p = &c->pools[i];
        if (!p->trim_acked)
            continue;
        if (is_dlq(c, p->stream)) {
            log_warnx("pool %s: stream %s is a dead-letter stream: trim = acked leaves it alone", p->name,
                      p->stream);
            continue;
        }
        /* Several pools may read one stream: the longest retain among them holds for it. */
        long retain = p->retain_ms;
        for (size_t k = 0; k < c->npools; k++)
            if (strcmp(c->pools[k].stream, p->stream) == 0 && c->pools[k].retain_ms > retain)
                retain = c->pools[k].retain_ms;
        struct trim_job *j = xcalloc(1, sizeof *j);
        j->t = t;
        j->total = total_index(t, p->name);
        j->stream = xstrdup(p->stream);
        j->group = xstrdup(p->group);
        j->retain_ms = retain;
        t->jobs = xrealloc(t->jobs, (t->njobs + 1) * sizeof *t->jobs);
        t->jobs[t->njobs++] = j;
    }
}

/* Log an error of j's once, until a round succeeds or the error changes. */
static void job_error(struct trim_job *j, const char *what, const char *why)
{
    char msg[sizeof j->error];
    snprintf(msg, sizeof msg, "%s: %s", what, why);
    if (strcmp(msg, j->error) != 0)
        log_warnx("trim %s: %s", j->stream, msg);
    snprintf(j->error, sizeof j->error, "%s", msg);
}

static void job_end(struct trim_job *j)
{
    j->busy = false;
    if (j->orphan)
        drop_orphan(j->t, j);
}

static void on_trimmed(void *arg, const struct redis_reply *v)
{
    struct trim_job *j = arg;
    if (v->type == REDIS_T_INTEGER && v->integer >= 0) {
        j->t->totals[j->total].n += (uint64_t)v->integer;
        j->error[0] = '\0';
    } else if (v->type == REDIS_T_INTEGER) {
        log_debug("trim %s: a group moved back or appeared since the figures were read: trimming nothing",
                  j->stream);
    } else if (v->type != REDIS_T_ERROR || (v->err != REDIS_E_IO && v->err != REDIS_E_TIMEOUT)) {
        /* (a lost connection is the monitor's to report) */
        job_error(j, "XTRIM", v->type == REDIS_T_ERROR ? v->str : "unexpected reply");
    }
    job_end(j);
}

/* Every group's figures are in: trim what none of them needs. */
static void decide(struct trim_job *j)
{
    long long keep_from = -1;
    if (j->retain_ms > 0) {
        keep_from = clock_wall_ms() - j->retain_ms;
        if (keep_from < 0)
            keep_from = 0;
    }
    struct trim_id minid;
    if (j->failed || !trim_minid(j->groups, j->ngroups, keep_from, &minid)) {
        job_end(j);
        return;
    }
    char id[48], below[48];
    trim_id_format(minid, id, sizeof id);
    trim_id_format(pred(minid), below, sizeof below);
    if (redis_commandv(j->rc, on_trimmed, j, TRIM_TIMEOUT_MS, "EVAL", guard_script, "1", j->stream, id, below,
                       NULL) == -1)
        job_end(j);
}

static void on_pending(void *arg, const struct redis_reply *v)
{
    struct trim_job *j = arg;
    while (j->next_reply < j->ngroups && !j->groups[j->next_reply].pending)
        j->next_reply++;
    if (j->next_reply < j->ngroups) {
        struct trim_group *g = &j->groups[j->next_reply++];
        /* XPENDING summary: [count, smallest id, greatest id, consumers]. A count of 0 now
         * means all was acknowledged since: the last-delivered-id bound still holds. */
        if (v->type == REDIS_T_ARRAY && v->elements >= 2 && v->element[0]->type == REDIS_T_INTEGER) {
            if (v->element[0]->integer == 0)
                g->pending = false;
            else if (v->element[1]->type != REDIS_T_STRING || trim_id_parse(v->element[1]->str, &g->oldest_pending) == -1)
                j->failed = true;
        } else {
            job_error(j, "XPENDING", v->type == REDIS_T_ERROR ? v->str : "unexpected reply");
            j->failed = true;
        }
    }
    if (--j->nwait == 0)
        decide(j);
}

/* XINFO GROUPS: every group of the stream. Without our own group (not created yet, or lost
 * with a Redis that restarted from an old snapshot: the workers re-create it where it was) we
 * cannot tell what it needs, so nothing is trimmed. */
static void on_groups(void *arg, const struct redis_reply *v)
{
    struct trim_job *j = arg;
    if (v->type != REDIS_T_ARRAY) {
        /* A stream that does not exist yet is no error. */
        if (v->type == REDIS_T_ERROR && strstr(v->str, "no such key") == NULL)
            job_error(j, "XINFO GROUPS", v->str);
        job_end(j);
        return;
    }
    bool ours = false;
    j->ngroups = 0;
    for (size_t i = 0; i < v->elements; i++) {
        const struct redis_reply *g = v->element[i];
        const struct redis_reply *name = redis_reply_map_get(g, "name");
        const struct redis_reply *last = redis_reply_map_get(g, "last-delivered-id");
        const struct redis_reply *pending = redis_reply_map_get(g, "pending");
        if (j->ngroups == j->cap) {
            j->cap = j->cap ? j->cap * 2 : 4;
            j->groups = xrealloc(j->groups, j->cap * sizeof *j->groups);
        }
        struct trim_group *tg = &j->groups[j->ngroups];
        memset(tg, 0, sizeof *tg);
        if (name == NULL || name->type != REDIS_T_STRING || last == NULL || last->type != REDIS_T_STRING ||
            trim_id_parse(last->str, &tg->last_delivered) == -1 || pending == NULL ||
            pending->type != REDIS_T_INTEGER) {
            job_error(j, "XINFO GROUPS", "a group without a name, last-delivered-id or pending count");
            job_end(j);
            return;
        }
        tg->pending = pending->integer > 0;
        ours = ours || strcmp(name->str, j->group) == 0;
        j->ngroups++;
    }
    if (!ours) {
        job_end(j);
        return;
    }
    j->nwait = 0;
    j->next_reply = 0;
    j->failed = false;
    for (size_t i = 0; i < j->ngroups && !j->failed; i++) {
        if (!j->groups[i].pending)
            continue;
        const struct redis_reply *name = redis_reply_map_get(v->element[i], "name");
        if (redis_commandv(j->rc, on_pending, j, TRIM_TIMEOUT_MS, "XPENDING", j->stream, name->str, NULL) == 0)
            j->nwait++;
        else
            j->failed = true;       /* the connection is gone: the replies due end the round */
    }
    if (j->nwait == 0)
        decide(j);
}

void trim_poll(struct trim *t, struct redis *rc)
{
    for (size_t i = 0; i < t->njobs; i++) {
        struct trim_job *j = t->jobs[i];
        if (j->busy)
            continue;
        j->rc = rc;
        if (redis_commandv(rc, on_groups, j, TRIM_TIMEOUT_MS, "XINFO", "GROUPS", j->stream, NULL) == 0)
            j->busy = true;
    }
}
