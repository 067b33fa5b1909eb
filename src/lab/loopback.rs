//! The loopback lab: region N is the loopback address `127.0.N.1` with a STAMP
//! reflector there that holds each request for half the path's emulated RTT before it
//! "arrives" and the reply for the other half after it "leaves", and drops it with the
//! path's loss. No root; `udp` probes only (ICMP and TCP would be answered by the one
//! kernel, undelayed).
//!
//! Owns the reflectors' impairment; the probers that measure it are the ordinary ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{PathTruth, Stream};
use crate::config::LabSettings;
use crate::reflector::{self, Fate, Impairment, ReflectorSet};

/// The lab address of the region at `index` (0-based): `127.0.N.1` with N = index + 1
/// (past 255 regions the count carries into the second octet).
pub fn region_address(index: usize) -> IpAddr {
    let n = (index as u32 + 1) & 0xffff;
    IpAddr::V4(Ipv4Addr::from(0x7f00_0001 | (n << 8)))
}

/// The inverse of [`region_address`].
pub fn region_index(ip: IpAddr) -> Option<usize> {
    let IpAddr::V4(v4) = ip else { return None };
    let bits = u32::from(v4);
    if bits >> 24 != 0x7f || bits & 0xff != 1 {
        return None;
    }
    let n = (bits >> 8) & 0xffff;
    (n >= 1).then(|| n as usize - 1)
}

struct LabImpairment {
    truth: Vec<Vec<PathTruth>>,
    jitter_ms: f64,
    /// One random stream per path (`[source][target]`), seeded from the lab's seed, so
    /// that the n-th probe of a path meets the same fate in every run, whatever the
    /// other paths' packets do; its losses are spread evenly ([`Stream`]).
    streams: Vec<Vec<Mutex<Stream>>>,
}

impl Impairment for LabImpairment {
    fn judge(&self, reflector: usize, from: SocketAddr) -> Fate {
        let Some(source) = region_index(from.ip()).filter(|&s| s < self.truth.len()) else {
            // Not one of the lab's probers: reflect at once, like a plain reflector.
            return Fate::Deliver {
                inbound: Duration::ZERO,
                outbound: Duration::ZERO,
            };
        };
        let Some(path) = self.truth.get(source).and_then(|row| row.get(reflector)) else {
            return Fate::Drop;
        };
        let Some(rtt_ms) = path.rtt_ms else {
            return Fate::Drop;
        };
        let Some(stream) = self.streams.get(source).and_then(|row| row.get(reflector)) else {
            return Fate::Drop;
        };
        let mut stream = stream.lock().unwrap_or_else(|p| p.into_inner());
        if stream.lose(path.loss) {
            return Fate::Drop;
        }
        let noise = stream.jitter(self.jitter_ms);
        drop(stream);
        // The configuration bounds every term (`MAX_LAB_MS`); a sum past what a
        // duration holds is dropped, never a panic.
        let Ok(rtt) = Duration::try_from_secs_f64((rtt_ms + noise).max(0.0) / 1000.0) else {
            return Fate::Drop;
        };
        let inbound = rtt / 2;
        Fate::Deliver {
            inbound,
            outbound: rtt - inbound,
        }
    }
}

/// Starts one delaying reflector per region, at `127.0.N.1`.
pub fn start(
    regions: usize,
    lab: &LabSettings,
    truth: Vec<Vec<PathTruth>>,
) -> Result<ReflectorSet, reflector::ReflectError> {
    let addrs: Vec<SocketAddr> = (0..regions)
        .map(|i| SocketAddr::new(region_address(i), lab.port))
        .collect();
    let streams = (0..regions)
        .map(|s| {
            (0..regions)
                .map(|t| Mutex::new(Stream::new(super::path_seed(lab.seed, s, t))))
                .collect()
        })
        .collect();
    let impairment = LabImpairment {
        truth,
        jitter_ms: lab.jitter_ms,
        streams,
    };
    let options = reflector::Options {
        impairment: Some(Arc::new(impairment)),
        // Only the lab's own probers reach it.
        rate_limit: None,
        realtime: false,
    };
    ReflectorSet::start(&addrs, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        assert_eq!(region_address(0), "127.0.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(region_address(9), "127.0.10.1".parse::<IpAddr>().unwrap());
        assert_eq!(region_address(255), "127.1.0.1".parse::<IpAddr>().unwrap());
        for i in [0, 1, 20, 254, 255, 1000] {
            assert_eq!(region_index(region_address(i)), Some(i));
        }
        assert_eq!(region_index("127.0.0.1".parse().unwrap()), None);
        assert_eq!(region_index("10.0.1.1".parse().unwrap()), None);
        assert_eq!(region_index("::1".parse().unwrap()), None);
    }
}
