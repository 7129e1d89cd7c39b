"""A real Redis Cluster for the tests: 3 masters and 3 replicas of Debian's redis-server
(--cluster-enabled yes) on free loopback ports in the test's tmpdir, joined by
`redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, stopped by pid.
cluster-node-timeout is short (1500 ms), so that a killed master's replica is promoted in a
couple of seconds."""
import signal
import socket
import subprocess
import threading
import time

import pytest
import redis as redislib
from redis.cluster import RedisCluster

from conftest import SLOWNESS, TIMEOUT, RedisServer, free_port, wait_until
from reliability_helpers import wait_promotion_and_first_ack

REDIS_CLI = "/usr/bin/redis-cli"
NODE_TIMEOUT_MS = 1500


def _port_free(port):
    with socket.socket() as sk:
        sk.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sk.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def cluster_port():
    """A free port whose cluster bus port (+10000) is free too."""
    for _ in range(200):
        p = free_port()
        if p + 10000 <= 65535 and _port_free(p + 10000):
            return p
    raise RuntimeError("no free port pair for a cluster node")


def node_cert(certs, dir):
    """A certificate for 127.0.0.1 good for both ends of a connection, signed by certs.ca: on the
    cluster bus each node is a client of the others, and the bus always checks both sides
    (tls-auth-clients does not apply to it; redis 7.0.15 refuses a serverAuth-only one)."""
    dir.mkdir(parents=True, exist_ok=True)
    (dir / "node.ext").write_text("basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n"
                                  "extendedKeyUsage=serverAuth,clientAuth\n")
    for args in (["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                  "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1"],
                 ["x509", "-req", "-in", "node.csr", "-CA", str(certs.ca), "-CAkey", str(certs.ca_key),
                  "-CAcreateserial", "-out", "node.pem", "-days", "3", "-extfile", "node.ext"]):
        subprocess.run(["openssl", *args], cwd=dir, check=True, capture_output=True)
    return dir / "node.pem", dir / "node.key"


class TlsNode(RedisServer):
    """A cluster node that speaks only TLS, to clients and on the cluster bus."""

    def __init__(self, dir, certs, port, password, extra_args, cert, key):
        self.certs = certs
        extra = ["--port", "0", "--tls-port", str(port), "--tls-cluster", "yes", "--tls-replication", "yes",
                 "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                 "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no"] + list(extra_args)
        super().__init__(dir, port=port, password=password, extra_args=extra)

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        return redislib.Redis(host="127.0.0.1", port=self.port, password=self.password, ssl=True,
                              ssl_ca_certs=str(self.certs.ca), decode_responses=False, **kw)


class Cluster:
    def __init__(self, tmp_path, masters=3, replicas=1, password=None, certs=None):
        self.password = password
        self.certs = certs
        self.nodes = []
        extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                 "--cluster-config-file", "nodes.conf"]
        if password:
            extra += ["--masterauth", password]
        if certs:
            cert, key = node_cert(certs, tmp_path / "certs")
        for i in range(masters * (1 + replicas)):
            port = cluster_port()
            if certs:
                node = TlsNode(tmp_path / f"node{i}", certs, port, password, extra, cert, key)
            else:
                node = RedisServer(tmp_path / f"node{i}", port=port, password=password, extra_args=extra)
            self.nodes.append(node.start())
        res = self.cli("--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                       "--cluster-replicas", replicas, "--cluster-yes", timeout=60 * SLOWNESS)
        assert res.returncode == 0, res.stdout + res.stderr
        self.wait_ok()

    def cli(self, *args, timeout=None):
        cmd = [REDIS_CLI]
        if self.certs:
            cmd += ["--tls", "--cacert", str(self.certs.ca)]
        if self.password:
            cmd += ["-a", self.password, "--no-auth-warning"]
        res = subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True,
                             timeout=timeout or 120 * SLOWNESS)
        return res

    def alive(self):
        return [n for n in self.nodes if n.running()]

    def wait_ok(self, timeout=None):
        """cluster_state:ok on every running node, and every node agreeing on who serves all
        16384 slots."""
        def ok():
            for n in self.alive():
                try:
                    c = n.client(socket_timeout=2)
                    info = c.execute_command("CLUSTER", "INFO")
                    if isinstance(info, bytes):
                        info = info.decode()
                    if "cluster_state:ok" not in info:
                        return False
                    slots = c.execute_command("CLUSTER", "SLOTS")
                    if sum(int(r[1]) - int(r[0]) + 1 for r in slots) != 16384:
                        return False
                except redislib.RedisError:
                    return False
            return True
        wait_until(ok, timeout or 60 * SLOWNESS, what="cluster_state:ok on every node")

    def seeds(self, nodes=None):
        return ",".join(f"127.0.0.1:{n.port}" for n in (nodes or self.nodes))

    def url(self, auth="", nodes=None):
        scheme = "rediss-cluster" if self.certs else "redis-cluster"
        return f"{scheme}://{auth}{self.seeds(nodes)}/"

    def client(self):
        n = self.alive()[0]
        tls = dict(ssl=True, ssl_ca_certs=str(self.certs.ca)) if self.certs else {}
        return RedisCluster(host="127.0.0.1", port=n.port, password=self.password,
                            decode_responses=False, socket_timeout=10, **tls)

    def node_of_port(self, port):
        return next(n for n in self.nodes if n.port == port)

    def master_of(self, key):
        """The RedisServer serving key now."""
        n = self.alive()[0].client(socket_timeout=2)
        slot = n.execute_command("CLUSTER", "KEYSLOT", key)
        for r in n.execute_command("CLUSTER", "SLOTS"):
            if int(r[0]) <= slot <= int(r[1]):
                return self.node_of_port(int(r[2][1]))
        raise AssertionError(f"no master for slot {slot}")

    def node_id(self, node):
        return node.client(socket_timeout=2).execute_command("CLUSTER", "MYID").decode()

    def replica_of(self, master):
        mid = self.node_id(master)
        for n in self.alive():
            if n is master:
                continue
            for line in n.client(socket_timeout=2).execute_command("CLUSTER", "NODES").decode().splitlines():
                f = line.split()
                if "myself" in f[2] and f[3] == mid:
                    return n
        raise AssertionError("no replica of that master")

    def masters(self):
        out = []
        for n in self.alive():
            role = n.client(socket_timeout=2).execute_command("ROLE")[0]
            if role == b"master":
                out.append(n)
        return out

    def cleanup(self):
        for n in self.nodes:
            n.cleanup()


@pytest.fixture
def cluster(tmp_path):
    made = []

    def make(**kw):
        c = Cluster(tmp_path / f"cluster{len(made)}", **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.cleanup()


class ClusterProducer(threading.Thread):
    """A thread that adds one entry at a time, at about rate/s, until stopped (or `total` are
    added), through whatever node serves it: on an error (MOVED mid-reshard, a dead master) it
    asks the cluster again and retries the same entry. A subclass's add(client, n) adds entry
    n (counted from 0) and notes it."""

    def __init__(self, cl, rate, total=None):
        super().__init__(daemon=True)
        self.cl, self.rate, self.total = cl, rate, total
        self.stop = threading.Event()

    def add(self, client, n):
        raise NotImplementedError

    def run(self):
        c = self.cl.client()
        n = 0
        while not self.stop.is_set() and (self.total is None or n < self.total):
            try:
                self.add(c, n)
                n += 1
                time.sleep(1.0 / self.rate)
            except (redislib.RedisError, IndexError, KeyError):
                time.sleep(0.05)
                try:
                    c = self.cl.client()
                except (redislib.RedisError, IndexError, KeyError):
                    pass


def wait_seconds(fn, timeout, what):
    t0 = time.monotonic()
    wait_until(fn, timeout, what=what)
    return time.monotonic() - t0


__all__ = ["Cluster", "cluster", "cluster_port", "NODE_TIMEOUT_MS", "TIMEOUT", "wait_seconds"]


def fail_over_under_load(master, replica, prod):
    """Start the producer thread prod (with a stop event), let it run 2 s, make sure the replica
    has the master's writes (WAIT), SIGKILL the master, wait for the replica's promotion and its
    first ack from the fleet, let prod run 2 s more and stop it. Returns (seconds from the kill to
    the promotion, seconds from the promotion to the first ack)."""
    prod.start()
    time.sleep(2)
    master.client().execute_command("WAIT", 1, 2000)
    master.kill(signal.SIGKILL)
    t_kill = time.monotonic()
    t_promoted, t_first_ack = wait_promotion_and_first_ack(replica, t_kill)
    time.sleep(2)
    prod.stop.set()
    prod.join(TIMEOUT)
    return t_promoted - t_kill, t_first_ack - t_promoted


def reshard_under_load(cl, src, dst, prod, slots=1000):
    """Start the producer thread prod (with a stop event), let it run 1 s, move `slots` slots
    from master src to master dst with `redis-cli --cluster reshard` (it takes the first slots
    of src's range), wait until the cluster is ok, let prod run 2 s more and stop it. Returns
    (the monotonic time the reshard started, the seconds it took)."""
    prod.start()
    time.sleep(1)
    t0 = time.monotonic()
    res = cl.cli("--cluster", "reshard", f"127.0.0.1:{src.port}", "--cluster-from", cl.node_id(src),
                 "--cluster-to", cl.node_id(dst), "--cluster-slots", slots, "--cluster-yes")
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    cl.wait_ok()
    time.sleep(2)
    prod.stop.set()
    prod.join(TIMEOUT)
    return t0, took
