//! Warm connections: the hot-path clients open their connections during init and reopen them when the
//! container has been idle, so a turn does not pay a TCP+TLS handshake (+100 to +450 ms published for a
//! Bedrock endpoint; ~745 ms of TLS at 128 MB for the Rust SDK in ap-northeast-1, see
//! [`crate::sdk`]) or meet a pooled socket the endpoint already dropped.
//!
//! Each warm-up is a request with no side effects that leaves a pooled connection behind:
//! - Bedrock runtime: `ListAsyncInvokes` ([`BedrockModel::warm`]);
//! - DynamoDB: `GetItem` of a key no item has (`pk = sk = "WARM"`; half a read unit, nothing written);
//! - API Gateway management: `GetConnection` of an id no connection has (an HTTP 410 is an answer too);
//! - the HTTP sources (OpenSearch, product services): `HEAD` of the base URL (any status is an answer).
//!
//! Redis is not here: the cache's client holds one persistent connection and reconnects by itself.
//!
//! [`Warmer::warm_all`] runs at init; [`Warmer::refresh_if_idle`] on `$connect` and `typing` frames, only
//! when the Bedrock client has been idle for [`Warmer::idle`] (the container's idle clock: every turn uses
//! Bedrock and DynamoDB together). All calls run concurrently and the whole is bounded by [`Warmer::budget`];
//! a failure is logged, never raised: the turn opens its own connection if it must.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use futures_util::future::join_all;
use mangaassist_core::deadline::within;

use crate::apigw::ApiGatewaySink;
use crate::bedrock::BedrockModel;
use crate::opensearch::OpenSearchRetriever;
use crate::services::HttpProductService;

/// Refresh when the connection has been idle this long: well under the pool's idle timeout
/// ([`crate::sdk::POOL_IDLE_TIMEOUT`], 50 s), so a `typing` frame a few seconds before the message keeps the
/// pooled connection alive for it, and a container idle past the pool's timeout reconnects off the turn's
/// path.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(20);

/// The most a warm-up may take: the SDK's connect timeout.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(1);

/// One warm-up call: `Err` names the client and why.
type WarmCall<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// What one warm-up did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Warmed {
    /// Connections warmed (answered).
    pub ok: u32,
    /// Warm-ups that failed or ran out of budget.
    pub failed: u32,
}

/// The hot-path clients of one container, to keep their connections open.
#[derive(Debug, Clone)]
pub struct Warmer {
    bedrock: Option<BedrockModel>,
    dynamo: Option<aws_sdk_dynamodb::Client>,
    table: String,
    search: Option<OpenSearchRetriever>,
    products: Option<HttpProductService>,
    /// Idle time after which `$connect` and `typing` refresh the connections.
    pub idle: Duration,
    /// Bound on one warm-up, all calls together.
    pub budget: Duration,
}

impl Default for Warmer {
    /// Nothing to warm.
    fn default() -> Self {
        Self {
            bedrock: None,
            dynamo: None,
            table: String::new(),
            search: None,
            products: None,
            idle: DEFAULT_IDLE,
            budget: DEFAULT_BUDGET,
        }
    }
}

impl Warmer {
    /// Refreshes after `idle` without traffic instead of [`DEFAULT_IDLE`].
    pub fn with_idle(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// Warms the Bedrock runtime connection of `model` (a clone shares its connection pool).
    pub fn with_bedrock(mut self, model: BedrockModel) -> Self {
        self.bedrock = Some(model);
        self
    }

    /// Warms the DynamoDB connection of `client` with a read of `table`.
    pub fn with_dynamo(mut self, client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        self.dynamo = Some(client);
        self.table = table.into();
        self
    }

    /// Warms the HTTP sources that are configured.
    pub fn with_sources(mut self, search: Option<OpenSearchRetriever>, products: Option<HttpProductService>) -> Self {
        self.search = search;
        self.products = products;
        self
    }

    /// Whether there is anything to warm.
    pub fn is_empty(&self) -> bool {
        self.bedrock.is_none() && self.dynamo.is_none() && self.search.is_none() && self.products.is_none()
    }

    /// Opens every connection (and `sink`'s, when given), concurrently, within [`Self::budget`].
    pub async fn warm_all(&self, sink: Option<&ApiGatewaySink>) -> Warmed {
        let mut calls: Vec<WarmCall<'_>> = Vec::new();
        if let Some(m) = &self.bedrock {
            calls.push(Box::pin(async move { m.warm().await.map_err(|e| format!("bedrock: {e}")) }));
        }
        if let Some(c) = &self.dynamo {
            calls.push(Box::pin(async move {
                let warm = AttributeValue::S("WARM".to_owned());
                let res = c.get_item().table_name(&self.table).key("pk", warm.clone()).key("sk", warm).send().await;
                match res {
                    Ok(_) | Err(aws_sdk_dynamodb::error::SdkError::ServiceError(_)) => Ok(()),
                    Err(e) => Err(format!("dynamodb: {}", mangaassist_core::error::chain(&e))),
                }
            }));
        }
        if let Some(s) = sink {
            calls.push(Box::pin(async move { s.warm().await.map_err(|e| format!("apigw: {e}")) }));
        }
        if let Some(r) = &self.search {
            calls.push(Box::pin(async move { r.warm().await.map_err(|e| format!("opensearch: {e}")) }));
        }
        if let Some(p) = &self.products {
            calls.push(Box::pin(async move { p.warm().await.map_err(|e| format!("services: {e}")) }));
        }
        if calls.is_empty() {
            return Warmed::default();
        }
        let total = u32::try_from(calls.len()).unwrap_or(u32::MAX);
        match within("warm connections", self.budget, join_all(calls)).await {
            Ok(results) => {
                let mut w = Warmed::default();
                for r in results {
                    match r {
                        Ok(()) => w.ok += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, "could not warm a connection");
                            w.failed += 1;
                        }
                    }
                }
                w
            }
            Err(late) => {
                tracing::warn!(budget_ms = late.ms, "warming connections ran out of time");
                Warmed { ok: 0, failed: total }
            }
        }
    }

    /// [`Self::warm_all`] when the Bedrock client has been idle for [`Self::idle`] or longer (always when
    /// there is no Bedrock client); `None` when it did not need to.
    pub async fn refresh_if_idle(&self, sink: Option<&ApiGatewaySink>) -> Option<Warmed> {
        if self.bedrock.as_ref().is_some_and(|m| m.idle() < self.idle) {
            return None;
        }
        Some(self.warm_all(sink).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_empty_warmer_does_nothing() {
        let w = Warmer::default();
        assert!(w.is_empty());
        assert_eq!(w.warm_all(None).await, Warmed::default());
        assert_eq!(w.refresh_if_idle(None).await, Some(Warmed::default()));
    }
}
