"""Integration tests of the supervisor (issue 5): reload, scaling, hung and crashing children,
recycling, memory limit, fast stop, pidfile, privilege drop, logs, systemd.

A real redis-server and the real binary, driven with real signals; one behaviour per test.
Every wait polls with a deadline; timing assertions carry the STREAMFLEET_TEST_SLOWNESS
multiplier. The numbers in brackets are items of the TEST PLAN in /work/shared/RELIABILITY.md."""
import collections
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (HOST, REPO, SLOWNESS, TIMEOUT, add_messages, consumer_names, excerpt,
                      free_port, listening_tcp_inodes, pending_count, socket_inodes, wait_until)
from supervisor_helpers import (BIG_TIMEOUT, NotifySocket, Producer, Watcher, all_read_and_acked,
                                assert_master_fds_back_to, assignments, blocked_readers,
                                consumers_of, dead_pid, handled_ids, http_pool, kill_quietly,
                                line_of, lines_of_pid, live_children, master_cpu, master_fds,
                                nobody_ids, pool, pool_children, read_ini, record_arrivals,
                                restarts, rewrite_config, send_signal, signal_pending,
                                status_ids, wait_children, workers_live, workers_total,
                                zombie_children)


# --------------------------------------------------------------------------------------------
# SIGHUP: reload [5, 6, 7, 40]
# --------------------------------------------------------------------------------------------

def test_reload_under_load_from_2_to_3_workers_and_a_new_batch_loses_nothing(redis_server,
                                                                              fleet):
    """[5] A reload that changes workers 2 -> 3 and batch, under 1,000 msg/s: every id is
    handled, nothing stays pending, the new consumer HOST:a:2 shows, the pool never has zero
    workers, and no counter goes back."""
    r = redis_server.client()
    fl = fleet({"pool:a": pool("ra", workers=2, batch=10)})
    old = wait_children(fl, 2)
    fl.wait_for(lambda: consumers_of(r, "ra", "a") == [0, 1], what="consumers a:0 and a:1")
    prod = Producer(redis_server, "ra", rate=1000)
    prod.start()
    watch = None
    try:
        fl.wait_for(lambda: (fl.metrics().total("streamfleet_messages_acked_total", pool="a")
                             or 0) >= 1500, timeout=BIG_TIMEOUT, what="1500 acked under load")
        watch = Watcher(fl, ["a"])
        watch.start()
        rewrite_config(fl, lambda c: c["pool:a"].update(workers="3", batch="25"))
        send_signal(fl, signal.SIGHUP)
        fl.wait_for(lambda: "reload: done" in fl.log(), what="reload done")

        def new_generation():
            kids = pool_children(fl, "a")
            return kids if len(kids) == 3 and not set(kids) & set(old) else None
        fl.wait_for(new_generation, what="3 new children and the old ones gone")
        fl.wait_for(lambda: 2 in consumers_of(r, "ra", "a"), what="consumer HOST:a:2")
        # more load with the new generation alone
        base = (fl.metrics().total("streamfleet_messages_acked_total", pool="a") or 0)
        fl.wait_for(lambda: fl.metrics().total("streamfleet_messages_acked_total", pool="a")
                    >= base + 1500, timeout=BIG_TIMEOUT, what="1500 more acked after reload")
    finally:
        ids = prod.stop()
        if watch:
            watch.stop()
    fl.wait_for(lambda: all_read_and_acked(r, "ra", len(ids)), timeout=BIG_TIMEOUT,
                what=f"all {len(ids)} entries read and acked")
    assert pending_count(r, "ra", "ra-group") == 0
    assert consumers_of(r, "ra", "a") == [0, 1, 2]
    assert not watch.problems, watch.problems
    assert watch.min_children["a"] >= 1, "pool a had no live worker at some moment"
    assert watch.min_metric_workers["a"] >= 1, "streamfleet_workers{pool=a} showed 0"
    assert watch.samples > 100 and watch.metric_samples > 10
    m = fl.metrics()
    assert m.value("streamfleet_reloads_total", result="ok") == 1
    assert m.total("streamfleet_messages_read_total", pool="a") >= len(ids)
    assert fl.stop() == 0, excerpt(fl.log())
    handled = handled_ids(fl)
    missing = set(ids) - set(handled)
    assert not missing, f"{len(missing)} of {len(ids)} ids never handled: {sorted(missing)[:5]}"


def test_reload_new_generation_does_not_deliver_again_what_the_old_one_holds(
        redis_server, sink, fleet):
    """A changed pool's new generation reads new entries only ('fresh'): the entries the old
    generation still holds under the same consumer names (in flight to a slow endpoint) are
    finished by the old generation, and not delivered a second time by the new one."""
    r = redis_server.client()
    sink.delay = 3.0
    fl = fleet({"pool:h": http_pool(sink, "rh", workers=1, batch=10, inflight=10)})
    old = wait_children(fl, 1)
    sink_arrivals = record_arrivals(sink)        # before the messages: none may slip past it
    ids = add_messages(r, "rh", 10)
    wait_until(lambda: len(sink_arrivals) == 10, what="10 deliveries in flight")
    rewrite_config(fl, lambda c: c["pool:h"].update(max_attempts="6"))
    send_signal(fl, signal.SIGHUP)
    # The new worker starts before the old one drains (3 s of deliveries in flight): any
    # second delivery of its would have arrived by the time the old one is gone.
    fl.wait_for(lambda: old[0] not in live_children(fl.pid) and len(live_children(fl.pid)) == 1,
                timeout=BIG_TIMEOUT, what="the old generation drained")
    fl.wait_for(lambda: all_read_and_acked(r, "rh", 10), what="10 acked")
    per_id = collections.Counter(q.headers.get("webhook-id") for q in sink_arrivals)
    twice = {i: n for i, n in per_id.items() if n > 1}
    assert not twice, (f"{len(twice)} of 10 messages delivered again by the new generation "
                       f"while the old one held them: {twice}")
    assert set(per_id) == set(ids)


def test_killed_worker_of_a_new_generation_recovers_its_pending_entries_at_restart(
        redis_server, fleet):
    """After a reload started a new generation, a worker of it that is killed holding entries
    gets them back at its restart (ID-0 read of its pending list), not after claim_idle."""
    r = redis_server.client()
    fl = fleet({"pool:a": pool("rg", workers=1, claim_idle="1h")})
    old = wait_children(fl, 1)
    rewrite_config(fl, lambda c: c["pool:a"].update(batch="20"))
    send_signal(fl, signal.SIGHUP)
    def new_one_alone():
        kids = live_children(fl.pid)
        return kids if len(kids) == 1 and kids != old else None
    (child,) = fl.wait_for(new_one_alone, what="the new generation's worker alone")
    fl.wait_for(lambda: consumers_of(r, "rg", "a") == [0], what="consumer a:0")
    # 30 entries in slot 0's pending list, read "by it" atomically: the running worker reads
    # only '>' and cannot see them
    p = r.pipeline(transaction=True)
    for i in range(30):
        p.xadd("rg", {"n": str(i)})
    p.xreadgroup("rg-group", f"{HOST}:a:0", {"rg": ">"}, count=30)
    res = p.execute()
    ids = [x.decode() for x in res[:30]]
    assert pending_count(r, "rg", "rg-group") == 30
    time.sleep(6)    # outlive the crash-loop window: the replacement starts at once
    os.kill(child, signal.SIGKILL)
    fl.wait_for(lambda: pending_count(r, "rg", "rg-group") == 0, timeout=20 * SLOWNESS,
                what="the replacement handles its slot's pending entries")
    assert fl.stop() == 0
    assert set(ids) <= set(handled_ids(fl))


def broken_reload_file(fl):
    """Rewrite the fleet's config with an unknown key and an out-of-range value; returns
    their line numbers."""
    text = Path(fl.config_path).read_text().splitlines()
    out, seen = [], False
    for line in text:
        if line.startswith("workers"):
            line = "workers = 100000"
        out.append(line)
        if line.startswith("[pool:a]") and not seen:
            seen = True
            out.append("no_such_key = 1")
    Path(fl.config_path).write_text("\n".join(out) + "\n")
    return line_of(fl.config_path, "no_such_key"), line_of(fl.config_path, "workers = 100000")


def test_reload_of_a_broken_file_changes_nothing_and_logs_each_file_line(redis_server, fleet):
    """[6] An unknown key on one line, an out-of-range value on another: both logged as
    FILE:LINE, the children untouched, reloads_total{result="failed"} 1, /health 200."""
    fl = fleet({"pool:a": pool("ba", workers=2), "pool:b": pool("bb", workers=1)})
    kids = wait_children(fl, 3)
    fl.wait_healthy()
    unknown, out_of_range = broken_reload_file(fl)
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: "keeping the running config" in fl.log(), what="reload refused")
    log = fl.log()
    path = str(fl.config_path)
    assert f"{path}:{unknown}:" in log, excerpt(log)
    assert f"{path}:{out_of_range}:" in log, excerpt(log)
    m = fl.metrics()
    assert m.value("streamfleet_reloads_total", result="failed") == 1
    assert m.value("streamfleet_reloads_total", result="ok") == 0
    assert fl.health()[0] == 200
    assert m.value("streamfleet_workers_expected", pool="a") == 2
    assert live_children(fl.pid) == kids


def test_100_sighups_in_one_second_leave_fds_children_and_no_zombies_as_they_were(
        redis_server, fleet):
    """[7] 100 SIGHUPs within a second (an unchanged, valid config): the children stay the
    same processes, the master's fd count and child count are what they were, no zombie."""
    fl = fleet({"pool:a": pool("ha", workers=2), "pool:b": pool("hb", workers=2)})
    kids = wait_children(fl, 4)
    fl.wait_healthy()
    baseline = master_fds(fl)
    t0 = time.monotonic()
    for i in range(100):                    # one every 10 ms
        d = t0 + i * 0.01 - time.monotonic()
        if d > 0:
            time.sleep(d)
        fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: (fl.metrics().value("streamfleet_reloads_total", result="ok") or 0) >= 1,
                what="at least one reload")
    # settle: no reload may still be coming
    fl.wait_for(lambda: not signal_pending(fl.pid, signal.SIGHUP), what="no SIGHUP pending")
    n_ok = fl.metrics().value("streamfleet_reloads_total", result="ok")
    assert 1 <= n_ok <= 100
    assert fl.metrics().value("streamfleet_reloads_total", result="failed") == 0
    assert_master_fds_back_to(fl, baseline)
    assert live_children(fl.pid) == kids, "an unchanged config must leave the children alone"
    assert not zombie_children(fl.pid)
    fl.wait_healthy()


def test_reload_that_adds_a_pool_starts_it(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:a": pool("aa", workers=1)})
    a_kids = wait_children(fl, 1, "a")
    add_messages(r, "ab", 20)
    rewrite_config(fl, lambda c: c.update({"pool:b": {k: str(v) for k, v in
                                                      pool("ab", workers=2).items()}}))
    send_signal(fl, signal.SIGHUP)
    wait_children(fl, 2, "b")
    fl.wait_for(lambda: consumers_of(r, "ab", "b") == [0, 1], what="consumers of pool b")
    fl.wait_for(lambda: all_read_and_acked(r, "ab", 20), what="pool b handles its backlog")
    m = fl.metrics()
    assert m.value("streamfleet_workers_expected", pool="b") == 2
    assert m.value("streamfleet_reloads_total", result="ok") == 1
    assert pool_children(fl, "a") == a_kids, "pool a is unchanged: its child stays"
    fl.wait_healthy()


def test_reload_that_removes_a_pool_drains_it(redis_server, sink, fleet):
    """The removed pool's workers finish what they hold (deliveries in flight to a slow
    endpoint are completed and acked), then exit; the other pool is untouched."""
    r = redis_server.client()
    sink.delay = 1.5
    fl = fleet({"pool:a": pool("da", workers=1),
                "pool:b": http_pool(sink, "db", workers=2, inflight=8)})
    a_kids = wait_children(fl, 1, "a")
    b_kids = wait_children(fl, 2, "b")
    add_messages(r, "db", 10)
    fl.wait_for(lambda: sink.concurrent >= 5, what="deliveries of pool b in flight")
    rewrite_config(fl, lambda c: c.pop("pool:b"))
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: not pool_children(fl, "b"), what="pool b's workers gone")
    assert pending_count(r, "db", "db-group") == 0, "what pool b held was finished and acked"
    assert len([q for q in sink.snapshot() if q.status == 200]) == 10
    assert not re.search(r"pool b .*(killed|exited with status)", fl.log()), excerpt(fl.log())
    fl.wait_for(lambda: fl.metrics().value("streamfleet_workers_expected", pool="b") is None,
                what="pool b gone from /metrics")
    assert pool_children(fl, "a") == a_kids
    assert not set(live_children(fl.pid)) & set(b_kids)
    fl.wait_healthy()


def test_reload_with_a_new_listen_address_rebinds(redis_server, fleet):
    """[40] The old port is refused, the new one serves, no child holds a listening socket."""
    fl = fleet({"pool:a": pool("la", workers=2)})
    kids = wait_children(fl, 2)
    old_port = fl.port
    new_port = free_port()
    rewrite_config(fl, lambda c: c["fleet"].update(listen=f"127.0.0.1:{new_port}"))
    send_signal(fl, signal.SIGHUP)
    fl.port = new_port
    fl.wait_for(lambda: fl.http_get("/metrics", timeout=2)[0] == 200, what="new port serves")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", old_port), timeout=2).close()
    assert not listening_tcp_inodes(old_port), "something still listens on the old port"
    listening = listening_tcp_inodes()
    assert listening_tcp_inodes(new_port) & set(socket_inodes(fl.pid).values())
    for kid in live_children(fl.pid):
        held = set(socket_inodes(kid).values()) & listening
        assert not held, f"child {kid} holds a listening socket"
    assert live_children(fl.pid) == kids, "only listen changed: children stay"
    assert fl.metrics().value("streamfleet_reloads_total", result="ok") == 1


# --------------------------------------------------------------------------------------------
# SIGTTIN / SIGTTOU
# --------------------------------------------------------------------------------------------

def test_sigttin_and_sigttou_change_the_live_count_never_below_one(redis_server, fleet):
    fl = fleet({"pool:a": pool("ta", workers=2), "pool:b": pool("tb", workers=1)})
    wait_children(fl, 2, "a")
    wait_children(fl, 1, "b")

    def shows(pool_name, n):
        def check():
            m = fl.metrics()
            return (workers_live(m, pool_name) == n and workers_total(m, pool_name) == n
                    and m.value("streamfleet_workers_expected", pool=pool_name) == n
                    and len(pool_children(fl, pool_name)) == n)
        fl.wait_for(check, what=f"pool {pool_name} at {n} workers (processes and metrics)")

    send_signal(fl, signal.SIGTTIN)
    shows("a", 3)
    shows("b", 2)
    send_signal(fl, signal.SIGTTOU)
    shows("a", 2)
    shows("b", 1)
    send_signal(fl, signal.SIGTTOU)
    shows("a", 1)
    shows("b", 1)
    kids = live_children(fl.pid)
    for _ in range(2):
        send_signal(fl, signal.SIGTTOU)   # already at one: nothing happens
        shows("a", 1)
        shows("b", 1)
    assert live_children(fl.pid) == kids
    send_signal(fl, signal.SIGTTIN)
    shows("a", 2)
    shows("b", 2)
    fl.wait_healthy()
    assert restarts(fl.metrics(), "a") == 0, "scaling down is not a restart"


def test_sigttin_extra_workers_last_until_the_next_reload(redis_server, fleet):
    fl = fleet({"pool:a": pool("tr", workers=1)})
    wait_children(fl, 1, "a")
    send_signal(fl, signal.SIGTTIN)
    send_signal(fl, signal.SIGTTIN)
    wait_children(fl, 3, "a")
    send_signal(fl, signal.SIGHUP)            # unchanged file: back to its workers = 1
    wait_children(fl, 1, "a")
    fl.wait_for(lambda: workers_total(fl.metrics(), "a") == 1, what="metrics: 1 worker")


# --------------------------------------------------------------------------------------------
# children that misbehave
# --------------------------------------------------------------------------------------------

def test_stopped_child_is_killed_for_silence_and_replaced_within_heartbeat_timeout(
        redis_server, fleet):
    hb = 7.0
    fl = fleet({"pool:a": pool("sa", workers=2, block="500ms", heartbeat_timeout="7s")})
    kids = wait_children(fl, 2)
    fl.wait_for(lambda: workers_live(fl.metrics(), "a") == 2
                and fl.metrics().value("streamfleet_workers", pool="a", state="running") == 2,
                what="both workers running")
    victim, other = kids
    os.kill(victim, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        def replaced():
            now = live_children(fl.pid)
            return now if victim not in now and len(now) == 2 else None
        # poll fast: the time of replacement is what is measured
        now = wait_until(replaced, timeout=hb + 10 * SLOWNESS, interval=0.01,
                         what="the stopped child replaced")
        took = time.monotonic() - t0
    finally:
        kill_quietly(victim, signal.SIGCONT)
    assert other in now, "the healthy child must not be touched"
    assert took <= hb + 1.0 * SLOWNESS, f"replaced {took:.2f} s after SIGSTOP (timeout {hb} s)"
    assert took >= hb - 1.0, f"killed after {took:.2f} s: before heartbeat_timeout"
    log = fl.log()
    line = [l for l in log.splitlines() if f"(pid {victim})" in l and "silent for" in l]
    assert line, excerpt(log)
    assert "pool a" in line[0] and re.search(r"silent for \d+ ?ms", line[0]), line[0]
    fl.wait_for(lambda: restarts(fl.metrics(), "a", "heartbeat") == 1, what="heartbeat restart")
    assert restarts(fl.metrics(), "a") == 1
    fl.wait_healthy()


def test_child_dying_at_once_is_restarted_after_1_2_4_8_s_and_health_says_crash_loop(
        redis_server, fleet):
    """A worker that dies right after it starts (here: SIGKILLed by the test as soon as it
    appears) is restarted after 1 s, 2 s, 4 s, 8 s; at most 5 restarts in 10 s; /health is
    503 degraded with crash_loop meanwhile; the master does not spin."""
    fl = fleet({"pool:a": pool("ca", workers=1)})
    first = wait_children(fl, 1)[0]
    appeared = []          # (time seen, pid)
    killed = []            # (time killed, pid)
    health_seen = []
    seen = set()
    cpu0 = master_cpu(fl.pid)
    t0 = time.monotonic()
    kill_quietly(first)
    killed.append((t0, first))
    seen.add(first)
    deadline = t0 + 16.5 * SLOWNESS
    while time.monotonic() < deadline and len(killed) < 5:
        for pid in live_children(fl.pid):
            if pid not in seen:
                seen.add(pid)
                appeared.append((time.monotonic(), pid))
                kill_quietly(pid)
                killed.append((time.monotonic(), pid))
        if len(killed) >= 2 and time.monotonic() - killed[-1][0] > 0.2 and len(health_seen) < 50:
            health_seen.append(fl.health())       # while it waits for the next start
        time.sleep(0.005)
    cpu = master_cpu(fl.pid) - cpu0
    gaps = [round(appeared[i][0] - killed[i][0], 2) for i in range(len(appeared))]
    assert len(gaps) >= 4, f"restarts seen after kills: gaps {gaps}\n{excerpt(fl.log())}"
    for want, got in zip((1, 2, 4, 8), gaps):
        assert want - 0.1 <= got <= want + 0.6 * SLOWNESS, f"restart delays {gaps}, want 1,2,4,8"
    in_10s = [t for t, _ in appeared if t - t0 <= 10]
    assert len(in_10s) <= 5, f"{len(in_10s)} restarts in 10 s"
    degraded = [b for st, b in health_seen if st == 503 and b["status"] == "degraded"
                and b["pools"]["a"]["crash_loop"] is True and "crash loop" in b.get("reason", "")]
    assert degraded, f"/health during the crash loop: {health_seen[:3]}"
    fl.wait_for(lambda: restarts(fl.metrics(), "a", "signal") == len(killed),
                what=f"{len(killed)} restarts (reason signal) counted")
    assert cpu < 3.0 * SLOWNESS, f"the master used {cpu:.1f} s of CPU in {len(killed)} restarts"
    assert "soon after start" in fl.log()


def test_max_messages_recycles_workers_without_losing_or_duplicating(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:a": pool("ma", workers=1, batch=10, max_messages=50)})
    wait_children(fl, 1)
    ids = add_messages(r, "ma", 200)
    fl.wait_for(lambda: all_read_and_acked(r, "ma", 200), timeout=BIG_TIMEOUT,
                what="200 read and acked")
    fl.wait_for(lambda: restarts(fl.metrics(), "a", "recycle") >= 3, what="3 recycles")
    m = fl.metrics()
    assert restarts(m, "a") == restarts(m, "a", "recycle"), "recycling is the only reason"
    assert "recycled after max_messages" in fl.log()
    assert pending_count(r, "ma", "ma-group") == 0
    # (an XACK sent with a read is counted when that read answers: up to `block` later)
    fl.wait_for(lambda: fl.metrics().total("streamfleet_messages_acked_total", pool="a") == 200,
                what="acked_total 200")
    assert fl.stop() == 0
    handled = handled_ids(fl)
    assert sorted(handled) == sorted(ids), "every message handled"
    twice = [i for i, n in handled.items() if n > 1]
    assert not twice, f"handled twice across recycles: {twice[:5]}"


def test_worker_over_memory_limit_is_replaced_with_reason_memory(redis_server, fleet):
    fl = fleet({"pool:a": pool("mem", workers=1, memory_limit="1M")})
    fl.wait_for(lambda: restarts(fl.metrics(), "a", "memory") >= 1, what="a memory restart")
    log = fl.log()
    assert re.search(r"resident memory \d+ KiB exceeds memory_limit 1024 KiB", log), excerpt(log)
    assert "exceeded memory_limit: replacing it" in log
    m = fl.metrics()
    assert restarts(m, "a") == restarts(m, "a", "memory")


def test_worker_over_memory_limit_from_its_start_is_not_restarted_in_a_hot_loop(redis_server,
                                                                               fleet):
    """A memory_limit below what a fresh worker needs makes every worker exit right after
    it starts: that is a crash loop like any other (restart delay 1 s doubling), not a fork
    storm."""
    fl = fleet({"pool:a": pool("mh", workers=1, memory_limit="1M")})
    fl.wait_for(lambda: restarts(fl.metrics(), "a", "memory") >= 1, what="a memory restart")
    n0 = restarts(fl.metrics(), "a")
    t0 = time.monotonic()
    time.sleep(10)
    n = restarts(fl.metrics(), "a") - n0
    took = time.monotonic() - t0
    assert n <= 5, f"{n:.0f} memory restarts in {took:.1f} s: a hot restart loop"


# --------------------------------------------------------------------------------------------
# stopping: master death, SIGQUIT [2]
# --------------------------------------------------------------------------------------------

def test_sigkill_of_the_master_makes_every_child_exit_within_2_s_even_with_block_5s(
        redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:a": pool("ka", workers=3, block="5s"), "pool:b": pool("kb", workers=1,
                                                                            block="5s")})
    wait_children(fl, 4)
    fl.children()       # remember them for the fixture's orphan check
    fl.wait_for(lambda: blocked_readers(r) == 4, what="every worker in XREADGROUP BLOCK 5000")
    fl.signal(signal.SIGKILL)
    t0 = time.monotonic()
    fl.wait(TIMEOUT)
    wait_until(lambda: not fl.surviving_children(), timeout=5 + TIMEOUT, interval=0.01,
               what="children to exit after their master died")
    took = time.monotonic() - t0
    assert took <= 2.0 * SLOWNESS, f"children took {took:.2f} s to exit after the master died"


def test_sigquit_leaves_work_in_flight_pending_and_the_next_start_delivers_it(
        redis_server, sink, fleet):
    r = redis_server.client()
    sink.delay = 5.0       # a drain would wait for these; a fast stop does not
    sections = {"pool:q": http_pool(sink, "qa", workers=2, batch=10, inflight=10)}
    first = fleet(sections)
    wait_children(first, 2)
    arrived = record_arrivals(sink)              # before the messages: none may slip past it
    ids = add_messages(r, "qa", 20)
    wait_until(lambda: len(arrived) == 20, what="20 deliveries in flight")
    first.children()
    first.signal(signal.SIGQUIT)
    t0 = time.monotonic()
    code = first.wait(TIMEOUT)
    took = time.monotonic() - t0
    assert code == 0, excerpt(first.log())
    assert took < 3.0 * SLOWNESS, f"fast stop took {took:.2f} s"
    wait_until(lambda: not first.surviving_children(), what="children gone")
    assert "SIGQUIT" in first.log()
    assert pending_count(r, "qa", "qa-group") == 20, "what was in flight stays pending"

    sink.delay = 0
    start = time.monotonic()
    second = fleet(sections)       # same pool, same consumer names: they read their PEL first
    second.wait_for(lambda: all_read_and_acked(r, "qa", 20), timeout=BIG_TIMEOUT,
                    what="the 20 pending entries delivered and acked")
    again = {q.headers.get("webhook-id") for q in sink.snapshot()
             if q.time >= start and q.status == 200}
    assert again == set(ids)
    assert second.stop() == 0


# --------------------------------------------------------------------------------------------
# pidfile
# --------------------------------------------------------------------------------------------

def test_pidfile_holds_the_masters_pid_and_is_removed_at_exit(redis_server, fleet, tmp_path):
    pidfile = tmp_path / "run" / "streamfleet.pid"
    pidfile.parent.mkdir()
    fl = fleet({"fleet": {"pidfile": str(pidfile)}, "pool:a": pool("pa")})
    assert pidfile.read_text() == f"{fl.pid}\n"
    assert not list(pidfile.parent.glob("*.tmp")), "the temporary file of the atomic write"
    assert fl.stop() == 0
    assert not pidfile.exists()


def test_second_instance_with_the_same_pidfile_refuses_to_start(redis_server, fleet, tmp_path):
    pidfile = tmp_path / "streamfleet.pid"
    first = fleet({"fleet": {"pidfile": str(pidfile)}, "pool:a": pool("pb")})
    kids = wait_children(first, 1)
    second = fleet({"fleet": {"pidfile": str(pidfile)}, "pool:a": pool("pb")}, wait_http=False)
    code = second.wait(TIMEOUT)
    assert code != 0
    assert f"already runs as pid {first.pid}" in second.log(), second.log()
    assert pidfile.read_text() == f"{first.pid}\n", "the first instance's pidfile stays"
    assert live_children(first.pid) == kids and first.health()[0] == 200
    with pytest.raises(OSError):
        second.http_get("/metrics", timeout=1)     # it never bound its port


def test_stale_pidfile_of_a_dead_process_is_taken_over(redis_server, fleet, tmp_path):
    pidfile = tmp_path / "streamfleet.pid"
    gone = dead_pid()
    pidfile.write_text(f"{gone}\n")
    fl = fleet({"fleet": {"pidfile": str(pidfile)}, "pool:a": pool("pc")})
    assert pidfile.read_text() == f"{fl.pid}\n"
    assert f"pid {gone} is gone" in fl.log()
    assert fl.stop() == 0
    assert not pidfile.exists()


# --------------------------------------------------------------------------------------------
# privileges [44]
# --------------------------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@needs_root
def test_started_as_root_with_user_nobody_every_process_runs_as_nobody(redis_server, fleet):
    uid, gid = nobody_ids()
    r = redis_server.client()
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup"},
                "pool:a": pool("ua", workers=2)})
    kids = wait_children(fl, 2)
    for pid in [fl.pid, *kids]:
        ids = status_ids(pid)
        assert ids["Uid"] == [uid] * 4, f"pid {pid}: {ids}"
        assert ids["Gid"] == [gid] * 4, f"pid {pid}: {ids}"
        groups = [l for l in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if l.startswith("Groups:")][0].split()[1:]
        assert groups in ([], [str(gid)]), f"pid {pid} keeps supplementary groups {groups}"
        caps = {k: int(v, 16) for k, v in re.findall(r"^(Cap(?:Prm|Eff)):\s*(\S+)$",
                                                    Path(f"/proc/{pid}/status").read_text(),
                                                    re.M)}
        assert caps == {"CapPrm": 0, "CapEff": 0}, f"pid {pid} could become root again: {caps}"
    assert "running as user nobody" in fl.log()
    ids = add_messages(r, "ua", 50)
    fl.wait_for(lambda: all_read_and_acked(r, "ua", 50), what="work done as nobody")
    assert fl.stop() == 0
    assert sorted(handled_ids(fl)) == sorted(ids)


@needs_root
def test_started_as_root_without_user_and_allow_root_no_refuses_to_start(redis_server, fleet):
    fl = fleet({"fleet": {"allow_root": "no"}, "pool:a": pool("ub")}, wait_http=False)
    code = fl.wait(TIMEOUT)
    assert code != 0
    assert "refusing to run workers as root" in fl.log(), fl.log()
    assert not redis_server.client().exists("ub"), "no worker ever ran (it creates the group)"


@needs_root
def test_children_of_a_master_that_dropped_privileges_still_die_with_it(redis_server, fleet):
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup"},
                "pool:a": pool("uc", workers=3, block="5s")})
    wait_children(fl, 3)
    fl.children()
    fl.signal(signal.SIGKILL)
    t0 = time.monotonic()
    fl.wait(TIMEOUT)
    wait_until(lambda: not fl.surviving_children(), timeout=5 + TIMEOUT, interval=0.01,
               what="children to exit after their master (running as nobody) died")
    assert time.monotonic() - t0 <= 2.0 * SLOWNESS


@pytest.fixture
def root_dir():
    """A folder as systemd's RuntimeDirectory= makes it without User=: root's, mode 0755, on
    a path every user can traverse (pytest's own tmp_path is root-only)."""
    d = Path(tempfile.mkdtemp(prefix="sf-run-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@needs_root
def test_pidfile_is_removed_or_emptied_at_exit_after_the_privilege_drop(redis_server, fleet, root_dir):
    """The pidfile is written as root, before the drop, in a root-owned folder (the unit's
    RuntimeDirectory=streamfleet): the master, now nobody, cannot unlink it there, so it
    empties it through the descriptor it opened as root. Either way it names no process
    afterwards, and the next start is not refused."""
    pidfile = root_dir / "streamfleet.pid"
    cfg = {"fleet": {"user": "nobody", "group": "nogroup", "pidfile": str(pidfile)},
           "pool:a": pool("ud")}
    fl = fleet(cfg)
    assert pidfile.read_text() == f"{fl.pid}\n"
    assert fl.stop() == 0
    assert not pidfile.exists() or pidfile.read_text() == "", \
        f"pidfile left naming a process: {excerpt(fl.log(), 3)}"
    again = fleet(cfg)
    assert pidfile.read_text() == f"{again.pid}\n"
    assert again.stop() == 0


def test_pidfile_naming_a_live_process_that_is_not_streamfleet_is_taken_over(redis_server, fleet, tmp_path):
    """Liveness is the pidfile's lock, not its pid: a pid the kernel gave to another process
    (here pid 1) must not keep streamfleet from starting."""
    pidfile = tmp_path / "streamfleet.pid"
    pidfile.write_text("1\n")
    fl = fleet({"fleet": {"pidfile": str(pidfile)}, "pool:a": pool("pt")})
    assert pidfile.read_text() == f"{fl.pid}\n"
    assert fl.stop() == 0


@needs_root
def test_reload_after_the_privilege_drop_reads_a_config_readable_by_its_group(
        redis_server, fleet, root_dir):
    """SIGHUP re-reads the config after the master became nobody: a config of mode 0640
    owned by root and the fleet's group (it holds the Redis password) must do."""
    _, gid = nobody_ids()
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup"},
                "pool:a": pool("ue", workers=1)}, start=False)
    cfg = root_dir / "streamfleet.ini"
    shutil.copy(fl.config_path, cfg)
    os.chown(cfg, 0, gid)
    cfg.chmod(0o640)
    fl.config_path = cfg
    fl.start()
    wait_children(fl, 1)
    rewrite_config(fl, lambda c: c["pool:a"].update(workers="2"))
    os.chown(cfg, 0, gid)
    cfg.chmod(0o640)
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: "reload: done" in fl.log() or "keeping the running config" in fl.log(),
                what="the reload's outcome")
    assert "reload: done" in fl.log(), excerpt(fl.log(), 10)
    wait_children(fl, 2)


@needs_root
def test_sigusr1_after_the_privilege_drop_reopens_the_file_logrotate_created(
        redis_server, fleet, root_dir):
    """log_file in root's folder (the unit's LogsDirectory=): opened as root, handed to the
    user; logrotate moves it and creates the next one for the user (`create 0640 nobody
    nogroup`), then SIGUSR1: master and workers, now nobody, write to the new file."""
    uid, gid = nobody_ids()
    path = root_dir / "streamfleet.log"
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup", "log_file": str(path)},
                "pool:a": pool("ul", workers=2)})
    kids = wait_children(fl, 2)
    fl.wait_for(lambda: "running as user nobody" in path.read_text(), what="lines in the file")
    assert (path.stat().st_uid, path.stat().st_gid) == (uid, gid), "log file handed over"
    path.rename(root_dir / "streamfleet.log.1")
    path.touch(mode=0o640)
    os.chown(path, uid, gid)
    send_signal(fl, signal.SIGUSR1)
    fl.wait_for(lambda: all(os.readlink(f"/proc/{p}/fd/2") == str(path) for p in [fl.pid, *kids]),
                what="master and workers writing to the new file")
    fl.wait_for(lambda: "SIGUSR1: log file reopened" in path.read_text(), what="reopen line")


# --------------------------------------------------------------------------------------------
# logs
# --------------------------------------------------------------------------------------------

def test_log_file_gets_the_logs_and_sigusr1_reopens_it_after_a_rename(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"fleet": {"log_file": "streamfleet.log"}, "pool:a": pool("lf", workers=2)},
               start=False)
    path = fl.workdir / "streamfleet.log"
    rewrite_config(fl, lambda c: c["fleet"].update(log_file=str(path)))
    fl.start()
    kids = wait_children(fl, 2)
    fl.wait_for(lambda: "redis is up" in path.read_text(), what="master lines in the file")
    assert re.search(r"master: streamfleet \S+: 1 pools, 2 workers", path.read_text())
    assert not fl.log().strip(), f"stderr should be empty with log_file: {fl.log()[:500]}"

    rotated = path.with_name("streamfleet.log.1")
    path.rename(rotated)
    send_signal(fl, signal.SIGUSR1)

    def all_reopened():
        for pid in [fl.pid, *kids]:
            if os.readlink(f"/proc/{pid}/fd/2") != str(path):
                return False
        return os.stat(f"/proc/{fl.pid}/fd/2").st_ino == path.stat().st_ino
    fl.wait_for(all_reopened, what="master and workers writing to the new file (fd 2)")
    assert "SIGUSR1: log file reopened" in path.read_text()
    assert "SIGUSR1: log file reopened" not in rotated.read_text()
    # make every worker say something: the group vanishes, each re-creates it and says so
    old_size = rotated.stat().st_size
    r.xgroup_destroy("lf", "lf-group")
    fl.wait_for(lambda: all(lines_of_pid(path.read_text(), k) for k in kids),
                what="a line of each worker in the new file")
    assert rotated.stat().st_size == old_size, "nothing more goes to the renamed file"
    assert live_children(fl.pid) == kids


def test_json_log_lines_parse_and_a_stats_line_per_pool_comes_every_stats_interval(
        redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"fleet": {"log_format": "json", "log_level": "debug", "stats_interval": "1s"},
                "pool:a": pool("ja", workers=2), "pool:b": pool("jb", workers=1)})
    kids = wait_children(fl, 3)
    add_messages(r, "ja", 30)
    fl.wait_for(lambda: all_read_and_acked(r, "ja", 30), what="30 handled")

    def stats(pool_name):
        return [json.loads(l) for l in fl.log().splitlines()
                if f'"msg":"stats pool={pool_name} ' in l]
    fl.wait_for(lambda: len(stats("a")) >= 2 and len(stats("b")) >= 2,
                what="two stats lines per pool")
    fl.wait_for(lambda: "read=30 acked=30" in stats("a")[-1]["msg"], what="stats counting 30")
    line = stats("a")[-1]["msg"]
    for key in ("read", "acked", "failed", "retried", "dead_lettered", "duplicates", "rate"):
        assert re.search(rf"\b{key}=", line), f"{key} missing from stats line {line!r}"
    t = [time.mktime(time.strptime(rec["ts"][:19], "%Y-%m-%dT%H:%M:%S")) for rec in stats("b")]
    assert all(0 <= b - a <= 3 for a, b in zip(t, t[1:])), f"stats every ~1 s: {t}"
    assert fl.stop() == 0
    worker_lines = 0
    for line in fl.log().splitlines():
        rec = json.loads(line)      # every line is one JSON object
        for key in ("ts", "level", "pid", "msg"):
            assert key in rec, f"{key} missing: {line}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", rec["ts"]), line
        assert rec["level"] in ("debug", "info", "warn", "error"), line
        if rec["pid"] != fl.pid:
            assert rec["pool"] in ("a", "b") and isinstance(rec["slot"], int), line
            worker_lines += 1
        else:
            assert "pool" not in rec and "slot" not in rec, line
    assert worker_lines >= len(kids)


# --------------------------------------------------------------------------------------------
# systemd
# --------------------------------------------------------------------------------------------

def test_sd_notify_says_ready_reloading_ready_and_stopping(redis_server, fleet):
    ns = NotifySocket()
    try:
        fl = fleet({"pool:a": pool("na", workers=2)}, env={"NOTIFY_SOCKET": ns.path})
        wait_until(lambda: "READY=1" in ns.texts(), what="READY=1")
        wait_children(fl, 2)
        send_signal(fl, signal.SIGHUP)
        wait_until(lambda: ns.texts().count("READY=1") == 2, what="READY=1 after the reload")
        fl.signal(signal.SIGTERM)
        assert fl.wait(TIMEOUT) == 0
        wait_until(lambda: any(assignments(t).get("STOPPING") == "1" for t in ns.texts()),
                   what="STOPPING=1")
        msgs = [assignments(t) for t in ns.texts()]
        kinds = [next(iter(m)) for m in msgs]
        assert kinds == ["READY", "RELOADING", "READY", "STOPPING"], ns.texts()
        reloading = msgs[1]
        assert reloading["RELOADING"] == "1"
        usec = int(reloading["MONOTONIC_USEC"])
        assert abs(usec / 1e6 - time.monotonic()) < 60, "MONOTONIC_USEC is CLOCK_MONOTONIC"
        assert {pid for pid in ns.senders() if pid} <= {fl.pid}, "only the master notifies"
    finally:
        ns.close()


def test_make_install_puts_binary_unit_and_example_config_under_destdir(tmp_path):
    dest = tmp_path / "root"
    r = subprocess.run(["make", "--no-print-directory", "install", f"DESTDIR={dest}",
                        "PREFIX=/usr"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    binary = dest / "usr/bin/streamfleet"
    unit = dest / "usr/lib/systemd/system/streamfleet.service"
    example = dest / "etc/streamfleet/streamfleet.ini.example"
    for f, mode in ((binary, 0o755), (unit, 0o644), (example, 0o644)):
        assert f.is_file(), f"{f} not installed"
        assert f.stat().st_mode & 0o777 == mode, f"{f}: mode {oct(f.stat().st_mode)}"
    v = subprocess.run([str(binary), "-V"], capture_output=True, text=True, timeout=30)
    assert v.returncode == 0 and v.stdout.startswith("streamfleet ")
    t = subprocess.run([str(binary), "-t", "-c", str(example)], capture_output=True, text=True,
                       timeout=30)
    assert t.returncode == 0, t.stdout + t.stderr

    text = unit.read_text()
    keys = collections.defaultdict(list)
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, _, v = line.partition("=")
            keys[k.strip()].append(v.strip())
    assert keys["Type"] == ["notify"]
    assert keys["ExecStart"] == ["/usr/bin/streamfleet -c /etc/streamfleet/streamfleet.ini"]
    assert any("kill -HUP $MAINPID" in v for v in keys["ExecReload"]), keys["ExecReload"]
    assert keys["KillMode"] == ["mixed"]
    assert keys["NoNewPrivileges"] == ["yes"] and keys["ProtectSystem"] == ["strict"]
    drain = read_ini(example)["fleet"].get("drain_timeout", "30s").split()[0]
    assert drain.endswith("s"), drain
    assert int(keys["TimeoutStopSec"][0]) > int(drain[:-1])

    # systemd-analyze verify, on this host, with the installed paths pointing into DESTDIR;
    # only where it can verify a trivial unit at all (a container may lack what it needs)
    vdir = tmp_path / "verify"
    vdir.mkdir()
    (vdir / "sf-probe.service").write_text("[Service]\nType=oneshot\nExecStart=/bin/true\n")
    (vdir / "streamfleet.service").write_text(
        text.replace("/usr/bin/streamfleet", str(binary))
            .replace("/etc/streamfleet/", f"{dest}/etc/streamfleet/"))

    def verify(name):
        return subprocess.run(["systemd-analyze", "verify", "--man=no", str(vdir / name)],
                              capture_output=True, text=True, timeout=60)
    if shutil.which("systemd-analyze") and verify("sf-probe.service").returncode == 0:
        v = verify("streamfleet.service")
        assert v.returncode == 0 and "streamfleet.service" not in v.stderr, v.stderr


# --------------------------------------------------------------------------------------------
# fd hygiene and consumer hygiene [41, 46]
# --------------------------------------------------------------------------------------------

def test_50_child_kills_leave_the_masters_fds_flat_and_one_consumer_per_slot(redis_server,
                                                                            fleet):
    """Children that lived over 5 s are killed (a quicker death would, rightly, slow their
    restart), 50 times: the master's fds are what they were and XINFO CONSUMERS lists one
    consumer per slot."""
    r = redis_server.client()
    workers = 10
    fl = fleet({"pool:a": pool("fd", workers=workers)})
    wait_children(fl, workers)
    fl.wait_for(lambda: consumers_of(r, "fd", "a") == list(range(workers)), what="consumers")
    fl.wait_healthy()
    baseline = master_fds(fl)
    born = {}
    kills = 0
    deadline = time.monotonic() + 4 * BIG_TIMEOUT
    while kills < 50:
        assert time.monotonic() < deadline, f"only {kills} kills done\n{excerpt(fl.log())}"
        now = time.monotonic()
        kids = live_children(fl.pid)
        for pid in kids:
            born.setdefault(pid, now)
        for pid in kids:
            if kills < 50 and now - born[pid] > 5.5:
                kill_quietly(pid)
                kills += 1
                del born[pid]
        time.sleep(0.1)
    wait_children(fl, workers)
    fl.wait_for(lambda: restarts(fl.metrics(), "a") == 50, what="50 restarts counted")
    fl.wait_healthy()
    assert not zombie_children(fl.pid)
    assert_master_fds_back_to(fl, baseline)
    assert consumers_of(r, "fd", "a") == list(range(workers))
    assert consumer_names(r, "fd", "fd-group") == [f"{HOST}:a:{i}" for i in range(workers)]
