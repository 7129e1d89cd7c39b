/* trim.h: safe trimming (`trim = acked`). Every poll_interval the master asks Redis, for each
 * stream of a pool that trims, how far each consumer group of that stream (every group, not
 * only ours) has come, and removes with XTRIM MINID only the entries that no group still
 * needs: below every group's oldest pending entry and at or below every group's
 * last-delivered-id. `retain` keeps the acknowledged history of that long as well.
 *
 * The decision is a pure function (trim_minid), the Redis part a small state machine run on
 * the monitor's non-blocking connection (supervisor/redismon.c), so the master never waits on
 * Redis. The trim itself is a script that checks the groups again, atomically, just before it
 * trims: a group created or moved back meanwhile makes it trim nothing this round. */
#ifndef SF_TRIM_H
#define SF_TRIM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/conf.h"

/* A stream entry id, ms-seq. */
struct trim_id {
    uint64_t ms, seq;
};

/* What one consumer group of the stream still needs, as XINFO GROUPS and XPENDING tell. */
struct trim_group {
    struct trim_id last_delivered;  /* XINFO GROUPS last-delivered-id (0-0: nothing read yet) */
    bool pending;                   /* it has entries delivered and not acknowledged */
    struct trim_id oldest_pending;  /* XPENDING's smallest id, when pending */
};

/* Parse "ms-seq" (both parts decimal, no sign). Returns 0, or -1 when s is not an id. */
int trim_id_parse(const char *s, struct trim_id *id);
/* Write id as "ms-seq" into buf (48 bytes are enough). */
void trim_id_format(struct trim_id id, char *buf, size_t len);
/* -1, 0 or 1 as a is below, equal to or above b. */
int trim_id_cmp(struct trim_id a, struct trim_id b);

/* The MINID for n groups of one stream: entries below it are needed by no group, and, when
 * keep_from_ms >= 0, are older than keep_from_ms (Unix ms; the retain bound). Each group
 * needs its oldest pending entry and everything after its last-delivered-id; the MINID is
 * the smallest of these, never beyond. Returns false when nothing may be trimmed (no group,
 * or nothing below the bound): a stream no group reads is not ours to trim. */
bool trim_minid(const struct trim_group *g, size_t n, long long keep_from_ms, struct trim_id *minid);

struct trim;
struct redis;

/* An empty trimmer; trim_set_pools() tells it what to trim. */
struct trim *trim_open(void);
/* Free t; call trim_abandon() first if its Redis client still holds its commands. */
void trim_free(struct trim *t);
/* Trim the streams of c's pools with trim = acked from the next trim_poll() on (c may be freed
 * after). What was trimmed so far stays counted, by pool name. */
void trim_set_pools(struct trim *t, const struct conf *c);
/* Start a round for every stream whose last round is over, on rc (which must stay open until
 * the round ends or trim_abandon()). Called every poll_interval while Redis is up. */
void trim_poll(struct trim *t, struct redis *rc);
/* rc is being freed without running the callbacks of its queued commands: forget the rounds
 * in flight (nothing was trimmed by them that Redis did not count). */
void trim_abandon(struct trim *t);
/* Entries trimmed from pool's streams so far (0 for a pool that never trimmed). */
uint64_t trim_total(const struct trim *t, const char *pool);

#endif
