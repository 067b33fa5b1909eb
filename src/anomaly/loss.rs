//! `loss`: a path loses probes, judged on the 95% Wilson interval of its loss ratio.
//!
//! A path is critical when the interval's lower bound is at or above
//! `loss_critical_pct`, a warning when it is at or above `loss_warning_pct`, and only
//! when at least `loss_min_lost` probes were lost: one lost probe of ten is no evidence
//! (its lower bound is 1.8%, but one is chance), while a steady 2% over a thousand
//! probes is (lower bound 1.3%). Unreachable paths are left to `unreachable`.

use super::{Context, Detector};
use crate::config::DetectorId;
use crate::run::{Anomaly, Severity, Unit};
use crate::stats::{Z95, wilson_interval};

pub struct Loss;

impl Detector for Loss {
    fn id(&self) -> DetectorId {
        DetectorId::Loss
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        for (i, j, edge, limits) in ctx.judged(self.id()) {
            let p = edge.entry;
            let lost = p.sent.saturating_sub(p.received);
            if p.received == 0 || lost == 0 {
                continue;
            }
            if lost < limits.loss_min_lost {
                continue;
            }
            // The interval as stored in the run; recomputed if the file lacks it.
            let Some(low) = p
                .loss_ci
                .map(|ci| ci[0])
                .or_else(|| wilson_interval(lost, p.sent, Z95).map(|ci| ci.0))
            else {
                continue;
            };
            let low_pct = low * 100.0;
            let (severity, limit_pct) = if low_pct >= limits.loss_critical_pct {
                (Severity::Critical, limits.loss_critical_pct)
            } else if low_pct >= limits.loss_warning_pct {
                (Severity::Warning, limits.loss_warning_pct)
            } else {
                continue;
            };
            let (s, t) = (ctx.name(i), ctx.name(j));
            let observed = lost as f64 / p.sent as f64;
            let message = format!(
                "{s} → {t} lost {} of its probes ({lost} of {}; at least {} at 95% confidence): \
                 look for a congested or failing link on this path (mtr from {s} to {t})",
                Unit::Ratio.format(observed),
                p.sent,
                Unit::Ratio.format(low),
            );
            found.push(ctx.path_anomaly(
                self.id(),
                severity,
                (i, j),
                low,
                limit_pct / 100.0,
                Unit::Ratio,
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
    use crate::config::{ProbeKind, Thresholds};
    use crate::graph::LatencyGraph;

    /// The severity of a single path `a -> b` losing `lost` of `count`.
    fn judge(lost: usize, count: usize, t: &Thresholds) -> Option<Severity> {
        let mut mesh = Mesh::empty(&["a", "b"]);
        mesh.count(count).set("a", "b", 10.0, lost);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Loss.detect(&Context::new(&g, t), &mut found);
        assert!(found.len() <= 1);
        found.first().map(|a| a.severity)
    }

    #[test]
    fn evidence_not_chance() {
        let t = Thresholds::default();
        for (lost, count, want) in [
            (0, 100, None),
            (1, 10, None),                        // one is chance
            (1, 1000, None),                      // lower bound 0.02%
            (2, 10, Some(Severity::Critical)),    // lower bound 5.7%
            (2, 100, Some(Severity::Warning)),    // lower bound 0.55%
            (3, 100, Some(Severity::Critical)),   // lower bound 1.03%
            (20, 1000, Some(Severity::Critical)), // a steady 2%: lower bound 1.3%
            (2, 1000, None),                      // lower bound 0.055%
        ] {
            assert_eq!(judge(lost, count, &t), want, "{lost} of {count}");
        }
        // Everything lost is `unreachable`'s.
        assert_eq!(judge(10, 10, &t), None);
    }

    #[test]
    fn limits_and_message() {
        let mut t = Thresholds::default();
        t.limits.loss_min_lost = 5;
        assert_eq!(judge(4, 10, &t), None);
        t.limits.loss_min_lost = 2;
        t.limits.loss_critical_pct = 10.0;
        assert_eq!(judge(3, 100, &t), Some(Severity::Warning));

        let mut mesh = Mesh::empty(&["a", "b"]);
        mesh.set("a", "b", 10.0, 5);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Loss.detect(&Context::new(&g, &Thresholds::default()), &mut found);
        let a = &found[0];
        assert_eq!((a.threshold, a.unit), (0.01, Unit::Ratio));
        assert_eq!(a.value, 0.021_544);
        assert_eq!(
            a.message,
            "a → b lost 5.0% of its probes (5 of 100; at least 2.2% at 95% confidence): \
             look for a congested or failing link on this path (mtr from a to b)"
        );
    }
}
