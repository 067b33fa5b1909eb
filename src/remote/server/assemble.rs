//! Assembly: turns an epoch's stored reports into its run, once: when every region of
//! the fleet reported, or when the deadline after the epoch's first report passed.
//! Reports that arrive after their run was built are batched: the first schedules one
//! rebuild a short while later (`--batch`, longer when builds are slow),
//! and every report arriving meanwhile joins it, so a run is rebuilt at most once per
//! batch, never once per report. A build that fails (a full disk) is retried with
//! exponential backoff, and the log says why it failed.
//!
//! A build holds a [`Digest`] of each report, not the report: the path that stands for
//! each (source, target, kind), without samples, which is all the analysis, the history
//! and `/metrics` read, and the run's order of the report's other paths as indices.
//! It writes `run.json` by copying every path's text from the stored reports in that
//! order, so the memory of a build grows with the fleet's pairs, not with the paths
//! or samples pushed, and no report is parsed twice.
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
use crate::report::{PathEntry, RegionReport};
use crate::run::{Run, RunRegion, stands_for_pair};

use super::super::metrics::{Latest, RttHistogram};
use super::super::store::{Store, StoreError, chain};
use super::super::wire::RunListing;
use super::State;

/// The longest wait between two attempts at a build that fails.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// How often the retention is applied when nothing is assembled.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The most memory, estimated, that the digests of reports handed over by pushes
/// may hold while they wait for their build; past it, reports are read from disk
/// when built. A digest holds a report's standing paths (one per target region and
/// kind) without samples, about 600 KB at 1,000 regions, so a whole 1,000-region
/// sweep stays within it and is never read back.
const CACHE_BYTES: usize = 1 << 30;

/// A report stored by a push, handed to the assembler.
pub(super) struct Stored {
    pub id: String,
    pub region: String,
    /// The regions the report lists: its prober's view of the fleet.
    pub fleet: Vec<String>,
    /// What a build needs of the report.
    pub digest: Digest,
    /// Where each path's text is in the stored file.
    pub ranges: Vec<Range<usize>>,
}

/// What a build needs of one report, whatever its number of paths and samples: the
/// paths that stand for a pair ([`stands_for_pair`]: one per target region and kind,
/// without samples), their RTT histograms, and the run's order of all of the file's
/// paths.
pub(super) struct Digest {
    /// The report with only the paths that stand for a pair, without samples.
    report: RegionReport,
    /// The RTT histogram of each of `report.paths` (same order), for `/metrics`.
    rtt: Vec<RttHistogram>,
    /// Every path of the file, as its index there, grouped by target region; a group
    /// is in the run's order ([`crate::run::path_order`]: kind, target, index), and
    /// the groups go in the run's order of their regions at the build.
    groups: Vec<(String, Vec<u32>)>,
    /// How many paths the file holds.
    paths: usize,
}

impl Digest {
    /// The digest of a report read or received whole (its samples are needed for the
    /// histograms of the paths that stand for a pair).
    pub(super) fn of(mut report: RegionReport) -> Digest {
        let all = std::mem::take(&mut report.paths);
        let paths = all.len();
        let mut order: Vec<u32> = (0..u32::try_from(paths).unwrap_or(u32::MAX)).collect();
        let key = |i: u32| {
            let p = &all[i as usize];
            (p.target.as_str(), p.kind, p.target_spec.as_str(), i)
        };
        order.sort_unstable_by(|&a, &b| key(a).cmp(&key(b)));
        let mut groups: Vec<(String, Vec<u32>)> = Vec::new();
        // Of the paths of a target and kind, in the run's order, the first with the
        // most replies (the rule the graph applies).
        let mut standing: Vec<u32> = Vec::new();
        for &i in &order {
            let p = &all[i as usize];
            match groups.last_mut() {
                Some((target, group)) if *target == p.target => group.push(i),
                _ => groups.push((p.target.clone(), vec![i])),
            }
            match standing.last_mut() {
                Some(s)
                    if all[*s as usize].target == p.target && all[*s as usize].kind == p.kind =>
                {
                    if stands_for_pair(p, &all[*s as usize]) {
                        *s = i;
                    }
                }
                _ => standing.push(i),
            }
        }
        drop(order);
        let mut at = vec![u32::MAX; paths];
        for (k, &i) in standing.iter().enumerate() {
            at[i as usize] = k as u32;
        }
        let mut kept: Vec<Option<PathEntry>> = Vec::with_capacity(standing.len());
        kept.resize_with(standing.len(), || None);
        for (i, p) in all.into_iter().enumerate() {
            if let Some(slot) = kept.get_mut(at[i] as usize) {
                *slot = Some(p);
            }
        }
        let mut rtt = Vec::with_capacity(kept.len());
        report.paths = kept
            .into_iter()
            .flatten()
            .map(|mut p| {
                rtt.push(RttHistogram::of(&p.samples_us));
                p.drop_samples();
                p.resolve_error = None;
                p
            })
            .collect();
        for (_, group) in &mut groups {
            group.shrink_to_fit();
        }
        Digest {
            report,
            rtt,
            groups,
            paths,
        }
    }

    /// The regions the report lists: its prober's view of the fleet.
    pub(super) fn fleet(&self) -> Vec<String> {
        self.report.regions.iter().map(|r| r.name.clone()).collect()
    }

    /// The memory it takes, roughly.
    fn size(&self) -> usize {
        let r = &self.report;
        r.paths
            .iter()
            .map(|p| 400 + p.source.len() + p.target.len() + 2 * p.target_spec.len())
            .sum::<usize>()
            + 64 * r.regions.len()
            + std::mem::size_of_val(self.rtt.as_slice())
            + self
                .groups
                .iter()
                .map(|(t, g)| 48 + t.len() + 4 * g.len())
                .sum::<usize>()
    }
}

/// The run's order of a report's paths (indices into its file) from its digest's
/// groups, given each region's place in the run.
fn order_of(groups: &[(String, Vec<u32>)], at: &impl Fn(&str) -> usize) -> Vec<usize> {
    let mut groups: Vec<(usize, &str, &[u32])> = groups
        .iter()
        .map(|(t, g)| (at(t), t.as_str(), g.as_slice()))
        .collect();
    groups.sort_unstable();
    groups
        .into_iter()
        .flat_map(|(_, _, g)| g.iter().map(|&i| i as usize))
        .collect()
}

/// A report handed over by a push: its digest, where its paths' text is in its file,
/// and its estimated size.
struct Cached {
    digest: Digest,
    ranges: Option<Vec<Range<usize>>>,
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
        unrecorded: Default::default(),
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
            a.record_pending();
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
    /// Runs built whose recording in the history failed, to try again.
    unrecorded: std::cell::RefCell<BTreeSet<String>>,
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
        let series = crate::history::Series::of_store(self.store().root());
        match self
            .state
            .with_history("recording the stored runs", |h| series.sync(h))
        {
            Some(Ok(s)) if s.added > 0 => {
                tracing::info!("history: recorded {} stored run(s) it lacked", s.added)
            }
            Some(Err(e)) => tracing::error!("history: {e}"),
            _ => {}
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
                    let digest = Digest::of(r);
                    let size = digest.size();
                    if self.cached_bytes + size <= CACHE_BYTES {
                        self.cached_bytes += size;
                        cached.insert(
                            region.clone(),
                            Cached {
                                digest,
                                ranges: None,
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
        let size = s.digest.size();
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
                digest: s.digest,
                ranges: Some(s.ranges),
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

    /// Records the run of `id` in the history; if that fails (a full disk), it is
    /// tried again later ([`Assembler::record_pending`]), so that the history does not
    /// miss the run or keep its figures from before a rebuild.
    fn record(&self, id: &str, run: &Run) {
        let done = self
            .state
            .with_history("recording a run", |h| h.add_named(run, Some(id)));
        let mut pending = self.unrecorded.borrow_mut();
        match done {
            None | Some(Ok(())) => {
                pending.remove(id);
            }
            Some(Err(e @ crate::history::HistoryError::Taken { .. })) => {
                tracing::error!("run {id}: not recorded in the history: {e}");
                pending.remove(id);
            }
            Some(Err(e)) => {
                if pending.insert(id.to_string()) {
                    tracing::error!(
                        "run {id}: not recorded in the history: {e}; trying again every minute"
                    );
                }
            }
        }
    }

    /// Tries again to record the runs whose recording failed (each read back from its
    /// file without samples).
    fn record_pending(&self) {
        let ids: Vec<String> = self.unrecorded.borrow().iter().cloned().collect();
        for id in ids {
            match Run::read_without_samples(&self.store().run_path(&id)) {
                Ok(run) => {
                    self.record(&id, &run);
                    if !self.unrecorded.borrow().contains(&id) {
                        tracing::info!("run {id}: recorded in the history now");
                    }
                }
                // Deleted by retention meanwhile, or unreadable: nothing to record.
                Err(e) => {
                    tracing::warn!("run {id}: not recorded in the history: {}", chain(&e));
                    self.unrecorded.borrow_mut().remove(&id);
                }
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
        let mut digests = Vec::new();
        let mut ranges: BTreeMap<String, Vec<Range<usize>>> = BTreeMap::new();
        for (region, _) in store.reported(id)? {
            match cached.remove(&region) {
                Some(c) => {
                    if let Some(r) = c.ranges {
                        ranges.insert(region.clone(), r);
                    }
                    digests.push(c.digest);
                }
                None => match store.report(id, &region) {
                    Ok(r) => digests.push(Digest::of(r)),
                    Err(e) => tracing::error!(
                        "run {id}: leaving out the report of {region}: {}",
                        chain(&e)
                    ),
                },
            }
        }
        if digests.is_empty() {
            return Err(AssembleError::Merge("no readable report".into()));
        }
        let total: usize = digests.iter().map(|d| d.paths).sum();
        let mut reports = Vec::with_capacity(digests.len());
        let mut rest = Vec::with_capacity(digests.len());
        for d in digests {
            reports.push(d.report);
            rest.push((d.rtt, d.groups));
        }
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
        let at = |name: &str| rank.get(name).copied().unwrap_or(usize::MAX);
        // Each report's share of the run's file, in the run's order: by region, then
        // each one's paths by target region, kind and target.
        let mut parts: Vec<(usize, Part)> = reports
            .iter()
            .zip(&rest)
            .map(|(report, (_, groups))| {
                let part = Part {
                    ranges: ranges.remove(&report.region),
                    region: report.region.clone(),
                    order: order_of(groups, &at),
                };
                (at(&report.region), part)
            })
            .collect();
        parts.sort_by(|a, b| (a.0, &a.1.region).cmp(&(b.0, &b.1.region)));
        let parts: Vec<Part> = parts.into_iter().map(|(_, p)| p).collect();
        drop(rank);
        // The paths that stand for a pair are put in the run's order with their
        // histograms.
        let reports = reports
            .into_iter()
            .zip(rest)
            .map(|(report, (histograms, _))| (report, histograms))
            .collect();
        let (mut run, rtt) = Run::from_owned_reports_carrying(reports)
            .map_err(|e| AssembleError::Merge(e.to_string()))?;
        run.id = id.to_string();
        // A sweep starts at its epoch: a report may say it started up to a clock step
        // before (`START_SLACK`), but the run, which the history files under its start,
        // never does, so no report can move its sweep onto an earlier run's place.
        if let Some(epoch) = super::parse_run_id(id) {
            run.started_at = run.started_at.max(epoch);
            run.finished_at = run.finished_at.max(run.started_at);
        }
        for r in regions.into_iter().skip(run.regions.len()) {
            run.regions.push(r);
        }
        let merged = Instant::now();
        // Each path is judged against its own past too (`shift`).
        let recent = self
            .state
            .with_history("reading the paths' past", |h| {
                anomaly::shift::past(h, &run, &self.state.settings.thresholds)
            })
            .and_then(|r| {
                r.map_err(|e| tracing::error!("run {id}: judged without history: {e}"))
                    .ok()
                    .flatten()
            });
        run.anomalies =
            anomaly::analyse_with_history(&run, &self.state.settings.thresholds, recent.as_ref());
        drop(recent);
        let analysed = Instant::now();
        let mut listing =
            RunListing::of(id, &run).ok_or_else(|| AssembleError::Merge("bad id".into()))?;
        // The run holds only the paths that stand for a pair; its file holds them all.
        listing.paths = total;
        store.put_run_with(
            id,
            &run,
            |out| copy_paths(store, id, &parts, total, out),
            &listing,
        )?;
        self.record(id, &run);
        let written = Instant::now();
        let rtt: Vec<Option<&RttHistogram>> = rtt.iter().map(Option::as_ref).collect();
        let latest = Latest::of(id, &run, &rtt);
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

/// The RTT histograms of the paths of `run` (same order), from its stored reports,
/// read one at a time: for the latest run after a restart, whose file is read without
/// samples. Only the paths that stand for a pair have one (`/metrics` shows those); so
/// has none a path whose report cannot be read, or changed.
pub(super) fn rtt_of_stored(store: &Store, run: &Run) -> Vec<Option<RttHistogram>> {
    let mut by_key = std::collections::HashMap::new();
    for (region, _) in store.reported(&run.id).unwrap_or_default() {
        let Ok(report) = store.report(&run.id, &region) else {
            continue;
        };
        let d = Digest::of(report);
        for (p, h) in d.report.paths.into_iter().zip(d.rtt) {
            by_key.insert((p.source, p.target, p.kind, p.target_spec), h);
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
