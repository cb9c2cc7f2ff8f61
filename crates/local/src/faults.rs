//! Failure drills for the store: [`FaultyStore`] wraps a real store (DynamoDB on moto_server in the tests,
//! the embedded one in the bench) and injects what a throttled or slow table does, so the turn's retries,
//! dedupe and reporting are exercised through the real adapter. Nothing in production uses it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use mangaassist_core::error::StoreError;
use mangaassist_core::ids::{ConnectionId, MessageId, SessionId, UserId};
use mangaassist_core::ports::{Claim, ConnectionRecord, Counter, Store, Summary, TurnRecord};

/// What to inject.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreFaults {
    /// Probability that any write is refused as throttled (`ProvisionedThroughputExceededException`).
    pub write_throttle: f64,
    /// Added to every message claim before it is written.
    pub claim_delay: Duration,
    /// Added to every connection lookup (a slow or throttled table on the turn's path).
    pub lookup_delay: Duration,
}

/// A store with injected faults.
#[derive(Debug)]
pub struct FaultyStore<S> {
    pub inner: S,
    faults: Mutex<StoreFaults>,
    /// The next this-many `save_turn` calls are refused as throttled (deterministic drills).
    failing_saves: AtomicU32,
    injected: AtomicU64,
}

impl<S> FaultyStore<S> {
    pub fn new(inner: S, faults: StoreFaults) -> Self {
        Self { inner, faults: Mutex::new(faults), failing_saves: AtomicU32::new(0), injected: AtomicU64::new(0) }
    }

    pub fn set(&self, faults: StoreFaults) {
        if let Ok(mut f) = self.faults.lock() {
            *f = faults;
        }
    }

    /// Refuses the next `n` turn writes.
    pub fn fail_next_saves(&self, n: u32) {
        self.failing_saves.store(n, Ordering::Relaxed);
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    fn faults(&self) -> StoreFaults {
        self.faults.lock().map(|f| *f).unwrap_or_default()
    }

    fn throttled(&self) -> Result<(), StoreError> {
        let p = self.faults().write_throttle;
        if p > 0.0 && fastrand::f64() < p {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Throttled("injected: ProvisionedThroughputExceededException".into()));
        }
        Ok(())
    }
}

impl<S: Store> Store for FaultyStore<S> {
    async fn put_connection(&self, rec: &ConnectionRecord) -> Result<(), StoreError> {
        self.throttled()?;
        self.inner.put_connection(rec).await
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, StoreError> {
        let delay = self.faults().lookup_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.inner.get_connection(id).await
    }

    async fn delete_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.throttled()?;
        self.inner.delete_connection(id).await
    }

    async fn claim_message(&self, id: &MessageId, session: &SessionId, expires_at: u64) -> Result<Claim, StoreError> {
        let delay = self.faults().claim_delay;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.throttled()?;
        self.inner.claim_message(id, session, expires_at).await
    }

    async fn release_claim(&self, id: &MessageId, session: &SessionId) -> Result<(), StoreError> {
        self.throttled()?;
        self.inner.release_claim(id, session).await
    }

    async fn save_turn(&self, turn: &TurnRecord) -> Result<(), StoreError> {
        let forced =
            self.failing_saves.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok();
        if forced {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(StoreError::Throttled("injected: ProvisionedThroughputExceededException".into()));
        }
        self.throttled()?;
        self.inner.save_turn(turn).await
    }

    async fn get_summary(&self, session: &SessionId) -> Result<Option<Summary>, StoreError> {
        self.inner.get_summary(session).await
    }

    async fn put_summary(&self, session: &SessionId, summary: &Summary) -> Result<(), StoreError> {
        self.throttled()?;
        self.inner.put_summary(session, summary).await
    }

    async fn recent_turns(&self, session: &SessionId, limit: u32) -> Result<Vec<TurnRecord>, StoreError> {
        self.inner.recent_turns(session, limit).await
    }

    async fn session_owner(&self, session: &SessionId) -> Result<Option<UserId>, StoreError> {
        self.inner.session_owner(session).await
    }

    async fn create_session(&self, session: &SessionId, user: &UserId, expires_at: u64) -> Result<(), StoreError> {
        self.throttled()?;
        self.inner.create_session(session, user, expires_at).await
    }

    async fn begin_turn(
        &self,
        conn: &ConnectionId,
        msg: &MessageId,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        self.throttled()?;
        self.inner.begin_turn(conn, msg, now_ms, until_ms).await
    }

    async fn end_turn(&self, conn: &ConnectionId, msg: &MessageId) -> Result<(), StoreError> {
        self.throttled()?;
        self.inner.end_turn(conn, msg).await
    }

    async fn add_to_counter(
        &self,
        counter: &Counter,
        delta: i64,
        limit: Option<i64>,
        expires_at: u64,
    ) -> Result<Option<i64>, StoreError> {
        self.throttled()?;
        self.inner.add_to_counter(counter, delta, limit, expires_at).await
    }

    async fn counter(&self, counter: &Counter) -> Result<i64, StoreError> {
        self.inner.counter(counter).await
    }
}
