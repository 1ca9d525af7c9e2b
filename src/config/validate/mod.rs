//! Raw config (`file`) → validated `Config`, with errors that name file, line and field.
//!
//! Owns: loading the main config file, applying command-line `Overrides` before validation,
//! numbering the tiers (file order; on a reload, the running numbers kept: `LimitsConfig::tiers`),
//! every value check, defaults, relative path resolution and upstream name resolution. The
//! checks live on one `Validator` (so every error knows its line and whether a flag supplied
//! the value), split by section: `server` (top level, `[tls]`, `[admin]`, `[http]`,
//! `[access_log]`), `upstream` (`[upstream]` with its health checks and TLS), `limits`
//! (`[limits]`, `[tiers]`, the keys file), `cluster` (`[cluster]`), `rules` (`[[rules]]`). `build` only calls them in order.
//! Must not touch: sockets (other than name resolution), the running proxy, the keys CLI
//! (`keys` owns the keys file; `doc` owns positions; `summary` owns the `check` text).

/// `dur!(sec.key, DEFAULT)`: the duration at `key` of section `sec` (or `DEFAULT` when the
/// file has none), which must be longer than 0; `dur_or_zero!` also accepts 0. Returns early
/// with the error, which names the section's table and `key`. The key is the raw field's
/// name, so it is written once.
macro_rules! dur {
    ($sec:ident . $key:ident, $default:expr) => {
        $sec.dur(stringify!($key), $sec.raw.$key, $default, Zero::Refused)?
    };
}
macro_rules! dur_or_zero {
    ($sec:ident . $key:ident, $default:expr) => {
        $sec.dur(stringify!($key), $sec.raw.$key, $default, Zero::Allowed)?
    };
}
/// `int!(sec.key, DEFAULT, range)`: the integer at `key` (or `DEFAULT`) within `range`, like
/// `dur!`.
macro_rules! int {
    ($sec:ident . $key:ident, $default:expr, $range:expr) => {
        $sec.int(stringify!($key), $sec.raw.$key, $default, $range)?
    };
}

mod cluster;
mod limits;
mod rules;
mod server;
mod upstream;

use super::doc::{Doc, Seg, p, parse_doc, read_text, render_path};
use super::file::{self, RawConfig, RawDuration};
use super::{Config, Method, MethodSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use super::error::ConfigError;
pub use super::keys::{check_key, load_keys, load_keys_checked, load_keys_str, parse_keys_text};
pub use super::summary::summary;
pub use limits::{KeysSetup, load_keys_setup};
pub use rules::RawRule;
pub use upstream::MAX_UPSTREAM_SERVERS;

/// Command-line values that replace the file's values before validation.
/// Empty vectors / `None` leave the file's value in place.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: replaces `listen`.
    pub listen: Vec<SocketAddr>,
    /// `--tls-listen`: replaces `tls.listen` (needs a `[tls]` table with certificates).
    pub tls_listen: Vec<SocketAddr>,
    /// `--upstream HOST:PORT`: replaces `upstream.servers`.
    pub upstream: Vec<String>,
    /// `--workers`: replaces `workers`.
    pub workers: Option<usize>,
    /// `--admin ADDR|off`: replaces `admin.listen`.
    pub admin: Option<String>,
}

/// Load and validate a config file (and the keys file it names).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &Overrides::default())
}

/// Load a config file, apply command-line overrides, then validate.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    load_str_with(&text, path, overrides)
}

/// Load a config file for a reload of `running`: as [`load_with`], with the tiers
/// numbered as `running` numbers them (see `LimitsConfig::tiers`).
pub fn load_for_reload(
    path: &Path,
    overrides: &Overrides,
    running: &Config,
) -> Result<Config, ConfigError> {
    let text = read_text(path)?;
    validate_text(&text, path, overrides, Some(running))
}

/// Validate config text as if read from `path` (used for messages and to resolve relative
/// paths; the keys file is read from disk relative to it).
pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    load_str_with(text, path, &Overrides::default())
}

/// `load_str` with command-line overrides.
pub fn load_str_with(
    text: &str,
    path: &Path,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    validate_text(text, path, overrides, None)
}

fn validate_text(
    text: &str,
    path: &Path,
    overrides: &Overrides,
    running: Option<&Config>,
) -> Result<Config, ConfigError> {
    let (doc, raw) = parse_doc::<RawConfig>(text, path)?;
    let mut v = Validator::new(doc);
    if let Some(r) = running {
        v.running_tiers = r
            .limits
            .tiers
            .iter()
            .map(|t| (t.name.clone(), t.retired))
            .collect();
    }
    let raw = v.apply_overrides(raw, overrides);
    v.build(raw, path)
}

struct Validator<'a> {
    doc: Doc<'a>,
    /// Field-path prefixes whose values came from the command line, with the flag.
    overridden: Vec<(Vec<Seg>, &'static str)>,
    /// On a reload: the running config's tiers by number (name, retired), whose numbers
    /// the new config keeps. Empty on a fresh load.
    running_tiers: Vec<(String, bool)>,
}

type R<T> = Result<T, ConfigError>;

/// Whether a duration of 0 is accepted (where it means "off" or "at once").
#[derive(Clone, Copy, PartialEq, Eq)]
enum Zero {
    Allowed,
    Refused,
}

/// One table of the file (`[upstream.health]`, or the top level) with its raw values: its
/// fields are checked by key (see `dur!`, `int!`), and their errors name the whole path.
struct Section<'v, 'a, T> {
    v: &'v Validator<'a>,
    table: Vec<Seg>,
    raw: &'v T,
}

impl<T> Section<'_, '_, T> {
    fn path(&self, field: &str) -> Vec<Seg> {
        let mut p = self.table.clone();
        p.push(Seg::key(field));
        p
    }

    fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        self.v.err(&self.path(field), message)
    }

    /// `field`'s duration, or `default` when absent.
    fn dur(
        &self,
        field: &str,
        v: Option<RawDuration>,
        default: Duration,
        zero: Zero,
    ) -> R<Duration> {
        let d = v.map_or(default, |d| d.0);
        if zero == Zero::Refused && d.is_zero() {
            return Err(self.err(field, "must be longer than 0"));
        }
        Ok(d)
    }

    /// `field`'s integer, or `default` when absent, within `range`.
    fn int(&self, field: &str, v: Option<u64>, default: u64, range: RangeInclusive<u64>) -> R<u64> {
        let n = v.unwrap_or(default);
        if !range.contains(&n) {
            let msg = if *range.end() == u64::MAX {
                format!("{n} is out of range (must be at least {})", range.start())
            } else {
                format!(
                    "{n} is out of range (must be {}..={})",
                    range.start(),
                    range.end()
                )
            };
            return Err(self.err(field, msg));
        }
        Ok(n)
    }
}

impl<'a> Validator<'a> {
    fn new(doc: Doc<'a>) -> Validator<'a> {
        Validator {
            doc,
            overridden: Vec::new(),
            running_tiers: Vec::new(),
        }
    }

    /// The table at `table` (`&[]` = the top level), whose raw values are `raw`.
    fn section<'v, T>(&'v self, table: &[&str], raw: &'v T) -> Section<'v, 'a, T> {
        Section {
            v: self,
            table: table.iter().map(|k| Seg::key(k)).collect(),
            raw,
        }
    }

    fn err(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        if let Some((_, flag)) = self
            .overridden
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
        {
            return ConfigError::Override {
                flag,
                field: render_path(path),
                message: message.into(),
            };
        }
        self.doc.error_at(path, message)
    }

    fn apply_overrides(&mut self, mut raw: RawConfig, ov: &Overrides) -> RawConfig {
        if !ov.listen.is_empty() {
            raw.listen = Some(ov.listen.iter().map(ToString::to_string).collect());
            self.overridden.push((p!["listen"].to_vec(), "--listen"));
        }
        if !ov.tls_listen.is_empty() {
            let tls = raw.tls.get_or_insert_with(|| {
                // No [tls] table in the file: everything about TLS comes from the flag.
                self.overridden.push((p!["tls"].to_vec(), "--tls-listen"));
                file::RawTls::default()
            });
            tls.listen = Some(ov.tls_listen.iter().map(ToString::to_string).collect());
            self.overridden
                .push((p!["tls", "listen"].to_vec(), "--tls-listen"));
        }
        if !ov.upstream.is_empty() {
            raw.upstream.servers = ov
                .upstream
                .iter()
                .map(|a| file::RawServer { addr: a.clone() })
                .collect();
            self.overridden
                .push((p!["upstream", "servers"].to_vec(), "--upstream"));
        }
        if let Some(w) = ov.workers {
            raw.workers = Some(w as u64);
            self.overridden.push((p!["workers"].to_vec(), "--workers"));
        }
        if let Some(a) = &ov.admin {
            raw.admin.listen = Some(a.clone());
            self.overridden
                .push((p!["admin", "listen"].to_vec(), "--admin"));
        }
        raw
    }

    fn socket_addr(&self, s: &str, path: &[Seg]) -> R<SocketAddr> {
        s.parse::<SocketAddr>().map_err(|_| {
            self.err(
                path,
                format!("invalid address {s:?} (expected IP:PORT, e.g. \"0.0.0.0:8080\")"),
            )
        })
    }

    fn listeners(&self, list: &[String], path: &[Seg]) -> R<Vec<SocketAddr>> {
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let mut at = path.to_vec();
            at.push(Seg::Index(i));
            out.push(self.socket_addr(s, &at)?);
        }
        Ok(out)
    }

    fn methods(&self, list: &[String], path: &[Seg]) -> R<MethodSet> {
        let mut set = MethodSet::default();
        for (i, m) in list.iter().enumerate() {
            let Some(method) = Method::from_bytes(m.as_bytes()) else {
                let mut at = path.to_vec();
                at.push(Seg::Index(i));
                let all: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                return Err(self.err(
                    &at,
                    format!("unknown method {m:?} (expected one of {})", all.join(" ")),
                ));
            };
            set.insert(method);
        }
        Ok(set)
    }

    fn existing_file(&self, base: &Path, s: &str, path: &[Seg]) -> R<PathBuf> {
        if s.is_empty() {
            return Err(self.err(path, "empty file name"));
        }
        let p = resolve_path(base, s);
        if !p.is_file() {
            return Err(self.err(
                path,
                format!("file not found: {:?}", p.display().to_string()),
            ));
        }
        Ok(p)
    }

    /// A TLS server name: non-empty, printable ASCII without spaces.
    fn server_name(&self, name: &str, path: &[Seg]) -> R<()> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(path, format!("invalid server name {name:?}")));
        }
        Ok(())
    }

    /// Every section in file order, so the first error reported is the first in the file's
    /// logical order (top level, TLS, admin, listeners, http, upstream, access log, limits).
    fn build(&self, raw: RawConfig, source: &Path) -> R<Config> {
        let base = source.parent().unwrap_or(Path::new(""));
        let top = self.top_level(&raw)?;
        let tls = self.tls(raw.tls.as_ref(), base)?;
        if top.listen.is_empty() && tls.is_none() {
            return Err(self.err(
                &p!["listen"],
                "no listeners: give at least one address in listen or tls.listen",
            ));
        }
        let admin = self.admin(&raw.admin)?;
        self.unique_listeners(&top.listen, tls.as_ref(), &admin)?;
        let http = self.http(&raw.http)?;
        let upstream = self.upstream(&raw, base)?;
        let access_log = self.access_log(&raw.access_log, base)?;
        let limits = self.limits(&raw, base)?;
        let rules = self.rules(&raw.rules, raw.virtual_host_domains.as_deref(), &limits)?;
        let first = top
            .listen
            .first()
            .or_else(|| tls.as_ref().and_then(|t| t.listen.first()))
            .copied();
        let cluster = self.cluster(raw.cluster.as_ref(), first)?;
        Ok(Config {
            source: source.to_path_buf(),
            workers: top.workers,
            pin_workers: top.pin_workers,
            listen: top.listen,
            tls,
            admin,
            http,
            upstream,
            limits,
            rules: std::sync::Arc::new(rules),
            shutdown_grace: top.shutdown_grace,
            shutdown_delay: top.shutdown_delay,
            access_log,
            reload_poll_interval: top.reload_poll_interval,
            cluster,
        })
    }
}

/// `p` relative to `base` (the config file's directory) unless absolute.
fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::{SERVERS, TempDir, err_at, manifest_file, ok};
    use crate::config::{Balance, ExpectDenied, HeaderGroups, UnlistedKeys};

    #[test]
    fn nearly_empty_file_gets_every_default() {
        let c = ok(SERVERS);
        assert_eq!(
            c.workers,
            std::thread::available_parallelism().unwrap().get()
        );
        assert!(c.pin_workers);
        assert_eq!(
            c.listen,
            vec!["0.0.0.0:8080".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.tls.is_none());
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.reload_poll_interval, Duration::from_secs(2));
        assert_eq!(c.admin.listen, Some("127.0.0.1:8404".parse().unwrap()));
        assert_eq!(c.admin.token, None);
        assert_eq!(c.http.max_head_bytes, 16384);
        assert_eq!(c.http.max_headers, 100);
        assert_eq!(c.http.client_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.client_head_timeout, Duration::from_secs(10));
        assert!(!c.http.x_forwarded_for);
        assert_eq!(c.http.max_requests_per_connection, 0);
        let u = &c.upstream;
        assert_eq!(u.servers.len(), 1);
        assert_eq!(u.servers[0].name, "127.0.0.1:9000");
        assert_eq!(u.servers[0].addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.connect_timeout, Duration::from_secs(2));
        assert_eq!(u.response_head_timeout, Duration::from_secs(60));
        assert_eq!(u.idle_timeout, Duration::from_secs(60));
        assert_eq!(u.pool_max_idle, 64);
        assert_eq!(u.pool_idle_timeout, Duration::from_secs(30));
        assert_eq!(u.passive_fail_threshold, 3);
        assert_eq!(u.passive_eject_duration, Duration::from_secs(10));
        assert_eq!(u.max_retries, 2);
        assert!(u.tls.is_none());
        assert!(u.health.enabled);
        assert_eq!(u.health.path, "/minio/health/live");
        assert_eq!(u.health.interval, Duration::from_secs(2));
        assert_eq!(u.health.timeout, Duration::from_secs(1));
        assert_eq!((u.health.rise, u.health.fall), (2, 3));
        assert_eq!(u.health.healthy_statuses, (200..=399).collect::<Vec<u16>>());
        assert_eq!(c.access_log.path, None);
        let l = &c.limits;
        assert_eq!(l.keys_file, None);
        assert!(l.keys.is_empty());
        let names: Vec<&str> = l.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["premium", "standard", "basic", "unknown"]);
        let limits: Vec<(u32, u32, u32, u32)> = l
            .tiers
            .iter()
            .map(|t| {
                (
                    t.sustained.limit,
                    t.sustained.length_ms,
                    t.burst.limit,
                    t.burst.length_ms,
                )
            })
            .collect();
        assert_eq!(
            limits,
            [
                (1000, 60_000, 50, 1000),
                (500, 60_000, 25, 1000),
                (100, 60_000, 10, 1000),
                (50, 60_000, 5, 1000)
            ]
        );
        let mut get_put = MethodSet::default();
        get_put.insert(Method::Get);
        get_put.insert(Method::Put);
        assert!(l.tiers.iter().all(|t| t.methods == get_put && t.enforce));
        assert_eq!(l.tier_index["unknown"], 3);
        assert_eq!((l.default_tier, l.anonymous_tier), (3, 3));
        assert_eq!(l.unlisted_keys, UnlistedKeys::PerAddress);
        assert!(l.refund_on_auth_failure);
        assert_eq!(
            (l.penalty.limit, l.penalty.length_ms),
            (20, 60_000),
            "20 failures per minute"
        );
        assert!(c.admin.allowed_hosts.is_empty());
        assert!(l.enforce);
        assert_eq!(l.deny_status, 429);
        assert_eq!(l.max_key_len, 128);
        assert_eq!(l.table_cap, 100_000);
        assert_eq!(
            l.headers,
            HeaderGroups {
                ietf: true,
                legacy: true,
                identity: true,
                on_allowed: true
            }
        );
        assert_eq!(l.expect_denied, ExpectDenied::Close);
        assert_eq!(l.version, 1);
        assert_eq!(c.source, PathBuf::from("/nonexistent/t.toml"));
    }

    #[test]
    fn bad_durations() {
        let e = err_at(
            &format!("shutdown_grace = \"30 s\"\n{SERVERS}"),
            1,
            "shutdown_grace",
        );
        assert!(e.to_string().contains("invalid duration \"30 s\""), "{e}");
        err_at(
            &format!("{SERVERS}[upstream]\nconnect_timeout = \"1.5s\"\n"),
            4,
            "upstream.connect_timeout",
        );
        err_at(
            &format!("{SERVERS}[upstream]\nconnect_timeout = 2\n"),
            4,
            "upstream.connect_timeout",
        );
        let e = err_at(
            &format!("{SERVERS}[upstream.health]\ninterval = \"0s\"\n"),
            4,
            "upstream.health.interval",
        );
        assert!(e.to_string().ends_with("must be longer than 0"), "{e}");
        err_at(
            &format!(
                "{SERVERS}[tiers.t]\nper_minute = 5\nburst = {{ limit = 1, window = \"1d\" }}\n"
            ),
            5,
            "tiers.t.burst.window",
        );
        // "0s" = off is allowed where documented.
        let c = ok(&format!("reload_poll_interval = \"0s\"\n{SERVERS}"));
        assert_eq!(c.reload_poll_interval, Duration::ZERO);
    }

    #[test]
    fn overrides_replace_file_values() {
        let dir = TempDir::new("ov");
        let cert = dir.write("c.pem", "x");
        let key = dir.write("c.key", "x");
        let path = dir.write(
            "t.toml",
            "workers = 3\nlisten = [\"0.0.0.0:1\"]\n[admin]\nlisten = \"127.0.0.1:2\"\n\
             [tls]\nlisten = [\"0.0.0.0:3\"]\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"c.key\"\n\
             [[upstream.servers]]\naddr = \"127.0.0.1:4\"\n",
        );
        let base = load(&path).unwrap();
        assert_eq!(base.workers, 3);
        assert_eq!(base.tls.as_ref().unwrap().certs[0].cert_file, cert);
        assert_eq!(base.tls.as_ref().unwrap().certs[0].key_file, key);
        let ov = Overrides {
            listen: vec![
                "127.0.0.1:10".parse().unwrap(),
                "127.0.0.1:11".parse().unwrap(),
            ],
            tls_listen: vec!["127.0.0.1:12".parse().unwrap()],
            upstream: vec!["127.0.0.1:13".into()],
            workers: Some(7),
            admin: Some("off".into()),
        };
        let c = load_with(&path, &ov).unwrap();
        assert_eq!(c.workers, 7);
        assert_eq!(c.listen, ov.listen);
        assert_eq!(c.tls.as_ref().unwrap().listen, ov.tls_listen);
        assert_eq!(c.upstream.servers[0].addr, "127.0.0.1:13".parse().unwrap());
        assert_eq!(c.upstream.servers.len(), 1);
        assert_eq!(c.admin.listen, None);

        // Bad override values name the flag, not a file line.
        let bad = Overrides {
            upstream: vec!["127.0.0.1:1".into(), "nope".into()],
            ..Overrides::default()
        };
        let e = load_with(&path, &bad).unwrap_err();
        assert_eq!(e.line(), None);
        assert_eq!(
            e.to_string(),
            "--upstream: upstream.servers[1].addr: invalid address \"nope\" (expected HOST:PORT, e.g. \"127.0.0.1:9000\")"
        );
        let e = load_with(
            &path,
            &Overrides {
                workers: Some(0),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--workers: workers: 0 is out of range"),
            "{e}"
        );
        let e = load_with(
            &path,
            &Overrides {
                admin: Some("x".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--admin: admin.listen: invalid address \"x\""),
            "{e}"
        );
        // --tls-listen without a [tls] table in the file.
        let e = load_str_with(
            SERVERS,
            Path::new("t.toml"),
            &Overrides {
                tls_listen: vec!["127.0.0.1:9".parse().unwrap()],
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("--tls-listen: tls.certs: "),
            "{e}"
        );
    }

    #[test]
    fn shipped_config_loads_with_defaults() {
        let path = manifest_file("config/tollgate.toml");
        let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
        // Every value in the shipped file is the default (except the documented example
        // upstream, the keys file and workers, which is commented out).
        let d = ok(SERVERS);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.workers, d.workers);
        assert_eq!(c.pin_workers, d.pin_workers);
        assert_eq!(c.shutdown_grace, d.shutdown_grace);
        assert_eq!(c.reload_poll_interval, d.reload_poll_interval);
        assert!(c.tls.is_none());
        assert_eq!(c.admin.listen, d.admin.listen);
        assert_eq!(c.admin.token, d.admin.token);
        assert_eq!(format!("{:?}", c.http), format!("{:?}", d.http));
        assert_eq!(format!("{:?}", c.upstream), format!("{:?}", d.upstream));
        assert_eq!(c.access_log.path, None);
        let (l, dl) = (&c.limits, &d.limits);
        assert_eq!(l.tiers, dl.tiers);
        assert_eq!(
            (l.default_tier, l.anonymous_tier),
            (dl.default_tier, dl.anonymous_tier)
        );
        assert_eq!(l.unlisted_keys, dl.unlisted_keys);
        assert_eq!(
            (l.enforce, l.deny_status, l.max_key_len, l.table_cap),
            (dl.enforce, dl.deny_status, dl.max_key_len, dl.table_cap)
        );
        assert_eq!(l.headers, dl.headers);
        assert_eq!(l.expect_denied, dl.expect_denied);
        assert_eq!(l.keys_file, Some(manifest_file("config/keys.toml")));
        assert!(!l.keys.is_empty());
        let s = summary(&c);
        assert!(s.contains("listen (http): 0.0.0.0:8080"), "{s}");
        assert!(s.contains("127.0.0.1:9000 -> 127.0.0.1:9000"), "{s}");
    }

    #[test]
    fn demo_config_loads() {
        let c = load(&manifest_file("config/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.workers, 2);
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:18080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.admin.listen, Some("127.0.0.1:18404".parse().unwrap()));
        assert_eq!(
            c.upstream.servers[0].addr,
            "127.0.0.1:3900".parse().unwrap()
        );
        assert_eq!(c.upstream.health.path, "/");
        assert_eq!(
            c.upstream.health.healthy_statuses,
            (200..=499).collect::<Vec<u16>>()
        );
        let l = &c.limits;
        let names: Vec<&str> = l.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["premium", "standard", "basic", "unknown"]);
        let count = |tier: &str| {
            l.keys
                .values()
                .filter(|&&t| t == l.tier_index[tier])
                .count()
        };
        assert_eq!(
            (count("premium"), count("standard"), count("basic")),
            (5, 0, 0)
        );
        for i in 0..5 {
            let k = format!("GKb1000000000000000000{i:04}");
            assert_eq!(k.len(), 26);
            assert!(k[2..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(l.tier_of_key(k.as_bytes()), (0, true), "{k}");
        }
    }

    #[test]
    fn read_error_names_file() {
        let e = load(Path::new("/nonexistent/dir/t.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/dir/t.toml: cannot read: "),
            "{e}"
        );
    }
}
