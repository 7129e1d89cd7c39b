/* master.h: the master process's state: the pools, the child table, the scoreboard, the HTTP
 * endpoint and the Redis monitor, driven by one poll() loop in master.c. */
#ifndef SF_MASTER_H
#define SF_MASTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/conf.h"
#include "common/sb.h"

/* A pool as the master keeps it: its settings, and the totals of its children that died
 * (folded in from their slots, so that counters never go back). */
struct pool_state {
    const struct pool_conf *conf;
    uint64_t retired[SB_NCOUNTERS];
    uint64_t restarts;
    int workers;                    /* children it should have */
};

/* One child slot of a pool: index is the SLOT of the consumer name HOST:POOL:SLOT. */
struct proc {
    pid_t pid;                      /* 0: not running (waiting for respawn_at_ms) */
    struct pool_state *pool;
    int index;
    int sb;                         /* scoreboard slot */
    long long started_ms;
    long long respawn_at_ms;
    unsigned quick_deaths;          /* consecutive deaths soon after start: the restart delay */
};

struct httpd;
struct redismon;

struct master {
    struct conf *conf;
    struct sb sb;
    bool *sb_used;
    struct pool_state *pools;
    size_t npools;
    struct proc *procs;
    size_t nprocs;
    int sigfd;
    struct httpd *httpd;
    struct redismon *mon;
    double start_time;
    bool draining;
    long long drain_deadline_ms;
    bool killed_stragglers;
};

/* Run the fleet of conf until drained. Returns the process exit status. */
int master_run(struct conf *conf);

/* procs.c: the child table. The only fork() of the program is in procs_spawn(). */
void procs_init(struct master *m);
void procs_release(struct master *m);
/* Start (or restart) the child of slot p. Returns 0 or -1 (fork failed: retried later). */
int procs_spawn(struct master *m, struct proc *p, long long now);
/* Reap every child that exited, fold its counters, schedule its replacement. */
void procs_reap(struct master *m, long long now);
/* Start the children whose restart delay is over. */
void procs_respawn_due(struct master *m, long long now);
/* Milliseconds until the next respawn is due, or -1. */
long procs_timeout_ms(struct master *m, long long now);
void procs_signal_all(struct master *m, int sig);
unsigned procs_live(const struct master *m);

long long master_now_ms(void);

#endif
