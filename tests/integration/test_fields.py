"""Integration tests of fields inside JSON (issue 12, part 5): a dotted path reaches into a
field holding a JSON object wherever a field name is accepted; created_field feeds the age
histogram; require_fields and paths that do not resolve dead-letter bad_message before any
handler sees the message. Real redis-server, real sink, real binary."""
import datetime
import json
import time

from conftest import add_messages, pending_count, wait_until
from reliability_helpers import dlq_entries


def http_pool(sink, stream, path="/events/{meta.type}", **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": 1, "batch": 50,
            "block": "200ms", "handler": "http", "url": sink.url + path, **extra}




def meta(**kw):
    return json.dumps(kw)


def test_url_placeholder_reaches_into_a_json_field(redis_server, sink, fleet):
    r = redis_server.client()
    fleet({"pool:ev": http_pool(sink, "ev")})
    add_messages(r, "ev", 1, fields={"meta": meta(id="e1", type="send_email")})
    add_messages(r, "ev", 1, fields={"meta": meta(id="e2", type="a/b?c", n=1)})
    # a field literally named meta.type wins over the path
    add_messages(r, "ev", 1, fields={"meta": meta(type="from_json"), "meta.type": "literal"})
    add_messages(r, "ev", 1, fields={"meta": meta(type=7)})
    reqs = sink.wait_count(4, status=200)
    assert sorted(q.path for q in reqs) == ["/events/7", "/events/a%2Fb%3Fc", "/events/literal",
                                            "/events/send_email"]
    wait_until(lambda: pending_count(r, "ev", "ev-group") == 0, what="all acked")


def test_id_field_and_body_field_take_paths(redis_server, sink, fleet):
    r = redis_server.client()
    fleet({"pool:ev": http_pool(sink, "ev", id_field="meta.id", body_field="meta.payload")})
    add_messages(r, "ev", 1, fields={"meta": json.dumps({"id": "evt-9", "type": "t",
                                                         "payload": {"to": "ann", "n": [1, 2]}})})
    (q,) = sink.wait_count(1, status=200)
    assert q.headers["webhook-id"] == "evt-9"
    assert json.loads(q.body) == {"to": "ann", "n": [1, 2]}


def test_path_that_does_not_resolve_is_dead_lettered_before_the_handler(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:ev": http_pool(sink, "ev")})
    bad = {}
    (bad["not_json"],) = add_messages(r, "ev", 1, fields={"meta": "{not json"})
    (bad["no_key"],) = add_messages(r, "ev", 1, fields={"meta": meta(id="x")})
    (bad["no_field"],) = add_messages(r, "ev", 1, fields={"other": "1"})
    (bad["null"],) = add_messages(r, "ev", 1, fields={"meta": '{"type":null}'})
    (good,) = add_messages(r, "ev", 1, fields={"meta": meta(type="ok")})
    (q,) = sink.wait_count(1, status=200)
    assert q.path == "/events/ok"
    fl.wait_for(lambda: len(dlq_entries(r, "ev:dlq")) == 4, what="four dead letters")
    dead = {e["dlq.id"]: e for _, e in dlq_entries(r, "ev:dlq")}
    assert set(dead) == set(bad.values())
    for e in dead.values():
        assert e["dlq.reason"] == "bad_message"
        assert "meta.type" in e["dlq.error"], e
    wait_until(lambda: pending_count(r, "ev", "ev-group") == 0, what="nothing left pending")
    time.sleep(0.5)
    assert len(sink.snapshot()) == 1, "a bad message reached the endpoint"
    fl.wait_for(lambda: fl.metrics().sum("streamfleet_messages_bad_total", pool="ev") == 4,
                what="bad messages counted")


def test_require_fields_dead_letters_what_lacks_any(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:mail": http_pool(sink, "mail", path="/mail",
                                       require_fields="to subject meta.type")})
    ok = {"to": "ann", "subject": "hi", "meta": meta(type="send_email")}
    (good,) = add_messages(r, "mail", 1, fields=ok)
    (no_to,) = add_messages(r, "mail", 1, fields={k: v for k, v in ok.items() if k != "to"})
    (no_type,) = add_messages(r, "mail", 1, fields={**ok, "meta": meta(id="1")})
    (q,) = sink.wait_count(1, status=200)
    assert json.loads(q.body)["to"] == "ann"
    fl.wait_for(lambda: len(dlq_entries(r, "mail:dlq")) == 2, what="two dead letters")
    dead = {e["dlq.id"]: e for _, e in dlq_entries(r, "mail:dlq")}
    assert set(dead) == {no_to, no_type}
    assert all(e["dlq.reason"] == "bad_message" for e in dead.values())
    assert "'to'" in dead[no_to]["dlq.error"]
    assert "meta.type" in dead[no_type]["dlq.error"]
    wait_until(lambda: pending_count(r, "mail", "mail-group") == 0, what="nothing left pending")
    time.sleep(0.5)
    assert len(sink.snapshot()) == 1


def test_created_field_feeds_the_age_histogram(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"pool:ev": http_pool(sink, "ev", path="/x", created_field="meta.createdAt")})
    two_hours_ago = time.time() - 7200
    rfc = datetime.datetime.fromtimestamp(two_hours_ago, datetime.timezone.utc).isoformat()
    for created in (rfc, int(two_hours_ago), int(two_hours_ago * 1000), two_hours_ago):
        add_messages(r, "ev", 1, fields={"meta": json.dumps({"createdAt": created})})
    (bad,) = add_messages(r, "ev", 1, fields={"meta": meta(createdAt="yesterday")})
    sink.wait_count(4, status=200)

    def ages():
        m = fl.metrics()
        return {lbl["le"]: v for lbl, v in m.series("streamfleet_message_age_seconds_bucket", pool="ev")}

    # Entry ids are seconds old; created_field says two hours: 3600 < age <= 21600. The bad
    # message is aged by its entry id, as any message the handler never saw.
    fl.wait_for(lambda: ages().get("+Inf") == 5, what="five ages")
    a = ages()
    assert a["21600"] - a["3600"] == 4 and a["3600"] == 1, a
    fl.wait_for(lambda: [e["dlq.id"] for _, e in dlq_entries(r, "ev:dlq")] == [bad], what="dead-lettered")
    (_, e), = dlq_entries(r, "ev:dlq")
    assert e["dlq.reason"] == "bad_message" and "created_field" in e["dlq.error"]
