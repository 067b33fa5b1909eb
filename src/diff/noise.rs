//! The noise model `latmap diff` is checked against: what two runs of an unchanged
//! network look like. Used by the tests and the benchmark to make seeded runs; the diff
//! itself never draws a random number.

use rand::{Rng, RngExt};

/// RTT samples of a path whose fixed delay is `base_ms`: each probe adds exponential
/// queueing delay, a few probes are outliers delayed by up to `outlier_max_ms` more, and
/// a few are lost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseModel {
    /// Mean of the exponential queueing delay, in milliseconds.
    pub queue_mean_ms: f64,
    /// Share of probes that are outliers.
    pub outlier_share: f64,
    /// An outlier adds a delay drawn uniformly from 0 to this, in milliseconds.
    pub outlier_max_ms: f64,
    /// Share of probes lost.
    pub loss: f64,
}

impl Default for NoiseModel {
    /// 0.4 ms queueing, 2% outliers of up to 30 ms, 1% of probes lost.
    fn default() -> Self {
        NoiseModel {
            queue_mean_ms: 0.4,
            outlier_share: 0.02,
            outlier_max_ms: 30.0,
            loss: 0.01,
        }
    }
}

impl NoiseModel {
    /// `count` probes in send order, `None` for a lost one, in microseconds.
    pub fn samples<R: Rng>(&self, rng: &mut R, base_ms: f64, count: usize) -> Vec<Option<u64>> {
        (0..count)
            .map(|_| {
                if rng.random_range(0.0..1.0) < self.loss {
                    return None;
                }
                let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
                let mut ms = base_ms - self.queue_mean_ms * u.ln();
                if rng.random_range(0.0..1.0) < self.outlier_share {
                    ms += rng.random_range(0.0..=self.outlier_max_ms);
                }
                Some((ms * 1000.0).round().max(0.0) as u64)
            })
            .collect()
    }
}
