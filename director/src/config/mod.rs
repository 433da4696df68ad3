//! Configuration: TOML -> validated [`Config`]. (Temporary shim in main
//! until the config branch lands; replaced by the real loader.)

mod types;
pub use types::*;

#[derive(Debug, thiserror::Error)]
#[error("config loader not merged yet")]
pub struct ConfigErrors;

pub fn load(_path: &std::path::Path) -> Result<Config, ConfigErrors> {
    Err(ConfigErrors)
}
