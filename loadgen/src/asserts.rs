//! `[[assert]]` evaluation against a finished [`Report`]: each assert's value per row of its
//! scope (of the whole row, or of the op classes / buckets it selects), judged against its
//! bounds (the worst row reported). A failed assert makes `loadgen run` exit with status 1. The vocabulary (`Metric`, `Scope`) is the scenario's. Pure.

use crate::report::{AssertResult, Report, Row};
use crate::scenario::{Assert, Metric, Scope};
use crate::stats::OpCounts;

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

/// A per-row metric's value (`None` for the report-wide ones and for missing ratios).
fn row_metric(r: &Row, m: Metric) -> Option<f64> {
    Some(match m {
        Metric::Sent => r.sent as f64,
        Metric::Admitted => r.admitted as f64,
        Metric::Denied => r.denied as f64,
        Metric::Errors => r.errors as f64,
        Metric::Timeouts => r.timeouts as f64,
        Metric::Transport => r.transport as f64,
        Metric::Dropped => r.dropped as f64,
        Metric::Late => r.late as f64,
        Metric::Rps => r.rps,
        Metric::P50 => r.latency_ms.p50,
        Metric::P90 => r.latency_ms.p90,
        Metric::P99 => r.latency_ms.p99,
        Metric::P999 => r.latency_ms.p999,
        Metric::Max => r.latency_ms.max,
        Metric::ServiceP50 => r.service_ms.p50,
        Metric::ServiceP99 => r.service_ms.p99,
        Metric::ServiceMax => r.service_ms.max,
        Metric::ErrorRatio => ratio(r.errors, r.sent)?,
        Metric::DeniedRatio => ratio(r.denied, r.sent)?,
        Metric::AdmittedRatio => ratio(r.admitted, r.sent)?,
        Metric::Passed => r.passed as f64,
        Metric::PassedVsExpected => ratio(r.passed, r.expected?.admitted)?,
        Metric::DeniedVsExpected => ratio(r.denied, r.expected?.denied)?,
        Metric::RetryAfterSeen => r.retry_after_seen as f64,
        Metric::Identity => f64::from(u8::from(r.identity_ok)),
        Metric::Valid | Metric::Accuracy => return None,
    })
}

/// A count metric over the requests of row `r` that `a`'s `op` and `bucket` select.
fn op_metric(r: &Row, a: &Assert, secs: f64) -> Option<f64> {
    let mut c = OpCounts::default();
    for o in r.ops.iter().filter(|o| {
        a.op.is_none_or(|op| o.op == op.name()) && a.bucket.as_ref().is_none_or(|b| &o.bucket == b)
    }) {
        c.add(&o.counts);
    }
    Some(match a.metric {
        Metric::Sent => c.sent as f64,
        Metric::Admitted => c.ok as f64,
        Metric::Denied => c.denied as f64,
        Metric::Errors => c.errors as f64,
        Metric::Passed => c.passed as f64,
        Metric::Rps => (secs > 0.0).then(|| c.sent as f64 / secs)?,
        Metric::ErrorRatio => ratio(c.errors, c.sent)?,
        Metric::DeniedRatio => ratio(c.denied, c.sent)?,
        Metric::AdmittedRatio => ratio(c.ok, c.sent)?,
        _ => return None,
    })
}

/// The value of `a`'s metric for row `r`: of the whole row, or of its selected ops/buckets.
fn metric_of(r: &Row, a: &Assert, secs: f64) -> Option<f64> {
    if a.op.is_some() || a.bucket.is_some() {
        op_metric(r, a, secs)
    } else {
        row_metric(r, a.metric)
    }
}

/// A report-wide metric's value (`None` for the per-row ones).
fn global_metric(r: &Report, m: Metric) -> Option<f64> {
    match m {
        Metric::Valid => Some(f64::from(u8::from(r.valid))),
        Metric::Accuracy => Some(f64::from(u8::from(
            r.accuracy_pass && !r.accuracy.is_empty(),
        ))),
        _ => None,
    }
}

fn rows<'r>(r: &'r Report, scope: &Scope) -> Vec<&'r Row> {
    match scope {
        Scope::Overall => vec![&r.overall],
        Scope::EachKey => r.keys.iter().collect(),
        Scope::EachTier => r.tiers.iter().collect(),
        Scope::Tier(t) => r.tiers.iter().filter(|x| &x.name == t).collect(),
        Scope::Key(k) => r.keys.iter().filter(|x| &x.name == k).collect(),
    }
}

fn judge(value: Option<f64>, min: Option<f64>, max: Option<f64>, boolean: bool) -> bool {
    let Some(v) = value else {
        return false;
    };
    let min = if boolean && min.is_none() && max.is_none() {
        Some(1.0)
    } else {
        min
    };
    min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m)
}

pub fn evaluate(asserts: &[Assert], r: &Report) -> Vec<AssertResult> {
    asserts.iter().map(|a| evaluate_one(a, r)).collect()
}

fn evaluate_one(a: &Assert, r: &Report) -> AssertResult {
    let boolean = a.metric.is_boolean();
    let result = |value: Option<f64>, pass: bool, detail: String| AssertResult {
        metric: a.metric.as_str().to_string(),
        scope: a.scope_label(),
        min: a.min,
        max: a.max,
        value,
        pass,
        detail,
    };
    if let Some(v) = global_metric(r, a.metric) {
        return result(
            Some(v),
            judge(Some(v), a.min, a.max, boolean),
            String::new(),
        );
    }
    let rows = rows(r, &a.scope);
    if rows.is_empty() {
        return result(None, false, "scope matched nothing".into());
    }
    // For multi-row scopes, report the worst row.
    let mut worst: Option<(f64, &str)> = None;
    let mut pass = true;
    let mut missing = None;
    for row in &rows {
        let v = metric_of(row, a, r.duration_s);
        if !judge(v, a.min, a.max, boolean) {
            pass = false;
            match v {
                Some(v) => {
                    if worst.is_none() {
                        worst = Some((v, &row.name));
                    }
                }
                None => missing = Some(row.name.as_str()),
            }
        } else if worst.is_none() && rows.len() == 1 {
            worst = v.map(|v| (v, row.name.as_str()));
        }
    }
    let detail = match (pass, missing, worst) {
        (false, Some(n), _) => format!("no value for {n}"),
        (false, None, Some((_, n))) => format!("fails at {n}"),
        _ => String::new(),
    };
    result(worst.map(|w| w.0), pass, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judging() {
        assert!(judge(Some(1.0), None, None, true));
        assert!(!judge(Some(0.0), None, None, true));
        assert!(judge(Some(5.0), Some(1.0), Some(5.0), false));
        assert!(!judge(Some(5.1), None, Some(5.0), false));
        assert!(!judge(None, None, Some(5.0), false));
        assert_eq!("tier:premium".parse(), Ok(Scope::Tier("premium".into())));
        assert!("group".parse::<Scope>().is_err());
    }
}
