"""Self-tests of the HTTP sink the delivery tests rely on (tests of our test infrastructure)."""
import http.client
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import wait_until


def post(url, body=b"", path="/", headers=None, timeout=10, context=None):
    """(status, headers, body) of a POST with urllib; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url + path, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_sink_records_method_path_headers_and_body(sink):
    status, _, _ = post(sink.url, b'{"a":1}', path="/events/x?y=1",
                        headers={"X-Test": "yes", "Content-Type": "application/json"})
    assert status == 200
    (r,) = sink.wait_count(1)
    assert (r.method, r.path, r.body) == ("POST", "/events/x?y=1", b'{"a":1}')
    assert r.headers["x-test"] == "yes" and r.headers["content-type"] == "application/json"
    assert r.status == 200 and r.peer_port > 0


def test_sink_keeps_connections_alive(sink):
    c = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
    for i in range(3):
        c.request("PUT", f"/k/{i}", body=b"x")
        assert c.getresponse().read() == b"200\n"
    c.close()
    reqs = sink.wait_count(3)
    assert len({r.conn_id for r in reqs}) == 1 and sink.connections == 1


def test_sink_reads_chunked_bodies(sink):
    c = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
    c.request("POST", "/c", body=iter([b"abc", b"defg"]), encode_chunked=True,
              headers={"Transfer-Encoding": "chunked"})
    assert c.getresponse().status == 200
    c.close()
    assert sink.wait_count(1)[0].body == b"abcdefg"


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


def test_sink_fails_a_random_fraction_with_503(sink):
    sink.fail_fraction = 0.5
    codes = [post(sink.url, b"x")[0] for _ in range(60)]
    assert set(codes) == {200, 503}
    sink.fail_fraction = 1.0
    assert post(sink.url)[0] == 503
    sink.fail_fraction = 0.0
    assert post(sink.url)[0] == 200


def test_sink_delays_and_counts_max_concurrency(sink):
    sink.delay = 1.5
    results = []
    threads = [threading.Thread(target=lambda: results.append(post(sink.url, b"d")[0]))
               for _ in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    wait_until(lambda: sink.max_concurrent >= 8, what="8 concurrent requests")
    for t in threads:
        t.join(30)
    assert results == [200] * 8
    assert time.monotonic() - t0 >= 1.5  # a lower bound only: cannot flake
    wait_until(lambda: sink.concurrent == 0, what="no request in progress")


def test_sink_refuses_connections_then_comes_back_on_the_same_port(sink):
    keep = http.client.HTTPConnection("127.0.0.1", sink.port, timeout=10)
    keep.request("GET", "/before")
    assert keep.getresponse().read() == b"200\n"
    port = sink.port
    sink.refuse()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    with pytest.raises((ConnectionError, http.client.HTTPException, OSError)):
        keep.request("GET", "/dropped")  # the established connection was shut down too
        keep.getresponse().read()
    keep.close()
    sink.resume()
    assert sink.port == port
    assert post(sink.url, path="/after")[0] == 200
    assert [r.path for r in sink.snapshot()] == ["/before", "/after"]


def test_sink_mutual_tls_requires_a_client_certificate(sink_factory, certs):
    s = sink_factory(certfile=certs.server_cert, keyfile=certs.server_key, cafile=certs.ca,
                     require_client_cert=True)
    assert s.url.startswith("https://127.0.0.1:")
    good = ssl.create_default_context(cafile=str(certs.ca))
    good.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    assert post(s.url, b"tls", context=good)[0] == 200
    (r,) = s.wait_count(1)
    assert dict(x[0] for x in r.peer_cert["subject"])["commonName"] == "streamfleet-client"

    no_cert = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises((ssl.SSLError, ConnectionError, urllib.error.URLError)):
        post(s.url, b"x", context=no_cert)
    s.wait_for(lambda _: s.tls_errors, what="a recorded TLS handshake failure")
    assert len(s.snapshot()) == 1


def test_sink_certificate_of_another_ca_is_not_trusted(sink_factory, certs):
    rogue = sink_factory(certfile=certs.rogue_server_cert, keyfile=certs.rogue_server_key)
    ctx = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(urllib.error.URLError) as e:
        post(rogue.url, b"x", context=ctx)
    assert isinstance(e.value.reason, ssl.SSLCertVerificationError)
    assert rogue.snapshot() == []
