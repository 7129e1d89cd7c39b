"""Integration tests of priority streams (issue 12, part 6): one pool reading several streams
(`stream = a b c d`, one group created on each) with `priority = strict` or `priority =
weighted W...`; retries, dead letters (one `<stream>:dlq` each by default), lag and pending per
stream. Real redis-server, real sink, real binary.
"""
import time
from urllib.parse import unquote

from conftest import (SLOWNESS, add_messages, free_port, group_info, pending_count, run_binary, wait_until,
                      write_ini)
from reliability_helpers import dlq_cli, dlq_entries

STREAMS = ["events:critical", "events:fast", "events:default", "events:slow"]


def pool(streams, **extra):
    return {"stream": " ".join(streams), "group": "prio", "workers": 1, "batch": 10,
            "block": "200ms", **extra}


def delivered(client, stream, ids):
    """How many of the preloaded ids the group has had delivered on stream (by its
    last-delivered-id: the entries were added before the group read any)."""
    g = group_info(client, stream, "prio")
    last = g["last-delivered-id"] if g else "0-0"
    last = last.decode() if isinstance(last, bytes) else last
    return 0 if last == "0-0" else ids.index(last) + 1


def test_strict_finishes_critical_before_any_slow_entry_is_taken(redis_server, sink, fleet):
    r = redis_server.client()
    ids = {s: add_messages(r, s, 30, fields=lambda i, s=s: {"n": str(i), "kind": s}) for s in STREAMS}
    sink.delay = 0.02                   # a slow sink: the streams stay full while we watch
    fl = fleet({"pool:p": pool(STREAMS, priority="strict", handler="http",
                               url=sink.url + "/{kind}", inflight=4)})
    # While critical is not all delivered, nothing of the others has been taken.
    deadline = time.monotonic() + 60 * SLOWNESS
    while delivered(r, STREAMS[0], ids[STREAMS[0]]) < 30 and time.monotonic() < deadline:
        assert all(delivered(r, s, ids[s]) == 0 for s in STREAMS[1:]), "a lower stream was read first"
        time.sleep(0.02)
    reqs = sink.wait_count(120, status=200, timeout=120 * SLOWNESS)
    # {kind} is percent-encoded in the URL ("events%3Acritical").
    order = [STREAMS.index(unquote(q.path.lstrip("/"))) for q in reqs]
    # Each stream's entries reach the sink before those of a lower one, but for the requests in
    # flight together at a boundary (inflight 4: a lower stream's first request may arrive before
    # up to 3 sent just before it).
    for rank in range(1, len(STREAMS)):
        first = order.index(rank)
        late = [o for o in order[first:] if o < rank]
        assert len(late) <= 3, (rank, order)
    assert order[:30] == [0] * 27 + order[27:30] and order[-27:] == [3] * 27, order
    wait_until(lambda: all(pending_count(r, s, "prio") == 0 for s in STREAMS), what="all acked")
    fl.stop()


def test_weighted_shares_follow_the_weights_over_10000_messages(redis_server, fleet):
    r = redis_server.client()
    ids = {s: add_messages(r, s, 10000) for s in STREAMS}
    fleet({"pool:p": pool(STREAMS, priority="weighted 8 4 2 1", handler="noop")})
    counts = {}

    def enough():
        counts.update({s: delivered(r, s, ids[s]) for s in STREAMS})
        return sum(counts.values()) >= 10000

    wait_until(enough, timeout=120 * SLOWNESS, interval=0.02, what="10,000 messages read")
    total = sum(counts.values())
    # Every stream still had work at this point (10,000 each; critical's share of 18,750 is
    # 10,000), so the shares are those of the weights, within 10%.
    assert total < 18750, counts
    for s, w in zip(STREAMS, [8, 4, 2, 1]):
        want = total * w / 15
        assert abs(counts[s] - want) <= want * 0.10, (s, counts, want)


def test_dead_letters_go_to_each_streams_own_dlq(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(422)
    a = add_messages(r, "orders:high", 3)
    b = add_messages(r, "orders:low", 2)
    fleet({"pool:p": pool(["orders:high", "orders:low"], handler="http", url=sink.url + "/x")})
    wait_until(lambda: len(dlq_entries(r, "orders:high:dlq")) == 3 and len(dlq_entries(r, "orders:low:dlq")) == 2,
               timeout=30 * SLOWNESS, what="dead letters in each stream's dlq")
    assert sorted(f["dlq.id"] for _, f in dlq_entries(r, "orders:high:dlq")) == sorted(a)
    assert sorted(f["dlq.id"] for _, f in dlq_entries(r, "orders:low:dlq")) == sorted(b)
    assert {f["dlq.stream"] for _, f in dlq_entries(r, "orders:low:dlq")} == {"orders:low"}
    wait_until(lambda: pending_count(r, "orders:high", "prio") == 0 and pending_count(r, "orders:low", "prio") == 0,
               what="nothing pending")


def test_pending_and_lag_are_per_stream(redis_server, sink, fleet):
    r = redis_server.client()
    sink.delay = 5                      # hold what is taken: it stays pending a while
    add_messages(r, "jobs:a", 5)
    add_messages(r, "jobs:b", 7)
    fl = fleet({"pool:p": pool(["jobs:a", "jobs:b"], handler="http", url=sink.url + "/x", inflight=2,
                               batch=2)})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_group_pending", pool="p", stream="jobs:a") == 2,
                what="jobs:a's pending in /metrics")
    m = fl.metrics()
    assert m.value("streamfleet_group_pending", pool="p", stream="jobs:b") == 0
    assert m.value("streamfleet_group_lag", pool="p", stream="jobs:a") == 3
    assert m.value("streamfleet_group_lag", pool="p", stream="jobs:b") == 7


def paths(reqs):
    return [unquote(q.path) for q in reqs]


def test_a_retry_of_an_entry_of_the_second_stream_is_claimed_from_it(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(500, path="/orders%3Alow", times=1)     # its first attempt fails, then it succeeds
    add_messages(r, "orders:high", 2, fields=lambda i: {"kind": "orders:high"})
    low = add_messages(r, "orders:low", 1, fields=lambda i: {"kind": "orders:low"})
    fleet({"pool:p": pool(["orders:high", "orders:low"], handler="http", url=sink.url + "/{kind}",
                          backoff_base="300ms", backoff_max="300ms", backoff_jitter="0%")})
    reqs = sink.wait_count(4, timeout=30 * SLOWNESS)
    assert paths(reqs).count("/orders:low") == 2, paths(reqs)
    assert [q.status for q in reqs if unquote(q.path) == "/orders:low"] == [500, 200]
    wait_until(lambda: pending_count(r, "orders:low", "prio") == 0 and pending_count(r, "orders:high", "prio") == 0,
               what="nothing pending")
    # The retry was claimed from its own stream (XCLAIM counted a second delivery there).
    assert not dlq_entries(r, "orders:low:dlq")
    assert r.xlen("orders:low") == 1 and low


def test_an_orphan_of_the_second_stream_is_taken_over(redis_server, sink, fleet):
    r = redis_server.client()
    for s in ("jobs:a", "jobs:b"):
        r.xgroup_create(s, "prio", id="0", mkstream=True)
    add_messages(r, "jobs:b", 3, fields=lambda i: {"kind": "jobs:b", "n": str(i)})
    # A consumer that died holding them (never acknowledges).
    got = r.xreadgroup("prio", "ghost", {"jobs:b": ">"}, count=3)
    assert len(got[0][1]) == 3
    fleet({"pool:p": pool(["jobs:a", "jobs:b"], handler="http", url=sink.url + "/{kind}", claim_idle="3s",
                          timeout="1s", connect_timeout="1s")})
    reqs = sink.wait_count(3, status=200, timeout=30 * SLOWNESS)
    assert sorted(paths(reqs)) == ["/jobs:b"] * 3
    wait_until(lambda: pending_count(r, "jobs:b", "prio") == 0, timeout=20 * SLOWNESS, what="orphans acked")


def test_the_same_entry_id_in_two_streams_is_two_messages(redis_server, sink, fleet):
    r = redis_server.client()
    for s in ("dup:a", "dup:b"):
        for i in range(1, 4):
            r.xadd(s, {"kind": s, "n": str(i)}, id=f"1000-{i}")
    fleet({"pool:p": pool(["dup:a", "dup:b"], handler="http", url=sink.url + "/{kind}")})
    reqs = sink.wait_count(6, status=200, timeout=30 * SLOWNESS)
    assert sorted(paths(reqs)) == ["/dup:a"] * 3 + ["/dup:b"] * 3
    wait_until(lambda: pending_count(r, "dup:a", "prio") == 0 and pending_count(r, "dup:b", "prio") == 0,
               what="both streams acked")


def test_the_blocking_read_wakes_for_an_entry_added_to_the_last_stream(redis_server, sink, fleet):
    r = redis_server.client()
    streams = ["w:1", "w:2", "w:3"]
    fl = fleet({"pool:p": pool(streams, handler="http", url=sink.url + "/{kind}", block="8s")})
    wait_until(lambda: all(group_info(r, s, "prio") for s in streams), what="the groups")
    # Let the worker find them all empty and block on them (a read of 8 s).
    wait_until(lambda: any(c["name"].decode().endswith(":p:0") for c in r.xinfo_consumers("w:1", "prio")),
               what="the worker's first read")
    time.sleep(1)
    t0 = time.monotonic()
    r.xadd("w:3", {"kind": "w:3"})
    sink.wait_count(1, status=200, timeout=30 * SLOWNESS)
    # Well within what was left of the 8 s BLOCK (about 7 s; delivered in about 0.05 s): the
    # read was blocked on the last stream too, not only on the first.
    assert time.monotonic() - t0 < 3.5, time.monotonic() - t0
    wait_until(lambda: pending_count(r, "w:3", "prio") == 0, what="acked")
    fl.stop()


def test_dlq_replay_sends_each_letter_back_to_its_own_stream(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    sink.rule(422, times=3)
    a = add_messages(r, "o:high", 2, fields=lambda i: {"kind": "high", "n": str(i)})
    b = add_messages(r, "o:low", 1, fields=lambda i: {"kind": "low", "n": str(i)})
    fl = fleet({"pool:p": pool(["o:high", "o:low"], handler="http", url=sink.url + "/x")})
    wait_until(lambda: len(dlq_entries(r, "o:high:dlq")) == 2 and len(dlq_entries(r, "o:low:dlq")) == 1,
               timeout=30 * SLOWNESS, what="the dead letters")
    fl.stop()
    cfg = write_ini(tmp_path / "cli.ini", {
        "fleet": {"redis": redis_server.url, "listen": f"127.0.0.1:{free_port()}"},
        "pool:p": pool(["o:high", "o:low"], handler="log")})
    listed = dlq_cli(cfg, "list", "--pool", "p", timeout=20)
    assert listed.returncode == 0, listed.stderr
    assert sorted(f["dlq.id"] for _, f in dlq_entries(r, "o:low:dlq")) == b
    res = dlq_cli(cfg, "replay", "--pool", "p", "--all", timeout=20)
    assert res.returncode == 0, res.stderr
    assert not dlq_entries(r, "o:high:dlq") and not dlq_entries(r, "o:low:dlq")
    high = [f for i, f in r.xrange("o:high")]
    low = [f for i, f in r.xrange("o:low")]
    assert sorted(f[b"n"] for f in high) == [b"0", b"0", b"1", b"1"], high      # each back in its own
    assert [f[b"kind"] for f in low] == [b"low", b"low"], low
    assert a


def test_dlq_replay_of_one_letter_by_id_finds_it_in_its_streams_dlq(redis_server, tmp_path):
    r = redis_server.client()
    for s in ("q:1", "q:2"):
        r.xgroup_create(s, "prio", id="0", mkstream=True)
    letter = r.xadd("q:2:dlq", {"n": "7", "dlq.stream": "q:2", "dlq.id": "5-1", "dlq.reason": "http_422",
                                "dlq.attempts": "1", "dlq.error": "refused", "dlq.time": "1"}).decode()
    cfg = write_ini(tmp_path / "cli.ini", {
        "fleet": {"redis": redis_server.url, "listen": f"127.0.0.1:{free_port()}"},
        "pool:p": pool(["q:1", "q:2"], handler="log")})
    res = dlq_cli(cfg, "replay", "--pool", "p", letter, timeout=20)
    assert res.returncode == 0, res.stderr
    assert [f for _, f in r.xrange("q:2")] == [{b"n": b"7"}]
    assert r.xlen("q:1") == 0 and r.xlen("q:2:dlq") == 0


def test_config_errors_name_file_and_line(tmp_path):
    cfg = write_ini(tmp_path / "bad.ini", {
        "fleet": {"redis": "redis://127.0.0.1:6379"},
        "pool:one": {"stream": "solo", "group": "g", "handler": "log", "priority": "strict"},
        "pool:few": {"stream": "a b c", "group": "g", "handler": "log", "priority": "weighted 2 1"},
        "pool:dup": {"stream": "x y x", "group": "g", "handler": "log"},
    })
    text = cfg.read_text().splitlines()
    strict = next(i + 1 for i, t in enumerate(text) if t == "priority = strict")
    weighted = next(i + 1 for i, t in enumerate(text) if t.startswith("priority = weighted"))
    dup = next(i + 1 for i, t in enumerate(text) if t == "stream = x y x")
    res = run_binary(["-t", "-c", str(cfg)], timeout=20)
    assert res.returncode == 1, res.stderr
    assert f"{cfg}:{strict}: priority needs several streams" in res.stderr, res.stderr
    assert f"{cfg}:{weighted}: priority = weighted has 2 weights for 3 streams" in res.stderr, res.stderr
    assert f"{cfg}:{dup}: stream: names stream 'x' twice" in res.stderr, res.stderr

    good = write_ini(tmp_path / "good.ini", {
        "fleet": {"redis": "redis://127.0.0.1:6379"},
        "pool:p": {"stream": " ".join(STREAMS), "group": "g", "handler": "log", "priority": "weighted 8 4 2 1"},
    })
    res = run_binary(["-t", "-c", str(good)], timeout=20)
    assert res.returncode == 0, res.stderr
