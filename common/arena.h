/* arena.h: a bump allocator released in one step. The Redis client builds each reply in one, so
 * a reply of N elements costs no malloc/free per element: arena_reset() after the reply has
 * been handed on gives everything back at once. Not thread-safe; pointers it returned are
 * invalid after arena_reset() or arena_release(). A zero-filled struct arena is an empty one. */
#ifndef SF_ARENA_H
#define SF_ARENA_H

#include <stdalign.h>
#include <stddef.h>
#include <string.h>

struct arena_chunk;

struct arena {
    struct arena_chunk *head;   /* the chunk being filled; older ones follow */
    unsigned char *cur;         /* the head chunk's free space: cur[0..left) */
    size_t left;
    size_t used;                /* bytes handed out since the last reset (with alignment) */
    size_t chunks;              /* chunks held, for tests */
};

#define ARENA_INIT { NULL, NULL, 0, 0, 0 }
#define ARENA_ALIGN (alignof(max_align_t))

/* For arena_alloc() only: n bytes from a new chunk. */
void *arena_alloc_slow(struct arena *a, size_t n);

/* For the arena's own functions: need bytes (aligned, at most a->left) off the current chunk. */
static inline void *arena_take(struct arena *a, size_t need)
{
    void *p = a->cur;
    a->cur += need;
    a->left -= need;
    a->used += need;
    return p;
}

/* n bytes aligned for any object, zero-filled. Never NULL (out of memory is fatal). Inline: a
 * reply's every element comes through here (some 15 a stream entry), and with a constant n
 * the compiler writes the zeroes itself. */
static inline void *arena_alloc(struct arena *a, size_t n)
{
    size_t need = (n + ARENA_ALIGN - 1) & ~(size_t)(ARENA_ALIGN - 1);
    if (need < n || a->left < need)
        return arena_alloc_slow(a, n);
    void *p = arena_take(a, need);
    memset(p, 0, n);
    return p;
}

/* A NUL-terminated copy of s[0..n) in the arena. */
char *arena_strndup(struct arena *a, const char *s, size_t n);
/* Forget every allocation. The largest chunk no bigger than ARENA_KEEP is kept, so a steady
 * stream of replies up to that size soon allocates nothing (a worker at batch 500 holds some
 * 512 KiB this way); a bigger reply's memory goes back at once. */
void arena_reset(struct arena *a);
/* Free everything; the arena can be used again. */
void arena_release(struct arena *a);

#define ARENA_CHUNK 4096
#define ARENA_KEEP (1024 * 1024)

#endif
