// links: supervisor/scale.c
/* test_scale.c: when a pool with workers = MIN..MAX gets one more worker, or one fewer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "supervisor/scale.h"

static struct scale_input in(int workers, long long wait_ms)
{
    return (struct scale_input){ .workers = workers, .min = 2, .max = 5, .known = true, .oldest_wait_ms = wait_ms,
                                 .up_after_ms = 1000, .down_after_ms = 3000, .interval_ms = 500 };
}

/* An entry waiting longer than scale_up_after: one more per interval, up to the maximum. */
static void test_up_one_per_interval_to_the_max(void **state)
{
    (void)state;
    struct scale_state s = { 0 };
    struct scale_input i = in(2, 1500);
    assert_int_equal(scale_decide(&s, &i, 10000), 3);
    i.workers = 3;
    assert_int_equal(scale_decide(&s, &i, 10200), 3);      /* within the interval */
    assert_int_equal(scale_decide(&s, &i, 10500), 4);
    i.workers = 4;
    assert_int_equal(scale_decide(&s, &i, 11000), 5);
    i.workers = 5;
    assert_int_equal(scale_decide(&s, &i, 12000), 5);      /* the maximum */
}

/* Nothing waits long: the count stays until scale_down_after has passed, then one fewer per
 * interval, down to the minimum. */
static void test_down_after_calm_to_the_min(void **state)
{
    (void)state;
    struct scale_state s = { 0 };
    struct scale_input i = in(4, 200);
    assert_int_equal(scale_decide(&s, &i, 10000), 4);
    assert_int_equal(scale_decide(&s, &i, 12900), 4);
    assert_int_equal(scale_decide(&s, &i, 13000), 3);
    i.workers = 3;
    assert_int_equal(scale_decide(&s, &i, 13200), 3);
    assert_int_equal(scale_decide(&s, &i, 13500), 2);
    i.workers = 2;
    assert_int_equal(scale_decide(&s, &i, 20000), 2);
    i.oldest_wait_ms = -1;                                  /* nothing pending at all */
    assert_int_equal(scale_decide(&s, &i, 30000), 2);
}

/* A wait in between restarts the calm: scale_down_after counts from the last time it was behind. */
static void test_backlog_restarts_the_calm(void **state)
{
    (void)state;
    struct scale_state s = { 0 };
    struct scale_input i = in(5, 100);
    assert_int_equal(scale_decide(&s, &i, 10000), 5);
    i.oldest_wait_ms = 2000;
    assert_int_equal(scale_decide(&s, &i, 12000), 5);      /* behind, already at the max */
    i.oldest_wait_ms = 100;
    assert_int_equal(scale_decide(&s, &i, 13000), 5);
    assert_int_equal(scale_decide(&s, &i, 15900), 5);
    assert_int_equal(scale_decide(&s, &i, 16000), 4);
}

/* Unknown figures, a fixed count, and a count outside a moved range. */
static void test_unknown_fixed_and_moved_range(void **state)
{
    (void)state;
    struct scale_state s = { 0 };
    struct scale_input i = in(3, 5000);
    i.known = false;
    assert_int_equal(scale_decide(&s, &i, 10000), 3);
    i = in(3, 5000);
    i.min = i.max = 3;
    assert_int_equal(scale_decide(&s, &i, 10000), 3);
    i = in(1, 0);                                           /* below the range */
    assert_int_equal(scale_decide(&s, &i, 10000), 2);
    i = in(9, 5000);                                        /* above it */
    assert_int_equal(scale_decide(&s, &i, 10000), 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_up_one_per_interval_to_the_max),
        cmocka_unit_test(test_down_after_calm_to_the_min),
        cmocka_unit_test(test_backlog_restarts_the_calm),
        cmocka_unit_test(test_unknown_fixed_and_moved_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
