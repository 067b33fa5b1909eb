//! `prober`: a region's prober could not measure faithfully, so its paths were not
//! judged.
//!
//! A prober that sends probes more than `LAG_BOUND` (10 ms) behind its schedule, or
//! whose receive queue overflowed, is short of CPU or memory on its own host. Its RTTs
//! stay right where the kernel timed them, but its schedule, its losses and its TCP
//! fallbacks may not, and a slow host must not read as a slow network. The path
//! detectors skip such paths ([`Context::discounted`]); this detector raises one
//! warning per prober, so a quiet run never hides that it was blind.

use super::{Context, Detector, ms};
use crate::config::DetectorId;
use crate::probe::LAG_BOUND;
use crate::run::{Anomaly, Direction, Severity, Subject, Unit};

pub struct Prober;

impl Detector for Prober {
    fn id(&self) -> DetectorId {
        DetectorId::Prober
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        let graph = ctx.graph;
        for i in 0..graph.len() {
            let Some(health) = graph.region(i).prober else {
                continue;
            };
            let discounted: Vec<usize> = (0..graph.len())
                .filter(|&j| graph.path(i, j).is_some() && ctx.discounted(i, j))
                .collect();
            if discounted.is_empty()
                || (0..graph.len()).all(|j| ctx.limits(i, j).skip.contains(self.id()))
            {
                continue;
            }
            let name = ctx.name(i);
            let mut why = Vec::new();
            if health.lagged_sends > 0 {
                why.push(format!(
                    "sent {} probes more than {} behind schedule (send lag p99 {}, max {})",
                    health.lagged_sends,
                    ms(LAG_BOUND.as_secs_f64() * 1000.0),
                    ms(health.send_lag_p99_us as f64 / 1000.0),
                    ms(health.send_lag_max_us as f64 / 1000.0)
                ));
            }
            if health.queue_drops > 0 {
                why.push(format!(
                    "dropped {} replies on its own host for a full receive queue",
                    health.queue_drops
                ));
            }
            let message = format!(
                "the prober in {name} {}: its host was short of CPU, so the findings of its {} {} \
                 paths are discounted, not reported; give the prober CPU (fewer neighbours, a \
                 higher priority, a larger `gap`) and measure again",
                why.join(", and "),
                discounted.len(),
                graph.kind()
            );
            found.push(Anomaly {
                detector: self.id(),
                severity: Severity::Warning,
                kind: graph.kind(),
                subject: Subject::Region {
                    region: name.to_string(),
                    direction: Direction::Outgoing,
                },
                value: health.send_lag_max_us as f64,
                threshold: LAG_BOUND.as_micros() as f64,
                unit: Unit::Us,
                message,
                relay: None,
                explains: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Mesh;
    use super::*;
    use crate::config::{ProbeKind, Thresholds};
    use crate::probe::ProberHealth;

    #[test]
    fn a_lagging_prober_is_one_warning_and_its_paths_are_not_judged() {
        // a -> b would be an SLO breach and a loss, if a's prober could be trusted.
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 10.0);
        mesh.set("a", "b", 900.0, 30);
        let mut run = mesh.run();
        for p in run.paths.iter_mut().filter(|p| p.source == "a") {
            p.lagged = 20;
        }
        run.probers.insert(
            "a".into(),
            ProberHealth {
                lagged_sends: 6,
                send_lag_p99_us: 14_000,
                send_lag_max_us: 52_000,
                ..ProberHealth::default()
            },
        );
        let found = crate::anomaly::analyse(&run, &Thresholds::default());
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!((f.detector, f.kind), (DetectorId::Prober, ProbeKind::Udp));
        assert_eq!(f.subject.to_string(), "a (outgoing)");
        assert!(
            f.message
                .contains("sent 6 probes more than 10.0 ms behind schedule"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("its 2 udp paths are discounted"),
            "{}",
            f.message
        );
        // Without the marks, the same run has its path findings.
        for p in run.paths.iter_mut() {
            p.lagged = 0;
        }
        run.probers.clear();
        let found = crate::anomaly::analyse(&run, &Thresholds::default());
        assert!(
            found.iter().any(|f| f.subject.to_string() == "a → b"),
            "{found:#?}"
        );
        assert!(found.iter().all(|f| f.detector != DetectorId::Prober));
    }
}
