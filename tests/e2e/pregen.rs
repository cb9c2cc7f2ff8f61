//! Speculative pre-generation end to end: the prefetch worker generating through the real SDK against the
//! Bedrock emulator into redis-server, and the chat turn serving (or not) what it generated.

use std::time::Duration;

use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::ports::sources::Cache;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, LatencyModel, RequestRecord};
use mangaassist_local::system::{LocalSystem, SystemOptions, start_full};
use serde_json::{Value, json};

use crate::helpers::*;

async fn system(moto: &Moto, redis_url: &str) -> LocalSystem<DynamoStore, RedisCache> {
    let opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 60, ..EmulatorConfig::default() },
        prefetch: true,
        ..SystemOptions::default()
    };
    let cache = RedisCache::connect(&RedisConfig::new(redis_url, false)).unwrap();
    start_full(dynamo(moto).await, cache, opts, Routes::default()).await.unwrap()
}

/// Asks for recommendations seeded by three catalog products and waits for the answers the turn
/// pre-generated while it streamed (and for the prefetch worker, which then only prefetches context);
/// returns the products the answer named.
async fn recommendation(
    sys: &LocalSystem<DynamoStore, RedisCache>,
    redis_port: u16,
    client: &mut ChatClient,
) -> Vec<String> {
    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    let done = ask(client, "Can you recommend something similar?", Some(&json!({"browsing_history": group}))).await;
    let reports = sys.prefetch.as_ref().unwrap().drain_after(1, Duration::from_secs(10)).await;
    assert!(reports[0].pregen.is_none(), "the turn pre-generated; the worker did not again: {:?}", reports[0]);
    let named: Vec<String> =
        done["products"].as_array().unwrap().iter().map(|p| p["asin"].as_str().unwrap().to_owned()).collect();
    assert_eq!(named.len(), 3, "{done}");
    for asin in &named {
        let entry = wait_for_entry(redis_port, asin).await;
        assert!(entry.is_some(), "{asin}: the turn pre-generated its overview");
    }
    named
}

/// The pre-generated entry of `asin` in any session, once cached (up to 10 s: the chat invocation awaits
/// its generations after the client has `completed`).
async fn wait_for_entry(redis_port: u16, asin: &str) -> Option<String> {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        let keys = redis_command(redis_port, "KEYS pregen:*").await.unwrap_or_default();
        if let Some(k) = keys.lines().find(|k| k.starts_with("pregen:") && k.ends_with(asin)) {
            return redis_command(redis_port, &format!("GET {k}")).await.ok();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn the_listed_products_are_pre_generated_while_the_list_is_still_streaming() {
    let moto = moto().await;
    let redis = redis().await;
    // A 300-token answer at 200 tokens/s: the products are named in its first lines, 1.5 s before its end.
    let latency = LatencyModel { decode_tokens_per_sec: 200.0, ..LatencyModel::fast() };
    let opts = SystemOptions {
        emulator: EmulatorConfig { latency, answer_tokens: 300, ..EmulatorConfig::default() },
        prefetch: true,
        ..SystemOptions::default()
    };
    let cache = RedisCache::connect(&RedisConfig::new(&redis.url, false)).unwrap();
    let sys = start_full(dynamo(&moto).await, cache, opts, Routes::default()).await.unwrap();
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    let id = client
        .send_message("Can you recommend something similar?", Some(&json!({"browsing_history": group})))
        .await
        .unwrap();
    let events = events_until_end(&mut client, &id).await;
    let ended = tokio::time::Instant::now();
    let done = events.last().unwrap();
    let named: Vec<&str> = done["products"].as_array().unwrap().iter().filter_map(|p| p["asin"].as_str()).collect();
    assert_eq!(named.len(), 3, "{done}");
    // Each pre-generation is one Converse call asking the canonical overview question.
    let overview = |r: &&RequestRecord| r.prompt.contains("Tell me more about") || r.prompt.contains("について");
    let pregen: Vec<RequestRecord> = sys.emulator.stats.requests().into_iter().filter(|r| overview(&r)).collect();
    assert_eq!(pregen.len(), 3, "one generation per listed product");
    assert_eq!(sys.emulator.stats.for_message(&id).len(), 1, "the answer itself: one stream");
    for r in &pregen {
        assert!(r.received_at < ended, "started before the answer ended");
    }
    for asin in named {
        assert!(wait_for_entry(redis.port, asin).await.is_some(), "{asin} cached");
    }
    // The worker still ran for the context, and generated nothing.
    let reports = sys.prefetch.as_ref().unwrap().drain_after(1, Duration::from_secs(10)).await;
    assert!(reports[0].pregen.is_none());
}

fn text_of(events: &[Value]) -> String {
    deltas_text(&events[..events.len() - 1])
}

#[tokio::test]
async fn a_generic_follow_up_is_served_the_pregenerated_answer_and_a_specific_one_is_opened_by_it() {
    let moto = moto().await;
    let redis = redis().await;
    let sys = system(&moto, &redis.url).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let named = recommendation(&sys, redis.port, &mut client).await;

    // Generic: no model request at all, the answer whole at once.
    let id = client.send_message("Tell me more about the first one", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    let done = events.last().unwrap();
    assert_eq!(done["metrics"]["served"], "pregen", "{done}");
    assert!(sys.emulator.stats.for_message(&id).is_empty(), "no model request reached Bedrock");
    assert_eq!(done["products"][0]["asin"], named[0].as_str());
    let title = &sys.services.catalog().product(&named[0]).unwrap().title_en;
    assert!(text_of(&events).starts_with(&format!("{title} is a")), "{}", text_of(&events));

    // Specific: the entry's first sentence at once, then the model continues from it.
    let id = client.send_message("Is the second one scary?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    let done = events.last().unwrap();
    assert_eq!(done["metrics"]["served"], "pregen_opening", "{done}");
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.len(), 1, "the model was asked");
    let opening = reqs[0].asked.prefill.clone().expect("the opening went as an assistant prefill");
    assert!(!opening.ends_with(char::is_whitespace));
    let answer = text_of(&events);
    assert!(answer.starts_with(&opening), "{answer}");
    assert!(!answer.contains("  ") && answer.len() > opening.len() + 10, "one coherent answer: {answer:?}");
    assert_eq!(answer.matches(opening.as_str()).count(), 1, "the opening is not repeated: {answer}");
}

#[tokio::test]
async fn a_changed_price_invalidates_the_entry_and_an_order_question_is_never_served_it() {
    let moto = moto().await;
    let redis = redis().await;
    let sys = system(&moto, &redis.url).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let named = recommendation(&sys, redis.port, &mut client).await;

    // Entries expire: each is cached with the configured TTL (10 minutes by default).
    let keys = redis_command(redis.port, "KEYS pregen:*").await.unwrap();
    let key = keys.lines().find(|l| l.starts_with("pregen:")).expect("an entry").to_owned();
    let ttl = redis_command(redis.port, &format!("PTTL {key}")).await.unwrap();
    let ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!((500_000..=600_000).contains(&ms), "{key}: {ttl}");

    // The product service's record changes (a new price) and reaches the cache.
    let key = format!("product:{}", named[0]);
    let mut record = sys.services.catalog().product_json(&named[0]).unwrap();
    record["price_jpy"] = json!(record["price_jpy"].as_u64().unwrap() + 100);
    sys.app.engine.sources.cache.set(&key, &record.to_string(), Duration::from_secs(300)).await.unwrap();
    let done = ask(&mut client, "Tell me more about the first one", None).await;
    assert_eq!(done["metrics"]["served"], "model", "facts changed since the answer was generated");

    let done = ask(&mut client, "I want to return the second one", None).await;
    assert_eq!(done["metrics"]["served"], "model");
}

#[tokio::test]
async fn without_redis_the_follow_up_takes_the_normal_path() {
    let moto = moto().await;
    let redis = redis_stopped();
    let sys = system(&moto, &redis.url).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    ask(&mut client, "Can you recommend something similar?", Some(&json!({"browsing_history": group}))).await;
    let reports = sys.prefetch.as_ref().unwrap().drain_after(1, Duration::from_secs(10)).await;
    assert!(reports[0].pregen.is_none(), "the worker generates nothing (the turn's own generation found no cache)");
    let done = ask(&mut client, "Tell me more about the first one", None).await;
    assert_eq!(done["metrics"]["served"], "model");
}
