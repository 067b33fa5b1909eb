//! Probing: one prober per region sends paced probes to every other region's targets.
//!
//! Owns the send schedule, the probe kinds (ICMP echo, STAMP over UDP, TCP connect),
//! name resolution and the prober's own health counters. It produces raw outcomes per
//! path; statistics and file formats belong to later stages. It knows nothing of
//! graphs, anomalies or rendering.
//!
//! Every kind shares one schedule per prober: rounds of one probe per path, a round
//! starting every `interval`, and at least `gap` between any two sends of the prober,
//! so a prober never bursts however many targets it has.

pub(crate) mod datagram;
pub mod dns;
mod icmp;
pub mod stamp;
mod tcp;
mod udp;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::config::{ProbeKind, ProbeSettings, Target};

/// One path a prober measures: a target of another region, with one probe kind.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedPath {
    pub target_region: String,
    pub kind: ProbeKind,
    /// The target as configured (hostname or address, optional port).
    pub target: Target,
    /// The address probed (port 0 for ICMP), or the reason there is none.
    pub address: Result<SocketAddr, String>,
    /// Time taken to resolve a hostname; `None` for an IP literal.
    pub resolve_time: Option<Duration>,
}

/// What one prober does.
#[derive(Debug, Clone)]
pub struct ProberSpec {
    pub region: String,
    /// Address to bind; `None` lets the system choose.
    pub source: Option<IpAddr>,
    pub paths: Vec<PlannedPath>,
    pub settings: ProbeSettings,
}

impl ProberSpec {
    /// Probes this prober will send.
    pub fn total_probes(&self) -> u64 {
        let probed = self.paths.iter().filter(|p| p.address.is_ok()).count() as u64;
        probed * u64::from(self.settings.count)
    }
}

/// What became of one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A reply, with the round-trip time.
    Reply(Duration),
    /// Nothing came back within the timeout.
    Lost,
    /// TCP: the target refused the connection (it is reachable, but no one listens).
    Refused,
    /// An ICMP error (destination unreachable, time exceeded) came back instead of a reply.
    IcmpError,
    /// The probe could not be sent (the error is logged and counted).
    SendFailed,
}

/// The outcomes on one path, in send order, with its late and duplicate replies.
#[derive(Debug, Clone, PartialEq)]
pub struct PathResult {
    pub path: PlannedPath,
    pub outcomes: Vec<Outcome>,
    /// Replies that arrived after their probe had timed out.
    pub late: u64,
    /// Replies to a probe already answered.
    pub duplicates: u64,
}

/// The prober's view of its own health, so that samples from an overloaded prober can
/// be discounted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProberHealth {
    /// Socket used per kind and family, e.g. `"icmp-v4": "raw"`.
    pub sockets: BTreeMap<String, String>,
    /// How far sends fell behind their schedule: mean and max, in microseconds.
    pub send_lag_mean_us: u64,
    pub send_lag_max_us: u64,
    /// Packets received that matched no probe of this sweep (counted and ignored).
    pub unmatched: u64,
    /// Packets received that were not valid replies (counted and ignored).
    pub malformed: u64,
}

/// A finished prober.
#[derive(Debug, Clone)]
pub struct ProberOutput {
    pub region: String,
    pub results: Vec<PathResult>,
    pub health: ProberHealth,
}

/// Setup failures: the prober could not start. Timeouts and unreachable targets are data.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "cannot open an ICMP socket for {family}: {source}; allow unprivileged ICMP with \
         `sysctl -w net.ipv4.ping_group_range=\"0 2147483647\"`, or run with CAP_NET_RAW \
         (`setcap cap_net_raw+ep $(which latmap)`), or use `kinds = [\"udp\"]` or `[\"tcp\"]` \
         (see docs/privileges.md)"
    )]
    IcmpSocket {
        family: &'static str,
        source: std::io::Error,
    },
    #[error("the prober's send loop stopped unexpectedly: {0}; please report this as a bug")]
    Internal(String),
    #[error("cannot bind {kind} socket to {addr}: {source}; is {addr} an address of this host?")]
    Bind {
        kind: ProbeKind,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Called with the number of probes finished since the last call (for progress bars).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Counters shared by a prober's receive paths.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub unmatched: AtomicU64,
    pub malformed: AtomicU64,
}

/// Per-path counters for replies that do not become samples.
#[derive(Debug, Default)]
pub(crate) struct PathCounters {
    pub late: AtomicU64,
    pub duplicates: AtomicU64,
}

/// Runs one prober to completion: every path `count` times, paced, then waits for the
/// last replies (or their timeouts).
pub async fn run_prober(
    spec: &ProberSpec,
    progress: Option<Progress>,
) -> Result<ProberOutput, ProbeError> {
    let settings = &spec.settings;
    let counters = Arc::new(Counters::default());
    let path_counters: Arc<Vec<PathCounters>> =
        Arc::new(spec.paths.iter().map(|_| PathCounters::default()).collect());
    let mut health = ProberHealth::default();

    let needs = |kind: ProbeKind, v6: bool| {
        spec.paths
            .iter()
            .any(|p| p.kind == kind && matches!(&p.address, Ok(a) if a.is_ipv6() == v6))
    };
    let mut udp4 = None;
    let mut udp6 = None;
    for (v6, slot) in [(false, &mut udp4), (true, &mut udp6)] {
        if needs(ProbeKind::Udp, v6) {
            let s = udp::UdpSender::open(
                spec.source.filter(|s| s.is_ipv6() == v6),
                v6,
                settings,
                counters.clone(),
                path_counters.clone(),
            )?;
            health.sockets.insert(
                format!("udp-v{}", if v6 { 6 } else { 4 }),
                "datagram".into(),
            );
            *slot = Some(s);
        }
    }
    let mut icmp4 = None;
    let mut icmp6 = None;
    for (v6, slot) in [(false, &mut icmp4), (true, &mut icmp6)] {
        if needs(ProbeKind::Icmp, v6) {
            let s =
                icmp::IcmpSender::open(spec.source.filter(|s| s.is_ipv6() == v6), v6, settings)?;
            tracing::info!(region = %spec.region, socket = s.socket_type(), "opened ICMPv{} socket", if v6 { 6 } else { 4 });
            health.sockets.insert(
                format!("icmp-v{}", if v6 { 6 } else { 4 }),
                s.socket_type().into(),
            );
            *slot = Some(s);
        }
    }
    let tcp = tcp::TcpSender::new(spec.source, settings.timeout);

    let senders = Senders {
        udp4,
        udp6,
        icmp4,
        icmp6,
        tcp,
    };
    let schedule: Vec<(usize, ProbeKind, SocketAddr)> = spec
        .paths
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.address.as_ref().ok().map(|a| (i, p.kind, *a)))
        .collect();
    let loop_settings = settings.clone();
    let path_count = spec.paths.len();
    // The send loop runs on a thread of its own: std's sleep is precise to tens of
    // microseconds, where tokio's timer rounds up to whole milliseconds.
    let (senders, handles, lag) = tokio::task::spawn_blocking(move || {
        send_loop(senders, &schedule, path_count, &loop_settings, progress)
    })
    .await
    .map_err(|e| ProbeError::Internal(e.to_string()))?;

    let mut results = Vec::with_capacity(spec.paths.len());
    for (path, path_handles) in spec.paths.iter().zip(handles) {
        let mut outcomes = Vec::with_capacity(path_handles.len());
        for handle in path_handles {
            outcomes.push(handle.await.unwrap_or(Outcome::SendFailed));
        }
        results.push(PathResult {
            path: path.clone(),
            outcomes,
            late: 0,
            duplicates: 0,
        });
    }
    for (result, c) in results.iter_mut().zip(path_counters.iter()) {
        result.late = c.late.load(Ordering::Relaxed);
        result.duplicates = c.duplicates.load(Ordering::Relaxed);
    }
    drop(senders);
    health.send_lag_mean_us = lag.mean_us();
    health.send_lag_max_us = lag.max.as_micros() as u64;
    health.unmatched = counters.unmatched.load(Ordering::Relaxed);
    health.malformed = counters.malformed.load(Ordering::Relaxed);
    Ok(ProberOutput {
        region: spec.region.clone(),
        results,
        health,
    })
}

/// The sockets of one prober.
struct Senders {
    udp4: Option<udp::UdpSender>,
    udp6: Option<udp::UdpSender>,
    icmp4: Option<icmp::IcmpSender>,
    icmp6: Option<icmp::IcmpSender>,
    tcp: tcp::TcpSender,
}

impl Senders {
    fn send(
        &mut self,
        index: usize,
        kind: ProbeKind,
        addr: SocketAddr,
    ) -> Option<JoinHandle<Outcome>> {
        let v6 = addr.is_ipv6();
        match kind {
            ProbeKind::Udp => if v6 {
                self.udp6.as_mut()
            } else {
                self.udp4.as_mut()
            }
            .map(|s| s.send(index, addr)),
            ProbeKind::Icmp => if v6 {
                self.icmp6.as_mut()
            } else {
                self.icmp4.as_mut()
            }
            .map(|s| s.send(addr.ip())),
            ProbeKind::Tcp => Some(self.tcp.send(addr)),
        }
    }
}

/// How far sends fell behind their schedule.
#[derive(Debug, Default)]
struct Lag {
    sum: Duration,
    max: Duration,
    sends: u32,
}

impl Lag {
    fn mean_us(&self) -> u64 {
        if self.sends == 0 {
            0
        } else {
            (self.sum / self.sends).as_micros() as u64
        }
    }
}

/// Sends every probe on schedule: rounds of one probe per path, round `r` no earlier
/// than `r * interval` after the start, and at least `gap` between two sends.
/// Runs on a blocking thread inside the runtime (the senders spawn tasks).
fn send_loop(
    mut senders: Senders,
    schedule: &[(usize, ProbeKind, SocketAddr)],
    path_count: usize,
    settings: &ProbeSettings,
    progress: Option<Progress>,
) -> (Senders, Vec<Vec<JoinHandle<Outcome>>>, Lag) {
    let count = settings.count as usize;
    let mut handles: Vec<Vec<JoinHandle<Outcome>>> =
        (0..path_count).map(|_| Vec::with_capacity(count)).collect();
    let mut lag = Lag::default();
    let start = std::time::Instant::now();
    let mut next_send = start;
    for round in 0..count {
        let round_start = start + settings.interval * round as u32;
        for &(index, kind, addr) in schedule {
            let due = next_send.max(round_start);
            let now = std::time::Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            let now = std::time::Instant::now();
            let late = now.saturating_duration_since(due);
            lag.sum += late;
            lag.max = lag.max.max(late);
            lag.sends += 1;
            let handle = senders
                .send(index, kind, addr)
                .unwrap_or_else(|| tokio::spawn(async { Outcome::SendFailed }));
            let handle = match &progress {
                Some(progress) => {
                    let progress = progress.clone();
                    tokio::spawn(async move {
                        let outcome = handle.await.unwrap_or(Outcome::SendFailed);
                        progress(1);
                        outcome
                    })
                }
                None => handle,
            };
            handles[index].push(handle);
            next_send = now + settings.gap;
        }
    }
    (senders, handles, lag)
}
