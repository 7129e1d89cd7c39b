/* master.h: the master process's state: the pools, the child table, the scoreboard, the HTTP
 * endpoint and the Redis monitor, driven by one poll() loop in master.c. */
#ifndef SF_MASTER_H
#define SF_MASTER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/conf.h"
#include "common/sb.h"
#include "supervisor/scale.h"
#include "supervisor/view.h"

/* A pool as the master keeps it: its settings, and the totals of its children that died
 * (folded in from their slots, so that counters never go back). A reload that changes a
 * pool's settings makes a new pool_state (a new generation) beside the old one, which drains
 * out; both carry the same name, and what is shown is added up by name. */
struct pool_state {
    char *name;
    const struct pool_conf *conf;
    const struct conf *owner;       /* the loaded config conf points into */
    uint64_t retired[SB_NCOUNTERS];
    uint64_t restarts[RESTART_NREASONS];
    int workers;                    /* children it should have */
    int workers_min, workers_max;   /* the range it scales within (equal: a fixed count) */
    struct scale_state scale;
    bool removed;                   /* draining out: removed from the config, or replaced */
    bool fresh;                     /* a new generation: children read new entries first */
    /* A canary: the one worker a reload starts of a changed pool's new generation, beside
     * canary_of (the generation it would replace, running on untouched) until it proves itself
     * or canary_deadline_ms passes (master.c, check_canaries()). NULL: not a canary. */
    struct pool_state *canary_of;
    long long canary_deadline_ms;
    long long started_ms;
    unsigned generation;            /* 1, then one more per new pool_state of the same name */
    long long stats_ms;             /* time and read count of the last stats line */
    uint64_t stats_read;
    long long restart_ms[16];       /* times of the last restarts, a ring: the restart rate */
    unsigned nrestarts;
};

/* Messages per second of a pool over the last 15 minutes, for the status page, kept by name
 * so that reloads do not cut it. */
#define HISTORY_POINTS 90
#define HISTORY_STEP_MS 10000
struct history {
    char *name;
    uint64_t last_read;
    long long last_ms;
    float rate[HISTORY_POINTS];     /* a ring; head is the next to write */
    unsigned head, n;
    long long short_since_ms;       /* below its worker count since then; 0: it is not */
    uint64_t watch_restarts;        /* generations started because a watched file changed */
    unsigned generations;           /* pool_states made under this name */
    uint64_t last_dur[SB_NBUCKETS]; /* handler duration buckets at last_ms */
    float p50[HISTORY_POINTS], p99[HISTORY_POINTS]; /* of the same steps as rate; -1: none */
};

/* One child: index is the SLOT of its consumer name HOST:POOL:SLOT. */
struct proc {
    pid_t pid;                      /* 0: not running (waiting for respawn_at_ms) */
    struct pool_state *pool;
    int index;
    int sb;                         /* scoreboard slot, -1 when none */
    long long started_ms;
    long long respawn_at_ms;
    unsigned quick_deaths;          /* consecutive deaths soon after start: the restart delay */
    unsigned fork_failures;         /* consecutive failed fork()s: the retry delay */
    bool draining;                  /* told to finish: not replaced when it exits */
    long long kill_at_ms;           /* draining: SIGKILL when still alive then (0: not set) */
    bool killed_for_heartbeat;
    bool started_before;            /* a respawn: it reads its pending list first, fresh or not */
    unsigned restarts;              /* times this slot's worker was replaced */
};

struct dlqweb;
struct httpd;
struct redismon;
struct trim;
struct crash;
struct watch;

struct master {
    struct conf *conf;              /* the config in force */
    struct conf **confs;            /* every loaded config still referenced */
    size_t nconfs;
    struct sb sb;
    bool *sb_used;
    struct pool_state **pools;
    size_t npools;
    struct proc *procs;
    size_t nprocs, procs_cap;
    int sigfd;
    struct httpd *httpd;
    struct dlqweb *dlqweb;          /* the dead letters on the web; NULL until first asked */
    struct redismon *mon;
    struct trim *trim;              /* trim = acked, run by mon; outlives every mon */
    struct watch *watch;            /* watch = yes pools' files (supervisor/watch.h) */
    struct crash *crash;            /* deaths charged to entries (supervisor/crash.h); NULL: none */
    double start_time;
    bool draining;
    bool fast_stop;
    long long drain_deadline_ms;
    uint64_t reloads_ok, reloads_failed, reloads_rolled_back;
    unsigned canaries;              /* canaries of the last reload still on trial */
    bool canary_failed;             /* one of them was rolled back (why: canary_why) */
    char canary_why[256];
    struct {                        /* the last reload, for /health and /status.json */
        const char *result;         /* "ok", "failed", "rolled_back", "canary" (on trial); NULL: none */
        double time;                /* Unix seconds it settled (or started, while on trial) */
        char reason[256];
    } last_reload;
    long long next_check_ms;        /* heartbeats and stats */
    struct history *hist;
    size_t nhist;
};

/* Bind the HTTP endpoint of conf (before privileges are dropped). Returns 0 or -1 (logged). */
int master_listen(struct master *m, struct conf *conf);
/* Run the fleet of conf until drained. Takes conf (frees it). Returns the exit status. */
int master_run(struct master *m, struct conf *conf);

/* procs.c: the child table. The only fork() of the program is in procs_spawn(). */
/* Add a child for slot index of pool and start it. */
struct proc *procs_add(struct master *m, struct pool_state *pool, int index, long long now);
/* Start (or restart) the child of p. Returns 0 or -1 (fork failed: retried later). */
int procs_spawn(struct master *m, struct proc *p, long long now);
/* Reap every child that exited, fold its counters, schedule or drop its replacement. */
void procs_reap(struct master *m, long long now);
/* Start the children whose restart delay is over. */
void procs_respawn_due(struct master *m, long long now);
/* Tell p to finish (SIGTERM) and not be replaced; SIGKILL after the drain timeout. */
void procs_drain(struct master *m, struct proc *p, long long now);
/* Kill the children silent for longer than their pool's heartbeat_timeout, and the draining
 * ones past their deadline. */
void procs_check(struct master *m, long long now);
/* Milliseconds until procs_respawn_due or procs_check has work, or -1. */
long procs_timeout_ms(struct master *m, long long now);
void procs_signal_all(struct master *m, int sig);
unsigned procs_live(const struct master *m);
void procs_release(struct master *m);

long long master_now_ms(void);

#endif
