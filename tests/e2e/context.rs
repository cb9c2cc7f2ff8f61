//! Context assembly through the whole turn: the retrieval, cache and product-service legs against real
//! servers (redis-server, moto_server), their deadlines, and degraded dependencies.

use std::time::Duration;

use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_core::answer::routes::Routes;
use mangaassist_local::client::ChatClient;
use mangaassist_local::embedded::services::Service;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, LatencyModel};
use mangaassist_local::system::{LocalSystem, SourceLatency, SystemOptions, start_full};
use serde_json::{Value, json};

use crate::helpers::*;

fn fast() -> SystemOptions {
    SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 30, ..EmulatorConfig::default() },
        ..SystemOptions::default()
    }
}

async fn with_redis(moto: &Moto, url: &str, opts: SystemOptions) -> LocalSystem<DynamoStore, RedisCache> {
    let cache = RedisCache::connect(&RedisConfig::new(url, false)).unwrap();
    start_full(dynamo(moto).await, cache, opts, Routes::default()).await.unwrap()
}

/// A product the embedded catalog has.
fn catalog_asin<K>(sys: &LocalSystem<DynamoStore, K>) -> String {
    sys.services.catalog().products()[0].asin.clone()
}

#[tokio::test]
async fn a_prefetched_product_is_served_from_redis_and_its_service_sees_no_request() {
    let moto = moto().await;
    let redis = redis().await;
    let sys = with_redis(&moto, &redis.url, fast()).await;
    let asin = catalog_asin(&sys);
    let cached = json!({"asin": asin, "title_en": "From the cache"}).to_string();
    let reply = redis_command(redis.port, &format!("SET product:{asin} '{cached}' EX 300")).await.unwrap();
    assert!(reply.starts_with("+OK"), "{reply}");

    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let done = ask(&mut client, &format!("How many volumes does {asin} have?"), None).await;
    let m = &done["metrics"];
    assert_eq!(m["intent"], "product_question");
    assert_eq!(m["cache_hits"], json!([format!("product:{asin}")]), "{m}");
    assert_eq!(sys.services.requests(Service::Products), 0, "the cache hit skipped the product service");
    assert_eq!(sys.services.requests(Service::Reviews), 1, "the miss went to its service");
    assert_eq!(m["context_errors"], json!([]));

    // What the service returned was written back: the same question now hits the cache for both.
    let done = ask(&mut client, &format!("Tell me about {asin} please"), None).await;
    assert_eq!(done["metrics"]["cache_hits"].as_array().unwrap().len(), 2, "{}", done["metrics"]);
    assert_eq!(sys.services.requests(Service::Reviews), 1);
}

#[tokio::test]
async fn every_leg_arrives_within_the_slowest_and_a_slow_leg_is_cut_while_the_answer_streams() {
    let moto = moto().await;
    let mut opts = fast();
    opts.sources = SourceLatency { retrieval: Duration::from_millis(60), services: Duration::from_millis(30) };
    let sys = system_opts(&moto, opts).await;
    let asin = catalog_asin(&sys);
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let done = ask(&mut client, &format!("Is {asin} in stock?"), None).await;
    let m = &done["metrics"];
    assert_eq!(m["context_errors"], json!([]), "{m}");
    let (assembly, retrieval) = (m["assembly_ms"].as_f64().unwrap(), m["legs"]["retrieval_ms"].as_f64().unwrap());
    assert!(retrieval >= 60.0);
    assert!(assembly >= retrieval && assembly < retrieval + 60.0, "assembly {assembly} vs slowest leg {retrieval}");

    // Retrieval slower than its deadline: cut, recorded, and the turn still answers.
    let mut opts = fast();
    opts.sources = SourceLatency { retrieval: Duration::from_secs(3), services: Duration::ZERO };
    opts.turn.context.retrieval = Duration::from_millis(80);
    let sys = system_opts(&moto, opts).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let done = ask(&mut client, "Any horror manga?", None).await;
    let errors: Vec<&str> =
        done["metrics"]["context_errors"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert_eq!(errors, ["retrieval: deadline of 80 ms"]);
    assert!(done["metrics"]["assembly_ms"].as_f64().unwrap() < 200.0);
}

#[tokio::test]
async fn redis_down_at_start_costs_the_cache_only_and_is_used_once_it_comes_up() {
    let moto = moto().await;
    let mut redis = redis_stopped();
    let sys = with_redis(&moto, &redis.url, fast()).await;
    let asin = catalog_asin(&sys);
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let done = ask(&mut client, &format!("How many volumes does {asin} have?"), None).await;
    let errors = done["metrics"]["context_errors"].as_array().unwrap().clone();
    assert!(errors.iter().any(|e| e.as_str().unwrap().starts_with("cache:")), "{errors:?}");
    assert_eq!(sys.services.requests(Service::Products), 1, "the services answered instead");

    redis.start().await;
    let _ = sys.app.engine.sources.cache.wait_connected(Duration::from_secs(5)).await;
    let mut clean = false;
    for _ in 0..20 {
        let done = ask(&mut client, &format!("Tell me about {asin}"), None).await;
        if done["metrics"]["context_errors"] == json!([]) {
            clean = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(clean, "the cache was used again once Redis came up");
}

#[tokio::test]
async fn dynamodb_throttling_everywhere_tells_the_shopper_at_once_and_retryably() {
    // A DynamoDB endpoint that throttles every request, as an overloaded table would.
    let throttle = axum::Router::new().fallback(|| async {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-amzn-errortype", "ProvisionedThroughputExceededException".parse().unwrap());
        let body = r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"throttled"}"#;
        (axum::http::StatusCode::BAD_REQUEST, h, body)
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, throttle).await });
    let store = DynamoStore::new(&mangaassist_adapters::sdk::local(&url).await, "throttled");
    let sys = mangaassist_local::system::start(store, fast()).await.unwrap();

    // $connect cannot store the record, and the connection is accepted all the same.
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    // Not even the connection's session can be read: the shopper is told at once, retryably, rather than
    // answered as someone else (issue 28: a failed lookup fails closed).
    let sent = std::time::Instant::now();
    let id = client.send_message("Any horror manga?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    let end = events.last().unwrap();
    assert_eq!((end["code"].as_str(), end["retryable"].as_bool()), (Some("session_unavailable"), Some(true)), "{end}");
    // The lookup was cut at its deadline instead of waiting out the SDK's retries.
    assert!(sent.elapsed() < Duration::from_secs(1), "{:?}", sent.elapsed());
    assert_eq!(sys.emulator.stats.total_requests(), 0, "nothing was asked of the model");
}

async fn system_opts(moto: &Moto, opts: SystemOptions) -> LocalSystem<DynamoStore> {
    mangaassist_local::system::start(dynamo(moto).await, opts).await.unwrap()
}

#[tokio::test]
async fn a_predicted_follow_up_is_served_from_what_prefetch_cached() {
    let moto = moto().await;
    let mut opts = fast();
    opts.prefetch = true;
    let sys = system_opts(&moto, opts).await;
    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let first =
        ask(&mut client, "Can you recommend something similar?", Some(&json!({"browsing_history": group}))).await;
    assert_eq!(first["metrics"]["intent"], "recommendation");
    let named = first["products"][0]["asin"].as_str().unwrap().to_owned();
    let reports = sys.prefetch.as_ref().unwrap().drain_after(1, Duration::from_secs(5)).await;
    assert_eq!(reports.len(), 1);
    let before = sys.services.requests(Service::Products);

    let done = ask(&mut client, "Tell me more about the first one", None).await;
    let m = &done["metrics"];
    assert_eq!(m["intent"], "product_question");
    let hits: Vec<&str> = m["cache_hits"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    for key in [format!("product:{named}"), format!("review:{named}"), format!("rag:product_question:{named}")] {
        assert!(hits.contains(&key.as_str()), "{key} not served from the cache: {hits:?}");
    }
    assert_eq!(sys.services.requests(Service::Products), before, "the product service saw no request");
    assert_eq!(m["legs"]["retrieval_ms"], 0.0, "a follow-up does not run a text search on its own words");
    assert_eq!(done["products"][0]["asin"], named.as_str(), "the answer is about the product referred to");

    // An unpredicted follow-up still works, without cache hits.
    let done = ask(&mut client, "Where is my order 112-4433221-7788990?", None).await;
    assert_eq!(done["metrics"]["intent"], "order_tracking");
}
