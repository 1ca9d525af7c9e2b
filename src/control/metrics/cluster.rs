//! The active-active figures in `/stats` and `/metrics`: the sync thread's mode, the live
//! members, ticks and failures, sync latency (last, max, mean, histogram), batch sizes,
//! deltas waiting / dropped, keys synced.
//!
//! Owns: the names and shape of those figures. Must not touch: the sync thread (it reads
//! its `ClusterStats` only).

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::family;
use crate::control::ControlState;
use crate::limit::cluster::Mode;
use crate::stats::{ClusterStats, SYNC_LATENCY_BUCKETS_US};

/// `/stats`'s `cluster` object (`{"enabled": false}` without `[cluster]`).
pub fn json(st: &ControlState) -> Value {
    let (Some(c), Some(cfg)) = (&st.cluster, st.current().cluster.clone()) else {
        return json!({"enabled": false});
    };
    let ticks = c.ticks.get().max(1);
    json!({
        "enabled": true,
        "instance_id": cfg.instance_id,
        "redis": cfg.redacted_url(),
        "sync_interval_ms": cfg.sync_interval.as_millis() as u64,
        "mode": Mode::name_of(c.mode.get()),
        "instances_alive": c.alive.get(),
        "ticks": c.ticks.get(),
        "failures": c.failures.get(),
        "failing_ticks": c.failing.get(),
        "sync_latency_us": {
            "last": c.latency_last_us.get(),
            "max": c.latency_max_us.get(),
            "mean": c.latency_sum_us.get() / ticks,
        },
        "batch": {"keys": c.batch_keys.get(), "deltas": c.batch_deltas.get()},
        "deltas_sent": c.deltas_sent.get(),
        "deltas_pending": c.pending.get(),
        "deltas_dropped": c.dropped.get(),
        "keys_synced": c.tracked.get(),
        "undelivered": c.undelivered.get(),
    })
}

/// One scalar family: name, type, help, and how to read it.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&ClusterStats) -> u64,
);

/// The scalar families, in exposition order.
const GAUGES: [Family; 9] = [
    (
        "tollgate_cluster_mode",
        "gauge",
        "What is counted for the other instances: 1 synced, 2 local_share, 3 open, 4 closed.",
        |c| c.mode.get(),
    ),
    (
        "tollgate_cluster_instances_alive",
        "gauge",
        "Live instances at the last answer of the store.",
        |c| c.alive.get(),
    ),
    (
        "tollgate_cluster_ticks_total",
        "counter",
        "Sync ticks.",
        |c| c.ticks.get(),
    ),
    (
        "tollgate_cluster_failures_total",
        "counter",
        "Sync ticks the store did not answer.",
        |c| c.failures.get(),
    ),
    (
        "tollgate_cluster_batch_keys",
        "gauge",
        "Keys in the last tick's script call(s).",
        |c| c.batch_keys.get(),
    ),
    (
        "tollgate_cluster_batch_deltas",
        "gauge",
        "Deltas in the last tick's script call(s).",
        |c| c.batch_deltas.get(),
    ),
    (
        "tollgate_cluster_deltas_pending",
        "gauge",
        "Deltas waiting for the store.",
        |c| c.pending.get(),
    ),
    (
        "tollgate_cluster_deltas_dropped_total",
        "counter",
        "Deltas dropped because too many were waiting.",
        |c| c.dropped.get(),
    ),
    (
        "tollgate_cluster_keys_synced",
        "gauge",
        "Keys synced every tick.",
        |c| c.tracked.get(),
    ),
];

/// The `tollgate_cluster_*` families (none without `[cluster]`).
pub fn prometheus(o: &mut String, st: &ControlState) {
    let Some(c) = &st.cluster else {
        return;
    };
    for (name, kind, help, get) in GAUGES {
        family(o, name, kind, help);
        let _ = writeln!(o, "{name} {}", get(c));
    }
    let name = "tollgate_cluster_sync_seconds";
    family(o, name, "histogram", "Duration of the sync script calls.");
    let mut cum = 0;
    for (i, le) in SYNC_LATENCY_BUCKETS_US.iter().enumerate() {
        cum += c.latency_buckets[i].get();
        let _ = writeln!(o, "{name}_bucket{{le=\"{}\"}} {cum}", *le as f64 / 1e6);
    }
    cum += c.latency_buckets[SYNC_LATENCY_BUCKETS_US.len()].get();
    let _ = writeln!(o, "{name}_bucket{{le=\"+Inf\"}} {cum}");
    let _ = writeln!(o, "{name}_sum {}", c.latency_sum_us.get() as f64 / 1e6);
    let _ = writeln!(o, "{name}_count {cum}");
}
