/* dlq.h: `streamfleet dlq list|replay|purge`, the dead-letter tooling, and the same for the
 * web (dlq_web(), run by supervisor/dlqweb.c in a short-lived child of the master). */
#ifndef SF_DLQ_H
#define SF_DLQ_H

#include <stdbool.h>

#include "common/buf.h"
#include "common/conf.h"

/* argv[0] names the command (getopt says it in its messages), argv[1] is the verb, or --help
 * or --version. Returns the process exit status: 0 done, 1 failed, 2 usage. */
int dlq_main(int argc, char **argv);

enum dlq_op { DLQ_OP_LIST, DLQ_OP_LETTER, DLQ_OP_REPLAY, DLQ_OP_PURGE };

/* One request of the web page. stream, reason, before (an entry id: list only those older)
 * and id may be NULL; ids[0..nids) are the dead letters to replay or purge, or all is set. */
struct dlq_request {
    enum dlq_op op;
    const char *pool, *stream, *reason, *before, *id;
    long count;
    bool all;
    bool writable;                  /* list: say that the page may offer replay and purge */
    char **ids;
    int nids;
};

/* Do rq against c's Redis on a blocking connection of its own (the caller is a child process
 * that may wait: never the master) and write the answer to out as one JSON object; for
 * replay and purge it holds "count", what was done. Replay and purge are the very functions
 * of `streamfleet dlq`. Returns the HTTP status. */
int dlq_web(const struct conf *c, const struct dlq_request *rq, struct buf *out);

#endif
