//! The core's `ProductService` over the store's HTTP services, one base URL each (they may be one host):
//!
//! | call | request |
//! |---|---|
//! | product | `GET {products}/products/{asin}` |
//! | reviews | `GET {reviews}/reviews/{asin}` |
//! | recommendations | `GET {recommendations}/recommendations?seed={asin}&user={user}` |
//! | promotions | `GET {promotions}/promotions/{placement}` |
//!
//! `200` is the JSON payload, `404` is `None`; `429`, `5xx` and refused connections are `Unavailable` (retried
//! within the bound of [`Retry`](crate::http::Retry)); a request over its timeout is `Timeout`. One `reqwest`
//! client, so one connection pool, serves all four.

use mangaassist_core::ids::{Asin, UserId};
use mangaassist_core::ports::sources::{ProductService, SourceError};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use crate::http::{self, ConfigError, HttpError, HttpSettings};

/// One base URL per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEndpoints {
    pub products: String,
    pub reviews: String,
    pub recommendations: String,
    pub promotions: String,
}

impl ServiceEndpoints {
    /// All four services behind one base URL.
    pub fn single(base: impl Into<String>) -> Self {
        let base = base.into();
        Self { products: base.clone(), reviews: base.clone(), recommendations: base.clone(), promotions: base }
    }
}

/// `ProductService` over HTTP.
#[derive(Debug, Clone)]
pub struct HttpProductService {
    client: reqwest::Client,
    products: Url,
    reviews: Url,
    recommendations: Url,
    promotions: Url,
    settings: HttpSettings,
}

impl HttpProductService {
    /// A service client with its own HTTP client.
    pub fn new(endpoints: &ServiceEndpoints, settings: HttpSettings) -> Result<Self, ConfigError> {
        Self::with_client(http::client(&settings)?, endpoints, settings)
    }

    /// A service client sharing `client` with other sources; `settings.request_timeout` is set per request.
    pub fn with_client(
        client: reqwest::Client,
        endpoints: &ServiceEndpoints,
        settings: HttpSettings,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            client,
            products: http::base_url("products service", &endpoints.products)?,
            reviews: http::base_url("reviews service", &endpoints.reviews)?,
            recommendations: http::base_url("recommendations service", &endpoints.recommendations)?,
            promotions: http::base_url("promotions service", &endpoints.promotions)?,
            settings,
        })
    }

    /// Opens (or reuses) a pooled connection to the products service: `HEAD` of its base URL; any status is
    /// an answer, only a transport failure is an error.
    pub async fn warm(&self) -> Result<(), SourceError> {
        let timeout = self.settings.request_timeout;
        match self.client.head(self.products.clone()).timeout(timeout).send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(http::transport_error(e, timeout)),
        }
    }

    async fn get_once(&self, url: &Url) -> Result<Option<Value>, SourceError> {
        let timeout = self.settings.request_timeout;
        let resp = self
            .client
            .get(url.clone())
            .timeout(timeout)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| http::transport_error(e, timeout))?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = resp.bytes().await.map_err(|e| http::transport_error(e, timeout))?;
        if !status.is_success() {
            return Err(http::status_error(status, url, &String::from_utf8_lossy(&bytes)));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            SourceError::Other(Box::new(HttpError::Malformed { url: url.to_string(), reason: e.to_string() }))
        })
    }

    async fn get(&self, url: Url) -> Result<Option<Value>, SourceError> {
        self.settings.retry.run(|| self.get_once(&url)).await
    }
}

impl ProductService for HttpProductService {
    async fn product(&self, asin: &Asin) -> Result<Option<Value>, SourceError> {
        self.get(http::join(&self.products, &["products", asin.as_str()])).await
    }

    async fn reviews(&self, asin: &Asin) -> Result<Option<Value>, SourceError> {
        self.get(http::join(&self.reviews, &["reviews", asin.as_str()])).await
    }

    async fn recommendations(&self, seed_asin: &Asin, user: &UserId) -> Result<Option<Value>, SourceError> {
        let mut url = http::join(&self.recommendations, &["recommendations"]);
        url.query_pairs_mut().append_pair("seed", seed_asin.as_str()).append_pair("user", user.as_str());
        self.get(url).await
    }

    async fn promotions(&self, placement: &str) -> Result<Option<Value>, SourceError> {
        self.get(http::join(&self.promotions, &["promotions", placement])).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_base_url_is_refused_at_construction() {
        let mut e = ServiceEndpoints::single("http://127.0.0.1:1");
        e.reviews = "ftp://x".into();
        assert!(HttpProductService::new(&e, HttpSettings::default()).is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let svc = HttpProductService::new(
            &ServiceEndpoints::single(format!("http://127.0.0.1:{port}")),
            HttpSettings { retry: crate::http::Retry::none(), ..HttpSettings::default() },
        )
        .unwrap();
        assert!(matches!(svc.product(&Asin::parse("B000000001").unwrap()).await, Err(SourceError::Unavailable(_))));
    }
}
