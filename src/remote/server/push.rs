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

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State as AxumState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;

use super::super::store::{Put, chain};
use super::super::wire::{Ack, Push};
use super::assemble::{Digest, Stored};
use super::commit::Job;
use super::extract::{Authenticated, JsonContent, LimitedBody};
use super::{State, error};
use crate::remote::reject::{Refusal, RejectReason};

pub(super) async fn push(
    AxumState(state): AxumState<Arc<State>>,
    _: Authenticated,
    _: JsonContent,
    body: LimitedBody,
) -> Response {
    let LimitedBody {
        bytes,
        permit,
        peer,
    } = body;
    let refuse =
        |reason: RejectReason, message: String| state.refuse(peer, Refusal::new(reason, message));
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
    let Parsed {
        id,
        epoch,
        region,
        bytes: stored_bytes,
        ranges,
        digest,
    } = match checked {
        Ok(Ok(p)) => p,
        Ok(Err((reason, message))) => return refuse(reason, message),
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
    if let Some(message) = state.retention_refuses(&id, epoch) {
        return refuse(RejectReason::Expired, message);
    }
    let fleet: Vec<String> = digest.fleet();
    let (reply, answer) = oneshot::channel();
    let started = Instant::now();
    let job = Job {
        id: id.clone(),
        region: region.clone(),
        bytes: stored_bytes,
        reply,
    };
    if state.commit.send(job).is_err() {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping; send the report again later",
        );
    }
    let Ok(result) = answer.await else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is stopping; send the report again later",
        );
    };
    drop(permit);
    match result {
        Ok(Put::Stored) => {
            state.counters.received.inc();
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
                    digest,
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
            state.counters.duplicates.inc();
            let body = Ack {
                status: "duplicate".into(),
                run: id,
                region,
            };
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Ok(Put::Conflict) => refuse(
            RejectReason::Conflict,
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

/// A push parsed and checked.
struct Parsed {
    /// Its run.
    id: String,
    epoch: chrono::DateTime<chrono::Utc>,
    region: String,
    /// Its report in the artifact layout: what the stored file will hold.
    bytes: Vec<u8>,
    /// Where each path's text is in `bytes`.
    ranges: Vec<std::ops::Range<usize>>,
    /// What the assembler needs of the report.
    digest: Digest,
}

/// Parses and checks a push; or the rejection reason and message.
fn parse(state: &State, bytes: &[u8]) -> Result<Parsed, (RejectReason, String)> {
    let t0 = Instant::now();
    // UTF-8 checked once for the whole body, not string by string.
    let text = std::str::from_utf8(bytes).map_err(|e| {
        (
            RejectReason::Malformed,
            format!("the body is not UTF-8 (at byte {})", e.valid_up_to()),
        )
    })?;
    let push: Push = serde_json::from_str(text).map_err(|e| {
        (
            RejectReason::Malformed,
            format!("the body is not a latmap.push/1 envelope: {e}"),
        )
    })?;
    let t1 = Instant::now();
    push.validate(state.settings.known.as_deref(), state.newest_epoch())
        .map_err(|e| (RejectReason::Invalid, e))?;
    let t2 = Instant::now();
    let (out, ranges) = push.report.to_artifact().map_err(|e| {
        (
            RejectReason::Malformed,
            format!("the report cannot be stored: {e}"),
        )
    })?;
    tracing::debug!(
        "push of {}: {} bytes parsed in {:.1} ms, checked in {:.1} ms, laid out ({} bytes) in {:.1} ms",
        push.region,
        bytes.len(),
        (t1 - t0).as_secs_f64() * 1e3,
        (t2 - t1).as_secs_f64() * 1e3,
        out.len(),
        t2.elapsed().as_secs_f64() * 1e3
    );
    Ok(Parsed {
        id: push.run_id(),
        epoch: push.epoch,
        region: push.region,
        bytes: out,
        ranges,
        digest: Digest::of(push.report),
    })
}
