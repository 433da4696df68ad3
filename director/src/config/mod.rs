//! Configuration: TOML -> validated [`Config`].

mod types;
pub use types::*;
