//! `[cluster]`: active-active through a shared Redis. Absent = off.
//!
//! Owns: the checks of `redis_url`, `sync_interval`, `instance_id` (and its default: the
//! first listener's host:port, with the machine's host name for an unspecified address),
//! `on_store_failure` and the timeouts. Must not touch: the store (nothing connects here).

use super::{R, Validator, Zero};
use crate::config::file::{
    DEFAULT_CLUSTER_CONNECT_TIMEOUT, DEFAULT_CLUSTER_READ_TIMEOUT, DEFAULT_CLUSTER_WRITE_TIMEOUT,
    DEFAULT_ON_STORE_FAILURE, DEFAULT_SYNC_INTERVAL, RawCluster,
};
use crate::config::{ClusterConfig, StoreFailure};
use crate::limit::cluster::TOTAL_FIELD;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest `instance_id` (bytes).
const MAX_INSTANCE_ID: usize = 64;

impl Validator<'_> {
    /// `[cluster]`, if present; `first_listener` gives the default `instance_id`.
    pub(super) fn cluster(
        &self,
        raw: Option<&RawCluster>,
        first_listener: Option<SocketAddr>,
    ) -> R<Option<ClusterConfig>> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let c = self.section(&["cluster"], raw);
        let redis_url = match raw.redis_url.as_deref() {
            None => return Err(c.err("redis_url", "missing (e.g. \"redis://127.0.0.1:6379\")")),
            Some(u) => u.to_string(),
        };
        if let Err(m) = check_redis_url(&redis_url) {
            return Err(c.err("redis_url", m));
        }
        let sync_interval = dur!(c.sync_interval, DEFAULT_SYNC_INTERVAL);
        if !(Duration::from_millis(10)..=Duration::from_secs(10)).contains(&sync_interval) {
            return Err(c.err("sync_interval", "must be 10ms..=10s"));
        }
        let instance_id = match &raw.instance_id {
            Some(id) => id.clone(),
            None => default_instance_id(first_listener),
        };
        if instance_id.is_empty()
            || instance_id.len() > MAX_INSTANCE_ID
            || !instance_id.bytes().all(|b| b.is_ascii_graphic())
            || instance_id == TOTAL_FIELD
        {
            return Err(c.err(
                "instance_id",
                format!(
                    "{instance_id:?}: must be 1..={MAX_INSTANCE_ID} printable ASCII characters without spaces, not {TOTAL_FIELD:?}"
                ),
            ));
        }
        let on_store_failure = match raw
            .on_store_failure
            .as_deref()
            .unwrap_or(DEFAULT_ON_STORE_FAILURE)
        {
            "local_share" => StoreFailure::LocalShare,
            "open" => StoreFailure::Open,
            "closed" => StoreFailure::Closed,
            other => {
                return Err(c.err(
                    "on_store_failure",
                    format!("unknown policy {other:?} (expected local_share, open or closed)"),
                ));
            }
        };
        let timeout = |field: &str, v, default| -> R<Duration> {
            let d = c.dur(field, v, default, Zero::Refused)?;
            if d > Duration::from_secs(60) {
                return Err(c.err(field, "must be at most 60s"));
            }
            Ok(d)
        };
        Ok(Some(ClusterConfig {
            redis_url,
            sync_interval,
            instance_id,
            on_store_failure,
            connect_timeout: timeout(
                "connect_timeout",
                raw.connect_timeout,
                DEFAULT_CLUSTER_CONNECT_TIMEOUT,
            )?,
            read_timeout: timeout(
                "read_timeout",
                raw.read_timeout,
                DEFAULT_CLUSTER_READ_TIMEOUT,
            )?,
            write_timeout: timeout(
                "write_timeout",
                raw.write_timeout,
                DEFAULT_CLUSTER_WRITE_TIMEOUT,
            )?,
        }))
    }
}

/// `redis://[user:password@]HOST:PORT[/DB]` or `unix:///path` (no TLS: the `redis`
/// crate is built without it).
fn check_redis_url(u: &str) -> Result<(), String> {
    if let Some(path) = u.strip_prefix("unix://") {
        return if path.starts_with('/') {
            Ok(())
        } else {
            Err(format!("{u:?}: expected unix:///absolute/path"))
        };
    }
    let Some(rest) = u.strip_prefix("redis://") else {
        return Err(format!(
            "{u:?}: expected redis://HOST:PORT[/DB] or unix:///path (rediss:// is not supported)"
        ));
    };
    let hostport = rest.rsplit('@').next().unwrap_or(rest);
    let (hostport, db) = hostport.split_once('/').unwrap_or((hostport, ""));
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err(format!("{u:?}: database {db:?} is not a number"));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{u:?}: expected HOST:PORT after redis://")),
    }
}

/// The first listener's `host:port`; an unspecified address (`0.0.0.0`, `::`) is named by
/// the machine's host name, so that instances on different machines differ.
fn default_instance_id(first: Option<SocketAddr>) -> String {
    match first {
        Some(a) if a.ip().is_unspecified() => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default();
            let host = if host.is_empty() { "localhost" } else { &host };
            format!("{host}:{}", a.port())
        }
        Some(a) => a.to_string(),
        None => "tollgate".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testutil::{SERVERS, err_at, ok};
    use crate::config::{ClusterConfig, StoreFailure};
    use std::time::Duration;

    fn with(body: &str) -> String {
        format!("listen = [\"127.0.0.1:8081\"]\n{SERVERS}[cluster]\n{body}")
    }

    #[test]
    fn absent_is_off_and_defaults_apply() {
        assert!(ok(SERVERS).cluster.is_none());
        let c = ok(&with("redis_url = \"redis://127.0.0.1:6379\"\n"))
            .cluster
            .unwrap();
        assert_eq!(c.sync_interval, Duration::from_millis(100));
        assert_eq!(c.instance_id, "127.0.0.1:8081");
        assert_eq!(c.on_store_failure, StoreFailure::LocalShare);
        assert_eq!(c.read_timeout, Duration::from_millis(100));
        let c = ok(&with(
            "redis_url = \"redis://u:p@db.example:6380/2\"\nsync_interval = \"250ms\"\ninstance_id = \"a-1\"\non_store_failure = \"closed\"\nconnect_timeout = \"1s\"\n",
        ))
        .cluster
        .unwrap();
        assert_eq!(
            (c.instance_id.as_str(), c.on_store_failure),
            ("a-1", StoreFailure::Closed)
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
    }

    /// The commented `[cluster]` block of config/tollgate.toml, uncommented, is valid and
    /// shows the defaults.
    #[test]
    fn shipped_example_shows_the_defaults() {
        let text = std::fs::read_to_string(crate::config::testutil::manifest_file(
            "config/tollgate.toml",
        ))
        .unwrap();
        let block = text
            .split("# [cluster]\n")
            .nth(1)
            .expect("a [cluster] example");
        let fields: String = block
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(
            fields.contains("redis_url") && fields.contains("write_timeout"),
            "{fields}"
        );
        let c = ok(&with(&fields)).cluster.unwrap();
        let d = ok(&with("redis_url = \"redis://127.0.0.1:6379\"\n"))
            .cluster
            .unwrap();
        assert_eq!(c.instance_id, "gw-1:8080");
        assert_eq!(
            ClusterConfig {
                instance_id: d.instance_id.clone(),
                ..c
            },
            d
        );
    }

    #[test]
    fn bad_values_name_their_line_and_field() {
        // The [cluster] table starts after listen and SERVERS' lines.
        let base = 1 + SERVERS.lines().count() + 1;
        err_at(&with("sync_interval = \"1s\"\n"), base, "cluster.redis_url");
        err_at(
            &with("redis_url = \"http://x:1\"\n"),
            base + 1,
            "cluster.redis_url",
        );
        err_at(
            &with("redis_url = \"redis://nohost\"\n"),
            base + 1,
            "cluster.redis_url",
        );
        let url = "redis_url = \"redis://127.0.0.1:6379\"\n";
        err_at(
            &with(&format!("{url}sync_interval = \"5ms\"\n")),
            base + 2,
            "cluster.sync_interval",
        );
        err_at(
            &with(&format!("{url}instance_id = \"t\"\n")),
            base + 2,
            "cluster.instance_id",
        );
        err_at(
            &with(&format!("{url}instance_id = \"a b\"\n")),
            base + 2,
            "cluster.instance_id",
        );
        err_at(
            &with(&format!("{url}on_store_failure = \"maybe\"\n")),
            base + 2,
            "cluster.on_store_failure",
        );
        err_at(
            &with(&format!("{url}read_timeout = \"0s\"\n")),
            base + 2,
            "cluster.read_timeout",
        );
        err_at(
            &with(&format!("{url}bogus = 1\n")),
            base + 2,
            "cluster.bogus",
        );
    }
}
