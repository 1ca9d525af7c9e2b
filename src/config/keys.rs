//! The keys file: reading it for the config (`load_keys*`: key → tier index, every key and
//! tier checked, errors as `FILE:LINE: keys.KEY: message`) and managing it behind
//! `tollgate keys list | add | remove | set | backups | restore`.
//!
//! Owns: the key format (`check_key`), reading the `[keys]` table of `"KEY" = "tier"`, and
//! rewriting it. Every change is validated, written to a temporary file in the same directory,
//! fsynced and renamed over the old file (atomic), and the previous file is kept as a
//! timestamped backup next to it (`keys.toml.bak.20261123T101502.123Z`, newest `MAX_BACKUPS`
//! kept). Keys are written sorted so diffs stay stable; the comment block at the top of the
//! file is kept, other comments are not.
//! Must not touch: the running proxy (it picks changes up by reload), the main config file
//! (`validate` reads it and calls `load_keys_checked` with its tiers).

use super::doc::{Seg, parse_doc, read_text};
use super::error::ConfigError;
use super::file::{MAX_KEY_LEN_CAP, RawKeysFile};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------------
// Reading a keys file.

/// Load a keys file: key → tier index. Keys are checked against the largest accepted
/// `max_key_len` (255); use `load_keys_checked` to apply a configured one.
pub fn load_keys(
    path: &Path,
    tier_index: &HashMap<String, usize>,
) -> Result<HashMap<Box<[u8]>, usize>, ConfigError> {
    load_keys_checked(path, tier_index, MAX_KEY_LEN_CAP)
}

/// `load_keys` with the configured `limits.max_key_len` (a longer key could never match).
pub fn load_keys_checked(
    path: &Path,
    tier_index: &HashMap<String, usize>,
    max_key_len: usize,
) -> Result<HashMap<Box<[u8]>, usize>, ConfigError> {
    let text = read_text(path)?;
    load_keys_str(&text, path, tier_index, max_key_len)
}

/// `load_keys_checked` on text already read (the path names the file in messages).
pub fn load_keys_str(
    text: &str,
    path: &Path,
    tier_index: &HashMap<String, usize>,
    max_key_len: usize,
) -> Result<HashMap<Box<[u8]>, usize>, ConfigError> {
    let (doc, raw) = parse_doc::<RawKeysFile>(text, path)?;
    let mut keys = HashMap::with_capacity(raw.keys.len());
    for (key, tier) in &raw.keys {
        let at = [Seg::key("keys"), Seg::key(key)];
        check_key(key, max_key_len).map_err(|m| doc.error_at(&at, m))?;
        let &t = tier_index
            .get(tier.as_str())
            .ok_or_else(|| doc.error_at(&at, unknown_tier_message(tier, tier_index)))?;
        keys.insert(Box::<[u8]>::from(key.as_bytes()), t);
    }
    Ok(keys)
}

/// Parse a keys file into its raw form (key → tier name) and check every key's format.
/// Tier names are not checked (that needs the config); used by the keys CLI.
pub fn parse_keys_text(text: &str, path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let (doc, raw) = parse_doc::<RawKeysFile>(text, path)?;
    for key in raw.keys.keys() {
        check_key(key, MAX_KEY_LEN_CAP)
            .map_err(|m| doc.error_at(&[Seg::key("keys"), Seg::key(key)], m))?;
    }
    Ok(raw.keys)
}

/// A key is 1..=max_len printable ASCII characters without spaces (0x21..=0x7E).
pub fn check_key(key: &str, max_len: usize) -> Result<(), String> {
    if key.is_empty() {
        return Err("empty key".to_string());
    }
    if let Some(c) = key.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(format!(
            "malformed key {key:?}: byte 0x{c:02x} is not printable ASCII (0x21..=0x7E)"
        ));
    }
    if key.len() > max_len {
        return Err(format!(
            "malformed key {key:?}: {} bytes is longer than max_key_len {max_len}",
            key.len()
        ));
    }
    Ok(())
}

/// `unknown tier "x" (tiers: a, b)`, the names sorted.
pub(super) fn unknown_tier_message<V>(tier: &str, tier_index: &HashMap<String, V>) -> String {
    let mut names: Vec<&str> = tier_index.keys().map(String::as_str).collect();
    names.sort_unstable();
    format!("unknown tier {tier:?} (tiers: {})", names.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Managing a keys file.

/// Number of backups kept per keys file; older ones are deleted after each change.
pub const MAX_BACKUPS: usize = 50;

/// Header written to a keys file created by `tollgate keys`.
const NEW_FILE_HEADER: &str = "# tollgate keys file: \"API key\" = \"tier name\".\n\
# Managed by `tollgate keys`: keys are kept sorted and only this top comment block is preserved.\n";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("{}: cannot {action}: {source}", file.display())]
    Io {
        file: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// The keys file (or a backup to restore) does not parse or holds a malformed key.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    #[error("{}: key {key:?} already exists (tier {tier:?}); use `set` to change it", file.display())]
    Exists {
        file: PathBuf,
        key: String,
        tier: String,
    },
    #[error("{}: key {key:?} not found", file.display())]
    NotFound { file: PathBuf, key: String },
    #[error("{}: key {key:?}: unknown tier {tier:?} (tiers: {valid})", file.display())]
    UnknownTier {
        file: PathBuf,
        key: String,
        tier: String,
        valid: String,
    },
    #[error("{}: {reason}", file.display())]
    BadKey {
        file: PathBuf,
        key: String,
        reason: String,
    },
    #[error("{}: not a backup of {}", backup.display(), file.display())]
    NotABackup { file: PathBuf, backup: PathBuf },
}

fn io_err<'a>(file: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> KeysError + 'a {
    move |source| KeysError::Io {
        file: file.to_path_buf(),
        action,
        source,
    }
}

/// The file's text, or None if it does not exist.
fn read_opt(path: &Path) -> Result<Option<String>, KeysError> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read")(e)),
    }
}

/// Current text and parsed keys (an absent file is empty).
fn read_keys(path: &Path) -> Result<(Option<String>, BTreeMap<String, String>), KeysError> {
    let text = read_opt(path)?;
    let keys = match &text {
        Some(t) => parse_keys_text(t, path)?,
        None => BTreeMap::new(),
    };
    Ok((text, keys))
}

/// All keys and their tiers, sorted by key.
pub fn list(keys_path: &Path) -> Result<Vec<(String, String)>, KeysError> {
    let text = fs::read_to_string(keys_path).map_err(io_err(keys_path, "read"))?;
    Ok(parse_keys_text(&text, keys_path)?.into_iter().collect())
}

fn check_new(
    keys_path: &Path,
    key: &str,
    tier: &str,
    valid_tiers: &[String],
) -> Result<(), KeysError> {
    check_key(key, MAX_KEY_LEN_CAP).map_err(|reason| KeysError::BadKey {
        file: keys_path.to_path_buf(),
        key: key.to_string(),
        reason,
    })?;
    if !valid_tiers.iter().any(|t| t == tier) {
        return Err(KeysError::UnknownTier {
            file: keys_path.to_path_buf(),
            key: key.to_string(),
            tier: tier.to_string(),
            valid: valid_tiers.join(", "),
        });
    }
    Ok(())
}

/// Add a new key (error if it already exists). Creates the file if it does not exist.
pub fn add(
    keys_path: &Path,
    key: &str,
    tier: &str,
    valid_tiers: &[String],
) -> Result<(), KeysError> {
    add_at(keys_path, key, tier, valid_tiers, SystemTime::now())
}

fn add_at(
    keys_path: &Path,
    key: &str,
    tier: &str,
    valid_tiers: &[String],
    now: SystemTime,
) -> Result<(), KeysError> {
    check_new(keys_path, key, tier, valid_tiers)?;
    let (old, mut keys) = read_keys(keys_path)?;
    if let Some(t) = keys.get(key) {
        return Err(KeysError::Exists {
            file: keys_path.to_path_buf(),
            key: key.to_string(),
            tier: t.clone(),
        });
    }
    keys.insert(key.to_string(), tier.to_string());
    commit(
        keys_path,
        old.as_deref(),
        &render(old.as_deref(), &keys),
        now,
    )
}

/// Remove a key (error if missing). Returns the tier it had.
pub fn remove(keys_path: &Path, key: &str) -> Result<String, KeysError> {
    remove_at(keys_path, key, SystemTime::now())
}

fn remove_at(keys_path: &Path, key: &str, now: SystemTime) -> Result<String, KeysError> {
    let (old, mut keys) = read_keys(keys_path)?;
    let Some(tier) = keys.remove(key) else {
        return Err(KeysError::NotFound {
            file: keys_path.to_path_buf(),
            key: key.to_string(),
        });
    };
    commit(
        keys_path,
        old.as_deref(),
        &render(old.as_deref(), &keys),
        now,
    )?;
    Ok(tier)
}

/// Add a key or change its tier. Returns the previous tier (None if the key was new).
/// Setting a key to the tier it already has changes nothing (no write, no backup).
pub fn set(
    keys_path: &Path,
    key: &str,
    tier: &str,
    valid_tiers: &[String],
) -> Result<Option<String>, KeysError> {
    set_at(keys_path, key, tier, valid_tiers, SystemTime::now())
}

fn set_at(
    keys_path: &Path,
    key: &str,
    tier: &str,
    valid_tiers: &[String],
    now: SystemTime,
) -> Result<Option<String>, KeysError> {
    check_new(keys_path, key, tier, valid_tiers)?;
    let (old, mut keys) = read_keys(keys_path)?;
    let prev = keys.insert(key.to_string(), tier.to_string());
    if prev.as_deref() == Some(tier) {
        return Ok(prev);
    }
    commit(
        keys_path,
        old.as_deref(),
        &render(old.as_deref(), &keys),
        now,
    )?;
    Ok(prev)
}

/// Backups of this keys file, newest first.
pub fn backups(keys_path: &Path) -> Vec<PathBuf> {
    let (dir, name) = split(keys_path);
    let prefix = format!("{name}.bak.");
    let Ok(rd) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = rd
        .filter_map(Result::ok)
        .filter_map(|e| {
            let n = e.file_name().into_string().ok()?;
            let stamp = n.strip_prefix(&prefix)?;
            is_stamp(stamp).then(|| (stamp.to_string(), e.path()))
        })
        .collect();
    found.sort_by(|a, b| b.0.cmp(&a.0));
    found.into_iter().map(|(_, p)| p).collect()
}

/// Replace the keys file with a backup (which must parse); the current file is backed up first.
pub fn restore(keys_path: &Path, backup_file: &Path) -> Result<(), KeysError> {
    restore_at(keys_path, backup_file, SystemTime::now())
}

fn restore_at(keys_path: &Path, backup_file: &Path, now: SystemTime) -> Result<(), KeysError> {
    let text = fs::read_to_string(backup_file).map_err(io_err(backup_file, "read"))?;
    parse_keys_text(&text, backup_file)?;
    let old = read_opt(keys_path)?;
    commit(keys_path, old.as_deref(), &text, now)
}

/// Directory and file name of the keys file.
fn split(path: &Path) -> (PathBuf, String) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map_or_else(
        || "keys.toml".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    (dir, name)
}

/// Back up the old text (if any), atomically replace the file with `new_text`, prune backups.
fn commit(
    keys_path: &Path,
    old: Option<&str>,
    new_text: &str,
    now: SystemTime,
) -> Result<(), KeysError> {
    let (dir, name) = split(keys_path);
    if let Some(old) = old {
        let mut ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        loop {
            let b = dir.join(format!("{name}.bak.{}", stamp(ms)));
            match OpenOptions::new().write(true).create_new(true).open(&b) {
                Ok(mut f) => {
                    f.write_all(old.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io_err(&b, "write backup"))?;
                    break;
                }
                // Two changes within the same millisecond: take the next free stamp.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ms += 1,
                Err(e) => return Err(io_err(&b, "create backup")(e)),
            }
        }
    }
    write_atomic(keys_path, &dir, &name, new_text.as_bytes())?;
    for stale in backups(keys_path).into_iter().skip(MAX_BACKUPS) {
        fs::remove_file(&stale).map_err(io_err(&stale, "remove old backup"))?;
    }
    Ok(())
}

/// Write to a temporary file in the same directory, fsync, rename over, fsync the directory.
fn write_atomic(path: &Path, dir: &Path, name: &str, content: &[u8]) -> Result<(), KeysError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = dir.join(format!(".{name}.tmp.{}.{nanos}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp, "create temporary file"))?;
        f.write_all(content)
            .and_then(|()| f.sync_all())
            .map_err(io_err(&tmp, "write temporary file"))?;
        if let Ok(meta) = fs::metadata(path) {
            fs::set_permissions(&tmp, meta.permissions())
                .map_err(io_err(&tmp, "set permissions of temporary file"))?;
        }
        fs::rename(&tmp, path).map_err(io_err(path, "replace"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "sync directory"))
}

/// Render the keys file: the original top comment block (or a default one), then `[keys]`.
fn render(old: Option<&str>, keys: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    match old {
        Some(text) => {
            for line in text.lines() {
                let t = line.trim_start();
                if t.is_empty() || t.starts_with('#') {
                    out.push_str(line);
                    out.push('\n');
                } else {
                    break;
                }
            }
            // Keep one blank line between the header and the table.
            while out.ends_with("\n\n") {
                out.pop();
            }
        }
        None => out.push_str(NEW_FILE_HEADER),
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    if out.trim().is_empty() {
        out.clear();
    }
    out.push_str("[keys]\n");
    for (k, t) in keys {
        let _ = writeln!(out, "{} = {}", toml_string(k), toml_string(t));
    }
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `20261123T101502.123Z` (UTC) for milliseconds since the Unix epoch.
fn stamp(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let sod = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:03}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        ms % 1000
    )
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 => c == b'T',
            15 => c == b'.',
            19 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (also used by the
/// access log's timestamps).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar whose years start on March 1st, in 400-year eras of 146097 days,
    // so the leap day is the last day of a year.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of (March-based) year, 0..=365
    let mp = (5 * doy + 2) / 153; // March-based month, 0..=11
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load;
    use crate::config::testutil::{SERVERS, TempDir};
    use std::time::Duration;

    fn tiers() -> Vec<String> {
        ["premium", "standard", "basic", "unknown"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn t0() -> SystemTime {
        // 2026-11-23T10:15:02.123Z
        UNIX_EPOCH + Duration::from_millis(1_795_428_902_123)
    }

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(0), "19700101T000000.000Z");
        assert_eq!(stamp(1_795_428_902_123), "20261123T101502.123Z");
        // 2000-02-29 (leap day of a century divisible by 400) and 2100-03-01.
        assert_eq!(stamp(951_782_400_000), "20000229T000000.000Z");
        assert_eq!(stamp(4_107_542_400_000), "21000301T000000.000Z");
        assert_eq!(stamp(1_704_067_199_999), "20231231T235959.999Z");
        assert!(is_stamp("20261123T101502.123Z"));
        assert!(!is_stamp("20261123T101502.123"));
        assert!(!is_stamp("2026112xT101502.123Z"));
    }

    #[test]
    fn add_creates_file_then_refuses_duplicates() {
        let dir = TempDir::new("add");
        let kp = dir.0.join("keys.toml");
        add_at(&kp, "KEYB", "basic", &tiers(), t0()).unwrap();
        add_at(&kp, "KEYA", "premium", &tiers(), t0()).unwrap();
        assert_eq!(
            list(&kp).unwrap(),
            vec![
                ("KEYA".to_string(), "premium".to_string()),
                ("KEYB".to_string(), "basic".to_string())
            ]
        );
        // Sorted output with a header, in the [keys] format.
        let text = fs::read_to_string(&kp).unwrap();
        assert!(text.starts_with("# tollgate keys file"), "{text}");
        assert!(
            text.ends_with("\n[keys]\n\"KEYA\" = \"premium\"\n\"KEYB\" = \"basic\"\n"),
            "{text}"
        );
        let e = add_at(&kp, "KEYA", "basic", &tiers(), t0()).unwrap_err();
        assert!(
            matches!(&e, KeysError::Exists { key, tier, .. } if key == "KEYA" && tier == "premium")
        );
        assert!(e.to_string().starts_with(&kp.display().to_string()), "{e}");
        // Unknown tier and malformed keys are refused before touching the file.
        let before = fs::read_to_string(&kp).unwrap();
        let e = add_at(&kp, "KEYC", "gold", &tiers(), t0()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: key \"KEYC\": unknown tier \"gold\" (tiers: premium, standard, basic, unknown)",
                kp.display()
            )
        );
        let e = add_at(&kp, "KEY C", "basic", &tiers(), t0()).unwrap_err();
        assert!(
            matches!(&e, KeysError::BadKey { key, .. } if key == "KEY C"),
            "{e}"
        );
        assert!(add_at(&kp, &"K".repeat(256), "basic", &tiers(), t0()).is_err());
        assert_eq!(fs::read_to_string(&kp).unwrap(), before);
        // One backup per change that had a previous file (the first add created it).
        assert_eq!(backups(&kp).len(), 1);
    }

    #[test]
    fn changes_are_atomic_and_backed_up() {
        let dir = TempDir::new("atomic");
        let kp = dir.0.join("keys.toml");
        let original = "# Production keys.\n# Owner: storage team.\n\n[keys]\n# a comment that is not kept\n\"AKIA2\" = \"basic\"\n\"AKIA1\" = \"premium\"\n";
        fs::write(&kp, original).unwrap();

        set_at(&kp, "AKIA2", "standard", &tiers(), t0()).unwrap();
        let after_set = fs::read_to_string(&kp).unwrap();
        assert_eq!(
            after_set,
            "# Production keys.\n# Owner: storage team.\n\n[keys]\n\"AKIA1\" = \"premium\"\n\"AKIA2\" = \"standard\"\n"
        );
        let b = backups(&kp);
        assert_eq!(b, vec![dir.0.join("keys.toml.bak.20261123T101502.123Z")]);
        assert_eq!(fs::read_to_string(&b[0]).unwrap(), original);

        // Same millisecond: the next backup takes the next free stamp.
        let old_tier = remove_at(&kp, "AKIA1", t0()).unwrap();
        assert_eq!(old_tier, "premium");
        let b = backups(&kp);
        assert_eq!(b[0], dir.0.join("keys.toml.bak.20261123T101502.124Z"));
        assert_eq!(fs::read_to_string(&b[0]).unwrap(), after_set);
        assert_eq!(
            list(&kp).unwrap(),
            vec![("AKIA2".into(), "standard".into())]
        );

        // Setting the tier a key already has writes nothing.
        assert_eq!(
            set_at(&kp, "AKIA2", "standard", &tiers(), t0()).unwrap(),
            Some("standard".to_string())
        );
        assert_eq!(backups(&kp).len(), 2);
        // set adds new keys too.
        assert_eq!(set_at(&kp, "NEW", "basic", &tiers(), t0()).unwrap(), None);
        assert_eq!(list(&kp).unwrap().len(), 2);

        let e = remove_at(&kp, "AKIA1", t0()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: key \"AKIA1\" not found", kp.display())
        );

        // No temporary file is left behind: only the file and its backups.
        assert_eq!(
            dir.files(),
            [
                "keys.toml",
                "keys.toml.bak.20261123T101502.123Z",
                "keys.toml.bak.20261123T101502.124Z",
                "keys.toml.bak.20261123T101502.125Z",
            ]
        );
    }

    #[test]
    fn restore_validates_and_backs_up_current() {
        let dir = TempDir::new("restore");
        let kp = dir.0.join("keys.toml");
        fs::write(&kp, "[keys]\n\"A\" = \"basic\"\n").unwrap();
        add_at(&kp, "B", "premium", &tiers(), t0()).unwrap();
        let with_b = fs::read_to_string(&kp).unwrap();
        let first = backups(&kp)[0].clone();
        restore_at(&kp, &first, t0() + Duration::from_secs(1)).unwrap();
        assert_eq!(
            fs::read_to_string(&kp).unwrap(),
            "[keys]\n\"A\" = \"basic\"\n"
        );
        let b = backups(&kp);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0], dir.0.join("keys.toml.bak.20261123T101503.123Z"));
        assert_eq!(fs::read_to_string(&b[0]).unwrap(), with_b);

        // A backup that does not parse is refused, and the file is left alone.
        let bad = dir.0.join("keys.toml.bak.20261123T101504.000Z");
        fs::write(&bad, "[keys]\n\"A\" = \"basic\"\n\"bad key\" = \"basic\"\n").unwrap();
        let e = restore_at(&kp, &bad, t0() + Duration::from_secs(2)).unwrap_err();
        assert!(matches!(e, KeysError::Invalid(_)));
        assert!(
            e.to_string().starts_with(&format!(
                "{}:3: keys.\"bad key\": malformed key",
                bad.display()
            )),
            "{e}"
        );
        assert_eq!(
            fs::read_to_string(&kp).unwrap(),
            "[keys]\n\"A\" = \"basic\"\n"
        );
        assert!(matches!(
            restore_at(&kp, &dir.0.join("nope"), t0()),
            Err(KeysError::Io { .. })
        ));
    }

    #[test]
    fn only_the_newest_backups_are_kept() {
        let dir = TempDir::new("prune");
        let kp = dir.0.join("keys.toml");
        fs::write(&kp, "[keys]\n").unwrap();
        // An unrelated file with a similar name is never touched.
        fs::write(dir.0.join("keys.toml.bak.manual"), "x").unwrap();
        for i in 0..(MAX_BACKUPS + 5) {
            let now = t0() + Duration::from_secs(i as u64);
            add_at(&kp, &format!("K{i:03}"), "basic", &tiers(), now).unwrap();
        }
        let b = backups(&kp);
        assert_eq!(b.len(), MAX_BACKUPS);
        // Newest first; the newest backup holds the state before the last add.
        assert_eq!(
            b[0],
            dir.0.join(format!(
                "keys.toml.bak.{}",
                stamp(1_795_428_902_123 + 1000 * (MAX_BACKUPS as u64 + 4))
            ))
        );
        assert!(!fs::read_to_string(&b[0]).unwrap().contains("K054"));
        assert!(fs::read_to_string(&b[0]).unwrap().contains("K053"));
        // The oldest five are gone.
        assert!(!dir.0.join("keys.toml.bak.20261123T101502.123Z").exists());
        assert!(dir.0.join("keys.toml.bak.manual").exists());
        assert_eq!(list(&kp).unwrap().len(), MAX_BACKUPS + 5);
    }

    #[test]
    fn odd_characters_round_trip() {
        let dir = TempDir::new("escape");
        let kp = dir.0.join("keys.toml");
        let key = r#"a"b\c/+=~"#;
        add_at(&kp, key, "basic", &tiers(), t0()).unwrap();
        assert_eq!(
            list(&kp).unwrap(),
            vec![(key.to_string(), "basic".to_string())]
        );
    }

    #[test]
    fn list_reports_missing_and_invalid_files() {
        let dir = TempDir::new("list");
        let kp = dir.0.join("keys.toml");
        let e = list(&kp).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot read: ", kp.display())),
            "{e}"
        );
        fs::write(&kp, "[keys]\n\"A\" = \"basic\"\nB = 3\n").unwrap();
        let e = list(&kp).unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3: keys.B: ", kp.display())),
            "{e}"
        );
        // A file that does not parse is never overwritten by a change.
        assert!(add_at(&kp, "C", "basic", &tiers(), t0()).is_err());
        assert!(backups(&kp).is_empty());
    }

    #[test]
    fn keys_file_is_loaded_and_checked() {
        let dir = TempDir::new("keys");
        let cfg = format!("{SERVERS}[limits]\nkeys_file = \"keys.toml\"\nmax_key_len = 20\n");
        let path = dir.write("t.toml", &cfg);
        dir.write(
            "keys.toml",
            "# comment\n[keys]\n\"AKIAPREMIUM0000001\" = \"premium\"\n\"GK0123456789abcdef\" = \"basic\"\n",
        );
        let c = load(&path).unwrap();
        assert_eq!(c.limits.keys_file, Some(dir.0.join("keys.toml")));
        assert_eq!(c.limits.keys.len(), 2);
        assert_eq!(c.limits.tier_of_key(b"AKIAPREMIUM0000001"), (0, true));
        assert_eq!(c.limits.tier_of_key(b"GK0123456789abcdef"), (2, true));
        assert_eq!(c.limits.tier_of_key(b"other"), (3, false));

        // Unknown tier: the error names the keys file, its line and the key.
        dir.write(
            "keys.toml",
            "[keys]\n\"AKIA1\" = \"basic\"\n\"AKIA2\" = \"gold\"\n",
        );
        let e = load(&path).unwrap_err();
        let kf = dir.0.join("keys.toml");
        assert_eq!(e.file(), Some(kf.as_path()));
        assert_eq!((e.line(), e.field()), (Some(3), Some("keys.AKIA2")), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "{}:3: keys.AKIA2: unknown tier \"gold\" (tiers: basic, premium, standard, unknown)",
                kf.display()
            )
        );

        // Malformed keys: non-printable / space, and longer than max_key_len (20).
        dir.write(
            "keys.toml",
            "[keys]\n\"AKIA1\" = \"basic\"\n\n\"AK IA\" = \"basic\"\n",
        );
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(4), Some("keys.\"AK IA\"")),
            "{e}"
        );
        assert!(e.to_string().contains("malformed key"), "{e}");
        dir.write(
            "keys.toml",
            "[keys]\n\"AKIA123456789012345678\" = \"basic\"\n",
        );
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(2), Some("keys.AKIA123456789012345678")),
            "{e}"
        );
        assert!(e.to_string().contains("longer than max_key_len 20"), "{e}");
        // ... but load_keys alone accepts up to 255 bytes.
        let idx = c.limits.tier_index.clone();
        assert_eq!(load_keys(&kf, &idx).unwrap().len(), 1);

        // Unknown fields and wrong types in the keys file.
        dir.write("keys.toml", "[keys]\n\"A\" = \"basic\"\n[other]\n");
        let e = load(&path).unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(3), Some("other")), "{e}");
        dir.write("keys.toml", "[keys]\n\"A\" = 1\n");
        let e = load(&path).unwrap_err();
        assert_eq!((e.line(), e.field()), (Some(2), Some("keys.A")), "{e}");

        // A missing keys file is reported at limits.keys_file in the main file.
        std::fs::remove_file(&kf).unwrap();
        let e = load(&path).unwrap_err();
        assert_eq!(e.file(), Some(path.as_path()));
        assert_eq!(
            (e.line(), e.field()),
            (Some(4), Some("limits.keys_file")),
            "{e}"
        );
        assert!(matches!(
            load_keys(&kf, &idx),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn check_key_rules() {
        assert!(check_key("GK0123", 10).is_ok());
        assert!(check_key("!~", 2).is_ok());
        assert!(check_key("", 10).is_err());
        assert!(check_key("a b", 10).is_err());
        assert!(check_key("a\tb", 10).is_err());
        assert!(check_key("é", 10).is_err());
        assert!(check_key("abc", 2).is_err());
    }
}
