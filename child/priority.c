/* priority.c: the order in which a pool of several streams reads them (priority.h). */
#include "child/priority.h"

#include <stdbool.h>
#include <string.h>

void priority_init(struct priority *p, const struct pool_conf *pool)
{
    memset(p, 0, sizeof *p);
    /* Shards (stream = name{A..B}) are equals: a round robin of weight 1 each, where strict
     * would drain the first shard before looking at the next. */
    p->kind = pool->sharded ? PRIORITY_WEIGHTED : pool->priority;
    p->n = pool->nstreams ? pool->nstreams : 1;
    for (size_t i = 0; i < p->n; i++) {
        p->weight[i] = !pool->sharded && pool->priority == PRIORITY_WEIGHTED && i < pool->nweights ? pool->weights[i] : 1;
        p->total += p->weight[i];
    }
}

void priority_order(const struct priority *p, size_t *order)
{
    for (size_t i = 0; i < p->n; i++)
        order[i] = i;
    if (p->kind != PRIORITY_WEIGHTED)
        return;
    /* The round robin's pick is the stream of the highest credit once every stream has had
     * its weight added: that is the highest credit + weight. Insertion sort: n <= 16. */
    for (size_t i = 1; i < p->n; i++) {
        size_t v = order[i];
        long long key = p->credit[v] + p->weight[v];
        size_t j = i;
        while (j > 0 && p->credit[order[j - 1]] + p->weight[order[j - 1]] < key) {
            order[j] = order[j - 1];
            j--;
        }
        order[j] = v;
    }
}

void priority_charge(struct priority *p, const size_t *order, size_t tried, size_t entries)
{
    if (p->kind != PRIORITY_WEIGHTED || tried == 0)
        return;
    size_t empty = entries ? tried - 1 : tried;
    /* Found empty: no credit saved up for later (it would starve the others when it fills). */
    for (size_t i = 0; i < empty; i++)
        if (p->credit[order[i]] > 0)
            p->credit[order[i]] = 0;
    if (entries == 0)
        return;
    /* Each entry a pick of the smooth round robin: every stream gains its weight, the one
     * picked loses what they gained. Streams found empty gain nothing: they were passed over. */
    size_t got = order[tried - 1];
    long long e = (long long)entries, gained = 0;
    for (size_t i = 0; i < p->n; i++) {
        bool passed = false;
        for (size_t k = 0; k < empty; k++)
            passed = passed || order[k] == i;
        if (!passed) {
            p->credit[i] += p->weight[i] * e;
            gained += p->weight[i] * e;
        }
    }
    p->credit[got] -= gained;
    /* Credits only order the streams: centre them on 0, so that what the resets above took
     * away does not make them all drift down without bound. */
    long long sum = 0;
    for (size_t i = 0; i < p->n; i++)
        sum += p->credit[i];
    for (size_t i = 0; i < p->n; i++)
        p->credit[i] -= sum / (long long)p->n;
}
