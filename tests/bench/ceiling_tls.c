/* ceiling_tls.c: ceiling_noop's loop over TLS: the ceiling that streamfleet's noop handler on a
 * rediss:// connection is measured against. hiredis 0.14 has no TLS, so the I/O is OpenSSL's
 * on a blocking socket, and hiredis only formats the commands (redisFormatCommandArgv) and
 * parses the replies (its reader, with its own reply objects, as ceiling_noop has them).
 *
 *   ceiling_tls [-h HOST] -p TLS_PORT -A CA_FILE -s STREAM -g GROUP -c CONSUMER -b BATCH
 *               [-w MS] [-P]
 *
 * The loop: XREADGROUP COUNT BATCH; then XACK of that whole batch and the next XREADGROUP,
 * written together in one SSL_write (one round trip for both). The first read blocks up to
 * -w ms (10000), for the stream to be filled; the later ones do not block, and the first empty
 * one ends the run. The server's certificate is verified against CA_FILE and HOST, as the
 * fleet verifies it.
 *
 * Prints `handled N seconds S`. -P: then wait until stdin is closed before exiting, so the
 * caller can read this process's CPU time (/proc/PID/stat) after the run. */
#include <hiredis/hiredis.h>
#include <hiredis/read.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench.h"
#include "tests/bench/bench_redis.h"

static void usage(void)
{
    fprintf(stderr, "usage: ceiling_tls [-h HOST] -p TLS_PORT -A CA_FILE -s STREAM -g GROUP -c CONSUMER "
                    "-b BATCH [-w MS] [-P]\n");
    exit(2);
}

static void die(const char *what)
{
    fprintf(stderr, "ceiling_tls: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static SSL *tls_connect(const char *host, int port, const char *ca)
{
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
    if (getaddrinfo(host, ports, &hints, &ai) != 0)
        die("cannot resolve the host");
    int fd = socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd == -1 || connect(fd, ai->ai_addr, ai->ai_addrlen) == -1)
        die("cannot connect");
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL || SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1)
        die("cannot load the CA file");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    if (ssl == NULL || SSL_set_fd(ssl, fd) != 1 || SSL_set1_host(ssl, host) != 1)
        die("SSL_new");
    SSL_set_tlsext_host_name(ssl, host);
    if (SSL_connect(ssl) != 1)
        die("tls handshake");
    return ssl;
}

static void send_all(SSL *ssl, const char *p, size_t n)
{
    while (n > 0) {
        int put = SSL_write(ssl, p, (int)n);
        if (put <= 0)
            die("SSL_write");
        p += put;
        n -= (size_t)put;
    }
}

/* The next reply, reading from the connection as long as the reader has none complete. */
static redisReply *get_reply(SSL *ssl, redisReader *rd)
{
    char chunk[16384];
    for (;;) {
        void *v = NULL;
        if (redisReaderGetReply(rd, &v) != REDIS_OK)
            die("protocol error");
        if (v)
            return v;
        int got = SSL_read(ssl, chunk, sizeof chunk);
        if (got <= 0)
            die("SSL_read");
        if (redisReaderFeed(rd, chunk, (size_t)got) != REDIS_OK)
            die("out of memory");
    }
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *stream = NULL, *group = NULL, *consumer = NULL, *ca = NULL;
    int port = 0, opt, hold = 0;
    long batch = 0, first_block = 10000;
    while ((opt = getopt(argc, argv, "h:p:A:s:g:c:b:w:P")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'A': ca = optarg; break;
        case 's': stream = optarg; break;
        case 'g': group = optarg; break;
        case 'c': consumer = optarg; break;
        case 'b': batch = atol(optarg); break;
        case 'w': first_block = atol(optarg); break;
        case 'P': hold = 1; break;
        default: usage();
        }
    }
    if (port <= 0 || !ca || !stream || !group || !consumer || batch < 1)
        usage();

    SSL *ssl = tls_connect(host, port, ca);
    redisReader *rd = redisReaderCreate();
    if (rd == NULL)
        return 1;

    /* XACK's arguments point into the batch's reply, which lives until the XACK is formatted. */
    const char **ack;
    size_t *acklen;
    bench_redis_xack_args(stream, group, (size_t)batch, &ack, &acklen);

    char cnt[24], first[24];
    snprintf(cnt, sizeof cnt, "%ld", batch);
    snprintf(first, sizeof first, "%ld", first_block);
    const char *rd0[11] = { "XREADGROUP", "GROUP", group, consumer, "COUNT", cnt, "BLOCK", first,
                            "STREAMS", stream, ">" };
    const char *rdn[9] = { "XREADGROUP", "GROUP", group, consumer, "COUNT", cnt, "STREAMS", stream, ">" };
    size_t rd0len[11], rdnlen[9];
    for (int i = 0; i < 11; i++)
        rd0len[i] = strlen(rd0[i]);
    for (int i = 0; i < 9; i++)
        rdnlen[i] = strlen(rdn[i]);

    char *cmd = NULL;
    int len = redisFormatCommandArgv(&cmd, 11, rd0, rd0len);
    if (len < 0)
        return 1;
    send_all(ssl, cmd, (size_t)len);
    redisFreeCommand(cmd);

    /* Both commands of a turn go out in one buffer, one SSL_write (one record). */
    char *out = NULL;
    size_t outcap = 0;
    long long handled = 0, t_first = 0, t_last = 0;
    redisReply *r = get_reply(ssl, rd);
    for (;;) {
        if (r->type == REDIS_REPLY_ERROR)
            die(r->str);
        const redisReply *e = bench_redis_entries(r);
        size_t n = e ? e->elements : 0;
        if (n && t_first == 0)
            t_first = bench_mono_ns();
        for (size_t i = 0; i < n; i++) {
            const redisReply *id = e->element[i]->element[0];
            ack[3 + i] = id->str;
            acklen[3 + i] = id->len;
        }
        handled += (long long)n;
        if (n == 0) {
            freeReplyObject(r);
            break;
        }
        char *a = NULL, *b = NULL;
        int alen = redisFormatCommandArgv(&a, (int)(3 + n), ack, acklen);
        int blen = redisFormatCommandArgv(&b, 9, rdn, rdnlen);
        if (alen < 0 || blen < 0)
            return 1;
        if ((size_t)(alen + blen) > outcap) {
            outcap = (size_t)(alen + blen) * 2;
            if ((out = realloc(out, outcap)) == NULL)
                return 1;
        }
        memcpy(out, a, (size_t)alen);
        memcpy(out + alen, b, (size_t)blen);
        redisFreeCommand(a);
        redisFreeCommand(b);
        freeReplyObject(r);
        send_all(ssl, out, (size_t)(alen + blen));
        redisReply *x = get_reply(ssl, rd);
        if (x->type != REDIS_REPLY_INTEGER)
            die("xack");
        t_last = bench_mono_ns();
        freeReplyObject(x);
        r = get_reply(ssl, rd);
    }
    bench_report_handled(handled, t_first, t_last, hold);
    free(out);
    redisReaderFree(rd);
    return 0;
}
