/* fields.h: what a field name or a path names in a message. Pure: no I/O.
 *
 * Wherever the config names a message field (url placeholders, id_field, body_field,
 * route_field, created_field, require_fields) it may name a path instead: "meta.type" is key
 * "type" of the JSON object held by field "meta", "meta.a.b" goes one level deeper, and a
 * segment of digits indexes an array ("items.0"). A field literally named "meta.type" wins
 * over the path. When several prefixes name fields ("a.b" and "a" for "a.b.c"), the longest
 * is used. What a path reaches is given as text: a string unescaped, a number, true or false
 * as JSON writes them, an object or array as its compact JSON document. null, like a missing
 * key, does not resolve. */
#ifndef SF_FIELDS_H
#define SF_FIELDS_H

#include <stdbool.h>
#include <stddef.h>

#include "child/msg.h"

/* A value found: v points into the message (a plain field) or into owned (text taken from a
 * JSON document). Valid while the message is; release with fields_value_release(). */
struct fields_value {
    struct str v;
    char *owned;
};

/* Look up name[0..n) in m. Returns 0 and fills *out, or -1 when it does not resolve, with a
 * one-line reason naming the path in err ("'meta.type': field 'meta' is not JSON: ..."). */
int fields_get(const struct msg *m, const char *name, size_t n, struct fields_value *out, char *err,
               size_t errlen);
void fields_value_release(struct fields_value *v);

/* Whether name[0..n) is a path (holds a dot): a path that does not resolve makes the message
 * bad; a plain field that is missing keeps the meaning each key gives it. */
bool fields_is_path(const char *name, size_t n);

/* A point in time, as created_field holds it: RFC 3339 ("2026-01-01T12:00:00.5Z", offsets
 * allowed, 't'/'z'/' ' accepted), or a decimal number of seconds or milliseconds since the
 * epoch, told apart by magnitude: below 1e11 it is seconds (1e11 s is the year 5138), else
 * milliseconds (1e11 ms is 1973). Returns milliseconds since the epoch, or -1 when s[0..n)
 * is none of these (or before 1970). */
long long fields_time_ms(const char *s, size_t n);

#endif
