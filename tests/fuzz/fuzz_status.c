// links: supervisor/statuscmd.c supervisor/rediscli.c
/* fuzz_status.c: the status JSON parser and the table drawn from it, on arbitrary bytes.
 *
 * The input goes through status_show(), the code path of `streamfleet status` from the
 * fetched document to the printed text, with a memory buffer as the terminal: a document
 * that is not JSON is refused (-1), any JSON at all (wrong types, missing members, huge or
 * negative numbers) gives a table and an exit status of 0 or 1. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "supervisor/statuscmd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct buf out = BUF_INIT;
    int st = status_show((const char *)data, size, "http://127.0.0.1:9100", true, &out);
    if (st == -1 && out.len != 0)
        abort();                    /* refused: nothing printed */
    if (st != -1 && st != 0 && st != 1)
        abort();
    if (st != -1) {
        int again = status_show((const char *)data, size, "http://127.0.0.1:9100", false, &out);
        if (again != st)
            abort();
        if (status_show_workers((const char *)data, size, &out) != 0)
            abort();                /* it parsed once: it parses again */
    }
    buf_release(&out);
    return 0;
}
