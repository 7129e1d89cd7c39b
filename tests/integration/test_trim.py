"""trim = acked (issue 14, part 5): the master trims a pool's stream below the oldest entry
that some consumer group of it still needs, keeps `retain` of acknowledged history, and never
removes an entry a group has yet to read or acknowledge. Real redis-server, real sink, real
binary; a second group is read by Python, slowly."""
import os
import random
import signal
import threading
import time

from conftest import SLOWNESS, add_messages, pending_count, run_binary, wait_until, write_ini
from reliability_helpers import BIG_TIMEOUT, http_pool, log_pool, metric, s, wait_metric

TRIMMED = "streamfleet_trimmed_entries_total"


class SlowGroup(threading.Thread):
    """Group `group` of stream, read by Python: `count` entries every `every` seconds, each
    acknowledged `hold` seconds after it was read, so its pending list always holds the last
    second or so. Every `restart_every` seconds it "restarts": forgets what it held unacked
    and reads its pending list again from 0, as a restarted consumer does. An entry that comes
    back without its fields was trimmed while this group still needed it: `lost` records it."""

    def __init__(self, redis_server, stream, group, count=20, every=0.05, hold=1.0, restart_every=2.0):
        super().__init__(daemon=True)
        self.c = redis_server.client()
        # raw replies: redis-py 4.3 cannot parse an entry whose fields are nil
        self.c.response_callbacks["XREADGROUP"] = lambda r, **kw: r
        self.stream, self.group = stream, group
        self.count, self.every, self.hold, self.restart_every = count, every, hold, restart_every
        self.read = set()       # ids read with their fields
        self.lost = []          # ids read back without them
        self.restarts = 0
        self.stop = threading.Event()
        self.error = None

    def _read(self, start):
        res = self.c.execute_command("XREADGROUP", "GROUP", self.group, "py", "COUNT", self.count,
                                     "STREAMS", self.stream, start)
        out = []
        for _, entries in res or []:
            for eid, fields in entries:
                if fields is None:
                    self.lost.append(s(eid))
                else:
                    self.read.add(s(eid))
                    out.append(s(eid))
        return out

    def run(self):
        held = []               # (time read, id), oldest first
        next_restart = time.monotonic() + self.restart_every
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                if now >= next_restart:
                    held, next_restart = [], now + self.restart_every
                    self.restarts += 1
                    start = "0"         # its own pending list, from the start
                    while True:
                        ids = self._read(start)
                        held.extend((time.monotonic(), i) for i in ids)
                        if len(ids) < self.count:
                            break
                        start = ids[-1]
                held.extend((now, i) for i in self._read(">"))
                due = [i for t, i in held if now - t >= self.hold]
                if due:
                    self.c.xack(self.stream, self.group, *due)
                    held = [(t, i) for t, i in held if now - t < self.hold]
                time.sleep(self.every)
            # finish: acknowledge everything
            while True:
                ids = self._read(">")
                held.extend((0, i) for i in ids)
                if held:
                    self.c.xack(self.stream, self.group, *[i for _, i in held])
                    held = []
                if not ids:
                    break
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.error = e


def ok_ids(sink):
    """Entry ids the sink answered 2xx for (webhook-id is the stream entry id)."""
    return {q.headers.get("webhook-id") for q in sink.snapshot() if 200 <= q.status < 300}


def test_two_groups_at_different_speeds_never_lose_an_entry_and_the_stream_stays_short(
        redis_server, sink, fleet):
    """streamfleet's pool (trim = acked) delivers to a sink answering in 10 ms; a Python group
    reads the same stream at its own pace and holds half a second of entries pending, restarting
    every 2 s. Meanwhile a worker is SIGKILLed and a SIGHUP starts a new generation. Every
    entry reaches both groups with its data, nothing vanishes, and the stream stays far
    shorter than what was added; once both groups are done it is empty."""
    c = redis_server.client()
    stream, total = "orders", 3000
    c.xgroup_create(stream, "py", id="0", mkstream=True)
    sink.delay = 0.01
    pool = http_pool(sink, stream, path="/in", workers=2, batch=20, trim="acked")
    fl = fleet({"fleet": {"poll_interval": "500ms"}, "pool:orders": pool})
    py = SlowGroup(redis_server, stream, "py", hold=0.5)
    py.start()

    ids, lengths = [], []
    t0 = time.monotonic()
    killed = reloaded = False
    try:
        # 25 entries every 100 ms: 12 s of traffic
        while len(ids) < total:
            ids += add_messages(c, stream, 25, fields=lambda i: {"n": str(len(ids) + i)})
            lengths.append(c.xlen(stream))
            elapsed = time.monotonic() - t0
            if not killed and elapsed > 3:
                os.kill(random.choice(fl.children()), signal.SIGKILL)
                killed = True
            if not reloaded and elapsed > 6:
                pool["batch"] = 10      # a changed pool: a new generation replaces the old
                write_ini(fl.config_path, {"fleet": dict(_fleet_section(fl)), "pool:orders": pool})
                fl.signal(signal.SIGHUP)
                reloaded = True
            time.sleep(0.1)
        assert killed and reloaded

        # both groups finish
        want = set(ids)
        fl.wait_for(lambda: want <= ok_ids(sink), BIG_TIMEOUT, what="every entry delivered to the sink")
        wait_until(lambda: want <= py.read, BIG_TIMEOUT, what="every entry read by the Python group")
    finally:
        py.stop.set()
        py.join(30)
    assert py.error is None, py.error
    assert py.restarts >= 3

    assert py.lost == [], f"the Python group read {len(py.lost)} pending entries back without data"
    assert metric(fl, "streamfleet_messages_vanished_total", "orders") == 0
    print(f"XLEN over time: max {max(lengths)} of {total} added; samples {lengths[::10]}")
    assert max(lengths) < total // 2, f"the stream grew to {max(lengths)}: {lengths}"

    # Done: nothing pending, every entry trimmed, and counted exactly once.
    fl.wait_for(lambda: pending_count(c, stream, "orders-group") == 0 and pending_count(c, stream, "py") == 0,
                what="both pending lists empty")
    fl.wait_for(lambda: c.xlen(stream) == 0, what="the stream trimmed to nothing")
    wait_metric(fl, TRIMMED, "orders", lambda v: v == total)


def _fleet_section(fl):
    """[fleet] of the running config, as written."""
    out, sec = {}, None
    for line in fl.config_path.read_text().splitlines():
        if line.startswith("["):
            sec = line.strip("[]")
        elif sec == "fleet" and "=" in line:
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def test_a_group_that_reads_nothing_holds_the_trim_and_then_releases_exactly_what_it_acked(
        redis_server, fleet):
    """A second group created at 0 that reads nothing keeps every entry, however far streamfleet's
    own group has gone; once it reads and acknowledges half, exactly that half goes."""
    c = redis_server.client()
    stream, n = "ledger", 200
    c.xgroup_create(stream, "audit", id="0", mkstream=True)
    ids = add_messages(c, stream, n)
    fl = fleet({"pool:ledger": log_pool(stream, trim="acked")})
    fl.wait_for(lambda: len(fl.records()[0]) >= n, what="every entry handled by the pool")
    fl.wait_for(lambda: pending_count(c, stream, "ledger-group") == 0, what="the pool's acks")
    time.sleep(3 * SLOWNESS)          # three poll intervals (1 s): nothing may go meanwhile
    assert c.xlen(stream) == n
    assert metric(fl, TRIMMED, "ledger") == 0

    got = c.xreadgroup("audit", "a", {stream: ">"}, count=n // 2)
    half = [s(i) for i, _ in got[0][1]]
    assert half == ids[:n // 2]
    # read but not yet acknowledged: still needed
    time.sleep(2 * SLOWNESS)
    assert c.xlen(stream) == n
    c.xack(stream, "audit", *half)
    fl.wait_for(lambda: c.xlen(stream) == n // 2, what="the acknowledged half trimmed")
    assert [s(i) for i, _ in c.xrange(stream)] == ids[n // 2:]
    wait_metric(fl, TRIMMED, "ledger", lambda v: v == n // 2)


def test_retain_keeps_acknowledged_entries_younger_than_it(redis_server, fleet):
    """retain = 8s: entries handled and acknowledged at once stay for 8 s, then go."""
    c = redis_server.client()
    stream, n, retain = "audit", 50, 8.0
    fl = fleet({"pool:audit": log_pool(stream, trim="acked", retain="8s")})
    fl.wait_for(lambda: c.exists(stream) and pending_count(c, stream, "audit-group") == 0,
                what="the pool's group")
    ids = add_messages(c, stream, n)
    newest_ms = max(int(i.split("-")[0]) for i in ids)
    fl.wait_for(lambda: len(fl.records()[0]) >= n, what="every entry handled")
    fl.wait_for(lambda: pending_count(c, stream, "audit-group") == 0, what="the pool's acks")
    # While the newest entry is younger than retain (less a margin for the sampling), all stay.
    kept_checks = 0
    while True:
        length = c.xlen(stream)
        age = time.time() - newest_ms / 1000
        if age >= retain - 0.3:
            break
        assert length == n, f"{n - length} entries trimmed {age:.1f}s after they were added (retain 8s)"
        kept_checks += 1
        time.sleep(0.1)
    assert kept_checks >= 5
    fl.wait_for(lambda: c.xlen(stream) == 0, what="the entries trimmed once older than retain")
    wait_metric(fl, TRIMMED, "audit", lambda v: v == n)


def test_trim_off_by_default_trims_nothing(redis_server, fleet):
    """Without trim = acked, a stream whose every entry was acknowledged by every group keeps
    all of them; so does a dead-letter stream even when a pool that trims reads it."""
    c = redis_server.client()
    n = 200
    add_messages(c, "plain", n)
    add_messages(c, "plain:dlq", 30)
    fl = fleet({"pool:plain": log_pool("plain"),
                "pool:replay": log_pool("plain:dlq", group="replay", trim="acked")})
    fl.wait_for(lambda: len(fl.records()[0]) >= n + 30, what="every entry handled")
    fl.wait_for(lambda: pending_count(c, "plain", "plain-group") == 0
                and pending_count(c, "plain:dlq", "replay") == 0, what="the acks")
    time.sleep(3 * SLOWNESS)          # three poll intervals
    assert c.xlen("plain") == n
    assert c.xlen("plain:dlq") == 30
    m = fl.metrics()
    assert m.value(TRIMMED, pool="plain") == 0
    assert m.value(TRIMMED, pool="replay") == 0


def test_bad_trim_value_is_a_config_error_at_its_line(redis_server, tmp_path):
    """trim = yes and retain without trim are refused at startup with FILE:LINE."""
    cfg = write_ini(tmp_path / "bad.ini", {
        "fleet": {"redis": redis_server.url},
        "pool:a": {"stream": "a", "group": "g", "handler": "log", "trim": "yes"},
        "pool:b": {"stream": "b", "group": "g", "handler": "log", "retain": "1h"},
    })
    r = run_binary(["-t", "-c", str(cfg)])
    assert r.returncode == 1, r
    lines = r.stderr.splitlines()
    assert any(ln.startswith(f"{cfg}:8: ") and "off, acked" in ln for ln in lines), r.stderr
    assert any(ln.startswith(f"{cfg}:14: ") and "trim = acked" in ln for ln in lines), r.stderr


def test_sighup_turns_trimming_on_without_restarting_the_workers(redis_server, fleet):
    """trim is the master's setting: a reload that turns it on trims at once and leaves the
    pool's workers as they are."""
    c = redis_server.client()
    stream, n = "late", 100
    add_messages(c, stream, n)
    pool = log_pool(stream, workers=2)
    fl = fleet({"pool:late": pool})
    fl.wait_for(lambda: len(fl.records()[0]) >= n, what="every entry handled")
    fl.wait_for(lambda: pending_count(c, stream, "late-group") == 0, what="the acks")
    kids = fl.wait_for(lambda: (k := fl.children()) and len(k) == 2 and k, what="2 workers")
    assert c.xlen(stream) == n
    pool["trim"] = "acked"
    write_ini(fl.config_path, {"fleet": _fleet_section(fl), "pool:late": pool})
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: c.xlen(stream) == 0, what="the stream trimmed after the reload")
    wait_metric(fl, TRIMMED, "late", lambda v: v == n)
    assert fl.children() == kids
