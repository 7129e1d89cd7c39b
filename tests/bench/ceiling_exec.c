/* ceiling_exec.c: the ceiling of handler = exec in scripts/bench (mode handlers): starting a
 * program as fast as this machine can, with no Redis and no worker around it.
 *
 *   ceiling_exec -n COUNT -i INFLIGHT PROGRAM [ARG...]
 *
 * Keeps INFLIGHT copies of PROGRAM running (posix_spawn, as the worker starts an exec
 * handler; stdin, stdout and stderr on /dev/null, where the worker gives each process three
 * pipes), starting the next as soon as one is reaped, until COUNT have exited 0.
 * Prints `handled N seconds S rate R`; exits 1 when one of them failed. */
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    long count = -1, inflight = 16;
    int opt;
    while ((opt = getopt(argc, argv, "+n:i:")) != -1) {
        switch (opt) {
        case 'n': count = atol(optarg); break;
        case 'i': inflight = atol(optarg); break;
        default: count = -1; optind = argc; break;
        }
    }
    if (count < 0 || inflight < 1 || optind >= argc) {
        fprintf(stderr, "usage: ceiling_exec -n COUNT -i INFLIGHT PROGRAM [ARG...]\n");
        return 2;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    for (int fd = 0; fd < 3; fd++)
        posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);

    double t0 = mono_s();
    long started = 0, done = 0, failed = 0;
    while (done < count) {
        while (started < count && started - done < inflight) {
            pid_t pid;
            if (posix_spawn(&pid, argv[optind], &fa, NULL, argv + optind, environ) != 0) {
                perror("ceiling_exec: posix_spawn");
                return 1;
            }
            started++;
        }
        int status;
        if (wait(&status) < 0) {
            perror("ceiling_exec: wait");
            return 1;
        }
        done++;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed++;
    }
    double secs = mono_s() - t0;
    posix_spawn_file_actions_destroy(&fa);
    printf("handled %ld seconds %.6f rate %.0f\n", done, secs, secs > 0 ? (double)done / secs : 0.0);
    return failed ? 1 : 0;
}
