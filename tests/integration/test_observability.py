"""What an operator sees (issue 6): every metric with real values after a real run, /health and
/livez, the endpoint under hostile clients, and the Prometheus and Grafana examples in etc/.

A real redis-server, a real HTTP sink, the real binary; one behaviour per test. The figures
measured here (scrape times with 64 children and under attack) are printed and kept in
tests/artifacts/observability-figures.json."""
import http.client
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import pytest

from conftest import (REPO, SLOWNESS, Fleet, add_messages, group_info, sanitizer_reports,
                      wait_until, write_ini)

BIG_TIMEOUT = 120 * SLOWNESS
ARTIFACTS = REPO / "tests" / "artifacts"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None,
                                    reason="promtool not installed (Debian package prometheus)")


def pool(stream, workers=2, handler="noop", **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": workers, "batch": 20,
            "block": "200ms", "handler": handler, **extra}


def http_pool(sink, stream, path, workers=2, **extra):
    extra.setdefault("backoff_base", "100ms")
    extra.setdefault("backoff_max", "300ms")
    return pool(stream, workers=workers, handler="http", url=sink.url + path, **extra)


def record_figure(name, value):
    """Keep a measured figure in tests/artifacts/observability-figures.json (and print it)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / "observability-figures.json"
    try:
        figures = json.loads(path.read_text())
    except (OSError, ValueError):
        figures = {}
    figures[name] = value
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")
    print(f"figure {name}: {value}")


def pool_children(fl, name):
    """Live children of pool name (a worker names itself sf:POOL)."""
    out = []
    for pid in fl.children():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == f"sf:{name}"[:15]:
                out.append(pid)
        except OSError:
            pass
    return out


def histogram(m, name, **labels):
    """({le: cumulative count}, count, sum) of one histogram series."""
    buckets = {lbl["le"]: v for lbl, v in m.series(name + "_bucket", **labels)}
    return buckets, m.value(name + "_count", **labels), m.value(name + "_sum", **labels)


def timed_get(port, path="/metrics", host="127.0.0.1", timeout=5, headers=None):
    """(seconds, status, body) of one GET on a new connection."""
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        body = r.read()
        return time.perf_counter() - t0, r.status, body
    finally:
        c.close()


def median_scrape(port, n=9, path="/metrics"):
    times = []
    for _ in range(n):
        dt, status, _ = timed_get(port, path)
        assert status == 200
        times.append(dt)
    return statistics.median(times), times


def raw_request(port, data, read_timeout=5.0, host="127.0.0.1"):
    """Send raw bytes; return what came back before the peer closed or went quiet."""
    s = socket.create_connection((host, port), timeout=read_timeout)
    got = b""
    try:
        try:
            s.sendall(data)
        except OSError:
            pass        # closed on us mid-request: what comes back says why
        while True:
            try:
                chunk = s.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
            if b"\r\n\r\n" in got and b"Content-Length" in got:
                head, _, body = got.partition(b"\r\n\r\n")
                n = int(re.search(rb"Content-Length: (\d+)", head, re.I).group(1))
                if len(body) >= n:
                    break
    finally:
        s.close()
    return got


# --------------------------------------------------------------------------------------------
# metrics with real values
# --------------------------------------------------------------------------------------------

def test_every_outcome_is_counted_after_a_real_http_run(redis_server, sink, fleet):
    """20 good (200), 3 refused (422: dead-lettered at once), 4 flaky (503 once, then 200:
    retried), 2 doomed (500 always: dead-lettered after max_attempts 3), 2 malformed (no field
    for the URL: bad_message). The counters, the dead-letter reasons, the HTTP codes and the
    three histograms must all say exactly that."""
    r = redis_server.client()
    sink.rule(422, path="/hooks/refused")
    sink.rule(503, path="/hooks/flaky", times=4)
    sink.rule(500, path="/hooks/doomed")
    kinds = ["good"] * 20 + ["refused"] * 3 + ["flaky"] * 4 + ["doomed"] * 2
    add_messages(r, "hooks", len(kinds), fields=lambda i: {"kind": kinds[i], "n": str(i)})
    add_messages(r, "hooks", 2, fields={"no_kind": "x"})
    fl = fleet({"pool:hooks": http_pool(sink, "hooks", "/hooks/{kind}", max_attempts=3,
                                        backoff_jitter="0%")})

    def done():
        m = fl.metrics()
        return (m.value("streamfleet_dlq_length", pool="hooks") == 7
                and m.value("streamfleet_group_pending", pool="hooks") == 0
                and m.value("streamfleet_messages_acked_total", pool="hooks") == 24 and m)
    m = fl.wait_for(done, timeout=BIG_TIMEOUT, what="every message acked or dead-lettered")
    reqs = sink.snapshot()
    by_code = {}
    for q in reqs:
        by_code[q.status] = by_code.get(q.status, 0) + 1
    assert by_code == {200: 24, 422: 3, 503: 4, 500: 6}, by_code

    v = lambda name, **kw: m.value(name, pool="hooks", **kw)  # noqa: E731
    read = len(reqs) + 2                                     # every attempt, and the 2 malformed
    assert v("streamfleet_messages_read_total") == read == 39
    assert v("streamfleet_messages_acked_total") == 24
    assert v("streamfleet_messages_failed_total") == 3 + 4 + 6 + 2
    assert v("streamfleet_messages_retried_total") == 4 + 2 * 2
    assert v("streamfleet_messages_bad_total") == 2
    assert v("streamfleet_messages_dead_lettered_total", reason="http_422") == 3
    assert v("streamfleet_messages_dead_lettered_total", reason="max_attempts") == 2
    assert v("streamfleet_messages_dead_lettered_total", reason="bad_message") == 2
    assert m.sum("streamfleet_messages_dead_lettered_total", pool="hooks") == 7
    for code, n in (("200", 24), ("422", 3), ("503", 4), ("500", 6)):
        assert v("streamfleet_http_requests_total", code=code) == n, code
    for name in ("streamfleet_messages_duplicate_total", "streamfleet_messages_vanished_total",
                 "streamfleet_messages_reclaimed_total", "streamfleet_dlq_failures_total"):
        assert v(name) == 0, name

    # Histograms: the age and the handler's time of every message handed to the handler (a
    # bad_message, decided before any work, counts with a duration of 0); one HTTP attempt each.
    for name, count in (("streamfleet_message_age_seconds", read),
                        ("streamfleet_handler_duration_seconds", read),
                        ("streamfleet_http_request_duration_seconds", len(reqs))):
        buckets, n, total = histogram(m, name, pool="hooks")
        assert n == count and buckets["+Inf"] == count, (name, n, buckets)
        values = [buckets[k] for k in sorted(buckets, key=lambda x: float(x))]
        assert values == sorted(values), f"{name}: buckets not cumulative: {buckets}"
        assert total > 0, name
    # the retried attempts waited out a backoff: some message ages reach 0.1 s and more
    age, _, _ = histogram(m, "streamfleet_message_age_seconds", pool="hooks")
    assert age["0.05"] < read, age

    # From the master's Redis poll
    assert v("streamfleet_stream_length") == 31
    assert v("streamfleet_group_pending") == 0 and v("streamfleet_group_lag") == 0
    assert v("streamfleet_oldest_pending_age_seconds") == 0
    assert m.value("streamfleet_redis_up") == 1 and m.value("streamfleet_redis_durable") == 1
    assert v("streamfleet_inflight") == 0 and v("streamfleet_circuit_open") == 0


def test_workers_inflight_reloads_and_restart_reasons(redis_server, sink, fleet):
    r = redis_server.client()
    sink.delay = 1.5
    fl = fleet({"pool:slow": http_pool(sink, "slow", "/x", workers=2, inflight=4),
                "pool:rec": pool("rec", workers=1, batch=1, max_messages=10)})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_workers", pool="slow", state="running") == 2)
    m = fl.metrics()
    for p, n in (("slow", 2), ("rec", 1)):
        assert m.value("streamfleet_workers", pool=p, state="running") == n
        assert m.value("streamfleet_workers", pool=p, state="starting") == 0
        assert m.value("streamfleet_workers", pool=p, state="draining") == 0
        assert m.value("streamfleet_workers_expected", pool=p) == n
        for reason in ("exit", "signal", "heartbeat", "memory", "recycle"):
            assert m.value("streamfleet_worker_restarts_total", pool=p, reason=reason) == 0
    assert m.value("streamfleet_reloads_total", result="ok") == 0
    assert m.value("streamfleet_reloads_total", result="failed") == 0

    # in flight: 8 slow deliveries at once (2 workers x inflight 4)
    add_messages(r, "slow", 8)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_inflight", pool="slow") == 8, what="inflight 8")

    # recycle: 30 messages through a worker replaced every 10
    add_messages(r, "rec", 30)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_worker_restarts_total", pool="rec",
                                           reason="recycle") == 3, what="3 recycles")
    # signal: a worker killed (the one started after the last recycle, once it runs: killing
    # one that is recycling itself, or finding none between two, would test nothing)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_workers", pool="rec", state="running") == 1
                and len(pool_children(fl, "rec")) == 1, what="the fourth worker running")
    os.kill(pool_children(fl, "rec")[0], signal.SIGKILL)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_worker_restarts_total", pool="rec",
                                           reason="signal") == 1, what="restart reason signal")

    # reload: a changed pool drains its old generation while the new one starts
    add_messages(r, "slow", 8)
    text = fl.config_path.read_text().replace("inflight = 4", "inflight = 3")
    fl.config_path.write_text(text)
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_workers", pool="slow", state="draining") > 0,
                what="draining workers of the old generation")
    fl.wait_for(lambda: fl.metrics().value("streamfleet_reloads_total", result="ok") == 1)
    fl.config_path.write_text(text + "\n[pool:broken\n")
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_reloads_total", result="failed") == 1)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_workers", pool="slow", state="draining") == 0
                and fl.metrics().value("streamfleet_workers", pool="slow", state="running") == 2,
                what="the old generation gone")


def test_histograms_and_counters_survive_a_childs_replacement(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:a": pool("sa", workers=2)})
    add_messages(r, "sa", 200)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_messages_acked_total", pool="a") == 200)
    names = ("streamfleet_handler_duration_seconds", "streamfleet_message_age_seconds")
    before = {n: histogram(fl.metrics(), n, pool="a") for n in names}
    assert all(before[n][1] == 200 for n in names), before
    for victim in fl.children():
        os.kill(victim, signal.SIGKILL)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_worker_restarts_total", pool="a", reason="signal") == 2
                and fl.metrics().value("streamfleet_workers", pool="a", state="running") == 2)
    after = {n: histogram(fl.metrics(), n, pool="a") for n in names}
    assert after == before, "a histogram changed when its children were replaced"
    add_messages(r, "sa", 50)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_messages_acked_total", pool="a") == 250)
    m = fl.metrics()
    for n in names:
        buckets, count, total = histogram(m, n, pool="a")
        assert count == 250 and total >= before[n][2]
        assert all(buckets[le] >= v for le, v in before[n][0].items()), n


def test_redis_gauges_say_what_redis_says(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(200, path="/slow", delay=30)
    fl = fleet({"pool:q": pool("q", workers=1),
                "pool:slow": http_pool(sink, "slow", "/slow", workers=1, inflight=1, batch=1,
                                       timeout="60s")})
    add_messages(r, "q", 50)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_messages_acked_total", pool="q") == 50)
    # pending, and how old: entries a stranger takes (in the same transaction that adds them,
    # before the pool's worker can) and never acknowledges
    p = r.pipeline(transaction=True)
    for i in range(3):
        p.xadd("q", {"n": str(i)})
    p.xreadgroup("q-group", "stranger", {"q": ">"}, count=3)
    assert len(p.execute()[-1][0][1]) == 3
    r.xadd("q:dlq", {"dlq.reason": "test"})
    r.xadd("q:dlq", {"dlq.reason": "test"})
    add_messages(r, "slow", 12)          # one in flight for 30 s, 11 waiting: lag

    seen = {}

    def agree():
        m = fl.metrics()
        g = group_info(r, "slow", "slow-group")
        got = {(name, p): m.value(f"streamfleet_{name}", pool=p) for name, p in (
            ("stream_length", "q"), ("group_pending", "q"), ("dlq_length", "q"), ("group_lag", "q"),
            ("group_lag", "slow"), ("group_pending", "slow"), ("stream_length", "slow"))}
        want = {"stream_length": 53, "group_pending": 3, "dlq_length": 2, "group_lag": 0}
        ok = all(got[(k, "q")] == v for k, v in want.items() if (k, "q") in got)
        seen.update(got=got, redis_lag=g["lag"], redis_pending_slow=g["pending"])
        return (ok and r.xlen("q") == 53
                and got[("group_lag", "slow")] == g["lag"] == 11
                and got[("group_pending", "slow")] == g["pending"] == 1
                and got[("stream_length", "slow")] == 12
                and m.value("streamfleet_oldest_pending_age_seconds", pool="q") >= 1.0 and m)
    try:
        m = fl.wait_for(agree, what="the Redis gauges to agree with Redis")
    except AssertionError as e:
        raise AssertionError(f"{seen}\n{e}") from None
    age = m.value("streamfleet_oldest_pending_age_seconds", pool="q")
    time.sleep(2)
    later = fl.metrics().value("streamfleet_oldest_pending_age_seconds", pool="q")
    assert later > age, "the oldest pending entry gets older"
    h = fl.health()[1]["pools"]
    assert h["q"]["pending"] == 3 and h["slow"]["lag"] == 11 and h["q"]["oldest_pending_age"] >= 1
    sink.refuse()       # ends the 30 s request, so that the drain at the end is quick


def test_redis_up_durable_build_info_start_time_and_memory(redis_factory, fleet):
    t0 = time.time()
    volatile = redis_factory(appendonly=False)
    fl = fleet({"pool:a": pool("sa", workers=2)}, redis=volatile.url)
    t1 = time.time()
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_durable") == 0, what="durable 0")
    m = fl.wait_for(lambda: (lambda m: m.value("streamfleet_workers_resident_memory_bytes", pool="a") > 0 and m)(
        fl.metrics()), what="the workers' memory")
    assert m.value("streamfleet_redis_up") == 1
    assert m.value("streamfleet_build_info", version="0.1.0") == 1
    assert t0 - 1 <= m.value("process_start_time_seconds") <= t1 + 1
    assert m.value("streamfleet_master_resident_memory_bytes") > 1 << 20
    # two workers, each a few MiB at least, never more than the machine has
    rss = m.value("streamfleet_workers_resident_memory_bytes", pool="a")
    assert 2 << 20 < rss < os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    status, body = fl.health()
    assert body["redis"]["durable"] is False and "appendonly is no" in body["redis"]["durability"]
    volatile.stop()
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_up") == 0, what="redis_up 0")


@needs_promtool
def test_metrics_after_a_real_run_pass_promtool_check_metrics(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(422, path="/e/bad")
    fl = fleet({"pool:e": http_pool(sink, "e", "/e/{k}"), "pool:n": pool("n")})
    add_messages(r, "e", 30, fields=lambda i: {"k": "bad" if i % 10 == 0 else "ok"})
    add_messages(r, "n", 30)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_dlq_length", pool="e") == 3
                and fl.metrics().value("streamfleet_messages_acked_total", pool="n") == 30)
    status, headers, body = fl.http_get("/metrics")
    assert headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    res = subprocess.run([PROMTOOL, "check", "metrics"], input=body, capture_output=True)
    assert res.returncode == 0 and not res.stdout.strip() and not res.stderr.strip(), \
        (res.stdout + res.stderr).decode()


# --------------------------------------------------------------------------------------------
# /health and /livez
# --------------------------------------------------------------------------------------------

def test_health_json_per_pool_and_one_pool(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa", workers=2), "pool:b": pool("sb", workers=1)})
    # Both groups must exist when Redis is polled (the workers create them) before lag is known.
    status, body = fl.wait_for(lambda: (lambda h: h[0] == 200 and all(
        h[1]["pools"][p].get("lag") is not None for p in ("a", "b")) and h)(fl.health()),
        what="/health 200 with the Redis figures")
    assert body["status"] == "ok" and body["redis"] == {"up": True, "durable": True}, body
    a = body["pools"]["a"]
    assert a["workers"] == 2 and a["expected"] == 2 and a["restarts"] == 0
    assert a["restarts_per_min"] == 0 and a["crash_loop"] is False
    assert a["pending"] == 0 and a["lag"] == 0 and a["oldest_pending_age"] is None
    status, _, raw = fl.http_get("/health?pool=b")
    one = json.loads(raw)
    assert status == 200 and list(one["pools"]) == ["b"] and one["pools"]["b"]["expected"] == 1
    status, _, raw = fl.http_get("/health?pool=nope")
    assert status == 404 and json.loads(raw)["pool"] == "nope"


def test_health_is_503_over_max_lag_and_max_pending_age_then_200(redis_server, sink, fleet):
    r = redis_server.client()
    rule = sink.rule(200, path="/slow", delay=2)
    fl = fleet({"pool:lagging": http_pool(sink, "lagging", "/slow", workers=1, inflight=1, batch=1,
                                          max_lag=5),
                "pool:old": http_pool(sink, "old", "/slow", workers=1, inflight=1, batch=1,
                                      max_pending_age="1s"),
                "pool:fine": pool("fine", workers=1)})
    fl.wait_healthy()
    add_messages(r, "lagging", 12)
    add_messages(r, "old", 3)          # one at a time, 2 s each: pending for 6 s

    def degraded():
        status, body = fl.health()
        why = body.get("reason", "")
        return status == 503 and "lag" in why and "pending" in why and body
    body = fl.wait_for(degraded, what="/health 503 for lag and pending age")
    assert re.search(r"pool lagging: lag \d+ over max_lag 5", body["reason"]), body
    assert re.search(r"pool old: oldest pending entry \d+ s old, over max_pending_age 1 s",
                     body["reason"]), body
    assert body["pools"]["lagging"]["status"] == "degraded" and body["pools"]["fine"]["status"] == "ok"
    assert fl.http_get("/health?pool=fine")[0] == 200
    assert fl.http_get("/health?pool=lagging")[0] == 503
    rule.delay = 0
    fl.wait_healthy(timeout=BIG_TIMEOUT)


def test_livez_is_200_while_redis_is_down_and_health_503(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa")})
    fl.wait_healthy()
    redis_server.stop()
    fl.wait_for(lambda: fl.health()[0] == 503, what="/health 503")
    status, headers, body = fl.http_get("/livez")
    assert status == 200 and body == b"ok\n"
    assert "redis unreachable" in fl.health()[1]["reason"]


# --------------------------------------------------------------------------------------------
# the endpoint: defaults, token, methods, hostile clients
# --------------------------------------------------------------------------------------------

def test_endpoint_binds_loopback_by_default(redis_server, tmp_path):
    """No `listen` key: 127.0.0.1:9100, never every address."""
    probe = socket.socket()
    try:
        probe.bind(("0.0.0.0", 9100))
    except OSError:
        pytest.skip("port 9100 is taken here")
    finally:
        probe.close()
    cfg = write_ini(tmp_path / "sf.ini", {"fleet": {"redis": redis_server.url, "allow_root": "yes",
                                                    "drain_timeout": "5s"},
                                          "pool:a": pool("sa", workers=1)})
    fl = Fleet(cfg, tmp_path, 9100)
    try:
        fl.start()
        listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                     if line.split()[3] == "0A" and line.split()[1].endswith(":238C")]
        assert listening == ["0100007F:238C"], listening
    finally:
        assert fl.stop() == 0
        assert not sanitizer_reports(fl.log()), fl.log()


def test_token_is_required_everywhere_but_livez(redis_server, fleet, tmp_path):
    token = tmp_path / "token"
    token.write_text("0123456789abcdef-token\n")
    fl = fleet({"fleet": {"listen_token_file": str(token)}, "pool:a": pool("sa")})
    right = {"Authorization": "Bearer 0123456789abcdef-token"}
    for path in ("/metrics", "/health", "/status.json", "/"):
        status, headers, _ = fl.http_get(path)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer"), path
        for wrong in ("Bearer 0123456789abcdef-tokeN", "Bearer 0123456789abcdef-token-and-more",
                      "Bearer ", "Basic MDEyMzQ1Njc4OWFiY2RlZi10b2tlbg==", "0123456789abcdef-token"):
            assert fl.http_get(path, headers={"Authorization": wrong})[0] == 401, (path, wrong)
        fl.wait_for(lambda: fl.http_get(path, headers=right)[0] in (200, 503), what=path)
    assert fl.http_get("/metrics", headers=right)[0] == 200
    status, _, body = fl.http_get("/livez")
    assert (status, body) == (200, b"ok\n")
    assert "0123456789abcdef" not in fl.log()


def test_unknown_paths_are_404_and_other_methods_405(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa")})
    for path in ("/nope", "/metrics/x", "/status", "/status.json/", "/index.html"):
        assert fl.http_get(path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        c = http.client.HTTPConnection("127.0.0.1", fl.port, timeout=5)
        try:
            c.request(method, "/metrics", body=b"x=1" if method != "DELETE" else None)
            resp = c.getresponse()
            resp.read()
            assert resp.status == 405, method
            assert resp.getheader("Allow") == "GET, HEAD"
        finally:
            c.close()
    c = http.client.HTTPConnection("127.0.0.1", fl.port, timeout=5)
    c.request("HEAD", "/metrics")
    resp = c.getresponse()
    assert resp.status == 200 and resp.read() == b""
    c.close()


def test_a_64k_header_is_refused_and_the_master_goes_on(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa")})
    fl.wait_healthy()
    for size in (64 * 1024, 256 * 1024):
        got = raw_request(fl.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size
                          + b"\r\n\r\n")
        status = int(got.split(b" ", 2)[1]) if got.startswith(b"HTTP/1.") else None
        assert status is None or 400 <= status < 500, got[:200]
        record_figure(f"header_{size // 1024}k_answer", status or "closed")
    got = raw_request(fl.port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + b"X-Many: y\r\n" * 8000 + b"\r\n")
    assert not got or 400 <= int(got.split(b" ", 2)[1]) < 500, got[:200]
    assert fl.alive()
    fl.wait_healthy(timeout=10)


class Attack:
    """1,000 idle connections from 127.0.0.2 (most refused or closed by the per-IP limit of
    64: that is the point), and slowloris clients on 127.0.0.3 that send one header byte every
    half second and never finish. Runs in a thread until stop()."""

    def __init__(self, port, idle=1000, slow=8):
        self.port, self.idle, self.slow = port, idle, slow
        self.socks, self.slow_socks = [], []
        self.opened = self.failed = 0
        self.closed_by_server = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="attack", daemon=True)

    def start(self):
        self._thread.start()
        wait_until(lambda: self.opened + self.failed >= self.idle, 30 * SLOWNESS, what="1,000 connects")
        return self

    def _connect(self, src):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((src, 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", self.port))
        except BlockingIOError:
            pass
        except OSError:
            s.close()
            return None
        return s

    def _run(self):
        for i in range(self.slow):
            s = self._connect("127.0.0.3")
            if s:
                self.slow_socks.append(s)
        for _ in range(self.idle):
            s = self._connect("127.0.0.2")
            if s is None:
                self.failed += 1
            else:
                self.socks.append(s)
                self.opened += 1
        trickle = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"z" * 100000
        pos = 0
        while not self._stop.wait(0.5):
            for s in self.slow_socks:
                try:
                    s.send(trickle[pos:pos + 1])
                except OSError:
                    pass
            pos += 1

    def count_closed(self):
        n = 0
        for s in self.socks:
            try:
                if s.recv(1) == b"":
                    n += 1
            except BlockingIOError:
                pass
            except OSError:
                n += 1
        self.closed_by_server = n
        return n

    def stop(self):
        self._stop.set()
        self._thread.join(10)
        for s in self.socks + self.slow_socks:
            s.close()


def test_scrape_answers_fast_and_messages_flow_under_1000_idle_connections_and_slowloris(
        redis_server, fleet):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    r = redis_server.client()
    fl = fleet({"pool:a": pool("sa", workers=2)})
    fl.wait_healthy()
    quiet, _ = median_scrape(fl.port)

    attack = Attack(fl.port).start()
    try:
        time.sleep(1)
        under_attack, times = median_scrape(fl.port, n=9)
        # messages keep flowing meanwhile
        acked0 = fl.metrics().value("streamfleet_messages_acked_total", pool="a")
        add_messages(r, "sa", 500)
        fl.wait_for(lambda: fl.metrics().value("streamfleet_messages_acked_total", pool="a") == acked0 + 500,
                    what="500 messages acked under attack")
        health = timed_get(fl.port, "/health")
        livez = timed_get(fl.port, "/livez")
        # the slowloris clients are still there, trickling, 12 s later: past the 10 s timeout
        time.sleep(5)
        late, _ = median_scrape(fl.port, n=5)
        closed = attack.count_closed()
    finally:
        attack.stop()
    record_figure("scrape_median_ms_quiet", round(quiet * 1000, 2))
    record_figure("scrape_median_ms_under_1000_idle_and_slowloris", round(under_attack * 1000, 2))
    record_figure("scrape_median_ms_under_attack_later", round(late * 1000, 2))
    record_figure("attack_idle_connections_opened", attack.opened)
    record_figure("attack_idle_connections_closed_by_server", closed)
    assert under_attack < 0.100 and late < 0.100, times
    assert health[1] == 200 and livez[1] == 200
    assert closed >= attack.opened - 64, "the per-IP limit should have closed all but 64"
    assert fl.alive()
    fl.wait_healthy(timeout=10)


def test_slowloris_from_several_addresses_cannot_hold_every_connection(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa", workers=1)})
    fl.wait_healthy()
    socks = []
    try:
        for src in range(3, 8):                 # 5 addresses x 60 = 300 > 256 connections
            for _ in range(60):
                s = socket.create_connection(("127.0.0.1", fl.port), timeout=2,
                                             source_address=(f"127.0.0.{src}", 0))
                s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
                socks.append(s)
        for _ in range(12):                     # past the 10 s timeout, one byte a second
            for s in socks:
                try:
                    s.send(b"z")
                except OSError:
                    pass
            time.sleep(1)
        status = timed_get(fl.port, timeout=2)[1]
    finally:
        for s in socks:
            s.close()
    assert status == 200


def test_scrape_with_64_children_is_fast_even_with_redis_frozen(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:a": pool("sa", workers=32), "pool:b": pool("sb", workers=32)})
    fl.wait_for(lambda: fl.metrics().total("streamfleet_workers", state="running") == 64,
                timeout=BIG_TIMEOUT, what="64 running workers")
    add_messages(r, "sa", 2000)
    add_messages(r, "sb", 2000)
    fl.wait_for(lambda: fl.metrics().total("streamfleet_messages_acked_total") == 4000, timeout=BIG_TIMEOUT)
    timed_get(fl.port)                      # warm
    med, times = median_scrape(fl.port, n=21)
    status_med, _ = median_scrape(fl.port, n=11, path="/status.json")
    size = len(timed_get(fl.port)[2])
    redis_server.kill(signal.SIGSTOP)       # Redis frozen: the scrape must not wait for it
    try:
        frozen, _ = median_scrape(fl.port, n=11)
    finally:
        redis_server.kill(signal.SIGCONT)
    record_figure("scrape_median_ms_64_children", round(med * 1000, 2))
    record_figure("scrape_max_ms_64_children", round(max(times) * 1000, 2))
    record_figure("status_json_median_ms_64_children", round(status_med * 1000, 2))
    record_figure("scrape_median_ms_64_children_redis_frozen", round(frozen * 1000, 2))
    record_figure("metrics_bytes_2_pools", size)
    assert med < 0.100 and frozen < 0.100 and status_med < 0.100, (med, frozen, status_med)


# --------------------------------------------------------------------------------------------
# etc/prometheus and etc/grafana
# --------------------------------------------------------------------------------------------

ALERTS = REPO / "etc" / "prometheus" / "alerts.yml"
DASHBOARD = REPO / "etc" / "grafana" / "streamfleet.json"


@needs_promtool
def test_alert_rules_pass_promtool_check_rules():
    res = subprocess.run([PROMTOOL, "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    text = ALERTS.read_text()
    assert set(re.findall(r"alert: (\w+)", text)) == set(ALERT_NAMES)


ALERT_TESTS = """
rule_files: [{alerts}]
evaluation_interval: 15s
tests:
  - name: a fleet in trouble
    interval: 15s
    input_series:
      - {{series: 'up{{job="streamfleet",instance="a"}}', values: '1 1 0x60'}}
      - {{series: 'streamfleet_redis_up{{job="streamfleet",instance="a"}}', values: '1 1 0x60'}}
      - {{series: 'streamfleet_redis_durable{{job="streamfleet",instance="a"}}', values: '0x60'}}
      - {{series: 'streamfleet_group_lag{{job="streamfleet",instance="a",pool="p"}}', values: '0+100x60'}}
      - {{series: 'streamfleet_oldest_pending_age_seconds{{job="streamfleet",instance="a",pool="p"}}', values: '0+60x60'}}
      - {{series: 'streamfleet_messages_dead_lettered_total{{job="streamfleet",instance="a",pool="p",reason="http_422"}}', values: '0+1x60'}}
      - {{series: 'streamfleet_worker_restarts_total{{job="streamfleet",instance="a",pool="p",reason="exit"}}', values: '0+2x60'}}
      - {{series: 'streamfleet_workers{{job="streamfleet",instance="a",pool="p",state="running"}}', values: '1x60'}}
      - {{series: 'streamfleet_workers{{job="streamfleet",instance="a",pool="p",state="starting"}}', values: '0x60'}}
      - {{series: 'streamfleet_workers_expected{{job="streamfleet",instance="a",pool="p"}}', values: '4x60'}}
    alert_rule_test:
{fired}
  - name: a healthy fleet
    interval: 15s
    input_series:
      - {{series: 'up{{job="streamfleet",instance="a"}}', values: '1x60'}}
      - {{series: 'streamfleet_redis_up{{job="streamfleet",instance="a"}}', values: '1x60'}}
      - {{series: 'streamfleet_redis_durable{{job="streamfleet",instance="a"}}', values: '1x60'}}
      - {{series: 'streamfleet_group_lag{{job="streamfleet",instance="a",pool="p"}}', values: '5x60'}}
      - {{series: 'streamfleet_oldest_pending_age_seconds{{job="streamfleet",instance="a",pool="p"}}', values: '0.2x60'}}
      - {{series: 'streamfleet_messages_dead_lettered_total{{job="streamfleet",instance="a",pool="p",reason="http_422"}}', values: '3x60'}}
      - {{series: 'streamfleet_worker_restarts_total{{job="streamfleet",instance="a",pool="p",reason="exit"}}', values: '1x60'}}
      - {{series: 'streamfleet_workers{{job="streamfleet",instance="a",pool="p",state="running"}}', values: '4x60'}}
      - {{series: 'streamfleet_workers{{job="streamfleet",instance="a",pool="p",state="starting"}}', values: '0x60'}}
      - {{series: 'streamfleet_workers_expected{{job="streamfleet",instance="a",pool="p"}}', values: '4x60'}}
    alert_rule_test:
{quiet}
"""
ALERT_NAMES = {  # alert: (severity, labels beyond job and instance)
    "StreamfleetDown": ("critical", {}), "StreamfleetRedisDown": ("critical", {}),
    "StreamfleetPoolDegraded": ("critical", {"pool": "p"}),
    "StreamfleetCrashLoop": ("critical", {"pool": "p"}),
    "StreamfleetLagGrowing": ("warning", {"pool": "p"}),
    "StreamfleetMessagesStuck": ("warning", {"pool": "p"}),
    "StreamfleetDeadLettersRising": ("warning", {"pool": "p"}),
    "StreamfleetRedisNotDurable": ("warning", {}),
}


@needs_promtool
def test_alerts_fire_on_trouble_and_stay_quiet_on_a_healthy_fleet(tmp_path):
    tests = tmp_path / "alerts_test.yml"
    fired, quiet = [], []
    for name, (severity, extra) in ALERT_NAMES.items():
        labels = {"severity": severity, "job": "streamfleet", "instance": "a", **extra}
        fired.append("      - " + json.dumps({"eval_time": "14m", "alertname": name,
                                              "exp_alerts": [{"exp_labels": labels}]}))
        quiet.append("      - " + json.dumps({"eval_time": "14m", "alertname": name, "exp_alerts": []}))
    # the rules without their annotations (which promtool would compare too; check rules has
    # validated their templates)
    rules = tmp_path / "alerts.yml"
    rules.write_text(re.sub(r"(?m)^        annotations:\n(?:          .*\n)+", "", ALERTS.read_text()))
    assert "annotations:" not in rules.read_text()
    tests.write_text(ALERT_TESTS.format(alerts=json.dumps(str(rules)), fired="\n".join(fired),
                                        quiet="\n".join(quiet)))
    res = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def exported_metric_names(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(422, path="/e/bad")
    fl = fleet({"pool:e": http_pool(sink, "e", "/e/{k}"), "pool:n": pool("n")})
    add_messages(r, "e", 10, fields=lambda i: {"k": "bad" if i == 0 else "ok"})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_dlq_length", pool="e") == 1)
    return {name for name, _ in fl.metrics()}


def promql_metric_names(expr):
    """Metric names an expression reads (identifiers that are neither functions, keywords,
    label names nor inside quotes or brackets)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = set(re.findall(r"\b[a-zA-Z_:][a-zA-Z0-9_:]*\b(?!\s*\()", expr))
    keywords = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                "unless", "bool", "offset", "inf", "nan", "e"}
    return {w for w in words if w not in keywords and not re.fullmatch(r"\d+[smhdwy]?", w)}


def test_grafana_dashboard_reads_only_metrics_the_fleet_exports(redis_server, sink, fleet, tmp_path):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    exprs = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    exprs.append(t["expr"])
            walk(p.get("panels", []))
    walk(dash["panels"])
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            exprs.append(q["query"] if isinstance(q, dict) else q)
    assert len(exprs) >= 10, exprs

    exported = exported_metric_names(redis_server, sink, fleet) | {"up"}
    used = set()
    for e in exprs:
        e = re.sub(r"label_values\(([^,]+),\s*\w+\)", r"\1", e)
        used |= promql_metric_names(e.replace("$__rate_interval", "1m").replace("$__range", "1h")
                                    .replace("$pool", "x").replace("$job", "x").replace("$instance", "x"))
    unknown = used - exported
    assert not unknown, f"the dashboard reads metrics the fleet does not export: {sorted(unknown)}"
    assert len(used) >= 15, sorted(used)

    if PROMTOOL:
        # every expression is valid PromQL: promtool checks them as recording rules
        rules = {"groups": [{"name": "dashboard", "rules": [
            {"record": f"dashboard:expr{i}",
             "expr": re.sub(r"label_values\(([^,]+),\s*\w+\)", r"\1", e)
             .replace("$__rate_interval", "1m").replace("$__range", "1h")
             .replace("$pool", "x").replace("$job", "x").replace("$instance", "x")}
            for i, e in enumerate(exprs)]}]}
        path = tmp_path / "dashboard_rules.yml"
        path.write_text(json.dumps(rules))      # JSON is YAML
        res = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout + res.stderr
