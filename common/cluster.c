/* cluster.c: the pure parts of Redis Cluster (see cluster.h). The slot of a key is the one
 * Redis computes in keyHashSlot() (cluster.c of Redis 7.0): CRC16-XMODEM of the hash tag or of
 * the key, & 16383. */
#include "common/cluster.h"
#include "common/log.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

unsigned cluster_crc16(const char *buf, size_t len)
{
    /* Bit by bit: our keys are a few dozen bytes, and a table would be 512 bytes of cache. */
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((unsigned char)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
    }
    return crc;
}

/* The bytes the slot is computed over: the tag when there is a non-empty one. */
static bool tag_of(const char *key, size_t len, size_t *start, size_t *n)
{
    const char *open = memchr(key, '{', len);
    if (open == NULL)
        return false;
    size_t s = (size_t)(open - key) + 1;
    const char *close = memchr(key + s, '}', len - s);
    if (close == NULL || close == key + s)
        return false;
    *start = s;
    *n = (size_t)(close - (key + s));
    return true;
}

unsigned cluster_keyslot(const char *key, size_t len)
{
    size_t s, n;
    if (tag_of(key, len, &s, &n))
        return cluster_crc16(key + s, n) & (CLUSTER_SLOTS - 1);
    return cluster_crc16(key, len) & (CLUSTER_SLOTS - 1);
}

bool cluster_has_tag(const char *key, size_t len)
{
    size_t s, n;
    return tag_of(key, len, &s, &n);
}

static bool arg_is(const char *arg, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(arg, word, len) == 0;
}

int cluster_key_index(int argc, const char **argv, const size_t *len)
{
    if (argc < 2)
        return -1;
    const char *cmd = argv[0];
    size_t cl = len[0];
    if (arg_is(cmd, cl, "XREADGROUP") || arg_is(cmd, cl, "XREAD")) {
        /* All the keys of one XREADGROUP must be in one slot anyway (CROSSSLOT otherwise). */
        for (int i = 1; i + 1 < argc; i++)
            if (arg_is(argv[i], len[i], "STREAMS"))
                return i + 1;
        return -1;
    }
    if (arg_is(cmd, cl, "EVAL") || arg_is(cmd, cl, "EVALSHA")) {
        if (argc < 4 || len[2] == 0 || (len[2] == 1 && argv[2][0] == '0'))
            return -1;
        return 3;
    }
    if (arg_is(cmd, cl, "XINFO") || arg_is(cmd, cl, "XGROUP"))
        return argc >= 3 ? 2 : -1;
    if (arg_is(cmd, cl, "PING") || arg_is(cmd, cl, "CONFIG") || arg_is(cmd, cl, "INFO") ||
        arg_is(cmd, cl, "CLIENT") || arg_is(cmd, cl, "CLUSTER") || arg_is(cmd, cl, "SCRIPT") ||
        arg_is(cmd, cl, "MULTI") || arg_is(cmd, cl, "EXEC") || arg_is(cmd, cl, "DISCARD") ||
        arg_is(cmd, cl, "TIME") || arg_is(cmd, cl, "ROLE") || arg_is(cmd, cl, "AUTH") ||
        arg_is(cmd, cl, "SELECT") || arg_is(cmd, cl, "ASKING"))
        return -1;
    return 1;
}

/* A host as the network gave it: a name or an address, nothing else (it is connected to). */
static bool plausible_host(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!(s[i] >= '0' && s[i] <= '9') && !(s[i] >= 'a' && s[i] <= 'z') && !(s[i] >= 'A' && s[i] <= 'Z') &&
            !strchr("-._:", s[i]))
            return false;
    return true;
}

static bool small_int(const struct redis_reply *v, long long lo, long long hi, long long *out)
{
    if (v == NULL || v->type != REDIS_T_INTEGER || v->integer < lo || v->integer > hi)
        return false;
    *out = v->integer;
    return true;
}

int cluster_parse_slots(const struct redis_reply *v, struct cluster_range **ranges, size_t *n)
{
    *ranges = NULL;
    *n = 0;
    if (v->type != REDIS_T_ARRAY || v->elements > CLUSTER_SLOTS)
        return -1;
    struct cluster_range *out = v->elements ? xcalloc(v->elements, sizeof *out) : NULL;
    for (size_t i = 0; i < v->elements; i++) {
        const struct redis_reply *e = v->element[i];
        long long lo, hi, port;
        if (e == NULL || e->type != REDIS_T_ARRAY || e->elements < 3 ||
            !small_int(e->element[0], 0, CLUSTER_SLOTS - 1, &lo) ||
            !small_int(e->element[1], lo, CLUSTER_SLOTS - 1, &hi))
            goto bad;
        const struct redis_reply *m = e->element[2];
        if (m == NULL || m->type != REDIS_T_ARRAY || m->elements < 2 || m->element[0] == NULL ||
            m->element[0]->type != REDIS_T_STRING || m->element[0]->len >= CLUSTER_HOST_MAX ||
            !plausible_host(m->element[0]->str, m->element[0]->len) || !small_int(m->element[1], 1, 65535, &port))
            goto bad;
        out[i].lo = (unsigned)lo;
        out[i].hi = (unsigned)hi;
        memcpy(out[i].host, m->element[0]->str, m->element[0]->len);
        out[i].host[m->element[0]->len] = '\0';
        /* Redis 7 writes "?" for a node whose address it does not know yet: "" as for none. */
        if (strcmp(out[i].host, "?") == 0)
            out[i].host[0] = '\0';
        out[i].port = (int)port;
    }
    *ranges = out;
    *n = v->elements;
    return 0;
bad:
    free(out);
    return -1;
}

enum cluster_redirect cluster_parse_redirect(const char *s, size_t len, unsigned *slot, char *host, size_t hostlen,
                                             int *port)
{
    enum cluster_redirect kind;
    size_t p;
    if (len >= 6 && memcmp(s, "MOVED ", 6) == 0) {
        kind = CLUSTER_R_MOVED;
        p = 6;
    } else if (len >= 4 && memcmp(s, "ASK ", 4) == 0) {
        kind = CLUSTER_R_ASK;
        p = 4;
    } else if (len >= 8 && memcmp(s, "TRYAGAIN", 8) == 0 && (len == 8 || s[8] == ' ')) {
        return CLUSTER_R_TRYAGAIN;
    } else if (len >= 11 && memcmp(s, "CLUSTERDOWN", 11) == 0 && (len == 11 || s[11] == ' ')) {
        return CLUSTER_R_CLUSTERDOWN;
    } else {
        return CLUSTER_R_NONE;
    }
    /* slot */
    unsigned long sl = 0;
    size_t digits = 0;
    while (p < len && s[p] >= '0' && s[p] <= '9' && digits < 6) {
        sl = sl * 10 + (unsigned long)(s[p++] - '0');
        digits++;
    }
    if (digits == 0 || sl >= CLUSTER_SLOTS || p >= len || s[p] != ' ')
        return CLUSTER_R_NONE;
    p++;
    /* host:port, the port after the last ':' (an IPv6 host holds colons) */
    size_t end = p;
    while (end < len && s[end] != ' ')
        end++;
    const char *colon = NULL;
    for (size_t i = p; i < end; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL)
        return CLUSTER_R_NONE;
    size_t hn = (size_t)(colon - (s + p));
    if (hn >= hostlen || !plausible_host(s + p, hn))
        return CLUSTER_R_NONE;
    long pt = 0;
    size_t pd = 0;
    for (const char *q = colon + 1; q < s + end; q++) {
        if (*q < '0' || *q > '9' || ++pd > 5)
            return CLUSTER_R_NONE;
        pt = pt * 10 + (*q - '0');
    }
    if (pd == 0 || pt < 1 || pt > 65535)
        return CLUSTER_R_NONE;
    memcpy(host, s + p, hn);
    host[hn] = '\0';
    *slot = (unsigned)sl;
    *port = (int)pt;
    return kind;
}
