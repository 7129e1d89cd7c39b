"""Integration tests of handler = plugin (issue 12, part 3): a C handler loaded into each worker.

The real binary, a real redis-server, the example plugin examples/plugins/ackall.c as `make`
builds it (build/san/plugins/ackall.so beside the binary), and small bad plugins compiled here
with gcc against include/streamfleet/plugin.h. One behaviour per test."""
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (REPO, SLOWNESS, add_messages, pending_count, run_binary, streamfleet_bin,
                      write_ini)
from reliability_helpers import dead_letters
from supervisor_helpers import (BIG_TIMEOUT, all_read_and_acked, build_plugin, master_cpu, pool, restarts,
                                rewrite_config, send_signal, wait_children)


def example_plugin():
    """The example plugin built by `make` beside the binary under test (or the sanitizer
    build's, for a binary copied elsewhere)."""
    for d in (streamfleet_bin().parent / "plugins", REPO / "build/san/plugins", REPO / "build/plain/plugins"):
        if (d / "ackall.so").is_file():
            return d / "ackall.so"
    pytest.fail("examples/plugins/ackall.so not built (run `make SAN=1 all`)")


def plugin_pool(stream, path=None, workers=1, batch=20, **extra):
    return pool(stream, workers=workers, batch=batch, block="200ms", handler="plugin",
                plugin=str(path or example_plugin()), **extra)


def segv_kills():
    """Environment for a process whose plugin segfaults: ASan's SEGV handler off, so that the
    crash is the signal a plain build dies of (and not a sanitizer report about plugin code)."""
    import conftest
    log = f":log_path={conftest._sanitizer_prefix}" if conftest._sanitizer_prefix else ""
    return {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:handle_segv=0" + log}


def acked_total(fl, pool_name="a"):
    return fl.metrics().total("streamfleet_messages_acked_total", pool=pool_name) or 0


# The handle() every small test plugin shares: ack.
ACK = """
static int handle(void *s, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
{ (void)s; (void)m; (void)a; (void)c; return SF_ACK; }
"""
INIT_OK = """
static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
{ (void)h; (void)p; (void)n; (void)e; (void)el; *st = NULL; return 0; }
"""


# --------------------------------------------------------------------------------------------
# the example plugin: ack, dead, retry, async
# --------------------------------------------------------------------------------------------

def test_plugin_acks_every_message(redis_server, fleet):
    r = redis_server.client()
    ids = add_messages(r, "pa", 1000, fields=lambda i: {"n": str(i), "bin": b"\x00\xff" * (i % 3)})
    fl = fleet({"pool:a": plugin_pool("pa", workers=2)})
    fl.wait_for(lambda: all_read_and_acked(r, "pa", len(ids)), timeout=BIG_TIMEOUT, what="1000 acked")
    fl.wait_for(lambda: acked_total(fl) == 1000, what="acked_total 1000")
    assert r.xlen("pa:dlq") == 0
    assert restarts(fl.metrics(), "a") == 0, "no worker died"
    assert fl.stop() == 0


def test_plugin_dead_letters_with_its_reason_and_error(redis_server, fleet):
    r = redis_server.client()
    ids = add_messages(r, "pd", 40, fields=lambda i: {"n": str(i), **({"poison": f"bad {i}"} if i % 4 == 0 else {})})
    fl = fleet({"pool:a": plugin_pool("pd", **{"plugin.dead_if": "poison"})})
    poisoned = {ids[i]: f"bad {i}" for i in range(40) if i % 4 == 0}
    fl.wait_for(lambda: r.xlen("pd:dlq") == len(poisoned) and pending_count(r, "pd", "pd-group") == 0,
                timeout=BIG_TIMEOUT, what="10 dead letters, nothing pending")
    dead = dead_letters(r, "pd")
    assert set(dead) == set(poisoned)
    for eid, f in dead.items():
        assert f["dlq.reason"] == "ackall_dead"
        assert f["dlq.error"] == poisoned[eid]
        assert f["dlq.attempts"] == "1", "dead at once, no retry"
    m = fl.metrics()
    assert m.value("streamfleet_messages_dead_lettered_total", pool="a", reason="other") == len(poisoned)
    fl.wait_for(lambda: acked_total(fl) >= 30, what="the 30 others acked")


def test_plugin_retry_honours_its_delay_then_acks_or_dead_letters_at_max_attempts(redis_server, fleet):
    """retry_if = tries: retried until attempt == the field's value. "3": acked on the third
    attempt, each retry after the plugin's retry_after_ms (1.5 s, where the pool's own backoff
    would wait 10 ms). "99" with max_attempts 3:
    dead-lettered max_attempts after 3 attempts."""
    r = redis_server.client()
    (ok_id,) = add_messages(r, "pr", 1, fields={"tries": "3"})
    (bad_id,) = add_messages(r, "pr", 1, fields={"tries": "99"})
    t0 = time.monotonic()
    fl = fleet({"pool:a": plugin_pool("pr", max_attempts=3, backoff_base="10ms", backoff_max="10s",
                                      backoff_jitter="0", **{"plugin.retry_if": "tries",
                                                             "plugin.retry_after_ms": "1500"})})
    fl.wait_for(lambda: r.xlen("pr:dlq") == 1 and pending_count(r, "pr", "pr-group") == 0,
                timeout=BIG_TIMEOUT, what="one dead letter, nothing pending")
    took = time.monotonic() - t0
    dead = dead_letters(r, "pr")
    assert set(dead) == {bad_id}
    assert dead[bad_id]["dlq.reason"] == "max_attempts"
    assert dead[bad_id]["dlq.attempts"] == "3"
    assert dead[bad_id]["dlq.error"] == "attempt 3 of 99", "the plugin's error text rides along"
    assert took >= 3.0, f"two retries 1.5 s apart took only {took:.2f} s (retry_after_ms ignored?)"
    m = fl.metrics()
    assert m.total("streamfleet_messages_failed_total", pool="a") == 2 + 3
    fl.wait_for(lambda: acked_total(fl) == 1, what="the other acked")


def test_plugin_async_answers_through_done(redis_server, fleet):
    """plugin.async = yes: every answer comes later, through host->done() from run(), woken
    by a descriptor the plugin gave through fds()."""
    r = redis_server.client()
    ids = add_messages(r, "pq", 600, fields=lambda i: {"n": str(i), **({"poison": "x"} if i % 10 == 0 else {})})
    fl = fleet({"pool:a": plugin_pool("pq", workers=2, batch=50,
                                      **{"plugin.async": "yes", "plugin.dead_if": "poison"})})
    fl.wait_for(lambda: r.xlen("pq:dlq") == 60 and pending_count(r, "pq", "pq-group") == 0,
                timeout=BIG_TIMEOUT, what="60 dead letters, nothing pending")
    fl.wait_for(lambda: all_read_and_acked(r, "pq", len(ids)), what="all read")
    fl.wait_for(lambda: acked_total(fl) == 540, what="540 acked")
    assert set(dead_letters(r, "pq")) == {ids[i] for i in range(0, 600, 10)}
    assert fl.stop() == 0


# --------------------------------------------------------------------------------------------
# -t: the plugin loads and initialises in a forked checker
# --------------------------------------------------------------------------------------------

def check(tmp_path, so, **extra):
    """Run -t on a config whose pool uses plugin so; returns (CompletedProcess, config path,
    line of its `plugin =` key)."""
    cfg = write_ini(tmp_path / "t.ini", {"fleet": {"redis": "redis://127.0.0.1:1", "allow_root": "yes"},
                                         "pool:a": {"stream": "s", "group": "g", "handler": "plugin",
                                                    "plugin": str(so), **extra}})
    line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1) if l.startswith("plugin ="))
    return run_binary(["-t", "-c", str(cfg)], timeout=60, env=segv_kills()), cfg, line


def test_check_passes_a_good_plugin(tmp_path):
    r, _, _ = check(tmp_path, example_plugin(), **{"plugin.dead_if": "poison"})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""


@pytest.mark.parametrize("name,body,why", [
    ("wrong_abi", INIT_OK + ACK + "const struct sf_plugin streamfleet_plugin = "
     "{ .abi = STREAMFLEET_PLUGIN_ABI + 41, .init = init, .handle = handle };", "ABI version 42"),
    ("no_symbol", INIT_OK + ACK + "const struct sf_plugin some_other_name = "
     "{ .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };", "streamfleet_plugin"),
    ("no_handle", INIT_OK + "const struct sf_plugin streamfleet_plugin = "
     "{ .abi = STREAMFLEET_PLUGIN_ABI, .init = init };", "handle"),
    ("unresolved", "void nowhere_to_be_found(void);\n" + ACK + """
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)p; (void)n; (void)st; (void)e; (void)el; nowhere_to_be_found(); return 0; }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""",
     "nowhere_to_be_found"),
    ("init_fails", ACK + """
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)st; snprintf(e, el, "cannot reach %s", n ? p[0].value : "?"); return -1; }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""",
     "cannot reach db.example:5432"),
    ("init_crashes", ACK + """
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)p; (void)n; (void)st; (void)e; (void)el; *(volatile int *)0 = 1; return 0; }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""",
     "signal 11"),
])
def test_check_reports_a_bad_plugin_at_its_line(tmp_path, name, body, why):
    so = build_plugin(tmp_path, name, body)
    r, cfg, line = check(tmp_path, so, **{"plugin.db": "db.example:5432"})
    assert r.returncode == 1, f"-t accepted plugin {name}:\n{r.stdout}{r.stderr}"
    errs = [l for l in r.stderr.splitlines() if l.startswith(f"{cfg}:{line}: ")]
    assert len(errs) == 1, f"want one error at {cfg}:{line}, got:\n{r.stderr}"
    assert str(so) in errs[0] and why in errs[0], errs[0]


def test_check_gives_up_on_an_init_that_hangs(tmp_path):
    so = build_plugin(tmp_path, "hangs", ACK + """
     #include <unistd.h>
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)p; (void)n; (void)st; (void)e; (void)el; for (;;) pause(); return 0; }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""")
    t0 = time.monotonic()
    r, cfg, line = check(tmp_path, so)
    took = time.monotonic() - t0
    assert r.returncode == 1
    assert any(l.startswith(f"{cfg}:{line}: ") and "10 s" in l for l in r.stderr.splitlines()), r.stderr
    assert 9 <= took <= 10 + 10 * SLOWNESS, f"-t took {took:.1f} s"


def test_check_reports_a_missing_plugin_file_at_its_line(tmp_path):
    r, cfg, line = check(tmp_path, tmp_path / "nowhere.so")
    assert r.returncode == 1
    assert any(l.startswith(f"{cfg}:{line}: ") and "nowhere.so" in l for l in r.stderr.splitlines()), r.stderr


def test_plugin_keys_need_handler_plugin(tmp_path):
    cfg = write_ini(tmp_path / "t.ini", {"fleet": {"redis": "redis://127.0.0.1:1"},
                                         "pool:a": {"stream": "s", "group": "g", "handler": "log",
                                                    "plugin.x": "1", "plugin": str(example_plugin())},
                                         "pool:b": {"stream": "s2", "group": "g", "handler": "plugin"}})
    text = cfg.read_text().splitlines()
    r = run_binary(["-t", "-c", str(cfg)], timeout=60)
    assert r.returncode == 1
    lines = {int(m.group(1)) for m in re.finditer(rf"^{re.escape(str(cfg))}:(\d+): ", r.stderr, re.M)}
    assert lines == {text.index("plugin.x = 1") + 1, text.index(f"plugin = {example_plugin()}") + 1,
                     text.index("[pool:b]") + 1}, r.stderr


# --------------------------------------------------------------------------------------------
# a plugin that fails in the worker: no busy loop, nothing lost
# --------------------------------------------------------------------------------------------

def test_plugin_crashing_in_init_backs_off_loses_nothing_and_recovers_when_fixed(tmp_path, redis_server, fleet):
    """A worker whose plugin segfaults in init() dies at once: the master restarts it after 1,
    2, 4 ... s, not in a loop; the messages wait in Redis; when the file is replaced by a
    working plugin the next worker handles every one of them."""
    r = redis_server.client()
    crash = build_plugin(tmp_path, "crash", ACK + """
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)p; (void)n; (void)st; (void)e; (void)el; *(volatile int *)0 = 1; return 0; }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""")
    so = tmp_path / "handler.so"
    shutil.copy(crash, so)
    ids = add_messages(r, "pc", 50)
    fl = fleet({"pool:a": plugin_pool("pc", path=so)}, env=segv_kills())
    cpu0 = master_cpu(fl.pid)
    time.sleep(6)
    m = fl.metrics()
    died = restarts(m, "a")
    assert 2 <= died <= 4, f"{died} restarts in 6 s (want the 1, 2, 4 s backoff)"
    assert restarts(m, "a", "signal") == died
    assert master_cpu(fl.pid) - cpu0 < 1.5 * SLOWNESS, "the master spun"
    assert r.xlen("pc") == 50 and r.xlen("pc:dlq") == 0
    assert (m.total("streamfleet_messages_acked_total", pool="a") or 0) == 0

    tmp = tmp_path / "handler.so.new"          # replaced whole, as a package manager does
    shutil.copy(example_plugin(), tmp)
    os.rename(tmp, so)
    fl.wait_for(lambda: all_read_and_acked(r, "pc", len(ids)), timeout=BIG_TIMEOUT,
                what="all 50 handled by the fixed plugin")
    assert r.xlen("pc:dlq") == 0


def test_plugin_failing_init_in_the_worker_waits_long_and_says_why(redis_server, fleet):
    """init() returns an error in the worker (-t was skipped): the worker exits as one whose
    config cannot work, the master waits 30 s before the next try (not a loop), the plugin's
    reason is in the log, and nothing is read."""
    r = redis_server.client()
    add_messages(r, "pf", 10)
    fl = fleet({"pool:a": plugin_pool("pf", **{"plugin.fail_init": "no database at db.example"})})
    fl.wait_for(lambda: restarts(fl.metrics(), "a") >= 1, what="the first worker gone")
    time.sleep(5)
    m = fl.metrics()
    assert restarts(m, "a") == 1, "not restarted within 5 s"
    assert restarts(m, "a", "exit") == 1
    assert "no database at db.example" in fl.log()
    assert (m.total("streamfleet_messages_read_total", pool="a") or 0) == 0
    assert r.xlen("pf") == 10 and r.xlen("pf:dlq") == 0


def test_plugin_crashing_on_one_message_dead_letters_it_and_handles_the_rest(tmp_path, redis_server, fleet):
    """A plugin that segfaults on one message (a poison message): each crash takes the worker;
    its replacement reads its pending list again, so the message comes back with its attempt
    counted until max_attempts dead-letters it. The other messages are all handled. (batch 1:
    with a larger batch, the messages read with the poison one come back with it and use up
    their attempts too, a property of the worker that docs/handlers.md warns about.)"""
    r = redis_server.client()
    so = build_plugin(tmp_path, "poison", """
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)p; (void)n; (void)e; (void)el; *st = NULL; return 0; }
     static int handle(void *s, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
     {
         (void)s; (void)a; (void)c;
         for (size_t i = 0; i < m->nfields; i++)
             if (m->fields[2 * i].len == 5 && memcmp(m->fields[2 * i].p, "crash", 5) == 0)
                 *(volatile int *)0 = 1;
         return SF_ACK;
     }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""")
    ids = add_messages(r, "pp", 30, fields=lambda i: {"n": str(i), **({"crash": "1"} if i == 10 else {})})
    fl = fleet({"pool:a": plugin_pool("pp", path=so, batch=1, max_attempts=3)}, env=segv_kills())
    fl.wait_for(lambda: r.xlen("pp:dlq") == 1 and pending_count(r, "pp", "pp-group") == 0,
                timeout=BIG_TIMEOUT, what="the poison message dead-lettered, nothing pending")
    (dead,) = dead_letters(r, "pp").values()
    assert dead["dlq.id"] == ids[10]
    assert dead["dlq.reason"] == "max_attempts"
    m = fl.metrics()
    assert restarts(m, "a", "signal") == 3, "one crash per attempt"
    assert all_read_and_acked(r, "pp", 30)
    fl.wait_for(lambda: acked_total(fl) >= 29, what="the 29 others acked")


# --------------------------------------------------------------------------------------------
# reload
# --------------------------------------------------------------------------------------------

def reloads(fl, result):
    return fl.metrics().value("streamfleet_reloads_total", result=result) or 0


def test_reload_to_a_plugin_that_fails_keeps_the_running_workers_and_a_good_change_applies(
        tmp_path, redis_server, fleet):
    """SIGHUP with a changed plugin: the master checks it in a forked checker first. One whose
    init() fails is refused (reloads_total{result="failed"}, the same workers go on handling);
    a change that loads starts a new generation that uses the new parameters."""
    r = redis_server.client()
    fl = fleet({"pool:a": plugin_pool("pl")})
    (worker,) = wait_children(fl, 1)
    add_messages(r, "pl", 10, fields={"poison": "1"})
    fl.wait_for(lambda: all_read_and_acked(r, "pl", 10), what="10 acked (no dead_if yet)")

    rewrite_config(fl, lambda s: s["pool:a"].update({"plugin.fail_init": "broken on purpose"}))
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: reloads(fl, "failed") == 1, what="the reload refused")
    assert reloads(fl, "ok") == 0
    assert wait_children(fl, 1) == [worker], "the running worker was kept"
    add_messages(r, "pl", 10, fields={"poison": "1"})
    fl.wait_for(lambda: all_read_and_acked(r, "pl", 20), what="20 acked by the old worker")
    assert "broken on purpose" in fl.log()

    def good(s):
        del s["pool:a"]["plugin.fail_init"]
        s["pool:a"]["plugin.dead_if"] = "poison"
    rewrite_config(fl, good)
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: reloads(fl, "ok") == 1, what="the good reload")
    fl.wait_for(lambda: worker not in fl.children(), what="the old worker replaced")
    add_messages(r, "pl", 10, fields={"poison": "1"})
    fl.wait_for(lambda: r.xlen("pl:dlq") == 10 and pending_count(r, "pl", "pl-group") == 0,
                timeout=BIG_TIMEOUT, what="the new generation dead-letters the poison")
    assert reloads(fl, "failed") == 1


# --------------------------------------------------------------------------------------------
# what the plugin sees
# --------------------------------------------------------------------------------------------

ECHO = r"""
#include <stdlib.h>
static char params[512];
static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
{
    (void)h; (void)e; (void)el; *st = NULL;
    for (size_t i = 0; i < n; i++)
        snprintf(params + strlen(params), sizeof params - strlen(params), "%s=%s;", p[i].key, p[i].value);
    return 0;
}
/* Dead-letters every message with an error that describes what handle() was given. */
static int handle(void *s, const struct sf_message *m, struct sf_answer *a, struct sf_call *c)
{
    static char text[1024];
    (void)s; (void)c;
    int k = snprintf(text, sizeof text, "%s|%s|%s|%lld|%s|", m->pool, m->stream, m->id, m->attempt, params);
    for (size_t i = 0; i < m->nfields; i++) {
        const struct sf_bytes *v = &m->fields[2 * i + 1];
        size_t nuls = 0;
        for (size_t j = 0; j < v->len; j++)
            nuls += v->p[j] == '\0';
        k += snprintf(text + k, sizeof text - (size_t)k, "%.*s:%zu:%zu:%d,", (int)m->fields[2 * i].len,
                      m->fields[2 * i].p, v->len, nuls, v->p[v->len] == '\0');
    }
    a->reason = "echo";
    a->error = text;
    return SF_DEAD;
}
const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };
"""


def test_plugin_sees_the_message_binary_safe_and_its_parameters_in_order(tmp_path, redis_server, fleet):
    r = redis_server.client()
    so = build_plugin(tmp_path, "echo", ECHO)
    (eid,) = add_messages(r, "pe", 1, fields={"text": "héllo", "bin": b"a\x00b\x00\xffc", "empty": b""})
    fl = fleet({"pool:echo": plugin_pool("pe", path=so, **{"plugin.b": ["2", "3"], "plugin.a": "x = y"})})
    fl.wait_for(lambda: r.xlen("pe:dlq") == 1, what="the echo dead letter")
    (dead,) = dead_letters(r, "pe").values()
    assert dead["dlq.reason"] == "echo"
    assert dead["dlq.error"] == (f"echo|pe|{eid}|1|b=2;b=3;a=x = y;|"
                                 f"text:{len('héllo'.encode())}:0:1,bin:6:2:1,empty:0:0:1,")


# --------------------------------------------------------------------------------------------
# a plugin as a named handler ([handler:NAME]) behind routes
# --------------------------------------------------------------------------------------------

def test_plugin_in_a_handler_section_gets_its_parameters_behind_a_route(redis_server, fleet):
    r = redis_server.client()
    fl = fleet({"handler:plug": {"handler": "plugin", "plugin": str(example_plugin()),
                                 "plugin.dead_if": "poison"},
                "handler:rest": {"handler": "noop"},
                "pool:a": {"stream": "pr", "group": "pr-group", "workers": 1, "batch": 20, "block": "200ms",
                           "route_field": "type", "route.job": "plug", "route.default": "rest"}})
    ids = add_messages(r, "pr", 30, fields=lambda i: {"type": "job" if i % 2 else "other", "n": str(i),
                                                      **({"poison": f"bad {i}"} if i % 3 == 0 else {})})
    # the plugin sees only the "job" messages; of those, the poisoned ones are its dead letters
    poisoned = {ids[i] for i in range(30) if i % 2 and i % 3 == 0}
    fl.wait_for(lambda: r.xlen("pr:dlq") == len(poisoned) and pending_count(r, "pr", "pr-group") == 0,
                timeout=BIG_TIMEOUT, what="dead letters of the plugin route, nothing pending")
    dead = dead_letters(r, "pr")
    assert set(dead) == poisoned
    assert {f["dlq.reason"] for f in dead.values()} == {"ackall_dead"}
    routed = {lbl["route"]: v for lbl, v in fl.metrics().series("streamfleet_messages_routed_total", pool="a")}
    assert routed == {"job": 15, "default": 15}


def test_check_reports_a_failing_plugin_of_a_handler_section_at_its_line(tmp_path):
    so = build_plugin(tmp_path, "initfails", ACK + """
     static int init(const struct sf_host *h, const struct sf_param *p, size_t n, void **st, char *e, size_t el)
     { (void)h; (void)p; (void)n; (void)st; snprintf(e, el, "no database"); return -1; }
     const struct sf_plugin streamfleet_plugin = { .abi = STREAMFLEET_PLUGIN_ABI, .init = init, .handle = handle };""")
    cfg = write_ini(tmp_path / "t.ini", {"fleet": {"redis": "redis://127.0.0.1:1", "allow_root": "yes"},
                                         "handler:plug": {"handler": "plugin", "plugin": str(so)},
                                         "pool:a": {"stream": "s", "group": "g", "handler": "plug"}})
    line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1) if l.startswith("plugin ="))
    r = run_binary(["-t", "-c", str(cfg)], timeout=60, env=segv_kills())
    assert r.returncode == 1, r.stdout + r.stderr
    assert any(l.startswith(f"{cfg}:{line}: ") and "no database" in l for l in r.stderr.splitlines()), r.stderr
