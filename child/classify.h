/* classify.h: what the answer to one HTTP delivery means for its message. Pure: no I/O, no
 * clock, no libcurl (transport errors arrive as libcurl's numbers, which are part of its ABI).
 *
 * The whole policy is one table in classify(); tests/unit/test_classify.c walks every row. */
#ifndef SF_CLASSIFY_H
#define SF_CLASSIFY_H

#include <time.h>

#include "child/handler.h"

/* The libcurl result codes the table names (CURLcode values; libcurl never renumbers them:
 * test_classify.c checks each against <curl/curl.h>). */
enum classify_curl {
    CL_CURLE_OK = 0,
    CL_CURLE_UNSUPPORTED_PROTOCOL = 1,
    CL_CURLE_URL_MALFORMAT = 3,
    CL_CURLE_COULDNT_RESOLVE_PROXY = 5,
    CL_CURLE_COULDNT_RESOLVE_HOST = 6,
    CL_CURLE_COULDNT_CONNECT = 7,
    CL_CURLE_WEIRD_SERVER_REPLY = 8,
    CL_CURLE_HTTP2 = 16,
    CL_CURLE_PARTIAL_FILE = 18,
    CL_CURLE_OUT_OF_MEMORY = 27,
    CL_CURLE_OPERATION_TIMEDOUT = 28,
    CL_CURLE_SSL_CONNECT_ERROR = 35,
    CL_CURLE_TOO_MANY_REDIRECTS = 47,
    CL_CURLE_GOT_NOTHING = 52,
    CL_CURLE_SSL_ENGINE_NOTFOUND = 53,
    CL_CURLE_SEND_ERROR = 55,
    CL_CURLE_RECV_ERROR = 56,
    CL_CURLE_SSL_CERTPROBLEM = 58,
    CL_CURLE_SSL_CIPHER = 59,
    CL_CURLE_PEER_FAILED_VERIFICATION = 60,
    CL_CURLE_SSL_CACERT_BADFILE = 77,
    CL_CURLE_SSL_CRL_BADFILE = 82,
    CL_CURLE_SSL_ISSUER_ERROR = 83,
    CL_CURLE_SSL_PINNEDPUBKEYNOTMATCH = 90,
    CL_CURLE_SSL_INVALIDCERTSTATUS = 91,
    CL_CURLE_HTTP2_STREAM = 92,
    CL_CURLE_HTTP3 = 95,
    CL_CURLE_QUIC_CONNECT_ERROR = 96,
    CL_CURLE_SSL_CLIENTCERT = 98,
};

/* Why a delivery failed, as far as the circuit breaker cares. */
enum classify_kind {
    CL_DELIVERED,       /* 2xx */
    CL_TRANSIENT,       /* this message, now: 408, 425, 429, 500, other 5xx, a reset connection */
    CL_OUTAGE,          /* the endpoint is down: no connection, timeout, 502, 503, 504 */
    CL_CONFIG,          /* TLS refused: our CA, certificate or key (or theirs) is wrong; it
                         * fails for every message until someone fixes it */
    CL_PERMANENT,       /* the endpoint refused this message for good: other 3xx and 4xx */
};

struct verdict {
    enum disposition disp;
    enum classify_kind kind;
    char reason[16];            /* DISP_DEAD: "http_422"; else "" */
    long retry_after_ms;        /* DISP_RETRY: from Retry-After, capped; -1 when absent */
    const char *error;          /* a static text of what went wrong, NULL when delivered */
};

/* Classify one finished transfer: curl_code is its CURLcode, status the HTTP status (0 when
 * none was received), retry_after the Retry-After header's value or NULL, now the wall clock
 * (for an HTTP-date), cap_ms the pool's backoff_max. Fills v. */
void classify(int curl_code, long status, const char *retry_after, time_t now, long cap_ms,
              struct verdict *v);

/* A Retry-After value (delta seconds, or an HTTP-date relative to now) in milliseconds,
 * at most cap_ms; a date in the past is 0. -1 when value is NULL or not understood. */
long classify_retry_after(const char *value, time_t now, long cap_ms);

#endif
