/* cluster.h: the pure parts of Redis Cluster for our client (common/redis.c): the key's slot
 * (CRC16 of its hash tag), which argument of our commands is the key, the slot map as CLUSTER
 * SLOTS gives it, and the redirections (MOVED, ASK) and retryable refusals (TRYAGAIN,
 * CLUSTERDOWN) of an error reply. No I/O, no allocation but the slot map's. */
#ifndef SF_CLUSTER_H
#define SF_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>

#include "common/redis.h"

#define CLUSTER_SLOTS 16384
#define CLUSTER_HOST_MAX 256

/* CRC16-CCITT (XMODEM), Redis Cluster's: cluster_crc16("123456789") == 0x31C3. */
unsigned cluster_crc16(const char *buf, size_t len);
/* The slot of a key: the CRC16 of its hash tag (what is between the first '{' and the first
 * '}' after it, when that is not empty), else of the whole key; modulo 16384. */
unsigned cluster_keyslot(const char *key, size_t len);
/* Whether the key holds a hash tag: then every key that starts with it is in its slot. */
bool cluster_has_tag(const char *key, size_t len);

/* The index in argv of the key that routes a command, or -1 for a command without one (PING,
 * CONFIG, MULTI, EXEC...). Our commands are few: XREADGROUP's first key after STREAMS, EVAL's
 * and EVALSHA's first key (none when numkeys is 0), XINFO's and XGROUP's key after the
 * subcommand, and argv[1] for every other (XADD, XACK, XLEN, XRANGE, XPENDING, SET...). */
int cluster_key_index(int argc, const char **argv, const size_t *len);

/* One range of the slot map: slots lo..hi are served by the master at host:port (host ""
 * when the server did not know its own address: the node that answered). */
struct cluster_range {
    unsigned lo, hi;
    char host[CLUSTER_HOST_MAX];
    int port;
};

/* Parse a CLUSTER SLOTS reply (bytes from the network): 0 with *ranges (caller owns; free())
 * and *n filled, or -1 when it is not a plausible one. Replicas are skipped. */
int cluster_parse_slots(const struct redis_reply *v, struct cluster_range **ranges, size_t *n);

enum cluster_redirect {
    CLUSTER_R_NONE = 0,         /* any other reply */
    CLUSTER_R_MOVED,            /* "MOVED slot host:port": the slot lives there now */
    CLUSTER_R_ASK,              /* "ASK slot host:port": this key, once, there (migrating) */
    CLUSTER_R_TRYAGAIN,         /* a multi-key command during a slot's migration */
    CLUSTER_R_CLUSTERDOWN,      /* the cluster is down (a failover in progress) */
};

/* Classify an error reply's text. For MOVED and ASK, slot, host (NUL-terminated; "" when the
 * server wrote none: the node that answered) and port are filled; a malformed redirection is
 * CLUSTER_R_NONE. */
enum cluster_redirect cluster_parse_redirect(const char *s, size_t len, unsigned *slot, char *host, size_t hostlen,
                                             int *port);

#endif
