"""A fault-injecting TCP proxy for the tests (this kernel has no netem): one selectors loop in a
thread of the test process, python3's standard library only.

    p = FaultProxy(("127.0.0.1", redis_port))      # listens on 127.0.0.1:p.port
    p.delay_ms = 50        # every chunk is forwarded this long after it was read (both ways)
    p.drop_rate = 0.5      # each connection is dropped with this probability per second:
    p.drop_kind = "rst"    # reset (RST to both ends), "fin" (a plain close: both ends read
                           # EOF) or "mixed" (the two in turn)
    p.freeze(8)            # forward nothing for 8 s: sockets stay open, nothing is read or
                           # written, new connections wait in the backlog (TCP handshake done
                           # by the kernel, not accepted)
    p.close()

Counters: .accepted, .dropped (connections dropped on purpose; .resets of them with an RST),
.bytes_up, .bytes_down.

It can also bridge network namespaces: given a listening socket made in one namespace
(netns_helpers.ns_listen), it accepts there, and connects upstream from the test's own
namespace or through the connect function given (netns_helpers.ns_connect)."""
import random
import selectors
import socket
import struct
import threading
import time

TICK = 0.01          # seconds between two looks at drops and delayed chunks
CHUNK = 65536


class _Conn:
    """One proxied connection: the client side and the upstream side, and what is due to be
    written to each (a list of [due_time, bytes], oldest first)."""

    def __init__(self, client, upstream):
        self.client = client
        self.upstream = upstream
        self.to_client = []
        self.to_upstream = []
        self.eof = False        # one side closed: flush what the other is owed, then close

    def peer(self, sock):
        return self.upstream if sock is self.client else self.client

    def queue_for(self, sock):
        return self.to_client if sock is self.client else self.to_upstream


class FaultProxy:
    def __init__(self, upstream, listen=("127.0.0.1", 0), sock=None, seed=1313, connect=None):
        """upstream: (host, port) to forward to; connect: a function of it returning a
        connected socket (default socket.create_connection, 2 s timeout)."""
        self.upstream = upstream
        self._connect = connect or (lambda addr: socket.create_connection(addr, timeout=2))
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(listen)
            sock.listen(128)
        sock.setblocking(False)
        self.listener = sock
        self.port = sock.getsockname()[1]
        self.delay_ms = 0
        self.drop_rate = 0.0
        self.drop_kind = "rst"
        self.frozen_until = 0.0
        self.accepted = 0
        self.dropped = 0
        self.resets = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self._random = random.Random(seed)
        self._conns = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"faultproxy:{self.port}",
                                        daemon=True)
        self._thread.start()

    # ---- control
    def freeze(self, seconds):
        """Forward nothing for seconds from now (returns at once)."""
        self.frozen_until = time.monotonic() + seconds

    def frozen(self):
        return time.monotonic() < self.frozen_until

    def connections(self):
        return len(self._conns)

    def close(self):
        self._stop.set()
        self._thread.join(10)
        for c in list(self._conns):
            self._close(c, reset=False)
        self.listener.close()

    # ---- the loop
    def _loop(self):
        sel = selectors.DefaultSelector()
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now < self.frozen_until:
                    time.sleep(min(TICK, self.frozen_until - now))
                    last = time.monotonic()
                    continue
                self._maybe_drop(now - last)
                last = now
                self._register(sel, now)
                for key, events in sel.select(TICK):
                    if key.fileobj is self.listener:
                        self._accept()
                        continue
                    conn = key.data
                    if conn not in self._conns:
                        continue
                    if events & selectors.EVENT_READ:
                        self._read(conn, key.fileobj)
                    if conn in self._conns and events & selectors.EVENT_WRITE:
                        self._write(conn, key.fileobj)
                for conn in list(self._conns):
                    if conn.eof and not conn.to_client and not conn.to_upstream:
                        self._close(conn, reset=False)
        finally:
            sel.close()

    def _register(self, sel, now):
        """(Re)compute what each socket waits for: reading always (unless its connection is
        closing), writing when a chunk is due for it."""
        for key in list(sel.get_map().values()):
            sel.unregister(key.fileobj)
        sel.register(self.listener, selectors.EVENT_READ)
        for conn in self._conns:
            for sock in (conn.client, conn.upstream):
                ev = 0 if conn.eof else selectors.EVENT_READ
                q = conn.queue_for(sock)
                if q and q[0][0] <= now:
                    ev |= selectors.EVENT_WRITE
                if ev:
                    sel.register(sock, ev, conn)

    def _accept(self):
        try:
            client, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        try:
            up = self._connect(self.upstream)
        except OSError:
            self._rst(client)
            return
        for s in (client, up):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted += 1
        self._conns.append(_Conn(client, up))

    def _read(self, conn, sock):
        try:
            data = sock.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            conn.eof = True
            return
        if sock is conn.client:
            self.bytes_up += len(data)
        else:
            self.bytes_down += len(data)
        conn.queue_for(conn.peer(sock)).append([time.monotonic() + self.delay_ms / 1000, data])

    def _write(self, conn, sock):
        q = conn.queue_for(sock)
        now = time.monotonic()
        while q and q[0][0] <= now:
            try:
                n = sock.send(q[0][1])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._close(conn, reset=True)
                return
            if n < len(q[0][1]):
                q[0][1] = q[0][1][n:]
                return
            q.pop(0)

    def _maybe_drop(self, dt):
        if self.drop_rate <= 0:
            return
        for conn in list(self._conns):
            if self._random.random() < self.drop_rate * dt:
                kind = self.drop_kind
                if kind == "mixed":
                    kind = "rst" if self.dropped % 2 == 0 else "fin"
                self.dropped += 1
                self.resets += kind == "rst"
                self._close(conn, reset=kind == "rst")

    @staticmethod
    def _rst(sock):
        """Close with a reset (SO_LINGER 0), not a FIN: the peer sees ECONNRESET."""
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        sock.close()

    def _close(self, conn, reset):
        if conn in self._conns:
            self._conns.remove(conn)
        for s in (conn.client, conn.upstream):
            if reset:
                self._rst(s)
            else:
                s.close()
