//! Sweeps: plan each region's paths, start the lab if there is one (or use the one
//! `latmap lab up` keeps), run the probers concurrently, each inside its region's
//! namespace in a netns lab, and collect their region reports.
//!
//! Shared by `latmap probe` (one region), `latmap sweep` (every region that can probe
//! from here) and, later, the agent. Produces reports; merging them into a run is the
//! caller's choice.

use std::net::{IpAddr, SocketAddr};

use chrono::Utc;

use crate::config::{Config, Host, ProbeKind, Target};
use crate::lab::emulator::EmulatorStats;
use crate::lab::netns::{self, NetnsError};
use crate::lab::{Lab, LabError};
use crate::probe::dns::Resolver;
use crate::probe::{
    PlannedPath, ProbeError, ProberOutput, ProberSpec, Progress, probe_blocking, run_prober,
};
use crate::report::RegionReport;

/// Why a sweep could not run.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("region {region}: {source}")]
    Probe { region: String, source: ProbeError },
    #[error("a prober stopped unexpectedly: {0}; please report this as a bug")]
    Internal(String),
    #[error("no region {0:?} in the configuration; `latmap check` lists the regions")]
    UnknownRegion(String),
}

/// Plans the paths of the prober of region `index`: every target of every other region,
/// with every configured kind. Hostnames are resolved here, once.
pub async fn plan(
    config: &Config,
    index: usize,
    lab: Option<&Lab>,
    resolver: &Resolver,
) -> ProberSpec {
    let region = &config.regions[index];
    let mut paths = Vec::new();
    for (j, other) in config.regions.iter().enumerate() {
        if j == index {
            continue;
        }
        let targets: Vec<Target> = match lab {
            Some(lab) => {
                let a = lab.target(j);
                vec![Target {
                    host: Host::Ip(a.ip()),
                    port: Some(a.port()),
                }]
            }
            None => other.targets.clone(),
        };
        paths.extend(plan_targets(&other.name, &targets, &config.probe.kinds, resolver).await);
    }
    let source = match lab {
        Some(lab) => lab.source(index),
        None => region.source,
    };
    ProberSpec {
        region: region.name.clone(),
        source,
        paths,
        settings: config.probe.clone(),
    }
}

/// The paths to `targets` (of the region `region`) with every kind in `kinds`, in
/// target order; hostnames are resolved here, once each. `latmap ping` plans its
/// targets with it too.
pub async fn plan_targets(
    region: &str,
    targets: &[Target],
    kinds: &[ProbeKind],
    resolver: &Resolver,
) -> Vec<PlannedPath> {
    let mut paths = Vec::with_capacity(targets.len() * kinds.len());
    for target in targets {
        let (ip, resolve_time) = match &target.host {
            Host::Ip(ip) => (Ok(*ip), None),
            Host::Name(name) => {
                let (ip, took) = resolver.resolve(name).await;
                (ip, Some(took))
            }
        };
        for &kind in kinds {
            let address = ip.clone().and_then(|ip| address_for(kind, ip, target.port));
            paths.push(PlannedPath {
                target_region: region.to_string(),
                kind,
                target: target.clone(),
                address,
                resolve_time,
            });
        }
    }
    paths
}

fn address_for(kind: ProbeKind, ip: IpAddr, port: Option<u16>) -> Result<SocketAddr, String> {
    match kind {
        ProbeKind::Icmp => Ok(SocketAddr::new(ip, 0)),
        ProbeKind::Udp | ProbeKind::Tcp => port
            .or(kind.default_port())
            .map(|p| SocketAddr::new(ip, p))
            .ok_or_else(|| format!("{kind} probes need a port; write the target as HOST:PORT")),
    }
}

/// The regions whose prober can run on this machine: all of them in a lab; otherwise
/// those with a `source` address that this machine has.
pub fn local_regions(config: &Config) -> Vec<usize> {
    if config.lab.is_some() {
        return (0..config.regions.len()).collect();
    }
    config
        .regions
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.source
                .is_some_and(|ip| std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok())
        })
        .map(|(i, _)| i)
        .collect()
}

/// Runs the probers of the given regions concurrently (starting the lab if the
/// configuration has one) and returns one report per region, in the order given.
pub async fn probe_regions(
    config: &Config,
    regions: &[usize],
    progress: Option<Progress>,
    on_planned: impl FnOnce(u64),
) -> Result<Vec<RegionReport>, SweepError> {
    Ok(sweep_regions(config, regions, progress, on_planned)
        .await?
        .reports)
}

/// What a sweep brought back.
#[derive(Debug)]
pub struct Swept {
    /// One report per region, in the order asked.
    pub reports: Vec<RegionReport>,
    /// The emulator's counters, when the sweep ran a netns lab of its own.
    pub emulator: Option<EmulatorStats>,
}

/// [`probe_regions`], with what the lab says of itself.
pub async fn sweep_regions(
    config: &Config,
    regions: &[usize],
    progress: Option<Progress>,
    on_planned: impl FnOnce(u64),
) -> Result<Swept, SweepError> {
    let lab = match &config.lab {
        Some(_) => Some(Lab::start(config)?),
        None => None,
    };
    let resolver = Resolver::from_system();
    let mut specs = Vec::with_capacity(regions.len());
    for &i in regions {
        specs.push(plan(config, i, lab.as_ref(), &resolver).await);
    }
    on_planned(specs.iter().map(ProberSpec::total_probes).sum());
    let mut tasks = Vec::new();
    for (spec, &i) in specs.into_iter().zip(regions) {
        let progress = progress.clone();
        let namespace = lab
            .as_ref()
            .and_then(|l| l.namespace(i))
            .map(str::to_string);
        tasks.push(tokio::spawn(async move {
            let started = Utc::now();
            let out = match namespace {
                Some(ns) => run_prober_in(ns, spec.clone(), progress).await,
                None => run_prober(&spec, progress).await.map_err(Inside::Probe),
            };
            (spec.region, started, Utc::now(), out)
        }));
    }
    let mut reports = Vec::with_capacity(tasks.len());
    for task in tasks {
        let (region, started, finished, out) = task
            .await
            .map_err(|e| SweepError::Internal(e.to_string()))?;
        let out = out.map_err(|e| match e {
            Inside::Probe(source) => SweepError::Probe {
                region: region.clone(),
                source,
            },
            Inside::Enter(e) => SweepError::Lab(LabError::Netns(e)),
        })?;
        reports.push(RegionReport::new(config, &out, started, finished));
    }
    let mut emulator = None;
    if let Some(lab) = lab {
        if let Some(set) = lab.reflectors() {
            for (i, s) in set.stats().iter().enumerate() {
                tracing::debug!(
                    region = %config.regions[i].name,
                    received = s.received.load(std::sync::atomic::Ordering::Relaxed),
                    dropped = s.dropped.load(std::sync::atomic::Ordering::Relaxed),
                    malformed = s.malformed.load(std::sync::atomic::Ordering::Relaxed),
                    "lab reflector"
                );
            }
        }
        emulator = lab.emulator_stats();
        if let Some(stats) = &emulator {
            tracing::info!(?stats, "lab emulator");
        }
        // A lab that cannot be removed is reported; the sweep's reports stand.
        match lab.stop() {
            Ok(lingering) if !lingering.is_empty() => tracing::warn!(
                ?lingering,
                "processes still run in the lab's namespaces; they keep them until they exit"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot remove the lab; `latmap lab down --all` removes it")
            }
        }
    }
    Ok(Swept { reports, emulator })
}

/// Where a prober inside a namespace failed.
enum Inside {
    Enter(NetnsError),
    Probe(ProbeError),
}

/// Runs one prober on a thread of its own inside the network namespace `ns`, so that
/// its sockets, its sources and its routes are the region's.
async fn run_prober_in(
    ns: String,
    spec: ProberSpec,
    progress: Option<Progress>,
) -> Result<ProberOutput, Inside> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = format!("probe-{}", spec.region);
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            let out = match netns::enter(&ns) {
                Ok(()) => probe_blocking(spec, progress).map_err(Inside::Probe),
                Err(e) => Err(Inside::Enter(e)),
            };
            let _ = tx.send(out);
        })
        .map_err(|e| Inside::Probe(ProbeError::Internal(format!("cannot start a thread: {e}"))))?;
    rx.await
        .map_err(|_| Inside::Probe(ProbeError::Internal("the prober's thread panicked".into())))?
}

/// Index of a region by name.
pub fn region_index(config: &Config, name: &str) -> Result<usize, SweepError> {
    config
        .regions
        .iter()
        .position(|r| r.name == name)
        .ok_or_else(|| SweepError::UnknownRegion(name.to_string()))
}
