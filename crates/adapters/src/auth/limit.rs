//! The guest-token endpoint's rate limit: at most `per_minute` tokens per source IP per calendar minute,
//! counted with one atomic `ADD` per request on the item `LIMIT#ip#<ip>` / `MIN#<epoch minute>` of the chat
//! table (expiring two minutes later by TTL). The HTTP API's stage throttling caps the endpoint as a whole.
//! If the counter cannot be reached, the request is let through (and logged): the stage throttle still
//! holds, and shoppers are not locked out by a throttled table.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

/// Whether a request may proceed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Over the limit; try again after this many seconds (the rest of the minute).
    Limited {
        retry_after_secs: u64,
    },
}

/// Counts requests per source IP.
pub trait RateLimiter: Send + Sync {
    fn check(&self, source_ip: &str, now_secs: u64) -> impl Future<Output = Decision> + Send;
}

fn decide(count: u64, per_minute: u32, now_secs: u64) -> Decision {
    if count <= u64::from(per_minute) {
        Decision::Allow
    } else {
        Decision::Limited { retry_after_secs: 60 - now_secs % 60 }
    }
}

/// The counter in the chat table.
pub struct DynamoRateLimiter {
    client: aws_sdk_dynamodb::Client,
    table: String,
    per_minute: u32,
}

impl DynamoRateLimiter {
    pub fn new(sdk: &aws_config::SdkConfig, table: impl Into<String>, per_minute: u32) -> Self {
        Self { client: crate::sdk::dynamodb(sdk), table: table.into(), per_minute }
    }
}

impl RateLimiter for DynamoRateLimiter {
    async fn check(&self, source_ip: &str, now_secs: u64) -> Decision {
        let minute = now_secs / 60;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("LIMIT#ip#{source_ip}")))
            .key("sk", AttributeValue::S(format!("MIN#{minute}")))
            .update_expression("ADD #n :one SET expires_at = if_not_exists(expires_at, :exp)")
            .expression_attribute_names("#n", "n")
            .expression_attribute_values(":one", AttributeValue::N("1".to_owned()))
            .expression_attribute_values(":exp", AttributeValue::N(((minute + 2) * 60).to_string()))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await;
        match out {
            Ok(o) => {
                let count = o
                    .attributes()
                    .and_then(|a| a.get("n"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                decide(count, self.per_minute, now_secs)
            }
            Err(e) => {
                tracing::warn!(error = ?e, "rate-limit counter unavailable; letting the request through");
                Decision::Allow
            }
        }
    }
}

/// The same counter in memory (the local system; one process).
#[derive(Default)]
pub struct MemoryRateLimiter {
    per_minute: u32,
    counts: Mutex<HashMap<(String, u64), u64>>,
}

impl MemoryRateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self { per_minute, counts: Mutex::new(HashMap::new()) }
    }
}

impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, source_ip: &str, now_secs: u64) -> Decision {
        let minute = now_secs / 60;
        let Ok(mut counts) = self.counts.lock() else { return Decision::Allow };
        counts.retain(|(_, m), _| *m + 1 >= minute);
        let n = counts.entry((source_ip.to_owned(), minute)).or_insert(0);
        *n += 1;
        decide(*n, self.per_minute, now_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_request_over_the_limit_waits_for_the_next_minute() {
        let l = MemoryRateLimiter::new(2);
        assert_eq!(l.check("1.2.3.4", 120).await, Decision::Allow);
        assert_eq!(l.check("1.2.3.4", 121).await, Decision::Allow);
        assert_eq!(l.check("1.2.3.4", 130).await, Decision::Limited { retry_after_secs: 50 });
        assert_eq!(l.check("5.6.7.8", 130).await, Decision::Allow, "another address has its own count");
        assert_eq!(l.check("1.2.3.4", 180).await, Decision::Allow);
    }
}
