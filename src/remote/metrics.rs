//! The aggregator's `/metrics`: Prometheus text exposition format 0.0.4, written by
//! hand (a few gauges and counters do not need a client library).
//!
//! Path gauges and anomaly counts describe the latest assembled run; the counters
//! count since the server started. Owns the counters and the text format only.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::config::DetectorId;
use crate::report::PathEntry;
use crate::run::{Run, Severity};

/// Why pushes were refused; the values of `latmap_reports_rejected_total{reason}`.
pub const REJECT_REASONS: [&str; 6] = [
    "unauthorized",
    "too_large",
    "unsupported_media_type",
    "malformed",
    "invalid",
    "conflict",
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub assembled: AtomicU64,
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

/// The path shown per (source, target, kind): of several targets, the one with the
/// most replies, so every label set appears once.
fn paths_by_key(run: &Run) -> BTreeMap<(&str, &str, &str), &PathEntry> {
    let mut m: BTreeMap<(&str, &str, &str), &PathEntry> = BTreeMap::new();
    for p in &run.paths {
        let e = m
            .entry((p.source.as_str(), p.target.as_str(), p.kind.as_str()))
            .or_insert(p);
        if p.received > e.received {
            *e = p;
        }
    }
    m
}

/// A path's value in a gauge.
type PathValue = fn(&PathEntry) -> Option<f64>;

/// The exposition of `counters` and the `latest` run.
pub fn render(counters: &Counters, latest: Option<(&str, &Run)>) -> String {
    let mut out = String::new();
    let paths = latest.map(|(_, r)| paths_by_key(r)).unwrap_or_default();
    let gauges: [(&str, &str, PathValue); 3] = [
        (
            "latmap_path_rtt_p50_seconds",
            "Median round-trip time of the path in the latest run.",
            |p| p.rtt_us.as_ref().map(|r| r.p50 as f64 / 1e6),
        ),
        (
            "latmap_path_rtt_p95_seconds",
            "95th percentile round-trip time of the path in the latest run.",
            |p| p.rtt_us.as_ref().map(|r| r.p95 as f64 / 1e6),
        ),
        (
            "latmap_path_loss_ratio",
            "Share of probes without reply on the path in the latest run (0 to 1).",
            |p| p.loss,
        ),
    ];
    for (name, help, value) in gauges {
        header(&mut out, name, "gauge", help);
        for ((source, target, kind), p) in &paths {
            if let Some(v) = value(p) {
                sample(
                    &mut out,
                    name,
                    &[("source", source), ("target", target), ("kind", kind)],
                    v,
                );
            }
        }
    }
    header(
        &mut out,
        "latmap_anomalies",
        "gauge",
        "Findings in the latest run, by detector and severity.",
    );
    let mut counts: BTreeMap<(DetectorId, Severity), u64> = BTreeMap::new();
    if let Some((_, run)) = latest {
        for d in DetectorId::ALL {
            for s in [Severity::Warning, Severity::Critical] {
                counts.insert((d, s), 0);
            }
        }
        for a in &run.anomalies {
            *counts.entry((a.detector, a.severity)).or_insert(0) += 1;
        }
    }
    for ((d, s), n) in counts {
        sample(
            &mut out,
            "latmap_anomalies",
            &[("detector", d.as_str()), ("severity", s.as_str())],
            n as f64,
        );
    }
    header(
        &mut out,
        "latmap_latest_run_timestamp_seconds",
        "gauge",
        "Epoch of the latest assembled run (Unix time).",
    );
    if let Some((id, run)) = latest {
        if let Some(t) = super::wire::parse_run_id(id) {
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
        let reported = run.regions.iter().filter(|r| r.reported).count();
        let missing = run.regions.len() - reported;
        sample(
            &mut out,
            "latmap_latest_run_regions",
            &[("reported", "true")],
            reported as f64,
        );
        sample(
            &mut out,
            "latmap_latest_run_regions",
            &[("reported", "false")],
            missing as f64,
        );
    }
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
