//! Which model a turn asks, and opening its stream: the provisioned-throughput ARN while the reconciler's
//! `CONFIG/THROUGHPUT` record says `InService`, else the on-demand model (or inference profile). The record
//! is cached for a short TTL and refreshed beside the turn's other first reads, so a refresh never adds
//! latency.
//!
//! Failover order, before anything has been sent to the client: provisioned -> on-demand; on-demand ->
//! the fallback model when configured, else on-demand again. [`open_stream`] walks that order until a
//! first text delta arrives, so the relay starts with a stream that is known to answer.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::deadline::within;
use crate::error::{ModelError, StoreError, chain};
use crate::ports::{ModelClient, ModelEvent, ModelRequest, ModelStream};
pub use crate::protocol::Route;
use crate::throughput::{ThroughputStateStore, provisioned_route};

/// Reads the provisioned ARN that is in service, if any. Called once per TTL per container, so a boxed
/// future is fine here.
pub trait RouteLoader: Send + Sync {
    fn provisioned_arn(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>>;
}

impl<T: ThroughputStateStore> RouteLoader for T {
    fn provisioned_arn(&self) -> BoxFuture<'_, Result<Option<String>, StoreError>> {
        Box::pin(async move { Ok(provisioned_route(self.load().await?.as_ref()).map(str::to_owned)) })
    }
}

/// The cached route table.
pub struct Routes {
    loader: Option<Box<dyn RouteLoader>>,
    ttl: Duration,
    cached: Mutex<Option<(Instant, Option<String>)>>,
}

impl std::fmt::Debug for Routes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routes").field("ttl", &self.ttl).field("cached", &self.cached).finish_non_exhaustive()
    }
}

impl Default for Routes {
    /// On-demand only.
    fn default() -> Self {
        Self { loader: None, ttl: Duration::from_secs(30), cached: Mutex::new(None) }
    }
}

impl Routes {
    pub fn new(loader: impl RouteLoader + 'static, ttl: Duration) -> Self {
        Self { loader: Some(Box::new(loader)), ttl, cached: Mutex::new(None) }
    }

    /// The provisioned ARN to use now, from the cache or (after the TTL) the store. A failed read keeps the
    /// last known answer.
    pub async fn provisioned(&self) -> Option<String> {
        let loader = self.loader.as_ref()?;
        let cached = self.cached.lock().ok().and_then(|c| c.clone());
        if let Some((at, arn)) = &cached
            && at.elapsed() < self.ttl
        {
            return arn.clone();
        }
        match loader.provisioned_arn().await {
            Ok(arn) => {
                if let Ok(mut c) = self.cached.lock() {
                    *c = Some((Instant::now(), arn.clone()));
                }
                arn
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), "could not read the throughput state; keeping the last route");
                cached.and_then(|(_, arn)| arn)
            }
        }
    }
}

/// The models to try, in order, for a turn: at most two attempts.
pub fn plan(provisioned: Option<&str>, on_demand: &str, fallback: Option<&str>) -> [(String, Route); 2] {
    match provisioned {
        Some(arn) => [(arn.to_owned(), Route::Provisioned), (on_demand.to_owned(), Route::OnDemand)],
        None => [(on_demand.to_owned(), Route::OnDemand), (fallback.unwrap_or(on_demand).to_owned(), Route::OnDemand)],
    }
}

/// How hard to try for a first token before anything is sent.
#[derive(Debug, Clone, Copy)]
pub struct FailoverConfig {
    /// Attempts along the plan (1 = no retry, at most 2).
    pub attempts: u32,
    /// Deadline for one attempt's first token.
    pub first_token_timeout: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self { attempts: 2, first_token_timeout: Duration::from_secs(5) }
    }
}

/// A model stream whose first events were read while deciding whether to fail over.
pub struct Primed<S> {
    head: std::vec::IntoIter<ModelEvent>,
    rest: S,
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
async fn first_text<S: ModelStream>(mut stream: S) -> Result<(S, Vec<ModelEvent>), ModelError> {
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

/// Opens the model stream for `base` along `plan`, failing over (while nothing has been sent) on a
/// retryable error or a first token later than the configured timeout.
pub async fn open_stream<M: ModelClient>(
    model: &M,
    base: &ModelRequest,
    plan: &[(String, Route); 2],
    cfg: &FailoverConfig,
) -> Result<Opened<M::Stream>, ModelError> {
    let attempts = cfg.attempts.clamp(1, 2);
    let mut last_err = ModelError::Timeout(0);
    let mut req = base.clone();
    for attempt in 1..=attempts {
        let (model_id, route) = &plan[attempt as usize - 1];
        req.model_id.clone_from(model_id);
        let sent_at = Instant::now();
        let first = async { first_text(model.converse_stream(&req).await?).await };
        let err = match within("first token", cfg.first_token_timeout, first).await {
            Ok(Ok((rest, head))) => {
                let stream = Primed { head: head.into_iter(), rest };
                return Ok(Opened { stream, model: model_id.clone(), route: *route, failovers: attempt - 1, sent_at });
            }
            Ok(Err(e)) => e,
            Err(late) => ModelError::Timeout(late.ms),
        };
        if !err.is_retryable() || attempt == attempts {
            return Err(err);
        }
        tracing::warn!(attempt, model_id, code = err.code(), error = %chain(&err), "model attempt failed before first token; failing over");
        last_err = err;
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn in_service_capacity_is_tried_first_then_on_demand() {
        let p = plan(Some("arn:pt"), "m", Some("fb"));
        assert_eq!(p[0], ("arn:pt".to_owned(), Route::Provisioned));
        assert_eq!(p[1], ("m".to_owned(), Route::OnDemand));
        let p = plan(None, "m", Some("fb"));
        assert_eq!((p[0].0.as_str(), p[1].0.as_str()), ("m", "fb"));
        assert_eq!(plan(None, "m", None)[1].0, "m");
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
