//! The agent's spool: every push is written to disk before it is sent and deleted only
//! once the aggregator acknowledged it, so neither an aggregator outage nor an agent
//! restart loses a report.
//!
//! Files are `EPOCH-REGION.json` (so the name order is the send order), written
//! atomically; a push the aggregator refused for good goes to `rejected/`, never back
//! into the queue and never deleted. The spool is bounded: past `max` files the oldest
//! are evicted, and each eviction is logged. It does not send anything itself.

use std::fs;
use std::path::{Path, PathBuf};

use super::wire::Push;
use crate::artifact::{self, ArtifactError};

/// The folder, under the spool, of pushes the aggregator refused.
pub const REJECTED: &str = "rejected";

/// Errors of the spool's files.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("cannot use the spool folder {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    #[error("{path} is not a push the agent wrote: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// A folder of pushes waiting for an acknowledgement.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max: usize,
}

impl Spool {
    /// Opens (creating) the spool and removes temporary files a crash left behind;
    /// such a file was never renamed into place, so it was never a spooled push.
    pub fn open(dir: &Path, max: usize) -> Result<Spool, SpoolError> {
        let io = |source| SpoolError::Io {
            path: dir.to_path_buf(),
            source,
        };
        crate::files::create_dir_all(&dir.join(REJECTED)).map_err(io)?;
        for name in crate::files::remove_stale_temps(dir).map_err(io)? {
            tracing::info!("removed the unfinished spool file {name}");
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            max: max.max(1),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The most reports the spool keeps.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Spools `push` (replacing a file of the same key) and evicts the oldest files past
    /// the bound; returns the evicted files' names, which the caller must log.
    pub fn put(&self, push: &Push) -> Result<Vec<String>, SpoolError> {
        let name = format!("{}-{}.json", push.run_id(), push.region);
        artifact::write_json_atomic(&self.dir.join(&name), push)?;
        let pending = self.pending()?;
        let excess = pending.len().saturating_sub(self.max);
        let mut evicted = Vec::new();
        for path in pending.into_iter().take(excess) {
            fs::remove_file(&path).map_err(|source| SpoolError::Io {
                path: path.clone(),
                source,
            })?;
            evicted.push(file_name(&path));
        }
        Ok(evicted)
    }

    /// The spooled pushes, oldest first.
    pub fn pending(&self) -> Result<Vec<PathBuf>, SpoolError> {
        let io = |source| SpoolError::Io {
            path: self.dir.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && name.ends_with(".json") && entry.path().is_file() {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// Reads a spooled push.
    pub fn read(&self, path: &Path) -> Result<Push, SpoolError> {
        let bytes = crate::files::read_regular(path).map_err(|source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    /// Deletes an acknowledged push.
    pub fn ack(&self, path: &Path) -> Result<(), SpoolError> {
        fs::remove_file(path).map_err(|source| SpoolError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Moves a push the aggregator refused for good to `rejected/`, with the reason
    /// beside it; returns its new place.
    pub fn reject(&self, path: &Path, reason: &str) -> Result<PathBuf, SpoolError> {
        let to = self.dir.join(REJECTED).join(file_name(path));
        let io = |source| SpoolError::Io {
            path: to.clone(),
            source,
        };
        fs::rename(path, &to).map_err(io)?;
        // The push is set aside already; a reason that cannot be written is logged.
        if let Err(e) = artifact::write_atomic(&to.with_extension("reason.txt"), reason.as_bytes())
        {
            tracing::error!(
                "cannot write why {} was refused ({reason}): {e}",
                to.display()
            );
        }
        Ok(to)
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProberHealth;
    use crate::report::{REPORT_SCHEMA, RegionReport};
    use chrono::{DateTime, TimeDelta, Utc};

    fn push(minute: i64, region: &str) -> Push {
        let t = DateTime::parse_from_rfc3339("2026-11-26T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + TimeDelta::minutes(minute);
        Push::new(
            t,
            RegionReport {
                schema: REPORT_SCHEMA.into(),
                region: region.into(),
                started_at: t,
                finished_at: t,
                regions: vec![],
                prober: ProberHealth::default(),
                paths: vec![],
            },
        )
    }

    #[test]
    fn oldest_first_bounded_and_nothing_lost_silently() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = crate::files::temp_name("x.json", 4_194_305);
        std::fs::write(dir.path().join(&tmp), "half").unwrap();
        let spool = Spool::open(dir.path(), 3).unwrap();
        assert!(!dir.path().join(&tmp).exists());
        for m in [2, 0, 1] {
            assert!(spool.put(&push(m, "a")).unwrap().is_empty());
        }
        // A resend of the same key replaces the file rather than adding one.
        spool.put(&push(1, "a")).unwrap();
        let names: Vec<String> = spool
            .pending()
            .unwrap()
            .iter()
            .map(|p| file_name(p))
            .collect();
        assert_eq!(
            names,
            [
                "20261126T050000Z-a.json",
                "20261126T050100Z-a.json",
                "20261126T050200Z-a.json"
            ]
        );
        assert_eq!(
            spool.put(&push(3, "a")).unwrap(),
            ["20261126T050000Z-a.json"]
        );
        let first = spool.pending().unwrap()[0].clone();
        assert_eq!(spool.read(&first).unwrap(), push(1, "a"));
        let moved = spool.reject(&first, "400: bad").unwrap();
        assert!(moved.exists() && !first.exists());
        assert_eq!(spool.pending().unwrap().len(), 2);
        spool.ack(&spool.pending().unwrap()[0]).unwrap();
        assert_eq!(spool.pending().unwrap().len(), 1);
        std::fs::write(dir.path().join("junk.json"), "{").unwrap();
        let junk = dir.path().join("junk.json");
        assert!(matches!(spool.read(&junk), Err(SpoolError::Corrupt { .. })));
    }
}
