//! TCP connect time: the time from SYN to an established connection.
//!
//! For networks that drop ICMP. A refused connection is its own outcome (the host
//! answered, nobody listens); a connect that does not finish within the timeout is a
//! lost sample. The connection is reset at once (linger 0) so sweeps leave no
//! TIME_WAIT behind.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::Outcome;

pub(crate) struct TcpSender {
    source: Option<IpAddr>,
    timeout: Duration,
}

impl TcpSender {
    pub(crate) fn new(source: Option<IpAddr>, timeout: Duration) -> TcpSender {
        TcpSender { source, timeout }
    }

    pub(crate) fn send(&self, to: SocketAddr) -> JoinHandle<Outcome> {
        let source = self.source.filter(|s| s.is_ipv6() == to.is_ipv6());
        let timeout = self.timeout;
        tokio::spawn(async move {
            let socket = match if to.is_ipv6() {
                TcpSocket::new_v6()
            } else {
                TcpSocket::new_v4()
            } {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%to, error = %e, "cannot open tcp socket");
                    return Outcome::SendFailed;
                }
            };
            if let Some(source) = source
                && let Err(e) = socket.bind(SocketAddr::new(source, 0))
            {
                tracing::warn!(%source, error = %e, "cannot bind tcp socket");
                return Outcome::SendFailed;
            }
            let start = Instant::now();
            match tokio::time::timeout(timeout, socket.connect(to)).await {
                Ok(Ok(stream)) => {
                    let rtt = start.elapsed();
                    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
                    Outcome::Reply(rtt)
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Outcome::Refused,
                Ok(Err(e)) => {
                    tracing::debug!(%to, error = %e, "tcp connect failed");
                    Outcome::IcmpError
                }
                Err(_) => Outcome::Lost,
            }
        })
    }
}
