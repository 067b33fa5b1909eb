//! `RunDiff`: what changed between a baseline run and the current one, per path, with a
//! verdict a CI gate can trust.
//!
//! A path is a `regression` only when the change is both statistically significant and
//! larger than the thresholds; `improvement` likewise; everything else is `unchanged`.
//! RTTs are compared with the Mann-Whitney U test on the raw samples, loss with a
//! two-proportion test, and the p-values of all paths are corrected together (Holm), so
//! that the chance of any false verdict in a diff stays below α however many paths the
//! fleet has. Reads runs; never probes, never renders.

pub mod significance;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ProbeKind;
use crate::report::PathEntry;
use crate::run::Run;
use significance::{holm, mann_whitney, two_proportion};

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

/// One side's figures for a path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Side {
    pub p50_us: Option<u64>,
    pub p95_us: Option<u64>,
    pub loss: Option<f64>,
    pub sent: u64,
    pub received: u64,
}

impl Side {
    fn of(p: &PathEntry) -> Side {
        Side {
            p50_us: p.rtt_us.map(|r| r.p50),
            p95_us: p.rtt_us.map(|r| r.p95),
            loss: p.loss,
            sent: p.sent,
            received: p.received,
        }
    }
}

/// The comparison of one path present in both runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathDiff {
    #[serde(flatten)]
    pub key: PathKey,
    pub base: Side,
    pub current: Side,
    /// Changes, current minus base (`null` where either side lacks the figure).
    pub p50_delta_us: Option<i64>,
    pub p95_delta_us: Option<i64>,
    /// In percentage points.
    pub loss_delta_pp: Option<f64>,
    /// Holm-adjusted p-values of the RTT and loss tests.
    pub rtt_p: f64,
    pub loss_p: f64,
    pub verdict: Verdict,
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

/// Everything that changed between two runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunDiff {
    pub schema: String,
    pub base: String,
    pub current: String,
    pub thresholds: DiffThresholds,
    pub paths: Vec<PathDiff>,
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

/// Compares `current` against `base`.
pub fn diff(base: &Run, current: &Run, t: &DiffThresholds) -> RunDiff {
    let index = |run: &'_ Run| -> BTreeMap<PathKey, usize> {
        run.paths
            .iter()
            .enumerate()
            .map(|(i, p)| (PathKey::of(p), i))
            .collect()
    };
    let (bi, ci) = (index(base), index(current));
    let matched = match_paths(&bi, &ci);

    // Raw p-values first, for one correction over the whole family.
    let mut pairs = Vec::new();
    let mut raw = Vec::new();
    for (key, b, c) in &matched {
        let (bp, cp) = (&base.paths[*b], &current.paths[*c]);
        let bs: Vec<u64> = bp.samples_us.iter().flatten().copied().collect();
        let cs: Vec<u64> = cp.samples_us.iter().flatten().copied().collect();
        let (rtt_p, effect) = mann_whitney(&cs, &bs);
        let loss_p = two_proportion(
            bp.sent - bp.received.min(bp.sent),
            bp.sent,
            cp.sent - cp.received.min(cp.sent),
            cp.sent,
        );
        raw.push(rtt_p);
        raw.push(loss_p);
        pairs.push((key.clone(), bp, cp, effect));
    }
    let adjusted = holm(&raw);

    let mut paths = Vec::with_capacity(pairs.len());
    let mut address_changes = Vec::new();
    for (i, (key, bp, cp, effect)) in pairs.into_iter().enumerate() {
        let (rtt_p, loss_p) = (adjusted[2 * i], adjusted[2 * i + 1]);
        let (base_side, cur_side) = (Side::of(bp), Side::of(cp));
        let delta = |a: Option<u64>, b: Option<u64>| Some(b? as i64 - a? as i64);
        let p50_delta_us = delta(base_side.p50_us, cur_side.p50_us);
        let p95_delta_us = delta(base_side.p95_us, cur_side.p95_us);
        let loss_delta_pp = match (bp.loss, cp.loss) {
            (Some(a), Some(b)) => Some(((b - a) * 100.0 * 1e4).round() / 1e4),
            _ => None,
        };
        let rtt_significant = rtt_p < t.alpha;
        let loss_significant = loss_p < t.alpha;
        let mut worse = Vec::new();
        let mut better = Vec::new();
        let beyond = |d: i64, base_us: u64, pct: f64, ms: f64| {
            (d.unsigned_abs() as f64) >= (base_us as f64 * pct / 100.0).max(ms * 1000.0)
        };
        let quantiles = [
            ("p50", p50_delta_us, base_side.p50_us, t.p50_pct, t.p50_ms),
            ("p95", p95_delta_us, base_side.p95_us, t.p95_pct, t.p95_ms),
        ];
        for (name, delta, base_us, pct, ms) in quantiles {
            let (Some(d), Some(b)) = (delta, base_us) else {
                continue;
            };
            if !rtt_significant || !beyond(d, b, pct, ms) {
                continue;
            }
            let text = format!(
                "{name} {} ({:+.1}%)",
                fmt_delta_ms(d),
                d as f64 / b.max(1) as f64 * 100.0
            );
            // The direction must agree with the test's: most samples moved the same way.
            if d > 0 && effect > 0.5 {
                worse.push(text)
            } else if d < 0 && effect < 0.5 {
                better.push(text)
            }
        }
        if let Some(d) = loss_delta_pp
            && loss_significant
            && d.abs() >= t.loss_pp
        {
            let text = format!("loss {d:+.1} pp");
            if d > 0.0 {
                worse.push(text)
            } else {
                better.push(text)
            }
        }
        let (verdict, reasons) = if !worse.is_empty() {
            (Verdict::Regression, worse)
        } else if !better.is_empty() {
            (Verdict::Improvement, better)
        } else {
            (Verdict::Unchanged, Vec::new())
        };
        if bp.address != cp.address {
            address_changes.push(AddressChange {
                key: key.clone(),
                base: bp.address.clone(),
                current: cp.address.clone(),
            });
        }
        paths.push(PathDiff {
            key,
            base: base_side,
            current: cur_side,
            p50_delta_us,
            p95_delta_us,
            loss_delta_pp,
            rtt_p,
            loss_p,
            verdict,
            reasons,
        });
    }
    // Regressions first, then improvements, each in the current run's order.
    let order: BTreeMap<&PathKey, usize> = ci.iter().map(|(k, &i)| (k, i)).collect();
    paths.sort_by_key(|p| (p.verdict, order.get(&p.key).copied().unwrap_or(usize::MAX)));

    let appeared = ci
        .iter()
        .filter(|&(_, &i)| !matched.iter().any(|&(_, _, c)| c == i))
        .map(|(k, _)| k.clone())
        .collect();
    let vanished = bi
        .iter()
        .filter(|&(_, &i)| !matched.iter().any(|&(_, b, _)| b == i))
        .map(|(k, _)| k.clone())
        .collect();
    let names = |run: &Run| {
        run.regions
            .iter()
            .filter(|r| r.reported)
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    let (bn, cn) = (names(base), names(current));
    let regions_appeared = cn.iter().filter(|n| !bn.contains(n)).cloned().collect();
    let regions_vanished = bn.iter().filter(|n| !cn.contains(n)).cloned().collect();
    let (findings_new, findings_resolved) = finding_changes(base, current);
    RunDiff {
        schema: DIFF_SCHEMA.to_string(),
        base: base.id.clone(),
        current: current.id.clone(),
        thresholds: *t,
        paths,
        appeared,
        vanished,
        regions_appeared,
        regions_vanished,
        address_changes,
        findings_new,
        findings_resolved,
    }
}

/// Pairs the paths of two runs: first by their full key; then, among the rest, a
/// (source, target, kind) that has exactly one unpaired path on each side is the same
/// path with a new target (a renamed host, another port) and is paired too, so that the
/// change shows as an address change rather than a path that vanished and one that
/// appeared. Returns (current key, base index, current index).
fn match_paths(
    bi: &BTreeMap<PathKey, usize>,
    ci: &BTreeMap<PathKey, usize>,
) -> Vec<(PathKey, usize, usize)> {
    let mut out: Vec<(PathKey, usize, usize)> = ci
        .iter()
        .filter_map(|(k, &c)| bi.get(k).map(|&b| (k.clone(), b, c)))
        .collect();
    let (lb, lc) = (unpaired(bi, ci), unpaired(ci, bi));
    for (loose_key, cs) in &lc {
        if let (Some(bs), [(ck, c)]) = (lb.get(loose_key), cs.as_slice())
            && let [(_, b)] = bs.as_slice()
        {
            out.push(((*ck).clone(), *b, *c));
        }
    }
    out.sort_by_key(|(_, _, c)| *c);
    out
}

type Loose<'a> = BTreeMap<(&'a str, &'a str, ProbeKind), Vec<(&'a PathKey, usize)>>;

/// The paths of `m` whose key `other` lacks, by (source, target, kind).
fn unpaired<'a>(m: &'a BTreeMap<PathKey, usize>, other: &BTreeMap<PathKey, usize>) -> Loose<'a> {
    let mut l: Loose = BTreeMap::new();
    for (k, &i) in m.iter().filter(|(k, _)| !other.contains_key(*k)) {
        l.entry((k.source.as_str(), k.target.as_str(), k.kind))
            .or_default()
            .push((k, i));
    }
    l
}

fn fmt_delta_ms(us: i64) -> String {
    format!("{:+.1} ms", us as f64 / 1000.0)
}

/// Findings keyed by (detector, probe kind, subject): those only in `current` are new,
/// those only in `base` resolved. Findings folded under a region finding count too, so
/// a path that moves under a region finding is neither new nor resolved.
fn finding_changes(base: &Run, current: &Run) -> (Vec<FindingChange>, Vec<FindingChange>) {
    fn collect(
        a: &crate::run::Anomaly,
        out: &mut BTreeMap<(String, ProbeKind, String), FindingChange>,
    ) {
        out.entry((a.detector.to_string(), a.kind, a.subject.to_string()))
            .or_insert_with(|| FindingChange {
                detector: a.detector.to_string(),
                severity: a.severity.to_string(),
                subject: a.subject.to_string(),
                message: a.message.clone(),
            });
        for inner in &a.explains {
            collect(inner, out);
        }
    }
    let keyed = |run: &Run| {
        let mut m = BTreeMap::new();
        for a in &run.anomalies {
            collect(a, &mut m);
        }
        m
    };
    let (b, c) = (keyed(base), keyed(current));
    let new = c
        .iter()
        .filter(|(k, _)| !b.contains_key(*k))
        .map(|(_, v)| v.clone())
        .collect();
    let resolved = b
        .iter()
        .filter(|(k, _)| !c.contains_key(*k))
        .map(|(_, v)| v.clone())
        .collect();
    (new, resolved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::loss_fields;
    use crate::run::RunRegion;
    use crate::stats::RttSummary;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// A path whose samples are `base_ms` plus exponential queueing noise (mean 0.4 ms)
    /// and a 2% chance of a 5-20 ms outlier, as loopback labs and WANs look; `lost` of
    /// `sent` probes get no reply.
    fn path(rng: &mut StdRng, s: &str, t: &str, base_ms: f64, sent: u64, lost: u64) -> PathEntry {
        let samples: Vec<Option<u64>> = (0..sent)
            .map(|i| {
                if i < lost {
                    return None;
                }
                let u: f64 = rng.random_range(1e-9..1.0);
                let mut ms = base_ms - 0.4 * u.ln();
                if rng.random_range(0.0..1.0) < 0.02 {
                    ms += rng.random_range(5.0..20.0);
                }
                Some((ms * 1000.0) as u64)
            })
            .collect();
        let received = sent - lost;
        let (loss, loss_ci) = loss_fields(sent, received);
        PathEntry {
            source: s.into(),
            target: t.into(),
            kind: ProbeKind::Udp,
            target_spec: format!("{t}:862"),
            address: Some("127.0.0.1:862".into()),
            resolve_us: None,
            resolve_error: None,
            sent,
            received,
            refused: 0,
            icmp_errors: 0,
            send_failed: 0,
            late: 0,
            duplicates: 0,
            syn_retries: 0,
            lagged: 0,
            arrival_ttl: None,
            loss,
            loss_ci,
            rtt_us: RttSummary::from_samples(&samples),
            samples_us: samples,
        }
    }

    /// A run of `n` regions; path (i, j) has RTT 5 + 7 (i + j) ms, plus `shift` ms where
    /// `shifted` says so, and `lost` losses of `sent`.
    fn run(seed: u64, n: usize, sent: u64, change: impl Fn(usize, usize) -> (f64, u64)) -> Run {
        let mut rng = StdRng::seed_from_u64(seed);
        let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
        let mut paths = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    let (shift, lost) = change(i, j);
                    paths.push(path(
                        &mut rng,
                        &names[i],
                        &names[j],
                        5.0 + 7.0 * (i + j) as f64 + shift,
                        sent,
                        lost,
                    ));
                }
            }
        }
        Run {
            schema: "latmap.run/1".into(),
            id: format!("seed-{seed}"),
            started_at: chrono::DateTime::UNIX_EPOCH,
            finished_at: chrono::DateTime::UNIX_EPOCH,
            regions: names
                .iter()
                .map(|n| RunRegion {
                    name: n.clone(),
                    location: None,
                    reported: true,
                })
                .collect(),
            probers: BTreeMap::new(),
            paths,
            anomalies: Vec::new(),
        }
    }

    fn same(_: usize, _: usize) -> (f64, u64) {
        (0.0, 0)
    }

    #[test]
    fn a_run_against_itself_is_unchanged() {
        let r = run(1, 6, 20, same);
        let d = diff(&r, &r, &DiffThresholds::default());
        assert_eq!(d.paths.len(), 30);
        assert!(
            d.paths
                .iter()
                .all(|p| p.verdict == Verdict::Unchanged && p.p50_delta_us == Some(0))
        );
        assert!(!d.any_change());
    }

    #[test]
    fn three_shifted_paths_and_only_those_regress() {
        let shifted = [(0, 1), (2, 5), (4, 3)];
        let base = run(2, 8, 20, same);
        let cur = run(3, 8, 20, |i, j| {
            (if shifted.contains(&(i, j)) { 20.0 } else { 0.0 }, 0)
        });
        let d = diff(&base, &cur, &DiffThresholds::default());
        let mut got: Vec<(String, String)> = d
            .paths
            .iter()
            .filter(|p| p.verdict == Verdict::Regression)
            .map(|p| (p.key.source.clone(), p.key.target.clone()))
            .collect();
        got.sort();
        let want: Vec<(String, String)> = shifted
            .iter()
            .map(|(i, j)| (format!("r{i}"), format!("r{j}")))
            .collect();
        assert_eq!(got, want);
        assert_eq!(d.count(Verdict::Improvement), 0);
    }

    #[test]
    fn runs_of_one_distribution_rarely_regress() {
        // 200 pairs of runs drawn from the same distribution (20 regions, 380 paths, 20
        // samples each): a false regression in at most 1% of the pairs.
        let mut false_alarms = 0;
        for trial in 0..200u64 {
            let a = run(1000 + 2 * trial, 20, 20, same);
            let b = run(1001 + 2 * trial, 20, 20, same);
            let d = diff(&a, &b, &DiffThresholds::default());
            if d.count(Verdict::Regression) > 0 {
                false_alarms += 1;
            }
        }
        eprintln!("false regressions: {false_alarms} of 200 trials");
        assert!(
            false_alarms <= 2,
            "{false_alarms} of 200 trials flagged a regression"
        );
    }

    #[test]
    fn a_loss_step_regresses_when_the_evidence_is_there() {
        let t = DiffThresholds::default();
        // 0% -> 5% over 1,000 probes: a regression.
        let base = run(4, 2, 1000, same);
        let cur = run(5, 2, 1000, |i, _| (0.0, if i == 0 { 50 } else { 0 }));
        let d = diff(&base, &cur, &t);
        let p = d.paths.iter().find(|p| p.key.source == "r0").unwrap();
        assert_eq!(p.verdict, Verdict::Regression, "{p:?}");
        assert_eq!(p.reasons, ["loss +5.0 pp"]);
        // 0 -> 1 lost of 10: not.
        let base = run(6, 2, 10, same);
        let cur = run(7, 2, 10, |i, _| (0.0, if i == 0 { 1 } else { 0 }));
        let d = diff(&base, &cur, &t);
        assert_eq!(d.count(Verdict::Regression), 0, "{:?}", d.paths);
    }

    #[test]
    fn an_improvement_is_reported_as_such() {
        let base = run(8, 3, 30, |i, j| {
            (if (i, j) == (1, 2) { 30.0 } else { 0.0 }, 0)
        });
        let cur = run(9, 3, 30, same);
        let d = diff(&base, &cur, &DiffThresholds::default());
        assert_eq!(d.count(Verdict::Improvement), 1);
        assert_eq!(d.count(Verdict::Regression), 0);
        assert!(d.any_change());
    }

    #[test]
    fn paths_and_regions_that_come_and_go() {
        let base = run(10, 3, 10, same);
        let mut cur = run(11, 3, 10, same);
        cur.paths.retain(|p| p.source != "r2");
        cur.regions[2].reported = false;
        cur.paths[0].address = Some("127.0.0.9:862".into());
        // A target renamed on a path that has only one: the same path, a new address.
        cur.paths[1].target_spec = "renamed.example:862".into();
        cur.paths[1].address = Some("127.0.0.8:862".into());
        let d = diff(&base, &cur, &DiffThresholds::default());
        assert_eq!(d.vanished.len(), 2, "{:?}", d.vanished);
        assert!(d.appeared.is_empty(), "{:?}", d.appeared);
        assert_eq!(d.paths.len(), 4);
        assert_eq!(d.regions_vanished, ["r2"]);
        assert_eq!(d.address_changes.len(), 2);
    }
}
