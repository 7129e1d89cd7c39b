"""Canary reloads (issue 14, part 1): on SIGHUP a pool whose settings changed starts one worker
of its new generation first; the rest rotates only once that canary is ready and has handled
canary_messages entries, otherwise the reload is rolled back for that pool and the old
generation runs on untouched. A real redis-server, real HTTP sinks, the real binary."""
import json
import signal
import time

from conftest import SLOWNESS, add_messages, pending_count, wait_until
from test_statuspage import needs_chromium, open_page, wait_page_agrees
from supervisor_helpers import (BIG_TIMEOUT, Producer, http_pool, live_children, pool,
                                pool_children, rewrite_config, send_signal, wait_children)


def reloads(fl, result):
    return fl.metrics().value("streamfleet_reloads_total", result=result) or 0


def ids_received(sink, status=None):
    return {q.headers.get("webhook-id") for q in list(sink.requests)
            if status is None or q.status == status}


def status_json(fl):
    status, _, body = fl.http_get("/status.json")
    assert status == 200
    return json.loads(body)


def status_pool(fl, name):
    return next(p for p in status_json(fl)["pools"] if p["name"] == name)


def last_reload(fl):
    status, body = fl.health()
    assert status == 200, body
    return body["last_reload"]["result"]


def test_reload_to_a_url_answering_500_is_rolled_back_and_the_old_generation_delivers_throughout(
        redis_server, sink_factory, fleet):
    """A reload to an endpoint that answers 500 to everything, with canary_messages = 5: the
    canary fails its messages, the reload is rolled back (reloads_total{rolled_back} 1, not
    ok), the old workers keep their pids and keep delivering to the good sink during and after,
    nothing is dead-lettered, and what the canary held is delivered by the old generation. The
    master keeps the old settings: a second SIGHUP with the same file tries again."""
    r = redis_server.client()
    good, bad = sink_factory(), sink_factory()
    bad.status = 500
    section = http_pool(good, "cb", workers=2, batch=10, inflight=10, max_attempts="100",
                        backoff_base="500ms", backoff_max="1s")
    section.update(timeout="2s", claim_idle="6s")
    fl = fleet({"pool:h": section})
    old = sorted(wait_children(fl, 2))
    prod = Producer(redis_server, "cb", rate=100)
    prod.start()
    try:
        good.wait_count(50, timeout=BIG_TIMEOUT)
        rewrite_config(fl, lambda c: c["pool:h"].update(url=bad.url + "/in", canary_messages="5",
                                                        canary_timeout="60s"))
        before = len(good.requests)
        send_signal(fl, signal.SIGHUP)
        fl.wait_for(lambda: reloads(fl, "rolled_back") == 1, timeout=BIG_TIMEOUT,
                    what="the reload rolled back")
        assert len(bad.requests) >= 5, "the canary never tried the new endpoint"
        during = len(good.requests)
        assert during > before, "the old generation stopped delivering while the canary ran"
        fl.wait_for(lambda: sorted(live_children(fl.pid)) == old, timeout=BIG_TIMEOUT,
                    what="the canary gone, the old workers left")
        time.sleep(2 * SLOWNESS)
        assert len(good.requests) > during, "the old generation stopped delivering after the rollback"
        assert last_reload(fl) == "rolled_back"
        assert reloads(fl, "ok") == 0
        assert status_json(fl)["reloads"]["rolled_back"] == 1

        # The master still holds the old settings: the same file is a change again.
        send_signal(fl, signal.SIGHUP)
        fl.wait_for(lambda: reloads(fl, "rolled_back") == 2, timeout=BIG_TIMEOUT,
                    what="the second reload rolled back too")
        fl.wait_for(lambda: sorted(live_children(fl.pid)) == old, timeout=BIG_TIMEOUT,
                    what="the second canary gone")
    finally:
        ids = prod.stop()
    # What the canaries held stays pending under slot 0's name; the old generation takes it
    # over after claim_idle and delivers it to the good sink.
    fl.wait_for(lambda: set(ids) <= ids_received(good, 200), timeout=BIG_TIMEOUT,
                what=f"all {len(ids)} ids delivered to the good sink")
    fl.wait_for(lambda: pending_count(r, "cb", "cb-group") == 0, timeout=BIG_TIMEOUT,
                what="nothing pending")
    assert r.xlen("cb:dlq") == 0          # 0 also when it was never created
    m = fl.metrics()
    assert (m.total("streamfleet_messages_dead_lettered_total", pool="h") or 0) == 0
    assert sorted(live_children(fl.pid)) == old
    assert fl.stop() == 0


def test_good_reload_with_canary_messages_rotates_every_worker_to_the_new_url(
        redis_server, sink_factory, fleet):
    """A reload to another working endpoint, with canary_messages = 5: the canary proves
    itself, then the whole pool rotates (no old pid left, two workers), the new URL receives,
    reloads_total{ok} 1, and every id is delivered."""
    r = redis_server.client()
    first, second = sink_factory(), sink_factory()
    fl = fleet({"pool:h": http_pool(first, "cg", workers=2, batch=10, inflight=10)})
    old = set(wait_children(fl, 2))
    prod = Producer(redis_server, "cg", rate=100)
    prod.start()
    try:
        first.wait_count(20, timeout=BIG_TIMEOUT)
        rewrite_config(fl, lambda c: c["pool:h"].update(url=second.url + "/in", canary_messages="5"))
        send_signal(fl, signal.SIGHUP)
        fl.wait_for(lambda: reloads(fl, "ok") == 1, timeout=BIG_TIMEOUT, what="the reload done")
        fl.wait_for(lambda: len(live_children(fl.pid)) == 2 and not old & set(live_children(fl.pid)),
                    timeout=BIG_TIMEOUT, what="two workers, none of the old generation")
        n = len(second.requests)
        second.wait_count(n + 20, timeout=BIG_TIMEOUT)
    finally:
        ids = prod.stop()
    fl.wait_for(lambda: set(ids) <= ids_received(first, 200) | ids_received(second, 200),
                timeout=BIG_TIMEOUT, what=f"all {len(ids)} ids delivered")
    fl.wait_for(lambda: pending_count(r, "cg", "cg-group") == 0, what="nothing pending")
    assert reloads(fl, "rolled_back") == 0
    assert last_reload(fl) == "ok"
    assert fl.stop() == 0


def test_canary_whose_subprocess_exits_at_once_is_never_ready_and_is_rolled_back(
        redis_server, fleet):
    """A reload to handler = subprocess whose command exits at once: the canary never stays
    ready (its handler never accepts for long), so after canary_timeout the reload is rolled
    back; the old log workers keep their pids and keep handling new entries."""
    r = redis_server.client()
    fl = fleet({"pool:a": pool("cn", workers=2)})
    old = sorted(wait_children(fl, 2))
    rewrite_config(fl, lambda c: c["pool:a"].update(handler="subprocess", command="/bin/true",
                                                    canary_timeout="3s"))
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: reloads(fl, "rolled_back") == 1, timeout=BIG_TIMEOUT,
                what="the reload rolled back")
    assert reloads(fl, "ok") == 0
    fl.wait_for(lambda: sorted(live_children(fl.pid)) == old, timeout=BIG_TIMEOUT,
                what="the canary gone, the old workers left")
    ids = add_messages(r, "cn", 20)
    # acked counted first, pending second: the other order could see the 0 of entries not read yet
    fl.wait_for(lambda: (fl.metrics().total("streamfleet_messages_acked_total", pool="a") or 0) >= 20
                and pending_count(r, "cn", "cn-group") == 0,
                timeout=BIG_TIMEOUT, what="the old generation handles new entries")
    assert last_reload(fl) == "rolled_back"
    assert sorted(live_children(fl.pid)) == old
    assert fl.stop() == 0
    assert set(ids) <= {rec["id"] for rec in fl.records()[0]}


def test_only_the_changed_pool_is_canaried_and_an_unfed_canary_times_out(redis_server, fleet):
    """Two pools, a reload that changes only a (with canary_messages = 5 and no messages to
    handle): a shows one canary on trial in /status.json while b shows none and keeps its pids
    throughout; after canary_timeout a's canary has not handled 5 messages, so a is rolled
    back too, and a keeps its pids."""
    fl = fleet({"pool:a": pool("ca", workers=1), "pool:b": pool("cc", workers=2)})
    wait_children(fl, 3)
    a_old = sorted(pool_children(fl, "a"))
    b_old = sorted(pool_children(fl, "b"))
    rewrite_config(fl, lambda c: c["pool:a"].update(batch="20", canary_messages="5",
                                                    canary_timeout="4s"))
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: status_pool(fl, "a")["worker_counts"]["canary"] == 1, timeout=BIG_TIMEOUT,
                what="a's canary on trial")
    assert status_pool(fl, "b")["worker_counts"]["canary"] == 0
    assert last_reload(fl) == "canary"
    fl.wait_for(lambda: reloads(fl, "rolled_back") == 1, timeout=BIG_TIMEOUT,
                what="a's canary timed out")
    wait_until(lambda: status_pool(fl, "a")["worker_counts"]["canary"] == 0 and
               len(live_children(fl.pid)) == 3, timeout=BIG_TIMEOUT, what="the canary gone")
    assert sorted(pool_children(fl, "a")) == a_old
    assert sorted(pool_children(fl, "b")) == b_old
    assert fl.stop() == 0


@needs_chromium
def test_the_status_page_shows_a_canary_on_trial(redis_server, fleet, tmp_path):
    """While a reload's canary is on trial (canary_messages = 5, nothing to handle, a long
    canary_timeout), the page's pool row says so beside the workers."""
    fl = fleet({"pool:a": pool("cp", workers=2)})
    wait_children(fl, 2)
    rewrite_config(fl, lambda c: c["pool:a"].update(batch="30", canary_messages="5",
                                                    canary_timeout="5m"))
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: status_pool(fl, "a")["worker_counts"]["canary"] == 1, timeout=BIG_TIMEOUT,
                what="a's canary on trial")
    b = open_page(tmp_path, fl)
    try:
        page, s = wait_page_agrees(b, fl)
        row = next(r for r in page["pools"] if r["pool"] == "a")
        assert row["workers"].endswith("/1"), row
        text = b.eval("document.querySelector('#pools tr[data-pool=a] td[data-k=workers]').textContent")
        assert "+1 canary" in text, text
    finally:
        b.close()
