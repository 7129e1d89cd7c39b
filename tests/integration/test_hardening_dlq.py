"""Hardening of `streamfleet dlq` (the dead-letter tooling): replay --all is bounded by the dead
letters present when it started, replay keeps every original field (even one named like the
dlq.* metadata) and works whatever the field count, and list escapes control characters.
The real binary against a real redis-server (and, where dead letters must come back during a
replay, a running fleet and the HTTP sink)."""
import subprocess
import time

from conftest import (TIMEOUT, add_messages, free_port, sanitizer_env, sanitizer_reports,
                      streamfleet_bin, wait_until, write_ini)
from reliability_helpers import dlq_cli, http_pool, log_pool

META = ("dlq.stream", "dlq.id", "dlq.reason", "dlq.attempts", "dlq.error", "dlq.time")


def cli_config(tmp_path, redis_url, pool="p", stream="src", **extra):
    return write_ini(tmp_path / "dlq.ini", {
        "fleet": {"redis": redis_url, "listen": f"127.0.0.1:{free_port()}"},
        f"pool:{pool}": log_pool(stream, **extra)})


def raw_client(srv):
    """A client whose XRANGE answers raw [id, [f, v, f, v...]] lists of bytes: redis-py's dict
    would merge two fields of the same name, which a stream entry may hold."""
    c = srv.client()
    c.set_response_callback("XRANGE", lambda resp, **kw: resp)
    c.set_response_callback("XREVRANGE", lambda resp, **kw: resp)
    return c


def b(x):
    return x if isinstance(x, bytes) else str(x).encode()


def pairs(flat):
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def entries(c, key):
    """[(id, [(field, value)...])] of a stream, bytes, duplicates and order kept."""
    return [(i.decode(), pairs(f)) for i, f in c.execute_command("XRANGE", key, "-", "+")]


def raw_dead_letter(c, dlq, fields, source_id="1-1", reason="http_422", attempts=1,
                    error="http 422: refused", stream="src"):
    """XADD a dead letter as the worker writes it: the original fields in order (a list of
    pairs, names may repeat), then the six dlq.* fields, last, in this order."""
    meta = [("dlq.stream", stream), ("dlq.id", source_id), ("dlq.reason", reason),
            ("dlq.attempts", attempts), ("dlq.error", error),
            ("dlq.time", int(time.time() * 1000))]
    flat = [b(x) for kv in list(fields) + meta for x in kv]
    return c.execute_command("XADD", dlq, "*", *flat).decode()


# --------------------------------------------------------------------------------------------
# replay --all is bounded by the last dead letter present when it started
# --------------------------------------------------------------------------------------------

def test_replay_all_replays_only_the_dead_letters_present_when_it_started(redis_server, sink, fleet):
    # Every delivery is refused for good (422): a replayed message is dead-lettered again by
    # the running fleet at once, while replay --all is still running.
    sink.rule(422)
    r = redis_server.client()
    fl = fleet({"pool:orders": http_pool(sink, "orders", batch=50)})
    n = 300
    add_messages(r, "orders", n, fields=lambda i: {"type": "t", "n": str(i)})
    fl.wait_for(lambda: r.xlen("orders:dlq") == n, timeout=3 * TIMEOUT, what=f"{n} dead letters")
    ((last_at_start, _),) = r.xrevrange("orders:dlq", count=1)
    last_at_start = last_at_start.decode()
    res = dlq_cli(fl.config_path, "replay", "--pool", "orders", "--all", timeout=3 * TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == f"replayed {n} dead letters to orders", res.stdout
    assert r.xlen("orders") == 2 * n, "each of the 300 put back once, nothing added later replayed"
    # the fleet dead-letters the 300 replays again: all of them, and nothing else
    fl.wait_for(lambda: r.xlen("orders:dlq") == n and all(
        i.decode() > last_at_start for i, _ in r.xrange("orders:dlq")),
        timeout=3 * TIMEOUT, what="the replays dead-lettered again")
    sink.wait_count(2 * n)
    assert r.xlen("orders") == 2 * n


# --------------------------------------------------------------------------------------------
# replay keeps every original field
# --------------------------------------------------------------------------------------------

def test_replay_keeps_original_fields_named_like_the_dlq_metadata(redis_server, sink, fleet):
    sink.rule(422, body_contains=b"poison")
    c = raw_client(redis_server)
    fl = fleet({"pool:orders": http_pool(sink, "orders", body_field="payload")})
    original = [(b"type", b"t"), (b"dlq.reason", b"forged_reason"), (b"payload", b"poison"),
                (b"dlq.x", b"1"), (b"dlq.time", b"0"), (b"bin", b"a\x00b\xff")]
    src_id = c.execute_command("XADD", "orders", "*", *[x for kv in original for x in kv]).decode()
    fl.wait_for(lambda: c.xlen("orders:dlq") == 1, what="dead-lettered by the worker")
    ((dlq_id, dead),) = entries(c, "orders:dlq")
    assert dead[:len(original)] == original, "the worker keeps the fields, metadata after them"

    res = dlq_cli(fl.config_path, "list", "--pool", "orders", "--fields")
    assert res.returncode == 0, res.stderr
    row = next(line for line in res.stdout.splitlines() if line.startswith(dlq_id))
    assert row.split()[3] == "http_422", "the real reason, not the message's own dlq.reason"
    assert row.split()[5] == src_id
    assert "forged_reason" not in row
    assert "    dlq.reason = forged_reason" in res.stdout.splitlines(), "shown as a message field"
    assert "    bin = a\\x00b\\xff" in res.stdout.splitlines()

    sink.clear_rules()
    res = dlq_cli(fl.config_path, "replay", "--pool", "orders", dlq_id)
    assert res.returncode == 0, res.stderr
    back = [(i, f) for i, f in entries(c, "orders") if i != src_id]
    assert len(back) == 1
    assert back[0][1] == original, "every original field, in order, byte for byte"
    assert c.xlen("orders:dlq") == 0


def test_replay_keeps_a_message_whose_own_fields_look_like_a_whole_dead_letter(redis_server, tmp_path):
    # The metadata is the last six fields: a message that itself carries the six dlq.* names
    # keeps all of them.
    c = raw_client(redis_server)
    inner = [(k.encode(), b"inner-" + k.encode()) for k in META]
    original = [(b"a", b"1")] + inner + [(b"z", b"2")]
    dlq_id = raw_dead_letter(c, "src:dlq", original)
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "replay", "--pool", "p", "--all")
    assert res.returncode == 0, res.stderr
    assert "replayed 1 dead letter to src" in res.stdout
    ((_, back),) = entries(c, "src")
    assert back == original
    assert c.xlen("src:dlq") == 0 and dlq_id


def test_replay_refuses_an_entry_without_the_dlq_metadata_at_its_end_and_keeps_it(redis_server, tmp_path):
    c = raw_client(redis_server)
    # the six names, but not last: not a dead letter as the worker writes them
    flat = [b(x) for k in META for x in (k, "v")] + [b"extra", b"1"]
    odd = c.execute_command("XADD", "src:dlq", "*", *flat).decode()
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "replay", "--pool", "p", odd)
    assert res.returncode != 0
    assert odd in res.stderr
    assert c.xlen("src:dlq") == 1 and c.exists("src") == 0


# --------------------------------------------------------------------------------------------
# many fields
# --------------------------------------------------------------------------------------------

def test_a_dead_letter_with_5000_fields_is_listed_replayed_and_purged(redis_server, tmp_path):
    c = raw_client(redis_server)
    original = [(f"f{i}".encode(), f"v{i}".encode()) for i in range(5000)]
    first = raw_dead_letter(c, "src:dlq", original, source_id="7-1")
    second = raw_dead_letter(c, "src:dlq", original, source_id="7-2")
    cfg = cli_config(tmp_path, redis_server.url)

    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[-1] == "2 dead letters in src:dlq"
    assert "7-1" in res.stdout and "http_422" in res.stdout
    res = dlq_cli(cfg, "list", "--pool", "p", "--fields", "--count", "1")
    assert res.returncode == 0, res.stderr
    assert sum(line.startswith("    f") for line in res.stdout.splitlines()) == 5000

    res = dlq_cli(cfg, "replay", "--pool", "p", first)
    assert res.returncode == 0, res.stderr
    assert "replayed 1 dead letter to src" in res.stdout
    ((_, back),) = entries(c, "src")
    assert back == original, "all 5,000 original fields"
    assert [i for i, _ in entries(c, "src:dlq")] == [second]

    res = dlq_cli(cfg, "purge", "--pool", "p", "--all")
    assert res.returncode == 0, res.stderr
    assert "purged 1 dead letter from src:dlq" in res.stdout
    assert c.xlen("src:dlq") == 0 and c.xlen("src") == 1


def test_replay_that_cannot_write_the_stream_leaves_the_dead_letter_untouched(redis_server, tmp_path):
    c = raw_client(redis_server)
    few = raw_dead_letter(c, "src:dlq", [(b"n", b"1")])
    many = raw_dead_letter(c, "src:dlq", [(f"f{i}".encode(), b"v") for i in range(5000)])
    before = entries(c, "src:dlq")
    cfg = cli_config(tmp_path, redis_server.url)

    c.set("src", "not a stream")        # XADD fails: wrong type
    for dlq_id in (few, many):
        res = dlq_cli(cfg, "replay", "--pool", "p", dlq_id)
        assert res.returncode != 0 and dlq_id in res.stderr, res.stderr
        assert entries(c, "src:dlq") == before, "the dead letter is untouched"
    res = dlq_cli(cfg, "replay", "--pool", "p", "--all")
    assert res.returncode != 0
    assert entries(c, "src:dlq") == before
    assert c.get("src") == b"not a stream"

    c.delete("src")                     # XADD fails when it runs: no id left after the last
    c.xadd("src", {"last": "1"}, id="18446744073709551615-18446744073709551615")
    for dlq_id in (few, many):
        res = dlq_cli(cfg, "replay", "--pool", "p", dlq_id)
        assert res.returncode != 0 and dlq_id in res.stderr, res.stderr
        assert entries(c, "src:dlq") == before, "the dead letter is untouched"
    assert c.xlen("src") == 1

    c.delete("src")                     # XADD refused: Redis is out of memory (noeviction)
    c.config_set("maxmemory-policy", "noeviction")
    c.config_set("maxmemory", 1)
    try:
        for dlq_id in (few, many):
            res = dlq_cli(cfg, "replay", "--pool", "p", dlq_id)
            assert res.returncode != 0 and dlq_id in res.stderr, res.stderr
    finally:
        c.config_set("maxmemory", 0)
    assert entries(c, "src:dlq") == before and c.exists("src") == 0

    res = dlq_cli(cfg, "replay", "--pool", "p", "--all")
    assert res.returncode == 0, res.stderr
    assert "replayed 2 dead letters to src" in res.stdout
    assert c.xlen("src") == 2 and c.xlen("src:dlq") == 0
    assert not [k for k in c.keys("*") if k not in (b"src", b"src:dlq")], "no helper key left"


def test_two_replays_of_one_dead_letter_at_the_same_moment_put_it_back_once(redis_server, tmp_path):
    # Both read the dead letter, then both send their transaction while Redis holds writes
    # (CLIENT PAUSE WRITE): the first to run moves it, the second finds it gone and must take
    # back the entry its XADD added.
    c = raw_client(redis_server)
    original = [(b"n", b"1"), (b"kind", b"k")]
    dlq_id = raw_dead_letter(c, "src:dlq", original)
    cfg = cli_config(tmp_path, redis_server.url)
    c.execute_command("CLIENT", "PAUSE", 4000, "WRITE")
    procs = [subprocess.Popen([str(streamfleet_bin()), "dlq", "replay", "-c", str(cfg), "--pool", "p",
                               dlq_id], env=sanitizer_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, errors="replace")
             for _ in range(2)]
    try:
        # a client in a transaction (x) held at EXEC (b)
        wait_until(lambda: sum("x" in f and "b" in f for f in (
            cl["flags"] for cl in c.client_list())) == 2, timeout=3.5,
            what="both replays waiting at EXEC")
    finally:
        c.execute_command("CLIENT", "UNPAUSE")
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert not sanitizer_reports(err), err
        assert p.returncode == 0, err
    assert sorted(out.splitlines()[-1] for out, _ in outs) == [
        "replayed 0 dead letters to src", "replayed 1 dead letter to src"]
    assert [f for _, f in entries(c, "src")] == [original], "put back once"
    assert c.xinfo_stream("src")["entries-added"] == 2, "the second XADD ran and was taken back"
    assert c.xlen("src:dlq") == 0
    assert not [k for k in c.keys("*") if k not in (b"src", b"src:dlq")], "no helper key left"


# --------------------------------------------------------------------------------------------
# list escapes what it prints
# --------------------------------------------------------------------------------------------

def test_list_escapes_control_characters_in_metadata_and_fields(redis_server, tmp_path):
    c = raw_client(redis_server)
    original = [(b"clear", b"\x1b[2J\x1b[H"), (b"name\nwith\rbreaks", b"tab\there\x7f"),
                (b"title", b"\x1b]0;pwned\x07"), (b"csi", "\u009b31m".encode()),
                (b"bidi", "abc\u202edef".encode()), (b"ok", "caf\u00e9".encode()),
                (b"slash", b"a\\x1b")]
    dlq_id = raw_dead_letter(c, "src:dlq", original, reason="http_422\x1b[31m",
                             error="http 422\r\nfake row\x1b[2J")
    cfg = cli_config(tmp_path, redis_server.url)
    for extra in ([], ["--fields"]):
        res = dlq_cli(cfg, "list", "--pool", "p", *extra)
        assert res.returncode == 0, res.stderr
        out = res.stdout
        for bad in ("\x1b", "\x07", "\x7f", "\r", "\u009b", "\u202e"):
            assert bad not in out, (repr(bad), out)
        lines = out.splitlines()
        assert len(lines) == 1 + 1 + (len(original) if extra else 0) + 1, out
        row = lines[1]
        assert row.startswith(dlq_id)
        assert "http_422\\x1b[31m" in row and "http 422\\r\\nfake row\\x1b[2J" in row
    fields = lines[2:-1]
    assert "    clear = \\x1b[2J\\x1b[H" in fields
    assert "    name\\nwith\\rbreaks = tab\\there\\x7f" in fields
    assert "    title = \\x1b]0;pwned\\x07" in fields
    assert "    csi = \\xc2\\x9b31m" in fields
    assert "    bidi = abc\\xe2\\x80\\xaedef" in fields
    assert "    ok = caf\u00e9" in fields, "printable UTF-8 stays readable"
    assert "    slash = a\\\\x1b" in fields, "a backslash is escaped, so escapes cannot be forged"


def test_fields_is_refused_outside_list(redis_server, tmp_path):
    cfg = cli_config(tmp_path, redis_server.url)
    for verb, extra in (("replay", ["--all"]), ("purge", ["--all"])):
        res = dlq_cli(cfg, verb, "--pool", "p", "--fields", *extra)
        assert res.returncode == 2 and "--fields" in res.stderr, res.stderr
