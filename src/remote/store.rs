//! The aggregator's embedded store: plain files under the data folder.
//!
//! `reports/<run id>/<region>.json` holds each accepted region report in latmap's own
//! artifact layout (the source of truth: runs are rebuilt from it after a restart),
//! `runs/<run id>/run.json` each assembled run and `runs/<run id>/listing.json` its
//! entry of `GET /v1/runs`, so that listing the runs never reads a run. Every file is
//! written atomically (temporary file, fsync, rename, fsync of the folder); a batch
//! of reports is made durable together ("group commit"), and nothing of a batch is
//! reported stored before all of it is on disk. Temporary files a crash left are
//! removed by [`Store::clean`]. Files are created 0640 and folders 0750 (before the
//! umask). Callers serialise writes; this module does not lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

use crate::artifact::{self, ArtifactError};
use crate::files;
use crate::report::RegionReport;
use crate::run::Run;
use crate::schedule::Retention;

use super::wire::{RunListing, parse_run_id};

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

/// One report to store: its run, its region, and its bytes in the artifact layout
/// (`RegionReport::to_artifact`), which are what the file will hold and what tells
/// a resend from another report.
#[derive(Debug, Clone)]
pub struct Pending<'a> {
    pub id: &'a str,
    pub region: &'a str,
    pub bytes: &'a [u8],
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

/// How many threads sync a batch's files at once.
const SYNC_THREADS: usize = 16;

/// Syncs a folder, so that the names created or renamed in it are durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

impl Store {
    /// Opens (creating) the data folder. Cheap whatever is stored: it reads no run and
    /// no folder of a run (see [`Store::clean`] for the leftovers of a crash).
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let store = Store {
            root: root.to_path_buf(),
        };
        for sub in ["reports", "runs"] {
            let dir = root.join(sub);
            files::create_dir_all(&dir).map_err(io(&dir))?;
        }
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(root)
            && meta.permissions().mode() & 0o007 != 0
        {
            tracing::warn!(
                "the data folder {} can be read by other users; run `chmod o-rwx {}`",
                root.display(),
                root.display()
            );
        }
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Finishes what a crash interrupted: deletions by retention (folders renamed
    /// `.ID.deleting`) and atomic writes (temporary files of processes no longer
    /// running). Reads every folder of the store, so it runs in the background.
    pub fn clean(&self) -> Result<(), StoreError> {
        for sub in ["reports", "runs"] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(io(&dir))? {
                let entry = entry.map_err(io(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".deleting") {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
            for id in self.ids(sub)? {
                let folder = dir.join(&id);
                for name in files::remove_stale_temps(&folder).map_err(io(&folder))? {
                    tracing::warn!(
                        "removed {}/{name}: a write that a crash interrupted",
                        folder.display()
                    );
                }
            }
        }
        Ok(())
    }

    /// The run ids with a folder under `reports` or `runs`, oldest first. Reads only
    /// the one folder (names and types), so it is fast with many runs.
    fn ids(&self, sub: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.root.join(sub);
        let mut ids = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if parse_run_id(&name).is_some() && entry.file_type().is_ok_and(|t| t.is_dir()) {
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

    /// Run ids with a run folder, oldest first (the run itself may be missing if a
    /// crash came before its first write; [`Store::listing`] then says so).
    pub fn run_ids(&self) -> Result<Vec<String>, StoreError> {
        self.ids("runs")
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

    fn listing_path(&self, id: &str) -> PathBuf {
        self.root.join("runs").join(id).join("listing.json")
    }

    /// The file of the stored report of `region` for run `id`.
    pub fn report_file(&self, id: &str, region: &str) -> PathBuf {
        self.report_path(id, region)
    }

    /// Stores a batch of reports: every new one is written, then all are synced and
    /// renamed into place, then their folders synced. Each result says what became
    /// of the report at the same index; `Stored` and `Duplicate` only once it is
    /// durable. Ids and region names must have been validated.
    pub fn commit(&self, batch: &[Pending<'_>]) -> Vec<Result<Put, StoreError>> {
        let mut results: Vec<Option<Result<Put, StoreError>>> =
            (0..batch.len()).map(|_| None).collect();
        // Folders to sync once everything is renamed, with the results that wait on
        // them.
        let mut dirs: BTreeMap<PathBuf, Vec<usize>> = BTreeMap::new();
        // Written temporary files: (index, temporary path, final path).
        let mut written: Vec<(usize, PathBuf, PathBuf)> = Vec::new();
        // The first report of each key in this batch.
        let mut first: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for (i, p) in batch.iter().enumerate() {
            let path = self.report_path(p.id, p.region);
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            if let Some(&j) = first.get(&path) {
                // The same key twice in one batch: judged like a resend.
                let same = batch[j].bytes == p.bytes;
                results[i] = Some(Ok(if same { Put::Duplicate } else { Put::Conflict }));
                dirs.entry(dir).or_default().push(i);
                continue;
            }
            first.insert(path.clone(), i);
            if path.exists() {
                results[i] = Some(match self.compare(&path, p) {
                    Ok(Put::Duplicate) => {
                        // Durable before it is acknowledged, even if an earlier
                        // answer was lost with the server.
                        dirs.entry(dir).or_default().push(i);
                        Ok(Put::Duplicate)
                    }
                    other => other,
                });
                continue;
            }
            match self.write_temp(&dir, &path, p.bytes) {
                Ok(tmp) => {
                    written.push((i, tmp, path));
                    dirs.entry(dir).or_default().push(i);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // Synced together: each file's fsync waits for the journal, and fsyncs issued at
        // once share its commits, where one after another each would wait for its own.
        let synced: Vec<std::io::Result<()>> = std::thread::scope(|scope| {
            let chunks: Vec<_> = written
                .chunks(written.len().div_ceil(SYNC_THREADS).max(1))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(_, tmp, _)| fs::File::open(tmp).and_then(|f| f.sync_all()))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            chunks
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(std::io::Error::other("a sync thread failed"))]
                    })
                })
                .collect()
        });
        let mut ready = Vec::with_capacity(written.len());
        for ((i, tmp, path), sync) in written.into_iter().zip(synced) {
            match sync {
                Ok(()) => ready.push((i, tmp, path)),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    results[i] = Some(Err(io(&path)(e)));
                }
            }
        }
        for (i, tmp, path) in ready {
            match fs::rename(&tmp, &path) {
                Ok(()) => results[i] = Some(Ok(Put::Stored)),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    results[i] = Some(Err(io(&path)(e)));
                }
            }
        }
        // The folders too, at once.
        let dirs: Vec<(PathBuf, Vec<usize>)> = dirs.into_iter().collect();
        let dirs: Vec<(PathBuf, Vec<usize>, std::io::Result<()>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = dirs
                .chunks(dirs.len().div_ceil(SYNC_THREADS).max(1))
                .map(|chunk| {
                    scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(dir, waiting)| (dir.clone(), waiting.clone(), sync_dir(dir)))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().ok())
                .flatten()
                .collect()
        });
        for (dir, waiting, synced) in dirs {
            if let Err(e) = synced {
                tracing::error!("cannot sync the folder {}: {e}", dir.display());
                for i in waiting {
                    if matches!(results[i], Some(Ok(_))) {
                        results[i] = Some(Err(StoreError::Io {
                            path: dir.clone(),
                            source: std::io::Error::new(e.kind(), e.to_string()),
                        }));
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(StoreError::Io {
                        path: self.root.clone(),
                        source: std::io::Error::other("the report was not handled"),
                    })
                })
            })
            .collect()
    }

    /// Whether the stored report at `path` is the one `p` brings.
    fn compare(&self, path: &Path, p: &Pending<'_>) -> Result<Put, StoreError> {
        let stored = files::read_regular(path).map_err(io(path))?;
        if stored == p.bytes {
            return Ok(Put::Duplicate);
        }
        // Written by another version, perhaps: the same report laid out again.
        let stored = RegionReport::read(path, None)?;
        let same = stored
            .to_artifact()
            .is_ok_and(|(bytes, _)| bytes == p.bytes);
        Ok(if same { Put::Duplicate } else { Put::Conflict })
    }

    /// Writes the temporary file of `path` (creating its folder, durably).
    fn write_temp(&self, dir: &Path, path: &Path, bytes: &[u8]) -> Result<PathBuf, StoreError> {
        if !dir.exists() {
            files::create_dir_all(dir).map_err(io(dir))?;
            if let Some(parent) = dir.parent() {
                sync_dir(parent).map_err(io(parent))?;
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Synced and renamed by the caller, with the rest of the batch; removed here
        // if it cannot be written.
        let mut tmp = files::temp_file(dir, &name).map_err(io(path))?;
        tmp.write_all(bytes).map_err(io(path))?;
        let (_, kept) = tmp.keep().map_err(|e| io(path)(e.error))?;
        Ok(kept)
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

    /// The stored report of `region` for run `id`, checked.
    pub fn report(&self, id: &str, region: &str) -> Result<RegionReport, StoreError> {
        Ok(RegionReport::read(&self.report_path(id, region), None)?)
    }

    /// The stored reports of run `id`. A report that cannot be read is logged and left
    /// out (and left on disk).
    pub fn reports(&self, id: &str) -> Result<Vec<RegionReport>, StoreError> {
        let mut out = Vec::new();
        for (region, _) in self.reported(id)? {
            match self.report(id, &region) {
                Ok(r) => out.push(r),
                Err(e) => tracing::error!("leaving out a stored report: {}", chain(&e)),
            }
        }
        Ok(out)
    }

    /// Deletes the runs (and their reports) that `retention` does not keep: beyond the
    /// newest `keep`, or older than `max_age`. Only runs whose epoch is at most
    /// `newest` (the newest plausible epoch: the server's clock plus the allowed
    /// skew) are counted or deleted, and the newest of them is never deleted, so a
    /// run from the future cannot push real ones out. A run's folders are renamed out
    /// of sight first, so a reader never sees half a run. Returns the ids deleted,
    /// oldest first. Callers hold the write lock, so no report is being stored
    /// meanwhile.
    pub fn prune(
        &self,
        retention: Retention,
        now: DateTime<Utc>,
        newest: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut ids: BTreeSet<String> = self.report_ids()?.into_iter().collect();
        ids.extend(self.run_ids()?);
        let runs: Vec<(DateTime<Utc>, String)> = ids
            .into_iter()
            .filter_map(|id| Some((parse_run_id(&id)?, id)))
            .filter(|(t, _)| *t <= newest)
            .collect();
        let mut gone = Vec::new();
        for id in retention.expired(&runs, now) {
            for sub in ["runs", "reports"] {
                let dir = self.root.join(sub).join(id);
                if dir.exists() {
                    let hidden = self.root.join(sub).join(format!(".{id}.deleting"));
                    fs::rename(&dir, &hidden).map_err(io(&dir))?;
                    fs::remove_dir_all(&hidden).map_err(io(&hidden))?;
                }
            }
            gone.push(id.clone());
        }
        Ok(gone)
    }

    /// Writes (or replaces) the run of `id` with its paths taken from `paths`, then
    /// its listing. See [`Run::write_with_paths`].
    pub fn put_run_with(
        &self,
        id: &str,
        run: &Run,
        paths: impl FnOnce(&mut artifact::ElementWriter<'_>) -> std::io::Result<()>,
        listing: &RunListing,
    ) -> Result<(), StoreError> {
        run.write_with_paths(&self.run_path(id), paths)?;
        artifact::write_json_atomic(&self.listing_path(id), listing)?;
        Ok(())
    }

    /// Writes (or replaces) the run of `id`, then its listing.
    pub fn put_run(&self, id: &str, run: &Run, listing: &RunListing) -> Result<(), StoreError> {
        run.write(&self.run_path(id))?;
        artifact::write_json_atomic(&self.listing_path(id), listing)?;
        Ok(())
    }

    /// The listing of run `id`: from its listing file; `None` when there is no run.
    /// A run written before listing files existed (or whose listing a crash lost) is
    /// read once and its listing written.
    pub fn listing(&self, id: &str) -> Result<Option<RunListing>, StoreError> {
        let path = self.listing_path(id);
        match files::read_regular(&path) {
            Ok(bytes) => match serde_json::from_slice::<RunListing>(&bytes) {
                Ok(l) if l.id == id && self.run_path(id).is_file() => return Ok(Some(l)),
                Ok(_) | Err(_) => {
                    tracing::warn!("{} is not a listing; reading the run", path.display())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
        let Some(run) = self.run(id)? else {
            return Ok(None);
        };
        let Some(listing) = RunListing::of(id, &run) else {
            return Ok(None);
        };
        artifact::write_json_atomic(&path, &listing)?;
        Ok(Some(listing))
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

/// An error and its causes on one line: `cannot write X: No space left on device`.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProberHealth;
    use crate::report::{REPORT_SCHEMA, RegionInfo};

    pub(crate) fn report(region: &str, sent: u64) -> RegionReport {
        // Sub-second precision, as real reports have: it must survive the round trip.
        let t = chrono::DateTime::from_timestamp(1_795_000_000, 123_456_789).unwrap();
        RegionReport {
            schema: REPORT_SCHEMA.into(),
            region: region.into(),
            started_at: t,
            finished_at: t,
            regions: [region, "x"]
                .iter()
                .map(|n| RegionInfo {
                    name: n.to_string(),
                    location: None,
                })
                .collect(),
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

    pub(crate) fn bytes(r: &RegionReport) -> Vec<u8> {
        let mut b = artifact::to_string(r).unwrap().into_bytes();
        b.push(b'\n');
        b
    }

    fn put(store: &Store, id: &str, r: &RegionReport) -> Put {
        let b = bytes(r);
        let mut out = store.commit(&[Pending {
            id,
            region: &r.region,
            bytes: &b,
        }]);
        out.remove(0).unwrap()
    }

    #[test]
    fn reports_are_stored_once_and_temp_files_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let id = "20261126T050000Z";
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(put(&store, id, &report("a", 3)), Put::Stored);
        assert_eq!(put(&store, id, &report("a", 3)), Put::Duplicate);
        assert_eq!(put(&store, id, &report("a", 4)), Put::Conflict);
        // The stored file is the report in the artifact layout.
        let stored = std::fs::read(dir.path().join("reports").join(id).join("a.json")).unwrap();
        assert_eq!(stored, bytes(&report("a", 3)));
        let tmp = dir
            .path()
            .join("reports")
            .join(id)
            .join(files::temp_name("b.json", 4_194_305));
        std::fs::write(&tmp, "{\"schema\": \"latmap.rep").unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.clean().unwrap();
        assert!(!tmp.exists());
        assert_eq!(store.report_ids().unwrap(), [id]);
        assert_eq!(store.reports(id).unwrap().len(), 1);
        assert!(store.run(id).unwrap().is_none());
        let run = Run::from_reports(&store.reports(id).unwrap()).unwrap();
        let listing = RunListing::of(id, &run).unwrap();
        store.put_run(id, &run, &listing).unwrap();
        assert_eq!(store.run_ids().unwrap(), [id]);
        assert_eq!(store.run(id).unwrap(), Some(run));
        assert_eq!(store.listing(id).unwrap(), Some(listing.clone()));
        // A lost listing is rebuilt from the run.
        std::fs::remove_file(store.listing_path(id)).unwrap();
        assert_eq!(store.listing(id).unwrap(), Some(listing));
        assert!(store.listing_path(id).exists());
    }

    #[test]
    fn a_batch_is_judged_report_by_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, a2, b) = (report("a", 3), report("a", 5), report("b", 3));
        let (ba, ba2, bb) = (bytes(&a), bytes(&a2), bytes(&b));
        let batch = [
            Pending {
                id: "20261126T050000Z",
                region: &a.region,
                bytes: &ba,
            },
            Pending {
                id: "20261126T050000Z",
                region: &a.region,
                bytes: &ba,
            },
            Pending {
                id: "20261126T050000Z",
                region: &a2.region,
                bytes: &ba2,
            },
            Pending {
                id: "20261126T050500Z",
                region: &b.region,
                bytes: &bb,
            },
        ];
        let out: Vec<Put> = store
            .commit(&batch)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            out,
            [Put::Stored, Put::Duplicate, Put::Conflict, Put::Stored]
        );
        assert_eq!(
            store.report_ids().unwrap(),
            ["20261126T050000Z", "20261126T050500Z"]
        );
    }

    #[test]
    fn retention_ignores_runs_from_the_future() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let ids = [
            "20261126T050000Z",
            "20261126T050500Z",
            "20261126T051000Z",
            "29990101T000000Z",
            "99991231T235959Z",
        ];
        for id in ids {
            assert_eq!(put(&store, id, &report("a", 2)), Put::Stored);
        }
        let now: DateTime<Utc> = "2026-11-26T05:11:00Z".parse().unwrap();
        let keep = Retention {
            keep: Some(1),
            max_age: None,
        };
        let gone = store
            .prune(keep, now, now + chrono::TimeDelta::minutes(5))
            .unwrap();
        // The two real runs before the newest real one go; the future ones are neither
        // counted nor deleted.
        assert_eq!(gone, ["20261126T050000Z", "20261126T050500Z"]);
        assert_eq!(
            store.report_ids().unwrap(),
            ["20261126T051000Z", "29990101T000000Z", "99991231T235959Z"]
        );
    }
}
