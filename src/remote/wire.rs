//! The push protocol between agents and the aggregator: the envelope an agent posts
//! (`latmap.push/1`), its validation, the acknowledgements and error bodies, and the
//! run ids of the API (an epoch's folder name, `20261126T050000Z`).
//!
//! Pure data and checks: no I/O, no HTTP.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::report::{REPORT_SCHEMA, RegionReport};
use crate::schedule::run_dir_name;

/// The schema tag of a push.
pub const PUSH_SCHEMA: &str = "latmap.push/1";

/// The path reports are posted to.
pub const REPORTS_PATH: &str = "/v1/reports";

/// One region's report of one sweep, as an agent posts it. The pair (epoch, region)
/// identifies it: a resend of the same pair is stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Push {
    pub schema: String,
    /// The sweep's epoch on the schedule (whole seconds, UTC); every region's report of
    /// one sweep carries the same epoch.
    pub epoch: DateTime<Utc>,
    pub region: String,
    pub report: RegionReport,
}

/// The server's answer to an accepted push.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// `stored`, or `duplicate` when the same report was already stored.
    pub status: String,
    /// The run the report belongs to.
    pub run: String,
    pub region: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// One run in `GET /v1/runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunListing {
    pub id: String,
    pub epoch: DateTime<Utc>,
    /// Every region of the run, and those that reported.
    pub regions: Vec<String>,
    pub reported: Vec<String>,
    /// Whether every region reported.
    pub complete: bool,
    pub paths: usize,
    pub anomalies: usize,
}

impl Push {
    pub fn new(epoch: DateTime<Utc>, report: RegionReport) -> Push {
        Push {
            schema: PUSH_SCHEMA.to_string(),
            epoch,
            region: report.region.clone(),
            report,
        }
    }

    /// The id of the run this push belongs to.
    pub fn run_id(&self) -> String {
        run_dir_name(self.epoch)
    }

    /// Checks what the server relies on; the error is a sentence for the sender.
    /// `known`: the regions the server was configured with, if any.
    pub fn validate(&self, known: Option<&[String]>) -> Result<(), String> {
        if !major_is_1(&self.schema, "latmap.push/") {
            return Err(format!(
                "schema {:?} is not supported; expected {PUSH_SCHEMA}",
                self.schema
            ));
        }
        if !major_is_1(&self.report.schema, "latmap.report/") {
            return Err(format!(
                "report schema {:?} is not supported; expected {REPORT_SCHEMA}",
                self.report.schema
            ));
        }
        if self.epoch.timestamp_subsec_nanos() != 0 {
            return Err(format!(
                "epoch {} is not a whole second",
                self.epoch.to_rfc3339()
            ));
        }
        valid_region_name(&self.region)?;
        if self.report.region != self.region {
            return Err(format!(
                "the push is for region {:?} but its report is of region {:?}",
                self.region, self.report.region
            ));
        }
        if let Some(p) = self.report.paths.iter().find(|p| p.source != self.region) {
            return Err(format!(
                "the report of region {:?} has a path from {:?}; a region reports only its own paths",
                self.region, p.source
            ));
        }
        for r in &self.report.regions {
            valid_region_name(&r.name)?;
        }
        if let Some(known) = known {
            if !known.iter().any(|k| k == &self.region) {
                return Err(format!(
                    "region {:?} is not in the server's configuration (known: {})",
                    self.region,
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }
}

/// Region names become file names on the server: letters, digits, `.`, `_`, `-`, at
/// most 64 characters, not starting with a dot.
fn valid_region_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "region name {name:?} is not allowed: use letters, digits, '.', '_' and '-' (at most 64, not starting with '.')"
        ))
    }
}

fn major_is_1(schema: &str, prefix: &str) -> bool {
    schema
        .strip_prefix(prefix)
        .and_then(|v| v.split('.').next())
        .is_some_and(|major| major == "1")
}

/// The epoch of a run id, only if `id` is exactly what [`run_dir_name`] writes
/// (so an id can never name another file).
pub fn parse_run_id(id: &str) -> Option<DateTime<Utc>> {
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let t = chrono::NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%SZ")
        .ok()?
        .and_utc();
    (run_dir_name(t) == id).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::ProberHealth;
    use crate::report::{PathEntry, RegionInfo};

    fn push(region: &str, source: &str) -> Push {
        let t = DateTime::parse_from_rfc3339("2026-11-26T05:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let report = RegionReport {
            schema: REPORT_SCHEMA.into(),
            region: region.into(),
            started_at: t,
            finished_at: t,
            regions: vec![RegionInfo {
                name: region.into(),
                location: None,
            }],
            prober: ProberHealth::default(),
            paths: vec![PathEntry::from_samples(
                source,
                "b",
                crate::config::ProbeKind::Udp,
                "127.0.0.1:1",
                vec![Some(1000)],
            )],
        };
        Push::new(t, report)
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(push("a", "a").validate(None), Ok(()));
        assert_eq!(push("a", "a").run_id(), "20261126T050000Z");
        let e = push("a", "x").validate(None).unwrap_err();
        assert!(e.contains("has a path from \"x\""), "{e}");
        let mut p = push("a", "a");
        p.region = "b".into();
        assert!(p.validate(None).unwrap_err().contains("its report is of"));
        let mut p = push("a", "a");
        p.schema = "latmap.push/2".into();
        assert!(p.validate(None).unwrap_err().contains("not supported"));
        let mut p = push("a", "a");
        p.epoch += chrono::TimeDelta::milliseconds(1);
        assert!(p.validate(None).unwrap_err().contains("whole second"));
        for bad in ["../x", ".hidden", "a/b", "", "é"] {
            assert!(push(bad, bad).validate(None).is_err(), "{bad:?}");
        }
        let known = vec!["b".to_string()];
        assert!(push("a", "a").validate(Some(&known)).is_err());
    }

    #[test]
    fn run_ids_are_strict() {
        assert!(parse_run_id("20261126T050000Z").is_some());
        for bad in [
            "20261126T050000",
            "../20261126T05",
            "20261126T050000Z/",
            "20261326T050000Z",
            "2026112ZT050000Z",
            "+2026112T050000Z",
            "latest",
        ] {
            assert_eq!(parse_run_id(bad), None, "{bad}");
        }
    }
}
