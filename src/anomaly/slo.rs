//! `slo`: a path's p95 RTT is above its service-level objective (`slo_p95_ms`, none by
//! default; set for the fleet or per pair of regions).
//!
//! A warning when the p95 is above the objective (the slowest requests break it),
//! critical when even the p50 is (most requests break it).

use super::{Context, Detector, ms};
use crate::config::DetectorId;
use crate::run::{Anomaly, Severity, Unit};

pub struct Slo;

impl Detector for Slo {
    fn id(&self) -> DetectorId {
        DetectorId::Slo
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        for (i, j, edge, limits) in ctx.judged(self.id()) {
            let Some(rtt) = edge.entry.rtt_us else {
                continue;
            };
            let Some(slo_ms) = limits.slo_p95_ms else {
                continue;
            };
            let slo_us = slo_ms * 1000.0;
            let (p50, p95) = (rtt.p50 as f64, rtt.p95 as f64);
            if p95 <= slo_us {
                continue;
            }
            let (s, t) = (ctx.name(i), ctx.name(j));
            let (severity, message) = if p50 > slo_us {
                (
                    Severity::Critical,
                    format!(
                        "{s} → {t} breaks its {} SLO for most requests: p50 {}, p95 {}; find what \
                         slowed this path (its route, or a change since the last good run)",
                        ms(slo_ms),
                        ms(p50 / 1000.0),
                        ms(p95 / 1000.0)
                    ),
                )
            } else {
                (
                    Severity::Warning,
                    format!(
                        "{s} → {t} has a p95 of {}, above its {} SLO (p50 {}): the slowest \
                         requests break it; look for queueing or a flapping route on this path",
                        ms(p95 / 1000.0),
                        ms(slo_ms),
                        ms(p50 / 1000.0)
                    ),
                )
            };
            found.push(ctx.path_anomaly(
                self.id(),
                severity,
                (i, j),
                p95,
                slo_us,
                Unit::Us,
                message,
            ));
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

    #[test]
    fn p95_warns_p50_is_critical_per_pair() {
        let mut mesh = Mesh::symmetric(&["us-1", "eu-1", "eu-2"], 80.0);
        // p50 80 ms, p95 about 90 ms (alternating 70 / 90).
        mesh.jitter("us-1", "eu-1", 20.0);
        mesh.set("us-1", "eu-2", 130.0, 0);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut t = Thresholds::default();
        let detect = |t: &Thresholds| {
            let mut found = Vec::new();
            Slo.detect(&Context::new(&g, t), &mut found);
            found
                .iter()
                .map(|a| (a.subject.to_string(), a.severity, a.value, a.threshold))
                .collect::<Vec<_>>()
        };
        assert!(detect(&t).is_empty(), "no SLO by default");
        t.limits.slo_p95_ms = Some(150.0);
        assert!(detect(&t).is_empty());
        t.pairs.push(PairRule {
            slo_p95_ms: Some(85.0),
            ..PairRule::new(RegionPattern::any(), RegionPattern::new("eu-*"))
        });
        assert_eq!(
            detect(&t),
            [
                ("us-1 → eu-1".into(), Severity::Warning, 90_000.0, 85_000.0),
                (
                    "us-1 → eu-2".into(),
                    Severity::Critical,
                    130_000.0,
                    85_000.0
                ),
            ]
        );
    }
}
