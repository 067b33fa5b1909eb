//! The server's connections: accepting them, bounding them and closing them.
//!
//! - At most `max_connections` are served at once; past that a connection gets a
//!   `503` with `Retry-After` and is closed (and past a further quarter, it is closed
//!   at once), so a flood of clients cannot take the file descriptors that health
//!   checks and pushes need.
//! - A request's head must arrive within the header timeout, counted from the
//!   connection's start or the end of the previous request (hyper's timer); the
//!   push handler bounds the body; a connection on which no byte moves either way
//!   for the idle timeout while no request is being handled is closed (an idle
//!   keep-alive connection, or a client that does not read its answer).
//! - Shutdown is graceful and bounded: listening stops, connections finish the
//!   request in hand (idle ones close at once), and whatever is left after the
//!   shutdown timeout is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::Limits;

/// Serves `app` on `listener` until `shutdown` completes, then shuts down within
/// `limits.shutdown_timeout`.
pub(super) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let overflow = Arc::new(AtomicUsize::new(0));
    let max_overflow = limits.max_connections / 4 + 16;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let warned = Mutex::new(None::<Instant>);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (EMFILE) and the like: wait a little
                // rather than spin; connections closing will free some.
                rate_limited(&warned, || {
                    tracing::warn!("cannot accept a connection: {e}")
                });
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let app = app.clone();
                let stop = stop_rx.clone();
                tasks.spawn(async move {
                    connection(stream, peer, app, limits, stop).await;
                    drop(permit);
                });
            }
            Err(_) if overflow.load(Ordering::Relaxed) < max_overflow => {
                rate_limited(&warned, || {
                    tracing::warn!(
                        "{} connections are open (--max-connections): answering 503 to new ones",
                        limits.max_connections
                    )
                });
                let overflow = overflow.clone();
                overflow.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    busy(stream, limits.retry_after).await;
                    overflow.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Err(_) => drop(stream),
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(limits.shutdown_timeout);
    tokio::pin!(deadline);
    let open = tasks.len();
    loop {
        tokio::select! {
            _ = &mut deadline => {
                tracing::warn!(
                    "{} connection(s) still open {:.0} s after the shutdown began; closing them",
                    tasks.len(),
                    limits.shutdown_timeout.as_secs_f64()
                );
                tasks.abort_all();
                break;
            }
            next = tasks.join_next() => if next.is_none() { break },
        }
    }
    tracing::info!("shut down: {open} connection(s) were open");
}

/// Runs `log` at most once every ten seconds.
fn rate_limited(last: &Mutex<Option<Instant>>, log: impl FnOnce()) {
    let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
        *last = Some(Instant::now());
        log();
    }
}

/// When bytes last moved on a connection, and whether a request is being handled.
#[derive(Default)]
struct Activity {
    /// Milliseconds since `start`.
    last: AtomicU64,
    busy: AtomicUsize,
}

/// One served connection.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let start = Instant::now();
    let activity = Arc::new(Activity::default());
    let io = TokioIo::new(Watched {
        inner: stream,
        start,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            let handling = Handling::new(activity.clone());
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await;
                drop(handling);
                response
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let mut stopping = *stop.borrow();
    if stopping {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = idle(&activity, start, limits.idle_timeout) => {
                tracing::debug!("closing the idle connection of {peer}");
                return;
            }
        }
    }
}

/// Completes once nothing moved for `timeout` while no request was being handled.
async fn idle(activity: &Activity, start: Instant, timeout: Duration) {
    loop {
        let last = Duration::from_millis(activity.last.load(Ordering::Relaxed));
        let quiet = start.elapsed().saturating_sub(last);
        if quiet >= timeout && activity.busy.load(Ordering::Relaxed) == 0 {
            return;
        }
        tokio::time::sleep(
            timeout
                .saturating_sub(quiet)
                .max(Duration::from_millis(100)),
        )
        .await;
    }
}

/// Marks a connection busy while a request is handled.
struct Handling(Arc<Activity>);

impl Handling {
    fn new(a: Arc<Activity>) -> Handling {
        a.busy.fetch_add(1, Ordering::Relaxed);
        Handling(a)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection past the limit: every request gets `503` with `Retry-After`, then the
/// connection closes; it may take a few seconds at most.
async fn busy(stream: TcpStream, retry_after: Duration) {
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
        Ok::<_, Infallible>(unavailable(
            retry_after,
            "the server has too many connections open; try again after Retry-After seconds",
        ))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(2))
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
}

/// A `503 Service Unavailable` with `Retry-After` and a JSON reason.
pub(super) fn unavailable(retry_after: Duration, reason: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": reason }).to_string();
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
        h.insert(header::RETRY_AFTER, v);
    }
    r
}

/// A TCP stream that notes when bytes move.
struct Watched {
    inner: TcpStream,
    start: Instant,
    activity: Arc<Activity>,
}

impl Watched {
    fn touch(&self) {
        self.activity
            .last
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
