//! Configuration of the prefetch function, read from the environment once at cold start.
//!
//! The sources are the chat function's (`REDIS_URL`, `REDIS_CLUSTER`, `OPENSEARCH_URL`, `OPENSEARCH_INDEX`,
//! `PRODUCTS_URL` and `REVIEWS_URL`, `RECOMMENDATIONS_URL`, `PROMOTIONS_URL` defaulting to it); an unset
//! source is skipped. Without `REDIS_URL` there is nowhere to prefetch into, so every run does nothing useful.

use std::time::Duration;

use mangaassist_core::prefetch::PrefetchConfig;

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Base URLs of the product services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceUrls {
    pub products: String,
    pub reviews: String,
    pub recommendations: String,
    pub promotions: String,
}

/// Everything the prefetch function reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchFnConfig {
    /// `REDIS_URL` and `REDIS_CLUSTER` (default false).
    pub redis: Option<(String, bool)>,
    /// `OPENSEARCH_URL` and `OPENSEARCH_INDEX` (default `manga`).
    pub opensearch: Option<(String, String)>,
    pub services: Option<ServiceUrls>,
    /// `PREFETCH_THRESHOLD` (default 0.25) and `PREFETCH_TIMEOUT_MS` (default 2000).
    pub prefetch: PrefetchConfig,
}

impl PrefetchFnConfig {
    /// Reads the configuration through `get` (the process environment in `main`, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let nonempty = |name: &str| get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let mut prefetch = PrefetchConfig::default();
        if let Some(v) = nonempty("PREFETCH_THRESHOLD") {
            match v.parse::<f64>() {
                Ok(t) if (0.0..=1.0).contains(&t) => prefetch.threshold = t,
                _ => return Err(ConfigError { name: "PREFETCH_THRESHOLD", value: v, reason: "expected 0.0 to 1.0" }),
            }
        }
        if let Some(v) = nonempty("PREFETCH_TIMEOUT_MS") {
            match v.parse::<u64>() {
                Ok(ms) if ms >= 1 => prefetch.timeout = Duration::from_millis(ms),
                _ => return Err(ConfigError { name: "PREFETCH_TIMEOUT_MS", value: v, reason: "expected ms >= 1" }),
            }
        }
        let redis = match nonempty("REDIS_URL") {
            None => None,
            Some(u) => {
                let cluster = match nonempty("REDIS_CLUSTER") {
                    None => false,
                    Some(v) => v.parse::<bool>().map_err(|_| ConfigError {
                        name: "REDIS_CLUSTER",
                        value: v,
                        reason: "expected true or false",
                    })?,
                };
                Some((u, cluster))
            }
        };
        let opensearch =
            nonempty("OPENSEARCH_URL").map(|u| (u, nonempty("OPENSEARCH_INDEX").unwrap_or_else(|| "manga".to_owned())));
        let services = nonempty("PRODUCTS_URL").map(|p| ServiceUrls {
            reviews: nonempty("REVIEWS_URL").unwrap_or_else(|| p.clone()),
            recommendations: nonempty("RECOMMENDATIONS_URL").unwrap_or_else(|| p.clone()),
            promotions: nonempty("PROMOTIONS_URL").unwrap_or_else(|| p.clone()),
            products: p,
        });
        Ok(Self { redis, opensearch, services, prefetch })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<PrefetchFnConfig, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        PrefetchFnConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_environment() {
        let c = cfg(&[]).unwrap();
        assert_eq!((c.redis, c.opensearch, c.services), (None, None, None));
        assert_eq!(c.prefetch, PrefetchConfig::default());
    }

    #[test]
    fn settings_are_read_and_service_urls_default_to_the_products_one() {
        let c = cfg(&[
            ("REDIS_URL", "rediss://cache:6379"),
            ("REDIS_CLUSTER", "true"),
            ("OPENSEARCH_URL", "http://os"),
            ("PRODUCTS_URL", "http://p"),
            ("REVIEWS_URL", "http://r"),
            ("PREFETCH_THRESHOLD", "0.4"),
            ("PREFETCH_TIMEOUT_MS", "500"),
        ])
        .unwrap();
        assert_eq!(c.redis, Some(("rediss://cache:6379".into(), true)));
        assert_eq!(c.opensearch, Some(("http://os".into(), "manga".into())));
        let s = c.services.unwrap();
        assert_eq!((s.reviews.as_str(), s.promotions.as_str()), ("http://r", "http://p"));
        assert_eq!((c.prefetch.threshold, c.prefetch.timeout), (0.4, Duration::from_millis(500)));
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(cfg(&[("PREFETCH_THRESHOLD", "2")]).unwrap_err().name, "PREFETCH_THRESHOLD");
        assert_eq!(cfg(&[("PREFETCH_TIMEOUT_MS", "0")]).unwrap_err().name, "PREFETCH_TIMEOUT_MS");
        assert_eq!(cfg(&[("REDIS_URL", "redis://x"), ("REDIS_CLUSTER", "yes")]).unwrap_err().name, "REDIS_CLUSTER");
    }
}
