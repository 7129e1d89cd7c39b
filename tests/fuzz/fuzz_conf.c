// links:
/* fuzz_conf.c: the config loader on a whole INI file made of the input's bytes.
 *
 * conf_load() reads a path, so the input is put in a memfd and loaded as /proc/self/fd/N: no
 * file on disk per run, and the loader runs exactly as for an operator's file (our line
 * reader, inih, the key table, validation). Whatever the bytes, it must return a conf or
 * problems, each "PATH:LINE: message" or "PATH: message", and never crash or leak. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int fd = -1;
static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fd == -1) {
        unsetenv("STREAMFLEET_REDIS");
        fd = memfd_create("fuzz.ini", 0);
        if (fd == -1)
            abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) == -1 || pwrite(fd, data, size, 0) != (ssize_t)size)
        abort();

    struct conf_errors e = { NULL, 0 };
    struct conf *c = conf_load(path, &e);
    if ((c == NULL) == (e.n == 0))
        abort();                    /* a failure explains itself; a success has no problem */
    for (size_t i = 0; i < e.n; i++)
        if (strncmp(e.msg[i], path, strlen(path)) != 0 || e.msg[i][strlen(path)] != ':')
            abort();                /* every problem names the file */
    if (c)
        conf_free(c);
    conf_errors_release(&e);
    return 0;
}
