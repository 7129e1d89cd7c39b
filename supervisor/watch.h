/* watch.h: `watch = yes` (for development): the master's one inotify descriptor on the files of
 * the handlers of the pools that ask for it, and which pool is due for new workers. */
#ifndef SF_WATCH_H
#define SF_WATCH_H

#include "common/conf.h"

/* A change is acted on this long after the last event of its pool, so that a save that
 * writes several times (truncate, write, chmod; or write a temporary and rename) replaces the
 * workers once. */
#define WATCH_SETTLE_MS 300

struct watch;

/* Caller owns the result; free with watch_free(). No descriptor is opened until a pool asks
 * for watch = yes. */
struct watch *watch_open(void);
void watch_free(struct watch *w);

/* Watch the files of every pool of c with watch = yes, forgetting what was watched before
 * (called at start and after every reload). A pool still watched keeps a change that is not
 * yet due. A file that cannot be watched is logged and skipped. */
void watch_set(struct watch *w, const struct conf *c);

/* The inotify descriptor for poll() (POLLIN), or -1 when nothing is watched. */
int watch_fd(const struct watch *w);

/* Read every pending event: a pool one of whose files was written, replaced, created,
 * deleted or chmod-ed becomes due WATCH_SETTLE_MS after its last such event. */
void watch_read(struct watch *w, long long now);

/* Milliseconds until a pool is due, or -1 when none is waiting. */
long watch_timeout_ms(const struct watch *w, long long now);

/* The name of a pool whose change is due (it is then no longer waiting), with *file the
 * path that changed last; or NULL. Both strings stay valid until the next watch_set() or
 * watch_read(). */
const char *watch_next_due(struct watch *w, long long now, const char **file);

#endif
