"""Headless Chromium (Debian's chromium package) driven over the DevTools protocol on a pipe.

No WebDriver, no websocket library: Chromium started with --remote-debugging-pipe reads
protocol messages from its fd 3 and writes to its fd 4, each a JSON object ended by a NUL byte
(what Puppeteer's `pipe: true` does). One page per Browser; every request it makes is
recorded, so a test can tell that a page fetched nothing but what it should.

    with Browser(tmp_path / "profile") as b:
        b.goto("http://127.0.0.1:9100/")
        b.wait_for("document.querySelector('#pools tbody tr') !== null")
        rows = b.eval("...")
        b.screenshot(path)
"""
import base64
import fcntl
import json
import os
import shutil
import subprocess
import threading
import time

CHROMIUM = os.environ.get("STREAMFLEET_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio", "--hide-scrollbars",
         "--no-default-browser-check", "--remote-debugging-pipe"]


def available():
    return os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)


def _above_9(fd):
    """fd moved above 9, so that putting it on fd 3 or 4 in the child cannot close another."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class BrowserError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page. .goto(url), .eval(js), .wait_for(js),
    .screenshot(path), .requests (every URL the page requested), .exceptions (uncaught
    JavaScript errors), .console (console messages). close() (or the with block) ends it."""

    def __init__(self, profile_dir, width=1280, height=720, timeout=30.0):
        self.timeout = timeout
        self.requests, self.exceptions, self.console = [], [], []
        self._responses = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self._closed = False
        os.makedirs(profile_dir, exist_ok=True)
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        to_chrome_r, from_chrome_w = _above_9(to_chrome_r), _above_9(from_chrome_w)
        # bash (dash takes no fd above 9) puts our pipe ends on fds 3 and 4 and becomes Chromium.
        cmd = (f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} '
               f'{to_chrome_r}<&- {from_chrome_w}>&-')
        args = [*FLAGS, f"--user-data-dir={profile_dir}", f"--window-size={width},{height}",
                "about:blank"]
        self._log = open(os.path.join(profile_dir, "chromium.log"), "wb")
        self.proc = subprocess.Popen(["bash", "-c", cmd, CHROMIUM, *args],
                                     pass_fds=(to_chrome_r, from_chrome_w),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._reader = threading.Thread(target=self._read, name="chromium-cdp", daemon=True)
        self._reader.start()
        try:
            target = self.call("Target.createTarget", url="about:blank")["targetId"]
            self.session = self.call("Target.attachToTarget", targetId=target,
                                     flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable", session=True)
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=width,
                      height=height, deviceScaleFactor=1, mobile=False)
        except Exception:
            self.close()
            raise

    # ---- protocol
    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_chrome, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                self._dispatch(json.loads(raw))

    def _dispatch(self, msg):
        with self._cond:
            if "id" in msg:
                self._responses[msg["id"]] = msg
                self._cond.notify_all()
                return
            method, p = msg.get("method"), msg.get("params", {})
            if method == "Network.requestWillBeSent":
                self.requests.append(p["request"]["url"])
            elif method == "Runtime.exceptionThrown":
                d = p.get("exceptionDetails", {})
                self.exceptions.append(d.get("exception", {}).get("description") or d.get("text"))
            elif method == "Runtime.consoleAPICalled":
                self.console.append((p.get("type"), [a.get("value") for a in p.get("args", [])]))

    def call(self, method, session=False, timeout=None, **params):
        """Send one command and wait for its result (a dict); raise BrowserError on an error."""
        with self._cond:
            self._next_id += 1
            mid = self._next_id
        msg = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data):]
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while mid not in self._responses:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise BrowserError(f"no answer to {method} from chromium "
                                       f"({'it exited' if self._closed else 'timeout'}): "
                                       f"{self.log()[-2000:]}")
                self._cond.wait(left)
            resp = self._responses.pop(mid)
        if "error" in resp:
            raise BrowserError(f"{method}: {resp['error']}")
        return resp.get("result", {})

    # ---- the page
    def goto(self, url):
        r = self.call("Page.navigate", session=True, url=url)
        if r.get("errorText"):
            raise BrowserError(f"cannot load {url}: {r['errorText']}")

    def eval(self, expression):
        """The value of a JavaScript expression in the page (JSON-able values)."""
        r = self.call("Runtime.evaluate", session=True, expression=expression,
                      returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            d = r["exceptionDetails"]
            raise BrowserError(f"{expression!r}: "
                               f"{d.get('exception', {}).get('description') or d.get('text')}")
        return r["result"].get("value")

    def wait_for(self, expression, timeout=None, what=None):
        """Poll a JavaScript expression until it is truthy; returns its value."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = None
        while True:
            try:
                last = self.eval(expression)
                if last:
                    return last
            except BrowserError as e:
                last = e
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what or expression}: last {last!r}")
            time.sleep(0.1)

    def screenshot(self, path, full_page=True):
        """Save a PNG of the page (all of it, as tall as it is, when full_page) to path."""
        params = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            # the page's own height (the body's), not the window's: no empty band below
            w, h = self.eval("[document.documentElement.clientWidth, "
                             "Math.ceil(document.body.getBoundingClientRect().bottom)]")
            params["clip"] = {"x": 0, "y": 0, "width": w, "height": h, "scale": 1}
        data = self.call("Page.captureScreenshot", session=True, **params)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
        return path

    # ---- the end
    def log(self):
        try:
            with open(self._log.name, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            try:
                self.call("Browser.close", timeout=5)
            except (BrowserError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                # its own process group (start_new_session): the renderers go with it
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
