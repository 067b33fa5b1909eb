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
//! It answers STAMP senders (RFC 8762) and TWAMP-Light senders (RFC 5357 Appendix I:
//! requests of 14 bytes and up get the 41-byte reflector layout, or the request's size
//! when it is longer). On a wildcard socket it replies from the address each request
//! was sent to (`IP_PKTINFO`), so a host with several addresses answers for each. It
//! never answers a reply ([`stamp::shape`]) nor a packet from its own address and
//! port, so a forged packet cannot set two reflectors (or one) bouncing forever, and it
//! caps its replies per source address, so it cannot be used to reflect a flood.
//! Everything it does not answer is counted.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::probe::datagram::{self, Want};
use crate::probe::stamp::{self, NtpTimestamp, ReflectorPacket, SenderPacket, Shape};

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
    /// Shorter than any test packet: counted and ignored.
    pub malformed: AtomicU64,
    /// Reflector packets (replies): never answered.
    pub replies_ignored: AtomicU64,
    /// From this socket's own address and port: never answered.
    pub looped: AtomicU64,
    /// Over the per-source cap: not answered.
    pub rate_limited: AtomicU64,
}

/// How many replies the reflector sends per source address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Replies per second to one address, on average.
    pub per_second: f64,
    /// Replies to one address in a burst.
    pub burst: f64,
    /// Source addresses tracked at once; past it, new ones wait until old ones go
    /// quiet (so a flood from forged sources cannot exhaust memory).
    pub max_sources: usize,
}

impl RateLimit {
    /// `latmap reflect`'s default: 1,000 replies per second per source address, as a
    /// burst too. A prober sends one probe per target per `interval` (100 ms by
    /// default), far below it; `latmap ping -p 1ms` stays at it.
    pub const DEFAULT: RateLimit = RateLimit {
        per_second: 1000.0,
        burst: 1000.0,
        max_sources: 65_536,
    };
}

/// How a reflector set behaves.
#[derive(Clone, Default)]
pub struct Options {
    /// The lab's emulated network, if any.
    pub impairment: Option<Arc<dyn Impairment>>,
    /// The cap on replies per source address; `None` for none (the lab, which only
    /// its own probers reach).
    pub rate_limit: Option<RateLimit>,
    /// Run the receive threads at real-time priority where permitted (the netns lab's
    /// reflectors: the time between their transmit timestamp and their send is part
    /// of the lab's error, and a busy machine must not stretch it).
    pub realtime: bool,
}

/// Token buckets per source address.
struct Limiter {
    limit: RateLimit,
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    /// Whether a reply to `ip` may go now.
    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let limit = self.limit;
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= limit.max_sources {
            // Forget the sources whose bucket has refilled: they are quiet.
            let full = Duration::from_secs_f64(limit.burst / limit.per_second);
            self.buckets
                .retain(|_, (_, last)| now.saturating_duration_since(*last) < full);
            if self.buckets.len() >= limit.max_sources {
                return false;
            }
        }
        let (tokens, last) = self.buckets.entry(ip).or_insert((limit.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * limit.per_second;
        *tokens = (*tokens + refill).min(limit.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Why a reflector could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReflectError {
    #[error("cannot listen on udp {addr}: {hint}")]
    Bind {
        addr: SocketAddr,
        hint: String,
        source: io::Error,
    },
    #[error("cannot set up the reflector: {0}")]
    Setup(#[from] io::Error),
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
        /// The local address the request was sent to.
        to: Option<IpAddr>,
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
        /// The local address to send from.
        from: Option<IpAddr>,
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
    /// The address each socket is bound to.
    bound: Vec<SocketAddr>,
    stats: Vec<ReflectorStats>,
    limiter: Option<Mutex<Limiter>>,
    queue: Mutex<(BinaryHeap<Reverse<Event>>, u64)>,
    wake: Condvar,
    stop: AtomicBool,
    impairment: Option<Arc<dyn Impairment>>,
    realtime: bool,
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
    pub fn start(addrs: &[SocketAddr], options: Options) -> Result<ReflectorSet, ReflectError> {
        let mut sockets = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            // An IPv6 wildcard also takes IPv4 unless told not to; when an IPv4 address
            // on the same port is listed too, it is told not to.
            let v6_only =
                addr.is_ipv6() && addrs.iter().any(|a| a.is_ipv4() && a.port() == addr.port());
            let socket = bind_udp(addr, v6_only).map_err(|source| ReflectError::Bind {
                addr,
                hint: crate::probe::bind_hint(addr, &source),
                source,
            })?;
            socket.set_read_timeout(Some(POLL))?;
            crate::sockopt::grow_receive_buffer(&socket, 4 << 20);
            let want = Want {
                ttl: true,
                local_address: addr.ip().is_unspecified(),
                queue_drops: false,
            };
            if let Err(e) = datagram::enable(&socket, want) {
                tracing::debug!(error = %e, "no kernel receive details on the reflector");
            }
            sockets.push(socket);
        }
        let bound = sockets
            .iter()
            .map(|s| s.local_addr())
            .collect::<io::Result<Vec<_>>>()?;
        let Options {
            impairment,
            rate_limit,
            realtime,
        } = options;
        let shared = Arc::new(Shared {
            stats: sockets.iter().map(|_| ReflectorStats::default()).collect(),
            sockets,
            bound: bound.clone(),
            limiter: rate_limit.map(|limit| {
                Mutex::new(Limiter {
                    limit,
                    buckets: HashMap::new(),
                })
            }),
            queue: Mutex::new((BinaryHeap::new(), 0)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            impairment,
            realtime,
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

fn bind_udp(addr: SocketAddr, v6_only: bool) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if v6_only {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn receive_loop(shared: &Shared, index: usize) {
    if shared.realtime {
        let _ = crate::sockopt::realtime_priority();
    }
    let socket = &shared.sockets[index];
    let stats = &shared.stats[index];
    let own = shared.bound[index];
    let mut buf = vec![0u8; 65536];
    let mut rx = datagram::Receiver::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let d = match rx.receive(socket, &mut buf, true) {
            Ok(d) => d,
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
        let arrived = d
            .kernel_ns
            .and_then(|k| crate::probe::wall_ns().checked_sub(k))
            .map(Duration::from_nanos)
            .filter(|late| *late < Duration::from_secs(1))
            .and_then(|late| now.checked_sub(late))
            .unwrap_or(now);
        stats.received.fetch_add(1, Ordering::Relaxed);
        let data = &buf[..d.len];
        match stamp::shape(data) {
            Err(_) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Shape::Reflector) => {
                stats.replies_ignored.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Ok(Shape::Sender) => {}
        }
        // Our own address and port: a forged packet that would have us talk to
        // ourselves. (The port of a wildcard socket is its own; its address is the
        // one the packet was sent to.)
        let here = SocketAddr::new(d.to.unwrap_or(own.ip()), own.port());
        if unmap(d.from) == unmap(here) {
            stats.looped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        if let Some(limiter) = &shared.limiter
            && !lock(limiter).allow(unmap(d.from).ip(), now)
        {
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let fate = match &shared.impairment {
            Some(imp) => imp.judge(index, d.from),
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
                let request = Request {
                    from: d.from,
                    to: d.to,
                    ttl: d.ttl,
                    received_ns: d.kernel_ns,
                };
                arrive(shared, index, &request, data, arrived + outbound);
            }
            Fate::Deliver { inbound, outbound } => {
                push(
                    shared,
                    arrived + inbound,
                    Action::Arrive {
                        socket: index,
                        from: d.from,
                        to: d.to,
                        data: data.to_vec(),
                        depart_at: arrived + inbound + outbound,
                        ttl: d.ttl,
                    },
                );
            }
        }
    }
}

/// An IPv4 address as itself, not as an IPv4-mapped IPv6 address.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

/// Where a request came from and what the kernel said of it.
struct Request {
    from: SocketAddr,
    to: Option<IpAddr>,
    ttl: Option<u8>,
    /// The kernel's receive time (ns since the Unix epoch), when the packet came
    /// straight off the socket.
    received_ns: Option<u64>,
}

/// The packet has reached the reflector: stamp T2, build the reply, stamp T3, and send
/// it at `depart_at` (now, if that has passed).
fn arrive(shared: &Shared, socket: usize, request: &Request, data: &[u8], depart_at: Instant) {
    // T2: the kernel's receive time when the packet came straight off the wire.
    let t2 = request
        .received_ns
        .map(NtpTimestamp::from_unix_nanos)
        .unwrap_or_else(NtpTimestamp::now);
    let Ok(sender) = SenderPacket::decode(data) else {
        shared.stats[socket]
            .malformed
            .fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut reply = vec![0u8; stamp::reply_len(data.len())];
    ReflectorPacket {
        seq: sender.seq, // stateless reflector: echo the sender's sequence number
        timestamp: NtpTimestamp::now(),
        error_estimate: stamp::ERROR_ESTIMATE,
        receive_timestamp: t2,
        sender_seq: sender.seq,
        sender_timestamp: sender.timestamp,
        sender_error_estimate: sender.error_estimate,
        // The IP TTL (hop limit) the request arrived with; 0 ("unknown") where the
        // kernel did not say.
        sender_ttl: request.ttl,
    }
    .encode(&mut reply);
    if depart_at <= Instant::now() {
        depart(shared, socket, request.from, request.to, &reply);
    } else {
        push(
            shared,
            depart_at,
            Action::Depart {
                socket,
                to: request.from,
                from: request.to,
                data: reply,
            },
        );
    }
}

fn depart(shared: &Shared, socket: usize, to: SocketAddr, from: Option<IpAddr>, data: &[u8]) {
    match datagram::send_from(&shared.sockets[socket], data, to, from) {
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
                        to,
                        data,
                        depart_at,
                        ttl,
                    } => {
                        let request = Request {
                            from,
                            to,
                            ttl,
                            received_ns: None,
                        };
                        arrive(shared, socket, &request, &data, depart_at);
                    }
                    Action::Depart {
                        socket,
                        to,
                        from,
                        data,
                    } => depart(shared, socket, to, from, &data),
                }
                q = lock(&shared.queue);
            }
        }
    }
}
