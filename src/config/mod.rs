//! Configuration: the validated, immutable types every other module reads.
//!
//! Owns: the shape of a running configuration (`Config`) and the tier/key tables
//! (`LimitsConfig`). Loading happens in two layers: `file` is a raw serde mirror of
//! the TOML with `deny_unknown_fields` and the `DEFAULT_*` constants; `validate`
//! turns it into these types (per section: `validate/{server,upstream,limits}.rs`), and
//! `doc` maps every error to the file, line and field (`error::ConfigError`).
//! `keys` reads the keys file for validation and writes it for the keys CLI (atomic
//! writes, timestamped backups); `summary` is what `tollgate check` prints.
//! Must not touch: sockets, runtimes, anything on the data path. A `Config` is
//! built off the data path and handed to cores as an `Arc` snapshot.

mod doc;
mod error;
pub mod explain;
pub mod file;
pub mod keys;
mod summary;
#[cfg(test)]
pub(crate) mod testutil;
pub mod validate;

pub use summary::status_ranges;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::http::{Method, MethodSet};
pub use validate::{ConfigError, load, load_str};

/// A whole validated configuration (main file + keys file).
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the main config file (for reload and error messages).
    pub source: PathBuf,
    /// Number of worker cores (threads). Default: available parallelism.
    pub workers: usize,
    /// Pin worker threads to cores (default true).
    pub pin_workers: bool,
    /// Plain HTTP listeners (default `0.0.0.0:8080`... see DEFAULT_LISTEN).
    pub listen: Vec<SocketAddr>,
    /// HTTPS listeners and their certificates.
    pub tls: Option<TlsListenConfig>,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    /// `[[rules]]`, evaluated in order for every request (see `crate::rules`).
    pub rules: std::sync::Arc<crate::rules::RuleSet>,
    pub shutdown_grace: Duration,
    /// After SIGTERM, `/ready` answers 503 for this long while the listeners still accept,
    /// so a load balancer stops sending first; then `shutdown_grace` runs. Default 0 s.
    pub shutdown_delay: Duration,
    pub access_log: AccessLogConfig,
    /// How often the control thread polls config/keys files for changes (0 = off).
    pub reload_poll_interval: Duration,
    /// Active-active through a shared store (`[cluster]`); None = limit alone.
    pub cluster: Option<ClusterConfig>,
}

/// `[cluster]`: one limit per key across the instances sharing `redis_url`.
/// `Debug` shows the URL without its password (it reaches logs, e.g. a refused reload).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://HOST:PORT[/DB]`: the store every instance of the cluster shares.
    pub redis_url: String,
    /// One script call per interval pushes the deltas and reads the others' counts.
    pub sync_interval: Duration,
    /// This instance's name in the store (unique in the cluster).
    pub instance_id: String,
    /// What is enforced while the store does not answer.
    pub on_store_failure: StoreFailure,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("redis_url", &self.redacted_url())
            .field("sync_interval", &self.sync_interval)
            .field("instance_id", &self.instance_id)
            .field("on_store_failure", &self.on_store_failure)
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .finish()
    }
}

impl ClusterConfig {
    /// `redis_url` with any `user:password@` replaced by `***@` (for logs and `check`).
    pub fn redacted_url(&self) -> String {
        match self.redis_url.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                let host = rest.rsplit('@').next().unwrap_or("");
                format!("{scheme}://***@{host}")
            }
            _ => self.redis_url.clone(),
        }
    }
}

/// `cluster.on_store_failure` (owned by the algorithm, `limit::cluster`).
pub use crate::limit::cluster::Policy as StoreFailure;

#[derive(Debug, Clone)]
pub struct TlsListenConfig {
    pub listen: Vec<SocketAddr>,
    /// First entry is the default certificate (used when SNI is absent or unmatched).
    pub certs: Vec<CertConfig>,
    /// Poll cert/key files for changes and reload them (0 = off; SIGHUP also reloads).
    pub reload_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct CertConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// SNI names this certificate answers for; empty = take the names from the cert (SAN).
    pub server_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// None = admin listener disabled. Default 127.0.0.1:8404.
    pub listen: Option<SocketAddr>,
    /// Optional bearer token required on every admin request.
    pub token: Option<String>,
    /// `Host` values accepted besides the listener's own address and `localhost` (names a
    /// proxy or a DNS name in front of the admin API uses). Anything else is refused, so a
    /// web page cannot reach the API by DNS rebinding.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Max bytes of a request head (request line + headers). Default 16384 → 431 beyond.
    pub max_head_bytes: usize,
    /// Max number of request headers. Default 100 → 431 beyond.
    pub max_headers: usize,
    /// Close a client connection idle (between requests) this long. Default 60 s.
    pub client_idle_timeout: Duration,
    /// Max time to receive a whole request head once its first byte arrived. Default 10 s.
    pub client_head_timeout: Duration,
    /// Add `X-Forwarded-For: <client ip>` to upstream requests. Default false.
    pub x_forwarded_for: bool,
    /// Max keep-alive requests per client connection (0 = unlimited). Default 0.
    pub max_requests_per_connection: u64,
    /// Max open client connections per worker; over it a new connection is closed at once
    /// (and counted). Also bounded by the file-descriptor limit at start. Default 10,000.
    pub max_connections: usize,
    /// Peers whose `X-Forwarded-For` is believed (load balancers in front of tollgate):
    /// theirs is kept and extended, and the client address for per-address counting is the
    /// last address in it that is not itself trusted. Default: none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl HttpConfig {
    /// Whether `ip` is a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastOutstanding,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub servers: Vec<UpstreamServer>,
    pub balance: Balance,
    pub connect_timeout: Duration,
    /// From the last request byte sent to the first response-head byte... whole head. Default 60 s.
    pub response_head_timeout: Duration,
    /// How long a request body held for the client's `Expect: 100-continue` waits for the
    /// upstream's `100 Continue` before it is sent anyway (RFC 9110 §10.1.1). Default 1 s.
    pub expect_timeout: Duration,
    /// Max inactivity while streaming a body either way. Default 60 s.
    pub idle_timeout: Duration,
    /// Idle keep-alive connections kept per server per core. Default 64.
    pub pool_max_idle: usize,
    /// How long an idle pooled connection is kept. Default 30 s.
    pub pool_idle_timeout: Duration,
    pub health: HealthCheckConfig,
    /// Consecutive connect failures that eject a node passively. Default 3.
    pub passive_fail_threshold: u32,
    /// How long a passively ejected node stays out (unless a health check brings it back). Default 10 s.
    pub passive_eject_duration: Duration,
    /// Retries on another node for requests of which no byte was sent. Default 2.
    pub max_retries: u32,
    pub tls: Option<UpstreamTlsConfig>,
}

#[derive(Debug, Clone)]
pub struct UpstreamServer {
    /// As written in config ("host:port"), used in logs and stats.
    pub name: String,
    pub addr: SocketAddr,
    /// Stable node id: the index at load; a reload keeps the id of a server that stays
    /// (same name and address) and gives a new one an id no current server holds
    /// (`control`), so ids that cross cores never change meaning while a node is in use.
    pub id: u16,
}

#[derive(Debug, Clone)]
pub struct HealthCheckConfig {
    pub enabled: bool,
    /// Default "/minio/health/live".
    pub path: String,
    /// Default 2 s.
    pub interval: Duration,
    /// Default 1 s.
    pub timeout: Duration,
    /// Consecutive successes to mark a node up. Default 2.
    pub rise: u32,
    /// Consecutive failures to mark a node down. Default 3.
    pub fall: u32,
    /// Status codes accepted as healthy: 200..=399 by default (an S3 server answers
    /// unauthenticated paths with 403 — set `healthy_statuses` for such a server).
    pub healthy_statuses: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct UpstreamTlsConfig {
    /// PEM CA bundle to trust; None = the built-in webpki roots are NOT bundled, so this is required.
    pub ca_file: PathBuf,
    /// SNI / certificate name to verify. Default: host part of each server name.
    pub server_name: Option<String>,
}

#[derive(Debug, Clone)]
pub struct AccessLogConfig {
    /// None = off. Each core buffers lines and a writer thread appends to this file.
    pub path: Option<PathBuf>,
    /// A core hands its buffer to the writer when it holds this many bytes. Default 64 KiB.
    pub buffer_bytes: usize,
    /// ... or when its oldest line is this old. Default 1 s.
    pub flush_interval: Duration,
    /// Buffers that may wait for the writer before cores drop lines (counted). Default 64.
    pub queue: usize,
}

/// How keys that are not in the keys file are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlistedKeys {
    /// Each unlisted key has its own counters (the seed's behaviour).
    PerKey,
    /// Unlisted keys are counted per client address, so made-up keys buy nothing.
    PerAddress,
}

/// One sliding window of a tier (owned by the algorithm, `limit::window`).
pub use crate::limit::WindowConfig;

#[derive(Debug, Clone, PartialEq)]
pub struct TierConfig {
    pub name: String,
    /// The long (sustained) window; default 60 s.
    pub sustained: WindowConfig,
    /// The short (burst) window; default 1 s.
    pub burst: WindowConfig,
    /// Methods limited for this tier (default: the global list).
    pub methods: MethodSet,
    /// false = shadow mode for this tier: decide and count, but forward everything.
    pub enforce: bool,
    /// A tier a reload removed, kept as a placeholder so that the tiers after it keep
    /// their numbers (see [`LimitsConfig::tiers`]): nothing resolves to it, nothing is
    /// counted under it, and it is not shown.
    pub retired: bool,
}

impl TierConfig {
    /// The placeholder of removed tier `name`.
    pub fn retired(name: &str) -> TierConfig {
        let w = WindowConfig {
            length_ms: 1000,
            limit: 1,
        };
        TierConfig {
            name: name.to_string(),
            sustained: w,
            burst: w,
            methods: MethodSet::default(),
            enforce: false,
            retired: true,
        }
    }
}

/// Which groups of rate-limit headers are added to responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderGroups {
    /// IETF `RateLimit-Policy` / `RateLimit`.
    pub ietf: bool,
    /// The seed's `X-RateLimit-Group`, `X-RateLimit-Limit-Per-Minute`, `X-RateLimit-Current-Per-Minute`.
    pub legacy: bool,
    /// `X-API-Key` (the key as identified) and `X-Auth-Method`.
    pub identity: bool,
    /// Add the headers to allowed responses too (denied ones always get them).
    pub on_allowed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectDenied {
    /// Close the connection after the error (never read the body).
    Close,
    /// Read and discard up to this many body bytes to keep the connection, else close.
    Drain(u64),
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Path of the keys file (None = no keys: every key gets `default_tier`).
    pub keys_file: Option<PathBuf>,
    /// Tiers by number: the number every key, rule match, table entry, per-core stat and
    /// cross-core message uses. A fresh load numbers them in file order; a reload keeps
    /// the running numbers (a tier that stays keeps its number, a removed one leaves a
    /// retired placeholder, a new one goes last — or into a placeholder's place when all
    /// `stats::MAX_TIERS` are used), so that nothing counted under one tier passes to
    /// another while the cores take the new config one by one. Once all are used, a new
    /// tier takes a removed one's number: its stats start afresh, but a check a core on
    /// the old config sends under that number during the reload counts under the new tier.
    pub tiers: Vec<TierConfig>,
    pub tier_index: HashMap<String, usize>,
    /// key → tier index, from the keys file.
    pub keys: HashMap<Box<[u8]>, usize>,
    pub default_tier: usize,
    pub anonymous_tier: usize,
    pub unlisted_keys: UnlistedKeys,
    /// Global master switch for enforcement (false = shadow mode everywhere).
    pub enforce: bool,
    /// 429 (default) or 503.
    pub deny_status: u16,
    /// Keys longer than this are treated as anonymous. Default 128, max 255.
    pub max_key_len: usize,
    /// Max tracked subjects per core shard. Default 100_000.
    pub table_cap: usize,
    /// Bits of an IPv6 client address counted as one client (anonymous and unlisted-key
    /// requests, address rules, the penalty window): default 64, 128 = each address.
    /// IPv4 clients are counted per address.
    pub ipv6_prefix: u8,
    pub headers: HeaderGroups,
    pub expect_denied: ExpectDenied,
    /// An upstream 403 saying the request was not authenticated (SignatureDoesNotMatch,
    /// InvalidAccessKeyId, …) gives the admitted slot back to the key and counts a failure
    /// against the client address. Default true.
    pub refund_on_auth_failure: bool,
    /// `[limits.verify]`: the secrets tollgate verifies S3 signatures with before the limiter
    /// (None = the store alone authenticates).
    pub verify: Option<VerifyConfig>,
    /// Authentication failures allowed per client address in the window; over it, the
    /// address is refused before it touches any key's counters. `limit` 0 = off.
    /// Default 20 per 60 s.
    pub penalty: WindowConfig,
    /// A monotonically increasing version of the limits (bumped on every successful reload).
    pub version: u64,
}

/// Signature verification in the proxy.
#[derive(Debug, Clone)]
pub struct VerifyConfig {
    /// The secrets file (mode 0600: readable by its owner only).
    pub secrets_file: PathBuf,
    pub secrets: std::sync::Arc<crate::sigverify::Secrets>,
}

impl Config {
    /// The tier numbers and rule slots that `self` gives to another tier or rule than
    /// `old` did, or to none (a reload removing a rule, or reusing a removed one's number
    /// once all are taken): the stats kept under them must be forgotten. A tier retired
    /// under its own name keeps its number (and its history, should it come back).
    pub fn numbers_changing_hands(&self, old: &Config) -> (Vec<usize>, Vec<u16>) {
        let name = |c: &Config, t: usize| c.limits.tiers.get(t).map(|x| x.name.clone());
        let tiers = (0..old.limits.tiers.len())
            .filter(|&t| name(old, t) != name(self, t))
            .collect();
        let id = |c: &Config, s: u16| c.rules.by_slot(s).map(|r| r.id);
        let rules = old
            .rules
            .rules
            .iter()
            .map(|r| r.slot)
            .filter(|&s| id(old, s) != id(self, s))
            .collect();
        (tiers, rules)
    }
}

impl LimitsConfig {
    /// The tiers in force with their numbers (the retired placeholders left out).
    pub fn live_tiers(&self) -> impl Iterator<Item = (usize, &TierConfig)> {
        self.tiers.iter().enumerate().filter(|(_, t)| !t.retired)
    }

    /// Tier for an identified key (listed → its tier; unlisted → default tier).
    pub fn tier_of_key(&self, key: &[u8]) -> (usize, bool) {
        match self.keys.get(key) {
            Some(&t) => (t, true),
            None => (self.default_tier, false),
        }
    }
}
