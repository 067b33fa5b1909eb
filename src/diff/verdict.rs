//! From the paths' observations to their verdicts: every test of every path, the family
//! corrected over, Holm's correction, the verdict rules, and the blind spots.

use std::collections::{HashMap, HashSet};

use super::family::{can_move, count_needed, loss_min_p, pooled, threshold_us};
use super::observed::{Observed, TAILS};
use super::significance::{
    Comparison, compare, exceedance_p, fisher_exact, holm, loss_design_effect, t_critical,
    tail_min_values, tarone_k,
};
use super::{
    BlindSpots, DiffThresholds, Family, PathDiff, PathKey, Quantity, Side, Skip, Test, Tests,
    Verdict,
};
use crate::stats::percentile_us;

/// One path to judge: the current run's observation and the baselines'.
pub struct Input<'a> {
    pub key: PathKey,
    pub current: &'a Observed,
    pub bases: Vec<&'a Observed>,
}

/// A test before the correction.
#[derive(Debug, Clone, Copy, Default)]
struct Pending {
    cmp: Option<Comparison>,
    skip: Option<Skip>,
    p: Option<f64>,
    /// Smallest p-value the test can give (0 for the continuous tests).
    min_p: f64,
    /// Standard error of a loss difference (for the record).
    loss_se: Option<f64>,
    /// Tails: the exceedance test's p-value (unadjusted; a verdict needs it below α).
    exceed_p: Option<f64>,
}

impl Pending {
    fn skipped(skip: Skip, cmp: Option<Comparison>) -> Pending {
        Pending {
            cmp,
            skip: Some(skip),
            ..Pending::default()
        }
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    v.sort_unstable();
    (!v.is_empty()).then(|| percentile_us(&v, 50.0))
}

fn side_of(o: &Observed) -> Side {
    Side {
        p50_us: o.p50,
        p95_us: o.p95,
        p99_us: o.p99,
        loss: (o.sent > 0).then(|| o.lost as f64 / o.sent as f64),
        sent: o.sent,
        received: o.sent - o.lost,
    }
}

/// The baseline side: one baseline as it is; several as the median of their quantiles
/// and their pooled counts.
fn base_side(bases: &[&Observed]) -> Side {
    if let [b] = bases {
        return side_of(b);
    }
    let q = |f: fn(&Observed) -> Option<u64>| median(bases.iter().filter_map(|b| f(b)).collect());
    let sent: u64 = bases.iter().map(|b| b.sent).sum();
    let lost: u64 = bases.iter().map(|b| b.lost).sum();
    Side {
        p50_us: q(|b| b.p50),
        p95_us: q(|b| b.p95),
        p99_us: q(|b| b.p99),
        loss: (sent > 0).then(|| lost as f64 / sent as f64),
        sent,
        received: sent - lost,
    }
}

/// Loss counts for the test: several baselines are pooled, and every count is divided
/// by the baselines' design effect (their loss's variation from run to run).
fn loss_counts(bases: &[&Observed], cur: &Observed) -> ((u64, u64), (u64, u64)) {
    let runs: Vec<(u64, u64)> = bases.iter().map(|b| (b.lost, b.sent)).collect();
    let deff = loss_design_effect(&runs);
    let shrink = |v: u64| (v as f64 / deff).round() as u64;
    let (lb, sb) = runs
        .iter()
        .fold((0, 0), |(l, s), &(lr, sr)| (l + lr, s + sr));
    (
        (shrink(lb), shrink(sb)),
        (shrink(cur.lost), shrink(cur.sent)),
    )
}

fn prepare(input: &Input, t: &DiffThresholds) -> [Pending; 4] {
    let (cur, bases) = (input.current, input.bases.as_slice());
    let mut out = [Pending::default(); 4];
    let pooled = pooled(bases, cur);
    // p50: Yuen's trimmed means.
    let locs: Vec<_> = bases.iter().filter_map(|b| b.location).collect();
    out[0] = match (cur.location, locs.is_empty()) {
        (Some(c), false) => {
            let cmp = compare(&locs, c);
            if can_move(bases, cur, &pooled, 50.0, t.p50_pct, t.p50_ms) {
                Pending {
                    cmp,
                    p: cmp.map(|c| c.p()),
                    ..Pending::default()
                }
            } else {
                Pending::skipped(Skip::WithinThresholds, cmp)
            }
        }
        _ => Pending::skipped(Skip::TooFewReplies, None),
    };
    // Tails: the Harrell-Davis tail excess over the median.
    for (k, &(quantity, q)) in TAILS.iter().enumerate() {
        let (pct, ms) = tail_thresholds(quantity, t);
        let est: Vec<_> = bases.iter().filter_map(|b| b.tails[k]).collect();
        out[1 + k] = match (cur.tails[k], est.len() == bases.len()) {
            (Some(c), true) => {
                let cmp = compare(&est, c);
                if can_move(bases, cur, &pooled, q * 100.0, pct, ms) {
                    let exceed_p = Some(exceedance(bases, cur, &pooled, q));
                    Pending {
                        cmp,
                        p: cmp.map(|c| c.p()),
                        exceed_p,
                        ..Pending::default()
                    }
                } else {
                    Pending::skipped(Skip::WithinThresholds, cmp)
                }
            }
            _ => Pending::skipped(Skip::TooFewReplies, None),
        };
    }
    // Loss: Fisher's exact test.
    let ((lb, sb), (lc, sc)) = loss_counts(bases, cur);
    out[3] = match loss_min_p(((lb, sb), (lc, sc)), t.loss_pp, t.alpha) {
        Ok(min_p) => {
            let pooled = (lb + lc) as f64 / (sb + sc) as f64;
            Pending {
                p: Some(fisher_exact(lb, sb, lc, sc)),
                min_p,
                loss_se: Some(
                    (pooled * (1.0 - pooled) * (1.0 / sb as f64 + 1.0 / sc as f64)).sqrt(),
                ),
                ..Pending::default()
            }
        }
        Err(skip) => Pending::skipped(skip, None),
    };
    out
}

/// The exceedance test of one path's tail; several baselines count as one pooled side.
fn exceedance(bases: &[&Observed], cur: &Observed, pooled: &[u64], q: f64) -> f64 {
    if let [b] = bases {
        return exceedance_p(&b.sorted, &cur.sorted, pooled, q);
    }
    let mut base: Vec<u64> = bases
        .iter()
        .flat_map(|b| b.sorted.iter().copied())
        .collect();
    base.sort_unstable();
    let mut all = [base.as_slice(), &cur.sorted].concat();
    all.sort_unstable();
    exceedance_p(&base, &cur.sorted, &all, q)
}

fn tail_thresholds(quantity: Quantity, t: &DiffThresholds) -> (f64, f64) {
    match quantity {
        Quantity::P99 => (t.p99_pct, t.p99_ms),
        _ => (t.p95_pct, t.p95_ms),
    }
}

/// Critical values of two-sided t tests at one level, by degrees of freedom (rounded
/// down to halves, so the critical value errs on the large side; above 2,000 the
/// normal's).
struct Critical {
    level: f64,
    cache: Vec<Option<f64>>,
}

impl Critical {
    const HALVES: usize = 4000;

    fn new(level: f64) -> Critical {
        Critical {
            level,
            cache: vec![None; Self::HALVES + 2],
        }
    }

    fn at(&mut self, df: f64) -> f64 {
        let key = if df.is_finite() {
            ((df * 2.0).floor().max(1.0) as usize).min(Self::HALVES + 1)
        } else {
            Self::HALVES + 1
        };
        let level = self.level;
        *self.cache[key].get_or_insert_with(|| {
            let df = if key > Self::HALVES {
                f64::INFINITY
            } else {
                key as f64 / 2.0
            };
            t_critical(level, df)
        })
    }
}

fn fmt_delta_ms(us: i64) -> String {
    format!("{} ms", crate::units::signed_ms(us))
}

fn percent(d: i64, base: u64) -> String {
    format!("{:+.1}%", d as f64 / base.max(1) as f64 * 100.0)
}

/// Judges every path; returns the paths' diffs (in input order), the family and the
/// blind spots.
pub fn judge(inputs: Vec<Input>, t: &DiffThresholds) -> (Vec<PathDiff>, Family, BlindSpots) {
    // First pass: every test that could give a verdict, with its p-value and the
    // smallest p-value it can reach. (The tests are prepared again in the second pass
    // rather than kept: for a million paths that saves some 400 MB.)
    struct Candidate {
        path: usize,
        quantity: usize,
        p: f64,
        min_p: f64,
    }
    let mut candidates = Vec::new();
    let mut skipped = 0;
    for (i, input) in inputs.iter().enumerate() {
        for (q, p) in prepare(input, t).iter().enumerate() {
            match p.skip {
                None => candidates.push(Candidate {
                    path: i,
                    quantity: q,
                    p: p.p.unwrap_or(1.0),
                    min_p: p.min_p,
                }),
                Some(_) => skipped += 1,
            }
        }
    }
    // The family: those, less the discrete ones that cannot reach α / K (Tarone); then
    // Holm over it.
    let min_p: Vec<f64> = candidates.iter().map(|c| c.min_p).collect();
    let k = tarone_k(&min_p, t.alpha);
    let (members, left): (Vec<&Candidate>, Vec<&Candidate>) = candidates
        .iter()
        .partition(|c| c.min_p <= t.alpha / k as f64);
    let left_out: HashSet<(usize, usize)> = left.iter().map(|c| (c.path, c.quantity)).collect();
    let raw: Vec<f64> = members.iter().map(|c| c.p).collect();
    let mut family = Family::default();
    let mut adjusted: HashMap<(usize, usize), f64> = HashMap::new();
    for (c, a) in members.iter().zip(holm(&raw)) {
        adjusted.insert((c.path, c.quantity), a);
        match c.quantity {
            0 => family.p50 += 1,
            1 => family.p95 += 1,
            2 => family.p99 += 1,
            _ => family.loss += 1,
        }
    }
    family.tests = members.len();
    family.left_out = skipped + left_out.len();

    let mut critical = Critical::new(t.alpha / (family.tests + 1) as f64);
    let mut blind = BlindSpots::default();
    let mut needs = Vec::new();
    let mut paths = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let mut ps = prepare(&input, t);
        for (q, p) in ps.iter_mut().enumerate() {
            if left_out.contains(&(i, q)) {
                *p = Pending::skipped(Skip::CannotReachAlpha, p.cmp);
            }
        }
        let adj = |q: usize| adjusted.get(&(i, q)).copied().unwrap_or(1.0);
        paths.push(path_diff(
            input,
            &ps,
            adj,
            t,
            &mut critical,
            &mut blind,
            &mut needs,
        ));
    }
    needs.sort_unstable();
    blind.p50_count_needed = needs.last().copied();
    if let Some(&most) = needs.get((needs.len() * 9).div_ceil(10).saturating_sub(1)) {
        blind.p50_count_most = Some(most);
        blind.p50_paths_most = needs.partition_point(|&c| c <= most);
    }
    (paths, family, blind)
}

fn test_of(p: &Pending, adjusted: f64) -> Test {
    Test {
        tested: p.skip.is_none(),
        skipped: p.skip,
        p: p.p,
        p_adjusted: adjusted,
        statistic: p.cmp.map(|c| c.statistic()).filter(|s| s.is_finite()),
        df: p.cmp.map(|c| c.df).filter(|d| d.is_finite()),
        se: p.cmp.map(|c| c.se()).or(p.loss_se),
    }
}

fn path_diff(
    input: Input,
    ps: &[Pending; 4],
    adj: impl Fn(usize) -> f64,
    t: &DiffThresholds,
    critical: &mut Critical,
    blind: &mut BlindSpots,
    needs: &mut Vec<u64>,
) -> PathDiff {
    let (cur, bases) = (input.current, &input.bases);
    let (base, current) = (base_side(bases), side_of(cur));
    let delta = |a: Option<u64>, b: Option<u64>| Some(b? as i64 - a? as i64);
    let p50_delta_us = delta(base.p50_us, current.p50_us);
    let p95_delta_us = delta(base.p95_us, current.p95_us);
    let p99_delta_us = delta(base.p99_us, current.p99_us);
    let loss_delta_pp = match (base.loss, current.loss) {
        (Some(a), Some(b)) => Some(((b - a) * 100.0 * 1e4).round() / 1e4),
        _ => None,
    };
    let significant = |q: usize| adj(q) < t.alpha;
    let p50_threshold = threshold_us(base.p50_us.unwrap_or(0) as f64, t.p50_pct, t.p50_ms);
    let (mut worse, mut better, mut why_worse, mut why_better) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut record = |q: Quantity, up: bool, text: String| {
        if up {
            worse.push(q);
            why_worse.push(text);
        } else {
            better.push(q);
            why_better.push(text);
        }
    };
    // p50: significant, beyond the threshold, and the same direction as the test's.
    if let (Some(d), Some(b), Some(cmp)) = (p50_delta_us, base.p50_us, ps[0].cmp)
        && significant(0)
        && d.unsigned_abs() as f64 >= p50_threshold
        && (d > 0) == (cmp.delta > 0.0)
    {
        record(
            Quantity::P50,
            d > 0,
            format!("p50 {} ({})", fmt_delta_ms(d), percent(d, b)),
        );
    }
    // Tails: the quantile moved beyond its threshold, by more than the median did, the
    // tail excess test agrees and so does the exceedance test. A shift of the whole
    // distribution is the median's.
    for (k, (quantity, d, b)) in [
        (Quantity::P95, p95_delta_us, base.p95_us),
        (Quantity::P99, p99_delta_us, base.p99_us),
    ]
    .into_iter()
    .enumerate()
    {
        let (pct, ms) = tail_thresholds(quantity, t);
        let (Some(d), Some(b), Some(cmp), Some(d50)) = (d, b, ps[1 + k].cmp, p50_delta_us) else {
            continue;
        };
        let threshold = threshold_us(b as f64, pct, ms);
        let own = d - d50;
        if significant(1 + k)
            && ps[1 + k].exceed_p.is_none_or(|p| p <= t.alpha)
            && d.unsigned_abs() as f64 >= threshold
            && own.unsigned_abs() as f64 >= threshold
            && (own > 0) == (d > 0)
            && (cmp.delta > 0.0) == (d > 0)
        {
            record(
                quantity,
                d > 0,
                format!(
                    "{} {} ({}) in the tail; p50 {}",
                    quantity.as_str(),
                    fmt_delta_ms(d),
                    percent(d, b),
                    fmt_delta_ms(d50)
                ),
            );
        }
    }
    if let Some(d) = loss_delta_pp
        && significant(3)
        && d.abs() >= t.loss_pp
    {
        record(Quantity::Loss, d > 0.0, format!("loss {d:+.1} pp"));
    }
    // A path measured by a prober that lagged behind its schedule, in this run or a
    // baseline, gets no verdict: its numbers may describe the prober's host.
    let discounted = cur.lagged || bases.iter().any(|b| b.lagged);
    let (verdict, reasons) = if discounted {
        blind.discounted += 1;
        worse.clear();
        better.clear();
        let which = if cur.lagged { "this run" } else { "a baseline" };
        (
            Verdict::Unchanged,
            vec![format!(
                "discounted: the prober lagged behind its schedule in {which} (docs/accuracy.md)"
            )],
        )
    } else if !worse.is_empty() {
        (Verdict::Regression, why_worse)
    } else if !better.is_empty() {
        (Verdict::Improvement, why_better)
    } else {
        (Verdict::Unchanged, Vec::new())
    };

    // Blind spots: the smallest p50 change the location test could have proven.
    let (mut min_detectable, mut p50_blind, mut probes_needed) = (None, false, None);
    if let Some(cmp) = ps[0].cmp {
        let needed = critical.at(cmp.df) * cmp.se();
        min_detectable = Some(needed.max(p50_threshold).ceil() as u64);
        if needed > p50_threshold {
            p50_blind = true;
            blind.p50_paths += 1;
            probes_needed = more_probes(cmp, bases, cur, p50_threshold, critical);
            match probes_needed {
                Some(c) => needs.push(c),
                None => blind.p50_beyond_help += 1,
            }
        }
    }
    for (k, &(_, q)) in TAILS.iter().enumerate() {
        // Paths that answered nothing are not thinly sampled; they are down.
        let answered = !cur.sorted.is_empty() && bases.iter().all(|b| !b.sorted.is_empty());
        if answered && ps[1 + k].skip == Some(Skip::TooFewReplies) {
            let ratio = bases
                .iter()
                .chain([&cur])
                .map(|o| o.reply_ratio())
                .fold(1.0f64, f64::min)
                .max(1e-3);
            let need = count_needed(0, |c| c as f64 * ratio >= tail_min_values(q) as f64);
            let (untested, count) = if k == 0 {
                (&mut blind.p95_untested, &mut blind.p95_count_needed)
            } else {
                (&mut blind.p99_untested, &mut blind.p99_count_needed)
            };
            *untested += 1;
            if let Some(c) = need {
                *count = Some(count.unwrap_or(0).max(c));
            }
        }
    }
    let between_run_sd_us = (bases.len() > 1)
        .then(|| ps[0].cmp.map(|c| c.between_var.sqrt().round() as u64))
        .flatten();
    let tests: [Test; 4] = std::array::from_fn(|q| test_of(&ps[q], adj(q)));
    PathDiff {
        key: input.key,
        base,
        current,
        baselines: bases.len(),
        p50_delta_us,
        p95_delta_us,
        p99_delta_us,
        loss_delta_pp,
        rtt_p: adj(0),
        loss_p: adj(3),
        tests: Tests {
            p50: tests[0],
            p95: tests[1],
            p99: tests[2],
            loss: tests[3],
        },
        p50_threshold_us: p50_threshold.ceil() as u64,
        min_detectable_p50_us: min_detectable,
        p50_blind,
        probes_needed,
        between_run_sd_us,
        verdict,
        discounted,
        worse,
        better,
        reasons,
    }
}

/// Variance of one probe's RTT from the interquartile range of a run's replies (as for
/// a normal distribution), times 1.2 for the 20% trimmed mean's efficiency: what the
/// trimmed mean's variance becomes per reply once there are enough replies for the
/// trimming to take the outliers out.
fn robust_var(o: &Observed) -> f64 {
    if o.sorted.len() < 4 {
        return f64::INFINITY;
    }
    let q = |p: f64| crate::stats::percentile_sorted(&o.sorted, p);
    (((q(75.0) - q(25.0)) / 1.349).powi(2)) * 1.2
}

/// The count at which the location test of this path could prove a change of
/// `threshold` microseconds. The within-run part of the variance shrinks with the
/// number of replies (and its degrees of freedom grow with it): from what this pair
/// shows, or, when outliers inflate that and more probes would let the trimming drop
/// them, from the interquartile ranges. The run-to-run part does not shrink. `None`
/// when no count on the ladder does it.
fn more_probes(
    cmp: Comparison,
    bases: &[&Observed],
    cur: &Observed,
    threshold: f64,
    critical: &mut Critical,
) -> Option<u64> {
    let runs = || bases.iter().copied().chain([cur]);
    let now_sent = runs().map(|o| o.sent).max().unwrap_or(0);
    let now_replies = runs().map(|o| o.sorted.len()).min().unwrap_or(0).max(1) as f64;
    let ratio = runs()
        .map(|o| o.reply_ratio())
        .fold(1.0f64, f64::min)
        .max(1e-3);
    let k = bases.len() as f64;
    let robust_base = bases.iter().map(|b| robust_var(b)).sum::<f64>() / k;
    count_needed(now_sent, |c| {
        let replies = (c as f64 * ratio).max(1.0);
        let f = now_replies / replies;
        let robust = (robust_var(cur) + robust_base / k) / replies;
        let se = ((cmp.within_var * f).min(robust) + cmp.between_var).sqrt();
        let df = if cmp.between_var > 0.0 {
            cmp.df
        } else {
            cmp.df / f
        };
        critical.at(df) * se <= threshold
    })
}
