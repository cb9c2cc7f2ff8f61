//! The core's `Store` over one DynamoDB table (`pk`/`sk` strings, TTL attribute `expires_at`).
//!
//! | pk | sk | what |
//! |---|---|---|
//! | `CONN#<connectionId>` | `META` | session_id, user_id, guest, connected_at; turn_msg, turn_until: the one turn in flight |
//! | `MSG#<sessionId>#<messageId>` | `CLAIM` | status (`answering`/`answered`): answer each message of a session once |
//! | `SESSION#<sessionId>` | `OWNER` | user_id: who may resume the session |
//! | `SESSION#<sessionId>` | `TURN#<ts_ms, 13 digits>#<messageId>` | user_text, assistant_text, products, status, model, tokens |
//! | `SESSION#<sessionId>` | `SUMMARY` | text, covers_until_ms: the running summary of older turns |
//! | `LIMIT#<userId>` | `RATE#<minute>`, `TOKENS#<JST day>`, `TYPING#<minute>`, `TYPEGEN#<connectionId>`, `CONNS`, `ANSWERS#<connectionId>#<memory epoch>`, `ANSWERSMIN#<minute>` | n: atomic counters of the user's limits |
//! | `LIMIT#ip#<ip>` | `GCONN#<minute>`, `GTURN#<minute>`, `GTYPING#<minute>` | n: guests' connects, messages and typing frames from one address (an IPv6 address's /64) |
//!
//! A turn is one item holding both the user message and the answer, so history is one `Query`
//! (newest first, `Limit`) and a turn can never be half-stored.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::delete_item::builders::DeleteItemFluentBuilder;
use aws_sdk_dynamodb::operation::get_item::builders::GetItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use mangaassist_core::cache::CounterKey;
use mangaassist_core::error::StoreError;
use mangaassist_core::ids::{Asin, ConnectionId, MessageId, SessionId, UserId};
use mangaassist_core::intent::Intent;
use mangaassist_core::ports::{Claim, ConnectionRecord, Counter, Store, Summary, TurnRecord, TurnStatus};

type Item = HashMap<String, AttributeValue>;

/// `Store` over DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn get_s<'a>(item: &'a Item, k: &str) -> Option<&'a str> {
    item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str)
}

pub(crate) fn get_n<T: std::str::FromStr>(item: &Item, k: &str) -> Option<T> {
    item.get(k).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

/// Maps an SDK error, keeping it whole as the source: the one rule for every DynamoDB call. Throttling is
/// told apart by its error code; a timeout, a failed connection or a 5xx is `Unavailable` (retryable: our
/// writes are idempotent); anything else (validation, access) is final.
pub(crate) fn store_err<E>(err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let throttled = matches!(
        err.code(),
        Some("ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded")
    );
    let unavailable = crate::sdk::is_transient(&err);
    if throttled {
        StoreError::Throttled(Box::new(err))
    } else if unavailable {
        StoreError::Unavailable(Box::new(err))
    } else {
        StoreError::Other(Box::new(err))
    }
}

/// An item's key: partition key `pk`, sort key `sk`.
type Key = (AttributeValue, AttributeValue);

fn conn_key(id: &ConnectionId) -> Key {
    (s(format!("CONN#{id}")), s("META"))
}

fn claim_key(session: &SessionId, id: &MessageId) -> Key {
    (s(format!("MSG#{session}#{id}")), s("CLAIM"))
}

fn owner_key(session: &SessionId) -> Key {
    (s(format!("SESSION#{session}")), s("OWNER"))
}

fn counter_key(c: &Counter) -> Key {
    (s(format!("LIMIT#{}", c.owner)), s(counter_sort_key(&c.key)))
}

/// The sort key of a user's counter (the table's syntax; the core names only what is counted).
pub fn counter_sort_key(key: &CounterKey) -> String {
    match key {
        CounterKey::Rate { minute } => format!("RATE#{minute}"),
        CounterKey::Tokens { jst_day } => format!("TOKENS#{jst_day}"),
        CounterKey::Typing { minute } => format!("TYPING#{minute}"),
        CounterKey::GuestConnects { minute } => format!("GCONN#{minute}"),
        CounterKey::GuestTurns { minute } => format!("GTURN#{minute}"),
        CounterKey::GuestTyping { minute } => format!("GTYPING#{minute}"),
        CounterKey::TypingGeneration { conn } => format!("TYPEGEN#{conn}"),
        CounterKey::Connections => "CONNS".to_owned(),
        CounterKey::AnswersPerMessage { conn, epoch } => format!("ANSWERS#{conn}#{epoch}"),
        CounterKey::AnswersPerMinute { minute } => format!("ANSWERSMIN#{minute}"),
    }
}

/// Whether a write was refused by its condition.
fn condition_failed<E: ProvideErrorMetadata>(e: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> bool {
    e.code() == Some("ConditionalCheckFailedException")
}

/// The sort key of a turn: zero-padded time first, so turns sort chronologically.
pub fn turn_sk(ts_ms: u64, id: &MessageId) -> String {
    format!("TURN#{ts_ms:013}#{id}")
}

impl DynamoStore {
    pub fn new(sdk: &SdkConfig, table: impl Into<String>) -> Self {
        Self { client: crate::sdk::dynamodb(sdk), table: table.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// An `UpdateItem` of the item at `key` in this table.
    fn update(&self, (pk, sk): Key) -> UpdateItemFluentBuilder {
        self.client.update_item().table_name(&self.table).key("pk", pk).key("sk", sk)
    }

    /// A `GetItem` of the item at `key` in this table.
    fn get(&self, (pk, sk): Key) -> GetItemFluentBuilder {
        self.client.get_item().table_name(&self.table).key("pk", pk).key("sk", sk)
    }

    /// A `DeleteItem` of the item at `key` in this table.
    fn delete(&self, (pk, sk): Key) -> DeleteItemFluentBuilder {
        self.client.delete_item().table_name(&self.table).key("pk", pk).key("sk", sk)
    }

    fn turn_from_item(item: &Item) -> Option<TurnRecord> {
        let session_id = SessionId::parse(get_s(item, "pk")?.strip_prefix("SESSION#")?).ok()?;
        let message_id = MessageId::parse(get_s(item, "message_id")?).ok()?;
        let products = item
            .get("products")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok()).filter_map(|a| Asin::parse(a.as_str()).ok()).collect())
            .unwrap_or_default();
        Some(TurnRecord {
            session_id,
            message_id,
            ts_ms: get_n(item, "ts_ms")?,
            user_text: get_s(item, "user_text")?.to_owned(),
            assistant_text: get_s(item, "assistant_text").unwrap_or_default().to_owned(),
            products,
            intent: get_s(item, "intent").and_then(Intent::parse),
            status: TurnStatus::parse(get_s(item, "status")?)?,
            model: get_s(item, "model").unwrap_or_default().to_owned(),
            input_tokens: get_n(item, "input_tokens").unwrap_or(0),
            output_tokens: get_n(item, "output_tokens").unwrap_or(0),
            user_tokens: get_n(item, "user_tokens"),
            assistant_tokens: get_n(item, "assistant_tokens"),
            guardrail: get_s(item, "guardrail").map(str::to_owned),
            expires_at: get_n(item, "expires_at").unwrap_or(0),
        })
    }
}

impl Store for DynamoStore {
    async fn put_connection(&self, rec: &ConnectionRecord) -> Result<(), StoreError> {
        let (pk, sk) = conn_key(&rec.connection_id);
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk)
            .item("sk", sk)
            .item("session_id", s(rec.session_id.as_str()))
            .item("user_id", s(rec.user_id.as_str()))
            .item("guest", AttributeValue::Bool(rec.guest))
            .item("connected_at", n(rec.connected_at_ms))
            .item("expires_at", n(rec.expires_at))
            .send()
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn get_connection(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>, StoreError> {
        let out = self.get(conn_key(id)).send().await.map_err(store_err)?;
        let Some(item) = out.item else { return Ok(None) };
        let rec = (|| {
            Some(ConnectionRecord {
                connection_id: id.clone(),
                session_id: SessionId::parse(get_s(&item, "session_id")?).ok()?,
                user_id: UserId::parse(get_s(&item, "user_id")?).ok()?,
                guest: item.get("guest").and_then(|v| v.as_bool().ok()).copied().unwrap_or(false),
                connected_at_ms: get_n(&item, "connected_at")?,
                expires_at: get_n(&item, "expires_at").unwrap_or(0),
            })
        })();
        if rec.is_none() {
            tracing::warn!(connection_id = %id, "malformed connection record ignored");
        }
        Ok(rec)
    }

    async fn delete_connection(&self, id: &ConnectionId) -> Result<(), StoreError> {
        self.delete(conn_key(id)).send().await.map_err(store_err)?;
        Ok(())
    }

    async fn claim_message(&self, id: &MessageId, session: &SessionId, expires_at: u64) -> Result<Claim, StoreError> {
        let (pk, sk) = claim_key(session, id);
        // One attempt, no SDK retries: a throttled table answers at once (the turn then answers without
        // dedupe, logged) instead of after the retries' backoff, while a slow write that will land is
        // waited for by the turn (never answered twice).
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk)
            .item("sk", sk)
            .item("status", s("answering"))
            .item("expires_at", n(expires_at))
            .condition_expression("attribute_not_exists(pk)")
            .customize()
            .config_override(aws_sdk_dynamodb::config::Builder::default().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(Claim::Claimed),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                Ok(Claim::Duplicate)
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn release_claim(&self, id: &MessageId, session: &SessionId) -> Result<(), StoreError> {
        let (pk, sk) = claim_key(session, id);
        // Only a claim still being answered is released; an answered one stays.
        let res = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .condition_expression("#st = :answering")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":answering", s("answering"))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn save_turn(&self, t: &TurnRecord) -> Result<(), StoreError> {
        let products = AttributeValue::L(t.products.iter().map(|a| s(a.as_str())).collect());
        let counts = [("user_tokens", t.user_tokens), ("assistant_tokens", t.assistant_tokens)];
        let intent = t.intent.map(Intent::as_str);
        let mut turn = Put::builder()
            .table_name(&self.table)
            .item("pk", s(format!("SESSION#{}", t.session_id)))
            .item("sk", s(turn_sk(t.ts_ms, &t.message_id)))
            .item("message_id", s(t.message_id.as_str()))
            .item("ts_ms", n(t.ts_ms))
            .item("user_text", s(t.user_text.as_str()))
            .item("assistant_text", s(t.assistant_text.as_str()))
            .item("products", products)
            .item("status", s(t.status.as_str()))
            .item("model", s(t.model.as_str()))
            .item("input_tokens", n(t.input_tokens))
            .item("output_tokens", n(t.output_tokens))
            .item("expires_at", n(t.expires_at))
            .condition_expression("attribute_not_exists(pk)");
        for (k, v) in counts {
            if let Some(v) = v {
                turn = turn.item(k, n(v));
            }
        }
        if let Some(i) = intent {
            turn = turn.item("intent", s(i));
        }
        if let Some(g) = &t.guardrail {
            turn = turn.item("guardrail", s(g.as_str()));
        }
        let turn = turn.build().map_err(|e| StoreError::Other(Box::new(e)))?;
        let (pk, sk) = claim_key(&t.session_id, &t.message_id);
        // A complete (or blocked) answer marks the claim answered; a partial one (or one the client left)
        // gives it back, so the same message may be sent again.
        let claim = if t.status.settles_claim() {
            let put = Put::builder()
                .table_name(&self.table)
                .item("pk", pk)
                .item("sk", sk)
                .item("status", s("answered"))
                .item("expires_at", n(t.expires_at))
                .build()
                .map_err(|e| StoreError::Other(Box::new(e)))?;
            TransactWriteItem::builder().put(put).build()
        } else {
            let delete = Delete::builder()
                .table_name(&self.table)
                .key("pk", pk)
                .key("sk", sk)
                .build()
                .map_err(|e| StoreError::Other(Box::new(e)))?;
            TransactWriteItem::builder().delete(delete).build()
        };
        let res = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(turn).build())
            .transact_items(claim)
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            // The turn item exists already: this exact turn was stored before. Idempotent success.
            Err(e)
                if e.as_service_error().is_some_and(|se| {
                    se.is_transaction_canceled_exception()
                        && se.message().unwrap_or_default().contains("ConditionalCheckFailed")
                }) =>
            {
                Ok(())
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn session_owner(&self, session: &SessionId) -> Result<Option<UserId>, StoreError> {
        let out = self.get(owner_key(session)).consistent_read(true).send().await.map_err(store_err)?;
        Ok(out.item.as_ref().and_then(|i| get_s(i, "user_id")).and_then(|u| UserId::parse(u).ok()))
    }

    async fn create_session(&self, session: &SessionId, user: &UserId, expires_at: u64) -> Result<(), StoreError> {
        let (pk, sk) = owner_key(session);
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk)
            .item("sk", sk)
            .item("user_id", s(user.as_str()))
            .item("expires_at", n(expires_at))
            // The same owner again is a retried write that landed: success, not a conflict.
            .condition_expression("attribute_not_exists(pk) OR user_id = :u")
            .expression_attribute_values(":u", s(user.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => {
                Err(StoreError::Other(format!("session {session} belongs to another user").into()))
            }
            Err(e) => Err(store_err(e)),
        }
    }

    async fn begin_turn(
        &self,
        conn: &ConnectionId,
        msg: &MessageId,
        now_ms: u64,
        until_ms: u64,
    ) -> Result<bool, StoreError> {
        let res = self
            .update(conn_key(conn))
            // A connection whose record was never written still gets one slot (the item then holds only the
            // slot, and expires like a connection).
            .update_expression("SET turn_msg = :m, turn_until = :until, expires_at = if_not_exists(expires_at, :exp)")
            .condition_expression("attribute_not_exists(turn_until) OR turn_until < :now")
            .expression_attribute_values(":m", s(msg.as_str()))
            .expression_attribute_values(":until", n(until_ms))
            .expression_attribute_values(":exp", n(until_ms / 1000 + 3 * 3600))
            .expression_attribute_values(":now", n(now_ms))
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e) if condition_failed(&e) => Ok(false),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn end_turn(&self, conn: &ConnectionId, msg: &MessageId) -> Result<(), StoreError> {
        let res = self
            .update(conn_key(conn))
            .update_expression("REMOVE turn_msg, turn_until")
            .condition_expression("turn_msg = :m")
            .expression_attribute_values(":m", s(msg.as_str()))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if condition_failed(&e) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn add_to_counter(
        &self,
        counter: &Counter,
        delta: i64,
        limit: Option<i64>,
        expires_at: u64,
    ) -> Result<Option<i64>, StoreError> {
        // A step past the limit from zero is past it from any value; the condition below cannot see that for
        // an absent counter (`attribute_not_exists`).
        if limit.is_some_and(|l| delta > 0 && delta > l) {
            return Ok(None);
        }
        let mut req = self
            .update(counter_key(counter))
            .update_expression("ADD n :d SET expires_at = :e")
            .expression_attribute_values(":d", n(delta))
            .expression_attribute_values(":e", n(expires_at))
            .return_values(aws_sdk_dynamodb::types::ReturnValue::UpdatedNew);
        // The new value stays within [0, limit]: the bound is checked on the old value.
        req = match (delta >= 0, limit) {
            (true, Some(l)) => req
                .condition_expression("attribute_not_exists(n) OR n <= :cap")
                .expression_attribute_values(":cap", n(l - delta)),
            (true, None) => req,
            (false, _) => req.condition_expression("n >= :floor").expression_attribute_values(":floor", n(-delta)),
        };
        match req.send().await {
            Ok(out) => Ok(Some(out.attributes.as_ref().and_then(|a| get_n(a, "n")).unwrap_or(delta))),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn counter(&self, counter: &Counter) -> Result<i64, StoreError> {
        let out = self.get(counter_key(counter)).send().await.map_err(store_err)?;
        Ok(out.item.as_ref().and_then(|i| get_n(i, "n")).unwrap_or(0))
    }

    async fn get_summary(&self, session: &SessionId) -> Result<Option<Summary>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(format!("SESSION#{session}")))
            .key("sk", s("SUMMARY"))
            .send()
            .await
            .map_err(store_err)?;
        Ok(out.item.and_then(|item| {
            Some(Summary {
                text: get_s(&item, "text")?.to_owned(),
                covers_until_ms: get_n(&item, "covers_until_ms")?,
                expires_at: get_n(&item, "expires_at").unwrap_or(0),
            })
        }))
    }

    async fn put_summary(&self, session: &SessionId, summary: &Summary) -> Result<(), StoreError> {
        // Never move the summary backwards: a slower, older summarization must not overwrite a newer one.
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("SESSION#{session}")))
            .item("sk", s("SUMMARY"))
            .item("text", s(summary.text.as_str()))
            .item("covers_until_ms", n(summary.covers_until_ms))
            .item("expires_at", n(summary.expires_at))
            .condition_expression("attribute_not_exists(pk) OR covers_until_ms < :c")
            .expression_attribute_values(":c", n(summary.covers_until_ms))
            .send()
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => Ok(()),
            Err(e) => Err(store_err(e)),
        }
    }

    async fn recent_turns(&self, session: &SessionId, limit: u32) -> Result<Vec<TurnRecord>, StoreError> {
        // A window of none reads nothing, without a call: a `Query` with `Limit` 0 is an error, not an empty
        // page (moto_server answers it with a 500).
        if limit == 0 {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :turn)")
            .expression_attribute_values(":pk", s(format!("SESSION#{session}")))
            .expression_attribute_values(":turn", s("TURN#"))
            .scan_index_forward(false)
            .limit(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(store_err)?;
        Ok(out.items().iter().filter_map(Self::turn_from_item).collect())
    }
}

/// Creates the table if it does not exist (local runs and tests; on AWS the SAM template owns it).
pub async fn ensure_table(client: &Client, table: &str) -> Result<(), StoreError> {
    use aws_sdk_dynamodb::types::{AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType};
    let attr =
        |name: &str| AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build();
    let key = |name: &str, kt| KeySchemaElement::builder().attribute_name(name).key_type(kt).build();
    let res = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk").map_err(|e| StoreError::Other(Box::new(e)))?)
        .attribute_definitions(attr("sk").map_err(|e| StoreError::Other(Box::new(e)))?)
        .key_schema(key("pk", KeyType::Hash).map_err(|e| StoreError::Other(Box::new(e)))?)
        .key_schema(key("sk", KeyType::Range).map_err(|e| StoreError::Other(Box::new(e)))?)
        .send()
        .await;
    match res {
        Ok(_) => Ok(()),
        Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_in_use_exception()) => Ok(()),
        Err(e) => Err(store_err(e)),
    }
}

#[cfg(test)]
mod key_docs {
    use super::*;

    /// Each counter's sort key, as this adapter renders it, is in the module's key table and the README's.
    #[test]
    fn the_key_tables_name_every_counter() {
        let readme = include_str!("../../../README.md");
        for key in CounterKey::examples() {
            let owner = if key.of_address() { "| `LIMIT#ip#<ip>` |" } else { "| `LIMIT#<userId>` |" };
            let row = |doc: &'static str| doc.lines().find(|l| l.contains(owner)).unwrap_or_default();
            let (ours, theirs) = (row(include_str!("dynamo.rs")), row(readme));
            let sk = counter_sort_key(&key);
            let prefix = sk.split('#').next().unwrap_or_default();
            let named = format!("`{prefix}");
            assert!(ours.contains(&named) && theirs.contains(&named), "{sk}: {ours} / {theirs}");
        }
    }
}
