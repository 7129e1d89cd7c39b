"""Integration tests of routing by type (issue 12, part 4): [handler:NAME] sections, a pool's
route_field, route.TYPE and route.default, handler = NAME for a whole pool, no_route dead
letters, the routed counter per route, and what `-t` says. Real redis-server, real sink, real
binary."""
import json
import signal
import time

import pytest

import chromium
from conftest import SLOWNESS, add_messages, pending_count, run_binary, wait_until, write_ini
from reliability_helpers import dlq_entries
from supervisor_helpers import pool_children, rewrite_config


def pool(stream, **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": 1, "batch": 50,
            "block": "200ms", **extra}


def hook(sink, path, **extra):
    return {"handler": "http", "url": sink.url + path, **extra}




def routed(fl, pool_name):
    return {lbl["route"]: v for lbl, v in fl.metrics().series("streamfleet_messages_routed_total", pool=pool_name)}


def test_each_type_goes_to_its_named_handler(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"handler:email": hook(sink, "/email/{to}", inflight=4),
                "handler:sms": hook(sink, "/sms", body_field="text"),
                "handler:rest": {"handler": "noop"},
                "pool:jobs": pool("jobs", route_field="type", **{"route.send_email": "email",
                                                                 "route.send_sms": "sms",
                                                                 "route.default": "rest"})})
    add_messages(r, "jobs", 6, fields=lambda i: {"type": "send_email", "to": f"u{i}"})
    add_messages(r, "jobs", 4, fields=lambda i: {"type": "send_sms", "text": f"hello {i}"})
    add_messages(r, "jobs", 3, fields={"type": "resize_image"})
    add_messages(r, "jobs", 2, fields={"other": "no type at all"})
    reqs = sink.wait_count(10, status=200)
    paths = sorted(q.path for q in reqs)
    assert paths == sorted([f"/email/u{i}" for i in range(6)] + ["/sms"] * 4)
    assert sorted(q.body.decode() for q in reqs if q.path == "/sms") == [f"hello {i}" for i in range(4)]
    wait_until(lambda: pending_count(r, "jobs", "jobs-group") == 0, what="all acked")
    fl.wait_for(lambda: routed(fl, "jobs") == {"send_email": 6, "send_sms": 4, "default": 5},
                what="routed counts")
    status, _, body = fl.http_get("/status.json")
    (p,) = [p for p in json.loads(body)["pools"] if p["name"] == "jobs"]
    assert status == 200 and p["routes"] == {"send_email": 6, "send_sms": 4, "default": 5}
    time.sleep(0.5)
    assert len(sink.snapshot()) == 10 and dlq_entries(r, "jobs:dlq") == []


def test_a_type_without_route_or_default_is_dead_lettered_no_route(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"handler:email": hook(sink, "/email/{meta.id}"),
                "pool:jobs": pool("jobs", route_field="meta.type", **{"route.send_email": "email"})})
    (good,) = add_messages(r, "jobs", 1, fields={"meta": json.dumps({"type": "send_email", "id": "m1"})})
    (unknown,) = add_messages(r, "jobs", 1, fields={"meta": json.dumps({"type": "evil\r\n'x"})})
    (no_type,) = add_messages(r, "jobs", 1, fields={"meta": json.dumps({"id": 1})})
    (no_id,) = add_messages(r, "jobs", 1, fields={"meta": json.dumps({"type": "send_email"})})
    (q,) = sink.wait_count(1, status=200)
    assert q.path == "/email/m1"
    fl.wait_for(lambda: len(dlq_entries(r, "jobs:dlq")) == 3, what="three dead letters")
    dead = {e["dlq.id"]: e for _, e in dlq_entries(r, "jobs:dlq")}
    assert dead[unknown]["dlq.reason"] == "no_route"
    assert "\r" not in dead[unknown]["dlq.error"] and "\n" not in dead[unknown]["dlq.error"]
    # a path that does not resolve is a bad message, before any routing
    assert dead[no_type]["dlq.reason"] == "bad_message" and "meta.type" in dead[no_type]["dlq.error"]
    # ... and so is one its route's handler names, before that handler sees it
    assert dead[no_id]["dlq.reason"] == "bad_message" and "meta.id" in dead[no_id]["dlq.error"]
    wait_until(lambda: pending_count(r, "jobs", "jobs-group") == 0, what="nothing left pending")
    fl.wait_for(lambda: fl.metrics().value("streamfleet_messages_dead_lettered_total", pool="jobs",
                                           reason="no_route") == 1, what="no_route counted")
    assert routed(fl, "jobs") == {"send_email": 1}, "only configured routes are labels"
    time.sleep(0.5)
    assert len(sink.snapshot()) == 1


def test_handler_name_serves_a_whole_pool(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"handler:hooks": hook(sink, "/events/{kind}", header="X-Team: mail"),
                "pool:a": pool("a", handler="hooks"),
                "pool:b": pool("b", handler="hooks")})
    add_messages(r, "a", 3, fields={"kind": "from_a"})
    add_messages(r, "b", 2, fields={"kind": "from_b"})
    reqs = sink.wait_count(5, status=200)
    assert sorted(q.path for q in reqs) == ["/events/from_a"] * 3 + ["/events/from_b"] * 2
    assert all(q.headers["x-team"] == "mail" for q in reqs)
    fl.wait_for(lambda: routed(fl, "a") == {"default": 3} and routed(fl, "b") == {"default": 2},
                what="routed counts")


def test_check_reports_unknown_names_and_unused_sections(tmp_path, sink):
    cfg = write_ini(tmp_path / "bad.ini", {
        "fleet": {"redis": "redis://127.0.0.1:6379"},                 # lines 1-2
        "handler:email": hook(sink, "/email"),                         # lines 4-6
        "handler:spare": {"handler": "log"},                           # lines 8-9
        "pool:jobs": pool("jobs", route_field="type",                 # line 11
                          **{"route.send_email": "email", "route.send_sms": "smss"}),
        "pool:all": pool("all", handler="emial"),
    })
    text = cfg.read_text().splitlines()
    sms_line = next(i + 1 for i, t in enumerate(text) if t.startswith("route.send_sms"))
    name_line = next(i + 1 for i, t in enumerate(text) if t.startswith("handler = emial"))
    res = run_binary(["-t", "-c", str(cfg)], timeout=20)
    assert res.returncode == 1, res.stderr
    assert f"{cfg}:{sms_line}: route.send_sms: no [handler:smss] section" in res.stderr, res.stderr
    assert f"{cfg}:{name_line}: handler: 'emial' is neither a kind" in res.stderr, res.stderr

    good = write_ini(tmp_path / "good.ini", {
        "fleet": {"redis": "redis://127.0.0.1:6379"},
        "handler:email": hook(sink, "/email"),
        "handler:spare": {"handler": "log"},
        "pool:jobs": pool("jobs", route_field="type", **{"route.send_email": "email"}),
    })
    spare_line = next(i + 1 for i, t in enumerate(good.read_text().splitlines()) if t == "[handler:spare]")
    res = run_binary(["-t", "-c", str(good)], timeout=20)
    assert res.returncode == 0, res.stderr
    assert f"{good}:{spare_line}: warning: [handler:spare] is used by no pool" in res.stderr, res.stderr


def test_handler_sections_take_handler_keys_only(tmp_path, sink):
    cfg = write_ini(tmp_path / "bad.ini", {
        "fleet": {"redis": "redis://127.0.0.1:6379"},
        "handler:email": {**hook(sink, "/email"), "max_attempts": 3},
        "pool:jobs": pool("jobs", handler="email", url=sink.url + "/inline"),
    })
    text = cfg.read_text().splitlines()
    ma = next(i + 1 for i, t in enumerate(text) if t.startswith("max_attempts"))
    url = next(i + 1 for i, t in enumerate(text) if t.startswith("url") and "inline" in t)
    res = run_binary(["-t", "-c", str(cfg)], timeout=20)
    assert res.returncode == 1, res.stderr
    assert f"{cfg}:{ma}: key 'max_attempts' belongs to a pool" in res.stderr, res.stderr
    assert f"{cfg}:{url}: key 'url' is a handler key" in res.stderr, res.stderr


@pytest.mark.skipif(not chromium.available(), reason="chromium not installed")
def test_status_page_shows_messages_per_route(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    fl = fleet({"handler:email": hook(sink, "/email"),
                "handler:rest": {"handler": "noop"},
                "pool:jobs": pool("jobs", route_field="type", **{"route.send_email": "email",
                                                                 "route.default": "rest"})})
    add_messages(r, "jobs", 3, fields={"type": "send_email"})
    add_messages(r, "jobs", 2, fields={"type": "other"})
    fl.wait_for(lambda: routed(fl, "jobs") == {"send_email": 3, "default": 2}, what="routed counts")
    b = chromium.Browser(tmp_path / "chromium-profile", width=1280, height=640)
    try:
        b.goto(f"http://127.0.0.1:{fl.port}/")
        title = b.wait_for("(document.querySelector('tr[data-pool=jobs] th') || {}).title",
                           timeout=20 * SLOWNESS, what="the routed pool's row")
        assert title == "routed: send_email 3, default 2", title
        assert not b.exceptions, b.exceptions
    finally:
        b.close()


def test_reload_with_a_changed_handler_section_restarts_the_pools_using_it(redis_server, sink, fleet):
    r = redis_server.client()
    fl = fleet({"handler:email": hook(sink, "/v1"),
                "handler:rest": {"handler": "noop"},
                "pool:jobs": pool("jobs", route_field="type", **{"route.send_email": "email"}),
                "pool:other": pool("other", handler="rest")})
    add_messages(r, "jobs", 1, fields={"type": "send_email"})
    sink.wait_count(1, status=200)
    jobs, other = pool_children(fl, "jobs"), pool_children(fl, "other")
    assert len(jobs) == 1 and len(other) == 1
    rewrite_config(fl, lambda c: c["handler:email"].update(url=sink.url + "/v2"))
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_reloads_total", result="ok") == 1, what="reloaded")
    fl.wait_for(lambda: (lambda k: len(k) == 1 and k != jobs)(pool_children(fl, "jobs")),
                what="a new generation for the pool using the changed section")
    add_messages(r, "jobs", 1, fields={"type": "send_email"})
    reqs = sink.wait_count(2, status=200)
    assert sorted(q.path for q in reqs) == ["/v1", "/v2"]
    assert pool_children(fl, "other") == other, "a pool whose handler did not change keeps its worker"
