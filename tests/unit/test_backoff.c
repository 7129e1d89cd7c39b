/* Retry delays: exponential, linear, fixed; the cap; the jitter's spread. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "common/backoff.h"

static void exponential_doubles(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 3600000, 0, 1, 0.5), 1000);
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 3600000, 0, 2, 0.5), 2000);
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 3600000, 0, 3, 0.5), 4000);
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 2000, 3600000, 0, 5, 0.5), 32000);
}

static void capped_at_max(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 5000, 0, 10, 0.5), 5000);
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 5000, 0, 1000000, 0.5), 5000);
    assert_int_equal(backoff_ms(BACKOFF_LINEAR, 1000, 5000, 0, 7, 0.5), 5000);
}

static void linear_and_fixed(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(BACKOFF_LINEAR, 1500, 60000, 0, 3, 0.5), 4500);
    assert_int_equal(backoff_ms(BACKOFF_FIXED, 1500, 60000, 0, 9, 0.5), 1500);
}

static void jitter_spreads_both_ways(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(BACKOFF_FIXED, 1000, 60000, 20, 1, 0.0), 800);
    assert_int_equal(backoff_ms(BACKOFF_FIXED, 1000, 60000, 20, 1, 0.5), 1000);
    long hi = backoff_ms(BACKOFF_FIXED, 1000, 60000, 20, 1, 0.999999);
    assert_true(hi >= 1199 && hi <= 1200);
}

static void attempt_below_one_is_one(void **state)
{
    (void)state;
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 60000, 0, 0, 0.5), 1000);
    assert_int_equal(backoff_ms(BACKOFF_EXPONENTIAL, 1000, 60000, 0, -3, 0.5), 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exponential_doubles),
        cmocka_unit_test(capped_at_max),
        cmocka_unit_test(linear_and_fixed),
        cmocka_unit_test(jitter_spreads_both_ways),
        cmocka_unit_test(attempt_below_one_is_one),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
