//! `detour`: relaying through a third region would be much faster than the direct path.
//!
//! For each measured path `i -> j`, the best single relay `k` minimises
//! `p50(i, k) + p50(k, j)` over the run's own p50s (never averages over time). The path
//! is a detour when that sum is below the direct p50 by at least `detour_min_pct` of it
//! (20%) and at least `detour_min_ms` (5 ms). The finding names the relay and the
//! saving, and, when a route through several relays is better still, that route (from
//! the graph's all-pairs best paths). Directed: a slow pair gives one finding per slow
//! direction. A warning: traffic flows, but the network routes it badly.

use super::{Context, Detector, ms};
use crate::config::DetectorId;
use crate::graph::BestPaths;
use crate::run::{Anomaly, Severity, Unit};

/// A multi-relay route is mentioned when it beats the best single relay by this much.
const MULTI_HOP_GAIN_MS: f64 = 1.0;

pub struct Detour;

impl Detector for Detour {
    fn id(&self) -> DetectorId {
        DetectorId::Detour
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        let g = ctx.graph;
        let t = ctx.thresholds;
        let n = g.len();
        let direct = g.p50_matrix();
        let relays = g.relay_matrix();
        let mut best: Option<BestPaths> = None;
        for i in 0..n {
            for j in 0..n {
                let (d, via) = (direct[i * n + j], relays[i * n + j]);
                if !(d.is_finite() && via.is_finite()) {
                    continue;
                }
                let saving = d - via;
                let required = (d * t.detour_min_pct / 100.0).max(t.detour_min_ms);
                if saving < d * t.detour_min_pct / 100.0 || saving < t.detour_min_ms {
                    continue;
                }
                if !ctx.judges(self.id(), i, j) {
                    continue;
                }
                let Some((k, via)) = g.best_relay(i, j) else {
                    continue;
                };
                let (s, tg, kn) = (ctx.name(i), ctx.name(j), ctx.name(k));
                let legs = (g.rtt_ms(i, k), g.rtt_ms(k, j));
                let legs = match legs {
                    (Some(a), Some(b)) => format!(" ({} + {})", ms(a), ms(b)),
                    _ => String::new(),
                };
                let best = best.get_or_insert_with(|| g.best_paths());
                let further = match (best.rtt_ms(i, j), best.route(i, j)) {
                    (Some(b), Some(route)) if route.len() > 3 && b < via - MULTI_HOP_GAIN_MS => {
                        let hops: Vec<&str> = route[1..route.len() - 1]
                            .iter()
                            .map(|&r| ctx.name(r))
                            .collect();
                        format!(" (through {} it takes {})", hops.join(" and "), ms(b))
                    }
                    _ => String::new(),
                };
                let message = format!(
                    "{s} → {tg} takes {}, but relayed through {kn} it would take {}{legs}, {} or \
                     {:.0}% less{further}: the direct route is poor; raise it with the network \
                     provider, or route this traffic through {kn}",
                    ms(d),
                    ms(via),
                    ms(d - via),
                    (d - via) / d * 100.0
                );
                let mut anomaly = ctx.path_anomaly(
                    self.id(),
                    Severity::Warning,
                    (i, j),
                    saving * 1000.0,
                    required * 1000.0,
                    Unit::Us,
                    message,
                );
                anomaly.relay = Some(kn.to_string());
                found.push(anomaly);
            }
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

    fn detect(mesh: &Mesh) -> Vec<Anomaly> {
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Detour.detect(&Context::new(&g, &Thresholds::default()), &mut found);
        found
    }

    #[test]
    fn names_the_best_relay_and_the_saving() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c", "d"], 50.0);
        mesh.pair("a", "b", 150.0); // via c or d: 100 ms
        mesh.pair("a", "d", 45.0); // via d: 95 ms, the best
        let found = detect(&mesh);
        let got: Vec<(String, Option<&str>, f64, f64)> = found
            .iter()
            .map(|a| {
                (
                    a.subject.to_string(),
                    a.relay.as_deref(),
                    a.value,
                    a.threshold,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a → b".into(), Some("d"), 55_000.0, 30_000.0),
                ("b → a".into(), Some("d"), 55_000.0, 30_000.0),
            ]
        );
        assert_eq!(
            found[0].message,
            "a → b takes 150 ms, but relayed through d it would take 95.0 ms (45.0 ms + 50.0 ms), \
             55.0 ms or 37% less: the direct route is poor; raise it with the network provider, \
             or route this traffic through d"
        );
    }

    #[test]
    fn both_limits_must_be_met() {
        // 20 ms direct, 14 ms via c: 30% but 6 ms. Yes.
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 7.0);
        mesh.set("a", "b", 20.0, 0);
        assert_eq!(detect(&mesh).len(), 1);
        // 16 ms direct: 12.5%... no; 4 ms below 5 ms... no.
        mesh.set("a", "b", 16.0, 0);
        assert!(detect(&mesh).is_empty());
        // 300 ms direct, 250 ms via c: 50 ms but 16.7%: no.
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 125.0);
        mesh.set("a", "b", 300.0, 0);
        assert!(detect(&mesh).is_empty());
    }

    #[test]
    fn mentions_a_better_route_through_several_relays() {
        // a -> b 300; a -> c -> b 200 (best single relay); a -> d -> e -> b 90.
        let mut mesh = Mesh::symmetric(&["a", "b", "c", "d", "e"], 400.0);
        mesh.set("a", "b", 300.0, 0)
            .set("a", "c", 100.0, 0)
            .set("c", "b", 100.0, 0)
            .set("a", "d", 30.0, 0)
            .set("d", "e", 30.0, 0)
            .set("e", "b", 30.0, 0);
        let found = detect(&mesh);
        let ab = found
            .iter()
            .find(|a| a.subject.to_string() == "a → b")
            .expect("a detour a -> b");
        assert_eq!(ab.relay.as_deref(), Some("c"));
        assert!(
            ab.message.contains("(through d and e it takes 90.0 ms)"),
            "{}",
            ab.message
        );
    }

    #[test]
    fn unreachable_legs_are_no_relays() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 10.0);
        mesh.set("a", "b", 100.0, 0).set("a", "c", 10.0, 100);
        assert!(detect(&mesh).is_empty());
    }
}
