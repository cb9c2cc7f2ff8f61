//! Wiring only: tracing, configuration, SDK clients built once, then the Lambda runtime loop.

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::bedrock_control::BedrockControl;
use mangaassist_adapters::env::FromEnv;
use mangaassist_adapters::sdk;
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_core::capacity::Reconciler;
use mangaassist_core::clock::SystemClock;
use serde_json::Value;
use throughput::config::ThroughputConfig;
use throughput::handler::handle;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mangaassist_adapters::env::init_tracing();

    let cfg = ThroughputConfig::from_env().context("Failed to read the throughput function's configuration")?;
    let sdk = sdk::load().await;
    let reconciler = Reconciler::new(
        BedrockControl::new(&sdk),
        DynamoThroughputState::new(&sdk, &cfg.table_name),
        SystemClock,
        cfg.spec,
    )
    .with_plan(cfg.plan);
    let reconciler = &reconciler;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move { handle(reconciler, ev).await })).await
}
