"""Every worker in view (issue 15, part 2): /status.json's per-worker list, `streamfleet status
--workers` and the status page's workers table and latency chart, driven as an operator would:
a real redis-server, a real sink, the real binary, a real browser.

Each pool object of /status.json has `worker_counts` (processes by state) and `workers`: one
object per worker slot (slot, pid, generation, state, uptime, handled, inflight, held, held_oldest,
held_ids, rss_bytes, last_error, restarts). `latency.p50` and `latency.p99` are the handler
duration's quantiles per 10 s step of the last 15 minutes, beside `history`."""
import json
import os
import re
import signal
import time

import chromium
from conftest import SLOWNESS, TIMEOUT, add_messages, wait_until
from test_statuspage import ARTIFACTS, needs_chromium, pool, status_cmd, status_json

BIG_TIMEOUT = 120 * SLOWNESS


def http_pool(sink, stream, path, workers=1, **extra):
    extra.setdefault("timeout", "60s")
    return pool(stream, workers=workers, handler="http", url=sink.url + path, backoff_base="100ms",
                backoff_max="500ms", **extra)


def workers_of(fl, name):
    """The workers list of pool name in /status.json, by slot."""
    p = next(p for p in status_json(fl)["pools"] if p["name"] == name)
    return {w["slot"]: w for w in p["workers"]}


def test_a_slow_entry_shows_as_held_by_its_worker_and_its_age_grows(redis_server, sink, fleet):
    r = redis_server.client()
    hold = 8 * SLOWNESS
    sink.rule(200, path="/slow*", delay=hold, times=1)
    fl = fleet({"pool:slow": http_pool(sink, "slow", "/slow", inflight=1)})
    entry = r.xadd("slow", {"n": "1"}).decode()

    def held():
        w = workers_of(fl, "slow")[0]
        return w if w["held_oldest"] and w["held_oldest"]["id"] == entry else None
    w1 = fl.wait_for(held, timeout=hold / 2, what=f"worker 0 to show {entry} held")
    assert w1["held"] == 1 and w1["inflight"] == 1, w1
    assert w1["held_ids"] == [w1["held_oldest"]], w1
    assert w1["state"] == "running" and w1["pid"] in fl.children(), w1
    time.sleep(1.5)
    w2 = workers_of(fl, "slow")[0]
    assert w2["held_oldest"]["id"] == entry, w2
    assert w2["held_oldest"]["age"] >= w1["held_oldest"]["age"] + 1.0, (w1, w2)
    # the sink answers: nothing is held any more, one message handled
    w3 = fl.wait_for(lambda: (lambda w: w if w["held"] == 0 and w["handled"] == 1 else None)(
        workers_of(fl, "slow")[0]), timeout=hold + TIMEOUT, what="the entry settled")
    assert w3["held_oldest"] is None and w3["held_ids"] == [] and w3["inflight"] == 0, w3
    assert w3["held_ids"] == [], w3
    assert r.xpending("slow", "slow-group")["pending"] == 0


def test_a_worker_holding_many_shows_its_oldest_eight_and_their_count(redis_server, sink, fleet):
    r = redis_server.client()
    hold = 8 * SLOWNESS
    sink.rule(200, path="/many*", delay=hold)
    fl = fleet({"pool:many": http_pool(sink, "many", "/many", inflight=12, batch=12)})
    ids = [r.xadd("many", {"n": str(i)}).decode() for i in range(12)]

    def twelve():
        w = workers_of(fl, "many")[0]
        return w if w["held"] == 12 else None
    w = fl.wait_for(twelve, timeout=hold / 2, what="12 entries held")
    shown = [x["id"] for x in w["held_ids"]]
    assert len(shown) == 8 and set(shown) <= set(ids), w
    assert w["held_oldest"] == w["held_ids"][0]
    ages = [x["age"] for x in w["held_ids"]]
    assert ages == sorted(ages, reverse=True), ages


def test_a_killed_worker_is_replaced_in_its_slot_with_a_new_pid_and_a_restart(redis_server, fleet):
    fl = fleet({"pool:k": pool("k", workers=2)})
    fl.wait_healthy()
    before = fl.wait_for(lambda: (lambda ws: ws if all(w["state"] == "running" for w in ws.values())
                                  else None)(workers_of(fl, "k")), what="both workers running")
    assert sorted(before) == [0, 1]
    assert sorted(w["pid"] for w in before.values()) == sorted(fl.children())
    for w in before.values():
        assert w["generation"] == 1 and w["restarts"] == 0 and w["uptime"] > 0, w
        assert w["rss_bytes"] > 1 << 20 and w["last_error"] is None, w
    os.kill(before[1]["pid"], signal.SIGKILL)

    def replaced():
        w = workers_of(fl, "k")[1]
        return w if w["pid"] not in (None, before[1]["pid"]) and w["state"] == "running" else None
    after = fl.wait_for(replaced, timeout=TIMEOUT, what="slot 1 running again with a new pid")
    assert after["restarts"] == 1 and after["generation"] == 1, after
    assert after["pid"] in fl.children()
    other = workers_of(fl, "k")[0]
    assert other["pid"] == before[0]["pid"] and other["restarts"] == 0, other
    assert other["uptime"] > after["uptime"], (other, after)
    p = next(p for p in status_json(fl)["pools"] if p["name"] == "k")
    assert p["restarts"] == 1


def test_a_reload_that_changes_a_pool_starts_a_new_generation(redis_server, fleet):
    fl = fleet({"pool:g": pool("g", workers=1)})
    fl.wait_healthy()
    first = workers_of(fl, "g")[0]
    assert first["generation"] == 1
    text = fl.config_path.read_text().replace("batch = 20", "batch = 21")
    assert text != fl.config_path.read_text()
    fl.config_path.write_text(text)
    fl.signal(signal.SIGHUP)

    def new_generation():
        ws = [w for p in status_json(fl)["pools"] if p["name"] == "g" for w in p["workers"]]
        return ws if [w["generation"] for w in ws] == [2] and ws[0]["state"] == "running" else None
    ws = fl.wait_for(new_generation, timeout=TIMEOUT, what="only generation 2 left")
    assert ws[0]["pid"] != first["pid"]


def test_a_workers_last_error_is_shown_beside_it(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(500, path="/err*")
    fl = fleet({"pool:e": http_pool(sink, "e", "/err", max_attempts=1)})
    entry = r.xadd("e", {"n": "1"}).decode()
    w = fl.wait_for(lambda: (lambda w: w if w["last_error"] else None)(workers_of(fl, "e")[0]),
                    timeout=TIMEOUT, what="worker 0 to show an error")
    err = w["last_error"]
    assert entry in err["error"] and abs(err["time"] - time.time()) < TIMEOUT, err
    last = next(p for p in status_json(fl)["pools"] if p["name"] == "e")["last_errors"][0]
    assert last["error"] == err["error"] and last["worker"] == 0


def test_latency_quantiles_follow_the_handlers_durations(redis_server, sink, fleet):
    r = redis_server.client()
    sink.rule(200, path="/lat*", delay=0.3)
    fl = fleet({"pool:lat": http_pool(sink, "lat", "/lat", inflight=2)})
    add_messages(r, "lat", 30)

    def measured():
        p = next(p for p in status_json(fl)["pools"] if p["name"] == "lat")
        lat = p["latency"]
        assert len(lat["p50"]) == len(lat["p99"]) == len(p["history"])
        return lat if any(v is not None for v in lat["p50"]) else None
    lat = fl.wait_for(measured, timeout=BIG_TIMEOUT, what="a latency point")
    p50 = [v for v in lat["p50"] if v is not None]
    p99 = [v for v in lat["p99"] if v is not None]
    # 0.3 s of the sink's delay: the bucket (0.25, 0.5] (plus a loaded machine's slowness)
    assert all(0.25 <= v <= 0.5 * SLOWNESS + 0.5 for v in p50), lat
    assert all(b >= a for a, b in zip(p50, p99)), lat


def worker_tables(out):
    """{pool: {SLOT: {COLUMN: text}}} of the tables `streamfleet status --workers` printed."""
    lines, tables, i = out.splitlines(), {}, 0
    while i < len(lines):
        m = re.match(r"^workers of pool (\S+):$", lines[i])
        i += 1
        if not m:
            continue
        cols = re.split(r"\s{2,}", lines[i].strip())
        rows = {}
        for line in lines[i + 1:]:
            if not line.strip():
                break
            cells = re.split(r"\s{2,}", line.strip())
            assert len(cells) == len(cols), f"{cells} against {cols}"
            rows[cells[0]] = dict(zip(cols, cells))
        tables[m.group(1)] = rows
    return tables


def test_status_workers_prints_each_worker_and_what_it_holds(redis_server, sink, fleet):
    r = redis_server.client()
    hold = 10 * SLOWNESS
    sink.rule(200, path="/slow*", delay=hold, times=1)
    fl = fleet({"pool:slow": http_pool(sink, "slow", "/slow", inflight=1),
                "pool:fast": pool("fast", workers=2)})
    entry = r.xadd("slow", {"n": "1"}).decode()
    fl.wait_for(lambda: workers_of(fl, "slow")[0]["held"] == 1, timeout=hold / 2, what="the entry held")
    res = status_cmd(fl, "--workers")
    assert res.returncode == 0, res.stdout + res.stderr
    t = worker_tables(res.stdout)
    assert set(t) == {"slow", "fast"} and set(t["fast"]) == {"0", "1"}, res.stdout
    s = {p["name"]: {w["slot"]: w for w in p["workers"]} for p in status_json(fl)["pools"]}
    for name, rows in t.items():
        for slot, row in rows.items():
            w = s[name][int(slot)]
            assert row["PID"] == str(w["pid"]) and row["GEN"] == "1" and row["STATE"] == "running", row
            assert row["RESTARTS"] == "0" and row["RSS"].endswith(" MiB"), row
    slow = t["slow"]["0"]
    assert slow["HELD"] == "1" and slow["INFLIGHT"] == "1" and slow["OLDEST HELD"] == entry, slow
    assert re.fullmatch(r"\d+\.\ds", slow["HELD FOR"]), slow
    assert t["fast"]["0"]["OLDEST HELD"] == "-" and t["fast"]["0"]["LAST ERROR"] == "-"
    # the pools' table is still there, above; --json keeps the document as it is
    assert "POOL " in res.stdout and res.stdout.index("POOL ") < res.stdout.index("workers of pool")
    doc = json.loads(status_cmd(fl, "--json", "--workers").stdout)
    assert {p["name"] for p in doc["pools"]} == {"slow", "fast"}


def test_status_workers_says_they_are_unknown_when_the_master_is_down(redis_server, fleet):
    fl = fleet({"pool:a": pool("a", workers=1)}, start=False)
    res = status_cmd(fl, "--workers")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "workers of pool a: unknown" in res.stdout, res.stdout


# --------------------------------------------------------------------------------------------
# the page in Chromium
# --------------------------------------------------------------------------------------------

READ_WORKERS = """(() => {
  const cells = tr => { const o = {}; for (const c of tr.cells) o[c.dataset.k] = c.dataset.v; return o; };
  return {
    time: document.body.dataset.time || '',
    workers: Array.from(document.querySelectorAll('#workers tbody tr[data-pool]')).map(tr =>
      Object.assign(cells(tr), {row_pool: tr.dataset.pool, row_slot: tr.dataset.slot,
                                text: Array.from(tr.cells).map(c => c.textContent)})),
    latency: Object.fromEntries(Array.from(document.querySelectorAll('#pools tbody tr[data-pool]')).map(tr => {
      const td = tr.querySelector('td[data-k=latency]'), svg = td && td.querySelector('svg');
      const d = q => { const p = svg && svg.querySelector(`path[data-q=${q}]`); return p ? p.getAttribute('d') : null; };
      return [tr.dataset.pool, {v: td && td.dataset.v, points: svg ? Number(svg.dataset.points) : -1,
                                p50: d('p50'), p99: d('p99'), title: svg ? svg.textContent : ''}];
    })),
  };
})()"""

STABLE = ("slot", "pid", "generation", "state", "restarts", "held")


def raw(v):
    return "" if v is None else str(v)


def workers_differences(page, s):
    """What the page's workers table and latency charts show differently from s ([]: agree)."""
    diff = []
    want = {(p["name"], str(w["slot"])): w for p in s["pools"] for w in p["workers"]}
    got = {(r["row_pool"], r["row_slot"]): r for r in page["workers"]}
    if sorted(got) != sorted(want):
        return [f"worker rows {sorted(got)} != {sorted(want)}"]
    for key, w in want.items():
        r = got[key]
        for k in STABLE:
            if r.get(k) != raw(w[k]):
                diff.append(f"{key}.{k}: page {r.get(k)!r}, status.json {w[k]!r}")
        held = w["held_oldest"]["id"] if w["held_oldest"] else None
        if r.get("held_oldest") != raw(held):
            diff.append(f"{key}.held_oldest: page {r.get('held_oldest')!r}, status.json {held!r}")
    for p in s["pools"]:
        lat = page["latency"].get(p["name"])
        if lat is None or lat["points"] != len(p["history"]) or lat["v"] != str(len(p["history"])):
            diff.append(f"{p['name']}: latency chart {lat}, {len(p['history'])} points in history")
            continue
        for q in ("p50", "p99"):
            # one segment (M) per run of steps that handled something
            runs = sum(1 for i, v in enumerate(p["latency"][q])
                       if v is not None and (i == 0 or p["latency"][q][i - 1] is None))
            if lat[q].count("M") != runs:
                diff.append(f"{p['name']}.{q}: {lat[q]!r} for {p['latency'][q]}")
    return diff


@needs_chromium
def test_page_in_chromium_shows_the_workers_and_the_latency_of_status_json(redis_server, sink, fleet,
                                                                          tmp_path):
    r = redis_server.client()
    sink.rule(200, path="/lat*", delay=0.3)
    hold = 60 * SLOWNESS
    sink.rule(200, path="/slow*", delay=hold, times=1)
    fl = fleet({"fleet": {"drain_timeout": "2s"},
                "pool:lat": http_pool(sink, "lat", "/lat", inflight=2),
                "pool:slow": http_pool(sink, "slow", "/slow", inflight=1),
                "pool:idle": pool("idle", workers=2)})
    add_messages(r, "lat", 30)

    def a_latency_point():
        p = next(p for p in status_json(fl)["pools"] if p["name"] == "lat")
        return any(v is not None for v in p["latency"]["p50"])
    fl.wait_for(a_latency_point, timeout=BIG_TIMEOUT, what="a latency point")
    entry = r.xadd("slow", {"n": "1"}).decode()
    fl.wait_for(lambda: workers_of(fl, "slow")[0]["held"] == 1, timeout=hold / 2, what="the entry held")

    b = chromium.Browser(tmp_path / "chromium-profile", width=1400, height=700)
    with b:
        b.goto(f"http://127.0.0.1:{fl.port}/")
        last = {}

        def agree():
            page = b.eval(READ_WORKERS)
            s = status_json(fl)
            last["diff"] = workers_differences(page, s)
            return (page, s) if page["time"] and not last["diff"] else None
        try:
            page, s = wait_until(agree, 20 * SLOWNESS, interval=0.3,
                                 what="the page to show the workers of /status.json")
        except AssertionError as e:
            raise AssertionError(f"{e}\ndifferences: {last.get('diff')}") from None
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        b.screenshot(ARTIFACTS / "status-page-workers.png")
        rows = {(x["row_pool"], x["row_slot"]): x for x in page["workers"]}
        assert len(rows) == 4
        slow = rows[("slow", "0")]
        assert slow["held_oldest"] == entry and float(slow["held_age"]) > 0, slow
        assert entry in slow["text"] and "running" in slow["text"], slow
        assert rows[("idle", "1")]["held_oldest"] == "" and rows[("idle", "1")]["text"][9] == "-"
        lat = page["latency"]["lat"]
        assert lat["p50"].startswith("M") and lat["p99"].startswith("M"), lat
        assert "handler p50 " in lat["title"] and "ms" in lat["title"], lat
        assert page["latency"]["idle"]["p50"] == "", page["latency"]["idle"]
        # the page fetched nothing but itself and status.json, and threw nothing
        base = f"http://127.0.0.1:{fl.port}/"
        assert {u for u in b.requests} <= {base, base + "status.json"}, b.requests
        assert not b.exceptions, b.exceptions
