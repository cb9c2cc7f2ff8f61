//! Typed errors. Every error a client can see has a stable machine-readable `code()` (sent in the `error`
//! event) and `is_retryable()`; the source error of a dependency is kept (boxed, so `Result`s stay small)
//! and logged, never flattened before the kind is decided.

use std::error::Error as StdError;

/// A boxed source error from an adapter (an `SdkError`, an I/O error, ...).
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

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
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadFrame(_) => "bad_frame",
            Self::UnknownAction(_) => "unknown_action",
            Self::MissingField(_) => "missing_field",
            Self::InvalidField { .. } => "invalid_field",
            Self::MessageTooLong { .. } | Self::TooManyTokens { .. } => "message_too_long",
        }
    }
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
    pub fn code(&self) -> &'static str {
        match self {
            Self::Throttled(_) => "model_throttled",
            Self::Unavailable(_) => "model_unavailable",
            Self::Timeout(_) => "model_timeout",
            Self::Rejected(..) | Self::NotFound(..) => "model_rejected",
            Self::Other(_) => "model_error",
            Self::Deadline => "deadline_exceeded",
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

/// The one retry rule for the store writes a turn must not lose (the stored turn, a claim given back, the
/// turn slot freed): up to `attempts` tries, retryable errors only, jittered exponential backoff (~50,
/// 100, 200 ms). Each retry is logged with `what`.
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
                let wait = 50u64 << (attempt - 1).min(5);
                tracing::warn!(what, attempt, code = e.code(), error = %chain(&e), "store write failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(wait / 2 + fastrand::u64(..=wait / 2))).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

impl From<crate::deadline::DeadlineExceeded> for StoreError {
    fn from(e: crate::deadline::DeadlineExceeded) -> Self {
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
