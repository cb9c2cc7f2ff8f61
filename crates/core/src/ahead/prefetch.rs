//! Speculative prefetch: after a turn, predict what the shopper will ask next and put the context that
//! follow-up needs (service data and retrieved chunks) into the cache before they ask.
//!
//! ```text
//! chat turn ── completed ── PrefetchQueue::enqueue(job) ──async──> Prefetcher::run(job)
//!   claim prefetch:{message_id} (SET NX) ── observe previous -> intent ── predict ── plan
//!   ── one cache read (skip what is cached) ── services + retrieval side by side ── cache writes
//! ```
//!
//! The entries it writes are the turn's own ([`crate::cache::Lookup`]): same keys, same TTLs, same
//! top-k, so what is prefetched is exactly what the follow-up reads.
//!
//! ```text
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

use crate::protocol::PageContext;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::cache::{Lookup, prefetch_claim};
use crate::deadline::bounded;
use crate::ids::{Asin, MessageId, SessionId, UserId};
use crate::intent::Intent;
use crate::ports::sources::{ContextSources, SourceError};

/// The async-invoke payload: what the turn that just finished knew.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefetchJob {
    pub session_id: SessionId,
    pub user_id: UserId,
    /// The user holds a guest token (a guest's day is smaller: what pre-generation may spend of it).
    #[serde(default)]
    pub guest: bool,
    /// The turn that just finished; the idempotency key.
    pub message_id: MessageId,
    /// The intent of the turn before it (`None` on the first turn of a session).
    #[serde(default)]
    pub previous_intent: Option<Intent>,
    /// The intent of the turn that just finished.
    pub intent: Intent,
    /// ASINs mentioned in the answer, in order.
    #[serde(default)]
    pub products: Vec<Asin>,
    #[serde(default)]
    pub page_context: PageContext,
    /// The exchanges the next turn will have verbatim, oldest first (this one last): what pre-generation
    /// puts in the follow-up's prompt, as the turn would.
    #[serde(default)]
    pub history: Vec<Exchange>,
    /// The session's running summary, when it has one.
    #[serde(default)]
    pub summary: Option<String>,
    /// The products of the answer before this one (their pre-generated answers are now out of reach).
    #[serde(default)]
    pub previous_products: Vec<Asin>,
    /// The chat turn pre-generated for this answer's products while it streamed
    /// ([`crate::turn`]'s early pre-generation): the worker only prefetches context.
    #[serde(default)]
    pub pregenerated: bool,
}

/// One question and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    pub user: String,
    pub assistant: String,
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
/// what a turn of that intent looks up (the assembler's table in [`crate::gather::lookups`]).
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

/// Maps the selected predictions to cache entries: details and reviews for the top `top_products`, similar
/// items seeded by the first product, promotions (also for trending items), and the passages each predicted
/// intent would read about the first product; cart context is skipped. No duplicates, prediction order.
pub fn plan(predictions: &[Prediction], products: &[Asin], user: &UserId, top_products: usize) -> Vec<Lookup> {
    let mut out = Vec::new();
    let top = &products[..products.len().min(top_products)];
    let mut push = |l: Lookup| {
        if !out.contains(&l) {
            out.push(l);
        }
    };
    for p in predictions {
        for kind in p.kinds {
            match kind {
                ProductDetails => top.iter().for_each(|a| push(Lookup::Product(a.clone()))),
                Reviews => top.iter().for_each(|a| push(Lookup::Review(a.clone()))),
                SimilarItems => {
                    if let Some(a) = products.first() {
                        push(Lookup::Reco { user: user.clone(), asin: a.clone() });
                    }
                }
                Promotions | TrendingItems => push(Lookup::Promo),
                CartContext => {}
            }
        }
    }
    if let Some(a) = products.first() {
        for p in predictions {
            push(Lookup::Rag { intent: p.intent, asin: a.clone() });
        }
    }
    out
}

/// Counts of observed intent transitions (Redis hashes in production).
pub trait TransitionStore: Send + Sync {
    /// Counts one transition `from` -> `to`.
    fn observe(&self, from: Intent, to: Intent) -> impl Future<Output = Result<(), SourceError>> + Send;
    /// Next intent name -> times observed after `from` (names as stored: an unknown one is never predicted).
    fn counts(&self, from: Intent) -> impl Future<Output = Result<HashMap<String, u64>, SourceError>> + Send;
}

impl<T: TransitionStore> TransitionStore for std::sync::Arc<T> {
    fn observe(&self, from: Intent, to: Intent) -> impl Future<Output = Result<(), SourceError>> + Send {
        (**self).observe(from, to)
    }
    fn counts(&self, from: Intent) -> impl Future<Output = Result<HashMap<String, u64>, SourceError>> + Send {
        (**self).counts(from)
    }
}

/// No store configured: nothing is counted, so the prior always decides.
impl<T: TransitionStore> TransitionStore for Option<T> {
    async fn observe(&self, from: Intent, to: Intent) -> Result<(), SourceError> {
        match self {
            Some(t) => t.observe(from, to).await,
            None => Ok(()),
        }
    }
    async fn counts(&self, from: Intent) -> Result<HashMap<String, u64>, SourceError> {
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
            claim_ttl: Duration::from_secs(3600),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrefetchReport {
    pub message_id: Option<MessageId>,
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
    /// Speculative pre-generation, when a product question was predicted.
    pub pregen: Option<PregenReport>,
    pub elapsed_ms: f64,
}

/// The prefetch worker: the context sources (whose cache it fills), the transition counts, and the
/// pre-generation step.
#[derive(Debug)]
pub struct Prefetcher<X, T, G = NoPregen> {
    sources: X,
    transitions: T,
    config: PrefetchConfig,
    pregen: G,
}

impl<X: ContextSources, T: TransitionStore> Prefetcher<X, T, NoPregen> {
    pub fn new(sources: X, transitions: T, config: PrefetchConfig) -> Self {
        Self { sources, transitions, config, pregen: NoPregen }
    }
}

impl<X: ContextSources, T: TransitionStore, G: Pregenerate> Prefetcher<X, T, G> {
    /// Pre-generates answers to predicted overview follow-ups after the context prefetch.
    pub fn with_pregen<G2: Pregenerate>(self, pregen: G2) -> Prefetcher<X, T, G2> {
        Prefetcher { sources: self.sources, transitions: self.transitions, config: self.config, pregen }
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
        let mut report = PrefetchReport { message_id: Some(job.message_id.clone()), ..PrefetchReport::default() };
        // Boxed: the nested service futures would otherwise make every caller's future type deep enough to hit
        // the compiler's recursion limit; one allocation per job is nothing next to the network calls.
        Box::pin(self.run_until(job, deadline, &mut report)).await;
        // Pre-generation has its own deadline: it waits for the model, which the context prefetch must not.
        let predicted = report.predicted.iter().any(|p| p.intent == Intent::ProductQuestion);
        if !report.duplicate && !job.pregenerated && predicted {
            report.pregen = Some(Box::pin(self.pregen.pregenerate(&self.sources, job)).await);
        }
        report.elapsed_ms = start.elapsed().as_secs_f64() * 1000.0;
        let pregen = report.pregen.as_ref();
        tracing::info!(
            message_id = %job.message_id,
            duplicate = report.duplicate,
            written = report.written.len(),
            skipped = report.skipped.len(),
            errors = report.errors.len(),
            pregen_generated = pregen.map_or(0, |p| p.generated.len()),
            pregen_output_tokens = pregen.map_or(0, |p| p.output_tokens),
            pregen_wasted_tokens = pregen.map_or(0, |p| p.wasted_tokens),
            elapsed_ms = report.elapsed_ms,
            "prefetch done"
        );
        report
    }

    async fn run_until(&self, job: &PrefetchJob, deadline: Instant, report: &mut PrefetchReport) {
        let claim_key = prefetch_claim(&job.message_id);
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
            match job.previous_intent {
                Some(prev) => bounded("observe", deadline, self.transitions.observe(prev, job.intent)).await,
                None => Ok(()),
            }
        };
        let counts = bounded("counts", deadline, self.transitions.counts(job.intent));
        let (observed, counts) = tokio::join!(observe, counts);
        report.errors.extend(observed.err());
        let counts = counts.unwrap_or_else(|e| {
            report.errors.push(e);
            HashMap::new()
        });
        let (basis, predictions) = predict(job.intent, &counts, self.config.min_observations);
        let selected = select(predictions, self.config.threshold);
        let work = plan(&selected, &job.products, &job.user_id, self.config.top_products);
        report.basis = Some(basis);
        report.predicted = selected;
        if work.is_empty() {
            return;
        }

        let all: Vec<String> = work.iter().map(Lookup::key).collect();
        let cached = match bounded("cache", deadline, self.sources.cache_get(&all)).await {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(e);
                vec![None; all.len()]
            }
        };
        let mut todo = Vec::new();
        for ((l, key), hit) in work.into_iter().zip(all).zip(cached) {
            match hit {
                Some(_) => report.skipped.push(key),
                None => todo.push(l),
            }
        }
        let fetched = futures_util::future::join_all(todo.iter().map(|l| self.fetch_one(l, deadline))).await;
        for res in fetched {
            match res {
                Ok(Some(key)) => report.written.push(key),
                Ok(None) => {}
                Err(e) => report.errors.push(e),
            }
        }
    }

    /// One entry from its source and its cache write; `None` when the source has nothing for it.
    async fn fetch_one(&self, l: &Lookup, deadline: Instant) -> Result<Option<String>, String> {
        let key = l.key();
        let Some(value) = bounded(&key, deadline, self.sources.fetch(l)).await? else {
            return Ok(None);
        };
        bounded(&key, deadline, self.sources.cache_set(&key, &value.to_string(), l.ttl())).await?;
        Ok(Some(key))
    }
}

mod budget;
mod pregen;

pub use budget::Budgeted;
pub use pregen::{Facts, Generator, NoPregen, Outcome, PregenReport, Pregenerate, Pregenerator, facts_keys};

#[cfg(test)]
mod tests;
