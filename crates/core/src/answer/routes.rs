//! Which model a turn asks, and opening its stream: the provisioned-throughput ARN while the reconciler's
//! `CONFIG/THROUGHPUT` record says `InService`, else the on-demand model (or inference profile). The record
//! is cached for a short TTL and refreshed beside the turn's other first reads, so a refresh never adds
//! latency. The same record says whether the peak's priority service tier is in force
//! ([`Routes::priority_tier_now`]).
//!
//! The plan, before anything has been sent to the client: provisioned (when in service), on-demand, then
//! the fallback model when one is configured. [`open_stream`] walks it until a first text delta arrives,
//! so the relay starts with a stream that is known to answer. Its one retry rule:
//!
//! - a retryable failure (throttle, 5xx, no first token in time) moves to the next route at once, for
//!   `attempts` attempts (the failover);
//! - after that, only a throttle is tried again, round the plan's routes, after a full-jitter exponential
//!   backoff, while the time spent plus the next wait stays within `throttle_retry_budget`;
//! - a provisioned ARN that Bedrock no longer knows (`ResourceNotFoundException`: deleted while the route
//!   was cached) is dropped from the plan at once, without costing an attempt, and [`Routes`] is told, so
//!   later turns do not try it again;
//! - anything else (a refused request) ends the turn's model call.
//!
//! After the first token nothing is retried: the client has seen part of the answer.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::capacity::{RouteRecord, ThroughputStateStore, provisioned_route};
use crate::deadline::within;
use crate::error::{ModelError, StoreError, chain};
use crate::ports::{ModelClient, ModelEvent, ModelRequest, ModelStream};
pub use crate::protocol::Route;

/// Reads the provisioned ARN that is in service, if any. Called once per TTL per container, so a boxed
/// future is fine here.
pub trait RouteLoader: Send + Sync {
    fn provisioned_arn(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>>;

    /// The whole record the turn routes by (the ARN and the peak's priority tier); a loader that knows only
    /// the ARN never turns the priority tier on.
    fn route_record(&self) -> BoxFuture<'_, Result<RouteRecord, StoreError>> {
        Box::pin(async move { Ok(RouteRecord { arn: self.provisioned_arn().await?, priority: false }) })
    }
}

impl<T: ThroughputStateStore> RouteLoader for T {
    fn provisioned_arn(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move { Ok(provisioned_route(self.load().await?.as_ref()).map(str::to_owned)) })
    }

    fn route_record(&self) -> BoxFuture<'_, Result<RouteRecord, StoreError>> {
        Box::pin(async move { Ok(self.load().await?.map(|s| s.route_record()).unwrap_or_default()) })
    }
}

/// The cached route table.
pub struct Routes {
    loader: Option<Box<dyn RouteLoader>>,
    ttl: Duration,
    cached: Mutex<Option<(Instant, RouteRecord)>>,
    /// A provisioned ARN the model service said does not exist: never routed to again, whatever the
    /// stored record says (a new purchase has a new ARN).
    gone: Mutex<Option<String>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("ttl", &self.ttl)
            .field("cached", &self.cached)
            .field("gone", &self.gone)
            .finish_non_exhaustive()
    }
}

impl Default for Routes {
    /// On-demand only.
    fn default() -> Self {
        Self { loader: None, ttl: Duration::from_secs(30), cached: Mutex::new(None), gone: Mutex::new(None) }
    }
}

impl Routes {
    pub fn new(loader: impl RouteLoader + 'static, ttl: Duration) -> Self {
        Self { loader: Some(Box::new(loader)), ttl, ..Self::default() }
    }

    /// The provisioned ARN to use now, from the cache or (after the TTL) the store. A failed read keeps the
    /// last known answer. An ARN reported gone is never returned.
    pub async fn provisioned(&self) -> Option<String> {
        self.usable(self.record().await?.arn)
    }

    /// Whether a request to `model_id` should carry the priority service tier now: the reconciler's record
    /// says the peak's priority tier is in force (the 09:00-23:00 schedule or the latency alarm, under any
    /// peak plan) and the model's family offers the tier (the capability table). Read from the same cached
    /// record as [`Routes::provisioned`], so after that call it costs no read. A request routed to a
    /// provisioned ARN is served by the provisioned throughput: the caller asks only for on-demand models.
    pub async fn priority_tier_now(&self, model_id: &str) -> bool {
        let on = self.record().await.is_some_and(|r| r.priority);
        on && crate::models::family(model_id).is_some_and(|f| f.priority_tier)
    }

    /// The record, from the cache or (after the TTL) the store; a failed read keeps the last known one.
    async fn record(&self) -> Option<RouteRecord> {
        let loader = self.loader.as_ref()?;
        let cached = self.cached.lock().ok().and_then(|c| c.clone());
        if let Some((at, record)) = &cached
            && at.elapsed() < self.ttl
        {
            return Some(record.clone());
        }
        match loader.route_record().await {
            Ok(record) => {
                if let Ok(mut c) = self.cached.lock() {
                    *c = Some((Instant::now(), record.clone()));
                }
                Some(record)
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not read the throughput state; keeping the last route");
                cached.map(|(_, record)| record)
            }
        }
    }

    /// Called when the model service does not know `arn` (deleted while the route was cached): later turns
    /// go on-demand at once, and the next one reads the record again.
    pub fn out_of_service(&self, arn: &str) {
        tracing::warn!(arn, "provisioned throughput not found; routing on-demand and re-reading the route");
        if let Ok(mut g) = self.gone.lock() {
            *g = Some(arn.to_owned());
        }
        if let Ok(mut c) = self.cached.lock() {
            *c = None;
        }
    }

    fn usable(&self, arn: Option<String>) -> Option<String> {
        let gone = self.gone.lock().ok().and_then(|g| g.clone());
        arn.filter(|a| gone.as_deref() != Some(a.as_str()))
    }
}

/// The models to try, in order, for a turn: the provisioned ARN when in service, the on-demand model, the
/// fallback model when it differs from the on-demand one.
pub fn plan(provisioned: Option<&str>, on_demand: &str, fallback: Option<&str>) -> Vec<(String, Route)> {
    let mut out = Vec::with_capacity(3);
    if let Some(arn) = provisioned {
        out.push((arn.to_owned(), Route::Provisioned));
    }
    out.push((on_demand.to_owned(), Route::OnDemand));
    if let Some(fb) = fallback.filter(|fb| *fb != on_demand) {
        out.push((fb.to_owned(), Route::OnDemand));
    }
    out
}

/// How hard to try for a first token before anything is sent.
#[derive(Debug, Clone, Copy)]
pub struct FailoverConfig {
    /// Immediate attempts along the plan (1 = no failover, at most 3).
    pub attempts: u32,
    /// Deadline for one attempt's first token.
    pub first_token_timeout: Duration,
    /// How long, from the first attempt, throttled attempts may go on being retried with backoff (the time
    /// spent plus the next wait must fit); zero: a throttle after the failover is the turn's error.
    pub throttle_retry_budget: Duration,
    /// The waits between throttle retries.
    pub backoff: Backoff,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            first_token_timeout: Duration::from_secs(5),
            throttle_retry_budget: Duration::from_millis(1500),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(400)),
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// The next route, now.
    Failover,
    /// The next route, after this wait.
    Backoff(Duration),
    GiveUp,
}

impl FailoverConfig {
    /// The retry rule (see the module docs): `attempt` attempts made so far, `retries` of them after a
    /// backoff, `elapsed` since the first was sent.
    fn next(&self, err: &ModelError, attempt: u32, retries: u32, elapsed: Duration) -> Next {
        if !err.is_retryable() {
            return Next::GiveUp;
        }
        if attempt < self.attempts.clamp(1, 3) {
            return Next::Failover;
        }
        if !matches!(err, ModelError::Throttled(_)) {
            return Next::GiveUp;
        }
        let wait = self.backoff.delay(retries);
        if elapsed + wait <= self.throttle_retry_budget { Next::Backoff(wait) } else { Next::GiveUp }
    }
}

/// A model stream whose first events were read while deciding whether to fail over.
pub struct Primed<S> {
    head: std::vec::IntoIter<ModelEvent>,
    rest: S,
}

impl<S> Primed<S> {
    /// `head` (events already read), then `rest`.
    pub fn new(head: Vec<ModelEvent>, rest: S) -> Self {
        Self { head: head.into_iter(), rest }
    }

    /// The underlying stream.
    pub fn rest(&self) -> &S {
        &self.rest
    }
}

impl<S: ModelStream> ModelStream for Primed<S> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        match self.head.next() {
            Some(ev) => Some(Ok(ev)),
            None => self.rest.next().await,
        }
    }
}

/// A stream that has produced its first text delta (or ended without one).
pub struct Opened<S> {
    pub stream: Primed<S>,
    /// The model id or ARN that answers.
    pub model: String,
    pub route: Route,
    /// Attempts that failed before this one.
    pub failovers: u32,
    /// When the answering request was sent.
    pub sent_at: Instant,
}

/// Reads events until the first text delta; the events read are kept for the relay.
pub(crate) async fn first_text<S: ModelStream>(mut stream: S) -> Result<(S, Vec<ModelEvent>), ModelError> {
    let mut head = Vec::new();
    loop {
        match stream.next().await {
            Some(Ok(ev @ ModelEvent::Text(_))) => {
                head.push(ev);
                return Ok((stream, head));
            }
            Some(Ok(ev)) => head.push(ev),
            Some(Err(e)) => return Err(e),
            None => return Ok((stream, head)),
        }
    }
}

/// Opens the model stream for `base` along `plan`, following the module's retry rule while nothing has
/// been sent. `failovers` in the result counts every failed attempt before the answering one.
pub async fn open_stream<M: ModelClient>(
    model: &M,
    base: &ModelRequest,
    plan: &[(String, Route)],
    cfg: &FailoverConfig,
    routes: &Routes,
) -> Result<Opened<M::Stream>, ModelError> {
    let mut plan: Vec<&(String, Route)> = plan.iter().collect();
    let started = Instant::now();
    // Attempts that count against `attempts`, retries after a backoff, failed attempts of any kind.
    let (mut attempt, mut retries, mut failed) = (0u32, 0u32, 0u32);
    let mut next_route = 0usize;
    let mut req = base.clone();
    loop {
        let Some(&entry) = plan.get(next_route % plan.len().max(1)) else { return Err(ModelError::Timeout(0)) };
        let (model_id, route) = (&entry.0, entry.1);
        req.model_id.clone_from(model_id);
        let sent_at = Instant::now();
        let first = async { first_text(model.converse_stream(&req).await?).await };
        let err = match within("first token", cfg.first_token_timeout, first).await {
            Ok(Ok((rest, head))) => {
                let stream = Primed { head: head.into_iter(), rest };
                return Ok(Opened { stream, model: model_id.clone(), route, failovers: failed, sent_at });
            }
            Ok(Err(e)) => e,
            Err(late) => ModelError::Timeout(late.ms),
        };
        failed += 1;
        if route == Route::Provisioned && matches!(err, ModelError::NotFound(..)) && plan.len() > 1 {
            tracing::warn!(model_id, error = %chain(&err), "provisioned throughput gone before first token; failing over");
            routes.out_of_service(model_id);
            plan.remove(next_route % plan.len());
            continue;
        }
        attempt += 1;
        match cfg.next(&err, attempt, retries, started.elapsed()) {
            Next::GiveUp => return Err(err),
            Next::Failover => {
                tracing::warn!(attempt, model_id, code = %err.code(), error = %chain(&err), "model attempt failed before first token; failing over");
            }
            Next::Backoff(wait) => {
                retries += 1;
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                tracing::info!(
                    attempt,
                    model_id,
                    wait_ms,
                    "model throttled before first token; retrying after a backoff"
                );
                tokio::time::sleep(wait).await;
            }
        }
        next_route += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::ScriptedModel;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Fixed(Option<&'static str>, Arc<AtomicUsize>);

    impl RouteLoader for Fixed {
        fn provisioned_arn(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move { Ok(self.0.map(str::to_owned)) })
        }
    }

    #[test]
    fn in_service_capacity_is_tried_first_then_on_demand_then_the_fallback() {
        let p = plan(Some("arn:pt"), "m", Some("fb"));
        assert_eq!(p[0], ("arn:pt".to_owned(), Route::Provisioned));
        assert_eq!(p[1], ("m".to_owned(), Route::OnDemand));
        assert_eq!(p[2], ("fb".to_owned(), Route::OnDemand));
        let p = plan(None, "m", Some("fb"));
        assert_eq!((p[0].0.as_str(), p[1].0.as_str()), ("m", "fb"));
        assert_eq!(plan(None, "m", None), [("m".to_owned(), Route::OnDemand)]);
        assert_eq!(plan(None, "m", Some("m")).len(), 1);
    }

    /// A model that refuses the first requests with the given errors, then answers.
    fn refusing(errors: impl IntoIterator<Item = ModelError>) -> ScriptedModel {
        ScriptedModel::new().refusing(errors)
    }

    fn throttled() -> ModelError {
        ModelError::Throttled("429".into())
    }

    fn gone() -> ModelError {
        ModelError::NotFound("The specified resource ARN was not found".into(), "404".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_provisioned_arn_fails_over_to_on_demand_and_is_not_tried_again() {
        let reads = Arc::new(AtomicUsize::new(0));
        let routes = Routes::new(Fixed(Some("arn:pt"), reads.clone()), Duration::from_secs(30));
        assert_eq!(routes.provisioned().await.as_deref(), Some("arn:pt"));
        let model = refusing([gone()]);
        let cfg = FailoverConfig { attempts: 1, throttle_retry_budget: Duration::ZERO, ..FailoverConfig::default() };
        let plan = plan(Some("arn:pt"), "m", None);
        let opened = open_stream(&model, &ModelRequest::default(), &plan, &cfg, &routes).await.unwrap();
        assert_eq!((opened.model.as_str(), opened.route, opened.failovers), ("m", Route::OnDemand, 1));
        assert_eq!(model.asked(), ["arn:pt", "m"]);
        // The route is re-read at once, and the stored record still naming the ARN does not bring it back.
        assert_eq!(routes.provisioned().await, None);
        assert_eq!(reads.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_is_retried_round_the_routes_with_backoff_within_the_budget() {
        let model = refusing([throttled(), throttled(), throttled(), throttled()]);
        let plan = plan(Some("arn:pt"), "m", Some("fb"));
        let cfg = FailoverConfig::default();
        let started = Instant::now();
        let opened = open_stream(&model, &ModelRequest::default(), &plan, &cfg, &Routes::default()).await.unwrap();
        assert_eq!(opened.failovers, 4);
        assert_eq!(model.asked(), ["arn:pt", "m", "fb", "arn:pt", "m"]);
        let at: Vec<Duration> = model.asked_at().iter().map(|t| *t - started).collect();
        // The failover is immediate; each later attempt waits at most its backoff ceiling.
        assert_eq!(at[1], Duration::ZERO);
        for (i, ceiling) in [(2, 50), (3, 100), (4, 200)] {
            assert!(at[i] - at[i - 1] <= Duration::from_millis(ceiling), "wait {i}: {:?}", at[i] - at[i - 1]);
        }
        assert!(at[4] <= cfg.throttle_retry_budget);
    }

    #[test]
    fn throttle_waits_are_full_jitter_under_a_ceiling_that_doubles_up_to_its_cap() {
        let cfg = FailoverConfig { throttle_retry_budget: Duration::from_secs(60), ..FailoverConfig::default() };
        for (retries, ceiling) in [(0, 50), (1, 100), (2, 200), (3, 400), (7, 400)] {
            let ceiling = Duration::from_millis(ceiling);
            let waits: Vec<Duration> = (0..500)
                .map(|_| match cfg.next(&throttled(), 3, retries, Duration::ZERO) {
                    Next::Backoff(w) => w,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert!(waits.iter().all(|w| *w <= ceiling), "retry {retries}: over {ceiling:?}");
            // It does wait: the draws reach the top of their range (1 in 10^60 that 500 draws miss it).
            assert!(waits.iter().any(|w| *w >= ceiling * 3 / 4), "retry {retries}: none near {ceiling:?}");
            let mean = waits.iter().sum::<Duration>() / 500;
            assert!(mean >= ceiling * 2 / 5 && mean <= ceiling * 3 / 5, "retry {retries}: mean {mean:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_that_outlasts_the_budget_is_the_turns_error() {
        let model = refusing(std::iter::repeat_with(throttled).take(1000));
        let cfg = FailoverConfig { throttle_retry_budget: Duration::from_millis(600), ..FailoverConfig::default() };
        let started = Instant::now();
        let err = open_stream(&model, &ModelRequest::default(), &plan(None, "m", None), &cfg, &Routes::default())
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), "model_throttled");
        assert!(started.elapsed() <= Duration::from_millis(600), "{:?}", started.elapsed());
        assert!(model.asked().len() > 3, "retried: {:?}", model.asked());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_budget_two_throttles_are_the_turns_error_and_a_refusal_is_never_retried() {
        let cfg = FailoverConfig { throttle_retry_budget: Duration::ZERO, ..FailoverConfig::default() };
        let model = refusing([throttled(), throttled()]);
        let err = open_stream(&model, &ModelRequest::default(), &plan(None, "m", None), &cfg, &Routes::default())
            .await
            .err()
            .unwrap();
        assert_eq!((err.code().as_str(), model.asked().len()), ("model_throttled", 2));

        let model = refusing([ModelError::Rejected("bad".into(), "400".into())]);
        let cfg = FailoverConfig::default();
        let err = open_stream(&model, &ModelRequest::default(), &plan(None, "m", None), &cfg, &Routes::default())
            .await
            .err()
            .unwrap();
        assert_eq!((err.code().as_str(), model.asked().len()), ("model_rejected", 1));
        // An on-demand model that does not exist is a configuration error, not a failover.
        let model = refusing([gone()]);
        let err = open_stream(&model, &ModelRequest::default(), &plan(None, "m", None), &cfg, &Routes::default())
            .await
            .err()
            .unwrap();
        assert_eq!((err.code().as_str(), model.asked().len()), ("model_rejected", 1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unavailable_model_fails_over_once_and_is_not_retried_with_backoff() {
        let model = refusing([ModelError::Unavailable("503".into()), ModelError::Unavailable("503".into())]);
        let cfg = FailoverConfig::default();
        let err = open_stream(&model, &ModelRequest::default(), &plan(None, "m", Some("fb")), &cfg, &Routes::default())
            .await
            .err()
            .unwrap();
        assert_eq!((err.code().as_str(), model.asked()), ("model_unavailable", vec!["m".to_owned(), "fb".to_owned()]));
    }

    struct Peak(bool, Arc<AtomicUsize>);

    impl RouteLoader for Peak {
        fn provisioned_arn(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
            Box::pin(async { Ok(None) })
        }

        fn route_record(&self) -> BoxFuture<'_, Result<RouteRecord, StoreError>> {
            self.1.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move { Ok(RouteRecord { arn: None, priority: self.0 }) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_peak_only_models_that_offer_the_priority_tier_get_it_from_the_cached_record() {
        let reads = Arc::new(AtomicUsize::new(0));
        let routes = Routes::new(Peak(true, reads.clone()), Duration::from_secs(30));
        assert_eq!(routes.provisioned().await, None);
        assert!(routes.priority_tier_now("jp.amazon.nova-2-lite-v1:0").await);
        assert!(!routes.priority_tier_now("jp.anthropic.claude-haiku-4-5-20251001-v1:0").await, "Haiku 4.5 has none");
        assert_eq!(reads.load(Ordering::Relaxed), 1, "one read serves the route and the tier");
        let off_peak = Routes::new(Peak(false, reads), Duration::from_secs(30));
        assert!(!off_peak.priority_tier_now("jp.amazon.nova-2-lite-v1:0").await);
        assert!(!Routes::default().priority_tier_now("jp.amazon.nova-2-lite-v1:0").await, "no schedule, no tier");
        // A loader that knows only the ARN never turns it on.
        let fixed = Routes::new(Fixed(Some("arn:pt"), Arc::new(AtomicUsize::new(0))), Duration::from_secs(30));
        assert!(!fixed.priority_tier_now("jp.amazon.nova-2-lite-v1:0").await);
    }

    #[tokio::test(start_paused = true)]
    async fn the_state_is_read_once_per_ttl() {
        let reads = Arc::new(AtomicUsize::new(0));
        let routes = Routes::new(Fixed(Some("arn:pt"), reads.clone()), Duration::from_secs(30));
        assert_eq!(routes.provisioned().await.as_deref(), Some("arn:pt"));
        assert_eq!(routes.provisioned().await.as_deref(), Some("arn:pt"));
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(routes.provisioned().await.as_deref(), Some("arn:pt"));
        assert_eq!(reads.load(Ordering::Relaxed), 2);
        assert!(Routes::default().provisioned().await.is_none());
    }
}
