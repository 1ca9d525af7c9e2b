//! The layout half of the window algorithm: state sizes ([`Class`]: narrow 48 bytes,
//! wide 128 bytes), ring geometry ([`Ring`], [`Pos`]), exact fast division, and
//! [`TierLimits`] with the layout chooser. Pure arithmetic; the counters themselves and
//! every decision live in the parent module (`window`).
//!
//! Owns: where each field of a state sits and how many counters of what width each ring
//! gets. Must not touch: state contents, clocks, I/O.

use super::{MAX_LIMIT, WindowConfig};

/// Bits of the last-update time (ms) at the start of every state.
pub(super) const TIME_BITS: u32 = 48;
pub(super) const TIME_MASK: u64 = (1 << TIME_BITS) - 1;
pub(super) const TAINT_BITS: u32 = 8;
const MAX_BUCKETS: u64 = 250;
/// Largest limit the narrow (48-byte) state honours; tiers above it use the wide state.
pub const NARROW_MAX_LIMIT: u32 = 65_535;

/// Where the fields of one state size sit: 64-bit words, width and offset of each
/// window's sum, the taint counter, and the first ring counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Class {
    pub words: usize,
    pub sum_bits: u32,
    pub sum_off: [u32; 2],
    pub taint_off: u32,
    pub buckets_off: u32,
}

impl Class {
    pub const fn state_bits(&self) -> u32 {
        64 * self.words as u32
    }
    /// Bits available for the two rings of counters.
    pub const fn bucket_bits(&self) -> u32 {
        self.state_bits() - self.buckets_off
    }
    pub const fn sum_max(&self) -> u32 {
        if self.sum_bits >= 32 {
            u32::MAX
        } else {
            (1 << self.sum_bits) - 1
        }
    }
}

/// 48 bytes: time 48 | sustained sum 16 ‖ burst sum 16 | taint 8 | rings (296 bits).
pub(super) const NARROW: Class = Class {
    words: 6,
    sum_bits: 16,
    sum_off: [TIME_BITS, 64],
    taint_off: 80,
    buckets_off: 88,
};
/// 128 bytes: time 48 | (16 unused) ‖ sustained sum 32 | burst sum 32 ‖ taint 8 | rings
/// (888 bits).
pub(super) const WIDE: Class = Class {
    words: 16,
    sum_bits: 32,
    sum_off: [64, 96],
    taint_off: 128,
    buckets_off: 136,
};
pub(super) const NARROW_WORDS: usize = NARROW.words;
pub(super) const WIDE_WORDS: usize = WIDE.words;
/// Narrow-state sizes, as the tests know them.
#[cfg(test)]
pub(super) const STATE_BITS: u32 = NARROW.state_bits();
#[cfg(test)]
pub(super) const BUCKET_BITS: u32 = NARROW.bucket_bits();

/// The class of a state of `n` words.
pub(super) const fn class_of(n: usize) -> Class {
    if n == WIDE_WORDS { WIDE } else { NARROW }
}

/// Exact `n / d` for `n < 2^48`, `1 <= d < 2^32`, by one 128-bit multiply.
///
/// With `m = floor(2^80 / d) + 1`, `n * m / 2^80 = n/d + n*e/2^80` (`0 < e <= 1`); the
/// error stays below `1/d` because `n * d < 2^80`, so the floor is exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FastDiv {
    d: u64,
    m: u128,
}

impl FastDiv {
    pub(super) fn new(d: u64) -> FastDiv {
        let d = d.clamp(1, u32::MAX as u64);
        let m = if d == 1 {
            0
        } else {
            (1u128 << 80) / d as u128 + 1
        };
        FastDiv { d, m }
    }
    #[inline]
    pub(super) fn div(self, n: u64) -> u64 {
        debug_assert!(n <= TIME_MASK);
        if self.d == 1 {
            n
        } else {
            ((n as u128 * self.m) >> 80) as u64
        }
    }
}

/// One window's ring: geometry, counter width, where it lives in the state, and the
/// other window's density (for the partial-bucket credit).
#[derive(Clone, Copy, Debug)]
pub(super) struct Ring {
    /// Window length (ms, >= 1).
    pub(super) w: u64,
    /// Limit (<= MAX_LIMIT).
    pub(super) limit: u32,
    /// Bucket width (ms).
    pub(super) g: u64,
    /// Counters in the ring.
    pub(super) nb: u64,
    /// `ceil(w / g)` and `k*g - w`: locate the oldest bucket without a division.
    pub(super) k: u64,
    pub(super) r: u64,
    /// Bits per counter and the largest value a counter holds.
    pub(super) width: u32,
    pub(super) fmax: u32,
    /// Bit offset of counter 0.
    pub(super) off: u32,
    pub(super) div_g: FastDiv,
    pub(super) div_nb: FastDiv,
    /// The other window: `o_limit` admissions at most in any `o_w` consecutive ms.
    pub(super) o_w: u64,
    pub(super) o_limit: u32,
    pub(super) div_ow: FastDiv,
}

/// Where time `t` falls for one ring.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pos {
    /// Bucket holding `t`.
    pub(super) b: u64,
    /// Oldest bucket intersecting `(t - W, t]` (negative near time 0).
    pub(super) j0: i64,
    /// `(t + 1 - W) - j0 * g`: ms of bucket `j0` already outside the window (0 = none).
    pub(super) off_in: u64,
    /// Ring slot of bucket `b` (`u64::MAX` when not computed).
    pub(super) sb: u64,
}

impl Ring {
    /// Position of `t`, without the ring slot.
    #[inline]
    pub(super) fn pos_lite(&self, t: u64) -> Pos {
        let b = self.div_g.div(t);
        let x = t - b * self.g;
        let v = x + 1 + self.r;
        let carry = (v >= self.g) as u64;
        Pos {
            b,
            j0: b as i64 + carry as i64 - self.k as i64,
            off_in: v - carry * self.g,
            sb: u64::MAX,
        }
    }
    /// Position of `t`, with the ring slot of its bucket.
    #[inline]
    pub(super) fn pos(&self, t: u64) -> Pos {
        let mut p = self.pos_lite(t);
        p.sb = p.b - self.div_nb.div(p.b) * self.nb;
        p
    }
    /// Slot of bucket `j`, for `p.b - nb < j <= p.b` (no division).
    #[inline]
    pub(super) fn slot_of(&self, p: &Pos, j: u64) -> u64 {
        debug_assert!(p.sb != u64::MAX && j <= p.b && p.b - j < self.nb);
        let d = p.b - j;
        if d <= p.sb {
            p.sb - d
        } else {
            p.sb + self.nb - d
        }
    }
    #[inline]
    pub(super) fn next_slot(&self, s: u64) -> u64 {
        if s + 1 == self.nb { 0 } else { s + 1 }
    }
    /// Upper bound on admissions in `rem` consecutive ms, from the other window.
    #[inline]
    pub(super) fn density(&self, rem: u64) -> u64 {
        let chunks = self.div_ow.div(rem + self.o_w - 1);
        self.o_limit as u64 * chunks
    }
    pub(super) fn efficiency(&self) -> f64 {
        self.w as f64 / (self.w + self.g - 1) as f64
    }
}

/// A tier's two windows, with the state layout precomputed. Build once per config
/// snapshot; cheap to share. Equality compares the configured windows only.
#[derive(Clone, Debug)]
pub struct TierLimits {
    pub(super) cfg: [WindowConfig; 2],
    pub(super) rings: [Ring; 2],
    /// Ring whose bucket index counts the taint down (the coarser one).
    pub(super) unit: usize,
    /// Taint set by a rebase / counter overflow: advances of `rings[unit]` until every
    /// admission recorded now has left both windows.
    pub(super) taint_len: u32,
    /// The state size these rings are laid out in.
    pub(super) class: Class,
}

impl PartialEq for TierLimits {
    fn eq(&self, other: &TierLimits) -> bool {
        self.cfg == other.cfg
    }
}
impl Eq for TierLimits {}

fn bits_for(v: u64) -> u32 {
    (64 - v.leading_zeros()).max(1)
}

/// Per ring: (bucket width ms, counters, bits per counter).
type Geometry = [(u64, u64, u32); 2];

/// Bucket width for `nb` counters over a window of `w` ms, and the counters it really needs.
fn geometry(w: u64, nb: u64) -> (u64, u64) {
    if w <= 1 || nb <= 1 {
        return (1, 1);
    }
    let g = (w - 1).div_ceil(nb - 1);
    (g, (w - 1).div_ceil(g) + 1)
}

/// The layout with the best worst-case efficiency (then the best sum) for windows of
/// `w` ms and limits `l` in `bits` bits of counters.
fn choose(w: [u64; 2], l: [u32; 2], bits: u64) -> Geometry {
    // Largest counter a bucket of width g of window i can need in normal operation.
    let cmax = |i: usize, g: u64| -> u64 {
        let o = 1 - i;
        (l[i] as u64).min(l[o] as u64 * g.div_ceil(w[o]))
    };
    let min_nb = |i: usize| if w[i] <= 1 { 1 } else { 2 };
    let max_nb = |i: usize| w[i].min(MAX_BUCKETS);
    // Best so far: (min efficiency, sum of efficiencies, [(g, nb, width); 2]).
    let mut best: Option<(f64, f64, Geometry)> = None;
    let mut last_g0 = 0;
    for try0 in min_nb(0)..=max_nb(0) {
        let (g0, nb0) = geometry(w[0], try0);
        if g0 == last_g0 {
            continue;
        }
        last_g0 = g0;
        let w0 = bits_for(cmax(0, g0));
        let used = nb0 * w0 as u64;
        if used > bits {
            continue;
        }
        let left = bits - used;
        // Counter width of ring 1 is at least bits(min(L1, L0)); start from the most
        // counters that could fit and walk down to the first layout that does.
        let w1_lo = bits_for((l[1] as u64).min(l[0] as u64)) as u64;
        let mut try1 = (left / w1_lo).min(max_nb(1));
        while try1 >= min_nb(1) {
            let (g1, nb1) = geometry(w[1], try1);
            let w1 = bits_for(cmax(1, g1));
            if nb1 * w1 as u64 <= left {
                let e0 = w[0] as f64 / (w[0] + g0 - 1) as f64;
                let e1 = w[1] as f64 / (w[1] + g1 - 1) as f64;
                let cand = (e0.min(e1), e0 + e1, [(g0, nb0, w0), (g1, nb1, w1)]);
                if best.as_ref().is_none_or(|b| (cand.0, cand.1) > (b.0, b.1)) {
                    best = Some(cand);
                }
                break;
            }
            try1 -= 1;
        }
    }
    // Two counters of at most 20 bits per ring always fit, so a layout exists.
    let (_, _, geo) = best.expect("a 2+2 bucket layout always fits");
    geo
}

impl TierLimits {
    /// Whether a request of `cost` units can ever be admitted (both limits hold it).
    pub fn fits(&self, cost: u32) -> bool {
        self.rings.iter().all(|r| r.limit >= cost)
    }

    pub fn new(sustained: WindowConfig, burst: WindowConfig) -> TierLimits {
        let cfg = [sustained, burst];
        let w = cfg.map(|c| (c.length_ms as u64).max(1));
        let l = cfg.map(|c| c.limit.min(MAX_LIMIT));
        let class = if l.iter().all(|&x| x <= NARROW_MAX_LIMIT) {
            NARROW
        } else {
            WIDE
        };
        let geo = choose(w, l, class.bucket_bits() as u64);
        let mut off = class.buckets_off;
        let rings: [Ring; 2] = std::array::from_fn(|i| {
            let (g, nb, width) = geo[i];
            let k = w[i].div_ceil(g);
            let o = 1 - i;
            let ring = Ring {
                w: w[i],
                limit: l[i],
                g,
                nb,
                k,
                r: k * g - w[i],
                width,
                fmax: (1u32 << width) - 1,
                off,
                div_g: FastDiv::new(g),
                div_nb: FastDiv::new(nb),
                o_w: w[o],
                o_limit: l[o],
                div_ow: FastDiv::new(w[o]),
            };
            off += (nb * width as u64) as u32;
            ring
        });
        debug_assert!(off <= class.state_bits());
        let unit = if rings[0].g >= rings[1].g { 0 } else { 1 };
        let gu = rings[unit].g;
        let taint = 1 + rings
            .iter()
            .map(|r| (r.w + r.g - 1).div_ceil(gu))
            .max()
            .unwrap_or(1);
        TierLimits {
            cfg,
            rings,
            unit,
            taint_len: taint.min((1 << TAINT_BITS) - 1) as u32,
            class,
        }
    }

    /// Whether states of this tier are [`WideState`](super::WideState)s (a limit over
    /// [`NARROW_MAX_LIMIT`]) rather than the 48-byte [`WindowState`](super::WindowState).
    pub fn is_wide(&self) -> bool {
        self.class == WIDE
    }

    /// Bytes of one key's counters under these limits (48 or 128).
    pub fn state_bytes(&self) -> usize {
        self.class.words * 8
    }

    /// The sustained window as configured.
    pub fn sustained(&self) -> WindowConfig {
        self.cfg[0]
    }

    /// The burst window as configured.
    pub fn burst(&self) -> WindowConfig {
        self.cfg[1]
    }

    /// Bucket widths in ms (sustained, burst): the under-admission bound is `g - 1` ms.
    pub fn bucket_ms(&self) -> (u64, u64) {
        (self.rings[0].g, self.rings[1].g)
    }

    /// Counters per ring and bits per counter: ((sustained n, bits), (burst n, bits)).
    pub fn layout(&self) -> ((u64, u32), (u64, u32)) {
        (
            (self.rings[0].nb, self.rings[0].width),
            (self.rings[1].nb, self.rings[1].width),
        )
    }

    /// Worst-case fraction of the exact admissions a saturating client gets, per
    /// window (sustained, burst): `W / (W + g - 1)`.
    pub fn efficiency(&self) -> (f64, f64) {
        (self.rings[0].efficiency(), self.rings[1].efficiency())
    }
}
