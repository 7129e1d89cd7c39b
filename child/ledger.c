/* ledger.c: the worker's table of messages (see ledger.h).
 *
 * Open addressing with linear probing over a power-of-two table: a record lives in the slot
 * its id's hash names or in the first free one after it. A deletion leaves a tombstone, so
 * that the records placed past it are still found; tombstones are swept out when the table
 * is rebuilt, which happens when live records and tombstones fill three quarters of it (to
 * twice the size when the live records alone fill half).
 *
 * Due times sit in one binary min-heap per state, pushed on each ledger_schedule() and never
 * updated in place: an entry whose record is gone, in another state or scheduled again since
 * (its seq differs) is stale, and is dropped when it reaches the top. The heap is rebuilt from
 * the table when stale entries outnumber live ones by far, so it stays bounded. */
#include "child/ledger.h"
#include "common/log.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_MIN_CAP 64

enum slot_use { SLOT_FREE, SLOT_USED, SLOT_TOMB };

struct ledger_slot {
    uint64_t hash;
    enum slot_use use;
    struct ledger_rec rec;
};

struct ledger_due {
    long long due_ms;
    uint32_t seq;
    char id[LEDGER_ID_MAX];
};

/* FNV-1a: entry ids are short decimal text, and this spreads them well enough. */
static uint64_t hash_id(const char *id)
{
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++) {
        h ^= *p;
        h *= 1099511628211ULL;
    }
    /* Sequential ids differ in their last digits: mix the high bits down for the mask. */
    h ^= h >> 29;
    return h;
}

static void rec_release(struct ledger_rec *r)
{
    free(r->error);
    free((char *)r->marker.p);
}

void ledger_init(struct ledger *l)
{
    memset(l, 0, sizeof *l);
}

void ledger_release(struct ledger *l)
{
    for (size_t i = 0; i < l->cap; i++)
        if (l->slots[i].use == SLOT_USED)
            rec_release(&l->slots[i].rec);
    free(l->slots);
    for (int s = 0; s < LEDGER_NSTATES; s++)
        free(l->due[s].v);
    memset(l, 0, sizeof *l);
}

/* The slot of id, or of where it would go (the first tombstone on its run, else the free slot
 * that ends it). *found: it is there. The table has at least one free slot. */
static struct ledger_slot *find(const struct ledger *l, const char *id, uint64_t h, bool *found)
{
    size_t mask = l->cap - 1;
    struct ledger_slot *tomb = NULL;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        struct ledger_slot *s = &l->slots[i];
        if (s->use == SLOT_FREE) {
            *found = false;
            return tomb ? tomb : s;
        }
        if (s->use == SLOT_TOMB) {
            if (tomb == NULL)
                tomb = s;
        } else if (s->hash == h && strcmp(s->rec.id, id) == 0) {
            *found = true;
            return s;
        }
    }
}

/* Rebuild the table with room for cap slots, leaving the tombstones behind. */
static void rehash(struct ledger *l, size_t cap)
{
    struct ledger_slot *old = l->slots;
    size_t oldcap = l->cap;
    l->slots = xcalloc(cap, sizeof *l->slots);
    l->cap = cap;
    l->tombs = 0;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].use != SLOT_USED)
            continue;
        bool found;
        struct ledger_slot *s = find(l, old[i].rec.id, old[i].hash, &found);
        *s = old[i];
    }
    free(old);
}

struct ledger_rec *ledger_get(struct ledger *l, const char *id)
{
    if (l->used == 0)
        return NULL;
    bool found;
    struct ledger_slot *s = find(l, id, hash_id(id), &found);
    return found ? &s->rec : NULL;
}

struct ledger_rec *ledger_add(struct ledger *l, const char *id, enum ledger_state st)
{
    if ((l->used + l->tombs + 1) * 4 > l->cap * 3) {
        size_t cap = l->cap ? l->cap : LEDGER_MIN_CAP;
        while ((l->used + 1) * 2 > cap)
            cap *= 2;
        rehash(l, cap);
    }
    char key[LEDGER_ID_MAX];
    size_t len = strnlen(id, sizeof key - 1);
    memcpy(key, id, len);
    key[len] = '\0';
    uint64_t h = hash_id(key);
    bool found;
    struct ledger_slot *s = find(l, key, h, &found);
    long long held_ms = 0;
    if (found) {
        held_ms = s->rec.held_ms;
        l->count[s->rec.state]--;
        rec_release(&s->rec);
    } else {
        if (s->use == SLOT_TOMB)
            l->tombs--;
        l->used++;
    }
    s->use = SLOT_USED;
    s->hash = h;
    memset(&s->rec, 0, sizeof s->rec);
    memcpy(s->rec.id, key, len + 1);
    s->rec.state = st;
    s->rec.held_ms = held_ms;
    s->rec.seq = ++l->seq;
    l->count[st]++;
    return &s->rec;
}

/* Empty slot s: free when it ends no probe run, else a tombstone. */
static void clear_slot(struct ledger *l, struct ledger_slot *s)
{
    l->count[s->rec.state]--;
    rec_release(&s->rec);
    s->rec.id[0] = '\0';
    l->used--;
    /* A slot followed by a free one ends no run: it can be free itself, and so can the
     * tombstones just before it (in a queue of messages added and deleted in turn, most
     * tombstones go this way, and probe runs stay short). */
    size_t mask = l->cap - 1, i = (size_t)(s - l->slots);
    if (l->slots[(i + 1) & mask].use != SLOT_FREE) {
        s->use = SLOT_TOMB;
        l->tombs++;
        return;
    }
    s->use = SLOT_FREE;
    for (i = (i - 1) & mask; l->slots[i].use == SLOT_TOMB; i = (i - 1) & mask) {
        l->slots[i].use = SLOT_FREE;
        l->tombs--;
    }
}

int ledger_del(struct ledger *l, const char *id)
{
    if (l->used == 0)
        return -1;
    bool found;
    struct ledger_slot *s = find(l, id, hash_id(id), &found);
    if (!found)
        return -1;
    clear_slot(l, s);
    return 0;
}

void ledger_drop(struct ledger *l, struct ledger_rec *r)
{
    clear_slot(l, (struct ledger_slot *)((char *)r - offsetof(struct ledger_slot, rec)));
}

void ledger_set_state(struct ledger *l, struct ledger_rec *r, enum ledger_state s)
{
    l->count[r->state]--;
    l->count[s]++;
    r->state = s;
    /* Any heap entry of its former schedule is stale now. */
    r->seq = ++l->seq;
}

void ledger_set_error(struct ledger_rec *r, const char *text)
{
    free(r->error);
    r->error = text ? xstrdup(text) : NULL;
}

size_t ledger_count(const struct ledger *l, enum ledger_state s)
{
    return l->count[s];
}

/* ---- due times --------------------------------------------------------------------------- */

static void heap_push(struct ledger_heap *hp, const struct ledger_due *d)
{
    if (hp->n == hp->cap) {
        hp->cap = hp->cap ? hp->cap * 2 : 64;
        hp->v = xrealloc(hp->v, hp->cap * sizeof *hp->v);
    }
    size_t i = hp->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (hp->v[parent].due_ms <= d->due_ms)
            break;
        hp->v[i] = hp->v[parent];
        i = parent;
    }
    hp->v[i] = *d;
}

static void heap_pop(struct ledger_heap *hp)
{
    struct ledger_due last = hp->v[--hp->n];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= hp->n)
            break;
        if (child + 1 < hp->n && hp->v[child + 1].due_ms < hp->v[child].due_ms)
            child++;
        if (last.due_ms <= hp->v[child].due_ms)
            break;
        hp->v[i] = hp->v[child];
        i = child;
    }
    if (hp->n > 0)
        hp->v[i] = last;
}

/* Whether heap entry d still stands for a record scheduled in state s. */
static struct ledger_rec *current(struct ledger *l, const struct ledger_due *d, enum ledger_state s)
{
    struct ledger_rec *r = ledger_get(l, d->id);
    return r && r->state == s && r->seq == d->seq ? r : NULL;
}

/* Rebuild the heap of state s from the table: only current entries are left. */
static void heap_rebuild(struct ledger *l, enum ledger_state s)
{
    struct ledger_heap *hp = &l->due[s];
    hp->n = 0;
    for (size_t i = 0; i < l->cap; i++) {
        const struct ledger_rec *r = &l->slots[i].rec;
        if (l->slots[i].use != SLOT_USED || r->state != s)
            continue;
        struct ledger_due d = { .due_ms = r->due_ms, .seq = r->seq };
        memcpy(d.id, r->id, sizeof d.id);
        heap_push(hp, &d);
    }
}

void ledger_schedule(struct ledger *l, struct ledger_rec *r, enum ledger_state s, long long due_ms)
{
    ledger_set_state(l, r, s);
    r->due_ms = due_ms;
    struct ledger_heap *hp = &l->due[s];
    /* Records rescheduled again and again leave stale entries behind: sweep them before they
     * outgrow the records by far. The rebuild finds r itself. */
    if (hp->n >= 1024 && hp->n > 4 * l->count[s]) {
        heap_rebuild(l, s);
        return;
    }
    struct ledger_due d = { .due_ms = due_ms, .seq = r->seq };
    memcpy(d.id, r->id, sizeof d.id);
    heap_push(hp, &d);
}

/* The current record at the top of state s's heap, dropping stale entries; NULL when none. */
static struct ledger_rec *top(struct ledger *l, enum ledger_state s)
{
    struct ledger_heap *hp = &l->due[s];
    while (hp->n > 0) {
        struct ledger_rec *r = current(l, &hp->v[0], s);
        if (r)
            return r;
        heap_pop(hp);
    }
    return NULL;
}

long long ledger_next_due(struct ledger *l, enum ledger_state s)
{
    struct ledger_rec *r = top(l, s);
    return r ? r->due_ms : -1;
}

struct ledger_rec *ledger_first_due(struct ledger *l, enum ledger_state s, long long now)
{
    struct ledger_rec *r = top(l, s);
    return r && r->due_ms <= now ? r : NULL;
}

struct ledger_rec *ledger_next(struct ledger *l, size_t *pos)
{
    while (*pos < l->cap) {
        struct ledger_slot *s = &l->slots[(*pos)++];
        if (s->use == SLOT_USED)
            return &s->rec;
    }
    return NULL;
}
