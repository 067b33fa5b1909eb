//! `latmap agent`: one region's prober as a service, sweeping on a schedule and pushing
//! each report to the aggregator (`latmap serve`) through an on-disk spool.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::config::settings::{self, ScheduleFlags};
use crate::remote::Token;
use crate::remote::agent::{self, Cadence, Delivery};
use crate::remote::spool::Spool;
use crate::schedule::Schedule;
use crate::sweep::region_index;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The region this agent probes from (a region of the configuration).
    #[arg(long, short = 'r', env = "LATMAP_REGION")]
    pub region: String,
    /// The aggregator's base URL, e.g. https://latmap.example.net (reports go to
    /// URL/v1/reports).
    #[arg(long, env = "LATMAP_AGGREGATOR")]
    pub aggregator: String,
    /// File holding the bearer token shared with the aggregator (one line; keep it
    /// mode 600).
    #[arg(long, env = "LATMAP_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Sweep every DURATION (whole seconds: "30s", "5m"), at whole multiples of it since
    /// 1970 (UTC), so every region's agent sweeps at the same epochs [default: [schedule]
    /// of the configuration].
    #[arg(long, env = "LATMAP_EVERY", value_parser = humantime::parse_duration, conflicts_with = "cron")]
    pub every: Option<Duration>,
    /// Sweep at the times of a cron expression, in UTC: "*/5 * * * *" [default:
    /// [schedule] of the configuration].
    #[arg(long, env = "LATMAP_CRON")]
    pub cron: Option<String>,
    /// Wait a random time in [0, DURATION) before each sweep, to spread the fleet's
    /// probes; the report keeps its epoch [default: [schedule] jitter, else 0].
    #[arg(long, env = "LATMAP_JITTER", value_parser = humantime::parse_duration)]
    pub jitter: Option<Duration>,
    /// Stop after N sweeps, once their reports are delivered [default: run until
    /// stopped].
    #[arg(long)]
    pub sweeps: Option<u64>,
    /// Folder of the reports not yet acknowledged [default: latmap-spool/REGION].
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// The most reports the spool keeps; past it the oldest are evicted (logged).
    #[arg(long, default_value_t = 1000)]
    pub spool_max: usize,
    /// The longest wait between two attempts to deliver (exponential backoff from 1 s,
    /// full jitter).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5m")]
    pub retry_max: Duration,
}

pub fn run(config_path: &std::path::Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let index = region_index(&config, &args.region)?;
    let token = Token::read(&args.token_file)?;
    let flags = ScheduleFlags {
        every: args.every,
        cron: args.cron.clone(),
        use_file: true,
        jitter: args.jitter,
        ..ScheduleFlags::default()
    };
    let s = settings::schedule(config.schedule.as_ref(), &config.path, &flags)
        .map_err(anyhow::Error::msg)?
        .context("the agent needs a schedule")?;
    let cadence = Cadence {
        schedule: Schedule::of(&s)?,
        jitter: s.jitter,
        sweeps: args.sweeps,
    };
    let spool_dir = args
        .spool
        .unwrap_or_else(|| PathBuf::from("latmap-spool").join(&args.region));
    let spool = Spool::open(&spool_dir, args.spool_max)?;
    let delivery = Delivery {
        aggregator: args.aggregator.clone(),
        token,
        backoff_start: Duration::from_secs(1),
        backoff_max: args.retry_max.max(Duration::from_secs(1)),
        request_timeout: Duration::from_secs(30),
    };
    eprintln!(
        "latmap: agent of {} sweeping {}, reporting to {} (spool {})",
        args.region,
        cadence.schedule,
        args.aggregator,
        super::shown(&spool_dir)
    );
    let rt = super::runtime()?;
    let held = agent::HeldReports::new(args.spool_max);
    let outcome = rt.block_on(async {
        tokio::select! {
            r = agent::run(&config, index, &cadence, spool.clone(), &delivery, &held) => Some(r),
            _ = super::shutdown_signal() => None,
        }
    });
    // A last try to spool what a full disk held back.
    held.flush(&spool, &tokio::sync::Notify::new());
    let left = spool.pending().map(|p| p.len()).unwrap_or(0);
    let lost = held.len();
    if lost > 0 {
        tracing::error!(
            "{lost} report(s) held in memory, because the spool disk refused them, are lost with this stop; free space in {}",
            super::shown(&spool_dir)
        );
    }
    match outcome {
        Some(r) => r.context("the agent stopped")?,
        None => eprintln!(
            "latmap: agent stopped; {left} report(s) stay in {} and are sent at the next start{}",
            super::shown(&spool_dir),
            if lost > 0 {
                format!("; {lost} held in memory (the disk refused them) are lost")
            } else {
                String::new()
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}
