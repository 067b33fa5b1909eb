//! Receiving a datagram with what the kernel knows about it, and sending one from a
//! chosen local address.
//!
//! On receive, on request: when it arrived (`SO_TIMESTAMPNS`), the IP TTL or hop limit
//! it came with, the local address it was sent to (`IP_PKTINFO`, `IPV6_RECVPKTINFO`),
//! and how many datagrams the socket has dropped for want of buffer space
//! (`SO_RXQ_OVFL`). Shared by the probers (their RTTs do not include their own wake-up
//! time) and the reflector (T2, the Session-Sender TTL, and replying from the address a
//! request was sent to on a wildcard socket). A [`Receiver`] keeps its control buffer,
//! so receiving allocates nothing.

use std::io::{IoSlice, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, SockaddrIn, SockaddrIn6, SockaddrStorage,
    recvmsg, sendmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

/// One datagram received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    /// The local address it was sent to (with [`Want::local_address`]).
    pub to: Option<IpAddr>,
    /// When the kernel received it, in nanoseconds since the Unix epoch, if it said.
    pub kernel_ns: Option<u64>,
    /// The TTL (IPv4) or hop limit (IPv6) it arrived with, if asked for and known.
    pub ttl: Option<u8>,
    /// Datagrams this socket has dropped since it was opened (with
    /// [`Want::queue_drops`]), as of this one.
    pub queue_drops: Option<u32>,
}

/// What to ask the kernel for on every datagram. Receive timestamps always.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Want {
    pub ttl: bool,
    pub local_address: bool,
    pub queue_drops: bool,
}

/// Asks the kernel for receive timestamps on `socket`, and for what `want` names.
/// The options of both families are tried: a socket has one family, and an IPv6 socket
/// may also receive IPv4 (mapped) datagrams.
pub(crate) fn enable(socket: &impl AsFd, want: Want) -> nix::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true)?;
    let either = |v4: nix::Result<()>, v6: nix::Result<()>| v4.or(v6);
    if want.ttl {
        either(
            setsockopt(socket, sockopt::Ipv4RecvTtl, &true),
            setsockopt(socket, sockopt::Ipv6RecvHopLimit, &true),
        )?;
    }
    if want.local_address {
        let v4 = setsockopt(socket, sockopt::Ipv4PacketInfo, &true);
        let v6 = setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true);
        either(v4, v6)?;
    }
    if want.queue_drops {
        setsockopt(socket, sockopt::RxqOvfl, &1)?;
    }
    Ok(())
}

/// Receives datagrams with their kernel details; owns its control-message buffer.
pub(crate) struct Receiver {
    cmsg: Vec<u8>,
}

impl Default for Receiver {
    fn default() -> Self {
        Receiver {
            cmsg: nix::cmsg_space!(TimeSpec, i32, nix::libc::in6_pktinfo, u32),
        }
    }
}

impl Receiver {
    /// One `recvmsg` on `socket` into `buf`. With `wait` false it does not block
    /// (`MSG_DONTWAIT`), whatever the socket's mode.
    pub(crate) fn receive(
        &mut self,
        socket: &impl AsFd,
        buf: &mut [u8],
        wait: bool,
    ) -> std::io::Result<Datagram> {
        let mut iov = [IoSliceMut::new(buf)];
        let flags = if wait {
            MsgFlags::empty()
        } else {
            MsgFlags::MSG_DONTWAIT
        };
        let msg = recvmsg::<SockaddrStorage>(
            socket.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut self.cmsg),
            flags,
        )?;
        let mut d = Datagram {
            len: msg.bytes,
            from: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)),
            to: None,
            kernel_ns: None,
            ttl: None,
            queue_drops: None,
        };
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                match c {
                    ControlMessageOwned::ScmTimestampns(ts) => {
                        if let (Ok(s), Ok(ns)) =
                            (u64::try_from(ts.tv_sec()), u64::try_from(ts.tv_nsec()))
                        {
                            d.kernel_ns = s.checked_mul(1_000_000_000).map(|s| s + ns);
                        }
                    }
                    ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                        d.ttl = u8::try_from(t).ok();
                    }
                    ControlMessageOwned::Ipv4PacketInfo(info) => {
                        d.to = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                            info.ipi_addr.s_addr,
                        ))));
                    }
                    ControlMessageOwned::Ipv6PacketInfo(info) => {
                        d.to = Some(IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)));
                    }
                    ControlMessageOwned::RxqOvfl(n) => d.queue_drops = Some(n),
                    _ => {}
                }
            }
        }
        d.from = msg
            .address
            .and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| SocketAddr::from(SocketAddrV4::from(*v4)))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|v6| SocketAddr::from(SocketAddrV6::from(*v6)))
                    })
            })
            .ok_or_else(|| std::io::Error::other("a datagram without a sender address"))?;
        Ok(d)
    }
}

/// Sends `data` to `to` from the local address `from` (on a socket bound to a wildcard
/// address, so that a reply leaves from the address its request was sent to). With
/// `from` `None`, the kernel chooses, as with `send_to`.
pub(crate) fn send_from(
    socket: &impl AsFd,
    data: &[u8],
    to: SocketAddr,
    from: Option<IpAddr>,
) -> std::io::Result<usize> {
    let fd = socket.as_fd().as_raw_fd();
    let iov = [IoSlice::new(data)];
    let v4info;
    let v6info;
    let mut cmsgs = Vec::with_capacity(1);
    match (from, to) {
        (Some(IpAddr::V4(src)), SocketAddr::V4(_)) => {
            v4info = nix::libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: nix::libc::in_addr {
                    s_addr: u32::from(src).to_be(),
                },
                ipi_addr: nix::libc::in_addr { s_addr: 0 },
            };
            cmsgs.push(ControlMessage::Ipv4PacketInfo(&v4info));
        }
        (Some(src), SocketAddr::V6(_)) => {
            // An IPv6 socket answering an IPv4 (mapped) sender takes the mapped address.
            let ip = match src {
                IpAddr::V6(v6) => v6,
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            v6info = nix::libc::in6_pktinfo {
                ipi6_addr: nix::libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: 0,
            };
            cmsgs.push(ControlMessage::Ipv6PacketInfo(&v6info));
        }
        _ => {}
    }
    let sent = match to {
        SocketAddr::V4(a) => sendmsg(
            fd,
            &iov,
            &cmsgs,
            MsgFlags::empty(),
            Some(&SockaddrIn::from(a)),
        ),
        SocketAddr::V6(a) => sendmsg(
            fd,
            &iov,
            &cmsgs,
            MsgFlags::empty(),
            Some(&SockaddrIn6::from(a)),
        ),
    }?;
    Ok(sent)
}
