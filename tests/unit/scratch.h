/* scratch.h: files that a unit test writes under /tmp and loads (a config, a certificate, a
 * secret), shared by the unit tests so that each does not carry its own copy. */
#ifndef SF_TESTS_UNIT_SCRATCH_H
#define SF_TESTS_UNIT_SCRATCH_H

/* Write text to a new file under /tmp; a failure fails the running cmocka test.
 * Caller owns the path; remove the file and free the path with scratch_drop(). */
char *scratch_write(const char *text);

/* Remove the file scratch_write() made and free its path. */
void scratch_drop(char *path);

#endif
