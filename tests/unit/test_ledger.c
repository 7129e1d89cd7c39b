// links: child/ledger.c
/* test_ledger.c: the worker's table of messages keyed by entry id: lookups, states and their
 * counts, deletions past tombstones, growth, due times in order, and 100,000 ids. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "child/ledger.h"

static void id_of(char *buf, size_t size, unsigned long long ms, unsigned long long seq)
{
    snprintf(buf, size, "%llu-%llu", ms, seq);
}

static void test_add_get_del(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    assert_null(ledger_get(&l, "1-0"));
    assert_int_equal(ledger_del(&l, "1-0"), -1);
    struct ledger_rec *r = ledger_add(&l, "1-0", LEDGER_IN_HANDLER);
    r->attempt = 3;
    ledger_add(&l, "1-1", LEDGER_IN_HANDLER);
    r = ledger_get(&l, "1-0");
    assert_non_null(r);
    assert_string_equal(r->id, "1-0");
    assert_int_equal(r->attempt, 3);
    assert_int_equal(ledger_count(&l, LEDGER_IN_HANDLER), 2);
    assert_int_equal(ledger_del(&l, "1-0"), 0);
    assert_null(ledger_get(&l, "1-0"));
    assert_non_null(ledger_get(&l, "1-1"));
    assert_int_equal(ledger_count(&l, LEDGER_IN_HANDLER), 1);
    /* Dropping a record held is the same as deleting it by id. */
    ledger_set_state(&l, ledger_get(&l, "1-1"), LEDGER_ACK_DUE);
    ledger_drop(&l, ledger_get(&l, "1-1"));
    assert_null(ledger_get(&l, "1-1"));
    assert_int_equal(ledger_count(&l, LEDGER_ACK_DUE), 0);
    assert_int_equal(l.used, 0);
    ledger_release(&l);
}

static void test_states_are_counted(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    struct ledger_rec *r = ledger_add(&l, "5-0", LEDGER_IN_HANDLER);
    ledger_set_state(&l, r, LEDGER_ACK_DUE);
    assert_int_equal(ledger_count(&l, LEDGER_IN_HANDLER), 0);
    assert_int_equal(ledger_count(&l, LEDGER_ACK_DUE), 1);
    ledger_schedule(&l, r, LEDGER_RETRY_DUE, 100);
    assert_int_equal(ledger_count(&l, LEDGER_ACK_DUE), 0);
    assert_int_equal(ledger_count(&l, LEDGER_RETRY_DUE), 1);
    /* Adding the same id again restarts its record, counted once. */
    r = ledger_add(&l, "5-0", LEDGER_DEAD_DUE);
    assert_int_equal(ledger_count(&l, LEDGER_RETRY_DUE), 0);
    assert_int_equal(ledger_count(&l, LEDGER_DEAD_DUE), 1);
    assert_int_equal(r->due_ms, 0);
    ledger_release(&l);
}

static void test_owned_fields_are_freed(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    struct ledger_rec *r = ledger_add(&l, "7-0", LEDGER_DEAD_DUE);
    ledger_set_error(r, "http 500: boom");
    ledger_set_error(r, "http 502: again");
    assert_string_equal(r->error, "http 502: again");
    char *key = malloc(4);
    memcpy(key, "a\0b", 4);
    r->marker = (struct str){ key, 3 };
    r = ledger_add(&l, "7-0", LEDGER_IN_HANDLER);   /* releases the first life's fields */
    assert_null(r->error);
    assert_null(r->marker.p);
    r->marker = (struct str){ strdup("k"), 1 };
    ledger_set_error(r, "x");
    assert_int_equal(ledger_del(&l, "7-0"), 0);     /* and a deletion its own */
    r = ledger_add(&l, "8-0", LEDGER_IN_HANDLER);
    r->marker = (struct str){ strdup("k"), 1 };
    ledger_release(&l);                              /* LeakSanitizer checks the rest */
}

/* Ids that collide on their slot form one run; deleting inside it must not hide the rest. */
static void test_deletions_leave_later_records_findable(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    char id[LEDGER_ID_MAX];
    for (unsigned i = 0; i < 40; i++) {
        id_of(id, sizeof id, 1000, i);
        ledger_add(&l, id, LEDGER_IN_HANDLER);
    }
    for (unsigned i = 0; i < 40; i += 2) {
        id_of(id, sizeof id, 1000, i);
        assert_int_equal(ledger_del(&l, id), 0);
    }
    for (unsigned i = 0; i < 40; i++) {
        id_of(id, sizeof id, 1000, i);
        if (i % 2)
            assert_non_null(ledger_get(&l, id));
        else
            assert_null(ledger_get(&l, id));
    }
    /* Churn: adding and deleting many times in a table that never grows must not fill it
     * with tombstones (a lookup of a missing id would then never end). */
    for (unsigned round = 0; round < 200; round++)
        for (unsigned i = 0; i < 30; i++) {
            id_of(id, sizeof id, 2000 + round, i);
            ledger_add(&l, id, LEDGER_ACK_DUE);
            assert_int_equal(ledger_del(&l, id), 0);
        }
    assert_null(ledger_get(&l, "999-999"));
    assert_true((l.used + l.tombs) * 4 <= l.cap * 3);
    assert_int_equal(l.used, 20);
    assert_int_equal(ledger_count(&l, LEDGER_IN_HANDLER), 20);
    ledger_release(&l);
}

static void test_growth_keeps_every_record(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    char id[LEDGER_ID_MAX];
    size_t caps_seen = 0, last_cap = 0;
    for (unsigned i = 0; i < 5000; i++) {
        id_of(id, sizeof id, 1700000000000ULL + i / 7, i % 7);
        struct ledger_rec *r = ledger_add(&l, id, LEDGER_IN_HANDLER);
        r->attempt = i;
        if (l.cap != last_cap) {
            caps_seen++;
            last_cap = l.cap;
        }
        assert_true(l.used * 4 <= l.cap * 3);
    }
    assert_true(caps_seen > 3);
    for (unsigned i = 0; i < 5000; i++) {
        id_of(id, sizeof id, 1700000000000ULL + i / 7, i % 7);
        struct ledger_rec *r = ledger_get(&l, id);
        assert_non_null(r);
        assert_int_equal(r->attempt, i);
    }
    size_t pos = 0, walked = 0;
    while (ledger_next(&l, &pos))
        walked++;
    assert_int_equal(walked, 5000);
    ledger_release(&l);
}

static void test_due_times_come_in_order(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    assert_int_equal(ledger_next_due(&l, LEDGER_RETRY_DUE), -1);
    const long long due[] = { 500, 100, 900, 300, 700 };
    char id[LEDGER_ID_MAX];
    for (unsigned i = 0; i < 5; i++) {
        id_of(id, sizeof id, 1, i);
        ledger_schedule(&l, ledger_add(&l, id, LEDGER_IN_HANDLER), LEDGER_RETRY_DUE, due[i]);
    }
    ledger_schedule(&l, ledger_add(&l, "2-0", LEDGER_IN_HANDLER), LEDGER_DEAD_DUE, 50);
    /* Each state has its own schedule. */
    assert_int_equal(ledger_next_due(&l, LEDGER_RETRY_DUE), 100);
    assert_int_equal(ledger_next_due(&l, LEDGER_DEAD_DUE), 50);
    assert_null(ledger_first_due(&l, LEDGER_RETRY_DUE, 99));
    /* Rescheduled later: the earlier heap entry no longer counts. */
    ledger_schedule(&l, ledger_get(&l, "1-1"), LEDGER_RETRY_DUE, 1000);
    /* Deleted, and moved to another state: neither is due any more. */
    ledger_del(&l, "1-3");
    ledger_set_state(&l, ledger_get(&l, "1-0"), LEDGER_IN_HANDLER);
    assert_int_equal(ledger_next_due(&l, LEDGER_RETRY_DUE), 700);
    struct ledger_rec *r = ledger_first_due(&l, LEDGER_RETRY_DUE, 950);
    assert_non_null(r);
    assert_string_equal(r->id, "1-4");
    ledger_set_state(&l, r, LEDGER_IN_HANDLER);
    r = ledger_first_due(&l, LEDGER_RETRY_DUE, 950);
    assert_non_null(r);
    assert_string_equal(r->id, "1-2");
    ledger_del(&l, r->id);
    assert_null(ledger_first_due(&l, LEDGER_RETRY_DUE, 950));
    assert_int_equal(ledger_next_due(&l, LEDGER_RETRY_DUE), 1000);
    ledger_release(&l);
}

/* A record rescheduled over and over leaves stale heap entries: they must not pile up. */
static void test_rescheduling_keeps_the_heap_bounded(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    struct ledger_rec *r = ledger_add(&l, "3-0", LEDGER_IN_HANDLER);
    for (long long t = 100000; t > 0; t--)
        ledger_schedule(&l, r, LEDGER_DEAD_DUE, t);
    assert_true(l.due[LEDGER_DEAD_DUE].n <= 1024);
    assert_int_equal(ledger_next_due(&l, LEDGER_DEAD_DUE), 1);
    ledger_release(&l);
}

static void test_hundred_thousand_ids(void **state)
{
    (void)state;
    enum { N = 100000 };
    struct ledger l;
    ledger_init(&l);
    char id[LEDGER_ID_MAX];
    for (unsigned i = 0; i < N; i++) {
        id_of(id, sizeof id, 1700000000000ULL + i / 3, i % 3);
        struct ledger_rec *r = ledger_add(&l, id, LEDGER_IN_HANDLER);
        r->attempt = i + 1;
        ledger_schedule(&l, r, LEDGER_RETRY_DUE, (long long)((i * 7919ULL) % N));
    }
    assert_int_equal(l.used, N);
    assert_int_equal(ledger_count(&l, LEDGER_RETRY_DUE), N);
    for (unsigned i = 0; i < N; i++) {
        id_of(id, sizeof id, 1700000000000ULL + i / 3, i % 3);
        struct ledger_rec *r = ledger_get(&l, id);
        assert_non_null(r);
        assert_int_equal(r->attempt, i + 1);
    }
    assert_null(ledger_get(&l, "1700000000000-3"));
    /* Take them all in due order (7919 is prime to N: the due times are 0..N-1 once each). */
    long long last = -1;
    for (unsigned k = 0; k < N; k++) {
        struct ledger_rec *r = ledger_first_due(&l, LEDGER_RETRY_DUE, N);
        assert_non_null(r);
        assert_true(r->due_ms == last + 1);
        last = r->due_ms;
        if (k % 2)
            ledger_del(&l, r->id);
        else
            ledger_set_state(&l, r, LEDGER_ACK_DUE);
    }
    assert_null(ledger_first_due(&l, LEDGER_RETRY_DUE, N));
    assert_int_equal(l.used, N / 2);
    assert_int_equal(ledger_count(&l, LEDGER_ACK_DUE), N / 2);
    ledger_release(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_get_del),
        cmocka_unit_test(test_states_are_counted),
        cmocka_unit_test(test_owned_fields_are_freed),
        cmocka_unit_test(test_deletions_leave_later_records_findable),
        cmocka_unit_test(test_growth_keeps_every_record),
        cmocka_unit_test(test_due_times_come_in_order),
        cmocka_unit_test(test_rescheduling_keeps_the_heap_bounded),
        cmocka_unit_test(test_hundred_thousand_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
