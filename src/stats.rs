//! Path statistics: RTT summaries and loss intervals.
//!
//! Pure functions over samples; no I/O. Every RTT here is in whole microseconds, the
//! unit of the run file. Percentiles interpolate linearly between closest ranks (the
//! method numpy and most spreadsheets call "linear"), so p50 of an even count is the
//! mean of the two middle samples.

use serde::{Deserialize, Serialize};

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// Summary of the RTTs of the replies on one path, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttSummary {
    pub min: u64,
    pub p50: u64,
    pub mean: u64,
    pub p90: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    /// Sample standard deviation (n − 1 in the denominator; 0 for one sample).
    pub stddev: u64,
    /// Mean absolute difference of consecutive replies, in send order (RFC 3550's
    /// interarrival jitter without its smoothing). 0 for fewer than two replies.
    pub jitter: u64,
}

impl RttSummary {
    /// Summarises samples given in send order; lost probes are `None` and are skipped
    /// (jitter is taken between consecutive *replies*). `None` when nothing came back.
    pub fn from_samples(samples: &[Option<u64>]) -> Option<RttSummary> {
        let replies: Vec<u64> = samples.iter().flatten().copied().collect();
        if replies.is_empty() {
            return None;
        }
        let n = replies.len() as f64;
        let mean = replies.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = if replies.len() > 1 {
            replies
                .iter()
                .map(|&v| (v as f64 - mean).powi(2))
                .sum::<f64>()
                / (n - 1.0)
        } else {
            0.0
        };
        let jitter = if replies.len() > 1 {
            let diffs: f64 = replies
                .windows(2)
                .map(|w| (w[1] as f64 - w[0] as f64).abs())
                .sum();
            diffs / (n - 1.0)
        } else {
            0.0
        };
        let mut sorted = replies;
        sorted.sort_unstable();
        let q = |p: f64| percentile_us(&sorted, p);
        Some(RttSummary {
            min: sorted[0],
            p50: q(50.0),
            mean: round_us(mean),
            p90: q(90.0),
            p95: q(95.0),
            p99: q(99.0),
            max: sorted[sorted.len() - 1],
            stddev: round_us(var.sqrt()),
            jitter: round_us(jitter),
        })
    }
}

fn round_us(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

/// The `p`th percentile of sorted microseconds as a run file states it (whole
/// microseconds; 0 for an empty slice): the one rule for every percentile latmap shows.
pub fn percentile_us(sorted: &[u64], p: f64) -> u64 {
    round_us(percentile_sorted(sorted, p))
}

/// The `p`th percentile (0..=100) of sorted values, interpolating linearly between the
/// closest ranks. Panics never: an empty slice gives NaN.
pub fn percentile_sorted(sorted: &[u64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0] as f64,
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = rank.ceil() as usize;
            let frac = rank - lo as f64;
            sorted[lo] as f64 + (sorted[hi] as f64 - sorted[lo] as f64) * frac
        }
    }
}

/// Wilson score interval for `lost` out of `sent` at normal quantile `z`.
/// Returns `(low, high)` within `0..=1`; `None` when nothing was sent.
pub fn wilson_interval(lost: u64, sent: u64, z: f64) -> Option<(f64, f64)> {
    if sent == 0 {
        return None;
    }
    let n = sent as f64;
    let p = lost.min(sent) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    // At the edges the bound is exactly 0 (or 1); rounding would leave a tiny residue.
    let low = if lost == 0 {
        0.0
    } else {
        (centre - half).max(0.0)
    };
    let high = if lost >= sent {
        1.0
    } else {
        (centre + half).min(1.0)
    };
    Some((low, high))
}

/// The lower end of the 95% interval of the median of `sorted` replies (µs), by order
/// statistics: the reply of rank ⌊n/2 − 0.98√n⌋ (at least the first); `None` below 3
/// replies. Distribution-free, so a few slow replies cannot raise it.
pub fn median_lower_bound(sorted: &[u64]) -> Option<u64> {
    let n = sorted.len();
    if n < 3 {
        return None;
    }
    let rank = (n as f64 / 2.0 - 0.98 * (n as f64).sqrt()).floor();
    let index = (rank as usize).saturating_sub(1).min(n - 1);
    Some(sorted[index])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [10, 20, 30, 40];
        assert_eq!(percentile_sorted(&v, 0.0), 10.0);
        assert_eq!(percentile_sorted(&v, 50.0), 25.0);
        assert_eq!(percentile_sorted(&v, 100.0), 40.0);
        assert!((percentile_sorted(&v, 90.0) - 37.0).abs() < 1e-9);
        assert!(percentile_sorted(&[], 50.0).is_nan());
        assert_eq!(percentile_sorted(&[7], 99.0), 7.0);
    }

    #[test]
    fn summary_skips_losses_and_orders_quantiles() {
        let s = RttSummary::from_samples(&[Some(100), None, Some(300), Some(200), None]).unwrap();
        assert_eq!(s.min, 100);
        assert_eq!(s.max, 300);
        assert_eq!(s.p50, 200);
        assert_eq!(s.mean, 200);
        assert_eq!(s.stddev, 100);
        // consecutive replies 100, 300, 200: |200| + |100| over 2
        assert_eq!(s.jitter, 150);
        assert!(s.min <= s.p50 && s.p50 <= s.p90 && s.p90 <= s.p95);
        assert!(s.p95 <= s.p99 && s.p99 <= s.max);
        assert_eq!(RttSummary::from_samples(&[None, None]), None);
        let one = RttSummary::from_samples(&[Some(5)]).unwrap();
        assert_eq!((one.stddev, one.jitter, one.p99), (0, 0, 5));
    }

    #[test]
    fn wilson_matches_published_values() {
        // 1 lost of 10: 95% Wilson interval 0.0179 .. 0.4042 (Newcombe 1998, table I style)
        let (lo, hi) = wilson_interval(1, 10, Z95).unwrap();
        assert!((lo - 0.0179).abs() < 5e-4, "{lo}");
        assert!((hi - 0.4042).abs() < 5e-4, "{hi}");
        let (lo, hi) = wilson_interval(0, 100, Z95).unwrap();
        assert_eq!(lo, 0.0);
        assert!((hi - 0.0370).abs() < 5e-4, "{hi}");
        let (lo, hi) = wilson_interval(20, 20, Z95).unwrap();
        assert!(lo > 0.8 && hi == 1.0);
        assert_eq!(wilson_interval(0, 0, Z95), None);
    }
}
