//! Operating tollgate (issue 15), on the real binary: `/health` and `/ready` as a load
//! balancer sees them (a node whose probe answers 403, back up; SIGTERM while a request is
//! in flight), the health log line once per transition, reloads that add and remove upstream
//! servers (a loadgen run across the removal loses nothing) and refuse what needs a restart,
//! the key view (exact counts, reset, top-N), `/metrics` read by a Prometheus parser with
//! every family an operator expects, the Grafana dashboard's names, and `tollgate top`
//! driven under tmux.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// An admin request (optionally with a bearer token): (status, body).
fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let mut c = Client::connect(addr);
    let r = c.request(
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Content-Length: 0\r\n\r\n")
            .as_bytes(),
    );
    (r.status, r.body_text())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls `f` every 50 ms until it returns Some, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An upstream whose health path answers `status` (changeable) and every other path 200.
fn store_with_health(status: Arc<AtomicU16>) -> FakeUpstream {
    FakeUpstream::start(Arc::new(move |s: &Seen| {
        if s.head.starts_with(b"GET /minio/health/live ") {
            let st = status.load(Ordering::SeqCst);
            format!("HTTP/1.1 {st} X\r\nContent-Length: 0\r\n\r\n").into_bytes()
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
        }
    }))
}

const FAST_HEALTH: &str =
    "[upstream.health]\ninterval = \"100ms\"\ntimeout = \"500ms\"\nrise = 1\nfall = 1\n";

/// Garage answers MinIO's health path with 403: `/health` says 503 naming the node, the
/// status and what to set; the log says it once (not once per core); back up → 200.
#[test]
fn health_is_503_with_the_probe_status_until_the_node_is_back() {
    let status = Arc::new(AtomicU16::new(403));
    let up = store_with_health(status.clone());
    let p = start_proxy("ops-health", &[up.addr], 2, FAST_HEALTH, None);
    let a = p.admin.unwrap();
    let doc = wait_for(Duration::from_secs(5), "/health 503", || {
        let (st, body) = admin(a, "GET", "/health", None);
        (st == 503).then(|| json(&body))
    });
    assert_eq!(doc["status"], "unavailable");
    let down = &doc["upstreams"]["down"][0];
    assert_eq!(down["node"], up.addr.to_string());
    let why = down["last_check"].as_str().unwrap();
    assert!(
        why.contains("GET /minio/health/live: status 403 (healthy: 200-399)"),
        "{why}"
    );
    assert!(why.contains("set upstream.health.path"), "{why}");
    let stats = json(&admin(a, "GET", "/stats", None).1);
    assert_eq!(
        stats["upstream_nodes"][0]["last_check"], why,
        "the same reason in /stats"
    );
    let metrics = admin(a, "GET", "/metrics", None).1;
    let node = up.addr.to_string();
    assert!(
        metrics.contains(&format!(
            "tollgate_upstream_check_status{{node=\"{node}\"}} 403"
        )),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("tollgate_upstream_up{{node=\"{node}\"}} 0")));
    status.store(200, Ordering::SeqCst);
    let doc = wait_for(Duration::from_secs(5), "/health 200", || {
        let (st, body) = admin(a, "GET", "/health", None);
        (st == 200).then(|| json(&body))
    });
    assert_eq!(doc["status"], "ok");
    std::thread::sleep(Duration::from_millis(300));
    let log = std::fs::read_to_string(&p.log).unwrap();
    let downs = log
        .matches(&format!(
            "upstream {node} is down: GET /minio/health/live: status 403"
        ))
        .count();
    let ups = log
        .matches(&format!(
            "upstream {node} is up: GET /minio/health/live: status 200"
        ))
        .count();
    assert_eq!(
        (downs, ups),
        (1, 1),
        "one line per transition, from the probing core:\n{log}"
    );
}

/// SIGTERM: `/ready` answers 503 at once while the listeners still accept for
/// `shutdown_delay`; the request in flight finishes; then the process exits.
#[test]
fn sigterm_makes_ready_503_while_in_flight_requests_finish() {
    let up = FakeUpstream::start(Arc::new(|s: &Seen| {
        if s.head.starts_with(b"GET /slow") {
            std::thread::sleep(Duration::from_millis(1500));
        }
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()
    }));
    let mut p = start_proxy(
        "ops-drain",
        &[up.addr],
        2,
        "shutdown_delay = \"1s\"\n",
        None,
    );
    let a = p.admin.unwrap();
    wait_for(Duration::from_secs(5), "/ready 200", || {
        (admin(a, "GET", "/ready", None).0 == 200).then_some(())
    });
    let addr = p.addr;
    let slow = std::thread::spawn(move || {
        Client::connect(addr)
            .request(b"GET /slow HTTP/1.1\r\nHost: s3\r\n\r\n")
            .status
    });
    std::thread::sleep(Duration::from_millis(200));
    let pid = p.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    let doc = wait_for(Duration::from_millis(800), "/ready 503", || {
        let (st, body) = admin(a, "GET", "/ready", None);
        (st == 503).then(|| json(&body))
    });
    assert_eq!(doc["draining"], true);
    assert!(t0.elapsed() < Duration::from_millis(800));
    let r = Client::connect(p.addr)
        .request(b"GET /fast HTTP/1.1\r\nHost: s3\r\nConnection: close\r\n\r\n");
    assert_eq!(
        r.status, 200,
        "listeners still accept during shutdown_delay"
    );
    assert_eq!(slow.join().unwrap(), 200, "the request in flight finished");
    let exited = wait_for(Duration::from_secs(10), "exit", || {
        p.child.try_wait().unwrap()
    });
    assert!(exited.success(), "{exited:?}");
}

/// The config file with `servers` as its upstream list (the rest as written).
fn with_servers(p: &Proxy, servers: &[SocketAddr]) {
    let path = p.dir.join("tollgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let head = text
        .split("\n[[upstream.servers]]")
        .next()
        .unwrap()
        .to_string();
    let mut out = head;
    for s in servers {
        out.push_str(&format!("\n[[upstream.servers]]\naddr = \"{s}\"\n"));
    }
    std::fs::write(&path, out).unwrap();
}

fn config_nodes(a: SocketAddr) -> Vec<String> {
    let c = json(&admin(a, "GET", "/config", None).1);
    c["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap().to_string())
        .collect()
}

const KEYS: &str =
    "[keys]\nAKIAOPSONE0000000000 = \"premium\"\nAKIAOPSTWO0000000000 = \"premium\"\n";

/// A reload adds a server (requests reach it) and removes one under load: a loadgen run
/// across the removal has no failed request (sent = admitted + denied).
#[test]
fn reload_adds_and_drains_upstream_servers_without_failing_a_request() {
    let (a_up, b_up) = (
        FakeUpstream::start(ok_handler()),
        FakeUpstream::start(ok_handler()),
    );
    let p = start_proxy(
        "ops-reload",
        &[a_up.addr],
        2,
        "[limits]\nkeys_file = \"keys.toml\"\n",
        Some(KEYS),
    );
    let a = p.admin.unwrap();
    with_servers(&p, &[a_up.addr, b_up.addr]);
    let (st, body) = admin(a, "POST", "/reload", None);
    assert_eq!(st, 200, "{body}");
    wait_for(Duration::from_secs(5), "B in the config", || {
        (config_nodes(a).len() == 2).then_some(())
    });
    for _ in 0..20 {
        assert_eq!(
            Client::connect(p.addr)
                .request(&sigv4_get("/b/o", "AKIAOPSONE0000000000"))
                .status,
            200
        );
    }
    assert!(!b_up.seen().is_empty(), "the added server gets requests");
    let scenario = r#"
duration = "3s"
connections_per_core = 4
[[group]]
name = "ops"
tier = "premium"
key_prefix = "AKIAOPS"
key_count = 2
rate = "60/s"
auth = "x-api-key"
ops = { GET = 100 }
"#;
    let sc = loadgen::scenario::Scenario::from_toml(
        scenario,
        "ops",
        &loadgen::scenario::Overrides {
            target: Some(format!("http://{}", p.addr)),
            ..Default::default()
        },
    )
    .unwrap();
    let run = std::thread::spawn(move || loadgen::run::run_scenario(&sc, false).unwrap());
    std::thread::sleep(Duration::from_millis(1200));
    with_servers(&p, &[b_up.addr]);
    let (st, body) = admin(a, "POST", "/reload", None);
    assert_eq!(st, 200, "{body}");
    wait_for(Duration::from_secs(5), "A removed", || {
        (config_nodes(a) == [b_up.addr.to_string()]).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let a_seen = a_up.seen().len();
    let r = run.join().unwrap();
    let o = &r.overall;
    assert!(o.sent > 100, "{o:?}");
    assert_eq!(o.errors, 0, "no failed request across the removal: {o:?}");
    assert_eq!(o.sent, o.admitted + o.denied, "{o:?}");
    assert_eq!(
        a_up.seen().len(),
        a_seen,
        "the removed server gets no new request"
    );
}

/// Changing `workers` is refused by name in the reload result and in `/config`, never
/// reported as applied; the token change in the same file is applied.
#[test]
fn reload_names_what_needs_a_restart() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("ops-restart", &[up.addr], 2, "", None);
    let a = p.admin.unwrap();
    let path = p.dir.join("tollgate.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let text = text
        .replace("workers = 2", "workers = 3")
        .replace("[admin]\n", "[admin]\ntoken = \"t0k3n\"\n");
    std::fs::write(&path, text).unwrap();
    let (st, body) = admin(a, "POST", "/reload", None);
    assert_eq!(st, 200, "{body}");
    let r = json(&body);
    let refused: Vec<_> = r["needs_restart"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["workers"], "{body}");
    assert_eq!(r["needs_restart"][0]["running"], "2");
    assert!(
        r["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "admin"),
        "{body}"
    );
    assert!(
        !r["applied"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "workers")
    );
    assert_eq!(
        admin(a, "GET", "/config", None).0,
        401,
        "the new token is in force"
    );
    let c = json(&admin(a, "GET", "/config", Some("t0k3n")).1);
    assert_eq!(c["needs_restart"][0]["field"], "workers");
    let stats = json(&admin(a, "GET", "/stats", Some("t0k3n")).1);
    assert_eq!(stats["workers"], 2, "still two workers running");
}

const TIGHT: &str = "[limits]\nkeys_file = \"keys.toml\"\n[tiers.premium]\nper_minute = 100\n\
    per_second = 3\n[tiers.unknown]\nper_minute = 50\nper_second = 5\n";

/// `/keys/{key}` shows exactly what the limiter counted, retry-after once denied; a reset
/// lets the key through again; top-N lists the busiest key first.
#[test]
fn key_view_shows_the_limiters_counts_reset_and_top() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("ops-keys", &[up.addr], 2, TIGHT, Some(KEYS));
    let a = p.admin.unwrap();
    let (one, two) = ("AKIAOPSONE0000000000", "AKIAOPSTWO0000000000");
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            Client::connect(p.addr)
                .request(&sigv4_get("/b/o", one))
                .status
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    assert_eq!(
        Client::connect(p.addr)
            .request(&sigv4_get("/b/o", two))
            .status,
        200
    );
    let k = json(&admin(a, "GET", &format!("/keys/{one}"), None).1);
    assert_eq!(k["tier"], "premium");
    assert_eq!(k["tracked"], true);
    assert_eq!(k["windows"]["burst"]["count"], 3, "{k}");
    assert_eq!(k["windows"]["burst"]["limit"], 3);
    assert_eq!(
        k["windows"]["sustained"]["count"], 3,
        "the denial is not counted: {k}"
    );
    assert_eq!(k["windows"]["sustained"]["remaining"], 97);
    assert_eq!(k["would_admit"], false);
    let retry = k["retry_after_ms"].as_u64().unwrap();
    // At most the burst window plus one of its buckets (the window's granularity).
    assert!(retry > 0 && retry <= 1100, "{k}");
    assert_eq!(k["auth_method_last_seen"], "v4");
    assert!(k["owner_core"].as_u64().unwrap() < 2);
    assert!(k.get("cluster").is_some(), "the place for clustered counts");
    let top = json(&admin(a, "GET", "/keys?top=2", None).1);
    assert_eq!(top["busiest"][0]["subject"]["key"], one, "{top}");
    assert_eq!(top["busiest"][1]["subject"]["key"], two, "{top}");
    assert_eq!(top["most_denied"][0]["subject"]["key"], one, "{top}");
    assert_eq!(top["most_denied"][0]["denied"], 1);
    let (st, body) = admin(a, "POST", &format!("/keys/{one}/reset"), None);
    assert_eq!(
        (st, json(&body)["reset"].clone()),
        (200, serde_json::json!(true)),
        "{body}"
    );
    assert_eq!(
        Client::connect(p.addr)
            .request(&sigv4_get("/b/o", one))
            .status,
        200,
        "reset lets it through"
    );
    let k = json(&admin(a, "GET", &format!("/keys/{one}"), None).1);
    assert_eq!(k["windows"]["sustained"]["count"], 1, "{k}");
    let page = admin(a, "GET", "/", None).1;
    assert!(
        page.contains("<svg") && page.contains(one),
        "the page shows the chart and the key"
    );
}

/// Families an operator expects (issue 15), besides the ones before it.
const FAMILIES: &[&str] = &[
    "tollgate_request_duration_seconds",
    "tollgate_upstream_response_head_seconds",
    "tollgate_upstream_up",
    "tollgate_upstream_state",
    "tollgate_upstream_in_flight",
    "tollgate_upstream_pool_idle_connections",
    "tollgate_upstream_check_status",
    "tollgate_upstream_checks_failed_total",
    "tollgate_upstream_transitions_total",
    "tollgate_upstream_connects_total",
    "tollgate_client_bytes_received_total",
    "tollgate_client_bytes_sent_total",
    "tollgate_tls_handshakes_total",
    "tollgate_tls_handshake_failures_total",
    "tollgate_config_reloads_total",
    "tollgate_config_cores_behind",
    "tollgate_build_info",
    "tollgate_healthy",
    "tollgate_ready",
    "tollgate_uptime_seconds",
    "tollgate_worker_heartbeats_total",
    "tollgate_bad_requests_total",
    // before
    "tollgate_decisions_total",
    "tollgate_requests_total",
    "tollgate_responses_total",
    "tollgate_config_reload_failures_total",
    "tollgate_connections_active",
];

fn parse_metrics(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus text format")
}

#[test]
fn metrics_parse_and_have_every_family_an_operator_expects() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(
        "ops-metrics",
        &[up.addr],
        2,
        "[limits]\nkeys_file = \"keys.toml\"\n",
        Some(KEYS),
    );
    for _ in 0..5 {
        assert_eq!(
            Client::connect(p.addr)
                .request(&sigv4_get("/b/o", "AKIAOPSONE0000000000"))
                .status,
            200
        );
    }
    let text = admin(p.admin.unwrap(), "GET", "/metrics", None).1;
    let scrape = parse_metrics(&text);
    for f in FAMILIES {
        assert!(
            scrape.docs.contains_key(*f),
            "family {f} missing from /metrics"
        );
        assert!(
            scrape.samples.iter().any(|s| s.metric.starts_with(f)),
            "no sample of {f}"
        );
    }
    let admitted = scrape.samples.iter().find(|s| {
        s.metric == "tollgate_request_duration_seconds_count"
            && s.labels.get("tier") == Some("premium")
            && s.labels.get("decision") == Some("admitted")
    });
    let Some(prometheus_parse::Sample {
        value:
            prometheus_parse::Value::Untyped(n)
            | prometheus_parse::Value::Counter(n)
            | prometheus_parse::Value::Gauge(n),
        ..
    }) = admitted
    else {
        // The parser folds histogram series into one Histogram sample.
        let h = scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "tollgate_request_duration_seconds"
                    && s.labels.get("tier") == Some("premium")
                    && s.labels.get("decision") == Some("admitted")
            })
            .expect("premium admitted histogram");
        let prometheus_parse::Value::Histogram(buckets) = &h.value else {
            panic!("{:?}", h.value)
        };
        assert_eq!(
            buckets.last().unwrap().count,
            5.0,
            "five admitted requests: {buckets:?}"
        );
        assert_eq!(
            buckets.first().unwrap().less_than,
            0.00005,
            "buckets start at 50 µs"
        );
        return;
    };
    assert_eq!(*n, 5.0);
}

/// Every metric the shipped Grafana dashboard queries is exported.
#[test]
fn the_grafana_dashboard_names_only_exported_metrics() {
    let dash = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/grafana/tollgate-dashboard.json"
    ))
    .unwrap();
    let doc = json(&dash);
    let mut names = std::collections::BTreeSet::new();
    for p in doc["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let e = t["expr"].as_str().unwrap();
            let mut rest = e;
            while let Some(i) = rest.find("tollgate_") {
                let n: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + n.len()..];
                names.insert(n);
            }
        }
    }
    assert!(names.len() >= 20, "{names:?}");
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("ops-grafana", &[up.addr], 1, "", None);
    let text = admin(p.admin.unwrap(), "GET", "/metrics", None).1;
    let scrape = parse_metrics(&text);
    for n in &names {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| n.strip_suffix(s))
            .unwrap_or(n);
        assert!(
            scrape.docs.contains_key(base),
            "the dashboard names {n}, which /metrics does not export"
        );
    }
}

/// `tollgate top` under tmux, through the admin token: shows a key's admitted count, quits on q.
#[test]
fn tollgate_top_under_tmux_shows_a_keys_admitted_count() {
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is needed (scripts/deps.sh installs it)"
    );
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(
        "ops-top",
        &[up.addr],
        2,
        "[limits]\nkeys_file = \"keys.toml\"\n",
        Some(KEYS),
    );
    let a = p.admin.unwrap();
    let path = p.dir.join("tollgate.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[admin]\n", "[admin]\ntoken = \"topsecret\"\n");
    std::fs::write(&path, text).unwrap();
    assert_eq!(admin(a, "POST", "/reload", None).0, 200);
    wait_for(Duration::from_secs(5), "the token", || {
        (admin(a, "GET", "/stats", None).0 == 401).then_some(())
    });
    for _ in 0..7 {
        assert_eq!(
            Client::connect(p.addr)
                .request(&sigv4_get("/b/o", "AKIAOPSONE0000000000"))
                .status,
            200
        );
    }
    let session = format!("tollgate-top-{}", std::process::id());
    let cmd = format!(
        "{} top --admin {a} --token topsecret --interval 300ms",
        env!("CARGO_BIN_EXE_tollgate")
    );
    let tmux = |args: &[&str]| Command::new("tmux").args(args).output().unwrap();
    assert!(
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "120",
            "-y",
            "40",
            &cmd
        ])
        .status
        .success()
    );
    struct Kill(String);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("tmux")
                .args(["kill-session", "-t", &self.0])
                .output();
        }
    }
    let _kill = Kill(session.clone());
    let screen = wait_for(Duration::from_secs(10), "the key on the screen", || {
        let out = String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", &session]).stdout)
            .to_string();
        out.lines()
            .any(|l| {
                l.starts_with("AKIAOPSONE0000000000") && l.split_whitespace().nth(2) == Some("7")
            })
            .then_some(out)
    });
    assert!(screen.contains("health ok"), "{screen}");
    assert!(screen.lines().any(|l| l.starts_with("premium")), "{screen}");
    assert!(tmux(&["send-keys", "-t", &session, "q"]).status.success());
    wait_for(Duration::from_secs(5), "top to quit on q", || {
        (!tmux(&["has-session", "-t", &session]).status.success()).then_some(())
    });
}
