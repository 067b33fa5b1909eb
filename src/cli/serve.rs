//! `latmap serve`: the aggregator service. Accepts the agents' reports, assembles each
//! sweep's run, and serves runs, heatmaps, reports and Prometheus metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::remote::Token;
use crate::remote::server::{Limits, Settings, serve};

use super::ConfigArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (plain HTTP: put TLS in front, see docs/deploy.md).
    #[arg(long, env = "LATMAP_LISTEN", default_value = "127.0.0.1:8455")]
    pub listen: SocketAddr,
    /// Folder of the stored reports and runs.
    #[arg(long, env = "LATMAP_DATA", default_value = "latmap-data")]
    pub data: PathBuf,
    /// File holding the bearer token the agents present (one line; keep it mode 600).
    #[arg(long, env = "LATMAP_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Assemble a sweep's run this long after its first report even if regions are
    /// still missing (they are marked "no data"; late reports re-assemble the run,
    /// see --batch).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
    pub deadline: Duration,
    /// A report that arrives after its run was assembled waits this long for others
    /// (and at least twice the last assembly's time); then the run is assembled again,
    /// once for all of them.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "2s")]
    pub batch: Duration,
    /// The largest accepted report, in bytes.
    #[arg(long, default_value_t = 16 * 1024 * 1024)]
    pub max_body: usize,
    /// Keep at most N runs (with their reports); older ones are deleted [default: all].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub keep: Option<u64>,
    /// Delete runs older than DURATION ("30d"), and refuse reports of sweeps that old
    /// (410) [default: never].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_for: Option<Duration>,
    /// Refuse (400) a report whose sweep epoch is more than DURATION ahead of this
    /// server's clock: a far-future run would otherwise stay the latest for good.
    /// At most 1 day.
    #[arg(long, value_name = "DURATION", value_parser = crate::remote::server::skew_arg, default_value = "5m")]
    pub max_skew: Duration,
    /// Connections served at once; more are answered 503 with Retry-After (capped by
    /// the open-file limit, which the server raises to its maximum).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Memory for push bodies received and not yet checked, in bytes; past it pushes
    /// are answered 503 with Retry-After, which agents honour. Checked reports
    /// waiting for the disk get as much again, and a report being checked (one per
    /// core) about four times its size.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_in_flight)]
    pub max_in_flight: usize,
    /// Time a client has to send a request's head, counted from the connection's
    /// start or the end of its previous request (so an idle connection is closed
    /// after it too).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    pub header_timeout: Duration,
    /// Time a client has to send a push's body (408 after it), and to read a heavy
    /// answer (a run's page, heatmap or report, a history, /metrics), plus a second
    /// per MiB of it; then the connection is cut.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "60s")]
    pub body_timeout: Duration,
    /// Heavy reads served at once: drawing a run (its page, heatmap or Markdown
    /// report; a 1,000-region run takes a core for seconds and more than a GiB) or
    /// reading the history for a page; /metrics is rendered as many times at once, on
    /// its own. 8 times as many wait their turn; more are answered 503 with
    /// Retry-After.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_drawings)]
    pub max_drawings: usize,
    /// Close a connection on which nothing moved for DURATION outside a request (a
    /// client that stopped reading its answer, for one).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "30s")]
    pub idle_timeout: Duration,
    /// Reads need the token too: the web pages, runs, heatmaps, history and /metrics
    /// (a bearer token, or HTTP Basic auth with the token as the password, which
    /// browsers ask for). /healthz stays open. [default: reads are open; put the
    /// server behind your proxy's auth, see docs/deploy.md]
    #[arg(long, env = "LATMAP_AUTH_READS")]
    pub auth_reads: bool,
    /// On SIGTERM, wait at most DURATION for requests in hand, then stop.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "10s")]
    pub shutdown_timeout: Duration,
}

pub fn run(config: &ConfigArg, args: Args) -> anyhow::Result<ExitCode> {
    // With --config the server knows the fleet (and refuses unknown regions);
    // without, the fleet is what the reports list.
    let (known, thresholds) = if config.explicit {
        let c = super::load_config(&config.path)?;
        let names = c.regions.iter().map(|r| r.name.clone()).collect();
        (Some(names), c.thresholds)
    } else {
        (None, config.thresholds()?)
    };
    let settings = Settings {
        data: args.data.clone(),
        token: Token::read(&args.token_file)?,
        deadline: args.deadline,
        batch: args.batch,
        max_body: args.max_body,
        known,
        thresholds,
        retention: crate::schedule::Retention {
            keep: args.keep.and_then(|k| usize::try_from(k).ok()),
            max_age: args.keep_for,
        },
        limits: Limits {
            max_skew: args.max_skew,
            max_connections: args.max_connections.max(1),
            max_in_flight: args.max_in_flight.max(1),
            header_timeout: args.header_timeout.max(Duration::from_millis(100)),
            body_timeout: args.body_timeout.max(Duration::from_millis(100)),
            idle_timeout: args.idle_timeout.max(Duration::from_millis(100)),
            shutdown_timeout: args.shutdown_timeout,
            max_drawings: args.max_drawings.max(1),
            ..Limits::default()
        },
        auth_reads: args.auth_reads,
    };
    let rt = super::runtime()?;
    let data = args.data.clone();
    rt.block_on(serve(
        args.listen,
        settings,
        move |addr| {
            eprintln!(
                "latmap: serving on http://{addr}, data in {}",
                super::shown(&data)
            )
        },
        super::shutdown_signal(),
    ))?;
    eprintln!("latmap: server stopped");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_help_of_max_drawings_says_how_many_wait() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let cmd = <Cli as clap::CommandFactory>::command();
        let help = cmd
            .get_arguments()
            .find(|a| a.get_id() == "max_drawings")
            .and_then(|a| a.get_long_help().or(a.get_help()))
            .map(|h| h.to_string())
            .unwrap_or_default();
        let waiting = crate::remote::server::WAITING_PER_SLOT;
        assert!(
            help.contains(&format!("{waiting} times as many wait")),
            "{help}"
        );
    }
}
