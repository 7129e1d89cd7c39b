"""Hardening of the master: a reload whose listener cannot start, symlinks planted by the
service user, STREAMFLEET_REDIS with a password across reloads, fair admission to the endpoint,
a second instance on the same port, the Bearer scheme, the scoreboard's slot budget, fork
failures and supplementary groups.

A real redis-server and the real binary; one behaviour per test. Tests that need root (the
privilege drop, useradd) are skipped otherwise."""
import grp
import os
import pwd
import resource
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import (SLOWNESS, add_messages, excerpt, free_port, parse_metrics, require_binary,
                      run_binary, sanitizer_env, wait_until, write_ini)
from supervisor_helpers import (all_read_and_acked, consumers_of, live_children, nobody_ids,
                                pool, rewrite_config, send_signal, wait_children)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def root_dir():
    """A folder of root's, mode 0755, on a path every user can traverse (pytest's tmp_path is
    root-only, so a master that dropped to nobody could not read its config there)."""
    d = Path(tempfile.mkdtemp(prefix="sf-h2-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def metrics_with(fl, headers=None):
    status, _, body = fl.http_get("/metrics", timeout=5, headers=headers)
    assert status == 200, f"/metrics answered {status}: {body[:300]!r}"
    return parse_metrics(body.decode())


def reloads(m, result):
    return m.value("streamfleet_reloads_total", result=result)


def config_readable_by_nobody(fl, cfg):
    """Move the fleet's config into cfg (root:nogroup 0640) so that a master running as nobody
    can read it again on SIGHUP."""
    _, gid = nobody_ids()
    if fl.config_path != cfg:
        shutil.copy(fl.config_path, cfg)
        fl.config_path = cfg
    os.chown(cfg, 0, gid)
    cfg.chmod(0o640)


def get_from(port, path, source, timeout, headers=None):
    """GET path over a connection from source address; (status, seconds)."""
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(source, 0))
    try:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    return status, time.monotonic() - t0


# --------------------------------------------------------------------------------------------
# 1. a reload whose new listener cannot start
# --------------------------------------------------------------------------------------------

@needs_root
def test_reload_to_an_empty_token_file_keeps_master_workers_and_the_old_listener(
        redis_server, fleet, root_dir):
    """The old token file is root's (read at start, before the drop); the new one is empty.
    The master, now nobody, can start neither listener: it must keep the one it has."""
    old_token = root_dir / "old.token"
    old_token.write_text("old-token-0123456789\n")
    old_token.chmod(0o600)
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup", "listen_token_file": str(old_token)},
                "pool:a": pool("ra", workers=2)}, start=False)
    config_readable_by_nobody(fl, root_dir / "streamfleet.ini")
    fl.start()
    kids = wait_children(fl, 2)
    auth = {"Authorization": "Bearer old-token-0123456789"}
    before = metrics_with(fl, auth)

    empty = root_dir / "empty.token"
    empty.write_text("")
    empty.chmod(0o644)
    rewrite_config(fl, lambda c: c["fleet"].update(listen_token_file=str(empty)))
    config_readable_by_nobody(fl, fl.config_path)
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: reloads(metrics_with(fl, auth), "failed") == reloads(before, "failed") + 1,
                what="the reload counted as failed")
    assert fl.alive()
    assert live_children(fl.pid) == kids, "the workers stay"
    assert reloads(metrics_with(fl, auth), "ok") == reloads(before, "ok")
    assert fl.http_get("/metrics")[0] == 401, "the old listener keeps its old token"
    assert fl.http_get("/livez")[0] == 200


def test_reload_to_a_port_taken_by_another_socket_fails_and_keeps_the_old_listener(
        redis_server, fleet):
    fl = fleet({"pool:a": pool("rb", workers=2)})
    kids = wait_children(fl, 2)
    before = fl.metrics()
    squatter = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(8)
    taken = squatter.getsockname()[1]
    try:
        rewrite_config(fl, lambda c: c["fleet"].update(listen=f"127.0.0.1:{taken}"))
        send_signal(fl, signal.SIGHUP)
        fl.wait_for(lambda: reloads(fl.metrics(), "failed") == reloads(before, "failed") + 1,
                    what="the reload counted as failed")
        assert reloads(fl.metrics(), "ok") == reloads(before, "ok")
        assert fl.http_get("/livez")[0] == 200, "the old port still serves"
        assert live_children(fl.pid) == kids
    finally:
        squatter.close()


# --------------------------------------------------------------------------------------------
# 2. symlinks planted in folders the service user owns
# --------------------------------------------------------------------------------------------

def snapshot(path):
    st = path.lstat()
    return path.read_bytes(), st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def nobody_folder_and_victim(root_dir, name):
    """A folder the service user owns (where it could plant links) and a root-owned file
    beside it that a followed link would harm. Returns the folder, the victim and the
    victim's snapshot."""
    uid, gid = nobody_ids()
    folder = root_dir / name
    folder.mkdir()
    os.chown(folder, uid, gid)
    victim = root_dir / "victim"
    victim.write_text("root's precious file\n")
    victim.chmod(0o600)
    return folder, victim, snapshot(victim)


def plant(link, target):
    """A symlink planted by the service user."""
    uid, gid = nobody_ids()
    link.symlink_to(target)
    os.lchown(link, uid, gid)


@needs_root
def test_log_file_that_is_a_symlink_to_a_root_file_is_neither_written_nor_handed_over(
        redis_server, fleet, root_dir):
    logs, victim, before = nobody_folder_and_victim(root_dir, "logs")
    link = logs / "streamfleet.log"
    plant(link, victim)
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup", "log_file": str(link)},
                "pool:a": pool("sl")}, wait_http=False)
    try:
        code = fl.wait(15 * SLOWNESS)
    except subprocess.TimeoutExpired:
        code = None
    assert snapshot(victim) == before, "the victim file was written to or handed over"
    assert code not in (None, 0), "the start should fail on a symlinked log file"
    assert str(link) in fl.log(), fl.log()


@needs_root
def test_pidfile_temporary_name_planted_as_a_symlink_does_not_touch_its_target(
        redis_server, fleet, root_dir):
    """The pidfile is written whole under PIDFILE.PID.tmp and renamed over: a symlink planted
    at that name (for every pid likely to come next) must not be followed."""
    run, victim, before = nobody_folder_and_victim(root_dir, "run")
    pidfile = run / "streamfleet.pid"
    last = int(Path("/proc/sys/kernel/ns_last_pid").read_text())
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    for k in range(1, 3000):
        plant(run / f"streamfleet.pid.{(last + k) % pid_max}.tmp", victim)
    fl = fleet({"fleet": {"user": "nobody", "group": "nogroup", "pidfile": str(pidfile)},
                "pool:a": pool("sp")}, wait_http=False)
    planted = {(last + k) % pid_max for k in range(1, 3000)}
    assert fl.pid in planted, f"pid {fl.pid} was not among those planted: the test proves nothing"
    wait_until(lambda: not fl.alive() or (pidfile.exists() and fl.http_get("/livez")[0] == 200),
               what="the start's outcome")
    assert snapshot(victim) == before, "the victim file was truncated or written"
    if fl.alive():
        assert not pidfile.is_symlink() and pidfile.read_text() == f"{fl.pid}\n"
    else:
        assert fl.proc.returncode != 0


# --------------------------------------------------------------------------------------------
# 3. STREAMFLEET_REDIS with a password, across reloads
# --------------------------------------------------------------------------------------------

def test_reload_with_a_password_in_streamfleet_redis_keeps_the_password(redis_factory, fleet):
    secret = "s3cret-Pw-4242"
    srv = redis_factory(password=secret)
    r = srv.client()
    url = f"redis://:{secret}@127.0.0.1:{srv.port}/0"
    fl = fleet({"fleet": {"redis": f"redis://127.0.0.1:{free_port()}/0"},   # overridden
                "pool:a": pool("pw", workers=1)}, env={"STREAMFLEET_REDIS": url})
    wait_children(fl, 1)
    before = fl.metrics()
    rewrite_config(fl, lambda c: c["pool:a"].update(workers="2"))
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: reloads(fl.metrics(), "ok") == reloads(before, "ok") + 1,
                what="the reload counted as ok")
    assert reloads(fl.metrics(), "failed") == reloads(before, "failed")
    add_messages(r, "pw", 40)
    fl.wait_for(lambda: all_read_and_acked(r, "pw", 40), what="40 messages acked after the reload")
    fl.wait_for(lambda: consumers_of(r, "pw", "a") == [0, 1], what="two workers consuming")
    kids = wait_children(fl, 2)
    for pid in [fl.pid, *kids]:
        env = Path(f"/proc/{pid}/environ").read_bytes()
        assert secret.encode() not in env, f"the password is in /proc/{pid}/environ"


# --------------------------------------------------------------------------------------------
# 4. the endpoint: fair admission, one instance per port, the Bearer scheme, a loud warning
# --------------------------------------------------------------------------------------------

def test_livez_and_health_answer_within_2_s_while_four_addresses_hold_64_idle_connections_each(
        redis_server, fleet):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2000:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(4096, hard), hard))
    fl = fleet({"pool:a": pool("fa")})
    fl.wait_healthy()
    socks = []
    try:
        for src in range(1, 5):
            for _ in range(64):
                socks.append(socket.create_connection(("127.0.0.1", fl.port), timeout=5,
                                                      source_address=(f"127.0.0.{src}", 0)))
        time.sleep(1)                   # let the master accept them all
        livez = get_from(fl.port, "/livez", "127.0.0.5", timeout=2)
        health = get_from(fl.port, "/health", "127.0.0.5", timeout=2)
    finally:
        for s in socks:
            s.close()
    print(f"livez {livez}, health {health}")
    assert livez[0] == 200 and livez[1] < 2.0, livez
    assert health[0] == 200 and health[1] < 2.0, health
    assert fl.alive()


def test_second_instance_on_the_same_listen_address_fails_and_the_first_keeps_serving(
        redis_server, fleet):
    first = fleet({"pool:a": pool("si")})
    first.wait_healthy()
    second = fleet({"fleet": {"listen": f"127.0.0.1:{first.port}"}, "pool:a": pool("si")},
                   wait_http=False)
    try:
        code = second.wait(20 * SLOWNESS)
    except subprocess.TimeoutExpired:
        code = None
    assert code == 1, f"second instance: exit {code}\n{excerpt(second.log(), 10)}"
    for _ in range(20):
        assert first.http_get("/livez")[0] == 200
    assert first.alive()


def test_bearer_scheme_is_case_insensitive_and_a_wrong_token_is_401(redis_server, fleet, tmp_path):
    token = tmp_path / "token"
    token.write_text("t0ken-abcdef\n")
    token.chmod(0o600)
    fl = fleet({"fleet": {"listen_token_file": str(token)}, "pool:a": pool("bc")})
    for scheme in ("Bearer", "bearer", "BEARER", "bEaReR"):
        assert fl.http_get("/metrics", headers={"Authorization": f"{scheme} t0ken-abcdef"})[0] == 200, scheme
    for wrong in ("bearer t0ken-abcdeF", "BEARER nope", "Basic t0ken-abcdef", "bearer"):
        assert fl.http_get("/metrics", headers={"Authorization": wrong})[0] == 401, wrong


def test_listen_on_a_non_loopback_address_without_token_warns_at_start_and_on_each_reload(
        redis_server, fleet):
    """Only a log line can say it (the test may read the log for this one)."""
    port = free_port()
    fl = fleet({"fleet": {"listen": f"0.0.0.0:{port}"}, "pool:a": pool("nl")})
    warned = lambda: [l for l in fl.log().splitlines()   # noqa: E731
                      if " warn " in l and "listen_token_file" in l]
    assert len(warned()) == 1, excerpt(fl.log(), 10)
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: len(warned()) == 2, what="the warning again on reload")


# --------------------------------------------------------------------------------------------
# 5. a failed fork is retried with a growing delay
# --------------------------------------------------------------------------------------------

def no_leak_check_env():
    """LeakSanitizer stops the world in a thread of its own at exit, which RLIMIT_NPROC forbids:
    it would report a fatal error instead of a leak. Every other sanitizer check stays on."""
    env = sanitizer_env()
    env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
    return env


@needs_root
def test_failing_fork_is_retried_with_a_growing_delay_not_every_second(redis_server, fleet,
                                                                        service_user):
    """RLIMIT_NPROC binds the master once it runs as a user of its own: with a limit of 2
    processes, the first worker starts and every fork() for the second fails with EAGAIN.
    How often it was tried shows only in the log (one line per attempt), which this test
    counts; the worker that does start shows the fleet goes on."""
    user, _ = service_user
    fl = fleet({"fleet": {"user": user}, "pool:a": pool("fk", workers=2)}, start=False)
    limit = lambda: resource.setrlimit(resource.RLIMIT_NPROC, (2, 2))   # noqa: E731
    with open(fl.stdout_path, "ab") as out, open(fl.stderr_path, "ab") as err:
        fl.proc = subprocess.Popen([str(require_binary()), "-c", str(fl.config_path)], cwd=fl.workdir,
                                   env=no_leak_check_env(), stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL, preexec_fn=limit)
    fl.wait_for(lambda: fl.http_get("/livez", timeout=2)[0] == 200, what="the endpoint")
    fork_lines = lambda: [l for l in fl.log().splitlines() if " warn " in l and "fork" in l]  # noqa: E731
    fl.wait_for(fork_lines, what="the first failed fork")
    t0 = time.monotonic()
    time.sleep(9)
    failures = fork_lines()
    elapsed = time.monotonic() - t0
    print(f"failed fork attempts in {elapsed:.1f} s: {len(failures)}")
    assert len(failures) <= 5, "\n".join(failures)    # at 0, 1, 3, 7 s: not one a second
    assert len(live_children(fl.pid)) == 1, "the first worker runs"
    assert fl.alive()


# --------------------------------------------------------------------------------------------
# 6. the scoreboard's slots
# --------------------------------------------------------------------------------------------

def test_config_with_more_workers_than_scoreboard_slots_is_rejected_with_file_line(tmp_path):
    sections = {"fleet": {"redis": "redis://127.0.0.1:6379/0"}}
    for i in range(5):                  # 5 x 256 = 1280 > 1024 slots
        sections[f"pool:p{i}"] = pool(f"s{i}", workers=256)
    path = write_ini(tmp_path / "big.ini", sections)
    r = run_binary(["-t", "-c", str(path)])
    assert r.returncode != 0, r.stdout
    lines = path.read_text().splitlines()
    header = lines.index("[pool:p4]")
    workers_line = next(n for n in range(header, len(lines)) if lines[n].startswith("workers")) + 1
    assert f"{path}:{workers_line}:" in r.stderr, r.stderr


def test_reload_needing_more_slots_than_are_free_is_refused_and_the_old_workers_stay(
        redis_server, fleet):
    """513 workers hold 513 of the 1024 slots; a reload changing every pool would start 513
    new ones beside them while the old drain: it cannot, so it must not start at all."""
    fl = fleet({"pool:a": pool("za", workers=256, handler="noop", block="5s"),
                "pool:b": pool("zb", workers=256, handler="noop", block="5s"),
                "pool:c": pool("zc", workers=1, handler="noop", block="5s")})
    kids = wait_children(fl, 513, timeout=120 * SLOWNESS)
    before = fl.metrics()
    rewrite_config(fl, lambda c: [c[f"pool:{p}"].update(batch="11") for p in "abc"])
    send_signal(fl, signal.SIGHUP)
    fl.wait_for(lambda: reloads(fl.metrics(), "failed") == reloads(before, "failed") + 1,
                what="the reload counted as failed")
    assert reloads(fl.metrics(), "ok") == reloads(before, "ok")
    time.sleep(1)
    assert live_children(fl.pid) == kids, "the old workers neither drained nor replaced"
    r = redis_server.client()
    add_messages(r, "zc", 10)
    fl.wait_for(lambda: all_read_and_acked(r, "zc", 10), what="the old generation still works")


# --------------------------------------------------------------------------------------------
# 7. supplementary groups of the service user
# --------------------------------------------------------------------------------------------

@pytest.fixture
def service_user():
    """A system user sfh2user (primary group nogroup) that is also in group sfh2supp."""
    user, group = "sfh2user", "sfh2supp"
    subprocess.run(["userdel", user], capture_output=True)
    subprocess.run(["groupdel", group], capture_output=True)
    subprocess.run(["groupadd", "--system", group], check=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--gid", "nogroup", "--groups", group, user], check=True)
    try:
        yield user, grp.getgrnam(group).gr_gid
    finally:
        subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


@needs_root
def test_workers_keep_the_service_users_supplementary_groups(redis_server, fleet, service_user):
    user, supp = service_user
    fl = fleet({"fleet": {"user": user}, "pool:a": pool("sg", workers=1)})
    kid = wait_children(fl, 1)[0]
    uid = pwd.getpwnam(user).pw_uid
    for pid in (fl.pid, kid):
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
        groups = [l for l in status if l.startswith("Groups:")][0].split()[1:]
        uids = [l for l in status if l.startswith("Uid:")][0].split()[1:]
        assert str(supp) in groups, f"pid {pid}: groups {groups}"
        assert "0" not in groups, f"pid {pid} kept root's groups: {groups}"
        assert uids == [str(uid)] * 4
