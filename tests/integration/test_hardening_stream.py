"""Hardening of the worker's Redis stream code (child/stream.c, child/child.c): dead letters of
messages with thousands of fields, attempt numbers when the pending list holds entries that are
not in the batch, binary-safe done-marker keys, retries that must not take back an entry another
consumer claimed, UNBLOCKED errors that are not a missing group, and the memory of one read.

Each test drives the real binary against its own redis-server and HTTP sink (conftest.py)."""
import os
import signal
import threading
import time

from conftest import TIMEOUT, add_messages, pending_count, wait_until
from reliability_helpers import (BIG_TIMEOUT, by_webhook_id, dlq_entries, failed_once, http_pool, log_pool,
                                 metric, one_child, own_consumer, replaced, requests_for, restarts,
                                 wait_metric, wait_pending)


def many_fields(n):
    """n fields f0..f{n-1}, with values that differ from their names (and one binary)."""
    f = {f"f{i:05d}": f"v{i}" for i in range(n)}
    f["f00001"] = b"\x00\xffbin"
    return f


def raw_dlq(client, dlq):
    """[(id, [(name, value), ...])] of a dead-letter stream, bytes, in field order."""
    return [(i.decode(), list(f.items())) for i, f in client.xrange(dlq)]


def vm_hwm_kib(pid):
    """Peak resident memory of pid (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for {pid}")


# --------------------------------------------------------------------------------------------
# 1. dead letters of messages with thousands of fields
# --------------------------------------------------------------------------------------------

def check_many_field_dead_letter(r, dlq, eid, fields, reason, attempts):
    ((_, items),) = raw_dlq(r, dlq)
    names = [k for k, _ in items]
    want = [k.encode() for k in fields]
    assert names[:len(want)] == want, "every original field, in its order"
    got = dict(items)
    for k, v in fields.items():
        assert got[k.encode()] == (v if isinstance(v, bytes) else v.encode()), k
    assert set(names[len(want):]) == {b"dlq.stream", b"dlq.id", b"dlq.reason", b"dlq.attempts",
                                      b"dlq.error", b"dlq.time"}
    assert got[b"dlq.id"].decode() == eid
    assert got[b"dlq.reason"].decode() == reason
    assert got[b"dlq.attempts"].decode() == str(attempts)


def test_5000_field_message_is_dead_lettered_at_once_with_every_field(redis_server, sink, fleet):
    sink.status = 422
    r = redis_server.client()
    fl = fleet({"pool:mf": http_pool(sink, "mf", backoff_base="100ms", backoff_max="300ms")})
    fields = {"type": "t", **many_fields(5000)}
    (eid,) = add_messages(r, "mf", 1, fields=fields)
    fl.wait_for(lambda: dlq_entries(r, "mf:dlq"), timeout=TIMEOUT, what="the dead letter")
    wait_pending(fl, r, "mf", "mf-group", 0)
    check_many_field_dead_letter(r, "mf:dlq", eid, fields, "http_422", 1)
    assert len(sink.snapshot()) == 1
    assert metric(fl, "streamfleet_dlq_failures_total", "mf") == 0


def test_5000_field_message_is_dead_lettered_after_max_attempts(redis_server, sink, fleet):
    sink.status = 500
    r = redis_server.client()
    fl = fleet({"pool:mx": http_pool(sink, "mx", backoff_base="200ms", backoff_jitter="0%",
                                     max_attempts=2)})
    fields = {"type": "t", **many_fields(5000)}
    (eid,) = add_messages(r, "mx", 1, fields=fields)
    fl.wait_for(lambda: dlq_entries(r, "mx:dlq"), timeout=TIMEOUT, what="the dead letter")
    wait_pending(fl, r, "mx", "mx-group", 0)
    check_many_field_dead_letter(r, "mx:dlq", eid, fields, "max_attempts", 2)
    assert [q.headers["streamfleet-attempt"] for q in sink.snapshot()] == ["1", "2"]


def test_dead_letter_move_of_an_entry_claimed_by_another_consumer_meanwhile_adds_nothing(
        redis_server, sink, fleet):
    """The move of a many-field message checks, atomically, that the entry is still ours: an
    entry another consumer took over is left to it and no dead letter stays behind."""
    sink.status = 422
    r = redis_server.client()
    r.set("cl:dlq", "x")          # the first move fails: the entry waits DLQ_RETRY (5 s)
    fl = fleet({"pool:cl": http_pool(sink, "cl")})
    (eid,) = add_messages(r, "cl", 1, fields={"type": "t", **many_fields(5000)})
    wait_metric(fl, "streamfleet_dlq_failures_total", "cl", lambda v: v >= 1)
    r.xclaim("cl", "cl-group", "someone-else", 0, [eid], justid=True)
    r.delete("cl:dlq")
    time.sleep(8)
    assert dlq_entries(r, "cl:dlq") == [], "no dead letter of an entry that is not ours"
    (p,) = r.xpending_range("cl", "cl-group", "-", "+", 5)
    assert p["consumer"] == b"someone-else"


# --------------------------------------------------------------------------------------------
# 2. attempt numbers when the pending list holds an entry that is not in the batch
# --------------------------------------------------------------------------------------------

def test_deleted_entry_between_pending_entries_does_not_reset_later_attempt_numbers(
        redis_server, sink, fleet):
    """The worker is killed after each failed attempt; its replacement re-reads its pending
    list, where an XDELed entry lies between two others: the one after it still gets its real
    attempt number and is dead-lettered after max_attempts."""
    sink.status = 500
    r = redis_server.client()
    fl = fleet({"pool:gap": http_pool(sink, "gap", body_field="payload", backoff_base="1m",
                                      max_attempts=3, claim_idle="10m")})
    (child,) = one_child(fl)
    first, gone, last = add_messages(r, "gap", 3, fields=lambda i: {
        "type": "t", "payload": ["first", "gone", "last"][i]})
    fl.wait_for(lambda: len(requests_for(sink, "last")) == 1 and len(requests_for(sink, "gone")) == 1,
                what="the three attempted once")
    assert r.xdel("gap", gone) == 1
    for n in (2, 3):
        os.kill(child, signal.SIGKILL)
        (child,) = replaced(fl, child)
        fl.wait_for(lambda: len(requests_for(sink, "last")) >= n, what=f"attempt {n} of last")
    fl.wait_for(lambda: [f["dlq.id"] for _, f in dlq_entries(r, "gap:dlq")].count(last) == 1,
                timeout=TIMEOUT, what="last dead-lettered")
    attempts = [q.headers["streamfleet-attempt"] for q in requests_for(sink, "last")]
    assert attempts == ["1", "2", "3"], attempts
    f = {f["dlq.id"]: f for _, f in dlq_entries(r, "gap:dlq")}
    assert f[last]["dlq.reason"] == "max_attempts" and f[last]["dlq.attempts"] == "3"


def test_orphans_reclaimed_around_an_own_pending_entry_get_their_real_attempt_numbers(
        redis_server, sink, fleet):
    """XAUTOCLAIM takes two orphans that were delivered 7 times; an entry of our own pending
    list lies between them. Both orphans are over max_attempts and are dead-lettered; neither
    reaches the receiver as attempt 1."""
    r = redis_server.client()
    r.xgroup_create("oa", "oa-group", id="0", mkstream=True)
    o1, mine, o2 = add_messages(r, "oa", 3, fields=lambda i: {"type": "t", "payload": f"m{i}"})
    r.xreadgroup("oa-group", "dead-host:oa:0", {"oa": ">"}, count=3)
    r.xclaim("oa", "oa-group", "dead-host:oa:0", 0, [o1, o2], idle=3_600_000, retrycount=7,
             justid=True)
    # ours: the worker reads it from its pending list at start, it fails and waits a minute
    # for its retry, in our pending list between the two orphans
    r.xclaim("oa", "oa-group", own_consumer("oa"), 0, [mine], justid=True)
    sink.rule(500, body_contains=b"m1")
    fl = fleet({"pool:oa": http_pool(sink, "oa", body_field="payload", max_attempts=3,
                                     claim_idle="30s", backoff_base="1m")})
    fl.wait_for(lambda: len(dlq_entries(r, "oa:dlq")) >= 2, timeout=TIMEOUT,
                what="both orphans dead-lettered")
    got = {f["dlq.id"]: f for _, f in dlq_entries(r, "oa:dlq")}
    assert set(got) == {o1, o2}
    assert all(f["dlq.reason"] == "max_attempts" for f in got.values())
    assert not requests_for(sink, "m0") and not requests_for(sink, "m2"), \
        [q.headers.get("streamfleet-attempt") for q in sink.snapshot()]
    (p,) = r.xpending_range("oa", "oa-group", "-", "+", 10)
    assert p["message_id"].decode() == mine, "ours still waits for its retry"


# --------------------------------------------------------------------------------------------
# 3. binary-safe done-marker keys
# --------------------------------------------------------------------------------------------

def test_id_with_a_nul_byte_is_not_taken_for_the_id_before_the_nul(redis_server, sink, fleet):
    """With the http handler an id with a NUL is a bad message: dead-lettered, never acked as a
    duplicate of "abc"."""
    r = redis_server.client()
    fl = fleet({"pool:nu": http_pool(sink, "nu", id_field="event_id", dedupe_ttl="1h")})
    add_messages(r, "nu", 1, fields={"type": "t", "event_id": "abc"})
    fl.wait_for(lambda: "abc" in by_webhook_id(sink.snapshot(), ok=True), what="abc delivered")
    wait_pending(fl, r, "nu", "nu-group", 0)
    (eid,) = add_messages(r, "nu", 1, fields={"type": "t", "event_id": b"abc\x00zzz"})
    fl.wait_for(lambda: dlq_entries(r, "nu:dlq"), timeout=TIMEOUT, what="dead-lettered")
    wait_pending(fl, r, "nu", "nu-group", 0)
    ((_, f),) = dlq_entries(r, "nu:dlq")
    assert f["dlq.id"] == eid and f["dlq.reason"] == "bad_message"
    assert metric(fl, "streamfleet_messages_duplicate_total", "nu") == 0
    # the entry id as message id (no id_field) cannot hold a NUL: id_field is http-only, and
    # there a NUL is a bad message; the marker keys are built and sent with their length.


# --------------------------------------------------------------------------------------------
# 4. a retry does not take back an entry another consumer claimed
# --------------------------------------------------------------------------------------------

def test_retry_leaves_an_entry_another_consumer_claimed_meanwhile(redis_server, sink, fleet):
    r, fl, eid = failed_once(redis_server, sink, fleet, "st", "victim", claim_idle="10m")
    r.xclaim("st", "st-group", "other-host:st:0", 0, [eid], justid=True)
    time.sleep(6)           # the retry fell due 2 s after the failure
    (p,) = r.xpending_range("st", "st-group", "-", "+", 5)
    assert p["consumer"] == b"other-host:st:0", "the entry stays with the consumer that claimed it"
    assert len(requests_for(sink, "victim")) == 1
    # the worker goes on with other work, and does not count the lost retry as a failure
    (ok,) = add_messages(r, "st", 1, fields={"type": "t", "payload": "after"})
    fl.wait_for(lambda: ok in by_webhook_id(sink.snapshot(), ok=True), what="later message")
    assert metric(fl, "streamfleet_messages_failed_total", "st") == 1
    assert dlq_entries(r, "st:dlq") == []


# --------------------------------------------------------------------------------------------
# 5. UNBLOCKED that is not a missing group
# --------------------------------------------------------------------------------------------

def blocked_reader_ids(r, cmd="xreadgroup"):
    return [c["id"] for c in r.client_list() if c.get("cmd") == cmd and "b" in c.get("flags", "")]


def test_client_unblock_error_is_a_connection_event_not_a_missing_group(redis_server, sink, fleet):
    sink.rule(500, body_contains=b"waits", times=1)
    r = redis_server.client()
    fl = fleet({"pool:ub": http_pool(sink, "ub", body_field="payload", block="5s",
                                     backoff_base="4s", backoff_jitter="0%", claim_idle="10m")})
    (child,) = one_child(fl)
    (eid,) = add_messages(r, "ub", 1, fields={"type": "t", "payload": "waits"})
    sink.wait_count(1)
    # the worker blocks in XREADGROUP until the retry falls due (4 s)
    (cid,) = fl.wait_for(lambda: blocked_reader_ids(r), what="the worker blocked in XREADGROUP")
    assert r.execute_command("CLIENT", "UNBLOCK", cid, "ERROR") == 1
    # the retry state is kept: the waiting message is retried on time and succeeds
    fl.wait_for(lambda: eid in by_webhook_id(sink.snapshot(), ok=True), timeout=15,
                what="the waiting message retried")
    wait_pending(fl, r, "ub", "ub-group", 0)
    later = add_messages(r, "ub", 3, fields=lambda i: {"type": "t", "payload": f"later{i}"})
    fl.wait_for(lambda: set(later) <= set(by_webhook_id(sink.snapshot(), ok=True)),
                what="later messages delivered")
    assert metric(fl, "streamfleet_group_recreated_total", "ub") == 0
    assert metric(fl, "streamfleet_redis_errors_total", "ub") >= 1
    assert fl.children() == [child] and restarts(fl, "ub") == 0


# --------------------------------------------------------------------------------------------
# 6. the memory of one read is bounded
# --------------------------------------------------------------------------------------------

def test_50mb_entry_is_dead_lettered_too_large_without_buffering_it(redis_server, sink, fleet):
    r = redis_server.client()
    # ASan keeps freed memory in quarantine (256 MB by default), which would count every
    # buffer a growing read ever had: keep it small so that peak RSS shows what is held.
    fl = fleet({"pool:hg": http_pool(sink, "hg", body_field="payload", batch=4,
                                     max_message_bytes="1M")},
               env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"})
    (child,) = one_child(fl)
    warm = add_messages(r, "hg", 3, fields=lambda i: {"type": "t", "payload": f"warm{i}"})
    fl.wait_for(lambda: set(warm) <= set(by_webhook_id(sink.snapshot(), ok=True)), what="warm-up")
    time.sleep(1)
    before = vm_hwm_kib(child)
    huge = b"h" * (50 * 1024 * 1024)
    (big,) = add_messages(r, "hg", 1, fields={"type": "t", "payload": huge})
    after = add_messages(r, "hg", 3, fields=lambda i: {"type": "t", "payload": f"after{i}"})
    fl.wait_for(lambda: dlq_entries(r, "hg:dlq"), timeout=BIG_TIMEOUT, what="the dead letter")
    fl.wait_for(lambda: set(after) <= set(by_webhook_id(sink.snapshot(), ok=True)),
                what="the later ones delivered")
    wait_pending(fl, r, "hg", "hg-group", 0)
    (dlq_id, f) = r.xrange("hg:dlq")[0]
    assert f[b"dlq.id"].decode() == big and f[b"dlq.reason"] == b"too_large"
    assert f[b"payload"] == huge, "the dead letter keeps the body"
    grew = vm_hwm_kib(child) - before
    print(f"\nworker peak RSS grew by {grew} KiB reading a 50 MiB entry")
    assert grew < 40 * 1024, f"peak RSS grew by {grew} KiB: the entry was buffered"
    assert fl.children() == [child], "no worker died"


def test_message_of_many_tiny_fields_within_max_message_bytes_is_handled_not_dead_lettered(
        redis_server, fleet):
    """60,000 one-byte names and values: 60 KB of data under max_message_bytes 64K, but about
    7 bytes each in RESP, over the usual bound of a read. The read outgrows its bound, the
    entry is sized in Redis, found within the limit, and read alone with room for it."""
    r = redis_server.client()
    fl = fleet({"pool:tf": log_pool("tf", handler="noop", batch=2, max_message_bytes="64K")})
    (child,) = one_child(fl)
    args = ["a", "b"] * 30000
    eid = r.execute_command("XADD", "tf", "*", *args).decode()
    (small,) = add_messages(r, "tf", 1, fields={"n": "1"})
    wait_metric(fl, "streamfleet_messages_acked_total", "tf", lambda v: v == 2)
    wait_pending(fl, r, "tf", "tf-group", 0)
    assert not r.exists("tf:dlq"), "not dead-lettered: it is within max_message_bytes"
    assert metric(fl, "streamfleet_messages_dead_lettered_total", "tf") == 0
    assert fl.children() == [child]
    assert eid and small
