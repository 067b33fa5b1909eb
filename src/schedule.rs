//! Sweep schedules: a fixed period or a cron expression, with epochs aligned to the
//! wall clock so that every region's agent agrees on which sweep a report belongs to;
//! run folders, the `latest` link, and retention.
//!
//! Owns time arithmetic and the run folder's layout only; it neither probes nor serves.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// When sweeps start.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// Every `period`, at whole multiples of it since 1970-01-01T00:00:00Z, so that
    /// `5m` means :00, :05, :10 ... on every machine.
    Every(Duration),
    /// At the times a cron expression (5 fields, or 6 with seconds) names, in UTC.
    Cron {
        expression: String,
        cron: Box<croner::Cron>,
    },
}

/// A schedule that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// The period breaks the rule of `[schedule] every` (whole seconds, at least one).
    #[error("the period {0}")]
    Period(String),
    #[error(
        "invalid cron expression {expression:?}: {reason}; write five fields like \"*/5 * * * *\" (minute hour day month weekday)"
    )]
    Cron { expression: String, reason: String },
    #[error("the cron expression {0:?} never fires")]
    Never(String),
}

impl Schedule {
    pub fn every(period: Duration) -> Result<Schedule, ScheduleError> {
        if let Some(why) = crate::config::keys::schedule::EVERY.range.duration(period) {
            return Err(ScheduleError::Period(why));
        }
        Ok(Schedule::Every(period))
    }

    /// The schedule of merged settings (`config::settings::schedule`): its period, else
    /// its cron expression.
    pub fn of(settings: &crate::config::ScheduleSettings) -> Result<Schedule, ScheduleError> {
        match (settings.every, &settings.cron) {
            (Some(period), _) => Schedule::every(period),
            (None, Some(cron)) => Schedule::cron(cron),
            (None, None) => Err(ScheduleError::Period(
                "is missing: set every or cron".into(),
            )),
        }
    }

    pub fn cron(expression: &str) -> Result<Schedule, ScheduleError> {
        let cron = croner::Cron::from_str(expression).map_err(|e| ScheduleError::Cron {
            expression: expression.to_string(),
            reason: e.to_string(),
        })?;
        let schedule = Schedule::Cron {
            expression: expression.to_string(),
            cron: Box::new(cron),
        };
        // Reject expressions that can never fire (31 February) now, not at run time.
        schedule
            .next_epoch(Utc::now())
            .ok_or_else(|| ScheduleError::Never(expression.to_string()))?;
        Ok(schedule)
    }

    /// The first epoch strictly after `after`.
    pub fn next_epoch(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let p = period.as_millis() as i64;
                let t = after.timestamp_millis();
                let next = (t.div_euclid(p) + 1) * p;
                DateTime::from_timestamp_millis(next)
            }
            Schedule::Cron { cron, .. } => cron.find_next_occurrence(&after, false).ok(),
        }
    }

    /// The epoch `t` falls in: the latest epoch at or before `t`. An agent that starts a
    /// sweep a little late (jitter, a slow start) still files it under its epoch.
    pub fn epoch_of(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(period) => {
                let p = period.as_millis() as i64;
                DateTime::from_timestamp_millis(t.timestamp_millis().div_euclid(p) * p)
            }
            Schedule::Cron { cron, .. } => cron.find_previous_occurrence(&t, true).ok(),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Every(p) => write!(f, "every {}", humantime::format_duration(*p)),
            Schedule::Cron { expression, .. } => write!(f, "cron \"{expression}\" (UTC)"),
        }
    }
}

/// The folder name of the run of `epoch`: `20261126T050000Z`.
pub fn run_dir_name(epoch: DateTime<Utc>) -> String {
    epoch.format("%Y%m%dT%H%M%SZ").to_string()
}

fn parse_run_dir_name(name: &str) -> Option<DateTime<Utc>> {
    chrono::NaiveDateTime::parse_from_str(name, "%Y%m%dT%H%M%SZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The run folders of a series folder `dir` (named like [`run_dir_name`]), oldest first,
/// with their epochs.
pub fn run_dirs(dir: &Path) -> std::io::Result<Vec<(DateTime<Utc>, PathBuf)>> {
    let mut runs: Vec<(DateTime<Utc>, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name();
        if let Some(t) = name.to_str().and_then(parse_run_dir_name) {
            runs.push((t, entry.path()));
        }
    }
    runs.sort();
    Ok(runs)
}

/// Points `dir/latest` at `dir/name` atomically (a new link renamed over the old one).
pub fn update_latest(dir: &Path, name: &str) -> std::io::Result<()> {
    let tmp = dir.join(crate::files::temp_name("latest", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(name, &tmp)?;
    std::fs::rename(&tmp, dir.join("latest"))
}

/// How many runs to keep.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Retention {
    /// Keep at most this many runs (the newest).
    pub keep: Option<usize>,
    /// Delete runs older than this.
    pub max_age: Option<Duration>,
}

impl Retention {
    /// Whether a run is beyond the retention: `rank` is its place counted from the
    /// newest (1 for the newest), `epoch` its time. The caller never deletes the
    /// newest run.
    pub fn deletes(&self, rank: usize, epoch: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        let too_many = self.keep.is_some_and(|k| rank > k);
        let too_old = match (
            self.max_age.and_then(|a| TimeDelta::from_std(a).ok()),
            epoch,
        ) {
            (Some(age), Some(t)) => now - t > age,
            _ => false,
        };
        too_many || too_old
    }
}

/// Deletes the run folders of `dir` (those named like [`run_dir_name`]) that `retention`
/// does not keep; never the newest one. Returns the folders removed.
pub fn apply_retention(
    dir: &Path,
    retention: Retention,
    now: DateTime<Utc>,
) -> std::io::Result<Vec<PathBuf>> {
    let runs = run_dirs(dir)?;
    let mut removed = Vec::new();
    let n = runs.len();
    for (i, (t, path)) in runs.into_iter().enumerate() {
        if i + 1 == n {
            break; // the newest run always stays
        }
        if retention.deletes(n - i, Some(t), now) {
            std::fs::remove_dir_all(&path)?;
            removed.push(path);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn periods_align_to_the_clock() {
        let s = Schedule::every(Duration::from_secs(300)).unwrap();
        assert_eq!(
            s.next_epoch(t("2026-11-26T05:02:13Z")),
            Some(t("2026-11-26T05:05:00Z"))
        );
        assert_eq!(
            s.next_epoch(t("2026-11-26T05:05:00Z")),
            Some(t("2026-11-26T05:10:00Z"))
        );
        assert_eq!(
            s.epoch_of(t("2026-11-26T05:07:59Z")),
            Some(t("2026-11-26T05:05:00Z"))
        );
        assert_eq!(
            s.epoch_of(t("2026-11-26T05:05:00Z")),
            Some(t("2026-11-26T05:05:00Z"))
        );
        assert!(Schedule::every(Duration::from_millis(500)).is_err());
    }

    #[test]
    fn cron_expressions() {
        let s = Schedule::cron("*/15 * * * *").unwrap();
        assert_eq!(
            s.next_epoch(t("2026-11-26T05:02:13Z")),
            Some(t("2026-11-26T05:15:00Z"))
        );
        assert_eq!(
            s.epoch_of(t("2026-11-26T05:29:00Z")),
            Some(t("2026-11-26T05:15:00Z"))
        );
        let daily = Schedule::cron("30 2 * * *").unwrap();
        assert_eq!(
            daily.next_epoch(t("2026-11-26T05:00:00Z")),
            Some(t("2026-11-27T02:30:00Z"))
        );
        let err = Schedule::cron("every five minutes")
            .unwrap_err()
            .to_string();
        assert!(err.contains("write five fields"), "{err}");
        assert!(
            Schedule::cron("0 0 31 2 *").is_err(),
            "31 February never comes"
        );
    }

    #[test]
    fn retention_by_count_and_age_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let names = [
            "20261126T050000Z",
            "20261126T050500Z",
            "20261126T051000Z",
            "20261126T051500Z",
        ];
        for n in names {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        std::fs::create_dir(dir.path().join("not-a-run")).unwrap();
        let now = t("2026-11-26T05:16:00Z");
        let removed = apply_retention(
            dir.path(),
            Retention {
                keep: Some(2),
                max_age: None,
            },
            now,
        )
        .unwrap();
        assert_eq!(removed.len(), 2);
        assert!(
            dir.path().join("20261126T051000Z").exists() && dir.path().join("not-a-run").exists()
        );
        // Age: everything older than 1 minute, but the newest stays.
        let removed = apply_retention(
            dir.path(),
            Retention {
                keep: None,
                max_age: Some(Duration::from_secs(60)),
            },
            now,
        )
        .unwrap();
        assert_eq!(removed, vec![dir.path().join("20261126T051000Z")]);
        assert!(dir.path().join("20261126T051500Z").exists());
    }

    #[test]
    fn latest_link_moves_atomically() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        update_latest(dir.path(), "a").unwrap();
        update_latest(dir.path(), "b").unwrap();
        assert_eq!(
            std::fs::read_link(dir.path().join("latest")).unwrap(),
            PathBuf::from("b")
        );
    }
}
