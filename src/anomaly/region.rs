//! `region`: most of a region's outgoing (row) or incoming (column) paths are
//! anomalous: one finding for the region, with the path findings it explains folded
//! under it, instead of a finding per path.
//!
//! Runs after the path detectors, on their findings. For each region, the share of its
//! measured outgoing paths that have at least one finding, and the same for incoming
//! paths. A row (column) is flagged when its share is more than `region_min_share`
//! (0.5: "most"), at least `region_min_paths` of its paths have findings (3), and it is
//! an outlier among all rows (columns): above their median share by at least
//! max(3 × 1.4826 × MAD, 0.25), MAD being the median absolute deviation of the shares.
//! A fleet-wide problem (every row bad) is thus not blamed on one region. Because an
//! asymmetry is reported on its slow direction, a region whose outgoing paths are slow
//! collects its asymmetries in its row, and the columns of its peers get one each:
//! the row stands out, the columns do not. The finding's severity is the highest of
//! the findings it explains; its value is the share, its threshold the bar it passed.

use std::collections::BTreeMap;

use super::{Context, Detector, detector_rank, median, ms};
use crate::config::{DetectorId, Thresholds};
use crate::run::{Anomaly, Direction, Subject, Unit};

/// The least margin above the median share: with most regions clean, the median and
/// its MAD are 0, and a region must still stand out by a quarter of its paths.
pub const MIN_MARGIN: f64 = 0.25;

/// How many MADs (scaled to a standard deviation) above the median.
const MADS: f64 = 3.0;

/// The MAD of a normal sample times this estimates its standard deviation.
const MAD_TO_SIGMA: f64 = 1.4826;

pub struct Region;

/// A flagged row or column: its share of anomalous paths and the bar it passed.
#[derive(Debug, Clone, Copy)]
struct Flag {
    bad: usize,
    measured: usize,
    share: f64,
    bar: f64,
    median: f64,
}

impl Detector for Region {
    fn id(&self) -> DetectorId {
        DetectorId::Region
    }

    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>) {
        let g = ctx.graph;
        let n = g.len();
        // Where each path finding is, by region index.
        let at: Vec<Option<(usize, usize)>> = found
            .iter()
            .map(|a| match &a.subject {
                Subject::Path { source, target } if a.kind == g.kind() => {
                    Some((g.index_of(source)?, g.index_of(target)?))
                }
                _ => None,
            })
            .collect();
        let mut bad_paths: Vec<(usize, usize)> = at.iter().flatten().copied().collect();
        bad_paths.sort_unstable();
        bad_paths.dedup();
        let (mut bad_out, mut bad_in) = (vec![0; n], vec![0; n]);
        for &(i, j) in &bad_paths {
            bad_out[i] += 1;
            bad_in[j] += 1;
        }
        let (mut out_n, mut in_n) = (vec![0; n], vec![0; n]);
        for (i, j, _) in g.paths() {
            out_n[i] += 1;
            in_n[j] += 1;
        }
        let rows = outliers(&bad_out, &out_n, ctx.thresholds);
        let cols = outliers(&bad_in, &in_n, ctx.thresholds);

        // One candidate per region; a region bad both ways gets one finding.
        let mut candidates: Vec<(usize, Direction, f64)> = (0..n)
            .filter_map(|r| match (rows[r], cols[r]) {
                (Some(o), Some(i)) => Some((
                    r,
                    Direction::Both,
                    (o.bad + i.bad) as f64 / (o.measured + i.measured) as f64,
                )),
                (Some(o), None) => Some((r, Direction::Outgoing, o.share)),
                (None, Some(i)) => Some((r, Direction::Incoming, i.share)),
                (None, None) => None,
            })
            .collect();
        // The most clear-cut first: it claims the findings it explains.
        candidates.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
        let mut owner: Vec<Option<usize>> = vec![None; found.len()];
        for (c, &(r, direction, _)) in candidates.iter().enumerate() {
            for (f, place) in at.iter().enumerate() {
                let Some((i, j)) = *place else { continue };
                let mine = match direction {
                    Direction::Outgoing => i == r,
                    Direction::Incoming => j == r,
                    Direction::Both => i == r || j == r,
                };
                if mine && owner[f].is_none() {
                    owner[f] = Some(c);
                }
            }
        }
        let mut explains: Vec<Vec<Anomaly>> = vec![Vec::new(); candidates.len()];
        let mut kept = Vec::with_capacity(found.len());
        for (f, a) in std::mem::take(found).into_iter().enumerate() {
            match owner[f] {
                Some(c) => explains[c].push(a),
                None => kept.push(a),
            }
        }
        *found = kept;
        for ((r, direction, share), explained) in candidates.into_iter().zip(explains) {
            let Some(severity) = explained.iter().map(|a| a.severity).max() else {
                continue;
            };
            let (row, col) = (rows[r], cols[r]);
            let flags: Vec<Flag> = [row, col].into_iter().flatten().collect();
            let bar = flags.iter().map(|f| f.bar).fold(0.0, f64::max);
            let message = message(ctx, r, direction, &flags, &explained);
            found.push(Anomaly {
                detector: self.id(),
                severity,
                kind: g.kind(),
                subject: Subject::Region {
                    region: ctx.name(r).to_string(),
                    direction,
                },
                value: super::round_for(Unit::Ratio, share),
                threshold: super::round_for(Unit::Ratio, bar),
                unit: Unit::Ratio,
                message,
                relay: None,
                explains: explained,
            });
        }
    }
}

/// The rows (or columns) that stand out: `bad[r]` anomalous of `measured[r]` paths.
fn outliers(bad: &[usize], measured: &[usize], t: &Thresholds) -> Vec<Option<Flag>> {
    let shares: Vec<Option<f64>> = bad
        .iter()
        .zip(measured)
        .map(|(&b, &m)| (m > 0).then(|| b as f64 / m as f64))
        .collect();
    let mut population: Vec<f64> = shares.iter().flatten().copied().collect();
    let Some(med) = median(&mut population) else {
        return vec![None; bad.len()];
    };
    let mut deviations: Vec<f64> = population.iter().map(|s| (s - med).abs()).collect();
    let mad = median(&mut deviations).unwrap_or(0.0);
    let margin = (MADS * MAD_TO_SIGMA * mad).max(MIN_MARGIN);
    let bar = t.region_min_share.max(med + margin);
    shares
        .iter()
        .enumerate()
        .map(|(r, share)| {
            let share = (*share)?;
            let flagged =
                share > t.region_min_share && share >= med + margin && bad[r] >= t.region_min_paths;
            flagged.then_some(Flag {
                bad: bad[r],
                measured: measured[r],
                share,
                bar,
                median: med,
            })
        })
        .collect()
}

fn message(
    ctx: &Context<'_, '_>,
    r: usize,
    direction: Direction,
    flags: &[Flag],
    explained: &[Anomaly],
) -> String {
    let name = ctx.name(r);
    let (bad, measured) = flags
        .iter()
        .fold((0, 0), |(b, m), f| (b + f.bad, m + f.measured));
    let paths = match direction {
        Direction::Outgoing => format!("paths out of {name}"),
        Direction::Incoming => format!("paths into {name}"),
        Direction::Both => format!("paths out of and into {name}"),
    };
    let mut counts: BTreeMap<DetectorId, usize> = BTreeMap::new();
    for a in explained {
        *counts.entry(a.detector).or_insert(0) += 1;
    }
    let mut counts: Vec<(DetectorId, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| {
        b.1.cmp(&a.1)
            .then(detector_rank(a.0).cmp(&detector_rank(b.0)))
    });
    let counts: Vec<String> = counts.iter().map(|(d, c)| format!("{d} {c}")).collect();
    let typical = flags.iter().map(|f| f.median).fold(0.0, f64::max);
    let offset = match direction {
        Direction::Outgoing => offset_to_reverse(ctx, r, true),
        Direction::Incoming => offset_to_reverse(ctx, r, false),
        Direction::Both => None,
    };
    let offset = match offset {
        Some(o) if o.abs() >= 1.0 => format!(
            ", and they run a median {} {} than their way back",
            ms(o.abs()),
            if o > 0.0 { "slower" } else { "faster" }
        ),
        _ => String::new(),
    };
    let routes = match direction {
        Direction::Outgoing => "outbound routes",
        Direction::Incoming => "inbound routes",
        Direction::Both => "routes",
    };
    format!(
        "{bad} of {measured} {paths} have findings ({}) where the median region has {}{offset}: \
         the trouble is {name} itself; check its hosts, uplinks and {routes} before the paths \
         one by one",
        counts.join(", "),
        Unit::Ratio.format(typical),
    )
}

/// The median over the region's peers of `rtt(r, j) − rtt(j, r)` (outgoing) or
/// `rtt(j, r) − rtt(r, j)` (incoming), in ms.
fn offset_to_reverse(ctx: &Context<'_, '_>, r: usize, outgoing: bool) -> Option<f64> {
    let g = ctx.graph;
    let mut diffs: Vec<f64> = (0..g.len())
        .filter_map(|j| {
            let (there, back) = (g.rtt_ms(r, j)?, g.rtt_ms(j, r)?);
            Some(if outgoing { there - back } else { back - there })
        })
        .collect();
    median(&mut diffs)
}

#[cfg(test)]
mod tests {
    use super::super::testkit::Mesh;
    use super::super::{Context, Detector, analyse};
    use super::*;
    use crate::config::ProbeKind;
    use crate::graph::LatencyGraph;
    use crate::run::Severity;

    const NAMES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

    fn summary(found: &[Anomaly]) -> Vec<(DetectorId, String, usize)> {
        found
            .iter()
            .map(|a| (a.detector, a.subject.to_string(), a.explains.len()))
            .collect()
    }

    #[test]
    fn a_slow_row_is_one_region_finding() {
        let mut mesh = Mesh::symmetric(&NAMES, 40.0);
        for t in &NAMES[1..] {
            mesh.set("a", t, 80.0, 0);
        }
        let found = analyse(&mesh.run(), &Thresholds::default());
        assert_eq!(
            summary(&found),
            [(DetectorId::Region, "a (outgoing)".into(), 5)]
        );
        let a = &found[0];
        assert!(
            a.explains
                .iter()
                .all(|e| e.detector == DetectorId::Asymmetry)
        );
        assert_eq!(
            (a.value, a.threshold, a.severity),
            (1.0, 0.5, Severity::Warning)
        );
        assert_eq!(
            a.message,
            "5 of 5 paths out of a have findings (asymmetry 5) where the median region has 0%, \
             and they run a median 40.0 ms slower than their way back: the trouble is a itself; \
             check its hosts, uplinks and outbound routes before the paths one by one"
        );
    }

    #[test]
    fn a_slow_column_is_incoming() {
        let mut mesh = Mesh::symmetric(&NAMES, 40.0);
        for s in NAMES.iter().filter(|&&s| s != "c") {
            mesh.set(s, "c", 80.0, 0);
        }
        let found = analyse(&mesh.run(), &Thresholds::default());
        assert_eq!(
            summary(&found),
            [(DetectorId::Region, "c (incoming)".into(), 5)]
        );
    }

    #[test]
    fn a_dead_region_both_ways_and_the_worst_severity() {
        let mut mesh = Mesh::symmetric(&NAMES, 40.0);
        for t in NAMES.iter().filter(|&&t| t != "d") {
            mesh.set("d", t, 40.0, 100).set(t, "d", 40.0, 100);
        }
        mesh.set("a", "b", 40.0, 5); // unrelated critical loss
        let found = analyse(&mesh.run(), &Thresholds::default());
        assert_eq!(
            summary(&found),
            [
                (DetectorId::Region, "d (both)".into(), 10),
                (DetectorId::Loss, "a → b".into(), 0),
            ]
        );
        assert_eq!(found[0].severity, Severity::Critical);
        assert!(
            found[0]
                .explains
                .iter()
                .all(|a| a.detector == DetectorId::Unreachable)
        );
    }

    #[test]
    fn a_fleet_wide_problem_is_no_region() {
        let mut mesh = Mesh::symmetric(&NAMES, 40.0);
        for s in NAMES {
            for t in NAMES {
                if s != t {
                    mesh.jitter(s, t, 20.0);
                }
            }
        }
        let found = analyse(&mesh.run(), &Thresholds::default());
        assert_eq!(found.len(), 30);
        assert!(found.iter().all(|a| a.detector == DetectorId::Jitter));
    }

    #[test]
    fn a_few_bad_paths_stay_path_findings() {
        let mut mesh = Mesh::symmetric(&NAMES, 40.0);
        mesh.set("a", "b", 40.0, 5).set("a", "c", 40.0, 5); // 2 of 5: not most
        let found = analyse(&mesh.run(), &Thresholds::default());
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|a| a.detector == DetectorId::Loss));
        // With a lower bar, they are a region's.
        let t = Thresholds {
            region_min_share: 0.3,
            region_min_paths: 2,
            ..Thresholds::default()
        };
        let found = analyse(&mesh.run(), &t);
        assert_eq!(
            summary(&found),
            [(DetectorId::Region, "a (outgoing)".into(), 2)]
        );
    }

    #[test]
    fn nothing_to_fold_without_findings() {
        let mesh = Mesh::symmetric(&NAMES, 40.0);
        let run = mesh.run();
        let g = LatencyGraph::new(&run, ProbeKind::Udp);
        let mut found = Vec::new();
        Region.detect(&Context::new(&g, &Thresholds::default()), &mut found);
        assert!(found.is_empty());
    }
}
