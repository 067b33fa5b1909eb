//! Paths' histories as documents: JSON (`latmap.history/1`) and CSV, one point per run.
//! What `latmap history --format json|csv` prints and `GET /v1/history` serves; JSON
//! from a server is checked as strictly as a run file before it is drawn.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{PathKey, Point};
use crate::config::{DetectorId, ProbeKind};
use crate::run::Severity;

/// The schema name of the JSON document.
pub const SCHEMA: &str = "latmap.history/1";

/// Paths' histories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Doc {
    pub schema: String,
    pub paths: Vec<PathSeries>,
}

/// One path's history, oldest run first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSeries {
    pub source: String,
    pub target: String,
    pub kind: ProbeKind,
    pub points: Vec<PointDoc>,
}

/// One run of a path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointDoc {
    /// When the run started (UTC).
    pub at: DateTime<Utc>,
    /// The run's id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    pub sent: u32,
    pub received: u32,
    /// `1 − received / sent`; `null` when nothing was sent.
    pub loss: Option<f64>,
    /// The RTT's quantiles in µs; `null` when nothing came back.
    pub rtt_us: Option<Quantiles>,
    /// The run's findings on the path.
    pub findings: Vec<FindingDoc>,
    /// The path's prober lagged: its figures were not judged.
    pub lagged: bool,
}

/// A run's RTT quantiles on a path, µs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quantiles {
    pub min: u32,
    pub p50: u32,
    pub p90: u32,
    pub p95: u32,
    pub p99: u32,
    pub max: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FindingDoc {
    pub detector: DetectorId,
    pub severity: Severity,
}

/// Why a history document was refused: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DocError {
    /// The JSON path of the value, e.g. `paths[0].points[3].rtt_us`.
    pub field: String,
    pub reason: String,
}

impl PointDoc {
    pub fn of(p: &Point, run: Option<&str>) -> PointDoc {
        PointDoc {
            at: p.at,
            run: run.map(str::to_string),
            sent: p.sent,
            received: p.received,
            // Six decimals: 0.1, not 0.09999999999999998.
            loss: p.loss().map(|l| (l * 1e6).round() / 1e6),
            rtt_us: p.rtt_us.map(|q| Quantiles {
                min: q[0],
                p50: q[1],
                p90: q[2],
                p95: q[3],
                p99: q[4],
                max: q[5],
            }),
            findings: p
                .findings
                .iter()
                .map(|&(detector, severity)| FindingDoc { detector, severity })
                .collect(),
            lagged: p.lagged,
        }
    }

    /// The point, once its values are possible.
    fn point(&self, field: &str) -> Result<Point, DocError> {
        let bad = |f: &str, reason: String| DocError {
            field: format!("{field}.{f}"),
            reason,
        };
        if self.received > self.sent {
            return Err(bad(
                "received",
                format!("{} replies to {} probes", self.received, self.sent),
            ));
        }
        let loss = (self.sent > 0).then(|| 1.0 - f64::from(self.received) / f64::from(self.sent));
        match (self.loss, loss) {
            (None, None) => {}
            (Some(a), Some(b)) if (a - b).abs() < 1e-6 => {}
            (a, b) => {
                return Err(bad(
                    "loss",
                    format!(
                        "{a:?} does not match {} of {} probes answered ({b:?})",
                        self.received, self.sent
                    ),
                ));
            }
        }
        let rtt_us = match self.rtt_us {
            None => {
                if self.received > 0 {
                    return Err(bad("rtt_us", "missing although replies came back".into()));
                }
                None
            }
            Some(q) => {
                let v = [q.min, q.p50, q.p90, q.p95, q.p99, q.max];
                if self.received == 0 {
                    return Err(bad("rtt_us", "present although no reply came back".into()));
                }
                if v.windows(2).any(|w| w[0] > w[1]) || q.max == u32::MAX {
                    return Err(bad(
                        "rtt_us",
                        format!("the quantiles must rise from min to max, got {v:?}"),
                    ));
                }
                Some(v)
            }
        };
        Ok(Point {
            at: self.at,
            sent: self.sent,
            received: self.received,
            rtt_us,
            findings: self
                .findings
                .iter()
                .map(|f| (f.detector, f.severity))
                .collect(),
            lagged: self.lagged,
        })
    }
}

impl PathSeries {
    /// `points` of `key`; `runs` names the runs by their start.
    pub fn of(
        key: &PathKey,
        points: &[Point],
        runs: &HashMap<DateTime<Utc>, String>,
    ) -> PathSeries {
        PathSeries {
            source: key.source.clone(),
            target: key.target.clone(),
            kind: key.kind,
            points: points
                .iter()
                .map(|p| PointDoc::of(p, runs.get(&p.at).map(String::as_str)))
                .collect(),
        }
    }

    pub fn key(&self) -> PathKey {
        PathKey {
            source: self.source.clone(),
            target: self.target.clone(),
            kind: self.kind,
        }
    }
}

impl Doc {
    pub fn new(paths: Vec<PathSeries>) -> Doc {
        Doc {
            schema: SCHEMA.to_string(),
            paths,
        }
    }

    /// Reads a document (from a server): its schema, and every point possible, in time
    /// order. Returns each path with its points.
    pub fn parse(text: &str) -> Result<Vec<(PathSeries, Vec<Point>)>, DocError> {
        let doc: Doc = serde_json::from_str(text).map_err(|e| DocError {
            field: format!("line {} column {}", e.line(), e.column()),
            reason: e.to_string(),
        })?;
        if doc.schema != SCHEMA {
            return Err(DocError {
                field: "schema".into(),
                reason: format!("{:?} is not {SCHEMA}", doc.schema),
            });
        }
        let mut out = Vec::with_capacity(doc.paths.len());
        for (i, p) in doc.paths.into_iter().enumerate() {
            let mut points = Vec::with_capacity(p.points.len());
            for (k, pt) in p.points.iter().enumerate() {
                let field = format!("paths[{i}].points[{k}]");
                let point = pt.point(&field)?;
                if points
                    .last()
                    .is_some_and(|prev: &Point| prev.at >= point.at)
                {
                    return Err(DocError {
                        field: format!("{field}.at"),
                        reason: "points must be in time order, one per run".into(),
                    });
                }
                points.push(point);
            }
            out.push((p, points));
        }
        Ok(out)
    }

    pub fn to_json(&self) -> String {
        // Plain data: serialising it cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// One row per path and run, with a header.
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec![
            "source", "target", "kind", "at", "run", "sent", "received", "loss",
        ];
        let q: Vec<String> = super::QUANTILES.iter().map(|q| format!("{q}_us")).collect();
        header.extend(q.iter().map(String::as_str));
        header.extend(["findings", "lagged"]);
        let mut rows = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
        for p in &self.paths {
            for pt in &p.points {
                let mut row = vec![
                    cell(&p.source),
                    cell(&p.target),
                    p.kind.to_string(),
                    pt.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    pt.run.as_deref().map(cell).unwrap_or_default(),
                    pt.sent.to_string(),
                    pt.received.to_string(),
                    pt.loss.map(|l| format!("{l:.6}")).unwrap_or_default(),
                ];
                match pt.rtt_us {
                    Some(q) => row
                        .extend([q.min, q.p50, q.p90, q.p95, q.p99, q.max].map(|v| v.to_string())),
                    None => row.extend(std::iter::repeat_n(String::new(), 6)),
                }
                row.push(
                    pt.findings
                        .iter()
                        .map(|f| format!("{}:{}", f.detector, f.severity))
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                row.push(pt.lagged.to_string());
                rows.push(row);
            }
        }
        for row in rows {
            // Writing to memory cannot fail.
            let _ = w.write_record(&row);
        }
        w.into_inner()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

/// Which paths' histories to read: one path (each of its kinds) or every path from and
/// to a region, optionally of one kind. What `latmap history` and `GET /v1/history`
/// ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Path { source: String, target: String },
    Region(String),
}

impl Selection {
    /// Whether path `k` is selected (and of `kind`, when given).
    pub fn matches(&self, k: &PathKey, kind: Option<ProbeKind>) -> bool {
        let which = match self {
            Selection::Path { source, target } => &k.source == source && &k.target == target,
            Selection::Region(r) => &k.source == r || &k.target == r,
        };
        which && kind.is_none_or(|want| k.kind == want)
    }

    /// The selection in words, for a message.
    pub fn describe(&self) -> String {
        match self {
            Selection::Path { source, target } => format!("the path {source} → {target}"),
            Selection::Region(r) => format!("a path from or to {r}"),
        }
    }
}

impl super::History {
    /// The selected paths' points since `since`, each with its series (run ids named).
    /// One path is looked up by its keys; a region's paths are found among all.
    pub fn select(
        &self,
        which: &Selection,
        kind: Option<ProbeKind>,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<(PathSeries, Vec<Point>)>, super::HistoryError> {
        let keys: Vec<PathKey> = match which {
            Selection::Path { source, target } => ProbeKind::ALL
                .iter()
                .filter(|k| kind.is_none_or(|want| **k == want))
                .map(|&kind| PathKey {
                    source: source.clone(),
                    target: target.clone(),
                    kind,
                })
                .filter(|k| self.knows(k))
                .collect(),
            Selection::Region(_) => self
                .paths()
                .into_iter()
                .filter(|k| which.matches(k, kind))
                .collect(),
        };
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let runs: HashMap<DateTime<Utc>, String> = self.runs()?.into_iter().collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            let points = self.path(&k, since)?;
            out.push((PathSeries::of(&k, &points, &runs), points));
        }
        Ok(out)
    }
}

/// A name from outside as a CSV cell: the csv writer quotes what needs quoting; a cell
/// that a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, a tab or a carriage
/// return first) gets a leading `'`.
fn cell(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(at: i64, sent: u32, received: u32, p50: u32) -> Point {
        Point {
            at: DateTime::from_timestamp(at, 0).unwrap(),
            sent,
            received,
            rtt_us: (received > 0).then(|| [p50 - 10, p50, p50 + 5, p50 + 8, p50 + 20, p50 + 40]),
            findings: vec![(DetectorId::Shift, Severity::Warning)],
            lagged: false,
        }
    }

    fn doc() -> Doc {
        let key = PathKey {
            source: "=a,\"x\"".into(),
            target: "b".into(),
            kind: ProbeKind::Udp,
        };
        let runs = HashMap::from([(point(60, 1, 1, 20).at, "r1".to_string())]);
        Doc::new(vec![PathSeries::of(
            &key,
            &[
                point(60, 10, 9, 100),
                point(120, 10, 0, 0),
                point(180, 0, 0, 0),
            ],
            &runs,
        )])
    }

    #[test]
    fn json_reads_back_as_the_points() {
        let d = doc();
        let back = Doc::parse(&d.to_json()).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].0, d.paths[0]);
        assert_eq!(back[0].1[0], point(60, 10, 9, 100));
        assert_eq!(back[0].1[1].rtt_us, None);
        assert_eq!(back[0].1[2].loss(), None);
    }

    #[test]
    fn impossible_points_are_refused_with_the_field() {
        let good = doc().to_json();
        let cases = [
            (
                "\"received\": 9",
                "\"received\": 11",
                "paths[0].points[0].received",
            ),
            ("\"p50\": 100", "\"p50\": 1", "paths[0].points[0].rtt_us"),
            (
                "\"schema\": \"latmap.history/1\"",
                "\"schema\": \"x\"",
                "schema",
            ),
            ("\"loss\": 0.1", "\"loss\": -3.5", "paths[0].points[0].loss"),
        ];
        for (from, to, field) in cases {
            assert!(good.contains(from), "{from}");
            let bad = good.replacen(from, to, 1);
            let e = Doc::parse(&bad).unwrap_err();
            assert_eq!(e.field, field, "{to}: {e}");
        }
        let later = good.replacen("1970-01-01T00:03:00Z", "1970-01-01T00:00:30Z", 1);
        assert_eq!(
            Doc::parse(&later).unwrap_err().field,
            "paths[0].points[2].at"
        );
        assert!(Doc::parse("{").is_err());
    }

    #[test]
    fn csv_quotes_names_and_defuses_formulas() {
        let text = doc().to_csv();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "source,target,kind,at,run,sent,received,loss,min_us,p50_us,p90_us,p95_us,p99_us,max_us,findings,lagged"
        );
        assert_eq!(
            lines.next().unwrap(),
            "\"'=a,\"\"x\"\"\",b,udp,1970-01-01T00:01:00.000Z,r1,10,9,0.100000,90,100,105,108,120,140,shift:warning,false"
        );
        assert_eq!(text.lines().count(), 4);
    }
}
