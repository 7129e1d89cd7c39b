/* httpd.c: libmicrohttpd wrapper (the only file that includes it). */
#include "supervisor/httpd.h"
#include "common/log.h"

#include <microhttpd.h>
#include <stdbool.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct httpd {
    struct MHD_Daemon *d;
    struct httpd_route route;
    char *token;                    /* NULL: no authentication */
};

/* Constant time in the length of the expected token: a wrong guess takes as long as a
 * nearly right one. */
static bool token_ok(const char *expected, const char *header)
{
    static const char scheme[] = "Bearer ";
    if (header == NULL || strncmp(header, scheme, sizeof scheme - 1) != 0)
        return false;
    const char *got = header + sizeof scheme - 1;
    size_t n = strlen(expected), m = strlen(got);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(expected[i] ^ (i < m ? got[i] : 0));
    return diff == 0;
}

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_data_size, void **con_cls)
{
    (void)version;
    (void)upload_data;
    (void)con_cls;
    struct httpd *h = cls;
    struct buf body = BUF_INIT;
    const char *ctype = "text/plain; charset=utf-8";
    int status;

    if (*upload_data_size != 0) {
        /* A body we do not want: drop it and answer once it has been read. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    bool unauthorized = h->token && strcmp(url, "/livez") != 0 &&
                        !token_ok(h->token, MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Authorization"));
    if (unauthorized) {
        status = 401;
        buf_adds(&body, "unauthorized\n");
    } else if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        status = 405;
        buf_adds(&body, "method not allowed\n");
    } else {
        const char *pool = MHD_lookup_connection_value(conn, MHD_GET_ARGUMENT_KIND, "pool");
        status = h->route.fn(h->route.arg, url, pool, &body, &ctype);
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(body.len, body.p ? body.p : (char *)"",
                                                                MHD_RESPMEM_MUST_COPY);
    buf_release(&body);
    if (resp == NULL)
        return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", ctype);
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (status == 405)
        MHD_add_response_header(resp, "Allow", "GET, HEAD");
    if (status == 401)
        MHD_add_response_header(resp, "WWW-Authenticate", "Bearer realm=\"streamfleet\"");
    enum MHD_Result r = MHD_queue_response(conn, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return r;
}

static void mhd_log(void *arg, const char *fmt, va_list ap)
{
    (void)arg;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http: %s", msg);
}

struct httpd *httpd_open(const char *host, int port, const char *token, struct httpd_route route, char *err,
                         size_t errlen)
{
    struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
    struct addrinfo *ai = NULL;
    char portstr[8];
    snprintf(portstr, sizeof portstr, "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &ai);
    if (gai != 0) {
        snprintf(err, errlen, "listen address %s: %s", host, gai_strerror(gai));
        return NULL;
    }
    struct httpd *h = xcalloc(1, sizeof *h);
    h->route = route;
    h->token = token ? xstrdup(token) : NULL;
    unsigned flags = MHD_USE_EPOLL | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* Binding by port alone would listen on every address: always give the address. The
     * limits keep slow or hostile clients from holding the master: few connections, each
     * with a small memory budget and an idle timeout. */
    h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, answer, h,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                            MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(64 * 1024),
                            MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1,
                            MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (h->d == NULL) {
        snprintf(err, errlen, "cannot listen on %s:%d (in use, or not an address of this host)", host, port);
        free(h->token);
        free(h);
        return NULL;
    }
    return h;
}

int httpd_fd(struct httpd *h)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_EPOLL_FD);
    return info ? info->epoll_fd : -1;
}

long httpd_timeout_ms(struct httpd *h)
{
    MHD_UNSIGNED_LONG_LONG t;
    if (MHD_get_timeout(h->d, &t) != MHD_YES)
        return -1;
    return t > 60000 ? 60000 : (long)t;
}

void httpd_run(struct httpd *h)
{
    MHD_run(h->d);
}

void httpd_close(struct httpd *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->d);
    if (h->token) {
        explicit_bzero(h->token, strlen(h->token));
        free(h->token);
    }
    free(h);
}
