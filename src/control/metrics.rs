//! Aggregation of the per-core counters into JSON (`/stats`) and the Prometheus text format
//! (`/metrics`): plain sums from one table of families ([`SCALARS`]), per-node families
//! ([`NODE_FAMILIES`]), and the histograms (per-core, merged here); the active-active figures in `cluster`.
//!
//! Owns: rendering. Reads `CoreStats` (single-writer counters) — never writes them.

mod cluster;

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use serde_json::{Value, json};

use crate::stats::{
    AUTH_NAMES, CoreStats, DECISION_NAMES, HistogramSnapshot, LATENCY_BOUNDS_US, MAX_TIERS,
    METHOD_NAMES, METHODS, NODE_SLOTS, NODE_STATE_NAMES, NodeStats, TierMethod,
};

use super::ControlState;

fn sum(stats: &[std::sync::Arc<CoreStats>], f: impl Fn(&CoreStats) -> u64) -> u64 {
    stats.iter().map(|s| f(s)).sum()
}

/// One per-tier counter of tier number `ti` (stats hold `stats::MAX_TIERS` numbers, as
/// many as a config may use).
fn tier_stat(c: &CoreStats, ti: usize, mi: usize, f: impl Fn(&TierMethod) -> u64) -> u64 {
    c.tiers.get(ti).and_then(|t| t.get(mi)).map_or(0, f)
}

/// The counters of the rule numbered `i` (`Rule::slot`) summed over the cores: admitted,
/// denied, shadow_denied, allowed, in flight (requests of this instance now counted in
/// flight under it).
fn rule_counts(s: &[std::sync::Arc<CoreStats>], i: usize) -> [u64; 5] {
    let get = |f: fn(&crate::stats::RuleCounters) -> u64| sum(s, |c| c.rules.get(i).map_or(0, f));
    [
        get(|r| r.admitted.get()),
        get(|r| r.denied.get()),
        get(|r| r.shadow_denied.get()),
        get(|r| r.allowed.get()),
        get(|r| r.in_flight.get()),
    ]
}

/// `/stats` `rules`: each rule in order with its counters.
fn rules_json(cfg: &crate::config::Config, s: &[std::sync::Arc<CoreStats>]) -> Value {
    let list: Vec<Value> = cfg
        .rules
        .rules
        .iter()
        .map(|r| {
            let [a, d, sd, al, inf] = rule_counts(s, usize::from(r.slot));
            json!({"name": r.name, "action": r.action.word(), "subject": r.subject.as_str(),
                   "admitted": a, "denied": d, "shadow_denied": sd, "allowed": al,
                   "in_flight": inf})
        })
        .collect();
    Value::Array(list)
}

/// `tollgate_rule_decisions_total` by rule and outcome, `tollgate_rule_in_flight` by rule.
fn rule_series(o: &mut String, st: &ControlState) {
    let cfg = st.current();
    if cfg.rules.is_empty() {
        return;
    }
    family(
        o,
        "tollgate_rule_decisions_total",
        "counter",
        "Decisions of each [[rules]] entry: admitted (charged), denied, shadow_denied, allowed.",
    );
    for r in &cfg.rules.rules {
        let c = rule_counts(&st.stats, usize::from(r.slot));
        for (label, v) in ["admitted", "denied", "shadow_denied", "allowed"]
            .iter()
            .zip(c)
        {
            let _ = writeln!(
                o,
                "tollgate_rule_decisions_total{{rule=\"{}\",decision=\"{label}\"}} {v}",
                esc(&r.name)
            );
        }
    }
    family(
        o,
        "tollgate_rule_in_flight",
        "gauge",
        "Requests of this instance counted in flight under each rule.",
    );
    for r in &cfg.rules.rules {
        let v = rule_counts(&st.stats, usize::from(r.slot))[4];
        let _ = writeln!(
            o,
            "tollgate_rule_in_flight{{rule=\"{}\"}} {v}",
            esc(&r.name)
        );
    }
}

pub fn stats_json(st: &ControlState) -> Value {
    let cfg = st.current();
    let s = &st.stats;
    let mut tiers = serde_json::Map::new();
    for (ti, t) in cfg.limits.live_tiers() {
        let mut methods = serde_json::Map::new();
        for (mi, name) in METHOD_NAMES.iter().enumerate() {
            let a = sum(s, |c| tier_stat(c, ti, mi, |x| x.admitted.get()));
            let d = sum(s, |c| tier_stat(c, ti, mi, |x| x.denied.get()));
            let sd = sum(s, |c| tier_stat(c, ti, mi, |x| x.shadow_denied.get()));
            if a + d + sd > 0 {
                methods.insert(
                    name.to_string(),
                    json!({"admitted": a, "denied": d, "shadow_denied": sd}),
                );
            }
        }
        tiers.insert(
            t.name.clone(),
            json!({
                "per_minute": t.sustained.limit, "sustained_window_ms": t.sustained.length_ms,
                "per_second": t.burst.limit, "burst_window_ms": t.burst.length_ms,
                "enforce": cfg.limits.enforce && t.enforce,
                "methods": methods,
            }),
        );
    }
    let requests: serde_json::Map<String, Value> = METHOD_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), json!(sum(s, |c| c.requests[i].get()))))
        .collect();
    let auth: serde_json::Map<String, Value> = AUTH_NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), json!(sum(s, |c| c.auth_methods[i].get()))))
        .collect();
    let cores: Vec<Value> = s
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"core": i, "connections_active": c.connections_active.get(),
                   "table_entries": c.table_entries.get(),
                   "local_checks": c.local_checks.get(), "remote_checks": c.remote_checks.get(),
                   "cross_core_sent": c.cross_core_sent.get(), "cross_core_batches": c.cross_core_batches.get(),
                   "config_version": c.config_version.get()})
        })
        .collect();
    json!({
        "uptime_s": st.started.elapsed().as_secs(),
        "config_version": cfg.limits.version,
        "reloads": st.reloads.load(Ordering::Relaxed),
        "reload_failures": st.reload_failures.load(Ordering::Relaxed),
        "last_reload_error": *st.last_reload_error.lock().unwrap_or_else(|e| e.into_inner()),
        "workers": s.len(),
        "requests": requests,
        "unlimited_requests": sum(s, |c| c.unlimited.iter().map(|x| x.get()).sum()),
        "auth_methods": auth,
        "malformed_keys": sum(s, |c| c.malformed_keys.get()),
        "tiers": tiers,
        "rules": rules_json(&cfg, s),
        "responses": {
            "1xx": sum(s, |c| c.responses[1].get()), "2xx": sum(s, |c| c.responses[2].get()),
            "3xx": sum(s, |c| c.responses[3].get()), "4xx": sum(s, |c| c.responses[4].get()),
            "5xx": sum(s, |c| c.responses[5].get()),
        },
        "upstream": {
            "errors_502": sum(s, |c| c.upstream_errors_502.get()),
            "errors_503": sum(s, |c| c.upstream_errors_503.get()),
            "errors_504": sum(s, |c| c.upstream_errors_504.get()),
            "retries": sum(s, |c| c.upstream_retries.get()),
            "early_responses": sum(s, |c| c.upstream_early_responses.get()),
            "connects": sum(s, |c| c.upstream_connects.get()),
            "local_errors": sum(s, |c| c.upstream_local_errors.get()),
            "pool_discarded": sum(s, |c| c.upstream_pool_discarded.get()),
        },
        "connections": {
            "accepted": sum(s, |c| c.connections_accepted.get()),
            "active": sum(s, |c| c.connections_active.get()),
            "refused": sum(s, |c| c.connections_refused.get()),
            "tls_handshakes": sum(s, |c| c.tls_handshakes.get()),
            "tls_handshake_errors": sum(s, |c| c.tls_handshake_errors.get()),
        },
        "bad_requests": sum(s, |c| c.client_errors_400.get()),
        "auth_failures": sum(s, |c| c.auth_failures.get()),
        "penalty_denials": sum(s, |c| c.penalty_denials.get()),
        "signature_failures": sum(s, |c| c.signature_failures.get()),
        "access_log": {
            "enabled": cfg.access_log.path.is_some(),
            "lines": sum(s, |c| c.access_log_lines.get()),
            "dropped_lines": sum(s, |c| c.access_log_dropped.get()),
        },
        "bytes": {"from_client": sum(s, |c| c.bytes_from_client.get()), "to_client": sum(s, |c| c.bytes_to_client.get())},
        "table": {
            "entries": sum(s, |c| c.table_entries.get()),
            "cap_per_core": cfg.limits.table_cap,
            "evictions": sum(s, |c| c.table_evictions.get()),
            "forced_evictions": sum(s, |c| c.table_forced_evictions.get()),
            "refused": sum(s, |c| c.table_refused.get()),
            "expired": sum(s, |c| c.table_expired.get()),
        },
        "cross_core": {
            "local_checks": sum(s, |c| c.local_checks.get()),
            "remote_checks": sum(s, |c| c.remote_checks.get()),
            "messages_sent": sum(s, |c| c.cross_core_sent.get()),
            "messages_received": sum(s, |c| c.cross_core_received.get()),
            "batches": sum(s, |c| c.cross_core_batches.get()),
        },
        "cluster": cluster::json(st),
        "cores": cores,
        "upstream_nodes": super::health::nodes_json(st),
    })
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A family whose value is the sum of one counter over the cores: (name, type, help,
/// label pairs, counter). One table, so adding a counter is one line.
type Scalar = (
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, fn(&CoreStats) -> u64)],
);

/// Every family that is a plain sum of per-core counters (optionally split by one label,
/// given as `label="value"` pairs; an empty label means no label).
const SCALARS: &[Scalar] = &[
    (
        "tollgate_unlimited_requests_total",
        "counter",
        "Requests of methods not limited for their tier.",
        &[("", |c| c.unlimited.iter().map(|x| x.get()).sum())],
    ),
    (
        "tollgate_malformed_keys_total",
        "counter",
        "Requests whose key was malformed or too long (counted anonymous).",
        &[("", |c| c.malformed_keys.get())],
    ),
    (
        "tollgate_upstream_errors_total",
        "counter",
        "Errors generated for upstream failures, by status.",
        &[
            ("status=\"502\"", |c| c.upstream_errors_502.get()),
            ("status=\"503\"", |c| c.upstream_errors_503.get()),
            ("status=\"504\"", |c| c.upstream_errors_504.get()),
        ],
    ),
    (
        "tollgate_upstream_retries_total",
        "counter",
        "Requests retried on another upstream connection.",
        &[("", |c| c.upstream_retries.get())],
    ),
    (
        "tollgate_access_log_lines_total",
        "counter",
        "Access-log lines handed to the writer thread.",
        &[("", |c| c.access_log_lines.get())],
    ),
    (
        "tollgate_access_log_dropped_lines_total",
        "counter",
        "Access-log lines dropped because the writer was behind (the data path never waits).",
        &[("", |c| c.access_log_dropped.get())],
    ),
    (
        "tollgate_upstream_early_responses_total",
        "counter",
        "Upstream answers relayed while the request body was still being sent (both connections closed).",
        &[("", |c| c.upstream_early_responses.get())],
    ),
    (
        "tollgate_upstream_local_errors_total",
        "counter",
        "Upstream connects that failed for lack of a local resource (file descriptors, buffers); not counted against the node.",
        &[("", |c| c.upstream_local_errors.get())],
    ),
    (
        "tollgate_upstream_pool_discarded_total",
        "counter",
        "Pooled upstream connections closed instead of reused (expired, or readable or closed while idle).",
        &[("", |c| c.upstream_pool_discarded.get())],
    ),
    (
        "tollgate_connections_refused_total",
        "counter",
        "Client connections closed at once because the worker was at http.max_connections.",
        &[("", |c| c.connections_refused.get())],
    ),
    (
        "tollgate_connections_active",
        "gauge",
        "Open client connections.",
        &[("", |c| c.connections_active.get())],
    ),
    (
        "tollgate_connections_accepted_total",
        "counter",
        "Client connections accepted.",
        &[("", |c| c.connections_accepted.get())],
    ),
    (
        "tollgate_table_entries",
        "gauge",
        "Tracked rate-limit subjects, all cores.",
        &[("", |c| c.table_entries.get())],
    ),
    (
        "tollgate_table_evictions_total",
        "counter",
        "Idle entries evicted because a shard was full.",
        &[("", |c| c.table_evictions.get())],
    ),
    (
        "tollgate_table_forced_evictions_total",
        "counter",
        "Active entries evicted because a shard was full (counters lost).",
        &[("", |c| c.table_forced_evictions.get())],
    ),
    (
        "tollgate_table_refused_total",
        "counter",
        "New subjects denied untracked because a full shard held only entries that would deny.",
        &[("", |c| c.table_refused.get())],
    ),
    (
        "tollgate_auth_failures_total",
        "counter",
        "Upstream answers saying a request was not authenticated: its slot was given back and the client address charged a failure.",
        &[("", |c| c.auth_failures.get())],
    ),
    (
        "tollgate_penalty_denials_total",
        "counter",
        "Requests refused because their client address was over its authentication-failure window.",
        &[("", |c| c.penalty_denials.get())],
    ),
    (
        "tollgate_signature_failures_total",
        "counter",
        "Requests refused by [limits.verify] because their signature did not verify.",
        &[("", |c| c.signature_failures.get())],
    ),
    (
        "tollgate_cross_core_messages_total",
        "counter",
        "Messages sent between cores.",
        &[("", |c| c.cross_core_sent.get())],
    ),
    (
        "tollgate_client_bytes_received_total",
        "counter",
        "Bytes read from clients (heads and bodies).",
        &[("", |c| c.bytes_from_client.get())],
    ),
    (
        "tollgate_client_bytes_sent_total",
        "counter",
        "Bytes written to clients.",
        &[("", |c| c.bytes_to_client.get())],
    ),
    (
        "tollgate_tls_handshakes_total",
        "counter",
        "Client TLS handshakes completed.",
        &[("", |c| c.tls_handshakes.get())],
    ),
    (
        "tollgate_tls_handshake_failures_total",
        "counter",
        "Client TLS handshakes that failed or timed out.",
        &[("", |c| c.tls_handshake_errors.get())],
    ),
    (
        "tollgate_upstream_connects_total",
        "counter",
        "New upstream connections opened.",
        &[("", |c| c.upstream_connects.get())],
    ),
    (
        "tollgate_bad_requests_total",
        "counter",
        "Requests answered 400 before they reached the limiter.",
        &[("", |c| c.client_errors_400.get())],
    ),
    (
        "tollgate_limit_checks_total",
        "counter",
        "Limit checks by where they ran.",
        &[
            ("path=\"local\"", |c| c.local_checks.get()),
            ("path=\"remote\"", |c| c.remote_checks.get()),
        ],
    ),
];

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Prometheus text exposition format 0.0.4.
pub fn prometheus(st: &ControlState) -> String {
    let cfg = st.current();
    let s = &st.stats;
    let mut o = String::new();
    family(
        &mut o,
        "tollgate_requests_total",
        "counter",
        "Requests received, by method.",
    );
    for (i, m) in METHOD_NAMES.iter().enumerate() {
        let v = sum(s, |c| c.requests[i].get());
        let _ = writeln!(o, "tollgate_requests_total{{method=\"{m}\"}} {v}");
    }
    decisions(&mut o, st);
    rule_series(&mut o, st);
    family(
        &mut o,
        "tollgate_auth_method_total",
        "counter",
        "How the API key was found.",
    );
    for (i, a) in AUTH_NAMES.iter().enumerate() {
        let v = sum(s, |c| c.auth_methods[i].get());
        let _ = writeln!(o, "tollgate_auth_method_total{{auth_method=\"{a}\"}} {v}");
    }
    family(
        &mut o,
        "tollgate_responses_total",
        "counter",
        "Responses sent to clients, by status class.",
    );
    for (i, cl) in ["other", "1xx", "2xx", "3xx", "4xx", "5xx"]
        .iter()
        .enumerate()
    {
        let v = sum(s, |c| c.responses[i].get());
        let _ = writeln!(o, "tollgate_responses_total{{class=\"{cl}\"}} {v}");
    }
    for (name, kind, help, series) in SCALARS {
        family(&mut o, name, kind, help);
        for (label, get) in *series {
            let v = sum(s, get);
            if label.is_empty() {
                let _ = writeln!(o, "{name} {v}");
            } else {
                let _ = writeln!(o, "{name}{{{label}}} {v}");
            }
        }
    }
    family(
        &mut o,
        "tollgate_config_version",
        "gauge",
        "Active configuration version.",
    );
    let _ = writeln!(o, "tollgate_config_version {}", cfg.limits.version);
    family(
        &mut o,
        "tollgate_config_reload_failures_total",
        "counter",
        "Reloads rejected (old config kept).",
    );
    let failures = st.reload_failures.load(Ordering::Relaxed);
    let _ = writeln!(o, "tollgate_config_reload_failures_total {failures}");
    process(&mut o, st);
    nodes(&mut o, st);
    durations(&mut o, st);
    cluster::prometheus(&mut o, st);
    o
}

/// Build, reloads, workers, readiness.
fn process(o: &mut String, st: &ControlState) {
    let driver = match st.stats.iter().map(|c| c.driver.get()).max() {
        Some(1) => "io_uring",
        Some(2) => "epoll",
        _ => "unknown",
    };
    family(
        o,
        "tollgate_build_info",
        "gauge",
        "Build and runtime: version and I/O driver.",
    );
    let _ = writeln!(
        o,
        "tollgate_build_info{{version=\"{}\",driver=\"{driver}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    family(
        o,
        "tollgate_config_reloads_total",
        "counter",
        "Reloads applied.",
    );
    let _ = writeln!(
        o,
        "tollgate_config_reloads_total {}",
        st.reloads.load(Ordering::Relaxed)
    );
    family(
        o,
        "tollgate_config_cores_behind",
        "gauge",
        "Cores that have not taken the current config yet.",
    );
    let _ = writeln!(
        o,
        "tollgate_config_cores_behind {}",
        st.cores_behind().len()
    );
    family(
        o,
        "tollgate_uptime_seconds",
        "gauge",
        "Seconds since start.",
    );
    let _ = writeln!(
        o,
        "tollgate_uptime_seconds {}",
        st.started.elapsed().as_secs()
    );
    let (healthy, ready, _) = super::health::verdict(st);
    family(
        o,
        "tollgate_healthy",
        "gauge",
        "1 when /health answers 200 (workers alive, an upstream usable).",
    );
    let _ = writeln!(o, "tollgate_healthy {}", u8::from(healthy));
    family(
        o,
        "tollgate_ready",
        "gauge",
        "1 when /ready answers 200 (started, healthy, not draining).",
    );
    let _ = writeln!(o, "tollgate_ready {}", u8::from(ready));
    family(
        o,
        "tollgate_worker_heartbeats_total",
        "counter",
        "Housekeeping turns of each worker core (stops rising when a core is stuck).",
    );
    for (i, c) in st.stats.iter().enumerate() {
        let _ = writeln!(
            o,
            "tollgate_worker_heartbeats_total{{core=\"{i}\"}} {}",
            c.heartbeat.get()
        );
    }
}

/// A per-node family summed over the cores: (name, type, help, value).
type NodeFamily = (
    &'static str,
    &'static str,
    &'static str,
    fn(&NodeStats) -> u64,
);

/// Every per-node family that is a sum over the cores.
const NODE_FAMILIES: &[NodeFamily] = &[
    (
        "tollgate_upstream_in_flight",
        "gauge",
        "Requests being relayed to the node.",
        |n| n.in_flight.get(),
    ),
    (
        "tollgate_upstream_pool_idle_connections",
        "gauge",
        "Idle pooled connections to the node.",
        |n| n.pool_idle.get(),
    ),
    (
        "tollgate_upstream_checks_failed_total",
        "counter",
        "Active health checks of the node that failed.",
        |n| n.checks_failed.get(),
    ),
    (
        "tollgate_upstream_transitions_total",
        "counter",
        "Up/down changes of the node decided by health checks.",
        |n| n.transitions.get(),
    ),
];

/// Per-node families: the sums, state, last check, response-head times.
fn nodes(o: &mut String, st: &ControlState) {
    let cfg = st.current();
    let servers: Vec<(String, usize)> = cfg
        .upstream
        .servers
        .iter()
        .filter(|s| usize::from(s.id) < NODE_SLOTS)
        .map(|s| (esc(&s.name), usize::from(s.id)))
        .collect();
    let node_sum = |id: usize, f: fn(&NodeStats) -> u64| -> u64 {
        st.stats.iter().map(|c| f(&c.nodes[id])).sum()
    };
    for (name, kind, help, f) in NODE_FAMILIES {
        family(o, name, kind, help);
        for (node, id) in &servers {
            let _ = writeln!(o, "{name}{{node=\"{node}\"}} {}", node_sum(*id, *f));
        }
    }
    node_states(o, st);
    family(
        o,
        "tollgate_upstream_response_head_seconds",
        "histogram",
        "Time from the last request byte sent to the first response byte, by node.",
    );
    for (node, id) in &servers {
        let mut h = HistogramSnapshot::default();
        for c in &st.stats {
            c.nodes[*id].head_time.merge_into(&mut h);
        }
        histogram(
            o,
            "tollgate_upstream_response_head_seconds",
            &format!("node=\"{node}\""),
            &h,
        );
    }
}

/// Each node's usability, state and last check (what `/health` says of it).
fn node_states(o: &mut String, st: &ControlState) {
    let info: Vec<Value> = super::health::nodes_json(st);
    family(
        o,
        "tollgate_upstream_up",
        "gauge",
        "1 when some core can send the node requests.",
    );
    for n in &info {
        let _ = writeln!(
            o,
            "tollgate_upstream_up{{node=\"{}\"}} {}",
            esc(n["node"].as_str().unwrap_or("")),
            u8::from(n["usable"] == true)
        );
    }
    family(
        o,
        "tollgate_upstream_state",
        "gauge",
        "The node's state on its probing core (1 for the current state).",
    );
    for n in &info {
        for state in &NODE_STATE_NAMES[1..] {
            let v = u8::from(n["state"] == *state);
            let _ = writeln!(
                o,
                "tollgate_upstream_state{{node=\"{}\",state=\"{state}\"}} {v}",
                esc(n["node"].as_str().unwrap_or(""))
            );
        }
    }
    family(
        o,
        "tollgate_upstream_check_status",
        "gauge",
        "HTTP status of the node's last health check (0: no answer or none yet; /stats says why).",
    );
    for n in &info {
        let _ = writeln!(
            o,
            "tollgate_upstream_check_status{{node=\"{}\"}} {}",
            esc(n["node"].as_str().unwrap_or("")),
            n["last_check_status"].as_u64().unwrap_or(0)
        );
    }
}

/// `tollgate_request_duration_seconds` by tier and decision: every tier's admitted and
/// denied series, the others when they have counts.
fn durations(o: &mut String, st: &ControlState) {
    let cfg = st.current();
    let name = "tollgate_request_duration_seconds";
    family(
        o,
        name,
        "histogram",
        "Request duration (head read to response done) by tier and decision.",
    );
    let mut tiers: Vec<(String, usize)> = cfg
        .limits
        .live_tiers()
        .map(|(i, t)| (esc(&t.name), i))
        .collect();
    tiers.push(("none".into(), MAX_TIERS));
    for (tier, ti) in tiers {
        for (di, d) in DECISION_NAMES.iter().enumerate() {
            let mut h = HistogramSnapshot::default();
            for c in &st.stats {
                c.request_duration[ti][di].merge_into(&mut h);
            }
            if h.count() > 0 || (ti < MAX_TIERS && di < 2) {
                histogram(o, name, &format!("tier=\"{tier}\",decision=\"{d}\""), &h);
            }
        }
    }
}

/// One histogram's series (`labels` without braces).
fn histogram(o: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    let cum = h.cumulative();
    for (i, bound) in LATENCY_BOUNDS_US.iter().enumerate() {
        let le = *bound as f64 / 1e6;
        let _ = writeln!(o, "{name}_bucket{{{labels},le=\"{le}\"}} {}", cum[i]);
    }
    let _ = writeln!(o, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count());
    let _ = writeln!(o, "{name}_sum{{{labels}}} {}", h.sum_us as f64 / 1e6);
    let _ = writeln!(o, "{name}_count{{{labels}}} {}", h.count());
}

/// `tollgate_decisions_total` by tier, method and outcome (GET/PUT admitted and denied
/// always present, the others when non-zero).
fn decisions(o: &mut String, st: &ControlState) {
    let cfg = st.current();
    let s = &st.stats;
    family(
        o,
        "tollgate_decisions_total",
        "counter",
        "Rate-limit decisions by tier, method and outcome.",
    );
    for (ti, t) in cfg.limits.live_tiers() {
        for (mi, m) in METHOD_NAMES.iter().enumerate().take(METHODS) {
            for (label, f) in [("admitted", 0usize), ("denied", 1), ("shadow_denied", 2)] {
                let v = sum(s, |c| {
                    tier_stat(c, ti, mi, |x| {
                        [x.admitted.get(), x.denied.get(), x.shadow_denied.get()][f]
                    })
                });
                if v > 0 || (mi < 2 && f < 2) {
                    let tier = esc(&t.name);
                    let _ = writeln!(
                        o,
                        "tollgate_decisions_total{{tier=\"{tier}\",method=\"{m}\",decision=\"{label}\"}} {v}"
                    );
                }
            }
        }
    }
}
