//! The cross-core ring mesh: one bounded SPSC ring per (sender, receiver) core pair,
//! plus one ring per core from the control plane, and one doorbell per core.
//!
//! Owns: rings, doorbells, per-destination outboxes. Must not touch: HTTP, limits.
//! Batching: senders queue into a local outbox during an event-loop turn; the core's
//! mesh task flushes every outbox once per turn (one ring commit and one doorbell per
//! destination per turn). Receivers drain everything inbound on every turn, so a busy
//! core needs no wake; a parked core is woken by its doorbell (monoio `sync` waker).
//! A full ring never drops a message: it stays in the outbox for the next turn.

use std::collections::VecDeque;
use std::sync::Arc;
#[allow(
    clippy::disallowed_types,
    reason = "only ControlHandle (the control thread's side) locks"
)]
use std::sync::Mutex;
use std::task::Waker;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;

use super::msg::{ControlMsg, CoreMsg};

/// Slots per core-pair ring. A Check is ~64 bytes, so 1024 slots ≈ 64 KiB per pair.
pub const RING_SLOTS: usize = 1024;
/// Slots in each control → core ring.
pub const CONTROL_SLOTS: usize = 64;

/// Wakes a core's mesh task from another thread.
#[derive(Default)]
pub struct Doorbell {
    waker: AtomicWaker,
}

impl Doorbell {
    pub fn ring(&self) {
        self.waker.wake();
    }
}

/// The mesh endpoints owned by one core (moved into its thread).
pub struct CoreMesh {
    id: usize,
    outs: Vec<Option<rtrb::Producer<CoreMsg>>>,
    ins: Vec<Option<rtrb::Consumer<CoreMsg>>>,
    control_in: rtrb::Consumer<ControlMsg>,
    doorbells: Vec<Arc<Doorbell>>,
    outbox: Vec<VecDeque<CoreMsg>>,
    dirty: bool,
    /// Messages sent / received and ring commits (batches) sent, for stats.
    pub sent: u64,
    pub received: u64,
    pub batches: u64,
}

/// The control plane's handle on every core (cloneable; control plane only). Its rings sit
/// behind a `Mutex` because several control threads (signals, poller, admin) share the one
/// producer end per core; cores never take it.
#[derive(Clone)]
#[allow(
    clippy::disallowed_types,
    reason = "control plane only: the data path never locks it"
)]
pub struct ControlHandle {
    rings: Arc<Vec<Mutex<rtrb::Producer<ControlMsg>>>>,
    doorbells: Vec<Arc<Doorbell>>,
}

#[allow(
    clippy::disallowed_types,
    reason = "control plane only: the data path never locks it"
)]
impl ControlHandle {
    fn new(rings: Vec<rtrb::Producer<ControlMsg>>, doorbells: Vec<Arc<Doorbell>>) -> Self {
        ControlHandle {
            rings: Arc::new(rings.into_iter().map(Mutex::new).collect()),
            doorbells,
        }
    }

    pub fn cores(&self) -> usize {
        self.doorbells.len()
    }

    /// Sends to one core, retrying for up to `patience` when its ring is full.
    pub fn send(&self, core: usize, msg: ControlMsg, patience: Duration) -> Result<(), ControlMsg> {
        let deadline = Instant::now() + patience;
        let mut msg = msg;
        loop {
            {
                let mut ring = self.rings[core].lock().unwrap_or_else(|e| e.into_inner());
                match ring.push(msg) {
                    Ok(()) => {
                        self.doorbells[core].ring();
                        return Ok(());
                    }
                    Err(rtrb::PushError::Full(m)) => msg = m,
                }
            }
            if Instant::now() >= deadline {
                return Err(msg);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Builds the full mesh for `n` cores.
pub fn build(n: usize) -> (Vec<CoreMesh>, ControlHandle) {
    let doorbells: Vec<Arc<Doorbell>> = (0..n).map(|_| Arc::new(Doorbell::default())).collect();
    let mut outs: Vec<Vec<Option<rtrb::Producer<CoreMsg>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    let mut ins: Vec<Vec<Option<rtrb::Consumer<CoreMsg>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for (from, out_row) in outs.iter_mut().enumerate() {
        for (to, slot) in out_row.iter_mut().enumerate() {
            if from == to {
                continue;
            }
            let (p, c) = rtrb::RingBuffer::new(RING_SLOTS);
            *slot = Some(p);
            ins[to][from] = Some(c);
        }
    }
    let mut control_producers = Vec::with_capacity(n);
    let mut control_consumers = Vec::with_capacity(n);
    for _ in 0..n {
        let (p, c) = rtrb::RingBuffer::new(CONTROL_SLOTS);
        control_producers.push(p);
        control_consumers.push(c);
    }
    let meshes = outs
        .into_iter()
        .zip(ins)
        .zip(control_consumers)
        .enumerate()
        .map(|(id, ((outs, ins), control_in))| CoreMesh {
            id,
            outs,
            ins,
            control_in,
            doorbells: doorbells.clone(),
            outbox: (0..n).map(|_| VecDeque::new()).collect(),
            dirty: false,
            sent: 0,
            received: 0,
            batches: 0,
        })
        .collect();
    (meshes, ControlHandle::new(control_producers, doorbells))
}

impl CoreMesh {
    pub fn id(&self) -> usize {
        self.id
    }

    pub fn cores(&self) -> usize {
        self.doorbells.len()
    }

    /// Queues a message for `dest` (delivered at the next `flush`).
    pub fn send(&mut self, dest: usize, msg: CoreMsg) {
        debug_assert_ne!(dest, self.id);
        self.outbox[dest].push_back(msg);
        self.dirty = true;
    }

    /// Messages waiting in the outbox for `dest` (not yet in its ring).
    pub fn queued(&self, dest: usize) -> usize {
        self.outbox.get(dest).map_or(0, |q| q.len())
    }

    pub fn has_pending_output(&self) -> bool {
        self.dirty
    }

    /// Pushes every outbox into its ring (one commit + one doorbell per destination).
    /// Returns true when everything was delivered; false if a ring was full.
    pub fn flush(&mut self) -> bool {
        if !self.dirty {
            return true;
        }
        let mut all = true;
        for dest in 0..self.outbox.len() {
            let queue = &mut self.outbox[dest];
            if queue.is_empty() {
                continue;
            }
            let Some(ring) = self.outs[dest].as_mut() else {
                continue;
            };
            let n = queue.len().min(ring.slots());
            if n > 0 {
                if let Ok(chunk) = ring.write_chunk_uninit(n) {
                    let pushed = chunk.fill_from_iter(queue.drain(..n));
                    self.sent += pushed as u64;
                    self.batches += 1;
                    self.doorbells[dest].ring();
                }
            }
            if !queue.is_empty() {
                all = false;
            }
        }
        self.dirty = !all;
        all
    }

    /// Drains every inbound core ring, calling `f(from, msg)`. Returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(usize, CoreMsg)) -> usize {
        let mut total = 0;
        for from in 0..self.ins.len() {
            let Some(ring) = self.ins[from].as_mut() else {
                continue;
            };
            let n = ring.slots();
            if n == 0 {
                continue;
            }
            if let Ok(chunk) = ring.read_chunk(n) {
                for msg in chunk {
                    f(from, msg);
                }
                total += n;
            }
        }
        self.received += total as u64;
        total
    }

    /// Pops one control message, if any.
    pub fn pop_control(&mut self) -> Option<ControlMsg> {
        self.control_in.pop().ok()
    }

    /// Registers the waker of this core's mesh task on its doorbell. Call before the
    /// final emptiness check to avoid a lost wake-up.
    pub fn register(&self, waker: &Waker) {
        self.doorbells[self.id].waker.register(waker);
    }

    /// True when nothing is waiting in any inbound ring.
    pub fn inbound_empty(&self) -> bool {
        self.ins.iter().flatten().all(|r| r.is_empty()) && self.control_in.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::msg::Subject;

    #[test]
    fn messages_cross_and_batch() {
        let (mut meshes, _ctl) = build(3);
        let mut m2 = meshes.pop().unwrap();
        let _m1 = meshes.pop().unwrap();
        let mut m0 = meshes.pop().unwrap();
        for slot in 0..10 {
            m0.send(
                2,
                CoreMsg::Check {
                    slot,
                    subject: Subject::new(b"AKIAEXAMPLE"),
                    tier: 1,
                },
            );
        }
        assert_eq!(m2.drain(|_, _| panic!("nothing flushed yet")), 0);
        assert!(m0.flush());
        assert_eq!(m0.batches, 1, "ten messages, one commit");
        let mut got = Vec::new();
        m2.drain(|from, msg| {
            assert_eq!(from, 0);
            if let CoreMsg::Check { slot, subject, .. } = msg {
                assert_eq!(subject.as_bytes(), b"AKIAEXAMPLE");
                got.push(slot);
            }
        });
        assert_eq!(got, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn full_ring_keeps_messages_in_outbox() {
        let (mut meshes, _ctl) = build(2);
        let mut m1 = meshes.pop().unwrap();
        let mut m0 = meshes.pop().unwrap();
        let total = RING_SLOTS + 10;
        for slot in 0..total as u32 {
            m0.send(
                1,
                CoreMsg::Check {
                    slot,
                    subject: Subject::new(b"k"),
                    tier: 0,
                },
            );
        }
        assert!(!m0.flush(), "ring holds only RING_SLOTS");
        let mut seen = 0;
        seen += m1.drain(|_, _| {});
        assert_eq!(seen, RING_SLOTS);
        assert!(m0.flush());
        seen += m1.drain(|_, _| {});
        assert_eq!(seen, total, "nothing dropped");
    }

    #[test]
    fn long_subjects_go_to_heap() {
        let long = vec![b'A'; 200];
        let s = Subject::new(&long);
        assert!(matches!(s, Subject::Heap(_)));
        assert_eq!(s.as_bytes(), &long[..]);
        assert!(matches!(Subject::new(b"short"), Subject::Inline { .. }));
    }
}
