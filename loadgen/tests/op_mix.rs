//! Op classes and buckets end to end: the requests a responder receives are the ones the
//! scenario's mix plans (per class and bucket, path- and virtual-host-style, classified here
//! from method, path, query and Host alone), loadgen's per-op counts agree, and asserts
//! filtered by op/bucket judge a responder that limits LISTs only.

mod common;

use common::{Behaviour, Seen, start};
use loadgen::run::{key_plan, run_scenario};
use loadgen::scenario::{Overrides, Scenario};
use std::collections::BTreeMap;
use std::time::Duration;

fn scenario(text: &str, port: u16) -> Scenario {
    Scenario::from_toml(
        text,
        "test",
        &Overrides {
            target: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        },
    )
    .unwrap()
}

/// (key, class, bucket) of a request, from its wire form only.
fn classify(s: &Seen, authority: &str) -> (String, &'static str, String) {
    let (path, query) = s.target.split_once('?').unwrap_or((&s.target, ""));
    let (bucket, object) = match s.host.strip_suffix(&format!(".{authority}")) {
        Some(b) => (b.to_string(), path.trim_start_matches('/').to_string()),
        None => {
            let rest = path.trim_start_matches('/');
            let (b, o) = rest.split_once('/').unwrap_or((rest, ""));
            (b.to_string(), o.to_string())
        }
    };
    let param = |p: &str| {
        query
            .split('&')
            .any(|q| q == p || q.starts_with(&format!("{p}=")))
    };
    let class = match (s.method.as_str(), object.is_empty()) {
        ("GET", true) if param("list-type") => "list",
        ("GET", true) if param("acl") => "other",
        ("POST", false) if param("uploads") => "multipart",
        ("GET", false) => "get_object",
        ("PUT", false) => "put_object",
        ("HEAD", false) => "head",
        ("DELETE", false) => "delete",
        _ => "unrecognised",
    };
    (s.key.clone(), class, bucket)
}

#[test]
fn received_requests_are_what_the_mix_plans() {
    let r = start(Behaviour::Fixed, None);
    let text = r#"
duration = "2s"
connections_per_core = 8
buckets = { alpha = 3, beta = 1 }
[[group]]
name = "path"
keys = ["PATHKEY"]
rate = "250/s"
ops = { get_object = 4, put_object = 1, head = 1, delete = 1, list = 2, multipart = 1, other = 1 }
put_sizes = ["100B"]
[[group]]
name = "virtual"
keys = ["VHKEY"]
rate = "100/s"
auth = "sigv4"
secret = "s3cr3t"
addressing = "virtual"
mix = [{ op = "list", bucket = "logs", weight = 1 }, { op = "get_object", bucket = "media", weight = 1 }]
"#;
    let sc = scenario(text, r.port);
    let rep = run_scenario(&sc, false).unwrap();
    assert!(rep.identity_ok);
    // What the plan says each key sends, per (class, bucket).
    let mut planned: BTreeMap<(String, &str, String), u64> = BTreeMap::new();
    for (i, k) in sc.keys.iter().enumerate() {
        for p in key_plan(&sc, i) {
            let b = sc.buckets[p.bucket as usize].clone();
            *planned.entry((k.id.clone(), p.op.name(), b)).or_default() += 1;
        }
    }
    let authority = format!("127.0.0.1:{}", r.port);
    let mut got: BTreeMap<(String, &str, String), u64> = BTreeMap::new();
    for s in r.seen.lock().unwrap().iter() {
        *got.entry(classify(s, &authority)).or_default() += 1;
    }
    assert_eq!(got, planned);
    // Every class and bucket was exercised, in about the mix's proportions.
    let n = |k: &str, c: &str, b: &str| got.get(&(k.into(), c, b.into())).copied().unwrap_or(0);
    assert_eq!(got.keys().filter(|k| k.0 == "PATHKEY").count(), 14);
    let (alpha_get, beta_get) = (
        n("PATHKEY", "get_object", "alpha"),
        n("PATHKEY", "get_object", "beta"),
    );
    assert!((120..=180).contains(&alpha_get), "alpha get {alpha_get}"); // 500 × 4/11 × 3/4 ≈ 136
    assert!(alpha_get > 2 * beta_get, "{alpha_get} vs {beta_get}");
    assert_eq!(
        n("VHKEY", "list", "logs") + n("VHKEY", "get_object", "media"),
        200
    );
    // loadgen's own per-op rows count the same requests.
    for row in &rep.keys {
        for o in &row.ops {
            let want = planned[&(row.name.clone(), o.op, o.bucket.clone())];
            assert_eq!(o.counts.sent, want, "{} {} {}", row.name, o.op, o.bucket);
            assert_eq!(o.counts.ok, want);
        }
    }
    assert_eq!(rep.overall.ops.len(), 16);
}

#[test]
fn asserts_by_op_see_lists_limited_while_gets_pass() {
    let r = start(
        Behaviour::LimitPath {
            contains: "list-type=2",
            limit: 5,
            window: Duration::from_secs(1),
        },
        None,
    );
    let text = r#"
duration = "2s"
bucket = "logs"
[[group]]
keys = ["LISTER"]
rate = "40/s"
ops = { list = 1, GET = 1 }
[[assert]]
metric = "denied"
scope = "key:LISTER"
op = "list"
min = 10
[[assert]]
metric = "passed"
scope = "key:LISTER"
op = "list"
bucket = "logs"
max = 16
[[assert]]
metric = "admitted_ratio"
scope = "each_key"
op = "get_object"
min = 1.0
[[assert]]
metric = "denied"
scope = "overall"
op = "list"
max = 0
"#;
    let sc = scenario(text, r.port);
    let rep = run_scenario(&sc, false).unwrap();
    let pass: Vec<(String, bool)> = rep
        .asserts
        .iter()
        .map(|a| (a.scope.clone(), a.pass))
        .collect();
    assert_eq!(
        pass,
        [
            ("key:LISTER op:list".to_string(), true),
            ("key:LISTER op:list bucket:logs".to_string(), true),
            ("each_key op:get_object".to_string(), true),
            // A bound the LIST denials break: the filtered asserts can fail.
            ("overall op:list".to_string(), false),
        ],
        "{}",
        rep.to_text()
    );
    let text = rep.to_text();
    assert!(text.contains("per op and bucket"), "{text}");
}
