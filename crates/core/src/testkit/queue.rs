//! A prefetch queue that keeps what it was handed.

use std::sync::Mutex;

use super::lock;
use crate::ahead::prefetch::{PrefetchJob, PrefetchQueue};
use crate::ports::sources::SourceError;

/// A `PrefetchQueue` that records its jobs (share it with `Arc`: the core implements the queue for
/// `Arc<Q>`).
#[derive(Debug, Default)]
pub struct RecordingQueue(Mutex<Vec<PrefetchJob>>);

impl RecordingQueue {
    pub fn new() -> Self {
        Self::default()
    }

    /// The jobs enqueued, in order.
    pub fn jobs(&self) -> Vec<PrefetchJob> {
        lock(&self.0).clone()
    }
}

impl PrefetchQueue for RecordingQueue {
    async fn enqueue(&self, job: &PrefetchJob) -> Result<(), SourceError> {
        lock(&self.0).push(job.clone());
        Ok(())
    }
}
