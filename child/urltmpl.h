/* urltmpl.h: filling a pool's URL template from a message. Pure: no I/O, no libcurl.
 *
 * A field must never choose where a message goes: every value is percent-encoded before it
 * enters the URL, so it cannot add a '/', '?', '#', '@' or ':' of its own, and the config
 * (conf.c) only lets placeholders stand after the authority. */
#ifndef SF_URLTMPL_H
#define SF_URLTMPL_H

#include <stddef.h>

#include "child/msg.h"
#include "common/buf.h"

/* Append the percent-encoding of s[0..n) to out: RFC 3986's unreserved characters
 * (A-Z a-z 0-9 - . _ ~) as they are, every other byte as %XX (upper-case hex). */
void urltmpl_escape(struct buf *out, const char *s, size_t n);

/* Fill tmpl into out (which is reset first). {stream} is m->stream, {id} the entry id, and any
 * other {name} the value of m's field name (the first, if repeated), or of a path into a JSON
 * field such as {meta.type} (child/fields.h); each is percent-encoded,
 * and a value made only of dots ("." or "..") has its dots encoded too, so that it cannot
 * become a dot-segment that libcurl would resolve. Text outside braces is copied as it is.
 * Returns 0, or -1 when m lacks a field (or path) the template names: *missing then points at the name
 * inside tmpl and *missing_len is its length. */
int urltmpl_fill(struct buf *out, const char *tmpl, const struct msg *m, const char **missing,
                 size_t *missing_len);

#endif
