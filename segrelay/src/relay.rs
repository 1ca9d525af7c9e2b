//! The relay: a listener, and for each accepted connection an outbound connection to the
//! target (from the client's own IP) with both directions copied in the pieces a
//! [`Cutter`] gives. Owns the listener, the live-connection registry (so `Drop` can cut
//! them) and the counters. How pieces are chosen is `cut`'s business, not this module's.
//!
//! Threads: one acceptor; per connection, one for each direction (blocking std I/O — a test
//! tool, not a data path). A failed outbound connect closes the accepted socket at once.
//!
//! Endings, per direction: EOF from the source → `shutdown(Write)` towards the other side
//! (a half-close; the other direction keeps flowing). A read error (a reset) or a write
//! error ends the connection as a reset: every byte read before it has been written on, the
//! other direction is woken, and once both directions are done the sockets stay open, unread,
//! for [`RESET_GRACE`] (so what their send queues still hold goes out) and are then closed
//! with `SO_LINGER` 0 (RST) — like a reset crossing a real path, after the data ahead of it.
#![allow(
    clippy::disallowed_types,
    reason = "a test tool, not tollgate's data path: the registry lock is taken once per \
              connection and at drop, never per byte"
)]

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cut::{Cut, Cutter, Dir};

/// What one read may take from a source before it is cut.
const READ_BUF: usize = 64 * 1024;

/// How long a reset connection's sockets stay open after both directions ended. Closing a
/// socket that has unread input resets it at once and drops whatever its send queue has not
/// sent yet (small pieces can wait there for acknowledgements), so the close waits for
/// those bytes to go out first — unless the relay is being dropped.
pub const RESET_GRACE: Duration = Duration::from_millis(100);

/// Counters of a relay, read with [`Relay::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Accepted connections whose outbound connect succeeded.
    pub connections: u64,
    /// Accepted connections closed because the outbound connect failed.
    pub failed_connects: u64,
    /// Writes towards the target / towards the clients (one per piece, plus one more
    /// wherever a piece straddles two reads), counted just before each write.
    pub pieces_up: u64,
    pub pieces_down: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    failed_connects: AtomicU64,
    pieces: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
}

/// Live connections (both sockets of each, cloned) and whether the relay is stopping.
#[derive(Default)]
struct Registry {
    stopped: bool,
    live: HashMap<u64, [TcpStream; 2]>,
}

struct Shared {
    target: SocketAddr,
    cut: Cut,
    counters: Counters,
    registry: Mutex<Registry>,
    /// Signalled when `registry.stopped` is set (ends a reset connection's grace early).
    stopping: Condvar,
}

/// A running relay. Dropping it kills it like a dead node: the listener is closed (new
/// connects are refused), every live relayed connection is shut down both ways, and all its
/// threads are joined before `drop` returns.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<Vec<JoinHandle<()>>>>,
}

impl Relay {
    /// A relay to `target` listening on a free port of 127.0.0.1.
    pub fn start(target: SocketAddr, cut: Cut) -> io::Result<Relay> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), target, cut)
    }

    /// A relay to `target` listening on `listen`.
    pub fn start_on(listen: SocketAddr, target: SocketAddr, cut: Cut) -> io::Result<Relay> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            target,
            cut,
            counters: Counters::default(),
            registry: Mutex::new(Registry::default()),
            stopping: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("segrelay-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(Relay {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn target(&self) -> SocketAddr {
        self.shared.target
    }

    pub fn cut(&self) -> Cut {
        self.shared.cut
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Stats {
            connections: get(&c.connections),
            failed_connects: get(&c.failed_connects),
            pieces_up: get(&c.pieces[0]),
            pieces_down: get(&c.pieces[1]),
            bytes_up: get(&c.bytes[0]),
            bytes_down: get(&c.bytes[1]),
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let live = {
            let mut reg = self
                .shared
                .registry
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            reg.stopped = true;
            self.shared.stopping.notify_all();
            std::mem::take(&mut reg.live)
        };
        // Wake the acceptor (it sees `stopped` and returns, closing the listener).
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let conns = self
            .acceptor
            .take()
            .and_then(|a| a.join().ok())
            .unwrap_or_default();
        for [a, b] in live.values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        drop(live);
        for c in conns {
            let _ = c.join();
        }
    }
}

/// Accepts until the relay stops; returns the connection threads still to be joined.
fn accept_loop(listener: TcpListener, shared: Arc<Shared>) -> Vec<JoinHandle<()>> {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    for accepted in listener.incoming() {
        if shared
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stopped
        {
            break;
        }
        let Ok(inbound) = accepted else { continue };
        conns.retain(|h| !h.is_finished());
        let (id, s) = (next_id, shared.clone());
        next_id += 1;
        let spawned = std::thread::Builder::new()
            .name(format!("segrelay-conn-{id}"))
            .spawn(move || serve(inbound, id, s));
        if let Ok(h) = spawned {
            conns.push(h);
        }
    }
    conns
}

/// Relays one accepted connection until both directions are done.
fn serve(inbound: TcpStream, id: u64, shared: Arc<Shared>) {
    let Ok(outbound) = connect_from(&inbound, shared.target) else {
        shared
            .counters
            .failed_connects
            .fetch_add(1, Ordering::SeqCst);
        return; // `inbound` is closed here, at once
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    if !register(&shared, id, &inbound, &outbound) {
        return; // the relay is stopping
    }
    shared.counters.connections.fetch_add(1, Ordering::SeqCst);
    let reset = Arc::new(AtomicBool::new(false));
    match spawn_up(&inbound, &outbound, id, &shared, &reset) {
        Some(up) => {
            direction(&outbound, &inbound, Dir::Down, id, &shared, &reset);
            let _ = up.join();
        }
        None => reset.store(true, Ordering::SeqCst),
    }
    let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
    if reset.load(Ordering::SeqCst) {
        reg = match shared
            .stopping
            .wait_timeout_while(reg, RESET_GRACE, |r| !r.stopped)
        {
            Ok((g, _)) => g,
            Err(e) => e.into_inner().0,
        };
        for s in [&inbound, &outbound] {
            let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
        }
    }
    reg.live.remove(&id);
}

/// Connects to `target` from the accepted peer's IP (port 0), so per-address limits behind
/// the relay still tell 127.0.0.1 from 127.0.0.2. A peer on the loopback address of a
/// loopback target needs no bind (the kernel picks that source itself, and an unbound
/// connect takes its port at connect time instead of reserving one at bind time, as
/// `bind` does, where a test may be about to listen). A peer IP that is not local to this
/// host (a remote client of the binary) falls back to an unbound connect.
fn connect_from(inbound: &TcpStream, target: SocketAddr) -> io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let peer = inbound.peer_addr()?.ip();
    let sock = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    let kernel_picks_it =
        target.ip().is_loopback() && (peer == Ipv4Addr::LOCALHOST || peer == Ipv6Addr::LOCALHOST);
    if peer.is_ipv4() == target.is_ipv4() && !kernel_picks_it {
        match sock.bind(&SockAddr::from(SocketAddr::new(peer, 0))) {
            Err(e) if e.kind() != io::ErrorKind::AddrNotAvailable => return Err(e),
            _ => {}
        }
    }
    sock.connect_timeout(&target.into(), Duration::from_secs(5))?;
    Ok(sock.into())
}

/// Records both sockets so `Drop` can cut them; false once the relay is stopping.
fn register(shared: &Shared, id: u64, a: &TcpStream, b: &TcpStream) -> bool {
    let (Ok(a), Ok(b)) = (a.try_clone(), b.try_clone()) else {
        return false;
    };
    let mut reg = shared.registry.lock().unwrap_or_else(|e| e.into_inner());
    if reg.stopped {
        return false;
    }
    reg.live.insert(id, [a, b]);
    true
}

/// Starts the client → target direction on its own thread.
fn spawn_up(
    inbound: &TcpStream,
    outbound: &TcpStream,
    id: u64,
    shared: &Arc<Shared>,
    reset: &Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let (src, dst) = (inbound.try_clone().ok()?, outbound.try_clone().ok()?);
    let (s, r) = (shared.clone(), reset.clone());
    std::thread::Builder::new()
        .name(format!("segrelay-up-{id}"))
        .spawn(move || direction(&src, &dst, Dir::Up, id, &s, &r))
        .ok()
}

/// How one direction ended.
enum End {
    Eof,
    ReadFailed,
    WriteFailed,
}

/// Copies one direction to its end, then passes the ending on (see the module header).
fn direction(
    src: &TcpStream,
    dst: &TcpStream,
    dir: Dir,
    id: u64,
    shared: &Shared,
    reset: &AtomicBool,
) {
    let cutter = Cutter::new(shared.cut, id, dir);
    match pump(src, dst, cutter, &shared.counters, dir) {
        End::Eof => {
            let _ = dst.shutdown(Shutdown::Write);
        }
        End::ReadFailed => {
            reset.store(true, Ordering::SeqCst);
            // Wake the other direction, which reads `dst`; what it holds still goes out.
            let _ = dst.shutdown(Shutdown::Read);
        }
        // The other direction reads the failed side and sees the same failure there, after
        // the bytes that side sent before it.
        End::WriteFailed => reset.store(true, Ordering::SeqCst),
    }
}

/// Reads `src` and writes what it read to `dst` in the cutter's pieces, each at least its
/// gap after the previous write (for a cutter that restarts per read, a read's first piece
/// goes out at once).
fn pump(
    mut src: &TcpStream,
    mut dst: &TcpStream,
    mut cutter: Cutter,
    counters: &Counters,
    dir: Dir,
) -> End {
    let mut buf = vec![0u8; READ_BUF];
    let mut left = 0usize; // bytes of the current piece not yet written
    let mut last_write: Option<Instant> = None;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return End::ReadFailed,
        };
        let mut data = &buf[..n];
        let mut read_start = cutter.restarts_per_read();
        if read_start {
            left = 0;
        }
        while !data.is_empty() {
            if left == 0 {
                let piece = cutter.next_piece();
                left = piece.len;
                if !read_start {
                    wait_gap(last_write, piece.gap);
                }
                read_start = false;
            }
            let k = left.min(data.len());
            // Counted first, so whoever has received the bytes sees them counted.
            counters.pieces[dir as usize].fetch_add(1, Ordering::SeqCst);
            counters.bytes[dir as usize].fetch_add(k as u64, Ordering::SeqCst);
            if dst.write_all(&data[..k]).is_err() {
                return End::WriteFailed;
            }
            last_write = Some(Instant::now());
            left -= k;
            data = &data[k..];
        }
    }
}

fn wait_gap(last_write: Option<Instant>, gap: Duration) {
    if let Some(t) = last_write {
        let due = t + gap;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}
