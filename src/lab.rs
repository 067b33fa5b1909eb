//! The lab: an emulated multi-region WAN on this machine, without root.
//!
//! Each region gets its own loopback address (`127.0.N.1` for the N-th region, counting
//! from 1) and a STAMP reflector there that delays and drops replies per (source,
//! target) pair, so the probers measure real packets against a known truth. The truth
//! comes from a matrix (CSV) or from the regions' locations, plus injected faults.
//!
//! Owns only the emulation; the probers that measure it are the ordinary ones.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::{Config, LabSettings, LabSource, Location};
use crate::reflector::{self, Fate, Impairment, ReflectorSet};

/// The emulated RTT and loss of one directed path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathTruth {
    /// `None`: nothing gets through.
    pub rtt_ms: Option<f64>,
    /// Loss ratio, 0..=1.
    pub loss: f64,
}

/// Great-circle distance in km (haversine); see [`Location::great_circle_km`].
pub fn great_circle_km(a: Location, b: Location) -> f64 {
    a.great_circle_km(b)
}

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

/// The truth matrix `[source][target]` a lab emulates (the diagonal is `None`).
pub fn truth(config: &Config, lab: &LabSettings) -> Vec<Vec<PathTruth>> {
    let n = config.regions.len();
    let mut out = vec![
        vec![
            PathTruth {
                rtt_ms: None,
                loss: 0.0
            };
            n
        ];
        n
    ];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            if i == j {
                continue;
            }
            *cell = match &lab.source {
                LabSource::Matrix {
                    rtt_ms, loss_pct, ..
                } => PathTruth {
                    rtt_ms: rtt_ms.get(i, j),
                    loss: loss_pct.get(i, j).unwrap_or(0.0) / 100.0,
                },
                LabSource::Geo { inflation, base_ms } => {
                    let rtt = match (config.regions[i].location, config.regions[j].location) {
                        (Some(a), Some(b)) => {
                            Some(base_ms + inflation * great_circle_km(a, b) / 100.0)
                        }
                        _ => None,
                    };
                    PathTruth {
                        rtt_ms: rtt,
                        loss: 0.0,
                    }
                }
            };
        }
    }
    let index = |name: &Option<String>| {
        name.as_ref()
            .and_then(|n| config.regions.iter().position(|r| &r.name == n))
    };
    for fault in &lab.faults {
        let (s, t) = (index(&fault.source), index(&fault.target));
        for (i, row) in out.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                let forward = s.is_none_or(|s| s == i) && t.is_none_or(|t| t == j);
                let backward =
                    fault.both_directions && s.is_none_or(|s| s == j) && t.is_none_or(|t| t == i);
                if i == j || !(forward || backward) {
                    continue;
                }
                cell.rtt_ms = cell.rtt_ms.map(|r| r + fault.extra_ms);
                cell.loss = 1.0 - (1.0 - cell.loss) * (1.0 - fault.loss_pct / 100.0);
            }
        }
    }
    out
}

struct LabImpairment {
    truth: Vec<Vec<PathTruth>>,
    jitter_ms: f64,
    rng: Mutex<StdRng>,
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
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        if path.loss > 0.0 && rng.random::<f64>() < path.loss {
            return Fate::Drop;
        }
        let noise = if self.jitter_ms > 0.0 {
            rng.random_range(-self.jitter_ms..=self.jitter_ms)
        } else {
            0.0
        };
        drop(rng);
        let rtt = Duration::from_secs_f64((rtt_ms + noise).max(0.0) / 1000.0);
        let inbound = rtt / 2;
        Fate::Deliver {
            inbound,
            outbound: rtt - inbound,
        }
    }
}

/// A running lab: one reflector per region.
pub struct Lab {
    reflectors: ReflectorSet,
    truth: Vec<Vec<PathTruth>>,
}

/// Why a lab could not start.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("the configuration has no [lab] table")]
    NoLab,
    #[error(
        "cannot start the lab's reflectors: {0}; another `latmap` lab may be running on the \
         same port: stop it, or set another `port` in [lab] (0 picks free ports)"
    )]
    Start(reflector::ReflectError),
}

impl Lab {
    /// Starts the lab described by `config`'s `[lab]` table.
    pub fn start(config: &Config) -> Result<Lab, LabError> {
        let lab = config.lab.as_ref().ok_or(LabError::NoLab)?;
        let truth = truth(config, lab);
        let addrs: Vec<SocketAddr> = (0..config.regions.len())
            .map(|i| SocketAddr::new(region_address(i), lab.port))
            .collect();
        let impairment = LabImpairment {
            truth: truth.clone(),
            jitter_ms: lab.jitter_ms,
            rng: Mutex::new(StdRng::seed_from_u64(lab.seed)),
        };
        let options = reflector::Options {
            impairment: Some(Arc::new(impairment)),
            // Only the lab's own probers reach it.
            rate_limit: None,
        };
        let reflectors = ReflectorSet::start(&addrs, options).map_err(LabError::Start)?;
        Ok(Lab { reflectors, truth })
    }

    /// The address the prober of region `index` binds.
    pub fn source(&self, index: usize) -> IpAddr {
        region_address(index)
    }

    /// The reflector address of region `index`.
    pub fn target(&self, index: usize) -> SocketAddr {
        self.reflectors.local_addrs()[index]
    }

    /// The emulated truth, `[source][target]`.
    pub fn truth(&self) -> &[Vec<PathTruth>] {
        &self.truth
    }

    pub fn reflectors(&self) -> &ReflectorSet {
        &self.reflectors
    }
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

    #[test]
    fn great_circle_matches_known_distances() {
        // Frankfurt - New York is about 6,200 km; a quarter of the equator 10,008 km.
        let fra = Location {
            lat: 50.11,
            lon: 8.68,
        };
        let nyc = Location {
            lat: 40.71,
            lon: -74.01,
        };
        let d = great_circle_km(fra, nyc);
        assert!((d - 6200.0).abs() < 50.0, "{d}");
        let q = great_circle_km(
            Location { lat: 0.0, lon: 0.0 },
            Location {
                lat: 0.0,
                lon: 90.0,
            },
        );
        assert!((q - 10_007.5).abs() < 1.0, "{q}");
        assert_eq!(great_circle_km(fra, fra), 0.0);
    }
}
