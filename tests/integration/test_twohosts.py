"""Several hosts on one group, and a slow, lossy or frozen network between a fleet and Redis
(issue 13, the "two hosts" and "latency and loss" tests).

Two hosts: two fleets, each in a network namespace of its own with its own host name, reach
Redis (in a third namespace) over their own veth pair, both on one stream and one group; the
HTTP sink of the test is bridged into the Redis namespace (netns_helpers, faultproxy). One
host's whole fleet is SIGKILLed; the other takes over what it held after claim_idle. Then one
host's link to Redis is frozen longer than claim_idle: the same, and the cut-off host carries on
when the link is back.

Latency and loss: this kernel has no netem, so a fault-injecting TCP proxy of the tests
(faultproxy.py) sits between a fleet and Redis: every chunk delayed by 50 ms, then connections
dropped at random (reset or closed), then a freeze longer than a worker's read timeout. Nothing
may be lost in any mode. The throughput of each mode is printed (pytest -s), never asserted."""
import re
import time

import pytest

from conftest import SLOWNESS, add_messages, free_port, pending_count, wait_until, write_ini
from faultproxy import FaultProxy
from netns_helpers import Hosts, netns_available, ns_connect, ns_listen
from reliability_helpers import dlq_entries

pytestmark = pytest.mark.skipif(not netns_available(),
                                reason="needs root, ip netns and unshare")

HOSTS = ("host-a", "host-b")


@pytest.fixture
def hosts():
    h = Hosts(HOSTS)
    try:
        yield h
    finally:
        problems = h.cleanup()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def ok_ids(reqs, since=None, host=None):
    """{webhook-id: number of 2xx answers} of sink requests (after time since, from host)."""
    out = {}
    for q in reqs:
        if not 200 <= q.status < 300:
            continue
        if since is not None and q.time < since:
            continue
        if host is not None and q.headers.get("x-host") != host:
            continue
        k = q.headers.get("webhook-id")
        out[k] = out.get(k, 0) + 1
    return out


def pending_of(r, stream, group, prefix):
    """{entry id: consumer} of the pending entries held by consumers whose name starts with
    prefix."""
    out = {}
    for c in r.xinfo_consumers(stream, group):
        name = c["name"].decode()
        if name.startswith(prefix) and c["pending"]:
            for e in r.xpending_range(stream, group, min="-", max="+", count=100_000,
                                      consumername=name):
                out[e["message_id"].decode()] = name
    return out


N_TWO = 1200


def start_host_fleets(hosts, srv, bridge, tmp_path, redis_url=None):
    """Start a fleet on each host, one stream and one group, delivering to the sink through
    bridge with an X-Host header naming the host; wait until both are healthy. redis_url:
    {host: url} for hosts that do not reach Redis directly. Returns {host: NsFleet}."""
    fleets = {}
    for host in HOSTS:
        port = free_port()
        workdir = tmp_path / host
        workdir.mkdir()
        url = (redis_url or {}).get(host) or srv.url_at(hosts.redis_addr[host])
        cfg = write_ini(workdir / "streamfleet.ini", {
            "fleet": {"redis": url, "listen": f"127.0.0.1:{port}", "drain_timeout": "10s",
                      "poll_interval": "1s", "allow_root": "yes"},
            "pool:orders": {
                "stream": "orders", "group": "orders-group", "workers": 2, "batch": 16,
                "block": "500ms", "handler": "http", "inflight": 8,
                "url": f"http://{hosts.redis_addr[host]}:{bridge.port}/in",
                "header": f"X-Host: {host}", "timeout": "1s", "connect_timeout": "1s",
                "claim_idle": "2s", "backoff_base": "200ms", "backoff_max": "1s",
                "max_attempts": 25}})
        fleets[host] = hosts.fleet(host, cfg, workdir, port)
    for f in fleets.values():
        f.wait_healthy()
    return fleets


def test_two_hosts_one_group_sigkill_of_one_host_is_taken_over_by_the_other_nothing_lost(
        hosts, sink, tmp_path):
    srv = hosts.start_redis(tmp_path / "redis")
    r = srv.client()
    # The sink is reachable from both hosts at port bridge.port of the Redis namespace.
    bridge = FaultProxy(("127.0.0.1", sink.port), sock=ns_listen(hosts.redis_ns))
    try:
        sink.delay = 0.05                   # so that each host holds deliveries in flight
        fleets = start_host_fleets(hosts, srv, bridge, tmp_path)

        ids = add_messages(r, "orders", N_TWO, chunk=200)

        # Kill host-a once both hosts deliver and host-a holds entries.
        def a_holds_entries():
            got = ok_ids(sink.snapshot())
            by_a = ok_ids(sink.snapshot(), host="host-a")
            return (len(got) >= N_TWO // 4 and len(by_a) > 0
                    and pending_of(r, "orders", "orders-group", "host-a:"))
        fleets["host-a"].wait_for(a_holds_entries, what="host-a delivering and holding entries")
        killed = fleets["host-a"].kill_host()
        t_kill = time.monotonic()
        orphans = pending_of(r, "orders", "orders-group", "host-a:")
        delivered_at_kill = len(ok_ids(sink.snapshot()))
        assert orphans, "host-a held no pending entry when it was killed"

        def settled():
            got = ok_ids(sink.snapshot())
            return (len(set(ids) - set(got)) == 0
                    and pending_count(r, "orders", "orders-group") == 0)
        fleets["host-b"].wait_for(settled, timeout=60 * SLOWNESS,
                                  what="every entry delivered and acked after host-a died")
        t_settled = time.monotonic()

        reqs = sink.snapshot()
        got = ok_ids(reqs)
        assert set(got) == set(ids), f"unknown ids delivered: {sorted(set(got) - set(ids))[:5]}"
        assert pending_count(r, "orders", "orders-group") == 0
        # Both hosts did part of the work before the kill.
        assert ok_ids(reqs, host="host-a") and ok_ids(reqs, host="host-b")
        # host-b took over every entry host-a held: delivered by host-b after the kill.
        after_by_b = ok_ids(reqs, since=t_kill, host="host-b")
        assert set(orphans) <= set(after_by_b), \
            f"{len(set(orphans) - set(after_by_b))} of host-a's entries not delivered by host-b"
        first_takeover = min(q.time for q in reqs if q.headers.get("webhook-id") in orphans
                             and q.headers.get("x-host") == "host-b" and q.time >= t_kill)
        # Duplicates only for what host-a held (in flight, or delivered and not yet acked).
        dups = {k for k, n in got.items() if n > 1}
        assert dups <= set(orphans), f"duplicates of entries host-a did not hold: " \
                                     f"{sorted(dups - set(orphans))[:5]}"
        reclaimed = fleets["host-b"].metrics().total("streamfleet_messages_reclaimed_total")
        assert reclaimed and reclaimed >= len(orphans), (reclaimed, len(orphans))
        # Consumer names are HOST:POOL:SLOT, with each host's own name.
        names = [c["name"].decode() for c in r.xinfo_consumers("orders", "orders-group")]
        assert all(re.fullmatch(r"host-[ab]:orders:\d+", n) for n in names), names
        assert any(n.startswith("host-a:") for n in names), names
        assert any(n.startswith("host-b:") for n in names), names
        assert all(c["pending"] == 0 for c in r.xinfo_consumers("orders", "orders-group"))
        print(f"\ntwo hosts: {N_TWO} entries, host-a (pids {killed}) killed after "
              f"{delivered_at_kill} delivered, holding {len(orphans)}; host-b's first takeover "
              f"{first_takeover - t_kill:.2f} s after the kill (claim_idle 2 s), all settled "
              f"{t_settled - t_kill:.2f} s after it; {len(dups)} duplicates; consumers {names}")
    finally:
        bridge.close()


# Both longer than claim_idle (2 s); 4 s is shorter than a worker's read timeout (block + 5 s:
# its connection lives on through the cut, and it comes back holding entries the other host
# may have taken over), 10 s is longer (its connections are dropped and opened again).
CUTS = {"4s": 4.0, "10s": 10.0}


@pytest.mark.parametrize("cut", CUTS)
def test_two_hosts_one_cut_off_from_redis_longer_than_claim_idle_nothing_lost(
        hosts, sink, tmp_path, cut):
    """host-a loses its link to Redis (a freeze of the proxy on it) while it holds entries,
    longer than claim_idle; it still reaches the endpoint. host-b takes over what host-a
    held; when the link comes back host-a goes on, with the same workers. Every entry ends
    acked or dead-lettered once."""
    cut_s = CUTS[cut]
    srv = hosts.start_redis(tmp_path / "redis")
    r = srv.client()
    bridge = FaultProxy(("127.0.0.1", sink.port), sock=ns_listen(hosts.redis_ns))
    ns_a = hosts.ns["host-a"]
    link = FaultProxy((hosts.redis_addr["host-a"], srv.port),
                      sock=ns_listen(ns_a, "127.0.0.1"),
                      connect=lambda addr: ns_connect(ns_a, addr))
    try:
        sink.delay = 0.05
        sink.rule(422, body_contains=b'"kind":"poison"')
        fleets = start_host_fleets(hosts, srv, bridge, tmp_path,
                                   redis_url={"host-a": f"redis://127.0.0.1:{link.port}/0"})
        workers_a = fleets["host-a"].children()
        ids = add_messages(r, "orders", N_TWO, chunk=200, fields=lambda i: {
            "kind": "poison" if i % POISON_EVERY == 7 else "ok", "n": str(i)})
        poison = {ids[i] for i in range(N_TWO) if i % POISON_EVERY == 7}
        good = set(ids) - poison

        def a_holds_entries():
            return (len(ok_ids(sink.snapshot())) >= N_TWO // 4
                    and pending_of(r, "orders", "orders-group", "host-a:"))
        fleets["host-a"].wait_for(a_holds_entries, what="host-a delivering and holding entries")
        link.freeze(cut_s)
        t_cut = time.monotonic()
        held = pending_of(r, "orders", "orders-group", "host-a:")

        def settled():
            dead = {f["dlq.id"] for _, f in dlq_entries(r, "orders:dlq")}
            return (good <= set(ok_ids(sink.snapshot())) and poison <= dead
                    and pending_count(r, "orders", "orders-group") == 0)
        fleets["host-b"].wait_for(settled, timeout=(60 + cut_s) * SLOWNESS,
                                  what="every entry delivered or dead-lettered")
        t_settled = time.monotonic()

        reqs = sink.snapshot()
        got = ok_ids(reqs)
        assert good <= set(got) and not (set(got) & poison)
        dl = dlq_entries(r, "orders:dlq")
        assert sorted(f["dlq.id"] for _, f in dl) == sorted(poison), "dead letters not once each"
        assert pending_count(r, "orders", "orders-group") == 0
        # host-b took over what host-a held when its link went (those host-a had not handed
        # to the endpoint yet, and those whose acks could not reach Redis). A takeover was
        # measured 2.2-3.4 s after a host stopped: after the 4 s cut host-a may have acked
        # some of them itself first, the 10 s cut leaves three times that.
        by_b = {q.headers.get("webhook-id") for q in reqs if q.time >= t_cut
                and q.headers.get("x-host") == "host-b"}
        taken = set(held) & by_b
        if cut == "10s":
            assert taken == set(held), f"{len(set(held) - by_b)} of host-a's entries not taken over"
        # host-a was cut off, not broken: same workers, and they work again after the cut.
        assert fleets["host-a"].children() == workers_a
        assert not fleets["host-a"].metrics().total("streamfleet_worker_restarts_total")
        # Once the link is back, host-a's workers (connected again) take their share of new
        # entries, added a few at a time (a pipeline of many at once can all go to the other
        # host's blocked reads).
        wait_until(lambda: not link.frozen(), timeout=cut_s * 2, what="the end of the cut")
        more = []

        def a_delivers_again():
            more.extend(add_messages(r, "orders", 5))
            return ok_ids(sink.snapshot(), host="host-a").keys() & set(more)
        wait_until(a_delivers_again, interval=0.2, what="host-a delivering again after the cut")
        t_back = time.monotonic()
        wait_until(lambda: pending_count(r, "orders", "orders-group") == 0,
                   what="the last entries acked")
        assert set(more) <= set(ok_ids(sink.snapshot()))
        dups = sum(n - 1 for n in got.values())
        print(f"\ncut off: host-a's link to Redis frozen {cut_s:.0f} s while it held "
              f"{len(held)} entries ({len(taken)} taken over by host-b); all {N_TWO} settled "
              f"{t_settled - t_cut:.2f} s after the cut; host-a delivering again "
              f"{t_back - t_cut - cut_s:.2f} s after the link came back; {dups} duplicate "
              f"deliveries, {len(dl)} dead letters for {len(poison)} poison")
    finally:
        link.close()
        bridge.close()


N_PHASE = 600
N_DROPS = 3000      # the drops phase runs long enough for several drops per connection
POISON_EVERY = 40
FREEZE_S = 8.0      # longer than a worker's read timeout: block (500 ms) + 5 s


def test_latency_dropped_connections_and_a_freeze_between_fleet_and_redis_lose_nothing(
        redis_server, sink, fleet):
    r = redis_server.client()
    proxy = FaultProxy(("127.0.0.1", redis_server.port))
    try:
        sink.rule(422, body_contains=b'"kind":"poison"')
        fl = fleet({"fleet": {"redis": f"redis://127.0.0.1:{proxy.port}/0"},
                    "pool:lossy": {
                        "stream": "lossy", "group": "lossy-group", "workers": 2, "batch": 20,
                        "block": "500ms", "handler": "http", "url": sink.url + "/in",
                        "inflight": 16, "timeout": "2s", "connect_timeout": "1s",
                        "claim_idle": "4s", "backoff_base": "200ms", "backoff_max": "1s",
                        "max_attempts": 25}})
        fl.wait_healthy()
        workers = fl.children()
        assert len(workers) == 2, workers
        seq = 0
        rates = {}
        all_good, all_poison = set(), set()

        def phase(mode, setup, n=N_PHASE):
            nonlocal seq
            base = seq
            seq += n

            def fields(i):
                n = base + i
                return {"kind": "poison" if n % POISON_EVERY == 7 else "ok", "n": str(n)}
            setup()
            t0 = time.monotonic()
            ids = add_messages(r, "lossy", n, fields=fields, chunk=200)
            poison = {ids[i] for i in range(n) if (base + i) % POISON_EVERY == 7}
            good = set(ids) - poison
            all_good.update(good)
            all_poison.update(poison)

            def settled():
                got = ok_ids(sink.snapshot())
                dead = {f["dlq.id"] for _, f in dlq_entries(r, "lossy:dlq")}
                return (all_good <= set(got) and all_poison <= dead
                        and pending_count(r, "lossy", "lossy-group") == 0)
            fl.wait_for(settled, timeout=(60 + (FREEZE_S if mode == "freeze" else 0)) * SLOWNESS,
                        what=f"every message of the {mode} phase delivered or dead-lettered")
            took = time.monotonic() - t0
            rates[mode] = (n, n / took, took)

        phase("no fault", lambda: None)
        phase("delay 50 ms", lambda: setattr(proxy, "delay_ms", 50))
        dropped0 = proxy.dropped

        def drops():
            proxy.delay_ms = 0
            proxy.drop_rate = 1.0           # each connection dropped about once a second,
            proxy.drop_kind = "mixed"       # by a reset or a plain close, in turn
        resets0 = proxy.resets
        phase("random drops", drops, N_DROPS)
        dropped = proxy.dropped - dropped0
        resets = proxy.resets - resets0

        def freeze():
            proxy.drop_rate = 0.0
            proxy.freeze(FREEZE_S)
        accepted0 = proxy.accepted
        phase("freeze", freeze)
        # The workers saw the freeze as one (no reply within their read timeout), dropped
        # their connections and opened new ones once the proxy forwarded again.
        assert proxy.accepted - accepted0 >= len(workers), (accepted0, proxy.accepted)

        # Nothing lost: every good message answered 2xx, every poison one dead-lettered with
        # its reason; nothing pending.
        reqs = sink.snapshot()
        got = ok_ids(reqs)
        assert all_good <= set(got)
        assert not (set(got) & all_poison)
        dl = dlq_entries(r, "lossy:dlq")
        assert {f["dlq.id"] for _, f in dl} == all_poison
        assert all(f["dlq.reason"] == "http_422" for _, f in dl), dl
        assert pending_count(r, "lossy", "lossy-group") == 0
        assert dropped >= 3 and 0 < resets < dropped, \
            f"{dropped} connections dropped in the drops phase, {resets} of them reset"
        # No crash loop: the same two workers throughout, no restart counted.
        assert fl.children() == workers, f"workers replaced: {workers} -> {fl.children()}"
        assert not fl.metrics().total("streamfleet_worker_restarts_total")
        dups = sum(n - 1 for n in got.values())
        dlq_dups = len(dl) - len({f["dlq.id"] for _, f in dl})
        print("\nthrough the fault proxy (2 workers, batch 20, inflight 16):")
        for mode, (n, rate, took) in rates.items():
            print(f"  {mode}: {n} messages in {took:.2f} s, {rate:.0f} msgs/s")
        print(f"  all settled {rates['freeze'][2] - FREEZE_S:.2f} s after the {FREEZE_S:.0f} s "
              f"freeze ended")
        print(f"  {dropped} connections dropped in the drops phase ({resets} reset, the others "
              f"closed); {dups} duplicate deliveries, "
              f"{dlq_dups} duplicate dead letters; {proxy.accepted} connections in all")
    finally:
        proxy.close()
