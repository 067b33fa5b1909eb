//! Loading `regions.toml` into a [`Config`](super::Config), with located diagnostics.

use std::path::Path;

use super::Config;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Every problem found in a configuration, reported at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .diagnostics.iter().map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message)).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let _ = path;
    todo!()
}

/// Validates configuration text as if read from `path` (relative lab files are resolved
/// against `path`'s folder).
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let _ = (text, path);
    todo!()
}
