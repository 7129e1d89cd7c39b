/* backoff.h: how long to wait before the next attempt. Pure, so it is tested directly. */
#ifndef SF_BACKOFF_H
#define SF_BACKOFF_H

enum backoff_kind { BACKOFF_EXPONENTIAL, BACKOFF_LINEAR, BACKOFF_FIXED };

/* The delay before attempt number `attempt` + 1, after `attempt` failed (attempt >= 1):
 * exponential base * 2^(attempt-1), linear base * attempt, fixed base; capped at max_ms, then
 * spread by +-jitter_pct percent using r in [0, 1) (r = 0.5 gives the exact value). */
long backoff_ms(enum backoff_kind kind, long base_ms, long max_ms, int jitter_pct, long long attempt,
                double r);

#endif
