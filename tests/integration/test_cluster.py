"""Redis Cluster (redis = redis-cluster://seed,seed/): the client learns the slot map, routes by
the key's hash tag, follows MOVED and ASK during a live reshard, and finds the promoted replica
after a master is SIGKILLed. Against a real cluster of Debian's redis-server: 3 masters and 3
replicas on free loopback ports (cluster_helpers.py), stopped by pid."""
import json
import signal
import threading
import time

import redis as redislib

from cluster_helpers import cluster  # noqa: F401 (fixture)
from conftest import SLOWNESS, TIMEOUT, free_port, run_binary, wait_until, write_ini
from reliability_helpers import (BIG_TIMEOUT, by_webhook_id, dlq_cli, http_pool, log_pool, metric, s,
                                 wait_metric)

STREAM = "{events}"
GROUP = "{events}-group"


def pending(cl, stream=STREAM, group=GROUP):
    return cl.xpending(stream, group)["pending"]


def fill(cl, n, stream=STREAM, chunk=500):
    """XADD n entries (pipelined: every key is in one slot); returns their ids."""
    ids = []
    for start in range(0, n, chunk):
        p = cl.pipeline()
        for i in range(start, min(n, start + chunk)):
            p.xadd(stream, {"type": "t", "n": str(i)})
        ids += [s(i) for i in p.execute()]
    return ids


def worker_pids(fl):
    return sorted(fl.children())


def test_a_pool_on_a_cluster_acks_every_message_once_and_the_tools_work(cluster, sink, fleet_factory, tmp_path):
    cl = cluster()
    c = cl.client()
    ids = fill(c, 10000)
    fl = fleet_factory({"fleet": {"redis": cl.url()},
                        "pool:h": http_pool(sink, STREAM, workers=2, batch=100, inflight=64,
                                            group=GROUP, max_attempts=1)})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= 10000, timeout=BIG_TIMEOUT)
    wait_until(lambda: pending(c) == 0, TIMEOUT, what="pending 0")
    got = by_webhook_id(sink.snapshot(), ok=True)
    assert set(got) == set(ids)
    assert all(len(v) == 1 for v in got.values()), "a message was delivered twice"
    assert metric(fl, "streamfleet_messages_acked_total", "h") == 10000
    status, body = fl.wait_healthy(timeout=TIMEOUT)
    assert body["redis"]["up"] is True, body
    # the status page's figures come from the stream's node
    def stream_figures():
        st, b = fl.health()
        return b if b and b.get("pools") else None
    fl.wait_for(stream_figures, TIMEOUT, what="/health with the pools' figures")

    # `streamfleet status` and `dlq list/replay` against the cluster (routed by key)
    cfg = write_ini(tmp_path / "cli.ini", {"fleet": {"redis": cl.url(), "listen": f"127.0.0.1:{free_port()}"},
                                           "pool:h": log_pool(STREAM, group=GROUP)})
    # (no master listens at the config's address: status reads the figures from Redis itself)
    res = run_binary(["status", "-c", str(cfg), "--json"])
    st = json.loads(res.stdout)
    assert st["redis"]["up"] is True, st
    assert st["pools"][0]["stream_length"] == 10000 and st["pools"][0]["pending"] == 0, st
    # a dead letter: the sink refuses one message, max_attempts = 1
    sink.rule(500, body_contains="poison")
    poison = s(c.xadd(STREAM, {"type": "t", "n": "poison"}))
    wait_until(lambda: c.xlen(STREAM + ":dlq") == 1, BIG_TIMEOUT, what="the poison message dead-lettered")
    res = dlq_cli(cfg, "list", "--pool", "h")
    assert res.returncode == 0, res.stdout + res.stderr
    assert poison in res.stdout, res.stdout
    sink.clear_rules()
    res = dlq_cli(cfg, "replay", "--pool", "h", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: c.xlen(STREAM + ":dlq") == 0, TIMEOUT, what="the dead letter replayed")
    wait_until(lambda: any("poison" in (r.body or b"").decode(errors="replace") and 200 <= r.status < 300
                           for r in sink.snapshot()), BIG_TIMEOUT, what="the replayed message delivered")
    wait_until(lambda: pending(c) == 0, TIMEOUT, what="pending 0 after the replay")
