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
//! ([`Series::rebuild`]), and a series whose runs and history disagree (a kill -9
//! between the two writes, retention) is reconciled on open ([`Series::open`]).
//!
//! It reads runs; it knows nothing of graphs, detectors' rules or rendering.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::config::{DetectorId, ProbeKind};
use crate::report::PathEntry;
use crate::run::{Run, Severity, Subject};

pub mod doc;
mod series;
pub use series::{Series, Synced};

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
/// A series' name for a run (its folder, `20261201T120000Z`) → run start (ms).
const NAMES: TableDefinition<&str, i64> = TableDefinition::new("names");

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

/// The quantiles of a run's samples a point keeps (a chart draws the spread between
/// them as bands): min, p50, p90, p95, p99, max. They are the run's own statistics
/// (`rtt_us`), so recording a run computes nothing new.
pub const QUANTILES: [&str; 6] = ["min", "p50", "p90", "p95", "p99", "max"];

/// One path in one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// When the run started.
    pub at: DateTime<Utc>,
    pub sent: u32,
    pub received: u32,
    /// The RTT at [`QUANTILES`], in microseconds; `None` when nothing came back.
    pub rtt_us: Option<[u32; 6]>,
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

    pub fn p50_us(&self) -> Option<u32> {
        self.rtt_us.map(|q| q[1])
    }

    pub fn p95_us(&self) -> Option<u32> {
        self.rtt_us.map(|q| q[3])
    }

    pub fn p99_us(&self) -> Option<u32> {
        self.rtt_us.map(|q| q[4])
    }

    /// Whether the run had a finding of `detector` on this path.
    pub fn has(&self, detector: DetectorId) -> bool {
        self.findings.iter().any(|(d, _)| *d == detector)
    }

    /// The point of path entry `p` in a run that started at `at`.
    pub fn of(p: &PathEntry, at: DateTime<Utc>, findings: Vec<(DetectorId, Severity)>) -> Point {
        let c = |v: u64| v.min(u64::from(u32::MAX - 1)) as u32;
        Point {
            at,
            sent: c(p.sent),
            received: c(p.received),
            rtt_us: p
                .rtt_us
                .map(|r| [c(r.min), c(r.p50), c(r.p90), c(r.p95), c(r.p99), c(r.max)]),
            findings,
            lagged: p.prober_lagged(),
        }
    }

    fn decode(at: DateTime<Utc>, b: &[u8]) -> Option<Point> {
        if b.len() < POINT_LEN {
            return None;
        }
        let u = |i: usize| u32::from_le_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
        let mut q = [0u32; 6];
        for (k, v) in q.iter_mut().enumerate() {
            *v = u(2 + k);
        }
        let bits = u(8);
        let mut findings = Vec::new();
        for d in DetectorId::ALL {
            let i = bit(d);
            if bits & (1 << (i + 16)) != 0 {
                findings.push((d, Severity::Critical));
            } else if bits & (1 << i) != 0 {
                findings.push((d, Severity::Warning));
            }
        }
        findings.sort();
        Some(Point {
            at,
            sent: u(0),
            received: u(1),
            rtt_us: (q[0] != u32::MAX).then_some(q),
            findings,
            lagged: b[36] != 0,
        })
    }
}

/// The bit of a detector in a point's findings (its critical bit is 16 higher): part of
/// the file format, so fixed here rather than taken from an enum's order.
fn bit(d: DetectorId) -> u32 {
    match d {
        DetectorId::Loss => 0,
        DetectorId::Slo => 1,
        DetectorId::Detour => 2,
        DetectorId::Inflation => 3,
        DetectorId::Asymmetry => 4,
        DetectorId::Jitter => 5,
        DetectorId::Unreachable => 6,
        DetectorId::Region => 7,
        DetectorId::Prober => 8,
        DetectorId::Shift => 9,
    }
}

/// What judging a path against its own past reads of one earlier run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Past {
    /// The run's median RTT on the path, µs; `None` when nothing came back.
    pub p50_us: Option<u32>,
    /// The run had a `shift` finding on the path.
    pub shifted: bool,
    /// The path's prober lagged in that run: it was not judged.
    pub lagged: bool,
}

impl Past {
    pub fn of(p: &Point) -> Past {
        Past {
            p50_us: p.p50_us(),
            shifted: p.has(DetectorId::Shift),
            lagged: p.lagged,
        }
    }
}

/// Bytes of an encoded point.
const POINT_LEN: usize = 37;

/// Writes the point of `p` with `findings` into `out` ([`POINT_LEN`] bytes;
/// little-endian, `u32::MAX` for "none"): what [`Point::decode`] reads.
fn encode_entry(p: &PathEntry, findings: &[(DetectorId, Severity)], out: &mut [u8]) {
    let c = |v: u64| v.min(u64::from(u32::MAX - 1)) as u32;
    let mut put = |i: usize, v: u32| out[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
    put(0, c(p.sent));
    put(1, c(p.received));
    let q = p
        .rtt_us
        .map(|r| [c(r.min), c(r.p50), c(r.p90), c(r.p95), c(r.p99), c(r.max)])
        .unwrap_or([u32::MAX; 6]);
    for (k, v) in q.into_iter().enumerate() {
        put(2 + k, v);
    }
    let mut bits = 0u32;
    for (d, s) in findings {
        bits |= 1 << (bit(*d) + if *s == Severity::Critical { 16 } else { 0 });
    }
    put(8, bits);
    out[36] = u8::from(p.prober_lagged());
}

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
    /// Another run already holds the start time (a forged or corrupt start time):
    /// recording this one would replace its points.
    #[error(
        "the history {path} already holds run {held} starting at {at}; run {run} claims the same start and is not recorded"
    )]
    Taken {
        path: PathBuf,
        held: String,
        run: String,
        at: DateTime<Utc>,
    },
}

/// The history of one series of runs.
pub struct History {
    /// The open file; `None` after an I/O error (redb refuses every transaction after
    /// one until the file is opened again), opened again by the next use.
    db: std::sync::Mutex<Option<std::sync::Arc<Database>>>,
    path: PathBuf,
    /// Every path's id, read once when the file is opened.
    ids: std::sync::Mutex<Ids>,
}

/// Path ids in memory: region names by number, and paths by their regions' numbers, so
/// that recording a run looks a path up without building its name.
#[derive(Default)]
struct Ids {
    regions: HashMap<String, u32>,
    names: Vec<String>,
    paths: HashMap<(u32, u32, ProbeKind), u32, std::hash::BuildHasherDefault<SmallKeys>>,
    /// By id: the path.
    keys: Vec<Option<(u32, u32, ProbeKind)>>,
    /// The ids of the last run recorded, in its order.
    layout: Vec<u32>,
    /// The chunk buffers of the last run recorded, kept for the next.
    chunks: Vec<Vec<u8>>,
}

/// A hasher for the small integer keys the history gives out itself (never keys from
/// outside): a multiply-rotate mix, several times cheaper than SipHash.
#[derive(Default)]
struct SmallKeys(u64);

impl std::hash::Hasher for SmallKeys {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(26) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

impl Ids {
    fn region(&mut self, name: &str) -> u32 {
        if let Some(&r) = self.regions.get(name) {
            return r;
        }
        let r = self.names.len() as u32;
        self.names.push(name.to_string());
        self.regions.insert(name.to_string(), r);
        r
    }

    /// The id of `key`, given out if new (`fresh` then gets it and its name).
    fn id(&mut self, s: u32, t: u32, kind: ProbeKind, fresh: &mut Vec<(u32, String)>) -> u32 {
        if let Some(&id) = self.paths.get(&(s, t, kind)) {
            return id;
        }
        let id = self.keys.len() as u32;
        self.insert(id, (s, t, kind));
        let key = self.key(id).map(|k| k.encode()).unwrap_or_default();
        fresh.push((id, key));
        id
    }

    fn insert(&mut self, id: u32, p: (u32, u32, ProbeKind)) {
        let i = id as usize;
        if self.keys.len() <= i {
            self.keys.resize(i + 1, None);
        }
        self.keys[i] = Some(p);
        self.paths.insert(p, id);
    }

    fn key(&self, id: u32) -> Option<PathKey> {
        let (s, t, kind) = (*self.keys.get(id as usize)?)?;
        Some(PathKey {
            source: self.names.get(s as usize)?.clone(),
            target: self.names.get(t as usize)?.clone(),
            kind,
        })
    }

    fn lookup(&self, key: &PathKey) -> Option<u32> {
        let s = *self.regions.get(&key.source)?;
        let t = *self.regions.get(&key.target)?;
        self.paths.get(&(s, t, key.kind)).copied()
    }

    fn forget(&mut self, id: u32) {
        if let Some(Some(p)) = self.keys.get(id as usize).copied() {
            self.paths.remove(&p);
            self.keys[id as usize] = None;
        }
    }
}

type Pair<'a> = (&'a str, &'a str, ProbeKind);

/// The run's findings by path (also those folded under a region finding).
fn path_findings(run: &Run) -> HashMap<Pair<'_>, Vec<(DetectorId, Severity)>> {
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
    found
}

/// Whether two region names are equal: compared inline, byte by byte, since they are
/// short and compared once or twice per path of every run recorded (a call to the C
/// library's memcmp for each cost a quarter of recording a run).
#[inline]
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| x == y)
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn at(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// Creates `path` empty, readable by its owner and group only (0640, as every data
/// file), if it does not exist: redb would create it as the umask allows.
fn private_file(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path);
}

/// Where a damaged history file at `path` is moved: beside it, named by the time to
/// the millisecond and, if that is taken, a count.
pub fn damaged_name(path: &Path) -> PathBuf {
    let stamp = Utc::now().format("%Y%m%dT%H%M%S%.3fZ");
    let mut n = 0;
    loop {
        let mut name = path.as_os_str().to_os_string();
        name.push(format!(".damaged-{stamp}"));
        if n > 0 {
            name.push(format!("-{n}"));
        }
        let candidate = PathBuf::from(name);
        if !candidate.exists() {
            return candidate;
        }
        n += 1;
    }
}

impl History {
    /// Opens (or creates) the history file at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        private_file(path);
        let db = Database::create(path).map_err(|e| HistoryError::Open {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let h = History {
            db: std::sync::Mutex::new(Some(std::sync::Arc::new(db))),
            path: path.to_path_buf(),
            ids: std::sync::Mutex::new(Ids::default()),
        };
        h.load()?;
        Ok(h)
    }

    /// Creates the tables (so that readers never meet a missing one) and reads the
    /// path ids.
    fn load(&self) -> Result<(), HistoryError> {
        self.write(|tx| {
            tx.open_table(PATH_KEYS)?;
            tx.open_table(POINTS)?;
            tx.open_table(RUNS)?;
            tx.open_table(NAMES)?;
            Ok(())
        })?;
        let mut ids = Ids::default();
        for (id, key) in self.keys()?.into_iter().enumerate() {
            if let Some(k) = key {
                let (s, t) = (ids.region(&k.source), ids.region(&k.target));
                ids.insert(id as u32, (s, t, k.kind));
            }
        }
        *self.lock_ids() = ids;
        Ok(())
    }

    /// The open file, opened again if an I/O error closed it.
    fn db(&self) -> Result<std::sync::Arc<Database>, HistoryError> {
        let mut held = self.db.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(db) = held.as_ref() {
            return Ok(db.clone());
        }
        // Not `io`: it takes this lock.
        let db = std::sync::Arc::new(Database::create(&self.path).map_err(|e| self.err(e))?);
        tracing::info!(
            "history {}: opened again after an I/O error",
            self.path.display()
        );
        *held = Some(db.clone());
        Ok(db)
    }

    /// Moves the file aside (to `FILE.damaged-TIME`) and starts an empty one in its
    /// place, for a file so damaged that reading it fails or panics; returns where
    /// the old one went. The history is then rebuilt from the runs
    /// ([`History::sync_series`]).
    pub fn set_aside(&self) -> Result<PathBuf, HistoryError> {
        let mut held = self.db.lock().unwrap_or_else(|p| p.into_inner());
        // Closed first: the file is locked while open.
        held.take();
        let aside = damaged_name(&self.path);
        std::fs::rename(&self.path, &aside).map_err(|e| self.err(e))?;
        private_file(&self.path);
        let db = Database::create(&self.path).map_err(|e| self.err(e))?;
        *held = Some(std::sync::Arc::new(db));
        drop(held);
        *self.lock_ids() = Ids::default();
        self.load()?;
        Ok(aside)
    }

    fn lock_ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Path keys by id (`None` for an id whose key cannot be read).
    fn keys(&self) -> Result<Vec<Option<PathKey>>, HistoryError> {
        let tx = self.db()?.begin_read().map_err(|e| self.io(e))?;
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

    /// The error of a use of the file. After an I/O error (a full disk) redb refuses
    /// every later transaction: the file is then opened again at the next use. Takes
    /// the lock of `db`: never called with it held (that is [`History::err`]).
    fn io(&self, e: impl std::fmt::Display) -> HistoryError {
        let e = self.err(e);
        if let HistoryError::Io { reason, .. } = &e
            && reason.contains("I/O error")
        {
            self.db.lock().unwrap_or_else(|p| p.into_inner()).take();
        }
        e
    }

    fn err(&self, e: impl std::fmt::Display) -> HistoryError {
        HistoryError::Io {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), HistoryError> {
        let tx = self.db()?.begin_write().map_err(|e| self.io(e))?;
        f(&tx).map_err(|e| self.io(e))?;
        tx.commit().map_err(|e| self.io(e))
    }

    /// Adds `run`'s points (replacing any of a run that started at the same time).
    pub fn add(&self, run: &Run) -> Result<(), HistoryError> {
        self.add_named(run, None)
    }

    /// Adds `run`'s points, as the run the series calls `name` (its folder).
    pub fn add_named(&self, run: &Run, name: Option<&str>) -> Result<(), HistoryError> {
        let t = ms(run.started_at);
        // Only the same run may replace the points held at its start time.
        let held = {
            let tx = self.db()?.begin_read().map_err(|e| self.io(e))?;
            match tx.open_table(RUNS) {
                Ok(runs) => runs
                    .get(t)
                    .map_err(|e| self.io(e))?
                    .map(|v| v.value().to_string()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(self.io(e)),
            }
        };
        if let Some(held) = held.filter(|h| *h != run.id) {
            return Err(HistoryError::Taken {
                path: self.path.clone(),
                held,
                run: run.id.clone(),
                at: run.started_at,
            });
        }
        let findings = path_findings(run);
        let mut ids = self.lock_ids();
        let mut new_keys = Vec::new();
        let mut chunks = std::mem::take(&mut ids.chunks);
        chunks.iter_mut().for_each(Vec::clear);
        let mut source: Option<(&str, u32)> = None;
        // A series' runs usually hold the same paths in the same order: the ids of the
        // last run recorded are tried first, by comparing names, before any lookup.
        let layout = std::mem::take(&mut ids.layout);
        let mut next_layout = Vec::with_capacity(layout.len());
        // The check of the cached source name holds for the whole group of its paths.
        let mut source_checked = false;
        for (i, entry) in run.paths.iter().enumerate() {
            let prev = i.checked_sub(1).map(|k| &run.paths[k]);
            let same_source = prev.is_some_and(|p| same(&p.source, &entry.source));
            if !same_source {
                source_checked = false;
            }
            // Several targets of one path: the neighbour with the most replies stands
            // for it (as the graph and the heatmap choose).
            let same_as_last = same_source
                && prev.is_some_and(|p| p.kind == entry.kind && same(&p.target, &entry.target));
            let cached = layout.get(next_layout.len()).copied().filter(|&id| {
                ids.keys
                    .get(id as usize)
                    .copied()
                    .flatten()
                    .is_some_and(|(s, t, k)| {
                        let ok = k == entry.kind
                            && ids
                                .names
                                .get(t as usize)
                                .is_some_and(|n| same(n, &entry.target))
                            && (source_checked
                                || ids
                                    .names
                                    .get(s as usize)
                                    .is_some_and(|n| same(n, &entry.source)));
                        source_checked |= ok;
                        ok
                    })
            });
            if cached.is_none() {
                source_checked = false;
            }
            let id = match cached {
                Some(id) => id,
                None => {
                    // Paths come grouped by source: look its number up once per group.
                    let s = match source {
                        Some((name, s)) if same_source && name == entry.source => s,
                        _ => {
                            let s = ids.region(&entry.source);
                            source = Some((&entry.source, s));
                            s
                        }
                    };
                    let target = ids.region(&entry.target);
                    ids.id(s, target, entry.kind, &mut new_keys)
                }
            };
            if !same_as_last {
                next_layout.push(id);
            }
            let c = (id / CHUNK) as usize;
            if chunks.len() <= c {
                chunks.resize_with(c + 1, Vec::new);
            }
            let chunk = &mut chunks[c];
            let at = (id % CHUNK) as usize * SLOT_LEN;
            if chunk.len() < at + SLOT_LEN {
                chunk.resize(at + SLOT_LEN, 0);
            }
            let received_before =
                u32::from_le_bytes([chunk[at + 5], chunk[at + 6], chunk[at + 7], chunk[at + 8]]);
            if chunk[at] == 1 && u64::from(received_before) >= entry.received {
                continue;
            }
            let f = if findings.is_empty() {
                Vec::new()
            } else {
                findings
                    .get(&(entry.source.as_str(), entry.target.as_str(), entry.kind))
                    .cloned()
                    .unwrap_or_default()
            };
            chunk[at] = 1;
            encode_entry(entry, &f, &mut chunk[at + 1..at + SLOT_LEN]);
        }
        ids.layout = next_layout;
        let written = self.write(|tx| {
            let mut keys = tx.open_table(PATH_KEYS)?;
            for (id, name) in &new_keys {
                keys.insert(*id, name.as_str())?;
            }
            let mut table = tx.open_table(POINTS)?;
            table.retain_in((t, 0)..=(t, u32::MAX), |_, _| false)?;
            for (chunk, bytes) in chunks.iter().enumerate() {
                if !bytes.is_empty() {
                    table.insert((t, chunk as u32), bytes.as_slice())?;
                }
            }
            tx.open_table(RUNS)?.insert(t, run.id.as_str())?;
            if let Some(name) = name {
                tx.open_table(NAMES)?.insert(name, t)?;
            }
            Ok(())
        });
        if written.is_err() {
            // The ids given out were not stored: forget them.
            for (id, _) in &new_keys {
                ids.forget(*id);
            }
            ids.layout.clear();
        }
        ids.chunks = chunks;
        written
    }

    /// The runs held, as (start, run id), oldest first.
    pub fn runs(&self) -> Result<Vec<(DateTime<Utc>, String)>, HistoryError> {
        let tx = self.db()?.begin_read().map_err(|e| self.io(e))?;
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
            let mut names = tx.open_table(NAMES)?;
            for &s in starts {
                let t = ms(s);
                table.retain_in((t, 0)..=(t, u32::MAX), |_, _| false)?;
                runs.remove(t)?;
                names.retain(|_, v| v != t)?;
            }
            Ok(())
        })
    }

    /// Forgets the runs the series calls `names` (retention deleted them).
    pub fn remove_named(&self, names: &[String]) -> Result<(), HistoryError> {
        let held = self.names()?;
        let gone: Vec<DateTime<Utc>> = held
            .iter()
            .filter(|(n, _)| names.contains(n))
            .map(|(_, t)| *t)
            .collect();
        if gone.is_empty() {
            return Ok(());
        }
        self.remove(&gone)
    }

    /// The series' names of the runs held, with their start.
    pub fn names(&self) -> Result<Vec<(String, DateTime<Utc>)>, HistoryError> {
        let tx = self.db()?.begin_read().map_err(|e| self.io(e))?;
        let names = tx.open_table(NAMES).map_err(|e| self.io(e))?;
        let mut out = Vec::new();
        for row in names.iter().map_err(|e| self.io(e))? {
            let (k, v) = row.map_err(|e| self.io(e))?;
            out.push((k.value().to_string(), at(v.value())));
        }
        Ok(out)
    }

    /// Makes the history of a series hold exactly the runs named in `on_disk` (their
    /// folders): forgets the others (retention removed them) and adds those it lacks (a
    /// crash between writing a run and recording it, or a history rebuilt), reading each
    /// with `read`. Returns how many it added.
    pub fn sync_series(
        &self,
        on_disk: &[String],
        read: impl Fn(&str) -> Option<Run>,
    ) -> Result<usize, HistoryError> {
        let held = self.names()?;
        let wanted: std::collections::HashSet<&str> = on_disk.iter().map(String::as_str).collect();
        let gone: Vec<DateTime<Utc>> = held
            .iter()
            .filter(|(n, _)| !wanted.contains(n.as_str()))
            .map(|(_, t)| *t)
            .collect();
        if !gone.is_empty() {
            self.remove(&gone)?;
        }
        let have: std::collections::HashSet<&str> = held.iter().map(|(n, _)| n.as_str()).collect();
        let mut added = 0;
        for name in on_disk.iter().filter(|n| !have.contains(n.as_str())) {
            if let Some(run) = read(name) {
                match self.add_named(&run, Some(name)) {
                    Ok(()) => added += 1,
                    // One run with a forged start leaves the others recorded.
                    Err(e @ HistoryError::Taken { .. }) => tracing::warn!("{e}"),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(added)
    }

    /// Every path the history has seen.
    pub fn paths(&self) -> Vec<PathKey> {
        let ids = self.lock_ids();
        let mut out: Vec<PathKey> = (0..ids.keys.len() as u32)
            .filter_map(|id| ids.key(id))
            .collect();
        out.sort();
        out
    }

    /// Whether the history has seen `path`.
    pub fn knows(&self, path: &PathKey) -> bool {
        self.lock_ids().lookup(path).is_some()
    }

    /// The points of `path` in the runs since `since` (all with `None`), oldest first.
    pub fn path(
        &self,
        path: &PathKey,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Point>, HistoryError> {
        let Some(id) = self.lock_ids().lookup(path) else {
            return Ok(Vec::new());
        };
        let tx = self.db()?.begin_read().map_err(|e| self.io(e))?;
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

    /// For every path, what the `shift` detector reads of it in the last `n` runs that
    /// started before `before`, oldest first ([`Past`]: a few bytes a run, not the whole
    /// point, so that the last runs of a large fleet fit in memory).
    pub fn recent(
        &self,
        before: DateTime<Utc>,
        n: usize,
    ) -> Result<HashMap<PathKey, Vec<Past>>, HistoryError> {
        let names: HashMap<u32, PathKey> = {
            let ids = self.lock_ids();
            (0..ids.keys.len() as u32)
                .filter_map(|id| Some((id, ids.key(id)?)))
                .collect()
        };
        let tx = self.db()?.begin_read().map_err(|e| self.io(e))?;
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
        let mut out: HashMap<PathKey, Vec<Past>> = HashMap::new();
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
                    if let (Some(key), Some(p)) = (
                        names.get(&id),
                        Point::decode(at(t), &s[1..]).map(|p| Past::of(&p)),
                    ) {
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
    fn another_run_cannot_take_a_held_start_time() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join(FILE_NAME)).unwrap();
        let mut first = run_at(5, 10);
        first.id = "20261203T120500Z".into();
        h.add_named(&first, Some(&first.id)).unwrap();
        // The same run again (a rebuild) replaces its own points.
        let mut again = run_at(5, 11);
        again.id = first.id.clone();
        h.add_named(&again, Some(&again.id)).unwrap();
        // A later run whose report claims the same start is refused, and the points
        // held stay.
        let mut forged = run_at(5, 99);
        forged.id = "20261203T121000Z".into();
        let e = h.add_named(&forged, Some(&forged.id)).unwrap_err();
        assert!(
            matches!(e, HistoryError::Taken { ref held, .. } if held == "20261203T120500Z"),
            "{e}"
        );
        let key = PathKey {
            source: "a".into(),
            target: "b".into(),
            kind: ProbeKind::Udp,
        };
        let pts = h.path(&key, None).unwrap();
        assert_eq!(pts.len(), 1);
        assert_eq!(pts[0].p50_us(), Some(11_005));
        assert_eq!(
            h.names()
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            ["20261203T120500Z"]
        );
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
        assert_eq!(p.p50_us(), Some(12_005));
        assert_eq!(p.rtt_us.map(|b| (b[0], b[5])), Some((12_000, 12_009)));
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
        // As a series: runs named by their folders; one removed by retention, one
        // written but never recorded (a crash in between).
        let h2 = History::open(&dir.path().join("series.redb")).unwrap();
        h2.add_named(&run_at(1, 11), Some("m1")).unwrap();
        h2.add_named(&run_at(2, 12), Some("m2")).unwrap();
        let disk = ["m2".to_string(), "m4".to_string()];
        let added = h2
            .sync_series(&disk, |name| (name == "m4").then(|| run_at(4, 14)))
            .unwrap();
        assert_eq!(added, 1);
        assert_eq!(
            h2.sync_series(&disk, |_| None).unwrap(),
            0,
            "nothing more to do"
        );
        let starts: Vec<i64> = h2
            .runs()
            .unwrap()
            .iter()
            .map(|(t, _)| t.timestamp() / 60)
            .collect();
        assert_eq!(starts, [2, 4]);
    }
}
