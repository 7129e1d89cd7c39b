/* crash.h: messages that kill workers (crash_limit). When a worker dies by a crash signal
 * (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS, SIGTRAP), is killed for its heartbeat
 * (watchdog) or exits over memory_limit, the master charges the death to the entry that was
 * alone in its handler (sb_slot.alone), or, with none there alone but one held, to that one.
 * A death while several entries were in the handler charges none: those the worker held
 * become suspects, which the next workers run alone, so that the rest of a batch is never
 * punished for one entry. Workers read the charges (common/sb.h, sb_charge_get) and
 * dead-letter an entry charged crash_limit times with reason crash, watchdog or memory. A
 * worker killed by SIGKILL or SIGTERM from outside is not charged: that is an operator's or
 * the kernel's doing, not the message's (memory_limit is the message's, the OOM killer not). */
#ifndef SF_CRASH_H
#define SF_CRASH_H

#include <stdint.h>

#include "common/sb.h"

struct master;
struct proc;
struct crash;

/* Charge the death of p's worker (ended with wait status) to what its slot says it held, and
 * count it. Call before the slot is given to another worker. m->crash is made on first use. */
void crash_note(struct master *m, const struct proc *p, int status);
/* Deaths charged to entries of the pool named pool, by cause, since the master started. */
uint64_t crash_charges_total(const struct crash *cr, const char *pool, enum sb_cause cause);
void crash_free(struct crash *cr);

#endif
