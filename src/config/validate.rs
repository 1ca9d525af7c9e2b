//! TODO: raw → validated. (stub)
use super::Config;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

pub fn load(_path: &Path) -> Result<Config, ConfigError> {
    Err(ConfigError("not implemented".into()))
}

pub fn load_str(_text: &str, _path: &Path) -> Result<Config, ConfigError> {
    Err(ConfigError("not implemented".into()))
}
