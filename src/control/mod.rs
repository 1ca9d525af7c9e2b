//! The control plane: its own threads, never a data core. Signals (SIGHUP reload,
//! SIGTERM/SIGINT graceful shutdown), config/keys/cert file polling, the watchdog (worker
//! heartbeats, per-second history, snapshots a core has not taken yet), the admin HTTP API
//! and metrics aggregation, and `tollgate top` (a terminal client of the admin API).
//!
//! Owns: `ControlState` (current config, reload bookkeeping, what each core still has to
//! take). Talks to cores only by `ControlMsg` over the mesh. Must not touch: `proxy` (TLS
//! configs are built by a closure `main` hands in), the data path.
//! Reload (one at a time) = parse → validate (off the data path; tiers keep their
//! numbers) → keep what needs a restart, give node ids and rule slots (`reload`) → hand
//! every core an immutable snapshot, and answer once every core runs it (≤ 1 s); a core
//! whose ring is full gets it from the watchdog's retry. A failed reload keeps the old
//! config, logs, and counts.

// The control plane runs on its own threads, never on a data core: its locks (the current
// config, the last reload error) are off the data path.
#![allow(
    clippy::disallowed_types,
    reason = "control plane: its own threads, off the data path"
)]

pub mod admin;
pub mod health;
pub mod metrics;
pub mod page;
pub mod reload;
pub mod top;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::config::validate::Overrides;
use crate::runtime::ControlHandle;
use crate::runtime::msg::ControlMsg;
use crate::stats::CoreStats;

use reload::{NodeIds, ReloadReport};

/// Builds a TLS server config from a `Config` (provided by `main`, from `proxy::tls`).
pub type TlsBuilder =
    Box<dyn Fn(&Config) -> Result<Arc<rustls::ServerConfig>, String> + Send + Sync>;

/// How long one send to a core waits for room in its ring before the message is left to
/// the watchdog's retry.
const SEND_PATIENCE: Duration = Duration::from_millis(200);

/// How long a reload waits for every core to take its snapshot before it answers (they
/// take it within one turn of their event loop: microseconds unless a core is stuck).
const APPLY_PATIENCE: Duration = Duration::from_secs(1);

/// What one core has not taken yet (each newer snapshot replaces the one waiting).
#[derive(Default)]
struct Undelivered {
    config: Option<Arc<Config>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: bool,
}

pub struct ControlState {
    pub config: Mutex<Arc<Config>>,
    pub overrides: Overrides,
    pub cores: ControlHandle,
    pub stats: Vec<Arc<CoreStats>>,
    pub hasher: std::hash::RandomState,
    pub tls_builder: Option<TlsBuilder>,
    pub reloads: AtomicU64,
    pub reload_failures: AtomicU64,
    pub last_reload_error: Mutex<Option<String>>,
    /// What the last successful reload applied and refused.
    pub last_reload: Mutex<Option<ReloadReport>>,
    pub shutting_down: AtomicBool,
    pub started: std::time::Instant,
    node_ids: Mutex<NodeIds>,
    /// Held for a whole reload: the API, SIGHUP and the file poll reload one at a time,
    /// each from the config the one before it made.
    reloading: Mutex<()>,
    undelivered: Mutex<Vec<Undelivered>>,
    /// Heartbeats and the per-second history (`health`).
    pub watch: Mutex<health::Watch>,
    /// The sync thread's figures when `[cluster]` is on.
    pub cluster: Option<Arc<crate::stats::ClusterStats>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl ControlState {
    pub fn new(
        config: Arc<Config>,
        overrides: Overrides,
        cores: ControlHandle,
        stats: Vec<Arc<CoreStats>>,
        hasher: std::hash::RandomState,
        tls_builder: Option<TlsBuilder>,
    ) -> ControlState {
        let n = cores.cores();
        ControlState {
            node_ids: Mutex::new(NodeIds::new(&config)),
            reloading: Mutex::new(()),
            config: Mutex::new(config),
            overrides,
            cores,
            watch: Mutex::new(health::Watch::new(n)),
            stats,
            hasher,
            tls_builder,
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            last_reload_error: Mutex::new(None),
            last_reload: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            undelivered: Mutex::new((0..n).map(|_| Undelivered::default()).collect()),
            cluster: None,
        }
    }

    /// With the `[cluster]` sync thread's figures (shown in `/stats`, `/metrics`, `/health`).
    pub fn with_cluster(mut self, cluster: Option<Arc<crate::stats::ClusterStats>>) -> Self {
        self.cluster = cluster;
        self
    }

    pub fn current(&self) -> Arc<Config> {
        lock(&self.config).clone()
    }

    /// Re-reads the config and keys files; on success every core gets the new snapshot
    /// (what needs a restart is kept as it runs and named in the report), and the answer
    /// waits until every core runs it (at most [`APPLY_PATIENCE`]).
    pub fn reload(&self, why: &str) -> Result<ReloadReport, String> {
        self.reload_within(why, APPLY_PATIENCE)
    }

    /// [`reload`](Self::reload), waiting at most `patience` for the cores.
    fn reload_within(&self, why: &str, patience: Duration) -> Result<ReloadReport, String> {
        let _one = lock(&self.reloading);
        let old = self.current();
        let prepared = crate::config::validate::load_for_reload(&old.source, &self.overrides, &old)
            .map_err(|e| e.to_string())
            .and_then(|mut cfg| {
                let report = reload::prepare(&old, &mut cfg, &mut lock(&self.node_ids))?;
                Ok((cfg, report))
            });
        let (cfg, mut report) = match prepared {
            Ok(x) => x,
            Err(msg) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                log::error!(
                    "reload ({why}) failed, keeping config version {}: {msg}",
                    old.limits.version
                );
                *lock(&self.last_reload_error) = Some(msg.clone());
                return Err(msg);
            }
        };
        for f in &report.needs_restart {
            log::warn!(
                "reload: {} changed ({} → {}): needs a restart; keeping {}",
                f.field,
                f.running,
                f.file,
                f.running
            );
        }
        let cfg = Arc::new(cfg);
        for core in 0..self.cores.cores() {
            self.deliver(core, |u| u.config = Some(cfg.clone()));
        }
        if let (Some(b), Some(_)) = (&self.tls_builder, &cfg.tls) {
            self.reload_tls_with(b, &cfg);
        }
        *lock(&self.config) = cfg;
        report.cores_behind = self.wait_for_cores(patience);
        if !report.cores_behind.is_empty() {
            log::warn!(
                "reload ({why}): cores {:?} had not taken config version {} after {:?}; \
                 they keep the old one until they do",
                report.cores_behind,
                report.version,
                patience
            );
        }
        self.reloads.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_reload_error) = None;
        *lock(&self.last_reload) = Some(report.clone());
        log::info!(
            "reload ({why}): config version {} active; applied {:?}",
            report.version,
            report.applied
        );
        Ok(report)
    }

    /// Marks something for `core` (`mark`) and tries to send all it has not taken yet.
    fn deliver(&self, core: usize, mark: impl FnOnce(&mut Undelivered)) {
        let mut all = lock(&self.undelivered);
        mark(&mut all[core]);
        let u = &mut all[core];
        if let Some(c) = u.config.take() {
            if let Err(ControlMsg::Config(c)) =
                self.cores.send(core, ControlMsg::Config(c), SEND_PATIENCE)
            {
                log::warn!(
                    "core {core} did not take config v{} yet: retrying",
                    c.limits.version
                );
                u.config = Some(c);
            }
        }
        if let Some(t) = u.tls.take() {
            if let Err(ControlMsg::Tls(t)) =
                self.cores.send(core, ControlMsg::Tls(t), SEND_PATIENCE)
            {
                u.tls = Some(t);
            }
        }
        if u.shutdown && u.config.is_none() {
            u.shutdown = self
                .cores
                .send(core, ControlMsg::Shutdown, SEND_PATIENCE)
                .is_err();
        }
    }

    /// Sends again what some core has not taken yet (the watchdog, every 250 ms).
    pub fn retry_undelivered(&self) {
        for core in 0..self.cores.cores() {
            let waiting = {
                let u = &lock(&self.undelivered)[core];
                u.config.is_some() || u.tls.is_some() || u.shutdown
            };
            if waiting {
                self.deliver(core, |_| {});
            }
        }
    }

    /// Waits until every core runs the current config, at most `patience`: so that what a
    /// reload reports as applied is in force on every core when it answers (a rule added
    /// by the reload is counted by all of them). Returns the cores still behind.
    fn wait_for_cores(&self, patience: Duration) -> Vec<usize> {
        let until = Instant::now() + patience;
        loop {
            let behind = self.cores_behind();
            if behind.is_empty() || Instant::now() >= until {
                return behind;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Cores that have not taken the current config yet.
    pub fn cores_behind(&self) -> Vec<usize> {
        let v = self.current().limits.version;
        (0..self.stats.len())
            .filter(|&c| self.stats[c].config_version.get() < v)
            .collect()
    }

    fn reload_tls_with(&self, b: &TlsBuilder, cfg: &Config) {
        match b(cfg) {
            Ok(sc) => {
                for core in 0..self.cores.cores() {
                    self.deliver(core, |u| u.tls = Some(sc.clone()));
                }
                log::info!("TLS certificates reloaded");
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                log::error!("TLS certificate reload failed, keeping the old ones: {e}");
                *lock(&self.last_reload_error) = Some(e);
            }
        }
    }

    pub fn reload_tls(&self) {
        let cfg = self.current();
        if let (Some(b), Some(_)) = (&self.tls_builder, &cfg.tls) {
            self.reload_tls_with(b, &cfg);
        }
    }

    /// `/ready` answers 503 from now on; after `shutdown_delay` every core stops accepting
    /// and drains (in-flight requests get `shutdown_grace`).
    pub fn shutdown(self: &Arc<Self>) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        let delay = self.current().shutdown_delay;
        log::info!(
            "shutting down: /ready answers 503; listeners close in {delay:?}, then in-flight \
             requests finish"
        );
        let s = self.clone();
        let stop = move || {
            std::thread::sleep(delay);
            log::info!("closing listeners, finishing in-flight requests");
            for core in 0..s.cores.cores() {
                s.deliver(core, |u| u.shutdown = true);
            }
        };
        if delay.is_zero() {
            stop();
        } else if let Err(e) = std::thread::Builder::new()
            .name("tollgate-drain".into())
            .spawn(stop)
        {
            log::error!("cannot wait out shutdown_delay ({e}): stopping now");
            for core in 0..self.cores.cores() {
                self.deliver(core, |u| u.shutdown = true);
            }
        }
    }
}

fn mtime(p: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn watched_files(cfg: &Config) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut conf = vec![cfg.source.clone()];
    if let Some(k) = &cfg.limits.keys_file {
        conf.push(k.clone());
    }
    if let Some(v) = &cfg.limits.verify {
        conf.push(v.secrets_file.clone());
    }
    let mut certs = Vec::new();
    if let Some(t) = &cfg.tls {
        for c in &t.certs {
            certs.push(c.cert_file.clone());
            certs.push(c.key_file.clone());
        }
    }
    (conf, certs)
}

/// Starts the signal thread, the file-poll thread and the watchdog.
pub fn start(state: Arc<ControlState>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])?;
    let s = state.clone();
    std::thread::Builder::new()
        .name("tollgate-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                match sig {
                    SIGHUP => {
                        let _ = s.reload("SIGHUP");
                        s.reload_tls();
                    }
                    SIGINT | SIGTERM => {
                        if s.shutting_down.load(Ordering::SeqCst) {
                            log::warn!("second signal: exiting now");
                            std::process::exit(1);
                        }
                        s.shutdown();
                    }
                    _ => {}
                }
            }
        })?;
    let s = state.clone();
    std::thread::Builder::new()
        .name("tollgate-reload".into())
        .spawn(move || poll_files(&s))?;
    std::thread::Builder::new()
        .name("tollgate-watchdog".into())
        .spawn(move || health::watchdog(&state))?;
    Ok(())
}

/// Reloads when the config, keys or secrets files change; reloads certificates when theirs do.
fn poll_files(s: &ControlState) {
    let cfg = s.current();
    let (mut conf, mut certs) = watched_files(&cfg);
    let mut conf_m: Vec<_> = conf.iter().map(mtime).collect();
    let mut cert_m: Vec<_> = certs.iter().map(mtime).collect();
    loop {
        let cfg = s.current();
        let poll = cfg.reload_poll_interval;
        let cert_poll = cfg
            .tls
            .as_ref()
            .map(|t| t.reload_interval)
            .unwrap_or_default();
        let step = [poll, cert_poll]
            .into_iter()
            .filter(|d| !d.is_zero())
            .min()
            .unwrap_or(Duration::from_secs(1));
        std::thread::sleep(step);
        if s.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        if !poll.is_zero() {
            let now: Vec<_> = conf.iter().map(mtime).collect();
            if now != conf_m {
                conf_m = now;
                if s.reload("file change").is_ok() {
                    (conf, certs) = watched_files(&s.current());
                    conf_m = conf.iter().map(mtime).collect();
                    cert_m = certs.iter().map(mtime).collect();
                }
            }
        }
        if !cert_poll.is_zero() {
            let now: Vec<_> = certs.iter().map(mtime).collect();
            if now != cert_m {
                cert_m = now;
                s.reload_tls();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core whose control ring is full when a snapshot is sent gets it later from the
    /// retry (it used to be given up after a second), and only the newest one.
    #[test]
    fn a_snapshot_a_core_did_not_take_is_sent_again() {
        let text = "[[upstream.servers]]\naddr = \"127.0.0.1:9001\"\n";
        let cfg = crate::config::validate::load_str(text, std::path::Path::new("t.toml")).unwrap();
        let (mut meshes, handle) = crate::runtime::mesh::build(2);
        let stats = (0..2).map(|_| Arc::new(CoreStats::default())).collect();
        let st = ControlState::new(
            Arc::new(cfg.clone()),
            Overrides::default(),
            handle.clone(),
            stats,
            std::hash::RandomState::new(),
            None,
        );
        while handle.send(1, ControlMsg::Shutdown, Duration::ZERO).is_ok() {}
        for v in [7, 8] {
            let mut c = cfg.clone();
            c.limits.version = v;
            let c = Arc::new(c);
            st.deliver(1, |u| u.config = Some(c));
        }
        let drained = std::iter::from_fn(|| meshes[1].pop_control()).count();
        assert_eq!(
            drained,
            crate::runtime::mesh::CONTROL_SLOTS,
            "only the filler got in"
        );
        st.retry_undelivered();
        match meshes[1].pop_control() {
            Some(ControlMsg::Config(c)) => assert_eq!(c.limits.version, 8, "the newest"),
            other => panic!("{other:?}"),
        }
        assert!(meshes[1].pop_control().is_none(), "sent once");
        st.retry_undelivered();
        assert!(meshes[1].pop_control().is_none(), "nothing left to retry");
    }

    /// A reload answers once every core runs the new config (what it reports as applied
    /// is in force everywhere), and names the cores that did not take it in time.
    #[test]
    fn a_reload_waits_for_the_cores_and_names_those_behind() {
        let dir = crate::config::testutil::TempDir::new("reload-wait");
        let path = dir.write(
            "t.toml",
            "[[upstream.servers]]\naddr = \"127.0.0.1:9001\"\n",
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let cfg = crate::config::validate::load_str(&text, &path).unwrap();
        let (_meshes, handle) = crate::runtime::mesh::build(2);
        let stats: Vec<Arc<CoreStats>> = (0..2).map(|_| Arc::new(CoreStats::default())).collect();
        let st = ControlState::new(
            Arc::new(cfg),
            Overrides::default(),
            handle,
            stats.clone(),
            std::hash::RandomState::new(),
            None,
        );
        // Core 0 already runs the next version (as if it took it at once); core 1 never.
        let next = st.current().limits.version + 1;
        stats[0].config_version.set(next);
        let t0 = Instant::now();
        let report = st.reload_within("test", Duration::from_millis(30)).unwrap();
        assert_eq!(report.version, next);
        assert!(
            t0.elapsed() >= Duration::from_millis(30),
            "waited for core 1"
        );
        assert_eq!(report.cores_behind, [1], "core 0 runs it, core 1 does not");
        assert_eq!(st.cores_behind(), [1]);
        // Both run the next one: the answer does not wait.
        stats.iter().for_each(|s| s.config_version.set(next + 1));
        let report = st.reload_within("test", Duration::from_secs(30)).unwrap();
        assert!(report.cores_behind.is_empty(), "{:?}", report.cores_behind);
        assert!(t0.elapsed() < Duration::from_secs(30));
    }
}
