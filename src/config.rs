//! Configuration: what `regions.toml` says, validated.
//!
//! This module owns the typed [`Config`] that every later stage reads, and the loader
//! that turns a TOML file into it. Loading reports every problem at once as
//! `FILE:LINE:COL: what is wrong; what to do` ([`ConfigError`]). It never probes,
//! never touches the network and never panics on any input.
//!
//! Every key is declared once in [`keys`]: its name, type, default, range and doc line.
//! Loading goes `load` (files, the orchestrator) → `raw` (TOML shape, types and ranges,
//! from `keys`) → `validate` (`[probe]`, `[[region]]`), `lab` (`[lab]`, with CSV matrices
//! parsed by `matrix`, and the cross-references between the parts), `thresholds` and
//! `ops` (`[diff]`, `[schedule]`); `diag` turns spans into `FILE:LINE:COL` and imports
//! none of them. [`settings`] merges a command's flags with the file the same way for
//! every command, and [`RegionName`] is the one rule for region names.
//! The file format is described in `docs/config.md`.

mod diag;
pub mod keys;
mod lab;
mod load;
mod matrix;
mod ops;
mod raw;
mod region_name;
pub mod settings;
mod suggest;
mod thresholds;
mod validate;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use diag::{ConfigError, Diagnostic, quote};
pub use keys::{MAX_COUNT, MAX_PAYLOAD, MAX_TIMEOUT};
pub use lab::NETNS_MAX_REGIONS;
pub use load::{load, parse};
pub use ops::schedule_problem;
pub use ops::{DiffThresholds, ScheduleSettings};
pub use region_name::{MAX_NAME_LEN, MAX_REGIONS, RegionName, is_bidi_control};
pub use thresholds::{
    DetectorId, DetectorSet, LimitResolver, PairRule, PathLimits, RegionPattern, Thresholds,
};

/// The UDP port of a STAMP session-reflector (RFC 8762, section 4.1).
pub const STAMP_PORT: u16 = 862;

/// The validated configuration. Every default has been applied; nothing is optional
/// that has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from (used to resolve relative paths and in messages).
    pub path: PathBuf,
    /// Regions in file order (or, for a lab given only as a matrix, in the matrix's order).
    pub regions: Vec<Region>,
    pub probe: ProbeSettings,
    /// The emulated WAN, when `[lab]` is present.
    pub lab: Option<LabSettings>,
    /// `[thresholds]`: the detectors' limits (all defaults when the table is absent).
    pub thresholds: Thresholds,
    /// `[diff]`: the CI gate's thresholds (defaults when absent).
    pub diff: DiffThresholds,
    /// `[schedule]`, when present.
    pub schedule: Option<ScheduleSettings>,
}

impl Config {
    /// The region with this name.
    pub fn region(&self, name: &str) -> Option<&Region> {
        self.regions.iter().find(|r| r.name == name)
    }
}

/// A region of the fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct Region {
    /// Unique, kebab-case.
    pub name: String,
    pub location: Option<Location>,
    /// What other regions probe to reach this region. Empty in a lab (the lab supplies
    /// each region's reflector address).
    pub targets: Vec<Target>,
    /// The address a prober in this region binds, if set.
    pub source: Option<IpAddr>,
}

/// Geographic coordinates in degrees.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
}

impl Location {
    /// Latitudes, in degrees.
    pub const LAT: std::ops::RangeInclusive<f64> = -90.0..=90.0;
    /// Longitudes, in degrees.
    pub const LON: std::ops::RangeInclusive<f64> = -180.0..=180.0;

    /// Why these coordinates cannot be a place on Earth, if they cannot.
    pub fn problem(&self) -> Option<String> {
        if !Location::LAT.contains(&self.lat) {
            return Some(format!("lat {} is not a latitude (-90 to 90)", self.lat));
        }
        if !Location::LON.contains(&self.lon) {
            return Some(format!("lon {} is not a longitude (-180 to 180)", self.lon));
        }
        None
    }
}

/// Mean Earth radius in km.
const EARTH_RADIUS_KM: f64 = 6371.0;

impl Location {
    /// Great-circle distance to `other` in km (haversine, spherical Earth).
    pub fn great_circle_km(self, other: Location) -> f64 {
        let (lat1, lat2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = lat2 - lat1;
        let dlon = (other.lon - self.lon).to_radians();
        let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
    }
}

/// One thing to probe: an IP address or a hostname, with an optional port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    pub host: Host,
    pub port: Option<u16>,
}

/// The host part of a [`Target`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Ip(IpAddr),
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.host, self.port) {
            (Host::Ip(IpAddr::V6(ip)), Some(port)) => write!(f, "[{ip}]:{port}"),
            (Host::Ip(ip), Some(port)) => write!(f, "{ip}:{port}"),
            (Host::Ip(ip), None) => write!(f, "{ip}"),
            (Host::Name(name), Some(port)) => write!(f, "{name}:{port}"),
            (Host::Name(name), None) => write!(f, "{name}"),
        }
    }
}

impl Target {
    /// Parses `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]:80`, `host`, `host:80`.
    pub fn parse(s: &str) -> Result<Target, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty target".into());
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Target {
                host: Host::Ip(ip),
                port: None,
            });
        }
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Target {
                host: Host::Ip(sa.ip()),
                port: Some(sa.port()),
            });
        }
        if s.starts_with('[') {
            return Err(format!(
                "`{s}` is not an IPv6 address in the form [addr]:port"
            ));
        }
        let (name, port) = match s.rsplit_once(':') {
            Some((name, port)) => {
                let port = port.parse::<u16>().map_err(|_| {
                    format!("port `{port}` in `{s}` is not a number from 0 to 65535")
                })?;
                (name, Some(port))
            }
            None => (s, None),
        };
        if looks_numeric(name) {
            return Err(format!(
                "`{name}` is not a valid IP address (and a hostname cannot end in a number)"
            ));
        }
        if !is_hostname(name) {
            return Err(format!(
                "`{name}` is neither an IP address nor a valid hostname"
            ));
        }
        Ok(Target {
            host: Host::Name(name.to_ascii_lowercase()),
            port,
        })
    }
}

/// A dotted name whose last label is all digits (`10.0.0.300`): a mistyped address, as
/// no top-level domain is numeric (RFC 3696 section 2).
fn looks_numeric(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    s.rsplit('.')
        .next()
        .is_some_and(|last| !last.is_empty() && last.chars().all(|c| c.is_ascii_digit()))
}

fn is_hostname(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// The probe kinds latmap knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    Icmp,
    Udp,
    Tcp,
}

impl ProbeKind {
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Icmp, ProbeKind::Udp, ProbeKind::Tcp];

    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Icmp => "icmp",
            ProbeKind::Udp => "udp",
            ProbeKind::Tcp => "tcp",
        }
    }

    /// The port probed when a target names none (`None`: the kind has no ports).
    pub fn default_port(self) -> Option<u16> {
        match self {
            ProbeKind::Icmp => None,
            ProbeKind::Udp => Some(STAMP_PORT),
            ProbeKind::Tcp => None,
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProbeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "icmp" => Ok(ProbeKind::Icmp),
            "udp" => Ok(ProbeKind::Udp),
            "tcp" => Ok(ProbeKind::Tcp),
            other => Err(format!(
                "unknown probe kind `{other}`: use icmp, udp or tcp"
            )),
        }
    }
}

/// `[probe]`: how each prober sends.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    /// Kinds to run on every path. Default `["icmp"]` outside a lab; a lab always uses `udp`.
    pub kinds: Vec<ProbeKind>,
    /// Probes per path per sweep. Default 20.
    pub count: u32,
    /// Time between two probes to one target. Default 100 ms.
    pub interval: Duration,
    /// Minimum time between any two sends of one prober (fping's `-i`). Default 1 ms.
    pub gap: Duration,
    /// How long to wait for a reply before the sample counts as lost. Default 1 s.
    pub timeout: Duration,
    /// Payload bytes per probe (ICMP data, UDP beyond the STAMP header). Default 0 for
    /// UDP means the 44-byte STAMP test packet; for ICMP, 56 bytes if unset.
    pub payload: Option<usize>,
}

impl Default for ProbeSettings {
    fn default() -> Self {
        use keys::probe::*;
        ProbeSettings {
            kinds: vec![ProbeKind::Icmp],
            count: u32::try_from(COUNT.integer()).unwrap_or(1),
            interval: INTERVAL.duration(),
            gap: GAP.duration(),
            timeout: TIMEOUT.duration(),
            payload: None,
        }
    }
}

/// `[lab]`: the emulated WAN.
#[derive(Debug, Clone, PartialEq)]
pub struct LabSettings {
    /// Loopback addresses and delaying reflectors, or network namespaces behind a core
    /// that delays every packet. Default loopback.
    pub mode: LabMode,
    /// Where the truth comes from.
    pub source: LabSource,
    /// Extra RTT variation: each reply gets uniform noise in `[-jitter, +jitter]` ms
    /// (clamped so no RTT is negative). Default 0.
    pub jitter_ms: f64,
    /// UDP port every region's reflector listens on (at `127.0.N.1`, or on every
    /// address of the region's namespace, where a TCP listener takes the same port). 0
    /// picks a free port per region. Default 8620.
    pub port: u16,
    /// Seed of the lab's random loss and jitter. Default 1.
    pub seed: u64,
    /// Injected faults, applied on top of the matrix.
    pub faults: Vec<LabFault>,
}

/// How a lab emulates the WAN (`[lab] mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LabMode {
    /// Each region is a loopback address with a reflector that delays and drops
    /// STAMP replies: no root, `udp` probes only.
    #[default]
    Loopback,
    /// Each region is a network namespace with two addresses, behind a core namespace
    /// whose NFQUEUE verdict loop delays and drops every forwarded packet: root, every
    /// probe kind, real kernel stacks.
    Netns,
}

impl LabMode {
    /// The name used in `[lab] mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            LabMode::Loopback => "loopback",
            LabMode::Netns => "netns",
        }
    }
}

impl std::fmt::Display for LabMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a lab's RTT and loss matrix comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LabSource {
    /// Read from CSV files (paths already resolved against the config file's folder).
    /// The matrices are already parsed and checked; their names are those of
    /// [`Config::regions`], in the same order.
    Matrix {
        rtt_file: PathBuf,
        loss_file: Option<PathBuf>,
        /// RTT in milliseconds; `None` on the diagonal and for an empty cell
        /// (an empty cell makes the path unreachable).
        rtt_ms: SquareMatrix,
        /// Loss in percent; all zero when no loss file is given.
        loss_pct: SquareMatrix,
    },
    /// Derived from the regions' locations: `base_ms + inflation * km / 100`.
    Geo { inflation: f64, base_ms: f64 },
}

/// `[[lab.fault]]`: extra delay or loss on one path, or every path of a region.
#[derive(Debug, Clone, PartialEq)]
pub struct LabFault {
    /// Source region; `None` means every source.
    pub source: Option<String>,
    /// Target region; `None` means every target.
    pub target: Option<String>,
    /// Also apply to the reverse direction (`target -> source`).
    pub both_directions: bool,
    /// Extra RTT in milliseconds.
    pub extra_ms: f64,
    /// Extra loss in percent (0..=100), combined with the matrix's loss.
    pub loss_pct: f64,
}

/// A square matrix indexed `[source][target]` in the order of [`Config::regions`].
#[derive(Debug, Clone, PartialEq)]
pub struct SquareMatrix {
    pub cells: Vec<Vec<Option<f64>>>,
}

impl SquareMatrix {
    pub fn get(&self, source: usize, target: usize) -> Option<f64> {
        self.cells
            .get(source)
            .and_then(|row| row.get(target))
            .copied()
            .flatten()
    }
}

#[cfg(test)]
mod tests;
