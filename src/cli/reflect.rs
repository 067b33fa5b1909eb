//! `latmap reflect`: a STAMP session-reflector for other regions' UDP probes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use crate::reflector::{Options, RateLimit, ReflectorSet, ReflectorStats};

#[derive(Debug, clap::Args)]
#[command(after_help = "\
It answers STAMP (RFC 8762) and TWAMP-Light (RFC 5357 Appendix I) senders: requests of
14 bytes and up. On a wildcard address (0.0.0.0, [::]) it replies from the address each
request was sent to, so every address of a multi-homed host answers. It never answers a
reflector's packet or its own address and port, and caps its replies per source address.
It runs until Ctrl-C or SIGTERM, then prints what it reflected and what it ignored.

Examples:
  latmap reflect                           port 862 on every IPv4 address (needs root or
                                           CAP_NET_BIND_SERVICE)
  latmap reflect -l 0.0.0.0:8620 -l [::]:8620")]
pub struct Args {
    /// Address to listen on (repeatable). Port 862 is STAMP's and needs root or
    /// CAP_NET_BIND_SERVICE; any port works if the probers' targets name it.
    #[arg(long, short = 'l', default_value = "0.0.0.0:862")]
    pub listen: Vec<SocketAddr>,
    /// Replies per second to one source address, at most (also the burst); 0 for no
    /// cap. A prober sends one probe per target per interval, far below the default.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub rate_limit: u32,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rate_limit = (args.rate_limit > 0).then(|| RateLimit {
        per_second: f64::from(args.rate_limit),
        burst: f64::from(args.rate_limit),
        ..RateLimit::DEFAULT
    });
    let set = ReflectorSet::start(
        &args.listen,
        Options {
            impairment: None,
            rate_limit,
            realtime: false,
        },
    )?;
    for addr in set.local_addrs() {
        eprintln!("latmap: reflecting STAMP on udp {addr}");
    }
    let rt = super::runtime()?;
    rt.block_on(super::shutdown_signal());
    let stats = set.stats();
    let sum = |f: fn(&ReflectorStats) -> &std::sync::atomic::AtomicU64| {
        stats
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum::<u64>()
    };
    eprintln!(
        "latmap: reflected {} packets; ignored {} too short, {} replies, {} from our own address, {} over the rate limit",
        sum(|s| &s.reflected),
        sum(|s| &s.malformed),
        sum(|s| &s.replies_ignored),
        sum(|s| &s.looped),
        sum(|s| &s.rate_limited),
    );
    set.stop();
    Ok(ExitCode::SUCCESS)
}
