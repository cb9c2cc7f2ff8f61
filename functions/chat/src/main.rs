//! Wiring only: tracing, configuration, SDK clients built once, then the Lambda runtime loop.

use anyhow::Context as _;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chat::config::ChatConfig;
use chat::handler::{App, handle};
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::apigw::ApiGatewaySinks;
use mangaassist_adapters::bedrock::BedrockModel;
use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::http::HttpSettings;
use mangaassist_adapters::lambda_queue::LambdaQueue;
use mangaassist_adapters::opensearch::{OpenSearchConfig, OpenSearchRetriever};
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_adapters::sdk;
use mangaassist_adapters::services::{HttpProductService, ServiceEndpoints};
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_core::clock::SystemClock;
use mangaassist_core::context::Sources;
use mangaassist_core::routes::Routes;
use mangaassist_core::turn::Engine;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .without_time() // CloudWatch stamps every line
        .init();

    let cfg = ChatConfig::from_env().context("Failed to read the chat function's configuration")?;
    let sdk = sdk::load().await;
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
    let cache = match &cfg.redis {
        Some((url, cluster)) => {
            Some(RedisCache::connect(&RedisConfig::new(url, *cluster)).context("Failed to configure ElastiCache")?)
        }
        None => None,
    };
    let mut engine =
        Engine::new(BedrockModel::new(&sdk), DynamoStore::new(&sdk, &cfg.table_name), SystemClock, cfg.turn)
            .with_sources(Sources { retriever, products, cache })
            .with_prefetch(cfg.prefetch_function.as_ref().map(|f| LambdaQueue::new(&sdk, f)));
    if !cfg.route_cache.is_zero() {
        // The reconciler's CONFIG/THROUGHPUT record decides when provisioned throughput serves the turn.
        engine = engine.with_routes(Routes::new(DynamoThroughputState::new(&sdk, &cfg.table_name), cfg.route_cache));
    }
    let app = App { engine, sinks: ApiGatewaySinks::new(sdk, cfg.management_endpoint) };
    let app = &app;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        handle(app, ev).await
    }))
    .await
}
