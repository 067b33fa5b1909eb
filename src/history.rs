//! History: a compact record of every path in every run of a series, so that a path can
//! be drawn over time and judged against its own normal.
//!
//! The runs of a series (`sweep --every OUT`, serve's store) keep, beside them, one
//! embedded database file, `history.redb` ([redb]: a pure-Rust, single-file, ACID
//! key-value store; no server, crash-safe by copy-on-write pages and an atomic commit).
//! Each run adds one [`Point`] per path, keyed by (run time, path id): a run's points
//! are one sequential append, and a path's history is one point lookup per run. A
//! point holds what a chart and the `shift` detector need: probes sent and answered, the
//! p50/p95/p99, the quantile bands of the samples, and the run's finding ids on the
//! path. Everything in it is derived from the runs, so it can be rebuilt from them
//! ([`History::rebuild`]), and a series whose runs and history disagree (a kill -9
//! between the two writes, retention) is reconciled on open ([`History::sync`]).
//!
//! It reads runs; it knows nothing of graphs, detectors' rules or rendering.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::{DetectorId, ProbeKind};
use crate::report::PathEntry;
use crate::run::{Run, Severity, Subject};

/// The file name of a series' history, beside its runs.
pub const FILE_NAME: &str = "history.redb";

/// Path id → path key ("source\u{1f}target\u{1f}kind"). Ids count up from 0.
const PATH_KEYS: TableDefinition<u32, &str> = TableDefinition::new("path_keys");
/// (run start in ms since the Unix epoch, chunk) → the run's points of the paths with
/// ids `chunk * CHUNK ..`, [`SLOT_LEN`] bytes each (a slot whose first byte is 0 is a
/// path the run did not have). A run is a few dozen values, not one per path: adding
/// it is one sequential write, and reading one path over many runs reads one chunk per
/// run.
const POINTS: TableDefinition<(i64, u32), &[u8]> = TableDefinition::new("points");

/// Paths per chunk.
const CHUNK: u32 = 256;
/// Bytes of a slot: a presence byte and the point.
const SLOT_LEN: usize = 1 + POINT_LEN;
/// Run start (ms) → run id: the runs the history holds.
const RUNS: TableDefinition<i64, &str> = TableDefinition::new("runs");

/// A path of the fleet: (source, target, kind).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PathKey {
    pub source: String,
    pub target: String,
    pub kind: ProbeKind,
}

impl PathKey {
    pub fn of(p: &PathEntry) -> PathKey {
        PathKey {
            source: p.source.clone(),
            target: p.target.clone(),
            kind: p.kind,
        }
    }

    fn encode(&self) -> String {
        format!("{}\u{1f}{}\u{1f}{}", self.source, self.target, self.kind)
    }

    fn decode(s: &str) -> Option<PathKey> {
        let mut it = s.split('\u{1f}');
        let (source, target, kind) = (it.next()?, it.next()?, it.next()?);
        Some(PathKey {
            source: source.to_string(),
            target: target.to_string(),
            kind: kind.parse().ok()?,
        })
    }
}

impl std::fmt::Display for PathKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {} ({})", self.source, self.target, self.kind)
    }
}

/// The quantiles of a run's samples that a chart draws as bands: min, p10, p25, p50,
/// p75, p90, max.
pub const BANDS: [u32; 7] = [0, 10, 25, 50, 75, 90, 100];

/// One path in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When the run started.
    pub at: DateTime<Utc>,
    pub sent: u32,
    pub received: u32,
    /// RTT percentiles in microseconds; `None` when nothing came back.
    pub p50_us: Option<u32>,
    pub p95_us: Option<u32>,
    pub p99_us: Option<u32>,
    /// The samples at [`BANDS`], in microseconds.
    pub bands_us: Option<[u32; 7]>,
    /// The findings of the run about this path (also those folded under a region
    /// finding), with their severity.
    pub findings: Vec<(DetectorId, Severity)>,
    /// The path was discounted: its prober lagged.
    pub lagged: bool,
}

impl Point {
    /// `1 − received / sent`, `None` when nothing was sent.
    pub fn loss(&self) -> Option<f64> {
        (self.sent > 0).then(|| 1.0 - f64::from(self.received) / f64::from(self.sent))
    }

    /// Whether the run had a finding of `detector` on this path.
    pub fn has(&self, detector: DetectorId) -> bool {
        self.findings.iter().any(|(d, _)| *d == detector)
    }

    /// The point of path entry `p` in a run that started at `at`.
    pub fn of(p: &PathEntry, at: DateTime<Utc>, findings: Vec<(DetectorId, Severity)>) -> Point {
        Point::with_scratch(p, at, findings, &mut Vec::new())
    }

    fn with_scratch(
        p: &PathEntry,
        at: DateTime<Utc>,
        findings: Vec<(DetectorId, Severity)>,
        replies: &mut Vec<u64>,
    ) -> Point {
        replies.clear();
        replies.extend(p.samples_us.iter().flatten().copied());
        replies.sort_unstable();
        let replies = &replies[..];
        let bands_us = (!replies.is_empty()).then(|| BANDS.map(|q| band(replies, q)));
        let clamp = |v: u64| v.min(u64::from(u32::MAX - 1)) as u32;
        Point {
            at,
            sent: clamp(p.sent),
            received: clamp(p.received),
            p50_us: p.rtt_us.map(|r| clamp(r.p50)),
            p95_us: p.rtt_us.map(|r| clamp(r.p95)),
            p99_us: p.rtt_us.map(|r| clamp(r.p99)),
            bands_us,
            findings,
            lagged: p.prober_lagged(),
        }
    }

    /// Appends the stored bytes to `b` (little-endian; `u32::MAX` for "none").
    fn encode_into(&self, b: &mut Vec<u8>) {
        let none = u32::MAX;
        b.extend_from_slice(&self.sent.to_le_bytes());
        b.extend_from_slice(&self.received.to_le_bytes());
        for v in [self.p50_us, self.p95_us, self.p99_us] {
            b.extend_from_slice(&v.unwrap_or(none).to_le_bytes());
        }
        for v in self.bands_us.unwrap_or([none; 7]) {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let mut bits = 0u32;
        for (d, s) in &self.findings {
            let bit = DetectorId::ALL.iter().position(|x| x == d).unwrap_or(0) as u32;
            bits |= 1 << (bit + if *s == Severity::Critical { 16 } else { 0 });
        }
        b.extend_from_slice(&bits.to_le_bytes());
        b.push(u8::from(self.lagged));
    }

    fn decode(at: DateTime<Utc>, b: &[u8]) -> Option<Point> {
        if b.len() < POINT_LEN {
            return None;
        }
        let u = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let opt = |v: u32| (v != u32::MAX).then_some(v);
        let mut bands = [0u32; 7];
        for (k, band) in bands.iter_mut().enumerate() {
            *band = u(5 + k);
        }
        let bits = u(12);
        let mut findings = Vec::new();
        for (i, d) in DetectorId::ALL.iter().enumerate() {
            if bits & (1 << (i + 16)) != 0 {
                findings.push((*d, Severity::Critical));
            } else if bits & (1 << i) != 0 {
                findings.push((*d, Severity::Warning));
            }
        }
        Some(Point {
            at,
            sent: u(0),
            received: u(1),
            p50_us: opt(u(2)),
            p95_us: opt(u(3)),
            p99_us: opt(u(4)),
            bands_us: (bands[0] != u32::MAX).then_some(bands),
            findings,
            lagged: b[52] != 0,
        })
    }
}

/// The `q`-th percentile (0..=100, whole) of sorted `v`, interpolated between ranks as
/// `stats::percentile_sorted` does, in integers (it runs for every path of every run).
fn band(v: &[u64], q: u32) -> u32 {
    let n = v.len() as u64;
    let num = u64::from(q) * (n - 1);
    let (lo, frac) = ((num / 100) as usize, num % 100);
    let hi = (lo + usize::from(frac > 0)).min(v.len() - 1);
    let value = v[lo] + ((v[hi] - v[lo]) * frac + 50) / 100;
    value.min(u64::from(u32::MAX - 1)) as u32
}

/// Bytes of an encoded point.
const POINT_LEN: usize = 53;

/// The point bytes of the slot at `at` of a chunk, if the run had that path.
fn slot(chunk: &[u8], at: usize) -> Option<&[u8]> {
    chunk
        .get(at..at + SLOT_LEN)
        .filter(|s| s[0] != 0)
        .map(|s| &s[1..])
}

/// Why the history could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error(
        "cannot open the history {path}: {reason}; it is rebuilt from the runs with `latmap history DIR --rebuild`"
    )]
    Open { path: PathBuf, reason: String },
    #[error("the history {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// The history of one series of runs.
pub struct History {
    db: Database,
    path: PathBuf,
    /// Every path's id by its encoded key, read once when the file is opened.
    ids: std::sync::Mutex<HashMap<String, u32>>,
}

/// The per-path points of a run: one per (source, target, kind), the target with the
/// most replies standing for the path (as the graph and the heatmap choose).
pub fn run_points(run: &Run) -> Vec<(&PathEntry, Point)> {
    type Pair<'a> = (&'a str, &'a str, ProbeKind);
    let mut found: HashMap<Pair<'_>, Vec<(DetectorId, Severity)>> = HashMap::new();
    let all = run
        .anomalies
        .iter()
        .flat_map(|a| std::iter::once(a).chain(&a.explains));
    for a in all {
        if let Subject::Path { source, target } = &a.subject {
            found
                .entry((source.as_str(), target.as_str(), a.kind))
                .or_default()
                .push((a.detector, a.severity));
        }
    }
    // A run's paths are in order (source, target, kind, target): a path's targets are
    // neighbours, and the one with the most replies stands for them. (Should a file be
    // out of order, `History::add` still keeps the one with the most replies.)
    fn key(p: &PathEntry) -> (&str, &str, ProbeKind) {
        (p.source.as_str(), p.target.as_str(), p.kind)
    }
    let mut best: Vec<&PathEntry> = Vec::with_capacity(run.paths.len());
    for p in &run.paths {
        match best.last_mut() {
            Some(last) if key(last) == key(p) => {
                if p.received > last.received {
                    *last = p;
                }
            }
            _ => best.push(p),
        }
    }
    let mut scratch = Vec::new();
    best.into_iter()
        .map(|p| {
            let f = if found.is_empty() {
                Vec::new()
            } else {
                found.remove(&key(p)).unwrap_or_default()
            };
            (p, Point::with_scratch(p, run.started_at, f, &mut scratch))
        })
        .collect()
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

impl History {
    /// Opens (or creates) the history file at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let db = Database::create(path).map_err(|e| HistoryError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let h = History {
            db,
            path: path.to_path_buf(),
            ids: std::sync::Mutex::new(HashMap::new()),
        };
        // Create the tables, so that readers never meet a missing one.
        h.write(|tx| {
            tx.open_table(PATH_KEYS)?;
            tx.open_table(POINTS)?;
            tx.open_table(RUNS)?;
            Ok(())
        })?;
        let ids = h
            .keys()?
            .into_iter()
            .enumerate()
            .filter_map(|(id, k)| Some((k?.encode(), id as u32)))
            .collect();
        *h.lock_ids() = ids;
        Ok(h)
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Path keys by id (`None` for an id whose key cannot be read).
    fn keys(&self) -> Result<Vec<Option<PathKey>>, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let keys = tx.open_table(PATH_KEYS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for row in keys.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            let id = k.value() as usize;
            if out.len() <= id {
                out.resize(id + 1, None);
            }
            out[id] = PathKey::decode(v.value());
        }
        Ok(out)
    }

    /// The history of the series in folder `dir`.
    pub fn of_series(dir: &Path) -> Result<History, HistoryError> {
        History::open(&dir.join(FILE_NAME))
    }

    fn io(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), HistoryError> {
        let tx = self.db.begin_write().map_err(|e| self.io(e))?;
        f(&tx).map_err(|e| self.io(e))?;
        tx.commit().map_err(|e| self.io(e))
    }

    /// Adds `run`'s points (replacing any of a run that started at the same time).
    pub fn add(&self, run: &Run) -> Result<(), HistoryError> {
        let points = run_points(run);
        let t = ms(run.started_at);
        let mut ids = self.lock_ids();
        let mut new_keys = Vec::new();
        let mut chunks: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        let mut name = String::new();
        let mut encoded = Vec::with_capacity(POINT_LEN);
        for (entry, point) in &points {
            use std::fmt::Write as _;
            name.clear();
            let _ = write!(
                name,
                "{}\u{1f}{}\u{1f}{}",
                entry.source, entry.target, entry.kind
            );
            let id = match ids.get(name.as_str()) {
                Some(&id) => id,
                None => {
                    let id = ids.len() as u32;
                    ids.insert(name.clone(), id);
                    new_keys.push((id, name.clone()));
                    id
                }
            };
            let chunk = chunks.entry(id / CHUNK).or_default();
            let at = (id % CHUNK) as usize * SLOT_LEN;
            if chunk.len() < at + SLOT_LEN {
                chunk.resize(at + SLOT_LEN, 0);
            }
            encoded.clear();
            point.encode_into(&mut encoded);
            // A path met twice in one run (a file out of order): the target with the
            // most replies stands for it.
            let received_before =
                u32::from_le_bytes([chunk[at + 5], chunk[at + 6], chunk[at + 7], chunk[at + 8]]);
            if chunk[at] == 1 && received_before >= point.received {
                continue;
            }
            chunk[at] = 1;
            chunk[at + 1..at + SLOT_LEN].copy_from_slice(&encoded);
        }
        let written = self.write(|tx| {
            let mut keys = tx.open_table(PATH_KEYS)?;
            for (id, name) in &new_keys {
                keys.insert(*id, name.as_str())?;
            }
            let mut table = tx.open_table(POINTS)?;
            table.retain_in((t, 0)..=(t, u32::MAX), |_, _| false)?;
            for (chunk, bytes) in &chunks {
                table.insert((t, *chunk), bytes.as_slice())?;
            }
            tx.open_table(RUNS)?.insert(t, run.id.as_str())?;
            Ok(())
        });
        if written.is_err() {
            // The ids given out were not stored: forget them.
            for (_, name) in &new_keys {
                ids.remove(name);
            }
        }
        written
    }

    /// The runs held, as (start, run id), oldest first.
    pub fn runs(&self) -> Result<Vec<(DateTime<Utc>, String)>, HistoryError> {
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let runs = tx.open_table(RUNS).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for row in runs.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            out.push((at(k.value()), v.value().to_string()));
        }
        Ok(out)
    }

    /// Forgets the runs that started at the times in `starts`.
    pub fn remove(&self, starts: &[DateTime<Utc>]) -> Result<(), HistoryError> {
        self.write(|tx| {
            let mut table = tx.open_table(POINTS)?;
            let mut runs = tx.open_table(RUNS)?;
            for &s in starts {
                let t = ms(s);
                table.retain_in((t, 0)..=(t, u32::MAX), |_, _| false)?;
                runs.remove(t)?;
            }
            Ok(())
        })
    }

    /// Every path the history has seen.
    pub fn paths(&self) -> Vec<PathKey> {
        let mut out: Vec<PathKey> = self
            .lock_ids()
            .keys()
            .filter_map(|k| PathKey::decode(k))
            .collect();
        out.sort();
        out
    }

    /// The points of `path` in the runs since `since` (all with `None`), oldest first.
    pub fn path(
        &self,
        path: &PathKey,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Point>, HistoryError> {
        let Some(id) = self.lock_ids().get(&path.encode()).copied() else {
            return Ok(Vec::new());
        };
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let points = tx.open_table(POINTS).map_err(|e| self.io(e))?;
        let runs = tx.open_table(RUNS).map_err(|e| self.io(e))?;
        let from = since.map_or(i64::MIN, ms);
        let at_slot = (id % CHUNK) as usize * SLOT_LEN;
        let mut out = Vec::new();
        for row in runs.range(from..).map_err(|e| self.io(e))? {
            let (t, _) = row.map_err(|e| self.io(e))?;
            let t = t.value();
            if let Some(v) = points.get((t, id / CHUNK)).map_err(|e| self.io(e))? {
                out.extend(slot(v.value(), at_slot).and_then(|b| Point::decode(at(t), b)));
            }
        }
        Ok(out)
    }

    /// For every path, its points in the last `n` runs that started before `before`,
    /// oldest first: what the `shift` detector judges a run against.
    pub fn recent(
        &self,
        before: DateTime<Utc>,
        n: usize,
    ) -> Result<HashMap<PathKey, Vec<Point>>, HistoryError> {
        let names: HashMap<u32, PathKey> = self
            .lock_ids()
            .iter()
            .filter_map(|(k, &id)| Some((id, PathKey::decode(k)?)))
            .collect();
        let tx = self.db.begin_read().map_err(|e| self.io(e))?;
        let points = tx.open_table(POINTS).map_err(|e| self.io(e))?;
        let runs = tx.open_table(RUNS).map_err(|e| self.io(e))?;
        let mut starts = Vec::with_capacity(n);
        for row in runs
            .range(..ms(before))
            .map_err(|e| self.io(e))?
            .rev()
            .take(n)
        {
            starts.push(row.map_err(|e| self.io(e))?.0.value());
        }
        starts.reverse();
        let mut out: HashMap<PathKey, Vec<Point>> = HashMap::new();
        for t in starts {
            for row in points
                .range((t, 0)..=(t, u32::MAX))
                .map_err(|e| self.io(e))?
            {
                let (k, v) = row.map_err(|e| self.io(e))?;
                let (_, chunk) = k.value();
                let bytes = v.value();
                for (i, s) in bytes.chunks_exact(SLOT_LEN).enumerate() {
                    let id = chunk * CHUNK + i as u32;
                    if s[0] == 0 {
                        continue;
                    }
                    if let (Some(key), Some(p)) = (names.get(&id), Point::decode(at(t), &s[1..])) {
                        match out.get_mut(key) {
                            Some(v) => v.push(p),
                            None => {
                                out.insert(key.clone(), vec![p]);
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Makes the history hold exactly the runs given: adds those it lacks (a crash
    /// between writing a run and recording it) and forgets those no longer there
    /// (retention). `runs` yields each run's start and a way to read it.
    pub fn sync<F>(&self, on_disk: &[(DateTime<Utc>, F)]) -> Result<usize, HistoryError>
    where
        F: Fn() -> Option<Run>,
    {
        let held: Vec<DateTime<Utc>> = self.runs()?.into_iter().map(|(t, _)| t).collect();
        let wanted: std::collections::BTreeSet<i64> = on_disk.iter().map(|(t, _)| ms(*t)).collect();
        let stale: Vec<DateTime<Utc>> = held
            .iter()
            .copied()
            .filter(|t| !wanted.contains(&ms(*t)))
            .collect();
        if !stale.is_empty() {
            self.remove(&stale)?;
        }
        let held: std::collections::BTreeSet<i64> = held.iter().map(|t| ms(*t)).collect();
        let mut added = 0;
        for (t, read) in on_disk {
            if held.contains(&ms(*t)) {
                continue;
            }
            if let Some(run) = read() {
                self.add(&run)?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// A new history of the runs given, replacing the file at `path`.
    pub fn rebuild(
        path: &Path,
        runs: impl IntoIterator<Item = Run>,
    ) -> Result<History, HistoryError> {
        let tmp = path.with_extension("redb.rebuild");
        let _ = std::fs::remove_file(&tmp);
        {
            let h = History::open(&tmp)?;
            for run in runs {
                h.add(&run)?;
            }
        }
        std::fs::rename(&tmp, path).map_err(|e| HistoryError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        History::open(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{Anomaly, RunRegion};

    fn run_at(minute: i64, rtt_ms: u64) -> Run {
        let regions = ["a", "b"]
            .map(|n| RunRegion {
                name: n.into(),
                location: None,
                reported: true,
            })
            .to_vec();
        let samples = |v: u64| {
            (0..10)
                .map(|k| if k == 3 { None } else { Some(v * 1000 + k) })
                .collect()
        };
        let paths = vec![
            PathEntry::from_samples("a", "b", ProbeKind::Udp, "x", samples(rtt_ms)),
            PathEntry::from_samples("b", "a", ProbeKind::Udp, "y", samples(rtt_ms + 1)),
        ];
        Run::new(regions, paths, at(minute * 60_000))
    }

    #[test]
    fn bands_interpolate_like_the_statistics() {
        let v: Vec<u64> = vec![10, 20, 30, 41, 100];
        for q in BANDS {
            let f = crate::stats::percentile_sorted(&v, f64::from(q)).round() as u32;
            assert_eq!(band(&v, q), f, "p{q}");
        }
        assert_eq!(band(&[7], 50), 7);
    }

    #[test]
    fn points_round_trip_and_a_path_reads_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join(FILE_NAME)).unwrap();
        for m in [3, 1, 2] {
            let mut run = run_at(m, 10 + m as u64);
            if m == 2 {
                run.anomalies.push(Anomaly {
                    detector: DetectorId::Loss,
                    severity: Severity::Critical,
                    kind: ProbeKind::Udp,
                    subject: Subject::path("a", "b"),
                    value: 0.1,
                    threshold: 0.01,
                    unit: crate::run::Unit::Ratio,
                    message: String::new(),
                    relay: None,
                    explains: Vec::new(),
                });
            }
            h.add(&run).unwrap();
        }
        let key = PathKey {
            source: "a".into(),
            target: "b".into(),
            kind: ProbeKind::Udp,
        };
        let pts = h.path(&key, None).unwrap();
        assert_eq!(pts.len(), 3);
        assert_eq!(
            pts.iter()
                .map(|p| p.at.timestamp() / 60)
                .collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let p = &pts[1];
        assert_eq!((p.sent, p.received), (10, 9));
        assert_eq!(p.p50_us, Some(12_005));
        assert_eq!(p.bands_us.map(|b| (b[0], b[6])), Some((12_000, 12_009)));
        assert_eq!(p.findings, [(DetectorId::Loss, Severity::Critical)]);
        assert!(pts[0].findings.is_empty());
        let since = h.path(&key, Some(at(2 * 60_000))).unwrap();
        assert_eq!(since.len(), 2);
        // The last two runs before minute 3, for every path.
        let recent = h.recent(at(3 * 60_000), 5).unwrap();
        assert_eq!(recent[&key].len(), 2);
        assert_eq!(h.paths().len(), 2);
        // Reopened, the ids are the same.
        drop(h);
        let h = History::open(&dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(h.path(&key, None).unwrap().len(), 3);
        // Retention, then reconciliation with the runs on disk.
        h.remove(&[at(60_000)]).unwrap();
        assert_eq!(h.path(&key, None).unwrap().len(), 2);
        let disk: Vec<(DateTime<Utc>, Box<dyn Fn() -> Option<Run>>)> = vec![
            (at(2 * 60_000), Box::new(|| Some(run_at(2, 12)))),
            (at(4 * 60_000), Box::new(|| Some(run_at(4, 14)))),
        ];
        assert_eq!(h.sync(&disk).unwrap(), 1);
        let starts: Vec<i64> = h
            .runs()
            .unwrap()
            .iter()
            .map(|(t, _)| t.timestamp() / 60)
            .collect();
        assert_eq!(starts, [2, 4]);
    }
}
