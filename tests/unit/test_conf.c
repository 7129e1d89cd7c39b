/* test_conf.c: loading and validating the INI config. Each test writes a file under /tmp, loads
 * it, and checks the result or the exact "FILE:LINE: message" of every problem. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/conf.h"
#include "tests/unit/scratch.h"

#define FLEET "[fleet]\nredis = redis://127.0.0.1:6379\n"
#define POOL  "[pool:p]\nstream = s\ngroup = g\nhandler = log\n"

/* ---- helpers ---- */

/* A loaded file: the path it was written to, the result and the problems. */
struct loaded {
    char *path;
    struct conf *c;
    struct conf_errors e;
};

static void load(struct loaded *ld, const char *text)
{
    ld->path = scratch_write(text);
    ld->e = (struct conf_errors){ NULL, 0 };
    ld->c = conf_load(ld->path, &ld->e);
    if (ld->c)
        assert_int_equal(ld->e.n, 0);
    else
        assert_true(ld->e.n > 0);
}

static void unload(struct loaded *ld)
{
    conf_free(ld->c);
    conf_errors_release(&ld->e);
    scratch_drop(ld->path);
}

static void dump(const struct conf_errors *e)
{
    fprintf(stderr, "  %zu problem(s):\n", e->n);
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    %s\n", e->msg[i]);
}

/* Index of the problem reported as "PATH:LINE: ...sub..." (line 0: "PATH: ...sub..."). */
static int find_err(const struct conf_errors *e, const char *path, int line, const char *sub)
{
    char prefix[300];
    if (line > 0)
        snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    else
        snprintf(prefix, sizeof prefix, "%s: ", path);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->msg[i], prefix, strlen(prefix)) == 0 && strstr(e->msg[i] + strlen(prefix), sub))
            return (int)i;
    return -1;
}

static void expect_err(const struct loaded *ld, int line, const char *sub)
{
    if (find_err(&ld->e, ld->path, line, sub) < 0) {
        dump(&ld->e);
        fail_msg("no problem reported at line %d containing \"%s\"", line, sub);
    }
}

static void expect_n(const struct loaded *ld, size_t n)
{
    if (ld->e.n != n) {
        dump(&ld->e);
        fail_msg("expected %zu problem(s), got %zu", n, ld->e.n);
    }
}

/* Load text; expect it to fail with exactly one problem, at line, containing sub. */
static void expect_only(const char *text, int line, const char *sub)
{
    struct loaded ld;
    load(&ld, text);
    assert_null(ld.c);
    expect_err(&ld, line, sub);
    expect_n(&ld, 1);
    unload(&ld);
}

static void no_secret(const struct conf_errors *e, const char *secret)
{
    for (size_t i = 0; i < e->n; i++)
        if (strstr(e->msg[i], secret)) {
            dump(e);
            fail_msg("a message contains the secret \"%s\"", secret);
        }
}

static int setup(void **state)
{
    (void)state;
    unsetenv("STREAMFLEET_REDIS");
    return 0;
}

/* ---- a good file ---- */

static void test_full_config_round_trip(void **state)
{
    (void)state;
    char *ca = scratch_write("ca\n"), *cert = scratch_write("cert\n"), *key = scratch_write("key\n"),
         *secret = scratch_write("s3cret\n");
    struct buf t = BUF_INIT;
    buf_printf(&t,
               "; every key, with values that are not the defaults\n"
               "[fleet]\n"
               "redis = redis://app:s3cr%%40t@[::1]:6380/2 ; the password is percent-encoded\n"
               "listen = 0.0.0.0:9200\n"
               "drain_timeout = 45s\n"
               "poll_interval = 250ms\n"
               "log_level = debug\n"
               "log_format = json\n"
               "\n"
               "[pool:emails]\n"
               "stream = emails\n"
               "group = mailers\n"
               "workers = 4\n"
               "batch = 50\n"
               "block = 1500ms\n"
               "handler = http\n"
               "url = https://hooks.example.com:8443/mail/{stream}/{id}?to={user.email}\n"
               "method = PUT\n"
               "body_field = payload\n"
               "content_type = text/plain; charset=utf-8\n"
               "header = X-Source: streamfleet\n"
               "header = Authorization:   Bearer t0k3n\n"
               "inflight = 64\n"
               "connect_timeout = 3s\n"
               "timeout = 1m\n"
               "tls_ca = %s\n"
               "tls_cert = %s\n"
               "tls_key = %s\n"
               "tls_verify = no\n"
               "signing_secret_file = %s\n"
               "id_field = event_id\n"
               "backoff_max = 10m\n"
               "\n"
               "[pool:audit]\n"
               "stream = audit\n"
               "group = g\n"
               "handler = noop\n"
               "workers = 256\n",
               ca, cert, key, secret);
    struct loaded ld;
    load(&ld, t.p);
    buf_release(&t);
    if (!ld.c)
        dump(&ld.e);
    assert_non_null(ld.c);
    const struct conf *c = ld.c;

    assert_string_equal(c->path, ld.path);
    assert_string_equal(c->redis.host, "::1");
    assert_null(c->redis.unix_path);
    assert_int_equal(c->redis.port, 6380);
    assert_int_equal(c->redis.db, 2);
    assert_string_equal(c->redis.user, "app");
    assert_string_equal(c->redis.password, "s3cr@t");
    assert_false(c->redis_from_env);
    assert_string_equal(c->listen_host, "0.0.0.0");
    assert_int_equal(c->listen_port, 9200);
    assert_int_equal(c->drain_timeout_ms, 45000);
    assert_int_equal(c->poll_interval_ms, 250);
    assert_int_equal(c->log_level, LOG_DEBUG);
    assert_int_equal(c->log_format, LOG_FORMAT_JSON);
    assert_int_equal(c->npools, 2);

    const struct pool_conf *p = conf_pool(c, "emails");
    assert_ptr_equal(p, &c->pools[0]);
    assert_string_equal(p->name, "emails");
    assert_int_equal(p->line, 10);
    assert_string_equal(p->stream, "emails");
    assert_string_equal(p->group, "mailers");
    assert_int_equal(p->workers, 4);
    assert_int_equal(p->batch, 50);
    assert_int_equal(p->block_ms, 1500);
    assert_int_equal(p->handler, HANDLER_HTTP);
    assert_string_equal(p->url, "https://hooks.example.com:8443/mail/{stream}/{id}?to={user.email}");
    assert_int_equal(p->method, HTTP_PUT);
    assert_string_equal(p->body_field, "payload");
    /* ';' not preceded by whitespace does not start a comment */
    assert_string_equal(p->content_type, "text/plain; charset=utf-8");
    assert_int_equal(p->nheaders, 2);
    assert_string_equal(p->headers[0], "X-Source: streamfleet");
    assert_string_equal(p->headers[1], "Authorization: Bearer t0k3n");
    assert_int_equal(p->inflight, 64);
    assert_int_equal(p->connect_timeout_ms, 3000);
    assert_int_equal(p->timeout_ms, 60000);
    assert_string_equal(p->tls_ca, ca);
    assert_string_equal(p->tls_cert, cert);
    assert_string_equal(p->tls_key, key);
    assert_false(p->tls_verify);
    assert_string_equal(p->signing_secret_file, secret);
    assert_string_equal(p->id_field, "event_id");
    assert_int_equal(p->backoff_max_ms, 600000);

    p = conf_pool(c, "audit");
    assert_ptr_equal(p, &c->pools[1]);
    assert_int_equal(p->line, 34);
    assert_string_equal(p->stream, "audit");
    assert_int_equal(p->handler, HANDLER_NOOP);
    assert_int_equal(p->workers, 256);
    assert_null(conf_pool(c, "nope"));

    char disp[128];
    assert_string_equal(conf_redis_display(&c->redis, disp, sizeof disp), "redis://[::1]:6380/2");
    unload(&ld);
    scratch_drop(ca);
    scratch_drop(cert);
    scratch_drop(key);
    scratch_drop(secret);
}

static void test_defaults(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, "[fleet]\nredis = redis://localhost\n[pool:p]\nstream = s\ngroup = g\nhandler = http\n"
              "url = http://127.0.0.1:8080/hook\n");
    assert_non_null(ld.c);
    const struct conf *c = ld.c;
    assert_string_equal(c->redis.host, "localhost");
    assert_int_equal(c->redis.port, 6379);
    assert_int_equal(c->redis.db, 0);
    assert_null(c->redis.user);
    assert_null(c->redis.password);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 9100);
    assert_int_equal(c->drain_timeout_ms, 30000);
    assert_int_equal(c->poll_interval_ms, 5000);
    assert_int_equal(c->log_level, LOG_INFO);
    assert_int_equal(c->log_format, LOG_FORMAT_TEXT);
    const struct pool_conf *p = &c->pools[0];
    assert_int_equal(p->workers, 1);
    assert_int_equal(p->batch, 10);
    assert_int_equal(p->block_ms, 2000);
    assert_int_equal(p->method, HTTP_POST);
    assert_null(p->body_field);
    assert_string_equal(p->content_type, "application/json");
    assert_int_equal(p->nheaders, 0);
    assert_null(p->headers);
    assert_int_equal(p->inflight, 16);
    assert_int_equal(p->connect_timeout_ms, 2000);
    assert_int_equal(p->timeout_ms, 30000);
    assert_null(p->tls_ca);
    assert_null(p->tls_cert);
    assert_null(p->tls_key);
    assert_true(p->tls_verify);
    assert_null(p->signing_secret_file);
    assert_null(p->id_field);
    assert_int_equal(p->backoff_max_ms, 3600000);
    unload(&ld);
}

static void test_listen_ipv6(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, "[fleet]\nredis = redis://r\nlisten = [::1]:9300\n" POOL);
    assert_non_null(ld.c);
    assert_string_equal(ld.c->listen_host, "::1");
    assert_int_equal(ld.c->listen_port, 9300);
    unload(&ld);
}

static void test_listen_bad(void **state)
{
    (void)state;
    const char *bad[][2] = {
        { "localhost:9100", "not a numeric IPv4" },
        { "::1:9100", "must be in brackets" },
        { "127.0.0.1", "must be address:port" },
        { "127.0.0.1:0", "port must be from 1 to 65535" },
        { "127.0.0.1:65536", "port must be from 1 to 65535" },
        { "127.0.0.1:http", "port must be" },
        { "[::1]9100", "must be [IPv6 address]:port" },
        { "[fe80::zz]:9100", "not a numeric IPv6" },
        { ":9100", "must be address:port" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf t = BUF_INIT;
        buf_printf(&t, "[fleet]\nredis = redis://r\nlisten = %s\n" POOL, bad[i][0]);
        expect_only(t.p, 3, bad[i][1]);
        buf_release(&t);
    }
}

static void test_bools_and_words(void **state)
{
    (void)state;
    const char *yes[] = { "yes", "true", "on", "1" }, *no[] = { "no", "false", "off", "0" };
    for (int i = 0; i < 4; i++) {
        for (int v = 0; v < 2; v++) {
            struct buf t = BUF_INIT;
            buf_printf(&t, FLEET "[pool:p]\nstream=s\ngroup=g\nhandler=http\nurl=http://h/\ntls_verify=%s\n",
                       v ? yes[i] : no[i]);
            struct loaded ld;
            load(&ld, t.p);
            buf_release(&t);
            assert_non_null(ld.c);
            assert_int_equal(ld.c->pools[0].tls_verify, v);
            unload(&ld);
        }
    }
    expect_only(FLEET "[pool:p]\nstream=s\ngroup=g\nhandler=http\nurl=http://h/\ntls_verify=Yes\n", 8,
                "tls_verify: must be one of");
    expect_only(FLEET "[pool:p]\nstream=s\ngroup=g\nhandler=http\nurl=http://h/\nmethod=GET\n", 8,
                "method: must be one of POST, PUT, PATCH (got 'GET')");
    expect_only("[fleet]\nredis=redis://r\nlog_level=verbose\n" POOL, 3, "log_level: must be one of");
    expect_only("[fleet]\nredis=redis://r\nlog_format=xml\n" POOL, 3, "log_format: must be one of text, json");
}

/* ---- Redis addresses ---- */

static void test_redis_urls(void **state)
{
    (void)state;
    struct redis_addr a;
    char err[200], disp[200];

    assert_int_equal(conf_parse_redis("redis://h", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "h");
    assert_int_equal(a.port, 6379);
    assert_int_equal(a.db, 0);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "redis://h:6379/0");
    conf_redis_release(&a);

    assert_int_equal(conf_parse_redis("redis://:pw@10.0.0.1:7000/15", &a, err, sizeof err), 0);
    assert_null(a.user);
    assert_string_equal(a.password, "pw");
    assert_string_equal(a.host, "10.0.0.1");
    assert_int_equal(a.port, 7000);
    assert_int_equal(a.db, 15);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "redis://10.0.0.1:7000/15");
    conf_redis_release(&a);

    /* The last '@' ends the credentials; percent-escapes are decoded. */
    assert_int_equal(conf_parse_redis("redis://u%3Ax:p@ss:w/rd%20;@redis.example/1000000", &a, err, sizeof err), 0);
    assert_string_equal(a.user, "u:x");
    assert_string_equal(a.password, "p@ss:w/rd ;");
    assert_string_equal(a.host, "redis.example");
    assert_int_equal(a.db, 1000000);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "redis://redis.example:6379/1000000");
    conf_redis_release(&a);

    assert_int_equal(conf_parse_redis("redis://[::1]/", &a, err, sizeof err), 0);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 6379);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "redis://[::1]:6379/0");
    conf_redis_release(&a);
}

/* redis-sentinel://: the sentinels in order, the master's name, the data master's credentials
 * and db; the display never shows the credentials. */
static void test_redis_sentinel_urls(void **state)
{
    (void)state;
    struct redis_addr a;
    char err[200], disp[300];

    assert_int_equal(conf_parse_redis("redis-sentinel://u:p%40w@s1:26380,[::1],10.0.0.3:1/mymaster/2", &a, err,
                                      sizeof err), 0);
    assert_null(a.host);
    assert_string_equal(a.user, "u");
    assert_string_equal(a.password, "p@w");
    assert_string_equal(a.sentinel_master, "mymaster");
    assert_int_equal(a.db, 2);
    assert_int_equal(a.nsentinels, 3);
    assert_string_equal(a.sentinels[0].host, "s1");
    assert_int_equal(a.sentinels[0].port, 26380);
    assert_string_equal(a.sentinels[1].host, "::1");
    assert_int_equal(a.sentinels[1].port, 26379);
    assert_string_equal(a.sentinels[2].host, "10.0.0.3");
    assert_int_equal(a.sentinels[2].port, 1);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp),
                        "redis-sentinel://s1:26380,[::1]:26379,10.0.0.3:1/mymaster/2");
    conf_redis_release(&a);

    assert_int_equal(conf_parse_redis("redis-sentinel://h/m", &a, err, sizeof err), 0);
    assert_int_equal(a.nsentinels, 1);
    assert_int_equal(a.db, 0);
    assert_null(a.password);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "redis-sentinel://h:26379/m/0");
    conf_redis_release(&a);

    static const struct {
        const char *url, *why;
    } bad[] = {
        { "redis-sentinel://", "no sentinel" },
        { "redis-sentinel:///m", "no sentinel" },
        { "redis-sentinel://h", "missing master name" },
        { "redis-sentinel://h/", "missing master name" },
        { "redis-sentinel://h//1", "missing master name" },
        { "redis-sentinel://h:0/m", "sentinel 1: port" },
        { "redis-sentinel://h:1,h:65536/m", "sentinel 2: port" },
        { "redis-sentinel://h,/m", "sentinel 2: missing host" },
        { "redis-sentinel://h,[::zz]/m", "sentinel 2: bad IPv6" },
        { "redis-sentinel://h/m/x", "database" },
        { "redis-sentinel://h/m!/1", "bad master name" },
        { "redis-sentinel://:Hunter2pw@h:Hunter2pw/m", "port" },
        { "rediss-sentinel://h/m", "not supported" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (conf_parse_redis(bad[i].url, &a, err, sizeof err) != -1)
            fail_msg("accepted %s", bad[i].url);
        if (!strstr(err, bad[i].why))
            fail_msg("%s: '%s' does not say '%s'", bad[i].url, err, bad[i].why);
        assert_null(strstr(err, "Hunter2pw"));
        assert_null(a.sentinels);       /* nothing left behind on error */
        assert_null(a.password);
    }

    /* A config: the key sentinel_password_file goes with the URL, before or after it. */
    struct loaded ld;
    load(&ld, "[fleet]\nsentinel_password_file = /etc/hostname\nredis = redis-sentinel://a:1,b:2/m\n" POOL);
    assert_non_null(ld.c);
    assert_string_equal(ld.c->redis.sentinel_master, "m");
    assert_string_equal(ld.c->redis.sentinel_password_file, "/etc/hostname");
    unload(&ld);
    load(&ld, "[fleet]\nredis = redis://h\nsentinel_password_file = /etc/hostname\n" POOL);
    assert_null(ld.c);
    expect_err(&ld, 3, "sentinel_password_file needs redis = redis-sentinel://");
    unload(&ld);
}

/* The host lists of redis-sentinel:// and redis-cluster:// are read by one parser: each kind
 * keeps its default port, its name in messages and its limit of 64. */
static void test_redis_node_lists(void **state)
{
    (void)state;
    struct redis_addr a;
    char err[200], url[1024];
    static const struct {
        const char *scheme, *tail, *one, *many, *none;
        int port;
    } kinds[] = {
        { "redis-sentinel://", "/m", "sentinel", "more than 64 sentinels", "no sentinel: ", 26379 },
        { "redis-cluster://", "/", "seed", "more than 64 seed nodes", "no seed node: ", 6379 },
    };
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        char want[64];
        snprintf(url, sizeof url, "%sa:1,b%s", kinds[k].scheme, kinds[k].tail);
        assert_int_equal(conf_parse_redis(url, &a, err, sizeof err), 0);
        struct redis_node *nodes = k == 0 ? a.sentinels : a.seeds;
        assert_int_equal(k == 0 ? a.nsentinels : a.nseeds, 2);
        assert_int_equal(nodes[0].port, 1);
        assert_string_equal(nodes[1].host, "b");
        assert_int_equal(nodes[1].port, kinds[k].port);
        conf_redis_release(&a);

        snprintf(url, sizeof url, "%s%s", kinds[k].scheme, kinds[k].tail);
        assert_int_equal(conf_parse_redis(url, &a, err, sizeof err), -1);
        assert_true(strncmp(err, kinds[k].none, strlen(kinds[k].none)) == 0);

        snprintf(url, sizeof url, "%sa,b,,c%s", kinds[k].scheme, kinds[k].tail);
        assert_int_equal(conf_parse_redis(url, &a, err, sizeof err), -1);
        snprintf(want, sizeof want, "%s 3: missing host", kinds[k].one);
        assert_string_equal(err, want);

        size_t o = (size_t)snprintf(url, sizeof url, "%s", kinds[k].scheme);
        for (int i = 0; i < 64; i++)
            o += (size_t)snprintf(url + o, sizeof url - o, "%sh%d", i ? "," : "", i);
        snprintf(url + o, sizeof url - o, "%s", kinds[k].tail);
        assert_int_equal(conf_parse_redis(url, &a, err, sizeof err), 0);
        assert_int_equal(k == 0 ? a.nsentinels : a.nseeds, 64);
        conf_redis_release(&a);
        snprintf(url + o, sizeof url - o, ",h64%s", kinds[k].tail);
        assert_int_equal(conf_parse_redis(url, &a, err, sizeof err), -1);
        assert_string_equal(err, kinds[k].many);
        assert_null(a.sentinels);       /* nothing left behind on error */
        assert_null(a.seeds);
    }
}

static void test_redis_unix(void **state)
{
    (void)state;
    struct redis_addr a;
    char err[200], disp[200];
    assert_int_equal(conf_parse_redis("unix:///run/redis/redis.sock", &a, err, sizeof err), 0);
    assert_string_equal(a.unix_path, "/run/redis/redis.sock");
    assert_null(a.host);
    assert_int_equal(a.db, 0);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "unix:///run/redis/redis.sock");
    conf_redis_release(&a);

    assert_int_equal(conf_parse_redis("unix:///tmp/r.sock?db=3", &a, err, sizeof err), 0);
    assert_string_equal(a.unix_path, "/tmp/r.sock");
    assert_int_equal(a.db, 3);
    assert_string_equal(conf_redis_display(&a, disp, sizeof disp), "unix:///tmp/r.sock?db=3");
    conf_redis_release(&a);

    const char *bad[] = { "unix://relative.sock", "unix:///tmp/r.sock?db=x", "unix:///tmp/r.sock?pw=1",
                          "unix:///tmp/", "unix://" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (conf_parse_redis(bad[i], &a, err, sizeof err) != -1)
            fail_msg("accepted %s", bad[i]);
    }
    char longpath[200] = "unix:///";
    memset(longpath + 8, 'x', 150);
    longpath[158] = '\0';
    assert_int_equal(conf_parse_redis(longpath, &a, err, sizeof err), -1);
    assert_non_null(strstr(err, "too long"));

    struct loaded ld;
    load(&ld, "[fleet]\nredis = unix:///run/redis.sock?db=2\n" POOL);
    assert_non_null(ld.c);
    assert_string_equal(ld.c->redis.unix_path, "/run/redis.sock");
    assert_int_equal(ld.c->redis.db, 2);
    unload(&ld);
}

/* Whatever is wrong with an address, the message never carries the password. */
static void test_redis_errors_hide_password(void **state)
{
    (void)state;
    const char *bad[] = {
        "redis://:Hunter2pw@host:99999",
        "redis://:Hunter2pw@host:notaport",
        "redis://:Hunter2pw@",
        "redis://:Hunter2pw@:6379",
        "redis://admin:Hunter2pw@host/abc",
        "redis://admin:Hunter2pw@host:6379/2/x",
        "redis://admin:Hunter2pw@[::zz]:6379",
        "redis://admin:Hunter2pw@bad_host!:1",
        "redis://Hunter2pw@host",
        "redis://:Hunter2pw%zz@host",
        "redis://:Hunter2pw%00@host",
        "redis://:@host",
        "redis://:Hunter2pw",
        "redis//:Hunter2pw@host",
        "rediss://:Hunter2pw@host:notaport",
        "http://:Hunter2pw@host",
        "redis://:Hunter2pw@host?x=1",
        "redis://host:Hunter2pw",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct redis_addr a;
        char err[300] = "";
        if (conf_parse_redis(bad[i], &a, err, sizeof err) != -1)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
        if (strstr(err, "Hunter2pw"))
            fail_msg("message for %s shows the password: %s", bad[i], err);
        assert_null(a.password);        /* nothing left behind on error */
        assert_null(a.host);

        struct buf t = BUF_INIT;
        buf_printf(&t, "[fleet]\nredis = %s\n" POOL, bad[i]);
        struct loaded ld;
        load(&ld, t.p);
        buf_release(&t);
        assert_null(ld.c);
        expect_err(&ld, 2, "redis: ");
        expect_n(&ld, 1);
        no_secret(&ld.e, "Hunter2pw");
        unload(&ld);
    }
}

/* " ;" starts a comment, also in the redis value; a password never holds a raw space. */
static void test_inline_comment_after_secret(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, "[fleet]\nredis = redis://:pw@h:6380 ; the main redis\n" POOL);
    assert_non_null(ld.c);
    assert_string_equal(ld.c->redis.password, "pw");
    assert_int_equal(ld.c->redis.port, 6380);
    unload(&ld);

    /* A password written with " ;" in it is cut there and then fails to parse, loudly. */
    load(&ld, "[fleet]\nredis = redis://:Hunter2 ;tail@h\n" POOL);
    assert_null(ld.c);
    expect_err(&ld, 2, "redis: missing host");
    no_secret(&ld.e, "Hunter2");
    unload(&ld);
}

static void test_env_override(void **state)
{
    (void)state;
    setenv("STREAMFLEET_REDIS", "redis://:envpw@envhost:7001/4", 1);
    struct loaded ld;
    load(&ld, "[fleet]\nredis = redis://filehost\n" POOL);
    assert_non_null(ld.c);
    assert_true(ld.c->redis_from_env);
    assert_string_equal(ld.c->redis.host, "envhost");
    assert_int_equal(ld.c->redis.port, 7001);
    assert_int_equal(ld.c->redis.db, 4);
    assert_string_equal(ld.c->redis.password, "envpw");
    unload(&ld);

    /* With the variable set, [fleet] redis (and [fleet] itself) may be left out. */
    load(&ld, POOL);
    assert_non_null(ld.c);
    assert_string_equal(ld.c->redis.host, "envhost");
    unload(&ld);

    setenv("STREAMFLEET_REDIS", "redis://:Hunter2pw@envhost:0", 1);
    load(&ld, "[fleet]\nredis = redis://filehost\n" POOL);
    assert_null(ld.c);
    expect_n(&ld, 1);
    assert_string_equal(ld.e.msg[0], "STREAMFLEET_REDIS: port must be a number from 1 to 65535");
    no_secret(&ld.e, "Hunter2pw");
    unload(&ld);
    unsetenv("STREAMFLEET_REDIS");
}

static void test_missing_redis(void **state)
{
    (void)state;
    expect_only("[fleet]\nlog_level = info\n" POOL, 1, "[fleet] missing required key 'redis'");
    expect_only("; a comment\n\n[fleet]\n" POOL, 3, "[fleet] missing required key 'redis'");
    expect_only(POOL, 1, "missing [fleet] section");
}

/* ---- files ---- */

static void test_missing_file(void **state)
{
    (void)state;
    struct conf_errors e = { NULL, 0 };
    assert_null(conf_load("/nonexistent/streamfleet.ini", &e));
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msg[0], "/nonexistent/streamfleet.ini: cannot open: No such file or directory");
    conf_errors_release(&e);
    assert_int_equal(e.n, 0);

    assert_null(conf_load("/tmp", &e));
    assert_int_equal(e.n, 1);
    assert_string_equal(e.msg[0], "/tmp: cannot open: Is a directory");
    conf_errors_release(&e);
}

/* Load path, expecting the one error "cannot open: Permission denied". Returns 0 when so, or
 * the number of the check that failed (usable as an exit status from a forked child). */
static int load_expecting_eacces(const char *path)
{
    struct conf_errors e = { NULL, 0 };
    struct conf *c = conf_load(path, &e);
    int bad = c != NULL ? 1 : e.n != 1 ? 2 : strstr(e.msg[0], "cannot open: Permission denied") == NULL ? 3 : 0;
    if (bad)
        fprintf(stderr, "conf_load(%s): %zu errors, first: %s\n", path, e.n, e.n ? e.msg[0] : "-");
    if (c)
        conf_free(c);
    conf_errors_release(&e);
    return bad;
}

static void test_unreadable_file(void **state)
{
    (void)state;
    char *path = scratch_write(FLEET POOL);
    chmod(path, 0);
    if (geteuid() != 0) {
        assert_int_equal(load_expecting_eacces(path), 0);
    } else {
        /* Root reads mode 000 files (CI runs as root): the loader runs in a child that has
         * become nobody first, as a worker that dropped privileges would be. */
        pid_t pid = fork();
        assert_true(pid != -1);
        if (pid == 0) {
            if (setgroups(0, NULL) == -1 || setgid(65534) == -1 || setuid(65534) == -1)
                _exit(10);
            if (access(path, R_OK) == 0)
                _exit(11);                  /* still able to read it: the test proves nothing */
            _exit(load_expecting_eacces(path));
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    scratch_drop(path);
}

static void test_empty_file(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, "");
    assert_null(ld.c);
    expect_err(&ld, 1, "missing [fleet] section");
    expect_err(&ld, 1, "no [pool:NAME] section");
    expect_n(&ld, 2);
    unload(&ld);
    expect_only(FLEET, 1, "no [pool:NAME] section");
}

/* ---- what inih would get wrong ---- */

/* RELIABILITY.md item 10: inih splits a long line and parses its tail as a line of its own. */
static void test_long_line_tail_not_parsed(void **state)
{
    (void)state;
    struct buf t = BUF_INIT;
    buf_adds(&t, FLEET POOL "workers = 2\n");           /* lines 1-7 */
    struct buf line = BUF_INIT;
    buf_adds(&line, "url = http://h/");
    while (line.len < 300 - strlen("workers=9"))
        buf_addc(&line, 'a');
    buf_adds(&line, "workers=9");                      /* would be a duplicate key if parsed */
    assert_int_equal(line.len, 300);
    buf_printf(&t, "%s\nbatch = 5\n", line.p);        /* line 8, then 9 */
    struct loaded ld;
    load(&ld, t.p);
    assert_null(ld.c);
    expect_err(&ld, 8, "line too long (300 bytes, at most 198)");
    expect_n(&ld, 1);
    unload(&ld);

    /* The same with a tail that would create an unknown key. */
    buf_reset(&t);
    buf_reset(&line);
    buf_adds(&line, "stream = ");
    while (line.len < 300 - strlen("admin_token=hijacked"))
        buf_addc(&line, 'x');
    buf_adds(&line, "admin_token=hijacked");
    buf_printf(&t, FLEET "[pool:p]\n%s\ngroup = g\nhandler = log\n", line.p);
    load(&ld, t.p);
    expect_err(&ld, 4, "line too long (300 bytes, at most 198)");
    expect_err(&ld, 3, "[pool:p] missing required key 'stream'");
    expect_n(&ld, 2);
    unload(&ld);
    buf_release(&line);
    buf_release(&t);
}

/* The longest line inih can hold whole is 198 bytes plus its newline. */
static void test_line_length_limit(void **state)
{
    (void)state;
    for (size_t len = 197; len <= 200; len++) {
        struct buf t = BUF_INIT;
        buf_adds(&t, FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = http\n");
        size_t start = t.len;
        buf_adds(&t, "url = http://h/");
        while (t.len - start < len)
            buf_addc(&t, 'a');
        buf_addc(&t, '\n');
        struct loaded ld;
        load(&ld, t.p);
        buf_release(&t);
        if (len <= 198) {
            if (!ld.c)
                dump(&ld.e);
            assert_non_null(ld.c);
            assert_int_equal(strlen(ld.c->pools[0].url), len - strlen("url = "));
        } else {
            char want[64];
            snprintf(want, sizeof want, "line too long (%zu bytes, at most 198)", len);
            expect_err(&ld, 7, want);
        }
        unload(&ld);
    }
    /* The last line needs no newline; CRLF line ends are fine. */
    struct loaded ld;
    load(&ld, "[fleet]\r\nredis = redis://r\r\n[pool:p]\r\nstream = s\r\ngroup = g\r\nhandler = noop");
    assert_non_null(ld.c);
    assert_string_equal(ld.c->pools[0].stream, "s");
    assert_int_equal(ld.c->pools[0].handler, HANDLER_NOOP);
    unload(&ld);
}

/* RELIABILITY.md test 35: inih keeps 49 characters of a section name; longer names would merge. */
static void test_long_section_names(void **state)
{
    (void)state;
    char name1[60], name2[60];
    memset(name1, 'n', 49);
    memcpy(name1, "pool:", 5);
    memcpy(name2, name1, 49);
    strcpy(name1 + 49, "one");
    strcpy(name2 + 49, "two");
    struct buf t = BUF_INIT;
    buf_printf(&t, FLEET POOL "[%s]\nstream = a\n[%s]\nstream = b\n", name1, name2);
    struct loaded ld;
    load(&ld, t.p);
    buf_release(&t);
    assert_null(ld.c);
    expect_err(&ld, 7, "section name too long (52 characters, at most 48");
    expect_err(&ld, 9, "section name too long (52 characters, at most 48");
    expect_n(&ld, 2);                   /* their keys are not misfiled under [pool:p] */
    unload(&ld);

    /* 48 characters is the longest; 49 is already too long, even at exactly inih's cut. */
    char ok[60] = "pool:", over[60] = "pool:";
    memset(ok + 5, 'k', 43);
    ok[48] = '\0';
    memset(over + 5, 'k', 44);
    over[49] = '\0';
    t = (struct buf)BUF_INIT;
    buf_printf(&t, FLEET "[%s]\nstream = s\ngroup = g\nhandler = log\n", ok);
    load(&ld, t.p);
    assert_non_null(ld.c);
    assert_string_equal(ld.c->pools[0].name, ok + 5);
    unload(&ld);
    buf_reset(&t);
    buf_printf(&t, FLEET "[%s]\nstream = s\ngroup = g\nhandler = log\n", over);
    expect_only(t.p, 3, "section name too long (49 characters, at most 48: a pool name at most 43)");
    buf_release(&t);

    char other[80];
    memset(other, 'z', 60);
    other[60] = '\0';
    t = (struct buf)BUF_INIT;
    buf_printf(&t, FLEET POOL "[%s]\n", other);
    expect_only(t.p, 7, "section name too long (60 characters, at most 48)");
    buf_release(&t);
}

static void test_long_key_name(void **state)
{
    (void)state;
    char k48[60], k49[60];
    memset(k48, 'k', 48);
    k48[48] = '\0';
    memset(k49, 'k', 49);
    k49[49] = '\0';
    struct buf t = BUF_INIT;
    buf_printf(&t, FLEET POOL "%s = 1\n%s = 2\n", k48, k49);
    struct loaded ld;
    load(&ld, t.p);
    buf_release(&t);
    expect_err(&ld, 7, "unknown key 'kkkk");
    expect_err(&ld, 8, "key name too long (49 characters, at most 48)");
    expect_n(&ld, 2);
    unload(&ld);
}

/* inih reports only its first syntax error; we report each malformed line. Multi-line
 * continuation is off, so an indented line is one of them, not part of the value above. */
static void test_malformed_lines(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET POOL
              "just words\n"                 /* 7 */
              "  indented continuation\n"    /* 8 */
              "= value without key\n"        /* 9 */
              "[pool:q\n"                    /* 10 */
              "stream = q\n"                 /* 11: skipped, its section was rejected */
              "[fleet] trailing\n"           /* 12 */
              "key ;= commented out\n"       /* 13 */
              "[pool:r] ; a comment is fine\n"
              "stream = r\ngroup = r\nhandler = log\n");
    assert_null(ld.c);
    expect_err(&ld, 7, "expected 'key = value' or '[section]'");
    expect_err(&ld, 8, "expected 'key = value' or '[section]'");
    expect_err(&ld, 9, "missing key name before '='");
    expect_err(&ld, 10, "section header without ']'");
    expect_err(&ld, 12, "unexpected text after section header");
    expect_err(&ld, 13, "expected 'key = value' or '[section]'");
    expect_n(&ld, 6);
    unload(&ld);

    expect_only(FLEET POOL "workers = 2\n  3\n", 8, "expected 'key = value'");
}

static void test_nul_byte(void **state)
{
    (void)state;
    char text[] = FLEET POOL "workers = 2X\n";
    char *x = strchr(text, 'X');
    *x = '\0';
    char tmpl[] = "/tmp/sf_test_conf_XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    struct conf_errors e = { NULL, 0 };
    assert_null(conf_load(tmpl, &e));
    assert_int_equal(e.n, 1);
    assert_non_null(strstr(e.msg[0], ":7: NUL byte in line"));
    conf_errors_release(&e);
    unlink(tmpl);
}

/* ---- sections and keys ---- */

static void test_unknown_key_and_section(void **state)
{
    (void)state;
    expect_only(FLEET POOL "colour = blue\n", 7, "unknown key 'colour' in [pool:p]");
    expect_only(FLEET "admin_token = x\n" POOL, 3, "unknown key 'admin_token' in [fleet]");
    expect_only(FLEET "stream = s\n" POOL, 3, "unknown key 'stream' in [fleet]");
    expect_only(FLEET POOL "[pools:x]\nstream = s\n", 7, "unknown section [pools:x]");
    expect_only(FLEET POOL "[Fleet]\n", 7, "unknown section [Fleet]");
    expect_only("redis = redis://r\n" FLEET POOL, 1, "key 'redis' before any section");
}

static void test_pool_names(void **state)
{
    (void)state;
    expect_only(FLEET POOL "[pool:]\n", 7, "invalid pool name ''");
    expect_only(FLEET POOL "[pool:a b]\n", 7, "invalid pool name 'a b'");
    expect_only(FLEET POOL "[pool:a/b]\nstream = x\n", 7, "invalid pool name 'a/b'");
    struct loaded ld;
    load(&ld, FLEET "[pool:A-z_0.9]\nstream = s\ngroup = g\nhandler = log\n");
    assert_non_null(ld.c);
    assert_non_null(conf_pool(ld.c, "A-z_0.9"));
    unload(&ld);
}

static void test_duplicates(void **state)
{
    (void)state;
    expect_only(FLEET POOL "[pool:p]\nstream = t\n", 7, "duplicate [pool:p], first at line 3");
    expect_only(FLEET POOL "[fleet]\n", 7, "duplicate [fleet], first at line 1");
    expect_only(FLEET POOL "workers = 2\nworkers = 3\n", 8, "duplicate key 'workers', first at line 7");
    expect_only(FLEET "redis = redis://other\n" POOL, 3, "duplicate key 'redis', first at line 2");
    /* A rejected value still counts as set: the second is a duplicate, not a silent fix. */
    struct loaded ld;
    load(&ld, FLEET POOL "workers = 0\nworkers = 2\n");
    expect_err(&ld, 7, "workers: must be a whole number from 1 to 256 (got '0')");
    expect_err(&ld, 8, "duplicate key 'workers', first at line 7");
    expect_n(&ld, 2);
    unload(&ld);
}

static void test_missing_required(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET "[pool:emails]\ngroup = g\nhandler = log\n[pool:empty]\n");
    assert_null(ld.c);
    expect_err(&ld, 3, "[pool:emails] missing required key 'stream'");
    expect_err(&ld, 6, "[pool:empty] missing required key 'stream'");
    expect_err(&ld, 6, "[pool:empty] missing required key 'group'");
    expect_err(&ld, 6, "[pool:empty] missing required key 'handler'");
    expect_n(&ld, 4);
    unload(&ld);
    expect_only(FLEET "[pool:h]\nstream = s\ngroup = g\nhandler = http\n", 3,
                "[pool:h] missing required key 'url' (handler = http)");
}

static void test_numbers_out_of_range(void **state)
{
    (void)state;
    expect_only(FLEET POOL "workers = 0\n", 7, "workers: must be a whole number from 1 to 256 (got '0')");
    expect_only(FLEET POOL "workers = 100000\n", 7, "workers: must be a whole number from 1 to 256 (got '100000')");
    expect_only(FLEET POOL "workers = -1\n", 7, "workers: must be a whole number");
    expect_only(FLEET POOL "workers = 2.5\n", 7, "workers: must be a whole number");
    expect_only(FLEET POOL "batch = 10001\n", 7, "batch: must be a whole number from 1 to 10000");
    expect_only(FLEET POOL "block = 31s\n", 7, "block: must be from 1ms to 30s (got '31s')");
    expect_only(FLEET POOL "block = 0\n", 7, "block: must be from 1ms to 30s");
    expect_only(FLEET POOL "block = 1.5s\n", 7, "block: not a duration (got '1.5s')");
    expect_only(FLEET POOL "block = -1\n", 7, "block: not a duration");
    expect_only(FLEET POOL "block = \n", 7, "block: not a duration (got '')");
    expect_only("[fleet]\nredis = redis://r\ndrain_timeout = 2h\n" POOL, 3, "drain_timeout: must be from 0s to 1h");
    expect_only("[fleet]\nredis = redis://r\npoll_interval = 99ms\n" POOL, 3, "poll_interval: must be from 100ms to 1h");
    expect_only("[fleet]\nredis = redis://r\npoll_interval = 99999999999999999999d\n" POOL, 3,
                "poll_interval: not a duration");

    struct loaded ld;
    load(&ld, "[fleet]\nredis = redis://r\ndrain_timeout = 0\npoll_interval = 100ms\n"
              "[pool:p]\nstream = s\ngroup = g\nhandler = log\nblock = 30s\nbatch = 10000\n");
    assert_non_null(ld.c);
    assert_int_equal(ld.c->drain_timeout_ms, 0);
    assert_int_equal(ld.c->poll_interval_ms, 100);
    assert_int_equal(ld.c->pools[0].block_ms, 30000);
    assert_int_equal(ld.c->pools[0].batch, 10000);
    unload(&ld);
}

static void test_handler_and_http_only_keys(void **state)
{
    (void)state;
    expect_only(FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = webhook\n", 6,
                "handler: 'webhook' is neither a kind (log, noop, http, exec, subprocess, plugin) nor a [handler:NAME] section");
    struct loaded ld;
    load(&ld, FLEET "[pool:p]\nstream = s\ngroup = g\nurl = http://h/\nhandler = log\n"
                    "inflight = 4\nheader = A: b\nheader = C: d\n");
    assert_null(ld.c);
    expect_err(&ld, 6, "key 'url' only applies to handler = http");
    expect_err(&ld, 8, "key 'inflight' only applies to handler = http, exec or subprocess");
    expect_err(&ld, 9, "key 'header' only applies to handler = http");
    expect_n(&ld, 3);
    unload(&ld);
    /* A bad handler value is reported once, not again for every http key. */
    load(&ld, FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = htp\nurl = http://h/\n");
    expect_err(&ld, 6, "handler: 'htp' is neither a kind");
    expect_n(&ld, 1);
    unload(&ld);
}

/* handler = exec and subprocess: the command is split and checked when the config loads. */
static void test_exec_keys(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = exec\n"
                    "command = /bin/echo 'a b' c\\ d\nenv = MODE=prod\nenv = X=1=2\n"
                    "pass_env = HOME  LANG\ninflight = 8\ntimeout = 5s\n");
    assert_non_null(ld.c);
    const struct pool_conf *p = &ld.c->pools[0];
    assert_int_equal(p->handler, HANDLER_EXEC);
    assert_string_equal(p->argv[0], "/bin/echo");
    assert_string_equal(p->argv[1], "a b");
    assert_string_equal(p->argv[2], "c d");
    assert_null(p->argv[3]);
    assert_int_equal(p->nenv, 2);
    assert_string_equal(p->env[1], "X=1=2");
    assert_int_equal(p->npass_env, 2);
    assert_string_equal(p->pass_env[1], "LANG");
    assert_int_equal(p->inflight, 8);
    unload(&ld);

    load(&ld, FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = subprocess\n"
                    "command = exit 3 | cat\nshell = yes\n");
    assert_non_null(ld.c);
    assert_string_equal(ld.c->pools[0].argv[0], "/bin/sh");
    assert_string_equal(ld.c->pools[0].argv[2], "exit 3 | cat");
    unload(&ld);

    load(&ld, FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = exec\n"     /* lines 3-6 */
                    "command = /bin/echo $HOME\n"                          /* 7 */
                    "env = STREAMFLEET_ID=x\n"                             /* 8 */
                    "env = 1X=y\n"                                         /* 9 */
                    "pass_env = A-B\n"                                     /* 10 */
                    "stdin = body\n"                                       /* 11 */
                    "url = http://h/\n"                                    /* 12 */
                    "[pool:q]\nstream = t\ngroup = g\nhandler = log\n"     /* 13-16 */
                    "command = /bin/true\n"                                /* 17 */
                    "[pool:r]\nstream = u\ngroup = g\nhandler = subprocess\n"); /* 18-21 */
    assert_null(ld.c);
    expect_err(&ld, 7, "command: '$' at offset 10");
    expect_err(&ld, 8, "env: STREAMFLEET_ID is set by streamfleet");
    expect_err(&ld, 9, "env: must be NAME=value");
    expect_err(&ld, 10, "pass_env: 'A-B' is not a variable name");
    expect_err(&ld, 12, "key 'url' only applies to handler = http");
    expect_err(&ld, 17, "key 'command' only applies to handler = exec or subprocess");
    expect_err(&ld, 18, "missing required key 'command' (handler = exec or subprocess)");
    unload(&ld);

    load(&ld, FLEET "[pool:p]\nstream = s\ngroup = g\nhandler = exec\n"
                    "command = /bin/true\nstdin = body\n");
    assert_null(ld.c);
    expect_err(&ld, 8, "stdin = body needs body_field");
    expect_n(&ld, 1);
    unload(&ld);
}

#define HTTP_POOL FLEET "[pool:h]\nstream = s\ngroup = g\nhandler = http\n"   /* lines 1-6 */

static void test_url_rules(void **state)
{
    (void)state;
    const char *good[] = {
        "http://h/",
        "https://h:8443",
        "http://127.0.0.1:8080/a/{stream}/{id}/{field_1.x-y}?q={id}#{stream}",
        "https://[::1]:8443/{id}",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct buf t = BUF_INIT;
        buf_printf(&t, HTTP_POOL "url = %s\n", good[i]);
        struct loaded ld;
        load(&ld, t.p);
        buf_release(&t);
        if (!ld.c)
            dump(&ld.e);
        assert_non_null(ld.c);
        assert_string_equal(ld.c->pools[0].url, good[i]);
        unload(&ld);
    }
    const char *bad[][2] = {
        { "ftp://h/", "must start with http:// or https://" },
        { "h/path", "must start with http:// or https://" },
        { "{scheme}://h/", "must start with http://" },
        { "http://{host}/x", "not allowed in the scheme, host or port" },
        { "http://h:{port}/x", "not allowed in the scheme, host or port" },
        { "http://{id}", "not allowed in the scheme, host or port" },
        { "https://evil{id}.example.com/", "not allowed in the scheme, host or port" },
        { "http://h/{id", "'{' is never closed" },
        { "http://h/id}", "'}' without '{'" },
        { "http://h/{a{b}}", "'{' inside a placeholder" },
        { "http://h/{}", "bad placeholder {}" },
        { "http://h/{a b}", "contains a space" },
        { "http://h/{a/b}", "bad placeholder {a/b}" },
        { "http:///path", "has no host" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct buf t = BUF_INIT;
        buf_printf(&t, HTTP_POOL "url = %s\n", bad[i][0]);
        expect_only(t.p, 7, bad[i][1]);
        buf_release(&t);
    }
}

static void test_headers(void **state)
{
    (void)state;
    struct buf t = BUF_INIT;
    buf_adds(&t, HTTP_POOL "url = http://h/\n");
    for (int i = 0; i < CONF_HEADERS_MAX; i++)
        buf_printf(&t, "header = X-H%d: v%d\n", i, i);
    struct loaded ld;
    load(&ld, t.p);
    assert_non_null(ld.c);
    assert_int_equal(ld.c->pools[0].nheaders, CONF_HEADERS_MAX);
    assert_string_equal(ld.c->pools[0].headers[0], "X-H0: v0");
    assert_string_equal(ld.c->pools[0].headers[31], "X-H31: v31");
    unload(&ld);
    buf_adds(&t, "header = X-Too: many\n");
    expect_only(t.p, 8 + CONF_HEADERS_MAX, "header: too many headers (at most 32)");
    buf_release(&t);

    const char *bad[][2] = {
        { "NoColon", "must be 'Name: value'" },
        { ": v", "invalid header name ''" },
        { "Bad Name: v", "invalid header name 'Bad Name'" },
        { "X(y): v", "invalid header name 'X(y)'" },
        { "X-Empty:", "header 'X-Empty' has no value" },
        { "content-length: 5", "header 'content-length' cannot be set here" },
        { "Transfer-Encoding: chunked", "cannot be set here" },
        { "Content-Type: text/plain", "use content_type" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        buf_reset(&t);
        buf_printf(&t, HTTP_POOL "url = http://h/\nheader = %s\n", bad[i][0]);
        expect_only(t.p, 8, bad[i][1]);
    }
    /* A header value may carry a token: it is never quoted back. */
    buf_reset(&t);
    buf_adds(&t, HTTP_POOL "url = http://h/\nheader = Authorization: Bearer Sekr1t\rtail\n");
    load(&ld, t.p);
    expect_err(&ld, 8, "header 'Authorization': value contains a control character");
    no_secret(&ld.e, "Sekr1t");
    unload(&ld);
    buf_release(&t);
}

static void test_tls_and_files(void **state)
{
    (void)state;
    char *cert = scratch_write("c\n");
    struct buf t = BUF_INIT;
    buf_printf(&t, HTTP_POOL "url = https://h/\ntls_cert = %s\n", cert);
    expect_only(t.p, 8, "tls_cert and tls_key go together: tls_key is missing");
    buf_reset(&t);
    buf_printf(&t, HTTP_POOL "url = https://h/\ntls_key = %s\n", cert);
    expect_only(t.p, 8, "tls_cert and tls_key go together: tls_cert is missing");
    buf_reset(&t);
    buf_adds(&t, HTTP_POOL "url = https://h/\ntls_ca = /nonexistent/ca.pem\n");
    expect_only(t.p, 8, "tls_ca: cannot read '/nonexistent/ca.pem': No such file or directory");
    buf_reset(&t);
    buf_adds(&t, HTTP_POOL "url = https://h/\nsigning_secret_file = /tmp\n");
    expect_only(t.p, 8, "signing_secret_file: '/tmp' is not a regular file");
    buf_reset(&t);
    buf_adds(&t, HTTP_POOL "url = https://h/\nsigning_secret_file =\n");
    expect_only(t.p, 8, "signing_secret_file: empty path");
    buf_release(&t);
    scratch_drop(cert);
}

static void test_cross_key_rules(void **state)
{
    (void)state;
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 1s\nconnect_timeout = 5s\n", 9,
                "connect_timeout (5s) is longer than timeout (1s)");
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 1s\n", 8,
                "connect_timeout (2s) is longer than timeout (1s)");
    expect_only(FLEET POOL "[pool:q]\nstream = s\ngroup = g\nhandler = noop\n", 7,
                "[pool:q] reads stream 's' as group 'g', like [pool:p] at line 3");
    struct loaded ld;
    load(&ld, FLEET POOL "[pool:q]\nstream = s\ngroup = other\nhandler = noop\n");
    assert_non_null(ld.c);
    assert_int_equal(ld.c->npools, 2);
    unload(&ld);
}

/* stream = k1 k2 ... with priority = strict | weighted W...: several streams read by one pool,
 * one dead-letter stream each unless dlq names one for all. */
static void test_priority_streams(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET "[pool:p]\nstream = ev:critical  ev:fast\tev:slow\ngroup = g\nhandler = log\n");
    assert_non_null(ld.c);
    const struct pool_conf *p = &ld.c->pools[0];
    assert_int_equal(p->nstreams, 3);
    assert_string_equal(p->stream, "ev:critical");
    assert_string_equal(p->streams[1], "ev:fast");
    assert_string_equal(p->streams[2], "ev:slow");
    assert_int_equal(p->priority, PRIORITY_STRICT);
    assert_string_equal(p->dlqs[0], "ev:critical:dlq");
    assert_string_equal(p->dlqs[2], "ev:slow:dlq");
    assert_string_equal(p->dlq, "ev:critical:dlq");
    unload(&ld);

    load(&ld, FLEET "[pool:p]\nstream = a b c d\npriority = weighted 8 4 2 1\ndlq = dead\ngroup = g\n"
              "handler = log\n");
    assert_non_null(ld.c);
    p = &ld.c->pools[0];
    assert_int_equal(p->priority, PRIORITY_WEIGHTED);
    assert_int_equal(p->nweights, 4);
    assert_int_equal(p->weights[0], 8);
    assert_int_equal(p->weights[3], 1);
    assert_string_equal(p->dlqs[0], "dead");
    assert_string_equal(p->dlqs[3], "dead");
    unload(&ld);

    /* a single stream stays what it was: one name, its own dlq */
    load(&ld, FLEET POOL);
    assert_non_null(ld.c);
    assert_int_equal(ld.c->pools[0].nstreams, 1);
    assert_string_equal(ld.c->pools[0].dlqs[0], "s:dlq");
    unload(&ld);

    expect_only(FLEET "[pool:p]\nstream = a b a\ngroup = g\nhandler = log\n", 4, "stream: names stream 'a' twice");
    expect_only(FLEET "[pool:p]\nstream = a\npriority = strict\ngroup = g\nhandler = log\n", 5,
                "priority needs several streams");
    expect_only(FLEET "[pool:p]\nstream = a b\npriority = weighted 8 4 2\ngroup = g\nhandler = log\n", 5,
                "priority = weighted has 3 weights for 2 streams");
    expect_only(FLEET "[pool:p]\nstream = a b\npriority = weighted 8 0\ngroup = g\nhandler = log\n", 5,
                "priority: weights must be whole numbers from 1 to 1000");
    expect_only(FLEET "[pool:p]\nstream = a b\npriority = weighted\ngroup = g\nhandler = log\n", 5,
                "priority: weighted needs a weight per stream");
    expect_only(FLEET "[pool:p]\nstream = a b\npriority = fair\ngroup = g\nhandler = log\n", 5,
                "priority: must be strict, or weighted");
    expect_only(FLEET "[pool:p]\nstream = a b:dlq b\ngroup = g\nhandler = log\n", 3,
                "dead-letter stream 'b:dlq' is also one of its streams");
    /* one group on one stream is one reader, whichever pool lists it */
    expect_only(FLEET POOL "[pool:q]\nstream = t s\ngroup = g\nhandler = noop\n", 7,
                "[pool:q] reads stream 's' as group 'g', like [pool:p] at line 3");
}

/* stream = events:{0..15}: the shards events:{0} ... events:{15}, read as equals, each with
 * its own dead-letter stream in its slot (events:{3}:dlq). */
static void test_shard_ranges(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET "[pool:p]\nstream = events:{0..15}\ngroup = g\nhandler = log\n");
    assert_non_null(ld.c);
    const struct pool_conf *p = &ld.c->pools[0];
    assert_int_equal(p->nstreams, 16);
    assert_true(p->sharded);
    assert_string_equal(p->stream, "events:{0}");
    assert_string_equal(p->streams[3], "events:{3}");
    assert_string_equal(p->streams[15], "events:{15}");
    assert_string_equal(p->dlqs[3], "events:{3}:dlq");
    unload(&ld);

    /* text after the range, a range beside plain names, a range of one, the most streams */
    load(&ld, FLEET "[pool:p]\nstream = a q{7..8}:in q{10..10}\ngroup = g\nhandler = log\n");
    assert_non_null(ld.c);
    p = &ld.c->pools[0];
    assert_int_equal(p->nstreams, 4);
    assert_string_equal(p->streams[0], "a");
    assert_string_equal(p->streams[1], "q{7}:in");
    assert_string_equal(p->streams[2], "q{8}:in");
    assert_string_equal(p->streams[3], "q{10}");
    unload(&ld);
    load(&ld, FLEET "[pool:p]\nstream = s{0..63}\ngroup = g\nhandler = log\n");
    assert_non_null(ld.c);
    assert_int_equal(ld.c->pools[0].nstreams, CONF_STREAMS_MAX);
    unload(&ld);

    /* a hash tag without a range is a plain name */
    load(&ld, FLEET "[pool:p]\nstream = ev:{12} ev:{1.5}\ngroup = g\nhandler = log\n");
    assert_non_null(ld.c);
    assert_int_equal(ld.c->pools[0].nstreams, 2);
    assert_false(ld.c->pools[0].sharded);
    assert_string_equal(ld.c->pools[0].streams[0], "ev:{12}");
    unload(&ld);

    expect_only(FLEET "[pool:p]\nstream = e{5..2}\ngroup = g\nhandler = log\n", 4,
                "stream: 'e{5..2}': the shard range {5..2} goes down: write {2..5}");
    expect_only(FLEET "[pool:p]\nstream = e{0..}\ngroup = g\nhandler = log\n", 4,
                "stream: 'e{0..}': a shard range is {A..B}");
    expect_only(FLEET "[pool:p]\nstream = e{0..3\ngroup = g\nhandler = log\n", 4, "a shard range is {A..B}");
    expect_only(FLEET "[pool:p]\nstream = e{0..x}\ngroup = g\nhandler = log\n", 4, "a shard range is {A..B}");
    expect_only(FLEET "[pool:p]\nstream = e{0..9999999999}\ngroup = g\nhandler = log\n", 4,
                "numbers of up to 9 digits");
    expect_only(FLEET "[pool:p]\nstream = e{0..64}\ngroup = g\nhandler = log\n", 4,
                "stream: 'e{0..64}' names 65 shards: more than 64 streams in all");
    expect_only(FLEET "[pool:p]\nstream = a b e{0..62}\ngroup = g\nhandler = log\n", 4,
                "more than 64 streams in all");
    expect_only(FLEET "[pool:p]\nstream = e{1} e{0..3}\ngroup = g\nhandler = log\n", 4,
                "names stream 'e{1}' twice");
    expect_only(FLEET "[pool:p]\nstream = a{0..3}aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\ngroup = g\nhandler = log\n", 4,
                "is not a stream name");
    expect_only(FLEET "[pool:p]\nstream = e{0..3}\npriority = strict\ngroup = g\nhandler = log\n", 5,
                "priority does not apply to shards");
}

static void test_names_and_fields(void **state)
{
    (void)state;
    expect_only(FLEET "[pool:p]\nstream = a b\x01\ngroup = g\nhandler = log\n", 4,
                "stream: 'b\x01' is not a stream name (1 to 48 printable characters without spaces)");
    expect_only(FLEET "[pool:p]\nstream =\ngroup = g\nhandler = log\n", 4, "stream: must name a stream");
    expect_only(FLEET "[pool:p]\nstream = s\ngroup = gggggggggggggggggggggggggggggggggggggggggggggggggg\n"
                "handler = log\n", 5, "group: must be 1 to 48");
    expect_only(HTTP_POOL "url = http://h/\nbody_field = a:b\n", 8, "body_field: must be a field name");
    expect_only(HTTP_POOL "url = http://h/\nid_field =\n", 8, "id_field: must be a field name");
    expect_only(HTTP_POOL "url = http://h/\ncontent_type =\n", 8, "content_type: must be a non-empty media type");
    expect_only(HTTP_POOL "url = http://h/\nbackoff_max = 2d\n", 8, "backoff_max: must be from 1ms to 1d");
    expect_only(HTTP_POOL "url = http://h/\ninflight = 1025\n", 8, "inflight: must be a whole number from 1 to 1024");
    expect_only(HTTP_POOL "url = http://h/\nconnect_timeout = 2m\n", 8, "connect_timeout: must be from 1ms to 1m");
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 2h\n", 8, "timeout: must be from 1ms to 1h");
}

/* RELIABILITY.md test 34: every problem of a file in one run, each at its line, in line order. */
static void test_many_errors_at_once(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld,
         "orphan = 1\n"                            /* 1 */
         "[fleet]\n"                               /* 2 */
         "redis = redis://:Hunter2pw@h:0\n"        /* 3 */
         "listen = localhost:9100\n"               /* 4 */
         "colour = blue\n"                         /* 5 */
         "log_level = loud\n"                      /* 6 */
         "[pool:a]\n"                              /* 7: missing group */
         "stream = s\n"                            /* 8 */
         "stream = s2\n"                           /* 9 */
         "workers = 0\n"                           /* 10 */
         "batch = 100000\n"                        /* 11 */
         "block = 5x\n"                            /* 12 */
         "handler = log\n"                         /* 13 */
         "url = http://h/\n"                       /* 14 */
         "nonsense\n"                              /* 15 */
         "[pool:a]\n"                              /* 16 */
         "[mystery]\n"                             /* 17 */
         "[pool:b]\n"                              /* 18 */
         "stream = t\ngroup = g\nhandler = http\n" /* 19-21 */
         "url = http://{host}/\n"                  /* 22 */
         "workers = 100000\n");                    /* 23 */
    assert_null(ld.c);
    const struct {
        int line;
        const char *sub;
    } want[] = {
        { 1, "key 'orphan' before any section" },
        { 3, "redis: port must be" },
        { 4, "listen: 'localhost' is not a numeric IPv4" },
        { 5, "unknown key 'colour' in [fleet]" },
        { 6, "log_level: must be one of" },
        { 7, "[pool:a] missing required key 'group'" },
        { 9, "duplicate key 'stream', first at line 8" },
        { 10, "workers: must be a whole number from 1 to 256 (got '0')" },
        { 11, "batch: must be a whole number from 1 to 10000 (got '100000')" },
        { 12, "block: not a duration (got '5x')" },
        { 14, "key 'url' only applies to handler = http" },
        { 15, "expected 'key = value' or '[section]'" },
        { 16, "duplicate [pool:a], first at line 7" },
        { 17, "unknown section [mystery]" },
        { 22, "url: placeholders are not allowed in the scheme, host or port" },
        { 23, "workers: must be a whole number from 1 to 256 (got '100000')" },
    };
    size_t n = sizeof want / sizeof want[0];
    expect_n(&ld, n);
    for (size_t i = 0; i < n; i++) {
        int at = find_err(&ld.e, ld.path, want[i].line, want[i].sub);
        if (at != (int)i) {
            dump(&ld.e);
            fail_msg("\"%s\" at line %d: found as problem %d, expected %zu", want[i].sub, want[i].line, at, i);
        }
    }
    no_secret(&ld.e, "Hunter2pw");
    unload(&ld);
}

/* ---- issue 4: retries, dead letters, orphans, dedupe ---- */

static void test_reliability_defaults(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET POOL);
    assert_non_null(ld.c);
    const struct pool_conf *p = &ld.c->pools[0];
    assert_int_equal(p->max_attempts, 5);
    assert_int_equal(p->backoff, BACKOFF_EXPONENTIAL);
    assert_int_equal(p->backoff_base_ms, 2000);
    assert_int_equal(p->backoff_max_ms, 3600000);
    assert_int_equal(p->backoff_jitter_pct, 20);
    assert_int_equal(p->claim_idle_ms, 300000);
    assert_string_equal(p->dlq, "s:dlq");
    assert_int_equal(p->dedupe_ttl_ms, 0);
    assert_int_equal(p->max_message_bytes, 1024 * 1024);
    unload(&ld);
}

static void test_reliability_keys_round_trip(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET POOL
         "max_attempts = 3\n"
         "backoff = linear\n"
         "backoff_base = 500ms\n"
         "backoff_max = 10m\n"
         "backoff_jitter = 0%\n"
         "claim_idle = 90s\n"
         "dlq = email_ingestion_stream:dead\n"
         "dedupe_ttl = 7d\n"
         "max_message_bytes = 512K\n"
         "[pool:q]\nstream = t\ngroup = g\nhandler = noop\n"
         "backoff = fixed\nbackoff_jitter = 15\nmax_attempts = 1000\nmax_message_bytes = 2M\n"
         "dedupe_ttl = 0\nclaim_idle = 7s\n");
    if (!ld.c)
        dump(&ld.e);
    assert_non_null(ld.c);
    const struct pool_conf *p = conf_pool(ld.c, "p");
    assert_int_equal(p->max_attempts, 3);
    assert_int_equal(p->backoff, BACKOFF_LINEAR);
    assert_int_equal(p->backoff_base_ms, 500);
    assert_int_equal(p->backoff_max_ms, 600000);
    assert_int_equal(p->backoff_jitter_pct, 0);
    assert_int_equal(p->claim_idle_ms, 90000);
    assert_string_equal(p->dlq, "email_ingestion_stream:dead");
    assert_int_equal(p->dedupe_ttl_ms, 7L * 86400 * 1000);
    assert_int_equal(p->max_message_bytes, 512 * 1024);
    const struct pool_conf *q = conf_pool(ld.c, "q");
    assert_int_equal(q->backoff, BACKOFF_FIXED);
    assert_int_equal(q->backoff_jitter_pct, 15);
    assert_int_equal(q->max_attempts, 1000);
    assert_int_equal(q->max_message_bytes, 2 * 1024 * 1024);
    assert_int_equal(q->dedupe_ttl_ms, 0);
    /* block 2s + 5s: the smallest claim_idle a log or noop pool accepts */
    assert_int_equal(q->claim_idle_ms, 7000);
    assert_string_equal(q->dlq, "t:dlq");
    unload(&ld);

    load(&ld, FLEET POOL "backoff = exponential\nbackoff_jitter = 100%\nmax_message_bytes = 1024\n"
                         "max_attempts = 1\n");
    assert_non_null(ld.c);
    assert_int_equal(ld.c->pools[0].backoff, BACKOFF_EXPONENTIAL);
    assert_int_equal(ld.c->pools[0].backoff_jitter_pct, 100);
    assert_int_equal(ld.c->pools[0].max_message_bytes, 1024);
    assert_int_equal(ld.c->pools[0].max_attempts, 1);
    unload(&ld);
}

static void test_reliability_keys_out_of_range(void **state)
{
    (void)state;
    expect_only(FLEET POOL "max_attempts = 0\n", 7, "max_attempts: must be a whole number from 1 to 1000 (got '0')");
    expect_only(FLEET POOL "max_attempts = 1001\n", 7, "max_attempts: must be a whole number from 1 to 1000");
    expect_only(FLEET POOL "max_attempts = three\n", 7, "max_attempts: must be a whole number");
    expect_only(FLEET POOL "backoff = random\n", 7,
                "backoff: must be one of exponential, linear, fixed (got 'random')");
    expect_only(FLEET POOL "backoff = Exponential\n", 7, "backoff: must be one of");
    expect_only(FLEET POOL "backoff_base = 0\n", 7, "backoff_base: must be from 1ms to 1d (got '0')");
    expect_only(FLEET POOL "backoff_base = 1.5s\n", 7, "backoff_base: not a duration");
    expect_only(FLEET POOL "backoff_max = 0ms\n", 7, "backoff_max: must be from 1ms to 1d");
    expect_only(FLEET POOL "backoff_jitter = 101%\n", 7,
                "backoff_jitter: must be a percentage from 0% to 100% (got '101%')");
    expect_only(FLEET POOL "backoff_jitter = -5%\n", 7, "backoff_jitter: must be a percentage");
    expect_only(FLEET POOL "backoff_jitter = %\n", 7, "backoff_jitter: must be a percentage");
    expect_only(FLEET POOL "backoff_jitter = 20%%\n", 7, "backoff_jitter: must be a percentage");
    expect_only(FLEET POOL "backoff_jitter = 2.5%\n", 7, "backoff_jitter: must be a percentage");
    expect_only(FLEET POOL "claim_idle = 999ms\n", 7, "claim_idle: must be from 1s to 7d (got '999ms')");
    expect_only(FLEET POOL "claim_idle = 8d\n", 7, "claim_idle: must be from 1s to 7d");
    expect_only(FLEET POOL "dedupe_ttl = 366d\n", 7, "dedupe_ttl: must be from 0s to 365d");
    expect_only(FLEET POOL "dedupe_ttl = forever\n", 7, "dedupe_ttl: not a duration");
    expect_only(FLEET POOL "max_message_bytes = 1023\n", 7,
                "max_message_bytes: must be a size from 1K to 512M, e.g. 512K or 1M (got '1023')");
    expect_only(FLEET POOL "max_message_bytes = 1G\n", 7, "max_message_bytes: must be a size from 1K to 512M");
    expect_only(FLEET POOL "max_message_bytes = 1.5M\n", 7, "max_message_bytes: must be a size");
    expect_only(FLEET POOL "max_message_bytes = 1MB\n", 7, "max_message_bytes: must be a size");
    expect_only(FLEET POOL "max_message_bytes = -1\n", 7, "max_message_bytes: must be a size");
    expect_only(FLEET POOL "dlq = a b\n", 7, "dlq: must be 1 to 48 printable characters without spaces");
    expect_only(FLEET POOL "dlq =\n", 7, "dlq: must be 1 to 48");
    expect_only(FLEET POOL "max_attempts = 2\nmax_attempts = 3\n", 8,
                "duplicate key 'max_attempts', first at line 7");
    expect_only(FLEET POOL "claim_idle = 1m\nclaim_idle = 2m\n", 8, "duplicate key 'claim_idle', first at line 7");
}

/* group_start decides where a group starts when it is first created. */
static void test_group_start(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET POOL "[pool:q]\nstream = t\ngroup = g\nhandler = noop\ngroup_start = latest\n"
                         "[pool:r]\nstream = u\ngroup = g\nhandler = noop\ngroup_start = earliest\n");
    if (!ld.c)
        dump(&ld.e);
    assert_non_null(ld.c);
    assert_false(conf_pool(ld.c, "p")->group_start_latest);       /* the default: earliest */
    assert_true(conf_pool(ld.c, "q")->group_start_latest);
    assert_false(conf_pool(ld.c, "r")->group_start_latest);
    assert_false(conf_pool_same(conf_pool(ld.c, "q"), conf_pool(ld.c, "r")));
    unload(&ld);
    expect_only(FLEET POOL "group_start = newest\n", 7,
                "group_start: must be one of earliest, latest (got 'newest')");
    expect_only(FLEET POOL "group_start = 0\n", 7, "group_start: must be one of earliest, latest");
}

/* A live worker's message must never look orphaned: claim_idle must outlast twice the HTTP
 * timeout (http pools) or block + 5 s (a read in progress: log and noop pools). */
static void test_claim_idle_must_outlast_what_a_live_worker_holds(void **state)
{
    (void)state;
    expect_only(FLEET POOL "claim_idle = 6s\n", 7, "claim_idle (6s) must be at least 7s (block + 5s)");
    expect_only(FLEET POOL "block = 7s\nclaim_idle = 11s\n", 8,
                "claim_idle (11s) must be at least 12s (block + 5s)");
    expect_only(FLEET "[pool:n]\nstream = s\ngroup = g\nhandler = noop\nblock = 500ms\nclaim_idle = 5s\n", 8,
                "claim_idle (5s) must be at least 5500ms (block + 5s)");
    /* http: the default timeout (30s) asks for a minute */
    expect_only(HTTP_POOL "url = http://h/\nclaim_idle = 59s\n", 8,
                "claim_idle (59s) must be at least 1m (twice the timeout)");
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 5s\nclaim_idle = 9999ms\n", 9,
                "claim_idle (9999ms) must be at least 10s (twice the timeout)");
    /* A retry waiting in a worker is touched every claim_idle/3, between requests: a long
     * block delays that, so claim_idle must be 1.5 x (block + 500ms) at least. */
    expect_only(FLEET POOL "block = 30s\nclaim_idle = 45s\n", 8,
                "claim_idle (45s) must be at least 45750ms (1.5 x (block + 500ms): a retry waiting in a "
                "worker is kept fresh every claim_idle/3, late by up to a blocking read)");
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 2s\nblock = 30s\nclaim_idle = 40s\n", 10,
                "claim_idle (40s) must be at least 45750ms (1.5 x (block + 500ms): a retry waiting in a "
                "worker is kept fresh every claim_idle/3, late by up to a blocking read)");
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 2s\nblock = 10s\nclaim_idle = 15s\n", 10,
                "claim_idle (15s) must be at least 15750ms (1.5 x (block + 500ms): a retry waiting in a "
                "worker is kept fresh every claim_idle/3, late by up to a blocking read)");
    /* A default claim_idle (5m) made too short by a long timeout: reported at the pool. */
    expect_only(HTTP_POOL "url = http://h/\ntimeout = 10m\n", 3,
                "claim_idle (5m) must be at least 20m (twice the timeout)");

    const char *good[] = {
        FLEET POOL "claim_idle = 7s\n",
        FLEET POOL "block = 7s\nclaim_idle = 12s\n",
        FLEET POOL "block = 30s\nclaim_idle = 46s\n",
        HTTP_POOL "url = http://h/\ntimeout = 2s\nblock = 10s\nclaim_idle = 16s\n",
        HTTP_POOL "url = http://h/\nclaim_idle = 1m\n",
        HTTP_POOL "url = http://h/\ntimeout = 2s\nclaim_idle = 4s\n",
        HTTP_POOL "url = http://h/\ntimeout = 1h\nclaim_idle = 2h\n",
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        struct loaded ld;
        load(&ld, good[i]);
        if (!ld.c) {
            dump(&ld.e);
            fail_msg("config %zu refused:\n%s", i, good[i]);
        }
        unload(&ld);
    }
}

static void test_backoff_base_must_not_exceed_backoff_max(void **state)
{
    (void)state;
    expect_only(FLEET POOL "backoff_base = 10s\nbackoff_max = 5s\n", 7,
                "backoff_base (10s) is longer than backoff_max (5s)");
    /* the default base (2s) against a short max: reported at the pool */
    expect_only(FLEET POOL "backoff_max = 1s\n", 3, "backoff_base (2s) is longer than backoff_max (1s)");
    struct loaded ld;
    load(&ld, FLEET POOL "backoff_base = 5s\nbackoff_max = 5s\n");
    assert_non_null(ld.c);
    unload(&ld);
}

static void test_dlq_defaults_to_stream_colon_dlq_and_is_never_the_stream(void **state)
{
    (void)state;
    expect_only(FLEET POOL "dlq = s\n", 3, "[pool:p] dlq must not be the stream itself");
    struct loaded ld;
    load(&ld, FLEET "[pool:a]\nstream = orders\ngroup = g\nhandler = log\n"
                    "[pool:b]\nstream = orders\ngroup = h\nhandler = log\ndlq = shared:dlq\n");
    assert_non_null(ld.c);
    assert_string_equal(conf_pool(ld.c, "a")->dlq, "orders:dlq");
    assert_string_equal(conf_pool(ld.c, "b")->dlq, "shared:dlq");
    unload(&ld);
}

/* All the reliability keys' mistakes of one file in one run, each at its line. */
static void test_reliability_errors_all_at_once(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET POOL
         "max_attempts = 0\n"           /* 7 */
         "backoff = sometimes\n"        /* 8 */
         "backoff_jitter = 200%\n"      /* 9 */
         "claim_idle = 2s\n"            /* 10 */
         "max_message_bytes = 10\n"     /* 11 */
         "dedupe_ttl = -1\n");          /* 12 */
    assert_null(ld.c);
    expect_err(&ld, 7, "max_attempts: must be a whole number");
    expect_err(&ld, 8, "backoff: must be one of");
    expect_err(&ld, 9, "backoff_jitter: must be a percentage");
    expect_err(&ld, 10, "claim_idle (2s) must be at least 7s");
    expect_err(&ld, 11, "max_message_bytes: must be a size");
    expect_err(&ld, 12, "dedupe_ttl: not a duration");
    expect_n(&ld, 6);
    unload(&ld);
}

static void test_errors_append(void **state)
{
    (void)state;
    /* conf_load appends: a caller may collect the problems of several files. */
    struct conf_errors e = { NULL, 0 };
    assert_null(conf_load("/nonexistent/a.ini", &e));
    assert_null(conf_load("/nonexistent/b.ini", &e));
    assert_int_equal(e.n, 2);
    assert_non_null(strstr(e.msg[0], "a.ini"));
    assert_non_null(strstr(e.msg[1], "b.ini"));
    conf_errors_release(&e);
    conf_free(NULL);
}

/* [handler:NAME] sections take the pool table's handler keys; a routed pool's targets are its
 * own keys with a section's; its capacity and timeout sum them up. */
static void test_handler_sections_and_routes(void **state)
{
    (void)state;
    struct loaded ld;
    load(&ld, FLEET                                                        /* lines 1-2 */
         "[handler:email]\nhandler = http\nurl = http://h/mail/{meta.id}\ninflight = 8\ntimeout = 40s\n"
         "header = X-A: 1\n"                                               /* 3-8 */
         "[handler:audit]\nhandler = log\n"                                /* 9-10 */
         "[handler:spare]\nhandler = noop\n"                               /* 11-12 */
         "[pool:jobs]\nstream = s\ngroup = g\nbatch = 5\nmax_attempts = 3\nroute_field = meta.type\n"
         "route.send_email = email\nroute.resend = email\nroute.default = audit\n"
         "[pool:all]\nstream = s2\ngroup = g\nhandler = email\n");
    expect_n(&ld, 0);
    const struct pool_conf *p = &ld.c->pools[0];
    assert_true(p->routed);
    assert_int_equal(p->nroutes, 2);
    assert_int_equal(p->ntargets, 2);
    assert_int_equal(p->routes[0].target, 0);
    assert_int_equal(p->routes[1].target, 0);
    assert_int_equal(p->route_default.target, 1);
    const struct pool_conf *t = &p->targets[0];
    assert_int_equal(t->handler, HANDLER_HTTP);
    assert_string_equal(t->url, "http://h/mail/{meta.id}");
    assert_int_equal(t->nheaders, 1);
    assert_int_equal(t->max_attempts, 3);          /* the pool's own key, set in the target too */
    assert_string_equal(t->stream, "s");
    assert_int_equal(p->targets[1].handler, HANDLER_LOG);
    assert_int_equal(p->handler, HANDLER_HTTP);
    assert_int_equal(p->inflight, 8 + 5);         /* http's inflight, log's batch */
    assert_int_equal(p->timeout_ms, 40000);
    const struct pool_conf *a = &ld.c->pools[1];
    assert_true(a->routed);
    assert_int_equal(a->ntargets, 1);
    assert_string_equal(a->route_default.handler, "email");
    /* spare is used by no pool: a warning, the config still loads */
    assert_int_equal(ld.c->nwarnings, 1);
    assert_non_null(strstr(ld.c->warnings[0], ":11: warning: [handler:spare] is used by no pool"));
    /* a reload with a section changed restarts the pools using it */
    struct loaded ld2;
    load(&ld2, FLEET "[handler:email]\nhandler = http\nurl = http://h/other\n"
         "[pool:all]\nstream = s2\ngroup = g\nhandler = email\n");
    expect_n(&ld2, 0);
    assert_false(conf_pool_same(&ld.c->pools[1], &ld2.c->pools[0]));
    unload(&ld2);
    unload(&ld);

    load(&ld, FLEET "[handler:h]\nhandler = http\nurl = http://h/\nworkers = 2\n"      /* 3-6 */
         "[handler:n]\nhandler = h\n"                                              /* 7-8 */
         "[pool:p]\nstream = s\ngroup = g\nroute.x = h\nroute.y = nope\nurl = http://i/\n"  /* 9-14 */
         "route.x = n\nroute.default = n\n");                                     /* 15-16 */
    expect_err(&ld, 6, "key 'workers' belongs to a pool");
    expect_err(&ld, 8, "handler must be a kind");
    expect_err(&ld, 12, "route.x needs route_field");
    expect_err(&ld, 13, "route.y: no [handler:nope] section");
    expect_err(&ld, 14, "key 'url' is a handler key");
    expect_err(&ld, 15, "duplicate key 'route.x', first at line 12");
    unload(&ld);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_full_config_round_trip, setup),
        cmocka_unit_test_setup(test_defaults, setup),
        cmocka_unit_test_setup(test_listen_ipv6, setup),
        cmocka_unit_test_setup(test_listen_bad, setup),
        cmocka_unit_test_setup(test_bools_and_words, setup),
        cmocka_unit_test_setup(test_redis_urls, setup),
        cmocka_unit_test_setup(test_redis_sentinel_urls, setup),
        cmocka_unit_test_setup(test_redis_node_lists, setup),
        cmocka_unit_test_setup(test_redis_unix, setup),
        cmocka_unit_test_setup(test_redis_errors_hide_password, setup),
        cmocka_unit_test_setup(test_inline_comment_after_secret, setup),
        cmocka_unit_test_setup(test_env_override, setup),
        cmocka_unit_test_setup(test_missing_redis, setup),
        cmocka_unit_test_setup(test_missing_file, setup),
        cmocka_unit_test_setup(test_unreadable_file, setup),
        cmocka_unit_test_setup(test_empty_file, setup),
        cmocka_unit_test_setup(test_long_line_tail_not_parsed, setup),
        cmocka_unit_test_setup(test_line_length_limit, setup),
        cmocka_unit_test_setup(test_long_section_names, setup),
        cmocka_unit_test_setup(test_long_key_name, setup),
        cmocka_unit_test_setup(test_malformed_lines, setup),
        cmocka_unit_test_setup(test_nul_byte, setup),
        cmocka_unit_test_setup(test_unknown_key_and_section, setup),
        cmocka_unit_test_setup(test_pool_names, setup),
        cmocka_unit_test_setup(test_duplicates, setup),
        cmocka_unit_test_setup(test_missing_required, setup),
        cmocka_unit_test_setup(test_numbers_out_of_range, setup),
        cmocka_unit_test_setup(test_handler_and_http_only_keys, setup),
        cmocka_unit_test_setup(test_exec_keys, setup),
        cmocka_unit_test_setup(test_url_rules, setup),
        cmocka_unit_test_setup(test_headers, setup),
        cmocka_unit_test_setup(test_tls_and_files, setup),
        cmocka_unit_test_setup(test_cross_key_rules, setup),
        cmocka_unit_test_setup(test_priority_streams, setup),
        cmocka_unit_test_setup(test_shard_ranges, setup),
        cmocka_unit_test_setup(test_names_and_fields, setup),
        cmocka_unit_test_setup(test_many_errors_at_once, setup),
        cmocka_unit_test_setup(test_errors_append, setup),
        cmocka_unit_test_setup(test_reliability_defaults, setup),
        cmocka_unit_test_setup(test_reliability_keys_round_trip, setup),
        cmocka_unit_test_setup(test_reliability_keys_out_of_range, setup),
        cmocka_unit_test_setup(test_claim_idle_must_outlast_what_a_live_worker_holds, setup),
        cmocka_unit_test_setup(test_group_start, setup),
        cmocka_unit_test_setup(test_backoff_base_must_not_exceed_backoff_max, setup),
        cmocka_unit_test_setup(test_dlq_defaults_to_stream_colon_dlq_and_is_never_the_stream, setup),
        cmocka_unit_test_setup(test_reliability_errors_all_at_once, setup),
        cmocka_unit_test_setup(test_handler_sections_and_routes, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
