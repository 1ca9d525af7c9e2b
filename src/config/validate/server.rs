//! Validation of the proxy's own side: top-level fields, `[tls]` (HTTPS listeners and
//! certificates), `[admin]`, one address per listener, `[http]` and `[access_log]`.
//!
//! Owns: those sections' checks and defaults. Must not touch: upstream or limits settings.

use super::{R, Validator, Zero, resolve_path};
use crate::config::doc::{Seg, p, render_path};
use crate::config::file::{
    DEFAULT_ACCESS_LOG_BUFFER, DEFAULT_ACCESS_LOG_FLUSH, DEFAULT_ACCESS_LOG_QUEUE,
    DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_TOKEN, DEFAULT_ALLOW_PUBLIC_WITHOUT_TOKEN,
    DEFAULT_CLIENT_HEAD_TIMEOUT, DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_LISTEN,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS,
    DEFAULT_MAX_REQUESTS_PER_CONNECTION, DEFAULT_PIN_WORKERS, DEFAULT_RELOAD_POLL_INTERVAL,
    DEFAULT_SHUTDOWN_DELAY, DEFAULT_SHUTDOWN_GRACE, DEFAULT_TLS_LISTEN,
    DEFAULT_TLS_RELOAD_INTERVAL, DEFAULT_X_FORWARDED_FOR, RawAccessLog, RawAdmin, RawConfig,
    RawHttp, RawTls,
};
use crate::config::{AccessLogConfig, AdminConfig, CertConfig, HttpConfig, TlsListenConfig};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The top-level fields of `Config`.
pub(super) struct TopLevel {
    pub workers: usize,
    pub pin_workers: bool,
    pub listen: Vec<SocketAddr>,
    pub shutdown_grace: Duration,
    pub shutdown_delay: Duration,
    pub reload_poll_interval: Duration,
}

impl Validator<'_> {
    pub(super) fn top_level(&self, raw: &RawConfig) -> R<TopLevel> {
        let top = self.section(&[], raw);
        let workers = match raw.workers {
            Some(_) => int!(top.workers, 1, 1..=4096) as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let listen = match &raw.listen {
            Some(l) => self.listeners(l, &p!["listen"])?,
            None => vec![DEFAULT_LISTEN.parse().expect("valid default")],
        };
        let shutdown_grace = dur_or_zero!(top.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let shutdown_delay = dur_or_zero!(top.shutdown_delay, DEFAULT_SHUTDOWN_DELAY);
        let reload_poll_interval =
            dur_or_zero!(top.reload_poll_interval, DEFAULT_RELOAD_POLL_INTERVAL);
        Ok(TopLevel {
            workers,
            pin_workers: raw.pin_workers.unwrap_or(DEFAULT_PIN_WORKERS),
            listen,
            shutdown_grace,
            shutdown_delay,
            reload_poll_interval,
        })
    }

    /// `[tls]`: None when absent or when it lists no listener.
    pub(super) fn tls(&self, t: Option<&RawTls>, base: &Path) -> R<Option<TlsListenConfig>> {
        let Some(t) = t else { return Ok(None) };
        let tls_listen = match &t.listen {
            Some(l) => self.listeners(l, &p!["tls", "listen"])?,
            None => vec![DEFAULT_TLS_LISTEN.parse().expect("valid default")],
        };
        let tls = self.section(&["tls"], t);
        let reload_interval = dur_or_zero!(tls.reload_interval, DEFAULT_TLS_RELOAD_INTERVAL);
        let mut certs = Vec::with_capacity(t.certs.len());
        for (i, c) in t.certs.iter().enumerate() {
            let cert_file = self.existing_file(base, &c.cert, &p!["tls", "certs", i, "cert"])?;
            let key_file = self.existing_file(base, &c.key, &p!["tls", "certs", i, "key"])?;
            for (j, n) in c.server_names.iter().enumerate() {
                self.server_name(n, &p!["tls", "certs", i, "server_names", j])?;
            }
            certs.push(CertConfig {
                cert_file,
                key_file,
                server_names: c.server_names.clone(),
            });
        }
        if tls_listen.is_empty() {
            Ok(None)
        } else if certs.is_empty() {
            Err(self.err(
                &p!["tls", "certs"],
                "HTTPS listeners need at least one [[tls.certs]] entry",
            ))
        } else {
            Ok(Some(TlsListenConfig {
                listen: tls_listen,
                certs,
                reload_interval,
            }))
        }
    }

    pub(super) fn admin(&self, a: &RawAdmin) -> R<AdminConfig> {
        let listen_raw = a.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN);
        let listen = if listen_raw == "off" {
            None
        } else {
            Some(self.socket_addr(listen_raw, &p!["admin", "listen"])?)
        };
        let token = a
            .token
            .clone()
            .unwrap_or_else(|| DEFAULT_ADMIN_TOKEN.to_string());
        if token.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(self.err(
                &p!["admin", "token"],
                "the token must be printable ASCII without spaces",
            ));
        }
        let public = listen.is_some_and(|a| !a.ip().is_loopback());
        if public
            && token.is_empty()
            && !a
                .allow_public_without_token
                .unwrap_or(DEFAULT_ALLOW_PUBLIC_WITHOUT_TOKEN)
        {
            return Err(self.err(
                &p!["admin", "token"],
                format!(
                    "the admin listener {} is not on loopback: set a token (or, knowingly, \
                     admin.allow_public_without_token = true)",
                    listen_raw
                ),
            ));
        }
        Ok(AdminConfig {
            listen,
            token: (!token.is_empty()).then_some(token),
            allowed_hosts: a.allowed_hosts.clone().unwrap_or_default(),
        })
    }

    /// One socket address may be bound by only one listener.
    pub(super) fn unique_listeners(
        &self,
        listen: &[SocketAddr],
        tls: Option<&TlsListenConfig>,
        admin: &AdminConfig,
    ) -> R<()> {
        let mut seen: Vec<(SocketAddr, Vec<Seg>)> = Vec::new();
        let tls_listen: &[SocketAddr] = tls.map_or(&[], |t| &t.listen);
        let all = listen
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, p!["listen", i].to_vec()))
            .chain(
                tls_listen
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (*a, p!["tls", "listen", i].to_vec())),
            )
            .chain(admin.listen.map(|a| (a, p!["admin", "listen"].to_vec())));
        for (addr, at) in all {
            if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                return Err(self.err(
                    &at,
                    format!("address {addr} is already used by {}", render_path(first)),
                ));
            }
            seen.push((addr, at));
        }
        Ok(())
    }

    pub(super) fn http(&self, h: &RawHttp) -> R<HttpConfig> {
        let h = self.section(&["http"], h);
        Ok(HttpConfig {
            max_head_bytes: int!(h.max_head_bytes, DEFAULT_MAX_HEAD_BYTES, 1024..=1 << 20) as usize,
            max_headers: int!(h.max_headers, DEFAULT_MAX_HEADERS, 1..=1024) as usize,
            client_idle_timeout: dur!(h.client_idle_timeout, DEFAULT_CLIENT_IDLE_TIMEOUT),
            client_head_timeout: dur!(h.client_head_timeout, DEFAULT_CLIENT_HEAD_TIMEOUT),
            x_forwarded_for: h.raw.x_forwarded_for.unwrap_or(DEFAULT_X_FORWARDED_FOR),
            max_requests_per_connection: h
                .raw
                .max_requests_per_connection
                .unwrap_or(DEFAULT_MAX_REQUESTS_PER_CONNECTION),
            max_connections: int!(h.max_connections, DEFAULT_MAX_CONNECTIONS, 1..=10_000_000)
                as usize,
            trusted_proxies: self.networks(
                h.raw.trusted_proxies.as_deref().unwrap_or_default(),
                &h.path("trusted_proxies"),
            )?,
        })
    }

    /// Addresses or CIDR networks (`10.0.0.0/8`, `127.0.0.1`, `::1`).
    pub(super) fn networks(&self, list: &[String], path: &[Seg]) -> R<Vec<ipnet::IpNet>> {
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let net = s
                .parse::<ipnet::IpNet>()
                .ok()
                .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from));
            let Some(net) = net else {
                let mut at = path.to_vec();
                at.push(Seg::Index(i));
                return Err(self.err(
                    &at,
                    format!("{s:?} is not an IP address or network (e.g. \"10.0.0.0/8\")"),
                ));
            };
            out.push(net.trunc());
        }
        Ok(out)
    }

    pub(super) fn access_log(&self, al: &RawAccessLog, base: &Path) -> R<AccessLogConfig> {
        let path = match al.path.as_deref() {
            None | Some("") => None,
            Some(p) => Some(resolve_path(base, p)),
        };
        let al = self.section(&["access_log"], al);
        Ok(AccessLogConfig {
            path,
            buffer_bytes: int!(al.buffer_bytes, DEFAULT_ACCESS_LOG_BUFFER, 4096..=16 << 20)
                as usize,
            flush_interval: dur!(al.flush_interval, DEFAULT_ACCESS_LOG_FLUSH),
            queue: int!(al.queue, DEFAULT_ACCESS_LOG_QUEUE, 1..=4096) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testutil::{SERVERS, TempDir, err_at, ok};
    use crate::config::{load, load_str};
    use std::net::SocketAddr;
    use std::path::Path;
    use std::time::Duration;

    #[test]
    fn bad_addresses() {
        let e = err_at(
            "[[upstream.servers]]\naddr = \"foo\"\n",
            2,
            "upstream.servers[0].addr",
        );
        assert!(
            e.to_string().ends_with(
                ": invalid address \"foo\" (expected HOST:PORT, e.g. \"127.0.0.1:9000\")"
            ),
            "{e}"
        );
        err_at(
            "[[upstream.servers]]\naddr = \"127.0.0.1:99999\"\n",
            2,
            "upstream.servers[0].addr",
        );
        err_at(
            &format!("listen = [\"0.0.0.0:80\",\n  \"nowhere\"]\n{SERVERS}"),
            2,
            "listen[1]",
        );
        err_at(
            &format!("{SERVERS}[admin]\nlisten = \"localhost\"\n"),
            4,
            "admin.listen",
        );
        let e = err_at(
            &format!(
                "listen = [\"127.0.0.1:7000\"]\n{SERVERS}[admin]\nlisten = \"127.0.0.1:7000\"\n"
            ),
            5,
            "admin.listen",
        );
        assert!(e.to_string().contains("already used by listen[0]"), "{e}");
        err_at(
            "[[upstream.servers]]\naddr = \"127.0.0.1:1\"\n[[upstream.servers]]\naddr = \"127.0.0.1:1\"\n",
            4,
            "upstream.servers[1].addr",
        );
        let c = ok(&format!(
            "{SERVERS}[admin]\nlisten = \"off\"\ntoken = \"s3cret\"\n"
        ));
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        // Host names are resolved at load.
        let c = ok("[[upstream.servers]]\naddr = \"localhost:9000\"\n");
        assert_eq!(c.upstream.servers[0].name, "localhost:9000");
        assert!(c.upstream.servers[0].addr.ip().is_loopback());
        assert_eq!(c.upstream.servers[0].addr.port(), 9000);
    }

    #[test]
    fn listeners_may_be_only_tls_but_not_none() {
        let dir = TempDir::new("tls");
        dir.write("c.pem", "x");
        dir.write("c.key", "x");
        let path = dir.write(
            "t.toml",
            &format!("listen = []\n{SERVERS}[tls]\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"c.key\"\nserver_names = [\"s3.example.com\"]\n"),
        );
        let c = load(&path).unwrap();
        assert!(c.listen.is_empty());
        let t = c.tls.unwrap();
        assert_eq!(
            t.listen,
            vec!["0.0.0.0:8443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(t.certs[0].server_names, ["s3.example.com"]);
        assert_eq!(t.reload_interval, Duration::ZERO);
        let e = err_at(&format!("listen = []\n{SERVERS}"), 1, "listen");
        assert!(e.to_string().contains("no listeners"), "{e}");
    }

    #[test]
    fn missing_tls_files() {
        let dir = TempDir::new("tlsmissing");
        dir.write("c.pem", "x");
        let path = dir.write(
            "t.toml",
            &format!("{SERVERS}[tls]\n\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"missing.key\"\n"),
        );
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(7), Some("tls.certs[0].key")),
            "{e}"
        );
        assert!(e.to_string().contains("file not found"), "{e}");
        assert!(e.to_string().contains("missing.key"), "{e}");
        let path = dir.write(
            "u.toml",
            &format!(
                "{SERVERS}[upstream.tls]\nca_file = \"ca.pem\"\nserver_name = \"minio.internal\"\n"
            ),
        );
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(4), Some("upstream.tls.ca_file")),
            "{e}"
        );
        dir.write("ca.pem", "x");
        let c = load(&path).unwrap();
        let t = c.upstream.tls.unwrap();
        assert_eq!(t.ca_file, dir.0.join("ca.pem"));
        assert_eq!(t.server_name.as_deref(), Some("minio.internal"));
        let path = dir.write(
            "v.toml",
            &format!("{SERVERS}[tls]\nlisten = [\"0.0.0.0:8443\"]\n"),
        );
        let e = load(&path).unwrap_err();
        assert_eq!(e.field(), Some("tls.certs"), "{e}");
    }

    #[test]
    fn access_log_options() {
        let c = load_str(
            &format!("{SERVERS}[access_log]\npath = \"logs/access.log\"\n"),
            Path::new("/etc/tollgate/t.toml"),
        )
        .unwrap();
        let a = &c.access_log;
        assert_eq!(
            a.path.as_deref(),
            Some(Path::new("/etc/tollgate/logs/access.log"))
        );
        assert_eq!(
            (a.buffer_bytes, a.flush_interval, a.queue),
            (65536, Duration::from_secs(1), 64)
        );
        let c = ok(&format!(
            "{SERVERS}[access_log]\npath = \"/var/log/a.log\"\nbuffer_bytes = 4096\nflush_interval = \"250ms\"\nqueue = 8\n"
        ));
        let a = &c.access_log;
        assert_eq!(a.path.as_deref(), Some(Path::new("/var/log/a.log")));
        assert_eq!(
            (a.buffer_bytes, a.flush_interval, a.queue),
            (4096, Duration::from_millis(250), 8)
        );
        assert_eq!(
            ok(&format!("{SERVERS}[access_log]\npath = \"\"\n"))
                .access_log
                .path,
            None
        );
        err_at(
            &format!("{SERVERS}[access_log]\nbuffer_bytes = 100\n"),
            4,
            "access_log.buffer_bytes",
        );
        err_at(
            &format!("{SERVERS}[access_log]\nflush_interval = \"0s\"\n"),
            4,
            "access_log.flush_interval",
        );
        err_at(
            &format!("{SERVERS}[access_log]\nqueue = 0\n"),
            4,
            "access_log.queue",
        );
    }
}
