/* child.h: a worker process. After fork() the master calls child_main(), which never returns:
 * it consumes its pool's stream through the consumer group under the name HOST:POOL:SLOT,
 * hands each message to the pool's handler, acknowledges what succeeded and reports to its
 * scoreboard slot, until SIGTERM (drain: finish and ack what it holds, exit 0) or the
 * master's death. Exit codes: 0 drained, 75 try again later, 78 the config cannot work. */
#ifndef SF_CHILD_H
#define SF_CHILD_H

#include <sys/types.h>

#include "common/conf.h"
#include "common/sb.h"

#define CHILD_EXIT_TEMPFAIL 75
#define CHILD_EXIT_CONFIG 78

_Noreturn void child_main(const struct conf *conf, const struct pool_conf *pool, int index,
                          struct sb_slot *slot, pid_t master);

#endif
