//! Evaluation order, actions and the subjects of composite rules.

use super::matcher::{HeaderLookup, Match};
use super::*;
use crate::http::Method;

struct NoHeaders;
impl HeaderLookup for NoHeaders {
    fn header(&self, _: &str) -> Option<&[u8]> {
        None
    }
}

fn rule(name: &str, subject: SubjectKind, m: Match, action: Action) -> Rule {
    Rule {
        id: Rule::identity(name, subject),
        slot: 0,
        name: name.into(),
        matcher: m,
        subject,
        action,
    }
}

fn limit() -> Action {
    Action::Limit(Box::new(RuleLimits {
        cost: 1,
        windows: None,
        rate: None,
        max_in_flight: 1,
        bytes: None,
    }))
}

fn ops(c: OpClass) -> Match {
    let mut s = class::ClassSet::default();
    s.insert(c);
    Match {
        ops: Some(s),
        ..Match::default()
    }
}

#[test]
fn rules_run_in_order_and_actions_end_them() {
    let set = RuleSet {
        rules: vec![
            rule("lists", SubjectKind::Key, ops(OpClass::List), limit()),
            rule("all", SubjectKind::Bucket, Match::default(), limit()),
            rule(
                "no-deletes",
                SubjectKind::Key,
                ops(OpClass::Delete),
                Action::Deny,
            ),
            rule(
                "heads-free",
                SubjectKind::Key,
                ops(OpClass::Head),
                Action::Allow,
            ),
            rule("after", SubjectKind::Key, Match::default(), limit()),
        ],
        ..RuleSet::default()
    };
    let ip = "10.0.0.1".parse().unwrap();
    let run = |m, p: &str, q: &str| {
        let f = facts(&set, Some(m), p.as_bytes(), q.as_bytes(), None, 0, ip);
        let mut out = Outcome::new();
        set.evaluate(&f, &NoHeaders, &mut out);
        out
    };
    let o = run(Method::Get, "/b", "list-type=2");
    assert_eq!((o.charges, o.decided), (vec![0, 1, 4], Decided::Charge));
    let o = run(Method::Get, "/b/k", "");
    assert_eq!((o.charges, o.decided), (vec![1, 4], Decided::Charge));
    let o = run(Method::Delete, "/b/k", "");
    assert_eq!(
        (o.charges, o.decided),
        (vec![], Decided::Deny(2)),
        "a deny charges nothing"
    );
    let o = run(Method::Head, "/b/k", "");
    assert!(!o.charges_tier());
    assert_eq!(
        (o.charges, o.decided),
        (vec![1], Decided::Allow(3)),
        "rules after an allow do not count"
    );
}

#[test]
fn subjects_name_rule_and_parts() {
    let paths = Match {
        paths: vec!["/web/login".into()],
        ..Match::default()
    };
    let r = |k| rule("r", k, paths.clone(), limit());
    let ip: IpAddr = "10.0.0.1".parse().unwrap();
    let set = RuleSet::default();
    let f = facts(&set, Some(Method::Get), b"/web/login/x", b"", None, 0, ip);
    let subj = |k| {
        let mut out = Vec::new();
        r(k).subject_into(&f, b"KEY1", b"addr", &mut out);
        assert_eq!(out[0], RULE_PREFIX);
        assert_eq!(out[1..RULE_HEAD], Rule::identity("r", k));
        out[RULE_HEAD..].to_vec()
    };
    assert_eq!(subj(SubjectKind::Key), b"KEY1");
    assert_eq!(subj(SubjectKind::Bucket), b"web");
    assert_eq!(subj(SubjectKind::KeyBucket), b"web/KEY1");
    let mut want = addr_subject(ip, 128).to_vec();
    want.extend_from_slice(b"/web/login");
    assert_eq!(subj(SubjectKind::AddressRoute), want);
    // Without paths, the route is the class and bucket.
    let mut out = Vec::new();
    rule("r", SubjectKind::AddressRoute, Match::default(), limit())
        .subject_into(&f, b"", b"K", &mut out);
    assert!(out.ends_with(b"get_object /web"));
    assert_ne!(
        Rule::identity("r", SubjectKind::Key),
        Rule::identity("r", SubjectKind::Bucket)
    );
    let set = RuleSet {
        rules: vec![r(SubjectKind::Key)],
        ..RuleSet::default()
    };
    let mut s = Vec::new();
    set.rules[0].subject_into(&f, b"", b"K", &mut s);
    assert!(s.ends_with(b"K"), "anonymous: the tier's subject");
    assert!(set.owning(&s).is_some());
    assert!(set.owning(b"K").is_none());
    let other = RuleSet {
        rules: vec![rule("other", SubjectKind::Key, Match::default(), limit())],
        ..RuleSet::default()
    };
    assert!(other.owning(&s).is_none(), "no rule of that identity");
}

/// A reload keeps each rule's slot while its identity stays, wherever it moved; a new
/// rule takes a slot neither config uses while one is left.
#[test]
fn renumber_keeps_slots_by_identity() {
    let set = |names: &[&str]| RuleSet {
        rules: names
            .iter()
            .enumerate()
            .map(|(i, n)| Rule {
                slot: i as u16,
                ..rule(n, SubjectKind::Key, Match::default(), limit())
            })
            .collect(),
        ..RuleSet::default()
    };
    let slots = |s: &RuleSet| -> Vec<(String, u16)> {
        s.rules.iter().map(|r| (r.name.clone(), r.slot)).collect()
    };
    let own = |v: &[(&str, u16)]| -> Vec<(String, u16)> {
        v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    };
    let old = set(&["a", "b"]);
    let mut moved = set(&["c", "b", "a"]);
    moved.renumber(&old);
    assert_eq!(slots(&moved), own(&[("c", 2), ("b", 1), ("a", 0)]));
    assert_eq!(moved.by_slot(2).map(|r| r.name.as_str()), Some("c"));
    let mut fewer = set(&["c"]);
    fewer.renumber(&moved);
    assert_eq!(slots(&fewer), own(&[("c", 2)]));
    let mut again = set(&["d", "c", "e"]);
    again.renumber(&fewer);
    assert_eq!(slots(&again), own(&[("d", 0), ("c", 2), ("e", 1)]));
    // All slots used: a new rule reuses a slot the old config had.
    let names: Vec<String> = (0..MAX_RULES).map(|i| format!("r{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let full = set(&names);
    let mut swapped = set(&[&names[1..], &["new"]].concat());
    swapped.renumber(&full);
    assert_eq!(swapped.rules.last().map(|r| r.slot), Some(0));
    assert_eq!(swapped.rules[0].slot, 1, "r1 keeps its slot");
}
