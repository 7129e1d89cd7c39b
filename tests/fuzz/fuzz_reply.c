// links: child/stream.c child/msg.c
/* fuzz_reply.c: a libFuzzer target for the worker's reply parsers. Raw bytes go through our
 * Redis client's read path (common/redis.c: hiredis's RESP reader building our replies, with
 * the per-reply byte bound), detached from any socket, as they would come from the server;
 * every reply it dispatches is handed to the parsers the worker uses for XREADGROUP, XCLAIM
 * (the claim script), XAUTOCLAIM and XPENDING replies, and every message they produce is read
 * through. A malformed reply must be an error, never a crash, an out-of-bounds read or a leak.
 *
 * Build with clang -fsanitize=fuzzer,address,undefined, linking child/stream.c, child/msg.c
 * and all of common/; run: fuzz_reply tests/fuzz/corpus/reply -max_total_time=60 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "child/msg.h"
#include "child/stream.h"
#include "common/log.h"
#include "common/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read every byte of what the parser handed out, so that a pointer past its reply shows. */
static size_t walk(const struct stream *s)
{
    size_t sum = 0;
    for (size_t i = 0; i < s->n; i++) {
        const struct msg *m = &s->msgs[i];
        sum += m->id.len + (size_t)(msg_id_ms(&m->id) & 1);
        for (size_t j = 0; j < 2 * m->nf; j++)
            for (size_t k = 0; k < m->f[j].len; k++)
                sum += (unsigned char)m->f[j].p[k];
        if (msg_get(m, "type"))
            sum++;
    }
    for (size_t i = 0; i < s->vanished.n; i++)
        sum += strlen(s->vanished.id[i]);
    for (size_t i = 0; i < s->lost.n; i++)
        sum += strlen(s->lost.id[i]);
    return sum;
}

static void parse_all(struct stream *s, const struct redis_reply *r)
{
    volatile size_t sink = 0;
    if (stream_parse_read(s, r) == 0)
        sink += walk(s);
    if (stream_parse_claim(s, r) == 0)
        sink += walk(s);
    char cursor[STREAM_ID_MAX] = "0-0";
    size_t deleted = 0;
    if (stream_parse_autoclaim(s, r, cursor, &deleted) == 0)
        sink += walk(s) + strlen(cursor) + deleted;
    /* XPENDING rows matched to the messages of the last parse (the autoclaim's when it was
     * one), and to the reply's own entries read as a batch. */
    long long *counts = calloc(s->n ? s->n : 1, sizeof *counts);
    stream_parse_pending(r, s->msgs, s->n, counts);
    for (size_t i = 0; i < s->n; i++)
        sink += (size_t)counts[i];
    free(counts);
    (void)sink;
}

/* Each reply the client dispatches, as the worker's callbacks would see it. */
static void on_reply(void *arg, const struct redis_reply *r)
{
    struct stream *s = arg;
    parse_all(s, r);
    s->n = 0;
}

/* A bound like a read of a few entries': an input that outgrows it (or an array header that
 * announces more elements than it could hold) is refused by the client, not parsed. */
#define FUZZ_MAX_REPLY_BYTES (1024 * 1024)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct stream s;
    static bool ready;
    if (!ready) {
        log_init(LOG_ERROR, LOG_FORMAT_TEXT);          /* malformed entries are logged: quietly */
        s.key = "fuzz";
        s.group = "fuzz-group";
        ready = true;
    }
    struct redis *rd = redis_open_detached(FUZZ_MAX_REPLY_BYTES);
    /* Up to 64 replies, as if 64 commands were outstanding; the rest are dropped unanswered. */
    redis_feed_detached(rd, (const char *)data, size, 64, on_reply, &s);
    redis_free(rd);
    return 0;
}
