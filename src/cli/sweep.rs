//! `latmap sweep`: every local region's prober (all regions in a lab), one run file,
//! its anomalies found with the configuration's thresholds, and the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::bail;
use indicatif::{ProgressBar, ProgressStyle};

use crate::anomaly;
use crate::render::report::{Format, render};
use crate::run::Run;
use crate::sweep::{local_regions, probe_regions, region_index};

use super::report::FailOn;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for run.json.
    #[arg(long, short = 'o', default_value = "latmap-out")]
    pub out: PathBuf,
    /// Probe only from these regions (repeatable) [default: every region that can
    /// probe from here].
    #[arg(long, short = 'r')]
    pub region: Vec<String>,
    #[command(flatten)]
    pub fail: FailOn,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config_path)?;
    let regions = if args.region.is_empty() {
        local_regions(&config)
    } else {
        args.region
            .iter()
            .map(|r| region_index(&config, r))
            .collect::<Result<Vec<_>, _>>()?
    };
    if regions.is_empty() {
        bail!(
            "no region can probe from this machine: none has a `source` address of this host; \
             set `source` on the local regions, pass --region, or add a [lab] table to emulate a WAN \
             (see docs/config.md)"
        );
    }
    let bar = ProgressBar::no_length().with_style(
        ProgressStyle::with_template("{spinner} probing [{bar:30}] {pos}/{len} probes, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress_bar = bar.clone();
    let progress: crate::probe::Progress = Arc::new(move |n| progress_bar.inc(n));
    let started = Instant::now();
    let rt = super::runtime()?;
    let length_bar = bar.clone();
    let reports = rt.block_on(probe_regions(
        &config,
        &regions,
        Some(progress),
        move |total| length_bar.set_length(total),
    ))?;
    bar.finish_and_clear();
    let mut run = Run::from_reports(&reports)?;
    run.anomalies = anomaly::analyse(&run, &config.thresholds);
    let out = args.out.join("run.json");
    run.write(&out)?;
    super::render::write_default_heatmaps(&run, &out)?;
    super::print(&super::aggregate::tables(&run))?;
    super::print(&render(&run, Format::Text))?;
    eprintln!(
        "latmap: swept {} paths from {} regions in {:.1} s; run and heatmaps written to {}",
        run.paths.len(),
        reports.len(),
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(args.fail.exit_code(&run))
}
