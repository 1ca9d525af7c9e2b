//! Where an entry's counters live: the 48-byte [`WindowState`] in the `states` slab, or,
//! for a tier with a limit over [`NARROW_MAX_LIMIT`](crate::limit::NARROW_MAX_LIMIT), a
//! 128-byte [`WideState`] in the `wide` side slab (the `states` slot then holds its index,
//! [`WindowState::pointer`]). Every counter operation of the shard goes through here.
//!
//! Owns: the wide side slab's free list and moving an entry between the two sizes on a
//! rebase. Must not touch: the index, keys, eviction policy.

use super::Shard;
use crate::limit::window::{Decision, RefundToken, TierLimits, WideState, WindowState};

const NARROW: usize = 6;
const WIDE: usize = 16;

/// `$body` with `$st` bound to entry `$s`'s counters (`&` or `&mut`), either size.
macro_rules! with_state {
    ($sh:expr, $s:expr, |$st:ident| $body:expr) => {
        match $sh.wide_of($s) {
            None => {
                let $st = &$sh.states[$s];
                $body
            }
            Some(w) => {
                let $st = &$sh.wide[w];
                $body
            }
        }
    };
    (mut $sh:expr, $s:expr, |$st:ident| $body:expr) => {
        match $sh.wide_of($s) {
            None => {
                let $st = &mut $sh.states[$s];
                $body
            }
            Some(w) => {
                let $st = &mut $sh.wide[w];
                $body
            }
        }
    };
}

impl Shard {
    /// The wide slab index of entry `s`, if its counters are wide.
    #[inline]
    pub(super) fn wide_of(&self, s: usize) -> Option<usize> {
        self.own_limits(s)
            .is_wide()
            .then(|| self.states[s].pointee())
    }

    /// The `states` slot for fresh counters: empty narrow counters, or a pointer to fresh
    /// wide ones.
    pub(super) fn fresh_state(&mut self, wide: bool) -> WindowState {
        if wide {
            WindowState::pointer(self.alloc_wide(WideState::default()))
        } else {
            WindowState::default()
        }
    }

    fn alloc_wide(&mut self, st: WideState) -> u32 {
        match self.wide_free.pop() {
            Some(i) => {
                self.wide[i as usize] = st;
                i
            }
            None => {
                self.wide.push(st);
                (self.wide.len() - 1) as u32
            }
        }
    }

    /// Frees the wide counters of entry `s` (about to be removed), if any.
    pub(super) fn release_state(&mut self, s: usize) {
        if let Some(w) = self.wide_of(s) {
            self.wide[w] = WideState::default();
            self.wide_free.push(w as u32);
        }
    }

    /// Both windows empty, and (active-active) nothing from the others or pending.
    #[inline]
    pub(super) fn is_idle(&self, s: usize, now: u64) -> bool {
        let remote_idle = self
            .remote
            .get(s)
            .is_none_or(|r| r.others == [0, 0] && r.pending == 0);
        remote_idle && with_state!(self, s, |st| st.is_idle(self.own_limits(s), now))
    }

    #[inline]
    pub(super) fn would_admit(&self, s: usize, now: u64) -> bool {
        with_state!(self, s, |st| st.would_admit(self.own_limits(s), now))
    }

    /// When entry `s` was last checked (its recency for eviction).
    #[inline]
    pub(super) fn last_update(&self, s: usize) -> u64 {
        with_state!(self, s, |st| st.last_update())
    }

    /// Checks entry `s`, whose counters are built under `limits`, counting `extra`
    /// admissions made by other instances.
    #[inline]
    pub(super) fn check_at(
        &mut self,
        s: usize,
        limits: &TierLimits,
        now: u64,
        extra: [u32; 2],
        cost: u32,
    ) -> Decision {
        with_state!(mut self, s, |st| st.check_cost(limits, now, extra, cost))
    }

    pub(super) fn refund_at(&mut self, s: usize, token: RefundToken, now: u64, cost: u32) -> bool {
        let layout = self.metas[s].layout as usize;
        with_state!(mut self, s, |st| st
            .refund_cost(&self.layouts[layout].limits, token, now, cost))
    }

    /// Whether entry `s` would admit `cost` units under `limits` (its counters rebased to
    /// them first, on a copy, if they were built under others), counting the other
    /// instances' share as `check` does.
    pub(super) fn would_admit_under(
        &self,
        s: usize,
        limits: &TierLimits,
        now: u64,
        cost: u32,
    ) -> bool {
        let extra = self.others_of(s, self.metas[s].tier, limits);
        if self.own_limits(s) == limits && extra == [0, 0] {
            return with_state!(self, s, |st| st.would_admit_cost(limits, now, cost));
        }
        self.peek_under_cost(s, limits, now, extra, cost).admitted
    }

    /// What checking entry `s` under `limits` would decide (rebasing a copy first if its
    /// counters were built under other limits).
    pub(super) fn peek_under(&self, s: usize, limits: &TierLimits, now: u64) -> Decision {
        self.peek_under_with(s, limits, now, [0, 0])
    }

    /// [`peek_under`](Self::peek_under) counting `extra` admissions made elsewhere.
    pub(super) fn peek_under_with(
        &self,
        s: usize,
        limits: &TierLimits,
        now: u64,
        extra: [u32; 2],
    ) -> Decision {
        self.peek_under_cost(s, limits, now, extra, 1)
    }

    /// [`peek_under_with`](Self::peek_under_with) for a request of `cost` units.
    pub(super) fn peek_under_cost(
        &self,
        s: usize,
        limits: &TierLimits,
        now: u64,
        extra: [u32; 2],
        cost: u32,
    ) -> Decision {
        let own = self.own_limits(s);
        if own == limits {
            return with_state!(self, s, |st| st.peek_cost(limits, now, extra, cost));
        }
        let wide = limits.is_wide();
        with_state!(self, s, |st| {
            let mut st = st.clone();
            if wide {
                st.rebased::<WIDE>(own, limits, now)
                    .peek_cost(limits, now, extra, cost)
            } else {
                st.rebased::<NARROW>(own, limits, now)
                    .peek_cost(limits, now, extra, cost)
            }
        })
    }

    /// Re-expresses entry `s`'s counters under `limits` (registry id `new`), moving them
    /// between the two slabs when the size changes.
    pub(super) fn rebase_entry(&mut self, s: usize, new: u16, limits: &TierLimits, now: u64) {
        let cur = self.metas[s].layout as usize;
        let old = self.layouts[cur].limits.clone();
        match (self.wide_of(s), limits.is_wide()) {
            (None, false) => self.states[s].rebase(&old, limits, now),
            (Some(w), true) => self.wide[w].rebase(&old, limits, now),
            (None, true) => {
                let st = self.states[s].rebased::<WIDE>(&old, limits, now);
                self.states[s] = WindowState::pointer(self.alloc_wide(st));
            }
            (Some(w), false) => {
                self.states[s] = self.wide[w].rebased::<NARROW>(&old, limits, now);
                self.wide[w] = WideState::default();
                self.wide_free.push(w as u32);
            }
        }
        self.layouts[cur].refs -= 1;
        self.layouts[new as usize].refs += 1;
        self.metas[s].layout = new;
    }
}
