"""A lost consumer group, where a group is first created, and health when nothing can be
consumed (issue h4).

- A group that disappears (XGROUP DESTROY, a Redis restored from a snapshot without it) is
  re-created after the last entry the fleet is known to have had delivered, not at ID 0.
- group_start = earliest | latest decides only a group's first creation.
- A group that cannot be created (Redis at maxmemory) and a stream key of another type
  (WRONGTYPE) make the pool degraded in /health and /metrics, without a log flood."""
import time

from conftest import SLOWNESS, TIMEOUT, add_messages, group_info, pending_count
from reliability_helpers import by_webhook_id, http_pool, metric, restarts, wait_metric


def delivered_ok(sink):
    """webhook-id -> number of 2xx deliveries."""
    return {k: len(v) for k, v in by_webhook_id(sink.snapshot(), ok=True).items()}


def pool_degraded(fl, pool):
    return fl.metrics().sum("streamfleet_pool_degraded", pool=pool)


def health_of(fl, pool):
    """(/health status, the overall reason, the pool's status)."""
    status, body = fl.health()
    assert body is not None
    return status, body.get("reason", ""), body["pools"][pool]["status"]


def test_lost_group_is_recreated_after_the_last_delivered_entry_not_from_the_start(
        redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:lg": http_pool(sink, "lg", workers=2, batch=50)})
    first = add_messages(r, "lg", 1000, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(first) <= set(delivered_ok(sink)), timeout=TIMEOUT,
                what="the first 1000 delivered")
    fl.wait_for(lambda: pending_count(r, "lg", "lg-group") == 0, what="all acked")
    # What one worker received reaches the others through the master within half a second
    # (and the master's own poll): the documented bound of what may come again.
    time.sleep(1.5)
    kids = fl.children()
    assert r.xgroup_destroy("lg", "lg-group") == 1
    wait_metric(fl, "streamfleet_group_recreated_total", "lg", lambda v: v >= 1)
    fl.wait_for(lambda: group_info(r, "lg", "lg-group"), what="the group re-created")
    more = add_messages(r, "lg", 200, fields=lambda i: {"type": "t", "n": f"more{i}"})
    fl.wait_for(lambda: set(more) <= set(delivered_ok(sink)), timeout=TIMEOUT,
                what="the 200 later messages delivered")
    fl.wait_for(lambda: pending_count(r, "lg", "lg-group") == 0, what="all acked")
    time.sleep(3 * SLOWNESS)    # room for any re-delivery to show
    got = delivered_ok(sink)
    assert set(got) == set(first) | set(more)
    again = sorted(k for k, n in got.items() if n > 1)
    assert sum(got.values()) == 1200, f"{len(again)} delivered again, e.g. {again[:5]}"
    assert fl.children() == kids and restarts(fl, "lg") == 0


def test_messages_held_for_a_retry_or_in_flight_when_the_group_is_lost_are_still_delivered(
        redis_server, sink, fleet):
    """What was pending in the lost group is pending nowhere: the worker that holds it (waiting
    for a retry, or in flight and failing after the loss) puts it back into the new group's
    pending list, so it is retried and delivered, once, and nothing else comes again."""
    r = redis_server.client()
    sink.rule(500, body_contains="retry-me", times=1)
    sink.rule(500, body_contains="slow-fail", delay=4, times=1)
    fl = fleet({"pool:hr": http_pool(sink, "hr", inflight=16, backoff_base="4s", backoff_max="4s",
                                     backoff_jitter="0", timeout="8s", claim_idle="30s")})
    normal = add_messages(r, "hr", 10, fields=lambda i: {"type": "t", "n": str(i)})
    (retry,) = add_messages(r, "hr", 1, fields={"type": "t", "n": "retry-me"})
    (slow,) = add_messages(r, "hr", 1, fields={"type": "t", "n": "slow-fail"})
    fl.wait_for(lambda: set(normal) <= set(delivered_ok(sink)) and
                by_webhook_id(sink.snapshot(), status=500).get(retry), what="a retry waiting")
    assert slow not in by_webhook_id(sink.snapshot()), "the slow one is still in flight"
    assert r.xgroup_destroy("hr", "hr-group") == 1
    wait_metric(fl, "streamfleet_group_recreated_total", "hr", lambda v: v >= 1)
    fl.wait_for(lambda: {retry, slow} <= set(delivered_ok(sink)), timeout=TIMEOUT,
                what="the held messages delivered after the loss")
    fl.wait_for(lambda: pending_count(r, "hr", "hr-group") == 0, what="all acked")
    time.sleep(2 * SLOWNESS)
    got = delivered_ok(sink)
    assert all(got[k] == 1 for k in normal + [retry, slow]), got
    tries = by_webhook_id(sink.snapshot())
    assert len(tries[retry]) == 2 and len(tries[slow]) == 2


def test_group_start_latest_leaves_existing_entries_and_delivers_new_ones(
        redis_server, sink, fleet):
    r = redis_server.client()
    old = add_messages(r, "gl", 30, fields=lambda i: {"type": "t", "n": f"old{i}"})
    fl = fleet({"pool:gl": http_pool(sink, "gl", group_start="latest")})
    fl.wait_for(lambda: group_info(r, "gl", "gl-group"), what="the group created")
    new = add_messages(r, "gl", 10, fields=lambda i: {"type": "t", "n": f"new{i}"})
    fl.wait_for(lambda: set(new) <= set(delivered_ok(sink)), what="the new entries delivered")
    time.sleep(2 * SLOWNESS)
    got = delivered_ok(sink)
    assert not set(old) & set(got), "entries older than the group's creation were delivered"
    assert set(got) == set(new)


def test_group_start_earliest_is_the_default_and_delivers_existing_entries(
        redis_server, sink, fleet):
    r = redis_server.client()
    old = add_messages(r, "ge", 30, fields=lambda i: {"type": "t", "n": f"old{i}"})
    fl = fleet({"pool:ge": http_pool(sink, "ge")})
    fl.wait_for(lambda: set(old) <= set(delivered_ok(sink)), what="existing entries delivered")


def group_lines(fl, group):
    """Log lines of the workers about the group (the flood of the issue was about it)."""
    return [ln for ln in fl.log().splitlines()
            if group in ln or "OOM" in ln or "maxmemory" in ln]


def test_group_that_cannot_be_created_at_maxmemory_degrades_the_pool_without_a_log_flood(
        redis_server, sink, fleet):
    r = redis_server.client()
    r.set("ballast", b"x" * (4 << 20))
    used = r.info("memory")["used_memory"]
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", str(used // 2))
    fl = fleet({"pool:om": http_pool(sink, "om", workers=2)})

    def degraded():
        status, reason, pool = health_of(fl, "om")
        return (status, reason) if status == 503 and pool == "degraded" and "om-group" in reason else None
    status, reason = fl.wait_for(degraded, what="/health 503 naming the group")
    assert pool_degraded(fl, "om") == 1
    assert not r.exists("om")
    start = len(group_lines(fl, "om-group"))
    time.sleep(10)
    flood = group_lines(fl, "om-group")[start:]
    assert len(flood) <= 6, "\n".join(flood[:20])       # 2 workers: not 25 a second each
    assert health_of(fl, "om")[0] == 503, "still degraded while the group cannot be created"

    r.config_set("maxmemory", "0")
    r.delete("ballast")
    fl.wait_for(lambda: group_info(r, "om", "om-group") if r.exists("om") else None,
                timeout=TIMEOUT, what="the group created once memory is free")
    ids = add_messages(r, "om", 20, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(ids) <= set(delivered_ok(sink)), what="delivered")
    fl.wait_for(lambda: health_of(fl, "om")[0] == 200, what="/health 200 again")
    assert pool_degraded(fl, "om") == 0
    assert restarts(fl, "om") == 0


def test_stream_key_of_the_wrong_type_degrades_the_pool_until_fixed(redis_server, sink, fleet):
    r = redis_server.client()
    r.set("wt", "not a stream")
    fl = fleet({"pool:wt": http_pool(sink, "wt", workers=2)})

    def degraded():
        status, reason, pool = health_of(fl, "wt")
        return reason if status == 503 and pool == "degraded" and "wt" in reason else None
    reason = fl.wait_for(degraded, what="/health 503 naming the stream")
    assert "stream" in reason
    assert pool_degraded(fl, "wt") == 1
    time.sleep(3)
    assert health_of(fl, "wt")[0] == 503

    r.delete("wt")
    ids = add_messages(r, "wt", 10, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(ids) <= set(delivered_ok(sink)), timeout=TIMEOUT, what="delivered")
    fl.wait_for(lambda: health_of(fl, "wt")[0] == 200, what="/health 200 again")
    assert pool_degraded(fl, "wt") == 0
    assert metric(fl, "streamfleet_worker_restarts_total", "wt") == 0
