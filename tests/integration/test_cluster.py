"""Redis Cluster (redis = redis-cluster://seed,seed/): the client learns the slot map, routes by
the key's hash tag, follows MOVED and ASK during a live reshard, and finds the promoted replica
after a master is SIGKILLed. Against a real cluster of Debian's redis-server: 3 masters and 3
replicas on free loopback ports (cluster_helpers.py), stopped by pid."""
import json

from cluster_helpers import (ClusterProducer, cluster, fail_over_under_load,  # noqa: F401 (fixture)
                             reshard_under_load)
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


class Producer(ClusterProducer):
    """XADDs to the stream at about rate/s until stopped (or total), retrying through the
    cluster (ClusterProducer). .ids: what was added."""

    def __init__(self, cl, stream=STREAM, rate=500, total=None):
        super().__init__(cl, rate, total)
        self.stream = stream
        self.ids = []

    def add(self, client, n):
        self.ids.append(s(client.xadd(self.stream, {"type": "t", "n": f"p{n}"})))


def tag_in_first_slots(cl, n=1000):
    """A stream name whose hash tag is among the first n slots of its master (the slots
    `redis-cli --cluster reshard` takes first), with that master."""
    c = cl.alive()[0].client(socket_timeout=2)
    ranges = [(int(r[0]), int(r[1]), int(r[2][1])) for r in c.execute_command("CLUSTER", "SLOTS")]
    for i in range(10000):
        name = f"{{ev{i}}}"
        slot = c.execute_command("CLUSTER", "KEYSLOT", name)
        for lo, hi, port in ranges:
            if lo <= slot <= hi and slot < lo + n // 2:
                return name, cl.node_of_port(port)
    raise AssertionError("no such tag")


def test_a_live_reshard_of_the_streams_slot_loses_nothing_and_counts_the_redirects(cluster, sink, fleet_factory):
    cl = cluster()
    stream, src = tag_in_first_slots(cl)
    group = stream + "-group"
    dst = next(m for m in cl.masters() if m is not src)
    c = cl.client()
    first = fill(c, 5000, stream=stream)
    fl = fleet_factory({"fleet": {"redis": cl.url()},
                        "pool:h": http_pool(sink, stream, workers=2, batch=50, inflight=32, group=group)})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= 1000, timeout=BIG_TIMEOUT)
    pids = worker_pids(fl)
    prod = Producer(cl, stream=stream, rate=300)
    _, took = reshard_under_load(cl, src, dst, prod)
    assert cl.master_of(stream) is dst, "the reshard did not move the stream's slot"
    added = set(first) | set(prod.ids)
    c = cl.client()
    wait_until(lambda: set(by_webhook_id(sink.snapshot(), ok=True)) >= added and pending(c, stream, group) == 0,
               BIG_TIMEOUT, what="every message delivered and acked after the reshard")
    moved = metric(fl, "streamfleet_redis_cluster_redirects_total", "h", kind="moved")
    ask = metric(fl, "streamfleet_redis_cluster_redirects_total", "h", kind="ask")
    refreshes = metric(fl, "streamfleet_redis_cluster_refreshes_total", "h")
    print(f"\nreshard of 1000 slots took {took:.1f} s while consuming; {len(added)} messages, "
          f"MOVED {moved:.0f}, ASK {ask:.0f}, map refreshes {refreshes:.0f}")
    assert moved >= 1 and refreshes >= 1
    assert worker_pids(fl) == pids, "a worker was restarted"
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= len(added), timeout=TIMEOUT)


def test_sigkill_of_the_streams_master_under_load_fails_over_to_its_replica(cluster, sink, fleet_factory):
    cl = cluster()
    c = cl.client()
    master = cl.master_of(STREAM)
    replica = cl.replica_of(master)
    fill(c, 2000)
    fl = fleet_factory({"fleet": {"redis": cl.url()},
                        "pool:h": http_pool(sink, STREAM, workers=2, batch=50, inflight=32, group=GROUP,
                                            claim_idle="10s")})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= 2000, timeout=BIG_TIMEOUT)
    pids = worker_pids(fl)
    to_promotion, gap = fail_over_under_load(master, replica, Producer(cl, rate=300))
    print(f"\nSIGKILL -> promotion {to_promotion:.2f} s; promotion -> first ack on the promoted "
          f"replica {gap:.2f} s")
    cl.wait_ok()
    new = replica.client()
    present = {s(i) for i, _ in new.xrange(STREAM)}

    def settled():
        done = set(by_webhook_id(sink.snapshot(), ok=True))
        dead = {f.get(b"dlq.id", b"").decode() for _, f in new.xrange(STREAM + ":dlq")}
        return new.xpending(STREAM, GROUP)["pending"] == 0 and present <= done | dead
    fl.wait_for(settled, BIG_TIMEOUT, what="every entry present after the failover acked or dead-lettered")
    assert gap <= 3 * SLOWNESS, fl.log()[-5000:]
    assert worker_pids(fl) == pids, "a worker was restarted"


def test_seeds_whose_first_is_down_still_connect(cluster, sink, fleet_factory, tmp_path):
    cl = cluster()
    c = cl.client()
    ids = fill(c, 300)
    # the first seed is a port nobody listens on; the rest are real nodes
    dead = f"127.0.0.1:{free_port()}"
    url = f"redis-cluster://{dead},{cl.seeds(cl.nodes[:2])}/"
    fl = fleet_factory({"fleet": {"redis": url},
                        "pool:h": http_pool(sink, STREAM, workers=1, group=GROUP)})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v == 300, timeout=BIG_TIMEOUT)
    assert set(by_webhook_id(sink.snapshot(), ok=True)) == set(ids)
    status, body = fl.wait_healthy(timeout=TIMEOUT)
    assert body["redis"]["up"] is True, body
    cfg = write_ini(tmp_path / "cli.ini", {"fleet": {"redis": url, "listen": f"127.0.0.1:{free_port()}"},
                                           "pool:h": log_pool(STREAM, group=GROUP)})
    st = json.loads(run_binary(["status", "-c", str(cfg), "--json"]).stdout)
    assert st["redis"]["up"] is True and st["pools"][0]["stream_length"] == 300, st


def test_a_wrong_cluster_password_is_a_503_with_the_reason(cluster, fleet_factory, tmp_path):
    cl = cluster(password="cluster-secret")
    fl = fleet_factory({"fleet": {"redis": cl.url(auth=":wrong-one@")},
                        "pool:p": log_pool(STREAM, group=GROUP)}, wait_http=True)

    def unhealthy():
        status, body = fl.health()
        return body if status == 503 and "credentials" in (body or {}).get("reason", "") else None
    body = fl.wait_for(unhealthy, what="/health 503 saying the credentials were refused")
    assert body["redis"]["up"] is False, body
    assert "wrong-one" not in json.dumps(body) and "wrong-one" not in fl.log()
    assert fl.alive()
    # the tools say so and exit non-zero, without the password
    cfg = write_ini(tmp_path / "cli.ini", {"fleet": {"redis": cl.url(auth=":wrong-one@"),
                                                     "listen": f"127.0.0.1:{free_port()}"},
                                           "pool:p": log_pool(STREAM, group=GROUP)})
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode != 0 and "wrong-one" not in res.stdout + res.stderr
    # the right password works
    fl2 = fleet_factory({"fleet": {"redis": cl.url(auth=":cluster-secret@")},
                         "pool:p": log_pool(STREAM, group=GROUP)})
    cl.client().xadd(STREAM, {"n": "1"})
    wait_metric(fl2, "streamfleet_messages_acked_total", "p", lambda v: v == 1, timeout=BIG_TIMEOUT)


def test_a_cluster_pool_without_a_hash_tag_is_refused_with_file_and_line(tmp_path):
    cfg = write_ini(tmp_path / "bad.ini", {"fleet": {"redis": "redis-cluster://127.0.0.1:7000,127.0.0.1:7001/"},
                                           "pool:p": log_pool("events", dlq="other{x}")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode != 0
    assert f"{cfg}:" in res.stderr and "hash tag" in res.stderr, res.stderr
    cfg = write_ini(tmp_path / "bad2.ini", {"fleet": {"redis": "redis-cluster://127.0.0.1:7000/"},
                                            "pool:p": log_pool("{events}", dlq="{other}:dlq")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode != 0 and "slot" in res.stderr, res.stderr
    cfg = write_ini(tmp_path / "good.ini", {"fleet": {"redis": "redis-cluster://127.0.0.1:7000/"},
                                            "pool:p": log_pool("{events}")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode == 0, res.stderr


def test_a_tls_cluster_works_through_rediss_cluster(cluster, certs, sink, fleet_factory, tmp_path):
    cl = cluster(certs=certs)
    c = cl.client()
    ids = fill(c, 500)
    tls = {"redis_tls_ca": str(certs.ca)}
    fl = fleet_factory({"fleet": {"redis": cl.url(), **tls},
                        "pool:h": http_pool(sink, STREAM, workers=2, group=GROUP)})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v == 500, timeout=BIG_TIMEOUT)
    assert set(by_webhook_id(sink.snapshot(), ok=True)) == set(ids)
    wait_until(lambda: pending(c) == 0, TIMEOUT, what="pending 0")
    status, body = fl.wait_healthy(timeout=TIMEOUT)
    assert body["redis"]["up"] is True, body
    cfg = write_ini(tmp_path / "cli.ini", {"fleet": {"redis": cl.url(), "listen": f"127.0.0.1:{free_port()}", **tls},
                                           "pool:h": log_pool(STREAM, group=GROUP)})
    st = json.loads(run_binary(["status", "-c", str(cfg), "--json"]).stdout)
    assert st["redis"]["up"] is True and st["pools"][0]["stream_length"] == 500, st
