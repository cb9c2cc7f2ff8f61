//! Shared SDK configuration: timeouts on every call and bounded retries, per service.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};

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
    local_with_key(endpoint, "local", "local").await
}

/// The same, signing with the given static key (the local `@connections` API accepts only the key its run
/// made).
pub async fn local_with_key(endpoint: &str, access_key_id: &str, secret_access_key: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "mangaassist-local",
        ))
        .endpoint_url(endpoint)
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(1)).build())
        .load()
        .await
}
