//! Assembly: turns an epoch's stored reports into its run, once: when every region of
//! the fleet reported, or when the deadline after the epoch's first report passed.
//! Reports that arrive after their run was built are batched: the first schedules one
//! rebuild a short while later (`--batch`, longer when builds are slow),
//! and every report arriving meanwhile joins it, so a run is rebuilt at most once per
//! batch, never once per report. A build that fails (a full disk) is retried with
//! exponential backoff, and the log says why it failed.
//!
//! A build holds the fleet's paths without their samples (the analysis needs only the
//! statistics; each push hands its report over that way, or it is read from disk),
//! and writes `run.json` by copying every path's text from the stored reports in the
//! run's order, so a run is never held whole in memory and no report is parsed twice.
//! Runs on its own thread; at start it finishes what a restart interrupted (loads the
//! run listings, cleans up, and assembles the epochs whose run is missing or behind
//! their reports) while the server already answers.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use crate::anomaly;
use crate::report::RegionReport;
use crate::run::{Run, RunRegion, path_order};

use super::super::metrics::{Latest, RttHistogram};
use super::super::store::{Store, StoreError, chain};
use super::super::wire::RunListing;
use super::State;

/// The longest wait between two attempts at a build that fails.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How often the retention is applied when nothing is assembled.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The most memory, estimated, that reports handed over by pushes may hold while
/// they wait for their build; past it, reports are read from disk when built.
const CACHE_BYTES: usize = 512 << 20;

/// A report stored by a push, handed to the assembler.
pub(super) struct Stored {
    pub id: String,
    pub region: String,
    /// The regions the report lists: its prober's view of the fleet.
    pub fleet: Vec<String>,
    /// The report without its samples, as stored (same paths in the same order).
    pub slim: RegionReport,
    /// Where each path's text is in the stored file.
    pub ranges: Vec<Range<usize>>,
    /// The RTT histogram of each path, in the report's order (for `/metrics`).
    pub rtt: Vec<RttHistogram>,
}

/// A report handed over by a push: without samples, with where its paths' text is in
/// its file, and its estimated size.
struct Cached {
    report: RegionReport,
    ranges: Option<Vec<Range<usize>>>,
    /// The RTT histogram of each of the report's paths.
    rtt: Vec<RttHistogram>,
    size: usize,
}

/// What the assembler knows of one epoch it has work for.
struct Epoch {
    /// Regions whose report is stored.
    have: BTreeSet<String>,
    /// Regions the run should have: the configuration's, or those the reports list.
    expected: BTreeSet<String>,
    /// Reports handed over by pushes (without samples), by region.
    cached: BTreeMap<String, Cached>,
    /// The run of this epoch has been built before (a build now is a rebuild).
    built: bool,
    /// The deadline: this long after the first report the run is built anyway.
    deadline: Instant,
    /// When to build; `None` while waiting for more reports before the deadline.
    due: Option<Instant>,
    failures: u32,
}

/// The assembler's loop; returns when the server stops.
pub(super) fn assembler(state: Arc<State>, rx: Receiver<Stored>) {
    let mut a = Assembler {
        state,
        epochs: BTreeMap::new(),
        cached_bytes: 0,
        last_build: Duration::ZERO,
    };
    a.start();
    let mut last_prune = Instant::now();
    let mut pruned_after_build = true;
    while !a.state.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        let next = a.epochs.values().filter_map(|e| e.due).min();
        let wait = next
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        match rx.recv_timeout(wait) {
            Ok(s) => a.stored(s),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Everything that arrived meanwhile joins this round.
        while let Ok(s) = rx.try_recv() {
            a.stored(s);
        }
        let now = Instant::now();
        let due = a
            .epochs
            .iter()
            .filter_map(|(id, e)| e.due.filter(|d| *d <= now).map(|d| (d, id.clone())))
            .min();
        if let Some((_, id)) = due {
            a.build(&id);
            pruned_after_build = false;
        }
        a.state.counters.pending.set(a.epochs.len() as i64);
        // Retention after builds (at most every few seconds) and every minute.
        let since = last_prune.elapsed();
        if since >= PRUNE_EVERY || (!pruned_after_build && since >= Duration::from_secs(2)) {
            a.state.prune();
            last_prune = Instant::now();
            pruned_after_build = true;
        }
    }
}

struct Assembler {
    state: Arc<State>,
    epochs: BTreeMap<String, Epoch>,
    cached_bytes: usize,
    /// How long the last build took: late reports wait at least twice that.
    last_build: Duration,
}

/// The memory a report without samples and its histograms take, roughly.
fn estimate(r: &RegionReport, rtt: &[RttHistogram]) -> usize {
    r.paths
        .iter()
        .map(|p| {
            400 + p.source.len()
                + p.target.len()
                + 2 * p.target_spec.len()
                + p.resolve_error.as_ref().map_or(0, String::len)
        })
        .sum::<usize>()
        + 64 * r.regions.len()
        + std::mem::size_of_val(rtt)
}

/// `report` with only what a build needs: no samples nor resolution errors (the
/// run's text is copied from the stored file; the analysis uses the statistics).
pub(super) fn slim(mut report: RegionReport) -> RegionReport {
    for p in &mut report.paths {
        p.drop_samples();
        p.resolve_error = None;
    }
    report
}

impl Assembler {
    fn store(&self) -> &Store {
        &self.state.store
    }

    fn expected(&self, fleet: impl IntoIterator<Item = String>) -> BTreeSet<String> {
        match &self.state.settings.known {
            Some(known) => known.iter().cloned().collect(),
            None => fleet.into_iter().collect(),
        }
    }

    /// After a (re)start: clean up, load the listings, and find the epochs whose run
    /// is missing or does not hold every stored report.
    fn start(&mut self) {
        let started = Instant::now();
        if let Err(e) = self.store().clean() {
            tracing::error!("cannot clean the data folder: {}", chain(&e));
        }
        self.state.load_index();
        // The history holds exactly the stored runs: those retention deleted while the
        // server was down are forgotten, those assembled before a crash recorded.
        if let Some(h) = &self.state.history {
            match crate::history::Series::of_store(self.store().root()).sync(h) {
                Ok(s) if s.added > 0 => {
                    tracing::info!("history: recorded {} stored run(s) it lacked", s.added)
                }
                Ok(_) => {}
                Err(e) => tracing::error!("history: {e}"),
            }
        }
        let ids = match self.store().report_ids() {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("cannot look for unfinished runs: {}", chain(&e));
                return;
            }
        };
        // Each region's newest report, for /metrics: the newest epochs tell it.
        for id in ids.iter().rev().take(10) {
            for (region, t) in self.store().reported(id).unwrap_or_default() {
                let unix = t
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                self.state.counters.reported(&region, unix);
            }
        }
        for id in ids {
            let stored = match self.store().reported(&id) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("run {id}: {}", chain(&e));
                    continue;
                }
            };
            let have: BTreeSet<String> = stored.iter().map(|(r, _)| r.clone()).collect();
            let in_run = self.state.reported_in_run(&id);
            if in_run.as_ref() == Some(&have) || have.is_empty() {
                continue;
            }
            tracing::info!("run {id} is behind its stored reports; finishing it");
            // The deadline runs from the epoch's first report, as the files' times say.
            let first = stored.iter().map(|(_, t)| *t).min();
            let age = first
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            let mut fleet = BTreeSet::new();
            let mut cached = BTreeMap::new();
            for region in &have {
                if let Ok(r) = self.store().report(&id, region) {
                    fleet.extend(r.regions.iter().map(|x| x.name.clone()));
                    fleet.insert(r.region.clone());
                    let rtt = RttHistogram::of_paths(&r.paths);
                    let report = slim(r);
                    let size = estimate(&report, &rtt);
                    if self.cached_bytes + size <= CACHE_BYTES {
                        self.cached_bytes += size;
                        cached.insert(
                            region.clone(),
                            Cached {
                                report,
                                ranges: None,
                                rtt,
                                size,
                            },
                        );
                    }
                }
            }
            let expected = self.expected(fleet);
            let now = Instant::now();
            let deadline = now + self.state.settings.deadline.saturating_sub(age);
            let built = in_run.is_some();
            let complete = expected.is_subset(&have);
            let due = if built || complete { now } else { deadline };
            self.epochs.insert(
                id,
                Epoch {
                    have,
                    expected,
                    cached,
                    built,
                    deadline,
                    due: Some(due),
                    failures: 0,
                },
            );
        }
        tracing::info!(
            "startup work done in {:.2} s: {} run(s) listed, {} to finish",
            started.elapsed().as_secs_f64(),
            self.state.run_count(),
            self.epochs.len()
        );
    }

    /// A report was stored: schedule its epoch's build.
    fn stored(&mut self, s: Stored) {
        let now = Instant::now();
        let deadline = now + self.state.settings.deadline;
        let built = self.state.reported_in_run(&s.id).is_some();
        let mut fleet = s.fleet;
        fleet.push(s.region.clone());
        let expected = self.expected(fleet);
        let size = estimate(&s.slim, &s.rtt);
        let keep = self.cached_bytes + size <= CACHE_BYTES;
        let e = self.epochs.entry(s.id).or_insert_with(|| Epoch {
            have: BTreeSet::new(),
            expected: BTreeSet::new(),
            cached: BTreeMap::new(),
            built,
            deadline,
            due: None,
            failures: 0,
        });
        e.have.insert(s.region.clone());
        e.expected.extend(expected);
        if keep {
            let c = Cached {
                report: s.slim,
                ranges: Some(s.ranges),
                rtt: s.rtt,
                size,
            };
            if let Some(old) = e.cached.insert(s.region, c) {
                self.cached_bytes -= old.size;
            }
            self.cached_bytes += size;
        }
        if e.failures > 0 {
            // A build is failing: its backoff decides when to try again.
            return;
        }
        if e.built {
            // A late report: one rebuild for every report of the batch.
            let wait = self.state.settings.batch.max(self.last_build * 2);
            if e.due.is_none() {
                e.due = Some(now + wait);
            }
        } else if e.expected.is_subset(&e.have) {
            e.due = Some(now);
        } else if e.due.is_none() {
            e.due = Some(e.deadline);
        }
    }

    fn build(&mut self, id: &str) {
        let Some(mut e) = self.epochs.remove(id) else {
            return;
        };
        for c in e.cached.values() {
            self.cached_bytes -= c.size;
        }
        let cached = std::mem::take(&mut e.cached);
        let missing = e.expected.difference(&e.have).count();
        if !e.built && missing > 0 {
            tracing::info!(
                "deadline of run {id} passed; assembling without the {missing} missing region(s)"
            );
        }
        let started = Instant::now();
        match self.assemble(id, cached) {
            Ok(listing) => {
                self.last_build = started.elapsed();
                tracing::info!(
                    "run {id} {}: {} of {} regions, {} paths, {} findings, in {:.0} ms",
                    if e.built { "re-assembled" } else { "assembled" },
                    listing.reported.len(),
                    listing.regions.len(),
                    listing.paths,
                    listing.anomalies,
                    self.last_build.as_secs_f64() * 1e3
                );
            }
            Err(err) => {
                e.failures += 1;
                self.state.counters.assembly_failures.inc();
                let wait = retry_delay(e.failures);
                tracing::error!(
                    "cannot assemble run {id} (attempt {}): {}; trying again in {:.0} s",
                    e.failures,
                    chain(&err),
                    wait.as_secs_f64()
                );
                e.due = Some(Instant::now() + wait);
                self.epochs.insert(id.to_string(), e);
            }
        }
    }

    /// Builds, analyses and stores the run of `id`, replacing an earlier one.
    fn assemble(
        &self,
        id: &str,
        mut cached: BTreeMap<String, Cached>,
    ) -> Result<RunListing, AssembleError> {
        let started = Instant::now();
        let store = self.store();
        let mut reports = Vec::new();
        let mut ranges: BTreeMap<String, Vec<Range<usize>>> = BTreeMap::new();
        let mut rtt: BTreeMap<String, Vec<RttHistogram>> = BTreeMap::new();
        for (region, _) in store.reported(id)? {
            match cached.remove(&region) {
                Some(c) => {
                    if let Some(r) = c.ranges {
                        ranges.insert(region.clone(), r);
                    }
                    rtt.insert(region.clone(), c.rtt);
                    reports.push(c.report);
                }
                None => match store.report(id, &region) {
                    Ok(r) => {
                        rtt.insert(region.clone(), RttHistogram::of_paths(&r.paths));
                        reports.push(slim(r));
                    }
                    Err(e) => tracing::error!(
                        "run {id}: leaving out the report of {region}: {}",
                        chain(&e)
                    ),
                },
            }
        }
        if reports.is_empty() {
            return Err(AssembleError::Merge("no readable report".into()));
        }
        // The run's order of every report's paths, as indices into its file.
        let mut regions: Vec<RunRegion> = Run::regions_of(&reports);
        if let Some(known) = &self.state.settings.known {
            for name in known {
                if !regions.iter().any(|r| &r.name == name) {
                    regions.push(RunRegion {
                        name: name.clone(),
                        location: None,
                        reported: false,
                    });
                }
            }
        }
        let rank: std::collections::HashMap<&str, usize> = regions
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.as_str(), i))
            .collect();
        let mut parts: Vec<(usize, String, Vec<usize>)> = reports
            .iter()
            .map(|r| {
                (
                    rank.get(r.region.as_str()).copied().unwrap_or(usize::MAX),
                    r.region.clone(),
                    path_order(&regions, &r.paths),
                )
            })
            .collect();
        drop(rank);
        parts.sort();
        let mut run =
            Run::from_owned_reports(reports).map_err(|e| AssembleError::Merge(e.to_string()))?;
        run.id = id.to_string();
        for r in regions.into_iter().skip(run.regions.len()) {
            run.regions.push(r);
        }
        let merged = Instant::now();
        // Each path is judged against its own past too (`shift`).
        let recent = self.state.history.as_ref().and_then(|h| {
            anomaly::shift::past(h, &run, &self.state.settings.thresholds)
                .map_err(|e| tracing::error!("run {id}: judged without history: {e}"))
                .ok()
                .flatten()
        });
        run.anomalies =
            anomaly::analyse_with_history(&run, &self.state.settings.thresholds, recent.as_ref());
        drop(recent);
        let analysed = Instant::now();
        let listing =
            RunListing::of(id, &run).ok_or_else(|| AssembleError::Merge("bad id".into()))?;
        let parts: Vec<Part> = parts
            .into_iter()
            .map(|(_, region, order)| Part {
                ranges: ranges.remove(&region),
                region,
                order,
            })
            .collect();
        let expected = run.paths.len();
        store.put_run_with(
            id,
            &run,
            |out| copy_paths(store, id, &parts, expected, out),
            &listing,
        )?;
        if let Some(h) = &self.state.history
            && let Err(e) = h.add_named(&run, Some(id))
        {
            tracing::error!("run {id}: not recorded in the history: {e}");
        }
        let written = Instant::now();
        let latest = Latest::of(id, &run, &in_run_order(&parts, &rtt, run.paths.len()));
        tracing::debug!(
            "run {id}: merged in {:.0} ms, analysed in {:.0} ms, written in {:.0} ms",
            (merged - started).as_secs_f64() * 1e3,
            (analysed - merged).as_secs_f64() * 1e3,
            (written - analysed).as_secs_f64() * 1e3
        );
        drop(run);
        // The run and the reports it was built from are gone: hand their pages back.
        crate::sockopt::release_free_memory();
        self.state.counters.assembled.inc();
        self.state.publish(listing.clone(), latest);
        Ok(listing)
    }
}

/// The delay before attempt `failures + 1` of a failing build: doubling from 1 s to
/// [`RETRY_MAX`], with up to a quarter more at random so that retries spread.
fn retry_delay(failures: u32) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(
            1u32.checked_shl(failures.saturating_sub(1).min(20))
                .unwrap_or(u32::MAX),
        )
        .min(RETRY_MAX);
    use rand::RngExt;
    base + rand::rng().random_range(Duration::ZERO..=base / 4)
}

#[derive(Debug, thiserror::Error)]
enum AssembleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Merge(String),
}

/// One report's share of a run: its region, the run's order of its paths (indices
/// into its file's), and where each path's text is in the file, when known.
struct Part {
    region: String,
    order: Vec<usize>,
    ranges: Option<Vec<Range<usize>>>,
}

#[derive(serde::Deserialize)]
struct FilePaths<'a> {
    #[serde(borrow)]
    paths: Vec<&'a serde_json::value::RawValue>,
}

/// Writes the run's paths by copying their text from the stored reports in the run's
/// order: each file is read once; where the push said where its paths are, they are
/// copied as they are (after a look at their first and last byte), else the file is
/// scanned for them.
fn copy_paths(
    store: &Store,
    id: &str,
    parts: &[Part],
    expected: usize,
    out: &mut crate::artifact::ElementWriter<'_>,
) -> std::io::Result<()> {
    let mut written = 0;
    for part in parts {
        let file = store.report_file(id, &part.region);
        let bytes = crate::files::read_regular(&file).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot read {}: {e}", file.display()))
        })?;
        let known = part.ranges.as_ref().filter(|r| {
            r.len() == part.order.len()
                && r.iter().all(|r| {
                    bytes.get(r.start) == Some(&b'{')
                        && r.end >= 1
                        && bytes.get(r.end - 1) == Some(&b'}')
                })
        });
        let changed = || {
            std::io::Error::other(format!(
                "{} changed while the run was assembled",
                file.display()
            ))
        };
        match known {
            Some(ranges) => {
                for &i in &part.order {
                    out.element(&bytes[ranges[i].clone()])?;
                }
            }
            None => {
                let text: FilePaths<'_> = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::other(format!("{} is not a report: {e}", file.display()))
                })?;
                if text.paths.len() != part.order.len() {
                    return Err(changed());
                }
                for &i in &part.order {
                    out.element(text.paths[i].get().as_bytes())?;
                }
            }
        }
        written += part.order.len();
    }
    if written != expected {
        return Err(std::io::Error::other(
            "the stored reports do not hold the run's paths",
        ));
    }
    Ok(())
}

/// The histograms of each report's paths (by region) in the run's order, which is
/// the parts' order; none when they do not add up to the run's `paths`.
fn in_run_order<'h>(
    parts: &[Part],
    rtt: &'h BTreeMap<String, Vec<RttHistogram>>,
    paths: usize,
) -> Vec<Option<&'h RttHistogram>> {
    let in_order: Vec<Option<&RttHistogram>> = parts
        .iter()
        .flat_map(|p| {
            let h = rtt.get(&p.region);
            p.order.iter().map(move |&i| h.and_then(|h| h.get(i)))
        })
        .collect();
    if in_order.len() == paths {
        in_order
    } else {
        Vec::new()
    }
}

/// The RTT histograms of the paths of `run` (same order), from its stored reports,
/// read one at a time: for the latest run after a restart, whose file is read without
/// samples. A path whose report cannot be read, or changed, has none.
pub(super) fn rtt_of_stored(store: &Store, run: &Run) -> Vec<Option<RttHistogram>> {
    let mut by_key = std::collections::HashMap::new();
    for (region, _) in store.reported(&run.id).unwrap_or_default() {
        let Ok(report) = store.report(&run.id, &region) else {
            continue;
        };
        for p in &report.paths {
            let key = (
                p.source.clone(),
                p.target.clone(),
                p.kind,
                p.target_spec.clone(),
            );
            by_key.insert(key, RttHistogram::of(&p.samples_us));
        }
    }
    run.paths
        .iter()
        .map(|p| {
            let key = (
                p.source.clone(),
                p.target.clone(),
                p.kind,
                p.target_spec.clone(),
            );
            by_key.remove(&key)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_their_cap() {
        assert!(
            retry_delay(1) >= Duration::from_secs(1)
                && retry_delay(1) <= Duration::from_millis(1250)
        );
        assert!(retry_delay(4) >= Duration::from_secs(8));
        assert!(retry_delay(40) <= RETRY_MAX + RETRY_MAX / 4);
        assert!(retry_delay(40) >= RETRY_MAX);
    }
}
