//! `latmap render`: draw a run as an SVG heatmap.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::artifact::write_atomic;
use crate::config::ProbeKind;
use crate::render::heatmap::{Options, Order, View, heatmap_svg};
use crate::run::Run;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run to draw (run.json).
    pub run: PathBuf,
    /// What the colour shows.
    #[arg(long, value_enum, default_value = "rtt")]
    pub view: ViewArg,
    /// Row and column order.
    #[arg(long, value_enum, default_value = "config")]
    pub order: OrderArg,
    /// The run to compare against (needed by --view delta).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// The probe kind to draw [default: the kind with the most paths].
    #[arg(long)]
    pub kind: Option<ProbeKind>,
    /// Where to write the SVG [default: heatmap-VIEW.svg beside the run].
    #[arg(long, short = 'o')]
    pub out: Option<PathBuf>,
}

/// `--view`: what the colour shows (the library's [`View`], which knows no clap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ViewArg {
    /// Median RTT (p50), log scale.
    Rtt,
    /// Loss ratio.
    Loss,
    /// p50 RTT over the speed-of-light-in-fiber bound of the great-circle distance.
    Inflation,
    /// Change of p50 RTT against a baseline run.
    Delta,
}

impl From<ViewArg> for View {
    fn from(v: ViewArg) -> View {
        match v {
            ViewArg::Rtt => View::Rtt,
            ViewArg::Loss => View::Loss,
            ViewArg::Inflation => View::Inflation,
            ViewArg::Delta => View::Delta,
        }
    }
}

/// `--order`: the order of rows and columns (the library's [`Order`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OrderArg {
    /// As the regions are listed in the run (the configuration's order).
    Config,
    /// West to east by longitude; regions without a location last.
    Geo,
    /// Regions with alike RTTs next to each other (average-linkage clustering), so
    /// blocks show.
    Cluster,
}

impl From<OrderArg> for Order {
    fn from(o: OrderArg) -> Order {
        match o {
            OrderArg::Config => Order::Config,
            OrderArg::Geo => Order::Geo,
            OrderArg::Cluster => Order::Cluster,
        }
    }
}

pub fn run(config: &super::ConfigArg, args: Args) -> anyhow::Result<ExitCode> {
    let run = config.read_run(&args.run)?;
    let baseline = args
        .baseline
        .as_deref()
        .map(|p| config.read_run(p))
        .transpose()?;
    let view = View::from(args.view);
    let opts = Options {
        view,
        order: args.order.into(),
        kind: args.kind,
        baseline: baseline.as_ref(),
        links: None,
    };
    let svg = heatmap_svg(&run, &opts)?;
    let out = args.out.unwrap_or_else(|| beside(&args.run, view));
    write_atomic(&out, svg.as_bytes())?;
    eprintln!(
        "latmap: {} heatmap written to {}",
        view.as_str(),
        super::shown(&out)
    );
    Ok(ExitCode::SUCCESS)
}

/// `heatmap-VIEW.svg` in the folder of `run`.
fn beside(run: &Path, view: View) -> PathBuf {
    run.parent()
        .unwrap_or(Path::new(""))
        .join(format!("heatmap-{}.svg", view.as_str()))
}

/// Writes `heatmap-rtt.svg` and `heatmap-loss.svg` beside a run file (what `sweep` and
/// `aggregate` leave next to run.json).
pub fn write_default_heatmaps(run: &Run, run_path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for view in [View::Rtt, View::Loss] {
        let opts = Options {
            view,
            order: Order::Config,
            kind: None,
            baseline: None,
            links: None,
        };
        let path = beside(run_path, view);
        write_atomic(&path, heatmap_svg(run, &opts)?.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}
