//! Per-core statistics counters.
//!
//! Owns: `CoreStats` (one per worker core, written only by that core) and the names of
//! its per-method and per-auth-method slots; latency histograms ([`Histogram`]: buckets
//! for a proxy, 50 µs … 10 s), per-upstream-node gauges ([`NodeStats`], indexed by the
//! node's stable id), the worker heartbeat, and the "key last seen" slots
//! ([`CoreStats::record_seen`]); the control thread reads, sums and merges them
//! (`control::metrics`). The data path never contends on these: every field is updated
//! by exactly one thread with a relaxed load + store (a plain store on x86-64, no locked
//! instruction); the control thread only reads.
//! Must not touch: I/O, HTTP parsing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Max tiers tracked in stats (validated at config load).
pub const MAX_TIERS: usize = 32;
/// Methods tracked (GET PUT POST HEAD DELETE OPTIONS PATCH other) and their counter index:
/// one table with the limited methods, in `http::method`.
pub use crate::http::{METHOD_NAMES, METHODS, method_index};

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        // Single writer: load + store, never a read-modify-write instruction.
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }
    #[inline]
    pub fn inc(&self) {
        self.add(1)
    }
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Per tier × method decision counters.
#[derive(Default, Debug)]
pub struct TierMethod {
    pub admitted: Counter,
    pub denied: Counter,
    /// Would have been denied, forwarded because of shadow mode.
    pub shadow_denied: Counter,
}

/// Per `[[rules]]` entry (by its slot, `Rule::slot`).
#[derive(Default, Debug)]
pub struct RuleCounters {
    /// Requests it was charged for that were admitted.
    pub admitted: Counter,
    /// Requests it denied (a limit, or `action = "deny"`).
    pub denied: Counter,
    /// Would have been denied, forwarded because of shadow mode.
    pub shadow_denied: Counter,
    /// Requests it exempted (`action = "allow"`).
    pub allowed: Counter,
    /// Requests this core holds in flight under it now (gauge).
    pub in_flight: Counter,
}

#[derive(Debug)]
#[repr(align(128))]
pub struct CoreStats {
    pub requests: [Counter; METHODS],
    /// Requests of a method that is not limited for their tier (passed, counted only).
    pub unlimited: [Counter; METHODS],
    pub tiers: Vec<[TierMethod; METHODS]>,
    /// Per rule (`rules::MAX_RULES` slots).
    pub rules: Vec<RuleCounters>,
    pub auth_methods: [Counter; 6],
    pub malformed_keys: Counter,
    pub responses: [Counter; 6], // 1xx..5xx, [0] = other
    pub upstream_errors_502: Counter,
    pub upstream_errors_503: Counter,
    pub upstream_errors_504: Counter,
    pub upstream_retries: Counter,
    /// Upstream answered while the request body was still being sent and stopped reading it;
    /// its answer was relayed and both connections closed.
    pub upstream_early_responses: Counter,
    pub upstream_connects: Counter,
    /// Upstream connects that failed for lack of a local resource (EMFILE, ENOBUFS …): not
    /// counted against the node.
    pub upstream_local_errors: Counter,
    /// Pooled upstream connections closed instead of reused: expired, or no longer clean
    /// (readable or closed while idle). A gauge, published by housekeeping.
    pub upstream_pool_discarded: Counter,
    pub client_errors_400: Counter,
    /// Upstream answers saying a request was not authenticated (its slot given back, the
    /// client address charged a failure).
    pub auth_failures: Counter,
    /// Requests refused by `[limits.verify]`: their signature did not verify.
    pub signature_failures: Counter,
    /// Requests refused because their client address was over its failure window.
    pub penalty_denials: Counter,
    /// New subjects refused because the table was full of entries that would deny
    /// (a gauge, published by housekeeping).
    pub table_refused: Counter,
    pub connections_accepted: Counter,
    pub connections_active: Counter,
    /// Connections closed at once because the worker was at `http.max_connections`.
    pub connections_refused: Counter,
    pub tls_handshakes: Counter,
    pub tls_handshake_errors: Counter,
    pub bytes_from_client: Counter,
    pub bytes_to_client: Counter,
    pub cross_core_sent: Counter,
    pub cross_core_received: Counter,
    pub cross_core_batches: Counter,
    pub local_checks: Counter,
    pub remote_checks: Counter,
    pub table_entries: Counter,
    pub table_evictions: Counter,
    pub table_forced_evictions: Counter,
    pub table_expired: Counter,
    pub config_version: Counter,
    /// Access-log lines handed to the writer / dropped because it was behind.
    pub access_log_lines: Counter,
    pub access_log_dropped: Counter,
    /// Bumped by the core's housekeeping task (every 250 ms): the control thread checks
    /// that it advances (a core whose event loop is stuck stops bumping it).
    pub heartbeat: Counter,
    /// The I/O driver this core runs (1 io_uring, 2 epoll; 0 not started).
    pub driver: Counter,
    /// Request durations (head read → response done), by tier (`MAX_TIERS` = no tier:
    /// refused before the limiter) and decision ([`DECISION_NAMES`]).
    pub request_duration: Vec<[Histogram; DECISIONS]>,
    /// Per upstream node, indexed by its stable id (ids ≥ `NODE_SLOTS` are not recorded).
    pub nodes: Vec<NodeStats>,
    /// Which auth method and tier each key was last seen with (see [`record_seen`]).
    ///
    /// [`record_seen`]: CoreStats::record_seen
    seen: Vec<[Counter; 2]>,
}

impl Default for CoreStats {
    fn default() -> Self {
        CoreStats {
            requests: Default::default(),
            unlimited: Default::default(),
            tiers: (0..MAX_TIERS).map(|_| Default::default()).collect(),
            rules: (0..crate::rules::MAX_RULES)
                .map(|_| Default::default())
                .collect(),
            auth_methods: Default::default(),
            malformed_keys: Default::default(),
            responses: Default::default(),
            upstream_errors_502: Default::default(),
            upstream_errors_503: Default::default(),
            upstream_errors_504: Default::default(),
            upstream_retries: Default::default(),
            upstream_early_responses: Default::default(),
            upstream_connects: Default::default(),
            upstream_local_errors: Default::default(),
            upstream_pool_discarded: Default::default(),
            client_errors_400: Default::default(),
            auth_failures: Default::default(),
            penalty_denials: Default::default(),
            signature_failures: Default::default(),
            table_refused: Default::default(),
            connections_accepted: Default::default(),
            connections_active: Default::default(),
            connections_refused: Default::default(),
            tls_handshakes: Default::default(),
            tls_handshake_errors: Default::default(),
            bytes_from_client: Default::default(),
            bytes_to_client: Default::default(),
            cross_core_sent: Default::default(),
            cross_core_received: Default::default(),
            cross_core_batches: Default::default(),
            local_checks: Default::default(),
            remote_checks: Default::default(),
            table_entries: Default::default(),
            table_evictions: Default::default(),
            table_forced_evictions: Default::default(),
            table_expired: Default::default(),
            config_version: Default::default(),
            access_log_lines: Default::default(),
            access_log_dropped: Default::default(),
            heartbeat: Default::default(),
            driver: Default::default(),
            request_duration: (0..=MAX_TIERS).map(|_| Default::default()).collect(),
            nodes: (0..NODE_SLOTS).map(|_| Default::default()).collect(),
            seen: (0..SEEN_SLOTS).map(|_| Default::default()).collect(),
        }
    }
}

impl CoreStats {
    /// Forgets the counts of tier number `t` (a reload gave it to another tier; see
    /// `Config::numbers_changing_hands`). Called by the core that owns these stats.
    pub fn forget_tier(&self, t: usize) {
        for m in self.tiers.get(t).into_iter().flatten() {
            [&m.admitted, &m.denied, &m.shadow_denied]
                .iter()
                .for_each(|c| c.set(0));
        }
        self.request_duration
            .get(t)
            .into_iter()
            .flatten()
            .for_each(Histogram::clear);
    }

    /// Forgets the decisions counted for rule slot `slot`, as [`forget_tier`] does. The
    /// in-flight gauge is left alone: the requests it counts release it.
    ///
    /// [`forget_tier`]: Self::forget_tier
    pub fn forget_rule(&self, slot: usize) {
        if let Some(r) = self.rules.get(slot) {
            [&r.admitted, &r.denied, &r.shadow_denied, &r.allowed]
                .iter()
                .for_each(|c| c.set(0));
        }
    }

    /// Counts what the rule numbered `slot` (`Rule::slot`) decided: an exemption, or a
    /// denial (enforced or shadow).
    pub fn count_rule(&self, slot: u16, allowed: bool, enforce: bool) {
        let Some(r) = self.rules.get(usize::from(slot)) else {
            return;
        };
        match (allowed, enforce) {
            (true, _) => r.allowed.inc(),
            (false, true) => r.denied.inc(),
            (false, false) => r.shadow_denied.inc(),
        }
    }

    /// Records that the key hashing to `hash` ([`key_hash`]) was just seen as `s`. One slot
    /// per hash modulo [`SEEN_SLOTS`]: a colliding key overwrites it (then the older key
    /// reads as not seen on this core). Two plain stores, no allocation.
    pub fn record_seen(&self, hash: u64, s: Seen) {
        let slot = &self.seen[(hash % SEEN_SLOTS as u64) as usize];
        slot[0].set(hash);
        let rule = s.rule.map_or(0, |r| (r as u64 + 1).min(0xFF));
        slot[1].set(
            (u64::from(s.auth) << 56)
                | (rule << 48)
                | (u64::from(s.tier).min(0xFF) << 40)
                | (s.unix_ms & SEEN_MS_MASK),
        );
    }

    /// What [`record_seen`](Self::record_seen) last stored for `hash` on this core (its
    /// Unix ms: the low 40 bits).
    pub fn lookup_seen(&self, hash: u64) -> Option<Seen> {
        let slot = &self.seen[(hash % SEEN_SLOTS as u64) as usize];
        let v = slot[1].get();
        let rule = (v >> 48) as u8;
        (slot[0].get() == hash && v != 0).then_some(Seen {
            auth: (v >> 56) as u8,
            rule: rule.checked_sub(1).map(usize::from),
            tier: u16::from((v >> 40) as u8),
            unix_ms: v & SEEN_MS_MASK,
        })
    }
}

/// How a key was last seen (see [`CoreStats::record_seen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// The auth method (index into [`AUTH_NAMES`]).
    pub auth: u8,
    /// The tier (below 256: `MAX_TIERS` is smaller).
    pub tier: u16,
    /// The `[[rules]]` entry that decided its request, if one did (its slot, `Rule::slot`).
    pub rule: Option<usize>,
    pub unix_ms: u64,
}

/// Slots of [`CoreStats::record_seen`] per core.
pub const SEEN_SLOTS: usize = 4096;
const SEEN_MS_MASK: u64 = (1 << 40) - 1;

/// The hash [`CoreStats::record_seen`] is keyed by (FNV-1a: the data path and the admin
/// API compute it alike, no shared seed needed).
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Decision labels of [`CoreStats::request_duration`].
pub const DECISION_NAMES: [&str; DECISIONS] = [
    "admitted",
    "denied",
    "shadow_denied",
    "unlimited",
    "refused",
];
pub const DECISIONS: usize = 5;

/// Index in [`DECISION_NAMES`] of the access log's `limit` word ("-": refused).
pub fn decision_index(word: &str) -> usize {
    DECISION_NAMES.iter().position(|&n| n == word).unwrap_or(4)
}

/// Upper bounds of the latency buckets, in µs: 50 µs … 10 s (a loopback proxy hop is tens
/// of µs; an S3 PUT of a large object, seconds). Prometheus `le` labels are these in seconds.
pub const LATENCY_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// A latency histogram written by one core (per-bucket counts, not cumulative; the last
/// bucket is everything over 10 s) and merged by the control thread.
#[derive(Default, Debug)]
pub struct Histogram {
    buckets: [Counter; BUCKETS],
    sum_us: Counter,
}

impl Histogram {
    fn clear(&self) {
        self.buckets.iter().for_each(|b| b.set(0));
        self.sum_us.set(0);
    }

    #[inline]
    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].inc();
        self.sum_us.add(us);
    }

    /// Adds this histogram into `into` (the control thread's merge).
    pub fn merge_into(&self, into: &mut HistogramSnapshot) {
        for (t, b) in into.buckets.iter_mut().zip(&self.buckets) {
            *t += b.get();
        }
        into.sum_us += self.sum_us.get();
    }
}

/// Merged counts of [`Histogram`]s.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
    /// Cumulative counts for each bound of [`LATENCY_BOUNDS_US`], then `+Inf`.
    pub fn cumulative(&self) -> [u64; BUCKETS] {
        let mut acc = 0;
        self.buckets.map(|b| {
            acc += b;
            acc
        })
    }
}

/// Upstream node ids with their own [`NodeStats`] slot.
pub const NODE_SLOTS: usize = 256;

/// State codes of [`NodeStats::state`].
pub const NODE_STATE_NAMES: [&str; 5] = ["none", "up", "down", "ejected", "draining"];

/// One upstream node as one core sees it (slot = the node's stable id). The gauges are
/// this core's view; the probe fields are written by the node's probing core only.
#[derive(Default, Debug)]
pub struct NodeStats {
    /// Time from the last request byte sent to the first response byte.
    pub head_time: Histogram,
    /// Requests being relayed to the node now.
    pub in_flight: Counter,
    /// Idle pooled connections.
    pub pool_idle: Counter,
    /// Index into [`NODE_STATE_NAMES`] (0: no node with this id on this core).
    pub state: Counter,
    /// Last probe outcome (`proxy::upstream::Probe::code`: the status, or a `PROBE_*`
    /// code); 0 = none yet.
    pub probe: Counter,
    /// When that probe ended (Unix ms).
    pub probe_ms: Counter,
    pub checks_failed: Counter,
    /// Up/down changes decided by the active checks.
    pub transitions: Counter,
}

/// Probe outcome codes of [`NodeStats::probe`] past the HTTP statuses (1..=999).
pub const PROBE_REFUSED: u64 = 1001;
pub const PROBE_TIMEOUT: u64 = 1002;
pub const PROBE_TLS: u64 = 1003;
pub const PROBE_LOCAL: u64 = 1004;
pub const PROBE_NO_ANSWER: u64 = 1005;

/// MinIO's liveness path, the default `upstream.health.path` (`config::file::
/// DEFAULT_HEALTH_PATH`; config imports stats, so the test below keeps the two equal).
const MINIO_HEALTH_PATH: &str = "/minio/health/live";

/// A probe outcome (`code`: [`NodeStats::probe`]) in words: what `GET path` got, against
/// the healthy statuses (`healthy`, as ranges), with a hint when a store that is not MinIO
/// answers MinIO's path with 403/404. One text for the log, `/health` and `/stats`.
pub fn probe_reason(code: u64, path: &str, healthy: &str) -> String {
    let got = match code {
        0 => return "not probed yet".to_string(),
        PROBE_REFUSED => "connect refused".to_string(),
        PROBE_TIMEOUT => "connect timed out".to_string(),
        PROBE_TLS => "TLS handshake failed".to_string(),
        PROBE_LOCAL => "no local resources to connect (not the node's fault)".to_string(),
        PROBE_NO_ANSWER => "no valid response head in time".to_string(),
        s => format!("status {s}"),
    };
    let mut r = format!("GET {path}: {got} (healthy: {healthy})");
    if matches!(code, 403 | 404) && path == MINIO_HEALTH_PATH {
        r.push_str(
            "; not MinIO? set upstream.health.path for your store (Garage: path = \"/\" \
             with healthy_statuses = [\"200-499\"])",
        );
    }
    r
}

pub const AUTH_NAMES: [&str; 6] = ["v4", "v2", "v4_query", "v2_query", "custom", "anonymous"];

/// Upper bounds (µs) of the sync-latency histogram buckets (the last is +Inf).
pub const SYNC_LATENCY_BUCKETS_US: [u64; 10] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000,
];

/// The active-active sync thread's figures (`[cluster]`), written by that thread only
/// (once per tick), read by the control thread.
#[derive(Default, Debug)]
pub struct ClusterStats {
    /// 1 when `[cluster]` is on.
    pub enabled: Counter,
    /// What the cores count for the others: 1 synced, 2 local_share, 3 open, 4 closed.
    pub mode: Counter,
    /// Live instances at the last answer.
    pub alive: Counter,
    pub ticks: Counter,
    pub failures: Counter,
    /// Failed ticks in a row now.
    pub failing: Counter,
    pub latency_last_us: Counter,
    pub latency_max_us: Counter,
    pub latency_sum_us: Counter,
    /// Script calls per latency bucket (`SYNC_LATENCY_BUCKETS_US`, then +Inf).
    pub latency_buckets: [Counter; SYNC_LATENCY_BUCKETS_US.len() + 1],
    /// Keys and deltas in the last tick's call(s), and deltas pushed in total.
    pub batch_keys: Counter,
    pub batch_deltas: Counter,
    pub deltas_sent: Counter,
    /// Deltas waiting for the store, dropped (too many waiting), keys synced.
    pub pending: Counter,
    pub dropped: Counter,
    pub tracked: Counter,
    /// Views and modes the cores' rings had no room for (sent again next tick).
    pub undelivered: Counter,
}

impl ClusterStats {
    /// Records one script call of `us` microseconds.
    pub fn latency(&self, us: u64) {
        self.latency_last_us.set(us);
        self.latency_sum_us.add(us);
        if us > self.latency_max_us.get() {
            self.latency_max_us.set(us);
        }
        let b = SYNC_LATENCY_BUCKETS_US
            .iter()
            .position(|&le| us <= le)
            .unwrap_or(SYNC_LATENCY_BUCKETS_US.len());
        self.latency_buckets[b].inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forgetting a number zeroes its decisions and durations, nothing else.
    #[test]
    fn forgetting_a_number_zeroes_only_its_counts() {
        let s = CoreStats::default();
        for i in 0..2 {
            s.tiers[i][0].admitted.add(10 + i as u64);
            s.request_duration[i][0].record(Duration::from_millis(1));
            s.rules[i].admitted.add(7);
        }
        s.rules[0].in_flight.add(1);
        s.forget_tier(1);
        s.forget_rule(0);
        let count = |t: usize| {
            let mut h = HistogramSnapshot::default();
            s.request_duration[t][0].merge_into(&mut h);
            h.count()
        };
        assert_eq!(
            (s.tiers[0][0].admitted.get(), s.tiers[1][0].admitted.get()),
            (10, 0)
        );
        assert_eq!((count(0), count(1)), (1, 0));
        assert_eq!(
            (s.rules[0].admitted.get(), s.rules[1].admitted.get()),
            (0, 7)
        );
        assert_eq!(s.rules[0].in_flight.get(), 1, "its requests still release");
        s.forget_tier(crate::stats::MAX_TIERS + 5); // out of range: nothing
    }

    #[test]
    fn histogram_buckets_are_upper_bounds_and_merge() {
        let h = Histogram::default();
        h.record(Duration::from_micros(50)); // on the bound: le="0.00005"
        h.record(Duration::from_micros(51));
        h.record(Duration::from_secs(11)); // past 10 s: +Inf only
        let mut m = HistogramSnapshot::default();
        h.merge_into(&mut m);
        h.merge_into(&mut m);
        assert_eq!(m.buckets[0], 2);
        assert_eq!(m.buckets[1], 2);
        assert_eq!(m.buckets[BUCKETS - 1], 2);
        assert_eq!(m.count(), 6);
        let c = m.cumulative();
        assert_eq!((c[0], c[1], c[BUCKETS - 2], c[BUCKETS - 1]), (2, 4, 4, 6));
        assert_eq!(m.sum_us, 2 * (50 + 51 + 11_000_000));
    }

    #[test]
    fn probe_reasons_name_the_status_path_range_and_the_minio_hint() {
        assert_eq!(MINIO_HEALTH_PATH, crate::config::file::DEFAULT_HEALTH_PATH);
        let r = probe_reason(403, MINIO_HEALTH_PATH, "200-399");
        assert!(
            r.starts_with("GET /minio/health/live: status 403 (healthy: 200-399)"),
            "{r}"
        );
        assert!(r.contains("set upstream.health.path"), "{r}");
        let r = probe_reason(500, MINIO_HEALTH_PATH, "200-399");
        assert!(!r.contains("upstream.health.path"), "{r}");
        let r = probe_reason(404, "/", "200-399");
        assert!(
            !r.contains("upstream.health.path"),
            "a path already set: {r}"
        );
        assert!(probe_reason(PROBE_REFUSED, "/", "200").contains("connect refused"));
    }

    #[test]
    fn seen_slots_keep_the_last_auth_and_reject_other_keys() {
        let s = CoreStats::default();
        let (a, b) = (key_hash(b"AKIAONE"), key_hash(b"AKIATWO"));
        assert_eq!(s.lookup_seen(a), None);
        let seen = |auth, rule, unix_ms| Seen {
            auth,
            tier: 2,
            rule,
            unix_ms,
        };
        s.record_seen(a, seen(1, None, 1234));
        s.record_seen(a, seen(3, Some(7), 1300));
        assert_eq!(s.lookup_seen(a), Some(seen(3, Some(7), 1300)));
        s.record_seen(a, seen(3, None, 1301));
        assert_eq!(s.lookup_seen(a).unwrap().rule, None);
        assert_eq!(
            s.lookup_seen(b),
            None,
            "another key's hash does not match the slot"
        );
        assert_eq!(decision_index("denied"), 1);
        assert_eq!(decision_index("-"), 4);
    }
}
