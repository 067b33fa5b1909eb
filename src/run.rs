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
        let first = reports.first().ok_or(AggregateError::Empty)?;
        let mut regions: Vec<RunRegion> = Vec::new();
        for report in reports {
            for r in report
                .regions
                .iter()
                .map(|r| (r.name.as_str(), r.location))
                .chain([(report.region.as_str(), None)])
            {
                match regions.iter_mut().find(|x| x.name == r.0) {
                    Some(existing) => {
                        if existing.location.is_none() {
                            existing.location = r.1;
                        }
                    }
                    None => regions.push(RunRegion {
                        name: r.0.to_string(),
                        location: r.1,
                        reported: false,
                    }),
                }
            }
        }
        let mut probers = BTreeMap::new();
        let mut paths = Vec::new();
        for report in reports {
            if probers
                .insert(report.region.clone(), report.prober.clone())
                .is_some()
            {
                return Err(AggregateError::Duplicate(report.region.clone()));
            }
            if let Some(r) = regions.iter_mut().find(|r| r.name == report.region) {
                r.reported = true;
            }
            for p in &report.paths {
                if p.source != report.region {
                    return Err(AggregateError::ForeignPath {
                        region: report.region.clone(),
                        source_region: p.source.clone(),
                    });
                }
                paths.push(p.clone());
            }
        }
        sort_paths(&regions, &mut paths);
        let started_at = reports
            .iter()
            .map(|r| r.started_at)
            .min()
            .unwrap_or(first.started_at);
        let finished_at = reports
            .iter()
            .map(|r| r.finished_at)
            .max()
            .unwrap_or(first.finished_at);
        Ok(Run {
            schema: RUN_SCHEMA.to_string(),
            id: run_id(started_at),
            started_at,
            finished_at,
            regions,
            probers,
            paths,
            anomalies: Vec::new(),
        })
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

    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        artifact::write_json_atomic(path, self)
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

/// Orders paths by source region, target region (in `regions` order), kind and target.
fn sort_paths(regions: &[RunRegion], paths: &mut [PathEntry]) {
    let order: std::collections::HashMap<&str, usize> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let rank = |name: &str| order.get(name).copied().unwrap_or(usize::MAX);
    paths.sort_by(|a, b| {
        (rank(&a.source), rank(&a.target), a.kind, &a.target_spec).cmp(&(
            rank(&b.source),
            rank(&b.target),
            b.kind,
            &b.target_spec,
        ))
    });
}

/// A run id: the start time, to the second, and a random suffix.
fn run_id(started_at: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        started_at.format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>() & 0xff_ffff
    )
}
