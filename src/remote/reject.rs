//! Why the aggregator refuses a push, in one place: each [`RejectReason`] gives the
//! HTTP status, the `reason` of the JSON body and the label of
//! `latmap_reports_rejected_total`, so the metric's label set is exactly this enum.
//!
//! A [`Refusal`] is one refusal: its reason and the sentence telling the client what
//! to change. This module knows nothing of the server's state; the server counts and
//! logs a refusal before answering with it.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// No, another or a wrong bearer token (`401`).
    Unauthorized,
    /// The body is larger than `--max-body` (`413`).
    TooLarge,
    /// The body is not declared as JSON (`415`).
    UnsupportedMediaType,
    /// The body is not a `latmap.push/1` envelope (`400`).
    Malformed,
    /// The envelope parses but a value is refused: a name, an epoch, a number (`400`).
    Invalid,
    /// Another report of the region is stored for the sweep (`409`).
    Conflict,
    /// The retention would delete the report at once (`410`).
    Expired,
    /// The memory budget for bodies is taken (`503` with `Retry-After`).
    Busy,
    /// The body did not arrive within `--body-timeout` (`408`).
    Timeout,
}

impl RejectReason {
    /// Every reason, in the order `/metrics` lists them.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Unauthorized,
        RejectReason::TooLarge,
        RejectReason::UnsupportedMediaType,
        RejectReason::Malformed,
        RejectReason::Invalid,
        RejectReason::Conflict,
        RejectReason::Expired,
        RejectReason::Busy,
        RejectReason::Timeout,
    ];

    /// The metric label and the JSON body's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::TooLarge => "too_large",
            RejectReason::UnsupportedMediaType => "unsupported_media_type",
            RejectReason::Malformed => "malformed",
            RejectReason::Invalid => "invalid",
            RejectReason::Conflict => "conflict",
            RejectReason::Expired => "expired",
            RejectReason::Busy => "busy",
            RejectReason::Timeout => "timeout",
        }
    }

    /// The status of the answer.
    pub fn status(self) -> StatusCode {
        match self {
            RejectReason::Unauthorized => StatusCode::UNAUTHORIZED,
            RejectReason::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            RejectReason::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RejectReason::Malformed | RejectReason::Invalid => StatusCode::BAD_REQUEST,
            RejectReason::Conflict => StatusCode::CONFLICT,
            RejectReason::Expired => StatusCode::GONE,
            RejectReason::Busy => StatusCode::SERVICE_UNAVAILABLE,
            RejectReason::Timeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EncodeLabelValue for RejectReason {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        encoder.write_str(self.as_str())
    }
}

/// The challenge of a `401`: `invalid_token` when a Bearer token was presented and is
/// wrong (RFC 6750 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Challenge {
    Bearer,
    InvalidToken,
}

/// One refused push: why, and what the client should change.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: RejectReason,
    pub message: String,
    /// `Retry-After` of a `503`.
    pub retry_after: Option<Duration>,
    /// `WWW-Authenticate` of a `401`.
    pub challenge: Option<Challenge>,
}

impl Refusal {
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            message: message.into(),
            retry_after: None,
            challenge: None,
        }
    }

    /// A `401` with its challenge.
    pub fn unauthorized(message: impl Into<String>, challenge: Challenge) -> Refusal {
        Refusal {
            challenge: Some(challenge),
            ..Refusal::new(RejectReason::Unauthorized, message)
        }
    }

    /// A `503` asking the client to come back after `retry_after`.
    pub fn busy(message: impl Into<String>, retry_after: Duration) -> Refusal {
        Refusal {
            retry_after: Some(retry_after),
            ..Refusal::new(RejectReason::Busy, message)
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "reason": self.reason.as_str() });
        let mut r = (self.reason.status(), axum::Json(body)).into_response();
        let h = r.headers_mut();
        if let Some(c) = self.challenge {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(match c {
                    Challenge::Bearer => "Bearer realm=\"latmap\"",
                    Challenge::InvalidToken => "Bearer realm=\"latmap\", error=\"invalid_token\"",
                }),
            );
        }
        if let Some(after) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            h.insert(header::RETRY_AFTER, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_label_and_a_client_error_or_503() {
        let labels: std::collections::BTreeSet<&str> =
            RejectReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), RejectReason::ALL.len());
        for r in RejectReason::ALL {
            let s = r.status();
            assert!(
                s.is_client_error() || s == StatusCode::SERVICE_UNAVAILABLE,
                "{r}: {s}"
            );
        }
    }
}
