//! Shared SDK configuration: the HTTP client and its connection pool, timeouts on every call and bounded
//! retries, per service.
//!
//! # Connections
//! Every client built from one `SdkConfig` shares one HTTP client ([`http_client`]: the SDK's own hyper 1 +
//! rustls/aws-lc stack). Two settings differ from the SDK's defaults, both for a Lambda container that sits
//! idle (frozen) between turns:
//! - **Pool idle timeout, [`POOL_IDLE_TIMEOUT`] (50 s).** hyper keeps an idle connection 90 s by default
//!   (`aws-smithy-http-client` docs), longer than AWS front ends keep theirs: DynamoDB drops idle connections
//!   after ~60 s (aws/aws-sdk-java#1365), S3 after ~20 s (vectordotdev/vector#9703), ALB's default is 60 s;
//!   Bedrock publishes no figure for its runtime endpoint. A pooled connection the server has already
//!   closed is either an immediate error ("connection closed before message completed", rusoto#1686,
//!   aws-sdk-rust#440) or, when a middlebox dropped the flow silently, a request that stalls until a
//!   timeout (aws-sdk-rust#1417; a re:Post report of ~63 s first tokens after idle on Bedrock). The pool
//!   drops a connection before the 60 s front ends do; Lambda's monotonic clock keeps running across
//!   freezes (measured in aws/aws-lambda-web-adapter#830), so a thawed container sees the true idle time.
//!   The warmers ([`crate::warm`]) refresh the connection on `$connect` and `typing` well before that.
//! - **Connect timeout, [`CONNECT_TIMEOUT`] (1 s)**, TCP and TLS together (the SDK wraps the TLS connector).
//!
//! A connection past its idle time that the pool still hands out is what [`crate::bedrock::StreamOpen`]'s
//! first-byte deadline and its one retry on a fresh connection are for.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
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

/// How long an idle pooled connection is kept: below the ~60 s after which AWS front ends close theirs
/// (see the module docs).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// TCP + TLS connect timeout of every client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP client every SDK client of the process shares: the SDK's default stack (hyper 1, rustls with
/// aws-lc) with idle pooled connections kept `pool_idle` at most.
pub fn http_client(pool_idle: Duration) -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .pool_idle_timeout(pool_idle)
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https()
}

/// An HTTP client that keeps no idle connection: every request opens a new one. For the one retry after
/// a pooled connection failed, which must not land on another stale socket of the same pool.
pub fn fresh_http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .pool_max_idle_per_host(0)
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .build_https()
}

/// Loads region, credentials and endpoint overrides from the environment (the standard chain).
pub async fn load() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client(POOL_IDLE_TIMEOUT))
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build())
        .load()
        .await
}

/// Request/response services (DynamoDB): a short deadline per attempt, three attempts with the SDK's
/// jittered exponential backoff, and an overall deadline.
pub fn request_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
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
/// unless the client sets its own. The same HTTP client as [`load`].
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
        .http_client(http_client(POOL_IDLE_TIMEOUT))
        .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build())
        .load()
        .await
}
