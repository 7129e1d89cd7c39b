/* json.c: the one file that includes jansson.h (see json.h). A struct json * is a json_t *
 * under another name, so the rest of the program never sees the library's types. */
#include "common/json.h"
#include "common/log.h"

#include <jansson.h>
#include <stdio.h>
#include <string.h>

static const json_t *jt(const struct json *v)
{
    return (const json_t *)(const void *)v;
}

static const struct json *jw(const json_t *v)
{
    return (const struct json *)(const void *)v;
}

struct json *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t e;
    /* JSON_DECODE_ANY: our documents are objects, but a caller may want any value. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &e);
    if (root == NULL) {
        if (errlen)
            snprintf(err, errlen, "line %d column %d: %s", e.line, e.column, e.text);
        return NULL;
    }
    return (struct json *)(void *)root;
}

void json_free(struct json *root)
{
    if (root)
        json_decref((json_t *)(void *)root);
}

const struct json *json_get(const struct json *o, const char *key)
{
    if (o == NULL || !json_is_object(jt(o)))
        return NULL;
    return jw(json_object_get(jt(o), key));
}

size_t json_len(const struct json *a)
{
    return a && json_is_array(jt(a)) ? json_array_size(jt(a)) : 0;
}

const struct json *json_at(const struct json *a, size_t i)
{
    return i < json_len(a) ? jw(json_array_get(jt(a), i)) : NULL;
}

bool json_num(const struct json *o, const char *key, double *out)
{
    const json_t *v = jt(json_get(o, key));
    if (v == NULL || !json_is_number(v))
        return false;
    *out = json_number_value(v);
    return true;
}

const char *json_str(const struct json *o, const char *key)
{
    const json_t *v = jt(json_get(o, key));
    return v && json_is_string(v) ? json_string_value(v) : NULL;
}

int json_bool(const struct json *o, const char *key)
{
    const json_t *v = jt(json_get(o, key));
    return v && json_is_boolean(v) ? json_is_true(v) : -1;
}

enum json_kind json_kind(const struct json *v)
{
    if (v == NULL)
        return JSON_K_NONE;
    switch (json_typeof(jt(v))) {
    case JSON_OBJECT: return JSON_K_OBJECT;
    case JSON_ARRAY: return JSON_K_ARRAY;
    case JSON_STRING: return JSON_K_STRING;
    case JSON_INTEGER:
    case JSON_REAL: return JSON_K_NUMBER;
    case JSON_TRUE:
    case JSON_FALSE: return JSON_K_BOOL;
    case JSON_NULL: return JSON_K_NULL;
    }
    return JSON_K_NONE;
}

const struct json *json_getn(const struct json *o, const char *key, size_t n)
{
    if (o == NULL || !json_is_object(jt(o)))
        return NULL;
    /* jansson 2.14 has json_object_getn(); keys of parsed documents never hold a NUL (we
     * parse without JSON_ALLOW_NUL), so a key with one cannot match anything. */
    if (memchr(key, '\0', n))
        return NULL;
    return jw(json_object_getn(jt(o), key, n));
}

const char *json_strval(const struct json *v)
{
    return v && json_is_string(jt(v)) ? json_string_value(jt(v)) : NULL;
}

char *json_dump(const struct json *v)
{
    if (v == NULL)
        return NULL;
    /* JSON_ENCODE_ANY: a scalar too. 15 digits: %.17g (jansson's default) prints 0.1 as
     * 0.10000000000000001, which is not what the producer wrote. */
    char *s = json_dumps(jt(v), JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(15));
    if (s == NULL)
        fatalx("out of memory writing a JSON value");
    return s;
}
