//! The core's `TransitionStore` over Redis hashes: `HINCRBY transitions:{from} {to} 1` counts a transition,
//! `HGETALL transitions:{from}` reads the counts. It shares the [`RedisCache`]'s connection, and with it the
//! command timeout, the fail-fast behaviour while disconnected and the self-reconnecting task.
//!
//! The counts never expire: they are the learned prior, a few hashes of at most one field per intent.

use std::collections::HashMap;
use std::sync::Arc;

use fred::prelude::HashesInterface;
use mangaassist_core::ahead::prefetch::TransitionStore;
use mangaassist_core::cache::CacheKey;
use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::SourceError;

use crate::redis_cache::RedisCache;

/// The hash holding the transitions from `from`.
pub fn key(from: Intent) -> String {
    CacheKey::Transitions(from).render()
}

/// `TransitionStore` over Redis.
#[derive(Debug, Clone)]
pub struct RedisTransitions {
    cache: Arc<RedisCache>,
}

impl RedisTransitions {
    /// Counts in the Redis behind `cache`, over its connection.
    pub fn new(cache: Arc<RedisCache>) -> Self {
        Self { cache }
    }
}

impl TransitionStore for RedisTransitions {
    async fn observe(&self, from: Intent, to: Intent) -> Result<(), SourceError> {
        let client = self.cache.client();
        self.cache.bounded(client.hincrby::<i64, _, _>(key(from), to.as_str(), 1)).await.map(|_| ())
    }

    async fn counts(&self, from: Intent) -> Result<HashMap<String, u64>, SourceError> {
        let client = self.cache.client();
        self.cache.bounded(client.hgetall::<HashMap<String, u64>, _>(key(from))).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis_cache::RedisConfig;

    #[test]
    fn transitions_from_an_intent_share_one_hash() {
        assert_eq!(key(Intent::ProductDiscovery), "transitions:product_discovery");
    }

    #[tokio::test]
    async fn without_a_server_counting_is_an_error_not_a_wait() {
        let cache = RedisCache::connect(&RedisConfig::new("redis://127.0.0.1:1", false)).unwrap();
        let t = RedisTransitions::new(Arc::new(cache));
        let (a, b) = (Intent::Faq, Intent::Promotion);
        assert!(matches!(t.observe(a, b).await, Err(SourceError::Unavailable(_) | SourceError::Timeout(_))));
        assert!(t.counts(a).await.is_err());
    }
}
