//! The spanned TOML document behind every `FILE:LINE: FIELD` message.
//!
//! Owns: field paths (`Seg`, the `p!` macro, `render_path`), the parsed document with its
//! spans (`Doc`, from `toml::de::DeTable`): a serde error span → the dotted field path, a field
//! path → the line of its value (or of its deepest present ancestor), and reading and parsing a
//! file into a raw serde type (`read_text`, `parse_doc`).
//! Must not touch: what a valid value is (that is `validate`'s and `keys`'s job).

use super::error::ConfigError;
use serde::Deserialize;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::path::PathBuf;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// Read a whole file; a failure is `ConfigError::Read` naming it.
pub(super) fn read_text(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.to_path_buf(),
        source,
    })
}

/// Parse `text` (read from `path`) into its spanned document and a raw serde type `T`;
/// syntax errors, unknown fields and wrong types name their line and field.
pub(super) fn parse_doc<'a, T: Deserialize<'a>>(
    text: &'a str,
    path: &Path,
) -> Result<(Doc<'a>, T), ConfigError> {
    let doc = Doc::parse(text, path)?;
    let raw = T::deserialize(toml::de::Deserializer::from(doc.root.clone()))
        .map_err(|e| doc.serde_error(&e))?;
    Ok((doc, raw))
}

/// One segment of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

impl Seg {
    pub(super) fn key(k: &str) -> Seg {
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

/// `p!["upstream", "servers", i]`: a field path as an array of `Seg`s.
macro_rules! p {
    ($($s:expr),* $(,)?) => { [$($crate::config::doc::Seg::from($s)),*] };
}
pub(super) use p;

pub(super) fn render_path(path: &[Seg]) -> String {
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
pub(super) struct Doc<'a> {
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

    pub(super) fn error_at(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
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
    pub(super) fn tier_order(&self) -> Vec<String> {
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

#[cfg(test)]
mod tests {
    use crate::config::testutil::{SERVERS, err_at};

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
}
