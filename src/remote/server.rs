//! The aggregator service (`latmap serve`): accepts region reports over HTTP, stores
//! them, has them assembled into runs (`server/assemble.rs`) and serves the runs, their
//! heatmaps and reports, Prometheus metrics and a health check.
//!
//! Owns the HTTP surface: authentication, limits, validation and the answers. Every
//! refused push gets a 4xx with a JSON reason and nothing of it is stored.

mod assemble;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State as AxumState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::Token;
use super::metrics::{self, Counters};
use super::store::{Put, Store, StoreError};
use super::wire::{Ack, ErrorBody, Push, REPORTS_PATH, RunListing, parse_run_id};
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
    /// The largest accepted body, in bytes.
    pub max_body: usize,
    /// The fleet's regions, when the server has a configuration.
    pub known: Option<Vec<String>>,
    pub thresholds: Thresholds,
    /// Which runs to keep (with their reports); default: all.
    pub retention: crate::schedule::Retention,
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

/// Shared by the handlers and the assembler.
pub(crate) struct State {
    settings: Settings,
    store: Store,
    counters: Counters,
    /// Serialises report writes, so two pushes of one key cannot both be stored.
    write: Mutex<()>,
    index: RwLock<BTreeMap<String, RunListing>>,
    latest: RwLock<Option<(String, Arc<Run>)>>,
    assemble: Mutex<std::sync::mpsc::Sender<String>>,
    /// Set when the server stops: the assembler finishes its current run and returns.
    stopping: std::sync::atomic::AtomicBool,
}

impl State {
    fn index_read(&self) -> RwLockReadGuard<'_, BTreeMap<String, RunListing>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the retention to the store and drops the deleted runs from the index.
    fn prune(&self) {
        let r = self.settings.retention;
        if r.keep.is_none() && r.max_age.is_none() {
            return;
        }
        let gone = {
            let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
            self.store.prune(r, chrono::Utc::now())
        };
        match gone {
            Ok(gone) if !gone.is_empty() => {
                let mut index = self.index.write().unwrap_or_else(|p| p.into_inner());
                for id in &gone {
                    index.remove(id);
                }
                tracing::info!(
                    "retention: deleted {} old run(s), oldest {}",
                    gone.len(),
                    gone[0]
                );
            }
            Ok(_) => {}
            Err(e) => tracing::error!("retention: {e}"),
        }
    }

    /// Makes a newly assembled run visible.
    fn publish(&self, id: &str, run: Run, listing: RunListing) {
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), listing);
        let mut latest = self.latest.write().unwrap_or_else(|p| p.into_inner());
        if latest.as_ref().is_none_or(|(l, _)| l.as_str() <= id) {
            *latest = Some((id.to_string(), Arc::new(run)));
        }
    }
}

/// Binds `listen`, then serves until `shutdown` completes. `bound` is told the real
/// address (useful with port 0) once the socket listens.
pub async fn serve(
    listen: SocketAddr,
    settings: Settings,
    bound: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Store::open(&settings.data)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let state = Arc::new(State {
        settings,
        store,
        counters: Counters::default(),
        write: Mutex::new(()),
        index: RwLock::new(BTreeMap::new()),
        latest: RwLock::new(None),
        assemble: Mutex::new(tx),
        stopping: std::sync::atomic::AtomicBool::new(false),
    });
    load_index(&state)?;
    let assembler = {
        let state = state.clone();
        std::thread::Builder::new()
            .name("assembler".into())
            .spawn(move || assemble::assembler(state, rx))
            .map_err(ServeError::Io)?
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: listen,
            source,
        })?;
    bound(listener.local_addr().unwrap_or(listen));
    let app = router(state.clone());
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    // The assembler holds the state (and so the channel's sender): tell it to stop.
    state.stopping.store(true, Ordering::SeqCst);
    let _ = assembler.join();
    served.map_err(ServeError::Io)
}

/// Reads the stored runs' summaries, and each region's newest report time.
fn load_index(state: &State) -> Result<(), StoreError> {
    for id in state.store.run_ids()? {
        match state.store.run(&id) {
            Ok(Some(run)) => {
                if let Some(l) = assemble::listing(&id, &run) {
                    state.publish(&id, run, l);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!("run {id} cannot be read and will be assembled again: {e}"),
        }
    }
    for id in state.store.report_ids()? {
        for (region, t) in state.store.reported(&id)? {
            let unix = t
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            state.counters.reported(&region, unix);
        }
    }
    Ok(())
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route(REPORTS_PATH, post(push))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(run_json))
        .route("/v1/runs/{id}/heatmap.svg", get(heatmap))
        .route("/v1/runs/{id}/report.md", get(report_md))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: message.into(),
    };
    (status, axum::Json(body)).into_response()
}

fn unauthorized(message: &str, invalid: bool) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    let challenge = if invalid {
        "Bearer realm=\"latmap\", error=\"invalid_token\""
    } else {
        "Bearer realm=\"latmap\""
    };
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

/// Checks the bearer token; the comparison takes the same time wherever it differs.
// A handler's early answer is a Response; its size does not matter at this rate.
#[allow(clippy::result_large_err)]
fn authenticate(headers: &HeaderMap, token: &Token) -> Result<(), Response> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized("missing Authorization: Bearer TOKEN", false));
    };
    let value = value.as_bytes();
    let presented = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => {
            return Err(unauthorized(
                "the Authorization scheme must be Bearer",
                false,
            ));
        }
    };
    if token.matches(presented) {
        Ok(())
    } else {
        Err(unauthorized("wrong token", true))
    }
}

async fn push(AxumState(state): AxumState<Arc<State>>, headers: HeaderMap, body: Body) -> Response {
    let refuse = |reason: &'static str, status: StatusCode, message: String| {
        state.counters.reject(reason);
        tracing::warn!("refused a push: {status}: {message}");
        error(status, message)
    };
    if let Err(r) = authenticate(&headers, &state.settings.token) {
        state.counters.reject("unauthorized");
        return r;
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return refuse(
            "unsupported_media_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (Content-Type: application/json)".into(),
        );
    }
    let max = state.settings.max_body;
    let too_large = || format!("the body exceeds the limit of {max} bytes (--max-body)");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return refuse("too_large", StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    let bytes = match axum::body::to_bytes(body, max).await {
        Ok(b) => b,
        Err(_) => return refuse("too_large", StatusCode::PAYLOAD_TOO_LARGE, too_large()),
    };
    let push: Push = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            return refuse(
                "malformed",
                StatusCode::BAD_REQUEST,
                format!("the body is not a latmap.push/1 envelope: {e}"),
            );
        }
    };
    if let Err(e) = push.validate(state.settings.known.as_deref()) {
        return refuse("invalid", StatusCode::BAD_REQUEST, e);
    }
    // A report older than the server keeps would be deleted again at once.
    if let Some(age) = state
        .settings
        .retention
        .max_age
        .and_then(|a| chrono::TimeDelta::from_std(a).ok())
        && chrono::Utc::now() - push.epoch > age
    {
        return refuse(
            "expired",
            StatusCode::GONE,
            format!(
                "the sweep of {} is older than this server keeps runs (--keep-for); it is not stored",
                push.epoch
            ),
        );
    }
    let id = push.run_id();
    let region = push.region.clone();
    let stored = {
        let state = state.clone();
        let id = id.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = state.write.lock().unwrap_or_else(|p| p.into_inner());
            state.store.put_report(&id, &push.report)
        })
        .await
    };
    match stored {
        Ok(Ok(Put::Stored)) => {
            state.counters.received.fetch_add(1, Ordering::Relaxed);
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1e3;
            state.counters.reported(&region, now);
            let _ = state
                .assemble
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(id.clone());
            tracing::info!("stored the report of {region} for run {id}");
            let body = Ack {
                status: "stored".into(),
                run: id,
                region,
            };
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Ok(Ok(Put::Duplicate)) => {
            state.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            let body = Ack {
                status: "duplicate".into(),
                run: id,
                region,
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Ok(Put::Conflict)) => refuse(
            "conflict",
            StatusCode::CONFLICT,
            format!(
                "another report of region {:?} is already stored for run {id}; a sweep's report cannot be replaced",
                region
            ),
        ),
        Ok(Err(e)) => {
            tracing::error!("cannot store a report: {e}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server cannot store the report now; send it again later",
            )
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn list_runs(AxumState(state): AxumState<Arc<State>>) -> Response {
    let runs: Vec<RunListing> = state.index_read().values().cloned().collect();
    axum::Json(runs).into_response()
}

/// The run id of `id` (`latest` allowed), if such a run is assembled.
#[allow(clippy::result_large_err)]
fn resolve(state: &State, id: &str) -> Result<String, Response> {
    let index = state.index_read();
    let found = if id == "latest" {
        index.keys().next_back().cloned()
    } else {
        parse_run_id(id).and(index.contains_key(id).then(|| id.to_string()))
    };
    found.ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no run {id:?}; GET /v1/runs lists the runs"),
        )
    })
}

/// Loads run `id` on a blocking thread.
async fn load(state: &Arc<State>, id: &str) -> Result<Run, Response> {
    let state = state.clone();
    let id = id.to_string();
    let loaded = tokio::task::spawn_blocking(move || state.store.run(&id)).await;
    match loaded {
        Ok(Ok(Some(run))) => Ok(run),
        Ok(Ok(None)) => Err(error(StatusCode::NOT_FOUND, "no such run")),
        Ok(Err(e)) => {
            tracing::error!("{e}");
            Err(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the run cannot be read",
            ))
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn run_json(AxumState(state): AxumState<Arc<State>>, Path(id): Path<String>) -> Response {
    let id = match resolve(&state, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let path = state.store.run_path(&id);
    match tokio::task::spawn_blocking(move || std::fs::read(&path)).await {
        Ok(Ok(bytes)) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Ok(Err(e)) => {
            tracing::error!("cannot read run {id}: {e}");
            error(StatusCode::INTERNAL_SERVER_ERROR, "the run cannot be read")
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn heatmap(
    AxumState(state): AxumState<Arc<State>>,
    Path(id): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let view = match query.get("view").map(String::as_str).unwrap_or("rtt") {
        "rtt" => View::Rtt,
        "loss" => View::Loss,
        "inflation" => View::Inflation,
        "delta" => View::Delta,
        other => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("unknown view {other:?}; use rtt, loss, inflation or delta"),
            );
        }
    };
    let id = match resolve(&state, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let run = match load(&state, &id).await {
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
        match load(&state, &previous).await {
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

async fn report_md(AxumState(state): AxumState<Arc<State>>, Path(id): Path<String>) -> Response {
    let id = match resolve(&state, &id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match load(&state, &id).await {
        Ok(run) => (
            [(header::CONTENT_TYPE, "text/markdown; charset=utf-8")],
            render(&run, Format::Markdown),
        )
            .into_response(),
        Err(r) => r,
    }
}

async fn metrics_text(AxumState(state): AxumState<Arc<State>>) -> Response {
    let latest = state
        .latest
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let text = metrics::render(
        &state.counters,
        latest.as_ref().map(|(id, run)| (id.as_str(), run.as_ref())),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
