// links: child/urltmpl.c child/fields.c
/* test_urltmpl.c: a message field can never move a delivery: every value that enters the URL
 * is percent-encoded, whatever it holds. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "child/urltmpl.h"

static char *escaped(const char *s, size_t n)
{
    static struct buf b;
    buf_reset(&b);
    urltmpl_escape(&b, s, n);
    return b.p ? b.p : (char *)"";
}

#define ESC(s) escaped(s, sizeof(s) - 1)

static void test_unreserved_kept(void **state)
{
    (void)state;
    assert_string_equal(ESC("AZaz09-._~"), "AZaz09-._~");
    assert_string_equal(ESC("order-42"), "order-42");
    assert_string_equal(ESC(""), "");
}

static void test_nasty_inputs_encoded(void **state)
{
    (void)state;
    assert_string_equal(ESC("../"), "..%2F");
    assert_string_equal(ESC("../../admin"), "..%2F..%2Fadmin");
    assert_string_equal(ESC("?"), "%3F");
    assert_string_equal(ESC("a?b=c&d"), "a%3Fb%3Dc%26d");
    assert_string_equal(ESC("#"), "%23");
    assert_string_equal(ESC("evil.example#"), "evil.example%23");
    assert_string_equal(ESC("@"), "%40");
    assert_string_equal(ESC("@127.0.0.1"), "%40127.0.0.1");
    assert_string_equal(ESC(" "), "%20");
    assert_string_equal(ESC("a b"), "a%20b");
    assert_string_equal(ESC("http://evil.example/"), "http%3A%2F%2Fevil.example%2F");
    assert_string_equal(ESC("\r\n"), "%0D%0A");
    assert_string_equal(ESC("x\r\nHost: evil"), "x%0D%0AHost%3A%20evil");
    assert_string_equal(ESC("%2e%2e"), "%252e%252e");
    assert_string_equal(ESC("\\"), "%5C");
    assert_string_equal(ESC("{id}"), "%7Bid%7D");
    assert_string_equal(ESC("+;,:=$!*'()[]"), "%2B%3B%2C%3A%3D%24%21%2A%27%28%29%5B%5D");
    assert_string_equal(ESC("\x7f\x01"), "%7F%01");
    /* UTF-8 is encoded byte by byte: "é" and "€" and an emoji */
    assert_string_equal(ESC("\xc3\xa9"), "%C3%A9");
    assert_string_equal(ESC("\xe2\x82\xac"), "%E2%82%AC");
    assert_string_equal(ESC("\xf0\x9f\x98\x80"), "%F0%9F%98%80");
    /* bytes that are not UTF-8 at all, and a NUL inside the value */
    assert_string_equal(escaped("\xff\x00z", 3), "%FF%00z");
}

/* A message with fields type, user, path */
static const struct str fields[] = {
    { "type", 4 }, { "order.created", 13 },
    { "user", 4 }, { "@evil.example:80", 16 },
    { "path", 4 }, { "../../admin?x=1#f", 17 },
    { "dots", 4 }, { "..", 2 },
    { "dot", 3 }, { ".", 1 },
    { "empty", 5 }, { "", 0 },
    { "type", 4 }, { "second", 6 },
};
static const struct msg m = {
    .stream = "orders stream",
    .id = { "1700000000000-7", 15 },
    .f = fields,
    .nf = sizeof fields / sizeof fields[0] / 2,
    .attempt = 1,
};

static const char *fill(const char *tmpl)
{
    static struct buf b;
    const char *missing = NULL;
    size_t n = 0;
    if (urltmpl_fill(&b, tmpl, &m, &missing, &n) != 0)
        fail_msg("template %s: missing %.*s", tmpl, (int)n, missing);
    return b.p;
}

static void test_fill_placeholders(void **state)
{
    (void)state;
    assert_string_equal(fill("http://127.0.0.1:8080/events/{type}"),
                        "http://127.0.0.1:8080/events/order.created");
    assert_string_equal(fill("https://h/{stream}/{id}"), "https://h/orders%20stream/1700000000000-7");
    assert_string_equal(fill("http://h/u/{user}/x"), "http://h/u/%40evil.example%3A80/x");
    assert_string_equal(fill("http://h/p/{path}"), "http://h/p/..%2F..%2Fadmin%3Fx%3D1%23f");
    assert_string_equal(fill("http://h/q?t={type}&u={user}"),
                        "http://h/q?t=order.created&u=%40evil.example%3A80");
    assert_string_equal(fill("http://h/{type}{type}"), "http://h/order.createdorder.created");
    assert_string_equal(fill("http://h/static"), "http://h/static");
    assert_string_equal(fill("http://h/e/{empty}/"), "http://h/e//");
}

static void test_dot_segments_cannot_form(void **state)
{
    (void)state;
    assert_string_equal(fill("http://h/a/{dots}/b"), "http://h/a/%2E%2E/b");
    assert_string_equal(fill("http://h/a/{dot}/b"), "http://h/a/%2E/b");
    assert_string_equal(fill("http://h/a/{dot}{dot}/b"), "http://h/a/%2E%2E/b");
}

static void test_first_of_repeated_field(void **state)
{
    (void)state;
    assert_string_equal(fill("http://h/{type}"), "http://h/order.created");
}

static void test_missing_field_reported(void **state)
{
    (void)state;
    struct buf b = BUF_INIT;
    const char *missing = NULL;
    size_t n = 0;
    const char *tmpl = "http://h/{type}/{customer}/{user}";
    assert_int_equal(urltmpl_fill(&b, tmpl, &m, &missing, &n), -1);
    assert_int_equal(n, 8);
    assert_memory_equal(missing, "customer", 8);
    assert_ptr_equal(missing, strstr(tmpl, "customer"));
    /* a field name that is a prefix of an existing one is not that one */
    assert_int_equal(urltmpl_fill(&b, "http://h/{typ}", &m, &missing, &n), -1);
    assert_int_equal(n, 3);
    buf_release(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unreserved_kept),
        cmocka_unit_test(test_nasty_inputs_encoded),
        cmocka_unit_test(test_fill_placeholders),
        cmocka_unit_test(test_dot_segments_cannot_form),
        cmocka_unit_test(test_first_of_repeated_field),
        cmocka_unit_test(test_missing_field_reported),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
