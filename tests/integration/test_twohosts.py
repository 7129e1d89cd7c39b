"""Several hosts on one group, and a slow, lossy or frozen network between a fleet and Redis
(issue 13, the "two hosts" and "latency and loss" tests).

Two hosts: two fleets, each in a network namespace of its own with its own host name, reach
Redis (in a third namespace) over their own veth pair, both on one stream and one group; the
HTTP sink of the test is bridged into the Redis namespace (netns_helpers, faultproxy). One
host's whole fleet is SIGKILLed; the other takes over what it held after claim_idle.

Latency and loss: this kernel has no netem, so a fault-injecting TCP proxy of the tests
(faultproxy.py) sits between a fleet and Redis: every chunk delayed by 50 ms, then connections
reset at random, then a freeze longer than a worker's read timeout. Nothing may be lost in any
mode. The throughput of each mode is printed (pytest -s), never asserted."""
import re
import time

import pytest

from conftest import SLOWNESS, add_messages, free_port, pending_count, write_ini
from faultproxy import FaultProxy
from netns_helpers import Hosts, netns_available, ns_listen
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


def test_two_hosts_one_group_sigkill_of_one_host_is_taken_over_by_the_other_nothing_lost(
        hosts, sink, tmp_path):
    srv = hosts.start_redis(tmp_path / "redis")
    r = srv.client()
    # The sink is reachable from both hosts at port bridge.port of the Redis namespace.
    bridge = FaultProxy(("127.0.0.1", sink.port), sock=ns_listen(hosts.redis_ns))
    try:
        sink.delay = 0.05                   # so that each host holds deliveries in flight
        fleets = {}
        for host in HOSTS:
            port = free_port()
            workdir = tmp_path / host
            workdir.mkdir()
            cfg = write_ini(workdir / "streamfleet.ini", {
                "fleet": {"redis": srv.url_at(hosts.redis_addr[host]),
                          "listen": f"127.0.0.1:{port}", "drain_timeout": "10s",
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
