/* privs.h: what a daemon does once, as root, before it forks workers: the pidfile, and the
 * drop to an unprivileged user. */
#ifndef SF_PRIVS_H
#define SF_PRIVS_H

#include "common/conf.h"

/* Refuse when another streamfleet holds path (its flock); else write our pid to it atomically
 * (a temporary file, locked, renamed over it) and keep it locked. A stale pidfile is taken
 * over. The temporary file is created anew (O_EXCL|O_NOFOLLOW): a symlink planted in the
 * folder is never followed. Returns 0 or -1 (logged). */
int pidfile_write(const char *path);
/* Remove our pidfile at exit (or, when the folder does not let us after the privilege drop,
 * empty it: an empty pidfile names no process). */
void pidfile_remove(const char *path);

/* Started as root: switch to [fleet] user and group (initgroups: the user's supplementary
 * groups; setgid, setuid, verified), or
 * refuse to go on as root unless allow_root. Not root: user and group are ignored (logged).
 * Also hands the log file to the new user so that SIGUSR1 can reopen it. Returns 0 or -1. */
int privs_drop(const struct conf *c);

#endif
