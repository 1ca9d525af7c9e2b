//! What a core remembers of finished requests for the operator, beside the counters:
//! request durations by tier and decision, which auth method each key was last seen with
//! (`stats::CoreStats::record_seen`), and the subjects it denied most ([`DeniedTop`]).
//!
//! Owns: [`Worker::record_request`] (one call per request, from the connection loop: a
//! histogram bucket, two stores, and for a denial a scan of 32 fixed slots — no lock, no
//! allocation) and [`DeniedTop`]. Must not touch: the limit tables, upstream state.

use std::time::Instant;

use crate::runtime::msg::DeniedEntry;
use crate::stats::{AUTH_NAMES, MAX_TIERS, decision_index, key_hash};

use super::Worker;

/// Subjects a [`DeniedTop`] keeps.
const DENIED_SLOTS: usize = 32;
/// Bytes of a subject kept (longer ones are cut: shown only).
const SUBJECT_KEPT: usize = 64;
/// A subject not denied for this long counts as 0 when its slot is wanted.
const DENIED_RECENT_MS: u64 = 60_000;

/// What one finished request was, for [`Worker::record_request`].
pub struct Finished<'a> {
    /// The tier, when the request got as far as the limiter (None: refused before it).
    pub tier: Option<u16>,
    /// The access log's `limit` word (`admitted`, `denied`, … or `-`).
    pub decision: &'static str,
    /// The auth method name (`identity::AuthMethod::as_str`).
    pub auth: &'static str,
    /// The `[[rules]]` entry that decided, if one did (its slot, `Rule::slot`).
    pub rule: Option<usize>,
    pub key: &'a [u8],
    pub subject: &'a [u8],
    /// When it began and ended.
    pub began: Instant,
    pub ended: Instant,
}

impl Worker {
    /// Records a finished request (see the module header).
    pub fn record_request(&self, f: &Finished<'_>) {
        let tier = f
            .tier
            .map_or(MAX_TIERS, |t| usize::from(t).min(MAX_TIERS - 1));
        let d = if f.tier.is_some() {
            decision_index(f.decision)
        } else {
            decision_index("-")
        };
        self.stats.request_duration[tier][d].record(f.ended - f.began);
        let Some(t) = f.tier else { return };
        let since_epoch = f.ended.saturating_duration_since(self.epoch);
        let now = self.epoch_unix_ms + since_epoch.as_millis() as u64;
        if !f.key.is_empty() {
            let auth = AUTH_NAMES.iter().position(|&a| a == f.auth).unwrap_or(0);
            let seen = crate::stats::Seen {
                auth: auth as u8,
                tier: t,
                rule: f.rule,
                unix_ms: now,
            };
            self.stats.record_seen(key_hash(f.key), seen);
        }
        if f.decision == "denied" {
            self.denied.borrow_mut().add(f.subject, t, now);
        }
    }
}

/// Wall-clock Unix ms (what the admin API shows as "last seen").
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone, Copy)]
struct Slot {
    len: u8,
    subject: [u8; SUBJECT_KEPT],
    tier: u16,
    denied: u64,
    last_ms: u64,
}

/// The subjects denied most on this core (space-saving: a new subject takes the slot with
/// the fewest recent denials and inherits nothing). Fixed size; a denial costs one scan of
/// [`DENIED_SLOTS`] slots.
pub struct DeniedTop {
    slots: [Slot; DENIED_SLOTS],
}

impl Default for DeniedTop {
    fn default() -> Self {
        let empty = Slot {
            len: 0,
            subject: [0; SUBJECT_KEPT],
            tier: 0,
            denied: 0,
            last_ms: 0,
        };
        DeniedTop {
            slots: [empty; DENIED_SLOTS],
        }
    }
}

impl DeniedTop {
    pub fn add(&mut self, subject: &[u8], tier: u16, now_ms: u64) {
        let kept = &subject[..subject.len().min(SUBJECT_KEPT)];
        let weight = |s: &Slot| {
            if now_ms.saturating_sub(s.last_ms) > DENIED_RECENT_MS {
                0
            } else {
                s.denied
            }
        };
        let i =
            match self.slots.iter().position(|s| {
                s.denied > 0 && &s.subject[..s.len as usize] == kept && s.tier == tier
            }) {
                Some(i) => i,
                None => {
                    let (i, _) = self
                        .slots
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, s)| weight(s))
                        .unwrap_or((0, &self.slots[0]));
                    let s = &mut self.slots[i];
                    s.len = kept.len() as u8;
                    s.subject[..kept.len()].copy_from_slice(kept);
                    s.tier = tier;
                    s.denied = 0;
                    i
                }
            };
        let s = &mut self.slots[i];
        s.denied += 1;
        s.last_ms = now_ms;
    }

    /// The `n` subjects with the most denials denied within the last minute, most first.
    pub fn top(&self, n: usize, now_ms: u64) -> Vec<DeniedEntry> {
        let mut v: Vec<DeniedEntry> = self
            .slots
            .iter()
            .filter(|s| s.denied > 0 && now_ms.saturating_sub(s.last_ms) <= DENIED_RECENT_MS)
            .map(|s| DeniedEntry {
                subject: s.subject[..s.len as usize].to_vec(),
                tier: s.tier,
                denied: s.denied,
                last_ms: s.last_ms,
            })
            .collect();
        v.sort_by(|a, b| {
            b.denied
                .cmp(&a.denied)
                .then_with(|| a.subject.cmp(&b.subject))
        });
        v.truncate(n);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denied_top_counts_keeps_the_heaviest_and_forgets_the_stale() {
        let mut d = DeniedTop::default();
        for _ in 0..5 {
            d.add(b"HEAVY", 1, 1000);
        }
        d.add(b"LIGHT", 2, 1000);
        let t = d.top(10, 1000);
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].subject.as_slice(), t[0].denied, t[0].tier),
            (&b"HEAVY"[..], 5, 1)
        );
        // A flood of one-off subjects takes the light slots, never the heavy one.
        for i in 0..1000u32 {
            d.add(format!("K{i}").as_bytes(), 0, 2000);
        }
        let t = d.top(1, 2000);
        assert_eq!(t[0].subject, b"HEAVY");
        assert_eq!(d.top(100, 2000).len(), DENIED_SLOTS);
        // A minute later nothing is recent.
        assert!(d.top(10, 2000 + DENIED_RECENT_MS + 1).is_empty());
        let long = [b'x'; 100];
        d.add(&long, 0, 5000);
        let t = d.top(100, 5000);
        assert!(
            t.iter().any(|e| e.subject == long[..SUBJECT_KEPT]),
            "kept, cut"
        );
    }
}
