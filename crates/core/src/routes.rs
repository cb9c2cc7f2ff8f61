//! Which model a turn asks: the provisioned-throughput ARN while the reconciler's `CONFIG/THROUGHPUT`
//! record says `InService`, else the on-demand model (or inference profile). The record is cached for a
//! short TTL and refreshed beside the turn's other first reads, so a refresh never adds latency.
//!
//! Failover order, before anything has been sent to the client: provisioned -> on-demand; on-demand ->
//! the fallback model when configured, else on-demand again.

use std::sync::Mutex;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use crate::error::{StoreError, chain};
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

/// The route a request took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    OnDemand,
    Provisioned,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::Provisioned => "provisioned",
        }
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
