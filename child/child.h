/* child.h: a worker process. After fork() the master calls child_main(), which never returns:
 * it consumes its pool's stream through the consumer group under the name HOST:POOL:SLOT,
 * hands each message to the pool's handler, acknowledges what succeeded and reports to its
 * scoreboard slot, until SIGTERM (drain: finish and ack what it holds, exit 0) or the
 * master's death. Exit codes: 0 drained, 3 recycled after max_messages, 4 over memory_limit,
 * 75 try again later, 78 the config cannot work. */
#ifndef SF_CHILD_H
#define SF_CHILD_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/conf.h"
#include "common/sb.h"

#define CHILD_EXIT_RECYCLE 3
#define CHILD_EXIT_MEMORY 4
#define CHILD_EXIT_TEMPFAIL 75
#define CHILD_EXIT_CONFIG 78

/* fresh: a new generation started beside the one it replaces, which still holds the pending
 * entries of the same consumer names: read new entries first and leave those to their
 * holder (what it leaves behind is found by the pending-list read of a later start or by
 * the orphan scan). */
_Noreturn void child_main(const struct conf *conf, const struct pool_conf *pool, int index,
                          struct sb_slot *slot, pid_t master, bool fresh);

#endif
