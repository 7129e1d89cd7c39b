/* statuscmd.h: `streamfleet status`, the fleet at a glance in a terminal. */
#ifndef SF_STATUSCMD_H
#define SF_STATUSCMD_H

/* argv[0] is "status". Prints the fleet's /status.json as a table (or as JSON with --json;
 * again and again with --watch), or what Redis alone can tell when the master does not answer.
 * Returns the process exit status: 0 every pool ok, 1 a pool degraded or the fleet down or
 * Redis unreachable, 2 usage (or a configuration that cannot be read). */
int status_main(int argc, char **argv);

#endif
