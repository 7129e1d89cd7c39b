// links:
/* fuzz_cluster.c: Redis Cluster's parsers on arbitrary bytes from the "server".
 *
 * The bytes go through the client's read path (hiredis's reader into our replies), as a node's
 * answer would; every reply is read as a CLUSTER SLOTS answer (cluster_parse_slots) and, when it
 * is an error, as a redirection (cluster_parse_redirect); the raw bytes are also read as one
 * error text. What is accepted must hold: ranges within the 16384 slots, lo <= hi, hosts
 * NUL-terminated within their buffer, ports that are ports. The slot of the bytes as a key is
 * a slot.
 *
 * Build with clang -fsanitize=fuzzer,address,undefined and all of common/; run:
 * fuzz_cluster tests/fuzz/corpus/cluster -max_total_time=60 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/cluster.h"
#include "common/redis.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_redirect(const char *s, size_t len)
{
    unsigned slot = 99999;
    char host[64];
    int port = -1;
    enum cluster_redirect k = cluster_parse_redirect(s, len, &slot, host, sizeof host, &port);
    if (k == CLUSTER_R_MOVED || k == CLUSTER_R_ASK) {
        if (slot >= CLUSTER_SLOTS || port < 1 || port > 65535 || memchr(host, '\0', sizeof host) == NULL)
            abort();
    }
}

static void on_reply(void *arg, const struct redis_reply *v)
{
    (void)arg;
    struct cluster_range *rg = NULL;
    size_t n = 0;
    if (cluster_parse_slots(v, &rg, &n) == 0) {
        for (size_t i = 0; i < n; i++)
            if (rg[i].lo > rg[i].hi || rg[i].hi >= CLUSTER_SLOTS || rg[i].port < 1 || rg[i].port > 65535 ||
                memchr(rg[i].host, '\0', sizeof rg[i].host) == NULL)
                abort();
        free(rg);
    } else if (rg != NULL) {
        abort();
    }
    if (v->type == REDIS_T_ERROR)
        check_redirect(v->str, v->len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_redirect((const char *)data, size);
    if (cluster_keyslot((const char *)data, size) >= CLUSTER_SLOTS)
        abort();
    struct redis *r = redis_open_detached(1 << 16);
    redis_feed_detached(r, (const char *)data, size, 4, on_reply, NULL);
    redis_free(r);
    return 0;
}
