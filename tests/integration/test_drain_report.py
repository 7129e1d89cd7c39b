"""The drain report (issue 14, part 6): on SIGTERM each worker says what became of what it held
(finished, released: waiting for a retry and left pending, abandoned: in progress when killed
at drain_timeout); the master logs one line per pool and exports
streamfleet_drain_messages_total{pool,outcome}. A real redis-server, a real HTTP sink, the
real binary."""
import json
import re

from conftest import add_messages, pending_count
from supervisor_helpers import BIG_TIMEOUT, http_pool, record_arrivals


def drain_line(fl, pool_name):
    """The master's drain report of pool_name (a key=value line), as a dict of ints."""
    for line in fl.log().splitlines():
        try:
            msg = json.loads(line).get("msg", "")
        except ValueError:
            continue
        if msg.startswith(f"drained pool={pool_name} "):
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", msg)}
    raise AssertionError(f"no drain report for pool {pool_name}")


def test_sigterm_under_load_reports_counts_that_add_up_and_a_restart_finishes_the_rest(
        redis_server, sink, fleet_factory):
    """Two workers hold entries of three kinds when SIGTERM comes with drain_timeout = 6s: some
    wait for a retry (released), some are answered in 2.5 s (finished), some would take 60 s
    (abandoned at the deadline). The counts add up to what the workers held, what stays pending
    in Redis is exactly released + abandoned, and a restart delivers every one of them."""
    r = redis_server.client()
    sink.rule(500, body_contains="fail")
    sink.rule(200, body_contains="quick", delay=2.5)
    sink.rule(200, body_contains="slow", delay=60)
    arrivals = record_arrivals(sink)
    section = http_pool(sink, "dr", workers=2, batch=10, inflight=10, max_attempts="100",
                        backoff_base="10s", backoff_max="10s", backoff_jitter="0")
    section.update(timeout="90s", claim_idle="1h")
    sections = {"fleet": {"drain_timeout": "6s", "log_format": "json"}, "pool:h": section}
    fl = fleet_factory(sections)

    ids = add_messages(r, "dr", 4, fields={"kind": "fail"})
    fl.wait_for(lambda: (fl.metrics().total("streamfleet_messages_retried_total", pool="h") or 0)
                >= 4, timeout=BIG_TIMEOUT, what="4 entries waiting for a retry")
    ids += add_messages(r, "dr", 4, fields={"kind": "quick"})
    ids += add_messages(r, "dr", 6, fields={"kind": "slow"})
    fl.wait_for(lambda: sum(b"quick" in q.body or b"slow" in q.body for q in arrivals) == 10,
                timeout=BIG_TIMEOUT, what="10 deliveries in flight")
    held = pending_count(r, "dr", "dr-group")
    assert held == 14
    assert fl.stop() == 0

    rep = drain_line(fl, "h")
    assert rep["finished"] + rep["released"] + rep["abandoned"] == rep["held"], rep
    assert rep["held"] == held, rep
    assert rep["released"] == 4 and rep["finished"] == 4 and rep["abandoned"] == 6, rep
    assert pending_count(r, "dr", "dr-group") == rep["released"] + rep["abandoned"]

    # A restart under the same consumer names takes them at once (claim_idle is 1h).
    sink.clear_rules()
    fl2 = fleet_factory(sections)
    fl2.wait_for(lambda: pending_count(r, "dr", "dr-group") == 0, timeout=BIG_TIMEOUT,
                 what="the restart finishes every released and abandoned entry")
    ok = {q.headers.get("webhook-id") for q in list(sink.requests) if q.status == 200}
    assert set(ids) <= ok
    m = fl2.metrics()
    assert m.value("streamfleet_drain_messages_total", pool="h", outcome="finished") == 0
    assert fl2.stop() == 0
