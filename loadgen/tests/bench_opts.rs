//! `loadgen bench` options the benchmark harness (bench/run.sh) relies on, end to end against
//! in-process servers: `--keys N` rotates the bench keys request by request (closed loop and
//! fixed rate), `--new-conn` opens one connection per request (HTTPS: resumed sessions unless
//! `--no-tls-resume`), `--pin` pins the worker threads, large bodies are sent whole, and the
//! JSON carries the counts the harness reads. Every child is killed by PID if it overruns.

mod common;

use common::{Behaviour, loadgen_bin, run_with_timeout, start, test_tls};
use loadgen::bench::keys::{KeyStyle, bench_key};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("loadgen-bench-opts-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Runs `loadgen bench URL ARGS -q --json FILE`, asserts exit 0, returns the JSON.
fn bench_json(url: &str, args: &[&str], name: &str) -> serde_json::Value {
    let json = tmp(name);
    let out = run_with_timeout(
        Command::new(loadgen_bin())
            .args(["bench", url, "-q", "--json"])
            .arg(&json)
            .args(args),
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

/// Requests per key seen by the responder, in key order 0..n of the bench keys.
fn per_key(r: &common::Responder, n: usize) -> Vec<usize> {
    let arrivals = r.arrivals.lock().unwrap();
    assert_eq!(arrivals.len(), n, "keys seen: {:?}", arrivals.keys());
    (0..n)
        .map(|i| arrivals[&bench_key(i, KeyStyle::Garage).0].len())
        .collect()
}

#[test]
fn keys_rotate_request_by_request_in_the_closed_loop() {
    let r = start(Behaviour::Fixed, None);
    let url = format!("http://127.0.0.1:{}/bench/object", r.port);
    let v = bench_json(&url, &["-c", "4", "-d", "1s", "--keys", "5"], "keys.json");
    let counts = per_key(&r, 5);
    let n = v["requests"].as_u64().unwrap();
    assert!(n > 50, "{n}");
    assert_eq!(counts.iter().sum::<usize>() as u64, n);
    // One thread, round robin across its connections: counts differ by at most one.
    let (lo, hi) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(hi - lo <= 1, "{counts:?}");
    assert_eq!(v["keys"], 5);
    assert_eq!(v["connections_opened"], 4);
}

#[test]
fn requests_caps_the_closed_loop_so_every_key_is_sent_exactly_k_times() {
    let r = start(Behaviour::Fixed, None);
    let url = format!("http://127.0.0.1:{}/bench/object", r.port);
    let v = bench_json(
        &url,
        &["-c", "4", "-d", "20s", "--keys", "7", "--requests", "21"],
        "requests.json",
    );
    assert_eq!(v["requests"], 21);
    assert_eq!(per_key(&r, 7), vec![3; 7]);
    assert!(
        v["elapsed_s"].as_f64().unwrap() < 10.0,
        "stopped at the count, not the duration"
    );
}

#[test]
fn keys_rotate_at_a_fixed_rate() {
    let r = start(Behaviour::Fixed, None);
    let url = format!("http://127.0.0.1:{}/bench/object", r.port);
    let v = bench_json(
        &url,
        &["-c", "4", "-d", "1s", "--rate", "200", "--keys", "4"],
        "keys-rate.json",
    );
    let counts = per_key(&r, 4);
    assert_eq!(
        counts.iter().sum::<usize>() as u64,
        v["requests"].as_u64().unwrap()
    );
    assert!(counts.iter().all(|&c| (45..=55).contains(&c)), "{counts:?}");
    assert!(v["send_lag_ms"]["p99"].is_number());
}

/// A plain HTTP/1.1 server that counts accepted connections and answers every request head.
fn counting_server() -> (u16, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    let acc = accepted.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            acc.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut chunk) {
                    buf.extend_from_slice(&chunk[..n]);
                    while let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..i + 4);
                        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                        if s.write_all(ok).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (port, accepted)
}

#[test]
fn new_conn_opens_a_connection_per_request() {
    let (port, accepted) = counting_server();
    let url = format!("http://127.0.0.1:{port}/x");
    let v = bench_json(&url, &["-c", "2", "-d", "1s", "--new-conn"], "newconn.json");
    let n = v["requests"].as_u64().unwrap();
    assert!(n > 20, "{n}");
    assert_eq!(accepted.load(Ordering::Relaxed), n);
    assert_eq!(v["connections_opened"].as_u64(), Some(n));
    assert_eq!(v["new_conn"], true);
    // Without it: keep-alive, one connection each.
    let (port, accepted) = counting_server();
    let url = format!("http://127.0.0.1:{port}/x");
    bench_json(&url, &["-c", "2", "-d", "1s"], "keepalive.json");
    assert_eq!(accepted.load(Ordering::Relaxed), 2);
}

/// A TLS server (the test CA's leaf) answering one request per connection; counts resumed and
/// full handshakes.
fn tls_server() -> (u16, Arc<[AtomicU64; 2]>) {
    let (cfg, _) = test_tls();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let kinds = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let k = kinds.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let mut tls =
                rustls::StreamOwned::new(rustls::ServerConnection::new(cfg.clone()).unwrap(), s);
            let mut chunk = [0u8; 4096];
            if !matches!(tls.read(&mut chunk), Ok(1..)) {
                continue;
            }
            let resumed = tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            k[usize::from(resumed)].fetch_add(1, Ordering::Relaxed);
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            let _ = tls.flush();
            // Read until the client closes, so its ticket arrives before the next connection.
            while matches!(tls.read(&mut chunk), Ok(1..)) {}
        }
    });
    (port, kinds)
}

#[test]
fn tls_new_conn_resumes_unless_told_not_to() {
    for (resume, name) in [(true, "resume.json"), (false, "full.json")] {
        let (port, kinds) = tls_server();
        let url = format!("https://localhost:{port}/x");
        let mut args = vec!["-c", "1", "-d", "1s", "--new-conn", "-k"];
        if !resume {
            args.push("--no-tls-resume");
        }
        let v = bench_json(&url, &args, name);
        let n = v["requests"].as_u64().unwrap();
        let (full, resumed) = (
            kinds[0].load(Ordering::Relaxed),
            kinds[1].load(Ordering::Relaxed),
        );
        assert!(n >= 10, "{n}");
        assert_eq!(full + resumed, n);
        if resume {
            // The first connection is a full handshake, the others resume.
            assert!(resumed + 1 >= n, "full {full}, resumed {resumed}");
        } else {
            assert_eq!(resumed, 0);
        }
    }
}

#[test]
fn large_bodies_are_sent_whole() {
    let r = start(Behaviour::Fixed, None);
    let url = format!("http://127.0.0.1:{}/big", r.port);
    let v = bench_json(
        &url,
        &[
            "-c", "1", "-d", "1s", "-m", "PUT", "--body", "1MiB", "--keys", "1",
        ],
        "put.json",
    );
    let n = v["requests"].as_u64().unwrap();
    assert!(n >= 2, "{n}");
    assert_eq!(v["status_classes"][2].as_u64(), Some(n));
    let out = v["bytes_out"].as_u64().unwrap();
    assert!(
        out >= n * (1 << 20) && out < n * ((1 << 20) + 1024),
        "{out} for {n}"
    );
}

#[test]
fn bad_combinations_are_refused() {
    for args in [
        &["--new-conn", "--rate", "10"][..],
        &["--body", "1MiB", "--rate", "10"][..],
        &["--new-conn", "--pipeline", "2"][..],
        &["--requests", "5", "--rate", "10"][..],
    ] {
        let out = run_with_timeout(
            Command::new(loadgen_bin())
                .args(["bench", "http://127.0.0.1:9/", "-d", "1s", "-q"])
                .args(args),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("bad option"));
    }
}

/// The CPUs a thread of `pid` may run on, for each of its threads.
fn allowed_cpus(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().into())
            })
        })
        .collect()
}

#[test]
fn pin_puts_the_workers_on_the_core() {
    let r = start(Behaviour::Fixed, None);
    let url = format!("http://127.0.0.1:{}/x", r.port);
    for extra in [&[][..], &["--rate", "100"][..]] {
        let mut child = Command::new(loadgen_bin())
            .args(["bench", &url, "-c", "2", "-d", "2s", "-q", "--pin", "0"])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut pinned = false;
        while !pinned && Instant::now() < deadline {
            pinned = allowed_cpus(child.id()).iter().any(|c| c == "0");
            std::thread::sleep(Duration::from_millis(20));
        }
        let limit = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > limit {
                let _ = child.kill();
                panic!("loadgen {} overran", child.id());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{extra:?}: {status}");
        assert!(pinned, "{extra:?}: no thread pinned to CPU 0");
    }
}
