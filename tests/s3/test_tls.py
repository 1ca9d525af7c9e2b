"""TLS features of tollgate beyond "the same over HTTPS" (which test_garage.py's [https] ids
prove: every data-path test there also runs through the HTTPS listener).

  * the chain is verified against the test CA only;
  * several certificates chosen by SNI: exact name, configured *.domain wildcard, names from
    the certificate's SAN, else the first certificate (`tls_target` in conftest.py has three);
  * session resumption (TLS 1.3 tickets and TLS 1.2) and ALPN http/1.1;
  * certificate reload on SIGHUP: a broken file keeps the old certificate, a new one is served
    without a restart, and sessions from before the reload still resume;
  * TLS towards the upstream ([upstream.tls]): a Python TLS forwarder (s3lib.TlsForwarder) in
    front of Garage sees TLS with the configured SNI and the client's requests unchanged, and
    an upstream whose certificate fails verification gets a 502 S3 error, never a request.

Certificates come from the `certs` fixture (openssl). Skipped only with TOLLGATE_DIRECT=1.
"""

from __future__ import annotations

import hashlib
import shutil
import signal
import ssl
import time

import pytest
from botocore.exceptions import ClientError

from conftest import DIRECT, Target, default_key_tiers
from s3lib import RawConn, TlsForwarder, random_bytes, sha256_hex, signed_request

MiB = 1024 * 1024
X509_V_ERR_HOSTNAME_MISMATCH = 62

pytestmark = pytest.mark.skipif(DIRECT, reason="TLS needs tollgate (Garage speaks plain HTTP)")


def _get_root(conn: RawConn, host: str):
    """An unsigned GET / on `conn`: Garage answers it with an S3 error (403), through tollgate."""
    conn.send(f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return conn.read_response()


def _verifying(ca, **versions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    for k, v in versions.items():
        setattr(ctx, k, v)
    return ctx


def _served_der(port: int, sni: str) -> bytes:
    """The leaf certificate the listener serves for `sni` (no verification)."""
    peek = ssl.create_default_context()
    peek.check_hostname = False
    peek.verify_mode = ssl.CERT_NONE
    with RawConn(port, timeout=10, tls=peek, server_hostname=sni) as conn:
        return conn.sock.getpeercert(binary_form=True)


def _wait_for(what: str, cond, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_tls_certificate_is_verified(tls_target):
    # with the test CA: handshake OK, the server name is checked, an S3 answer comes back
    with tls_target.raw(timeout=10) as conn:
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3")
        conn.send(f"GET / HTTP/1.1\r\nHost: {tls_target.host_header}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        r = conn.read_response()
        assert 200 <= r.status < 500 and r.status not in (429,), r
    # without it: verification fails (so the clients below really check the chain)
    with pytest.raises(ssl.SSLCertVerificationError):
        RawConn(tls_target.port, host="127.0.0.1", timeout=10,
                tls=ssl.create_default_context(), server_hostname="localhost")


# ----------------------------------------------------------------------------- SNI

SNI_CASES = [
    # (name sent as SNI, certificate expected, whether it verifies for that name)
    ("localhost", "localhost", True),
    ("s3.test", "s3.test", True),                    # matched by the certificate's SAN
    ("bucket.example.test", "wildcard", True),       # configured server_names "*.example.test"
    ("Photos.Example.TEST", "wildcard", True),       # SNI is case-insensitive
    ("127.0.0.1", "localhost", True),                # an IP is not sent as SNI: the default
    ("unknown.test", "localhost", False),            # no match: the first certificate
    ("a.b.example.test", "localhost", False),        # a wildcard covers one label only
    ("example.test", "localhost", False),            # in the wildcard cert's SAN, but its
]                                                    # configured server_names win


@pytest.mark.parametrize("sni,expected,verifies", SNI_CASES,
                         ids=[f"{s}->{e}" for s, e, _ in SNI_CASES])
def test_tls_sni_selects_certificate(tls_target, certs, sni, expected, verifies):
    servers = certs["servers"]
    # which certificate is served (no verification here, so a wrong one can be looked at)
    der = _served_der(tls_target.port, sni)
    served = [n for n, c in servers.items() if c["der"] == der] or ["a certificate not made here"]
    assert served == [expected], f"SNI {sni!r}: served {served[0]}, expected {expected}"

    # a verifying client: the chain always checks out; the name only where expected
    ctx = _verifying(certs["ca"])
    if verifies:
        with RawConn(tls_target.port, timeout=10, tls=ctx, server_hostname=sni) as conn:
            sans = conn.sock.getpeercert()["subjectAltName"]
            want = tuple(("IP Address" if k == "IP" else k, v)
                         for k, v in (s.split(":", 1) for s in servers[expected]["sans"]))
            assert sans == want
            r = _get_root(conn, f"{sni}:{tls_target.port}")
            assert 400 <= r.status < 500 and r.xml_code(), r  # Garage's S3 error, via tollgate
    else:
        with pytest.raises(ssl.SSLCertVerificationError) as e:
            RawConn(tls_target.port, timeout=10, tls=ctx, server_hostname=sni)
        assert e.value.verify_code == X509_V_ERR_HOSTNAME_MISMATCH, e.value


# ----------------------------------------------------------------------------- resumption, ALPN


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2],
                         ids=["tls1.3", "tls1.2"])
def test_tls_session_resumption(tls_target, version):
    """Six connections, each offering the session of the one before: every one after the first
    resumes. The ticket key and session cache are shared by the worker cores, so it holds
    whichever core (SO_REUSEPORT) accepts each connection."""
    ctx = _verifying(tls_target.ca, minimum_version=version, maximum_version=version)
    session, reused = None, []
    for _ in range(6):
        with RawConn(tls_target.port, timeout=10, tls=ctx, server_hostname="localhost",
                     session=session) as conn:
            assert conn.sock.version() == version.name.replace("_", ".")
            # a TLS 1.3 ticket arrives after the handshake: read an answer before taking it
            r = _get_root(conn, tls_target.host_header)
            assert 400 <= r.status < 500 and r.xml_code(), r
            reused.append(conn.sock.session_reused)
            session = conn.sock.session
            assert session is not None
    assert reused == [False] + [True] * 5


def test_tls_alpn_http11(tls_target):
    def connect(protocols, **versions):
        ctx = _verifying(tls_target.ca, **versions)
        if protocols is not None:
            ctx.set_alpn_protocols(protocols)
        return RawConn(tls_target.port, timeout=10, tls=ctx, server_hostname="localhost")

    with connect(["h2", "http/1.1"]) as conn:
        assert conn.sock.selected_alpn_protocol() == "http/1.1"
        assert _get_root(conn, tls_target.host_header).xml_code()
    with connect(None) as conn:  # no ALPN offered: no ALPN answered, HTTP/1.1 works
        assert conn.sock.selected_alpn_protocol() is None
        assert _get_root(conn, tls_target.host_header).xml_code()
    # only h2 offered: the handshake is refused (RFC 7301: no_application_protocol alert)
    with pytest.raises(ssl.SSLError, match="(?i)no.application.protocol"):
        connect(["h2"], maximum_version=ssl.TLSVersion.TLSv1_2)
    # Over TLS 1.3 it is refused too, but the alert is lost: rustls queues it after the
    # ServerHello and monoio-rustls 0.4 writes only the first queued record on a handshake
    # error, so the client sees a truncated record / EOF. Asserted loosely on purpose.
    with pytest.raises(ssl.SSLError):
        connect(["h2"], minimum_version=ssl.TLSVersion.TLSv1_3)


def test_tls_certificate_reload_on_sighup(garage, certs, tollgate_factory, tmp_path):
    srv = certs["servers"]
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"

    def install(name):
        shutil.copy(srv[name]["cert"], cert)
        shutil.copy(srv[name]["key"], key)

    install("localhost")
    tg = tollgate_factory([garage.addr], default_key_tiers(garage),
                          tls={"cert": cert, "key": key})
    try:
        port = tg.tls_port
        assert _served_der(port, "localhost") == srv["localhost"]["der"]
        ctx = _verifying(certs["ca"], minimum_version=ssl.TLSVersion.TLSv1_3)
        with RawConn(port, timeout=10, tls=ctx, server_hostname="localhost") as conn:
            assert _get_root(conn, f"localhost:{port}").xml_code()
            session = conn.sock.session

        # a broken certificate file: the reload fails and the old certificate stays
        cert.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                        "-----END CERTIFICATE-----\n")
        tg.proc.send_signal(signal.SIGHUP)
        _wait_for("the failed reload in the log",
                  lambda: "TLS certificate reload failed" in tg.log.read_text())
        assert _served_der(port, "localhost") == srv["localhost"]["der"]

        # a new valid pair: served to new connections, no restart
        install("s3.test")
        tg.proc.send_signal(signal.SIGHUP)
        _wait_for("the s3.test certificate to be served",
                  lambda: _served_der(port, "s3.test") == srv["s3.test"]["der"])
        with RawConn(port, timeout=10, tls=_verifying(certs["ca"]),
                     server_hostname="s3.test") as conn:
            assert _get_root(conn, f"s3.test:{port}").xml_code()
        # the session from before both reloads still resumes (same ticket key)
        with RawConn(port, timeout=10, tls=ctx, server_hostname="localhost",
                     session=session) as conn:
            assert conn.sock.session_reused
            assert _get_root(conn, f"localhost:{port}").xml_code()
        assert tg.alive()
    finally:
        tg.stop()


# ----------------------------------------------------------------------------- TLS upstream


@pytest.fixture(scope="module")
def tls_upstream(garage, certs):
    """Garage behind a TLS forwarder whose certificate (upstream.test) the test CA signed."""
    up = certs["servers"]["upstream"]
    with TlsForwarder(up["cert"], up["key"], garage.port) as fwd:
        yield fwd


@pytest.fixture(scope="module")
def upstream_tls_target(garage, certs, tls_upstream, tollgate_factory):
    """tollgate (plain listener) → TLS → tls_upstream → Garage."""
    tg = tollgate_factory([tls_upstream.addr], default_key_tiers(garage),
                          upstream_tls={"ca_file": certs["ca"], "server_name": "upstream.test"})
    yield Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)
    tg.stop()  # before the forwarder goes


def test_upstream_tls_carries_s3_requests(upstream_tls_target, tls_upstream, obj_key):
    t = upstream_tls_target
    c = t.client()
    data = random_bytes(3 * MiB + 1)
    put = c.put_object(Bucket=t.bucket, Key=obj_key, Body=data)
    assert put["ETag"].strip('"') == hashlib.md5(data).hexdigest()
    got = c.get_object(Bucket=t.bucket, Key=obj_key)
    assert sha256_hex(got["Body"].read()) == sha256_hex(data)
    with t.raw() as conn:  # HEAD framing over the TLS upstream, then the connection goes on
        conn.send(signed_request(t, "HEAD", obj_key).head_bytes())
        h = conn.read_response("HEAD")
        assert h.status == 200 and h.header("Content-Length") == str(len(data))
        assert conn.pending_bytes(0.5) == b""
        conn.send(signed_request(t, "DELETE", obj_key).head_bytes())
        assert conn.read_response("DELETE").status == 204
    with pytest.raises(ClientError) as e:
        c.get_object(Bucket=t.bucket, Key=obj_key)
    assert e.value.response["Error"]["Code"] == "NoSuchKey"

    # what the upstream saw: TLS 1.3 with SNI = the configured server_name, ALPN http/1.1 ...
    done = [r for r in tls_upstream.records if r.version]
    assert done, "no TLS connection reached the upstream"
    assert {(r.sni, r.version, r.alpn) for r in done} == {("upstream.test", "TLSv1.3",
                                                           "http/1.1")}
    assert [r.error for r in tls_upstream.records if r.error] == []
    # ... and the client's requests, request line and Host unchanged
    sent = tls_upstream.sent_by_client()
    for method in ("PUT", "GET", "HEAD", "DELETE"):
        assert f"{method} /{t.bucket}/{obj_key} HTTP/1.1\r\n".encode() in sent, method
    assert f"\r\nhost: 127.0.0.1:{t.port}\r\n".encode() in sent.lower()


@pytest.mark.parametrize("case", ["untrusted-ca", "wrong-name"])
def test_upstream_tls_bad_certificate_is_502(garage, certs, tollgate_factory, case):
    """The upstream's certificate is signed by another CA, or is valid but for another name:
    tollgate aborts the handshake, sends it no request and answers the client 502 BadGateway.
    Health checks off, so the node stays in rotation and the connect failure itself shows;
    max_retries = 0 because with retries left and no other node to try, tollgate answers
    503 "No healthy upstream" instead (src/proxy/conn.rs: the retry loop's pick() excludes the
    node that just failed; reported as a bug, not asserted here)."""
    srv = certs["servers"]["rogue-upstream" if case == "untrusted-ca" else "upstream"]
    server_name = "upstream.test" if case == "untrusted-ca" else "s3.test"
    with TlsForwarder(srv["cert"], srv["key"], garage.port) as fwd:
        tg = tollgate_factory([fwd.addr], default_key_tiers(garage), health=False,
                              upstream_toml="max_retries = 0",
                              upstream_tls={"ca_file": certs["ca"], "server_name": server_name},
                              wait_upstream=False)
        try:
            t = Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)
            with t.raw(timeout=15) as conn:
                conn.send(signed_request(t, "GET", "some-key").head_bytes())
                r = conn.read_response()
            assert r.status == 502, (r.status, r.body)
            assert r.xml_code() == "BadGateway", r.body
            assert "xml" in (r.header("Content-Type") or "")
            # the upstream saw a handshake that tollgate broke off, and no request. (Which
            # alert cannot be checked: tollgate's fatal alert is lost in TLS 1.3, the peer
            # gets a truncated record; see test_tls_alpn_http11.)
            deadline = time.monotonic() + 5  # the forwarder's thread records it
            while not fwd.records or any(x.error is None for x in fwd.records):
                assert time.monotonic() < deadline, fwd.records
                time.sleep(0.05)
            assert [x.version for x in fwd.records] == [None] * len(fwd.records)
            assert all(x.error.startswith("SSL") for x in fwd.records), fwd.records
            assert fwd.sent_by_client() == b""
        finally:
            tg.stop()
