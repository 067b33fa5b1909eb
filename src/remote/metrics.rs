//! The aggregator's `/metrics`: Prometheus text exposition format 0.0.4, written by
//! hand (a few gauges and counters do not need a client library).
//!
//! Path gauges and anomaly counts describe the latest assembled run, kept as a compact
//! [`Latest`] (a few numbers per path, not the run); the counters count since the
//! server started. Owns the counters and the text format only.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::{DetectorId, ProbeKind};
use crate::report::PathEntry;
use crate::run::{Run, Severity};

/// Why pushes were refused; the values of `latmap_reports_rejected_total{reason}`.
pub const REJECT_REASONS: [&str; 9] = [
    "unauthorized",
    "too_large",
    "unsupported_media_type",
    "malformed",
    "invalid",
    "conflict",
    "expired",
    "busy",
    "timeout",
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub assembled: AtomicU64,
    pub assembly_failures: AtomicU64,
    /// Sweeps waiting to be assembled (set by the assembler).
    pub pending: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    /// Unix time of each region's newest accepted report.
    last_report: Mutex<BTreeMap<String, f64>>,
}

impl Counters {
    pub fn reject(&self, reason: &'static str) {
        let mut m = self.rejected.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(reason).or_insert(0) += 1;
    }

    /// Records a report of `region` at `unix` seconds (keeps the newest).
    pub fn reported(&self, region: &str, unix: f64) {
        let mut m = self.last_report.lock().unwrap_or_else(|p| p.into_inner());
        let e = m.entry(region.to_string()).or_insert(unix);
        *e = e.max(unix);
    }
}

use crate::render::escape::prometheus_label as escape;

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// What `/metrics` shows of the latest run: per (source, target, kind) the p50, p95
/// and loss of the path with the most replies (so every label set appears once), the
/// anomaly counts and the regions. Built once when a run is published; about 40
/// bytes per path, where the run with its samples holds hundreds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    pub id: String,
    /// The run's region names; paths refer to them by index.
    names: Vec<String>,
    paths: Vec<LatestPath>,
    anomalies: BTreeMap<(DetectorId, Severity), u64>,
    reported: usize,
    missing: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct LatestPath {
    source: u32,
    target: u32,
    kind: ProbeKind,
    p50_us: Option<u64>,
    p95_us: Option<u64>,
    loss: Option<f64>,
}

impl Latest {
    pub fn of(id: &str, run: &Run) -> Latest {
        let index: std::collections::HashMap<&str, u32> = run
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i as u32))
            .collect();
        let mut best: BTreeMap<(u32, u32, ProbeKind), &PathEntry> = BTreeMap::new();
        for p in &run.paths {
            let (Some(&s), Some(&t)) = (index.get(p.source.as_str()), index.get(p.target.as_str()))
            else {
                continue;
            };
            let e = best.entry((s, t, p.kind)).or_insert(p);
            if p.received > e.received {
                *e = p;
            }
        }
        let paths = best
            .into_iter()
            .map(|((source, target, kind), p)| LatestPath {
                source,
                target,
                kind,
                p50_us: p.rtt_us.map(|r| r.p50),
                p95_us: p.rtt_us.map(|r| r.p95),
                loss: p.loss,
            })
            .collect();
        let mut anomalies = BTreeMap::new();
        for d in DetectorId::ALL {
            for s in [Severity::Warning, Severity::Critical] {
                anomalies.insert((d, s), 0);
            }
        }
        for a in &run.anomalies {
            *anomalies.entry((a.detector, a.severity)).or_insert(0) += 1;
        }
        let reported = run.regions.iter().filter(|r| r.reported).count();
        Latest {
            id: id.to_string(),
            names: run.regions.iter().map(|r| r.name.clone()).collect(),
            paths,
            anomalies,
            reported,
            missing: run.regions.len() - reported,
        }
    }
}

/// A path's value in a gauge.
type PathValue = fn(&LatestPath) -> Option<f64>;

/// The exposition of `counters` and the `latest` run.
pub fn render(counters: &Counters, latest: Option<&Latest>) -> String {
    let mut out = String::new();
    let gauges: [(&str, &str, PathValue); 3] = [
        (
            "latmap_path_rtt_p50_seconds",
            "Median round-trip time of the path in the latest run.",
            |p| p.p50_us.map(|v| v as f64 / 1e6),
        ),
        (
            "latmap_path_rtt_p95_seconds",
            "95th percentile round-trip time of the path in the latest run.",
            |p| p.p95_us.map(|v| v as f64 / 1e6),
        ),
        (
            "latmap_path_loss_ratio",
            "Share of probes without reply on the path in the latest run (0 to 1).",
            |p| p.loss,
        ),
    ];
    fn name(l: &Latest, i: u32) -> &str {
        l.names.get(i as usize).map_or("", String::as_str)
    }
    for (metric, help, value) in gauges {
        header(&mut out, metric, "gauge", help);
        if let Some(l) = latest {
            for p in &l.paths {
                if let Some(v) = value(p) {
                    sample(
                        &mut out,
                        metric,
                        &[
                            ("source", name(l, p.source)),
                            ("target", name(l, p.target)),
                            ("kind", p.kind.as_str()),
                        ],
                        v,
                    );
                }
            }
        }
    }
    header(
        &mut out,
        "latmap_anomalies",
        "gauge",
        "Findings in the latest run, by detector and severity.",
    );
    if let Some(l) = latest {
        for ((d, s), n) in &l.anomalies {
            sample(
                &mut out,
                "latmap_anomalies",
                &[("detector", d.as_str()), ("severity", s.as_str())],
                *n as f64,
            );
        }
    }
    header(
        &mut out,
        "latmap_latest_run_timestamp_seconds",
        "gauge",
        "Epoch of the latest assembled run (Unix time).",
    );
    if let Some(l) = latest {
        if let Some(t) = super::wire::parse_run_id(&l.id) {
            sample(
                &mut out,
                "latmap_latest_run_timestamp_seconds",
                &[],
                t.timestamp() as f64,
            );
        }
        header(
            &mut out,
            "latmap_latest_run_regions",
            "gauge",
            "Regions of the latest run, by whether they reported.",
        );
        sample(
            &mut out,
            "latmap_latest_run_regions",
            &[("reported", "true")],
            l.reported as f64,
        );
        sample(
            &mut out,
            "latmap_latest_run_regions",
            &[("reported", "false")],
            l.missing as f64,
        );
    }
    header(
        &mut out,
        "latmap_assembly_failures_total",
        "counter",
        "Attempts to assemble a run that failed (each is retried with backoff; the log names the cause).",
    );
    let n = counters.assembly_failures.load(Ordering::Relaxed) as f64;
    sample(&mut out, "latmap_assembly_failures_total", &[], n);
    header(
        &mut out,
        "latmap_runs_pending",
        "gauge",
        "Sweeps with stored reports whose run is not assembled yet (or is behind its reports).",
    );
    let n = counters.pending.load(Ordering::Relaxed) as f64;
    sample(&mut out, "latmap_runs_pending", &[], n);
    header(
        &mut out,
        "latmap_agent_last_report_timestamp_seconds",
        "gauge",
        "When the server last accepted a report of the region's agent (Unix time).",
    );
    let last = counters
        .last_report
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (region, t) in last {
        sample(
            &mut out,
            "latmap_agent_last_report_timestamp_seconds",
            &[("region", &region)],
            t,
        );
    }
    header(
        &mut out,
        "latmap_reports_received_total",
        "counter",
        "Region reports accepted and stored since the server started.",
    );
    let n = counters.received.load(Ordering::Relaxed) as f64;
    sample(&mut out, "latmap_reports_received_total", &[], n);
    header(
        &mut out,
        "latmap_reports_duplicate_total",
        "counter",
        "Resent region reports acknowledged without storing them again.",
    );
    let n = counters.duplicates.load(Ordering::Relaxed) as f64;
    sample(&mut out, "latmap_reports_duplicate_total", &[], n);
    header(
        &mut out,
        "latmap_reports_rejected_total",
        "counter",
        "Pushes refused since the server started, by reason.",
    );
    let rejected = counters
        .rejected
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for reason in REJECT_REASONS {
        let n = rejected.get(reason).copied().unwrap_or(0) as f64;
        sample(
            &mut out,
            "latmap_reports_rejected_total",
            &[("reason", reason)],
            n,
        );
    }
    header(
        &mut out,
        "latmap_runs_assembled_total",
        "counter",
        "Runs assembled (or re-assembled after a late report) since the server started.",
    );
    let n = counters.assembled.load(Ordering::Relaxed) as f64;
    sample(&mut out, "latmap_runs_assembled_total", &[], n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_every_family_is_typed() {
        let c = Counters::default();
        c.reported("a\"b\\c\nd", 1.5);
        c.reject("invalid");
        let text = render(&c, None);
        assert!(
            text.contains(
                "latmap_agent_last_report_timestamp_seconds{region=\"a\\\"b\\\\c\\nd\"} 1.5"
            ),
            "{text}"
        );
        assert!(text.contains("latmap_reports_rejected_total{reason=\"invalid\"} 1"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }
}
