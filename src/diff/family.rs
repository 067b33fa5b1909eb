//! Which hypotheses belong to the family a diff corrects over, and what the diff could
//! not see.
//!
//! A test joins the family only when its path *could* give a verdict: when some
//! assignment of the path's pooled samples (with one baseline) or some choice of which
//! run is the current one (with several) would move the quantity beyond its threshold,
//! and, for loss, when Fisher's test could reach α at all (Tarone). These conditions
//! look at the pooled data only, never at which samples came from which run, so they do
//! not bias the tests they select; they only spare the real changes the price of
//! hypotheses that could never be rejected. A path that cannot join the family cannot
//! be a regression either: the verdict needs the same move beyond the threshold.

use crate::stats::percentile_us;

use super::Skip;
use super::observed::Observed;
use super::significance::fisher_min_p;

/// The smallest change, in microseconds, that counts for a quantity whose baseline
/// value is `base_us`: `pct` percent of it, and at least `ms` milliseconds.
pub fn threshold_us(base_us: f64, pct: f64, ms: f64) -> f64 {
    (base_us * pct / 100.0).max(ms * 1000.0)
}

/// The pooled replies of a path with one baseline, sorted (by merging the two sorted
/// sides), for [`can_move`].
pub fn pooled(bases: &[&Observed], cur: &Observed) -> Vec<u64> {
    let [b] = bases else {
        return Vec::new();
    };
    let (x, y) = (&b.sorted, &cur.sorted);
    let mut out = Vec::with_capacity(x.len() + y.len());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i] <= y[j] {
            out.push(x[i]);
            i += 1;
        } else {
            out.push(y[j]);
            j += 1;
        }
    }
    out.extend_from_slice(&x[i..]);
    out.extend_from_slice(&y[j..]);
    out
}

/// Whether percentile `pct` of the path could move beyond its threshold (`t_pct`,
/// `t_ms`) up or down.
///
/// One baseline: the most extreme split of the pooled samples (`pooled`, from
/// [`pooled`]) puts the largest `n_current` of them in the current run; its percentile
/// difference bounds every split's, and its baseline side gives the smallest threshold
/// any split could have. Several baselines: the spread of the runs' own percentiles
/// (the current one among them) bounds the change, and the smallest of them the
/// threshold.
pub fn can_move(
    bases: &[&Observed],
    cur: &Observed,
    pooled: &[u64],
    pct: f64,
    t_pct: f64,
    t_ms: f64,
) -> bool {
    match bases {
        [] => false,
        [b] => {
            let (nb, nc) = (b.sorted.len(), cur.sorted.len());
            let n = pooled.len();
            if nb == 0 || nc == 0 || n != nb + nc {
                return false;
            }
            let q = |s: &[u64]| percentile_us(s, pct) as f64;
            // Up: current = top nc, base = bottom nb.
            let base_low = q(&pooled[..nb]);
            let up = q(&pooled[n - nc..]) - base_low;
            // Down: base = top nb, current = bottom nc; the threshold is smallest for the
            // smallest base value any split gives, which is base_low again.
            let down = q(&pooled[n - nb..]) - q(&pooled[..nc]);
            let least = threshold_us(base_low, t_pct, t_ms);
            up >= least || down >= least
        }
        _ => {
            let values: Vec<u64> = bases
                .iter()
                .chain([&cur])
                .filter(|o| !o.sorted.is_empty())
                .map(|o| percentile_us(&o.sorted, pct))
                .collect();
            let (Some(&lo), Some(&hi)) = (values.iter().min(), values.iter().max()) else {
                return false;
            };
            (hi - lo) as f64 >= threshold_us(lo as f64, t_pct, t_ms)
        }
    }
}

/// Loss counts for the test: (lost, sent) of the baseline side and of the current run.
pub type LossCounts = ((u64, u64), (u64, u64));

/// Whether the loss test of these counts belongs in the family: some split of the lost
/// probes over the two sides must move loss by `loss_pp` percentage points or more, and
/// Fisher's test of the most lopsided split must reach `alpha`. Returns the smallest
/// p-value the test can give when it may join (Tarone's count needs it), or why not.
pub fn loss_min_p(counts: LossCounts, loss_pp: f64, alpha: f64) -> Result<f64, Skip> {
    let ((lb, sb), (lc, sc)) = counts;
    if sb == 0 || sc == 0 {
        return Err(Skip::TooFewReplies);
    }
    let lost = lb.min(sb) + lc.min(sc);
    let (sbf, scf) = (sb as f64, sc as f64);
    let in_c = lost.min(sc);
    let up = in_c as f64 / scf - (lost - in_c) as f64 / sbf;
    let in_b = lost.min(sb);
    let down = in_b as f64 / sbf - (lost - in_b) as f64 / scf;
    if up.max(down) * 100.0 < loss_pp {
        return Err(Skip::WithinThresholds);
    }
    let min_p = fisher_min_p(lost, sb, sc);
    if min_p <= alpha {
        Ok(min_p)
    } else {
        Err(Skip::CannotReachAlpha)
    }
}

/// Counts a configuration could choose, in the order they are suggested.
pub const COUNT_LADDER: [u64; 14] = [
    5, 10, 20, 30, 50, 100, 200, 300, 500, 1000, 2000, 3000, 5000, 10_000,
];

/// The smallest count on [`COUNT_LADDER`] above `now` at which `ok(count)` holds.
pub fn count_needed(now: u64, mut ok: impl FnMut(u64) -> bool) -> Option<u64> {
    COUNT_LADDER
        .into_iter()
        .filter(|&c| c > now)
        .find(|&c| ok(c))
}

#[cfg(test)]
mod tests {
    use super::super::significance::HdCache;
    use super::*;
    use crate::config::ProbeKind;
    use crate::report::PathEntry;

    fn can(bases: &[&Observed], cur: &Observed, pct: f64, t_pct: f64, t_ms: f64) -> bool {
        can_move(bases, cur, &pooled(bases, cur), pct, t_pct, t_ms)
    }

    fn obs(samples_ms: &[f64]) -> Observed {
        let samples = samples_ms
            .iter()
            .map(|ms| Some((ms * 1000.0) as u64))
            .collect();
        let p = PathEntry::from_samples("a", "b", ProbeKind::Udp, "b:862", samples);
        Observed::of(&p, &mut HdCache::default())
    }

    #[test]
    fn only_paths_whose_samples_allow_a_change_beyond_the_threshold_join() {
        // 50 ms ± 0.3: no split moves p50 by 5 ms (10%).
        let b = obs(&[50.0, 50.1, 50.2, 50.3, 50.1]);
        let c = obs(&[50.2, 50.0, 50.3, 50.1, 50.2]);
        assert!(!can(&[&b], &c, 50.0, 10.0, 2.0));
        // Shifted by 20 ms: the split that was observed does.
        let c = obs(&[70.2, 70.0, 70.3, 70.1, 70.2]);
        assert!(can(&[&b], &c, 50.0, 10.0, 2.0));
        // Faster by 20 ms: so does the other direction.
        let c = obs(&[30.2, 30.0, 30.3, 30.1, 30.2]);
        assert!(can(&[&b], &c, 50.0, 10.0, 2.0));
        // Two outliers of ten cannot move a median of five.
        let b = obs(&[50.0, 50.1, 75.0, 50.3, 50.1]);
        let c = obs(&[50.2, 80.0, 50.3, 50.1, 50.2]);
        assert!(!can(&[&b], &c, 50.0, 10.0, 2.0));
    }

    #[test]
    fn with_several_baselines_the_runs_spread_decides() {
        let run = |ms: f64| obs(&[ms, ms + 0.1, ms + 0.2]);
        let (a, b, c) = (run(20.0), run(20.5), run(21.0));
        assert!(!can(&[&a, &b], &c, 50.0, 10.0, 2.0));
        let far = run(24.0);
        assert!(can(&[&a, &b], &far, 50.0, 10.0, 2.0));
        // A baseline that swung is enough: which run is "current" is not looked at.
        assert!(can(&[&a, &far], &b, 50.0, 10.0, 2.0));
    }

    #[test]
    fn loss_tests_that_cannot_reach_alpha_stay_out() {
        assert_eq!(
            loss_min_p(((0, 10), (1, 10)), 0.5, 0.01),
            Err(Skip::CannotReachAlpha)
        );
        assert_eq!(
            loss_min_p(((0, 100), (0, 100)), 0.5, 0.01),
            Err(Skip::WithinThresholds)
        );
        let p = loss_min_p(((0, 1000), (50, 1000)), 0.5, 0.01).unwrap();
        assert!(p < 1e-14, "{p}");
        // Enough lost to reach alpha, but no split moves loss by 30 pp.
        assert_eq!(
            loss_min_p(((10, 1000), (10, 1000)), 30.0, 0.01),
            Err(Skip::WithinThresholds)
        );
    }

    #[test]
    fn counts_come_from_the_ladder() {
        assert_eq!(count_needed(10, |c| c >= 17), Some(20));
        assert_eq!(count_needed(20, |c| c >= 17), Some(30));
        assert_eq!(count_needed(10, |_| false), None);
    }
}
