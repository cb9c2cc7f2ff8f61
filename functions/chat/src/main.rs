//! Wiring only: tracing, configuration, SDK clients built once, then the Lambda runtime loop.

use anyhow::Context as _;
use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use chat::config::ChatConfig;
use chat::handler::{App, handle};
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::apigw::ApiGatewaySinks;
use mangaassist_adapters::bedrock::BedrockModel;
use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::sdk;
use mangaassist_core::clock::SystemClock;
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
    let app = App {
        engine: Engine::new(BedrockModel::new(&sdk), DynamoStore::new(&sdk, &cfg.table_name), SystemClock, cfg.turn),
        sinks: ApiGatewaySinks::new(sdk, cfg.management_endpoint),
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<ApiGatewayWebsocketProxyRequest>| async move {
        handle(app, ev).await
    }))
    .await
}
