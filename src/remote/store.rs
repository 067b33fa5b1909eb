//! The aggregator's embedded store: plain files under the data folder.
//!
//! `reports/<run id>/<region>.json` holds each accepted region report (the source of
//! truth: runs are rebuilt from it after a restart), `runs/<run id>/run.json` each
//! assembled run. Every file is written atomically (temporary file, fsync, rename), so
//! only complete files ever carry a real name; temporary files a crash left are removed
//! on open. Callers serialise writes; this module does not lock.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::artifact::{self, ArtifactError};
use crate::report::RegionReport;
use crate::run::Run;
use crate::schedule::Retention;

use super::wire::parse_run_id;

/// Errors of the store's files.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use the data folder {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// What storing a report did.
#[derive(Debug, Clone, PartialEq)]
pub enum Put {
    Stored,
    /// The same report was already stored under this key.
    Duplicate,
    /// Another report is stored under this key.
    Conflict,
}

/// The data folder.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Store {
    /// Opens (creating) the data folder and removes leftover temporary files.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for sub in ["reports", "runs"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir).map_err(io(&dir))?;
            // A deletion by retention that a crash interrupted: finish it.
            for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                let entry = entry.map_err(io(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".deleting") {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
            for id in store.ids(sub)? {
                let folder = dir.join(&id);
                for entry in fs::read_dir(&folder).map_err(io(&folder))? {
                    let entry = entry.map_err(io(&folder))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name.starts_with('.') && name.contains(".tmp-") {
                        tracing::warn!(
                            "removing {}: a write that a crash interrupted",
                            entry.path().display()
                        );
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(store)
    }

    /// The run ids with a folder under `reports` or `runs`, oldest first.
    fn ids(&self, sub: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(sub);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if parse_run_id(&name).is_some() && entry.path().is_dir() {
                ids.push(name);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Run ids with at least one stored report, oldest first.
    pub fn report_ids(&self) -> Result<Vec<String>, StoreError> {
        self.ids("reports")
    }

    /// Run ids with an assembled run, oldest first.
    pub fn run_ids(&self) -> Result<Vec<String>, StoreError> {
        let ids = self.ids("runs")?;
        Ok(ids
            .into_iter()
            .filter(|id| self.run_path(id).is_file())
            .collect())
    }

    fn report_path(&self, id: &str, region: &str) -> PathBuf {
        self.root
            .join("reports")
            .join(id)
            .join(format!("{region}.json"))
    }

    pub fn run_path(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id).join("run.json")
    }

    /// Stores `report` under (id, its region) unless a report is there already.
    /// `id` and the region name must have been validated.
    pub fn put_report(&self, id: &str, report: &RegionReport) -> Result<Put, StoreError> {
        let path = self.report_path(id, &report.region);
        if path.exists() {
            let stored = RegionReport::read(&path, None)?;
            return Ok(if &stored == report {
                Put::Duplicate
            } else {
                Put::Conflict
            });
        }
        artifact::write_json_atomic(&path, report)?;
        Ok(Put::Stored)
    }

    /// The regions that reported for run `id`, with the time of their newest report.
    pub fn reported(&self, id: &str) -> Result<Vec<(String, SystemTime)>, StoreError> {
        let dir = self.root.join("reports").join(id);
        let mut out = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(region) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            {
                let mtime = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((region.to_string(), mtime));
            }
        }
        out.sort();
        Ok(out)
    }

    /// The stored reports of run `id`. A report that cannot be read is logged and left
    /// out (and left on disk).
    pub fn reports(&self, id: &str) -> Result<Vec<RegionReport>, StoreError> {
        let mut out = Vec::new();
        for (region, _) in self.reported(id)? {
            match RegionReport::read(&self.report_path(id, &region), None) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!("leaving out a stored report: {e}"),
            }
        }
        Ok(out)
    }

    /// Every region named in run `id`'s reports (their view of the fleet).
    pub fn fleet(&self, reports: &[RegionReport]) -> BTreeSet<String> {
        reports
            .iter()
            .flat_map(|r| {
                r.regions
                    .iter()
                    .map(|x| x.name.clone())
                    .chain([r.region.clone()])
            })
            .collect()
    }

    /// Writes (or replaces) the run of `id`.
    /// Deletes the runs (and their reports) that `retention` does not keep: beyond the
    /// newest `keep`, or older than `max_age`; never the newest. A run's folders are
    /// renamed out of sight first, so a reader never sees half a run. Returns the ids
    /// deleted, oldest first. Callers hold the write lock, so no report is being stored
    /// meanwhile.
    pub fn prune(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids: Vec<String> = self.report_ids()?;
        ids.extend(self.run_ids()?);
        ids.sort();
        ids.dedup();
        let n = ids.len();
        let mut gone = Vec::new();
        for (i, id) in ids.into_iter().enumerate() {
            if i + 1 == n {
                break;
            }
            let too_many = retention.keep.is_some_and(|k| n - i > k);
            let too_old = match (
                retention
                    .max_age
                    .and_then(|a| chrono::TimeDelta::from_std(a).ok()),
                parse_run_id(&id),
            ) {
                (Some(age), Some(t)) => now - t > age,
                _ => false,
            };
            if !(too_many || too_old) {
                continue;
            }
            for sub in ["runs", "reports"] {
                let dir = self.root.join(sub).join(&id);
                if dir.exists() {
                    let hidden = self.root.join(sub).join(format!(".{id}.deleting"));
                    fs::rename(&dir, &hidden).map_err(io(&dir))?;
                    fs::remove_dir_all(&hidden).map_err(io(&hidden))?;
                }
            }
            gone.push(id);
        }
        Ok(gone)
    }

    pub fn put_run(&self, id: &str, run: &Run) -> Result<(), StoreError> {
        Ok(run.write(&self.run_path(id))?)
    }

    /// The run of `id`, if assembled.
    pub fn run(&self, id: &str) -> Result<Option<Run>, StoreError> {
        let path = self.run_path(id);
        if !path.is_file() {
            return Ok(None);
        }
        Ok(Some(Run::read(&path)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProberHealth;
    use crate::report::REPORT_SCHEMA;

    fn report(region: &str, sent: u64) -> RegionReport {
        // Sub-second precision, as real reports have: it must survive the round trip.
        let t = chrono::DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap();
        RegionReport {
            schema: REPORT_SCHEMA.into(),
            region: region.into(),
            started_at: t,
            finished_at: t,
            regions: vec![],
            prober: ProberHealth::default(),
            paths: vec![crate::report::PathEntry::from_samples(
                region,
                "x",
                crate::config::ProbeKind::Udp,
                "127.0.0.1:9",
                vec![Some(sent); sent as usize],
            )],
        }
    }

    #[test]
    fn reports_are_stored_once_and_temp_files_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let id = "20261126T050000Z";
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.put_report(id, &report("a", 3)).unwrap(), Put::Stored);
        assert_eq!(
            store.put_report(id, &report("a", 3)).unwrap(),
            Put::Duplicate
        );
        assert_eq!(
            store.put_report(id, &report("a", 4)).unwrap(),
            Put::Conflict
        );
        let tmp = dir.path().join("reports").join(id).join(".b.json.tmp-9");
        std::fs::write(&tmp, "{\"schema\": \"latmap.rep").unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(!tmp.exists());
        assert_eq!(store.report_ids().unwrap(), [id]);
        assert_eq!(store.reports(id).unwrap().len(), 1);
        assert!(store.run(id).unwrap().is_none());
        let run = Run::from_reports(&store.reports(id).unwrap()).unwrap();
        store.put_run(id, &run).unwrap();
        assert_eq!(store.run_ids().unwrap(), [id]);
        assert_eq!(store.run(id).unwrap(), Some(run));
    }
}
