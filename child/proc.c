/* proc.c: starting and reaping a handler's own process.
 *
 * Two ways to start one. For the one process per message of exec, posix_spawnp(): glibc
 * starts it like vfork (no copy of our page tables: about 1.3x the messages per second of
 * fork in our measurement), reports a failed exec as its return value, and does the same
 * resets as below but for PR_SET_PDEATHSIG, which it cannot. For the long-lived process of
 * subprocess, fork() then execvpe(): the worker is single-threaded, so the child may run
 * anything until exec. Before exec it puts the pipes on 0, 1, 2, marks every other
 * descriptor close-on-exec (close_range CLOSE_RANGE_CLOEXEC: the exec report pipe stays
 * usable until exec succeeds and closes it), sets every signal back to its default (an
 * ignored signal would stay ignored across exec: the worker ignores SIGPIPE and SIGHUP),
 * starts its own process group, and asks for SIGTERM should the worker die
 * (PR_SET_PDEATHSIG). Either way a program that cannot be executed is known when
 * proc_spawn() returns. */
#include "child/proc.h"
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

void proc_close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

void proc_close(struct proc *p)
{
    proc_close_fd(&p->in);
    proc_close_fd(&p->out);
    proc_close_fd(&p->err);
    proc_close_fd(&p->pidfd);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl == -1 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* The parent's side once the process runs: a pidfd to learn its end, our pipe ends
 * non-blocking, its ends closed. Returns 0, or -1 (the process killed and reaped: without a
 * pidfd we could not tell when it ends, so it must not run); the pipes are the caller's to
 * close then. */
static int adopt(struct proc *p, pid_t pid, int in[2], int out[2], int er[2], char *err, size_t errlen)
{
    p->pid = pid;
    p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (p->pidfd == -1) {
        snprintf(err, errlen, "pidfd_open: %s", strerror(errno));
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        p->pid = 0;
        return -1;
    }
    close(in[0]);
    close(out[1]);
    close(er[1]);
    p->in = in[1];
    p->out = out[0];
    p->err = er[0];
    set_nonblock(p->in);
    set_nonblock(p->out);
    set_nonblock(p->err);
    return 0;
}

/* Close what is open of pipes fds[0..n) (each a pair). */
static void close_pipes(int (*fds)[2], int n)
{
    for (int k = 0; k < n; k++)
        for (int i = 0; i < 2; i++)
            if (fds[k][i] >= 0)
                close(fds[k][i]);
}

/* In the child, between fork and exec: nothing here returns. */
static _Noreturn void exec_child(char *const argv[], char *const envp[], int in, int out, int err,
                                 int report, pid_t parent)
{
    if (dup2(in, 0) == -1 || dup2(out, 1) == -1 || dup2(err, 2) == -1)
        goto fail;
    close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            sigaction(sig, &sa, NULL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
        _exit(127);
    execvpe(argv[0], argv, envp);
fail:;
    int e = errno;
    ssize_t w = write(report, &e, sizeof e);
    (void)w;
    _exit(127);
}

/* fork and exec_child(): slower, but tied to our life. */
static int spawn_tied(struct proc *p, char *const argv[], char *const envp[], char *err, size_t errlen)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, er[2] = { -1, -1 }, rep[2] = { -1, -1 };
    *p = (struct proc){ .pid = 0, .pidfd = -1, .in = -1, .out = -1, .err = -1 };
    if (pipe2(in, O_CLOEXEC) == -1 || pipe2(out, O_CLOEXEC) == -1 || pipe2(er, O_CLOEXEC) == -1 ||
        pipe2(rep, O_CLOEXEC) == -1) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == -1) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0)
        exec_child(argv, envp, in[0], out[1], er[1], rep[1], parent);
    setpgid(pid, pid);              /* also here: a kill before the child's own call must reach */
    /* Wait for exec's verdict (end of file when it worked: the report pipe closes on exec; an
     * errno when it failed): a moment, once per long-lived process, and a program that cannot
     * run is then known before any message is given to it. */
    close(rep[1]);
    rep[1] = -1;
    int e;
    ssize_t got;
    while ((got = read(rep[0], &e, sizeof e)) == -1 && errno == EINTR)
        ;
    if (got == (ssize_t)sizeof e) {
        p->exec_errno = e ? e : EINVAL;
        snprintf(err, errlen, "cannot execute %s: %s", argv[0], strerror(p->exec_errno));
        while (waitpid(pid, NULL, 0) == -1 && errno == EINTR)
            ;
        goto fail;
    }
    close(rep[0]);
    rep[0] = -1;
    if (adopt(p, pid, in, out, er, err, errlen) == 0)
        return 0;
fail:;
    int pipes[4][2] = { { in[0], in[1] }, { out[0], out[1] }, { er[0], er[1] }, { rep[0], rep[1] } };
    close_pipes(pipes, 4);
    return -1;
}

/* posix_spawn (vfork-like: no copy of our page tables) for the one process per message. */
static int spawn_fast(struct proc *p, char *const argv[], char *const envp[], char *err, size_t errlen)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, er[2] = { -1, -1 };
    *p = (struct proc){ .pid = 0, .pidfd = -1, .in = -1, .out = -1, .err = -1 };
    if (pipe2(in, O_CLOEXEC) == -1 || pipe2(out, O_CLOEXEC) == -1 || pipe2(er, O_CLOEXEC) == -1) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto fail;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    posix_spawn_file_actions_adddup2(&fa, er[1], 2);
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
    posix_spawnattr_init(&at);
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&at, &all);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETPGROUP);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    if (rc != 0) {
        snprintf(err, errlen, "posix_spawn: %s", strerror(rc));
        if (rc != EAGAIN && rc != ENOMEM)
            p->exec_errno = rc;     /* else the system's trouble: try again later */
        goto fail;
    }
    if (adopt(p, pid, in, out, er, err, errlen) == 0)
        return 0;
fail:;
    int pipes[3][2] = { { in[0], in[1] }, { out[0], out[1] }, { er[0], er[1] } };
    close_pipes(pipes, 3);
    return -1;
}

int proc_spawn(struct proc *p, char *const argv[], char *const envp[], bool tied, char *err,
               size_t errlen)
{
    return tied ? spawn_tied(p, argv, envp, err, errlen) : spawn_fast(p, argv, envp, err, errlen);
}

void proc_kill(const struct proc *p, int sig)
{
    /* Once reaped, its pid may be another process's: only the group (kept alive by its
     * members) may still be signalled. */
    if (p->pid > 0 && kill(-p->pid, sig) == -1 && !p->reaped)
        kill(p->pid, sig);          /* not yet in its own group */
}

int proc_reap(struct proc *p, int *status)
{
    int st;
    pid_t r = waitpid(p->pid, &st, WNOHANG);
    if (r == 0)
        return 0;
    if (r == -1)
        st = 0xff00;                /* ECHILD: someone reaped it for us; say exit 255 */
    p->reaped = true;
    *status = st;
    proc_close_fd(&p->pidfd);
    return 1;
}

int proc_read(int fd, struct buf *b, size_t cap, bool tail, size_t *dropped)
{
    char chunk[16384];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n == 0)
            return 0;
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 1 : -1;
        }
        size_t got = (size_t)n;
        if (tail && b->len + got > cap) {
            /* Keep the newest cap bytes: drop the oldest of b (and of chunk, if it is longer). */
            size_t skip = got > cap ? got - cap : 0;
            size_t over = b->len + (got - skip) > cap ? b->len + (got - skip) - cap : 0;
            memmove(b->p, b->p + over, b->len - over);
            b->len -= over;
            buf_add(b, chunk + skip, got - skip);
            *dropped += skip + over;
            continue;
        }
        size_t keep = b->len >= cap ? 0 : cap - b->len;
        if (keep > got)
            keep = got;
        buf_add(b, chunk, keep);
        *dropped += got - keep;
    }
}

char **proc_env(const struct pool_conf *p, char *const extra[], size_t nextra)
{
    char **envp = xcalloc(p->nenv + p->npass_env + nextra + 1, sizeof *envp);
    size_t n = 0;
    for (size_t i = 0; i < p->nenv; i++)
        envp[n++] = xstrdup(p->env[i]);
    for (size_t i = 0; i < p->npass_env; i++) {
        const char *v = getenv(p->pass_env[i]);
        if (v == NULL)
            continue;
        struct buf b = BUF_INIT;
        buf_printf(&b, "%s=%s", p->pass_env[i], v);
        envp[n++] = b.p;
    }
    for (size_t i = 0; i < nextra; i++)
        envp[n++] = xstrdup(extra[i]);
    envp[n] = NULL;
    return envp;
}

void proc_env_free(char **envp)
{
    if (envp == NULL)
        return;
    for (char **e = envp; *e; e++)
        free(*e);
    free(envp);
}

const char *proc_status_text(int status, char *buf, size_t len)
{
    if (WIFEXITED(status))
        snprintf(buf, len, "exit %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, len, "killed by signal %d (SIG%s)", WTERMSIG(status),
                 sigabbrev_np(WTERMSIG(status)) ? sigabbrev_np(WTERMSIG(status)) : "?");
    else
        snprintf(buf, len, "status %#x", status);
    return buf;
}

const char *proc_last_line(const struct buf *b, char *out, size_t len)
{
    size_t end = b->len;
    while (end > 0 && (b->p[end - 1] == '\n' || b->p[end - 1] == '\r' || b->p[end - 1] == ' ' ||
                       b->p[end - 1] == '\t'))
        end--;
    size_t start = end;
    while (start > 0 && b->p[start - 1] != '\n')
        start--;
    size_t n = 0;
    for (size_t i = start; i < end && n + 1 < len; i++) {
        unsigned char c = (unsigned char)b->p[i];
        out[n++] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (len)
        out[n] = '\0';
    return n ? out : NULL;
}

/* Resident bytes of a process from /proc/PID/statm (pid 0: ourselves), or 0. */
long long proc_rss(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof path, pid ? "/proc/%d/statm" : "/proc/self/statm", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    long long size = 0, rss = 0;
    int n = fscanf(f, "%lld %lld", &size, &rss);
    fclose(f);
    return n == 2 ? rss * sysconf(_SC_PAGESIZE) : 0;
}
