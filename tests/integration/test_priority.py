"""Integration tests of priority streams (issue 12, part 6): one pool reading several streams
(`stream = a b c d`, one group created on each) with `priority = strict` or `priority =
weighted W...`; retries, dead letters (one `<stream>:dlq` each by default), lag and pending per
stream. Real redis-server, real sink, real binary.

WORK IN PROGRESS (branch h18-priority): the config is done and `-t` checks it
(test_config_*); the worker does not read several streams yet, so the behaviour tests fail
until it does (see NOTES-h18.md)."""
import time
from urllib.parse import unquote

from conftest import SLOWNESS, add_messages, group_info, pending_count, run_binary, wait_until, write_ini
from reliability_helpers import dlq_entries

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
    # Each stream's entries all reach the sink before any of a lower one.
    assert order == sorted(order), order
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
