//! `[[assert]]` checks: metric names, scopes, and their evaluation against a finished
//! [`Report`]. A failed assert makes `loadgen run` exit with status 1. Pure.

use crate::report::{AssertResult, Report, Row};

/// Known metrics. Latencies are in ms; ratios in 0..1; booleans are 1 (true) or 0 (false).
pub const METRICS: &[&str] = &[
    "sent",
    "admitted",
    "denied",
    "errors",
    "timeouts",
    "transport",
    "dropped",
    "late",
    "rps",
    "p50",
    "p90",
    "p99",
    "p999",
    "max",
    "service_p50",
    "service_p99",
    "service_max",
    "error_ratio",
    "denied_ratio",
    "admitted_ratio",
    "passed",
    "passed_vs_expected",
    "denied_vs_expected",
    "retry_after_seen",
    "valid",
    "accuracy",
    "identity",
];

const BOOLEAN: &[&str] = &["valid", "accuracy", "identity"];

/// Validates a scope string: overall, each_key, each_tier, tier:NAME, key:NAME.
pub fn check_scope(scope: &str) -> Result<(), String> {
    match scope {
        "overall" | "each_key" | "each_tier" => Ok(()),
        s if s.starts_with("tier:") || s.starts_with("key:") => Ok(()),
        s => Err(format!(
            "unknown scope {s:?} (overall, each_key, each_tier, tier:NAME, key:NAME)"
        )),
    }
}

fn ratio(a: u64, b: u64) -> Option<f64> {
    (b > 0).then(|| a as f64 / b as f64)
}

fn row_metric(r: &Row, m: &str) -> Option<f64> {
    Some(match m {
        "sent" => r.sent as f64,
        "admitted" => r.admitted as f64,
        "denied" => r.denied as f64,
        "errors" => r.errors as f64,
        "timeouts" => r.timeouts as f64,
        "transport" => r.transport as f64,
        "dropped" => r.dropped as f64,
        "late" => r.late as f64,
        "rps" => r.rps,
        "p50" => r.latency_ms.p50,
        "p90" => r.latency_ms.p90,
        "p99" => r.latency_ms.p99,
        "p999" => r.latency_ms.p999,
        "max" => r.latency_ms.max,
        "service_p50" => r.service_ms.p50,
        "service_p99" => r.service_ms.p99,
        "service_max" => r.service_ms.max,
        "error_ratio" => ratio(r.errors, r.sent)?,
        "denied_ratio" => ratio(r.denied, r.sent)?,
        "admitted_ratio" => ratio(r.admitted, r.sent)?,
        "passed" => r.passed as f64,
        "passed_vs_expected" => ratio(r.passed, r.expected?.admitted)?,
        "denied_vs_expected" => ratio(r.denied, r.expected?.denied)?,
        "retry_after_seen" => r.retry_after_seen as f64,
        "identity" => f64::from(u8::from(r.identity_ok)),
        _ => return None,
    })
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

pub fn evaluate(asserts: &[crate::scenario::Assert], r: &Report) -> Vec<AssertResult> {
    let mut out = Vec::new();
    for a in asserts {
        let boolean = BOOLEAN.contains(&a.metric.as_str());
        let rows: Vec<&Row> = match a.scope.as_str() {
            "overall" => vec![&r.overall],
            "each_key" => r.keys.iter().collect(),
            "each_tier" => r.tiers.iter().collect(),
            s => {
                if let Some(t) = s.strip_prefix("tier:") {
                    r.tiers.iter().filter(|x| x.name == t).collect()
                } else if let Some(k) = s.strip_prefix("key:") {
                    r.keys.iter().filter(|x| x.name == k).collect()
                } else {
                    Vec::new()
                }
            }
        };
        let global = match a.metric.as_str() {
            "valid" => Some(f64::from(u8::from(r.valid))),
            "accuracy" => Some(f64::from(u8::from(
                r.accuracy_pass && !r.accuracy.is_empty(),
            ))),
            _ => None,
        };
        if let Some(v) = global {
            out.push(AssertResult {
                metric: a.metric.clone(),
                scope: a.scope.clone(),
                min: a.min,
                max: a.max,
                value: Some(v),
                pass: judge(Some(v), a.min, a.max, boolean),
                detail: String::new(),
            });
            continue;
        }
        if rows.is_empty() {
            out.push(AssertResult {
                metric: a.metric.clone(),
                scope: a.scope.clone(),
                min: a.min,
                max: a.max,
                value: None,
                pass: false,
                detail: "scope matched nothing".into(),
            });
            continue;
        }
        // For multi-row scopes, report the worst row.
        let mut worst: Option<(f64, &str)> = None;
        let mut pass = true;
        let mut missing = None;
        for row in &rows {
            let v = row_metric(row, &a.metric);
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
        out.push(AssertResult {
            metric: a.metric.clone(),
            scope: a.scope.clone(),
            min: a.min,
            max: a.max,
            value: worst.map(|w| w.0),
            pass,
            detail,
        });
    }
    out
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
        assert!(check_scope("tier:premium").is_ok());
        assert!(check_scope("group").is_err());
    }
}
