//! ICMP echo with surge-ping: one socket per prober and address family.
//!
//! The unprivileged datagram socket is tried first, the raw socket second, and which
//! one opened is reported. Sequence numbers are unique per destination within a
//! prober (datagram sockets match replies on host and sequence only). Only echo
//! replies become RTTs: an ICMP error (unreachable, time exceeded) is its own outcome.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::Type;
use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};
use tokio::task::JoinHandle;

use super::{Outcome, ProbeError};
use crate::config::ProbeSettings;

/// Bytes of ICMP data when `payload` is not set (as ping and fping send).
const DEFAULT_PAYLOAD: usize = 56;

/// The receive buffer asked for: enough for 10,000 replies in flight (each costs
/// about 1 KiB of kernel memory on loopback).
const RECV_BUFFER: usize = 16 << 20;

pub(crate) struct IcmpSender {
    client: Client,
    socket_type: &'static str,
    ident: PingIdentifier,
    next_seq: HashMap<IpAddr, u16>,
    payload: Vec<u8>,
    timeout: Duration,
}

impl IcmpSender {
    pub(crate) fn open(
        source: Option<IpAddr>,
        v6: bool,
        settings: &ProbeSettings,
    ) -> Result<IcmpSender, ProbeError> {
        let family = if v6 { "IPv6" } else { "IPv4" };
        let mut builder = Config::builder()
            .kind(if v6 { ICMP::V6 } else { ICMP::V4 })
            .sock_type_hint(Type::DGRAM);
        let bind = source.map(|ip| SocketAddr::new(ip, 0));
        if let Some(addr) = bind {
            builder = builder.bind(addr);
        }
        let client =
            Client::new(&builder.build()).map_err(|source| match (source.kind(), bind) {
                // The socket opened but the source address is not one of this host's.
                (std::io::ErrorKind::AddrNotAvailable, Some(addr)) => ProbeError::Bind {
                    kind: crate::config::ProbeKind::Icmp,
                    addr,
                    source,
                },
                _ => ProbeError::IcmpSocket { family, source },
            })?;
        let socket = client.get_socket();
        let socket_type = if socket.get_type() == Type::DGRAM {
            "datagram"
        } else {
            "raw"
        };
        crate::sockopt::grow_receive_buffer(socket.get_native_sock(), RECV_BUFFER);
        Ok(IcmpSender {
            client,
            socket_type,
            ident: PingIdentifier(rand::random()),
            next_seq: HashMap::new(),
            payload: vec![0u8; settings.payload.unwrap_or(DEFAULT_PAYLOAD)],
            timeout: settings.timeout,
        })
    }

    pub(crate) fn socket_type(&self) -> &'static str {
        self.socket_type
    }

    /// Sends one echo request (from a task it spawns) and resolves to its outcome.
    pub(crate) fn send(&mut self, host: IpAddr) -> JoinHandle<Outcome> {
        let seq = self.next_seq.entry(host).or_insert_with(rand::random);
        let this_seq = *seq;
        *seq = seq.wrapping_add(1);
        let client = self.client.clone();
        let (ident, timeout) = (self.ident, self.timeout);
        let payload = self.payload.clone();
        tokio::spawn(async move {
            let mut pinger = client.pinger(host, ident).await;
            pinger.timeout(timeout);
            match pinger.ping(PingSequence(this_seq), &payload).await {
                Ok((packet, rtt)) if is_echo_reply(&packet) => Outcome::Reply(rtt),
                Ok(_) => Outcome::IcmpError,
                Err(SurgeError::Timeout { .. }) => Outcome::Lost,
                Err(e) => {
                    tracing::warn!(%host, error = %e, "icmp probe failed");
                    Outcome::SendFailed
                }
            }
        })
    }
}

fn is_echo_reply(packet: &IcmpPacket) -> bool {
    match packet {
        IcmpPacket::V4(p) => p.get_icmp_type().0 == 0,
        IcmpPacket::V6(p) => p.get_icmpv6_type().0 == 129,
    }
}
