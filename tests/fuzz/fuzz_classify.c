// links: child/classify.c
/* fuzz_classify.c: response classification with a Retry-After value from the input.
 *
 * Input: one byte of CURLcode (0..99), two of HTTP status (0..999), four of backoff_max in
 * ms, then the Retry-After header value (as a string; empty means absent). Beyond not
 * crashing: a wait taken from Retry-After is never negative other than -1 (absent) and never
 * above the cap, and a 2xx without a transport error is always delivered. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "child/classify.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 7)
        return 0;
    int code = data[0] % 100;
    long status = (long)((data[1] << 8 | data[2]) % 1000);
    long cap = (long)((uint32_t)data[3] << 24 | (uint32_t)data[4] << 16 | data[5] << 8 | data[6]) % 86400001L;
    char *ra = malloc(size - 7 + 1);
    memcpy(ra, data + 7, size - 7);
    ra[size - 7] = '\0';
    time_t now = 1767225600;        /* 2026-01-01: a fixed clock, so a crash replays */

    long ms = classify_retry_after(ra, now, cap);
    if (ms < -1 || ms > cap)
        abort();

    struct verdict v;
    classify(code, status, size > 7 ? ra : NULL, now, cap, &v);
    if (v.disp == DISP_RETRY && (v.retry_after_ms < -1 || v.retry_after_ms > cap))
        abort();
    if (code == 0 && status >= 200 && status < 300 && v.kind != CL_DELIVERED)
        abort();
    if (v.kind == CL_DELIVERED && v.error != NULL)
        abort();
    if (memchr(v.reason, '\0', sizeof v.reason) == NULL)
        abort();
    free(ra);
    return 0;
}
