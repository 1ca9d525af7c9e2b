//! Upstream nodes as one core sees them: balancing, per-core keep-alive pools (a pooled
//! connection is reused only while it is clean: not readable, not closed), passive
//! ejection, the health state fed by active probes, and the upstream stream type (plain or
//! TLS).
//!
//! Owns: `Upstreams` (per core, inside the worker, never shared), `UpConn`, the probe.
//! Must not touch: client connections, limits. Each node is probed by one core, which sends
//! every result to the other cores (`proxy::health_loop`), so all cores share one up/down
//! view; passive ejection stays per core.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::bufio::{IoEnd, flush, read_append, write_all};
use std::sync::Arc;

use crate::config::{Balance, Config, UpstreamConfig};
use crate::http::{HeadLimits, ParseStatus, ResponseHead, parse_response};

/// A connection to an upstream node.
pub enum UpConn {
    Plain(TcpStream),
    /// The TLS stream and its socket's descriptor (for the pool's cleanliness check).
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
}

impl UpConn {
    fn raw_fd(&self) -> RawFd {
        match self {
            UpConn::Plain(s) => s.as_raw_fd(),
            UpConn::Tls(_, fd) => *fd,
        }
    }

    /// Whether [`readable_by`](Self::readable_by) can wait for an answer: plain connections
    /// only (over TLS, readable bytes may be a session ticket, not an answer).
    pub fn can_wait_readable(&self) -> bool {
        matches!(self, UpConn::Plain(_))
    }

    /// Waits until the upstream has sent something (or closed), at most until `deadline`.
    /// Consumes nothing, so cutting the wait short loses no byte. TLS connections return at
    /// once (see [`can_wait_readable`](Self::can_wait_readable)).
    pub async fn readable_by(&self, deadline: Instant) -> Result<(), IoEnd> {
        let UpConn::Plain(s) = self else {
            return Ok(());
        };
        match monoio::time::timeout_at(deadline.into(), s.readable(false)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(IoEnd::Failed),
            Err(_) => Err(IoEnd::TimedOut),
        }
    }

    /// The socket to watch for an early answer while a request body is being sent
    /// (see [`answered_early`]). Plain connections only: over TLS the bytes waiting may be
    /// a session ticket sent after the handshake, so TLS upstreams are never judged to
    /// have answered early (the upload waits for `upstream.idle_timeout` as before).
    pub fn early_answer_fd(&self) -> Option<RawFd> {
        match self {
            UpConn::Plain(s) => Some(s.as_raw_fd()),
            UpConn::Tls(..) => None,
        }
    }
}

/// Whether an idle pooled connection can carry a request: nothing is waiting to be read
/// and the upstream has not closed. Bytes waiting on an idle connection are an answer to no
/// request (a backend out of step, or one that answered before reading a body): reusing it
/// would hand them to the next client as its response.
fn idle_is_clean(fd: RawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut b = [0u8; 1];
    matches!(
        recv(fd, &mut b, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Err(nix::errno::Errno::EAGAIN)
    )
}

/// Whether the upstream on `fd` has sent anything (or closed) while it is still being sent a
/// request body: an early answer. Looks without consuming (`MSG_PEEK`) and without waiting;
/// an interim `1xx` head is not an answer.
pub fn answered_early(fd: RawFd) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    let mut b = [0u8; 12];
    match recv(fd, &mut b, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(0) => true, // closed: whatever it sent before is waiting to be read
        // Too few bytes to tell an interim head from a final one: look again next time.
        Ok(n) if n < 10 => false,
        Ok(_) => !(b.starts_with(b"HTTP/1.") && b[9] == b'1'),
        Err(_) => false,
    }
}

impl AsyncReadRent for UpConn {
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpConn::Plain(s) => s.read(buf).await,
            UpConn::Tls(s, _) => s.read(buf).await,
        }
    }
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpConn::Plain(s) => s.readv(buf).await,
            UpConn::Tls(s, _) => s.readv(buf).await,
        }
    }
}

impl AsyncWriteRent for UpConn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpConn::Plain(s) => s.write(buf).await,
            UpConn::Tls(s, _) => s.write(buf).await,
        }
    }
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        match self {
            UpConn::Plain(s) => s.writev(buf).await,
            UpConn::Tls(s, _) => s.writev(buf).await,
        }
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            UpConn::Plain(s) => s.flush().await,
            UpConn::Tls(s, _) => s.flush().await,
        }
    }
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match self {
            UpConn::Plain(s) => s.shutdown().await,
            UpConn::Tls(s, _) => s.shutdown().await,
        }
    }
}

/// TLS settings for upstream connections.
#[derive(Clone)]
pub struct UpstreamTls {
    pub connector: monoio_rustls::TlsConnector,
    /// Fixed server name, or None = the host part of each node's name.
    pub server_name: Option<rustls_pki_types::ServerName<'static>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    Refused,
    Timeout,
    Tls,
    /// This host is out of a resource (file descriptors, buffers, memory): not the node's
    /// fault, so it never counts against the node's health.
    Local,
}

impl ConnectError {
    fn of(e: &std::io::Error) -> ConnectError {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => ConnectError::Local,
            _ => ConnectError::Refused,
        }
    }
}

pub struct Node {
    pub name: String,
    pub addr: SocketAddr,
    /// Active health state (starts up).
    pub up: bool,
    ok_streak: u32,
    fail_streak: u32,
    passive_fails: u32,
    ejected_until: Option<Instant>,
    pub outstanding: u32,
    idle: Vec<(UpConn, Instant)>,
    pub checks_failed: u64,
    /// Pooled connections closed instead of reused (expired, readable or closed).
    pub pool_discarded: u64,
}

pub struct Upstreams {
    pub nodes: Vec<Node>,
    rr: usize,
    /// The core's current config snapshot (the same `Arc` its `Snapshot` holds, swapped on
    /// reload by [`set_config`](Self::set_config)): timeouts, pool, health and balance
    /// settings are read from it, never copied. The node list is fixed at start.
    cfg: Arc<Config>,
    pub tls: Option<UpstreamTls>,
}

impl Upstreams {
    pub fn new(cfg: Arc<Config>, tls: Option<UpstreamTls>) -> Upstreams {
        Upstreams {
            nodes: cfg
                .upstream
                .servers
                .iter()
                .map(|s| Node {
                    name: s.name.clone(),
                    addr: s.addr,
                    up: true,
                    ok_streak: 0,
                    fail_streak: 0,
                    passive_fails: 0,
                    ejected_until: None,
                    outstanding: 0,
                    idle: Vec::new(),
                    checks_failed: 0,
                    pool_discarded: 0,
                })
                .collect(),
            rr: 0,
            cfg,
            tls,
        }
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg.upstream
    }

    /// Follows a reload (the node list stays as it was started).
    pub fn set_config(&mut self, cfg: Arc<Config>) {
        self.cfg = cfg;
    }

    fn usable(&self, i: usize, now: Instant) -> bool {
        let n = &self.nodes[i];
        n.up && n.ejected_until.is_none_or(|t| now >= t)
    }

    /// Picks a usable node not in `exclude`. None = no healthy node (→ 503).
    pub fn pick(&mut self, exclude: &[usize], now: Instant) -> Option<usize> {
        let n = self.nodes.len();
        match self.cfg.upstream.balance {
            Balance::RoundRobin => {
                for k in 0..n {
                    let i = (self.rr + k) % n;
                    if !exclude.contains(&i) && self.usable(i, now) {
                        self.rr = (i + 1) % n;
                        return Some(i);
                    }
                }
                None
            }
            Balance::LeastOutstanding => {
                let mut best: Option<usize> = None;
                for k in 0..n {
                    let i = (self.rr + k) % n;
                    if exclude.contains(&i) || !self.usable(i, now) {
                        continue;
                    }
                    if best.is_none_or(|b| self.nodes[i].outstanding < self.nodes[b].outstanding) {
                        best = Some(i);
                    }
                }
                if let Some(b) = best {
                    self.rr = (b + 1) % n;
                }
                best
            }
        }
    }

    /// A pooled idle connection to `node`, if one is fresh enough and clean; the others are
    /// closed (and counted in `pool_discarded`).
    pub fn take_idle(&mut self, node: usize, now: Instant) -> Option<UpConn> {
        let ttl = self.cfg.upstream.pool_idle_timeout;
        let n = &mut self.nodes[node];
        while let Some((conn, since)) = n.idle.pop() {
            if now.duration_since(since) < ttl && idle_is_clean(conn.raw_fd()) {
                return Some(conn);
            }
            n.pool_discarded += 1;
        }
        None
    }

    /// The TLS connector and server name for a new connection to `node` (None = plain).
    pub fn tls_for(
        &self,
        node: usize,
    ) -> Option<(
        monoio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )> {
        let t = self.tls.as_ref()?;
        Some((t.connector.clone(), self.server_name_for(node)?))
    }

    pub fn put_idle(&mut self, node: usize, conn: UpConn, now: Instant) {
        let max = self.cfg.upstream.pool_max_idle;
        let n = &mut self.nodes[node];
        if n.idle.len() < max && n.up {
            n.idle.push((conn, now));
        }
    }

    pub fn connect_ok(&mut self, node: usize) {
        self.nodes[node].passive_fails = 0;
    }

    /// Passive ejection: after `passive_fail_threshold` consecutive connect failures.
    pub fn connect_failed(&mut self, node: usize, now: Instant) {
        let thr = self.cfg.upstream.passive_fail_threshold.max(1);
        let dur = self.cfg.upstream.passive_eject_duration;
        let n = &mut self.nodes[node];
        n.passive_fails += 1;
        if n.passive_fails >= thr {
            n.ejected_until = Some(now + dur);
            n.passive_fails = 0;
            // Only checks that pass after the ejection may bring it back early.
            n.ok_streak = 0;
            n.idle.clear();
            log::warn!(
                "upstream {} ejected for {:?} after connect failures",
                n.name,
                dur
            );
        }
    }

    /// Records an active health-check result.
    pub fn health_result(&mut self, node: usize, ok: bool) {
        let rise = self.cfg.upstream.health.rise.max(1);
        let fall = self.cfg.upstream.health.fall.max(1);
        let n = &mut self.nodes[node];
        if ok {
            n.fail_streak = 0;
            n.ok_streak += 1;
            if n.ok_streak >= rise {
                if !n.up {
                    n.up = true;
                    log::info!("upstream {} is up", n.name);
                } else if n.ejected_until.take().is_some() {
                    // Passively ejected while its checks never failed `fall` times: the
                    // checks since the ejection passed, so it is back before the duration.
                    log::info!("upstream {} is back (health checks pass)", n.name);
                }
                n.ejected_until = None;
            }
        } else {
            n.checks_failed += 1;
            n.ok_streak = 0;
            n.fail_streak += 1;
            if n.up && n.fail_streak >= fall {
                n.up = false;
                n.idle.clear();
                log::warn!("upstream {} is down (health check)", n.name);
            }
        }
    }

    pub fn server_name_for(&self, node: usize) -> Option<rustls_pki_types::ServerName<'static>> {
        let tls = self.tls.as_ref()?;
        if let Some(n) = &tls.server_name {
            return Some(n.clone());
        }
        let name = &self.nodes[node].name;
        let host = name.rsplit_once(':').map(|(h, _)| h).unwrap_or(name);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        rustls_pki_types::ServerName::try_from(host.to_string()).ok()
    }
}

/// Opens a new connection (with TLS if configured).
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<(
        monoio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
) -> Result<UpConn, ConnectError> {
    let tcp = match monoio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::of(&e)),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(UpConn::Plain(tcp)),
        Some((connector, name)) => {
            let fd = tcp.as_raw_fd();
            match monoio::time::timeout(timeout, connector.connect(name, tcp)).await {
                Err(_) => Err(ConnectError::Timeout),
                Ok(Err(e)) => {
                    log::warn!("upstream TLS to {addr} failed: {e}");
                    Err(ConnectError::Tls)
                }
                Ok(Ok(s)) => Ok(UpConn::Tls(Box::new(s), fd)),
            }
        }
    }
}

/// What one active health probe found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// The node answered with this status.
    Status(u16),
    /// The connect (or TLS handshake) failed.
    Unreachable(ConnectError),
    /// No complete, valid response head in time, or the connection broke.
    NoAnswer,
}

impl Probe {
    /// Healthy, unhealthy, or no verdict (this host was out of resources: not the node's
    /// fault, so its health is left as it was).
    pub fn verdict(self, healthy: &[u16]) -> Option<bool> {
        match self {
            Probe::Status(s) => Some(healthy.contains(&s)),
            Probe::Unreachable(ConnectError::Local) => None,
            Probe::Unreachable(_) | Probe::NoAnswer => Some(false),
        }
    }
}

/// One active health probe: `GET path`, reading the response head (in as many pieces as it
/// comes) within `timeout`.
pub async fn probe(
    addr: SocketAddr,
    host: &str,
    path: &str,
    timeout: Duration,
    tls: Option<(
        monoio_rustls::TlsConnector,
        rustls_pki_types::ServerName<'static>,
    )>,
) -> Probe {
    let deadline = Instant::now() + timeout;
    let mut conn = match connect(addr, timeout, tls).await {
        Ok(c) => c,
        Err(e) => return Probe::Unreachable(e),
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: tollgate-health\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    if write_all(&mut conn, &mut req, deadline).await.is_err()
        || flush(&mut conn, deadline).await.is_err()
    {
        return Probe::NoAnswer;
    }
    let mut buf = Vec::with_capacity(4096);
    let limits = HeadLimits {
        max_head_bytes: 16384,
        max_headers: 100,
    };
    let mut head = ResponseHead::new();
    loop {
        if read_append(&mut conn, &mut buf, 4096, deadline)
            .await
            .is_err()
        {
            return Probe::NoAnswer;
        }
        match parse_response(&buf, &limits, false, &mut head) {
            Ok(ParseStatus::Complete) => return Probe::Status(head.status),
            Ok(ParseStatus::Partial) => continue,
            Err(_) => return Probe::NoAnswer,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn ups(extra: &str) -> Upstreams {
        let text = format!(
            "[upstream]\npassive_fail_threshold = 1\npassive_eject_duration = \"10s\"\n{extra}\n\
             [upstream.health]\nrise = 2\nfall = 2\n\
             [[upstream.servers]]\naddr = \"127.0.0.1:9001\"\n\
             [[upstream.servers]]\naddr = \"127.0.0.1:9002\"\n"
        );
        let cfg = crate::config::validate::load_str(&text, Path::new("t.toml")).unwrap();
        Upstreams::new(std::sync::Arc::new(cfg), None)
    }

    #[test]
    fn round_robin_skips_ejected_and_down_nodes() {
        let mut u = ups("");
        let t0 = Instant::now();
        let picks: Vec<_> = (0..4).map(|_| u.pick(&[], t0).unwrap()).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
        u.connect_failed(0, t0);
        assert_eq!(u.pick(&[], t0), Some(1));
        assert_eq!(u.pick(&[], t0), Some(1));
        assert_eq!(u.pick(&[1], t0), None, "the other node is ejected");
        // The ejection ends by itself after its duration.
        let later = t0 + Duration::from_secs(10);
        assert!([u.pick(&[], later), u.pick(&[], later)].contains(&Some(0)));
        // Health checks: `fall` failures take a node down, `rise` passes bring it back.
        u.health_result(1, false);
        assert_eq!(u.pick(&[0], later), Some(1), "one failure is not `fall`");
        u.health_result(1, false);
        assert_eq!(u.pick(&[0], later), None, "down after two");
        u.health_result(1, true);
        assert_eq!(u.pick(&[0], later), None, "one pass is not `rise`");
        u.health_result(1, true);
        assert_eq!(u.pick(&[0], later), Some(1), "up after two");
    }

    /// The settings are the snapshot's, not a copy: a reload changes them (they used to
    /// diverge: the copy kept the start-up values).
    #[test]
    fn a_reload_changes_the_settings_upstreams_use() {
        let mut u = ups("");
        let t0 = Instant::now();
        u.connect_failed(0, t0);
        assert_eq!(u.pick(&[], t0), Some(1), "threshold 1: ejected at once");
        let text = "[upstream]\npassive_fail_threshold = 3\n[[upstream.servers]]\naddr = \"127.0.0.1:9001\"\n[[upstream.servers]]\naddr = \"127.0.0.1:9002\"\n";
        let cfg = crate::config::validate::load_str(text, Path::new("t.toml")).unwrap();
        u.set_config(std::sync::Arc::new(cfg));
        u.connect_failed(1, t0);
        assert_eq!(
            u.pick(&[0], t0),
            Some(1),
            "threshold 3 after the reload: still in"
        );
        assert_eq!(u.config().passive_fail_threshold, 3);
    }

    #[test]
    fn passing_health_checks_end_a_passive_ejection_early() {
        let mut u = ups("");
        let t0 = Instant::now();
        // Checks passed before the ejection do not count.
        u.health_result(0, true);
        u.health_result(0, true);
        u.connect_failed(0, t0);
        assert_eq!(u.pick(&[1], t0), None);
        u.health_result(0, true);
        assert_eq!(
            u.pick(&[1], t0),
            None,
            "one pass after the ejection is not `rise`"
        );
        u.health_result(0, true);
        assert_eq!(u.pick(&[1], t0), Some(0), "back before the 10 s are over");
    }

    #[test]
    fn least_outstanding_prefers_the_idler_node() {
        let mut u = ups("balance = \"least_outstanding\"");
        let t0 = Instant::now();
        u.nodes[0].outstanding = 3;
        u.nodes[1].outstanding = 1;
        assert_eq!(u.pick(&[], t0), Some(1));
        assert_eq!(u.pick(&[], t0), Some(1));
        u.nodes[1].outstanding = 5;
        assert_eq!(u.pick(&[], t0), Some(0));
        assert_eq!(u.pick(&[0], t0), Some(1), "excluded nodes are skipped");
    }
}
