"""Issue 11, the worker's loop never waits on Redis: with redis-server frozen (SIGSTOP) for
longer than heartbeat_timeout while deliveries, retries, dead-letter moves and done-markers are
all in progress, the deliveries in flight complete, the workers keep their heartbeat (none is
killed), and after SIGCONT everything settles within a few seconds.

Real parts only: the real binary, a real redis-server, the real HTTP sink (slow on purpose)."""
import signal
import time

from conftest import SLOWNESS, TIMEOUT, add_messages, pending_count
from reliability_helpers import dlq_entries, http_pool, metric, one_child, restarts

N = 32                 # two waves of 2 workers x inflight 8
STOP_S = 12.0          # longer than heartbeat_timeout (4 s)
SETTLE_S = 5.0         # the number: everything settles this long after SIGCONT


def kind(i):
    if i % 9 == 4:
        return "dead"           # 422: a dead-letter move
    if i % 5 == 2:
        return "flaky"          # 500 once: a retry
    return "ok"


def payload(i):
    return f"msg-{i:03d}-{kind(i)}"


def test_redis_frozen_12s_longer_than_heartbeat_no_worker_killed_settles_after(
        redis_server, sink_factory, fleet):
    sink = sink_factory()
    sink.delay = 1.5                        # every request takes 1.5 s to answer
    sink.rule(422, body_contains=b"-dead")
    for i in range(N):
        if kind(i) == "flaky":
            sink.rule(500, body_contains=payload(i).encode(), times=1)
    r = redis_server.client()
    # claim_idle above the freeze: a freeze longer than claim_idle makes every pending entry
    # look orphaned afterwards (each worker would take over the other's), a matter of its own.
    pool = http_pool(sink, "nb", path="/in", workers=2, batch=8, inflight=8, block="500ms", timeout="5s",
                     heartbeat_timeout="4s", body_field="payload", id_field="mid",
                     dedupe_ttl="1h", backoff_base="1s", backoff_max="2s", backoff_jitter="0%",
                     max_attempts=5, claim_idle="60s")
    fl = fleet({"pool:nb": pool})
    kids = one_child(fl, 2)
    restarts0 = restarts(fl, "nb") or 0
    ids = add_messages(r, "nb", N, fields=lambda i: {"mid": f"m{i}", "payload": payload(i)})
    dead = {ids[i] for i in range(N) if kind(i) == "dead"}
    flaky = {i for i in range(N) if kind(i) == "flaky"}

    # Freeze once every kind of work is under way (a retry scheduled, a dead letter, markers)
    # with both workers at their inflight limit: the first wave answered, the second on the
    # wire. No read is outstanding then, so what a worker does next on Redis is what its
    # deliveries' outcomes ask for (markers, acks, dead-letter moves, retry claims), while
    # Redis is frozen.
    def under_way():
        reqs = sink.snapshot()
        return (any(q.status == 500 for q in reqs) and any(q.status == 422 for q in reqs)
                and len(reqs) >= 16)
    fl.wait_for(under_way, what="deliveries, retries and dead letters under way")
    redis_server.kill(signal.SIGSTOP)
    t_stop = time.monotonic()
    answered_at_stop = len(sink.snapshot())
    try:
        killed = []
        while time.monotonic() - t_stop < STOP_S:
            now_kids = fl.children()
            if now_kids != kids:
                killed.append(now_kids)
            time.sleep(0.25)
        answered_in_stop = len(sink.snapshot()) - answered_at_stop
    finally:
        # From here the sink answers at once: what is left to measure is streamfleet's own
        # settling (reconnect, acks, markers, dead-letter moves, retries after their backoff),
        # not the sink's 1.5 s per request times however many waves the freeze left unsent.
        sink.delay = 0.0
        redis_server.kill(signal.SIGCONT)
    t_cont = time.monotonic()
    assert not killed, f"workers replaced while redis was frozen: {kids} -> {killed}"
    # What was on the wire when Redis froze was answered during the stop.
    assert answered_in_stop >= 4, f"{answered_in_stop} deliveries completed while redis was frozen"

    def settled():
        if pending_count(r, "nb", "nb-group") != 0:
            return False
        if r.xlen("nb:dlq") < len(dead):
            return False
        ok = {q.body.decode() for q in sink.snapshot() if q.status == 200}
        return all(payload(i) in ok for i in range(N) if kind(i) != "dead")
    fl.wait_for(settled, timeout=TIMEOUT, what="everything settled after SIGCONT")
    took = time.monotonic() - t_cont
    print(f"\nsettled {took:.2f} s after SIGCONT; {answered_in_stop} deliveries answered during "
          f"the {STOP_S:.0f} s freeze")

    assert fl.children() == kids, "a worker was replaced"
    assert (restarts(fl, "nb") or 0) == restarts0
    dl = dlq_entries(r, "nb:dlq")
    got = [f["dlq.id"] for _, f in dl]
    assert sorted(got) == sorted(dead), f"dead letters: {got}, expected {sorted(dead)} once each"
    assert all(f["dlq.reason"] == "http_422" for _, f in dl), dl
    for i in range(N):
        key = f"nb:nb-group:done:m{i}"
        if kind(i) == "dead":
            assert not r.exists(key), f"a done-marker for dead-lettered m{i}"
        else:
            assert r.exists(key), f"no done-marker for m{i}"
    # The retried ones were handed over again (the 500 first, then a 200).
    for i in flaky:
        statuses = [q.status for q in sink.snapshot() if q.body.decode() == payload(i)]
        assert 500 in statuses and 200 in statuses, (i, statuses)
    assert metric(fl, "streamfleet_worker_restarts_total", "nb") == restarts0
    assert took <= SETTLE_S * SLOWNESS, f"settled {took:.2f} s after SIGCONT (> {SETTLE_S} s)"
