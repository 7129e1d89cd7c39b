"""Helpers shared by the reliability tests of issue 4 (test_reliability.py, test_chaos.py,
test_dlq_cli.py). The fixtures themselves live in conftest.py; this file only adds small
functions on top of them."""
import os
import signal
import time
from pathlib import Path

import redis as redislib

from conftest import HOST, SLOWNESS, add_messages, pending_count, record_arrivals, run_binary  # noqa: F401 (re-exported)

CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_TIMEOUT = 120 * SLOWNESS


def http_pool(sink, stream, path="/events/{type}", workers=1, batch=20, block="500ms",
              **extra):
    """A [pool:...] section of handler = http delivering stream to sink. Short blocks and
    timeouts by default, so that the tests are quick; extra keys override."""
    sec = {"stream": stream, "group": f"{stream}-group", "workers": workers, "batch": batch,
           "block": block, "handler": "http", "url": sink.url + path, "timeout": "2s",
           "connect_timeout": "1s", "claim_idle": "10s"}
    sec.update(extra)
    return sec


def log_pool(stream, workers=1, batch=10, block="500ms", handler="log", **extra):
    sec = {"stream": stream, "group": f"{stream}-group", "workers": workers, "batch": batch,
           "block": block, "handler": handler}
    sec.update(extra)
    return sec


def s(v):
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def dlq_entries(client, dlq):
    """[(dlq entry id, {field: value})] of a dead-letter stream, str-decoded."""
    return [(s(i), {s(k): s(v) for k, v in f.items()}) for i, f in client.xrange(dlq)]


def wait_promotion_and_first_ack(replica, t0, timeout=60):
    """(time of the replica's promotion, of the first XACK it executed after it), by polling ROLE
    and INFO commandstats: once the old master is gone, the replica's XACK count moves only with
    the fleet's acks."""
    rep = replica.client(socket_timeout=2)
    acks0 = t_promoted = t_first_ack = None
    deadline = t0 + timeout * SLOWNESS
    while time.monotonic() < deadline and t_first_ack is None:
        try:
            calls = rep.info("commandstats").get("cmdstat_xack", {}).get("calls", 0)
            if t_promoted is None and rep.execute_command("ROLE")[0] == b"master":
                t_promoted = time.monotonic()
                acks0 = calls
            elif t_promoted is not None and calls > acks0:
                t_first_ack = time.monotonic()
        except redislib.RedisError:
            pass
        time.sleep(0.02)
    assert t_promoted is not None, "the replica was never promoted"
    assert t_first_ack is not None, f"no ack on the promoted replica within {timeout} s"
    return t_promoted, t_first_ack


def dead_letters(client, stream):
    """{source entry id: {field: value}} of the pool's dead-letter stream STREAM:dlq, str-decoded."""
    return {f["dlq.id"]: f for _, f in dlq_entries(client, f"{stream}:dlq")}


def by_webhook_id(reqs, status=None, ok=False):
    """{webhook-id: [requests]} of sink requests (only those answered status, or 2xx with ok)."""
    out = {}
    for r in reqs:
        if status is not None and r.status != status:
            continue
        if ok and not 200 <= r.status < 300:
            continue
        out.setdefault(r.headers.get("webhook-id"), []).append(r)
    return out


def failed_once(redis_server, sink, fleet, stream, payload, **keys):
    """One message {type: t, payload} added to stream, delivered by an http pool (body_field
    payload, the retry due 2 s after a failure, no jitter; keys override) to a sink that answers
    it 500 once. Returns the client, the fleet and the entry id once that failure is answered."""
    sink.rule(500, body_contains=payload.encode(), times=1)
    r = redis_server.client()
    fl = fleet({f"pool:{stream}": http_pool(sink, stream, body_field="payload", backoff_base="2s",
                                            backoff_jitter="0%", **keys)})
    (eid,) = add_messages(r, stream, 1, fields={"type": "t", "payload": payload})
    sink.wait_count(1)
    return r, fl, eid


def requests_for(sink, marker):
    """The sink's requests whose body contains marker (bytes or str), in arrival order."""
    if isinstance(marker, str):
        marker = marker.encode()
    return sorted((q for q in sink.snapshot() if marker in q.body), key=lambda q: q.time)


def metric(fl, name, pool=None, **labels):
    """Sum of the series of name (for pool, with labels) in the fleet's /metrics; 0 if none."""
    if pool is not None:
        labels["pool"] = pool
    return fl.metrics().sum(name, **labels)


def wait_metric(fl, name, pool, predicate, timeout=None, **labels):
    """Wait until predicate(value of the metric) holds; returns the value."""
    def check():
        v = metric(fl, name, pool, **labels)
        return (v,) if predicate(v) else None
    return fl.wait_for(check, timeout, what=f"{name}{{pool={pool}}} {labels}")[0]


def wait_pending(fl, client, stream, group, n, timeout=None):
    fl.wait_for(lambda: pending_count(client, stream, group) == n, timeout,
                what=f"{n} pending in {stream}/{group}")


def read_as(client, stream, group, consumer, count, create=True):
    """XREADGROUP as consumer (e.g. a dead host's), leaving the entries in its PEL.
    Returns the ids read (str)."""
    if create:
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except Exception as e:  # noqa: BLE001 - BUSYGROUP is fine
            if "BUSYGROUP" not in str(e):
                raise
    res = client.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [s(i) for i, _ in res[0][1]] if res else []


def one_child(fl, n=1):
    """Wait until the fleet has exactly n children; returns their pids."""
    def check():
        kids = fl.children()
        return kids if len(kids) == n else None
    return fl.wait_for(check, what=f"{n} children")


def replaced(fl, victim, n=1):
    """Wait until victim is gone and n children run again; returns their pids."""
    def check():
        kids = fl.children()
        return kids if len(kids) == n and victim not in kids else None
    return fl.wait_for(check, what=f"a replacement for child {victim}")


def consumers(client, stream, group):
    """{consumer name: pending count} of the group."""
    return {s(c["name"]): c["pending"] for c in client.xinfo_consumers(stream, group)}


def cpu_seconds(pid):
    """utime + stime of pid in seconds (from /proc/PID/stat), or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data.rpartition(")")[2].split()
    # rest[11] is field 14 (utime), rest[12] field 15 (stime)
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def proc_bytes(pid, what):
    try:
        return Path(f"/proc/{pid}/{what}").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return b""


def restarts(fl, pool):
    return fl.metrics().sum("streamfleet_worker_restarts_total", pool=pool)


def own_consumer(pool, slot=0):
    """The consumer name of a worker of ours: HOST:POOL:SLOT."""
    return f"{HOST}:{pool}:{slot}"


def dlq_cli(cfg, *args, timeout=None):
    """Run `streamfleet dlq ARGS -c cfg` to completion; returns CompletedProcess."""
    verb, *rest = args
    return run_binary(["dlq", verb, "-c", str(cfg), *rest], timeout=timeout)


# A separate process that SIGKILLs the oldest child of a master at a steady pace. Separate,
# so that its pace does not depend on the test process (whose sink threads hold the GIL under
# load). It stops at SIGTERM and prints how many children it killed.
_KILLER = r"""
import os, signal, sys, time
master, every = int(sys.argv[1]), float(sys.argv[2])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
def kids():
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []
def start_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rpartition(")")[2].split()
        return None if rest[0] in "ZX" else int(rest[19])
    except OSError:
        return None
kills = 0
t = time.monotonic()
while not stop:
    live = [(s, p) for p in kids() if (s := start_of(p)) is not None]
    if live:
        try:
            os.kill(min(live)[1], signal.SIGKILL)
            kills += 1
        except ProcessLookupError:
            pass
    t += every
    d = t - time.monotonic()
    if d > 0:
        time.sleep(d)
print(kills, flush=True)
"""


class ChildKiller:
    """SIGKILL the oldest child of master_pid every `every` seconds, from another process."""

    def __init__(self, master_pid, every):
        import subprocess
        import sys
        self.proc = subprocess.Popen([sys.executable, "-c", _KILLER, str(master_pid), str(every)],
                                     stdout=subprocess.PIPE, text=True)

    def stop(self):
        """Stop killing; returns the number of children killed."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return int(out.strip() or 0)
