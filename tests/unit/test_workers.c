// links: supervisor/metrics.c child/ledger.c
/* test_workers.c: the per-worker figures of the status page: what a worker holds crosses the
 * scoreboard whole or not at all, the ledger keeps since when an entry is held, quantiles come
 * out of histogram buckets as Prometheus computes them, and /status.json lists each worker
 * with its text escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "child/ledger.h"
#include "common/sb.h"
#include "supervisor/view.h"

static void held_crosses_the_scoreboard(void **state)
{
    (void)state;
    struct sb sb;
    assert_int_equal(sb_open(&sb, 1), 0);
    struct sb_held_copy in = { .count = 11, .n = 2 }, out;
    in.id[0].ms = 1700000000000ull;
    in.id[0].n = 3;
    in.id[0].since_unix_ms = 42;
    in.id[1].ms = 1700000000001ull;
    in.id[1].since_unix_ms = 43;
    sb_set_held(&sb.slot[0], &in);
    assert_int_equal(sb_get_held(&sb.slot[0], &out), 0);
    assert_int_equal(out.count, 11);
    assert_int_equal(out.n, 2);
    assert_memory_equal(out.id, in.id, 2 * sizeof in.id[0]);
    /* a child killed in the middle of writing leaves seq odd: nothing is taken */
    atomic_fetch_add(&sb.slot[0].held.seq, 1);
    assert_int_equal(sb_get_held(&sb.slot[0], &out), -1);
    assert_int_equal(out.count, 0);
    assert_int_equal(out.n, 0);
    /* and a reset slot holds nothing */
    sb_slot_reset(&sb.slot[0]);
    assert_int_equal(sb_get_held(&sb.slot[0], &out), 0);
    assert_int_equal(out.count, 0);
    sb_close(&sb);
}

static void ledger_keeps_since_when_an_entry_is_held(void **state)
{
    (void)state;
    struct ledger l;
    ledger_init(&l);
    struct ledger_rec *r = ledger_add(&l, "5-1", LEDGER_IN_HANDLER);
    assert_int_equal(r->held_ms, 0);
    r->held_ms = 1234;
    ledger_schedule(&l, r, LEDGER_RETRY_DUE, 99);
    /* delivered again to the same worker: the record restarts, the worker held it all along */
    r = ledger_add(&l, "5-1", LEDGER_IN_HANDLER);
    assert_int_equal(r->held_ms, 1234);
    assert_int_equal(r->attempt, 0);
    ledger_del(&l, "5-1");
    r = ledger_add(&l, "5-1", LEDGER_IN_HANDLER);
    assert_int_equal(r->held_ms, 0);
    ledger_release(&l);
}

static void quantiles_interpolate_within_a_bucket(void **state)
{
    (void)state;
    uint64_t c[SB_NBUCKETS] = { 0 };
    assert_true(metrics_quantile(c, sb_bucket_le, SB_NBUCKETS, 0.5) < 0);
    c[9] = 100;                                     /* (0.25, 0.5] */
    assert_float_equal(metrics_quantile(c, sb_bucket_le, SB_NBUCKETS, 0.5), 0.375, 1e-9);
    assert_float_equal(metrics_quantile(c, sb_bucket_le, SB_NBUCKETS, 0.99), 0.4975, 1e-9);
    c[0] = 100;                                     /* (0, 0.0005] */
    assert_float_equal(metrics_quantile(c, sb_bucket_le, SB_NBUCKETS, 0.5), 0.0005, 1e-9);
    assert_float_equal(metrics_quantile(c, sb_bucket_le, SB_NBUCKETS, 0.99), 0.495, 1e-9);
    memset(c, 0, sizeof c);
    c[SB_NBUCKETS - 1] = 1;                         /* +Inf: the highest finite bound */
    assert_float_equal(metrics_quantile(c, sb_bucket_le, SB_NBUCKETS, 0.99), 30, 1e-9);
}

static void status_json_lists_each_worker(void **state)
{
    (void)state;
    struct pool_view pool;
    memset(&pool, 0, sizeof pool);
    pool.name = "emails";
    pool.workers_live = 1;
    pool.workers_expected = 2;
    pool.nhistory = 2;
    pool.p50[0] = -1;
    pool.p99[0] = -1;
    pool.p50[1] = 0.25f;
    pool.p99[1] = 0.5f;
    struct worker_view w[2];
    memset(w, 0, sizeof w);
    w[0] = (struct worker_view){ .pool = "emails", .slot = 0, .pid = 4242, .generation = 3, .state = "running",
                                 .uptime = 12.5, .handled = 7, .acked = 6, .inflight = 1, .rss_bytes = 8192,
                                 .error_time = 1700000001, .restarts = 2 };
    w[0].held.count = 9;
    w[0].held.n = 2;
    w[0].held.id[0].ms = 1699999990000ull;
    w[0].held.id[0].since_unix_ms = 1699999995000ull;
    w[0].held.id[1].ms = 1699999990000ull;
    w[0].held.id[1].n = 1;
    w[0].held.id[1].since_unix_ms = 1699999998000ull;
    snprintf(w[0].error, sizeof w[0].error, "1-0: \"bad\"\n<b>");
    w[1] = (struct worker_view){ .pool = "emails", .slot = 1, .state = "restarting", .restarts = 5 };
    struct fleet_view v = { .version = "9.9", .redis_up = true, .redis_durable = 1, .now = 1700000000,
                            .pools = &pool, .npools = 1, .workers = w, .nworkers = 2 };
    struct buf out = BUF_INIT;
    status_render(&out, &v);
    assert_non_null(strstr(out.p, "\"worker_counts\":{\"running\":1,\"starting\":0,\"draining\":0,\"expected\":2,\"canary\":0},"
                                  "\"workers\":[{\"slot\":0,\"pid\":4242,\"generation\":3,\"state\":\"running\","
                                  "\"restarts\":2,\"uptime\":12.500,\"handled\":7,\"acked\":6,\"inflight\":1,"
                                  "\"held\":9,\"held_oldest\":{\"id\":\"1699999990000-0\",\"age\":5.000},"
                                  "\"held_ids\":[{\"id\":\"1699999990000-0\",\"age\":5.000},"
                                  "{\"id\":\"1699999990000-1\",\"age\":2.000}],\"rss_bytes\":8192,"
                                  "\"last_error\":{\"time\":1700000001.000,\"error\":\"1-0: \\\"bad\\\"\\n<b>\"}}"));
    assert_non_null(strstr(out.p, "{\"slot\":1,\"pid\":null,\"generation\":0,\"state\":\"restarting\","
                                  "\"restarts\":5,\"uptime\":null"));
    assert_non_null(strstr(out.p, "\"latency\":{\"p50\":[null,0.250000],\"p99\":[null,0.500000]}"));
    buf_release(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(held_crosses_the_scoreboard),
        cmocka_unit_test(ledger_keeps_since_when_an_entry_is_held),
        cmocka_unit_test(quantiles_interpolate_within_a_bucket),
        cmocka_unit_test(status_json_lists_each_worker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
