//! Wiring only: tracing, configuration, adapters built once, then the Lambda runtime loop.

use std::sync::Arc;

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::http::HttpSettings;
use mangaassist_adapters::opensearch::{OpenSearchConfig, OpenSearchRetriever};
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_adapters::services::{HttpProductService, ServiceEndpoints};
use mangaassist_adapters::transitions::RedisTransitions;
use mangaassist_core::context::Sources;
use mangaassist_core::prefetch::Prefetcher;
use prefetch::config::PrefetchFnConfig;
use prefetch::handler::handle;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .without_time() // CloudWatch stamps every line
        .init();

    let cfg = PrefetchFnConfig::from_env().context("Failed to read the prefetch function's configuration")?;
    let retriever = match &cfg.opensearch {
        Some((url, index)) => Some(
            OpenSearchRetriever::new(OpenSearchConfig::new(url, index)).context("Failed to configure OpenSearch")?,
        ),
        None => None,
    };
    let products = match &cfg.services {
        Some(u) => {
            let endpoints = ServiceEndpoints {
                products: u.products.clone(),
                reviews: u.reviews.clone(),
                recommendations: u.recommendations.clone(),
                promotions: u.promotions.clone(),
            };
            Some(HttpProductService::new(&endpoints, HttpSettings::default()).context("Failed to configure services")?)
        }
        None => None,
    };
    // One Redis connection for the cache and the transition counts.
    let cache = match &cfg.redis {
        Some((url, cluster)) => Some(Arc::new(
            RedisCache::connect(&RedisConfig::new(url, *cluster)).context("Failed to configure ElastiCache")?,
        )),
        None => None,
    };
    let transitions = cache.clone().map(RedisTransitions::new);
    let prefetcher = Prefetcher::new(Sources { retriever, products, cache }, transitions, cfg.prefetch);
    let prefetcher = &prefetcher;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move { handle(prefetcher, ev).await })).await
}
