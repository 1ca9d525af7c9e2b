//! Upstream nodes as one core sees them: balancing, per-core keep-alive pools (a pooled
//! connection is reused only while it is clean: not readable, not closed; the housekeeping
//! sweep, [`Upstreams::expire_idle`], closes the unclean and the expired ones), passive
//! ejection, the health state fed by active probes, and the upstream stream type (plain or
//! TLS).
//!
//! Owns: `Upstreams` (per core, inside the worker, never shared), `UpConn`, the probe and
//! what its outcome means (`Probe::reason`), this core's per-node stats (`stats::NodeStats`,
//! written here only). Must not touch: client connections, limits. Each node is probed by
//! one core, which sends every result to the other cores (`proxy::health_loop`), so all
//! cores share one up/down view, and which alone logs a transition; passive ejection stays
//! per core.
//!
//! Nodes follow reloads ([`Upstreams::set_config`]): a node is known by its stable id
//! (`UpstreamServer::id`, the id health messages carry), and its slot in `nodes` (the
//! index the data path holds across awaits) never changes meaning: a server that leaves the
//! config becomes a tombstone in its slot (never picked again, its idle pool closed, each
//! in-flight request finishing on its own connection, which is then closed), and a new
//! server gets a new slot at the end.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{AsyncReadRent, AsyncWriteRent};
use monoio::net::TcpStream;

use super::bufio::{IoEnd, flush, read_append, write_all};
use super::deadline::with_deadline;
use std::sync::Arc;

use crate::config::{Balance, Config, UpstreamConfig, UpstreamServer, status_ranges};
use crate::http::{HeadLimits, ParseStatus, ResponseHead, parse_response};
use crate::stats::{self, CoreStats, NodeStats};

/// A connection to an upstream node, timing each answer (see [`UpConn::take_head_time`]).
pub struct UpConn {
    io: UpIo,
    /// When the last request byte was written, until the first answer byte is read.
    wrote_at: Option<Instant>,
    head_time: Option<Duration>,
}

enum UpIo {
    Plain(TcpStream),
    /// The TLS stream and its socket's descriptor (for the pool's cleanliness check).
    Tls(Box<monoio_rustls::ClientTlsStream<TcpStream>>, RawFd),
}

impl UpConn {
    fn new(io: UpIo) -> UpConn {
        UpConn {
            io,
            wrote_at: None,
            head_time: None,
        }
    }

    /// The time from the last request byte written to the first answer byte read, for the
    /// answer read last (an interim `100` is an answer too); taken once.
    pub fn take_head_time(&mut self) -> Option<Duration> {
        self.head_time.take()
    }

    fn raw_fd(&self) -> RawFd {
        match &self.io {
            UpIo::Plain(s) => s.as_raw_fd(),
            UpIo::Tls(_, fd) => *fd,
        }
    }

    fn wrote(&mut self, n: usize) {
        if n > 0 {
            self.wrote_at = Some(Instant::now());
        }
    }

    fn read_done(&mut self, n: usize) {
        if n > 0 {
            if let Some(t) = self.wrote_at.take() {
                self.head_time = Some(t.elapsed());
            }
        }
    }

    /// Whether [`readable_by`](Self::readable_by) can wait for an answer: plain connections
    /// only (over TLS, readable bytes may be a session ticket, not an answer).
    pub fn can_wait_readable(&self) -> bool {
        matches!(self.io, UpIo::Plain(_))
    }

    /// Waits until the upstream has sent something (or closed), at most until `deadline`.
    /// Consumes nothing, so cutting the wait short loses no byte. TLS connections return at
    /// once (see [`can_wait_readable`](Self::can_wait_readable)).
    pub async fn readable_by(&self, deadline: Instant) -> Result<(), IoEnd> {
        let UpIo::Plain(s) = &self.io else {
            return Ok(());
        };
        let ready = std::pin::pin!(s.readable(false));
        match with_deadline(deadline, ready).await {
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
        match &self.io {
            UpIo::Plain(s) => Some(s.as_raw_fd()),
            UpIo::Tls(..) => None,
        }
    }
}

/// A connection in a node's idle pool.
struct Pooled {
    conn: UpConn,
    since: Instant,
}

impl Pooled {
    /// Fresh enough and clean (see [`idle_is_clean`]).
    fn usable(&self, now: Instant, ttl: Duration) -> bool {
        now.duration_since(self.since) < ttl && idle_is_clean(self.conn.raw_fd())
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
        let r = match &mut self.io {
            UpIo::Plain(s) => s.read(buf).await,
            UpIo::Tls(s, _) => s.read(buf).await,
        };
        self.read_done(*r.0.as_ref().unwrap_or(&0));
        r
    }
    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        let r = match &mut self.io {
            UpIo::Plain(s) => s.readv(buf).await,
            UpIo::Tls(s, _) => s.readv(buf).await,
        };
        self.read_done(*r.0.as_ref().unwrap_or(&0));
        r
    }
}

impl AsyncWriteRent for UpConn {
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let r = match &mut self.io {
            UpIo::Plain(s) => s.write(buf).await,
            UpIo::Tls(s, _) => s.write(buf).await,
        };
        self.wrote(*r.0.as_ref().unwrap_or(&0));
        r
    }
    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        let r = match &mut self.io {
            UpIo::Plain(s) => s.writev(buf).await,
            UpIo::Tls(s, _) => s.writev(buf).await,
        };
        self.wrote(*r.0.as_ref().unwrap_or(&0));
        r
    }
    async fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.io {
            UpIo::Plain(s) => s.flush().await,
            UpIo::Tls(s, _) => s.flush().await,
        }
    }
    async fn shutdown(&mut self) -> std::io::Result<()> {
        match &mut self.io {
            UpIo::Plain(s) => s.shutdown().await,
            UpIo::Tls(s, _) => s.shutdown().await,
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
    /// The stable id (see the module header); health messages carry it.
    pub id: u16,
    pub name: String,
    pub addr: SocketAddr,
    /// Active health state (starts up).
    pub up: bool,
    /// No longer in the config: never picked; its slot stays (a tombstone) so that the
    /// index held by an in-flight request keeps naming this node.
    pub removed: bool,
    ok_streak: u32,
    fail_streak: u32,
    passive_fails: u32,
    ejected_until: Option<Instant>,
    pub outstanding: u32,
    /// Oldest first (a pool is used last in, first out).
    idle: Vec<Pooled>,
    pub checks_failed: u64,
    /// Pooled connections closed instead of reused (expired, readable or closed; counted
    /// when they leave the pool).
    pub pool_discarded: u64,
}

impl Node {
    fn new(s: &UpstreamServer) -> Node {
        Node {
            id: s.id,
            name: s.name.clone(),
            addr: s.addr,
            up: true,
            removed: false,
            ok_streak: 0,
            fail_streak: 0,
            passive_fails: 0,
            ejected_until: None,
            outstanding: 0,
            idle: Vec::new(),
            checks_failed: 0,
            pool_discarded: 0,
        }
    }

    /// Index into `stats::NODE_STATE_NAMES`, as this core sees the node at `now`.
    fn state_code(&self, now: Instant, health_on: bool) -> u64 {
        match self {
            n if n.removed => 4,
            n if !n.up && health_on => 2,
            n if n.ejected_until.is_some_and(|t| now < t) => 3,
            _ => 1,
        }
    }
}

/// An up/down change decided by active health checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

pub struct Upstreams {
    /// Every node this core has known since start, by slot (tombstones included).
    pub nodes: Vec<Node>,
    rr: usize,
    /// The core's current config snapshot (the same `Arc` its `Snapshot` holds, swapped on
    /// reload by [`set_config`](Self::set_config)): timeouts, pool, health and balance
    /// settings are read from it, never copied.
    cfg: Arc<Config>,
    pub tls: Option<UpstreamTls>,
    /// This core's stats, for the per-node gauges (None in unit tests).
    stats: Option<Arc<CoreStats>>,
}

impl Upstreams {
    pub fn new(cfg: Arc<Config>, tls: Option<UpstreamTls>) -> Upstreams {
        Upstreams {
            nodes: cfg.upstream.servers.iter().map(Node::new).collect(),
            rr: 0,
            cfg,
            tls,
            stats: None,
        }
    }

    /// Writes this core's per-node gauges into `stats` from now on.
    pub fn with_stats(mut self, stats: Arc<CoreStats>) -> Upstreams {
        self.stats = Some(stats);
        self.publish(Instant::now());
        self
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg.upstream
    }

    /// Follows a reload: settings are read from `cfg` from now on, and the node list
    /// becomes the config's (see the module header). Returns the slots of the nodes added.
    pub fn set_config(&mut self, cfg: Arc<Config>) -> Vec<usize> {
        self.cfg = cfg;
        let servers = self.cfg.upstream.servers.clone();
        for slot in 0..self.nodes.len() {
            let n = &self.nodes[slot];
            let stays = servers
                .iter()
                .any(|s| s.id == n.id && s.addr == n.addr && s.name == n.name);
            if !n.removed && !stays {
                self.remove(slot);
            }
        }
        let mut added = Vec::new();
        for s in &servers {
            if self.slot_of(s.id).is_none() {
                self.nodes.push(Node::new(s));
                added.push(self.nodes.len() - 1);
            }
        }
        added
    }

    /// Tombstones a node: no new request goes to it, its idle connections close now and
    /// its in-flight ones when their request ends (`put_idle` refuses them).
    fn remove(&mut self, slot: usize) {
        let n = &mut self.nodes[slot];
        n.removed = true;
        n.idle.clear();
        log::info!(
            "upstream {} removed from the config: draining {} in-flight request(s)",
            n.name,
            n.outstanding
        );
    }

    /// The slot of the live (not removed) node with stable id `id`.
    pub fn slot_of(&self, id: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id && !n.removed)
    }

    fn usable(&self, i: usize, now: Instant) -> bool {
        let n = &self.nodes[i];
        !n.removed
            && (n.up || !self.cfg.upstream.health.enabled)
            && n.ejected_until.is_none_or(|t| now >= t)
    }

    /// Whether some node can take a request now.
    pub fn any_usable(&self, now: Instant) -> bool {
        (0..self.nodes.len()).any(|i| self.usable(i, now))
    }

    /// Picks a usable node not in `exclude`. None = no healthy node (→ 503).
    pub fn pick(&mut self, exclude: &[usize], now: Instant) -> Option<usize> {
        let n = self.nodes.len();
        let candidates = (0..n)
            .map(|k| (self.rr + k) % n)
            .filter(|i| !exclude.contains(i) && self.usable(*i, now));
        let best = match self.cfg.upstream.balance {
            Balance::RoundRobin => candidates.into_iter().next(),
            Balance::LeastOutstanding => {
                let mut best: Option<usize> = None;
                for i in candidates {
                    if best.is_none_or(|b| self.nodes[i].outstanding < self.nodes[b].outstanding) {
                        best = Some(i);
                    }
                }
                best
            }
        };
        if let Some(b) = best {
            self.rr = (b + 1) % n;
        }
        best
    }

    /// The newest pooled idle connection to `node` that is fresh enough and clean; the
    /// unusable ones above it are closed (and counted in `pool_discarded`).
    pub fn take_idle(&mut self, node: usize, now: Instant) -> Option<UpConn> {
        let ttl = self.cfg.upstream.pool_idle_timeout;
        let n = &mut self.nodes[node];
        let mut found = None;
        while let Some(p) = n.idle.pop() {
            if p.usable(now, ttl) {
                found = Some(p.conn);
                break;
            }
            n.pool_discarded += 1;
        }
        self.publish_pool(node);
        found
    }

    /// Housekeeping: closes every node's pooled connections that are past
    /// `upstream.pool_idle_timeout` or not clean (the upstream closed them, or sent bytes
    /// that answer no request), so none lingers open, or half closed, while traffic is low
    /// (a pool is used last in, first out: its oldest entries may wait long). One peek per
    /// idle connection per sweep.
    pub fn expire_idle(&mut self, now: Instant) {
        let ttl = self.cfg.upstream.pool_idle_timeout;
        for node in 0..self.nodes.len() {
            let n = &mut self.nodes[node];
            let before = n.idle.len();
            n.idle.retain(|p| p.usable(now, ttl));
            n.pool_discarded += (before - n.idle.len()) as u64;
            self.publish_pool(node);
        }
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

    /// Keeps `conn` for reuse, unless the pool is full or the node is down or removed
    /// (then the connection closes here: that is how a removed node's pool drains).
    pub fn put_idle(&mut self, node: usize, conn: UpConn, now: Instant) {
        let max = self.cfg.upstream.pool_max_idle;
        let n = &mut self.nodes[node];
        if n.idle.len() < max && n.up && !n.removed {
            n.idle.push(Pooled { conn, since: now });
        }
        self.publish_pool(node);
    }

    /// A request is being relayed to `node` (until [`end`](Self::end)).
    pub fn begin(&mut self, node: usize) {
        self.nodes[node].outstanding += 1;
        if let Some(s) = self.node_stats(node) {
            s.in_flight.inc();
        }
    }

    /// The request relayed on `conn` is over: records the node's response-head time.
    pub fn end(&mut self, node: usize, conn: &mut UpConn) {
        self.nodes[node].outstanding -= 1;
        let head_time = conn.take_head_time();
        if let Some(s) = self.node_stats(node) {
            s.in_flight.sub(1);
            if let Some(t) = head_time {
                s.head_time.record(t);
            }
        }
    }

    fn node_stats(&self, node: usize) -> Option<&NodeStats> {
        self.stats.as_ref()?.nodes.get(self.nodes[node].id as usize)
    }

    fn publish_pool(&self, node: usize) {
        if let Some(s) = self.node_stats(node) {
            s.pool_idle.set(self.nodes[node].idle.len() as u64);
        }
    }

    /// Writes every node's state gauge (housekeeping): tombstones first, so that a live
    /// node that took a drained node's id owns the slot.
    pub fn publish(&self, now: Instant) {
        let Some(stats) = &self.stats else { return };
        let on = self.cfg.upstream.health.enabled;
        for removed in [true, false] {
            for n in self.nodes.iter().filter(|n| n.removed == removed) {
                if let Some(s) = stats.nodes.get(n.id as usize) {
                    let drained = n.removed && n.outstanding == 0;
                    s.state.set(if drained { 0 } else { n.state_code(now, on) });
                }
            }
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
                "upstream {} ejected for {:?} by this core after {thr} refused connect(s)",
                n.name,
                dur
            );
        }
    }

    /// Records an active health-check result (from this core's probe or another core's
    /// message); returns the up/down change it causes. Logs nothing: the probing core logs
    /// the transition with its cause ([`probe_result`](Self::probe_result)).
    pub fn health_result(&mut self, node: usize, ok: bool) -> Option<Transition> {
        let rise = self.cfg.upstream.health.rise.max(1);
        let fall = self.cfg.upstream.health.fall.max(1);
        let n = &mut self.nodes[node];
        if ok {
            n.fail_streak = 0;
            n.ok_streak += 1;
            if n.ok_streak >= rise {
                // Passively ejected while its checks never failed `fall` times: the
                // checks since the ejection passed, so it is back before the duration.
                n.ejected_until = None;
                if !n.up {
                    n.up = true;
                    return Some(Transition::Up);
                }
            }
        } else {
            n.checks_failed += 1;
            n.ok_streak = 0;
            n.fail_streak += 1;
            if n.up && n.fail_streak >= fall {
                n.up = false;
                n.idle.clear();
                return Some(Transition::Down);
            }
        }
        None
    }

    /// This core probed `node` and got `p`: applies the verdict, records the outcome in
    /// the node's stats (the probing core alone writes them) and logs a transition with
    /// its cause. Returns the verdict to pass to the other cores (None: no verdict).
    pub fn probe_result(&mut self, node: usize, p: Probe, unix_ms: u64) -> Option<bool> {
        let health = self.cfg.upstream.health.clone();
        let ok = p.verdict(&health.healthy_statuses)?;
        let change = self.health_result(node, ok);
        if let Some(s) = self.node_stats(node) {
            s.probe.set(p.code());
            s.probe_ms.set(unix_ms);
            s.checks_failed.add(u64::from(!ok));
            s.transitions.add(u64::from(change.is_some()));
        }
        let n = &self.nodes[node];
        match change {
            Some(Transition::Down) => log::warn!(
                "upstream {} is down: {}",
                n.name,
                p.reason(&health.path, &health.healthy_statuses)
            ),
            Some(Transition::Up) => log::info!(
                "upstream {} is up: {}",
                n.name,
                p.reason(&health.path, &health.healthy_statuses)
            ),
            None => {}
        }
        Some(ok)
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
    let connect = std::pin::pin!(TcpStream::connect(addr));
    let tcp = match with_deadline(Instant::now() + timeout, connect).await {
        Err(_) => return Err(ConnectError::Timeout),
        Ok(Err(e)) => return Err(ConnectError::of(&e)),
        Ok(Ok(s)) => s,
    };
    let _ = tcp.set_nodelay(true);
    match tls {
        None => Ok(UpConn::new(UpIo::Plain(tcp))),
        Some((connector, name)) => {
            let fd = tcp.as_raw_fd();
            let handshake = std::pin::pin!(connector.connect(name, tcp));
            match with_deadline(Instant::now() + timeout, handshake).await {
                Err(_) => Err(ConnectError::Timeout),
                Ok(Err(e)) => {
                    log::warn!("upstream TLS to {addr} failed: {e}");
                    Err(ConnectError::Tls)
                }
                Ok(Ok(s)) => Ok(UpConn::new(UpIo::Tls(Box::new(s), fd))),
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

    /// The outcome as `stats::NodeStats::probe` stores it: the status, or a `PROBE_*` code.
    pub fn code(self) -> u64 {
        match self {
            Probe::Status(s) => u64::from(s),
            Probe::Unreachable(ConnectError::Refused) => stats::PROBE_REFUSED,
            Probe::Unreachable(ConnectError::Timeout) => stats::PROBE_TIMEOUT,
            Probe::Unreachable(ConnectError::Tls) => stats::PROBE_TLS,
            Probe::Unreachable(ConnectError::Local) => stats::PROBE_LOCAL,
            Probe::NoAnswer => stats::PROBE_NO_ANSWER,
        }
    }

    /// What the probe got, for a log line or an operator (see `stats::probe_reason`).
    pub fn reason(self, path: &str, healthy: &[u16]) -> String {
        stats::probe_reason(self.code(), path, &status_ranges(healthy))
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

    fn servers(ports: &[(u16, u16)]) -> Arc<Config> {
        let mut t = String::from("[upstream.health]\nrise = 1\nfall = 1\n");
        for (p, _) in ports {
            t.push_str(&format!("[[upstream.servers]]\naddr = \"127.0.0.1:{p}\"\n"));
        }
        let mut cfg = crate::config::validate::load_str(&t, Path::new("t.toml")).unwrap();
        for (s, (_, id)) in cfg.upstream.servers.iter_mut().zip(ports) {
            s.id = *id;
        }
        Arc::new(cfg)
    }

    /// A removed server keeps its slot (the index an in-flight request holds) as a
    /// tombstone: never picked, pool closed, its connections refused by the pool; a new one
    /// gets a new slot; health messages find nodes by stable id.
    #[test]
    fn reloads_add_nodes_and_tombstone_removed_ones_in_place() {
        let mut u = Upstreams::new(servers(&[(9001, 0), (9002, 1)]), None);
        let t0 = Instant::now();
        u.begin(0);
        let added = u.set_config(servers(&[(9002, 1), (9003, 2)]));
        assert_eq!(added, [2], "9003 takes a new slot");
        assert!(u.nodes[0].removed && u.nodes[0].addr.port() == 9001);
        assert_eq!(u.nodes[0].outstanding, 1, "its request in flight goes on");
        let picks: Vec<_> = (0..4).map(|_| u.pick(&[], t0).unwrap()).collect();
        assert!(!picks.contains(&0), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&2));
        assert_eq!(
            (u.slot_of(0), u.slot_of(1), u.slot_of(2)),
            (None, Some(1), Some(2))
        );
        assert_eq!(u.health_result(2, false), Some(Transition::Down));
        assert_eq!(u.health_result(2, false), None, "one transition");
        assert_eq!(u.health_result(2, true), Some(Transition::Up));
        // The same id with another address: the old node is replaced, not renamed.
        let added = u.set_config(servers(&[(9002, 1), (9004, 2)]));
        assert_eq!(added, [3]);
        assert!(u.nodes[2].removed);
        assert_eq!(u.slot_of(2), Some(3));
    }

    #[test]
    fn probe_outcomes_have_verdicts_codes_and_reasons() {
        let mut u = Upstreams::new(servers(&[(9001, 0)]), None);
        assert_eq!(
            u.probe_result(0, Probe::Unreachable(ConnectError::Local), 1),
            None,
            "not the node's fault"
        );
        assert_eq!(u.probe_result(0, Probe::Status(403), 1), Some(false));
        assert!(!u.nodes[0].up);
        assert_eq!(u.probe_result(0, Probe::Status(204), 2), Some(true));
        assert!(u.nodes[0].up);
        assert_eq!(Probe::Status(403).code(), 403);
        assert_eq!(Probe::NoAnswer.code(), stats::PROBE_NO_ANSWER);
        let r = Probe::Status(404).reason("/minio/health/live", &[200, 201, 202]);
        assert!(
            r.starts_with("GET /minio/health/live: status 404 (healthy: 200-202)"),
            "{r}"
        );
        assert!(r.contains("upstream.health.path"), "{r}");
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
