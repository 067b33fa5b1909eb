//! `[diff]` and `[schedule]`: the CI gate's thresholds and when sweeps run.
//!
//! Pure checks from the raw values to [`DiffThresholds`] and [`ScheduleSettings`],
//! pushing every problem found.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::keys::{Key, diff, schedule};
use super::raw::{Problem, Table};

/// `[diff]`: how large and how sure a change must be for `latmap diff` to call it a
/// regression (or an improvement).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffThresholds {
    /// p50 must move by at least this share of the baseline p50 (percent) ...
    pub p50_pct: f64,
    /// ... and by at least this many milliseconds.
    pub p50_ms: f64,
    pub p95_pct: f64,
    pub p95_ms: f64,
    /// The same for p99 (tested only with enough replies per path: see docs/ci.md).
    #[serde(default = "default_p99_pct")]
    pub p99_pct: f64,
    #[serde(default = "default_p99_ms")]
    pub p99_ms: f64,
    /// Loss must move by at least this many percentage points.
    pub loss_pp: f64,
    /// Significance level of the whole diff (family-wise, after Holm's correction).
    pub alpha: f64,
}

fn default_p99_pct() -> f64 {
    DiffThresholds::default().p99_pct
}

fn default_p99_ms() -> f64 {
    DiffThresholds::default().p99_ms
}

impl Default for DiffThresholds {
    fn default() -> Self {
        use super::keys::diff::*;
        DiffThresholds {
            p50_pct: P50_PCT.number(),
            p50_ms: P50_MS.number(),
            p95_pct: P95_PCT.number(),
            p95_ms: P95_MS.number(),
            p99_pct: P99_PCT.number(),
            p99_ms: P99_MS.number(),
            loss_pp: LOSS_PP.number(),
            alpha: ALPHA.number(),
        }
    }
}

impl DiffThresholds {
    /// The setting of each key of `[diff]`, in the order of `keys::diff`.
    pub fn slots(&mut self) -> [&mut f64; 8] {
        [
            &mut self.p50_pct,
            &mut self.p50_ms,
            &mut self.p95_pct,
            &mut self.p95_ms,
            &mut self.p99_pct,
            &mut self.p99_ms,
            &mut self.loss_pp,
            &mut self.alpha,
        ]
    }
}

/// `[schedule]`: when `sweep --every/--cron` and agents sweep, and how many runs to keep.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScheduleSettings {
    /// A fixed period (aligned to the clock).
    pub every: Option<Duration>,
    /// Or a cron expression (UTC), already checked to parse.
    pub cron: Option<String>,
    /// A random delay in `[0, jitter)` before each sweep. Default 0.
    pub jitter: Duration,
    /// Keep at most this many runs.
    pub keep: Option<usize>,
    /// Delete runs older than this.
    pub keep_for: Option<Duration>,
}

/// `[diff]`: its values are in their ranges (checked as they were read).
pub(super) fn check_diff(raw: Option<&Table>) -> DiffThresholds {
    let mut t = DiffThresholds::default();
    if let Some(raw) = raw {
        for (k, slot) in diff::SECTION.keys.iter().zip(t.slots()) {
            if let Some(v) = raw.number(k) {
                *slot = v.value;
            }
        }
    }
    t
}

pub(super) fn check_schedule(
    raw: Option<&Table>,
    out: &mut Vec<Problem>,
) -> Option<ScheduleSettings> {
    use schedule::*;
    let raw = raw?;
    let mut s = ScheduleSettings {
        every: raw.duration(&EVERY).map(|d| d.value),
        jitter: JITTER.duration(),
        keep: raw
            .integer(&KEEP)
            .and_then(|k| usize::try_from(k.value).ok()),
        keep_for: raw.duration(&KEEP_FOR).map(|d| d.value),
        cron: None,
    };
    let present = |k: &Key| raw.has(k) || raw.is_broken(k);
    if let Some(cron) = raw.text(&CRON) {
        match croner::Cron::from_str(cron.value) {
            Ok(_) => s.cron = Some(cron.value.to_string()),
            Err(e) => out.push(Problem::new(
                cron.span.clone(),
                format!("cron {:?} is not a cron expression ({e}); write five fields like \"*/5 * * * *\" (minute hour day month weekday, UTC)", cron.value),
            )),
        }
        if present(&EVERY) {
            out.push(Problem::new(
                cron.key.clone(),
                "[schedule] has both every and cron; keep one of them",
            ));
        }
    } else if !present(&EVERY) && !present(&CRON) {
        out.push(Problem::new(
            raw.span.start..raw.span.start,
            "[schedule] needs every = \"5m\" or cron = \"*/5 * * * *\"",
        ));
    }
    if let Some(jitter) = raw.duration(&JITTER) {
        match schedule_problem(s.every, jitter.value) {
            Some(why) => out.push(Problem::new(jitter.span.clone(), format!("jitter {why}"))),
            None => s.jitter = jitter.value,
        }
    }
    Some(s)
}

/// What is wrong with a jitter for a period, as the words after the jitter's name:
/// it must be shorter than the period, or sweeps would run into each other.
pub fn schedule_problem(every: Option<Duration>, jitter: Duration) -> Option<String> {
    every.filter(|p| jitter >= *p).map(|_| {
        "must be shorter than the period (every), or sweeps would run into each other".to_string()
    })
}
