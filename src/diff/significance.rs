//! The statistics behind `latmap diff`: Yuen's trimmed-mean test for the location of a
//! path's RTTs, a Harrell-Davis test of its tail, Fisher's exact test for loss, the
//! random-effects combination of several baseline runs, and Holm's correction.
//!
//! Pure functions over numbers; no I/O, no knowledge of runs or paths. docs/ci.md says
//! why these tests and not others.

use std::collections::HashMap;

use statrs::function::beta::checked_beta_reg;

/// Standard normal upper tail, P(Z > z).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Degrees of freedom above which Student's t is taken as normal.
const NORMAL_DF: f64 = 1e7;

/// Upper tail of Student's t, P(T > t), with a small *relative* error far into the tail
/// (`½·I_{ν/(ν+t²)}(ν/2, ½)`), so that p-values of 1e-12 still mean something.
/// `df` infinite or huge: the normal tail.
pub fn t_sf(t: f64, df: f64) -> f64 {
    if t.is_nan() || df.is_nan() || df <= 0.0 {
        return 0.5;
    }
    if df >= NORMAL_DF {
        return normal_sf(t);
    }
    if t.is_infinite() {
        return if t > 0.0 { 0.0 } else { 1.0 };
    }
    let x = df / (df + t * t);
    let tail = 0.5 * checked_beta_reg(df / 2.0, 0.5, x).unwrap_or(1.0);
    if t >= 0.0 { tail } else { 1.0 - tail }
}

/// Two-sided p-value of a t statistic.
pub fn two_sided(t: f64, df: f64) -> f64 {
    if t.is_nan() {
        return 1.0;
    }
    (2.0 * t_sf(t.abs(), df)).min(1.0)
}

/// The critical value: the `t` whose two-sided p-value is `p` (bisection on [`t_sf`]).
pub fn t_critical(p: f64, df: f64) -> f64 {
    if !(p > 0.0 && p < 1.0) {
        return if p >= 1.0 { 0.0 } else { f64::INFINITY };
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while two_sided(hi, df) > p {
        hi *= 2.0;
        if hi > 1e300 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if two_sided(mid, df) > p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-9 * hi {
            break;
        }
    }
    hi
}

/// One run's estimate of a quantity: its value, the variance of that value, and the
/// degrees of freedom of the variance (infinite: known well enough to use the normal).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub var: f64,
    pub df: f64,
}

/// The share of samples trimmed from each end for the location test.
pub const TRIM: f64 = 0.2;

/// The 20% trimmed mean of sorted values and its squared standard error (Yuen 1974:
/// the winsorized variance, `(n−1)·s²_w / (h·(h−1))` with `h` values kept), with
/// `h − 1` degrees of freedom. `None` for fewer than two values.
pub fn trimmed_mean(sorted: &[u64]) -> Option<Estimate> {
    let n = sorted.len();
    if n < 2 {
        return None;
    }
    let g = (TRIM * n as f64).floor() as usize;
    let h = n - 2 * g;
    let kept = &sorted[g..n - g];
    let mean = kept.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
    let (lo, hi) = (sorted[g] as f64, sorted[n - g - 1] as f64);
    let w = |v: u64| (v as f64).clamp(lo, hi);
    let wmean = sorted.iter().map(|&v| w(v)).sum::<f64>() / n as f64;
    let ss: f64 = sorted.iter().map(|&v| (w(v) - wmean).powi(2)).sum();
    let hf = h as f64;
    Some(Estimate {
        value: mean,
        var: ss / (hf * (hf - 1.0)),
        df: hf - 1.0,
    })
}

/// The current run's estimate against one or more baseline runs' estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Current minus baseline.
    pub delta: f64,
    /// The part of the variance of `delta` that more probes per run would shrink ...
    pub within_var: f64,
    /// ... and the part they would not: the quantity's own variation from run to run
    /// (0 with one baseline, which cannot show it).
    pub between_var: f64,
    /// Satterthwaite's degrees of freedom of the whole variance.
    pub df: f64,
}

impl Comparison {
    pub fn se(&self) -> f64 {
        (self.within_var + self.between_var).sqrt()
    }

    /// The t statistic (±∞ when the samples have no spread at all and differ).
    pub fn statistic(&self) -> f64 {
        let se = self.se();
        if se > 0.0 {
            self.delta / se
        } else if self.delta == 0.0 {
            0.0
        } else {
            f64::INFINITY.copysign(self.delta)
        }
    }

    /// Two-sided p-value.
    pub fn p(&self) -> f64 {
        two_sided(self.statistic(), self.df)
    }
}

/// Satterthwaite: the degrees of freedom of a sum of variance components.
fn satterthwaite(parts: &[(f64, f64)]) -> f64 {
    let total: f64 = parts.iter().map(|p| p.0).sum();
    let denom: f64 = parts
        .iter()
        .filter(|p| p.0 > 0.0)
        .map(|&(v, df)| if df.is_finite() { v * v / df } else { 0.0 })
        .sum();
    if denom > 0.0 {
        total * total / denom
    } else {
        f64::INFINITY
    }
}

/// Compares `current` with the baseline runs' estimates of the same quantity.
///
/// One baseline: Welch's two-sample comparison. Several: a random-effects model, in
/// which every run (the current one too) has its own offset from the path's long-run
/// value. The baselines' spread `s²` estimates offset plus within-run noise; the offset
/// variance is `τ² = max(0, s² − v̄)`, `v̄` being the baselines' mean within-run
/// variance. The variance of the change is `τ² + s²/K + var(current)` with K − 1 degrees
/// of freedom for the first two, or, when the baselines agree as closely as their own
/// noise allows (`τ² = 0`), `v̄/K + var(current)` with all the baselines' degrees of
/// freedom. The current run's own variance, read from its few samples, is not trusted
/// below `v̄` (under no change it is one more run like the others, and a run whose
/// samples happen to bunch up must not make its offset look precise), and it keeps its
/// own few degrees of freedom: one run of five samples is all there is of it.
/// `None` without a baseline.
pub fn compare(base: &[Estimate], current: Estimate) -> Option<Comparison> {
    let k = base.len();
    match base {
        [] => None,
        [b] => Some(Comparison {
            delta: current.value - b.value,
            within_var: b.var + current.var,
            between_var: 0.0,
            df: satterthwaite(&[(b.var, b.df), (current.var, current.df)]),
        }),
        _ => {
            let kf = k as f64;
            let mean = base.iter().map(|e| e.value).sum::<f64>() / kf;
            let s2 = base.iter().map(|e| (e.value - mean).powi(2)).sum::<f64>() / (kf - 1.0);
            let vbar = base.iter().map(|e| e.var).sum::<f64>() / kf;
            let dfw: f64 = base.iter().map(|e| e.df).sum();
            let delta = current.value - mean;
            let cur = (current.var.max(vbar), current.df);
            Some(if s2 > vbar {
                let tau2 = s2 - vbar;
                // The baselines' mean carries tau2/K + vbar/K = s2/K; the current run
                // its own offset tau2 and its noise.
                let runs = tau2 + s2 / kf;
                Comparison {
                    delta,
                    within_var: cur.0 + vbar / kf,
                    between_var: runs - vbar / kf,
                    df: satterthwaite(&[(runs, kf - 1.0), cur]),
                }
            } else {
                Comparison {
                    delta,
                    within_var: vbar / kf + cur.0,
                    between_var: 0.0,
                    df: satterthwaite(&[(vbar / kf, dfw), cur]),
                }
            })
        }
    }
}

/// Harrell-Davis weights of quantile `q` for `n` sorted values: the probability that a
/// Beta((n+1)q, (n+1)(1−q)) variable falls in ((i−1)/n, i/n], kept only where they are
/// not negligible (`start` is the index of the first weight kept).
#[derive(Debug)]
struct HdWeights {
    start: usize,
    w: Vec<f64>,
}

impl HdWeights {
    fn new(n: usize, q: f64) -> HdWeights {
        let nf = n as f64;
        let (a, b) = ((nf + 1.0) * q, (nf + 1.0) * (1.0 - q));
        // Above a few thousand values the Beta is normal to far better than the
        // estimate needs (and the continued fraction would need many more terms).
        let cdf = |x: f64| -> f64 {
            if x <= 0.0 {
                0.0
            } else if x >= 1.0 {
                1.0
            } else if n > 2000 {
                let mu = a / (a + b);
                let sd = (a * b / ((a + b).powi(2) * (a + b + 1.0))).sqrt();
                1.0 - normal_sf((x - mu) / sd)
            } else {
                checked_beta_reg(a, b, x).unwrap_or(if x < q { 0.0 } else { 1.0 })
            }
        };
        let sd = (q * (1.0 - q) / (nf + 2.0)).sqrt();
        let lo = (((q - 12.0 * sd) * nf).floor().max(0.0)) as usize;
        let hi = (((q + 12.0 * sd) * nf).ceil().min(nf)) as usize;
        let mut w = Vec::with_capacity(hi.saturating_sub(lo) + 1);
        let mut prev = cdf(lo as f64 / nf);
        for i in lo + 1..=hi.max(lo + 1).min(n) {
            let c = cdf(i as f64 / nf);
            w.push((c - prev).max(0.0));
            prev = c;
        }
        HdWeights { start: lo, w }
    }

    fn get(&self, i: usize) -> f64 {
        i.checked_sub(self.start)
            .and_then(|k| self.w.get(k))
            .copied()
            .unwrap_or(0.0)
    }

    fn estimate(&self, sorted: &[u64]) -> f64 {
        self.w
            .iter()
            .zip(&sorted[self.start.min(sorted.len())..])
            .map(|(w, &v)| w * v as f64)
            .sum()
    }
}

/// Harrell-Davis weights by (count, quantile), computed once per count.
#[derive(Debug, Default)]
pub struct HdCache {
    weights: HashMap<(usize, u64), HdWeights>,
}

impl HdCache {
    fn weights(&mut self, n: usize, q: f64) -> &HdWeights {
        self.weights
            .entry((n, q.to_bits()))
            .or_insert_with(|| HdWeights::new(n, q))
    }
}

/// How many values a tail quantile `q` needs before it is tested: 2.5 expected values
/// beyond it (50 for p95, 250 for p99). Below that, a sample's tail estimate swings
/// with every outlier and no standard error describes it (docs/ci.md has the figures).
pub fn tail_min_values(q: f64) -> usize {
    (2.5 / (1.0 - q)).round() as usize
}

/// The tail excess of sorted values, `HD_q − HD_½` (how far quantile `q` lies above the
/// median, by the Harrell-Davis estimator), with a variance that is the larger of its
/// jackknife variance and one read from the order statistics around quantile `q` and
/// the median (half the distance between the values one binomial standard deviation
/// below and above each rank, squared). The second guards against a tail so sparse that
/// leaving one value out barely moves the estimate. Normal reference (infinite df).
/// `None` below [`tail_min_values`].
pub fn tail_excess(sorted: &[u64], q: f64, cache: &mut HdCache) -> Option<Estimate> {
    let n = sorted.len();
    if n < tail_min_values(q).max(3) {
        return None;
    }
    let value = cache.weights(n, q).estimate(sorted) - cache.weights(n, 0.5).estimate(sorted);
    // Leave-one-out estimates with the weights of n − 1 values: leaving out value j,
    // the i-th remaining value is sorted[i] for i < j and sorted[i + 1] for i >= j.
    cache.weights(n - 1, q);
    cache.weights(n - 1, 0.5);
    let (wq, wm) = (
        &cache.weights[&(n - 1, q.to_bits())],
        &cache.weights[&(n - 1, 0.5f64.to_bits())],
    );
    let u = |i: usize| wq.get(i) - wm.get(i);
    let total_shifted: f64 = (0..n - 1).map(|i| u(i) * sorted[i + 1] as f64).sum();
    let (mut before, mut before_shifted) = (0.0, 0.0);
    let mut loo = Vec::with_capacity(n);
    for j in 0..n {
        loo.push(before + (total_shifted - before_shifted));
        if j < n - 1 {
            before += u(j) * sorted[j] as f64;
            before_shifted += u(j) * sorted[j + 1] as f64;
        }
    }
    let mean = loo.iter().sum::<f64>() / n as f64;
    let nf = n as f64;
    let jackknife = (nf - 1.0) / nf * loo.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
    let order = |p: f64| {
        let half = (nf * p * (1.0 - p)).sqrt();
        let lo = ((nf * p - half).floor() as usize).clamp(1, n);
        let hi = ((nf * p + half).ceil() as usize).clamp(1, n);
        (sorted[hi - 1] as f64 - sorted[lo - 1] as f64) / 2.0
    };
    let from_order = order(q).powi(2) + order(0.5).powi(2);
    Some(Estimate {
        value,
        var: jackknife.max(from_order),
        df: f64::INFINITY,
    })
}

/// ln C(n, k).
fn ln_choose(n: f64, k: f64) -> f64 {
    libm::lgamma(n + 1.0) - libm::lgamma(k + 1.0) - libm::lgamma(n - k + 1.0)
}

/// Above this many possible tables Fisher's test gives way to the normal approximation,
/// which is excellent there (and a forged file cannot make the diff loop for hours).
const FISHER_MAX_TABLES: u64 = 200_000;

/// Fisher's exact test, two-sided, of `lost_a` of `sent_a` against `lost_b` of
/// `sent_b`: the probability, with the total lost fixed, of a split at most as likely as
/// the one seen. p = 1 when either side sent nothing or nothing was lost at all.
pub fn fisher_exact(lost_a: u64, sent_a: u64, lost_b: u64, sent_b: u64) -> f64 {
    let (la, lb) = (lost_a.min(sent_a), lost_b.min(sent_b));
    let lost = la + lb;
    if sent_a == 0 || sent_b == 0 || lost == 0 || lost == sent_a + sent_b {
        return 1.0;
    }
    let (lo, hi) = (lost.saturating_sub(sent_b), lost.min(sent_a));
    if hi - lo > FISHER_MAX_TABLES {
        return pooled_z(la, sent_a, lb, sent_b);
    }
    let (na, nb, l) = (sent_a as f64, sent_b as f64, lost as f64);
    let ln_p = |x: u64| {
        let x = x as f64;
        ln_choose(na, x) + ln_choose(nb, l - x) - ln_choose(na + nb, l)
    };
    let seen = ln_p(la);
    let mut p = 0.0;
    for x in lo..=hi {
        let v = ln_p(x);
        if v <= seen + 1e-7 {
            p += v.exp();
        }
    }
    p.min(1.0)
}

/// The smallest p-value [`fisher_exact`] can give when `lost` probes are lost in all over
/// sides that sent `sent_a` and `sent_b`: that of the most lopsided split.
pub fn fisher_min_p(lost: u64, sent_a: u64, sent_b: u64) -> f64 {
    let lost = lost.min(sent_a + sent_b);
    let all_a = lost.min(sent_a);
    let all_b = lost.min(sent_b);
    fisher_exact(all_a, sent_a, lost - all_a, sent_b).min(fisher_exact(
        lost - all_b,
        sent_a,
        all_b,
        sent_b,
    ))
}

/// The exceedance test of a tail: how many of each side's values lie above quantile `q`
/// of the pooled values, compared with Fisher's exact test (two-sided). Distribution
/// free, so it holds where the tail is too sparse for any standard error: a tail
/// verdict needs it too. `pooled` is both sides' values, sorted.
pub fn exceedance_p(base: &[u64], current: &[u64], pooled: &[u64], q: f64) -> f64 {
    if pooled.is_empty() {
        return 1.0;
    }
    let level = crate::stats::percentile_sorted(pooled, q * 100.0);
    let above = |s: &[u64]| (s.len() - s.partition_point(|&v| v as f64 <= level)) as u64;
    fisher_exact(
        above(base),
        base.len() as u64,
        above(current),
        current.len() as u64,
    )
}

/// Pooled two-proportion z-test, two-sided (for counts beyond Fisher's reach).
fn pooled_z(lost_a: u64, sent_a: u64, lost_b: u64, sent_b: u64) -> f64 {
    let (na, nb) = (sent_a as f64, sent_b as f64);
    let pooled = (lost_a + lost_b) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 {
        return 1.0;
    }
    two_sided(
        (lost_b as f64 / nb - lost_a as f64 / na) / se,
        f64::INFINITY,
    )
}

/// The Rao-Scott design effect of several baseline runs' loss counts: Pearson's χ² of
/// their homogeneity over its degrees of freedom, at least 1. A path whose loss swings
/// from run to run more than chance allows has its counts divided by it, so that its
/// effective number of probes is what its history supports.
pub fn loss_design_effect(runs: &[(u64, u64)]) -> f64 {
    let sent: u64 = runs.iter().map(|r| r.1).sum();
    let lost: u64 = runs.iter().map(|r| r.0.min(r.1)).sum();
    if runs.len() < 2 || sent == 0 || lost == 0 || lost == sent {
        return 1.0;
    }
    let p = lost as f64 / sent as f64;
    let chi2: f64 = runs
        .iter()
        .filter(|r| r.1 > 0)
        .map(|&(l, s)| {
            let e = s as f64 * p;
            (l.min(s) as f64 - e).powi(2) / (e * (1.0 - p))
        })
        .sum();
    (chi2 / (runs.len() - 1) as f64).max(1.0)
}

/// Holm-Bonferroni adjusted p-values, in the order given: rejecting where the adjusted
/// value is below α keeps the chance of any false rejection in the family below α.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]).then(a.cmp(&b)));
    let mut adjusted = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        let v = ((m - rank) as f64 * p[i]).min(1.0);
        running = running.max(v);
        adjusted[i] = running;
    }
    adjusted
}

/// Tarone's count for a family of tests some of which are discrete: the smallest K such
/// that at most K tests can reach a p-value of α/K at all (`min_p[i]` is the smallest
/// p-value test i can give; 0 for a continuous test). Tests whose `min_p` exceeds α/K
/// can never be rejected and are left out of the correction (Tarone 1990).
pub fn tarone_k(min_p: &[f64], alpha: f64) -> usize {
    let mut sorted: Vec<f64> = min_p.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut k = 1;
    loop {
        let able = sorted.partition_point(|&p| p <= alpha / k as f64);
        if able <= k {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, rel: f64) -> bool {
        (a - b).abs() <= rel * b.abs().max(1e-300)
    }

    #[test]
    fn student_t_tails_match_reference_values() {
        // Reference values from scipy.stats.t.sf and norm.sf.
        for (t, df, want) in [
            (2.0, 4.0, 0.058_058_261_758_407_78),
            (36.0, 4.0, 1.776_971_751_165_244_5e-6),
            (110.0, 4.0, 2.047_911_907_873_613e-8),
            (5.0, 10.0, 2.686_668_013_782_263_4e-4),
            (-1.0, 3.0, 0.804_498_890_522_114_8),
            (3.0, 1e9, 1.349_898_031_630_093_3e-3),
        ] {
            let got = t_sf(t, df);
            assert!(
                close(got, want, 1e-6),
                "t_sf({t}, {df}) = {got}, want {want}"
            );
        }
        assert_eq!(t_sf(f64::INFINITY, 4.0), 0.0);
        assert_eq!(two_sided(f64::NAN, 4.0), 1.0);
        // The critical value inverts the tail: scipy.stats.t.isf(0.01/1260/2, 4) = 29.43.
        let c = t_critical(0.01 / 1260.0, 4.0);
        assert!((c - 29.430_43).abs() < 1e-3, "{c}");
        assert!(close(two_sided(c, 4.0), 0.01 / 1260.0, 1e-6));
        assert!((t_critical(0.05, f64::INFINITY) - 1.959_964).abs() < 1e-5);
    }

    #[test]
    fn trimmed_mean_follows_yuen() {
        // n = 10, g = 2: trimmed mean of the middle six; winsorized values
        // 3,3,3,4,5,6,7,8,8,8 (mean 5.5, sum of squares 42.5), h = 6:
        // var = 42.5 / (6 * 5) = 1.4167.
        let e = trimmed_mean(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 100]).unwrap();
        assert!(close(e.value, 5.5, 1e-12), "{e:?}");
        assert!(close(e.var, 42.5 / 30.0, 1e-12), "{e:?}");
        assert_eq!(e.df, 5.0);
        // An outlier does not move it; n = 4 trims nothing.
        let e = trimmed_mean(&[10, 20, 30, 40]).unwrap();
        assert_eq!((e.value, e.df), (25.0, 3.0));
        assert!(trimmed_mean(&[5]).is_none());
    }

    #[test]
    fn yuen_welch_with_one_baseline() {
        // Two samples of five: trimmed means 2 and 12, winsorized sums of squares 4
        // each: var = 4 / (3 * 2) = 2/3 each; t = 10 / sqrt(4/3) = 8.660; Welch df 4.
        let b = trimmed_mean(&[1, 1, 2, 3, 3]).unwrap();
        let c = trimmed_mean(&[11, 11, 12, 13, 13]).unwrap();
        let cmp = compare(&[b], c).unwrap();
        assert!(
            close(cmp.statistic(), 8.660_254_037_844_387, 1e-9),
            "{cmp:?}"
        );
        assert!(close(cmp.df, 4.0, 1e-12));
        // 2 * scipy.stats.t.sf(8.660254037844387, 4)
        assert!(close(cmp.p(), 9.780_886_191_372_8e-4, 1e-6), "{}", cmp.p());
        // No spread and a difference: certain; no spread and none: nothing.
        let same = Estimate {
            value: 5.0,
            var: 0.0,
            df: 4.0,
        };
        let other = Estimate { value: 6.0, ..same };
        assert_eq!(compare(&[same], other).unwrap().p(), 0.0);
        assert_eq!(compare(&[same], same).unwrap().p(), 1.0);
        assert!(compare(&[], same).is_none());
    }

    #[test]
    fn several_baselines_carry_their_run_to_run_variation() {
        let run = |value: f64| Estimate {
            value,
            var: 0.01,
            df: 8.0,
        };
        // A path that swings ±5 between runs: a 5 step is ordinary.
        let swinging = [run(-5.0), run(5.0), run(-5.0), run(5.0), run(0.0)];
        let c = compare(&swinging, run(5.0)).unwrap();
        assert!(c.between_var > 20.0, "{c:?}");
        assert!(c.p() > 0.1, "{c:?}");
        // A steady path: a 3 step is far outside its history.
        let steady = [run(0.0), run(0.1), run(-0.1), run(0.05), run(-0.05)];
        let c = compare(&steady, run(3.0)).unwrap();
        assert_eq!(c.between_var, 0.0);
        assert!(c.p() < 1e-10, "{c:?}");
        // The steady case pools the runs' degrees of freedom: more than the current's 8.
        assert!(c.df > 10.0, "{c:?}");
    }

    #[test]
    fn harrell_davis_tail_excess() {
        let mut cache = HdCache::default();
        assert!(tail_excess(&[1; 49], 0.95, &mut cache).is_none());
        // Uniform 0..=999: HD_95 - HD_50 close to 450, small variance.
        let v: Vec<u64> = (0..1000).collect();
        let e = tail_excess(&v, 0.95, &mut cache).unwrap();
        assert!((e.value - 449.5).abs() < 1.0, "{e:?}");
        assert!(e.var > 0.0 && e.var < 400.0, "{e:?}");
        // Weights sum to one, also past the exact range.
        for n in [50, 100, 2001, 50_000] {
            let w = HdWeights::new(n, 0.95);
            let sum: f64 = w.w.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "n = {n}: {sum}");
        }
        // A tail of ten values far out is a big, well-determined excess; with only the
        // top five the order statistics show how loosely p95 is pinned.
        let mut far: Vec<u64> = (0..90)
            .map(|i| 1000 + i)
            .chain((0..10).map(|i| 61_000 + i))
            .collect();
        far.sort_unstable();
        let e = tail_excess(&far, 0.95, &mut cache).unwrap();
        assert!(e.value > 50_000.0, "{e:?}");
        let mut edge: Vec<u64> = (0..95)
            .map(|i| 1000 + i)
            .chain((0..5).map(|i| 61_000 + i))
            .collect();
        edge.sort_unstable();
        let e2 = tail_excess(&edge, 0.95, &mut cache).unwrap();
        assert!(e2.var.sqrt() > 20_000.0, "{e2:?}");
    }

    #[test]
    fn fisher_exact_matches_reference_values() {
        // scipy.stats.fisher_exact([[0, 10], [1, 9]]) -> p = 1.0
        assert_eq!(fisher_exact(0, 10, 1, 10), 1.0);
        // [[10, 90], [20, 80]] -> 0.073428
        assert!(close(
            fisher_exact(10, 100, 20, 100),
            0.073_427_589_721_376,
            1e-9
        ));
        // [[0, 1000], [50, 950]] -> 9.4786e-16
        let p = fisher_exact(0, 1000, 50, 1000);
        assert!(close(p, 9.478_614_586_173_89e-16, 1e-6), "{p}");
        assert_eq!(fisher_exact(0, 100, 0, 100), 1.0);
        assert_eq!(fisher_exact(0, 0, 5, 10), 1.0);
        // 1 lost in all over 10 + 10 can never be evidence.
        assert_eq!(fisher_min_p(1, 10, 10), 1.0);
        // 5 lost over 10 + 10: all on one side gives 2 * C(10,5) / C(20,5) = 0.0325.
        assert!((fisher_min_p(5, 10, 10) - 0.032_507_739).abs() < 1e-6);
        // The exceedance test: ten values far above a base of ninety similar ones.
        let base: Vec<u64> = (0..100).collect();
        let cur: Vec<u64> = (0..90).chain(1000..1010).collect();
        let mut pooled = [base.clone(), cur.clone()].concat();
        pooled.sort_unstable();
        // 200 values, pooled p95 between ranks 190 and 191: 0 of base above, 10 of current.
        let p = exceedance_p(&base, &cur, &pooled, 0.95);
        assert!(
            close(p, fisher_exact(0, 100, 10, 100), 1e-12) && p < 0.002,
            "{p}"
        );
        assert!(exceedance_p(&base, &base, &[base.clone(), base.clone()].concat(), 0.95) > 0.5);
        // Counts beyond the exact range use the normal approximation.
        let p = fisher_exact(100_000, 10_000_000, 130_000, 10_000_000);
        assert!(p < 1e-50, "{p}");
    }

    #[test]
    fn design_effect_of_loss_counts() {
        assert_eq!(loss_design_effect(&[(1, 100), (1, 100), (2, 100)]), 1.0);
        let d = loss_design_effect(&[(0, 1000), (40, 1000), (0, 1000), (40, 1000)]);
        assert!(d > 10.0, "{d}");
        assert_eq!(loss_design_effect(&[(3, 100)]), 1.0);
    }

    #[test]
    fn holm_adjusts_in_step_down_order() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        // sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04)
        assert_eq!(adj, vec![0.03, 0.06, 0.06, 0.02]);
        assert!(holm(&[]).is_empty());
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
    }

    #[test]
    fn tarone_leaves_out_tests_that_cannot_reach_alpha() {
        // Three continuous tests and a hundred that can never go below 0.03.
        let mut min_p = vec![0.0; 3];
        min_p.extend(std::iter::repeat_n(0.03, 100));
        assert_eq!(tarone_k(&min_p, 0.01), 3);
        // Without discrete tests it is the family's size.
        assert_eq!(tarone_k(&[0.0; 7], 0.01), 7);
        assert_eq!(tarone_k(&[], 0.01), 1);
    }
}
