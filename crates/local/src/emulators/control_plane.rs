//! The Bedrock provisioned-throughput control plane, served by the Bedrock emulator (moto does not
//! implement it), in the restJson1 shapes the unmodified `aws-sdk-bedrock` client sends and parses:
//!
//! | operation | request |
//! |---|---|
//! | `CreateProvisionedModelThroughput` | `POST /provisioned-model-throughput` -> 201 `{"provisionedModelArn"}` |
//! | `ListProvisionedModelThroughputs` | `GET /provisioned-model-throughputs?nameContains&statusEquals&modelArnEquals&maxResults&nextToken&sortOrder` |
//! | `GetProvisionedModelThroughput` | `GET /provisioned-model-throughput/{provisionedModelId}` (ARN, name or id) |
//! | `DeleteProvisionedModelThroughput` | `DELETE /provisioned-model-throughput/{provisionedModelId}` |
//! | `GetFoundationModel` | `GET /foundation-models/{modelIdentifier}` -> `{"modelDetails": {..., "inferenceTypesSupported"}}` |
//! | `ListFoundationModels` | `GET /foundation-models?byInferenceType&byProvider` -> `{"modelSummaries": [...]}` |
//!
//! # What the emulated Region sells ([`Catalog`])
//! [`Catalog::Everything`] (the default, a what-if) sells provisioned throughput for every model of the
//! capability table at any context length, so tests and benches can buy it for the Haiku-class reference
//! model. [`Catalog::Documented`] sells exactly what the Bedrock supported-models table lists for one Region
//! (`mangaassist_core::capacity::plan::PROVISIONED_SOLD`): nothing in `ap-northeast-1`. In either, a model
//! of the table without a context length is on-demand (and through inference profiles), a provisioned id the
//! catalog does not sell is not a model of the Region (`GetFoundationModel`: 404 `ResourceNotFoundException`),
//! and `CreateProvisionedModelThroughput` for it is a `ValidationException` (the error type is our choice:
//! the reference does not say which).
//!
//! Errors are an HTTP status, the header `x-amzn-errortype: <Name>` and a body `{"message":"..."}`, with the
//! names the SDK models for each operation: `ValidationException` (400; also for a name already in use,
//! since `Create` models no conflict error), `ResourceNotFoundException` (404).
//!
//! # Behaviour
//! A new provisioned throughput is `Creating` for [`ControlPlane::set_creating_delay`] (3 s by default),
//! then `InService`, or `Failed` if [`ControlPlane::fail_next_creation`] was called before it was bought.
//! `clientRequestToken` makes `Create` idempotent: the same token with the same request returns the
//! first ARN and buys nothing; with a different request it is a `ValidationException`. A purchase with a
//! `commitmentDuration` reports its `commitmentExpirationTime` (30 or 180 days after purchase) and cannot
//! be deleted before then ("You can't delete a Provisioned Throughput with commitment before the commitment
//! term is complete", the `DeleteProvisionedModelThroughput` reference; the emulator answers
//! `ValidationException`, the error type is our choice: the reference does not say which).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use mangaassist_core::capacity::plan::{PROVISIONED_SOLD, documented_provisioned};
use mangaassist_core::models::{FAMILIES, ModelId, family};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

const REGION: &str = "us-east-1";
const ACCOUNT: &str = "123456789012";
const DEFAULT_CREATING_DELAY: Duration = Duration::from_secs(3);

/// What the emulated Region sells as provisioned throughput (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Catalog {
    /// Every model of the capability table, at any context length (a what-if; the default).
    #[default]
    Everything,
    /// What the Bedrock supported-models table lists for this Region.
    Documented(String),
}

impl Catalog {
    /// Whether `model_id` (a provisioned-throughput id, `<base>:<context>`) is sold here. A custom model's
    /// ARN is always accepted.
    pub fn sells(&self, model_id: &str) -> bool {
        if model_id.starts_with("arn:") {
            return true;
        }
        let known = family(model_id).is_some() && ModelId::parse(model_id).is_ok_and(|m| m.provisioned_purchase_ok());
        match self {
            Self::Everything => known,
            Self::Documented(region) => documented_provisioned(model_id, region).unwrap_or(false),
        }
    }

    /// The provisioned-throughput ids sold here, as `ListFoundationModels` lists them.
    fn sold(&self) -> Vec<String> {
        let documented = PROVISIONED_SOLD.iter().map(|(id, _)| (*id).to_owned());
        match self {
            Self::Everything => {
                documented.chain(FAMILIES.iter().flat_map(|f| f.base_ids.iter().map(|b| format!("{b}:200k")))).collect()
            }
            Self::Documented(_) => documented.filter(|id| self.sells(id)).collect(),
        }
    }
}

/// One provisioned throughput as the emulator holds it.
#[derive(Debug, Clone)]
struct Entry {
    id: String,
    arn: String,
    name: String,
    model_arn: String,
    model_units: i64,
    commitment: Option<String>,
    created: SystemTime,
    /// When it leaves `Creating` (wall clock, for `lastModifiedTime`).
    settled: SystemTime,
    in_service_at: Instant,
    fails: bool,
}

impl Entry {
    fn status(&self, now: Instant) -> &'static str {
        if now < self.in_service_at {
            "Creating"
        } else if self.fails {
            "Failed"
        } else {
            "InService"
        }
    }

    fn matches(&self, id: &str) -> bool {
        self.arn == id || self.name == id || self.id == id
    }

    /// The fields `ProvisionedModelSummary` and `GetProvisionedModelThroughput` share.
    fn to_json(&self, now: Instant) -> Value {
        let status = self.status(now);
        let created = timestamp(self.created);
        let modified = if status == "Creating" { created.clone() } else { timestamp(self.settled) };
        let mut v = json!({
            "provisionedModelName": self.name,
            "provisionedModelArn": self.arn,
            "modelArn": self.model_arn,
            "desiredModelArn": self.model_arn,
            "foundationModelArn": self.model_arn,
            "modelUnits": self.model_units,
            "desiredModelUnits": self.model_units,
            "status": status,
            "creationTime": created,
            "lastModifiedTime": modified,
        });
        if let Some(c) = &self.commitment {
            v["commitmentDuration"] = json!(c);
        }
        if let Some(ends) = self.commitment_ends() {
            v["commitmentExpirationTime"] = json!(timestamp(ends));
        }
        v
    }

    fn commitment_ends(&self) -> Option<SystemTime> {
        const DAY: Duration = Duration::from_secs(86_400);
        let days = match self.commitment.as_deref()? {
            "SixMonths" => 180,
            _ => 30,
        };
        Some(self.created + DAY * days)
    }
}

fn timestamp(t: SystemTime) -> String {
    DateTime::from(t).fmt(Format::DateTime).unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
}

/// A `Create` request without its token, to tell a retry from a different request under the same token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    name: String,
    model_id: String,
    model_units: i64,
    commitment: Option<String>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    tokens: HashMap<String, (Fingerprint, String)>,
    created: u64,
    deleted: u64,
    fail_next: Option<bool>,
    model_lookups: u64,
}

/// The control plane's state; tests reach it through `BedrockEmulator::control`.
#[derive(Debug)]
pub struct ControlPlane {
    inner: Mutex<Inner>,
    creating_delay: Mutex<Duration>,
    catalog: Mutex<Catalog>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            creating_delay: Mutex::new(DEFAULT_CREATING_DELAY),
            catalog: Mutex::new(Catalog::default()),
        }
    }
}

/// What a test can see of one provisioned throughput.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedView {
    pub arn: String,
    pub name: String,
    pub status: &'static str,
    pub model_units: i64,
    /// The model it serves (`foundation-model/<id>` ARN as bought).
    pub model_arn: String,
}

impl ControlPlane {
    /// How long a new provisioned throughput stays `Creating` (applies to later purchases).
    pub fn set_creating_delay(&self, delay: Duration) {
        if let Ok(mut d) = self.creating_delay.lock() {
            *d = delay;
        }
    }

    /// What the emulated Region sells from now on.
    pub fn set_catalog(&self, catalog: Catalog) {
        if let Ok(mut c) = self.catalog.lock() {
            *c = catalog;
        }
    }

    fn catalog(&self) -> Catalog {
        self.catalog.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Foundation-model lookups made (`GetFoundationModel`, `ListFoundationModels`).
    pub fn model_lookups(&self) -> u64 {
        self.with(|i| i.model_lookups).unwrap_or(0)
    }

    /// Makes the next purchase end `Failed` instead of `InService`.
    pub fn fail_next_creation(&self) {
        self.with(|i| i.fail_next = Some(true));
    }

    /// Every provisioned throughput that exists now.
    pub fn list(&self) -> Vec<ProvisionedView> {
        let now = Instant::now();
        self.with(|i| {
            i.entries
                .iter()
                .map(|e| ProvisionedView {
                    arn: e.arn.clone(),
                    name: e.name.clone(),
                    status: e.status(now),
                    model_units: e.model_units,
                    model_arn: e.model_arn.clone(),
                })
                .collect()
        })
        .unwrap_or_default()
    }

    /// Purchases made (idempotent retries not counted).
    pub fn created_count(&self) -> u64 {
        self.with(|i| i.created).unwrap_or(0)
    }

    pub fn deleted_count(&self) -> u64 {
        self.with(|i| i.deleted).unwrap_or(0)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> Option<T> {
        self.inner.lock().ok().map(|mut i| f(&mut i))
    }

    fn delay(&self) -> Duration {
        self.creating_delay.lock().map(|d| *d).unwrap_or(DEFAULT_CREATING_DELAY)
    }
}

/// The control-plane routes, with their own state, to merge into the emulator's router.
pub fn router(control: Arc<ControlPlane>) -> Router {
    Router::new()
        .route("/provisioned-model-throughput", post(create))
        .route("/provisioned-model-throughputs", get(list))
        .route("/provisioned-model-throughput/{provisioned_model_id}", get(get_one).delete(delete))
        .route("/foundation-models", get(list_models))
        .route("/foundation-models/{model_identifier}", get(get_model))
        .with_state(control)
}

fn error(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", axum::http::HeaderValue::from_static(error_type));
    (status, headers, axum::Json(json!({ "message": message.into() }))).into_response()
}

fn invalid(message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, "ValidationException", message)
}

fn not_found(id: &str) -> Response {
    error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("Provisioned model {id} not found."))
}

fn internal() -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerException", "emulator state unavailable")
}

fn ok(status: StatusCode, body: Value) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = uuid::Uuid::new_v4().to_string().parse() {
        headers.insert("x-amzn-requestid", v);
    }
    (status, headers, axum::Json(body)).into_response()
}

/// `^([0-9a-zA-Z][_-]?)+$`, 1 to 63 characters.
fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    let mut prev_sep = true;
    for &c in b {
        let sep = c == b'_' || c == b'-';
        if !(c.is_ascii_alphanumeric() || sep) || (sep && prev_sep) {
            return false;
        }
        prev_sep = sep;
    }
    (1..=63).contains(&b.len())
}

/// `^[a-zA-Z0-9](-*[a-zA-Z0-9])*$`, 1 to 256 characters.
fn valid_token(s: &str) -> bool {
    let b = s.as_bytes();
    (1..=256).contains(&b.len())
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
}

fn model_arn(model_id: &str) -> String {
    if model_id.starts_with("arn:") {
        model_id.to_owned()
    } else {
        format!("arn:aws:bedrock:{REGION}::foundation-model/{model_id}")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    client_request_token: Option<String>,
    provisioned_model_name: Option<String>,
    model_id: Option<String>,
    model_units: Option<i64>,
    commitment_duration: Option<String>,
}

async fn create(State(cp): State<Arc<ControlPlane>>, body: Bytes) -> Response {
    let Ok(req) = serde_json::from_slice::<CreateBody>(&body) else {
        return invalid("Malformed request body.");
    };
    let Some(name) = req.provisioned_model_name.filter(|n| valid_name(n)) else {
        return invalid("provisionedModelName must match ^([0-9a-zA-Z][_-]?)+$ and be 1 to 63 characters.");
    };
    let Some(model_id) = req.model_id.filter(|m| !m.is_empty() && m.len() <= 2048) else {
        return invalid("modelId is required.");
    };
    let Some(model_units) = req.model_units.filter(|u| *u >= 1) else {
        return invalid("modelUnits must be at least 1.");
    };
    if let Some(c) = &req.commitment_duration
        && !matches!(c.as_str(), "OneMonth" | "SixMonths")
    {
        return invalid(format!("commitmentDuration {c:?} is not one of OneMonth, SixMonths."));
    }
    if let Some(t) = &req.client_request_token
        && !valid_token(t)
    {
        return invalid("clientRequestToken must match ^[a-zA-Z0-9](-*[a-zA-Z0-9])*$.");
    }
    if !cp.catalog().sells(&model_id) {
        return invalid(format!("Provisioned Throughput is not supported for model {model_id} in this Region."));
    }
    let fp = Fingerprint { name, model_id, model_units, commitment: req.commitment_duration };
    let delay = cp.delay();
    let result = cp.with(|inner| {
        if let Some(token) = &req.client_request_token
            && let Some((seen, arn)) = inner.tokens.get(token)
        {
            return if *seen == fp {
                Ok(arn.clone())
            } else {
                Err("The clientRequestToken was already used with different parameters.".to_owned())
            };
        }
        if inner.entries.iter().any(|e| e.name == fp.name) {
            return Err(format!("Provisioned model name {} already exists.", fp.name));
        }
        let id: String = std::iter::repeat_with(fastrand::lowercase).take(12).collect();
        let arn = format!("arn:aws:bedrock:{REGION}:{ACCOUNT}:provisioned-model/{id}");
        inner.entries.push(Entry {
            id,
            arn: arn.clone(),
            name: fp.name.clone(),
            model_arn: model_arn(&fp.model_id),
            model_units: fp.model_units,
            commitment: fp.commitment.clone(),
            created: SystemTime::now(),
            settled: SystemTime::now() + delay,
            in_service_at: Instant::now() + delay,
            fails: inner.fail_next.take().unwrap_or(false),
        });
        inner.created += 1;
        if let Some(token) = req.client_request_token.clone() {
            inner.tokens.insert(token, (fp.clone(), arn.clone()));
        }
        Ok(arn)
    });
    match result {
        Some(Ok(arn)) => ok(StatusCode::CREATED, json!({ "provisionedModelArn": arn })),
        Some(Err(message)) => invalid(message),
        None => internal(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListParams {
    name_contains: Option<String>,
    status_equals: Option<String>,
    model_arn_equals: Option<String>,
    max_results: Option<usize>,
    next_token: Option<String>,
    sort_order: Option<String>,
}

async fn list(State(cp): State<Arc<ControlPlane>>, Query(q): Query<ListParams>) -> Response {
    let now = Instant::now();
    let max = q.max_results.unwrap_or(1000);
    if !(1..=1000).contains(&max) {
        return invalid("maxResults must be between 1 and 1000.");
    }
    let start = match q.next_token.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return invalid("Invalid nextToken."),
    };
    let Some(mut entries) = cp.with(|i| i.entries.clone()) else { return internal() };
    entries.retain(|e| {
        q.name_contains.as_deref().is_none_or(|n| e.name.contains(n))
            && q.status_equals.as_deref().is_none_or(|s| e.status(now) == s)
            && q.model_arn_equals.as_deref().is_none_or(|m| e.model_arn == m)
    });
    // Newest first unless `sortOrder=Ascending`, as the service sorts by creation time.
    if q.sort_order.as_deref() != Some("Ascending") {
        entries.reverse();
    }
    let page: Vec<Value> = entries.iter().skip(start).take(max).map(|e| e.to_json(now)).collect();
    let mut body = json!({ "provisionedModelSummaries": page });
    if start + max < entries.len() {
        body["nextToken"] = json!((start + max).to_string());
    }
    ok(StatusCode::OK, body)
}

/// `FoundationModelDetails` / `FoundationModelSummary` (the same fields) of `model_id`, which serves
/// `inference_types`.
fn model_json(model_id: &str, inference_types: &[&str]) -> Value {
    let f = family(model_id);
    let id = ModelId::parse(model_id).ok();
    let provider = id.as_ref().and_then(ModelId::provider).unwrap_or_default();
    json!({
        "modelArn": model_arn(model_id),
        "modelId": model_id,
        "modelName": f.map_or(model_id, |f| f.name),
        "providerName": provider,
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": true,
        "customizationsSupported": [],
        "inferenceTypesSupported": inference_types,
        "modelLifecycle": { "status": "ACTIVE" },
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ModelListParams {
    by_inference_type: Option<String>,
    by_provider: Option<String>,
}

async fn list_models(State(cp): State<Arc<ControlPlane>>, Query(q): Query<ModelListParams>) -> Response {
    cp.with(|i| i.model_lookups += 1);
    let on_demand =
        FAMILIES.iter().flat_map(|f| f.base_ids.iter()).map(|id| model_json(id, &["ON_DEMAND", "INFERENCE_PROFILE"]));
    let provisioned = cp.catalog().sold().into_iter().map(|id| model_json(&id, &["PROVISIONED"]));
    let summaries: Vec<Value> = match q.by_inference_type.as_deref() {
        Some("PROVISIONED") => provisioned.collect(),
        Some("ON_DEMAND") => on_demand.collect(),
        Some(other) => return invalid(format!("byInferenceType {other:?} is not one of ON_DEMAND, PROVISIONED.")),
        None => on_demand.chain(provisioned).collect(),
    };
    let summaries = summaries
        .into_iter()
        .filter(|m| q.by_provider.as_deref().is_none_or(|p| m["providerName"].as_str() == Some(p)))
        .collect::<Vec<_>>();
    ok(StatusCode::OK, json!({ "modelSummaries": summaries }))
}

async fn get_model(State(cp): State<Arc<ControlPlane>>, Path(id): Path<String>) -> Response {
    cp.with(|i| i.model_lookups += 1);
    let id = id.rsplit_once("foundation-model/").map_or(id.as_str(), |(_, b)| b).to_owned();
    let not_found = || error(StatusCode::NOT_FOUND, "ResourceNotFoundException", format!("Model {id} not found."));
    if family(&id).is_none() {
        return not_found();
    }
    let types: &[&str] = match id.match_indices(':').count() {
        // `provider.model-v1:0`: the on-demand model (served here, and through inference profiles).
        1 => &["ON_DEMAND", "INFERENCE_PROFILE"],
        _ if cp.catalog().sells(&id) => &["PROVISIONED"],
        _ => return not_found(),
    };
    ok(StatusCode::OK, json!({ "modelDetails": model_json(&id, types) }))
}

async fn get_one(State(cp): State<Arc<ControlPlane>>, Path(id): Path<String>) -> Response {
    let now = Instant::now();
    let Some(found) = cp.with(|i| i.entries.iter().find(|e| e.matches(&id)).cloned()) else { return internal() };
    let Some(e) = found else { return not_found(&id) };
    let mut body = e.to_json(now);
    if e.status(now) == "Failed" {
        body["failureMessage"] = json!("Insufficient capacity for the requested model units (injected).");
    }
    ok(StatusCode::OK, body)
}

async fn delete(State(cp): State<Arc<ControlPlane>>, Path(id): Path<String>) -> Response {
    let removed = cp.with(|i| {
        let committed = i.entries.iter().any(|e| e.matches(&id) && e.commitment_ends() > Some(SystemTime::now()));
        if committed {
            return Err(());
        }
        let before = i.entries.len();
        i.entries.retain(|e| !e.matches(&id));
        let removed = i.entries.len() < before;
        if removed {
            i.deleted += 1;
        }
        Ok(removed)
    });
    match removed {
        Some(Ok(true)) => ok(StatusCode::OK, json!({})),
        Some(Ok(false)) => not_found(&id),
        Some(Err(())) => {
            invalid("You can't delete a Provisioned Throughput with commitment before the commitment term is complete.")
        }
        None => internal(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_catalog_sells_nothing_in_tokyo_and_the_what_if_sells_the_reference_model() {
        let haiku = "anthropic.claude-haiku-4-5-20251001-v1:0:200k";
        assert!(Catalog::Everything.sells(haiku));
        assert!(
            !Catalog::Everything.sells("anthropic.claude-haiku-4-5-20251001-v1:0"),
            "an on-demand id is not bought"
        );
        assert!(!Catalog::Documented("ap-northeast-1".into()).sells(haiku));
        assert!(Catalog::Documented("ap-northeast-1".into()).sold().is_empty());
        let us = Catalog::Documented("us-east-1".into());
        assert!(us.sells("amazon.nova-pro-v1:0:300k") && !us.sells(haiku));
    }

    #[test]
    fn names_follow_the_bedrock_pattern() {
        assert!(valid_name("mangaassist-peak"));
        assert!(valid_name("a_b-c9"));
        assert!(!valid_name(""));
        assert!(!valid_name("-lead"));
        assert!(!valid_name("double--dash"));
        assert!(!valid_name("space here"));
        assert!(!valid_name(&"a".repeat(64)));
    }

    #[test]
    fn client_tokens_follow_the_bedrock_pattern() {
        assert!(valid_token("mangaassist-peak-20261128-v3"));
        assert!(!valid_token("trailing-"));
        assert!(!valid_token("under_score"));
    }

    #[test]
    fn a_purchase_is_creating_until_its_delay_has_passed() {
        let now = Instant::now();
        let e = Entry {
            id: "x".into(),
            arn: "arn".into(),
            name: "n".into(),
            model_arn: model_arn("m"),
            model_units: 1,
            commitment: None,
            created: SystemTime::now(),
            settled: SystemTime::now(),
            in_service_at: now + Duration::from_secs(1),
            fails: false,
        };
        assert_eq!(e.status(now), "Creating");
        assert_eq!(e.status(now + Duration::from_secs(1)), "InService");
        assert_eq!(Entry { fails: true, ..e.clone() }.status(now + Duration::from_secs(2)), "Failed");
        assert_eq!(e.to_json(now)["modelArn"], "arn:aws:bedrock:us-east-1::foundation-model/m");
    }
}
