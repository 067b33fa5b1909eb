//! ICMP echo: the socket, the request, and what came back.
//!
//! The unprivileged datagram socket is tried first, the raw socket second, and which
//! one opened is reported. Requests and replies are built and parsed with surge-ping's
//! packet layer (pnet's ICMP types, and `Icmpv4Packet`/`Icmpv6Packet::decode`, which
//! also read the request quoted inside an ICMP error). The socket, its sends and its
//! receives are latmap's own: surge-ping's client receives on a task of its own and
//! timestamps in user space after the send call returns, which is what made loopback
//! RTTs read 0 µs and 10,000 targets read 40 ms (docs/accuracy.md).
//!
//! Each request's data starts with the probe's number and a 64-bit tag keyed by the
//! prober, so a reply is matched to its probe by what it echoes, and a forged one is
//! told apart. On a raw socket the identifier is the prober's and the kernel is asked
//! to deliver only replies and errors (not the requests it sends itself on loopback).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pnet_packet::icmp::echo_request::MutableEchoRequestPacket;
use pnet_packet::icmp::{IcmpPacket as PnetIcmp, IcmpTypes};
use pnet_packet::icmpv6::Icmpv6Types;
use socket2::{Domain, Protocol, Socket, Type};
use surge_ping::{IcmpPacket, Icmpv4Packet, Icmpv6Packet, SurgeError};

use super::datagram::{self, Want};
use super::{ProbeError, bind_error};
use crate::config::ProbeKind;

/// Bytes of ICMP data when `payload` is not set (as ping and fping send).
pub const DEFAULT_PAYLOAD: usize = 56;

/// The data every request carries: the probe's number (4 bytes) and its tag (8).
pub const TAG_LEN: usize = 12;

/// The receive buffer asked for: enough for 10,000 replies in flight (each costs
/// about 1 KiB of kernel memory on loopback).
const RECV_BUFFER: usize = 16 << 20;

/// ICMPv4 types a raw socket delivers: echo reply, destination unreachable, source
/// quench, time exceeded, parameter problem.
const V4_WANTED: [u8; 5] = [0, 3, 4, 11, 12];
/// ICMPv6: echo reply, destination unreachable, packet too big, time exceeded,
/// parameter problem.
const V6_WANTED: [u8; 5] = [129, 1, 2, 3, 4];

/// One ICMP socket of a prober.
pub(crate) struct IcmpSocket {
    pub socket: Socket,
    raw: bool,
    v6: bool,
    /// The identifier of our requests (a raw socket's; the kernel sets a datagram
    /// socket's and delivers only replies that carry it).
    ident: u16,
    /// Bytes of an echo request: the 8-byte header and the data.
    request_len: usize,
}

/// What a datagram on an ICMP socket was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// An echo reply to one of our requests: the probe number and tag it echoed.
    Echo { id: u32, tag: u64 },
    /// An ICMP error about one of our requests: where it was going, and its sequence.
    Error { to: IpAddr, seq: u16 },
    /// Someone else's traffic (another program's echo reply, our own request).
    NotOurs,
    /// Not a valid ICMP message.
    Malformed,
}

impl IcmpSocket {
    pub(crate) fn open(
        source: Option<IpAddr>,
        v6: bool,
        payload: Option<usize>,
    ) -> Result<IcmpSocket, ProbeError> {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let (domain, proto) = if v6 {
            (Domain::IPV6, Protocol::ICMPV6)
        } else {
            (Domain::IPV4, Protocol::ICMPV4)
        };
        let (socket, raw) = match Socket::new(domain, Type::DGRAM, Some(proto)) {
            Ok(s) => (s, false),
            Err(dgram) => match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => (s, true),
                Err(_) => {
                    return Err(ProbeError::IcmpSocket {
                        family,
                        source: dgram,
                    });
                }
            },
        };
        if raw {
            let filtered = if v6 {
                crate::sockopt::icmp6_accept_only(&socket, &V6_WANTED)
            } else {
                crate::sockopt::icmp_accept_only(&socket, &V4_WANTED)
            };
            if !filtered {
                tracing::debug!(
                    "no ICMP type filter on the raw socket; our own requests are read and skipped"
                );
            }
        }
        if let Some(ip) = source {
            let addr = SocketAddr::new(ip, 0);
            socket
                .bind(&addr.into())
                .map_err(|e| bind_error(ProbeKind::Icmp, addr, e))?;
        }
        // Sends block (when the send buffer is full, the prober waits rather than
        // drops); receives never do (MSG_DONTWAIT).
        crate::sockopt::grow_receive_buffer(&socket, RECV_BUFFER);
        if let Err(e) = datagram::enable(
            &socket,
            Want {
                queue_drops: true,
                ..Want::default()
            },
        ) {
            tracing::debug!(error = %e, "no kernel receive timestamps on the ICMP socket");
        }
        let ident = if raw {
            rand::random()
        } else {
            socket
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map_or(0, |a| a.port())
        };
        let data = payload.unwrap_or(DEFAULT_PAYLOAD).max(TAG_LEN);
        Ok(IcmpSocket {
            socket,
            raw,
            v6,
            ident,
            request_len: 8 + data,
        })
    }

    pub(crate) fn socket_type(&self) -> &'static str {
        if self.raw { "raw" } else { "datagram" }
    }

    /// A buffer for this socket's echo requests.
    pub(crate) fn request_buffer(&self) -> Vec<u8> {
        vec![0u8; self.request_len]
    }

    /// Writes the echo request of probe `id` with its tag into `buf` (from
    /// [`IcmpSocket::request_buffer`]); its sequence number is the low 16 bits of `id`.
    pub(crate) fn fill_request(&self, buf: &mut [u8], id: u32, tag: u64) {
        buf[8..12].copy_from_slice(&id.to_be_bytes());
        buf[12..20].copy_from_slice(&tag.to_be_bytes());
        if let Some(mut p) = MutableEchoRequestPacket::new(buf) {
            // ICMPv6 echo request (128) has the same layout as ICMPv4's.
            p.set_icmp_type(if self.v6 {
                pnet_packet::icmp::IcmpType(Icmpv6Types::EchoRequest.0)
            } else {
                IcmpTypes::EchoRequest
            });
            p.set_identifier(self.ident);
            p.set_sequence_number(id as u16);
            p.set_checksum(0);
        }
        // The kernel computes ICMPv6 checksums (over a pseudo-header) and those of
        // datagram sockets; a raw ICMPv4 socket sends what it is given.
        if self.raw && !self.v6 {
            let sum = PnetIcmp::new(buf)
                .map(|p| pnet_packet::icmp::checksum(&p))
                .unwrap_or(0);
            buf[2..4].copy_from_slice(&sum.to_be_bytes());
        }
    }

    /// What `data`, received from `from`, is.
    pub(crate) fn parse(&self, data: &[u8], from: IpAddr) -> Parsed {
        parse(data, from, self.raw, self.v6, self.ident)
    }
}

/// What `data`, read from an ICMP socket (`raw` or datagram, of IPv6 or IPv4) from
/// `from`, is to a prober whose requests carry identifier `ident` (checked on raw
/// sockets only: the kernel sets a datagram socket's).
pub fn parse(data: &[u8], from: IpAddr, raw: bool, v6: bool, ident: u16) -> Parsed {
    let packet = match (from, v6) {
        (IpAddr::V4(src), false) => {
            let kind = if raw { Type::RAW } else { Type::DGRAM };
            Icmpv4Packet::decode(data, kind, src, Ipv4Addr::UNSPECIFIED).map(IcmpPacket::V4)
        }
        (IpAddr::V6(src), true) => Icmpv6Packet::decode(data, src).map(IcmpPacket::V6),
        _ => return Parsed::Malformed,
    };
    let packet = match packet {
        Ok(p) => p,
        Err(SurgeError::EchoRequestPacket) => return Parsed::NotOurs,
        Err(_) => return Parsed::Malformed,
    };
    if raw && packet.get_identifier().0 != ident {
        return Parsed::NotOurs;
    }
    let echo_reply = match &packet {
        IcmpPacket::V4(p) => p.get_icmp_type() == IcmpTypes::EchoReply,
        IcmpPacket::V6(p) => p.get_icmpv6_type() == Icmpv6Types::EchoReply,
    };
    let seq = packet.get_sequence().0;
    if !echo_reply {
        return Parsed::Error {
            to: packet.real_destination(),
            seq,
        };
    }
    // The echoed data follows the 8-byte ICMP header (and a raw IPv4 socket's IP
    // header, whose length is in its first byte).
    let at = match (raw, v6) {
        (true, false) => usize::from(data.first().map_or(5, |b| b & 0x0f)) * 4 + 8,
        _ => 8,
    };
    match data.get(at..at + TAG_LEN) {
        Some(tag) => {
            let id = u32::from_be_bytes([tag[0], tag[1], tag[2], tag[3]]);
            let mut t = [0u8; 8];
            t.copy_from_slice(&tag[4..12]);
            if id as u16 != seq {
                return Parsed::Malformed;
            }
            Parsed::Echo {
                id,
                tag: u64::from_be_bytes(t),
            }
        }
        None => Parsed::Malformed,
    }
}

/// The unspecified address of a family, for binding.
pub(crate) fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}
