/* scale.c: see scale.h. The signal is the wait of the oldest unacknowledged entry, measured
 * from its id (when it was added): with a backlog it grows as long as the pool is short of
 * hands, and it drops to a moment once the backlog is gone. Redis 7.0's lag is not used: it
 * is nil or wrong after XDEL and XTRIM (and trim = acked trims). */
#include "supervisor/scale.h"

static int clamp(int n, int lo, int hi)
{
    return n < lo ? lo : n > hi ? hi : n;
}

int scale_decide(struct scale_state *s, const struct scale_input *in, long long now)
{
    int workers = clamp(in->workers, in->min, in->max);
    if (workers != in->workers)
        return workers;             /* the range moved (SIGTTIN, SIGTTOU, reload) */
    if (!in->known || in->min == in->max)
        return workers;
    bool spaced = s->changed_ms == 0 || now - s->changed_ms >= in->interval_ms;
    if (in->oldest_wait_ms >= in->up_after_ms) {
        s->calm_since_ms = 0;
        if (workers < in->max && spaced) {
            s->changed_ms = now;
            return workers + 1;
        }
        return workers;
    }
    if (s->calm_since_ms == 0)
        s->calm_since_ms = now;
    if (workers > in->min && spaced && now - s->calm_since_ms >= in->down_after_ms) {
        s->changed_ms = now;
        return workers - 1;
    }
    return workers;
}
