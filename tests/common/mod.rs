//! Helpers for integration tests: start the real `tollgate` binary on free ports with a
//! generated config, a scriptable fake upstream, and raw-socket HTTP clients.
//! Every process started here is killed by PID on drop.
//!
//! With `TOLLGATE_TEST_RELAY` set (`whole`, `bytes`, `mtu`, `random` or `random:SEED`), a
//! segmenting relay (the `segrelay` crate) re-cuts every byte stream: one in front of each
//! tollgate (`Proxy.addr` is the relay's; the admin address stays direct) and one in front of
//! each fake upstream (`FakeUpstream.addr` is the relay's; dropping the upstream drops its
//! relay, so a killed node still refuses connects and cuts its connections). Relayed
//! connections come from the client's own IP. The mode and seed are printed once per process.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use segrelay::{Cut, Relay};

/// The relay mode of this test process, from `TOLLGATE_TEST_RELAY` (None: no relay);
/// `random` alone takes a seed from the clock. Printed once, with how to replay it.
pub fn relay_cut() -> Option<Cut> {
    static CUT: OnceLock<Option<Cut>> = OnceLock::new();
    *CUT.get_or_init(|| {
        let spec = std::env::var("TOLLGATE_TEST_RELAY").ok()?;
        if spec.is_empty() {
            return None;
        }
        let clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let cut = Cut::from_spec(&spec, clock ^ u64::from(std::process::id()))
            .unwrap_or_else(|e| panic!("TOLLGATE_TEST_RELAY: {e}"));
        let replay = match cut {
            Cut::Random { seed, .. } => format!("random:{seed}"),
            _ => spec,
        };
        // Straight to stderr, past the test harness's capture: shown whichever test fails.
        let _ = writeln!(
            std::io::stderr(),
            "tests/common: segmenting relay {cut:?} (replay: TOLLGATE_TEST_RELAY={replay})"
        );
        Some(cut)
    })
}

/// A relay in front of `target` on `listen` when this process runs through one.
fn relay_to(listen: SocketAddr, target: SocketAddr) -> Option<Relay> {
    let cut = relay_cut()?;
    Some(
        Relay::start_on(listen, target, cut)
            .unwrap_or_else(|e| panic!("relay on {listen} to {target}: {e}")),
    )
}

pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Config for data-path tests: nothing limited, no health checks.
pub const NO_LIMITS: &str = "[limits]\nmethods = []\n[upstream.health]\nenabled = false\n";

/// `N` distinct free ports of 127.0.0.1 for a process to bind later. They come from below
/// the kernel's ephemeral range (32768–60999 by default): a port picked by `bind(0)` is
/// free again once we let it go, and a parallel test's outgoing connection or `bind(0)`
/// (a relay, a fake upstream) could take it before tollgate binds it. Each test process
/// walks its own stretch of 20000–31999 (by process id), each call the next ports.
pub fn free_ports<const N: usize>() -> [u16; N] {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    const LOW: usize = 20_000;
    const SPAN: usize = 12_000;
    let start = std::process::id() as usize * 613;
    std::array::from_fn(|_| {
        loop {
            let port = (LOW + (start + NEXT.fetch_add(1, Ordering::SeqCst)) % SPAN) as u16;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return port;
            }
        }
    })
}

pub fn tmpdir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "tollgate-it-{}-{}-{}",
        tag,
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running tollgate process.
pub struct Proxy {
    pub child: Child,
    /// Where clients connect: tollgate's listener, or the relay in front of it.
    pub addr: SocketAddr,
    /// tollgate's own listener.
    pub direct: SocketAddr,
    /// The segmenting relay in front of `direct`, if this process runs through one.
    pub relay: Option<Relay>,
    pub admin: Option<SocketAddr>,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn wait_port(addr: SocketAddr, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Starts tollgate with `config_body` (TOML without `listen`/admin/upstream, which
/// are added here) and an optional keys file.
pub fn start_proxy(
    tag: &str,
    upstreams: &[SocketAddr],
    workers: usize,
    config_body: &str,
    keys: Option<&str>,
) -> Proxy {
    start_proxy_limited(tag, upstreams, workers, config_body, keys, None)
}

/// [`start_proxy`], the process started under `ulimit -n NOFILE` (soft and hard) when given.
pub fn start_proxy_limited(
    tag: &str,
    upstreams: &[SocketAddr],
    workers: usize,
    config_body: &str,
    keys: Option<&str>,
    nofile: Option<u64>,
) -> Proxy {
    let dir = tmpdir(tag);
    let [port, admin_port] = free_ports();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let mut cfg = format!(
        "workers = {workers}\npin_workers = false\nlisten = [\"{addr}\"]\nreload_poll_interval = \"200ms\"\nshutdown_grace = \"2s\"\n"
    );
    if let Some(k) = keys {
        std::fs::write(dir.join("keys.toml"), k).unwrap();
    }
    cfg.push_str(config_body);
    cfg.push_str(&format!("\n[admin]\nlisten = \"{admin}\"\n"));
    if !config_body.contains("[upstream]") {
        cfg.push_str("\n[upstream]\n");
    }
    let mut servers = String::new();
    for u in upstreams {
        servers.push_str(&format!("\n[[upstream.servers]]\naddr = \"{u}\"\n"));
    }
    cfg.push_str(&servers);
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, &cfg).unwrap();
    let log = dir.join("tollgate.log");
    let mut cmd = match nofile {
        None => Command::new(env!("CARGO_BIN_EXE_tollgate")),
        Some(n) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                .arg(env!("CARGO_BIN_EXE_tollgate"));
            c
        }
    };
    let child = cmd
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start tollgate");
    let mut p = Proxy {
        child,
        addr,
        direct: addr,
        relay: None,
        admin: Some(admin),
        dir,
        log,
    };
    assert!(
        wait_port(addr, Duration::from_secs(10)),
        "tollgate did not listen; log:\n{}",
        std::fs::read_to_string(&p.log).unwrap_or_default()
    );
    assert!(
        wait_port(admin, Duration::from_secs(5)),
        "admin did not listen"
    );
    p.relay = relay_to("127.0.0.1:0".parse().unwrap(), addr);
    if let Some(r) = &p.relay {
        p.addr = r.addr();
    }
    p
}

/// A request as the fake upstream saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub head: Vec<u8>,
    pub body: Vec<u8>,
}

pub type Handler = Arc<dyn Fn(&Seen) -> Vec<u8> + Send + Sync>;

/// A scriptable HTTP/1.1 upstream on its own threads (keep-alive, CL and chunked bodies).
pub struct FakeUpstream {
    /// Where tollgate connects: the fake's listener, or the relay in front of it.
    pub addr: SocketAddr,
    /// The fake's own listener.
    pub direct: SocketAddr,
    /// The segmenting relay in front of `direct`, if this process runs through one.
    pub relay: Option<Relay>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Accepted connections, shut down on drop (a killed node drops its keep-alive
    /// connections too).
    live: Arc<Mutex<Vec<TcpStream>>>,
    /// Offsets at which each response is split, and the pause between its writes.
    split: Arc<Mutex<Split>>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

type Split = (Vec<usize>, Duration);

impl Drop for FakeUpstream {
    /// Kills the node: the listener is closed (new connections are refused) and every
    /// accepted connection is shut down, before this returns.
    fn drop(&mut self) {
        drop(self.relay.take());
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.direct, Duration::from_millis(100));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        for c in self.live.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// 200 with body "ok" (headers only for HEAD: an upstream that sent body bytes after a
/// HEAD answer would leave them on the pooled connection, where a relay that delivers them
/// in a later read makes them the start of the next response).
pub fn ok_handler() -> Handler {
    Arc::new(|s: &Seen| {
        let mut r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Up: 1\r\n\r\nok".to_vec();
        if s.head.starts_with(b"HEAD ") {
            r.truncate(r.len() - 2);
        }
        r
    })
}

impl FakeUpstream {
    pub fn start(handler: Handler) -> FakeUpstream {
        Self::start_on("127.0.0.1:0".parse().unwrap(), handler)
    }

    /// Listens on `addr` (a fixed port restarts a node where it was); through a relay, the
    /// relay takes `addr` and the fake a fresh port behind it.
    pub fn start_on(addr: SocketAddr, handler: Handler) -> FakeUpstream {
        let own = match relay_cut() {
            Some(_) => "127.0.0.1:0".parse().unwrap(),
            None => addr,
        };
        let l = TcpListener::bind(own).unwrap();
        let direct = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let live = Arc::new(Mutex::new(Vec::new()));
        let split: Arc<Mutex<Split>> = Arc::default();
        let (s2, c2, st2, l2, sp2) = (
            seen.clone(),
            connections.clone(),
            stop.clone(),
            live.clone(),
            split.clone(),
        );
        let acceptor = std::thread::spawn(move || {
            for conn in l.incoming() {
                if st2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                c2.fetch_add(1, Ordering::SeqCst);
                if let Ok(c) = conn.try_clone() {
                    l2.lock().unwrap().push(c);
                }
                let (h, s) = (handler.clone(), s2.clone());
                let (st3, sp3) = (st2.clone(), sp2.clone());
                std::thread::spawn(move || serve_fake(conn, h, s, st3, sp3));
            }
        });
        let relay = relay_to(addr, direct);
        FakeUpstream {
            addr: relay.as_ref().map_or(direct, Relay::addr),
            direct,
            relay,
            seen,
            connections,
            stop,
            live,
            split,
            acceptor: Some(acceptor),
        }
    }

    /// From now on every response is written split at `cuts` (ascending offsets; those not
    /// inside a response are ignored) with `pause` between its writes.
    pub fn split_responses(&self, cuts: &[usize], pause: Duration) {
        *self.split.lock().unwrap() = (cuts.to_vec(), pause);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_fake(
    conn: TcpStream,
    h: Handler,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    split: Arc<Mutex<Split>>,
) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut w = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let mut head = Vec::new();
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            head.extend_from_slice(&line);
            if line == b"\r\n" {
                break;
            }
        }
        let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
        let mut body = Vec::new();
        if let Some(cl) = text
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            if text.contains("expect: 100-continue") {
                let _ = w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            body.resize(cl, 0);
            if r.read_exact(&mut body).is_err() {
                return;
            }
        } else if text.contains("transfer-encoding: chunked") {
            // Keep the raw chunked bytes.
            loop {
                let mut line = Vec::new();
                if r.read_until(b'\n', &mut line).unwrap_or(0) == 0 {
                    return;
                }
                body.extend_from_slice(&line);
                let size_str = String::from_utf8_lossy(&line);
                let size = usize::from_str_radix(
                    size_str.trim().split(';').next().unwrap_or("0").trim(),
                    16,
                )
                .unwrap_or(0);
                if size == 0 {
                    // trailers until blank line
                    loop {
                        let mut t = Vec::new();
                        if r.read_until(b'\n', &mut t).unwrap_or(0) == 0 {
                            return;
                        }
                        body.extend_from_slice(&t);
                        if t == b"\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let mut chunk = vec![0u8; size + 2];
                if r.read_exact(&mut chunk).is_err() {
                    return;
                }
                body.extend_from_slice(&chunk);
            }
        }
        let s = Seen { head, body };
        seen.lock().unwrap().push(s.clone());
        let resp = h(&s);
        if resp.is_empty() {
            return; // handler asked to drop the connection
        }
        let (cuts, pause) = split.lock().unwrap().clone();
        let cuts: Vec<usize> = cuts
            .into_iter()
            .filter(|&c| c > 0 && c < resp.len())
            .collect();
        if write_pieces(&mut w, &resp, &cuts, pause).is_err() {
            return;
        }
    }
}

/// A parsed response from a raw connection.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request head byte by byte (nothing after it is consumed), as a scripted upstream
/// does before it misbehaves.
pub fn read_head_bytes(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "upstream: head cut short");
        head.push(b[0]);
    }
    head
}

/// Reads one response (Content-Length or chunked or none) from `r`.
pub fn read_response(r: &mut BufReader<TcpStream>, head_request: bool) -> std::io::Result<Resp> {
    let mut status_line = String::new();
    loop {
        status_line.clear();
        if r.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "eof",
            ));
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut headers = Vec::new();
        loop {
            let mut l = String::new();
            r.read_line(&mut l)?;
            if l == "\r\n" || l.is_empty() {
                break;
            }
            if let Some((n, v)) = l.split_once(':') {
                headers.push((n.trim().to_string(), v.trim().to_string()));
            }
        }
        if (100..200).contains(&status) {
            continue;
        }
        let mut body = Vec::new();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        if head_request || status == 204 || status == 304 {
        } else if let Some(cl) = get("content-length") {
            body.resize(cl.parse().unwrap(), 0);
            r.read_exact(&mut body)?;
        } else if get("transfer-encoding").is_some() {
            loop {
                let mut l = String::new();
                r.read_line(&mut l)?;
                let n = usize::from_str_radix(l.trim().split(';').next().unwrap(), 16).unwrap();
                if n == 0 {
                    let mut t = String::new();
                    loop {
                        t.clear();
                        r.read_line(&mut t)?;
                        if t == "\r\n" {
                            break;
                        }
                    }
                    break;
                }
                let mut c = vec![0u8; n + 2];
                r.read_exact(&mut c)?;
                body.extend_from_slice(&c[..n]);
            }
        } else {
            r.read_to_end(&mut body)?;
        }
        return Ok(Resp {
            status,
            headers,
            body,
        });
    }
}

/// Writes `raw` split at the offsets `cuts` (strictly ascending, inside `raw`), one write
/// per piece with `pause` between writes.
pub fn write_pieces(
    w: &mut impl Write,
    raw: &[u8],
    cuts: &[usize],
    pause: Duration,
) -> std::io::Result<()> {
    assert!(
        cuts.windows(2).all(|p| p[0] < p[1])
            && cuts.first().is_none_or(|&c| c > 0)
            && cuts.last().is_none_or(|&c| c < raw.len()),
        "cuts must be strictly ascending offsets inside the {} bytes: {cuts:?}",
        raw.len()
    );
    let mut from = 0;
    for &at in cuts.iter().chain([raw.len()].iter()) {
        if from > 0 {
            std::thread::sleep(pause);
        }
        w.write_all(&raw[from..at])?;
        from = at;
    }
    Ok(())
}

/// A raw keep-alive client connection.
pub struct Client {
    pub w: TcpStream,
    pub r: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Self::connect_from(addr, None)
    }
    pub fn connect_from(addr: SocketAddr, local: Option<&str>) -> Client {
        let s = match local {
            None => TcpStream::connect(addr).unwrap(),
            Some(ip) => {
                let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                let la: SocketAddr = format!("{ip}:0").parse().unwrap();
                sock.bind(&la.into()).unwrap();
                sock.connect(&addr.into()).unwrap();
                sock.into()
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }
    pub fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).unwrap();
    }
    /// Writes `raw` split at the offsets `cuts` (strictly ascending, inside `raw`), one
    /// write per piece with `pause` between writes.
    pub fn send_pieces(&mut self, raw: &[u8], cuts: &[usize], pause: Duration) {
        write_pieces(&mut self.w, raw, cuts, pause).unwrap();
    }
    pub fn recv(&mut self) -> Resp {
        read_response(&mut self.r, false).unwrap()
    }
    pub fn recv_head(&mut self) -> Resp {
        read_response(&mut self.r, true).unwrap()
    }
    pub fn request(&mut self, raw: &[u8]) -> Resp {
        self.send(raw);
        self.recv()
    }
}

/// A GET with a SigV4-style Authorization header for `key` (the signature is not checked
/// by the fake upstream).
pub fn sigv4_get(path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: s3.test\r\nx-amz-date: 20261123T000000Z\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\nAuthorization: AWS4-HMAC-SHA256 Credential={key}/20261123/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000\r\n\r\n"
    )
    .into_bytes()
}

pub fn with_method(raw: &[u8], method: &str) -> Vec<u8> {
    let s = String::from_utf8_lossy(raw);
    let rest = s.split_once(' ').unwrap().1;
    let mut out = format!("{method} {rest}");
    if method == "PUT" || method == "POST" {
        out = out.replacen("\r\n\r\n", "\r\nContent-Length: 0\r\n\r\n", 1);
    }
    out.into_bytes()
}

pub fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    let mut c = Client::connect(admin);
    let r = c.request(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes());
    (r.status, String::from_utf8_lossy(&r.body).to_string())
}

impl Resp {
    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Value of the first header `name` (case-insensitive) in a raw request head as the fake
/// upstream saw it, and how many such headers there were.
pub fn seen_header(s: &Seen, name: &str) -> (Option<String>, usize) {
    let text = String::from_utf8_lossy(&s.head);
    let vals: Vec<String> = text
        .split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_string())
        .collect();
    (vals.first().cloned(), vals.len())
}

/// What a finished command printed.
#[derive(Debug)]
pub struct CmdOut {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tollgate ARGS…` and waits for it at most `timeout` (then kills it by PID and
/// panics). No polling: the output pipes close when the process exits.
pub fn run_tollgate<I, S>(args: I, timeout: Duration) -> CmdOut
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tollgate");
    let (tx, rx) = std::sync::mpsc::channel();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let e = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut o = String::new();
        let _ = out.read_to_string(&mut o);
        let _ = tx.send((o, e.join().unwrap_or_default()));
    });
    match rx.recv_timeout(timeout) {
        Ok((stdout, stderr)) => {
            let code = child.wait().expect("wait for tollgate").code();
            CmdOut {
                code,
                stdout,
                stderr,
            }
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tollgate did not finish within {timeout:?}");
        }
    }
}
