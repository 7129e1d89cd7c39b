/* clock.h: the two clocks in milliseconds. Monotonic for deadlines, timeouts and ages
 * measured by this process; wall-clock (Unix epoch) for times written where other processes
 * or people read them (Redis fields, the status page). */
#ifndef SF_CLOCK_H
#define SF_CLOCK_H

#include <time.h>

static inline long long clock_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline long long clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
