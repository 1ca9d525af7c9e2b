//! The data path: one `Worker` per core owns everything its connections need
//! (config snapshot, limiter shard, upstream pools, buffer pool, TLS acceptor, stats)
//! and is handed to connection tasks as `Rc` — no locks, no shared atomics per request.
//!
//! Owns: accept loops (`serve`), the connection loop (`conn`), buffers and socket I/O
//! (`bufio`), limit decisions (`limiter`: owner-local call or cross-core message), upstream
//! handling (`upstream`), TLS (`tls`), response headers (`headers`), the access log, the
//! background tasks (`tasks`: housekeeping, health checks, top-N scans) and what a core
//! keeps for the operator (`observe`). A reload (`ControlMsg::Config`) swaps the snapshot
//! and the upstream node list (`Worker::apply_config`).
//! Must not touch: the control plane (`control`); it only receives `ControlMsg`s.

pub mod access_log;
pub mod bufio;
pub mod client_addr;
pub mod conn;
mod deadline;
pub mod headers;
pub mod limiter;
pub mod observe;
pub mod tasks;
pub mod tls;
pub mod upstream;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::hash::RandomState;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc::SyncSender;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};

use crate::config::Config;
use crate::limit::{Router, Shard, TierLimits};
use crate::runtime::WorkerInit;
use crate::runtime::msg::{ControlMsg, CoreMsg, FromSync, TableOp, TableReply};
use crate::stats::CoreStats;

use bufio::BufPool;
use limiter::Pending;
use upstream::{UpstreamTls, Upstreams};

/// Immutable things every core receives at start.
pub struct Shared {
    pub config: Arc<Config>,
    pub stats: Vec<Arc<CoreStats>>,
    pub hasher: RandomState,
    /// The common clock origin: every core measures `now_ms` from here.
    pub epoch: Instant,
    /// Wall-clock Unix ms at `epoch`: the "last seen" times of every core are this plus
    /// their `Instant` since `epoch`, so they order requests across cores.
    pub epoch_unix_ms: u64,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Random per-process prefix for request ids.
    pub instance: u64,
    /// The access-log writer's queue, when the log is on.
    pub access_log: Option<std::sync::mpsc::SyncSender<access_log::Msg>>,
    /// Client connections per worker that the open-file limit allows
    /// (`runtime::connection_budget`); `http.max_connections` is capped by it.
    pub connection_budget: usize,
    /// Active-active (`[cluster]`): cluster time (wall-clock ms) at `epoch`, so that a
    /// core's cluster time is this plus its `now_ms`. None = cluster off.
    pub cluster_epoch_ms: Option<u64>,
}

/// A core's view of the configuration, rebuilt on every reload (cheap `Rc` clones).
pub struct Snapshot {
    pub cfg: Arc<Config>,
    /// Per tier number, its limits (None: a retired placeholder, see
    /// `LimitsConfig::tiers`).
    tiers: Vec<Option<TierLimits>>,
    /// Per tier, the SlowDown `<Message>` naming the sustained and the burst window (index
    /// `Decision::burst_binds as usize`), rendered once here so a denial allocates nothing.
    pub deny_messages: Vec<[String; 2]>,
}

/// A one-shot local event (shutdown): wakes every waiter when set.
///
/// Waiters register in a slot that they free again when dropped, so the many short waits
/// of idle keep-alive connections (one per request) leave nothing behind: no growing list,
/// and no waker keeping a finished connection's task alive until shutdown.
#[derive(Default)]
pub struct Event {
    set: Cell<bool>,
    waiters: RefCell<Waiters>,
}

#[derive(Default)]
struct Waiters {
    slots: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Event {
    pub fn set(&self) {
        self.set.set(true);
        let wakers: Vec<Waker> = {
            let mut w = self.waiters.borrow_mut();
            w.free.clear();
            w.slots.drain(..).flatten().collect()
        };
        for w in wakers {
            w.wake();
        }
    }
    pub fn is_set(&self) -> bool {
        self.set.get()
    }
    pub fn wait(&self) -> EventWait<'_> {
        EventWait {
            ev: self,
            slot: None,
        }
    }
    /// Registered waiters (for tests).
    pub fn waiting(&self) -> usize {
        self.waiters.borrow().slots.iter().flatten().count()
    }
}

/// Future of [`Event::wait`]; unregisters itself when dropped.
pub struct EventWait<'a> {
    ev: &'a Event,
    slot: Option<usize>,
}

impl EventWait<'_> {
    fn release(&mut self) {
        if let Some(i) = self.slot.take() {
            let mut w = self.ev.waiters.borrow_mut();
            // After `set` the slots are gone; nothing to free.
            if i < w.slots.len() {
                w.slots[i] = None;
                w.free.push(i);
            }
        }
    }
}

impl Future for EventWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.ev.set.get() {
            this.release();
            return Poll::Ready(());
        }
        let mut w = this.ev.waiters.borrow_mut();
        match this.slot {
            Some(i) if i < w.slots.len() => match &mut w.slots[i] {
                Some(old) if old.will_wake(cx.waker()) => {}
                s => *s = Some(cx.waker().clone()),
            },
            _ => {
                let waker = Some(cx.waker().clone());
                let i = match w.free.pop() {
                    Some(i) => {
                        w.slots[i] = waker;
                        i
                    }
                    None => {
                        w.slots.push(waker);
                        w.slots.len() - 1
                    }
                };
                this.slot = Some(i);
            }
        }
        Poll::Pending
    }
}

impl Drop for EventWait<'_> {
    fn drop(&mut self) {
        self.release();
    }
}

pub struct Worker {
    pub id: usize,
    pub snap: RefCell<Rc<Snapshot>>,
    pub shard: RefCell<Shard>,
    /// In-flight counts and byte windows of the `[[rules]]` subjects this core owns.
    pub flows: RefCell<crate::limit::FlowTable>,
    pub router: Router,
    pub mesh: RefCell<crate::runtime::CoreMesh>,
    pub pending: RefCell<Pending>,
    /// Waker of this core's mesh task, used to flush outboxes once per turn.
    mesh_waker: RefCell<Option<Waker>>,
    mesh_kicked: Cell<bool>,
    pub stats: Arc<CoreStats>,
    pub epoch: Instant,
    pub upstreams: RefCell<Upstreams>,
    pub pool: BufPool,
    pub tls: RefCell<Option<monoio_rustls::TlsAcceptor>>,
    pub shutdown: Event,
    /// Open client connections on this core.
    pub active: Cell<usize>,
    /// See [`Shared::connection_budget`].
    connection_budget: usize,
    req_counter: Cell<u64>,
    instance: u64,
    /// Signing keys of `[limits.verify]`, made on first use (None until then).
    pub sig_cache: RefCell<Option<crate::sigverify::SigningKeyCache>>,
    /// This core's access-log buffer (None = log off).
    pub alog: RefCell<Option<access_log::CoreLog>>,
    /// The subjects this core denied most (`/keys?top=N`'s most denied).
    pub denied: RefCell<observe::DeniedTop>,
    /// `Shared::epoch_unix_ms`.
    pub epoch_unix_ms: u64,
    /// Checks and charges from cores already on a newer config than this one, held until
    /// this core takes a reload (`apply_inbound`, `mesh_loop`).
    deferred: RefCell<Vec<(usize, CoreMsg)>>,
}

impl Worker {
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub fn snapshot(&self) -> Rc<Snapshot> {
        self.snap.borrow().clone()
    }

    /// `http.max_connections`, capped by what the open-file limit allows.
    pub fn max_connections(&self) -> usize {
        self.snap
            .borrow()
            .cfg
            .http
            .max_connections
            .min(self.connection_budget)
    }

    /// A process-unique request id: instance prefix, core, counter.
    pub fn next_request_id(&self, out: &mut String) {
        let n = self.req_counter.get() + 1;
        self.req_counter.set(n);
        out.clear();
        // 12 + 2 + 10 upper-case hex digits (what "{:012X}{:02X}{:010X}" gives, zero-padded,
        // the counter wrapping at 40 bits), written by hand: this runs on every request.
        let mut buf = [0u8; 24];
        put_hex(&mut buf[..12], self.instance & 0xFFFF_FFFF_FFFF);
        put_hex(&mut buf[12..14], self.id as u64);
        put_hex(&mut buf[14..], n);
        out.push_str(std::str::from_utf8(&buf).unwrap_or_default());
    }

    /// Schedules this core's mesh task to flush outboxes at the end of this turn.
    pub fn kick_mesh(&self) {
        if !self.mesh_kicked.replace(true) {
            if let Some(w) = self.mesh_waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }

    /// Takes a reload's snapshot; new upstream nodes that this core probes get a health
    /// loop.
    fn apply_config(self: &Rc<Self>, cfg: Arc<Config>) {
        let added = self.upstreams.borrow_mut().set_config(cfg.clone());
        self.spawn_health_loops(&added);
        let snap = build_snapshot(cfg);
        {
            let mut shard = self.shard.borrow_mut();
            shard.set_cap_at(snap.cfg.limits.table_cap, Some(self.now_ms()));
            shard.set_penalty(snap.cfg.limits.penalty);
            self.flows.borrow_mut().set_cap(snap.cfg.limits.table_cap);
        }
        let (tiers, rules) = snap.cfg.numbers_changing_hands(&self.snapshot().cfg);
        tiers.into_iter().for_each(|t| self.stats.forget_tier(t));
        rules
            .into_iter()
            .for_each(|s| self.stats.forget_rule(usize::from(s)));
        self.stats.config_version.set(snap.cfg.limits.version);
        *self.snap.borrow_mut() = Rc::new(snap);
    }

    /// A health loop for each node in `slots` that this core probes.
    fn spawn_health_loops(self: &Rc<Self>, slots: &[usize]) {
        for &slot in slots {
            let id = self.upstreams.borrow().nodes[slot].id;
            if tasks::probes(self, id) {
                monoio::spawn(tasks::health_loop(self.clone(), slot));
            }
        }
    }

    fn table_op(self: &Rc<Self>, op: TableOp, reply: SyncSender<TableReply>) {
        let answer = match op {
            TableOp::Top(n) => {
                // Spread over event-loop turns: answers when the scan is done.
                monoio::spawn(tasks::top_scan(self.clone(), n, reply));
                return;
            }
            TableOp::Denied(n) => {
                TableReply::Denied(self.denied.borrow().top(n, observe::unix_ms()))
            }
            op => self.table_now(op),
        };
        let _ = reply.send(answer);
    }

    fn table_now(&self, op: TableOp) -> TableReply {
        let snap = self.snapshot();
        let now = self.now_ms();
        let limits_of = |t: u16| snap.tier(t);
        let mut shard = self.shard.borrow_mut();
        match op {
            TableOp::Inspect(subject) => TableReply::Entries(
                shard
                    .snapshot(&subject, now, limits_of)
                    .into_iter()
                    .collect(),
            ),
            TableOp::Top(_) | TableOp::Denied(_) => TableReply::Removed(0),
            TableOp::Remove(subject) => TableReply::Removed(shard.remove(&subject) as usize),
            TableOp::Clear => {
                let n = shard.len();
                shard.clear();
                TableReply::Removed(n)
            }
        }
    }
}

impl Snapshot {
    /// The limits of tier number `t` (None: no such tier, or a retired one — a core
    /// still on an older config may name it — under which nothing is counted).
    pub fn tier(&self, t: impl Into<usize>) -> Option<&TierLimits> {
        self.tiers.get(t.into())?.as_ref()
    }
}

pub fn build_snapshot(cfg: Arc<Config>) -> Snapshot {
    let tiers = cfg
        .limits
        .tiers
        .iter()
        .map(|t| (!t.retired).then(|| TierLimits::new(t.sustained, t.burst)))
        .collect();
    let deny_messages = cfg
        .limits
        .tiers
        .iter()
        .map(|t| [t.sustained, t.burst].map(|w| headers::deny_message(&t.name, w)))
        .collect();
    Snapshot {
        cfg,
        tiers,
        deny_messages,
    }
}

/// This core's worker state, from what every core receives at start.
fn new_worker(index: usize, mesh: crate::runtime::CoreMesh, shared: &Shared) -> Rc<Worker> {
    let cfg = shared.config.clone();
    let workers = mesh.cores();
    let up_tls = shared.upstream_tls.as_ref().map(|c| UpstreamTls {
        connector: monoio_rustls::TlsConnector::from(c.clone()),
        server_name: cfg
            .upstream
            .tls
            .as_ref()
            .and_then(|t| t.server_name.clone())
            .and_then(|n| rustls_pki_types::ServerName::try_from(n).ok()),
    });
    let mut shard = Shard::new(cfg.limits.table_cap);
    shard.set_penalty(cfg.limits.penalty);
    let alog = shared.access_log.clone().map(|tx| {
        access_log::CoreLog::new(
            tx,
            cfg.access_log.buffer_bytes,
            cfg.access_log.flush_interval,
        )
    });
    let w = Rc::new(Worker {
        id: index,
        snap: RefCell::new(Rc::new(build_snapshot(cfg.clone()))),
        shard: RefCell::new(shard),
        flows: RefCell::new(crate::limit::FlowTable::new(cfg.limits.table_cap)),
        router: Router::new(workers, shared.hasher.clone()),
        mesh: RefCell::new(mesh),
        pending: RefCell::new(Pending::default()),
        mesh_waker: RefCell::new(None),
        mesh_kicked: Cell::new(false),
        stats: shared.stats[index].clone(),
        epoch: shared.epoch,
        upstreams: RefCell::new(
            Upstreams::new(cfg.clone(), up_tls).with_stats(shared.stats[index].clone()),
        ),
        pool: BufPool::new(BufPool::SIZE, 1024),
        tls: RefCell::new(shared.tls.clone().map(monoio_rustls::TlsAcceptor::from)),
        shutdown: Event::default(),
        active: Cell::new(0),
        connection_budget: shared.connection_budget,
        req_counter: Cell::new(0),
        instance: shared.instance,
        sig_cache: RefCell::new(None),
        alog: RefCell::new(alog),
        denied: RefCell::new(observe::DeniedTop::default()),
        epoch_unix_ms: shared.epoch_unix_ms,
        deferred: RefCell::new(Vec::new()),
    });
    w.stats.config_version.set(cfg.limits.version);
    w
}

/// A worker core's whole life: accept loops, mesh task, housekeeping, until shutdown.
pub async fn run_worker(init: WorkerInit, shared: Arc<Shared>) {
    let w = new_worker(init.index, init.mesh, &shared);
    // Deadlines of this core's socket operations (bufio), swept by one task.
    let _deadlines = deadline::Installed::new();
    monoio::spawn(deadline::sweep());
    w.stats.driver.set(match init.driver {
        crate::runtime::Driver::IoUring => 1,
        crate::runtime::Driver::Epoll => 2,
    });
    if let Some(at_epoch) = shared.cluster_epoch_ms
        && w.mesh.borrow().has_sync()
    {
        w.shard
            .borrow_mut()
            .set_mode(crate::limit::cluster::Mode::Synced);
        monoio::spawn(limiter::cluster_flush(w.clone(), at_epoch));
    }
    let mesh_task = monoio::spawn(mesh_loop(w.clone()));
    let _house = monoio::spawn(tasks::housekeeping(w.clone()));
    // Each node is probed by one core (id % workers); the results go to every core over the
    // rings, so all cores share one view and one probe per interval. A loop runs while
    // health checks are off too (it probes nothing), so a reload can turn them on.
    let slots: Vec<usize> = (0..w.upstreams.borrow().nodes.len()).collect();
    w.spawn_health_loops(&slots);
    let mut accepts = Vec::new();
    for l in init.listeners {
        accepts.push(monoio::spawn(accept_loop(w.clone(), l, false)));
    }
    for l in init.tls_listeners {
        accepts.push(monoio::spawn(accept_loop(w.clone(), l, true)));
    }
    w.shutdown.wait().await;
    // Stop accepting (accept loops watch the event), then let in-flight requests end.
    for a in accepts {
        a.await;
    }
    drain(&w).await;
    if let Some(l) = w.alog.borrow_mut().as_mut() {
        l.ship(&w.stats);
    }
    drop(mesh_task);
}

/// Waits for this core's open connections to end, at most `shutdown_grace`.
async fn drain(w: &Worker) {
    let grace = w.snapshot().cfg.shutdown_grace;
    let deadline = Instant::now() + grace;
    while w.active.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
    if w.active.get() > 0 {
        log::warn!(
            "worker {}: {} connections still open after the {:?} grace period; closing",
            w.id,
            w.active.get(),
            grace
        );
    }
}

async fn accept_loop(w: Rc<Worker>, l: StdListener, tls: bool) {
    let listener = match TcpListener::from_std(l) {
        Ok(l) => l,
        Err(e) => {
            log::error!("worker {}: listener: {e}", w.id);
            return;
        }
    };
    let mut errors = AcceptErrors::default();
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => Some(r),
            _ = w.shutdown.wait() => None,
        };
        let Some(r) = accepted else { return };
        match r {
            Ok((stream, peer)) => {
                w.stats.connections_accepted.inc();
                if w.active.get() >= w.max_connections() {
                    // Over the cap: closed at once, so the connections already open keep
                    // their file descriptors and buffers.
                    w.stats.connections_refused.inc();
                    drop(stream);
                    continue;
                }
                w.active.set(w.active.get() + 1);
                monoio::spawn(handle(w.clone(), stream, peer, tls));
            }
            Err(e) => {
                let pause = errors.record(w.id, &e, Instant::now());
                monoio::time::sleep(pause).await;
            }
        }
    }
}

/// Accept failures: logged at most once a second (with how many were not logged), and a
/// pause before the next accept — longer when the process is out of file descriptors, which
/// only closing connections can cure.
#[derive(Default)]
struct AcceptErrors {
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn record(&mut self, core: usize, e: &std::io::Error, now: Instant) -> Duration {
        if self
            .last_log
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            log::warn!(
                "worker {core}: accept: {e} ({} more since the last such line)",
                self.unlogged
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                Duration::from_millis(50)
            }
            _ => Duration::from_millis(10),
        }
    }
}

async fn handle(w: Rc<Worker>, stream: TcpStream, peer: SocketAddr, tls: bool) {
    let _ = stream.set_nodelay(true);
    w.stats.connections_active.inc();
    if tls {
        let acceptor = w.tls.borrow().clone();
        if let Some(acceptor) = acceptor {
            let deadline = Instant::now() + w.snapshot().cfg.http.client_head_timeout;
            match deadline::with_deadline(deadline, std::pin::pin!(acceptor.accept(stream))).await {
                Ok(Ok(s)) => {
                    w.stats.tls_handshakes.inc();
                    conn::serve(w.clone(), s, peer, true).await;
                }
                _ => w.stats.tls_handshake_errors.inc(),
            }
        }
    } else {
        conn::serve(w.clone(), stream, peer, false).await;
    }
    w.stats.connections_active.sub(1);
    w.active.set(w.active.get() - 1);
}

/// Drains inbound rings (checks for keys this core owns, replies for its own
/// requests, control messages) and flushes outboxes, once per event-loop turn.
async fn mesh_loop(w: Rc<Worker>) {
    let mut inbound: Vec<(usize, CoreMsg)> = Vec::with_capacity(256);
    let mut controls: Vec<ControlMsg> = Vec::new();
    let mut from_sync: Vec<FromSync> = Vec::new();
    poll_fn(|cx| {
        loop {
            w.mesh_kicked.set(false);
            {
                let mut mesh = w.mesh.borrow_mut();
                while let Some(c) = mesh.pop_control() {
                    controls.push(c);
                }
                mesh.drain(|from, m| inbound.push((from, m)));
                mesh.drain_sync(|m| from_sync.push(m));
            }
            let had_work = !inbound.is_empty() || !controls.is_empty() || !from_sync.is_empty();
            // Controls first: a charge that came after a reload's snapshot is counted
            // under the new config, as its sender (already on it) planned.
            let mut took_config = false;
            for c in controls.drain(..) {
                match c {
                    ControlMsg::Config(cfg) => {
                        w.apply_config(cfg);
                        took_config = true;
                    }
                    ControlMsg::Tls(sc) => {
                        *w.tls.borrow_mut() = Some(monoio_rustls::TlsAcceptor::from(sc));
                    }
                    ControlMsg::Table(op, reply) => w.table_op(op, reply),
                    ControlMsg::Shutdown => w.shutdown.set(),
                }
            }
            if took_config {
                release_held(&w, &mut inbound);
            }
            if !from_sync.is_empty() {
                let snap = w.snapshot();
                let now = w.now_ms();
                let mut shard = w.shard.borrow_mut();
                for m in from_sync.drain(..) {
                    limiter::apply_from_sync(&mut shard, &snap, m, now);
                }
            }
            if !inbound.is_empty() {
                apply_inbound(&w, &mut inbound);
            }
            let flushed = w.mesh.borrow_mut().flush();
            if had_work {
                continue;
            }
            *w.mesh_waker.borrow_mut() = Some(cx.waker().clone());
            let mesh = w.mesh.borrow();
            mesh.register(cx.waker());
            if !mesh.inbound_empty() {
                continue;
            }
            if !flushed {
                // A ring was full: try again on the next turn.
                cx.waker().wake_by_ref();
            }
            return Poll::<()>::Pending;
        }
    })
    .await
}

/// After a reload: the held checks and charges go first in `inbound`, in the order they
/// came (those still ahead of this core's config are held again).
fn release_held(w: &Worker, inbound: &mut Vec<(usize, CoreMsg)>) {
    let held = std::mem::take(&mut *w.deferred.borrow_mut());
    inbound.splice(0..0, held);
}

/// Handles the messages of other cores drained this turn: checks and rule charges for
/// subjects this core owns (answered), answers to this core's requests, updates, health.
/// A check or charge planned under a newer config than this core runs is held until this
/// core takes a reload (it may name a tier or rule the reload added): `release_held`.
fn apply_inbound(w: &Worker, inbound: &mut Vec<(usize, CoreMsg)>) {
    let snap = w.snapshot();
    let own = snap.cfg.limits.version as u32;
    let now = w.now_ms();
    let mut shard = w.shard.borrow_mut();
    let mut flows = w.flows.borrow_mut();
    let mut mesh = w.mesh.borrow_mut();
    let mut pending = w.pending.borrow_mut();
    for (from, m) in inbound.drain(..) {
        if m.planned_ahead_of(own) {
            w.deferred.borrow_mut().push((from, m));
            continue;
        }
        let mut counters = limiter::Counters {
            shard: &mut shard,
            flows: &mut flows,
            snap: &snap,
            now,
        };
        match m {
            CoreMsg::Check {
                slot,
                subject,
                tier,
                ..
            } => {
                let decision = match snap.tier(tier) {
                    Some(l) => counters.shard.check(subject.as_bytes(), tier, l, now),
                    None => crate::limit::Decision::unlimited(),
                };
                mesh.send(from, CoreMsg::Decision { slot, decision });
            }
            CoreMsg::Decision { slot, decision } => {
                let verdict = crate::limit::multi::Verdict {
                    decision,
                    ..crate::limit::multi::Verdict::ADMIT
                };
                pending.complete(slot, verdict);
            }
            CoreMsg::Charge {
                slot,
                subject,
                what,
                ..
            } => {
                let verdict = counters.take(subject.as_bytes(), what);
                mesh.send(from, CoreMsg::Verdict { slot, verdict });
            }
            CoreMsg::Verdict { slot, verdict } => pending.complete(slot, verdict),
            CoreMsg::Undo {
                subject,
                what,
                in_flight,
                token,
            } => counters.undo(subject.as_bytes(), what, in_flight, token),
            CoreMsg::Release { subject } => counters.flows.release(subject.as_bytes(), now),
            CoreMsg::Bytes { subject, n } => counters.flows.add_bytes(subject.as_bytes(), n, now),
            CoreMsg::Health { node, ok } => {
                let mut ups = w.upstreams.borrow_mut();
                if let Some(slot) = ups.slot_of(node) {
                    ups.health_result(slot, ok);
                }
            }
            CoreMsg::Update(u) => limiter::apply_update(&mut counters, u),
        }
    }
}

/// Writes the low `4 * out.len()` bits of `v` as upper-case hex, most significant first.
fn put_hex(out: &mut [u8], mut v: u64) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789ABCDEF"[(v & 0xF) as usize];
        v >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::{Arc, Context, Event, Waker, put_hex};

    /// Checks and charges from a core already on a newer config, for a tier and a rule
    /// that config added, wait on their owner until it takes the reload; they are then
    /// counted under them, before what came in later (without the hold they were admitted
    /// uncounted: the owner did not know that tier or rule yet).
    #[test]
    fn checks_from_a_newer_config_wait_for_it() {
        use crate::runtime::msg::{CoreMsg, Subject};
        let base = "[[upstream.servers]]\naddr = \"127.0.0.1:9000\"\n[upstream.health]\n\
                    enabled = false\n[limits]\ndefault_tier = \"a\"\nanonymous_tier = \"a\"\n\
                    [tiers.a]\nper_minute = 100\nper_second = 100\n";
        let load =
            |t: &str| crate::config::load_str(t, std::path::Path::new("/nonexistent/t.toml"));
        let old = load(base).unwrap();
        let added = "[[rules]]\nname = \"new\"\nper_minute = 1\n\
                     [tiers.b]\nper_minute = 1\nper_second = 100\n";
        let mut new = load(&format!("{added}{base}")).unwrap();
        new.limits.version = old.limits.version + 1;
        let (mut meshes, _ctl) = crate::runtime::mesh::build(2);
        let mut sender = meshes.pop().unwrap();
        let w = super::new_worker(0, meshes.pop().unwrap(), &shared(old));
        let version = new.limits.version as u32;
        let tier_b = new.limits.tiers.iter().position(|t| t.name == "b").unwrap() as u16;
        let r = &new.rules.rules[0];
        let mut rule_subject = vec![crate::rules::RULE_PREFIX];
        rule_subject.extend_from_slice(&r.id);
        rule_subject.extend_from_slice(b"AKIAKEY");
        let charge = |slot| CoreMsg::Charge {
            slot,
            subject: Subject::new(&rule_subject),
            what: crate::rules::RULE_TIER_BASE + r.slot,
            version,
        };
        let check = |slot| CoreMsg::Check {
            slot,
            subject: Subject::new(b"AKIAKEY"),
            tier: tier_b,
            version,
        };
        let answers = |sender: &mut crate::runtime::CoreMesh| {
            let mut got = Vec::new();
            sender.drain(|_, m| match m {
                CoreMsg::Verdict { slot, verdict } => got.push((slot, verdict.decision.admitted)),
                CoreMsg::Decision { slot, decision } => got.push((slot, decision.admitted)),
                other => panic!("{other:?}"),
            });
            got
        };
        let mut inbound = vec![(1, charge(7)), (1, check(9)), (1, check(10))];
        super::apply_inbound(&w, &mut inbound);
        w.mesh.borrow_mut().flush();
        assert!(
            answers(&mut sender).is_empty(),
            "held: the owner runs the old config"
        );
        // The turn the reload lands in, as `mesh_loop` runs it: one more charge came in.
        inbound.push((1, charge(8)));
        w.apply_config(Arc::new(new));
        super::release_held(&w, &mut inbound);
        super::apply_inbound(&w, &mut inbound);
        w.mesh.borrow_mut().flush();
        assert_eq!(
            answers(&mut sender),
            [(7, true), (9, true), (10, false), (8, false)],
            "counted (1 a minute each), the held ones first"
        );
        assert!(w.deferred.borrow().is_empty());
    }

    fn shared(cfg: crate::config::Config) -> super::Shared {
        super::Shared {
            config: Arc::new(cfg),
            stats: (0..2)
                .map(|_| Arc::new(crate::stats::CoreStats::default()))
                .collect(),
            hasher: std::hash::RandomState::new(),
            epoch: std::time::Instant::now(),
            epoch_unix_ms: 0,
            tls: None,
            upstream_tls: None,
            instance: 0,
            access_log: None,
            connection_budget: 16,
            cluster_epoch_ms: None,
        }
    }

    #[test]
    fn put_hex_matches_format() {
        for (v, w) in [
            (0u64, 2usize),
            (0xAB, 2),
            (0x0012_3456_789A, 10),
            (0xFFFF_FFFF_FFFF, 12),
        ] {
            let mut b = vec![0u8; w];
            put_hex(&mut b, v);
            assert_eq!(String::from_utf8(b).unwrap(), format!("{v:0w$X}"));
        }
        let mut b = [0u8; 2];
        put_hex(&mut b, 0x1FF); // wraps to the low bits
        assert_eq!(&b, b"FF");
    }

    /// The shutdown event is waited on by every idle keep-alive connection, once per
    /// request: a wait that ends without the event must leave nothing registered (it used
    /// to keep one waker per request, and with it every finished connection's task).
    #[test]
    fn event_waits_unregister_when_dropped_and_set_wakes_the_rest() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::Wake;
        struct Count(AtomicUsize);
        impl Wake for Count {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let ev = Event::default();
        let noop = Waker::noop();
        let mut cx = Context::from_waker(noop);
        for _ in 0..10_000 {
            let mut f = std::pin::pin!(ev.wait());
            assert!(f.as_mut().poll(&mut cx).is_pending());
            assert!(
                f.as_mut().poll(&mut cx).is_pending(),
                "re-poll keeps one slot"
            );
            assert_eq!(ev.waiting(), 1);
        }
        assert_eq!(ev.waiting(), 0);
        assert!(ev.waiters.borrow().slots.len() <= 1, "slots are reused");

        let counter = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx2 = Context::from_waker(&waker);
        let mut a = Box::pin(ev.wait());
        let mut b = Box::pin(ev.wait());
        let mut c = Box::pin(ev.wait());
        assert!(a.as_mut().poll(&mut cx2).is_pending());
        assert!(b.as_mut().poll(&mut cx2).is_pending());
        assert!(c.as_mut().poll(&mut cx2).is_pending());
        drop(b);
        assert_eq!(ev.waiting(), 2);
        ev.set();
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            2,
            "both live waiters woken"
        );
        assert!(a.as_mut().poll(&mut cx2).is_ready());
        assert!(c.as_mut().poll(&mut cx2).is_ready());
        assert!(Box::pin(ev.wait()).as_mut().poll(&mut cx).is_ready());
        assert_eq!(ev.waiting(), 0);
    }
}
