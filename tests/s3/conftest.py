"""Fixtures for tollgate's real-client S3 suite.

Processes (all on 127.0.0.1, free ports, temp dirs; stopped by PID at teardown, also on failure):
  * Garage 2.5 via scripts/garage.sh (session): the S3 server with real SigV4 checks.
  * s3s-fs via scripts/s3fs.sh (session, only when a SigV2 test asks): checks SigV2 too.
  * tollgate in front of each (`tollgate run --config <generated> --workers 2`).

Environment:
  TOLLGATE_DIRECT=1   talk to Garage / s3s-fs directly (validates the suite without tollgate;
                      the HTTPS tests are skipped since the servers here speak plain HTTP).
                      Without it a missing or broken tollgate fails the tests: nothing is skipped.
  TOLLGATE_BIN        tollgate binary (default $CARGO_TARGET_DIR/release/tollgate when that
                      variable is set, else <repo>/target/release/tollgate).
  TOLLGATE_TEST_KEEP=1  leave temp dirs (logs, configs) in place; their paths are printed.
  TOLLGATE_TEST_RELAY=whole|bytes|mtu|random[:SEED]  put a segmenting relay (`segrelay`, from
                      $SEGRELAY_BIN or <target>/release/segrelay) in front of every tollgate
                      listener and every backend, so each byte stream is re-cut on its way
                      (tests see the relays' ports); mode and seed are printed after the results.

Helpers for other tests (e.g. rate-limit tests): `start_tollgate(...)` below and the
`tollgate_factory` fixture start extra tollgate instances with their own tiers/keys.
"""

from __future__ import annotations

import ctypes
import gc
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from s3lib import RawConn, free_port, log_tail, stop_process, wait_port

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
DIRECT = os.environ.get("TOLLGATE_DIRECT") == "1"
START_TIMEOUT = 30.0

# Clients see only what the tests give them: no AWS_* settings or ~/.aws files from the machine.
for _k in [k for k in os.environ if k.startswith("AWS_")]:
    del os.environ[_k]
os.environ.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull,
                  AWS_EC2_METADATA_DISABLED="true")

# Tiers high enough never to interfere with the functional tests (the 60 s window holds at most
# 2 s x per_second per 2 s bucket, which stays within a u16).
HIGH_TIERS = {t: (60000, 5000) for t in ("premium", "standard", "basic", "unknown")}


def run(cmd: list, timeout: float, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with a timeout, captured output and a readable failure."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {p.returncode}\n"
                           f"stdout:\n{p.stdout[-3000:]}\nstderr:\n{p.stderr[-3000:]}")
    return p


# ----------------------------------------------------------------------------- data types


@dataclass
class Key:
    name: str
    id: str
    secret: str


@dataclass
class Backend:
    """An S3 server started for the session (Garage or s3s-fs)."""
    kind: str
    port: int
    region: str
    bucket: str
    keys: dict[str, Key]
    dir: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass
class Target:
    """Where the tests send requests: tollgate (normal) or the backend (TOLLGATE_DIRECT=1)."""
    scheme: str
    host: str
    port: int
    backend: Backend
    ca: Path | None = None
    tollgate: "Tollgate | None" = None

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def region(self) -> str:
        return self.backend.region

    @property
    def bucket(self) -> str:
        return self.backend.bucket

    @property
    def keys(self) -> dict[str, Key]:
        return self.backend.keys

    def client(self, key: str | Key = "premium", signature_version: str = "s3v4",
               secret: str | None = None, **config):
        k = self.keys[key] if isinstance(key, str) else key
        opts = dict(retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=60)
        opts.update(config)
        cfg = Config(signature_version=signature_version, s3={"addressing_style": "path"},
                     **opts)
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=k.id, aws_secret_access_key=secret or k.secret,
            config=cfg, verify=str(self.ca) if self.ca else None)

    def raw(self, timeout: float = 30.0) -> RawConn:
        tls = None
        if self.scheme == "https":
            tls = ssl.create_default_context(cafile=str(self.ca))
        return RawConn(self.port, timeout=timeout, tls=tls, server_hostname=self.host)

    @property
    def host_header(self) -> str:
        return f"{self.host}:{self.port}"

    def curl(self, *args, timeout: float = 60) -> subprocess.CompletedProcess:
        """curl -sS with ARGS; over HTTPS it trusts the test CA only and resolves the host
        name to 127.0.0.1."""
        tls = []
        if self.scheme == "https":
            tls = ["--cacert", str(self.ca), "--resolve", f"{self.host}:{self.port}:127.0.0.1"]
        return subprocess.run(["curl", "-sS", *tls, *map(str, args)], capture_output=True,
                              text=True, timeout=timeout)


# ----------------------------------------------------------------------------- relay

RELAY_MODE, _, _seed = os.environ.get("TOLLGATE_TEST_RELAY", "").partition(":")
RELAY_SEED = int(_seed) if _seed else (time.time_ns() ^ os.getpid()) % 2**63


def pytest_terminal_summary(terminalreporter):
    """Names the relay mode and seed after the results (also with -q), for a replay."""
    if RELAY_MODE:
        replay = f"random:{RELAY_SEED}" if RELAY_MODE == "random" else RELAY_MODE
        terminalreporter.write_line(
            f"segmenting relay: {RELAY_MODE} (replay: TOLLGATE_TEST_RELAY={replay})")


def segrelay_binary() -> Path:
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    p = Path(os.environ.get("SEGRELAY_BIN") or target / "release" / "segrelay")
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"segrelay not found at {p} (cargo build --release --workspace)")
    return p


def start_relay(port: int) -> tuple[int, subprocess.Popen | None]:
    """With TOLLGATE_TEST_RELAY set: a segrelay process in front of 127.0.0.1:port, as
    (its port, its process); stop it with stop_process. Without: (port, None)."""
    if not RELAY_MODE:
        return port, None
    cmd = [segrelay_binary(), "--to", f"127.0.0.1:{port}", "--mode", RELAY_MODE,
           "--seed", RELAY_SEED]
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            start_new_session=True, preexec_fn=_die_with_parent)
    said = []
    for line in proc.stdout:  # one line on stderr (the mode), one on stdout, or an error
        said.append(line)
        if line.startswith("listening on "):
            return int(line.rsplit(":", 1)[1]), proc
    stop_process(proc)
    raise RuntimeError(f"segrelay to port {port} did not start: {''.join(said)}")


# ----------------------------------------------------------------------------- tollgate


def tollgate_binary() -> Path:
    if os.environ.get("TOLLGATE_BIN"):
        cands = [Path(os.environ["TOLLGATE_BIN"])]
    elif os.environ.get("CARGO_TARGET_DIR"):
        cands = [Path(os.environ["CARGO_TARGET_DIR"]) / "release" / "tollgate"]
    else:
        cands = [ROOT / "target" / "release" / "tollgate"]
    for c in cands:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    pytest.fail(f"tollgate binary not found at {cands[0]} (build it: cargo build --release; "
                f"or set TOLLGATE_BIN; or TOLLGATE_DIRECT=1 to test the backend alone)")


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Tollgate:
    """One running tollgate process and the files it was started with."""
    dir: Path
    port: int
    admin_port: int
    upstreams: list[str]
    tls_port: int | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    config_path: Path | None = None
    stopped: bool = False
    extra: dict = field(default_factory=dict)
    relays: list[subprocess.Popen] = field(default_factory=list)  # in front of port, tls_port

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        return log_tail(self.log, lines)

    def stop(self) -> int | None:
        for r in self.relays:
            stop_process(r)
        if self.proc is not None and not self.stopped:
            stop_process(self.proc)
            self.stopped = True
        return self.proc.returncode if self.proc else None


def write_tollgate_config(dir: Path, port: int, admin_port: int, upstreams: list[str],
                          key_tiers: dict[str, str], tiers: dict[str, tuple[int, int]],
                          tls: dict | None = None, extra_toml: str = "",
                          limits_toml: str = "", upstream_toml: str = "",
                          health: bool = True, upstream_tls: dict | None = None) -> Path:
    """Config per the agreed schema (wt/SCHEMA.md).
    `tls`: None, or {port, cert, key}, or {port, certs: [{cert, key[, server_names]}, ...]}
    (several certificates chosen by SNI; the first is the default).
    `limits_toml`: lines placed inside [limits] (e.g. 'deny_status = 503');
    `upstream_toml`: lines placed inside [upstream] (e.g. 'max_retries = 0');
    `health`: active health checks on/off; `upstream_tls`: None or {ca_file[, server_name]}
    ([upstream.tls]: TLS towards the upstream servers);
    `extra_toml`: whole new tables appended at the end (TOML cannot reopen a table)."""
    keys_path = dir / "keys.toml"
    keys_path.write_text("[keys]\n" + "".join(
        f"{_toml_str(k)} = {_toml_str(t)}\n" for k, t in key_tiers.items()))
    lines = [
        "# generated by tests/s3/conftest.py",
        "workers = 2",
        f"listen = [{_toml_str(f'127.0.0.1:{port}')}]",
        'shutdown_grace = "2s"',
        'reload_poll_interval = "0s"',
        "",
    ]
    if tls:
        lines += ["[tls]", f"listen = [{_toml_str('127.0.0.1:%d' % tls['port'])}]"]
        for c in tls.get("certs") or [tls]:
            lines += ["[[tls.certs]]", f"cert = {_toml_str(str(c['cert']))}",
                      f"key = {_toml_str(str(c['key']))}"]
            if c.get("server_names"):
                lines.append("server_names = [%s]" % ", ".join(map(_toml_str, c["server_names"])))
        lines.append("")
    lines += [
        "[admin]",
        f"listen = {_toml_str(f'127.0.0.1:{admin_port}')}",
        "",
        "[upstream]",
        'connect_timeout = "2s"',
        'response_head_timeout = "60s"',
        upstream_toml,
    ]
    for u in upstreams:
        lines += ["[[upstream.servers]]", f"addr = {_toml_str(u)}"]
    if upstream_tls:
        lines += ["[upstream.tls]", f"ca_file = {_toml_str(str(upstream_tls['ca_file']))}"]
        if upstream_tls.get("server_name"):
            lines.append(f"server_name = {_toml_str(upstream_tls['server_name'])}")
    lines += [
        "[upstream.health]",
        f"enabled = {'true' if health else 'false'}",
        'path = "/"',
        'interval = "1s"',
        'timeout = "1s"',
        "rise = 1",
        'healthy_statuses = ["200-499"]',
        "",
        "[limits]",
        'keys_file = "keys.toml"',
        limits_toml,
        "",
    ]
    for name, (per_min, per_sec) in tiers.items():
        lines += [f"[tiers.{name}]", f"per_minute = {per_min}", f"per_second = {per_sec}", ""]
    text = "\n".join(lines) + "\n" + extra_toml
    path = dir / "tollgate.toml"
    path.write_text(text)
    return path


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the test process dies (no orphaned proxies)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def start_tollgate(dir: Path, upstreams: list[str], key_tiers: dict[str, str],
                   tiers: dict[str, tuple[int, int]] | None = None, tls: dict | None = None,
                   extra_toml: str = "", limits_toml: str = "", workers: int = 2,
                   upstream_toml: str = "", health: bool = True,
                   upstream_tls: dict | None = None, wait_upstream: bool = True) -> Tollgate:
    """Start tollgate in front of `upstreams`; returns once it forwards to a healthy upstream
    (an answer that is not 502/503/504 through the plain listener), bounded by START_TIMEOUT.
    With wait_upstream=False it returns as soon as the listeners accept connections (for
    tests of upstreams that must fail). Other arguments: see write_tollgate_config."""
    dir.mkdir(parents=True, exist_ok=True)
    binary = tollgate_binary()
    port, admin_port = free_port(), free_port()
    tls_conf = None
    if tls is not None:
        tls_conf = dict(tls, port=free_port())
    cfg = write_tollgate_config(dir, port, admin_port, upstreams, key_tiers,
                                tiers or HIGH_TIERS, tls_conf, extra_toml, limits_toml,
                                upstream_toml, health, upstream_tls)
    tg = Tollgate(dir=dir, port=port, admin_port=admin_port, upstreams=upstreams,
                  tls_port=tls_conf["port"] if tls_conf else None, log=dir / "tollgate.log",
                  config_path=cfg)
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    with open(tg.log, "ab") as logf:
        tg.proc = subprocess.Popen(
            [str(binary), "run", "--config", str(cfg), "--workers", str(workers)],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True, preexec_fn=_die_with_parent)
    try:
        wait_port(port, START_TIMEOUT, tg.proc, "tollgate", tg.log)
        if tg.tls_port:
            wait_port(tg.tls_port, START_TIMEOUT, tg.proc, "tollgate (tls)", tg.log)
        deadline = time.monotonic() + START_TIMEOUT
        last = None
        while wait_upstream:
            try:
                with RawConn(port, timeout=5) as c:
                    c.send(f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                           f"Connection: close\r\n\r\n".encode())
                    last = c.read_response().status
                if last not in (502, 503, 504):
                    break
            except OSError as e:
                last = repr(e)
            if not tg.alive():
                raise RuntimeError("tollgate exited during start" + tg.log_tail())
            if time.monotonic() > deadline:
                raise RuntimeError(f"tollgate never reached a healthy upstream (last: {last})"
                                   + tg.log_tail())
            time.sleep(0.2)
        tg.port, relay = start_relay(tg.port)
        tg.relays += [relay] if relay else []
        if tg.tls_port:
            tg.tls_port, relay = start_relay(tg.tls_port)
            tg.relays += [relay] if relay else []
    except BaseException:
        tg.stop()
        raise
    return tg


def default_key_tiers(backend: Backend) -> dict[str, str]:
    """premium/standard/basic keys listed; the others are unlisted (→ default tier)."""
    return {k.id: k.name for k in backend.keys.values()
            if k.name in ("premium", "standard", "basic")}


# ----------------------------------------------------------------------------- fixtures


_started: list[Tollgate] = []


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("s3suite")
    if os.environ.get("TOLLGATE_TEST_KEEP") == "1":
        print(f"\n[s3 suite] work dir: {d}", file=sys.stderr)
    return d


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v.strip('"')
    return out


@pytest.fixture(scope="session")
def garage(workdir):
    d = workdir / "garage"
    port, relay = free_port(), None
    try:
        run([SCRIPTS / "garage.sh", "start", d, port], timeout=90)
        env = _read_env(d / "keys.env")
        keys = {}
        for name in env["GARAGE_KEY_NAMES"].split():
            up = name.upper()
            keys[name] = Key(name, env[f"KEY_{up}_ID"], env[f"KEY_{up}_SECRET"])
        port, relay = start_relay(port)
        yield Backend("garage", port, env["GARAGE_REGION"], env["GARAGE_BUCKET"], keys, d)
    finally:
        gc.collect()  # close idle boto3 keep-alive connections: Garage waits for them on stop
        if relay:
            stop_process(relay)
        run([SCRIPTS / "garage.sh", "stop", d], timeout=30)


@pytest.fixture(scope="session")
def s3fs(workdir):
    d = workdir / "s3fs"
    port, relay = free_port(), None
    try:
        run([SCRIPTS / "s3fs.sh", "start", d, port], timeout=60)
        env = _read_env(d / "s3fs.env")
        key = Key("s3fs", env["S3FS_ACCESS_KEY"], env["S3FS_SECRET_KEY"])
        port, relay = start_relay(port)
        yield Backend("s3s-fs", port, env["S3FS_REGION"], env["S3FS_BUCKET"], {"s3fs": key}, d)
    finally:
        if relay:
            stop_process(relay)
        run([SCRIPTS / "s3fs.sh", "stop", d], timeout=30)


@pytest.fixture(scope="session")
def tollgate_factory(workdir):
    """Call it like start_tollgate(...) minus `dir`; every instance is stopped at session end."""
    counter = iter(range(1, 1_000_000))
    started: list[Tollgate] = []

    def factory(upstreams, key_tiers, **kw) -> Tollgate:
        tg = start_tollgate(workdir / f"tollgate-{next(counter)}", upstreams, key_tiers, **kw)
        started.append(tg)
        _started.append(tg)
        return tg

    yield factory
    for tg in started:
        tg.stop()


@pytest.fixture(scope="session")
def http_target(garage, tollgate_factory) -> Target:
    """Garage through tollgate over plain HTTP (or Garage itself with TOLLGATE_DIRECT=1)."""
    if DIRECT:
        return Target("http", "127.0.0.1", garage.port, garage)
    tg = tollgate_factory([garage.addr], default_key_tiers(garage))
    return Target("http", "127.0.0.1", tg.port, garage, tollgate=tg)


@pytest.fixture(params=["http", "https"])
def target(request) -> Target:
    """Each test that takes `target` runs twice: through tollgate's plain listener
    (`http_target`) and through its HTTPS listener (`tls_target`): the same over HTTPS."""
    return request.getfixturevalue("http_target" if request.param == "http" else "tls_target")


EC_KEY = ["ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]


def _make_ca(d: Path, name: str, cn: str, newkey: list[str]) -> tuple[Path, Path]:
    key, pem = d / f"{name}.key", d / f"{name}.pem"
    run(["openssl", "req", "-x509", "-newkey", *newkey, "-nodes", "-keyout", key,
         "-out", pem, "-days", "2", "-subj", f"/CN={cn}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"], timeout=30)
    return pem, key


def _issue(d: Path, name: str, sans: list[str], ca: Path, ca_key: Path,
           newkey: list[str]) -> dict:
    """A server certificate (leaf only in the PEM file) for `sans` ("DNS:x", "IP:y")."""
    key, csr, crt, ext = (d / f"{name}.{n}" for n in ("key", "csr", "pem", "ext"))
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   f"subjectAltName={','.join(sans)}\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    cn = sans[0].split(":", 1)[1]
    run(["openssl", "req", "-newkey", *newkey, "-nodes", "-keyout", key, "-out", csr,
         "-subj", f"/CN={cn}"], timeout=30)
    run(["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", crt, "-days", "2", "-sha256", "-extfile", ext], timeout=30)
    text = run(["openssl", "x509", "-in", crt, "-noout", "-text"], timeout=10).stdout
    assert "CA:FALSE" in text
    for san in sans:
        kind, value = san.split(":", 1)
        assert f"{'IP Address' if kind == 'IP' else kind}:{value}" in text, (san, text)
    return {"cert": crt, "key": key, "sans": sans,
            "der": ssl.PEM_cert_to_DER_cert(crt.read_text())}


@pytest.fixture(scope="session")
def certs(workdir) -> dict:
    """Throw-away test CA (openssl) and server certificates it signed:
      servers["localhost"]  localhost + IP 127.0.0.1 (RSA; the default = first certificate)
      servers["s3.test"]    s3.test (ECDSA P-256)
      servers["wildcard"]   *.example.test + example.test (ECDSA)
      servers["upstream"]   upstream.test, for a TLS upstream (ECDSA)
    plus `rogue_ca` / servers["rogue-upstream"]: upstream.test signed by another CA.
    `cert`/`key` at the top level = the localhost certificate."""
    d = workdir / "certs"
    d.mkdir()
    ca, ca_key = _make_ca(d, "ca", "tollgate test CA", ["rsa:2048"])
    rogue_ca, rogue_key = _make_ca(d, "rogue-ca", "some other CA", EC_KEY)
    servers = {
        "localhost": _issue(d, "server", ["DNS:localhost", "IP:127.0.0.1"], ca, ca_key,
                            ["rsa:2048"]),
        "s3.test": _issue(d, "s3-test", ["DNS:s3.test"], ca, ca_key, EC_KEY),
        "wildcard": _issue(d, "wildcard", ["DNS:*.example.test", "DNS:example.test"], ca,
                           ca_key, EC_KEY),
        "upstream": _issue(d, "upstream", ["DNS:upstream.test"], ca, ca_key, EC_KEY),
        "rogue-upstream": _issue(d, "rogue-upstream", ["DNS:upstream.test"], rogue_ca,
                                 rogue_key, EC_KEY),
    }
    return {"ca": ca, "cert": servers["localhost"]["cert"], "key": servers["localhost"]["key"],
            "rogue_ca": rogue_ca, "servers": servers}


@pytest.fixture(scope="session")
def tls_target(garage, certs, tollgate_factory) -> Target:
    """Garage through tollgate's HTTPS listener, addressed as https://localhost:PORT.
    The listener has three certificates chosen by SNI (test_tls.py checks which is served):
    localhost (first = default), s3.test (names from its SAN) and *.example.test (configured
    server_names, so it answers for subdomains only, not for example.test itself)."""
    if DIRECT:
        pytest.skip("TOLLGATE_DIRECT=1: Garage has no TLS listener; HTTPS needs tollgate")
    srv = certs["servers"]
    tg = tollgate_factory([garage.addr], default_key_tiers(garage), tls={"certs": [
        srv["localhost"], srv["s3.test"],
        dict(srv["wildcard"], server_names=["*.example.test"])]})
    return Target("https", "localhost", tg.tls_port, garage, ca=certs["ca"], tollgate=tg)


@pytest.fixture(scope="session")
def s3fs_target(s3fs, tollgate_factory) -> Target:
    """s3s-fs (SigV2 + SigV4 checks) through tollgate, or directly with TOLLGATE_DIRECT=1."""
    if DIRECT:
        return Target("http", "127.0.0.1", s3fs.port, s3fs)
    tg = tollgate_factory([s3fs.addr], {s3fs.keys["s3fs"].id: "premium"})
    return Target("http", "127.0.0.1", tg.port, s3fs, tollgate=tg)


@pytest.fixture(autouse=True)
def _tollgate_still_alive():
    """Every test ends with every tollgate it used still running (a crash fails the test)."""
    yield
    for tg in _started:
        if not tg.stopped and not tg.alive():
            tg.stopped = True
            pytest.fail(f"tollgate (port {tg.port}) died with exit code {tg.proc.returncode}"
                        + tg.log_tail())


@pytest.fixture
def obj_key(request) -> str:
    name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in request.node.name[:40])
    return f"{name}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def aws_cli() -> Path:
    cand = Path(sys.executable).parent / "aws"
    if cand.exists():
        return cand
    found = shutil.which("aws")
    if not found:
        pytest.fail("aws CLI not found (run scripts/deps.sh --tests and use .venv)")
    return Path(found)


def aws_env(target: Target, workdir: Path, key: str = "premium") -> dict[str, str]:
    """A clean environment for the aws CLI: only our credentials, path-style addressing."""
    cfg = workdir / "aws-config"
    if not cfg.exists():
        cfg.write_text("[default]\ns3 =\n    addressing_style = path\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    k = target.keys[key]
    env.update(AWS_ACCESS_KEY_ID=k.id, AWS_SECRET_ACCESS_KEY=k.secret,
               AWS_DEFAULT_REGION=target.region, AWS_CONFIG_FILE=str(cfg),
               AWS_SHARED_CREDENTIALS_FILE=str(workdir / "no-credentials"),
               AWS_EC2_METADATA_DISABLED="true", AWS_MAX_ATTEMPTS="1", AWS_RETRY_MODE="standard")
    if target.ca:  # HTTPS: verify against the test CA only
        env["AWS_CA_BUNDLE"] = str(target.ca)
    return env
