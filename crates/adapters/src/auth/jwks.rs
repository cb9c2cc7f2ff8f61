//! The issuer's signing keys: its JWKS document, fetched over HTTPS with timeouts and cached per container
//! (one fetch per cold start, again after `ttl`). A token signed with a key the cache does not know (the issuer
//! rotated its keys) triggers a refetch, at most once per `refetch_interval`, so a flood of tokens with made-up
//! `kid`s cannot turn into a flood of requests to the issuer. Only RS256 (RSA) and ES256 (P-256) keys are kept;
//! each key is bound to that one algorithm, which is what stops algorithm confusion.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// A JWKS that could not be fetched or read.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("fetching {url} failed: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is not a JWKS: {source}")]
    Parse {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where the keys are and how long to trust them.
#[derive(Debug, Clone)]
pub struct JwksConfig {
    pub url: String,
    /// How long a fetched JWKS is used before it is fetched again.
    pub ttl: Duration,
    /// The least time between two fetches caused by unknown `kid`s.
    pub refetch_interval: Duration,
    /// Per request (connect and read together).
    pub timeout: Duration,
}

impl JwksConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ttl: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        }
    }
}

/// One usable key and the one algorithm it verifies.
#[derive(Clone)]
pub struct VerifyingKey {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

#[derive(Default)]
struct Cache {
    keys: Arc<HashMap<String, VerifyingKey>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_unknown_refetch: Option<Instant>,
}

/// The cached JWKS of one issuer.
pub struct Jwks {
    cfg: JwksConfig,
    http: reqwest::Client,
    cache: Mutex<Cache>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// The algorithm a JWK may verify, if it is one we accept: RS256 for RSA keys, ES256 for P-256 keys; a key
/// whose `alg` names anything else is skipped.
fn usable(jwk: &Jwk) -> Option<(String, VerifyingKey)> {
    let kid = jwk.common.key_id.clone()?;
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256)) if p.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some((kid, VerifyingKey { key, alg }))
}

/// The accepted keys of a JWKS document, by `kid`.
pub fn parse(url: &str, body: &[u8]) -> Result<HashMap<String, VerifyingKey>, JwksError> {
    let doc: Document =
        serde_json::from_slice(body).map_err(|source| JwksError::Parse { url: url.to_owned(), source })?;
    Ok(doc.keys.into_iter().filter_map(|k| serde_json::from_value::<Jwk>(k).ok()).filter_map(|j| usable(&j)).collect())
}

impl Jwks {
    pub fn new(cfg: JwksConfig) -> Self {
        // No idle pool: fetches are rare (cold start, rotation, hourly), and a connection kept across a Lambda
        // freeze is usually dead by the next fetch.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { cfg, http, cache: Mutex::new(Cache::default()) }
    }

    /// The key `kid`, from the cache, or after a fetch when the cache is stale or does not know `kid` (and no
    /// fetch happened within `refetch_interval`). A failed refetch keeps the keys fetched before.
    pub async fn key(&self, kid: &str) -> Result<Option<VerifyingKey>, JwksError> {
        let mut cache = self.cache.lock().await;
        let now = Instant::now();
        let since = |t: Option<Instant>| t.is_none_or(|t| now.duration_since(t) >= self.cfg.refetch_interval);
        let stale = cache.fetched_at.is_none_or(|t| now.duration_since(t) >= self.cfg.ttl);
        let unknown = !cache.keys.contains_key(kid);
        // Never fetched: always try (each attempt is bounded by the timeout). A stale cache is refreshed, and
        // an unknown `kid` (a rotation) refetches, each at most once per `refetch_interval`.
        let for_unknown = cache.fetched_at.is_some() && unknown && since(cache.last_unknown_refetch);
        if cache.fetched_at.is_none() || (stale && since(cache.last_attempt)) || for_unknown {
            if for_unknown {
                cache.last_unknown_refetch = Some(now);
            }
            cache.last_attempt = Some(now);
            match self.fetch().await {
                Ok(keys) => {
                    cache.keys = Arc::new(keys);
                    cache.fetched_at = Some(now);
                }
                Err(e) if cache.fetched_at.is_some() => {
                    tracing::warn!(error = %e, "JWKS refetch failed; keeping the keys fetched before");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(cache.keys.get(kid).cloned())
    }

    async fn fetch(&self) -> Result<HashMap<String, VerifyingKey>, JwksError> {
        let url = &self.cfg.url;
        let resp = self.http.get(url).send().await.map_err(|source| JwksError::Fetch { url: url.clone(), source })?;
        if !resp.status().is_success() {
            return Err(JwksError::Status { url: url.clone(), status: resp.status().as_u16() });
        }
        let body = resp.bytes().await.map_err(|source| JwksError::Fetch { url: url.clone(), source })?;
        let keys = parse(url, &body)?;
        tracing::info!(url, keys = keys.len(), "fetched the issuer's JWKS");
        Ok(keys)
    }
}
