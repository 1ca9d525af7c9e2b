//! Whether this instance can serve, as a load balancer asks it: every worker alive (its
//! heartbeat advances) and at least one upstream node usable (`/health`), plus started and
//! not draining (`/ready`); and the watchdog thread that samples the heartbeats, keeps a
//! per-second history of decisions per tier (the admin page's chart, `tollgate top`), and
//! re-sends snapshots a core has not taken.
//!
//! Owns: [`Watch`], [`watchdog`], [`verdict`]. Reads `CoreStats` only. Must not touch: the
//! data path.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::status_ranges;
use crate::stats::{METHODS, NODE_STATE_NAMES, probe_reason};

use super::{ControlState, lock};

/// A worker whose heartbeat has not moved for this long is stuck (it beats every 250 ms).
pub const STUCK_AFTER: Duration = Duration::from_secs(2);
/// Seconds of history kept for the chart.
pub const HISTORY_SECONDS: usize = 120;

/// Admitted and denied requests of each tier in one second.
#[derive(Debug, Clone, Default)]
pub struct Second {
    pub per_tier: Vec<(u64, u64)>,
}

/// What the watchdog has seen.
pub struct Watch {
    /// Per core: the last heartbeat value and when it last changed.
    beats: Vec<(u64, Instant)>,
    /// Oldest first; each entry is one second.
    pub history: VecDeque<Second>,
    totals: Vec<(u64, u64)>,
    last_sample: Option<Instant>,
}

impl Watch {
    pub fn new(cores: usize) -> Watch {
        Watch {
            beats: vec![(0, Instant::now()); cores],
            history: VecDeque::new(),
            totals: Vec::new(),
            last_sample: None,
        }
    }

    /// Notes heartbeat values read at `now`.
    pub fn beat(&mut self, values: &[u64], now: Instant) {
        for (b, &v) in self.beats.iter_mut().zip(values) {
            if b.0 != v {
                *b = (v, now);
            }
        }
    }

    /// Cores whose heartbeat has not moved for [`STUCK_AFTER`], with how long.
    pub fn stuck(&self, now: Instant) -> Vec<(usize, Duration)> {
        self.beats
            .iter()
            .enumerate()
            .map(|(c, b)| (c, now.duration_since(b.1)))
            .filter(|(_, d)| *d >= STUCK_AFTER)
            .collect()
    }

    /// Every core has beaten at least once (its tasks run).
    pub fn all_started(&self) -> bool {
        self.beats.iter().all(|b| b.0 > 0)
    }

    /// Adds one second of history from the running totals per tier.
    pub fn sample(&mut self, totals: Vec<(u64, u64)>) {
        let per_tier = totals
            .iter()
            .enumerate()
            .map(|(i, &(a, d))| {
                let (pa, pd) = self.totals.get(i).copied().unwrap_or((a, d));
                (a.saturating_sub(pa), d.saturating_sub(pd))
            })
            .collect();
        self.totals = totals;
        self.history.push_back(Second { per_tier });
        while self.history.len() > HISTORY_SECONDS {
            self.history.pop_front();
        }
    }
}

/// Admitted and denied totals of each configured tier, all cores and methods.
fn tier_totals(st: &ControlState) -> Vec<(u64, u64)> {
    let n = st.current().limits.tiers.len();
    (0..n.min(crate::stats::MAX_TIERS))
        .map(|t| {
            st.stats.iter().fold((0, 0), |acc, c| {
                (0..METHODS).fold(acc, |(a, d), m| {
                    let x = &c.tiers[t][m];
                    (a + x.admitted.get(), d + x.denied.get())
                })
            })
        })
        .collect()
}

/// The watchdog thread: heartbeats every 250 ms, history every second, retries.
pub fn watchdog(st: &ControlState) {
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = Instant::now();
        let beats: Vec<u64> = st.stats.iter().map(|c| c.heartbeat.get()).collect();
        let totals = tier_totals(st);
        {
            let mut w = lock(&st.watch);
            w.beat(&beats, now);
            if w.last_sample
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
            {
                w.last_sample = Some(now);
                w.sample(totals);
            }
        }
        st.retry_undelivered();
    }
}

/// One upstream node as the instance sees it, for `/health` and `/stats`.
pub fn nodes_json(st: &ControlState) -> Vec<Value> {
    let cfg = st.current();
    let h = &cfg.upstream.health;
    let cores = st.stats.len();
    cfg.upstream
        .servers
        .iter()
        .map(|s| {
            let id = usize::from(s.id);
            let states: Vec<u64> = st
                .stats
                .iter()
                .map(|c| c.nodes.get(id).map_or(1, |n| n.state.get()))
                .collect();
            let prober = st.stats[id % cores].nodes.get(id);
            let probe = prober.map_or(0, |n| n.probe.get());
            let usable = states.contains(&1);
            let state = states[id % cores];
            json!({
                "node": s.name, "id": s.id, "usable": usable,
                "state": NODE_STATE_NAMES[(state as usize).min(NODE_STATE_NAMES.len() - 1)],
                "last_check": if h.enabled {
                    json!(probe_reason(probe, &h.path, &status_ranges(&h.healthy_statuses)))
                } else {
                    json!("health checks off")
                },
                "last_check_status": (1..1000).contains(&probe).then_some(probe),
                "in_flight": st.stats.iter().filter_map(|c| c.nodes.get(id)).map(|n| n.in_flight.get()).sum::<u64>(),
                "pool_idle": st.stats.iter().filter_map(|c| c.nodes.get(id)).map(|n| n.pool_idle.get()).sum::<u64>(),
            })
        })
        .collect()
}

/// The `/health` (and `/ready`) verdict: (healthy, ready, the JSON document).
pub fn verdict(st: &ControlState) -> (bool, bool, Value) {
    let now = Instant::now();
    let (stuck, started) = {
        let w = lock(&st.watch);
        (w.stuck(now), w.all_started())
    };
    let nodes = nodes_json(st);
    let usable = nodes.iter().filter(|n| n["usable"] == true).count();
    let down: Vec<&Value> = nodes.iter().filter(|n| n["usable"] != true).collect();
    let draining = st.shutting_down.load(Ordering::SeqCst);
    // `[cluster]` with on_store_failure = "closed" and the store away: every limited
    // request is denied, so the balancer should send traffic elsewhere.
    let closed = st
        .cluster
        .as_ref()
        .is_some_and(|c| c.mode.get() == crate::limit::cluster::Mode::Closed.code());
    let healthy = stuck.is_empty() && usable > 0 && !draining && !closed;
    let ready = healthy && started;
    let mut reasons: Vec<String> = Vec::new();
    for (core, d) in &stuck {
        reasons.push(format!(
            "worker {core} stuck: no heartbeat for {} ms",
            d.as_millis()
        ));
    }
    if usable == 0 {
        reasons.push("no upstream node is usable".into());
    }
    for n in &down {
        reasons.push(format!(
            "upstream {} {}: {}",
            n["node"].as_str().unwrap_or("?"),
            n["state"].as_str().unwrap_or("?"),
            n["last_check"].as_str().unwrap_or("")
        ));
    }
    if draining {
        reasons.push("shutting down (draining)".into());
    }
    if closed {
        reasons.push("cluster store unreachable (on_store_failure = closed)".into());
    }
    if !started {
        reasons.push("starting: not every worker has run yet".into());
    }
    let doc = json!({
        "status": if healthy { "ok" } else { "unavailable" },
        "ready": ready,
        "draining": draining,
        "workers": {"total": st.stats.len(), "stuck": stuck.iter().map(|(c, d)| json!({"core": c, "no_heartbeat_ms": d.as_millis() as u64})).collect::<Vec<_>>()},
        "upstreams": {"usable": usable, "total": nodes.len(), "down": down},
        "reasons": reasons,
    });
    (healthy, ready, doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_core_whose_heartbeat_stops_is_stuck_after_two_seconds() {
        let t0 = Instant::now();
        let mut w = Watch::new(2);
        assert!(!w.all_started());
        w.beat(&[1, 1], t0);
        assert!(w.all_started());
        w.beat(&[2, 1], t0 + Duration::from_secs(1));
        assert!(w.stuck(t0 + Duration::from_millis(1500)).is_empty());
        w.beat(&[3, 1], t0 + Duration::from_secs(2));
        let s = w.stuck(t0 + Duration::from_millis(2100));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].0, 1, "core 1 stopped beating");
    }

    #[test]
    fn history_holds_per_second_deltas() {
        let mut w = Watch::new(1);
        w.sample(vec![(10, 1)]);
        w.sample(vec![(15, 4)]);
        assert_eq!(
            w.history[0].per_tier,
            [(0, 0)],
            "the first second has no base"
        );
        assert_eq!(w.history[1].per_tier, [(5, 3)]);
        for _ in 0..HISTORY_SECONDS + 5 {
            w.sample(vec![(15, 4)]);
        }
        assert_eq!(w.history.len(), HISTORY_SECONDS);
    }
}
