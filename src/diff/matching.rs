//! Which path of one run is which path of another, and what changed in a run's shape:
//! paths, regions, addresses and findings that came or went.

use std::collections::{BTreeMap, HashMap};

use crate::config::ProbeKind;
use crate::report::PathEntry;
use crate::run::{Anomaly, Run};

use super::{AddressChange, FindingChange, PathKey};

type Key<'a> = (&'a str, &'a str, ProbeKind, &'a str);

fn key(p: &PathEntry) -> Key<'_> {
    (&p.source, &p.target, p.kind, &p.target_spec)
}

/// Pairs the paths of two runs: first by their full key; then, among the rest, a
/// (source, target, kind) that has exactly one unpaired path on each side is the same
/// path with a new target (a renamed host, another port) and is paired too, so that the
/// change shows as an address change rather than a path that vanished and one that
/// appeared. Returns (base index, current index), by current index.
pub fn pair(base: &Run, current: &Run) -> Vec<(usize, usize)> {
    // Two runs of one fleet list the same paths in the same order: pair them without
    // hashing a million keys.
    if base.paths.len() == current.paths.len()
        && base
            .paths
            .iter()
            .zip(&current.paths)
            .all(|(b, c)| key(b) == key(c))
    {
        return (0..current.paths.len()).map(|i| (i, i)).collect();
    }
    let (bi, ci) = (index(base), index(current));
    let mut out: Vec<(usize, usize)> = ci
        .iter()
        .filter_map(|(k, &c)| bi.get(k).map(|&b| (b, c)))
        .collect();
    let (lb, lc) = (unpaired(&bi, &ci), unpaired(&ci, &bi));
    for (loose_key, cs) in &lc {
        if let (Some([b]), [c]) = (lb.get(loose_key).map(Vec::as_slice), cs.as_slice()) {
            out.push((*b, *c));
        }
    }
    out.sort_unstable_by_key(|&(_, c)| c);
    out
}

fn index(run: &Run) -> HashMap<Key<'_>, usize> {
    let mut m = HashMap::with_capacity(run.paths.len());
    for (i, p) in run.paths.iter().enumerate() {
        // A duplicated key (a forged file) pairs its first occurrence.
        m.entry(key(p)).or_insert(i);
    }
    m
}

type Loose<'a> = BTreeMap<(&'a str, &'a str, ProbeKind), Vec<usize>>;

/// The paths of `m` whose key `other` lacks, by (source, target, kind).
fn unpaired<'a>(m: &HashMap<Key<'a>, usize>, other: &HashMap<Key<'a>, usize>) -> Loose<'a> {
    let mut l: Loose = BTreeMap::new();
    for (k, &i) in m.iter().filter(|(k, _)| !other.contains_key(*k)) {
        l.entry((k.0, k.1, k.2)).or_default().push(i);
    }
    l
}

/// How a run's shape changed against the reference baseline.
#[derive(Debug, Default)]
pub struct Structure {
    pub vanished: Vec<PathKey>,
    pub regions_appeared: Vec<String>,
    pub regions_vanished: Vec<String>,
    pub address_changes: Vec<AddressChange>,
    pub findings_new: Vec<FindingChange>,
    pub findings_resolved: Vec<FindingChange>,
}

pub fn structure(base: &Run, current: &Run) -> Structure {
    let pairs = pair(base, current);
    let mut paired_base = vec![false; base.paths.len()];
    let mut address_changes = Vec::new();
    for &(b, c) in &pairs {
        paired_base[b] = true;
        let (bp, cp) = (&base.paths[b], &current.paths[c]);
        if bp.address != cp.address {
            address_changes.push(AddressChange {
                key: PathKey::of(cp),
                base: bp.address.clone(),
                current: cp.address.clone(),
            });
        }
    }
    let vanished = base
        .paths
        .iter()
        .zip(&paired_base)
        .filter(|(_, paired)| !**paired)
        .map(|(p, _)| PathKey::of(p))
        .collect();
    let names = |run: &Run| {
        run.regions
            .iter()
            .filter(|r| r.reported)
            .map(|r| r.name.clone())
            .collect::<Vec<_>>()
    };
    let (bn, cn) = (names(base), names(current));
    let (findings_new, findings_resolved) = finding_changes(base, current);
    Structure {
        vanished,
        regions_appeared: cn.iter().filter(|n| !bn.contains(n)).cloned().collect(),
        regions_vanished: bn.iter().filter(|n| !cn.contains(n)).cloned().collect(),
        address_changes,
        findings_new,
        findings_resolved,
    }
}

/// Findings keyed by (detector, probe kind, subject): those only in `current` are new,
/// those only in `base` resolved. Findings folded under a region finding count too, so
/// a path that moves under a region finding is neither new nor resolved.
fn finding_changes(base: &Run, current: &Run) -> (Vec<FindingChange>, Vec<FindingChange>) {
    fn collect(a: &Anomaly, out: &mut BTreeMap<(String, ProbeKind, String), FindingChange>) {
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
