//! Measurement records: outcome classification, per-key counters (also per op class and
//! bucket) and HdrHistograms (latency from the intended send time, service time from the actual
//! send), admitted-request intervals for the accuracy check, and the per-second timeline. Merging only; no I/O, no clock.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;

/// Highest latency a histogram tracks exactly (µs); larger values saturate.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn coarse_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds")
}

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// 429, or 503 whose body is an S3 `SlowDown` error.
    Denied,
    /// Any other status (1xx final, 3xx, 4xx, 5xx).
    OtherStatus,
    /// Connect, TLS, read, write or protocol failure.
    Transport,
    /// No complete response within the timeout.
    Timeout,
}

impl Outcome {
    pub fn classify(status: u16, slowdown: bool) -> Outcome {
        if (200..300).contains(&status) {
            Outcome::Ok
        } else if status == 429 || (status == 503 && slowdown) {
            Outcome::Denied
        } else {
            Outcome::OtherStatus
        }
    }

    /// Whether the limiter let the request through (any HTTP answer except a denial).
    pub fn passed_limiter(self) -> bool {
        matches!(self, Outcome::Ok | Outcome::OtherStatus)
    }
}

/// One completed request, as the engine reports it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub intended_ns: u64,
    pub sent_ns: u64,
    pub done_ns: u64,
    pub outcome: Outcome,
    pub status: u16,
    pub limited: bool,
    /// The op class and bucket (index into the scenario's bucket list).
    pub op: crate::plan::Op,
    pub bucket: u16,
    pub warm: bool,
    pub retry_after_s: Option<u32>,
    pub amz_retry_after_ms: Option<u32>,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

/// Measured-phase outcome counts of one (op class, bucket) of a key or of merged keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCounts {
    pub sent: u64,
    pub ok: u64,
    pub denied: u64,
    /// Other statuses, transport errors and timeouts.
    pub errors: u64,
    /// Let through by the limiter (2xx and other HTTP statuses).
    pub passed: u64,
}

impl OpCounts {
    fn record(&mut self, o: Outcome) {
        self.sent += 1;
        match o {
            Outcome::Ok => self.ok += 1,
            Outcome::Denied => self.denied += 1,
            _ => self.errors += 1,
        }
        if o.passed_limiter() {
            self.passed += 1;
        }
    }

    pub fn add(&mut self, o: &OpCounts) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.denied += o.denied;
        self.errors += o.errors;
        self.passed += o.passed;
    }
}

/// Where (op, bucket) is counted in [`KeyStats::by_op`].
pub fn op_slot(op: crate::plan::Op, bucket: u16) -> usize {
    bucket as usize * crate::plan::Op::COUNT + op.index()
}

/// Counters and histograms of one key (or of a merged set of keys).
#[derive(Debug, Clone)]
pub struct KeyStats {
    pub sent: u64,
    pub ok: u64,
    pub denied: u64,
    pub other_status: u64,
    pub transport: u64,
    pub timeouts: u64,
    /// Requests that waited longer than the timeout for a free connection and were never sent.
    pub dropped: u64,
    /// Requests written more than 1 ms after their intended time.
    pub late: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub retry_after_seen: u64,
    pub retry_after_min_s: Option<u32>,
    pub retry_after_max_s: Option<u32>,
    pub amz_retry_after_max_ms: Option<u32>,
    pub bytes_out: u64,
    pub bytes_in: u64,
    /// Latency from the intended send time (corrected for coordinated omission), µs.
    pub latency: Histogram<u64>,
    /// Service time from the actual send to the complete response, µs.
    pub service: Histogram<u64>,
    /// (sent_ns, done_ns) of limited requests that passed the limiter, warm-up included.
    pub admitted: Vec<(u64, u64)>,
    /// Measured-phase limited requests (for the expectation comparison).
    pub limited_sent: u64,
    pub limited_passed: u64,
    /// Outcome counts per (op class, bucket), indexed by [`op_slot`] (grown on demand).
    pub by_op: Vec<OpCounts>,
}

impl Default for KeyStats {
    fn default() -> Self {
        KeyStats {
            sent: 0,
            ok: 0,
            denied: 0,
            other_status: 0,
            transport: 0,
            timeouts: 0,
            dropped: 0,
            late: 0,
            statuses: BTreeMap::new(),
            retry_after_seen: 0,
            retry_after_min_s: None,
            retry_after_max_s: None,
            amz_retry_after_max_ms: None,
            bytes_out: 0,
            bytes_in: 0,
            latency: new_hist(),
            service: new_hist(),
            admitted: Vec::new(),
            limited_sent: 0,
            limited_passed: 0,
            by_op: Vec::new(),
        }
    }
}

pub const LATE_NS: u64 = 1_000_000;

impl KeyStats {
    pub fn errors(&self) -> u64 {
        self.other_status + self.transport + self.timeouts
    }

    pub fn record(&mut self, s: &Sample, record_admitted: bool) {
        if s.limited && s.outcome.passed_limiter() && record_admitted {
            self.admitted.push((s.sent_ns, s.done_ns));
        }
        if s.warm {
            return;
        }
        self.sent += 1;
        let slot = op_slot(s.op, s.bucket);
        if slot >= self.by_op.len() {
            self.by_op.resize(slot + 1, OpCounts::default());
        }
        self.by_op[slot].record(s.outcome);
        match s.outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Denied => self.denied += 1,
            Outcome::OtherStatus => self.other_status += 1,
            Outcome::Transport => self.transport += 1,
            Outcome::Timeout => self.timeouts += 1,
        }
        if s.limited {
            self.limited_sent += 1;
            if s.outcome.passed_limiter() {
                self.limited_passed += 1;
            }
        }
        if s.status != 0 {
            *self.statuses.entry(s.status).or_insert(0) += 1;
        }
        if s.sent_ns > s.intended_ns + LATE_NS {
            self.late += 1;
        }
        if let Some(r) = s.retry_after_s {
            self.retry_after_seen += 1;
            self.retry_after_min_s = Some(self.retry_after_min_s.map_or(r, |m| m.min(r)));
            self.retry_after_max_s = Some(self.retry_after_max_s.map_or(r, |m| m.max(r)));
        }
        if let Some(r) = s.amz_retry_after_ms {
            self.amz_retry_after_max_ms = Some(self.amz_retry_after_max_ms.map_or(r, |m| m.max(r)));
        }
        self.bytes_out += s.bytes_out;
        self.bytes_in += s.bytes_in;
        let lat = (s.done_ns.saturating_sub(s.intended_ns) / 1000).max(1);
        let svc = (s.done_ns.saturating_sub(s.sent_ns) / 1000).max(1);
        self.latency.saturating_record(lat);
        self.service.saturating_record(svc);
    }

    pub fn merge(&mut self, o: &KeyStats) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.denied += o.denied;
        self.other_status += o.other_status;
        self.transport += o.transport;
        self.timeouts += o.timeouts;
        self.dropped += o.dropped;
        self.late += o.late;
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_insert(0) += v;
        }
        self.retry_after_seen += o.retry_after_seen;
        self.retry_after_min_s = match (self.retry_after_min_s, o.retry_after_min_s) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.retry_after_max_s = self.retry_after_max_s.max(o.retry_after_max_s);
        self.amz_retry_after_max_ms = self.amz_retry_after_max_ms.max(o.amz_retry_after_max_ms);
        self.bytes_out += o.bytes_out;
        self.bytes_in += o.bytes_in;
        self.latency.add(&o.latency).expect("same bounds");
        self.service.add(&o.service).expect("same bounds");
        self.limited_sent += o.limited_sent;
        self.limited_passed += o.limited_passed;
        if o.by_op.len() > self.by_op.len() {
            self.by_op.resize(o.by_op.len(), OpCounts::default());
        }
        for (a, b) in self.by_op.iter_mut().zip(&o.by_op) {
            a.add(b);
        }
    }
}

/// Outcome counts and a coarse latency histogram for one second of the run (by completion time).
#[derive(Debug, Clone)]
pub struct Second {
    pub counts: [u64; 5],
    pub latency: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            counts: [0; 5],
            latency: coarse_hist(),
        }
    }
}

pub fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Denied => 1,
        Outcome::OtherStatus => 2,
        Outcome::Transport => 3,
        Outcome::Timeout => 4,
    }
}

pub const OUTCOME_NAMES: [&str; 5] = ["ok", "denied", "other", "transport", "timeout"];

/// Per-second series.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    pub seconds: Vec<Second>,
}

impl Timeline {
    pub fn record(&mut self, done_ns: u64, outcome: Outcome, latency_us: u64) {
        let i = (done_ns / 1_000_000_000) as usize;
        if i >= self.seconds.len() {
            if i > 100_000 {
                return;
            }
            self.seconds.resize_with(i + 1, Second::default);
        }
        let s = &mut self.seconds[i];
        s.counts[outcome_index(outcome)] += 1;
        s.latency.saturating_record(latency_us.max(1));
    }

    pub fn merge(&mut self, o: &Timeline) {
        if o.seconds.len() > self.seconds.len() {
            self.seconds.resize_with(o.seconds.len(), Second::default);
        }
        for (a, b) in self.seconds.iter_mut().zip(&o.seconds) {
            for i in 0..5 {
                a.counts[i] += b.counts[i];
            }
            a.latency.add(&b.latency).expect("same bounds");
        }
    }
}

/// Percentile summary (ms) of a histogram in µs.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let ms = |v: u64| v as f64 / 1000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(outcome: Outcome, status: u16, warm: bool) -> Sample {
        Sample {
            intended_ns: 1_000_000,
            sent_ns: 3_000_000,
            done_ns: 4_000_000,
            outcome,
            status,
            limited: true,
            op: crate::plan::Op::Get,
            bucket: 0,
            warm,
            retry_after_s: if status == 429 { Some(2) } else { None },
            amz_retry_after_ms: None,
            bytes_out: 10,
            bytes_in: 5,
        }
    }

    #[test]
    fn classify() {
        assert_eq!(Outcome::classify(200, false), Outcome::Ok);
        assert_eq!(Outcome::classify(204, false), Outcome::Ok);
        assert_eq!(Outcome::classify(429, false), Outcome::Denied);
        assert_eq!(Outcome::classify(503, true), Outcome::Denied);
        assert_eq!(Outcome::classify(503, false), Outcome::OtherStatus);
        assert_eq!(Outcome::classify(404, false), Outcome::OtherStatus);
        assert!(Outcome::OtherStatus.passed_limiter());
        assert!(!Outcome::Denied.passed_limiter());
        assert!(!Outcome::Timeout.passed_limiter());
    }

    #[test]
    fn record_and_merge() {
        let mut a = KeyStats::default();
        a.record(&sample(Outcome::Ok, 200, false), true);
        a.record(&sample(Outcome::Denied, 429, false), true);
        a.record(&sample(Outcome::Ok, 200, true), true);
        assert_eq!(a.sent, 2);
        assert_eq!(a.late, 2);
        assert_eq!(a.admitted.len(), 2); // warm-up admissions still count for accuracy
        assert_eq!(a.retry_after_seen, 1);
        assert!((2995..=3005).contains(&a.latency.max()));
        assert!(a.service.max() >= 999 && a.service.max() <= 1001);
        let mut b = KeyStats::default();
        b.record(&sample(Outcome::Transport, 0, false), true);
        b.merge(&a);
        assert_eq!(b.sent, 3);
        assert_eq!(b.errors(), 1);
        assert_eq!(b.sent, b.ok + b.denied + b.errors());
        assert_eq!(b.statuses[&429], 1);
    }

    #[test]
    fn counts_per_op_class_and_bucket() {
        use crate::plan::Op;
        let mut a = KeyStats::default();
        let mut list = sample(Outcome::Denied, 429, false);
        (list.op, list.bucket) = (Op::List, 2);
        a.record(&list, true);
        a.record(&sample(Outcome::Ok, 200, false), true);
        a.record(&sample(Outcome::OtherStatus, 404, false), true);
        let mut warm = list;
        warm.warm = true;
        a.record(&warm, true);
        assert_eq!(a.by_op.len(), op_slot(Op::List, 2) + 1);
        let get = a.by_op[op_slot(Op::Get, 0)];
        assert_eq!((get.sent, get.ok, get.errors, get.passed), (2, 1, 1, 2));
        let l = a.by_op[op_slot(Op::List, 2)];
        assert_eq!(
            (l.sent, l.denied, l.passed),
            (1, 1, 0),
            "warm-up not counted"
        );
        let mut b = KeyStats::default();
        b.record(&sample(Outcome::Ok, 200, false), true);
        b.merge(&a);
        assert_eq!(b.by_op[op_slot(Op::Get, 0)].sent, 3);
        assert_eq!(b.by_op[op_slot(Op::List, 2)].denied, 1);
        assert_eq!(b.by_op.iter().map(|c| c.sent).sum::<u64>(), b.sent);
    }

    #[test]
    fn timeline() {
        let mut t = Timeline::default();
        t.record(1_500_000_000, Outcome::Ok, 10);
        t.record(2_500_000_000, Outcome::Denied, 10);
        let mut u = Timeline::default();
        u.record(500_000_000, Outcome::Ok, 10);
        u.merge(&t);
        assert_eq!(u.seconds.len(), 3);
        assert_eq!(u.seconds[1].counts[0], 1);
        assert_eq!(u.seconds[2].counts[1], 1);
    }
}
