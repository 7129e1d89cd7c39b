"""Sharded streams on Redis Cluster: `stream = ev:{0..11}` is 12 streams, each its own hash tag,
so in slots spread over the masters. A worker reads them with one XREADGROUP per shard, sent
at once (no script nor read may span slots); acks, dead letters and claims go to each shard's
node. Against a real cluster of Debian's redis-server: 3 masters and 3 replicas on free loopback
ports (cluster_helpers.py), stopped by pid."""
import json
import time

from redis.crc import key_slot

from cluster_helpers import (ClusterProducer, cluster, fail_over_under_load,  # noqa: F401 (fixture)
                             reshard_under_load)
import chromium
from conftest import SLOWNESS, TIMEOUT, free_port, run_binary, wait_until, write_ini
from reliability_helpers import BIG_TIMEOUT, dlq_cli, http_pool, log_pool, metric, s, wait_metric

SHARDS = 12
GROUP = "g"


def shard(k):
    return f"ev:{{{k}}}"


def sharded_pool(sink, **extra):
    return http_pool(sink, f"ev:{{0..{SHARDS - 1}}}", path="/events/{type}", group=GROUP, **extra)


def fill(cl, n, start=0, chunk=2000):
    """XADD n entries spread over the shards (entry i to shard i mod SHARDS, field n = i);
    returns {n: (shard, id)}. redis-py's cluster pipeline splits it by node."""
    added = {}
    for lo in range(start, start + n, chunk):
        p = cl.pipeline()
        idx = list(range(lo, min(start + n, lo + chunk)))
        for i in idx:
            p.xadd(shard(i % SHARDS), {"type": "t", "n": str(i)})
        for i, entry_id in zip(idx, p.execute()):
            added[str(i)] = (shard(i % SHARDS), s(entry_id))
    return added


def delivered(sink):
    """{n: number of 2xx deliveries} of what the sink received."""
    out = {}
    for r in sink.snapshot():
        if not 200 <= r.status < 300:
            continue
        n = json.loads(r.body)["n"]
        out[n] = out.get(n, 0) + 1
    return out


def fl_cli_path(fl):
    """A path for a config of the command line tools, beside the fleet's own."""
    return fl.config_path.parent / "cli.ini"


def pending_total(cl):
    return sum(cl.xpending(shard(k), GROUP)["pending"] for k in range(SHARDS))


def worker_pids(fl):
    return sorted(fl.children())


class ShardProducer(ClusterProducer):
    """XADDs entry n to shard n mod SHARDS at about rate/s until stopped, retrying through the
    cluster (ClusterProducer). .added: {n: shard} of what was added."""

    def __init__(self, cl, rate=400, start=10**6):
        super().__init__(cl, rate)
        self.start_n = start
        self.added = {}

    def add(self, client, n):
        k = self.start_n + n
        client.xadd(shard(k % SHARDS), {"type": "t", "n": str(k)})
        self.added[str(k)] = shard(k % SHARDS)


def test_60000_messages_over_12_shards_are_each_acked_once(cluster, sink, fleet_factory):
    cl = cluster()
    c = cl.client()
    # the shards are in slots of every master: the pool reads across nodes
    masters = {cl.master_of(shard(k)).port for k in range(SHARDS)}
    assert len(masters) == 3, masters
    t0 = time.monotonic()
    added = fill(c, 60000)
    fl = fleet_factory({"fleet": {"redis": cl.url()},
                        "pool:h": sharded_pool(sink, workers=2, batch=240, inflight=64, max_attempts=1)})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= 60000, timeout=BIG_TIMEOUT * 2)
    took = time.monotonic() - t0
    wait_until(lambda: pending_total(c) == 0, TIMEOUT, what="nothing pending on any shard")
    got = delivered(sink)
    assert set(got) == set(added)
    assert all(v == 1 for v in got.values()), "a message was delivered twice"
    assert metric(fl, "streamfleet_messages_acked_total", "h") == 60000
    # every shard's group delivered all of its entries
    for k in range(SHARDS):
        info = {s(g["name"]): g for g in c.xinfo_groups(shard(k))}
        assert info[GROUP]["pending"] == 0
        assert s(info[GROUP]["last-delivered-id"]) == s(c.xinfo_stream(shard(k))["last-generated-id"])
    print(f"\n60000 messages over {SHARDS} shards on 3 masters: {took:.1f} s "
          f"({60000 / took:.0f} msgs/s incl. filling, sanitizer build)")

    # the master's monitor: each shard's figures in /status.json and /metrics, summed per pool
    def figures():
        st, headers, body = fl.http_get("/status.json")
        p = json.loads(body)["pools"][0]
        done = p.get("streams") and p["stream_length"] == 60000
        return p if done and all(x["pending"] == 0 for x in p["streams"]) else None
    p = fl.wait_for(figures, TIMEOUT, what="/status.json with every shard's figures")
    assert [x["stream"] for x in p["streams"]] == [shard(k) for k in range(SHARDS)]
    assert all(x["stream_length"] == 5000 for x in p["streams"]), p["streams"]
    assert p["pending"] == 0 and p["dlq_length"] == 0
    assert fl.metrics().sum("streamfleet_stream_length", pool="h", stream=shard(7)) == 5000

    # dead letters on three shards of three masters; `dlq list` and `replay` across them
    sink.rule(500, body_contains="poison")
    poisoned = [k for k in range(SHARDS) if cl.master_of(shard(k)) in cl.masters()]
    by_master = {}
    for k in poisoned:
        by_master.setdefault(cl.master_of(shard(k)).port, k)
    poisoned = sorted(by_master.values())
    assert len(poisoned) == 3
    poison_ids = {s(c.xadd(shard(k), {"type": "t", "n": f"poison{k}"})) for k in poisoned}
    wait_until(lambda: all(c.xlen(shard(k) + ":dlq") == 1 for k in poisoned), BIG_TIMEOUT,
               what="the poison messages dead-lettered, each in its shard's dlq")
    fl.wait_for(lambda: json.loads(fl.http_get("/status.json")[2])["pools"][0]["dlq_length"] == 3, TIMEOUT,
                what="3 dead letters summed in /status.json")
    cfg = write_ini(fl_cli_path(fl),
                    {"fleet": {"redis": cl.url(), "listen": f"127.0.0.1:{free_port()}"},
                     "pool:h": log_pool(f"ev:{{0..{SHARDS - 1}}}", group=GROUP)})
    # (no master at the config's listen address: status reads each shard from the cluster)
    st = json.loads(run_binary(["status", "-c", str(cfg), "--json"]).stdout)
    sp = st["pools"][0]
    assert st["redis"]["up"] is True, st
    assert sp["stream_length"] == 60003 and sp["pending"] == 0 and sp["dlq_length"] == 3, sp
    assert len(sp["streams"]) == SHARDS and sum(x["dlq_length"] for x in sp["streams"]) == 3, sp
    res = dlq_cli(cfg, "list", "--pool", "h")
    assert res.returncode == 0, res.stdout + res.stderr
    assert all(i in res.stdout for i in poison_ids), res.stdout
    sink.clear_rules()
    res = dlq_cli(cfg, "replay", "--pool", "h", "--all")
    assert res.returncode == 0, res.stdout + res.stderr
    wait_until(lambda: all(c.xlen(shard(k) + ":dlq") == 0 for k in poisoned), TIMEOUT, what="dead letters replayed")
    wait_until(lambda: all(delivered(sink).get(f"poison{k}") == 1 for k in poisoned), BIG_TIMEOUT,
               what="the replayed messages delivered")
    wait_until(lambda: pending_total(c) == 0, TIMEOUT, what="nothing pending after the replay")

    # the status page lists the shards under the pool
    if chromium.available():
        with chromium.Browser(fl_cli_path(fl).parent / "chromium-profile", width=1280, height=640) as b:
            b.goto(f"http://127.0.0.1:{fl.port}/")
            b.wait_for("document.querySelector('#pools tbody tr[data-shards=h] td') !== null")
            cell = b.eval("(() => { const td = document.querySelector('#pools tbody tr[data-shards=h] td');"
                          " return [td.dataset.v, td.textContent]; })()")
            assert cell[0] == str(SHARDS), cell
            assert all(shard(k) in cell[1] for k in range(SHARDS)), cell


def shards_in_first_slots(cl, n=1000):
    """The master with the most shards among the first n/2 slots of its range (the slots
    `redis-cli --cluster reshard` takes first), and those shards."""
    c = cl.alive()[0].client(socket_timeout=2)
    best = (None, [])
    for r in c.execute_command("CLUSTER", "SLOTS"):
        lo = int(r[0])
        ks = [k for k in range(SHARDS) if lo <= key_slot(str(k).encode()) < lo + n // 2]
        if len(ks) > len(best[1]):
            best = (cl.node_of_port(int(r[2][1])), ks)
    assert best[0] is not None, "no shard among the first slots of a master"
    return best


def test_a_live_reshard_under_a_sharded_pool_loses_nothing_and_restarts_no_worker(cluster, sink, fleet_factory):
    cl = cluster()
    src, moving = shards_in_first_slots(cl)
    dst = next(m for m in cl.masters() if m is not src)
    c = cl.client()
    first = fill(c, 6000)
    fl = fleet_factory({"fleet": {"redis": cl.url()},
                        "pool:h": sharded_pool(sink, workers=2, batch=120, inflight=32)})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= 1000, timeout=BIG_TIMEOUT)
    pids = worker_pids(fl)
    prod = ShardProducer(cl, rate=300)
    t0, took = reshard_under_load(cl, src, dst, prod)
    assert all(cl.master_of(shard(k)) is dst for k in moving), "the reshard did not move the shards' slots"
    added = set(first) | set(prod.added)
    c = cl.client()
    wait_until(lambda: set(delivered(sink)) >= added and pending_total(c) == 0,
               BIG_TIMEOUT, what="every message delivered and acked after the reshard")
    moved = metric(fl, "streamfleet_redis_cluster_redirects_total", "h", kind="moved")
    ask = metric(fl, "streamfleet_redis_cluster_redirects_total", "h", kind="ask")
    # the longest pause in deliveries from the moving shards during the reshard (the producer
    # adds to each of them about 25 times a second)
    times = sorted(r.time for r in sink.snapshot() if 200 <= r.status < 300 and t0 <= r.time <= t0 + took
                   and int(json.loads(r.body)["n"]) % SHARDS in moving)
    pause = max((b - a for a, b in zip([t0] + times, times + [t0 + took])), default=took)
    print(f"\nreshard of 1000 slots (shards {moving}) took {took:.1f} s while consuming; {len(added)} messages, "
          f"MOVED {moved:.0f}, ASK {ask:.0f}; longest pause in deliveries from those shards {pause:.2f} s")
    assert moved >= 1
    assert worker_pids(fl) == pids, "a worker was restarted"


def test_sigkill_of_a_master_under_a_sharded_pool_fails_over_and_ends_all_acked(cluster, sink, fleet_factory):
    cl = cluster()
    c = cl.client()
    master = cl.master_of(shard(0))
    replica = cl.replica_of(master)
    affected = [k for k in range(SHARDS) if cl.master_of(shard(k)) is master]
    fill(c, 3000)
    fl = fleet_factory({"fleet": {"redis": cl.url()},
                        "pool:h": sharded_pool(sink, workers=2, batch=120, inflight=32, claim_idle="10s")})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v >= 3000, timeout=BIG_TIMEOUT)
    pids = worker_pids(fl)
    to_promotion, gap = fail_over_under_load(master, replica, ShardProducer(cl, rate=300))
    print(f"\nshards {affected} on the killed master: SIGKILL -> promotion {to_promotion:.2f} s; "
          f"promotion -> first ack on the promoted replica {gap:.2f} s")
    cl.wait_ok()
    c = cl.client()
    present = {}
    for k in range(SHARDS):
        for _, f in c.xrange(shard(k)):
            present[s(f[b"n"])] = k

    def settled():
        done = set(delivered(sink))
        dead = set()
        for k in range(SHARDS):
            dead |= {s(f.get(b"n", b"")) for _, f in c.xrange(shard(k) + ":dlq")}
        return pending_total(c) == 0 and set(present) <= done | dead
    fl.wait_for(settled, BIG_TIMEOUT, what="every entry present after the failover acked or dead-lettered")
    assert gap <= 3 * SLOWNESS, fl.log()[-5000:]
    assert worker_pids(fl) == pids, "a worker was restarted"
