//! `[[rules]]` against the real binary (2 workers, so a request's charges are often owned
//! by different cores): per-bucket, per-operation and address+route limits, allow and deny,
//! "a denial charges nothing", in-flight limits released on every path, byte windows, and
//! counters kept across a reload.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// A roomy tier, so that only the rules limit.
const TIER: &str = r#"
[tiers.t]
per_second = 1000
per_minute = 100000
[limits]
default_tier = "t"
anonymous_tier = "t"
[upstream]
response_head_timeout = "1s"
[upstream.health]
enabled = false
"#;

/// `/slow…` answers after 600 ms, `/stall…` after 3 s (past the head timeout), `/broken…`
/// answers garbage, `/big…` has a 6000-byte body, `/huge…` 8 MiB; the rest "ok".
fn handler() -> Handler {
    Arc::new(|s: &Seen| {
        let line = String::from_utf8_lossy(&s.head[..s.head.len().min(200)]).to_string();
        let path = line.split(' ').nth(1).unwrap_or("");
        let body_of = |n: usize| {
            let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n").into_bytes();
            r.resize(r.len() + n, b'x');
            r
        };
        if path.starts_with("/slow") {
            std::thread::sleep(Duration::from_millis(600));
        } else if path.starts_with("/stall") {
            std::thread::sleep(Duration::from_secs(3));
        } else if path.starts_with("/broken") {
            return b"NOT HTTP AT ALL\r\n\r\n".to_vec();
        } else if path.starts_with("/big") {
            return body_of(6000);
        } else if path.starts_with("/huge") {
            return body_of(8 << 20);
        }
        body_of(2)
    })
}

fn start(tag: &str, rules: &str) -> (FakeUpstream, Proxy) {
    let up = FakeUpstream::start(handler());
    let log = tmpdir(&format!("{tag}-log")).join("access.log");
    let log = format!(
        "[access_log]\npath = \"{}\"\nflush_interval = \"50ms\"\n",
        log.display()
    );
    let p = start_proxy(tag, &[up.addr], 2, &format!("{rules}\n{log}{TIER}"), None);
    (up, p)
}

/// The access-log lines written so far, waiting (bounded) for at least `n`.
fn log_lines(p: &Proxy, n: usize) -> Vec<serde_json::Value> {
    let cfg = std::fs::read_to_string(p.dir.join("tollgate.toml")).unwrap();
    let path = cfg
        .split("path = \"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= n || t0.elapsed() > Duration::from_secs(5) {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A request for `key` (SigV4-style) with extra header lines.
fn req(method: &str, target: &str, key: &str, extra: &str) -> Vec<u8> {
    let mut r = String::from_utf8(with_method(&sigv4_get(target, key), method)).unwrap();
    r = r.replacen("\r\n\r\n", &format!("\r\n{extra}\r\n"), 1);
    r.into_bytes()
}

/// Sends each request on a new connection (so they land on both cores); the statuses.
fn statuses(addr: SocketAddr, reqs: &[Vec<u8>]) -> Vec<u16> {
    reqs.iter()
        .map(|r| Client::connect(addr).request(r).status)
        .collect()
}

fn get(addr: SocketAddr, target: &str, key: &str) -> Resp {
    Client::connect(addr).request(&req("GET", target, key, ""))
}

fn stats(p: &Proxy) -> serde_json::Value {
    let (st, body) = admin_get(p.admin.unwrap(), "/stats");
    assert_eq!(st, 200);
    serde_json::from_str(&body).unwrap()
}

/// `/stats` counter `field` of rule `name`.
fn rule_stat(p: &Proxy, name: &str, field: &str) -> u64 {
    let s = stats(p);
    let r = s["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name);
    r.unwrap_or_else(|| panic!("no rule {name} in {s}"))[field]
        .as_u64()
        .unwrap()
}

/// Waits (bounded) until rule `name` has nothing in flight.
fn wait_in_flight_zero(p: &Proxy, name: &str) {
    let t0 = Instant::now();
    while rule_stat(p, name, "in_flight") != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "in_flight of {name} stays above 0"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn buckets_of_one_key_are_limited_independently() {
    let rules = r#"
[[rules]]
name = "per-bucket"
match.buckets = ["photos", "logs-*"]
subject = "key+bucket"
per_minute = 3
"#;
    let (up, p) = start("rules-bucket", rules);
    let k = "AKIAKEY0000000000001";
    let photos: Vec<_> = (0..5)
        .map(|i| req("GET", &format!("/photos/{i}"), k, ""))
        .collect();
    assert_eq!(statuses(p.addr, &photos), [200, 200, 200, 429, 429]);
    let r = get(p.addr, "/photos/x", k);
    assert_eq!(r.header("X-RateLimit-Rule"), Some("per-bucket"));
    assert!(r.header("Retry-After").is_some());
    assert!(r.body_text().contains("<Code>SlowDown</Code>"));
    let logs: Vec<_> = (0..4)
        .map(|i| req("GET", &format!("/logs-2026/{i}"), k, ""))
        .collect();
    assert_eq!(
        statuses(p.addr, &logs),
        [200, 200, 200, 429],
        "another bucket: its own count"
    );
    assert_eq!(
        get(p.addr, "/photos/x", "AKIAKEY0000000000002").status,
        200,
        "another key"
    );
    assert_eq!(
        get(p.addr, "/other/x", k).status,
        200,
        "a bucket not matched"
    );
    assert_eq!(up.seen().len(), 3 + 3 + 2);
    assert_eq!(rule_stat(&p, "per-bucket", "denied"), 4);
    assert_eq!(rule_stat(&p, "per-bucket", "admitted"), 7);
    // The deciding rule in the access log, the key view and /metrics.
    let lines = log_lines(&p, 12);
    let denied: Vec<_> = lines.iter().filter(|l| l["status"] == 429).collect();
    assert_eq!(denied.len(), 4);
    assert!(
        denied
            .iter()
            .all(|l| l["rule"] == "per-bucket" && l["limit"] == "denied")
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["status"] == 200)
            .all(|l| l["rule"].is_null())
    );
    assert_eq!(get(p.addr, "/logs-2026/again", k).status, 429);
    let (_, view) = admin_get(p.admin.unwrap(), &format!("/keys/{k}"));
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["last_rule"], "per-bucket", "{view}");
    let (_, metrics) = admin_get(p.admin.unwrap(), "/metrics");
    assert!(
        metrics
            .contains("tollgate_rule_decisions_total{rule=\"per-bucket\",decision=\"denied\"} 5"),
        "{metrics}"
    );
}

#[test]
fn lists_are_limited_apart_from_gets_with_a_cost() {
    let rules = r#"
[[rules]]
name = "lists"
match.ops = ["list"]
cost = 5
per_minute = 10
"#;
    let (_up, p) = start("rules-list", rules);
    let k = "AKIALISTER0000000001";
    let lists: Vec<_> = (0..3)
        .map(|_| req("GET", "/b?list-type=2&prefix=a", k, ""))
        .collect();
    assert_eq!(
        statuses(p.addr, &lists),
        [200, 200, 429],
        "two lists of cost 5 fill 10"
    );
    let gets: Vec<_> = (0..20)
        .map(|i| req("GET", &format!("/b/obj{i}"), k, ""))
        .collect();
    assert!(
        statuses(p.addr, &gets).iter().all(|&s| s == 200),
        "GETs pass"
    );
    let r = Client::connect(p.addr).request(&req("GET", "/b/", k, ""));
    assert_eq!(
        (r.status, r.header("X-RateLimit-Rule")),
        (429, Some("lists"))
    );
}

#[test]
fn address_and_route_rule_limits_only_that_traffic() {
    // The OneLogin example: one user agent on one path, per client address.
    let rules = r#"
[[rules]]
name = "curl-login"
match.paths = ["/web/login"]
match.header = { name = "User-Agent", contains = "curl" }
subject = "address+route"
per_minute = 2
"#;
    let (_up, p) = start("rules-route", rules);
    let k = "AKIAROUTE00000000001";
    let curl = "User-Agent: curl/8.5\r\n";
    let login: Vec<_> = (0..3).map(|_| req("GET", "/web/login", k, curl)).collect();
    assert_eq!(statuses(p.addr, &login), [200, 200, 429]);
    let other_ua = req("GET", "/web/login", k, "User-Agent: Mozilla/5.0\r\n");
    let other_path = req("GET", "/web/index.html", k, curl);
    let other_key = req("GET", "/web/login", "AKIAROUTE00000000002", curl);
    assert_eq!(statuses(p.addr, &[other_ua, other_path]), [200, 200]);
    assert_eq!(
        statuses(p.addr, &[other_key]),
        [429],
        "the subject is the address, not the key"
    );
}

#[test]
fn allow_touches_no_counter_deny_answers_403_and_charges_nothing() {
    let rules = r#"
[[rules]]
name = "ci"
match.header = { name = "X-Team", equals = "ci" }
action = "allow"
[[rules]]
name = "no-deletes"
match.ops = ["delete"]
action = "deny"
[[rules]]
name = "per-key"
per_minute = 3
[[rules]]
name = "tight-bucket"
match.buckets = ["tight"]
subject = "bucket"
per_minute = 1
"#;
    let (up, p) = start("rules-allow-deny", rules);
    let k = "AKIAALLOW00000000001";
    let ci: Vec<_> = (0..10)
        .map(|i| req("GET", &format!("/b/{i}"), k, "X-Team: CI\r\n"))
        .collect();
    assert!(
        statuses(p.addr, &ci).iter().all(|&s| s == 200),
        "allow-listed"
    );
    assert_eq!(rule_stat(&p, "ci", "allowed"), 10);
    let r = Client::connect(p.addr).request(&req("DELETE", "/b/x", k, ""));
    assert_eq!(
        (r.status, r.header("X-RateLimit-Rule")),
        (403, Some("no-deletes"))
    );
    assert!(
        r.body_text().contains("<Code>AccessDenied</Code>"),
        "{}",
        r.body_text()
    );
    let seen = up.seen().len();
    assert_eq!(seen, 10, "the denied DELETE never reached the store");
    // One request fills the tight bucket; the next ones are denied by it and charge
    // per-key nothing (its counter is on whichever core owns the key).
    assert_eq!(get(p.addr, "/tight/a", k).status, 200);
    for _ in 0..5 {
        let r = get(p.addr, "/tight/a", k);
        assert_eq!(
            (r.status, r.header("X-RateLimit-Rule")),
            (429, Some("tight-bucket"))
        );
    }
    let rest: Vec<_> = (0..3)
        .map(|i| req("GET", &format!("/b/{i}"), k, ""))
        .collect();
    assert_eq!(
        statuses(p.addr, &rest),
        [200, 200, 429],
        "per-key counted 1 + 2, nothing else"
    );
    assert_eq!(rule_stat(&p, "per-key", "admitted"), 3);
}

/// Two slow requests of the key in flight, from threads; the third is sent meanwhile.
fn third_while_two_in_flight(p: &Proxy, k: &str) -> Resp {
    let addr = p.addr;
    let hs: Vec<_> = (0..2)
        .map(|i| {
            let r = req("GET", &format!("/slow/{i}"), k, "");
            std::thread::spawn(move || Client::connect(addr).request(&r).status)
        })
        .collect();
    let t0 = Instant::now();
    while rule_stat(p, "two-at-once", "in_flight") < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the two never were in flight"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let third = get(addr, "/b/x", k);
    for h in hs {
        assert_eq!(h.join().unwrap(), 200);
    }
    third
}

#[test]
fn max_in_flight_denies_the_third_and_every_ending_releases() {
    let rules = r#"
[[rules]]
name = "two-at-once"
max_in_flight = 2
"#;
    let (_up, p) = start("rules-inflight", rules);
    let k = "AKIAINFLIGHT00000001";
    let third = third_while_two_in_flight(&p, k);
    assert_eq!(
        (third.status, third.header("X-RateLimit-Rule")),
        (429, Some("two-at-once"))
    );
    wait_in_flight_zero(&p, "two-at-once");
    // Clients that vanish: before the answer, and in the middle of an 8 MiB body.
    for i in 0..4 {
        let mut c = Client::connect(p.addr);
        c.send(&req("GET", &format!("/slow/gone{i}"), k, ""));
        drop(c);
    }
    for i in 0..4 {
        let mut c = Client::connect(p.addr);
        c.send(&req("GET", &format!("/huge/{i}"), k, ""));
        let mut byte = [0u8; 1024];
        std::io::Read::read(&mut c.r, &mut byte).unwrap();
        drop(c);
    }
    wait_in_flight_zero(&p, "two-at-once");
    // An upstream that breaks (502) and one that times out (504).
    assert_eq!(get(p.addr, "/broken/1", k).status, 502);
    assert_eq!(get(p.addr, "/stall/1", k).status, 504);
    wait_in_flight_zero(&p, "two-at-once");
    let again = third_while_two_in_flight(&p, k);
    assert_eq!(
        again.status, 429,
        "still exactly two: nothing leaked, nothing lost"
    );
    wait_in_flight_zero(&p, "two-at-once");
    assert_eq!(get(p.addr, "/b/y", k).status, 200);
}

#[test]
fn a_byte_window_stops_a_key_and_lets_it_go_after() {
    let rules = r#"
[[rules]]
name = "bandwidth"
bytes_per_window = { bytes = 10000, window = "2s" }
"#;
    let (_up, p) = start("rules-bytes", rules);
    let k = "AKIABYTES00000000001";
    // 6000 bytes each: the second is admitted below the limit and finishes over it.
    assert_eq!(get(p.addr, "/big/1", k).status, 200);
    assert_eq!(get(p.addr, "/big/2", k).status, 200);
    let t0 = Instant::now();
    let r = get(p.addr, "/big/3", k);
    assert_eq!(
        (r.status, r.header("X-RateLimit-Rule")),
        (429, Some("bandwidth"))
    );
    let retry: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        get(p.addr, "/b/small", "AKIABYTES00000000002").status,
        200,
        "another key"
    );
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(t0.elapsed()));
    assert_eq!(get(p.addr, "/big/4", k).status, 200, "the window let it go");
}

fn reload(p: &Proxy, text: &str) {
    let path = p.dir.join("tollgate.toml");
    std::fs::write(&path, text).unwrap();
    let mut c = Client::connect(p.admin.unwrap());
    let r = c.request(b"POST /reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(r.status, 200, "{}", r.body_text());
}

#[test]
fn a_reload_keeps_the_counters_of_unchanged_rules() {
    let rules = "[[rules]]\nname = \"keep\"\nper_minute = 2\n";
    let (_up, p) = start("rules-reload", rules);
    let k = "AKIARELOAD0000000001";
    let two: Vec<_> = (0..3)
        .map(|i| req("GET", &format!("/b/{i}"), k, ""))
        .collect();
    assert_eq!(statuses(p.addr, &two), [200, 200, 429]);
    let text = std::fs::read_to_string(p.dir.join("tollgate.toml")).unwrap();
    // A new rule before it (its index changes) and a new limit: still the same counter.
    let moved = text.replace(
        "[[rules]]\nname = \"keep\"\nper_minute = 2\n",
        "[[rules]]\nname = \"new\"\nmatch.buckets = [\"zzz\"]\naction = \"deny\"\n\
         [[rules]]\nname = \"keep\"\nper_minute = 3\n",
    );
    reload(&p, &moved);
    let after: Vec<_> = (0..2)
        .map(|i| req("GET", &format!("/b/{i}"), k, ""))
        .collect();
    assert_eq!(
        statuses(p.addr, &after),
        [200, 429],
        "2 counted before the reload, limit 3"
    );
    reload(&p, &moved.replace("name = \"keep\"", "name = \"renamed\""));
    assert_eq!(
        get(p.addr, "/b/x", k).status,
        200,
        "a new identity starts afresh"
    );
}

#[test]
fn a_shadow_tier_does_not_keep_the_rules_from_counting() {
    let up = FakeUpstream::start(handler());
    let cfg = r#"
[[rules]]
name = "per-key"
per_minute = 3
[tiers.t]
per_second = 1
per_minute = 1000
enforce = false
[limits]
default_tier = "t"
anonymous_tier = "t"
[upstream.health]
enabled = false
"#;
    let p = start_proxy("rules-shadow", &[up.addr], 2, cfg, None);
    let k = "AKIASHADOW0000000001";
    let reqs: Vec<_> = (0..4)
        .map(|i| req("GET", &format!("/b/{i}"), k, ""))
        .collect();
    assert_eq!(
        statuses(p.addr, &reqs),
        [200, 200, 200, 429],
        "the tier only shadows"
    );
    let s = stats(&p);
    let shadow = s["tiers"]["t"]["methods"]["GET"]["shadow_denied"]
        .as_u64()
        .unwrap();
    assert_eq!(shadow, 2, "{s}");
    assert_eq!(rule_stat(&p, "per-key", "denied"), 1);
}

/// A reload that inserts a tier and a rule before the running ones keeps each one's
/// numbers under its own name: tiers and rules are numbered in file order, and per-core
/// stats, table entries and cross-core messages used to keep the old numbers (the new
/// tier showed the old one's history, the moved rule's counters went to the new one).
#[test]
fn a_reload_that_inserts_a_tier_and_a_rule_keeps_every_name_with_its_numbers() {
    let up = FakeUpstream::start(handler());
    let cfg = |extra_tier: &str, extra_rule: &str| {
        format!(
            "{extra_rule}[[rules]]\nname = \"keep\"\nper_minute = 50\n\
             {extra_tier}[tiers.basic]\nper_second = 100\nper_minute = 3\n\
             [limits]\ndefault_tier = \"basic\"\nanonymous_tier = \"basic\"\n\
             [upstream.health]\nenabled = false\n"
        )
    };
    let p = start_proxy("rules-insert", &[up.addr], 2, &cfg("", ""), None);
    let k = "AKIAINSERT0000000001";
    let two: Vec<_> = (0..2)
        .map(|i| req("GET", &format!("/b/{i}"), k, ""))
        .collect();
    assert_eq!(statuses(p.addr, &two), [200, 200]);
    let text = std::fs::read_to_string(p.dir.join("tollgate.toml")).unwrap();
    let inserted = text.replace(
        &cfg("", ""),
        &cfg(
            "[tiers.gold]\nper_second = 100\nper_minute = 1000\n",
            "[[rules]]\nname = \"first\"\nmatch.buckets = [\"zzz\"]\nper_minute = 9\n",
        ),
    );
    assert_ne!(inserted, text);
    reload(&p, &inserted);
    let s = stats(&p);
    assert_eq!(s["tiers"]["basic"]["methods"]["GET"]["admitted"], 2, "{s}");
    assert!(s["tiers"]["gold"]["methods"]["GET"].is_null(), "{s}");
    assert_eq!(rule_stat(&p, "keep", "admitted"), 2);
    assert_eq!(rule_stat(&p, "first", "admitted"), 0);
    // An unlisted key is counted under its client address.
    let (st, body) = admin_get(p.admin.unwrap(), "/table?addr=127.0.0.1");
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains("\"tier\":\"basic\""),
        "the entry's tier: {body}"
    );
    let (st, body) = admin_get(p.admin.unwrap(), "/table/top?n=20");
    assert_eq!(st, 200, "{body}");
    let want = format!("{{\"counted\":\"{k}\",\"rule\":\"keep\"}}");
    assert!(body.contains(&want), "the rule's entry by name: {body}");
    let after: Vec<_> = (2..4)
        .map(|i| req("GET", &format!("/b/{i}"), k, ""))
        .collect();
    assert_eq!(
        statuses(p.addr, &after),
        [200, 429],
        "3 a minute, 2 counted"
    );
    let s = stats(&p);
    assert_eq!(s["tiers"]["basic"]["methods"]["GET"]["admitted"], 3, "{s}");
    assert_eq!(s["tiers"]["basic"]["methods"]["GET"]["denied"], 1, "{s}");
    assert_eq!(rule_stat(&p, "keep", "admitted"), 3);
}
