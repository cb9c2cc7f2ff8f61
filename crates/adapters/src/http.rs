//! Shared plumbing of the HTTP context sources (OpenSearch, the product services): one `reqwest` client with
//! a connect timeout and a per-request timeout, bounded jittered retries, and the mapping of failures to the
//! core's `SourceError`.
//!
//! Only failures that a second attempt can fix are retried: refused or reset connections, `429` and `5xx`.
//! A timeout is not retried: a slow server rarely gets faster within the assembler's per-leg deadline, and the
//! leg is cut at that deadline anyway.

use std::future::Future;
use std::time::Duration;

use mangaassist_core::backoff::Backoff;
use mangaassist_core::ports::sources::SourceError;
use reqwest::{StatusCode, Url};

/// Timeouts and retries of one HTTP source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpSettings {
    /// TCP (and TLS) connect timeout.
    pub connect_timeout: Duration,
    /// Whole-request timeout of one attempt: connect, send, and read the full body.
    pub request_timeout: Duration,
    pub retry: Retry,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_millis(250),
            request_timeout: Duration::from_millis(800),
            retry: Retry::default(),
        }
    }
}

/// Bounded retries with the project's one [`Backoff`] between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    pub backoff: Backoff,
}

impl Default for Retry {
    fn default() -> Self {
        Self { attempts: 2, backoff: Backoff::new(Duration::from_millis(25), Duration::from_millis(200)) }
    }
}

impl Retry {
    /// No retries.
    pub fn none() -> Self {
        Self { attempts: 1, ..Self::default() }
    }

    /// Runs `op` until it succeeds, fails for good, or the attempts are spent.
    pub(crate) async fn run<T, F, Fut>(&self, mut op: F) -> Result<T, SourceError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, SourceError>>,
    {
        let attempts = self.attempts.max(1);
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if attempt < attempts && is_retryable(&e) => {
                    tracing::debug!(attempt, error = %e, "retrying a context source");
                    tokio::time::sleep(self.backoff.delay(attempt - 1)).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

/// Whether another attempt may succeed: the source was unreachable or overloaded, not slow or wrong.
pub fn is_retryable(err: &SourceError) -> bool {
    matches!(err, SourceError::Unavailable(_))
}

/// A misconfigured source, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {what} URL {url:?}: {reason}")]
    Url { what: &'static str, url: String, reason: String },
    #[error("building the HTTP client failed")]
    Client(#[source] reqwest::Error),
}

/// An HTTP exchange that did not yield a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP {status} from {url}: {body}")]
    Status { status: u16, url: String, body: String },
    #[error("malformed response from {url}: {reason}")]
    Malformed { url: String, reason: String },
}

/// The one client of a process's HTTP sources (one connection pool), with `settings`' timeouts.
pub fn client(settings: &HttpSettings) -> Result<reqwest::Client, ConfigError> {
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .build()
        .map_err(ConfigError::Client)
}

/// Parses a base URL, which must be `http` or `https`.
pub fn base_url(what: &'static str, url: &str) -> Result<Url, ConfigError> {
    let bad = |reason: String| ConfigError::Url { what, url: url.to_owned(), reason };
    let parsed = Url::parse(url).map_err(|e| bad(e.to_string()))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https".into()));
    }
    if parsed.cannot_be_a_base() {
        return Err(bad("not a base URL".into()));
    }
    Ok(parsed)
}

/// `base` with `segments` appended as percent-encoded path segments (a trailing slash of `base` is kept out).
pub fn join(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// Maps a transport failure: a timeout is `Timeout`, anything else (refused, reset, TLS, body cut) is
/// `Unavailable`.
pub fn transport_error(err: reqwest::Error, timeout: Duration) -> SourceError {
    if err.is_timeout() {
        SourceError::Timeout(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX))
    } else if err.is_decode() {
        SourceError::Other(Box::new(err))
    } else {
        SourceError::Unavailable(Box::new(err))
    }
}

/// Maps a non-success status: `429` and `5xx` are `Unavailable` (worth a retry), other statuses `Other`.
pub fn status_error(status: StatusCode, url: &Url, body: &str) -> SourceError {
    let mut body = body.trim().to_owned();
    if body.len() > 200 {
        let mut end = 200;
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        body.truncate(end);
    }
    let err = HttpError::Status { status: status.as_u16(), url: url.to_string(), body };
    if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        SourceError::Unavailable(Box::new(err))
    } else {
        SourceError::Other(Box::new(err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_appended_encoded_and_without_a_double_slash() {
        let base = base_url("products", "http://127.0.0.1:9/svc/").unwrap();
        assert_eq!(join(&base, &["products", "B0 1/2"]).as_str(), "http://127.0.0.1:9/svc/products/B0%201%2F2");
        let bare = base_url("products", "http://127.0.0.1:9").unwrap();
        assert_eq!(join(&bare, &["reviews", "B012"]).as_str(), "http://127.0.0.1:9/reviews/B012");
    }

    #[test]
    fn only_http_and_https_base_urls_are_accepted() {
        assert!(base_url("opensearch", "redis://x").is_err());
        assert!(base_url("opensearch", "not a url").is_err());
        assert!(base_url("opensearch", "https://search.example.com").is_ok());
    }

    #[test]
    fn throttling_and_server_errors_are_retryable_but_client_errors_are_not() {
        let url = Url::parse("http://x/").unwrap();
        assert!(is_retryable(&status_error(StatusCode::TOO_MANY_REQUESTS, &url, "")));
        assert!(is_retryable(&status_error(StatusCode::BAD_GATEWAY, &url, "")));
        assert!(!is_retryable(&status_error(StatusCode::BAD_REQUEST, &url, "")));
        assert!(!is_retryable(&SourceError::Timeout(100)));
    }

    #[tokio::test]
    async fn retries_stop_after_the_configured_attempts() {
        let r = Retry { attempts: 3, backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(2)) };
        let mut calls = 0;
        let res: Result<(), _> = r
            .run(|| {
                calls += 1;
                async { Err(SourceError::Unavailable("down".into())) }
            })
            .await;
        assert!(res.is_err());
        assert_eq!(calls, 3);

        let mut calls = 0;
        let res: Result<(), _> = r
            .run(|| {
                calls += 1;
                async { Err(SourceError::Timeout(5)) }
            })
            .await;
        assert!(matches!(res, Err(SourceError::Timeout(5))));
        assert_eq!(calls, 1);
    }
}
