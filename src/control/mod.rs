//! The control plane: its own threads, never a data core. Signals (SIGHUP reload,
//! SIGTERM/SIGINT graceful shutdown), config/keys/cert file polling, the admin HTTP
//! API and metrics aggregation.
//!
//! Owns: `ControlState` (current config, reload bookkeeping). Talks to cores only by
//! `ControlMsg` over the mesh. Must not touch: `proxy` (TLS configs are built by a
//! closure `main` hands in), the data path.
//! Reload = parse → validate (off the data path) → hand every core an immutable
//! snapshot. A failed reload keeps the old config, logs, and counts a metric.

// The control plane runs on its own threads, never on a data core: its locks (the current
// config, the last reload error) are off the data path.
#![allow(
    clippy::disallowed_types,
    reason = "control plane: its own threads, off the data path"
)]

pub mod admin;
pub mod metrics;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::Config;
use crate::config::validate::Overrides;
use crate::runtime::ControlHandle;
use crate::runtime::msg::ControlMsg;
use crate::stats::CoreStats;

/// Builds a TLS server config from a `Config` (provided by `main`, from `proxy::tls`).
pub type TlsBuilder =
    Box<dyn Fn(&Config) -> Result<Arc<rustls::ServerConfig>, String> + Send + Sync>;

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
    pub shutting_down: AtomicBool,
    pub started: std::time::Instant,
    /// The sync thread's figures when `[cluster]` is on.
    pub cluster: Option<Arc<crate::stats::ClusterStats>>,
}

impl ControlState {
    pub fn current(&self) -> Arc<Config> {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Re-reads the config and keys files; on success every core gets the new snapshot.
    pub fn reload(&self, why: &str) -> Result<u64, String> {
        let old = self.current();
        match crate::config::validate::load_with(&old.source, &self.overrides) {
            Ok(mut cfg) => {
                cfg.limits.version = old.limits.version + 1;
                // Listeners, workers and upstream pools need a restart; say so.
                if cfg.listen != old.listen || cfg.workers != old.workers {
                    log::warn!(
                        "reload: listener/worker changes need a restart; keeping the running ones"
                    );
                    cfg.listen = old.listen.clone();
                    cfg.workers = old.workers;
                }
                let addrs = |c: &crate::config::Config| -> Vec<std::net::SocketAddr> {
                    c.upstream.servers.iter().map(|s| s.addr).collect()
                };
                if addrs(&cfg) != addrs(&old) {
                    log::warn!(
                        "reload: upstream server changes need a restart; keeping {:?}",
                        addrs(&old)
                    );
                    cfg.upstream.servers = old.upstream.servers.clone();
                }
                let al = |c: &crate::config::Config| {
                    let a = &c.access_log;
                    (a.path.clone(), a.buffer_bytes, a.flush_interval, a.queue)
                };
                if al(&cfg) != al(&old) {
                    log::warn!(
                        "reload: access_log changes need a restart; keeping {:?}",
                        old.access_log.path
                    );
                    cfg.access_log = old.access_log.clone();
                }
                if cfg.cluster != old.cluster {
                    log::warn!("reload: [cluster] changes need a restart; keeping the running one");
                    cfg.cluster = old.cluster.clone();
                }
                let cfg = Arc::new(cfg);
                for core in 0..self.cores.cores() {
                    if self
                        .cores
                        .send(
                            core,
                            ControlMsg::Config(cfg.clone()),
                            Duration::from_secs(1),
                        )
                        .is_err()
                    {
                        log::error!("reload: core {core} did not take the new config");
                    }
                }
                if let (Some(b), Some(_)) = (&self.tls_builder, &cfg.tls) {
                    self.reload_tls_with(b, &cfg);
                }
                let v = cfg.limits.version;
                *self.config.lock().unwrap_or_else(|e| e.into_inner()) = cfg;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = None;
                log::info!("reload ({why}): config version {v} active");
                Ok(v)
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                let msg = e.to_string();
                log::error!(
                    "reload ({why}) failed, keeping config version {}: {msg}",
                    old.limits.version
                );
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
                Err(msg)
            }
        }
    }

    fn reload_tls_with(&self, b: &TlsBuilder, cfg: &Config) {
        match b(cfg) {
            Ok(sc) => {
                for core in 0..self.cores.cores() {
                    let _ =
                        self.cores
                            .send(core, ControlMsg::Tls(sc.clone()), Duration::from_secs(1));
                }
                log::info!("TLS certificates reloaded");
            }
            Err(e) => {
                self.reload_failures.fetch_add(1, Ordering::Relaxed);
                log::error!("TLS certificate reload failed, keeping the old ones: {e}");
                *self
                    .last_reload_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(e);
            }
        }
    }

    pub fn reload_tls(&self) {
        let cfg = self.current();
        if let (Some(b), Some(_)) = (&self.tls_builder, &cfg.tls) {
            self.reload_tls_with(b, &cfg);
        }
    }

    /// Asks every core to stop accepting and drain.
    pub fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::SeqCst) {
            return;
        }
        log::info!("shutting down: no new connections, finishing in-flight requests");
        for core in 0..self.cores.cores() {
            let _ = self
                .cores
                .send(core, ControlMsg::Shutdown, Duration::from_secs(1));
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

/// Starts the signal thread and the file-poll thread.
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
    let s = state;
    std::thread::Builder::new()
        .name("tollgate-reload".into())
        .spawn(move || {
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
        })?;
    Ok(())
}
