//! Decide all, then commit: one request that counts against several subjects (the matching
//! `[[rules]]` and its tier), whose counters may live on different owner cores. Pure: the
//! counters of one core ([`peek`], [`take`], [`undo`]) and the protocol over cores
//! ([`decide`], driven through the [`Cores`] trait: real messages in `proxy::limiter`,
//! simulated cores in the property test below). No I/O, time passed in.
//!
//! Owns: [`ChargeLimits`], [`Verdict`], [`DenyKind`], the protocol. Must not touch: rule
//! matching, messages, sockets.
//!
//! # The protocol
//!
//! A request's charges are numbered in rule order (its tier last). With every charge
//! owned by this core (always with one worker) the decision is one synchronous step:
//! every charge but the last is peeked, the last is taken (check-and-admit: a denial there
//! records nothing), then the others are taken. Nothing else runs on the core in between,
//! so a denial charges nothing and no other request ever sees a partial admission.
//!
//! With charges on other cores:
//! 1. every local charge is peeked; a local denial ends the decision before any other
//!    core is asked (nothing charged, no message);
//! 2. each remote charge is sent to its owner core, which **takes** it (a reservation:
//!    admitted and counted there, or denied with nothing counted), and every answer is
//!    awaited;
//! 3. if every remote charge was admitted, the local ones are committed as above (peeked
//!    again: they may have changed during the wait);
//! 4. if any charge denied, every remote reservation that was admitted is **undone** by
//!    a message to its owner (never dropped), and the request is denied.
//!
//! # Guarantee
//!
//! - **Never over-admits**: every counter admits a unit only through its own exact check
//!   (`Shard::check_cost`, `FlowTable::take`), and undoing only removes units; so each rule's
//!   window and in-flight guarantees hold exactly as for a tier, whatever the interleaving.
//! - **A denied request leaves no charge**: local charges are never taken unless all are;
//!   remote reservations are undone. The one exception is conservative: a reservation on a
//!   counter that a reload rebased within its window (a tainted state) cannot be given back
//!   (`WindowState::refund`) and stays counted until it leaves the window.
//! - **Transient slots**: a remote reservation that is then undone is visible to other
//!   requests of the same subject on its owner core from the moment it is taken until the
//!   undo message is processed there — one more mesh round trip (microseconds when the cores
//!   are busy; up to the 40–60 µs wake-up of a parked core). Only requests with charges on
//!   two or more cores, of which one denies after another core admitted, take such a slot
//!   (a local denial is found by the peek of step 1 and asks no other core). During that
//!   time the slot can make another request be denied (never admitted) — under-admission
//!   only, bounded by the undone requests' costs in that interval.

use std::future::Future;

use super::flow::{ByteLimit, FlowDenial, FlowTable};
use super::table::Shard;
use super::window::{Decision, RefundToken, TierLimits};

/// Most charges one request can have (a bitmask of them is kept).
pub const MAX_CHARGES: usize = 128;

/// Retry hint when the in-flight limit denies: a response must end first, when is not known.
pub const IN_FLIGHT_RETRY_MS: u64 = 1000;

/// What one charge counts against, as its owner core resolves it.
#[derive(Clone, Copy, Debug)]
pub struct ChargeLimits<'a> {
    /// The request windows (None: the rule limits only in flight or bytes).
    pub rate: Option<&'a TierLimits>,
    /// The table's `tier` field for the entry (a tier number, or `RULE_TIER_BASE` + a
    /// rule's slot).
    pub tier: u16,
    /// 0 = no in-flight limit.
    pub max_in_flight: u32,
    pub bytes: Option<ByteLimit>,
}

/// Which limit denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DenyKind {
    Rate = 0,
    InFlight = 1,
    Bytes = 2,
}

impl DenyKind {
    pub fn from_u8(k: u8) -> DenyKind {
        match k {
            1 => DenyKind::InFlight,
            2 => DenyKind::Bytes,
            _ => DenyKind::Rate,
        }
    }
}

/// One charge's outcome: the window decision (its token is what [`undo`] gives back) and,
/// when denied, which limit denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub kind: DenyKind,
    /// The charge counted the request in flight: its end must release it (and an undo
    /// gives the slot back).
    pub in_flight: bool,
}

impl Verdict {
    /// Admitted, counted nowhere (a charge that limits nothing, or not decided yet).
    pub const ADMIT: Verdict = Verdict {
        decision: Decision::unlimited(),
        kind: DenyKind::Rate,
        in_flight: false,
    };

    pub fn admitted(&self) -> bool {
        self.decision.admitted
    }

    fn flow_denial(e: FlowDenial) -> Verdict {
        let (kind, retry) = match e {
            FlowDenial::InFlight => (DenyKind::InFlight, IN_FLIGHT_RETRY_MS),
            FlowDenial::Bytes { retry_ms } => (DenyKind::Bytes, retry_ms),
            FlowDenial::Full => (DenyKind::InFlight, IN_FLIGHT_RETRY_MS),
        };
        Verdict {
            decision: Decision::untracked(retry),
            kind,
            in_flight: false,
        }
    }
}

/// What taking the charge would decide, changing nothing: `None` = it would be admitted.
pub fn peek(
    shard: &Shard,
    flows: &FlowTable,
    subject: &[u8],
    l: &ChargeLimits<'_>,
    cost: u32,
    now: u64,
) -> Option<Verdict> {
    if l.max_in_flight > 0 || l.bytes.is_some() {
        if let Err(e) = flows.peek(subject, l.max_in_flight, l.bytes, now) {
            return Some(Verdict::flow_denial(e));
        }
    }
    let rate = l.rate?;
    if shard.would_admit_cost(subject, rate, now, cost) {
        return None;
    }
    let decision = shard
        .peek_cost(subject, rate, now, cost)
        .unwrap_or_else(|| Decision::untracked(rate.sustained().length_ms.into()));
    Some(Verdict {
        decision,
        kind: DenyKind::Rate,
        in_flight: false,
    })
}

/// Takes the charge (counts the request in its window, in flight) or denies it, counting
/// nothing.
pub fn take(
    shard: &mut Shard,
    flows: &mut FlowTable,
    subject: &[u8],
    l: &ChargeLimits<'_>,
    cost: u32,
    now: u64,
) -> Verdict {
    let flow = l.max_in_flight > 0 || l.bytes.is_some();
    if flow && let Err(e) = flows.peek(subject, l.max_in_flight, l.bytes, now) {
        return Verdict::flow_denial(e);
    }
    let decision = match l.rate {
        Some(rate) => shard.check_cost(subject, l.tier, rate, now, cost),
        None => Decision::unlimited(),
    };
    if !decision.admitted {
        return Verdict {
            decision,
            kind: DenyKind::Rate,
            in_flight: false,
        };
    }
    if flow && let Err(e) = flows.take(subject, l.max_in_flight, l.bytes, now) {
        // Only a full table can refuse after the peek: give the window back.
        if let (Some(t), Some(_)) = (decision.token, l.rate) {
            shard.refund_cost(subject, t, now, cost);
        }
        return Verdict::flow_denial(e);
    }
    Verdict {
        decision,
        kind: DenyKind::Rate,
        in_flight: flow && l.max_in_flight > 0,
    }
}

/// Gives back what [`take`] counted for an admitted `v`: the window's units (by its token)
/// and the in-flight slot.
pub fn undo(
    shard: &mut Shard,
    flows: &mut FlowTable,
    subject: &[u8],
    max_in_flight: bool,
    cost: u32,
    token: Option<RefundToken>,
    now: u64,
) {
    if let Some(t) = token {
        shard.refund_cost(subject, t, now, cost);
    }
    if max_in_flight {
        flows.release(subject, now);
    }
}

/// The cores a request's charges are counted on, as [`decide`] drives them.
pub trait Cores {
    /// Whether charge `i` is counted on this core.
    fn is_local(&self, i: usize) -> bool;
    /// [`peek`] of local charge `i`.
    fn peek_local(&self, i: usize) -> Option<Verdict>;
    /// [`take`] of local charge `i`.
    fn take_local(&mut self, i: usize) -> Verdict;
    /// [`undo`] of local charge `i`, admitted as `v`.
    fn undo_local(&mut self, i: usize, v: &Verdict);
    /// Asks the owner core of charge `i` to take it.
    fn ask(&mut self, i: usize);
    /// The owner's answer to [`ask`](Self::ask)`(i)`.
    fn answer(&mut self, i: usize) -> impl Future<Output = Verdict>;
    /// Tells the owner of charge `i` (admitted as `v`) to undo it.
    fn undo_remote(&mut self, i: usize, v: &Verdict);
}

/// Decides a request of `n` charges (see the module docs): Ok when every charge admitted
/// and all are counted, Err(i) when charge `i` denied and none is counted. `out[i]` is
/// each charge's verdict (for a denial: the denying one's; the others as far as decided).
pub async fn decide<C: Cores>(c: &mut C, n: usize, out: &mut Vec<Verdict>) -> Result<(), usize> {
    assert!(n <= MAX_CHARGES, "{n} charges: at most {MAX_CHARGES}");
    out.clear();
    out.resize(n, Verdict::ADMIT);
    let mask: u128 = (0..n)
        .filter(|&i| !c.is_local(i))
        .fold(0, |m, i| m | 1 << i);
    if mask == 0 {
        return commit_local(c, n, 0, out);
    }
    for i in (0..n).filter(|&i| mask >> i & 1 == 0) {
        if let Some(v) = c.peek_local(i) {
            out[i] = v;
            return Err(i);
        }
    }
    let asked = move || (0..n).filter(move |&i| mask >> i & 1 == 1);
    for i in asked() {
        c.ask(i);
    }
    for i in asked() {
        out[i] = c.answer(i).await;
    }
    let denied = match asked().find(|&i| !out[i].admitted()) {
        Some(i) => Err(i),
        None => commit_local(c, n, mask, out),
    };
    if denied.is_err() {
        for i in asked().filter(|&i| out[i].admitted()) {
            c.undo_remote(i, &out[i]);
        }
    }
    denied
}

/// Takes every local charge or none, in one synchronous step: peeks all but the last,
/// takes the last (a denial there counts nothing), then takes the others; one that still
/// denies (a full table refusing a new subject) undoes those taken. `remote` masks the
/// charges of other cores.
fn commit_local<C: Cores>(
    c: &mut C,
    n: usize,
    remote: u128,
    out: &mut [Verdict],
) -> Result<(), usize> {
    let local = move |to: usize| (0..to).filter(move |&i| remote >> i & 1 == 0);
    let Some(last) = local(n).next_back() else {
        return Ok(());
    };
    for i in local(last) {
        if let Some(v) = c.peek_local(i) {
            out[i] = v;
            return Err(i);
        }
    }
    out[last] = c.take_local(last);
    if !out[last].admitted() {
        return Err(last);
    }
    for i in local(last) {
        out[i] = c.take_local(i);
        if !out[i].admitted() {
            for j in local(i).chain([last]) {
                c.undo_local(j, &out[j]);
            }
            return Err(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
