// links: child/stream.c child/msg.c
/* fuzz_reply.c: a libFuzzer target for the worker's reply parsers. Raw bytes go through
 * hiredis's RESP reader (as they would from the socket); every reply it builds is handed to
 * the parsers the worker uses for XREADGROUP, XCLAIM (the claim script), XAUTOCLAIM and
 * XPENDING replies, and every message they produce is read through. A malformed reply must be
 * an error, never a crash, an out-of-bounds read or a leak.
 *
 * This file includes hiredis for its reader; child/stream.c stays the only one in the
 * program. Build with clang -fsanitize=fuzzer,address,undefined, linking child/stream.c,
 * child/msg.c and all of common/; run: fuzz_reply tests/fuzz/corpus/reply -max_total_time=60 */
#include <hiredis/hiredis.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "child/msg.h"
#include "child/stream.h"
#include "common/log.h"

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

static void parse_all(struct stream *s, const redisReply *r)
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

/* hiredis 0.14's reader callocs an array for the element count a header announces before
 * any element arrives ("*1596261872799\r\n" asks for 12 GB: found by this target). Redis is
 * trusted not to send that, and it is no parser of ours: skip inputs announcing more than
 * 100,000 elements so that the fuzzer spends its time on our code. */
static bool huge_array(const uint8_t *data, size_t size)
{
    for (size_t i = 0; i < size; i++) {
        if (data[i] != '*')
            continue;
        unsigned long long n = 0;
        for (size_t j = i + 1; j < size && data[j] >= '0' && data[j] <= '9' && n <= 100000; j++)
            n = n * 10 + (data[j] - '0');
        if (n > 100000)
            return true;
    }
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (huge_array(data, size))
        return 0;
    static struct stream s;
    static bool ready;
    if (!ready) {
        log_init(LOG_ERROR, LOG_FORMAT_TEXT);          /* malformed entries are logged: quietly */
        s.key = "fuzz";
        s.group = "fuzz-group";
        ready = true;
    }
    redisReader *rd = redisReaderCreate();
    if (rd == NULL)
        return 0;
    if (redisReaderFeed(rd, (const char *)data, size) == REDIS_OK) {
        for (int i = 0; i < 64; i++) {
            void *v = NULL;
            if (redisReaderGetReply(rd, &v) != REDIS_OK || v == NULL)
                break;
            parse_all(&s, v);
            s.n = 0;
            freeReplyObject(v);
        }
    }
    redisReaderFree(rd);
    return 0;
}
