//! `latmap diff BASE CURRENT`: gate a change in CI on the latency map.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;

use crate::artifact::write_atomic;
use crate::diff::{DiffThresholds, Verdict, diff};
use crate::render::diff as fmt;
use crate::render::heatmap::{Options, Order, View, heatmap_svg};
use crate::run::Run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
    Json,
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Exit 1 when a path regressed.
    Regression,
    /// Exit 1 on any change: a regression, an improvement, a path or region that came
    /// or went, a changed address, a new or resolved finding.
    Any,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The baseline run (e.g. the last run of the main branch).
    pub base: PathBuf,
    /// The run to judge.
    pub current: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[arg(long, value_enum, default_value = "regression")]
    pub fail_on: FailOn,
    /// Also draw the p50 change as a heatmap to this SVG file.
    #[arg(long, value_name = "DELTA.svg")]
    pub heatmap: Option<PathBuf>,
    /// A p50 change must exceed this share of the baseline, in percent [default: [diff]
    /// p50_pct of the configuration, else 10].
    #[arg(long)]
    pub p50_pct: Option<f64>,
    /// ... and this many milliseconds [default: [diff] p50_ms, else 2].
    #[arg(long)]
    pub p50_ms: Option<f64>,
    /// A p95 change must exceed this share of the baseline, in percent [default: [diff]
    /// p95_pct, else 20].
    #[arg(long)]
    pub p95_pct: Option<f64>,
    /// ... and this many milliseconds [default: [diff] p95_ms, else 5].
    #[arg(long)]
    pub p95_ms: Option<f64>,
    /// A loss change must exceed this many percentage points [default: [diff] loss_pp, else
    /// 0.5].
    #[arg(long)]
    pub loss_pp: Option<f64>,
    /// Significance level over all paths together (Holm's correction) [default: [diff] alpha,
    /// else 0.01].
    #[arg(long)]
    pub alpha: Option<f64>,
}

pub fn run(config: &super::ConfigArg, args: Args) -> anyhow::Result<ExitCode> {
    let base = config.read_run(&args.base)?;
    let current = config.read_run(&args.current)?;
    // [diff] of the configuration when there is one; flags override it.
    let mut t = config
        .optional()?
        .map(|c| c.diff)
        .unwrap_or_else(DiffThresholds::default);
    for (flag, slot) in [
        (args.p50_pct, &mut t.p50_pct),
        (args.p50_ms, &mut t.p50_ms),
        (args.p95_pct, &mut t.p95_pct),
        (args.p95_ms, &mut t.p95_ms),
        (args.loss_pp, &mut t.loss_pp),
        (args.alpha, &mut t.alpha),
    ] {
        if let Some(v) = flag {
            if !(v.is_finite() && v >= 0.0) {
                bail!("thresholds are numbers of 0 or more, got {v}");
            }
            *slot = v;
        }
    }
    if !(t.alpha > 0.0 && t.alpha < 1.0) {
        bail!("--alpha must be between 0 and 1, got {}", t.alpha);
    }
    let d = diff(&base, &current, &t);
    if d.paths.is_empty() {
        let names = |r: &Run| {
            r.regions
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "{} and {} have no path in common, so there is nothing to compare: the base has regions {} \
             and the current run {}; diff runs of the same fleet and probe kinds",
            args.base.display(),
            args.current.display(),
            names(&base),
            names(&current)
        );
    }
    let text = match args.format {
        Format::Text => fmt::text(
            &d,
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        ),
        Format::Markdown => fmt::markdown(&d),
        Format::Json => serde_json::to_string_pretty(&d)? + "\n",
        Format::Junit => fmt::junit(&d),
    };
    super::print(&text)?;
    if let Some(path) = &args.heatmap {
        let opts = Options {
            view: View::Delta,
            order: Order::Config,
            kind: None,
            baseline: Some(&base),
        };
        write_atomic(path, heatmap_svg(&current, &opts)?.as_bytes())?;
    }
    let fail = match args.fail_on {
        FailOn::Regression => d.count(Verdict::Regression) > 0,
        FailOn::Any => d.any_change(),
    };
    Ok(if fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
