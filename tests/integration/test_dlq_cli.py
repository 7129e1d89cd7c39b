"""Integration tests of the dead-letter tooling (issue 4): `streamfleet dlq list|replay|purge`,
the real binary against a real redis-server (and, where the replayed message must be delivered,
a running fleet and the HTTP sink)."""
import time

from conftest import add_messages, free_port, write_ini
from reliability_helpers import (by_webhook_id, dlq_cli, dlq_entries, http_pool, log_pool,
                                 wait_pending)


def cli_config(tmp_path, redis_url, pool="p", stream="src", **extra):
    return write_ini(tmp_path / "dlq.ini", {
        "fleet": {"redis": redis_url, "listen": f"127.0.0.1:{free_port()}"},
        f"pool:{pool}": log_pool(stream, **extra)})


def fake_dead_letter(client, dlq, fields, source_id="1-1", reason="http_422", attempts=1,
                     error="http 422: refused by the endpoint", when_ms=None, entry_id="*",
                     stream="src"):
    """XADD a dead letter as the fleet writes them: the original fields, then dlq.*."""
    when_ms = int(time.time() * 1000) if when_ms is None else when_ms
    f = dict(fields)
    f.update({"dlq.stream": stream, "dlq.id": source_id, "dlq.reason": reason,
              "dlq.attempts": str(attempts), "dlq.error": error, "dlq.time": str(when_ms)})
    return client.xadd(dlq, f, id=entry_id).decode()


def source_entries(client, stream="src"):
    return [(i.decode(), [(k.decode(), v.decode()) for k, v in f.items()])
            for i, f in client.xrange(stream)]


# --------------------------------------------------------------------------------------------
# list
# --------------------------------------------------------------------------------------------

def test_list_shows_reason_attempts_error_and_source_id_of_each_dead_letter(
        redis_server, sink, fleet):
    sink.rule(422, body_contains=b"poison")
    sink.rule(500, body_contains=b"flaky")
    r = redis_server.client()
    fl = fleet({"pool:orders": http_pool(sink, "orders", body_field="payload", max_attempts=2,
                                         backoff_base="100ms", backoff_jitter="0%")})
    poison, flaky = add_messages(r, "orders", 2,
                                 fields=lambda i: {"type": "t", "payload": ["poison", "flaky"][i]})
    fl.wait_for(lambda: len(dlq_entries(r, "orders:dlq")) == 2, what="two dead letters")
    res = dlq_cli(fl.config_path, "list", "--pool", "orders")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert "REASON" in lines[0] and "ATTEMPTS" in lines[0] and "ERROR" in lines[0]
    by_source = {}
    for line in lines[1:-1]:
        cols = line.split()
        by_source[cols[5]] = line
    assert set(by_source) == {poison, flaky}, res.stdout
    assert "http_422" in by_source[poison] and " 1 " in by_source[poison]
    assert "refused by the endpoint" in by_source[poison]
    assert "max_attempts" in by_source[flaky] and " 2 " in by_source[flaky]
    assert "http 500" in by_source[flaky]
    assert time.strftime("%Y-%m-%d", time.gmtime()) in by_source[poison], "the time, UTC"
    assert lines[-1] == "2 dead letters in orders:dlq"


def test_list_count_limits_the_entries_shown(redis_server, tmp_path):
    r = redis_server.client()
    for i in range(5):
        fake_dead_letter(r, "src:dlq", {"n": str(i)}, source_id=f"{i + 1}-0")
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "list", "--pool", "p", "--count", "2")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 1 + 2 + 1
    assert res.stdout.splitlines()[-1] == "2 of 5 dead letters in src:dlq"
    empty = cli_config(tmp_path, redis_server.url, stream="other")
    res = dlq_cli(empty, "list", "--pool", "p")
    assert res.returncode == 0 and res.stdout.splitlines()[-1] == "0 dead letters in other:dlq"


def test_list_uses_the_pools_configured_dlq_key(redis_server, tmp_path):
    r = redis_server.client()
    fake_dead_letter(r, "custom-dead", {"n": "1"}, source_id="5-0", reason="too_large")
    cfg = cli_config(tmp_path, redis_server.url, dlq="custom-dead")
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode == 0, res.stderr
    assert "too_large" in res.stdout and "5-0" in res.stdout
    assert res.stdout.splitlines()[-1] == "1 dead letter in custom-dead"


# --------------------------------------------------------------------------------------------
# replay
# --------------------------------------------------------------------------------------------

def test_replayed_dead_letter_goes_back_without_dlq_fields_and_is_delivered(redis_server, sink, fleet):
    sink.rule(422, body_contains=b"poison", times=1)
    r = redis_server.client()
    fl = fleet({"pool:orders": http_pool(sink, "orders", body_field="payload")})
    fields = {"type": "t", "payload": "poison", "customer": "c-17"}
    (orig,) = add_messages(r, "orders", 1, fields=fields)
    fl.wait_for(lambda: dlq_entries(r, "orders:dlq"), what="dead-lettered")
    ((dlq_id, _),) = dlq_entries(r, "orders:dlq")
    res = dlq_cli(fl.config_path, "replay", "--pool", "orders", dlq_id)
    assert res.returncode == 0, res.stderr
    new = [i for i, _ in source_entries(r, "orders") if i != orig]
    assert len(new) == 1
    assert f"{dlq_id} -> orders {new[0]}" in res.stdout
    assert "replayed 1 dead letter to orders" in res.stdout
    assert source_entries(r, "orders")[-1][1] == list(fields.items()), "original fields only, in order"
    assert dlq_entries(r, "orders:dlq") == [], "removed from the dead-letter stream"
    fl.wait_for(lambda: new[0] in by_webhook_id(sink.snapshot(), status=200),
                what="the replayed message delivered by the running fleet")
    wait_pending(fl, r, "orders", "orders-group", 0)
    assert dlq_entries(r, "orders:dlq") == []


def test_replay_all_puts_every_dead_letter_back(redis_server, tmp_path):
    r = redis_server.client()
    n = 150         # more than one page of the replay loop
    for i in range(n):
        fake_dead_letter(r, "src:dlq", {"n": str(i), "kind": "k"}, source_id=f"{i + 1}-0")
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "replay", "--pool", "p", "--all")
    assert res.returncode == 0, res.stderr
    assert f"replayed {n} dead letters to src" in res.stdout
    assert r.xlen("src:dlq") == 0
    back = source_entries(r)
    assert [f for _, f in back] == [[("n", str(i)), ("kind", "k")] for i in range(n)], \
        "in their order, without dlq.* fields"


def test_replay_of_an_unknown_id_fails_and_replays_nothing(redis_server, tmp_path):
    r = redis_server.client()
    known = fake_dead_letter(r, "src:dlq", {"n": "1"})
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "replay", "--pool", "p", known, "12345-0")
    assert res.returncode != 0
    assert "no dead letter 12345-0 in src:dlq" in res.stderr
    assert r.xlen("src:dlq") == 1 and r.exists("src") == 0, "a typo must not replay half a list"
    res = dlq_cli(cfg, "replay", "--pool", "p", "not-an-id")
    assert res.returncode != 0 and "not-an-id" in res.stderr
    assert r.xlen("src:dlq") == 1


def test_replay_of_a_dead_letter_without_original_fields_fails_and_keeps_it(redis_server, tmp_path):
    r = redis_server.client()
    bare = fake_dead_letter(r, "src:dlq", {})
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "replay", "--pool", "p", bare)
    assert res.returncode != 0 and "no original fields" in res.stderr
    assert r.xlen("src:dlq") == 1 and r.exists("src") == 0


# --------------------------------------------------------------------------------------------
# purge
# --------------------------------------------------------------------------------------------

def test_purge_all_empties_the_dead_letter_stream(redis_server, tmp_path):
    r = redis_server.client()
    for i in range(7):
        fake_dead_letter(r, "src:dlq", {"n": str(i)})
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "purge", "--pool", "p", "--all")
    assert res.returncode == 0, res.stderr
    assert "purged 7 dead letters from src:dlq" in res.stdout
    assert r.xlen("src:dlq") == 0


def test_purge_before_removes_only_older_dead_letters(redis_server, tmp_path):
    r = redis_server.client()
    now = int(time.time() * 1000)
    old = [fake_dead_letter(r, "src:dlq", {"n": str(i)}, entry_id=f"{now - 3 * 3600_000 + i}-0")
           for i in range(3)]
    recent = [fake_dead_letter(r, "src:dlq", {"n": f"r{i}"}, entry_id=f"{now - 600_000 + i}-0")
              for i in range(2)]
    cfg = cli_config(tmp_path, redis_server.url)
    res = dlq_cli(cfg, "purge", "--pool", "p", "--before", "1h")
    assert res.returncode == 0, res.stderr
    assert "purged 3 dead letters from src:dlq" in res.stdout
    assert [i for i, _ in dlq_entries(r, "src:dlq")] == recent
    assert old


# --------------------------------------------------------------------------------------------
# mistakes: a clear message and a non-zero exit
# --------------------------------------------------------------------------------------------

def test_bad_pool_name_exits_non_zero_with_a_clear_message(redis_server, tmp_path):
    cfg = cli_config(tmp_path, redis_server.url)
    for verb, extra in (("list", []), ("replay", ["--all"]), ("purge", ["--all"])):
        res = dlq_cli(cfg, verb, "--pool", "nope", *extra)
        assert res.returncode != 0, verb
        assert "no pool named 'nope'" in res.stderr, res.stderr


def test_unreachable_redis_exits_non_zero_with_a_clear_message(tmp_path):
    port = free_port()
    cfg = cli_config(tmp_path, f"redis://:S3cret-pw-x@127.0.0.1:{port}/0")
    for verb, extra in (("list", []), ("replay", ["--all"]), ("purge", ["--all"])):
        res = dlq_cli(cfg, verb, "--pool", "p", *extra, timeout=30)
        assert res.returncode != 0, verb
        assert "cannot connect to redis" in res.stderr and str(port) in res.stderr, res.stderr
        assert "S3cret-pw-x" not in res.stderr + res.stdout


def test_wrong_redis_password_exits_non_zero_without_printing_it(redis_factory, tmp_path):
    srv = redis_factory(password="right-pw-1")
    cfg = cli_config(tmp_path, f"redis://:Wrong-pw-2@127.0.0.1:{srv.port}/0")
    res = dlq_cli(cfg, "list", "--pool", "p")
    assert res.returncode != 0
    assert "refused our credentials" in res.stderr, res.stderr
    assert "Wrong-pw-2" not in res.stderr + res.stdout


def test_usage_mistakes_exit_2_with_a_message(redis_server, tmp_path):
    cfg = cli_config(tmp_path, redis_server.url)
    cases = [
        (["replay", "--pool", "p"], "needs --all or IDs"),
        (["replay", "--pool", "p", "--all", "1-0"], "needs --all or IDs"),
        (["purge", "--pool", "p"], "exactly one of --all or --before"),
        (["purge", "--pool", "p", "--all", "--before", "1h"], "exactly one of --all or --before"),
        (["purge", "--pool", "p", "--before", "soon"], "not a duration"),
        (["list", "--pool", "p", "--count", "0"], "--count"),
        (["list"], "usage"),
        (["explode", "--pool", "p"], "usage"),
    ]
    for args, msg in cases:
        res = dlq_cli(cfg, *args)
        assert res.returncode == 2, (args, res.returncode, res.stderr)
        assert msg in res.stderr, (args, res.stderr)


def test_missing_config_file_exits_non_zero(tmp_path):
    res = dlq_cli(tmp_path / "nope.ini", "list", "--pool", "p")
    assert res.returncode != 0 and "nope.ini" in res.stderr
