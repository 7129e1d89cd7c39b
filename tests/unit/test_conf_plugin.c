/* test_conf_plugin.c: the keys of handler = plugin: `plugin = PATH`, `plugin.KEY = value`
 * (kept in the order of the file, repeats too), and the rules that tie them to the handler. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/conf.h"
#include "tests/unit/scratch.h"

#define SO "/tmp/sf_test_conf_plugin.so"

static struct conf *load(const char *text, char **path, struct conf_errors *e)
{
    *path = scratch_write(text);
    *e = (struct conf_errors){ NULL, 0 };
    return conf_load(*path, e);
}

static void done(struct conf *c, char *path, struct conf_errors *e)
{
    conf_free(c);
    conf_errors_release(e);
    scratch_drop(path);
}

/* Whether a problem "PATH:LINE: ...sub..." was reported. */
static bool has_err(const struct conf_errors *e, const char *path, int line, const char *sub)
{
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s:%d: ", path, line);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->msg[i], prefix, strlen(prefix)) == 0 && strstr(e->msg[i], sub))
            return true;
    for (size_t i = 0; i < e->n; i++)
        fprintf(stderr, "    %s\n", e->msg[i]);
    return false;
}

static int setup(void **state)
{
    (void)state;
    unsetenv("STREAMFLEET_REDIS");
    FILE *f = fopen(SO, "w");
    assert_non_null(f);
    fclose(f);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    unlink(SO);
    return 0;
}

static void test_params_in_file_order_with_repeats(void **state)
{
    (void)state;
    char *path;
    struct conf_errors e;
    struct conf *c = load("[fleet]\nredis = redis://127.0.0.1:6379\n"
                          "[pool:p]\nstream = s\ngroup = g\nhandler = plugin\n"
                          "plugin.b = 2\n"
                          "plugin = " SO "\n"
                          "plugin.a = one ; two\n"
                          "plugin.b = 3\n", &path, &e);
    assert_non_null(c);
    const struct pool_conf *p = &c->pools[0];
    assert_int_equal(p->handler, HANDLER_PLUGIN);
    assert_string_equal(p->plugin, SO);
    assert_int_equal(p->plugin_line, 8);
    assert_int_equal(p->plugin_params_line, 7);
    assert_int_equal(p->nplugin_params, 3);
    const char *want[] = { "b", "2", "a", "one", "b", "3" };    /* inih cuts at " ;" */
    for (size_t i = 0; i < 6; i++)
        assert_string_equal(p->plugin_params[i], want[i]);
    done(c, path, &e);
}

static void test_pool_same_compares_plugin_and_params(void **state)
{
    (void)state;
    const char *base = "[fleet]\nredis = redis://127.0.0.1:6379\n"
                       "[pool:p]\nstream = s\ngroup = g\nhandler = plugin\nplugin = " SO "\n";
    char text[4][512];
    snprintf(text[0], sizeof text[0], "%splugin.a = 1\nplugin.b = 2\n", base);
    snprintf(text[1], sizeof text[1], "%splugin.a = 1\nplugin.b = 2\n", base);
    snprintf(text[2], sizeof text[2], "%splugin.a = 1\nplugin.b = 3\n", base);
    snprintf(text[3], sizeof text[3], "%splugin.b = 2\nplugin.a = 1\n", base);
    char *path[4];
    struct conf_errors e[4];
    struct conf *c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = load(text[i], &path[i], &e[i]);
        assert_non_null(c[i]);
    }
    assert_true(conf_pool_same(&c[0]->pools[0], &c[1]->pools[0]));
    assert_false(conf_pool_same(&c[0]->pools[0], &c[2]->pools[0]));
    assert_false(conf_pool_same(&c[0]->pools[0], &c[3]->pools[0]));
    for (int i = 0; i < 4; i++)
        done(c[i], path[i], &e[i]);
}

static void test_plugin_rules(void **state)
{
    (void)state;
    char *path;
    struct conf_errors e;
    struct conf *c = load("[fleet]\nredis = redis://127.0.0.1:6379\n"
                          "[pool:a]\nstream = s\ngroup = g\nhandler = plugin\n"      /* 3: no plugin */
                          "plugin.bad name = 1\n"                                   /* 7 */
                          "[pool:b]\nstream = s2\ngroup = g\nhandler = noop\n"     /* 8 */
                          "plugin = " SO "\n"                                      /* 12 */
                          "plugin.x = 1\n"                                         /* 13 */
                          "[pool:c]\nstream = s3\ngroup = g\nhandler = plugin\n"
                          "plugin = relative/x.so\n"                               /* 18 */
                          "[pool:d]\nstream = s4\ngroup = g\nhandler = plugin\n"
                          "plugin = /nonexistent/x.so\n",                          /* 23 */
                          &path, &e);
    assert_null(c);
    assert_true(has_err(&e, path, 3, "missing required key 'plugin'"));
    assert_true(has_err(&e, path, 7, "plugin.bad name"));
    assert_true(has_err(&e, path, 12, "only applies to handler = plugin"));
    assert_true(has_err(&e, path, 13, "only apply to handler = plugin"));
    assert_true(has_err(&e, path, 18, "absolute path"));
    assert_true(has_err(&e, path, 23, "/nonexistent/x.so"));
    assert_int_equal(e.n, 6);
    done(c, path, &e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_params_in_file_order_with_repeats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_same_compares_plugin_and_params, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plugin_rules, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
