//! The STAMP session-reflector (`latmap reflect`), and the delaying reflector of the lab.
//!
//! Each socket gets a receive thread; packets that must be held (the lab's emulated
//! network delay) go to one scheduler thread that sleeps on a high-resolution timer.
//! Threads rather than async tasks: tokio's timers round up to whole milliseconds, and
//! the lab must hold packets to a fraction of one.
//!
//! The emulated delay belongs to the network, not to the reflector: a packet is held
//! *before* its receive timestamp (T2) is taken and *after* its transmit timestamp (T3),
//! so the sender's dwell-time correction (T3 − T2) cannot erase it.
//!
//! Bad packets (shorter than a STAMP test packet) are counted and ignored.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::probe::datagram;
use crate::probe::stamp::{self, NtpTimestamp, ReflectorPacket, SenderPacket};

/// What the emulated network does to a packet from `from` arriving at reflector
/// `reflector`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fate {
    Drop,
    /// Hold the packet `inbound` before it "arrives", and the reply `outbound` after it
    /// "leaves".
    Deliver {
        inbound: Duration,
        outbound: Duration,
    },
}

/// Decides each packet's fate; the lab implements it.
pub trait Impairment: Send + Sync {
    fn judge(&self, reflector: usize, from: SocketAddr) -> Fate;
}

/// Counters of one reflector socket.
#[derive(Debug, Default)]
pub struct ReflectorStats {
    pub received: AtomicU64,
    pub reflected: AtomicU64,
    /// Dropped on purpose by the lab's emulated loss.
    pub dropped: AtomicU64,
    /// Not STAMP test packets: counted and ignored.
    pub malformed: AtomicU64,
}

struct Event {
    at: Instant,
    order: u64,
    action: Action,
}

enum Action {
    Arrive {
        socket: usize,
        from: SocketAddr,
        data: Vec<u8>,
        /// When the reply is due out: the packet's arrival plus the whole emulated RTT,
        /// so a late wake-up before the reflector "receives" is taken from the outbound
        /// hold instead of added to the round trip.
        depart_at: Instant,
        /// The TTL the request arrived with.
        ttl: Option<u8>,
    },
    Depart {
        socket: usize,
        to: SocketAddr,
        data: Vec<u8>,
    },
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

struct Shared {
    sockets: Vec<UdpSocket>,
    stats: Vec<ReflectorStats>,
    queue: Mutex<(BinaryHeap<Reverse<Event>>, u64)>,
    wake: Condvar,
    stop: AtomicBool,
    impairment: Option<Arc<dyn Impairment>>,
}

/// A set of running reflector sockets. Dropping it stops them.
pub struct ReflectorSet {
    shared: Arc<Shared>,
    addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
}

/// How long a receive thread blocks before it checks whether it should stop.
const POLL: Duration = Duration::from_millis(100);

impl ReflectorSet {
    /// Binds one socket per address and starts reflecting.
    pub fn start(
        addrs: &[SocketAddr],
        impairment: Option<Arc<dyn Impairment>>,
    ) -> io::Result<ReflectorSet> {
        let mut sockets = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let socket = UdpSocket::bind(addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on udp {addr}: {e}"))
            })?;
            socket.set_read_timeout(Some(POLL))?;
            crate::sockopt::grow_receive_buffer(socket.as_raw_fd(), 4 << 20);
            if let Err(e) = datagram::enable_receive_info(&socket, true) {
                tracing::debug!(error = %e, "no kernel receive timestamps on the reflector");
            }
            sockets.push(socket);
        }
        let bound = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let shared = Arc::new(Shared {
            stats: sockets.iter().map(|_| ReflectorStats::default()).collect(),
            sockets,
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            impairment,
        });
        let mut threads = Vec::new();
        for index in 0..bound.len() {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("reflect-{index}"))
                    .spawn(move || receive_loop(&shared, index))?,
            );
        }
        if shared.impairment.is_some() {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("reflect-sched".into())
                    .spawn(move || schedule_loop(&shared))?,
            );
        }
        Ok(ReflectorSet {
            shared,
            addrs: bound,
            threads,
        })
    }

    /// The bound addresses, in the order given to [`ReflectorSet::start`].
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Counters per socket.
    pub fn stats(&self) -> &[ReflectorStats] {
        &self.shared.stats
    }

    /// Stops all threads and waits for them.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for ReflectorSet {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn receive_loop(shared: &Shared, index: usize) {
    let socket = &shared.sockets[index];
    let stats = &shared.stats[index];
    let mut buf = vec![0u8; 65536];
    while !shared.stop.load(Ordering::Relaxed) {
        let (len, from, kernel, ttl) = match datagram::receive(socket.as_raw_fd(), &mut buf) {
            Ok(d) => (d.len, d.from, d.kernel_time, d.ttl),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "reflector receive error");
                continue;
            }
        };
        // When the packet really arrived: the kernel's timestamp, carried over to the
        // monotonic clock, so that a late wake-up of this thread neither shortens the
        // emulated delay nor stretches the dwell time.
        let now = Instant::now();
        let arrived = kernel
            .and_then(|k| SystemTime::now().duration_since(k).ok())
            .filter(|late| *late < Duration::from_secs(1))
            .and_then(|late| now.checked_sub(late))
            .unwrap_or(now);
        stats.received.fetch_add(1, Ordering::Relaxed);
        if len < stamp::PACKET_LEN {
            stats.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let fate = match &shared.impairment {
            Some(imp) => imp.judge(index, from),
            None => Fate::Deliver {
                inbound: Duration::ZERO,
                outbound: Duration::ZERO,
            },
        };
        match fate {
            Fate::Drop => {
                stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Fate::Deliver { inbound, outbound } if inbound.is_zero() => {
                arrive(
                    shared,
                    index,
                    from,
                    &buf[..len],
                    arrived + outbound,
                    kernel,
                    ttl,
                );
            }
            Fate::Deliver { inbound, outbound } => {
                push(
                    shared,
                    arrived + inbound,
                    Action::Arrive {
                        socket: index,
                        from,
                        data: buf[..len].to_vec(),
                        depart_at: arrived + inbound + outbound,
                        ttl,
                    },
                );
            }
        }
    }
}

/// The packet has reached the reflector: stamp T2, build the reply, stamp T3, and send
/// it at `depart_at` (now, if that has passed).
fn arrive(
    shared: &Shared,
    socket: usize,
    from: SocketAddr,
    data: &[u8],
    depart_at: Instant,
    received: Option<SystemTime>,
    ttl: Option<u8>,
) {
    // T2: the kernel's receive time when the packet came straight off the wire.
    let t2 = received
        .map(NtpTimestamp::from_system_time)
        .unwrap_or_else(NtpTimestamp::now);
    let Ok(request) = SenderPacket::decode(data) else {
        shared.stats[socket]
            .malformed
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    // The reply is as long as the request (RFC 8762 symmetric size), at least 44 bytes.
    let mut reply = vec![0u8; data.len().max(stamp::PACKET_LEN)];
    ReflectorPacket {
        seq: request.seq, // stateless reflector: echo the sender's sequence number
        timestamp: NtpTimestamp::now(),
        error_estimate: stamp::ERROR_ESTIMATE,
        receive_timestamp: t2,
        sender_seq: request.seq,
        sender_timestamp: request.timestamp,
        sender_error_estimate: request.error_estimate,
        // The IP TTL (hop limit) the request arrived with; 0 where the kernel did not say.
        sender_ttl: ttl.unwrap_or(0),
    }
    .encode(&mut reply);
    if depart_at <= Instant::now() {
        depart(shared, socket, from, &reply);
    } else {
        push(
            shared,
            depart_at,
            Action::Depart {
                socket,
                to: from,
                data: reply,
            },
        );
    }
}

fn depart(shared: &Shared, socket: usize, to: SocketAddr, data: &[u8]) {
    match shared.sockets[socket].send_to(data, to) {
        Ok(_) => {
            shared.stats[socket]
                .reflected
                .fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::debug!(%to, error = %e, "reflector send failed"),
    }
}

fn push(shared: &Shared, at: Instant, action: Action) {
    let mut q = lock(&shared.queue);
    q.1 += 1;
    let order = q.1;
    let earliest = q.0.peek().is_none_or(|Reverse(e)| at < e.at);
    q.0.push(Reverse(Event { at, order, action }));
    drop(q);
    if earliest {
        shared.wake.notify_one();
    }
}

fn schedule_loop(shared: &Shared) {
    // Linux lets a sleeping thread wake up to 50 µs late by default ("timer slack");
    // this thread's whole job is waking on time.
    let _ = nix::sys::prctl::set_timerslack(1);
    // Where permitted (root, CAP_SYS_NICE), run ahead of ordinary work, so that a busy
    // machine does not add its scheduling delays to the emulated ones.
    if shared.impairment.is_some() && crate::sockopt::realtime_priority() {
        tracing::debug!("lab scheduler runs with real-time priority");
    }
    let mut q = lock(&shared.queue);
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        match q.0.peek() {
            None => {
                q = shared
                    .wake
                    .wait_timeout(q, POLL)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Some(Reverse(e)) if e.at > now => {
                let wait = e.at - now;
                q = shared
                    .wake
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            Some(_) => {
                let Some(Reverse(event)) = q.0.pop() else {
                    continue;
                };
                drop(q);
                match event.action {
                    Action::Arrive {
                        socket,
                        from,
                        data,
                        depart_at,
                        ttl,
                    } => arrive(shared, socket, from, &data, depart_at, None, ttl),
                    Action::Depart { socket, to, data } => depart(shared, socket, to, &data),
                }
                q = lock(&shared.queue);
            }
        }
    }
}
