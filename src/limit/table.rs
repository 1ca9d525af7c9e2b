//! One core's shard of the counter table: subject → [`WindowState`], with idle expiry,
//! a hard size cap and bounded work per operation.
//!
//! Owns: the [`Shard`] (its own hash index, entry slab and layout registry),
//! [`client_network`] (how client addresses are grouped), [`addr_subject`] and
//! [`penalty_subject`]. Must not touch: other cores' shards (a
//! subject lives on its owner core only, see `route`; penalty subjects are the
//! exception — the caller counts them on every core), clocks (time is passed in), I/O.
//!
//! # Structure and memory
//!
//! Entries live in two dense slabs with the same positions: `metas` (26 bytes each: the key
//! inline up to 21 bytes — AWS key ids are 20, address subjects 17 — its length, the tier
//! and the limits layout id; alignment 2, so no padding) and `states` (the 48-byte
//! [`WindowState`], whose own last-update time orders forced evictions). Keys of 22–28
//! bytes drawn from the 64 characters `0-9 A-Z a-z - _` (Garage's 26-byte `GK…` ids) are
//! stored inline too, packed 6 bits per character into the same 21 bytes; other longer keys
//! go to a side slab (a heap copy each). An open-addressing index (`Vec<u32>`, linear
//! probing, load <= 3/4, each cell = 24-bit slot + 1 and an 8-bit hash tag; hence at most
//! [`MAX_ENTRIES`] per shard) maps keys to entries; hashing is SipHash with a per-shard
//! random key (`RandomState`), since keys are attacker-chosen. Cells keep only 8 bits of
//! the hash, so index growth and backward-shift deletes hash the moved keys again. Removal
//! is backward-shift in the index and `swap_remove` in the slabs, so a cursor over the
//! slabs gives cheap incremental sweeps and eviction sampling. Per key: 74 bytes of entry
//! plus 5.3–10.7 bytes of index (4-byte cells at load 3/8–3/4), for raw and packed keys
//! alike. A key of a tier with a limit over 65,535 keeps its 128-byte
//! [`WideState`] in a side slab (`counters`; its `states` slot holds the index), so it
//! costs 128 bytes more: 202 bytes of entry plus the index. Measured (`rss_one_million_keys`, `rss_one_million_garage_keys`, release): see
//! `bench/results/` (1,000,000 20-byte AWS-style and 26-byte Garage-style keys).
//!
//! # Packed keys
//!
//! A lookup first puts the key in its stored form (`Probe`: the `Meta::len` marker and, for
//! a packed key, the 21-byte buffer), so finding a packed entry compares a byte and a
//! fixed-size array (raw and long keys are compared as slices, as before). Keys are hashed
//! over their original bytes (in parallel with the packing), so a packed key is decoded, on
//! the stack, only to hash a stored entry again (index growth, deletes) and for the admin
//! API (`snapshot`, `top`). The three forms have disjoint markers (raw `0..=21`, packed
//! `0x80 | 22..=28`, `LONG`), and packing is injective for a given length (the marker keeps
//! the length, so a trailing `'0'`, code 0 like the zero fill, is not lost).
//!
//! # Tier / limit changes
//!
//! Each entry records the [`TierLimits`] its counters were built with (an index into a
//! small per-shard registry of limits seen, reference-counted). When a check arrives
//! with other limits (reload changed the tier, or the key moved tier), the state is
//! [`rebase`](WindowState::rebase)d conservatively first.
//!
//! # Cap and eviction
//!
//! The shard never holds more than `cap` entries. Inserting into a full shard first
//! examines up to 32 entries from the sweep cursor and removes the idle ones (both
//! windows empty: nothing is lost). If none was idle, it evicts the least recently
//! checked of those that would **admit** their next request, and counts a **forced
//! eviction** (`forced_evictions`): that subject's counters are forgotten, so it may be
//! over-admitted afterwards by up to its limit in each window. **An entry that would
//! deny its next request is never evicted to make room**: while every entry examined
//! would deny, the scan goes on, up to 512 entries (the whole shard if smaller); if
//! none of those would admit, the *new* subject is denied untracked (retry in 1 s) and
//! counted (`refused`) — a flood of fresh subjects cannot reset a subject at its
//! limit. Remaining bound: a shard over 512 entries whose 512 entries from the cursor
//! would all deny refuses a newcomer even if an admitting entry exists further on (the
//! cursor moves on, so the next newcomer looks elsewhere). Shrinking the cap
//! (`set_cap`) must drop entries: idle first, then admitting, then denying ones, least
//! recently checked first; all but the idle ones count as forced. Size `table_cap`
//! above the number of subjects active within the sustained window (per core) so no
//! eviction is ever forced.
//!
//! # Penalty windows
//!
//! A client address's authentication failures are counted in a tier-less entry of its
//! own ([`penalty_subject`]: prefix `0x01`, tier [`PENALTY_TIER`], limits set by
//! [`Shard::set_penalty`], default [`DEFAULT_PENALTY`] = 20 per minute), beside the
//! keys, under the same cap and eviction rules. `check_penalty` costs nothing while
//! the shard holds no penalty entry.

use std::collections::BinaryHeap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};

use super::cluster::{Mode, Remote};
use super::window::{Decision, RefundToken, TierLimits, WideState, WindowConfig, WindowState};

mod counters;
mod keys;
mod remote;

#[cfg(test)]
use keys::{ALPHABET, PACK_MAX, PACK_MIN, pack};
use keys::{INLINE, LONG, Meta, PACKED, Probe, is_packed, unpack};

/// Entries examined to make room when a full shard receives a new subject.
const EVICT_SCAN: usize = 32;
/// Entries examined at most while every one examined would deny its next request.
const EVICT_SCAN_MAX: usize = 512;
const MIN_INDEX: usize = 16;
/// An index cell is `(hash tag << SLOT_BITS) | (slot + 1)`; 0 = empty.
const SLOT_BITS: u32 = 24;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;
/// Most entries one shard can hold (`slot + 1` must fit in the cell's 24 bits).
pub const MAX_ENTRIES: usize = SLOT_MASK as usize - 1;

/// Bits of an IPv6 client address that name one client by default: a /64 is the smallest
/// allocation a subscriber gets (RFC 6177), so addresses inside it are one client's to
/// rotate through at will and count as one.
pub const DEFAULT_IPV6_PREFIX: u8 = 64;

/// The network a client address is counted as: an IPv4 (or IPv4-mapped) address is
/// itself, an IPv6 address is cut to its first `v6_prefix` bits (1..=128; 128 = the
/// address). The one place that groups client addresses; [`addr_subject`] and
/// [`penalty_subject`] count by it.
pub fn client_network(ip: IpAddr, v6_prefix: u8) -> Ipv6Addr {
    let v6 = match ip {
        IpAddr::V4(a) => return a.to_ipv6_mapped(),
        IpAddr::V6(a) if a.to_ipv4_mapped().is_some() => return a,
        IpAddr::V6(a) => a,
    };
    let keep = u32::from(v6_prefix.min(128));
    let mask = u128::MAX.checked_shl(128 - keep).unwrap_or(0);
    Ipv6Addr::from(u128::from(v6) & mask)
}

/// A subject for counting by client address: `0x00` + the 16-byte IPv4-mapped address,
/// or the client's IPv6 network ([`client_network`]). API keys are printable ASCII, so the
/// two never collide.
pub fn addr_subject(ip: IpAddr, v6_prefix: u8) -> [u8; 17] {
    let mut out = [0u8; 17];
    out[1..].copy_from_slice(&client_network(ip, v6_prefix).octets());
    out
}

/// A subject for the failure (penalty) window of a client address: `0x01` + what
/// [`addr_subject`] holds. Distinct from keys and address subjects.
pub fn penalty_subject(ip: IpAddr, v6_prefix: u8) -> [u8; 17] {
    let mut out = addr_subject(ip, v6_prefix);
    out[0] = PENALTY_PREFIX;
    out
}

/// First byte of a [`penalty_subject`].
pub const PENALTY_PREFIX: u8 = 0x01;
/// The `tier` of penalty entries (no configured tier has this index).
pub const PENALTY_TIER: u16 = u16::MAX;
/// Default failure window of a client address: 20 authentication failures per minute.
pub const DEFAULT_PENALTY: WindowConfig = WindowConfig {
    length_ms: 60_000,
    limit: 20,
};

/// A failure window as tier limits (both windows the same).
fn penalty_limits(w: WindowConfig) -> TierLimits {
    TierLimits::new(w, w)
}

/// What the admin API shows of one entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntrySnapshot {
    pub subject: Vec<u8>,
    pub tier: u16,
    /// This instance's own admissions in each window.
    pub sustained_count: u32,
    pub burst_count: u32,
    /// The other instances' admissions as last read (active-active; 0 otherwise).
    pub others: [u32; 2],
    /// ms until the next request would be admitted (0: it would be now).
    pub retry_after_ms: u64,
    pub idle: bool,
}

#[derive(Debug)]
struct Layout {
    limits: TierLimits,
    refs: u32,
}

#[inline]
fn cell(h32: u32, slot: usize) -> u32 {
    ((h32 & 0xFF) << SLOT_BITS) | (slot as u32 + 1)
}

#[inline]
fn cell_slot(e: u32) -> usize {
    (e & SLOT_MASK) as usize - 1
}

/// One core's table of subjects. Not `Sync`: owned by its core.
#[derive(Debug)]
pub struct Shard {
    hasher: RandomState,
    /// Open addressing, linear probing; length is a power of two.
    index: Vec<u32>,
    /// `32 - log2(index.len())`: the home cell of a hash is `hash32 >> home_shift`.
    home_shift: u32,
    /// Entry `i` is `metas[i]` + `states[i]` (two slabs: no padding between them).
    metas: Vec<Meta>,
    states: Vec<WindowState>,
    /// Counters of entries whose tier has a limit over 65,535 (see `counters`).
    wide: Vec<WideState>,
    wide_free: Vec<u32>,
    /// Keys that fit neither raw nor packed (rare: AWS ids are 20 bytes, address subjects
    /// 17, Garage ids 26 packable characters).
    long: Vec<Option<Box<[u8]>>>,
    long_free: Vec<u32>,
    layouts: Vec<Layout>,
    cap: usize,
    cursor: usize,
    evictions: u64,
    forced: u64,
    /// New subjects turned away because every entry examined would deny.
    refused: u64,
    /// Limits of the per-address failure windows (`None` = penalties off).
    penalty: Option<TierLimits>,
    /// Live penalty entries (0 = `check_penalty` needs no lookup).
    penalties: usize,
    /// Active-active (`remote`): what is counted for the other instances; with anything
    /// but `Alone`, `remote[i]` is entry `i`'s view and pending admissions.
    mode: Mode,
    remote: Vec<Remote>,
    /// Entries with pending admissions (their `Remote::dirty` is their position here).
    dirty: Vec<u32>,
    /// Pending admissions of entries removed before they were handed over.
    orphans: Vec<(Box<[u8]>, u16, u32)>,
}

/// Retry hint for a subject that cannot be tracked: the shard is full of entries that
/// would deny (see the module docs), or it holds 65535 distinct live limit
/// configurations (not reachable with a sane config).
const UNTRACKED_RETRY_MS: u64 = 1000;

impl Shard {
    /// An empty shard holding at most `cap` subjects (clamped to 1..=[`MAX_ENTRIES`]).
    pub fn new(cap: usize) -> Shard {
        Shard {
            hasher: RandomState::new(),
            index: vec![0; MIN_INDEX],
            home_shift: 32 - MIN_INDEX.trailing_zeros(),
            metas: Vec::new(),
            states: Vec::new(),
            wide: Vec::new(),
            wide_free: Vec::new(),
            long: Vec::new(),
            long_free: Vec::new(),
            layouts: Vec::new(),
            cap: cap.clamp(1, MAX_ENTRIES),
            cursor: 0,
            evictions: 0,
            forced: 0,
            refused: 0,
            penalty: Some(penalty_limits(DEFAULT_PENALTY)),
            penalties: 0,
            mode: Mode::Alone,
            remote: Vec::new(),
            dirty: Vec::new(),
            orphans: Vec::new(),
        }
    }

    // ---- keys and index ---------------------------------------------------------

    // Every key is hashed over its original bytes, whatever its stored form, so a lookup
    // hashes the key it was given while it packs it (the two are independent: the index
    // probe, usually a cache miss, need not wait for the packing). Re-hashing an entry
    // (index growth, backward-shift deletes, removal) therefore decodes a packed key first
    // (`entry_hash`, on the stack); raw keys are their own bytes and long keys are kept
    // whole.

    #[inline]
    fn hash32(&self, key: &[u8]) -> u32 {
        let mut h = self.hasher.build_hasher();
        h.write(key);
        (h.finish() >> 32) as u32
    }

    #[inline]
    fn probe_hash(&self, p: &Probe) -> u32 {
        self.hash32(p.key)
    }

    /// The hash entry `s` was indexed with: [`hash32`](Self::hash32) of its original key.
    #[inline]
    fn entry_hash(&self, s: usize) -> u32 {
        let m = &self.metas[s];
        match m.len {
            LONG => self.hash32(self.long_key(s)),
            len if is_packed(len) => self.hash32(&unpack(&m.buf)[..usize::from(len & !PACKED)]),
            len => self.hash32(&m.buf[..len as usize]),
        }
    }

    #[inline]
    fn long_key(&self, s: usize) -> &[u8] {
        let k = self.long[self.metas[s].long_index()].as_deref();
        debug_assert!(k.is_some(), "entry {s} lost its long key");
        k.unwrap_or_default()
    }

    /// Whether entry `s` holds the probed key.
    #[inline]
    fn holds(&self, s: usize, p: &Probe) -> bool {
        let m = &self.metas[s];
        m.len == p.len
            && match p.len {
                LONG => self.long_key(s) == p.key,
                len if is_packed(len) => m.buf == p.buf,
                len => m.buf[..usize::from(len)] == *p.key,
            }
    }

    /// `f` of the original bytes of entry `s`'s key (a packed key decoded on the stack).
    fn with_subject<R>(&self, s: usize, f: impl FnOnce(&[u8]) -> R) -> R {
        let m = &self.metas[s];
        match m.len {
            LONG => f(self.long_key(s)),
            len if is_packed(len) => f(&unpack(&m.buf)[..usize::from(len & !PACKED)]),
            len => f(&m.buf[..len as usize]),
        }
    }

    /// The original bytes of entry `s`'s key (decoded if packed).
    fn subject_of(&self, s: usize) -> Vec<u8> {
        let m = &self.metas[s];
        match m.len {
            LONG => self.long_key(s).to_vec(),
            len if is_packed(len) => unpack(&m.buf)[..usize::from(len & !PACKED)].to_vec(),
            len => m.buf[..len as usize].to_vec(),
        }
    }

    #[inline]
    fn home(&self, h32: u32) -> usize {
        (h32 as u64 >> self.home_shift) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.index.len() - 1
    }

    /// The slot of `subject`, if tracked.
    fn find_subject(&self, subject: &[u8]) -> Option<usize> {
        let key = Probe::new(subject);
        self.find(&key, self.probe_hash(&key)).map(|(_, s)| s)
    }

    /// Index cell and slot of the probed key (whose `probe_hash` is `h32`).
    fn find(&self, key: &Probe, h32: u32) -> Option<(usize, usize)> {
        let mask = self.mask();
        let tag = (h32 & 0xFF) << SLOT_BITS;
        let mut p = self.home(h32);
        loop {
            let e = self.index[p];
            if e == 0 {
                return None;
            }
            if e & !SLOT_MASK == tag {
                let s = cell_slot(e);
                if self.holds(s, key) {
                    return Some((p, s));
                }
            }
            p = (p + 1) & mask;
        }
    }

    /// Index cell pointing at slot `s` (whose key hashes to `h32`).
    fn cell_of_slot(&self, h32: u32, s: usize) -> Option<usize> {
        let mask = self.mask();
        let want = cell(h32, s);
        let mut p = self.home(h32);
        loop {
            match self.index[p] {
                0 => return None,
                e if e == want => return Some(p),
                _ => p = (p + 1) & mask,
            }
        }
    }

    fn index_insert(&mut self, h32: u32, s: usize) {
        let mask = self.mask();
        let mut p = self.home(h32);
        while self.index[p] != 0 {
            p = (p + 1) & mask;
        }
        self.index[p] = cell(h32, s);
    }

    /// Backward-shift deletion of cell `p` (linear probing stays tombstone-free). Cells
    /// keep only 8 bits of the hash, so the home of a cell that may move is found by
    /// hashing its key again (a few per delete on average).
    fn index_delete(&mut self, mut p: usize) {
        let mask = self.mask();
        let mut q = p;
        loop {
            q = (q + 1) & mask;
            let e = self.index[q];
            if e == 0 {
                break;
            }
            let h = self.home(self.entry_hash(cell_slot(e)));
            // The entry at q may move to p unless its home lies cyclically in (p, q].
            let stays = if p <= q {
                p < h && h <= q
            } else {
                p < h || h <= q
            };
            if !stays {
                self.index[p] = e;
                p = q;
            }
        }
        self.index[p] = 0;
    }

    /// Rebuilds the index with `cells` cells (every key hashed again).
    fn resize_index(&mut self, cells: usize) {
        let cells = cells.next_power_of_two().max(MIN_INDEX);
        let old = std::mem::replace(&mut self.index, vec![0; cells]);
        self.home_shift = 32 - cells.trailing_zeros();
        let mask = self.mask();
        for e in old {
            if e != 0 {
                let mut p = self.home(self.entry_hash(cell_slot(e)));
                while self.index[p] != 0 {
                    p = (p + 1) & mask;
                }
                self.index[p] = e;
            }
        }
    }

    fn meta_for(&mut self, key: &Probe, tier: u16, layout: u16) -> Meta {
        let mut m = Meta {
            len: key.len,
            buf: key.buf,
            tier,
            layout,
        };
        if key.len <= INLINE as u8 {
            m.buf[..key.key.len()].copy_from_slice(key.key);
        } else if key.len == LONG {
            let boxed: Box<[u8]> = key.key.into();
            let i = match self.long_free.pop() {
                Some(i) => {
                    self.long[i as usize] = Some(boxed);
                    i
                }
                None => {
                    self.long.push(Some(boxed));
                    (self.long.len() - 1) as u32
                }
            };
            m.buf[..4].copy_from_slice(&i.to_le_bytes());
        }
        m
    }

    /// Appends a new entry (the caller made room) and indexes it.
    fn insert(&mut self, key: &Probe, h32: u32, tier: u16, layout: u16) -> usize {
        if (self.metas.len() + 1) * 4 > self.index.len() * 3 {
            self.resize_index(self.index.len() * 2);
        }
        // Grow by doubling, but never reserve past the cap.
        let want = (self.metas.capacity() * 2).clamp(16, self.cap.max(16));
        if self.metas.len() == self.metas.capacity() {
            self.metas
                .reserve_exact(want.saturating_sub(self.metas.len()).max(1));
        }
        if self.states.len() == self.states.capacity() {
            self.states
                .reserve_exact(want.saturating_sub(self.states.len()).max(1));
        }
        let s = self.metas.len();
        let meta = self.meta_for(key, tier, layout);
        let state = self.fresh_state(self.layouts[layout as usize].limits.is_wide());
        self.metas.push(meta);
        self.states.push(state);
        if self.mode != Mode::Alone {
            self.remote.push(Remote::default());
        }
        self.layouts[layout as usize].refs += 1;
        self.penalties += usize::from(tier == PENALTY_TIER);
        self.index_insert(h32, s);
        s
    }

    /// Removes entry `s`; the last entry moves into `s`.
    fn remove_at(&mut self, s: usize) {
        let h = self.entry_hash(s);
        let p = self.cell_of_slot(h, s);
        debug_assert!(p.is_some(), "slot {s} missing from the index");
        if let Some(p) = p {
            self.index_delete(p);
        }
        let last = self.metas.len() - 1;
        if s != last {
            let hm = self.entry_hash(last);
            let pm = self.cell_of_slot(hm, last);
            debug_assert!(pm.is_some(), "slot {last} missing from the index");
            if let Some(pm) = pm {
                self.index[pm] = cell(hm, s);
            }
        }
        self.release_state(s);
        if self.mode != Mode::Alone {
            self.remote_remove(s, last);
        }
        let gone = self.metas.swap_remove(s);
        self.states.swap_remove(s);
        if gone.len == LONG {
            let i = gone.long_index();
            self.long[i] = None;
            self.long_free.push(i as u32);
        }
        self.layouts[gone.layout as usize].refs -= 1;
        self.penalties -= usize::from(gone.tier == PENALTY_TIER);
    }

    // ---- layouts ----------------------------------------------------------------

    /// Registry id of `limits` (registered if new; unreferenced ids are reused).
    fn layout_id(&mut self, limits: &TierLimits) -> Option<u16> {
        if let Some(i) = self.layouts.iter().position(|l| l.limits == *limits) {
            return Some(i as u16);
        }
        let fresh = Layout {
            limits: limits.clone(),
            refs: 0,
        };
        if let Some(i) = self.layouts.iter().position(|l| l.refs == 0) {
            self.layouts[i] = fresh;
            return Some(i as u16);
        }
        if self.layouts.len() < u16::MAX as usize {
            self.layouts.push(fresh);
            return Some((self.layouts.len() - 1) as u16);
        }
        None
    }

    /// The limits entry `s`'s counters were built with.
    #[inline]
    fn own_limits(&self, s: usize) -> &TierLimits {
        &self.layouts[self.metas[s].layout as usize].limits
    }

    // ---- eviction ---------------------------------------------------------------

    /// Frees room for one entry in a full shard; false if it found none to free.
    /// Examines entries from the cursor: idle ones are removed (nothing is lost); if
    /// none was idle, the least recently checked of those that would *admit* their next
    /// request is removed (a forced eviction). An entry that would deny is never
    /// removed here: past `EVICT_SCAN` entries the scan goes on while every entry seen
    /// would deny, up to `EVICT_SCAN_MAX` (the whole shard if smaller).
    fn make_room(&mut self, now: u64) -> bool {
        let limit = EVICT_SCAN_MAX.min(self.metas.len());
        let mut removed = false;
        let mut oldest: Option<(u64, usize)> = None;
        for seen in 0..limit {
            if self.metas.is_empty() || (seen >= EVICT_SCAN && (removed || oldest.is_some())) {
                break;
            }
            if self.cursor >= self.metas.len() {
                self.cursor = 0;
            }
            let i = self.cursor;
            if self.is_idle(i, now) {
                self.remove_at(i);
                self.evictions += 1;
                removed = true;
                continue;
            }
            if self.would_admit(i, now) {
                let age = now.saturating_sub(self.last_update(i));
                if oldest.is_none_or(|(a, _)| age > a) {
                    oldest = Some((age, i));
                }
            }
            self.cursor += 1;
        }
        if removed {
            return true;
        }
        let Some((_, i)) = oldest else {
            return false;
        };
        self.remove_at(i);
        self.forced += 1;
        true
    }

    // ---- public API -------------------------------------------------------------

    /// Decides one request of `subject` (of tier `tier`, whose limits are `limits`) at
    /// `now_ms`, creating the entry if needed (making room if the shard is full) and
    /// rebasing it first if it was built under other limits.
    #[inline]
    pub fn check(
        &mut self,
        subject: &[u8],
        tier: u16,
        limits: &TierLimits,
        now_ms: u64,
    ) -> Decision {
        self.check_cost(subject, tier, limits, now_ms, 1)
    }

    /// [`check`](Self::check) of a request that counts `cost` units (a rule's `cost`; see
    /// [`WindowState::check_cost`]).
    #[inline]
    pub fn check_cost(
        &mut self,
        subject: &[u8],
        tier: u16,
        limits: &TierLimits,
        now_ms: u64,
        cost: u32,
    ) -> Decision {
        let s = match self.entry_for(subject, tier, limits, now_ms) {
            Ok(s) => s,
            Err(d) => return d,
        };
        let extra = self.others_of(s, tier, limits);
        let d = self.check_at(s, limits, now_ms, extra, cost);
        if d.admitted && tier != PENALTY_TIER {
            self.note_admission(s);
        }
        d
    }

    /// Whether [`check_cost`](Self::check_cost) of `subject` under `limits` would admit
    /// `cost` units at `now_ms`, changing nothing. A subject not tracked would be admitted
    /// if `cost` fits its limits (a full shard may still refuse to track it).
    pub fn would_admit_cost(
        &self,
        subject: &[u8],
        limits: &TierLimits,
        now_ms: u64,
        cost: u32,
    ) -> bool {
        let key = Probe::new(subject);
        match self.find(&key, self.probe_hash(&key)) {
            Some((_, s)) => self.would_admit_under(s, limits, now_ms, cost),
            None => limits.fits(cost),
        }
    }

    /// The entry of `subject`, created if needed (making room if the shard is full) and
    /// rebased to `limits` if built under others, with its tier set; `Err(denial)` when
    /// it cannot be tracked.
    fn entry_for(
        &mut self,
        subject: &[u8],
        tier: u16,
        limits: &TierLimits,
        now_ms: u64,
    ) -> Result<usize, Decision> {
        let key = Probe::new(subject);
        let h32 = self.probe_hash(&key);
        let s = match self.find(&key, h32) {
            Some((_, s)) => s,
            None => {
                if self.metas.len() >= self.cap && !self.make_room(now_ms) {
                    self.refused += 1;
                    return Err(Decision::untracked(UNTRACKED_RETRY_MS));
                }
                let Some(layout) = self.layout_id(limits) else {
                    return Err(Decision::untracked(UNTRACKED_RETRY_MS));
                };
                self.insert(&key, h32, tier, layout)
            }
        };
        let cur = self.metas[s].layout as usize;
        if self.layouts[cur].limits != *limits {
            let Some(new) = self.layout_id(limits) else {
                return Err(Decision::untracked(UNTRACKED_RETRY_MS));
            };
            self.rebase_entry(s, new, limits, now_ms);
        }
        let old_tier = std::mem::replace(&mut self.metas[s].tier, tier);
        self.penalties += usize::from(tier == PENALTY_TIER);
        self.penalties -= usize::from(old_tier == PENALTY_TIER);
        Ok(s)
    }

    /// What `check` would decide for `subject` under `limits`, without changing
    /// anything; `None` if the subject is not tracked (a fresh subject is admitted).
    pub fn peek(&self, subject: &[u8], limits: &TierLimits, now_ms: u64) -> Option<Decision> {
        let key = Probe::new(subject);
        let (_, s) = self.find(&key, self.probe_hash(&key))?;
        Some(self.peek_under(s, limits, now_ms))
    }

    /// What [`check_cost`](Self::check_cost) would decide for `cost` units, counting the
    /// other instances as it does; `None` if the subject is not tracked.
    pub fn peek_cost(
        &self,
        subject: &[u8],
        limits: &TierLimits,
        now_ms: u64,
        cost: u32,
    ) -> Option<Decision> {
        let key = Probe::new(subject);
        let (_, s) = self.find(&key, self.probe_hash(&key))?;
        let extra = self.others_of(s, self.metas[s].tier, limits);
        Some(self.peek_under_cost(s, limits, now_ms, extra, cost))
    }

    /// Incremental idle expiry: examines at most `budget` entries from the cursor and
    /// removes those whose windows are both empty (judged under the limits their
    /// counters were built with, which is exact; `_limits_of` is not needed for that).
    /// Returns how many were removed.
    pub fn sweep<'a>(
        &mut self,
        now_ms: u64,
        budget: usize,
        _limits_of: impl Fn(u16) -> Option<&'a TierLimits>,
    ) -> usize {
        let mut removed = 0;
        let n = budget.min(self.metas.len());
        for _ in 0..n {
            if self.metas.is_empty() {
                break;
            }
            if self.cursor >= self.metas.len() {
                self.cursor = 0;
            }
            let i = self.cursor;
            if self.is_idle(i, now_ms) {
                self.remove_at(i);
                removed += 1;
            } else {
                self.cursor += 1;
            }
        }
        self.release_unused_layouts();
        removed
    }

    fn release_unused_layouts(&mut self) {
        while self.layouts.last().is_some_and(|l| l.refs == 0) {
            self.layouts.pop();
        }
    }

    pub fn len(&self) -> usize {
        self.metas.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metas.is_empty()
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Changes the cap (clamped to 1..=[`MAX_ENTRIES`]). Shrinking below the current size
    /// removes idle entries first, then those that would admit their next request, then
    /// (only if still over the cap) those that would deny; least recently checked first
    /// within each kind, counted as forced. Without a clock the newest check time in the
    /// shard stands for "now" (an earlier time: an entry idle or admitting then still is).
    pub fn set_cap(&mut self, cap: usize) {
        self.set_cap_at(cap, None);
    }

    /// [`set_cap`](Self::set_cap) at `now_ms` (`None`: the newest check time).
    pub fn set_cap_at(&mut self, cap: usize, now_ms: Option<u64>) {
        self.cap = cap.clamp(1, MAX_ENTRIES);
        if self.metas.len() > self.cap {
            let newest = (0..self.metas.len()).map(|i| self.last_update(i)).max();
            let now = now_ms.or(newest).unwrap_or(0);
            let mut i = 0;
            while i < self.metas.len() && self.metas.len() > self.cap {
                if self.is_idle(i, now) {
                    self.remove_at(i);
                    self.evictions += 1;
                } else {
                    i += 1;
                }
            }
            let need = self.metas.len().saturating_sub(self.cap);
            if need > 0 {
                self.shed(need, now);
            }
        }
        self.cursor = 0;
        self.release_unused_layouts();
    }

    /// Removes the `need` entries that lose least (admitting before denying, then least
    /// recently checked), in O(len): find the cut-off rank, remove everything above it,
    /// then ties until enough. Counted as forced.
    fn shed(&mut self, need: usize, now: u64) {
        // Higher rank = removed first: 2^63 for "would admit", plus the age (< 2^48).
        let rank = |t: &Shard, i: usize| -> u64 {
            let admits = t.would_admit(i, now);
            (u64::from(admits) << 63) | now.saturating_sub(t.last_update(i))
        };
        let mut ranks: Vec<u64> = (0..self.metas.len()).map(|i| rank(self, i)).collect();
        let (_, &mut cut, _) = ranks.select_nth_unstable_by(need - 1, |a, b| b.cmp(a));
        let mut removed = 0;
        for strictly_above in [true, false] {
            let mut i = 0;
            while i < self.metas.len() && removed < need {
                let r = rank(self, i);
                if r > cut || (!strictly_above && r == cut) {
                    self.remove_at(i);
                    removed += 1;
                } else {
                    i += 1;
                }
            }
        }
        self.forced += removed as u64;
    }

    /// Idle entries removed to make room for new subjects (nothing lost).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Non-idle entries removed because the shard was full (or its cap shrank): their
    /// counters were lost.
    pub fn forced_evictions(&self) -> u64 {
        self.forced
    }

    /// New subjects denied because the shard was full of entries that would deny.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Gives back the admission `token` names (from a [`Decision`] of `check` for this
    /// subject), if the subject is still tracked; see [`WindowState::refund`] for when
    /// nothing can be given back. Returns whether a slot was given back.
    pub fn refund(&mut self, subject: &[u8], token: RefundToken, now_ms: u64) -> bool {
        self.refund_cost(subject, token, now_ms, 1)
    }

    /// [`refund`](Self::refund) of an admission of `cost` units.
    pub fn refund_cost(
        &mut self,
        subject: &[u8],
        token: RefundToken,
        now_ms: u64,
        cost: u32,
    ) -> bool {
        let key = Probe::new(subject);
        let Some((_, s)) = self.find(&key, self.probe_hash(&key)) else {
            return false;
        };
        self.refund_at(s, token, now_ms, cost)
    }

    // ---- penalty windows (per client address, tier-less) -------------------------

    /// Sets the failure window of [`add_penalty`](Self::add_penalty) (`limit` 0 turns
    /// penalties off). Entries built under other limits are rebased when next touched.
    pub fn set_penalty(&mut self, w: WindowConfig) {
        self.penalty = (w.limit > 0).then(|| penalty_limits(w));
    }

    /// Is the address of `subject` (a [`penalty_subject`]) over its failure window at
    /// `now_ms`? `Some` (a denial, with its retry time) if so. No lookup at all while
    /// the shard tracks no penalty.
    pub fn check_penalty(&self, subject: &[u8], now_ms: u64) -> Option<Decision> {
        if self.penalties == 0 {
            return None;
        }
        let limits = self.penalty.as_ref()?;
        self.peek(subject, limits, now_ms).filter(|d| !d.admitted)
    }

    /// Counts one failure against the address of `subject` (a [`penalty_subject`]).
    /// Returns true if it was counted (false: penalties off, already over, or no room).
    pub fn add_penalty(&mut self, subject: &[u8], now_ms: u64) -> bool {
        let Some(limits) = self.penalty.clone() else {
            return false;
        };
        self.check(subject, PENALTY_TIER, &limits, now_ms).admitted
    }

    /// Forgets `subject`; true if it was tracked.
    pub fn remove(&mut self, subject: &[u8]) -> bool {
        let key = Probe::new(subject);
        match self.find(&key, self.probe_hash(&key)) {
            Some((_, s)) => {
                self.remove_at(s);
                self.release_unused_layouts();
                true
            }
            None => false,
        }
    }

    /// Forgets every subject (and releases the memory).
    pub fn clear(&mut self) {
        self.metas = Vec::new();
        self.states = Vec::new();
        self.wide = Vec::new();
        self.wide_free = Vec::new();
        self.long = Vec::new();
        self.long_free = Vec::new();
        self.index = vec![0; MIN_INDEX];
        self.home_shift = 32 - MIN_INDEX.trailing_zeros();
        self.layouts.clear();
        self.cursor = 0;
        self.penalties = 0;
        self.remote = Vec::new();
        self.dirty = Vec::new();
    }

    fn snapshot_of<'a>(
        &self,
        s: usize,
        now_ms: u64,
        limits_of: &impl Fn(u16) -> Option<&'a TierLimits>,
    ) -> EntrySnapshot {
        let own = self.own_limits(s);
        let tier = self.metas[s].tier;
        let idle = self.is_idle(s, now_ms);
        // Counts as the next check would see them (under the tier's current limits); the
        // retry time counts the other instances too (active-active).
        let cur = limits_of(tier).unwrap_or(own);
        let d = self.peek_under(s, cur, now_ms);
        let extra = self.others_of(s, tier, cur);
        let retry_after_ms = if extra == [0, 0] {
            d.retry_after_ms
        } else {
            self.peek_under_with(s, cur, now_ms, extra).retry_after_ms
        };
        EntrySnapshot {
            subject: self.subject_of(s),
            tier,
            sustained_count: d.sustained_count,
            burst_count: d.burst_count,
            others: self.remote.get(s).map_or([0, 0], |r| r.others),
            retry_after_ms,
            idle,
        }
    }

    /// The `n` entries with the highest sustained counts (descending). O(len log n).
    pub fn top<'a>(
        &self,
        n: usize,
        now_ms: u64,
        limits_of: impl Fn(u16) -> Option<&'a TierLimits>,
    ) -> Vec<EntrySnapshot> {
        self.top_slots(0, usize::MAX, n, now_ms, limits_of).0
    }

    /// [`top`](Self::top) of the slots `from..from + scan` only (bounded work, for a scan
    /// spread over event-loop turns), and the slot to go on from (None: the end). Slots
    /// move when entries are removed, so a spread scan can miss or repeat an entry.
    pub fn top_slots<'a>(
        &self,
        from: usize,
        scan: usize,
        n: usize,
        now_ms: u64,
        limits_of: impl Fn(u16) -> Option<&'a TierLimits>,
    ) -> (Vec<EntrySnapshot>, Option<usize>) {
        let end = from.saturating_add(scan).min(self.states.len());
        let next = (end < self.states.len()).then_some(end);
        if n == 0 {
            return (Vec::new(), next);
        }
        // Min-heap of (count, slot) keeping the n largest.
        let mut heap: BinaryHeap<std::cmp::Reverse<(u32, usize)>> =
            BinaryHeap::with_capacity(n + 1);
        for i in from..end.min(self.metas.len()) {
            let c = self
                .peek_under(i, self.own_limits(i), now_ms)
                .sustained_count;
            if heap.len() < n {
                heap.push(std::cmp::Reverse((c, i)));
            } else if heap.peek().is_some_and(|r| r.0.0 < c) {
                heap.pop();
                heap.push(std::cmp::Reverse((c, i)));
            }
        }
        let mut out: Vec<EntrySnapshot> = heap
            .into_iter()
            .map(|r| self.snapshot_of(r.0.1, now_ms, &limits_of))
            .collect();
        out.sort_by(|a, b| {
            b.sustained_count
                .cmp(&a.sustained_count)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        (out, next)
    }

    /// One entry, if tracked.
    pub fn snapshot<'a>(
        &self,
        subject: &[u8],
        now_ms: u64,
        limits_of: impl Fn(u16) -> Option<&'a TierLimits>,
    ) -> Option<EntrySnapshot> {
        let key = Probe::new(subject);
        let (_, s) = self.find(&key, self.probe_hash(&key))?;
        Some(self.snapshot_of(s, now_ms, &limits_of))
    }

    /// Bytes of one entry in the two slabs (the per-key table cost is this plus 5–11 bytes
    /// of index, plus a heap copy of the key if it is longer than 21 bytes and not
    /// packable: 22–28 characters of `0-9 A-Z a-z - _`, such as Garage's 26-byte ids, are
    /// packed inline at no extra cost).
    pub fn entry_bytes() -> usize {
        std::mem::size_of::<Meta>() + std::mem::size_of::<WindowState>()
    }

    /// Approximate heap bytes held by this shard: both slabs and the index at their
    /// capacity, the layout registry, and the side slab with its boxed keys (empty unless
    /// some key is longer than 21 bytes and not packable).
    pub fn memory_bytes(&self) -> usize {
        let long_keys: usize = self.long.iter().flatten().map(|k| k.len()).sum();
        self.metas.capacity() * std::mem::size_of::<Meta>()
            + self.states.capacity() * std::mem::size_of::<WindowState>()
            + self.wide.capacity() * std::mem::size_of::<WideState>()
            + self.index.len() * std::mem::size_of::<u32>()
            + self.long.capacity() * std::mem::size_of::<Option<Box<[u8]>>>()
            + long_keys
            + self.layouts.capacity() * std::mem::size_of::<Layout>()
    }
}

#[cfg(test)]
mod tests;
