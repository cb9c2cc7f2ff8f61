//! Typed errors. Every error a client can see has a stable machine-readable `code()` (sent in the `error`
//! event) and `is_retryable()`; the source error of a dependency is kept (boxed, so `Result`s stay small)
//! and logged, never flattened before the kind is decided.

use std::error::Error as StdError;

/// A boxed source error from an adapter (an `SdkError`, an I/O error, ...).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Every code a client can read in an `error` event: the wire's one list (the README's "Error codes").
/// What each means for the shopper is its `retryable` flag and message; the code is for programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not a JSON object (or repeats a key).
    BadFrame,
    UnknownAction,
    MissingField,
    /// A field of the wrong type or shape (also a `page_context` value outside the page schema).
    InvalidField,
    MessageTooLong,
    /// The input guardrail refused the message; no model was asked.
    Blocked,
    DuplicateMessage,
    /// Another message of this connection is still being answered.
    Busy,
    /// Over a rate or the day's token budget (with `retry_after_ms`).
    RateLimited,
    /// The connection's session could not be read in time: the frame was refused (retryable) rather than
    /// answered under another identity.
    SessionUnavailable,
    ModelThrottled,
    ModelUnavailable,
    ModelTimeout,
    ModelRejected,
    ModelError,
    DeadlineExceeded,
}

impl ErrorCode {
    /// Every code, in the README's order.
    pub const ALL: [Self; 16] = [
        Self::BadFrame,
        Self::UnknownAction,
        Self::MissingField,
        Self::InvalidField,
        Self::MessageTooLong,
        Self::Blocked,
        Self::DuplicateMessage,
        Self::Busy,
        Self::RateLimited,
        Self::SessionUnavailable,
        Self::ModelThrottled,
        Self::ModelUnavailable,
        Self::ModelTimeout,
        Self::ModelRejected,
        Self::ModelError,
        Self::DeadlineExceeded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownAction => "unknown_action",
            Self::MissingField => "missing_field",
            Self::InvalidField => "invalid_field",
            Self::MessageTooLong => "message_too_long",
            Self::Blocked => "blocked",
            Self::DuplicateMessage => "duplicate_message",
            Self::Busy => "busy",
            Self::RateLimited => "rate_limited",
            Self::SessionUnavailable => "session_unavailable",
            Self::ModelThrottled => "model_throttled",
            Self::ModelUnavailable => "model_unavailable",
            Self::ModelTimeout => "model_timeout",
            Self::ModelRejected => "model_rejected",
            Self::ModelError => "model_error",
            Self::DeadlineExceeded => "deadline_exceeded",
        }
    }
}

/// A code equals its wire name (`ErrorCode::Busy == "busy"`).
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a client frame was rejected. Each variant is one `code` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the frame is not a JSON object: {0}")]
    BadFrame(String),
    #[error("unknown action {0:?}; supported: \"sendMessage\", \"typing\", \"session\"")]
    UnknownAction(String),
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("the message is {len} bytes; the limit is {limit}")]
    MessageTooLong { len: usize, limit: usize },
    /// Over the message limit in tokens (`crate::protocol::MAX_MESSAGE_TOKENS`), counted at the parse.
    #[error(
        "the message is longer than {limit} tokens (about 250 Japanese or 1,000 English characters); please shorten it"
    )]
    TooManyTokens { limit: usize },
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadFrame(_) => ErrorCode::BadFrame,
            Self::UnknownAction(_) => ErrorCode::UnknownAction,
            Self::MissingField(_) => ErrorCode::MissingField,
            Self::InvalidField { .. } => ErrorCode::InvalidField,
            Self::MessageTooLong { .. } | Self::TooManyTokens { .. } => ErrorCode::MessageTooLong,
        }
    }
}

/// `what` did not finish within `ms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: deadline of {ms} ms")]
pub struct DeadlineExceeded {
    pub what: String,
    pub ms: u64,
}

/// What went wrong talking to the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the model is throttling requests")]
    Throttled(#[source] BoxError),
    #[error("the model service is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("the model did not answer within {0} ms")]
    Timeout(u64),
    #[error("the model rejected the request: {0}")]
    Rejected(String, #[source] BoxError),
    /// The model id or provisioned-throughput ARN does not exist (Bedrock's `ResourceNotFoundException`):
    /// on a provisioned ARN, the throughput was deleted; on-demand, a configuration error.
    #[error("the model was not found: {0}")]
    NotFound(String, #[source] BoxError),
    #[error("model stream failed")]
    Other(#[source] BoxError),
    /// The turn's overall deadline (below the Lambda's) passed before the answer ended.
    #[error("the answer ran past the turn's deadline")]
    Deadline,
}

impl ModelError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Throttled(_) => ErrorCode::ModelThrottled,
            Self::Unavailable(_) => ErrorCode::ModelUnavailable,
            Self::Timeout(_) => ErrorCode::ModelTimeout,
            Self::Rejected(..) | Self::NotFound(..) => ErrorCode::ModelRejected,
            Self::Other(_) => ErrorCode::ModelError,
            Self::Deadline => ErrorCode::DeadlineExceeded,
        }
    }

    /// The sentence a client sees: what happened, never who (no upstream message, model ARN or account).
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Throttled(_) => "the assistant is very busy right now",
            Self::Unavailable(_) | Self::Other(_) => "the assistant is unavailable right now",
            Self::Timeout(_) => "the assistant took too long to answer",
            Self::Rejected(..) | Self::NotFound(..) => "the assistant could not answer this request",
            Self::Deadline => "the answer ran out of time",
        }
    }

    /// Would the same request, sent again (now or on the other route), plausibly succeed? (A provisioned
    /// ARN that is `NotFound` is left for the on-demand route: see `routes::open_stream`.)
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Rejected(..) | Self::NotFound(..))
    }
}

/// What went wrong posting a frame to the client.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The client has gone (API Gateway's `GoneException`): stop at once, nobody is listening.
    #[error("the client connection is gone")]
    Gone,
    /// Throttled, timed out or a 5xx: the same frame may be posted again.
    #[error("posting to the connection failed (retryable)")]
    Retryable(#[source] BoxError),
    #[error("posting to the connection failed")]
    Fatal(#[source] BoxError),
}

impl SinkError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Gone => "client_gone",
            Self::Retryable(_) => "delivery_retryable",
            Self::Fatal(_) => "delivery_failed",
        }
    }

    /// The same frame may be posted again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable(_))
    }
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is throttling requests")]
    Throttled(#[source] BoxError),
    /// A timeout, a connection failure or a 5xx: the request may not have been applied.
    #[error("the store is unavailable")]
    Unavailable(#[source] BoxError),
    #[error("store request failed")]
    Other(#[source] BoxError),
}

impl StoreError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Throttled(_) => "store_throttled",
            Self::Unavailable(_) => "store_unavailable",
            Self::Other(_) => "store_error",
        }
    }

    /// Would the same request, sent again after a backoff, plausibly succeed? (Writes of this project are
    /// idempotent, so retrying an `Unavailable` one is safe.)
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Other(_))
    }
}

/// The waits between the store's retries: up to 50, 100, 200 ms, then 400.
pub const STORE_BACKOFF: crate::backoff::Backoff =
    crate::backoff::Backoff::new(std::time::Duration::from_millis(50), std::time::Duration::from_millis(400));

/// The one retry rule for the store writes a turn must not lose (the stored turn, a claim given back, the
/// turn slot freed): up to `attempts` tries, retryable errors only, waits of [`STORE_BACKOFF`]. Each retry
/// is logged with `what`.
pub async fn retry_store<T, F, Fut>(what: &str, attempts: u32, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let attempts = attempts.max(1);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < attempts => {
                tracing::warn!(what, attempt, code = e.code(), error = %chain(&e), "store write failed; retrying");
                tokio::time::sleep(STORE_BACKOFF.delay(attempt - 1)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl From<DeadlineExceeded> for StoreError {
    fn from(e: DeadlineExceeded) -> Self {
        Self::Unavailable(Box::new(e))
    }
}

/// Formats an error with its whole `source()` chain, for logs.
pub fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's "Error codes" sentence lists exactly the codes of [`ErrorCode`].
    #[test]
    fn the_readme_lists_every_error_code_and_no_other() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("Error codes: ").unwrap();
        let sentence = &readme[start..start + readme[start..].find(". `retryable` says").unwrap()];
        // Backticked names, minus the fields the sentence mentions on the way.
        let listed: Vec<&str> = sentence
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|name| !["page_context", "retry_after_ms", "action"].contains(name))
            .collect();
        let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, codes);
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{code}\""), "serialized as its wire name");
        }
    }

    use std::time::Duration;
    use tokio::time::Instant;

    #[tokio::test(start_paused = true)]
    async fn a_store_write_is_retried_after_a_jittered_backoff_that_doubles_and_only_when_retryable() {
        let ms = Duration::from_millis;
        let mut longest = [Duration::ZERO; 2];
        for _ in 0..40 {
            let mut at = Vec::new();
            let res = retry_store("turn", 3, || {
                at.push(Instant::now());
                let n = at.len();
                async move { if n < 3 { Err(StoreError::Unavailable("503".into())) } else { Ok(n) } }
            })
            .await;
            assert_eq!(res.unwrap(), 3);
            let waits = [at[1] - at[0], at[2] - at[1]];
            // Full jitter under a ceiling that doubles: 50 ms, then 100 ms.
            assert!(waits[0] <= ms(50), "first wait {:?}", waits[0]);
            assert!(waits[1] <= ms(100), "second wait {:?}", waits[1]);
            longest = [longest[0].max(waits[0]), longest[1].max(waits[1])];
        }
        // It does wait: over 40 retries the waits reach the top quarter of their range (1 in 10^25 not).
        assert!(longest[0] >= ms(37) && longest[1] >= ms(75), "{longest:?}");
        let mut calls = 0;
        let res: Result<(), _> = retry_store("turn", 3, || {
            calls += 1;
            async { Err(StoreError::Other("validation".into())) }
        })
        .await;
        assert!(res.is_err());
        assert_eq!(calls, 1, "a final error is not retried");
    }
}
