//! `latmap ping TARGET...`: a one-shot prober from this host, with fping's habits, on
//! the engine that `probe`, `sweep` and `agent` use.

use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, mpsc};
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::Utc;
use serde::Serialize;

use crate::config::{self, ProbeKind, ProbeSettings, Target};
use crate::probe::{self, Outcome, ProbeEvent, ProberHealth, ProberSpec};
use crate::report::PathEntry;

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Durations take a unit: 20ms, 1s, 250us. Defaults are [probe]'s: -c 20 -p 100ms -i 1ms
-t 1s (regions.toml is not read).

Output: unless -q, each reply as it comes (\"TARGET : [N], RTT ms\"), then one summary
line per target: probes sent/received/lost and min/p50/mean/max RTT in milliseconds
(with -C, every probe's RTT too, '-' for none). --format json prints
{\"schema\": \"latmap.ping/1\", \"prober\": {...}, \"paths\": [...]} with path entries as in
docs/run-format.md.

Exit status: 0 every target answered at least once; 1 some did not; 2 error.

Examples:
  latmap ping 127.0.0.1 ::1 -c 5
  latmap ping -f targets.txt -q -c 3 -i 0s -p 20ms -t 500ms
  latmap ping --kind tcp example.net:443 -c 10
  latmap ping --kind udp reflector.example.net      STAMP, port 862 unless given")]
pub struct Args {
    /// Targets: IP addresses or hostnames, with :PORT for tcp (and udp, default 862).
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Read more targets from FILE, one per line (`-` for standard input); blank lines
    /// and lines starting with '#' are skipped.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Probes per target.
    #[arg(long, short = 'c', value_name = "COUNT",
          value_parser = clap::value_parser!(u32).range(1..=config::MAX_COUNT as i64))]
    pub count: Option<u32>,
    /// Time between two probes to one target (fping's -p).
    #[arg(long, short = 'p', value_name = "PERIOD", value_parser = super::duration_arg)]
    pub period: Option<Duration>,
    /// Least time between any two sends (fping's -i); 0s sends back to back.
    #[arg(long, short = 'i', value_name = "GAP", value_parser = super::duration_arg)]
    pub gap: Option<Duration>,
    /// How long to wait for a reply before the probe counts as lost (at most 60s).
    #[arg(long, short = 't', value_name = "TIMEOUT", value_parser = timeout_arg)]
    pub timeout: Option<Duration>,
    /// Probe kind.
    #[arg(long, short = 'k', default_value = "icmp", value_parser = kind_arg)]
    pub kind: ProbeKind,
    /// Bytes of payload (ICMP data, or UDP beyond the 44-byte STAMP packet).
    #[arg(long = "size", short = 'b', value_name = "BYTES",
          value_parser = clap::value_parser!(u16).range(0..=config::MAX_PAYLOAD as i64))]
    pub size: Option<u16>,
    /// Source address to send from (an address of this host).
    #[arg(long, short = 'S', value_name = "ADDR")]
    pub source: Option<IpAddr>,
    /// Quiet: print only the summary lines, not each reply.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Add every probe's RTT to the summary lines.
    #[arg(long = "per-probe", short = 'C')]
    pub per_probe: bool,
    /// Output format.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub format: String,
}

/// `[probe] timeout`'s rule, for the flag.
fn timeout_arg(s: &str) -> Result<Duration, String> {
    config::keys::probe::TIMEOUT.check_duration(super::duration_arg(s)?)
}

fn kind_arg(s: &str) -> Result<ProbeKind, String> {
    s.parse::<ProbeKind>()
        .map_err(|_| "use icmp, udp or tcp".to_string())
}

/// What `--format json` prints.
#[derive(Serialize)]
struct PingOutput<'a> {
    schema: &'static str,
    started_at: chrono::DateTime<Utc>,
    finished_at: chrono::DateTime<Utc>,
    prober: &'a ProberHealth,
    paths: &'a [PathEntry],
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let targets = read_targets(&args)?;
    let defaults = ProbeSettings::default();
    let settings = ProbeSettings {
        kinds: vec![args.kind],
        count: args.count.unwrap_or(defaults.count),
        interval: args.period.unwrap_or(defaults.interval),
        gap: args.gap.unwrap_or(defaults.gap),
        timeout: args.timeout.unwrap_or(defaults.timeout),
        payload: args.size.map(usize::from),
    };
    // Name resolution is the only async part; the prober runs on threads of its own.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let paths = rt.block_on(async {
        let resolver = probe::dns::Resolver::from_system();
        crate::sweep::plan_targets("", &targets, &settings.kinds, &resolver).await
    });
    drop(rt);
    for p in &paths {
        if let Err(why) = &p.address {
            eprintln!("latmap: {}: {why}", p.target);
        }
    }
    let width = paths
        .iter()
        .map(|p| p.target.to_string().len())
        .max()
        .unwrap_or(0);
    let spec = ProberSpec {
        region: "local".into(),
        source: args.source,
        paths,
        settings,
    };
    // Replies are printed as they come by a thread of their own, so that the prober's
    // receive loop never waits for the terminal.
    let (tx, rx) = mpsc::channel::<ProbeEvent>();
    let live = !args.quiet && args.format == "text";
    let printer = live.then(|| {
        let names: Vec<String> = spec.paths.iter().map(|p| p.target.to_string()).collect();
        std::thread::spawn(move || {
            let mut out = std::io::LineWriter::new(std::io::stdout().lock());
            for e in rx {
                if let Outcome::Reply(rtt) = e.outcome {
                    let line = format!(
                        "{:width$} : [{}], {} ms\n",
                        names[e.path],
                        e.round,
                        ms(rtt.as_secs_f64() * 1e3)
                    );
                    if out.write_all(line.as_bytes()).is_err() {
                        return; // a closed pipe: stop printing, keep probing
                    }
                }
            }
        })
    });
    let progress: Option<probe::Progress> = live.then(|| {
        let tx = std::sync::Mutex::new(tx);
        Arc::new(move |e: ProbeEvent| {
            let _ = tx.lock().map(|tx| tx.send(e));
        }) as probe::Progress
    });
    let started_at = Utc::now();
    let output = probe::probe_blocking(spec, progress)?;
    let finished_at = Utc::now();
    if let Some(printer) = printer {
        let _ = printer.join();
    }
    let mut all_answered = true;
    if args.format == "json" {
        let entries: Vec<PathEntry> = output
            .results
            .iter()
            .map(|r| PathEntry::from_result("local", r))
            .collect();
        all_answered = entries.iter().all(|e| e.received > 0);
        let text = crate::artifact::to_string(&PingOutput {
            schema: "latmap.ping/1",
            started_at,
            finished_at,
            prober: &output.health,
            paths: &entries,
        })?;
        super::print(&text)?;
    } else {
        // One line at a time: 10,000 targets need not be held as entries and text.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let mut line = String::with_capacity(256);
        for r in &output.results {
            let e = PathEntry::from_result("local", r);
            all_answered &= e.received > 0;
            line.clear();
            summary_line(&mut line, &e.target_spec, width, &e, args.per_probe);
            if let Err(e) = out.write_all(line.as_bytes()) {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    break;
                }
                return Err(e.into());
            }
        }
        match out.flush() {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
            _ => {}
        }
    }
    let h = &output.health;
    if h.lagged_sends > 0 || h.queue_drops > 0 {
        eprintln!(
            "latmap: warning: this host was short of CPU while probing ({} probes sent over {} ms late, \
             send lag p99 {} µs, {} replies dropped for a full receive queue); the figures may \
             describe this host more than the network",
            h.lagged_sends,
            probe::LAG_BOUND.as_millis(),
            h.send_lag_p99_us,
            h.queue_drops
        );
    }
    Ok(if all_answered {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A loss percentage as fping prints it: whole percent, or one decimal below 10%.
fn pct(p: f64) -> String {
    if p == 0.0 || p >= 10.0 {
        format!("{p:.0}")
    } else {
        format!("{p:.1}")
    }
}

/// A value from outside, quoted and cut to 60 characters for a message.
fn cut(s: &str) -> String {
    let short: String = s.chars().take(60).collect();
    if short.len() < s.len() {
        format!("{short:?}...")
    } else {
        format!("{short:?}")
    }
}

/// Milliseconds with microsecond resolution.
fn ms(v: f64) -> String {
    format!("{v:.3}")
}

fn summary_line(out: &mut String, name: &str, width: usize, e: &PathEntry, per_probe: bool) {
    use std::fmt::Write as _;
    let lost_pct = e.loss.map_or(0.0, |l| l * 100.0);
    let _ = write!(
        out,
        "{name:width$} : xmt/rcv/%loss = {}/{}/{}%",
        e.sent,
        e.received,
        pct(lost_pct)
    );
    if let Some(r) = &e.rtt_us {
        let _ = write!(
            out,
            ", min/p50/avg/max = {}/{}/{}/{} ms",
            ms(r.min as f64 / 1e3),
            ms(r.p50 as f64 / 1e3),
            ms(r.mean as f64 / 1e3),
            ms(r.max as f64 / 1e3)
        );
    }
    if let Some(why) = &e.resolve_error {
        let _ = write!(out, " ({why})");
    }
    if per_probe {
        out.push_str(" :");
        for s in &e.samples_us {
            match s {
                Some(us) => {
                    let _ = write!(out, " {}", ms(*us as f64 / 1e3));
                }
                None => out.push_str(" -"),
            }
        }
    }
    out.push('\n');
}

/// The targets of the command line and `-f`, in order, each once.
fn read_targets(args: &Args) -> anyhow::Result<Vec<Target>> {
    let mut texts: Vec<(String, String)> = args
        .targets
        .iter()
        .map(|t| (t.clone(), format!("argument {t:?}")))
        .collect();
    if let Some(file) = &args.file {
        let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let meta = std::fs::metadata(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            if !meta.is_file() {
                bail!(
                    "{} is not a regular file; give a file of targets, one per line",
                    super::shown(file)
                );
            }
            Box::new(std::io::BufReader::new(
                std::fs::File::open(file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
            ))
        };
        for (n, line) in reader.lines().enumerate() {
            let line = line.with_context(|| format!("cannot read {}", file.display()))?;
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            texts.push((t.to_string(), format!("{}:{}", super::shown(file), n + 1)));
        }
    }
    if texts.is_empty() {
        bail!("no targets; give them as arguments or with -f FILE (see `latmap ping --help`)");
    }
    let mut seen = HashSet::new();
    let mut targets = Vec::with_capacity(texts.len());
    for (text, at) in texts {
        let target = Target::parse(&text).map_err(|why| {
            anyhow::anyhow!(
                "{at}: target {} is invalid: {why}; write an IP address or a hostname, optionally with :PORT",
                cut(&text)
            )
        })?;
        if args.kind == ProbeKind::Tcp && target.port.is_none() {
            bail!("{at}: tcp probes need a port; write {text}:PORT");
        }
        if args.kind == ProbeKind::Icmp && target.port.is_some() {
            bail!("{at}: icmp probes have no port; write the host alone, or use --kind tcp or udp");
        }
        if seen.insert(target.clone()) {
            targets.push(target);
        }
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::config::ProbeSettings;

    #[test]
    fn the_help_states_the_probe_defaults() {
        let d = ProbeSettings::default();
        let fmt = |d: std::time::Duration| humantime::format_duration(d).to_string();
        let want = format!(
            "-c {} -p {} -i {}\n-t {}",
            d.count,
            fmt(d.interval),
            fmt(d.gap),
            fmt(d.timeout)
        );
        let mut cmd = crate::cli::Cli::command();
        let help = cmd
            .find_subcommand_mut("ping")
            .map(|c| c.render_long_help().to_string())
            .unwrap_or_default();
        assert!(help.contains(&want), "{want:?} not in:\n{help}");
    }
}
