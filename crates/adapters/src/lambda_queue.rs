//! The core's `PrefetchQueue` over AWS Lambda: one asynchronous `Invoke` (`InvocationType::Event`) of the
//! prefetch function per finished turn, with the [`PrefetchJob`] as the payload. Lambda queues the event
//! and answers `202` at once; its own retries of a failed run are made harmless by the prefetcher's claim.
//!
//! The invoke runs after the answer has streamed, but the chat handler still waits for it, so it is short:
//! one attempt (a lost prefetch costs a cache miss, a retry costs the shopper's time), a 1 s operation
//! timeout. `AWS_ENDPOINT_URL_LAMBDA` points it at a local server.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_lambda::Client;
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;
use mangaassist_core::ahead::prefetch::{PrefetchJob, PrefetchQueue};
use mangaassist_core::ports::sources::SourceError;

/// Deadline of one invoke, connection included.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(1);

/// `PrefetchQueue` over an asynchronous Lambda invoke.
#[derive(Debug, Clone)]
pub struct LambdaQueue {
    client: Client,
    function_name: String,
}

impl LambdaQueue {
    /// A client built once per container from the shared `SdkConfig`.
    pub fn new(sdk: &SdkConfig, function_name: impl Into<String>) -> Self {
        let config = aws_sdk_lambda::config::Builder::from(sdk)
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(500))
                    .operation_timeout(INVOKE_TIMEOUT)
                    .build(),
            )
            .build();
        Self { client: Client::from_conf(config), function_name: function_name.into() }
    }
}

impl PrefetchQueue for LambdaQueue {
    async fn enqueue(&self, job: &PrefetchJob) -> Result<(), SourceError> {
        let payload = serde_json::to_vec(job).map_err(|e| SourceError::Other(Box::new(e)))?;
        let res = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await;
        match res {
            Ok(out) if out.status_code() == 202 => Ok(()),
            Ok(out) => {
                Err(SourceError::Other(format!("Lambda answered {} to an Event invoke", out.status_code()).into()))
            }
            Err(e) => {
                // Keep the SDK error; a timeout, a throttle and a 5xx are worth another turn's try.
                let retryable = crate::sdk::is_transient(&e)
                    || e.as_service_error()
                        .is_some_and(|s| s.is_too_many_requests_exception() || s.is_service_exception());
                if retryable {
                    Err(SourceError::Unavailable(Box::new(e)))
                } else {
                    Err(SourceError::Other(Box::new(e)))
                }
            }
        }
    }
}
