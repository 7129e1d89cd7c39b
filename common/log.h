/* log.h: one event per line on stderr, as text or JSON. Every process of the fleet logs
 * through here; a child sets its pool and slot once so that each line says who wrote it. */
#ifndef SF_LOG_H
#define SF_LOG_H

#include "common/conf.h"

#include <sys/types.h>

void log_init(enum log_level level, enum log_format format);
/* Make path (opened for appending, created 0640) the process's stderr, where every log line
 * goes: at start, and again on SIGUSR1 after logrotate moved the file. A symlink or anything
 * but a regular file at path is refused. Returns 0 or -1 with errno. */
int log_open_file(const char *path);
/* Hand the log file opened last to uid:gid (through its descriptor, never its path, which
 * may have been replaced meanwhile). 0 when no file was opened. Returns 0 or -1 with errno. */
int log_file_chown(uid_t uid, gid_t gid);
/* Name the writer of the following lines: pool NULL for the master. */
void log_set_origin(const char *pool, int slot);
bool log_enabled(enum log_level level);

/* printf-style message, lowercase, saying what failed first. The _x variants do not append
 * strerror(errno); the others do (OpenBSD's log_warn/log_warnx convention). */
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_errorx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Log at error level and exit(1). For start-up and out-of-memory only. */
_Noreturn void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
_Noreturn void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that cannot fail: out of memory is fatal. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

#endif
