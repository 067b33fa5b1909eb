//! `latmap reflect`: a STAMP session-reflector for other regions' UDP probes.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;

use crate::reflector::ReflectorSet;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (repeatable). Port 862 is STAMP's and needs root or
    /// CAP_NET_BIND_SERVICE; any port works if the probers' targets name it.
    #[arg(long, short = 'l', default_value = "0.0.0.0:862")]
    pub listen: Vec<SocketAddr>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let set = ReflectorSet::start(&args.listen, None).with_context(|| {
        "cannot start the reflector; ports below 1024 need root or CAP_NET_BIND_SERVICE, \
         try --listen 0.0.0.0:8620"
    })?;
    for addr in set.local_addrs() {
        eprintln!("latmap: reflecting STAMP on udp {addr}");
    }
    let rt = super::runtime()?;
    rt.block_on(async { tokio::signal::ctrl_c().await })?;
    let stats = set.stats();
    let sum = |f: fn(&crate::reflector::ReflectorStats) -> u64| stats.iter().map(f).sum::<u64>();
    eprintln!(
        "latmap: reflected {} packets, ignored {} malformed",
        sum(|s| s.reflected.load(Ordering::Relaxed)),
        sum(|s| s.malformed.load(Ordering::Relaxed))
    );
    set.stop();
    Ok(ExitCode::SUCCESS)
}
