//! `latmap report RUN`: the summary and findings of a run; exit 1 at `--fail-on`.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::anomaly;
use crate::render::report::{Format, render};
use crate::run::{Run, Severity};

use super::ConfigArg;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A run file written by `latmap sweep` or `latmap aggregate`.
    pub run: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value = "text")]
    pub format: FormatArg,
    #[command(flatten)]
    pub fail: FailOn,
    /// Run the detectors again with the thresholds of --config (default: show the
    /// findings stored in the run).
    #[arg(long)]
    pub reanalyse: bool,
}

/// `--fail-on`, shared by `report`, `sweep` and `aggregate`.
#[derive(Debug, Clone, clap::Args)]
pub struct FailOn {
    /// Exit 1 when a finding is at least this severe.
    #[arg(long, value_enum, value_name = "SEVERITY")]
    pub fail_on: Option<SeverityArg>,
}

impl FailOn {
    /// Exit 1 when a finding of `run` reaches the level, else 0.
    pub fn exit_code(&self, run: &Run) -> ExitCode {
        let Some(level) = self.fail_on.map(Severity::from) else {
            return ExitCode::SUCCESS;
        };
        if run.anomalies.iter().any(|a| a.reaches(level)) {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Text,
    Markdown,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeverityArg {
    Warning,
    Critical,
}

impl From<SeverityArg> for Severity {
    fn from(s: SeverityArg) -> Severity {
        match s {
            SeverityArg::Warning => Severity::Warning,
            SeverityArg::Critical => Severity::Critical,
        }
    }
}

pub fn run(config: &ConfigArg, args: Args) -> anyhow::Result<ExitCode> {
    let mut run = config.read_run(&args.run)?;
    if args.reanalyse {
        let thresholds = config.thresholds()?;
        run.anomalies = anomaly::analyse(&run, &thresholds);
    }
    let format = match args.format {
        FormatArg::Text => Format::Text,
        FormatArg::Markdown => Format::Markdown,
        FormatArg::Json => Format::Json,
    };
    super::print(&render(&run, format))?;
    Ok(args.fail.exit_code(&run))
}
