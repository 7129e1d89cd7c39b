/* priority.h: which of a pool's streams the next read takes from (priority = strict or
 * weighted), for a pool that reads several streams.
 *
 * The worker asks for an order (priority_order()), reads from the first stream of it that has
 * entries (one round trip: a script tries them in turn, so no stream is read ahead of its
 * turn and nothing is taken into our pending list out of order), and tells which stream
 * served how many entries (priority_charge()). Strict: always the streams' order. Weighted: a
 * smooth weighted round robin counted in entries (nginx's upstream choice, each entry a
 * pick), so that while every stream has work each one's share of the entries read follows
 * its weight, and every stream of weight >= 1 comes first in some order: none starves. A
 * stream found empty keeps no credit: coming back it does not take more than its share.
 * Pure: no I/O, no clock. */
#ifndef SF_PRIORITY_H
#define SF_PRIORITY_H

#include <stddef.h>

#include "common/conf.h"

struct priority {
    enum priority_kind kind;
    size_t n;                           /* streams, 1..CONF_STREAMS_MAX */
    long long weight[CONF_STREAMS_MAX];
    long long total;                    /* the weights added up */
    long long credit[CONF_STREAMS_MAX]; /* weighted: the current weights of the round robin */
};

/* Fill p for pool's streams, priority and weights. */
void priority_init(struct priority *p, const struct pool_conf *pool);
/* The order in which to try the streams for the next read: order[0..p->n) (indexes into the
 * pool's streams). Strict: 0, 1, ... Weighted: the stream whose turn it is first, then the
 * others by decreasing credit (ties: the pool's order). */
void priority_order(const struct priority *p, size_t *order);
/* The read tried order[0..tried) of priority_order(): order[tried - 1] served entries (> 0)
 * and the ones before it were empty; entries == 0: all tried were empty. */
void priority_charge(struct priority *p, const size_t *order, size_t tried, size_t entries);

#endif
