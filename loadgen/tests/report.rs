//! The report of a synthetic run (no network: measurements made up, deterministic): the
//! rows, the expectation beside them, the accuracy check and every kind of assert outcome, in
//! text, HTML and JSON. Pins `Report::build` + `asserts::evaluate` + the renderers.

use loadgen::engine::RunOutput;
use loadgen::expect::{Accuracy, KeyExpect};
use loadgen::report::Report;
use loadgen::scenario::{Overrides, Scenario};
use loadgen::stats::{KeyStats, Outcome, Sample, Timeline, new_hist};
use std::time::Duration;

const SC: &str = r#"
name = "golden"
description = "a <b>golden</b> & test"
target = "http://127.0.0.1:1"
duration = "3s"
warmup = "1s"
[[group]]
name = "p"
tier = "premium"
key_prefix = "K"
key_count = 2
rate = "20/s"
auth = "x-api-key"
[[group]]
name = "anon"
keys = ["A1"]
rate = "5/s"
auth = "none"
[[assert]]
metric = "p99"
max = 5
[[assert]]
metric = "valid"
[[assert]]
metric = "accuracy"
[[assert]]
metric = "identity"
scope = "each_key"
[[assert]]
metric = "denied_ratio"
scope = "tier:premium"
min = 0.1
[[assert]]
metric = "passed_vs_expected"
scope = "key:K0001"
min = 0.9
max = 1.1
[[assert]]
metric = "sent"
scope = "tier:nothing"
[[assert]]
metric = "error_ratio"
scope = "each_tier"
max = 0.0
"#;

/// Three keys (two premium, one anonymous), 4 s with 1 s warm-up, every outcome kind.
fn synthetic_run(sc: &Scenario) -> (RunOutput, Vec<Vec<(u64, u64)>>) {
    let mut keys = Vec::new();
    let mut timeline = Timeline::default();
    let mut admitted = Vec::new();
    for (i, _) in sc.keys.iter().enumerate() {
        let mut ks = KeyStats::default();
        let mut adm = Vec::new();
        for j in 0..(40 + i * 7) as u64 {
            let intended = j * 97_000_000 + i as u64 * 13_000;
            let sent = intended + (j % 5) * 400_000;
            let done = sent + 300_000 + (j * 7919 % 13) * 1_000_000;
            let outcome = match (j + i as u64) % 9 {
                0 | 1 => Outcome::Denied,
                2 => Outcome::OtherStatus,
                3 if j % 2 == 0 => Outcome::Transport,
                4 if j % 3 == 0 => Outcome::Timeout,
                _ => Outcome::Ok,
            };
            let status = match outcome {
                Outcome::Ok => 200,
                Outcome::Denied => 429,
                Outcome::OtherStatus => 404,
                _ => 0,
            };
            let s = Sample {
                intended_ns: intended,
                sent_ns: sent,
                done_ns: done,
                outcome,
                status,
                limited: true,
                op: loadgen::plan::Op::Get,
                bucket: 0,
                warm: intended < 1_000_000_000,
                retry_after_s: (outcome == Outcome::Denied).then_some(1 + (j % 3) as u32),
                amz_retry_after_ms: (outcome == Outcome::Denied && j % 2 == 0)
                    .then_some(250 + j as u32),
                bytes_out: 100,
                bytes_in: 200 + j,
            };
            ks.record(&s, true);
            timeline.record(done, outcome, (done - intended) / 1000);
            if matches!(outcome, Outcome::Ok | Outcome::OtherStatus) {
                adm.push((sent, done));
            }
        }
        ks.dropped = i as u64;
        keys.push(ks);
        admitted.push(adm);
    }
    let mut dl = new_hist();
    let mut sl = new_hist();
    for v in [10u64, 20, 30, 2000, 50] {
        dl.saturating_record(v);
        sl.saturating_record(v * 3);
    }
    let out = RunOutput {
        keys,
        timeline,
        dispatch_lag: dl,
        send_lag: sl,
        driver: "io_uring".into(),
        elapsed: Duration::from_millis(4012),
        started_unix: 1_700_000_000.5,
    };
    (out, admitted)
}

fn report(sc: &Scenario, expected: Option<&[KeyExpect]>, acc: Vec<Accuracy>) -> Report {
    let (out, _) = synthetic_run(sc);
    let mut r = Report::build(sc, &out, expected, acc);
    r.asserts = loadgen::asserts::evaluate(&sc.asserts, &r);
    r
}

#[test]
fn synthetic_run_report() {
    let sc = Scenario::from_toml(SC, "t", &Overrides::default()).unwrap();
    let exp = loadgen::run::expectation(&sc);
    let (_, admitted) = synthetic_run(&sc);
    let acc = loadgen::run::accuracy_checks(&sc, &admitted);
    let r = report(&sc, Some(&exp), acc);
    let text = r.to_text();
    for want in [
        "overall                           108       62       24     22     36.0       135         0     7.103",
        "K0001                              36       18        8     10     12.0        60         0     7.103",
        "statuses: 200:62  404:12  429:24",
        "Retry-After seen 24 times (1..3 s), x-amz-retry-after max 302 ms",
        "  (anonymous)                  60000ms: certain 39 / by-response 39 / limit 50 ok | 1000ms: certain 9 / by-response 9 / limit 5 OVER",
        "accuracy: FAIL",
        "  [FAIL] p99 (overall) = 13.9030 fails at overall\n",
        "  [FAIL] valid (overall) = 0.0000 \n",
        "  [FAIL] accuracy (overall) = 0.0000 \n",
        "  [pass] identity (each_key) = n/a \n",
        "  [pass] denied_ratio (tier:premium) = 0.2154 \n",
        "  [FAIL] passed_vs_expected (key:K0001) = 0.3667 fails at K0001\n",
        "  [FAIL] sent (tier:nothing) = n/a scope matched nothing\n",
        "  [FAIL] error_ratio (each_tier) = 0.2462 fails at premium\n",
        "RUN INVALID: send lag p99 2.000 ms > 1.000 ms",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!r.asserts_pass() && !r.valid);
    let html = r.to_html();
    assert!(
        html.contains("<p>a &lt;b&gt;golden&lt;/b&gt; &amp; test</p>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<td>passed_vs_expected</td><td>key:K0001</td><td>0.3667</td><td class=bad>FAIL</td>"
        ),
        "{html}"
    );
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["asserts"].as_array().unwrap().len(), 8);
    assert_eq!(json["asserts"][4]["scope"], "tier:premium");
    assert_eq!(json["overall"]["expected"]["admitted"], 135);

    // Without an expectation (closed loop): no expected columns, ratios to it have no value.
    let r = report(&sc, None, Vec::new());
    let text = r.to_text();
    assert!(
        text.contains(
            "overall                           108       62       24     22     36.0     7.103"
        ),
        "{text}"
    );
    assert!(
        text.contains("[FAIL] passed_vs_expected (key:K0001) = n/a no value for K0001"),
        "{text}"
    );
    assert!(!text.contains("accuracy check"), "{text}");
}
