// links:
/* fuzz_client.c: the Redis client's read path on arbitrary bytes from the "server".
 *
 * The first byte picks the read size (how the bytes are cut into feeds) and how many commands
 * are outstanding; the rest goes through hiredis's reader into our reply arena and out to the
 * callbacks, with a per-reply bound of 4 KiB. Whatever the input: every command outstanding
 * gets exactly one reply, no reply has a NULL element, and a rejected input ends the client.
 * Each reply is also read as a sentinel's answer (redis_sentinel_addr): a host it accepts is
 * NUL-terminated within its buffer, a port is a port. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct count {
    size_t replies;
};

static void walk(const struct redis_reply *v, int depth)
{
    if (v == NULL || depth > 10000)
        abort();
    if ((v->type == REDIS_T_STRING || v->type == REDIS_T_STATUS || v->type == REDIS_T_ERROR) &&
        (v->str == NULL || v->str[v->len] != '\0'))
        abort();
    if (v->type == REDIS_T_ERROR && v->err == REDIS_E_NONE)
        abort();
    for (size_t i = 0; v->type == REDIS_T_ARRAY && i < v->elements; i++)
        walk(v->element[i], depth + 1);
}

static void on_reply(void *arg, const struct redis_reply *v)
{
    struct count *c = arg;
    walk(v, 0);
    char host[64];
    int port = 0;
    if (redis_sentinel_addr(v, host, sizeof host, &port) == 0 && (strlen(host) >= sizeof host || port < 1 || port > 65535))
        abort();
    c->replies++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t chunk = (size_t)(data[0] & 0x0f) + 1;
    size_t outstanding = (size_t)(data[0] >> 4) + 1;
    data++, size--;
    struct redis *r = redis_open_detached(4096);
    struct count c = { 0 };
    size_t asked = 0;
    int rc = 0;
    for (size_t off = 0; off < size && rc != -1; off += chunk) {
        size_t n = size - off < chunk ? size - off : chunk;
        size_t more = off == 0 ? outstanding : 0;
        asked += more;
        rc = redis_feed_detached(r, (const char *)data + off, n, more, on_reply, &c);
    }
    /* Every reply belongs to one command; after a rejection, every command has had its reply. */
    if (c.replies > asked)
        abort();
    if (rc == -1 && c.replies != asked)
        abort();
    redis_free(r);
    return 0;
}
