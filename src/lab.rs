//! The lab: an emulated multi-region WAN on this machine, with a known truth.
//!
//! Two modes (`[lab] mode`). **loopback** (the default, no root): each region is a
//! loopback address `127.0.N.1` with a STAMP reflector that delays and drops replies
//! ([`loopback`]); only `udp` probes are emulated. **netns** (root): each region is a
//! network namespace with two addresses behind a core namespace whose NFQUEUE verdict
//! loop delays, jitters and drops every forwarded packet ([`netns`], [`emulator`]); the
//! regions' kernels, a TCP listener and a wildcard STAMP reflector answer, and every
//! prober runs inside its region's namespace, so `icmp`, `udp` and `tcp` are all
//! measured through real kernel stacks. The truth comes from a matrix (CSV) or from
//! the regions' locations, plus injected faults, in both.
//!
//! A lab is started by the sweep that needs it, or kept by `latmap lab up` for others
//! to use: a sweep (or agent) whose configuration file has a lab up uses it instead of
//! starting its own ([`registry`]). Owns only the emulation; the probers that measure
//! it are the ordinary ones.

pub mod emulator;
pub mod loopback;
pub mod netns;
mod nfqueue;
pub mod registry;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::Utc;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::{Config, LabMode, LabSettings, LabSource, Location};
use crate::reflector::{self, ReflectorSet};
use emulator::EmulatorStats;
pub use loopback::{region_address, region_index};
use netns::{NetnsError, NetnsLab};
use registry::{Owner, Record, RegionPlace, Registry, Role};

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
                        (Some(a), Some(b)) => Some(
                            base_ms
                                + inflation * crate::units::fiber_bound_ms(great_circle_km(a, b)),
                        ),
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

/// The randomness of one path (in netns mode: of one direction and kind of packet of a
/// path): where its losses fall and its jitter.
///
/// Losses are spread evenly rather than drawn one by one: the k-th loss falls on a
/// uniformly random packet of the k-th stretch of `1/rate` packets, so that of any `n`
/// packets `rate × n` are lost, give or take one or two, where a draw per packet would
/// stray by `√(rate × n)`: the lab's truth should be the truth of every sweep, not of
/// their average. Above half, the packets that get through are spread so instead.
pub(crate) struct Stream {
    rng: StdRng,
    /// Packets seen so far.
    seen: u64,
    /// Slots (losses, or deliveries above half) placed so far.
    placed: u64,
    /// Where in its stretch the next slot falls, 0..1.
    offset: f64,
    /// Slots that fell on a packet that already had one, carried to the next packets.
    pending: u64,
}

impl Stream {
    pub(crate) fn new(seed: u64) -> Stream {
        let mut rng = StdRng::seed_from_u64(seed);
        let offset = rng.random();
        Stream {
            rng,
            seen: 0,
            placed: 0,
            offset,
            pending: 0,
        }
    }

    /// Whether the next packet is lost, with the path's loss `rate` (0..=1).
    pub(crate) fn lose(&mut self, rate: f64) -> bool {
        if rate <= 0.0 {
            self.seen += 1;
            return false;
        }
        if rate >= 1.0 {
            self.seen += 1;
            return true;
        }
        if rate > 0.5 {
            return !self.slot(1.0 - rate);
        }
        self.slot(rate)
    }

    /// Whether a slot of a process of `rate` falls on the next packet (two slots that
    /// fall on one packet take it and the next).
    fn slot(&mut self, rate: f64) -> bool {
        let end = (self.seen + 1) as f64;
        self.seen += 1;
        while (self.placed as f64 + self.offset) / rate < end {
            self.pending += 1;
            self.placed += 1;
            self.offset = self.rng.random();
        }
        if self.pending > 0 {
            self.pending -= 1;
            true
        } else {
            false
        }
    }

    /// Uniform noise in ±`half_width`.
    pub(crate) fn jitter(&mut self, half_width: f64) -> f64 {
        if half_width > 0.0 {
            self.rng.random_range(-half_width..=half_width)
        } else {
            0.0
        }
    }
}

/// The seed of path `source` → `target`'s random stream (SplitMix64 over the lab's
/// seed and the path), so that each path's loss and jitter do not depend on the others'.
pub(crate) fn path_seed(seed: u64, source: usize, target: usize) -> u64 {
    [source as u64, target as u64]
        .into_iter()
        .fold(seed, |h, part| splitmix(h ^ part))
}

/// One step of SplitMix64: a well-mixed 64-bit value from any 64-bit value.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The executable that removes a netns lab whose owner died (the CLI names itself at
/// start; unset in the library's own tests, which then run without one).
static REAPER: OnceLock<PathBuf> = OnceLock::new();

/// Names the latmap executable that `latmap lab reap` runs from.
pub fn set_reaper(exe: PathBuf) {
    let _ = REAPER.set(exe);
}

/// Where a region of a running lab probes from and is probed at.
#[derive(Debug, Clone, PartialEq)]
pub struct Place {
    /// The address its prober binds; `None`: the kernel chooses by route.
    pub source: Option<IpAddr>,
    /// Where the other regions' probers reach it (reflector and TCP listener; ICMP
    /// to the same address).
    pub target: SocketAddr,
    /// The network namespace its prober runs in (netns mode).
    pub namespace: Option<String>,
}

impl From<&RegionPlace> for Place {
    fn from(r: &RegionPlace) -> Place {
        Place {
            source: r.source,
            target: r.target,
            namespace: r.namespace.clone(),
        }
    }
}

/// What a running lab holds.
enum Held {
    /// This process's loopback reflectors.
    Loopback(ReflectorSet),
    /// This process's netns lab.
    Netns(Box<NetnsLab>),
    /// A lab that `latmap lab up` keeps (another process).
    Attached(Box<Record>),
}

/// A running lab: its regions' places and its truth.
pub struct Lab {
    mode: LabMode,
    places: Vec<Place>,
    truth: Vec<Vec<PathTruth>>,
    held: Held,
    /// This process's record of a loopback lab it keeps for others (`lab up`).
    record: Option<RecordGuard>,
}

/// A loopback lab's record, removed when the lab goes.
struct RecordGuard {
    registry: Registry,
    record: Record,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = self.registry.remove(&self.record.id);
    }
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
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(
        "the lab that `latmap lab up` keeps for {} (pid {pid}) was started from another version of \
         the file or of its matrices; restart it (`latmap lab down`, then `latmap lab up`) so that \
         sweeps and the lab agree on the truth",
        config.display()
    )]
    Stale { config: PathBuf, pid: u32 },
    #[error("a {mode} lab is up for {} (pid {pid}), but this configuration asks for a {want} lab; stop it with `latmap lab down`", config.display())]
    OtherMode {
        config: PathBuf,
        pid: u32,
        mode: LabMode,
        want: LabMode,
    },
    #[error("cannot record the lab in {}: {source}", dir.display())]
    Registry {
        dir: PathBuf,
        source: std::io::Error,
    },
}

impl Lab {
    /// The lab of `config`: the one `latmap lab up` keeps for the same file if there
    /// is one, else a lab of this process's own for as long as the returned value lives.
    pub fn start(config: &Config) -> Result<Lab, LabError> {
        let settings = config.lab.as_ref().ok_or(LabError::NoLab)?;
        if let Some(record) = Registry::open().ok().and_then(|r| r.find_up(&config.path)) {
            return Lab::attach(config, settings, record);
        }
        Lab::own(config, Role::Sweep)
    }

    /// Starts a lab of this process's own; `Role::Up` records it for others to use.
    pub fn own(config: &Config, role: Role) -> Result<Lab, LabError> {
        let settings = config.lab.as_ref().ok_or(LabError::NoLab)?;
        let truth = truth(config, settings);
        match settings.mode {
            LabMode::Loopback => {
                let set = loopback::start(config.regions.len(), settings, truth.clone())
                    .map_err(LabError::Start)?;
                let places: Vec<Place> = (0..config.regions.len())
                    .map(|i| Place {
                        source: Some(region_address(i)),
                        target: set.local_addrs()[i],
                        namespace: None,
                    })
                    .collect();
                let record = match role {
                    Role::Up => Some(record_loopback(config, &places)?),
                    Role::Sweep => None,
                };
                Ok(Lab {
                    mode: LabMode::Loopback,
                    places,
                    truth,
                    held: Held::Loopback(set),
                    record,
                })
            }
            LabMode::Netns => {
                let lab = NetnsLab::start(
                    config,
                    settings,
                    truth.clone(),
                    role,
                    REAPER.get().map(PathBuf::as_path),
                )?;
                let places = lab.record().regions.iter().map(Place::from).collect();
                Ok(Lab {
                    mode: LabMode::Netns,
                    places,
                    truth,
                    held: Held::Netns(Box::new(lab)),
                    record: None,
                })
            }
        }
    }

    fn attach(config: &Config, settings: &LabSettings, record: Record) -> Result<Lab, LabError> {
        if record.mode != settings.mode {
            return Err(LabError::OtherMode {
                config: record.config.clone(),
                pid: record.owner.pid,
                mode: record.mode,
                want: settings.mode,
            });
        }
        if record.digest != registry::digest(config) || record.regions.len() != config.regions.len()
        {
            return Err(LabError::Stale {
                config: record.config.clone(),
                pid: record.owner.pid,
            });
        }
        tracing::info!(id = %record.id, pid = record.owner.pid, "using the lab that `latmap lab up` keeps");
        Ok(Lab {
            mode: record.mode,
            places: record.regions.iter().map(Place::from).collect(),
            truth: truth(config, settings),
            held: Held::Attached(Box::new(record)),
            record: None,
        })
    }

    pub fn mode(&self) -> LabMode {
        self.mode
    }

    /// Whether this lab is kept by another process (`latmap lab up`).
    pub fn attached(&self) -> bool {
        matches!(self.held, Held::Attached(_))
    }

    /// Region `index`'s place.
    pub fn place(&self, index: usize) -> &Place {
        &self.places[index]
    }

    /// The address the prober of region `index` binds, if it binds one.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        self.places[index].source
    }

    /// Where region `index` is probed.
    pub fn target(&self, index: usize) -> SocketAddr {
        self.places[index].target
    }

    /// The namespace region `index`'s prober runs in (netns mode).
    pub fn namespace(&self, index: usize) -> Option<&str> {
        self.places[index].namespace.as_deref()
    }

    /// The emulated truth, `[source][target]`.
    pub fn truth(&self) -> &[Vec<PathTruth>] {
        &self.truth
    }

    /// The lab's record: of a netns lab, or of a lab kept by `lab up`.
    pub fn record(&self) -> Option<&Record> {
        match &self.held {
            Held::Netns(lab) => Some(lab.record()),
            Held::Attached(r) => Some(r),
            Held::Loopback(_) => self.record.as_ref().map(|g| &g.record),
        }
    }

    /// The loopback lab's reflectors, when this process runs them.
    pub fn reflectors(&self) -> Option<&ReflectorSet> {
        match &self.held {
            Held::Loopback(set) => Some(set),
            _ => None,
        }
    }

    /// The emulator's counters, when this process runs a netns lab.
    pub fn emulator_stats(&self) -> Option<EmulatorStats> {
        match &self.held {
            Held::Netns(lab) => Some(lab.stats()),
            _ => None,
        }
    }

    /// Writes the emulator's counters into the lab's record (for `latmap lab status`).
    pub fn publish(&mut self) {
        if let Held::Netns(lab) = &mut self.held {
            lab.publish();
        }
    }

    /// Stops the lab and removes what it made (an attached lab is left to its owner).
    /// Returns the processes that still run in its namespaces.
    pub fn stop(self) -> Result<Vec<u32>, LabError> {
        let Lab { held, record, .. } = self;
        drop(record);
        match held {
            Held::Netns(lab) => Ok(lab.stop()?),
            Held::Loopback(set) => {
                set.stop();
                Ok(Vec::new())
            }
            Held::Attached(_) => Ok(Vec::new()),
        }
    }
}

/// Records a loopback lab kept by `lab up`, so sweeps of the same file use it.
fn record_loopback(config: &Config, places: &[Place]) -> Result<RecordGuard, LabError> {
    let registry = Registry::open().map_err(|source| LabError::Registry {
        dir: PathBuf::from("latmap/labs"),
        source,
    })?;
    let id = format!("loopback-{}", std::process::id());
    let record = Record {
        schema: registry::SCHEMA.into(),
        id,
        mode: LabMode::Loopback,
        config: registry::absolute(&config.path),
        digest: registry::digest(config),
        owner: Owner::me(Role::Up),
        started: Utc::now(),
        ready: true,
        core: None,
        regions: config
            .regions
            .iter()
            .zip(places)
            .map(|(r, p)| RegionPlace {
                name: r.name.clone(),
                namespace: None,
                addresses: p.source.into_iter().collect(),
                target: p.target,
                source: p.source,
            })
            .collect(),
        namespaces: Vec::new(),
        emulator: None,
    };
    registry
        .write(&record)
        .map_err(|source| LabError::Registry {
            dir: registry.dir().to_path_buf(),
            source,
        })?;
    Ok(RecordGuard { registry, record })
}

/// Whether `path` names the same file as a lab's record.
pub fn same_config(record: &Record, path: &Path) -> bool {
    record.config == registry::absolute(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_are_spread_evenly_at_every_rate() {
        for (rate, seed) in [
            (0.01, 1),
            (0.03, 2),
            (0.15, 3),
            (0.3, 4),
            (0.5, 5),
            (0.8, 6),
            (0.99, 7),
        ] {
            let mut s = Stream::new(seed);
            let mut lost = 0u64;
            for n in 1..=5000u64 {
                if s.lose(rate) {
                    lost += 1;
                }
                // Every prefix, not only the whole: within two of rate × n.
                let want = rate * n as f64;
                assert!(
                    (lost as f64 - want).abs() <= 2.0,
                    "rate {rate}: {lost} lost of {n}, want {want:.1}"
                );
            }
        }
        let mut none = Stream::new(1);
        let mut all = Stream::new(1);
        assert!((0..100).all(|_| !none.lose(0.0) && all.lose(1.0)));
        // The same seed, the same losses.
        let run = |seed| {
            let mut s = Stream::new(seed);
            (0..500).map(|_| s.lose(0.1)).collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        assert_ne!(run(9), run(10));
        // Not a fixed pattern: the gaps between losses vary.
        let losses: Vec<usize> = run(9)
            .iter()
            .enumerate()
            .filter(|(_, l)| **l)
            .map(|(i, _)| i)
            .collect();
        let gaps: std::collections::BTreeSet<usize> =
            losses.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.len() > 5, "{gaps:?}");
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
