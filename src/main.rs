//! The `tollgate` command: `run`, `check`, `keys`. Wires config → runtime → proxy
//! and control; the only place that uses `anyhow`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use tollgate::config::Config;
use tollgate::config::validate::{Overrides, load_with, summary};
use tollgate::control::{self, ControlState};
use tollgate::proxy::{self, Shared, tls};
use tollgate::runtime;
use tollgate::stats::CoreStats;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "Per-API-key rate-limiting reverse proxy for S3-compatible stores"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Command-line overrides of the config file, shared by `run` and `check`.
#[derive(clap::Args)]
struct OverrideArgs {
    /// Plain HTTP listen address (repeatable; replaces the file's `listen`).
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// HTTPS listen address (repeatable; needs [tls] certificates in the file).
    #[arg(long)]
    tls_listen: Vec<SocketAddr>,
    /// Upstream HOST:PORT (repeatable; replaces the file's servers).
    #[arg(long)]
    upstream: Vec<String>,
    /// Worker cores.
    #[arg(long)]
    workers: Option<usize>,
    /// Admin listen address, or "off".
    #[arg(long)]
    admin: Option<String>,
}

impl From<OverrideArgs> for Overrides {
    fn from(a: OverrideArgs) -> Overrides {
        Overrides {
            listen: a.listen,
            tls_listen: a.tls_listen,
            upstream: a.upstream,
            workers: a.workers,
            admin: a.admin,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the proxy.
    Run {
        /// Main config file (TOML).
        #[arg(long, short, default_value = "config/tollgate.toml")]
        config: PathBuf,
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Validate a config (and its keys file) without starting; print a summary.
    Check {
        #[arg(long, short, default_value = "config/tollgate.toml")]
        config: PathBuf,
        /// The same overrides as `run`: the summary shows the configuration `run` would use.
        #[command(flatten)]
        overrides: OverrideArgs,
    },
    /// Which `[[rules]]` match a request and why, and what they decide (counters are not
    /// read): `tollgate explain CONFIG 'GET /bucket/key?list-type=2' -H 'Authorization: …'`.
    Explain {
        config: PathBuf,
        /// `METHOD TARGET`, e.g. 'GET /logs?list-type=2'.
        request: String,
        /// A request header, 'Name: value' (repeatable).
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The client address the request comes from.
        #[arg(long, default_value = "127.0.0.1")]
        from: std::net::IpAddr,
    },
    /// Live terminal view of a running tollgate's admin API (q quits).
    Top {
        /// The admin listener.
        #[arg(long, default_value = "127.0.0.1:8404")]
        admin: SocketAddr,
        /// The admin bearer token (default: $TOLLGATE_ADMIN_TOKEN).
        #[arg(long)]
        token: Option<String>,
        /// Time between redraws.
        #[arg(long, default_value = "1s", value_parser = humantime_secs)]
        interval: std::time::Duration,
        /// Print one frame and exit (no terminal needed).
        #[arg(long)]
        once: bool,
    },
    /// Manage the keys file named by the config (atomic writes, timestamped backups).
    Keys {
        #[arg(long, short, default_value = "config/tollgate.toml")]
        config: PathBuf,
        #[command(subcommand)]
        op: KeysOp,
    },
}

#[derive(Subcommand)]
enum KeysOp {
    /// List keys and their tiers.
    List,
    /// Add a key (error if it exists).
    Add { key: String, tier: String },
    /// Remove a key.
    Remove { key: String },
    /// Set (add or change) a key's tier.
    Set { key: String, tier: String },
    /// List backups, newest first.
    Backups,
    /// Restore the keys file from a backup.
    Restore { file: PathBuf },
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run { config, overrides } => run(config, overrides.into()),
        Cmd::Check { config, overrides } => match load_with(&config, &overrides.into()) {
            Ok(cfg) => {
                print!("{}", summary(&cfg));
                println!("{}: OK", config.display());
                Ok(())
            }
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(1);
            }
        },
        Cmd::Keys { config, op } => keys(config, op),
        Cmd::Explain {
            config,
            request,
            headers,
            from,
        } => explain(&config, &request, &headers, from),
        Cmd::Top {
            admin,
            token,
            interval,
            once,
        } => {
            let token = token.or_else(|| std::env::var("TOLLGATE_ADMIN_TOKEN").ok());
            control::top::run(&control::top::Target { admin, token }, interval, once)
                .map_err(|e| anyhow::anyhow!(e))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// "250ms", "1s", "2.5s" → a duration (for `top --interval`).
fn humantime_secs(s: &str) -> Result<std::time::Duration, String> {
    let (n, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    n.parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0 && v.is_finite())
        .map(|v| std::time::Duration::from_secs_f64(v * scale))
        .ok_or_else(|| format!("{s:?}: a duration such as 500ms or 2s"))
}

/// `tollgate explain`: loads the config, prints which rules match the request.
fn explain(config: &Path, request: &str, headers: &[String], from: std::net::IpAddr) -> Result<()> {
    let cfg = load_with(config, &Overrides::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut hs = Vec::with_capacity(headers.len());
    for h in headers {
        let (n, v) = h
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("header {h:?}: expected 'Name: value'"))?;
        hs.push((n.trim().to_string(), v.trim().to_string()));
    }
    let text = tollgate::config::explain::explain(&cfg, request, &hs, from)
        .map_err(|e| anyhow::anyhow!(e))?;
    print!("{text}");
    Ok(())
}

fn keys(config: PathBuf, op: KeysOp) -> Result<()> {
    use tollgate::config::keys as k;
    use tollgate::config::validate::{check_key, load_keys_setup};
    // Only the parts needed to manage keys: works even when the keys file is broken
    // (so a backup can be restored) or the upstreams come from the command line.
    let setup = load_keys_setup(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = setup
        .keys_file
        .clone()
        .context("the config has no limits.keys_file")?;
    let check =
        |key: &str| check_key(key, setup.max_key_len).map_err(|e| anyhow::anyhow!("{key}: {e}"));
    match op {
        KeysOp::List => {
            for (key, tier) in k::list(&path)? {
                println!("{key}\t{tier}");
            }
        }
        KeysOp::Add { key, tier } => {
            check(&key)?;
            k::add(&path, &key, &tier, &setup.tiers)?;
            println!("added {key} -> {tier}");
        }
        KeysOp::Remove { key } => {
            let old = k::remove(&path, &key)?;
            println!("removed {key} (was {old})");
        }
        KeysOp::Set { key, tier } => {
            check(&key)?;
            match k::set(&path, &key, &tier, &setup.tiers)? {
                Some(prev) if prev == tier => println!("{key} already {tier}"),
                Some(prev) => println!("set {key} -> {tier} (was {prev})"),
                None => println!("added {key} -> {tier}"),
            }
        }
        KeysOp::Backups => {
            for b in k::backups(&path) {
                println!("{}", b.display());
            }
        }
        KeysOp::Restore { file } => {
            k::restore(&path, &file)?;
            println!("restored {} from {}", path.display(), file.display());
        }
    }
    Ok(())
}

fn tls_builder() -> control::TlsBuilder {
    let resumption = tls::Resumption::new().expect("TLS ticketer");
    Box::new(move |cfg: &Config| {
        let t = cfg.tls.as_ref().ok_or("no [tls] section")?;
        tls::build_server_config(&t.certs, &resumption).map_err(|e| e.to_string())
    })
}

/// Every worker's listeners (plain, TLS), bound before anything starts, and logged.
type Listeners = Vec<Vec<std::net::TcpListener>>;
fn bind_all(cfg: &Config, n: usize) -> Result<(Listeners, Listeners)> {
    let plain = runtime::bind_listeners(&cfg.listen, n)?;
    let tls_addrs: Vec<SocketAddr> = cfg
        .tls
        .as_ref()
        .map(|t| t.listen.clone())
        .unwrap_or_default();
    let tls_ls = runtime::bind_listeners(&tls_addrs, n)?;
    for (i, a) in cfg.listen.iter().enumerate() {
        let bound = plain[0][i].local_addr()?;
        log::info!("listening on http://{bound} (configured {a})");
    }
    for (i, a) in tls_addrs.iter().enumerate() {
        let bound = tls_ls[0][i].local_addr()?;
        log::info!("listening on https://{bound} (configured {a})");
    }
    Ok((plain, tls_ls))
}

/// The access-log writer thread, when `[access_log] path` is set.
fn open_access_log(cfg: &Config) -> Result<Option<proxy::access_log::Writer>> {
    let Some(p) = &cfg.access_log.path else {
        return Ok(None);
    };
    let w = proxy::access_log::Writer::start(p, cfg.access_log.queue)
        .with_context(|| format!("access_log.path: cannot open {}", p.display()))?;
    log::info!("access log: {}", p.display());
    Ok(Some(w))
}

/// Client connections per worker that fit the open-file limit; warns when that is below
/// `http.max_connections`.
fn connection_budget(cfg: &Config, n: usize) -> usize {
    let budget = runtime::connection_budget(n);
    if cfg.http.max_connections > budget {
        log::warn!(
            "http.max_connections = {} per worker does not fit the open-file limit \
             (RLIMIT_NOFILE, with one upstream connection per client connection): using {} per \
             worker; raise the limit (systemd: LimitNOFILE=) to allow more",
            cfg.http.max_connections,
            budget
        );
    }
    budget
}

/// The running sync thread of `[cluster]`.
struct ClusterRun {
    clock: tollgate::cluster::Clock,
    stats: Arc<tollgate::stats::ClusterStats>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

/// With `[cluster]`: rings between every core and a sync thread, and the thread.
fn start_cluster(
    cfg: &tollgate::config::Config,
    meshes: &mut [runtime::CoreMesh],
    epoch: Instant,
) -> Result<Option<ClusterRun>> {
    let Some(c) = &cfg.cluster else {
        return Ok(None);
    };
    let ends = runtime::mesh::build_sync(meshes);
    let clock = tollgate::cluster::Clock::new(epoch);
    let stats = Arc::new(tollgate::stats::ClusterStats::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = tollgate::cluster::spawn(c.clone(), ends, stats.clone(), clock, stop.clone())
        .context("cluster sync thread")?;
    Ok(Some(ClusterRun {
        clock,
        stats,
        stop,
        thread,
    }))
}

fn run(path: PathBuf, overrides: Overrides) -> Result<()> {
    let cfg = load_with(&path, &overrides).map_err(|e| anyhow::anyhow!("{e}"))?;
    let cfg = Arc::new(cfg);
    let n = cfg.workers.max(1);
    let (plain, tls_ls) = bind_all(&cfg, n)?;
    let builder = tls_builder();
    let server_tls = match &cfg.tls {
        Some(_) => Some(builder(&cfg).map_err(|e| anyhow::anyhow!("TLS: {e}"))?),
        None => None,
    };
    let upstream_tls = match &cfg.upstream.tls {
        Some(t) => Some(tls::build_client_config(t)?),
        None => None,
    };
    let access_log = open_access_log(&cfg)?;
    let (mut meshes, handle) = runtime::mesh::build(n);
    let epoch = Instant::now();
    let cluster = start_cluster(&cfg, &mut meshes, epoch)?;
    let stats: Vec<Arc<CoreStats>> = (0..n).map(|_| Arc::new(CoreStats::default())).collect();
    let hasher = std::hash::RandomState::new();
    let connection_budget = connection_budget(&cfg, n);
    let shared = Arc::new(Shared {
        config: cfg.clone(),
        stats: stats.clone(),
        hasher: hasher.clone(),
        epoch,
        epoch_unix_ms: tollgate::proxy::observe::unix_ms(),
        tls: server_tls,
        upstream_tls,
        instance: {
            use std::hash::BuildHasher;
            hasher.hash_one(std::process::id() as u64 ^ Instant::now().elapsed().as_nanos() as u64)
        },
        access_log: access_log.as_ref().map(|w| w.tx.clone()),
        connection_budget,
        cluster_epoch_ms: cluster.as_ref().map(|c| c.clock.at(0)),
    });
    let inits = meshes
        .into_iter()
        .zip(plain)
        .zip(tls_ls)
        .map(|((m, p), t)| (m, p, t))
        .collect();
    let sh = shared.clone();
    let workers = runtime::spawn_workers(inits, cfg.pin_workers, move |init| {
        proxy::run_worker(init, sh.clone())
    })?;
    log::info!(
        "tollgate started: {n} workers, {} upstream(s), {} tier(s), {} key(s), config v{}",
        cfg.upstream.servers.len(),
        cfg.limits.tiers.len(),
        cfg.limits.keys.len(),
        cfg.limits.version
    );
    let state = Arc::new(
        ControlState::new(cfg.clone(), overrides, handle, stats, hasher, Some(builder))
            .with_cluster(cluster.as_ref().map(|c| c.stats.clone())),
    );
    control::start(state.clone())?;
    if let Some(a) = cfg.admin.listen {
        let bound = control::admin::start_with(state.clone(), a, cfg.admin.allowed_hosts.clone())
            .with_context(|| format!("admin listener {a}"))?;
        log::info!("admin on http://{bound}");
    }
    for w in workers {
        let _ = w.join();
    }
    if let Some(c) = cluster {
        c.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = c.thread.join();
    }
    if let Some(w) = access_log {
        w.finish();
    }
    log::info!("stopped");
    Ok(())
}
