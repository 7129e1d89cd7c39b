// links: child/fields.c
/* test_fields.c: field names and paths into JSON fields, and created_field's times. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child/fields.h"

#define S(x) { x, sizeof(x) - 1 }

static const struct str f[] = {
    S("to"), S("ann@example.com"),
    S("meta"), S("{\"id\":\"e-1\",\"type\":\"send_email\",\"createdAt\":\"2026-01-01T00:00:01Z\","
                 "\"n\":42,\"r\":0.1,\"ok\":true,\"nil\":null,\"deep\":{\"a\":{\"b\":\"x\\\"y\"}},"
                 "\"items\":[\"zero\",{\"k\":1}],\"obj\":{\"z\":[1,2]}}"),
    S("meta.type"), S("literal wins"),
    S("bad"), S("{not json"),
    S("plain"), S("text"),
    S("ctl"), S("{\"a\":\x01\r\n}"),
    S("a.b"), S("{\"c\":\"from a.b\"}"),
    S("a"), S("{\"b\":{\"c\":\"from a\"}}"),
};
static const struct msg m = { "events", S("1700000000000-0"), f, sizeof f / sizeof f[0] / 2, 1 };

/* The value path reaches, as a NUL-terminated copy (static), or NULL with the error in err. */
static char err[256];
static const char *get(const char *path)
{
    static char out[256];
    struct fields_value v;
    err[0] = '\0';
    if (fields_get(&m, path, strlen(path), &v, err, sizeof err) == -1)
        return NULL;
    snprintf(out, sizeof out, "%.*s", (int)v.v.len, v.v.p);
    fields_value_release(&v);
    return out;
}

static void test_plain_fields(void **state)
{
    (void)state;
    assert_string_equal(get("to"), "ann@example.com");
    assert_string_equal(get("plain"), "text");
    assert_null(get("missing"));
    assert_non_null(strstr(err, "missing"));
}

static void test_paths_into_json(void **state)
{
    (void)state;
    assert_string_equal(get("meta.id"), "e-1");
    assert_string_equal(get("meta.createdAt"), "2026-01-01T00:00:01Z");
    assert_string_equal(get("meta.deep.a.b"), "x\"y");          /* unescaped */
    assert_string_equal(get("meta.items.0"), "zero");
    assert_string_equal(get("meta.items.1.k"), "1");
}

static void test_literal_name_wins(void **state)
{
    (void)state;
    assert_string_equal(get("meta.type"), "literal wins");
    /* the longest prefix that is a field holds the document */
    assert_string_equal(get("a.b.c"), "from a.b");
}

static void test_scalars_as_json_text(void **state)
{
    (void)state;
    assert_string_equal(get("meta.n"), "42");
    assert_string_equal(get("meta.r"), "0.1");
    assert_string_equal(get("meta.ok"), "true");
    assert_string_equal(get("meta.obj"), "{\"z\":[1,2]}");
    assert_string_equal(get("meta.obj.z"), "[1,2]");
}

static void test_unresolved_paths_say_why(void **state)
{
    (void)state;
    assert_null(get("meta.nope"));
    assert_non_null(strstr(err, "'meta.nope'"));
    assert_non_null(strstr(err, "no key 'nope'"));
    assert_null(get("meta.nil"));
    assert_non_null(strstr(err, "null"));
    assert_null(get("meta.id.x"));
    assert_non_null(strstr(err, "not an object"));
    assert_null(get("meta.items.2"));
    assert_null(get("meta.items.01"));
    assert_null(get("bad.x"));
    assert_non_null(strstr(err, "not JSON"));
    assert_null(get("ctl.a"));
    assert_non_null(strstr(err, "not JSON"));
    for (const char *e = err; *e; e++)
        assert_true((unsigned char)*e >= 0x20);     /* the token quoted is cleaned */
    assert_null(get("plain.x"));
    assert_non_null(strstr(err, "not JSON"));
    assert_null(get("nothing.x"));
    assert_non_null(strstr(err, "no field 'nothing'"));
    assert_null(get("meta."));
    assert_null(get(".meta"));
}

static void test_times(void **state)
{
    (void)state;
    assert_int_equal(fields_time_ms("2026-01-01T00:00:01Z", 20), 1767225601000LL);
    assert_int_equal(fields_time_ms("2026-01-01t00:00:01.25z", 23), 1767225601250LL);
    assert_int_equal(fields_time_ms("2026-01-01T02:00:01+02:00", 25), 1767225601000LL);
    assert_int_equal(fields_time_ms("2025-12-31T23:00:01-01:00", 25), 1767225601000LL);
    /* seconds below 1e11, milliseconds above */
    assert_int_equal(fields_time_ms("1767225601", 10), 1767225601000LL);
    assert_int_equal(fields_time_ms("1767225601.5", 12), 1767225601500LL);
    assert_int_equal(fields_time_ms("1767225601000", 13), 1767225601000LL);
    assert_int_equal(fields_time_ms("", 0), -1);
    assert_int_equal(fields_time_ms("soon", 4), -1);
    assert_int_equal(fields_time_ms("-5", 2), -1);
    assert_int_equal(fields_time_ms("1e9", 3), -1);
    assert_int_equal(fields_time_ms("2026-02-30T00:00:00Z", 20), -1);
    assert_int_equal(fields_time_ms("2026-01-01T00:00:00", 19), -1);       /* no zone */
    assert_int_equal(fields_time_ms("2026-01-01T25:00:00Z", 20), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_fields),
        cmocka_unit_test(test_paths_into_json),
        cmocka_unit_test(test_literal_name_wins),
        cmocka_unit_test(test_scalars_as_json_text),
        cmocka_unit_test(test_unresolved_paths_say_why),
        cmocka_unit_test(test_times),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
