"""The chaos test of issue 4: the proof that nothing is lost.

20,000 messages, 1 in 100 of them poison (the sink answers 422), a sink that answers 503 to a
random 20% of the other requests, a worker SIGKILLed every 300 ms during the first half of the
run, and one Redis restart (SIGKILL, appendonly yes, appendfsync always) in the middle. At the
end every non-poison message reached the sink at least once with a 2xx, every poison message is
in the dead-letter stream exactly once, and the pending list is empty. The test prints how many
deliveries were duplicates (a duplicate comes from a message that was in flight, or delivered
but not yet acknowledged, when its worker was killed or Redis went away)."""
import signal
import time

from conftest import SLOWNESS, add_messages, pending_count
from reliability_helpers import ChildKiller, dlq_entries

N = 20_000
POISON_EVERY = 100
# The master restarts a worker that died within 5 s of its start only after a growing delay
# (crash-loop protection). With a kill every 300 ms of the oldest worker, 20 workers each live
# about 6 s: every kill is followed by an immediate restart, as for a real crash of a worker
# that had been running for a while.
WORKERS = 20
INFLIGHT = 8
KILL_EVERY = 0.3
MIN_KILLS = 10                      # measured: 18 in a first half of 5.4 s
DEADLINE = 110 * SLOWNESS           # the whole run, start to finish: well under two minutes


def test_chaos_20000_messages_with_kills_503s_poison_and_a_redis_restart_lose_nothing(
        redis_factory, sink, fleet):
    t_start = time.monotonic()
    srv = redis_factory(extra_args=["--appendfsync", "always"])
    r = srv.client()
    assert r.config_get("appendfsync")["appendfsync"] == "always"
    assert r.config_get("appendonly")["appendonly"] == "yes"

    sink.fail_fraction = 0.2
    sink.rule(422, body_contains=b'"kind":"poison"')
    fl = fleet({"fleet": {"redis": srv.url, "drain_timeout": "10s"},
                "pool:chaos": {
                    "stream": "chaos", "group": "chaos-group", "workers": WORKERS,
                    "batch": 20, "block": "500ms", "handler": "http",
                    "url": sink.url + "/hook/{kind}", "inflight": INFLIGHT,
                    "timeout": "2s", "connect_timeout": "1s", "claim_idle": "5s",
                    "backoff_base": "100ms", "backoff_max": "1s", "backoff_jitter": "20%",
                    "max_attempts": 25,
                    # The sink's random 503s (a fifth of all answers) are failures to survive
                    # here, not an overload to adapt to: with adaptive concurrency the fleet
                    # would settle near 7 requests in flight (x0.9 per window, +1 per window) and
                    # this test of losses would take 7 times as long (test_adaptive tests that).
                    "adaptive": "no"}})

    def fields(i):
        return {"kind": "poison" if i % POISON_EVERY == 7 else "ok", "n": str(i)}
    ids = add_messages(r, "chaos", N, fields=fields, chunk=1000)
    poison = {ids[i] for i in range(N) if i % POISON_EVERY == 7}
    good = set(ids) - poison

    # ---- the first half: a worker SIGKILLed every 300 ms
    delivered = set()           # good ids the sink answered with a 2xx so far
    seen = 0

    def good_delivered():
        nonlocal seen
        reqs = sink.snapshot()
        for q in reqs[seen:]:
            if 200 <= q.status < 300:
                delivered.add(q.headers.get("webhook-id"))
        seen = len(reqs)
        return delivered & good if len(delivered) > len(good) else delivered - poison

    killer = ChildKiller(fl.pid, KILL_EVERY)
    t_kills = time.monotonic()
    try:
        half_by = t_start + DEADLINE * 0.45
        # at least MIN_KILLS kill periods (and a margin), even on a machine that is fast
        kill_for = MIN_KILLS * KILL_EVERY * 1.6
        while len(good_delivered()) < len(good) // 2 or time.monotonic() - t_kills < kill_for:
            assert time.monotonic() < half_by, (
                f"only {len(good_delivered())} of {len(good)} delivered after "
                f"{time.monotonic() - t_start:.0f} s")
            time.sleep(0.2)
    finally:
        kills = killer.stop()
    t_half = time.monotonic()
    # A killer that died or never found a worker would make this a test of a quiet fleet.
    assert kills >= MIN_KILLS, f"only {kills} workers SIGKILLed in {t_half - t_kills:.1f} s"

    # ---- the middle: one Redis restart (every write was fsynced before it was acknowledged)
    srv.kill(signal.SIGKILL)
    srv.start()
    r = srv.client()
    t_back = time.monotonic()

    # ---- the end: everything delivered or dead-lettered, nothing pending
    def finished():
        return good <= good_delivered() and pending_count(r, "chaos", "chaos-group") == 0 \
            and len(dlq_entries(r, "chaos:dlq")) >= len(poison)
    fl.wait_for(finished, timeout=max(5.0, t_start + DEADLINE - time.monotonic()),
                what="every message delivered or dead-lettered, nothing pending")
    t_end = time.monotonic()

    reqs = sink.snapshot()
    ok = {}
    for q in reqs:
        if 200 <= q.status < 300:
            ok[q.headers["webhook-id"]] = ok.get(q.headers["webhook-id"], 0) + 1
    duplicates = sum(n - 1 for n in ok.values())
    dead = dlq_entries(r, "chaos:dlq")
    dead_ids = [f["dlq.id"] for _, f in dead]
    status_counts = {}
    for q in reqs:
        status_counts[q.status] = status_counts.get(q.status, 0) + 1
    m = fl.metrics()
    print(f"\nchaos: {N} messages ({len(poison)} poison) in {t_end - t_start:.1f} s "
          f"(first half {t_half - t_start:.1f} s, {kills} SIGKILLs in {t_half - t_kills:.1f} s, "
          f"redis restarted, "
          f"the rest {t_end - t_back:.1f} s); {len(reqs)} requests {status_counts}; "
          f"{duplicates} duplicate deliveries; "
          f"{m.sum('streamfleet_messages_reclaimed_total', pool='chaos'):.0f} reclaimed, "
          f"{m.sum('streamfleet_worker_restarts_total', pool='chaos'):.0f} restarts")

    # the 503s and the 422s happened (a sink that answered 200 to all would test nothing)
    assert status_counts.get(503, 0) > N // 20 and status_counts.get(422, 0) >= len(poison)
    missing = good - set(ok)
    assert not missing, f"{len(missing)} messages never delivered, e.g. {sorted(missing)[:5]}"
    assert not set(ok) & poison, "a poison message got a 2xx"
    assert sorted(dead_ids) == sorted(poison), (
        f"dead letters: {len(dead_ids)} for {len(poison)} poison messages; not poison: "
        f"{sorted(set(dead_ids) - poison)[:5]}; missing: {sorted(poison - set(dead_ids))[:5]}")
    assert len(dead_ids) == len(set(dead_ids)), "a poison message dead-lettered twice"
    assert {f["dlq.reason"] for _, f in dead} == {"http_422"}
    assert pending_count(r, "chaos", "chaos-group") == 0
    # the master saw the kills as deaths of workers and replaced them
    assert m.sum("streamfleet_worker_restarts_total", pool="chaos") >= MIN_KILLS
    # every kill can duplicate at most what its worker held (in flight or done but not acked)
    assert duplicates <= (kills + WORKERS) * INFLIGHT * 2, duplicates
    assert t_end - t_start < DEADLINE
