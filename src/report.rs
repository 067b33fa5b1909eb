//! Region reports: one prober's paths with their statistics, as a `RegionReport`.
//!
//! A path entry is the same in a region report and in a run, so aggregation is a merge.
//! This module turns raw probe outcomes into those entries; it does no I/O except the
//! JSON read/write helpers, and knows nothing of runs, graphs or rendering.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::{Config, Location, ProbeKind};
use crate::probe::{Outcome, PathResult, ProberHealth, ProberOutput};
use crate::stats::{RttSummary, Z95, wilson_interval};

mod check;

pub use check::{
    Invalid, MAX_SAMPLE_US, first_duplicate, list as name_list, location as check_location,
    name as check_name, prober_quantiles, regions as check_regions,
};

/// The schema tag of a region report.
pub const REPORT_SCHEMA: &str = "latmap.report/1";

/// One measured path: a source region, a target of another region, one probe kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathEntry {
    pub source: String,
    pub target: String,
    pub kind: ProbeKind,
    /// The target as configured: an address or hostname, with its port if any.
    pub target_spec: String,
    /// The address probed (`ip` or `ip:port`); `null` when a hostname did not resolve.
    pub address: Option<String>,
    /// Time to resolve the hostname, in microseconds; `null` for an IP address.
    pub resolve_us: Option<u64>,
    /// Why the hostname did not resolve; then nothing was sent.
    pub resolve_error: Option<String>,
    /// Probes sent (a probe whose send failed is not counted).
    pub sent: u64,
    /// Probes answered in time.
    pub received: u64,
    /// TCP connections refused (the host answered; nobody listens).
    pub refused: u64,
    /// ICMP errors received instead of a reply.
    pub icmp_errors: u64,
    /// Probes that could not be sent.
    pub send_failed: u64,
    /// Replies that came after their timeout (not in the samples).
    pub late: u64,
    /// Replies to a probe that was already answered.
    pub duplicates: u64,
    /// TCP: connects that took about one initial retransmission timeout (1 s) longer
    /// than the path's median, i.e. whose first SYN was lost and sent again. Their
    /// samples stay in `samples_us`; this counts the hidden loss.
    #[serde(default)]
    pub syn_retries: u64,
    /// Probes of this path that the prober sent more than `LAG_BOUND` (10 ms) behind
    /// schedule: its host was short of CPU. When they are a tenth of the path's probes
    /// or more, the path's numbers may describe the prober rather than the network, and
    /// the detectors and `diff` discount it ([`PathEntry::prober_lagged`]).
    #[serde(default)]
    pub lagged: u64,
    /// UDP (STAMP): the IP TTL or hop limit the probes arrived at the reflector with,
    /// as it reported; `null` when it did not (a 38-byte TWAMP-Light reply, or 0).
    #[serde(default)]
    pub arrival_ttl: Option<u8>,
    /// `1 − received / sent`; `null` when nothing was sent.
    pub loss: Option<f64>,
    /// 95% Wilson score interval of the loss ratio.
    pub loss_ci: Option<[f64; 2]>,
    /// RTT summary in microseconds; `null` when nothing came back.
    pub rtt_us: Option<RttSummary>,
    /// Every probe's RTT in send order, in microseconds; `null` for a probe without reply.
    /// Empty when the entry was read by [`without_samples`].
    #[serde(deserialize_with = "samples_unless_skipped")]
    pub samples_us: Vec<Option<u64>>,
    /// What [`PathEntry::median_low_us`] gave before [`PathEntry::drop_samples`] (not
    /// in the file: it is computed from the samples).
    #[serde(skip)]
    pub median_low_cache: Option<u64>,
}

thread_local! {
    /// Set while [`without_samples`] runs: path entries are read without samples.
    static SKIP_SAMPLES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `read` with path entries deserialized on this thread leaving `samples_us`
/// empty (the samples are skipped, not stored): a run or report of a million paths
/// then takes a fraction of the memory, for outputs that show only statistics.
pub fn without_samples<T>(read: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            SKIP_SAMPLES.with(|s| s.set(self.0));
        }
    }
    let _reset = Reset(SKIP_SAMPLES.with(|s| s.replace(true)));
    read()
}

fn samples_unless_skipped<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Option<u64>>, D::Error> {
    if SKIP_SAMPLES.with(|s| s.get()) {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Vec::new())
    } else {
        Vec::deserialize(d)
    }
}

impl PathEntry {
    /// Builds the entry of one probed path.
    pub fn from_result(source: &str, result: &PathResult) -> PathEntry {
        let path = &result.path;
        let samples_us: Vec<Option<u64>> = result
            .outcomes
            .iter()
            .map(|o| match o {
                // Nearest microsecond: a 2.6 µs loopback RTT reads 3, not 2.
                Outcome::Reply(rtt) => Some(((rtt.as_nanos() + 500) / 1000) as u64),
                _ => None,
            })
            .collect();
        let count = |want: Outcome| result.outcomes.iter().filter(|&&o| o == want).count() as u64;
        let send_failed = count(Outcome::SendFailed);
        let sent = result.outcomes.len() as u64 - send_failed;
        let received = samples_us.iter().flatten().count() as u64;
        let (loss, loss_ci) = loss_fields(sent, received);
        PathEntry {
            source: source.to_string(),
            target: path.target_region.clone(),
            kind: path.kind,
            target_spec: path.target.to_string(),
            address: path.address.as_ref().ok().map(|a| {
                if path.kind == ProbeKind::Icmp {
                    a.ip().to_string()
                } else {
                    a.to_string()
                }
            }),
            resolve_us: path.resolve_time.map(|d| d.as_micros() as u64),
            resolve_error: path.address.as_ref().err().cloned(),
            sent,
            received,
            refused: count(Outcome::Refused),
            icmp_errors: count(Outcome::IcmpError),
            send_failed,
            late: result.late,
            duplicates: result.duplicates,
            syn_retries: if path.kind == ProbeKind::Tcp {
                syn_retries(&samples_us)
            } else {
                0
            },
            lagged: result.lagged,
            arrival_ttl: result.arrival_ttl,
            loss,
            loss_ci,
            rtt_us: RttSummary::from_samples(&samples_us),
            samples_us,
            median_low_cache: None,
        }
    }

    /// An entry from RTT samples in send order (`None`: no reply), for runs assembled
    /// from other sources (imports, tests, benchmarks): `sent`, `received`, the loss and
    /// the statistics follow from the samples; the address is the target as given.
    pub fn from_samples(
        source: &str,
        target: &str,
        kind: ProbeKind,
        target_spec: &str,
        samples_us: Vec<Option<u64>>,
    ) -> PathEntry {
        let sent = samples_us.len() as u64;
        let received = samples_us.iter().flatten().count() as u64;
        let (loss, loss_ci) = loss_fields(sent, received);
        PathEntry {
            source: source.to_string(),
            target: target.to_string(),
            kind,
            target_spec: target_spec.to_string(),
            address: Some(target_spec.to_string()),
            resolve_us: None,
            resolve_error: None,
            sent,
            received,
            refused: 0,
            icmp_errors: 0,
            send_failed: 0,
            late: 0,
            duplicates: 0,
            syn_retries: 0,
            lagged: 0,
            arrival_ttl: None,
            loss,
            loss_ci,
            rtt_us: RttSummary::from_samples(&samples_us),
            samples_us,
            median_low_cache: None,
        }
    }

    /// Whether the prober fell behind its schedule while measuring this path: at least
    /// a tenth of its probes went out more than `LAG_BOUND` late (see
    /// [`PathEntry::lagged`]). One late send does not make a path's numbers wrong (each
    /// send time is read at the send call); a prober starved for a tenth of its sweep
    /// may. Such a path is discounted, not judged.
    pub fn prober_lagged(&self) -> bool {
        self.lagged > 0 && self.lagged.saturating_mul(10) >= self.sent
    }

    /// The lower end of the 95% interval of the median of the replies, µs (see
    /// [`crate::stats::median_lower_bound`]); kept when the samples are dropped.
    pub fn median_low_us(&self) -> Option<u64> {
        if self.samples_us.is_empty() {
            return self.median_low_cache;
        }
        let mut replies: Vec<u64> = self.samples_us.iter().flatten().copied().collect();
        replies.sort_unstable();
        crate::stats::median_lower_bound(&replies)
    }

    /// Drops the samples (a slim copy for the analysis of a large run), keeping what the
    /// detectors read of them.
    pub fn drop_samples(&mut self) {
        if !self.samples_us.is_empty() {
            self.median_low_cache = self.median_low_us();
        }
        self.samples_us = Vec::new();
    }

    /// The key that orders and identifies a path within a run.
    pub fn key(&self) -> (&str, &str, ProbeKind, &str) {
        (&self.source, &self.target, self.kind, &self.target_spec)
    }
}

/// `count` samples in send order with `lost` of them lost (spread evenly) and the
/// replies alternating `rtt_us ∓ jitter_us / 2`, so that the median is `rtt_us` (for an
/// even number of replies) and the jitter is `jitter_us`. For runs built without
/// probing: scenario tests and benchmarks.
pub fn synthetic_samples(
    rtt_us: u64,
    lost: usize,
    jitter_us: u64,
    count: usize,
) -> Vec<Option<u64>> {
    let lost = lost.min(count);
    let mut samples = Vec::with_capacity(count);
    let mut next_lost = 0;
    let mut replies = 0u64;
    for k in 0..count {
        // The m-th lost probe is probe floor(m * count / lost).
        if next_lost < lost && k == next_lost * count / lost {
            next_lost += 1;
            samples.push(None);
            continue;
        }
        let half = jitter_us / 2;
        let v = if replies.is_multiple_of(2) {
            rtt_us.saturating_sub(half)
        } else {
            rtt_us + (jitter_us - half)
        };
        replies += 1;
        samples.push(Some(v));
    }
    samples
}

/// Linux's initial TCP retransmission timeout (RFC 6298 section 2.1): a SYN that is not
/// answered is sent again after it.
const INITIAL_RTO_US: u64 = 1_000_000;

/// Connects at least 0.8 of an initial RTO slower than the median connect: their first
/// SYN went unanswered (Pingmesh's way of seeing loss on TCP-only paths).
pub fn syn_retries(samples_us: &[Option<u64>]) -> u64 {
    let mut replies: Vec<u64> = samples_us.iter().flatten().copied().collect();
    if replies.len() < 2 {
        return 0;
    }
    replies.sort_unstable();
    // The lower median: retried connects sit in the upper half.
    let median = replies[(replies.len() - 1) / 2];
    let limit = median + INITIAL_RTO_US * 8 / 10;
    replies.iter().filter(|&&r| r >= limit).count() as u64
}

/// Loss ratio and its 95% Wilson interval.
pub fn loss_fields(sent: u64, received: u64) -> (Option<f64>, Option<[f64; 2]>) {
    if sent == 0 {
        return (None, None);
    }
    let lost = sent.saturating_sub(received);
    let loss = lost as f64 / sent as f64;
    let ci = wilson_interval(lost, sent, Z95).map(|(lo, hi)| [round6(lo), round6(hi)]);
    (Some(round6(loss)), ci)
}

fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

/// A region as listed in reports and runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionInfo {
    pub name: String,
    pub location: Option<Location>,
}

impl RegionInfo {
    /// Every region of the configuration, in its order.
    pub fn all(config: &Config) -> Vec<RegionInfo> {
        config
            .regions
            .iter()
            .map(|r| RegionInfo {
                name: r.name.clone(),
                location: r.location,
            })
            .collect()
    }
}

/// What one region's prober measured in one sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionReport {
    pub schema: String,
    pub region: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// All regions of the fleet as the prober's configuration knew them, so that an
    /// aggregator can tell a region that sent nothing ("no data").
    pub regions: Vec<RegionInfo>,
    pub prober: ProberHealth,
    pub paths: Vec<PathEntry>,
}

impl RegionReport {
    pub fn new(
        config: &Config,
        output: &ProberOutput,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
    ) -> RegionReport {
        RegionReport {
            schema: REPORT_SCHEMA.to_string(),
            region: output.region.clone(),
            started_at,
            finished_at,
            regions: RegionInfo::all(config),
            prober: output.health.clone(),
            paths: output
                .results
                .iter()
                .map(|r| PathEntry::from_result(&output.region, r))
                .collect(),
        }
    }

    /// Reads a region report, rejecting other schemas and impossible values (see
    /// [`RegionReport::check`]) with a clear error; `known`: the fleet of a
    /// configuration, whose regions are then the only ones allowed.
    pub fn read(
        path: &Path,
        known: Option<&[String]>,
    ) -> Result<RegionReport, crate::artifact::ArtifactError> {
        let report: RegionReport = crate::artifact::read_versioned(path, "latmap.report/")?;
        report
            .check(known)
            .map_err(|source| crate::artifact::ArtifactError::Invalid {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(report)
    }
}

impl RegionReport {
    /// The report in the artifact format with a final newline (what
    /// `artifact::write_json_atomic` writes), and where in it each path's text is: a
    /// path's bytes are those it takes in a run, so a run can be written by copying
    /// them.
    pub fn to_artifact(&self) -> std::io::Result<(Vec<u8>, Vec<std::ops::Range<usize>>)> {
        // Every field, so that a new one cannot be forgotten here.
        let RegionReport {
            schema,
            region,
            started_at,
            finished_at,
            regions,
            prober,
            paths,
        } = self;
        #[derive(Serialize)]
        struct Head<'r> {
            schema: &'r String,
            region: &'r String,
            started_at: &'r DateTime<Utc>,
            finished_at: &'r DateTime<Utc>,
            regions: &'r [RegionInfo],
            prober: &'r ProberHealth,
            paths: [(); 0],
        }
        let head = crate::artifact::to_string(&Head {
            schema,
            region,
            started_at,
            finished_at,
            regions,
            prober,
            paths: [],
        })?;
        let (open, close) = crate::artifact::empty_array_field(&head, "paths")
            .ok_or_else(|| std::io::Error::other("no paths field"))?;
        let mut out = Vec::with_capacity(head.len() + paths.len() * 900);
        out.extend_from_slice(&head.as_bytes()[..=open]);
        let mut ranges = Vec::with_capacity(paths.len());
        for (i, p) in paths.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"\n    " } else { b",\n    " });
            let start = out.len();
            crate::artifact::to_writer_at(&mut out, p, 2)?;
            ranges.push(start..out.len());
        }
        if !paths.is_empty() {
            out.extend_from_slice(b"\n  ");
        }
        out.extend_from_slice(&head.as_bytes()[close..]);
        out.push(b'\n');
        Ok((out, ranges))
    }
}

impl crate::artifact::Versioned for RegionReport {
    fn schema(&self) -> &str {
        &self.schema
    }
}

/// Probes per outcome, for logs and summaries.
pub fn outcome_counts(results: &[PathResult]) -> BTreeMap<&'static str, u64> {
    let mut m = BTreeMap::new();
    for o in results.iter().flat_map(|r| &r.outcomes) {
        let k = match o {
            Outcome::Reply(_) => "reply",
            Outcome::Lost => "lost",
            Outcome::Refused => "refused",
            Outcome::IcmpError => "icmp-error",
            Outcome::SendFailed => "send-failed",
        };
        *m.entry(k).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod syn_tests {
    use super::syn_retries;

    #[test]
    fn a_connect_one_rto_slower_than_the_median_is_a_retried_syn() {
        let ms = |v: u64| Some(v * 1000);
        assert_eq!(syn_retries(&[ms(1), ms(2), ms(1003), None, ms(1)]), 1);
        assert_eq!(syn_retries(&[ms(1), ms(3003), ms(1), ms(1002)]), 2);
        // Slow but steady is not a retry, nor is one sample alone.
        assert_eq!(syn_retries(&[ms(900), ms(950), ms(1000)]), 0);
        assert_eq!(syn_retries(&[ms(1500)]), 0);
        assert_eq!(syn_retries(&[ms(20), ms(700)]), 0);
    }
}
