//! Gates for the heavy reads: drawing a run (its heatmap, its page, its Markdown
//! report), reading the history for a page, and rendering `/metrics`. A 1,000-region
//! run takes a core for seconds and more than a GiB to draw, and anyone who can reach
//! the server may ask for it (reads need no token unless `--auth-reads`): without a
//! bound, a few dozen requests at once would take all the memory. A gate lets a fixed
//! number through at once and a bounded line wait; past the line a request is
//! answered `503` with `Retry-After` at once, holding nothing.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How many requests may wait in line per request let through at once.
pub(crate) const WAITING_PER_SLOT: usize = 8;

pub(super) struct Gate {
    /// What passes through (`--max-drawings` for the drawings).
    what: &'static str,
    slots: Arc<Semaphore>,
    at_once: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// Leaves the line when dropped, also when the client went away while waiting.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gate {
    /// A gate letting `at_once` through (at least 1) and `WAITING_PER_SLOT` times as
    /// many wait.
    pub(super) fn new(what: &'static str, at_once: usize) -> Gate {
        let at_once = at_once.max(1);
        Gate {
            what,
            slots: Arc::new(Semaphore::new(at_once)),
            at_once,
            waiting: AtomicUsize::new(0),
            max_waiting: at_once.saturating_mul(WAITING_PER_SLOT),
        }
    }

    /// A slot, waited for in line; `None` when the line is full.
    pub(super) async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.slots.clone().try_acquire_owned() {
            return Some(p);
        }
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _line = InLine(&self.waiting);
        if ahead >= self.max_waiting {
            return None;
        }
        self.slots.clone().acquire_owned().await.ok()
    }

    /// A slot, or the `503` that says the line is full.
    #[allow(clippy::result_large_err)]
    pub(super) async fn pass(
        &self,
        retry_after: Duration,
    ) -> Result<OwnedSemaphorePermit, Response> {
        match self.enter().await {
            Some(p) => Ok(p),
            None => {
                tracing::warn!(
                    "answered 503 to a read: {} {} at once and {} waiting already",
                    self.at_once,
                    self.what,
                    self.max_waiting
                );
                Err(super::http::unavailable(
                    retry_after,
                    &format!(
                        "the server is busy with {} {} at once (--max-drawings) and {} more waiting; try again after Retry-After seconds",
                        self.at_once, self.what, self.max_waiting
                    ),
                ))
            }
        }
    }
}

/// The pieces an answer is sent in.
const CHUNK: usize = 64 << 10;

/// The slowest a heavy answer may be read, past its first `within`, in bytes per
/// second (1 MiB/s: a 155 MB page of a 1,000-region run gets 60 s + 148 s).
const MIN_RATE: f64 = (1 << 20) as f64;

/// Runs `answer` through `gate`: waits for a slot (or answers `503`), and keeps the
/// slot until the answer has been sent whole, so that the gate bounds the memory of
/// the answers on their way out too. A client that has not read the answer within
/// `within` and a second per MiB is cut off (a slow reader would otherwise hold the
/// slot for good).
pub(super) async fn gated(
    gate: &Gate,
    retry_after: Duration,
    within: Duration,
    answer: impl Future<Output = Response>,
) -> Response {
    let permit = match gate.pass(retry_after).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (mut parts, body) = answer.await.into_parts();
    // The answer is whole in memory already (a drawing, a page): this takes it out.
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return super::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the answer could not be made",
        );
    };
    if let Ok(len) = HeaderValue::from_str(&bytes.len().to_string()) {
        parts.headers.insert(header::CONTENT_LENGTH, len);
    }
    // A large answer gets longer: `within`, and one second per MIN_RATE bytes.
    let deadline = Instant::now() + within + Duration::from_secs_f64(bytes.len() as f64 / MIN_RATE);
    let stream = futures_util::stream::unfold(
        (bytes, Some(permit)),
        move |(mut rest, permit)| async move {
            // Sent whole (or cut off): the slot is given back with the state.
            let permit = permit?;
            if rest.is_empty() {
                return None;
            }
            if Instant::now() > deadline {
                let late = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the answer was not read in time",
                );
                return Some((Err(late), (Bytes::new(), None)));
            }
            let chunk = rest.split_to(rest.len().min(CHUNK));
            Some((Ok::<_, std::io::Error>(chunk), (rest, Some(permit))))
        },
    );
    Response::from_parts(parts, Body::from_stream(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gate_lets_its_slots_through_and_a_bounded_line_wait() {
        let gate = Arc::new(Gate::new("drawings", 1));
        let in_line = |n: usize| {
            let gate = gate.clone();
            async move {
                while gate.waiting.load(Ordering::SeqCst) != n {
                    tokio::task::yield_now().await;
                }
            }
        };
        let first = gate.enter().await.expect("a free slot");
        // The line fills up to its bound; the next request is turned away at once.
        let mut waiting: Vec<_> = (0..WAITING_PER_SLOT)
            .map(|_| {
                let g = gate.clone();
                tokio::spawn(async move { g.enter().await.is_some() })
            })
            .collect();
        in_line(WAITING_PER_SLOT).await;
        assert!(gate.enter().await.is_none(), "the line is full");
        assert_eq!(gate.waiting.load(Ordering::SeqCst), WAITING_PER_SLOT);
        // A waiter that gives up (its client went away) leaves the line, and its
        // place can be taken.
        let quitter = waiting.remove(0);
        quitter.abort();
        assert!(quitter.await.is_err(), "cancelled while waiting");
        in_line(WAITING_PER_SLOT - 1).await;
        let g = gate.clone();
        waiting.push(tokio::spawn(async move { g.enter().await.is_some() }));
        in_line(WAITING_PER_SLOT).await;
        // Released, the slot goes to each waiter in turn.
        drop(first);
        for w in waiting {
            assert!(w.await.expect("waiter"));
        }
        assert_eq!(gate.waiting.load(Ordering::SeqCst), 0);
        assert!(gate.enter().await.is_some());
    }

    #[tokio::test]
    async fn the_slot_is_kept_until_the_answer_is_sent() {
        let gate = Gate::new("drawings", 1);
        let answer = async { Response::new(Body::from(vec![b'x'; 3 * CHUNK + 1])) };
        let r = gated(
            &gate,
            Duration::from_secs(2),
            Duration::from_secs(60),
            answer,
        )
        .await;
        assert_eq!(
            r.headers()[header::CONTENT_LENGTH],
            (3 * CHUNK + 1).to_string()
        );
        assert_eq!(
            gate.slots.available_permits(),
            0,
            "held while the answer is unsent"
        );
        let sent = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .expect("the body");
        assert_eq!(sent.len(), 3 * CHUNK + 1);
        assert_eq!(gate.slots.available_permits(), 1, "given back once sent");
        // An answer not read in time is cut off, and the slot given back.
        let answer = async { Response::new(Body::from(vec![b'x'; 10])) };
        let r = gated(&gate, Duration::from_secs(2), Duration::ZERO, answer).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(
            axum::body::to_bytes(r.into_body(), usize::MAX)
                .await
                .is_err()
        );
        assert_eq!(gate.slots.available_permits(), 1);
        // A client gone before its answer was sent gives the slot back too.
        let r = gated(
            &gate,
            Duration::from_secs(2),
            Duration::from_secs(60),
            async { Response::new(Body::from("x")) },
        )
        .await;
        drop(r);
        assert_eq!(gate.slots.available_permits(), 1);
    }
}
