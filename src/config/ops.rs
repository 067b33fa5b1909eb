//! `[diff]` and `[schedule]`: the CI gate's thresholds and when sweeps run.
//!
//! Pure checks from the raw values to [`DiffThresholds`] and [`ScheduleSettings`],
//! pushing every problem found.

use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::raw::{At, Problem, RawDiff, RawSchedule};
use super::validate::{duration, int_in, num_in};

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
        DiffThresholds {
            p50_pct: 10.0,
            p50_ms: 2.0,
            p95_pct: 20.0,
            p95_ms: 5.0,
            p99_pct: 25.0,
            p99_ms: 10.0,
            loss_pp: 0.5,
            alpha: 0.01,
        }
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

pub(super) fn check_diff(raw: Option<&RawDiff>, out: &mut Vec<Problem>) -> DiffThresholds {
    let mut t = DiffThresholds::default();
    let Some(raw) = raw else { return t };
    let inf = f64::INFINITY;
    for (v, key, lo, hi, to) in [
        (&raw.p50_pct, "p50_pct", 0.0, inf, &mut t.p50_pct),
        (&raw.p50_ms, "p50_ms", 0.0, inf, &mut t.p50_ms),
        (&raw.p95_pct, "p95_pct", 0.0, inf, &mut t.p95_pct),
        (&raw.p95_ms, "p95_ms", 0.0, inf, &mut t.p95_ms),
        (&raw.p99_pct, "p99_pct", 0.0, inf, &mut t.p99_pct),
        (&raw.p99_ms, "p99_ms", 0.0, inf, &mut t.p99_ms),
        (&raw.loss_pp, "loss_pp", 0.0, 100.0, &mut t.loss_pp),
    ] {
        if let Some(n) = v.as_ref().and_then(|v| num_in(v, key, lo, hi, out)) {
            *to = n;
        }
    }
    if let Some(a) = &raw.alpha {
        if a.value > 0.0 && a.value < 0.5 {
            t.alpha = a.value;
        } else {
            out.push(Problem::new(
                a.span.clone(),
                "alpha is out of range; use a number above 0 and below 0.5, like 0.01",
            ));
        }
    }
    t
}

pub(super) fn check_schedule(
    raw: Option<&RawSchedule>,
    out: &mut Vec<Problem>,
) -> Option<ScheduleSettings> {
    let raw = raw?;
    let mut s = ScheduleSettings::default();
    let positive = |at: &At<String>, key: &str, out: &mut Vec<Problem>| {
        let d = duration(at, key, out)?;
        if d.is_zero() {
            out.push(Problem::new(
                at.span.clone(),
                format!("{key} must be above 0"),
            ));
            return None;
        }
        Some(d)
    };
    if let Some(every) = &raw.every
        && let Some(d) = positive(every, "every", out)
    {
        if d < Duration::from_secs(1) {
            out.push(Problem::new(
                every.span.clone(),
                "every must be at least 1s; latmap sweeps are seconds long",
            ));
        } else {
            s.every = Some(d);
        }
    }
    if let Some(cron) = &raw.cron {
        match croner::Cron::from_str(&cron.value) {
            Ok(_) => s.cron = Some(cron.value.clone()),
            Err(e) => out.push(Problem::new(
                cron.span.clone(),
                format!("cron {:?} is not a cron expression ({e}); write five fields like \"*/5 * * * *\" (minute hour day month weekday, UTC)", cron.value),
            )),
        }
    }
    match (&raw.every, &raw.cron) {
        (Some(_), Some(cron)) => out.push(Problem::new(
            cron.key.clone(),
            "[schedule] has both every and cron; keep one of them",
        )),
        (None, None) if !raw.has_every && !raw.has_cron => out.push(Problem::new(
            raw.span.start..raw.span.start,
            "[schedule] needs every = \"5m\" or cron = \"*/5 * * * *\"",
        )),
        _ => {}
    }
    if let Some(jitter) = &raw.jitter
        && let Some(d) = duration(jitter, "jitter", out)
    {
        if s.every.is_some_and(|p| d >= p) {
            out.push(Problem::new(jitter.span.clone(), "jitter must be shorter than the period (every), or sweeps would run into each other"));
        } else {
            s.jitter = d;
        }
    }
    if let Some(keep) = raw
        .keep
        .as_ref()
        .and_then(|k| int_in(k, "keep", 1, 1_000_000, out))
    {
        s.keep = usize::try_from(keep).ok();
    }
    if let Some(keep_for) = &raw.keep_for {
        s.keep_for = positive(keep_for, "keep_for", out);
    }
    Some(s)
}
