//! The order of the heatmap's rows and columns: as configured, west to east, or
//! clustered by RTT.

use std::collections::BTreeMap;

use super::Order;
use crate::report::PathEntry;
use crate::run::Run;

/// Row/column order as indices into `run.regions`.
pub(super) fn order_regions(
    run: &Run,
    paths: &BTreeMap<(&str, &str), &PathEntry>,
    order: Order,
) -> Vec<usize> {
    let n = run.regions.len();
    let mut idx: Vec<usize> = (0..n).collect();
    match order {
        Order::Config => idx,
        Order::Geo => {
            idx.sort_by(|&a, &b| {
                let key = |i: usize| run.regions[i].location.map(|l| l.lon);
                match (key(a), key(b)) {
                    (Some(x), Some(y)) => x.total_cmp(&y).then(a.cmp(&b)),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => a.cmp(&b),
                }
            });
            idx
        }
        Order::Cluster => cluster_order(run, paths),
    }
}

/// Leaves of an average-linkage dendrogram over the regions' RTT profiles: the
/// distance of two regions is the root mean square difference of log p50 RTT to and
/// from every third region that both measured.
fn cluster_order(run: &Run, paths: &BTreeMap<(&str, &str), &PathEntry>) -> Vec<usize> {
    let n = run.regions.len();
    if n < 3 {
        return (0..n).collect();
    }
    let names: Vec<&str> = run.regions.iter().map(|r| r.name.as_str()).collect();
    let lrtt = |a: usize, b: usize| -> Option<f64> {
        paths
            .get(&(names[a], names[b]))
            .and_then(|p| p.rtt_us)
            .map(|r| (r.p50.max(1) as f64).ln())
    };
    let mut condensed = Vec::with_capacity(n * (n - 1) / 2);
    for a in 0..n {
        for b in a + 1..n {
            let (mut sum, mut count) = (0.0, 0usize);
            for k in (0..n).filter(|&k| k != a && k != b) {
                for (x, y) in [(lrtt(a, k), lrtt(b, k)), (lrtt(k, a), lrtt(k, b))] {
                    if let (Some(x), Some(y)) = (x, y) {
                        sum += (x - y).powi(2);
                        count += 1;
                    }
                }
            }
            // Regions with nothing in common sort far apart.
            condensed.push(if count == 0 {
                1e6
            } else {
                (sum / count as f64).sqrt()
            });
        }
    }
    let dendrogram = kodama::linkage(&mut condensed, n, kodama::Method::Average);
    let steps = dendrogram.steps();
    let mut order = Vec::with_capacity(n);
    let mut stack = vec![n + steps.len() - 1];
    while let Some(c) = stack.pop() {
        if c < n {
            order.push(c);
        } else {
            let step = &steps[c - n];
            stack.push(step.cluster2);
            stack.push(step.cluster1);
        }
    }
    order
}
