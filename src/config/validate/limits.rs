//! Validation of the limits: `[tiers]` (each tier's sustained and burst windows, in either
//! form, and its methods), `[limits]` (tier references, deny status, key length, table cap,
//! headers, 100-continue policy) and loading the keys file it names. Also what `tollgate keys`
//! needs from the main config (`load_keys_setup`).
//!
//! Owns: those checks and defaults, and the tiers' numbering (file order; on a reload the
//! running numbers kept: `number_tiers`). Must not touch: listeners or upstreams; the keys file's
//! format (`keys` checks that).

use super::{R, Validator, Zero};
use crate::config::doc::{Seg, p, parse_doc, read_text};
use crate::config::file::{self, MAX_KEY_LEN_CAP, RawConfig, RawTier, RawWindow};
use crate::config::keys::{load_keys_checked, unknown_tier_message};
use crate::config::{
    ConfigError, ExpectDenied, HeaderGroups, LimitsConfig, MethodSet, TierConfig, UnlistedKeys,
    VerifyConfig, WindowConfig,
};
use crate::limit::DEFAULT_IPV6_PREFIX;
use crate::limit::table::MAX_ENTRIES;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `tollgate keys` needs from the main config: where the keys file is, which tiers
/// exist and the configured key length limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysSetup {
    /// `limits.keys_file`, resolved against the config file's directory (None = not set).
    pub keys_file: Option<PathBuf>,
    /// Tier names in config order.
    pub tiers: Vec<String>,
    /// `limits.max_key_len`.
    pub max_key_len: usize,
}

/// Read only what key management needs from a config file: the rest of the file must parse
/// (unknown fields are still errors) but is not validated, the keys file is not read and no
/// upstream is required — so keys can be managed (and a broken keys file restored) even when
/// the proxy itself could not start.
pub fn load_keys_setup(path: &Path) -> Result<KeysSetup, ConfigError> {
    let text = read_text(path)?;
    let (doc, raw) = parse_doc::<RawConfig>(&text, path)?;
    let v = Validator::new(doc);
    let base = path.parent().unwrap_or(Path::new(""));
    Ok(KeysSetup {
        keys_file: Validator::keys_file(&raw, base),
        tiers: v.tiers(&raw)?.into_iter().map(|t| t.name).collect(),
        max_key_len: v.max_key_len(&raw)?,
    })
}

impl Validator<'_> {
    pub(super) fn window(
        &self,
        shorthand: Option<u64>,
        explicit: Option<&RawWindow>,
        shorthand_window: Duration,
        tier_path: &[Seg],
        names: (&str, &str),
    ) -> R<(WindowConfig, Vec<Seg>)> {
        let (short_name, explicit_name) = names;
        let at = |f: &str| {
            let mut p = tier_path.to_vec();
            p.push(Seg::key(f));
            p
        };
        let (limit, limit_path, window, window_path) = match (shorthand, explicit) {
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &at(explicit_name),
                    format!(
                        "both {short_name} and {explicit_name} are given: use one of them for this window"
                    ),
                ));
            }
            (Some(n), None) => (n, at(short_name), shorthand_window, at(short_name)),
            (None, Some(w)) => {
                let mut lp = at(explicit_name);
                lp.push(Seg::key("limit"));
                let mut wp = at(explicit_name);
                wp.push(Seg::key("window"));
                (w.limit, lp, w.window.0, wp)
            }
            (None, None) => {
                return Err(self.err(
                    tier_path,
                    format!("missing {explicit_name} window: set {short_name} or {explicit_name}"),
                ));
            }
        };
        if !(1..=u64::from(crate::limit::MAX_LIMIT)).contains(&limit) {
            return Err(self.err(
                &limit_path,
                format!(
                    "limit {limit} is out of range (must be 1..={})",
                    crate::limit::MAX_LIMIT
                ),
            ));
        }
        let ms = window.as_millis();
        if ms == 0 || ms > u128::from(u32::MAX) {
            return Err(self.err(
                &window_path,
                format!(
                    "window {} is out of range (must be 1ms..=49d)",
                    file::format_duration(window)
                ),
            ));
        }
        Ok((
            WindowConfig {
                length_ms: ms as u32,
                limit: limit as u32,
            },
            window_path,
        ))
    }

    fn tier(&self, name: &str, t: &RawTier, global_methods: MethodSet) -> R<TierConfig> {
        let tp = p!["tiers", name];
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(self.err(
                &tp,
                format!("invalid tier name {name:?} (use letters, digits, _ and -)"),
            ));
        }
        let (sustained, _) = self.window(
            t.per_minute,
            t.sustained.as_ref(),
            file::SHORTHAND_SUSTAINED_WINDOW,
            &tp,
            ("per_minute", "sustained"),
        )?;
        let (burst, burst_window_path) = self.window(
            t.per_second,
            t.burst.as_ref(),
            file::SHORTHAND_BURST_WINDOW,
            &tp,
            ("per_second", "burst"),
        )?;
        if burst.length_ms >= sustained.length_ms {
            return Err(self.err(
                &burst_window_path,
                format!(
                    "the burst window ({}) must be shorter than the sustained window ({})",
                    file::format_duration(Duration::from_millis(burst.length_ms.into())),
                    file::format_duration(Duration::from_millis(sustained.length_ms.into())),
                ),
            ));
        }
        let methods = match &t.methods {
            Some(m) => self.methods(m, &p!["tiers", name, "methods"])?,
            None => global_methods,
        };
        Ok(TierConfig {
            name: name.to_string(),
            sustained,
            burst,
            methods,
            enforce: t.enforce.unwrap_or(file::DEFAULT_TIER_ENFORCE),
            retired: false,
        })
    }

    /// The tiers, in file order (or the default four), with the global method list applied.
    fn tiers(&self, raw: &RawConfig) -> R<Vec<TierConfig>> {
        let l = &raw.limits;
        let methods_raw: Vec<String> = match &l.methods {
            Some(m) => m.clone(),
            None => file::DEFAULT_METHODS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let global_methods = self.methods(&methods_raw, &p!["limits", "methods"])?;

        let mut tiers = Vec::new();
        match &raw.tiers {
            None => {
                for &(name, per_minute, per_second) in file::DEFAULT_TIERS {
                    tiers.push(TierConfig {
                        name: name.to_string(),
                        sustained: WindowConfig {
                            length_ms: file::SHORTHAND_SUSTAINED_WINDOW.as_millis() as u32,
                            limit: per_minute,
                        },
                        burst: WindowConfig {
                            length_ms: file::SHORTHAND_BURST_WINDOW.as_millis() as u32,
                            limit: per_second,
                        },
                        methods: global_methods,
                        enforce: file::DEFAULT_TIER_ENFORCE,
                        retired: false,
                    });
                }
            }
            Some(map) => {
                if map.is_empty() {
                    return Err(self.err(
                        &p!["tiers"],
                        "no tiers defined: add at least one [tiers.NAME] table or remove [tiers]",
                    ));
                }
                let mut order = self.doc.tier_order();
                order.retain(|n| map.contains_key(n));
                for name in map.keys() {
                    if !order.contains(name) {
                        order.push(name.clone());
                    }
                }
                for name in &order {
                    tiers.push(self.tier(name, &map[name], global_methods)?);
                }
            }
        }
        if tiers.len() > crate::stats::MAX_TIERS {
            return Err(self.err(
                &p!["tiers"],
                format!(
                    "{} tiers: at most {} are supported (stats keep counters per tier)",
                    tiers.len(),
                    crate::stats::MAX_TIERS
                ),
            ));
        }
        Ok(self.number_tiers(tiers))
    }

    /// The tiers numbered as [`LimitsConfig::tiers`] says: on a reload, the running
    /// numbers kept (see `Validator::running_tiers`); on a fresh load, file order.
    fn number_tiers(&self, live: Vec<TierConfig>) -> Vec<TierConfig> {
        let running = &self.running_tiers;
        if running.is_empty() {
            return live;
        }
        let mut out: Vec<Option<TierConfig>> = vec![None; running.len()];
        let mut fresh = Vec::new();
        for t in live {
            match running.iter().position(|(n, _)| *n == t.name) {
                Some(i) => out[i] = Some(t),
                None => fresh.push(t),
            }
        }
        for t in fresh {
            match reusable_number(&out, running) {
                Some(i) => out[i] = Some(t),
                None => out.push(Some(t)),
            }
        }
        out.into_iter()
            .zip(running.iter().map(Some).chain(std::iter::repeat(None)))
            .map(|(t, run)| {
                t.unwrap_or_else(|| TierConfig::retired(&run.expect("a running number").0))
            })
            .collect()
    }

    fn max_key_len(&self, raw: &RawConfig) -> R<usize> {
        let l = self.section(&["limits"], &raw.limits);
        Ok(int!(
            l.max_key_len,
            file::DEFAULT_MAX_KEY_LEN,
            1..=MAX_KEY_LEN_CAP as u64
        ) as usize)
    }

    /// `limits.table_cap` and `limits.ipv6_prefix`: how much a core tracks, and how IPv6
    /// clients are grouped into subjects.
    fn table_shape(&self, raw: &file::RawLimits) -> R<(usize, u8)> {
        let l = self.section(&["limits"], raw);
        let cap = int!(l.table_cap, file::DEFAULT_TABLE_CAP, 1..=MAX_ENTRIES as u64);
        let prefix = int!(l.ipv6_prefix, u64::from(DEFAULT_IPV6_PREFIX), 1..=128);
        Ok((cap as usize, prefix as u8))
    }

    fn keys_file(raw: &RawConfig, base: &Path) -> Option<PathBuf> {
        match raw.limits.keys_file.as_deref() {
            None | Some("") => None,
            Some(p) => Some(super::resolve_path(base, p)),
        }
    }

    pub(super) fn limits(&self, raw: &RawConfig, base: &Path) -> R<LimitsConfig> {
        let l = &raw.limits;
        let tiers = self.tiers(raw)?;
        let tier_index: HashMap<String, usize> = tiers
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.retired)
            .map(|(i, t)| (t.name.clone(), i))
            .collect();

        let tier_ref = |v: &Option<String>, default: &str, field: &str| -> R<usize> {
            let name = v.as_deref().unwrap_or(default);
            tier_index.get(name).copied().ok_or_else(|| {
                self.err(
                    &p!["limits", field],
                    unknown_tier_message(name, &tier_index),
                )
            })
        };
        let default_tier = tier_ref(&l.default_tier, file::DEFAULT_DEFAULT_TIER, "default_tier")?;
        let anonymous_tier = tier_ref(
            &l.anonymous_tier,
            file::DEFAULT_ANONYMOUS_TIER,
            "anonymous_tier",
        )?;

        let deny_status = l.deny_status.unwrap_or(file::DEFAULT_DENY_STATUS);
        if deny_status != 429 && deny_status != 503 {
            return Err(self.err(
                &p!["limits", "deny_status"],
                format!("{deny_status} is not allowed (must be 429 or 503)"),
            ));
        }
        let max_key_len = self.max_key_len(raw)?;
        let (table_cap, ipv6_prefix) = self.table_shape(l)?;
        let expect_denied = match l.expect_denied.unwrap_or(file::DEFAULT_EXPECT_DENIED) {
            file::RawExpectDenied::Close => ExpectDenied::Close,
            file::RawExpectDenied::Drain => {
                ExpectDenied::Drain(l.expect_drain_max.unwrap_or(file::DEFAULT_EXPECT_DRAIN_MAX))
            }
        };
        let hd = &l.headers;
        let headers = HeaderGroups {
            ietf: hd.ietf.unwrap_or(file::DEFAULT_HEADERS_IETF),
            legacy: hd.legacy.unwrap_or(file::DEFAULT_HEADERS_LEGACY),
            identity: hd.identity.unwrap_or(file::DEFAULT_HEADERS_IDENTITY),
            on_allowed: hd.on_allowed.unwrap_or(file::DEFAULT_HEADERS_ON_ALLOWED),
        };

        let keys_file = Self::keys_file(raw, base);
        let keys = self.keys(keys_file.as_deref(), &tier_index, max_key_len)?;

        Ok(LimitsConfig {
            keys_file,
            tiers,
            tier_index,
            keys,
            default_tier,
            anonymous_tier,
            unlisted_keys: match l.unlisted_keys.unwrap_or(file::DEFAULT_UNLISTED_KEYS) {
                file::RawUnlistedKeys::PerKey => UnlistedKeys::PerKey,
                file::RawUnlistedKeys::PerAddress => UnlistedKeys::PerAddress,
            },
            enforce: l.enforce.unwrap_or(file::DEFAULT_ENFORCE),
            deny_status: deny_status as u16,
            max_key_len,
            table_cap,
            ipv6_prefix,
            headers,
            expect_denied,
            refund_on_auth_failure: l
                .refund_on_auth_failure
                .unwrap_or(file::DEFAULT_REFUND_ON_AUTH_FAILURE),
            penalty: self.penalty(&l.penalty)?,
            verify: self.verify(l.verify.as_ref(), base)?,
            version: 1,
        })
    }

    /// `[limits.verify] secrets_file`: loaded and parsed now (a bad file keeps the old
    /// config on reload); refused unless only its owner can read it.
    fn verify(&self, raw: Option<&file::RawVerify>, base: &Path) -> R<Option<VerifyConfig>> {
        let Some(raw) = raw else { return Ok(None) };
        let at = p!["limits", "verify", "secrets_file"];
        let Some(rel) = raw.secrets_file.as_deref().filter(|s| !s.is_empty()) else {
            return Err(self.err(
                &at,
                "required in [limits.verify] (the secrets to verify with)",
            ));
        };
        let path = super::resolve_path(base, rel);
        let mode = std::fs::metadata(&path)
            .map_err(|e| self.err(&at, format!("{}: {e}", path.display())))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(self.err(
                &at,
                format!(
                    "{} is mode {:o}: a secrets file must be readable by its owner only (chmod 600)",
                    path.display(),
                    mode & 0o777
                ),
            ));
        }
        let text = read_text(&path)?;
        let secrets =
            crate::sigverify::Secrets::parse(&text).map_err(|e| ConfigError::Invalid {
                file: path.clone(),
                line: e.line,
                field: "secrets".into(),
                message: e.message.clone(),
            })?;
        Ok(Some(VerifyConfig {
            secrets_file: path,
            secrets: std::sync::Arc::new(secrets),
        }))
    }

    /// `[limits.penalty]`: `failures` per `window` (0 failures = off).
    fn penalty(&self, raw: &file::RawPenalty) -> R<WindowConfig> {
        let p = self.section(&["limits", "penalty"], raw);
        let limit = int!(
            p.failures,
            file::DEFAULT_PENALTY_FAILURES,
            0..=u64::from(crate::limit::MAX_LIMIT)
        );
        let window = dur!(p.window, file::DEFAULT_PENALTY_WINDOW);
        if window > Duration::from_secs(24 * 3600) {
            return Err(p.err("window", "must be at most 24h"));
        }
        Ok(WindowConfig {
            length_ms: window.as_millis() as u32,
            limit: limit as u32,
        })
    }

    /// The keys file's key → tier index (empty without one); a file that cannot be read is
    /// reported at `limits.keys_file`, an error inside it at its own line.
    fn keys(
        &self,
        keys_file: Option<&Path>,
        tier_index: &HashMap<String, usize>,
        max_key_len: usize,
    ) -> R<HashMap<Box<[u8]>, usize>> {
        let Some(kf) = keys_file else {
            return Ok(HashMap::new());
        };
        match load_keys_checked(kf, tier_index, max_key_len) {
            Ok(k) => Ok(k),
            Err(ConfigError::Read { file, source }) => Err(self.err(
                &p!["limits", "keys_file"],
                format!(
                    "cannot read keys file {:?}: {source}",
                    file.display().to_string()
                ),
            )),
            Err(e) => Err(e),
        }
    }
}

/// The number a new tier takes when every number is used (None: a new one, at the end):
/// a placeholder's that was retired before this reload (cores still on the running config
/// may yet send checks under the number of a tier this reload removes), else any.
fn reusable_number(out: &[Option<TierConfig>], running: &[(String, bool)]) -> Option<usize> {
    if out.len() < crate::stats::MAX_TIERS {
        return None;
    }
    let hole = |i: &usize| out[*i].is_none();
    let old_hole = (0..running.len()).filter(hole).find(|&i| running[i].1);
    old_hole.or_else(|| (0..out.len()).find(hole))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testutil::{SERVERS, TempDir, err_at, ok};
    use crate::config::{Config, ExpectDenied, Method, load};

    /// A reload keeps the running tier numbers: a tier that stays keeps its number
    /// wherever it moved in the file, a removed one leaves a retired placeholder nothing
    /// resolves to, a new one goes last (or, once every number is used, into a
    /// placeholder's place, one retired before this reload first), and one that comes
    /// back gets its old number.
    #[test]
    fn a_reload_keeps_the_running_tier_numbers() {
        let tiers = |names: &[&str]| {
            let mut t: String = names
                .iter()
                .map(|n| format!("[tiers.{n}]\nper_minute = 10\nper_second = 1\n"))
                .collect();
            t.push_str(&format!(
                "[limits]\ndefault_tier = \"{0}\"\nanonymous_tier = \"{0}\"\n",
                names[0]
            ));
            format!("{SERVERS}{t}")
        };
        let reload = |running: &Config, names: &[&str]| {
            let path = Path::new("/nonexistent/t.toml");
            super::super::validate_text(&tiers(names), path, &Default::default(), Some(running))
        };
        let numbered = |c: &Config| -> Vec<String> {
            c.limits
                .tiers
                .iter()
                .map(|t| format!("{}{}", t.name, if t.retired { "†" } else { "" }))
                .collect()
        };
        let first = ok(&tiers(&["a", "b", "c"]));
        assert_eq!(
            numbered(&first),
            ["a", "b", "c"],
            "a fresh load: file order"
        );
        let second = reload(&first, &["x", "c", "a"]).unwrap();
        assert_eq!(numbered(&second), ["a", "b†", "c", "x"]);
        assert_eq!(
            second.limits.default_tier, 3,
            "x resolves to its new number"
        );
        let e = validate_with_default(&second, "b").unwrap_err();
        assert!(e.to_string().contains("unknown tier \"b\""), "{e}");
        let third = reload(&second, &["b", "a"]).unwrap();
        assert_eq!(
            numbered(&third),
            ["a", "b", "c†", "x†"],
            "b comes back as 1"
        );
        // Every number used: a new tier takes the first placeholder's place.
        let many: Vec<String> = (0..crate::stats::MAX_TIERS)
            .map(|i| format!("t{i:02}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let full = ok(&tiers(&many));
        let fewer = reload(&full, &many[1..]).unwrap();
        assert_eq!(fewer.limits.tiers[0].name, "t00");
        assert!(fewer.limits.tiers[0].retired);
        let mut with_new = many[1..].to_vec();
        with_new.push("new");
        let refilled = reload(&fewer, &with_new).unwrap();
        assert_eq!(refilled.limits.tiers.len(), crate::stats::MAX_TIERS);
        assert_eq!(numbered(&refilled)[0], "new");
        assert_eq!(
            refilled.limits.tiers[5].name, "t05",
            "the others keep theirs"
        );
        // Only a number given to another tier changes hands (its stats are forgotten).
        let hands = |new: &Config, old: &Config| new.numbers_changing_hands(old).0;
        assert!(
            hands(&second, &first).is_empty(),
            "b retired under its name"
        );
        assert!(hands(&third, &second).is_empty());
        assert!(hands(&fewer, &full).is_empty());
        assert_eq!(hands(&refilled, &fewer), [0], "t00's number went to new");
        // Removing t01 while adding one: the number retired before this reload is taken,
        // not t01's (old-config cores may still send checks under it).
        let mut swap: Vec<&str> = many[2..].to_vec();
        swap.push("other");
        let swapped = reload(&fewer, &swap).unwrap();
        assert_eq!(numbered(&swapped)[..2], ["other", "t01†"]);
        let rule = "[[rules]]\nname = \"r\"\nper_minute = 5\n";
        let with_rule = ok(&format!("{rule}{}", tiers(&["a"])));
        let without = ok(&tiers(&["a"]));
        assert_eq!(without.numbers_changing_hands(&with_rule).1, [0]);
        assert!(with_rule.numbers_changing_hands(&with_rule).1.is_empty());
    }

    /// The config of `running`'s live tiers with `default_tier` set to `name`.
    fn validate_with_default(running: &Config, name: &str) -> Result<Config, ConfigError> {
        let live: Vec<String> = running
            .limits
            .live_tiers()
            .map(|(_, t)| format!("[tiers.{}]\nper_minute = 10\nper_second = 1\n", t.name))
            .collect();
        let text = format!(
            "{SERVERS}{}[limits]\ndefault_tier = \"{name}\"\n",
            live.concat()
        );
        super::super::validate_text(
            &text,
            Path::new("/nonexistent/t.toml"),
            &Default::default(),
            Some(running),
        )
    }

    /// `[limits.verify]`: the secrets file must exist, be the owner's alone (0600) and parse;
    /// each failure names the field or the secrets file's line.
    #[test]
    fn verify_secrets_file_is_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = TempDir::new("verify");
        let cfg = format!("{SERVERS}[limits.verify]\nsecrets_file = \"secrets.toml\"\n");
        let path = dir.write("t.toml", &cfg);
        let e = load(&path).unwrap_err();
        assert_eq!(e.field(), Some("limits.verify.secrets_file"), "{e}");
        let secrets = dir.write("secrets.toml", "[secrets]\n\"AKIA1\" = 'one'\n");
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(4), Some("limits.verify.secrets_file")),
            "{e}"
        );
        assert!(
            e.to_string().contains("mode 644") && e.to_string().contains("chmod 600"),
            "{e}"
        );
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = load(&path).unwrap();
        let v = c.limits.verify.as_ref().expect("verify on");
        assert!(v.secrets.contains(b"AKIA1"));
        std::fs::write(&secrets, "[secrets]\n\"AKIA1\" = 'one'\n\"AKIA2\" = 7\n").unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.file(), Some(secrets.as_path()), "{e}");
        assert_eq!(e.line(), Some(3), "{e}");
        let c = ok(SERVERS);
        assert!(c.limits.verify.is_none(), "off by default");
    }

    /// `limits.ipv6_prefix`: IPv6 clients counted per /64 unless set; 1..=128, anything
    /// else refused with the field named (0 would count every IPv6 client as one).
    #[test]
    fn ipv6_prefix_defaults_to_64_and_is_bounded() {
        assert_eq!(ok(SERVERS).limits.ipv6_prefix, 64);
        let c = ok(&format!("{SERVERS}[limits]\nipv6_prefix = 48\n"));
        assert_eq!((c.limits.ipv6_prefix, c.rules.ipv6_prefix), (48, 48));
        assert_eq!(
            ok(&format!("{SERVERS}[limits]\nipv6_prefix = 128\n"))
                .limits
                .ipv6_prefix,
            128
        );
        let line = SERVERS.lines().count() + 2;
        for bad in ["0", "129", "1000"] {
            let e = err_at(
                &format!("{SERVERS}[limits]\nipv6_prefix = {bad}\n"),
                line,
                "limits.ipv6_prefix",
            );
            assert!(e.to_string().contains("must be 1..=128"), "{e}");
        }
    }

    #[test]
    fn custom_tiers_keep_file_order_and_forms() {
        let c = ok(&format!(
            "{SERVERS}
[limits]
default_tier = \"zeta\"
anonymous_tier = \"alpha\"
methods = [\"GET\", \"DELETE\"]
expect_denied = \"drain\"
expect_drain_max = 4096

[tiers.zeta]
per_minute = 10
per_second = 2

[tiers.alpha]
sustained = {{ limit = 600, window = \"10m\" }}
burst = {{ limit = 20, window = \"500ms\" }}
methods = [\"PUT\"]
enforce = false
"
        ));
        let l = &c.limits;
        let names: Vec<&str> = l.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha"]);
        assert_eq!((l.default_tier, l.anonymous_tier), (0, 1));
        let z = &l.tiers[0];
        assert_eq!(
            z.sustained,
            WindowConfig {
                length_ms: 60_000,
                limit: 10
            }
        );
        assert_eq!(
            z.burst,
            WindowConfig {
                length_ms: 1000,
                limit: 2
            }
        );
        assert!(z.methods.contains(Method::Delete) && z.methods.contains(Method::Get));
        assert!(!z.methods.contains(Method::Put) && z.enforce);
        let a = &l.tiers[1];
        assert_eq!(
            a.sustained,
            WindowConfig {
                length_ms: 600_000,
                limit: 600
            }
        );
        assert_eq!(
            a.burst,
            WindowConfig {
                length_ms: 500,
                limit: 20
            }
        );
        assert!(a.methods.contains(Method::Put) && !a.methods.contains(Method::Get));
        assert!(!a.enforce);
        assert_eq!(l.expect_denied, ExpectDenied::Drain(4096));
    }

    #[test]
    fn unknown_tier_names() {
        let e = err_at(
            &format!("{SERVERS}[limits]\ndefault_tier = \"gold\"\n"),
            4,
            "limits.default_tier",
        );
        assert!(
            e.to_string()
                .contains("unknown tier \"gold\" (tiers: basic, premium, standard, unknown)"),
            "{e}"
        );
        err_at(
            &format!("{SERVERS}[limits]\n\nanonymous_tier = \"anon\"\n"),
            5,
            "limits.anonymous_tier",
        );
        // Custom tiers without "unknown": the defaulted default_tier is reported at [limits]
        // when present, else at line 1.
        err_at(
            &format!("{SERVERS}[tiers.gold]\nper_minute = 5\nper_second = 1\n"),
            1,
            "limits.default_tier",
        );
        err_at(
            &format!(
                "{SERVERS}[limits]\nenforce = true\n[tiers.gold]\nper_minute = 5\nper_second = 1\n"
            ),
            3,
            "limits.default_tier",
        );
    }

    #[test]
    fn bad_methods() {
        let e = err_at(
            &format!("{SERVERS}[limits]\nmethods = [\"GET\", \"FETCH\"]\n"),
            4,
            "limits.methods[1]",
        );
        assert!(e.to_string().contains("unknown method \"FETCH\""), "{e}");
        err_at(
            &format!("{SERVERS}[tiers.t]\nper_minute = 5\nper_second = 1\nmethods = [\"get\"]\n"),
            6,
            "tiers.t.methods[0]",
        );
    }

    #[test]
    fn limits_range_checks() {
        let e = err_at(
            &format!("{SERVERS}[limits]\ndeny_status = 403\n"),
            4,
            "limits.deny_status",
        );
        assert!(
            e.to_string()
                .ends_with("403 is not allowed (must be 429 or 503)"),
            "{e}"
        );
        assert_eq!(
            ok(&format!("{SERVERS}[limits]\ndeny_status = 503\n"))
                .limits
                .deny_status,
            503
        );
        err_at(
            &format!("{SERVERS}[limits]\nmax_key_len = 0\n"),
            4,
            "limits.max_key_len",
        );
        err_at(
            &format!("{SERVERS}[limits]\nmax_key_len = 256\n"),
            4,
            "limits.max_key_len",
        );
        assert_eq!(
            ok(&format!("{SERVERS}[limits]\nmax_key_len = 255\n"))
                .limits
                .max_key_len,
            255
        );
        err_at(
            &format!("{SERVERS}[limits]\ntable_cap = 0\n"),
            4,
            "limits.table_cap",
        );
        // The table's index cells hold 24-bit entry numbers.
        assert_eq!(
            ok(&format!("{SERVERS}[limits]\ntable_cap = 16777214\n"))
                .limits
                .table_cap,
            16_777_214
        );
        err_at(
            &format!("{SERVERS}[limits]\ntable_cap = 16777215\n"),
            4,
            "limits.table_cap",
        );
    }

    #[test]
    fn tier_limit_checks() {
        let t = |body: &str| format!("{SERVERS}[tiers.t]\n{body}");
        err_at(
            &t("per_minute = 0\nper_second = 1\n"),
            4,
            "tiers.t.per_minute",
        );
        err_at(
            &t("per_minute = 1000001\nper_second = 1\n"),
            4,
            "tiers.t.per_minute",
        );
        let max = ok(&format!(
            "{SERVERS}[limits]\ndefault_tier = \"t\"\nanonymous_tier = \"t\"\n[tiers.t]\nper_minute = 1000000\nper_second = 300000\n"
        ));
        assert_eq!(max.limits.tiers[0].sustained.limit, 1_000_000);
        err_at(
            &t("per_minute = 5\nburst = { limit = 0, window = \"1s\" }\n"),
            5,
            "tiers.t.burst.limit",
        );
        let e = err_at(
            &t("per_minute = 5\nburst = { limit = 2, window = \"1m\" }\n"),
            5,
            "tiers.t.burst.window",
        );
        assert!(
            e.to_string()
                .contains("the burst window (1m) must be shorter than the sustained window (1m)"),
            "{e}"
        );
        err_at(
            &t("sustained = { limit = 5, window = \"1s\" }\nper_second = 2\n"),
            5,
            "tiers.t.per_second",
        );
        let e = err_at(
            &t("per_minute = 5\nper_second = 1\nsustained = { limit = 5, window = \"1m\" }\n"),
            6,
            "tiers.t.sustained",
        );
        assert!(
            e.to_string().contains("both per_minute and sustained"),
            "{e}"
        );
        err_at(
            &t("per_minute = 5\nper_second = 1\n\nburst = { limit = 5, window = \"1s\" }\n"),
            7,
            "tiers.t.burst",
        );
        let e = err_at(&t("per_minute = 5\n"), 3, "tiers.t");
        assert!(e.to_string().contains("missing burst window"), "{e}");
        err_at(&format!("{SERVERS}[tiers]\n"), 3, "tiers");
    }

    #[test]
    fn keys_setup_needs_neither_upstream_nor_a_valid_keys_file() {
        let dir = TempDir::new("setup");
        let path = dir.write(
            "t.toml",
            "[limits]\nkeys_file = \"k.toml\"\nmax_key_len = 40\n\
             [tiers.b]\nper_minute = 2\nper_second = 1\n[tiers.a]\nper_minute = 2\nper_second = 1\n",
        );
        dir.write("k.toml", "[keys]\n\"x\" = \"nonexistent-tier\"\n");
        assert!(load(&path).is_err());
        let s = load_keys_setup(&path).unwrap();
        assert_eq!(
            s,
            KeysSetup {
                keys_file: Some(dir.0.join("k.toml")),
                tiers: vec!["b".to_string(), "a".to_string()],
                max_key_len: 40,
            }
        );
        let bad = dir.write("u.toml", "[limits]\nkeyfile = \"k.toml\"\n");
        let e = load_keys_setup(&bad).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(2), Some("limits.keyfile")),
            "{e}"
        );
        let defaults = load_keys_setup(&dir.write("v.toml", "")).unwrap();
        assert_eq!(defaults.keys_file, None);
        assert_eq!(defaults.tiers, ["premium", "standard", "basic", "unknown"]);
        assert_eq!(defaults.max_key_len, 128);
    }
}
