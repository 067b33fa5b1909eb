//! The settings layer: a command's flags (with the environment variables clap reads
//! for them), the configuration file and the defaults, merged once, here, for every
//! command: flag > environment > file > default.
//!
//! A value from the file was checked when the file was read (its error names
//! FILE:LINE:COL); a value from a flag is checked here against the same range of the
//! same key (`keys`), and its error names the flag. So what `latmap check` accepts,
//! every command accepts, and what it refuses, every command refuses in the same
//! words. Pure functions; no I/O.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use super::keys::{diff, schedule};
use super::{DiffThresholds, ScheduleSettings, schedule_problem};

/// The `[diff]` flags of `latmap diff`, in the order of `keys::diff`.
pub type DiffFlags = [Option<f64>; 8];

/// `[diff]` of the file (or the defaults), with every flag given taking its place.
pub fn diff(file: Option<DiffThresholds>, flags: DiffFlags) -> Result<DiffThresholds, String> {
    let mut t = file.unwrap_or_default();
    for ((key, flag), slot) in diff::SECTION.keys.iter().zip(flags).zip(t.slots()) {
        if let Some(v) = flag {
            *slot = key.check_number(v)?;
        }
    }
    Ok(t)
}

/// The schedule flags of `latmap sweep` and `latmap agent`.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFlags {
    pub every: Option<Duration>,
    pub cron: Option<String>,
    /// Take the file's `[schedule]` when no `--every` or `--cron` is given (the
    /// agent always does; `sweep` does with `--schedule`).
    pub use_file: bool,
    pub jitter: Option<Duration>,
    pub keep: Option<usize>,
    pub keep_for: Option<Duration>,
}

/// The schedule a command runs on, `None` when it runs once (no `--every`, no
/// `--cron`, and the file's `[schedule]` not asked for). `file` is the configuration's
/// `[schedule]`, read from `path`.
pub fn schedule(
    file: Option<&ScheduleSettings>,
    path: &Path,
    flags: &ScheduleFlags,
) -> Result<Option<ScheduleSettings>, String> {
    let from_file = file.cloned().unwrap_or_default();
    let (every, cron) = match (flags.every, &flags.cron) {
        (Some(every), _) => (Some(schedule::EVERY.check_duration(every)?), None),
        (None, Some(cron)) => {
            croner::Cron::from_str(cron).map_err(|e| {
                format!(
                    "--cron {cron:?} is not a cron expression ({e}); write five fields like \"*/5 * * * *\" \
                     (minute hour day month weekday, UTC)"
                )
            })?;
            (None, Some(cron.clone()))
        }
        (None, None) if !flags.use_file => return Ok(None),
        (None, None) if file.is_none() => {
            return Err(format!(
                "a scheduled sweep needs a schedule: add a [schedule] table to {} (see \
                 docs/config.md), or pass --every DURATION or --cron EXPR",
                path.display()
            ));
        }
        (None, None) => (from_file.every, from_file.cron.clone()),
    };
    let jitter = match flags.jitter {
        Some(j) => {
            if let Some(why) = schedule_problem(every, j) {
                return Err(format!("--jitter {why}"));
            }
            j
        }
        None => {
            if let Some(why) = schedule_problem(every, from_file.jitter) {
                return Err(format!(
                    "jitter of [schedule] in {} ({}) {why}; pass a shorter --jitter",
                    path.display(),
                    humantime::format_duration(from_file.jitter)
                ));
            }
            from_file.jitter
        }
    };
    let keep = match flags.keep {
        Some(n) => {
            let n = i128::try_from(n).unwrap_or(i128::MAX);
            Some(schedule::KEEP.check_integer(n)? as usize)
        }
        None => from_file.keep,
    };
    let keep_for = match flags.keep_for {
        Some(d) => Some(schedule::KEEP_FOR.check_duration(d)?),
        None => from_file.keep_for,
    };
    Ok(Some(ScheduleSettings {
        every,
        cron,
        jitter,
        keep,
        keep_for,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(every: Option<&str>, jitter: Option<&str>) -> ScheduleFlags {
        let d = |s: &str| humantime::parse_duration(s).unwrap();
        ScheduleFlags {
            every: every.map(d),
            jitter: jitter.map(d),
            use_file: true,
            ..ScheduleFlags::default()
        }
    }

    #[test]
    fn flags_override_the_file_and_are_checked_like_it() {
        let file = ScheduleSettings {
            every: Some(Duration::from_secs(300)),
            jitter: Duration::from_secs(10),
            keep: Some(5),
            ..ScheduleSettings::default()
        };
        let path = Path::new("regions.toml");
        let s = schedule(Some(&file), path, &flags(None, None))
            .unwrap()
            .unwrap();
        assert_eq!(s, file);
        let s = schedule(Some(&file), path, &flags(Some("1m"), Some("5s")))
            .unwrap()
            .unwrap();
        assert_eq!(
            (s.every, s.jitter, s.keep),
            (
                Some(Duration::from_secs(60)),
                Duration::from_secs(5),
                Some(5)
            )
        );
        let e = schedule(Some(&file), path, &flags(Some("1500ms"), None)).unwrap_err();
        assert!(
            e.starts_with("--every must be whole seconds, at least 1s (got 1s 500ms)"),
            "{e}"
        );
        let e = schedule(Some(&file), path, &flags(Some("5s"), None)).unwrap_err();
        assert!(
            e.starts_with("jitter of [schedule] in regions.toml (10s) must be shorter"),
            "{e}"
        );
        let e = schedule(Some(&file), path, &flags(None, Some("5m"))).unwrap_err();
        assert!(
            e.starts_with("--jitter must be shorter than the period"),
            "{e}"
        );
        let keep0 = ScheduleFlags {
            keep: Some(0),
            ..flags(None, None)
        };
        let e = schedule(Some(&file), path, &keep0).unwrap_err();
        assert_eq!(
            e,
            "--keep is out of range; use a whole number from 1 to 1000000"
        );
        let e = schedule(None, path, &flags(None, None)).unwrap_err();
        assert!(
            e.starts_with(
                "a scheduled sweep needs a schedule: add a [schedule] table to regions.toml"
            ),
            "{e}"
        );
        let once = ScheduleFlags::default();
        assert_eq!(schedule(Some(&file), path, &once), Ok(None));
    }

    #[test]
    fn diff_flags_are_checked_like_the_file() {
        let mut f: DiffFlags = [None; 8];
        f[7] = Some(0.7);
        assert_eq!(
            diff(None, f),
            Err("--alpha is out of range; use a number above 0 and below 0.5, like 0.01".into())
        );
        f[7] = Some(0.05);
        f[0] = Some(15.0);
        let t = diff(None, f).unwrap();
        assert_eq!((t.p50_pct, t.alpha, t.p95_pct), (15.0, 0.05, 20.0));
        f[1] = Some(-1.0);
        assert_eq!(
            diff(None, f),
            Err("--p50-ms is out of range; use a number >= 0".into())
        );
    }
}
