//! Reading and writing latmap's JSON artifacts (region reports, runs).
//!
//! Files are written atomically: a temporary file in the same folder, flushed to disk,
//! then renamed over the target, so a reader never sees half a file and a crash never
//! leaves one. Readers check the `schema` tag's major version before anything else and
//! accept unknown fields, so newer minor versions stay readable.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Errors reading or writing an artifact. The messages leave the cause out: it is the
/// error's `source`, which the CLI prints after it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "{path} has schema {found:?}, expected {expected}1; it was written by another version of latmap or is not a latmap file"
    )]
    Schema {
        path: PathBuf,
        found: Option<String>,
        expected: &'static str,
    },
}

/// Writes `value` as pretty JSON to `path` atomically.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), ArtifactError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| ArtifactError::Write {
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    bytes.push(b'\n');
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    let err = |source| ArtifactError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(err)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(err)
}

/// Reads a JSON artifact whose `schema` must start with `prefix` and have major version 1.
pub fn read_versioned<T: DeserializeOwned>(
    path: &Path,
    prefix: &'static str,
) -> Result<T, ArtifactError> {
    let bytes = fs::read(path).map_err(|source| ArtifactError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let json = |source| ArtifactError::Json {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(json)?;
    let schema = value
        .get("schema")
        .and_then(|s| s.as_str())
        .map(str::to_string);
    let ok = schema
        .as_deref()
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|v| v.split('.').next())
        .is_some_and(|major| major == "1");
    if !ok {
        return Err(ArtifactError::Schema {
            path: path.to_path_buf(),
            found: schema,
            expected: prefix,
        });
    }
    serde_json::from_value(value).map_err(json)
}
