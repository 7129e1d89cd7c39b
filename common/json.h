/* json.h: reading a JSON document (jansson 2.14 behind it: only json.c includes jansson.h).
 *
 * A parsed document is a tree of values owned by its root. Every getter takes a value that
 * may be NULL or of the wrong type and then answers "absent", so a caller walks a document
 * it did not write without checking each step: json_num(json_get(doc, "workers"), ...). */
#ifndef SF_JSON_H
#define SF_JSON_H

#include <stdbool.h>
#include <stddef.h>

struct json;                    /* a value inside a parsed document; never freed on its own */

/* Parse len bytes of text as one JSON document (strict: no trailing text, no NUL inside a
 * string, duplicate keys refused). Returns the root (free with json_free()), or NULL with a
 * one-line reason in err (as "line L column C: what"). */
struct json *json_parse(const char *text, size_t len, char *err, size_t errlen);
void json_free(struct json *root);

/* The member key of object o; NULL when o is not an object or has no such member. */
const struct json *json_get(const struct json *o, const char *key);
/* The number of elements of array a (0 when a is not an array), and element i (NULL past it). */
size_t json_len(const struct json *a);
const struct json *json_at(const struct json *a, size_t i);

/* What value v is (JSON_K_NONE for NULL). */
enum json_kind { JSON_K_NONE, JSON_K_OBJECT, JSON_K_ARRAY, JSON_K_STRING, JSON_K_NUMBER, JSON_K_BOOL,
                 JSON_K_NULL };
enum json_kind json_kind(const struct json *v);
/* The member of object o whose key is key[0..n) (a key need not end in NUL); NULL when o is
 * not an object or has no such member. */
const struct json *json_getn(const struct json *o, const char *key, size_t n);
/* v's text when v is a string (owned by the document), else NULL. */
const char *json_strval(const struct json *v);
/* v as compact JSON text: an object or array as a document, a number as JSON writes it (reals
 * with 15 significant digits, so 0.1 stays "0.1"), true/false/null, a string quoted. Caller
 * owns the result; free with free(). NULL only for v == NULL. */
char *json_dump(const struct json *v);

/* Member key of o as a number (integer or real): true and *out set, or false. */
bool json_num(const struct json *o, const char *key, double *out);
/* Member key of o as a string, owned by the document; NULL when absent or not a string. */
const char *json_str(const struct json *o, const char *key);
/* Member key of o as a boolean: 1 true, 0 false, -1 absent or not a boolean. */
int json_bool(const struct json *o, const char *key);

#endif
