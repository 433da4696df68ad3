//! Configuration: TOML -> validated [`Config`], or every error as
//! `FILE:LINE:COL: message`.
//!
//! # Two phases, and why
//!
//! 1. **Structure** (`raw.rs`): serde maps the document onto raw structs whose
//!    fields are all `Option<Spanned<_>>`, with `deny_unknown_fields`. This
//!    phase rejects only what makes the file unreadable as *our* format: TOML
//!    syntax errors, unknown keys (typos such as `shceduler`) and values of
//!    the wrong TOML type. serde stops at the first such error, so this phase
//!    yields at most one error; `structure.rs` rewrites serde's terse message
//!    to name the key and its table (`unknown key "shceduler" in
//!    [[virtual_server]] ...`), by looking the error's byte span up in toml's
//!    spanned document tree. Before serde runs, the same tree is checked for
//!    tables written as arrays and vice versa (`[[global]]`), which serde's
//!    derived structs would otherwise misreport.
//! 2. **Semantics** (`validate.rs`): a plain walk over the raw structs that
//!    checks ranges, formats (addresses, durations, netmasks), defaults,
//!    exclusive and dependent keys, and cross-references (duplicate services,
//!    sync-group members, tracked vrrp_scripts, VRID clashes). It collects
//!    *all* errors, each at the span of the offending value (or of the table
//!    header when a required key is missing), so one `director check` run
//!    shows everything that is wrong instead of one error per
//!    edit-and-retry cycle. Programs to run (`vrrp_script`, `notify_*`) are
//!    argv arrays with an absolute path: the keepalived habit of a shell
//!    string is refused with the array to write instead.
//!
//! Keeping the phases apart keeps each simple: serde does what it is good at
//! (shape and types, with spans), and the rules users actually trip over
//! (keepalived/ipvsadm habits that IPVS would silently reinterpret) live in
//! ordinary code with messages that say what would be valid. Missing keys are
//! deliberately *not* serde errors (every field is optional in the raw
//! structs), so they are collected with the rest.
//!
//! Positions are 1-based; columns count characters, not bytes.

mod raw;
mod structure;
mod types;
mod validate;

pub use types::*;
pub use validate::NFTABLES_SCHEDULERS;

use std::fmt;
use std::path::Path;

/// One problem in a configuration file. Displays as `FILE:LINE:COL: message`
/// (or `FILE: message` when there is no position, `line == 0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    pub message: String,
}

/// Every problem found in a configuration file, sorted by position. Display
/// prints one `FILE:LINE:COL: message` per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", Lines(.errors))]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

struct Lines<'a>(&'a [ConfigError]);

impl fmt::Display for Lines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    fn new(mut errors: Vec<ConfigError>) -> Self {
        // Stable: errors at the same position keep the order found.
        errors.sort_by_key(|e| (e.line, e.col));
        ConfigErrors { errors }
    }

    pub fn errors(&self) -> &[ConfigError] {
        &self.errors
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }
}

/// 1-based (line, column) of a byte offset; columns count characters.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn error_at(text: &str, file: &str, offset: usize, message: String) -> ConfigError {
    let (line, col) = position(text, offset);
    ConfigError {
        file: file.to_string(),
        line,
        col,
        message,
    }
}

/// Parse and validate a configuration. `file_name` is only used in messages.
pub fn parse(text: &str, file_name: &str) -> Result<Config, ConfigErrors> {
    parse_for(text, file_name, None)
}

/// Like [`parse`], checked as if `global.dataplane` were `dataplane`: the
/// daemon calls it with the dataplane `auto` resolved to, so a config that
/// needs IPVS is refused (with positions) on a host without it.
pub fn parse_for(
    text: &str,
    file_name: &str,
    dataplane: Option<DataplaneChoice>,
) -> Result<Config, ConfigErrors> {
    let one = |s: structure::Structural| {
        ConfigErrors::new(vec![error_at(text, file_name, s.span.start, s.message)])
    };
    let (tree, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(one(structure::syntax_error(text, &syntax)));
    }
    if let Some(e) = structure::container_error(text, &tree) {
        return Err(one(e));
    }
    let raw: raw::RawConfig =
        toml::from_str(text).map_err(|e| one(structure::shape_error(text, &tree, &e)))?;
    validate::validate(text, &raw, dataplane).map_err(|errs| {
        ConfigErrors::new(
            errs.into_iter()
                .map(|(span, msg)| error_at(text, file_name, span.start, msg))
                .collect(),
        )
    })
}

/// Read and parse a configuration file. A read error is reported as
/// `FILE: cannot read: ...` (line and column 0, which Display omits).
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    load_for(path, None)
}

/// [`load`] checked for a given dataplane (see [`parse_for`]).
pub fn load_for(path: &Path, dataplane: Option<DataplaneChoice>) -> Result<Config, ConfigErrors> {
    let name = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse_for(&text, &name, dataplane),
        Err(e) => Err(ConfigErrors::new(vec![ConfigError {
            file: name,
            line: 0,
            col: 0,
            message: format!("cannot read: {e}"),
        }])),
    }
}

#[cfg(test)]
mod tests;
