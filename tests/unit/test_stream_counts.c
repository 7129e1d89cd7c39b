// links: child/stream.c child/msg.c
/* test_stream_counts.c: matching XPENDING rows to a batch (stream_match_counts), the delivery
 * counts that become attempt numbers, and the numeric order of entry ids. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "child/stream.h"
#include "common/redis.h"

static struct str S(const char *p)
{
    return (struct str){ p, strlen(p) };
}

/* A batch of n messages with ids ids[0..n). */
static void batch(struct msg *m, const char *const *ids, size_t n)
{
    memset(m, 0, n * sizeof *m);
    for (size_t i = 0; i < n; i++)
        m[i].id = S(ids[i]);
}

static void test_rows_match_messages_one_to_one(void **state)
{
    (void)state;
    const char *ids[] = { "1-0", "1-1", "2-0" };
    struct msg m[3];
    batch(m, ids, 3);
    struct str rows[3] = { S("1-0"), S("1-1"), S("2-0") };
    long long cnt[3] = { 4, 5, 6 }, counts[3];
    stream_match_counts(m, 3, rows, cnt, 3, counts);
    assert_int_equal(counts[0], 4);
    assert_int_equal(counts[1], 5);
    assert_int_equal(counts[2], 6);
}

/* The defect: a row for an entry not in the batch (deleted from the stream, or another pending
 * entry of ours) ended the walk, and every later message counted as a first delivery. */
static void test_a_row_not_in_the_batch_does_not_end_the_walk(void **state)
{
    (void)state;
    const char *ids[] = { "100-0", "300-0", "500-0" };
    struct msg m[3];
    batch(m, ids, 3);
    struct str rows[5] = { S("100-0"), S("200-0"), S("300-0"), S("400-7"), S("500-0") };
    long long cnt[5] = { 2, 9, 3, 9, 7 }, counts[3];
    stream_match_counts(m, 3, rows, cnt, 5, counts);
    assert_int_equal(counts[0], 2);
    assert_int_equal(counts[1], 3);
    assert_int_equal(counts[2], 7);
}

static void test_a_message_without_a_row_gets_0(void **state)
{
    (void)state;
    const char *ids[] = { "1-0", "2-0", "3-0" };
    struct msg m[3];
    batch(m, ids, 3);
    struct str rows[2] = { S("1-5"), S("3-0") };
    long long cnt[2] = { 8, 4 }, counts[3];
    stream_match_counts(m, 3, rows, cnt, 2, counts);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 4);
}

/* Ids order by number, not by text: "9-0" comes before "10-0". */
static void test_ids_of_different_lengths_are_matched_in_numeric_order(void **state)
{
    (void)state;
    const char *ids[] = { "9-0", "10-0", "10-10" };
    struct msg m[3];
    batch(m, ids, 3);
    struct str rows[4] = { S("9-0"), S("9-5"), S("10-2"), S("10-10") };
    long long cnt[4] = { 1, 2, 3, 4 }, counts[3];
    stream_match_counts(m, 3, rows, cnt, 4, counts);
    assert_int_equal(counts[0], 1);
    assert_int_equal(counts[1], 0);
    assert_int_equal(counts[2], 4);
}

static void test_no_rows_and_rows_out_of_order_stay_in_bounds(void **state)
{
    (void)state;
    const char *ids[] = { "5-0", "6-0" };
    struct msg m[2];
    batch(m, ids, 2);
    long long counts[2] = { 99, 99 };
    stream_match_counts(m, 2, NULL, NULL, 0, counts);
    assert_int_equal(counts[0], 0);
    assert_int_equal(counts[1], 0);
    struct str rows[3] = { S("6-0"), S("5-0"), S("junk") };
    long long cnt[3] = { 3, 2, 1 };
    stream_match_counts(m, 2, rows, cnt, 3, counts);
    assert_int_equal(counts[0], 0);     /* passed over once 6-0 was matched: never wrong */
    assert_int_equal(counts[1], 3);
}

static void test_id_order(void **state)
{
    (void)state;
    struct str a = S("9-0"), b = S("10-0"), c = S("10-0"), d = S("18446744073709551615-18446744073709551615");
    struct str junk = S("abc"), nul = { "1-0\0x", 5 };
    assert_true(stream_id_cmp(&a, &b) < 0);
    assert_true(stream_id_cmp(&b, &a) > 0);
    assert_int_equal(stream_id_cmp(&b, &c), 0);
    assert_true(stream_id_cmp(&b, &d) < 0);
    assert_true(stream_id_cmp(&d, &junk) < 0);
    struct str one = S("1-0");
    assert_true(stream_id_cmp(&one, &nul) != 0);
    /* "MS" alone is MS-0: a group started at "0" compares equal to "0-0", before "0-1" */
    struct str zero = S("0"), zero0 = S("0-0"), zero1 = S("0-1"), ten = S("10");
    assert_int_equal(stream_id_cmp(&zero, &zero0), 0);
    assert_true(stream_id_cmp(&zero, &zero1) < 0);
    assert_int_equal(stream_id_cmp(&ten, &b), 0);
    struct str dash = S("1-"), lead = S("-1");
    assert_true(stream_id_cmp(&dash, &one) > 0);    /* not ids: after every id */
    assert_true(stream_id_cmp(&lead, &one) > 0);
}

/* ---- reading several streams ---- */

static struct redis_reply *R_str(const char *p)
{
    struct redis_reply *r = calloc(1, sizeof *r);
    r->type = REDIS_T_STRING;
    r->str = p;
    r->len = strlen(p);
    return r;
}

static struct redis_reply *R_arr(size_t n, ...)
{
    struct redis_reply *r = calloc(1, sizeof *r);
    r->type = REDIS_T_ARRAY;
    r->elements = n;
    r->element = calloc(n ? n : 1, sizeof *r->element);
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        r->element[i] = va_arg(ap, struct redis_reply *);
    va_end(ap);
    return r;
}

static void R_free(struct redis_reply *r)
{
    for (size_t i = 0; r->type == REDIS_T_ARRAY && i < r->elements; i++)
        R_free(r->element[i]);
    free(r->element);
    free(r);
}

/* A read of several streams brings a [key, entries] pair per stream that had entries: every
 * entry is taken, and each names its own stream. */
static void test_a_read_of_two_streams_names_each_entrys_stream(void **state)
{
    (void)state;
    struct redis_reply *r = R_arr(2,
        R_arr(2, R_str("ev:high"), R_arr(2, R_arr(2, R_str("1-0"), R_arr(2, R_str("a"), R_str("1"))),
                                            R_arr(2, R_str("2-0"), R_arr(4, R_str("a"), R_str("2"), R_str("b"), R_str("x"))))),
        R_arr(2, R_str("ev:low"), R_arr(1, R_arr(2, R_str("1-0"), R_arr(2, R_str("c"), R_str("3"))))));
    struct stream s;
    memset(&s, 0, sizeof s);
    s.key = "ev:high";
    assert_int_equal(stream_parse_read(&s, r), 0);
    assert_int_equal(s.n, 3);
    assert_string_equal(s.msgs[0].stream, "ev:high");
    assert_string_equal(s.msgs[1].stream, "ev:high");
    assert_string_equal(s.msgs[2].stream, "ev:low");
    assert_string_equal(s.msgs[2].id.p, "1-0");
    assert_int_equal(s.msgs[1].nf, 2);
    assert_string_equal(s.msgs[1].f[3].p, "x");
    assert_int_equal(s.msgs[2].nf, 1);
    assert_string_equal(s.msgs[2].f[0].p, "c");
    assert_string_equal(s.msgs[2].f[1].p, "3");
    /* a malformed second pair makes the reply an error */
    struct redis_reply *bad = R_arr(2, R_arr(2, R_str("ev:high"), R_arr(0)), R_str("junk"));
    assert_int_equal(stream_parse_read(&s, bad), -1);
    R_free(bad);
    R_free(r);
    free(s.msgs);
    free(s.fields);
    idlist_release(&s.vanished);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rows_match_messages_one_to_one),
        cmocka_unit_test(test_a_row_not_in_the_batch_does_not_end_the_walk),
        cmocka_unit_test(test_a_message_without_a_row_gets_0),
        cmocka_unit_test(test_ids_of_different_lengths_are_matched_in_numeric_order),
        cmocka_unit_test(test_no_rows_and_rows_out_of_order_stay_in_bounds),
        cmocka_unit_test(test_id_order),
        cmocka_unit_test(test_a_read_of_two_streams_names_each_entrys_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
