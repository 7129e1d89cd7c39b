/* test_sb_charge.c: the table of entries charged with workers' deaths (crash_limit): a charge
 * counts per pool and id, a suspect is known with 0 charges and keeps a charged entry's count,
 * a full table forgets the stalest entry, an entry being written is never read, and the filter
 * that spares workers the scan holds the bits of the entries there, not of those forgotten. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/sb.h"

static void charges_count_per_pool_and_id(void **state)
{
    (void)state;
    struct sb sb;
    assert_int_equal(sb_open(&sb, 1), 0);
    uint64_t a = sb_pool_key("a"), b = sb_pool_key("b");
    assert_true(a != 0 && a != b);
    unsigned charges;
    enum sb_cause cause;
    assert_false(sb_charge_get(a, 17, 3, &charges, &cause));
    assert_int_equal(sb_charge(&sb, a, 17, 3, SB_CAUSE_CRASH, true, 1), 1);
    assert_int_equal(sb_charge(&sb, a, 17, 3, SB_CAUSE_WATCHDOG, true, 2), 2);
    assert_true(sb_charge_get(a, 17, 3, &charges, &cause));
    assert_int_equal(charges, 2);
    assert_int_equal(cause, SB_CAUSE_WATCHDOG);
    /* another pool, another sequence number: not charged */
    assert_false(sb_charge_get(b, 17, 3, &charges, &cause));
    assert_false(sb_charge_get(a, 17, 4, &charges, &cause));
    /* a suspect is known with no charge; suspecting a charged entry keeps its charges */
    assert_int_equal(sb_charge(&sb, a, 18, 0, SB_CAUSE_CRASH, false, 3), 0);
    assert_true(sb_charge_get(a, 18, 0, &charges, &cause));
    assert_int_equal(charges, 0);
    assert_int_equal(sb_charge(&sb, a, 17, 3, SB_CAUSE_CRASH, false, 4), 2);
    assert_true(sb_charge_get(a, 17, 3, &charges, &cause));
    assert_int_equal(charges, 2);
    assert_int_equal(cause, SB_CAUSE_WATCHDOG);
    /* an entry the master was writing when it was read (odd seq) is not taken */
    atomic_fetch_add(&sb.charges->e[0].seq, 1);
    assert_false(sb_charge_get(a, 17, 3, &charges, &cause));
    atomic_fetch_add(&sb.charges->e[0].seq, 1);
    assert_true(sb_charge_get(a, 17, 3, &charges, &cause));
    sb_close(&sb);
}

static void a_full_table_forgets_the_stalest(void **state)
{
    (void)state;
    struct sb sb;
    assert_int_equal(sb_open(&sb, 1), 0);
    uint64_t a = sb_pool_key("a");
    for (uint64_t i = 0; i < SB_CHARGES_MAX; i++)
        sb_charge(&sb, a, 100 + i, 0, SB_CAUSE_CRASH, true, 10 + i);
    sb_charge(&sb, a, 100, 0, SB_CAUSE_CRASH, true, 1000);          /* the first, touched again */
    assert_int_equal(sb_charge(&sb, a, 9999, 0, SB_CAUSE_MEMORY, true, 1001), 1);
    unsigned charges;
    enum sb_cause cause;
    assert_true(sb_charge_get(a, 100, 0, &charges, &cause));
    assert_int_equal(charges, 2);
    assert_false(sb_charge_get(a, 101, 0, &charges, &cause));      /* the stalest went */
    assert_true(sb_charge_get(a, 9999, 0, &charges, &cause));
    assert_int_equal(cause, SB_CAUSE_MEMORY);
    assert_true(sb_charge_get(a, 102, 0, &charges, &cause));
    sb_close(&sb);
}

static unsigned filter_bits(const struct sb *sb)
{
    unsigned bits = 0;
    for (size_t w = 0; w < SB_CHARGE_FILTER_BITS / 64; w++)
        bits += (unsigned)__builtin_popcountll(atomic_load(&sb->charges->filter[w]));
    return bits;
}

static void the_filter_forgets_what_the_table_forgot(void **state)
{
    (void)state;
    struct sb sb;
    assert_int_equal(sb_open(&sb, 1), 0);
    uint64_t a = sb_pool_key("a");
    unsigned charges;
    enum sb_cause cause;
    assert_int_equal(filter_bits(&sb), 0);
    sb_charge(&sb, a, 5, 1, SB_CAUSE_CRASH, true, 1);
    assert_int_equal(filter_bits(&sb), 1);
    /* Twenty tables' worth of ids through a full table: without the rebuild the filter would
     * fill up (every lookup a scan again); with it, no more bits than entries. */
    for (uint64_t i = 0; i < 20 * SB_CHARGES_MAX; i++)
        sb_charge(&sb, a, 1000 + i, 7, SB_CAUSE_CRASH, true, 10 + i);
    assert_true(filter_bits(&sb) <= SB_CHARGES_MAX);
    for (uint64_t i = 19 * SB_CHARGES_MAX; i < 20 * SB_CHARGES_MAX; i++)
        assert_true(sb_charge_get(a, 1000 + i, 7, &charges, &cause));
    assert_false(sb_charge_get(a, 5, 1, &charges, &cause));
    assert_false(sb_charge_get(a, 1000, 7, &charges, &cause));
    sb_close(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(charges_count_per_pool_and_id),
        cmocka_unit_test(a_full_table_forgets_the_stalest),
        cmocka_unit_test(the_filter_forgets_what_the_table_forgot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
