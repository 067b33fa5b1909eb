//! A series on disk: a folder of run folders (`NAME/run.json`) and its history file.
//!
//! Two layouts hold series: `latmap sweep --every OUT` writes `OUT/<epoch>/run.json`
//! with `OUT/history.redb`, and `latmap serve --data DATA` keeps
//! `DATA/runs/<run id>/run.json` with `DATA/history.redb`. Either way a run's name in the
//! history is its folder's name, and the history is made to hold exactly the runs on
//! disk whenever it is opened ([`Series::open`]): what retention removed is forgotten,
//! and what a crash left unrecorded (or a history deleted, or older than its runs) is
//! read again from the runs.

use std::path::{Path, PathBuf};

use super::{FILE_NAME, History, HistoryError};
use crate::run::Run;

/// A series' folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The folder holding one folder per run.
    pub runs: PathBuf,
    /// The history file.
    pub file: PathBuf,
}

/// What opening a series found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Runs on disk the history lacked, now recorded.
    pub added: usize,
    /// Runs on disk that could not be read (each logged), left out of the history.
    pub unreadable: usize,
}

impl Series {
    /// The layout of `latmap sweep --every OUT`.
    pub fn of_sweeps(out: &Path) -> Series {
        Series {
            runs: out.to_path_buf(),
            file: out.join(FILE_NAME),
        }
    }

    /// The layout of `latmap serve --data DATA`.
    pub fn of_store(data: &Path) -> Series {
        Series {
            runs: data.join("runs"),
            file: data.join(FILE_NAME),
        }
    }

    /// Whichever layout `dir` has: a serve data folder holds `runs/` and `reports/`.
    pub fn detect(dir: &Path) -> Series {
        if dir.join("runs").is_dir() && dir.join("reports").is_dir() {
            Series::of_store(dir)
        } else {
            Series::of_sweeps(dir)
        }
    }

    /// The names of the runs on disk, sorted: every folder (not a link, not hidden)
    /// holding a `run.json`.
    pub fn names(&self) -> std::io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.runs)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !name.starts_with('.') && entry.path().join("run.json").is_file() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// The run file of the run named `name`.
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.runs.join(name).join("run.json")
    }

    /// Opens the history and makes it hold exactly the runs on disk.
    pub fn open(&self) -> Result<(History, Synced), HistoryError> {
        let history = History::open(&self.file)?;
        let synced = self.sync(&history)?;
        Ok((history, synced))
    }

    /// Makes `history` hold exactly the runs on disk (after retention, or at start).
    pub fn sync(&self, history: &History) -> Result<Synced, HistoryError> {
        let names = self.names().map_err(|e| HistoryError::Io {
            path: self.runs.clone(),
            reason: e.to_string(),
        })?;
        let unreadable = std::cell::Cell::new(0);
        let added = history.sync_series(&names, |name| match Run::read(&self.run_file(name)) {
            Ok(run) => Some(run),
            Err(e) => {
                tracing::warn!(run = name, error = %e, "a run the history cannot read is left out of it");
                unreadable.set(unreadable.get() + 1);
                None
            }
        })?;
        Ok(Synced {
            added,
            unreadable: unreadable.get(),
        })
    }

    /// A history of the runs on disk, read from them afresh, in `file` (by default the
    /// series' own file, replaced).
    pub fn rebuild(&self, file: Option<&Path>) -> Result<(History, Synced), HistoryError> {
        let file = file.unwrap_or(&self.file);
        let tmp = file.with_extension("redb.rebuild");
        let _ = std::fs::remove_file(&tmp);
        let synced = {
            let fresh = History::open(&tmp)?;
            self.sync(&fresh)?
        };
        std::fs::rename(&tmp, file).map_err(|e| HistoryError::Io {
            path: file.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok((History::open(file)?, synced))
    }
}
