//! Hostile clients against the data path: connection floods under a low open-file limit,
//! forged `X-Forwarded-For`. The real binary, raw sockets.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts tollgate like `start_proxy`, but under `ulimit -n NOFILE` (soft and hard).
fn start_limited(tag: &str, upstream: SocketAddr, nofile: u64, body: &str) -> Proxy {
    let dir = tmpdir(tag);
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let cfg = format!(
        "workers = 1\npin_workers = false\nlisten = [\"{addr}\"]\nshutdown_grace = \"1s\"\n{body}\n[admin]\nlisten = \"{admin}\"\n[[upstream.servers]]\naddr = \"{upstream}\"\n"
    );
    let path = dir.join("tollgate.toml");
    std::fs::write(&path, cfg).unwrap();
    let log = dir.join("tollgate.log");
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -n {nofile} && exec \"$0\" run --config \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_tollgate"))
        .arg(&path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let p = Proxy {
        child,
        addr,
        admin: Some(admin),
        dir,
        log,
    };
    assert!(wait_port(addr, Duration::from_secs(10)), "not listening");
    assert!(wait_port(admin, Duration::from_secs(5)));
    p
}

fn stats(p: &Proxy) -> serde_json::Value {
    let (code, body) = admin_get(p.admin.unwrap(), "/stats");
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

/// A flood of connections against a process with 128 file descriptors: the connections
/// beyond what fits are closed at once, clients already connected keep being served, the
/// upstream is never marked down, and new clients are served again right after the flood.
#[test]
fn a_connection_flood_under_a_low_open_file_limit_degrades_nothing_else() {
    let up = FakeUpstream::start(ok_handler());
    let cfg =
        "[limits]\nmethods = []\n[upstream.health]\ninterval = \"100ms\"\nfall = 1\nrise = 1\n";
    let p = start_limited("flood", up.addr, 128, cfg);
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(log.contains("does not fit the open-file limit"), "{log}");
    let req = b"GET /b/k HTTP/1.1\r\nHost: s3\r\n\r\n";
    let mut existing: Vec<Client> = (0..4).map(|_| Client::connect(p.addr)).collect();
    for c in &mut existing {
        assert_eq!(c.request(req).status, 200);
    }
    // The flood: far more connections than the process has descriptors, held open.
    let flood: Vec<TcpStream> = (0..400)
        .filter_map(|_| TcpStream::connect_timeout(&p.addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(flood.len() > 100, "the flood connected ({})", flood.len());
    std::thread::sleep(Duration::from_millis(300));
    for round in 0..3 {
        for (i, c) in existing.iter_mut().enumerate() {
            let r = c.request(req);
            assert_eq!(
                r.status, 200,
                "existing client {i} during the flood, round {round}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let v = stats(&p);
    assert!(v["connections"]["refused"].as_u64().unwrap() > 0, "{v}");
    drop(flood);
    let t0 = Instant::now();
    let mut served = false;
    while t0.elapsed() < Duration::from_secs(1) {
        if let Ok(mut s) = TcpStream::connect(p.addr) {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let _ = std::io::Write::write_all(&mut s, b"GET /b/k HTTP/1.0\r\nHost: s3\r\n\r\n");
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got);
            if got.starts_with(b"HTTP/1.1 200") {
                served = true;
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        served,
        "a new client was served within 1 s of the flood ending"
    );
    let log = std::fs::read_to_string(&p.log).unwrap();
    assert!(
        !log.contains("is down"),
        "the upstream was never marked down:\n{log}"
    );
    let v = stats(&p);
    assert_eq!(v["upstream"]["errors_503"], 0, "{v}");
}

/// A client's own X-Forwarded-For names any address it likes: with `x_forwarded_for = true`
/// it is replaced, unless the client is a trusted proxy; then it is kept and extended, and
/// per-address limits count the address it forwarded.
#[test]
fn a_forged_x_forwarded_for_is_replaced_unless_the_peer_is_trusted() {
    let up = FakeUpstream::start(ok_handler());
    let cfg = r#"
[http]
x_forwarded_for = true
trusted_proxies = ["127.0.0.2"]
[limits]
anonymous_tier = "tiny"
default_tier = "tiny"
[tiers.tiny]
per_minute = 100
per_second = 2
[upstream.health]
enabled = false
"#;
    let p = start_proxy("xff", &[up.addr], 1, cfg, None);
    let forged = b"GET /b/k HTTP/1.1\r\nHost: s3\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n";
    let r = Client::connect_from(p.addr, Some("127.0.0.1")).request(forged);
    assert_eq!(r.status, 200);
    let (xff, n) = seen_header(&up.seen()[0], "x-forwarded-for");
    assert_eq!((xff.as_deref(), n), (Some("127.0.0.1"), 1), "replaced");

    let via_lb = |client: &str| {
        format!("GET /b/k HTTP/1.1\r\nHost: s3\r\nX-Forwarded-For: {client}\r\n\r\n").into_bytes()
    };
    let mut lb = Client::connect_from(p.addr, Some("127.0.0.2"));
    assert_eq!(lb.request(&via_lb("198.51.100.1")).status, 200);
    let (xff, n) = seen_header(&up.seen()[1], "x-forwarded-for");
    assert_eq!(
        (xff.as_deref(), n),
        (Some("198.51.100.1, 127.0.0.2"), 1),
        "kept and extended"
    );
    // Per-address counting behind the trusted proxy: each forwarded client has its own 2/s.
    assert_eq!(lb.request(&via_lb("198.51.100.1")).status, 200);
    assert_eq!(
        lb.request(&via_lb("198.51.100.1")).status,
        429,
        "third in the second"
    );
    assert_eq!(
        lb.request(&via_lb("198.51.100.2")).status,
        200,
        "another client"
    );
    // An untrusted client cannot escape its own budget by forging addresses.
    let mut c = Client::connect_from(p.addr, Some("127.0.0.3"));
    let statuses: Vec<u16> = (0..3)
        .map(|i| c.request(&via_lb(&format!("203.0.113.{i}"))).status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);
}
