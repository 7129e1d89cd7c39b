/* sink.c: an HTTP/1.1 endpoint for benchmarks that answers every request 200, after a fixed
 * delay if asked, and counts what it got. One thread, one epoll loop, keep-alive, pipelining.
 *
 *   sink [-a ADDR] [-p PORT] [-d MS] [-l]
 *
 *   -p PORT  listen there (0, the default: any free port); prints `listening PORT` when ready
 *   -d MS    answer each request MS milliseconds after it arrived (0: at once). Every request
 *            waits the same time, so deadlines come in arrival order: one FIFO queue and one
 *            timerfd armed for its head are the whole timer machinery.
 *   -l       latency: for a body holding `"t":"NANOSECONDS"` (CLOCK_REALTIME at XADD, as
 *            producer.c stamps it and the http handler forwards it), record arrival - t.
 *
 * Control requests, answered at once and not counted: GET /_stats gives
 * `requests N connections C samples S`; GET /_latency gives the samples (ns, one a line);
 * GET /_reset zeroes the counters and drops the samples. SIGTERM or SIGINT ends it, printing
 * the same line as /_stats. Bodies must come with Content-Length (chunked is refused, 411). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "tests/bench/bench.h"

#define MAX_FDS 65536
#define MAX_HEAD 16384              /* request line and headers */
#define MAX_BODY (64 << 20)

struct conn {
    bool open;
    unsigned gen;                   /* bumped on close: queued answers for an old one drop */
    char *in;
    size_t inlen, incap;
    char *out;
    size_t outlen, outoff, outcap;
    bool want_out;                  /* EPOLLOUT armed */
    bool close_after;               /* Connection: close seen; close once everything is sent */
    unsigned queued;                /* answers waiting in the delay queue */
};

struct due {
    long long at_ns;
    int fd;
    unsigned gen;
    bool close;
};

static struct conn conns[MAX_FDS];
static int ep;
static long long delay_ns;
static bool record_latency;
static unsigned long long requests, connections;
static long long *samples;
static size_t nsamples, capsamples;
static struct due *queue;           /* a ring */
static size_t qhead, qlen, qcap;
static int tfd;

static const char ok_response[] =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (q == NULL) {
        fprintf(stderr, "sink: out of memory\n");
        exit(1);
    }
    return q;
}

static void conn_close(int fd)
{
    struct conn *c = &conns[fd];
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL);
    close(fd);
    free(c->in);
    free(c->out);
    unsigned gen = c->gen + 1;
    memset(c, 0, sizeof *c);
    c->gen = gen;
}

/* Write what is buffered; arm EPOLLOUT when the socket is full. Returns -1 when closed. */
static int conn_flush(int fd)
{
    struct conn *c = &conns[fd];
    while (c->outoff < c->outlen) {
        ssize_t w = write(fd, c->out + c->outoff, c->outlen - c->outoff);
        if (w > 0) {
            c->outoff += (size_t)w;
            continue;
        }
        if (w == -1 && errno == EINTR)
            continue;
        if (w == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->want_out) {
                struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.fd = fd };
                epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
                c->want_out = true;
            }
            return 0;
        }
        conn_close(fd);
        return -1;
    }
    c->outoff = c->outlen = 0;
    if (c->want_out) {
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev);
        c->want_out = false;
    }
    if (c->close_after && c->queued == 0) {
        conn_close(fd);
        return -1;
    }
    return 0;
}

static void conn_append(struct conn *c, const char *p, size_t n)
{
    if (c->outlen + n > c->outcap) {
        c->outcap = (c->outlen + n) * 2;
        c->out = xrealloc(c->out, c->outcap);
    }
    memcpy(c->out + c->outlen, p, n);
    c->outlen += n;
}

static void answer_text(struct conn *c, const char *body, size_t len)
{
    char head[128];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n", len);
    conn_append(c, head, (size_t)n);
    conn_append(c, body, len);
}

static void arm_timer(void)
{
    struct itimerspec its = { { 0, 0 }, { 0, 0 } };
    if (qlen) {
        long long at = queue[qhead].at_ns;
        its.it_value.tv_sec = at / 1000000000LL;
        its.it_value.tv_nsec = at % 1000000000LL;
        if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
            its.it_value.tv_nsec = 1;
    }
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static void enqueue(int fd, bool close_after, long long arrival)
{
    if (qlen == qcap) {
        size_t ncap = qcap ? qcap * 2 : 1024;
        struct due *nq = xrealloc(NULL, ncap * sizeof *nq);
        for (size_t i = 0; i < qlen; i++)
            nq[i] = queue[(qhead + i) % qcap];
        free(queue);
        queue = nq;
        qcap = ncap;
        qhead = 0;
    }
    queue[(qhead + qlen) % qcap] = (struct due){ arrival + delay_ns, fd, conns[fd].gen, close_after };
    qlen++;
    conns[fd].queued++;
    if (qlen == 1)
        arm_timer();
}

static void on_timer(void)
{
    uint64_t expirations;
    if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        return;
    long long now = bench_mono_ns();
    /* Collect first, flush after: a flush may close a connection whose answers are queued. */
    static int *touched;
    static size_t touched_cap;
    size_t ntouched = 0;
    while (qlen && queue[qhead].at_ns <= now) {
        struct due d = queue[qhead];
        qhead = (qhead + 1) % qcap;
        qlen--;
        struct conn *c = &conns[d.fd];
        if (!c->open || c->gen != d.gen)
            continue;
        c->queued--;
        conn_append(c, ok_response, sizeof ok_response - 1);
        if (d.close)
            c->close_after = true;
        if (ntouched == touched_cap) {
            touched_cap = touched_cap ? touched_cap * 2 : 256;
            touched = xrealloc(touched, touched_cap * sizeof *touched);
        }
        touched[ntouched++] = d.fd;
    }
    for (size_t i = 0; i < ntouched; i++) {
        struct conn *c = &conns[touched[i]];
        if (c->open && c->outlen > c->outoff)
            conn_flush(touched[i]);
    }
    arm_timer();
}

/* The value of header name in head (lines after the request line), or NULL. */
static const char *header(const char *head, size_t headlen, const char *name, size_t *vlen)
{
    size_t n = strlen(name);
    const char *p = memchr(head, '\n', headlen);
    const char *end = head + headlen;
    while (p && p + 1 < end) {
        p++;
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            eol = end;
        if ((size_t)(eol - p) > n && p[n] == ':' && strncasecmp(p, name, n) == 0) {
            const char *v = p + n + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *ve = eol;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' '))
                ve--;
            *vlen = (size_t)(ve - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

static void record(const char *body, size_t len, long long arrival_real)
{
    static const char key[] = "\"t\":\"";
    for (size_t i = 0; i + sizeof key - 1 < len; i++) {
        if (memcmp(body + i, key, sizeof key - 1) != 0)
            continue;
        long long t = 0;
        size_t j = i + sizeof key - 1;
        while (j < len && body[j] >= '0' && body[j] <= '9')
            t = t * 10 + (body[j++] - '0');
        if (nsamples == capsamples) {
            capsamples = capsamples ? capsamples * 2 : 65536;
            samples = xrealloc(samples, capsamples * sizeof *samples);
        }
        samples[nsamples++] = arrival_real - t;
        return;
    }
}

static void control(struct conn *c, const char *path, size_t plen)
{
    char line[160];
    if (plen == 7 && memcmp(path, "/_stats", 7) == 0) {
        int n = snprintf(line, sizeof line, "requests %llu connections %llu samples %zu\n", requests,
                         connections, nsamples);
        answer_text(c, line, (size_t)n);
    } else if (plen == 9 && memcmp(path, "/_latency", 9) == 0) {
        size_t cap = nsamples * 21 + 1, len = 0;
        char *b = xrealloc(NULL, cap);
        for (size_t i = 0; i < nsamples; i++)
            len += (size_t)snprintf(b + len, cap - len, "%lld\n", samples[i]);
        answer_text(c, b, len);
        free(b);
    } else if (plen == 7 && memcmp(path, "/_reset", 7) == 0) {
        requests = 0;
        connections = 0;
        nsamples = 0;
        answer_text(c, "reset\n", 6);
    } else {
        static const char nf[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        conn_append(c, nf, sizeof nf - 1);
    }
}

/* Take every complete request out of c->in. Returns -1 when the connection was closed. */
static int parse(int fd)
{
    struct conn *c = &conns[fd];
    size_t off = 0;
    long long now = bench_mono_ns();
    long long now_real = record_latency ? bench_real_ns() : 0;
    while (off < c->inlen) {
        const char *p = c->in + off;
        size_t avail = c->inlen - off;
        const char *hend = NULL;
        for (size_t i = 3; i < avail; i++)
            if (p[i] == '\n' && p[i - 1] == '\r' && p[i - 2] == '\n' && p[i - 3] == '\r') {
                hend = p + i + 1;
                break;
            }
        if (hend == NULL) {
            if (avail > MAX_HEAD) {
                conn_close(fd);
                return -1;
            }
            break;
        }
        size_t headlen = (size_t)(hend - p);
        size_t vlen;
        const char *v = header(p, headlen, "Transfer-Encoding", &vlen);
        if (v) {
            static const char refuse[] = "HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\n"
                                         "Connection: close\r\n\r\n";
            conn_append(c, refuse, sizeof refuse - 1);
            c->close_after = true;
            c->inlen = 0;
            return conn_flush(fd);
        }
        size_t body = 0;
        if ((v = header(p, headlen, "Content-Length", &vlen)) != NULL)
            body = (size_t)strtoull(v, NULL, 10);
        if (body > MAX_BODY) {
            conn_close(fd);
            return -1;
        }
        if (avail < headlen + body)
            break;
        bool close_after = (v = header(p, headlen, "Connection", &vlen)) && vlen == 5 &&
                           strncasecmp(v, "close", 5) == 0;
        const char *sp = memchr(p, ' ', headlen);
        const char *path = sp ? sp + 1 : p;
        const char *pe = sp ? memchr(path, ' ', (size_t)(hend - path)) : NULL;
        size_t plen = pe ? (size_t)(pe - path) : 0;
        if (plen >= 3 && memcmp(path, "/_", 2) == 0 && c->queued == 0) {
            control(c, path, plen);
            if (close_after)
                c->close_after = true;
        } else {
            requests++;
            if (record_latency)
                record(hend, body, now_real);
            if (delay_ns == 0) {
                conn_append(c, ok_response, sizeof ok_response - 1);
                if (close_after)
                    c->close_after = true;
            } else {
                enqueue(fd, close_after, now);
            }
        }
        off += headlen + body;
    }
    if (off) {
        memmove(c->in, c->in + off, c->inlen - off);
        c->inlen -= off;
    }
    if (c->outlen > c->outoff || c->close_after)
        return conn_flush(fd);
    return 0;
}

static void on_readable(int fd)
{
    struct conn *c = &conns[fd];
    for (;;) {
        if (c->incap - c->inlen < 16384) {
            c->incap = c->incap ? c->incap * 2 : 32768;
            c->in = xrealloc(c->in, c->incap);
        }
        ssize_t r = read(fd, c->in + c->inlen, c->incap - c->inlen);
        if (r > 0) {
            c->inlen += (size_t)r;
            if (c->inlen < c->incap)
                break;          /* drained the socket for now */
            continue;
        }
        if (r == -1 && errno == EINTR)
            continue;
        if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        conn_close(fd);         /* EOF or error */
        return;
    }
    parse(fd);
}

static void on_accept(int lfd)
{
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1)
            return;
        if (fd >= MAX_FDS) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = &conns[fd];
        c->open = true;
        connections++;
        struct epoll_event ev = { .events = EPOLLIN, .data.fd = fd };
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

int main(int argc, char **argv)
{
    const char *addr = "127.0.0.1";
    int port = 0, opt;
    long delay_ms = 0;
    while ((opt = getopt(argc, argv, "a:p:d:l")) != -1) {
        switch (opt) {
        case 'a': addr = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'd': delay_ms = atol(optarg); break;
        case 'l': record_latency = true; break;
        default:
            fprintf(stderr, "usage: sink [-a ADDR] [-p PORT] [-d MS] [-l]\n");
            return 2;
        }
    }
    delay_ns = delay_ms * 1000000LL;
    signal(SIGPIPE, SIG_IGN);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "sink: bad address %s\n", addr);
        return 2;
    }
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) == -1 || listen(lfd, 4096) == -1) {
        fprintf(stderr, "sink: listen %s:%d: %s\n", addr, port, strerror(errno));
        return 1;
    }
    socklen_t salen = sizeof sa;
    getsockname(lfd, (struct sockaddr *)&sa, &salen);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (sfd == -1 || tfd == -1 || ep == -1) {
        perror("sink: setup");
        return 1;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.fd = lfd };
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.fd = sfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &ev);
    ev.data.fd = tfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &ev);

    printf("listening %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    struct epoll_event evs[256];
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            perror("sink: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                on_accept(lfd);
            } else if (fd == sfd) {
                printf("requests %llu connections %llu samples %zu\n", requests, connections,
                       nsamples);
                return 0;
            } else if (fd == tfd) {
                on_timer();
            } else if (conns[fd].open) {
                if (evs[i].events & (EPOLLERR | EPOLLHUP)) {
                    on_readable(fd);    /* read what is left, then see EOF */
                    continue;
                }
                if (evs[i].events & EPOLLOUT)
                    if (conn_flush(fd) == -1)
                        continue;
                if ((evs[i].events & EPOLLIN) && conns[fd].open)
                    on_readable(fd);
            }
        }
    }
}
