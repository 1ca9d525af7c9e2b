//! A group's traffic: the weighted mix of S3 operation classes over buckets (`ops` × `buckets`,
//! or explicit `mix` entries), its addressing (path or virtual-host style), objects and PUT
//! sizes, and the scenario's list of bucket names that a [`MixEntry`]'s bucket indexes.
//! Validation into a [`Mix`] only; owns no I/O and knows nothing of requests' bytes.

use super::{RawGroup, ScenarioError, invalid};
use crate::plan::{Mix, MixEntry, Op};
use crate::request::Addressing;
use crate::units::parse_size;
use serde::Deserialize;
use std::collections::BTreeMap;

/// `buckets = ["a", "b"]` (equal shares) or `buckets = { a = 3, b = 1 }` (weights).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawBuckets {
    List(Vec<String>),
    Weighted(BTreeMap<String, u32>),
}

/// One `mix` entry: `{ op = "list", bucket = "logs", weight = 5 }`.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMixEntry {
    pub op: String,
    /// Default: the group's `bucket` (or the scenario's).
    pub bucket: Option<String>,
    /// Default 1.
    pub weight: Option<u32>,
}

/// What a group takes from the top level unless it says otherwise.
pub struct TrafficDefaults {
    pub bucket: String,
    pub buckets: Option<RawBuckets>,
    pub addressing: Addressing,
}

/// The distinct bucket names of a scenario, in order of first use.
#[derive(Debug, Default)]
pub struct BucketNames(pub Vec<String>);

impl BucketNames {
    /// The index of `name` (validated for `addressing`), added when new.
    fn intern(
        &mut self,
        field: &str,
        name: &str,
        addressing: Addressing,
    ) -> Result<u16, ScenarioError> {
        check_bucket(field, name, addressing)?;
        if let Some(i) = self.0.iter().position(|b| b == name) {
            return Ok(i as u16);
        }
        if self.0.len() >= u16::MAX as usize {
            return Err(invalid(field, "too many buckets"));
        }
        self.0.push(name.to_string());
        Ok((self.0.len() - 1) as u16)
    }
}

/// A bucket name a request line (and, virtual-host style, a Host) can carry as it is.
fn check_bucket(field: &str, name: &str, addressing: Addressing) -> Result<(), ScenarioError> {
    if name.is_empty() || name.len() > 63 {
        return Err(invalid(
            field,
            format!("bucket {name:?}: 1 to 63 characters"),
        ));
    }
    let dns = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    match addressing {
        Addressing::Path
            if !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')) =>
        {
            Err(invalid(
                field,
                format!("bucket {name:?}: letters, digits, '-', '.' and '_' only"),
            ))
        }
        Addressing::Virtual if !name.chars().all(dns) => Err(invalid(
            field,
            format!("bucket {name:?}: virtual-host addressing needs a DNS name (a-z 0-9 - .)"),
        )),
        _ => Ok(()),
    }
}

const KNOWN_OPS: &str =
    "get_object put_object list delete head multipart other, or GET PUT HEAD DELETE";

fn parse_op(field: &str, s: &str) -> Result<Op, ScenarioError> {
    Op::parse(s).ok_or_else(|| invalid(field, format!("unknown op {s:?} ({KNOWN_OPS})")))
}

/// Group `gi`'s mix (bucket names interned into `names`) and addressing.
pub fn group_mix(
    gi: usize,
    g: &RawGroup,
    d: &TrafficDefaults,
    names: &mut BucketNames,
) -> Result<(Mix, Addressing), ScenarioError> {
    let f = |s: &str| format!("group[{gi}].{s}");
    let addressing = g.addressing.unwrap_or(d.addressing);
    if g.bucket.is_some() && g.buckets.is_some() {
        return Err(invalid(
            f("buckets"),
            "give `bucket` or `buckets`, not both",
        ));
    }
    let entries = match &g.mix {
        Some(_) if g.ops.is_some() || g.buckets.is_some() => {
            return Err(invalid(
                f("mix"),
                "give `mix`, or `ops` and `buckets`, not both",
            ));
        }
        Some(mix) => mix_entries(gi, mix, g, d, addressing, names)?,
        None => product_entries(gi, g, d, addressing, names)?,
    };
    if entries.iter().map(|e| u64::from(e.weight)).sum::<u64>() == 0 {
        let field = if g.mix.is_some() { "mix" } else { "ops" };
        return Err(invalid(f(field), "weights sum to 0"));
    }
    let mut sizes = Vec::new();
    for s in g.put_sizes.iter().flatten() {
        sizes.push(parse_size(s).map_err(|source| ScenarioError::Unit {
            field: f("put_sizes"),
            source,
        })?);
    }
    if sizes.is_empty() {
        sizes.push(1024);
    }
    let objects = g.objects.unwrap_or(super::DEFAULT_OBJECTS);
    Ok((Mix::from_entries(entries, objects, sizes), addressing))
}

/// `mix = [{ op, bucket, weight }, …]`.
fn mix_entries(
    gi: usize,
    mix: &[RawMixEntry],
    g: &RawGroup,
    d: &TrafficDefaults,
    addressing: Addressing,
    names: &mut BucketNames,
) -> Result<Vec<MixEntry>, ScenarioError> {
    if mix.is_empty() {
        return Err(invalid(format!("group[{gi}].mix"), "empty list"));
    }
    let default_bucket = g.bucket.as_deref().unwrap_or(&d.bucket);
    let mut out = Vec::new();
    for (i, e) in mix.iter().enumerate() {
        let f = |s: &str| format!("group[{gi}].mix[{i}].{s}");
        let op = parse_op(&f("op"), &e.op)?;
        let name = e.bucket.as_deref().unwrap_or(default_bucket);
        let bucket = names.intern(&f("bucket"), name, addressing)?;
        let weight = e.weight.unwrap_or(1);
        out.push(MixEntry { op, bucket, weight });
    }
    Ok(out)
}

/// `ops` (default all `get_object`) × `buckets` (default the one `bucket`), weights multiplied.
fn product_entries(
    gi: usize,
    g: &RawGroup,
    d: &TrafficDefaults,
    addressing: Addressing,
    names: &mut BucketNames,
) -> Result<Vec<MixEntry>, ScenarioError> {
    let f = |s: &str| format!("group[{gi}].{s}");
    let mut ops: Vec<(Op, u32)> = Vec::new();
    match &g.ops {
        None => ops.push((Op::Get, 1)),
        Some(m) => {
            for (k, w) in m {
                let op = parse_op(&f("ops"), k)?;
                if ops.iter().any(|(o, _)| *o == op) {
                    return Err(invalid(f("ops"), format!("{} given twice", op.name())));
                }
                ops.push((op, *w));
            }
        }
    }
    let own = g.bucket.as_ref().map(|b| RawBuckets::List(vec![b.clone()]));
    let buckets: Vec<(String, u32)> =
        match own.as_ref().or(g.buckets.as_ref()).or(d.buckets.as_ref()) {
            None => vec![(d.bucket.clone(), 1)],
            Some(RawBuckets::List(v)) => v.iter().map(|b| (b.clone(), 1)).collect(),
            Some(RawBuckets::Weighted(m)) => m.iter().map(|(b, w)| (b.clone(), *w)).collect(),
        };
    if buckets.is_empty() {
        return Err(invalid(f("buckets"), "empty list"));
    }
    let mut out = Vec::new();
    for (name, bw) in &buckets {
        let bucket = names.intern(&f("buckets"), name, addressing)?;
        for &(op, ow) in &ops {
            let weight = ow
                .checked_mul(*bw)
                .ok_or_else(|| invalid(f("ops"), "op weight × bucket weight overflows"))?;
            out.push(MixEntry { op, bucket, weight });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::{Overrides, Scenario};
    use crate::plan::{MixEntry, Op};
    use crate::request::Addressing;
    use crate::scenario::Metric;

    fn load(extra_top: &str, group: &str) -> Result<Scenario, String> {
        let text = format!(
            "target = \"http://127.0.0.1:1\"\nduration = \"1s\"\n{extra_top}\n[[group]]\nkeys = [\"K\"]\nrate = \"10/s\"\n{group}\n"
        );
        Scenario::from_toml(&text, "t", &Overrides::default()).map_err(|e| e.to_string())
    }

    fn entries(sc: &Scenario) -> Vec<(Op, &str, u32)> {
        sc.groups[0]
            .mix
            .entries
            .iter()
            .map(|e| (e.op, sc.buckets[e.bucket as usize].as_str(), e.weight))
            .collect()
    }

    #[test]
    fn ops_by_class_times_weighted_buckets() {
        let sc = load(
            "",
            "ops = { list = 1, get_object = 3, GET = 0 }\nbuckets = { logs = 2, media = 1 }",
        );
        // GET and get_object are the same class.
        assert!(
            sc.unwrap_err()
                .contains("group[0].ops: get_object given twice")
        );
        let sc = load(
            "",
            "ops = { list = 1, get_object = 3 }\nbuckets = { logs = 2, media = 1 }",
        )
        .unwrap();
        assert_eq!(sc.buckets, ["logs", "media"]);
        assert_eq!(
            entries(&sc),
            [
                (Op::Get, "logs", 6),
                (Op::List, "logs", 2),
                (Op::Get, "media", 3),
                (Op::List, "media", 1)
            ]
        );
        assert_eq!(sc.groups[0].addressing, Addressing::Path);
        // Defaults: all get_object on the scenario's bucket; a plain list of buckets is even.
        let sc = load("bucket = \"b0\"", "").unwrap();
        assert_eq!(entries(&sc), [(Op::Get, "b0", 1)]);
        let sc = load(
            "buckets = [\"x\", \"y\"]\naddressing = \"virtual\"",
            "ops = { multipart = 1 }",
        )
        .unwrap();
        assert_eq!(
            entries(&sc),
            [(Op::Multipart, "x", 1), (Op::Multipart, "y", 1)]
        );
        assert_eq!(sc.groups[0].addressing, Addressing::Virtual);
    }

    #[test]
    fn explicit_mix_entries() {
        let sc = load(
            "bucket = \"main\"",
            "mix = [{ op = \"list\", bucket = \"logs\", weight = 5 }, { op = \"delete\" }, { op = \"other\", bucket = \"logs\", weight = 0 }]",
        )
        .unwrap();
        assert_eq!(sc.buckets, ["logs", "main"]);
        let e = &sc.groups[0].mix.entries;
        assert_eq!(
            e[..],
            [
                MixEntry {
                    op: Op::List,
                    bucket: 0,
                    weight: 5
                },
                MixEntry {
                    op: Op::Delete,
                    bucket: 1,
                    weight: 1
                }
            ],
            "weight 0 never picked"
        );
        assert_eq!(sc.groups[0].mix.buckets(), [0, 1]);
    }

    #[test]
    fn traffic_errors_name_their_field() {
        let cases = [
            (
                "",
                "ops = { LIST = 1 }",
                "group[0].ops: unknown op \"LIST\"",
            ),
            ("", "ops = { list = 0 }", "group[0].ops: weights sum to 0"),
            (
                "",
                "bucket = \"a\"\nbuckets = [\"b\"]",
                "group[0].buckets: give `bucket` or `buckets`",
            ),
            ("", "buckets = []", "group[0].buckets: empty list"),
            (
                "",
                "buckets = [\"a/b\"]",
                "group[0].buckets: bucket \"a/b\": letters",
            ),
            (
                "addressing = \"virtual\"",
                "buckets = [\"Logs\"]",
                "group[0].buckets: bucket \"Logs\": virtual-host",
            ),
            (
                "",
                "mix = [{ op = \"list\" }]\nops = { GET = 1 }",
                "group[0].mix: give `mix`, or `ops`",
            ),
            (
                "",
                "mix = [{ op = \"read\" }]",
                "group[0].mix[0].op: unknown op \"read\"",
            ),
            (
                "",
                "mix = [{ op = \"head\", bucket = \"\" }]",
                "group[0].mix[0].bucket: bucket \"\": 1 to 63",
            ),
            ("", "mix = []", "group[0].mix: empty list"),
            (
                "",
                "mix = [{ op = \"list\", wieght = 1 }]",
                "unknown field `wieght`",
            ),
        ];
        for (top, group, want) in cases {
            let e = load(top, group)
                .err()
                .unwrap_or_else(|| panic!("accepted: {group}"));
            assert!(e.contains(want), "{group}: {e}");
        }
    }

    #[test]
    fn asserts_select_op_classes_and_buckets() {
        let group = "ops = { list = 1, GET = 1 }\nbuckets = [\"logs\"]";
        let a = "[[assert]]\nmetric = \"denied\"\nscope = \"key:K\"\nop = \"list\"\nbucket = \"logs\"\nmin = 1";
        let sc = load("", &format!("{group}\n{a}")).unwrap();
        let a0 = &sc.asserts[0];
        assert_eq!(
            (a0.metric, a0.op, a0.bucket.as_deref()),
            (Metric::Denied, Some(Op::List), Some("logs"))
        );
        assert_eq!(a0.scope_label(), "key:K op:list bucket:logs");
        let bad = [
            (
                "metric = \"p99\"\nop = \"list\"",
                "assert[0].metric: p99 is not kept per op/bucket",
            ),
            (
                "metric = \"sent\"\nop = \"lists\"",
                "assert[0].op: unknown op \"lists\"",
            ),
            (
                "metric = \"sent\"\nbucket = \"media\"",
                "assert[0].bucket: no group sends to bucket \"media\" (buckets: logs)",
            ),
        ];
        for (body, want) in bad {
            let e = load("", &format!("{group}\n[[assert]]\n{body}")).unwrap_err();
            assert!(e.contains(want), "{body}: {e}");
        }
    }

    #[test]
    fn the_shipped_rules_scenario_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/scenarios/rules.toml");
        let sc = Scenario::load(path, &Overrides::default()).unwrap();
        assert_eq!(sc.buckets, ["logs", "media", "bench", "tmp-scratch"]);
        assert_eq!(
            sc.asserts
                .iter()
                .filter(|a| a.op.is_some() || a.bucket.is_some())
                .count(),
            6
        );
        let ops: Vec<Vec<Op>> = sc
            .groups
            .iter()
            .map(|g| g.mix.entries.iter().map(|e| e.op).collect())
            .collect();
        assert_eq!(ops[1], [Op::Get, Op::List]);
        assert_eq!(ops[2], [Op::Put, Op::Get]);
    }
}
