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
