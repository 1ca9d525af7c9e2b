//! The error every config load returns: `FILE:LINE: FIELD: message`, or the flag for a
//! command-line value, or the file that could not be read.
//!
//! Owns: `ConfigError` and its accessors. Must not touch: parsing or validation (the spanned
//! document in `doc` builds `Invalid` errors; `validate` decides what is wrong).

use std::path::{Path, PathBuf};

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
