//! Parallel context assembly: everything the prompt needs at the cost of the slowest leg, never held
//! hostage by one slow or failing source.
//!
//! ```text
//! t=0 ── classify (µs) ── retrieval ───────────────────────────────┐
//!    └── memory (store) ── resolve ordinals ── cache ── services ──┴─> prompt compressor
//! ```
//!
//! Retrieval needs only the message and its intent, so it starts at once. The cache and product-service
//! legs need memory (an ordinal such as "the first one" resolves against the previous answer), so they
//! follow it; services are asked only for what the cache (filled by speculative prefetch) did not have.
//! Every leg has its own deadline, all capped by an overall one; a leg that errors or times out is
//! recorded and the turn goes on with what arrived. Service data reaches the compressor as top-scored
//! context chunks.

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::compress::RagChunk;
use crate::error::chain;
use crate::intent::{Entities, Intent};
use crate::sources::{Cache, ProductService, Retriever, SourceError, keys};

/// Deadlines of the context legs.
#[derive(Debug, Clone, Copy)]
pub struct ContextConfig {
    pub memory: Duration,
    pub retrieval: Duration,
    pub cache: Duration,
    pub services: Duration,
    /// No leg runs past this, counted from the start of assembly.
    pub overall: Duration,
    pub top_k: usize,
    /// Products looked up per turn (details + reviews).
    pub max_products: usize,
    /// Run the legs one after another (the benchmark's baseline), not side by side.
    pub sequential: bool,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            memory: Duration::from_millis(150),
            retrieval: Duration::from_millis(240),
            cache: Duration::from_millis(40),
            services: Duration::from_millis(150),
            overall: Duration::from_millis(250),
            top_k: 5,
            max_products: 3,
            sequential: false,
        }
    }
}

/// All context sources of a turn, bundled so the engine has one type parameter for them.
pub trait ContextSources: Send + Sync {
    fn retrieve(
        &self,
        query: &str,
        intent: Intent,
        top_k: usize,
    ) -> impl Future<Output = Result<Vec<RagChunk>, SourceError>> + Send;
    fn cache_get(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<String>>, SourceError>> + Send;
    fn cache_set(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// `SET NX EX`: `true` when this call set `key` (the prefetch claim).
    fn cache_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send;
    /// One service call for a cache key (`product:…`, `review:…`, `reco:…`, `promo:…`).
    fn fetch(&self, key: &Lookup) -> impl Future<Output = Result<Option<Value>, SourceError>> + Send;
}

/// No context sources: memory and the message only.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSources;

impl ContextSources for NoSources {
    async fn retrieve(&self, _: &str, _: Intent, _: usize) -> Result<Vec<RagChunk>, SourceError> {
        Ok(Vec::new())
    }
    async fn cache_get(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
        Ok(vec![None; keys.len()])
    }
    async fn cache_set(&self, _: &str, _: &str, _: Duration) -> Result<(), SourceError> {
        Ok(())
    }
    async fn cache_set_if_absent(&self, _: &str, _: &str, _: Duration) -> Result<bool, SourceError> {
        Ok(true)
    }
    async fn fetch(&self, _: &Lookup) -> Result<Option<Value>, SourceError> {
        Ok(None)
    }
}

/// Retriever + product services + cache.
#[derive(Debug, Clone)]
pub struct Sources<R, P, K> {
    pub retriever: R,
    pub products: P,
    pub cache: K,
}

impl<R: Retriever, P: ProductService, K: Cache> ContextSources for Sources<R, P, K> {
    fn retrieve(
        &self,
        query: &str,
        intent: Intent,
        top_k: usize,
    ) -> impl Future<Output = Result<Vec<RagChunk>, SourceError>> + Send {
        self.retriever.retrieve(query, intent, top_k)
    }
    fn cache_get(&self, keys: &[String]) -> impl Future<Output = Result<Vec<Option<String>>, SourceError>> + Send {
        self.cache.get_many(keys)
    }
    fn cache_set(&self, key: &str, value: &str, ttl: Duration) -> impl Future<Output = Result<(), SourceError>> + Send {
        self.cache.set(key, value, ttl)
    }
    fn cache_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, SourceError>> + Send {
        self.cache.set_if_absent(key, value, ttl)
    }
    async fn fetch(&self, l: &Lookup) -> Result<Option<Value>, SourceError> {
        match l {
            Lookup::Product(a) => self.products.product(a).await,
            Lookup::Review(a) => self.products.reviews(a).await,
            Lookup::Reco { user, asin } => self.products.recommendations(asin, user).await,
            Lookup::Promo => self.products.promotions(keys::PROMO_PLACEMENT).await,
            Lookup::Rag { intent, asin } => {
                let chunks = self.retriever.retrieve(asin, *intent, 3).await?;
                if chunks.is_empty() {
                    return Ok(None);
                }
                let items: Vec<Value> = chunks
                    .into_iter()
                    .map(|c| serde_json::json!({ "content": c.content, "score": c.score, "tokens": c.tokens }))
                    .collect();
                Ok(Some(Value::Array(items)))
            }
        }
    }
}

/// One piece of service data, named the way the cache names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Product(String),
    Review(String),
    Reco {
        user: String,
        asin: String,
    },
    Promo,
    /// The passages a turn of `intent` about `asin` retrieves (a follow-up such as "the first one", whose
    /// own words are useless to a text search); cached as a JSON array of chunks.
    Rag {
        intent: Intent,
        asin: String,
    },
}

impl Lookup {
    pub fn key(&self) -> String {
        match self {
            Self::Product(a) => keys::product(a),
            Self::Review(a) => keys::review(a),
            Self::Reco { user, asin } => keys::reco(user, asin),
            Self::Promo => keys::promo(),
            Self::Rag { intent, asin } => keys::rag(intent.as_str(), asin),
        }
    }

    pub fn ttl(&self) -> Duration {
        match self {
            Self::Product(_) => keys::PRODUCT_TTL,
            Self::Review(_) => keys::REVIEW_TTL,
            Self::Reco { .. } => keys::RECO_TTL,
            Self::Promo => keys::PROMO_TTL,
            Self::Rag { .. } => keys::RAG_TTL,
        }
    }

    /// How strongly the compressor should prefer this over retrieved text.
    fn score(&self) -> f32 {
        match self {
            Self::Product(_) => 1.0,
            Self::Review(_) => 0.97,
            Self::Reco { .. } => 0.95,
            Self::Promo => 0.93,
            Self::Rag { .. } => 0.9,
        }
    }

    /// The chunks a cached or fetched value stands for: a `Rag` array becomes its chunks, anything else
    /// one chunk named by its key.
    fn chunks(&self, value: &str) -> Vec<RagChunk> {
        if let Self::Rag { .. } = self
            && let Ok(Value::Array(items)) = serde_json::from_str::<Value>(value)
        {
            return items
                .iter()
                .filter_map(|c| {
                    Some(RagChunk {
                        content: c.get("content")?.as_str()?.to_owned(),
                        score: c.get("score").and_then(Value::as_f64).unwrap_or(0.5) as f32,
                        tokens: c.get("tokens").and_then(Value::as_u64).map(|t| t as usize),
                    })
                })
                .collect();
        }
        vec![RagChunk { content: format!("{}: {value}", self.key()), score: self.score(), tokens: None }]
    }
}

/// The products a turn is about: explicit ASINs, the resolved ordinal, then the page's current product,
/// then browsing history; at most `max`.
pub fn focus_products(entities: &Entities, page: &serde_json::Map<String, Value>, max: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |a: &str| {
        if out.len() < max && crate::prompt::is_asin(a) && !out.iter().any(|x| x == a) {
            out.push(a.to_owned());
        }
    };
    entities.asins.iter().for_each(|a| push(a.as_str()));
    if let Some(p) = &entities.resolved {
        push(&p.asin);
    }
    if let Some(a) = page.get("current_asin").and_then(Value::as_str) {
        push(a);
    }
    if let Some(h) = page.get("browsing_history").and_then(Value::as_array) {
        h.iter().filter_map(Value::as_str).for_each(&mut push);
    }
    out
}

/// What the services should be asked for this intent (the design's resolution table).
pub fn lookups(intent: Intent, products: &[String], user: &str) -> Vec<Lookup> {
    let mut out = Vec::new();
    match intent {
        Intent::ProductQuestion | Intent::ReturnRequest => {
            for a in products {
                out.push(Lookup::Product(a.clone()));
                if intent == Intent::ProductQuestion {
                    out.push(Lookup::Review(a.clone()));
                }
            }
        }
        Intent::Recommendation | Intent::ProductDiscovery => {
            if let Some(a) = products.first() {
                out.push(Lookup::Reco { user: user.to_owned(), asin: a.clone() });
            }
            if intent == Intent::ProductDiscovery {
                out.push(Lookup::Promo);
            }
        }
        Intent::Promotion => out.push(Lookup::Promo),
        Intent::CheckoutHelp => out.extend(products.iter().take(1).map(|a| Lookup::Product(a.clone()))),
        Intent::OrderTracking | Intent::Faq | Intent::General => {}
    }
    out
}

/// Per-leg timings, ms (0 for a leg that did not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LegTimings {
    pub memory_ms: f64,
    pub retrieval_ms: f64,
    pub cache_ms: f64,
    pub services_ms: f64,
}

/// What assembly produced.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    /// Retrieved passages and service data, for the compressor.
    pub chunks: Vec<RagChunk>,
    /// Cache keys served from the cache (prefetched), in lookup order.
    pub cache_hits: Vec<String>,
    /// Keys fetched from the services (to write back to the cache after the answer).
    pub fetched: Vec<(Lookup, String)>,
    /// Keys looked up in total.
    pub lookups: usize,
    /// `leg: error` for each leg that failed or was cut at its deadline.
    pub errors: Vec<String>,
    pub legs: LegTimings,
    pub assembly_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `fut` under `deadline` (capped at `cap`), recording its time and any error.
async fn leg<T>(
    name: &'static str,
    deadline: Duration,
    cap: Instant,
    fut: impl Future<Output = Result<T, SourceError>>,
) -> (Option<T>, f64, Option<String>) {
    let start = Instant::now();
    let until = (start + deadline).min(cap);
    let res = tokio::time::timeout_at(until, fut).await;
    let took = ms(start.elapsed());
    match res {
        Ok(Ok(v)) => (Some(v), took, None),
        Ok(Err(e)) => {
            tracing::warn!(leg = name, error = %chain(&e), "context leg failed");
            (None, took, Some(format!("{name}: {e}")))
        }
        Err(_) => {
            tracing::warn!(leg = name, deadline_ms = ms(until - start), "context leg cut at its deadline");
            (None, took, Some(format!("{name}: deadline of {:.0} ms", ms(until - start))))
        }
    }
}

/// Fetches service data for `lookups`: the cache first, the services for misses, all side by side.
pub async fn cached_lookups<X: ContextSources>(
    sources: &X,
    cfg: &ContextConfig,
    cap: Instant,
    lookups: Vec<Lookup>,
    out: &mut Assembled,
) {
    if lookups.is_empty() {
        return;
    }
    out.lookups = lookups.len();
    let keys: Vec<String> = lookups.iter().map(Lookup::key).collect();
    let (hits, took, err) = leg("cache", cfg.cache, cap, sources.cache_get(&keys)).await;
    out.legs.cache_ms = took;
    out.errors.extend(err);
    let hits = hits.unwrap_or_else(|| vec![None; keys.len()]);
    let mut misses = Vec::new();
    for (l, hit) in lookups.into_iter().zip(hits) {
        match hit {
            Some(v) => {
                out.chunks.extend(l.chunks(&v));
                out.cache_hits.push(l.key());
            }
            None => misses.push(l),
        }
    }
    if misses.is_empty() {
        return;
    }
    let start = Instant::now();
    let calls = misses.iter().map(|l| leg("services", cfg.services, cap, sources.fetch(l)));
    let results = futures_util::future::join_all(calls).await;
    out.legs.services_ms = ms(start.elapsed());
    for (l, (v, _, err)) in misses.into_iter().zip(results) {
        if let Some(e) = err {
            out.errors.push(e);
        }
        if let Some(Some(v)) = v {
            let text = v.to_string();
            out.chunks.extend(l.chunks(&text));
            out.fetched.push((l, text));
        }
    }
}

/// The retrieval leg.
pub async fn retrieval<X: ContextSources>(
    sources: &X,
    cfg: &ContextConfig,
    cap: Instant,
    query: &str,
    intent: Intent,
) -> (Vec<RagChunk>, f64, Option<String>) {
    let (v, took, err) = leg("retrieval", cfg.retrieval, cap, sources.retrieve(query, intent, cfg.top_k)).await;
    (v.unwrap_or_default(), took, err)
}

/// Bounds a memory load by its deadline; `None` when it was cut.
pub async fn memory_leg<T>(cfg: &ContextConfig, cap: Instant, fut: impl Future<Output = T>) -> (Option<T>, f64) {
    let start = Instant::now();
    let res = tokio::time::timeout_at((start + cfg.memory).min(cap), fut).await;
    (res.ok(), ms(start.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Sources with scripted latencies; counts service calls.
    #[derive(Default)]
    struct Scripted {
        retrieval: Duration,
        service: Duration,
        cached: HashMap<String, String>,
        cache_fails: bool,
        calls: Mutex<Vec<String>>,
    }

    impl ContextSources for Scripted {
        async fn retrieve(&self, q: &str, _: Intent, _: usize) -> Result<Vec<RagChunk>, SourceError> {
            tokio::time::sleep(self.retrieval).await;
            Ok(vec![RagChunk { content: format!("about {q}"), score: 0.5, tokens: None }])
        }
        async fn cache_get(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            if self.cache_fails {
                return Err(SourceError::Unavailable("redis down".into()));
            }
            Ok(keys.iter().map(|k| self.cached.get(k).cloned()).collect())
        }
        async fn cache_set(&self, _: &str, _: &str, _: Duration) -> Result<(), SourceError> {
            Ok(())
        }
        async fn cache_set_if_absent(&self, _: &str, _: &str, _: Duration) -> Result<bool, SourceError> {
            Ok(true)
        }
        async fn fetch(&self, l: &Lookup) -> Result<Option<Value>, SourceError> {
            self.calls.lock().unwrap().push(l.key());
            tokio::time::sleep(self.service).await;
            Ok(Some(serde_json::json!({ "key": l.key() })))
        }
    }

    fn question_about(asin: &str) -> Vec<Lookup> {
        lookups(Intent::ProductQuestion, &[asin.to_owned()], "anon")
    }

    async fn run(src: &Scripted, wanted: Vec<Lookup>) -> Assembled {
        let cfg = ContextConfig::default();
        let start = Instant::now();
        let cap = start + cfg.overall;
        let with_lookups = async {
            let mut asm = Assembled::default();
            tokio::time::sleep(Duration::from_millis(50)).await; // memory
            cached_lookups(src, &cfg, cap, wanted, &mut asm).await;
            asm
        };
        let (mut asm, (chunks, took, err)) =
            tokio::join!(with_lookups, retrieval(src, &cfg, cap, "horror", Intent::ProductQuestion));
        asm.legs.retrieval_ms = took;
        asm.errors.extend(err);
        asm.chunks.extend(chunks);
        asm.assembly_ms = ms(start.elapsed());
        asm
    }

    #[tokio::test(start_paused = true)]
    async fn the_legs_cost_the_slowest_not_the_sum() {
        let src = Scripted {
            retrieval: Duration::from_millis(200),
            service: Duration::from_millis(100),
            ..Default::default()
        };
        let asm = run(&src, question_about("B0AAAAAAA1")).await;
        assert!(asm.errors.is_empty(), "{:?}", asm.errors);
        assert!((200.0..205.0).contains(&asm.assembly_ms), "{}", asm.assembly_ms);
        assert_eq!(asm.chunks.len(), 3, "product, review, retrieved chunk");
        assert_eq!(src.calls.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_leg_is_cut_at_its_deadline_and_the_rest_arrives() {
        let src =
            Scripted { retrieval: Duration::from_secs(5), service: Duration::from_millis(10), ..Default::default() };
        let asm = run(&src, question_about("B0AAAAAAA1")).await;
        assert_eq!(asm.errors, ["retrieval: deadline of 240 ms"]);
        assert!(asm.assembly_ms <= 250.0 + 1.0, "{}", asm.assembly_ms);
        assert_eq!(asm.chunks.len(), 2, "the service data still arrived");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cache_hit_skips_the_service_call() {
        let mut src = Scripted { service: Duration::from_millis(100), ..Default::default() };
        src.cached.insert(keys::product("B0AAAAAAA1"), r#"{"title":"cached"}"#.into());
        let asm = run(&src, question_about("B0AAAAAAA1")).await;
        assert_eq!(asm.cache_hits, ["product:B0AAAAAAA1"]);
        assert_eq!(*src.calls.lock().unwrap(), ["review:B0AAAAAAA1"]);
        assert_eq!(asm.fetched.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_cache_falls_back_to_the_services() {
        let src = Scripted { cache_fails: true, ..Default::default() };
        let asm = run(&src, question_about("B0AAAAAAA1")).await;
        assert_eq!(asm.errors.len(), 1);
        assert!(asm.errors[0].starts_with("cache:"));
        assert_eq!(src.calls.lock().unwrap().len(), 2);
    }

    #[test]
    fn focus_prefers_named_products_then_the_ordinal_then_the_page() {
        let e = Entities {
            asins: vec!["B0NAMED001".into()],
            resolved: Some(crate::protocol::ProductRef { asin: "B0ORDINAL1".into() }),
            ..Entities::default()
        };
        let page: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"current_asin":"B0CURRENT1","browsing_history":["B0HISTORY1","B0HISTORY2"]}"#)
                .unwrap();
        assert_eq!(focus_products(&e, &page, 3), ["B0NAMED001", "B0ORDINAL1", "B0CURRENT1"]);
    }
}
