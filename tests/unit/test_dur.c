/* test_dur.c: durations, sizes and bounded integers, as the config writes them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "common/dur.h"

static long dur_ok(const char *s)
{
    long ms = -42;
    if (dur_parse(s, &ms) != 0)
        fail_msg("dur_parse(\"%s\") failed", s);
    return ms;
}

static void dur_bad(const char *s)
{
    long ms = -42;
    if (dur_parse(s, &ms) != -1)
        fail_msg("dur_parse(\"%s\") accepted it as %ld", s, ms);
    assert_int_equal(ms, -42);      /* untouched on error */
}

static void test_dur_units(void **state)
{
    (void)state;
    assert_int_equal(dur_ok("0"), 0);
    assert_int_equal(dur_ok("0ms"), 0);
    assert_int_equal(dur_ok("0s"), 0);
    assert_int_equal(dur_ok("10ms"), 10);
    assert_int_equal(dur_ok("5"), 5000);          /* a bare number means seconds */
    assert_int_equal(dur_ok("5s"), 5000);
    assert_int_equal(dur_ok("2m"), 120000);
    assert_int_equal(dur_ok("1h"), 3600000);
    assert_int_equal(dur_ok("7d"), 7L * 86400000);
    assert_int_equal(dur_ok("007s"), 7000);
    assert_int_equal(dur_ok("1500ms"), 1500);
}

static void test_dur_rejects(void **state)
{
    (void)state;
    dur_bad("");
    dur_bad("1.5s");
    dur_bad("-1");
    dur_bad("-1s");
    dur_bad("+1s");
    dur_bad("5x");
    dur_bad("5 s");
    dur_bad(" 5s");
    dur_bad("5s ");
    dur_bad("5S");
    dur_bad("5sec");
    dur_bad("5mss");
    dur_bad("ms");
    dur_bad("s");
    dur_bad("1h30m");
    dur_bad("0x10");
}

static void test_dur_overflow(void **state)
{
    (void)state;
    dur_bad("99999999999999999999d");     /* the number itself does not fit */
    dur_bad("99999999999999999999");
    dur_bad("9999999999999999d");         /* the number fits, milliseconds do not */
    dur_bad("9223372036854775807s");
    assert_int_equal(dur_ok("9223372036854775807ms"), LONG_MAX);
    dur_bad("9223372036854775808ms");
}

static void test_size(void **state)
{
    (void)state;
    long long b = -1;
    assert_int_equal(size_parse("0", &b), 0);
    assert_int_equal(b, 0);
    assert_int_equal(size_parse("512", &b), 0);
    assert_int_equal(b, 512);
    assert_int_equal(size_parse("1K", &b), 0);
    assert_int_equal(b, 1024);
    assert_int_equal(size_parse("256M", &b), 0);
    assert_int_equal(b, 256LL << 20);
    assert_int_equal(size_parse("3G", &b), 0);
    assert_int_equal(b, 3LL << 30);

    b = -7;
    const char *bad[] = { "", "-1", "1KB", "1k", "1T", "1.5M", "K", " 1K", "1K ", "+1",
                          "99999999999999999999", "9999999999999G" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (size_parse(bad[i], &b) != -1)
            fail_msg("size_parse(\"%s\") accepted it", bad[i]);
    assert_int_equal(b, -7);
}

static void test_int(void **state)
{
    (void)state;
    long v = -42;
    assert_int_equal(int_parse("1", 1, 256, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(int_parse("256", 1, 256, &v), 0);
    assert_int_equal(v, 256);
    assert_int_equal(int_parse("-5", -10, 10, &v), 0);
    assert_int_equal(v, -5);
    assert_int_equal(int_parse("0", 0, 0, &v), 0);
    assert_int_equal(v, 0);

    v = -42;
    const char *bad[] = { "0", "257", "100000", "", "-", "+5", " 5", "5 ", "5x", "0x10", "1.0", "-1",
                          "99999999999999999999", "-99999999999999999999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (int_parse(bad[i], 1, 256, &v) != -1)
            fail_msg("int_parse(\"%s\", 1, 256) accepted it", bad[i]);
    assert_int_equal(v, -42);
    assert_int_equal(int_parse("9223372036854775807", 0, LONG_MAX, &v), 0);
    assert_int_equal(v, LONG_MAX);
}

static void test_dur_format(void **state)
{
    (void)state;
    char buf[32];
    assert_string_equal(dur_format(0, buf, sizeof buf), "0s");
    assert_string_equal(dur_format(1, buf, sizeof buf), "1ms");
    assert_string_equal(dur_format(1500, buf, sizeof buf), "1500ms");
    assert_string_equal(dur_format(5000, buf, sizeof buf), "5s");
    assert_string_equal(dur_format(90000, buf, sizeof buf), "90s");
    assert_string_equal(dur_format(120000, buf, sizeof buf), "2m");
    assert_string_equal(dur_format(3600000, buf, sizeof buf), "1h");
    assert_string_equal(dur_format(5400000, buf, sizeof buf), "90m");
    assert_string_equal(dur_format(7L * 86400000, buf, sizeof buf), "7d");
    assert_string_equal(dur_format(-5, buf, sizeof buf), "-5ms");
    /* A short buffer is truncated, never overrun. */
    char tiny[3];
    assert_string_equal(dur_format(1500, tiny, sizeof tiny), "15");
}

static void test_dur_round_trip(void **state)
{
    (void)state;
    const long values[] = { 0, 1, 999, 1000, 1001, 59999, 60000, 3599999, 3600000, 86400000,
                            86400001, 30L * 86400000, LONG_MAX };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char buf[40];
        long back = -1;
        dur_format(values[i], buf, sizeof buf);
        assert_int_equal(dur_parse(buf, &back), 0);
        assert_int_equal(back, values[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dur_units),
        cmocka_unit_test(test_dur_rejects),
        cmocka_unit_test(test_dur_overflow),
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_dur_format),
        cmocka_unit_test(test_dur_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
