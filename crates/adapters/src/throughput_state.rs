//! The core's `ThroughputStateStore` over the chat table: one item, pk `CONFIG`, sk `THROUGHPUT`.
//!
//! | attribute | type | what |
//! |---|---|---|
//! | `desired` | S | `Provisioned` / `OnDemand` |
//! | `desired_source` | S | `Schedule` / `Alarm` / `Clock` |
//! | `desired_at` | N | when `desired` was set, Unix ms |
//! | `arn` | S | the provisioned throughput's ARN (absent when none) |
//! | `status` | S | `NotProvisioned` / `Creating` / `InService` / `Updating` / `Failed` |
//! | `model_units` | N | units of the provisioned throughput |
//! | `commitment_ends` | N | when its commitment term ends, Unix ms (absent: no term); not deleted before |
//! | `replacement_arn`, `replacement_status`, `replacement_units` | S, S, N | a purchase of a new size, bought while the old one serves (absent: none) |
//! | `last_error` | S | what went wrong last (absent when the last pass was clean) |
//! | `priority` | BOOL | the peak's priority service tier is in force (absent: false); the chat function reads it |
//! | `plan_key`, `plan_sold`, `plan_checked_at`, `plan_detail` | S, BOOL, N, S | whether the Region sells the plan's provisioned throughput: `<model>@<region>` asked, the answer, when, why not (absent: not asked) |
//! | `updated_at` | N | last write, Unix ms |
//! | `version` | N | optimistic lock: each write is conditional on the version it read |
//!
//! The item has no `expires_at`: it must never expire.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use mangaassist_core::error::StoreError;

use crate::dynamo::{get_n, get_s, store_err};
use mangaassist_core::capacity::{
    Desired, DesiredSource, PlanCheck, SaveOutcome, ThroughputState, ThroughputStateStore, ThroughputStatus,
};

type Item = HashMap<String, AttributeValue>;

const PK: &str = "CONFIG";
const SK: &str = "THROUGHPUT";

/// `ThroughputStateStore` over DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoThroughputState {
    client: Client,
    table: String,
}

/// A stored item that does not parse: an error rather than a silent reset, since the reconciler would
/// otherwise overwrite what it cannot read and lose track of a throughput it bought.
#[derive(Debug, thiserror::Error)]
#[error("the CONFIG/THROUGHPUT item is malformed: attribute `{0}`")]
struct Malformed(&'static str);

fn get_bool(item: &Item, k: &str) -> Option<bool> {
    match item.get(k) {
        Some(AttributeValue::Bool(b)) => Some(*b),
        _ => None,
    }
}

fn from_item(item: &Item) -> Result<ThroughputState, Malformed> {
    let text = |k: &'static str| get_s(item, k).ok_or(Malformed(k));
    let number = |k: &'static str| get_n::<u64>(item, k).ok_or(Malformed(k));
    Ok(ThroughputState {
        desired: Desired::parse(text("desired")?).ok_or(Malformed("desired"))?,
        desired_source: DesiredSource::parse(text("desired_source")?).ok_or(Malformed("desired_source"))?,
        desired_at_ms: number("desired_at")?,
        arn: get_s(item, "arn").map(str::to_owned),
        status: ThroughputStatus::parse(text("status")?).ok_or(Malformed("status"))?,
        model_units: get_n(item, "model_units").unwrap_or(0),
        commitment_ends_ms: get_n(item, "commitment_ends"),
        replacement_arn: get_s(item, "replacement_arn").map(str::to_owned),
        replacement_status: match get_s(item, "replacement_status") {
            None => ThroughputStatus::NotProvisioned,
            Some(s) => ThroughputStatus::parse(s).ok_or(Malformed("replacement_status"))?,
        },
        replacement_units: get_n(item, "replacement_units").unwrap_or(0),
        last_error: get_s(item, "last_error").map(str::to_owned),
        plan_check: match get_s(item, "plan_key") {
            None => None,
            Some(key) => Some(PlanCheck {
                key: key.to_owned(),
                sold: get_bool(item, "plan_sold").ok_or(Malformed("plan_sold"))?,
                checked_at_ms: number("plan_checked_at")?,
                detail: get_s(item, "plan_detail").unwrap_or_default().to_owned(),
            }),
        },
        priority: get_bool(item, "priority").unwrap_or(false),
        updated_at_ms: number("updated_at")?,
        version: number("version")?,
    })
}

impl DynamoThroughputState {
    pub fn new(sdk: &SdkConfig, table: impl Into<String>) -> Self {
        Self { client: crate::sdk::dynamodb(sdk), table: table.into() }
    }

    /// Shares a client built elsewhere (e.g. `DynamoStore::client()`), with its timeouts and retries.
    pub fn from_client(client: Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

impl ThroughputStateStore for DynamoThroughputState {
    async fn load(&self) -> Result<Option<ThroughputState>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(PK.into()))
            .key("sk", AttributeValue::S(SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(store_err)?;
        let Some(item) = out.item else { return Ok(None) };
        from_item(&item).map(Some).map_err(|e| StoreError::Other(Box::new(e)))
    }

    async fn save(&self, st: &ThroughputState, expected_version: u64) -> Result<SaveOutcome, StoreError> {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(PK))
            .item("sk", s(SK))
            .item("desired", s(st.desired.as_str()))
            .item("desired_source", s(st.desired_source.as_str()))
            .item("desired_at", n(st.desired_at_ms))
            .item("status", s(st.status.as_str()))
            .item("model_units", n(u64::from(st.model_units)))
            .item("updated_at", n(st.updated_at_ms))
            .item("version", n(st.version))
            .item("priority", AttributeValue::Bool(st.priority));
        if let Some(arn) = &st.arn {
            req = req.item("arn", s(arn));
        }
        if let Some(ends) = st.commitment_ends_ms {
            req = req.item("commitment_ends", n(ends));
        }
        if let Some(arn) = &st.replacement_arn {
            req = req
                .item("replacement_arn", s(arn))
                .item("replacement_status", s(st.replacement_status.as_str()))
                .item("replacement_units", n(u64::from(st.replacement_units)));
        }
        if let Some(err) = &st.last_error {
            req = req.item("last_error", s(err));
        }
        if let Some(check) = &st.plan_check {
            req = req
                .item("plan_key", s(&check.key))
                .item("plan_sold", AttributeValue::Bool(check.sold))
                .item("plan_checked_at", n(check.checked_at_ms))
                .item("plan_detail", s(&check.detail));
        }
        req = if expected_version == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("#v = :expected")
                .expression_attribute_names("#v", "version")
                .expression_attribute_values(":expected", n(expected_version))
        };
        match req.send().await {
            Ok(_) => Ok(SaveOutcome::Saved),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                Ok(SaveOutcome::Conflict)
            }
            Err(e) => Err(store_err(e)),
        }
    }
}
