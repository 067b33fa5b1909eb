//! The one socket option std, tokio and socket2 cannot set for us on a socket we do not
//! own: a receive buffer beyond `net.core.rmem_max`, which needs `SO_RCVBUFFORCE`.
//!
//! This is the only `unsafe` in latmap, and it only borrows a descriptor.
#![allow(unsafe_code)]

use std::os::fd::{BorrowedFd, RawFd};

use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// Asks for a receive buffer of `bytes` on `fd`: with `SO_RCVBUFFORCE` when permitted
/// (root or CAP_NET_ADMIN), else with `SO_RCVBUF` (capped by `net.core.rmem_max`).
/// Returns the size the kernel reports afterwards (it doubles the request for its
/// bookkeeping), or 0 if it could not be read.
///
/// `fd` must be an open socket that stays open for the duration of the call; callers
/// pass the descriptor of a socket they hold.
pub fn grow_receive_buffer(fd: RawFd, bytes: usize) -> usize {
    // SAFETY: the caller holds the socket that owns `fd` for the whole call, so the
    // descriptor is open and is not closed while borrowed; it is not stored.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    if setsockopt(&fd, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &bytes);
    }
    getsockopt(&fd, sockopt::RcvBuf).unwrap_or(0)
}
