"""Helpers for tollgate's real-client S3 tests: hand-made AWS signatures (SigV4 headers,
SigV4 aws-chunked streaming, SigV2), a small raw HTTP/1.1 client that shows exactly what
is on the wire (HEAD bodies, 100 Continue, pipelining), and process/port utilities.

Only the standard library is used here, so a signature bug cannot hide behind botocore.
"""

from __future__ import annotations

import base64
import datetime as _dt
import hashlib
import hmac
import os
import socket
import ssl
import select
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from urllib.parse import quote

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
UNSIGNED = "UNSIGNED-PAYLOAD"
STREAMING = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


# ----------------------------------------------------------------------------- small utils


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float, proc: subprocess.Popen | None = None,
              what: str = "server", log: Path | None = None) -> None:
    """Wait until 127.0.0.1:port accepts TCP; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before opening port {port}"
                               + log_tail(log))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not open port {port} within {timeout}s" + log_tail(log))
        time.sleep(0.05)


def log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not Path(log).exists():
        return ""
    text = Path(log).read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- last {len(text)} lines of {log} ---\n" + "\n".join(text)


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process by its PID, wait, then SIGKILL. Never signals anything else."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# ----------------------------------------------------------------------------- SigV4


def _hmac(key: bytes, msg: str | bytes) -> bytes:
    if isinstance(msg, str):
        msg = msg.encode()
    return hmac.new(key, msg, hashlib.sha256).digest()


def uri_encode(s: str, keep_slash: bool) -> str:
    return quote(s, safe="-_.~" + ("/" if keep_slash else ""))


def canonical_query(query: list[tuple[str, str]]) -> str:
    pairs = sorted((uri_encode(k, False), uri_encode(v, False)) for k, v in query)
    return "&".join(f"{k}={v}" for k, v in pairs)


@dataclass
class Signed:
    """A signed request head: `target` is the request-target, `headers` in send order."""
    method: str
    target: str
    headers: list[tuple[str, str]]
    signature: str
    amz_date: str
    scope: str
    signing_key: bytes = field(repr=False)

    def head_bytes(self, extra: list[tuple[str, str]] | None = None) -> bytes:
        lines = [f"{self.method} {self.target} HTTP/1.1"]
        lines += [f"{k}: {v}" for k, v in self.headers + (extra or [])]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


class SigV4:
    """AWS Signature Version 4 for S3 (header form), written from the public spec."""

    def __init__(self, access_key: str, secret: str, region: str, service: str = "s3"):
        self.access_key = access_key
        self.secret = secret
        self.region = region
        self.service = service

    def key_for(self, date: str) -> bytes:
        k = _hmac(("AWS4" + self.secret).encode(), date)
        k = _hmac(k, self.region)
        k = _hmac(k, self.service)
        return _hmac(k, "aws4_request")

    def sign(self, method: str, host: str, path: str, query: list[tuple[str, str]] | None = None,
             headers: list[tuple[str, str]] | None = None, payload_hash: str = UNSIGNED,
             now: _dt.datetime | None = None) -> Signed:
        """Sign `host`, `x-amz-date`, `x-amz-content-sha256` and every header in `headers`.
        Headers added later (e.g. Expect, Connection) stay unsigned, as real SDKs do."""
        now = now or _dt.datetime.now(_dt.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        query = query or []
        hdrs = [("Host", host), ("x-amz-date", amz_date), ("x-amz-content-sha256", payload_hash)]
        hdrs += list(headers or [])
        canon = sorted((k.lower(), " ".join(str(v).split())) for k, v in hdrs)
        signed_names = ";".join(k for k, _ in canon)
        canon_headers = "".join(f"{k}:{v}\n" for k, v in canon)
        cquery = canonical_query(query)
        cpath = uri_encode(path, True)
        creq = "\n".join([method, cpath, cquery, canon_headers, signed_names, payload_hash])
        scope = f"{date}/{self.region}/{self.service}/aws4_request"
        sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, sha256_hex(creq.encode())])
        skey = self.key_for(date)
        sig = hmac.new(skey, sts.encode(), hashlib.sha256).hexdigest()
        auth = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                f"SignedHeaders={signed_names}, Signature={sig}")
        target = cpath + (("?" + cquery) if cquery else "")
        return Signed(method, target, hdrs + [("Authorization", auth)], sig, amz_date, scope, skey)


def signed_request(target, method: str, key: str, payload_hash: str = UNSIGNED,
                   headers=None, secret: str | None = None, query=None,
                   key_name: str = "premium") -> Signed:
    """SigV4-sign `method /<bucket>/<key>` for a conftest Target (its keys, region, Host)."""
    k = target.keys[key_name]
    signer = SigV4(k.id, secret or k.secret, target.region)
    return signer.sign(method, target.host_header, f"/{target.bucket}/{key}", query=query,
                       headers=headers, payload_hash=payload_hash)


def aws_chunked_body(signed: Signed, data: bytes, chunk_size: int) -> bytes:
    """Encode `data` as aws-chunked with chained chunk signatures, starting from the seed
    signature of `signed` (which must have been signed with payload hash STREAMING)."""
    assert chunk_size > 0
    out = bytearray()
    prev = signed.signature
    chunks = [data[i:i + chunk_size] for i in range(0, len(data), chunk_size)] + [b""]
    for chunk in chunks:
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", signed.amz_date, signed.scope, prev,
                         EMPTY_SHA256, sha256_hex(chunk)])
        sig = hmac.new(signed.signing_key, sts.encode(), hashlib.sha256).hexdigest()
        out += f"{len(chunk):x};chunk-signature={sig}\r\n".encode() + chunk + b"\r\n"
        prev = sig
    return bytes(out)


def aws_chunked_length(data_len: int, chunk_size: int) -> int:
    """Content-Length of the aws-chunked encoding (signature = 64 hex chars)."""
    n = 0
    sizes = [chunk_size] * (data_len // chunk_size)
    if data_len % chunk_size:
        sizes.append(data_len % chunk_size)
    for s in sizes + [0]:
        n += len(f"{s:x}") + len(";chunk-signature=") + 64 + 2 + s + 2
    return n


def crc32_b64(data: bytes) -> str:
    """The x-amz-checksum-crc32 value: base64 of the big-endian CRC32."""
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def unsigned_trailer_body(data: bytes, chunk_size: int, trailer: tuple[str, str]) -> bytes:
    """aws-chunked without chunk signatures, ending with one trailer header (what AWS SDKs send
    over HTTPS for STREAMING-UNSIGNED-PAYLOAD-TRAILER with a flexible checksum)."""
    out = bytearray()
    for i in range(0, len(data), chunk_size):
        chunk = data[i:i + chunk_size]
        out += f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    out += f"0\r\n{trailer[0]}:{trailer[1]}\r\n\r\n".encode()
    return bytes(out)


# ----------------------------------------------------------------------------- SigV2


def sign_v2(method: str, path: str, access_key: str, secret: str,
            headers: list[tuple[str, str]] | None = None, content_md5: str = "",
            content_type: str = "") -> list[tuple[str, str]]:
    """AWS Signature Version 2 (header form) for a path-style request without sub-resources."""
    date = formatdate(usegmt=True)
    amz = sorted((k.lower(), v.strip()) for k, v in (headers or []) if k.lower().startswith("x-amz-"))
    canon_amz = "".join(f"{k}:{v}\n" for k, v in amz)
    sts = f"{method}\n{content_md5}\n{content_type}\n{date}\n{canon_amz}{path}"
    sig = base64.b64encode(hmac.new(secret.encode(), sts.encode(), hashlib.sha1).digest()).decode()
    out = [("Date", date)] + list(headers or [])
    if content_md5:
        out.append(("Content-MD5", content_md5))
    if content_type:
        out.append(("Content-Type", content_type))
    out.append(("Authorization", f"AWS {access_key}:{sig}"))
    return out


# ----------------------------------------------------------------------------- raw HTTP/1.1


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def xml_code(self) -> str | None:
        text = self.body.decode(errors="replace")
        a, b = text.find("<Code>"), text.find("</Code>")
        return text[a + 6:b] if a >= 0 and b > a else None


class RawConn:
    """One client connection; sends bytes as given and parses responses strictly."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 30.0,
                 tls: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 session: ssl.SSLSession | None = None, source: str | None = None):
        """`source`: the local address to connect from (e.g. 127.0.0.2: another client)."""
        sock = socket.create_connection((host, port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            try:
                sock = tls.wrap_socket(sock, server_hostname=server_hostname or host,
                                       session=session)
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.buf = bytearray()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def _read_until(self, sep: bytes) -> bytes:
        while True:
            i = self.buf.find(sep)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + len(sep)]
                return out
            if not self._fill():
                raise ConnectionError(f"connection closed while waiting for {sep!r}; "
                                      f"have {bytes(self.buf[:200])!r}")

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError(f"connection closed after {len(self.buf)} of {n} body bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_response(self, method: str = "GET") -> Response:
        """Read one response (a 1xx interim response is returned as such, without body)."""
        head = self._read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, status, *reason = lines[0].split(" ", 2)
        assert version in ("HTTP/1.1", "HTTP/1.0"), f"bad status line {lines[0]!r}"
        status = int(status)
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        resp = Response(status, reason[0] if reason else "", headers, b"")
        if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
            return resp
        te = (resp.header("Transfer-Encoding") or "").lower()
        cl = resp.header("Content-Length")
        if "chunked" in te:
            body = bytearray()
            while True:
                size = int(self._read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self._read_until(b"\r\n"):  # trailers
                        pass
                    break
                body += self._read_exact(size)
                assert self._read_exact(2) == b"\r\n"
            resp.body = bytes(body)
        elif cl is not None:
            resp.body = self._read_exact(int(cl))
        else:
            while self._fill():
                pass
            resp.body = bytes(self.buf)
            self.buf.clear()
        return resp

    def pending_bytes(self, wait: float) -> bytes:
        """Whatever arrives within `wait` seconds beyond what was parsed (b'' if none)."""
        out = bytes(self.buf)
        self.buf.clear()
        old = self.sock.gettimeout()
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(1 << 16)
            out += chunk
        except (socket.timeout, TimeoutError):
            pass
        finally:
            self.sock.settimeout(old)
        return out


# ----------------------------------------------------------------------------- TLS upstream


@dataclass
class TlsConnRecord:
    """What a TlsForwarder saw on one accepted connection."""
    sni: str | None = None
    version: str | None = None
    alpn: str | None = None
    error: str | None = None  # the handshake failed: why (e.g. the client's alert)
    data: bytearray = field(default_factory=bytearray)  # decrypted bytes from the client


class TlsForwarder:
    """A small stunnel: accepts TLS on 127.0.0.1 (certificate `cert`/`key`, ALPN http/1.1) and
    forwards the decrypted bytes to plain TCP 127.0.0.1:`dest_port` and back, so a plain S3
    server can stand in for a TLS upstream. Records every connection (SNI, protocol, handshake
    error, the client's bytes up to `keep_bytes` in all). Bounded: every socket has a timeout,
    a connection lives at most `max_conn_seconds`, and stop() closes everything and joins
    every thread it started (use it as a context manager)."""

    def __init__(self, cert: Path, key: Path, dest_port: int, max_conn_seconds: float = 60.0,
                 keep_bytes: int = 16 << 20):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        self.ctx.set_alpn_protocols(["http/1.1"])
        self.ctx.sni_callback = self._on_sni
        self.dest_port = dest_port
        self.max_conn_seconds = max_conn_seconds
        self.keep_bytes = keep_bytes
        self.records: list[TlsConnRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop)

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _track(self, s: socket.socket) -> socket.socket:
        with self._lock:
            self._socks.add(s)
        return s

    @staticmethod
    def _on_sni(sslsock, name, _ctx):
        sslsock.sni_seen = name  # the SSLSocket being handshaken; read back in _serve

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            conn.settimeout(10)
            self._spawn(self._serve, self._track(conn))

    def _serve(self, raw: socket.socket) -> None:
        rec = TlsConnRecord()
        with self._lock:
            self.records.append(rec)
        tls = up = None
        try:
            try:
                tls = self._track(self.ctx.wrap_socket(raw, server_side=True))
            except (ssl.SSLError, OSError) as e:
                rec.error = f"{type(e).__name__}: {e}"
                return
            rec.sni = getattr(tls, "sni_seen", None)
            rec.version = tls.version()
            rec.alpn = tls.selected_alpn_protocol()
            up = self._track(socket.create_connection(("127.0.0.1", self.dest_port), timeout=10))
            deadline = time.monotonic() + self.max_conn_seconds
            while not self._stop.is_set() and time.monotonic() < deadline:
                ready = [] if tls.pending() else select.select([tls, up], [], [], 0.2)[0]
                if tls.pending() or tls in ready:
                    data = tls.recv(1 << 16)
                    if not data:
                        break
                    if len(rec.data) < self.keep_bytes:
                        rec.data += data[:self.keep_bytes - len(rec.data)]
                    up.sendall(data)
                if up in ready:
                    data = up.recv(1 << 16)
                    if not data:
                        break
                    tls.sendall(data)
        except (OSError, ValueError):
            pass  # peer closed / reset / stop() closed the socket
        finally:
            for s in (tls, up, raw):
                if s is not None:
                    s.close()

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except (OSError, ValueError):
                pass  # already closed
            s.close()
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=5)
        alive = [t for t in threads if t.is_alive()]
        assert not alive, f"TlsForwarder: {len(alive)} threads did not stop"

    def sent_by_client(self) -> bytes:
        with self._lock:
            return b"".join(bytes(r.data) for r in self.records)
