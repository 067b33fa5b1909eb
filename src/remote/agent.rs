//! The agent: one region's prober as a service. It sweeps on the schedule (never two
//! sweeps at once), files each report under the sweep's epoch, spools it and sends the
//! spool to the aggregator, oldest first, retrying with exponential backoff and full
//! jitter while the aggregator is unreachable; sweeping goes on meanwhile.
//!
//! Owns the sweep loop and the HTTP client side of the push protocol; it neither
//! aggregates nor analyses.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::RngExt;
use tokio::sync::Notify;

use super::Token;
use super::spool::{Spool, SpoolError};
use super::wire::{Push, REPORTS_PATH};
use crate::config::Config;
use crate::schedule::{Schedule, ScheduleError, Scheduler, run_dir_name};
use crate::sweep::{SweepError, probe_regions};

/// When the agent sweeps: the values a `[schedule]` table or the command line give.
#[derive(Debug, Clone)]
pub struct Cadence {
    pub schedule: Schedule,
    /// A random delay in `[0, jitter)` before each sweep (the report keeps its epoch).
    pub jitter: Duration,
    /// Stop after this many sweeps (and once their reports are delivered).
    pub sweeps: Option<u64>,
}

/// How the agent delivers.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The aggregator's base URL, e.g. `https://latmap.example.net`.
    pub aggregator: String,
    pub token: Token,
    /// First retry delay and the cap of the exponential backoff.
    pub backoff_start: Duration,
    pub backoff_max: Duration,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Sweep(#[from] SweepError),
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("{0:?} is not an http:// or https:// URL")]
    Url(String),
}

/// What happened to one attempt to deliver a push.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// 2xx: the aggregator has it.
    Acknowledged,
    /// A 4xx other than 408 and 429: sending it again cannot help.
    Rejected(String),
    /// 5xx, 408, 429 or no answer: try again later; after the delay the server asked
    /// for (`Retry-After` of a 503 or 429), if it did.
    Retry(String, Option<Duration>),
}

/// Sends pushes to the aggregator.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    url: String,
    token: Token,
}

impl Sender {
    pub fn new(delivery: &Delivery) -> Result<Sender, AgentError> {
        let base = delivery.aggregator.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(AgentError::Url(delivery.aggregator.clone()));
        }
        let client = super::http_client(
            delivery.request_timeout,
            concat!("latmap-agent/", env!("CARGO_PKG_VERSION")),
        )
        .map_err(|e| AgentError::Client(e.to_string()))?;
        Ok(Sender {
            client,
            url: format!("{base}{REPORTS_PATH}"),
            token: delivery.token.clone(),
        })
    }

    /// One attempt to deliver `body` (a push as JSON).
    pub async fn send(&self, body: Vec<u8>) -> Outcome {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => return Outcome::Retry(error_chain(&e), None),
        };
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let text: String = text.trim().chars().take(2000).collect();
        let reason = format!("{status}: {text}");
        if status.is_success() {
            Outcome::Acknowledged
        } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
            Outcome::Rejected(reason)
        } else {
            Outcome::Retry(reason, retry_after)
        }
    }
}

/// The delay of a `Retry-After` header given in seconds (RFC 9110 section 10.2.3; an
/// HTTP date is not used by latmap's server and is ignored), at most an hour.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs.min(3600)))
}

/// Logs at most once per period, counting what it kept quiet.
struct Quiet {
    period: Duration,
    last: Option<std::time::Instant>,
    held: u64,
}

impl Quiet {
    fn new(period: Duration) -> Quiet {
        Quiet {
            period,
            last: None,
            held: 0,
        }
    }

    /// Whether to log now; if so, how many were held back since the last time.
    fn ready(&mut self) -> Option<u64> {
        if self.last.is_some_and(|t| t.elapsed() < self.period) {
            self.held += 1;
            return None;
        }
        self.last = Some(std::time::Instant::now());
        Some(std::mem::take(&mut self.held))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The delay before retry number `attempt` (0-based): uniform in `[0, min(max, start·2^attempt))`.
pub fn backoff(attempt: u32, start: Duration, max: Duration) -> Duration {
    let ceiling = start
        .checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max);
    if ceiling.is_zero() {
        return ceiling;
    }
    rand::rng().random_range(Duration::ZERO..ceiling)
}

/// Runs the agent of region `index` until `cadence.sweeps` are swept and delivered, or
/// forever. Reports still spooled when it stops are sent by the next start.
pub async fn run(
    config: &Config,
    index: usize,
    cadence: &Cadence,
    spool: Spool,
    delivery: &Delivery,
    held: &HeldReports,
) -> Result<(), AgentError> {
    let sender = Sender::new(delivery)?;
    let wake = Arc::new(Notify::new());
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let deliver = tokio::spawn(deliver_loop(
        spool.clone(),
        sender,
        delivery.backoff_start,
        delivery.backoff_max,
        wake.clone(),
        done.clone(),
        held.clone(),
    ));
    let swept = sweep_loop(config, index, cadence, &spool, &wake, held).await;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    wake.notify_one();
    if let Err(e) = swept {
        deliver.abort();
        return Err(e);
    }
    match deliver.await {
        Ok(result) => result,
        Err(e) => Err(AgentError::Client(format!(
            "the delivery task stopped: {e}"
        ))),
    }
}

async fn sweep_loop(
    config: &Config,
    index: usize,
    cadence: &Cadence,
    spool: &Spool,
    wake: &Notify,
    held: &HeldReports,
) -> Result<(), AgentError> {
    let region = &config.regions[index].name;
    let mut scheduler = Scheduler::new(cadence.schedule.clone(), cadence.jitter)?;
    let mut n = 0u64;
    while cadence.sweeps.is_none_or(|max| n < max) {
        let slot = scheduler.next(Utc::now())?;
        if let Some(skipped) = slot.skipped {
            tracing::warn!(
                "the sweep of {} ran past the next epoch; skipping {} epoch(s), from {} to {}",
                run_dir_name(skipped.after),
                skipped.count,
                run_dir_name(skipped.first),
                run_dir_name(slot.epoch)
            );
        }
        let epoch = slot.epoch;
        let wait = slot.wait(Utc::now());
        tracing::info!(
            "next sweep: epoch {} in {:.1} s",
            run_dir_name(epoch),
            wait.as_secs_f64()
        );
        // Wait for the epoch, trying meanwhile to spool what a full disk held back.
        let until = tokio::time::Instant::now() + wait;
        loop {
            held.flush(spool, wake);
            let now = tokio::time::Instant::now();
            if now >= until {
                break;
            }
            let step = if held.is_empty() {
                until - now
            } else {
                (until - now).min(SPOOL_RETRY)
            };
            tokio::time::sleep(step).await;
        }
        let reports = probe_regions(config, &[index], None, |_| {}).await?;
        for report in reports {
            held.add(Push::new(epoch, report));
        }
        held.flush(spool, wake);
        // Delivered from memory if the spool refuses it.
        wake.notify_one();
        tracing::info!("{region}: report of epoch {} done", run_dir_name(epoch));
        n += 1;
    }
    // The last reports, if a full disk still holds them back (the delivery sends
    // them from memory meanwhile).
    while !held.is_empty() {
        tokio::time::sleep(SPOOL_RETRY).await;
        held.flush(spool, wake);
    }
    Ok(())
}

/// How often reports a full spool disk held back are tried again.
const SPOOL_RETRY: Duration = Duration::from_secs(10);

/// Reports that could not be written to the spool (a full or failing disk), kept in
/// memory, oldest first: written as soon as the disk takes them, and meanwhile sent
/// from memory when the spool has nothing older to send. Bounded like the spool;
/// failures are logged once a minute. Shared by the sweeps, the delivery and the
/// command, which says at a stop how many are lost with the process.
#[derive(Clone)]
pub struct HeldReports(Arc<std::sync::Mutex<Held>>);

impl HeldReports {
    /// At most `max` reports (the spool's bound).
    pub fn new(max: usize) -> HeldReports {
        HeldReports(Arc::new(std::sync::Mutex::new(Held::new(max))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many reports are held in memory.
    pub fn len(&self) -> usize {
        self.lock().pushes.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn add(&self, push: Push) {
        self.lock().add(push);
    }

    /// Spools what it holds, oldest first, until the disk refuses.
    pub fn flush(&self, spool: &Spool, wake: &Notify) {
        self.lock().flush(spool, wake);
    }

    /// The oldest report held, to send from memory.
    fn oldest(&self) -> Option<Push> {
        self.lock().pushes.front().cloned()
    }

    /// Forgets the report of `push`'s run and region (delivered, or refused).
    fn forget(&self, push: &Push) {
        let mut h = self.lock();
        if let Some(i) = h
            .pushes
            .iter()
            .position(|p| p.epoch == push.epoch && p.region == push.region)
        {
            h.pushes.remove(i);
        }
    }
}

struct Held {
    pushes: std::collections::VecDeque<Push>,
    max: usize,
    quiet: Quiet,
}

impl Held {
    fn new(max: usize) -> Held {
        Held {
            pushes: std::collections::VecDeque::new(),
            max: max.max(1),
            quiet: Quiet::new(Duration::from_secs(60)),
        }
    }

    fn add(&mut self, push: Push) {
        self.pushes.push_back(push);
        while self.pushes.len() > self.max {
            if let Some(p) = self.pushes.pop_front() {
                tracing::error!(
                    "{} reports are held back by the spool disk: dropped the oldest, of epoch {}",
                    self.max,
                    run_dir_name(p.epoch)
                );
            }
        }
    }

    /// Spools what it holds, oldest first, until the disk refuses.
    fn flush(&mut self, spool: &Spool, wake: &Notify) {
        let mut spooled = false;
        while let Some(push) = self.pushes.front() {
            match spool.put(push) {
                Ok(evicted) => {
                    for e in evicted {
                        tracing::warn!(
                            "spool full ({}): evicted the oldest unsent report {e}",
                            spool.dir().display()
                        );
                    }
                    self.pushes.pop_front();
                    spooled = true;
                }
                Err(e) => {
                    if let Some(quiet) = self.quiet.ready() {
                        tracing::error!(
                            "cannot write to the spool ({}); {} report(s) held in memory and tried again every {} s, the spooled ones kept{}",
                            error_chain(&e),
                            self.pushes.len(),
                            SPOOL_RETRY.as_secs(),
                            if quiet > 0 {
                                format!(" ({quiet} more failures since the last message)")
                            } else {
                                String::new()
                            }
                        );
                    }
                    break;
                }
            }
        }
        if spooled {
            if self.pushes.is_empty() && self.quiet.last.is_some() {
                tracing::info!("the spool takes reports again; nothing is held back");
                self.quiet = Quiet::new(self.quiet.period);
            }
            wake.notify_one();
        }
    }
}

async fn deliver_loop(
    spool: Spool,
    sender: Sender,
    start: Duration,
    max: Duration,
    wake: Arc<Notify>,
    done: Arc<std::sync::atomic::AtomicBool>,
    held: HeldReports,
) -> Result<(), AgentError> {
    let mut attempt = 0u32;
    let mut quiet = Quiet::new(Duration::from_secs(60));
    loop {
        // Read `done` before listing the spool: a sweep that finished after this line
        // has notified `wake`, so the wait below cannot miss it.
        let finished = done.load(std::sync::atomic::Ordering::SeqCst);
        let pending = match spool.pending() {
            Ok(p) => p,
            Err(e) => {
                if quiet.ready().is_some() {
                    tracing::error!("cannot list the spool: {}; trying again", error_chain(&e));
                }
                tokio::time::sleep(backoff(attempt, start, max).max(Duration::from_secs(1))).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        let Some(path) = pending.into_iter().next() else {
            // Nothing older on disk: what a full spool disk held back goes from memory.
            if let Some(push) = held.oldest() {
                attempt = deliver_held(&push, &sender, &held, attempt, start, max).await;
                continue;
            }
            if finished {
                return Ok(());
            }
            wake.notified().await;
            continue;
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let body = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot read the spooled report {name}: {e}");
                tokio::time::sleep(backoff(attempt, start, max)).await;
                attempt = attempt.saturating_add(1);
                continue;
            }
        };
        if let Err(e) = spool.read(&path) {
            match spool.reject(&path, &e.to_string()) {
                Ok(to) => tracing::error!("{e}; moved to {}", to.display()),
                Err(r) => {
                    tracing::error!("{e}; and it cannot be set aside: {}", error_chain(&r));
                    tokio::time::sleep(backoff(attempt, start, max)).await;
                    attempt = attempt.saturating_add(1);
                }
            }
            continue;
        }
        let started = std::time::Instant::now();
        match sender.send(body).await {
            Outcome::Acknowledged => {
                if let Err(e) = spool.ack(&path) {
                    // Sent again later: the aggregator answers a resend as a duplicate.
                    tracing::error!("cannot delete the delivered {name}: {}", error_chain(&e));
                }
                attempt = 0;
                tracing::info!(
                    "delivered {name} in {:.0} ms",
                    started.elapsed().as_secs_f64() * 1e3
                );
            }
            Outcome::Rejected(reason) => match spool.reject(&path, &reason) {
                Ok(to) => tracing::error!(
                    "the aggregator refused {name} ({reason}); kept in {} and not sent again",
                    to.display()
                ),
                Err(e) => {
                    tracing::error!(
                        "the aggregator refused {name} ({reason}) and it cannot be set aside: {}",
                        error_chain(&e)
                    );
                    tokio::time::sleep(backoff(attempt, start, max)).await;
                    attempt = attempt.saturating_add(1);
                }
            },
            Outcome::Retry(reason, asked) => {
                let delay = retry_delay(asked, attempt, start, max);
                tracing::warn!(
                    "cannot deliver {name} ({reason}); retrying in {:.1} s",
                    delay.as_secs_f64()
                );
                attempt = attempt.saturating_add(1);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The wait before sending again after a retryable answer: the server's
/// `Retry-After` (a busy server) with a little jitter, else the backoff.
fn retry_delay(asked: Option<Duration>, attempt: u32, start: Duration, max: Duration) -> Duration {
    match asked {
        Some(d) => d.min(max) + backoff(0, Duration::from_secs(1), max),
        None => backoff(attempt, start, max),
    }
}

/// Sends `push`, the oldest report a full spool disk held in memory, once; forgets it
/// when acknowledged or refused, waits before a retry. Returns the next attempt's
/// number.
async fn deliver_held(
    push: &Push,
    sender: &Sender,
    held: &HeldReports,
    attempt: u32,
    start: Duration,
    max: Duration,
) -> u32 {
    let name = format!("{}-{}", push.run_id(), push.region);
    let body = match serde_json::to_vec(push) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("cannot encode {name} ({e}); it is dropped");
            held.forget(push);
            return attempt;
        }
    };
    match sender.send(body).await {
        Outcome::Acknowledged => {
            held.forget(push);
            tracing::info!("delivered {name} from memory (the spool disk refused it)");
            0
        }
        Outcome::Rejected(reason) => {
            held.forget(push);
            tracing::error!(
                "the aggregator refused {name} ({reason}); it was held in memory, as the spool disk refused it, and is dropped"
            );
            attempt
        }
        Outcome::Retry(reason, asked) => {
            let delay = retry_delay(asked, attempt, start, max);
            tracing::warn!(
                "cannot deliver {name} from memory ({reason}); retrying in {:.1} s",
                delay.as_secs_f64()
            );
            tokio::time::sleep(delay).await;
            attempt.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_cap() {
        let s = Duration::from_secs(1);
        let m = Duration::from_secs(300);
        for _ in 0..200 {
            assert!(backoff(0, s, m) < s);
            assert!(backoff(3, s, m) < Duration::from_secs(8));
            assert!(backoff(40, s, m) < m);
        }
        // Full jitter: the delays spread over the whole range.
        let big = (0..200)
            .filter(|_| backoff(20, s, m) > Duration::from_secs(150))
            .count();
        assert!((40..=160).contains(&big), "{big}");
        assert_eq!(backoff(5, Duration::ZERO, m), Duration::ZERO);
    }
}
