"""Integration tests of our own Redis client (common/redis.c): TCP, unix socket and TLS
(rediss://) through the real binary against a real redis-server. Everything speaks TLS: the
command-line tools (`streamfleet dlq`, `streamfleet status`), the master's monitor (/health)
and the workers."""
import json
import os
import signal
import subprocess
import time

import pytest
import redis as redislib

from conftest import (TIMEOUT, RedisServer, _openssl, add_messages, free_port, proc_stat,
                      run_binary, wait_until, write_ini)
from reliability_helpers import (BIG_TIMEOUT, by_webhook_id, dlq_cli, http_pool, log_pool,
                                 metric, wait_metric, wait_pending)


class TlsRedis(RedisServer):
    """A redis-server that speaks only TLS on .port (the plain port is off)."""

    def __init__(self, dir, certs, cert=None, key=None, auth_clients="yes", port=None):
        port = port or free_port()
        self.certs = certs
        extra = ["--port", "0", "--tls-port", str(port),
                 "--tls-cert-file", str(cert or certs.server_cert),
                 "--tls-key-file", str(key or certs.server_key),
                 "--tls-ca-cert-file", str(certs.ca),
                 "--tls-auth-clients", auth_clients]
        super().__init__(dir, port=port, extra_args=extra)

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        return redislib.Redis(host="127.0.0.1", port=self.port, ssl=True, ssl_cert_reqs="none",
                              ssl_certfile=str(self.certs.client_cert),
                              ssl_keyfile=str(self.certs.client_key), decode_responses=False, **kw)


@pytest.fixture
def tls_redis(tmp_path, certs):
    servers = []

    def make(**kw):
        srv = TlsRedis(tmp_path / f"tls{len(servers)}", certs, **kw)
        servers.append(srv)
        return srv.start()

    yield make
    for srv in servers:
        srv.cleanup()


def tls_keys(certs, ca=None, client=True, **extra):
    keys = {"redis_tls_ca": str(ca or certs.ca)}
    if client:
        keys.update(redis_tls_cert=str(certs.client_cert), redis_tls_key=str(certs.client_key))
    keys.update(extra)
    return keys


def cli_config(tmp_path, redis_url, fleet_extra=None, name="cli.ini"):
    fl = {"redis": redis_url, "listen": f"127.0.0.1:{free_port()}"}
    fl.update(fleet_extra or {})
    return write_ini(tmp_path / name, {"fleet": fl, "pool:p": log_pool("src")})


def status_json(cfg):
    res = run_binary(["status", "-c", str(cfg), "--json"])
    return res, json.loads(res.stdout)


def dead_letter(client, dlq="src:dlq"):
    return client.xadd(dlq, {"payload": "x", "dlq.stream": "src", "dlq.id": "1-1",
                             "dlq.reason": "http_422", "dlq.attempts": "1",
                             "dlq.error": "http 422", "dlq.time": str(int(time.time() * 1000))}).decode()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# the command-line tools
# --------------------------------------------------------------------------------------------

def test_dlq_list_and_purge_over_tls_with_a_client_certificate(tls_redis, certs, tmp_path):
    srv = tls_redis(auth_clients="yes")
    r = srv.client()
    entry = dead_letter(r)
    cfg = cli_config(tmp_path, f"rediss://127.0.0.1:{srv.port}/0", tls_keys(certs))
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert entry in res.stdout and "http_422" in res.stdout
    res = dlq_cli(cfg, "purge", "--pool", "p", "--all")
    assert res.returncode == 0, res.stderr
    assert r.xlen("src:dlq") == 0


def test_status_reads_redis_over_tls_when_the_master_does_not_answer(tls_redis, certs, tmp_path):
    srv = tls_redis(auth_clients="optional")
    r = srv.client()
    add_messages(r, "src", 7)
    cfg = cli_config(tmp_path, f"rediss://127.0.0.1:{srv.port}/0", tls_keys(certs, client=False))
    res, doc = status_json(cfg)
    assert doc["source"] == "redis" and doc["redis"]["up"] is True, doc
    assert doc["pools"][0]["stream_length"] == 7, doc


def test_tls_verify_no_accepts_a_server_from_another_ca(tls_redis, certs, tmp_path):
    srv = tls_redis(cert=certs.rogue_server_cert, key=certs.rogue_server_key, auth_clients="optional")
    dead_letter(srv.client())
    cfg = cli_config(tmp_path, f"rediss://127.0.0.1:{srv.port}/0",
                     tls_keys(certs, client=False, redis_tls_verify="no"))
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert "1 dead letter" in res.stdout


def test_dlq_over_a_unix_socket_in_another_db(redis_factory, tmp_path):
    sock = tmp_path / "redis.sock"
    srv = redis_factory(extra_args=["--unixsocket", str(sock), "--unixsocketperm", "700"])
    entry = dead_letter(srv.client(db=3))
    cfg = cli_config(tmp_path, f"unix://{sock}?db=3")
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert entry in res.stdout and "1 dead letter" in res.stdout


def make_expired_client_cert(certs, tmp_path):
    """A client certificate of the right CA whose validity ended a moment after it began."""
    d = tmp_path / "expired"
    d.mkdir()
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "c.key", "-out", "c.csr", "-subj", "/CN=expired-client", cwd=d)
    (d / "c.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", "c.csr", "-CA", str(certs.ca), "-CAkey", str(certs.ca_key),
             "-CAcreateserial", "-out", "c.pem", "-days", "0", "-extfile", "c.ext", cwd=d)
    time.sleep(1.1)
    return d / "c.pem", d / "c.key"


# (server options, scheme, fleet keys) -> words the error must hold. Each case is one fault.
FAULTS = {
    "wrong_ca": (dict(auth_clients="optional"), "rediss",
                 lambda c, t: tls_keys(c, ca=c.other_ca, client=False),
                 ["certificate verify failed", "redis_tls_ca"]),
    "wrong_name": (dict(auth_clients="optional"), "rediss",
                   lambda c, t: tls_keys(c, client=False, redis_tls_server_name="db.example.org"),
                   ["hostname mismatch", "redis_tls_server_name"]),
    "missing_client_cert": (dict(auth_clients="yes"), "rediss",
                            lambda c, t: tls_keys(c, client=False),
                            ["certificate required", "redis_tls_cert"]),
    "expired_client_cert": (dict(auth_clients="yes"), "rediss",
                            lambda c, t: dict(zip(("redis_tls_cert", "redis_tls_key"),
                                                  map(str, make_expired_client_cert(c, t))),
                                              redis_tls_ca=str(c.ca)),
                            ["certificate expired"]),
    "plain_client_on_tls_port": (dict(auth_clients="optional"), "redis",
                                 lambda c, t: {}, ["rediss://"]),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_cli_names_the_tls_fault(fault, tls_redis, certs, tmp_path):
    server_kw, scheme, keys, words = FAULTS[fault]
    srv = tls_redis(**server_kw)
    cfg = cli_config(tmp_path, f"{scheme}://127.0.0.1:{srv.port}/0", keys(certs, tmp_path))
    t0 = time.monotonic()
    res = dlq_cli(cfg, "list", "--pool", "p", timeout=30)
    assert res.returncode != 0, res.stdout
    assert "cannot connect to redis" in res.stderr, res.stderr
    for w in words:
        assert w in res.stderr, (w, res.stderr)
    assert time.monotonic() - t0 < 15, "the tool gave up within its connect timeout"


def test_tls_client_on_a_plain_port_is_named(redis_server, certs, tmp_path):
    cfg = cli_config(tmp_path, f"rediss://127.0.0.1:{redis_server.port}/0",
                     tls_keys(certs, client=False))
    res = dlq_cli(cfg, "list", "--pool", "p", timeout=30)
    assert res.returncode != 0
    assert "tls" in res.stderr and "redis://" in res.stderr, res.stderr


# --------------------------------------------------------------------------------------------
# the config
# --------------------------------------------------------------------------------------------

def test_rediss_is_a_valid_config_for_a_fleet(tls_redis, certs, tmp_path):
    srv = tls_redis(auth_clients="optional")
    cfg = cli_config(tmp_path, f"rediss://127.0.0.1:{srv.port}/0", tls_keys(certs, client=False))
    res = run_binary(["-t", "-c", str(cfg)], timeout=30)
    assert res.returncode == 0, res
    assert "configuration OK" in res.stdout, res.stdout


def test_tls_key_mistakes_are_config_errors_with_their_line(certs, tmp_path):
    cfg = write_ini(tmp_path / "bad.ini", {
        "fleet": {"redis": "redis://127.0.0.1:6379/0", "redis_tls_ca": str(certs.ca),
                  "redis_tls_cert": str(certs.client_cert),
                  "redis_tls_verify": "maybe"},
        "pool:p": log_pool("src")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode == 1
    assert f"{cfg}:3: redis_tls_ca needs redis = rediss://" in res.stderr, res.stderr
    assert f"{cfg}:4: redis_tls_cert needs redis_tls_key" in res.stderr, res.stderr
    assert f"{cfg}:5:" in res.stderr, res.stderr


# --------------------------------------------------------------------------------------------
# the master's monitor
# --------------------------------------------------------------------------------------------

def redis_health(fl):
    status, body = fl.health()
    return status, (body or {}).get("redis", {}), (body or {}).get("reason", "")


def test_monitor_over_tls_reports_redis_up(tls_redis, certs, fleet_factory):
    srv = tls_redis(auth_clients="yes")
    fl = fleet_factory({"fleet": {"redis": f"rediss://127.0.0.1:{srv.port}/0", **tls_keys(certs)},
                        "pool:p": log_pool("src")})
    fl.wait_for(lambda: redis_health(fl)[1].get("up") is True, what="redis up over TLS")
    names = [c.get("name") for c in srv.client().client_list()]
    assert "streamfleet-master" in names, names


@pytest.mark.parametrize("fault", ["wrong_ca", "missing_client_cert", "plain_client_on_tls_port"])
def test_monitor_over_tls_says_why_in_health_and_recovers_when_fixed(fault, tls_redis, certs,
                                                                     fleet_factory, tmp_path):
    server_kw, scheme, keys, words = FAULTS[fault]
    srv = tls_redis(**server_kw)
    fleet_keys = keys(certs, tmp_path)
    if fault == "wrong_ca":
        # the client trusts the right CA; the server shows a certificate of another one
        srv.cleanup()
        srv = tls_redis(cert=certs.rogue_server_cert, key=certs.rogue_server_key,
                        port=srv.port, **server_kw)
        fleet_keys = tls_keys(certs, client=False)
        words = ["certificate verify failed"]
    fl = fleet_factory({"fleet": {"redis": f"{scheme}://127.0.0.1:{srv.port}/0", **fleet_keys},
                        "pool:p": log_pool("src")})
    fl.wait_for(lambda: redis_health(fl)[1].get("error"), what="a redis error in /health")
    status, red, reason = redis_health(fl)
    assert status == 503 and red["up"] is False
    for w in words:
        assert w in red["error"] and w in reason, (w, red, reason)
    # no busy loop: reconnects are spaced by the backoff (at most 5 s apart)
    c0 = cpu_seconds(fl.pid)
    time.sleep(3)
    assert cpu_seconds(fl.pid) - c0 < 1.0, "master CPU while redis is unusable"
    # fix the server side, and the monitor reconnects by itself
    port = srv.port
    srv.cleanup()
    if fault == "plain_client_on_tls_port":
        fixed = RedisServer(tmp_path / "plain-fixed", port=port).start()
    else:
        fixed = tls_redis(port=port, auth_clients="optional")
    try:
        fl.wait_for(lambda: redis_health(fl)[1].get("up") is True, timeout=TIMEOUT,
                    what="redis up once fixed")
    finally:
        fixed.cleanup()


def test_a_frozen_redis_times_out_the_monitor_without_stalling_the_master(redis_server, fleet):
    fl = fleet({"pool:p": log_pool("src")})
    fl.wait_for(lambda: redis_health(fl)[1].get("up") is True, what="redis up")
    redis_server.kill(signal.SIGSTOP)
    try:
        t_end = time.monotonic() + 6
        slowest = 0.0
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            status, _, _ = fl.http_get("/livez", timeout=5)
            slowest = max(slowest, time.monotonic() - t0)
            assert status == 200
            time.sleep(0.2)
        assert slowest < 1.0, f"/livez took {slowest:.2f}s while redis was frozen"
        fl.wait_for(lambda: redis_health(fl)[1].get("up") is False, what="redis down (frozen)")
        status, red, _ = redis_health(fl)
        assert status == 503 and red["error"], red
    finally:
        redis_server.kill(signal.SIGCONT)
    fl.wait_for(lambda: redis_health(fl)[1].get("up") is True, timeout=TIMEOUT,
                what="redis up after SIGCONT")


def test_acl_user_and_password_are_sent_by_the_cli_and_the_monitor(redis_factory, fleet_factory,
                                                                    tmp_path):
    srv = redis_factory(password="admin-pw-1")
    admin = srv.client()
    admin.execute_command("ACL", "SETUSER", "fleet", "on", ">Fleet-pw-9", "~*", "&*", "+@all")
    entry = dead_letter(admin)
    url = f"redis://fleet:Fleet-pw-9@127.0.0.1:{srv.port}/0"
    res = dlq_cli(cli_config(tmp_path, url), "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert entry in res.stdout and "Fleet-pw-9" not in res.stdout + res.stderr
    fl = fleet_factory({"fleet": {"redis": url}, "pool:p": log_pool("src")}, redis=url)
    fl.wait_for(lambda: redis_health(fl)[1].get("up") is True, what="redis up as user fleet")
    users = {c.get("name"): c.get("user") for c in admin.client_list()}
    assert users.get("streamfleet-master") == "fleet", users


def test_monitor_with_a_wrong_server_name_recovers_after_a_reload_that_fixes_it(
        tls_redis, certs, fleet_factory):
    srv = tls_redis(auth_clients="optional")
    fl = fleet_factory({"fleet": {"redis": f"rediss://127.0.0.1:{srv.port}/0",
                                  **tls_keys(certs, client=False,
                                             redis_tls_server_name="db.example.org")},
                        "pool:p": log_pool("src")})
    fl.wait_for(lambda: "hostname mismatch" in (redis_health(fl)[1].get("error") or ""),
                what="hostname mismatch in /health")
    text = fl.config_path.read_text().replace("db.example.org", "localhost")
    fl.config_path.write_text(text)
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: redis_health(fl)[1].get("up") is True, what="redis up after the reload")


# --------------------------------------------------------------------------------------------
# worker over TLS
# --------------------------------------------------------------------------------------------

def worker_errors(fl):
    """The texts of the workers' last errors, from /status.json."""
    status, _, body = fl.http_get("/status.json")
    assert status == 200, status
    return [e["error"] for p in json.loads(body)["pools"] for e in p["last_errors"]]


def workers_cpu(fl):
    return sum(cpu_seconds(pid) for pid in fl.children())


def test_fleet_over_tls_with_a_client_certificate_delivers_and_acks_every_message(
        tls_redis, certs, sink, fleet_factory):
    srv = tls_redis(auth_clients="yes")
    r = srv.client()
    fl = fleet_factory({"fleet": {"redis": f"rediss://127.0.0.1:{srv.port}/0", **tls_keys(certs)},
                        "pool:p": log_pool("src", workers=2, batch=50, handler="noop"),
                        "pool:h": http_pool(sink, "hooks", workers=1, inflight=16)})
    ids = add_messages(r, "src", 1000)
    hooks = add_messages(r, "hooks", 100, fields=lambda i: {"type": "t", "n": str(i)})
    wait_metric(fl, "streamfleet_messages_acked_total", "p", lambda v: v == 1000, timeout=BIG_TIMEOUT)
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v == 100, timeout=BIG_TIMEOUT)
    wait_pending(fl, r, "src", "src-group", 0)
    wait_pending(fl, r, "hooks", "hooks-group", 0)
    assert set(by_webhook_id(sink.snapshot(), ok=True)) == set(hooks)
    assert len(ids) == 1000 and not r.exists("src:dlq") and not r.exists("hooks:dlq")
    # the only port is TLS, and it wants our certificate: the workers are connected through it
    names = [c.get("name") for c in r.client_list()]
    assert names.count("streamfleet-worker") == 3, names
    assert fl.health()[0] == 200


def test_worker_with_a_wrong_ca_says_why_does_not_spin_and_recovers_after_a_reload(
        tls_redis, certs, fleet_factory):
    srv = tls_redis(auth_clients="optional")
    r = srv.client()
    fl = fleet_factory({"fleet": {"redis": f"rediss://127.0.0.1:{srv.port}/0",
                                  **tls_keys(certs, ca=certs.other_ca, client=False)},
                        "pool:p": log_pool("src", workers=2)})
    add_messages(r, "src", 20)

    def failing():
        errs = [e for e in worker_errors(fl) if "certificate verify failed" in e]
        return errs if len(errs) >= 2 else None
    errs = fl.wait_for(failing, what="both workers' tls error in /status.json")
    assert all("redis_tls_ca" in e for e in errs), errs
    status, body = fl.health()
    assert status == 503 and "certificate verify failed" in body["reason"], body
    assert metric(fl, "streamfleet_messages_acked_total", "p") == 0
    # no busy loop: the workers retry with backoff
    kids = fl.children()
    assert len(kids) == 2, kids
    c0 = workers_cpu(fl)
    time.sleep(3)
    used = workers_cpu(fl) - c0
    print(f"\nCPU of 2 workers over 3 s with a wrong CA: {used:.2f} s")
    assert used < 0.6, f"workers used {used:.2f} s of CPU in 3 s"
    # a reload that fixes the CA: the workers connect and deliver
    text = fl.config_path.read_text().replace(str(certs.other_ca), str(certs.ca))
    fl.config_path.write_text(text)
    fl.signal(signal.SIGHUP)
    wait_metric(fl, "streamfleet_messages_acked_total", "p", lambda v: v == 20, timeout=BIG_TIMEOUT)
    wait_pending(fl, r, "src", "src-group", 0)
    fl.wait_healthy(timeout=TIMEOUT)


def test_sigterm_drains_cleanly_over_tls(tls_redis, certs, sink, fleet_factory):
    srv = tls_redis(auth_clients="yes")
    r = srv.client()
    sink.rule(200, delay=0.5)
    fl = fleet_factory({"fleet": {"redis": f"rediss://127.0.0.1:{srv.port}/0", **tls_keys(certs)},
                        "pool:h": http_pool(sink, "hooks", workers=1, inflight=8)})
    ids = add_messages(r, "hooks", 40, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: metric(fl, "streamfleet_inflight", "h") > 0, what="deliveries in flight")
    fl.signal(signal.SIGTERM)
    code = fl.wait(timeout=30)
    assert code == 0, f"exit {code}\n{fl.log()[-3000:]}"
    # every message handed to the endpoint was acknowledged; the rest wait, pending nowhere
    # or in our list, for the next start
    ok = set(by_webhook_id(sink.snapshot(), ok=True))
    assert ok and ok <= set(ids)
    pend = r.xpending_range("hooks", "hooks-group", "-", "+", 100)
    pending_ids = {p["message_id"].decode() for p in pend}
    assert not (pending_ids & ok), "a delivered message was left unacknowledged"
