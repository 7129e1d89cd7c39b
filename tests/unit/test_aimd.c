/* test_aimd.c: the destination table of adaptive concurrency: keys, lookups with open
 * addressing, slots against the limit, the additive increase, the decrease once per overload,
 * Retry-After, and a dead worker's slots given back. The table lives in calloc'd memory here;
 * in the fleet it is the master's shared mapping. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/aimd.h"

static struct aimd_table *table(void)
{
    struct aimd_table *t = calloc(1, sizeof *t);
    assert_non_null(t);
    return t;
}

static void test_dest_key(void **state)
{
    (void)state;
    char k[AIMD_KEY_MAX];
    assert_int_equal(aimd_dest_key("http://Example.COM/a/{type}?x=1", k, sizeof k), 0);
    assert_string_equal(k, "http://example.com:80");
    assert_int_equal(aimd_dest_key("HTTPS://u:p@h.example:8443/x", k, sizeof k), 0);
    assert_string_equal(k, "https://h.example:8443");
    assert_int_equal(aimd_dest_key("https://h.example", k, sizeof k), 0);
    assert_string_equal(k, "https://h.example:443");
    assert_int_equal(aimd_dest_key("http://[::1]:9000/in", k, sizeof k), 0);
    assert_string_equal(k, "http://[::1]:9000");
    assert_int_equal(aimd_dest_key("http://127.0.0.1:5000#frag", k, sizeof k), 0);
    assert_string_equal(k, "http://127.0.0.1:5000");
    assert_int_equal(aimd_dest_key("no scheme", k, sizeof k), -1);
    assert_int_equal(aimd_dest_key("http:///path", k, sizeof k), -1);
    assert_int_equal(aimd_dest_key("http://[::1/x", k, sizeof k), -1);
    char small[10];
    assert_int_equal(aimd_dest_key("http://long.example.com/", small, sizeof small), -1);
}

static void test_lookup_same_key_same_entry_and_full_table(void **state)
{
    (void)state;
    struct aimd_table *t = table();
    int a = aimd_lookup(t, "http://a:80", 8);
    assert_true(a >= 0);
    assert_int_equal(aimd_lookup(t, "http://a:80", 4), a);
    assert_int_equal(t->dest[a].ceiling, 8);            /* the higher ceiling stays */
    assert_int_equal(aimd_lookup(t, "http://a:80", 32), a);
    assert_int_equal(t->dest[a].ceiling, 32);
    assert_int_equal(aimd_limit(t, a), 8);              /* and the limit climbs to it later */
    char k[64];
    int seen[AIMD_DESTS] = { 0 };
    seen[a] = 1;
    for (int i = 1; i < AIMD_DESTS; i++) {
        snprintf(k, sizeof k, "http://h%d:80", i);
        int d = aimd_lookup(t, k, 1);
        assert_true(d >= 0);
        assert_int_equal(seen[d], 0);                   /* collisions probe onwards */
        seen[d] = 1;
    }
    assert_int_equal(aimd_lookup(t, "http://one-too-many:80", 1), -1);
    assert_int_equal(aimd_lookup(t, "http://h7:80", 1) >= 0, 1);   /* the known still found */
    free(t);
}

static void test_take_up_to_the_limit_and_give_back(void **state)
{
    (void)state;
    struct aimd_table *t = table();
    int d = aimd_lookup(t, "http://a:80", 3);
    assert_true(aimd_take(t, d, 0, 1));
    assert_true(aimd_take(t, d, 1, 1));
    assert_true(aimd_take(t, d, 1, 1));
    assert_false(aimd_take(t, d, 0, 1));                /* 3 of 3 in flight, whoever asks */
    assert_int_equal(t->dest[d].inflight, 3);
    assert_int_equal(t->held[1][d], 2);
    aimd_give(t, d, 1, AIMD_NEUTRAL, 1, 2, -1);
    assert_int_equal(t->dest[d].inflight, 2);
    assert_true(aimd_take(t, d, 0, 3));
    free(t);
}

static void test_increase_is_one_per_limits_worth_of_successes(void **state)
{
    (void)state;
    struct aimd_table *t = table();
    int d = aimd_lookup(t, "http://a:80", 100);
    t->dest[d].limit = 10 * AIMD_UNIT;
    for (int i = 0; i < 10; i++) {
        assert_true(aimd_take(t, d, 0, i));
        aimd_give(t, d, 0, AIMD_SUCCESS, i, i + 1, -1);
    }
    assert_int_equal(aimd_limit(t, d), 11);
    /* never above the ceiling */
    t->dest[d].limit = 100 * AIMD_UNIT - 1;
    assert_true(aimd_take(t, d, 0, 50));
    aimd_give(t, d, 0, AIMD_SUCCESS, 50, 51, -1);
    assert_int_equal(t->dest[d].limit, 100 * AIMD_UNIT);
    free(t);
}

static void test_decrease_once_per_overload(void **state)
{
    (void)state;
    struct aimd_table *t = table();
    int d = aimd_lookup(t, "http://a:80", 20);
    /* 20 requests sent at 100..119, all answered 429 from 200 on: one decrease */
    for (int i = 0; i < 20; i++)
        assert_true(aimd_take(t, d, 0, 100 + i));
    for (int i = 0; i < 20; i++)
        aimd_give(t, d, 0, AIMD_OVERLOAD, 100 + i, 200 + i, -1);
    assert_int_equal(t->dest[d].decreases, 1);
    assert_int_equal(t->dest[d].limit, 18 * AIMD_UNIT);
    assert_int_equal(t->dest[d].inflight, 0);
    /* a request sent after that decrease, overloaded again: a second one */
    assert_true(aimd_take(t, d, 0, 300));
    aimd_give(t, d, 0, AIMD_OVERLOAD, 300, 310, -1);
    assert_int_equal(t->dest[d].decreases, 2);
    assert_int_equal(aimd_limit(t, d), 16);
    /* never below 1 */
    for (int i = 0; i < 100; i++) {
        assert_true(aimd_take(t, d, 0, 1000 + 2 * i));
        aimd_give(t, d, 0, AIMD_OVERLOAD, 1000 + 2 * i, 1001 + 2 * i, -1);
    }
    assert_int_equal(t->dest[d].limit, AIMD_UNIT);
    assert_true(aimd_take(t, d, 0, 5000));
    assert_false(aimd_take(t, d, 1, 5000));
    free(t);
}

static void test_retry_after_holds_every_worker_off(void **state)
{
    (void)state;
    struct aimd_table *t = table();
    int d = aimd_lookup(t, "http://a:80", 4);
    assert_true(aimd_take(t, d, 0, 1000));
    aimd_give(t, d, 0, AIMD_OVERLOAD, 1000, 2000, 3);  /* Retry-After: 3 ms (3000 us) */
    assert_false(aimd_take(t, d, 1, 2000));
    assert_false(aimd_take(t, d, 1, 4999));
    assert_int_equal(aimd_held_off_ms(t, d, 2000), 3);
    assert_int_equal(aimd_held_off_ms(t, d, 4500), 1);
    assert_int_equal(aimd_held_off_ms(t, d, 5000), 0);
    assert_true(aimd_take(t, d, 1, 5000));
    struct aimd_view v[2];
    assert_int_equal(aimd_snapshot(t, 4000, v, 2), 1);
    assert_true(v[0].blocked);
    assert_string_equal(v[0].key, "http://a:80");
    assert_int_equal(v[0].inflight, 1);
    free(t);
}

static void test_reap_gives_back_a_dead_workers_slots(void **state)
{
    (void)state;
    struct aimd_table *t = table();
    int a = aimd_lookup(t, "http://a:80", 8);
    int b = aimd_lookup(t, "http://b:80", 8);
    for (int i = 0; i < 5; i++)
        assert_true(aimd_take(t, a, 7, 1));
    assert_true(aimd_take(t, b, 7, 1));
    assert_true(aimd_take(t, a, 2, 1));
    aimd_reap(t, 7);
    assert_int_equal(t->dest[a].inflight, 1);            /* worker 2's stays */
    assert_int_equal(t->dest[b].inflight, 0);
    assert_int_equal(t->held[7][a], 0);
    aimd_reap(t, 7);                                     /* twice: nothing more */
    assert_int_equal(t->dest[a].inflight, 1);
    aimd_reap(NULL, 7);
    aimd_reap(t, -1);
    aimd_reap(t, AIMD_WORKERS);
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dest_key),
        cmocka_unit_test(test_lookup_same_key_same_entry_and_full_table),
        cmocka_unit_test(test_take_up_to_the_limit_and_give_back),
        cmocka_unit_test(test_increase_is_one_per_limits_worth_of_successes),
        cmocka_unit_test(test_decrease_once_per_overload),
        cmocka_unit_test(test_retry_after_holds_every_worker_off),
        cmocka_unit_test(test_reap_gives_back_a_dead_workers_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
