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
    /// `known`: the regions the server was configured with, if any; `newest`: the
    /// latest epoch the server accepts (its clock plus the allowed skew).
    pub fn validate(&self, known: Option<&[String]>, newest: DateTime<Utc>) -> Result<(), String> {
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
        check_epoch(self.epoch, newest)?;
        if self.report.started_at < self.epoch - START_SLACK {
            return Err(format!(
                "report.started_at {} is before the sweep's epoch {} (by more than the {} min a clock may step); a sweep starts at its epoch",
                self.report.started_at.to_rfc3339(),
                self.epoch.to_rfc3339(),
                START_SLACK.num_minutes()
            ));
        }
        if self.report.finished_at > newest {
            return Err(format!(
                "report.finished_at {} is later than the server's clock allows (at most {}, the server's time plus --max-skew); a report is pushed after its sweep finished",
                self.report.finished_at.to_rfc3339(),
                newest.to_rfc3339()
            ));
        }
        crate::config::RegionName::new(&self.region)
            .map_err(|problem| format!("region: {problem}"))?;
        if self.report.region != self.region {
            return Err(format!(
                "the push is for region {:?} but its report is of region {:?}",
                self.region, self.report.region
            ));
        }
        self.report
            .check(known)
            .map_err(|e| e.within("report.").to_string())
    }
}

/// How much earlier than its epoch a report may say its sweep started: an agent
/// waits for the epoch by its own clock and then probes, so only a step of that
/// clock (NTP at boot) can put the start before it. A start further back is forged
/// or broken, and a run's start is what the history files it under.
pub const START_SLACK: chrono::Duration = chrono::Duration::minutes(5);

/// Whether the server can take a sweep of `epoch`: one it could list (years 0 to
/// 9999, so that its run id is the 16 characters of [`run_dir_name`]) and not later
/// than `newest`, the server's clock plus the allowed skew. A report from further
/// in the future would become the latest run for good and outrank every real one.
pub fn check_epoch(epoch: DateTime<Utc>, newest: DateTime<Utc>) -> Result<(), String> {
    if parse_run_id(&run_dir_name(epoch)).is_none() {
        return Err(format!(
            "epoch {} is outside the years 0 to 9999; a sweep's epoch is the time it was scheduled",
            epoch.to_rfc3339()
        ));
    }
    if epoch > newest {
        return Err(format!(
            "epoch {} is later than the server's clock allows (at most {}, the server's time plus --max-skew); the agent's clock is wrong or the push is forged",
            epoch.to_rfc3339(),
            newest.to_rfc3339()
        ));
    }
    Ok(())
}

impl RunListing {
    /// The list entry of a run stored under `id`.
    pub fn of(id: &str, run: &crate::run::Run) -> Option<RunListing> {
        let regions: Vec<String> = run.regions.iter().map(|r| r.name.clone()).collect();
        let reported: Vec<String> = run
            .regions
            .iter()
            .filter(|r| r.reported)
            .map(|r| r.name.clone())
            .collect();
        Some(RunListing {
            id: id.to_string(),
            epoch: parse_run_id(id)?,
            complete: reported.len() == regions.len(),
            regions,
            reported,
            paths: run.paths.len(),
            anomalies: run.anomalies.len(),
        })
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
            regions: [region, "b"]
                .iter()
                .map(|n| RegionInfo {
                    name: n.to_string(),
                    location: None,
                })
                .collect(),
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

    fn far() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2027-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn validation_names_the_problem() {
        assert_eq!(push("a", "a").validate(None, far()), Ok(()));
        assert_eq!(push("a", "a").run_id(), "20261126T050000Z");
        let e = push("a", "x").validate(None, far()).unwrap_err();
        assert!(e.contains("has a path from \"x\""), "{e}");
        assert!(e.starts_with("report.paths[0].source: "), "{e}");
        let mut p = push("a", "a");
        p.region = "b".into();
        assert!(
            p.validate(None, far())
                .unwrap_err()
                .contains("its report is of")
        );
        let mut p = push("a", "a");
        p.schema = "latmap.push/2".into();
        assert!(
            p.validate(None, far())
                .unwrap_err()
                .contains("not supported")
        );
        let mut p = push("a", "a");
        p.epoch += chrono::TimeDelta::milliseconds(1);
        assert!(
            p.validate(None, far())
                .unwrap_err()
                .contains("whole second")
        );
        for bad in ["../x", ".hidden", "a/b", "", "a\u{202e}b", "x\u{1b}[2J"] {
            assert!(push(bad, bad).validate(None, far()).is_err(), "{bad:?}");
        }
        // The configuration's rule: readable names are fine.
        let p = push("Europe (Ireland)", "Europe (Ireland)");
        assert_eq!(p.validate(None, far()), Ok(()));
        let known = vec!["b".to_string()];
        assert!(push("a", "a").validate(Some(&known), far()).is_err());
    }

    #[test]
    fn epochs_must_be_listable_and_not_ahead_of_the_clock() {
        let now = DateTime::parse_from_rfc3339("2026-11-26T05:00:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let newest = now + chrono::TimeDelta::minutes(5);
        let mut p = push("a", "a");
        assert_eq!(p.validate(None, newest), Ok(()));
        for future in [
            "2999-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2026-11-26T05:06:00Z",
        ] {
            p.epoch = future.parse().unwrap();
            let e = p.validate(None, newest).unwrap_err();
            assert!(e.contains("later than the server's clock allows"), "{e}");
        }
        let year = |y: i32| {
            chrono::NaiveDate::from_ymd_opt(y, 1, 1)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
        };
        p.epoch = year(10000);
        let e = p.validate(None, year(10001)).unwrap_err();
        assert!(e.contains("outside the years 0 to 9999"), "{e}");
        p.epoch = year(-1);
        assert!(p.validate(None, newest).is_err());
    }

    #[test]
    fn a_sweep_starts_at_its_epoch_within_a_clock_step() {
        let mut p = push("a", "a");
        let epoch = p.epoch;
        for (start, ok) in [
            (epoch, true),
            (epoch + chrono::TimeDelta::seconds(40), true),
            (epoch - chrono::TimeDelta::seconds(299), true),
            (epoch - chrono::TimeDelta::seconds(301), false),
            ("2001-01-01T00:00:00Z".parse().unwrap(), false),
        ] {
            p.report.started_at = start;
            p.report.finished_at = start.max(epoch);
            let got = p.validate(None, far());
            assert_eq!(got.is_ok(), ok, "{start}: {got:?}");
            if let Err(e) = got {
                assert!(e.starts_with("report.started_at"), "{e}");
            }
        }
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
