//! Active-active, the pure half: one limit per key across several tollgate
//! instances that share a store (Redis), every decision still local and exact for local
//! traffic. No I/O, no clocks: the sync thread (`crate::cluster`) and the simulation in
//! the tests drive these types with time passed in.
//!
//! Owns: the coarse sub-buckets of the shared view ([`Coarse`]), what a shard enforces
//! for the other instances ([`Mode`], [`others_for`], the failure policy [`Link`]), a
//! shard entry's remote view ([`Remote`]), one tick's exchange with the store ([`Batch`],
//! [`Reply`]), the store's
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
//! pushes the instance's own admissions per key and coarse sub-bucket of both windows —
//! as cumulative counts, in one hash per key and window ([`window_hash`], read whole with
//! one `HGETALL`): the instance's field of the sub-bucket (`SB:INSTANCE`) is raised to the
//! count (never lowered), the sub-bucket's total (`SB`) by as much, fields of sub-buckets
//! that left the window are deleted and the hash expires with its newest sub-bucket — and
//! reads back, per key, the others' admissions in every sub-bucket that intersects each
//! window (`total − own`), which go back to the owner core.
//! Cumulative counts make every call idempotent: a call that timed out but still ran
//! (a stopped Redis runs its queued calls when continued), replayed or late, never
//! counts an admission twice (`tests/cluster.rs` saw 6× over-counting with increments).
//! A sub-bucket is counted whole while any part of it is inside the window, and an
//! admission is attributed to the sub-bucket of its flush time (never earlier than the
//! admission), so the view only ever over-counts the others' admissions that it has
//! seen.
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
//! Own counts are kept ([`Tracker`], at most [`MAX_PENDING`] key × window × sub-bucket
//! counts, beyond that new admissions are dropped and counted) and sent with the next
//! successful tick; counts of sub-buckets outside every window are dropped (the store
//! would ignore them). After a failed tick the next call sends **every** live count, not
//! only the unconfirmed ones, and so does every [`FULL_EVERY`]th tick: a store restarted
//! empty (or failed over) holds every instance's admissions of the current windows again
//! after one tick of each.
//!
//! # Memory
//!
//! A [`Remote`] is 16 bytes per tracked key of the shard (only with `[cluster]` on: the
//! slab stays empty otherwise), beside the 74-byte entry. The sync thread keeps, per
//! key synced, the key, its coarse geometry and its own count per live sub-bucket (at
//! most 13 + 11 with the default windows, 24 bytes each).

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
/// Most own sub-bucket counts (key × window × live sub-bucket) the sync thread holds.
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
        Coarse::from_windows([lim.sustained().length_ms, lim.burst().length_ms])
    }

    /// The sub-buckets of windows of `w` ms (sustained, burst).
    pub fn from_windows(w: [u32; 2]) -> Coarse {
        let w = w.map(|x| (x as u64).max(1));
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
    /// Number for stats: 0 alone, 1 synced, 2 local_share, 3 open, 4 closed.
    pub fn code(self) -> u64 {
        match self {
            Mode::Alone => 0,
            Mode::Synced => 1,
            Mode::LocalShare { .. } => 2,
            Mode::Open => 3,
            Mode::Closed => 4,
        }
    }

    /// The name of a [`code`](Self::code).
    pub fn name_of(code: u64) -> &'static str {
        ["alone", "synced", "local_share", "open", "closed"]
            .get(code as usize)
            .copied()
            .unwrap_or("unknown")
    }

    pub fn name(self) -> &'static str {
        Mode::name_of(self.code())
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

/// One key of a tick's script call: per window (sustained, burst), this instance's own
/// admissions in each of its sub-buckets so far — cumulative counts, not deltas, so that a
/// call the store runs twice (a timed-out call the server still executes, then the replay)
/// or late counts nothing twice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchKey {
    pub subject: Box<[u8]>,
    pub coarse: Coarse,
    /// `(sub-bucket, own count)` per window.
    pub counts: [Vec<(u64, u32)>; 2],
}

/// One tick's script call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    pub now: u64,
    pub keys: Vec<BatchKey>,
}

impl Batch {
    /// Sub-bucket counts (key × window × sub-bucket) in this call.
    pub fn deltas(&self) -> usize {
        self.keys
            .iter()
            .map(|k| k.counts[0].len() + k.counts[1].len())
            .sum()
    }
}

/// The script's answer: live members, and the others' admissions per key of the batch
/// (in its order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reply {
    pub alive: u32,
    pub others: Vec<[u32; 2]>,
}

/// The store's name of the hash of window `i` (1 = sustained, 2 = burst, as in the
/// script) of `subject`: `tg:` subject `:` i. Unambiguous: the last field is one digit.
/// Its fields: `SB` (every instance's admissions in sub-bucket `SB`) and `SB:INSTANCE`.
pub fn window_hash(subject: &[u8], i: usize) -> Vec<u8> {
    let mut n = Vec::with_capacity(subject.len() + 8);
    n.extend_from_slice(b"tg:");
    n.extend_from_slice(subject);
    n.extend_from_slice(format!(":{}", i + 1).as_bytes());
    n
}

/// The members sorted set's name in the store.
pub const MEMBERS: &str = "tg:members";

#[derive(Debug, Default)]
struct Hash {
    fields: HashMap<String, i64>,
    /// Expiry (store time, ms); `u64::MAX` = none.
    expire_at: u64,
}

/// The store as the script uses it, in memory: one hash per key and window (with expiry)
/// and the members set. [`eval`](Self::eval) is `src/cluster/sync.lua` step by step.
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

    /// The hash `name` as `HGETALL` would see it at `now` (expired = gone).
    fn live_hash(&mut self, name: &[u8], now: u64) -> &mut Hash {
        if self.hashes.get(name).is_some_and(|h| h.expire_at <= now) {
            self.hashes.remove(name);
        }
        self.hashes.entry(name.to_vec()).or_insert(Hash {
            fields: HashMap::new(),
            expire_at: u64::MAX,
        })
    }

    /// One script call by instance `inst` (the batch's `now` is the instance's clock,
    /// which the script uses for sub-buckets and expiry; `alive_ttl` ms without a call
    /// ends a membership). Per sub-bucket: the instance's field is raised to its count
    /// (never lowered) and the total by as much; fields of sub-buckets that left the
    /// window are deleted.
    pub fn eval(&mut self, inst: &str, alive_ttl: u64, b: &Batch) -> Reply {
        let now = b.now;
        self.members.insert(inst.to_string(), now);
        self.members.retain(|_, &mut t| t + alive_ttl >= now);
        let mut reply = Reply {
            alive: self.members.len() as u32,
            others: Vec::with_capacity(b.keys.len()),
        };
        let suffix = format!(":{inst}");
        for k in &b.keys {
            let mut others = [0u32; 2];
            for (i, counts) in k.counts.iter().enumerate() {
                let (w, g) = (k.coarse.w[i], k.coarse.g[i]);
                let lo = (now + 1).saturating_sub(w) / g;
                let name = window_hash(&k.subject, i);
                let h = self.live_hash(&name, now);
                let mut newest = None;
                for &(sb, v) in counts {
                    let own = format!("{sb}{suffix}");
                    let cur = h.fields.get(&own).copied().unwrap_or(0);
                    if sb >= lo && i64::from(v) > cur {
                        *h.fields.entry(sb.to_string()).or_default() += i64::from(v) - cur;
                        h.fields.insert(own, i64::from(v));
                        newest = newest.max(Some(sb));
                    }
                }
                let mut sum = 0i64;
                let all: Vec<(String, i64)> =
                    h.fields.iter().map(|(f, v)| (f.clone(), *v)).collect();
                for (f, v) in all {
                    let (sb, is_own) = match f.split_once(':') {
                        Some((sb, _)) => (sb, true),
                        None => (f.as_str(), false),
                    };
                    let sb: u64 = sb.parse().unwrap_or(0);
                    if sb < lo {
                        h.fields.remove(&f);
                    } else if !is_own {
                        sum += v - h.fields.get(&format!("{f}{suffix}")).copied().unwrap_or(0);
                    }
                }
                if let Some(sb) = newest {
                    let left = (sb + 1) * g + w - now + EXPIRE_MARGIN_MS;
                    let ttl = h.expire_at.saturating_sub(now);
                    if h.expire_at == u64::MAX || ttl < left {
                        h.expire_at = now + left;
                    }
                }
                if h.fields.is_empty() {
                    self.hashes.remove(&name);
                }
                others[i] = sum.clamp(0, u32::MAX as i64) as u32;
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

/// One sub-bucket of a key's own admissions: its index, the count, and how much of it
/// the store has confirmed.
#[derive(Clone, Copy, Debug)]
struct Own {
    sb: u64,
    count: u32,
    confirmed: u32,
}

#[derive(Debug)]
struct Tracked {
    tier: u16,
    core: u16,
    coarse: Coarse,
    /// Own admissions per live sub-bucket of each window, oldest first.
    own: [Vec<Own>; 2],
    /// Latest attribution time of an own admission.
    last_local: u64,
    /// Others' admissions as last read, and as last told to the core.
    others: [u32; 2],
    told: [u32; 2],
}

impl Tracked {
    fn unconfirmed(&self) -> usize {
        self.own
            .iter()
            .flatten()
            .filter(|o| o.count > o.confirmed)
            .count()
    }

    fn idle(&self, now: u64) -> bool {
        self.unconfirmed() == 0
            && self.others == [0, 0]
            && self.told == [0, 0]
            && self.last_local + self.coarse.w[0] + self.coarse.g[0] <= now
    }
}

/// Ticks between two calls that send every live count (not only the unconfirmed ones),
/// so that a store that lost data without an error (a failover) is filled again.
pub const FULL_EVERY: u64 = 50;

/// The sync thread's bookkeeping: which keys are synced, their own admissions per live
/// sub-bucket (bounded) and which of those the store has, and what each owner core was
/// last told.
#[derive(Debug, Default)]
pub struct Tracker {
    keys: HashMap<Box<[u8]>, Tracked>,
    /// Sub-bucket counts held (all keys).
    held: usize,
    /// Send every live count in the next call (after a failure: the store may have been
    /// restarted empty, or have run a timed-out call).
    full: bool,
    ticks: u64,
    /// Admissions dropped because [`MAX_PENDING`] sub-bucket counts were already held.
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

    /// Sub-bucket counts the store has not confirmed yet.
    pub fn pending(&self) -> usize {
        self.keys.values().map(Tracked::unconfirmed).sum()
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
        let held = self.held;
        let t = match self.keys.get_mut(subject) {
            Some(t) => t,
            None => self.keys.entry(subject.into()).or_insert(Tracked {
                tier,
                core,
                coarse,
                own: [Vec::new(), Vec::new()],
                last_local: at,
                others: [0, 0],
                told: [0, 0],
            }),
        };
        (t.tier, t.core, t.coarse) = (tier, core, coarse);
        t.last_local = t.last_local.max(at);
        for (i, own) in t.own.iter_mut().enumerate() {
            let sb = at / t.coarse.g[i];
            match own.iter_mut().rev().find(|o| o.sb == sb) {
                Some(o) => o.count = o.count.saturating_add(count),
                None if held >= MAX_PENDING => self.dropped += u64::from(count),
                None => {
                    let at = own.partition_point(|o| o.sb < sb);
                    own.insert(
                        at,
                        Own {
                            sb,
                            count,
                            confirmed: 0,
                        },
                    );
                    self.held += 1;
                }
            }
        }
    }

    /// The script call for a tick at `now`: every key synced, with its unconfirmed
    /// counts (every live count after a failure and every [`FULL_EVERY`] ticks); counts
    /// of sub-buckets outside every window are dropped first. Keys gone idle stop being
    /// synced (their cores were told zero already). Answer with
    /// [`confirm`](Self::confirm) or [`failed`](Self::failed).
    pub fn batch(&mut self, now: u64) -> Batch {
        self.ticks += 1;
        let full = self.full || self.ticks % FULL_EVERY == 0;
        let mut batch = Batch {
            now,
            keys: Vec::with_capacity(self.keys.len()),
        };
        let mut held = 0;
        self.keys.retain(|subject, t| {
            let c = t.coarse;
            for (i, own) in t.own.iter_mut().enumerate() {
                own.retain(|o| c.alive(i, o.sb, now));
                held += own.len();
            }
            if t.idle(now) {
                held -= t.own[0].len() + t.own[1].len();
                return false;
            }
            let pick = |own: &Vec<Own>| -> Vec<(u64, u32)> {
                own.iter()
                    .filter(|o| full || o.count > o.confirmed)
                    .map(|o| (o.sb, o.count))
                    .collect()
            };
            batch.keys.push(BatchKey {
                subject: subject.clone(),
                coarse: c,
                counts: [pick(&t.own[0]), pick(&t.own[1])],
            });
            true
        });
        self.held = held;
        batch
    }

    /// The call failed: the next one sends every live count.
    pub fn failed(&mut self) {
        self.full = true;
    }

    /// The store answered `reply` to `batch`: its counts are in, the views are new.
    /// Returns a notice for every core whose view of a key changed.
    pub fn confirm(&mut self, batch: &Batch, reply: &Reply) -> Vec<Notice> {
        self.full = false;
        let mut out = Vec::new();
        for (k, others) in batch.keys.iter().zip(&reply.others) {
            let Some(t) = self.keys.get_mut(&k.subject) else {
                continue;
            };
            for (own, sent) in t.own.iter_mut().zip(&k.counts) {
                for &(sb, v) in sent {
                    if let Some(o) = own.iter_mut().find(|o| o.sb == sb) {
                        o.confirmed = o.confirmed.max(v);
                    }
                }
            }
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
