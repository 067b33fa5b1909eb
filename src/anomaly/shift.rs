//! `shift`: a path's median left its own normal, judged against its history.
//!
//! Fixed thresholds cannot see a 100 ms path that became 113 ms: it breaks no SLO and
//! no bound. What a person sees on its chart is the step. For a run of a series, each
//! path's reference is its recent history: the median of its p50 over the last
//! `shift_window` runs (24) and the spread of those p50s (1.4826 × their median absolute
//! deviation, a robust standard deviation). Its band is that median plus the larger of
//! `shift_deviations` (5) robust deviations, `shift_margin_pct` (8%) of it and `shift_margin_ms`
//! (1 ms): a step a person
//! sees on the path's chart, above the drift of an unchanged route. The run is out
//! of band when even the lower end of its median's 95% interval (the order statistic
//! of rank n/2 − 0.98√n of its samples) lies above the band: so a few noisy samples
//! cannot raise it. This is the spirit of the Internet Health Report's delay alarms
//! (Fontugne et al., 2017: a median's confidence interval against a robust reference),
//! with one run's samples instead of a bin's traceroutes.
//!
//! - It judges a path only once its history holds `shift_min_runs` (12) earlier runs with a
//!   median (lagged runs do not count).
//! - One run out of band is a warning; two in a row (the previous run had a `shift`
//!   finding on the path) are critical.
//! - The reference moves with the runs: a route change that settles becomes the new
//!   normal once it fills half the window: after 11 to 13 runs out of band (about an
//!   hour at one run every 5 minutes) the findings stop. The band's spread is taken
//!   from the runs that were in band, so the step does not widen it meanwhile.
//! - Only slower counts: a path that got faster has no problem to fix.
//!
//! The numbers are `[thresholds]` keys (defaults in brackets).
//! Without history (a single run, `aggregate`) it finds nothing.

use super::{Context, Detector, ms};
use crate::config::{DetectorId, Thresholds};
use crate::history::PathKey;
use crate::run::{Anomaly, Severity, Unit};

pub struct Shift;

/// A run whose paths stand for more pairs (source, target, kind) than this is judged
/// without its past (about 300 bytes a pair are held for it: 75 MB here, a 500-region
/// fleet). Several targets of one pair count once: the history keeps one path per pair.
pub const MAX_PATHS: usize = 250_000;

/// What a run of a series is judged against: its paths' last [`window`] runs in
/// `history`; `None` for a run of more than [`MAX_PATHS`] pairs, which is judged alone
/// (logged). Scheduled sweeps and serve's assembly both read it here.
pub fn past(
    history: &crate::history::History,
    run: &crate::run::Run,
    thresholds: &Thresholds,
) -> Result<Option<super::Recent>, crate::history::HistoryError> {
    let pairs = pairs(run);
    if pairs > MAX_PATHS {
        tracing::warn!(
            pairs,
            "shift: a run of more than {MAX_PATHS} pairs of regions is judged without its paths' past"
        );
        return Ok(None);
    }
    history.recent(run.started_at, window(thresholds)).map(Some)
}

/// How many pairs (source, target, kind) the paths of `run` stand for: neighbours in
/// the run's order that share one count once (a run out of order counts more).
fn pairs(run: &crate::run::Run) -> usize {
    let mut n = 0;
    let mut last: Option<(&str, &str, crate::config::ProbeKind)> = None;
    for p in &run.paths {
        let key = (p.source.as_str(), p.target.as_str(), p.kind);
        if last != Some(key) {
            n += 1;
            last = Some(key);
        }
    }
    n
}

/// How many earlier runs a run of a series is judged against: what to read from the
/// history (`[thresholds] shift_window`).
pub fn window(thresholds: &Thresholds) -> usize {
    thresholds.shift_window
}

/// A path's normal: the median of its recent p50s and how far above it a run's median
/// may lie.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reference {
    pub median_us: f64,
    pub band_us: f64,
    pub runs: usize,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The reference of a path from its earlier runs, oldest first: each run's p50 (µs) and
/// whether it was out of band itself (a `shift` finding); `None` with fewer than
/// `shift_min_runs`. The median is over all of the window, so a step that settles becomes
/// the new normal once it fills half of it; the spread is over the runs that were in
/// band, so the step does not widen the band while it is being reported.
pub fn reference(runs: &[(f64, bool)], t: &Thresholds) -> Option<Reference> {
    let recent = &runs[runs.len().saturating_sub(t.shift_window)..];
    if recent.len() < t.shift_min_runs.max(1) {
        return None;
    }
    let mut v: Vec<f64> = recent.iter().map(|r| r.0).collect();
    let m = median(&mut v);
    let normal: Vec<f64> = recent.iter().filter(|r| !r.1).map(|r| r.0).collect();
    let spread_of = if normal.len() >= t.shift_min_runs / 2 {
        normal
    } else {
        v
    };
    let mut dev: Vec<f64> = spread_of.iter().map(|x| (x - m).abs()).collect();
    let sigma = 1.4826 * median(&mut dev);
    let band = (t.shift_deviations * sigma)
        .max(m * t.shift_margin_pct / 100.0)
        .max(t.shift_margin_ms * 1000.0);
    Some(Reference {
        median_us: m,
        band_us: band,
        runs: recent.len(),
    })
}

pub use crate::stats::median_lower_bound;

impl Detector for Shift {
    fn id(&self) -> DetectorId {
        DetectorId::Shift
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        let Some(history) = ctx.history else {
            return;
        };
        for (i, j, edge) in ctx.graph.paths() {
            if !ctx.judges(self.id(), i, j) {
                continue;
            }
            let p = edge.entry;
            let Some(rtt) = p.rtt_us else { continue };
            let key = PathKey::of(p);
            let Some(points) = history.get(&key) else {
                continue;
            };
            let runs: Vec<(f64, bool)> = points
                .iter()
                .filter(|pt| !pt.lagged)
                .filter_map(|pt| Some((f64::from(pt.p50_us?), pt.shifted)))
                .collect();
            let Some(r) = reference(&runs, ctx.thresholds) else {
                continue;
            };
            let Some(low) = p.median_low_us() else {
                continue;
            };
            let limit = r.median_us + r.band_us;
            if (low as f64) <= limit {
                continue;
            }
            let again = points.last().is_some_and(|pt| pt.shifted);
            let severity = if again {
                Severity::Critical
            } else {
                Severity::Warning
            };
            let (s, t) = (ctx.name(i), ctx.name(j));
            let now = rtt.p50 as f64;
            let step = now - r.median_us;
            let message = format!(
                "{s} → {t} takes {} at its median, {} ({:.0}%) above its normal of {} over its last {} runs \
                 (the band reaches {} above it){}: find what changed on this path (a route, a new hop, a \
                 congested link)",
                ms(now / 1000.0),
                ms(step / 1000.0),
                100.0 * step / r.median_us.max(1.0),
                ms(r.median_us / 1000.0),
                r.runs,
                ms(r.band_us / 1000.0),
                if again {
                    "; the run before was out of band too"
                } else {
                    ""
                }
            );
            found.push(ctx.path_anomaly(
                self.id(),
                severity,
                (i, j),
                step,
                r.band_us,
                Unit::Us,
                message,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    use super::*;

    const WINDOW: usize = 24;
    const MIN_RUNS: usize = 12;

    /// A path's p50 run after run: `base_ms` with run-to-run noise (normal, of `sd_ms`
    /// plus 1% of the path), and one run in 20 off by 3% more (a busy minute).
    fn history(rng: &mut StdRng, base_ms: f64, sd_ms: f64, runs: usize) -> Vec<f64> {
        (0..runs)
            .map(|_| {
                let (u1, u2): (f64, f64) =
                    (rng.random_range(1e-9..1.0), rng.random_range(0.0..1.0));
                let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
                let odd = if rng.random_range(0.0..1.0) < 0.05 {
                    0.03 * base_ms
                } else {
                    0.0
                };
                (base_ms + (sd_ms + 0.01 * base_ms) * z + odd) * 1000.0
            })
            .collect()
    }

    /// A run's 20 samples around `p50_ms` with 0.4 ms of queueing noise.
    fn samples(rng: &mut StdRng, p50_ms: f64) -> Vec<u64> {
        let mut v: Vec<u64> = (0..20)
            .map(|_| {
                let u: f64 = rng.random_range(1e-9..1.0);
                ((p50_ms - 0.3 - 0.4 * u.ln()) * 1000.0) as u64
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Judges `run` against `hist` (p50s, each with whether it was out of band).
    fn judge(hist: &[(f64, bool)], run: &[u64]) -> Option<bool> {
        judge_with(hist, run, &Thresholds::default())
    }

    fn judge_with(hist: &[(f64, bool)], run: &[u64], t: &Thresholds) -> Option<bool> {
        let r = reference(hist, t)?;
        Some(median_lower_bound(run)? as f64 > r.median_us + r.band_us)
    }

    fn out_of_band(hist: &[f64], run: &[u64]) -> Option<bool> {
        let h: Vec<(f64, bool)> = hist.iter().map(|&v| (v, false)).collect();
        judge(&h, run)
    }

    #[test]
    fn several_targets_of_a_pair_count_once() {
        let mut run = crate::anomaly::testkit::Mesh::symmetric(&["a", "b", "c"], 20.0).run();
        assert_eq!(pairs(&run), 6);
        // A second target of a -> b, beside the first in the run's order.
        let at = run
            .paths
            .iter()
            .position(|p| p.source == "a" && p.target == "b")
            .expect("a -> b");
        let mut other = run.paths[at].clone();
        other.target_spec.push('9');
        run.paths.insert(at + 1, other);
        assert_eq!(run.paths.len(), 7);
        assert_eq!(pairs(&run), 6);
    }

    #[test]
    fn quiet_on_200_seeded_histories_of_noise() {
        let mut alarms = 0;
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let base = rng.random_range(5.0..250.0);
            let hist = history(&mut rng, base, 0.3, 30);
            for k in MIN_RUNS..30 {
                let run = samples(&mut rng, hist[k] / 1000.0);
                alarms += usize::from(out_of_band(&hist[..k], &run) == Some(true));
            }
        }
        assert_eq!(alarms, 0, "alarms on noise");
    }

    #[test]
    fn a_13_percent_step_of_a_100_ms_path_is_caught_at_once() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(1000 + seed);
            let hist = history(&mut rng, 100.0, 0.3, 24);
            let run = samples(&mut rng, 113.0);
            assert_eq!(out_of_band(&hist, &run), Some(true), "seed {seed}");
        }
    }

    #[test]
    fn no_judgement_before_min_runs_and_a_settled_step_is_the_new_normal() {
        let mut rng = StdRng::seed_from_u64(5);
        let hist = history(&mut rng, 100.0, 0.5, MIN_RUNS - 1);
        assert_eq!(out_of_band(&hist, &samples(&mut rng, 150.0)), None);
        // 24 runs at 100 ms, then the step: out of band until it fills half the window.
        let mut hist: Vec<(f64, bool)> = history(&mut rng, 100.0, 0.5, 24)
            .into_iter()
            .map(|v| (v, false))
            .collect();
        let mut flagged = Vec::new();
        for _ in 0..20 {
            let p50 = 113.0 + rng.random_range(-0.3..0.3);
            let run = samples(&mut rng, p50);
            let out = judge(&hist, &run) == Some(true);
            flagged.push(out);
            hist.push((p50 * 1000.0, out));
        }
        // The median of the window flips when the new level holds about half of it (the
        // old runs' own spread decides the run either side).
        let first_normal = flagged.iter().position(|f| !f).expect("it settles");
        assert!(
            (WINDOW / 2 - 1..=WINDOW / 2 + 1).contains(&first_normal),
            "{flagged:?}"
        );
        assert!(flagged[first_normal..].iter().all(|f| !f), "{flagged:?}");
        assert!(flagged[..first_normal].iter().all(|f| *f), "{flagged:?}");
    }

    #[test]
    fn the_limits_come_from_the_thresholds() {
        let defaults = Thresholds::default();
        assert_eq!(
            (defaults.shift_window, defaults.shift_min_runs),
            (WINDOW, MIN_RUNS)
        );
        let mut rng = StdRng::seed_from_u64(7);
        let hist: Vec<(f64, bool)> = history(&mut rng, 100.0, 0.3, 24)
            .into_iter()
            .map(|v| (v, false))
            .collect();
        let run = samples(&mut rng, 106.0);
        // 6% above a quiet 100 ms path: inside the default band (8%), out of a 3% one.
        assert_eq!(judge(&hist, &run), Some(false));
        let tight = Thresholds {
            shift_margin_pct: 3.0,
            ..Thresholds::default()
        };
        assert_eq!(judge_with(&hist, &run, &tight), Some(true));
        // A shorter history suffices with a smaller shift_min_runs.
        let few = &hist[..6];
        assert_eq!(judge(few, &run), None);
        let eager = Thresholds {
            shift_min_runs: 6,
            shift_margin_pct: 3.0,
            shift_deviations: 1.0,
            ..Thresholds::default()
        };
        assert_eq!(judge_with(few, &run, &eager), Some(true));
        // The window bounds the runs the reference is built from.
        let narrow = Thresholds {
            shift_window: 4,
            shift_min_runs: 4,
            ..Thresholds::default()
        };
        assert_eq!(reference(&hist, &narrow).map(|r| r.runs), Some(4));
    }

    #[test]
    fn the_median_interval_is_conservative() {
        let v: Vec<u64> = (1..=20).collect();
        assert_eq!(median_lower_bound(&v), Some(5));
        assert_eq!(median_lower_bound(&[1, 2]), None);
        assert_eq!(median_lower_bound(&[7, 8, 9]), Some(7));
    }
}
