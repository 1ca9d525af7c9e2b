//! Per-core statistics counters.
//!
//! Owns: `CoreStats` (one per worker core, written only by that core) and the names of
//! its per-method and per-auth-method slots; the control thread reads and sums them
//! (`control::metrics`). The data path never contends on these: every field is updated
//! by exactly one thread with a relaxed load + store (a plain store on x86-64, no locked
//! instruction); the control thread only reads.
//! Must not touch: I/O, HTTP parsing.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

#[derive(Debug)]
#[repr(align(128))]
pub struct CoreStats {
    pub requests: [Counter; METHODS],
    /// Requests of a method that is not limited for their tier (passed, counted only).
    pub unlimited: [Counter; METHODS],
    pub tiers: Vec<[TierMethod; METHODS]>,
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
}

impl Default for CoreStats {
    fn default() -> Self {
        CoreStats {
            requests: Default::default(),
            unlimited: Default::default(),
            tiers: (0..MAX_TIERS).map(|_| Default::default()).collect(),
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
        }
    }
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
