/* statuscmd.h: `streamfleet status`, the fleet at a glance in a terminal. */
#ifndef SF_STATUSCMD_H
#define SF_STATUSCMD_H

#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

/* argv[0] is "status". Prints the fleet's /status.json as a table (or as JSON with --json;
 * again and again with --watch), or what Redis alone can tell when the master does not answer.
 * Returns the process exit status: 0 every pool ok, 1 a pool degraded or the fleet down or
 * Redis unreachable, 2 usage (or a configuration that cannot be read). */
int status_main(int argc, char **argv);

/* Append to out what `streamfleet status` prints for the status document doc (len bytes of
 * JSON): the table (naming the fleet at url) when table is true, else doc itself. Returns the
 * exit status it means (0 every pool ok, 1 not), or -1 when doc is not JSON (out untouched). */
int status_show(const char *doc, size_t len, const char *url, bool table, struct buf *out);

/* Append to out the table of each pool's workers in doc (`status --workers`). Returns 0, or
 * -1 when doc is not JSON (out untouched). */
int status_show_workers(const char *doc, size_t len, struct buf *out);

#endif
