/* msg.h: one stream entry as a handler sees it. A msg and everything it points to belong to
 * the batch it came in and are valid only during the handler's submit(): a handler that needs
 * anything later copies it. */
#ifndef SF_MSG_H
#define SF_MSG_H

#include <stddef.h>

struct str {
    const char *p;       /* NUL-terminated (Redis bulk strings are), may contain NULs */
    size_t len;
};

struct msg {
    const char *stream;
    struct str id;               /* the stream entry id, "1700000000000-0" */
    const struct str *f;         /* name, value, name, value, ... */
    size_t nf;                   /* number of pairs */
    long long attempt;           /* this delivery's number, 1 on the first (Redis's counter) */
};

/* The value of field name, or NULL when the message lacks it (the first one if repeated). */
const struct str *msg_get(const struct msg *m, const char *name);
/* Milliseconds since the epoch encoded in an entry id, or -1 when it is not one. */
long long msg_id_ms(const struct str *id);

#endif
