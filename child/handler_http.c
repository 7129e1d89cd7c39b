/* handler_http.c: delivers each message to an HTTP endpoint (a webhook), many at once.
 *
 * submit() copies what a delivery needs out of the message (URL, body, message id) into a
 * struct req and starts it through deliver.c; deliver_run() reports its end to on_done(),
 * which classifies the answer (classify.c) and reports the outcome with the message's ticket
 * (the request's status and duration ride along: the child counts them). Nothing blocks: the
 * child's poll() loop waits on our sockets through fds() and calls run() every turn.
 *
 * A circuit breaker keeps an endpoint outage from burning messages: after BREAKER_FAILURES
 * outage-type failures in a row (no connection, timeout, 502/503/504, TLS refused) the handler
 * hands failed messages back without counting their attempt and sends one message at a time,
 * with doubling delays, until the endpoint answers again. Each probe is another message, so
 * that one message the endpoint always fails (a poison message) cannot pass for an outage.
 *
 * With adaptive = yes (the default), every request takes a slot of its destination in the
 * fleet's shared table first (common/aimd.h): a request that finds the fleet at the
 * destination's limit waits here in a queue (unsent, so it burns no attempt) until a slot
 * frees, whichever worker frees it. While a Retry-After holds the destination off, or after
 * waiting longer than one request's timeout, it is handed back untried, like a message the
 * open circuit does not take. */
#include "child/classify.h"
#include "child/deliver.h"
#include "child/fields.h"
#include "child/handler.h"
#include "child/msgjson.h"
#include "child/sign.h"
#include "child/urltmpl.h"
#include "common/aimd.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BREAKER_FAILURES 5          /* outage-type failures in a row that open the circuit */
#define PROBE_MIN_MS 1000           /* first probe delay, doubling up to PROBE_MAX_MS */
#define PROBE_MAX_MS 30000          /* (or the pool's backoff_max when that is shorter) */
#define HANDBACK_MIN_MS 100         /* the shortest wait of a message handed back untried */
#define MSG_ID_MAX 256              /* the longest webhook-id taken from id_field */
#define CONFIG_LOG_MS 60000         /* a config problem (TLS) is logged again after this long */
#define NHEADERS_OWN 5              /* Content-Type, webhook-id, -timestamp, -signature, attempt */
#define SLOT_POLL_MS 5              /* how often a queue waiting for a slot looks again (another
                                     * worker's slot freeing wakes nobody here) */

/* One delivery: a copy of everything it needs, since a msg lives only during submit(). */
struct req {
    struct req *next;               /* in the free list, or in the waiting list */
    struct ticket *ticket;          /* its message's: what the outcome is reported with */
    struct buf msg_id;              /* webhook-id */
    struct buf url;
    struct buf body;
    const char *content_type;
    long long attempt;
    bool slot;                      /* it holds a slot of the destination (adaptive) */
    int64_t started_us;             /* when it was sent (aimd_now_us), for the decrease window,
                                     * or queued for a slot */
    bool requested;                 /* a request went out and ended: the fields below are set */
    long status;                    /* its status (0: no answer) */
    double seconds;                 /* and how long it took */
};

struct handler {
    struct child *child;
    const struct pool_conf *pool;
    struct deliver_conf dconf;
    struct deliver *d;
    struct sign *sign;              /* NULL: no signing_secret_file */
    struct req *free;
    struct buf hdrs;                /* scratch for the per-request header lines */
    char error[256];                /* scratch for outcome texts */

    /* circuit breaker */
    unsigned failures;              /* outage-type failures in a row, of any messages */
    bool open;
    struct req *probe;              /* the one request out while the circuit is open */
    struct req *waiting;            /* given while the probe is out: started when it succeeds,
                                     * handed back when it fails (held no longer than one
                                     * request's timeout, well within claim_idle) */
    struct req **waiting_end;
    unsigned nwaiting;
    long probe_delay_ms;
    long long next_probe_ms;
    long long config_logged_ms;     /* when a config problem was last logged; 0: never */

    /* adaptive concurrency: the shared table and our destination's entry in it (dest -1:
     * adaptive = no, or no room in the table), requests waiting for a slot, slots held */
    struct aimd_table *aimd;
    int dest, worker;
    struct req *queued;
    struct req **queued_end;
    unsigned nqueued;
    unsigned slots;
};

static struct req *req_get(struct handler *h)
{
    struct req *r = h->free;
    if (r) {
        h->free = r->next;
        buf_reset(&r->msg_id);
        buf_reset(&r->url);
        buf_reset(&r->body);
    } else {
        r = xcalloc(1, sizeof *r);
    }
    r->next = NULL;
    r->ticket = NULL;
    r->requested = false;
    r->slot = false;
    return r;
}

static void req_put(struct handler *h, struct req *r)
{
    r->next = h->free;
    h->free = r;
}

static void req_free(struct req *r)
{
    buf_release(&r->msg_id);
    buf_release(&r->url);
    buf_release(&r->body);
    free(r);
}

/* The probe delay's ceiling: 30 s, or the pool's backoff_max when shorter. */
static long probe_max(const struct handler *h)
{
    return h->pool->backoff_max_ms < PROBE_MAX_MS ? h->pool->backoff_max_ms : PROBE_MAX_MS;
}

/* ---- sending ----------------------------------------------------------------------------- */

/* Start r with fresh webhook-timestamp and signature (a probe may go out minutes after the
 * message first did, and receivers reject old timestamps). Returns 0, or -1 with the reason
 * in h->error. */
static int start(struct handler *h, struct req *r)
{
    const struct pool_conf *p = h->pool;
    long long ts = (long long)time(NULL);
    size_t off[NHEADERS_OWN];
    int own = 0;
    buf_reset(&h->hdrs);
    off[own++] = h->hdrs.len;
    buf_printf(&h->hdrs, "Content-Type: %s", r->content_type);
    buf_addc(&h->hdrs, '\0');
    off[own++] = h->hdrs.len;
    buf_adds(&h->hdrs, "webhook-id: ");
    buf_add(&h->hdrs, r->msg_id.p, r->msg_id.len);
    buf_addc(&h->hdrs, '\0');
    off[own++] = h->hdrs.len;
    buf_printf(&h->hdrs, "webhook-timestamp: %lld", ts);
    buf_addc(&h->hdrs, '\0');
    if (h->sign) {
        off[own++] = h->hdrs.len;
        buf_adds(&h->hdrs, "webhook-signature: ");
        if (sign_webhook(h->sign, r->msg_id.p, r->msg_id.len, ts, r->body.p, r->body.len,
                         &h->hdrs) == -1) {
            snprintf(h->error, sizeof h->error, "cannot sign: openssl failed");
            return -1;
        }
        buf_addc(&h->hdrs, '\0');
    }
    off[own++] = h->hdrs.len;
    buf_printf(&h->hdrs, "streamfleet-attempt: %lld", r->attempt);
    buf_addc(&h->hdrs, '\0');

    const char *lines[CONF_HEADERS_MAX + NHEADERS_OWN];
    size_t n = 0;
    for (size_t i = 0; i < p->nheaders && n < CONF_HEADERS_MAX; i++)
        lines[n++] = p->headers[i];
    for (int i = 0; i < own; i++)
        lines[n++] = h->hdrs.p + off[i];
    return deliver_start(h->d, r->url.p, lines, n, r->body.p, r->body.len, r, h->error,
                         sizeof h->error);
}

/* ---- the circuit breaker -----------------------------------------------------------------
 *
 * Closed, every outage-type failure counts towards BREAKER_FAILURES in a row, and towards its
 * message's attempts (but for TLS refused, which is never the message's fault). Open, the
 * handler keeps no message: a failed one is handed back to the child as a retry with
 * outcome.outage (it stays pending in the child's retries, which keep its idle time fresh, and
 * its attempt does not count), and so is a message submitted while it waits for the next
 * probe. When that time comes, accepting() lets the child give
 * messages again: the first goes out as the probe, the others wait in the handler for its
 * answer. The probe that failed waits longer than the rest, so the next probe is another
 * message when there is one. Any answer closes the circuit, and from then on each message's
 * failures count again: a message the endpoint always fails reaches max_attempts as soon as
 * others get through, while an endpoint that fails everything costs no attempts. */

/* How long a message handed back waits: until the next probe, so that it can be the probe,
 * and one probe delay longer when it has just failed as the probe. */
static long handback_ms(const struct handler *h, bool was_probe)
{
    long long left = h->next_probe_ms - clock_mono_ms();
    if (was_probe)
        left += h->probe_delay_ms;
    return left < HANDBACK_MIN_MS ? HANDBACK_MIN_MS : (long)left;
}

/* Report outcome o of r's message, with the HTTP request r made (if it made one), and free r. */
static void report(struct handler *h, struct req *r, struct outcome *o)
{
    if (r->requested) {
        o->http.done = true;
        o->http.status = r->status;
        o->http.seconds = r->seconds;
    }
    ticket_done(r->ticket, o);
    req_put(h, r);
}

/* Give r back to the child without blaming the message, and free r. */
static void hand_back(struct handler *h, struct req *r, const char *error, double seconds,
                      bool was_probe)
{
    struct outcome o = { .disp = DISP_RETRY, .retry_after_ms = handback_ms(h, was_probe),
                         .error = error, .seconds = seconds, .outage = true };
    report(h, r, &o);
}

/* Give back r's slot of the destination, with what its answer says about load. */
static void slot_give(struct handler *h, struct req *r, enum aimd_signal s, long retry_after_ms)
{
    if (!r->slot)
        return;
    r->slot = false;
    h->slots--;
    aimd_give(h->aimd, h->dest, h->worker, s, r->started_us, aimd_now_us(), retry_after_ms);
}

/* Start r with a slot of the destination (taken), as an ordinary delivery; a request that
 * cannot start is a retry. */
static void start_taken(struct handler *h, struct req *r)
{
    r->started_us = aimd_now_us();
    if (start(h, r) == 0)
        return;
    slot_give(h, r, AIMD_NEUTRAL, -1);
    struct outcome o = { .disp = DISP_RETRY, .retry_after_ms = -1, .error = h->error,
                         .seconds = -1 };
    report(h, r, &o);
}

/* Start the queued requests the destination has slots for, oldest first. A Retry-After, or
 * a wait longer than one request's timeout, hands them back to the child untried instead (as
 * the circuit breaker does, and for its reason: its retries keep their idle time fresh, so no
 * other worker claims them, and their attempt does not count). */
static void start_queued(struct handler *h)
{
    int64_t now = aimd_now_us();
    long held_off = aimd_held_off_ms(h->aimd, h->dest, now);
    while (h->queued) {
        struct req *r = h->queued;
        bool stale = now - r->started_us > (int64_t)h->pool->timeout_ms * 1000;
        bool take = !held_off && !stale && aimd_take(h->aimd, h->dest, h->worker, now);
        if (!take && !held_off && !stale)
            break;
        h->queued = r->next;
        if (h->queued == NULL)
            h->queued_end = &h->queued;
        h->nqueued--;
        r->next = NULL;
        if (take) {
            r->slot = true;
            h->slots++;
            start_taken(h, r);
            continue;
        }
        struct outcome o = {
            .disp = DISP_RETRY, .seconds = -1, .outage = true,
            .retry_after_ms = held_off > HANDBACK_MIN_MS ? held_off : HANDBACK_MIN_MS,
            .error = held_off ? "not tried: the endpoint asked to wait (Retry-After)"
                              : "not tried: the endpoint is at its concurrency limit",
        };
        report(h, r, &o);
    }
}

/* Start r as an ordinary delivery when the destination has a slot for it, else queue it
 * behind the others waiting. */
static void start_or_retry(struct handler *h, struct req *r)
{
    if (h->dest < 0) {
        start_taken(h, r);
        return;
    }
    r->started_us = aimd_now_us();
    *h->queued_end = r;
    h->queued_end = &r->next;
    h->nqueued++;
    start_queued(h);
}

/* The probe's answer is in: start what waited for it (go), or hand it back. */
static void release_waiting(struct handler *h, bool go)
{
    struct req *r = h->waiting;
    h->waiting = NULL;
    h->waiting_end = &h->waiting;
    h->nwaiting = 0;
    while (r) {
        struct req *next = r->next;
        r->next = NULL;
        if (go)
            start_or_retry(h, r);
        else
            hand_back(h, r, "not tried: the endpoint is down", -1, false);
        r = next;
    }
}

static void circuit_open(struct handler *h, const char *why)
{
    h->open = true;
    h->probe_delay_ms = PROBE_MIN_MS < probe_max(h) ? PROBE_MIN_MS : probe_max(h);
    h->next_probe_ms = clock_mono_ms() + h->probe_delay_ms;
    child_event(h->child, HANDLER_CIRCUIT_OPEN, why);
    log_warnx("endpoint down (%u failures in a row, last: %s): circuit open, taking no new "
              "messages, probing with one at a time", h->failures, why);
}

static void circuit_close(struct handler *h)
{
    h->open = false;
    h->failures = 0;
    child_event(h->child, HANDLER_CIRCUIT_CLOSED, NULL);
    log_info("endpoint answers again: circuit closed, taking messages again");
    release_waiting(h, true);
}

/* While the circuit is open: send r as the probe. */
static void send_probe(struct handler *h, struct req *r)
{
    h->probe = r;
    if (start(h, r) == 0)
        return;
    log_warnx("cannot start a probe: %s", h->error);
    h->probe = NULL;
    h->next_probe_ms = clock_mono_ms() + h->probe_delay_ms;
    hand_back(h, r, h->error, -1, false);
}

static void on_done(void *arg, void *user, const struct deliver_result *res)
{
    struct handler *h = arg;
    struct req *r = user;
    /* The child counts the request with the outcome it ends in, whichever that is. */
    r->requested = true;
    r->status = res->code ? 0 : res->status;
    r->seconds = res->seconds;

    struct verdict v;
    classify(res->code, res->status, res->retry_after, time(NULL), h->pool->backoff_max_ms, &v);
    /* 429, 503 and timeouts are the destination saying it has too much; a Retry-After with
     * them holds every worker off it. */
    bool overload = res->code == CL_CURLE_OPERATION_TIMEDOUT ||
                    (res->code == 0 && (res->status == 429 || res->status == 503));
    slot_give(h, r, v.kind == CL_DELIVERED ? AIMD_SUCCESS : overload ? AIMD_OVERLOAD : AIMD_NEUTRAL,
              overload && res->retry_after ? v.retry_after_ms : -1);
    bool down = v.kind == CL_OUTAGE || v.kind == CL_CONFIG;
    /* Any real answer, even a 4xx, shows the endpoint is there. A broken connection (the
     * endpoint going away) shows nothing either way. */
    bool answered = res->code == 0 && !down;
    const char *error = NULL;
    if (res->code) {
        snprintf(h->error, sizeof h->error, "%s: %s", v.error, res->error);
        error = h->error;
    } else if (v.disp != DISP_ACK) {
        snprintf(h->error, sizeof h->error, "http %ld: %s", res->status, v.error);
        error = h->error;
    }
    if (v.kind == CL_CONFIG) {
        /* Every message fails the same way until someone fixes the config: say so at once,
         * and not once per message. */
        long long now = clock_mono_ms();
        if (h->config_logged_ms == 0 || now - h->config_logged_ms >= CONFIG_LOG_MS) {
            log_warnx("cannot deliver, check the pool's tls and url settings: %s", error);
            h->config_logged_ms = now;
        }
    }

    bool was_probe = r == h->probe;
    if (was_probe)
        h->probe = NULL;
    if (h->open && !answered) {
        /* Nothing tells the endpoint's fault from the message's: the attempt does not count. */
        if (was_probe) {
            h->probe_delay_ms = h->probe_delay_ms * 2 < probe_max(h) ? h->probe_delay_ms * 2
                                                                      : probe_max(h);
            h->next_probe_ms = clock_mono_ms() + h->probe_delay_ms;
            log_debug("probe failed (%s): next in %ld ms", error, h->probe_delay_ms);
        }
        hand_back(h, r, error, res->seconds, was_probe);
        if (was_probe)
            release_waiting(h, false);
        return;
    }

    if (down) {
        h->failures++;
        if (!h->open && h->failures >= BREAKER_FAILURES) {
            circuit_open(h, error);
            hand_back(h, r, error, res->seconds, true);
            return;
        }
    } else if (answered) {
        h->failures = 0;
    }
    struct outcome o = {
        .disp = v.disp,
        .reason = v.reason[0] ? v.reason : NULL,
        .retry_after_ms = v.retry_after_ms,
        .error = error,
        .seconds = res->seconds,
        /* TLS refused fails every message alike: our settings, never the message, are wrong. */
        .outage = v.kind == CL_CONFIG,
    };
    report(h, r, &o);
    if (answered && h->open)
        circuit_close(h);
}

/* ---- the handler interface --------------------------------------------------------------- */

/* Report m as a bad message: dead-letter, no retry. */
static void bad_message(struct handler *h, struct ticket *t, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void bad_message(struct handler *h, struct ticket *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->error, sizeof h->error, fmt, ap);
    va_end(ap);
    struct outcome o = { .disp = DISP_DEAD, .reason = "bad_message", .retry_after_ms = -1,
                         .error = h->error, .seconds = -1 };
    ticket_done(t, &o);
}

/* A message id goes into a header and the signed text: printable, bounded, non-empty. */
static bool usable_msg_id(const struct str *v)
{
    if (v->len == 0 || v->len > MSG_ID_MAX)
        return false;
    for (size_t i = 0; i < v->len; i++) {
        unsigned char c = (unsigned char)v->p[i];
        if (c < 0x20 || c == 0x7f)
            return false;
    }
    return true;
}

static void http_submit(struct handler *h, const struct msg *m, struct ticket *t)
{
    const struct pool_conf *p = h->pool;
    struct req *r = req_get(h);
    const char *missing;
    size_t mlen;
    if (urltmpl_fill(&r->url, p->url, m, &missing, &mlen) == -1) {
        bad_message(h, t, "the message has no field '%.*s' for the url", (int)mlen, missing);
        goto drop;
    }
    /* id_field and body_field name a field or a path into a JSON field; a path that does not
     * resolve never gets here (route_admit() made the message bad), a plain field may be
     * missing. */
    struct fields_value idv = { { NULL, 0 }, NULL }, bodyv = { { NULL, 0 }, NULL };
    char why[256];
    const struct str *id = NULL;
    if (p->id_field && fields_get(m, p->id_field, strlen(p->id_field), &idv, why, sizeof why) == 0)
        id = &idv.v;
    if (id && !usable_msg_id(id)) {
        bad_message(h, t, "field '%s' (id_field) must be 1 to %d bytes without control characters",
                    p->id_field, MSG_ID_MAX);
        fields_value_release(&idv);
        goto drop;
    }
    if (id == NULL)
        id = &m->id;
    buf_add(&r->msg_id, id->p, id->len);
    fields_value_release(&idv);
    r->ticket = t;

    const struct str *body = NULL;
    if (p->body_field && fields_get(m, p->body_field, strlen(p->body_field), &bodyv, why, sizeof why) == 0)
        body = &bodyv.v;
    if (body) {
        buf_add(&r->body, body->p, body->len);
        r->content_type = p->content_type;
        fields_value_release(&bodyv);
    } else {
        msgjson_fields(&r->body, m, false);
        /* Without body_field the JSON object is the configured body; with it, a message that
         * lacks the field gets the object, which is JSON whatever content_type says. */
        r->content_type = p->body_field ? "application/json" : p->content_type;
    }
    r->attempt = m->attempt;

    if (!h->open) {
        start_or_retry(h, r);
    } else if (h->probe) {
        /* Given with the probe (one read, or the retries due with it): wait for its answer. */
        *h->waiting_end = r;
        h->waiting_end = &r->next;
        h->nwaiting++;
    } else if (clock_mono_ms() >= h->next_probe_ms) {
        send_probe(h, r);
    } else {
        /* The child asks accepting() before reading, but a read already on the wire when the
         * circuit opened still brings messages: hand them back untried. */
        hand_back(h, r, "not tried: the endpoint is down", -1, false);
    }
    return;
drop:
    req_put(h, r);
}

static int http_fds(struct handler *h, struct pollfd *pfd, int max, long *timeout_ms)
{
    int n = deliver_fds(h->d, pfd, max, timeout_ms);
    /* Wake when the next probe may go (not after: accepting() then says so, and the child
     * waits for messages to probe with). */
    if (h->open && h->probe == NULL) {
        long long left = h->next_probe_ms - clock_mono_ms();
        if (left > 0 && (left < *timeout_ms || *timeout_ms < 0))
            *timeout_ms = (long)left;
    }
    if (h->queued && (*timeout_ms < 0 || *timeout_ms > SLOT_POLL_MS))
        *timeout_ms = SLOT_POLL_MS;
    /* and when a Retry-After ends (accepting() says yes again) */
    long held_off = h->dest >= 0 ? aimd_held_off_ms(h->aimd, h->dest, aimd_now_us()) : 0;
    if (held_off > 0 && (*timeout_ms < 0 || *timeout_ms > held_off))
        *timeout_ms = held_off;
    return n;
}

static void http_run(struct handler *h, const struct pollfd *pfd, int n)
{
    deliver_run(h->d, pfd, n);
    if (h->queued)
        start_queued(h);
}

static unsigned http_inflight(struct handler *h)
{
    return deliver_active(h->d) + h->nwaiting + h->nqueued;
}

/* Closed: always. Open: when the next probe may go and none is out. Never while a
 * Retry-After holds the destination off: what came would only be handed back. */
static bool http_accepting(struct handler *h)
{
    if (h->dest >= 0 && aimd_held_off_ms(h->aimd, h->dest, aimd_now_us()) > 0)
        return false;
    return !h->open || (h->probe == NULL && clock_mono_ms() >= h->next_probe_ms);
}

static void http_close(struct handler *h)
{
    deliver_free(h->d);
    if (h->nwaiting)
        log_info("%u messages stay pending: the endpoint was down (circuit open)", h->nwaiting);
    while (h->waiting) {
        struct req *r = h->waiting;
        h->waiting = r->next;
        req_free(r);
    }
    while (h->free) {
        struct req *r = h->free;
        h->free = r->next;
        req_free(r);
    }
    /* What deliver_free() aborted held slots: the fleet gets them back now, not at our
     * reaping. The queued never took one; their messages stay pending, as the waiting's. */
    if (h->dest >= 0)
        for (; h->slots; h->slots--)
            aimd_give(h->aimd, h->dest, h->worker, AIMD_NEUTRAL, 0, 0, -1);
    while (h->queued) {
        struct req *r = h->queued;
        h->queued = r->next;
        req_free(r);
    }
    buf_release(&h->hdrs);
    sign_free(h->sign);
    free(h);
}

static struct handler *http_open(struct child *c, const struct pool_conf *p)
{
    static const char *const methods[] = { [HTTP_POST] = "POST", [HTTP_PUT] = "PUT",
                                           [HTTP_PATCH] = "PATCH" };
    struct handler *h = xcalloc(1, sizeof *h);
    h->child = c;
    h->pool = p;
    h->waiting_end = &h->waiting;
    h->queued_end = &h->queued;
    h->dest = -1;
    h->aimd = aimd_shared();
    h->worker = aimd_worker();
    char key[AIMD_KEY_MAX];
    if (p->adaptive && h->aimd && h->worker >= 0 && aimd_dest_key(p->url, key, sizeof key) == 0) {
        uint32_t ceiling = (uint32_t)p->inflight * (uint32_t)(p->workers > 0 ? p->workers : 1);
        h->dest = aimd_lookup(h->aimd, key, ceiling);
        if (h->dest < 0)
            log_warnx("pool %s: no room for %s in the destination table (%d destinations): "
                      "its concurrency does not adapt", p->name, key, AIMD_DESTS);
    }
    h->dconf = (struct deliver_conf){
        .method = methods[p->method],
        .connect_timeout_ms = p->connect_timeout_ms,
        .timeout_ms = p->timeout_ms,
        .tls_ca = p->tls_ca,
        .tls_cert = p->tls_cert,
        .tls_key = p->tls_key,
        .tls_verify = p->tls_verify,
        .max_connections = (unsigned)p->inflight,
        .user_agent = "streamfleet/" SF_VERSION,
    };
    char err[512];
    if (p->signing_secret_file) {
        h->sign = sign_open_file(p->signing_secret_file, err, sizeof err);
        if (h->sign == NULL) {
            log_errorx("pool %s: signing_secret_file: %s", p->name, err);
            goto fail;
        }
    }
    h->d = deliver_open(&h->dconf, on_done, h, err, sizeof err);
    if (h->d == NULL) {
        log_errorx("pool %s: cannot set up http delivery: %s", p->name, err);
        goto fail;
    }
    return h;
fail:
    sign_free(h->sign);
    free(h);
    return NULL;
}

const struct handler_ops handler_http_ops = {
    .name = "http",
    .open = http_open,
    .submit = http_submit,
    .fds = http_fds,
    .run = http_run,
    .inflight = http_inflight,
    .accepting = http_accepting,
    .close = http_close,
};
