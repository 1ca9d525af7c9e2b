//! The shard's active-active half (`limit::cluster`): each entry's view of the other
//! instances and its admissions not yet handed to the sync thread, kept in a slab
//! parallel to the entries (empty while the mode is `Alone`, so a shard without
//! `[cluster]` pays nothing), plus the list of entries with pending admissions.
//!
//! Owns: `remote`, `dirty`, `orphans` and the mode. Must not touch: counters (the
//! decision itself is `Shard::check`), the index.

use super::{Decision, PENALTY_TIER, Shard, TierLimits};
use crate::limit::cluster::{Mode, NOT_DIRTY, Remote, others_for};

/// Most pending admissions of removed entries kept for the sync thread.
const MAX_ORPHANS: usize = 4096;

impl Shard {
    /// Sets what is counted for the other instances. Leaving `Alone` starts a view per
    /// entry (empty); returning to `Alone` drops every view and pending admission.
    pub fn set_mode(&mut self, mode: Mode) {
        if mode == Mode::Alone {
            self.remote = Vec::new();
            self.dirty = Vec::new();
            self.orphans = Vec::new();
        } else if self.mode == Mode::Alone {
            self.remote = vec![Remote::default(); self.metas.len()];
        }
        self.mode = mode;
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The others' admissions entry `s` counts now (none for penalty windows).
    #[inline]
    pub(super) fn others_of(&self, s: usize, tier: u16, limits: &TierLimits) -> [u32; 2] {
        match self.remote.get(s) {
            Some(r) if tier != PENALTY_TIER => others_for(self.mode, r.others, limits),
            _ => [0, 0],
        }
    }

    /// Counts one admission of entry `s` for the sync thread.
    #[inline]
    pub(super) fn note_admission(&mut self, s: usize) {
        let Some(r) = self.remote.get_mut(s) else {
            return;
        };
        r.pending = r.pending.saturating_add(1);
        if r.dirty == NOT_DIRTY {
            r.dirty = self.dirty.len() as u32;
            self.dirty.push(s as u32);
        }
    }

    /// Before entry `s` is removed (and `last` moves into its slot): keeps its pending
    /// admissions and fixes the dirty list.
    pub(super) fn remote_remove(&mut self, s: usize, last: usize) {
        let r = self.remote[s];
        if r.dirty != NOT_DIRTY {
            if r.pending > 0 && self.orphans.len() < MAX_ORPHANS {
                let tier = self.metas[s].tier;
                self.orphans
                    .push((self.subject_of(s).into_boxed_slice(), tier, r.pending));
            }
            let d = r.dirty as usize;
            self.dirty.swap_remove(d);
            if let Some(&moved) = self.dirty.get(d) {
                self.remote[moved as usize].dirty = d as u32;
            }
        }
        if s != last && self.remote[last].dirty != NOT_DIRTY {
            self.dirty[self.remote[last].dirty as usize] = s as u32;
        }
        self.remote.swap_remove(s);
    }

    /// Entries with admissions not yet handed over.
    pub fn pending_keys(&self) -> usize {
        self.dirty.len() + self.orphans.len()
    }

    /// Hands every pending admission to `f(subject, tier, count)`; stops at the first
    /// `false` (no room to send it), keeping that one and the rest for the next call.
    /// Returns how many were handed over.
    pub fn take_pending(&mut self, mut f: impl FnMut(&[u8], u16, u32) -> bool) -> usize {
        let mut n = 0;
        while let Some((subject, tier, count)) = self.orphans.last() {
            if !f(subject, *tier, *count) {
                return n;
            }
            self.orphans.pop();
            n += 1;
        }
        while let Some(&s) = self.dirty.last() {
            let s = s as usize;
            let (tier, count) = (self.metas[s].tier, self.remote[s].pending);
            if !self.with_subject(s, |k| f(k, tier, count)) {
                return n;
            }
            self.dirty.pop();
            self.remote[s].pending = 0;
            self.remote[s].dirty = NOT_DIRTY;
            n += 1;
        }
        n
    }

    /// Sets the others' admissions of `subject` (tier `tier`, now under `limits`), as the
    /// sync thread read them. An untracked subject is tracked from now on if the others
    /// admitted anything (so its next request counts them); false if there was no room.
    pub fn set_others(
        &mut self,
        subject: &[u8],
        tier: u16,
        limits: &TierLimits,
        others: [u32; 2],
        now_ms: u64,
    ) -> bool {
        if self.mode == Mode::Alone {
            return false;
        }
        let s = if others == [0, 0] {
            match self.find_subject(subject) {
                Some(s) => s,
                None => return true,
            }
        } else {
            match self.entry_for(subject, tier, limits, now_ms) {
                Ok(s) => s,
                Err(Decision { .. }) => return false,
            }
        };
        self.remote[s].others = others;
        true
    }
}
