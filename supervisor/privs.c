/* privs.c: pidfile and privilege drop. */
#include "supervisor/privs.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/file.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The pidfile stays open and flock()ed for the master's life: a second instance knows the
 * first lives by the lock, not by a pid that the kernel may have given to someone else. */
static int pidfile_fd = -1;

static pid_t pidfile_read(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    long pid = strtol(buf, NULL, 10);
    return pid > 0 ? (pid_t)pid : 0;
}

int pidfile_write(const char *path)
{
    /* Only read, but still no symlink followed, and no FIFO to block on. */
    int old = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    if (old != -1) {
        if (flock(old, LOCK_SH | LOCK_NB) == -1 && errno == EWOULDBLOCK) {
            log_errorx("pidfile %s: streamfleet already runs as pid %d: not starting a second one", path,
                       (int)pidfile_read(old));
            close(old);
            return -1;
        }
        pid_t stale = pidfile_read(old);
        if (stale > 0)
            log_info("pidfile %s: pid %d is gone: taking the pidfile over", path, (int)stale);
        close(old);
    }
    /* Written whole under another name, locked, then renamed over: a reader never sees a
     * half-written pidfile. The folder may belong to the service user, who can plant a
     * symlink at the temporary name: create it new (O_EXCL, O_NOFOLLOW), never follow one.
     * What is already there (a leftover of a crash, or a plant) is removed once: unlink
     * removes a symlink itself, never its target. */
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.%d.tmp", path, (int)getpid());
    int flags = O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC;
    int fd = open(tmp, flags, 0644);
    if (fd == -1 && errno == EEXIST && unlink(tmp) == 0)
        fd = open(tmp, flags, 0644);
    if (fd == -1) {
        log_warn("pidfile %s: cannot create %s", path, tmp);
        return -1;
    }
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", (int)getpid());
    if (flock(fd, LOCK_EX | LOCK_NB) == -1 || write(fd, line, (size_t)n) != n || fsync(fd) == -1) {
        log_warn("pidfile %s: cannot write", path);
        close(fd);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) == -1) {
        log_warn("pidfile %s: cannot rename %s over it", path, tmp);
        close(fd);
        unlink(tmp);
        return -1;
    }
    pidfile_fd = fd;
    return 0;
}

void pidfile_remove(const char *path)
{
    if (pidfile_fd == -1)
        return;
    /* After the privilege drop the folder may not let us remove it: then empty it through
     * the descriptor opened as root. Either way the lock goes with the close. */
    if (unlink(path) == -1) {
        if (ftruncate(pidfile_fd, 0) == 0)
            log_info("pidfile %s: emptied (its folder does not let this user remove it)", path);
        else
            log_warn("pidfile %s: cannot remove it", path);
    }
    close(pidfile_fd);
    pidfile_fd = -1;
}

int privs_drop(const struct conf *c)
{
    if (geteuid() != 0) {
        if (c->user || c->group)
            log_warnx("[fleet] user/group ignored: not started as root (running as uid %d)", (int)geteuid());
        return 0;
    }
    if (c->user == NULL) {
        if (c->allow_root)
            return 0;
        log_errorx("refusing to run workers as root: set [fleet] user = NAME (e.g. nobody), or allow_root = yes");
        return -1;
    }
    struct passwd *pw = getpwnam(c->user);
    if (pw == NULL) {
        log_errorx("[fleet] user %s: no such user", c->user);
        return -1;
    }
    uid_t uid = pw->pw_uid;
    gid_t gid = pw->pw_gid;
    if (c->group) {
        struct group *gr = getgrnam(c->group);
        if (gr == NULL) {
            log_errorx("[fleet] group %s: no such group", c->group);
            return -1;
        }
        gid = gr->gr_gid;
    }
    if (uid == 0 && !c->allow_root) {
        log_errorx("[fleet] user %s is root: set allow_root = yes to mean it", c->user);
        return -1;
    }
    /* The log file was opened as root: hand it over so that SIGUSR1 can reopen it. Through
     * the descriptor: the path may by now name something else. */
    if (c->log_file && log_file_chown(uid, gid) == -1)
        log_warn("chown %s", c->log_file);
    /* The user's own supplementary groups (e.g. ssl-cert, to read a TLS key), none of root's. */
    if (initgroups(c->user, gid) == -1 || setgid(gid) == -1 || setuid(uid) == -1) {
        log_warn("cannot switch to user %s (uid %d, gid %d)", c->user, (int)uid, (int)gid);
        return -1;
    }
    /* Verify: no way back to root, and really the ids asked for. */
    if (uid != 0 && (setuid(0) != -1 || seteuid(0) != -1)) {
        log_errorx("privilege drop to %s did not hold: root is still reachable", c->user);
        return -1;
    }
    if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) {
        log_errorx("privilege drop to %s did not hold", c->user);
        return -1;
    }
    log_info("running as user %s (uid %d, gid %d)", c->user, (int)uid, (int)gid);
    return 0;
}
