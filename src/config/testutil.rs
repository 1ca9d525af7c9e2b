//! Helpers shared by the config tests: a temporary directory, the one-server config
//! fragment, and `ok` / `err_at`, which load text and check the result's location.

use super::{Config, ConfigError, load_str};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);
impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tollgate-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
    /// Names of all files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub const SERVERS: &str = "[[upstream.servers]]\naddr = \"127.0.0.1:9000\"\n";

pub fn ok(text: &str) -> Config {
    match load_str(text, Path::new("/nonexistent/t.toml")) {
        Ok(c) => c,
        Err(e) => panic!("expected ok, got: {e}"),
    }
}

/// Load `text` (from a file named t.toml in a temp dir, with optional extra files) and
/// return the error, asserting its line and field.
pub fn err_at(text: &str, line: usize, field: &str) -> ConfigError {
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

/// A file of this repository, by path relative to the manifest.
pub fn manifest_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}
