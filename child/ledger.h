/* ledger.h: what a worker holds, one record per message, keyed by its entry id.
 *
 * A message the worker took from Redis lives here from the moment it is handed to the
 * handler until Redis has been told its end: in the handler, then ack due (with its
 * done-marker first when dedupe is on), or retry due at a time, or dead-letter due at a time.
 * The table is hashed (open addressing, linear probing, tombstones for deletions), so a
 * lookup costs the same with ten records or a hundred thousand; the next due time of a state
 * comes from a min-heap per state, so the loop never scans the table to learn when to wake.
 * Pure: no I/O, no clock (times are the caller's). */
#ifndef SF_LEDGER_H
#define SF_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "child/msg.h"

#define LEDGER_ID_MAX 48        /* an entry id "ms-seq" and its NUL (as STREAM_ID_MAX) */
#define LEDGER_REASON_MAX 32

enum ledger_state {
    LEDGER_IN_HANDLER,          /* handed to the handler: no outcome yet */
    LEDGER_MARKER_DUE,          /* succeeded: its done-marker is written before its XACK */
    LEDGER_ACK_DUE,             /* succeeded: acknowledged with the next request */
    LEDGER_RETRY_DUE,           /* failed for now: stays pending, claimed again at due_ms */
    LEDGER_DEAD_DUE,            /* failed for good: moved to the dead-letter stream at due_ms */
    LEDGER_NSTATES
};

/* One message. Fields the caller does not use in a state keep their zero value. */
struct ledger_rec {
    char id[LEDGER_ID_MAX];     /* the key (read only: change it and the record is lost) */
    enum ledger_state state;    /* read only: change it with ledger_set_state() */
    long long due_ms;           /* RETRY_DUE, DEAD_DUE: read only, ledger_schedule() */
    long long attempt;          /* IN_HANDLER: this delivery's number; RETRY_DUE: the attempt
                                 * that failed; DEAD_DUE: the attempts it had */
    bool outage;                /* RETRY_DUE: failed because the endpoint was down, the
                                 * attempt does not count */
    bool adopt;                 /* to be put back into the pending list of a re-created group */
    char reason[LEDGER_REASON_MAX]; /* DEAD_DUE: "max_attempts", "http_422", ... */
    char *error;                /* DEAD_DUE: the last error (owned; ledger_set_error()) */
    struct str marker;          /* its done-marker key (owned, binary; {NULL, 0}: none) */
    long long held_ms;          /* since when the worker holds the entry (the caller's clock,
                                 * 0: not stamped yet); kept when ledger_add() restarts the
                                 * record, as the worker held the entry all along */
    uint32_t seq;               /* the ledger's own: which heap entry is current */
};

struct ledger_heap {
    struct ledger_due *v;
    size_t n, cap;
};

struct ledger {
    struct ledger_slot *slots;  /* cap slots, cap a power of two */
    size_t cap;
    size_t used;                /* live records */
    size_t tombs;               /* deleted slots that still lengthen probe runs */
    size_t count[LEDGER_NSTATES];
    struct ledger_heap due[LEDGER_NSTATES]; /* pending due times, lazily pruned */
    uint32_t seq;
};

/* A zeroed struct ledger is an empty ledger; ledger_init() makes one. */
void ledger_init(struct ledger *l);
/* Free every record (and its owned error and marker) and the table. */
void ledger_release(struct ledger *l);

/* The record of entry id, or NULL. Pointers into the ledger stay valid until the next
 * ledger_add() (which may move every record); ledger_del() moves none but the one deleted. */
struct ledger_rec *ledger_get(struct ledger *l, const char *id);
/* The record of entry id in state s, made afresh: an existing record of the same id is
 * released and restarted (a message has one life in a worker at a time). id longer than
 * LEDGER_ID_MAX - 1 bytes is cut (entry ids never are). */
struct ledger_rec *ledger_add(struct ledger *l, const char *id, enum ledger_state s);
/* Remove the record of entry id, freeing what it owns. Returns 0, or -1 when there is none. */
int ledger_del(struct ledger *l, const char *id);
/* Remove record r (from ledger_get(), ledger_add() or a walk), freeing what it owns: one
 * lookup fewer when the caller holds the record already. */
void ledger_drop(struct ledger *l, struct ledger_rec *r);

/* Move r to state s (keeping its other fields). */
void ledger_set_state(struct ledger *l, struct ledger_rec *r, enum ledger_state s);
/* Move r to state s, due at due_ms: the time ledger_first_due() reports it. */
void ledger_schedule(struct ledger *l, struct ledger_rec *r, enum ledger_state s, long long due_ms);
/* Replace r's error text with a copy of text (NULL: none). */
void ledger_set_error(struct ledger_rec *r, const char *text);

/* Records in state s. */
size_t ledger_count(const struct ledger *l, enum ledger_state s);
/* The earliest due time of the records scheduled in state s, or -1 when none is. */
long long ledger_next_due(struct ledger *l, enum ledger_state s);
/* A record of state s due at or before now (the earliest), or NULL. The caller moves it on
 * (another state or due time, or ledger_del()) before asking again, or gets it again. */
struct ledger_rec *ledger_first_due(struct ledger *l, enum ledger_state s, long long now);

/* Walk every record: start with *pos = 0; NULL at the end. Records may be deleted (and moved
 * to another state) during the walk, none added. */
struct ledger_rec *ledger_next(struct ledger *l, size_t *pos);

#endif
