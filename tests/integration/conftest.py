"""Fixtures for streamfleet's integration tests: real redis-server, real HTTP sink, real binary.

Everything binds 127.0.0.1 on a free port, lives in a pytest temporary folder, and is stopped
by the fixture that started it (by pid; never by name). Waiting is done by polling with a
deadline (wait_until / .wait_for), never by fixed sleeps.

Run with /usr/bin/python3 -m pytest tests/integration (Debian's python3-pytest, python3-redis).
"""
import http.client
import http.server
import itertools
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis as redislib

REPO = Path(__file__).resolve().parents[2]
HOST = socket.gethostname()

# A noisy 2-core CI machine running a sanitizer build is slow: every deadline is generous and
# can be stretched further with STREAMFLEET_TEST_SLOWNESS=2 (a multiplier).
SLOWNESS = float(os.environ.get("STREAMFLEET_TEST_SLOWNESS", "1"))
TIMEOUT = 30.0 * SLOWNESS

SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer")


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WaitTimeout(AssertionError):
    pass


class AbortWait(AssertionError):
    """Raised by a wait_until predicate to stop waiting at once (the awaited thing can no
    longer happen, e.g. the process died)."""


def wait_until(predicate, timeout=None, interval=0.05, what=None):
    """Poll predicate() until it returns a truthy value, which is returned. Exceptions raised
    by the predicate count as "not yet", except AbortWait and NameError (UnboundLocalError:
    a bug in the predicate), which are raised at once. On timeout raise WaitTimeout (an
    AssertionError) naming what was awaited, the last value and the last exception."""
    timeout = TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    last, last_exc = None, None
    while True:
        try:
            last = predicate()
            last_exc = None
            if last:
                return last
        except (AbortWait, NameError):  # NameError (UnboundLocalError): a bug, not "not yet"
            raise
        except Exception as e:  # noqa: BLE001 - any failure means "not yet"
            last_exc = e
        if time.monotonic() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {name}; "
                              f"last value={last!r}; last exception={last_exc!r}")
        time.sleep(interval)


def proc_stat(pid):
    """(state, ppid, starttime) of a process from /proc/PID/stat, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    rest = data.rpartition(")")[2].split()
    # rest[0] is field 3 (state), rest[1] field 4 (ppid), rest[19] field 22 (starttime)
    return rest[0], int(rest[1]), int(rest[19])


def process_alive(pid, starttime=None):
    """True when pid exists, is not a zombie, and (if given) started at starttime."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[2] == starttime


def children_of(ppid, include_zombies=False):
    """Pids whose parent is ppid, from /proc/*/stat."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        st = proc_stat(int(d))
        if st and st[1] == ppid and (include_zombies or st[0] not in ("Z", "X")):
            out.append(int(d))
    return sorted(out)


def socket_inodes(pid):
    """Socket inodes an open fd of pid refers to: {fd: inode}."""
    out = {}
    fd_dir = f"/proc/{pid}/fd"
    try:
        fds = os.listdir(fd_dir)
    except (FileNotFoundError, PermissionError):
        return out
    for fd in fds:
        try:
            target = os.readlink(f"{fd_dir}/{fd}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", target)
        if m:
            out[int(fd)] = int(m.group(1))
    return out


def tcp_inodes(port=None, listening=True):
    """Inodes of TCP sockets (optionally only on local port), IPv4 and IPv6: those in LISTEN
    state, or with listening=False all the others (connections)."""
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(name).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            parts = line.split()
            local, state, inode = parts[1], parts[3], int(parts[9])
            if (state == "0A") != listening:  # 0A: TCP_LISTEN
                continue
            if port is not None and int(local.rsplit(":", 1)[1], 16) != port:
                continue
            inodes.add(inode)
    return inodes


def listening_tcp_inodes(port=None):
    """Inodes of TCP sockets in LISTEN state (optionally only on port), IPv4 and IPv6."""
    return tcp_inodes(port, listening=True)


def record_arrivals(sink):
    """Make sink also keep each request the moment it has been read, before any delay of its
    answer (sink.requests has a request only once it was answered). Returns that list."""
    arrivals = []
    decide = sink._decide

    def decide_and_record(req):
        arrivals.append(req)
        return decide(req)
    sink._decide = decide_and_record
    return arrivals


def sanitizer_reports(text):
    """The sanitizer report lines in text (empty list when clean)."""
    return [line for line in text.splitlines() if any(m in line for m in SANITIZER_MARKERS)]


def excerpt(text, lines=60):
    tail = text.splitlines()[-lines:]
    return "\n".join(tail)


# --------------------------------------------------------------------------------------------
# redis-server
# --------------------------------------------------------------------------------------------

REDIS_BIN = os.environ.get("STREAMFLEET_REDIS_SERVER", "/usr/bin/redis-server")


class RedisServer:
    """A private redis-server on 127.0.0.1:port with its data in dir.

    .url, .port, .client(), .stop() (clean SIGTERM), .start() (same port, same dir, same data),
    .kill(sig) (signal it; for SIGKILL also reap it), .pid."""

    def __init__(self, dir, port=None, appendonly=True, password=None, extra_args=()):
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.args = [REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--daemonize", "no", "--dir", str(self.dir), "--save", "",
                     "--appendonly", "yes" if appendonly else "no",
                     "--appendfsync", "everysec", "--protected-mode", "no",
                     "--maxmemory-policy", "noeviction"]
        if password:
            self.args += ["--requirepass", password]
        self.args += list(extra_args)
        self.proc = None
        self._log = None

    @property
    def url(self):
        if self.password:
            return f"redis://:{self.password}@127.0.0.1:{self.port}/0"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        return redislib.Redis(host="127.0.0.1", port=self.port, password=self.password,
                              decode_responses=False, **kw)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=None):
        assert not self.running(), "redis-server already running"
        self._log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(self.args, cwd=self.dir, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def pong():
            if self.proc.poll() is not None:
                raise AbortWait(f"redis-server exited with {self.proc.returncode}:\n"
                                + excerpt(self.log()))
            c = self.client(socket_timeout=1, socket_connect_timeout=1)
            try:
                return c.ping()
            finally:
                c.close()

        try:
            wait_until(pong, timeout, what=f"redis-server PING on port {self.port}")
        except AssertionError:
            if self.proc.poll() is not None:
                raise
            self.kill(signal.SIGKILL)
            raise
        return self

    def stop(self, timeout=None):
        """Clean shutdown (SIGTERM: redis flushes the AOF and exits). Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close_log()
        return self.proc.returncode

    def kill(self, sig=signal.SIGKILL):
        """Send sig to redis-server. SIGKILL (and SIGTERM) are followed by reaping it; SIGSTOP
        and SIGCONT return at once."""
        if not self.running():
            return
        self.proc.send_signal(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
            self.proc.wait(TIMEOUT)
            self._close_log()

    def restart(self):
        self.stop()
        return self.start()

    def log(self):
        try:
            return (self.dir / "redis.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _close_log(self):
        if self._log:
            self._log.close()
            self._log = None

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            # a stopped (SIGSTOP) server would not die of SIGTERM
            try:
                self.proc.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.stop(timeout=10)
        self._close_log()


@pytest.fixture
def redis_factory(tmp_path):
    """Start more redis-servers (or one with options): redis_factory(password=..., ...)."""
    servers = []
    n = itertools.count()

    def make(start=True, **kw):
        srv = RedisServer(tmp_path / f"redis{next(n)}", **kw)
        servers.append(srv)
        return srv.start() if start else srv

    yield make
    for srv in servers:
        srv.cleanup()


@pytest.fixture
def redis_server(redis_factory):
    """A running redis-server (AOF everysec) on a free port, stopped at teardown."""
    return redis_factory()


# --------------------------------------------------------------------------------------------
# HTTP sink
# --------------------------------------------------------------------------------------------

@dataclass
class SinkRequest:
    method: str
    path: str
    headers: dict          # lower-cased names; a repeated header keeps its last value
    body: bytes
    time: float            # time.monotonic() when the request was fully read
    conn_id: int           # one per TCP connection: equal ids mean keep-alive reuse
    peer_port: int
    status: int = 0        # what the sink answered
    header_list: list = field(default_factory=list)   # [(name, value)] as sent
    peer_cert: dict = None  # TLS client certificate, when one was presented


@dataclass
class Rule:
    status: int
    path: str = None           # exact path, or a prefix when it ends with '*'
    body_contains: bytes = None
    method: str = None
    retry_after: str = None
    delay: float = None
    times: int = None          # apply to the first N matching requests only
    hits: int = 0

    def matches(self, method, path, body):
        if self.times is not None and self.hits >= self.times:
            return False
        if self.method and method != self.method:
            return False
        if self.path is not None:
            if self.path.endswith("*"):
                if not path.startswith(self.path[:-1]):
                    return False
            elif path != self.path:
                return False
        if self.body_contains is not None and self.body_contains not in body:
            return False
        return True


class _SinkHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "streamfleet-test-sink"
    sink = None  # set on the per-sink subclass

    def setup(self):
        super().setup()
        self.conn_id = self.sink._conn_opened(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            self.sink._conn_closed(self.connection)

    def log_message(self, fmt, *args):  # quiet
        pass

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _handle(self):
        body = self._read_body()
        peer_cert = None
        if isinstance(self.connection, ssl.SSLSocket):
            peer_cert = self.connection.getpeercert() or None
        req = SinkRequest(method=self.command, path=self.path,
                          headers={k.lower(): v for k, v in self.headers.items()},
                          header_list=list(self.headers.items()), body=body,
                          time=time.monotonic(), conn_id=self.conn_id,
                          peer_port=self.client_address[1], peer_cert=peer_cert)
        self.sink._enter()
        try:
            status, headers, delay = self.sink._decide(req)
            if delay:
                self.sink._stopping.wait(delay)
            req.status = status
            self.sink._record(req)
            payload = b"" if self.command == "HEAD" else (f"{status}\n").encode()
            self.send_response(status)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(payload)))
            if not self.sink.keep_alive:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        finally:
            self.sink._leave()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


class _SinkServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False
    request_queue_size = 128

    def __init__(self, addr, handler, sink):
        self.sink = sink
        super().__init__(addr, handler)

    def finish_request(self, request, client_address):
        # TLS handshake here, in the connection's own thread, so a client that never finishes
        # its handshake cannot stall the accept loop.
        ctx = self.sink.ssl_context
        if ctx is None:
            return super().finish_request(request, client_address)
        try:
            request.settimeout(10)
            tls = ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError) as e:
            self.sink._tls_failed(client_address, e)
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass


class Sink:
    """A real HTTP/1.1 (keep-alive) server on 127.0.0.1 that records every request.

    Behaviour, changeable at any time from the test:
      .status = 200             default answer
      .rule(status, path=..., body_contains=..., method=..., retry_after=..., delay=..., times=...)
                                 first matching rule wins ("/x*" is a path prefix)
      .fail_fraction = 0.1      answer that fraction of requests (not matched by a rule) with 503
      .delay = 0.1              seconds before answering each request
      .retry_after = "1"        Retry-After on every non-2xx answer without its own
      .keep_alive = False       answer with Connection: close
      .refuse() / .resume()     close the listening socket (connections refused) / reopen it on
                                 the same port
    Records: .requests (list of SinkRequest), .max_concurrent, .tls_errors, .connections
    (number of TCP connections accepted)."""

    def __init__(self, certfile=None, keyfile=None, cafile=None, require_client_cert=False,
                 port=None, seed=1234):
        self.port = port or free_port()
        self.ssl_context = None
        if certfile:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            if cafile:
                ctx.load_verify_locations(cafile)
            if require_client_cert:
                ctx.verify_mode = ssl.CERT_REQUIRED
            elif cafile:
                ctx.verify_mode = ssl.CERT_OPTIONAL
            self.ssl_context = ctx
        self.scheme = "https" if certfile else "http"
        self.status = 200
        self.fail_fraction = 0.0
        self.delay = 0.0
        self.retry_after = None
        self.keep_alive = True
        self.rules = []
        self.requests = []
        self.tls_errors = []
        self.connections = 0
        self.concurrent = 0
        self.max_concurrent = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._open_socks = set()
        self._conn_ids = itertools.count(1)
        handler = type("SinkHandler", (_SinkHandler,), {"sink": self})
        self._handler = handler
        self._server = None
        self._thread = None
        self.resume()

    # ---- lifecycle
    @property
    def url(self):
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def listening(self):
        return self._server is not None

    def resume(self):
        """(Re)open the listening socket on the same port."""
        if self._server is not None:
            return
        deadline = time.monotonic() + 10
        while True:
            try:
                self._server = _SinkServer(("127.0.0.1", self.port), self._handler, self)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        name=f"sink:{self.port}", daemon=True)
        self._thread.start()

    def refuse(self, drop_connections=True):
        """Close the listening socket: new connections are refused. With drop_connections,
        established keep-alive connections are shut down too (an endpoint that went away)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(5)
            self._server = None
        if drop_connections:
            with self._lock:
                socks = list(self._open_socks)
            for s in socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stopping.set()
        self.refuse(drop_connections=True)

    # ---- behaviour
    def rule(self, status, path=None, body_contains=None, method=None, retry_after=None,
             delay=None, times=None):
        if isinstance(body_contains, str):
            body_contains = body_contains.encode()
        r = Rule(status=status, path=path, body_contains=body_contains, method=method,
                 retry_after=retry_after, delay=delay, times=times)
        with self._lock:
            self.rules.append(r)
        return r

    def clear_rules(self):
        with self._lock:
            self.rules.clear()

    def _decide(self, req):
        with self._lock:
            for r in self.rules:
                if r.matches(req.method, req.path, req.body):
                    r.hits += 1
                    status = r.status
                    retry_after = r.retry_after if r.retry_after is not None else None
                    delay = r.delay if r.delay is not None else self.delay
                    break
            else:
                retry_after = None
                delay = self.delay
                if self.fail_fraction and self._random.random() < self.fail_fraction:
                    status = 503
                else:
                    status = self.status
            if retry_after is None and not 200 <= status < 300:
                retry_after = self.retry_after
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        return status, headers, delay

    # ---- records
    def _conn_opened(self, sock):
        with self._lock:
            self._open_socks.add(sock)
            self.connections += 1
            return next(self._conn_ids)

    def _conn_closed(self, sock):
        with self._lock:
            self._open_socks.discard(sock)

    def _enter(self):
        with self._lock:
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)

    def _leave(self):
        with self._lock:
            self.concurrent -= 1

    def _record(self, req):
        with self._cond:
            self.requests.append(req)
            self._cond.notify_all()

    def _tls_failed(self, addr, exc):
        with self._cond:
            self.tls_errors.append((addr, exc))
            self._cond.notify_all()

    def snapshot(self):
        with self._lock:
            return list(self.requests)

    def reset(self):
        with self._lock:
            self.requests.clear()
            self.tls_errors.clear()
            self.max_concurrent = self.concurrent
            self.connections = 0

    def wait_for(self, predicate, timeout=None, what=None):
        """Wait until predicate(list_of_requests) is truthy; returns its value."""
        return wait_until(lambda: predicate(self.snapshot()), timeout, what=what)

    def wait_count(self, n, timeout=None, status=None):
        """Wait until at least n requests (optionally only those answered with status)."""
        def enough(reqs):
            got = [r for r in reqs if status is None or r.status == status]
            return got if len(got) >= n else None
        return self.wait_for(enough, timeout, what=f"{n} requests at the sink")


@pytest.fixture
def sink_factory():
    """Start sinks with options: sink_factory(certfile=..., keyfile=..., cafile=...,
    require_client_cert=True)."""
    sinks = []

    def make(**kw):
        s = Sink(**kw)
        sinks.append(s)
        return s

    yield make
    for s in sinks:
        s.close()


@pytest.fixture
def sink(sink_factory):
    """A plain-HTTP sink answering 200, stopped at teardown."""
    return sink_factory()


# --------------------------------------------------------------------------------------------
# certificates (openssl CLI)
# --------------------------------------------------------------------------------------------

@dataclass
class Certs:
    dir: Path
    ca: Path            # CA certificate
    ca_key: Path
    server_cert: Path   # CN/SAN 127.0.0.1 and localhost, signed by ca
    server_key: Path
    client_cert: Path   # clientAuth, signed by ca
    client_key: Path
    other_ca: Path      # an unrelated CA
    rogue_server_cert: Path  # SAN 127.0.0.1, signed by other_ca (ca does not sign it)
    rogue_server_key: Path


def _openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{r.stderr}")


def make_certs(dir):
    """Create a CA, a server certificate for 127.0.0.1, a client certificate, and a server
    certificate from an unrelated CA, in dir. Returns Certs."""
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other_ca"):
        _openssl("req", "-x509", *key, "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                 "-days", "3", "-subj", f"/CN=streamfleet test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)
    (d / "server.ext").write_text("basicConstraints=CA:FALSE\n"
                                  "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                  "extendedKeyUsage=serverAuth\n")
    (d / "client.ext").write_text("basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    for name, ca, ext in (("server", "ca", "server.ext"), ("client", "ca", "client.ext"),
                          ("rogue_server", "other_ca", "server.ext")):
        _openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={'127.0.0.1' if 'server' in name else 'streamfleet-client'}",
                 cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "3", "-extfile", ext, cwd=d)
    for k in d.glob("*.key"):
        k.chmod(0o600)
    return Certs(dir=d, ca=d / "ca.pem", ca_key=d / "ca.key",
                 server_cert=d / "server.pem", server_key=d / "server.key",
                 client_cert=d / "client.pem", client_key=d / "client.key",
                 other_ca=d / "other_ca.pem",
                 rogue_server_cert=d / "rogue_server.pem", rogue_server_key=d / "rogue_server.key")


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    """One set of test certificates per session."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl CLI not installed")
    return make_certs(tmp_path_factory.mktemp("certs"))


# --------------------------------------------------------------------------------------------
# the streamfleet binary
# --------------------------------------------------------------------------------------------

def streamfleet_bin():
    p = Path(os.environ.get("STREAMFLEET_BIN", "build/san/streamfleet"))
    return p if p.is_absolute() else REPO / p


def require_binary():
    b = streamfleet_bin()
    if not (b.is_file() and os.access(b, os.X_OK)):
        pytest.fail(f"streamfleet binary not built: {b} (run `make SAN=1` or set STREAMFLEET_BIN)")
    return b


# Where the running test's sanitizer reports go (set by the autouse fixture sanitizer_logs).
# ASan and UBSan write a report to log_path's PREFIX.PID instead of stderr: a report is found
# even when the program logs to a log_file, a child's stderr is lost, or a test reads stderr.
_sanitizer_prefix = None


def sanitizer_env(extra=None):
    env = dict(os.environ)
    env.pop("STREAMFLEET_REDIS", None)
    log = f":log_path={_sanitizer_prefix}" if _sanitizer_prefix else ""
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0" + log
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1" + log
    if extra:
        env.update(extra)
    return env


def sanitizer_log_reports():
    """The sanitizer reports written for the running test so far: [(path, text)]."""
    if not _sanitizer_prefix:
        return []
    d = Path(_sanitizer_prefix).parent
    return [(p, p.read_text(errors="replace"))
            for p in sorted(d.glob(Path(_sanitizer_prefix).name + ".*"))]


def _format_sanitizer_logs(found):
    return "\n".join(f"sanitizer report {p}:\n{excerpt(text, 80)}" for p, text in found)


@pytest.fixture(autouse=True)
def sanitizer_logs():
    """Point every streamfleet this test starts at a folder of its own (report.PID files), and
    fail the test when any report is there at the end (after the fleets it started have
    stopped). The folder is in /tmp and writable by all, unlike pytest's tmp_path (0700 under
    root's): processes that dropped privileges to nobody must be able to write their report."""
    global _sanitizer_prefix
    d = Path(tempfile.mkdtemp(prefix="streamfleet-san-"))
    d.chmod(0o1777)
    _sanitizer_prefix = str(d / "report")
    try:
        yield d
    finally:
        found = sanitizer_log_reports()
        _sanitizer_prefix = None
        shutil.rmtree(d, ignore_errors=True)
    if found:
        pytest.fail(_format_sanitizer_logs(found), pytrace=False)


def run_binary(args, timeout=None, env=None, cwd=REPO):
    """Run streamfleet with args to completion (for -t, -V, -h). Fails the test on a
    sanitizer report. Returns CompletedProcess (text)."""
    b = require_binary()
    r = subprocess.run([str(b), *args], cwd=cwd, env=sanitizer_env(env), capture_output=True,
                       text=True, errors="replace", timeout=TIMEOUT if timeout is None else timeout,
                       stdin=subprocess.DEVNULL)
    reports = sanitizer_reports(r.stderr + r.stdout)
    assert not reports, f"sanitizer report from streamfleet {args}:\n{r.stderr}"
    found = sanitizer_log_reports()
    for p, _ in found:
        p.unlink()  # reported here: not again by sanitizer_logs
    assert not found, f"streamfleet {args}:\n{_format_sanitizer_logs(found)}"
    return r


def write_ini(path, sections):
    """Write {section: {key: value}} as INI. A list value repeats the key (header = ...)."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        for k, v in keys.items():
            for item in (v if isinstance(v, (list, tuple)) else [v]):
                if isinstance(item, bool):
                    item = "yes" if item else "no"
                lines.append(f"{k} = {item}")
        lines.append("")
    Path(path).write_text("\n".join(lines))
    os.chmod(path, 0o600)
    return path


_METRIC_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')


def _unescape_label(v):
    return v.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_metrics(text):
    """Prometheus text format -> Metrics {(name, frozenset(labels.items())): float}."""
    out = Metrics()
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            raise ValueError(f"unparsable metrics line: {line!r}")
        name, labels_text, value = m.group(1), m.group(3) or "", m.group(4)
        labels = {}
        pos = 0
        while pos < len(labels_text):
            lm = _LABEL_RE.match(labels_text, pos)
            if not lm or lm.end() == pos:
                raise ValueError(f"unparsable labels in metrics line: {line!r}")
            labels[lm.group(1)] = _unescape_label(lm.group(2))
            pos = lm.end()
        out[(name, frozenset(labels.items()))] = float(value)
    return out


class Metrics(dict):
    """{(name, frozenset(labels.items())): value} with lookups by name and labels."""

    def value(self, name, **labels):
        """The value of the series with exactly these labels, or None."""
        return self.get((name, frozenset((k, str(v)) for k, v in labels.items())))

    def series(self, name, **labels):
        """[(labels_dict, value)] of every series of name whose labels include these."""
        want = {k: str(v) for k, v in labels.items()}
        return [(dict(lbl), v) for (n, lbl), v in self.items()
                if n == name and want.items() <= dict(lbl).items()]

    def sum(self, name, **labels):
        return sum(v for _, v in self.series(name, **labels))

    def total(self, name, **labels):
        """Sum over every series of name whose labels include these (so extra labels, e.g. a
        restart reason, are added up); None when there is no such series at all."""
        found = self.series(name, **labels)
        return sum(v for _, v in found) if found else None


class Fleet:
    """A running `streamfleet -c FILE` with stdout/stderr captured to files."""

    def __init__(self, config_path, workdir, port, env=None, args=()):
        self.config_path = Path(config_path)
        self.workdir = Path(workdir)
        self.port = port
        self.stdout_path = self.workdir / "stdout.log"
        self.stderr_path = self.workdir / "stderr.log"
        self.env = env
        self.args = list(args)
        self.proc = None
        self.seen_children = {}   # pid -> starttime of every child ever observed
        self.needed_sigkill = False

    # ---- process
    @property
    def pid(self):
        return self.proc.pid

    def start(self, wait_http=True):
        b = require_binary()
        out = open(self.stdout_path, "ab")  # O_APPEND: children write their lines atomically
        err = open(self.stderr_path, "ab")
        try:
            self.proc = subprocess.Popen([str(b), "-c", str(self.config_path), *self.args],
                                         cwd=self.workdir, env=sanitizer_env(self.env),
                                         stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        finally:
            out.close()
            err.close()
        if wait_http:
            def http_up():
                if self.proc.poll() is not None:
                    raise AbortWait("streamfleet exited with "
                                    f"{self.proc.returncode}:\n{excerpt(self.log())}")
                return self.http_get("/metrics", timeout=2)[0]
            try:
                wait_until(http_up, what=f"streamfleet HTTP endpoint on port {self.port}")
            except WaitTimeout as e:
                raise AssertionError(f"{e}\nstreamfleet log:\n{excerpt(self.log())}") from None
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait(self, timeout=None):
        """Wait for the master to exit; returns its exit code (negative: killed by signal)."""
        return self.proc.wait(TIMEOUT if timeout is None else timeout)

    def stop(self, timeout=15.0):
        """SIGTERM, wait up to timeout, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.children()  # remember who must be gone afterwards
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.needed_sigkill = True
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def children(self, include_zombies=False):
        """Pids of the master's child processes (from /proc/*/stat)."""
        if self.proc is None:
            return []
        pids = children_of(self.proc.pid, include_zombies)
        for p in pids:
            st = proc_stat(p)
            if st:
                self.seen_children.setdefault(p, st[2])
        return pids

    def surviving_children(self):
        """Children ever observed that still run (same pid and start time)."""
        return [p for p, start in self.seen_children.items() if process_alive(p, start)]

    # ---- output
    def log(self):
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stdout(self):
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self):
        """handler=log output: (list of parsed JSON objects, list of lines that are not JSON)."""
        recs, bad = [], []
        for line in self.stdout().splitlines():
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except ValueError:
                bad.append(line)
        return recs, bad

    # ---- HTTP endpoint
    def http_connection(self, timeout):
        """A connection to the HTTP endpoint, unopened (NsFleet's reaches into its namespace)."""
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def http_get(self, path, timeout=5, headers=None):
        """(status, headers dict lowercased, body bytes)."""
        c = self.http_connection(timeout)
        try:
            c.request("GET", path, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def metrics(self):
        status, _, body = self.http_get("/metrics")
        assert status == 200, f"/metrics answered {status}: {body[:500]!r}"
        return parse_metrics(body.decode())

    def health(self):
        """(status, parsed JSON body or None when it is not JSON)."""
        status, _, body = self.http_get("/health")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, None

    def wait_for(self, predicate, timeout=None, what=None):
        """Poll predicate() until truthy; on timeout fail with the tail of the log. Fails at
        once if the master exits meanwhile."""
        def check():
            if self.proc.poll() is not None:
                raise AbortWait(f"streamfleet exited with {self.proc.returncode} while waiting "
                                f"for {what or predicate}; log:\n{excerpt(self.log())}")
            return predicate()
        try:
            return wait_until(check, timeout, what=what or getattr(predicate, "__name__", None))
        except WaitTimeout as e:
            raise AssertionError(f"{e}\nstreamfleet log:\n{excerpt(self.log())}") from None

    def wait_healthy(self, timeout=None):
        """Wait for /health 200; returns (200, body)."""
        def ok():
            h = self.health()
            return h if h[0] == 200 else None
        return self.wait_for(ok, timeout, what="/health 200")


def stop_fleet(f, who="streamfleet"):
    """Stop fleet f at a test's end (SIGTERM, SIGKILL after 15 s) and return what went wrong:
    a master that needed SIGKILL, children that outlived it (killed here: they are ours), a
    sanitizer report in its stderr. who names the fleet in those lines."""
    if f.proc is None:
        return []
    problems = []
    f.stop(timeout=15)
    if f.needed_sigkill:
        problems.append(f"{who} (pid {f.pid}) did not exit within 15 s of SIGTERM")
    # children must go with their master (drain, PDEATHSIG): give them a moment, then
    # kill what is left and report it.
    try:
        wait_until(lambda: not f.surviving_children(), timeout=10 * SLOWNESS)
    except WaitTimeout:
        left = f.surviving_children()
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        problems.append(f"{who}: children {left} outlived master {f.pid}")
    reports = sanitizer_reports(f.log())
    if reports:
        problems.append(f"{who}: sanitizer report in its stderr:\n" + "\n".join(reports)
                        + "\n--- log excerpt ---\n" + excerpt(f.log(), 120))
    return problems


@pytest.fixture
def fleet_factory(tmp_path, redis_server, sanitizer_logs):
    """fleet(sections, start=True, env=None, args=(), redis=None) -> Fleet.

    sections is {section: {key: value}}; [fleet] gets redis (the test's redis_server) and
    listen (a free port) unless given. At teardown every fleet is stopped (SIGTERM, SIGKILL
    after 15 s) and the test fails on a sanitizer report (in its stderr or in the test's
    sanitizer log_path, see sanitizer_logs), on a master that
    needed SIGKILL, or on a child that outlived its master."""
    fleets = []
    n = itertools.count()

    def make(sections=None, start=True, env=None, args=(), redis=None, wait_http=True):
        sections = {k: dict(v) for k, v in (sections or {}).items()}
        fl = sections.setdefault("fleet", {})
        fl.setdefault("redis", redis or redis_server.url)
        port = free_port()
        fl.setdefault("listen", f"127.0.0.1:{port}")
        port = int(str(fl["listen"]).rsplit(":", 1)[1])
        fl.setdefault("drain_timeout", "10s")
        fl.setdefault("poll_interval", "1s")
        # The tests run as root; streamfleet refuses to run workers as root unless told to.
        if os.geteuid() == 0 and "user" not in fl:
            fl.setdefault("allow_root", "yes")
        # [fleet] first, as people write it
        ordered = {"fleet": sections.pop("fleet"), **sections}
        workdir = tmp_path / f"fleet{next(n)}"
        workdir.mkdir()
        cfg = write_ini(workdir / "streamfleet.ini", ordered)
        f = Fleet(cfg, workdir, port, env=env, args=args)
        fleets.append(f)
        if start:
            f.start(wait_http=wait_http)
        return f

    yield make

    problems = []
    for f in fleets:
        problems += stop_fleet(f)
    # the reports a stopped fleet wrote to log_path (sanitizer_logs checks again afterwards,
    # for what the test ran without a fleet)
    found = sanitizer_log_reports()
    if found:
        problems.append(_format_sanitizer_logs(found))
        for p, _ in found:
            p.unlink()
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def fleet(fleet_factory):
    """Alias: the fleet factory (fleet({...}) starts one)."""
    return fleet_factory


# --------------------------------------------------------------------------------------------
# Redis stream helpers used by several tests
# --------------------------------------------------------------------------------------------

def add_messages(client, stream, n, fields=None, chunk=500):
    """XADD n messages (fields may be a function of i) in pipelines; returns their ids (str)."""
    ids = []
    for start in range(0, n, chunk):
        p = client.pipeline(transaction=False)
        for i in range(start, min(n, start + chunk)):
            f = fields(i) if callable(fields) else (fields or {"n": str(i)})
            p.xadd(stream, f)
        ids.extend(x.decode() for x in p.execute())
    return ids


def group_info(client, stream, group):
    """XINFO GROUPS entry of group as a dict with str keys, or None."""
    for g in client.xinfo_groups(stream):
        name = g["name"].decode() if isinstance(g["name"], bytes) else g["name"]
        if name == group:
            return g
    return None


def pending_count(client, stream, group):
    return client.xpending(stream, group)["pending"]


def consumer_names(client, stream, group):
    return sorted(c["name"].decode() for c in client.xinfo_consumers(stream, group))


def id_key(entry_id):
    """Sort key of a stream id string."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
