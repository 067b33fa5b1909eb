//! TCP connect time: from SYN to an established connection.
//!
//! For networks that drop ICMP. Connects are non-blocking and finished by the prober's
//! receive loop. The time is the kernel's own RTT sample of the handshake (`TCP_INFO`:
//! from the SYN's transmission to the SYN-ACK's arrival, in microseconds), which does
//! not include the prober's wake-up; when the SYN had to be sent again, the kernel
//! keeps no sample of it, and the time is the whole wait as the prober saw it (which
//! is how a lost SYN shows: about one initial retransmission timeout longer). A connect
//! whose timeout passes before the prober has read its outcome (a prober starved of the
//! CPU) is asked whether it finished meanwhile, and counts if the kernel's RTT is within
//! the timeout. A refused connection is its own outcome (the host answered, nobody
//! listens); a connect that does not finish within the timeout is lost. Connections are reset at once (linger 0)
//! so sweeps leave no TIME_WAIT behind.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::engine::ReplyKind;

/// A connect under way, or one that ended at once.
pub(crate) enum Started {
    Pending(Socket),
    Done(Socket, ReplyKind),
}

/// Starts a non-blocking connect to `to` from `source`.
pub(crate) fn connect(source: Option<IpAddr>, to: SocketAddr) -> io::Result<Started> {
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    if let Some(ip) = source.filter(|s| s.is_ipv6() == to.is_ipv6()) {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&to.into()) {
        Ok(()) => Ok(Started::Done(socket, ReplyKind::Answer)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => Ok(Started::Pending(socket)),
        Err(e) => Ok(Started::Done(socket, failure(&e))),
    }
}

fn failure(e: &io::Error) -> ReplyKind {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        ReplyKind::Refused
    } else {
        // Host or network unreachable: the ICMP error a router or the host sent back.
        ReplyKind::IcmpError
    }
}

/// Whether the kernel has finished the connect (established, refused or failed), so
/// that [`finish`] can read how it ended: the socket is writable or in error. The
/// receive loop asks this of a connect whose timeout passed before it read the
/// connect's readiness (a loop starved of the CPU): the kernel's own RTT then says
/// whether it finished in time, as a datagram's kernel timestamp does.
pub(crate) fn finished(socket: &Socket) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// How a connect that the kernel reports done ended, with the kernel's RTT of the
/// handshake when it kept one. Resets the connection.
pub(crate) fn finish(socket: &Socket) -> (ReplyKind, Option<Duration>) {
    let result = match socket.take_error() {
        Ok(None) => (ReplyKind::Answer, kernel_rtt(socket)),
        // Reset after it was established (a reset during the handshake is "refused"):
        // the server accepted and closed at once, before this prober read the
        // outcome. The handshake completed; its time stands.
        Ok(Some(e)) if e.kind() == io::ErrorKind::ConnectionReset => {
            (ReplyKind::Answer, kernel_rtt(socket))
        }
        Ok(Some(e)) | Err(e) => (failure(&e), None),
    };
    let _ = socket.set_linger(Some(Duration::ZERO));
    result
}

/// The handshake RTT of a connected socket, unless the SYN was sent again.
pub(crate) fn kernel_rtt(socket: &Socket) -> Option<Duration> {
    crate::sockopt::tcp_timing(socket)
        .filter(|t| t.retransmits == 0 && t.rtt_us > 0)
        .map(|t| Duration::from_micros(u64::from(t.rtt_us)))
}
