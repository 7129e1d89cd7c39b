/* plugincheck.c: `streamfleet -t` loads and initialises each plugin in a process of its own.
 *
 * The master never loads plugin code: a plugin's constructors and init() may do anything
 * (crash, start threads, hold locks across fork) and the master must stay a clean image to
 * fork workers from. So the check forks, the checker loads the plugin (child/handler_plugin.c,
 * the same code path as a worker) and writes its verdict into a pipe; the parent turns a
 * crash, a hang or an error text into one FILE:LINE message. A reload does the same for the
 * plugins it would change, so that it never swaps working workers for ones that cannot start. */
#include "supervisor/plugincheck.h"
#include "child/handler_plugin.h"
#include "common/clock.h"
#include "common/log.h"
#include "supervisor/privs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK_TIMEOUT_MS 10000          /* an init() that takes longer counts as hanging */

/* In the checker: drop to the workers' user, load, answer through fd. Never returns. */
static _Noreturn void checker(const struct conf *c, const struct pool_conf *p, int fd)
{
    /* Forked from a running master: let go of its descriptors (listener, epoll, signalfd,
     * Redis), unblock the signals its signalfd wants blocked, and die with it. */
    if (fd != 3) {
        dup2(fd, 3);
        fd = 3;
    }
    close_range(4, ~0U, 0);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);

    char err[512] = "";
    int rc = 0;
    if (geteuid() == 0 && c->user && privs_drop(c) == -1) {
        snprintf(err, sizeof err, "cannot switch to user %s to check it", c->user);
        rc = -1;
    } else {
        rc = handler_plugin_check(p, err, sizeof err);
    }
    if (rc == -1) {
        size_t n = strlen(err);
        while (n > 0 && write(fd, err, n) == -1 && errno == EINTR)
            ;
    }
    /* _exit: the plugin's atexit handlers and destructors are its business at a worker's
     * exit, not here; and a leak checker has nothing to say about a plugin's allocations. */
    _exit(rc == 0 ? 0 : 1);
}

/* Check one pool's plugin; on failure write the reason into why. Returns 0 or -1. */
static int check_one(const struct conf *c, const struct pool_conf *p, char *why, size_t len)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) == -1) {
        snprintf(why, len, "cannot check it: pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == -1) {
        snprintf(why, len, "cannot check it: fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        close(pfd[0]);
        checker(c, p, pfd[1]);
    }
    close(pfd[1]);

    char text[512];
    size_t got = 0;
    bool hung = false;
    long long deadline = clock_mono_ms() + CHECK_TIMEOUT_MS;
    for (;;) {
        long long left = deadline - clock_mono_ms();
        if (left <= 0) {
            hung = true;
            break;
        }
        struct pollfd w = { .fd = pfd[0], .events = POLLIN };
        int r = poll(&w, 1, (int)left);
        if (r == -1 && errno == EINTR)
            continue;
        if (r <= 0) {
            hung = r == 0;
            break;
        }
        ssize_t n = read(pfd[0], text + got, sizeof text - 1 - got);
        if (n == -1 && errno == EINTR)
            continue;
        if (n <= 0)
            break;              /* end of file: the checker exited (or closed it) */
        got += (size_t)n;
        if (got == sizeof text - 1)
            break;
    }
    close(pfd[0]);
    text[got] = '\0';
    if (hung)
        kill(pid, SIGKILL);
    int st;
    while (waitpid(pid, &st, 0) == -1 && errno == EINTR)
        ;
    if (hung) {
        snprintf(why, len, "loading and init() did not finish within %d s", CHECK_TIMEOUT_MS / 1000);
        return -1;
    }
    if (WIFSIGNALED(st)) {
        snprintf(why, len, "crashed while loading or in init() (signal %d, %s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
        return -1;
    }
    if (WEXITSTATUS(st) != 0) {
        snprintf(why, len, "%s", got ? text : "the check failed without a reason (the plugin exited?)");
        return -1;
    }
    return 0;
}

/* Check each plugin of pool (inline, or of the [handler:NAME] sections it routes to); report
 * each failure on stderr (doing NULL), or in the log after "DOING: ". */
static size_t check_pool(const struct conf *c, const struct pool_conf *pool, const char *doing)
{
    size_t failed = 0;
    size_t n = pool->routed ? pool->ntargets : 1;
    for (size_t t = 0; t < n; t++) {
        const struct pool_conf *p = pool->routed ? &pool->targets[t] : pool;
        if (p->handler != HANDLER_PLUGIN)
            continue;
        char why[600];
        if (check_one(c, p, why, sizeof why) == 0)
            continue;
        if (doing)
            log_errorx("%s: %s:%d: [pool:%s] plugin %s: %s", doing, c->path, p->plugin_line, pool->name,
                       p->plugin, why);
        else
            fprintf(stderr, "%s:%d: [pool:%s] plugin %s: %s\n", c->path, p->plugin_line, pool->name,
                    p->plugin, why);
        failed++;
    }
    return failed;
}

/* Check the plugin pools of c (those new or changed since old, when old is given); report
 * each failure on stderr, or in the log for a reload. */
static size_t check_pools(const struct conf *c, const struct conf *old)
{
    size_t failed = 0;
    for (size_t i = 0; i < c->npools; i++) {
        const struct pool_conf *pool = &c->pools[i];
        const struct pool_conf *was = old ? conf_pool(old, pool->name) : NULL;
        if (was && conf_pool_same(was, pool))
            continue;
        failed += check_pool(c, pool, old ? "reload" : NULL);
    }
    return failed;
}

size_t plugincheck_conf(const struct conf *c)
{
    return check_pools(c, NULL);
}

size_t plugincheck_reload(const struct conf *old, const struct conf *c)
{
    return check_pools(c, old);
}

size_t plugincheck_pool(const struct conf *c, const struct pool_conf *pool)
{
    return check_pool(c, pool, "watch");
}
