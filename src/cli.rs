//! The command line: clap arguments and one file per subcommand.
//!
//! The only place `anyhow` is used. Exit status: 0 success, 1 a finding at `--fail-on`
//! (later commands), 2 an error (bad configuration, unreadable file, setup failure).

mod agent;
mod aggregate;
mod check;
mod diff;
mod generate;
mod history;
mod lab;
mod ping;
mod probe;
mod reflect;
mod render;
mod report;
mod serve;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Config, Thresholds};

/// latmap maps network latency and loss between the regions of a fleet.
///
/// Start with `latmap sweep`: it reads regions.toml (the repository's example emulates a
/// ten-region WAN on this machine, no root needed), probes every path and writes
/// latmap-out/run.json.
#[derive(Debug, Parser)]
#[command(name = "latmap", version, about, max_term_width = 100, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "LATMAP_CONFIG",
        default_value = "regions.toml"
    )]
    pub config: PathBuf,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Examples:
  latmap sweep                          emulated ten-region WAN from ./regions.toml
  latmap lab up                         keep the lab running for agents, a server, fping
  latmap check --config fleet.toml      validate a configuration
  latmap ping 10.1.2.3 db.example.net   one-shot probes from here, like fping
  latmap probe --config fleet.toml -r eu-west-1 -o eu-west-1.json
  latmap aggregate *.json -o run.json   merge the regions' reports and find anomalies
  latmap report run.json --fail-on critical --format markdown
  latmap render run.json --view loss    draw the loss heatmap beside run.json
  latmap diff base.json run.json --format markdown   gate a change in CI
  latmap serve --token-file token --data /var/lib/latmap      the aggregator
  latmap agent -r eu-west-1 --aggregator https://latmap.example.net --token-file token --every 5m

Exit status: 0 success; 1 a finding at --fail-on (`report`) or a regression (`diff`);
2 error (bad configuration, unreadable file, setup failure).
Documentation: docs/config.md, docs/anomalies.md, docs/heatmaps.md, docs/ci.md, docs/history.md,
docs/run-format.md, docs/privileges.md, docs/deploy.md";

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print a summary; every problem is reported with
    /// FILE:LINE:COL (exit 2 if any).
    Check(check::Args),
    /// Probe every other region from one region and write its region report
    /// (what a job in that region runs).
    Probe(probe::Args),
    /// Merge region reports into one run file, find its anomalies and print the report.
    Aggregate(aggregate::Args),
    /// Probe from every region that can run here (all of them in a lab), write
    /// DIR/run.json, print the RTT matrix and the report of its anomalies.
    Sweep(sweep::Args),
    /// Compare a run with one or more baseline runs path by path and exit 1 when a path
    /// got slower or lossier (statistically significant and beyond the thresholds).
    Diff(diff::Args),
    /// Draw a run as an SVG heatmap (rows: source, columns: target).
    Render(render::Args),
    /// Show a path over time: a smoke chart of its runs (SVG), or its series as JSON
    /// or CSV, from a folder of scheduled runs or an aggregator.
    History(history::Args),
    /// Print a run's summary and findings, most severe first (text, Markdown or JSON).
    Report(report::Args),
    /// Run one region's prober as a service: sweep on a schedule and push each report
    /// to the aggregator, spooled on disk until acknowledged.
    Agent(agent::Args),
    /// Run the aggregator: accept the agents' reports, assemble each sweep's run and
    /// serve runs, heatmaps, reports and Prometheus metrics over HTTP.
    Serve(serve::Args),
    /// Run a STAMP session-reflector (RFC 8762) so other regions' UDP probes get answers.
    Reflect(reflect::Args),
    /// Probe targets from this host now and print one summary line per target, like
    /// fping (ICMP, STAMP or TCP); exit 1 if some target did not answer.
    Ping(ping::Args),
    /// Keep the configuration's lab running (`up`), show it (`status`), run a command
    /// in a region's namespace (`exec`), or stop it (`down`).
    Lab(lab::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell), generated
    /// from these definitions; see README for where to install it.
    Completions(generate::CompletionsArgs),
    /// Print the man page (or write every page with --dir), generated from these
    /// definitions.
    Man(generate::ManArgs),
}

/// Parses arguments, runs the command, maps the outcome to an exit status.
pub fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let config = ConfigArg {
        path: cli.config.clone(),
        explicit: !matches!(
            matches.value_source("config"),
            None | Some(ValueSource::DefaultValue)
        ),
    };
    init_logging(cli.verbose);
    // A netns lab removes itself through this executable if latmap is killed.
    if let Ok(exe) = std::env::current_exe() {
        crate::lab::set_reaper(exe);
    }
    match run(cli, &config) {
        Ok(code) => code,
        Err(err) => {
            if let Some(e) = err.downcast_ref::<config::ConfigError>() {
                eprintln!("{}", crate::render::escape::terminal(&e.to_string()));
                let n = e.diagnostics.len();
                eprintln!(
                    "latmap: {n} problem{} in the configuration",
                    if n == 1 { "" } else { "s" }
                );
            } else {
                // Errors quote names and values from files and peers: printed safely.
                let text = format!("{err:#}");
                eprintln!("latmap: {}", crate::render::escape::terminal(&text));
            }
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, config: &ConfigArg) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Check(args) => check::run(&cli.config, args),
        Command::Probe(args) => probe::run(&cli.config, args),
        Command::Aggregate(args) => aggregate::run(config, args),
        Command::Sweep(args) => sweep::run(&cli.config, args),
        Command::Reflect(args) => reflect::run(args),
        Command::Ping(args) => ping::run(args),
        Command::Agent(args) => agent::run(&cli.config, args),
        Command::Serve(args) => serve::run(config, args),
        Command::Render(args) => render::run(config, args),
        Command::History(args) => history::run(args),
        Command::Diff(args) => diff::run(config, args),
        Command::Report(args) => report::run(config, args),
        Command::Lab(args) => lab::run(&cli.config, args),
        Command::Completions(args) => generate::completions(args),
        Command::Man(args) => generate::man(args),
    }
}

/// `--config` and whether it was given (on the command line or in `LATMAP_CONFIG`).
#[derive(Debug, Clone)]
pub(crate) struct ConfigArg {
    pub path: PathBuf,
    pub explicit: bool,
}

impl ConfigArg {
    /// The thresholds of the configuration; the defaults when no configuration was
    /// named and the default file does not exist.
    pub fn thresholds(&self) -> anyhow::Result<Thresholds> {
        if !self.explicit && !Path::new(&self.path).exists() {
            return Ok(Thresholds::default());
        }
        Ok(load_config(&self.path)?.thresholds)
    }

    /// The regions of the configuration, when one was named (`--config` or
    /// `LATMAP_CONFIG`): then runs and reports may hold no other region.
    pub fn fleet(&self) -> anyhow::Result<Option<Vec<String>>> {
        if !self.explicit {
            return Ok(None);
        }
        let c = load_config(&self.path)?;
        Ok(Some(c.regions.iter().map(|r| r.name.clone()).collect()))
    }

    /// Reads the run at `path` (checked, see `Run::read`); with a named
    /// configuration, its regions must be the configuration's.
    pub fn read_run(&self, path: &Path) -> anyhow::Result<crate::run::Run> {
        let run = crate::run::Run::read(path)?;
        if let Some(known) = self.fleet()? {
            run.check_fleet(&known)
                .map_err(|source| crate::artifact::ArtifactError::Invalid {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        Ok(run)
    }

    /// The configuration, when one was named or the default file exists.
    pub fn optional(&self) -> anyhow::Result<Option<Config>> {
        if !self.explicit && !Path::new(&self.path).exists() {
            return Ok(None);
        }
        Ok(Some(load_config(&self.path)?))
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour only for a person at a terminal: never in files or the journal.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(false)
        .try_init();
}

pub(crate) fn load_config(path: &std::path::Path) -> anyhow::Result<Config> {
    Ok(config::load(path)?)
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// A duration flag: a number with a unit (`20ms`, `1s`, `250us`).
pub(crate) fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| match s.trim().parse::<f64>() {
        Ok(_) => format!("{s:?} has no unit; write it like \"{s}ms\" or \"{s}s\""),
        Err(_) => format!("{e}; write a number and a unit, like \"20ms\" or \"1s\""),
    })
}

/// A path as a message shows it: control characters written as visible escapes
/// (`\u{1b}`), so a file name cannot send terminal sequences.
pub(crate) fn shown(path: &Path) -> String {
    crate::render::escape::terminal(&path.display().to_string()).into_owned()
}

/// Writes `text` to stdout; a closed pipe (`latmap ... | head`) is not an error.
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Completes on Ctrl-C or SIGTERM with the exit status a shell gives a process that
/// such a signal ends (130 or 143). The handlers are installed by this call, not when
/// the future is first polled: a `select!` may poll its work first, and work that
/// blocks in that poll (a lab being set up) would otherwise leave the signals' default
/// action (death, with no clean-up) in place meanwhile. Call it inside the runtime.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = u8> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        let int = async {
            match int.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        let term = async {
            match term.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = int => 130,
            _ = term => 143,
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
