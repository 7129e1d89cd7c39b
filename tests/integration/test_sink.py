"""The two checks of the HTTP sink that product tests rely on without being able to see a fault.

Only what a broken sink would turn into a wrong pass of a product test is checked here: that
sink.connections and conn_id count TCP connections (the keep-alive bounds of
test_http.py::test_inflight_32_... would hold for a sink that never counts), and that rules
match by body, path and count and send their Retry-After (the Retry-After timing tests of
test_http.py and test_reliability.py would measure plain backoff otherwise). What a broken
sink would make product tests fail on loudly (recording, TLS, refusing, delays) is not
tested twice."""
import http.client
import urllib.error
import urllib.request

from conftest import wait_until


def post(url, body=b"", path="/", headers=None, timeout=10):
    """(status, headers, body) of a POST with urllib; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url + path, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_sink_counts_tcp_connections_and_tells_kept_alive_ones_apart(sink):
    conns = [http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10) for _ in range(2)]
    for i in range(3):
        for n, c in enumerate(conns):
            c.request("PUT", f"/k/{n}/{i}", body=b"x")
            assert c.getresponse().read() == b"200\n"
    for c in conns:
        c.close()
    reqs = sink.wait_count(6)
    by_conn = {}
    for r in reqs:
        by_conn.setdefault(r.conn_id, set()).add(r.path.split("/")[2])
    assert sorted(by_conn.values()) == [{"0"}, {"1"}], by_conn
    wait_until(lambda: sink.connections == 2, what="2 connections counted")


def test_sink_rules_by_body_path_and_count_and_retry_after(sink):
    sink.rule(422, body_contains=b"poison")
    sink.rule(503, path="/flaky*", times=2, retry_after="1")
    sink.retry_after = "7"
    sink.rule(500, path="/broken")
    assert post(sink.url, b"a poison pill")[0] == 422
    assert post(sink.url, b"fine")[0] == 200
    s1, h1, _ = post(sink.url, path="/flaky/1")
    s2, _, _ = post(sink.url, path="/flaky/2")
    s3, _, _ = post(sink.url, path="/flaky/3")
    assert (s1, s2, s3) == (503, 503, 200) and h1["Retry-After"] == "1"
    s, h, _ = post(sink.url, path="/broken")
    assert s == 500 and h["Retry-After"] == "7"
    sink.clear_rules()
    sink.status = 204
    assert post(sink.url, b"poison")[0] == 204
