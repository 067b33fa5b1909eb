//! The run: every region's paths of one sweep, merged, in one versioned JSON file.
//!
//! `run.json` has `"schema": "latmap.run/1"` and a stable order (regions as configured,
//! paths by source, target, kind and target), so two runs diff cleanly. A region that
//! sent no report is listed with `"reported": false` ("no data"); its paths are absent,
//! never shown as 100% loss. The analysis stage's findings are stored in the run too;
//! their type is in `finding`, the detectors come later. See docs/run-format.md.

mod check;
mod finding;

pub use finding::{Anomaly, Direction, Severity, Subject, Unit};

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::artifact::{self, ArtifactError, Versioned};
use crate::config::Location;
use crate::probe::ProberHealth;
use crate::report::{PathEntry, RegionReport};

/// The schema tag of a run.
pub const RUN_SCHEMA: &str = "latmap.run/1";

/// A region in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRegion {
    pub name: String,
    pub location: Option<Location>,
    /// Whether this region's prober sent a report; `false` means "no data".
    pub reported: bool,
}

/// One sweep of the fleet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub schema: String,
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub regions: Vec<RunRegion>,
    /// Each reporting region's prober health.
    pub probers: BTreeMap<String, ProberHealth>,
    pub paths: Vec<PathEntry>,
    /// Findings of the analysis stage, most severe first (empty when not analysed).
    /// A finding this version cannot read (a detector added by a later version) is
    /// skipped with a warning, so that newer runs stay readable.
    #[serde(default, deserialize_with = "known_anomalies")]
    pub anomalies: Vec<Anomaly>,
}

/// The anomalies this version knows; the others are logged and left out.
fn known_anomalies<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Anomaly>, D::Error> {
    let raw: Vec<serde_json::Value> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|v| match serde_json::from_value::<Anomaly>(v) {
            Ok(a) => Some(a),
            Err(e) => {
                tracing::warn!("skipping a finding this version of latmap cannot read: {e}");
                None
            }
        })
        .collect())
}

/// Why reports cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum AggregateError {
    #[error("no region reports to aggregate")]
    Empty,
    #[error("two reports for region {0:?}; pass one report per region")]
    Duplicate(String),
    #[error(
        "report of region {region:?} has a path from {source_region:?}; a region report holds only its own region's paths"
    )]
    ForeignPath {
        region: String,
        source_region: String,
    },
}

impl Run {
    /// Merges region reports into a run. Regions known to any report but without a
    /// report of their own are marked as not reported.
    pub fn from_reports(reports: &[RegionReport]) -> Result<Run, AggregateError> {
        Run::from_owned_reports(reports.to_vec())
    }

    /// The regions of a run merged from `reports`, in the order they are first named
    /// (each report's list of regions, then its own region), none reported yet.
    ///
    /// A region's place comes from its own report when that report gives one: no
    /// other region's report can move it (a forged place would make its paths look
    /// slow against the speed of light). A region without a report of its own, or
    /// whose report gives none, takes the place most of the reports that list it
    /// give, and of equally many the smallest, so the run does not depend on the
    /// order of the reports.
    pub fn regions_of(reports: &[RegionReport]) -> Vec<RunRegion> {
        use crate::config::Location;
        use std::collections::HashMap;
        let mut regions: Vec<RunRegion> = Vec::new();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        // Places given for each region (by index), and how many reports give each.
        let mut given: Vec<HashMap<(u64, u64), usize>> = Vec::new();
        let mut own: Vec<Option<Location>> = Vec::new();
        for report in reports {
            for r in report
                .regions
                .iter()
                .map(|r| (r.name.as_str(), r.location))
                .chain([(report.region.as_str(), None)])
            {
                let i = *seen.entry(r.0).or_insert_with(|| {
                    regions.push(RunRegion {
                        name: r.0.to_string(),
                        location: None,
                        reported: false,
                    });
                    given.push(HashMap::new());
                    own.push(None);
                    regions.len() - 1
                });
                if let Some(l) = r.1 {
                    if r.0 == report.region {
                        own[i].get_or_insert(l);
                    }
                    *given[i]
                        .entry((l.lat.to_bits(), l.lon.to_bits()))
                        .or_default() += 1;
                }
            }
        }
        for ((region, own), given) in regions.iter_mut().zip(own).zip(given) {
            region.location = own.or_else(|| {
                given
                    .into_iter()
                    .map(|((lat, lon), n)| {
                        (
                            n,
                            Location {
                                lat: f64::from_bits(lat),
                                lon: f64::from_bits(lon),
                            },
                        )
                    })
                    .max_by(|(n, a), (m, b)| {
                        n.cmp(m)
                            .then(b.lat.total_cmp(&a.lat))
                            .then(b.lon.total_cmp(&a.lon))
                    })
                    .map(|(_, l)| l)
            });
        }
        regions
    }

    /// [`Run::from_reports`], taking the reports' paths instead of copying them.
    pub fn from_owned_reports(reports: Vec<RegionReport>) -> Result<Run, AggregateError> {
        let reports = reports.into_iter().map(|r| (r, Vec::<()>::new())).collect();
        Run::from_owned_reports_carrying(reports).map(|(run, _)| run)
    }

    /// [`Run::from_owned_reports`], with a value beside each path of each report (the
    /// k-th value of a report goes with its k-th path) that is put in the run's order
    /// with its path: the second vector is as long as the run's paths, and holds
    /// `None` for a path whose report gave fewer values than paths.
    #[allow(clippy::type_complexity)]
    pub fn from_owned_reports_carrying<T>(
        reports: Vec<(RegionReport, Vec<T>)>,
    ) -> Result<(Run, Vec<Option<T>>), AggregateError> {
        let (reports, carried): (Vec<RegionReport>, Vec<Vec<T>>) = reports.into_iter().unzip();
        let first = reports.first().ok_or(AggregateError::Empty)?;
        let (first_started, first_finished) = (first.started_at, first.finished_at);
        let mut regions = Run::regions_of(&reports);
        let started_at = reports
            .iter()
            .map(|r| r.started_at)
            .min()
            .unwrap_or(first_started);
        let finished_at = reports
            .iter()
            .map(|r| r.finished_at)
            .max()
            .unwrap_or(first_finished);
        let mut probers = BTreeMap::new();
        let mut paths = Vec::with_capacity(reports.iter().map(|r| r.paths.len()).sum());
        let mut beside: Vec<Option<T>> = Vec::with_capacity(paths.capacity());
        let index: std::collections::HashMap<String, usize> = regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        for (report, carried) in reports.into_iter().zip(carried) {
            let mut carried = carried.into_iter();
            beside.extend(report.paths.iter().map(|_| carried.next()));
            if probers
                .insert(report.region.clone(), report.prober)
                .is_some()
            {
                return Err(AggregateError::Duplicate(report.region));
            }
            if let Some(&i) = index.get(&report.region) {
                regions[i].reported = true;
            }
            for p in report.paths {
                if p.source != report.region {
                    return Err(AggregateError::ForeignPath {
                        region: report.region,
                        source_region: p.source,
                    });
                }
                paths.push(p);
            }
        }
        let order = path_order(&regions, &paths);
        put_in_order(order, &mut paths, &mut beside);
        let run = Run {
            schema: RUN_SCHEMA.to_string(),
            id: run_id(started_at),
            started_at,
            finished_at,
            regions,
            probers,
            paths,
            anomalies: Vec::new(),
        };
        Ok((run, beside))
    }

    /// A run of the given regions and paths (no prober health, no anomalies), for runs
    /// assembled from other sources; paths are put in the run's order.
    pub fn new(
        regions: Vec<RunRegion>,
        mut paths: Vec<PathEntry>,
        started_at: DateTime<Utc>,
    ) -> Run {
        sort_paths(&regions, &mut paths);
        Run {
            schema: RUN_SCHEMA.to_string(),
            id: run_id(started_at),
            started_at,
            finished_at: started_at,
            regions,
            probers: BTreeMap::new(),
            paths,
            anomalies: Vec::new(),
        }
    }

    /// Reads a run, rejecting other schemas and impossible values (see
    /// [`Run::check`]) with a clear error.
    pub fn read(path: &Path) -> Result<Run, ArtifactError> {
        let run: Run = artifact::read_versioned(path, "latmap.run/")?;
        run.check().map_err(|source| ArtifactError::Invalid {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(run)
    }

    /// Reads a run without its samples (`samples_us` left empty, see
    /// `report::without_samples`), checked as far as that allows: for outputs that
    /// show statistics only, with a fraction of the memory.
    pub fn read_without_samples(path: &Path) -> Result<Run, ArtifactError> {
        let run: Run =
            crate::report::without_samples(|| artifact::read_versioned(path, "latmap.run/"))?;
        run.check_without_samples()
            .map_err(|source| ArtifactError::Invalid {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(run)
    }

    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        artifact::write_json_atomic(path, self)
    }

    /// Writes the run atomically as [`Run::write`] would, except that its paths are
    /// the ones `paths` gives (each the artifact text of one path at depth 2, see
    /// `artifact::to_writer_at`) instead of `self.paths`: for a run whose paths are too
    /// many to hold with their samples, copied from elsewhere. The bytes are the same
    /// as `write` gives for a run holding those paths.
    pub fn write_with_paths(
        &self,
        path: &Path,
        paths: impl FnOnce(&mut artifact::ElementWriter<'_>) -> std::io::Result<()>,
    ) -> Result<(), ArtifactError> {
        // Every field of the run, so that a new one cannot be forgotten here.
        let Run {
            schema,
            id,
            started_at,
            finished_at,
            regions,
            probers,
            paths: _,
            anomalies,
        } = self;
        #[derive(Serialize)]
        struct Head<'r> {
            schema: &'r String,
            id: &'r String,
            started_at: &'r DateTime<Utc>,
            finished_at: &'r DateTime<Utc>,
            regions: &'r [RunRegion],
            probers: &'r BTreeMap<String, ProberHealth>,
            paths: [(); 0],
            anomalies: &'r [Anomaly],
        }
        let head = artifact::to_string(&Head {
            schema,
            id,
            started_at,
            finished_at,
            regions,
            probers,
            paths: [],
            anomalies,
        })
        .map_err(|source| ArtifactError::Write {
            path: path.to_path_buf(),
            source,
        })?;
        artifact::write_atomic_spliced(path, &head, "paths", paths)
    }

    /// The first path from `source` to `target` of `kind`, if measured.
    pub fn path(
        &self,
        source: &str,
        target: &str,
        kind: crate::config::ProbeKind,
    ) -> Option<&PathEntry> {
        self.paths
            .iter()
            .find(|p| p.source == source && p.target == target && p.kind == kind)
    }
}

impl Versioned for Run {
    fn schema(&self) -> &str {
        &self.schema
    }
}

/// Orders paths by source region, target region (in `regions` order), kind and target,
/// in place.
fn sort_paths(regions: &[RunRegion], paths: &mut [PathEntry]) {
    let order = path_order(regions, paths);
    put_in_order::<()>(order, paths, &mut []);
}

/// Puts `paths` (and what is `beside` them, when as long) in `order`: position k
/// takes the path at `order[k]`. Follows each cycle of the permutation, swapping, so
/// that a million paths are never copied.
fn put_in_order<T>(mut order: Vec<usize>, paths: &mut [PathEntry], beside: &mut [T]) {
    let carry = beside.len() == paths.len();
    for k in 0..order.len() {
        if order[k] == k {
            continue;
        }
        let mut at = k;
        loop {
            let from = order[at];
            order[at] = at;
            if from == k {
                break;
            }
            paths.swap(at, from);
            if carry {
                beside.swap(at, from);
            }
            at = from;
        }
    }
}

/// The run's order of `paths` (by source region, target region in `regions` order,
/// kind and target) as indices into `paths`: the one order of paths in a run, for
/// those who write a run's paths from elsewhere.
pub fn path_order(regions: &[RunRegion], paths: &[PathEntry]) -> Vec<usize> {
    let rank: std::collections::HashMap<&str, usize> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let r = |name: &str| rank.get(name).copied().unwrap_or(usize::MAX);
    let keys: Vec<(usize, usize, crate::config::ProbeKind)> = paths
        .iter()
        .map(|p| (r(&p.source), r(&p.target), p.kind))
        .collect();
    let mut idx: Vec<usize> = (0..paths.len()).collect();
    // Ties (none in a checked run) keep their order: the sort is deterministic.
    idx.sort_unstable_by(|&a, &b| {
        keys[a]
            .cmp(&keys[b])
            .then_with(|| paths[a].target_spec.cmp(&paths[b].target_spec))
            .then(a.cmp(&b))
    });
    idx
}

/// A run id: the start time, to the second, and a random suffix.
/// Whether `candidate` stands for its (source, target, kind) better than `current`:
/// of several targets of one region, the path with the most replies stands for the
/// pair, and of equals the first in the run's order. The graph, the heatmap and the
/// exported metrics all show one path per pair by this rule.
pub fn stands_for_pair(candidate: &PathEntry, current: &PathEntry) -> bool {
    candidate.received > current.received
}

/// One path per `key` (a pair of regions and a kind, however the caller names them),
/// chosen by [`stands_for_pair`]; paths whose key is `None` are left out.
pub fn one_path_per_pair<'r, K: Ord>(
    paths: impl IntoIterator<Item = &'r PathEntry>,
    mut key: impl FnMut(&'r PathEntry) -> Option<K>,
) -> BTreeMap<K, &'r PathEntry> {
    let mut chosen: BTreeMap<K, &'r PathEntry> = BTreeMap::new();
    for p in paths {
        let Some(k) = key(p) else { continue };
        let e = chosen.entry(k).or_insert(p);
        if stands_for_pair(p, e) {
            *e = p;
        }
    }
    chosen
}

fn run_id(started_at: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        started_at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProbeKind;

    #[test]
    fn a_region_is_where_its_own_report_or_most_reports_put_it() {
        use crate::config::Location;
        use crate::report::RegionInfo;
        let at = |lat: f64, lon: f64| Some(Location { lat, lon });
        let listing = |me: &str, places: &[(&str, Option<Location>)]| RegionReport {
            region: me.into(),
            regions: places
                .iter()
                .map(|(name, location)| RegionInfo {
                    name: name.to_string(),
                    location: *location,
                })
                .collect(),
            ..report(me, &[])
        };
        // b's report moves c to the South Pole and says d is elsewhere than the others.
        let a = listing(
            "a",
            &[
                ("a", at(1.0, 1.0)),
                ("c", at(7.0, 7.0)),
                ("d", at(3.0, 3.0)),
            ],
        );
        let b = listing(
            "b",
            &[
                ("b", at(2.0, 2.0)),
                ("c", at(-89.0, 179.0)),
                ("d", at(9.0, 9.0)),
            ],
        );
        let c = listing("c", &[("c", at(7.0, 7.0)), ("d", at(3.0, 3.0))]);
        // e is given two places, once each: the smaller wins, whatever the order.
        let e1 = listing("a", &[("e", at(5.0, 0.0))]);
        let e2 = listing("b", &[("e", at(4.0, 9.0))]);
        let place = |reports: &[RegionReport], name: &str| {
            Run::regions_of(reports)
                .into_iter()
                .find(|r| r.name == name)
                .and_then(|r| r.location)
                .map(|l| (l.lat, l.lon))
        };
        for order in [
            vec![a.clone(), b.clone(), c.clone()],
            vec![b.clone(), a.clone(), c.clone()],
            vec![c.clone(), b.clone(), a.clone()],
        ] {
            assert_eq!(place(&order, "c"), Some((7.0, 7.0)), "its own report");
            assert_eq!(place(&order, "d"), Some((3.0, 3.0)), "most reports");
            assert_eq!(place(&order, "b"), Some((2.0, 2.0)));
        }
        // Without c's own report, two against one still put it right.
        let d = listing("d", &[("c", at(7.0, 7.0))]);
        assert_eq!(place(&[b.clone(), a.clone(), d], "c"), Some((7.0, 7.0)));
        assert_eq!(place(&[e1.clone(), e2.clone()], "e"), Some((4.0, 9.0)));
        assert_eq!(place(&[e2, e1], "e"), Some((4.0, 9.0)));
    }

    fn report(region: &str, targets: &[&str]) -> RegionReport {
        let t = chrono::DateTime::from_timestamp(1_795_000_000, 5).unwrap();
        RegionReport {
            schema: crate::report::REPORT_SCHEMA.into(),
            region: region.into(),
            started_at: t,
            finished_at: t,
            regions: ["a", "b", "c"]
                .iter()
                .map(|n| crate::report::RegionInfo {
                    name: n.to_string(),
                    location: None,
                })
                .collect(),
            prober: ProberHealth::default(),
            paths: targets
                .iter()
                .rev()
                .flat_map(|t| {
                    [ProbeKind::Tcp, ProbeKind::Udp].map(|k| {
                        PathEntry::from_samples(region, t, k, "h:1", vec![Some(7), None, Some(9)])
                    })
                })
                .collect(),
        }
    }

    #[test]
    fn values_carried_beside_paths_follow_them_into_the_run_order() {
        // Each path carries its own (source, target, kind); the second report gives
        // one value fewer than it has paths.
        let tag = |p: &PathEntry| format!("{} {} {:?}", p.source, p.target, p.kind);
        let c = report("c", &["a", "b"]);
        let a = report("a", &["b", "c"]);
        let c_tags: Vec<String> = c.paths.iter().map(tag).collect();
        let mut a_tags: Vec<String> = a.paths.iter().map(tag).collect();
        let short = a_tags.pop().unwrap();
        let (run, beside) =
            Run::from_owned_reports_carrying(vec![(c, c_tags), (a, a_tags)]).unwrap();
        assert_eq!(beside.len(), run.paths.len());
        let mut missing = 0;
        for (p, v) in run.paths.iter().zip(&beside) {
            match v {
                Some(v) => assert_eq!(v, &tag(p)),
                None => {
                    assert_eq!(tag(p), short);
                    missing += 1;
                }
            }
        }
        assert_eq!(missing, 1);
        let plain =
            Run::from_owned_reports(vec![report("c", &["a", "b"]), report("a", &["b", "c"])]);
        assert_eq!(plain.unwrap().paths, run.paths);
    }

    #[test]
    fn a_run_written_from_copied_paths_is_the_run_written_whole() {
        let reports = [report("c", &["a", "b"]), report("a", &["b", "c"])];
        let mut run = Run::from_reports(&reports).unwrap();
        run.id = "20261126T050000Z".into();
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.json");
        run.write(&whole).unwrap();
        // Each report's paths as its file holds them, copied in the run's order.
        let copied = dir.path().join("copied.json");
        type Part = (Vec<u8>, Vec<std::ops::Range<usize>>, Vec<usize>);
        let parts: Vec<Part> = reports
            .iter()
            .map(|r| {
                let (bytes, ranges) = r.to_artifact().unwrap();
                let order = path_order(&run.regions, &r.paths);
                (bytes, ranges, order)
            })
            .collect();
        let rank = |r: &RegionReport| run.regions.iter().position(|x| x.name == r.region);
        let mut idx: Vec<usize> = (0..reports.len()).collect();
        idx.sort_by_key(|&i| rank(&reports[i]));
        run.write_with_paths(&copied, |out| {
            for &i in &idx {
                let (bytes, ranges, order) = &parts[i];
                for &k in order {
                    out.element(&bytes[ranges[k].clone()])?;
                }
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            std::fs::read(&copied).unwrap(),
            std::fs::read(&whole).unwrap()
        );
        // And with no paths at all.
        let mut empty = run.clone();
        empty.paths.clear();
        empty.write(&whole).unwrap();
        empty.write_with_paths(&copied, |_| Ok(())).unwrap();
        assert_eq!(
            std::fs::read(&copied).unwrap(),
            std::fs::read(&whole).unwrap()
        );
    }

    #[test]
    fn a_report_in_the_artifact_format_says_where_its_paths_are() {
        let r = report("a", &["b", "c"]);
        let (bytes, ranges) = r.to_artifact().unwrap();
        let mut want = crate::artifact::to_string(&r).unwrap().into_bytes();
        want.push(b'\n');
        assert_eq!(bytes, want);
        assert_eq!(ranges.len(), r.paths.len());
        for (range, p) in ranges.iter().zip(&r.paths) {
            let back: PathEntry = serde_json::from_slice(&bytes[range.clone()]).unwrap();
            assert_eq!(&back, p);
        }
        let mut none = r.clone();
        none.paths.clear();
        let (bytes, ranges) = none.to_artifact().unwrap();
        let mut want = crate::artifact::to_string(&none).unwrap().into_bytes();
        want.push(b'\n');
        assert_eq!(bytes, want);
        assert!(ranges.is_empty());
    }

    #[test]
    fn paths_are_sorted_in_place_in_the_run_order() {
        let run = Run::from_reports(&[report("b", &["a", "c"]), report("a", &["c", "b"])]).unwrap();
        let keys: Vec<(String, String, ProbeKind)> = run
            .paths
            .iter()
            .map(|p| (p.source.clone(), p.target.clone(), p.kind))
            .collect();
        let names: Vec<&str> = run.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let want = [
            ("a", "b", ProbeKind::Udp),
            ("a", "b", ProbeKind::Tcp),
            ("a", "c", ProbeKind::Udp),
            ("a", "c", ProbeKind::Tcp),
            ("b", "a", ProbeKind::Udp),
            ("b", "a", ProbeKind::Tcp),
            ("b", "c", ProbeKind::Udp),
            ("b", "c", ProbeKind::Tcp),
        ];
        let mut sorted_want: Vec<(String, String, ProbeKind)> = want
            .iter()
            .map(|(s, t, k)| (s.to_string(), t.to_string(), *k))
            .collect();
        sorted_want.sort_by_key(|(s, t, k)| (s.clone(), t.clone(), *k));
        assert_eq!(keys, sorted_want);
    }
}
