/* argv.h: a command line split into words the way a POSIX shell splits it, without running a
 * shell: quotes and backslashes are honoured, nothing is expanded. Used for the `command` of
 * handler = exec and handler = subprocess, checked when the config loads. */
#ifndef SF_ARGV_H
#define SF_ARGV_H

#include <stddef.h>

/* Split s into words: blanks (space, tab, newline) separate words; '...' keeps everything
 * inside literally; "..." too, but for \" \\ \$ \` and a backslash-newline (removed); outside
 * quotes a backslash makes the next character literal (a backslash-newline is removed). A
 * character a shell would give a meaning we do not (| & ; < > ( ) $ ` * ? [, and # or ~
 * starting a word) is refused unless quoted or escaped, so that a command never silently
 * means something else than it would in a shell (shell = yes runs /bin/sh for that).
 * Returns the number of words with *out set to a NULL-terminated array (free with
 * argv_free()), or -1 with a one-line reason in err and *out NULL. No words is not an error. */
int argv_split(const char *s, char ***out, char *err, size_t errlen);
void argv_free(char **argv);

#endif
