//! `latmap history RUNS --path SRC:DST`: a path over time, as a smoke chart (SVG, drawn
//! with plotters), or its series as JSON or CSV. RUNS is a series folder (`sweep
//! --every`'s OUT, or serve's data folder) or an aggregator's URL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};

use crate::config::ProbeKind;
use crate::history::doc::{Doc, PathSeries, Selection};
use crate::history::{History, PathKey, Point, Series};
use crate::render::smoke;

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["path", "region", "source"])))]
pub struct Args {
    /// A series of runs: the folder `latmap sweep --every` writes into, the data folder
    /// of `latmap serve`, or an aggregator's URL (http://host:8455).
    #[arg(value_name = "RUNS")]
    pub runs: String,
    /// The path to show, SOURCE:TARGET (region names; when a name holds ':' give
    /// --source and --target instead).
    #[arg(long, value_name = "SRC:DST")]
    pub path: Option<String>,
    /// The path to show by its two regions, SOURCE with --target (for names holding
    /// ':').
    #[arg(long, value_name = "REGION", requires = "target", conflicts_with_all = ["path", "region"])]
    pub source: Option<String>,
    /// The path's target region, with --source.
    #[arg(long, value_name = "REGION", requires = "source")]
    pub target: Option<String>,
    /// Every path from and to this region, as small multiples (SVG) or one series per
    /// path (JSON, CSV).
    #[arg(long, value_name = "REGION", conflicts_with = "path")]
    pub region: Option<String>,
    /// Only this probe kind: icmp, udp or tcp [default: every kind the path was
    /// measured with].
    #[arg(long)]
    pub kind: Option<ProbeKind>,
    /// Only runs that started in the last DURATION ("7d", "36h"), or since a UTC time
    /// ("2026-12-01T00:00:00Z") [default: every run kept].
    #[arg(long, value_name = "WHEN", value_parser = since_arg)]
    pub since: Option<Since>,
    /// Write to FILE instead of standard output; its extension (.svg, .json, .csv)
    /// chooses the format unless --format is given.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Output format [default: from --out's extension, else svg].
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<FormatArg>,
    /// Read the series' history afresh from its runs (after the history file was lost
    /// or damaged), replacing it.
    #[arg(long)]
    pub rebuild: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    Svg,
    Json,
    Csv,
}

/// `--since`: a time ago, or a time.
#[derive(Debug, Clone, Copy)]
pub enum Since {
    Ago(Duration),
    At(DateTime<Utc>),
}

impl Since {
    fn at(self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Since::At(t) => t,
            Since::Ago(d) => chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::UNIX_EPOCH),
        }
    }
}

fn since_arg(s: &str) -> Result<Since, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Since::At(t.with_timezone(&Utc)));
    }
    humantime::parse_duration(s).map(Since::Ago).map_err(|e| {
        format!("{e}: give a duration (\"7d\", \"36h\") or a UTC time (\"2026-12-01T00:00:00Z\")")
    })
}

/// Which paths were asked for.
fn selection(args: &Args) -> anyhow::Result<Selection> {
    if let (Some(s), Some(t)) = (&args.source, &args.target) {
        if s == t {
            bail!("--source and --target are both {s:?}: give two different regions");
        }
        return Ok(Selection::Path {
            source: s.clone(),
            target: t.clone(),
        });
    }
    if let Some(p) = &args.path {
        let Some((s, t)) = p.split_once(':') else {
            bail!("--path {p:?}: write it SOURCE:TARGET, e.g. --path eu-west-1:us-east-1");
        };
        if t.contains(':') {
            // Region names may hold ':': which one splits the path is not known.
            bail!(
                "--path {p:?} has more than one ':', and region names may hold ':'; give the regions apart: --source {s:?} --target {t:?}, or whichever split is meant"
            );
        }
        if s.is_empty() || t.is_empty() || s == t {
            bail!("--path {p:?}: write it SOURCE:TARGET with two different regions");
        }
        return Ok(Selection::Path {
            source: s.to_string(),
            target: t.to_string(),
        });
    }
    match &args.region {
        Some(r) => Ok(Selection::Region(r.clone())),
        None => bail!("give --path SOURCE:TARGET (or --source and --target) or --region REGION"),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let want = selection(&args)?;
    let format = match (args.format, &args.out) {
        (Some(f), _) => f,
        (None, Some(out)) => match out.extension().and_then(|e| e.to_str()) {
            Some("json") => FormatArg::Json,
            Some("csv") => FormatArg::Csv,
            _ => FormatArg::Svg,
        },
        (None, None) => FormatArg::Svg,
    };
    let kind = args.kind;
    let since = args.since.map(|s| s.at(Utc::now()));
    let series = if is_url(&args.runs) {
        if args.rebuild {
            bail!("--rebuild works on a folder; an aggregator keeps its own history");
        }
        fetch(&args.runs, &want, kind, since)?
    } else {
        local(Path::new(&args.runs), &want, kind, since, args.rebuild)?
    };
    let text = match format {
        FormatArg::Json => Doc::new(series.iter().map(|(s, _)| s.clone()).collect()).to_json(),
        FormatArg::Csv => Doc::new(series.iter().map(|(s, _)| s.clone()).collect()).to_csv(),
        FormatArg::Svg => {
            let charts: Vec<(PathKey, Vec<Point>)> =
                series.into_iter().map(|(s, p)| (s.key(), p)).collect();
            if charts.len() == 1 {
                smoke::chart_svg(&charts[0].0, &charts[0].1)?
            } else {
                smoke::multiples_svg(&charts)?
            }
        }
    };
    match &args.out {
        Some(out) => crate::artifact::write_atomic(out, text.as_bytes())
            .with_context(|| format!("cannot write {}", out.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn is_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

/// The history of a series folder, its paths chosen.
fn local(
    dir: &Path,
    want: &Selection,
    kind: Option<ProbeKind>,
    since: Option<DateTime<Utc>>,
    rebuild: bool,
) -> anyhow::Result<Vec<(PathSeries, Vec<Point>)>> {
    if !dir.is_dir() {
        bail!(
            "{} is not a folder of runs: give the folder `latmap sweep --every` writes into, \
             a `latmap serve` data folder, or an aggregator's URL",
            super::shown(dir)
        );
    }
    let series = Series::detect(dir);
    let names = series
        .names()
        .with_context(|| format!("cannot read the folder {}", series.runs.display()))?;
    if names.is_empty() {
        bail!(
            "{} holds no run: expected {}/<run>/run.json, as `latmap sweep --every` writes",
            super::shown(dir),
            super::shown(&series.runs)
        );
    }
    let (history, _scratch) = open(&series, rebuild)?;
    let out = history.select(want, kind, since)?;
    if out.is_empty() {
        bail!("{}", no_such_path(want, kind, &history.paths(), dir));
    }
    Ok(out)
}

/// The series' history, made to hold its runs; when another latmap holds it open (a
/// running `sweep --every` or `serve`) or the folder cannot be written, a scratch
/// history read from the runs, which lives as long as the returned folder.
fn open(series: &Series, rebuild: bool) -> anyhow::Result<(History, Option<tempfile::TempDir>)> {
    let attempt = if rebuild {
        series.rebuild(None)
    } else {
        series.open()
    };
    match attempt {
        Ok((h, synced)) => {
            if synced.added > 0 {
                eprintln!(
                    "latmap: recorded {} run(s) the history lacked",
                    synced.added
                );
            }
            Ok((h, None))
        }
        Err(e) => {
            eprintln!(
                "latmap: {e}\nlatmap: reading the runs instead (another latmap may be using the \
                 history; an aggregator's URL reads it from the server)"
            );
            let scratch = tempfile::tempdir().context("cannot make a scratch folder")?;
            let (h, _) = series.rebuild(Some(&scratch.path().join(crate::history::FILE_NAME)))?;
            Ok((h, Some(scratch)))
        }
    }
}

/// What to say when no path matches: the regions and paths the history does hold.
fn no_such_path(want: &Selection, kind: Option<ProbeKind>, all: &[PathKey], dir: &Path) -> String {
    let mut regions: Vec<&str> = all
        .iter()
        .flat_map(|k| [k.source.as_str(), k.target.as_str()])
        .collect();
    regions.sort_unstable();
    regions.dedup();
    let kind_note = match kind {
        Some(k) => {
            let mut kinds: Vec<String> = all
                .iter()
                .filter(|p| want.matches(p, None))
                .map(|p| p.kind.to_string())
                .collect();
            kinds.sort();
            kinds.dedup();
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" (it was measured with {}, not {k})", kinds.join(", "))
            }
        }
        None => String::new(),
    };
    format!(
        "the runs in {} have no history of {}{kind_note}; their regions are: {}",
        super::shown(dir),
        want.describe(),
        if regions.is_empty() {
            "(none)".to_string()
        } else {
            regions.join(", ")
        }
    )
}

/// The history of the paths from an aggregator (`GET /v1/history`).
fn fetch(
    base: &str,
    want: &Selection,
    kind: Option<ProbeKind>,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<(PathSeries, Vec<Point>)>> {
    let mut url = reqwest::Url::parse(base)
        .with_context(|| format!("{base:?} is not a URL"))?
        .join("/v1/history")
        .with_context(|| format!("{base:?} is not a URL"))?;
    {
        let mut q = url.query_pairs_mut();
        match want {
            Selection::Path { source, target } => {
                q.append_pair("source", source);
                q.append_pair("target", target);
            }
            Selection::Region(r) => {
                q.append_pair("region", r);
            }
        }
        if let Some(k) = kind {
            q.append_pair("kind", &k.to_string());
        }
        if let Some(t) = since {
            q.append_pair(
                "since",
                &t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            );
        }
    }
    let rt = super::runtime().context("cannot start the HTTP client")?;
    let token = std::env::var("LATMAP_TOKEN_FILE")
        .ok()
        .map(|f| crate::remote::Token::read(Path::new(&f)))
        .transpose()?;
    let (status, body) = rt
        .block_on(async {
            let client = crate::remote::http_client(
                Duration::from_secs(30),
                concat!("latmap/", env!("CARGO_PKG_VERSION")),
            )?;
            let mut req = client.get(url.clone());
            if let Some(t) = &token {
                req = req.bearer_auth(t.expose());
            }
            let resp = req.send().await?;
            let status = resp.status();
            let body = resp.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        })
        .with_context(|| format!("cannot ask {url} for the history"))?;
    if !status.is_success() {
        let reason = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        bail!("{url} answered {status}: {reason}");
    }
    let out = Doc::parse(&body).with_context(|| format!("{url} sent a bad history"))?;
    if out.is_empty() {
        bail!("{url} has no history of {}", want.describe());
    }
    Ok(out)
}
