//! Wiring only: tracing, configuration, adapters and SDK clients built once, then the Lambda runtime loop.

use std::sync::Arc;

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::bedrock::BedrockModel;
use mangaassist_adapters::sdk;
use mangaassist_adapters::transitions::RedisTransitions;
use mangaassist_core::clock::SystemClock;
use mangaassist_core::prefetch::{Prefetcher, Pregenerator};
use mangaassist_core::prompt::{PromptConfig, Prompter};
use mangaassist_core::sources::Sources;
use prefetch::config::PrefetchFnConfig;
use prefetch::handler::handle;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    mangaassist_adapters::env::init_tracing();

    let cfg = PrefetchFnConfig::from_env().context("Failed to read the prefetch function's configuration")?;
    let sdk = sdk::load().await;
    let built = cfg.sources.build(&sdk)?;
    // One Redis connection for the cache and the transition counts.
    let cache = built.cache.map(Arc::new);
    let transitions = cache.clone().map(RedisTransitions::new);
    let sources = Sources { retriever: built.retriever, products: built.products, cache };
    let pregen = Pregenerator {
        model: BedrockModel::new(&sdk),
        prompter: Prompter::new(PromptConfig::default(), cfg.budget, true),
        cfg: cfg.pregen,
        clock: SystemClock,
    };
    let prefetcher = Prefetcher::new(sources, transitions, cfg.prefetch).with_pregen(pregen);
    let prefetcher = &prefetcher;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move { handle(prefetcher, ev).await })).await
}
