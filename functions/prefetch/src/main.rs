//! Wiring only: tracing, configuration, adapters and SDK clients built once, then the Lambda runtime loop.

use mangaassist_adapters::env::FromEnv;
use std::sync::Arc;

use anyhow::Context as _;
use lambda_runtime::{LambdaEvent, service_fn};
use mangaassist_adapters::bedrock::BedrockModel;
use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::sdk;
use mangaassist_adapters::transitions::RedisTransitions;
use mangaassist_core::admit::limits::StoreLedger;
use mangaassist_core::ahead::prefetch::{Budgeted, Prefetcher, Pregenerator};
use mangaassist_core::clock::SystemClock;
use mangaassist_core::ports::sources::Sources;
use mangaassist_core::prompt::{PromptConfig, Prompter};
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
    // Pre-generated answers are spent against the user's day in the chat table, as their turns are.
    let Some(table) = cfg.table_name.as_deref() else {
        tracing::warn!("TABLE_NAME is not set: pre-generated answers are not counted against the users' days");
        let prefetcher = Prefetcher::new(sources, transitions, cfg.prefetch).with_pregen(pregen);
        let prefetcher = &prefetcher;
        return lambda_runtime::run(service_fn(
            move |ev: LambdaEvent<Value>| async move { handle(prefetcher, ev).await },
        ))
        .await;
    };
    let ledger = StoreLedger { store: DynamoStore::new(&sdk, table), clock: SystemClock, cfg: cfg.limits };
    let prefetcher =
        Prefetcher::new(sources, transitions, cfg.prefetch).with_pregen(Budgeted { inner: pregen, ledger });
    let prefetcher = &prefetcher;
    lambda_runtime::run(service_fn(move |ev: LambdaEvent<Value>| async move { handle(prefetcher, ev).await })).await
}
