/* scratch.c: the unit tests' files under /tmp (see scratch.h). Linked into every unit test. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/unit/scratch.h"

char *scratch_write(const char *text)
{
    char tmpl[] = "/tmp/sf_test_unit_XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd == -1)
        fail_msg("mkstemp: %s", strerror(errno));
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fail_msg("write %s: %s", tmpl, strerror(errno));
    close(fd);
    return strdup(tmpl);
}

void scratch_drop(char *path)
{
    unlink(path);
    free(path);
}
