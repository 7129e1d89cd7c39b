"""workers = MIN..MAX (issue 14, part 4): the master adds a worker while the pool's oldest
pending entry waits longer than scale_up_after (one per scale_interval, up to the maximum), and
retires one per scale_interval, down to the minimum, once nothing has waited that long for
scale_down_after. Real redis-server, real sink, real binary."""
import signal
import time

from conftest import SLOWNESS, add_messages, pending_count, run_binary, write_ini
from reliability_helpers import http_pool, metric

DESIRED = "streamfleet_workers_desired"


def running(fl, pool):
    return fl.metrics().value("streamfleet_workers", pool=pool, state="running")


def test_a_burst_scales_the_pool_up_to_its_maximum_and_back_down_to_its_minimum(redis_server, sink, fleet):
    """50,000 messages at once to a sink answering in 10 ms, 4 in flight per worker: the pool
    grows from 2 towards 6 workers while entries wait, delivers every message, and falls back
    to 2 once the backlog is gone."""
    c = redis_server.client()
    stream, total = "burst", 50000
    sink.delay = 0.01
    pool = http_pool(sink, stream, path="/in", workers="2..6", inflight=4, batch=20,
                     scale_up_after="1s", scale_interval="1s", scale_down_after="3s")
    fl = fleet({"fleet": {"poll_interval": "500ms"}, "pool:burst": pool})
    fl.wait_for(lambda: running(fl, "burst") == 2, what="2 workers running")
    assert metric(fl, DESIRED, "burst") == 2

    ids = add_messages(c, stream, total, chunk=1000)
    t0 = time.monotonic()
    desired, live = [], []
    while metric(fl, "streamfleet_messages_acked_total", "burst") < total:
        # measured: 117 s on a loaded 2-core machine (the Python sink is the bottleneck)
        assert time.monotonic() - t0 < 400 * SLOWNESS, f"not all acked; desired over time {desired[::4]}"
        m = fl.metrics()
        desired.append(m.value(DESIRED, pool="burst"))
        live.append(m.value("streamfleet_workers", pool="burst", state="running"))
        time.sleep(0.5)
    took = time.monotonic() - t0
    print(f"{total} delivered in {took:.1f}s; desired every 2s: {desired[::4]}; running: {live[::4]}")
    assert max(desired) == 6, desired
    assert max(live) == 6, live

    # the backlog gone, back down to the minimum, one worker at a time
    fl.wait_for(lambda: metric(fl, DESIRED, "burst") == 2 and running(fl, "burst") == 2, 60,
                what="back down to 2 workers")
    assert pending_count(c, stream, "burst-group") == 0
    got = {q.headers.get("webhook-id") for q in sink.snapshot() if 200 <= q.status < 300}
    assert set(ids) <= got, f"{len(set(ids) - got)} messages never delivered"
    assert c.xlen(f"{stream}:dlq") == 0


def test_sigttin_and_sigttou_move_the_range(redis_server, sink, fleet):
    """SIGTTIN moves 2..4 to 3..5 (and the count with it); SIGTTOU moves it back."""
    pool = http_pool(sink, "moving", path="/in", workers="2..4", scale_down_after="1h")
    fl = fleet({"pool:moving": pool})
    fl.wait_for(lambda: running(fl, "moving") == 2, what="2 workers running")
    fl.signal(signal.SIGTTIN)
    fl.wait_for(lambda: metric(fl, DESIRED, "moving") == 3 and running(fl, "moving") == 3, what="3 workers")
    fl.signal(signal.SIGTTOU)
    fl.wait_for(lambda: metric(fl, DESIRED, "moving") == 2 and running(fl, "moving") == 2, what="2 workers")


def test_bad_ranges_are_config_errors_at_their_line(redis_server, tmp_path):
    cfg = write_ini(tmp_path / "bad.ini", {
        "fleet": {"redis": redis_server.url},
        "pool:a": {"stream": "a", "group": "g", "handler": "log", "workers": "5..2"},
        "pool:b": {"stream": "b", "group": "g", "handler": "log", "workers": "3", "scale_interval": "5s"},
    })
    r = run_binary(["-t", "-c", str(cfg)])
    assert r.returncode == 1, r
    lines = r.stderr.splitlines()
    assert any(ln.startswith(f"{cfg}:8: ") and "MIN..MAX" in ln for ln in lines), r.stderr
    assert any(ln.startswith(f"{cfg}:15: ") and "scale_interval" in ln for ln in lines), r.stderr
