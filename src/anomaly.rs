//! The detectors: what is wrong in a run, in as few findings as explain it.
//!
//! Each detector implements [`Detector`] in a file of its own under `anomaly/` and has a
//! stable kebab-case id ([`DetectorId`]) shared with the configuration, the CLI, the run
//! file and docs/anomalies.md. [`analyse`] builds one [`LatencyGraph`] per probe kind
//! of a run, runs the path detectors over it with the limits of `[thresholds]`, then the
//! `region` detector, which folds the path findings of a region that is bad as a whole
//! into one finding; the result is sorted most severe first. Detectors read the run and
//! never panic on any input (missing paths, no replies, no locations); they do no I/O.

mod asymmetry;
mod detour;
mod inflation;
mod jitter;
mod loss;
mod prober;
mod region;
pub mod shift;
mod slo;
mod unreachable;

#[cfg(test)]
mod testkit;

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::config::{DetectorId, LimitResolver, PathLimits, Thresholds};
use crate::graph::{LatencyGraph, PathEdge};
use crate::history::{Past, PathKey};
use crate::run::{Anomaly, Run, Severity, Subject, Unit};

/// One detector.
pub trait Detector {
    /// Its stable id.
    fn id(&self) -> DetectorId;

    /// Adds its findings about `ctx`'s graph to `found`, which holds the findings of the
    /// detectors that ran before it (the `region` detector rewrites them).
    fn detect(&self, ctx: &Context<'_, '_>, found: &mut Vec<Anomaly>);
}

/// Every detector, in the order they run: path detectors first, then `region`, which
/// folds them, and `prober`, which says why some paths were not judged.
pub fn detectors() -> [&'static dyn Detector; 10] {
    [
        &unreachable::Unreachable,
        &loss::Loss,
        &slo::Slo,
        &jitter::Jitter,
        &shift::Shift,
        &inflation::Inflation,
        &asymmetry::Asymmetry,
        &detour::Detour,
        &region::Region,
        &prober::Prober,
    ]
}

/// What a detector looks at: the graph of one probe kind, the limits of its paths, and,
/// for a run of a series, its paths' recent history.
pub struct Context<'a, 'r> {
    pub graph: &'a LatencyGraph<'r>,
    pub thresholds: &'a Thresholds,
    limits: LimitResolver<'a>,
    /// Each path's points in the runs before this one, oldest first (`shift`).
    pub history: Option<&'a Recent>,
}

/// Paths' recent history, as [`History::recent`](crate::history::History::recent) gives it.
pub type Recent = HashMap<PathKey, Vec<Past>>;

impl<'a, 'r> Context<'a, 'r> {
    pub fn new(graph: &'a LatencyGraph<'r>, thresholds: &'a Thresholds) -> Context<'a, 'r> {
        let names: Vec<&str> = (0..graph.len()).map(|i| graph.region(i).name).collect();
        Context {
            graph,
            thresholds,
            limits: thresholds.resolver(&names),
            history: None,
        }
    }

    /// The same, judging against `history` too.
    pub fn with_history(mut self, history: Option<&'a Recent>) -> Context<'a, 'r> {
        self.history = history;
        self
    }

    /// The limits of the path `i -> j`.
    pub fn limits(&self, i: usize, j: usize) -> PathLimits {
        self.limits.get(i, j)
    }

    /// The paths detector `d` judges, each with its limits: the one place where the
    /// `skip` rules, the discounted probers ([`Context::judges`]) and the per-pair limits
    /// are applied. Path detectors iterate these, not the graph's paths.
    pub fn judged(
        &self,
        d: DetectorId,
    ) -> impl Iterator<Item = (usize, usize, &'a PathEdge<'r>, PathLimits)> + '_ {
        self.graph.paths().filter_map(move |(i, j, e)| {
            let limits = self.limits(i, j);
            (!limits.skip.contains(d) && !self.discounted(i, j)).then_some((i, j, e, limits))
        })
    }

    /// Whether detector `d` judges the path `i -> j`: no `skip` names it, and its
    /// numbers are not discounted (see [`Context::discounted`]).
    pub fn judges(&self, d: DetectorId, i: usize, j: usize) -> bool {
        !self.limits(i, j).skip.contains(d) && !self.discounted(i, j)
    }

    /// Whether the path `i -> j` was measured by a prober that could not keep its
    /// schedule while probing it (`lagged` probes), or whose receive queue overflowed
    /// (replies dropped on its host, not by the network): what it shows may describe the
    /// prober's host, so no path detector judges it; `prober` says so instead.
    pub fn discounted(&self, i: usize, j: usize) -> bool {
        let lagged = self
            .graph
            .path(i, j)
            .is_some_and(|e| e.entry.prober_lagged());
        let dropped = i < self.graph.len()
            && self
                .graph
                .region(i)
                .prober
                .is_some_and(|h| h.queue_drops > 0);
        lagged || dropped
    }

    /// The name of region `i`.
    pub fn name(&self, i: usize) -> &'r str {
        self.graph.region(i).name
    }

    /// A finding about the path `i -> j`.
    #[allow(clippy::too_many_arguments)]
    pub fn path_anomaly(
        &self,
        detector: DetectorId,
        severity: Severity,
        (i, j): (usize, usize),
        value: f64,
        threshold: f64,
        unit: Unit,
        message: String,
    ) -> Anomaly {
        Anomaly {
            detector,
            severity,
            kind: self.graph.kind(),
            subject: Subject::path(self.name(i), self.name(j)),
            value: round_for(unit, value),
            threshold: round_for(unit, threshold),
            unit,
            message,
            relay: None,
            explains: Vec::new(),
        }
    }
}

/// Values as stored: whole microseconds, ratios to 6 decimals, factors to 3; never a
/// non-finite number (JSON has none).
pub(crate) fn round_for(unit: Unit, v: f64) -> f64 {
    let scale = match unit {
        Unit::Us => 1.0,
        Unit::Ratio => 1e6,
        Unit::Factor => 1e3,
    };
    let r = (v * scale).round() / scale;
    if r.is_finite() { r } else { 0.0 }
}

/// Milliseconds for messages: `12.3 ms`, `233 ms`.
pub(crate) fn ms(v: f64) -> String {
    Unit::Us.format(v * 1000.0)
}

/// Runs every detector not skipped in `thresholds` on every probe kind of `run`.
/// The findings are sorted most severe first (see [`sort`]).
pub fn analyse(run: &Run, thresholds: &Thresholds) -> Vec<Anomaly> {
    analyse_with_history(run, thresholds, None)
}

/// [`analyse`] for a run of a series: `history` holds its paths' recent points, so that
/// `shift` can judge each path against its own normal.
pub fn analyse_with_history(
    run: &Run,
    thresholds: &Thresholds,
    history: Option<&Recent>,
) -> Vec<Anomaly> {
    let mut found = Vec::new();
    for kind in LatencyGraph::kinds(run) {
        let graph = LatencyGraph::new(run, kind);
        found.extend(analyse_graph(&graph, thresholds, history));
    }
    sort(&mut found, run);
    found
}

/// Runs every detector not skipped in `thresholds` on one graph (unsorted).
pub fn analyse_graph(
    graph: &LatencyGraph<'_>,
    thresholds: &Thresholds,
    history: Option<&Recent>,
) -> Vec<Anomaly> {
    let ctx = Context::new(graph, thresholds).with_history(history);
    let mut found = Vec::new();
    for d in detectors() {
        if !thresholds.limits.skip.contains(d.id()) {
            d.detect(&ctx, &mut found);
        }
    }
    found
}

/// The order findings are shown and stored in: critical first; then region findings,
/// unreachable, loss, slo, detour, inflation, asymmetry, jitter; then probe kind; then
/// the subject in the run's region order. Explained findings are sorted the same way.
pub fn sort(found: &mut [Anomaly], run: &Run) {
    let order: HashMap<&str, usize> = run
        .regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    sort_by_order(found, &order);
}

fn sort_by_order(found: &mut [Anomaly], order: &HashMap<&str, usize>) {
    let rank = |name: &str| order.get(name).copied().unwrap_or(usize::MAX);
    let key = |a: &Anomaly| {
        let subject = match &a.subject {
            Subject::Path { source, target } => (0, rank(source), rank(target), 0),
            Subject::Region { region, direction } => (1, rank(region), 0, *direction as usize),
        };
        (
            Reverse(a.severity),
            detector_rank(a.detector),
            a.kind,
            subject,
        )
    };
    found.sort_by_key(key);
    for a in found.iter_mut() {
        sort_by_order(&mut a.explains, order);
    }
}

/// Display order of detectors among findings of one severity.
pub fn detector_rank(d: DetectorId) -> u8 {
    match d {
        // Why the rest of the report is blind where it is: first.
        DetectorId::Prober => 0,
        DetectorId::Region => 0,
        DetectorId::Unreachable => 1,
        DetectorId::Loss => 2,
        DetectorId::Slo => 3,
        DetectorId::Detour => 4,
        DetectorId::Inflation => 5,
        DetectorId::Asymmetry => 6,
        DetectorId::Jitter => 7,
        DetectorId::Shift => 3,
    }
}

/// The median of `values` (NaN-free), `None` when empty.
pub(crate) fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::testkit::Mesh;
    use super::*;

    #[test]
    fn every_detector_has_its_id_once() {
        let ids: Vec<DetectorId> = detectors().iter().map(|d| d.id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), DetectorId::ALL.len());
        assert_eq!(
            ids[ids.len() - 2..],
            [DetectorId::Region, DetectorId::Prober],
            "region, then prober, after the path detectors"
        );
    }

    #[test]
    fn findings_sort_most_severe_first() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 20.0);
        mesh.set("a", "b", 20.0, 5); // 5 of 100 lost: critical loss
        mesh.set("c", "a", 20.0, 0);
        mesh.jitter("c", "a", 12.0); // warning
        let run = mesh.run();
        let found = analyse(&run, &Thresholds::default());
        let summary: Vec<(Severity, DetectorId, String)> = found
            .iter()
            .map(|a| (a.severity, a.detector, a.subject.to_string()))
            .collect();
        assert_eq!(
            summary,
            [
                (Severity::Critical, DetectorId::Loss, "a → b".into()),
                (Severity::Warning, DetectorId::Jitter, "c → a".into()),
            ]
        );
    }

    #[test]
    fn a_global_skip_turns_a_detector_off() {
        let mut mesh = Mesh::symmetric(&["a", "b", "c"], 20.0);
        mesh.set("a", "b", 20.0, 5);
        let run = mesh.run();
        let mut t = Thresholds::default();
        t.limits.skip.insert(DetectorId::Loss);
        assert!(analyse(&run, &t).is_empty());
    }

    #[test]
    fn rounding_keeps_json_finite() {
        assert_eq!(round_for(Unit::Us, 1234.56), 1235.0);
        assert_eq!(round_for(Unit::Ratio, 0.123_456_78), 0.123_457);
        assert_eq!(round_for(Unit::Factor, 2.345_67), 2.346);
        assert_eq!(round_for(Unit::Factor, f64::INFINITY), 0.0);
        assert_eq!(round_for(Unit::Us, f64::NAN), 0.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
