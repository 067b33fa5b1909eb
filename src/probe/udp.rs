//! The STAMP session-sender (RFC 8762, unauthenticated, stateless reflector assumed).
//!
//! One UDP socket per prober and address family; every probe gets a unique sequence
//! number, replies are matched on it and on the address they came from. The RTT is
//! (T4 − T1) − (T3 − T2): the reflector's dwell time, measured on its own clock, is
//! taken out so a slow reflector does not look like a slow network.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::io::Interest;

use tokio::net::UdpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::datagram;
use super::stamp::{self, NtpTimestamp, ReflectorPacket, SenderPacket};
use super::{Counters, Outcome, PathCounters, ProbeError};
use crate::config::{ProbeKind, ProbeSettings};

enum Slot {
    Waiting {
        path: usize,
        from: SocketAddr,
        reply: oneshot::Sender<Reply>,
    },
    Answered {
        path: usize,
    },
    Expired {
        path: usize,
    },
}

type Slots = Arc<Mutex<HashMap<u32, Slot>>>;

pub(crate) struct UdpSender {
    socket: std::net::UdpSocket,
    slots: Slots,
    next_seq: u32,
    packet_len: usize,
    timeout: std::time::Duration,
    receiver: JoinHandle<()>,
}

impl Drop for UdpSender {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

impl UdpSender {
    pub(crate) fn open(
        source: Option<IpAddr>,
        v6: bool,
        settings: &ProbeSettings,
        counters: Arc<Counters>,
        paths: Arc<Vec<PathCounters>>,
    ) -> Result<UdpSender, ProbeError> {
        let ip = source.unwrap_or(if v6 {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        let addr = SocketAddr::new(ip, 0);
        let bind_err = |source| ProbeError::Bind {
            kind: ProbeKind::Udp,
            addr,
            source,
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .map_err(bind_err)?;
        // Room for many replies in flight; the kernel caps this at net.core.rmem_max.
        let _ = socket.set_recv_buffer_size(4 << 20);
        // Kernel receive timestamps: see `round_trip`.
        if let Err(e) = datagram::enable_receive_info(&socket, false) {
            tracing::debug!(error = %e, "no kernel receive timestamps; RTTs include the prober's wake-up time");
        }
        socket.set_nonblocking(true).map_err(bind_err)?;
        socket.bind(&addr.into()).map_err(bind_err)?;
        // Sends go through a plain clone of the socket: tokio's try_send_to reports
        // "would block" until its reactor has seen the socket writable once, which
        // would fail the first probe of a sweep.
        let sender = socket.try_clone().map_err(bind_err)?.into();
        let socket = Arc::new(UdpSocket::from_std(socket.into()).map_err(bind_err)?);
        let slots: Slots = Arc::default();
        let receiver = tokio::spawn(receive(socket, slots.clone(), counters, paths));
        Ok(UdpSender {
            socket: sender,
            slots,
            // Start at a random point so two sweeps' packets are never confused.
            next_seq: rand::random(),
            packet_len: stamp::PACKET_LEN + settings.payload.unwrap_or(0),
            timeout: settings.timeout,
            receiver,
        })
    }

    /// Sends one probe now; the handle resolves when its reply or its timeout comes.
    pub(crate) fn send(&mut self, path: usize, to: SocketAddr) -> JoinHandle<Outcome> {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let (tx, rx) = oneshot::channel();
        let mut buf = vec![0u8; self.packet_len];
        let sent = Instant::now();
        let sent_wall = SystemTime::now();
        SenderPacket {
            seq,
            timestamp: NtpTimestamp::from_system_time(sent_wall),
            error_estimate: stamp::ERROR_ESTIMATE,
        }
        .encode(&mut buf);
        lock(&self.slots).insert(
            seq,
            Slot::Waiting {
                path,
                from: to,
                reply: tx,
            },
        );
        let sent_ok = match self.socket.send_to(&buf, to) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(%to, error = %e, "udp send failed");
                lock(&self.slots).remove(&seq);
                false
            }
        };
        let slots = self.slots.clone();
        let timeout = self.timeout;
        tokio::spawn(async move {
            if !sent_ok {
                return Outcome::SendFailed;
            }
            match tokio::time::timeout_at(sent + timeout, rx).await {
                Ok(Ok(Reply {
                    received,
                    kernel,
                    packet,
                })) => {
                    let raw = round_trip(sent, sent_wall, received, kernel);
                    let rtt = match packet.dwell() {
                        Some(dwell) if dwell < raw => raw - dwell,
                        _ => raw,
                    };
                    Outcome::Reply(rtt)
                }
                _ => {
                    let mut slots = lock(&slots);
                    if let Some(Slot::Waiting { path, .. }) = slots.get(&seq) {
                        let path = *path;
                        slots.insert(seq, Slot::Expired { path });
                    }
                    Outcome::Lost
                }
            }
        })
    }
}

/// What the receive task hands to a waiting probe.
struct Reply {
    /// When the receive task got the packet.
    received: Instant,
    /// When the kernel got it (`SO_TIMESTAMPNS`), if it said.
    kernel: Option<SystemTime>,
    packet: ReflectorPacket,
}

/// T4 − T1. The kernel's receive time is used when it has one: it does not include the
/// time the prober's task waited for a CPU, which a busy machine makes long. It is on
/// the wall clock, so it is checked against the monotonic measurement (it can only be
/// earlier) and ignored if the clock was stepped in between.
fn round_trip(
    sent: Instant,
    sent_wall: SystemTime,
    received: Instant,
    kernel: Option<SystemTime>,
) -> Duration {
    let user = received.saturating_duration_since(sent);
    match kernel.and_then(|k| k.duration_since(sent_wall).ok()) {
        Some(k) if k <= user + Duration::from_millis(1) => k,
        _ => user,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn receive(
    socket: Arc<UdpSocket>,
    slots: Slots,
    counters: Arc<Counters>,
    paths: Arc<Vec<PathCounters>>,
) {
    let mut buf = vec![0u8; 65536];
    let fd = socket.as_raw_fd();
    loop {
        if let Err(e) = socket.readable().await {
            tracing::debug!(error = %e, "udp socket not readable");
            continue;
        }
        let (len, from, kernel) =
            match socket.try_io(Interest::READABLE, || datagram::receive(fd, &mut buf)) {
                Ok(d) => (d.len, d.from, d.kernel_time),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    // ICMP errors surface here as ECONNREFUSED and the like; they are not
                    // matched to a probe (that probe then times out).
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            };
        let received = Instant::now();
        let Ok(packet) = ReflectorPacket::decode(&buf[..len]) else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let mut slots = lock(&slots);
        let seq = packet.sender_seq;
        match slots.remove(&seq) {
            Some(Slot::Waiting {
                path,
                from: expected,
                reply,
            }) if expected == from => {
                let _ = reply.send(Reply {
                    received,
                    kernel,
                    packet,
                });
                slots.insert(seq, Slot::Answered { path });
            }
            Some(slot @ Slot::Waiting { .. }) => {
                // Right sequence number, wrong sender: not ours to count.
                slots.insert(seq, slot);
                counters.unmatched.fetch_add(1, Ordering::Relaxed);
            }
            Some(Slot::Answered { path }) => {
                if let Some(c) = paths.get(path) {
                    c.duplicates.fetch_add(1, Ordering::Relaxed);
                }
                slots.insert(seq, Slot::Answered { path });
            }
            Some(Slot::Expired { path }) => {
                if let Some(c) = paths.get(path) {
                    c.late.fetch_add(1, Ordering::Relaxed);
                }
                slots.insert(seq, Slot::Expired { path });
            }
            None => {
                counters.unmatched.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
