"""The status page (GET /) in headless Chromium, and `streamfleet status` in a terminal (issue 6),
used as an operator would: a real redis-server, a real sink, the real binary, a real browser.

The page is read through its stable hooks (statuspage.c says which): tr[data-pool], cells with
data-k (the key in /status.json) and data-v (the raw value). A screenshot of every page a test
looked at is kept in tests/artifacts/ (gitignored). STREAMFLEET_DOCS_SCREENSHOT=1 also runs a
realistic demo fleet for a few minutes and writes docs/status-page.png and
tests/artifacts/status-sample.txt (the sample of `streamfleet status` in the docs)."""
import json
import os
import re
import signal
import subprocess
import threading
import time

import pytest

import chromium
from conftest import (REPO, SLOWNESS, TIMEOUT, add_messages, group_info, require_binary,
                      run_binary, sanitizer_env, sanitizer_reports, wait_until)

ARTIFACTS = REPO / "tests" / "artifacts"
BIG_TIMEOUT = 120 * SLOWNESS

needs_chromium = pytest.mark.skipif(not chromium.available(),
                                    reason="chromium not installed (Debian package chromium)")


def pool(stream, workers=2, handler="noop", **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": workers, "batch": 20,
            "block": "200ms", "handler": handler, **extra}


def http_pool(sink, stream, path, workers=1, **extra):
    return pool(stream, workers=workers, handler="http", url=sink.url + path, backoff_base="100ms",
                backoff_max="500ms", **extra)


def status_json(fl):
    status, headers, body = fl.http_get("/status.json")
    assert status == 200, (status, body[:300])
    assert headers["content-type"].startswith("application/json"), headers
    return json.loads(body)


def degraded_fleet(redis_server, sink, fleet):
    """A fleet whose pool slow falls behind (40 messages, one at a time, 2 s each, max_lag 5)
    beside a pool fine that has nothing to do; returned once /status.json says degraded."""
    r = redis_server.client()
    sink.rule(200, path="/slow*", delay=2)
    fl = fleet({"pool:slow": http_pool(sink, "slow", "/slow", inflight=1, max_lag=5),
                "pool:fine": pool("fine", workers=1)})
    add_messages(r, "slow", 40)
    fl.wait_for(lambda: status_json(fl)["status"] == "degraded", what="status degraded")
    return fl


def artifact(name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


# --------------------------------------------------------------------------------------------
# the page in Chromium
# --------------------------------------------------------------------------------------------

READ_PAGE = """(() => {
  const cells = tr => { const o = {}; for (const c of tr.cells) o[c.dataset.k] = c.dataset.v; return o; };
  const st = document.getElementById('status');
  return {
    status: st.textContent, s: st.dataset.s || '', time: document.body.dataset.time || '',
    reason: document.getElementById('reason').textContent,
    redis: document.getElementById('redis').textContent,
    durable: document.getElementById('durable').textContent,
    meta: document.getElementById('meta').textContent,
    stale: document.getElementById('pools').classList.contains('stale'),
    pools: Array.from(document.querySelectorAll('#pools tbody tr[data-pool]')).map(tr => Object.assign(
      cells(tr), {pool: tr.dataset.pool, points: Number(tr.querySelector('svg').dataset.points),
                  polyline: tr.querySelectorAll('svg polyline').length})),
    errors: Array.from(document.querySelectorAll('#errors tbody tr[data-pool]')).map(cells),
  };
})()"""


def raw(v):
    """A value of /status.json as the page's data-v holds it."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def page_differences(page, s):
    """What the page shows differently from the status document s ([] when it agrees)."""
    diff = []
    if page["status"] != s["status"] or page["s"] != s["status"]:
        diff.append(f"status {page['status']!r}/{page['s']!r} != {s['status']!r}")
    rows = {r["pool"]: r for r in page["pools"]}
    if sorted(rows) != sorted(p["name"] for p in s["pools"]):
        return diff + [f"pools {sorted(rows)} != {[p['name'] for p in s['pools']]}"]
    for p in s["pools"]:
        r, w = rows[p["name"]], p["worker_counts"]
        want = {"name": p["name"], "status": p["status"],
                "workers": f"{w['running']}/{w['starting']}/{w['draining']}/{w['expected']}/{w['canary']}",
                "pending": raw(p["pending"]), "lag": raw(p["lag"]),
                "dlq_length": raw(p["dlq_length"]), "restarts": raw(p["restarts"]),
                "circuit_open": raw(p["circuit_open"])}
        for k, v in want.items():
            if r.get(k) != v:
                diff.append(f"{p['name']}.{k}: page {r.get(k)!r}, status.json {v!r}")
        if float(r["rate"]) != p["rate"]:
            diff.append(f"{p['name']}.rate: page {r['rate']!r}, status.json {p['rate']!r}")
        age = p["oldest_pending_age"]
        if (r["oldest_pending_age"] == "") != (age is None) or (
                age is not None and abs(float(r["oldest_pending_age"]) - age) > 5):
            diff.append(f"{p['name']}.oldest_pending_age: page {r['oldest_pending_age']!r}, {age!r}")
        if r["points"] != len(p["history"]) or int(r["history"]) != len(p["history"]):
            diff.append(f"{p['name']}: {r['points']} chart points, {len(p['history'])} in history")
    want_errors = sorted(((p["name"], e) for p in s["pools"] for e in p["last_errors"]),
                         key=lambda x: -x[1]["time"])
    got = [(e["pool"], e["worker"], e["error"]) for e in page["errors"]]
    want = [(n, str(e["worker"]), e["error"]) for n, e in want_errors]
    if got != want:
        diff.append(f"errors: page {got}, status.json {want}")
    return diff


def open_page(tmp_path, fl, path="/", width=1280):
    b = chromium.Browser(tmp_path / "chromium-profile", width=width, height=640)
    b.goto(f"http://127.0.0.1:{fl.port}{path}")
    return b


def wait_page_agrees(b, fl, timeout=None):
    """Wait until the page shows what /status.json says; returns (page, status document)."""
    last = {}

    def agree():
        page = b.eval(READ_PAGE)
        s = status_json(fl)
        last["diff"] = page_differences(page, s)
        return (page, s) if page["time"] and not last["diff"] else None
    try:
        return wait_until(agree, timeout or 20 * SLOWNESS, interval=0.3,
                          what="the page to show what /status.json says")
    except AssertionError as e:
        raise AssertionError(f"{e}\ndifferences: {last.get('diff')}") from None


def test_page_is_one_small_self_contained_document(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa")})
    status, headers, body = fl.http_get("/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8", headers
    # 16 KiB: the page grew a workers table, a latency chart and a destinations table (12.3 KiB
    # then); it stays one request a phone loads at once.
    assert len(body) < 16 * 1024, f"the page is {len(body)} bytes"
    html = body.decode()
    assert "://" not in html, "the page names an absolute URL"
    refs = re.findall(r"""(?:src|href|action|poster|srcset)\s*=\s*['"]?([^'" >]*)""", html, re.I)
    # the favicon (none, not a 404), and the link of each pool's dead letters to the /dlq page
    # (relative, followed only when clicked: nothing is fetched)
    assert refs == ["data:,", "dlq?pool="], f"the page refers to {refs}"
    assert "@import" not in html and "url(" not in html, "the stylesheet loads something"
    assert "fetch('status.json'" in html, "the page must fetch status.json by a relative URL"
    assert "<table" in html and "scope='col'" in html and "<caption>" in html


@needs_chromium
def test_page_in_chromium_shows_the_numbers_of_status_json(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    sink.rule(422, body_contains='"kind":"bad"')
    fl = fleet({"pool:orders": http_pool(sink, "orders", "/orders", workers=2),
                "pool:audit": pool("audit", workers=3)})
    add_messages(r, "orders", 60, fields=lambda i: {"kind": "bad" if i % 20 == 0 else "good"})
    add_messages(r, "audit", 300)

    def settled():
        s = status_json(fl)
        p = {x["name"]: x for x in s["pools"]}
        # every message handled, dead letters counted by the poll, two chart points
        return (p["orders"]["messages"]["acked"] == 57 and p["orders"]["dlq_length"] == 3
                and p["audit"]["messages"]["acked"] == 300 and p["audit"]["pending"] == 0
                and all(len(x["history"]) >= 2 for x in s["pools"]) and s)
    s = fl.wait_for(settled, timeout=BIG_TIMEOUT, what="the run settled with two chart points")
    assert s["status"] == "ok"

    with open_page(tmp_path, fl) as b:
        page, s = wait_page_agrees(b, fl)
        b.screenshot(artifact("status-page-ok.png"))
        assert page["redis"] == "redis up" and page["durable"] == "durable", page
        assert "version 0.1.0" in page["meta"], page["meta"]
        assert page["reason"] == "", page["reason"]
        rows = {x["pool"]: x for x in page["pools"]}
        assert rows["orders"]["dlq_length"] == "3" and rows["audit"]["workers"] == "3/0/0/3/0"
        assert all(x["polyline"] == 1 for x in page["pools"]), "a chart with 2+ points has a line"
        # the three 422s: newest first, worker and text as the master tells them
        assert len(page["errors"]) >= 1 and all("http_422" in e["error"] for e in page["errors"])
        # it fetched nothing but itself and status.json, and threw nothing
        base = f"http://127.0.0.1:{fl.port}/"
        assert {u for u in b.requests} <= {base, base + "status.json"}, b.requests
        assert base + "status.json" in b.requests
        assert not b.exceptions, b.exceptions


@needs_chromium
def test_page_shows_a_degraded_pool_and_why(redis_server, sink, fleet, tmp_path):
    fl = degraded_fleet(redis_server, sink, fleet)
    with open_page(tmp_path, fl) as b:
        page = b.wait_for("document.getElementById('status').dataset.s == 'degraded' && "
                          + READ_PAGE, what="the page to say degraded")
        b.screenshot(artifact("status-page-degraded.png"))
        rows = {x["pool"]: x for x in page["pools"]}
        assert rows["slow"]["status"] == "degraded" and rows["fine"]["status"] == "ok", rows
        assert re.search(r"pool slow: lag \d+ over max_lag 5", page["reason"]), page["reason"]
        assert int(rows["slow"]["lag"]) > 5
        assert not b.exceptions, b.exceptions


@needs_chromium
def test_page_says_unreachable_when_the_master_is_gone(redis_server, fleet, tmp_path):
    fl = fleet({"pool:a": pool("sa")})
    with open_page(tmp_path, fl) as b:
        b.wait_for("document.getElementById('status').dataset.s == 'ok'", what="page ok")
        assert fl.stop() == 0
        page = b.wait_for("document.getElementById('status').dataset.s == 'down' && " + READ_PAGE,
                          what="the page to notice the master is gone")
        assert page["status"] == "unreachable" and page["stale"], page
        assert page["reason"].startswith("cannot load status.json"), page["reason"]
        assert [x["pool"] for x in page["pools"]] == ["a"], "the last figures stay on the page"


# --------------------------------------------------------------------------------------------
# streamfleet status
# --------------------------------------------------------------------------------------------

def status_cmd(fl_or_cfg, *args, env=None, timeout=None):
    cfg = getattr(fl_or_cfg, "config_path", fl_or_cfg)
    return run_binary(["status", "-c", str(cfg), *args], env=env, timeout=timeout)


def table(out):
    """{pool: {COLUMN: text}} of the table `streamfleet status` printed."""
    lines = out.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("POOL "))
    cols = re.split(r"\s{2,}", lines[head].strip())
    rows = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        assert len(cells) == len(cols), f"{cells} against {cols}"
        rows[cells[0]] = dict(zip(cols, cells))
    return rows


def test_status_prints_a_table_of_the_running_fleet(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:emails": pool("emails", workers=3), "pool:audit": pool("audit", workers=1)})
    add_messages(r, "emails", 120)
    # lag is known once Redis was polled after the workers created both groups
    fl.wait_for(lambda: {p["name"]: p for p in status_json(fl)["pools"]}["emails"]["messages"]["acked"]
                == 120 and all(p["pending"] == 0 and p["lag"] is not None for p in status_json(fl)["pools"]))
    res = status_cmd(fl)
    assert res.returncode == 0, res.stdout + res.stderr
    first = res.stdout.splitlines()[0]
    assert first.startswith(f"streamfleet 0.1.0 at http://127.0.0.1:{fl.port}, up ") and first.endswith(": ok")
    assert "redis: up, durable" in res.stdout
    rows = table(res.stdout)
    assert set(rows) == {"emails", "audit"}
    assert rows["emails"]["STATUS"] == "ok" and rows["emails"]["WORKERS"] == "3/3"
    assert rows["audit"]["WORKERS"] == "1/1"
    for p in ("emails", "audit"):
        assert rows[p]["PENDING"] == "0" and rows[p]["LAG"] == "0" and rows[p]["DEAD LETTERS"] == "0"
        assert rows[p]["OLDEST PENDING"] == "-" and rows[p]["RESTARTS"] == "0"
        float(rows[p]["MSGS/S"])


def test_status_json_is_the_masters_status_document(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa"), "pool:b": pool("sb", workers=1)})
    fl.wait_healthy()
    res = status_cmd(fl, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["source"] == "master" and doc["status"] == "ok" and doc["version"] == "0.1.0"
    assert [p["name"] for p in doc["pools"]] == ["a", "b"]
    assert doc["pools"][0]["worker_counts"]["expected"] == 2
    assert set(doc) >= set(status_json(fl)), "every key of /status.json"


def test_status_exits_1_and_says_why_when_a_pool_is_degraded(redis_server, sink, fleet):
    fl = degraded_fleet(redis_server, sink, fleet)
    res = status_cmd(fl)
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines()[0].endswith(": degraded")
    rows = table(res.stdout)
    assert rows["slow"]["STATUS"] == "degraded" and rows["fine"]["STATUS"] == "ok"
    assert re.search(r"^pool slow: lag \d+ over max_lag 5$", res.stdout, re.M), res.stdout
    res = status_cmd(fl, "--json")
    assert res.returncode == 1 and json.loads(res.stdout)["status"] == "degraded"


def test_status_exits_0_again_when_the_backlog_is_gone(redis_server, sink, fleet):
    r = redis_server.client()
    rule = sink.rule(200, path="/slow*", delay=1)
    fl = fleet({"pool:slow": http_pool(sink, "slow", "/slow", inflight=1, max_lag=5)})
    add_messages(r, "slow", 20)
    fl.wait_for(lambda: status_cmd(fl).returncode == 1, what="status exit 1 while behind")
    rule.delay = 0
    fl.wait_for(lambda: status_cmd(fl).returncode == 0, timeout=BIG_TIMEOUT,
                what="status exit 0 once the backlog is handled")


def test_status_falls_back_to_redis_when_the_master_is_down(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(422, body_contains='"kind":"bad"')
    fl = fleet({"pool:orders": http_pool(sink, "orders", "/orders", max_lag=1000),
                "pool:audit": pool("audit", workers=1, max_lag=10)})
    add_messages(r, "orders", 10, fields=lambda i: {"kind": "bad" if i < 2 else "good"})
    fl.wait_for(lambda: r.xlen("orders:dlq") == 2 and group_info(r, "orders", "orders-group")["pending"] == 0)
    assert fl.stop() == 0
    add_messages(r, "audit", 25)        # nobody reads them now: lag 25, over max_lag 10
    add_messages(r, "orders", 7)

    res = status_cmd(fl)
    assert res.returncode == 1, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    url = f"http://127.0.0.1:{fl.port}/status.json"
    assert lines[0].startswith(f"streamfleet: DOWN: no status from the master at {url}: "), lines
    assert lines[1].startswith(f"from redis redis://127.0.0.1:{redis_server.port}/0 directly")
    rows = table(res.stdout)
    assert rows["orders"] == {"POOL": "orders", "STATUS": "unknown", "WORKERS": "?", "MSGS/S": "?",
                              "PENDING": "0", "LAG": "7", "OLDEST PENDING": "-", "DEAD LETTERS": "2",
                              "RESTARTS": "?"}, rows
    assert rows["audit"]["STATUS"] == "degraded" and rows["audit"]["LAG"] == "25"
    assert "pool audit: lag 25 over max_lag 10" in res.stdout

    doc = json.loads(status_cmd(fl, "--json").stdout)
    assert doc["source"] == "redis" and doc["status"] == "down" and doc["redis"]["up"] is True
    p = {x["name"]: x for x in doc["pools"]}
    assert p["orders"]["stream_length"] == 17 and p["orders"]["lag"] == 7 and p["orders"]["dlq_length"] == 2
    assert p["orders"]["workers"] is None and p["orders"]["worker_counts"] is None and p["audit"]["pending"] == 0


def test_status_shows_the_oldest_pending_entry_from_redis(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"pool:a": pool("sa", workers=1)})
    fl.wait_healthy()
    # /health is 200 before a worker has created the group: wait for the group itself.
    wait_until(lambda: r.exists("sa") and r.xinfo_groups("sa"), what="the worker's group")
    assert fl.stop() == 0
    add_messages(r, "sa", 3)
    r.xreadgroup("sa-group", "someone", {"sa": ">"}, count=3)   # pending, never acked
    time.sleep(1.2)
    doc = json.loads(status_cmd(fl, "--json").stdout)
    a = doc["pools"][0]
    assert a["pending"] == 3 and a["lag"] == 0 and 1.0 <= a["oldest_pending_age"] < 60, a


def test_status_exits_1_when_the_fleet_and_redis_are_down(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa")})
    fl.wait_healthy()
    assert fl.stop() == 0
    redis_server.stop()
    res = status_cmd(fl)
    assert res.returncode == 1
    assert "no status from the master" in res.stdout and "is unreachable" in res.stdout, res.stdout
    doc = json.loads(status_cmd(fl, "--json").stdout)
    assert doc["status"] == "down" and doc["redis"]["up"] is False and doc["pools"] == []


def test_status_sends_the_bearer_token_of_listen_token_file(redis_server, fleet, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret-token-for-status\n")
    fl = fleet({"fleet": {"listen_token_file": str(token)}, "pool:a": pool("sa")})
    assert fl.http_get("/status.json")[0] == 401
    auth = {"Authorization": "Bearer s3cret-token-for-status"}
    fl.wait_for(lambda: fl.http_get("/health", headers=auth)[0] == 200)
    res = status_cmd(fl, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["source"] == "master"


def test_status_with_a_wrong_token_says_so(redis_server, fleet, tmp_path):
    token = tmp_path / "token"
    token.write_text("right\n")
    fl = fleet({"fleet": {"listen_token_file": str(token)}, "pool:a": pool("sa")})
    token.write_text("wrong\n")     # the master read the right one at start
    res = status_cmd(fl)
    assert res.returncode == 1
    assert "answered 401" in res.stdout, res.stdout


def test_status_watch_refreshes_until_ctrl_c(redis_server, fleet):
    fl = fleet({"pool:a": pool("sa")})
    fl.wait_healthy()
    b = require_binary()
    p = subprocess.Popen([str(b), "status", "-c", str(fl.config_path), "--watch", "200ms"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=sanitizer_env(),
                         stdin=subprocess.DEVNULL)
    out = bytearray()

    def read():
        while chunk := os.read(p.stdout.fileno(), 65536):
            out.extend(chunk)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: out.count(b"\033[H\033[2J") >= 4, 10 * SLOWNESS, what="4 screens")
        p.send_signal(signal.SIGINT)
        assert p.wait(TIMEOUT) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    reader.join(5)
    err = p.stderr.read().decode()
    assert not sanitizer_reports(err), err
    screens = out.decode().split("\033[H\033[2J")[1:]
    assert all(s.startswith("every 200ms, Ctrl-C to stop") for s in screens), screens[:2]
    assert all("\na  " in s for s in screens[:-1]), screens[0]


def test_status_usage_errors_exit_2(tmp_path):
    for args in (["--nope"], ["extra"], ["--watch", "0ms"], ["--watch=soon"]):
        res = run_binary(["status", "-c", str(REPO / "etc/streamfleet.ini"), *args])
        assert res.returncode == 2, (args, res.stdout, res.stderr)
    res = run_binary(["status", "-c", str(tmp_path / "missing.ini")])
    assert res.returncode == 2 and "missing.ini" in res.stderr
    res = run_binary(["status", "-h"])
    assert res.returncode == 0 and "--watch" in res.stdout


# --------------------------------------------------------------------------------------------
# the picture and the sample in the docs (run by hand: STREAMFLEET_DOCS_SCREENSHOT=1)
# --------------------------------------------------------------------------------------------

@needs_chromium
@pytest.mark.skipif(not os.environ.get("STREAMFLEET_DOCS_SCREENSHOT"),
                    reason="writes docs/status-page.png: set STREAMFLEET_DOCS_SCREENSHOT=1")
def test_docs_screenshot_of_a_realistic_fleet(redis_server, sink_factory, fleet, tmp_path):
    minutes = float(os.environ.get("STREAMFLEET_DOCS_MINUTES", "4"))
    r = redis_server.client()
    hooks, billing = sink_factory(), sink_factory()
    hooks.fail_fraction = 0.03                  # some 503s: retried
    hooks.rule(422, body_contains='"plan":"legacy"')     # dead letters at once
    billing.delay = 0.25                        # too slow for what arrives: a backlog builds
    fl = fleet({"fleet": {"poll_interval": "2s"},
                "pool:emails": pool("email_ingestion_stream", workers=4),
                "pool:webhooks": http_pool(hooks, "events", "/events/{type}", workers=2,
                                           max_attempts=3),
                "pool:billing": http_pool(billing, "invoices", "/invoices", workers=1, inflight=2,
                                          max_lag=200, max_pending_age="30s")})
    stop = threading.Event()

    def produce():
        t0, i = time.monotonic(), 0
        while not stop.is_set():
            t = time.monotonic() - t0
            wave = 1 + 0.6 * __import__("math").sin(t / 40)
            add_messages(r, "email_ingestion_stream", int(40 * wave))
            add_messages(r, "events", int(12 * wave), fields=lambda k: {
                "type": ["signup", "payment", "refund"][k % 3],
                "plan": "legacy" if (i + k) % 97 == 0 else "pro"})
            add_messages(r, "invoices", 10 if t > minutes * 20 else 6)
            i += 1
            stop.wait(1)
    threading.Thread(target=produce, daemon=True).start()
    try:
        time.sleep(minutes * 60)
        with open_page(tmp_path, fl, width=1280) as b:
            b.wait_for("document.body.dataset.time", what="page loaded")
            time.sleep(2.5)
            b.screenshot(REPO / "docs" / "status-page.png")
        res = status_cmd(fl)
        artifact("status-sample.txt").write_text(f"$ streamfleet status -c /etc/streamfleet/streamfleet.ini\n"
                                                 f"{res.stdout}$ echo $?\n{res.returncode}\n")
    finally:
        stop.set()
