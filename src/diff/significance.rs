//! The statistics behind `latmap diff`: Mann-Whitney U on RTT samples, a
//! two-proportion z-test on loss, and Holm's correction for testing many paths at once.
//!
//! Pure functions; no I/O.

/// Standard normal upper tail, P(Z > z).
fn normal_sf(z: f64) -> f64 {
    0.5 * libm::erfc(z / std::f64::consts::SQRT_2)
}

/// Two-sided p-value of a z statistic.
fn two_sided(z: f64) -> f64 {
    if z.is_nan() {
        1.0
    } else {
        (2.0 * normal_sf(z.abs())).min(1.0)
    }
}

/// The Mann-Whitney U test (Wilcoxon rank-sum) of `x` against `y`, two-sided, with the
/// normal approximation corrected for ties and for continuity. Returns the p-value and
/// the common-language effect size P(x > y) + P(x = y)/2 (0.5 when the two are alike).
/// With fewer than two samples on either side there is no evidence: p = 1.
pub fn mann_whitney(x: &[u64], y: &[u64]) -> (f64, f64) {
    let (n1, n2) = (x.len(), y.len());
    if n1 < 2 || n2 < 2 {
        return (1.0, 0.5);
    }
    let mut all: Vec<(u64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_unstable_by_key(|&(v, _)| v);
    let n = all.len();
    let (mut rank_sum_x, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j+1 share their mean.
        let avg = (i + j + 2) as f64 / 2.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_sum_x += avg;
            }
        }
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_x - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    let effect = u / (n1f * n2f);
    if var <= 0.0 {
        return (1.0, effect);
    }
    let diff = u - mean;
    let z = (diff.abs() - 0.5).max(0.0) * diff.signum() / var.sqrt();
    (two_sided(z), effect)
}

/// Two-sided two-proportion z-test (pooled) of `lost_a / sent_a` against
/// `lost_b / sent_b`. p = 1 when either side sent nothing or nothing was lost at all.
pub fn two_proportion(lost_a: u64, sent_a: u64, lost_b: u64, sent_b: u64) -> f64 {
    if sent_a == 0 || sent_b == 0 {
        return 1.0;
    }
    let (na, nb) = (sent_a as f64, sent_b as f64);
    let (pa, pb) = (
        lost_a.min(sent_a) as f64 / na,
        lost_b.min(sent_b) as f64 / nb,
    );
    let pooled = (lost_a.min(sent_a) + lost_b.min(sent_b)) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 {
        return 1.0;
    }
    two_sided((pb - pa) / se)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mann_whitney_matches_a_worked_example() {
        // x = 1..=5 against y = 6..=10: complete separation, U = 0. The normal
        // approximation with continuity correction gives z = (12.5 - 0.5)/sqrt(22.9167)
        // = 2.5067, p = 0.01219 (as scipy's mannwhitneyu with method="asymptotic").
        let (p, effect) = mann_whitney(&[1, 2, 3, 4, 5], &[6, 7, 8, 9, 10]);
        assert!((p - 0.012_19).abs() < 1e-4, "{p}");
        assert_eq!(effect, 0.0);
        // Identical samples: no evidence at all.
        let (p, effect) = mann_whitney(&[5, 5, 5], &[5, 5, 5]);
        assert_eq!((p, effect), (1.0, 0.5));
        // Symmetric.
        let (p1, _) = mann_whitney(&[1, 3, 5, 7, 9], &[2, 4, 6, 8, 30]);
        let (p2, _) = mann_whitney(&[2, 4, 6, 8, 30], &[1, 3, 5, 7, 9]);
        assert!((p1 - p2).abs() < 1e-12);
        assert_eq!(mann_whitney(&[1], &[2, 3]), (1.0, 0.5));
    }

    #[test]
    fn mann_whitney_with_ties() {
        // x = [1,2,2,3], y = [2,3,3,4]: ranks with ties 1, 3, 3, 6 | 3, 6, 6, 8;
        // R1 = 13, U = 3, mean 8, tie term (3^3-3)*2 = 48, var = 16/12*(9 - 48/56)
        // = 10.857, z = (5 - 0.5)/3.295 = 1.3657, p = 0.1720.
        let (p, _) = mann_whitney(&[1, 2, 2, 3], &[2, 3, 3, 4]);
        assert!((p - 0.1720).abs() < 1e-3, "{p}");
    }

    #[test]
    fn two_proportion_examples() {
        // 0 of 10 against 1 of 10 is no evidence of a change.
        assert!(two_proportion(0, 10, 1, 10) > 0.3);
        // 0% against 5% over 1,000 probes each is.
        assert!(two_proportion(0, 1000, 50, 1000) < 1e-10);
        assert_eq!(two_proportion(0, 100, 0, 100), 1.0);
        assert_eq!(two_proportion(0, 0, 5, 10), 1.0);
        // 10/100 vs 20/100: pooled 0.15, se 0.0505, z = 1.98, p = 0.0477.
        assert!((two_proportion(10, 100, 20, 100) - 0.0477).abs() < 1e-3);
    }

    #[test]
    fn holm_adjusts_in_step_down_order() {
        let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
        // sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 -> max(0.06, 0.04)
        assert_eq!(adj, vec![0.03, 0.06, 0.06, 0.02]);
        assert!(holm(&[]).is_empty());
        assert_eq!(holm(&[0.9, 0.8]), vec![1.0, 1.0]);
    }
}
