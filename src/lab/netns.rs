//! The netns lab: every region a network namespace with two addresses, joined by veth
//! to one core namespace that routes between them and delays, jitters and drops every
//! packet it forwards (the [`emulator`]). Each region's kernel
//! answers ICMP itself, a TCP listener answers connects, and a STAMP reflector on the
//! wildcard address answers UDP probes, so every probe kind meets a real stack.
//!
//! Addresses (region N is the N-th region, counting from 1): the region's link
//! `198.18.N.2/24` (the core's side `198.18.N.1`), and its service address
//! `198.19.N.2`, which other regions probe and the core routes to via the link. The
//! core's own address `198.18.0.1` is reachable from every region without emulated
//! delay (an aggregator in the core listens there). 198.18.0.0/15 is the range set aside
//! for benchmarking (RFC 2544), so a lab never shadows a real network.
//!
//! Hygiene: every name carries the lab's id (`latmap-ID-core`, `latmap-ID-N-REGION`,
//! links `lmID-N`, iptables comment `latmap-ID`); everything but the namespaces
//! themselves lives inside them, so removing the namespaces removes it all. The lab is
//! recorded (with the namespaces it is about to make) before anything is made; the
//! owner removes it on every exit it lives through (errors half-way, panics, and the
//! signals the CLI turns into an orderly stop), and a small reaper process, which waits
//! on a pipe from the owner, removes it when the owner dies any other way (SIGKILL).
//! `latmap lab down --all` clears what both missed. Nothing outside the lab's own
//! namespaces is touched.
//!
//! Needs root (namespaces, `setns`, iptables) and iproute2's `ip` and iptables with the
//! NFQUEUE target.

mod hygiene;
mod services;
mod tools;

use std::fs::File;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::time::Instant;

use chrono::Utc;
use nix::sched::CloneFlags;

use super::PathTruth;
use hygiene::{fresh_id, spawn_reaper};
pub use hygiene::{processes_in, reap, remove_leftover, remove_namespaces};
use services::{Acceptor, region_services};
use tools::{ip, on_path};

use super::emulator::{self, Emulator, EmulatorStats, Model};
use super::registry::{self, CorePlace, Owner, Record, RegionPlace, Registry, Role};
use crate::config::{Config, LabMode, LabSettings};
use crate::reflector::{self, ReflectorSet};

/// Where iproute2 keeps named network namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The core namespace's own address.
pub const CORE_ADDRESS: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

/// The region's side of its link to the core (index 0-based).
pub fn link_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, octet(index), 2)
}

/// The core's side of region `index`'s link.
pub fn core_link_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, octet(index), 1)
}

/// The region's service address, which the other regions probe.
pub fn service_address(index: usize) -> Ipv4Addr {
    Ipv4Addr::new(198, 19, octet(index), 2)
}

fn octet(index: usize) -> u8 {
    u8::try_from(index + 1).unwrap_or(u8::MAX)
}

/// The region an address of the lab belongs to.
pub fn region_of(ip: Ipv4Addr) -> Option<usize> {
    match ip.octets() {
        [198, 18 | 19, n, 2] if n >= 1 => Some(usize::from(n) - 1),
        _ => None,
    }
}

/// The names of one lab's namespaces and links.
#[derive(Debug, Clone)]
pub struct Names {
    pub id: String,
}

impl Names {
    pub fn core(&self) -> String {
        format!("latmap-{}-core", self.id)
    }

    /// `latmap-ID-N-SLUG`: the region's number, then its name as far as it is safe
    /// in a file name and a shell word.
    pub fn region(&self, index: usize, name: &str) -> String {
        let mut slug = String::new();
        for c in name.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                slug.push(c);
            } else if !slug.ends_with('-') {
                slug.push('-');
            }
            if slug.len() >= 32 {
                break;
            }
        }
        let slug = slug.trim_matches(['-', '.']);
        if slug.is_empty() {
            format!("latmap-{}-{}", self.id, index + 1)
        } else {
            format!("latmap-{}-{}-{slug}", self.id, index + 1)
        }
    }

    /// The core's end of region `index`'s link (15 characters at most).
    pub fn core_link(&self, index: usize) -> String {
        format!("lm{}-{}", self.id, index + 1)
    }

    /// The region's end of its link.
    pub fn region_link(&self) -> String {
        format!("lm{}", self.id)
    }

    /// The comment on the lab's iptables rules.
    pub fn rule_comment(&self) -> String {
        format!("latmap-{}", self.id)
    }
}

/// Why a netns lab could not start or stop.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "the netns lab needs root: it creates network namespaces and iptables rules; run it as \
         root (sudo), or use the loopback lab (mode = \"loopback\" in [lab], no root needed; see docs/lab.md)"
    )]
    NotRoot,
    #[error(
        "`{tool}` is not installed, and the netns lab needs it: {install}; or use the loopback lab \
         (mode = \"loopback\" in [lab]; see docs/lab.md)"
    )]
    MissingTool {
        tool: &'static str,
        install: &'static str,
    },
    #[error(
        "iptables cannot queue packets to user space (`-j NFQUEUE`): {stderr}; the netns lab delays \
         packets with iptables' NFQUEUE target and the kernel's nfnetlink_queue (Debian: apt-get \
         install iptables; check `iptables -j NFQUEUE --help` and `modprobe nfnetlink_queue`), or use \
         the loopback lab (mode = \"loopback\" in [lab]; see docs/lab.md)"
    )]
    NoNfqueue { stderr: String },
    #[error("cannot {what}: `{command}` failed: {stderr}")]
    Command {
        what: String,
        command: String,
        stderr: String,
    },
    #[error(
        "cannot open the emulator's NFQUEUE socket in the core namespace: {0}; the kernel needs \
         nfnetlink_queue (`modprobe nfnetlink_queue`), or use the loopback lab (mode = \"loopback\")"
    )]
    Queue(io::Error),
    #[error(
        "cannot enter the lab's namespace {namespace}: {source}; entering a namespace needs root"
    )]
    Enter {
        namespace: String,
        source: io::Error,
    },
    #[error("cannot start region {region}'s services in its namespace: {source}")]
    Services {
        region: String,
        source: reflector::ReflectError,
    },
    #[error("cannot listen on tcp {addr} in region {region}'s namespace: {source}")]
    Listen {
        region: String,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot record the lab in {dir}: {source}")]
    Registry { dir: PathBuf, source: io::Error },
    #[error("cannot start a thread: {0}")]
    Thread(io::Error),
}

/// Runs the calling thread in the network namespace `name` from now on (sockets it
/// opens and processes it starts belong there).
pub fn enter(name: &str) -> Result<(), NetnsError> {
    let enter_err = |source| NetnsError::Enter {
        namespace: name.to_string(),
        source,
    };
    let file = File::open(Path::new(NETNS_DIR).join(name)).map_err(enter_err)?;
    nix::sched::setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
        .map_err(|e| enter_err(io::Error::from(e)))
}

/// Runs `f` on a new thread inside the namespace `name` and returns its result. The
/// thread ends with `f`, so no other work ever runs in the namespace by mistake.
pub fn within<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let name = name.to_string();
    std::thread::Builder::new()
        .name(format!("in-{name}"))
        .spawn(move || enter(&name).map(|()| f()))
        .map_err(NetnsError::Thread)?
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::Thread(io::Error::other(
                "a thread in a namespace panicked",
            )))
        })
}

/// A running netns lab, owned by this process. Dropping it removes everything it made.
pub struct NetnsLab {
    record: Record,
    registry: Registry,
    names: Names,
    /// The namespaces this lab made (and so removes).
    made: Vec<String>,
    emulator: Option<Emulator>,
    reflectors: Vec<ReflectorSet>,
    acceptor: Option<Acceptor>,
    reaper: Option<(Child, ChildStdin)>,
}

impl NetnsLab {
    /// Makes the lab of `config` and starts it. `reaper` is the latmap executable that
    /// removes the lab if this process dies without doing so (`None`: no reaper, for
    /// tests that run inside a test binary).
    pub fn start(
        config: &Config,
        settings: &LabSettings,
        truth: Vec<Vec<PathTruth>>,
        role: Role,
        reaper: Option<&Path>,
    ) -> Result<NetnsLab, NetnsError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(NetnsError::NotRoot);
        }
        for (tool, install) in [
            ("ip", "apt-get install iproute2"),
            ("iptables-restore", "apt-get install iptables"),
        ] {
            if !on_path(tool) {
                return Err(NetnsError::MissingTool { tool, install });
            }
        }
        let registry = Registry::open().map_err(|source| NetnsError::Registry {
            dir: PathBuf::from("/run/latmap/labs"),
            source,
        })?;
        let names = Names {
            id: fresh_id(&registry),
        };
        let regions: Vec<(usize, String)> = config
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| (i, names.region(i, &r.name)))
            .collect();
        let mut namespaces: Vec<String> = regions.iter().map(|(_, n)| n.clone()).collect();
        namespaces.push(names.core());
        let record = Record {
            schema: registry::SCHEMA.into(),
            id: names.id.clone(),
            mode: LabMode::Netns,
            config: registry::absolute(&config.path),
            digest: registry::digest(config),
            owner: Owner::me(role),
            started: Utc::now(),
            ready: false,
            core: Some(CorePlace {
                namespace: names.core(),
                address: IpAddr::V4(CORE_ADDRESS),
            }),
            regions: config
                .regions
                .iter()
                .zip(&regions)
                .map(|(r, (i, ns))| RegionPlace {
                    name: r.name.clone(),
                    namespace: Some(ns.clone()),
                    addresses: vec![
                        IpAddr::V4(link_address(*i)),
                        IpAddr::V4(service_address(*i)),
                    ],
                    target: SocketAddr::new(IpAddr::V4(service_address(*i)), settings.port),
                    source: None,
                })
                .collect(),
            namespaces,
            emulator: None,
        };
        // Recorded before anything is made: whatever happens next, it is findable.
        registry
            .write(&record)
            .map_err(|source| NetnsError::Registry {
                dir: registry.dir().to_path_buf(),
                source,
            })?;
        let mut lab = NetnsLab {
            record,
            registry,
            names,
            made: Vec::new(),
            emulator: None,
            reflectors: Vec::new(),
            acceptor: None,
            reaper: None,
        };
        if let Some(exe) = reaper {
            lab.reaper = spawn_reaper(exe, &lab.registry, &lab.names.id);
        }
        // From here on, an error returns through `lab`'s drop, which removes it.
        lab.build(settings, truth)?;
        lab.record.ready = true;
        lab.write_record();
        Ok(lab)
    }

    fn build(
        &mut self,
        settings: &LabSettings,
        truth: Vec<Vec<PathTruth>>,
    ) -> Result<(), NetnsError> {
        let started = Instant::now();
        let core = self.names.core();
        for name in self.record.namespaces.clone() {
            match ip(&["netns", "add", &name], None) {
                Ok(()) => self.made.push(name),
                Err(e) => {
                    // Not made by this lab (it existed): never remove it.
                    self.record
                        .namespaces
                        .retain(|n| n != &name && self.made.contains(n));
                    self.write_record();
                    return Err(e);
                }
            }
        }
        // The core routes, and does not filter by reverse path: a forged packet from
        // one region reaches another, as it would across the Internet.
        ip(
            &[
                "netns",
                "exec",
                &core,
                "sysctl",
                "-q",
                "-w",
                "net.ipv4.ip_forward=1",
                "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0",
            ],
            None,
        )
        .map_err(|e| match e {
            NetnsError::Command { stderr, .. }
                if stderr.contains("not found") || stderr.contains("No such file") =>
            {
                NetnsError::MissingTool {
                    tool: "sysctl",
                    install: "apt-get install procps",
                }
            }
            e => e,
        })?;
        let mut core_batch = format!("link set lo up\naddr add {CORE_ADDRESS}/32 dev lo\n");
        for (i, place) in self.record.regions.iter().enumerate() {
            let ns = place.namespace.as_deref().unwrap_or_default();
            let (link, peer) = (self.names.core_link(i), self.names.region_link());
            core_batch.push_str(&format!(
                "link add {link} type veth peer name {peer} netns {ns}\n\
                 addr add {}/24 dev {link}\n\
                 link set {link} up\n",
                core_link_address(i)
            ));
        }
        ip(&["-n", &core, "-batch", "-"], Some(&core_batch))?;
        for (i, place) in self.record.regions.iter().enumerate() {
            let ns = place.namespace.as_deref().unwrap_or_default();
            let peer = self.names.region_link();
            let batch = format!(
                "link set lo up\n\
                 addr add {}/24 dev {peer}\n\
                 addr add {}/32 dev {peer}\n\
                 link set {peer} up\n\
                 route add default via {}\n",
                link_address(i),
                service_address(i),
                core_link_address(i)
            );
            ip(&["-n", ns, "-batch", "-"], Some(&batch))?;
        }
        // Routes to the service addresses, once the links are up.
        let routes: String = (0..self.record.regions.len())
            .map(|i| {
                format!(
                    "route add {}/32 via {}\n",
                    service_address(i),
                    link_address(i)
                )
            })
            .collect();
        ip(&["-n", &core, "-batch", "-"], Some(&routes))?;

        // Each region's services, in its namespace.
        let mut listeners = Vec::new();
        for place in self.record.regions.iter_mut() {
            let ns = place.namespace.clone().unwrap_or_default();
            let region = place.name.clone();
            let port = settings.port;
            let (set, listener) = within(&ns, move || region_services(&region, port))??;
            let bound = set.local_addrs()[0].port();
            place.target.set_port(bound);
            self.reflectors.push(set);
            listeners.push(listener);
        }
        self.acceptor = Some(Acceptor::start(listeners)?);

        // The verdict loop listens before any packet is queued to it; it knows the
        // services' ports, which tell requests from replies.
        let model = Model {
            truth,
            jitter_ms: settings.jitter_ms,
            seed: settings.seed,
            region_of,
            service_ports: self
                .record
                .regions
                .iter()
                .map(|r| r.target.port())
                .collect(),
        };
        let enter_core = core.clone();
        self.emulator = Some(
            Emulator::start(model, move || {
                enter(&enter_core).map_err(|e| io::Error::other(e.to_string()))
            })
            .map_err(NetnsError::Queue)?,
        );
        let comment = self.names.rule_comment();
        let rules = format!(
            "*filter\n-A FORWARD -m comment --comment {comment} -j NFQUEUE --queue-num {}\nCOMMIT\n",
            emulator::QUEUE
        );
        ip(
            &["netns", "exec", &core, "iptables-restore", "--noflush"],
            Some(&rules),
        )
        .map_err(|e| match e {
            NetnsError::Command { stderr, .. } => NetnsError::NoNfqueue { stderr },
            e => e,
        })?;

        tracing::info!(
            id = %self.names.id,
            regions = self.record.regions.len(),
            took_ms = started.elapsed().as_millis() as u64,
            "netns lab up"
        );
        Ok(())
    }

    /// The lab's record (its regions' namespaces and addresses).
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The emulator's counters now.
    pub fn stats(&self) -> EmulatorStats {
        self.emulator
            .as_ref()
            .map(Emulator::stats)
            .unwrap_or_default()
    }

    /// Writes the record with the emulator's counters, for `latmap lab status`.
    pub fn publish(&mut self) {
        self.record.emulator = Some(self.stats());
        self.write_record();
    }

    fn write_record(&self) {
        if let Err(e) = self.registry.write(&self.record) {
            tracing::warn!(error = %e, "cannot update the lab's record");
        }
    }

    /// Stops everything and removes the namespaces. Returns the processes that still
    /// run in them (started with `latmap lab exec`, say): their namespaces stay until
    /// they exit.
    pub fn stop(mut self) -> Result<Vec<u32>, NetnsError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Vec<u32>, NetnsError> {
        if let Some(a) = self.acceptor.take() {
            a.stop();
        }
        for set in self.reflectors.drain(..) {
            set.stop();
        }
        self.emulator = None;
        let lingering = processes_in(&self.made);
        remove_namespaces(&self.made)?;
        self.made.clear();
        if let Err(e) = self.registry.remove(&self.record.id) {
            tracing::warn!(error = %e, "cannot remove the lab's record");
        }
        // Everything is gone: the reaper has nothing to do.
        if let Some((mut child, mut stdin)) = self.reaper.take() {
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = child.wait();
        }
        Ok(lingering)
    }
}

impl Drop for NetnsLab {
    fn drop(&mut self) {
        if self.reaper.is_none() && self.made.is_empty() && self.emulator.is_none() {
            let _ = self.registry.remove(&self.record.id);
            return;
        }
        if let Err(e) = self.teardown() {
            tracing::error!(error = %e, id = %self.names.id, "cannot remove the netns lab; `latmap lab down --all` removes it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for i in [0usize, 1, 9, 254] {
            assert_eq!(region_of(link_address(i)), Some(i));
            assert_eq!(region_of(service_address(i)), Some(i));
            assert_eq!(region_of(core_link_address(i)), None);
        }
        assert_eq!(link_address(0), Ipv4Addr::new(198, 18, 1, 2));
        assert_eq!(service_address(9), Ipv4Addr::new(198, 19, 10, 2));
        assert_eq!(region_of(CORE_ADDRESS), None);
        assert_eq!(region_of(Ipv4Addr::new(198, 18, 0, 2)), None);
        assert_eq!(region_of(Ipv4Addr::new(10, 18, 1, 2)), None);
        assert_eq!(
            crate::config::NETNS_MAX_REGIONS,
            255,
            "one third octet per region"
        );
    }

    /// Root, iproute2 and iptables, or why not.
    fn cannot() -> Option<&'static str> {
        if !nix::unistd::geteuid().is_root() {
            return Some("not root");
        }
        if !on_path("ip") || !on_path("iptables-restore") {
            return Some("iproute2 or iptables is missing");
        }
        None
    }

    #[test]
    fn a_panic_while_the_lab_is_up_removes_it() {
        if let Some(why) = cannot() {
            eprintln!("skipped: {why}");
            return;
        }
        let text = "[lab]\nmode = \"netns\"\n\n[[region]]\nname = \"a\"\nlocation = { lat = 0, lon = 0 }\n\n[[region]]\nname = \"b\"\nlocation = { lat = 0, lon = 10 }\n";
        let config = crate::config::parse(text, Path::new("panic-test.toml")).expect("valid");
        let settings = config.lab.clone().expect("a lab");
        let truth = super::super::truth(&config, &settings);
        let made = std::sync::Mutex::new((Vec::new(), String::new()));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let lab = match NetnsLab::start(&config, &settings, truth, Role::Sweep, None) {
                Ok(lab) => lab,
                // No NFQUEUE here: nothing to test, and nothing may be left.
                Err(NetnsError::NoNfqueue { .. }) => return,
                Err(e) => panic!("cannot start the lab: {e}"),
            };
            let names = lab.record().namespaces.clone();
            assert!(names.iter().all(|n| Path::new(NETNS_DIR).join(n).exists()));
            *made.lock().unwrap() = (names, lab.record().id.clone());
            panic!("on purpose, with the lab up");
        }));
        let (names, id) = made.into_inner().unwrap();
        if names.is_empty() {
            eprintln!("skipped: iptables has no NFQUEUE here");
            return;
        }
        assert!(outcome.is_err(), "it panicked");
        for n in &names {
            assert!(!Path::new(NETNS_DIR).join(n).exists(), "{n} is left");
        }
        assert!(
            !Registry::open().expect("registry").exists(&id),
            "its record is left"
        );
    }

    #[test]
    fn names_are_unique_to_the_lab_and_safe() {
        let n = Names {
            id: "k3f9qa".into(),
        };
        assert_eq!(n.core(), "latmap-k3f9qa-core");
        assert_eq!(n.region(0, "eu-west-1"), "latmap-k3f9qa-1-eu-west-1");
        assert_eq!(
            n.region(4, "Europe (Ireland) / Dublin"),
            "latmap-k3f9qa-5-europe-ireland-dublin"
        );
        assert_eq!(n.region(6, "東京"), "latmap-k3f9qa-7");
        assert_eq!(n.region(2, "..a b"), "latmap-k3f9qa-3-a-b");
        assert!(n.region(1, &"x".repeat(63)).len() <= 6 + 1 + 6 + 1 + 3 + 1 + 32);
        assert_eq!(n.core_link(254), "lmk3f9qa-255");
        assert!(n.core_link(254).len() <= 15, "an interface name");
        assert_eq!(n.region_link(), "lmk3f9qa");
    }
}
