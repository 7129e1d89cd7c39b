"""Integration tests of handler = exec (issue 12, part 1): one process per message.

The real binary, a real redis-server, real handler processes (small scripts written by each
test). One behaviour per test; each checks that nothing is lost or left pending."""
import json
import os
import signal
import stat
import time

import pytest

from conftest import (REPO, SLOWNESS, TIMEOUT, add_messages, children_of, pending_count,
                      run_binary, wait_until)
from reliability_helpers import cpu_seconds, dead_letters

PY = "/usr/bin/python3"


def script(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def exec_pool(stream, command, **extra):
    return {"stream": stream, "group": f"{stream}-group", "workers": 1, "batch": 10,
            "block": "200ms", "handler": "exec", "command": command, **extra}


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        out += kids
        todo += kids
    return out


# A handler whose behaviour each message chooses with its field "do"; it records each attempt.
EXIT_CODES_HANDLER = """#!/usr/bin/python3
import json, os, sys
m = json.load(sys.stdin)
with open(os.path.join({out!r}, m["id"]), "a") as f:
    f.write(os.environ["STREAMFLEET_ATTEMPT"] + "\\n")
do = m["fields"]["do"]
if do == "ok":
    sys.exit(0)
if do == "reject":
    print("noise first", file=sys.stderr)
    print("amount is not a number\\n", file=sys.stderr)
    sys.exit(65)
if do == "temp":
    print("database busy", file=sys.stderr)
    sys.exit(75)
if do == "other":
    sys.exit(3)
if do == "signal":
    os.kill(os.getpid(), 9)
"""


def test_exit_code_decides_ack_dead_letter_or_retry(redis_server, fleet, tmp_path):
    out = tmp_path / "attempts"
    out.mkdir()
    h = script(tmp_path / "h.py", EXIT_CODES_HANDLER.format(out=str(out)))
    r = redis_server.client()
    kinds = ["ok", "reject", "temp", "other", "signal"]
    ids = {k: add_messages(r, "jobs", 1, fields={"do": k})[0] for k in kinds}
    fl = fleet({"pool:jobs": exec_pool("jobs", str(h), max_attempts=3, backoff_base="100ms",
                                       backoff_max="200ms", inflight=4)})
    fl.wait_for(lambda: len(dead_letters(r, "jobs")) == 4 and pending_count(r, "jobs", "jobs-group") == 0,
                what="four dead letters, nothing pending")
    attempts = {k: (out / ids[k]).read_text().split() for k in kinds}
    assert attempts["ok"] == ["1"], "exit 0: acked after one run"
    assert attempts["reject"] == ["1"], "exit 65: dead at once, never retried"
    for k in ("temp", "other", "signal"):
        assert attempts[k] == ["1", "2", "3"], f"{k}: retried up to max_attempts"
    d = dead_letters(r, "jobs")
    assert ids["ok"] not in d
    assert d[ids["reject"]]["dlq.reason"] == "exec_rejected"
    assert d[ids["reject"]]["dlq.error"] == "amount is not a number", "the last non-empty stderr line"
    assert d[ids["temp"]]["dlq.reason"] == "max_attempts"
    assert d[ids["temp"]]["dlq.error"] == "database busy"
    assert d[ids["other"]]["dlq.error"] == "exit 3"
    assert "signal 9" in d[ids["signal"]]["dlq.error"]
    assert int(d[ids["temp"]]["dlq.attempts"]) == 3
    m = fl.metrics()
    assert m.sum("streamfleet_messages_dead_lettered_total", reason="exec_rejected") == 1
    assert m.sum("streamfleet_messages_dead_lettered_total", reason="max_attempts") == 3


DUMP_HANDLER = """#!/usr/bin/python3
import json, os, sys
data = sys.stdin.buffer.read()
# /proc/self/environ: the environment exactly as exec gave it (Python may add to os.environ)
env = dict(kv.split("=", 1) for kv in open("/proc/self/environ").read().split("\\0") if kv)
fds = {{}}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink("/proc/self/fd/" + fd)
    except FileNotFoundError:
        pass  # the listing's own descriptor, closed by now
with open(os.path.join({out!r}, env["STREAMFLEET_ID"]), "w") as f:
    json.dump({{"stdin": data.decode("latin-1"), "env": env, "fds": fds, "argv": sys.argv}}, f)
"""


def dumped(out, eid):
    return json.loads((out / eid).read_text())


def test_stdin_is_the_message_as_json_and_argv_is_split_like_a_shell(redis_server, fleet, tmp_path):
    out = tmp_path / "dump"
    out.mkdir()
    h = script(tmp_path / "dump.py", DUMP_HANDLER.format(out=str(out)))
    r = redis_server.client()
    eid = r.xadd("mail", {"to": "a@example.com", "subject": 'say "hi"\n', "bin": b"\xff\xfe ok"}).decode()
    fleet({"pool:mail": exec_pool("mail", f"{h} --fast 'two words' a\\ b \"q\\\"x\"")})
    wait_until(lambda: (out / eid).exists(), what="the handler ran")
    d = dumped(out, eid)
    assert d["argv"][1:] == ["--fast", "two words", "a b", 'q"x']
    m = json.loads(d["stdin"])
    assert m == {"pool": "mail", "stream": "mail", "id": eid, "attempt": 1,
                 "fields": {"to": "a@example.com", "subject": 'say "hi"\n',
                            "bin": {"$base64": "//4gb2s="}}}
    wait_until(lambda: pending_count(r, "mail", "mail-group") == 0, what="acked")


def test_stdin_body_is_the_raw_field(redis_server, fleet, tmp_path):
    out = tmp_path / "dump"
    out.mkdir()
    h = script(tmp_path / "dump.py", DUMP_HANDLER.format(out=str(out)))
    r = redis_server.client()
    eid = r.xadd("raw", {"payload": "line1\nline2 {not json", "other": "x"}).decode()
    fleet({"pool:raw": exec_pool("raw", str(h), stdin="body", body_field="payload")})
    wait_until(lambda: (out / eid).exists(), what="the handler ran")
    assert dumped(out, eid)["stdin"] == "line1\nline2 {not json"


def test_environment_is_only_ours_and_no_descriptor_is_inherited(redis_server, fleet, tmp_path):
    out = tmp_path / "dump"
    out.mkdir()
    h = script(tmp_path / "dump.py", DUMP_HANDLER.format(out=str(out)))
    r = redis_server.client()
    ids = add_messages(r, "envs", 8)
    fleet({"pool:envs": exec_pool("envs", str(h), inflight=4,
                                  env=["MODE=production", "GREETING=a b=c"],
                                  pass_env="SF_TEST_PASSED SF_TEST_ABSENT")},
          env={"SF_TEST_PASSED": "yes", "SF_TEST_SECRET": "must not leak"})
    wait_until(lambda: all((out / i).exists() for i in ids), what="all handled")
    for n, eid in enumerate(ids):
        d = dumped(out, eid)
        assert d["env"] == {"STREAMFLEET_POOL": "envs", "STREAMFLEET_STREAM": "envs",
                            "STREAMFLEET_ID": eid, "STREAMFLEET_ATTEMPT": "1",
                            "MODE": "production", "GREETING": "a b=c", "SF_TEST_PASSED": "yes"}
        assert sorted(d["fds"]) == ["0", "1", "2"], f"only stdin/out/err: {d['fds']}"
        assert all(v.startswith("pipe:") for v in d["fds"].values()), d["fds"]
    wait_until(lambda: pending_count(r, "envs", "envs-group") == 0, what="acked")


TIMEOUT_HANDLER = """#!/usr/bin/python3
import json, os, signal, sys, time
m = json.load(sys.stdin)
out = os.path.join({out!r}, m["id"])
open(out + ".pid." + os.environ["STREAMFLEET_ATTEMPT"], "w").write(str(os.getpid()))
if m["fields"]["do"] == "ignore":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    def on_term(sig, frame):
        open(out + ".term", "a").write("%f\\n" % time.time())
        sys.exit(1)
    signal.signal(signal.SIGTERM, on_term)
time.sleep(60)
"""


def test_timeout_sends_sigterm_then_sigkill_and_retries(redis_server, fleet, tmp_path):
    out = tmp_path / "t"
    out.mkdir()
    h = script(tmp_path / "slow.py", TIMEOUT_HANDLER.format(out=str(out)))
    r = redis_server.client()
    obey = add_messages(r, "slow", 1, fields={"do": "obey"})[0]
    ignore = add_messages(r, "slow", 1, fields={"do": "ignore"})[0]
    t0 = time.time()
    fl = fleet({"pool:slow": exec_pool("slow", str(h), timeout="1s", max_attempts=2, inflight=4,
                                       backoff_base="100ms", backoff_max="100ms")})
    worker = fl.children()[0]
    cpu0 = cpu_seconds(worker)
    fl.wait_for(lambda: len(dead_letters(r, "slow")) == 2 and pending_count(r, "slow", "slow-group") == 0,
                timeout=60 * SLOWNESS, what="both dead after two timeouts")
    took = time.time() - t0
    d = dead_letters(r, "slow")
    for eid in (obey, ignore):
        assert d[eid]["dlq.error"] == "timeout"
        assert d[eid]["dlq.reason"] == "max_attempts"
        assert int(d[eid]["dlq.attempts"]) == 2
    assert len((out / f"{obey}.term").read_text().split()) == 2, "SIGTERM reached it each time"
    # the one ignoring SIGTERM was killed 2 s later, twice: at least (1 + 2) * 2 s
    assert took >= 6
    for a in ("1", "2"):
        pid = int((out / f"{ignore}.pid.{a}").read_text())
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    assert descendants(worker) == [], "no handler process left behind"
    assert cpu_seconds(worker) - cpu0 < 2.0 * SLOWNESS, "no busy loop while waiting"


def test_output_beyond_64k_is_read_and_dropped_and_the_last_stderr_line_is_the_error(
        redis_server, fleet, tmp_path):
    h = script(tmp_path / "loud.py", """#!/usr/bin/python3
import sys
sys.stdout.write("x" * (4 << 20))
sys.stdout.flush()
sys.stderr.write(("e" * 100 + "\\n") * 20000)
sys.stderr.write("final words\\n\\n")
sys.exit(75)
""")
    r = redis_server.client()
    ids = add_messages(r, "loud", 3)
    fl = fleet({"pool:loud": exec_pool("loud", str(h), max_attempts=1, inflight=3)})
    fl.wait_for(lambda: len(dead_letters(r, "loud")) == 3 and pending_count(r, "loud", "loud-group") == 0,
                what="all three dead after one failed attempt")
    for eid in ids:
        assert dead_letters(r, "loud")[eid]["dlq.error"] == "final words"
    worker = fl.children()[0]
    rss_kb = int([l for l in open(f"/proc/{worker}/status") if l.startswith("VmRSS")][0].split()[1])
    assert rss_kb < 200 * 1024, "4 MiB of output per process was not kept"


def test_command_that_is_not_executable_fails_the_config_check(tmp_path):
    noexec = tmp_path / "handler.sh"
    noexec.write_text("#!/bin/sh\nexit 0\n")
    noexec.chmod(0o644)
    ini = tmp_path / "sf.ini"
    ini.write_text("[fleet]\nredis = redis://127.0.0.1:1\n\n"
                   "[pool:a]\nstream = a\ngroup = g\nhandler = exec\n"
                   f"command = {noexec} --x\n\n"
                   "[pool:b]\nstream = b\ngroup = g\nhandler = exec\n"
                   "command = no-such-program-anywhere\n\n"
                   "[pool:c]\nstream = c\ngroup = g\nhandler = exec\n"
                   "command = /bin/true 'unterminated\n")
    res = run_binary(["-t", "-c", str(ini)])
    assert res.returncode == 1, res.stderr
    for line in (8, 14, 20):
        assert f"{ini}:{line}:" in res.stderr, res.stderr
    assert len([l for l in res.stderr.splitlines() if l.startswith(f"{ini}:") and ": command: " in l]) == 3
    # the same pools with commands that can run pass the check
    noexec.chmod(0o755)
    ini.write_text(ini.read_text().replace("no-such-program-anywhere", "true")
                   .replace("'unterminated", "'terminated'"))
    res = run_binary(["-t", "-c", str(ini)])
    assert res.returncode == 0, res.stderr


def test_program_gone_after_the_check_is_dead_lettered_exec_failed(redis_server, fleet, tmp_path):
    h = script(tmp_path / "vanishing.sh", "#!/bin/sh\nexit 0\n")
    fl = fleet({"pool:gone": exec_pool("gone", str(h), max_attempts=5)})
    h.unlink()
    r = redis_server.client()
    ids = add_messages(r, "gone", 3)
    fl.wait_for(lambda: len(dead_letters(r, "gone")) == 3 and pending_count(r, "gone", "gone-group") == 0,
                what="dead letters")
    for eid in ids:
        d = dead_letters(r, "gone")[eid]
        assert d["dlq.reason"] == "exec_failed"
        assert int(d["dlq.attempts"]) == 1, "not retried: every attempt would fail alike"
    assert fl.metrics().sum("streamfleet_messages_dead_lettered_total", reason="exec_failed") == 3


def test_shell_yes_runs_the_command_through_sh(redis_server, fleet, tmp_path):
    out = tmp_path / "sh-out"
    r = redis_server.client()
    ids = add_messages(r, "sh", 3)
    fleet({"pool:sh": exec_pool("sh", f'echo "$STREAMFLEET_ID" >> {out} && exit 0', shell="yes")})
    wait_until(lambda: out.exists() and sorted(out.read_text().split()) == sorted(ids), what="ran via sh")
    wait_until(lambda: pending_count(r, "sh", "sh-group") == 0, what="acked")


def test_example_exec_script_end_to_end(redis_server, fleet, tmp_path):
    r = redis_server.client()
    ok = add_messages(r, "ex", 2, fields=lambda i: {"to": f"user{i}@example.com", "subject": "hi"})
    bad = add_messages(r, "ex", 1, fields={"subject": "no recipient"})
    out = tmp_path / "sent.log"
    fl = fleet({"pool:ex": exec_pool("ex", str(REPO / "examples/handlers/exec.sh"),
                                     env=f"SENT_LOG={out}")})
    fl.wait_for(lambda: len(dead_letters(r, "ex")) == 1 and pending_count(r, "ex", "ex-group") == 0,
                what="two sent, one rejected")
    assert dead_letters(r, "ex")[bad[0]]["dlq.reason"] == "exec_rejected"
    assert sorted(out.read_text().split()) == sorted(f"user{i}@example.com" for i in range(2))
