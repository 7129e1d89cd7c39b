/* scale.h: lag-driven scaling of a pool whose workers are a range (`workers = 2..16`). The
 * master asks scale_decide() every half second with the pool's last Redis poll: while the
 * oldest entry the pool's group holds unacknowledged has waited `scale_up_after` or longer
 * since it was added (a backlog that is not being worked off in time), one more worker per
 * `scale_interval`, up to the maximum; once nothing has waited that long for
 * `scale_down_after`, one fewer per `scale_interval`, down to the minimum. Pure: no clock, no
 * Redis, so it is unit-tested. */
#ifndef SF_SCALE_H
#define SF_SCALE_H

#include <stdbool.h>

/* What the decision remembers between calls; zero it for a new pool. */
struct scale_state {
    long long calm_since_ms;        /* 0: not calm at the last call */
    long long changed_ms;           /* the last change of the count; 0: none yet */
};

struct scale_input {
    int workers, min, max;          /* the count now, and the range */
    bool known;                     /* the pool's Redis figures are known */
    long long oldest_wait_ms;       /* age of its oldest pending entry, by its id; -1: none */
    long up_after_ms, down_after_ms, interval_ms;
};

/* The number of workers the pool should have now (the same when nothing changes; always
 * within min..max). now: the master's monotonic clock, in ms. */
int scale_decide(struct scale_state *s, const struct scale_input *in, long long now);

#endif
