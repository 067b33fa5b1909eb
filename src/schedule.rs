//! Sweep schedules: a fixed period or a cron expression, with epochs aligned to the
//! wall clock so that every region's agent agrees on which sweep a report belongs to;
//! run folders, the `latest` link, and retention.
//!
//! Owns time arithmetic and the run folder's layout only; it neither probes nor serves.
//! [`Scheduler`] makes the scheduled-sweep loop's decisions, and [`Retention::expired`]
//! is the one retention rule, for `sweep --every`, the agent and serve's store.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

mod scheduler;

pub use scheduler::{MAX_COUNTED, Scheduler, Skipped, Slot};

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
    /// The jitter breaks [`crate::config::schedule_problem`].
    #[error("the jitter ({}) {why}", humantime::format_duration(*jitter))]
    Jitter { jitter: Duration, why: String },
    #[error("the schedule {0} has no next time")]
    Ended(String),
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
    /// The runs beyond the retention, of `runs` (epoch and whatever names the run),
    /// oldest first: those past the newest `keep`, and those older than `max_age` at
    /// `now`. The newest run is never among them, so a series always keeps one run.
    pub fn expired<'a, T>(&self, runs: &'a [(DateTime<Utc>, T)], now: DateTime<Utc>) -> Vec<&'a T> {
        let max_age = self.max_age.and_then(|a| TimeDelta::from_std(a).ok());
        let n = runs.len();
        runs.iter()
            .take(n.saturating_sub(1))
            .enumerate()
            .filter(|&(i, (epoch, _))| {
                let rank = n - i; // 1 for the newest
                self.keep.is_some_and(|k| rank > k) || max_age.is_some_and(|age| now - *epoch > age)
            })
            .map(|(_, (_, run))| run)
            .collect()
    }
}

/// Deletes the run folders of `dir` (those named like [`run_dir_name`]) that `retention`
/// does not keep ([`Retention::expired`]). Returns the folders removed.
pub fn apply_retention(
    dir: &Path,
    retention: Retention,
    now: DateTime<Utc>,
) -> std::io::Result<Vec<PathBuf>> {
    let runs = run_dirs(dir)?;
    let mut removed = Vec::new();
    for path in retention.expired(&runs, now) {
        std::fs::remove_dir_all(path)?;
        removed.push(path.clone());
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
    fn retention_rule() {
        let now = t("2026-11-26T06:00:00Z");
        let runs: Vec<(DateTime<Utc>, u32)> = [50, 40, 30, 20, 10]
            .into_iter()
            .map(|min| (now - TimeDelta::minutes(min), min as u32))
            .collect();
        let r = |keep, age: Option<u64>| Retention {
            keep,
            max_age: age.map(|m| Duration::from_secs(m * 60)),
        };
        let cases: [(Retention, &[u32]); 6] = [
            (r(None, None), &[]),
            (r(Some(2), None), &[50, 40, 30]),
            (r(Some(9), None), &[]),
            (r(None, Some(25)), &[50, 40, 30]),
            // Both: a run goes when either says so.
            (r(Some(4), Some(35)), &[50, 40]),
            // Everything is too old, but the newest stays.
            (r(Some(1), Some(1)), &[50, 40, 30, 20]),
        ];
        for (retention, want) in cases {
            let got: Vec<u32> = retention.expired(&runs, now).into_iter().copied().collect();
            assert_eq!(got, want, "{retention:?}");
        }
        assert!(r(Some(1), None).expired::<u32>(&[], now).is_empty());
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
