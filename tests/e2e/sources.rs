//! The context-source adapters against real servers: the Redis cache against redis-server (plain and a
//! one-node cluster), the HTTP product-service adapter against the embedded services' HTTP emulator, the
//! OpenSearch adapter against a fake `_search` endpoint, and the embedded tantivy retriever.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use mangaassist_adapters::http::{HttpSettings, Retry};
use mangaassist_adapters::opensearch::{BasicAuth, OpenSearchConfig, OpenSearchRetriever};
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_adapters::services::HttpProductService;
use mangaassist_core::cache::{Lookup, PROMO_PLACEMENT};
use mangaassist_core::ids::{Asin, UserId};
use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::kinds_for;
use mangaassist_core::ports::sources::{Cache, ProductService, Retriever, SourceError};
use mangaassist_local::embedded::catalog::{Catalog, DocKind};
use mangaassist_local::embedded::search::EmbeddedRetriever;
use mangaassist_local::embedded::services::{EmbeddedServices, Latency, Service, ServiceLatencies, ServicesServer};
use serde_json::{Value, json};

use crate::helpers::{redis, redis_cluster, redis_stopped};

fn strings(ks: &[&str]) -> Vec<String> {
    ks.iter().map(|s| s.to_string()).collect()
}

async fn connected(url: &str, cluster: bool) -> RedisCache {
    let cache = RedisCache::connect(&RedisConfig::new(url, cluster)).unwrap();
    assert!(cache.wait_connected(Duration::from_secs(5)).await, "no connection to {url}");
    cache
}

/// Polls `get_many` until it answers (the client reconnected), or gives up after `within`.
async fn until_answers(cache: &RedisCache, within: Duration) -> Vec<Option<String>> {
    let deadline = Instant::now() + within;
    loop {
        match cache.get_many(&strings(&["probe"])).await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the cache did not recover: {e:?}"),
        }
    }
}

#[tokio::test]
async fn redis_returns_hits_and_misses_in_order_and_expires_entries() {
    let server = redis().await;
    let cache = connected(&server.url, false).await;
    let product = Lookup::Product(Asin::parse("B0TEST0001").unwrap());
    cache.set(&product.key(), r#"{"asin":"B0TEST0001"}"#, product.ttl()).await.unwrap();
    cache.set("short", "soon gone", Duration::from_millis(150)).await.unwrap();
    let got = cache.get_many(&strings(&["missing", "product:B0TEST0001", "short"])).await.unwrap();
    assert_eq!(got, vec![None, Some(r#"{"asin":"B0TEST0001"}"#.into()), Some("soon gone".into())]);
    assert!(cache.get_many(&[]).await.unwrap().is_empty());

    let ttl = crate::helpers::redis_command(server.port, "PTTL product:B0TEST0001").await.unwrap();
    let ttl_ms: i64 = ttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(ttl_ms > 290_000 && ttl_ms <= 300_000, "{ttl}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get_many(&strings(&["short"])).await.unwrap(), vec![None]);
}

#[tokio::test]
async fn redis_down_at_start_is_an_error_not_a_panic_and_the_cache_connects_when_it_comes_up() {
    let mut server = redis_stopped();
    let mut config = RedisConfig::new(&server.url, false);
    config.command_timeout = Duration::from_secs(3);
    let cache = RedisCache::connect(&config).unwrap();
    let t = Instant::now();
    let err = cache.get_many(&strings(&["a"])).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err:?}");
    // Failing fast: well before the command timeout.
    assert!(t.elapsed() < Duration::from_secs(1));
    assert!(matches!(cache.set("a", "1", Duration::from_secs(5)).await, Err(SourceError::Unavailable(_))));

    server.start().await;
    assert_eq!(until_answers(&cache, Duration::from_secs(10)).await, vec![None]);
    cache.set("a", "1", Duration::from_secs(5)).await.unwrap();
    assert_eq!(cache.get_many(&strings(&["a"])).await.unwrap(), vec![Some("1".into())]);
}

#[tokio::test]
async fn redis_killed_mid_run_then_restarted_on_the_same_port_is_recovered_from() {
    let mut server = redis().await;
    let cache = connected(&server.url, false).await;
    cache.set("k", "before", Duration::from_secs(60)).await.unwrap();

    server.stop().await;
    let err = cache.get_many(&strings(&["k"])).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_) | SourceError::Timeout(_)), "{err:?}");

    server.start().await;
    // No persistence: the restarted server is empty, but the same client answers again.
    assert_eq!(until_answers(&cache, Duration::from_secs(10)).await, vec![None]);
    cache.set("k", "after", Duration::from_secs(60)).await.unwrap();
    assert_eq!(cache.get_many(&strings(&["k"])).await.unwrap(), vec![Some("after".into())]);
}

#[tokio::test]
async fn a_frozen_redis_costs_one_command_timeout_not_a_hang() {
    let server = redis().await;
    let mut config = RedisConfig::new(&server.url, false);
    config.command_timeout = Duration::from_millis(100);
    let cache = RedisCache::connect(&config).unwrap();
    assert!(cache.wait_connected(Duration::from_secs(5)).await);

    server.freeze(true);
    let t = Instant::now();
    let res = cache.get_many(&strings(&["a"])).await;
    server.freeze(false);
    assert!(matches!(res, Err(SourceError::Timeout(100))), "{res:?}");
    assert!(t.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn in_cluster_mode_keys_across_hash_slots_are_read_in_one_call() {
    let server = redis_cluster().await;
    let cache = connected(&server.url, true).await;
    let a = Asin::parse("B0AAAAAAA1").unwrap();
    let (product, review) = (Lookup::Product(a.clone()).key(), Lookup::Review(a).key());
    let ks = strings(&[&product, &review, &Lookup::Promo.key(), "nothing"]);
    for (i, k) in ks.iter().take(3).enumerate() {
        cache.set(k, &format!("v{i}"), Duration::from_secs(60)).await.unwrap();
    }
    let got = cache.get_many(&ks).await.unwrap();
    assert_eq!(got, vec![Some("v0".into()), Some("v1".into()), Some("v2".into()), None]);

    // The same keys in one MGET are refused by the cluster: that is what the grouping avoids.
    let reply = crate::helpers::redis_command(server.port, &format!("MGET {} {}", ks[0], ks[1])).await.unwrap();
    assert!(reply.contains("CROSSSLOT"), "{reply}");
}

async fn services_server(latency: ServiceLatencies) -> (ServicesServer, Arc<Catalog>) {
    let catalog = Arc::new(Catalog::generate(11, 60));
    let services = Arc::new(EmbeddedServices::new(catalog.clone()).with_latency(latency));
    let server = ServicesServer::start(services, SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    (server, catalog)
}

#[tokio::test]
async fn the_http_product_service_reads_the_catalog_and_a_missing_product_is_none() {
    let (server, catalog) = services_server(ServiceLatencies::default()).await;
    let svc = HttpProductService::new(&server.endpoints(), HttpSettings::default()).unwrap();
    let asin = Asin::parse(catalog.products()[0].asin.as_str()).unwrap();
    let user = UserId::parse("user.1@example").unwrap();

    assert_eq!(svc.product(&asin).await.unwrap(), catalog.product_json(asin.as_str()));
    assert_eq!(svc.reviews(&asin).await.unwrap(), catalog.reviews_json(asin.as_str()));
    let recos = catalog.recommendations_json(asin.as_str(), user.as_str());
    assert_eq!(svc.recommendations(&asin, &user).await.unwrap(), recos);
    assert_eq!(svc.promotions(PROMO_PLACEMENT).await.unwrap(), catalog.promotions_json(PROMO_PLACEMENT));
    assert_eq!(svc.product(&Asin::parse("B0NOSUCH01").unwrap()).await.unwrap(), None);
    assert_eq!(svc.promotions("nowhere").await.unwrap(), None);

    let counts = server.services();
    assert_eq!(counts.requests(Service::Products), 2);
    assert_eq!(counts.requests(Service::Recommendations), 1);
}

#[tokio::test]
async fn a_slow_product_service_is_a_timeout_and_is_not_retried() {
    let slow = ServiceLatencies { products: Latency::fixed(Duration::from_secs(2)), ..ServiceLatencies::default() };
    let (server, catalog) = services_server(slow).await;
    let settings = HttpSettings { request_timeout: Duration::from_millis(150), ..HttpSettings::default() };
    let svc = HttpProductService::new(&server.endpoints(), settings).unwrap();
    let asin = &Asin::parse(catalog.products()[0].asin.as_str()).unwrap();

    let t = Instant::now();
    let res = svc.product(asin).await;
    assert!(matches!(res, Err(SourceError::Timeout(150))), "{res:?}");
    assert!(t.elapsed() < Duration::from_millis(1000));
    assert_eq!(server.services().requests(Service::Products), 1);
    // The other services are not slow.
    assert!(svc.reviews(asin).await.unwrap().is_some());
}

/// A recorded `_search` request: index, `Authorization` header, body.
type SearchRequest = (String, Option<String>, Value);

/// A fake OpenSearch: records each `_search` request, answers with queued statuses, then with `hits`.
#[derive(Clone, Default)]
struct FakeSearch {
    requests: Arc<Mutex<Vec<SearchRequest>>>,
    statuses: Arc<Mutex<Vec<StatusCode>>>,
    delay: Duration,
    hits: Value,
}

async fn fake_opensearch(fake: FakeSearch) -> String {
    let app = axum::Router::new()
        .route(
            "/{index}/_search",
            axum::routing::post(
                |State(f): State<FakeSearch>, Path(index): Path<String>, headers: HeaderMap, body: String| async move {
                    let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_owned());
                    f.requests.lock().unwrap().push((index, auth, serde_json::from_str(&body).unwrap()));
                    tokio::time::sleep(f.delay).await;
                    let queued = f.statuses.lock().unwrap().pop();
                    match queued {
                        Some(s) => (s, "{\"error\":\"busy\"}".to_owned()),
                        None => (StatusCode::OK, json!({"took": 1, "hits": {"hits": f.hits}}).to_string()),
                    }
                },
            ),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn canned_hits() -> Value {
    json!([
        {"_index": "manga", "_id": "1", "_score": 7.5, "_source": {"content": "Shipping policy. Orders ship free.", "tokens": 9}},
        {"_index": "manga", "_id": "2", "_score": 3.0, "_source": {"content": "How do I track my order?"}},
    ])
}

#[tokio::test]
async fn the_opensearch_adapter_sends_a_filtered_bm25_query_and_normalises_scores() {
    let fake = FakeSearch { hits: canned_hits(), ..FakeSearch::default() };
    let url = fake_opensearch(fake.clone()).await;
    let mut config = OpenSearchConfig::new(url, "manga-docs");
    config.auth = Some(BasicAuth { username: "reader".into(), password: "s3cret".into() });
    let retriever = OpenSearchRetriever::new(config).unwrap();

    let chunks = retriever.retrieve("  shipping fee to Okinawa ", Intent::Faq, 4).await.unwrap();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0].content, "Shipping policy. Orders ship free.");
    assert_eq!((chunks[0].score, chunks[0].tokens), (1.0, Some(9)));
    assert_eq!((chunks[1].score, chunks[1].tokens), (0.4, None));

    let requests = fake.requests.lock().unwrap().clone();
    let (index, auth, body) = &requests[0];
    assert_eq!(index, "manga-docs");
    assert_eq!(auth.as_deref(), Some("Basic cmVhZGVyOnMzY3JldA=="));
    assert_eq!(body["size"], 4);
    let mm = &body["query"]["bool"]["must"][0]["multi_match"];
    assert_eq!(mm["query"], "shipping fee to Okinawa");
    assert_eq!(mm["fields"], json!(["title^2", "content", "content_ja"]));
    assert_eq!(body["query"]["bool"]["filter"][0]["terms"]["kind"], json!(kinds_for(Intent::Faq).unwrap()));
    assert_eq!(body["_source"], json!(["content", "tokens"]));
}

#[tokio::test]
async fn an_overloaded_opensearch_is_retried_once_then_reported_unavailable() {
    let fake = FakeSearch {
        hits: canned_hits(),
        statuses: Arc::new(Mutex::new(vec![StatusCode::SERVICE_UNAVAILABLE])),
        ..FakeSearch::default()
    };
    let retriever = OpenSearchRetriever::new(OpenSearchConfig::new(fake_opensearch(fake.clone()).await, "m")).unwrap();
    assert_eq!(retriever.retrieve("track order", Intent::OrderTracking, 2).await.unwrap().len(), 2);
    assert_eq!(fake.requests.lock().unwrap().len(), 2);

    *fake.statuses.lock().unwrap() = vec![StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE];
    let err = retriever.retrieve("track order", Intent::OrderTracking, 2).await.unwrap_err();
    assert!(matches!(err, SourceError::Unavailable(_)), "{err:?}");
    assert_eq!(fake.requests.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn a_slow_opensearch_is_a_timeout() {
    let fake = FakeSearch { hits: canned_hits(), delay: Duration::from_secs(2), ..FakeSearch::default() };
    let mut config = OpenSearchConfig::new(fake_opensearch(fake).await, "m");
    config.http = HttpSettings { request_timeout: Duration::from_millis(100), retry: Retry::none(), ..config.http };
    let retriever = OpenSearchRetriever::new(config).unwrap();
    let t = Instant::now();
    assert!(matches!(retriever.retrieve("x", Intent::General, 2).await, Err(SourceError::Timeout(100))));
    assert!(t.elapsed() < Duration::from_millis(1000));
}

/// A product whose title no other product shares.
fn unique_product(catalog: &Catalog) -> &mangaassist_local::embedded::catalog::CatalogProduct {
    catalog
        .products()
        .iter()
        .find(|p| catalog.products().iter().filter(|q| q.title_en == p.title_en).count() == 1)
        .unwrap()
}

#[tokio::test]
async fn the_embedded_retriever_finds_a_product_by_its_english_or_japanese_title() {
    let catalog = Catalog::default();
    let retriever = EmbeddedRetriever::build(&catalog).unwrap();
    let p = unique_product(&catalog);
    let id = format!("product:{}", p.asin);

    let en = retriever.search(&format!("Tell me about {}", p.title_en), kinds_for(Intent::ProductQuestion), 3).unwrap();
    assert_eq!(en[0].id, id, "{en:?}");
    assert_eq!(en[0].chunk.score, 1.0);

    let ja = retriever.search(&format!("{}は何巻までありますか?", p.title_ja), None, 3).unwrap();
    assert_eq!(ja[0].id, id, "{ja:?}");

    let chunks = retriever.retrieve(&p.title_ja, Intent::ProductQuestion, 2).await.unwrap();
    assert!(chunks[0].content.contains(&p.title_ja) && chunks[0].tokens.is_some());
}

#[tokio::test]
async fn the_embedded_retriever_answers_help_questions_in_both_languages_and_honours_the_kind_filter() {
    let catalog = Catalog::default();
    let retriever = EmbeddedRetriever::build(&catalog).unwrap();

    let en = retriever.search("What is the shipping fee to Okinawa?", kinds_for(Intent::Faq), 3).unwrap();
    assert_eq!(en[0].id, "policy:shipping:en", "{en:?}");
    let ja = retriever.search("沖縄への送料はいくらですか", kinds_for(Intent::Faq), 3).unwrap();
    assert_eq!(ja[0].id, "policy:shipping:ja", "{ja:?}");
    let returns = retriever.search("返品したいです", kinds_for(Intent::ReturnRequest), 3).unwrap();
    assert_eq!(returns[0].id, "policy:returns:ja", "{returns:?}");

    // Asked as a product question, the same words only reach product descriptions.
    let products = retriever.search("shipping price per volume", kinds_for(Intent::ProductQuestion), 10).unwrap();
    assert!(!products.is_empty());
    assert!(products.iter().all(|h| h.kind == DocKind::Product), "{products:?}");
    let help = retriever.search("shipping price per volume", kinds_for(Intent::Faq), 10).unwrap();
    assert!(help.iter().all(|h| h.kind != DocKind::Product), "{help:?}");
}

#[tokio::test]
async fn the_embedded_retriever_applies_its_artificial_latency() {
    let catalog = Catalog::generate(5, 30);
    let retriever = EmbeddedRetriever::build(&catalog).unwrap().with_latency(Latency::fixed(Duration::from_millis(60)));
    let t = Instant::now();
    retriever.retrieve("returns", Intent::Faq, 2).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(60));
}

/// The answer buffer's contract over a real Redis, single node.
mod answer_buffer_over_redis {
    use super::*;
    mangaassist_core::answer_contract_tests!(async {
        let r = redis().await;
        (connected(&r.url, false).await, r)
    });
}

/// The same over a one-node cluster: the pointer and the log share a hash slot, so the scripts run.
mod answer_buffer_over_a_redis_cluster {
    use super::*;
    mangaassist_core::answer_contract_tests!(async {
        let r = redis_cluster().await;
        (connected(&r.url, true).await, r)
    });
}
