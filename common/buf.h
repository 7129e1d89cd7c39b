/* buf.h: a growable byte buffer (git's strbuf, smaller). The buffer owns its memory;
 * buf_release() frees it and leaves an empty buffer that can be used again. The contents are
 * always NUL-terminated, so b->p can be passed where a C string is expected. */
#ifndef SF_BUF_H
#define SF_BUF_H

#include <stdbool.h>
#include <stddef.h>

struct buf {
    char *p;
    size_t len;
    size_t cap;
};

#define BUF_INIT { NULL, 0, 0 }

void buf_release(struct buf *b);
void buf_reset(struct buf *b);                       /* len = 0, keeps the memory */
void buf_grow(struct buf *b, size_t extra);          /* room for extra more bytes */
void buf_add(struct buf *b, const void *data, size_t n);
void buf_adds(struct buf *b, const char *s);
void buf_addc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append s[0..n) as the inside of a JSON string (quotes not included): escapes ", \ and
 * control characters, and bytes that are not valid UTF-8 as \u00XX. */
void buf_add_json_str(struct buf *b, const char *s, size_t n);
/* Whether s[0..n) is valid UTF-8 (no overlong forms, no surrogates; NUL bytes allowed). */
bool buf_utf8_valid(const char *s, size_t n);

#endif
