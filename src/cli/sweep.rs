//! `latmap sweep`: every local region's prober (all regions in a lab), one run file,
//! its anomalies found with the configuration's thresholds, and the report; once, or
//! on a schedule (`--every`, `--cron`, or `--schedule` for the configuration's
//! `[schedule]`), each run in its own folder with a `latest` link and retention.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};

use crate::anomaly;
use crate::config::Config;
use crate::config::settings::{self, ScheduleFlags};
use crate::history::{History, Series};
use crate::render::report::{Format, render};
use crate::run::Run;
use crate::schedule::{
    Retention, Schedule, Scheduler, apply_retention, run_dir_name, update_latest,
};
use crate::sweep::{local_regions, region_index, sweep_regions};

use super::report::FailOn;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder for run.json (with a schedule: one folder per run inside it, and a
    /// `latest` link to the newest).
    #[arg(long, short = 'o', default_value = "latmap-out")]
    pub out: PathBuf,
    /// Probe only from these regions (repeatable) [default: every region that can
    /// probe from here].
    #[arg(long, short = 'r')]
    pub region: Vec<String>,
    #[command(flatten)]
    pub fail: FailOn,
    /// Sweep again and again, every DURATION (whole seconds: "30s", "5m"), at whole
    /// multiples of it on the clock (:00, :05, ...).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with_all = ["cron", "schedule"])]
    pub every: Option<Duration>,
    /// Sweep at the times of a cron expression ("*/5 * * * *", UTC).
    #[arg(long, value_name = "EXPR", conflicts_with = "schedule")]
    pub cron: Option<String>,
    /// Sweep on the configuration's [schedule].
    #[arg(long)]
    pub schedule: bool,
    /// Wait a random time up to DURATION before each scheduled sweep [default: [schedule]
    /// jitter, else 0].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub jitter: Option<Duration>,
    /// Keep at most N runs [default: [schedule] keep, else all].
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
    /// Delete runs older than DURATION ("7d") [default: [schedule] keep_for, else never].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub keep_for: Option<Duration>,
    /// Stop after N scheduled sweeps [default: run until interrupted].
    #[arg(long, value_name = "N")]
    pub sweeps: Option<u64>,
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
    clean_stale(&args.out);
    let rt = super::runtime()?;
    match plan(&config, &args)? {
        None => {
            let run = sweep_once(&rt, &config, &regions, &args.out, true, None)?;
            Ok(args.fail.exit_code(&run))
        }
        Some(plan) => scheduled(&rt, &config, &regions, &args, plan),
    }
}

/// Removes the temporary files an interrupted sweep (killed mid-write) left in `out`
/// and its run folders; they are never taken for results, but would pile up.
fn clean_stale(out: &Path) {
    let mut dirs = vec![out.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(out) {
        dirs.extend(
            entries
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .map(|e| e.path()),
        );
    }
    for dir in dirs {
        match crate::files::remove_stale_temps(&dir) {
            Ok(removed) => {
                for name in removed {
                    tracing::info!(
                        "removed {}: a write that an interrupted sweep left",
                        super::shown(&dir.join(name))
                    );
                }
            }
            Err(e) => tracing::warn!("cannot clean {}: {e}", dir.display()),
        }
    }
}

/// A schedule with its jitter, and the retention.
struct Plan {
    scheduler: Scheduler,
    retention: Retention,
}

fn plan(config: &Config, args: &Args) -> anyhow::Result<Option<Plan>> {
    let flags = ScheduleFlags {
        every: args.every,
        cron: args.cron.clone(),
        use_file: args.schedule,
        jitter: args.jitter,
        keep: args.keep,
        keep_for: args.keep_for,
    };
    let Some(s) = settings::schedule(config.schedule.as_ref(), &config.path, &flags)
        .map_err(anyhow::Error::msg)?
    else {
        return Ok(None);
    };
    Ok(Some(Plan {
        scheduler: Scheduler::new(Schedule::of(&s)?, s.jitter)?,
        retention: Retention {
            keep: s.keep,
            max_age: s.keep_for,
        },
    }))
}

/// Sweeps on the schedule, never two at once: a sweep that runs past the next epoch
/// makes the loop skip that epoch (logged) and wait for the one after.
fn scheduled(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    regions: &[usize],
    args: &Args,
    plan: Plan,
) -> anyhow::Result<ExitCode> {
    let Plan {
        mut scheduler,
        retention,
    } = plan;
    crate::files::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    eprintln!(
        "latmap: sweeping {} into {}; Ctrl-C stops",
        scheduler.schedule(),
        super::shown(&args.out)
    );
    // The series' history, beside its runs: reconciled with the runs on disk first (a
    // run written just before a crash, runs removed while it was not running).
    let history = open_series_history(&args.out)?;
    let mut done = 0u64;
    let mut worst = ExitCode::SUCCESS;
    loop {
        let slot = scheduler.next(Utc::now())?;
        if let Some(skipped) = slot.skipped {
            tracing::warn!(epoch = %skipped.after, skipped = skipped.count, "the sweep ran past later start times; those sweeps were skipped, not overlapped");
            eprintln!(
                "latmap: the sweep of {} ran past {} later start time(s); skipped them",
                run_dir_name(skipped.after),
                skipped.count
            );
        }
        let epoch = slot.epoch;
        let wait = slot.wait(Utc::now());
        tracing::info!(%epoch, wait_s = wait.as_secs_f64(), "waiting for the next sweep");
        let interrupted = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(wait) => false,
                _ = tokio::signal::ctrl_c() => true,
            }
        });
        if interrupted {
            eprintln!("latmap: interrupted; {done} sweeps done");
            break;
        }
        let name = run_dir_name(epoch);
        let dir = args.out.join(&name);
        match sweep_once(rt, config, regions, &dir, false, Some((&history, &name))) {
            Ok(run) => {
                update_latest(&args.out, &name)
                    .with_context(|| format!("cannot update {}/latest", args.out.display()))?;
                if args.fail.exit_code(&run) != ExitCode::SUCCESS {
                    worst = ExitCode::from(1);
                }
            }
            // A failed sweep is logged and the schedule goes on; a setup error (bad
            // address, no permission) would fail every time, so it stops the loop.
            Err(e) if done == 0 => return Err(e),
            Err(e) => tracing::error!(%epoch, error = %format!("{e:#}"), "sweep failed"),
        }
        done += 1;
        let removed = apply_retention(&args.out, retention, Utc::now())?;
        for r in &removed {
            tracing::info!(path = %r.display(), "retention: removed an old run");
        }
        if !removed.is_empty() {
            Series::of_sweeps(&args.out).sync(&history)?;
        }
        if args.sweeps.is_some_and(|n| done >= n) {
            break;
        }
    }
    Ok(worst)
}

/// The history of the series in `out` ([`crate::history`]), made to hold exactly its runs.
fn open_series_history(out: &Path) -> anyhow::Result<History> {
    let (history, synced) = Series::of_sweeps(out).open()?;
    if synced.added > 0 {
        tracing::info!(added = synced.added, "history: recorded runs it lacked");
    }
    Ok(history)
}

/// One sweep into `dir`: run.json, heatmaps, and (when `print`) the tables and report.
/// In a series (`series`: its history and this run's name), each path is also judged
/// against its own history (`shift`), and the run is recorded in the history.
fn sweep_once(
    rt: &tokio::runtime::Runtime,
    config: &Config,
    regions: &[usize],
    dir: &Path,
    print: bool,
    series: Option<(&History, &str)>,
) -> anyhow::Result<Run> {
    let bar = ProgressBar::no_length().with_style(
        ProgressStyle::with_template("{spinner} probing [{bar:30}] {pos}/{len} probes, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress_bar = bar.clone();
    let progress: crate::probe::Progress = Arc::new(move |_| progress_bar.inc(1));
    let started = Instant::now();
    let length_bar = bar.clone();
    // Ctrl-C or SIGTERM stops the sweep; the lab it started goes with it.
    let swept = rt.block_on(async {
        tokio::select! {
            r = sweep_regions(config, regions, Some(progress), move |total| length_bar.set_length(total)) => Ok(r),
            code = super::stop_signal() => Err(code),
        }
    });
    bar.finish_and_clear();
    let swept = match swept {
        Ok(r) => r?,
        Err(code) => {
            eprintln!(
                "latmap: interrupted; nothing written, and the sweep's lab (if any) is removed"
            );
            // The probers' threads may still be finishing their last probes: do not
            // wait for them.
            std::process::exit(i32::from(code));
        }
    };
    let reports = swept.reports;
    let mut run = Run::from_reports(&reports)?;
    let recent = match series {
        Some((history, _)) => anomaly::shift::past(history, &run, &config.thresholds)?,
        None => None,
    };
    run.anomalies = anomaly::analyse_with_history(&run, &config.thresholds, recent.as_ref());
    let out = dir.join("run.json");
    run.write(&out)?;
    if let Some((history, name)) = series {
        history.add_named(&run, Some(name))?;
    }
    super::render::write_default_heatmaps(&run, &out)?;
    if print {
        super::print(&super::aggregate::tables(&run))?;
        super::print(&render(&run, Format::Text))?;
    }
    if let Some(e) = &swept.emulator {
        eprintln!(
            "latmap: the lab's emulator held {} packets and sent them on late by p50 {} µs, p99 {} µs, max {} µs{}",
            e.delayed,
            e.late_p50_us,
            e.late_p99_us,
            e.late_max_us,
            if e.realtime {
                ""
            } else {
                " (no real-time priority)"
            }
        );
    }
    eprintln!(
        "latmap: swept {} paths from {} regions in {:.1} s; run and heatmaps written to {}",
        run.paths.len(),
        reports.len(),
        started.elapsed().as_secs_f64(),
        super::shown(dir)
    );
    Ok(run)
}
