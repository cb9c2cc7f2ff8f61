//! Ports of the context sources a turn gathers from (besides conversation memory, which is the store):
//! retrieval (RAG), the product services, and the cache that speculative prefetch fills.
//!
//! Production adapters live in `mangaassist-adapters` (OpenSearch, HTTP product services, ElastiCache);
//! embedded ones in `mangaassist-local` (an in-process full-text index, the generated catalog, a TTL
//! cache). Every call is bounded by the assembler's per-leg deadline; adapters add their own timeouts.

use std::future::Future;
use std::time::Duration;

use serde_json::Value;

use crate::compress::RagChunk;
use crate::error::BoxError;
use crate::intent::Intent;

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
    ) -> impl Future<Output = Result<Vec<RagChunk>, SourceError>> + Send;
}

/// The store's product services. Payloads are the services' JSON, passed to the prompt compactly.
pub trait ProductService: Send + Sync {
    fn product(&self, asin: &str) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
    fn reviews(&self, asin: &str) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
    fn recommendations(
        &self,
        seed_asin: &str,
        user: &str,
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

/// Cache keys and their TTLs (the design's table). One place, shared by the assembler and prefetch.
pub mod keys {
    use std::time::Duration;

    pub const PRODUCT_TTL: Duration = Duration::from_secs(300);
    pub const REVIEW_TTL: Duration = Duration::from_secs(3600);
    pub const RECO_TTL: Duration = Duration::from_secs(900);
    pub const PROMO_TTL: Duration = Duration::from_secs(900);
    /// Retrieved chunks for a predicted follow-up (prefetch), keyed by intent and product.
    pub const RAG_TTL: Duration = Duration::from_secs(900);
    /// The promotions placement the chat uses.
    pub const PROMO_PLACEMENT: &str = "manga-home";

    pub fn product(asin: &str) -> String {
        format!("product:{asin}")
    }
    pub fn review(asin: &str) -> String {
        format!("review:{asin}")
    }
    pub fn reco(user: &str, asin: &str) -> String {
        format!("reco:{user}:{asin}")
    }
    pub fn promo() -> String {
        format!("promo:{PROMO_PLACEMENT}")
    }
    pub fn rag(intent: &str, asin: &str) -> String {
        format!("rag:{intent}:{asin}")
    }
}

// Shared sources (the local system keeps a handle to count requests; prefetch shares the cache).
impl<T: ProductService> ProductService for std::sync::Arc<T> {
    fn product(&self, asin: &str) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send {
        (**self).product(asin)
    }
    fn reviews(&self, asin: &str) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send {
        (**self).reviews(asin)
    }
    fn recommendations(
        &self,
        seed_asin: &str,
        user: &str,
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
    ) -> impl Future<Output = Result<Vec<RagChunk>, SourceError>> + Send {
        (**self).retrieve(query, intent, top_k)
    }
}

// An unconfigured source (`None`) answers empty: the turn goes on with what the others provide.
impl<T: Retriever> Retriever for Option<T> {
    async fn retrieve(&self, query: &str, intent: Intent, top_k: usize) -> Result<Vec<RagChunk>, SourceError> {
        match self {
            Some(r) => r.retrieve(query, intent, top_k).await,
            None => Ok(Vec::new()),
        }
    }
}

impl<T: ProductService> ProductService for Option<T> {
    async fn product(&self, asin: &str) -> Result<Option<Value>, SourceError> {
        match self {
            Some(p) => p.product(asin).await,
            None => Ok(None),
        }
    }
    async fn reviews(&self, asin: &str) -> Result<Option<Value>, SourceError> {
        match self {
            Some(p) => p.reviews(asin).await,
            None => Ok(None),
        }
    }
    async fn recommendations(&self, seed_asin: &str, user: &str) -> Result<Option<Value>, SourceError> {
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
