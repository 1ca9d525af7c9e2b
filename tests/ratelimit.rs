//! Rate-limit integration tests: the real binary with 2 workers, a fake upstream,
//! many connections per key (so the cross-core owner path is exercised).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

const KEYS: &str = r#"
[keys]
"AKIAPREMIUM000000001" = "premium"
"AKIAPREMIUM000000002" = "premium"
"AKIABASIC00000000001" = "basic"
"#;

fn cfg(extra: &str) -> String {
    format!(
        r#"
[limits]
keys_file = "keys.toml"
{extra}
[upstream.health]
enabled = false
"#
    )
}

/// Sends `n` requests for `key` from `conns` parallel connections; returns (ok, denied).
fn blast(addr: std::net::SocketAddr, key: &str, n: usize, conns: usize) -> (usize, usize) {
    let ok = Arc::new(AtomicUsize::new(0));
    let denied = Arc::new(AtomicUsize::new(0));
    let per = n / conns;
    let hs: Vec<_> = (0..conns)
        .map(|i| {
            let (ok, denied) = (ok.clone(), denied.clone());
            let key = key.to_string();
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                for j in 0..per {
                    let r = c.request(&sigv4_get(&format!("/b/o{i}-{j}"), &key));
                    match r.status {
                        200 => ok.fetch_add(1, Ordering::SeqCst),
                        429 => denied.fetch_add(1, Ordering::SeqCst),
                        s => panic!("unexpected status {s}"),
                    };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    (ok.load(Ordering::SeqCst), denied.load(Ordering::SeqCst))
}

#[test]
fn premium_burst_is_exact_across_cores_and_recovers() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("burst", &[up.addr], 2, &cfg(""), Some(KEYS));
    let t0 = Instant::now();
    let (ok, denied) = blast(p.addr, "AKIAPREMIUM000000001", 200, 8);
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(900),
        "burst must fit in one window (took {took:?})"
    );
    assert_eq!(ok, 50, "exactly the per-second limit is admitted");
    assert_eq!(denied, 150);
    assert_eq!(
        up.seen().len(),
        50,
        "denied requests never reach the upstream"
    );
    // Another key is unaffected.
    let (ok2, _) = blast(p.addr, "AKIAPREMIUM000000002", 20, 2);
    assert_eq!(ok2, 20, "keys are independent");
    // After the window passes, the key is admitted again.
    std::thread::sleep(Duration::from_millis(1100));
    let (ok3, denied3) = blast(p.addr, "AKIAPREMIUM000000001", 20, 4);
    assert_eq!((ok3, denied3), (20, 0));
    // Remote checks happened (connections land on both cores, the key has one owner).
    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert!(
        v["cross_core"]["remote_checks"].as_u64().unwrap() > 0,
        "{stats}"
    );
    assert_eq!(v["tiers"]["premium"]["methods"]["GET"]["admitted"], 90);
    assert_eq!(v["tiers"]["premium"]["methods"]["GET"]["denied"], 150);
}

#[test]
fn retrying_client_is_not_locked_out() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("retry", &[up.addr], 2, &cfg(""), Some(KEYS));
    let key = "AKIABASIC00000000001"; // basic: 10/s, 100/min
    let mut c = Client::connect(p.addr);
    let t0 = Instant::now();
    let mut admitted_times = Vec::new();
    // Retry every 20 ms (50/s) for 2.5 s: well above the 10/s limit.
    while t0.elapsed() < Duration::from_millis(2500) {
        let r = c.request(&sigv4_get("/b/o", key));
        if r.status == 200 {
            admitted_times.push(t0.elapsed());
        } else {
            assert_eq!(r.status, 429);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Seed behaviour (counting denials) would admit ~10 then nothing. Exact semantics
    // admit about 10 per second: first 10 at once, then again once the first second
    // has passed.
    assert!(
        admitted_times.len() >= 22,
        "admitted {}",
        admitted_times.len()
    );
    assert!(
        admitted_times.len() <= 30,
        "admitted {}",
        admitted_times.len()
    );
    let after_first_window = admitted_times
        .iter()
        .filter(|t| **t > Duration::from_millis(1000))
        .count();
    assert!(
        after_first_window >= 10,
        "let through again after the window: {admitted_times:?}"
    );
}

#[test]
fn unlimited_methods_anonymous_per_address_and_deny_response() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("methods", &[up.addr], 2, &cfg(""), Some(KEYS));
    let key = "AKIABASIC00000000001";
    let mut c = Client::connect(p.addr);
    for m in ["DELETE", "HEAD", "POST"] {
        for _ in 0..15 {
            c.send(&with_method(&sigv4_get("/b/o", key), m));
            let r = if m == "HEAD" { c.recv_head() } else { c.recv() };
            assert_eq!(r.status, 200, "{m} is not limited");
        }
    }
    // Anonymous: unknown tier (5/s), counted per client address.
    let anon = b"GET /public/o HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut a1 = Client::connect_from(p.addr, Some("127.0.0.1"));
    let mut a2 = Client::connect_from(p.addr, Some("127.0.0.2"));
    let s1: Vec<u16> = (0..7).map(|_| a1.request(anon).status).collect();
    let s2: Vec<u16> = (0..7).map(|_| a2.request(anon).status).collect();
    assert_eq!(s1.iter().filter(|s| **s == 200).count(), 5, "{s1:?}");
    assert_eq!(
        s2.iter().filter(|s| **s == 200).count(),
        5,
        "second address has its own budget: {s2:?}"
    );

    // The denied response, field by field. The 10 admissions (the burst limit) happen
    // within `elapsed`, so the burst window binds: the first of them leaves the exact
    // trailing window 1000 ms after it was admitted, and the bucketed window lets a retry
    // through at most g - 1 ms later (g = the burst ring's bucket width for this tier).
    let (_, g_b) = bucket_ms((100, 60_000), (10, 1_000));
    let t0 = Instant::now();
    for i in 0..10 {
        assert_eq!(
            c.request(&sigv4_get("/b/o", key)).status,
            200,
            "request {i}"
        );
    }
    let r = c.request(&sigv4_get("/bucket/obj", key));
    let elapsed = t0.elapsed().as_millis() as u64;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Content-Type"), Some("application/xml"));
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    let amz: u64 = r.header("x-amz-retry-after").unwrap().parse().unwrap();
    assert!(
        (1000u64.saturating_sub(elapsed)..=1000 + g_b - 1).contains(&amz),
        "x-amz-retry-after {amz} (elapsed {elapsed} ms, g {g_b} ms)"
    );
    assert_eq!(
        retry,
        amz.div_ceil(1000).max(1),
        "Retry-After is amz in s, rounded up"
    );
    assert!(retry == 1 || retry == 2, "{retry}");
    assert_eq!(r.header("X-RateLimit-Group"), Some("basic"));
    assert_eq!(r.header("X-RateLimit-Limit-Per-Minute"), Some("100"));
    assert_eq!(
        r.header("X-RateLimit-Current-Per-Minute"),
        Some("10"),
        "denied requests are not counted"
    );
    assert_eq!(r.header("X-API-Key"), Some(key));
    assert_eq!(r.header("X-Auth-Method"), Some("v4"));
    assert!(r.header("X-Request-ID").is_some_and(|v| !v.is_empty()));
    assert_eq!(
        r.header("RateLimit-Policy"),
        Some("\"sustained\";q=100;w=60, \"burst\";q=10;w=1")
    );
    assert_eq!(
        r.header("RateLimit"),
        Some(format!("\"burst\";r=0;t={retry}").as_str())
    );
    let body = String::from_utf8(r.body.clone()).unwrap();
    assert!(body.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>"));
    assert!(body.contains("<Code>SlowDown</Code>"));
    assert!(
        body.contains(
            "<Message>Rate limit exceeded for tier basic (10 requests per second)</Message>"
        ),
        "{body}"
    );
    assert!(body.contains("<Resource>/bucket/obj</Resource>"));
    assert!(body.contains(&format!(
        "<RequestId>{}</RequestId>",
        r.header("X-Request-ID").unwrap()
    )));
    assert!(body.contains(&format!("<ApiKey>{key}</ApiKey>")));
    // Allowed responses carry the headers too.
    let ok = c.request(&with_method(&sigv4_get("/b/o", key), "DELETE"));
    assert!(ok.header("X-Request-ID").is_some());
}

#[test]
fn denied_expect_continue_upload_gets_error_before_body() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("expect-deny", &[up.addr], 2, &cfg(""), Some(KEYS));
    let key = "AKIABASIC00000000001";
    let mut c = Client::connect(p.addr);
    for _ in 0..10 {
        c.request(&sigv4_get("/b/o", key));
    }
    let put = String::from_utf8(sigv4_get("/b/up", key))
        .unwrap()
        .replacen("GET", "PUT", 1)
        .replacen(
            "\r\n\r\n",
            "\r\nContent-Length: 1048576\r\nExpect: 100-continue\r\n\r\n",
            1,
        );
    c.send(put.as_bytes());
    let r = c.recv();
    assert_eq!(r.status, 429, "final status instead of 100 Continue");
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(
        up.seen().iter().all(|s| !s.head.starts_with(b"PUT")),
        "upload never forwarded"
    );
}

#[test]
fn shadow_mode_forwards_and_reports() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("shadow", &[up.addr], 2, &cfg("enforce = false"), Some(KEYS));
    let key = "AKIABASIC00000000001";
    let mut c = Client::connect(p.addr);
    let mut shadow = 0;
    for _ in 0..15 {
        let r = c.request(&sigv4_get("/b/o", key));
        assert_eq!(r.status, 200, "shadow mode forwards everything");
        if r.header("X-RateLimit-Shadow") == Some("deny") {
            shadow += 1;
        }
    }
    assert_eq!(shadow, 5);
    assert_eq!(up.seen().len(), 15);
    let (_, stats) = admin_get(p.admin.unwrap(), "/stats");
    let v: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(v["tiers"]["basic"]["methods"]["GET"]["shadow_denied"], 5);
    let (_, metrics) = admin_get(p.admin.unwrap(), "/metrics");
    assert!(
        metrics.contains(
            "tollgate_decisions_total{tier=\"basic\",method=\"GET\",decision=\"shadow_denied\"} 5"
        ),
        "{metrics}"
    );
}

#[test]
fn hot_reload_of_keys_keeps_counters_and_bad_file_keeps_old_config() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("reload", &[up.addr], 2, &cfg(""), Some(KEYS));
    let admin = p.admin.unwrap();
    let newkey = "AKIANEWKEY0000000001";
    let mut c = Client::connect(p.addr);
    // Unknown key → default tier "unknown" (5/s).
    let n_ok = (0..8)
        .filter(|_| c.request(&sigv4_get("/b/o", newkey)).status == 200)
        .count();
    assert_eq!(n_ok, 5);
    let (_, v1) = admin_get(admin, "/config/version");
    let v1: serde_json::Value = serde_json::from_str(&v1).unwrap();
    std::fs::write(
        p.dir.join("keys.toml"),
        format!("{KEYS}\"{newkey}\" = \"premium\"\n"),
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let (_, v) = admin_get(admin, "/config/version");
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        if v["version"].as_u64() > v1["version"].as_u64() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "reload not picked up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.request(&sigv4_get("/b/o", newkey));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("X-RateLimit-Group"), Some("premium"));
    // A broken keys file is rejected; the old config stays.
    std::fs::write(
        p.dir.join("keys.toml"),
        "[keys]\n\"AKIAX\" = \"no-such-tier\"\n",
    )
    .unwrap();
    let t0 = Instant::now();
    loop {
        let (_, v) = admin_get(admin, "/config/version");
        let v: serde_json::Value = serde_json::from_str(&v).unwrap();
        if v["reload_failures"].as_u64().unwrap() > 0 {
            assert!(
                v["last_reload_error"]
                    .as_str()
                    .unwrap()
                    .contains("no-such-tier"),
                "{v}"
            );
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "bad reload not reported"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = c.request(&sigv4_get("/b/o", newkey));
    assert_eq!(
        r.header("X-RateLimit-Group"),
        Some("premium"),
        "old config kept"
    );
    // Table inspection through the admin API.
    let (st, t) = admin_get(admin, &format!("/table?key={newkey}"));
    assert_eq!(st, 200, "{t}");
    assert!(t.contains("\"tier\":\"premium\""), "{t}");
}

/// Bucket widths in ms (sustained, burst) the limiter uses for a tier given as
/// `(limit, window ms)` pairs: the window's precision, which bounds the timing headers.
fn bucket_ms(sustained: (u32, u32), burst: (u32, u32)) -> (u64, u64) {
    use tollgate::config::WindowConfig;
    let w = |(limit, length_ms)| WindowConfig { length_ms, limit };
    tollgate::limit::TierLimits::new(w(sustained), w(burst)).bucket_ms()
}

/// A tier whose timing headers are exact: admitted requests get
/// `t = ceil(reset / 1000)` with `reset` in `[W, W + g - 1]` (the binding window empties
/// when its newest bucket leaves), so a 900 ms burst window with `g <= 101` gives `t = 1`
/// whatever the bucket phase; a 1 s window would give 1 or 2.
const HDR_KEY: &str = "AKIAHDRTEST000000001";
const HDR_TIERS: &str = r#"
[tiers.hdr]
sustained = { limit = 4, window = "60s" }
burst = { limit = 3, window = "900ms" }

[tiers.unknown]
per_minute = 50
per_second = 5
"#;

fn hdr_keys() -> String {
    format!("[keys]\n\"{HDR_KEY}\" = \"hdr\"\n")
}

fn num(r: &Resp, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("{name} missing: {:?}", r.headers))
        .parse()
        .unwrap()
}

#[test]
fn allowed_and_denied_rate_limit_headers_are_exact() {
    let (g_s, g_b) = bucket_ms((4, 60_000), (3, 900));
    assert!(900 + g_b - 1 <= 1000, "precondition: burst g {g_b} ms");
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(
        "hdr-exact",
        &[up.addr],
        2,
        &cfg(HDR_TIERS),
        Some(&hdr_keys()),
    );
    let policy = "\"sustained\";q=4;w=60, \"burst\";q=3;w=1";
    let mut c = Client::connect(p.addr);
    let t0 = Instant::now();
    // Admitted 1..=3: the burst window binds (2/3 < 3/4 of the quota left, ...).
    for i in 1..=3u64 {
        let r = c.request(&sigv4_get("/b/o", HDR_KEY));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("RateLimit-Policy"), Some(policy));
        assert_eq!(
            r.header("RateLimit"),
            Some(format!("\"burst\";r={};t=1", 3 - i).as_str()),
            "request {i}"
        );
        assert_eq!(r.header("X-RateLimit-Group"), Some("hdr"));
        assert_eq!(r.header("X-RateLimit-Limit-Per-Minute"), Some("4"));
        assert_eq!(num(&r, "X-RateLimit-Current-Per-Minute"), i);
        assert_eq!(r.header("X-API-Key"), Some(HDR_KEY));
        assert_eq!(r.header("X-Auth-Method"), Some("v4"));
        assert_eq!(r.header_all("X-Request-ID").len(), 1);
        assert_eq!(r.header("Retry-After"), None, "deny-only header");
        assert_eq!(r.header("x-amz-retry-after"), None, "deny-only header");
        assert_eq!(r.header("X-Up"), Some("1"), "upstream's own headers kept");
    }
    // Denied by the burst window: the retry is at most 900 + g - 1 <= 1000 ms away, so
    // Retry-After is exactly 1; x-amz-retry-after lies between the exact sliding log's
    // answer (first admission + 900 ms) and that plus one bucket.
    let r = c.request(&sigv4_get("/b/o", HDR_KEY));
    let elapsed = t0.elapsed().as_millis() as u64;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("Retry-After"), Some("1"));
    let amz = num(&r, "x-amz-retry-after");
    assert!(
        (900u64.saturating_sub(elapsed)..=900 + g_b - 1).contains(&amz),
        "x-amz-retry-after {amz} (elapsed {elapsed} ms, g {g_b} ms)"
    );
    assert_eq!(r.header("RateLimit-Policy"), Some(policy));
    assert_eq!(r.header("RateLimit"), Some("\"burst\";r=0;t=1"));
    assert_eq!(r.header("X-RateLimit-Group"), Some("hdr"));
    assert_eq!(r.header("X-RateLimit-Limit-Per-Minute"), Some("4"));
    assert_eq!(num(&r, "X-RateLimit-Current-Per-Minute"), 3);
    assert_eq!(r.header("X-API-Key"), Some(HDR_KEY));
    assert!(
        r.body_text().contains(
            "<Message>Rate limit exceeded for tier hdr (3 requests per 900 milliseconds)</Message>"
        ),
        "{}",
        r.body_text()
    );
    // x-amz-retry-after is truthful: waiting exactly that long gets the next one in (the
    // server's clock has moved at least as far as ours). Now the sustained window binds.
    std::thread::sleep(Duration::from_millis(amz));
    let slept = amz;
    let r = c.request(&sigv4_get("/b/o", HDR_KEY));
    assert_eq!(r.status, 200, "admitted after x-amz-retry-after");
    assert_eq!(num(&r, "X-RateLimit-Current-Per-Minute"), 4);
    let rl = r.header("RateLimit").unwrap();
    let t: u64 = rl
        .strip_prefix("\"sustained\";r=0;t=")
        .unwrap_or_else(|| panic!("{rl}"))
        .parse()
        .unwrap();
    assert!(
        (60..=(60_000 + g_s - 1).div_ceil(1000)).contains(&t),
        "{rl} (g {g_s} ms)"
    );
    // Denied by the sustained window: the first admission leaves it 60 s after it was
    // admitted, which was at least `slept` and at most `elapsed` ms ago.
    let r = c.request(&sigv4_get("/b/o", HDR_KEY));
    let elapsed = t0.elapsed().as_millis() as u64;
    assert_eq!(r.status, 429);
    let amz = num(&r, "x-amz-retry-after");
    assert!(
        (60_000 - elapsed..=60_000 + g_s - 1 - slept).contains(&amz),
        "x-amz-retry-after {amz} (elapsed {elapsed} ms, slept {slept} ms, g {g_s} ms)"
    );
    let retry = num(&r, "Retry-After");
    assert_eq!(retry, amz.div_ceil(1000));
    assert_eq!(
        r.header("RateLimit"),
        Some(format!("\"sustained\";r=0;t={retry}").as_str())
    );
    assert_eq!(num(&r, "X-RateLimit-Current-Per-Minute"), 4);
    assert!(
        r.body_text().contains("(4 requests per minute)</Message>"),
        "{}",
        r.body_text()
    );
    assert_eq!(
        up.seen().len(),
        4,
        "only admitted requests reach the upstream"
    );
}

/// The header groups of one response: (ietf, legacy, identity), each all-or-nothing.
fn groups(r: &Resp) -> (bool, bool, bool) {
    let group = |names: &[&str]| {
        let present: Vec<bool> = names.iter().map(|n| r.header(n).is_some()).collect();
        assert!(
            present.iter().all(|p| *p == present[0]),
            "group {names:?} partly present: {:?}",
            r.headers
        );
        present[0]
    };
    (
        group(&["RateLimit-Policy", "RateLimit"]),
        group(&[
            "X-RateLimit-Group",
            "X-RateLimit-Limit-Per-Minute",
            "X-RateLimit-Current-Per-Minute",
        ]),
        group(&["X-API-Key", "X-Auth-Method"]),
    )
}

/// Starts tollgate with `[limits.headers] <switch> = false`, then checks one admitted and
/// one denied response of the basic tier (10/s).
fn header_switch(switch: &str) {
    let extra = format!("[limits.headers]\n{switch} = false\n");
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy(
        &format!("hdr-off-{switch}"),
        &[up.addr],
        2,
        &cfg(&extra),
        Some(KEYS),
    );
    let key = "AKIABASIC00000000001";
    let all_on = (true, true, true);
    let expect = |on_allowed: bool| match switch {
        "ietf" => (false, true, true),
        "legacy" => (true, false, true),
        "identity" => (true, true, false),
        "on_allowed" if on_allowed => (false, false, false),
        "on_allowed" => all_on,
        s => panic!("unknown switch {s}"),
    };
    let check_values = |r: &Resp, (ietf, legacy, identity): (bool, bool, bool)| {
        if ietf {
            assert_eq!(
                r.header("RateLimit-Policy"),
                Some("\"sustained\";q=100;w=60, \"burst\";q=10;w=1")
            );
        }
        if legacy {
            assert_eq!(r.header("X-RateLimit-Group"), Some("basic"));
            assert_eq!(r.header("X-RateLimit-Limit-Per-Minute"), Some("100"));
        }
        if identity {
            assert_eq!(r.header("X-API-Key"), Some(key));
            assert_eq!(r.header("X-Auth-Method"), Some("v4"));
        }
        assert_eq!(r.header_all("X-Request-ID").len(), 1, "always present");
    };
    let mut c = Client::connect(p.addr);
    let r = c.request(&sigv4_get("/b/o", key));
    assert_eq!(r.status, 200);
    assert_eq!(groups(&r), expect(true), "{switch} = false, allowed: {r:?}");
    check_values(&r, expect(true));
    if expect(true).1 {
        assert_eq!(r.header("X-RateLimit-Current-Per-Minute"), Some("1"));
    }
    for i in 2..=10 {
        assert_eq!(
            c.request(&sigv4_get("/b/o", key)).status,
            200,
            "request {i}"
        );
    }
    let r = c.request(&sigv4_get("/b/o", key));
    assert_eq!(r.status, 429);
    assert_eq!(groups(&r), expect(false), "{switch} = false, denied: {r:?}");
    check_values(&r, expect(false));
    if expect(false).1 {
        assert_eq!(r.header("X-RateLimit-Current-Per-Minute"), Some("10"));
    }
    // The deny-only headers are not part of any group.
    assert!(r.header("Retry-After").is_some() && r.header("x-amz-retry-after").is_some());
}

#[test]
fn header_group_ietf_can_be_switched_off() {
    header_switch("ietf");
}

#[test]
fn header_group_legacy_can_be_switched_off() {
    header_switch("legacy");
}

#[test]
fn header_group_identity_can_be_switched_off() {
    header_switch("identity");
}

#[test]
fn headers_on_allowed_responses_can_be_switched_off() {
    header_switch("on_allowed");
}

#[test]
fn request_id_is_kept_or_generated_on_allowed_and_denied_responses() {
    let up = FakeUpstream::start(ok_handler());
    let p = start_proxy("request-id", &[up.addr], 2, &cfg(""), Some(KEYS));
    let key = "AKIABASIC00000000001"; // 10/s
    let with_id = |id: &str| {
        String::from_utf8(sigv4_get("/b/o", key))
            .unwrap()
            .replacen("\r\n\r\n", &format!("\r\nX-Request-ID: {id}\r\n\r\n"), 1)
            .into_bytes()
    };
    let mut c = Client::connect(p.addr);
    // Allowed, the client's id: returned once, forwarded upstream unchanged and once.
    let r = c.request(&with_id("client-id-0001"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header_all("X-Request-ID"), ["client-id-0001"]);
    let seen = up.seen();
    assert_eq!(
        seen_header(seen.last().unwrap(), "X-Request-ID"),
        (Some("client-id-0001".to_string()), 1)
    );
    // Allowed, no id: one is generated per request.
    let g1 = c.request(&sigv4_get("/b/o", key));
    let g2 = c.request(&sigv4_get("/b/o", key));
    assert_eq!((g1.status, g2.status), (200, 200));
    let (g1, g2) = (g1.header_all("X-Request-ID"), g2.header_all("X-Request-ID"));
    assert_eq!((g1.len(), g2.len()), (1, 1));
    assert!(!g1[0].is_empty() && g1[0] != "client-id-0001");
    assert_ne!(g1[0], g2[0], "generated ids are unique");
    for i in 4..=10 {
        assert_eq!(
            c.request(&sigv4_get("/b/o", key)).status,
            200,
            "request {i}"
        );
    }
    // Denied, the client's id: in the header and the S3 error body.
    let n_up = up.seen().len();
    let r = c.request(&with_id("client-id-0429"));
    assert_eq!(r.status, 429);
    assert_eq!(r.header_all("X-Request-ID"), ["client-id-0429"]);
    assert!(
        r.body_text()
            .contains("<RequestId>client-id-0429</RequestId>"),
        "{}",
        r.body_text()
    );
    // Denied, no id: generated, unique, the same in header and body.
    let d1 = c.request(&sigv4_get("/b/o", key));
    let d2 = c.request(&sigv4_get("/b/o", key));
    let mut ids = vec![g1[0].to_string(), g2[0].to_string()];
    for d in [&d1, &d2] {
        assert_eq!(d.status, 429);
        let id = d.header_all("X-Request-ID");
        assert_eq!(id.len(), 1);
        assert!(!id[0].is_empty());
        assert!(
            d.body_text()
                .contains(&format!("<RequestId>{}</RequestId>", id[0])),
            "{}",
            d.body_text()
        );
        ids.push(id[0].to_string());
    }
    // Longest id kept is 128 visible ASCII bytes; a longer one is replaced.
    let long = "r".repeat(128);
    let r = c.request(&with_id(&long));
    assert_eq!(r.header_all("X-Request-ID"), [long.as_str()]);
    let r = c.request(&with_id(&"r".repeat(129)));
    let id = r.header_all("X-Request-ID");
    assert_eq!(id.len(), 1);
    assert!(id[0].len() <= 128 && !id[0].is_empty(), "{id:?}");
    ids.push(id[0].to_string());
    let mut uniq = ids.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), ids.len(), "generated ids are unique: {ids:?}");
    assert_eq!(
        up.seen().len(),
        n_up,
        "denied requests never reach the upstream"
    );
}

/// A minimal upstream for bulk tests: every request head (GETs, no body) gets one canned
/// 200, with no per-request bookkeeping but a count.
fn bulk_upstream() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { return };
            let count = c2.clone();
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                let mut buf = vec![0u8; 64 * 1024];
                let mut tail: Vec<u8> = Vec::new();
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    tail.extend_from_slice(&buf[..n]);
                    let mut heads = 0;
                    let mut start = 0;
                    while let Some(p) = tail[start..].windows(4).position(|w| w == b"\r\n\r\n") {
                        heads += 1;
                        start += p + 4;
                    }
                    tail.drain(..start);
                    count.fetch_add(heads, Ordering::Relaxed);
                    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".repeat(heads);
                    if conn.write_all(&resp).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, count)
}

/// Limits up to 1,000,000 per window: a tier of 300,000 per minute admits exactly
/// 300,000 of 320,000 requests sent within the minute (pipelined over 4 connections, so
/// both cores check the key: one of them through the owner-core messages), and the
/// upstream sees exactly those.
#[test]
fn per_minute_300000_is_enforced_exactly() {
    let (up, seen) = bulk_upstream();
    let keys = "[keys]\n\"AKIALARGE00000000001\" = \"large\"\n";
    let body = cfg(
        "default_tier = \"large\"\nanonymous_tier = \"large\"\n[tiers.large]\nper_minute = 300000\nper_second = 200000\n",
    );
    let p = start_proxy("large", &[up], 2, &body, Some(keys));
    let t0 = Instant::now();
    let (conns, per, batch) = (4usize, 80_000usize, 500usize);
    let req = sigv4_get("/b/o", "AKIALARGE00000000001");
    let hs: Vec<_> = (0..conns)
        .map(|_| {
            let req = req.clone();
            let addr = p.addr;
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut w = c.w.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    use std::io::Write;
                    let chunk = req.repeat(batch);
                    for _ in 0..per / batch {
                        w.write_all(&chunk).unwrap();
                    }
                });
                let (mut ok, mut denied) = (0usize, 0usize);
                for _ in 0..per {
                    match c.recv().status {
                        200 => ok += 1,
                        429 => denied += 1,
                        s => panic!("unexpected status {s}"),
                    }
                }
                writer.join().unwrap();
                (ok, denied)
            })
        })
        .collect();
    let (mut ok, mut denied) = (0, 0);
    for h in hs {
        let (o, d) = h.join().unwrap();
        ok += o;
        denied += d;
    }
    let took = t0.elapsed();
    println!("320,000 requests in {took:?}: {ok} admitted, {denied} denied");
    assert!(
        took < Duration::from_secs(55),
        "must fit in one minute: {took:?}"
    );
    assert_eq!(ok, 300_000, "exactly the per-minute limit");
    assert_eq!(denied, 20_000);
    assert_eq!(
        seen.load(Ordering::Relaxed),
        300_000,
        "denied never reach the upstream"
    );
    let (_, t) = admin_get(p.admin.unwrap(), "/table?key=AKIALARGE00000000001");
    assert!(t.contains("300000"), "{t}");
}
