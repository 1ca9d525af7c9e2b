//! Whether a rule's `match` holds for a request: each condition given must hold (AND),
//! any value of a list may (OR), a condition not given holds always.
//!
//! Owns: [`Match`] and its conditions ([`Cond`]), [`Facts`] (what is known of a request
//! when the rules run) and [`HeaderLookup`]. Pure: no I/O, no allocation per request. Must
//! not touch: counters, subjects, configuration loading (`config::validate::rules` builds
//! a `Match`).

use std::net::IpAddr;

use crate::http::{Method, MethodSet};

use super::class::{ClassSet, OpClass};

/// A bucket name, or a prefix of names (written `logs-*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamePattern {
    pub text: String,
    pub prefix: bool,
}

impl NamePattern {
    fn matches(&self, name: &[u8]) -> bool {
        if self.prefix {
            name.starts_with(self.text.as_bytes())
        } else {
            name == self.text.as_bytes()
        }
    }
}

/// A header test: the first field named `name` equals or contains `value` (ASCII
/// case-insensitive; `value` is kept lower-case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderTest {
    pub name: String,
    pub value: String,
    pub contains: bool,
}

impl HeaderTest {
    fn holds(&self, v: Option<&[u8]>) -> bool {
        let Some(v) = v else { return false };
        let want = self.value.as_bytes();
        if !self.contains {
            return v.eq_ignore_ascii_case(want);
        }
        want.is_empty() || v.windows(want.len()).any(|w| w.eq_ignore_ascii_case(want))
    }
}

/// A rule's `match`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Match {
    pub methods: Option<MethodSet>,
    pub ops: Option<ClassSet>,
    pub buckets: Vec<NamePattern>,
    /// Prefixes of the request's route, `/BUCKET/KEY` whatever the addressing style.
    pub paths: Vec<String>,
    /// Tier indexes as a bitmask (the tier of the request's key).
    pub tiers: Option<u32>,
    pub addresses: Vec<ipnet::IpNet>,
    pub header: Option<HeaderTest>,
}

/// One condition of a [`Match`], in the order they are tested (cheapest first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cond {
    Methods,
    Ops,
    Tiers,
    Buckets,
    Paths,
    Addresses,
    Header,
}

impl Cond {
    pub const ALL: [Cond; 7] = [
        Cond::Methods,
        Cond::Ops,
        Cond::Tiers,
        Cond::Buckets,
        Cond::Paths,
        Cond::Addresses,
        Cond::Header,
    ];

    /// The field's name in `match`.
    pub fn field(self) -> &'static str {
        match self {
            Cond::Methods => "methods",
            Cond::Ops => "ops",
            Cond::Tiers => "tiers",
            Cond::Buckets => "buckets",
            Cond::Paths => "paths",
            Cond::Addresses => "addresses",
            Cond::Header => "header",
        }
    }
}

/// What the rules see of one request.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub method: Option<Method>,
    pub class: OpClass,
    pub bucket: &'a [u8],
    pub key: &'a [u8],
    /// The tier of the request's key (or the anonymous tier).
    pub tier: usize,
    /// The client address the request is counted under.
    pub client: IpAddr,
    /// What that address counts as in a table (`limit::addr_subject`: IPv6 clients by
    /// network).
    pub client_subject: [u8; 17],
}

impl Facts<'_> {
    /// Whether the route `/BUCKET/KEY` (`/` for the service) starts with `prefix`.
    pub fn route_starts_with(&self, prefix: &[u8]) -> bool {
        let Some(p) = prefix.strip_prefix(b"/") else {
            return false;
        };
        if self.bucket.is_empty() {
            return p.is_empty();
        }
        let n = self.bucket.len().min(p.len());
        if self.bucket[..n] != p[..n] {
            return false;
        }
        match p.get(self.bucket.len()..) {
            None | Some([]) => true,
            Some([b'/', rest @ ..]) => self.key.starts_with(rest),
            Some(_) => false,
        }
    }
}

/// Header lookup by name (ASCII case-insensitive), first field of that name.
pub trait HeaderLookup {
    fn header(&self, name: &str) -> Option<&[u8]>;
}

impl Match {
    /// The conditions this match gives, in test order.
    pub fn conditions(&self) -> impl Iterator<Item = Cond> + '_ {
        Cond::ALL.into_iter().filter(|c| self.has(*c))
    }

    fn has(&self, c: Cond) -> bool {
        match c {
            Cond::Methods => self.methods.is_some(),
            Cond::Ops => self.ops.is_some(),
            Cond::Tiers => self.tiers.is_some(),
            Cond::Buckets => !self.buckets.is_empty(),
            Cond::Paths => !self.paths.is_empty(),
            Cond::Addresses => !self.addresses.is_empty(),
            Cond::Header => self.header.is_some(),
        }
    }

    /// Whether condition `c` holds for the request (true when the match does not give it).
    pub fn holds(&self, c: Cond, f: &Facts<'_>, h: &impl HeaderLookup) -> bool {
        match c {
            Cond::Methods => self
                .methods
                .is_none_or(|m| f.method.is_some_and(|x| m.contains(x))),
            Cond::Ops => self.ops.is_none_or(|o| o.contains(f.class)),
            Cond::Tiers => self
                .tiers
                .is_none_or(|t| f.tier < 32 && t >> f.tier & 1 == 1),
            Cond::Buckets => {
                self.buckets.is_empty() || self.buckets.iter().any(|b| b.matches(f.bucket))
            }
            Cond::Paths => {
                self.paths.is_empty()
                    || self.paths.iter().any(|p| f.route_starts_with(p.as_bytes()))
            }
            Cond::Addresses => {
                self.addresses.is_empty() || self.addresses.iter().any(|n| n.contains(&f.client))
            }
            Cond::Header => self
                .header
                .as_ref()
                .is_none_or(|t| t.holds(h.header(&t.name))),
        }
    }

    /// Whether every condition holds.
    pub fn test(&self, f: &Facts<'_>, h: &impl HeaderLookup) -> bool {
        Cond::ALL.into_iter().all(|c| self.holds(c, f, h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct H(&'static [(&'static str, &'static str)]);
    impl HeaderLookup for H {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.0
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_bytes())
        }
    }

    fn facts<'a>(bucket: &'a str, key: &'a str) -> Facts<'a> {
        Facts {
            method: Some(Method::Get),
            class: OpClass::GetObject,
            bucket: bucket.as_bytes(),
            key: key.as_bytes(),
            tier: 2,
            client: "10.1.2.3".parse().unwrap(),
            client_subject: [0; 17],
        }
    }

    #[test]
    fn every_condition_must_hold_any_value_may() {
        let none = H(&[]);
        let ua = H(&[("User-Agent", "Mozilla FuzzBot/1.0")]);
        let f = facts("logs-2024", "a/b");
        assert!(
            Match::default().test(&f, &none),
            "an empty match holds always"
        );
        let mut m = Match {
            buckets: vec![
                NamePattern {
                    text: "photos".into(),
                    prefix: false,
                },
                NamePattern {
                    text: "logs-".into(),
                    prefix: true,
                },
            ],
            addresses: vec!["10.0.0.0/8".parse().unwrap()],
            tiers: Some(1 << 2),
            ..Match::default()
        };
        assert!(m.test(&f, &none));
        assert!(
            !m.test(&facts("logs", "a"), &none),
            "a prefix needs its whole text"
        );
        m.header = Some(HeaderTest {
            name: "user-agent".into(),
            value: "fuzz".into(),
            contains: true,
        });
        assert!(!m.test(&f, &none), "a header test fails without the header");
        assert!(m.test(&f, &ua));
        m.tiers = Some(1 << 1);
        assert!(!m.test(&f, &ua));
        assert_eq!(
            m.conditions().collect::<Vec<_>>(),
            [Cond::Tiers, Cond::Buckets, Cond::Addresses, Cond::Header]
        );
        let eq = HeaderTest {
            name: "x-team".into(),
            value: "ci".into(),
            contains: false,
        };
        assert!(eq.holds(Some(b"CI")) && !eq.holds(Some(b"ci2")));
    }

    #[test]
    fn paths_are_prefixes_of_the_route() {
        let f = facts("photos", "2024/a.jpg");
        let m = |p: &str| Match {
            paths: vec![p.to_string()],
            ..Match::default()
        };
        let h = H(&[]);
        for (p, want) in [
            ("/", true),
            ("/photos", true),
            ("/photos/", true),
            ("/photos/2024/", true),
            ("/phot", true),
            ("/photos/2025", false),
            ("/photosx", false),
            ("photos", false),
        ] {
            assert_eq!(m(p).test(&f, &h), want, "{p}");
        }
        assert!(m("/").test(&facts("", ""), &h));
        assert!(!m("/a").test(&facts("", ""), &h));
    }
}
