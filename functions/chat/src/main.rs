//! Wiring only: tracing, configuration, SDK clients built once, then the Lambda runtime loop.

use anyhow::Context as _;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chat::config::ChatConfig;
use chat::handler::{App, handle};
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::apigw::ApiGatewaySinks;
use mangaassist_adapters::bedrock::BedrockModel;
use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::env::FromEnv;
use mangaassist_adapters::lambda_queue::LambdaQueue;
use mangaassist_adapters::sdk;
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_adapters::warm::Warmer;
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::clock::SystemClock;
use mangaassist_core::turn::Engine;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mangaassist_adapters::env::init_tracing();

    let cfg = ChatConfig::from_env().context("Failed to read the chat function's configuration")?;
    let sdk = sdk::load().await;
    let sources = cfg.sources.build(&sdk)?;
    let model = BedrockModel::new(&sdk).with_stream_open(cfg.connections.stream_open);
    let store = DynamoStore::new(&sdk, &cfg.table_name);
    let warm = match cfg.connections.warm {
        true => Warmer::default()
            .with_idle(cfg.connections.warm_idle)
            .with_bedrock(model.clone())
            .with_dynamo(store.client().clone(), &cfg.table_name)
            .with_sources(sources.retriever.clone(), sources.products.clone()),
        false => Warmer::default(),
    };
    // During init, so the first turn finds its connections open (bounded; failures are only logged).
    let warmed = warm.warm_all(None).await;
    tracing::info!(ok = warmed.ok, failed = warmed.failed, "connections warmed at init");
    let mut engine = Engine::new(model, store, SystemClock, cfg.turn)
        .with_sources(sources)
        .with_prefetch(cfg.prefetch_function.as_ref().map(|f| LambdaQueue::new(&sdk, f)));
    if !cfg.route_cache.is_zero() {
        // The reconciler's CONFIG/THROUGHPUT record decides when provisioned throughput serves the turn.
        engine = engine.with_routes(Routes::new(DynamoThroughputState::new(&sdk, &cfg.table_name), cfg.route_cache));
    }
    let app = App::new(engine, ApiGatewaySinks::new(sdk, cfg.management_endpoint), warm);
    let app = &app;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        handle(app, ev).await
    }))
    .await
}
