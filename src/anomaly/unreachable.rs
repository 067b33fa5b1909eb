//! `unreachable`: probes were sent on a path and nothing came back.
//!
//! Critical: the path carries no traffic at all. A path on which nothing could be sent
//! (a hostname that did not resolve) is not judged here: it has no measurement.

use super::{Context, Detector};
use crate::config::DetectorId;
use crate::run::{Anomaly, Severity, Unit};

pub struct Unreachable;

impl Detector for Unreachable {
    fn id(&self) -> DetectorId {
        DetectorId::Unreachable
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        for (i, j, edge, _) in ctx.judged(self.id()) {
            let p = edge.entry;
            if p.sent == 0 || p.received > 0 {
                continue;
            }
            let (s, t) = (ctx.name(i), ctx.name(j));
            let target = p.address.as_deref().unwrap_or(&p.target_spec);
            let message = format!(
                "none of {} {} probes from {s} to {t} came back: check that {t}'s target {target} \
                 is up and answering, and that {s} can reach it (routes, firewalls)",
                p.sent, p.kind
            );
            found.push(ctx.path_anomaly(
                self.id(),
                Severity::Critical,
                (i, j),
                1.0,
                1.0,
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

    #[test]
    fn only_a_path_with_no_reply_at_all() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 10.0);
        mesh.set("a", "b", 10.0, 100).set("b", "c", 10.0, 99);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let t = Thresholds::default();
        let mut found = Vec::new();
        Unreachable.detect(&Context::new(&g, &t), &mut found);
        assert_eq!(found.len(), 1);
        let a = &found[0];
        assert_eq!(a.subject.to_string(), "a → b");
        assert_eq!(a.severity, Severity::Critical);
        assert!(
            a.message.contains("none of 100 udp probes"),
            "{}",
            a.message
        );
    }
}
