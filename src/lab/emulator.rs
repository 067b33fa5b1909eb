//! The netns lab's network: a verdict loop that holds every packet the core namespace
//! forwards for its path's one-way delay, and drops it with its path's loss.
//!
//! iptables in the core queues every forwarded packet to [`QUEUE`]. The loop tells a
//! request from a reply by the packet alone (`direction`): the lab's service port,
//! ICMP's request and reply types, a SYN without ACK, else the lower port as the
//! server's. So it knows which region began an exchange, and a request from region i to
//! region j and its reply are both on path i → j, whatever the protocol: the path's
//! RTT is split between them, half each way, and its loss too (each direction drops
//! with `1 − √(1 − loss)`, so a round trip is lost with the path's loss). Stateless on
//! purpose: conntrack knows directions, but it confirms a flow only when its first
//! packet leaves the core, so while that packet is held the flow's next one (the next
//! ICMP echo of the same identifier) makes a clashing entry and is dropped.
//!
//! The loop runs on one thread per CPU (at most four), each pinned to its CPU, at
//! real-time priority where permitted, with 1 ns timer slack. Each waits on the queue
//! socket and on the next deadline at once (`ppoll`, with a nanosecond timeout), and
//! whichever wakes first gives the verdicts due, a few per system call: this kernel
//! does not preempt a task running in the kernel, so one CPU busy with a build can hold
//! a waking thread for milliseconds, and the other CPU's thread then gives the
//! verdicts. Packets are held from the time the kernel received them (`NFQA_TIMESTAMP`)
//! rather than from when a thread read them. It measures its own lateness (verdict time minus due
//! time) per packet: the emulator's error, reported by `latmap lab status` and at the
//! end of a sweep.
//!
//! Owns the per-packet decision and its timing; namespaces and rules are
//! [`super::netns`]'s.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use nix::poll::{PollFd, PollFlags, ppoll};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use super::nfqueue::{Packet, Queue, Verdict};
use super::{PathTruth, Stream};

/// The NFQUEUE queue number the core's rule sends forwarded packets to (queues belong
/// to a network namespace: every lab has its own).
pub const QUEUE: u16 = 0;
/// Bytes of each packet the kernel copies to the loop: the IPv4 header with options,
/// and the transport header's ports and flags.
const COPY: u16 = 80;
/// Packets the kernel keeps waiting for a verdict, at most: every held packet counts,
/// so it must exceed the packet rate times the longest one-way delay.
const MAX_HELD: u32 = 1 << 18;
/// The longest the loop sleeps without checking whether it should stop.
const POLL: Duration = Duration::from_millis(50);
/// Lateness histogram: 1 µs buckets up to this, then one overflow bucket.
const HISTOGRAM_US: usize = 20_000;

/// What the loop needs to judge packets.
pub struct Model {
    /// `[initiator][responder]`.
    pub truth: Vec<Vec<PathTruth>>,
    /// A round trip varies by up to ± this (each direction by half of it).
    pub jitter_ms: f64,
    pub seed: u64,
    /// The region an address belongs to.
    pub region_of: fn(Ipv4Addr) -> Option<usize>,
    /// Each region's service port (its STAMP reflector's and TCP listener's).
    pub service_ports: Vec<u16>,
}

/// Which way a packet goes in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Direction {
    /// From the side that began it.
    Request,
    Reply,
}

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;

/// What kind of packet: each kind of each direction of each path draws its loss and
/// jitter from a random stream of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Icmp,
    Udp,
    /// A SYN or a SYN-ACK.
    TcpSyn,
    Tcp,
    Other,
}

/// Whether `p` (an IPv4 packet from region `src` to region `dst`) is a request or a
/// reply, and its class: to or from the lab's service port; by ICMP type (echo,
/// timestamp, information and address-mask requests, or their replies and the errors,
/// which answer the packet they quote); a SYN without ACK opens, a SYN with ACK
/// answers; otherwise the side with the lower port is the server (ephemeral ports are
/// high).
fn direction(p: &[u8], src: usize, dst: usize, service_ports: &[u16]) -> (Direction, Class) {
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
    let Some(l4) = p.get(ihl..).filter(|_| ihl >= 20 && fragment_offset == 0) else {
        return (Direction::Request, Class::Other);
    };
    match p[9] {
        ICMP => match l4.first() {
            Some(0 | 3 | 4 | 5 | 11 | 12 | 14 | 16 | 18) => (Direction::Reply, Class::Icmp),
            _ => (Direction::Request, Class::Icmp),
        },
        proto @ (TCP | UDP) if l4.len() >= 4 => {
            let sport = u16::from_be_bytes([l4[0], l4[1]]);
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            const SYN: u8 = 0x02;
            const ACK: u8 = 0x10;
            let flags = (proto == TCP).then(|| l4.get(13).map_or(0, |f| f & (SYN | ACK)));
            let class = match flags {
                None => Class::Udp,
                Some(f) if f & SYN != 0 => Class::TcpSyn,
                Some(_) => Class::Tcp,
            };
            let direction = if service_ports.get(dst) == Some(&dport) {
                Direction::Request
            } else if service_ports.get(src) == Some(&sport) {
                Direction::Reply
            } else if flags == Some(SYN) {
                Direction::Request
            } else if flags == Some(SYN | ACK) || sport < dport {
                Direction::Reply
            } else {
                Direction::Request
            };
            (direction, class)
        }
        _ => (Direction::Request, Class::Other),
    }
}

/// The random streams of a lab: one per path, direction and class, seeded from the
/// lab's seed, so that the n-th probe of a path meets the same fate in every run
/// whatever the other paths' packets do (and a test that passes once with a seed
/// passes every time).
pub(crate) struct Streams {
    seed: u64,
    streams: HashMap<(usize, usize, Direction, Class), Stream>,
}

impl Streams {
    pub(crate) fn new(seed: u64) -> Streams {
        Streams {
            seed,
            streams: HashMap::new(),
        }
    }

    fn get(&mut self, key: (usize, usize, Direction, Class)) -> &mut Stream {
        let seed = self.seed;
        self.streams.entry(key).or_insert_with(|| {
            let (i, j, d, c) = key;
            let h = [d as u64, c as u64]
                .into_iter()
                .fold(super::path_seed(seed, i, j), |h, part| {
                    super::splitmix(h ^ part)
                });
            Stream::new(h)
        })
    }
}

/// What became of one packet.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    /// Not between two regions: on its way at once.
    Pass,
    Hold(Duration),
    /// Lost on purpose (the path's loss).
    Lose,
    /// The path is unreachable in the lab.
    Unreachable,
}

impl Model {
    fn fate(&self, packet: &[u8], streams: &mut Streams) -> Fate {
        let Some((src, dst)) = ipv4_addresses(packet) else {
            return Fate::Pass;
        };
        let (Some(s), Some(d)) = ((self.region_of)(src), (self.region_of)(dst)) else {
            return Fate::Pass;
        };
        if s == d {
            return Fate::Pass;
        }
        let (way, class) = direction(packet, s, d, &self.service_ports);
        let (initiator, responder) = match way {
            Direction::Request => (s, d),
            Direction::Reply => (d, s),
        };
        let Some(path) = self.truth.get(initiator).and_then(|r| r.get(responder)) else {
            return Fate::Pass;
        };
        let Some(rtt_ms) = path.rtt_ms else {
            return Fate::Unreachable;
        };
        let stream = streams.get((initiator, responder, way, class));
        let each_way = 1.0 - (1.0 - path.loss.clamp(0.0, 1.0)).sqrt();
        if stream.lose(each_way) {
            return Fate::Lose;
        }
        let noise = stream.jitter(self.jitter_ms / 2.0);
        // The configuration bounds every term (`MAX_LAB_MS`); a sum past what a
        // duration holds is lost, never a panic.
        match Duration::try_from_secs_f64(((rtt_ms / 2.0) + noise).max(0.0) / 1000.0) {
            Ok(d) => Fate::Hold(d),
            Err(_) => Fate::Lose,
        }
    }
}

/// The source and destination of an IPv4 packet.
fn ipv4_addresses(p: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let a = |i: usize| Ipv4Addr::new(p[i], p[i + 1], p[i + 2], p[i + 3]);
    Some((a(12), a(16)))
}

/// The emulator's counters, as `latmap lab status` shows them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EmulatorStats {
    /// Whether the loop got real-time priority.
    pub realtime: bool,
    /// Packets queued to the loop.
    pub packets: u64,
    /// Held for their path's delay, then sent on.
    pub delayed: u64,
    /// Dropped for their path's loss.
    pub lost: u64,
    /// Dropped because their path is unreachable.
    pub unreachable: u64,
    /// Not between two regions' addresses: sent on at once.
    pub passed: u64,
    /// Held right now.
    pub held: u64,
    /// Packets the kernel could not hand to the loop (its socket overflowed): dropped,
    /// not by the lab's loss. Should be 0.
    pub overflows: u64,
    /// Verdicts the kernel refused (should be 0).
    pub verdict_errors: u64,
    /// How late the held packets were sent on, beyond their due time, in microseconds:
    /// the emulator's own error.
    pub late_p50_us: u64,
    pub late_p99_us: u64,
    pub late_max_us: u64,
    pub late_mean_us: f64,
}

#[derive(Default)]
struct Counters {
    packets: AtomicU64,
    delayed: AtomicU64,
    lost: AtomicU64,
    unreachable: AtomicU64,
    passed: AtomicU64,
    held: AtomicU64,
    overflows: AtomicU64,
    verdict_errors: AtomicU64,
    realtime: AtomicBool,
    /// Lateness counts per microsecond; the last bucket takes everything beyond.
    lateness: Mutex<Lateness>,
}

struct Lateness {
    buckets: Vec<u64>,
    sum_us: f64,
    max_us: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            buckets: vec![0; HISTOGRAM_US + 1],
            sum_us: 0.0,
            max_us: 0,
        }
    }
}

impl Lateness {
    fn add(&mut self, us: u64) {
        let i = usize::try_from(us)
            .unwrap_or(HISTOGRAM_US)
            .min(HISTOGRAM_US);
        self.buckets[i] += 1;
        self.sum_us += us as f64;
        self.max_us = self.max_us.max(us);
    }

    fn quantile(&self, p: f64) -> u64 {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * p).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.buckets.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return if i == HISTOGRAM_US {
                    self.max_us
                } else {
                    i as u64
                };
            }
        }
        self.max_us
    }
}

/// A running verdict loop. Dropping it stops the loop (held packets are dropped by the
/// kernel when the queue's socket closes).
pub struct Emulator {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the loop's threads share.
struct Shared {
    queue: Queue,
    model: Model,
    state: Mutex<State>,
    counters: Counters,
    stop: AtomicBool,
}

/// The held packets, and the randomness of loss and jitter.
struct State {
    heap: BinaryHeap<Reverse<Held>>,
    order: u64,
    streams: Streams,
}

/// How many threads run the loop: one per CPU (at most four). Each sleeps until the
/// next deadline on its own CPU, and whichever wakes first gives the verdicts, so a
/// CPU held up (this kernel does not preempt a task in the kernel, and a build spends
/// long stretches there) does not hold up the lab.
fn workers() -> Vec<Option<usize>> {
    let cpus: Vec<usize> = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect()
        })
        .unwrap_or_default();
    if cpus.len() < 2 {
        return vec![None];
    }
    cpus.into_iter().take(4).map(Some).collect()
}

impl Emulator {
    /// Starts the loop on threads of its own. `enter` runs first on the first of them,
    /// to put it into the core namespace (the queues belong to the namespace of the
    /// socket); the queues are bound before this returns.
    pub fn start(
        model: Model,
        enter: impl FnOnce() -> std::io::Result<()> + Send + 'static,
    ) -> std::io::Result<Emulator> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let first = std::thread::Builder::new()
            .name("lab-emulator".into())
            .spawn(move || {
                let queue = enter().and_then(|()| Queue::open(&[QUEUE], COPY, MAX_HELD));
                let queue = match queue {
                    Ok(q) => q,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let shared = Arc::new(Shared {
                    queue,
                    state: Mutex::new(State {
                        heap: BinaryHeap::new(),
                        order: 0,
                        streams: Streams::new(model.seed),
                    }),
                    model,
                    counters: Counters::default(),
                    stop: AtomicBool::new(false),
                });
                let cpus = workers();
                let mut others = Vec::new();
                for (k, &cpu) in cpus.iter().enumerate().skip(1) {
                    let shared = shared.clone();
                    match std::thread::Builder::new()
                        .name(format!("lab-emulator-{k}"))
                        .spawn(move || work(&shared, cpu))
                    {
                        Ok(t) => others.push(t),
                        Err(e) => {
                            tracing::warn!(error = %e, "the lab's emulator runs on fewer threads")
                        }
                    }
                }
                let _ = ready_tx.send(Ok((shared.clone(), others)));
                work(&shared, cpus.first().copied().flatten());
            })?;
        match ready_rx.recv() {
            Ok(Ok((shared, mut threads))) => {
                threads.push(first);
                Ok(Emulator { shared, threads })
            }
            Ok(Err(e)) => {
                let _ = first.join();
                Err(e)
            }
            Err(_) => {
                let _ = first.join();
                Err(std::io::Error::other("the emulator thread ended at start"))
            }
        }
    }

    /// The counters now.
    pub fn stats(&self) -> EmulatorStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let late = lock(&c.lateness);
        let delayed = get(&c.delayed);
        EmulatorStats {
            realtime: c.realtime.load(Ordering::Relaxed),
            packets: get(&c.packets),
            delayed,
            lost: get(&c.lost),
            unreachable: get(&c.unreachable),
            passed: get(&c.passed),
            held: get(&c.held),
            overflows: get(&c.overflows),
            verdict_errors: get(&c.verdict_errors),
            late_p50_us: late.quantile(0.5),
            late_p99_us: late.quantile(0.99),
            late_max_us: late.max_us,
            late_mean_us: if delayed > 0 {
                late.sum_us / delayed as f64
            } else {
                0.0
            },
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A held packet, due at `at`.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Held {
    at: Instant,
    order: u64,
    queue: u16,
    id: u32,
}

/// Verdicts given per call while others wait: short calls let the other threads take
/// what falls due meanwhile (each verdict runs the packet's whole way on through the
/// kernel, some 15 µs).
const BATCH: usize = 16;

/// One thread of the loop, on `cpu` when given.
fn work(shared: &Shared, cpu: Option<usize>) {
    // Linux lets a sleeping thread wake up to 50 µs late by default ("timer slack");
    // this thread's whole job is waking on time. Where permitted, run ahead of ordinary
    // work, so that a busy machine does not add its scheduling delays to the lab's.
    let _ = nix::sys::prctl::set_timerslack(1);
    if let Some(cpu) = cpu {
        let mut set = nix::sched::CpuSet::new();
        if set.set(cpu).is_ok() {
            let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
        }
    }
    let counters = &shared.counters;
    let realtime = crate::sockopt::realtime_priority();
    if cpu.is_none_or(|c| c == 0) || !realtime {
        counters.realtime.store(realtime, Ordering::Relaxed);
    }
    if !realtime {
        tracing::warn!(
            "the lab's emulator runs without real-time priority: a busy machine adds to its delays"
        );
    }
    let mut buf = super::nfqueue::receive_buffer();
    let mut batch: Vec<(u16, u32, Verdict)> = Vec::with_capacity(BATCH);
    let mut due: Vec<Instant> = Vec::with_capacity(BATCH);
    let mut arrived: Vec<Packet> = Vec::new();
    let mut immediate: Vec<(u16, u32, Verdict)> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        // Everything due goes out, a few at a time.
        loop {
            let now = Instant::now();
            {
                let mut state = lock(&shared.state);
                while batch.len() < BATCH && state.heap.peek().is_some_and(|Reverse(h)| h.at <= now)
                {
                    if let Some(Reverse(h)) = state.heap.pop() {
                        batch.push((h.queue, h.id, Verdict::Accept));
                        due.push(h.at);
                    }
                }
            }
            if batch.is_empty() {
                break;
            }
            let sent = Instant::now();
            give(&shared.queue, &batch, counters);
            let mut late = lock(&counters.lateness);
            for at in &due {
                late.add(sent.saturating_duration_since(*at).as_micros() as u64);
            }
            drop(late);
            counters
                .held
                .fetch_sub(batch.len() as u64, Ordering::Relaxed);
            batch.clear();
            due.clear();
        }
        let next = lock(&shared.state).heap.peek().map(|Reverse(h)| h.at);
        let wait = next
            .map_or(POLL, |at| at.saturating_duration_since(Instant::now()))
            .min(POLL);
        if !wait.is_zero() {
            let mut fds = [PollFd::new(shared.queue.as_fd(), PollFlags::POLLIN)];
            match ppoll(&mut fds, Some(TimeSpec::from_duration(wait)), None) {
                Ok(0) => continue,
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the lab's emulator cannot wait on its queue");
                    std::thread::sleep(wait);
                    continue;
                }
            }
        }
        // The kernel's receive times are on the wall clock; carry them over to the
        // monotonic one once per batch.
        let (wall, mono) = (SystemTime::now(), Instant::now());
        match shared.queue.drain(&mut buf, |p| arrived.push(p)) {
            Ok(overflows) => {
                counters.overflows.fetch_add(overflows, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "the lab's emulator cannot read its queue"),
        }
        if arrived.is_empty() {
            continue;
        }
        {
            let mut state = lock(&shared.state);
            let state = &mut *state;
            for p in arrived.drain(..) {
                counters.packets.fetch_add(1, Ordering::Relaxed);
                match shared.model.fate(&p.payload, &mut state.streams) {
                    Fate::Pass => {
                        counters.passed.fetch_add(1, Ordering::Relaxed);
                        immediate.push((p.queue, p.id, Verdict::Accept));
                    }
                    Fate::Lose => {
                        counters.lost.fetch_add(1, Ordering::Relaxed);
                        immediate.push((p.queue, p.id, Verdict::Drop));
                    }
                    Fate::Unreachable => {
                        counters.unreachable.fetch_add(1, Ordering::Relaxed);
                        immediate.push((p.queue, p.id, Verdict::Drop));
                    }
                    Fate::Hold(hold) => {
                        let arrived = p
                            .timestamp
                            .and_then(|t| wall.duration_since(t).ok())
                            .filter(|age| *age < Duration::from_secs(1))
                            .and_then(|age| mono.checked_sub(age))
                            .unwrap_or(mono);
                        state.order += 1;
                        state.heap.push(Reverse(Held {
                            at: arrived + hold,
                            order: state.order,
                            queue: p.queue,
                            id: p.id,
                        }));
                        counters.delayed.fetch_add(1, Ordering::Relaxed);
                        counters.held.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        give(&shared.queue, &immediate, counters);
        immediate.clear();
    }
}

fn give(queue: &Queue, batch: &[(u16, u32, Verdict)], counters: &Counters) {
    // A netlink message holds many verdicts; keep each call to a few hundred.
    for chunk in batch.chunks(256) {
        if let Err(e) = queue.verdicts(chunk) {
            counters
                .verdict_errors
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            tracing::warn!(error = %e, "the kernel refused the lab's verdicts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region_of(ip: Ipv4Addr) -> Option<usize> {
        let o = ip.octets();
        (o[0] == 10 && o[3] >= 1).then(|| usize::from(o[3]) - 1)
    }

    /// An ICMP message of type `kind` from `src` to `dst`.
    fn echo(src: [u8; 4], dst: [u8; 4], kind: u8) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[9] = ICMP;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20] = kind;
        p
    }

    /// A TCP or UDP packet between two ports, with TCP `flags`.
    fn segment(
        proto: u8,
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: u8,
    ) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = proto;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p[20..22].copy_from_slice(&sport.to_be_bytes());
        p[22..24].copy_from_slice(&dport.to_be_bytes());
        p[33] = flags;
        p
    }

    fn request(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        echo(src, dst, 8)
    }

    fn reply(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        echo(src, dst, 0)
    }

    fn model(loss: f64, jitter_ms: f64) -> Model {
        let t = |rtt: Option<f64>| PathTruth { rtt_ms: rtt, loss };
        Model {
            truth: vec![
                vec![t(None), t(Some(10.0)), t(None)],
                vec![t(Some(30.0)), t(None), t(Some(4.0))],
                vec![t(Some(1.0)), t(Some(2.0)), t(None)],
            ],
            jitter_ms,
            seed: 7,
            region_of,
            service_ports: vec![8620, 8620, 9000],
        }
    }

    #[test]
    fn the_initiator_decides_the_path_and_each_way_holds_half() {
        let m = model(0.0, 0.0);
        let mut rng = Streams::new(1);
        let (a, b, c) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        let ms = |x: f64| Fate::Hold(Duration::from_secs_f64(x / 1000.0));
        // a asks b: path a → b (10 ms), both ways.
        assert_eq!(m.fate(&request(a, b), &mut rng), ms(5.0));
        assert_eq!(m.fate(&reply(b, a), &mut rng), ms(5.0));
        // b asks a: path b → a (30 ms).
        assert_eq!(m.fate(&request(b, a), &mut rng), ms(15.0));
        assert_eq!(m.fate(&reply(a, b), &mut rng), ms(15.0));
        // a → c is unreachable, both ways.
        assert_eq!(m.fate(&request(a, c), &mut rng), Fate::Unreachable);
        assert_eq!(m.fate(&reply(c, a), &mut rng), Fate::Unreachable);
        // Not between two regions, or not IPv4: on at once.
        assert_eq!(m.fate(&request([192, 0, 2, 1], b), &mut rng), Fate::Pass);
        assert_eq!(m.fate(&[0x60; 40], &mut rng), Fate::Pass);
        assert_eq!(m.fate(&[0x45; 8], &mut rng), Fate::Pass);
    }

    #[test]
    fn requests_and_replies_are_told_apart_by_the_packet() {
        use Direction::{Reply, Request};
        let ports = [8620, 8620, 9000];
        let (a, b, c) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        let d = |p: &[u8], s, t| direction(p, s, t, &ports).0;
        // ICMP by type: echo, timestamp; replies and errors answer.
        assert_eq!(d(&echo(a, b, 8), 0, 1), Request);
        assert_eq!(d(&echo(a, b, 13), 0, 1), Request);
        for t in [0, 3, 11, 14] {
            assert_eq!(d(&echo(b, a, t), 1, 0), Reply, "type {t}");
        }
        // To or from the lab's service port, whatever the other port.
        assert_eq!(d(&segment(UDP, a, 40000, c, 9000, 0), 0, 2), Request);
        assert_eq!(d(&segment(UDP, c, 9000, a, 40000, 0), 2, 0), Reply);
        assert_eq!(d(&segment(UDP, a, 80, c, 9000, 0), 0, 2), Request);
        // Port 8620 is a's and b's service, not c's: from c it is just a low port.
        assert_eq!(d(&segment(TCP, c, 8620, a, 50000, 0x10), 2, 0), Reply);
        // TCP handshakes by their flags, elsewhere.
        assert_eq!(d(&segment(TCP, a, 40000, c, 5000, 0x02), 0, 2), Request);
        assert_eq!(d(&segment(TCP, c, 5000, a, 40000, 0x12), 2, 0), Reply);
        assert_eq!(d(&segment(TCP, a, 50000, c, 40000, 0x02), 0, 2), Request);
        // Then the lower port is the server's.
        assert_eq!(d(&segment(TCP, a, 50000, c, 443, 0x10), 0, 2), Request);
        assert_eq!(d(&segment(TCP, c, 443, a, 50000, 0x18), 2, 0), Reply);
        assert_eq!(d(&segment(UDP, c, 53, a, 50000, 0), 2, 0), Reply);
        // A later fragment has no ports: taken as a request.
        let mut frag = segment(UDP, c, 53, a, 50000, 0);
        frag[7] = 1;
        assert_eq!(d(&frag, 2, 0), Request);
        // Another protocol, or a packet cut short.
        let mut gre = segment(UDP, c, 53, a, 50000, 0);
        gre[9] = 47;
        assert_eq!(d(&gre, 2, 0), Request);
        assert_eq!(d(&segment(UDP, c, 53, a, 50000, 0)[..22], 2, 0), Request);
    }

    #[test]
    fn each_path_and_kind_draws_from_its_own_stream() {
        let m = model(0.5, 2.0);
        let (a, b, c) = ([10, 0, 0, 1], [10, 0, 0, 2], [10, 0, 0, 3]);
        let fates = |mix: bool| {
            let mut streams = Streams::new(9);
            let mut out = Vec::new();
            for k in 0..200 {
                if mix && k % 3 == 0 {
                    // Another path's and another kind's packets in between.
                    m.fate(&request(b, c), &mut streams);
                    m.fate(&segment(TCP, a, 40000, b, 8620, 0x02), &mut streams);
                }
                out.push(m.fate(&request(a, b), &mut streams));
            }
            out
        };
        assert_eq!(fates(false), fates(true));
        assert!(fates(false).contains(&Fate::Lose));
        assert!(fates(false).iter().any(|f| matches!(f, Fate::Hold(_))));
    }

    #[test]
    fn a_round_trip_is_lost_with_the_paths_loss() {
        let m = model(0.19, 0.0);
        let mut rng = Streams::new(3);
        let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
        let n = 40_000;
        let lost = (0..n)
            .filter(|_| {
                m.fate(&request(a, b), &mut rng) == Fate::Lose
                    || m.fate(&reply(b, a), &mut rng) == Fate::Lose
            })
            .count();
        let ratio = lost as f64 / f64::from(n);
        // Standard error at n = 40,000 is 0.002; 5 of them.
        assert!((ratio - 0.19).abs() < 0.01, "{ratio}");
    }

    #[test]
    fn jitter_spreads_each_way_by_half_and_never_goes_negative() {
        let m = model(0.0, 4.0);
        let mut rng = Streams::new(5);
        let (c, a) = ([10, 0, 0, 3], [10, 0, 0, 1]);
        let holds: Vec<f64> = (0..2000)
            .map(|_| match m.fate(&request(c, a), &mut rng) {
                Fate::Hold(d) => d.as_secs_f64() * 1000.0,
                other => panic!("{other:?}"),
            })
            .collect();
        // Path c → a is 1 ms: each way 0.5 ms ± 2 ms, clamped at 0.
        assert!(holds.iter().all(|&h| (0.0..=2.5).contains(&h)));
        assert!(holds.contains(&0.0));
        assert!(holds.iter().any(|&h| h > 2.0));
    }

    #[test]
    fn lateness_quantiles() {
        let mut l = Lateness::default();
        for us in 1..=100 {
            l.add(us);
        }
        l.add(1_000_000);
        assert_eq!(l.quantile(0.5), 51);
        assert_eq!(l.quantile(0.99), 100);
        assert_eq!(l.quantile(1.0), 1_000_000);
        assert_eq!(l.max_us, 1_000_000);
        assert_eq!(Lateness::default().quantile(0.5), 0);
    }
}
