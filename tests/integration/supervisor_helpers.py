"""Helpers of the supervisor tests (issue 5: reload, scaling, hung and crashing children,
recycling, privileges, systemd). The fixtures live in conftest.py; this file only adds small
functions on top of them: reading /proc, rewriting a running fleet's config, a steady producer,
a sampler that watches a fleet while something happens to it, and a sd_notify listener."""
import collections
import grp
import os
import pwd
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from conftest import (HOST, SLOWNESS, add_messages, consumer_names, group_info, proc_stat,  # noqa: F401
                      record_arrivals, tcp_inodes, wait_until, write_ini)

BIG_TIMEOUT = 120 * SLOWNESS


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------

def pool(stream, workers=1, batch=10, block="500ms", handler="log", **extra):
    """A [pool:...] section reading stream with group STREAM-group."""
    return {"stream": stream, "group": f"{stream}-group", "workers": workers, "batch": batch,
            "block": block, "handler": handler, **extra}


def http_pool(sink, stream, workers=1, batch=20, block="500ms", **extra):
    """A handler = http [pool:...] section delivering stream to sink (short timeouts)."""
    return pool(stream, workers=workers, batch=batch, block=block, handler="http",
                url=sink.url + "/in", timeout="5s", connect_timeout="1s", claim_idle="1h",
                **extra)


def read_ini(path):
    """The INI that write_ini wrote, back as {section: {key: value}} (a repeated key gives a
    list), in file order."""
    out, cur = {}, None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line[0] in ";#":
            continue
        if line.startswith("["):
            cur = out.setdefault(line[1:-1], {})
            continue
        k, _, v = line.partition("=")
        k, v = k.strip(), v.strip()
        if k in cur:
            cur[k] = (cur[k] if isinstance(cur[k], list) else [cur[k]]) + [v]
        else:
            cur[k] = v
    return out


def rewrite_config(fl, edit):
    """Apply edit(sections) (it changes the dict in place) to the fleet's config file; the
    [fleet] section keeps what the fixture put there. Returns the new sections."""
    sections = read_ini(fl.config_path)
    edit(sections)
    write_ini(fl.config_path, sections)
    return sections


def line_of(path, text):
    """1-based number of the first line of path that contains text."""
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if text in line:
            return n
    raise AssertionError(f"{text!r} not in {path}")


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------

def live_children(pid):
    """Pids of pid's children that are not zombies (from /proc/PID/task/PID/children: fast
    enough to sample every few milliseconds; the master has one thread)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    out = []
    for p in text.split():
        st = proc_stat(int(p))
        if st and st[0] not in ("Z", "X") and st[1] == pid:
            out.append(int(p))
    return sorted(out)


def zombie_children(pid):
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return []
    return [int(p) for p in text.split() if (st := proc_stat(int(p))) and st[0] == "Z"]


def comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except (FileNotFoundError, ProcessLookupError):
        return None


def pool_children(fl, pool_name):
    """Live children of the fleet whose process name is sf:POOL (set by every worker)."""
    want = f"sf:{pool_name}"[:15]
    return [p for p in live_children(fl.pid) if comm(p) == want]


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def master_fds(fl):
    """The master's open fds, leaving out the HTTP clients of its endpoint (a test's own
    /metrics request comes and goes): {fd: target}."""
    clients = {f"socket:[{i}]" for i in tcp_inodes(fl.port, listening=False)}
    return {fd: t for fd, t in fd_targets(fl.pid).items() if t not in clients}


def fd_targets(pid):
    out = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out[int(fd)] = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            pass
    return out


def status_ids(pid):
    """{'Uid': [real, effective, saved, fs], 'Gid': [...]} from /proc/PID/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("Uid", "Gid"):
            out[k] = [int(x) for x in v.split()]
    return out


def signal_pending(pid, sig):
    """True while sig waits, undelivered, in pid's pending sets (the master blocks its signals
    and reads them from a signalfd: once it has read one, the bit is gone)."""
    bit = 1 << (int(sig) - 1)
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    for line in text.splitlines():
        k, _, v = line.partition(":")
        if k in ("SigPnd", "ShdPnd") and int(v.strip(), 16) & bit:
            return True
    return False


def send_signal(fl, sig):
    """Signal the master and wait until it has taken the signal off its signalfd (so that the
    next signal sent is not merged with this one, nor handled before it)."""
    fl.signal(sig)
    fl.wait_for(lambda: not signal_pending(fl.pid, sig), timeout=10 * SLOWNESS,
                what=f"the master to read signal {signal.Signals(sig).name}")


def kill_quietly(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def dead_pid():
    """The pid of a process that has just exited (and been reaped)."""
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


# --------------------------------------------------------------------------------------------
# the fleet, its workers and its stream
# --------------------------------------------------------------------------------------------

def consumers_of(client, stream, pool_name):
    """Slots (ints) of this host's consumers of pool in STREAM-group."""
    prefix = f"{HOST}:{pool_name}:"
    return sorted(int(n[len(prefix):]) for n in consumer_names(client, stream, f"{stream}-group")
                  if n.startswith(prefix))


def handled_ids(fl):
    """Counter of the entry ids the log handler printed (stdout)."""
    recs, bad = fl.records()
    assert not bad, f"stdout lines that are not JSON: {bad[:5]}"
    return collections.Counter(rec["id"] for rec in recs)


def all_read_and_acked(client, stream, n):
    g = group_info(client, stream, f"{stream}-group")
    return g is not None and g["entries-read"] == n and g["pending"] == 0


def wait_children(fl, n, pool_name=None, timeout=None):
    """Wait until the fleet (or one pool of it) has exactly n live children; returns them."""
    def enough():
        kids = pool_children(fl, pool_name) if pool_name else live_children(fl.pid)
        return kids if len(kids) == n else None
    return fl.wait_for(enough, timeout, what=f"{n} live children"
                       + (f" of pool {pool_name}" if pool_name else ""))


def assert_master_fds_back_to(fl, baseline):
    """The master's fds (without HTTP clients of its endpoint) come back to baseline."""
    try:
        wait_until(lambda: master_fds(fl) == baseline, 10 * SLOWNESS)
    except AssertionError:
        now = master_fds(fl)
        raise AssertionError(f"master fds were {len(baseline)}, now {len(now)}: "
                             f"gone {set(baseline.items()) - set(now.items())}, "
                             f"new {set(now.items()) - set(baseline.items())}") from None


def master_cpu(pid):
    rest = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")


def nobody_ids():
    return pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid


def lines_of_pid(text, pid):
    return [l for l in text.splitlines() if f"[{pid}]" in l]


# --------------------------------------------------------------------------------------------
# logs and metrics
# --------------------------------------------------------------------------------------------

def workers_total(m, pool_name):
    """running + starting + draining workers of a pool in a parsed /metrics."""
    return m.total("streamfleet_workers", pool=pool_name) or 0


def workers_live(m, pool_name):
    return ((m.value("streamfleet_workers", pool=pool_name, state="running") or 0)
            + (m.value("streamfleet_workers", pool=pool_name, state="starting") or 0))


def restarts(m, pool_name, reason=None):
    if reason is None:
        return m.total("streamfleet_worker_restarts_total", pool=pool_name) or 0
    return m.value("streamfleet_worker_restarts_total", pool=pool_name, reason=reason) or 0


COUNTERS = ("streamfleet_messages_read_total", "streamfleet_messages_acked_total",
            "streamfleet_worker_restarts_total", "streamfleet_reloads_total")


class Watcher(threading.Thread):
    """Samples a fleet while something happens to it: the live children of each pool (from
    /proc, every few ms; by process name sf:POOL when there are several pools) and /metrics
    (counters must never go back; workers of a pool, any state, never 0). .stop() ends it and
    returns itself; then look at .problems, .min_children, .min_metric_workers, .samples."""

    def __init__(self, fl, pools, counters=COUNTERS):
        super().__init__(daemon=True)
        self.fl, self.pools, self.counters = fl, list(pools), counters
        # One pool: count every live child (a child forked an instant ago has not named
        # itself sf:POOL yet, and must count too).
        self.count = (lambda p: len(live_children(fl.pid))) if len(self.pools) == 1 else \
            (lambda p: len(pool_children(fl, p)))
        self._halt = threading.Event()
        self.problems = []
        self.min_children = {p: None for p in self.pools}
        self.min_metric_workers = {p: None for p in self.pools}
        self.last = {}
        self.samples = 0
        self.metric_samples = 0

    def _proc_sample(self):
        for p in self.pools:
            n = self.count(p)
            cur = self.min_children[p]
            self.min_children[p] = n if cur is None else min(cur, n)

    def _metrics_sample(self):
        try:
            m = self.fl.metrics()
        except Exception:  # noqa: BLE001 - the endpoint may be busy: just a missed sample
            return
        self.metric_samples += 1
        for p in self.pools:
            n = workers_total(m, p)
            cur = self.min_metric_workers[p]
            self.min_metric_workers[p] = n if cur is None else min(cur, n)
            for name in self.counters:
                labels = {} if name == "streamfleet_reloads_total" else {"pool": p}
                for lbl, v in m.series(name, **labels):
                    key = (name, tuple(sorted(lbl.items())))
                    old = self.last.get(key)
                    if old is not None and v < old:
                        self.problems.append(f"{name}{lbl} went back from {old} to {v}")
                    self.last[key] = v

    def run(self):
        next_metrics = 0.0
        while not self._halt.is_set():
            self._proc_sample()
            self.samples += 1
            now = time.monotonic()
            if now >= next_metrics:
                self._metrics_sample()
                next_metrics = now + 0.05
            time.sleep(0.003)

    def stop(self):
        self._halt.set()
        self.join(30)
        return self


# --------------------------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------------------------

class Producer(threading.Thread):
    """XADDs to stream at a steady rate (messages per second, in pipelines of chunk) until
    stop(); .ids are the ids added, in order; .errors what went wrong."""

    def __init__(self, redis_server, stream, rate=1000, chunk=10):
        super().__init__(daemon=True)
        self.client = redis_server.client()
        self.stream, self.rate, self.chunk = stream, rate, chunk
        self.ids = []
        self.errors = []
        self._halt = threading.Event()
        self._n = 0

    def run(self):
        t = time.monotonic()
        try:
            while not self._halt.is_set():
                base = self._n
                self.ids += add_messages(self.client, self.stream, self.chunk,
                                         fields=lambda i: {"n": str(base + i)})
                self._n += self.chunk
                t += self.chunk / self.rate
                d = t - time.monotonic()
                if d > 0:
                    self._halt.wait(d)
                elif d < -1:
                    t = time.monotonic()  # fell behind (slow machine): do not burst
        except Exception as e:  # noqa: BLE001 - reported by the test
            self.errors.append(e)

    def stop(self):
        self._halt.set()
        self.join(30)
        assert not self.errors, f"producer failed: {self.errors}"
        return self.ids


# --------------------------------------------------------------------------------------------
# systemd notify
# --------------------------------------------------------------------------------------------

class NotifySocket:
    """A unix datagram socket standing in for systemd's $NOTIFY_SOCKET. .path to export,
    .messages (list of (time, text)) received so far, .wait_for(text)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sfn", dir="/tmp")  # sun_path holds 108 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.settimeout(0.05)
        self.messages = []
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._halt.is_set():
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
            except socket.timeout:
                continue
            except OSError:
                return
            pid = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("iII", cdata[:12])[0]
            with self._lock:
                self.messages.append((time.monotonic(), data.decode(errors="replace"), pid))

    def texts(self):
        with self._lock:
            return [m[1] for m in self.messages]

    def senders(self):
        """Pids that sent the datagrams (SCM_CREDENTIALS)."""
        with self._lock:
            return [m[2] for m in self.messages]

    def wait_count(self, n, timeout=None):
        return wait_until(lambda: len(self.texts()) >= n and self.texts(), timeout,
                          what=f"{n} notify datagrams")

    def close(self):
        self._halt.set()
        self._t.join(5)
        self.sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self.dir)
        except OSError:
            pass


def assignments(datagram):
    """sd_notify datagram -> {VAR: value} (one VAR=value per line)."""
    out = {}
    for line in datagram.splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out



def blocked_readers(client):
    """Redis clients blocked in XREADGROUP right now (CLIENT LIST flags b)."""
    return sum(1 for c in client.client_list()
               if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))


def build_plugin(tmp_path, name, body):
    """Compile C source body (after #include <streamfleet/plugin.h>, <stddef.h>, <stdio.h> and
    <string.h>) into tmp_path/name.so, against the public header alone."""
    import shutil
    import pytest
    from conftest import REPO
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed")
    src = tmp_path / f"{name}.c"
    src.write_text("#include <streamfleet/plugin.h>\n#include <stddef.h>\n#include <stdio.h>\n"
                   "#include <string.h>\n" + body)
    so = tmp_path / f"{name}.so"
    subprocess.run(["gcc", "-std=c11", "-fPIC", "-shared", "-I", str(REPO / "include"), "-o", str(so), str(src)],
                   check=True, capture_output=True, text=True)
    return so
