//! The two system calls that std, tokio, socket2 and nix do not wrap safely for us: a
//! receive buffer beyond `net.core.rmem_max` (`SO_RCVBUFFORCE`) on a socket we do not
//! own, and real-time scheduling for the lab's packet scheduler thread.
//!
//! This is the only `unsafe` in latmap: it borrows a descriptor, and passes a struct
//! to the kernel for the duration of one call.
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

/// Asks the kernel to run the calling thread with real-time priority (`SCHED_FIFO`,
/// lowest real-time level), so that a busy machine cannot delay it by milliseconds.
/// Needs root or `CAP_SYS_NICE`; returns whether it worked (without, the thread keeps
/// its ordinary priority). The lab's packet scheduler uses it: the emulated delays are
/// only as good as its wake-ups.
pub fn realtime_priority() -> bool {
    let param = nix::libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler reads `param` during the call only; pid 0 means the
    // calling thread. No memory is shared or retained.
    let rc = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_FIFO, &param) };
    rc == 0
}
