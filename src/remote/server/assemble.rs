//! Assembly: turns an epoch's stored reports into its run, when every region of the
//! fleet reported or when the deadline after the epoch's first report passed, and again
//! when a late report arrives. Runs on its own thread, fed with the run ids of newly
//! stored reports; after a restart it finds the epochs whose run is missing or behind
//! their reports and finishes them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime};

use crate::anomaly;
use crate::run::{Run, RunRegion};

use super::super::store::StoreError;
use super::super::wire::RunListing;
use super::State;

/// How often overdue epochs are looked for.
const TICK: Duration = Duration::from_millis(250);

/// How often the retention is applied when nothing is assembled.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The assembler's loop; returns when the server stops.
pub(super) fn assembler(state: Arc<State>, rx: Receiver<String>) {
    let mut pending: BTreeMap<String, Instant> = BTreeMap::new();
    // Retention runs at start and then every PRUNE_EVERY (and after each assembly).
    let mut last_prune = Instant::now() - PRUNE_EVERY;
    if let Err(e) = recover(&state, &mut pending) {
        tracing::error!("cannot look for unfinished runs: {e}");
    }
    while !state.stopping.load(Ordering::SeqCst) {
        match rx.recv_timeout(TICK) {
            Ok(id) => consider(&state, &mut pending, &id),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        let due: Vec<String> = pending
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            pending.remove(&id);
            tracing::info!("deadline of run {id} passed; assembling without the missing regions");
            assemble_logged(&state, &id);
        }
        if last_prune.elapsed() >= PRUNE_EVERY {
            state.prune();
            last_prune = Instant::now();
        }
    }
}

/// Epochs whose stored reports are not all in their run (the server stopped between
/// storing a report and assembling) are assembled or scheduled again.
fn recover(state: &State, pending: &mut BTreeMap<String, Instant>) -> Result<(), StoreError> {
    for id in state.store.report_ids()? {
        let stored: BTreeSet<String> = state
            .store
            .reported(&id)?
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let in_run: BTreeSet<String> = state
            .index_read()
            .get(&id)
            .map(|l| l.reported.iter().cloned().collect())
            .unwrap_or_default();
        if stored != in_run {
            tracing::info!("run {id} is behind its stored reports; finishing it");
            consider(state, pending, &id);
        }
    }
    Ok(())
}

fn consider(state: &State, pending: &mut BTreeMap<String, Instant>, id: &str) {
    let (reports, reported) = match (state.store.reports(id), state.store.reported(id)) {
        (Ok(reports), Ok(reported)) => (reports, reported),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!("run {id}: {e}");
            return;
        }
    };
    let expected: BTreeSet<String> = match &state.settings.known {
        Some(known) => known.iter().cloned().collect(),
        None => state.store.fleet(&reports),
    };
    let have: BTreeSet<String> = reported.iter().map(|(r, _)| r.clone()).collect();
    let assembled = state.index_read().contains_key(id);
    if expected.is_subset(&have) || assembled {
        pending.remove(id);
        assemble_logged(state, id);
        return;
    }
    // The deadline runs from the epoch's first report, as the files' times tell.
    let first = reported
        .iter()
        .map(|(_, t)| *t)
        .min()
        .unwrap_or_else(SystemTime::now);
    let age = SystemTime::now().duration_since(first).unwrap_or_default();
    let at = Instant::now() + state.settings.deadline.saturating_sub(age);
    pending.entry(id.to_string()).or_insert(at);
}

fn assemble_logged(state: &State, id: &str) {
    let started = Instant::now();
    match assemble(state, id) {
        Ok(listing) => tracing::info!(
            "run {id} assembled: {} of {} regions, {} paths, {} findings, in {:.0} ms",
            listing.reported.len(),
            listing.regions.len(),
            listing.paths,
            listing.anomalies,
            started.elapsed().as_secs_f64() * 1e3
        ),
        Err(e) => tracing::error!("cannot assemble run {id}: {e}"),
    }
    state.prune();
}

/// Builds, analyses and stores the run of `id`, replacing an earlier one.
fn assemble(state: &State, id: &str) -> Result<RunListing, AssembleError> {
    let reports = state.store.reports(id)?;
    let mut run = Run::from_reports(&reports).map_err(|e| AssembleError::Merge(e.to_string()))?;
    run.id = id.to_string();
    if let Some(known) = &state.settings.known {
        for name in known {
            if !run.regions.iter().any(|r| &r.name == name) {
                run.regions.push(RunRegion {
                    name: name.clone(),
                    location: None,
                    reported: false,
                });
            }
        }
    }
    run.anomalies = anomaly::analyse(&run, &state.settings.thresholds);
    state.store.put_run(id, &run)?;
    let listing = listing(id, &run).ok_or_else(|| AssembleError::Merge("bad id".into()))?;
    state.counters.assembled.fetch_add(1, Ordering::Relaxed);
    state.publish(id, run, listing.clone());
    Ok(listing)
}

#[derive(Debug, thiserror::Error)]
enum AssembleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Merge(String),
}

/// The list entry of a run.
pub(super) fn listing(id: &str, run: &Run) -> Option<RunListing> {
    let regions: Vec<String> = run.regions.iter().map(|r| r.name.clone()).collect();
    let reported: Vec<String> = run
        .regions
        .iter()
        .filter(|r| r.reported)
        .map(|r| r.name.clone())
        .collect();
    Some(RunListing {
        id: id.to_string(),
        epoch: super::super::wire::parse_run_id(id)?,
        complete: reported.len() == regions.len(),
        regions,
        reported,
        paths: run.paths.len(),
        anomalies: run.anomalies.len(),
    })
}
