//! Ports of the context sources a turn gathers from (besides conversation memory, which is the store):
//! retrieval (RAG), the product services, and the cache that speculative prefetch fills; and the one
//! bundle of them ([`ContextSources`]) that the assembler and the prefetcher are generic over.
//!
//! Production adapters live in `mangaassist-adapters` (OpenSearch, HTTP product services, ElastiCache);
//! embedded ones in `mangaassist-local` (an in-process full-text index, the generated catalog, a TTL
//! cache). Every call is bounded by the caller's deadline; adapters add their own timeouts. What the cache
//! holds, and under which keys, is [`crate::cache`].

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

/// The passage type the sources return (defined with the cache entries that hold it).
pub use crate::cache::Passage;
use crate::cache::{Lookup, RagEntry};
use crate::error::BoxError;
use crate::ids::{Asin, UserId};
use crate::intent::Intent;
use crate::ports::answers::{AnswerBuffer, NoAnswers};

/// What went wrong in a context source.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("the source did not answer within {0} ms")]
    Timeout(u64),
    #[error("the source is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("the source failed")]
    Other(#[source] BoxError),
}

impl SourceError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "source_timeout",
            Self::Unavailable(_) => "source_unavailable",
            Self::Other(_) => "source_error",
        }
    }

    /// Worth asking again later (a prefetch retry, the next turn).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

/// The document kinds a turn of `intent` should retrieve from; `None` means every kind.
///
/// Product questions, recommendations and discovery want product descriptions; help intents want the FAQ
/// and the policy pages; promotions and general chat are not filtered.
pub fn kinds_for(intent: Intent) -> Option<&'static [&'static str]> {
    match intent {
        Intent::ProductQuestion | Intent::Recommendation | Intent::ProductDiscovery => Some(&["product"]),
        Intent::OrderTracking | Intent::ReturnRequest | Intent::Faq | Intent::CheckoutHelp => Some(&["faq", "policy"]),
        Intent::Promotion | Intent::General => None,
    }
}

/// Top-k passages for a query: product descriptions, FAQ and policy pages.
pub trait Retriever: Send + Sync {
    /// Chunks carry their token count when the index knows it.
    fn retrieve(
        &self,
        query: &str,
        intent: Intent,
        top_k: usize,
    ) -> impl Future<Output = Result<Vec<Passage>, SourceError>> + Send;
}

/// The store's product services. Payloads are the services' JSON, passed to the prompt compactly.
pub trait ProductService: Send + Sync {
    fn product(&self, asin: &Asin) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
    fn reviews(&self, asin: &Asin) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
    fn recommendations(
        &self,
        seed_asin: &Asin,
        user: &UserId,
    ) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
    fn promotions(&self, placement: &str) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
}

/// A key-value cache with TTLs (ElastiCache in production).
pub trait Cache: Send + Sync {
    /// Values for `keys`, in order; `None` for a miss.
    fn get_many(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<String>>, SourceError>> + Send;
    fn set(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Sets `key` only when it does not exist (`SET NX EX`); `true` when this call set it. The claim that
    /// makes a retried prefetch invocation a no-op.
    fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send;
}

// Shared sources (the local system keeps a handle to count requests; prefetch shares the cache).
impl<T: ProductService> ProductService for std::sync::Arc<T> {
    fn product(&self, asin: &Asin) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send {
        (**self).product(asin)
    }
    fn reviews(&self, asin: &Asin) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send {
        (**self).reviews(asin)
    }
    fn recommendations(
        &self,
        seed_asin: &Asin,
        user: &UserId,
    ) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send {
        (**self).recommendations(seed_asin, user)
    }
    fn promotions(&self, placement: &str) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send {
        (**self).promotions(placement)
    }
}

impl<T: Cache> Cache for std::sync::Arc<T> {
    fn get_many(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<String>>, SourceError>> + Send {
        (**self).get_many(keys)
    }
    fn set(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), SourceError>> + Send {
        (**self).set(key, value, ttl)
    }
    fn set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send {
        (**self).set_if_absent(key, value, ttl)
    }
}

impl<T: Retriever> Retriever for std::sync::Arc<T> {
    fn retrieve(
        &self,
        query: &str,
        intent: Intent,
        top_k: usize,
    ) -> impl Future<Output = Result<Vec<Passage>, SourceError>> + Send {
        (**self).retrieve(query, intent, top_k)
    }
}

// An unconfigured source (`None`) answers empty: the turn goes on with what the others provide.
impl<T: Retriever> Retriever for Option<T> {
    async fn retrieve(&self, query: &str, intent: Intent, top_k: usize) -> Result<Vec<Passage>, SourceError> {
        match self {
            Some(r) => r.retrieve(query, intent, top_k).await,
            None => Ok(Vec::new()),
        }
    }
}

impl<T: ProductService> ProductService for Option<T> {
    async fn product(&self, asin: &Asin) -> Result<Option<Value>, SourceError> {
        match self {
            Some(p) => p.product(asin).await,
            None => Ok(None),
        }
    }
    async fn reviews(&self, asin: &Asin) -> Result<Option<Value>, SourceError> {
        match self {
            Some(p) => p.reviews(asin).await,
            None => Ok(None),
        }
    }
    async fn recommendations(&self, seed_asin: &Asin, user: &UserId) -> Result<Option<Value>, SourceError> {
        match self {
            Some(p) => p.recommendations(seed_asin, user).await,
            None => Ok(None),
        }
    }
    async fn promotions(&self, placement: &str) -> Result<Option<Value>, SourceError> {
        match self {
            Some(p) => p.promotions(placement).await,
            None => Ok(None),
        }
    }
}

impl<T: Cache> Cache for Option<T> {
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
        match self {
            Some(c) => c.get_many(keys).await,
            None => Ok(vec![None; keys.len()]),
        }
    }
    async fn set(&self, key: &str, value: &str, ttl: Duration) -> Result<(), SourceError> {
        match self {
            Some(c) => c.set(key, value, ttl).await,
            None => Ok(()),
        }
    }
    /// Without a cache nothing can be claimed, and nothing would be shared with a retry either: `true`.
    async fn set_if_absent(&self, key: &str, value: &str, ttl: Duration) -> Result<bool, SourceError> {
        match self {
            Some(c) => c.set_if_absent(key, value, ttl).await,
            None => Ok(true),
        }
    }
}

/// All context sources of a turn, bundled so the engine and the prefetcher have one type parameter for them.
pub trait ContextSources: Send + Sync {
    /// The buffer typing-time generations write to (the cache's; [`NoAnswers`] without one).
    type Answers: AnswerBuffer;
    fn answers(&self) -> &Self::Answers;
    fn retrieve(
        &self,
        query: &str,
        intent: Intent,
        top_k: usize,
    ) -> impl Future<Output = Result<Vec<Passage>, SourceError>> + Send;
    fn cache_get(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<String>>, SourceError>> + Send;
    fn cache_set(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// `SET NX EX`: `true` when this call set `key` (the prefetch claim).
    fn cache_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send;
    /// The value of one cache entry from its source (a service call, or the passages of a `Rag` lookup),
    /// in the entry's cached form; `None` when the source has nothing for it.
    fn fetch(&self, key: &Lookup) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
}

/// No context sources: memory and the message only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSources;

impl ContextSources for NoSources {
    type Answers = NoAnswers;
    fn answers(&self) -> &NoAnswers {
        &NoAnswers
    }
    async fn retrieve(&self, _: &str, _: Intent, _: usize) -> Result<Vec<Passage>, SourceError> {
        Ok(Vec::new())
    }
    async fn cache_get(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
        Ok(vec![None; keys.len()])
    }
    async fn cache_set(&self, _: &str, _: &str, _: Duration) -> Result<(), SourceError> {
        Ok(())
    }
    async fn cache_set_if_absent(&self, _: &str, _: &str, _: Duration) -> Result<bool, SourceError> {
        Ok(true)
    }
    async fn fetch(&self, _: &Lookup) -> Result<Option<Value>, SourceError> {
        Ok(None)
    }
}

/// Retriever + product services + cache.
#[derive(Debug, Clone)]
pub struct Sources<R, P, K> {
    pub retriever: R,
    pub products: P,
    pub cache: K,
}

impl<R: Retriever, P: ProductService, K: Cache + AnswerBuffer> ContextSources for Sources<R, P, K> {
    type Answers = K;
    fn answers(&self) -> &K {
        &self.cache
    }
    fn retrieve(
        &self,
        query: &str,
        intent: Intent,
        top_k: usize,
    ) -> impl Future<Output = Result<Vec<Passage>, SourceError>> + Send {
        self.retriever.retrieve(query, intent, top_k)
    }
    fn cache_get(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<String>>, SourceError>> + Send {
        self.cache.get_many(keys)
    }
    fn cache_set(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), SourceError>> + Send {
        self.cache.set(key, value, ttl)
    }
    fn cache_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send {
        self.cache.set_if_absent(key, value, ttl)
    }
    async fn fetch(&self, l: &Lookup) -> Result<Option<Value>, SourceError> {
        match l {
            Lookup::Product(a) => self.products.product(a).await,
            Lookup::Review(a) => self.products.reviews(a).await,
            Lookup::Reco { user, asin } => self.products.recommendations(asin, user).await,
            Lookup::Promo => self.products.promotions(crate::cache::PROMO_PLACEMENT).await,
            Lookup::Rag { intent, asin } => {
                let passages = self.retriever.retrieve(asin.as_str(), *intent, RagEntry::TOP_K).await?;
                Ok(RagEntry(passages).into_value())
            }
        }
    }
}
