//! Receiving a datagram with what the kernel knows about it: when it arrived
//! (`SO_TIMESTAMPNS`) and, on request, the IP TTL or hop limit it came with.
//!
//! Shared by the STAMP session-sender (its RTTs do not include the prober's own wake-up
//! time) and the reflector (its receive timestamp T2 and the Session-Sender TTL field).

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::{AsFd, RawFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;

/// One datagram received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub len: usize,
    pub from: SocketAddr,
    /// When the kernel received it, if it said.
    pub kernel_time: Option<SystemTime>,
    /// The TTL (IPv4) or hop limit (IPv6) it arrived with, if asked for and known.
    pub ttl: Option<u8>,
}

/// Asks the kernel for receive timestamps on `socket`, and with `ttl` for the TTL or hop
/// limit of each datagram as well. `v6` selects the hop-limit option.
pub(crate) fn enable_receive_info(socket: &impl AsFd, ttl: bool) -> nix::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true)?;
    if ttl {
        // One of the two applies, depending on the socket's family.
        let v4 = setsockopt(socket, sockopt::Ipv4RecvTtl, &true);
        let v6 = setsockopt(socket, sockopt::Ipv6RecvHopLimit, &true);
        v4.or(v6)?;
    }
    Ok(())
}

/// One `recvmsg` on `fd` into `buf`, with the kernel's details.
pub(crate) fn receive(fd: RawFd, buf: &mut [u8]) -> std::io::Result<Datagram> {
    let mut cmsg = nix::cmsg_space!(TimeSpec, i32);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())?;
    let (mut kernel_time, mut ttl) = (None, None);
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            match c {
                ControlMessageOwned::ScmTimestampns(ts) => {
                    if let (Ok(s), Ok(ns)) =
                        (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec()))
                    {
                        kernel_time = Some(UNIX_EPOCH + Duration::new(s, ns));
                    }
                }
                ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                    ttl = u8::try_from(t).ok();
                }
                _ => {}
            }
        }
    }
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
                })
        })
        .ok_or_else(|| std::io::Error::other("a datagram without a sender address"))?;
    Ok(Datagram {
        len: msg.bytes,
        from,
        kernel_time,
        ttl,
    })
}
