//! Raw config (`file`) → validated `Config`, with errors that name file, line and field.
//!
//! Owns: loading the main config file and the keys file, applying command-line `Overrides`
//! before validation, every value check, defaults, relative path resolution, upstream name
//! resolution, and the `tollgate check` summary. Errors display as `FILE:LINE: FIELD: message`;
//! the line comes from the spanned TOML tree (`toml::de::DeTable`), which maps a serde error
//! span to a dotted field path and a field path back to a line.
//! Must not touch: sockets (other than name resolution), the running proxy, the keys CLI
//! (`keys` owns writing the keys file; it reuses the key checks here).

use super::file::{self, RawConfig, RawDuration, RawKeysFile, RawTier, RawWindow};
use super::{
    AccessLogConfig, AdminConfig, Balance, CertConfig, Config, ExpectDenied, HeaderGroups,
    HealthCheckConfig, HttpConfig, LimitsConfig, Method, MethodSet, TierConfig, TlsListenConfig,
    UnlistedKeys, UpstreamConfig, UpstreamServer, UpstreamTlsConfig, WindowConfig,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A configuration error. `Display` gives `FILE:LINE: FIELD: message` for errors in a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read at all.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A syntax error or an invalid value in a file (main config or keys file).
    #[error("{}:{line}: {field}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        /// 1-based line of the offending field (or of its nearest enclosing table if the
        /// field is absent, 1 if there is none).
        line: usize,
        /// Dotted path such as `upstream.servers[0].addr`; `syntax error` for TOML syntax.
        field: String,
        message: String,
    },
    /// An invalid value given on the command line (`--upstream`, `--admin`, ...).
    #[error("{flag}: {field}: {message}")]
    Override {
        flag: &'static str,
        field: String,
        message: String,
    },
}

impl ConfigError {
    /// The line of the error, if it is located in a file.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Invalid { line, .. } => Some(*line),
            _ => None,
        }
    }
    /// The dotted field path, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } | ConfigError::Override { field, .. } => Some(field),
            ConfigError::Read { .. } => None,
        }
    }
    /// The file the error is in, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            ConfigError::Invalid { file, .. } | ConfigError::Read { file, .. } => Some(file),
            ConfigError::Override { .. } => None,
        }
    }
}

/// Command-line values that replace the file's values before validation.
/// Empty vectors / `None` leave the file's value in place.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`: replaces `listen`.
    pub listen: Vec<SocketAddr>,
    /// `--tls-listen`: replaces `tls.listen` (needs a `[tls]` table with certificates).
    pub tls_listen: Vec<SocketAddr>,
    /// `--upstream HOST:PORT`: replaces `upstream.servers`.
    pub upstream: Vec<String>,
    /// `--workers`: replaces `workers`.
    pub workers: Option<usize>,
    /// `--admin ADDR|off`: replaces `admin.listen`.
    pub admin: Option<String>,
}

/// Load and validate a config file (and the keys file it names).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &Overrides::default())
}

/// Load a config file, apply command-line overrides, then validate.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    load_str_with(&text, path, overrides)
}

/// Validate config text as if read from `path` (used for messages and to resolve relative
/// paths; the keys file is read from disk relative to it).
pub fn load_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    load_str_with(text, path, &Overrides::default())
}

/// `load_str` with command-line overrides.
pub fn load_str_with(
    text: &str,
    path: &Path,
    overrides: &Overrides,
) -> Result<Config, ConfigError> {
    let doc = Doc::parse(text, path)?;
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(doc.root.clone()))
        .map_err(|e| doc.serde_error(&e))?;
    let mut v = Validator {
        doc,
        overridden: Vec::new(),
    };
    let raw = v.apply_overrides(raw, overrides);
    v.build(raw, path)
}

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
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    let doc = Doc::parse(&text, path)?;
    let raw = RawConfig::deserialize(toml::de::Deserializer::from(doc.root.clone()))
        .map_err(|e| doc.serde_error(&e))?;
    let v = Validator {
        doc,
        overridden: Vec::new(),
    };
    let base = path.parent().unwrap_or(Path::new(""));
    Ok(KeysSetup {
        keys_file: Validator::keys_file(&raw, base),
        tiers: v.tiers(&raw)?.into_iter().map(|t| t.name).collect(),
        max_key_len: v.max_key_len(&raw)?,
    })
}

/// Load a keys file: key → tier index. Keys are checked against the largest accepted
/// `max_key_len` (255); use `load_keys_checked` to apply a configured one.
pub fn load_keys(
    path: &Path,
    tier_index: &HashMap<String, usize>,
) -> Result<HashMap<Box<[u8]>, usize>, ConfigError> {
    load_keys_checked(path, tier_index, file::MAX_KEY_LEN_CAP)
}

/// `load_keys` with the configured `limits.max_key_len` (a longer key could never match).
pub fn load_keys_checked(
    path: &Path,
    tier_index: &HashMap<String, usize>,
    max_key_len: usize,
) -> Result<HashMap<Box<[u8]>, usize>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })?;
    load_keys_str(&text, path, tier_index, max_key_len)
}

/// `load_keys_checked` on text already read (the path names the file in messages).
pub fn load_keys_str(
    text: &str,
    path: &Path,
    tier_index: &HashMap<String, usize>,
    max_key_len: usize,
) -> Result<HashMap<Box<[u8]>, usize>, ConfigError> {
    let (doc, raw) = parse_keys_doc(text, path)?;
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
pub fn parse_keys_text(
    text: &str,
    path: &Path,
) -> Result<std::collections::BTreeMap<String, String>, ConfigError> {
    let (doc, raw) = parse_keys_doc(text, path)?;
    for key in raw.keys.keys() {
        check_key(key, file::MAX_KEY_LEN_CAP)
            .map_err(|m| doc.error_at(&[Seg::key("keys"), Seg::key(key)], m))?;
    }
    Ok(raw.keys)
}

fn parse_keys_doc<'a>(text: &'a str, path: &Path) -> Result<(Doc<'a>, RawKeysFile), ConfigError> {
    let doc = Doc::parse(text, path)?;
    let raw = RawKeysFile::deserialize(toml::de::Deserializer::from(doc.root.clone()))
        .map_err(|e| doc.serde_error(&e))?;
    Ok((doc, raw))
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

fn unknown_tier_message<V>(tier: &str, tier_index: &HashMap<String, V>) -> String {
    let mut names: Vec<&str> = tier_index.keys().map(String::as_str).collect();
    names.sort_unstable();
    format!("unknown tier {tier:?} (tiers: {})", names.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Field paths and the spanned document.

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    fn key(k: &str) -> Seg {
        Seg::Key(k.to_string())
    }
}

impl From<&str> for Seg {
    fn from(k: &str) -> Seg {
        Seg::key(k)
    }
}
impl From<&String> for Seg {
    fn from(k: &String) -> Seg {
        Seg::key(k)
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Seg {
        Seg::Index(i)
    }
}

macro_rules! p {
    ($($s:expr),* $(,)?) => { [$(Seg::from($s)),*] };
}

fn render_path(path: &[Seg]) -> String {
    if path.is_empty() {
        return "<top level>".to_string();
    }
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                let bare = !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if bare {
                    out.push_str(k);
                } else {
                    let _ = write!(out, "{k:?}");
                }
            }
            Seg::Index(i) => {
                let _ = write!(out, "[{i}]");
            }
        }
    }
    out
}

/// A parsed document with spans, used to translate between spans, lines and field paths.
struct Doc<'a> {
    text: &'a str,
    file: PathBuf,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Doc<'a> {
    fn parse(text: &'a str, file: &Path) -> Result<Doc<'a>, ConfigError> {
        match DeTable::parse(text) {
            Ok(root) => Ok(Doc {
                text,
                file: file.to_path_buf(),
                root,
            }),
            Err(e) => {
                let start = e.span().map_or(0, |s| s.start);
                let mut message = e.message().trim_end().to_string();
                if let Some(span) = e.span() {
                    let snippet = text.get(span.clone()).unwrap_or("").trim();
                    if !snippet.is_empty() && snippet.len() <= 60 && !snippet.contains('\n') {
                        let _ = write!(message, " (at `{snippet}`)");
                    }
                }
                Err(ConfigError::Invalid {
                    file: file.to_path_buf(),
                    line: line_of(text, start),
                    field: "syntax error".to_string(),
                    message,
                })
            }
        }
    }

    /// Every key/value node with its path, key span and value span (array elements use
    /// their own span for both).
    fn nodes(&self) -> Vec<(Vec<Seg>, Range<usize>, Range<usize>)> {
        fn walk(
            v: &DeValue<'_>,
            path: &mut Vec<Seg>,
            out: &mut Vec<(Vec<Seg>, Range<usize>, Range<usize>)>,
        ) {
            match v {
                DeValue::Table(t) => {
                    for (k, val) in t.iter() {
                        path.push(Seg::Key(k.get_ref().to_string()));
                        out.push((path.clone(), k.span(), val.span()));
                        walk(val.get_ref(), path, out);
                        path.pop();
                    }
                }
                DeValue::Array(a) => {
                    for (i, el) in a.iter().enumerate() {
                        path.push(Seg::Index(i));
                        out.push((path.clone(), el.span(), el.span()));
                        walk(el.get_ref(), path, out);
                        path.pop();
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        let mut path = Vec::new();
        for (k, val) in self.root.get_ref().iter() {
            path.push(Seg::Key(k.get_ref().to_string()));
            out.push((path.clone(), k.span(), val.span()));
            walk(val.get_ref(), &mut path, &mut out);
            path.pop();
        }
        out
    }

    /// The field path of the node an error span points at.
    fn path_of_span(&self, span: &Range<usize>) -> Vec<Seg> {
        let nodes = self.nodes();
        let exact = nodes
            .iter()
            .filter(|(_, k, v)| k == span || v == span)
            .max_by_key(|(p, _, _)| p.len());
        if let Some((p, _, _)) = exact {
            return p.clone();
        }
        nodes
            .iter()
            .filter(|(_, k, v)| {
                (k.start <= span.start && span.start < k.end.max(k.start + 1))
                    || (v.start <= span.start && span.start < v.end.max(v.start + 1))
            })
            .min_by_key(|(p, k, v)| {
                let len = if k.start <= span.start && span.start < k.end {
                    k.len()
                } else {
                    v.len()
                };
                (len, usize::MAX - p.len())
            })
            .map(|(p, _, _)| p.clone())
            .unwrap_or_default()
    }

    /// The span of the value at `path`, or of its deepest present ancestor.
    fn span_of_path(&self, path: &[Seg]) -> Option<Range<usize>> {
        fn find<'t, 'i>(t: &'t DeTable<'i>, k: &str) -> Option<&'t Spanned<DeValue<'i>>> {
            t.iter().find(|(kk, _)| kk.get_ref() == k).map(|(_, v)| v)
        }
        let mut found = None;
        let mut cur: Option<&DeValue<'_>> = None; // None = the root table
        for seg in path {
            let next = match (seg, cur) {
                (Seg::Key(k), None) => find(self.root.get_ref(), k),
                (Seg::Key(k), Some(DeValue::Table(t))) => find(t, k),
                (Seg::Index(i), Some(DeValue::Array(a))) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            found = Some(next.span());
            cur = Some(next.get_ref());
        }
        found
    }

    fn line_of_path(&self, path: &[Seg]) -> usize {
        self.span_of_path(path)
            .map_or(1, |s| line_of(self.text, s.start))
    }

    fn error_at(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.clone(),
            line: self.line_of_path(path),
            field: render_path(path),
            message: message.into(),
        }
    }

    fn serde_error(&self, e: &toml::de::Error) -> ConfigError {
        let (line, field) = match e.span() {
            Some(span) => (
                line_of(self.text, span.start),
                render_path(&self.path_of_span(&span)),
            ),
            None => (1, render_path(&[])),
        };
        ConfigError::Invalid {
            file: self.file.clone(),
            line,
            field,
            message: e.message().trim_end().to_string(),
        }
    }

    /// Names of the subtables of `[tiers]` in the order they appear in the file.
    fn tier_order(&self) -> Vec<String> {
        let Some((_, tiers)) = self
            .root
            .get_ref()
            .iter()
            .find(|(k, _)| k.get_ref() == "tiers")
        else {
            return Vec::new();
        };
        let DeValue::Table(t) = tiers.get_ref() else {
            return Vec::new();
        };
        let mut names: Vec<(usize, String)> = t
            .iter()
            .map(|(k, _)| (k.span().start, k.get_ref().to_string()))
            .collect();
        names.sort();
        names.into_iter().map(|(_, n)| n).collect()
    }
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

// ---------------------------------------------------------------------------------------------
// Validation.

struct Validator<'a> {
    doc: Doc<'a>,
    /// Field-path prefixes whose values came from the command line, with the flag.
    overridden: Vec<(Vec<Seg>, &'static str)>,
}

type R<T> = Result<T, ConfigError>;

impl Validator<'_> {
    fn err(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        if let Some((_, flag)) = self
            .overridden
            .iter()
            .find(|(prefix, _)| path.starts_with(prefix))
        {
            return ConfigError::Override {
                flag,
                field: render_path(path),
                message: message.into(),
            };
        }
        self.doc.error_at(path, message)
    }

    fn apply_overrides(&mut self, mut raw: RawConfig, ov: &Overrides) -> RawConfig {
        if !ov.listen.is_empty() {
            raw.listen = Some(ov.listen.iter().map(ToString::to_string).collect());
            self.overridden.push((p!["listen"].to_vec(), "--listen"));
        }
        if !ov.tls_listen.is_empty() {
            let tls = raw.tls.get_or_insert_with(|| {
                // No [tls] table in the file: everything about TLS comes from the flag.
                self.overridden.push((p!["tls"].to_vec(), "--tls-listen"));
                file::RawTls::default()
            });
            tls.listen = Some(ov.tls_listen.iter().map(ToString::to_string).collect());
            self.overridden
                .push((p!["tls", "listen"].to_vec(), "--tls-listen"));
        }
        if !ov.upstream.is_empty() {
            raw.upstream.servers = ov
                .upstream
                .iter()
                .map(|a| file::RawServer { addr: a.clone() })
                .collect();
            self.overridden
                .push((p!["upstream", "servers"].to_vec(), "--upstream"));
        }
        if let Some(w) = ov.workers {
            raw.workers = Some(w as u64);
            self.overridden.push((p!["workers"].to_vec(), "--workers"));
        }
        if let Some(a) = &ov.admin {
            raw.admin.listen = Some(a.clone());
            self.overridden
                .push((p!["admin", "listen"].to_vec(), "--admin"));
        }
        raw
    }

    fn dur(
        &self,
        v: Option<RawDuration>,
        default: Duration,
        path: &[Seg],
        allow_zero: bool,
    ) -> R<Duration> {
        let d = v.map_or(default, |d| d.0);
        if !allow_zero && d.is_zero() {
            return Err(self.err(path, "must be longer than 0"));
        }
        Ok(d)
    }

    fn int(
        &self,
        v: Option<u64>,
        default: u64,
        path: &[Seg],
        range: std::ops::RangeInclusive<u64>,
    ) -> R<u64> {
        let n = v.unwrap_or(default);
        if !range.contains(&n) {
            let msg = if *range.end() == u64::MAX {
                format!("{n} is out of range (must be at least {})", range.start())
            } else {
                format!(
                    "{n} is out of range (must be {}..={})",
                    range.start(),
                    range.end()
                )
            };
            return Err(self.err(path, msg));
        }
        Ok(n)
    }

    fn socket_addr(&self, s: &str, path: &[Seg]) -> R<SocketAddr> {
        s.parse::<SocketAddr>().map_err(|_| {
            self.err(
                path,
                format!("invalid address {s:?} (expected IP:PORT, e.g. \"0.0.0.0:8080\")"),
            )
        })
    }

    fn listeners(&self, list: &[String], path: &[Seg]) -> R<Vec<SocketAddr>> {
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let mut at = path.to_vec();
            at.push(Seg::Index(i));
            out.push(self.socket_addr(s, &at)?);
        }
        Ok(out)
    }

    fn methods(&self, list: &[String], path: &[Seg]) -> R<MethodSet> {
        let mut set = MethodSet::default();
        for (i, m) in list.iter().enumerate() {
            let Some(method) = Method::from_bytes(m.as_bytes()) else {
                let mut at = path.to_vec();
                at.push(Seg::Index(i));
                let all: Vec<&str> = Method::ALL.iter().map(|m| m.as_str()).collect();
                return Err(self.err(
                    &at,
                    format!("unknown method {m:?} (expected one of {})", all.join(" ")),
                ));
            };
            set.insert(method);
        }
        Ok(set)
    }

    fn resolve_upstream(&self, s: &str, path: &[Seg]) -> R<SocketAddr> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(a);
        }
        let invalid = || {
            self.err(
                path,
                format!("invalid address {s:?} (expected HOST:PORT, e.g. \"127.0.0.1:9000\")"),
            )
        };
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err(invalid());
        };
        if host.is_empty() || port.parse::<u16>().is_err() || host.contains(char::is_whitespace) {
            return Err(invalid());
        }
        let addrs: Vec<SocketAddr> = s
            .to_socket_addrs()
            .map_err(|e| self.err(path, format!("cannot resolve {s:?}: {e}")))?
            .collect();
        // Prefer IPv4: a store listening on 127.0.0.1 is more common than one on ::1.
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| self.err(path, format!("cannot resolve {s:?}: no addresses")))
    }

    fn existing_file(&self, base: &Path, s: &str, path: &[Seg]) -> R<PathBuf> {
        if s.is_empty() {
            return Err(self.err(path, "empty file name"));
        }
        let p = resolve_path(base, s);
        if !p.is_file() {
            return Err(self.err(
                path,
                format!("file not found: {:?}", p.display().to_string()),
            ));
        }
        Ok(p)
    }

    fn build(&self, raw: RawConfig, source: &Path) -> R<Config> {
        let base = source.parent().unwrap_or(Path::new(""));

        // ----- top level -----
        let workers = match raw.workers {
            Some(w) => self.int(Some(w), 1, &p!["workers"], 1..=4096)? as usize,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let pin_workers = raw.pin_workers.unwrap_or(file::DEFAULT_PIN_WORKERS);
        let listen = match &raw.listen {
            Some(l) => self.listeners(l, &p!["listen"])?,
            None => vec![file::DEFAULT_LISTEN.parse().expect("valid default")],
        };
        let shutdown_grace = self.dur(
            raw.shutdown_grace,
            file::DEFAULT_SHUTDOWN_GRACE,
            &p!["shutdown_grace"],
            true,
        )?;
        let reload_poll_interval = self.dur(
            raw.reload_poll_interval,
            file::DEFAULT_RELOAD_POLL_INTERVAL,
            &p!["reload_poll_interval"],
            true,
        )?;

        // ----- [tls] -----
        let tls = match &raw.tls {
            None => None,
            Some(t) => {
                let tls_listen = match &t.listen {
                    Some(l) => self.listeners(l, &p!["tls", "listen"])?,
                    None => vec![file::DEFAULT_TLS_LISTEN.parse().expect("valid default")],
                };
                let reload_interval = self.dur(
                    t.reload_interval,
                    file::DEFAULT_TLS_RELOAD_INTERVAL,
                    &p!["tls", "reload_interval"],
                    true,
                )?;
                let mut certs = Vec::with_capacity(t.certs.len());
                for (i, c) in t.certs.iter().enumerate() {
                    let cert_file =
                        self.existing_file(base, &c.cert, &p!["tls", "certs", i, "cert"])?;
                    let key_file =
                        self.existing_file(base, &c.key, &p!["tls", "certs", i, "key"])?;
                    for (j, n) in c.server_names.iter().enumerate() {
                        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic()) {
                            return Err(self.err(
                                &p!["tls", "certs", i, "server_names", j],
                                format!("invalid server name {n:?}"),
                            ));
                        }
                    }
                    certs.push(CertConfig {
                        cert_file,
                        key_file,
                        server_names: c.server_names.clone(),
                    });
                }
                if tls_listen.is_empty() {
                    None
                } else if certs.is_empty() {
                    return Err(self.err(
                        &p!["tls", "certs"],
                        "HTTPS listeners need at least one [[tls.certs]] entry",
                    ));
                } else {
                    Some(TlsListenConfig {
                        listen: tls_listen,
                        certs,
                        reload_interval,
                    })
                }
            }
        };
        if listen.is_empty() && tls.is_none() {
            return Err(self.err(
                &p!["listen"],
                "no listeners: give at least one address in listen or tls.listen",
            ));
        }

        // ----- [admin] -----
        let admin_listen_raw = raw
            .admin
            .listen
            .as_deref()
            .unwrap_or(file::DEFAULT_ADMIN_LISTEN);
        let admin_listen = if admin_listen_raw == "off" {
            None
        } else {
            Some(self.socket_addr(admin_listen_raw, &p!["admin", "listen"])?)
        };
        let token = raw
            .admin
            .token
            .clone()
            .unwrap_or_else(|| file::DEFAULT_ADMIN_TOKEN.to_string());
        if token.bytes().any(|b| !b.is_ascii_graphic()) {
            return Err(self.err(
                &p!["admin", "token"],
                "the token must be printable ASCII without spaces",
            ));
        }
        let admin = AdminConfig {
            listen: admin_listen,
            token: (!token.is_empty()).then_some(token),
        };

        // One socket address may be bound by only one listener.
        let mut seen: Vec<(SocketAddr, Vec<Seg>)> = Vec::new();
        let tls_listen: &[SocketAddr] = tls.as_ref().map_or(&[], |t| &t.listen);
        let all = listen
            .iter()
            .enumerate()
            .map(|(i, a)| (*a, p!["listen", i].to_vec()))
            .chain(
                tls_listen
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (*a, p!["tls", "listen", i].to_vec())),
            )
            .chain(admin.listen.map(|a| (a, p!["admin", "listen"].to_vec())));
        for (addr, at) in all {
            if let Some((_, first)) = seen.iter().find(|(a, _)| *a == addr) {
                return Err(self.err(
                    &at,
                    format!("address {addr} is already used by {}", render_path(first)),
                ));
            }
            seen.push((addr, at));
        }

        // ----- [http] -----
        let h = &raw.http;
        let http = HttpConfig {
            max_head_bytes: self.int(
                h.max_head_bytes,
                file::DEFAULT_MAX_HEAD_BYTES,
                &p!["http", "max_head_bytes"],
                1024..=1 << 20,
            )? as usize,
            max_headers: self.int(
                h.max_headers,
                file::DEFAULT_MAX_HEADERS,
                &p!["http", "max_headers"],
                1..=1024,
            )? as usize,
            client_idle_timeout: self.dur(
                h.client_idle_timeout,
                file::DEFAULT_CLIENT_IDLE_TIMEOUT,
                &p!["http", "client_idle_timeout"],
                false,
            )?,
            client_head_timeout: self.dur(
                h.client_head_timeout,
                file::DEFAULT_CLIENT_HEAD_TIMEOUT,
                &p!["http", "client_head_timeout"],
                false,
            )?,
            x_forwarded_for: h.x_forwarded_for.unwrap_or(file::DEFAULT_X_FORWARDED_FOR),
            max_requests_per_connection: h
                .max_requests_per_connection
                .unwrap_or(file::DEFAULT_MAX_REQUESTS_PER_CONNECTION),
        };

        // ----- [upstream] -----
        let upstream = self.upstream(&raw, base)?;

        // ----- [access_log] -----
        let al = &raw.access_log;
        let access_log = AccessLogConfig {
            path: match al.path.as_deref() {
                None | Some("") => None,
                Some(p) => Some(resolve_path(base, p)),
            },
            buffer_bytes: self.int(
                al.buffer_bytes,
                file::DEFAULT_ACCESS_LOG_BUFFER,
                &p!["access_log", "buffer_bytes"],
                4096..=(16 << 20),
            )? as usize,
            flush_interval: self.dur(
                al.flush_interval,
                file::DEFAULT_ACCESS_LOG_FLUSH,
                &p!["access_log", "flush_interval"],
                false,
            )?,
            queue: self.int(
                al.queue,
                file::DEFAULT_ACCESS_LOG_QUEUE,
                &p!["access_log", "queue"],
                1..=4096,
            )? as usize,
        };

        // ----- [tiers] and [limits] -----
        let limits = self.limits(&raw, base)?;

        Ok(Config {
            source: source.to_path_buf(),
            workers,
            pin_workers,
            listen,
            tls,
            admin,
            http,
            upstream,
            limits,
            shutdown_grace,
            access_log,
            reload_poll_interval,
        })
    }

    fn upstream(&self, raw: &RawConfig, base: &Path) -> R<UpstreamConfig> {
        let u = &raw.upstream;
        if u.servers.is_empty() {
            return Err(self.err(
                &p!["upstream", "servers"],
                "no upstream servers: add an [[upstream.servers]] entry or pass --upstream",
            ));
        }
        if u.servers.len() > MAX_UPSTREAM_SERVERS {
            return Err(self.err(
                &p!["upstream", "servers"],
                format!(
                    "{} upstream servers: at most {MAX_UPSTREAM_SERVERS} are supported",
                    u.servers.len()
                ),
            ));
        }
        let mut servers: Vec<UpstreamServer> = Vec::with_capacity(u.servers.len());
        for (i, s) in u.servers.iter().enumerate() {
            let at = p!["upstream", "servers", i, "addr"];
            let addr = self.resolve_upstream(&s.addr, &at)?;
            if let Some(j) = servers.iter().position(|o| o.addr == addr) {
                return Err(self.err(
                    &at,
                    format!("{:?} is the same server as upstream.servers[{j}]", s.addr),
                ));
            }
            servers.push(UpstreamServer {
                name: s.addr.clone(),
                addr,
            });
        }

        let hr = &u.health;
        let path = hr
            .path
            .clone()
            .unwrap_or_else(|| file::DEFAULT_HEALTH_PATH.to_string());
        if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(self.err(
                &p!["upstream", "health", "path"],
                format!("invalid path {path:?} (must start with / and contain no spaces)"),
            ));
        }
        let statuses_raw: Vec<String> = match &hr.healthy_statuses {
            Some(v) => v.clone(),
            None => file::DEFAULT_HEALTHY_STATUSES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let healthy_statuses = self.statuses(&statuses_raw)?;
        let health = HealthCheckConfig {
            enabled: hr.enabled.unwrap_or(file::DEFAULT_HEALTH_ENABLED),
            path,
            interval: self.dur(
                hr.interval,
                file::DEFAULT_HEALTH_INTERVAL,
                &p!["upstream", "health", "interval"],
                false,
            )?,
            timeout: self.dur(
                hr.timeout,
                file::DEFAULT_HEALTH_TIMEOUT,
                &p!["upstream", "health", "timeout"],
                false,
            )?,
            rise: self.int(
                hr.rise,
                file::DEFAULT_HEALTH_RISE,
                &p!["upstream", "health", "rise"],
                1..=100,
            )? as u32,
            fall: self.int(
                hr.fall,
                file::DEFAULT_HEALTH_FALL,
                &p!["upstream", "health", "fall"],
                1..=100,
            )? as u32,
            healthy_statuses,
        };

        let tls = match &u.tls {
            None => None,
            Some(t) => {
                let ca_file =
                    self.existing_file(base, &t.ca_file, &p!["upstream", "tls", "ca_file"])?;
                if let Some(n) = &t.server_name {
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_graphic()) {
                        return Err(self.err(
                            &p!["upstream", "tls", "server_name"],
                            format!("invalid server name {n:?}"),
                        ));
                    }
                }
                Some(UpstreamTlsConfig {
                    ca_file,
                    server_name: t.server_name.clone(),
                })
            }
        };

        Ok(UpstreamConfig {
            servers,
            balance: match u.balance.unwrap_or(file::DEFAULT_BALANCE) {
                file::RawBalance::RoundRobin => Balance::RoundRobin,
                file::RawBalance::LeastOutstanding => Balance::LeastOutstanding,
            },
            connect_timeout: self.dur(
                u.connect_timeout,
                file::DEFAULT_CONNECT_TIMEOUT,
                &p!["upstream", "connect_timeout"],
                false,
            )?,
            response_head_timeout: self.dur(
                u.response_head_timeout,
                file::DEFAULT_RESPONSE_HEAD_TIMEOUT,
                &p!["upstream", "response_head_timeout"],
                false,
            )?,
            idle_timeout: self.dur(
                u.idle_timeout,
                file::DEFAULT_UPSTREAM_IDLE_TIMEOUT,
                &p!["upstream", "idle_timeout"],
                false,
            )?,
            pool_max_idle: self.int(
                u.pool_max_idle,
                file::DEFAULT_POOL_MAX_IDLE,
                &p!["upstream", "pool_max_idle"],
                0..=65535,
            )? as usize,
            pool_idle_timeout: self.dur(
                u.pool_idle_timeout,
                file::DEFAULT_POOL_IDLE_TIMEOUT,
                &p!["upstream", "pool_idle_timeout"],
                false,
            )?,
            health,
            passive_fail_threshold: self.int(
                u.passive_fail_threshold,
                file::DEFAULT_PASSIVE_FAIL_THRESHOLD,
                &p!["upstream", "passive_fail_threshold"],
                1..=1000,
            )? as u32,
            passive_eject_duration: self.dur(
                u.passive_eject_duration,
                file::DEFAULT_PASSIVE_EJECT_DURATION,
                &p!["upstream", "passive_eject_duration"],
                false,
            )?,
            max_retries: self.int(
                u.max_retries,
                file::DEFAULT_MAX_RETRIES,
                &p!["upstream", "max_retries"],
                0..=100,
            )? as u32,
            tls,
        })
    }

    /// `["200-399", "404"]` → sorted, deduplicated status codes.
    fn statuses(&self, list: &[String]) -> R<Vec<u16>> {
        let base = p!["upstream", "health", "healthy_statuses"];
        if list.is_empty() {
            return Err(self.err(&base, "at least one status or range is required"));
        }
        let mut out = Vec::new();
        for (i, s) in list.iter().enumerate() {
            let mut at = base.to_vec();
            at.push(Seg::Index(i));
            let bad = || {
                self.err(
                    &at,
                    format!("invalid status {s:?} (expected \"N\" or \"A-B\" within 100..=599)"),
                )
            };
            let (a, b) = match s.split_once('-') {
                Some((a, b)) => (a.trim(), b.trim()),
                None => (s.trim(), s.trim()),
            };
            let (Ok(a), Ok(b)) = (a.parse::<u16>(), b.parse::<u16>()) else {
                return Err(bad());
            };
            if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
                return Err(bad());
            }
            out.extend(a..=b);
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn window(
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
        Ok(tiers)
    }

    fn max_key_len(&self, raw: &RawConfig) -> R<usize> {
        Ok(self.int(
            raw.limits.max_key_len,
            file::DEFAULT_MAX_KEY_LEN,
            &p!["limits", "max_key_len"],
            1..=file::MAX_KEY_LEN_CAP as u64,
        )? as usize)
    }

    fn keys_file(raw: &RawConfig, base: &Path) -> Option<PathBuf> {
        match raw.limits.keys_file.as_deref() {
            None | Some("") => None,
            Some(p) => Some(resolve_path(base, p)),
        }
    }

    fn limits(&self, raw: &RawConfig, base: &Path) -> R<LimitsConfig> {
        let l = &raw.limits;
        let tiers = self.tiers(raw)?;
        let tier_index: HashMap<String, usize> = tiers
            .iter()
            .enumerate()
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
        let table_cap = self.int(
            l.table_cap,
            file::DEFAULT_TABLE_CAP,
            &p!["limits", "table_cap"],
            1..=crate::limit::table::MAX_ENTRIES as u64,
        )? as usize;
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
        let keys = match &keys_file {
            None => HashMap::new(),
            Some(kf) => match load_keys_checked(kf, &tier_index, max_key_len) {
                Ok(k) => k,
                Err(ConfigError::Read { file, source }) => {
                    return Err(self.err(
                        &p!["limits", "keys_file"],
                        format!(
                            "cannot read keys file {:?}: {source}",
                            file.display().to_string()
                        ),
                    ));
                }
                Err(e) => return Err(e),
            },
        };

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
            headers,
            expect_denied,
            version: 1,
        })
    }
}

fn resolve_path(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

// ---------------------------------------------------------------------------------------------
// `tollgate check` summary.

fn methods_str(m: MethodSet) -> String {
    let v: Vec<&str> = Method::ALL
        .iter()
        .filter(|x| m.contains(**x))
        .map(|x| x.as_str())
        .collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(",")
    }
}

fn status_ranges(s: &[u16]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let start = s[i];
        let mut end = start;
        while i + 1 < s.len() && s[i + 1] == end + 1 {
            i += 1;
            end = s[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

fn addrs_str(a: &[SocketAddr]) -> String {
    if a.is_empty() {
        "none".to_string()
    } else {
        a.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

struct Dur(Duration);
impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&file::format_duration(self.0))
    }
}

/// What `tollgate check` prints: listeners, upstreams, tiers with limits, methods and key
/// counts, admin, TLS certificates.
/// Upstream servers one config may list (node ids travel between cores as `u16`).
pub const MAX_UPSTREAM_SERVERS: usize = 1024;

pub fn summary(cfg: &Config) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "config: {}", cfg.source.display());
    let _ = writeln!(
        s,
        "workers: {}{}",
        cfg.workers,
        if cfg.pin_workers { " (pinned)" } else { "" }
    );
    let _ = writeln!(s, "listen (http): {}", addrs_str(&cfg.listen));
    match &cfg.tls {
        None => {
            let _ = writeln!(s, "listen (https): none");
        }
        Some(t) => {
            let _ = writeln!(
                s,
                "listen (https): {} (cert reload poll: {})",
                addrs_str(&t.listen),
                Dur(t.reload_interval)
            );
            for (i, c) in t.certs.iter().enumerate() {
                let names = if c.server_names.is_empty() {
                    "names from certificate".to_string()
                } else {
                    c.server_names.join(", ")
                };
                let _ = writeln!(
                    s,
                    "  cert {}{}: {} key {} ({names})",
                    i,
                    if i == 0 { " [default]" } else { "" },
                    c.cert_file.display(),
                    c.key_file.display()
                );
            }
        }
    }
    match cfg.admin.listen {
        None => {
            let _ = writeln!(s, "admin: off");
        }
        Some(a) => {
            let _ = writeln!(
                s,
                "admin: {a} ({})",
                if cfg.admin.token.is_some() {
                    "bearer token required"
                } else {
                    "no token"
                }
            );
        }
    }
    let u = &cfg.upstream;
    let _ = writeln!(
        s,
        "upstream: {} server(s), balance {}, connect timeout {}, retries {}{}",
        u.servers.len(),
        match u.balance {
            Balance::RoundRobin => "round_robin",
            Balance::LeastOutstanding => "least_outstanding",
        },
        Dur(u.connect_timeout),
        u.max_retries,
        match &u.tls {
            None => String::new(),
            Some(t) => format!(", TLS (CA {})", t.ca_file.display()),
        }
    );
    for srv in &u.servers {
        let _ = writeln!(s, "  {} -> {}", srv.name, srv.addr);
    }
    let h = &u.health;
    if h.enabled {
        let _ = writeln!(
            s,
            "  health: GET {} every {}, timeout {}, rise {}, fall {}, healthy {}",
            h.path,
            Dur(h.interval),
            Dur(h.timeout),
            h.rise,
            h.fall,
            status_ranges(&h.healthy_statuses)
        );
    } else {
        let _ = writeln!(s, "  health: off");
    }
    let l = &cfg.limits;
    let _ = writeln!(
        s,
        "limits: {}, deny {}, unlisted keys {}, default tier {}, anonymous tier {}, table cap {}/core, max key {} bytes",
        if l.enforce {
            "enforcing"
        } else {
            "shadow mode"
        },
        l.deny_status,
        match l.unlisted_keys {
            UnlistedKeys::PerKey => "per_key",
            UnlistedKeys::PerAddress => "per_address",
        },
        l.tiers[l.default_tier].name,
        l.tiers[l.anonymous_tier].name,
        l.table_cap,
        l.max_key_len
    );
    match &l.keys_file {
        None => {
            let _ = writeln!(s, "keys file: none");
        }
        Some(k) => {
            let _ = writeln!(s, "keys file: {} ({} keys)", k.display(), l.keys.len());
        }
    }
    let mut per_tier = vec![0usize; l.tiers.len()];
    for &t in l.keys.values() {
        per_tier[t] += 1;
    }
    let _ = writeln!(s, "tiers:");
    for (i, t) in l.tiers.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {:<12} {:>5}/{:<4} {:>5}/{:<5} methods {:<12} {:<8} keys {}",
            t.name,
            t.sustained.limit,
            Dur(Duration::from_millis(t.sustained.length_ms.into())).to_string(),
            t.burst.limit,
            Dur(Duration::from_millis(t.burst.length_ms.into())).to_string(),
            methods_str(t.methods),
            if t.enforce { "enforce" } else { "shadow" },
            per_tier[i]
        );
    }
    let _ = writeln!(
        s,
        "access log: {}",
        cfg.access_log
            .path
            .as_ref()
            .map_or("off".to_string(), |p| format!(
                "{} (JSON lines; buffer {} bytes per core, flush every {:?}, queue {})",
                p.display(),
                cfg.access_log.buffer_bytes,
                cfg.access_log.flush_interval,
                cfg.access_log.queue
            ))
    );
    s
}

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "tollgate-validate-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, text).unwrap();
            p
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const SERVERS: &str = "[[upstream.servers]]\naddr = \"127.0.0.1:9000\"\n";

    fn ok(text: &str) -> Config {
        match load_str(text, Path::new("/nonexistent/t.toml")) {
            Ok(c) => c,
            Err(e) => panic!("expected ok, got: {e}"),
        }
    }

    /// Load `text` (from a file named t.toml in a temp dir, with optional extra files) and
    /// return the error, asserting its line and field.
    fn err_at(text: &str, line: usize, field: &str) -> ConfigError {
        let e = load_str(text, Path::new("cfg/t.toml")).expect_err("expected an error");
        assert_eq!(
            (e.line(), e.field()),
            (Some(line), Some(field)),
            "wrong location in: {e}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("cfg/t.toml:{line}: {field}: ")),
            "bad display: {e}"
        );
        e
    }

    #[test]
    fn nearly_empty_file_gets_every_default() {
        let c = ok(SERVERS);
        assert_eq!(
            c.workers,
            std::thread::available_parallelism().unwrap().get()
        );
        assert!(c.pin_workers);
        assert_eq!(
            c.listen,
            vec!["0.0.0.0:8080".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.tls.is_none());
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
        assert_eq!(c.reload_poll_interval, Duration::from_secs(2));
        assert_eq!(c.admin.listen, Some("127.0.0.1:8404".parse().unwrap()));
        assert_eq!(c.admin.token, None);
        assert_eq!(c.http.max_head_bytes, 16384);
        assert_eq!(c.http.max_headers, 100);
        assert_eq!(c.http.client_idle_timeout, Duration::from_secs(60));
        assert_eq!(c.http.client_head_timeout, Duration::from_secs(10));
        assert!(!c.http.x_forwarded_for);
        assert_eq!(c.http.max_requests_per_connection, 0);
        let u = &c.upstream;
        assert_eq!(u.servers.len(), 1);
        assert_eq!(u.servers[0].name, "127.0.0.1:9000");
        assert_eq!(u.servers[0].addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(u.balance, Balance::RoundRobin);
        assert_eq!(u.connect_timeout, Duration::from_secs(2));
        assert_eq!(u.response_head_timeout, Duration::from_secs(60));
        assert_eq!(u.idle_timeout, Duration::from_secs(60));
        assert_eq!(u.pool_max_idle, 64);
        assert_eq!(u.pool_idle_timeout, Duration::from_secs(30));
        assert_eq!(u.passive_fail_threshold, 3);
        assert_eq!(u.passive_eject_duration, Duration::from_secs(10));
        assert_eq!(u.max_retries, 2);
        assert!(u.tls.is_none());
        assert!(u.health.enabled);
        assert_eq!(u.health.path, "/minio/health/live");
        assert_eq!(u.health.interval, Duration::from_secs(2));
        assert_eq!(u.health.timeout, Duration::from_secs(1));
        assert_eq!((u.health.rise, u.health.fall), (2, 3));
        assert_eq!(u.health.healthy_statuses, (200..=399).collect::<Vec<u16>>());
        assert_eq!(c.access_log.path, None);
        let l = &c.limits;
        assert_eq!(l.keys_file, None);
        assert!(l.keys.is_empty());
        let names: Vec<&str> = l.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["premium", "standard", "basic", "unknown"]);
        let limits: Vec<(u32, u32, u32, u32)> = l
            .tiers
            .iter()
            .map(|t| {
                (
                    t.sustained.limit,
                    t.sustained.length_ms,
                    t.burst.limit,
                    t.burst.length_ms,
                )
            })
            .collect();
        assert_eq!(
            limits,
            [
                (1000, 60_000, 50, 1000),
                (500, 60_000, 25, 1000),
                (100, 60_000, 10, 1000),
                (50, 60_000, 5, 1000)
            ]
        );
        let mut get_put = MethodSet::default();
        get_put.insert(Method::Get);
        get_put.insert(Method::Put);
        assert!(l.tiers.iter().all(|t| t.methods == get_put && t.enforce));
        assert_eq!(l.tier_index["unknown"], 3);
        assert_eq!((l.default_tier, l.anonymous_tier), (3, 3));
        assert_eq!(l.unlisted_keys, UnlistedKeys::PerKey);
        assert!(l.enforce);
        assert_eq!(l.deny_status, 429);
        assert_eq!(l.max_key_len, 128);
        assert_eq!(l.table_cap, 100_000);
        assert_eq!(
            l.headers,
            HeaderGroups {
                ietf: true,
                legacy: true,
                identity: true,
                on_allowed: true
            }
        );
        assert_eq!(l.expect_denied, ExpectDenied::Close);
        assert_eq!(l.version, 1);
        assert_eq!(c.source, PathBuf::from("/nonexistent/t.toml"));
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
    fn unknown_fields_name_line_and_path() {
        let e = err_at("workers = 2\nbogus = 1\n", 2, "bogus");
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
        err_at(
            "[[upstream.servers]]\naddr = \"127.0.0.1:1\"\n[[upstream.servers]]\naddr = \"127.0.0.1:2\"\nport = 3\n",
            5,
            "upstream.servers[1].port",
        );
        err_at(
            &format!("{SERVERS}\n[upstream.health]\nrise = 2\nrize = 3\n"),
            6,
            "upstream.health.rize",
        );
        err_at(
            &format!(
                "{SERVERS}[tiers.gold]\nper_minute = 5\nper_second = 1\nsustained_x = {{ limit = 1 }}\n"
            ),
            6,
            "tiers.gold.sustained_x",
        );
        err_at(
            &format!(
                "{SERVERS}[tiers.gold]\nper_minute = 5\nburst = {{ limit = 1, window = \"1s\", x = 2 }}\n"
            ),
            5,
            "tiers.gold.burst.x",
        );
        err_at(
            "[limits.headers]\nietf = true\nmodern = false\n",
            3,
            "limits.headers.modern",
        );
    }

    #[test]
    fn wrong_types_name_line_and_path() {
        let e = err_at("workers = \"four\"\n", 1, "workers");
        assert!(e.to_string().contains("invalid type"), "{e}");
        err_at(
            &format!("\n\n{SERVERS}[http]\nx_forwarded_for = \"yes\"\n"),
            6,
            "http.x_forwarded_for",
        );
        err_at("listen = \"0.0.0.0:80\"\n", 1, "listen");
        err_at(
            "[upstream]\nservers = [{ addr = 9000 }]\n",
            2,
            "upstream.servers[0].addr",
        );
        err_at("[tiers]\ngold = 5\n", 2, "tiers.gold");
        let e = err_at(
            &format!("{SERVERS}[upstream]\nbalance = \"random\"\n"),
            4,
            "upstream.balance",
        );
        assert!(
            e.to_string().ends_with(
                "upstream.balance: unknown value \"random\" (expected \"round_robin\" or \"least_outstanding\")"
            ),
            "{e}"
        );
        let e = err_at(
            &format!("{SERVERS}[upstream]\nbalance = 3\n"),
            4,
            "upstream.balance",
        );
        assert!(
            e.to_string()
                .contains("invalid type: integer `3`, expected a string"),
            "{e}"
        );
        err_at(
            "[limits]\nunlisted_keys = \"per_ip\"\n",
            2,
            "limits.unlisted_keys",
        );
        err_at("[limits]\nmax_key_len = -1\n", 2, "limits.max_key_len");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let e = err_at("workers = 2\n\nlisten = = 3\n", 3, "syntax error");
        assert!(
            e.to_string().starts_with("cfg/t.toml:3: syntax error: "),
            "{e}"
        );
        err_at(
            "[limits]\nenforce = true\nenforce = false\n",
            3,
            "syntax error",
        );
    }

    #[test]
    fn bad_durations() {
        let e = err_at(
            &format!("shutdown_grace = \"30 s\"\n{SERVERS}"),
            1,
            "shutdown_grace",
        );
        assert!(e.to_string().contains("invalid duration \"30 s\""), "{e}");
        err_at(
            &format!("{SERVERS}[upstream]\nconnect_timeout = \"1.5s\"\n"),
            4,
            "upstream.connect_timeout",
        );
        err_at(
            &format!("{SERVERS}[upstream]\nconnect_timeout = 2\n"),
            4,
            "upstream.connect_timeout",
        );
        let e = err_at(
            &format!("{SERVERS}[upstream.health]\ninterval = \"0s\"\n"),
            4,
            "upstream.health.interval",
        );
        assert!(e.to_string().ends_with("must be longer than 0"), "{e}");
        err_at(
            &format!(
                "{SERVERS}[tiers.t]\nper_minute = 5\nburst = {{ limit = 1, window = \"1d\" }}\n"
            ),
            5,
            "tiers.t.burst.window",
        );
        // "0s" = off is allowed where documented.
        let c = ok(&format!("reload_poll_interval = \"0s\"\n{SERVERS}"));
        assert_eq!(c.reload_poll_interval, Duration::ZERO);
    }

    #[test]
    fn bad_addresses() {
        let e = err_at(
            "[[upstream.servers]]\naddr = \"foo\"\n",
            2,
            "upstream.servers[0].addr",
        );
        assert!(
            e.to_string().ends_with(
                ": invalid address \"foo\" (expected HOST:PORT, e.g. \"127.0.0.1:9000\")"
            ),
            "{e}"
        );
        err_at(
            "[[upstream.servers]]\naddr = \"127.0.0.1:99999\"\n",
            2,
            "upstream.servers[0].addr",
        );
        err_at(
            &format!("listen = [\"0.0.0.0:80\",\n  \"nowhere\"]\n{SERVERS}"),
            2,
            "listen[1]",
        );
        err_at(
            &format!("{SERVERS}[admin]\nlisten = \"localhost\"\n"),
            4,
            "admin.listen",
        );
        let e = err_at(
            &format!(
                "listen = [\"127.0.0.1:7000\"]\n{SERVERS}[admin]\nlisten = \"127.0.0.1:7000\"\n"
            ),
            5,
            "admin.listen",
        );
        assert!(e.to_string().contains("already used by listen[0]"), "{e}");
        err_at(
            "[[upstream.servers]]\naddr = \"127.0.0.1:1\"\n[[upstream.servers]]\naddr = \"127.0.0.1:1\"\n",
            4,
            "upstream.servers[1].addr",
        );
        let c = ok(&format!(
            "{SERVERS}[admin]\nlisten = \"off\"\ntoken = \"s3cret\"\n"
        ));
        assert_eq!(c.admin.listen, None);
        assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
        // Host names are resolved at load.
        let c = ok("[[upstream.servers]]\naddr = \"localhost:9000\"\n");
        assert_eq!(c.upstream.servers[0].name, "localhost:9000");
        assert!(c.upstream.servers[0].addr.ip().is_loopback());
        assert_eq!(c.upstream.servers[0].addr.port(), 9000);
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
            &t("per_minute = 65536\nper_second = 1\n"),
            4,
            "tiers.t.per_minute",
        );
        let max = ok(&format!(
            "{SERVERS}[limits]\ndefault_tier = \"t\"\nanonymous_tier = \"t\"\n[tiers.t]\nper_minute = 65535\nper_second = 1\n"
        ));
        assert_eq!(max.limits.tiers[0].sustained.limit, 65535);
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
    fn no_upstream_servers_unless_overridden() {
        let e = err_at("workers = 1\n", 1, "upstream.servers");
        assert!(e.to_string().contains("no upstream servers"), "{e}");
        err_at(
            "workers = 1\n\n[upstream]\nmax_retries = 1\n",
            3,
            "upstream.servers",
        );
        let ov = Overrides {
            upstream: vec!["127.0.0.1:3900".into(), "127.0.0.1:3901".into()],
            ..Overrides::default()
        };
        let c = load_str_with("workers = 1\n", Path::new("t.toml"), &ov).unwrap();
        let names: Vec<&str> = c.upstream.servers.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:3900", "127.0.0.1:3901"]);
    }

    #[test]
    fn overrides_replace_file_values() {
        let dir = TempDir::new("ov");
        let cert = dir.write("c.pem", "x");
        let key = dir.write("c.key", "x");
        let path = dir.write(
            "t.toml",
            "workers = 3\nlisten = [\"0.0.0.0:1\"]\n[admin]\nlisten = \"127.0.0.1:2\"\n\
             [tls]\nlisten = [\"0.0.0.0:3\"]\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"c.key\"\n\
             [[upstream.servers]]\naddr = \"127.0.0.1:4\"\n",
        );
        let base = load(&path).unwrap();
        assert_eq!(base.workers, 3);
        assert_eq!(base.tls.as_ref().unwrap().certs[0].cert_file, cert);
        assert_eq!(base.tls.as_ref().unwrap().certs[0].key_file, key);
        let ov = Overrides {
            listen: vec![
                "127.0.0.1:10".parse().unwrap(),
                "127.0.0.1:11".parse().unwrap(),
            ],
            tls_listen: vec!["127.0.0.1:12".parse().unwrap()],
            upstream: vec!["127.0.0.1:13".into()],
            workers: Some(7),
            admin: Some("off".into()),
        };
        let c = load_with(&path, &ov).unwrap();
        assert_eq!(c.workers, 7);
        assert_eq!(c.listen, ov.listen);
        assert_eq!(c.tls.as_ref().unwrap().listen, ov.tls_listen);
        assert_eq!(c.upstream.servers[0].addr, "127.0.0.1:13".parse().unwrap());
        assert_eq!(c.upstream.servers.len(), 1);
        assert_eq!(c.admin.listen, None);

        // Bad override values name the flag, not a file line.
        let bad = Overrides {
            upstream: vec!["127.0.0.1:1".into(), "nope".into()],
            ..Overrides::default()
        };
        let e = load_with(&path, &bad).unwrap_err();
        assert_eq!(e.line(), None);
        assert_eq!(
            e.to_string(),
            "--upstream: upstream.servers[1].addr: invalid address \"nope\" (expected HOST:PORT, e.g. \"127.0.0.1:9000\")"
        );
        let e = load_with(
            &path,
            &Overrides {
                workers: Some(0),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--workers: workers: 0 is out of range"),
            "{e}"
        );
        let e = load_with(
            &path,
            &Overrides {
                admin: Some("x".into()),
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--admin: admin.listen: invalid address \"x\""),
            "{e}"
        );
        // --tls-listen without a [tls] table in the file.
        let e = load_str_with(
            SERVERS,
            Path::new("t.toml"),
            &Overrides {
                tls_listen: vec!["127.0.0.1:9".parse().unwrap()],
                ..Overrides::default()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("--tls-listen: tls.certs: "),
            "{e}"
        );
    }

    #[test]
    fn listeners_may_be_only_tls_but_not_none() {
        let dir = TempDir::new("tls");
        dir.write("c.pem", "x");
        dir.write("c.key", "x");
        let path = dir.write(
            "t.toml",
            &format!("listen = []\n{SERVERS}[tls]\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"c.key\"\nserver_names = [\"s3.example.com\"]\n"),
        );
        let c = load(&path).unwrap();
        assert!(c.listen.is_empty());
        let t = c.tls.unwrap();
        assert_eq!(
            t.listen,
            vec!["0.0.0.0:8443".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(t.certs[0].server_names, ["s3.example.com"]);
        assert_eq!(t.reload_interval, Duration::ZERO);
        let e = err_at(&format!("listen = []\n{SERVERS}"), 1, "listen");
        assert!(e.to_string().contains("no listeners"), "{e}");
    }

    #[test]
    fn missing_tls_files() {
        let dir = TempDir::new("tlsmissing");
        dir.write("c.pem", "x");
        let path = dir.write(
            "t.toml",
            &format!("{SERVERS}[tls]\n\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"missing.key\"\n"),
        );
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(7), Some("tls.certs[0].key")),
            "{e}"
        );
        assert!(e.to_string().contains("file not found"), "{e}");
        assert!(e.to_string().contains("missing.key"), "{e}");
        let path = dir.write(
            "u.toml",
            &format!(
                "{SERVERS}[upstream.tls]\nca_file = \"ca.pem\"\nserver_name = \"minio.internal\"\n"
            ),
        );
        let e = load(&path).unwrap_err();
        assert_eq!(
            (e.line(), e.field()),
            (Some(4), Some("upstream.tls.ca_file")),
            "{e}"
        );
        dir.write("ca.pem", "x");
        let c = load(&path).unwrap();
        let t = c.upstream.tls.unwrap();
        assert_eq!(t.ca_file, dir.0.join("ca.pem"));
        assert_eq!(t.server_name.as_deref(), Some("minio.internal"));
        let path = dir.write(
            "v.toml",
            &format!("{SERVERS}[tls]\nlisten = [\"0.0.0.0:8443\"]\n"),
        );
        let e = load(&path).unwrap_err();
        assert_eq!(e.field(), Some("tls.certs"), "{e}");
    }

    #[test]
    fn healthy_statuses_ranges() {
        let c = ok(&format!(
            "{SERVERS}[upstream.health]\nhealthy_statuses = [\"200-299\", \"404\", \"403\", \"250-310\"]\n"
        ));
        let mut want: Vec<u16> = (200..=310).collect();
        want.extend([403, 404]);
        assert_eq!(c.upstream.health.healthy_statuses, want);
        for bad in ["\"abc\"", "\"300-200\"", "\"99\"", "\"200-600\""] {
            err_at(
                &format!("{SERVERS}[upstream.health]\nhealthy_statuses = [\"200\", {bad}]\n"),
                4,
                "upstream.health.healthy_statuses[1]",
            );
        }
        err_at(
            &format!("{SERVERS}[upstream.health]\nhealthy_statuses = []\n"),
            4,
            "upstream.health.healthy_statuses",
        );
        err_at(
            &format!("{SERVERS}[upstream.health]\npath = \"health\"\n"),
            4,
            "upstream.health.path",
        );
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

    fn manifest_file(rel: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }

    #[test]
    fn shipped_config_loads_with_defaults() {
        let path = manifest_file("config/tollgate.toml");
        let c = load(&path).unwrap_or_else(|e| panic!("{e}"));
        // Every value in the shipped file is the default (except the documented example
        // upstream, the keys file and workers, which is commented out).
        let d = ok(SERVERS);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.workers, d.workers);
        assert_eq!(c.pin_workers, d.pin_workers);
        assert_eq!(c.shutdown_grace, d.shutdown_grace);
        assert_eq!(c.reload_poll_interval, d.reload_poll_interval);
        assert!(c.tls.is_none());
        assert_eq!(c.admin.listen, d.admin.listen);
        assert_eq!(c.admin.token, d.admin.token);
        assert_eq!(format!("{:?}", c.http), format!("{:?}", d.http));
        assert_eq!(format!("{:?}", c.upstream), format!("{:?}", d.upstream));
        assert_eq!(c.access_log.path, None);
        let (l, dl) = (&c.limits, &d.limits);
        assert_eq!(l.tiers, dl.tiers);
        assert_eq!(
            (l.default_tier, l.anonymous_tier),
            (dl.default_tier, dl.anonymous_tier)
        );
        assert_eq!(l.unlisted_keys, dl.unlisted_keys);
        assert_eq!(
            (l.enforce, l.deny_status, l.max_key_len, l.table_cap),
            (dl.enforce, dl.deny_status, dl.max_key_len, dl.table_cap)
        );
        assert_eq!(l.headers, dl.headers);
        assert_eq!(l.expect_denied, dl.expect_denied);
        assert_eq!(l.keys_file, Some(manifest_file("config/keys.toml")));
        assert!(!l.keys.is_empty());
        let s = summary(&c);
        assert!(s.contains("listen (http): 0.0.0.0:8080"), "{s}");
        assert!(s.contains("127.0.0.1:9000 -> 127.0.0.1:9000"), "{s}");
    }

    #[test]
    fn too_many_upstream_servers_are_refused() {
        let many: String = (0..=MAX_UPSTREAM_SERVERS)
            .map(|i| {
                format!(
                    "[[upstream.servers]]\naddr = \"127.0.{}.{}:9000\"\n",
                    i / 250,
                    i % 250 + 1
                )
            })
            .collect();
        let e = load_str(&many, Path::new("t.toml")).expect_err("1025 servers");
        assert_eq!(e.field(), Some("upstream.servers"));
        assert!(e.to_string().contains("at most 1024"), "{e}");
    }

    #[test]
    fn access_log_options() {
        let c = load_str(
            &format!("{SERVERS}[access_log]\npath = \"logs/access.log\"\n"),
            Path::new("/etc/tollgate/t.toml"),
        )
        .unwrap();
        let a = &c.access_log;
        assert_eq!(
            a.path.as_deref(),
            Some(Path::new("/etc/tollgate/logs/access.log"))
        );
        assert_eq!(
            (a.buffer_bytes, a.flush_interval, a.queue),
            (65536, Duration::from_secs(1), 64)
        );
        let c = ok(&format!(
            "{SERVERS}[access_log]\npath = \"/var/log/a.log\"\nbuffer_bytes = 4096\nflush_interval = \"250ms\"\nqueue = 8\n"
        ));
        let a = &c.access_log;
        assert_eq!(a.path.as_deref(), Some(Path::new("/var/log/a.log")));
        assert_eq!(
            (a.buffer_bytes, a.flush_interval, a.queue),
            (4096, Duration::from_millis(250), 8)
        );
        assert_eq!(
            ok(&format!("{SERVERS}[access_log]\npath = \"\"\n"))
                .access_log
                .path,
            None
        );
        err_at(
            &format!("{SERVERS}[access_log]\nbuffer_bytes = 100\n"),
            4,
            "access_log.buffer_bytes",
        );
        err_at(
            &format!("{SERVERS}[access_log]\nflush_interval = \"0s\"\n"),
            4,
            "access_log.flush_interval",
        );
        err_at(
            &format!("{SERVERS}[access_log]\nqueue = 0\n"),
            4,
            "access_log.queue",
        );
    }

    #[test]
    fn demo_config_loads() {
        let c = load(&manifest_file("config/demo.toml")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.workers, 2);
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:18080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(c.admin.listen, Some("127.0.0.1:18404".parse().unwrap()));
        assert_eq!(
            c.upstream.servers[0].addr,
            "127.0.0.1:3900".parse().unwrap()
        );
        assert_eq!(c.upstream.health.path, "/");
        assert_eq!(
            c.upstream.health.healthy_statuses,
            (200..=499).collect::<Vec<u16>>()
        );
        let l = &c.limits;
        let names: Vec<&str> = l.tiers.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["premium", "standard", "basic", "unknown"]);
        let count = |tier: &str| {
            l.keys
                .values()
                .filter(|&&t| t == l.tier_index[tier])
                .count()
        };
        assert_eq!(
            (count("premium"), count("standard"), count("basic")),
            (5, 0, 0)
        );
        for i in 0..5 {
            let k = format!("GKb1000000000000000000{i:04}");
            assert_eq!(k.len(), 26);
            assert!(k[2..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert_eq!(l.tier_of_key(k.as_bytes()), (0, true), "{k}");
        }
    }

    #[test]
    fn summary_lists_everything() {
        let dir = TempDir::new("summary");
        dir.write("c.pem", "x");
        dir.write("c.key", "x");
        dir.write(
            "keys.toml",
            "[keys]\nA1 = \"gold\"\nA2 = \"gold\"\nB1 = \"lead\"\n",
        );
        let path = dir.write(
            "t.toml",
            "workers = 2\nlisten = [\"127.0.0.1:1\"]\n[admin]\ntoken = \"t\"\n\
             [tls]\nlisten = [\"127.0.0.1:2\"]\n[[tls.certs]]\ncert = \"c.pem\"\nkey = \"c.key\"\n\
             [[upstream.servers]]\naddr = \"127.0.0.1:4\"\n\
             [upstream.health]\nhealthy_statuses = [\"200-299\", \"404\"]\n\
             [limits]\nkeys_file = \"keys.toml\"\ndefault_tier = \"lead\"\nanonymous_tier = \"lead\"\n\
             [tiers.gold]\nper_minute = 1000\nper_second = 50\n\
             [tiers.lead]\nsustained = { limit = 10, window = \"10m\" }\nburst = { limit = 1, window = \"500ms\" }\nmethods = [\"GET\"]\nenforce = false\n",
        );
        let s = summary(&load(&path).unwrap());
        for want in [
            "workers: 2 (pinned)",
            "listen (http): 127.0.0.1:1",
            "listen (https): 127.0.0.1:2",
            "[default]",
            "admin: 127.0.0.1:8404 (bearer token required)",
            "127.0.0.1:4 -> 127.0.0.1:4",
            "healthy 200-299,404",
            "keys file:",
            "(3 keys)",
            "default tier lead",
        ] {
            assert!(s.contains(want), "missing {want:?} in:\n{s}");
        }
        let gold = s
            .lines()
            .find(|l| l.trim_start().starts_with("gold"))
            .unwrap();
        assert!(
            gold.contains("1000/1m")
                && gold.contains("50/1s")
                && gold.contains("GET,PUT")
                && gold.ends_with("keys 2"),
            "{gold}"
        );
        let lead = s
            .lines()
            .find(|l| l.trim_start().starts_with("lead"))
            .unwrap();
        assert!(
            lead.contains("10/10m")
                && lead.contains("1/500ms")
                && lead.contains("shadow")
                && lead.ends_with("keys 1"),
            "{lead}"
        );
    }

    #[test]
    fn read_error_names_file() {
        let e = load(Path::new("/nonexistent/dir/t.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/dir/t.toml: cannot read: "),
            "{e}"
        );
    }
}
