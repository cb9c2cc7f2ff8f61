//! The embedded product services over the [`Catalog`](crate::embedded::catalog::Catalog): the core's `ProductService`
//! in process (for `mangaassist serve`, the bench and tests), with an artificial latency and a request
//! counter per service; and [`ServicesServer`], the same services over HTTP on the routes the production
//! adapter (`mangaassist_adapters::services`) calls, so that adapter is tested against a real server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use mangaassist_adapters::services::ServiceEndpoints;
use mangaassist_core::ids::{Asin, UserId};
use mangaassist_core::ports::sources::{ProductService, SourceError};
use serde::Deserialize;
use serde_json::Value;

use crate::embedded::catalog::Catalog;

/// An artificial latency: `base` plus a uniformly random `0..=jitter`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    pub base: Duration,
    pub jitter: Duration,
}

impl Latency {
    pub const ZERO: Self = Self { base: Duration::ZERO, jitter: Duration::ZERO };

    pub fn fixed(base: Duration) -> Self {
        Self { base, jitter: Duration::ZERO }
    }

    /// One draw.
    pub fn sample(&self) -> Duration {
        let jitter_us = u64::try_from(self.jitter.as_micros()).unwrap_or(u64::MAX);
        self.base + Duration::from_micros(if jitter_us == 0 { 0 } else { fastrand::u64(0..=jitter_us) })
    }

    /// Sleeps for one draw (returns at once when zero).
    pub async fn wait(&self) {
        let d = self.sample();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

/// One of the four services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    Products,
    Reviews,
    Recommendations,
    Promotions,
}

impl Service {
    pub const ALL: [Service; 4] = [Self::Products, Self::Reviews, Self::Recommendations, Self::Promotions];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Products => "products",
            Self::Reviews => "reviews",
            Self::Recommendations => "recommendations",
            Self::Promotions => "promotions",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Products => 0,
            Self::Reviews => 1,
            Self::Recommendations => 2,
            Self::Promotions => 3,
        }
    }
}

/// Latency per service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceLatencies {
    pub products: Latency,
    pub reviews: Latency,
    pub recommendations: Latency,
    pub promotions: Latency,
}

impl ServiceLatencies {
    /// The same latency for every service.
    pub fn all(latency: Latency) -> Self {
        Self { products: latency, reviews: latency, recommendations: latency, promotions: latency }
    }

    pub fn of(&self, service: Service) -> Latency {
        match service {
            Service::Products => self.products,
            Service::Reviews => self.reviews,
            Service::Recommendations => self.recommendations,
            Service::Promotions => self.promotions,
        }
    }
}

/// `ProductService` over the catalog, in process.
#[derive(Debug)]
pub struct EmbeddedServices {
    catalog: Arc<Catalog>,
    latency: ServiceLatencies,
    requests: [AtomicU64; 4],
}

impl EmbeddedServices {
    pub fn new(catalog: Arc<Catalog>) -> Self {
        Self { catalog, latency: ServiceLatencies::default(), requests: Default::default() }
    }

    pub fn with_latency(mut self, latency: ServiceLatencies) -> Self {
        self.latency = latency;
        self
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Requests `service` has received (counted on arrival, before the latency).
    pub fn requests(&self, service: Service) -> u64 {
        self.requests[service.index()].load(Ordering::Relaxed)
    }

    /// Requests all services have received.
    pub fn total_requests(&self) -> u64 {
        Service::ALL.iter().map(|&s| self.requests(s)).sum()
    }

    async fn answer(&self, service: Service, f: impl FnOnce(&Catalog) -> Option<Value>) -> Option<Value> {
        self.requests[service.index()].fetch_add(1, Ordering::Relaxed);
        self.latency.of(service).wait().await;
        f(&self.catalog)
    }
}

impl ProductService for EmbeddedServices {
    async fn product(&self, asin: &Asin) -> Result<Option<Value>, SourceError> {
        Ok(self.answer(Service::Products, |c| c.product_json(asin.as_str())).await)
    }

    async fn reviews(&self, asin: &Asin) -> Result<Option<Value>, SourceError> {
        Ok(self.answer(Service::Reviews, |c| c.reviews_json(asin.as_str())).await)
    }

    async fn recommendations(&self, seed_asin: &Asin, user: &UserId) -> Result<Option<Value>, SourceError> {
        Ok(self.answer(Service::Recommendations, |c| c.recommendations_json(seed_asin.as_str(), user.as_str())).await)
    }

    async fn promotions(&self, placement: &str) -> Result<Option<Value>, SourceError> {
        Ok(self.answer(Service::Promotions, |c| c.promotions_json(placement)).await)
    }
}

/// The embedded services over HTTP; stops when dropped.
#[derive(Debug)]
pub struct ServicesServer {
    pub addr: SocketAddr,
    services: Arc<EmbeddedServices>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ServicesServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Deserialize)]
struct RecoParams {
    seed: String,
    #[serde(default)]
    user: String,
}

fn reply(v: Option<Value>) -> Response {
    match v {
        Some(v) => axum::Json(v).into_response(),
        None => (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({ "message": "not found" }))).into_response(),
    }
}

impl ServicesServer {
    /// Serves `services` on `addr` (port 0: an ephemeral port).
    pub async fn start(services: Arc<EmbeddedServices>, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .route(
                "/products/{asin}",
                get(|State(s): State<Arc<EmbeddedServices>>, Path(asin): Path<String>| async move {
                    reply(s.answer(Service::Products, |c| c.product_json(&asin)).await)
                }),
            )
            .route(
                "/reviews/{asin}",
                get(|State(s): State<Arc<EmbeddedServices>>, Path(asin): Path<String>| async move {
                    reply(s.answer(Service::Reviews, |c| c.reviews_json(&asin)).await)
                }),
            )
            .route(
                "/recommendations",
                get(|State(s): State<Arc<EmbeddedServices>>, Query(q): Query<RecoParams>| async move {
                    reply(s.answer(Service::Recommendations, |c| c.recommendations_json(&q.seed, &q.user)).await)
                }),
            )
            .route(
                "/promotions/{placement}",
                get(|State(s): State<Arc<EmbeddedServices>>, Path(placement): Path<String>| async move {
                    reply(s.answer(Service::Promotions, |c| c.promotions_json(&placement)).await)
                }),
            )
            .with_state(services.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "product services emulator stopped");
            }
        });
        Ok(Self { addr, services, task })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The production adapter's configuration for this server (one base URL for all four services).
    pub fn endpoints(&self) -> ServiceEndpoints {
        ServiceEndpoints::single(self.url())
    }

    pub fn services(&self) -> &Arc<EmbeddedServices> {
        &self.services
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_service_counts_its_own_requests() {
        let svc = EmbeddedServices::new(Arc::new(Catalog::generate(1, 20)));
        let asin = Asin::parse(svc.catalog().products()[0].asin.as_str()).unwrap();
        let missing = Asin::parse("B0MISSING1").unwrap();
        assert!(svc.product(&asin).await.unwrap().is_some());
        assert!(svc.product(&missing).await.unwrap().is_none());
        assert!(svc.reviews(&asin).await.unwrap().is_some());
        assert_eq!(svc.requests(Service::Products), 2);
        assert_eq!(svc.requests(Service::Reviews), 1);
        assert_eq!(svc.requests(Service::Recommendations), 0);
        assert_eq!(svc.total_requests(), 3);
    }

    #[tokio::test]
    async fn a_service_answers_after_its_configured_latency() {
        let svc = EmbeddedServices::new(Arc::new(Catalog::generate(1, 5))).with_latency(ServiceLatencies {
            promotions: Latency::fixed(Duration::from_millis(40)),
            ..ServiceLatencies::default()
        });
        let t = tokio::time::Instant::now();
        svc.promotions("manga-home").await.unwrap();
        assert!(t.elapsed() >= Duration::from_millis(40));
        let t = tokio::time::Instant::now();
        svc.reviews(&Asin::parse("B0MISSING1").unwrap()).await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(40));
    }

    #[test]
    fn latency_draws_stay_within_base_and_jitter() {
        let l = Latency { base: Duration::from_millis(10), jitter: Duration::from_millis(5) };
        for _ in 0..100 {
            let d = l.sample();
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(15));
        }
        assert_eq!(Latency::ZERO.sample(), Duration::ZERO);
    }
}
