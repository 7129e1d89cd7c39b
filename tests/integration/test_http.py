"""Integration tests of HTTP delivery (issue 3): the real binary delivers to the real sink.

One behaviour per test. Each test starts its own redis-server, sink and fleet on free ports; the
fixtures stop them and fail the test on any sanitizer report in the fleet's stderr."""
import base64
import hashlib
import hmac
import json
import os
import time
import urllib.parse

import pytest

from conftest import SLOWNESS, TIMEOUT, add_messages, pending_count, wait_until

BIG_TIMEOUT = 120 * SLOWNESS


def http_pool(sink, stream, path="/events/{type}", workers=1, batch=50, block="200ms", **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": workers, "batch": batch,
            "block": block, "handler": "http", "url": sink.url + path, **extra}


def by_webhook_id(reqs, status=None):
    """{webhook-id: [requests]} of the sink's requests (optionally only those answered status)."""
    out = {}
    for r in reqs:
        if status is None or r.status == status:
            out.setdefault(r.headers.get("webhook-id"), []).append(r)
    return out


def dlq_entries(client, stream):
    """[(id, {field: value})] of the pool's dead-letter stream, str-decoded."""
    return [(i.decode(), {k.decode(): v.decode(errors="replace") for k, v in f.items()})
            for i, f in client.xrange(f"{stream}:dlq")]


def child_pids(fl):
    return fl.children()


def metric_sum(fl, name, **labels):
    return fl.metrics().sum(name, **labels)


# --------------------------------------------------------------------------------------------
# what a delivery looks like
# --------------------------------------------------------------------------------------------

def test_2000_messages_delivered_with_path_body_and_headers(redis_server, sink, fleet):
    r = redis_server.client()
    n = 2000
    ids = add_messages(r, "orders", n, fields=lambda i: {
        "type": f"kind{i % 5}", "payload": json.dumps({"n": i}), "n": str(i)})
    t0 = time.time()
    fl = fleet({"pool:orders": http_pool(sink, "orders", workers=2, inflight=16, body_field="payload",
                                         header=["X-Source: streamfleet", "Authorization: Bearer t0ken"])})
    sink.wait_count(n, timeout=BIG_TIMEOUT, status=200)
    fl.wait_for(lambda: pending_count(r, "orders", "orders-group") == 0, what="pending 0")

    got = by_webhook_id(sink.snapshot(), status=200)
    assert set(got) == set(ids), "every entry id arrives as webhook-id"
    assert sum(len(v) for v in got.values()) == n, "no duplicates on a healthy endpoint"
    for i, eid in enumerate(ids):
        (req,) = got[eid]
        assert req.method == "POST"
        assert req.path == f"/events/kind{i % 5}"
        assert json.loads(req.body) == {"n": i}
        h = req.headers
        assert h["content-type"] == "application/json"
        assert h["x-source"] == "streamfleet"
        assert h["authorization"] == "Bearer t0ken"
        assert h["streamfleet-attempt"] == "1"
        assert t0 - 5 <= int(h["webhook-timestamp"]) <= time.time() + 5
        assert "webhook-signature" not in h, "no signing secret configured"
        assert "expect" not in h
        assert h["user-agent"].startswith("streamfleet/")
    m = fl.metrics()
    assert m.sum("streamfleet_http_requests_total", pool="orders", code="200") == n
    assert m.value("streamfleet_http_request_duration_seconds_count", pool="orders") == n
    assert m.value("streamfleet_circuit_open", pool="orders") == 0


def test_signature_verifies_with_python_hmac(redis_server, sink, fleet, tmp_path):
    key = os.urandom(32)
    secret = tmp_path / "secret"
    secret.write_text("whsec_" + base64.b64encode(key).decode() + "\n")
    secret.chmod(0o600)
    r = redis_server.client()
    n = 50
    # half carry their own id (id_field), half fall back to the entry id; some lack the body
    # field and get the JSON object of all their fields as the body
    def fields(i):
        f = {"type": "signed", "n": str(i)}
        if i % 2 == 0:
            f["event_id"] = f"evt_{i}"
        if i % 3:
            f["payload"] = f'{{"i": {i}, "s": "caf\u00e9"}}'
        return f
    ids = add_messages(r, "sig", n, fields=fields)
    fl = fleet({"pool:sig": http_pool(sink, "sig", body_field="payload", id_field="event_id",
                                      signing_secret_file=str(secret))})
    reqs = sink.wait_count(n, status=200)
    fl.wait_for(lambda: pending_count(r, "sig", "sig-group") == 0, what="pending 0")

    want_ids = {f"evt_{i}" if i % 2 == 0 else ids[i] for i in range(n)}
    assert {q.headers["webhook-id"] for q in reqs} == want_ids
    for q in reqs:
        msg_id, ts = q.headers["webhook-id"], q.headers["webhook-timestamp"]
        signed = f"{msg_id}.{ts}.".encode() + q.body
        want = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert q.headers["webhook-signature"] == want
        body = json.loads(q.body)
        i = int(body["n"]) if "n" in body else body["i"]
        if i % 3:
            assert body == {"i": i, "s": "caf\u00e9"}
        else:
            assert body == {k: v for k, v in fields(i).items()}, "JSON object of all fields"
            assert q.headers["content-type"] == "application/json"
    assert secret.read_text() not in fl.log()


def test_put_sends_json_object_of_all_fields_when_no_body_field(redis_server, sink, fleet):
    r = redis_server.client()
    weird = {"type": "t", "quote": 'say "hi"\n', "ctl": "\x01\x7f", "uni": "\u2603", "empty": ""}
    (eid,) = add_messages(r, "put", 1, fields=weird)
    fleet({"pool:put": http_pool(sink, "put", method="PUT", content_type="application/vnd.x+json")})
    (q,) = sink.wait_count(1, status=200)
    assert q.method == "PUT" and q.path == "/events/t"
    assert q.headers["content-type"] == "application/vnd.x+json"
    assert q.headers["webhook-id"] == eid
    assert json.loads(q.body) == weird


def test_url_fields_are_percent_encoded_and_cannot_move_the_request(redis_server, sink, fleet):
    nasty = ["../", "../../admin", "..", ".", "?x=1", "#frag", "@evil.example", "user@127.0.0.1:1",
             "a b", "http://evil.example/", "%2e%2e", "caf\u00e9 \u2603", "a\r\nHost: evil", "/", "\\"]
    r = redis_server.client()
    ids = add_messages(r, "enc", len(nasty), fields=lambda i: {"type": nasty[i], "i": str(i)})
    fleet({"pool:enc": http_pool(sink, "enc", path="/t/{type}/x?u={type}")})
    reqs = sink.wait_count(len(nasty), status=200)
    time.sleep(0.5)
    reqs = sink.snapshot()
    assert len(reqs) == len(nasty), "every request reached the configured host and port"
    got = {q.headers["webhook-id"]: q.path for q in reqs}
    for i, v in enumerate(nasty):
        enc = urllib.parse.quote(v.encode(), safe="")
        if v and set(v) == {"."}:
            enc = "%2E" * len(v)        # a dot-segment would be resolved away by the client
        assert got[ids[i]] == f"/t/{enc}/x?u={enc}", f"value {v!r}"


def test_503_with_retry_after_1_is_retried_after_about_a_second(redis_server, sink, fleet):
    sink.rule(503, body_contains=b"flaky", retry_after="1", times=1)
    r = redis_server.client()
    (eid,) = add_messages(r, "ra", 1, fields={"type": "x", "payload": "flaky"})
    fl = fleet({"pool:ra": http_pool(sink, "ra", body_field="payload", backoff_base="10s")})
    first, second = sink.wait_count(2)
    fl.wait_for(lambda: pending_count(r, "ra", "ra-group") == 0, what="pending 0")
    assert (first.status, second.status) == (503, 200)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == eid
    gap = second.time - first.time
    print(f"\n503 Retry-After: 1 -> retried after {gap:.2f} s")
    assert 0.9 <= gap < 4.0, f"retried after {gap:.2f} s (Retry-After: 1, backoff_base 10 s)"
    assert second.headers["streamfleet-attempt"] == "2"
    assert len(sink.snapshot()) == 2


def test_422_is_not_retried(redis_server, sink, fleet):
    sink.rule(422, body_contains=b"poison")
    r = redis_server.client()
    ids = add_messages(r, "perm", 5, fields=lambda i: {"type": "x", "payload": "poison" if i == 2 else f"ok{i}"})
    fl = fleet({"pool:perm": http_pool(sink, "perm", body_field="payload", backoff_base="100ms",
                                       backoff_max="200ms")})
    sink.wait_count(4, status=200)
    fl.wait_for(lambda: pending_count(r, "perm", "perm-group") == 0, what="pending 0")
    time.sleep(1.5)     # several retry periods: nothing more may come
    poison = [q for q in sink.snapshot() if q.body == b"poison"]
    assert len(poison) == 1 and poison[0].status == 422
    (dead,) = dlq_entries(r, "perm")
    assert dead[1]["dlq.id"] == ids[2] and dead[1]["dlq.reason"] == "http_422"
    assert metric_sum(fl, "streamfleet_http_requests_total", pool="perm", code="422") == 1


# --------------------------------------------------------------------------------------------
# concurrency and connection reuse
# --------------------------------------------------------------------------------------------

def test_inflight_32_delivers_320_slow_requests_concurrently_over_kept_alive_connections(
        redis_server, sink, fleet):
    sink.delay = 0.1
    r = redis_server.client()
    n = 320
    ids = add_messages(r, "fast", n, fields=lambda i: {"type": "slow", "n": str(i)})
    fl = fleet({"pool:fast": http_pool(sink, "fast", workers=1, batch=32, inflight=32)})
    reqs = sink.wait_count(n, timeout=BIG_TIMEOUT, status=200)
    fl.wait_for(lambda: pending_count(r, "fast", "fast-group") == 0, what="pending 0")
    reqs = sink.snapshot()
    assert {q.headers["webhook-id"] for q in reqs} == set(ids)
    # the sink stamps a request when it has read it, before its 100 ms: first..last + 0.1
    span = max(q.time for q in reqs) - min(q.time for q in reqs) + 0.1
    conns = len({q.conn_id for q in reqs})
    print(f"\n{n} messages at 100 ms each, inflight 32: {span:.2f} s, "
          f"max concurrency {sink.max_concurrent}, {conns} connections ({sink.connections} accepted)")
    assert span < 4.0 * SLOWNESS
    assert sink.max_concurrent > 16
    assert sink.max_concurrent <= 32
    assert sink.connections <= 32, "keep-alive: at most one connection per transfer slot"


# --------------------------------------------------------------------------------------------
# endpoint outage: the circuit breaker
# --------------------------------------------------------------------------------------------

def test_endpoint_down_for_10s_then_back_receives_every_message(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:out": http_pool(sink, "out", batch=10, inflight=8, connect_timeout="1s",
                                      backoff_base="200ms", backoff_max="2s", max_attempts=3)})
    before = add_messages(r, "out", 20, fields=lambda i: {"type": "before", "n": str(i)})
    sink.wait_count(20, status=200)

    sink.refuse()
    down_at = time.monotonic()
    during = add_messages(r, "out", 50, fields=lambda i: {"type": "during", "n": str(i)})
    fl.wait_for(lambda: fl.metrics().value("streamfleet_circuit_open", pool="out") == 1,
                what="circuit open")
    time.sleep(max(0.0, 10 - (time.monotonic() - down_at)))
    m = fl.metrics()
    assert m.value("streamfleet_circuit_open", pool="out") == 1
    # 8 in flight when it went down, then one probe at a time (1 s, 2 s, 2 s, ...): no hot loop
    errors = m.sum("streamfleet_http_requests_total", pool="out", code="error")
    assert 5 <= errors <= 30, f"{errors} failed attempts in 10 s"
    sink.resume()
    up_at = time.monotonic()

    want = set(before + during)
    sink.wait_for(lambda reqs: want <= set(by_webhook_id(reqs, status=200)) or None,
                  timeout=BIG_TIMEOUT, what="every message delivered after the outage")
    recovered = time.monotonic() - up_at
    fl.wait_for(lambda: pending_count(r, "out", "out-group") == 0, timeout=BIG_TIMEOUT,
                what="pending 0")
    assert dlq_entries(r, "out") == [], "nothing dead-lettered because of the outage"
    fl.wait_for(lambda: fl.metrics().value("streamfleet_circuit_open", pool="out") == 0,
                what="circuit closed")
    log = fl.log()
    assert log.count("circuit open") == 1 and log.count("circuit closed") == 1
    delivered = by_webhook_id(sink.snapshot(), status=200)
    dups = sum(len(v) - 1 for v in delivered.values())
    print(f"\noutage of 10 s: {errors:.0f} failed attempts while down, all {len(want)} delivered "
          f"{recovered:.1f} s after the endpoint came back, {dups} duplicates")
    assert dups == 0, "the held probe message is reported once"


# --------------------------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------------------------

def test_mutual_tls_delivers_with_a_client_certificate(redis_server, sink_factory, certs, fleet):
    tls_sink = sink_factory(certfile=str(certs.server_cert), keyfile=str(certs.server_key),
                            cafile=str(certs.ca), require_client_cert=True)
    r = redis_server.client()
    ids = add_messages(r, "mtls", 10, fields=lambda i: {"type": "tls", "n": str(i)})
    fl = fleet({"pool:mtls": http_pool(tls_sink, "mtls", tls_ca=str(certs.ca),
                                       tls_cert=str(certs.client_cert), tls_key=str(certs.client_key))})
    reqs = tls_sink.wait_count(10, status=200)
    fl.wait_for(lambda: pending_count(r, "mtls", "mtls-group") == 0, what="pending 0")
    assert {q.headers["webhook-id"] for q in reqs} == set(ids)
    for q in reqs:
        subject = dict(x[0] for x in q.peer_cert["subject"])
        assert subject["commonName"] == "streamfleet-client"
    assert tls_sink.tls_errors == []


def test_server_certificate_from_another_ca_is_refused(redis_server, sink_factory, certs, fleet):
    rogue = sink_factory(certfile=str(certs.rogue_server_cert), keyfile=str(certs.rogue_server_key))
    r = redis_server.client()
    add_messages(r, "rogue", 1, fields={"type": "tls"})
    fl = fleet({"pool:rogue": http_pool(rogue, "rogue", tls_ca=str(certs.ca), backoff_base="200ms",
                                        backoff_max="1s")})
    fl.wait_for(lambda: metric_sum(fl, "streamfleet_http_requests_total", pool="rogue",
                                   code="error") >= 2, what="refused TLS attempts")
    assert rogue.snapshot() == [], "no request may reach a server the CA does not vouch for"
    assert rogue.tls_errors, "the handshake was attempted and aborted"
    assert pending_count(r, "rogue", "rogue-group") == 1, "the message stays pending"
    assert dlq_entries(r, "rogue") == [], "a TLS problem is not the message's fault"
    assert "certificate" in fl.log()


def test_tls_verify_no_accepts_any_server_certificate(redis_server, sink_factory, certs, fleet):
    rogue = sink_factory(certfile=str(certs.rogue_server_cert), keyfile=str(certs.rogue_server_key))
    r = redis_server.client()
    (eid,) = add_messages(r, "noverify", 1, fields={"type": "tls"})
    fl = fleet({"pool:noverify": http_pool(rogue, "noverify", tls_ca=str(certs.ca), tls_verify=False)})
    (q,) = rogue.wait_count(1, status=200)
    assert q.headers["webhook-id"] == eid
    fl.wait_for(lambda: pending_count(r, "noverify", "noverify-group") == 0, what="pending 0")


def test_missing_client_certificate_delivers_nothing(redis_server, sink_factory, certs, fleet):
    tls_sink = sink_factory(certfile=str(certs.server_cert), keyfile=str(certs.server_key),
                            cafile=str(certs.ca), require_client_cert=True)
    r = redis_server.client()
    add_messages(r, "nocert", 1, fields={"type": "tls"})
    fl = fleet({"pool:nocert": http_pool(tls_sink, "nocert", tls_ca=str(certs.ca),
                                         backoff_base="200ms", backoff_max="1s")})
    fl.wait_for(lambda: metric_sum(fl, "streamfleet_http_requests_total", pool="nocert",
                                   code="error") >= 2, what="refused attempts")
    assert tls_sink.snapshot() == []
    assert tls_sink.tls_errors
    assert pending_count(r, "nocert", "nocert-group") == 1
    assert dlq_entries(r, "nocert") == []


# --------------------------------------------------------------------------------------------
# bad messages
# --------------------------------------------------------------------------------------------

def test_message_missing_a_url_field_is_bad_and_the_child_lives_on(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:bad": http_pool(sink, "bad", path="/events/{type}/{customer}")})
    fl.wait_for(lambda: len(child_pids(fl)) == 1, what="one child")
    (pid,) = child_pids(fl)
    (bad,) = add_messages(r, "bad", 1, fields={"type": "x"})
    (good,) = add_messages(r, "bad", 1, fields={"type": "x", "customer": "c1"})
    (q,) = sink.wait_count(1, status=200)
    assert q.headers["webhook-id"] == good and q.path == "/events/x/c1"
    fl.wait_for(lambda: metric_sum(fl, "streamfleet_messages_bad_total", pool="bad") == 1,
                what="bad message counted")
    assert metric_sum(fl, "streamfleet_messages_failed_total", pool="bad") >= 1
    fl.wait_for(lambda: [e[1]["dlq.id"] for e in dlq_entries(r, "bad")] == [bad], what="dead-lettered")
    assert dlq_entries(r, "bad")[0][1]["dlq.reason"] == "bad_message"
    assert child_pids(fl) == [pid], "the child did not crash"
    assert len(sink.snapshot()) == 1


def test_id_field_with_crlf_is_a_bad_message_never_a_header(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:crlf": http_pool(sink, "crlf", id_field="event_id")})
    (bad,) = add_messages(r, "crlf", 1, fields={"type": "x", "event_id": "a\r\nX-Injected: 1"})
    (good,) = add_messages(r, "crlf", 1, fields={"type": "x", "event_id": "evt_ok"})
    (q,) = sink.wait_count(1, status=200)
    assert q.headers["webhook-id"] == "evt_ok" and "x-injected" not in q.headers
    fl.wait_for(lambda: [e[1]["dlq.id"] for e in dlq_entries(r, "crlf")] == [bad], what="dead-lettered")
    assert dlq_entries(r, "crlf")[0][1]["dlq.reason"] == "bad_message"
    time.sleep(0.5)
    assert len(sink.snapshot()) == 1
