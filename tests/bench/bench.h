/* bench.h: what the bench programs share: the clocks and the ceilings' report (bench_redis.h:
 * their hiredis steps). Header-only, so that each program stays one file built on its own
 * (`make bench`); the functions are small enough to inline, so a program's loop costs what it
 * cost with its own copy. */
#ifndef SF_TESTS_BENCH_BENCH_H
#define SF_TESTS_BENCH_BENCH_H

#include <stdio.h>
#include <time.h>
#include <unistd.h>

/* CLOCK_MONOTONIC in nanoseconds: durations within one process. */
static inline long long bench_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* CLOCK_REALTIME in nanoseconds: the stamps that travel between processes (producer's `t`). */
static inline long long bench_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* The ceilings' last words: prints `handled N seconds S` (S from the first message to the last
 * acknowledgement, both bench_mono_ns()); with hold, then waits until stdin is closed, so that
 * the caller can read this process's CPU time (/proc/PID/stat) after the run. */
static inline void bench_report_handled(long long handled, long long t_first, long long t_last, int hold)
{
    double secs = t_last > t_first ? (double)(t_last - t_first) / 1e9 : 0;
    printf("handled %lld seconds %.6f\n", handled, secs);
    fflush(stdout);
    if (hold) {
        char c;
        while (read(0, &c, 1) > 0)
            ;
    }
}

#endif
