//! Pre-generation within the user's day: [`Budgeted`] runs another [`Pregenerate`] only for a user with
//! tokens left today, and counts what it spent against their day (a turn served from the answer later
//! reports those tokens but does not count them again).

use super::{PrefetchJob, PregenReport, Pregenerate};
use crate::admit::limits::TokenLedger;
use crate::ports::sources::ContextSources;

/// `inner`, within `ledger`'s day of the job's user.
#[derive(Debug)]
pub struct Budgeted<G, L> {
    pub inner: G,
    pub ledger: L,
}

impl<G: Pregenerate, L: TokenLedger> Pregenerate for Budgeted<G, L> {
    async fn pregenerate<X: ContextSources>(&self, sources: &X, job: &PrefetchJob) -> PregenReport {
        if !self.ledger.has_tokens_left(&job.user_id, job.guest).await {
            tracing::info!(user_id = %job.user_id, "no tokens left today: nothing pre-generated");
            return PregenReport { errors: vec!["budget: no tokens left today".to_owned()], ..PregenReport::default() };
        }
        let report = self.inner.pregenerate(sources, job).await;
        let spent = u64::from(report.input_tokens) + u64::from(report.output_tokens);
        self.ledger.spend(&job.user_id, spent).await;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admit::limits::{LimitConfig, StoreLedger, Tier};
    use crate::cache::CounterKey;
    use crate::clock::SystemClock;
    use crate::clock::{Clock, jst_day};
    use crate::ports::sources::NoSources;
    use crate::ports::{Counter, Store};
    use crate::testkit::MemoryStore;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Spends 100 + 50 tokens per run.
    #[derive(Default)]
    struct Fixed(AtomicU32);

    impl Pregenerate for Fixed {
        async fn pregenerate<X: ContextSources>(&self, _: &X, _: &PrefetchJob) -> PregenReport {
            self.0.fetch_add(1, Ordering::Relaxed);
            PregenReport { input_tokens: 100, output_tokens: 50, ..PregenReport::default() }
        }
    }

    #[tokio::test]
    async fn pregenerated_tokens_count_against_the_users_day_and_stop_when_it_is_spent() {
        let store = Arc::new(MemoryStore::default());
        let cfg =
            LimitConfig { user: Tier { tokens_per_day: 300, ..LimitConfig::default().user }, ..LimitConfig::default() };
        let ledger = StoreLedger { store: store.clone(), clock: SystemClock, cfg };
        let g = Budgeted { inner: Fixed::default(), ledger };
        let job: PrefetchJob = serde_json::from_value(serde_json::json!({
            "session_id": "s-1", "user_id": "u-1", "message_id": "m-1", "intent": "product_discovery",
        }))
        .unwrap();
        let tokens = Counter::new(&job.user_id, CounterKey::Tokens { jst_day: jst_day(SystemClock.now_ms()).0 });
        g.pregenerate(&NoSources, &job).await;
        assert_eq!(store.counter(&tokens).await.unwrap(), 150);
        g.pregenerate(&NoSources, &job).await;
        assert_eq!(store.counter(&tokens).await.unwrap(), 300);
        let report = g.pregenerate(&NoSources, &job).await;
        assert_eq!(g.inner.0.load(Ordering::Relaxed), 2, "the day is spent: no third generation");
        assert!(report.generated.is_empty() && !report.errors.is_empty());
    }
}
