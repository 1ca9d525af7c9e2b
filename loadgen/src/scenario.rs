//! Scenario files: the raw TOML mirror (unknown fields are errors), defaults, validation into a
//! [`Scenario`] (section by section: top-level durations, tiers, groups with their keys, stages
//! and traffic — op classes over buckets, in `traffic` — asserts), command-line overrides and
//! `--scale`, and the assert vocabulary ([`Metric`], [`Scope`], the `op`/`bucket` filters;
//! `asserts` evaluates them). `Mode`, `AuthStyle` and `Window` belong to
//! `plan`, `request` and `expect` and are re-exported here. Owns no I/O beyond reading the file.

pub use crate::expect::Window;
pub use crate::plan::Mode;
mod traffic;

use crate::plan::{Arrival, Mix, Op, Profile, Stage};
pub use crate::request::{Addressing, AuthStyle};
use crate::units::{UnitError, parse_duration, parse_rate};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
pub use traffic::{RawBuckets, RawMixEntry};

pub const DEFAULT_DURATION: &str = "30s";
pub const DEFAULT_TIMEOUT: &str = "5s";
pub const DEFAULT_CONNECTIONS_PER_CORE: u32 = 16;
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_BUCKET: &str = "bench";
pub const DEFAULT_OBJECTS: u32 = 100;
pub const DEFAULT_OBJECT_PREFIX: &str = "obj-";
pub const DEFAULT_MAX_SEND_LAG_P99: &str = "1ms";
pub const DEFAULT_PRESIGN_EXPIRES: u32 = 3600;

/// Errors from loading or validating a scenario.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("{field}: {source}")]
    Unit { field: String, source: UnitError },
    #[error("{field}: {msg}")]
    Invalid { field: String, msg: String },
}

fn invalid(field: impl Into<String>, msg: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        field: field.into(),
        msg: msg.into(),
    }
}

// ---------------------------------------------------------------- raw file mirror

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawScenario {
    pub name: Option<String>,
    pub description: Option<String>,
    pub target: Option<String>,
    /// Several targets (e.g. tollgate instances behind one balancer): each key's requests
    /// are spread over them (`spread`), signed for the first one's host.
    pub targets: Option<Vec<String>>,
    pub spread: Option<crate::plan::Spread>,
    pub duration: Option<String>,
    pub warmup: Option<String>,
    pub timeout: Option<String>,
    pub mode: Option<Mode>,
    pub threads: Option<u32>,
    pub pin_cores: Option<Vec<usize>>,
    pub connections_per_core: Option<u32>,
    pub arrival: Option<Arrival>,
    pub seed: Option<u64>,
    pub region: Option<String>,
    pub bucket: Option<String>,
    /// Default bucket list of the groups (see [`RawGroup::buckets`]).
    pub buckets: Option<RawBuckets>,
    /// Default addressing of the groups: "path" (`/bucket/key`) or "virtual" (`bucket.host`).
    pub addressing: Option<Addressing>,
    pub insecure: Option<bool>,
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub anonymous_tier: Option<String>,
    pub max_send_lag_p99: Option<String>,
    pub presign_expires: Option<u32>,
    #[serde(default)]
    pub tiers: BTreeMap<String, RawTier>,
    #[serde(default, rename = "group")]
    pub groups: Vec<RawGroup>,
    #[serde(default, rename = "assert")]
    pub asserts: Vec<RawAssert>,
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub per_minute: Option<u32>,
    pub per_second: Option<u32>,
    pub sustained: Option<RawWindow>,
    pub burst: Option<RawWindow>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub limit: u32,
    pub window: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum RawKey {
    Id(String),
    WithSecret { id: String, secret: String },
}

#[derive(Debug, Deserialize, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    pub name: Option<String>,
    pub tier: Option<String>,
    pub keys: Option<Vec<RawKey>>,
    pub key_prefix: Option<String>,
    pub key_count: Option<u32>,
    pub secret: Option<String>,
    pub auth: Option<AuthStyle>,
    pub rate: Option<String>,
    pub stages: Option<Vec<RawStage>>,
    /// Repeat the whole stage list this many times (default 1).
    pub repeat: Option<u32>,
    pub arrival: Option<Arrival>,
    /// Weights per op class (`list = 5`) or method (`GET = 70`, an object op).
    pub ops: Option<BTreeMap<String, u32>>,
    pub objects: Option<u32>,
    pub object_prefix: Option<String>,
    pub put_sizes: Option<Vec<String>>,
    pub bucket: Option<String>,
    /// Buckets the `ops` mix is spread over (a list: equal shares; a table: weights).
    pub buckets: Option<RawBuckets>,
    /// Explicit (op, bucket, weight) entries instead of `ops` × `buckets`.
    pub mix: Option<Vec<RawMixEntry>>,
    pub addressing: Option<Addressing>,
    pub region: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    pub ramp: Option<String>,
    pub to: Option<String>,
    pub hold: Option<String>,
    pub rate: Option<String>,
    /// Pulse train: `pulses` times `on` at `rate`, then `off` at 0.
    pub pulses: Option<u32>,
    pub on: Option<String>,
    pub off: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAssert {
    pub metric: String,
    pub scope: Option<String>,
    /// Count only this op class's requests of the scope's rows.
    pub op: Option<String>,
    /// Count only the requests to this bucket.
    pub bucket: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

// ---------------------------------------------------------------- validated scenario

/// A tier's limits as the scenario declares them (must match the proxy's config).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    pub name: String,
    pub windows: Vec<Window>,
    pub methods: Vec<Op>,
}

impl Tier {
    /// The seed's four tiers.
    pub fn defaults() -> Vec<Tier> {
        [
            ("premium", 1000, 50),
            ("standard", 500, 25),
            ("basic", 100, 10),
            ("unknown", 50, 5),
        ]
        .into_iter()
        .map(|(n, m, s)| Tier {
            name: n.into(),
            windows: vec![
                Window {
                    limit: m,
                    window_ns: 60_000_000_000,
                },
                Window {
                    limit: s,
                    window_ns: 1_000_000_000,
                },
            ],
            methods: vec![Op::Get, Op::Put],
        })
        .collect()
    }
}

/// One API key the generator sends as.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeySpec {
    pub id: String,
    #[serde(skip)]
    pub secret: String,
    pub group: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub name: String,
    pub tier: String,
    pub auth: AuthStyle,
    pub profile: Profile,
    pub initial_rate: f64,
    pub stages: Vec<Stage>,
    pub arrival: Arrival,
    /// Op classes and buckets (indices into [`Scenario::buckets`]).
    pub mix: Mix,
    pub addressing: Addressing,
    pub object_prefix: String,
    pub region: String,
}

/// One `[[assert]]`: `metric` over the rows `scope` selects must lie within `min..=max`
/// (a boolean metric with neither bound must be true).
#[derive(Debug, Clone, PartialEq)]
pub struct Assert {
    pub metric: Metric,
    pub scope: Scope,
    /// Only this op class / bucket of each row (count metrics only).
    pub op: Option<Op>,
    pub bucket: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl Assert {
    /// The scope as reports show it: `key:K`, `key:K op:list bucket:logs`.
    pub fn scope_label(&self) -> String {
        let mut s = self.scope.to_string();
        if let Some(op) = self.op {
            s.push_str(" op:");
            s.push_str(op.name());
        }
        if let Some(b) = &self.bucket {
            s.push_str(" bucket:");
            s.push_str(b);
        }
        s
    }
}

/// Defines `Metric` with its `ALL` list and names from one table.
macro_rules! metrics {
    ($($variant:ident => $name:literal,)+) => {
        /// What an assert measures. Latencies are in ms; ratios in 0..1; booleans are 1 (true)
        /// or 0 (false).
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Metric {
            $($variant,)+
        }

        impl Metric {
            /// Every metric, in the order error messages list them.
            pub const ALL: &[Metric] = &[$(Metric::$variant,)+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Metric::$variant => $name,)+
                }
            }
        }
    };
}

metrics! {
    Sent => "sent",
    Admitted => "admitted",
    Denied => "denied",
    Errors => "errors",
    Timeouts => "timeouts",
    Transport => "transport",
    Dropped => "dropped",
    Late => "late",
    Rps => "rps",
    P50 => "p50",
    P90 => "p90",
    P99 => "p99",
    P999 => "p999",
    Max => "max",
    ServiceP50 => "service_p50",
    ServiceP99 => "service_p99",
    ServiceMax => "service_max",
    ErrorRatio => "error_ratio",
    DeniedRatio => "denied_ratio",
    AdmittedRatio => "admitted_ratio",
    Passed => "passed",
    PassedVsExpected => "passed_vs_expected",
    DeniedVsExpected => "denied_vs_expected",
    RetryAfterSeen => "retry_after_seen",
    Valid => "valid",
    Accuracy => "accuracy",
    Identity => "identity",
}

impl Metric {
    /// Whether the metric is kept per op class and bucket (the counts and their rates).
    pub fn per_op(self) -> bool {
        use Metric::*;
        matches!(
            self,
            Sent | Admitted
                | Denied
                | Errors
                | Passed
                | Rps
                | ErrorRatio
                | DeniedRatio
                | AdmittedRatio
        )
    }

    /// 1 (true) or 0 (false); with neither `min` nor `max` it must be true.
    pub fn is_boolean(self) -> bool {
        matches!(self, Metric::Valid | Metric::Accuracy | Metric::Identity)
    }
}

impl std::str::FromStr for Metric {
    type Err = String;
    fn from_str(s: &str) -> Result<Metric, String> {
        Metric::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
                format!("unknown metric {s:?}; known: {}", known.join(", "))
            })
    }
}

/// Which rows of the report an assert looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Overall,
    EachKey,
    EachTier,
    /// `tier:NAME`.
    Tier(String),
    /// `key:NAME`.
    Key(String),
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Scope, String> {
        Ok(match s {
            "overall" => Scope::Overall,
            "each_key" => Scope::EachKey,
            "each_tier" => Scope::EachTier,
            s => {
                if let Some(t) = s.strip_prefix("tier:") {
                    Scope::Tier(t.into())
                } else if let Some(k) = s.strip_prefix("key:") {
                    Scope::Key(k.into())
                } else {
                    return Err(format!(
                        "unknown scope {s:?} (overall, each_key, each_tier, tier:NAME, key:NAME)"
                    ));
                }
            }
        })
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Overall => f.write_str("overall"),
            Scope::EachKey => f.write_str("each_key"),
            Scope::EachTier => f.write_str("each_tier"),
            Scope::Tier(t) => write!(f, "tier:{t}"),
            Scope::Key(k) => write!(f, "key:{k}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The first target (its host signs every request).
    pub target: String,
    /// Every target, the first being `target`; one unless the scenario lists `targets`.
    pub targets: Vec<String>,
    pub spread: crate::plan::Spread,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub mode: Mode,
    pub threads: u32,
    pub pin_cores: Vec<usize>,
    pub connections_per_core: u32,
    pub seed: u64,
    pub insecure: bool,
    pub ca_file: Option<String>,
    pub server_name: Option<String>,
    pub anonymous_tier: String,
    pub max_send_lag_p99: Duration,
    pub presign_expires: u32,
    pub tiers: Vec<Tier>,
    pub groups: Vec<Group>,
    pub keys: Vec<KeySpec>,
    /// Every bucket a group sends to, in order of first use (a mix entry's bucket indexes it).
    pub buckets: Vec<String>,
    pub asserts: Vec<Assert>,
}

/// Command-line overrides applied before validation.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub target: Option<String>,
    /// Several targets (`--target` repeated); replaces `target` and `targets`.
    pub targets: Vec<String>,
    pub duration: Option<Duration>,
    pub scale: Option<f64>,
    pub threads: Option<u32>,
    pub connections_per_core: Option<u32>,
}

fn dur(field: &str, s: &str) -> Result<Duration, ScenarioError> {
    parse_duration(s).map_err(|source| ScenarioError::Unit {
        field: field.into(),
        source,
    })
}

fn rate(field: &str, s: &str) -> Result<f64, ScenarioError> {
    parse_rate(s).map_err(|source| ScenarioError::Unit {
        field: field.into(),
        source,
    })
}

/// `--target` (one), else `targets` or `target` (not both).
fn targets_of(raw: &RawScenario, ov: &Overrides) -> Result<Vec<String>, ScenarioError> {
    if !ov.targets.is_empty() {
        return Ok(ov.targets.clone());
    }
    if let Some(t) = &ov.target {
        return Ok(vec![t.clone()]);
    }
    match (&raw.target, &raw.targets) {
        (Some(_), Some(_)) => Err(invalid("targets", "give `target` or `targets`, not both")),
        (Some(t), None) => Ok(vec![t.clone()]),
        (None, Some(v)) if !v.is_empty() => Ok(v.clone()),
        (None, Some(_)) => Err(invalid("targets", "empty list")),
        (None, None) => Err(invalid(
            "target",
            "no target (set `target` or pass --target)",
        )),
    }
}

fn scale_d(d: Duration, f: f64) -> Duration {
    Duration::from_secs_f64(d.as_secs_f64() * f)
}

impl Scenario {
    pub fn load(path: &str, ov: &Overrides) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.into(),
            source,
        })?;
        Self::from_toml(&text, path, ov)
    }

    pub fn from_toml(text: &str, path: &str, ov: &Overrides) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.into(),
            source: Box::new(e),
        })?;
        Self::from_raw(raw, ov)
    }

    /// Validates a raw scenario section by section (top-level durations, tiers, groups,
    /// asserts), reporting the first error in that order.
    pub fn from_raw(raw: RawScenario, ov: &Overrides) -> Result<Scenario, ScenarioError> {
        let scale = ov.scale.unwrap_or(1.0);
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(invalid("--scale", "must be a positive number"));
        }
        let targets = targets_of(&raw, ov)?;
        let target = targets[0].clone();
        let (duration, warmup, timeout) = durations(&raw, ov, scale)?;
        let tiers = if raw.tiers.is_empty() {
            Tier::defaults()
        } else {
            let mut v = Vec::new();
            for (name, t) in &raw.tiers {
                v.push(tier_from_raw(name, t)?);
            }
            v
        };
        let defaults = GroupDefaults {
            arrival: raw.arrival.unwrap_or_default(),
            region: raw.region.clone().unwrap_or(DEFAULT_REGION.into()),
            traffic: traffic::TrafficDefaults {
                bucket: raw.bucket.clone().unwrap_or(DEFAULT_BUCKET.into()),
                buckets: raw.buckets.clone(),
                addressing: raw.addressing.unwrap_or_default(),
            },
            closed: raw.mode == Some(Mode::Closed),
            scale,
            total_secs: (warmup + duration).as_secs_f64(),
        };
        let (groups, keys, buckets) = groups_from_raw(&raw.groups, &tiers, &defaults)?;
        let asserts = asserts_from_raw(&raw.asserts, &buckets)?;
        let anonymous_tier = raw.anonymous_tier.clone().unwrap_or("unknown".into());
        let threads = ov.threads.or(raw.threads).unwrap_or(1).max(1);
        Ok(Scenario {
            name: raw.name.clone().unwrap_or("scenario".into()),
            description: raw.description.clone().unwrap_or_default(),
            target,
            targets,
            spread: raw.spread.unwrap_or_default(),
            duration,
            warmup,
            timeout,
            mode: raw.mode.unwrap_or_default(),
            threads,
            pin_cores: raw.pin_cores.clone().unwrap_or_default(),
            connections_per_core: ov
                .connections_per_core
                .or(raw.connections_per_core)
                .unwrap_or(DEFAULT_CONNECTIONS_PER_CORE)
                .max(1),
            seed: raw.seed.unwrap_or(1),
            insecure: raw.insecure.unwrap_or(false),
            ca_file: raw.ca_file.clone().filter(|s| !s.is_empty()),
            server_name: raw.server_name.clone(),
            anonymous_tier,
            max_send_lag_p99: dur(
                "max_send_lag_p99",
                raw.max_send_lag_p99
                    .as_deref()
                    .unwrap_or(DEFAULT_MAX_SEND_LAG_P99),
            )?,
            presign_expires: raw.presign_expires.unwrap_or(DEFAULT_PRESIGN_EXPIRES),
            tiers,
            groups,
            keys,
            buckets,
            asserts,
        })
    }

    /// Key indices grouped by the identity the proxy counts them under (anonymous styles share
    /// one), identities sorted.
    pub fn keys_by_identity(&self) -> BTreeMap<String, Vec<usize>> {
        let mut by_identity: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, k) in self.keys.iter().enumerate() {
            by_identity
                .entry(self.limiter_identity(k))
                .or_default()
                .push(i);
        }
        by_identity
    }

    pub fn tier(&self, name: &str) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.name == name)
    }

    /// Tier that limits a key's requests as the proxy sees them (anonymous styles → anonymous tier).
    pub fn limiter_tier(&self, key: &KeySpec) -> Option<&Tier> {
        let g = &self.groups[key.group];
        if g.auth.identifies_key() {
            self.tier(&g.tier)
        } else {
            self.tier(&self.anonymous_tier)
        }
    }

    /// The identity the proxy counts a key's requests under.
    pub fn limiter_identity(&self, key: &KeySpec) -> String {
        if self.groups[key.group].auth.identifies_key() {
            key.id.clone()
        } else {
            "(anonymous)".into()
        }
    }

    pub fn total_secs(&self) -> f64 {
        (self.warmup + self.duration).as_secs_f64()
    }

    /// A `[keys]` table for tollgate's keys file covering every key of this scenario.
    pub fn keys_file(&self) -> String {
        let mut s = String::from("[keys]\n");
        for k in &self.keys {
            let g = &self.groups[k.group];
            if g.auth.identifies_key() {
                s.push_str(&format!("\"{}\" = \"{}\"\n", k.id, g.tier));
            }
        }
        s
    }

    /// `NAME ACCESS_KEY_ID SECRET` per key of the groups that sign requests (a secret is set),
    /// NAME = group name + index, made of letters, digits and `_` only.
    pub fn credentials_file(&self) -> String {
        let mut s = String::new();
        let mut idx = vec![0usize; self.groups.len()];
        for k in &self.keys {
            let g = &self.groups[k.group];
            if k.secret.is_empty() || !g.auth.identifies_key() {
                continue;
            }
            let mut name: String = g
                .name
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
                name.insert(0, 'g');
            }
            s.push_str(&format!("{name}_{} {} {}\n", idx[k.group], k.id, k.secret));
            idx[k.group] += 1;
        }
        s
    }
}

/// `duration` (scaled unless `--duration` is given), `warmup` (scaled) and `timeout`.
fn durations(
    raw: &RawScenario,
    ov: &Overrides,
    scale: f64,
) -> Result<(Duration, Duration, Duration), ScenarioError> {
    let duration = dur(
        "duration",
        raw.duration.as_deref().unwrap_or(DEFAULT_DURATION),
    )?;
    let duration = ov.duration.unwrap_or(scale_d(duration, scale));
    if duration.is_zero() {
        return Err(invalid("duration", "must be > 0"));
    }
    let warmup = scale_d(dur("warmup", raw.warmup.as_deref().unwrap_or("0s"))?, scale);
    let timeout = dur("timeout", raw.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT))?;
    if timeout.is_zero() {
        return Err(invalid("timeout", "must be > 0"));
    }
    Ok((duration, warmup, timeout))
}

/// What a group takes from the top level unless it says otherwise.
struct GroupDefaults {
    arrival: Arrival,
    region: String,
    traffic: traffic::TrafficDefaults,
    /// Closed loop: a group needs no rate.
    closed: bool,
    scale: f64,
    /// Warm-up + measured seconds (the length of every profile).
    total_secs: f64,
}

/// The validated groups, their keys and the bucket names their mixes index.
type GroupsKeysBuckets = (Vec<Group>, Vec<KeySpec>, Vec<String>);

fn groups_from_raw(
    raw: &[RawGroup],
    tiers: &[Tier],
    d: &GroupDefaults,
) -> Result<GroupsKeysBuckets, ScenarioError> {
    if raw.is_empty() {
        return Err(invalid("group", "at least one [[group]] is required"));
    }
    let mut groups = Vec::new();
    let mut keys = Vec::new();
    let mut buckets = traffic::BucketNames::default();
    for (gi, g) in raw.iter().enumerate() {
        groups.push(group_from_raw(gi, g, tiers, d, &mut keys, &mut buckets)?);
    }
    if groups
        .iter()
        .map(|g| g.name.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len()
        != groups.len()
    {
        return Err(invalid("group.name", "group names must be unique"));
    }
    Ok((groups, keys, buckets.0))
}

/// Group `gi`; its keys are appended to `keys` (which holds the earlier groups' keys), its
/// buckets interned into `buckets`.
fn group_from_raw(
    gi: usize,
    g: &RawGroup,
    tiers: &[Tier],
    d: &GroupDefaults,
    keys: &mut Vec<KeySpec>,
    buckets: &mut traffic::BucketNames,
) -> Result<Group, ScenarioError> {
    let f = |s: &str| format!("group[{gi}].{s}");
    let name = g.name.clone().unwrap_or(format!("group{gi}"));
    let tier = g.tier.clone().unwrap_or("unknown".into());
    if !tiers.iter().any(|t| t.name == tier) {
        return Err(invalid(f("tier"), format!("unknown tier {tier:?}")));
    }
    let auth = g.auth.unwrap_or(AuthStyle::XApiKey);
    group_keys(gi, g, auth, keys)?;
    let initial_rate = match &g.rate {
        Some(r) => rate(&f("rate"), r)?,
        None if g.stages.is_some() => 0.0,
        None if d.closed => 0.0,
        None => return Err(invalid(f("rate"), "give `rate` or `stages`")),
    };
    let mut stages = Vec::new();
    for (si, s) in g.stages.iter().flatten().enumerate() {
        stage_from_raw(gi, si, s, d.scale, &mut stages)?;
    }
    let repeat = g.repeat.unwrap_or(1);
    if repeat == 0 {
        return Err(invalid(f("repeat"), "must be ≥ 1"));
    }
    let one = stages.clone();
    for _ in 1..repeat {
        stages.extend(one.iter().cloned());
    }
    let profile = Profile::staged(initial_rate, &stages, d.total_secs);
    let (mix, addressing) = traffic::group_mix(gi, g, &d.traffic, buckets)?;
    Ok(Group {
        name,
        tier,
        auth,
        profile,
        initial_rate,
        stages,
        arrival: g.arrival.unwrap_or(d.arrival),
        mix,
        addressing,
        object_prefix: g
            .object_prefix
            .clone()
            .unwrap_or(DEFAULT_OBJECT_PREFIX.into()),
        region: g.region.clone().unwrap_or(d.region.clone()),
    })
}

/// Group `gi`'s keys (listed, then `key_prefix` + `key_count`), appended to `keys`.
fn group_keys(
    gi: usize,
    g: &RawGroup,
    auth: AuthStyle,
    keys: &mut Vec<KeySpec>,
) -> Result<(), ScenarioError> {
    let f = |s: &str| format!("group[{gi}].{s}");
    let mut gkeys: Vec<(String, Option<String>)> = Vec::new();
    if let Some(list) = &g.keys {
        for k in list {
            match k {
                RawKey::Id(id) => gkeys.push((id.clone(), None)),
                RawKey::WithSecret { id, secret } => gkeys.push((id.clone(), Some(secret.clone()))),
            }
        }
    }
    if let Some(prefix) = &g.key_prefix {
        let n = g.key_count.unwrap_or(1);
        for i in 0..n {
            gkeys.push((format!("{prefix}{i:04}"), None));
        }
    } else if g.key_count.is_some() && g.keys.is_none() {
        return Err(invalid(f("key_count"), "needs key_prefix"));
    }
    if gkeys.is_empty() {
        return Err(invalid(
            f("keys"),
            "no keys (give `keys` or `key_prefix` + `key_count`)",
        ));
    }
    for (id, secret) in gkeys {
        let secret = secret.or(g.secret.clone()).unwrap_or_default();
        if auth.needs_secret() && secret.is_empty() {
            return Err(invalid(
                f("secret"),
                format!("auth {auth:?} needs a secret for key {id}"),
            ));
        }
        if keys.iter().any(|k: &KeySpec| k.id == id) && auth.identifies_key() {
            return Err(invalid(f("keys"), format!("key {id} appears twice")));
        }
        keys.push(KeySpec {
            id,
            secret,
            group: gi,
        });
    }
    Ok(())
}

/// Stage `si` of group `gi` (a ramp, a hold, or a pulse train of holds), appended to `stages`.
fn stage_from_raw(
    gi: usize,
    si: usize,
    s: &RawStage,
    scale: f64,
    stages: &mut Vec<Stage>,
) -> Result<(), ScenarioError> {
    let sf = |x: &str| format!("group[{gi}].stages[{si}].{x}");
    if let Some(n) = s.pulses {
        if s.ramp.is_some() || s.hold.is_some() || s.to.is_some() {
            return Err(invalid(
                sf("pulses"),
                "a pulse train takes `on`, `off` and `rate` only",
            ));
        }
        let on = dur(
            &sf("on"),
            s.on.as_deref()
                .ok_or_else(|| invalid(sf("on"), "pulses need `on`"))?,
        )?;
        let off = dur(&sf("off"), s.off.as_deref().unwrap_or("0s"))?;
        let r = rate(
            &sf("rate"),
            s.rate
                .as_deref()
                .ok_or_else(|| invalid(sf("rate"), "pulses need `rate`"))?,
        )?;
        for _ in 0..n {
            stages.push(Stage::Hold {
                secs: on.as_secs_f64() * scale,
                rate: Some(r),
            });
            if !off.is_zero() {
                stages.push(Stage::Hold {
                    secs: off.as_secs_f64() * scale,
                    rate: Some(0.0),
                });
            }
        }
        return Ok(());
    }
    match (&s.ramp, &s.hold) {
        (Some(r), None) => {
            let to =
                s.to.as_deref()
                    .ok_or_else(|| invalid(sf("to"), "a ramp needs `to`"))?;
            if s.rate.is_some() {
                return Err(invalid(sf("rate"), "a ramp takes `to`, not `rate`"));
            }
            stages.push(Stage::Ramp {
                secs: dur(&sf("ramp"), r)?.as_secs_f64() * scale,
                to: rate(&sf("to"), to)?,
            });
        }
        (None, Some(h)) => {
            if s.to.is_some() {
                return Err(invalid(sf("to"), "a hold takes `rate`, not `to`"));
            }
            stages.push(Stage::Hold {
                secs: dur(&sf("hold"), h)?.as_secs_f64() * scale,
                rate: s
                    .rate
                    .as_deref()
                    .map(|r| rate(&sf("rate"), r))
                    .transpose()?,
            });
        }
        _ => {
            return Err(invalid(
                sf("ramp"),
                "each stage is a `ramp`, a `hold` or `pulses`",
            ));
        }
    }
    Ok(())
}

fn asserts_from_raw(raw: &[RawAssert], buckets: &[String]) -> Result<Vec<Assert>, ScenarioError> {
    let mut asserts = Vec::new();
    for (i, a) in raw.iter().enumerate() {
        let metric = a
            .metric
            .parse()
            .map_err(|m| invalid(format!("assert[{i}].metric"), m))?;
        let scope = a
            .scope
            .as_deref()
            .unwrap_or("overall")
            .parse()
            .map_err(|m| invalid(format!("assert[{i}].scope"), m))?;
        let (op, bucket) = assert_filter(i, a, metric, buckets)?;
        asserts.push(Assert {
            metric,
            scope,
            op,
            bucket,
            min: a.min,
            max: a.max,
        });
    }
    Ok(asserts)
}

/// Assert `i`'s `op` and `bucket` filters, for a metric kept per op class and bucket.
fn assert_filter(
    i: usize,
    a: &RawAssert,
    metric: Metric,
    buckets: &[String],
) -> Result<(Option<Op>, Option<String>), ScenarioError> {
    let f = |s: &str| format!("assert[{i}].{s}");
    if (a.op.is_some() || a.bucket.is_some()) && !metric.per_op() {
        let known: Vec<&str> = Metric::ALL
            .iter()
            .filter(|m| m.per_op())
            .map(|m| m.as_str())
            .collect();
        return Err(invalid(
            f("metric"),
            format!(
                "{} is not kept per op/bucket (with `op` or `bucket`: {})",
                metric.as_str(),
                known.join(", ")
            ),
        ));
    }
    let op =
        a.op.as_deref()
            .map(|s| Op::parse(s).ok_or_else(|| invalid(f("op"), format!("unknown op {s:?}"))))
            .transpose()?;
    if let Some(b) = &a.bucket
        && !buckets.contains(b)
    {
        return Err(invalid(
            f("bucket"),
            format!(
                "no group sends to bucket {b:?} (buckets: {})",
                buckets.join(", ")
            ),
        ));
    }
    Ok((op, a.bucket.clone()))
}

fn tier_from_raw(name: &str, t: &RawTier) -> Result<Tier, ScenarioError> {
    let f = |s: &str| format!("tiers.{name}.{s}");
    let mut windows = Vec::new();
    match (t.per_minute, &t.sustained) {
        (Some(_), Some(_)) => return Err(invalid(f("sustained"), "give per_minute or sustained")),
        (Some(l), None) => windows.push(Window {
            limit: l,
            window_ns: 60_000_000_000,
        }),
        (None, Some(w)) => windows.push(Window {
            limit: w.limit,
            window_ns: dur(&f("sustained.window"), &w.window)?.as_nanos() as u64,
        }),
        (None, None) => {}
    }
    match (t.per_second, &t.burst) {
        (Some(_), Some(_)) => return Err(invalid(f("burst"), "give per_second or burst")),
        (Some(l), None) => windows.push(Window {
            limit: l,
            window_ns: 1_000_000_000,
        }),
        (None, Some(w)) => windows.push(Window {
            limit: w.limit,
            window_ns: dur(&f("burst.window"), &w.window)?.as_nanos() as u64,
        }),
        (None, None) => {}
    }
    if windows.iter().any(|w| w.window_ns == 0) {
        return Err(invalid(f("window"), "windows must be > 0"));
    }
    let methods = match &t.methods {
        None => vec![Op::Get, Op::Put],
        Some(m) => m
            .iter()
            .map(|s| {
                Op::from_method(s)
                    .ok_or_else(|| invalid(f("methods"), format!("unknown method {s:?}")))
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Tier {
        name: name.into(),
        windows,
        methods,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = r#"
target = "http://127.0.0.1:1"
duration = "2m"
[[group]]
name = "p"
tier = "premium"
key_prefix = "K"
key_count = 3
rate = "60/s"
auth = "x-api-key"
"#;

    #[test]
    fn defaults_and_scale() {
        let s = Scenario::from_toml(
            BASIC,
            "t",
            &Overrides {
                scale: Some(0.05),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.duration, Duration::from_secs(6));
        assert_eq!(s.keys.len(), 3);
        assert_eq!(s.keys[2].id, "K0002");
        assert_eq!(s.tiers.len(), 4);
        assert!((s.groups[0].profile.total() - 360.0).abs() < 1e-6);
        assert!(s.keys_file().contains("\"K0001\" = \"premium\""));
    }

    #[test]
    fn several_targets_and_their_spread() {
        let two = BASIC.replace(
            "target = \"http://127.0.0.1:1\"",
            "targets = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]\nspread = \"random\"",
        );
        let s = Scenario::from_toml(&two, "t", &Overrides::default()).unwrap();
        assert_eq!(s.targets, ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(s.target, s.targets[0], "the first one signs");
        assert_eq!(s.spread, crate::plan::Spread::Random);
        let s = Scenario::from_toml(BASIC, "t", &Overrides::default()).unwrap();
        assert_eq!(s.targets, std::slice::from_ref(&s.target));
        assert_eq!(s.spread, crate::plan::Spread::RoundRobin);
        // --target replaces the list; both forms at once, or an empty list, are errors.
        let ov = Overrides {
            target: Some("http://x:9".into()),
            ..Default::default()
        };
        assert_eq!(
            Scenario::from_toml(&two, "t", &ov).unwrap().targets,
            ["http://x:9"]
        );
        let both = two.replace("spread", "target = \"http://a:1\"\nspread");
        assert!(Scenario::from_toml(&both, "t", &Overrides::default()).is_err());
        let empty = BASIC.replace("target = \"http://127.0.0.1:1\"", "targets = []");
        assert!(Scenario::from_toml(&empty, "t", &Overrides::default()).is_err());
    }

    #[test]
    fn credentials_file_lists_signing_keys_with_secrets() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/scenarios/burst.toml");
        let s = Scenario::load(path, &Overrides::default()).unwrap();
        let creds = s.credentials_file();
        let lines: Vec<&str> = creds.lines().collect();
        assert_eq!(lines.len(), 5, "{creds}");
        let f: Vec<&str> = lines[0].split(' ').collect();
        assert_eq!(f, ["premium_0", &s.keys[0].id, &"b1".repeat(32)]);
        assert!(lines[4].starts_with("premium_4 GKb1000000000000000000"));
        // x-api-key groups carry no secret: nothing to import
        let none = Scenario::from_toml(BASIC, "t", &Overrides::default()).unwrap();
        assert_eq!(none.credentials_file(), "");
    }

    #[test]
    fn rejects_unknown_fields_and_bad_values() {
        let e = Scenario::from_toml(&format!("{BASIC}\nbogus = 1\n"), "t", &Overrides::default());
        assert!(e.is_err());
        let bad = BASIC.replace("60/s", "60");
        let e = Scenario::from_toml(&bad, "t", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("group[0].rate"), "{e}");
        let bad = BASIC.replace("premium", "gold");
        assert!(Scenario::from_toml(&bad, "t", &Overrides::default()).is_err());
        let bad = BASIC.replace("x-api-key", "sigv4");
        let e = Scenario::from_toml(&bad, "t", &Overrides::default()).unwrap_err();
        assert!(e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn tiers_stages_and_ops() {
        let text = r#"
target = "http://x:1"
duration = "10s"
[tiers.gold]
sustained = { limit = 10, window = "10s" }
per_second = 2
methods = ["GET"]
[[group]]
tier = "gold"
keys = ["A", { id = "B", secret = "s" }]
secret = "g"
auth = "sigv2"
stages = [{ ramp = "5s", to = "10/s" }, { hold = "5s" }]
ops = { GET = 1, PUT = 1 }
put_sizes = ["1KiB", "4KiB"]
"#;
        let s = Scenario::from_toml(text, "t", &Overrides::default()).unwrap();
        assert_eq!(s.tiers.len(), 1);
        assert_eq!(s.tiers[0].windows[0].window_ns, 10_000_000_000);
        assert_eq!(s.tiers[0].methods, vec![Op::Get]);
        assert_eq!(s.keys[0].secret, "g");
        assert_eq!(s.keys[1].secret, "s");
        assert!((s.groups[0].profile.total() - 75.0).abs() < 1e-6);
        assert_eq!(s.groups[0].mix.put_sizes, vec![1024, 4096]);
    }

    #[test]
    fn assert_vocabulary_round_trips() {
        for &m in Metric::ALL {
            assert_eq!(m.as_str().parse::<Metric>(), Ok(m));
        }
        assert_eq!(Metric::ALL.len(), 27);
        let booleans: Vec<&str> = Metric::ALL
            .iter()
            .filter(|m| m.is_boolean())
            .map(|m| m.as_str())
            .collect();
        assert_eq!(booleans, ["valid", "accuracy", "identity"]);
        for s in [
            "overall",
            "each_key",
            "each_tier",
            "tier:gold",
            "key:K:1",
            "tier:",
        ] {
            assert_eq!(s.parse::<Scope>().unwrap().to_string(), s);
        }
        assert_eq!("key:K:1".parse(), Ok(Scope::Key("K:1".into())));
        let e = "tiers".parse::<Scope>().unwrap_err();
        assert!(e.starts_with("unknown scope \"tiers\""), "{e}");
    }

    #[test]
    fn keys_by_identity_groups_anonymous_keys() {
        let text = format!(
            "{BASIC}[[group]]\nname = \"anon\"\nkeys = [\"X\", \"Y\"]\nrate = \"1/s\"\nauth = \"none\"\n"
        );
        let s = Scenario::from_toml(&text, "t", &Overrides::default()).unwrap();
        let by: Vec<(String, Vec<usize>)> = s.keys_by_identity().into_iter().collect();
        assert_eq!(
            by,
            [
                ("(anonymous)".to_string(), vec![3, 4]),
                ("K0000".to_string(), vec![0]),
                ("K0001".to_string(), vec![1]),
                ("K0002".to_string(), vec![2]),
            ]
        );
    }

    #[test]
    fn pulses_and_repeat() {
        let text = r#"
target = "http://x:1"
duration = "10s"
[[group]]
keys = ["A"]
stages = [{ pulses = 2, on = "250ms", off = "750ms", rate = "80/s" }, { hold = "3s", rate = "0/s" }]
repeat = 2
"#;
        let s = Scenario::from_toml(text, "t", &Overrides::default()).unwrap();
        let p = &s.groups[0].profile;
        // 2 × (2 pulses of 20) = 80 requests, then nothing (last rate 0 holds).
        assert!((p.total() - 80.0).abs() < 1e-9, "{}", p.total());
        assert_eq!(p.rate_at(0.1), 80.0);
        assert_eq!(p.rate_at(0.5), 0.0);
        assert_eq!(p.rate_at(5.1), 80.0);
        assert_eq!(p.rate_at(9.0), 0.0);
    }
}
