"""Integration tests of handler = subprocess (issue 12, part 2): one long-lived process per
worker, JSON lines on its stdin and stdout.

The real binary, a real redis-server, real handler processes (small Python scripts written by
each test, and the examples of examples/handlers). Each bad-handler test checks that nothing
is lost, nothing stays pending, and the worker does not spin."""
import base64
import json
import os
import signal
import stat
import time

import pytest

from conftest import REPO, SLOWNESS, add_messages, children_of, group_info, pending_count, wait_until
from reliability_helpers import cpu_seconds, dead_letters

# The body every test handler shares: read lines from fd 0 as they come, answer through
# answer(); `life` counts the process's starts (a file per start), so a handler can misbehave
# in its first life only.
PRELUDE = """#!/usr/bin/python3
import json, os, select, signal, sys, time
OUT = {out!r}
starts = sorted(f for f in os.listdir(OUT) if f.startswith("start."))
life = len(starts) + 1
open(os.path.join(OUT, "start.%d" % life), "w").write(str(os.getpid()))
def answer(id, result="ack", **kw):
    sys.stdout.write(json.dumps(dict(id=id, result=result, **kw)) + "\\n")
    sys.stdout.flush()
def lines(timeout=None):
    buf = b""
    while True:
        r, _, _ = select.select([0], [], [], timeout)
        if not r:
            yield None
            continue
        data = os.read(0, 65536)
        if not data:
            return
        buf += data
        while b"\\n" in buf:
            line, buf = buf.split(b"\\n", 1)
            yield json.loads(line)
"""


def handler(tmp_path, body, name="h.py"):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    p = tmp_path / name
    p.write_text(PRELUDE.format(out=str(out)) + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return p, out


def sub_pool(stream, command, **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": 1, "batch": 10,
            "block": "200ms", "handler": "subprocess", "command": str(command),
            "backoff_base": "100ms", "backoff_max": "500ms", **extra}


def start_pool(redis_server, fleet, stream, n, command, **extra):
    """n messages added to stream, then a fleet of one subprocess pool on it running command.
    Returns the client, the fleet and the ids added."""
    r = redis_server.client()
    ids = add_messages(r, stream, n)
    fl = fleet({f"pool:{stream}": sub_pool(stream, command, **extra)})
    return r, fl, ids


def lives(out):
    return len([f for f in os.listdir(out) if f.startswith("start.")])


def all_done(r, stream, n_dead=0):
    """Every entry read and none pending, from one XINFO GROUPS reply (pending read before
    entries-read could see the 0 of a group that had not read yet), then the dead letters."""
    def done():
        g = group_info(r, stream, f"{stream}-group")
        return (g is not None and g["entries-read"] == r.xlen(stream) and g["pending"] == 0
                and len(dead_letters(r, stream)) == n_dead)
    return done


def settle(fl, r, stream, n_dead=0, timeout=None, what="everything handled"):
    fl.wait_for(all_done(r, stream, n_dead), timeout=timeout, what=what)


# --------------------------------------------------------------------------------------------
# the protocol
# --------------------------------------------------------------------------------------------

def test_answers_in_any_order_with_many_in_flight(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
held, most = [], 0
for m in lines(0.3):
    if m is not None:
        held.append(m["id"])
        if len(held) > most:
            most = len(held)
            open(os.path.join(OUT, "max"), "w").write(str(most))
    if len(held) >= 8 or (m is None and held):
        for id in reversed(held):   # newest first
            answer(id)
        held = []
""")
    r, fl, _ = start_pool(redis_server, fleet, "ord", 200, h, inflight=8)
    settle(fl, r, "ord")
    assert int((out / "max").read_text()) == 8, "up to inflight messages out at once"
    assert lives(out) == 1, "one process for all of them"


def test_retry_dead_and_retry_after(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
for m in lines():
    f = m["fields"]
    open(os.path.join(OUT, "seen"), "a").write("%s %s %f\\n" % (f["do"], m["attempt"], time.time()))
    if f["do"] == "dead":
        answer(m["id"], "dead", reason="bad_address", error="no such mailbox\\nreally")
    elif f["do"] == "retry" and m["attempt"] == 1:
        answer(m["id"], "retry", error="smtp busy", retry_after=2)
    else:
        answer(m["id"])
""")
    r = redis_server.client()
    ids = {k: add_messages(r, "rd", 1, fields={"do": k})[0] for k in ("ack", "dead", "retry")}
    fl = fleet({"pool:rd": sub_pool("rd", h, backoff_max="10s")})
    settle(fl, r, "rd", n_dead=1)
    d = dead_letters(r, "rd")
    assert d[ids["dead"]]["dlq.reason"] == "bad_address"
    assert d[ids["dead"]]["dlq.error"] == "no such mailbox really"
    seen = [l.split() for l in (out / "seen").read_text().splitlines()]
    retry = [float(t) for k, a, t in seen if k == "retry"]
    assert len(retry) == 2 and retry[1] - retry[0] >= 1.9, "retry_after 2 s was honoured"
    assert [a for k, a, t in seen if k in ("ack", "dead")] == ["1", "1"]


def test_values_not_utf8_round_trip_as_base64(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
import base64
for m in lines():
    got = {k: (base64.b64decode(v["$base64"]).hex() if isinstance(v, dict) else v.encode().hex())
           for k, v in m["fields"].items()}
    open(os.path.join(OUT, m["id"]), "w").write(json.dumps(got))
    answer(m["id"])
""")
    r = redis_server.client()
    values = {"latin1": b"caf\xe9", "binary": bytes(range(256)), "utf8": "h\u00e9llo \u2603".encode(),
              "nul": b"a\x00b", "overlong": b"\xc0\xaf", "surrogate": b"\xed\xa0\x80", "empty": b""}
    eid = r.xadd("bin", values).decode()
    fl = fleet({"pool:bin": sub_pool("bin", h)})
    settle(fl, r, "bin")
    got = json.loads((out / eid).read_text())
    assert got == {k: v.hex() for k, v in values.items()}


def test_environment_is_only_ours_and_no_descriptor_is_inherited(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
env = dict(kv.split("=", 1) for kv in open("/proc/self/environ").read().split("\\0") if kv)
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except FileNotFoundError:
        pass
json.dump({"env": env, "fds": fds}, open(os.path.join(OUT, "dump"), "w"))
for m in lines():
    answer(m["id"])
""")
    r = redis_server.client()
    add_messages(r, "envs", 3)
    fl = fleet({"pool:envs": sub_pool("envs", h, env="MODE=production", pass_env="SF_TEST_PASSED")},
               env={"SF_TEST_PASSED": "yes", "SF_TEST_SECRET": "must not leak"})
    settle(fl, r, "envs")
    d = json.loads((out / "dump").read_text())
    assert d["env"] == {"STREAMFLEET_POOL": "envs", "STREAMFLEET_STREAM": "envs",
                        "STREAMFLEET_SLOT": "0", "MODE": "production", "SF_TEST_PASSED": "yes"}
    # 0, 1, 2 and what Python itself opened (its script; the dump file is open while listing)
    inherited = {fd: t for fd, t in d["fds"].items() if fd not in ("0", "1", "2")
                 and not t.startswith(str(tmp_path))}
    assert inherited == {}, inherited
    assert all(d["fds"][fd].startswith("pipe:") for fd in ("0", "1", "2"))


def test_stderr_lines_go_to_the_log(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
for m in lines():
    print("handling", m["id"], "now", file=sys.stderr, flush=True)
    answer(m["id"])
""")
    r, fl, ids = start_pool(redis_server, fleet, "err", 3, h)
    settle(fl, r, "err")
    wait_until(lambda: all(f"handling {i} now" in fl.log() for i in ids), what="stderr in the log")
    line = next(l for l in fl.log().splitlines() if f"handling {ids[0]} now" in l)
    assert "err" in line.split("handling")[0], "with the pool"


def test_stderr_flood_is_rate_limited(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
for i in range(200000):
    sys.stderr.write("noise %d\\n" % i)
sys.stderr.flush()
for m in lines():
    answer(m["id"])
""")
    r, fl, _ = start_pool(redis_server, fleet, "fl", 20, h)
    settle(fl, r, "fl", timeout=60 * SLOWNESS)
    noise = [l for l in fl.log().splitlines() if "noise " in l]
    assert 100 <= len(noise) <= 3000, f"{len(noise)} of 200,000 stderr lines logged"


# --------------------------------------------------------------------------------------------
# handlers that misbehave: restarted, nothing lost, no busy loop
# --------------------------------------------------------------------------------------------

FIRST_LIFE_ONLY = """
for m in lines():
    if life == 1:
        {bad}
    answer(m["id"])
"""


@pytest.mark.parametrize("name,bad", [
    ("garbage", 'sys.stdout.write("this is not json\\n"); sys.stdout.flush(); time.sleep(60)'),
    ("unknown_id", 'answer("1-999999"); time.sleep(60)'),
    ("wrong_shape", 'sys.stdout.write(json.dumps({"id": m["id"], "result": "maybe"}) + "\\n"); '
                    'sys.stdout.flush(); time.sleep(60)'),
    ("line_over_1mib", 'sys.stdout.write("{" + " " * (2 << 20)); sys.stdout.flush(); time.sleep(60)'),
    ("floods_stdout", 'sys.stdout.write("x" * (64 << 20)); sys.stdout.flush(); time.sleep(60)'),
])
def test_protocol_error_restarts_the_process_and_retries(redis_server, fleet, tmp_path, name, bad):
    h, out = handler(tmp_path, FIRST_LIFE_ONLY.format(bad=bad))
    r, fl, _ = start_pool(redis_server, fleet, "pe", 30, h, inflight=4)
    worker = fl.children()[0]
    settle(fl, r, "pe", timeout=60 * SLOWNESS)
    assert lives(out) == 2, "restarted once"
    assert cpu_seconds(worker) < 5.0 * SLOWNESS, "no busy loop"
    first = int((out / "start.1").read_text())
    assert not os.path.exists(f"/proc/{first}") or open(f"/proc/{first}/stat").read().split()[2] == "Z"


def test_process_that_closes_its_stdin_is_restarted(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
if life == 1:
    os.close(0)
    time.sleep(60)
for m in lines():
    answer(m["id"])
""")
    r, fl, _ = start_pool(redis_server, fleet, "cl", 20, h)
    worker = fl.children()[0]
    t0 = time.monotonic()
    settle(fl, r, "cl", timeout=60 * SLOWNESS)
    took = time.monotonic() - t0
    assert lives(out) == 2
    # seen when it happens (POLLERR on the pipe), not at the default 30 s timeout
    assert took < 15 * SLOWNESS, f"took {took:.1f} s: the closed stdin was noticed only by the timeout"

    assert cpu_seconds(worker) < 5.0 * SLOWNESS, "no busy loop"


def test_process_that_never_answers_is_restarted_and_its_messages_retried(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
for m in lines():
    open(os.path.join(OUT, "got"), "a").write(m["id"] + " %d\\n" % m["attempt"])
    if life > 2:
        answer(m["id"])
""")
    r, fl, ids = start_pool(redis_server, fleet, "na", 5, h, timeout="1s", max_attempts=5)
    worker = fl.children()[0]
    cpu0 = cpu_seconds(worker)
    settle(fl, r, "na", timeout=60 * SLOWNESS)
    assert lives(out) == 3, "a silent process is replaced after timeout"
    got = (out / "got").read_text().split("\n")
    assert all(any(l.startswith(i + " ") for l in got) for i in ids)
    assert cpu_seconds(worker) - cpu0 < 2.0 * SLOWNESS, "no busy loop"


def test_one_slow_message_is_retried_after_timeout_and_its_late_answer_ignored(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
import threading
def late(id):
    time.sleep(1.5)
    answer(id)
for m in lines():
    if m["fields"]["n"] == "0" and m["attempt"] == 1:
        open(os.path.join(OUT, "slow"), "w").write(m["id"])
        threading.Thread(target=late, args=(m["id"],)).start()
    else:
        answer(m["id"])
""")
    r = redis_server.client()
    fl = fleet({"pool:sl": sub_pool("sl", h, timeout="1s")})
    add_messages(r, "sl", 3, fields={"n": "x"})
    settle(fl, r, "sl")
    add_messages(r, "sl", 1, fields={"n": "0"})
    # others keep flowing meanwhile, so the process is not silent
    for _ in range(20):
        add_messages(r, "sl", 1, fields={"n": "x"})
        time.sleep(0.1)
    settle(fl, r, "sl", timeout=60 * SLOWNESS)
    assert (out / "slow").exists()
    assert lives(out) == 1, "a late answer is no protocol error:\n" + fl.log()[-3000:]
    assert fl.metrics().sum("streamfleet_messages_retried_total") == 1, "the slow one, retried once"


def test_process_that_exits_at_once_is_restarted_with_backoff(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, "sys.exit(0)\n")
    r, fl, _ = start_pool(redis_server, fleet, "ex0", 5, h)
    worker = fl.children()[0]
    cpu0 = cpu_seconds(worker)
    time.sleep(5)
    n = lives(out)
    assert 3 <= n <= 10, f"restarts back off (100 ms doubling): {n} starts in 5 s"
    assert cpu_seconds(worker) - cpu0 < 2.0 * SLOWNESS, "no busy loop"
    assert pending_count(r, "ex0", "ex0-group") == 0, "nothing taken while it is down"


def test_program_gone_is_started_again_with_backoff_and_nothing_is_taken_meanwhile(
        redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
if life == 1:
    time.sleep(1)
    sys.exit(0)
for m in lines():
    answer(m["id"])
""")
    moved = tmp_path / "moved.py"
    fl = fleet({"pool:gone": sub_pool("gone", h)})
    h.rename(moved)                         # its first life ends in 1 s; the next cannot start
    r = redis_server.client()
    time.sleep(1.5)
    add_messages(r, "gone", 10)
    time.sleep(3)
    assert r.xinfo_groups("gone")[0]["entries-read"] in (0, None), "nothing taken while it cannot run:\n" + fl.log()[-3000:]
    assert pending_count(r, "gone", "gone-group") == 0
    moved.rename(h)
    settle(fl, r, "gone", timeout=60 * SLOWNESS, what="handled once it can run again")


def test_grandchild_holding_the_pipes_does_not_stall_the_restart(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
import subprocess
if life == 1:
    p = subprocess.Popen(["sleep", "300"])   # inherits our stdout and stderr
    open(os.path.join(OUT, "grandchild"), "w").write(str(p.pid))
    for m in lines():
        os._exit(3)
for m in lines():
    answer(m["id"])
""")
    r, fl, _ = start_pool(redis_server, fleet, "gc", 20, h)
    worker = fl.children()[0]
    settle(fl, r, "gc", timeout=60 * SLOWNESS)
    assert cpu_seconds(worker) < 5.0 * SLOWNESS, "no busy loop"
    assert lives(out) == 2
    gc = int((out / "grandchild").read_text())
    wait_until(lambda: not os.path.exists(f"/proc/{gc}") or open(f"/proc/{gc}/stat").read().split()[2] == "Z",
               what="the grandchild went with its group")


def test_drain_closes_stdin_and_waits_for_the_answers(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, """
held = []
for m in lines(0.1):
    if m is not None:
        held.append((time.time(), m["id"]))
    while held and time.time() - held[0][0] >= 1.5:
        answer(held.pop(0)[1])
# stdin closed: answer what is held, then go
open(os.path.join(OUT, "eof"), "w").write(str(len(held)))
time.sleep(1)
for t, id in held:
    answer(id)
""")
    r, fl, _ = start_pool(redis_server, fleet, "dr", 8, h, inflight=8, batch=8)
    fl.wait_for(lambda: pending_count(r, "dr", "dr-group") == 8, what="all eight in flight")
    fl.signal(signal.SIGTERM)
    assert fl.wait(timeout=30 * SLOWNESS) == 0
    assert int((out / "eof").read_text()) == 8, "stdin closed while it held all eight"
    assert pending_count(r, "dr", "dr-group") == 0, "the answers came and were acked"


# A handler that holds mib MiB (touched, so resident) before it answers anything.
MEMORY_HOG = """
hog = bytearray({mib} << 20)
for i in range(0, len(hog), 4096):
    hog[i] = 1
for m in lines():
    answer(m["id"])
"""


def test_memory_of_the_process_counts_for_memory_limit(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, MEMORY_HOG.format(mib=300))
    r = redis_server.client()
    fl = fleet({"pool:mem": sub_pool("mem", h, memory_limit="200M")})
    first = fl.children()[0]
    fl.wait_for(lambda: fl.children() and fl.children()[0] != first, timeout=30 * SLOWNESS,
                what="the worker replaced for its handler's memory")


def test_memory_of_the_process_shows_in_the_pools_resident_memory(redis_server, fleet, tmp_path):
    h, out = handler(tmp_path, MEMORY_HOG.format(mib=150))
    fl = fleet({"pool:memm": sub_pool("memm", h)})
    fl.wait_for(lambda: fl.metrics().sum("streamfleet_workers_resident_memory_bytes", pool="memm")
                > 150 << 20, timeout=30 * SLOWNESS, what="the handler's 150 MiB counted")


# --------------------------------------------------------------------------------------------
# the examples
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["/usr/bin/python3 {repo}/examples/handlers/handler.py",
                                     "/usr/bin/node {repo}/examples/handlers/handler.js"])
def test_example_handler_end_to_end(redis_server, fleet, tmp_path, command):
    r = redis_server.client()
    ok = add_messages(r, "exh", 20, fields=lambda i: {"to": f"u{i}@example.com", "subject": "hi"})
    bad = add_messages(r, "exh", 1, fields={"subject": "nobody"})
    sent = tmp_path / "sent.log"
    fl = fleet({"pool:exh": sub_pool("exh", command.format(repo=REPO), inflight=8,
                                     env=f"SENT_LOG={sent}")})
    settle(fl, r, "exh", n_dead=1)
    assert dead_letters(r, "exh")[bad[0]]["dlq.reason"] == "no_recipient"
    assert sorted(sent.read_text().split()) == sorted(f"u{i}@example.com" for i in range(20))
