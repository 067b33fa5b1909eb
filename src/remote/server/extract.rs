//! The checks a request passes before its handler runs, as axum extractors: the
//! bearer token ([`Authenticated`]), the JSON content type ([`JsonContent`]) and the
//! bounded body ([`LimitedBody`]: `--max-body`, the memory budget `--max-in-flight`,
//! `--body-timeout`). A handler names the ones it needs in its arguments, in that
//! order, and axum runs them in that order; each refusal is counted, logged and
//! answered with its [`Refusal`].
//!
//! Connection limits and header timeouts are not here: they are the connection's
//! (`http`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::sync::OwnedSemaphorePermit;

use super::State;
use crate::remote::Token;
use crate::remote::reject::{Challenge, Refusal, RejectReason};

/// The client's address (unspecified when the connection did not say).
fn peer(extensions: &axum::http::Extensions) -> SocketAddr {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0)
}

/// Checks the bearer token; the comparison takes the same time wherever it differs.
pub(super) fn check_token(headers: &HeaderMap, token: &Token) -> Result<(), Refusal> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(Refusal::unauthorized(
            "missing Authorization: Bearer TOKEN",
            Challenge::Bearer,
        ));
    };
    let value = value.as_bytes();
    let presented = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &value[7..],
        _ => {
            return Err(Refusal::unauthorized(
                "the Authorization scheme must be Bearer",
                Challenge::Bearer,
            ));
        }
    };
    if token.matches(presented) {
        Ok(())
    } else {
        Err(Refusal::unauthorized(
            "wrong token",
            Challenge::InvalidToken,
        ))
    }
}

/// A request that carries the server's bearer token (`401` otherwise, logged with
/// the peer's address and never the token).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Authenticated;

impl FromRequestParts<Arc<State>> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<State>,
    ) -> Result<Authenticated, Response> {
        match check_token(&parts.headers, &state.settings.token) {
            Ok(()) => Ok(Authenticated),
            Err(refusal) => {
                state.counters.reject(refusal.reason);
                state.log_unauthorized(peer(&parts.extensions), &parts.headers);
                Err(refusal.into_response())
            }
        }
    }
}

/// A request whose body is declared as JSON (`415` otherwise); a charset parameter
/// is allowed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonContent;

impl FromRequestParts<Arc<State>> for JsonContent {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<State>,
    ) -> Result<JsonContent, Response> {
        let json = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if json {
            Ok(JsonContent)
        } else {
            Err(state.refuse(
                peer(&parts.extensions),
                Refusal::new(
                    RejectReason::UnsupportedMediaType,
                    "the body must be JSON (Content-Type: application/json)",
                ),
            ))
        }
    }
}

/// A request body read whole, within `--max-body` (`413`), the memory budget of
/// bodies in flight (`503` with `Retry-After` when it is taken) and the body timeout
/// (`408`). Holds its share of the budget until dropped.
pub(crate) struct LimitedBody {
    pub bytes: Bytes,
    /// The body's share of `--max-in-flight`.
    pub permit: OwnedSemaphorePermit,
    pub peer: SocketAddr,
}

impl FromRequest<Arc<State>> for LimitedBody {
    type Rejection = Response;

    async fn from_request(req: Request, state: &Arc<State>) -> Result<LimitedBody, Response> {
        let peer = peer(req.extensions());
        let max = state.settings.max_body;
        let too_large = || {
            state.refuse(
                peer,
                Refusal::new(
                    RejectReason::TooLarge,
                    format!("the body exceeds the limit of {max} bytes (--max-body)"),
                ),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(too_large());
        }
        // The body's share of the budget: its declared length, or the largest allowed.
        let size = declared.map_or(max, |n| n as usize).max(1);
        let limits = state.settings.limits;
        let budget = limits.max_in_flight;
        let need = size.min(budget).min(u32::MAX as usize) as u32;
        let Ok(permit) = state.in_flight.clone().try_acquire_many_owned(need) else {
            state.counters.reject(RejectReason::Busy);
            tracing::warn!(
                "answered 503 to a push from {peer}: the pushes in flight take the memory budget (--max-in-flight {budget} bytes)"
            );
            return Err(Refusal::busy(
                "the server is handling as many pushes as its memory budget allows; send it again after Retry-After seconds",
                limits.retry_after,
            )
            .into_response());
        };
        let read = tokio::time::timeout(
            limits.body_timeout,
            axum::body::to_bytes(req.into_body(), max),
        )
        .await;
        match read {
            Ok(Ok(bytes)) => Ok(LimitedBody {
                bytes,
                permit,
                peer,
            }),
            Ok(Err(e)) if over_limit(&e) => Err(too_large()),
            // A broken chunk, or a body that ends before its declared length.
            Ok(Err(e)) => Err(state.refuse(
                peer,
                Refusal::new(
                    RejectReason::Malformed,
                    format!("the body could not be read: {e}; send it whole, as declared"),
                ),
            )),
            Err(_) => Err(state.refuse(
                peer,
                Refusal::new(
                    RejectReason::Timeout,
                    format!(
                        "the body did not arrive within {} s (--body-timeout)",
                        limits.body_timeout.as_secs()
                    ),
                ),
            )),
        }
    }
}

/// Whether reading a body failed because it passed its limit (not because it broke).
fn over_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// A route's parameters (`Path`), refused as every other request is: a status and
/// a JSON reason (`400` for `%FF` in an id), not the framework's plain text.
pub(super) struct Param<T>(pub T);

impl<T, S> FromRequestParts<S> for Param<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Param<T>, Response> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Param(v)),
            Err(e) => Err(super::error(e.status(), e.body_text())),
        }
    }
}

/// A request's query (`Query`), refused with a JSON reason like [`Param`].
pub(super) struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Params<T>, Response> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(e) => Err(super::error(e.status(), e.body_text())),
        }
    }
}
