//! The embedded prefetch worker. Locally the prefetch Lambda is emulated by a task: [`EmbeddedQueue`]
//! runs the core's [`Prefetcher`] in process on a tracked [`JoinSet`] (never a bare spawn), and
//! [`EmbeddedQueue::drain`] waits for the outstanding jobs, so tests and the bench can observe the cache
//! after the prefetch, and nothing is lost at shutdown. [`MemoryTransitions`] keeps the transition counts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use mangaassist_core::ahead::prefetch::{
    NoPregen, PrefetchJob, PrefetchQueue, PrefetchReport, Prefetcher, Pregenerate, TransitionStore,
};
use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::{ContextSources, SourceError};
use tokio::task::JoinSet;

fn poisoned() -> SourceError {
    SourceError::Other("embedded transition counts lock poisoned".into())
}

/// `TransitionStore` in memory: from -> to -> count.
#[derive(Debug, Default)]
pub struct MemoryTransitions {
    counts: Mutex<HashMap<Intent, HashMap<String, u64>>>,
}

impl TransitionStore for MemoryTransitions {
    async fn observe(&self, from: Intent, to: Intent) -> Result<(), SourceError> {
        let mut counts = self.counts.lock().map_err(|_| poisoned())?;
        *counts.entry(from).or_default().entry(to.as_str().to_owned()).or_default() += 1;
        Ok(())
    }

    async fn counts(&self, from: Intent) -> Result<HashMap<String, u64>, SourceError> {
        let counts = self.counts.lock().map_err(|_| poisoned())?;
        Ok(counts.get(&from).cloned().unwrap_or_default())
    }
}

/// `PrefetchQueue` that runs each job on a task of its own, tracked until [`Self::drain`].
#[derive(Debug)]
pub struct EmbeddedQueue<X, T, G = NoPregen> {
    prefetcher: Arc<Prefetcher<X, T, G>>,
    tasks: Mutex<JoinSet<PrefetchReport>>,
    /// Jobs handed over so far.
    enqueued: std::sync::atomic::AtomicU64,
}

impl<X, T, G> EmbeddedQueue<X, T, G>
where
    X: ContextSources + 'static,
    T: TransitionStore + 'static,
    G: Pregenerate + 'static,
{
    pub fn new(prefetcher: Prefetcher<X, T, G>) -> Self {
        Self { prefetcher: Arc::new(prefetcher), tasks: Mutex::new(JoinSet::new()), enqueued: Default::default() }
    }

    pub fn prefetcher(&self) -> &Prefetcher<X, T, G> {
        &self.prefetcher
    }

    /// Jobs handed over so far.
    pub fn enqueued(&self) -> u64 {
        self.enqueued.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits (up to `within`) until `jobs` jobs have been handed over in all, then drains. A turn hands its
    /// job over just after its `completed` event, so a caller that saw `completed` uses this, not
    /// [`Self::drain`], to be sure the job is there.
    pub async fn drain_after(&self, jobs: u64, within: std::time::Duration) -> Vec<PrefetchReport> {
        let deadline = tokio::time::Instant::now() + within;
        while self.enqueued() < jobs && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        self.drain().await
    }

    /// Waits for every job enqueued so far and returns their reports, in completion order. Each job is
    /// bounded by the prefetcher's own timeout, so this is too.
    pub async fn drain(&self) -> Vec<PrefetchReport> {
        let mut reports = Vec::new();
        loop {
            // Take the set out of the lock so no guard is held across an await; jobs enqueued meanwhile land
            // in the fresh set and are picked up by the next round.
            let mut tasks = match self.tasks.lock() {
                Ok(mut t) => std::mem::take(&mut *t),
                Err(_) => return reports,
            };
            if tasks.is_empty() {
                return reports;
            }
            while let Some(res) = tasks.join_next().await {
                match res {
                    Ok(r) => reports.push(r),
                    Err(e) => tracing::error!(error = %e, "prefetch task failed"),
                }
            }
        }
    }
}

impl<X, T, G> PrefetchQueue for EmbeddedQueue<X, T, G>
where
    X: ContextSources + 'static,
    T: TransitionStore + 'static,
    G: Pregenerate + 'static,
{
    async fn enqueue(&self, job: &PrefetchJob) -> Result<(), SourceError> {
        let prefetcher = Arc::clone(&self.prefetcher);
        let job = job.clone();
        let mut tasks = self.tasks.lock().map_err(|_| SourceError::Other("prefetch task set lock poisoned".into()))?;
        // Reap finished jobs so a long-running server does not accumulate their results.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move { prefetcher.run(&job).await });
        self.enqueued.fetch_add(1, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mangaassist_core::ahead::prefetch::PrefetchConfig;
    use mangaassist_core::ports::sources::NoSources;

    #[tokio::test]
    async fn transitions_are_counted_per_origin() {
        let t = MemoryTransitions::default();
        let (a, b, c) = (Intent::Recommendation, Intent::ProductQuestion, Intent::Faq);
        t.observe(a, b).await.unwrap();
        t.observe(a, b).await.unwrap();
        t.observe(a, c).await.unwrap();
        let n = t.counts(a).await.unwrap();
        assert_eq!((n["product_question"], n["faq"]), (2, 1));
        assert!(t.counts(b).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn drain_waits_for_every_enqueued_job() {
        let q = EmbeddedQueue::new(Prefetcher::new(NoSources, MemoryTransitions::default(), PrefetchConfig::default()));
        for id in ["m1", "m2"] {
            let job = PrefetchJob {
                session_id: mangaassist_core::ids::SessionId::parse("s").unwrap(),
                user_id: mangaassist_core::ids::UserId::parse("u").unwrap(),
                guest: false,
                message_id: mangaassist_core::ids::MessageId::parse(id).unwrap(),
                previous_intent: Some(Intent::ProductQuestion),
                intent: Intent::Recommendation,
                products: vec![mangaassist_core::ids::Asin::parse("B0AAAAAAA1").unwrap()],
                page_context: Default::default(),
                history: Vec::new(),
                summary: None,
                previous_products: Vec::new(),
                pregenerated: false,
            };
            q.enqueue(&job).await.unwrap();
        }
        let reports = q.drain().await;
        assert_eq!(reports.len(), 2);
        assert!(q.drain().await.is_empty());
        assert_eq!(q.prefetcher().transitions().counts(Intent::ProductQuestion).await.unwrap()["recommendation"], 2);
    }
}
