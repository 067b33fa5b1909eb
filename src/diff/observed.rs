//! What a diff needs of one path in one run, computed once from its samples: the
//! sorted replies, the quantiles a person reads, loss counts, and the estimates the
//! tests compare. Lets a diff drop each run's raw samples as soon as it has read them.

use crate::report::PathEntry;
use crate::stats::percentile_us;

use super::significance::{Estimate, HdCache, tail_excess, trimmed_mean};

/// The tail quantiles a diff tests, with their percentiles.
pub const TAILS: [(super::Quantity, f64); 2] =
    [(super::Quantity::P95, 0.95), (super::Quantity::P99, 0.99)];

/// One path of one run, as a diff sees it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// The replies' RTTs in microseconds, ascending.
    pub sorted: Box<[u64]>,
    pub sent: u64,
    pub lost: u64,
    /// p50, p95 and p99 as the run states them (`None` without replies).
    pub p50: Option<u64>,
    pub p95: Option<u64>,
    pub p99: Option<u64>,
    /// The 20% trimmed mean and its variance (`None` below two replies).
    pub location: Option<Estimate>,
    /// The tail excess of p95 and p99 over the median (`None` below the replies each
    /// needs).
    pub tails: [Option<Estimate>; 2],
    /// Its prober lagged behind its schedule while measuring it (see
    /// `PathEntry::prober_lagged`): its numbers are not judged.
    pub lagged: bool,
}

impl Observed {
    pub fn of(p: &PathEntry, cache: &mut HdCache) -> Observed {
        let mut sorted: Vec<u64> = p.samples_us.iter().flatten().copied().collect();
        sorted.sort_unstable();
        let q = |pct: f64| (!sorted.is_empty()).then(|| percentile_us(&sorted, pct));
        let (p50, p95, p99) = (q(50.0), q(95.0), q(99.0));
        let location = trimmed_mean(&sorted);
        let tails = TAILS.map(|(_, q)| tail_excess(&sorted, q, cache));
        Observed {
            sent: p.sent,
            lost: p.sent - p.received.min(p.sent),
            p50,
            p95,
            p99,
            location,
            tails,
            sorted: sorted.into_boxed_slice(),
            lagged: p.prober_lagged(),
        }
    }

    /// Replies over probes sent (1 when nothing was sent, so that nothing divides by 0).
    pub fn reply_ratio(&self) -> f64 {
        if self.sent == 0 {
            1.0
        } else {
            self.sorted.len() as f64 / self.sent as f64
        }
    }
}
