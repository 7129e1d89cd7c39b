"""Messages that kill workers (issue 14, part 2): a worker that dies by a crash signal, or is
killed for its heartbeat, has its death charged to the entry alone in its handler; an entry
charged crash_limit times is dead-lettered with reason crash or watchdog, even while
max_attempts would allow more deliveries. The rest of a batch is never charged: when several
entries were in the handler, they are run alone next, and only the one that kills alone is
charged."""
import time

from conftest import SLOWNESS, add_messages, pending_count
from reliability_helpers import dead_letters
from supervisor_helpers import BIG_TIMEOUT, all_read_and_acked, build_plugin, pool, restarts

CRASH_LIMIT = 3


def no_abort_handler():
    """ASan leaves SIGABRT alone by default; say so, so that abort() kills as in a plain build."""
    import conftest
    log = f":log_path={conftest._sanitizer_prefix}" if conftest._sanitizer_prefix else ""
    return {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:handle_abort=0:handle_segv=0" + log}


# A synchronous plugin: abort() on a message with field "crash", hang on one with "hang".
SYNC = """
#include <stdlib.h>
#include <unistd.h>
static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
{ (void)h; (void)p; (void)n; (void)e; (void)el; *st = NULL; return 0; }
static int has(const struct sf_message *m, const char *name)
{
    for (size_t i = 0; i < m->nfields; i++)
        if (m->fields[2 * i].len == strlen(name) && memcmp(m->fields[2 * i].p, name, strlen(name)) == 0)
            return 1;
    return 0;
}
static int handle(void *s, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
{
    (void)s; (void)a; (void)c;
    if (has(m, "crash"))
        abort();
    if (has(m, "hang"))
        for (;;)
            sleep(1);
    return SF_ACK;
}
const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };
"""

# An asynchronous plugin: it takes a whole batch, and answers it on the worker's next loop turn,
# where a message with field "crash" makes it abort() with every other message of the batch
# still in its hands.
ASYNC = """
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>
struct st { const struct sf_host *host; int wake[2]; struct sf_call *q[256]; int crash[256]; size_t n; };
static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **out, char *e, size_t el)
{
    (void)p; (void)n; (void)e; (void)el;
    struct st *s = calloc(1, sizeof *s);
    s->host = h;
    if (pipe(s->wake) == -1)
        return -1;
    fcntl(s->wake[0], F_SETFL, O_NONBLOCK);
    fcntl(s->wake[1], F_SETFL, O_NONBLOCK);
    *out = s;
    return 0;
}
static int handle(void *state, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
{
    struct st *s = state;
    (void)a;
    int crash = 0;
    for (size_t i = 0; i < m->nfields; i++)
        if (m->fields[2 * i].len == 5 && memcmp(m->fields[2 * i].p, "crash", 5) == 0)
            crash = 1;
    if (s->n == 256)
        return SF_RETRY;
    s->crash[s->n] = crash;
    s->q[s->n++] = c;
    if (write(s->wake[1], "x", 1) == -1) {}
    return SF_PENDING;
}
static int fds(void *state, struct pollfd *pfd, int max, long *timeout_ms)
{
    struct st *s = state;
    (void)timeout_ms;
    if (max < 1)
        return 0;
    pfd[0] = (struct pollfd){ .fd = s->wake[0], .events = POLLIN };
    return 1;
}
static void run(void *state, const struct pollfd *pfd, int n)
{
    struct st *s = state;
    char buf[256];
    if (n < 1 || !(pfd[0].revents & POLLIN))
        return;
    while (read(s->wake[0], buf, sizeof buf) > 0)
        ;
    for (size_t i = 0; i < s->n; i++)
        if (s->crash[i])
            abort();
    for (size_t i = 0; i < s->n; i++) {
        struct sf_answer a = { .result = SF_ACK, .retry_after_ms = -1 };
        s->host->done(s->q[i], &a);
    }
    s->n = 0;
}
const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle,
                                              .fds = fds, .run = run };
"""


def charges(m, pool_name, cause):
    return m.value("streamfleet_crash_charges_total", pool=pool_name, cause=cause) or 0


def dead_lettered(m, pool_name, reason):
    return m.value("streamfleet_messages_dead_lettered_total", pool=pool_name, reason=reason) or 0


def dead_letter_the_poison(tmp_path, redis_server, fleet, plugin, source, stream, n, poison, field, reason,
                           **keys):
    """One worker of the plugin built from source reads n messages into `stream`; the one at
    index poison carries `field`. Waits until it alone is dead-lettered, with reason, and the
    rest acknowledged, nothing left pending. Returns the client, the fleet and the dead letter."""
    r = redis_server.client()
    so = build_plugin(tmp_path, plugin, source)
    ids = add_messages(r, stream, n, fields=lambda i: {"n": str(i), **({field: "1"} if i == poison else {})})
    fl = fleet({"pool:a": pool(stream, workers=1, block="200ms", handler="plugin", plugin=str(so),
                               max_attempts=10, **keys)}, env=no_abort_handler())
    fl.wait_for(lambda: r.xlen(f"{stream}:dlq") == 1 and all_read_and_acked(r, stream, n),
                timeout=BIG_TIMEOUT, what=f"the {field} message dead-lettered, the rest acked")
    (dead,) = dead_letters(r, stream).values()
    assert dead["dlq.id"] == ids[poison]
    assert dead["dlq.reason"] == reason, dead
    assert pending_count(r, stream, f"{stream}-group") == 0
    return r, fl, dead


def test_a_message_that_crashes_workers_is_dead_lettered_as_crash_and_the_rest_delivered(
        tmp_path, redis_server, fleet):
    """One message among 1,000 makes the plugin abort(): it is charged with each death (it
    was alone in the handler), and after crash_limit deaths the next worker dead-letters it
    with reason crash, although max_attempts (10) would allow more. The 999 others are all
    acknowledged, none dead-lettered; the pool stops restarting."""
    r, fl, dead = dead_letter_the_poison(tmp_path, redis_server, fleet, "crashy", SYNC, "cr", 1000, 437, "crash",
                                         "crash", batch=20)
    assert int(dead["dlq.attempts"]) < 10, "dead-lettered before max_attempts"
    m = fl.metrics()
    assert charges(m, "a", "crash") == CRASH_LIMIT
    fl.wait_for(lambda: dead_lettered(fl.metrics(), "a", "crash") == 1, what="dead_lettered{reason=crash} 1")
    assert restarts(m, "a", "signal") == CRASH_LIMIT
    # No crash loop: nothing more dies once it is gone.
    time.sleep(3)
    assert restarts(fl.metrics(), "a") == CRASH_LIMIT
    assert r.xlen("cr:dlq") == 1


def test_a_message_that_hangs_its_worker_is_dead_lettered_as_watchdog(tmp_path, redis_server, fleet):
    """A message on which the plugin never returns: the master kills the silent worker after
    heartbeat_timeout, charging the message; after crash_limit kills it goes to the dead
    letters with reason watchdog, and the others are delivered."""
    _, fl, _ = dead_letter_the_poison(tmp_path, redis_server, fleet, "hangs", SYNC, "hg", 50, 20, "hang",
                                      "watchdog", batch=5, heartbeat_timeout="2s")
    m = fl.metrics()
    assert charges(m, "a", "watchdog") == CRASH_LIMIT
    assert restarts(m, "a", "heartbeat") == CRASH_LIMIT
    fl.wait_for(lambda: dead_lettered(fl.metrics(), "a", "watchdog") == 1, what="dead_lettered{reason=watchdog} 1")


def test_a_batch_in_flight_when_one_message_kills_is_run_alone_and_only_that_one_charged(
        tmp_path, redis_server, fleet):
    """A plugin holding a whole batch at once aborts because of one of its messages: the
    death cannot be pinned on one entry, so none is charged; the next workers run those
    entries one at a time, the innocent ones pass, the guilty one kills alone, and only it is
    charged, crash_limit times, then dead-lettered. None of the others is dead-lettered."""
    _, fl, _ = dead_letter_the_poison(tmp_path, redis_server, fleet, "batchy", ASYNC, "bt", 100, 42, "crash",
                                      "crash", batch=5)
    m = fl.metrics()
    # Every charge went to the one entry: an innocent charged even once would show here.
    assert charges(m, "a", "crash") == CRASH_LIMIT
    died = restarts(m, "a", "signal")
    assert CRASH_LIMIT <= died <= CRASH_LIMIT + 2, f"{died} deaths"
    assert died > CRASH_LIMIT, "the first death, with a batch in flight, charged no one"
