"""Integration tests of `watch = yes` (issue 12, part 7: development reload): when the file of
an exec or subprocess command, or a plugin, changes, the master replaces that pool's workers
as a reload would, so that a handler author sees an edit at once.

The real binary, a real redis-server, real handler processes (Python and shell scripts
written by each test, plugins compiled with gcc). A handler tags what it did with its version
("v1", "v2"...), so each test asserts which code handled a message, and which worker pids ran."""
import os
import shutil
import signal
import subprocess
import time

import pytest

from conftest import REPO, SLOWNESS, add_messages, pending_count, run_binary, write_ini
from supervisor_helpers import all_read_and_acked, build_plugin, pool, pool_children, rewrite_config, send_signal

METRIC = "streamfleet_watch_restarts_total"

# A subprocess handler: appends "VERSION ID" to OUT/seen for each message, then acks it.
SUB = """#!/usr/bin/python3
import json, sys
VERSION = {version!r}
for line in sys.stdin:
    m = json.loads(line)
    with open({seen!r}, "a") as f:
        f.write("%s %s\\n" % (VERSION, m["id"]))
    sys.stdout.write(json.dumps({{"id": m["id"], "result": "ack"}}) + "\\n")
    sys.stdout.flush()
"""

# An exec handler: one process per message, same record.
EXEC = """#!/bin/sh
echo "{version} $STREAMFLEET_ID" >> {seen}
"""


def write_script(path, text):
    """Write in place (the same inode), as `echo > file` or a simple editor does."""
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def replace_script(path, text):
    """Replace by rename, as vim, emacs and most IDEs save: a new inode under the same name."""
    tmp = path.with_name(path.name + ".swp~")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.rename(tmp, path)


def seen(tmp_path):
    """{entry id: version that handled it}."""
    p = tmp_path / "seen"
    if not p.exists():
        return {}
    return {i: v for v, i in (line.split() for line in p.read_text().splitlines() if line.strip())}


def watch_restarts(fl, name="w"):
    return fl.metrics().total(METRIC, pool=name) or 0


def handled_by(fl, r, tmp_path, stream, version):
    """Add one message and wait until it is handled; returns the version that handled it."""
    (eid,) = add_messages(r, stream, 1)
    fl.wait_for(lambda: eid in seen(tmp_path), what=f"{eid} handled (expecting {version})")
    return seen(tmp_path)[eid]


def new_workers(fl, before, name="w"):
    """The pool's workers once none of before is among them (and it has some)."""
    now = set(pool_children(fl, name))
    return now if now and not (now & before) else None


def check_replaced_by_rename(fl, r, tmp_path, stream, script, template, seen_path):
    """v1 of the script handles a message; the script is then replaced by rename with v2 of
    template: new workers start, v2 handles the next message, and one watch restart is counted."""
    assert handled_by(fl, r, tmp_path, stream, "v1") == "v1"
    before = set(pool_children(fl, "w"))
    replace_script(script, template.format(version="v2", seen=seen_path))
    fl.wait_for(lambda: new_workers(fl, before), timeout=15 * SLOWNESS, what="new workers")
    assert handled_by(fl, r, tmp_path, stream, "v2") == "v2"
    assert watch_restarts(fl) == 1


def sub_pool(stream, script, **extra):
    return pool(stream, block="200ms", handler="subprocess", command=f"/usr/bin/python3 {script}",
                backoff_base="100ms", **extra)


# --------------------------------------------------------------------------------------------
# subprocess
# --------------------------------------------------------------------------------------------

def test_subprocess_edit_in_place_and_by_rename_replaces_the_workers(tmp_path, redis_server, fleet):
    """`command = /usr/bin/python3 h.py`: the script is an argument, watched too. An edit in
    place and a replacement by rename each start a new generation (new pids) that runs the
    new code; nothing stays pending."""
    r = redis_server.client()
    h = tmp_path / "h.py"
    s = str(tmp_path / "seen")
    write_script(h, SUB.format(version="v1", seen=s))
    fl = fleet({"pool:w": sub_pool("ws", h, workers=2, watch="yes")})
    assert handled_by(fl, r, tmp_path, "ws", "v1") == "v1"
    first = fl.wait_for(lambda: set(pool_children(fl, "w")) if len(pool_children(fl, "w")) == 2 else None,
                        what="two workers")
    assert watch_restarts(fl) == 0

    write_script(h, SUB.format(version="v2", seen=s))
    second = fl.wait_for(lambda: new_workers(fl, first), timeout=15 * SLOWNESS, what="a new generation")
    assert handled_by(fl, r, tmp_path, "ws", "v2") == "v2"
    fl.wait_for(lambda: watch_restarts(fl) == 1, what="one watch restart counted")

    replace_script(h, SUB.format(version="v3", seen=s))
    fl.wait_for(lambda: new_workers(fl, second), timeout=15 * SLOWNESS, what="a third generation")
    assert handled_by(fl, r, tmp_path, "ws", "v3") == "v3"
    fl.wait_for(lambda: watch_restarts(fl) == 2, what="two watch restarts counted")
    fl.wait_for(lambda: pending_count(r, "ws", "ws-group") == 0, what="nothing pending")
    assert r.xlen("ws:dlq") == 0


def test_without_watch_an_edit_changes_nothing(tmp_path, redis_server, fleet):
    r = redis_server.client()
    h = tmp_path / "h.py"
    s = str(tmp_path / "seen")
    write_script(h, SUB.format(version="v1", seen=s))
    fl = fleet({"pool:w": sub_pool("wn", h)})
    assert handled_by(fl, r, tmp_path, "wn", "v1") == "v1"
    before = set(pool_children(fl, "w"))
    write_script(h, SUB.format(version="v2", seen=s))
    replace_script(h, SUB.format(version="v3", seen=s))
    time.sleep(3 * SLOWNESS)
    assert set(pool_children(fl, "w")) == before, "the workers were not replaced"
    assert handled_by(fl, r, tmp_path, "wn", "v1") == "v1", "the running process keeps its code"
    assert watch_restarts(fl) == 0


def test_a_burst_of_writes_replaces_the_workers_once(tmp_path, redis_server, fleet):
    """Five writes 50 ms apart (a save that writes several times): one replacement."""
    r = redis_server.client()
    h = tmp_path / "h.py"
    s = str(tmp_path / "seen")
    write_script(h, SUB.format(version="v1", seen=s))
    fl = fleet({"pool:w": sub_pool("wb", h, watch="yes")})
    assert handled_by(fl, r, tmp_path, "wb", "v1") == "v1"
    before = set(pool_children(fl, "w"))
    for k in range(5):
        write_script(h, SUB.format(version=f"v{k + 2}", seen=s))
        time.sleep(0.05)
    # (a message added while the old generation drains may be read by it and then wait for
    # claim_idle: the same as during a reload; so wait for the old worker to be gone)
    fl.wait_for(lambda: new_workers(fl, before), timeout=15 * SLOWNESS, what="the workers replaced")
    assert handled_by(fl, r, tmp_path, "wb", "v6") == "v6"
    time.sleep(2 * SLOWNESS)
    assert watch_restarts(fl) == 1, "replaced once for the whole burst"


def test_a_reload_watches_again(tmp_path, redis_server, fleet):
    """watch turned on by a reload, and the command moved to another script: the new script is
    watched, the old one no longer."""
    r = redis_server.client()
    s = str(tmp_path / "seen")
    old, new = tmp_path / "old.py", tmp_path / "new.py"
    write_script(old, SUB.format(version="old1", seen=s))
    write_script(new, SUB.format(version="new1", seen=s))
    fl = fleet({"pool:w": sub_pool("wr", old)})
    assert handled_by(fl, r, tmp_path, "wr", "old1") == "old1"

    def edit(sections):
        sections["pool:w"].update(watch="yes", command=f"/usr/bin/python3 {new}")
    before = set(pool_children(fl, "w"))
    rewrite_config(fl, edit)
    send_signal(fl, signal.SIGHUP)
    gen = fl.wait_for(lambda: new_workers(fl, before), timeout=15 * SLOWNESS, what="the reload's workers")
    assert handled_by(fl, r, tmp_path, "wr", "new1") == "new1"
    assert watch_restarts(fl) == 0, "a reload is not a watch restart"

    write_script(old, SUB.format(version="old2", seen=s))
    time.sleep(2 * SLOWNESS)
    assert set(pool_children(fl, "w")) == gen and watch_restarts(fl) == 0, "the old script is not watched"
    replace_script(new, SUB.format(version="new2", seen=s))
    fl.wait_for(lambda: new_workers(fl, gen), timeout=15 * SLOWNESS, what="workers for new.py's change")
    assert handled_by(fl, r, tmp_path, "wr", "new2") == "new2"
    assert watch_restarts(fl) == 1


def test_routed_pool_watches_its_handler_sections_and_shell_words(tmp_path, redis_server, fleet):
    """A routed pool whose [handler:NAME] runs `shell = yes`: the script named in the shell
    command is watched."""
    r = redis_server.client()
    s = str(tmp_path / "seen")
    h = tmp_path / "h.py"
    write_script(h, SUB.format(version="v1", seen=s))
    fl = fleet({
        "handler:py": {"handler": "subprocess", "shell": "yes", "command": f"cd / && exec /usr/bin/python3 '{h}'"},
        "pool:w": pool("wt", block="200ms", handler="py", watch="yes"),
    })
    check_replaced_by_rename(fl, r, tmp_path, "wt", h, SUB, s)


def test_handler_sections_of_exec_and_subprocess_run_their_command(tmp_path, redis_server, fleet):
    """(Found while writing the test above: a routed pool's exec and subprocess targets were
    given no argv, and their workers crashed in exec.) route.TYPE to an exec section and to a
    subprocess section: each handles its messages."""
    r = redis_server.client()
    s = tmp_path / "seen"
    sub, ex = tmp_path / "sub.py", tmp_path / "ex.sh"
    write_script(sub, SUB.format(version="sub", seen=str(s)))
    write_script(ex, EXEC.format(version="exec", seen=s))
    routed = pool("wx", block="200ms", route_field="kind", **{"route.a": "sub", "route.b": "ex"})
    del routed["handler"]                       # routes instead
    fl = fleet({
        "handler:sub": {"handler": "subprocess", "command": f"/usr/bin/python3 {sub}"},
        "handler:ex": {"handler": "exec", "command": str(ex)},
        "pool:w": routed,
    })
    a = add_messages(r, "wx", 3, fields={"kind": "a"})
    b = add_messages(r, "wx", 3, fields={"kind": "b"})
    fl.wait_for(lambda: len(seen(tmp_path)) == 6, what="six messages handled")
    assert seen(tmp_path) == {**{i: "sub" for i in a}, **{i: "exec" for i in b}}
    fl.wait_for(lambda: pending_count(r, "wx", "wx-group") == 0, what="nothing pending")


# --------------------------------------------------------------------------------------------
# exec
# --------------------------------------------------------------------------------------------

def test_exec_edit_replaces_the_workers_and_runs_the_new_script(tmp_path, redis_server, fleet):
    r = redis_server.client()
    h = tmp_path / "h.sh"
    s = tmp_path / "seen"
    write_script(h, EXEC.format(version="v1", seen=s))
    fl = fleet({"pool:w": pool("we", block="200ms", handler="exec", command=str(h), watch="yes")})
    check_replaced_by_rename(fl, r, tmp_path, "we", h, EXEC, s)


# --------------------------------------------------------------------------------------------
# plugin
# --------------------------------------------------------------------------------------------


def answering(name, result, reason="NULL"):
    """A plugin whose handle() answers result (SF_ACK, SF_DEAD) with reason."""
    return f"""
static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
{{ (void)h; (void)p; (void)n; (void)e; (void)el; *st = NULL; return 0; }}
static int handle(void *s, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
{{ (void)s; (void)m; (void)c; a->reason = {reason}; return {result}; }}
const struct sf_plugin streamfleet_plugin = {{ .abi = STREAMFLEET_PLUGIN_ABI, .name = "{name}",
                                              .init = init, .handle = handle }};
"""


def dead_reasons(r, stream):
    return {f[b"dlq.id"].decode(): f[b"dlq.reason"].decode() for _, f in r.xrange(f"{stream}:dlq")}


def test_plugin_replaced_by_another_build_then_a_broken_one_is_refused(tmp_path, redis_server, fleet):
    """The .so replaced by a build that dead-letters: new workers, and the next message is
    dead-lettered by it. Then replaced by one whose init() fails: the forked check refuses it,
    the running workers stay (same pids) and keep handling messages with the loaded code."""
    r = redis_server.client()
    v1 = build_plugin(tmp_path, "v1", answering("v1", "SF_ACK"))
    v2 = build_plugin(tmp_path, "v2", answering("v2", "SF_DEAD", '"watch_v2"'))
    broken = build_plugin(tmp_path, "broken", """
static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
{ (void)h; (void)p; (void)n; (void)st; snprintf(e, el, "broken on purpose"); return -1; }
static int handle(void *s, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
{ (void)s; (void)m; (void)a; (void)c; return SF_ACK; }
const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .name = "broken",
                                              .init = init, .handle = handle };
""")
    so = tmp_path / "handler.so"
    shutil.copy(v1, so)
    fl = fleet({"pool:w": pool("wp", block="200ms", handler="plugin", plugin=str(so), watch="yes")})
    (a,) = add_messages(r, "wp", 1)
    fl.wait_for(lambda: all_read_and_acked(r, "wp", 1),
                what="v1 acked the first message")
    assert r.xlen("wp:dlq") == 0
    first = set(pool_children(fl, "w"))

    tmp = tmp_path / "handler.so.new"           # replaced whole, as `make install` or cp does
    shutil.copy(v2, tmp)
    os.rename(tmp, so)
    second = fl.wait_for(lambda: new_workers(fl, first), timeout=15 * SLOWNESS, what="new workers")
    (b,) = add_messages(r, "wp", 1)
    fl.wait_for(lambda: b in dead_reasons(r, "wp"), what="v2 dead-lettered the second message")
    assert dead_reasons(r, "wp")[b] == "watch_v2"
    fl.wait_for(lambda: watch_restarts(fl) == 1, what="one watch restart")

    shutil.copy(broken, tmp)
    os.rename(tmp, so)
    time.sleep(4 * SLOWNESS)                    # debounce, the forked check, and then some
    assert set(pool_children(fl, "w")) == second, "the workers were kept"
    assert watch_restarts(fl) == 1, "no replacement counted"
    (c,) = add_messages(r, "wp", 1)
    fl.wait_for(lambda: c in dead_reasons(r, "wp"), what="the loaded v2 still handles messages")

    shutil.copy(v1, tmp)                        # fixed: replaced again
    os.rename(tmp, so)
    fl.wait_for(lambda: new_workers(fl, second), timeout=15 * SLOWNESS, what="new workers with the fix")
    (d,) = add_messages(r, "wp", 1)
    fl.wait_for(lambda: all_read_and_acked(r, "wp", 4),
                what="v1 acked the fourth message")
    assert d not in dead_reasons(r, "wp")
    assert watch_restarts(fl) == 2


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------

def test_watch_is_a_pool_key_not_a_handler_key(tmp_path):
    h = tmp_path / "h.py"
    write_script(h, SUB.format(version="v1", seen=str(tmp_path / "seen")))
    cfg = write_ini(tmp_path / "c.ini", {
        "fleet": {"redis": "redis://127.0.0.1:1", "allow_root": "yes"},
        "handler:py": {"handler": "subprocess", "command": f"/usr/bin/python3 {h}", "watch": "yes"},
        "pool:w": {"stream": "s", "group": "g", "handler": "py"},
    })
    r = run_binary(["-t", "-c", str(cfg)])
    assert r.returncode != 0
    line = cfg.read_text().splitlines().index("watch = yes") + 1
    assert any(l.startswith(f"{cfg}:{line}: ") for l in r.stderr.splitlines()), r.stderr

    write_ini(cfg, {
        "fleet": {"redis": "redis://127.0.0.1:1", "allow_root": "yes"},
        "handler:py": {"handler": "subprocess", "command": f"/usr/bin/python3 {h}"},
        "pool:w": {"stream": "s", "group": "g", "handler": "py", "watch": "yes"},
    })
    r = run_binary(["-t", "-c", str(cfg)])
    assert r.returncode == 0, r.stderr

    # a handler with no file of its own: nothing to watch, said at -t
    write_ini(cfg, {
        "fleet": {"redis": "redis://127.0.0.1:1", "allow_root": "yes"},
        "pool:w": {"stream": "s", "group": "g", "handler": "log", "watch": "yes"},
    })
    r = run_binary(["-t", "-c", str(cfg)])
    assert r.returncode != 0
    line = cfg.read_text().splitlines().index("watch = yes") + 1
    assert any(l.startswith(f"{cfg}:{line}: ") for l in r.stderr.splitlines()), r.stderr
