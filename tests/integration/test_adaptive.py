"""Adaptive concurrency per destination (adaptive = yes): the fleet finds how many requests an
endpoint takes at once and keeps just under it, all workers of all pools together, through the
master's shared table; a worker killed while holding slots gives them back.

Each test drives the real binary against its own redis-server and a real HTTP server written
here: it answers 429 at once to a request that would make more than LIMIT in flight, else 200
after 20 to 50 ms, and counts what is in flight."""
import http.server
import json
import os
import random
import signal
import statistics
import threading
import time

import pytest

from conftest import SLOWNESS, TIMEOUT, add_messages, pending_count, wait_until
from reliability_helpers import http_pool, metric


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    sink = None

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        status, took = self.sink.serve(self.headers.get("webhook-id", ""))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.sink.leave(status, took)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256        # the listen backlog: 256 workers' connections at once


class LimitSink:
    """A real HTTP/1.1 server with a capacity: more than `limit` requests at once get 429."""

    def __init__(self, limit=20, delay=(0.02, 0.05), reject_delay=0):
        self.limit, self.delay, self.reject_delay = limit, delay, reject_delay
        self.lock = threading.Lock()
        self.cur = 0                    # requests in flight now
        self.refusing = 0               # ... of them being answered 429 (after reject_delay)
        self.ok = []                    # (monotonic time answered, webhook-id) of each 200
        self.rejected = 0
        self.service = []               # seconds each 200 took, entry to answer
        self.samples = []               # (monotonic time, in flight) every 10 ms
        handler = type("H", (_Handler,), {"sink": self})
        self.server = _Server(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                        threading.Thread(target=self._sample, daemon=True)]
        for t in self.threads:
            t.start()

    def serve(self, wid):
        t0 = time.monotonic()
        with self.lock:
            self.cur += 1
            over = self.cur - self.refusing > self.limit
            self.refusing += over
        if over:
            time.sleep(self.reject_delay)
            return 429, (t0, wid, None)
        time.sleep(random.uniform(*self.delay))
        return 200, (t0, wid, time.monotonic() - t0)

    def leave(self, status, took):
        t0, wid, secs = took
        with self.lock:
            self.cur -= 1
            self.refusing -= status != 200
            if status == 200:
                self.ok.append((time.monotonic(), wid))
                self.service.append(secs)
            else:
                self.rejected += 1

    def _sample(self):
        while not self.stopping.wait(0.01):
            with self.lock:
                self.samples.append((time.monotonic(), self.cur))

    def close(self):
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def limit_sink():
    made = []

    def make(**kw):
        s = LimitSink(**kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def dlq_len(r, stream):
    return r.xlen(f"{stream}:dlq") if r.exists(f"{stream}:dlq") else 0


def test_fleet_settles_just_under_the_endpoints_capacity_without_dead_letters(
        redis_server, limit_sink, fleet):
    """Two pools of one worker each, inflight 64 (128 at once without adaptation), share one
    endpoint that takes 20 at once: within 10 s the fleet keeps 20 +- 3 in flight, loses no
    message to the 429s, and delivers at least 90% of what the endpoint can take."""
    sink = limit_sink(limit=20)
    r = redis_server.client()
    per_stream = 9000
    for s in ("ada", "adb"):
        add_messages(r, s, per_stream, fields=lambda i: {"type": "x", "n": str(i)})
    pools = {f"pool:{s}": http_pool(sink, s, workers=1, batch=64, inflight=64, timeout="5s",
                                    max_attempts=5, backoff_base="500ms", backoff_max="2s")
             for s in ("ada", "adb")}
    started = time.monotonic()
    fl = fleet(pools)

    settle = 10.0 * SLOWNESS
    window = 8.0
    time.sleep(max(0.0, started + settle - time.monotonic()))
    w0 = time.monotonic()
    ok0 = len(sink.ok)
    time.sleep(window)
    w1 = time.monotonic()
    ok1 = len(sink.ok)
    m = fl.metrics()

    samples = [c for t, c in list(sink.samples) if w0 <= t <= w1]
    within = sum(1 for c in samples if 17 <= c <= 23) / len(samples)
    mean = statistics.mean(samples)
    service = statistics.mean(sink.service[-2000:])
    capacity = sink.limit / service
    rate = (ok1 - ok0) / (w1 - w0)
    limits = m.series("streamfleet_destination_concurrency_limit")
    decreases = m.sum("streamfleet_destination_decreases_total")
    print(f"\nsettled window {w1 - w0:.1f} s, {len(samples)} samples: in flight mean {mean:.1f}, "
          f"median {statistics.median(samples)}, min {min(samples)}, max {max(samples)}, "
          f"{within:.0%} within 20+-3; {rate:.0f} msg/s of a capacity of {capacity:.0f} "
          f"({rate / capacity:.0%}; service {service * 1000:.1f} ms); {sink.rejected} 429s; "
          f"limit {limits}, {decreases:.0f} decreases")
    assert 17 <= mean <= 23, f"mean in flight {mean:.1f}"
    assert within >= 0.9, f"only {within:.0%} of the samples within 20 +- 3"
    assert rate >= 0.9 * capacity, f"{rate:.0f} msg/s, capacity {capacity:.0f}"
    assert decreases >= 1
    ((labels, limit),) = limits
    assert labels["destination"] == sink.url
    assert 15 <= limit <= 25, limit

    # and every message arrives, none dead-lettered by the 429s
    wait_until(lambda: len({w for _, w in sink.ok}) >= 2 * per_stream,
               timeout=TIMEOUT * 3, what="every message delivered")
    fl.wait_for(lambda: pending_count(r, "ada", "ada-group") == 0
                and pending_count(r, "adb", "adb-group") == 0, what="pending 0")
    assert dlq_len(r, "ada") == 0 and dlq_len(r, "adb") == 0
    assert metric(fl, "streamfleet_messages_dead_lettered_total") == 0


def test_worker_killed_while_holding_slots_gives_them_back(redis_server, limit_sink, fleet):
    """A worker SIGKILLed with 8 requests out holds 8 of the destination's 16 slots: the
    master gives them back when it reaps it, so the fleet reaches 16 at once again (a leak
    would cap it at 8 for good) and the table shows nothing in flight at the end."""
    sink = limit_sink(limit=1000, delay=(1.0, 1.0))
    r = redis_server.client()
    add_messages(r, "ak", 120, fields=lambda i: {"type": "x", "n": str(i)})
    fl = fleet({"pool:ak": http_pool(sink, "ak", workers=2, batch=8, inflight=8, timeout="5s",
                                     claim_idle="20s")})
    fl.wait_for(lambda: sink.cur == 16, what="16 requests in flight (8 per worker)")
    assert metric(fl, "streamfleet_destination_inflight") == 16
    victim = fl.children()[0]
    os.kill(victim, signal.SIGKILL)
    fl.wait_for(lambda: len(fl.children()) == 2 and victim not in fl.children(),
                what="the worker replaced")
    # The sink still serves the dead worker's requests for up to a second: count from after
    # that. The replacement recovers its predecessor's 8 entries and the other worker goes on:
    # together 16 at once again.
    since = time.monotonic() + 1.2
    wait_until(lambda: max((c for t, c in list(sink.samples) if t > since), default=0) >= 16,
               timeout=TIMEOUT, what="16 in flight again after the kill")
    wait_until(lambda: len({w for _, w in sink.ok}) >= 120, timeout=TIMEOUT * 2,
               what="every message delivered")
    fl.wait_for(lambda: pending_count(r, "ak", "ak-group") == 0, what="pending 0")
    fl.wait_for(lambda: metric(fl, "streamfleet_destination_inflight") == 0,
                what="nothing in flight in the table")
    assert metric(fl, "streamfleet_destination_concurrency_limit") == 16
    status, _, raw = fl.http_get("/status.json")
    (dest,) = json.loads(raw)["destinations"]
    assert (dest["destination"], dest["limit"], dest["inflight"]) == (sink.url, 16, 0), dest


def test_retry_after_holds_every_worker_off_the_destination_without_costing_attempts(
        redis_server, sink, fleet):
    """One 429 with Retry-After: 3 to one worker: no worker of the fleet sends anything to
    that endpoint for 3 s, and the messages that came meanwhile go out once each afterwards
    (none was sent to be refused, so none lost an attempt)."""
    sink.rule(429, body_contains=b"limited", retry_after="3", times=1)
    r = redis_server.client()
    fl = fleet({"pool:ra": http_pool(sink, "ra", workers=2, batch=4, inflight=4,
                                     body_field="payload", backoff_base="100ms",
                                     backoff_jitter="0%", backoff_max="1h")})
    add_messages(r, "ra", 1, fields={"type": "x", "payload": "limited"})
    (first,) = sink.wait_count(1, timeout=TIMEOUT)
    assert first.status == 429

    def held_off():
        _, _, raw = fl.http_get("/status.json")
        return [d for d in json.loads(raw)["destinations"] if d["held_off"]]
    # the sink records a request before it answers: wait until the worker has the answer
    fl.wait_for(held_off, timeout=2.5, what="/status.json: the destination held off")
    others = add_messages(r, "ra", 20, fields=lambda i: {"type": "x", "payload": f"ok{i}"})
    sink.wait_count(22, timeout=TIMEOUT)
    fl.wait_for(lambda: pending_count(r, "ra", "ra-group") == 0, what="pending 0")
    reqs = sorted(sink.snapshot(), key=lambda q: q.time)
    gap = reqs[1].time - first.time
    print(f"\nRetry-After: 3 to one of 2 workers: the next request of the fleet {gap:.2f} s later")
    assert gap >= 2.9, f"a request {gap:.2f} s after the 429 with Retry-After: 3"
    sent = [q.headers["webhook-id"] for q in reqs[1:]]
    assert sorted(sent) == sorted(others + [first.headers["webhook-id"]]), "each sent once"
    assert all(q.status == 200 for q in reqs[1:])
    assert metric(fl, "streamfleet_messages_dead_lettered_total") == 0


def test_adaptive_no_leaves_each_worker_at_its_own_inflight(redis_server, limit_sink, fleet):
    """adaptive = no: the 429s lower nothing; each worker keeps up to inflight going. The 429s
    take as long as the 200s, so what is in flight is what the fleet sends (2 x 32), not only
    what the sink lets through."""
    sink = limit_sink(limit=10, delay=(0.2, 0.2), reject_delay=0.2)
    r = redis_server.client()
    add_messages(r, "an", 3000, fields=lambda i: {"type": "x", "n": str(i)})
    fl = fleet({"pool:an": http_pool(sink, "an", workers=2, batch=32, inflight=32,
                                     adaptive="no", max_attempts=1000, backoff_base="100ms",
                                     backoff_max="200ms")})
    wait_until(lambda: len(sink.ok) >= 200, timeout=TIMEOUT, what="200 delivered")
    busy = [c for _, c in list(sink.samples)[-100:]]
    print(f"\nadaptive = no: in flight up to {max(busy)} against a limit of 10, "
          f"{sink.rejected} 429s")
    assert max(busy) >= 20, "the fleet did not back off"
    status, _, raw = fl.http_get("/status.json")
    assert json.loads(raw)["destinations"] == []
    assert fl.metrics().series("streamfleet_destination_concurrency_limit") == []
