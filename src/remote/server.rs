//! The aggregator service (`latmap serve`): accepts region reports over HTTP, stores
//! them, has them assembled into runs and serves the runs, their heatmaps and
//! reports, Prometheus metrics and a health check.
//!
//! Owns the HTTP surface and what the handlers share. Beside it: `http` (connections:
//! limits, timeouts, shutdown), `push` (`POST /v1/reports`), `commit` (group commit
//! of reports) and `assemble` (runs). Startup reads no run: it lists the run folders
//! and listens; the runs' listings are loaded in the background. Every refused
//! request gets a 4xx or 503 with a JSON reason.

mod assemble;
mod commit;
mod extract;
mod gate;
mod http;
mod push;
mod web;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;

use self::extract::{Param, Params};
#[cfg(test)]
pub(crate) use self::gate::WAITING_PER_SLOT;
use super::Token;
use super::metrics::{self, Counters, Latest};
use super::reject::Refusal;
use super::store::{Store, StoreError, chain};
use super::wire::{ErrorBody, REPORTS_PATH, RunListing, parse_run_id};
use crate::config::Thresholds;
use crate::render::heatmap::{Options, Order, View, heatmap_svg};
use crate::render::report::{Format, render};
use crate::run::Run;

/// What the server needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub data: PathBuf,
    pub token: Token,
    /// How long after an epoch's first report its run is assembled without the
    /// regions still missing.
    pub deadline: Duration,
    /// How long a report that comes after its run was built waits for others before
    /// the run is rebuilt once for all of them (longer when builds are slow).
    pub batch: Duration,
    /// The largest accepted body, in bytes.
    pub max_body: usize,
    /// The fleet's regions, when the server has a configuration.
    pub known: Option<Vec<String>>,
    pub thresholds: Thresholds,
    /// Which runs to keep (with their reports); default: all.
    pub retention: crate::schedule::Retention,
    pub limits: Limits,
    /// Reads (the web pages, the runs, the history, the metrics) need the token too.
    pub auth_reads: bool,
}

/// The largest `--max-skew`: a clock more than a day off is broken, and a longer
/// allowance would let a forged far-future run stay the latest for that long.
pub const MAX_SKEW_CAP: Duration = Duration::from_secs(24 * 3600);

/// `--max-skew`: a duration of at most [`MAX_SKEW_CAP`].
pub fn skew_arg(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e}; write a number and a unit, like \"5m\" or \"30s\""))?;
    if d > MAX_SKEW_CAP {
        return Err(format!(
            "{s:?} is more than {}; fix the agents' clocks (NTP) instead of allowing more skew",
            humantime::format_duration(MAX_SKEW_CAP)
        ));
    }
    Ok(d)
}

/// The server's limits against slow, many and large clients (see docs/security.md).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How far ahead of the server's clock a sweep's epoch may be (at most
    /// [`MAX_SKEW_CAP`]).
    pub max_skew: Duration,
    /// Connections served at once; more get `503`.
    pub max_connections: usize,
    /// Memory for push bodies received and not yet checked, in bytes; past it
    /// pushes get `503`. Checked reports waiting for the disk have a budget of the
    /// same size, and reports being parsed (one per core) take about four times
    /// their body.
    pub max_in_flight: usize,
    /// Time for a request's head, from the connection's start or the previous
    /// request's end.
    pub header_timeout: Duration,
    /// Time for a push's body.
    pub body_timeout: Duration,
    /// A connection on which nothing moves this long, outside a request, is closed.
    pub idle_timeout: Duration,
    /// How long a shutdown waits for requests in hand and background work.
    pub shutdown_timeout: Duration,
    /// What `503` answers ask clients to wait.
    pub retry_after: Duration,
    /// Heavy reads served at once: drawing a run (its page, heatmap or Markdown
    /// report) or reading the history for a page; `/metrics` is rendered as many
    /// times at once, on a gate of its own. `WAITING_PER_SLOT` times as many
    /// wait; more get `503` with `Retry-After`.
    pub max_drawings: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_skew: Duration::from_secs(300),
            max_connections: 4096,
            max_in_flight: 32 << 20,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(2),
            max_drawings: 1,
        }
    }
}

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(std::io::Error),
}

/// Shared by the handlers, the committer and the assembler.
pub(crate) struct State {
    settings: Settings,
    store: Store,
    counters: Counters,
    /// Held by the committer while it stores and by retention while it deletes.
    write: Mutex<()>,
    /// Every run by id; the listing is `None` until loaded.
    index: RwLock<BTreeMap<String, Option<RunListing>>>,
    latest: RwLock<Option<Arc<Latest>>>,
    commit: std::sync::mpsc::Sender<commit::Job>,
    assemble: Mutex<std::sync::mpsc::Sender<assemble::Stored>>,
    /// Set when the server stops: the background threads finish and return.
    stopping: AtomicBool,
    /// The memory budget of push bodies received and not yet parsed, in bytes.
    in_flight: Arc<Semaphore>,
    /// The memory budget of checked reports waiting to be stored, in bytes.
    storing: Arc<Semaphore>,
    /// Pushes being parsed and checked (one per core).
    parsing: Arc<Semaphore>,
    /// Runs being drawn and history read for pages (`--max-drawings`).
    drawings: gate::Gate,
    /// `/metrics` being rendered (as many as drawings, on a gate of their own so that
    /// a scrape never waits behind a drawing).
    scrapes: gate::Gate,
    /// Unauthorised requests logged in the current minute, and when it began.
    unauthorized: Mutex<(Instant, u64)>,
    /// The runs' history (`DATA/history.redb`), when it could be opened.
    history: Option<crate::history::History>,
}

impl State {
    /// Runs `f` on the history, if there is one. A damaged file can make redb panic
    /// rather than return an error: then the file is set aside, the history rebuilt
    /// from the stored runs, and `None` given, as when there is no history; the
    /// thread doing it (the assembler's) goes on.
    fn with_history<T>(
        &self,
        what: &str,
        f: impl FnOnce(&crate::history::History) -> T,
    ) -> Option<T> {
        let h = self.history.as_ref()?;
        use std::panic::{AssertUnwindSafe, catch_unwind};
        match catch_unwind(AssertUnwindSafe(|| f(h))) {
            Ok(t) => Some(t),
            Err(p) => {
                let why = panic_message(&p);
                match h.set_aside() {
                    Ok(aside) => {
                        tracing::error!(
                            "history: {what} failed inside the history file ({why}): it is damaged; moved it to {} and rebuilding it from the stored runs",
                            aside.display()
                        );
                        let series = crate::history::Series::of_store(self.store.root());
                        match catch_unwind(AssertUnwindSafe(|| series.sync(h))) {
                            Ok(Ok(s)) => {
                                tracing::info!("history: rebuilt, {} run(s) recorded", s.added)
                            }
                            Ok(Err(e)) => tracing::error!("history: {e}"),
                            Err(p) => tracing::error!(
                                "history: rebuilding failed ({})",
                                panic_message(&p)
                            ),
                        }
                    }
                    Err(e) => tracing::error!(
                        "history: {what} failed inside the history file ({why}), and it cannot be set aside: {e}"
                    ),
                }
                None
            }
        }
    }

    /// `answer` through `gate`: a bounded number at once, a bounded line, and the slot
    /// kept until the answer is sent (see [`gate::gated`]).
    async fn gated(&self, gate: &gate::Gate, answer: impl Future<Output = Response>) -> Response {
        let l = self.settings.limits;
        gate::gated(gate, l.retry_after, l.body_timeout, answer).await
    }

    fn index_read(&self) -> RwLockReadGuard<'_, BTreeMap<String, Option<RunListing>>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The latest epoch the server takes: its clock plus the allowed skew.
    fn newest_epoch(&self) -> DateTime<Utc> {
        let skew = self.settings.limits.max_skew.min(MAX_SKEW_CAP);
        let skew = chrono::TimeDelta::from_std(skew).unwrap_or(chrono::TimeDelta::MAX);
        Utc::now()
            .checked_add_signed(skew)
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Whether run `id` is from a time the server can believe (not ahead of its clock
    /// by more than the skew): runs stored by an older version from a forged far
    /// future are listed, but neither served as `latest` nor counted by retention.
    fn plausible(&self, id: &str) -> bool {
        parse_run_id(id).is_some_and(|t| t <= self.newest_epoch())
    }

    fn run_count(&self) -> usize {
        self.index_read().len()
    }

    /// Loads every listing not loaded yet, and the latest run's metrics.
    fn load_index(&self) {
        let missing: Vec<String> = self
            .index_read()
            .iter()
            .filter(|(_, l)| l.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        for id in missing {
            self.load_listing(&id);
        }
        let future: Vec<String> = self
            .index_read()
            .keys()
            .filter(|id| !self.plausible(id))
            .cloned()
            .collect();
        for id in &future {
            tracing::warn!(
                "run {id} is from the future (a forged push or a wrong clock): it is listed but not served as latest, and retention neither counts nor deletes it; delete {} and {} if it is not real",
                self.store.root().join("runs").join(id).display(),
                self.store.root().join("reports").join(id).display()
            );
        }
        let newest = self
            .index_read()
            .iter()
            .rev()
            .find(|(id, l)| l.is_some() && self.plausible(id))
            .map(|(id, _)| id.clone());
        if let Some(id) = newest {
            match Run::read_without_samples(&self.store.run_path(&id)) {
                Ok(run) => {
                    let rtt = assemble::rtt_of_stored(&self.store, &run);
                    let rtt: Vec<Option<&metrics::RttHistogram>> =
                        rtt.iter().map(Option::as_ref).collect();
                    let latest = Latest::of(&id, &run, &rtt);
                    let mut l = self.latest.write().unwrap_or_else(|p| p.into_inner());
                    if l.as_ref().is_none_or(|l| l.id <= id) {
                        *l = Some(Arc::new(latest));
                    }
                }
                Err(e) => tracing::error!("cannot read the latest run {id}: {}", chain(&e)),
            }
        }
    }

    /// Loads (or drops, when there is no run) the listing of `id`.
    fn load_listing(&self, id: &str) -> Option<RunListing> {
        let loaded = match self.store.listing(id) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "run {id} cannot be read and will be assembled again: {}",
                    chain(&e)
                );
                None
            }
        };
        let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
        match &loaded {
            Some(l) => {
                // A listing published meanwhile is newer than the one on disk.
                let slot = index.entry(id.to_string()).or_insert(None);
                if slot.is_none() {
                    *slot = Some(l.clone());
                }
            }
            None => {
                if index.get(id).is_some_and(Option::is_none) {
                    index.remove(id);
                }
            }
        }
        loaded
    }

    /// The regions in the assembled run of `id`, if there is one.
    fn reported_in_run(&self, id: &str) -> Option<BTreeSet<String>> {
        let known = self.index_read().get(id).cloned();
        let listing = match known {
            None => return None,
            Some(Some(l)) => l,
            Some(None) => self.load_listing(id)?,
        };
        Some(listing.reported.into_iter().collect())
    }

    /// Makes a newly assembled run visible.
    fn publish(&self, listing: RunListing, latest: Latest) {
        let id = listing.id.clone();
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), Some(listing));
        if !self.plausible(&id) {
            return;
        }
        let mut l = self.latest.write().unwrap_or_else(|p| p.into_inner());
        if l.as_ref().is_none_or(|l| l.id <= id) {
            *l = Some(Arc::new(latest));
        }
    }

    /// Applies the retention to the store and drops the deleted runs from the index.
    fn prune(&self) {
        let r = self.settings.retention;
        if r.keep.is_none() && r.max_age.is_none() {
            return;
        }
        let gone = {
            let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
            self.store.prune(r, Utc::now(), self.newest_epoch())
        };
        match gone {
            Ok(gone) if !gone.is_empty() => {
                let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
                for id in &gone {
                    index.remove(id);
                }
                drop(index);
                if let Some(Err(e)) =
                    self.with_history("forgetting deleted runs", |h| h.remove_named(&gone))
                {
                    tracing::error!("retention: the history keeps runs deleted: {e}");
                }
                tracing::info!(
                    "retention: deleted {} old run(s), oldest {}",
                    gone.len(),
                    gone[0]
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!("retention: {}", chain(&e)),
        }
    }

    /// Why the retention would delete a report of `epoch` at once, if it would: older
    /// than `--keep-for`, or older than the `--keep` newest runs (unless its run is
    /// kept already).
    fn retention_refuses(&self, id: &str, epoch: DateTime<Utc>) -> Option<String> {
        let r = self.settings.retention;
        if let Some(age) = r.max_age.and_then(|a| chrono::TimeDelta::from_std(a).ok())
            && Utc::now() - epoch > age
        {
            return Some(format!(
                "the sweep of {epoch} is older than this server keeps runs (--keep-for); it is not stored"
            ));
        }
        let keep = r.keep?;
        let index = self.index_read();
        if index.contains_key(id) {
            return None;
        }
        let newer = index
            .range(id.to_string()..)
            .filter(|(k, _)| self.plausible(k))
            .count();
        (newer >= keep).then(|| {
            format!(
                "the sweep of {epoch} is older than the {keep} newest runs this server keeps (--keep); it would be deleted at once, so it is not stored"
            )
        })
    }

    /// Counts and logs a refused push, and answers it.
    fn refuse(&self, peer: SocketAddr, refusal: Refusal) -> Response {
        self.counters.reject(refusal.reason);
        tracing::warn!(
            "refused a push from {peer}: {}: {}",
            refusal.reason.status(),
            refusal.message
        );
        refusal.into_response()
    }

    /// Logs a refused token with the peer's address (never the token), at most ten a
    /// minute and then a count.
    fn log_unauthorized(&self, peer: SocketAddr, headers: &HeaderMap) {
        const PER_MINUTE: u64 = 10;
        let mut u = self.unauthorized.lock().unwrap_or_else(|p| p.into_inner());
        if u.0.elapsed() >= Duration::from_secs(60) {
            if u.1 > PER_MINUTE {
                tracing::warn!(
                    "{} more unauthorised requests in the last minute were not logged",
                    u.1 - PER_MINUTE
                );
            }
            *u = (Instant::now(), 0);
        }
        u.1 += 1;
        if u.1 <= PER_MINUTE {
            let why = match headers.get(header::AUTHORIZATION) {
                None => "no Authorization header",
                Some(v)
                    if !v
                        .as_bytes()
                        .get(..7)
                        .is_some_and(|s| s.eq_ignore_ascii_case(b"bearer ")) =>
                {
                    "not a Bearer token"
                }
                Some(_) => "wrong token",
            };
            let agent = headers
                .get(header::USER_AGENT)
                .map(|v| {
                    String::from_utf8_lossy(v.as_bytes())
                        .chars()
                        .take(80)
                        .collect::<String>()
                })
                .unwrap_or_default();
            tracing::warn!(
                "refused an unauthorised request from {peer} ({why}; user agent {:?})",
                agent
            );
        }
    }
}

/// Raises the limit of open files to the most allowed, and returns it.
fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                return hard;
            }
            soft
        }
        Err(_) => 1024,
    }
}

/// Binds `listen`, then serves until `shutdown` completes. `bound` is told the real
/// address (useful with port 0) once the socket listens.
pub async fn serve(
    listen: SocketAddr,
    mut settings: Settings,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Files, reports being written and the listener need descriptors beside the
    // connections.
    let fds = raise_fd_limit();
    let room = usize::try_from(fds.saturating_sub(128))
        .unwrap_or(usize::MAX)
        .max(16);
    if settings.limits.max_connections > room {
        tracing::warn!(
            "--max-connections {} is more than the open-file limit allows ({fds}); serving at most {room}",
            settings.limits.max_connections
        );
        settings.limits.max_connections = room;
    }
    let limits = settings.limits;
    // Pushes are parsed on many threads; with an arena each, glibc would keep several
    // copies of a burst's memory (docs/performance.md, "The aggregator").
    crate::sockopt::limit_malloc_arenas(2);
    let store = Store::open(&settings.data)?;
    let history = open_history(&settings.data);
    let index: BTreeMap<String, Option<RunListing>> =
        store.run_ids()?.into_iter().map(|id| (id, None)).collect();
    let (commit_tx, commit_rx) = std::sync::mpsc::channel();
    let (assemble_tx, assemble_rx) = std::sync::mpsc::channel();
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let state = Arc::new(State {
        in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        storing: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        parsing: Arc::new(Semaphore::new(cores)),
        drawings: gate::Gate::new("drawings", limits.max_drawings),
        scrapes: gate::Gate::new("renderings of /metrics", limits.max_drawings),
        settings,
        store,
        counters: Counters::default(),
        write: Mutex::new(()),
        index: RwLock::new(index),
        latest: RwLock::new(None),
        commit: commit_tx,
        assemble: Mutex::new(assemble_tx),
        stopping: AtomicBool::new(false),
        unauthorized: Mutex::new((Instant::now(), 0)),
        history,
    });
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    {
        let threads = [
            ("committer", {
                let state = state.clone();
                Box::new(move || commit::committer(state, commit_rx)) as Box<dyn FnOnce() + Send>
            }),
            ("assembler", {
                let state = state.clone();
                Box::new(move || assemble::assembler(state, assemble_rx))
                    as Box<dyn FnOnce() + Send>
            }),
        ];
        let mut handles = Vec::new();
        for (name, f) in threads {
            // Without its committer or assembler the server would answer and never
            // store or build again: it stops instead, for its supervisor to start it
            // again (nothing acknowledged is lost: it is on disk).
            let guarded = move || {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
                    tracing::error!(
                        "the {name} thread failed ({}); stopping the server (exit 70) for its supervisor to start it again; nothing acknowledged is lost",
                        panic_message(&p)
                    );
                    std::process::exit(70);
                }
            };
            handles.push(
                std::thread::Builder::new()
                    .name(name.into())
                    .spawn(guarded)
                    .map_err(ServeError::Io)?,
            );
        }
        std::thread::Builder::new()
            .name("joiner".into())
            .spawn(move || {
                for h in handles {
                    let _ = h.join();
                }
                let _ = done_tx.send(());
            })
            .map_err(ServeError::Io)?;
    }
    let listener = bind(listen).map_err(|source| ServeError::Listen {
        addr: listen,
        source,
    })?;
    bound(listener.local_addr().unwrap_or(listen));
    let app = router(state.clone());
    let started = Instant::now();
    http::serve(listener, app, limits, shutdown).await;
    // Connections are closed: let the committer finish what it holds and the
    // assembler its current step, within what is left of the shutdown time.
    state.stopping.store(true, Ordering::SeqCst);
    let left = limits
        .shutdown_timeout
        .saturating_sub(started.elapsed().min(limits.shutdown_timeout))
        .max(Duration::from_secs(1));
    if tokio::time::timeout(left, done_rx).await.is_err() {
        tracing::warn!(
            "the assembler is still busy; stopping without it (its run is assembled again at the next start)"
        );
    }
    Ok(())
}

/// What a panic said, for the log.
fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}

/// The store's history, opened (it is made to hold the stored runs in the background,
/// at start). One that cannot be opened (damaged) is moved aside and rebuilt from the
/// runs; if even that fails the server runs without history (runs are judged alone)
/// and says so.
fn open_history(data: &std::path::Path) -> Option<crate::history::History> {
    let series = crate::history::Series::of_store(data);
    // A damaged file can make redb panic while it is read, not return an error.
    let open = |file: &std::path::Path| {
        std::panic::catch_unwind(|| crate::history::History::open(file)).unwrap_or_else(|p| {
            Err(crate::history::HistoryError::Open {
                path: file.to_path_buf(),
                reason: format!("reading it failed ({})", panic_message(&p)),
            })
        })
    };
    match open(&series.file) {
        Ok(h) => return Some(h),
        Err(e) => tracing::error!("{e}"),
    }
    let aside = crate::history::damaged_name(&series.file);
    if let Err(e) = std::fs::rename(&series.file, &aside) {
        tracing::error!(
            "cannot move {} aside ({e}); running without history: runs are judged without their paths' past (no shift findings)",
            series.file.display()
        );
        return None;
    }
    tracing::warn!(
        "moved the damaged history to {}; it is rebuilt from the stored runs",
        aside.display()
    );
    match open(&series.file) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!("{e}; running without history");
            None
        }
    }
}

/// A listener with a backlog for bursts of connections.
fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(REPORTS_PATH, post(push::push))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(run_json))
        .route("/v1/runs/{id}/heatmap.svg", get(heatmap))
        .route("/v1/runs/{id}/report.md", get(report_md))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/history", get(web::history_json))
        .route("/", get(web::index))
        .route("/runs", get(web::runs_page))
        .route("/runs/{id}", get(web::run_page))
        .route("/paths/{source}/{target}", get(web::path_page))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            web::reads_need_token,
        ))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

async fn list_runs(AxumState(state): AxumState<Arc<State>>) -> Response {
    let loaded = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let missing: Vec<String> = state
                .index_read()
                .iter()
                .filter(|(_, l)| l.is_none())
                .map(|(id, _)| id.clone())
                .collect();
            for id in missing {
                state.load_listing(&id);
            }
            state
                .index_read()
                .values()
                .flatten()
                .cloned()
                .collect::<Vec<RunListing>>()
        })
        .await
    };
    match loaded {
        Ok(runs) => axum::Json(runs).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// The run id of `id` (`latest` allowed), if such a run is assembled.
#[allow(clippy::result_large_err)]
fn resolve(state: &State, id: &str) -> Result<String, Response> {
    let index = state.index_read();
    let found = if id == "latest" {
        index.keys().rev().find(|k| state.plausible(k)).cloned()
    } else {
        parse_run_id(id).and(index.contains_key(id).then(|| id.to_string()))
    };
    found.ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "no run {:?}; GET /v1/runs lists the runs",
                id.chars().take(40).collect::<String>()
            ),
        )
    })
}

/// Loads run `id` without its samples on a blocking thread.
async fn load(state: &Arc<State>, id: &str) -> Result<Run, Response> {
    let path = state.store.run_path(id);
    let loaded = tokio::task::spawn_blocking(move || {
        if !path.is_file() {
            return Ok(None);
        }
        Run::read_without_samples(&path).map(Some)
    })
    .await;
    match loaded {
        Ok(Ok(Some(run))) => Ok(run),
        Ok(Ok(None)) => Err(error(StatusCode::NOT_FOUND, "no such run")),
        Ok(Err(e)) => {
            tracing::error!("{}", chain(&e));
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the run cannot be read",
            ))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn run_json(AxumState(state): AxumState<Arc<State>>, Param(id): Param<String>) -> Response {
    let id = match resolve(&state, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let path = state.store.run_path(&id);
    // Streamed: a run of a thousand regions is most of a gigabyte.
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return error(StatusCode::NOT_FOUND, "no such run");
        }
        Err(e) => {
            tracing::error!("cannot read run {id}: {e}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, "the run cannot be read");
        }
    };
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut file = file?;
        let mut buf = vec![0u8; 1 << 16];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn heatmap(
    AxumState(state): AxumState<Arc<State>>,
    Param(id): Param<String>,
    Params(query): Params<BTreeMap<String, String>>,
) -> Response {
    let view = match query.get("view").map(String::as_str).unwrap_or("rtt") {
        "rtt" => View::Rtt,
        "loss" => View::Loss,
        "inflation" => View::Inflation,
        "delta" => View::Delta,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown view {:?}; use rtt, loss, inflation or delta",
                    other.chars().take(40).collect::<String>()
                ),
            );
        }
    };
    let id = match resolve(&state, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    state
        .gated(&state.drawings, heatmap_of(&state, id, view))
        .await
}

async fn heatmap_of(state: &Arc<State>, id: String, view: View) -> Response {
    let run = match load(state, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let baseline = if view == View::Delta {
        let previous = state
            .index_read()
            .range(..id.clone())
            .next_back()
            .map(|(k, _)| k.clone());
        let Some(previous) = previous else {
            return error(
                StatusCode::NOT_FOUND,
                format!("run {id} is the first run: the delta view needs an earlier one"),
            );
        };
        match load(state, &previous).await {
            Ok(r) => Some(r),
            Err(r) => return r,
        }
    } else {
        None
    };
    let drawn = tokio::task::spawn_blocking(move || {
        let opts = Options {
            view,
            order: Order::Config,
            kind: None,
            baseline: baseline.as_ref(),
            links: None,
        };
        heatmap_svg(&run, &opts).map_err(|e| e.to_string())
    })
    .await;
    match drawn {
        Ok(Ok(svg)) => ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response(),
        Ok(Err(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn report_md(AxumState(state): AxumState<Arc<State>>, Param(id): Param<String>) -> Response {
    let id = match resolve(&state, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let answer = async {
        let run = match load(&state, &id).await {
            Ok(run) => run,
            Err(r) => return r,
        };
        match tokio::task::spawn_blocking(move || render(&run, Format::Markdown)).await {
            Ok(text) => (
                [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
                text,
            )
                .into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    };
    state.gated(&state.drawings, answer).await
}

async fn metrics_text(AxumState(state): AxumState<Arc<State>>) -> Response {
    let latest = state
        .latest
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let answer = async {
        // A 1,000-region fleet's gauges take about a second: off the threads that
        // answer health checks.
        let s = state.clone();
        match tokio::task::spawn_blocking(move || metrics::render(&s.counters, latest)).await {
            Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    };
    state.gated(&state.scrapes, answer).await
}
