// links: supervisor/trim.c
/* test_trim.c: the MINID that trim = acked trims to, from the groups' figures, and the keys
 * trim and retain as the config reads them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/conf.h"
#include "supervisor/trim.h"
#include "tests/unit/scratch.h"

static struct trim_id id(const char *s)
{
    struct trim_id t;
    if (trim_id_parse(s, &t) != 0)
        fail_msg("trim_id_parse(\"%s\") failed", s);
    return t;
}

static struct trim_group caught_up(const char *last)
{
    return (struct trim_group){ .last_delivered = id(last) };
}

static struct trim_group behind(const char *last, const char *oldest_pending)
{
    return (struct trim_group){ .last_delivered = id(last), .pending = true, .oldest_pending = id(oldest_pending) };
}

/* The MINID for the groups as a string, or "none" when nothing may be trimmed. */
static const char *minid(const struct trim_group *g, size_t n, long long keep_from_ms)
{
    static char buf[48];
    struct trim_id m;
    if (!trim_minid(g, n, keep_from_ms, &m))
        return "none";
    trim_id_format(m, buf, sizeof buf);
    return buf;
}

static void test_ids_parse_and_compare(void **state)
{
    (void)state;
    struct trim_id t;
    assert_int_equal(trim_id_parse("1700000000000-5", &t), 0);
    assert_true(t.ms == 1700000000000ULL && t.seq == 5);
    assert_int_equal(trim_id_parse("0-0", &t), 0);
    assert_int_equal(trim_id_parse("18446744073709551614-18446744073709551614", &t), 0);
    const char *bad[] = { "", "5", "-1-0", "1--1", "1-", "1-2x", "x-1", "1-+2", "18446744073709551616-0",
                          "1 -2", NULL };
    for (int i = 0; bad[i]; i++)
        if (trim_id_parse(bad[i], &t) != -1)
            fail_msg("trim_id_parse accepted \"%s\"", bad[i]);
    assert_true(trim_id_cmp(id("2-0"), id("10-0")) < 0);    /* numbers, not strings */
    assert_true(trim_id_cmp(id("5-10"), id("5-9")) > 0);
    assert_int_equal(trim_id_cmp(id("5-9"), id("5-9")), 0);
}

/* No group: nobody tells what is needed, so nothing is trimmed. */
static void test_no_group_trims_nothing(void **state)
{
    (void)state;
    assert_string_equal(minid(NULL, 0, -1), "none");
    assert_string_equal(minid(NULL, 0, 1000), "none");
}

/* A group with nothing pending needs what comes after its last-delivered-id. */
static void test_caught_up_group_needs_what_follows_its_last_delivered(void **state)
{
    (void)state;
    struct trim_group g[] = { caught_up("100-3") };
    assert_string_equal(minid(g, 1, -1), "100-4");
    g[0] = caught_up("100-18446744073709551614");
    assert_string_equal(minid(g, 1, -1), "100-18446744073709551615");
}

/* A group with entries pending needs its oldest pending one, even far behind its reads. */
static void test_pending_entry_holds_the_trim(void **state)
{
    (void)state;
    struct trim_group g[] = { behind("500-0", "120-7") };
    assert_string_equal(minid(g, 1, -1), "120-7");
}

/* The slowest group decides, whichever way it is slow. */
static void test_slowest_group_decides(void **state)
{
    (void)state;
    struct trim_group g[] = { caught_up("900-0"), behind("800-0", "300-2"), caught_up("250-0") };
    assert_string_equal(minid(g, 3, -1), "250-1");
    g[2] = caught_up("950-0");
    assert_string_equal(minid(g, 3, -1), "300-2");
}

/* A group that read nothing yet (created at 0, last-delivered-id 0-0) needs every entry. */
static void test_group_at_zero_trims_nothing(void **state)
{
    (void)state;
    struct trim_group g[] = { caught_up("900-0"), caught_up("0-0") };
    assert_string_equal(minid(g, 2, -1), "none");
}

/* A group created with $ after the stream had entries starts at the top: what came before is
 * not its to read, and goes once the other groups are done with it. */
static void test_group_created_at_the_top_needs_only_what_follows(void **state)
{
    (void)state;
    struct trim_group g[] = { caught_up("700-0") };
    assert_string_equal(minid(g, 1, -1), "700-1");
}

/* retain keeps entries from keep_from_ms on, but never lets more go than the groups allow. */
static void test_retain_keeps_recent_history(void **state)
{
    (void)state;
    struct trim_group g[] = { caught_up("5000-0") };
    assert_string_equal(minid(g, 1, 3000), "3000-0");        /* retain holds it back */
    assert_string_equal(minid(g, 1, 9000), "5000-1");        /* the group holds it back */
    assert_string_equal(minid(g, 1, 0), "none");             /* retain longer than the epoch */
    struct trim_group p[] = { behind("5000-0", "2000-1") };
    assert_string_equal(minid(p, 1, 3000), "2000-1");
}

/* ---- the keys ---- */

#define FLEET "[fleet]\nredis = redis://127.0.0.1:6379\n"
#define POOL  "[pool:p]\nstream = s\ngroup = g\nhandler = log\n"

/* Load text; expect exactly one problem, "PATH:line: ...sub...". */
static void expect_only(const char *text, int line, const char *sub)
{
    char *path = scratch_write(text);
    struct conf_errors e = { NULL, 0 };
    struct conf *c = conf_load(path, &e);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    if (c != NULL || e.n != 1 || strncmp(e.msg[0], prefix, strlen(prefix)) != 0 || strstr(e.msg[0], sub) == NULL) {
        for (size_t i = 0; i < e.n; i++)
            fprintf(stderr, "    %s\n", e.msg[i]);
        fail_msg("expected one problem at line %d containing \"%s\"", line, sub);
    }
    conf_free(c);
    conf_errors_release(&e);
    scratch_drop(path);
}

static void test_keys_round_trip(void **state)
{
    (void)state;
    char *path = scratch_write(FLEET POOL "trim = acked\nretain = 24h\n"
                            "[pool:q]\nstream = t\ngroup = g\nhandler = log\n");
    struct conf_errors e = { NULL, 0 };
    struct conf *c = conf_load(path, &e);
    assert_non_null(c);
    assert_true(c->pools[0].trim_acked);
    assert_int_equal(c->pools[0].retain_ms, 24L * 3600 * 1000);
    assert_false(c->pools[1].trim_acked);               /* off by default */
    assert_int_equal(c->pools[1].retain_ms, 0);
    conf_free(c);
    conf_errors_release(&e);
    scratch_drop(path);
}

static void test_bad_values_are_reported_at_their_line(void **state)
{
    (void)state;
    expect_only(FLEET POOL "trim = yes\n", 7, "trim");
    expect_only(FLEET POOL "trim = acked\nretain = soon\n", 8, "retain");
    expect_only(FLEET POOL "trim = acked\nretain = -1h\n", 8, "retain");
    expect_only(FLEET POOL "trim = acked\nretain = 400d\n", 8, "retain");
    expect_only(FLEET POOL "retain = 1h\n", 7, "retain only applies with trim = acked");
    expect_only(FLEET POOL "trim = off\nretain = 1h\n", 8, "retain only applies with trim = acked");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_parse_and_compare),
        cmocka_unit_test(test_no_group_trims_nothing),
        cmocka_unit_test(test_caught_up_group_needs_what_follows_its_last_delivered),
        cmocka_unit_test(test_pending_entry_holds_the_trim),
        cmocka_unit_test(test_slowest_group_decides),
        cmocka_unit_test(test_group_at_zero_trims_nothing),
        cmocka_unit_test(test_group_created_at_the_top_needs_only_what_follows),
        cmocka_unit_test(test_retain_keeps_recent_history),
        cmocka_unit_test(test_keys_round_trip),
        cmocka_unit_test(test_bad_values_are_reported_at_their_line),
    };
    unsetenv("STREAMFLEET_REDIS");
    return cmocka_run_group_tests(tests, NULL, NULL);
}
