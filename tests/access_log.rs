//! Access-log integration tests: the real binary with 2 workers writes one JSON line per
//! request (allowed, denied, unlimited, malformed), follows log rotation, and writes what
//! its cores still hold when it stops.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const KEYS: &str = r#"
[keys]
"AKIABASIC00000000001" = "basic"
"#;

fn cfg(log: &Path, flush: &str) -> String {
    format!(
        r#"
[limits]
keys_file = "keys.toml"
[upstream.health]
enabled = false
[access_log]
path = "{}"
flush_interval = "{flush}"
"#,
        log.display()
    )
}

/// The log's lines once it has at least `n` (parsed), or a panic after 10 s.
fn wait_lines(path: &Path, n: usize) -> Vec<Value> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().count() >= n {
            assert!(text.ends_with('\n'), "only whole lines: {text:?}");
            return text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{n} lines expected in {}, have:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn by_id<'a>(lines: &'a [Value], rid: &str) -> &'a Value {
    let hits: Vec<_> = lines.iter().filter(|l| l["request_id"] == rid).collect();
    assert_eq!(hits.len(), 1, "one line for request {rid}: {lines:#?}");
    hits[0]
}

#[test]
fn one_json_line_per_request_and_rotation() {
    let up = FakeUpstream::start(ok_handler());
    let dir = tmpdir("alog");
    let log = dir.join("access.log");
    let p = start_proxy("alog", &[up.addr], 2, &cfg(&log, "100ms"), Some(KEYS));

    // 11 GETs of a basic key (10 per second): 10 admitted, the 11th denied. Each on its own
    // connection, so both cores log.
    let mut ids = Vec::new();
    for i in 0..11 {
        let mut c = Client::connect(p.addr);
        let r = c.request(&sigv4_get(&format!("/b/o{i}"), "AKIABASIC00000000001"));
        assert_eq!(r.status, if i < 10 { 200 } else { 429 }, "request {i}");
        ids.push((r.status, r.header("X-Request-ID").unwrap().to_string()));
    }
    let mut c = Client::connect(p.addr);
    c.send(&with_method(
        &sigv4_get("/b/h", "AKIABASIC00000000001"),
        "HEAD",
    ));
    let head = c.recv_head();
    let put = c.request(
        b"PUT /b/p HTTP/1.1\r\nHost: x\r\nX-Request-ID: client-put-1\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(put.header("X-Request-ID"), Some("client-put-1"));
    let mut bad = Client::connect(p.addr);
    let r400 = bad
        .request(b"GET /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
    assert_eq!(r400.status, 400);

    let lines = wait_lines(&log, 14);
    assert_eq!(lines.len(), 14, "exactly one line per request");
    let mut cores = std::collections::BTreeSet::new();
    for (i, (status, rid)) in ids.iter().enumerate() {
        let l = by_id(&lines, rid);
        assert_eq!(l["status"], *status);
        assert_eq!(l["method"], "GET");
        assert_eq!(l["target"], format!("/b/o{i}"));
        assert_eq!(l["key"], "AKIABASIC00000000001");
        assert_eq!(l["auth"], "v4");
        assert_eq!(l["tier"], "basic");
        assert_eq!(
            l["limit"],
            if *status == 200 { "admitted" } else { "denied" }
        );
        assert_eq!(l["tls"], false);
        assert_eq!(l["request_length"], Value::Null);
        assert!(l["bytes_sent"].as_u64().unwrap() > 100, "{l}");
        assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
        assert!(l["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(l["time"].as_str().unwrap().ends_with('Z'));
        cores.insert(l["core"].as_u64().unwrap());
    }
    assert_eq!(cores.len(), 2, "both cores logged: {cores:?}");
    let h = by_id(&lines, head.header("X-Request-ID").unwrap());
    assert_eq!(
        (h["method"].as_str(), h["limit"].as_str()),
        (Some("HEAD"), Some("unlimited"))
    );
    let pl = by_id(&lines, "client-put-1");
    assert_eq!(pl["method"], "PUT");
    assert_eq!(pl["request_length"], 5);
    assert_eq!(pl["key"], Value::Null);
    assert_eq!(pl["auth"], "anonymous");
    assert_eq!(
        pl["limit"], "admitted",
        "anonymous PUT within its tier's limit"
    );
    let b = by_id(&lines, r400.header("X-Request-ID").unwrap());
    assert_eq!(b["status"], 400);
    assert_eq!(
        (b["method"].as_str(), b["limit"].as_str()),
        (Some(""), Some("-"))
    );

    // Rotation: the file is renamed; the next lines go to a new file at the same path.
    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
    let mut c = Client::connect(p.addr);
    let r = c.request(b"DELETE /b/d HTTP/1.1\r\nHost: x\r\n\r\n");
    let new = wait_lines(&log, 1);
    assert_eq!(new.len(), 1);
    assert_eq!(new[0]["request_id"], r.header("X-Request-ID").unwrap());
    assert_eq!(new[0]["method"], "DELETE");
    assert_eq!(wait_lines(&dir.join("access.log.1"), 14).len(), 14);

    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["access_log"]["lines"], 15);
    assert_eq!(stats["access_log"]["dropped_lines"], 0);
}

#[test]
fn lines_still_buffered_are_written_on_shutdown() {
    let up = FakeUpstream::start(ok_handler());
    let dir = tmpdir("alog-stop");
    let log = dir.join("access.log");
    // A flush interval longer than the test: only shutdown can write these lines.
    let mut p = start_proxy("alog-stop", &[up.addr], 2, &cfg(&log, "1h"), Some(KEYS));
    for i in 0..6 {
        let mut c = Client::connect(p.addr);
        let r = c.request(format!("GET /k{i} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        // anonymous: 5 per second, so the 6th may be denied; logged either way
        assert!(r.status == 200 || r.status == 429, "{}", r.status);
    }
    std::thread::sleep(Duration::from_millis(400)); // several housekeeping ticks
    assert_eq!(
        std::fs::read_to_string(&log).unwrap_or_default(),
        "",
        "nothing written before the flush interval"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    while p.child.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = wait_lines(&log, 6);
    let mut targets: Vec<_> = lines.iter().map(|l| l["target"].to_string()).collect();
    targets.sort();
    assert_eq!(targets.len(), 6);
    assert_eq!(targets[0], "\"/k0\"");
    assert_eq!(targets[5], "\"/k5\"");
}

#[test]
fn an_unwritable_log_path_stops_startup_with_a_clear_error() {
    let dir = tmpdir("alog-bad");
    let cfg_path = dir.join("tollgate.toml");
    std::fs::write(
        &cfg_path,
        format!(
            "listen = [\"127.0.0.1:{}\"]\n[admin]\nlisten = \"off\"\n[[upstream.servers]]\naddr = \"127.0.0.1:9\"\n[access_log]\npath = \"no/such/dir/access.log\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["run", "--config"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("access_log.path") && err.contains("no/such/dir/access.log"),
        "{err}"
    );
}
