//! `latmap lab up | status | exec | down`: keep the configuration's lab running for
//! agents, a server, fping or a browser; show where its regions are; run a command in
//! a region's namespace; stop it, or clear what a crashed run left.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{Config, LabMode};
use crate::lab::emulator::EmulatorStats;
use crate::lab::registry::{Record, Registry, Role};
use crate::lab::{self, Lab, netns};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
The lab is the [lab] table of the configuration (docs/lab.md). In loopback mode (the
default, no root) each region is an address 127.0.N.1 with a delaying STAMP reflector. In
netns mode (root) each region is a network namespace with two addresses behind a core
namespace that delays, jitters and drops every packet it forwards, so icmp, udp and tcp
probes, fping or any program measure real kernel stacks against a known truth.

A sweep, probe or agent whose configuration file has a lab up uses that lab instead of
starting its own.

Examples:
  sudo latmap lab up                    keep the lab running (Ctrl-C stops it)
  latmap lab status --format json       its regions, namespaces, addresses and truth
  sudo latmap lab exec eu-west-1 -- fping -C 20 198.19.1.2
  sudo latmap lab exec --core -- latmap serve --listen 198.18.0.1:8455 --token-file token
  sudo latmap lab down --all            remove what crashed runs left behind")]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the lab and keep it running in the foreground until Ctrl-C, SIGTERM or
    /// `latmap lab down`, then remove it.
    Up(UpArgs),
    /// Show the lab that is up for this configuration: each region with its namespace
    /// and addresses, the emulator's own error, and (JSON) the truth of every path.
    Status(StatusArgs),
    /// Run a command inside a region's network namespace (netns mode), e.g. fping or
    /// an agent; its exit status is the command's.
    Exec(ExecArgs),
    /// Stop the lab that is up for this configuration; with --all, every lab up on
    /// this machine and whatever a crashed run left behind.
    Down(DownArgs),
    /// Wait for the owner of lab ID to exit and remove the lab if it did not.
    #[command(hide = true)]
    Reap { id: String },
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Every lab on this machine (whatever its configuration), leftovers included.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The region whose namespace runs the command.
    #[arg(required_unless_present = "core", conflicts_with = "core")]
    pub region: Option<String>,
    /// Run it in the core namespace instead (it routes between the regions; its own
    /// address, 198.18.0.1, is reached from every region without emulated delay).
    #[arg(long)]
    pub core: bool,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    /// Every lab on this machine: stop those that `latmap lab up` keeps, and remove
    /// those whose process is gone (a crashed or killed run). Labs of sweeps still
    /// running are left to them.
    #[arg(long)]
    pub all: bool,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Up(_) => up(config_path),
        Command::Status(a) => status(config_path, &a),
        Command::Exec(a) => exec(config_path, a),
        Command::Down(a) => down(config_path, &a),
        Command::Reap { id } => {
            netns::reap(&Registry::open()?, &id);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn lab_config(config_path: &Path) -> anyhow::Result<Config> {
    let config = super::load_config(config_path)?;
    if config.lab.is_none() {
        bail!(
            "{} has no [lab] table, so there is no lab to run; add one (docs/lab.md), or start from \
             the repository's regions.toml",
            super::shown(&config.path)
        );
    }
    Ok(config)
}

fn up(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = lab_config(config_path)?;
    let registry = Registry::open()?;
    if let Some(r) = registry.find_up(&config.path) {
        bail!(
            "a lab is already up for {} (pid {}); `latmap lab status` shows it, `latmap lab down` stops it",
            super::shown(&r.config),
            r.owner.pid
        );
    }
    let rt = super::runtime()?;
    let mut lab = Lab::own(&config, Role::Up)?;
    if let Some(record) = lab.record() {
        super::print(&text(record, true))?;
    }
    eprintln!("latmap: lab up; Ctrl-C, SIGTERM or `latmap lab down` stops it and removes it");
    let code = rt.block_on(async {
        let signal = super::stop_signal();
        tokio::pin!(signal);
        loop {
            tokio::select! {
                code = &mut signal => break code,
                _ = tokio::time::sleep(Duration::from_secs(1)) => lab.publish(),
            }
        }
    });
    let stats = lab.emulator_stats();
    let lingering = lab.stop()?;
    if !lingering.is_empty() {
        eprintln!(
            "latmap: {} process(es) still run inside the lab's namespaces (pids {}); the namespaces \
             are gone from `ip netns list` and leave the kernel when those processes exit",
            lingering.len(),
            join(lingering.iter())
        );
    }
    if let Some(stats) = stats {
        eprintln!("latmap: lab removed; emulator: {}", emulator_line(&stats));
    } else {
        eprintln!("latmap: lab removed");
    }
    // Stopped by a signal, as asked: not an error.
    let _ = code;
    Ok(ExitCode::SUCCESS)
}

fn status(config_path: &Path, args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::open()?;
    if args.all {
        let records = registry.list();
        match args.format {
            Format::Json => {
                let ok: Vec<&Record> = records.iter().flatten().collect();
                super::print(&(serde_json::to_string_pretty(&ok)? + "\n"))?;
            }
            Format::Text => {
                let mut s = String::new();
                if records.is_empty() {
                    let _ = writeln!(s, "no labs on this machine");
                }
                for r in &records {
                    match r {
                        Ok(r) => s.push_str(&text(r, false)),
                        Err(e) => {
                            let _ = writeln!(s, "unreadable lab record: {e}");
                        }
                    }
                }
                super::print(&s)?;
            }
        }
        for e in records.iter().filter_map(|r| r.as_ref().err()) {
            eprintln!("latmap: unreadable lab record: {e}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let config = lab_config(config_path)?;
    let Some(record) = registry.find_up(&config.path) else {
        eprintln!(
            "latmap: no lab is up for {}; `latmap lab up` starts one (a sweep starts its own when none is up)",
            super::shown(&config.path)
        );
        return Ok(ExitCode::from(1));
    };
    match args.format {
        Format::Text => super::print(&text(&record, true))?,
        Format::Json => {
            let settings = config.lab.as_ref().context("no [lab] table")?;
            let truth = lab::truth(&config, settings);
            let mut paths = Vec::new();
            for (i, row) in truth.iter().enumerate() {
                for (j, t) in row.iter().enumerate() {
                    if i != j {
                        paths.push(serde_json::json!({
                            "source": config.regions[i].name,
                            "target": config.regions[j].name,
                            "rtt_ms": t.rtt_ms,
                            "loss": t.loss,
                        }));
                    }
                }
            }
            let mut value = serde_json::to_value(&record)?;
            value["truth"] = serde_json::Value::Array(paths);
            super::print(&(serde_json::to_string_pretty(&value)? + "\n"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A record for people: the lab, its core, one line per region, the emulator.
fn text(r: &Record, regions: bool) -> String {
    let mut s = String::new();
    let owner = match r.owner.role {
        Role::Up => "kept by `latmap lab up`",
        Role::Sweep => "of a sweep",
    };
    let state = if r.owner.alive() {
        format!("pid {}", r.owner.pid)
    } else {
        "its process is gone: a leftover, `latmap lab down --all` removes it".to_string()
    };
    let _ = writeln!(
        s,
        "lab {} ({} mode) for {}, {owner} ({state}), since {}",
        r.id,
        r.mode,
        super::shown(&r.config),
        r.started.format("%Y-%m-%d %H:%M:%S UTC")
    );
    if let Some(core) = &r.core {
        let _ = writeln!(
            s,
            "  core: namespace {}, address {} (reached from every region without emulated delay)",
            core.namespace, core.address
        );
    }
    if regions {
        let width = r
            .regions
            .iter()
            .map(|p| p.name.len())
            .max()
            .unwrap_or(6)
            .max(6);
        let ns_width = r
            .regions
            .iter()
            .filter_map(|p| p.namespace.as_ref().map(String::len))
            .max()
            .unwrap_or(0);
        let ns_head = if ns_width > 0 { "namespace" } else { "" };
        let ns_width = if ns_width > 0 { ns_width.max(9) } else { 0 };
        let _ = writeln!(
            s,
            "  {:width$}  {:ns_width$}  {:26}  probed at",
            "region", ns_head, "addresses"
        );
        for p in &r.regions {
            let _ = writeln!(
                s,
                "  {:width$}  {:ns_width$}  {:26}  {}",
                p.name,
                p.namespace.as_deref().unwrap_or(""),
                join(p.addresses.iter()),
                p.target
            );
        }
    } else {
        let _ = writeln!(s, "  {} regions", r.regions.len());
    }
    if let Some(stats) = &r.emulator {
        let _ = writeln!(s, "  emulator: {}", emulator_line(stats));
    }
    s
}

fn emulator_line(e: &EmulatorStats) -> String {
    format!(
        "{} packets ({} delayed, {} lost as emulated, {} unreachable, {} not between regions), {} held now; \
         sent on late by p50 {} µs, p99 {} µs, max {} µs{}{}",
        e.packets,
        e.delayed,
        e.lost,
        e.unreachable,
        e.passed,
        e.held,
        e.late_p50_us,
        e.late_p99_us,
        e.late_max_us,
        if e.realtime {
            "; real-time priority"
        } else {
            "; no real-time priority (a busy machine adds to its delays)"
        },
        if e.overflows > 0 {
            format!(
                "; {} packets dropped by a full queue (not emulated loss)",
                e.overflows
            )
        } else {
            String::new()
        }
    )
}

fn join<T: std::fmt::Display>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn exec(config_path: &Path, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let config = lab_config(config_path)?;
    let registry = Registry::open()?;
    let Some(record) = registry.find_up(&config.path) else {
        bail!(
            "no lab is up for {}; start one with `latmap lab up` (in another terminal, or in the background)",
            super::shown(&config.path)
        );
    };
    if record.mode == LabMode::Loopback {
        let hint = match args.region.as_deref().and_then(|r| record.region(r)) {
            Some(p) => format!(
                "region {} is {} on this host: run the command here and bind that address",
                p.name,
                join(p.addresses.iter())
            ),
            None => "run the command here and bind the region's 127.0.N.1 address".to_string(),
        };
        bail!(
            "a loopback lab has no namespaces; {hint} (mode = \"netns\" in [lab] gives each region its own)"
        );
    }
    let namespace = if args.core {
        record
            .core
            .as_ref()
            .map(|c| c.namespace.clone())
            .context("the lab's record names no core namespace")?
    } else {
        let name = args.region.unwrap_or_default();
        match record.region(&name) {
            Some(p) => p.namespace.clone().context("the region has no namespace")?,
            None => {
                let names: Vec<&str> = record.regions.iter().map(|r| r.name.as_str()).collect();
                bail!(
                    "no region {name:?} in the lab; its regions are {} (or --core)",
                    names.join(", ")
                );
            }
        }
    };
    // `ip netns exec` also gives the command the namespace's /etc/netns files and /sys.
    let err = std::process::Command::new("ip")
        .args(["netns", "exec", &namespace])
        .args(&args.command)
        .exec();
    bail!(
        "cannot run `ip netns exec {namespace} ...`: {err}; the netns lab needs iproute2 and root"
    )
}

fn down(config_path: &Path, args: &DownArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::open()?;
    let records: Vec<Record> = if args.all {
        let all = registry.list();
        for e in all.iter().filter_map(|r| r.as_ref().err()) {
            eprintln!("latmap: left alone, unreadable: {e}");
        }
        all.into_iter().flatten().collect()
    } else {
        let config = lab_config(config_path)?;
        registry
            .list()
            .into_iter()
            .flatten()
            .filter(|r| lab::same_config(r, &config.path))
            .collect()
    };
    if records.is_empty() {
        eprintln!(
            "latmap: no lab {}; nothing to remove",
            if args.all {
                "on this machine".to_string()
            } else {
                format!("for {}", super::shown(config_path))
            }
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for r in &records {
        if !r.owner.alive() {
            match netns::remove_leftover(&registry, r) {
                Ok(()) => eprintln!(
                    "latmap: removed leftover lab {} ({} namespaces) of {}",
                    r.id,
                    r.namespaces.len(),
                    super::shown(&r.config)
                ),
                Err(e) => {
                    failed = true;
                    eprintln!("latmap: cannot remove leftover lab {}: {e}", r.id);
                }
            }
            continue;
        }
        if r.owner.role == Role::Sweep {
            eprintln!(
                "latmap: lab {} belongs to a sweep still running (pid {}); it goes when the sweep ends",
                r.id, r.owner.pid
            );
            continue;
        }
        match stop_owner(&registry, r) {
            Ok(()) => eprintln!("latmap: stopped lab {} (pid {})", r.id, r.owner.pid),
            Err(e) => {
                failed = true;
                eprintln!("latmap: {e:#}");
            }
        }
    }
    Ok(if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// Asks the process that keeps `r` to stop (SIGTERM), and waits until it removed it.
fn stop_owner(registry: &Registry, r: &Record) -> anyhow::Result<()> {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(r.owner.pid).context("a process id")?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("cannot signal pid {} that keeps lab {}", r.owner.pid, r.id))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if registry.read(&r.id).ok().flatten().is_none() || !r.owner.alive() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if registry.read(&r.id).ok().flatten().is_some() {
        if r.owner.alive() {
            bail!(
                "lab {} (pid {}) did not stop within 20 s; try again, or stop that process",
                r.id,
                r.owner.pid
            );
        }
        // It died without removing the lab: a leftover now.
        netns::remove_leftover(registry, r)?;
    }
    Ok(())
}
