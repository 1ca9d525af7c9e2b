//! Glue between a validated scenario and the engine: builds each key's work (request builder,
//! schedule, limited methods), runs the engine, computes the expectation and the accuracy check,
//! assembles the [`Report`] and evaluates the scenario's asserts on it. A run's sockets are the
//! engine's; [`prefill`] opens its own single connection (sequential PUTs through
//! [`crate::client::Conn`]) to create the objects a scenario reads.

use crate::asserts;
use crate::client::TlsSetup;
use crate::engine::{self, EngineConfig, KeyWork, ProgressSnapshot, ReqSource};
pub use crate::expect::KeyExpect;
use crate::expect::{Accuracy, accuracy, simulate};
use crate::plan::{KeyPlan, LIMITED_METHODS, Mode, Op, Pick, mix_seed};
use crate::report::Report;
use crate::request::{AuthStyle, RequestBuilder, Target};
use crate::scenario::Scenario;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Target(#[from] crate::request::TargetError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
}

pub fn key_seed(sc: &Scenario, i: usize) -> u64 {
    mix_seed(&[sc.seed, i as u64])
}

/// The exact plan the engine follows for key `i`.
pub fn key_plan(sc: &Scenario, i: usize) -> KeyPlan {
    let g = &sc.groups[sc.keys[i].group];
    KeyPlan::new(
        Arc::new(g.profile.clone()),
        g.arrival,
        Arc::new(g.mix.clone()),
        key_seed(sc, i),
    )
}

/// Which of [`LIMITED_METHODS`] key `i`'s tier counts (none when it has no window).
fn limited_methods(sc: &Scenario, i: usize) -> [bool; LIMITED_METHODS.len()] {
    let mut l = [false; LIMITED_METHODS.len()];
    if let Some(t) = sc.limiter_tier(&sc.keys[i])
        && !t.windows.is_empty()
    {
        for m in t.methods.iter().filter_map(|op| op.method_index()) {
            l[m] = true;
        }
    }
    l
}

/// Replays every identity's intended schedule through the exact sliding-window rule.
pub fn expectation(sc: &Scenario) -> Vec<KeyExpect> {
    let warm_ns = sc.warmup.as_nanos() as u64;
    let mut out = vec![KeyExpect::default(); sc.keys.len()];
    let by_identity = sc.keys_by_identity();
    for keys in by_identity.values() {
        let windows = sc
            .limiter_tier(&sc.keys[keys[0]])
            .map(|t| t.windows.clone())
            .unwrap_or_default();
        // (time, key, limited)
        let mut reqs: Vec<(u64, usize, bool)> = Vec::new();
        for &i in keys {
            let lim = limited_methods(sc, i);
            for p in key_plan(sc, i) {
                reqs.push((p.at_ns, i, p.op.method_index().is_some_and(|m| lim[m])));
            }
        }
        reqs.sort_unstable();
        let limited_times: Vec<u64> = reqs.iter().filter(|r| r.2).map(|r| r.0).collect();
        let adm = simulate(&limited_times, &windows);
        let mut li = 0;
        for &(t, i, limited) in &reqs {
            let ok = if limited {
                li += 1;
                adm[li - 1]
            } else {
                true
            };
            if t >= warm_ns {
                out[i].offered += 1;
                if ok {
                    out[i].admitted += 1;
                } else {
                    out[i].denied += 1;
                }
            }
        }
    }
    out
}

/// Accuracy check per limiter identity, from the measured admitted intervals.
pub fn accuracy_checks(sc: &Scenario, admitted: &[Vec<(u64, u64)>]) -> Vec<Accuracy> {
    let by_identity = sc.keys_by_identity();
    let mut out = Vec::new();
    for (id, keys) in by_identity {
        let Some(tier) = sc.limiter_tier(&sc.keys[keys[0]]) else {
            continue;
        };
        if tier.windows.is_empty() {
            continue;
        }
        let iv: Vec<(u64, u64)> = keys
            .iter()
            .flat_map(|&i| admitted[i].iter().copied())
            .collect();
        out.push(accuracy(&id, &iv, &tier.windows));
    }
    out
}

/// Client TLS for an HTTPS target (`server_name`, else the target's host), None for HTTP.
fn tls_setup(sc: &Scenario, target: &Target) -> Result<Option<TlsSetup>, RunError> {
    let name = sc.server_name.as_deref().unwrap_or(&target.host);
    target
        .tls
        .then(|| TlsSetup::new(sc.ca_file.as_deref(), sc.insecure, name))
        .transpose()
        .map_err(RunError::Tls)
}

/// Builds the engine configuration and per-key work for a scenario.
pub fn prepare(sc: &Scenario, progress: bool) -> Result<(EngineConfig, Vec<KeyWork>), RunError> {
    let target = Target::parse(&sc.target)?;
    let tls = tls_setup(sc, &target)?;
    let mut work = Vec::new();
    let buckets: Arc<[String]> = sc.buckets.clone().into();
    for (i, k) in sc.keys.iter().enumerate() {
        let g = &sc.groups[k.group];
        let builder = RequestBuilder::new(
            &k.id,
            &k.secret,
            g.auth,
            &target,
            &sc.buckets[0],
            &g.region,
            &g.object_prefix,
            g.mix.put_sizes.clone(),
            sc.presign_expires,
        )
        .with_buckets(buckets.clone(), g.addressing);
        work.push(KeyWork {
            idx: i,
            source: ReqSource::S3(Box::new(builder)),
            plan: (sc.mode == Mode::Open).then(|| key_plan(sc, i)),
            mix: Arc::new(g.mix.clone()),
            seed: key_seed(sc, i),
            limited: limited_methods(sc, i),
        });
    }
    let mut addrs = Vec::with_capacity(sc.targets.len());
    for t in &sc.targets {
        addrs.push(Target::parse(t)?.addr);
    }
    let cfg = EngineConfig {
        addrs,
        spread: sc.spread,
        target,
        tls,
        threads: sc.threads as usize,
        conns_per_thread: sc.connections_per_core as usize,
        pin_cores: sc.pin_cores.clone(),
        timeout: sc.timeout,
        mode: sc.mode,
        warmup: sc.warmup,
        total: sc.warmup + sc.duration,
        record_admitted: true,
        progress,
    };
    Ok((cfg, work))
}

/// Prints the live progress line to stderr.
pub fn print_progress(t: Duration, s: &ProgressSnapshot) {
    eprintln!(
        "[{:>5.0}s] sent {:>8} ({:>7}/s)  ok {:>7}/s  denied {:>6}/s  err {:>5}/s  max lat {:>9.3} ms",
        t.as_secs_f64(),
        s.sent,
        s.delta_sent,
        s.delta_ok,
        s.delta_denied,
        s.delta_errors,
        s.max_latency_us as f64 / 1000.0
    );
}

/// Runs a scenario end to end.
pub fn run_scenario(sc: &Scenario, progress: bool) -> Result<Report, RunError> {
    let (cfg, work) = prepare(sc, progress)?;
    let expected = (sc.mode == Mode::Open).then(|| expectation(sc));
    let out = engine::run(cfg, work, print_progress)?;
    let admitted: Vec<Vec<(u64, u64)>> = out.keys.iter().map(|k| k.admitted.clone()).collect();
    let acc = accuracy_checks(sc, &admitted);
    let mut report = Report::build(sc, &out, expected.as_deref(), acc);
    report.asserts = asserts::evaluate(&sc.asserts, &report);
    Ok(report)
}

/// Outcome of [`prefill`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefillResult {
    pub written: u64,
    pub failed: u64,
    /// First few failures: (object path, status or 0 for transport errors).
    pub failures: Vec<(String, u16)>,
}

/// Creates every object the scenario's groups read (PUT, one connection, sequential), signed as
/// the first key of each group, in every bucket of the group's mix. Point it at the store
/// itself, not at the proxy, so it spends no rate budget. A bucket and object prefix shared by
/// several groups is written once.
pub fn prefill(sc: &Scenario) -> Result<PrefillResult, RunError> {
    use crate::client::Conn;
    let target = Target::parse(&sc.target)?;
    let tls = tls_setup(sc, &target)?;
    let mut jobs: Vec<(RequestBuilder, u16, u32, String)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let buckets: Arc<[String]> = sc.buckets.clone().into();
    for ((gi, g), bucket) in sc
        .groups
        .iter()
        .enumerate()
        .flat_map(|(gi, g)| g.mix.buckets().into_iter().map(move |b| ((gi, g), b)))
    {
        if !seen.insert((bucket, g.object_prefix.clone())) {
            continue;
        }
        let Some(k) = sc.keys.iter().find(|k| k.group == gi) else {
            continue;
        };
        let auth = if g.auth == AuthStyle::Malformed {
            AuthStyle::None
        } else {
            g.auth
        };
        let b = RequestBuilder::new(
            &k.id,
            &k.secret,
            auth,
            &target,
            &sc.buckets[0],
            &g.region,
            &g.object_prefix,
            vec![g.mix.put_sizes[0]],
            sc.presign_expires,
        )
        .with_buckets(buckets.clone(), g.addressing);
        let label = format!("{}/{}", sc.buckets[bucket as usize], g.object_prefix);
        jobs.push((b, bucket, g.mix.objects, label));
    }
    let (mut rt, _) = engine::build_runtime(false)
        .map_err(|e| RunError::Engine(engine::EngineError::Runtime(e)))?;
    let timeout = sc.timeout;
    Ok(rt.block_on(async move {
        let mut res = PrefillResult::default();
        let mut conn: Option<Conn> = None;
        let mut buf = Vec::new();
        for (mut b, bucket, n, prefix) in jobs {
            for obj in 0..n {
                let unix = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                buf.clear();
                let put = Pick {
                    op: Op::Put,
                    bucket,
                    obj,
                    size_idx: 0,
                };
                let rest = b.build_pick(&put, unix, &mut buf);
                let one = async {
                    if conn.is_none() {
                        conn = Some(Conn::connect(target.addr, tls.as_ref()).await?);
                    }
                    let c = conn.as_mut().expect("connected");
                    let (r, back) = c.write(std::mem::take(&mut buf)).await;
                    buf = back;
                    r?;
                    let mut left = rest;
                    while left > 0 {
                        let k = left.min(crate::request::BODY_CHUNK as u64) as usize;
                        c.write_static(&crate::request::body_source()[..k]).await?;
                        left -= k as u64;
                    }
                    c.read_response(false).await
                };
                let status = match monoio::time::timeout(timeout, one).await {
                    Ok(Ok(r)) => {
                        if r.close {
                            conn = None;
                        }
                        r.status
                    }
                    _ => {
                        conn = None;
                        0
                    }
                };
                if (200..300).contains(&status) {
                    res.written += 1;
                } else {
                    res.failed += 1;
                    if res.failures.len() < 5 {
                        res.failures.push((format!("{prefix}{obj:06}"), status));
                    }
                }
            }
        }
        res
    }))
}
