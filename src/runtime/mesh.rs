//! The cross-core ring mesh: one bounded SPSC ring per (sender, receiver) core pair,
//! plus one ring per core from the control plane, one doorbell per core, and (with
//! `[cluster]`, [`build_sync`]) a ring each way between every core and the sync thread.
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

use super::msg::{ControlMsg, CoreMsg, FromSync, ToSync};

/// Slots per core-pair ring. A Check is ~64 bytes, so 1024 slots ≈ 64 KiB per pair.
pub const RING_SLOTS: usize = 1024;
/// Slots in each control → core ring.
pub const CONTROL_SLOTS: usize = 64;
/// Slots in each core → sync thread ring: one delta per key and flush (every 10 ms), so a
/// core can flush ~1,600 keys per flush while the sync thread waits on one store call of
/// 100 ms (beyond that, admissions wait in their entries; nothing is lost).
pub const SYNC_SLOTS: usize = 16384;

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
    /// This core's rings to and from the sync thread (active-active only).
    sync: Option<(rtrb::Producer<ToSync>, rtrb::Consumer<FromSync>)>,
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
            sync: None,
            sent: 0,
            received: 0,
            batches: 0,
        })
        .collect();
    (meshes, ControlHandle::new(control_producers, doorbells))
}

/// The sync thread's ends of the core ↔ sync rings, and the cores' doorbells.
pub struct SyncEnds {
    from_cores: Vec<rtrb::Consumer<ToSync>>,
    to_cores: Vec<rtrb::Producer<FromSync>>,
    doorbells: Vec<Arc<Doorbell>>,
}

/// Adds a ring each way between every core of `meshes` and one sync thread.
pub fn build_sync(meshes: &mut [CoreMesh]) -> SyncEnds {
    let mut from_cores = Vec::with_capacity(meshes.len());
    let mut to_cores = Vec::with_capacity(meshes.len());
    for m in meshes.iter_mut() {
        let (up_p, up_c) = rtrb::RingBuffer::new(SYNC_SLOTS);
        let (down_p, down_c) = rtrb::RingBuffer::new(SYNC_SLOTS);
        m.sync = Some((up_p, down_c));
        from_cores.push(up_c);
        to_cores.push(down_p);
    }
    let doorbells = meshes
        .first()
        .map(|m| m.doorbells.clone())
        .unwrap_or_default();
    SyncEnds {
        from_cores,
        to_cores,
        doorbells,
    }
}

impl SyncEnds {
    pub fn cores(&self) -> usize {
        self.to_cores.len()
    }

    /// Drains every core's ring, calling `f(core, msg)`. Returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(usize, ToSync)) -> usize {
        let mut total = 0;
        for (core, ring) in self.from_cores.iter_mut().enumerate() {
            let n = ring.slots();
            if let Ok(chunk) = ring.read_chunk(n) {
                for msg in chunk {
                    f(core, msg);
                }
                total += n;
            }
        }
        total
    }

    /// Pushes one message to `core` (no doorbell: [`wake`](Self::wake) once per batch).
    pub fn send(&mut self, core: usize, msg: FromSync) -> Result<(), FromSync> {
        match self.to_cores.get_mut(core) {
            Some(ring) => ring.push(msg).map_err(|rtrb::PushError::Full(m)| m),
            None => Err(msg),
        }
    }

    /// Rings `core`'s doorbell (its mesh task drains the sync ring).
    pub fn wake(&self, core: usize) {
        if let Some(d) = self.doorbells.get(core) {
            d.ring();
        }
    }
}

impl CoreMesh {
    pub fn id(&self) -> usize {
        self.id
    }

    /// Whether this core has rings to a sync thread (`[cluster]` on).
    pub fn has_sync(&self) -> bool {
        self.sync.is_some()
    }

    /// Pushes one message to the sync thread; `Err` (the message back) when its ring is
    /// full or there is no sync thread.
    pub fn to_sync(&mut self, msg: ToSync) -> Result<(), ToSync> {
        match self.sync.as_mut() {
            Some((p, _)) => p.push(msg).map_err(|rtrb::PushError::Full(m)| m),
            None => Err(msg),
        }
    }

    /// Drains the sync thread's ring to this core, calling `f(msg)`. Returns how many.
    pub fn drain_sync(&mut self, mut f: impl FnMut(FromSync)) -> usize {
        let Some((_, c)) = self.sync.as_mut() else {
            return 0;
        };
        let n = c.slots();
        if let Ok(chunk) = c.read_chunk(n) {
            for msg in chunk {
                f(msg);
            }
        }
        n
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
        self.ins.iter().flatten().all(|r| r.is_empty())
            && self.control_in.is_empty()
            && self.sync.as_ref().is_none_or(|(_, c)| c.is_empty())
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
                    version: 1,
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
                    version: 1,
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
    fn sync_rings_carry_deltas_up_and_views_down() {
        use crate::runtime::msg::{FromSync, ToSync};
        let (mut meshes, _ctl) = build(2);
        assert!(!meshes[0].has_sync());
        let mut ends = build_sync(&mut meshes);
        assert!(meshes[1].has_sync());
        let delta = |n| ToSync::Delta {
            subject: Subject::new(b"k"),
            tier: 0,
            windows: [60_000, 1000],
            at: 5,
            count: n,
        };
        assert!(meshes[1].to_sync(delta(3)).is_ok());
        for _ in 0..SYNC_SLOTS {
            assert!(meshes[0].to_sync(delta(1)).is_ok());
        }
        assert!(meshes[0].to_sync(delta(1)).is_err(), "a full ring refuses");
        let mut from = [0usize; 2];
        assert_eq!(ends.drain(|core, _| from[core] += 1), SYNC_SLOTS + 1);
        assert_eq!(from, [SYNC_SLOTS, 1]);
        let others = FromSync::Others {
            subject: Subject::new(b"k"),
            tier: 0,
            others: [4, 2],
        };
        assert!(ends.send(1, others).is_ok());
        assert!(!meshes[1].inbound_empty(), "the view waits for core 1");
        let mut got = Vec::new();
        meshes[1].drain_sync(|m| got.push(format!("{m:?}")));
        assert_eq!(got.len(), 1);
        assert!(got[0].contains("[4, 2]"), "{got:?}");
        assert!(meshes[1].inbound_empty());
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
