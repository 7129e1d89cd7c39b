/* argv.c: shell-like splitting of a command line, with no shell. */
#include "common/argv.h"
#include "common/buf.h"
#include "common/log.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

/* Characters a shell acts on anywhere outside quotes, and those it acts on at a word's start. */
static bool special(char c, bool word_start)
{
    return (c && strchr("|&;<>()$`*?[", c)) || (word_start && (c == '#' || c == '~'));
}

void argv_free(char **argv)
{
    if (argv == NULL)
        return;
    for (char **a = argv; *a; a++)
        free(*a);
    free(argv);
}

int argv_split(const char *s, char ***out, char *err, size_t errlen)
{
    char **argv = xcalloc(1, sizeof *argv);
    size_t n = 0;
    struct buf w = BUF_INIT;
    const char *p = s;
    *out = NULL;
    for (;;) {
        while (blank(*p))
            p++;
        if (*p == '\0')
            break;
        /* One word: runs of plain, quoted and escaped characters up to a blank or the end. */
        const char *start = p;
        bool quoted = false;        /* an empty word ('') is still a word; a lone \<newline> is not */
        buf_reset(&w);
        while (*p && !blank(*p)) {
            if (*p == '\'') {
                const char *q = strchr(p + 1, '\'');
                if (q == NULL) {
                    snprintf(err, errlen, "unterminated ' at offset %zu", (size_t)(p - s));
                    goto fail;
                }
                buf_add(&w, p + 1, (size_t)(q - p - 1));
                p = q + 1;
                quoted = true;
            } else if (*p == '"') {
                const char *open = p++;
                while (*p && *p != '"') {
                    if (*p == '\\' && p[1] && strchr("\"\\$`\n", p[1])) {
                        if (p[1] != '\n')
                            buf_addc(&w, p[1]);
                        p += 2;
                    } else {
                        buf_addc(&w, *p++);
                    }
                }
                if (*p != '"') {
                    snprintf(err, errlen, "unterminated \" at offset %zu", (size_t)(open - s));
                    goto fail;
                }
                p++;
                quoted = true;
            } else if (*p == '\\') {
                if (p[1] == '\0') {
                    snprintf(err, errlen, "a backslash ends the command");
                    goto fail;
                }
                if (p[1] != '\n')
                    buf_addc(&w, p[1]);
                p += 2;
            } else if (special(*p, p == start)) {
                snprintf(err, errlen, "'%c' at offset %zu means something to a shell and nothing "
                         "here: quote it, or use shell = yes", *p, (size_t)(p - s));
                goto fail;
            } else {
                buf_addc(&w, *p++);
            }
        }
        if (w.len == 0 && !quoted)
            continue;
        argv = xrealloc(argv, (n + 2) * sizeof *argv);
        argv[n++] = xstrndup(w.p ? w.p : "", w.len);
        argv[n] = NULL;
    }
    buf_release(&w);
    *out = argv;
    return (int)n;
fail:
    buf_release(&w);
    argv_free(argv);
    return -1;
}
