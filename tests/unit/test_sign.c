// links: child/sign.c
/* test_sign.c: Standard Webhooks signatures, against the specification's own test vector and
 * against secrets read from files the way an operator writes them. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "child/sign.h"

/* From the Standard Webhooks reference libraries' tests. */
#define VEC_SECRET "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
#define VEC_ID "msg_p5jXN8AQM9LWM0D4loKWxJek"
#define VEC_TS 1614265330LL
#define VEC_BODY "{\"test\": 2432232314}"
#define VEC_SIG "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="

static void expect_vector(struct sign *sg)
{
    assert_non_null(sg);
    struct buf b = BUF_INIT;
    assert_int_equal(sign_webhook(sg, VEC_ID, strlen(VEC_ID), VEC_TS, VEC_BODY, strlen(VEC_BODY), &b), 0);
    assert_string_equal(b.p, VEC_SIG);
    /* a second signature with the same signer gives the same answer (the key is reused) */
    buf_reset(&b);
    assert_int_equal(sign_webhook(sg, VEC_ID, strlen(VEC_ID), VEC_TS, VEC_BODY, strlen(VEC_BODY), &b), 0);
    assert_string_equal(b.p, VEC_SIG);
    buf_release(&b);
}

static void test_standard_webhooks_vector(void **state)
{
    (void)state;
    char err[256];
    struct sign *sg = sign_open(VEC_SECRET, strlen(VEC_SECRET), err, sizeof err);
    expect_vector(sg);
    sign_free(sg);
}

static void test_other_inputs_change_the_signature(void **state)
{
    (void)state;
    char err[256];
    struct sign *sg = sign_open(VEC_SECRET, strlen(VEC_SECRET), err, sizeof err);
    assert_non_null(sg);
    struct buf b = BUF_INIT;
    assert_int_equal(sign_webhook(sg, VEC_ID, strlen(VEC_ID), VEC_TS + 1, VEC_BODY, strlen(VEC_BODY), &b), 0);
    assert_string_not_equal(b.p, VEC_SIG);
    assert_memory_equal(b.p, "v1,", 3);
    assert_int_equal(b.len, strlen(VEC_SIG));
    buf_reset(&b);
    assert_int_equal(sign_webhook(sg, "msg_x", 5, VEC_TS, VEC_BODY, strlen(VEC_BODY), &b), 0);
    assert_string_not_equal(b.p, VEC_SIG);
    buf_reset(&b);
    /* an empty body and a body with NUL bytes are signed as bytes */
    assert_int_equal(sign_webhook(sg, VEC_ID, strlen(VEC_ID), VEC_TS, "", 0, &b), 0);
    assert_int_equal(b.len, strlen(VEC_SIG));
    buf_release(&b);
    sign_free(sg);
}

static void test_plain_secret_is_used_as_bytes(void **state)
{
    (void)state;
    char err[256];
    struct sign *sg = sign_open("key", 3, err, sizeof err);
    assert_non_null(sg);
    struct buf b = BUF_INIT;
    /* the same key given as whsec_<base64>: base64("key") = "a2V5" */
    assert_int_equal(sign_webhook(sg, "a", 1, 1, "b", 1, &b), 0);
    struct sign *sg2 = sign_open("whsec_a2V5", 10, err, sizeof err);
    assert_non_null(sg2);
    struct buf b2 = BUF_INIT;
    assert_int_equal(sign_webhook(sg2, "a", 1, 1, "b", 1, &b2), 0);
    assert_string_equal(b.p, b2.p);
    /* HMAC-SHA256("key", "a.1.b"), computed with Python's hmac module */
    assert_string_equal(b.p, "v1,x5tOcy8TSmcrIlScag+jdQEcfzV2fwdz8mSFheg7RaQ=");
    buf_release(&b);
    buf_release(&b2);
    sign_free(sg);
    sign_free(sg2);
}

static char *write_tmp(const char *content, size_t n)
{
    char *path = strdup("/tmp/test_sign.XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, n), (ssize_t)n);
    close(fd);
    return path;
}

static void test_secret_file_trimmed_and_decoded(void **state)
{
    (void)state;
    static const char *const forms[] = {
        VEC_SECRET, VEC_SECRET "\n", VEC_SECRET "\r\n", VEC_SECRET "  \n\n", VEC_SECRET "\t",
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char *path = write_tmp(forms[i], strlen(forms[i]));
        char err[256] = "";
        struct sign *sg = sign_open_file(path, err, sizeof err);
        if (sg == NULL)
            fail_msg("form %zu: %s", i, err);
        expect_vector(sg);
        sign_free(sg);
        unlink(path);
        free(path);
    }
}

static void test_bad_secrets_are_refused(void **state)
{
    (void)state;
    char err[256];
    assert_null(sign_open("", 0, err, sizeof err));
    assert_non_null(strstr(err, "empty"));
    assert_null(sign_open("whsec_", 6, err, sizeof err));
    assert_null(sign_open("whsec_not base64!", 17, err, sizeof err));
    assert_non_null(strstr(err, "base64"));
    assert_null(sign_open("whsec_a", 7, err, sizeof err));     /* one char: not a quad */

    char *path = write_tmp("\n\n", 2);
    assert_null(sign_open_file(path, err, sizeof err));
    assert_non_null(strstr(err, path));
    unlink(path);
    free(path);

    char big[5000];
    memset(big, 'k', sizeof big);
    path = write_tmp(big, sizeof big);
    assert_null(sign_open_file(path, err, sizeof err));
    assert_non_null(strstr(err, "longer"));
    unlink(path);
    free(path);

    assert_null(sign_open_file("/nonexistent/secret", err, sizeof err));
    assert_non_null(strstr(err, "/nonexistent/secret"));
}

static void test_unpadded_whsec_is_accepted(void **state)
{
    (void)state;
    char err[256];
    /* base64("ke") = "a2U=": also accepted without its padding */
    struct sign *a = sign_open("whsec_a2U=", 10, err, sizeof err);
    struct sign *b = sign_open("whsec_a2U", 9, err, sizeof err);
    struct sign *c = sign_open("ke", 2, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    struct buf x = BUF_INIT, y = BUF_INIT, z = BUF_INIT;
    sign_webhook(a, "i", 1, 2, "b", 1, &x);
    sign_webhook(b, "i", 1, 2, "b", 1, &y);
    sign_webhook(c, "i", 1, 2, "b", 1, &z);
    assert_string_equal(x.p, y.p);
    assert_string_equal(x.p, z.p);
    buf_release(&x);
    buf_release(&y);
    buf_release(&z);
    sign_free(a);
    sign_free(b);
    sign_free(c);
    sign_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_standard_webhooks_vector),
        cmocka_unit_test(test_other_inputs_change_the_signature),
        cmocka_unit_test(test_plain_secret_is_used_as_bytes),
        cmocka_unit_test(test_secret_file_trimmed_and_decoded),
        cmocka_unit_test(test_bad_secrets_are_refused),
        cmocka_unit_test(test_unpadded_whsec_is_accepted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
