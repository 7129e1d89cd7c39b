"""A worker dead-letters an entry of more names and values than Lua can pass to XADD (child/
stream.c: DEAD_LETTER_LUA_VALUES): the move reads the entry and sends MULTI; XADD; EVAL check;
EXEC instead of the one script. The dead letter must hold every field, in order, then its
dlq.* fields, and the entry must leave the PEL. Real redis-server, real binary."""
from conftest import add_messages
from reliability_helpers import log_pool, wait_metric, wait_pending


def test_entry_of_8000_values_is_dead_lettered_whole_through_multi_exec(redis_server, fleet):
    r = redis_server.client()
    r.set_response_callback("XRANGE", lambda resp, **kw: resp)  # [id, [f, v...]]: order kept
    fl = fleet({"pool:wide": log_pool("wide", handler="noop", require_fields="must")})
    pairs = [(f"f{i}".encode(), f"v{i}".encode()) for i in range(4000)]    # 8000 values > 7000
    wide = r.execute_command("XADD", "wide", "*", *[x for kv in pairs for x in kv]).decode()
    (narrow,) = add_messages(r, "wide", 1, fields={"n": "1"})
    wait_metric(fl, "streamfleet_messages_dead_lettered_total", "wide", lambda v: v == 2,
                reason="bad_message")
    wait_pending(fl, r, "wide", "wide-group", 0)
    dead = {}
    for _, flat in r.execute_command("XRANGE", "wide:dlq", "-", "+"):
        fields = list(zip(flat[0::2], flat[1::2]))
        meta = dict((k.decode(), v.decode()) for k, v in fields if k.startswith(b"dlq."))
        dead[meta["dlq.id"]] = (fields, meta)
    assert set(dead) == {wide, narrow}
    fields, meta = dead[wide]
    assert fields[:len(pairs)] == pairs, "every field of the entry, in order"
    assert [k for k, _ in fields[len(pairs):]] == [b"dlq.stream", b"dlq.id", b"dlq.reason", b"dlq.attempts",
                                                   b"dlq.error", b"dlq.time"]
    assert meta["dlq.reason"] == "bad_message" and meta["dlq.stream"] == "wide"
    assert dead[narrow][0][0] == (b"n", b"1")
    assert r.info("commandstats")["cmdstat_exec"]["calls"] == 1, "the wide one went by MULTI/EXEC"
