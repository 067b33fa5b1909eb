//! `latmap probe --region R`: one region's prober, writing its region report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use crate::artifact::write_json_atomic;
use crate::sweep::{probe_regions, region_index};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The region this prober runs in (a `name` from the configuration).
    #[arg(long, short = 'r', env = "LATMAP_REGION")]
    pub region: String,
    /// Where to write the region report [default: REGION.json].
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let index = region_index(&config, &args.region)?;
    let rt = super::runtime()?;
    // Ctrl-C or SIGTERM stops the prober; the lab it started goes with it.
    let regions = [index];
    let reports = rt.block_on(async {
        tokio::select! {
            r = probe_regions(&config, &regions, None, |_| {}) => Ok(r),
            code = super::stop_signal() => Err(code),
        }
    });
    let reports = match reports {
        Ok(r) => r?,
        Err(code) => {
            eprintln!("latmap: interrupted; nothing written");
            std::process::exit(i32::from(code));
        }
    };
    let report = reports
        .into_iter()
        .next()
        .context("the prober returned no report")?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("{}.json", args.region)));
    write_json_atomic(&out, &report)?;
    let answered = report.paths.iter().filter(|p| p.received > 0).count();
    eprintln!(
        "latmap: {}: {} paths probed, {} answered; report written to {}",
        args.region,
        report.paths.len(),
        answered,
        super::shown(&out)
    );
    Ok(ExitCode::SUCCESS)
}
