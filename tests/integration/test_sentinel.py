"""Redis Sentinel (redis = redis-sentinel://...): the client asks the sentinels where the master
is, checks ROLE, and asks again when the master goes away. Against Debian's real redis-sentinel:
one master, one replica and three sentinels on free loopback ports, all stopped by pid."""
import json
import signal
import subprocess
import threading
import time

import pytest
import redis as redislib

from conftest import (SLOWNESS, TIMEOUT, RedisServer, free_port, run_binary, wait_until,
                      write_ini)
from reliability_helpers import (BIG_TIMEOUT, by_webhook_id, cpu_seconds, dlq_cli, http_pool,
                                 log_pool, metric, s, wait_metric, wait_promotion_and_first_ack)

SENTINEL_BIN = "/usr/bin/redis-sentinel"
MASTER = "m"


class Sentinel:
    """One redis-sentinel on 127.0.0.1:port watching MASTER, with its own writable config
    (sentinel rewrites it)."""

    def __init__(self, dir, master_port, password=None, master_password=None):
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.password = password
        lines = [f"port {self.port}", "bind 127.0.0.1", "daemonize no", "protected-mode no",
                 f"dir {dir}", f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2",
                 f"sentinel down-after-milliseconds {MASTER} 1000",
                 f"sentinel failover-timeout {MASTER} 3000"]
        if password:
            lines.append(f"requirepass {password}")
        if master_password:
            lines.append(f"sentinel auth-pass {MASTER} {master_password}")
        self.conf = dir / "sentinel.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = open(dir / "sentinel.log", "ab")
        self.proc = subprocess.Popen([SENTINEL_BIN, str(self.conf)], cwd=dir, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def client(self):
        return redislib.Redis(host="127.0.0.1", port=self.port, password=self.password,
                              socket_timeout=2, socket_connect_timeout=2, decode_responses=True)

    def master_addr(self):
        c = self.client()
        try:
            a = c.execute_command("SENTINEL", "get-master-addr-by-name", MASTER)
            return (a[0], int(a[1])) if a else None
        finally:
            c.close()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class SentinelSet:
    """A master, its replica and n sentinels. .url(master=..., auth=...) is our URL form."""

    def __init__(self, tmp_path, n=3, replica=True, password=None, master_password=None):
        self.master = RedisServer(tmp_path / "master", password=master_password).start()
        self.servers = [self.master]
        self.replica = None
        if replica:
            auth = ("--masterauth", master_password) if master_password else ()
            self.replica = RedisServer(tmp_path / "replica", password=master_password, extra_args=(
                "--replicaof", "127.0.0.1", str(self.master.port), *auth)).start()
            self.servers.append(self.replica)
            wait_until(lambda: self.replica.client().info("replication")["master_link_status"] == "up",
                       TIMEOUT, what="replica in sync")
        self.sentinels = [Sentinel(tmp_path / f"sentinel{i}", self.master.port, password, master_password)
                          for i in range(n)]

    def wait_ready(self):
        """Every sentinel answers for the master, knows the others and the replica (what a
        failover needs)."""
        def ready():
            for sn in self.sentinels:
                c = sn.client()
                try:
                    if len(self.sentinels) > 1 and \
                            len(c.execute_command("SENTINEL", "sentinels", MASTER)) < len(self.sentinels) - 1:
                        return False
                    if self.replica and not c.execute_command("SENTINEL", "replicas", MASTER):
                        return False
                except redislib.RedisError:
                    return False
                finally:
                    c.close()
            return True
        wait_until(ready, 60 * SLOWNESS, what="sentinels know each other and the replica")

    def url(self, master=MASTER, auth="", db=None):
        hosts = ",".join(f"127.0.0.1:{sn.port}" for sn in self.sentinels)
        return f"redis-sentinel://{auth}{hosts}/{master}" + (f"/{db}" if db is not None else "")

    def current_master(self):
        for sn in self.sentinels:
            try:
                a = sn.master_addr()
                if a:
                    return a
            except redislib.RedisError:
                pass
        return None

    def client_of_master(self):
        host, port = self.current_master()
        return redislib.Redis(host=host, port=port, socket_timeout=5, decode_responses=False)

    def cleanup(self):
        for sn in self.sentinels:
            sn.stop()
        for srv in self.servers:
            srv.cleanup()


@pytest.fixture
def sentinels(tmp_path):
    made = []

    def make(**kw):
        st = SentinelSet(tmp_path, **kw)
        made.append(st)
        return st

    yield make
    for st in made:
        st.cleanup()


def workers_cpu(fl):
    return sum(cpu_seconds(pid) for pid in fl.children())


def cli_config(tmp_path, url, extra=None, name="cli.ini"):
    fl = {"redis": url, "listen": f"127.0.0.1:{free_port()}"}
    fl.update(extra or {})
    return write_ini(tmp_path / name, {"fleet": fl, "pool:p": log_pool("src")})


# --------------------------------------------------------------------------------------------
# 1. basic
# --------------------------------------------------------------------------------------------

def test_fleet_through_sentinel_delivers_and_acks_every_message(sentinels, sink, fleet_factory):
    st = sentinels()
    st.wait_ready()
    r = st.master.client()
    fl = fleet_factory({"fleet": {"redis": st.url()},
                        "pool:h": http_pool(sink, "hooks", workers=2, inflight=16)})
    ids = [s(r.xadd("hooks", {"type": "t", "n": str(i)})) for i in range(200)]
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v == 200, timeout=BIG_TIMEOUT)
    wait_until(lambda: r.xpending("hooks", "hooks-group")["pending"] == 0, TIMEOUT, what="pending 0")
    assert set(by_webhook_id(sink.snapshot(), ok=True)) == set(ids)
    # the workers and the monitor are on the master, not on the replica
    names = [c.get("name") for c in r.client_list()]
    assert names.count("streamfleet-worker") == 2, names
    assert "streamfleet-master" in names, names
    status, body = fl.wait_healthy(timeout=TIMEOUT)
    assert body["redis"]["up"] is True, body


def test_the_url_credentials_are_the_data_masters(sentinels, sink, fleet_factory, tmp_path):
    st = sentinels(n=1, replica=False, master_password="data-secret")
    wait_until(st.current_master, TIMEOUT, what="sentinel answers")
    r = st.master.client()
    ids = [s(r.xadd("hooks", {"type": "t", "n": str(i)})) for i in range(20)]
    fl = fleet_factory({"fleet": {"redis": st.url(auth=":data-secret@", db=0)},
                        "pool:h": http_pool(sink, "hooks")})
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v == 20, timeout=BIG_TIMEOUT)
    assert set(by_webhook_id(sink.snapshot(), ok=True)) == set(ids)
    fl.wait_healthy(timeout=TIMEOUT)
    res = run_binary(["status", "-c", str(cli_config(tmp_path, st.url(auth=":data-secret@"))), "--json"])
    assert json.loads(res.stdout)["redis"]["up"] is True, res.stdout
    # a wrong data password: refused, and said so without the password
    res = run_binary(["status", "-c", str(cli_config(tmp_path, st.url(auth=":wrong-one@"), name="w.ini")),
                      "--json"])
    assert res.returncode != 0 and "wrong-one" not in res.stdout + res.stderr


# --------------------------------------------------------------------------------------------
# 2. failover under load
# --------------------------------------------------------------------------------------------

class Producer(threading.Thread):
    """XADDs total messages at rate/s to whatever the sentinels say the master is; on an error
    asks them again and retries the same message."""

    def __init__(self, st, stream, total, rate):
        super().__init__(daemon=True)
        self.st, self.stream, self.total, self.rate = st, stream, total, rate
        self.added = 0
        self.errors = 0
        self.stop = False

    def run(self):
        c = self.st.client_of_master()
        start = time.monotonic()
        i = 0
        while i < self.total and not self.stop:
            due = start + i / self.rate
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)
            n = min(20, self.total - i)
            try:
                p = c.pipeline(transaction=False)
                for k in range(i, i + n):
                    p.xadd(self.stream, {"type": "t", "n": str(k)})
                p.execute()
                i += n
                self.added = i
            except redislib.RedisError:
                self.errors += 1
                time.sleep(0.05)
                try:
                    c.close()
                    c = self.st.client_of_master()
                except (redislib.RedisError, TypeError):
                    pass


def test_failover_under_load_carries_on_against_the_promoted_replica(sentinels, sink, fleet_factory):
    st = sentinels()
    st.wait_ready()
    old = st.master
    fl = fleet_factory({"fleet": {"redis": st.url()},
                        "pool:h": http_pool(sink, "hooks", workers=2, batch=50, inflight=32,
                                            claim_idle="5s")})
    fl.wait_healthy(timeout=TIMEOUT)
    total = 20000
    prod = Producer(st, "hooks", total, 2000)
    prod.start()
    wait_until(lambda: prod.added >= total // 2, BIG_TIMEOUT, what="half the messages produced")
    old.kill(signal.SIGKILL)
    t_kill = time.monotonic()
    t_promoted, t_first_ack = wait_promotion_and_first_ack(st.replica, t_kill)
    print(f"\nkill -> promotion {t_promoted - t_kill:.2f} s; kill -> first ack on the new master "
          f"{t_first_ack - t_kill:.2f} s; promotion -> first ack {t_first_ack - t_promoted:.2f} s")
    assert t_first_ack - t_promoted <= 20 * SLOWNESS

    prod.join(BIG_TIMEOUT)
    assert not prod.is_alive() and prod.added == total, (prod.added, prod.errors)
    assert st.current_master() == ("127.0.0.1", st.replica.port)
    new = st.replica.client()

    def settled():
        delivered = set(by_webhook_id(sink.snapshot(), ok=True))
        dead = {s(f[b"dlq.id"]) for _, f in new.xrange("hooks:dlq")} if new.exists("hooks:dlq") else set()
        ids = {s(i) for i, _ in new.xrange("hooks")}
        missing = ids - delivered - dead
        # pending last: read before the deliveries it could be the 0 of entries not yet read
        if missing or new.xpending("hooks", "hooks-group")["pending"]:
            return False
        return (len(ids), len(delivered & ids), len(dead & ids))
    got = fl.wait_for(settled, BIG_TIMEOUT, what="every entry of the new master acked or dead-lettered")
    print(f"entries on the new master {got[0]}, delivered {got[1]}, dead-lettered {got[2]}; "
          f"produced {prod.added} (producer errors {prod.errors})")
    assert fl.health()[0] == 200
    names = [c.get("name") for c in new.client_list()]
    assert names.count("streamfleet-worker") == 2, names


def test_a_frozen_master_is_left_when_the_sentinels_announce_the_switch(sentinels, sink, fleet_factory):
    """SIGSTOP: the connection to the old master stays open and silent. +switch-master (not a
    disconnect, not a command's deadline: block 2 s + 5 s) moves the workers on."""
    st = sentinels()
    st.wait_ready()
    r = st.master.client()
    fl = fleet_factory({"fleet": {"redis": st.url()},
                        "pool:h": http_pool(sink, "hooks", workers=2, block="2s", claim_idle="5s")})
    before = [s(r.xadd("hooks", {"type": "t", "n": str(i)})) for i in range(100)]
    wait_metric(fl, "streamfleet_messages_acked_total", "h", lambda v: v == 100, timeout=BIG_TIMEOUT)
    wait_until(lambda: st.replica.client().xpending("hooks", "hooks-group")["pending"] == 0, TIMEOUT,
               what="the acks replicated")
    # a steady trickle into the replica, refused (READONLY) until it is the master: something
    # to ack from the moment of the promotion
    trickle_added = []

    def trickle():
        c = st.replica.client()
        deadline = time.monotonic() + 60 * SLOWNESS
        while len(trickle_added) < 300 and time.monotonic() < deadline:
            try:
                trickle_added.append(s(c.xadd("hooks", {"type": "t", "n": str(len(trickle_added))})))
                time.sleep(0.01)
            except redislib.RedisError:
                time.sleep(0.01)
    prod = threading.Thread(target=trickle, daemon=True)
    st.master.kill(signal.SIGSTOP)
    t_stop = time.monotonic()
    prod.start()
    t_promoted, t_first_ack = wait_promotion_and_first_ack(st.replica, t_stop)
    print(f"\nstop -> promotion {t_promoted - t_stop:.2f} s; promotion -> first ack on the new master "
          f"{t_first_ack - t_promoted:.2f} s")
    assert t_first_ack - t_promoted <= 3 * SLOWNESS, fl.log()[-5000:]
    prod.join(BIG_TIMEOUT)
    new = st.replica.client()
    after = {s(i) for i, _ in new.xrange("hooks")} - set(before)
    assert len(after) >= 300

    def settled():
        return after <= set(by_webhook_id(sink.snapshot(), ok=True)) and \
            new.xpending("hooks", "hooks-group")["pending"] == 0
    fl.wait_for(settled, BIG_TIMEOUT, what="the new entries delivered and acked")


# --------------------------------------------------------------------------------------------
# 3. bad input
# --------------------------------------------------------------------------------------------

def test_unknown_master_name_is_a_503_without_a_busy_loop_and_recovers_once_known(sentinels, fleet_factory):
    st = sentinels(n=1, replica=False)
    fl = fleet_factory({"fleet": {"redis": st.url(master="nosuch")},
                        "pool:p": log_pool("src", workers=2)}, wait_http=True)

    def unhealthy():
        status, body = fl.health()
        return body if status == 503 and "nosuch" in (body or {}).get("reason", "") else None
    body = fl.wait_for(unhealthy, what="/health 503 naming the unknown master")
    assert body["redis"]["up"] is False, body
    wait_until(lambda: len(fl.children()) == 2, TIMEOUT, what="2 workers")
    c0 = workers_cpu(fl)
    time.sleep(3)
    used = workers_cpu(fl) - c0
    print(f"\nCPU of 2 workers over 3 s asking for an unknown master: {used:.2f} s")
    assert used < 0.6, f"workers used {used:.2f} s of CPU in 3 s"
    assert metric(fl, "streamfleet_messages_acked_total", "p") == 0
    # once a sentinel knows the name, the fleet gets there by itself
    st.master.client().xadd("src", {"n": "1"})
    st.sentinels[0].client().execute_command("SENTINEL", "MONITOR", "nosuch", "127.0.0.1", st.master.port, 1)
    wait_metric(fl, "streamfleet_messages_acked_total", "p", lambda v: v == 1, timeout=BIG_TIMEOUT)
    fl.wait_healthy(timeout=TIMEOUT)


def test_wrong_sentinel_password_is_a_clear_error_and_the_right_one_works(sentinels, tmp_path,
                                                                          fleet_factory):
    st = sentinels(n=1, replica=False, password="sentinel-secret")
    wait_until(st.current_master, TIMEOUT, what="sentinel answers")
    r = st.master.client()
    r.xadd("src", {"n": "1"})
    wrong = tmp_path / "wrong.pass"
    wrong.write_text("not-it\n")
    right = tmp_path / "right.pass"
    right.write_text("sentinel-secret\n")
    fl = fleet_factory({"fleet": {"redis": st.url(), "sentinel_password_file": str(wrong)},
                        "pool:p": log_pool("src", workers=1)})

    def unhealthy():
        status, body = fl.health()
        return body if status == 503 and "sentinel" in (body or {}).get("reason", "") else None
    body = fl.wait_for(unhealthy, what="/health 503 naming the sentinel")
    assert "not-it" not in json.dumps(body)
    assert fl.alive()
    # the command-line tools say why, and exit non-zero
    res = run_binary(["status", "-c", str(cli_config(tmp_path, st.url(), {"sentinel_password_file": str(wrong)},
                                                      "wrong.ini")), "--json"])
    assert res.returncode != 0
    assert "not-it" not in res.stdout + res.stderr
    # with the right password the fleet gets there after a reload
    fl.config_path.write_text(fl.config_path.read_text().replace(str(wrong), str(right)))
    fl.signal(signal.SIGHUP)
    wait_metric(fl, "streamfleet_messages_acked_total", "p", lambda v: v == 1, timeout=BIG_TIMEOUT)
    fl.wait_healthy(timeout=TIMEOUT)


def test_a_replica_named_as_master_is_sent_nothing_and_the_fleet_recovers_when_fixed(sentinels,
                                                                                     fleet_factory):
    """ROLE: a sentinel whose answer is a replica (stale, or misconfigured as here) does not get
    the fleet writing to it, nor the monitor reading from it."""
    st = sentinels(n=1)
    wait_until(st.current_master, TIMEOUT, what="sentinel answers")
    sc = st.sentinels[0].client()
    sc.execute_command("SENTINEL", "REMOVE", MASTER)
    sc.execute_command("SENTINEL", "MONITOR", MASTER, "127.0.0.1", st.replica.port, 1)
    assert st.current_master() == ("127.0.0.1", st.replica.port)
    st.master.client().xadd("src", {"n": "1"})
    fl = fleet_factory({"fleet": {"redis": st.url()}, "pool:p": log_pool("src", workers=1)})

    def unhealthy():
        status, body = fl.health()
        return body if status == 503 and str(st.replica.port) in (body or {}).get("reason", "") else None
    fl.wait_for(unhealthy, what="/health 503 naming the replica")
    time.sleep(2)
    # the replica executed the replicated XADD and the sentinel's PINGs, nothing of the fleet's
    used = sorted(k for k in st.replica.client().info("commandstats")
                  if k.startswith(("cmdstat_xgroup", "cmdstat_xreadgroup", "cmdstat_xlen", "cmdstat_xinfo",
                                   "cmdstat_xpending", "cmdstat_xack")))
    assert used == [], used
    assert metric(fl, "streamfleet_messages_acked_total", "p") == 0
    # the sentinel told the truth again: the fleet gets there
    sc.execute_command("SENTINEL", "REMOVE", MASTER)
    sc.execute_command("SENTINEL", "MONITOR", MASTER, "127.0.0.1", st.master.port, 1)
    wait_metric(fl, "streamfleet_messages_acked_total", "p", lambda v: v == 1, timeout=BIG_TIMEOUT)
    fl.wait_healthy(timeout=TIMEOUT)


@pytest.mark.parametrize("url, what", [
    ("redis-sentinel:///m", "no sentinel"),
    ("redis-sentinel://127.0.0.1:26379", "missing master name"),
    ("redis-sentinel://127.0.0.1:26379/", "missing master name"),
    ("redis-sentinel://127.0.0.1:99999/m", "port must be"),
    ("redis-sentinel://127.0.0.1:1,,127.0.0.1:2/m", "missing host"),
    ("redis-sentinel://127.0.0.1:26379/m/x", "database must be"),
    ("rediss-sentinel://127.0.0.1:26379/m", "not supported"),
])
def test_malformed_sentinel_urls_are_config_errors_with_their_line(url, what, tmp_path):
    cfg = write_ini(tmp_path / "bad.ini", {"fleet": {"listen": "127.0.0.1:9", "redis": url},
                                           "pool:p": log_pool("src")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{cfg}:3:" in res.stderr and what in res.stderr, res.stderr


def test_sentinel_password_file_needs_a_sentinel_url(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    cfg = write_ini(tmp_path / "bad.ini", {"fleet": {"redis": "redis://127.0.0.1:6379/0",
                                                     "sentinel_password_file": str(pw)},
                                           "pool:p": log_pool("src")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode == 1
    assert f"{cfg}:3: sentinel_password_file needs redis = redis-sentinel://" in res.stderr, res.stderr


def test_a_good_sentinel_url_validates(tmp_path):
    cfg = write_ini(tmp_path / "good.ini", {
        "fleet": {"redis": "redis-sentinel://u:p%40ss@127.0.0.1:26379,[::1],sentinel-2.example:26380/mymaster/3"},
        "pool:p": log_pool("src")})
    res = run_binary(["-t", "-c", str(cfg)])
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------------------------
# 4. the command-line tools
# --------------------------------------------------------------------------------------------

def test_dlq_list_and_status_through_sentinel(sentinels, tmp_path):
    st = sentinels(n=3, replica=True)
    wait_until(st.current_master, TIMEOUT, what="sentinels answer")
    r = st.master.client()
    for i in range(5):
        r.xadd("src", {"n": str(i)})
    dead = s(r.xadd("src:dlq", {"payload": "x", "dlq.stream": "src", "dlq.id": "1-1",
                                "dlq.reason": "http_422", "dlq.attempts": "1", "dlq.error": "http 422",
                                "dlq.time": str(int(time.time() * 1000))}))
    # the first sentinel listed is down: the tools ask the next
    st.sentinels[0].stop()
    cfg = cli_config(tmp_path, st.url())
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert dead in res.stdout and "http_422" in res.stdout
    res = run_binary(["status", "-c", str(cfg), "--json"])
    doc = json.loads(res.stdout)
    assert doc["source"] == "redis" and doc["redis"]["up"] is True, doc
    assert doc["pools"][0]["stream_length"] == 5, doc
    # a master name no sentinel knows: non-zero, and says so
    res = dlq_cli(cli_config(tmp_path, st.url(master="nosuch"), name="nosuch.ini"), "list", "--pool", "p")
    assert res.returncode != 0
    assert "nosuch" in res.stderr, res.stderr
