//! Speculative pre-generation end to end: the prefetch worker generating through the real SDK against the
//! Bedrock emulator into redis-server, and the chat turn serving (or not) what it generated.

use std::time::Duration;

use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_core::routes::Routes;
use mangaassist_core::sources::Cache;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, LatencyModel};
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

/// Asks for recommendations seeded by three catalog products and waits for the prefetch (and pre-generation)
/// of the answer; returns the products the answer named.
async fn recommendation(sys: &LocalSystem<DynamoStore, RedisCache>, client: &mut ChatClient) -> Vec<String> {
    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    let done = ask(client, "Can you recommend something similar?", Some(&json!({"browsing_history": group}))).await;
    let reports = sys.prefetch.as_ref().unwrap().drain_after(1, Duration::from_secs(10)).await;
    let pregen = reports[0].pregen.as_ref().expect("a product question was predicted: pre-generation ran");
    assert!(pregen.errors.is_empty(), "{pregen:?}");
    assert_eq!(pregen.generated.len(), 3, "{pregen:?}");
    done["products"].as_array().unwrap().iter().map(|p| p["asin"].as_str().unwrap().to_owned()).collect()
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
    let named = recommendation(&sys, &mut client).await;

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
    let named = recommendation(&sys, &mut client).await;

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
    assert!(reports[0].pregen.is_none(), "without the claim nothing is generated");
    let done = ask(&mut client, "Tell me more about the first one", None).await;
    assert_eq!(done["metrics"]["served"], "model");
}
