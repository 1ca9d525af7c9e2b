//! Raw serde mirror of the TOML config file (see `SCHEMA.md`) and of the keys file.
//!
//! Owns: the exact accepted shape of both files (`deny_unknown_fields` on every table), the
//! `DEFAULT_*` constants for every default, and the duration syntax ("500ms", "2s", "1m", "1h").
//! Every field is optional here: defaults are applied, and values checked, by `validate`,
//! which also maps any error back to the file's line and the field's dotted path.
//! Must not touch: the file system, sockets, the validated types' invariants.

use serde::{Deserialize, Deserializer, de};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

// ----- top level -----

/// Default plain HTTP listener.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";
/// Worker threads are pinned to cores by default.
pub const DEFAULT_PIN_WORKERS: bool = true;
/// Grace period for in-flight requests on SIGTERM/SIGINT.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// How long `/ready` answers 503 after SIGTERM before the listeners close.
pub const DEFAULT_SHUTDOWN_DELAY: Duration = Duration::ZERO;
/// How often config and keys file mtimes are polled ("0s" = off).
pub const DEFAULT_RELOAD_POLL_INTERVAL: Duration = Duration::from_secs(2);

// ----- [tls] -----

/// Default HTTPS listener when `[tls]` is present without `listen`.
pub const DEFAULT_TLS_LISTEN: &str = "0.0.0.0:8443";
/// Certificate files are not polled by default (SIGHUP still reloads them).
pub const DEFAULT_TLS_RELOAD_INTERVAL: Duration = Duration::ZERO;

// ----- [admin] -----

/// Default admin listener ("off" disables it).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:8404";
/// Default admin bearer token: "" = none required.
pub const DEFAULT_ADMIN_TOKEN: &str = "";

// ----- [http] -----

pub const DEFAULT_MAX_HEAD_BYTES: u64 = 16384;
pub const DEFAULT_MAX_HEADERS: u64 = 100;
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_CLIENT_HEAD_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_X_FORWARDED_FOR: bool = false;
/// 0 = unlimited keep-alive requests per client connection.
pub const DEFAULT_MAX_REQUESTS_PER_CONNECTION: u64 = 0;
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

// ----- [upstream] -----

pub const DEFAULT_BALANCE: RawBalance = RawBalance::RoundRobin;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_EXPECT_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_UPSTREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_POOL_MAX_IDLE: u64 = 64;
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_PASSIVE_FAIL_THRESHOLD: u64 = 3;
pub const DEFAULT_PASSIVE_EJECT_DURATION: Duration = Duration::from_secs(10);
pub const DEFAULT_MAX_RETRIES: u64 = 2;

// ----- [upstream.health] -----

pub const DEFAULT_HEALTH_ENABLED: bool = true;
pub const DEFAULT_HEALTH_PATH: &str = "/minio/health/live";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
pub const DEFAULT_HEALTH_RISE: u64 = 2;
pub const DEFAULT_HEALTH_FALL: u64 = 3;
pub const DEFAULT_HEALTHY_STATUSES: &[&str] = &["200-399"];

// ----- [access_log] -----

/// "" = access log off.
pub const DEFAULT_ACCESS_LOG_PATH: &str = "";
pub const DEFAULT_ACCESS_LOG_BUFFER: u64 = 64 * 1024;
pub const DEFAULT_ACCESS_LOG_FLUSH: Duration = Duration::from_secs(1);
pub const DEFAULT_ACCESS_LOG_QUEUE: u64 = 64;

// ----- [limits] -----

pub const DEFAULT_DEFAULT_TIER: &str = "unknown";
pub const DEFAULT_ANONYMOUS_TIER: &str = "unknown";
pub const DEFAULT_UNLISTED_KEYS: RawUnlistedKeys = RawUnlistedKeys::PerAddress;
pub const DEFAULT_REFUND_ON_AUTH_FAILURE: bool = true;
pub const DEFAULT_PENALTY_FAILURES: u64 = 20;
pub const DEFAULT_PENALTY_WINDOW: Duration = Duration::from_secs(60);
pub const DEFAULT_ALLOW_PUBLIC_WITHOUT_TOKEN: bool = false;
pub const DEFAULT_METHODS: &[&str] = &["GET", "PUT"];
pub const DEFAULT_ENFORCE: bool = true;
pub const DEFAULT_DENY_STATUS: u64 = 429;
pub const DEFAULT_MAX_KEY_LEN: u64 = 128;
/// Upper bound of `limits.max_key_len` (keys are stored with a one-byte length).
pub const MAX_KEY_LEN_CAP: usize = 255;
pub const DEFAULT_TABLE_CAP: u64 = 100_000;
pub const DEFAULT_EXPECT_DENIED: RawExpectDenied = RawExpectDenied::Close;
pub const DEFAULT_EXPECT_DRAIN_MAX: u64 = 1_048_576;

// ----- [limits.headers] -----

pub const DEFAULT_HEADERS_IETF: bool = true;
pub const DEFAULT_HEADERS_LEGACY: bool = true;
pub const DEFAULT_HEADERS_IDENTITY: bool = true;
pub const DEFAULT_HEADERS_ON_ALLOWED: bool = true;

// ----- [tiers] -----

/// Length of the window set by the `per_minute` shorthand.
pub const SHORTHAND_SUSTAINED_WINDOW: Duration = Duration::from_secs(60);
/// Length of the window set by the `per_second` shorthand.
pub const SHORTHAND_BURST_WINDOW: Duration = Duration::from_secs(1);
/// A tier enforces by default (`enforce = false` = shadow mode for that tier).
pub const DEFAULT_TIER_ENFORCE: bool = true;

/// The tiers used when the file has no `[tiers]` table: (name, per minute, per second), in order.
pub const DEFAULT_TIERS: &[(&str, u32, u32)] = &[
    ("premium", 1000, 50),
    ("standard", 500, 25),
    ("basic", 100, 10),
    ("unknown", 50, 5),
];

// ----- duration syntax -----

/// A duration written as a string: an unsigned integer followed by `ms`, `s`, `m` or `h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDuration(pub Duration);

/// Parse "500ms", "2s", "1m", "1h" (no sign, no fraction, no compound forms).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(ms_per_unit).map(Duration::from_millis)
}

/// Render a duration in the config syntax, using the largest exact unit.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else if ms % 60_000 == 0 {
        format!("{}m", ms / 60_000)
    } else if ms % 1_000 == 0 {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"2s\", \"1m\" or \"1h\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDuration, E> {
                parse_duration(s).map(RawDuration).ok_or_else(|| {
                    E::custom(format!(
                        "invalid duration {s:?} (expected a whole number followed by ms, s, m or h, e.g. \"2s\")"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

// ----- enums -----

/// A string-valued enum: each variant's spelling in the file.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
        #[serde(try_from = "String")]
        pub enum $name {
            $($variant),+
        }

        impl $name {
            pub const ALL: &[(&str, $name)] = &[$(($text, $name::$variant)),+];
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                $name::ALL
                    .iter()
                    .find(|(t, _)| *t == s)
                    .map(|&(_, v)| v)
                    .ok_or_else(|| {
                        let all: Vec<String> =
                            $name::ALL.iter().map(|(t, _)| format!("{t:?}")).collect();
                        format!("unknown value {s:?} (expected {})", all.join(" or "))
                    })
            }
        }
    };
}

string_enum!(
    /// `upstream.balance`.
    RawBalance {
        RoundRobin = "round_robin",
        LeastOutstanding = "least_outstanding",
    }
);

string_enum!(
    /// `limits.unlisted_keys`.
    RawUnlistedKeys {
        PerKey = "per_key",
        PerAddress = "per_address",
    }
);

string_enum!(
    /// `limits.expect_denied`.
    RawExpectDenied {
        Close = "close",
        Drain = "drain",
    }
);

// ----- [cluster] -----

/// How often each instance syncs its deltas with the store (one script call).
pub const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// What an instance enforces while the store does not answer.
pub const DEFAULT_ON_STORE_FAILURE: &str = "local_share";
/// Connecting to the store (each attempt; one per tick while it is away).
pub const DEFAULT_CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_millis(100);
/// Reading a script call's answer / writing the call.
pub const DEFAULT_CLUSTER_READ_TIMEOUT: Duration = Duration::from_millis(100);
pub const DEFAULT_CLUSTER_WRITE_TIMEOUT: Duration = Duration::from_millis(100);

// ----- tables -----

/// The whole main config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub workers: Option<u64>,
    pub pin_workers: Option<bool>,
    pub listen: Option<Vec<String>>,
    pub shutdown_grace: Option<RawDuration>,
    pub shutdown_delay: Option<RawDuration>,
    pub reload_poll_interval: Option<RawDuration>,
    pub tls: Option<RawTls>,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub upstream: RawUpstream,
    #[serde(default)]
    pub access_log: RawAccessLog,
    #[serde(default)]
    pub limits: RawLimits,
    /// None = no `[tiers]` table: the four default tiers.
    pub tiers: Option<BTreeMap<String, RawTier>>,
    /// None = no `[cluster]` table: this instance limits on its own.
    pub cluster: Option<RawCluster>,
    /// `[[rules]]`, in file order (validated by `validate::rules`).
    #[serde(default)]
    pub rules: Vec<super::validate::RawRule>,
    pub virtual_host_domains: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub redis_url: Option<String>,
    pub sync_interval: Option<RawDuration>,
    pub instance_id: Option<String>,
    pub on_store_failure: Option<String>,
    pub connect_timeout: Option<RawDuration>,
    pub read_timeout: Option<RawDuration>,
    pub write_timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<Vec<String>>,
    pub reload_interval: Option<RawDuration>,
    #[serde(default)]
    pub certs: Vec<RawCert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    pub cert: String,
    pub key: String,
    #[serde(default)]
    pub server_names: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<String>,
    pub token: Option<String>,
    pub allowed_hosts: Option<Vec<String>>,
    pub allow_public_without_token: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHttp {
    pub max_head_bytes: Option<u64>,
    pub max_headers: Option<u64>,
    pub client_idle_timeout: Option<RawDuration>,
    pub client_head_timeout: Option<RawDuration>,
    pub x_forwarded_for: Option<bool>,
    pub max_requests_per_connection: Option<u64>,
    pub max_connections: Option<u64>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    pub balance: Option<RawBalance>,
    pub connect_timeout: Option<RawDuration>,
    pub response_head_timeout: Option<RawDuration>,
    pub expect_timeout: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub pool_max_idle: Option<u64>,
    pub pool_idle_timeout: Option<RawDuration>,
    pub passive_fail_threshold: Option<u64>,
    pub passive_eject_duration: Option<RawDuration>,
    pub max_retries: Option<u64>,
    #[serde(default)]
    pub servers: Vec<RawServer>,
    #[serde(default)]
    pub health: RawHealth,
    pub tls: Option<RawUpstreamTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub addr: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    pub enabled: Option<bool>,
    pub path: Option<String>,
    pub interval: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
    pub rise: Option<u64>,
    pub fall: Option<u64>,
    pub healthy_statuses: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca_file: String,
    pub server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: Option<String>,
    pub buffer_bytes: Option<u64>,
    pub flush_interval: Option<RawDuration>,
    pub queue: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub keys_file: Option<String>,
    pub default_tier: Option<String>,
    pub anonymous_tier: Option<String>,
    pub unlisted_keys: Option<RawUnlistedKeys>,
    pub methods: Option<Vec<String>>,
    pub enforce: Option<bool>,
    pub deny_status: Option<u64>,
    pub max_key_len: Option<u64>,
    pub table_cap: Option<u64>,
    pub ipv6_prefix: Option<u64>,
    pub expect_denied: Option<RawExpectDenied>,
    pub expect_drain_max: Option<u64>,
    pub refund_on_auth_failure: Option<bool>,
    #[serde(default)]
    pub penalty: RawPenalty,
    pub verify: Option<RawVerify>,
    #[serde(default)]
    pub headers: RawHeaders,
}

/// `[limits.verify]`: signatures checked by tollgate itself.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub secrets_file: Option<String>,
}

/// `[limits.penalty]`: authentication failures per client address.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPenalty {
    pub failures: Option<u64>,
    pub window: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    pub ietf: Option<bool>,
    pub legacy: Option<bool>,
    pub identity: Option<bool>,
    pub on_allowed: Option<bool>,
}

/// One `[tiers.NAME]` table: each window is given either by shorthand or explicitly.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub per_minute: Option<u64>,
    pub per_second: Option<u64>,
    pub sustained: Option<RawWindow>,
    pub burst: Option<RawWindow>,
    pub methods: Option<Vec<String>>,
    pub enforce: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWindow {
    pub limit: u64,
    pub window: RawDuration,
}

/// The keys file: a single `[keys]` table of key = tier name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKeysFile {
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        for bad in [
            "", "s", "2", "1.5s", "-1s", " 2s", "2 s", "2sec", "1m30s", "2S",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?} must be rejected");
        }
        assert_eq!(parse_duration("99999999999999999999h"), None);
    }

    #[test]
    fn durations_format_with_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
        assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn string_enums_accept_only_their_spellings() {
        assert_eq!(
            RawBalance::try_from("least_outstanding".to_string()),
            Ok(RawBalance::LeastOutstanding)
        );
        assert_eq!(RawExpectDenied::Drain.as_str(), "drain");
        assert_eq!(
            RawUnlistedKeys::try_from("PerKey".to_string()),
            Err("unknown value \"PerKey\" (expected \"per_key\" or \"per_address\")".to_string())
        );
    }
}
