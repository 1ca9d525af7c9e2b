//! Limit decisions on the data path: which subject and tier a request counts against,
//! and asking the subject's owner core — a plain call when this core owns it, one
//! message + reply over the mesh otherwise (batched per event-loop turn).
//!
//! Also the fire-and-forget updates: [`refund`] (to the owner core) and the per-address
//! penalty window, [`add_penalty`] (counted on every core) / [`check_penalty`] (local,
//! no message: every core holds the same failure counts); and, with `[cluster]`, the
//! core's side of the sync thread: [`cluster_flush`] hands the shard's pending admissions
//! over every `limit::cluster::FLUSH_MS`, [`apply_from_sync`] takes the others' views and
//! the mode in (the decision itself stays in `Shard::check`, which counts them).
//!
//! With `[[rules]]`, a request's several charges are decided together (`charges`).
//!
//! Owns: `Pending` (this core's table of requests waiting for a remote decision).
//! Must not touch: sockets. The reply path of each request is its slot index.

use std::future::poll_fn;
use std::net::IpAddr;
use std::task::{Poll, Waker};

use crate::config::{LimitsConfig, UnlistedKeys};
use crate::identity::Identified;
use crate::limit::multi::Verdict;
use crate::limit::{Decision, RefundToken, Shard, addr_subject, penalty_subject};
use crate::runtime::mesh::RING_SLOTS;
use crate::runtime::msg::{CoreMsg, FromSync, LimitUpdate, Subject, ToSync};

use super::Worker;

mod charges;
pub use charges::{Charge, Counters, add_bytes, charge_all, release_all};

enum Slot {
    Free {
        next: u32,
    },
    Waiting(Option<Waker>),
    /// The waiting request went away (client closed); free the slot when the reply comes.
    Abandoned,
    Ready(Verdict),
}

/// Requests of this core waiting for a decision from another core.
#[derive(Default)]
pub struct Pending {
    slots: Vec<Slot>,
    free_head: Option<u32>,
    pub in_flight: usize,
}

impl Pending {
    pub fn alloc(&mut self) -> u32 {
        self.in_flight += 1;
        if let Some(i) = self.free_head {
            let next = match self.slots[i as usize] {
                Slot::Free { next } => next,
                _ => unreachable!("free list points at a used slot"),
            };
            self.free_head = if next == u32::MAX { None } else { Some(next) };
            self.slots[i as usize] = Slot::Waiting(None);
            i
        } else {
            self.slots.push(Slot::Waiting(None));
            (self.slots.len() - 1) as u32
        }
    }

    fn free(&mut self, i: u32) {
        self.in_flight -= 1;
        self.slots[i as usize] = Slot::Free {
            next: self.free_head.unwrap_or(u32::MAX),
        };
        self.free_head = Some(i);
    }

    pub fn complete(&mut self, i: u32, d: Verdict) {
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return;
        };
        match std::mem::replace(slot, Slot::Ready(d)) {
            Slot::Waiting(w) => {
                if let Some(w) = w {
                    w.wake();
                }
            }
            Slot::Abandoned => self.free(i),
            other => *slot = other,
        }
    }

    fn poll(&mut self, i: u32, waker: &Waker) -> Option<Verdict> {
        match &mut self.slots[i as usize] {
            Slot::Ready(d) => {
                let d = *d;
                self.free(i);
                Some(d)
            }
            Slot::Waiting(w) => {
                *w = Some(waker.clone());
                None
            }
            _ => None,
        }
    }

    fn abandon(&mut self, i: u32) {
        if let Some(slot) = self.slots.get_mut(i as usize) {
            match slot {
                Slot::Waiting(_) => *slot = Slot::Abandoned,
                Slot::Ready(_) => self.free(i),
                _ => {}
            }
        }
    }
}

/// Guard that abandons a slot if the waiting request is dropped mid-wait.
struct SlotGuard<'a> {
    w: &'a Worker,
    slot: u32,
    done: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.w.pending.borrow_mut().abandon(self.slot);
        }
    }
}

/// Asks the owner core of `subject` to check-and-admit one request of tier `tier` as
/// `snap` (the request's config) has it.
pub async fn check(w: &Worker, snap: &super::Snapshot, subject: &[u8], tier: u16) -> Decision {
    let owner = w.router.owner(subject);
    if owner == w.id {
        w.stats.local_checks.inc();
        let now = w.now_ms();
        return match snap.tier(tier) {
            Some(l) => w.shard.borrow_mut().check(subject, tier, l, now),
            None => Decision::unlimited(),
        };
    }
    w.stats.remote_checks.inc();
    let slot = w.pending.borrow_mut().alloc();
    w.mesh.borrow_mut().send(
        owner,
        CoreMsg::Check {
            slot,
            subject: Subject::new(subject),
            tier,
            version: snap.cfg.limits.version as u32,
        },
    );
    w.kick_mesh();
    let d = wait(w, slot).await;
    d.decision
}

/// The answer for pending `slot`; the slot is abandoned if the wait is dropped.
async fn wait(w: &Worker, slot: u32) -> Verdict {
    let mut guard = SlotGuard {
        w,
        slot,
        done: false,
    };
    let v = poll_fn(|cx| match w.pending.borrow_mut().poll(slot, cx.waker()) {
        Some(v) => Poll::Ready(v),
        None => Poll::Pending,
    })
    .await;
    guard.done = true;
    v
}

/// Gives back the admission `token` (from the [`check`] decision of `subject`) — for
/// a request the upstream rejected as unauthenticated. Local when this core owns the
/// subject, else one message to the owner, no reply. True if given back locally or
/// sent; false if nothing could be given back here or the owner's queue was full
/// (the slot then stays used: conservative).
pub fn refund(w: &Worker, subject: &[u8], token: RefundToken) -> bool {
    let owner = w.router.owner(subject);
    if owner == w.id {
        return w.shard.borrow_mut().refund(subject, token, w.now_ms());
    }
    let subject = Subject::new(subject);
    send_update(
        w,
        owner,
        CoreMsg::Update(LimitUpdate::Refund { subject, token }),
    )
}

/// Counts one authentication failure of client address `peer` on every core. True if
/// every core got it (false: a queue was full and that core missed this one).
pub fn add_penalty(w: &Worker, peer: IpAddr, v6_prefix: u8) -> bool {
    let subject = penalty_subject(peer, v6_prefix);
    w.shard.borrow_mut().add_penalty(&subject, w.now_ms());
    let mut all = true;
    for core in (0..w.router.workers()).filter(|&c| c != w.id) {
        all &= send_update(w, core, CoreMsg::Update(LimitUpdate::Penalty { subject }));
    }
    all
}

/// `Some(denial)` when `peer` is over its failure window: the request must be refused
/// before it touches any key's counters. Local lookup only (none while this core
/// tracks no penalty at all).
pub fn check_penalty(w: &Worker, peer: IpAddr, v6_prefix: u8) -> Option<Decision> {
    w.shard
        .borrow()
        .check_penalty(&penalty_subject(peer, v6_prefix), w.now_ms())
}

/// Every `FLUSH_MS`: hands this core's pending admissions to the sync thread, one
/// message per key, attributed to the cluster time of the flush (`at_epoch` + `now_ms`).
/// A full ring leaves the rest pending in the shard for the next flush.
pub async fn cluster_flush(w: std::rc::Rc<Worker>, at_epoch: u64) {
    let every = std::time::Duration::from_millis(crate::limit::cluster::FLUSH_MS);
    loop {
        monoio::select! {
            _ = monoio::time::sleep(every) => {},
            _ = w.shutdown.wait() => return,
        }
        let at = at_epoch + w.now_ms();
        let snap = w.snapshot();
        let mut shard = w.shard.borrow_mut();
        let mut mesh = w.mesh.borrow_mut();
        shard.take_pending(|subject, tier, count| {
            let Some(l) = snap.tier(tier) else {
                return true; // the tier is gone (reload): nothing to count it against
            };
            let msg = ToSync::Delta {
                subject: Subject::new(subject),
                tier,
                windows: [l.sustained().length_ms, l.burst().length_ms],
                at,
                count,
            };
            mesh.to_sync(msg).is_ok()
        });
    }
}

/// Applies what the sync thread sent (called by the mesh task): a key's view of the other
/// instances, or the mode to count them in.
pub fn apply_from_sync(shard: &mut Shard, snap: &super::Snapshot, m: FromSync, now: u64) {
    match m {
        FromSync::Others {
            subject,
            tier,
            others,
        } => {
            if let Some(l) = snap.tier(tier) {
                shard.set_others(subject.as_bytes(), tier, l, others, now);
            }
        }
        FromSync::Mode(mode) => shard.set_mode(mode),
    }
}

/// Applies an update from another core (called by the mesh task).
pub fn apply_update(c: &mut Counters<'_>, u: LimitUpdate) {
    match u {
        LimitUpdate::Refund { subject, token } => {
            c.shard.refund(subject.as_bytes(), token, c.now);
        }
        LimitUpdate::Penalty { subject } => {
            c.shard.add_penalty(&subject, c.now);
        }
    }
}

/// Queues a fire-and-forget update for `core` unless a ring's worth already waits.
pub(super) fn send_update(w: &Worker, core: usize, u: CoreMsg) -> bool {
    let mut mesh = w.mesh.borrow_mut();
    if mesh.queued(core) >= RING_SLOTS {
        return false;
    }
    mesh.send(core, u);
    drop(mesh);
    w.kick_mesh();
    true
}

/// What a request counts against.
pub struct Target<'a> {
    /// Bytes of the subject: the key, or an address subject.
    pub subject: SubjectBytes<'a>,
    pub tier: usize,
    /// The key was found in the keys file.
    pub listed: bool,
}

pub enum SubjectBytes<'a> {
    Key(&'a [u8]),
    Addr([u8; 17]),
}

impl SubjectBytes<'_> {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            SubjectBytes::Key(k) => k,
            SubjectBytes::Addr(a) => a,
        }
    }
}

/// Chooses subject and tier: listed key → its tier, per key; unlisted key →
/// default tier, per key or per client address (config); anonymous → anonymous
/// tier, per client address.
pub fn target<'a>(limits: &LimitsConfig, id: &Identified<'a>, peer: IpAddr) -> Target<'a> {
    match id.key {
        Some(key) => {
            let (tier, listed) = limits.tier_of_key(key);
            let subject = if listed || limits.unlisted_keys == UnlistedKeys::PerKey {
                SubjectBytes::Key(key)
            } else {
                SubjectBytes::Addr(addr_subject(peer, limits.ipv6_prefix))
            };
            Target {
                subject,
                tier,
                listed,
            }
        }
        None => Target {
            subject: SubjectBytes::Addr(addr_subject(peer, limits.ipv6_prefix)),
            tier: limits.anonymous_tier,
            listed: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(n: u32) -> Verdict {
        let decision = Decision {
            sustained_count: n,
            burst_count: n,
            ..Decision::unlimited()
        };
        Verdict {
            decision,
            ..Verdict::ADMIT
        }
    }

    #[test]
    fn updates_apply_refunds_and_penalties() {
        use crate::limit::{TierLimits, WindowConfig};
        let w = |length_ms, limit| WindowConfig { length_ms, limit };
        let lim = TierLimits::new(w(60_000, 10), w(1000, 1));
        let mut sh = Shard::new(10);
        let token = sh.check(b"k", 0, &lim, 100).token.unwrap();
        assert!(!sh.check(b"k", 0, &lim, 101).admitted);
        let subject = Subject::new(b"k");
        let text = "[[upstream.servers]]\naddr = \"127.0.0.1:9000\"\n";
        let cfg =
            crate::config::load_str(text, std::path::Path::new("/nonexistent/t.toml")).unwrap();
        let snap = super::super::build_snapshot(std::sync::Arc::new(cfg));
        let mut flows = crate::limit::FlowTable::new(10);
        let mut at = |sh: &mut Shard, u, now| {
            let mut c = Counters {
                shard: sh,
                flows: &mut flows,
                snap: &snap,
                now,
            };
            apply_update(&mut c, u)
        };
        at(&mut sh, LimitUpdate::Refund { subject, token }, 102);
        assert!(sh.check(b"k", 0, &lim, 103).admitted);
        let p = penalty_subject("2001:db8::1".parse().unwrap(), 128);
        for _ in 0..20 {
            assert!(sh.check_penalty(&p, 200).is_none());
            at(&mut sh, LimitUpdate::Penalty { subject: p }, 200);
        }
        assert!(sh.check_penalty(&p, 201).is_some());
    }

    #[test]
    fn updates_do_not_grow_ring_messages() {
        // A ring slot is one CoreMsg: the new variant must not make every slot bigger.
        println!("size_of::<CoreMsg>() = {}", std::mem::size_of::<CoreMsg>());
        assert!(std::mem::size_of::<LimitUpdate>() <= std::mem::size_of::<CoreMsg>());
        assert!(std::mem::size_of::<CoreMsg>() <= 64);
    }

    #[test]
    fn slots_are_reused_and_abandoned_ones_freed_on_reply() {
        let mut p = Pending::default();
        let a = p.alloc();
        let b = p.alloc();
        assert_ne!(a, b);
        p.abandon(a);
        assert_eq!(p.in_flight, 2, "abandoned slot waits for its reply");
        p.complete(a, v(1));
        assert_eq!(p.in_flight, 1);
        let c = p.alloc();
        assert_eq!(c, a, "freed slot reused");
        p.complete(b, v(7));
        let waker = std::task::Waker::noop();
        assert_eq!(
            p.poll(b, waker).map(|x| x.decision.sustained_count),
            Some(7)
        );
        assert_eq!(p.poll(c, waker), None);
    }
}
