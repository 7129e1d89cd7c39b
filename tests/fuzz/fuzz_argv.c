// links:
/* fuzz_argv.c: splitting a command line (handler = exec / subprocess).
 *
 * Input: the command as a string (cut at the first NUL). Beyond not crashing: a split that
 * succeeds gives a NULL-terminated array of as many words as it says, none longer than the
 * input, and a word containing no quote, backslash or blank splits back into itself. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/argv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = '\0';
    char err[256];
    char **argv;
    int n = argv_split(s, &argv, err, sizeof err);
    if (n == -1) {
        if (argv != NULL || err[0] == '\0')
            abort();
        free(s);
        return 0;
    }
    if (argv == NULL || argv[n] != NULL)
        abort();
    for (int i = 0; i < n; i++) {
        if (strlen(argv[i]) > strlen(s))
            abort();
        if (argv[i][0] && strpbrk(argv[i], "'\"\\ \t\n|&;<>()$`*?[#~") == NULL) {
            char **again;
            if (argv_split(argv[i], &again, err, sizeof err) != 1 || strcmp(again[0], argv[i]) != 0)
                abort();
            argv_free(again);
        }
    }
    argv_free(argv);
    free(s);
    return 0;
}
