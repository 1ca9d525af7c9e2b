//! The `[[rules]]` side of the admit phase: what the rules see of the request
//! ([`rules::facts`] from the head), which charges it has (its matching limit rules, each
//! under its subject and owner core, then its tier), deciding them all together
//! (`limiter::charge_all`), the answer of a rule's denial, and what an admitted request
//! holds until it ends (in-flight slots, byte counts). Must not touch upstream connections.

use std::borrow::Cow;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::http::RequestHead;
use crate::limit::Decision;
use crate::limit::multi::DenyKind;
use crate::rules::matcher::HeaderLookup;
use crate::rules::{self, Decided, RULE_TIER_BASE};

use super::super::Snapshot;
use super::super::limiter::{self, Charge};
use super::admit::{Admission, RuleHit};
use super::{Conn, ReqInfo};

/// The request head's fields, for a rule's header test.
struct HeadFields<'a> {
    head: &'a RequestHead,
    buf: &'a [u8],
}

impl HeaderLookup for HeadFields<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.header(self.buf, name)
    }
}

/// The query of a request target (after `?`), empty if none.
fn query_of(target: &[u8]) -> &[u8] {
    match target.iter().position(|&b| b == b'?') {
        Some(i) => &target[i + 1..],
        None => &[],
    }
}

impl<S: AsyncReadRent + AsyncWriteRent> Conn<S> {
    /// Evaluates the rules and fills `charges` / `charge_bytes`: the matching limit rules'
    /// subjects, then the tier's (when it is charged and `limited`).
    fn plan_charges(&mut self, snap: &Snapshot, req: &ReqInfo, tier: usize, limited: bool) {
        let set = &snap.cfg.rules;
        let h = &self.cbuf[self.cstart..self.cstart + self.head.head_len];
        let f = rules::facts(
            set,
            req.method,
            self.head.path(h),
            query_of(self.head.target(h)),
            self.head.header(h, "host"),
            tier,
            self.client,
        );
        let fields = HeadFields {
            head: &self.head,
            buf: h,
        };
        set.evaluate(&f, &fields, &mut self.outcome);
        self.charges.clear();
        self.charge_bytes.clear();
        let router = &self.w.router;
        let mut push = |what: u16, bytes: &mut Vec<u8>, start: usize| {
            let owner = router.owner(&bytes[start..]);
            self.charges
                .push(Charge::new(what, start, bytes.len(), owner));
        };
        for &i in &self.outcome.charges {
            let start = self.charge_bytes.len();
            set.rules[usize::from(i)].subject_into(
                &f,
                &self.key,
                &self.subject,
                &mut self.charge_bytes,
            );
            let slot = set.rules[usize::from(i)].slot;
            push(RULE_TIER_BASE + slot, &mut self.charge_bytes, start);
        }
        if limited && self.outcome.charges_tier() {
            let start = self.charge_bytes.len();
            self.charge_bytes.extend_from_slice(&self.subject);
            push(tier as u16, &mut self.charge_bytes, start);
        }
    }

    /// The admission under `[[rules]]`: a deny rule refuses, an allow rule exempts (from
    /// the rules after it and the tier), and every charge is decided together. A tier in
    /// shadow mode is checked after the rules admitted (its denial forwards the request, so
    /// it must not keep the rules from counting it).
    pub(super) async fn admit_rules(
        &mut self,
        snap: &Snapshot,
        req: &ReqInfo,
        adm: &mut Admission,
        limited: bool,
    ) {
        let shadow_tier = limited && !adm.enforce;
        self.plan_charges(snap, req, adm.tier, limited && !shadow_tier);
        match self.outcome.decided {
            Decided::Deny(i) => {
                adm.rule = Some(RuleHit::Refused(snap.cfg.rules.rules[i].slot));
                adm.enforce = snap.cfg.limits.enforce;
                adm.decision = Some(Decision::untracked(0));
                return;
            }
            Decided::Allow(i) => adm.rule = Some(RuleHit::Allowed(snap.cfg.rules.rules[i].slot)),
            Decided::Charge => {}
        }
        if !self.charges.is_empty() {
            self.charge_rules(snap, adm, limited && !shadow_tier).await;
        }
        if shadow_tier && self.outcome.charges_tier() && adm.rule.is_none() {
            let t = adm.tier as u16;
            adm.decision = Some(limiter::check(&self.w, snap, &self.subject, t).await);
        }
    }

    /// Decides the planned charges together (the tier's last when `tier_charged`).
    async fn charge_rules(&mut self, snap: &Snapshot, adm: &mut Admission, tier_charged: bool) {
        let tier_at = (tier_charged && self.outcome.charges_tier()).then(|| self.charges.len() - 1);
        let mut out = std::mem::take(&mut self.verdicts);
        let r = limiter::charge_all(
            &self.w,
            snap,
            &mut self.charges,
            &self.charge_bytes,
            &mut out,
        )
        .await;
        match r {
            Ok(()) => {
                adm.decision = tier_at.map(|i| out[i].decision);
                adm.rules_charged = true;
                self.counts_bytes = self.charges.iter().any(|c| c.bytes);
            }
            Err(i) if Some(i) == tier_at => adm.decision = Some(out[i].decision),
            Err(i) => {
                adm.decision = Some(out[i].decision);
                adm.rule = Some(RuleHit::Limited(
                    self.charges[i].what - RULE_TIER_BASE,
                    out[i].kind,
                ));
                adm.enforce = snap.cfg.limits.enforce;
            }
        }
        self.verdicts = out;
    }

    /// Status, code and message of a rule's denial; names the rule in `X-RateLimit-Rule`.
    pub(super) fn rule_denial(
        &mut self,
        snap: &Snapshot,
        hit: RuleHit,
    ) -> (u16, &'static str, Cow<'static, str>) {
        let name = snap
            .cfg
            .rules
            .by_slot(hit.slot())
            .map_or("", |r| r.name.as_str());
        self.extra.push("X-RateLimit-Rule", name);
        let status = snap.cfg.limits.deny_status;
        match hit {
            RuleHit::Refused(_) => (403, "AccessDenied", format!("Denied by rule {name}").into()),
            RuleHit::Limited(_, DenyKind::Rate) | RuleHit::Allowed(_) => (
                status,
                "SlowDown",
                format!("Too many requests for rule {name}").into(),
            ),
            RuleHit::Limited(_, DenyKind::InFlight) => (
                status,
                "SlowDown",
                format!("Too many requests in flight for rule {name}").into(),
            ),
            RuleHit::Limited(_, DenyKind::Bytes) => (
                status,
                "SlowDown",
                format!("Too many bytes in the window of rule {name}").into(),
            ),
        }
    }

    /// Counts `n` body bytes (request or response) for the byte-limited rules of the
    /// current request.
    pub(super) fn count_body(&self, n: usize) {
        if self.counts_bytes && n > 0 {
            limiter::add_bytes(&self.w, &self.charges, &self.charge_bytes, n as u64);
        }
    }

    /// The end of the current request, on every path: what it holds is released.
    pub(super) fn end_charges(&mut self) {
        self.counts_bytes = false;
        if self.charges.iter().any(Charge::holds) {
            limiter::release_all(&self.w, &mut self.charges, &self.charge_bytes);
        }
    }
}
