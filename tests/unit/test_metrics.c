// links: supervisor/metrics.c
/* Stats aggregation and rendering: slots fold into pool totals, /metrics is well-formed and
 * /health decides ok or degraded for the right reasons. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/sb.h"
#include "supervisor/view.h"

static struct sb sb;

static int setup(void **state)
{
    (void)state;
    return sb_open(&sb, 4);
}

static int teardown(void **state)
{
    (void)state;
    sb_close(&sb);
    return 0;
}

static void fold_adds_every_counter(void **state)
{
    (void)state;
    uint64_t totals[SB_NCOUNTERS] = { 0 };
    totals[SB_READ] = 100;                     /* retired children's share */
    sb_slot_reset(&sb.slot[0]);
    sb_slot_reset(&sb.slot[1]);
    sb_add(&sb.slot[0], SB_READ, 5);
    sb_add(&sb.slot[1], SB_READ, 7);
    sb_add(&sb.slot[1], SB_ACKED, 6);
    sb_fold(totals, &sb.slot[0]);
    sb_fold(totals, &sb.slot[1]);
    assert_int_equal(totals[SB_READ], 112);
    assert_int_equal(totals[SB_ACKED], 6);
    assert_int_equal(totals[SB_FAILED], 0);
}

static void reset_clears_a_slot(void **state)
{
    (void)state;
    sb_add(&sb.slot[2], SB_READ, 9);
    sb_observe(&sb.slot[2], SB_DUR_FIRST, 0.003);
    sb_slot_reset(&sb.slot[2]);
    uint64_t totals[SB_NCOUNTERS] = { 0 };
    sb_fold(totals, &sb.slot[2]);
    for (int i = 0; i < SB_NCOUNTERS; i++)
        assert_int_equal(totals[i], 0);
}

static void observe_picks_the_bucket(void **state)
{
    (void)state;
    sb_slot_reset(&sb.slot[3]);
    sb_observe(&sb.slot[3], SB_DUR_FIRST, 0.003);   /* le 0.005 */
    sb_observe(&sb.slot[3], SB_DUR_FIRST, 100);     /* +Inf */
    sb_observe(&sb.slot[3], SB_DUR_FIRST, 0.0001);  /* first bucket */
    assert_int_equal(sb.slot[3].c[SB_DUR_FIRST + 0], 1);
    assert_int_equal(sb.slot[3].c[SB_DUR_FIRST + 3], 1);
    assert_int_equal(sb.slot[3].c[SB_DUR_LAST], 1);
    assert_int_equal(sb.slot[3].c[SB_DUR_COUNT], 3);
    assert_int_equal(sb.slot[3].c[SB_DUR_SUM_US], 3000 + 100000000 + 100);
}

static void http_codes_have_their_own_counters(void **state)
{
    (void)state;
    assert_string_equal(sb_http_label[sb_http_index(0) - SB_HTTP_FIRST], "error");
    assert_string_equal(sb_http_label[sb_http_index(200) - SB_HTTP_FIRST], "200");
    assert_string_equal(sb_http_label[sb_http_index(422) - SB_HTTP_FIRST], "422");
    assert_string_equal(sb_http_label[sb_http_index(418) - SB_HTTP_FIRST], "4xx");
    assert_string_equal(sb_http_label[sb_http_index(599) - SB_HTTP_FIRST], "5xx");
    assert_string_equal(sb_http_label[sb_http_index(999) - SB_HTTP_FIRST], "other");
}

static struct pool_view pools[2];

static struct fleet_view make_view(void)
{
    memset(pools, 0, sizeof pools);
    pools[0].name = "emails";
    pools[0].workers_live = 4;
    pools[0].workers_expected = 4;
    pools[0].workers_starting = 1;
    pools[0].c[SB_READ] = 12;
    pools[0].c[SB_ACKED] = 11;
    pools[0].c[SB_DUR_FIRST + 2] = 3;
    pools[0].c[SB_DUR_FIRST + 5] = 2;
    pools[0].c[SB_DUR_COUNT] = 5;
    pools[0].c[SB_DUR_SUM_US] = 1500000;
    pools[1].name = "hooks";
    pools[1].workers_live = 2;
    pools[1].workers_expected = 2;
    pools[1].restarts = 3;
    pools[1].restarts_by[RESTART_SIGNAL] = 2;
    pools[1].restarts_by[RESTART_HEARTBEAT] = 1;
    struct fleet_view v = { .version = "9.9", .start_time = 1700000000.5, .redis_up = true,
                            .redis_durable = 1, .durability = "", .reloads_ok = 5, .reloads_failed = 2,
                            .pools = pools, .npools = 2 };
    return v;
}

static void metrics_show_pool_counters(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    struct buf out = BUF_INIT;
    metrics_render(&out, &v);
    assert_non_null(strstr(out.p, "streamfleet_messages_read_total{pool=\"emails\"} 12\n"));
    assert_non_null(strstr(out.p, "streamfleet_messages_acked_total{pool=\"emails\"} 11\n"));
    assert_non_null(strstr(out.p, "streamfleet_messages_read_total{pool=\"hooks\"} 0\n"));
    assert_non_null(strstr(out.p, "streamfleet_workers{pool=\"emails\",state=\"running\"} 3\n"));
    assert_non_null(strstr(out.p, "streamfleet_workers{pool=\"emails\",state=\"starting\"} 1\n"));
    assert_non_null(strstr(out.p, "streamfleet_workers{pool=\"emails\",state=\"draining\"} 0\n"));
    assert_non_null(strstr(out.p, "streamfleet_worker_restarts_total{pool=\"hooks\",reason=\"signal\"} 2\n"));
    assert_non_null(strstr(out.p, "streamfleet_worker_restarts_total{pool=\"hooks\",reason=\"heartbeat\"} 1\n"));
    assert_non_null(strstr(out.p, "streamfleet_worker_restarts_total{pool=\"hooks\",reason=\"exit\"} 0\n"));
    assert_non_null(strstr(out.p, "streamfleet_reloads_total{result=\"failed\"} 2\n"));
    assert_non_null(strstr(out.p, "streamfleet_build_info{version=\"9.9\"} 1\n"));
    assert_non_null(strstr(out.p, "# TYPE streamfleet_messages_read_total counter\n"));
    /* Buckets are cumulative; count equals the +Inf bucket; sum is in seconds. */
    assert_non_null(strstr(out.p, "streamfleet_handler_duration_seconds_bucket{pool=\"emails\",le=\"0.0025\"} 3\n"));
    assert_non_null(strstr(out.p, "streamfleet_handler_duration_seconds_bucket{pool=\"emails\",le=\"0.025\"} 5\n"));
    assert_non_null(strstr(out.p, "streamfleet_handler_duration_seconds_bucket{pool=\"emails\",le=\"+Inf\"} 5\n"));
    assert_non_null(strstr(out.p, "streamfleet_handler_duration_seconds_count{pool=\"emails\"} 5\n"));
    assert_non_null(strstr(out.p, "streamfleet_handler_duration_seconds_sum{pool=\"emails\"} 1.500000\n"));
    buf_release(&out);
}

static void health_ok_when_all_is_well(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 200);
    assert_non_null(strstr(out.p, "\"status\":\"ok\""));
    buf_release(&out);
}

/* A rolled-back reload is a warning the operator must see, not an outage: 200, with why. */
static void health_shows_a_rolled_back_reload_and_stays_ok(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    v.reloads_rolled_back = 1;
    v.last_reload = "rolled_back";
    v.last_reload_time = 1700000000.5;
    v.last_reload_reason = "pool h: canary failed 10 messages before 5 succeeded";
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 200);
    assert_non_null(strstr(out.p, "\"last_reload\":{\"result\":\"rolled_back\",\"time\":1700000000.500,"
                                  "\"reason\":\"pool h: canary failed 10 messages before 5 succeeded\"}"));
    buf_reset(&out);
    metrics_render(&out, &v);
    assert_non_null(strstr(out.p, "streamfleet_reloads_total{result=\"rolled_back\"} 1\n"));
    buf_reset(&out);
    status_render(&out, &v);
    assert_non_null(strstr(out.p, "\"rolled_back\":1}"));
    assert_non_null(strstr(out.p, "\"last_reload\":{\"result\":\"rolled_back\""));
    buf_release(&out);
}

static void health_degraded_without_redis(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    v.redis_up = false;
    v.redis_error = "Connection refused";
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 503);
    assert_non_null(strstr(out.p, "\"status\":\"degraded\""));
    assert_non_null(strstr(out.p, "redis unreachable: Connection refused"));
    buf_release(&out);
}

static void health_degraded_with_a_missing_worker(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    pools[1].workers_live = 1;
    pools[1].crash_loop = true;
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 503);
    assert_non_null(strstr(out.p, "pool hooks: crash loop (1 of 2 workers)"));
    buf_reset(&out);
    /* One pool at a time: the healthy one is ok on its own. */
    assert_int_equal(health_render(&out, &v, "emails"), 200);
    assert_null(strstr(out.p, "hooks"));
    buf_reset(&out);
    assert_int_equal(health_render(&out, &v, "nosuch"), 404);
    buf_release(&out);
}

static void health_short_of_workers_only_after_the_grace(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    pools[1].workers_live = 1;            /* starting up or just replaced: not yet degraded */
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 200);
    buf_reset(&out);
    pools[1].short_too_long = true;
    assert_int_equal(health_render(&out, &v, NULL), 503);
    assert_non_null(strstr(out.p, "pool hooks has 1 of 2 workers"));
    buf_release(&out);
}

static void health_degraded_over_max_lag_and_pending_age(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    pools[0].redis_known = true;
    pools[0].lag = 500;
    pools[0].oldest_pending_age = 10;
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 200);   /* no thresholds set */
    buf_reset(&out);
    pools[0].max_lag = 100;
    assert_int_equal(health_render(&out, &v, NULL), 503);
    assert_non_null(strstr(out.p, "lag 500 over max_lag 100"));
    buf_reset(&out);
    pools[0].max_lag = 0;
    pools[0].max_pending_age = 5;
    assert_int_equal(health_render(&out, &v, "emails"), 503);
    assert_non_null(strstr(out.p, "oldest pending entry 10 s old"));
    buf_reset(&out);
    pools[0].lag = -1;                     /* unknown lag never degrades */
    pools[0].max_lag = 100;
    pools[0].max_pending_age = 0;
    assert_int_equal(health_render(&out, &v, NULL), 200);
    buf_release(&out);
}

/* A pool of several streams: each stream's figures with a stream label, none for the pool
 * alone (a sum beside its parts would be counted twice by sum()); a pool of one: as ever. */
static void streams_of_a_pool_have_their_own_series(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    pools[0].redis_known = true;
    pools[0].pending = 5;
    pools[0].lag = 7;
    pools[1].redis_known = true;
    pools[1].pending = 9;
    pools[1].lag = -1;
    pools[1].nstreams = 2;
    pools[1].streams[0] = (struct stream_view){ "hi", 10, 4, 3, 1, 2.0 };
    pools[1].streams[1] = (struct stream_view){ "lo", 20, 5, -1, 0, 1.0 };
    struct buf out = BUF_INIT;
    metrics_render(&out, &v);
    assert_non_null(strstr(out.p, "streamfleet_group_pending{pool=\"emails\"} 5\n"));
    assert_non_null(strstr(out.p, "streamfleet_group_pending{pool=\"hooks\",stream=\"hi\"} 4\n"));
    assert_non_null(strstr(out.p, "streamfleet_group_pending{pool=\"hooks\",stream=\"lo\"} 5\n"));
    assert_null(strstr(out.p, "streamfleet_group_pending{pool=\"hooks\"}"));
    assert_non_null(strstr(out.p, "streamfleet_group_lag{pool=\"hooks\",stream=\"hi\"} 3\n"));
    assert_null(strstr(out.p, "streamfleet_group_lag{pool=\"hooks\",stream=\"lo\"}"));  /* unknown */
    assert_non_null(strstr(out.p, "streamfleet_stream_length{pool=\"hooks\",stream=\"lo\"} 20\n"));
    assert_non_null(strstr(out.p, "streamfleet_dlq_length{pool=\"hooks\",stream=\"hi\"} 1\n"));
    buf_release(&out);
}

/* Workers that cannot read their group (it cannot be created, the key is no stream) make the
 * pool degraded in /health and in streamfleet_pool_degraded alike. */
static void health_degraded_when_the_group_cannot_be_read(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    pools[1].stream = "in";
    pools[1].group = "hooks-group";
    pools[1].group_not_created = 1;
    struct buf out = BUF_INIT;
    assert_int_equal(health_render(&out, &v, NULL), 503);
    assert_non_null(strstr(out.p, "pool hooks: group hooks-group of stream in is missing and redis refuses to create it"));
    buf_reset(&out);
    metrics_render(&out, &v);
    assert_non_null(strstr(out.p, "streamfleet_pool_degraded{pool=\"hooks\"} 1\n"));
    assert_non_null(strstr(out.p, "streamfleet_pool_degraded{pool=\"emails\"} 0\n"));
    buf_reset(&out);
    pools[1].group_not_created = 0;
    pools[1].group_wrongtype = 2;
    assert_int_equal(health_render(&out, &v, "hooks"), 503);
    assert_non_null(strstr(out.p, "pool hooks: key in holds another type than a stream (WRONGTYPE)"));
    buf_reset(&out);
    pools[1].group_wrongtype = 0;
    assert_int_equal(health_render(&out, &v, NULL), 200);
    buf_release(&out);
}

/* An entry id in shared memory: 0-0 is "not known"; a reset slot knows none. */
static void entry_ids_in_slots(void **state)
{
    (void)state;
    uint64_t ms, n;
    sb_slot_reset(&sb.slot[4]);
    assert_int_equal(sb_id_get(&sb.slot[4].delivered, &ms, &n), -1);
    sb_id_set(&sb.slot[4].delivered, 1700000000123ULL, 7);
    assert_int_equal(sb_id_get(&sb.slot[4].delivered, &ms, &n), 0);
    assert_true(ms == 1700000000123ULL && n == 7);
    assert_int_equal(sb.slot[4].delivered.seq % 2, 0);
    sb_id_set(&sb.slot[4].seen, 5, 0);
    sb_slot_reset(&sb.slot[4]);
    assert_int_equal(sb_id_get(&sb.slot[4].delivered, &ms, &n), -1);
    assert_int_equal(sb_id_get(&sb.slot[4].seen, &ms, &n), -1);
}

static void status_json_has_pools_and_history(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    pools[0].redis_known = true;
    pools[0].stream_length = 42;
    pools[0].lag = -1;
    pools[0].oldest_pending_age = -1;
    pools[0].nhistory = 2;
    pools[0].history[0] = 1.5f;
    pools[0].history[1] = 3;
    pools[0].nerrors = 1;
    pools[0].errors[0].time = 1700000000;
    pools[0].errors[0].worker = 2;
    snprintf(pools[0].errors[0].text, sizeof pools[0].errors[0].text, "1-0: http_422 \"bad\"");
    struct buf out = BUF_INIT;
    status_render(&out, &v);
    assert_non_null(strstr(out.p, "\"status\":\"ok\""));
    assert_non_null(strstr(out.p, "\"stream_length\":42"));
    assert_non_null(strstr(out.p, "\"lag\":null"));
    assert_non_null(strstr(out.p, "\"oldest_pending_age\":null"));
    assert_non_null(strstr(out.p, "\"history\":[1.50,3.00]"));
    assert_non_null(strstr(out.p, "\"worker\":2,\"error\":\"1-0: http_422 \\\"bad\\\"\""));
    assert_non_null(strstr(out.p, "{\"name\":\"hooks\""));
    /* The hooks pool has never been polled: its Redis figures are unknown, not zero. */
    assert_non_null(strstr(strstr(out.p, "\"name\":\"hooks\""), "\"stream_length\":null"));
    buf_release(&out);
}

static void durability_is_shown(void **state)
{
    (void)state;
    struct fleet_view v = make_view();
    struct buf out = BUF_INIT;
    metrics_render(&out, &v);
    assert_non_null(strstr(out.p, "streamfleet_redis_durable 1\n"));
    buf_reset(&out);
    v.redis_durable = 0;
    v.durability = "appendonly is no: a redis crash can lose acknowledged messages";
    metrics_render(&out, &v);
    assert_non_null(strstr(out.p, "streamfleet_redis_durable 0\n"));
    buf_reset(&out);
    /* Not durable is a warning in the detail, not a reason to take the fleet out of service. */
    assert_int_equal(health_render(&out, &v, NULL), 200);
    assert_non_null(strstr(out.p, "\"durable\":false"));
    assert_non_null(strstr(out.p, "appendonly is no"));
    buf_reset(&out);
    v.redis_durable = -1;
    metrics_render(&out, &v);
    assert_null(strstr(out.p, "streamfleet_redis_durable"));
    buf_release(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fold_adds_every_counter),
        cmocka_unit_test(reset_clears_a_slot),
        cmocka_unit_test(observe_picks_the_bucket),
        cmocka_unit_test(http_codes_have_their_own_counters),
        cmocka_unit_test(metrics_show_pool_counters),
        cmocka_unit_test(health_ok_when_all_is_well),
        cmocka_unit_test(health_shows_a_rolled_back_reload_and_stays_ok),
        cmocka_unit_test(health_degraded_without_redis),
        cmocka_unit_test(health_degraded_with_a_missing_worker),
        cmocka_unit_test(durability_is_shown),
        cmocka_unit_test(health_short_of_workers_only_after_the_grace),
        cmocka_unit_test(health_degraded_over_max_lag_and_pending_age),
        cmocka_unit_test(status_json_has_pools_and_history),
        cmocka_unit_test(health_degraded_when_the_group_cannot_be_read),
        cmocka_unit_test(streams_of_a_pool_have_their_own_series),
        cmocka_unit_test(entry_ids_in_slots),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
