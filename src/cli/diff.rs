//! `latmap diff BASE... CURRENT`: gate a change in CI on the latency map, against one or
//! several baseline runs.

use std::collections::HashSet;
use std::io::{BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::artifact::write_atomic;
use crate::diff::{DiffBuilder, DiffThresholds, Verdict};
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
#[command(after_long_help = AFTER_HELP, after_help = AFTER_HELP)]
pub struct Args {
    /// Baseline runs: run files, folders holding a run.json, or folders written by
    /// `latmap sweep --every` (every <epoch>/run.json in them; the `latest` link is not
    /// counted twice). With several, each path's variation from run to run is part of
    /// its test, so a path that always swings does not fail on a swing.
    #[arg(required = true, num_args = 1.., value_name = "BASE")]
    pub base: Vec<PathBuf>,
    /// The run to judge.
    #[arg(required = true)]
    pub current: PathBuf,
    /// Use only the newest N baselines (by the time each run started).
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    #[arg(long, value_enum, default_value = "regression")]
    pub fail_on: FailOn,
    /// Also draw the p50 change against the newest baseline as a heatmap to this SVG file.
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
    /// A p99 change must exceed this share of the baseline, in percent [default: [diff]
    /// p99_pct, else 25].
    #[arg(long)]
    pub p99_pct: Option<f64>,
    /// ... and this many milliseconds [default: [diff] p99_ms, else 10].
    #[arg(long)]
    pub p99_ms: Option<f64>,
    /// A loss change must exceed this many percentage points [default: [diff] loss_pp, else
    /// 0.5].
    #[arg(long)]
    pub loss_pp: Option<f64>,
    /// Chance that an unchanged network shows any regression, over all paths together
    /// (Holm's correction) [default: [diff] alpha, else 0.01].
    #[arg(long)]
    pub alpha: Option<f64>,
}

const AFTER_HELP: &str = "\
A path regresses when a change is statistically significant and beyond the thresholds:
p50 by Yuen's trimmed-mean test, p95 (from 50 replies per path) and p99 (from 250) by a
test of the tail over the median, loss by Fisher's exact test; Holm's correction over
every test that could give a verdict. The summary says which paths had too few probes
to detect a change of the configured size, and what count would.

Exit status: 0 no regression (with --fail-on any: no change), 1 regression, 2 error.
See docs/ci.md.";

/// The thresholds: flags, else `[diff]` of the configuration when there is one, else
/// the defaults (one settings layer: `config::settings`).
fn thresholds(config: &super::ConfigArg, args: &Args) -> anyhow::Result<DiffThresholds> {
    let flags = [
        args.p50_pct,
        args.p50_ms,
        args.p95_pct,
        args.p95_ms,
        args.p99_pct,
        args.p99_ms,
        args.loss_pp,
        args.alpha,
    ];
    crate::config::settings::diff(config.optional()?.map(|c| c.diff), flags)
        .map_err(anyhow::Error::msg)
}

/// The run files a BASE argument names: the file itself; a folder's run.json; and every
/// `<folder>/<name>/run.json` (the layout of `sweep --every`). Hidden entries (a
/// retention rename, a temporary file) are skipped.
fn run_files(arg: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(arg).with_context(|| format!("cannot read {}", arg.display()))?;
    if !meta.is_dir() {
        return Ok(vec![arg.to_path_buf()]);
    }
    let mut out = Vec::new();
    let direct = arg.join("run.json");
    if direct.is_file() {
        out.push(direct);
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(arg)
        .with_context(|| format!("cannot read the folder {}", arg.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path().join("run.json"))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    out.extend(entries);
    if out.is_empty() {
        bail!(
            "{} holds no run: expected {0}/run.json, or {0}/<epoch>/run.json as `latmap sweep --every` writes",
            super::shown(arg)
        );
    }
    Ok(out)
}

/// The start time of a run file, read without keeping the rest (to choose `--last`).
fn started_at(path: &Path) -> anyhow::Result<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Head {
        started_at: DateTime<Utc>,
    }
    let f = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let head: Head = serde_json::from_reader(BufReader::with_capacity(1 << 16, f))
        .with_context(|| format!("{} is not a latmap run", path.display()))?;
    Ok(head.started_at)
}

/// The baseline files, once each, without the current run, newest `last` only.
fn baseline_files(args: &Args) -> anyhow::Result<Vec<PathBuf>> {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let current = canonical(&args.current);
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for arg in &args.base {
        let folder = arg.is_dir();
        for f in run_files(arg)? {
            let c = canonical(&f);
            // A folder of runs may hold the run being judged; a file named on purpose
            // (a run against itself) is taken as asked.
            if folder && c == current {
                eprintln!(
                    "latmap: not using {} as a baseline: it is the run being judged",
                    super::shown(&f)
                );
                continue;
            }
            if seen.insert(c) {
                files.push(f);
            }
        }
    }
    if files.is_empty() {
        bail!(
            "no baseline run to compare with: pass a run file or a folder of runs before the current run"
        );
    }
    if let Some(k) = args.last {
        if k == 0 {
            bail!("--last takes a count of 1 or more");
        }
        if files.len() > k {
            let mut dated = files
                .into_iter()
                .map(|f| Ok((started_at(&f)?, f)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            dated.sort();
            files = dated.into_iter().rev().take(k).map(|(_, f)| f).collect();
        }
    }
    Ok(files)
}

/// The diff as JSON on stdout, streamed (a fleet of a million paths makes a diff of a
/// few GB); a closed pipe is not an error.
fn print_json(d: &crate::diff::RunDiff) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let result = serde_json::to_writer_pretty(&mut out, d)
        .map_err(std::io::Error::from)
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush());
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub fn run(config: &super::ConfigArg, args: Args) -> anyhow::Result<ExitCode> {
    let t = thresholds(config, &args)?;
    let mut files = baseline_files(&args)?;
    let current = config.read_run(&args.current)?;
    let mut builder = DiffBuilder::new(current);
    // One run is one baseline, however many copies of it are named: two copies would
    // count as two runs that agree exactly, and make the test surer than it is.
    let mut ids: std::collections::HashMap<String, PathBuf> = std::collections::HashMap::new();
    let mut kept = Vec::with_capacity(files.len());
    for f in files {
        let run = config.read_run(&f)?;
        if let Some(first) = ids.get(&run.id) {
            eprintln!(
                "latmap: not using {} as a baseline: it holds run {}, as {} does",
                super::shown(&f),
                crate::render::escape::terminal(&run.id),
                super::shown(first)
            );
            continue;
        }
        ids.insert(run.id.clone(), f.clone());
        builder.add_baseline(run);
        kept.push(f);
    }
    files = kept;
    let d = builder.finish(&t);
    if d.paths.is_empty() {
        let names = |r: &Run| {
            r.regions
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let base = builder.reference().map(names).unwrap_or_default();
        bail!(
            "{} and the current run {} have no path in common, so there is nothing to compare: the {} has regions {} \
             and the current run {}; diff runs of the same fleet and probe kinds",
            if files.len() == 1 {
                super::shown(&files[0]).to_string()
            } else {
                format!("the {} baselines", files.len())
            },
            super::shown(&args.current),
            if files.len() == 1 {
                "base"
            } else {
                "newest baseline"
            },
            base,
            names(builder.current())
        );
    }
    match args.format {
        Format::Text => super::print(&fmt::text(
            &d,
            std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        ))?,
        Format::Markdown => super::print(&fmt::markdown(&d))?,
        Format::Json => print_json(&d)?,
        Format::Junit => super::print(&fmt::junit(&d))?,
    }
    if let Some(path) = &args.heatmap {
        let opts = Options {
            view: View::Delta,
            order: Order::Config,
            kind: None,
            baseline: builder.reference(),
            links: None,
        };
        write_atomic(path, heatmap_svg(builder.current(), &opts)?.as_bytes())?;
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
