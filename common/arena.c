/* arena.c: chunks of memory handed out front to back. */
#include "common/arena.h"
#include "common/log.h"

#include <stdlib.h>
#include <string.h>

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap;
    alignas(max_align_t) unsigned char data[];
};

void *arena_alloc_slow(struct arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n)
        fatal("arena: allocation of %zu bytes overflows", n);
    if (a->left < need) {
        /* Chunks double up to the size asked for, so a reply of many small elements takes a
         * logarithmic number of mallocs. What is left of the old head is not used again
         * before a reset. */
        size_t cap = a->head ? a->head->cap * 2 : ARENA_CHUNK;
        if (cap < need)
            cap = need;
        struct arena_chunk *c = xmalloc(sizeof *c + cap);
        c->cap = cap;
        c->next = a->head;
        a->head = c;
        a->chunks++;
        a->cur = c->data;
        a->left = cap;
    }
    void *p = arena_take(a, need);
    memset(p, 0, n);
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    /* Not zero-filled first: every byte is written. */
    size_t need = (n + 1 + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    char *p;
    if (n + 1 == 0 || need < n + 1 || a->left < need) {
        p = arena_alloc_slow(a, n + 1);
    } else {
        p = arena_take(a, need);
    }
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
        keep->next = NULL;
        a->cur = keep->data;
        a->left = keep->cap;
    } else {
        a->cur = NULL;
        a->left = 0;
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
    a->cur = NULL;
    a->left = 0;
    a->used = 0;
    a->chunks = 0;
}
