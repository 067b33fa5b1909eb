//! What the analysis stage stores in a run: [`Anomaly`], its [`Severity`] and its
//! [`Subject`] (a path or a region).
//!
//! Only the data and how it reads; the detectors that produce anomalies live in the
//! later `anomaly` module, so that a run can be read without them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{DetectorId, ProbeKind};

/// How bad a finding is. `Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something is wrong or could be better; look at it.
    Warning,
    /// Traffic is hurt now: lost, unreachable, or an objective broken for most requests.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            other => Err(format!(
                "unknown severity `{other}`: use warning or critical"
            )),
        }
    }
}

/// Which of a region's paths a region finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The paths out of the region (its row of the matrix).
    Outgoing,
    /// The paths into the region (its column).
    Incoming,
    /// Both.
    Both,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outgoing => "outgoing",
            Direction::Incoming => "incoming",
            Direction::Both => "both",
        }
    }
}

/// What a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Subject {
    /// The directed path from `source` to `target`.
    Path { source: String, target: String },
    /// A region's outgoing or incoming paths as a whole.
    Region {
        region: String,
        direction: Direction,
    },
}

impl Subject {
    pub fn path(source: &str, target: &str) -> Subject {
        Subject::Path {
            source: source.to_string(),
            target: target.to_string(),
        }
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Subject::Path { source, target } => write!(f, "{source} → {target}"),
            Subject::Region { region, direction } => write!(f, "{region} ({})", direction.as_str()),
        }
    }
}

/// The unit of an anomaly's `value` and `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Microseconds (RTTs, differences of RTTs, jitter).
    Us,
    /// A ratio from 0 to 1 (loss, a share of paths).
    Ratio,
    /// A multiple (RTT over the fiber bound).
    Factor,
}

impl Unit {
    /// `value` in this unit for people: `12.3 ms`, `4.1%`, `3.16x`.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::Us => format!("{} ms", crate::units::us_as_ms(value)),
            Unit::Ratio => {
                let pct = value * 100.0;
                if pct == 0.0 || pct.abs() >= 10.0 {
                    format!("{pct:.0}%")
                } else if pct.abs() >= 0.1 {
                    format!("{pct:.1}%")
                } else {
                    format!("{pct:.2}%")
                }
            }
            Unit::Factor => format!("{value:.2}x"),
        }
    }
}

/// One finding of the analysis stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// The detector that raised it.
    pub detector: DetectorId,
    pub severity: Severity,
    /// The probe kind of the paths it is about.
    pub kind: ProbeKind,
    pub subject: Subject,
    /// The measured quantity the detector compared (in `unit`).
    pub value: f64,
    /// The limit it crossed (in `unit`).
    pub threshold: f64,
    pub unit: Unit,
    /// One sentence a person can act on.
    pub message: String,
    /// `detour`: the region to relay through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay: Option<String>,
    /// `region`: the path findings this region finding explains (not listed apart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub explains: Vec<Anomaly>,
}

impl Anomaly {
    /// Whether this finding, or one it explains, is at least `level`.
    pub fn reaches(&self, level: Severity) -> bool {
        self.severity >= level || self.explains.iter().any(|a| a.reaches(level))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Warning < Severity::Critical);
        assert_eq!("critical".parse::<Severity>(), Ok(Severity::Critical));
        assert!("fatal".parse::<Severity>().is_err());
    }

    #[test]
    fn an_anomaly_reads_back_as_written() {
        let region = Anomaly {
            detector: DetectorId::Region,
            severity: Severity::Critical,
            kind: ProbeKind::Udp,
            subject: Subject::Region {
                region: "b".into(),
                direction: Direction::Outgoing,
            },
            value: 1.0,
            threshold: 0.5,
            unit: Unit::Ratio,
            message: "m".into(),
            relay: None,
            explains: vec![Anomaly {
                detector: DetectorId::Detour,
                severity: Severity::Warning,
                kind: ProbeKind::Udp,
                subject: Subject::path("b", "a"),
                value: 78000.0,
                threshold: 46000.0,
                unit: Unit::Us,
                message: "n".into(),
                relay: Some("c".into()),
                explains: Vec::new(),
            }],
        };
        let text = serde_json::to_string(&region).unwrap();
        assert!(
            text.contains(r#""subject":{"type":"region","region":"b","direction":"outgoing"}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""subject":{"type":"path","source":"b","target":"a"}"#),
            "{text}"
        );
        assert!(!text.contains("\"relay\":null"), "{text}");
        let back: Anomaly = serde_json::from_str(&text).unwrap();
        assert_eq!(back, region);
        assert!(back.reaches(Severity::Critical));
        assert!(!back.explains[0].reaches(Severity::Critical));
    }

    #[test]
    fn a_run_skips_findings_of_unknown_detectors() {
        let run = r#"{"schema": "latmap.run/1", "id": "x", "started_at": "1970-01-01T00:00:00Z",
            "finished_at": "1970-01-01T00:00:00Z", "regions": [], "probers": {}, "paths": [],
            "anomalies": [
              {"detector": "from-the-future", "severity": "warning", "kind": "udp",
               "subject": {"type": "path", "source": "a", "target": "b"},
               "value": 1.0, "threshold": 1.0, "unit": "ratio", "message": "m"},
              {"detector": "loss", "severity": "critical", "kind": "udp",
               "subject": {"type": "path", "source": "a", "target": "b"},
               "value": 0.2, "threshold": 0.01, "unit": "ratio", "message": "n",
               "new_field": true}
            ]}"#;
        let run: crate::run::Run = serde_json::from_str(run).unwrap();
        assert_eq!(run.anomalies.len(), 1);
        assert_eq!(run.anomalies[0].detector, DetectorId::Loss);
        // Without the key: none.
        let old = r#"{"schema": "latmap.run/1", "id": "x", "started_at": "1970-01-01T00:00:00Z",
            "finished_at": "1970-01-01T00:00:00Z", "regions": [], "probers": {}, "paths": []}"#;
        let run: crate::run::Run = serde_json::from_str(old).unwrap();
        assert!(run.anomalies.is_empty());
    }

    #[test]
    fn units_format_for_people() {
        assert_eq!(Unit::Us.format(233_456.0), "233 ms");
        assert_eq!(Unit::Us.format(5_040.0), "5.0 ms");
        assert_eq!(Unit::Ratio.format(0.05), "5.0%");
        assert_eq!(Unit::Ratio.format(0.001), "0.1%");
        assert_eq!(Unit::Ratio.format(0.0005), "0.05%");
        assert_eq!(Unit::Ratio.format(1.0), "100%");
        assert_eq!(Unit::Factor.format(3.1567), "3.16x");
    }
}
