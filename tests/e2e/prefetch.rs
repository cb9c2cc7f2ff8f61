//! Speculative prefetch against real servers: redis-server for the cache, the claim and the transition
//! counts, and the embedded catalog services and retriever from `mangaassist-local`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{Context, LambdaEvent};
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_adapters::transitions::RedisTransitions;
use mangaassist_core::ahead::prefetch::{Basis, PrefetchConfig, PrefetchJob, Prefetcher, TransitionStore};
use mangaassist_core::cache::Lookup;
use mangaassist_core::ids::{Asin, MessageId, SessionId, UserId};
use mangaassist_core::intent::Intent;
use mangaassist_core::ports::sources::Cache;
use mangaassist_core::ports::sources::Sources;
use mangaassist_local::embedded::catalog::Catalog;
use mangaassist_local::embedded::search::EmbeddedRetriever;
use mangaassist_local::embedded::services::{EmbeddedServices, Latency, ServiceLatencies};
use serde_json::Value;

use crate::helpers::*;

type Worker = Prefetcher<Sources<Arc<EmbeddedRetriever>, Arc<EmbeddedServices>, Arc<RedisCache>>, RedisTransitions>;

struct Rig {
    prefetcher: Worker,
    services: Arc<EmbeddedServices>,
    cache: Arc<RedisCache>,
    asins: Vec<Asin>,
}

fn product(a: &Asin) -> String {
    Lookup::Product(a.clone()).key()
}
fn review(a: &Asin) -> String {
    Lookup::Review(a.clone()).key()
}
fn reco(a: &Asin) -> String {
    Lookup::Reco { user: UserId::parse("u1").unwrap(), asin: a.clone() }.key()
}
fn promo() -> String {
    Lookup::Promo.key()
}
fn rag(intent: Intent, a: &Asin) -> String {
    Lookup::Rag { intent, asin: a.clone() }.key()
}

async fn rig(url: &str, latency: Latency, config: PrefetchConfig) -> Rig {
    let catalog = Arc::new(Catalog::default());
    let retriever = Arc::new(EmbeddedRetriever::build(&catalog).unwrap());
    let asins = catalog.products().iter().take(4).map(|p| Asin::parse(p.asin.as_str()).unwrap()).collect();
    let services = Arc::new(EmbeddedServices::new(catalog).with_latency(ServiceLatencies::all(latency)));
    let cache = Arc::new(RedisCache::connect(&RedisConfig::new(url, false)).unwrap());
    let transitions = RedisTransitions::new(cache.clone());
    let sources = Sources { retriever, products: services.clone(), cache: cache.clone() };
    Rig { prefetcher: Prefetcher::new(sources, transitions, config), services, cache, asins }
}

async fn connected(url: &str, latency: Latency, config: PrefetchConfig) -> Rig {
    let r = rig(url, latency, config).await;
    assert!(r.cache.wait_connected(Duration::from_secs(5)).await);
    r
}

fn job(id: &str, previous: Option<Intent>, intent: Intent, products: &[Asin]) -> PrefetchJob {
    PrefetchJob {
        session_id: SessionId::parse("s1").unwrap(),
        user_id: UserId::parse("u1").unwrap(),
        guest: false,
        message_id: MessageId::parse(id).unwrap(),
        previous_intent: previous,
        intent,
        products: products.to_vec(),
        page_context: Default::default(),
        history: Vec::new(),
        summary: None,
        previous_products: Vec::new(),
        pregenerated: false,
    }
}

async fn cached(cache: &RedisCache, ks: &[String]) -> Vec<bool> {
    cache.get_many(ks).await.unwrap().into_iter().map(|v| v.is_some()).collect()
}

#[tokio::test]
async fn a_predicted_follow_up_finds_its_context_in_redis_and_a_retried_invoke_does_nothing() {
    let redis = redis().await;
    let r = connected(&redis.url, Latency::ZERO, PrefetchConfig::default()).await;
    let (a, top) = (&r.asins[0], &r.asins[..3]);

    // Discovery -> product_question (0.45: details + reviews) and recommendation (0.30: similar items).
    let report = r.prefetcher.run(&job("m1", Some(Intent::Recommendation), Intent::ProductDiscovery, &r.asins)).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let mut want: Vec<String> = top.iter().map(product).collect();
    want.extend(top.iter().map(review));
    want.push(reco(a));
    want.push(rag(Intent::ProductQuestion, a));
    want.push(rag(Intent::Recommendation, a));
    assert_eq!(cached(&r.cache, &want).await, vec![true; want.len()], "{report:?}");
    assert_eq!(report.written.len(), want.len());
    assert_eq!(cached(&r.cache, &[product(&r.asins[3]), promo()]).await, [false, false], "top 3 only");
    let entry = r.cache.get_many(&[rag(Intent::ProductQuestion, a)]).await.unwrap()[0].clone().unwrap();
    let entry: Value = serde_json::from_str(&entry).unwrap();
    let first = &entry.as_array().unwrap()[0];
    assert!(first["content"].is_string() && first["score"].is_number() && first["tokens"].is_number(), "{entry}");

    // Lambda retries the same event: no service call, no second count.
    let requests = r.services.total_requests();
    let counts = r.prefetcher.transitions().counts(Intent::Recommendation).await.unwrap();
    assert_eq!(counts.get("product_discovery"), Some(&1));
    let again = r.prefetcher.run(&job("m1", Some(Intent::Recommendation), Intent::ProductDiscovery, &r.asins)).await;
    assert!(again.duplicate && again.written.is_empty() && again.errors.is_empty(), "{again:?}");
    assert_eq!(r.services.total_requests(), requests);
    assert_eq!(r.prefetcher.transitions().counts(Intent::Recommendation).await.unwrap(), counts);

    // A product question -> checkout_help (0.30: promotions; the cart is skipped) and recommendation (0.25).
    let report = r.prefetcher.run(&job("m2", None, Intent::ProductQuestion, &r.asins[1..])).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    let b = &r.asins[1];
    let want = [promo(), reco(b), rag(Intent::Recommendation, b)];
    assert_eq!(cached(&r.cache, &want).await, [true; 3], "{report:?}");
    // Checkout help retrieves FAQ and policy pages, which say nothing about an ASIN: nothing to cache.
    assert_eq!(cached(&r.cache, &[rag(Intent::CheckoutHelp, b)]).await, [false]);
}

#[tokio::test]
async fn with_redis_unavailable_the_prefetch_fails_quietly() {
    let redis = redis_stopped();
    let r = rig(&redis.url, Latency::ZERO, PrefetchConfig::default()).await;
    let report = r.prefetcher.run(&job("m1", Some(Intent::Recommendation), Intent::ProductDiscovery, &r.asins)).await;
    assert_eq!(report.errors.len(), 1, "{report:?}");
    assert!(report.errors[0].starts_with("claim:"), "{report:?}");
    assert!(report.written.is_empty());
    assert_eq!(r.services.total_requests(), 0, "without the claim nothing is fetched");
}

#[tokio::test]
async fn a_hanging_service_does_not_extend_the_prefetch_past_its_bound() {
    let redis = redis().await;
    let timeout = Duration::from_millis(400);
    let cfg = PrefetchConfig { timeout, ..PrefetchConfig::default() };
    let r = connected(&redis.url, Latency::fixed(Duration::from_secs(10)), cfg).await;
    let start = Instant::now();
    let report = r.prefetcher.run(&job("m1", None, Intent::ProductDiscovery, &r.asins)).await;
    let elapsed = start.elapsed();
    assert!(elapsed < timeout + Duration::from_millis(300), "{elapsed:?}");
    assert_eq!(report.errors.len(), 7, "3 products, 3 reviews, 1 reco cut: {:?}", report.errors);
    assert!(report.errors.iter().all(|e| e.contains(": deadline of ")), "{:?}", report.errors);
    assert_eq!(report.written.len(), 2, "the retrieved chunks still landed: {report:?}");

    // The default bound is the design's 2 s.
    assert_eq!(PrefetchConfig::default().timeout, Duration::from_secs(2));
}

#[tokio::test]
async fn learned_transitions_override_the_prior_after_enough_observations() {
    let redis = redis().await;
    let r = connected(&redis.url, Latency::ZERO, PrefetchConfig::default()).await;
    let t = r.prefetcher.transitions();
    for _ in 0..18 {
        t.observe(Intent::ProductDiscovery, Intent::Promotion).await.unwrap();
    }
    // 19 observed (18 + this job's own previous -> intent is for another origin): still the prior.
    t.observe(Intent::ProductDiscovery, Intent::Faq).await.unwrap();
    let report = r.prefetcher.run(&job("m1", None, Intent::ProductDiscovery, &r.asins)).await;
    assert_eq!(report.basis, Some(Basis::Prior));

    // The 20th: the observed frequencies decide (promotion 19/20; faq 1/20 is under the threshold).
    t.observe(Intent::ProductDiscovery, Intent::Promotion).await.unwrap();
    let report = r.prefetcher.run(&job("m2", None, Intent::ProductDiscovery, &r.asins[3..])).await;
    assert_eq!(report.basis, Some(Basis::Learned));
    let predicted: Vec<(Intent, f64)> = report.predicted.iter().map(|p| (p.intent, p.probability)).collect();
    assert_eq!(predicted, [(Intent::Promotion, 0.95)]);
    let b = &r.asins[3];
    assert_eq!(report.written, [promo(), rag(Intent::Promotion, b)], "{report:?}");
    assert_eq!(cached(&r.cache, &[product(b)]).await, [false], "the prior's product details were not fetched");
}

#[tokio::test]
async fn the_handler_runs_the_sample_event() {
    let redis = redis().await;
    let r = connected(&redis.url, Latency::ZERO, PrefetchConfig::default()).await;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../events/prefetch.json");
    let payload: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let id = payload["message_id"].as_str().unwrap().to_owned();
    let report =
        prefetch::handler::handle(&r.prefetcher, LambdaEvent::new(payload.clone(), Context::default())).await.unwrap();
    assert_eq!(report.message_id.as_ref().map(MessageId::as_str), Some(id.as_str()));
    assert!(!report.duplicate && report.errors.is_empty(), "{report:?}");
    assert_eq!(report.basis, Some(Basis::Prior));
    assert_eq!(report.predicted.len(), 2);
    let again = prefetch::handler::handle(&r.prefetcher, LambdaEvent::new(payload, Context::default())).await.unwrap();
    assert!(again.duplicate);
    let bad = LambdaEvent::new(serde_json::json!({"hello": 1}), Context::default());
    assert!(prefetch::handler::handle(&r.prefetcher, bad).await.is_err());
}
