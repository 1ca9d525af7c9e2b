//! Validation of `[upstream]`: the servers (names resolved at load, duplicates refused),
//! balancing, timeouts, pools, passive ejection, retries, `[upstream.health]` and
//! `[upstream.tls]`.
//!
//! Owns: those checks and defaults, and `MAX_UPSTREAM_SERVERS`. Must not touch: the
//! listeners or limits; sockets other than name resolution.

use super::{R, Validator, Zero};
use crate::config::doc::{Seg, p};
use crate::config::file::{
    DEFAULT_BALANCE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_EXPECT_TIMEOUT, DEFAULT_HEALTH_ENABLED,
    DEFAULT_HEALTH_FALL, DEFAULT_HEALTH_INTERVAL, DEFAULT_HEALTH_PATH, DEFAULT_HEALTH_RISE,
    DEFAULT_HEALTH_TIMEOUT, DEFAULT_HEALTHY_STATUSES, DEFAULT_MAX_RETRIES,
    DEFAULT_PASSIVE_EJECT_DURATION, DEFAULT_PASSIVE_FAIL_THRESHOLD, DEFAULT_POOL_IDLE_TIMEOUT,
    DEFAULT_POOL_MAX_IDLE, DEFAULT_RESPONSE_HEAD_TIMEOUT, DEFAULT_UPSTREAM_IDLE_TIMEOUT,
    RawBalance, RawConfig, RawHealth, RawServer, RawUpstreamTls,
};
use crate::config::{
    Balance, HealthCheckConfig, UpstreamConfig, UpstreamServer, UpstreamTlsConfig,
};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;

/// Upstream servers one config may list (node ids travel between cores as `u16`).
pub const MAX_UPSTREAM_SERVERS: usize = 1024;

impl Validator<'_> {
    pub(super) fn upstream(&self, raw: &RawConfig, base: &Path) -> R<UpstreamConfig> {
        let u = &raw.upstream;
        let servers = self.servers(&u.servers)?;
        let health = self.health(&u.health)?;
        let tls = match &u.tls {
            None => None,
            Some(t) => Some(self.upstream_tls(t, base)?),
        };
        let u = self.section(&["upstream"], u);
        Ok(UpstreamConfig {
            servers,
            balance: match u.raw.balance.unwrap_or(DEFAULT_BALANCE) {
                RawBalance::RoundRobin => Balance::RoundRobin,
                RawBalance::LeastOutstanding => Balance::LeastOutstanding,
            },
            connect_timeout: dur!(u.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            response_head_timeout: dur!(u.response_head_timeout, DEFAULT_RESPONSE_HEAD_TIMEOUT),
            expect_timeout: dur!(u.expect_timeout, DEFAULT_EXPECT_TIMEOUT),
            idle_timeout: dur!(u.idle_timeout, DEFAULT_UPSTREAM_IDLE_TIMEOUT),
            pool_max_idle: int!(u.pool_max_idle, DEFAULT_POOL_MAX_IDLE, 0..=65535) as usize,
            pool_idle_timeout: dur!(u.pool_idle_timeout, DEFAULT_POOL_IDLE_TIMEOUT),
            health,
            passive_fail_threshold: int!(
                u.passive_fail_threshold,
                DEFAULT_PASSIVE_FAIL_THRESHOLD,
                1..=1000
            ) as u32,
            passive_eject_duration: dur!(u.passive_eject_duration, DEFAULT_PASSIVE_EJECT_DURATION),
            max_retries: int!(u.max_retries, DEFAULT_MAX_RETRIES, 0..=100) as u32,
            tls,
        })
    }

    /// `upstream.servers`: at least one, at most `MAX_UPSTREAM_SERVERS`, each resolved and
    /// none the same address as another.
    fn servers(&self, list: &[RawServer]) -> R<Vec<UpstreamServer>> {
        if list.is_empty() {
            return Err(self.err(
                &p!["upstream", "servers"],
                "no upstream servers: add an [[upstream.servers]] entry or pass --upstream",
            ));
        }
        if list.len() > MAX_UPSTREAM_SERVERS {
            return Err(self.err(
                &p!["upstream", "servers"],
                format!(
                    "{} upstream servers: at most {MAX_UPSTREAM_SERVERS} are supported",
                    list.len()
                ),
            ));
        }
        let mut servers: Vec<UpstreamServer> = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let at = p!["upstream", "servers", i, "addr"];
            let addr = self.resolve_upstream(&s.addr, &at)?;
            if let Some(j) = servers.iter().position(|o| o.addr == addr) {
                return Err(self.err(
                    &at,
                    format!("{:?} is the same server as upstream.servers[{j}]", s.addr),
                ));
            }
            servers.push(UpstreamServer {
                name: s.addr.clone(),
                addr,
                id: i as u16,
            });
        }
        Ok(servers)
    }

    fn health(&self, hr: &RawHealth) -> R<HealthCheckConfig> {
        let path = hr
            .path
            .clone()
            .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string());
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(
                &p!["upstream", "health", "path"],
                format!("invalid path {path:?} (must start with / and contain no spaces)"),
            ));
        }
        let statuses_raw: Vec<String> = match &hr.healthy_statuses {
            Some(v) => v.clone(),
            None => DEFAULT_HEALTHY_STATUSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let healthy_statuses = self.statuses(&statuses_raw)?;
        let hr = self.section(&["upstream", "health"], hr);
        Ok(HealthCheckConfig {
            enabled: hr.raw.enabled.unwrap_or(DEFAULT_HEALTH_ENABLED),
            path,
            interval: dur!(hr.interval, DEFAULT_HEALTH_INTERVAL),
            timeout: dur!(hr.timeout, DEFAULT_HEALTH_TIMEOUT),
            rise: int!(hr.rise, DEFAULT_HEALTH_RISE, 1..=100) as u32,
            fall: int!(hr.fall, DEFAULT_HEALTH_FALL, 1..=100) as u32,
            healthy_statuses,
        })
    }

    fn upstream_tls(&self, t: &RawUpstreamTls, base: &Path) -> R<UpstreamTlsConfig> {
        let ca_file = self.existing_file(base, &t.ca_file, &p!["upstream", "tls", "ca_file"])?;
        if let Some(n) = &t.server_name {
            self.server_name(n, &p!["upstream", "tls", "server_name"])?;
        }
        Ok(UpstreamTlsConfig {
            ca_file,
            server_name: t.server_name.clone(),
        })
    }

    /// `["200-399", "404"]` → sorted, deduplicated status codes.
    fn statuses(&self, list: &[String]) -> R<Vec<u16>> {
        let base = p!["upstream", "health", "healthy_statuses"];
        if list.is_empty() {
            return Err(self.err(&base, "at least one status or range is required"));
        }
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let mut at = base.to_vec();
            at.push(Seg::Index(i));
            let bad = || {
                self.err(
                    &at,
                    format!("invalid status {s:?} (expected \"N\" or \"A-B\" within 100..=599)"),
                )
            };
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (s.trim(), s.trim()),
            };
            let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
                return Err(bad());
            };
            if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
                return Err(bad());
            }
            out.extend(a..=b);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// `HOST:PORT` → one address, IPv4 preferred.
    fn resolve_upstream(&self, s: &str, path: &[Seg]) -> R<SocketAddr> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a);
        }
        let invalid = || {
            self.err(
                path,
                format!("invalid address {s:?} (expected HOST:PORT, e.g. \"127.0.0.1:9000\")"),
            )
        };
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(invalid());
        };
        if host.is_empty() || port.parse::<u16>().is_err() || host.contains(char::is_whitespace) {
            return Err(invalid());
        }
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|e| self.err(path, format!("cannot resolve {s:?}: {e}")))?
            .collect();
        // Prefer IPv4: a store listening on 127.0.0.1 is more common than one on ::1.
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| self.err(path, format!("cannot resolve {s:?}: no addresses")))
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_UPSTREAM_SERVERS;
    use crate::config::load_str;
    use crate::config::testutil::{SERVERS, err_at, ok};
    use crate::config::validate::{Overrides, load_str_with};
    use std::path::Path;

    #[test]
    fn no_upstream_servers_unless_overridden() {
        let e = err_at("workers = 1\n", 1, "upstream.servers");
        assert!(e.to_string().contains("no upstream servers"), "{e}");
        err_at(
            "workers = 1\n\n[upstream]\nmax_retries = 1\n",
            3,
            "upstream.servers",
        );
        let ov = Overrides {
            upstream: vec!["127.0.0.1:3900".into(), "127.0.0.1:3901".into()],
            ..Overrides::default()
        };
        let c = load_str_with("workers = 1\n", Path::new("t.toml"), &ov).unwrap();
        let names: Vec<&str> = c.upstream.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:3900", "127.0.0.1:3901"]);
    }

    #[test]
    fn healthy_statuses_ranges() {
        let c = ok(&format!(
            "{SERVERS}[upstream.health]\nhealthy_statuses = [\"200-299\", \"404\", \"403\", \"250-310\"]\n"
        ));
        let mut want: Vec<u16> = (200..=310).collect();
        want.extend([403, 404]);
        assert_eq!(c.upstream.health.healthy_statuses, want);
        for bad in ["\"abc\"", "\"300-200\"", "\"99\"", "\"200-600\""] {
            err_at(
                &format!("{SERVERS}[upstream.health]\nhealthy_statuses = [\"200\", {bad}]\n"),
                4,
                "upstream.health.healthy_statuses[1]",
            );
        }
        err_at(
            &format!("{SERVERS}[upstream.health]\nhealthy_statuses = []\n"),
            4,
            "upstream.health.healthy_statuses",
        );
        err_at(
            &format!("{SERVERS}[upstream.health]\npath = \"health\"\n"),
            4,
            "upstream.health.path",
        );
    }

    #[test]
    fn too_many_upstream_servers_are_refused() {
        let many: String = (0..=MAX_UPSTREAM_SERVERS)
            .map(|i| {
                format!(
                    "[[upstream.servers]]\naddr = \"127.0.{}.{}:9000\"\n",
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect();
        let e = load_str(&many, Path::new("t.toml")).expect_err("1025 servers");
        assert_eq!(e.field(), Some("upstream.servers"));
        assert!(e.to_string().contains("at most 1024"), "{e}");
    }
}
