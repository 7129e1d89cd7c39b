// links: child/classify.c
/* test_classify.c: every row of the response classification table, and Retry-After in each
 * form a receiver may send it. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

/* Only to check that classify.h's numbers are libcurl's: the handler code never includes it. */
#include <curl/curl.h>

#include "child/classify.h"

#define CAP 3600000L
static const time_t NOW = 784111777;        /* Sun, 06 Nov 1994 08:49:37 GMT */

struct row {
    int curl;
    long status;
    enum disposition disp;
    enum classify_kind kind;
    const char *reason;
};

static const struct row table[] = {
    /* delivered */
    { 0, 200, DISP_ACK, CL_DELIVERED, "" },
    { 0, 201, DISP_ACK, CL_DELIVERED, "" },
    { 0, 202, DISP_ACK, CL_DELIVERED, "" },
    { 0, 204, DISP_ACK, CL_DELIVERED, "" },
    { 0, 299, DISP_ACK, CL_DELIVERED, "" },
    /* transient: this message, later */
    { 0, 408, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 425, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 429, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 500, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 501, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 505, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 507, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 599, DISP_RETRY, CL_TRANSIENT, "" },
    /* outage: the endpoint is down */
    { 0, 502, DISP_RETRY, CL_OUTAGE, "" },
    { 0, 503, DISP_RETRY, CL_OUTAGE, "" },
    { 0, 504, DISP_RETRY, CL_OUTAGE, "" },
    /* permanent: redirects are not followed, other 4xx refuse the message */
    { 0, 300, DISP_DEAD, CL_PERMANENT, "http_300" },
    { 0, 301, DISP_DEAD, CL_PERMANENT, "http_301" },
    { 0, 302, DISP_DEAD, CL_PERMANENT, "http_302" },
    { 0, 304, DISP_DEAD, CL_PERMANENT, "http_304" },
    { 0, 307, DISP_DEAD, CL_PERMANENT, "http_307" },
    { 0, 308, DISP_DEAD, CL_PERMANENT, "http_308" },
    { 0, 400, DISP_DEAD, CL_PERMANENT, "http_400" },
    { 0, 401, DISP_DEAD, CL_PERMANENT, "http_401" },
    { 0, 403, DISP_DEAD, CL_PERMANENT, "http_403" },
    { 0, 404, DISP_DEAD, CL_PERMANENT, "http_404" },
    { 0, 405, DISP_DEAD, CL_PERMANENT, "http_405" },
    { 0, 409, DISP_DEAD, CL_PERMANENT, "http_409" },
    { 0, 410, DISP_DEAD, CL_PERMANENT, "http_410" },
    { 0, 413, DISP_DEAD, CL_PERMANENT, "http_413" },
    { 0, 422, DISP_DEAD, CL_PERMANENT, "http_422" },
    { 0, 451, DISP_DEAD, CL_PERMANENT, "http_451" },
    { 0, 499, DISP_DEAD, CL_PERMANENT, "http_499" },
    /* no usable status from a transfer libcurl calls fine */
    { 0, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 100, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 600, DISP_RETRY, CL_TRANSIENT, "" },
    { 0, 999, DISP_RETRY, CL_TRANSIENT, "" },
    /* transport: the endpoint cannot be reached */
    { CURLE_COULDNT_RESOLVE_PROXY, 0, DISP_RETRY, CL_OUTAGE, "" },
    { CURLE_COULDNT_RESOLVE_HOST, 0, DISP_RETRY, CL_OUTAGE, "" },
    { CURLE_COULDNT_CONNECT, 0, DISP_RETRY, CL_OUTAGE, "" },
    { CURLE_OPERATION_TIMEDOUT, 0, DISP_RETRY, CL_OUTAGE, "" },
    { CURLE_QUIC_CONNECT_ERROR, 0, DISP_RETRY, CL_OUTAGE, "" },
    /* transport: a connection broke mid-exchange (a missing client certificate is 55/56) */
    { CURLE_GOT_NOTHING, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_SEND_ERROR, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_RECV_ERROR, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_PARTIAL_FILE, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_WEIRD_SERVER_REPLY, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_HTTP2, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_HTTP2_STREAM, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_HTTP3, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_OUT_OF_MEMORY, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { CURLE_TOO_MANY_REDIRECTS, 0, DISP_RETRY, CL_TRANSIENT, "" },
    { 9999, 0, DISP_RETRY, CL_TRANSIENT, "" },
    /* TLS refused: a config problem, retried (held by the breaker), never dead at once */
    { CURLE_SSL_CONNECT_ERROR, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_ENGINE_NOTFOUND, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_CERTPROBLEM, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_CIPHER, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_PEER_FAILED_VERIFICATION, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_CACERT_BADFILE, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_CRL_BADFILE, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_ISSUER_ERROR, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_PINNEDPUBKEYNOTMATCH, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_INVALIDCERTSTATUS, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_SSL_CLIENTCERT, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_UNSUPPORTED_PROTOCOL, 0, DISP_RETRY, CL_CONFIG, "" },
    { CURLE_URL_MALFORMAT, 0, DISP_RETRY, CL_CONFIG, "" },
    /* a transport error wins over a status seen before it (e.g. a timeout mid-body) */
    { CURLE_OPERATION_TIMEDOUT, 200, DISP_RETRY, CL_OUTAGE, "" },
    { CURLE_RECV_ERROR, 422, DISP_RETRY, CL_TRANSIENT, "" },
};

static void test_classification_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++) {
        const struct row *r = &table[i];
        struct verdict v;
        memset(&v, 0xa5, sizeof v);
        classify(r->curl, r->status, NULL, NOW, CAP, &v);
        if (v.disp != r->disp || v.kind != r->kind || strcmp(v.reason, r->reason) != 0)
            fail_msg("row %zu (curl %d, status %ld): got disp %d kind %d reason '%s', want %d %d '%s'",
                     i, r->curl, r->status, v.disp, v.kind, v.reason, r->disp, r->kind, r->reason);
        assert_int_equal(v.retry_after_ms, -1);
        if (r->disp == DISP_ACK)
            assert_null(v.error);
        else
            assert_non_null(v.error);
    }
}

static void test_curl_numbers_are_libcurls(void **state)
{
    (void)state;
    assert_int_equal(CL_CURLE_OK, CURLE_OK);
    assert_int_equal(CL_CURLE_UNSUPPORTED_PROTOCOL, CURLE_UNSUPPORTED_PROTOCOL);
    assert_int_equal(CL_CURLE_URL_MALFORMAT, CURLE_URL_MALFORMAT);
    assert_int_equal(CL_CURLE_COULDNT_RESOLVE_PROXY, CURLE_COULDNT_RESOLVE_PROXY);
    assert_int_equal(CL_CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_HOST);
    assert_int_equal(CL_CURLE_COULDNT_CONNECT, CURLE_COULDNT_CONNECT);
    assert_int_equal(CL_CURLE_WEIRD_SERVER_REPLY, CURLE_WEIRD_SERVER_REPLY);
    assert_int_equal(CL_CURLE_HTTP2, CURLE_HTTP2);
    assert_int_equal(CL_CURLE_PARTIAL_FILE, CURLE_PARTIAL_FILE);
    assert_int_equal(CL_CURLE_OUT_OF_MEMORY, CURLE_OUT_OF_MEMORY);
    assert_int_equal(CL_CURLE_OPERATION_TIMEDOUT, CURLE_OPERATION_TIMEDOUT);
    assert_int_equal(CL_CURLE_SSL_CONNECT_ERROR, CURLE_SSL_CONNECT_ERROR);
    assert_int_equal(CL_CURLE_TOO_MANY_REDIRECTS, CURLE_TOO_MANY_REDIRECTS);
    assert_int_equal(CL_CURLE_GOT_NOTHING, CURLE_GOT_NOTHING);
    assert_int_equal(CL_CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_ENGINE_NOTFOUND);
    assert_int_equal(CL_CURLE_SEND_ERROR, CURLE_SEND_ERROR);
    assert_int_equal(CL_CURLE_RECV_ERROR, CURLE_RECV_ERROR);
    assert_int_equal(CL_CURLE_SSL_CERTPROBLEM, CURLE_SSL_CERTPROBLEM);
    assert_int_equal(CL_CURLE_SSL_CIPHER, CURLE_SSL_CIPHER);
    assert_int_equal(CL_CURLE_PEER_FAILED_VERIFICATION, CURLE_PEER_FAILED_VERIFICATION);
    assert_int_equal(CL_CURLE_SSL_CACERT_BADFILE, CURLE_SSL_CACERT_BADFILE);
    assert_int_equal(CL_CURLE_SSL_CRL_BADFILE, CURLE_SSL_CRL_BADFILE);
    assert_int_equal(CL_CURLE_SSL_ISSUER_ERROR, CURLE_SSL_ISSUER_ERROR);
    assert_int_equal(CL_CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_PINNEDPUBKEYNOTMATCH);
    assert_int_equal(CL_CURLE_SSL_INVALIDCERTSTATUS, CURLE_SSL_INVALIDCERTSTATUS);
    assert_int_equal(CL_CURLE_HTTP2_STREAM, CURLE_HTTP2_STREAM);
    assert_int_equal(CL_CURLE_HTTP3, CURLE_HTTP3);
    assert_int_equal(CL_CURLE_QUIC_CONNECT_ERROR, CURLE_QUIC_CONNECT_ERROR);
    assert_int_equal(CL_CURLE_SSL_CLIENTCERT, CURLE_SSL_CLIENTCERT);
}

/* Retry-After is honoured on every retry that came with an HTTP answer, and capped. */
static void test_retry_after_on_retries(void **state)
{
    (void)state;
    static const long retried[] = { 408, 425, 429, 500, 501, 502, 503, 504 };
    for (size_t i = 0; i < sizeof retried / sizeof retried[0]; i++) {
        struct verdict v;
        classify(0, retried[i], "7", NOW, CAP, &v);
        assert_int_equal(v.disp, DISP_RETRY);
        assert_int_equal(v.retry_after_ms, 7000);
        classify(0, retried[i], "120", NOW, 60000, &v);
        assert_int_equal(v.retry_after_ms, 60000);
        classify(0, retried[i], "Sun, 06 Nov 1994 08:49:44 GMT", NOW, CAP, &v);
        assert_int_equal(v.retry_after_ms, 7000);
        classify(0, retried[i], "soon", NOW, CAP, &v);
        assert_int_equal(v.retry_after_ms, -1);
    }
    /* not on success, permanent failures, or transport errors */
    struct verdict v;
    classify(0, 200, "7", NOW, CAP, &v);
    assert_int_equal(v.retry_after_ms, -1);
    classify(0, 422, "7", NOW, CAP, &v);
    assert_int_equal(v.retry_after_ms, -1);
    classify(0, 301, "7", NOW, CAP, &v);
    assert_int_equal(v.retry_after_ms, -1);
    classify(CURLE_COULDNT_CONNECT, 0, "7", NOW, CAP, &v);
    assert_int_equal(v.retry_after_ms, -1);
}

static void test_retry_after_forms(void **state)
{
    (void)state;
    assert_int_equal(classify_retry_after(NULL, NOW, CAP), -1);
    assert_int_equal(classify_retry_after("", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("   ", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("0", NOW, CAP), 0);
    assert_int_equal(classify_retry_after("1", NOW, CAP), 1000);
    assert_int_equal(classify_retry_after(" 7 ", NOW, CAP), 7000);
    assert_int_equal(classify_retry_after("7\r\n", NOW, CAP), 7000);
    assert_int_equal(classify_retry_after("3600", NOW, CAP), 3600000);
    assert_int_equal(classify_retry_after("3601", NOW, CAP), CAP);
    assert_int_equal(classify_retry_after("99999999999999999999999", NOW, CAP), CAP);
    assert_int_equal(classify_retry_after("7", NOW, 5000), 5000);
    /* not numbers */
    assert_int_equal(classify_retry_after("-1", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("1.5", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("7s", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("+7", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("0x10", NOW, CAP), -1);

    /* the three HTTP-date forms of RFC 9110, 7 s after NOW */
    assert_int_equal(classify_retry_after("Sun, 06 Nov 1994 08:49:44 GMT", NOW, CAP), 7000);
    assert_int_equal(classify_retry_after("Sunday, 06-Nov-94 08:49:44 GMT", NOW, CAP), 7000);
    assert_int_equal(classify_retry_after("Sun Nov  6 08:49:44 1994", NOW, CAP), 7000);
    /* across a day, a month and a year boundary, and a leap day */
    assert_int_equal(classify_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", NOW, CAP * 100), 86400000L);
    time_t nye = 1704067199;       /* Sun, 31 Dec 2023 23:59:59 GMT */
    assert_int_equal(classify_retry_after("Mon, 01 Jan 2024 00:00:09 GMT", nye, CAP), 10000);
    time_t leap = 1709164800;      /* Thu, 29 Feb 2024 00:00:00 GMT */
    assert_int_equal(classify_retry_after("Thu, 29 Feb 2024 00:01:00 GMT", leap, CAP), 60000);
    assert_int_equal(classify_retry_after("Fri, 01 Mar 2024 00:00:00 GMT", leap, CAP * 100), 86400000L);
    /* in the past: now */
    assert_int_equal(classify_retry_after("Sun, 06 Nov 1994 08:49:36 GMT", NOW, CAP), 0);
    assert_int_equal(classify_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", NOW, CAP), 0);
    /* far future: capped */
    assert_int_equal(classify_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW, CAP), CAP);
    /* broken dates */
    assert_int_equal(classify_retry_after("Sun, 06 Nov 1994 08:49:44", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun, 06 Nov 1994 08:49:44 UTC", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun, 06 Foo 1994 08:49:44 GMT", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun, 32 Nov 1994 08:49:44 GMT", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun, 06 Nov 1994 25:49:44 GMT", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun, 06 Nov 94 08:49:44 GMT", NOW, CAP), 7000);
    assert_int_equal(classify_retry_after("Sun, 06 Nov 199 08:49:44 GMT", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun Nov  6 08:49:44 94", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("tomorrow", NOW, CAP), -1);
    assert_int_equal(classify_retry_after("Sun,", NOW, CAP), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classification_table),
        cmocka_unit_test(test_curl_numbers_are_libcurls),
        cmocka_unit_test(test_retry_after_on_retries),
        cmocka_unit_test(test_retry_after_forms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
