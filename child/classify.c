/* classify.c: the response classification table and Retry-After. See classify.h. */
#include "child/classify.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* A transport error (no HTTP answer): retried, never dead-lettered. What kind of failure it is
 * decides whether it counts towards opening the circuit breaker. */
static void transport(int code, struct verdict *v)
{
    v->disp = DISP_RETRY;
    switch (code) {
    case CL_CURLE_COULDNT_RESOLVE_PROXY:
    case CL_CURLE_COULDNT_RESOLVE_HOST:
        v->kind = CL_OUTAGE;
        v->error = "cannot resolve the endpoint's host";
        return;
    case CL_CURLE_COULDNT_CONNECT:
    case CL_CURLE_QUIC_CONNECT_ERROR:
        v->kind = CL_OUTAGE;
        v->error = "cannot connect to the endpoint";
        return;
    case CL_CURLE_OPERATION_TIMEDOUT:
        v->kind = CL_OUTAGE;
        v->error = "timed out";
        return;
    /* TLS refused. Retrying soon will not help, dead-lettering would blame the message for
     * a config problem: the breaker holds the messages until someone fixes it. */
    case CL_CURLE_SSL_CONNECT_ERROR:
        v->kind = CL_CONFIG;
        v->error = "tls handshake failed";
        return;
    case CL_CURLE_PEER_FAILED_VERIFICATION:
        v->kind = CL_CONFIG;
        v->error = "tls: the endpoint's certificate does not verify against tls_ca";
        return;
    case CL_CURLE_SSL_CERTPROBLEM:
    case CL_CURLE_SSL_CLIENTCERT:
        v->kind = CL_CONFIG;
        v->error = "tls: problem with the client certificate (tls_cert, tls_key)";
        return;
    case CL_CURLE_SSL_CACERT_BADFILE:
    case CL_CURLE_SSL_CRL_BADFILE:
        v->kind = CL_CONFIG;
        v->error = "tls: cannot use the CA file (tls_ca)";
        return;
    case CL_CURLE_SSL_ENGINE_NOTFOUND:
    case CL_CURLE_SSL_CIPHER:
    case CL_CURLE_SSL_ISSUER_ERROR:
    case CL_CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CL_CURLE_SSL_INVALIDCERTSTATUS:
        v->kind = CL_CONFIG;
        v->error = "tls: the endpoint's certificate was refused";
        return;
    /* Our URL is a checked template filled with percent-encoded values: if libcurl still
     * rejects it, the config is at fault, not the message. */
    case CL_CURLE_UNSUPPORTED_PROTOCOL:
    case CL_CURLE_URL_MALFORMAT:
        v->kind = CL_CONFIG;
        v->error = "the url is not usable";
        return;
    /* A connection that broke mid-exchange (reset, closed, garbled): this message, this time.
     * A missing client certificate shows up here too (error 55/56 after a TLS 1.3 handshake),
     * and cannot be told apart from a reset. */
    case CL_CURLE_GOT_NOTHING:
    case CL_CURLE_SEND_ERROR:
    case CL_CURLE_RECV_ERROR:
    case CL_CURLE_PARTIAL_FILE:
    case CL_CURLE_WEIRD_SERVER_REPLY:
    case CL_CURLE_HTTP2:
    case CL_CURLE_HTTP2_STREAM:
    case CL_CURLE_HTTP3:
        v->kind = CL_TRANSIENT;
        v->error = "connection broken";
        return;
    default:
        v->kind = CL_TRANSIENT;
        v->error = "transport error";
        return;
    }
}

void classify(int curl_code, long status, const char *retry_after, time_t now, long cap_ms,
              struct verdict *v)
{
    memset(v, 0, sizeof *v);
    v->retry_after_ms = -1;
    if (curl_code != CL_CURLE_OK) {
        transport(curl_code, v);
        return;
    }
    if (status >= 200 && status <= 299) {
        v->disp = DISP_ACK;
        v->kind = CL_DELIVERED;
        return;
    }
    v->disp = DISP_RETRY;
    v->kind = CL_TRANSIENT;
    if (status == 502 || status == 503 || status == 504) {
        v->kind = CL_OUTAGE;
        v->error = "endpoint unavailable";
    } else if (status >= 500 && status <= 599) {
        v->error = "endpoint failed";
    } else if (status == 408 || status == 425 || status == 429) {
        v->error = status == 429 ? "rate limited" : "asked to try again";
    } else if (status >= 300 && status <= 499) {
        /* Redirects are not followed (a field must never steer where a message goes), and
         * the rest of 4xx says the message itself is refused: retrying cannot change that. */
        v->disp = DISP_DEAD;
        v->kind = CL_PERMANENT;
        snprintf(v->reason, sizeof v->reason, "http_%ld", status);
        v->error = status < 400 ? "redirect not followed" : "refused by the endpoint";
        return;
    } else {
        v->error = "no valid http status";
        return;
    }
    v->retry_after_ms = classify_retry_after(retry_after, now, cap_ms);
}

/* ---- Retry-After ------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil). */
static long long days_from_civil(long long y, unsigned m, unsigned d)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (long long)doe - 719468;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Read 1..max digits at *p. Returns -1 when there is none. */
static long digits(const char **p, int max)
{
    long v = 0;
    int n = 0;
    while (n < max && is_digit(**p)) {
        v = v * 10 + (**p - '0');
        (*p)++;
        n++;
    }
    return n ? v : -1;
}

static int month(const char **p)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (strncmp(*p, names + 3 * i, 3) == 0) {
            *p += 3;
            return i + 1;
        }
    return -1;
}

static bool expect(const char **p, char c)
{
    if (**p != c)
        return false;
    (*p)++;
    return true;
}

static bool hms(const char **p, long *h, long *m, long *s)
{
    *h = digits(p, 2);
    if (*h < 0 || !expect(p, ':'))
        return false;
    *m = digits(p, 2);
    if (*m < 0 || !expect(p, ':'))
        return false;
    *s = digits(p, 2);
    return *s >= 0 && *h < 24 && *m < 60 && *s <= 60;
}

/* An HTTP-date in any of the three forms RFC 9110 makes recipients accept:
 *   Sun, 06 Nov 1994 08:49:37 GMT     (IMF-fixdate)
 *   Sunday, 06-Nov-94 08:49:37 GMT    (RFC 850)
 *   Sun Nov  6 08:49:37 1994          (asctime)
 * Returns 0 and the Unix time, or -1. The day name is not checked against the date. */
static int http_date(const char *p, long long *t)
{
    long day, year, h, m, s;
    int mon;
    while (is_alpha(*p))
        p++;
    if (*p == ',') {
        p++;
        if (!expect(&p, ' '))
            return -1;
        day = digits(&p, 2);
        char sep = *p;
        if (day < 0 || (sep != ' ' && sep != '-'))
            return -1;
        p++;
        if ((mon = month(&p)) < 0 || !expect(&p, sep))
            return -1;
        const char *y0 = p;
        year = digits(&p, 4);
        if (year < 0)
            return -1;
        if (p - y0 == 2)                    /* RFC 850's two digits: the nearest century */
            year += year < 70 ? 2000 : 1900;
        else if (p - y0 != 4)
            return -1;
        if (!expect(&p, ' ') || !hms(&p, &h, &m, &s) || strcmp(p, " GMT") != 0)
            return -1;
    } else {
        if (!expect(&p, ' ') || (mon = month(&p)) < 0 || !expect(&p, ' '))
            return -1;
        if (*p == ' ')
            p++;
        day = digits(&p, 2);
        if (day < 0 || !expect(&p, ' ') || !hms(&p, &h, &m, &s) || !expect(&p, ' '))
            return -1;
        const char *y0 = p;
        year = digits(&p, 4);
        if (year < 0 || p - y0 != 4 || *p)
            return -1;
    }
    if (day < 1 || day > 31)
        return -1;
    *t = days_from_civil(year, (unsigned)mon, (unsigned)day) * 86400 + h * 3600 + m * 60 + s;
    return 0;
}

long classify_retry_after(const char *value, time_t now, long cap_ms)
{
    if (value == NULL)
        return -1;
    char v[64];
    while (*value == ' ' || *value == '\t')
        value++;
    size_t n = strlen(value);
    while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t' || value[n - 1] == '\r' ||
                     value[n - 1] == '\n'))
        n--;
    if (n == 0 || n >= sizeof v)
        return -1;
    memcpy(v, value, n);
    v[n] = '\0';

    long long ms;
    if (is_digit(v[0])) {
        long long secs = 0;
        for (size_t i = 0; i < n; i++) {
            if (!is_digit(v[i]))
                return -1;
            if (secs < 1000000000LL)            /* beyond 30 years: the cap decides anyway */
                secs = secs * 10 + (v[i] - '0');
        }
        ms = secs * 1000;
    } else {
        long long t;
        if (http_date(v, &t) == -1)
            return -1;
        ms = t > (long long)now ? (t - (long long)now) * 1000 : 0;
    }
    if (cap_ms >= 0 && ms > cap_ms)
        ms = cap_ms;
    return (long)ms;
}
