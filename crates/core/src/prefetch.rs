//! Speculative prefetch: after a turn, predict what the shopper will ask next and put the context that
//! follow-up needs (service data and retrieved chunks) into the cache before they ask.
//!
//! ```text
//! chat turn ── completed ── PrefetchQueue::enqueue(job) ──async──> Prefetcher::run(job)
//!   claim prefetch:{message_id} (SET NX) ── observe previous -> intent ── predict ── plan
//!   ── one cache read (skip what is cached) ── services + retrieval side by side ── cache writes
//! ```
//!
//! - The prior is the design's `INTENT_TRANSITIONS` table ([`PRIOR`]); once [`PrefetchConfig::min_observations`]
//!   transitions from an intent were observed (the [`TransitionStore`]), their frequencies replace it.
//! - Predictions at or above [`PrefetchConfig::threshold`] (0.25) are prefetched; [`predict`], [`select`] and
//!   [`plan`] are pure, the decision is tested without any I/O.
//! - Async invocations are retried by Lambda, so the run first claims `prefetch:{message_id}`; a duplicate does
//!   nothing and does not count the transition twice. A claimed run that then fails is not redone: prefetch is
//!   best effort, the next turn falls back to the services.
//! - Every step runs under one overall deadline ([`PrefetchConfig::timeout`], 2 s): a hanging service is cut
//!   and recorded, never waited for.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::context::{ContextSources, Lookup};
use crate::error::chain;
use crate::intent::Intent;
use crate::sources::{SourceError, keys};

/// The async-invoke payload: what the turn that just finished knew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchJob {
    pub session_id: String,
    pub user_id: String,
    /// The turn that just finished; the idempotency key.
    pub message_id: String,
    /// The intent of the turn before it (`None` on the first turn of a session).
    #[serde(default)]
    pub previous_intent: Option<String>,
    /// The intent of the turn that just finished.
    pub intent: String,
    /// ASINs mentioned in the answer, in order.
    #[serde(default)]
    pub products: Vec<String>,
    #[serde(default)]
    pub page_context: Map<String, Value>,
}

/// Context a predicted follow-up needs (the design's prefetch keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrefetchKind {
    /// `product:{asin}` for the top products.
    ProductDetails,
    /// `review:{asin}` for the top products.
    Reviews,
    /// `reco:{user}:{asin}` seeded by the first product.
    SimilarItems,
    /// `promo:{placement}`.
    Promotions,
    /// The promotions placement too: it is what the discovery turn shows as trending.
    TrendingItems,
    /// Nothing cacheable: the cart is per-user and changes with every click, and the chat reads no cart
    /// service. Kept in the table so the prior stays the design's, skipped by [`plan`].
    CartContext,
}

/// One row of the prior: from the current intent to `next` with `probability`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transition {
    pub next: Intent,
    pub probability: f64,
    pub kinds: &'static [PrefetchKind],
}

const fn t(next: Intent, probability: f64, kinds: &'static [PrefetchKind]) -> Transition {
    Transition { next, probability, kinds }
}

use PrefetchKind::{CartContext, ProductDetails, Promotions, Reviews, SimilarItems, TrendingItems};

/// The design's `INTENT_TRANSITIONS` (historical data): the prior until enough transitions are observed.
pub const PRIOR: &[(Intent, &[Transition])] = &[
    (
        Intent::ProductDiscovery,
        &[
            t(Intent::ProductQuestion, 0.45, &[ProductDetails, Reviews]),
            t(Intent::Recommendation, 0.30, &[SimilarItems]),
            t(Intent::CheckoutHelp, 0.10, &[CartContext]),
        ],
    ),
    (
        Intent::Recommendation,
        &[
            t(Intent::ProductQuestion, 0.50, &[ProductDetails, Reviews]),
            t(Intent::ProductDiscovery, 0.20, &[TrendingItems]),
            t(Intent::CheckoutHelp, 0.15, &[CartContext]),
        ],
    ),
    (
        Intent::ProductQuestion,
        &[
            t(Intent::CheckoutHelp, 0.30, &[CartContext, Promotions]),
            t(Intent::Recommendation, 0.25, &[SimilarItems]),
            t(Intent::ProductQuestion, 0.20, &[ProductDetails]),
        ],
    ),
];

/// The design's `PREFETCH_PROBABILITY_THRESHOLD`.
pub const DEFAULT_THRESHOLD: f64 = 0.25;

/// The prior's rows from `from` (empty for intents it has no data on).
pub fn prior(from: Intent) -> &'static [Transition] {
    PRIOR.iter().find(|(i, _)| *i == from).map_or(&[], |(_, rows)| *rows)
}

/// What to prefetch for a follow-up of intent `next` after `from`: the prior's row when it has one, else
/// what a turn of that intent looks up (the assembler's table in [`crate::context::lookups`]).
pub fn kinds_for(from: Intent, next: Intent) -> &'static [PrefetchKind] {
    if let Some(row) = prior(from).iter().find(|r| r.next == next) {
        return row.kinds;
    }
    match next {
        Intent::ProductQuestion => &[ProductDetails, Reviews],
        Intent::ReturnRequest => &[ProductDetails],
        Intent::Recommendation => &[SimilarItems],
        Intent::ProductDiscovery => &[SimilarItems, TrendingItems],
        Intent::Promotion => &[Promotions],
        Intent::CheckoutHelp => &[CartContext],
        Intent::OrderTracking | Intent::Faq | Intent::General => &[],
    }
}

/// Where a prediction's probability came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    Prior,
    Learned,
}

/// A likely follow-up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    #[serde(serialize_with = "intent_name")]
    pub intent: Intent,
    pub probability: f64,
    #[serde(skip)]
    pub kinds: &'static [PrefetchKind],
}

fn intent_name<S: serde::Serializer>(intent: &Intent, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(intent.as_str())
}

/// The follow-ups of `from`, most likely first: the prior until `min_observations` transitions from `from`
/// were observed (`observed`: next intent name -> count), then the observed frequencies. Names that are not
/// intents count towards the total but are never predicted.
pub fn predict(from: Intent, observed: &HashMap<String, u64>, min_observations: u64) -> (Basis, Vec<Prediction>) {
    let total: u64 = observed.values().sum();
    if total < min_observations.max(1) {
        let rows =
            prior(from).iter().map(|r| Prediction { intent: r.next, probability: r.probability, kinds: r.kinds });
        return (Basis::Prior, rows.collect());
    }
    let mut out: Vec<Prediction> = observed
        .iter()
        .filter_map(|(name, &n)| {
            let next = Intent::parse(name)?;
            Some(Prediction { intent: next, probability: n as f64 / total as f64, kinds: kinds_for(from, next) })
        })
        .collect();
    out.sort_by(|a, b| b.probability.total_cmp(&a.probability).then_with(|| a.intent.as_str().cmp(b.intent.as_str())));
    (Basis::Learned, out)
}

/// The predictions worth prefetching: probability at or above `threshold`.
pub fn select(predictions: Vec<Prediction>, threshold: f64) -> Vec<Prediction> {
    predictions.into_iter().filter(|p| p.probability >= threshold).collect()
}

/// The work for the selected predictions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Service data to cache, without duplicates, in prediction order.
    pub lookups: Vec<Lookup>,
    /// `(next intent, asin)`: chunks the follow-up would retrieve about the first product, cached under
    /// [`keys::rag`].
    pub rag: Vec<(Intent, String)>,
}

impl Plan {
    /// Every cache key the plan writes, lookups first.
    pub fn keys(&self) -> Vec<String> {
        let rag = self.rag.iter().map(|(i, a)| keys::rag(i.as_str(), a));
        self.lookups.iter().map(Lookup::key).chain(rag).collect()
    }
}

/// Maps the selected predictions to lookups: details and reviews for the top `top_products`, similar items
/// seeded by the first product, promotions (also for trending items); cart context is skipped.
pub fn plan(predictions: &[Prediction], products: &[String], user: &str, top_products: usize) -> Plan {
    let mut out = Plan::default();
    let top = &products[..products.len().min(top_products)];
    let mut push = |l: Lookup| {
        if !out.lookups.contains(&l) {
            out.lookups.push(l);
        }
    };
    for p in predictions {
        for kind in p.kinds {
            match kind {
                ProductDetails => top.iter().for_each(|a| push(Lookup::Product(a.clone()))),
                Reviews => top.iter().for_each(|a| push(Lookup::Review(a.clone()))),
                SimilarItems => {
                    if let Some(a) = products.first() {
                        push(Lookup::Reco { user: user.to_owned(), asin: a.clone() });
                    }
                }
                Promotions | TrendingItems => push(Lookup::Promo),
                CartContext => {}
            }
        }
    }
    if let Some(a) = products.first() {
        for p in predictions {
            if !out.rag.iter().any(|(i, _)| *i == p.intent) {
                out.rag.push((p.intent, a.clone()));
            }
        }
    }
    out
}

/// Counts of observed intent transitions (Redis hashes in production).
pub trait TransitionStore: Send + Sync {
    /// Counts one transition `from` -> `to`.
    fn observe(&self, from: &str, to: &str) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Next intent -> times observed after `from`.
    fn counts(&self, from: &str) -> impl Future<Output = Result<HashMap<String, u64>, SourceError>> + Send;
}

impl<T: TransitionStore> TransitionStore for std::sync::Arc<T> {
    fn observe(&self, from: &str, to: &str) -> impl Future<Output = Result<(), SourceError>> + Send {
        (**self).observe(from, to)
    }
    fn counts(&self, from: &str) -> impl Future<Output = Result<HashMap<String, u64>, SourceError>> + Send {
        (**self).counts(from)
    }
}

/// No store configured: nothing is counted, so the prior always decides.
impl<T: TransitionStore> TransitionStore for Option<T> {
    async fn observe(&self, from: &str, to: &str) -> Result<(), SourceError> {
        match self {
            Some(t) => t.observe(from, to).await,
            None => Ok(()),
        }
    }
    async fn counts(&self, from: &str) -> Result<HashMap<String, u64>, SourceError> {
        match self {
            Some(t) => t.counts(from).await,
            None => Ok(HashMap::new()),
        }
    }
}

/// Hands a job to the prefetch worker (an async Lambda invoke in production, a task locally).
pub trait PrefetchQueue: Send + Sync {
    fn enqueue(&self, job: &PrefetchJob) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// No prefetch at all (the engine's default).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPrefetch;

impl PrefetchQueue for NoPrefetch {
    async fn enqueue(&self, _: &PrefetchJob) -> Result<(), SourceError> {
        Ok(())
    }
}

/// No prefetch worker configured: jobs are dropped.
impl<Q: PrefetchQueue> PrefetchQueue for Option<Q> {
    async fn enqueue(&self, job: &PrefetchJob) -> Result<(), SourceError> {
        match self {
            Some(q) => q.enqueue(job).await,
            None => Ok(()),
        }
    }
}

impl<Q: PrefetchQueue> PrefetchQueue for std::sync::Arc<Q> {
    fn enqueue(&self, job: &PrefetchJob) -> impl Future<Output = Result<(), SourceError>> + Send {
        (**self).enqueue(job)
    }
}

/// Tuning of the prefetcher.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefetchConfig {
    /// Predictions at or above this probability are prefetched.
    pub threshold: f64,
    /// Observed transitions from an intent needed before they replace the prior.
    pub min_observations: u64,
    /// The whole run, claim included.
    pub timeout: Duration,
    /// Products whose details and reviews are prefetched.
    pub top_products: usize,
    /// Chunks cached per predicted intent.
    pub rag_top_k: usize,
    /// How long a message id stays claimed (longer than Lambda's async retry window).
    pub claim_ttl: Duration,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self {
            threshold: DEFAULT_THRESHOLD,
            min_observations: 20,
            timeout: Duration::from_secs(2),
            top_products: 3,
            rag_top_k: 3,
            claim_ttl: Duration::from_secs(3600),
        }
    }
}

/// The claim key of a message's prefetch.
pub fn claim_key(message_id: &str) -> String {
    format!("prefetch:{message_id}")
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrefetchReport {
    pub message_id: String,
    /// Another invocation had already claimed this message: nothing was done.
    pub duplicate: bool,
    pub basis: Option<Basis>,
    /// The selected predictions.
    pub predicted: Vec<Prediction>,
    /// Cache keys written.
    pub written: Vec<String>,
    /// Keys already cached, so not fetched.
    pub skipped: Vec<String>,
    /// `step: error` for each step that failed or was cut at the deadline.
    pub errors: Vec<String>,
    pub elapsed_ms: f64,
}

/// A retrieved chunk as cached under [`keys::rag`].
#[derive(Debug, Serialize)]
struct CachedChunk<'a> {
    content: &'a str,
    score: f32,
    tokens: Option<usize>,
}

/// Runs `fut` until `deadline`, naming the step in the error.
async fn bounded<T>(
    step: &str,
    deadline: Instant,
    fut: impl Future<Output = Result<T, SourceError>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::warn!(step, code = e.code(), error = %chain(&e), "prefetch step failed");
            Err(format!("{step}: {e}"))
        }
        Err(_) => {
            tracing::warn!(step, "prefetch step cut at the deadline");
            Err(format!("{step}: cut at the prefetch deadline"))
        }
    }
}

/// The prefetch worker: the context sources (whose cache it fills) and the transition counts.
#[derive(Debug)]
pub struct Prefetcher<X, T> {
    sources: X,
    transitions: T,
    config: PrefetchConfig,
}

impl<X: ContextSources, T: TransitionStore> Prefetcher<X, T> {
    pub fn new(sources: X, transitions: T, config: PrefetchConfig) -> Self {
        Self { sources, transitions, config }
    }

    pub fn sources(&self) -> &X {
        &self.sources
    }

    pub fn transitions(&self) -> &T {
        &self.transitions
    }

    pub fn config(&self) -> &PrefetchConfig {
        &self.config
    }

    /// Prefetches for `job`; never fails, what went wrong is in the report.
    pub async fn run(&self, job: &PrefetchJob) -> PrefetchReport {
        let start = Instant::now();
        let deadline = start + self.config.timeout;
        let mut report = PrefetchReport { message_id: job.message_id.clone(), ..PrefetchReport::default() };
        // Boxed: the nested service futures would otherwise make every caller's future type deep enough to hit
        // the compiler's recursion limit; one allocation per job is nothing next to the network calls.
        Box::pin(self.run_until(job, deadline, &mut report)).await;
        report.elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(
            message_id = job.message_id,
            duplicate = report.duplicate,
            written = report.written.len(),
            skipped = report.skipped.len(),
            errors = report.errors.len(),
            elapsed_ms = report.elapsed_ms,
            "prefetch done"
        );
        report
    }

    async fn run_until(&self, job: &PrefetchJob, deadline: Instant, report: &mut PrefetchReport) {
        let Some(intent) = Intent::parse(&job.intent) else {
            report.errors.push(format!("job: unknown intent {:?}", job.intent));
            return;
        };
        let claim_key = claim_key(&job.message_id);
        let claim = self.sources.cache_set_if_absent(&claim_key, "1", self.config.claim_ttl);
        match bounded("claim", deadline, claim).await {
            Ok(true) => {}
            Ok(false) => {
                report.duplicate = true;
                return;
            }
            Err(e) => {
                // Without the claim a retry could double the work and the counts: do nothing.
                report.errors.push(e);
                return;
            }
        }
        let observe = async {
            match job.previous_intent.as_deref() {
                Some(prev) if Intent::parse(prev).is_some() => {
                    bounded("observe", deadline, self.transitions.observe(prev, intent.as_str())).await
                }
                _ => Ok(()),
            }
        };
        let counts = bounded("counts", deadline, self.transitions.counts(intent.as_str()));
        let (observed, counts) = tokio::join!(observe, counts);
        report.errors.extend(observed.err());
        let counts = counts.unwrap_or_else(|e| {
            report.errors.push(e);
            HashMap::new()
        });
        let (basis, predictions) = predict(intent, &counts, self.config.min_observations);
        let selected = select(predictions, self.config.threshold);
        let work = plan(&selected, &job.products, &job.user_id, self.config.top_products);
        report.basis = Some(basis);
        report.predicted = selected;

        let all = work.keys();
        if all.is_empty() {
            return;
        }
        let cached = match bounded("cache", deadline, self.sources.cache_get(&all)).await {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(e);
                vec![None; all.len()]
            }
        };
        let is_cached = |key: &str| all.iter().zip(&cached).any(|(k, v)| k == key && v.is_some());
        let lookups: Vec<Lookup> = work.lookups.into_iter().filter(|l| !is_cached(&l.key())).collect();
        let rag: Vec<(Intent, String)> =
            work.rag.into_iter().filter(|(i, a)| !is_cached(&keys::rag(i.as_str(), a))).collect();
        report.skipped = all.iter().zip(&cached).filter(|(_, v)| v.is_some()).map(|(k, _)| k.clone()).collect();

        let fetches = futures_util::future::join_all(lookups.iter().map(|l| self.fetch_one(l, deadline)));
        let retrievals = futures_util::future::join_all(rag.iter().map(|(i, a)| self.retrieve_one(*i, a, deadline)));
        let (fetched, retrieved) = tokio::join!(fetches, retrievals);
        for res in fetched.into_iter().chain(retrieved) {
            match res {
                Ok(Some(key)) => report.written.push(key),
                Ok(None) => {}
                Err(e) => report.errors.push(e),
            }
        }
    }

    /// One service call and its cache write; `None` when the service has nothing for it.
    async fn fetch_one(&self, l: &Lookup, deadline: Instant) -> Result<Option<String>, String> {
        let key = l.key();
        let Some(value) = bounded(&key, deadline, self.sources.fetch(l)).await? else {
            return Ok(None);
        };
        bounded(&key, deadline, self.sources.cache_set(&key, &value.to_string(), l.ttl())).await?;
        Ok(Some(key))
    }

    /// One retrieval (the product's ASIN as the query, filtered as `next` would be) and its cache write.
    async fn retrieve_one(&self, next: Intent, asin: &str, deadline: Instant) -> Result<Option<String>, String> {
        let key = keys::rag(next.as_str(), asin);
        let chunks = bounded(&key, deadline, self.sources.retrieve(asin, next, self.config.rag_top_k)).await?;
        if chunks.is_empty() {
            return Ok(None);
        }
        let cached: Vec<CachedChunk<'_>> =
            chunks.iter().map(|c| CachedChunk { content: &c.content, score: c.score, tokens: c.tokens }).collect();
        let text = serde_json::to_string(&cached).map_err(|e| format!("{key}: {e}"))?;
        bounded(&key, deadline, self.sources.cache_set(&key, &text, keys::RAG_TTL)).await?;
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::RagChunk;
    use std::collections::HashSet;
    use std::sync::Mutex;

    fn asins(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("B0AAAAAAA{i}")).collect()
    }

    fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn the_prior_is_the_design_table_and_its_rows_sum_below_one() {
        assert_eq!(PRIOR.len(), 3);
        for (from, rows) in PRIOR {
            let sum: f64 = rows.iter().map(|r| r.probability).sum();
            assert!(sum <= 1.0, "{from:?}");
        }
        let (basis, p) = predict(Intent::ProductDiscovery, &HashMap::new(), 20);
        assert_eq!(basis, Basis::Prior);
        let names: Vec<_> = p.iter().map(|p| (p.intent, p.probability)).collect();
        assert_eq!(
            names,
            [(Intent::ProductQuestion, 0.45), (Intent::Recommendation, 0.30), (Intent::CheckoutHelp, 0.10)]
        );
    }

    #[test]
    fn only_predictions_at_or_above_the_threshold_are_selected() {
        let (_, p) = predict(Intent::ProductQuestion, &HashMap::new(), 20);
        let kept: Vec<_> = select(p, DEFAULT_THRESHOLD).into_iter().map(|p| p.intent).collect();
        assert_eq!(kept, [Intent::CheckoutHelp, Intent::Recommendation], "0.25 is kept, 0.20 is not");
        let (_, p) = predict(Intent::General, &HashMap::new(), 20);
        assert!(p.is_empty(), "no data on general chat: nothing is predicted");
    }

    #[test]
    fn observed_frequencies_replace_the_prior_once_there_are_enough() {
        let few = counts(&[("faq", 19)]);
        assert_eq!(predict(Intent::ProductDiscovery, &few, 20).0, Basis::Prior);
        let enough = counts(&[("promotion", 12), ("product_question", 6), ("faq", 2), ("not_an_intent", 0)]);
        let (basis, p) = predict(Intent::ProductDiscovery, &enough, 20);
        assert_eq!(basis, Basis::Learned);
        let got: Vec<_> = p.iter().map(|p| (p.intent, p.probability)).collect();
        assert_eq!(got, [(Intent::Promotion, 0.6), (Intent::ProductQuestion, 0.3), (Intent::Faq, 0.1)]);
        assert_eq!(p[0].kinds, &[Promotions]);
        assert_eq!(p[1].kinds, &[ProductDetails, Reviews], "the prior's row is kept for a known pair");
    }

    #[test]
    fn a_discovery_turn_plans_details_reviews_similar_items_and_rag_for_the_first_product() {
        let (_, p) = predict(Intent::ProductDiscovery, &HashMap::new(), 20);
        let w = plan(&select(p, DEFAULT_THRESHOLD), &asins(4), "u1", 3);
        let a = asins(3);
        let mut want: Vec<Lookup> = a.iter().map(|x| Lookup::Product(x.clone())).collect();
        want.extend(a.iter().map(|x| Lookup::Review(x.clone())));
        want.push(Lookup::Reco { user: "u1".into(), asin: a[0].clone() });
        assert_eq!(w.lookups, want);
        assert_eq!(w.rag, [(Intent::ProductQuestion, a[0].clone()), (Intent::Recommendation, a[0].clone())]);
    }

    #[test]
    fn cart_context_is_skipped_and_promotions_are_deduplicated() {
        let p = vec![
            Prediction { intent: Intent::CheckoutHelp, probability: 0.5, kinds: &[CartContext, Promotions] },
            Prediction { intent: Intent::ProductDiscovery, probability: 0.3, kinds: &[TrendingItems] },
        ];
        let w = plan(&p, &[], "u1", 3);
        assert_eq!(w.lookups, [Lookup::Promo]);
        assert!(w.rag.is_empty(), "no product, nothing to retrieve about");
    }

    #[test]
    fn the_job_round_trips_through_json_and_rejects_unknown_fields() {
        let job: PrefetchJob = serde_json::from_value(serde_json::json!({
            "session_id": "s", "user_id": "u", "message_id": "m", "intent": "recommendation",
            "previous_intent": "product_discovery", "products": ["B0AAAAAAA1"], "page_context": {"a": 1}
        }))
        .unwrap();
        assert_eq!(serde_json::from_value::<PrefetchJob>(serde_json::to_value(&job).unwrap()).unwrap(), job);
        let extra = serde_json::json!({"session_id": "s", "user_id": "u", "message_id": "m", "intent": "x", "y": 1});
        assert!(serde_json::from_value::<PrefetchJob>(extra).is_err());
    }

    /// Sources with one cache (claims included), scripted latency and counted service calls.
    #[derive(Default)]
    struct Fake {
        cache: Mutex<HashMap<String, String>>,
        service: Duration,
        calls: Mutex<Vec<String>>,
    }

    impl ContextSources for Fake {
        async fn retrieve(&self, q: &str, _: Intent, _: usize) -> Result<Vec<RagChunk>, SourceError> {
            Ok(vec![RagChunk { content: format!("about {q}"), score: 1.0, tokens: Some(2) }])
        }
        async fn cache_get(&self, keys: &[String]) -> Result<Vec<Option<String>>, SourceError> {
            let c = self.cache.lock().unwrap();
            Ok(keys.iter().map(|k| c.get(k).cloned()).collect())
        }
        async fn cache_set(&self, k: &str, v: &str, _: Duration) -> Result<(), SourceError> {
            self.cache.lock().unwrap().insert(k.to_owned(), v.to_owned());
            Ok(())
        }
        async fn cache_set_if_absent(&self, k: &str, v: &str, _: Duration) -> Result<bool, SourceError> {
            let mut c = self.cache.lock().unwrap();
            if c.contains_key(k) {
                return Ok(false);
            }
            c.insert(k.to_owned(), v.to_owned());
            Ok(true)
        }
        async fn fetch(&self, l: &Lookup) -> Result<Option<Value>, SourceError> {
            self.calls.lock().unwrap().push(l.key());
            tokio::time::sleep(self.service).await;
            Ok(Some(serde_json::json!({ "key": l.key() })))
        }
    }

    #[derive(Default)]
    struct Counts(Mutex<HashMap<(String, String), u64>>);

    impl TransitionStore for Counts {
        async fn observe(&self, from: &str, to: &str) -> Result<(), SourceError> {
            *self.0.lock().unwrap().entry((from.to_owned(), to.to_owned())).or_default() += 1;
            Ok(())
        }
        async fn counts(&self, from: &str) -> Result<HashMap<String, u64>, SourceError> {
            let m = self.0.lock().unwrap();
            Ok(m.iter().filter(|((f, _), _)| f == from).map(|((_, t), n)| (t.clone(), *n)).collect())
        }
    }

    fn job(id: &str) -> PrefetchJob {
        PrefetchJob {
            session_id: "s".into(),
            user_id: "u1".into(),
            message_id: id.into(),
            previous_intent: Some("product_discovery".into()),
            intent: "recommendation".into(),
            products: asins(2),
            page_context: Map::new(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_run_for_the_same_message_does_nothing() {
        let p = Prefetcher::new(Fake::default(), Counts::default(), PrefetchConfig::default());
        let first = p.run(&job("m1")).await;
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        let written: HashSet<_> = first.written.iter().cloned().collect();
        let want: HashSet<String> =
            ["product:B0AAAAAAA1", "product:B0AAAAAAA2", "review:B0AAAAAAA1", "review:B0AAAAAAA2"]
                .into_iter()
                .map(String::from)
                .chain([keys::rag("product_question", "B0AAAAAAA1")])
                .collect();
        assert_eq!(written, want, "recommendation -> product_question (0.50) only");
        let calls = p.sources().calls.lock().unwrap().len();

        let again = p.run(&job("m1")).await;
        assert!(again.duplicate && again.written.is_empty());
        assert_eq!(p.sources().calls.lock().unwrap().len(), calls);
        let c = p.transitions().counts("product_discovery").await.unwrap();
        assert_eq!(c.get("recommendation"), Some(&1), "the retry was not counted");

        let other = p.run(&job("m2")).await;
        assert_eq!(other.written, Vec::<String>::new(), "a new message finds everything cached");
        assert_eq!(other.skipped.len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_service_is_cut_at_the_overall_deadline() {
        let fake = Fake { service: Duration::from_secs(60), ..Fake::default() };
        let cfg = PrefetchConfig { timeout: Duration::from_millis(300), ..PrefetchConfig::default() };
        let p = Prefetcher::new(fake, Counts::default(), cfg);
        let r = p.run(&job("m1")).await;
        assert!((300.0..301.0).contains(&r.elapsed_ms), "{}", r.elapsed_ms);
        assert_eq!(r.errors.len(), 4, "{:?}", r.errors);
        assert_eq!(r.written, [keys::rag("product_question", "B0AAAAAAA1")], "retrieval still landed");
    }

    #[tokio::test]
    async fn an_unknown_intent_claims_nothing() {
        let p = Prefetcher::new(Fake::default(), Counts::default(), PrefetchConfig::default());
        let r = p.run(&PrefetchJob { intent: "shopping".into(), ..job("m1") }).await;
        assert_eq!(r.errors.len(), 1);
        assert!(p.sources().cache.lock().unwrap().is_empty());
    }
}
