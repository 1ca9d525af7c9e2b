//! Test responders started inside the test process (std threads, one per connection):
//! a fixed 200 responder with an optional stall window, and a limiter emulator that answers 429
//! (S3 SlowDown body, Retry-After) beyond N admissions per trailing second per API key.
//! Each records the arrival time of every request per key, and every request's key, method,
//! target (path and query) and Host. `LimitPath` limits only the requests whose target contains
//! a string (e.g. LISTs), letting the others pass.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Always 200 with a small body.
    Fixed,
    /// Exact sliding window: admit iff < limit admissions in the trailing `window`.
    Limiter { limit: usize, window: Duration },
    /// `Limiter` for the requests whose target contains `contains`; the others always pass.
    LimitPath {
        contains: &'static str,
        limit: usize,
        window: Duration,
    },
}

/// One request as the responder saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub key: String,
    pub method: String,
    /// Path and query, as on the request line.
    pub target: String,
    pub host: String,
}

pub struct Responder {
    pub port: u16,
    pub start: Instant,
    /// Arrival times (since `start`) per key ("" = no key).
    pub arrivals: Arc<Mutex<HashMap<String, Vec<Duration>>>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

struct Shared {
    behaviour: Behaviour,
    pause: Option<(Instant, Duration)>,
    admitted: Mutex<HashMap<String, std::collections::VecDeque<Instant>>>,
    arrivals: Arc<Mutex<HashMap<String, Vec<Duration>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    start: Instant,
}

/// Starts a responder on 127.0.0.1:0. `pause`: (offset from now, length) during which responses
/// are held until the window ends.
pub fn start(behaviour: Behaviour, pause: Option<(Duration, Duration)>) -> Responder {
    start_with(behaviour, pause, None)
}

/// A test CA and a server config whose leaf (CN/SAN "localhost", CA:FALSE) it signed.
/// Returns (server config, CA PEM).
pub fn test_tls() -> (Arc<rustls::ServerConfig>, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf_params.is_ca = rcgen::IsCa::ExplicitNoCa;
    let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
        leaf_key.serialize_der(),
    ));
    let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (Arc::new(cfg), ca.pem())
}

pub fn start_with(
    behaviour: Behaviour,
    pause: Option<(Duration, Duration)>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Responder {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = Instant::now();
    let arrivals = Arc::new(Mutex::new(HashMap::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::new(Shared {
        behaviour,
        pause: pause.map(|(at, len)| (start + at, len)),
        admitted: Mutex::new(HashMap::new()),
        arrivals: arrivals.clone(),
        seen: seen.clone(),
        start,
    });
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let Ok(s) = s else { continue };
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            let sh = shared.clone();
            let tls = tls.clone();
            std::thread::spawn(move || match tls {
                None => serve(s, sh),
                Some(cfg) => {
                    let conn = rustls::ServerConnection::new(cfg).unwrap();
                    serve(rustls::StreamOwned::new(conn, s), sh)
                }
            });
        }
    });
    Responder {
        port,
        start,
        arrivals,
        seen,
        stop,
    }
}

fn key_of(req: &httparse::Request) -> String {
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("x-api-key") {
            return String::from_utf8_lossy(h.value).into_owned();
        }
        if h.name.eq_ignore_ascii_case("authorization") {
            let v = String::from_utf8_lossy(h.value);
            if let Some(i) = v.find("Credential=") {
                let rest = &v[i + 11..];
                return rest.split('/').next().unwrap_or("").to_string();
            }
            if let Some(rest) = v.strip_prefix("AWS ") {
                return rest.split(':').next().unwrap_or("").to_string();
            }
        }
    }
    String::new()
}

fn serve<S: Read + Write>(mut s: S, sh: Arc<Shared>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0;
    loop {
        // Parse as many complete requests as are buffered.
        loop {
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut hs);
            let n = match req.parse(&buf[..len]) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            };
            let now = Instant::now();
            let key = key_of(&req);
            let head = req.method == Some("HEAD");
            let host = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("host"))
                .map(|h| String::from_utf8_lossy(h.value).into_owned())
                .unwrap_or_default();
            let seen = Seen {
                key: key.clone(),
                method: req.method.unwrap_or("").to_string(),
                target: req.path.unwrap_or("").to_string(),
                host,
            };
            let cl: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                .unwrap_or(0);
            // Consume the body.
            let mut need = n + cl;
            while len < need {
                if need > buf.len() {
                    // Large body: discard what we have and read the rest.
                    let have = len - n;
                    let mut left = cl - have;
                    let mut sink = [0u8; 65536];
                    while left > 0 {
                        match s.read(&mut sink[..left.min(65536)]) {
                            Ok(0) | Err(_) => return,
                            Ok(k) => left -= k,
                        }
                    }
                    len = n;
                    need = n;
                    break;
                }
                match s.read(&mut buf[len..]) {
                    Ok(0) | Err(_) => return,
                    Ok(k) => len += k,
                }
            }
            buf.copy_within(need..len, 0);
            len -= need;
            sh.arrivals
                .lock()
                .unwrap()
                .entry(key.clone())
                .or_default()
                .push(now - sh.start);
            let limit_of = match sh.behaviour {
                Behaviour::Fixed => None,
                Behaviour::Limiter { limit, window } => Some((limit, window)),
                Behaviour::LimitPath {
                    contains,
                    limit,
                    window,
                } => seen.target.contains(contains).then_some((limit, window)),
            };
            sh.seen.lock().unwrap().push(seen);
            let admit = match limit_of {
                None => true,
                Some((limit, window)) => {
                    let mut m = sh.admitted.lock().unwrap();
                    let q = m.entry(key.clone()).or_default();
                    while q.front().is_some_and(|&t| t + window <= now) {
                        q.pop_front();
                    }
                    if q.len() < limit {
                        q.push_back(now);
                        true
                    } else {
                        false
                    }
                }
            };
            if let Some((at, d)) = sh.pause {
                let now = Instant::now();
                if now >= at && now < at + d {
                    std::thread::sleep(at + d - now);
                }
            }
            let resp = if admit {
                if head {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".to_string()
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_string()
                }
            } else {
                let body = format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code><Message>Rate limit exceeded</Message><ApiKey>{key}</ApiKey></Error>"
                );
                format!(
                    "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/xml\r\nRetry-After: 1\r\nx-amz-retry-after: 250\r\nContent-Length: {}\r\n\r\n{}",
                    body.len(),
                    if head { "" } else { body.as_str() }
                )
            };
            if s.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
        if len == buf.len() {
            return;
        }
        match s.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return,
            Ok(k) => len += k,
        }
    }
}

/// Path of the built loadgen binary.
pub fn loadgen_bin() -> &'static str {
    env!("CARGO_BIN_EXE_loadgen")
}

/// Runs a child process with a hard timeout; kills it by PID when it overruns.
pub fn run_with_timeout(cmd: &mut std::process::Command, limit: Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} overran {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}
