// links: child/priority.c
/* test_priority.c: the order in which a pool reads its streams: strict always in the pool's
 * order; weighted shares that follow the weights while every stream has work, no starvation,
 * and no burst for a stream that was empty a long while. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "child/priority.h"

static void pool_with(struct pool_conf *pool, enum priority_kind kind, int *weights, size_t n)
{
    memset(pool, 0, sizeof *pool);
    pool->nstreams = n;
    pool->priority = kind;
    pool->weights = weights;
    pool->nweights = kind == PRIORITY_WEIGHTED ? n : 0;
}

/* One read of up to batch entries from the first stream in order that has any (left[i]:
 * entries stream i holds; < 0: endless). Returns the stream served, or -1. */
static int read_once(struct priority *p, long *left, size_t batch)
{
    size_t order[CONF_STREAMS_MAX];
    priority_order(p, order);
    for (size_t k = 0; k < p->n; k++) {
        size_t s = order[k];
        if (left[s] == 0)
            continue;
        size_t got = left[s] < 0 || (size_t)left[s] > batch ? batch : (size_t)left[s];
        if (left[s] > 0)
            left[s] -= (long)got;
        priority_charge(p, order, k + 1, got);
        return (int)s;
    }
    priority_charge(p, order, p->n, 0);
    return -1;
}

static void test_strict_takes_the_first_with_entries(void **state)
{
    (void)state;
    struct pool_conf pool;
    struct priority p;
    pool_with(&pool, PRIORITY_STRICT, NULL, 4);
    priority_init(&p, &pool);
    long left[4] = { 25, 0, 7, -1 };
    int served[8];
    for (int i = 0; i < 8; i++)
        served[i] = read_once(&p, left, 10);
    int want[8] = { 0, 0, 0, 2, 3, 3, 3, 3 };
    assert_memory_equal(served, want, sizeof want);
}

/* Shards (stream = name{A..B}) are read as equals: with all full, each is served in turn. */
static void test_shards_take_turns(void **state)
{
    (void)state;
    struct pool_conf pool;
    struct priority p;
    pool_with(&pool, PRIORITY_STRICT, NULL, 4);
    pool.sharded = true;
    priority_init(&p, &pool);
    long left[4] = { -1, -1, -1, -1 };
    int count[4] = { 0 };
    for (int i = 0; i < 400; i++)
        count[read_once(&p, left, 10)]++;
    for (int k = 0; k < 4; k++)
        assert_int_equal(count[k], 100);
}

/* Four streams always full, weights 8 4 2 1, batches of 10: 10,000 entries shared within 1%. */
static void test_weighted_shares_follow_the_weights(void **state)
{
    (void)state;
    int w[4] = { 8, 4, 2, 1 };
    size_t batches[3] = { 1, 10, 7 };
    for (size_t b = 0; b < 3; b++) {
        struct pool_conf pool;
        struct priority p;
        pool_with(&pool, PRIORITY_WEIGHTED, w, 4);
        priority_init(&p, &pool);
        long left[4] = { -1, -1, -1, -1 };
        long taken[4] = { 0 };
        long total = 0;
        while (total < 10000) {
            int s = read_once(&p, left, batches[b]);
            assert_true(s >= 0);
            taken[s] += (long)batches[b];
            total += (long)batches[b];
        }
        for (int i = 0; i < 4; i++) {
            double want = (double)total * w[i] / 15.0;
            if (taken[i] < want * 0.99 - (double)batches[b] || taken[i] > want * 1.01 + (double)batches[b])
                fail_msg("batch %zu: stream %d took %ld of %ld, want about %.0f", batches[b], i, taken[i], total, want);
        }
    }
}

/* A stream of weight 1 among heavy ones is served within a round of the weights. */
static void test_weighted_nothing_starves(void **state)
{
    (void)state;
    int w[3] = { 1000, 1000, 1 };
    struct pool_conf pool;
    struct priority p;
    pool_with(&pool, PRIORITY_WEIGHTED, w, 3);
    priority_init(&p, &pool);
    long left[3] = { -1, -1, -1 };
    int last = -1;
    for (int i = 0; i < 2001; i++)
        if (read_once(&p, left, 1) == 2)
            last = i;
    assert_true(last >= 0);
}

/* A stream empty for a long while, then full, takes its share, not everything. */
static void test_weighted_no_burst_after_idle(void **state)
{
    (void)state;
    int w[2] = { 1, 1 };
    struct pool_conf pool;
    struct priority p;
    pool_with(&pool, PRIORITY_WEIGHTED, w, 2);
    priority_init(&p, &pool);
    long left[2] = { -1, 0 };
    for (int i = 0; i < 1000; i++)
        assert_int_equal(read_once(&p, left, 10), 0);
    left[1] = -1;
    long taken[2] = { 0 };
    for (int i = 0; i < 100; i++)
        taken[read_once(&p, left, 10)]++;
    assert_true(taken[0] >= 45 && taken[0] <= 55);
    /* and the other way round: the first idle, the second served alone */
    left[0] = 0;
    for (int i = 0; i < 1000; i++)
        assert_int_equal(read_once(&p, left, 10), 1);
    left[0] = -1;
    taken[0] = taken[1] = 0;
    for (int i = 0; i < 100; i++)
        taken[read_once(&p, left, 10)]++;
    assert_true(taken[0] >= 45 && taken[0] <= 55);
    /* all empty: nothing served, nothing broken */
    left[0] = left[1] = 0;
    assert_int_equal(read_once(&p, left, 10), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strict_takes_the_first_with_entries),
        cmocka_unit_test(test_shards_take_turns),
        cmocka_unit_test(test_weighted_shares_follow_the_weights),
        cmocka_unit_test(test_weighted_nothing_starves),
        cmocka_unit_test(test_weighted_no_burst_after_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
