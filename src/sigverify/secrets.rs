//! The secrets table (access key → secret key) verification reads, and its file format.
//! Parsing is pure: the caller reads the file (and refuses it unless mode 0600).
//!
//! # Format
//!
//! TOML, the same shape as the keys file, so one file format serves both and comments,
//! quoting and error positions work the same way:
//!
//! ```toml
//! # tollgate secrets file: "access key" = 'secret key'. Keep it mode 0600.
//! [secrets]
//! "AKIAIOSFODNN7EXAMPLE" = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'
//! "GK31c2f218a2e44f485b94239e" = 'b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f9d769d67f16c3835'
//! ```
//!
//! Single-quoted (literal) TOML strings take a secret byte for byte (no `\` escapes).
//! Keys follow the keys file's rule (1..=256 printable ASCII bytes, no spaces); a secret
//! is non-empty, has no control characters and no surrounding whitespace (almost always a
//! copy-and-paste slip, which would otherwise fail every request of that key). Anything
//! else in the file, or a non-string secret, is an error naming its line.

use std::collections::HashMap;

use sha2::{Digest, Sha256};
use toml::de::{DeTable, DeValue};

/// Longest access key accepted (what identity extraction honours at most).
pub const MAX_ACCESS_KEY_LEN: usize = 256;

/// Where verification finds a key's secret.
pub trait SecretLookup {
    /// The secret of `access_key`, `None` when the key is unknown.
    fn secret(&self, access_key: &[u8]) -> Option<&[u8]>;
    /// Changes whenever any key's secret may have changed (signing keys cached under
    /// another generation are dropped).
    fn generation(&self) -> u64;
}

/// A loaded secrets table. `Debug` shows the number of keys, never a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    map: HashMap<Box<[u8]>, Box<[u8]>>,
    generation: u64,
}

/// A secrets file that cannot be used, with the 1-based line it is about.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SecretsError {
    pub line: usize,
    pub message: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets {{ keys: {} }}", self.map.len())
    }
}

impl SecretLookup for Secrets {
    fn secret(&self, access_key: &[u8]) -> Option<&[u8]> {
        self.map.get(access_key).map(|s| &s[..])
    }

    fn generation(&self) -> u64 {
        self.generation
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_ACCESS_KEY_LEN {
        return Err(format!(
            "access key {key:?} must be 1..={MAX_ACCESS_KEY_LEN} bytes"
        ));
    }
    match key.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        Some(b) => Err(format!(
            "access key {key:?}: byte 0x{b:02x} is not printable ASCII (0x21..=0x7E)"
        )),
        None => Ok(()),
    }
}

fn check_secret(key: &str, secret: &str) -> Result<(), String> {
    if secret.is_empty() {
        return Err(format!("the secret of {key:?} is empty"));
    }
    if secret.chars().any(char::is_control) {
        return Err(format!("the secret of {key:?} holds a control character"));
    }
    if secret.trim() != secret {
        return Err(format!(
            "the secret of {key:?} starts or ends with whitespace"
        ));
    }
    Ok(())
}

impl Secrets {
    /// Parses the text of a secrets file (see the module documentation).
    pub fn parse(text: &str) -> Result<Secrets, SecretsError> {
        let err = |offset: usize, message: String| SecretsError {
            line: line_of(text, offset),
            message,
        };
        let root = DeTable::parse(text).map_err(|e| {
            err(
                e.span().map_or(0, |s| s.start),
                e.message().trim_end().to_string(),
            )
        })?;
        let mut pairs = Vec::new();
        for (name, value) in root.get_ref() {
            let DeValue::Table(table) = value.get_ref() else {
                return Err(err(
                    name.span().start,
                    "expected only a [secrets] table".into(),
                ));
            };
            if name.get_ref() != "secrets" {
                return Err(err(
                    name.span().start,
                    format!("unknown table [{}]", name.get_ref()),
                ));
            }
            for (key, secret) in table {
                let at = key.span().start;
                let key = key.get_ref();
                let DeValue::String(secret) = secret.get_ref() else {
                    return Err(err(at, format!("the secret of {key:?} must be a string")));
                };
                check_key(key)
                    .and_then(|()| check_secret(key, secret))
                    .map_err(|m| err(at, m))?;
                pairs.push((key.to_string(), secret.to_string()));
            }
        }
        Ok(Secrets::from_pairs(pairs))
    }

    /// A table from (access key, secret) pairs (a later duplicate wins).
    pub fn from_pairs<K: AsRef<[u8]>, S: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (K, S)>,
    ) -> Secrets {
        let map: HashMap<Box<[u8]>, Box<[u8]>> = pairs
            .into_iter()
            .map(|(k, s)| (k.as_ref().into(), s.as_ref().into()))
            .collect();
        let mut sorted: Vec<_> = map.iter().collect();
        sorted.sort_unstable();
        let mut h = Sha256::new();
        for (k, s) in sorted {
            for part in [k, s] {
                h.update((part.len() as u64).to_le_bytes());
                h.update(part);
            }
        }
        let digest = h.finalize();
        let generation = u64::from_le_bytes(digest[..8].try_into().unwrap_or_default());
        Secrets { map, generation }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Whether `access_key` has a secret.
    pub fn contains(&self, access_key: &[u8]) -> bool {
        self.map.contains_key(access_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_format() {
        let s = Secrets::parse(
            "# comment\n[secrets]\n\"AKIAIOSFODNN7EXAMPLE\" = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY'\nGK1 = \"a\\\\b\"\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            s.secret(b"AKIAIOSFODNN7EXAMPLE"),
            Some(&b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"[..])
        );
        assert_eq!(s.secret(b"GK1"), Some(&b"a\\b"[..]));
        assert_eq!(s.secret(b"gk1"), None);
        assert_eq!(format!("{s:?}"), "Secrets { keys: 2 }");
        assert!(Secrets::parse("").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("[secrets]\nA = 'x'\nB = 3\n", 3, "must be a string"),
            ("[secrets]\nA = 'x'\nA = 'y'\n", 3, ""),
            ("[secrets]\n\n\"has space\" = 'x'\n", 3, "not printable"),
            ("[secrets]\nA = ''\n", 2, "empty"),
            ("[secrets]\nA = ' x'\n", 2, "whitespace"),
            ("[secrets]\nA = \"x\\ty\"\n", 2, "control"),
            ("[keys]\nA = 'x'\n", 1, "unknown table"),
            ("A = 'x'\n", 1, "only a [secrets] table"),
            ("[secrets]\nA = 'x\n", 2, ""),
        ];
        for (text, line, needle) in cases {
            let e = Secrets::parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
        let long = format!("[secrets]\n{} = 'x'\n", "K".repeat(257));
        assert_eq!(Secrets::parse(&long).unwrap_err().line, 2);
    }

    #[test]
    fn generation_follows_content() {
        let a = Secrets::from_pairs([("A", "1"), ("B", "2")]);
        let b = Secrets::from_pairs([("B", "2"), ("A", "1")]);
        let c = Secrets::from_pairs([("A", "1"), ("B", "3")]);
        let d = Secrets::from_pairs([("A", "1B"), ("", "2")]);
        assert_eq!(a.generation(), b.generation());
        assert_ne!(a.generation(), c.generation());
        assert_ne!(a.generation(), d.generation());
    }
}
