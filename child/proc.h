/* proc.h: a handler's own process (handler = exec, subprocess): started with its stdin,
 * stdout and stderr on pipes and nothing else inherited, in a process group of its own (so
 * that a timeout reaches what it started), and noticed when it exits through a pidfd, so
 * the worker's poll() loop never waits on it. */
#ifndef SF_PROC_H
#define SF_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/buf.h"
#include "common/conf.h"

struct proc {
    pid_t pid;                  /* also its process group; 0: none */
    int pidfd;                  /* readable once it has exited */
    int in;                     /* our ends, non-blocking, -1 once closed: its stdin, */
    int out;                    /* its stdout, */
    int err;                    /* and its stderr */
    int exec_errno;             /* proc_spawn() failed because the program cannot be executed */
    bool reaped;                /* proc_reap() collected it */
};

/* Run argv (argv[0] looked up in our PATH) with exactly the environment envp ("NAME=value",
 * NULL-terminated). tied: the process gets SIGTERM when we die (fork; for a long-lived
 * process), else it is started faster (posix_spawn) and outlives a worker killed outright.
 * Returns 0, or -1 with the reason in err: p->exec_errno set when the program cannot be
 * executed, else a fork or pipe failure (try again later). */
int proc_spawn(struct proc *p, char *const argv[], char *const envp[], bool tied, char *err,
               size_t errlen);
/* Send sig to its process group (what it started too); after proc_reap(), to what is left of
 * the group only. */
void proc_kill(const struct proc *p, int sig);
/* Once its pidfd is readable: collect its wait status into *status. Returns 1 when reaped, 0
 * when it still runs. */
int proc_reap(struct proc *p, int *status);
/* Close every descriptor still open (the process, if alive, sees EOF and EPIPE). */
void proc_close(struct proc *p);
/* Close one of our ends (p->in, p->out or p->err given by address). */
void proc_close_fd(int *fd);

/* Read what fd has now into b, keeping at most cap bytes in b (the first ones, or with tail
 * the last ones) and counting the others in *dropped. Returns 0 at end of file, 1 when it
 * would block, -1 on an error (errno). */
int proc_read(int fd, struct buf *b, size_t cap, bool tail, size_t *dropped);

/* The environment a handler process gets: the pool's env lines, then pass_env's names with
 * their values in ours (those we lack are left out), then extra ("NAME=value" each, nextra).
 * Caller owns the result; free with proc_env_free(). */
char **proc_env(const struct pool_conf *p, char *const extra[], size_t nextra);
void proc_env_free(char **envp);

/* The last non-empty line of b, control characters as '?', cut to fit out; NULL when b
 * holds no such line. */
const char *proc_last_line(const struct buf *b, char *out, size_t len);
/* "exit 3", "killed by signal 9 (SIGKILL)": a wait status in words, into buf. */
const char *proc_status_text(int status, char *buf, size_t len);

/* Resident bytes of process pid from /proc/PID/statm (pid 0: ourselves), or 0 when unknown. */
long long proc_rss(pid_t pid);

#endif
