//! Validation of `[[rules]]` (and the top-level `virtual_host_domains` they read buckets
//! with): each rule's name, `match`, `subject`, limits or `action`, with errors that name
//! the rule's field (`rules[2].match.ops`) and its line.
//!
//! Owns: the raw forms of a rule ([`RawRule`], [`RawMatch`]) and those checks. Must not
//! touch: the evaluation (`crate::rules`), tiers (`limits` validates them; rules only name
//! them).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use super::{R, Validator};
use crate::config::doc::{Seg, p};
use crate::config::file::{
    RawDuration, RawWindow, SHORTHAND_BURST_WINDOW, SHORTHAND_SUSTAINED_WINDOW,
};
use crate::config::keys::unknown_tier_message;
use crate::config::{LimitsConfig, WindowConfig};
use crate::limit::{ByteLimit, TierLimits};
use crate::rules::class::{ClassSet, OpClass};
use crate::rules::matcher::{HeaderTest, Match, NamePattern};
use crate::rules::{Action, MAX_RULES, Rule, RuleLimits, RuleSet, SubjectKind, class_names};

/// One `[[rules]]` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matcher: RawMatch,
    pub subject: Option<String>,
    pub cost: Option<u64>,
    pub per_second: Option<u64>,
    pub per_minute: Option<u64>,
    pub burst: Option<RawWindow>,
    pub sustained: Option<RawWindow>,
    pub max_in_flight: Option<u64>,
    pub bytes_per_window: Option<RawBytes>,
    pub action: Option<String>,
}

/// A rule's `match` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub methods: Option<Vec<String>>,
    pub ops: Option<Vec<String>>,
    pub buckets: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub tiers: Option<Vec<String>>,
    pub addresses: Option<Vec<String>>,
    pub header: Option<RawHeader>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeader {
    pub name: String,
    pub equals: Option<String>,
    pub contains: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBytes {
    pub bytes: u64,
    pub window: RawDuration,
}

/// A field path under rule `i`.
fn at(i: usize, fields: &[&str]) -> Vec<Seg> {
    let mut p = p!["rules", i].to_vec();
    p.extend(fields.iter().map(|f| Seg::key(f)));
    p
}

fn indexed(mut path: Vec<Seg>, j: usize) -> Vec<Seg> {
    path.push(Seg::Index(j));
    path
}

impl Validator<'_> {
    /// `[[rules]]` in file order, with the tiers they may name.
    pub(super) fn rules(
        &self,
        raw: &[RawRule],
        domains: Option<&[String]>,
        limits: &LimitsConfig,
    ) -> R<RuleSet> {
        if raw.len() > MAX_RULES {
            return Err(self.err(
                &p!["rules"],
                format!("{} rules: at most {MAX_RULES} are supported", raw.len()),
            ));
        }
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let rule = self.rule(i, r, &limits.tier_index)?;
            if !names.insert(rule.name.clone()) {
                return Err(self.err(
                    &at(i, &["name"]),
                    format!(
                        "rule name {:?} is used twice: names must be unique",
                        rule.name
                    ),
                ));
            }
            rules.push(rule);
        }
        let domains = domains.unwrap_or_default();
        for (j, d) in domains.iter().enumerate() {
            if d.is_empty() || d.starts_with('.') || !d.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(self.err(
                    &p!["virtual_host_domains", j],
                    format!("invalid domain {d:?} (e.g. \"s3.example.com\")"),
                ));
            }
        }
        Ok(RuleSet {
            rules,
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            ipv6_prefix: limits.ipv6_prefix,
        })
    }

    fn rule(&self, i: usize, r: &RawRule, tiers: &HashMap<String, usize>) -> R<Rule> {
        let Some(name) = r.name.clone() else {
            return Err(self.err(
                &p!["rules", i],
                "missing name: every rule needs a unique name",
            ));
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(
                &at(i, &["name"]),
                format!("invalid rule name {name:?} (printable, no spaces)"),
            ));
        }
        let subject = match r.subject.as_deref() {
            None => SubjectKind::Key,
            Some(s) => SubjectKind::from_name(s).ok_or_else(|| {
                let all: Vec<&str> = SubjectKind::ALL.iter().map(|k| k.as_str()).collect();
                self.err(
                    &at(i, &["subject"]),
                    format!("unknown subject {s:?} (expected one of {})", all.join(" ")),
                )
            })?,
        };
        let matcher = self.matcher(i, &r.matcher, tiers)?;
        let action = self.action(i, r)?;
        Ok(Rule {
            id: Rule::identity(&name, subject),
            slot: i as u16,
            name,
            matcher,
            subject,
            action,
        })
    }

    fn matcher(&self, i: usize, m: &RawMatch, tiers: &HashMap<String, usize>) -> R<Match> {
        let mut out = Match::default();
        if let Some(list) = &m.methods {
            out.methods = Some(self.methods(list, &at(i, &["match", "methods"]))?);
        }
        if let Some(list) = &m.ops {
            let mut set = ClassSet::default();
            for (j, s) in list.iter().enumerate() {
                let c = OpClass::from_name(s).ok_or_else(|| {
                    self.err(
                        &indexed(at(i, &["match", "ops"]), j),
                        format!(
                            "unknown operation class {s:?} (expected one of {})",
                            class_names()
                        ),
                    )
                })?;
                set.insert(c);
            }
            out.ops = Some(set);
        }
        for (j, b) in m.buckets.iter().flatten().enumerate() {
            let (text, prefix) = match b.strip_suffix('*') {
                Some(t) => (t, true),
                None => (b.as_str(), false),
            };
            if text.contains(['*', '/']) || (text.is_empty() && !prefix) {
                return Err(self.err(
                    &indexed(at(i, &["match", "buckets"]), j),
                    format!("invalid bucket {b:?} (a name, or a prefix ending in *)"),
                ));
            }
            out.buckets.push(NamePattern {
                text: text.to_string(),
                prefix,
            });
        }
        for (j, path) in m.paths.iter().flatten().enumerate() {
            if !path.starts_with('/') {
                return Err(self.err(
                    &indexed(at(i, &["match", "paths"]), j),
                    format!("invalid path {path:?} (a prefix of /BUCKET/KEY, starting with /)"),
                ));
            }
            out.paths.push(path.clone());
        }
        if let Some(list) = &m.tiers {
            let mut mask = 0u32;
            for (j, t) in list.iter().enumerate() {
                let ti = tiers.get(t).ok_or_else(|| {
                    self.err(
                        &indexed(at(i, &["match", "tiers"]), j),
                        unknown_tier_message(t, tiers),
                    )
                })?;
                mask |= 1 << ti;
            }
            out.tiers = Some(mask);
        }
        if let Some(list) = &m.addresses {
            out.addresses = self.networks(list, &at(i, &["match", "addresses"]))?;
        }
        if let Some(h) = &m.header {
            out.header = Some(self.header_test(i, h)?);
        }
        Ok(out)
    }

    fn header_test(&self, i: usize, h: &RawHeader) -> R<HeaderTest> {
        let path = at(i, &["match", "header"]);
        if h.name.is_empty() || !h.name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            return Err(self.err(&at(i, &["match", "header", "name"]), "invalid header name"));
        }
        let (value, contains) = match (&h.equals, &h.contains) {
            (Some(v), None) => (v, false),
            (None, Some(v)) => (v, true),
            _ => {
                return Err(self.err(&path, "give exactly one of equals or contains"));
            }
        };
        Ok(HeaderTest {
            name: h.name.to_ascii_lowercase(),
            value: value.to_ascii_lowercase(),
            contains,
        })
    }

    fn action(&self, i: usize, r: &RawRule) -> R<Action> {
        let limited = r.per_second.is_some()
            || r.per_minute.is_some()
            || r.burst.is_some()
            || r.sustained.is_some()
            || r.max_in_flight.is_some()
            || r.bytes_per_window.is_some();
        match r.action.as_deref() {
            None if limited => Ok(Action::Limit(Box::new(self.rule_limits(i, r)?))),
            None => Err(self.err(
                &p!["rules", i],
                "the rule neither limits nor acts: give per_second/per_minute, burst/sustained, \
                 max_in_flight, bytes_per_window, or action = \"allow\" / \"deny\"",
            )),
            Some(a @ ("allow" | "deny")) if limited || r.cost.is_some() => Err(self.err(
                &at(i, &["action"]),
                format!("action = {a:?} takes no limits or cost: they would never count"),
            )),
            Some("allow") => Ok(Action::Allow),
            Some("deny") => Ok(Action::Deny),
            Some(a) => Err(self.err(
                &at(i, &["action"]),
                format!("unknown action {a:?} (expected \"allow\" or \"deny\")"),
            )),
        }
    }

    fn rule_limits(&self, i: usize, r: &RawRule) -> R<RuleLimits> {
        let rp = p!["rules", i];
        let window = |short: Option<u64>, ex: Option<&RawWindow>, w, names| {
            if short.is_none() && ex.is_none() {
                return Ok(None);
            }
            self.window(short, ex, w, &rp, names).map(|(c, _)| Some(c))
        };
        let burst = window(
            r.per_second,
            r.burst.as_ref(),
            SHORTHAND_BURST_WINDOW,
            ("per_second", "burst"),
        )?;
        let sustained = window(
            r.per_minute,
            r.sustained.as_ref(),
            SHORTHAND_SUSTAINED_WINDOW,
            ("per_minute", "sustained"),
        )?;
        let windows: Option<[WindowConfig; 2]> = match (sustained, burst) {
            (Some(s), Some(b)) => Some([s, b]),
            (Some(w), None) | (None, Some(w)) => Some([w, w]),
            (None, None) => None,
        };
        let cost = r.cost.unwrap_or(1);
        let most = windows.map_or(u64::from(crate::limit::MAX_LIMIT), |w| {
            u64::from(w[0].limit.min(w[1].limit))
        });
        if !(1..=most).contains(&cost) {
            return Err(self.err(
                &at(i, &["cost"]),
                format!("cost {cost} is out of range (must be 1..={most}: a request must fit the limits)"),
            ));
        }
        let max_in_flight = r.max_in_flight.unwrap_or(0);
        if r.max_in_flight.is_some() && !(1..=1_000_000).contains(&max_in_flight) {
            return Err(self.err(
                &at(i, &["max_in_flight"]),
                format!("{max_in_flight} is out of range (must be 1..=1000000)"),
            ));
        }
        Ok(RuleLimits {
            cost: cost as u32,
            rate: windows.map(|[s, b]| TierLimits::new(s, b)),
            windows,
            max_in_flight: max_in_flight as u32,
            bytes: r
                .bytes_per_window
                .as_ref()
                .map(|b| self.byte_limit(i, b))
                .transpose()?,
        })
    }

    fn byte_limit(&self, i: usize, b: &RawBytes) -> R<ByteLimit> {
        if b.bytes == 0 {
            return Err(self.err(&at(i, &["bytes_per_window", "bytes"]), "must be at least 1"));
        }
        let ms = b.window.0.as_millis();
        if ms == 0 || ms > u128::from(u32::MAX) {
            return Err(self.err(
                &at(i, &["bytes_per_window", "window"]),
                "window is out of range (must be 1ms..=49d)",
            ));
        }
        Ok(ByteLimit {
            bytes: b.bytes,
            window_ms: ms as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::testutil::{SERVERS, err_at, manifest_file, ok};
    use crate::rules::{Action, SubjectKind};

    #[test]
    fn rules_parse_in_order_with_every_field() {
        let c = ok(&format!(
            "virtual_host_domains = [\"S3.Example.com\"]\n{SERVERS}\
             [[rules]]\nname = \"ci\"\nmatch.header = {{ name = \"X-Team\", equals = \"CI\" }}\naction = \"allow\"\n\
             [[rules]]\nname = \"lists\"\nmatch.methods = [\"GET\"]\nmatch.ops = [\"list\"]\n\
             match.buckets = [\"logs\", \"tmp-*\"]\nmatch.tiers = [\"basic\"]\nmatch.addresses = [\"10.0.0.0/8\", \"::1\"]\n\
             subject = \"key+bucket\"\ncost = 5\nper_second = 10\nper_minute = 100\n\
             [[rules]]\nname = \"bw\"\nmax_in_flight = 2\nbytes_per_window = {{ bytes = 1024, window = \"10s\" }}\n\
             burst = {{ limit = 3, window = \"500ms\" }}\n"
        ));
        let r = &c.rules;
        assert_eq!(r.domains, ["s3.example.com"]);
        let names: Vec<&str> = r.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ci", "lists", "bw"]);
        assert_eq!(r.rules[0].action, Action::Allow);
        let h = r.rules[0].matcher.header.as_ref().unwrap();
        assert_eq!(
            (h.name.as_str(), h.value.as_str(), h.contains),
            ("x-team", "ci", false)
        );
        let lists = &r.rules[1];
        assert_eq!(lists.subject, SubjectKind::KeyBucket);
        let l = lists.limits().unwrap();
        assert_eq!(l.cost, 5);
        let w = l.windows.unwrap();
        assert_eq!(
            (w[0].limit, w[0].length_ms, w[1].limit, w[1].length_ms),
            (100, 60_000, 10, 1000)
        );
        assert_eq!(lists.matcher.addresses.len(), 2);
        assert_eq!(lists.matcher.buckets[1].text, "tmp-");
        let bw = r.rules[2].limits().unwrap();
        assert_eq!(bw.max_in_flight, 2);
        assert_eq!(
            bw.bytes.map(|b| (b.bytes, b.window_ms)),
            Some((1024, 10_000))
        );
        assert_eq!(
            bw.windows.map(|w| w[0].length_ms),
            Some(500),
            "one window is used for both"
        );
        assert_eq!(r.rules[2].subject, SubjectKind::Key, "the default subject");
    }

    #[test]
    fn bad_rules_name_their_field_and_line() {
        let base = format!("{SERVERS}[[rules]]\nname = \"a\"\n");
        let cases: &[(&str, usize, &str)] = &[
            (
                "match.ops = [\"list\", \"lots\"]\nper_second = 1\n",
                5,
                "rules[0].match.ops[1]",
            ),
            (
                "subject = \"user\"\nper_second = 1\n",
                5,
                "rules[0].subject",
            ),
            (
                "match.tiers = [\"gold\"]\nper_second = 1\n",
                5,
                "rules[0].match.tiers[0]",
            ),
            (
                "match.addresses = [\"10.0.0.300\"]\naction = \"deny\"\n",
                5,
                "rules[0].match.addresses[0]",
            ),
            (
                "match.buckets = [\"a*b\"]\naction = \"deny\"\n",
                5,
                "rules[0].match.buckets[0]",
            ),
            ("action = \"block\"\n", 5, "rules[0].action"),
            ("action = \"deny\"\nper_second = 3\n", 5, "rules[0].action"),
            ("per_second = 3\ncost = 4\n", 6, "rules[0].cost"),
            ("per_second = 0\n", 5, "rules[0].per_second"),
            ("max_in_flight = 0\n", 5, "rules[0].max_in_flight"),
            (
                "bytes_per_window = { bytes = 0, window = \"1s\" }\n",
                5,
                "rules[0].bytes_per_window.bytes",
            ),
            (
                "match.header = { name = \"ua\" }\naction = \"deny\"\n",
                5,
                "rules[0].match.header",
            ),
            ("\n", 3, "rules[0]"),
            (
                "action = \"deny\"\n[[rules]]\nname = \"a\"\naction = \"allow\"\n",
                7,
                "rules[1].name",
            ),
        ];
        for &(tail, line, field) in cases {
            err_at(&format!("{base}{tail}"), line, field);
        }
    }

    /// The commented `[[rules]]` examples of the shipped config load as written.
    #[test]
    fn shipped_rule_examples_load() {
        let text = std::fs::read_to_string(manifest_file("config/tollgate.toml")).unwrap();
        let start = text.find("# [[rules]]\n# name = \"ci-exempt\"").unwrap();
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.strip_prefix("# ").unwrap_or("")))
            .collect();
        let c = ok(&format!("{SERVERS}{block}"));
        let names: Vec<&str> = c.rules.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "ci-exempt",
                "no-deletes-on-archive",
                "lists",
                "curl-on-login",
                "media-bandwidth"
            ]
        );
    }
}
