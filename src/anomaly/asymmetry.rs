//! `asymmetry`: the two directions between two regions take very different times.
//!
//! For each pair with both p50s measured, the slow direction must exceed the fast one
//! by more than `asymmetry_min_pct` of the fast one (25%) and by more than
//! `asymmetry_min_ms` (5 ms). An asymmetry is a property of the pair, reported once,
//! on the slow direction: extra delay is what faults add, so the slow direction is the
//! one that changed. This is also what lets the `region` detector tell a region whose
//! outgoing paths are slow (its row) from the regions it talks to. Skipped for a pair
//! when either direction's rules skip it. A warning: traffic flows, but a route is off.

use super::{Context, Detector, ms};
use crate::config::DetectorId;
use crate::run::{Anomaly, Severity, Unit};

pub struct Asymmetry;

impl Detector for Asymmetry {
    fn id(&self) -> DetectorId {
        DetectorId::Asymmetry
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        let g = ctx.graph;
        let t = ctx.thresholds;
        for i in 0..g.len() {
            for j in i + 1..g.len() {
                let (Some(ij), Some(ji)) = (g.rtt_ms(i, j), g.rtt_ms(j, i)) else {
                    continue;
                };
                let ((s, d), slow, fast) = if ij >= ji {
                    ((i, j), ij, ji)
                } else {
                    ((j, i), ji, ij)
                };
                let diff = slow - fast;
                let limit = (fast * t.asymmetry_min_pct / 100.0).max(t.asymmetry_min_ms);
                if diff <= fast * t.asymmetry_min_pct / 100.0 || diff <= t.asymmetry_min_ms {
                    continue;
                }
                if !ctx.judges(self.id(), i, j) || !ctx.judges(self.id(), j, i) {
                    continue;
                }
                let (sn, dn) = (ctx.name(s), ctx.name(d));
                let message = format!(
                    "{sn} → {dn} takes {} but {dn} → {sn} only {} ({} or {:.0}% more): the two \
                     directions take different routes; compare traceroutes from both ends, \
                     starting with {sn}'s way out",
                    ms(slow),
                    ms(fast),
                    ms(diff),
                    diff / fast * 100.0
                );
                found.push(ctx.path_anomaly(
                    self.id(),
                    Severity::Warning,
                    (s, d),
                    diff * 1000.0,
                    limit * 1000.0,
                    Unit::Us,
                    message,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Mesh;
    use super::super::{Context, Detector};
    use super::*;
    use crate::config::{PairRule, ProbeKind, RegionPattern, Thresholds};
    use crate::graph::LatencyGraph;

    fn detect(mesh: &Mesh, t: &Thresholds) -> Vec<(String, f64, f64)> {
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Asymmetry.detect(&Context::new(&g, t), &mut found);
        found
            .iter()
            .map(|a| (a.subject.to_string(), a.value, a.threshold))
            .collect()
    }

    #[test]
    fn both_the_share_and_the_milliseconds() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c", "d"], 10.0);
        mesh.set("b", "a", 13.0, 0); // 30% but 3 ms: no
        mesh.pair("a", "c", 100.0).set("c", "a", 120.0, 0); // 20 ms but 20%: no
        mesh.pair("b", "c", 100.0).set("c", "b", 126.0, 0); // 26 ms and 26%: yes, on c -> b
        mesh.pair("a", "d", 200.0).set("a", "d", 250.0, 0); // exactly 25%: no (more than)
        let t = Thresholds::default();
        assert_eq!(detect(&mesh, &t), [("c → b".into(), 26_000.0, 25_000.0)]);
        // A rule on either direction turns it off.
        let mut t = Thresholds::default();
        let mut rule = PairRule::new(RegionPattern::new("b"), RegionPattern::new("c"));
        rule.skip.insert(DetectorId::Asymmetry);
        t.pairs.push(rule);
        assert!(detect(&mesh, &t).is_empty());
    }

    #[test]
    fn one_direction_missing_is_not_judged() {
        let mut mesh = Mesh::symmetric(&["a", "b"], 10.0);
        mesh.set("a", "b", 100.0, 0).remove("b", "a");
        assert!(detect(&mesh, &Thresholds::default()).is_empty());
        mesh.set("b", "a", 10.0, 100); // unreachable: no RTT either
        assert!(detect(&mesh, &Thresholds::default()).is_empty());
    }
}
