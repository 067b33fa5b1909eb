//! `RunDiff`: what changed between one or more baseline runs and the current one, per
//! path, with a verdict a CI gate can trust, and what the comparison could not see.
//!
//! A path is a `regression` only when a change is both statistically significant and
//! beyond the thresholds; `improvement` likewise; everything else is `unchanged`. The
//! location of the RTTs is compared with Yuen's trimmed-mean test (robust to outliers,
//! and it uses magnitudes, so five clean samples can prove a shift), the tail (p95,
//! p99 over the median) with a Harrell-Davis test, loss with Fisher's exact test. With
//! several baselines every path's variation from run to run enters the tests. The
//! p-values are corrected together (Holm) over the family of hypotheses that could give
//! a verdict at all (see `family`). docs/ci.md gives the reasons and the figures.
//! Reads runs; never probes, never renders.

mod family;
mod matching;
pub mod noise;
mod observed;
pub mod significance;
mod verdict;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::ProbeKind;
use crate::report::PathEntry;
use crate::run::Run;
use observed::Observed;
use significance::HdCache;

pub use crate::config::DiffThresholds;

/// The verdict on one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Regression,
    Improvement,
    Unchanged,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Regression => "regression",
            Verdict::Improvement => "improvement",
            Verdict::Unchanged => "unchanged",
        }
    }
}

/// What a test is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Quantity {
    P50,
    P95,
    P99,
    Loss,
}

impl Quantity {
    pub fn as_str(self) -> &'static str {
        match self {
            Quantity::P50 => "p50",
            Quantity::P95 => "p95",
            Quantity::P99 => "p99",
            Quantity::Loss => "loss",
        }
    }
}

/// Identity of a path across runs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PathKey {
    pub source: String,
    pub target: String,
    pub kind: ProbeKind,
    pub target_spec: String,
}

impl PathKey {
    fn of(p: &PathEntry) -> PathKey {
        PathKey {
            source: p.source.clone(),
            target: p.target.clone(),
            kind: p.kind,
            target_spec: p.target_spec.clone(),
        }
    }
}

impl std::fmt::Display for PathKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} → {} ({} {})",
            self.source, self.target, self.kind, self.target_spec
        )
    }
}

/// One side's figures for a path. With several baselines, the baseline side gives the
/// median of their quantiles and their pooled loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    #[serde(default)]
    pub p99_us: Option<u64>,
    pub loss: Option<f64>,
    pub sent: u64,
    pub received: u64,
}

/// Why a test was left out of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Skip {
    /// A side had too few replies for this test (2 for p50, 50 for p95, 250 for p99).
    TooFewReplies,
    /// No split of these samples (or no choice of current run) moves it beyond its
    /// threshold, so it cannot give a verdict.
    WithinThresholds,
    /// Fisher's test of these loss counts cannot reach α however they fall.
    CannotReachAlpha,
}

/// One test of a path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Test {
    /// In the family that was corrected over.
    pub tested: bool,
    /// Why not, when not.
    pub skipped: Option<Skip>,
    /// The test's own p-value (also when left out of the family, when it could be
    /// computed).
    pub p: Option<f64>,
    /// Holm-adjusted over the family; 1 when not tested.
    pub p_adjusted: f64,
    /// The statistic (t or z) and its degrees of freedom (`null`: normal).
    pub statistic: Option<f64>,
    pub df: Option<f64>,
    /// Standard error of the compared estimate, in microseconds (or of the loss ratio).
    pub se: Option<f64>,
}

/// Every test of a path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Tests {
    pub p50: Test,
    pub p95: Test,
    pub p99: Test,
    pub loss: Test,
}

/// The comparison of one path present in the current run and at least one baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathDiff {
    #[serde(flatten)]
    pub key: PathKey,
    pub base: Side,
    pub current: Side,
    /// How many baseline runs had this path.
    pub baselines: usize,
    /// Changes, current minus base (`null` where either side lacks the figure).
    pub p50_delta_us: Option<i64>,
    pub p95_delta_us: Option<i64>,
    #[serde(default)]
    pub p99_delta_us: Option<i64>,
    /// In percentage points.
    pub loss_delta_pp: Option<f64>,
    /// Holm-adjusted p-values of the p50 (location) and loss tests (1 when not tested).
    pub rtt_p: f64,
    pub loss_p: f64,
    pub tests: Tests,
    /// The p50 change this path must show to count: `[diff]` p50_pct of its baseline
    /// p50, and at least p50_ms.
    pub p50_threshold_us: u64,
    /// The smallest p50 change this comparison could have detected at the configured α
    /// (`null` with fewer than two replies on a side).
    pub min_detectable_p50_us: Option<u64>,
    /// Whether that is larger than the threshold: a change of the configured size could
    /// have gone unseen.
    pub p50_blind: bool,
    /// When blind: the `count` at which it would not be (`null`: none up to 10,000, or
    /// the path varies too much between runs for more probes to help).
    pub probes_needed: Option<u64>,
    /// With several baselines: the standard deviation of the path's location from run
    /// to run beyond what its within-run noise explains, in microseconds.
    pub between_run_sd_us: Option<u64>,
    pub verdict: Verdict,
    /// Whether the path got no verdict because its prober lagged behind its schedule
    /// (in this run or a baseline): its numbers may describe the prober's host.
    #[serde(default)]
    pub discounted: bool,
    /// What got worse, and what better.
    pub worse: Vec<Quantity>,
    pub better: Vec<Quantity>,
    /// Why, in words (empty when unchanged).
    pub reasons: Vec<String>,
}

/// A region or path's address that changed between the runs (a DNS change, say).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AddressChange {
    #[serde(flatten)]
    pub key: PathKey,
    pub base: Option<String>,
    pub current: Option<String>,
}

/// A finding present in one run and not the other, keyed by detector and subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingChange {
    pub detector: String,
    pub severity: String,
    pub subject: String,
    pub message: String,
}

/// The hypotheses corrected over: how many of each.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Family {
    pub tests: usize,
    pub p50: usize,
    pub p95: usize,
    pub p99: usize,
    pub loss: usize,
    /// Tests left out because they could not give a verdict at all.
    pub left_out: usize,
}

/// How blind the diff was.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct BlindSpots {
    /// Paths whose smallest detectable p50 change exceeds their threshold ...
    pub p50_paths: usize,
    /// ... the count that would make all of those that more probes can help see it ...
    pub p50_count_needed: Option<u64>,
    /// ... a smaller count that would do for most of them (at least 90%), and for how
    /// many (a few paths whose samples were hit by outliers can ask for far more) ...
    pub p50_count_most: Option<u64>,
    pub p50_paths_most: usize,
    /// ... and how many more probes would not help (up to 10,000, or because the path
    /// varies between runs).
    pub p50_beyond_help: usize,
    /// Paths whose p95 (p99) was not tested for lack of replies, and the count that
    /// would test them all.
    pub p95_untested: usize,
    pub p95_count_needed: Option<u64>,
    pub p99_untested: usize,
    pub p99_count_needed: Option<u64>,
    /// Paths given no verdict because their prober lagged behind its schedule.
    #[serde(default)]
    pub discounted: usize,
}

/// Everything that changed between the baselines and the current run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDiff {
    pub schema: String,
    /// The newest baseline run: paths, regions, findings and addresses are compared
    /// with it.
    pub base: String,
    /// Every baseline run whose samples were used, oldest first.
    pub baselines: Vec<String>,
    pub current: String,
    pub thresholds: DiffThresholds,
    pub family: Family,
    pub blind: BlindSpots,
    pub paths: Vec<PathDiff>,
    /// Paths in the current run that no baseline has; paths of the newest baseline the
    /// current run lacks.
    pub appeared: Vec<PathKey>,
    pub vanished: Vec<PathKey>,
    pub regions_appeared: Vec<String>,
    pub regions_vanished: Vec<String>,
    pub address_changes: Vec<AddressChange>,
    pub findings_new: Vec<FindingChange>,
    pub findings_resolved: Vec<FindingChange>,
}

/// The schema tag of a diff in JSON.
pub const DIFF_SCHEMA: &str = "latmap.diff/1";

impl RunDiff {
    /// Paths with this verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.paths.iter().filter(|p| p.verdict == verdict).count()
    }

    /// Anything at all changed: a verdict other than unchanged, paths or regions that
    /// came or went, an address, or a finding.
    pub fn any_change(&self) -> bool {
        self.paths.iter().any(|p| p.verdict != Verdict::Unchanged)
            || !self.appeared.is_empty()
            || !self.vanished.is_empty()
            || !self.regions_appeared.is_empty()
            || !self.regions_vanished.is_empty()
            || !self.address_changes.is_empty()
            || !self.findings_new.is_empty()
            || !self.findings_resolved.is_empty()
    }
}

/// A baseline run as the diff keeps it.
#[derive(Debug, Clone)]
struct Baseline {
    id: String,
    started_at: DateTime<Utc>,
}

/// Collects the current run and any number of baselines, one at a time, keeping of
/// each only what the comparison needs (so that a fleet of a million paths and several
/// baselines fits in memory), then compares.
#[derive(Debug)]
pub struct DiffBuilder {
    current: Run,
    observed: Vec<Observed>,
    baselines: Vec<Baseline>,
    /// Per current path: (baseline index, what it observed).
    history: Vec<Vec<(usize, Observed)>>,
    /// The newest baseline, without its samples.
    reference: Option<Run>,
    cache: HdCache,
}

/// Drops the raw samples of every path (the summaries stay).
fn strip_samples(run: &mut Run) {
    for p in &mut run.paths {
        p.samples_us = Vec::new();
    }
}

impl DiffBuilder {
    pub fn new(mut current: Run) -> DiffBuilder {
        let mut cache = HdCache::default();
        let observed = current
            .paths
            .iter()
            .map(|p| Observed::of(p, &mut cache))
            .collect();
        strip_samples(&mut current);
        DiffBuilder {
            history: vec![Vec::new(); current.paths.len()],
            current,
            observed,
            baselines: Vec::new(),
            reference: None,
            cache,
        }
    }

    /// Adds a baseline run: its paths are paired with the current run's (see
    /// the `matching` module) and summarised; the newest baseline is kept for the comparison of
    /// paths, regions, findings and addresses.
    pub fn add_baseline(&mut self, mut base: Run) {
        let index = self.baselines.len();
        for (b, c) in matching::pair(&base, &self.current) {
            let o = Observed::of(&base.paths[b], &mut self.cache);
            // Most paths have one entry per baseline: no spare capacity (a million
            // paths would otherwise carry room for four).
            self.history[c].reserve_exact(1);
            self.history[c].push((index, o));
        }
        self.baselines.push(Baseline {
            id: base.id.clone(),
            started_at: base.started_at,
        });
        strip_samples(&mut base);
        let newer = self
            .reference
            .as_ref()
            .is_none_or(|r| base.started_at >= r.started_at);
        if newer {
            self.reference = Some(base);
        }
    }

    /// How many baselines were added.
    pub fn baselines(&self) -> usize {
        self.baselines.len()
    }

    /// The current run (without samples).
    pub fn current(&self) -> &Run {
        &self.current
    }

    /// The newest baseline (without samples).
    pub fn reference(&self) -> Option<&Run> {
        self.reference.as_ref()
    }

    /// Compares. With no baseline added, every path of the current run has appeared.
    pub fn finish(&self, t: &DiffThresholds) -> RunDiff {
        let mut order: Vec<usize> = (0..self.baselines.len()).collect();
        order.sort_by_key(|&i| (self.baselines[i].started_at, i));
        let compared: Vec<usize> = (0..self.current.paths.len())
            .filter(|&c| !self.history[c].is_empty())
            .collect();
        let inputs: Vec<verdict::Input> = compared
            .iter()
            .map(|&c| verdict::Input {
                key: PathKey::of(&self.current.paths[c]),
                current: &self.observed[c],
                bases: self.history[c].iter().map(|(_, o)| o).collect(),
            })
            .collect();
        let (mut paths, family, blind) = verdict::judge(inputs, t);
        // Regressions first, then improvements, each in the current run's order (which
        // the paths are in already). In place: a million path diffs are 900 MB.
        let mut by_verdict: Vec<u32> = (0..paths.len() as u32).collect();
        by_verdict.sort_by_key(|&i| paths[i as usize].verdict);
        permute(&mut paths, by_verdict);

        let appeared = (0..self.current.paths.len())
            .filter(|&c| self.history[c].is_empty())
            .map(|c| PathKey::of(&self.current.paths[c]))
            .collect();
        let structure = match &self.reference {
            Some(r) => matching::structure(r, &self.current),
            None => matching::Structure::default(),
        };
        RunDiff {
            schema: DIFF_SCHEMA.to_string(),
            base: self
                .reference
                .as_ref()
                .map(|r| r.id.clone())
                .unwrap_or_default(),
            baselines: order
                .iter()
                .map(|&i| self.baselines[i].id.clone())
                .collect(),
            current: self.current.id.clone(),
            thresholds: *t,
            family,
            blind,
            paths,
            appeared,
            vanished: structure.vanished,
            regions_appeared: structure.regions_appeared,
            regions_vanished: structure.regions_vanished,
            address_changes: structure.address_changes,
            findings_new: structure.findings_new,
            findings_resolved: structure.findings_resolved,
        }
    }
}

/// Puts `v[order[i]]` at position `i`, moving every element once (cycle by cycle)
/// instead of building a second vector.
fn permute<T>(v: &mut [T], mut order: Vec<u32>) {
    for start in 0..v.len() {
        let mut i = start;
        while order[i] as usize != start {
            let next = order[i] as usize;
            v.swap(i, next);
            order[i] = i as u32;
            i = next;
        }
        order[i] = i as u32;
    }
}

/// Compares `current` against one baseline run.
pub fn diff(base: &Run, current: &Run, t: &DiffThresholds) -> RunDiff {
    let mut b = DiffBuilder::new(current.clone());
    b.add_baseline(base.clone());
    b.finish(t)
}

/// Compares `current` against several baseline runs.
pub fn diff_many(bases: &[Run], current: &Run, t: &DiffThresholds) -> RunDiff {
    let mut b = DiffBuilder::new(current.clone());
    for base in bases {
        b.add_baseline(base.clone());
    }
    b.finish(t)
}

#[cfg(test)]
mod tests;
