/* backoff.c: retry delays. */
#include "common/backoff.h"

long backoff_ms(enum backoff_kind kind, long base_ms, long max_ms, int jitter_pct, long long attempt,
                double r)
{
    if (attempt < 1)
        attempt = 1;
    double d = (double)base_ms;
    switch (kind) {
    case BACKOFF_EXPONENTIAL:
        for (long long i = 1; i < attempt && d < (double)max_ms; i++)
            d *= 2;
        break;
    case BACKOFF_LINEAR:
        d *= (double)attempt;
        break;
    case BACKOFF_FIXED:
        break;
    }
    if (d > (double)max_ms)
        d = (double)max_ms;
    d += d * (double)jitter_pct / 100.0 * (2.0 * r - 1.0);
    return d < 0 ? 0 : (long)d;
}
