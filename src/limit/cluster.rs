//! Active-active, the pure half (SPEC §8): one limit per key across several tollgate
//! instances that share a store (Redis), every decision still local and exact for local
//! traffic. No I/O, no clocks: the sync thread (`crate::cluster`) and the simulation in
//! the tests drive these types with time passed in.
//!
//! Owns: the coarse sub-buckets of the shared view ([`Coarse`]), what a shard enforces
//! for the other instances ([`Mode`], [`others_for`]), a shard entry's remote view
//! ([`Remote`]), one tick's exchange with the store ([`Batch`], [`Reply`]), the store's
//! semantics ([`MemStore`]: exactly what `src/cluster/sync.lua` does, used by the
//! simulation and checked against real Redis), and the sync thread's bookkeeping
//! ([`Tracker`]). Must not touch: sockets, threads, Redis, clocks.
//!
//! # The algorithm
//!
//! Each instance keeps its own exact state per key (the ordinary [`WindowState`] of the
//! key's owner core) and, beside it, the others' admissions in each window as last read
//! from the store ([`Remote::others`], two numbers). A request is admitted iff its own
//! count plus the others' count stays within the limit, for both windows
//! ([`WindowState::check_with`]). Admissions are counted in the entry
//! ([`Remote`]'s pending count) and handed to the sync thread every
//! [`FLUSH_MS`] (one ring message per key that admitted something); denied requests never
//! go anywhere. Every `sync_interval` the sync thread makes **one** script call: it
//! pushes the deltas (per key and coarse sub-bucket of both windows: `HINCRBY` of the
//! total and of the instance's own field, `PEXPIRE` until the sub-bucket has left the
//! window) and reads back, per key, the others' admissions in every sub-bucket that
//! intersects each window (`total − own`), which go back to the owner core. A sub-bucket
//! is counted whole while any part of it is inside the window, and a delta is attributed
//! to the sub-bucket of its flush time (never earlier than the admissions), so the view
//! only ever over-counts the others' admissions that it has seen.
//!
//! Keys synced: every key with an admission on this instance within its sustained
//! window, and every key whose others' view is not zero yet; each such key every tick
//! (the bound below needs it, and a key that is far from its limit costs one line of
//! the script). Idle keys (no local admission in the window, nothing from the others)
//! are not synced at all. An instance that has never seen a key does not read it.
//!
//! # Over-admission bound
//!
//! Let `F` = [`FLUSH_MS`], `T` = `sync_interval`, `R` = the longest script call (round
//! trip plus execution). An admission made by instance `j` at time `s` is in the store
//! by `s + F + T + R` and in every other instance's view by `D = F + 2T + 2R`. Let
//! `A(D)` be the most requests of one key that one instance admits in any `D` ms (at
//! most its arrival rate × `D`, at most the limit). Then in every trailing window, for
//! both windows, with `N` instances:
//!
//! **admitted ≤ L + (N − 1) · A(D)**, and never more than `N · L`.
//!
//! Why: the last admission of a window, by instance `i`, saw its own count exactly and
//! every other instance's admissions except those of the last `D` ms (or, on an
//! instance's first requests for a key, nothing yet: then it is that instance's own
//! first `D` ms that the others did not see). Checked exactly by the simulation in the
//! tests (`simulated_instances_stay_within_the_bound`: N instances, a shared
//! [`MemStore`], a virtual clock, ticks, flushes and round trips; the bound is computed
//! from the admissions each instance made). With the defaults (`F` = 10 ms, `T` =
//! 100 ms, `R` ≈ 1 ms on a LAN) `D` ≈ 212 ms: a premium key offered 60/s over two
//! instances (30/s each) can get at most ~7 over its 50 per second.
//!
//! Under-admission: the others' share of a window is counted over whole sub-buckets
//! (up to `g` ms longer than the window: 10 % of the burst window, 1/12 of the
//! sustained one), and it is `D` ms old when it shrinks too.
//!
//! No strict mode: sharing out the remaining headroom (each instance may admit `H / N`
//! of `H = L − global count` until its next sync) is only sound if every instance
//! computes `H` from the same global count; the views are read at different instants
//! (ticks are not aligned and a view is up to `D` old), so an instance's `H` still
//! contains what another admitted since, and the shares can add up to more than `H`.
//! Making it sound needs leases granted by the store (a round trip before an instance
//! may spend headroom it was not granted), which either puts the store on the request
//! path or leaves the lease unused when the traffic moves: not built.
//!
//! # Store failure
//!
//! When the store does not answer (two failed ticks: a timeout or an error, so within
//! three ticks), the instance enforces the configured [`Mode`] instead of the view:
//! `local_share` (each instance `L / alive`, `alive` from the last membership seen),
//! `open` (each instance the whole limit) or `closed` (deny every limited request).
//! Deltas are kept ([`Tracker`], at most [`MAX_PENDING`] key-sub-buckets, beyond that
//! new ones are dropped and counted) and pushed again with the next successful tick;
//! deltas older than every window are dropped (the store would ignore them). A store
//! restarted empty just has fewer admissions in it: each instance's own next pushes
//! rebuild the counts (what was admitted before the restart is forgotten).
//!
//! # Memory
//!
//! A [`Remote`] is 16 bytes per tracked key of the shard (only with `[cluster]` on: the
//! slab stays empty otherwise), beside the 74-byte entry. The sync thread keeps, per
//! key synced, the key, its coarse geometry and the deltas not yet in the store.

use std::collections::HashMap;

use super::window::TierLimits;
#[cfg(doc)]
use super::window::WindowState;

/// How often a core hands its admissions to the sync thread (ms).
pub const FLUSH_MS: u64 = 10;
/// Sub-buckets per burst window.
pub const BURST_SUB_BUCKETS: u64 = 10;
/// Sub-buckets per sustained window (at least; a multiple of the burst width).
pub const SUSTAINED_SUB_BUCKETS: u64 = 12;
/// Most deltas (key × sub-bucket) the sync thread keeps while the store is away.
pub const MAX_PENDING: usize = 262_144;
/// A hash of the store lives this much longer than its sub-bucket stays in a window.
pub const EXPIRE_MARGIN_MS: u64 = 1000;
/// The field of a sub-bucket hash holding every instance's total (an instance id may
/// not be this).
pub const TOTAL_FIELD: &str = "t";

/// A tier's two windows cut into the cluster's coarse sub-buckets, aligned on multiples
/// of their width in cluster time (shared wall-clock ms), the burst width dividing the
/// sustained one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Coarse {
    /// Window lengths (ms; sustained, burst).
    pub w: [u64; 2],
    /// Sub-bucket widths (ms).
    pub g: [u64; 2],
}

impl Coarse {
    pub fn of(lim: &TierLimits) -> Coarse {
        let w = [
            (lim.sustained().length_ms as u64).max(1),
            (lim.burst().length_ms as u64).max(1),
        ];
        let gb = w[1].div_ceil(BURST_SUB_BUCKETS);
        let gs = gb * w[0].div_ceil(SUSTAINED_SUB_BUCKETS).div_ceil(gb);
        Coarse { w, g: [gs, gb] }
    }

    /// The sub-buckets of window `i` that intersect the trailing window at `t`.
    pub fn live(&self, i: usize, t: u64) -> std::ops::RangeInclusive<u64> {
        let lo = (t + 1).saturating_sub(self.w[i]) / self.g[i];
        lo..=t / self.g[i]
    }

    /// Whether sub-bucket `sb` of window `i` can still intersect a window at or after
    /// `now`.
    pub fn alive(&self, i: usize, sb: u64, now: u64) -> bool {
        (sb + 1) * self.g[i] + self.w[i] > now + 1
    }

    /// How long the store keeps sub-bucket `sb` of window `i` from `now` (ms); 0 when it
    /// left every window already.
    pub fn ttl(&self, i: usize, sb: u64, now: u64) -> u64 {
        if self.alive(i, sb, now) {
            (sb + 1) * self.g[i] + self.w[i] - now + EXPIRE_MARGIN_MS
        } else {
            0
        }
    }
}

/// What a shard counts for the other instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// `[cluster]` is off: nothing.
    #[default]
    Alone,
    /// The store answers: the others' admissions as last read.
    Synced,
    /// The store is away, `on_store_failure = "local_share"`: this instance may use
    /// `L / alive` of each window.
    LocalShare { alive: u32 },
    /// The store is away, `on_store_failure = "open"`: the whole limit on each instance.
    Open,
    /// The store is away, `on_store_failure = "closed"`: nothing is admitted.
    Closed,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Alone => "alone",
            Mode::Synced => "synced",
            Mode::LocalShare { .. } => "local_share",
            Mode::Open => "open",
            Mode::Closed => "closed",
        }
    }
}

/// The admissions per window (sustained, burst) a shard adds to its own count for the
/// other instances, in `mode`, with `view` the others' admissions last read.
pub fn others_for(mode: Mode, view: [u32; 2], lim: &TierLimits) -> [u32; 2] {
    let l = [lim.sustained().limit, lim.burst().limit];
    match mode {
        Mode::Alone | Mode::Open => [0, 0],
        Mode::Synced => view,
        Mode::LocalShare { alive } => {
            let n = alive.max(1);
            l.map(|x| x - x / n)
        }
        Mode::Closed => l,
    }
}

/// `on_store_failure`: what an instance enforces while the store does not answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    LocalShare,
    Open,
    Closed,
}

/// Failed ticks in a row after which the failure policy applies.
pub const FAILURES_TO_DEGRADE: u32 = 2;

/// The sync thread's view of the store: answers or not, the last membership seen, and
/// the [`Mode`] the cores must apply.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    policy: Policy,
    failures: u32,
    /// Live instances at the last answer (1 until one came).
    pub alive: u32,
    mode: Mode,
}

impl Link {
    pub fn new(policy: Policy) -> Link {
        Link {
            policy,
            failures: 0,
            alive: 1,
            mode: Mode::Synced,
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Failed ticks in a row now.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A tick answered, with `alive` members: the new mode if it changed.
    pub fn answered(&mut self, alive: u32) -> Option<Mode> {
        self.failures = 0;
        self.alive = alive.max(1);
        self.set(Mode::Synced)
    }

    /// A tick failed: the new mode if it changed (the policy, from the
    /// [`FAILURES_TO_DEGRADE`]th failure in a row).
    pub fn failed(&mut self) -> Option<Mode> {
        self.failures = self.failures.saturating_add(1);
        if self.failures < FAILURES_TO_DEGRADE {
            return None;
        }
        self.set(match self.policy {
            Policy::LocalShare => Mode::LocalShare { alive: self.alive },
            Policy::Open => Mode::Open,
            Policy::Closed => Mode::Closed,
        })
    }

    fn set(&mut self, m: Mode) -> Option<Mode> {
        (m != self.mode).then(|| {
            self.mode = m;
            m
        })
    }
}

/// One shard entry's cluster state (16 bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Others' admissions in each window (sustained, burst), as last read.
    pub others: [u32; 2],
    /// Own admissions not yet handed to the sync thread.
    pub pending: u32,
    /// Position in the shard's list of entries with pending admissions (`NOT_DIRTY`).
    pub dirty: u32,
}

/// [`Remote::dirty`] of an entry with nothing pending.
pub const NOT_DIRTY: u32 = u32::MAX;

impl Default for Remote {
    fn default() -> Self {
        Remote {
            others: [0, 0],
            pending: 0,
            dirty: NOT_DIRTY,
        }
    }
}

/// One key of a tick's script call: its deltas (cluster time they are attributed to,
/// count) and its windows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchKey {
    pub subject: Box<[u8]>,
    pub coarse: Coarse,
    pub deltas: Vec<(u64, u32)>,
}

/// One tick's script call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub now: u64,
    pub keys: Vec<BatchKey>,
}

impl Batch {
    /// Deltas (key × attribution) in this call.
    pub fn deltas(&self) -> usize {
        self.keys.iter().map(|k| k.deltas.len()).sum()
    }
}

/// The script's answer: live members, and the others' admissions per key of the batch
/// (in its order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub alive: u32,
    pub others: Vec<[u32; 2]>,
}

/// The store's name of sub-bucket `sb` of window `i` (1 = sustained, 2 = burst, as in
/// the script) of `subject`: `tg:` subject `:` i `:` sb. Unambiguous: the last two
/// fields are digits.
pub fn bucket_name(subject: &[u8], i: usize, sb: u64) -> Vec<u8> {
    let mut n = Vec::with_capacity(subject.len() + 24);
    n.extend_from_slice(b"tg:");
    n.extend_from_slice(subject);
    n.extend_from_slice(format!(":{}:{sb}", i + 1).as_bytes());
    n
}

/// The members sorted set's name in the store.
pub const MEMBERS: &str = "tg:members";

#[derive(Debug, Default)]
struct Hash {
    fields: HashMap<String, i64>,
    expire_at: u64,
}

/// The store as the script uses it, in memory: sub-bucket hashes with expiry and the
/// members set. [`eval`](Self::eval) is `src/cluster/sync.lua` line by line.
#[derive(Debug, Default)]
pub struct MemStore {
    hashes: HashMap<Vec<u8>, Hash>,
    members: HashMap<String, u64>,
}

impl MemStore {
    /// Forgets everything (a restart without persistence).
    pub fn flush_all(&mut self) {
        *self = MemStore::default();
    }

    fn live_hash(&mut self, name: &[u8], now: u64) -> Option<&mut Hash> {
        let expired = self.hashes.get(name).is_some_and(|h| h.expire_at <= now);
        if expired {
            self.hashes.remove(name);
        }
        self.hashes.get_mut(name)
    }

    /// One script call by instance `inst` at store time `now` (the batch's `now` is the
    /// instance's clock, which the script uses for sub-buckets; `alive_ttl` ms without a
    /// call ends a membership).
    pub fn eval(&mut self, inst: &str, alive_ttl: u64, b: &Batch) -> Reply {
        let now = b.now;
        self.members.insert(inst.to_string(), now);
        self.members.retain(|_, &mut t| t + alive_ttl >= now);
        let mut reply = Reply {
            alive: self.members.len() as u32,
            others: Vec::with_capacity(b.keys.len()),
        };
        for k in &b.keys {
            for &(t, c) in &k.deltas {
                for i in 0..2 {
                    let sb = t / k.coarse.g[i];
                    let ttl = k.coarse.ttl(i, sb, now);
                    if ttl == 0 {
                        continue;
                    }
                    let name = bucket_name(&k.subject, i, sb);
                    self.live_hash(&name, now);
                    let h = self.hashes.entry(name).or_default();
                    *h.fields.entry(TOTAL_FIELD.to_string()).or_default() += c as i64;
                    *h.fields.entry(inst.to_string()).or_default() += c as i64;
                    h.expire_at = now + ttl;
                }
            }
            let mut others = [0u32; 2];
            for (i, o) in others.iter_mut().enumerate() {
                let mut sum = 0i64;
                for sb in k.coarse.live(i, now) {
                    if let Some(h) = self.live_hash(&bucket_name(&k.subject, i, sb), now) {
                        let get = |f: &str| h.fields.get(f).copied().unwrap_or(0);
                        sum += get(TOTAL_FIELD) - get(inst);
                    }
                }
                *o = sum.clamp(0, u32::MAX as i64) as u32;
            }
            reply.others.push(others);
        }
        reply
    }
}

/// What the sync thread tells a core: the others' admissions of one of its keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub core: u16,
    pub subject: Box<[u8]>,
    pub tier: u16,
    pub others: [u32; 2],
}

#[derive(Debug)]
struct Tracked {
    tier: u16,
    core: u16,
    coarse: Coarse,
    /// Deltas not yet confirmed by the store: (attribution time, count), in time order,
    /// one per burst sub-bucket.
    deltas: Vec<(u64, u32)>,
    /// How many of `deltas` are in the script call under way (never merged into).
    in_flight: usize,
    /// Latest attribution time of an own admission.
    last_local: u64,
    /// Others' admissions as last read, and as last told to the core.
    others: [u32; 2],
    told: [u32; 2],
}

impl Tracked {
    fn idle(&self, now: u64) -> bool {
        self.deltas.is_empty()
            && self.others == [0, 0]
            && self.told == [0, 0]
            && self.last_local + self.coarse.w[0] + self.coarse.g[0] <= now
    }
}

/// The sync thread's bookkeeping: which keys are synced, their deltas not yet in the
/// store (kept across failures, bounded), and what each owner core was last told.
#[derive(Debug, Default)]
pub struct Tracker {
    keys: HashMap<Box<[u8]>, Tracked>,
    pending: usize,
    /// Deltas dropped because [`MAX_PENDING`] were already waiting.
    pub dropped: u64,
}

impl Tracker {
    /// Keys synced now.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Deltas waiting for the store.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// `count` admissions of `subject` (tier `tier`, owned by `core`) handed over at
    /// cluster time `at`.
    pub fn add(
        &mut self,
        subject: &[u8],
        tier: u16,
        core: u16,
        coarse: Coarse,
        at: u64,
        count: u32,
    ) {
        let full = self.pending >= MAX_PENDING;
        let t = match self.keys.get_mut(subject) {
            Some(t) => t,
            None => self.keys.entry(subject.into()).or_insert(Tracked {
                tier,
                core,
                coarse,
                deltas: Vec::new(),
                in_flight: 0,
                last_local: at,
                others: [0, 0],
                told: [0, 0],
            }),
        };
        (t.tier, t.core, t.coarse) = (tier, core, coarse);
        t.last_local = t.last_local.max(at);
        let gb = t.coarse.g[1];
        let mergeable = t.deltas.len() > t.in_flight;
        match t.deltas.last_mut() {
            Some((last, c)) if mergeable && *last / gb == at / gb => {
                *last = (*last).max(at);
                *c = c.saturating_add(count);
            }
            _ if full => self.dropped += 1,
            _ => {
                t.deltas.push((at, count));
                self.pending += 1;
            }
        }
    }

    /// The script call for a tick at `now`: every key synced, with all its deltas (those
    /// older than every window dropped first). Keys gone idle stop being synced (their
    /// cores were told zero already). Answer with [`confirm`](Self::confirm) or
    /// [`failed`](Self::failed).
    pub fn batch(&mut self, now: u64) -> Batch {
        let mut batch = Batch {
            now,
            keys: Vec::with_capacity(self.keys.len()),
        };
        let mut pruned = 0;
        self.keys.retain(|subject, t| {
            let before = t.deltas.len();
            let c = t.coarse;
            t.deltas.retain(|&(at, _)| c.alive(0, at / c.g[0], now));
            pruned += before - t.deltas.len();
            if t.idle(now) {
                return false;
            }
            t.in_flight = t.deltas.len();
            batch.keys.push(BatchKey {
                subject: subject.clone(),
                coarse: t.coarse,
                deltas: t.deltas.clone(),
            });
            true
        });
        self.pending -= pruned;
        batch
    }

    /// The script call failed: its deltas stay, for the next one.
    pub fn failed(&mut self) {
        for t in self.keys.values_mut() {
            t.in_flight = 0;
        }
    }

    /// The store answered `reply` to `batch`: its deltas are in, the views are new.
    /// Returns a notice for every core whose view of a key changed.
    pub fn confirm(&mut self, batch: &Batch, reply: &Reply) -> Vec<Notice> {
        let mut out = Vec::new();
        for (k, others) in batch.keys.iter().zip(&reply.others) {
            let Some(t) = self.keys.get_mut(&k.subject) else {
                continue;
            };
            // Deltas added since the batch was built are kept (they come after these).
            let sent = t.in_flight.min(t.deltas.len());
            t.deltas.drain(..sent);
            t.in_flight = 0;
            self.pending -= sent;
            t.others = *others;
            if t.told != t.others {
                t.told = t.others;
                out.push(notice(&k.subject, t));
            }
        }
        out
    }

    /// A notice could not be delivered: tell that core again after the next tick.
    pub fn untold(&mut self, subject: &[u8]) {
        if let Some(t) = self.keys.get_mut(subject) {
            t.told = [u32::MAX; 2];
        }
    }
}

fn notice(subject: &[u8], t: &Tracked) -> Notice {
    Notice {
        core: t.core,
        subject: subject.into(),
        tier: t.tier,
        others: t.others,
    }
}

#[cfg(test)]
mod tests;
