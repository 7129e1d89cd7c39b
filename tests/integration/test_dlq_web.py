"""Dead letters on the web (issue 15, part 1): GET /dlq (the page), /dlq.json, /dlq/letter.json,
POST /dlq/replay and /dlq/purge, driven as an operator would: a real redis-server, a real sink,
the real binary, a real browser (headless Chromium, tests/integration/chromium.py).

Writing needs [fleet] admin_token_file and its token in the X-Streamfleet-Admin header; the
master runs each request in a forked child (it never waits on Redis itself). The page is read
through its hooks (supervisor/dlqpage.c says which). STREAMFLEET_DOCS_SCREENSHOT=1 also writes
docs/dlq-page.png."""
import http.client
import json
import os
import signal
import time

import pytest

import chromium
from conftest import REPO, SLOWNESS, add_messages, run_binary, wait_until, write_ini, free_port
from reliability_helpers import by_webhook_id, dlq_entries, http_pool, log_pool
from supervisor_helpers import rewrite_config

ARTIFACTS = REPO / "tests" / "artifacts"
ADMIN = "admin-7d1c0b5e"
READER = "reader-93aa41f2"

needs_chromium = pytest.mark.skipif(not chromium.available(),
                                    reason="chromium not installed (Debian package chromium)")


def artifact(name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def token_file(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text + "\n")
    p.chmod(0o600)
    return str(p)


def fake_dead_letter(client, dlq, fields, reason="http_422", attempts=1, source_id="1-1",
                     error="http 422: refused by the endpoint", stream="orders"):
    """XADD a dead letter as the fleet writes them: the original fields, then dlq.*."""
    f = dict(fields)
    f.update({"dlq.stream": stream, "dlq.id": source_id, "dlq.reason": reason,
              "dlq.attempts": str(attempts), "dlq.error": error,
              "dlq.time": str(int(time.time() * 1000))})
    return client.xadd(dlq, f).decode()


def request(fl, method, path, body=None, headers=None, timeout=30):
    """(status, headers lowercased, body bytes) of one request to the fleet's endpoint."""
    c = http.client.HTTPConnection("127.0.0.1", fl.port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def post(fl, verb, payload, token=ADMIN, headers=None):
    h = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        h["X-Streamfleet-Admin"] = token
    return request(fl, "POST", f"/dlq/{verb}", json.dumps(payload), h)


def get_json(fl, path):
    status, headers, body = request(fl, "GET", path)
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:200])
    return status, json.loads(body)


def poison_fleet(fleet, sink, tmp_path, admin=True, extra_fleet=None):
    """A fleet delivering orders to sink, with an admin token unless told not to."""
    sink.rule(422, body_contains=b"poison", times=3)
    fl_sec = {**(extra_fleet or {})}
    if admin:
        fl_sec["admin_token_file"] = token_file(tmp_path, "admin.token", ADMIN)
    return fleet({"fleet": fl_sec, "pool:orders": http_pool(sink, "orders", body_field="payload")})


def dead_lettered(fl, r, n):
    fl.wait_for(lambda: len(dlq_entries(r, "orders:dlq")) >= n, what=f"{n} dead letters")
    return [i for i, _ in dlq_entries(r, "orders:dlq")]


def open_page(tmp_path, fl, pool="orders", width=1280, height=800):
    b = chromium.Browser(tmp_path / "chromium-profile", width=width, height=height)
    b.goto(f"http://127.0.0.1:{fl.port}/dlq?pool={pool}")
    return b


# whether an element takes room on the page (hidden by itself or an ancestor: it does not)
SHOWN = "(e => e.getClientRects().length > 0)"

ROWS = """Array.from(document.querySelectorAll('#letters tbody tr')).map(tr => {
  const o = {id: tr.dataset.id};
  for (const c of tr.cells) if (c.dataset.k) o[c.dataset.k] = c.textContent;
  return o; })"""


# --------------------------------------------------------------------------------------------
# the page in Chromium
# --------------------------------------------------------------------------------------------

@needs_chromium
def test_page_lists_dead_letters_newest_first_with_their_fields_as_text(redis_server, sink, fleet,
                                                                        tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    old = fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": "old"}, reason="http_500",
                           attempts=5, error="http 500 after 5 attempts")
    evil = fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": "<script>window.pwned=1</script>",
                                              "note": "<img src=x onerror=window.pwned=2>"},
                            error="<b>bold</b> error")
    with open_page(tmp_path, fl) as b:
        rows = b.wait_for(f"document.querySelectorAll('#letters tbody tr').length == 2 && {ROWS}",
                          what="two rows")
        b.screenshot(artifact("dlq-page-list.png"))
        assert [x["id"] for x in rows] == [evil, old], "newest first"
        assert rows[1]["reason"] == "http_500" and rows[1]["attempts"] == "5"
        assert rows[1]["error"] == "http 500 after 5 attempts" and rows[1]["stream"] == "orders"
        assert "payload = <script>window.pwned=1</script>" in rows[0]["fields"], rows[0]
        assert rows[0]["error"] == "<b>bold</b> error"
        assert b.eval("window.pwned === undefined && document.querySelectorAll("
                      "'#letters script, #letters img, #letters b').length == 0"), "shown as text only"
        # open one: every field, as text
        b.eval(f"document.querySelector('tr[data-id=\"{evil}\"] a[data-k=open]').click()")
        fields = b.wait_for(f"document.getElementById('letter').dataset.id == '{evil}' && "
                            "Array.from(document.querySelectorAll('#fields tbody tr')).map("
                            "tr => [tr.cells[0].textContent, tr.cells[1].textContent])",
                            what="the letter view")
        assert fields == [["type", "t"], ["payload", "<script>window.pwned=1</script>"],
                          ["note", "<img src=x onerror=window.pwned=2>"]]
        assert b.eval("window.pwned === undefined")
        # filter by reason
        b.eval("document.getElementById('reason').value = 'http_500';"
               "document.getElementById('apply').click()")
        rows = b.wait_for(f"document.querySelectorAll('#letters tbody tr').length == 1 && {ROWS}",
                          what="the filtered list")
        assert rows[0]["id"] == old
        base = f"http://127.0.0.1:{fl.port}/"
        assert all(u.startswith(base + "dlq") for u in b.requests), b.requests
        assert not b.exceptions, b.exceptions
    assert len(dlq_entries(r, "orders:dlq")) == 2, "looking changed nothing"


@needs_chromium
def test_replay_one_from_the_page_is_delivered_then_purge_the_rest(redis_server, sink, fleet,
                                                                   tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    ids = add_messages(r, "orders", 3, fields=lambda i: {"type": "t", "payload": f"poison-{i}"})
    letters = dead_lettered(fl, r, 3)
    with open_page(tmp_path, fl) as b:
        b.wait_for("document.querySelectorAll('#letters tbody tr').length == 3", what="three rows")
        assert b.eval(f"{SHOWN}(document.getElementById('unlock')) && "
                      f"!{SHOWN}(document.getElementById('replay-shown'))"), "locked until the token is given"
        b.eval(f"document.getElementById('token').value = '{ADMIN}';"
               "document.querySelector('#unlock button').click()")
        b.wait_for(f"{SHOWN}(document.getElementById('replay-shown')) && "
                   f"!{SHOWN}(document.getElementById('unlock'))", what="unlocked")
        assert b.eval("document.cookie") == "", "no cookie"
        # open the oldest and replay it (the sink's 3 refusals are used up: it is accepted now);
        # the oldest letter is the first message dead-lettered, not always the first added
        target = letters[0]
        payload = dict(dlq_entries(r, "orders:dlq"))[target]["payload"].encode()
        b.eval(f"document.querySelector('tr[data-id=\"{target}\"] a[data-k=open]').click()")
        b.wait_for(f"document.getElementById('letter').dataset.id == '{target}' && "
                   "!document.getElementById('one-actions').hidden", what="the letter with its buttons")
        b.eval("document.getElementById('replay-one').click()")
        b.wait_for("document.getElementById('msg').textContent == 'replayed 1 dead letter' && "
                   "document.querySelectorAll('#letters tbody tr').length == 2", what="replayed")
        assert [i for i, _ in dlq_entries(r, "orders:dlq")] == letters[1:]
        fl.wait_for(lambda: by_webhook_id(sink.snapshot(), status=200), what="the replay delivered")
        ok = [x for x in sink.snapshot() if x.status == 200]
        assert len(ok) == 1 and payload in ok[0].body, [x.body for x in ok]
        # purge the selected one (the newest), then all shown: the rest. A purge cannot be
        # undone: the first click only asks (the button says what a second click does), and an
        # unanswered question lapses.
        b.eval(f"document.querySelector('tr[data-id=\"{letters[2]}\"] .pick').click();"
               "document.getElementById('purge-selected').click()")
        asked = b.wait_for("document.getElementById('purge-selected').dataset.armed == '1' && "
                           "document.getElementById('purge-selected').textContent", what="asked")
        assert "1" in asked, asked
        time.sleep(1)
        assert [i for i, _ in dlq_entries(r, "orders:dlq")] == letters[1:], "one click purged"
        b.wait_for("!document.getElementById('purge-selected').dataset.armed && "
                   "document.getElementById('purge-selected').textContent == 'purge selected'",
                   timeout=15 * SLOWNESS, what="the question lapsed")
        assert [i for i, _ in dlq_entries(r, "orders:dlq")] == letters[1:]
        b.eval("document.getElementById('purge-selected').click();"
               "document.getElementById('purge-selected').click()")
        b.wait_for("document.getElementById('msg').textContent == 'purged 1 dead letter' && "
                   "document.querySelectorAll('#letters tbody tr').length == 1", what="purged one")
        assert [i for i, _ in dlq_entries(r, "orders:dlq")] == [letters[1]]
        b.eval("document.getElementById('purge-shown').click()")
        time.sleep(1)
        assert [i for i, _ in dlq_entries(r, "orders:dlq")] == [letters[1]], "one click purged"
        b.eval("document.getElementById('purge-shown').click()")
        b.wait_for("document.getElementById('msg').textContent == 'purged 1 dead letter' && "
                   "document.querySelectorAll('#letters tbody tr').length == 0", what="purged")
        b.screenshot(artifact("dlq-page-after.png"))
        assert not b.exceptions, b.exceptions
    assert dlq_entries(r, "orders:dlq") == []
    log = fl.log()
    # each action logged with its count
    assert "replayed 1 dead letter of pool orders" in log and log.count("purged 1 dead letter of pool orders") == 2
    assert len(ids) == 3


@needs_chromium
def test_without_admin_token_file_the_buttons_are_absent_and_post_is_refused(redis_server, sink,
                                                                           fleet, tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path, admin=False)
    letter = fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": "x"})
    with open_page(tmp_path, fl) as b:
        b.wait_for("document.querySelectorAll('#letters tbody tr').length == 1", what="the row")
        assert b.eval("['unlock', 'actions', 'one-actions', 'replay-one', 'purge-shown']"
                      f".every(id => !{SHOWN}(document.getElementById(id)))"
                      f" && Array.from(document.querySelectorAll('.pick')).every(c => !{SHOWN}(c))")
        assert not b.exceptions, b.exceptions
    for verb in ("replay", "purge"):
        status, _, body = post(fl, verb, {"pool": "orders", "ids": [letter]})
        assert status == 403, (verb, status, body)
        status, _, body = post(fl, verb, {"pool": "orders", "all": True}, token="")
        assert status == 403, (verb, status, body)
    assert [i for i, _ in dlq_entries(r, "orders:dlq")] == [letter]


# --------------------------------------------------------------------------------------------
# the endpoints
# --------------------------------------------------------------------------------------------

def test_posts_without_the_admin_header_are_refused_and_gets_change_nothing(redis_server, sink,
                                                                           fleet, tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    letters = [fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": str(i)}) for i in range(3)]
    body = {"pool": "orders", "ids": letters}
    assert post(fl, "replay", body, token=None)[0] == 403
    assert post(fl, "purge", body, token="wrong")[0] == 403
    assert post(fl, "purge", body, token=ADMIN + "x")[0] == 403
    # what a form on another site can send: no custom header, a cookie at most
    form = f"pool=orders&all=true&ids={letters[0]}"
    for verb in ("replay", "purge"):
        status, _, _ = request(fl, "POST", f"/dlq/{verb}", form, {
            "Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example",
            "Cookie": f"X-Streamfleet-Admin={ADMIN}"})
        assert status == 403
    # a CORS preflight (what a cross-site fetch with the header needs first) is not granted
    status, headers, _ = request(fl, "OPTIONS", "/dlq/purge", None, {
        "Origin": "http://evil.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-streamfleet-admin"})
    assert status == 405 and "access-control-allow-origin" not in headers
    # GET never acts
    for path in (f"/dlq/replay?pool=orders&all=true&ids={letters[0]}", "/dlq/purge?pool=orders&all=true"):
        status, headers, _ = request(fl, "GET", path, None, {"X-Streamfleet-Admin": ADMIN})
        assert status == 405 and headers["allow"] == "POST", (path, status, headers)
    for path in ("/dlq?pool=orders", "/dlq.json?pool=orders", f"/dlq/letter.json?pool=orders&id={letters[0]}"):
        assert request(fl, "GET", path)[0] == 200
    assert [i for i, _ in dlq_entries(r, "orders:dlq")] == letters, "nothing changed"
    assert r.xlen("orders") == 0
    # bad requests: said, nothing done
    assert post(fl, "replay", {"pool": "orders"})[0] == 400
    assert post(fl, "replay", {"pool": "orders", "ids": ["nope"]})[0] == 400
    assert post(fl, "replay", {"pool": "nope", "ids": letters})[0] == 404
    assert request(fl, "GET", "/dlq.json?pool=nope")[0] == 404
    assert request(fl, "GET", "/dlq.json?pool=orders&count=0")[0] == 400
    # with the token: replay of an unknown id replays nothing (all or none, as the CLI)
    status, _, out = post(fl, "replay", {"pool": "orders", "ids": [letters[0], "1-1"]})
    assert status == 409, out
    assert [i for i, _ in dlq_entries(r, "orders:dlq")] == letters
    # and purge all
    status, _, out = post(fl, "purge", {"pool": "orders", "all": True})
    assert status == 200 and json.loads(out)["count"] == 3, out
    assert dlq_entries(r, "orders:dlq") == []


def test_list_pages_through_older_letters_and_filters_by_reason(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    ids = [fake_dead_letter(r, "orders:dlq", {"type": "t", "n": str(i), "big": "é" * 100},
                            reason="http_500" if i % 3 == 0 else "http_422") for i in range(10)]
    status, d = get_json(fl, "/dlq.json?pool=orders&count=4")
    assert status == 200 and d["writable"] is True
    assert [x["id"] for x in d["letters"]] == ids[::-1][:4] and d["next"] == ids[6]
    assert d["dlqs"] == [{"name": "orders:dlq", "length": 10}]
    big = dict(d["letters"][0]["fields"])["big"]
    assert 0 < len(big.encode()) <= 80 and set(big) == {"é"}, "a preview, cut at a character"
    status, d2 = get_json(fl, f"/dlq.json?pool=orders&count=4&before={d['next']}")
    assert [x["id"] for x in d2["letters"]] == ids[::-1][4:8]
    status, d3 = get_json(fl, f"/dlq.json?pool=orders&count=4&before={d2['next']}")
    assert [x["id"] for x in d3["letters"]] == ids[::-1][8:] and d3["next"] is None
    status, f = get_json(fl, "/dlq.json?pool=orders&reason=http_500")
    assert [x["id"] for x in f["letters"]] == [ids[9], ids[6], ids[3], ids[0]]
    status, one = get_json(fl, f"/dlq/letter.json?pool=orders&id={ids[2]}")
    assert status == 200 and dict(one["fields"])["big"] == "é" * 100 and one["reason"] == "http_422"
    assert get_json(fl, "/dlq/letter.json?pool=orders&id=1-1")[0] == 404


def test_a_pool_of_several_streams_lists_and_replays_per_stream(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    fl = fleet({"fleet": {"admin_token_file": token_file(tmp_path, "admin.token", ADMIN)},
                "pool:logs": log_pool("a b", group="logs-group")})
    la = fake_dead_letter(r, "a:dlq", {"n": "1"}, stream="a")
    lb = fake_dead_letter(r, "b:dlq", {"n": "2"}, stream="b")
    status, d = get_json(fl, "/dlq.json?pool=logs")
    assert d["streams"] == ["a", "b"] and {x["id"] for x in d["letters"]} == {la, lb}
    status, d = get_json(fl, "/dlq.json?pool=logs&stream=b")
    assert [x["id"] for x in d["letters"]] == [lb]
    assert get_json(fl, "/dlq.json?pool=logs&stream=c")[0] == 404
    status, _, out = post(fl, "replay", {"pool": "logs", "stream": "b", "all": True})
    assert status == 200 and json.loads(out)["count"] == 1, out
    assert dlq_entries(r, "b:dlq") == [] and [i for i, _ in dlq_entries(r, "a:dlq")] == [la]


def test_the_master_answers_while_a_dlq_request_waits_on_a_frozen_redis(redis_server, sink, fleet,
                                                                        tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": "x"})
    import threading
    answers = {}

    took = {}

    def ask(k):
        t = time.monotonic()
        answers[k] = request(fl, "GET", "/dlq.json?pool=orders", timeout=60)[0]
        took[k] = time.monotonic() - t
    os.kill(redis_server.pid, signal.SIGSTOP)
    try:
        threads = [threading.Thread(target=ask, args=(k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(1)
        # two children at work: a third is turned away at once, and the master's loop runs
        t0 = time.monotonic()
        assert request(fl, "GET", "/dlq.json?pool=orders", timeout=5)[0] == 503
        assert request(fl, "GET", "/livez", timeout=5)[0] == 200
        quick = time.monotonic() - t0
        assert quick < 3 * SLOWNESS, quick
        for t in threads:
            t.join(60)
    finally:
        os.kill(redis_server.pid, signal.SIGCONT)
    # each ended by its deadline (504), or by its own Redis timeout (502), whichever came first
    print(f"503 and /livez in {quick:.3f} s; the two waiting answered {answers} after {took}")
    assert set(answers) == {0, 1} and set(answers.values()) <= {502, 504}, answers
    assert all(t < 10 + 20 * SLOWNESS for t in took.values()), took
    wait_until(lambda: request(fl, "GET", "/dlq.json?pool=orders")[0] == 200, what="answers again")


class SlowRedis:
    """A TCP server speaking just enough RESP: every command is answered +OK (PING +PONG) but
    XLEN, answered :1 after xlen_delay seconds, and XREVRANGE and XREADGROUP, never answered:
    a Redis that is up but stalls in the middle of a request."""

    def __init__(self, xlen_delay):
        import socket
        import threading
        self.xlen_delay = xlen_delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        f = c.makefile("rb")
        try:
            while True:
                line = f.readline()
                if not line:
                    return
                n = int(line[1:])
                args = []
                for _ in range(n):
                    size = int(f.readline()[1:])
                    args.append(f.read(size + 2)[:-2].upper())
                cmd = args[0] if args else b""
                if cmd in (b"XREVRANGE", b"XREADGROUP"):
                    continue                    # never answered
                if cmd == b"XLEN":
                    time.sleep(self.xlen_delay)
                    c.sendall(b":1\r\n")
                else:
                    c.sendall(b"+PONG\r\n" if cmd == b"PING" else b"+OK\r\n")
        except (OSError, ValueError):
            return

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass


def test_a_dlq_request_stalled_in_redis_is_killed_at_its_deadline_with_504(sink, fleet, tmp_path):
    # Each command of the child has its own 10 s timeout; XLEN takes 6 s, then XREVRANGE hangs:
    # only the master's deadline (10 s from the fork) can end it before 16 s.
    slow = SlowRedis(xlen_delay=6)
    try:
        fl = fleet({"fleet": {"redis": f"redis://127.0.0.1:{slow.port}"},
                    "pool:orders": log_pool("orders")})
        t = time.monotonic()
        status, _, body = request(fl, "GET", "/dlq.json?pool=orders", timeout=60)
        took = time.monotonic() - t
        print(f"answered {status} after {took:.2f} s")
        assert status == 504, (status, body)
        assert 9 < took < 10 + 5 * SLOWNESS, took
        assert request(fl, "GET", "/livez", timeout=5)[0] == 200
        # the child is gone (killed, then reaped)
        def comm(pid):
            try:
                return open(f"/proc/{pid}/comm").read()
            except OSError:
                return ""
        fl.wait_for(lambda: not [p for p in fl.children(include_zombies=True) if "sf-dlqweb" in comm(p)],
                    what="the killed child reaped")
    finally:
        fl.stop()
        slow.close()


# --------------------------------------------------------------------------------------------
# the config key
# --------------------------------------------------------------------------------------------

def test_a_bad_admin_token_file_is_a_config_error_at_its_line(redis_server, tmp_path):
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    reader = token_file(tmp_path, "reader.token", READER)
    same = token_file(tmp_path, "same.token", READER)
    cases = {"missing": str(tmp_path / "nope.token"), "empty": str(empty), "same": same}
    for what, path in cases.items():
        cfg = write_ini(tmp_path / f"{what}.ini", {
            "fleet": {"redis": redis_server.url, "listen": f"127.0.0.1:{free_port()}",
                      "listen_token_file": reader, "admin_token_file": path},
            "pool:p": log_pool("s")})
        res = run_binary(["-t", "-c", str(cfg)])
        assert res.returncode != 0, (what, res.stdout, res.stderr)
        line = next(i for i, l in enumerate(cfg.read_text().splitlines(), 1)
                    if l.startswith("admin_token_file"))
        assert f"{cfg}:{line}:" in res.stderr, (what, res.stderr)
    ok = write_ini(tmp_path / "ok.ini", {
        "fleet": {"redis": redis_server.url, "listen": f"127.0.0.1:{free_port()}",
                  "listen_token_file": reader,
                  "admin_token_file": token_file(tmp_path, "admin.token", ADMIN)},
        "pool:p": log_pool("s")})
    res = run_binary(["-t", "-c", str(ok)])
    assert res.returncode == 0, res.stderr


def test_with_a_read_token_gets_need_it_and_posts_need_both(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path,
                      extra_fleet={"listen_token_file": token_file(tmp_path, "reader.token", READER)})
    letter = fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": "x"})
    bearer = {"Authorization": f"Bearer {READER}"}
    assert request(fl, "GET", "/dlq.json?pool=orders")[0] == 401
    assert request(fl, "GET", "/dlq.json?pool=orders", None, bearer)[0] == 200
    assert post(fl, "purge", {"pool": "orders", "ids": [letter]})[0] == 401
    assert post(fl, "purge", {"pool": "orders", "ids": [letter]}, token=READER, headers=bearer)[0] == 403
    assert [i for i, _ in dlq_entries(r, "orders:dlq")] == [letter]
    status, _, out = post(fl, "purge", {"pool": "orders", "ids": [letter]}, headers=bearer)
    assert status == 200 and json.loads(out)["count"] == 1


def test_a_reload_that_changes_the_admin_token_takes_effect_at_once(redis_server, sink, fleet,
                                                                     tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    letters = [fake_dead_letter(r, "orders:dlq", {"type": "t", "payload": str(i)}) for i in range(2)]
    new = "admin-second-5a0f"
    rewrite_config(fl, lambda c: c["fleet"].update(admin_token_file=token_file(tmp_path, "new.token", new)))
    reloads = fl.metrics().value("streamfleet_reloads_total", result="ok")
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_reloads_total", result="ok") > reloads, what="the reload")
    assert post(fl, "purge", {"pool": "orders", "ids": letters[:1]})[0] == 403, "the old token"
    status, _, out = post(fl, "purge", {"pool": "orders", "ids": letters[:1]}, token=new)
    assert status == 200 and json.loads(out)["count"] == 1, out
    # and off again: read-only
    rewrite_config(fl, lambda c: c["fleet"].pop("admin_token_file"))
    reloads = fl.metrics().value("streamfleet_reloads_total", result="ok")
    fl.signal(signal.SIGHUP)
    fl.wait_for(lambda: fl.metrics().value("streamfleet_reloads_total", result="ok") > reloads, what="the reload")
    assert post(fl, "purge", {"pool": "orders", "ids": letters[1:]}, token=new)[0] == 403
    assert get_json(fl, "/dlq.json?pool=orders")[1]["writable"] is False
    assert [i for i, _ in dlq_entries(r, "orders:dlq")] == letters[1:]


# --------------------------------------------------------------------------------------------
# the picture in the docs (run by hand: STREAMFLEET_DOCS_SCREENSHOT=1)
# --------------------------------------------------------------------------------------------

@needs_chromium
@pytest.mark.skipif(not os.environ.get("STREAMFLEET_DOCS_SCREENSHOT"),
                    reason="writes docs/dlq-page.png: set STREAMFLEET_DOCS_SCREENSHOT=1")
def test_docs_screenshot_of_the_dead_letters(redis_server, sink, fleet, tmp_path):
    r = redis_server.client()
    fl = poison_fleet(fleet, sink, tmp_path)
    reasons = [("http_422", 1, "http 422: unknown customer"), ("http_500", 5, "http 500 after 5 attempts"),
               ("too_large", 0, "message of 2.1 MB over max_message_bytes 1 MB"),
               ("invalid_message", 0, "field type: missing")]
    for i in range(14):
        reason, attempts, error = reasons[i % 4]
        fake_dead_letter(r, "orders:dlq", {"type": ["signup", "payment", "refund"][i % 3],
                                           "customer": f"c-{1000 + 37 * i}",
                                           "payload": json.dumps({"amount": 12 * i, "plan": "legacy"})},
                         reason=reason, attempts=attempts, error=error, source_id=f"17{i:02d}-0")
        time.sleep(0.05)
    with open_page(tmp_path, fl, width=1180, height=760) as b:
        b.wait_for("document.querySelectorAll('#letters tbody tr').length == 14", what="rows")
        b.eval(f"document.getElementById('token').value = '{ADMIN}';"
               "document.querySelector('#unlock button').click()")
        b.wait_for("!document.getElementById('actions').hidden", what="unlocked")
        b.eval("document.querySelectorAll('#letters .pick')[1].click();"
               "document.querySelectorAll('#letters .pick')[2].click()")
        b.screenshot(REPO / "docs" / "dlq-page.png", full_page=False)
