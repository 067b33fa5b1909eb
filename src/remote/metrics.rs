//! The aggregator's `/metrics`: the Prometheus text exposition format 0.0.4, encoded
//! by `prometheus-client`.
//!
//! Path gauges, RTT histograms and anomaly counts describe the latest assembled run,
//! kept as a compact [`Latest`] (a few numbers and the bucket counts per path, not
//! the run) and encoded by a collector at each scrape; the counters count since the
//! server started. Owns the metric names, their help and the histogram buckets; the
//! refusal reasons are [`RejectReason`]'s.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::reject::RejectReason;
use crate::config::{DetectorId, ProbeKind};
use crate::graph::LatencyGraph;
use crate::report::PathEntry;
use crate::run::{Run, Severity};

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The most paths whose `latmap_path_rtt_seconds` is exported (23 series each):
/// 100 regions and one kind fit (9,900 paths, about 228,000 series). A larger run
/// exports its gauges only, and the log says so: its histograms would make a scrape of
/// many millions of series.
pub const MAX_HISTOGRAM_PATHS: usize = 10_000;

/// How many finite buckets `latmap_path_rtt_seconds` has.
pub const RTT_BUCKETS: usize = 20;

/// The upper bound of finite bucket `k` of `latmap_path_rtt_seconds`, in
/// microseconds: 50 µs doubling, 50 µs to 26.2144 s (smokeping_prober's buckets, so
/// dashboards made for it fit).
pub const fn rtt_bucket_us(k: usize) -> u64 {
    50 << k
}

/// The upper bounds of the finite buckets of `latmap_path_rtt_seconds`, in seconds.
pub fn rtt_buckets_seconds() -> [f64; RTT_BUCKETS] {
    std::array::from_fn(|k| rtt_bucket_us(k) as f64 / 1e6)
}

/// The RTT samples of one path, counted into the buckets of `latmap_path_rtt_seconds`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RttHistogram {
    /// Samples per bucket (not cumulative); the last counts those above every bound.
    counts: [u32; RTT_BUCKETS + 1],
    sum_us: u64,
}

impl RttHistogram {
    /// The replies among `samples_us` (lost probes are not observations).
    pub fn of(samples_us: &[Option<u64>]) -> RttHistogram {
        let mut h = RttHistogram::default();
        for &us in samples_us.iter().flatten() {
            let k = (0..RTT_BUCKETS)
                .find(|&k| us <= rtt_bucket_us(k))
                .unwrap_or(RTT_BUCKETS);
            h.counts[k] = h.counts[k].saturating_add(1);
            h.sum_us = h.sum_us.saturating_add(us);
        }
        h
    }

    /// How many samples were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&n| u64::from(n)).sum()
    }

    /// The histograms of every path of `paths`, in their order.
    pub fn of_paths(paths: &[PathEntry]) -> Vec<RttHistogram> {
        paths
            .iter()
            .map(|p| RttHistogram::of(&p.samples_us))
            .collect()
    }
}

/// A label value from outside latmap (a region name): control characters other than
/// the line feed (which the encoder escapes, with `\\` and `"`) become U+FFFD.
fn outside(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' {
                '\u{FFFD}'
            } else {
                c
            }
        })
        .collect()
}

type ReasonLabel = [(&'static str, RejectReason); 1];
type RegionLabel = [(&'static str, String); 1];

/// The server's counters, and the time of each region's newest report.
#[derive(Debug)]
pub struct Counters {
    pub received: Counter,
    pub duplicates: Counter,
    pub assembled: Counter,
    pub assembly_failures: Counter,
    /// Sweeps waiting to be assembled (set by the assembler).
    pub pending: Gauge,
    rejected: Family<ReasonLabel, Counter>,
    /// Unix time of each region's newest accepted report.
    last_report: Family<RegionLabel, Gauge<f64, AtomicU64>>,
    /// Held while a region's time is compared and set.
    reporting: Mutex<()>,
}

impl Default for Counters {
    fn default() -> Counters {
        let rejected = Family::default();
        // Every reason is exported from the start, at 0: a counter that appears only
        // after its first increment loses that increment to `rate()`.
        for reason in RejectReason::ALL {
            drop(rejected.get_or_create(&[("reason", reason)]));
        }
        Counters {
            received: Counter::default(),
            duplicates: Counter::default(),
            assembled: Counter::default(),
            assembly_failures: Counter::default(),
            pending: Gauge::default(),
            rejected,
            last_report: Family::default(),
            reporting: Mutex::new(()),
        }
    }
}

impl Counters {
    /// Counts a refused push.
    pub fn reject(&self, reason: RejectReason) {
        self.rejected.get_or_create(&[("reason", reason)]).inc();
    }

    /// Records a report of `region` at `unix` seconds (keeps the newest).
    pub fn reported(&self, region: &str, unix: f64) {
        let _guard = self.reporting.lock().unwrap_or_else(|p| p.into_inner());
        let g = self
            .last_report
            .get_or_create(&[("region", outside(region))]);
        // A new gauge reads 0.
        if unix > g.get() {
            g.set(unix);
        }
    }
}

/// What `/metrics` shows of the latest run: per (source, target, kind), the path the
/// graph takes for it (the address with the most replies, so every label set appears
/// once), its p50, p95, loss and RTT histogram; the anomaly counts and the regions.
/// Built once when a run is published; about 170 bytes per path, where the run with
/// its samples holds hundreds to thousands.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Latest {
    pub id: String,
    /// The run's region names; paths refer to them by index.
    names: Vec<String>,
    paths: Vec<LatestPath>,
    anomalies: Vec<((DetectorId, Severity), u64)>,
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
    rtt: Option<Box<RttHistogram>>,
}

impl Latest {
    /// The summary of `run`; `rtt` holds the histogram of each of `run.paths` (same
    /// order), or is shorter when they are not known (a run read without samples):
    /// the paths without one have no `latmap_path_rtt_seconds` series, nor has any
    /// path of a run of more than [`MAX_HISTOGRAM_PATHS`] paths.
    pub fn of(id: &str, run: &Run, rtt: &[Option<&RttHistogram>]) -> Latest {
        let base = run.paths.as_ptr().addr();
        let size = std::mem::size_of::<PathEntry>().max(1);
        let mut paths = Vec::new();
        for kind in LatencyGraph::kinds(run) {
            let graph = LatencyGraph::new(run, kind);
            for (i, j, edge) in graph.paths() {
                // The edge's entry is one of `run.paths`: its index is its offset.
                let at = std::ptr::from_ref(edge.entry).addr().wrapping_sub(base) / size;
                let p = edge.entry;
                paths.push(LatestPath {
                    source: i as u32,
                    target: j as u32,
                    kind,
                    p50_us: p.rtt_us.map(|r| r.p50),
                    p95_us: p.rtt_us.map(|r| r.p95),
                    loss: p.loss,
                    rtt: rtt.get(at).copied().flatten().cloned().map(Box::new),
                });
            }
        }
        paths.sort_by_key(|p| (p.source, p.target, p.kind));
        if paths.len() > MAX_HISTOGRAM_PATHS && paths.iter().any(|p| p.rtt.is_some()) {
            tracing::warn!(
                "run {id} has {} paths: /metrics leaves out latmap_path_rtt_seconds past {MAX_HISTOGRAM_PATHS} paths (it would be {} series); the p50, p95 and loss gauges are there",
                paths.len(),
                paths.len() * (RTT_BUCKETS + 3)
            );
            for p in &mut paths {
                p.rtt = None;
            }
        }
        let mut anomalies = std::collections::BTreeMap::new();
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
            names: run.regions.iter().map(|r| outside(&r.name)).collect(),
            paths,
            anomalies: anomalies.into_iter().collect(),
            reported,
            missing: run.regions.len() - reported,
        }
    }

    /// How many paths have an RTT histogram.
    pub fn histograms(&self) -> usize {
        self.paths.iter().filter(|p| p.rtt.is_some()).count()
    }
}

/// Encodes a [`Latest`] at each scrape.
#[derive(Debug)]
struct LatestRun(Arc<Latest>);

/// A path's value in a gauge.
type PathValue = fn(&LatestPath) -> Option<f64>;

impl Collector for LatestRun {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let l = &*self.0;
        let name = |i: u32| l.names.get(i as usize).map_or("", String::as_str);
        let labels = |p: &LatestPath| {
            [
                ("source", name(p.source)),
                ("target", name(p.target)),
                ("kind", p.kind.as_str()),
            ]
        };
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
        for (metric, help, value) in gauges {
            let mut m = encoder.encode_descriptor(metric, help, None, MetricType::Gauge)?;
            for p in &l.paths {
                if let Some(v) = value(p) {
                    let labels = labels(p);
                    ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        let bounds = rtt_buckets_seconds();
        let mut m = encoder.encode_descriptor(
            "latmap_path_rtt_seconds",
            "Round-trip times of the path's replies in the latest run (smokeping_prober's buckets: 50 us doubling).",
            None,
            MetricType::Histogram,
        )?;
        let mut buckets = [(0.0, 0u64); RTT_BUCKETS + 1];
        for p in &l.paths {
            let Some(h) = &p.rtt else { continue };
            for (k, b) in buckets.iter_mut().enumerate() {
                *b = (
                    bounds.get(k).copied().unwrap_or(f64::INFINITY),
                    u64::from(h.counts[k]),
                );
            }
            let labels = labels(p);
            m.encode_family(&labels)?.encode_histogram::<NoLabelSet>(
                h.sum_us as f64 / 1e6,
                h.count(),
                &buckets,
                None,
            )?;
        }
        let mut m = encoder.encode_descriptor(
            "latmap_anomalies",
            "Findings in the latest run, by detector and severity.",
            None,
            MetricType::Gauge,
        )?;
        for ((d, s), n) in &l.anomalies {
            let labels = [("detector", d.as_str()), ("severity", s.as_str())];
            ConstGauge::new(*n as i64).encode(m.encode_family(&labels)?)?;
        }
        if let Some(t) = super::wire::parse_run_id(&l.id) {
            let m = encoder.encode_descriptor(
                "latmap_latest_run_timestamp_seconds",
                "Epoch of the latest assembled run (Unix time).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(t.timestamp()).encode(m)?;
        }
        let mut m = encoder.encode_descriptor(
            "latmap_latest_run_regions",
            "Regions of the latest run, by whether they reported.",
            None,
            MetricType::Gauge,
        )?;
        for (reported, n) in [("true", l.reported), ("false", l.missing)] {
            let labels = [("reported", reported)];
            ConstGauge::new(n as i64).encode(m.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The exposition of `counters` and the `latest` run.
pub fn render(counters: &Counters, latest: Option<Arc<Latest>>) -> String {
    let mut r = Registry::default();
    // The registry adds the final period of each help text.
    r.register(
        "latmap_assembly_failures",
        "Attempts to assemble a run that failed (each is retried with backoff; the log names the cause)",
        counters.assembly_failures.clone(),
    );
    r.register(
        "latmap_runs_pending",
        "Sweeps with stored reports whose run is not assembled yet (or is behind its reports)",
        counters.pending.clone(),
    );
    r.register(
        "latmap_agent_last_report_timestamp_seconds",
        "When the server last accepted a report of the region's agent (Unix time)",
        counters.last_report.clone(),
    );
    r.register(
        "latmap_reports_received",
        "Region reports accepted and stored since the server started",
        counters.received.clone(),
    );
    r.register(
        "latmap_reports_duplicate",
        "Resent region reports acknowledged without storing them again",
        counters.duplicates.clone(),
    );
    r.register(
        "latmap_reports_rejected",
        "Pushes refused since the server started, by reason",
        counters.rejected.clone(),
    );
    r.register(
        "latmap_runs_assembled",
        "Runs assembled (or re-assembled after a late report) since the server started",
        counters.assembled.clone(),
    );
    if let Some(l) = latest {
        r.register_collector(Box::new(LatestRun(l)));
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_every_family_is_typed() {
        let c = Counters::default();
        c.reported("a\"b\\c\nd\u{1}", 1.5);
        c.reported("a\"b\\c\nd\u{1}", 1.0);
        c.reject(RejectReason::Invalid);
        let text = render(&c, None);
        assert!(
            text.contains(
                "latmap_agent_last_report_timestamp_seconds{region=\"a\\\"b\\\\c\\nd\u{FFFD}\"} 1.5\n"
            ),
            "{text}"
        );
        assert!(text.contains("latmap_reports_rejected_total{reason=\"invalid\"} 1\n"));
        for reason in RejectReason::ALL {
            let line = format!("latmap_reports_rejected_total{{reason=\"{reason}\"}} ");
            assert!(text.contains(&line), "{line} in {text}");
        }
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "{name} has no TYPE"
            );
        }
    }

    #[test]
    fn histograms_count_each_reply_in_its_bucket() {
        let bounds = rtt_buckets_seconds();
        assert_eq!(bounds[0], 0.00005);
        assert_eq!(bounds[1], 0.0001);
        assert_eq!(bounds[RTT_BUCKETS - 1], 26.2144);
        let h = RttHistogram::of(&[
            Some(0),
            Some(50),
            Some(51),
            None,
            Some(100),
            Some(30_000_000),
        ]);
        assert_eq!(h.count(), 5);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 2);
        assert_eq!(h.counts[RTT_BUCKETS], 1);
        assert_eq!(h.sum_us, 30_000_201);
    }

    #[test]
    fn histograms_are_left_out_past_their_limit() {
        use crate::report::{RegionInfo, RegionReport};
        let run_of = |n: usize| {
            let names: Vec<String> = (0..n).map(|i| format!("r{i}")).collect();
            let reports: Vec<RegionReport> = names
                .iter()
                .map(|s| RegionReport {
                    schema: crate::report::REPORT_SCHEMA.into(),
                    region: s.clone(),
                    started_at: chrono::DateTime::UNIX_EPOCH,
                    finished_at: chrono::DateTime::UNIX_EPOCH,
                    regions: names
                        .iter()
                        .map(|n| RegionInfo {
                            name: n.clone(),
                            location: None,
                        })
                        .collect(),
                    prober: Default::default(),
                    paths: names
                        .iter()
                        .filter(|t| *t != s)
                        .map(|t| PathEntry::from_samples(s, t, ProbeKind::Udp, "x", vec![Some(70)]))
                        .collect(),
                })
                .collect();
            Run::from_reports(&reports).unwrap()
        };
        for (n, shown) in [(100, 9_900), (101, 0)] {
            let run = run_of(n);
            let rtt = RttHistogram::of_paths(&run.paths);
            let rtt: Vec<Option<&RttHistogram>> = rtt.iter().map(Some).collect();
            let latest = Latest::of("20261126T050000Z", &run, &rtt);
            assert_eq!(latest.paths.len(), n * (n - 1));
            assert_eq!(latest.histograms(), shown, "{n} regions");
        }
    }
}
