//! The STAMP session-sender socket (RFC 8762, unauthenticated), which also talks to
//! TWAMP-Light reflectors (RFC 5357, Appendix I).
//!
//! One UDP socket per prober and address family. A probe's sequence number is its
//! number through the prober's keyed permutation, so it cannot be predicted, and its
//! timestamp T1 is its send time; a reply counts only when it echoes both (checked by
//! the engine). The RTT is (T4 − T1) − (T3 − T2): the reflector's dwell time, measured
//! on its own clock, is taken out so a slow reflector does not look like a slow network.

use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

use super::datagram::{self, Want};
use super::icmp::unspecified;
use super::stamp::{self, NtpTimestamp, ReflectorPacket, SenderPacket};
use super::{ProbeError, bind_error};
use crate::config::ProbeKind;

/// One STAMP socket of a prober.
pub(crate) struct StampSocket {
    pub socket: Socket,
    request_len: usize,
}

impl StampSocket {
    pub(crate) fn open(
        source: Option<IpAddr>,
        v6: bool,
        payload: Option<usize>,
    ) -> Result<StampSocket, ProbeError> {
        let addr = SocketAddr::new(source.unwrap_or_else(|| unspecified(v6)), 0);
        let err = |e| bind_error(ProbeKind::Udp, addr, e);
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
            .map_err(err)?;
        crate::sockopt::grow_receive_buffer(&socket, 16 << 20);
        if let Err(e) = datagram::enable(
            &socket,
            Want {
                queue_drops: true,
                ..Want::default()
            },
        ) {
            tracing::debug!(error = %e, "no kernel receive timestamps; RTTs include the prober's wake-up time");
        }
        // Sends block when the send buffer is full; receives never do (MSG_DONTWAIT).
        socket.bind(&addr.into()).map_err(err)?;
        Ok(StampSocket {
            socket,
            request_len: stamp::PACKET_LEN + payload.unwrap_or(0),
        })
    }

    /// A buffer for this socket's test packets.
    pub(crate) fn request_buffer(&self) -> Vec<u8> {
        vec![0u8; self.request_len]
    }

    /// Writes the test packet with sequence number `seq` and timestamp `t1` into `buf`.
    pub(crate) fn fill_request(buf: &mut [u8], seq: u32, t1: NtpTimestamp) {
        SenderPacket {
            seq,
            timestamp: t1,
            error_estimate: stamp::ERROR_ESTIMATE,
        }
        .encode(buf);
    }
}

/// A reply, if `data` is one with possible timestamps (T3 not before T2).
pub(crate) fn parse(data: &[u8]) -> Option<ReflectorPacket> {
    let packet = ReflectorPacket::decode(data).ok()?;
    packet.dwell()?;
    Some(packet)
}
