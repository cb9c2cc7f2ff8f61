//! The core's `ThroughputControl` over the Bedrock control plane (`aws-sdk-bedrock`): List, Get, Create
//! and Delete provisioned model throughput, and whether the Region sells it for a model at all
//! (`GetFoundationModel`'s `inferenceTypesSupported`; `ListFoundationModels` with
//! `byInferenceType=PROVISIONED` for what it sells instead).
//!
//! Every call has a per-attempt and an overall deadline and up to three attempts with the SDK's jittered
//! exponential backoff. Retrying `Create` is safe because it always carries the reconciler's client token;
//! a retried `Delete` that finds nothing left counts as done.

use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_bedrock::Client;
use aws_sdk_bedrock::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrock::types::{CommitmentDuration, InferenceType, ProvisionedModelStatus};
use mangaassist_core::capacity::{
    Commitment, ControlError, Offer, ProvisionedThroughput, ThroughputControl, ThroughputSpec, ThroughputStatus,
};

/// Pages of `ListProvisionedModelThroughputs` read before giving up on finding a name.
const MAX_LIST_PAGES: usize = 10;

/// `ThroughputControl` over `aws-sdk-bedrock`.
#[derive(Clone, Debug)]
pub struct BedrockControl {
    client: Client,
}

/// Control-plane calls are small but not latency-critical: 5 s per attempt, 15 s overall.
fn control_timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(5))
        .operation_timeout(Duration::from_secs(15))
        .build()
}

impl BedrockControl {
    pub fn new(sdk: &SdkConfig) -> Self {
        let conf = aws_sdk_bedrock::config::Builder::from(sdk)
            .timeout_config(control_timeouts())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build();
        Self { client: Client::from_conf(conf) }
    }

    pub fn from_client(client: Client) -> Self {
        Self { client }
    }
}

fn status(s: Option<&ProvisionedModelStatus>) -> ThroughputStatus {
    match s {
        Some(ProvisionedModelStatus::Creating) => ThroughputStatus::Creating,
        Some(ProvisionedModelStatus::InService) => ThroughputStatus::InService,
        Some(ProvisionedModelStatus::Failed) => ThroughputStatus::Failed,
        // `Updating` and any status newer than this SDK: in transition, wait for it.
        _ => ThroughputStatus::Updating,
    }
}

fn units(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn commitment(c: Option<&CommitmentDuration>) -> Option<Commitment> {
    c.and_then(|c| Commitment::parse(c.as_str()))
}

fn unix_ms(t: Option<&aws_sdk_bedrock::primitives::DateTime>) -> Option<u64> {
    t.and_then(|t| t.to_millis().ok()).and_then(|ms| u64::try_from(ms).ok())
}

/// Maps an SDK error by its kind, keeping it whole as the source. `is_rejected` says which modelled
/// errors mean "this request will never succeed as sent".
fn control_err<E>(
    err: SdkError<E, aws_sdk_bedrock::config::http::HttpResponse>,
    is_rejected: impl Fn(&E) -> bool,
) -> ControlError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &err {
        _ if crate::sdk::is_transport(&err) => ControlError::Unavailable(Box::new(err)),
        SdkError::ServiceError(se) => {
            let e = se.err();
            let message = e.message().unwrap_or("no message").to_owned();
            match e.code() {
                Some("ThrottlingException") => ControlError::Throttled(Box::new(err)),
                Some("InternalServerException" | "ServiceUnavailableException") => {
                    ControlError::Unavailable(Box::new(err))
                }
                Some("ConflictException") => ControlError::Conflict(message, Box::new(err)),
                _ if is_rejected(e) => ControlError::Rejected(message, Box::new(err)),
                _ if se.raw().status().is_server_error() => ControlError::Unavailable(Box::new(err)),
                _ => ControlError::Other(Box::new(err)),
            }
        }
        _ => ControlError::Other(Box::new(err)),
    }
}

impl ThroughputControl for BedrockControl {
    async fn find_by_name(&self, name: &str) -> Result<Option<ProvisionedThroughput>, ControlError> {
        let mut next_token: Option<String> = None;
        for _ in 0..MAX_LIST_PAGES {
            let out = self
                .client
                .list_provisioned_model_throughputs()
                .name_contains(name)
                .set_next_token(next_token.take())
                .send()
                .await
                .map_err(|e| control_err(e, |e| e.is_validation_exception() || e.is_access_denied_exception()))?;
            let found = out.provisioned_model_summaries().iter().find(|s| s.provisioned_model_name() == name);
            if let Some(s) = found {
                return Ok(Some(ProvisionedThroughput {
                    arn: s.provisioned_model_arn().to_owned(),
                    name: s.provisioned_model_name().to_owned(),
                    status: status(Some(s.status())),
                    model_units: units(s.model_units()),
                    failure_message: None,
                    commitment: commitment(s.commitment_duration()),
                    commitment_ends_ms: unix_ms(s.commitment_expiration_time()),
                }));
            }
            let Some(token) = out.next_token().filter(|t| !t.is_empty()) else { return Ok(None) };
            next_token = Some(token.to_owned());
        }
        tracing::warn!(name, pages = MAX_LIST_PAGES, "provisioned throughput not found in the pages read");
        Ok(None)
    }

    async fn get(&self, id: &str) -> Result<Option<ProvisionedThroughput>, ControlError> {
        let res = self.client.get_provisioned_model_throughput().provisioned_model_id(id).send().await;
        match res {
            Ok(out) => Ok(Some(ProvisionedThroughput {
                arn: out.provisioned_model_arn().to_owned(),
                name: out.provisioned_model_name().to_owned(),
                status: status(Some(out.status())),
                model_units: units(out.model_units()),
                failure_message: out.failure_message().map(str::to_owned),
                commitment: commitment(out.commitment_duration()),
                commitment_ends_ms: unix_ms(out.commitment_expiration_time()),
            })),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_not_found_exception()) => Ok(None),
            Err(e) => Err(control_err(e, |e| e.is_validation_exception() || e.is_access_denied_exception())),
        }
    }

    async fn create(&self, spec: &ThroughputSpec, client_token: &str) -> Result<String, ControlError> {
        let commitment = spec.commitment.map(|c| match c {
            Commitment::OneMonth => CommitmentDuration::OneMonth,
            Commitment::SixMonths => CommitmentDuration::SixMonths,
        });
        let out = self
            .client
            .create_provisioned_model_throughput()
            .client_request_token(client_token)
            .provisioned_model_name(&spec.name)
            .model_id(&spec.model_id)
            .model_units(i32::try_from(spec.model_units).unwrap_or(i32::MAX))
            .set_commitment_duration(commitment)
            .send()
            .await
            .map_err(|e| {
                control_err(e, |e| {
                    e.is_validation_exception()
                        || e.is_access_denied_exception()
                        || e.is_resource_not_found_exception()
                        || e.is_service_quota_exceeded_exception()
                        || e.is_too_many_tags_exception()
                })
            })?;
        Ok(out.provisioned_model_arn().to_owned())
    }

    async fn delete(&self, id: &str) -> Result<(), ControlError> {
        let res = self.client.delete_provisioned_model_throughput().provisioned_model_id(id).send().await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_not_found_exception()) => Ok(()),
            Err(e) => Err(control_err(e, |e| e.is_validation_exception() || e.is_access_denied_exception())),
        }
    }

    /// `GetFoundationModel` on the provisioned-throughput id (`...:200k`): sold when its
    /// `inferenceTypesSupported` has `PROVISIONED`; a model the Region does not know
    /// (`ResourceNotFoundException`, `ValidationException`) is not sold here. A custom model's ARN is not a
    /// foundation model: the control plane cannot say ([`Offer::Unknown`]).
    async fn provisioned_offer(&self, model_id: &str) -> Result<Offer, ControlError> {
        if model_id.starts_with("arn:") {
            return Ok(Offer::Unknown);
        }
        let res = self.client.get_foundation_model().model_identifier(model_id).send().await;
        let reason = match res {
            Ok(out) => {
                let types = out.model_details().map(|d| d.inference_types_supported()).unwrap_or_default();
                if types.contains(&InferenceType::Provisioned) {
                    return Ok(Offer::Sold);
                }
                let listed: Vec<&str> = types.iter().map(InferenceType::as_str).collect();
                format!("{model_id} supports {listed:?}, not PROVISIONED")
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_resource_not_found_exception() || se.is_validation_exception()) =>
            {
                format!(
                    "{model_id} is not a model of this Region: {}",
                    e.as_service_error().and_then(|se| se.message()).unwrap_or("not found")
                )
            }
            Err(e) => return Err(control_err(e, |e| e.is_access_denied_exception())),
        };
        Ok(Offer::NotSold { reason, sold_here: self.sold_here().await })
    }
}

impl BedrockControl {
    /// The provisioned-throughput model ids this Region sells, for the log line of an unsupported plan; empty
    /// when the listing fails (the answer is already known, the list only helps the reader).
    async fn sold_here(&self) -> Vec<String> {
        let res = self.client.list_foundation_models().by_inference_type(InferenceType::Provisioned).send().await;
        match res {
            Ok(out) => out.model_summaries().iter().map(|m| m.model_id().to_owned()).collect(),
            Err(e) => {
                tracing::warn!(error = %mangaassist_core::error::chain(&e), "could not list the models sold as provisioned throughput");
                Vec::new()
            }
        }
    }
}
