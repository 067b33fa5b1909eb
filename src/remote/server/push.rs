//! `POST /v1/reports`: a push, from the bearer token to the acknowledgement.
//!
//! In order: the token (a 401 is logged with the peer's address, never the token);
//! the content type and declared size; a share of the memory budget for bodies
//! (`--max-in-flight`; none left: `503` with `Retry-After`); the body, within the
//! body timeout (`408`); then, on a blocking thread and at most as many at once as
//! there are cores, parsing and every check of the envelope, its epoch and its
//! numbers (`400` naming the field); the retention (`410`); and the group commit, for
//! which the report waits within a second budget of the same size. Only a report that
//! is on disk is acknowledged (`201`, or `200` for a resend). Every refusal is a JSON
//! reason and nothing of a refused push is stored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::super::store::{Put, chain};
use super::super::wire::{Ack, Push};
use super::assemble::{Stored, slim};
use super::commit::Job;
use super::{State, authenticate, error};

pub(super) async fn push(
    AxumState(state): AxumState<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let refuse = |reason: &'static str, status: StatusCode, message: String| {
        state.counters.reject(reason);
        tracing::warn!("refused a push from {peer}: {status}: {message}");
        error(status, message)
    };
    if let Err(r) = authenticate(&headers, &state.settings.token) {
        state.counters.reject("unauthorized");
        state.log_unauthorized(peer, &headers);
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
    // The body's share of the budget: its declared length, or the largest allowed.
    let size = declared.map_or(max, |n| n as usize).max(1);
    let budget = state.settings.limits.max_in_flight;
    let need = size.min(budget).min(u32::MAX as usize) as u32;
    let Ok(permit) = state.in_flight.clone().try_acquire_many_owned(need) else {
        state.counters.reject("busy");
        tracing::warn!(
            "answered 503 to a push from {peer}: the pushes in flight take the memory budget (--max-in-flight {budget} bytes)"
        );
        return super::http::unavailable(
            state.settings.limits.retry_after,
            "the server is handling as many pushes as its memory budget allows; send it again after Retry-After seconds",
        );
    };
    let read = tokio::time::timeout(
        state.settings.limits.body_timeout,
        axum::body::to_bytes(body, max),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return refuse("too_large", StatusCode::PAYLOAD_TOO_LARGE, too_large()),
        Err(_) => {
            return refuse(
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (--body-timeout)",
                    state.settings.limits.body_timeout.as_secs()
                ),
            );
        }
    };
    // Parsing and checking take a core each: at most as many at once as there are.
    let Ok(parsing) = state.parsing.clone().acquire_owned().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let checked = {
        let state = state.clone();
        tokio::task::spawn_blocking(move || {
            let checked = parse(&state, &bytes);
            drop(bytes);
            drop(parsing);
            checked
        })
        .await
    };
    // The body is gone; what waits for the disk now is the report in the artifact
    // layout, which has a budget of its own (waited for, not refused: the push is
    // accepted already).
    drop(permit);
    let (push, stored_bytes, ranges) = match checked {
        Ok(Ok(p)) => p,
        Ok(Err((reason, message))) => return refuse(reason, StatusCode::BAD_REQUEST, message),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let pending = stored_bytes
        .len()
        .min(state.settings.limits.max_in_flight)
        .min(u32::MAX as usize) as u32;
    let Ok(permit) = state
        .storing
        .clone()
        .acquire_many_owned(pending.max(1))
        .await
    else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the server is stopping");
    };
    let id = push.run_id();
    if let Some(message) = state.retention_refuses(&id, push.epoch) {
        return refuse("expired", StatusCode::GONE, message);
    }
    let region = push.region.clone();
    let fleet: Vec<String> = push.report.regions.iter().map(|r| r.name.clone()).collect();
    let (reply, answer) = oneshot::channel();
    let started = Instant::now();
    let job = Job {
        id: id.clone(),
        report: slim(push.report),
        bytes: stored_bytes,
        reply,
    };
    if state.commit.send(job).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping; send the report again later",
        );
    }
    let Ok((result, report)) = answer.await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping; send the report again later",
        );
    };
    drop(permit);
    match result {
        Ok(Put::Stored) => {
            state.counters.received.fetch_add(1, Ordering::Relaxed);
            let now = chrono::Utc::now().timestamp_millis() as f64 / 1e3;
            state.counters.reported(&region, now);
            let _ = state
                .assemble
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(Stored {
                    id: id.clone(),
                    region: region.clone(),
                    fleet,
                    slim: report,
                    ranges,
                });
            tracing::info!(
                "stored the report of {region} for run {id} ({:.0} ms to disk)",
                started.elapsed().as_secs_f64() * 1e3
            );
            let body = Ack {
                status: "stored".into(),
                run: id,
                region,
            };
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        Ok(Put::Duplicate) => {
            state.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            let body = Ack {
                status: "duplicate".into(),
                run: id,
                region,
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Put::Conflict) => refuse(
            "conflict",
            StatusCode::CONFLICT,
            format!(
                "another report of region {region:?} is already stored for run {id}; a sweep's report cannot be replaced"
            ),
        ),
        Err(e) => {
            tracing::error!(
                "cannot store the report of {region} for run {id}: {}",
                chain(&e)
            );
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the server cannot store the report now; send it again later",
            )
        }
    }
}

/// Parses and checks a push; returns it with its report in the artifact layout (what
/// the stored file will hold), or the rejection reason and message.
type Parsed = (Push, Vec<u8>, Vec<std::ops::Range<usize>>);

fn parse(state: &State, bytes: &[u8]) -> Result<Parsed, (&'static str, String)> {
    let t0 = Instant::now();
    // UTF-8 checked once for the whole body, not string by string.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        (
            "malformed",
            format!("the body is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let push: Push = serde_json::from_str(text).map_err(|e| {
        (
            "malformed",
            format!("the body is not a latmap.push/1 envelope: {e}"),
        )
    })?;
    let t1 = Instant::now();
    push.validate(state.settings.known.as_deref(), state.newest_epoch())
        .map_err(|e| ("invalid", e))?;
    let t2 = Instant::now();
    let (out, ranges) = push
        .report
        .to_artifact()
        .map_err(|e| ("malformed", format!("the report cannot be stored: {e}")))?;
    tracing::debug!(
        "push of {}: {} bytes parsed in {:.1} ms, checked in {:.1} ms, laid out ({} bytes) in {:.1} ms",
        push.region,
        bytes.len(),
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        out.len(),
        t2.elapsed().as_secs_f64() * 1e3
    );
    Ok((push, out, ranges))
}
