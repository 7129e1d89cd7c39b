/* log.c: one event per line on stderr. Each line is built whole and written with one
 * write(2), so lines of different processes sharing stderr never interleave mid-line. */
#include "common/log.h"
#include "common/buf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static enum log_format format = LOG_FORMAT_TEXT;
static char origin_pool[64];
static int origin_slot = -1;

static const char *const level_names[] = { "debug", "info", "warn", "error" };
static bool to_file;                /* stderr is the log file log_open_file() opened */

void log_init(enum log_level level, enum log_format fmt)
{
    min_level = level;
    format = fmt;
}

int log_open_file(const char *path)
{
    /* Root opens this file in a folder the service user may own: a symlink planted there
     * must not make root append to (and later hand over) some other file. O_NOFOLLOW refuses
     * a symlink as the last component (ELOOP); O_NOCTTY keeps a terminal from becoming ours. */
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0640);
    if (fd == -1)
        return -1;
    struct stat st;
    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        errno = EINVAL;     /* a FIFO or a device is no log file */
        return -1;
    }
    if (fd != STDERR_FILENO) {
        /* dup2 clears close-on-exec on fd 2; children inherit it as their stderr. */
        if (dup2(fd, STDERR_FILENO) == -1) {
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        close(fd);
    }
    to_file = true;
    return 0;
}

int log_file_chown(uid_t uid, gid_t gid)
{
    if (!to_file)
        return 0;
    return fchown(STDERR_FILENO, uid, gid);
}

void log_set_origin(const char *pool, int slot)
{
    snprintf(origin_pool, sizeof origin_pool, "%s", pool ? pool : "");
    origin_slot = slot;
}

bool log_enabled(enum log_level level)
{
    return level >= min_level;
}

static void vlog(enum log_level level, int errnum, const char *fmt, va_list ap)
{
    if (level < min_level)
        return;
    char msg[1024];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        return;
    if (errnum) {
        size_t len = strlen(msg);
        snprintf(msg + len, sizeof msg - len, ": %s", strerror(errnum));
    }

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof when - wl, ".%03ldZ", ts.tv_nsec / 1000000);

    /* A fixed buffer on the stack: logging must work when malloc does not. */
    char line[1400];
    int len;
    if (format == LOG_FORMAT_JSON) {
        char esc[1100];
        size_t e = 0;
        for (const char *p = msg; *p && e < sizeof esc - 8; p++) {
            unsigned char c = (unsigned char)*p;
            if (c == '"' || c == '\\') {
                esc[e++] = '\\';
                esc[e++] = (char)c;
            } else if (c < 0x20) {
                e += (size_t)snprintf(esc + e, sizeof esc - e, "\\u%04x", c);
            } else {
                esc[e++] = (char)c;
            }
        }
        esc[e] = '\0';
        if (origin_pool[0])
            len = snprintf(line, sizeof line,
                           "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"pool\":\"%s\",\"slot\":%d,\"msg\":\"%s\"}\n",
                           when, level_names[level], (int)getpid(), origin_pool, origin_slot, esc);
        else
            len = snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n",
                           when, level_names[level], (int)getpid(), esc);
    } else if (origin_pool[0]) {
        len = snprintf(line, sizeof line, "%s %-5s [%d] %s/%d: %s\n", when, level_names[level],
                       (int)getpid(), origin_pool, origin_slot, msg);
    } else {
        len = snprintf(line, sizeof line, "%s %-5s [%d] master: %s\n", when, level_names[level],
                       (int)getpid(), msg);
    }
    if (len < 0)
        return;
    if ((size_t)len >= sizeof line) {
        len = sizeof line - 1;
        line[len - 1] = '\n';
    }
    ssize_t w;
    do {
        w = write(STDERR_FILENO, line, (size_t)len);
    } while (w == -1 && errno == EINTR);
}

#define LOGFN(name, level, witherr)                \
    void name(const char *fmt, ...)                \
    {                                              \
        int saved = errno;                         \
        va_list ap;                                \
        va_start(ap, fmt);                         \
        vlog(level, witherr ? saved : 0, fmt, ap); \
        va_end(ap);                                \
        errno = saved;                             \
    }

LOGFN(log_debug, LOG_DEBUG, 0)
LOGFN(log_info, LOG_INFO, 0)
LOGFN(log_warn, LOG_WARN, 1)
LOGFN(log_warnx, LOG_WARN, 0)
LOGFN(log_errorx, LOG_ERROR, 0)

void fatal(const char *fmt, ...)
{
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_ERROR, saved, fmt, ap);
    va_end(ap);
    exit(1);
}

void fatalx(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog(LOG_ERROR, 0, fmt, ap);
    va_end(ap);
    exit(1);
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        fatalx("out of memory (%zu bytes)", n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        fatalx("out of memory (%zu x %zu bytes)", n, size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q)
        fatalx("out of memory (%zu bytes)", n);
    return q;
}

char *xstrdup(const char *s)
{
    return xstrndup(s, strlen(s));
}

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
