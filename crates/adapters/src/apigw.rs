//! API Gateway `PostToConnection` behind the core's `ConnectionSink`.
//!
//! The management endpoint is `https://{domainName}/{stage}` of the event that invoked us, unless an
//! override is configured (custom domains, local emulators). One client per endpoint is built on first use
//! and reused for the container's life; all share the `SdkConfig`'s HTTP connection pool.

use std::collections::HashMap;
use std::sync::RwLock;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::primitives::Blob;
use bytes::Bytes;
use mangaassist_core::error::SinkError;
use mangaassist_core::ids::ConnectionId;
use mangaassist_core::ports::ConnectionSink;

/// A `ConnectionSink` for one API Gateway stage.
#[derive(Clone, Debug)]
pub struct ApiGatewaySink {
    client: Client,
}

impl ConnectionSink for ApiGatewaySink {
    async fn post(&self, conn: &ConnectionId, frame: Bytes) -> Result<(), SinkError> {
        let res =
            self.client.post_to_connection().connection_id(conn.as_str()).data(Blob::new(frame.to_vec())).send().await;
        let Err(err) = res else { return Ok(()) };
        use aws_sdk_apigatewaymanagement::error::SdkError;
        Err(match &err {
            SdkError::ServiceError(se) if se.err().is_gone_exception() => SinkError::Gone,
            SdkError::ServiceError(se) if se.err().is_limit_exceeded_exception() => SinkError::Retryable(Box::new(err)),
            _ if crate::sdk::is_transient(&err) => SinkError::Retryable(Box::new(err)),
            _ => SinkError::Fatal(Box::new(err)),
        })
    }
}

impl ApiGatewaySink {
    /// Opens (or reuses) the pooled connection to this stage's management endpoint: `GetConnection` of an id
    /// no connection has. API Gateway answers `GoneException` (410), or `AccessDenied` (403) to a role allowed
    /// only `POST @connections`; any answer leaves the connection in the pool, only a transport failure is an
    /// error.
    pub async fn warm(&self) -> Result<(), SinkError> {
        use aws_sdk_apigatewaymanagement::error::SdkError;
        match self.client.get_connection().connection_id("warm-up").send().await {
            Ok(_) | Err(SdkError::ServiceError(_)) => Ok(()),
            Err(e) => Err(SinkError::Retryable(Box::new(e))),
        }
    }
}

/// Builds and caches one [`ApiGatewaySink`] per management endpoint.
#[derive(Debug)]
pub struct ApiGatewaySinks {
    sdk: SdkConfig,
    endpoint_override: Option<String>,
    cache: RwLock<HashMap<String, ApiGatewaySink>>,
}

impl ApiGatewaySinks {
    /// `endpoint_override` replaces the endpoint derived from events (e.g. `http://127.0.0.1:9001/local`).
    pub fn new(sdk: SdkConfig, endpoint_override: Option<String>) -> Self {
        Self { sdk, endpoint_override, cache: RwLock::new(HashMap::new()) }
    }

    /// The management endpoint for an event's `domainName` and `stage`.
    pub fn endpoint(&self, domain_name: &str, stage: &str) -> String {
        match &self.endpoint_override {
            Some(e) => e.clone(),
            None => format!("https://{domain_name}/{stage}"),
        }
    }

    /// The sink for an event's `domainName` and `stage`.
    pub fn for_event(&self, domain_name: &str, stage: &str) -> ApiGatewaySink {
        let endpoint = self.endpoint(domain_name, stage);
        if let Some(s) = self.cache.read().ok().and_then(|m| m.get(&endpoint).cloned()) {
            return s;
        }
        let conf = aws_sdk_apigatewaymanagement::config::Builder::from(&self.sdk)
            .endpoint_url(&endpoint)
            .timeout_config(crate::sdk::request_timeouts())
            // The relay retries posts itself (bounded, jittered); SDK retries on top would multiply them.
            .retry_config(RetryConfig::disabled())
            .build();
        let sink = ApiGatewaySink { client: Client::from_conf(conf) };
        if let Ok(mut m) = self.cache.write() {
            m.insert(endpoint, sink.clone());
        }
        sink
    }
}
