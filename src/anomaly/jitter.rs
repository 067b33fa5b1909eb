//! `jitter`: replies on a path vary too much from one to the next.
//!
//! Jitter is the run's: the mean absolute difference between consecutive replies
//! (RFC 3550's, unsmoothed). A warning above `jitter_warning_ms` (10 ms by default),
//! critical above `jitter_critical_ms` (50 ms: real-time traffic breaks). Needs at least
//! [`MIN_REPLIES`] replies.

use super::{Context, Detector, ms};
use crate::config::DetectorId;
use crate::run::{Anomaly, Severity, Unit};

/// Fewer replies than this say little about jitter.
pub const MIN_REPLIES: u64 = 5;

pub struct Jitter;

impl Detector for Jitter {
    fn id(&self) -> DetectorId {
        DetectorId::Jitter
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        for (i, j, edge, limits) in ctx.judged(self.id()) {
            let Some(rtt) = edge.entry.rtt_us else {
                continue;
            };
            if edge.entry.received < MIN_REPLIES {
                continue;
            }
            let jitter_ms = rtt.jitter as f64 / 1000.0;
            let (severity, limit_ms) = if jitter_ms > limits.jitter_critical_ms {
                (Severity::Critical, limits.jitter_critical_ms)
            } else if jitter_ms > limits.jitter_warning_ms {
                (Severity::Warning, limits.jitter_warning_ms)
            } else {
                continue;
            };
            let (s, t) = (ctx.name(i), ctx.name(j));
            let message = format!(
                "replies on {s} → {t} differ by {} from one to the next (p50 {}, p95 {}): look \
                 for queueing on this path, a congested link or an overloaded host",
                ms(jitter_ms),
                ms(rtt.p50 as f64 / 1000.0),
                ms(rtt.p95 as f64 / 1000.0)
            );
            found.push(ctx.path_anomaly(
                self.id(),
                severity,
                (i, j),
                rtt.jitter as f64,
                limit_ms * 1000.0,
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
    use crate::config::{ProbeKind, Thresholds};
    use crate::graph::LatencyGraph;

    #[test]
    fn warning_and_critical_levels() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 40.0);
        mesh.jitter("a", "b", 10.0) // not above 10
            .jitter("a", "c", 12.0)
            .jitter("b", "c", 60.0)
            .jitter("c", "a", 30.0);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Jitter.detect(&Context::new(&g, &Thresholds::default()), &mut found);
        let got: Vec<(String, Severity, f64)> = found
            .iter()
            .map(|a| (a.subject.to_string(), a.severity, a.value))
            .collect();
        assert_eq!(
            got,
            [
                ("a → c".into(), Severity::Warning, 12_000.0),
                ("b → c".into(), Severity::Critical, 60_000.0),
                ("c → a".into(), Severity::Warning, 30_000.0),
            ]
        );
    }

    #[test]
    fn too_few_replies_say_nothing() {
        let mut mesh = Mesh::empty(&["a", "b"]);
        mesh.count(4).set("a", "b", 40.0, 0).jitter("a", "b", 80.0);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Jitter.detect(&Context::new(&g, &Thresholds::default()), &mut found);
        assert!(found.is_empty());
    }
}
