/* Redis Cluster's pure parts (common/cluster.c): CRC16 and the slot of a key with its hash tag
 * (checked against CLUSTER KEYSLOT of a real redis-server 7.0.15), the key of each of our
 * commands, the CLUSTER SLOTS reply as it comes through our reader, the MOVED/ASK/TRYAGAIN/
 * CLUSTERDOWN errors, and the redis-cluster:// address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/cluster.h"
#include "common/conf.h"
#include "common/redis.h"

static unsigned slot_of(const char *key)
{
    return cluster_keyslot(key, strlen(key));
}

static void crc16_and_slots_match_a_real_server(void **state)
{
    (void)state;
    assert_int_equal(cluster_crc16("123456789", 9), 0x31C3);
    /* redis-cli cluster keyslot KEY, redis-server 7.0.15 */
    assert_int_equal(slot_of("123456789"), 12739);
    assert_int_equal(slot_of("foo"), 12182);
    assert_int_equal(slot_of("bar"), 5061);
    assert_int_equal(slot_of(""), 0);
    assert_int_equal(slot_of("{user1000}.following"), 3443);
    assert_int_equal(slot_of("{user1000}.followers"), 3443);
    assert_int_equal(slot_of("foo{}{bar}"), 8363);      /* an empty tag: the whole key */
    assert_int_equal(slot_of("foo{{bar}}zap"), 4015);   /* the tag is "{bar" */
    assert_int_equal(slot_of("foo{bar}{zap}"), 5061);   /* the first tag only: "bar" */
    assert_int_equal(slot_of("a{b"), 13340);            /* unclosed: the whole key */
    /* a pool's keys all share its stream's tag */
    assert_int_equal(slot_of("{events}"), 9102);
    assert_int_equal(slot_of("{events}:dlq"), 9102);
    assert_int_equal(slot_of("{events}:{events}-group:done:1-0"), 9102);
    assert_true(cluster_has_tag("{events}", 8));
    assert_true(cluster_has_tag("x{a}y", 5));
    assert_false(cluster_has_tag("events", 6));
    assert_false(cluster_has_tag("ev{}x", 5));
    assert_false(cluster_has_tag("ev{x", 4));
}

static int key_of(int argc, const char **argv)
{
    size_t len[16];
    for (int i = 0; i < argc; i++)
        len[i] = strlen(argv[i]);
    return cluster_key_index(argc, argv, len);
}

static void each_command_is_routed_by_its_key(void **state)
{
    (void)state;
    const char *xread[] = { "XREADGROUP", "GROUP", "g", "c", "COUNT", "10", "BLOCK", "100", "STREAMS", "{s}", ">" };
    assert_int_equal(key_of(11, xread), 9);
    const char *xread_bad[] = { "XREADGROUP", "GROUP", "g", "c", "STREAMS" };
    assert_int_equal(key_of(5, xread_bad), -1);
    const char *eval[] = { "EVAL", "return 1", "2", "{s}", "{s}:dlq", "arg" };
    assert_int_equal(key_of(6, eval), 3);
    const char *eval0[] = { "EVAL", "return 1", "0" };
    assert_int_equal(key_of(3, eval0), -1);
    const char *xinfo[] = { "XINFO", "GROUPS", "{s}" };
    assert_int_equal(key_of(3, xinfo), 2);
    const char *xgroup[] = { "xgroup", "CREATE", "{s}", "g", "$", "MKSTREAM" };
    assert_int_equal(key_of(6, xgroup), 2);
    const char *xack[] = { "XACK", "{s}", "g", "1-0" };
    assert_int_equal(key_of(4, xack), 1);
    const char *set[] = { "SET", "{s}:g:done:1-0", "1", "PX", "1000" };
    assert_int_equal(key_of(5, set), 1);
    const char *ping[] = { "PING" };
    assert_int_equal(key_of(1, ping), -1);
    const char *config[] = { "CONFIG", "GET", "appendonly" };
    assert_int_equal(key_of(3, config), -1);
    const char *multi[] = { "MULTI" };
    assert_int_equal(key_of(1, multi), -1);
}

/* Feed RESP through the client's real read path and keep a copy of the reply. */
static void keep(void *arg, const struct redis_reply *v)
{
    *(struct redis_reply **)arg = redis_reply_dup(v);
}

static struct redis_reply *parse(const char *resp)
{
    struct redis *r = redis_open_detached(0);
    struct redis_reply *v = NULL;
    assert_int_equal(redis_feed_detached(r, resp, strlen(resp), 1, keep, &v), 1);
    redis_free(r);
    return v;
}

static void slot_maps_are_parsed_and_bad_ones_refused(void **state)
{
    (void)state;
    /* two ranges, each with a master and a replica (id, and Redis 7's metadata map) */
    struct redis_reply *v = parse("*2\r\n"
                                  "*4\r\n:0\r\n:5460\r\n"
                                  "*4\r\n$9\r\n127.0.0.1\r\n:7000\r\n$3\r\nabc\r\n*0\r\n"
                                  "*3\r\n$9\r\n127.0.0.1\r\n:7003\r\n$3\r\ndef\r\n"
                                  "*3\r\n:5461\r\n:16383\r\n"
                                  "*3\r\n$0\r\n\r\n:7001\r\n$3\r\nghi\r\n");
    struct cluster_range *rg;
    size_t n;
    assert_int_equal(cluster_parse_slots(v, &rg, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(rg[0].lo, 0);
    assert_int_equal(rg[0].hi, 5460);
    assert_string_equal(rg[0].host, "127.0.0.1");
    assert_int_equal(rg[0].port, 7000);
    assert_int_equal(rg[1].lo, 5461);
    assert_int_equal(rg[1].hi, 16383);
    assert_string_equal(rg[1].host, "");        /* "": the node that answered */
    assert_int_equal(rg[1].port, 7001);
    free(rg);
    redis_reply_free(v);

    static const char *const bad[] = {
        "+OK\r\n",                                              /* not an array */
        "*1\r\n:5\r\n",                                         /* a range that is not one */
        "*1\r\n*3\r\n:10\r\n:5\r\n*2\r\n$1\r\nh\r\n:1\r\n",    /* hi < lo */
        "*1\r\n*3\r\n:0\r\n:16384\r\n*2\r\n$1\r\nh\r\n:1\r\n", /* past the last slot */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$1\r\nh\r\n:0\r\n",     /* port 0 */
        "*1\r\n*3\r\n:0\r\n:1\r\n*2\r\n$3\r\na b\r\n:1\r\n",   /* a host with a space */
        "*1\r\n*3\r\n:0\r\n:1\r\n*1\r\n$1\r\nh\r\n",           /* no port */
        "*1\r\n*3\r\n:0\r\n:1\r\n$1\r\nh\r\n",                 /* the master is no array */
        "-ERR This instance has cluster support disabled\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        v = parse(bad[i]);
        assert_int_equal(cluster_parse_slots(v, &rg, &n), -1);
        assert_null(rg);
        redis_reply_free(v);
    }
}

static enum cluster_redirect redirect(const char *s, unsigned *slot, char *host, int *port)
{
    return cluster_parse_redirect(s, strlen(s), slot, host, CLUSTER_HOST_MAX, port);
}

static void redirections_are_parsed_and_malformed_ones_ignored(void **state)
{
    (void)state;
    unsigned slot = 0;
    char host[CLUSTER_HOST_MAX];
    int port = 0;
    assert_int_equal(redirect("MOVED 3999 127.0.0.1:6381", &slot, host, &port), CLUSTER_R_MOVED);
    assert_int_equal(slot, 3999);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 6381);
    assert_int_equal(redirect("ASK 16383 ::1:7002", &slot, host, &port), CLUSTER_R_ASK);
    assert_int_equal(slot, 16383);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 7002);
    assert_int_equal(redirect("MOVED 12 :7000", &slot, host, &port), CLUSTER_R_MOVED);
    assert_string_equal(host, "");
    assert_int_equal(redirect("TRYAGAIN Multiple keys request during rehashing of slot", &slot, host, &port),
                     CLUSTER_R_TRYAGAIN);
    assert_int_equal(redirect("CLUSTERDOWN The cluster is down", &slot, host, &port), CLUSTER_R_CLUSTERDOWN);
    static const char *const other[] = {
        "MOVED", "MOVED 16384 h:1", "MOVED x h:1", "MOVED 1 h", "MOVED 1 h:", "MOVED 1 h:0",
        "MOVED 1 h:65536", "MOVED 1 h:12a", "MOVED 1 a/b:1", "ASK 1", "MOVEDX 1 h:1",
        "ERR unknown command", "TRYAGAINX", "NOGROUP No such key",
    };
    for (size_t i = 0; i < sizeof other / sizeof other[0]; i++)
        assert_int_equal(redirect(other[i], &slot, host, &port), CLUSTER_R_NONE);
}

static void cluster_urls_parse_with_their_seeds(void **state)
{
    (void)state;
    struct redis_addr a;
    char err[256], disp[256];
    assert_int_equal(conf_parse_redis("redis-cluster://u:p%40ss@h1:7000,[::1]:7001,h3/", &a, err, sizeof err), 0);
    assert_true(a.cluster);
    assert_false(a.tls);
    assert_int_equal(a.nseeds, 3);
    assert_string_equal(a.seeds[0].host, "h1");
    assert_int_equal(a.seeds[0].port, 7000);
    assert_string_equal(a.seeds[1].host, "::1");
    assert_int_equal(a.seeds[2].port, 6379);
    assert_string_equal(a.user, "u");
    assert_string_equal(a.password, "p@ss");
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "redis-cluster://h1:7000,[::1]:7001,h3:6379/");
    conf_redis_release(&a);
    assert_int_equal(conf_parse_redis("rediss-cluster://h1:7000", &a, err, sizeof err), 0);
    assert_true(a.cluster && a.tls);
    conf_redis_release(&a);
    assert_int_equal(conf_parse_redis("redis-cluster:///", &a, err, sizeof err), -1);
    assert_int_equal(conf_parse_redis("redis-cluster://h1:7000/3", &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "database 0"));
    assert_int_equal(conf_parse_redis("redis-cluster://:secret@h1:99999/", &a, err, sizeof err), -1);
    assert_null(strstr(err, "secret"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc16_and_slots_match_a_real_server),
        cmocka_unit_test(each_command_is_routed_by_its_key),
        cmocka_unit_test(slot_maps_are_parsed_and_bad_ones_refused),
        cmocka_unit_test(redirections_are_parsed_and_malformed_ones_ignored),
        cmocka_unit_test(cluster_urls_parse_with_their_seeds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
