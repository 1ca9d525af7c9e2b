//! The admin API against hostile clients (issue 11): a slow client does not delay
//! `/health` for others, a foreign `Host` is refused, a bad table subject is a 400 (and
//! clears nothing), malformed input crashes nothing, and more tiers than the stats hold
//! do not break `/stats` or `/metrics`. Real processes on loopback, bounded in time.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{FakeUpstream, ok_handler, start_proxy};

/// Sends `raw` to the admin listener and returns (status, body); the connection closes
/// after one answer.
fn admin_raw(admin: SocketAddr, raw: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn get(admin: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\r\n",
        admin.port()
    );
    admin_raw(admin, req.as_bytes())
}

fn proxy(tag: &str, body: &str) -> (FakeUpstream, common::Proxy, SocketAddr) {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(tag, &[up.addr], 1, body, None);
    let admin = p.admin.unwrap();
    (up, p, admin)
}

#[test]
fn a_dripping_client_does_not_delay_health() {
    let (_up, _p, admin) = proxy("admin-drip", "");
    let mut drip = TcpStream::connect(admin).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let dripper = std::thread::spawn(move || {
        for b in b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaa" {
            if stop2.load(std::sync::atomic::Ordering::SeqCst) || drip.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..5 {
        let t0 = Instant::now();
        let (status, body) = get(admin, "GET", "/health");
        let took = t0.elapsed();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with("{") && body.contains("\"status\":\"ok\""),
            "{body}"
        );
        assert!(
            took < Duration::from_secs(1),
            "/health took {took:?} behind a dripping client"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    dripper.join().unwrap();
}

#[test]
fn a_slow_head_times_out() {
    let (_up, _p, admin) = proxy("admin-slow", "");
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\n").unwrap();
    let t0 = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    // No byte for IDLE_TIMEOUT (2 s): answered 408 and closed, well before 10 s.
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"),
        "{out:?}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[test]
fn foreign_host_is_refused() {
    let (_up, _p, admin) = proxy("admin-host", "");
    let port = admin.port();
    for host in [
        "evil.example",
        &format!("evil.example:{port}"),
        "localhost:1",
    ] {
        let (status, _) = admin_raw(
            admin,
            format!("GET /stats HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 403, "Host: {host}");
    }
    let (status, _) = admin_raw(
        admin,
        b"POST /table/clear HTTP/1.1\r\nHost: rebind.example\r\n\r\n",
    );
    assert_eq!(status, 403);
    let (status, _) = admin_raw(admin, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(status, 403, "no Host at all");
    for host in [
        format!("localhost:{port}"),
        "localhost".into(),
        format!("[::1]:{port}"),
    ] {
        let (status, _) = admin_raw(
            admin,
            format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 200, "Host: {host}");
    }
}

#[test]
fn bad_subjects_are_400_and_clear_nothing() {
    let (_up, p, admin) = proxy("admin-subject", "[limits]\nunlisted_keys = \"per_key\"\n");
    // Track one subject, then ask to clear with subjects that do not parse.
    let mut c = common::Client::connect(p.addr);
    let r = c.request(&common::sigv4_get("/b/o", "AKIAKEEPME0000000000"));
    assert_eq!(r.status, 200);
    for q in [
        "addr=10.0.0.300",
        "addr=",
        "key=",
        "kee=AKIAKEEPME0000000000",
        "key=A&addr=1.2.3.4",
    ] {
        let (status, body) = get(admin, "POST", &format!("/table/clear?{q}"));
        assert_eq!(status, 400, "{q}: {body}");
        let (status, _) = get(admin, "GET", &format!("/table?{q}"));
        assert_eq!(status, 400, "{q}");
    }
    let (status, body) = get(admin, "GET", "/table?key=AKIAKEEPME0000000000");
    assert_eq!(status, 200, "still tracked: {body}");
    let (status, body) = get(admin, "POST", "/table/clear?key=AKIAKEEPME0000000000");
    assert_eq!((status, body.as_str()), (200, "{\"removed\":1}"));
}

#[test]
fn malformed_input_crashes_nothing() {
    let (_up, _p, admin) = proxy("admin-fuzz", "");
    let h = format!("Host: 127.0.0.1:{}", admin.port());
    let nasty: Vec<Vec<u8>> = vec![
        format!("GET /table?key=%\u{ff} HTTP/1.1\r\n{h}\r\n\r\n").into_bytes(),
        // `%`, one hex digit, then a non-ASCII byte: the old decoder sliced a str mid-char.
        format!("GET /table?key=%1\u{ff} HTTP/1.1\r\n{h}\r\n\r\n").into_bytes(),
        format!("POST /table/clear?addr=%a\u{ff}z HTTP/1.1\r\n{h}\r\n\r\n").into_bytes(),
        format!("GET /%\u{ff}%\u{ff} HTTP/1.1\r\n{h}\r\n\r\n").into_bytes(),
        format!("GET /table?key=% HTTP/1.1\r\n{h}\r\n\r\n").into_bytes(),
        format!("GET /table/top?n=%\u{ff}9 HTTP/1.1\r\n{h}\r\n\r\n").into_bytes(),
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03".to_vec(),
        vec![0xff; 9000],
        b"GET / HTTP/1.1\r\n".repeat(600),
    ];
    for raw in &nasty {
        let mut s = TcpStream::connect(admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(raw);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        // The admin API still answers afterwards.
        let (status, _) = get(admin, "GET", "/health");
        assert_eq!(
            status,
            200,
            "after {:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        );
    }
}

/// Stats keep counters for at most `stats::MAX_TIERS` tiers: a config with more is refused
/// with the field named (it used to pass validation and make /stats and /metrics panic), and
/// the most that is accepted renders.
#[test]
fn more_tiers_than_stats_hold_are_refused_and_the_most_allowed_render() {
    let tiers = |n: usize| {
        let mut t = String::new();
        for i in 0..n {
            t.push_str(&format!(
                "\n[tiers.t{i}]\nper_minute = 100\nper_second = 10\n"
            ));
        }
        let last = n - 1;
        format!("[limits]\ndefault_tier = \"t{last}\"\nanonymous_tier = \"t{last}\"\n{t}")
    };
    let dir = common::tmpdir("admin-tiers-check");
    let path = dir.join("t.toml");
    std::fs::write(
        &path,
        format!(
            "[[upstream.servers]]\naddr = \"127.0.0.1:9\"\n{}",
            tiers(40)
        ),
    )
    .unwrap();
    let out = common::run_tollgate(
        ["check", "--config", path.to_str().unwrap()],
        Duration::from_secs(20),
    );
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("tiers: 40 tiers: at most 32"),
        "{}",
        out.stderr
    );

    let (_up, p, admin) = proxy("admin-tiers", &tiers(32));
    let mut c = common::Client::connect(p.addr);
    assert_eq!(
        c.request(&common::sigv4_get("/b/o", "AKIATIER310000000000"))
            .status,
        200
    );
    let (status, stats) = get(admin, "GET", "/stats");
    assert_eq!(status, 200, "{stats}");
    assert!(stats.contains("\"t31\""), "{stats}");
    let (status, metrics) = get(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("tier=\"t0\""), "{metrics}");
    let (status, _) = get(admin, "GET", "/stats?human");
    assert_eq!(status, 200);
}

/// /metrics is valid Prometheus text format 0.0.4: every sample belongs to a family declared
/// just before it with HELP and TYPE, no family twice, numeric values, and the families an
/// operator relies on are there.
#[test]
fn metrics_are_well_formed_prometheus_text() {
    let (_up, p, admin) = proxy("admin-metrics", "");
    let mut c = common::Client::connect(p.addr);
    assert_eq!(
        c.request(&common::sigv4_get("/b/o", "AKIAMETRICS000000000"))
            .status,
        200
    );
    let (status, text) = get(admin, "GET", "/metrics");
    assert_eq!(status, 200);
    let mut declared: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut helped: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped = Some(rest.split_whitespace().next().unwrap().to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let name = it.next().unwrap().to_string();
            assert!(
                matches!(it.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            assert_eq!(
                helped.as_deref(),
                Some(name.as_str()),
                "HELP before TYPE: {line}"
            );
            assert!(!declared.contains(&name), "family twice: {name}");
            declared.push(name.clone());
            current = Some(name);
        } else {
            let (series, value) = line.rsplit_once(' ').expect(line);
            let name = series.split('{').next().unwrap();
            // A histogram's series carry the family name with a suffix.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| Some(*f) == current.as_deref())
                .unwrap_or(name);
            assert_eq!(
                Some(family),
                current.as_deref(),
                "sample outside its family: {line}"
            );
            assert!(value.parse::<f64>().is_ok(), "{line}");
            if let Some(labels) = series.strip_prefix(name) {
                assert!(
                    labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                    "{line}"
                );
            }
        }
    }
    for f in [
        "tollgate_requests_total",
        "tollgate_decisions_total",
        "tollgate_upstream_errors_total",
        "tollgate_connections_active",
        "tollgate_table_entries",
        "tollgate_auth_failures_total",
        "tollgate_config_reload_failures_total",
    ] {
        assert!(declared.iter().any(|d| d == f), "{f} missing");
    }
    assert!(
        text.contains("tollgate_requests_total{method=\"GET\"} 1"),
        "{text}"
    );
}
