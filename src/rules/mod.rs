//! `[[rules]]`: limits beyond one key per tier — by bucket, operation class, route, address
//! or a header — evaluated in order for every request, and exemptions (`allow`) and
//! refusals (`deny`).
//!
//! Owns: [`RuleSet`] (the validated rules and the virtual-host domains), [`Rule`], its
//! [`Action`] and [`SubjectKind`], the evaluation ([`RuleSet::evaluate`]: which rules
//! charge a request, or which one decides it alone) and the table subject of a rule's
//! counter ([`Rule::subject_into`]). Pure: no I/O, no counters, no messages — the
//! admission (`proxy::conn::admit`) charges what [`Outcome`] lists through
//! `limit::multi` (decide all, then commit), `config::validate::rules` builds the set.
//!
//! # Semantics
//!
//! Rules are tested in file order. A rule whose `match` holds:
//! - `action = "deny"`: the request is refused (403 AccessDenied) and nothing is charged;
//! - `action = "allow"`: the request is exempt from the rules after it and from its tier
//!   (with the allow rule first, nothing is counted at all);
//! - limits: the request is charged to the rule's counter for its subject, as well as to
//!   every other matching limit rule and its tier. It is admitted only if every charge
//!   admits it; when one denies, none is counted.
//!
//! A rule keeps its counters across a reload while its name and subject stay the same
//! (its identity, [`Rule::id`]); new limits rebase them like a tier's. Its slot
//! ([`Rule::slot`], kept by [`RuleSet::renumber`]) numbers its table entries, stats and
//! cross-core charges for the life of the process, wherever it moves in the file.

pub mod class;
pub mod matcher;

use std::net::IpAddr;

use crate::limit::{ByteLimit, TierLimits, WindowConfig, addr_subject};

use class::OpClass;
use matcher::{Facts, HeaderLookup, Match};

/// Most rules a config may have (stats keep counters per rule).
pub const MAX_RULES: usize = 64;

/// The table `tier` field of a rule's entries is this + its slot (tiers use their number,
/// below this).
pub const RULE_TIER_BASE: u16 = 0x8000;

/// First byte of every rule subject: distinct from keys (printable), address subjects
/// (`0x00`) and penalty subjects (`0x01`).
pub const RULE_PREFIX: u8 = 0x02;

/// Bytes in front of a rule subject: [`RULE_PREFIX`] + the rule's 8-byte identity.
pub const RULE_HEAD: usize = 9;

/// What a rule counts a request under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// The request's key (an anonymous request: what its tier counts it under, its client
    /// address).
    Key,
    /// The client address.
    Address,
    /// The bucket (every key together).
    Bucket,
    /// The key and the bucket together.
    KeyBucket,
    /// The client address and the route: the rule's first `paths` prefix that matched,
    /// else the operation class and bucket (`list /logs`).
    AddressRoute,
}

impl SubjectKind {
    pub const ALL: [SubjectKind; 5] = [
        SubjectKind::Key,
        SubjectKind::Address,
        SubjectKind::Bucket,
        SubjectKind::KeyBucket,
        SubjectKind::AddressRoute,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SubjectKind::Key => "key",
            SubjectKind::Address => "address",
            SubjectKind::Bucket => "bucket",
            SubjectKind::KeyBucket => "key+bucket",
            SubjectKind::AddressRoute => "address+route",
        }
    }

    pub fn from_name(s: &str) -> Option<SubjectKind> {
        SubjectKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// What a limit rule counts.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleLimits {
    /// Units per request (default 1).
    pub cost: u32,
    /// The request windows (sustained, burst) as configured; None = no request limit.
    pub windows: Option<[WindowConfig; 2]>,
    pub rate: Option<TierLimits>,
    /// 0 = no in-flight limit.
    pub max_in_flight: u32,
    pub bytes: Option<ByteLimit>,
}

/// What a matching rule does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Limit(Box<RuleLimits>),
    Allow,
    Deny,
}

impl Action {
    pub fn word(&self) -> &'static str {
        match self {
            Action::Limit(_) => "limit",
            Action::Allow => "allow",
            Action::Deny => "deny",
        }
    }
}

/// One validated `[[rules]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub matcher: Match,
    pub subject: SubjectKind,
    pub action: Action,
    /// The rule's identity (a hash of its name and subject): the bytes its counters are
    /// kept under, so a reload that keeps both keeps the counters.
    pub id: [u8; 8],
    /// The rule's number for this process: its table entries (`RULE_TIER_BASE` + slot),
    /// its per-core stats and the cross-core messages that charge it. Kept by a reload
    /// while the identity stays, wherever the rule moves in the file
    /// ([`RuleSet::renumber`]); its position decides only the evaluation order.
    pub slot: u16,
}

impl Rule {
    pub fn identity(name: &str, subject: SubjectKind) -> [u8; 8] {
        // FNV-1a: stable within and across processes.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes().chain([0]).chain(subject.as_str().bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        h.to_le_bytes()
    }

    pub fn limits(&self) -> Option<&RuleLimits> {
        match &self.action {
            Action::Limit(l) => Some(l),
            _ => None,
        }
    }

    /// Appends the table subject of this rule's counter for the request to `out`:
    /// [`RULE_PREFIX`], the identity, then the subject's bytes. `key` is the request's key
    /// (empty: anonymous), `tier_subject` what its tier counts it under (the key, or its
    /// address subject).
    pub fn subject_into(&self, f: &Facts<'_>, key: &[u8], tier_subject: &[u8], out: &mut Vec<u8>) {
        let tier_subject = if key.is_empty() { tier_subject } else { key };
        out.push(RULE_PREFIX);
        out.extend_from_slice(&self.id);
        match self.subject {
            SubjectKind::Key => out.extend_from_slice(tier_subject),
            SubjectKind::Address => out.extend_from_slice(&f.client_subject),
            SubjectKind::Bucket => out.extend_from_slice(f.bucket),
            SubjectKind::KeyBucket => {
                out.extend_from_slice(f.bucket);
                out.push(b'/');
                out.extend_from_slice(tier_subject);
            }
            SubjectKind::AddressRoute => {
                out.extend_from_slice(&f.client_subject);
                match self
                    .matcher
                    .paths
                    .iter()
                    .find(|p| f.route_starts_with(p.as_bytes()))
                {
                    Some(p) => out.extend_from_slice(p.as_bytes()),
                    None => {
                        out.extend_from_slice(f.class.as_str().as_bytes());
                        out.extend_from_slice(b" /");
                        out.extend_from_slice(f.bucket);
                    }
                }
            }
        }
    }
}

/// The validated `[[rules]]` and what they need to read a request.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// `virtual_host_domains`: `BUCKET.DOMAIN` hosts address their bucket by name.
    pub domains: Vec<String>,
    /// `limits.ipv6_prefix`: how address subjects group IPv6 clients (as the tiers do).
    pub ipv6_prefix: u8,
}

impl Default for RuleSet {
    fn default() -> RuleSet {
        RuleSet {
            rules: Vec::new(),
            domains: Vec::new(),
            ipv6_prefix: crate::limit::DEFAULT_IPV6_PREFIX,
        }
    }
}

/// What the rules decide for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decided {
    /// Charge the matching limit rules (see [`Outcome::charges`]) and the tier.
    Charge,
    /// Rule `i` allows: charge the limit rules before it, not the tier.
    Allow(usize),
    /// Rule `i` denies: charge nothing.
    Deny(usize),
}

/// The matching limit rules of a request (indexes, in order) and how it ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub charges: Vec<u16>,
    pub decided: Decided,
}

impl Outcome {
    pub fn new() -> Outcome {
        Outcome {
            charges: Vec::with_capacity(8),
            decided: Decided::Charge,
        }
    }

    /// Whether the tier is charged too.
    pub fn charges_tier(&self) -> bool {
        self.decided == Decided::Charge
    }
}

impl Default for Outcome {
    fn default() -> Outcome {
        Outcome::new()
    }
}

impl RuleSet {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Tests the rules in order (see the module docs) into `out`.
    pub fn evaluate(&self, f: &Facts<'_>, h: &impl HeaderLookup, out: &mut Outcome) {
        out.charges.clear();
        out.decided = Decided::Charge;
        for (i, r) in self.rules.iter().enumerate() {
            if !r.matcher.test(f, h) {
                continue;
            }
            match r.action {
                Action::Limit(_) => out.charges.push(i as u16),
                Action::Allow => {
                    out.decided = Decided::Allow(i);
                    return;
                }
                Action::Deny => {
                    out.charges.clear();
                    out.decided = Decided::Deny(i);
                    return;
                }
            }
        }
    }

    /// The rule numbered `slot` ([`Rule::slot`]).
    pub fn by_slot(&self, slot: u16) -> Option<&Rule> {
        self.rules.iter().find(|r| r.slot == slot)
    }

    /// The rule of a table `tier` field (`RULE_TIER_BASE + slot`).
    pub fn of_tier(&self, tier: u16) -> Option<&Rule> {
        self.by_slot(tier.checked_sub(RULE_TIER_BASE)?)
    }

    /// The rule whose counters `subject` names: found by the identity the subject carries
    /// (names are unique), so a charge from a core on another config version finds the
    /// same rule. None: no rule has that identity here (removed or renamed, or added by a
    /// reload this core has not taken yet).
    pub fn owning(&self, subject: &[u8]) -> Option<&Rule> {
        let id = subject
            .get(1..RULE_HEAD)
            .filter(|_| subject[0] == RULE_PREFIX)?;
        self.rules.iter().find(|r| r.id == id)
    }

    /// Numbers the rules after a reload: a rule whose identity `old` has keeps its slot;
    /// each new one takes the lowest slot neither config uses (a slot freed by a removed
    /// rule only when none is left), so that stats and counters do not pass from one rule
    /// to another while a free slot remains.
    pub fn renumber(&mut self, old: &RuleSet) {
        let kept = |r: &Rule| old.rules.iter().find(|o| o.id == r.id).map(|o| o.slot);
        let mut taken = [false; MAX_RULES];
        let mut fresh = Vec::new();
        for (i, r) in self.rules.iter_mut().enumerate() {
            match kept(r) {
                Some(s) => {
                    r.slot = s;
                    taken[usize::from(s)] = true;
                }
                None => fresh.push(i),
            }
        }
        let mut by_old = [false; MAX_RULES];
        old.rules
            .iter()
            .for_each(|o| by_old[usize::from(o.slot)] = true);
        for i in fresh {
            let free = (0..MAX_RULES)
                .find(|&s| !taken[s] && !by_old[s])
                .or_else(|| (0..MAX_RULES).find(|&s| !taken[s]))
                .expect("at most MAX_RULES rules");
            taken[free] = true;
            self.rules[i].slot = free as u16;
        }
    }
}

/// What the rules see of a request, built from its head (see [`class`]).
pub fn facts<'a>(
    set: &RuleSet,
    method: Option<crate::http::Method>,
    path: &'a [u8],
    query: &'a [u8],
    host: Option<&'a [u8]>,
    tier: usize,
    client: IpAddr,
) -> Facts<'a> {
    let t = class::split_target(path, host, &set.domains);
    Facts {
        method,
        class: class::classify(method, &t, query),
        bucket: t.bucket,
        key: t.key,
        tier,
        client,
        client_subject: addr_subject(client, set.ipv6_prefix),
    }
}

/// The operation classes, for messages.
pub fn class_names() -> String {
    OpClass::ALL.map(OpClass::as_str).join(" ")
}

#[cfg(test)]
mod tests;
