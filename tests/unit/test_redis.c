/* The Redis client's pure parts: the reply arena, error classification, the read path
 * (hiredis's reader building our replies, dispatched in order, the per-reply byte bound, bad
 * input) and the rediss:// address with its TLS keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/arena.h"
#include "common/conf.h"
#include "common/redis.h"

/* ---- the arena ---- */

static void arena_hands_out_aligned_zeroed_memory_and_resets_in_one_step(void **state)
{
    (void)state;
    struct arena a = ARENA_INIT;
    for (int i = 0; i < 1000; i++) {
        unsigned char *p = arena_alloc(&a, (size_t)(i % 37) + 1);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        for (int k = 0; k < i % 37 + 1; k++)
            assert_int_equal(p[k], 0);
        memset(p, 0xab, (size_t)(i % 37) + 1);
    }
    assert_true(a.chunks > 1);
    arena_reset(&a);
    assert_int_equal(a.used, 0);
    assert_true(a.chunks <= 1);             /* the first, small chunk is kept */
    char *s = arena_strndup(&a, "ab\0cd", 5);
    assert_memory_equal(s, "ab\0cd", 6);
    arena_release(&a);
    assert_null(a.head);
}

static void arena_gives_a_big_chunk_back_at_reset(void **state)
{
    (void)state;
    struct arena a = ARENA_INIT;
    arena_alloc(&a, 10);
    arena_alloc(&a, 10 * ARENA_KEEP);
    arena_reset(&a);
    assert_int_equal(a.chunks, 1);
    arena_alloc(&a, 1);
    arena_release(&a);
    struct arena b = ARENA_INIT;
    arena_alloc(&b, 10 * ARENA_KEEP);       /* a first chunk too big to keep */
    arena_reset(&b);
    assert_int_equal(b.chunks, 0);
    arena_release(&b);
}

/* A worker reads replies of about one size, batch after batch: after a few resets the arena
 * must hold one chunk big enough for a whole reply and stop going to malloc (and, for chunks
 * of 128 KiB and more, to fresh mmaps and their page faults). */
static void arena_stops_allocating_for_replies_of_a_steady_size(void **state)
{
    (void)state;
    struct arena a = ARENA_INIT;
    size_t sizes[] = { 300 * 1024, 40 * 1024 };     /* batch 500 and batch 64 of 200-byte entries */
    for (size_t k = 0; k < 2; k++) {
        for (int round = 0; round < 4; round++) {
            for (size_t got = 0; got < sizes[k]; got += 48)
                arena_alloc(&a, 40);
            if (round == 3)
                assert_int_equal(a.chunks, 1);      /* the whole reply in the chunk kept */
            arena_reset(&a);
            assert_int_equal(a.used, 0);
            assert_int_equal(a.chunks, 1);
        }
    }
    arena_release(&a);
}

/* ---- classification ---- */

static void server_errors_are_classified_by_their_first_word(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        enum redis_errkind k;
    } cases[] = {
        { "NOGROUP No such key 'x' or consumer group 'g'", REDIS_E_NOGROUP },
        { "WRONGTYPE Operation against a key holding the wrong kind of value", REDIS_E_WRONGTYPE },
        { "OOM command not allowed when used memory > 'maxmemory'.", REDIS_E_OOM },
        { "BUSYGROUP Consumer Group name already exists", REDIS_E_BUSYGROUP },
        { "READONLY You can't write against a read only replica.", REDIS_E_READONLY },
        { "NOAUTH Authentication required.", REDIS_E_AUTH },
        { "WRONGPASS invalid username-password pair or user is disabled.", REDIS_E_AUTH },
        { "NOPERM this user has no permissions", REDIS_E_AUTH },
        { "NOSCRIPT No matching script.", REDIS_E_NOSCRIPT },
        { "ERR invalid password", REDIS_E_AUTH },
        { "ERR unknown command 'FOO'", REDIS_E_OTHER },
        { "NOGROUPS is not a word we know", REDIS_E_OTHER },
        { "OO", REDIS_E_OTHER },
        { "", REDIS_E_OTHER },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(redis_classify(cases[i].s, strlen(cases[i].s)), cases[i].k);
    assert_string_equal(redis_errkind_name(REDIS_E_TIMEOUT), "timeout");
    assert_string_equal(redis_errkind_name(REDIS_E_TOOBIG), "toobig");
}

/* ---- the read path ---- */

struct seen {
    int n;
    struct redis_reply *r[16];
};

static void keep(void *arg, const struct redis_reply *v)
{
    struct seen *s = arg;
    if (s->n < 16)
        s->r[s->n] = redis_reply_dup(v);
    s->n++;
}

static void seen_release(struct seen *s)
{
    for (int i = 0; i < s->n && i < 16; i++)
        redis_reply_free(s->r[i]);
    s->n = 0;
}

static void replies_of_every_type_reach_their_commands_in_order(void **state)
{
    (void)state;
    struct redis *r = redis_open_detached(0);
    struct seen s = { 0 };
    static const char in[] = "+OK\r\n"
                             "-NOGROUP No such key\r\n"
                             ":42\r\n"
                             "$5\r\nab\0cd\r\n"
                             "$-1\r\n"
                             "*2\r\n*2\r\n$4\r\nname\r\n$1\r\ng\r\n*0\r\n";
    assert_int_equal(redis_feed_detached(r, in, sizeof in - 1, 6, keep, &s), 6);
    assert_int_equal(s.n, 6);
    assert_int_equal(s.r[0]->type, REDIS_T_STATUS);
    assert_string_equal(s.r[0]->str, "OK");
    assert_int_equal(s.r[1]->type, REDIS_T_ERROR);
    assert_int_equal(s.r[1]->err, REDIS_E_NOGROUP);
    assert_int_equal(s.r[2]->integer, 42);
    assert_int_equal(s.r[3]->len, 5);
    assert_memory_equal(s.r[3]->str, "ab\0cd", 5);
    assert_int_equal(s.r[4]->type, REDIS_T_NIL);
    assert_int_equal(s.r[5]->elements, 2);
    assert_int_equal(s.r[5]->element[0]->elements, 2);
    assert_int_equal(s.r[5]->element[1]->elements, 0);
    const struct redis_reply *g = redis_reply_map_get(s.r[5]->element[0], "name");
    assert_non_null(g);
    assert_string_equal(g->str, "g");
    assert_null(redis_reply_map_get(s.r[5]->element[0], "nam"));
    seen_release(&s);
    redis_free(r);
}

static void a_reply_split_across_reads_is_dispatched_once_complete(void **state)
{
    (void)state;
    struct redis *r = redis_open_detached(0);
    struct seen s = { 0 };
    static const char in[] = "*3\r\n$3\r\nfoo\r\n:7\r\n*1\r\n$0\r\n\r\n";
    assert_int_equal(redis_feed_detached(r, in, 1, 1, keep, &s), 0);
    for (size_t i = 1; i < sizeof in - 2; i++)
        assert_int_equal(redis_feed_detached(r, in + i, 1, 0, keep, &s), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(redis_feed_detached(r, in + sizeof in - 2, 1, 0, keep, &s), 1);
    assert_int_equal(s.n, 1);
    assert_string_equal(s.r[0]->element[0]->str, "foo");
    assert_int_equal(s.r[0]->element[1]->integer, 7);
    assert_int_equal(s.r[0]->element[2]->element[0]->len, 0);
    seen_release(&s);
    redis_free(r);
}

static void a_reply_over_the_byte_bound_fails_its_command_as_toobig(void **state)
{
    (void)state;
    struct redis *r = redis_open_detached(1024);
    struct seen s = { 0 };
    char big[3000];
    int n = snprintf(big, sizeof big, "$2000\r\n");
    memset(big + n, 'x', 1500);
    /* two commands: the first gets TOOBIG, the one behind it only an io error */
    assert_int_equal(redis_feed_detached(r, big, (size_t)n + 1500, 2, keep, &s), -1);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.r[0]->type, REDIS_T_ERROR);
    assert_int_equal(s.r[0]->err, REDIS_E_TOOBIG);
    assert_int_equal(s.r[1]->err, REDIS_E_IO);
    assert_int_equal(redis_error_kind(r), REDIS_E_TOOBIG);
    assert_int_equal(redis_feed_detached(r, "+OK\r\n", 5, 1, keep, &s), -1);   /* closed */
    seen_release(&s);
    redis_free(r);

    /* an array header alone, asking for more element slots than the bound allows */
    r = redis_open_detached(1024);
    assert_int_equal(redis_feed_detached(r, "*100000\r\n", 9, 1, keep, &s), -1);
    assert_int_equal(s.r[0]->err, REDIS_E_TOOBIG);
    seen_release(&s);
    redis_free(r);

    /* the bound is in the server's bytes, not in what the objects take: 3,000 one-byte
     * strings are 21 KB of RESP (as an entry of many tiny fields is sized) but some 200 KB of
     * objects; fed in pieces, as reads come */
    r = redis_open_detached(32768);
    {
        size_t cap = 8 + 3000 * 7, len = 0;
        char *tiny = malloc(cap);
        assert_non_null(tiny);
        len += (size_t)sprintf(tiny, "*3000\r\n");
        for (int i = 0; i < 3000; i++)
            len += (size_t)sprintf(tiny + len, "$1\r\na\r\n");
        int got = 0;
        for (size_t off = 0; off < len; off += 4096)
            got += redis_feed_detached(r, tiny + off, len - off < 4096 ? len - off : 4096, off ? 0 : 1, keep, &s);
        assert_int_equal(got, 1);
        assert_int_equal(s.r[0]->type, REDIS_T_ARRAY);
        assert_int_equal(s.r[0]->elements, 3000);
        seen_release(&s);
        redis_free(r);
        /* and the same reply over a bound below its bytes, in pieces too, is refused */
        r = redis_open_detached(16384);
        int rc = 0;
        for (size_t off = 0; off < len && rc != -1; off += 4096)
            rc = redis_feed_detached(r, tiny + off, len - off < 4096 ? len - off : 4096, off ? 0 : 1, keep, &s);
        assert_int_equal(rc, -1);
        assert_int_equal(s.r[0]->err, REDIS_E_TOOBIG);
        seen_release(&s);
        redis_free(r);
        free(tiny);
    }

    /* below the bound, many replies in one read are fine: the bound is per reply */
    r = redis_open_detached(64);
    char many[600] = "";
    for (int i = 0; i < 50; i++)
        strcat(many, ":1\r\n+OK\r\n");
    assert_int_equal(redis_feed_detached(r, many, strlen(many), 100, keep, &s), 100);
    assert_int_equal(s.n, 100);
    seen_release(&s);
    redis_free(r);
}

/* A sentinel's answer: [host, port] or nil; anything else from the network is refused. */
static void sentinel_answers_are_checked_before_they_are_used(void **state)
{
    (void)state;
    struct redis *r = redis_open_detached(0);
    struct seen s = { 0 };
    static const char in[] = "*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6380\r\n"
                             "*2\r\n$3\r\n::1\r\n$5\r\n65535\r\n"
                             "*-1\r\n"
                             "*2\r\n$5\r\nh ost\r\n$1\r\n1\r\n"
                             "*2\r\n$1\r\nh\r\n$5\r\n65536\r\n"
                             "*2\r\n$1\r\nh\r\n:6379\r\n"
                             "*3\r\n$1\r\nh\r\n$1\r\n1\r\n$1\r\n1\r\n"
                             "*2\r\n$20\r\naaaaaaaaaaaaaaaaaaaa\r\n$1\r\n1\r\n";
    assert_int_equal(redis_feed_detached(r, in, sizeof in - 1, 8, keep, &s), 8);
    char host[16];
    int port = 0;
    assert_int_equal(redis_sentinel_addr(s.r[0], host, sizeof host, &port), 0);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6380);
    assert_int_equal(redis_sentinel_addr(s.r[1], host, sizeof host, &port), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 65535);
    for (int i = 2; i < 8; i++)         /* nil, a space, a port too big, an integer, 3, too long */
        assert_int_equal(redis_sentinel_addr(s.r[i], host, sizeof host, &port), -1);
    seen_release(&s);
    redis_free(r);
}

static void garbage_and_unasked_replies_drop_the_connection(void **state)
{
    (void)state;
    struct redis *r = redis_open_detached(0);
    struct seen s = { 0 };
    assert_int_equal(redis_feed_detached(r, "?what\r\n", 7, 1, keep, &s), -1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.r[0]->err, REDIS_E_PROTO);
    seen_release(&s);
    redis_free(r);

    r = redis_open_detached(0);
    assert_int_equal(redis_feed_detached(r, "+OK\r\n+OK\r\n", 10, 1, keep, &s), -1);
    assert_int_equal(s.n, 1);
    assert_int_equal(s.r[0]->type, REDIS_T_STATUS);
    assert_int_equal(redis_error_kind(r), REDIS_E_PROTO);
    seen_release(&s);
    redis_free(r);
}

static void a_client_that_cannot_connect_refuses_commands_and_says_why(void **state)
{
    (void)state;
    struct redis_addr a = { 0 };
    a.unix_path = "/nonexistent/streamfleet-test.sock";
    char err[400];
    assert_null(redis_connect_blocking(&a, 1000, err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/streamfleet-test.sock"));
}

/* ---- a real socket: a listener we play the server on ---- */

static int listen_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    unlink(path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 4), 0);
    return fd;
}

/* Drive the client for ms milliseconds (or until *stop), as an owner's poll loop would. */
static void drive(struct redis *r, long ms, const int *stop)
{
    long long end = redis_now_ms() + ms;
    while (redis_now_ms() < end && !(stop && *stop)) {
        struct pollfd p = { .fd = redis_fd(r), .events = redis_events(r) };
        long t = redis_timeout_ms(r, redis_now_ms());
        poll(&p, p.fd >= 0 ? 1 : 0, t < 0 || t > 20 ? 20 : (int)t);
        redis_run(r, p.fd >= 0 ? p.revents : 0, redis_now_ms());
    }
}

struct tally {
    int calls;
    int kinds[REDIS_E_OTHER + 1];
    char last[64];
};

static void count(void *arg, const struct redis_reply *v)
{
    struct tally *t = arg;
    t->calls++;
    t->kinds[v->type == REDIS_T_ERROR ? v->err : REDIS_E_NONE]++;
    snprintf(t->last, sizeof t->last, "%s", v->str ? v->str : "");
}

static void pipelined_replies_come_in_order_and_a_silent_server_times_out_every_command_once(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/sf-test-redis-%d.sock", (int)getpid());
    int lfd = listen_unix(path);
    struct redis_addr a = { 0 };
    a.unix_path = path;
    struct redis_opts o = { .backoff_min_ms = 300, .backoff_max_ms = 300 };
    struct redis *r = redis_open(&a, &o);
    struct tally t[3] = { { 0 } };
    for (int i = 0; i < 3; i++)
        assert_int_equal(redis_commandv(r, count, &t[i], 300, "PING", NULL), 0);
    assert_int_equal(redis_pending(r), 3);
    int sfd = accept(lfd, NULL, NULL);
    drive(r, 100, NULL);
    char in[256];
    ssize_t n = read(sfd, in, sizeof in);
    assert_true(n > 0);
    assert_non_null(memmem(in, (size_t)n, "PING", 4));
    /* the first two answered, in order; the third never is */
    assert_int_equal(write(sfd, "+ONE\r\n+TWO\r\n", 12), 12);
    drive(r, 100, NULL);
    assert_int_equal(t[0].calls, 1);
    assert_string_equal(t[0].last, "ONE");
    assert_string_equal(t[1].last, "TWO");
    assert_int_equal(t[2].calls, 0);
    drive(r, 2000, &t[2].calls);               /* until its deadline drops the connection */
    assert_int_equal(t[2].calls, 1);
    assert_int_equal(t[2].kinds[REDIS_E_TIMEOUT], 1);
    assert_int_equal(redis_fd(r), -1);          /* dropped: waiting to reconnect */
    assert_int_equal(redis_commandv(r, count, &t[0], 300, "PING", NULL), -1);
    long wait = redis_timeout_ms(r, redis_now_ms());
    assert_true(wait > 0 && wait <= 360);       /* 300 ms, jittered by 20% */
    close(sfd);
    struct pollfd lp = { .fd = lfd, .events = POLLIN };
    long long give_up = redis_now_ms() + 5000;  /* it reconnects by itself, after the backoff */
    while (poll(&lp, 1, 0) == 0 && redis_now_ms() < give_up)
        drive(r, 50, NULL);
    assert_true(lp.revents & POLLIN);
    sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);
    assert_int_equal(redis_commandv(r, count, &t[1], 1000, "PING", NULL), 0);
    close(sfd);                                 /* dropped with a command queued */
    drive(r, 200, NULL);
    assert_int_equal(t[1].calls, 2);
    assert_int_equal(t[1].kinds[REDIS_E_IO], 1);
    assert_int_equal(t[0].calls, 1);            /* never called twice */
    assert_int_equal(t[2].calls, 1);
    redis_free(r);
    close(lfd);
    unlink(path);
}

/* The formatter on the hot path (hiredis's sds form) writes the same binary-safe RESP as any:
 * empty, NUL-holding and CRLF-holding arguments, and many of them (an XACK of a batch). A
 * reply that arrives in two writes, the client reading in between (a short read ends its
 * turn), is dispatched once, when its second half comes. */
static void commands_go_out_as_exact_resp_and_a_reply_in_two_writes_is_dispatched_once(void **state)
{
    (void)state;
    char path[64];
    snprintf(path, sizeof path, "/tmp/sf-test-redis-fmt-%d.sock", (int)getpid());
    int lfd = listen_unix(path);
    struct redis_addr a = { 0 };
    a.unix_path = path;
    struct redis_opts o = { .backoff_min_ms = 300, .backoff_max_ms = 300 };
    struct redis *r = redis_open(&a, &o);
    const char *argv[40] = { "XACK", "", "a\0b", "\r\n" };
    size_t len[40] = { 4, 0, 3, 2 };
    char ids[36][24];
    for (int i = 4; i < 40; i++) {
        len[i] = (size_t)snprintf(ids[i - 4], sizeof ids[0], "%d-%d", 1700000000 + i, i);
        argv[i] = ids[i - 4];
    }
    struct tally t = { 0 };
    assert_int_equal(redis_command(r, 40, argv, len, count, &t, 2000), 0);
    char want[2048];
    size_t w = (size_t)snprintf(want, sizeof want, "*40\r\n");
    for (int i = 0; i < 40; i++) {
        w += (size_t)snprintf(want + w, sizeof want - w, "$%zu\r\n", len[i]);
        memcpy(want + w, argv[i], len[i]);
        w += len[i];
        memcpy(want + w, "\r\n", 2);
        w += 2;
    }
    int sfd = accept(lfd, NULL, NULL);
    assert_true(sfd >= 0);
    char in[2048];
    size_t got = 0;
    long long end = redis_now_ms() + 2000;
    while (got < w && redis_now_ms() < end) {
        drive(r, 20, NULL);
        struct pollfd sp = { .fd = sfd, .events = POLLIN };
        if (poll(&sp, 1, 0) == 1) {
            ssize_t n = read(sfd, in + got, sizeof in - got);
            assert_true(n > 0);
            got += (size_t)n;
        }
    }
    assert_int_equal(got, w);
    assert_memory_equal(in, want, w);
    assert_int_equal(write(sfd, ":3", 2), 2);
    drive(r, 100, NULL);
    assert_int_equal(t.calls, 0);
    assert_int_equal(write(sfd, "9\r\n", 3), 3);
    drive(r, 100, &t.calls);
    assert_int_equal(t.calls, 1);
    assert_int_equal(t.kinds[REDIS_E_NONE], 1);
    close(sfd);
    redis_free(r);
    close(lfd);
    unlink(path);
}

/* ---- the address ---- */

static void rediss_urls_parse_like_redis_urls_with_tls(void **state)
{
    (void)state;
    struct redis_addr a;
    char err[200], shown[300];
    assert_int_equal(conf_parse_redis("rediss://u:p%40ss@db.example.org:6380/2", &a, err, sizeof err), 0);
    assert_true(a.tls);
    assert_string_equal(a.host, "db.example.org");
    assert_int_equal(a.port, 6380);
    assert_int_equal(a.db, 2);
    assert_string_equal(a.user, "u");
    assert_string_equal(a.password, "p@ss");
    assert_string_equal(conf_redis_display(&a, shown, sizeof shown), "rediss://db.example.org:6380/2");
    conf_redis_release(&a);
    assert_int_equal(conf_parse_redis("redis://127.0.0.1", &a, err, sizeof err), 0);
    assert_false(a.tls);
    conf_redis_release(&a);
    assert_int_equal(conf_parse_redis("redisss://h", &a, err, sizeof err), -1);
    assert_int_equal(conf_parse_redis("rediss://", &a, err, sizeof err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arena_hands_out_aligned_zeroed_memory_and_resets_in_one_step),
        cmocka_unit_test(arena_gives_a_big_chunk_back_at_reset),
        cmocka_unit_test(arena_stops_allocating_for_replies_of_a_steady_size),
        cmocka_unit_test(server_errors_are_classified_by_their_first_word),
        cmocka_unit_test(replies_of_every_type_reach_their_commands_in_order),
        cmocka_unit_test(a_reply_split_across_reads_is_dispatched_once_complete),
        cmocka_unit_test(a_reply_over_the_byte_bound_fails_its_command_as_toobig),
        cmocka_unit_test(sentinel_answers_are_checked_before_they_are_used),
        cmocka_unit_test(garbage_and_unasked_replies_drop_the_connection),
        cmocka_unit_test(a_client_that_cannot_connect_refuses_commands_and_says_why),
        cmocka_unit_test(pipelined_replies_come_in_order_and_a_silent_server_times_out_every_command_once),
        cmocka_unit_test(commands_go_out_as_exact_resp_and_a_reply_in_two_writes_is_dispatched_once),
        cmocka_unit_test(rediss_urls_parse_like_redis_urls_with_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
