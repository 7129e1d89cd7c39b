/* ceiling_http.c: the least a webhook worker can do with libcurl's multi interface: the
 * ceiling that streamfleet's http handler is measured against.
 *
 *   ceiling_http -p PORT -s STREAM -g GROUP -c CONSUMER -u URL -i INFLIGHT [-w MS]
 *
 * INFLIGHT transfers at most in flight. Each message is POSTed as a JSON object of its fields
 * (what the http handler sends without body_field); a 2xx answer gets it acknowledged, with
 * the next XREADGROUP (COUNT: the free room) in the same round trip; anything else leaves it
 * pending and is counted as failed. The first read blocks up to -w ms (10000) for the stream
 * to be filled; an empty later read means the preloaded stream is drained, and the run ends
 * when the last transfer has finished and been acknowledged.
 *
 * Prints `handled N failed F seconds S`. Exits 1 when a transfer failed. */
#include <curl/curl.h>
#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench.h"
#include "tests/bench/bench_redis.h"

struct xfer {
    CURL *easy;
    char id[48];                    /* the entry id, acknowledged on success */
    char *body;
    size_t len, cap;
    struct xfer *next;              /* in the free list */
};

static void usage(void)
{
    fprintf(stderr, "usage: ceiling_http [-h HOST] -p PORT -s STREAM -g GROUP -c CONSUMER -u URL "
                    "-i INFLIGHT [-w MS]\n");
    exit(2);
}

static size_t discard(char *p, size_t size, size_t n, void *u)
{
    (void)p;
    (void)u;
    return size * n;
}

static void add(struct xfer *x, const char *p, size_t n)
{
    if (x->len + n > x->cap) {
        x->cap = (x->len + n) * 2;
        if ((x->body = realloc(x->body, x->cap)) == NULL)
            exit(1);
    }
    memcpy(x->body + x->len, p, n);
    x->len += n;
}

/* JSON string contents: what needs escaping gets a \u escape, everything else as is. */
static void add_json(struct xfer *x, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c < 0x20 || c == '"' || c == '\\') {
            char e[8];
            snprintf(e, sizeof e, "\\u%04x", c);
            add(x, e, 6);
        } else {
            add(x, p + i, 1);
        }
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *stream = NULL, *group = NULL, *consumer = NULL, *url = NULL;
    int port = 0, opt;
    long inflight = 0, first_block = 10000;
    while ((opt = getopt(argc, argv, "h:p:s:g:c:u:i:w:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 's': stream = optarg; break;
        case 'g': group = optarg; break;
        case 'c': consumer = optarg; break;
        case 'u': url = optarg; break;
        case 'i': inflight = atol(optarg); break;
        case 'w': first_block = atol(optarg); break;
        default: usage();
        }
    }
    if (port <= 0 || !stream || !group || !consumer || !url || inflight < 1)
        usage();

    redisContext *rc = bench_redis_connect(host, port);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURLM *multi = curl_multi_init();
    curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, inflight);
    curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, inflight);
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    hdrs = curl_slist_append(hdrs, "Expect:");

    struct xfer *xs = calloc((size_t)inflight, sizeof *xs), *free_list = NULL;
    if (xs == NULL)
        return 1;
    for (long i = 0; i < inflight; i++) {
        CURL *e = xs[i].easy = curl_easy_init();
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(e, CURLOPT_PROXY, "");
        curl_easy_setopt(e, CURLOPT_POST, 1L);
        curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(e, CURLOPT_PRIVATE, &xs[i]);
        xs[i].next = free_list;
        free_list = &xs[i];
    }

    const char **ack;
    size_t *acklen;
    bench_redis_xack_args(stream, group, (size_t)inflight, &ack, &acklen);
    char (*acked_ids)[48] = malloc((size_t)inflight * sizeof *acked_ids);
    if (acked_ids == NULL)
        return 1;
    size_t nack = 0;

    long active = 0;
    long long handled = 0, failed = 0, t_first = 0, t_last = 0;
    bool exhausted = false, first = true;
    for (;;) {
        long room = inflight - active;
        if ((!exhausted && room > 0) || nack) {
            /* The acknowledgements and the next read share the round trip. */
            int expect = 0;
            for (size_t i = 0; i < nack; i++) {
                ack[3 + i] = acked_ids[i];
                acklen[3 + i] = strlen(acked_ids[i]);
            }
            if (nack) {
                redisAppendCommandArgv(rc, (int)(3 + nack), ack, acklen);
                expect++;
            }
            bool reading = !exhausted && room > 0;
            if (reading) {
                char cnt[24], blk[24];
                snprintf(cnt, sizeof cnt, "%ld", room);
                snprintf(blk, sizeof blk, "%ld", first_block);
                if (first)
                    redisAppendCommand(rc, "XREADGROUP GROUP %s %s COUNT %s BLOCK %s STREAMS %s >",
                                       group, consumer, cnt, blk, stream);
                else
                    redisAppendCommand(rc, "XREADGROUP GROUP %s %s COUNT %s STREAMS %s >", group,
                                       consumer, cnt, stream);
                first = false;
                expect++;
            }
            void *v = NULL;
            if (nack) {
                if (redisGetReply(rc, &v) != REDIS_OK || ((redisReply *)v)->type != REDIS_REPLY_INTEGER)
                    bench_redis_die(rc, "xack", v);
                freeReplyObject(v);
                nack = 0;
                t_last = bench_mono_ns();
            }
            if (reading) {
                if (redisGetReply(rc, &v) != REDIS_OK || ((redisReply *)v)->type == REDIS_REPLY_ERROR)
                    bench_redis_die(rc, "xreadgroup", v);
                const redisReply *e = bench_redis_entries(v);
                if (e == NULL || e->elements == 0)
                    exhausted = true;
                for (size_t i = 0; e && i < e->elements; i++) {
                    const redisReply *id = e->element[i]->element[0];
                    const redisReply *kv = e->element[i]->element[1];
                    struct xfer *x = free_list;
                    free_list = x->next;
                    snprintf(x->id, sizeof x->id, "%s", id->str);
                    x->len = 0;
                    add(x, "{", 1);
                    for (size_t j = 0; kv->type == REDIS_REPLY_ARRAY && j + 1 < kv->elements; j += 2) {
                        if (j)
                            add(x, ",", 1);
                        add(x, "\"", 1);
                        add_json(x, kv->element[j]->str, kv->element[j]->len);
                        add(x, "\":\"", 3);
                        add_json(x, kv->element[j + 1]->str, kv->element[j + 1]->len);
                        add(x, "\"", 1);
                    }
                    add(x, "}", 1);
                    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDSIZE, (long)x->len);
                    curl_easy_setopt(x->easy, CURLOPT_POSTFIELDS, x->body);
                    curl_multi_add_handle(multi, x->easy);
                    active++;
                }
                if (e && e->elements && t_first == 0)
                    t_first = bench_mono_ns();
                freeReplyObject(v);
            }
        }
        if (exhausted && active == 0)
            break;

        int running;
        curl_multi_poll(multi, NULL, 0, 1000, NULL);
        curl_multi_perform(multi, &running);
        CURLMsg *m;
        int left;
        while ((m = curl_multi_info_read(multi, &left)) != NULL) {
            if (m->msg != CURLMSG_DONE)
                continue;
            struct xfer *x;
            long status = 0;
            curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
            curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
            if (m->data.result == CURLE_OK && status >= 200 && status < 300) {
                memcpy(acked_ids[nack++], x->id, sizeof x->id);
                handled++;
            } else {
                if (failed++ < 5)
                    fprintf(stderr, "ceiling_http: %s: %s, status %ld\n", x->id,
                            curl_easy_strerror(m->data.result), status);
            }
            curl_multi_remove_handle(multi, m->easy_handle);
            x->next = free_list;
            free_list = x;
            active--;
        }
    }

    for (long i = 0; i < inflight; i++) {
        curl_easy_cleanup(xs[i].easy);
        free(xs[i].body);
    }
    curl_multi_cleanup(multi);
    curl_slist_free_all(hdrs);
    curl_global_cleanup();
    redisFree(rc);
    double secs = t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;
    printf("handled %lld failed %lld seconds %.6f\n", handled, failed, secs);
    return failed ? 1 : 0;
}
