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
mod engine;
mod icmp;
mod seq;
pub mod stamp;
mod tcp;
mod udp;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use serde::{Deserialize, Serialize};
use socket2::{SockAddr, Socket};

use crate::config::{ProbeKind, ProbeSettings, Target};
use engine::{Entry, Pacing, Reply, ReplyKind, SystemClock, Table, Transport};
pub use engine::{LAG_BOUND, wall_ns};
pub use icmp::{
    DEFAULT_PAYLOAD as DEFAULT_ICMP_PAYLOAD, Parsed as IcmpParsed, TAG_LEN as ICMP_TAG_LEN,
    parse as parse_icmp,
};

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
    /// Probes sent more than [`LAG_BOUND`] behind their schedule.
    pub lagged: u64,
    /// STAMP: the IP TTL (hop limit) the probes arrived at the reflector with, as the
    /// reflector said (the last one); `None` when it did not.
    pub arrival_ttl: Option<u8>,
}

/// The prober's view of its own health, so that samples from an overloaded prober can
/// be discounted. Times are in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProberHealth {
    /// Socket used per kind and family, e.g. `"icmp-v4": "raw"`.
    pub sockets: BTreeMap<String, String>,
    /// How far sends fell behind their schedule, measured at the send call.
    pub send_lag_mean_us: u64,
    pub send_lag_p50_us: u64,
    pub send_lag_p99_us: u64,
    pub send_lag_max_us: u64,
    /// Probes sent more than [`LAG_BOUND`] late (their paths are marked `lagged`).
    pub lagged_sends: u64,
    /// Packets received that matched no probe of this sweep (counted and ignored).
    pub unmatched: u64,
    /// Packets received that were not valid replies, or carried impossible timestamps
    /// (counted and ignored).
    pub malformed: u64,
    /// Replies naming a probe but not echoing what it sent: forged or corrupted
    /// (counted and ignored).
    pub mismatched: u64,
    /// Valid replies from another address than the one probed (they count).
    pub foreign_source: u64,
    /// Replies that came after their probe's timeout (all paths).
    pub late: u64,
    /// Datagrams the kernel dropped because the prober's receive queue was full
    /// (`SO_RXQ_OVFL`): lost samples that the network did not lose.
    pub queue_drops: u64,
    /// How long replies waited between the kernel receiving them and the prober
    /// reading them. RTTs do not include it (they end at the kernel's timestamp); a
    /// large value says the prober's host is short of CPU.
    pub receive_gap_p50_us: u64,
    pub receive_gap_p99_us: u64,
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
    #[error("the prober stopped unexpectedly: {0}; please report this as a bug")]
    Internal(String),
    #[error("cannot bind {kind} socket to {addr}: {hint}")]
    Bind {
        kind: ProbeKind,
        addr: SocketAddr,
        hint: String,
        source: std::io::Error,
    },
}

/// What went wrong binding `addr`, in words that name the fix: the address is in use,
/// the port is privileged, or the address is not one of this host's.
pub fn bind_hint(addr: SocketAddr, e: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let port = addr.port();
    match e.kind() {
        ErrorKind::AddrInUse => format!(
            "the address is in use: another program has port {port} on {ip} (`ss -lnp 'sport = :{port}'` \
             shows which); stop it or choose another port",
            ip = addr.ip()
        ),
        ErrorKind::PermissionDenied if port != 0 && port < 1024 => {
            "permission denied: ports below 1024 need root or CAP_NET_BIND_SERVICE \
             (`setcap cap_net_bind_service+ep $(which latmap)`); or choose a port above 1023"
                .to_string()
        }
        ErrorKind::AddrNotAvailable => format!(
            "{} is not an address of this host (`ip addr` lists them); bind one of those, or 0.0.0.0",
            addr.ip()
        ),
        _ => e.to_string(),
    }
}

pub(crate) fn bind_error(kind: ProbeKind, addr: SocketAddr, source: std::io::Error) -> ProbeError {
    ProbeError::Bind {
        kind,
        addr,
        hint: bind_hint(addr, &source),
        source,
    }
}

/// One probe's outcome, as soon as it is known (a reply on arrival, a loss at its
/// timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeEvent {
    /// Index into the prober's paths.
    pub path: usize,
    /// Which of the path's probes (0-based).
    pub round: u32,
    pub outcome: Outcome,
}

/// Called with every probe's outcome (for progress bars and `latmap ping`). It runs on
/// the prober's receive thread: it must be quick.
pub type Progress = Arc<dyn Fn(ProbeEvent) + Send + Sync>;

/// Runs one prober to completion: every path `count` times, paced, then waits for the
/// last replies (or their timeouts). The prober runs on threads of its own; this
/// future waits for them.
pub async fn run_prober(
    spec: &ProberSpec,
    progress: Option<Progress>,
) -> Result<ProberOutput, ProbeError> {
    let spec = spec.clone();
    tokio::task::spawn_blocking(move || probe_blocking(spec, progress))
        .await
        .map_err(|e| ProbeError::Internal(e.to_string()))?
}

/// Epoll tokens: the four datagram sockets, and TCP connects by probe id.
const ICMP4: u64 = 0;
const ICMP6: u64 = 1;
const UDP4: u64 = 2;
const UDP6: u64 = 3;
const TCP_BIT: u64 = 1 << 32;

/// The longest the receive loop sleeps without checking whether it is done.
const POLL: Duration = Duration::from_millis(20);

/// While the send loop runs, the receive loop reads at most this often: replies wait in
/// the socket's queue (their kernel timestamps keep the RTTs exact) instead of waking
/// the loop one by one, which would cost a wake-up of another core per reply.
const BATCH: Duration = Duration::from_micros(250);

/// What the send and receive threads share.
struct Shared {
    table: Mutex<Table>,
    icmp: [Option<icmp::IcmpSocket>; 2],
    udp: [Option<udp::StampSocket>; 2],
    /// TCP connects under way, by probe id.
    tcp: Mutex<HashMap<u32, Socket>>,
    tcp_source: Option<IpAddr>,
    epoll: Epoll,
    keyed: seq::Keyed,
    send_done: AtomicBool,
    progress: Option<Progress>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// [`run_prober`] on the calling thread (which becomes the send loop).
pub fn probe_blocking(
    spec: ProberSpec,
    progress: Option<Progress>,
) -> Result<ProberOutput, ProbeError> {
    let settings = &spec.settings;
    let mut health = ProberHealth::default();
    let entries: Vec<Entry> = spec
        .paths
        .iter()
        .enumerate()
        .filter_map(|(path, p)| {
            p.address.as_ref().ok().map(|&to| Entry {
                path,
                kind: p.kind,
                to,
            })
        })
        .collect();
    let needs = |kind: ProbeKind, v6: bool| {
        entries
            .iter()
            .any(|e| e.kind == kind && e.to.is_ipv6() == v6)
    };
    let family = |v6: bool| if v6 { 6 } else { 4 };
    let source_for = |v6: bool| spec.source.filter(|s| s.is_ipv6() == v6);
    let mut icmp_sockets = [None, None];
    let mut udp_sockets = [None, None];
    for v6 in [false, true] {
        if needs(ProbeKind::Icmp, v6) {
            let s = icmp::IcmpSocket::open(source_for(v6), v6, settings.payload)?;
            tracing::info!(region = %spec.region, socket = s.socket_type(), "opened ICMPv{} socket", family(v6));
            health
                .sockets
                .insert(format!("icmp-v{}", family(v6)), s.socket_type().into());
            icmp_sockets[usize::from(v6)] = Some(s);
        }
        if needs(ProbeKind::Udp, v6) {
            let s = udp::StampSocket::open(source_for(v6), v6, settings.payload)?;
            health
                .sockets
                .insert(format!("udp-v{}", family(v6)), "datagram".into());
            udp_sockets[usize::from(v6)] = Some(s);
        }
    }
    let internal = |e: nix::Error| ProbeError::Internal(format!("epoll: {e}"));
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(internal)?;
    for (token, socket) in [
        (ICMP4, icmp_sockets[0].as_ref().map(|s| &s.socket)),
        (ICMP6, icmp_sockets[1].as_ref().map(|s| &s.socket)),
        (UDP4, udp_sockets[0].as_ref().map(|s| &s.socket)),
        (UDP6, udp_sockets[1].as_ref().map(|s| &s.socket)),
    ] {
        if let Some(socket) = socket {
            epoll
                .add(socket, EpollEvent::new(EpollFlags::EPOLLIN, token))
                .map_err(internal)?;
        }
    }
    let pacing = Pacing {
        count: settings.count,
        interval: settings.interval,
        gap: settings.gap,
    };
    let shared = Shared {
        table: Mutex::new(Table::new(
            entries.clone(),
            settings.count,
            spec.paths.len(),
            settings.timeout,
        )),
        icmp: icmp_sockets,
        udp: udp_sockets,
        tcp: Mutex::new(HashMap::new()),
        tcp_source: spec.source,
        epoll,
        keyed: seq::Keyed::default(),
        send_done: AtomicBool::new(false),
        progress,
    };
    let (mut lags, mut stats) = std::thread::scope(|scope| {
        let receiver = std::thread::Builder::new()
            .name(format!("probe-rx-{}", spec.region))
            .spawn_scoped(scope, || receive_loop(&shared))
            .map_err(|e| ProbeError::Internal(format!("cannot start a thread: {e}")))?;
        // Linux lets a sleeping thread wake up to 50 µs late by default ("timer
        // slack"); pacing wants better.
        let _ = nix::sys::prctl::set_timerslack(1);
        let mut wire = Wire::new(&shared);
        let lags = engine::send_loop(&SystemClock, &mut wire, entries.len(), pacing);
        {
            let mut table = lock(&shared.table);
            for (id, &lag) in lags.iter().enumerate() {
                table.lag(id as u32, lag);
            }
        }
        shared.send_done.store(true, Ordering::Release);
        let stats = receiver
            .join()
            .map_err(|_| ProbeError::Internal("the receive loop panicked".into()))?;
        Ok::<_, ProbeError>((lags, stats))
    })?;
    let table = shared.table.into_inner().unwrap_or_else(|p| p.into_inner());
    let lag_us = &mut lags;
    health.lagged_sends = lag_us
        .iter()
        .filter(|&&l| u128::from(l) > LAG_BOUND.as_micros())
        .count() as u64;
    if !lag_us.is_empty() {
        let sum: u64 = lag_us.iter().map(|&l| u64::from(l)).sum();
        health.send_lag_mean_us = sum / lag_us.len() as u64;
    }
    health.send_lag_p50_us = engine::quantile_us(lag_us, 0.5);
    health.send_lag_p99_us = engine::quantile_us(lag_us, 0.99);
    health.send_lag_max_us = lag_us.last().copied().map_or(0, u64::from);
    health.receive_gap_p50_us = engine::quantile_us(&mut stats.gaps_us, 0.5);
    health.receive_gap_p99_us = engine::quantile_us(&mut stats.gaps_us, 0.99);
    health.queue_drops = stats.queue_drops.iter().map(|&d| u64::from(d)).sum();
    health.unmatched = table.strays.unmatched;
    health.malformed = table.strays.malformed;
    health.mismatched = table.strays.mismatched;
    health.foreign_source = table.strays.foreign_source;
    health.late = table.tallies.iter().map(|t| t.late).sum();
    let mut entry_of = vec![None; spec.paths.len()];
    for (i, e) in table.entries.iter().enumerate() {
        entry_of[e.path] = Some(i);
    }
    let results = spec
        .paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let tally = table.tallies[i];
            PathResult {
                path,
                outcomes: entry_of[i].map(|e| table.outcomes(e)).unwrap_or_default(),
                late: tally.late,
                duplicates: tally.duplicates,
                lagged: tally.lagged,
                arrival_ttl: tally.arrival_ttl,
            }
        })
        .collect();
    Ok(ProberOutput {
        region: spec.region,
        results,
        health,
    })
}

/// The real transport: writes each probe into the table and sends it.
struct Wire<'a> {
    shared: &'a Shared,
    entries: Vec<Entry>,
    icmp_buf: [Vec<u8>; 2],
    udp_buf: [Vec<u8>; 2],
}

impl<'a> Wire<'a> {
    fn new(shared: &'a Shared) -> Wire<'a> {
        let entries = lock(&shared.table).entries.clone();
        let buf = |s: Option<Vec<u8>>| s.unwrap_or_default();
        Wire {
            shared,
            icmp_buf: [
                buf(shared.icmp[0].as_ref().map(|s| s.request_buffer())),
                buf(shared.icmp[1].as_ref().map(|s| s.request_buffer())),
            ],
            udp_buf: [
                buf(shared.udp[0].as_ref().map(|s| s.request_buffer())),
                buf(shared.udp[1].as_ref().map(|s| s.request_buffer())),
            ],
            entries,
        }
    }

    fn failed(&self, id: u32, outcome: Outcome) {
        let event = lock(&self.shared.table).finish(id, outcome);
        report(&self.shared.progress, event);
    }

    fn tcp(&self, id: u32, to: SocketAddr) -> Instant {
        let (ns, at) = (engine::wall_ns(), Instant::now());
        match tcp::connect(self.shared.tcp_source, to) {
            Ok(tcp::Started::Pending(socket)) => {
                let mut table = lock(&self.shared.table);
                table.sending(id, ns, at, 0);
                let mut pending = lock(&self.shared.tcp);
                let event = EpollEvent::new(EpollFlags::EPOLLOUT, TCP_BIT | u64::from(id));
                if let Err(e) = self.shared.epoll.add(&socket, event) {
                    tracing::warn!(%to, error = %e, "cannot wait for a tcp connect");
                    drop(pending);
                    let event = table.finish(id, Outcome::SendFailed);
                    drop(table);
                    report(&self.shared.progress, event);
                } else {
                    pending.insert(id, socket);
                }
            }
            Ok(tcp::Started::Done(socket, what)) => {
                let measured = match what {
                    ReplyKind::Answer => tcp::kernel_rtt(&socket),
                    _ => None,
                };
                let _ = socket.set_linger(Some(Duration::ZERO));
                let mut table = lock(&self.shared.table);
                table.sending(id, ns, at, 0);
                let event = table.reply(&Reply {
                    id,
                    from: to.ip(),
                    echo: None,
                    kernel_ns: None,
                    read_at: Instant::now(),
                    dwell: None,
                    what,
                    arrival_ttl: None,
                    measured,
                });
                drop(table);
                report(&self.shared.progress, event);
            }
            Err(e) => {
                tracing::warn!(%to, error = %e, "cannot start a tcp connect");
                self.failed(id, Outcome::SendFailed);
            }
        }
        at
    }
}

impl Transport for Wire<'_> {
    fn send(&mut self, id: u32, entry: usize, _due: Instant) -> Instant {
        let Some(&Entry { kind, to, .. }) = self.entries.get(entry) else {
            self.failed(id, Outcome::SendFailed);
            return Instant::now();
        };
        let v6 = usize::from(to.is_ipv6());
        let shared = self.shared;
        let (socket, packet, at) = match kind {
            ProbeKind::Tcp => return self.tcp(id, to),
            ProbeKind::Icmp => {
                let Some(s) = shared.icmp[v6].as_ref() else {
                    self.failed(id, Outcome::SendFailed);
                    return Instant::now();
                };
                let tag = shared.keyed.tag(id);
                let buf = &mut self.icmp_buf[v6];
                s.fill_request(buf, id, tag);
                let (ns, at) = (engine::wall_ns(), Instant::now());
                lock(&shared.table).sending(id, ns, at, tag);
                (&s.socket, &buf[..], at)
            }
            ProbeKind::Udp => {
                let Some(s) = shared.udp[v6].as_ref() else {
                    self.failed(id, Outcome::SendFailed);
                    return Instant::now();
                };
                let buf = &mut self.udp_buf[v6];
                let (ns, at) = (engine::wall_ns(), Instant::now());
                let t1 = stamp::NtpTimestamp::from_unix_nanos(ns);
                udp::StampSocket::fill_request(buf, shared.keyed.encode(id), t1);
                lock(&shared.table).sending(id, ns, at, t1.0);
                (&s.socket, &buf[..], at)
            }
        };
        // The send time was taken just before this call.
        if let Err(e) = socket.send_to(packet, &SockAddr::from(to)) {
            tracing::warn!(%to, error = %e, "{kind} send failed");
            self.failed(id, Outcome::SendFailed);
        }
        at
    }
}

fn report(progress: &Option<Progress>, event: Option<ProbeEvent>) {
    if let (Some(progress), Some(event)) = (progress, event) {
        progress(event);
    }
}

/// What the receive loop measured of itself.
#[derive(Debug, Default)]
struct ReceiveStats {
    /// Per datagram read: its wait between the kernel and the loop, in microseconds.
    gaps_us: Vec<u32>,
    /// Per socket: the kernel's count of datagrams dropped for a full queue.
    queue_drops: [u32; 4],
}

/// Reads every reply, declares probes lost at their timeout, finishes TCP connects;
/// returns when the send loop is done and every probe is final.
fn receive_loop(shared: &Shared) -> ReceiveStats {
    let mut stats = ReceiveStats::default();
    let mut events = vec![EpollEvent::empty(); 64];
    let mut buf = vec![0u8; 65536];
    let mut rx = datagram::Receiver::default();
    let mut lost: Vec<(u32, ProbeEvent)> = Vec::new();
    loop {
        let done = shared.send_done.load(Ordering::Acquire);
        let now = Instant::now();
        let (next, finished) = {
            let mut table = lock(&shared.table);
            let next = table.expire(now, |id, e| lost.push((id, e)));
            (next, done && table.all_final())
        };
        if !lost.is_empty() {
            let mut done = Vec::new();
            {
                let mut pending = lock(&shared.tcp);
                for (id, event) in lost.drain(..) {
                    if let Some(socket) = pending.remove(&id) {
                        if tcp::finished(&socket) {
                            // The kernel finished it while this loop was kept from
                            // reading it (starved of the CPU): its own RTT decides.
                            done.push((id, socket));
                        } else {
                            // Not finished in time: abandoned (and reset).
                            let _ = socket.set_linger(Some(Duration::ZERO));
                        }
                    }
                    report(&shared.progress, Some(event));
                }
            }
            for (id, socket) in done {
                settle(shared, id, socket);
            }
        }
        if finished {
            // Replies the kernel received before the last deadline may still be queued.
            for token in [ICMP4, ICMP6, UDP4, UDP6] {
                drain(shared, token, &mut rx, &mut buf, &mut stats);
            }
            return stats;
        }
        let wait = next
            .map_or(POLL, |d| d.saturating_duration_since(now))
            .min(POLL);
        // epoll counts whole milliseconds: round up, so a deadline is not polled for.
        let ms = wait.as_micros().div_ceil(1000) as u16;
        let n = match shared.epoll.wait(&mut events, EpollTimeout::from(ms)) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "epoll failed; the prober stops receiving");
                std::thread::sleep(wait);
                0
            }
        };
        for event in &events[..n] {
            let token = event.data();
            if token & TCP_BIT != 0 {
                connected(shared, token as u32);
            } else {
                drain(shared, token, &mut rx, &mut buf, &mut stats);
            }
        }
        if n > 0 && !shared.send_done.load(Ordering::Acquire) {
            std::thread::sleep(BATCH);
        }
    }
}

/// Reads everything queued on the socket of `token`.
fn drain(
    shared: &Shared,
    token: u64,
    rx: &mut datagram::Receiver,
    buf: &mut [u8],
    stats: &mut ReceiveStats,
) {
    let v6 = usize::from(token == ICMP6 || token == UDP6);
    let (socket, icmp) = match token {
        ICMP4 | ICMP6 => match &shared.icmp[v6] {
            Some(s) => (&s.socket, Some(s)),
            None => return,
        },
        UDP4 | UDP6 => match &shared.udp[v6] {
            Some(s) => (&s.socket, None),
            None => return,
        },
        _ => return,
    };
    loop {
        let d = match rx.receive(socket, buf, false) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // An ICMP error queued on the socket (e.g. port unreachable for UDP):
                // it names no probe, which then times out.
                tracing::debug!(error = %e, "receive error");
                continue;
            }
        };
        let read_at = Instant::now();
        if let Some(k) = d.kernel_ns {
            let gap = engine::wall_ns().saturating_sub(k) / 1000;
            stats.gaps_us.push(u32::try_from(gap).unwrap_or(u32::MAX));
        }
        if let Some(drops) = d.queue_drops {
            let slot = &mut stats.queue_drops[token as usize];
            *slot = (*slot).max(drops);
        }
        let data = &buf[..d.len];
        let from = d.from.ip();
        let mut table = lock(&shared.table);
        let reply = match icmp {
            Some(icmp) => match icmp.parse(data, from) {
                icmp::Parsed::Echo { id, tag } => Reply {
                    id,
                    from,
                    echo: Some(tag),
                    kernel_ns: d.kernel_ns,
                    read_at,
                    dwell: None,
                    what: ReplyKind::Answer,
                    arrival_ttl: None,
                    measured: None,
                },
                icmp::Parsed::Error { to, seq } => match table.by_seq16(seq, to) {
                    Some(id) => Reply {
                        id,
                        from,
                        echo: None,
                        kernel_ns: d.kernel_ns,
                        read_at,
                        dwell: None,
                        what: ReplyKind::IcmpError,
                        arrival_ttl: None,
                        measured: None,
                    },
                    None => {
                        table.strays.unmatched += 1;
                        continue;
                    }
                },
                icmp::Parsed::NotOurs => {
                    table.strays.unmatched += 1;
                    continue;
                }
                icmp::Parsed::Malformed => {
                    table.strays.malformed += 1;
                    continue;
                }
            },
            None => match udp::parse(data) {
                Some(p) => Reply {
                    id: shared.keyed.decode(p.sender_seq),
                    from,
                    echo: Some(p.sender_timestamp.0),
                    kernel_ns: d.kernel_ns,
                    read_at,
                    dwell: p.dwell(),
                    what: ReplyKind::Answer,
                    arrival_ttl: p.sender_ttl,
                    measured: None,
                },
                None => {
                    table.strays.malformed += 1;
                    continue;
                }
            },
        };
        let event = table.reply(&reply);
        drop(table);
        report(&shared.progress, event);
    }
}

/// A TCP connect the kernel reports finished (established or failed).
fn connected(shared: &Shared, id: u32) {
    let Some(socket) = lock(&shared.tcp).remove(&id) else {
        return; // timed out already
    };
    settle(shared, id, socket);
}

/// Reads how the finished connect of probe `id` ended, and takes it into the table.
fn settle(shared: &Shared, id: u32, socket: Socket) {
    let read_at = Instant::now();
    let (what, measured) = tcp::finish(&socket);
    drop(socket);
    let mut table = lock(&shared.table);
    let Some(from) = table.entry(id).map(|e| e.to.ip()) else {
        return;
    };
    let event = table.reply(&Reply {
        id,
        from,
        echo: None,
        kernel_ns: None,
        read_at,
        dwell: None,
        what,
        arrival_ttl: None,
        measured,
    });
    drop(table);
    report(&shared.progress, event);
}
