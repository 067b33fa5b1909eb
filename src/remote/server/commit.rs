//! Group commit: one thread stores the accepted reports in batches. Every report
//! waiting when a batch starts joins it; the batch is written, synced and renamed
//! into place together, its folders synced once, and only then is each push
//! answered. Under load a batch holds many reports for the cost of one, so the
//! acknowledgement rate grows with the load instead of being one fsync at a time;
//! nothing is acknowledged before it is on disk.

use std::sync::Arc;
use std::time::Instant;

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};

use tokio::sync::oneshot;

use super::super::store::{Pending, Put, StoreError};
use super::State;

/// The most reports in one batch.
const MAX_BATCH: usize = 1024;

/// The most bytes in one batch.
const MAX_BATCH_BYTES: usize = 64 << 20;

/// One report to store, and where to send the outcome.
pub(super) struct Job {
    pub id: String,
    pub region: String,
    /// The report in the artifact layout: what the file will hold.
    pub bytes: Vec<u8>,
    pub reply: oneshot::Sender<Result<Put, StoreError>>,
}

/// The committer's loop; returns when the server stops and nothing is left to store.
pub(super) fn committer(state: Arc<State>, rx: Receiver<Job>) {
    loop {
        let first = match rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) if state.stopping.load(Ordering::SeqCst) => return,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].bytes.len();
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.bytes.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let started = Instant::now();
        let results = {
            // Retention takes this lock while it deletes, so a report cannot be
            // stored into a run being deleted.
            let _guard = state.write.lock().unwrap_or_else(|p| p.into_inner());
            let pending: Vec<Pending<'_>> = batch
                .iter()
                .map(|j| Pending {
                    id: &j.id,
                    region: &j.region,
                    bytes: &j.bytes,
                })
                .collect();
            state.store.commit(&pending)
        };
        tracing::debug!(
            "stored a batch of {} report(s), {} bytes, in {:.1} ms",
            batch.len(),
            bytes,
            started.elapsed().as_secs_f64() * 1e3
        );
        for (job, result) in batch.into_iter().zip(results) {
            // A push whose client went away is stored all the same.
            let _ = job.reply.send(result);
        }
    }
}
