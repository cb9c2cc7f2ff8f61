//! Shared SDK configuration: timeouts on every call and bounded retries, per service.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;

/// The one rule for "may the same request succeed if sent again", for every SDK client: the request never
/// got an answer (timed out, could not be sent, or its response could not be read). Any response type, an
/// event stream's included; [`is_transient`] adds the service's own 5xx.
pub fn is_transport<E, R>(err: &SdkError<E, R>) -> bool {
    matches!(err, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_))
}

/// A transport failure ([`is_transport`]) or a 5xx answer: worth another attempt.
pub fn is_transient<E>(err: &SdkError<E, HttpResponse>) -> bool {
    is_transport(err) || matches!(err, SdkError::ServiceError(se) if se.raw().status().is_server_error())
}

/// Loads region, credentials and endpoint overrides from the environment (the standard chain).
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(1)).build())
        .load()
        .await
}

/// Request/response services (DynamoDB): a short deadline per attempt, three attempts with the SDK's
/// jittered exponential backoff, and an overall deadline.
pub fn request_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(Duration::from_millis(800))
        .operation_timeout(Duration::from_secs(3))
        .build()
}

/// Three attempts, jittered exponential backoff (the SDK's standard mode).
pub fn request_retries() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(3)
}

/// The DynamoDB client every adapter uses: request timeouts and bounded retries.
pub fn dynamodb(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::config::Builder::from(sdk)
        .timeout_config(request_timeouts())
        .retry_config(request_retries())
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}

/// An `SdkConfig` for local endpoints (emulators, moto): fixed region and static credentials, so no AWS
/// account, profile or instance metadata is consulted. `endpoint` applies to every client built from it
/// unless the client sets its own.
pub async fn local(endpoint: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "mangaassist-local",
        ))
        .endpoint_url(endpoint)
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(1)).build())
        .load()
        .await
}
