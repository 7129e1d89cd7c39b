"""Integration tests of issue 4, "nothing lost": retries with backoff, the dead-letter stream,
reclaiming orphans, dedupe, missing groups, Redis outages, freezes and refusals.

Each test drives the real binary against its own redis-server and HTTP sink (conftest.py) and
checks one behaviour. "No loss" means: every entry id that was added reached the sink with a
2xx (or sits in the dead-letter stream with its reason), and the group's pending list ends
empty. The numbers in brackets are the items of ../shared/RELIABILITY.md's test plan."""
import email.utils
import os
import signal
import time

import pytest

from conftest import (TIMEOUT, add_messages, excerpt, group_info, pending_count, run_binary,
                      wait_until)
from reliability_helpers import (BIG_TIMEOUT, by_webhook_id, consumers, cpu_seconds, dlq_entries, failed_once,
                                 http_pool, log_pool, metric, one_child, own_consumer, proc_bytes,
                                 read_as, record_arrivals, replaced, requests_for, restarts,
                                 wait_metric, wait_pending)


def delivered_ids(sink):
    """Entry ids the sink answered with a 2xx."""
    return set(by_webhook_id(sink.snapshot(), ok=True))


# --------------------------------------------------------------------------------------------
# retries and backoff [20, 21, 30]
# --------------------------------------------------------------------------------------------

def test_message_failing_3_times_is_retried_at_about_0_1_3_7_s_with_attempts_1_to_4(
        redis_server, sink, fleet):
    sink.rule(500, body_contains=b"flaky", times=3)
    r = redis_server.client()
    fl = fleet({"pool:rt": http_pool(sink, "rt", body_field="payload", backoff_base="1s",
                                     backoff_jitter="0%", max_attempts=5)})
    (eid,) = add_messages(r, "rt", 1, fields={"type": "x", "payload": "flaky"})
    first = sink.wait_count(1)[0]
    assert pending_count(r, "rt", "rt-group") == 1, "a failed message stays pending"
    reqs = sink.wait_count(4, timeout=TIMEOUT + 10)
    wait_pending(fl, r, "rt", "rt-group", 0)
    assert reqs[0] is first
    assert [q.status for q in reqs] == [500, 500, 500, 200]
    assert [q.headers["streamfleet-attempt"] for q in reqs] == ["1", "2", "3", "4"]
    assert {q.headers["webhook-id"] for q in reqs} == {eid}, "the same id on every attempt"
    at = [q.time - reqs[0].time for q in reqs]
    gaps = [b - a for a, b in zip(at, at[1:])]
    print(f"\ntried at {', '.join(f'{t:.2f}' for t in at)} s (gaps "
          f"{', '.join(f'{g:.2f}' for g in gaps)})")
    # exponential from backoff_base = 1 s: 1, 2, 4 s between attempts
    for gap, want in zip(gaps, (1.0, 2.0, 4.0)):
        assert want * 0.9 <= gap < want * 3, f"gaps {gaps}, want about 1, 2, 4 s"
    # the ack's count arrives with the reply of the read it shares a round trip with
    wait_metric(fl, "streamfleet_messages_acked_total", "rt", lambda v: v == 1)
    assert metric(fl, "streamfleet_messages_retried_total", "rt") == 3
    assert dlq_entries(r, "rt:dlq") == []


def test_receiver_500_forever_gets_exactly_max_attempts_then_dead_letter_with_fields(
        redis_server, sink, fleet):
    sink.status = 500
    r = redis_server.client()
    fl = fleet({"pool:ma": http_pool(sink, "ma", backoff_base="200ms", backoff_jitter="0%",
                                     max_attempts=3)})
    fields = {"type": "order", "payload": '{"n": 1}', "customer": "c\u00e9"}
    t0 = time.time()
    (eid,) = add_messages(r, "ma", 1, fields=fields)
    fl.wait_for(lambda: dlq_entries(r, "ma:dlq"), what="the dead letter")
    wait_pending(fl, r, "ma", "ma-group", 0)
    time.sleep(1.5)     # several backoff periods: nothing more may come
    reqs = sink.snapshot()
    assert len(reqs) == 3, [q.headers.get("streamfleet-attempt") for q in reqs]
    assert [q.headers["streamfleet-attempt"] for q in reqs] == ["1", "2", "3"]
    ((dlq_id, f),) = dlq_entries(r, "ma:dlq")
    for k, v in fields.items():
        assert f[k] == v, f"original field {k} kept"
    assert f["dlq.stream"] == "ma"
    assert f["dlq.id"] == eid
    assert f["dlq.reason"] == "max_attempts"
    assert f["dlq.attempts"] == "3"
    assert "500" in f["dlq.error"] and len(f["dlq.error"]) <= 200, f["dlq.error"]
    assert t0 * 1000 - 5000 <= int(f["dlq.time"]) <= time.time() * 1000 + 5000
    # the original fields come first, in their order, then the dlq.* fields
    raw = r.xrange("ma:dlq")[0][1]
    keys = [k.decode() for k in raw]
    assert keys[:3] == list(fields)
    assert set(keys[3:]) == {"dlq.stream", "dlq.id", "dlq.reason", "dlq.attempts", "dlq.error",
                             "dlq.time"}
    m = fl.metrics()
    assert m.value("streamfleet_messages_dead_lettered_total", pool="ma", reason="max_attempts") == 1
    assert m.value("streamfleet_messages_retried_total", pool="ma") == 2
    assert m.value("streamfleet_messages_acked_total", pool="ma") == 0


def test_422_is_dead_lettered_at_once_with_reason_http_422_after_one_request(
        redis_server, sink, fleet):
    sink.rule(422, body_contains=b"poison")
    r = redis_server.client()
    fl = fleet({"pool:p4": http_pool(sink, "p4", body_field="payload", backoff_base="100ms",
                                     backoff_max="300ms")})
    ids = add_messages(r, "p4", 3, fields=lambda i: {"type": "t",
                                                      "payload": "poison" if i == 1 else f"ok{i}"})
    fl.wait_for(lambda: dlq_entries(r, "p4:dlq"), what="the dead letter")
    wait_pending(fl, r, "p4", "p4-group", 0)
    time.sleep(1.0)
    assert len(requests_for(sink, "poison")) == 1, "a permanent failure is never retried"
    ((_, f),) = dlq_entries(r, "p4:dlq")
    assert (f["dlq.id"], f["dlq.reason"], f["dlq.attempts"]) == (ids[1], "http_422", "1")
    assert f["payload"] == "poison" and f["type"] == "t" and f["dlq.stream"] == "p4"
    assert "422" in f["dlq.error"]
    assert delivered_ids(sink) == {ids[0], ids[2]}
    assert metric(fl, "streamfleet_messages_dead_lettered_total", "p4", reason="http_422") == 1
    assert metric(fl, "streamfleet_messages_retried_total", "p4") == 0


def test_attempts_are_redis_delivery_counts_so_restarts_do_not_reset_them(redis_server, sink, fleet):
    """Attempts are Redis's delivery counter: a message whose worker is killed after each
    failure still reaches max_attempts, and is dead-lettered with its real count."""
    sink.status = 500
    r = redis_server.client()
    fl = fleet({"pool:ac": http_pool(sink, "ac", backoff_base="1m", max_attempts=3,
                                     claim_idle="10m")})
    (child,) = one_child(fl)
    (eid,) = add_messages(r, "ac", 1, fields={"type": "t", "n": "1"})
    for attempt in (1, 2):
        sink.wait_count(attempt, timeout=TIMEOUT)
        os.kill(child, signal.SIGKILL)
        (child,) = replaced(fl, child)
    fl.wait_for(lambda: dlq_entries(r, "ac:dlq"), timeout=TIMEOUT, what="dead-lettered")
    wait_pending(fl, r, "ac", "ac-group", 0)
    reqs = sink.snapshot()
    assert [q.headers["streamfleet-attempt"] for q in reqs] == ["1", "2", "3"]
    ((_, f),) = dlq_entries(r, "ac:dlq")
    assert (f["dlq.id"], f["dlq.reason"], f["dlq.attempts"]) == (eid, "max_attempts", "3")


def test_redis_reconnects_do_not_use_up_the_attempts_of_a_waiting_message(redis_server, sink, fleet):
    """A message that failed once waits for its retry in the worker's pending list. Redis
    connections that break meanwhile are not attempts: after a few reconnects and a worker
    restart it is delivered, not dead-lettered for attempts it never made."""
    sink.rule(500, body_contains=b"waiting", times=1)
    r = redis_server.client()
    fl = fleet({"pool:rw": http_pool(sink, "rw", body_field="payload", backoff_base="1m",
                                     max_attempts=3, claim_idle="10m")})
    (child,) = one_child(fl)
    (eid,) = add_messages(r, "rw", 1, fields={"type": "t", "payload": "waiting"})
    sink.wait_count(1)
    for i in range(3):
        before = fl.log().count("connected again")
        r.client_kill_filter(_type="normal", skipme=True)
        fl.wait_for(lambda: fl.log().count("connected again") > before, what=f"reconnect {i + 1}")
        time.sleep(0.5)
    count = r.xpending_range("rw", "rw-group", "-", "+", 1)[0]["times_delivered"]
    os.kill(child, signal.SIGKILL)
    replaced(fl, child)
    fl.wait_for(lambda: eid in delivered_ids(sink) or dlq_entries(r, "rw:dlq"), timeout=TIMEOUT,
                what="delivered or dead-lettered")
    assert dlq_entries(r, "rw:dlq") == [], (
        f"dead-lettered after one failed attempt; redis counted {count} deliveries before the "
        f"restart")
    reqs = requests_for(sink, "waiting")
    assert [q.headers["streamfleet-attempt"] for q in reqs] == ["1", "2"]


def _http_date(t):
    return email.utils.formatdate(t, usegmt=True)


@pytest.mark.parametrize("status,retry_after,backoff_max,lo,hi", [
    (429, "3", "1h", 2.9, 8.0),
    (503, "3", "1h", 2.9, 8.0),
    (503, "30", "2s", 1.8, 6.0),          # capped by backoff_max
    (429, "date+6", "1h", 3.5, 10.0),     # an HTTP-date, 5 to 6 s ahead
], ids=["429-retry-after-3", "503-retry-after-3", "503-retry-after-30-capped-at-2s",
        "429-retry-after-http-date"])
def test_retry_after_is_honoured_and_capped_by_backoff_max(redis_server, sink, fleet, status,
                                                          retry_after, backoff_max, lo, hi):
    r = redis_server.client()
    fl = fleet({"pool:ra": http_pool(sink, "ra", body_field="payload", backoff_base="100ms",
                                     backoff_jitter="0%", backoff_max=backoff_max)})
    one_child(fl)
    if retry_after.startswith("date+"):
        # whole seconds: the date falls 5 to 6 s after now
        retry_after = _http_date(time.time() + int(retry_after[5:]))
    sink.rule(status, body_contains=b"limited", retry_after=retry_after, times=1)
    (eid,) = add_messages(r, "ra", 1, fields={"type": "x", "payload": "limited"})
    first, second = sink.wait_count(2, timeout=TIMEOUT + 10)
    wait_pending(fl, r, "ra", "ra-group", 0)
    assert (first.status, second.status) == (status, 200)
    gap = second.time - first.time
    print(f"\n{status} Retry-After: {retry_after} (backoff_max {backoff_max}): retried after {gap:.2f} s")
    assert lo <= gap < hi, f"retried after {gap:.2f} s"
    time.sleep(0.5)
    assert len(sink.snapshot()) == 2, "no hot loop"
    assert second.headers["webhook-id"] == eid


# --------------------------------------------------------------------------------------------
# the dead-letter move [31, 17]
# --------------------------------------------------------------------------------------------

def test_dlq_key_of_wrong_type_keeps_the_message_pending_until_the_key_is_fixed(
        redis_server, sink, fleet):
    sink.rule(422, body_contains=b"poison")
    r = redis_server.client()
    r.set("wt:dlq", "x")
    fl = fleet({"pool:wt": http_pool(sink, "wt", body_field="payload")})
    ids = add_messages(r, "wt", 3, fields=lambda i: {"type": "t",
                                                      "payload": "poison" if i == 0 else f"ok{i}"})
    wait_metric(fl, "streamfleet_dlq_failures_total", "wt", lambda v: v >= 1)
    sink.wait_count(2, status=200)
    # the two good ones are acked with the worker's next request (within a read's BLOCK)
    fl.wait_for(lambda: pending_count(r, "wt", "wt-group") == 1, what="the poison message alone pending")
    pend = r.xpending_range("wt", "wt-group", "-", "+", 10)
    assert [p["message_id"].decode() for p in pend] == [ids[0]]
    assert r.get("wt:dlq") == b"x", "the wrong-typed key is left alone"
    assert "cannot move message" in fl.log() and "WRONGTYPE" in fl.log()
    # it is tried again later, and counted again
    wait_metric(fl, "streamfleet_dlq_failures_total", "wt", lambda v: v >= 2, timeout=TIMEOUT)
    assert pending_count(r, "wt", "wt-group") == 1
    r.delete("wt:dlq")
    fl.wait_for(lambda: dlq_entries(r, "wt:dlq"), what="dead-lettered once the key is fixed")
    wait_pending(fl, r, "wt", "wt-group", 0)
    ((_, f),) = dlq_entries(r, "wt:dlq")
    assert f["dlq.id"] == ids[0] and f["dlq.reason"] == "http_422"
    assert len(requests_for(sink, "poison")) == 1
    assert delivered_ids(sink) == set(ids[1:])


def test_message_waiting_for_a_failed_dead_letter_move_is_not_delivered_again(
        redis_server, sink, fleet):
    """No double handling while alive: a message the child holds (waiting to be moved to a
    dead-letter stream that cannot take it) must not be reclaimed as an orphan after
    claim_idle, by another worker or by the same one, and sent to the endpoint again."""
    sink.rule(422, body_contains=b"poison")
    r = redis_server.client()
    r.set("hold:dlq", "x")
    fl = fleet({"pool:hold": http_pool(sink, "hold", body_field="payload", workers=2,
                                       timeout="2s", claim_idle="4s")})
    add_messages(r, "hold", 1, fields={"type": "t", "payload": "poison"})
    wait_metric(fl, "streamfleet_dlq_failures_total", "hold", lambda v: v >= 1)
    time.sleep(12)      # three times claim_idle
    reqs = requests_for(sink, "poison")
    assert len(reqs) == 1, (f"the poison message was sent {len(reqs)} times while a live worker "
                            f"held it for its dead-letter move (attempts "
                            f"{[q.headers['streamfleet-attempt'] for q in reqs]})")
    assert metric(fl, "streamfleet_messages_reclaimed_total", "hold") == 0
    r.delete("hold:dlq")
    fl.wait_for(lambda: len(dlq_entries(r, "hold:dlq")) == 1, what="dead-lettered")
    wait_pending(fl, r, "hold", "hold-group", 0)


def test_redis_at_maxmemory_delivers_and_acks_while_dead_letter_moves_wait(
        redis_server, sink, fleet):
    """[17] noeviction at maxmemory: XACK still works, so deliveries complete; the dead-letter
    move fails (OOM), the message stays pending and the failure is counted; once memory is
    freed the move succeeds."""
    sink.rule(422, body_contains=b"poison")
    r = redis_server.client()
    r.xgroup_create("mm", "mm-group", id="0", mkstream=True)
    ids = add_messages(r, "mm", 20, fields=lambda i: {"type": "t",
                                                       "payload": "poison" if i == 7 else f"ok{i}"})
    r.config_set("maxmemory", "1")
    try:
        with pytest.raises(Exception, match="OOM"):
            r.xadd("mm", {"probe": "1"})
        fl = fleet({"pool:mm": http_pool(sink, "mm", body_field="payload")})
        fl.wait_for(lambda: delivered_ids(sink) == set(ids) - {ids[7]}, timeout=TIMEOUT,
                    what="the 19 good messages delivered while redis is at maxmemory")
        wait_metric(fl, "streamfleet_dlq_failures_total", "mm", lambda v: v >= 1)
        wait_pending(fl, r, "mm", "mm-group", 1)
        assert [p["message_id"].decode() for p in r.xpending_range("mm", "mm-group", "-", "+", 5)] == [ids[7]]
    finally:
        r.config_set("maxmemory", "0")
    fl.wait_for(lambda: len(dlq_entries(r, "mm:dlq")) == 1, what="dead-lettered after memory was freed")
    wait_pending(fl, r, "mm", "mm-group", 0)
    assert dlq_entries(r, "mm:dlq")[0][1]["dlq.id"] == ids[7]
    assert len(requests_for(sink, "poison")) == 1


def test_failed_dead_letter_move_does_not_break_the_redis_connection(redis_server, sink, fleet):
    """A dead-letter move refused by Redis (WRONGTYPE) is an answer, not a broken connection:
    the child keeps its connection, and the reads that follow are not thrown away (a thrown
    away read costs every entry it brought a delivery attempt)."""
    sink.rule(422, body_contains=b"poison")
    r = redis_server.client()
    r.set("cx:dlq", "x")
    fl = fleet({"pool:cx": http_pool(sink, "cx", body_field="payload")})
    add_messages(r, "cx", 1, fields={"type": "t", "payload": "poison"})
    wait_metric(fl, "streamfleet_dlq_failures_total", "cx", lambda v: v >= 2, timeout=TIMEOUT)
    good = []
    for i in range(10):
        good += add_messages(r, "cx", 1, fields={"type": "t", "payload": f"ok{i}"})
        time.sleep(0.1)
    fl.wait_for(lambda: set(good) <= delivered_ids(sink), what="the good messages delivered")
    log = fl.log()
    assert "connected again" not in log, excerpt(log)
    assert metric(fl, "streamfleet_redis_errors_total", "cx") == 0, excerpt(log)
    attempts = {q.headers["webhook-id"]: q.headers["streamfleet-attempt"]
                for q in sink.snapshot() if q.headers["webhook-id"] in good}
    assert set(attempts.values()) == {"1"}, attempts


def test_no_second_worker_takes_a_message_while_its_attempt_hangs_or_waits_for_retry(
        redis_server, sink, fleet):
    """[22] The receiver accepts and never answers: the timeout frees the transfer slot, the
    message is retried later, and since claim_idle outlasts the timeout (and a worker keeps its
    waiting retries fresh), no other worker claims it meanwhile."""
    sink.rule(200, body_contains=b"hang", delay=30, times=2)
    arrivals = record_arrivals(sink)
    r = redis_server.client()
    fl = fleet({"pool:hg": http_pool(sink, "hg", body_field="payload", workers=2, batch=5,
                                     inflight=1, timeout="2s", claim_idle="5s",
                                     backoff_base="2s", backoff_jitter="0%")})
    (hang,) = add_messages(r, "hg", 1, fields={"type": "t", "payload": "hang"})
    others = add_messages(r, "hg", 10, fields=lambda i: {"type": "t", "payload": f"ok{i}"})
    fl.wait_for(lambda: hang in delivered_ids(sink), timeout=TIMEOUT + 20,
                what="the hanging message delivered at its third attempt")
    fl.wait_for(lambda: set(others) <= delivered_ids(sink), what="the others delivered")
    wait_pending(fl, r, "hg", "hg-group", 0)
    time.sleep(1)
    # the hung requests are recorded by the sink only when it gives up on them (30 s): look
    # at the requests as they arrived
    reqs = [a for a in arrivals if a.headers["webhook-id"] == hang]
    assert [q.headers["streamfleet-attempt"] for q in reqs] == ["1", "2", "3"], \
        [(q.headers["streamfleet-attempt"], q.time) for q in reqs]
    gaps = [b.time - a.time for a, b in zip(reqs, reqs[1:])]
    # attempt n+1 starts after attempt n timed out (2 s) and its backoff (2 s, then 4 s)
    assert gaps[0] >= 3.6 and gaps[1] >= 5.4, f"gaps {gaps}: overlapping attempts"
    assert metric(fl, "streamfleet_messages_reclaimed_total", "hg") == 0


def test_config_check_refuses_claim_idle_not_longer_than_twice_the_timeout(tmp_path):
    cfg = tmp_path / "ci.ini"
    cfg.write_text("[fleet]\nredis = redis://127.0.0.1:6379/0\n"
                   "[pool:a]\nstream = s\ngroup = g\nhandler = http\n"
                   "url = http://127.0.0.1:9/x\ntimeout = 30s\nclaim_idle = 45s\n")
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode != 0
    assert f"{cfg}:9: claim_idle (45s) must be at least 1m (twice the timeout)" in res.stderr


# --------------------------------------------------------------------------------------------
# orphans: entries of consumers that died [1, 18, 19, 46]
# --------------------------------------------------------------------------------------------

def test_pending_entries_of_a_dead_hosts_consumer_are_reclaimed_after_claim_idle(
        redis_server, sink, fleet):
    r = redis_server.client()
    ids = add_messages(r, "or", 50, fields=lambda i: {"type": "t", "n": str(i)})
    taken = read_as(r, "or", "or-group", "otherhost:or:0", 50)
    t_read = time.monotonic()
    assert taken == ids
    fl = fleet({"pool:or": http_pool(sink, "or", workers=2, claim_idle="10s")})
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), timeout=TIMEOUT + 15,
                what="the dead consumer's 50 entries delivered")
    wait_pending(fl, r, "or", "or-group", 0)
    reqs = sink.snapshot()
    first = min(q.time for q in reqs) - t_read
    print(f"\nfirst reclaimed delivery {first:.1f} s after the dead consumer read them "
          f"(claim_idle 10 s)")
    assert first >= 9.5, "taken over before claim_idle"
    assert {q.headers["streamfleet-attempt"] for q in reqs} == {"2"}, \
        "the reclaim counts as a delivery"
    assert len(reqs) == 50, "each delivered once"
    wait_metric(fl, "streamfleet_messages_reclaimed_total", "or", lambda v: v == 50)
    assert consumers(r, "or", "or-group")["otherhost:or:0"] == 0


def test_500_entries_of_a_sigkilled_child_are_all_delivered_by_its_replacement(
        redis_server, sink, fleet):
    """[1] SIGKILL a child holding 500 entries in its pending list (all waiting for a retry):
    the replacement for its slot reads them back (ID 0) and delivers every one."""
    sink.status = 500
    r = redis_server.client()
    fl = fleet({"pool:k5": http_pool(sink, "k5", workers=1, batch=100, inflight=64,
                                     backoff_base="1m", backoff_max="1h", claim_idle="10m")})
    (child,) = one_child(fl)
    ids = add_messages(r, "k5", 500, fields=lambda i: {"type": "t", "n": str(i)})
    wait_metric(fl, "streamfleet_messages_retried_total", "k5", lambda v: v == 500,
                timeout=BIG_TIMEOUT)
    assert consumers(r, "k5", "k5-group")[own_consumer("k5")] == 500
    sink.status = 200
    os.kill(child, signal.SIGKILL)
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), timeout=BIG_TIMEOUT,
                what="all 500 delivered by the replacement")
    wait_pending(fl, r, "k5", "k5-group", 0)
    assert child not in fl.children()
    assert dlq_entries(r, "k5:dlq") == []
    ok = by_webhook_id(sink.snapshot(), ok=True)
    assert all(len(v) == 1 for v in ok.values()), "none delivered twice"
    assert restarts(fl, "k5") == 1


def test_xtrim_maxlen_0_with_200_entries_pending_in_a_dead_consumer_counts_them_vanished(
        redis_server, sink, fleet):
    """[18] The data of 200 pending entries is trimmed away: XAUTOCLAIM drops them from the
    pending list (its deleted-ids reply) and they are counted, never retried, no crash."""
    r = redis_server.client()
    add_messages(r, "tr", 200, fields=lambda i: {"type": "t", "n": str(i)})
    assert len(read_as(r, "tr", "tr-group", "otherhost:tr:0", 200)) == 200
    assert r.xtrim("tr", maxlen=0, approximate=False) == 200
    assert pending_count(r, "tr", "tr-group") == 200
    fl = fleet({"pool:tr": http_pool(sink, "tr", workers=2, inflight=16, claim_idle="5s")})
    kids = one_child(fl, 2)
    wait_metric(fl, "streamfleet_messages_vanished_total", "tr", lambda v: v >= 200,
                timeout=TIMEOUT + 10)
    wait_pending(fl, r, "tr", "tr-group", 0)
    time.sleep(1)
    assert metric(fl, "streamfleet_messages_vanished_total", "tr") == 200
    assert sink.snapshot() == []
    assert fl.children() == kids and restarts(fl, "tr") == 0, "no crash on nil bodies"
    later = add_messages(r, "tr", 5, fields=lambda i: {"type": "t", "n": f"later{i}"})
    fl.wait_for(lambda: set(later) <= delivered_ids(sink), what="later messages delivered")


def test_xdel_of_an_entry_in_a_childs_own_pending_list_is_acked_and_counted_after_restart(
        redis_server, sink, fleet):
    """[19] ID-0 recovery returns the deleted entry as [id, nil]: the replacement acks it,
    counts it as vanished and carries on."""
    sink.rule(500, body_contains=b"victim")
    r = redis_server.client()
    fl = fleet({"pool:xd": http_pool(sink, "xd", body_field="payload", backoff_base="1m",
                                     claim_idle="10m")})
    (child,) = one_child(fl)
    victim, good = add_messages(r, "xd", 2, fields=lambda i: {"type": "t", "payload": ["victim", "good"][i]})
    fl.wait_for(lambda: requests_for(sink, "victim") and good in delivered_ids(sink))
    wait_pending(fl, r, "xd", "xd-group", 1)
    assert r.xdel("xd", victim) == 1
    os.kill(child, signal.SIGKILL)
    (replacement,) = replaced(fl, child)
    wait_pending(fl, r, "xd", "xd-group", 0)
    wait_metric(fl, "streamfleet_messages_vanished_total", "xd", lambda v: v == 1)
    later = add_messages(r, "xd", 3, fields=lambda i: {"type": "t", "payload": f"later{i}"})
    fl.wait_for(lambda: set(later) <= delivered_ids(sink), what="later messages delivered")
    assert fl.children() == [replacement], "the replacement lives on"
    assert len(requests_for(sink, "victim")) == 1
    assert "no data any more" in fl.log()


def test_xdel_of_an_entry_waiting_for_its_retry_is_counted_as_vanished(redis_server, sink, fleet):
    """An entry deleted from the stream while it waits for its retry: XCLAIM drops it from the
    pending list (Redis 7); it must be counted like every other vanished entry."""
    sink.rule(500, body_contains=b"victim")
    r = redis_server.client()
    fl = fleet({"pool:xr": http_pool(sink, "xr", body_field="payload", backoff_base="2s",
                                     backoff_jitter="0%")})
    (victim,) = add_messages(r, "xr", 1, fields={"type": "t", "payload": "victim"})
    sink.wait_count(1)
    assert r.xdel("xr", victim) == 1
    wait_pending(fl, r, "xr", "xr-group", 0)
    time.sleep(0.5)
    assert len(requests_for(sink, "victim")) == 1
    wait_metric(fl, "streamfleet_messages_vanished_total", "xr", lambda v: v == 1, timeout=5)


def test_consumers_stay_one_per_slot_after_many_restarts_and_dead_ones_with_pending_stay(
        redis_server, sink, fleet):
    """[46] Restarted workers reuse their slot's consumer name: XINFO CONSUMERS does not grow.
    A dead consumer that still holds pending entries is never removed."""
    r = redis_server.client()
    add_messages(r, "cs", 3, fields=lambda i: {"type": "t", "n": str(i)})
    read_as(r, "cs", "cs-group", "otherhost:cs:7", 3)
    fl = fleet({"pool:cs": http_pool(sink, "cs", workers=4, claim_idle="1h")})
    mine = {own_consumer("cs", i) for i in range(4)}
    fl.wait_for(lambda: mine <= set(consumers(r, "cs", "cs-group")), what="4 consumers")
    kills = 0
    started = {}
    deadline = time.monotonic() + BIG_TIMEOUT
    while kills < 12:
        assert time.monotonic() < deadline, "children not replaced in time"
        now = time.monotonic()
        for pid in fl.children():
            started.setdefault(pid, now)
        # kill a child that lived over 5 s: a quicker death would (rightly) slow its respawn
        old = [p for p, t in started.items() if now - t > 5.5 and p in fl.children()]
        if old:
            os.kill(old[0], signal.SIGKILL)
            del started[old[0]]
            kills += 1
        add_messages(r, "cs", 1, fields={"type": "t", "n": f"k{kills}"})
        time.sleep(0.2)
    fl.wait_for(lambda: len(fl.children()) == 4, what="4 children again")
    assert restarts(fl, "cs") == 12
    names = consumers(r, "cs", "cs-group")
    assert set(names) == mine | {"otherhost:cs:7"}, names
    assert names["otherhost:cs:7"] == 3, "a dead consumer holding entries is kept"


# --------------------------------------------------------------------------------------------
# idempotency: dedupe_ttl [30]
# --------------------------------------------------------------------------------------------

def done_markers(client):
    return sorted(k.decode() for k in client.scan_iter(match="*:done:*", count=1000))


def test_same_id_field_value_within_dedupe_ttl_is_delivered_once(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:dd": http_pool(sink, "dd", id_field="event_id", dedupe_ttl="1h")})
    add_messages(r, "dd", 1, fields={"type": "t", "event_id": "evt-1", "n": "1"})
    fl.wait_for(lambda: "evt-1" in delivered_ids(sink), what="evt-1 delivered")
    wait_pending(fl, r, "dd", "dd-group", 0)
    add_messages(r, "dd", 2, fields=lambda i: {"type": "t", "event_id": ["evt-1", "evt-2"][i],
                                                "n": str(i + 2)})
    fl.wait_for(lambda: "evt-2" in delivered_ids(sink), what="evt-2 delivered")
    wait_pending(fl, r, "dd", "dd-group", 0)
    wait_metric(fl, "streamfleet_messages_duplicate_total", "dd", lambda v: v == 1)
    time.sleep(0.5)
    got = by_webhook_id(sink.snapshot(), ok=True)
    assert {k: len(v) for k, v in got.items()} == {"evt-1": 1, "evt-2": 1}
    # the duplicate is acked too (its count arrives with the reply of the next read)
    wait_metric(fl, "streamfleet_messages_acked_total", "dd", lambda v: v == 3)


def test_done_marker_is_written_only_after_success_and_expires_with_dedupe_ttl(
        redis_server, sink, fleet):
    r, fl, eid = failed_once(redis_server, sink, fleet, "dm", "later", dedupe_ttl="10m")
    time.sleep(0.5)
    assert done_markers(r) == [], "no done-marker for a message that failed"
    sink.wait_count(2, status=None)
    wait_pending(fl, r, "dm", "dm-group", 0)
    (key,) = fl.wait_for(lambda: done_markers(r), what="the done-marker")
    assert eid in key, "without id_field the entry id is the message id"
    ttl = r.pttl(key)
    assert 0 < ttl <= 600_000 and ttl > 590_000, ttl


def test_entries_delivered_again_by_a_group_reset_are_skipped_by_dedupe(redis_server, sink, fleet):
    """A duplicate that arrives after its done-marker was written is acked without an HTTP
    call: here every entry comes again because the group was set back to the start (as after
    a group re-created at ID 0)."""
    r = redis_server.client()
    fl = fleet({"pool:gr": http_pool(sink, "gr", workers=2, dedupe_ttl="1h")})
    ids = add_messages(r, "gr", 30, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), what="first delivery")
    wait_pending(fl, r, "gr", "gr-group", 0)
    r.xgroup_setid("gr", "gr-group", "0")
    wait_metric(fl, "streamfleet_messages_duplicate_total", "gr", lambda v: v == 30)
    wait_pending(fl, r, "gr", "gr-group", 0)
    assert len(sink.snapshot()) == 30, "no second request for a message already handled"


# --------------------------------------------------------------------------------------------
# bad and odd messages [28, 29]
# --------------------------------------------------------------------------------------------

def test_message_over_max_message_bytes_is_dead_lettered_too_large_without_a_request(
        redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:big": http_pool(sink, "big", body_field="payload", batch=5)})
    (child,) = one_child(fl)
    huge = "x" * (10 * 1024 * 1024)        # 10 MB: over the default max_message_bytes (1 MiB)
    ids = []
    ids += add_messages(r, "big", 3, fields=lambda i: {"type": "t", "payload": f"ok{i}"})
    ids += add_messages(r, "big", 1, fields={"type": "t", "payload": huge})
    ids += add_messages(r, "big", 3, fields=lambda i: {"type": "t", "payload": f"ok{i + 3}"})
    near = "y" * (1024 * 1024 - 200)       # just under the cap with its other fields
    ids += add_messages(r, "big", 1, fields={"type": "t", "payload": near})
    fl.wait_for(lambda: dlq_entries(r, "big:dlq"), what="the dead letter")
    fl.wait_for(lambda: delivered_ids(sink) == set(ids) - {ids[3]}, what="the others delivered")
    wait_pending(fl, r, "big", "big-group", 0)
    ((_, f),) = dlq_entries(r, "big:dlq")
    assert f["dlq.reason"] == "too_large" and f["dlq.id"] == ids[3]
    assert "max_message_bytes" in f["dlq.error"]
    assert f["payload"] == huge, "the dead letter keeps the original fields"
    assert not [q for q in sink.snapshot() if len(q.body) > 1024 * 1024], "no request for it"
    assert fl.children() == [child]
    assert metric(fl, "streamfleet_messages_dead_lettered_total", "big", reason="too_large") == 1


def test_max_message_bytes_counts_every_field_name_and_value(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:mb": http_pool(sink, "mb", max_message_bytes="2K")})
    small = add_messages(r, "mb", 1, fields={"type": "t", "a": "x" * 1000})
    big = add_messages(r, "mb", 1, fields={"type": "t", "a": "x" * 1000, "b": "y" * 1000,
                                           "c" * 100: "z"})
    fl.wait_for(lambda: dlq_entries(r, "mb:dlq"), what="the dead letter")
    fl.wait_for(lambda: delivered_ids(sink) == set(small), what="the small one delivered")
    assert dlq_entries(r, "mb:dlq")[0][1]["dlq.id"] == big[0]
    assert dlq_entries(r, "mb:dlq")[0][1]["dlq.reason"] == "too_large"


@pytest.mark.parametrize("bad_id", ["k" * 10_000, "evt\x00nul", "evt\x1bescape", ""],
                         ids=["10000-bytes", "nul", "control-char", "empty"])
def test_unusable_idempotency_key_is_a_bad_message_never_retried(redis_server, sink, fleet, bad_id):
    r = redis_server.client()
    fl = fleet({"pool:ik": http_pool(sink, "ik", id_field="event_id", backoff_base="200ms",
                                     backoff_max="500ms")})
    (bad,) = add_messages(r, "ik", 1, fields={"type": "t", "event_id": bad_id})
    (good,) = add_messages(r, "ik", 1, fields={"type": "t", "event_id": "evt-ok"})
    fl.wait_for(lambda: "evt-ok" in delivered_ids(sink), what="the good message")
    fl.wait_for(lambda: dlq_entries(r, "ik:dlq"), what="the dead letter")
    wait_pending(fl, r, "ik", "ik-group", 0)
    time.sleep(1)
    ((_, f),) = dlq_entries(r, "ik:dlq")
    assert f["dlq.id"] == bad and f["dlq.reason"] == "bad_message"
    assert len(sink.snapshot()) == 1, "no request for the bad message, and no retry"


def test_binary_field_values_are_delivered_byte_exact(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:bin": http_pool(sink, "bin", body_field="payload",
                                      content_type="application/octet-stream")})
    blob = bytes(range(256)) * 4
    (eid,) = add_messages(r, "bin", 1, fields={"type": "t", "payload": blob, "odd": b"\xff\xfe\x00"})
    (q,) = sink.wait_count(1, status=200)
    assert q.body == blob and q.headers["webhook-id"] == eid
    wait_pending(fl, r, "bin", "bin-group", 0)


def test_stream_key_of_the_wrong_type_is_logged_once_and_work_resumes_when_fixed(
        redis_server, sink, fleet):
    r = redis_server.client()
    r.set("wk", "not a stream")
    fl = fleet({"pool:wk": http_pool(sink, "wk", workers=2)})
    kids = one_child(fl, 2)
    fl.wait_for(lambda: "WRONGTYPE" in fl.log(), what="a clear log line")
    time.sleep(8)
    log = fl.log()
    lines = [line for line in log.splitlines() if "WRONGTYPE" in line]
    assert len(lines) <= 6, "\n".join(lines)      # once per child, again at most every 30 s
    assert fl.children() == kids and restarts(fl, "wk") == 0, "no crash, no restart"
    r.delete("wk")
    ids = add_messages(r, "wk", 5, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), timeout=TIMEOUT,
                what="delivered once the key is a stream")
    wait_pending(fl, r, "wk", "wk-group", 0)


# --------------------------------------------------------------------------------------------
# a missing group or stream [11, 12, 13]
# --------------------------------------------------------------------------------------------

def test_xgroup_destroy_while_running_recreates_the_group_and_work_goes_on(
        redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:gd": http_pool(sink, "gd", workers=2)})
    kids = one_child(fl, 2)
    before = add_messages(r, "gd", 10, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(before) <= delivered_ids(sink), what="first messages")
    wait_pending(fl, r, "gd", "gd-group", 0)
    # What one worker received reaches the other through the master within half a second: the
    # documented bound of what may come again (destroyed sooner, the other worker's entries
    # can be delivered again, as docs/configuration.md says under "A lost group").
    time.sleep(1.5)
    assert r.xgroup_destroy("gd", "gd-group") == 1
    wait_metric(fl, "streamfleet_group_recreated_total", "gd", lambda v: v >= 1)
    after = add_messages(r, "gd", 10, fields=lambda i: {"type": "t", "n": f"after{i}"})
    fl.wait_for(lambda: set(after) <= delivered_ids(sink), what="later messages delivered")
    wait_pending(fl, r, "gd", "gd-group", 0)
    assert "is missing: re-creating it" in fl.log()
    assert fl.children() == kids and restarts(fl, "gd") == 0, "no crash loop"
    # re-created after the last entry delivered: the earlier entries do not come again
    time.sleep(2)
    got = by_webhook_id(sink.snapshot(), ok=True)
    assert all(len(got[k]) == 1 for k in before), "earlier entries delivered again"


def test_del_of_the_stream_while_children_are_blocked_recreates_the_group(
        redis_server, sink, fleet):
    """[12] Blocked readers get UNBLOCKED (not NOGROUP) when the stream is deleted: that too is
    a missing group, handled, logged loudly and counted the same way."""
    r = redis_server.client()
    fl = fleet({"pool:ds": http_pool(sink, "ds", workers=2, block="5s", claim_idle="20s")})
    kids = one_child(fl, 2)
    before = add_messages(r, "ds", 5, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: set(before) <= delivered_ids(sink), what="first messages")
    wait_pending(fl, r, "ds", "ds-group", 0)
    time.sleep(1)           # both children blocked in XREADGROUP BLOCK 5000
    assert r.delete("ds") == 1
    fl.wait_for(lambda: group_info(r, "ds", "ds-group"), what="the group re-created")
    after = add_messages(r, "ds", 5, fields=lambda i: {"type": "t", "n": f"after{i}"})
    fl.wait_for(lambda: set(after) <= delivered_ids(sink), what="later messages delivered")
    wait_pending(fl, r, "ds", "ds-group", 0)
    assert fl.children() == kids and restarts(fl, "ds") == 0, "no crash loop"
    assert metric(fl, "streamfleet_group_recreated_total", "ds") >= 1, excerpt(fl.log())
    assert "is missing: re-creating it" in fl.log()


def test_redis_restarted_from_a_snapshot_without_the_group_recreates_it(
        redis_factory, sink, fleet):
    """[11] Redis comes back from an RDB snapshot taken before the group existed: the group is
    re-created after the last entry the fleet had delivered (here the stream's last entry, so
    nothing comes again), loudly, and counted; what is added next is delivered."""
    srv = redis_factory(appendonly=False)
    r = srv.client()
    ids = add_messages(r, "rdb", 20, fields=lambda i: {"type": "t", "n": str(i)})
    assert r.save()                 # the snapshot: the stream, no group yet
    fl = fleet({"fleet": {"redis": srv.url}, "pool:rdb": http_pool(sink, "rdb", workers=2)})
    kids = one_child(fl, 2)
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), what="first delivery")
    wait_pending(fl, r, "rdb", "rdb-group", 0)
    # The master has polled the group after the last delivery (lag 0), and passed on where it
    # was: a worker knows that much besides what it received itself.
    fl.wait_for(lambda: fl.metrics().total("streamfleet_group_lag", pool="rdb") == 0,
                what="the group polled")
    time.sleep(1)
    srv.kill(signal.SIGKILL)
    srv.start()
    r = srv.client()
    fl.wait_for(lambda: metric(fl, "streamfleet_group_recreated_total", "rdb") >= 1,
                timeout=TIMEOUT + 10, what="the group re-created after the restart")
    later = add_messages(r, "rdb", 5, fields=lambda i: {"type": "t", "n": f"later{i}"})
    fl.wait_for(lambda: set(later) <= delivered_ids(sink), what="later entries delivered")
    wait_pending(fl, r, "rdb", "rdb-group", 0)
    got = by_webhook_id(sink.snapshot(), ok=True)
    assert all(len(got[k]) == 1 for k in ids), excerpt(fl.log())
    assert fl.children() == kids and restarts(fl, "rdb") == 0, "no crash loop"
    assert metric(fl, "streamfleet_group_recreated_total", "rdb") >= 1, excerpt(fl.log())
    assert "is missing: re-creating it" in fl.log()


# --------------------------------------------------------------------------------------------
# Redis outages, freezes, refusals [9, 10, 15, 16, 45]
# --------------------------------------------------------------------------------------------

class Producer:
    """XADD messages at a steady pace from a thread, riding out Redis outages: an XADD that
    fails is retried, so every id in .ids was acknowledged by Redis."""

    def __init__(self, server, stream, rate=200, total=None, fields=None):
        import threading
        self.server, self.stream, self.rate, self.total = server, stream, rate, total
        self.fields = fields or (lambda i: {"type": "t", "n": str(i)})
        self.ids = []
        self.errors = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        i = 0
        client = None
        next_t = time.monotonic()
        while not self._stop.is_set() and (self.total is None or i < self.total):
            try:
                if client is None:
                    client = self.server.client(socket_timeout=2, socket_connect_timeout=1)
                self.ids.append(client.xadd(self.stream, self.fields(i)).decode())
                i += 1
            except Exception:  # noqa: BLE001 - Redis is down: try again shortly
                self.errors += 1
                client = None
                time.sleep(0.1)
                continue
            next_t += 1.0 / self.rate
            d = next_t - time.monotonic()
            if d > 0:
                time.sleep(d)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(30)
        return self.ids


def child_cpu(pids):
    return sum(cpu_seconds(p) or 0 for p in pids)


@pytest.mark.parametrize("how", ["clean-stop", "sigkill"])
def test_redis_restart_under_load_loses_nothing_and_health_follows(redis_server, sink, fleet, how):
    """[9, 10] Redis goes away under load (a clean stop, or SIGKILL with AOF everysec) and
    comes back: /health is 503 during the outage and 200 after, the children sit quietly
    (no busy loop), /metrics keeps answering, and every message is delivered."""
    r = redis_server.client()
    fl = fleet({"pool:rs": http_pool(sink, "rs", workers=2, inflight=8)})
    kids = one_child(fl, 2)
    fl.wait_healthy()
    prod = Producer(redis_server, "rs", rate=300).start()
    fl.wait_for(lambda: len(delivered_ids(sink)) >= 300, what="load flowing")
    if how == "sigkill":
        redis_server.kill(signal.SIGKILL)
    else:
        redis_server.stop()
    down_at = time.monotonic()
    fl.wait_for(lambda: fl.health()[0] == 503, what="/health 503 during the outage")
    status, body = fl.health()
    assert body["status"] == "degraded" and body.get("reason") and body["redis"]["up"] is False, body
    assert fl.http_get("/metrics")[0] == 200
    time.sleep(1.5)             # let the reconnect backoff grow to its cap
    cpu0 = child_cpu(kids)
    time.sleep(3)
    used = child_cpu(kids) - cpu0
    print(f"\nchildren used {used:.3f} s of CPU in 3 s while redis was down")
    assert used < 0.3, f"busy loop while redis is down: {used:.2f} s CPU in 3 s"
    assert fl.children() == kids, "the children keep running through the outage"
    time.sleep(max(0.0, 6 - (time.monotonic() - down_at)))
    redis_server.start()
    fl.wait_healthy(timeout=TIMEOUT)
    time.sleep(2)
    ids = prod.stop()
    r = redis_server.client()
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), timeout=BIG_TIMEOUT,
                what=f"all {len(ids)} messages delivered")
    wait_pending(fl, r, "rs", "rs-group", 0)
    ok = by_webhook_id(sink.snapshot(), ok=True)
    dups = sum(len(v) - 1 for v in ok.values())
    print(f"{len(ids)} messages, {dups} delivered twice, {prod.errors} producer retries")
    assert dups <= 2 * 8 + 2 * 20, "duplicates bounded by what was in flight"
    assert fl.children() == kids and restarts(fl, "rs") == 0


def test_no_busy_loop_while_retries_fall_due_and_redis_is_down_or_the_circuit_is_open(
        redis_server, sink, fleet):
    """Retries that fall due when they cannot be acted on (Redis unreachable, or the endpoint's
    circuit open) must not make the worker's loop spin: it waits for what can change."""
    r = redis_server.client()
    sink.rule(503)                                   # every request fails: retries pile up
    fl = fleet({"pool:bz": http_pool(sink, "bz", workers=1, inflight=4, backoff_base="200ms",
                                     backoff_max="400ms", max_attempts=1000)})
    (kid,) = one_child(fl, 1)
    add_messages(r, "bz", 20, fields={"type": "t", "n": "1"})
    wait_metric(fl, "streamfleet_circuit_open", "bz", lambda v: v == 1)
    cpu0 = cpu_seconds(kid)
    time.sleep(3)
    used = cpu_seconds(kid) - cpu0
    print(f"\ncircuit open, retries due: the worker used {used:.3f} s of CPU in 3 s")
    assert used < 0.3, f"busy loop while the circuit is open: {used:.2f} s CPU in 3 s"
    redis_server.stop()
    fl.wait_for(lambda: fl.health()[0] == 503, what="/health 503 during the outage")
    time.sleep(1.5)
    cpu0 = cpu_seconds(kid)
    time.sleep(3)
    used = cpu_seconds(kid) - cpu0
    print(f"redis down, retries due: the worker used {used:.3f} s of CPU in 3 s")
    assert used < 0.3, f"busy loop while redis is down: {used:.2f} s CPU in 3 s"
    assert fl.children() == [kid]


def test_redis_frozen_8s_then_resumed_loses_nothing(redis_server, sink, fleet):
    """[15] SIGSTOP: commands time out (socket timeout above block), connections are rebuilt,
    nothing hangs; after SIGCONT processing resumes with no loss."""
    r = redis_server.client()
    fl = fleet({"pool:fz": http_pool(sink, "fz", workers=2, block="1s")})
    kids = one_child(fl, 2)
    prod = Producer(redis_server, "fz", rate=100).start()
    fl.wait_for(lambda: len(delivered_ids(sink)) >= 100, what="load flowing")
    redis_server.kill(signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        fl.wait_for(lambda: fl.health()[0] == 503, timeout=10, what="/health 503 while frozen")
        assert fl.http_get("/metrics", timeout=2)[0] == 200, "the master is not stuck"
        time.sleep(max(0.0, 8 - (time.monotonic() - t0)))
    finally:
        redis_server.kill(signal.SIGCONT)
    fl.wait_healthy(timeout=TIMEOUT)
    time.sleep(1)
    ids = prod.stop()
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), timeout=BIG_TIMEOUT,
                what=f"all {len(ids)} messages delivered after the freeze")
    wait_pending(fl, r, "fz", "fz-group", 0)
    assert fl.children() == kids and restarts(fl, "fz") == 0


def test_sigterm_while_redis_is_frozen_exits_within_drain_timeout(redis_server, sink, fleet):
    """[15] SIGTERM during a freeze: no process waits on the frozen Redis longer than its
    bounds; the master exits within drain_timeout plus a little."""
    r = redis_server.client()
    fl = fleet({"fleet": {"drain_timeout": "5s"},
                "pool:ft": http_pool(sink, "ft", workers=2, block="1s")})
    kids = one_child(fl, 2)
    add_messages(r, "ft", 50, fields=lambda i: {"type": "t", "n": str(i)})
    sink.wait_count(50, status=200)
    redis_server.kill(signal.SIGSTOP)
    try:
        time.sleep(2)           # every child now waits on the frozen server
        t0 = time.monotonic()
        fl.signal(signal.SIGTERM)
        code = fl.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        redis_server.kill(signal.SIGCONT)
    print(f"\nmaster exited {code} {took:.1f} s after SIGTERM with redis frozen (drain_timeout 5 s)")
    assert took < 5 + 4, f"exit took {took:.1f} s"
    wait_until(lambda: not any(os.path.exists(f"/proc/{p}") and
                               open(f"/proc/{p}/stat").read().split()[2] not in "ZX" for p in kids),
               timeout=10, what="children gone")


@pytest.mark.parametrize("where", ["config", "env"])
def test_wrong_redis_password_is_one_clear_error_no_hot_loop_no_leak(redis_factory, fleet, where):
    """[16] WRONGPASS: a clear error (not one per millisecond), children that are not respawned
    in a hot loop, the reason in /health, and the password nowhere: not in the logs, not in
    /proc/PID/cmdline or /proc/PID/environ of any process."""
    srv = redis_factory(password="the-right-one-9")
    wrong = "Wr0ng-pass-7c1f9e"
    url = f"redis://:{wrong}@127.0.0.1:{srv.port}/0"
    if where == "config":
        fl = fleet({"fleet": {"redis": url}, "pool:pw": log_pool("pw", workers=2)})
    else:
        fl = fleet({"fleet": {"redis": f"redis://127.0.0.1:{srv.port}/0"},
                    "pool:pw": log_pool("pw", workers=2)}, env={"STREAMFLEET_REDIS": url})
    fl.wait_for(lambda: fl.health()[0] == 503, what="/health 503")
    t0 = time.monotonic()
    for pid in [fl.pid, *fl.children()]:
        for what in ("cmdline", "environ"):
            assert wrong.encode() not in proc_bytes(pid, what), f"password in /proc/{pid}/{what}"
    r0 = restarts(fl, "pw")
    time.sleep(10)
    n = restarts(fl, "pw") - r0
    assert n <= 2, f"{n} restarts in 10 s: a hot loop"
    status, body = fl.health()
    assert status == 503
    text = str(body).lower()
    assert "auth" in text or "pass" in text or "credential" in text, body
    for pid in [fl.pid, *fl.children()]:
        for what in ("cmdline", "environ"):
            assert wrong.encode() not in proc_bytes(pid, what), f"password in /proc/{pid}/{what}"
    fl.stop()
    log, out = fl.log(), fl.stdout()
    assert wrong not in log and wrong not in out
    errors = [line for line in log.splitlines() if "WRONGPASS" in line or "credentials" in line]
    assert errors, f"no clear error line:\n{excerpt(log)}"
    assert len(errors) <= 8, "\n".join(errors)
    elapsed = time.monotonic() - t0
    assert len(log.splitlines()) / max(elapsed, 1) < 5, excerpt(log)


def test_client_kill_under_load_children_reconnect_and_live_on(redis_server, sink, fleet):
    """[45] Redis drops the children's connections (CLIENT KILL) while they write: no death by
    SIGPIPE, a reconnect, and no loss."""
    r = redis_server.client()
    fl = fleet({"pool:ck": http_pool(sink, "ck", workers=2, inflight=16, batch=50)})
    kids = one_child(fl, 2)
    prod = Producer(redis_server, "ck", rate=400, total=4000).start()
    fl.wait_for(lambda: len(delivered_ids(sink)) >= 200, what="load flowing")
    killed = 0
    for _ in range(20):
        killed += r.client_kill_filter(_type="normal", skipme=True)
        time.sleep(0.2)
    ids = prod.stop()
    fl.wait_for(lambda: set(ids) <= delivered_ids(sink), timeout=BIG_TIMEOUT,
                what=f"all {len(ids)} delivered")
    wait_pending(fl, r, "ck", "ck-group", 0)
    print(f"\n{killed} connections killed; {len(ids)} messages delivered")
    assert killed >= 20
    assert fl.children() == kids and restarts(fl, "ck") == 0, "a child died (SIGPIPE?)"
    assert "signal 13" not in fl.log()


# --------------------------------------------------------------------------------------------
# durability of the Redis server
# --------------------------------------------------------------------------------------------

def test_redis_without_aof_is_reported_not_durable_loudly(redis_factory, fleet):
    srv = redis_factory(appendonly=False)
    fl = fleet({"fleet": {"redis": srv.url}, "pool:du": log_pool("du")})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_durable") == 0,
                what="streamfleet_redis_durable 0")
    assert "NOT DURABLE" in fl.log() and "appendonly" in fl.log()
    status, body = fl.health()
    assert body["redis"].get("durable") is False, body
    assert "appendonly" in body["redis"].get("durability", ""), body


def test_redis_with_an_evicting_maxmemory_policy_is_reported_not_durable(redis_factory, fleet):
    srv = redis_factory(extra_args=["--maxmemory-policy", "allkeys-lru"])
    fl = fleet({"fleet": {"redis": srv.url}, "pool:ev": log_pool("ev")})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_durable") == 0,
                what="streamfleet_redis_durable 0")
    assert "NOT DURABLE" in fl.log() and "allkeys-lru" in fl.log()


def test_redis_with_aof_and_noeviction_is_reported_durable(redis_server, fleet):
    fl = fleet({"pool:ok": log_pool("ok")})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_durable") == 1,
                what="streamfleet_redis_durable 1")
    assert "NOT DURABLE" not in fl.log()
    assert fl.health()[1]["redis"].get("durable") is True


def test_durability_is_checked_again_after_a_reconnect(redis_server, fleet):
    fl = fleet({"pool:rc": log_pool("rc")})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_durable") == 1)
    r = redis_server.client()
    r.config_set("appendonly", "no")
    r.client_kill_filter(_type="normal", skipme=True)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_redis_durable") == 0,
                what="durable 0 after the reconnect")
    assert "NOT DURABLE" in fl.log()
