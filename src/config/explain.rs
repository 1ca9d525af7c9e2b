//! The `[[rules]]` in words: what each matches and counts (`tollgate check`), and which
//! rules match one request and why (`tollgate explain`).
//!
//! Owns: [`describe_rule`] and [`explain`]. Pure: text from the config and a request given
//! on the command line; no counters are read (a rule that matches may still admit). Must
//! not touch: the evaluation itself (`crate::rules` decides; this only calls it).

use std::fmt::Write as _;
use std::net::IpAddr;

use std::time::Duration;

use super::file::format_duration;
use super::{Config, TierConfig, WindowConfig};
use crate::http::Method;
use crate::identity::identify;
use crate::rules::class::OpClass;
use crate::rules::matcher::{Cond, Facts, HeaderLookup, Match};
use crate::rules::{Action, Decided, Outcome, Rule, RuleLimits};

fn window_text(ms: u32) -> String {
    format_duration(Duration::from_millis(ms.into()))
}

fn window(w: WindowConfig) -> String {
    format!("{} per {}", w.limit, window_text(w.length_ms))
}

/// The values condition `c` of `m` accepts, as written.
fn accepts(m: &Match, c: Cond, tiers: &[TierConfig]) -> String {
    let join = |v: Vec<String>| v.join(" ");
    match c {
        Cond::Methods => join(
            Method::ALL
                .iter()
                .filter(|x| m.methods.is_some_and(|s| s.contains(**x)))
                .map(|x| x.as_str().to_string())
                .collect(),
        ),
        Cond::Ops => join(
            OpClass::ALL
                .iter()
                .filter(|x| m.ops.is_some_and(|s| s.contains(**x)))
                .map(|x| x.as_str().to_string())
                .collect(),
        ),
        Cond::Tiers => join(
            tiers
                .iter()
                .enumerate()
                .filter(|(i, _)| m.tiers.is_some_and(|t| *i < 32 && t >> i & 1 == 1))
                .map(|(_, t)| t.name.clone())
                .collect(),
        ),
        Cond::Buckets => join(
            m.buckets
                .iter()
                .map(|b| format!("{}{}", b.text, if b.prefix { "*" } else { "" }))
                .collect(),
        ),
        Cond::Paths => join(m.paths.clone()),
        Cond::Addresses => join(m.addresses.iter().map(ToString::to_string).collect()),
        Cond::Header => m.header.as_ref().map_or_else(String::new, |h| {
            let how = if h.contains { "contains" } else { "equals" };
            format!("{} {how} {:?}", h.name, h.value)
        }),
    }
}

fn limits_words(l: &RuleLimits) -> String {
    let mut parts = Vec::new();
    match l.windows {
        Some([s, b]) if s == b => parts.push(window(s)),
        Some([s, b]) => parts.push(format!("{} and {}", window(b), window(s))),
        None => {}
    }
    if l.cost != 1 {
        parts.push(format!("cost {}", l.cost));
    }
    if l.max_in_flight > 0 {
        parts.push(format!("at most {} in flight", l.max_in_flight));
    }
    if let Some(b) = l.bytes {
        parts.push(format!(
            "{} body bytes per {}",
            b.bytes,
            window_text(b.window_ms)
        ));
    }
    parts.join(", ")
}

/// One line: what the rule matches, then what it does.
pub fn describe_rule(r: &Rule, tiers: &[TierConfig]) -> String {
    let conds: Vec<String> = r
        .matcher
        .conditions()
        .map(|c| format!("{} {}", c.field(), accepts(&r.matcher, c, tiers)))
        .collect();
    let what = if conds.is_empty() {
        "every request".to_string()
    } else {
        conds.join("; ")
    };
    let does = match &r.action {
        Action::Allow => "allow (exempt from the rules after it and the tier)".to_string(),
        Action::Deny => "deny (403 AccessDenied)".to_string(),
        Action::Limit(l) => format!("per {}: {}", r.subject.as_str(), limits_words(l)),
    };
    format!("{}: {what} → {does}", r.name)
}

/// Headers given on the command line (`-H 'Name: value'`).
struct Given<'a>(&'a [(String, String)]);

impl HeaderLookup for Given<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes())
    }
}

/// What the request is, as the rules see it (one line).
fn request_words(cfg: &Config, f: &Facts<'_>, key: Option<&[u8]>) -> String {
    let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    format!(
        "request: method {}, operation {}, bucket {:?}, object {:?}, key {}, tier {}, address {}",
        f.method.map_or("(other)", Method::as_str),
        f.class.as_str(),
        s(f.bucket),
        s(f.key),
        key.map_or("(anonymous)".to_string(), |k| format!("{:?}", s(k))),
        cfg.limits.tiers[f.tier].name,
        f.client
    )
}

/// Which rules match the request `line` (`METHOD TARGET`) with `headers` from `client`,
/// condition by condition, and what the rules decide.
pub fn explain(
    cfg: &Config,
    line: &str,
    headers: &[(String, String)],
    client: IpAddr,
) -> Result<String, String> {
    let (method, target) = line
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("{line:?}: expected 'METHOD /bucket/key?query'"))?;
    let target = target.trim();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut scratch = [0u8; 256];
    let hs = headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes()));
    let id = identify(target.as_bytes(), hs, cfg.limits.max_key_len, &mut scratch);
    // The tier the request counts under (as the limiter chooses it).
    let tier = id
        .key
        .map_or(cfg.limits.anonymous_tier, |k| cfg.limits.tier_of_key(k).0);
    let set = &cfg.rules;
    let given = Given(headers);
    let host = given.header("host");
    let m = Method::from_bytes(method.as_bytes());
    let f = crate::rules::facts(
        set,
        m,
        path.as_bytes(),
        query.as_bytes(),
        host,
        tier,
        client,
    );
    let mut out = request_words(cfg, &f, id.key);
    out.push('\n');
    for (i, r) in set.rules.iter().enumerate() {
        let _ = writeln!(out, "{}. {}", i + 1, rule_verdict(cfg, r, &f, &given));
    }
    let mut o = Outcome::new();
    set.evaluate(&f, &given, &mut o);
    out.push_str(&outcome_words(cfg, &o, tier, m));
    Ok(out)
}

/// "name: matches (…)" or "name: no — FIELD wants …", condition by condition.
fn rule_verdict(cfg: &Config, r: &Rule, f: &Facts<'_>, h: &Given<'_>) -> String {
    let mut why = Vec::new();
    for c in r.matcher.conditions() {
        let ok = r.matcher.holds(c, f, h);
        let mark = if ok { "yes" } else { "NO" };
        why.push(format!(
            "{} {} ({mark})",
            c.field(),
            accepts(&r.matcher, c, &cfg.limits.tiers)
        ));
        if !ok {
            return format!("{}: does not match — {}", r.name, why.join("; "));
        }
    }
    if why.is_empty() {
        why.push("no conditions".into());
    }
    format!(
        "{}: matches — {} → {}",
        r.name,
        why.join("; "),
        r.action.word()
    )
}

fn outcome_words(cfg: &Config, o: &Outcome, tier: usize, m: Option<Method>) -> String {
    let name = |i: usize| cfg.rules.rules[i].name.as_str();
    let charged: Vec<&str> = o.charges.iter().map(|&i| name(usize::from(i))).collect();
    let t = &cfg.limits.tiers[tier];
    let tier_limited = m.is_some_and(|m| t.methods.contains(m));
    let mut counts = charged.join(", ");
    match o.decided {
        Decided::Deny(i) => {
            return format!(
                "decision: denied by rule {} (403), nothing counted\n",
                name(i)
            );
        }
        Decided::Allow(i) => {
            return format!(
                "decision: exempted by rule {}{}\n",
                name(i),
                if charged.is_empty() {
                    ", nothing counted".to_string()
                } else {
                    format!(" after counting {}", charged.join(", "))
                }
            );
        }
        Decided::Charge => {}
    }
    if tier_limited {
        if !counts.is_empty() {
            counts.push_str(", ");
        }
        let _ = write!(counts, "tier {}", t.name);
    }
    if counts.is_empty() {
        return "decision: nothing limits it (admitted, unlimited)\n".into();
    }
    format!("decision: admitted if every one admits it, counted by each: {counts}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let text = r#"
[tiers.basic]
per_second = 10
per_minute = 100
[limits]
default_tier = "basic"
anonymous_tier = "basic"
[[upstream.servers]]
addr = "127.0.0.1:9000"
[[rules]]
name = "ci"
match.header = { name = "X-Team", equals = "ci" }
action = "allow"
[[rules]]
name = "lists"
match.ops = ["list"]
match.buckets = ["logs", "tmp-*"]
subject = "key+bucket"
cost = 5
per_second = 10
[[rules]]
name = "no-deletes"
match.methods = ["DELETE"]
action = "deny"
"#;
        crate::config::load_str(text, std::path::Path::new("/nonexistent/t.toml")).unwrap()
    }

    #[test]
    fn rules_are_described_in_order() {
        let c = cfg();
        let lines: Vec<String> = c
            .rules
            .rules
            .iter()
            .map(|r| describe_rule(r, &c.limits.tiers))
            .collect();
        assert_eq!(
            lines[0],
            "ci: header x-team equals \"ci\" → allow (exempt from the rules after it and the tier)"
        );
        assert_eq!(
            lines[1],
            "lists: ops list; buckets logs tmp-* → per key+bucket: 10 per 1s, cost 5"
        );
        assert_eq!(
            lines[2],
            "no-deletes: methods DELETE → deny (403 AccessDenied)"
        );
    }

    #[test]
    fn explain_says_which_rules_match_and_why() {
        let c = cfg();
        let auth = (
            "Authorization".to_string(),
            "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00".to_string(),
        );
        let ip = "10.0.0.1".parse().unwrap();
        let out = explain(&c, "GET /logs?list-type=2", std::slice::from_ref(&auth), ip).unwrap();
        assert!(out.contains("operation list, bucket \"logs\""), "{out}");
        assert!(out.contains("key \"AKIAEXAMPLE\""), "{out}");
        assert!(
            out.contains("1. ci: does not match — header x-team equals \"ci\" (NO)"),
            "{out}"
        );
        assert!(
            out.contains("2. lists: matches — ops list (yes); buckets logs tmp-* (yes) → limit"),
            "{out}"
        );
        assert!(
            out.contains("3. no-deletes: does not match — methods DELETE (NO)"),
            "{out}"
        );
        assert!(out.contains("counted by each: lists, tier basic"), "{out}");
        let out = explain(&c, "GET /photos/a.jpg", std::slice::from_ref(&auth), ip).unwrap();
        assert!(
            out.contains("2. lists: does not match — ops list (NO)"),
            "{out}"
        );
        let out = explain(&c, "DELETE /logs/a", std::slice::from_ref(&auth), ip).unwrap();
        assert!(
            out.contains("denied by rule no-deletes (403), nothing counted"),
            "{out}"
        );
        let team = ("X-Team".to_string(), "CI".to_string());
        let out = explain(&c, "DELETE /logs/a", &[auth, team], ip).unwrap();
        assert!(
            out.contains("exempted by rule ci, nothing counted"),
            "{out}"
        );
        assert!(explain(&c, "GET", &[], ip).is_err());
    }
}
