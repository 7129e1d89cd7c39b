"""Network namespaces for the "several hosts" tests (test_twohosts.py).

A Hosts object builds one namespace that holds Redis and one namespace per host, each host joined
to the Redis namespace by its own veth pair (a /30 of 10.231.X.0/24, X from the test's pid, so
parallel runs do not even share addresses; the interfaces and addresses exist only inside the
test's own namespaces). The root namespace is never touched: the test reaches a namespace by
opening its sockets from a short-lived thread that joined it (setns(2) moves only the calling
thread, and a socket stays in the namespace it was created in), so redis-py clients, HTTP
requests and listening sockets work from the test process without any address in the root
namespace.

Processes are started under `ip netns exec NS ...`, which execs (the pid of the Popen is the
program's own), and a fleet gets its host name from `unshare --uts` (consumer names are
HOST:POOL:SLOT from gethostname()). Everything is removed by Hosts.cleanup(): the processes
started through it (by pid), then the namespaces (which deletes their veths)."""
import ctypes
import http.client
import itertools
import os
import shutil
import signal
import socket
import subprocess
import threading

import redis as redislib

from conftest import Fleet, RedisServer, require_binary, sanitizer_env, stop_fleet, wait_until

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_seq = itertools.count()


def in_netns(ns, fn, *args, **kw):
    """fn(*args, **kw) run by a thread that joined network namespace ns; returns its result (or
    raises its exception). Sockets it creates belong to ns for their whole life."""
    out = {}

    def run():
        try:
            fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    e = ctypes.get_errno()
                    raise OSError(e, f"setns({ns}): {os.strerror(e)}")
            finally:
                os.close(fd)
            out["value"] = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            out["error"] = e
    t = threading.Thread(target=run, name=f"netns:{ns}", daemon=True)
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def ns_listen(ns, host="0.0.0.0", port=0, backlog=128):
    """A listening TCP socket in namespace ns (port 0: any free port)."""
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(backlog)
        return s
    return in_netns(ns, make)


def ns_connect(ns, addr, timeout=2):
    """A TCP connection to addr opened inside namespace ns."""
    return in_netns(ns, socket.create_connection, addr, timeout)


def ns_redis_client(ns, host, port, **kw):
    """A redis-py client whose connections are opened inside namespace ns."""
    class NsConnection(redislib.Connection):
        def _connect(self):
            return in_netns(ns, redislib.Connection._connect, self)
    kw.setdefault("socket_timeout", 10)
    pool = redislib.ConnectionPool(connection_class=NsConnection, host=host, port=port, **kw)
    return redislib.Redis(connection_pool=pool)


class _NsHTTPConnection(http.client.HTTPConnection):
    netns = None

    def connect(self):
        self.sock = in_netns(self.netns, socket.create_connection, (self.host, self.port),
                             self.timeout)


def _run(*cmd):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")


class NsRedis(RedisServer):
    """A RedisServer run inside namespace ns, listening on the given addresses of that
    namespace (the first one is what .client() uses)."""

    def __init__(self, dir, ns, addrs, **kw):
        super().__init__(dir, **kw)
        self.ns = ns
        self.addrs = list(addrs)
        i = self.args.index("--bind")
        self.args[i + 1:i + 2] = self.addrs
        self.args = ["ip", "netns", "exec", ns] + self.args

    def url_at(self, addr):
        """The URL of this server at one of its addresses."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{addr}:{self.port}/0"

    def client(self, **kw):
        return ns_redis_client(self.ns, self.addrs[0], self.port, password=self.password,
                               decode_responses=False, **kw)


class NsFleet(Fleet):
    """A Fleet whose master runs in namespace ns under its own host name (unshare --uts);
    /metrics and /health are read from inside ns."""

    def __init__(self, config_path, workdir, port, ns, hostname, env=None):
        super().__init__(config_path, workdir, port, env=env)
        self.ns = ns
        self.hostname = hostname

    def start(self, wait_http=True):
        b = require_binary()
        out = open(self.stdout_path, "ab")
        err = open(self.stderr_path, "ab")
        try:
            # ip and unshare exec, sh execs after hostname: the Popen pid is the master's
            cmd = ["ip", "netns", "exec", self.ns, "unshare", "--uts", "sh", "-c",
                   'hostname "$0" && exec "$@"', self.hostname,
                   str(b), "-c", str(self.config_path)]
            self.proc = subprocess.Popen(cmd, cwd=self.workdir, env=sanitizer_env(self.env),
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        finally:
            out.close()
            err.close()
        if wait_http:
            self.wait_for(lambda: self.http_get("/metrics", timeout=2)[0] == 200,
                          what=f"/metrics of {self.hostname}")
        return self

    def http_connection(self, timeout):
        c = _NsHTTPConnection("127.0.0.1", self.port, timeout=timeout)
        c.netns = self.ns
        return c

    def kill_host(self):
        """The host dies at once: the master is stopped (so it cannot respawn anything nor
        pass a PDEATHSIG that would let its workers drain), every worker is SIGKILLed, then
        the master. Returns the pids killed; they are gone (reaped or reparented) on return."""
        os.kill(self.pid, signal.SIGSTOP)
        pids = self.children()
        for p in pids:
            os.kill(p, signal.SIGKILL)
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(30)
        wait_until(lambda: not self.surviving_children(), timeout=30,
                   what=f"workers {pids} of {self.hostname} gone")
        return [self.pid] + pids


class Hosts:
    """A Redis namespace and one namespace per host name, joined by veth pairs.

    .redis_ns, .ns[host], .host_addr[host] (the host's address), .redis_addr[host] (the
    address of the Redis namespace on that host's link). cleanup() stops what was started and
    deletes the namespaces; it is safe to call more than once and after a partial setup."""

    def __init__(self, hosts):
        tag = f"sfh22-{os.getpid()}-{next(_seq)}"
        net = os.getpid() % 250
        self.redis_ns = f"{tag}-redis"
        self.ns, self.host_addr, self.redis_addr = {}, {}, {}
        self.created = []
        self.fleets = []
        self.servers = []
        try:
            self._add_ns(self.redis_ns)
            for k, host in enumerate(hosts):
                ns = f"{tag}-{host}"
                self._add_ns(ns)
                r_addr, h_addr = f"10.231.{net}.{4 * k + 1}", f"10.231.{net}.{4 * k + 2}"
                link = f"v{k}"
                _run("ip", "-n", self.redis_ns, "link", "add", link, "type", "veth",
                     "peer", "name", "eth0", "netns", ns)
                _run("ip", "-n", self.redis_ns, "addr", "add", f"{r_addr}/30", "dev", link)
                _run("ip", "-n", self.redis_ns, "link", "set", link, "up")
                _run("ip", "-n", ns, "addr", "add", f"{h_addr}/30", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
                self.ns[host], self.host_addr[host], self.redis_addr[host] = ns, h_addr, r_addr
        except BaseException:
            self.cleanup()
            raise

    def _add_ns(self, ns):
        _run("ip", "netns", "add", ns)
        self.created.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")

    def start_redis(self, dir, **kw):
        srv = NsRedis(dir, self.redis_ns, list(self.redis_addr.values()), **kw)
        self.servers.append(srv)
        return srv.start()

    def fleet(self, host, config_path, workdir, port, env=None, start=True):
        f = NsFleet(config_path, workdir, port, self.ns[host], host, env=env)
        self.fleets.append(f)
        return f.start() if start else f

    def cleanup(self):
        """Stop the fleets (SIGTERM, then SIGKILL of the master and its workers), the Redis
        servers, then delete the namespaces. Returns a list of problems seen (a master that
        needed SIGKILL, workers that outlived their master)."""
        problems = []
        for f in self.fleets:
            problems += stop_fleet(f, f.hostname)
        self.fleets = []
        for srv in self.servers:
            srv.cleanup()
        self.servers = []
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.created = []
        return problems


def netns_available():
    """True when this process may create network namespaces (root, with ip and unshare)."""
    return (os.geteuid() == 0 and shutil.which("ip") is not None
            and shutil.which("unshare") is not None
            and subprocess.run(["ip", "netns", "list"], capture_output=True).returncode == 0)
