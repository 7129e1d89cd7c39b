// links:
/* test_argv.c: a command splits into the words a POSIX shell would give, and what a shell
 * would expand or act on is refused rather than passed on literally. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/argv.h"

/* Split s; the words joined by '|' (or "ERR" on failure), for compact assertions. */
static const char *split(const char *s)
{
    static char out[1024];
    char err[256];
    char **argv;
    int n = argv_split(s, &argv, err, sizeof err);
    if (n == -1) {
        assert_null(argv);
        assert_true(strlen(err) > 0);
        return "ERR";
    }
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(out, "|");
        strcat(out, argv[i]);
    }
    assert_null(argv[n]);
    argv_free(argv);
    return out;
}

static void test_plain_words(void **state)
{
    (void)state;
    assert_string_equal(split("/usr/local/bin/send-email --fast"), "/usr/local/bin/send-email|--fast");
    assert_string_equal(split("  a\tb \n c  "), "a|b|c");
    assert_string_equal(split(""), "");
    assert_string_equal(split("   "), "");
    assert_string_equal(split("a=b c,d e.f:g/h@i%j+k-l_m"), "a=b|c,d|e.f:g/h@i%j+k-l_m");
}

static void test_quotes(void **state)
{
    (void)state;
    assert_string_equal(split("python3 -c 'print(1); x = \"a\"'"), "python3|-c|print(1); x = \"a\"");
    assert_string_equal(split("echo \"a  b\" 'c  d'"), "echo|a  b|c  d");
    assert_string_equal(split("a'b'\"c\"d"), "abcd");
    assert_string_equal(split("x '' \"\""), "x||");
    assert_string_equal(split("a \"\"\"\""), "a|");          /* found by fuzz_argv: one empty word */
    assert_string_equal(split("'$HOME' \"*\" '|'"), "$HOME|*||");
    assert_string_equal(split("'a\\b'"), "a\\b");              /* no escapes in '' */
    assert_string_equal(split("\"a\\\"b\\\\c\\$d\\`e\\nf\""), "a\"b\\c$d`e\\nf");
}

static void test_backslashes(void **state)
{
    (void)state;
    assert_string_equal(split("a\\ b c"), "a b|c");
    assert_string_equal(split("\\$HOME \\|"), "$HOME||");
    assert_string_equal(split("a \\\n b"), "a|b");             /* line continuation */
    assert_string_equal(split("a\\\nb"), "ab");
    assert_string_equal(split("\\'x"), "'x");
}

static void test_errors(void **state)
{
    (void)state;
    assert_string_equal(split("echo 'abc"), "ERR");
    assert_string_equal(split("echo \"abc"), "ERR");
    assert_string_equal(split("echo \"a\\\""), "ERR");
    assert_string_equal(split("echo abc\\"), "ERR");
    assert_string_equal(split("a | b"), "ERR");
    assert_string_equal(split("a;b"), "ERR");
    assert_string_equal(split("a > f"), "ERR");
    assert_string_equal(split("a && b"), "ERR");
    assert_string_equal(split("echo $HOME"), "ERR");
    assert_string_equal(split("echo `id`"), "ERR");
    assert_string_equal(split("ls *.c"), "ERR");
    assert_string_equal(split("ls ~/x"), "ERR");
    assert_string_equal(split("a #comment"), "ERR");
    /* Only at a word's start are # and ~ special. */
    assert_string_equal(split("a#b c~d"), "a#b|c~d");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_words),
        cmocka_unit_test(test_quotes),
        cmocka_unit_test(test_backslashes),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
