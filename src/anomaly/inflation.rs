//! `inflation`: a path is much slower than the speed of light in fiber allows, or
//! impossibly faster.
//!
//! Light in fiber covers about 200,000 km/s, so a round trip over a great-circle
//! distance of `d` km takes at least `d / 100` ms: the fiber bound. A path whose p50 is
//! above `inflation_factor` times the bound (3x by default) and by at least
//! `inflation_min_ms` takes a long way round: a warning. A p50 below the bound by more
//! than [`IMPOSSIBLE_SLACK_MS`] cannot be: a region's location is wrong, or the
//! measurement is (the target is not where the region is). Needs both locations.

use super::{Context, Detector, ms};
use crate::config::DetectorId;
use crate::run::{Anomaly, Severity, Unit};

/// How far below the bound a p50 must be to be impossible: locations are given to a
/// city, so a millisecond (100 km) of slack.
pub const IMPOSSIBLE_SLACK_MS: f64 = 1.0;

pub struct Inflation;

impl Detector for Inflation {
    fn id(&self) -> DetectorId {
        DetectorId::Inflation
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        let t = ctx.thresholds;
        for (i, j, edge, _) in ctx.judged(self.id()) {
            let Some(p50) = edge.p50_ms else { continue };
            let (Some(a), Some(b)) = (ctx.graph.region(i).location, ctx.graph.region(j).location)
            else {
                continue;
            };
            let km = a.great_circle_km(b);
            let bound = crate::units::fiber_bound_ms(km);
            if !(bound.is_finite() && bound > 0.0) {
                continue;
            }
            let ratio = p50 / bound;
            let (s, tg) = (ctx.name(i), ctx.name(j));
            let (threshold, message) = if p50 > t.inflation_factor * bound
                && p50 - t.inflation_factor * bound >= t.inflation_min_ms
            {
                (
                    t.inflation_factor,
                    format!(
                        "{s} → {tg} takes {}, {ratio:.1}x the {} light in fiber needs for the \
                         {km:.0} km between them: the path goes a long way round; trace its route \
                         for a far-away hop",
                        ms(p50),
                        ms(bound)
                    ),
                )
            } else if bound - p50 > IMPOSSIBLE_SLACK_MS {
                (
                    1.0,
                    format!(
                        "{s} → {tg} answers in {}, faster than light in fiber over the {km:.0} km \
                         between their locations ({}): a location in the configuration or this \
                         measurement is wrong; check both regions' coordinates and that the \
                         target is really in {tg}",
                        ms(p50),
                        ms(bound)
                    ),
                )
            } else {
                continue;
            };
            found.push(ctx.path_anomaly(
                self.id(),
                Severity::Warning,
                (i, j),
                ratio,
                threshold,
                Unit::Factor,
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
    fn too_slow_and_too_fast() {
        // Two points 1,000 km apart on the equator: bound 10.0 ms (lon 8.993 deg).
        let lon = (1000.0_f64 / 6371.0).to_degrees();
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 20.0);
        mesh.locate("a", 0.0, 0.0).locate("b", 0.0, lon);
        mesh.set("a", "b", 36.0, 0); // 3.6x, 6 ms above 3x
        mesh.set("b", "a", 34.0, 0); // 3.4x, 4 ms above 3x: not enough
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let detect = |g: &LatencyGraph<'_>| {
            let mut found = Vec::new();
            Inflation.detect(&Context::new(g, &Thresholds::default()), &mut found);
            found
        };
        let found = detect(&g);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].subject.to_string(), "a → b");
        assert_eq!((found[0].value, found[0].threshold), (3.6, 3.0));
        assert!(
            found[0].message.contains("3.6x the 10.0 ms"),
            "{}",
            found[0].message
        );

        // Faster than light: 8.5 ms over 1,000 km; 9.5 ms is within the slack.
        mesh.set("a", "b", 8.5, 0).set("b", "a", 9.5, 0);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let found = detect(&g);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!((found[0].value, found[0].threshold), (0.85, 1.0));
        assert!(
            found[0].message.contains("faster than light"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn needs_both_locations() {
        let mut mesh = Mesh::symmetric(&["a", "b"], 500.0);
        mesh.locate("a", 10.0, 10.0);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Inflation.detect(&Context::new(&g, &Thresholds::default()), &mut found);
        assert!(found.is_empty());
    }
}
