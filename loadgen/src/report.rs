//! Reports: the [`Report`] value (serialised as versioned JSON), the final text tables (per tier
//! and per key, with the expected outcome beside the measured one and the accuracy check), and a
//! self-contained HTML page with inline SVG charts. [`Report::build`] turns the engine's
//! measurements and the expectation into rows (per key, per tier, overall) and judges the run's
//! validity from the send lag; it evaluates no asserts (`run` fills [`Report::asserts`] via
//! [`crate::asserts`]). No I/O: main writes the files.

use crate::engine::RunOutput;
use crate::expect::{Accuracy, KeyExpect};
use crate::plan::Mode;
use crate::plan::Op;
use crate::scenario::Scenario;
use crate::stats::{KeyStats, OUTCOME_NAMES, OpCounts, Percentiles};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

pub const REPORT_FORMAT: &str = "loadgen-report";
pub const REPORT_VERSION: u32 = 1;

/// One line of a table (a key, a tier, or everything).
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub tier: String,
    pub sent: u64,
    /// 2xx.
    pub admitted: u64,
    /// 429 or 503 SlowDown.
    pub denied: u64,
    /// other_status + transport + timeouts.
    pub errors: u64,
    /// Let through by the limiter: 2xx plus other HTTP statuses (e.g. a backend's 404/403).
    pub passed: u64,
    pub other_status: u64,
    pub transport: u64,
    pub timeouts: u64,
    pub dropped: u64,
    pub late: u64,
    pub rps: f64,
    pub latency_ms: Percentiles,
    pub service_ms: Percentiles,
    pub statuses: BTreeMap<String, u64>,
    pub retry_after_seen: u64,
    pub retry_after_min_s: Option<u32>,
    pub retry_after_max_s: Option<u32>,
    pub amz_retry_after_max_ms: Option<u32>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    pub expected: Option<KeyExpect>,
    /// sent == admitted + denied + errors.
    pub identity_ok: bool,
    /// The counts per op class and bucket that were sent to.
    pub ops: Vec<OpRow>,
}

/// The counts of one op class on one bucket, within a row.
#[derive(Debug, Clone, Serialize)]
pub struct OpRow {
    /// Class name (`list`, `get_object`, …).
    pub op: &'static str,
    pub bucket: String,
    #[serde(flatten)]
    pub counts: OpCounts,
}

/// The non-empty per-(op, bucket) counts of `s`.
fn op_rows(s: &KeyStats, buckets: &[String]) -> Vec<OpRow> {
    s.by_op
        .iter()
        .enumerate()
        .filter(|(_, c)| c.sent > 0)
        .map(|(slot, c)| OpRow {
            op: Op::ALL[slot % Op::COUNT].name(),
            bucket: buckets.get(slot / Op::COUNT).cloned().unwrap_or_default(),
            counts: *c,
        })
        .collect()
}

impl Row {
    fn from_stats(
        name: &str,
        tier: &str,
        s: &KeyStats,
        secs: f64,
        expected: Option<KeyExpect>,
        buckets: &[String],
    ) -> Row {
        Row {
            name: name.into(),
            tier: tier.into(),
            sent: s.sent,
            admitted: s.ok,
            denied: s.denied,
            errors: s.errors(),
            passed: s.ok + s.other_status,
            other_status: s.other_status,
            transport: s.transport,
            timeouts: s.timeouts,
            dropped: s.dropped,
            late: s.late,
            rps: if secs > 0.0 {
                s.sent as f64 / secs
            } else {
                0.0
            },
            latency_ms: Percentiles::of(&s.latency),
            service_ms: Percentiles::of(&s.service),
            statuses: s
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            retry_after_seen: s.retry_after_seen,
            retry_after_min_s: s.retry_after_min_s,
            retry_after_max_s: s.retry_after_max_s,
            amz_retry_after_max_ms: s.amz_retry_after_max_ms,
            bytes_out: s.bytes_out,
            bytes_in: s.bytes_in,
            expected,
            identity_ok: s.sent == s.ok + s.denied + s.errors(),
            ops: op_rows(s, buckets),
        }
    }
}

/// One second of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: u64,
    pub ok: u64,
    pub denied: u64,
    pub other: u64,
    pub transport: u64,
    pub timeout: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Result of one `[[assert]]`.
#[derive(Debug, Clone, Serialize)]
pub struct AssertResult {
    pub metric: String,
    pub scope: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub value: Option<f64>,
    pub pass: bool,
    pub detail: String,
}

/// One row per key, one per tier (sorted by name) and the overall row, each with its expected
/// outcome when there is an expectation.
fn rows(
    sc: &Scenario,
    out: &RunOutput,
    expected: Option<&[KeyExpect]>,
) -> (Vec<Row>, Vec<Row>, Row) {
    let secs = sc.duration.as_secs_f64();
    let mut overall = KeyStats::default();
    let mut tiers: BTreeMap<String, (KeyStats, Option<KeyExpect>)> = BTreeMap::new();
    let mut keys = Vec::new();
    let mut overall_exp = expected.map(|_| KeyExpect::default());
    for (i, k) in sc.keys.iter().enumerate() {
        let s = &out.keys[i];
        let tier = &sc.groups[k.group].tier;
        let e = expected.map(|e| e[i]);
        keys.push(Row::from_stats(&k.id, tier, s, secs, e, &sc.buckets));
        overall.merge(s);
        let entry = tiers
            .entry(tier.clone())
            .or_insert_with(|| (KeyStats::default(), expected.map(|_| KeyExpect::default())));
        entry.0.merge(s);
        if let (Some(acc), Some(e)) = (entry.1.as_mut(), e) {
            acc.offered += e.offered;
            acc.admitted += e.admitted;
            acc.denied += e.denied;
        }
        if let (Some(acc), Some(e)) = (overall_exp.as_mut(), e) {
            acc.offered += e.offered;
            acc.admitted += e.admitted;
            acc.denied += e.denied;
        }
    }
    let tiers: Vec<Row> = tiers
        .iter()
        .map(|(n, (s, e))| Row::from_stats(n, n, s, secs, *e, &sc.buckets))
        .collect();
    let overall = Row::from_stats("overall", "*", &overall, secs, overall_exp, &sc.buckets);
    (keys, tiers, overall)
}

/// The per-second timeline points.
fn timeline(out: &RunOutput) -> Vec<Point> {
    out.timeline
        .seconds
        .iter()
        .enumerate()
        .map(|(t, s)| {
            let p = Percentiles::of(&s.latency);
            Point {
                t: t as u64,
                ok: s.counts[0],
                denied: s.counts[1],
                other: s.counts[2],
                transport: s.counts[3],
                timeout: s.counts[4],
                p50_ms: p.p50,
                p90_ms: p.p90,
                p99_ms: p.p99,
                max_ms: p.max,
            }
        })
        .collect()
}

/// A table of rows (tiers or keys) with their expectation and latency percentiles.
fn html_table(h: &mut String, title: &str, rows: &[&Row]) {
    let _ = write!(
        h,
        "<h2>{title}</h2><table><tr><th>name</th><th>sent</th><th>admitted</th><th>denied</th><th>errors</th><th>req/s</th><th>exp. passed</th><th>exp. denied</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>service p99</th></tr>"
    );
    for r in rows {
        let p = &r.latency_ms;
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&r.name),
            r.sent,
            r.admitted,
            r.denied,
            r.errors,
            r.rps,
            r.expected.map_or("-".into(), |e| e.admitted.to_string()),
            r.expected.map_or("-".into(), |e| e.denied.to_string()),
            p.p50,
            p.p90,
            p.p99,
            p.p999,
            p.max,
            r.service_ms.p99
        );
    }
    h.push_str("</table>");
}

/// The whole result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub format: &'static str,
    pub version: u32,
    pub scenario: String,
    pub description: String,
    pub target: String,
    pub mode: Mode,
    pub driver: String,
    pub threads: u32,
    pub connections_per_core: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub elapsed_s: f64,
    pub started_unix: f64,
    pub valid: bool,
    pub invalid_reason: Option<String>,
    pub dispatch_lag_ms: Percentiles,
    pub send_lag_ms: Percentiles,
    pub overall: Row,
    pub tiers: Vec<Row>,
    pub keys: Vec<Row>,
    pub accuracy: Vec<Accuracy>,
    pub accuracy_pass: bool,
    pub identity_ok: bool,
    pub timeline: Vec<Point>,
    pub asserts: Vec<AssertResult>,
}

impl Report {
    pub fn build(
        sc: &Scenario,
        out: &RunOutput,
        expected: Option<&[KeyExpect]>,
        accuracy: Vec<Accuracy>,
    ) -> Report {
        let secs = sc.duration.as_secs_f64();
        let (keys, tiers, overall) = rows(sc, out, expected);
        let dispatch = Percentiles::of(&out.dispatch_lag);
        let limit_ms = sc.max_send_lag_p99.as_secs_f64() * 1000.0;
        let (valid, invalid_reason) = if sc.mode == Mode::Open && dispatch.p99 > limit_ms {
            (
                false,
                Some(format!(
                    "send lag p99 {:.3} ms > {:.3} ms: the generator could not keep its schedule",
                    dispatch.p99, limit_ms
                )),
            )
        } else {
            (true, None)
        };
        let timeline = timeline(out);
        let accuracy_pass = accuracy.iter().all(|a| a.pass);
        let identity_ok = keys.iter().all(|k| k.identity_ok) && overall.identity_ok;
        Report {
            format: REPORT_FORMAT,
            version: REPORT_VERSION,
            scenario: sc.name.clone(),
            description: sc.description.clone(),
            target: sc.targets.join(", "),
            mode: sc.mode,
            driver: out.driver.clone(),
            threads: sc.threads,
            connections_per_core: sc.connections_per_core,
            duration_s: secs,
            warmup_s: sc.warmup.as_secs_f64(),
            elapsed_s: out.elapsed.as_secs_f64(),
            started_unix: out.started_unix,
            valid,
            invalid_reason,
            dispatch_lag_ms: dispatch,
            send_lag_ms: Percentiles::of(&out.send_lag),
            overall,
            tiers,
            keys,
            accuracy,
            accuracy_pass,
            identity_ok,
            timeline,
            asserts: Vec::new(),
        }
    }

    pub fn asserts_pass(&self) -> bool {
        self.asserts.iter().all(|a| a.pass)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serialises")
    }

    /// The final text tables.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n{} → {}  ({:?} loop, {} thread(s) × {} conns, driver {}, {:.1}s measured{})",
            self.scenario,
            self.target,
            self.mode,
            self.threads,
            self.connections_per_core,
            self.driver,
            self.duration_s,
            if self.warmup_s > 0.0 {
                format!(" after {:.1}s warm-up", self.warmup_s)
            } else {
                String::new()
            }
        );
        self.text_tables(&mut s);
        self.text_ops(&mut s);
        self.text_details(&mut s);
        self.text_accuracy(&mut s);
        let _ = writeln!(
            s,
            "accounting sent = admitted + denied + errors: {}",
            if self.identity_ok { "holds" } else { "BROKEN" }
        );
        if !self.asserts.is_empty() {
            s.push_str("\nasserts:\n");
            for a in &self.asserts {
                let _ = writeln!(
                    s,
                    "  [{}] {} ({}) = {} {}",
                    if a.pass { "pass" } else { "FAIL" },
                    a.metric,
                    a.scope,
                    a.value.map_or("n/a".into(), |v| format!("{v:.4}")),
                    a.detail
                );
            }
        }
        if let Some(r) = &self.invalid_reason {
            let _ = writeln!(s, "\nRUN INVALID: {r}");
        }
        s
    }

    /// The tier table (with the overall row) and the key table.
    fn text_tables(&self, s: &mut String) {
        let has_exp = self.overall.expected.is_some();
        let header = |s: &mut String, first: &str| {
            let _ = write!(
                s,
                "{first:<28} {:>8} {:>8} {:>8} {:>6} {:>8}",
                "sent", "admitted", "denied", "errors", "req/s"
            );
            if has_exp {
                let _ = write!(s, " {:>9} {:>9}", "exp.pass", "exp.deny");
            }
            let _ = writeln!(
                s,
                " {:>9} {:>9} {:>9} {:>9} {:>9}  (latency ms from intended send)",
                "p50", "p90", "p99", "p99.9", "max"
            );
        };
        let line = |s: &mut String, r: &Row| {
            let _ = write!(
                s,
                "{:<28} {:>8} {:>8} {:>8} {:>6} {:>8.1}",
                truncate(&r.name, 28),
                r.sent,
                r.admitted,
                r.denied,
                r.errors,
                r.rps
            );
            if let Some(e) = r.expected {
                let _ = write!(s, " {:>9} {:>9}", e.admitted, e.denied);
            }
            let p = &r.latency_ms;
            let _ = writeln!(
                s,
                " {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}{}",
                p.p50,
                p.p90,
                p.p99,
                p.p999,
                p.max,
                if r.identity_ok {
                    ""
                } else {
                    "  IDENTITY BROKEN"
                }
            );
        };
        s.push('\n');
        header(s, "tier");
        for r in &self.tiers {
            line(s, r);
        }
        line(s, &self.overall);
        s.push('\n');
        header(s, "key");
        for r in &self.keys {
            line(s, r);
        }
    }

    /// Counts per op class and bucket (tiers, overall, keys), when the run sent more than one.
    fn text_ops(&self, s: &mut String) {
        if self.overall.ops.len() < 2 {
            return;
        }
        let _ = writeln!(
            s,
            "\n{:<28} {:<10} {:<16} {:>8} {:>8} {:>8} {:>6} {:>8}",
            "per op and bucket", "op", "bucket", "sent", "admitted", "denied", "errors", "req/s"
        );
        let rows = self.tiers.iter().chain([&self.overall]).chain(&self.keys);
        for r in rows {
            for o in &r.ops {
                let c = &o.counts;
                let _ = writeln!(
                    s,
                    "{:<28} {:<10} {:<16} {:>8} {:>8} {:>8} {:>6} {:>8.1}",
                    truncate(&r.name, 28),
                    o.op,
                    truncate(&o.bucket, 16),
                    c.sent,
                    c.ok,
                    c.denied,
                    c.errors,
                    if self.duration_s > 0.0 {
                        c.sent as f64 / self.duration_s
                    } else {
                        0.0
                    }
                );
            }
        }
    }

    /// Service time, errors, statuses, Retry-After, send lag and the expectation, overall.
    fn text_details(&self, s: &mut String) {
        let has_exp = self.overall.expected.is_some();
        let o = &self.overall;
        let _ = writeln!(
            s,
            "\nservice time (send→response) ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
            o.service_ms.p50,
            o.service_ms.p90,
            o.service_ms.p99,
            o.service_ms.p999,
            o.service_ms.max
        );
        let _ = writeln!(
            s,
            "errors: other status {}  transport {}  timeouts {}  | dropped (never sent) {}  late sends (>1 ms) {}",
            o.other_status, o.transport, o.timeouts, o.dropped, o.late
        );
        if !o.statuses.is_empty() {
            let st: Vec<String> = o.statuses.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            let _ = writeln!(s, "statuses: {}", st.join("  "));
        }
        if o.retry_after_seen > 0 {
            let _ = writeln!(
                s,
                "Retry-After seen {} times ({}..{} s), x-amz-retry-after max {} ms",
                o.retry_after_seen,
                o.retry_after_min_s.unwrap_or(0),
                o.retry_after_max_s.unwrap_or(0),
                o.amz_retry_after_max_ms
                    .map_or("-".into(), |v| v.to_string())
            );
        }
        let _ = writeln!(
            s,
            "send lag ms (clock → runtime): p50 {:.3}  p99 {:.3}  max {:.3}; incl. waiting for a connection: p99 {:.3}",
            self.dispatch_lag_ms.p50,
            self.dispatch_lag_ms.p99,
            self.dispatch_lag_ms.max,
            self.send_lag_ms.p99
        );
        if has_exp {
            let e = o.expected.unwrap_or_default();
            let _ = writeln!(
                s,
                "expected (exact sliding windows over the intended schedule): passed {} denied {}; measured passed {} denied {} ({:+.2}% passed)",
                e.admitted,
                e.denied,
                o.passed,
                o.denied,
                if e.admitted > 0 {
                    (o.passed as f64 / e.admitted as f64 - 1.0) * 100.0
                } else {
                    0.0
                }
            );
        }
    }

    /// The accuracy check per identity (nothing when there is none).
    fn text_accuracy(&self, s: &mut String) {
        if !self.accuracy.is_empty() {
            let _ = writeln!(
                s,
                "\naccuracy check (most admissions in any trailing window; certain = sent after the window opened and answered before it closed)"
            );
            for a in &self.accuracy {
                let w: Vec<String> = a
                    .windows
                    .iter()
                    .map(|c| {
                        format!(
                            "{}ms: certain {} / by-response {} / limit {} {}",
                            c.window_ms,
                            c.max_certain,
                            c.max_by_response,
                            c.limit,
                            if c.pass { "ok" } else { "OVER" }
                        )
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "  {:<28} {}  (tolerance {:.3} ms)  {}",
                    truncate(&a.identity, 28),
                    w.join(" | "),
                    a.tolerance_ms,
                    if a.pass { "PASS" } else { "FAIL" }
                );
            }
            let _ = writeln!(
                s,
                "accuracy: {}",
                if self.accuracy_pass { "PASS" } else { "FAIL" }
            );
        }
    }

    /// Self-contained HTML: inline CSS and SVG, no scripts, no external resources.
    pub fn to_html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>loadgen: {}</title><style>\
body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:13px;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:3px 7px;text-align:right}}th{{background:#f3f3f3}}td:first-child{{text-align:left}}\
.bad{{color:#b00;font-weight:bold}}.good{{color:#070}}svg{{background:#fff;border:1px solid #ddd}}</style></head><body>",
            esc(&self.scenario)
        );
        let _ = write!(
            h,
            "<h1>{}</h1><p>{}</p><p>target <code>{}</code>, {:?} loop, {} thread(s) × {} connections, driver {}, {:.1} s measured, {:.1} s warm-up. {}</p>",
            esc(&self.scenario),
            esc(&self.description),
            esc(&self.target),
            self.mode,
            self.threads,
            self.connections_per_core,
            esc(&self.driver),
            self.duration_s,
            self.warmup_s,
            match &self.invalid_reason {
                Some(r) => format!("<span class=bad>RUN INVALID: {}</span>", esc(r)),
                None => "<span class=good>Run valid.</span>".into(),
            }
        );
        h.push_str("<h2>Requests per second by outcome</h2>");
        h.push_str(&self.svg_rps());
        h.push_str("<h2>Latency percentiles over time (ms, from intended send, log scale)</h2>");
        h.push_str(&self.svg_latency());
        let mut tiers: Vec<&Row> = self.tiers.iter().collect();
        tiers.push(&self.overall);
        html_table(&mut h, "Tiers", &tiers);
        html_table(&mut h, "Keys", &self.keys.iter().collect::<Vec<_>>());
        self.html_accuracy(&mut h);
        self.html_asserts(&mut h);
        h.push_str("</body></html>\n");
        h
    }

    /// The accuracy check, one row per identity and window (nothing when there is none).
    fn html_accuracy(&self, h: &mut String) {
        if !self.accuracy.is_empty() {
            h.push_str("<h2>Accuracy check</h2><table><tr><th>identity</th><th>window</th><th>limit</th><th>max certain</th><th>max by response time</th><th>tolerance ms</th><th>verdict</th></tr>");
            for a in &self.accuracy {
                for c in &a.windows {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td class={}>{}</td></tr>",
                        esc(&a.identity),
                        c.window_ms,
                        c.limit,
                        c.max_certain,
                        c.max_by_response,
                        a.tolerance_ms,
                        if c.pass { "good" } else { "bad" },
                        if c.pass { "pass" } else { "FAIL" }
                    );
                }
            }
            h.push_str("</table>");
        }
    }

    fn html_asserts(&self, h: &mut String) {
        if !self.asserts.is_empty() {
            h.push_str("<h2>Asserts</h2><table><tr><th>metric</th><th>scope</th><th>value</th><th>verdict</th></tr>");
            for a in &self.asserts {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class={}>{}</td></tr>",
                    esc(&a.metric),
                    esc(&a.scope),
                    a.value.map_or("n/a".into(), |v| format!("{v:.4}")),
                    if a.pass { "good" } else { "bad" },
                    if a.pass { "pass" } else { "FAIL" }
                );
            }
            h.push_str("</table>");
        }
    }

    fn svg_rps(&self) -> String {
        const W: f64 = 900.0;
        const H: f64 = 260.0;
        const PAD: f64 = 45.0;
        const COLORS: [&str; 5] = ["#3a9d3a", "#e69500", "#c0392b", "#8e44ad", "#7f8c8d"];
        let n = self.timeline.len().max(1) as f64;
        let totals: Vec<u64> = self
            .timeline
            .iter()
            .map(|p| p.ok + p.denied + p.other + p.transport + p.timeout)
            .collect();
        let ymax = nice_max(totals.iter().copied().max().unwrap_or(1) as f64);
        let bw = (W - 2.0 * PAD) / n;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">"
        );
        axes(&mut s, W, H, PAD, ymax, false, self.timeline.len());
        for (i, p) in self.timeline.iter().enumerate() {
            let vals = [p.ok, p.denied, p.other, p.transport, p.timeout];
            let mut y = H - PAD;
            for (c, v) in vals.iter().enumerate() {
                if *v == 0 {
                    continue;
                }
                let hgt = *v as f64 / ymax * (H - 2.0 * PAD);
                y -= hgt;
                let _ = write!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>t={}s {}={}</title></rect>",
                    PAD + i as f64 * bw,
                    y,
                    (bw - 0.5).max(0.5),
                    hgt,
                    COLORS[c],
                    p.t,
                    OUTCOME_NAMES[c],
                    v
                );
            }
        }
        legend(&mut s, &OUTCOME_NAMES, &COLORS, W, PAD);
        s.push_str("</svg>");
        s
    }

    fn svg_latency(&self) -> String {
        const W: f64 = 900.0;
        const H: f64 = 260.0;
        const PAD: f64 = 45.0;
        const NAMES: [&str; 4] = ["p50", "p90", "p99", "max"];
        const COLORS: [&str; 4] = ["#2e86c1", "#27ae60", "#e67e22", "#c0392b"];
        let vmax = self
            .timeline
            .iter()
            .map(|p| p.max_ms)
            .fold(0.001f64, f64::max);
        let lo = 0.01f64.log10();
        let hi = nice_max(vmax).log10().max(lo + 1.0);
        let n = self.timeline.len().max(2) as f64;
        let mut s = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\">"
        );
        axes(&mut s, W, H, PAD, 10f64.powf(hi), true, self.timeline.len());
        for (ci, name) in NAMES.iter().enumerate() {
            let mut pts = String::new();
            for (i, p) in self.timeline.iter().enumerate() {
                let v = [p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms][ci].max(0.01);
                let x = PAD + (i as f64 + 0.5) / n * (W - 2.0 * PAD);
                let y = H - PAD - (v.log10() - lo) / (hi - lo) * (H - 2.0 * PAD);
                let _ = write!(pts, "{x:.1},{y:.1} ");
            }
            let _ = write!(
                s,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"><title>{}</title></polyline>",
                COLORS[ci], pts, name
            );
        }
        legend(&mut s, &NAMES, &COLORS, W, PAD);
        s.push_str("</svg>");
        s
    }
}

fn axes(s: &mut String, w: f64, h: f64, pad: f64, ymax: f64, log: bool, secs: usize) {
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#444\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#444\"/>",
        h - pad,
        w - pad,
        h - pad,
        h - pad
    );
    let ticks: Vec<(f64, String)> = if log {
        let lo = -2i32;
        let hi = ymax.log10().round() as i32;
        (lo..=hi)
            .map(|e| {
                let frac = (e - lo) as f64 / (hi - lo).max(1) as f64;
                (frac, format!("{}", 10f64.powi(e)))
            })
            .collect()
    } else {
        (0..=4)
            .map(|i| {
                (
                    i as f64 / 4.0,
                    format!("{}", (ymax * i as f64 / 4.0).round()),
                )
            })
            .collect()
    };
    for (frac, label) in ticks {
        let y = h - pad - frac * (h - 2.0 * pad);
        let _ = write!(
            s,
            "<line x1=\"{pad}\" y1=\"{y:.1}\" x2=\"{}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"end\">{}</text>",
            w - pad,
            pad - 4.0,
            y + 3.0,
            label
        );
    }
    let step = (secs / 10).max(1);
    for t in (0..=secs).step_by(step) {
        let x = pad + t as f64 / secs.max(1) as f64 * (w - 2.0 * pad);
        let _ = write!(
            s,
            "<text x=\"{x:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{t}s</text>",
            h - pad + 14.0
        );
    }
}

fn legend(s: &mut String, names: &[&str], colors: &[&str], w: f64, pad: f64) {
    for (i, (n, c)) in names.iter().zip(colors).enumerate() {
        let x = w - pad - 80.0 * (names.len() - i) as f64;
        let _ = write!(
            s,
            "<rect x=\"{x}\" y=\"8\" width=\"10\" height=\"10\" fill=\"{c}\"/><text x=\"{}\" y=\"17\" font-size=\"11\">{n}</text>",
            x + 14.0
        );
    }
    let _ = pad;
}

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let e = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if v <= m * e {
            return m * e;
        }
    }
    10.0 * e
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let t: String = s.chars().take(n - 1).collect();
        format!("{t}…")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(nice_max(73.0), 100.0);
        assert_eq!(nice_max(130.0), 200.0);
        assert_eq!(esc("<a&\">"), "&lt;a&amp;&quot;&gt;");
        assert_eq!(truncate("abcdef", 4), "abc…");
    }
}
