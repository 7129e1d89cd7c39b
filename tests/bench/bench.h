/* bench.h: what the bench programs share (the clocks; bench_redis.h: hiredis). Header-only, so
 * that each program stays one file built on its own (`make bench`); the functions are small
 * enough to inline, so a program's loop costs what it cost with its own copy. */
#ifndef SF_TESTS_BENCH_BENCH_H
#define SF_TESTS_BENCH_BENCH_H

#include <time.h>

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

#endif
