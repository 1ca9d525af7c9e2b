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
    assert_eq!(set.owning(0, &s).map(|(i, _)| i), Some(0));
    assert_eq!(
        set.owning(1, &s).map(|(i, _)| i),
        Some(0),
        "a stale index: found by identity"
    );
    assert!(set.owning(0, b"K").is_none());
    let other = RuleSet {
        rules: vec![rule("other", SubjectKind::Key, Match::default(), limit())],
        ..RuleSet::default()
    };
    assert!(other.owning(0, &s).is_none(), "no rule of that identity");
}
