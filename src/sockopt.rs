//! Socket options and one scheduling call that std, tokio, socket2 and nix do not wrap
//! for us: the ICMP type filters of raw sockets, `TCP_INFO`, and real-time scheduling
//! for the lab's packet scheduler. Also the receive buffer beyond `net.core.rmem_max`,
//! and two knobs of glibc's allocator for the aggregator.
//!
//! This is the only `unsafe` in latmap. Each call passes the kernel a pointer to a
//! value that lives on the caller's stack for the duration of one system call, on a
//! descriptor borrowed from a socket the caller holds.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd};

use nix::libc;
use nix::sys::socket::{getsockopt, setsockopt, sockopt};

/// Asks for a receive buffer of `bytes` on `socket`: with `SO_RCVBUFFORCE` when
/// permitted (root or CAP_NET_ADMIN), else with `SO_RCVBUF` (capped by
/// `net.core.rmem_max`). Returns the size the kernel reports afterwards (it doubles the
/// request for its bookkeeping), or 0 if it could not be read.
pub fn grow_receive_buffer(socket: &impl AsFd, bytes: usize) -> usize {
    if setsockopt(socket, sockopt::RcvBufForce, &bytes).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &bytes);
    }
    getsockopt(socket, sockopt::RcvBuf).unwrap_or(0)
}

/// `setsockopt(level, name)` with `value` as the option's bytes.
fn set_raw<T>(socket: &impl AsFd, level: libc::c_int, name: libc::c_int, value: &T) -> bool {
    let fd = socket.as_fd().as_raw_fd();
    // SAFETY: `value` is a live reference for the whole call and its size is passed
    // with it; the kernel copies it and keeps no pointer. `fd` is borrowed from a
    // socket the caller holds, so it is open.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    rc == 0
}

/// Linux's `SOL_RAW` level and its `ICMP_FILTER` option (linux/icmp.h).
const SOL_RAW: libc::c_int = 255;
const ICMP_FILTER: libc::c_int = 1;
/// `ICMP6_FILTER` at level `IPPROTO_ICMPV6` (linux/icmpv6.h).
const ICMP6_FILTER: libc::c_int = 1;

/// On a raw ICMPv4 socket, lets through only the ICMP types listed (the kernel drops the
/// rest before they reach the socket: on loopback, a raw socket would otherwise read
/// every echo request it sends as well as its reply). Returns whether it worked.
pub fn icmp_accept_only(socket: &impl AsFd, types: &[u8]) -> bool {
    // A set bit filters its type out.
    let mut filtered: u32 = !0;
    for &t in types.iter().filter(|&&t| t < 32) {
        filtered &= !(1 << t);
    }
    set_raw(socket, SOL_RAW, ICMP_FILTER, &filtered)
}

/// On a raw ICMPv6 socket, lets through only the ICMPv6 types listed.
pub fn icmp6_accept_only(socket: &impl AsFd, types: &[u8]) -> bool {
    // struct icmp6_filter: 256 bits, a set bit blocks its type (ICMP6_FILTER_SETBLOCK).
    let mut blocked = [!0u32; 8];
    for &t in types {
        blocked[usize::from(t >> 5)] &= !(1 << (t & 31));
    }
    set_raw(socket, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &blocked)
}

/// What the kernel's TCP stack measured on a connected socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpTiming {
    /// Smoothed RTT in microseconds; right after the handshake, the one sample it has:
    /// from the SYN's transmission to the SYN-ACK's arrival.
    pub rtt_us: u32,
    /// Segments retransmitted on this connection (a resent SYN counts).
    pub retransmits: u32,
}

/// `TCP_INFO` of a connected TCP socket, if the kernel gives it.
pub fn tcp_timing(socket: &impl AsFd) -> Option<TcpTiming> {
    let fd = socket.as_fd().as_raw_fd();
    let mut info = std::mem::MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that large
    // and zero-initialised, so every field is initialised whatever it writes; `fd` is
    // borrowed from a socket the caller holds.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: zero-initialised above, and all-zero is a valid tcp_info (plain integers).
    let info = unsafe { info.assume_init() };
    Some(TcpTiming {
        rtt_us: info.tcpi_rtt,
        retransmits: info.tcpi_total_retrans,
    })
}

/// Asks the kernel to run the calling thread with real-time priority (`SCHED_FIFO`,
/// lowest real-time level), so that a busy machine cannot delay it by milliseconds.
/// Needs root or `CAP_SYS_NICE`; returns whether it worked (without, the thread keeps
/// its ordinary priority). The lab's packet scheduler uses it: the emulated delays are
/// only as good as its wake-ups.
pub fn realtime_priority() -> bool {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sched_setscheduler reads `param` during the call only; pid 0 means the
    // calling thread. No memory is shared or retained.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    rc == 0
}

/// Keeps glibc's allocator to `arenas` arenas (it makes up to eight per core, one per
/// thread that allocates at once, and each keeps the memory freed in it): a server
/// whose pushes are parsed on many threads otherwise holds several copies of its
/// largest bursts. An operator's `MALLOC_ARENA_MAX` is left as it is. No effect on
/// other C libraries.
pub fn limit_malloc_arenas(arenas: i32) {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt takes two integers and changes the allocator's settings; it is
    // called at start, before the threads that allocate concurrently exist.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = arenas;
}

/// Gives the memory the allocator holds free back to the system (glibc's
/// `malloc_trim`), after a burst that will not come again soon (a run assembled).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer and only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
