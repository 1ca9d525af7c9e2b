//! The charges of one request under `[[rules]]` (its matching limit rules, then its tier),
//! decided together by `limit::multi::decide` over the mesh: the [`Cores`] of a real
//! worker, the owner core's side of each operation (take, peek, undo, release, bytes), and
//! the end of an admitted request (in-flight slots released, body bytes counted).
//!
//! Owns: [`Charge`] (one charge's subject range, owner and what it held), [`Charger`].
//! Must not touch: sockets, rule matching (`crate::rules` says what to charge).

use crate::limit::multi::{self, ChargeLimits, Cores, Verdict};
use crate::limit::{FlowTable, RefundToken, Shard};
use crate::rules::RULE_TIER_BASE;
use crate::runtime::msg::{CoreMsg, Subject};

use super::super::{Snapshot, Worker};
use super::{send_update, wait};

/// One charge of a request: what it counts against (`what`: a tier number, or
/// `RULE_TIER_BASE` + a rule's slot), its subject (`bytes[start..end]` of the request's
/// subject buffer), the subject's owner core, and what an admitted request holds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Charge {
    pub what: u16,
    pub start: u32,
    pub end: u32,
    pub owner: u16,
    /// Pending slot of a remote charge (between ask and answer).
    slot: u32,
    /// The request is counted in flight under this charge (release it at the end).
    pub in_flight: bool,
    /// The rule counts body bytes of this subject.
    pub bytes: bool,
}

impl Charge {
    pub fn new(what: u16, start: usize, end: usize, owner: usize) -> Charge {
        Charge {
            what,
            start: start as u32,
            end: end as u32,
            owner: owner as u16,
            ..Charge::default()
        }
    }

    pub fn subject<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start as usize..self.end as usize]
    }

    /// Whether the request holds something under this charge until it ends.
    pub fn holds(&self) -> bool {
        self.in_flight || self.bytes
    }
}

/// The limits and cost of charge `what` of `subject` as this core's snapshot has them (a
/// rule is found by the identity in `subject`, whatever config version the sender was
/// on); None = nothing to count (a rule a reload removed or renamed, or one the reload is
/// still bringing to this core; a tier gone).
fn limits_of<'a>(snap: &'a Snapshot, subject: &[u8], what: u16) -> Option<(ChargeLimits<'a>, u32)> {
    if what < RULE_TIER_BASE {
        let l = ChargeLimits {
            rate: Some(snap.tier(what)?),
            tier: what,
            max_in_flight: 0,
            bytes: None,
        };
        return Some((l, 1));
    }
    let rule = snap.cfg.rules.owning(subject)?;
    let l = rule.limits()?;
    let cl = ChargeLimits {
        rate: l.rate.as_ref(),
        tier: RULE_TIER_BASE + rule.slot,
        max_in_flight: l.max_in_flight,
        bytes: l.bytes,
    };
    Some((cl, l.cost))
}

/// A core's counters, as the owner of a charge uses them.
pub struct Counters<'a> {
    pub shard: &'a mut Shard,
    pub flows: &'a mut FlowTable,
    pub snap: &'a Snapshot,
    pub now: u64,
}

impl Counters<'_> {
    pub fn take(&mut self, subject: &[u8], what: u16) -> Verdict {
        match limits_of(self.snap, subject, what) {
            Some((l, cost)) => multi::take(self.shard, self.flows, subject, &l, cost, self.now),
            None => Verdict::ADMIT,
        }
    }

    fn peek(&self, subject: &[u8], what: u16) -> Option<Verdict> {
        let (l, cost) = limits_of(self.snap, subject, what)?;
        multi::peek(self.shard, self.flows, subject, &l, cost, self.now)
    }

    pub fn undo(&mut self, subject: &[u8], what: u16, in_flight: bool, token: Option<RefundToken>) {
        let cost = limits_of(self.snap, subject, what).map_or(1, |(_, c)| c);
        multi::undo(
            self.shard, self.flows, subject, in_flight, cost, token, self.now,
        );
    }
}

/// One request's charges on a worker: the [`Cores`] that `multi::decide` drives.
pub struct Charger<'a> {
    pub w: &'a Worker,
    pub snap: &'a Snapshot,
    pub charges: &'a mut [Charge],
    pub bytes: &'a [u8],
}

impl Charger<'_> {
    /// Runs `f` on this core's counters.
    fn here<T>(&self, f: impl FnOnce(&mut Counters<'_>) -> T) -> T {
        let mut shard = self.w.shard.borrow_mut();
        let mut flows = self.w.flows.borrow_mut();
        f(&mut Counters {
            shard: &mut shard,
            flows: &mut flows,
            snap: self.snap,
            now: self.w.now_ms(),
        })
    }

    fn subject(&self, i: usize) -> &[u8] {
        self.charges[i].subject(self.bytes)
    }
}

impl Cores for Charger<'_> {
    fn is_local(&self, i: usize) -> bool {
        usize::from(self.charges[i].owner) == self.w.id
    }

    fn peek_local(&self, i: usize) -> Option<Verdict> {
        let what = self.charges[i].what;
        let mut shard = self.w.shard.borrow_mut();
        let mut flows = self.w.flows.borrow_mut();
        let c = Counters {
            shard: &mut shard,
            flows: &mut flows,
            snap: self.snap,
            now: self.w.now_ms(),
        };
        c.peek(self.subject(i), what)
    }

    fn take_local(&mut self, i: usize) -> Verdict {
        let what = self.charges[i].what;
        self.w.stats.local_checks.inc();
        self.here(|c| c.take(self.subject(i), what))
    }

    fn undo_local(&mut self, i: usize, v: &Verdict) {
        let what = self.charges[i].what;
        self.here(|c| c.undo(self.subject(i), what, v.in_flight, v.decision.token));
    }

    fn ask(&mut self, i: usize) {
        self.w.stats.remote_checks.inc();
        let slot = self.w.pending.borrow_mut().alloc();
        let c = &mut self.charges[i];
        c.slot = slot;
        let msg = CoreMsg::Charge {
            slot,
            subject: Subject::new(c.subject(self.bytes)),
            what: c.what,
            version: self.snap.cfg.limits.version as u32,
        };
        self.w.mesh.borrow_mut().send(usize::from(c.owner), msg);
        self.w.kick_mesh();
    }

    async fn answer(&mut self, i: usize) -> Verdict {
        wait(self.w, self.charges[i].slot).await
    }

    fn undo_remote(&mut self, i: usize, v: &Verdict) {
        let c = &self.charges[i];
        let u = CoreMsg::Undo {
            subject: Subject::new(c.subject(self.bytes)),
            what: c.what,
            in_flight: v.in_flight,
            token: v.decision.token,
        };
        self.w.mesh.borrow_mut().send(usize::from(c.owner), u);
        self.w.kick_mesh();
    }
}

/// Decides a request's charges (all counted, or none: `Err(i)`, charge `i` denied);
/// `out[i]` are the verdicts. On success each charge notes what the request holds.
pub async fn charge_all(
    w: &Worker,
    snap: &Snapshot,
    charges: &mut [Charge],
    bytes: &[u8],
    out: &mut Vec<Verdict>,
) -> Result<(), usize> {
    let n = charges.len();
    let mut c = Charger {
        w,
        snap,
        charges,
        bytes,
    };
    multi::decide(&mut c, n, out).await?;
    for (ch, v) in charges.iter_mut().zip(out.iter()) {
        ch.in_flight = v.in_flight;
        if let Some(r) = rule_stats(w, ch.what) {
            r.admitted.inc();
            r.in_flight.add(u64::from(v.in_flight));
        }
        ch.bytes =
            limits_of(snap, ch.subject(bytes), ch.what).is_some_and(|(l, _)| l.bytes.is_some());
    }
    Ok(())
}

/// This core's counters of the rule of charge `what` (by its slot; None for a tier).
fn rule_stats(w: &Worker, what: u16) -> Option<&crate::stats::RuleCounters> {
    let i = what.checked_sub(RULE_TIER_BASE)?;
    w.stats.rules.get(usize::from(i))
}

/// The end of an admitted request: every in-flight slot it holds is released (a message
/// to the owner when remote: never dropped).
pub fn release_all(w: &Worker, charges: &mut [Charge], bytes: &[u8]) {
    for c in charges.iter_mut().filter(|c| c.in_flight) {
        c.in_flight = false;
        if let Some(r) = rule_stats(w, c.what) {
            r.in_flight.sub(1);
        }
        let subject = c.subject(bytes);
        if usize::from(c.owner) == w.id {
            w.flows.borrow_mut().release(subject, w.now_ms());
        } else {
            let u = CoreMsg::Release {
                subject: Subject::new(subject),
            };
            w.mesh.borrow_mut().send(usize::from(c.owner), u);
            w.kick_mesh();
        }
    }
    charges.iter_mut().for_each(|c| c.bytes = false);
}

/// Counts `n` body bytes for every byte-limited charge of the request.
pub fn add_bytes(w: &Worker, charges: &[Charge], bytes: &[u8], n: u64) {
    for c in charges.iter().filter(|c| c.bytes) {
        let subject = c.subject(bytes);
        if usize::from(c.owner) == w.id {
            w.flows.borrow_mut().add_bytes(subject, n, w.now_ms());
        } else {
            let u = CoreMsg::Bytes {
                subject: Subject::new(subject),
                n,
            };
            send_update(w, usize::from(c.owner), u);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limit::{FlowTable, Shard};
    use std::sync::Arc;

    fn config(rules: &str) -> crate::config::Config {
        let text = format!("[[upstream.servers]]\naddr = \"127.0.0.1:9000\"\n{rules}");
        let cfg = crate::config::load_str(&text, std::path::Path::new("/nonexistent/t.toml"));
        cfg.unwrap()
    }

    fn snapshot(cfg: crate::config::Config) -> Snapshot {
        super::super::super::build_snapshot(Arc::new(cfg))
    }

    /// A reload that puts a rule before `keep` reaches the cores one by one: a core still
    /// on the old config charges `keep` to an owner already on the new one, where `keep`
    /// is second in the file. The owner counts it under `keep` all the same (when rules
    /// were named by file position it found the new rule there and admitted uncounted).
    #[test]
    fn a_charge_from_a_core_on_the_old_config_counts_under_the_same_rule() {
        let keep = "[[rules]]\nname = \"keep\"\nper_minute = 2\n";
        let old = snapshot(config(keep));
        let mut new = config(&format!(
            "[[rules]]\nname = \"new\"\nmatch.buckets = [\"zzz\"]\naction = \"deny\"\n{keep}"
        ));
        Arc::make_mut(&mut new.rules).renumber(&old.cfg.rules); // as a reload does
        let new = snapshot(new);
        let set = &old.cfg.rules;
        let ip = "10.0.0.1".parse().unwrap();
        let f = crate::rules::facts(set, None, b"/b/x", b"", None, 0, ip);
        let mut subject = Vec::new();
        set.rules[0].subject_into(&f, b"AKIAKEY", b"", &mut subject);
        let what = RULE_TIER_BASE; // the sender's slot of `keep`, also the owner's
        let (l, _) = limits_of(&new, &subject, what).expect("found by identity");
        assert_eq!(l.tier, RULE_TIER_BASE, "the slot kept by the reload");
        assert_eq!(new.cfg.rules.rules[0].slot, 1, "the new rule: a fresh slot");
        let (mut shard, mut flows) = (Shard::new(16), FlowTable::new(16));
        let mut c = Counters {
            shard: &mut shard,
            flows: &mut flows,
            snap: &new,
            now: 1000,
        };
        let admitted: Vec<bool> = (0..3)
            .map(|_| c.take(&subject, what).decision.admitted)
            .collect();
        assert_eq!(admitted, [true, true, false], "counted, limit 2");
        // A charge for a rule the owner does not have (yet, or any more) counts nothing.
        let renamed = snapshot(config(&keep.replace("keep", "renamed")));
        assert!(limits_of(&renamed, &subject, what).is_none());
    }
}
