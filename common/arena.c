/* arena.c: chunks of memory handed out front to back. */
#include "common/arena.h"
#include "common/log.h"

#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, off;
    alignas(max_align_t) unsigned char data[];
};

#define ALIGN (alignof(max_align_t))

void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = (n + ALIGN - 1) & ~(ALIGN - 1);
    if (need < n)
        fatal("arena: allocation of %zu bytes overflows", n);
    struct arena_chunk *c = a->head;
    if (c == NULL || c->cap - c->off < need) {
        /* Chunks double up to the size asked for, so a reply of many small elements takes a
         * logarithmic number of mallocs. */
        size_t cap = c ? c->cap * 2 : ARENA_CHUNK;
        if (cap < need)
            cap = need;
        c = xmalloc(sizeof *c + cap);
        c->cap = cap;
        c->off = 0;
        c->next = a->head;
        a->head = c;
        a->chunks++;
    }
    void *p = c->data + c->off;
    c->off += need;
    a->used += need;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (n)
        memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void arena_reset(struct arena *a)
{
    /* Keep the largest chunk that is not too big, free the rest. Keeping the largest (not the
     * first, which is the smallest) is what lets a steady stream of replies of one size stop
     * allocating: the chunks double, so after a reset or two one chunk holds a whole reply.
     * Freeing and reallocating them each time cost a noop worker at batch 500 some 70 page
     * faults a batch (glibc hands chunks of 128 KiB and more out as fresh mmaps). */
    struct arena_chunk *keep = NULL;
    for (struct arena_chunk *c = a->head; c; c = c->next)
        if (c->cap <= ARENA_KEEP && (keep == NULL || c->cap > keep->cap))
            keep = c;
    for (struct arena_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        if (c != keep)
            free(c);
    }
    a->head = keep;
    a->chunks = keep ? 1 : 0;
    if (keep) {
        keep->off = 0;
        keep->next = NULL;
    }
    a->used = 0;
}

void arena_release(struct arena *a)
{
    for (struct arena_chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        free(c);
    }
    a->head = NULL;
    a->used = 0;
    a->chunks = 0;
}
