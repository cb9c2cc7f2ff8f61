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
//!
//! **Hedging** ([`open_hedged`], the turn's own answer; [`super::hedge`] decides when): while the first
//! attempt has no first token after the hedge delay, the plan's next route is asked too, as the next attempt
//! started early. Whichever gives a text delta first answers and the other is dropped (cancelled). If the
//! first attempt fails meanwhile, the rule above applies as usual, and where it would fail over, the
//! hedge already running *is* that failover (no new request, no backoff wait); where it would give up, the
//! hedge is dropped too. A hedge that fails changes nothing but the throttle record. The turn's deadline
//! (the caller's `timeout_at`) cuts both.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::answer::hedge::{HedgeConfig, Hedged, Hedger};
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
    /// What this container saw of each route's first tokens and throttles, for hedging.
    hedger: Hedger,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes")
            .field("ttl", &self.ttl)
            .field("cached", &self.cached)
            .field("gone", &self.gone)
            .field("hedger", &self.hedger)
            .finish_non_exhaustive()
    }
}

impl Default for Routes {
    /// On-demand only.
    fn default() -> Self {
        Self {
            loader: None,
            ttl: Duration::from_secs(30),
            cached: Mutex::new(None),
            gone: Mutex::new(None),
            hedger: Hedger::default(),
        }
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

    /// What this container has seen of the routes' first tokens and throttles.
    pub fn hedger(&self) -> &Hedger {
        &self.hedger
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
    /// A second stream on the next route when the first token is late ([`open_hedged`]).
    pub hedge: HedgeConfig,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self {
            attempts: 2,
            first_token_timeout: Duration::from_secs(5),
            throttle_retry_budget: Duration::from_millis(1500),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_millis(400)),
            hedge: HedgeConfig::default(),
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
    /// Whether a hedge was started, and whether it answered.
    pub hedge: Hedged,
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

/// One attempt: the request, up to its first text delta, within the first-token timeout.
async fn attempt<M: ModelClient>(
    model: &M,
    req: ModelRequest,
    timeout: Duration,
) -> Result<(M::Stream, Vec<ModelEvent>), ModelError> {
    let first = async { first_text(model.converse_stream(&req).await?).await };
    match within("first token", timeout, first).await {
        Ok(res) => res,
        Err(late) => Err(ModelError::Timeout(late.ms)),
    }
}

/// `base` addressed to `model_id`.
fn to(base: &ModelRequest, model_id: &str) -> ModelRequest {
    let mut req = base.clone();
    model_id.clone_into(&mut req.model_id);
    // The priority tier only where it is sold: not on provisioned throughput, not on a fallback family
    // without it (Bedrock would refuse the request).
    req.levers.priority_tier &= crate::models::family(model_id).is_some_and(|f| f.priority_tier);
    req
}

/// Opens the model stream for `base` along `plan`, following the module's retry rule while nothing has
/// been sent, without hedging (answers typed ahead, and the continuation of a pre-generated opening, whose
/// first token nobody is waiting on yet). `failovers` in the result counts every failed attempt before the
/// answering one.
pub async fn open_stream<M: ModelClient>(
    model: &M,
    base: &ModelRequest,
    plan: &[(String, Route)],
    cfg: &FailoverConfig,
    routes: &Routes,
) -> Result<Opened<M::Stream>, ModelError> {
    open(model, base, plan, cfg, routes, false).await
}

/// The same, hedged when `cfg.hedge` allows (see the module docs): the turn's own answer.
pub async fn open_hedged<M: ModelClient>(
    model: &M,
    base: &ModelRequest,
    plan: &[(String, Route)],
    cfg: &FailoverConfig,
    routes: &Routes,
) -> Result<Opened<M::Stream>, ModelError> {
    open(model, base, plan, cfg, routes, cfg.hedge.enabled).await
}

async fn open<M: ModelClient>(
    model: &M,
    base: &ModelRequest,
    plan: &[(String, Route)],
    cfg: &FailoverConfig,
    routes: &Routes,
    hedging: bool,
) -> Result<Opened<M::Stream>, ModelError> {
    let hedger = routes.hedger();
    if hedging {
        hedger.turn(&cfg.hedge);
    }
    let mut plan: Vec<&(String, Route)> = plan.iter().collect();
    // The route this turn was sent to: the key of its first-token samples.
    let routed = plan.first().map(|e| e.0.clone()).unwrap_or_default();
    let started = Instant::now();
    // Attempts that count against `attempts`, retries after a backoff, failed attempts of any kind.
    let (mut attempt_no, mut retries, mut failed) = (0u32, 0u32, 0u32);
    let mut next_route = 0usize;
    let mut hedge = Hedged::default();
    // A hedge still running: the next route's attempt, started early, with its plan entry and send time.
    let mut pending: Option<(_, &(String, Route), Instant)> = None;
    loop {
        let Some(&entry) = plan.get(next_route % plan.len().max(1)) else { return Err(ModelError::Timeout(0)) };
        let (model_id, route) = (&entry.0, entry.1);
        let (mut current, sent_at, is_hedge) = match pending.take() {
            Some((fut, e, at)) if std::ptr::eq(e, entry) => (fut, at, true),
            _ => (Box::pin(attempt(model, to(base, model_id), cfg.first_token_timeout)), Instant::now(), false),
        };
        // Only the turn's first attempt is hedged, on the plan's next route.
        let alternate = (hedging && attempt_no == 0 && failed == 0)
            .then(|| plan.get((next_route + 1) % plan.len()).copied())
            .flatten()
            .filter(|alt| alt.0 != *model_id);
        let delay = alternate.and_then(|alt| hedger.delay(&cfg.hedge, model_id, &alt.0));
        let result = match (alternate, delay) {
            (Some(alt), Some(delay)) => {
                tokio::select! {
                    res = &mut current => res,
                    () = tokio::time::sleep_until(sent_at + delay) => {
                        if hedger.take(&cfg.hedge, model_id, &alt.0) {
                            hedge.started = true;
                            tracing::info!(model_id, alternate = %alt.0, delay_ms = delay.as_millis(), "no first token yet; hedging on the next route");
                            let mut second = Box::pin(attempt(model, to(base, &alt.0), cfg.first_token_timeout));
                            let second_sent = Instant::now();
                            tokio::select! {
                                biased;
                                res = &mut current => {
                                    pending = Some((second, alt, second_sent));
                                    res
                                }
                                res = &mut second => match res {
                                    Ok((rest, head)) => {
                                        drop(current); // cancels the first request
                                        hedger.first_token(&routed, started.elapsed());
                                        hedge.won = true;
                                        hedge.loser_cancelled = true;
                                        let stream = Primed { head: head.into_iter(), rest };
                                        let (model, route) = (alt.0.clone(), alt.1);
                                        return Ok(Opened { stream, model, route, failovers: failed, sent_at: second_sent, hedge });
                                    }
                                    Err(e) => {
                                        if matches!(e, ModelError::Throttled(_)) {
                                            hedger.throttled(&alt.0);
                                        }
                                        tracing::warn!(model_id = %alt.0, code = %e.code(), error = %chain(&e), "the hedge failed; waiting on the first attempt");
                                        current.await
                                    }
                                },
                            }
                        } else {
                            current.await
                        }
                    }
                }
            }
            _ => current.await,
        };
        let err = match result {
            Ok((rest, head)) => {
                if failed == 0 {
                    hedger.first_token(&routed, started.elapsed());
                }
                // A hedge still running lost: dropped with `pending`, which cancels it.
                hedge.loser_cancelled |= pending.is_some();
                hedge.won |= is_hedge;
                let stream = Primed { head: head.into_iter(), rest };
                return Ok(Opened { stream, model: model_id.clone(), route, failovers: failed, sent_at, hedge });
            }
            Err(e) => e,
        };
        failed += 1;
        if matches!(err, ModelError::Throttled(_)) {
            hedger.throttled(model_id);
        }
        if route == Route::Provisioned && matches!(err, ModelError::NotFound(..)) && plan.len() > 1 {
            tracing::warn!(model_id, error = %chain(&err), "provisioned throughput gone before first token; failing over");
            routes.out_of_service(model_id);
            plan.remove(next_route % plan.len());
            continue;
        }
        attempt_no += 1;
        match cfg.next(&err, attempt_no, retries, started.elapsed()) {
            Next::GiveUp => return Err(err),
            Next::Failover => {
                tracing::warn!(attempt = attempt_no, model_id, code = %err.code(), error = %chain(&err), "model attempt failed before first token; failing over");
            }
            // The hedge already running is the next attempt: no wait before it.
            Next::Backoff(_) if pending.is_some() => {}
            Next::Backoff(wait) => {
                retries += 1;
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                tracing::info!(
                    attempt = attempt_no,
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

    // Hedging. The scripted model plays one script per request, in order: the first attempt's, then the
    // hedge's.

    use crate::answer::hedge::{HedgeConfig, HedgeDelay};
    use crate::testkit::{Script, ScriptedStream};

    /// A first text after `first`, then the end.
    fn answering_after(first: Duration, text: &str) -> Script {
        Script::Stream(
            ScriptedStream::new([(first, Ok(ModelEvent::Text(text.into())))])
                .then(Duration::ZERO, Ok(ModelEvent::Stop("end_turn".into()))),
        )
    }

    fn hedging(delay_ms: u64) -> FailoverConfig {
        let hedge = HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(delay_ms)), ..HedgeConfig::default() };
        FailoverConfig { hedge, ..FailoverConfig::default() }
    }

    async fn first_text_of<S: ModelStream>(opened: &mut Opened<S>) -> String {
        match opened.stream.next().await {
            Some(Ok(ModelEvent::Text(t))) => t,
            other => panic!("{:?}", other.map(|r| r.map_err(|e| e.code()))),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_token_is_hedged_on_the_next_route_and_the_faster_hedge_answers() {
        let model = ScriptedModel::new()
            .then(answering_after(Duration::from_millis(3_000), "slow"))
            .then(answering_after(Duration::from_millis(400), "fast"));
        let (plan, routes, started) = (plan(None, "m", Some("fb")), Routes::default(), Instant::now());
        let mut opened = open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_millis(1_200), "the hedge at 800 ms, its token 400 ms later");
        assert_eq!((opened.model.as_str(), opened.failovers), ("fb", 0));
        assert_eq!(opened.hedge, Hedged { started: true, won: true, loser_cancelled: true });
        assert_eq!(first_text_of(&mut opened).await, "fast");
        assert_eq!(model.asked(), ["m", "fb"]);
        let at: Vec<Duration> = model.asked_at().iter().map(|t| *t - started).collect();
        assert_eq!(at[1], Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_token_before_the_delay_is_not_hedged_and_typed_ahead_opens_are_never_hedged() {
        let model = ScriptedModel::new().then(answering_after(Duration::from_millis(300), "quick"));
        let (plan, routes) = (plan(None, "m", Some("fb")), Routes::default());
        let opened = open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        assert_eq!((opened.model.as_str(), opened.hedge), ("m", Hedged::default()));
        assert_eq!(model.asked(), ["m"]);

        let model = ScriptedModel::new().then(answering_after(Duration::from_millis(3_000), "slow"));
        let opened = open_stream(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        assert_eq!((opened.model.as_str(), opened.hedge.started), ("m", false));
        assert_eq!(model.asked(), ["m"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_that_answers_before_its_hedge_wins_and_the_hedge_is_dropped() {
        let dropped = Arc::new(AtomicUsize::new(0));
        let model = Watched {
            inner: ScriptedModel::new()
                .then(answering_after(Duration::from_millis(1_000), "first"))
                .then(answering_after(Duration::from_millis(900), "hedge")),
            dropped: dropped.clone(),
        };
        let (plan, routes) = (plan(None, "m", Some("fb")), Routes::default());
        let mut opened = open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        assert_eq!(opened.model, "m");
        assert_eq!(opened.hedge, Hedged { started: true, won: false, loser_cancelled: true });
        assert_eq!(dropped.load(Ordering::Relaxed), 1, "the hedge's stream was dropped, which cancels it");
        assert_eq!(first_text_of(&mut opened).await, "first");
        assert_eq!(model.inner.asked(), ["m", "fb"]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_route_that_throttled_lately_is_not_hedged() {
        let (plan, routes) = (plan(None, "m", Some("fb")), Routes::default());
        // A throttle fails over to the fallback, which answers; the route's throttle is remembered.
        let model = refusing([throttled()]);
        open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        let model = ScriptedModel::new().then(answering_after(Duration::from_millis(3_000), "slow"));
        let opened = open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        assert_eq!((opened.model.as_str(), opened.hedge.started), ("m", false));
        assert_eq!(model.asked(), ["m"], "no second request on a throttling quota");
    }

    #[tokio::test(start_paused = true)]
    async fn hedges_are_capped_to_a_share_of_turns() {
        let (plan, routes, cfg) = (plan(None, "m", Some("fb")), Routes::default(), hedging(800));
        let mut hedged = 0;
        for _ in 0..50 {
            // Every turn is slow: each would hedge if the bucket allowed.
            let model = ScriptedModel::new()
                .then(answering_after(Duration::from_millis(2_000), "slow"))
                .then(answering_after(Duration::from_millis(100), "fast"));
            let opened = open_hedged(&model, &ModelRequest::default(), &plan, &cfg, &routes).await.unwrap();
            hedged += usize::from(opened.hedge.started);
        }
        // One hedge in the bucket at the start, then one per 10 turns.
        assert_eq!(hedged, 1 + 50 / 10, "50 slow turns at a 10% share");
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_first_attempt_fails_the_running_hedge_is_its_failover() {
        let model = ScriptedModel::new()
            .then(Script::Stream(ScriptedStream::new([(
                Duration::from_millis(1_000),
                Err(ModelError::Unavailable("503".into())),
            )])))
            .then(answering_after(Duration::from_millis(500), "hedge"));
        let (plan, routes, started) = (plan(None, "m", Some("fb")), Routes::default(), Instant::now());
        let opened = open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.unwrap();
        assert_eq!((opened.model.as_str(), opened.failovers), ("fb", 1));
        assert_eq!(opened.hedge, Hedged { started: true, won: true, loser_cancelled: false });
        assert_eq!(model.asked(), ["m", "fb"], "no third request: the hedge was the failover");
        assert_eq!(started.elapsed(), Duration::from_millis(1_300));

        // A refusal ends the turn whatever the hedge would have said.
        let model = ScriptedModel::new()
            .then(Script::Stream(ScriptedStream::new([(
                Duration::from_millis(1_000),
                Err(ModelError::Rejected("bad".into(), "400".into())),
            )])))
            .then(answering_after(Duration::from_millis(500), "hedge"));
        let err = open_hedged(&model, &ModelRequest::default(), &plan, &hedging(800), &routes).await.err().unwrap();
        assert_eq!(err.code(), "model_rejected");
    }

    #[tokio::test(start_paused = true)]
    async fn the_learned_delay_is_the_routes_p90_of_the_turns_it_served() {
        let (plan, routes) = (plan(None, "m", Some("fb")), Routes::default());
        let cfg = FailoverConfig {
            hedge: HedgeConfig {
                delay: HedgeDelay::Learned { initial: Duration::from_secs(5) },
                ..HedgeConfig::default()
            },
            ..FailoverConfig::default()
        };
        for i in 0..20u64 {
            let model = ScriptedModel::new().then(answering_after(Duration::from_millis(500 + i * 10), "x"));
            let opened = open_hedged(&model, &ModelRequest::default(), &plan, &cfg, &routes).await.unwrap();
            assert!(!opened.hedge.started, "turn {i}: below the 5 s initial delay");
        }
        assert_eq!(routes.hedger().learned_p90("m"), Some(Duration::from_millis(670)));
        let model = ScriptedModel::new()
            .then(answering_after(Duration::from_millis(2_000), "slow"))
            .then(answering_after(Duration::from_millis(300), "fast"));
        let started = Instant::now();
        let opened = open_hedged(&model, &ModelRequest::default(), &plan, &cfg, &routes).await.unwrap();
        assert!(opened.hedge.won);
        assert_eq!(started.elapsed(), Duration::from_millis(970), "hedged at the p90, 670 ms");
    }

    /// A model whose streams count their drops.
    struct Watched {
        inner: ScriptedModel,
        dropped: Arc<AtomicUsize>,
    }

    struct WatchedStream(ScriptedStream, Arc<AtomicUsize>);

    impl Drop for WatchedStream {
        fn drop(&mut self) {
            if self.0.remaining() > 0 {
                self.1.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    impl ModelStream for WatchedStream {
        async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
            self.0.next().await
        }
    }

    impl ModelClient for Watched {
        type Stream = WatchedStream;

        async fn converse_stream(&self, req: &ModelRequest) -> Result<WatchedStream, ModelError> {
            Ok(WatchedStream(self.inner.converse_stream(req).await?, self.dropped.clone()))
        }

        async fn complete(&self, req: &ModelRequest) -> Result<crate::ports::Completion, ModelError> {
            self.inner.complete(req).await
        }
    }
}
