//! `latmap aggregate R1.json R2.json ... --out run.json`: merge region reports, find
//! the run's anomalies with the configuration's thresholds, and print the report.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::anomaly;
use crate::config::ProbeKind;
use crate::render::report::{Format, render};
use crate::render::table::rtt_matrix;
use crate::report::RegionReport;
use crate::run::Run;

use super::ConfigArg;
use super::report::FailOn;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Region reports written by `latmap probe`.
    #[arg(required = true)]
    pub reports: Vec<PathBuf>,
    /// Where to write the run.
    #[arg(long, short = 'o', default_value = "run.json")]
    pub out: PathBuf,
    #[command(flatten)]
    pub fail: FailOn,
}

pub fn run(config: &ConfigArg, args: Args) -> anyhow::Result<ExitCode> {
    let thresholds = config.thresholds()?;
    // With a configuration, only its regions may appear in the reports.
    let known = config.fleet()?;
    let reports = args
        .reports
        .iter()
        .map(|p| RegionReport::read(p, known.as_deref()))
        .collect::<Result<Vec<_>, _>>()?;
    let mut run = Run::from_reports(&reports)?;
    run.anomalies = anomaly::analyse(&run, &thresholds);
    run.write(&args.out)?;
    super::render::write_default_heatmaps(&run, &args.out)?;
    super::print(&tables(&run))?;
    super::print(&render(&run, Format::Text))?;
    let missing: Vec<&str> = run
        .regions
        .iter()
        .filter(|r| !r.reported)
        .map(|r| r.name.as_str())
        .collect();
    if !missing.is_empty() {
        eprintln!("latmap: no data from {}", missing.join(", "));
    }
    eprintln!(
        "latmap: {} paths from {} reports written to {} (heatmaps beside it)",
        run.paths.len(),
        reports.len(),
        super::shown(&args.out)
    );
    Ok(args.fail.exit_code(&run))
}

/// One RTT matrix per probe kind present in the run.
pub fn tables(run: &Run) -> String {
    let mut s = String::new();
    for kind in ProbeKind::ALL {
        if run.paths.iter().any(|p| p.kind == kind) {
            s.push_str(&rtt_matrix(run, kind).to_string());
            s.push('\n');
        }
    }
    s
}
