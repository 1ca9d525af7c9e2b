//! The trailing-window algorithm: pure arithmetic, no I/O, time passed in as `u64`
//! milliseconds of a monotonic clock.
//!
//! Owns: [`WindowConfig`] and [`MAX_LIMIT`] (what a window is, for the configuration
//! too), [`TierLimits`] (a tier's two windows with the bucket layout precomputed),
//! [`State`] (one key's counters: the 48-byte [`WindowState`], or the 128-byte
//! [`WideState`] for tiers with a limit over 65,535), [`Decision`] and [`RefundToken`].
//! The layout half (state sizes, ring geometry, the layout chooser) is in `layout`.
//! Must not touch: clocks, tables, keys, I/O — callers pass `now_ms` and own the state.
//!
//! # Semantics
//!
//! A request at time `t` (integer ms) is admitted iff, after admitting it, the number
//! of admitted requests in the trailing window `(t - W, t]` is `<= L` for **both** of
//! the tier's windows (sustained and burst). Denied requests touch no state.
//!
//! # Algorithm: two conservative bucket rings with a density credit
//!
//! Each window `W` is cut into buckets of `g` ms aligned on multiples of `g`; a ring
//! of `nb = ceil((W-1)/g) + 1` counters holds every bucket that still intersects the
//! window. A bucket's admissions are assumed to sit at its *end* (they leave the
//! window last), so the count the ring reports is never lower than the true count
//! (**hard guarantee: never more than `L` admitted in any trailing window**, both
//! windows, proven by induction over admissions and checked by brute force in the
//! property tests below).
//!
//! Improvement over the plain ring of `k + 1` counters: the oldest bucket, when it is only
//! partly inside the window (`rem` of its ms still inside), is charged
//! `min(count, L_other * ceil(rem / W_other))` instead of its full count, where
//! `(L_other, W_other)` is the *other* window of the tier. This is sound because
//! every admission obeyed the other window too (any `W_other` consecutive ms hold at
//! most `L_other` admissions). It costs no memory; it recovers most of the sustained
//! ring's loss for clients that run near their burst rate.
//!
//! # Bound on under-admission (checked by the property test)
//!
//! For a window of length `W` with bucket width `g`: **if a request at `t` is denied,
//! then for at least one window the algorithm had already admitted `>= L` requests in
//! `(t - (W + g - 1), t]`**. So a client above its limit gets at least `L` per
//! `W + g - 1` ms: efficiency `>= W / (W + g - 1)`, and a retrying client gets through
//! at most `g - 1` ms after the exact sliding log (run on the same admission history)
//! would have let it. `retry_after_ms` is exact for the state (the property test
//! checks that `now + retry_after` is admitted and one ms earlier is not). With the
//! default tiers and the 48-byte state the layout chooser picks:
//!
//! | tier (per min / per s) | sustained `g` | burst `g` | worst-case efficiency (sust. / burst) |
//! |---|---|---|---|
//! | premium 1000 / 50  | 3000 ms (21 × 8 bit) | 50 ms (21 × 6 bit) | 95.2 % / 95.3 % |
//! | standard 500 / 25  | 2500 ms (25 × 7 bit) | 44 ms (24 × 5 bit) | 96.0 % / 95.9 % |
//! | basic 100 / 10     | 1875 ms (33 × 5 bit) | 33 ms (32 × 4 bit) | 97.0 % / 96.9 % |
//! | unknown 50 / 5     | 1429 ms (43 × 4 bit) | 25 ms (41 × 3 bit) | 97.7 % / 97.7 % |
//!
//! (asserted by `default_tier_layouts`). The plain ring as first designed (fixed 2 s / 50 ms
//! buckets, u16/u8 counters) needs ~87 bytes for 96.8 % / 95.2 %; this layout gives the
//! same order of bound in 48 bytes, and the credit does better than the bound in
//! practice. Measured against the exact sliding log (`seed_burst_scenario_efficiency`):
//! premium client at 60 req/s for 120 s: 2000 vs 2000 admitted;
//! at 20 req/s for 600 s (sustained-bound): 97.1 % (bound 95.2 %); at 60 req/s against
//! a 50/s burst limit: 95.3 % (bound 95.3 %). Limits up to [`MAX_LIMIT`] = 1,000,000
//! per window work (larger configured limits are clamped, conservatively; the
//! configuration refuses them). A window of 0 ms is treated as 1 ms; limit 0 denies
//! everything (`retry_after` = the window length). Tiers over 65,535 get the wide state
//! and, with its 888 bits of counters (`large_tier_layouts`):
//!
//! | tier (per min / per s) | sustained `g` | burst `g` | worst-case efficiency |
//! |---|---|---|---|
//! | 300000 / 10000     | 2000 ms (31 × 15 bit) | 35 ms (30 × 14 bit) | 96.8 % / 96.7 % |
//! | 1000000 / 20000    | 2143 ms (29 × 16 bit) | 37 ms (28 × 15 bit) | 96.6 % / 96.5 % |
//! | 1000000 / 1000000  | 2858 ms (22 × 20 bit) | 48 ms (22 × 20 bit) | 95.5 % / 95.5 % |
//!
//! (300,000 per minute against the sliding log: `per_minute_300000_is_exact`, 97.4 % of
//! the exact admissions at 6,000/s for 75 s, never over; `wide_never_over_admits_…`.)
//!
//! # Refunds
//!
//! An admitting [`Decision`] carries a [`RefundToken`] (the state's clock at the
//! admission); [`WindowState::refund`] takes that admission out of the bucket that
//! recorded it, in each ring where the bucket is still live, so the slot is free at
//! once. Sound: counters then count exactly the non-refunded admissions of their
//! bucket, and every admission obeyed both windows, so the density credit still holds
//! (property test `refunds_never_over_admit` against the sliding log of non-refunded
//! admissions). While tainted (after a rebase or a counter overflow, admissions may
//! sit in later buckets) nothing is given back. A state emptied by idle expiry never
//! holds the token's bucket again; a table entry evicted and re-created may (the
//! refund then takes back a newer admission of that bucket — no more over-admission
//! than the eviction itself allowed, since the forgotten one is the one refunded).
//!
//! # Memory: 48 bytes per key (128 for tiers over 65,535)
//!
//! A state is `[u64; N]` (both sizes asserted). [`WindowState`] (`N = 6`, every tier
//! whose limits are all `<= 65,535`, so the default tiers): last update time (48 bits,
//! ms), sustained sum (16), burst sum (16), rebase taint (8), then both rings packed at
//! per-tier counter widths in the remaining 296 bits. [`WideState`] (`N = 16`, a tier
//! with a larger limit): time (48) and 16 unused bits, both sums at 32 bits, taint (8),
//! rings in 888 bits. [`TierLimits`] knows which size it was laid out for
//! ([`TierLimits::is_wide`]); a state must be used with limits of its own size, and
//! [`State::rebased`] moves a state between sizes. Counter width follows from
//! the limits: a sustained bucket of `g` ms never holds more than
//! `min(L_s, L_b * ceil(g / W_b))`. [`TierLimits::new`] searches all ring sizes and
//! keeps the layout with the best worst-case efficiency (then the best sum).
//!
//! # Rebase (reload changed a tier, or a key changed tier)
//!
//! [`State::rebase`] re-expresses the recorded admissions in the new layout,
//! only ever moving them *later* in time (conservative). Each new ring is rebuilt from
//! an old ring whose record covers the new window (the finer one if it does), else
//! from both (their overlap counted twice). Anything that does not fit
//! a new counter spills into later buckets and, past the current bucket, into an
//! "excess" kept in the window sum only, released when every pre-rebase admission
//! has left both new windows (tracked by the 8-bit taint counter; the density credit
//! is off meanwhile, since old admissions obeyed other limits). If a window gets
//! *longer*, the span the old state never tracked is assumed to have been used at the
//! old limits (worst case, per new bucket, at its latest instant). A state whose
//! windows were empty restarts empty, exactly like a key removed by idle expiry.
//! The only lossy case: a window sum saturates (65535 narrow, 2^32 - 1 wide).

/// One sliding window of a tier: at most `limit` admissions in any trailing `length_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// Window length in milliseconds (60_000 for per-minute, 1_000 for per-second).
    pub length_ms: u32,
    /// Max admitted requests in any trailing window of that length.
    pub limit: u32,
}

/// Largest limit per window that is honoured exactly (larger ones are clamped); the
/// configuration refuses larger ones.
pub const MAX_LIMIT: u32 = 1_000_000;

mod layout;

#[cfg(test)]
use layout::{BUCKET_BITS, FastDiv, STATE_BITS, WIDE, WIDE_WORDS};
use layout::{Class, Pos, Ring, TAINT_BITS, TIME_MASK, class_of};
pub use layout::{NARROW_MAX_LIMIT, TierLimits};

/// Outcome of [`WindowState::check`] / [`WindowState::peek`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub admitted: bool,
    /// Counts in each window as the algorithm sees them after this decision (upper
    /// bounds of the true counts; including this request if admitted).
    pub sustained_count: u32,
    pub burst_count: u32,
    pub sustained_remaining: u32,
    pub burst_remaining: u32,
    /// 0 if admitted; else ms from now until the earliest instant at which a request
    /// would be admitted (exact for this state: a request at `now + retry_after_ms`
    /// is admitted, one at `now + retry_after_ms - 1` is not).
    pub retry_after_ms: u64,
    /// The binding window is the burst (short) one; see `reset_ms` for which binds.
    pub burst_binds: bool,
    /// ms from now until the *binding* window is completely empty again (its full
    /// quota restored) if nothing more is admitted. Binding window: when denied, the
    /// one that decides `retry_after_ms` (the later); when admitted, the one with the
    /// smaller `remaining * other_limit` ratio (ties: sustained).
    pub reset_ms: u64,
    /// Set when this decision recorded an admission: hand it to
    /// [`WindowState::refund`] (through the table) to give that admission back.
    pub token: Option<RefundToken>,
}

impl Decision {
    /// Admitted and counted nowhere (no limit applies: e.g. a tier index that a reload
    /// removed while a message was in flight).
    pub const fn unlimited() -> Decision {
        Decision {
            admitted: true,
            sustained_count: 0,
            burst_count: 0,
            sustained_remaining: 0,
            burst_remaining: 0,
            retry_after_ms: 0,
            burst_binds: false,
            reset_ms: 0,
            token: None,
        }
    }

    /// Denied without being tracked (the subject has no room in its table); try again
    /// in `retry_ms`.
    pub fn untracked(retry_ms: u64) -> Decision {
        Decision {
            admitted: false,
            retry_after_ms: retry_ms,
            reset_ms: retry_ms,
            ..Decision::unlimited()
        }
    }
}

/// Names one recorded admission (the state's clock when it was made), so that
/// [`WindowState::refund`] can give it back. 8 bytes, and `Option<RefundToken>` too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RefundToken(std::num::NonZeroU64);

impl RefundToken {
    fn at(t: u64) -> RefundToken {
        RefundToken(std::num::NonZeroU64::MIN.saturating_add(t))
    }
    /// The admission's time (ms, the state's clock).
    pub fn at_ms(self) -> u64 {
        self.0.get() - 1
    }
}

/// One key's counters: `N` 64-bit words, laid out as [`TierLimits`] says (see the
/// module docs). `Default` is the empty state, valid for any limits of its size. A state
/// must always be used with the [`TierLimits`] it was built with (or
/// [`rebase`](State::rebase)d to new ones first).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State<const N: usize> {
    words: [u64; N],
}

impl<const N: usize> Default for State<N> {
    fn default() -> Self {
        State { words: [0; N] }
    }
}

/// The 48-byte state of tiers whose limits are all at most [`NARROW_MAX_LIMIT`].
pub type WindowState = State<{ layout::NARROW_WORDS }>;
/// The 128-byte state of tiers with a larger limit ([`TierLimits::is_wide`]).
pub type WideState = State<{ layout::WIDE_WORDS }>;

impl WindowState {
    /// A narrow slot that holds no counters but the index of a wide state kept
    /// elsewhere (a table's side slab). Never used as counters.
    pub(crate) fn pointer(i: u32) -> WindowState {
        let mut s = WindowState::default();
        s.words[1] = u64::from(i);
        s
    }
    /// The index a [`pointer`](Self::pointer) holds.
    #[inline]
    pub(crate) fn pointee(&self) -> usize {
        self.words[1] as usize
    }
}

/// `now` and where it falls in each ring, after the state was advanced to it.
#[derive(Clone, Copy, Debug)]
struct View {
    now: u64,
    pos: [Pos; 2],
}

impl<const N: usize> State<N> {
    const C: Class = class_of(N);

    // ---- bit fields -------------------------------------------------------------

    #[inline]
    fn get(&self, off: u32, width: u32) -> u32 {
        let i = (off / 64) as usize;
        let s = off % 64;
        let mut v = self.words[i] >> s;
        if s + width > 64 {
            v |= self.words[i + 1] << (64 - s);
        }
        (v & ((1u64 << width) - 1)) as u32
    }

    #[inline]
    fn set(&mut self, off: u32, width: u32, val: u32) {
        let i = (off / 64) as usize;
        let s = off % 64;
        let mask = (1u64 << width) - 1;
        let val = val as u64 & mask;
        self.words[i] = (self.words[i] & !(mask << s)) | (val << s);
        if s + width > 64 {
            let hi = 64 - s;
            self.words[i + 1] = (self.words[i + 1] & !(mask >> hi)) | (val >> hi);
        }
    }

    fn t_last(&self) -> u64 {
        self.words[0] & TIME_MASK
    }
    /// When this state was last checked (ms; 0 if never): the table's recency for eviction.
    #[inline]
    pub fn last_update(&self) -> u64 {
        self.t_last()
    }
    fn set_t_last(&mut self, t: u64) {
        self.words[0] = (self.words[0] & !TIME_MASK) | (t & TIME_MASK);
    }
    #[inline]
    fn sum(&self, i: usize) -> u32 {
        self.get(Self::C.sum_off[i], Self::C.sum_bits)
    }
    #[inline]
    fn set_sum(&mut self, i: usize, v: u32) {
        self.set(
            Self::C.sum_off[i],
            Self::C.sum_bits,
            v.min(Self::C.sum_max()),
        )
    }
    fn taint(&self) -> u32 {
        self.get(Self::C.taint_off, TAINT_BITS)
    }
    fn set_taint(&mut self, v: u32) {
        self.set(Self::C.taint_off, TAINT_BITS, v.min((1 << TAINT_BITS) - 1));
    }
    #[inline]
    fn bucket(&self, r: &Ring, slot: u64) -> u32 {
        self.get(r.off + slot as u32 * r.width, r.width)
    }
    #[inline]
    fn set_bucket(&mut self, r: &Ring, slot: u64, v: u32) {
        self.set(r.off + slot as u32 * r.width, r.width, v)
    }

    /// Sum of the counters of buckets `lo..=hi` (live buckets at position `p`).
    fn range_sum(&self, r: &Ring, p: &Pos, lo: u64, hi: u64) -> u64 {
        if hi < lo {
            return 0;
        }
        let mut s = r.slot_of(p, lo);
        let mut total = 0;
        for _ in lo..=hi {
            total += self.bucket(r, s) as u64;
            s = r.next_slot(s);
        }
        total
    }

    /// The range of buckets that can hold data at position `p`.
    fn live(p: Pos) -> (u64, u64) {
        (p.j0.max(0) as u64, p.b)
    }

    // ---- time -------------------------------------------------------------------

    /// Moves the state to `now` (clamped to be >= the last update): expired buckets are
    /// cleared, the taint counts down, and the excess is dropped when it expires.
    fn prepare(&mut self, lim: &TierLimits, now: u64) -> View {
        debug_assert_eq!(lim.class.words, N, "state used with limits of another size");
        let last = self.t_last();
        let now = now.min(TIME_MASK).max(last);
        let pos = [lim.rings[0].pos(now), lim.rings[1].pos(now)];
        if now != last {
            let old = [lim.rings[0].pos_lite(last), lim.rings[1].pos_lite(last)];
            let taint = self.taint() as u64;
            let exact = taint == 0;
            let mut taint_expired = false;
            if taint > 0 {
                let adv = pos[lim.unit].b - old[lim.unit].b;
                if adv >= taint {
                    self.set_taint(0);
                    taint_expired = true;
                } else {
                    self.set_taint((taint - adv) as u32);
                }
            }
            for (i, ring) in lim.rings.iter().enumerate() {
                self.expire(ring, i, old[i], pos[i], exact);
            }
            if taint_expired {
                for (i, ring) in lim.rings.iter().enumerate() {
                    let (lo, hi) = Self::live(pos[i]);
                    let s = self.range_sum(ring, &pos[i], lo, hi);
                    self.set_sum(i, s as u32);
                }
            }
            self.set_t_last(now);
        }
        View { now, pos }
    }

    /// Clears the buckets that left the window between positions `old` and `new`.
    /// `exact` = the sum holds no excess (untainted), so it can be recomputed from the
    /// surviving counters when they are fewer than the expired ones.
    fn expire(&mut self, r: &Ring, i: usize, old: Pos, new: Pos, exact: bool) {
        let lo = old.j0.max(0) as u64;
        if new.j0 <= lo as i64 {
            return;
        }
        let hi = ((new.j0 - 1) as u64).min(old.b);
        if hi < lo {
            return;
        }
        let n = hi - lo + 1;
        if n >= r.nb || hi == old.b {
            // Everything recorded expires.
            let removed = if exact {
                self.sum(i)
            } else {
                self.slots_sum(r, 0, r.nb) as u32
            };
            self.clear_slots(r, 0, r.nb);
            let cur = self.sum(i);
            self.set_sum(i, cur.saturating_sub(removed));
            return;
        }
        // Slot of `lo`, located from the new position (`lo` may be a ring behind).
        let d = new.b - lo;
        let d = if d < r.nb {
            d
        } else {
            d - r.div_nb.div(d) * r.nb
        };
        let s = if d <= new.sb {
            new.sb - d
        } else {
            new.sb + r.nb - d
        };
        let survivors = old.b - hi;
        if exact && survivors < n {
            let after = s + n;
            let after = if after >= r.nb { after - r.nb } else { after };
            let kept = self.slots_sum(r, after, survivors);
            self.clear_slots(r, s, n);
            self.set_sum(i, kept as u32);
        } else {
            let removed = self.slots_sum(r, s, n);
            self.clear_slots(r, s, n);
            let cur = self.sum(i);
            self.set_sum(i, cur.saturating_sub(removed as u32));
        }
    }

    /// Sum of `n <= nb` counters from slot `s` (cyclic).
    fn slots_sum(&self, r: &Ring, mut s: u64, n: u64) -> u64 {
        let mut total = 0u64;
        for _ in 0..n {
            total += self.bucket(r, s) as u64;
            s = r.next_slot(s);
        }
        total
    }

    /// Zeroes `n <= nb` counters from slot `s` (cyclic), a word at a time.
    fn clear_slots(&mut self, r: &Ring, s: u64, n: u64) {
        let first = n.min(r.nb - s);
        self.clear_bits(r.off + s as u32 * r.width, first as u32 * r.width);
        if first < n {
            self.clear_bits(r.off, (n - first) as u32 * r.width);
        }
    }

    fn clear_bits(&mut self, mut off: u32, len: u32) {
        let end = off + len;
        while off < end {
            let i = (off / 64) as usize;
            let sh = off % 64;
            let take = (64 - sh).min(end - off);
            let mask = if take == 64 {
                u64::MAX
            } else {
                ((1u64 << take) - 1) << sh
            };
            self.words[i] &= !mask;
            off += take;
        }
    }

    /// The count ring `i` sees at the view's time (upper bound of the true count).
    #[inline]
    fn estimate(&self, lim: &TierLimits, i: usize, p: Pos) -> u32 {
        let s = self.sum(i);
        if p.j0 < 0 || p.off_in == 0 || self.taint() != 0 {
            return s;
        }
        let r = &lim.rings[i];
        let c = self.bucket(r, r.slot_of(&p, p.j0 as u64));
        if c == 0 {
            return s;
        }
        let credit = (c as u64).min(r.density(r.g - p.off_in)) as u32;
        s.saturating_sub(c) + credit
    }

    /// Absolute time at which the taint (and any excess) expires; 0 if untainted.
    fn taint_end(&self, lim: &TierLimits, v: &View) -> u64 {
        let t = self.taint() as u64;
        if t == 0 {
            0
        } else {
            let u = &lim.rings[lim.unit];
            (v.pos[lim.unit].b + t) * u.g
        }
    }

    /// Earliest absolute time `>= now` at which ring `i` would admit a request of `cost`
    /// (no further admissions assumed, `extra` others' admissions constant); `now + W` as
    /// a hint if its limit is below `cost`, `now + g` if `extra` alone fills it. O(nb).
    fn earliest(&self, lim: &TierLimits, i: usize, v: &View, est_now: u32, need: [u32; 2]) -> u64 {
        let [extra, cost] = need;
        let r = &lim.rings[i];
        if r.limit < cost.max(1) {
            // Nothing will ever be admitted: hint one window length.
            return v.now + r.w;
        }
        let Some(room) = (r.limit - cost.max(1)).checked_sub(extra) else {
            // The others' share alone fills the window: it can only change with them.
            return v.now + r.g;
        };
        let room = room as u64;
        if est_now as u64 <= room {
            return v.now;
        }
        let t_e = self.taint_end(lim, v);
        let p = &v.pos[i];
        let (lo, hi) = Self::live(*p);
        // Untainted, the sum is exactly the live counters; tainted, it adds the excess.
        let (total, excess) = if t_e == 0 {
            (self.sum(i) as u64, 0)
        } else {
            let t = self.range_sum(r, p, lo, hi);
            (t, (self.sum(i) as u64).saturating_sub(t))
        };
        let mut after = total;
        let mut s = r.slot_of(p, lo);
        for j in lo..=hi {
            let c = self.bucket(r, s) as u64;
            s = r.next_slot(s);
            after = after.saturating_sub(c);
            let s_j = j * r.g;
            let e_j = s_j + r.g - 1;
            // Times at which j is the oldest bucket intersecting the window.
            let ph_lo = v.now.max(s_j + r.w - 1);
            let ph_hi = e_j + r.w - 1;
            if ph_lo > ph_hi {
                continue;
            }
            if ph_lo < t_e && after + c + excess <= room {
                // Tainted part: full counts and the excess, no credit.
                return ph_lo;
            }
            let lo2 = ph_lo.max(t_e);
            if lo2 > ph_hi {
                continue;
            }
            if after + c <= room {
                return lo2;
            }
            if after > room {
                continue;
            }
            // Needs the credit: bucket j partial and density(rem) <= room - after,
            // i.e. rem <= n * o_w with rem = e_j + w - t.
            let cand = if r.o_limit == 0 {
                lo2.max(s_j + r.w)
            } else {
                let n = (room - after) / r.o_limit as u64;
                if n == 0 {
                    continue;
                }
                lo2.max(s_j + r.w)
                    .max((e_j + r.w).saturating_sub(n * r.o_w))
            };
            if cand <= ph_hi {
                return cand;
            }
        }
        let empty_at = v.now.max((hi + 1) * r.g - 1 + r.w);
        if excess > room {
            empty_at.max(t_e)
        } else {
            empty_at
        }
    }

    /// Absolute time at which ring `i` holds nothing any more (no further admissions).
    fn empty_at(&self, lim: &TierLimits, i: usize, v: &View) -> u64 {
        let r = &lim.rings[i];
        let p = &v.pos[i];
        let (lo, hi) = Self::live(*p);
        // The newest non-empty bucket, scanning back from the current one.
        let mut t = v.now;
        let mut j = hi;
        let mut s = p.sb;
        loop {
            if self.bucket(r, s) != 0 {
                t = (j + 1) * r.g - 1 + r.w;
                break;
            }
            if j == lo {
                break;
            }
            j -= 1;
            s = if s == 0 { r.nb - 1 } else { s - 1 };
        }
        if self.taint() != 0 && (self.sum(i) as u64) > self.range_sum(r, p, lo, hi) {
            t = t.max(self.taint_end(lim, v));
        }
        t.max(v.now)
    }

    #[allow(clippy::too_many_arguments)]
    fn decide(
        &self,
        lim: &TierLimits,
        v: &View,
        local: [u32; 2],
        extra: [u32; 2],
        cost: u32,
        admitted: bool,
        bumped: bool,
    ) -> Decision {
        let [r0, r1] = &lim.rings;
        let est = [
            local[0].saturating_add(extra[0]),
            local[1].saturating_add(extra[1]),
        ];
        let rem = [
            r0.limit.saturating_sub(est[0]),
            r1.limit.saturating_sub(est[1]),
        ];
        let (retry, binding) = if admitted {
            // Smaller share of the quota left binds (remaining / limit, cross-multiplied).
            let burst_binds =
                (rem[1] as u64) * (r0.limit as u64) < (rem[0] as u64) * (r1.limit as u64);
            (0, burst_binds as usize)
        } else {
            let t = [
                self.earliest(lim, 0, v, local[0], [extra[0], cost]),
                self.earliest(lim, 1, v, local[1], [extra[1], cost]),
            ];
            let b = (t[1] > t[0]) as usize;
            (t[b].saturating_sub(v.now), b)
        };
        let reset_at = if bumped && self.taint() == 0 {
            // The current bucket was just bumped: it is the newest non-empty one.
            let r = &lim.rings[binding];
            (v.pos[binding].b + 1) * r.g - 1 + r.w
        } else {
            self.empty_at(lim, binding, v)
        };
        Decision {
            admitted,
            sustained_count: est[0],
            burst_count: est[1],
            sustained_remaining: rem[0],
            burst_remaining: rem[1],
            retry_after_ms: retry,
            burst_binds: binding == 1,
            reset_ms: reset_at.saturating_sub(v.now),
            token: bumped.then(|| RefundToken::at(v.now)),
        }
    }

    /// Records `n` admitted units (a request of cost `n`) at the current bucket of ring `i`.
    #[inline]
    fn bump(&mut self, lim: &TierLimits, i: usize, p: Pos, n: u32) {
        let r = &lim.rings[i];
        let s = p.sb;
        let c = self.bucket(r, s);
        if c + n <= r.fmax {
            self.set_bucket(r, s, c + n);
        } else {
            // Only reachable right after a rebase put old admissions in this bucket:
            // keep the overflow in the sum until everything recorded now has expired.
            self.set_bucket(r, s, r.fmax);
            let t = self.taint();
            self.set_taint(t.max(lim.taint_len));
        }
        let cur = self.sum(i);
        self.set_sum(i, cur.saturating_add(n));
    }

    // ---- public API --------------------------------------------------------------

    /// Decides one request at `now_ms` and records it if admitted (denied requests
    /// change nothing but the internal clock, which only moves forward).
    pub fn check(&mut self, limits: &TierLimits, now_ms: u64) -> Decision {
        self.check_with(limits, now_ms, [0, 0])
    }

    /// [`check`](Self::check) with `extra` admissions per window (sustained, burst) made
    /// elsewhere (other instances, `limit::cluster`): admitted iff this state's count
    /// plus `extra` stays within the limit, in both windows. Only this state's own
    /// admission is recorded; the decision's counts include `extra`.
    #[inline]
    pub fn check_with(&mut self, limits: &TierLimits, now_ms: u64, extra: [u32; 2]) -> Decision {
        self.check_cost(limits, now_ms, extra, 1)
    }

    /// [`check_with`](Self::check_with) for a request that counts `cost` units (a rule's
    /// `cost`, e.g. 5 for a LIST): admitted iff this state's count plus `extra` plus `cost`
    /// stays within the limit in both windows; then all `cost` units are recorded. The
    /// guarantee and the bounds hold per unit (every unit obeyed both windows).
    #[inline]
    pub fn check_cost(
        &mut self,
        limits: &TierLimits,
        now_ms: u64,
        extra: [u32; 2],
        cost: u32,
    ) -> Decision {
        let v = self.prepare(limits, now_ms);
        let mut est = [
            self.estimate(limits, 0, v.pos[0]),
            self.estimate(limits, 1, v.pos[1]),
        ];
        let admitted = (0..2)
            .all(|i| est[i] as u64 + extra[i] as u64 + cost as u64 <= limits.rings[i].limit as u64);
        if admitted {
            for (i, e) in est.iter_mut().enumerate() {
                self.bump(limits, i, v.pos[i], cost);
                *e += cost;
            }
        }
        self.decide(limits, &v, est, extra, cost, admitted, admitted)
    }

    /// What [`check`](Self::check) would decide at `now_ms`, without changing anything.
    /// Counts are the current ones (not including the hypothetical request).
    pub fn peek(&self, limits: &TierLimits, now_ms: u64) -> Decision {
        self.peek_with(limits, now_ms, [0, 0])
    }

    /// [`peek`](Self::peek) with `extra` admissions made elsewhere (as
    /// [`check_with`](Self::check_with)).
    pub fn peek_with(&self, limits: &TierLimits, now_ms: u64, extra: [u32; 2]) -> Decision {
        self.peek_cost(limits, now_ms, extra, 1)
    }

    /// What [`check_cost`](Self::check_cost) would decide for `cost` units, changing
    /// nothing (counts are the current ones).
    pub fn peek_cost(
        &self,
        limits: &TierLimits,
        now_ms: u64,
        extra: [u32; 2],
        cost: u32,
    ) -> Decision {
        let mut s = self.clone();
        let v = s.prepare(limits, now_ms);
        let est = [
            s.estimate(limits, 0, v.pos[0]),
            s.estimate(limits, 1, v.pos[1]),
        ];
        let admitted = (0..2)
            .all(|i| est[i] as u64 + extra[i] as u64 + cost as u64 <= limits.rings[i].limit as u64);
        s.decide(limits, &v, est, extra, cost, admitted, false)
    }

    /// Whether [`check`](Self::check) at `now_ms` would admit, without changing anything
    /// and without computing the rest of the [`Decision`] (cheap: no ring scan).
    pub fn would_admit(&self, limits: &TierLimits, now_ms: u64) -> bool {
        self.would_admit_cost(limits, now_ms, 1)
    }

    /// Whether [`check_cost`](Self::check_cost) of `cost` units at `now_ms` would admit
    /// (no other instances counted), without changing anything.
    pub fn would_admit_cost(&self, limits: &TierLimits, now_ms: u64, cost: u32) -> bool {
        let mut s = self.clone();
        let v = s.prepare(limits, now_ms);
        (0..2).all(|i| {
            s.estimate(limits, i, v.pos[i]) as u64 + cost as u64 <= limits.rings[i].limit as u64
        })
    }

    /// Gives back the admission `token` names (made by [`check`](Self::check) on this
    /// state) as if it had never happened; returns whether anything was given back.
    ///
    /// Sound (never lets more than `L` non-refunded admissions into any trailing
    /// window): the admission is taken out of the bucket that recorded it, in each
    /// window that still holds that bucket. Nothing is given back when that cannot be
    /// known: the state is tainted (a rebase or counter overflow moved admissions
    /// between buckets), the bucket left the window, or it is already empty. Refund
    /// each token at most once.
    pub fn refund(&mut self, limits: &TierLimits, token: RefundToken, now_ms: u64) -> bool {
        self.refund_cost(limits, token, now_ms, 1)
    }

    /// [`refund`](Self::refund) of an admission of `cost` units (from
    /// [`check_cost`](Self::check_cost)): all of them go back, or, where a bucket holds
    /// fewer, what it holds.
    pub fn refund_cost(
        &mut self,
        limits: &TierLimits,
        token: RefundToken,
        now_ms: u64,
        cost: u32,
    ) -> bool {
        let v = self.prepare(limits, now_ms);
        let t = token.at_ms();
        if self.taint() != 0 || t > v.now {
            return false;
        }
        let mut any = false;
        for (i, r) in limits.rings.iter().enumerate() {
            let p = v.pos[i];
            let (lo, hi) = Self::live(p);
            let j = r.div_g.div(t);
            if j < lo || j > hi {
                continue;
            }
            let s = r.slot_of(&p, j);
            let c = self.bucket(r, s);
            if c > 0 {
                let back = c.min(cost);
                self.set_bucket(r, s, c - back);
                let sum = self.sum(i);
                self.set_sum(i, sum.saturating_sub(back));
                any = true;
            }
        }
        any
    }

    /// True when both windows are empty at `now_ms`: the state carries no information
    /// and may be dropped.
    pub fn is_idle(&self, limits: &TierLimits, now_ms: u64) -> bool {
        let last = self.t_last();
        // Fast path: nothing recorded, or everything recorded has certainly expired.
        if self.sum(0) == 0 && self.sum(1) == 0 {
            return true;
        }
        if self.taint() == 0 && now_ms.min(TIME_MASK) > last {
            let far = limits.rings.iter().all(|r| {
                // The newest bucket that can hold data is the one of `last`.
                let end = (r.div_g.div(last) + 1) * r.g - 1 + r.w;
                now_ms >= end
            });
            if far {
                return true;
            }
        }
        let mut s = self.clone();
        s.prepare(limits, now_ms);
        s.sum(0) == 0 && s.sum(1) == 0
    }

    /// Re-expresses a state built under `old` for `new`, conservatively (see the
    /// module docs): admissions only move later in time, nothing recorded is lost, a
    /// lengthened window assumes the untracked span was used at the old limits. Both
    /// limits must be of this state's size (see [`rebased`](Self::rebased) otherwise).
    pub fn rebase(&mut self, old: &TierLimits, new: &TierLimits, now_ms: u64) {
        if old == new {
            return;
        }
        *self = self.rebased::<N>(old, new, now_ms);
    }

    /// [`rebase`](Self::rebase) into a state of `M` words (`new`'s size), e.g. when a
    /// reload moves a tier over or under [`NARROW_MAX_LIMIT`].
    pub fn rebased<const M: usize>(
        &mut self,
        old: &TierLimits,
        new: &TierLimits,
        now_ms: u64,
    ) -> State<M> {
        let v = self.prepare(old, now_ms);
        let now = v.now;
        let mut fresh = State::<M>::default();
        fresh.set_t_last(now);
        if self.sum(0) == 0 && self.sum(1) == 0 {
            return fresh;
        }
        // Per old ring: every recorded admission as (time, count) at the latest instant
        // it can have happened, plus its excess at `now`. Invariant: a ring holds a
        // record (at or after the real time) of every admission that really happened
        // inside its current window, i.e. at or after `known(i)`.
        let known = |i: usize| -> u64 { (now + 1).saturating_sub(old.rings[i].w) };
        let events: [Vec<(u64, u32)>; 2] = std::array::from_fn(|i| {
            let r = &old.rings[i];
            let (lo, hi) = Self::live(v.pos[i]);
            let mut out = Vec::with_capacity(16);
            let mut s = r.slot_of(&v.pos[i], lo);
            let mut total = 0u64;
            for j in lo..=hi {
                let c = self.bucket(r, s);
                s = r.next_slot(s);
                if c != 0 {
                    total += c as u64;
                    out.push((((j + 1) * r.g - 1).min(now), c));
                }
            }
            let excess = (self.sum(i) as u64).saturating_sub(total);
            if excess > 0 {
                out.push((now, excess as u32));
            }
            out
        });
        let fine = if old.rings[0].g <= old.rings[1].g {
            0
        } else {
            1
        };
        let known_from = known(0).min(known(1));
        for (i, r) in new.rings.iter().enumerate() {
            let p = r.pos(now);
            // The new ring must hold everything that happened inside its window.
            let need = (now + 1).saturating_sub(r.w);
            // One old ring whose record reaches back far enough (the finer one first);
            // otherwise both (counting their overlap twice) plus the untracked span.
            let sources: &[usize] = if known(fine) <= need {
                &[fine][..]
            } else if known(1 - fine) <= need {
                &[1 - fine][..]
            } else {
                &[0, 1][..]
            };
            for &src in sources {
                for &(t, c) in &events[src] {
                    fresh.place(r, i, p, t, c as u64);
                }
            }
            // Untracked span [need, known_from): assume the old limits were used in
            // full, per new bucket, at the bucket's latest instant in the span.
            let mut t = need;
            while t < known_from {
                let j = r.div_g.div(t);
                let end = ((j + 1) * r.g - 1).min(known_from - 1);
                let len = end - t + 1;
                let bound = old
                    .rings
                    .iter()
                    .map(|o| o.limit as u64 * len.div_ceil(o.w))
                    .min()
                    .unwrap_or(0);
                fresh.place(r, i, p, end, bound);
                t = end + 1;
            }
        }
        if fresh.sum(0) != 0 || fresh.sum(1) != 0 {
            fresh.set_taint(new.taint_len);
        }
        fresh
    }

    /// Adds `count` admissions that happened at or before `t` to ring `i` (positions
    /// `p` at now): into `t`'s bucket, spilling later when a counter is full, and into
    /// the excess (sum only) past the current bucket.
    fn place(&mut self, r: &Ring, i: usize, p: Pos, t: u64, count: u64) {
        // Counters never hold more in total than the 16-bit sum can (see module docs).
        let count = count.min((Self::C.sum_max() - self.sum(i)) as u64);
        if count == 0 {
            return;
        }
        let mut j = r.div_g.div(t);
        if (j as i64) < p.j0 {
            return; // entirely outside the new window already
        }
        let mut left = count;
        while left > 0 && j <= p.b {
            let s = r.slot_of(&p, j);
            let c = self.bucket(r, s) as u64;
            let put = (r.fmax as u64 - c).min(left);
            if put > 0 {
                self.set_bucket(r, s, (c + put) as u32);
                left -= put;
            }
            j += 1;
        }
        let cur = self.sum(i) as u64;
        self.set_sum(i, (cur + count) as u32);
    }
}

#[cfg(test)]
mod tests;
