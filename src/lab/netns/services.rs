//! Each region's services in the netns lab: a STAMP reflector on the wildcard address
//! and a TCP listener on the same port, made inside the region's namespace, and one
//! thread that accepts (and closes) every connection to all the listeners. The kernel
//! answers ICMP itself.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::NetnsError;
use crate::reflector::{self, ReflectorSet};

/// A region's STAMP reflector on the wildcard address (it replies from the address
/// each request was sent to) and its TCP listener on the same port.
pub(super) fn region_services(
    region: &str,
    port: u16,
) -> Result<(ReflectorSet, TcpListener), NetnsError> {
    let options = reflector::Options {
        impairment: None,
        // Only the lab's probers reach it.
        rate_limit: None,
        realtime: true,
    };
    let set = ReflectorSet::start(
        &[SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)],
        options,
    )
    .map_err(|source| NetnsError::Services {
        region: region.to_string(),
        source,
    })?;
    let addr = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        set.local_addrs()[0].port(),
    );
    let listener = listen(addr).map_err(|source| NetnsError::Listen {
        region: region.to_string(),
        addr,
        source,
    })?;
    Ok((set, listener))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    // Room for every connect of a sweep's burst: a full accept queue drops SYNs, which
    // would read as the network's loss.
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Accepts (and closes) every connection to the regions' listeners, on one thread.
pub(super) struct Acceptor {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl Acceptor {
    pub(super) fn start(listeners: Vec<TcpListener>) -> Result<Acceptor, NetnsError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("lab-accept".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    let mut fds: Vec<PollFd> = listeners
                        .iter()
                        .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                        .collect();
                    if poll(&mut fds, PollTimeout::from(100u16)).is_err() {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    for l in &listeners {
                        while let Ok((stream, _)) = l.accept() {
                            // The prober resets its end at once; close ours without
                            // lingering.
                            let _ =
                                socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                        }
                    }
                }
            })
            .map_err(NetnsError::Thread)?;
        Ok(Acceptor { stop, thread })
    }

    pub(super) fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}
