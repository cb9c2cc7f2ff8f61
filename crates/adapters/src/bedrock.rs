//! Bedrock `ConverseStream` behind the core's `ModelClient`.
//!
//! The request carries what the core decided for this model: a cached system prefix with its cache
//! checkpoint, latency-optimized inference, the priority service tier. The stream's `metadata` event gives
//! back the usage (cache reads and writes included) and the tiers that actually served the request.
//!
//! The SDK's own retries are off: a retry with backoff before the first token is exactly the latency we
//! must not hide, so the turn decides (fail over while nothing has been sent) with the typed error kinds
//! mapped here. Dropping a [`BedrockStream`] drops the HTTP response body, which closes the connection and
//! stops generation.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput,
    ConverseStreamOutput, InferenceConfiguration, Message, PerformanceConfigLatency, PerformanceConfiguration,
    ServiceTier, ServiceTierType, SystemContentBlock,
};
use mangaassist_core::error::ModelError;
use mangaassist_core::ports::{Completion, ModelClient, ModelEvent, ModelRequest, ModelStream, Role};

/// `ModelClient` over `aws-sdk-bedrockruntime`.
#[derive(Clone, Debug)]
pub struct BedrockModel {
    client: Client,
}

impl BedrockModel {
    pub fn new(sdk: &SdkConfig) -> Self {
        let conf = aws_sdk_bedrockruntime::config::Builder::from(sdk).retry_config(RetryConfig::disabled()).build();
        Self { client: Client::from_conf(conf) }
    }

    pub fn from_client(client: Client) -> Self {
        Self { client }
    }
}

/// An open `ConverseStream` response.
pub struct BedrockStream {
    rx: EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
    /// The second event a `metadata` event maps to (usage, then how it was served).
    pending: Option<ModelEvent>,
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> mangaassist_core::error::BoxError {
    Box::new(e)
}

/// The Bedrock runtime's error kinds, as every operation's error type names them.
trait BedrockErrorKind {
    fn is_throttling(&self) -> bool;
    /// Transient on Bedrock's side: unavailable, not ready, internal, timed out.
    fn is_unavailable(&self) -> bool;
    /// The request itself is refused: invalid, not allowed, the model erred on it.
    fn is_rejected(&self) -> bool;
    /// The model id or provisioned-throughput ARN does not exist (a deleted provisioned throughput).
    fn is_not_found(&self) -> bool;
}

macro_rules! bedrock_error_kind {
    ($t:ty) => {
        impl BedrockErrorKind for $t {
            fn is_throttling(&self) -> bool {
                self.is_throttling_exception()
            }
            fn is_unavailable(&self) -> bool {
                self.is_service_unavailable_exception()
                    || self.is_internal_server_exception()
                    || self.is_model_timeout_exception()
                    || self.is_model_not_ready_exception()
            }
            fn is_rejected(&self) -> bool {
                self.is_validation_exception() || self.is_access_denied_exception() || self.is_model_error_exception()
            }
            fn is_not_found(&self) -> bool {
                self.is_resource_not_found_exception()
            }
        }
    };
}

bedrock_error_kind!(ConverseError);
bedrock_error_kind!(ConverseStreamError);

/// A mid-stream exception: the stream's own error type has fewer kinds.
impl BedrockErrorKind for ConverseStreamOutputError {
    fn is_throttling(&self) -> bool {
        self.is_throttling_exception()
    }
    fn is_unavailable(&self) -> bool {
        self.is_service_unavailable_exception() || self.is_internal_server_exception()
    }
    fn is_rejected(&self) -> bool {
        self.is_validation_exception()
    }
    fn is_not_found(&self) -> bool {
        false
    }
}

/// The one retry rule of the Bedrock runtime, for `Converse`, `ConverseStream` and the stream's events
/// alike: throttling and transient failures (including timeouts and broken connections) are worth another
/// attempt (on the other route), a refused request is not; an id that does not exist is `NotFound`, which
/// the turn treats as "this provisioned throughput is gone" on the provisioned route.
fn model_error<E, R>(err: SdkError<E, R>) -> ModelError
where
    E: BedrockErrorKind + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ModelError::Unavailable(boxed(err))
        }
        SdkError::ServiceError(se) => {
            let e = se.err();
            if e.is_throttling() {
                ModelError::Throttled(boxed(err))
            } else if e.is_unavailable() {
                ModelError::Unavailable(boxed(err))
            } else if e.is_not_found() {
                let msg = e.meta().message().unwrap_or("not found").to_owned();
                ModelError::NotFound(msg, boxed(err))
            } else if e.is_rejected() {
                let msg = e.meta().message().unwrap_or("rejected").to_owned();
                ModelError::Rejected(msg, boxed(err))
            } else {
                ModelError::Other(boxed(err))
            }
        }
        _ => ModelError::Other(boxed(err)),
    }
}

fn to_message(role: Role, text: &str) -> Result<Message, ModelError> {
    let role = match role {
        Role::User => ConversationRole::User,
        Role::Assistant => ConversationRole::Assistant,
    };
    Message::builder()
        .role(role)
        .content(ContentBlock::Text(text.to_owned()))
        .build()
        .map_err(|e| ModelError::Rejected("invalid message".to_owned(), boxed(e)))
}

/// The SDK pieces of a request: the system blocks, the messages, inference settings, request metadata and
/// the levers the core chose for this model.
struct Parts {
    system: Vec<SystemContentBlock>,
    messages: Vec<Message>,
    inference: InferenceConfiguration,
    metadata: Option<HashMap<String, String>>,
    performance: Option<PerformanceConfiguration>,
    tier: Option<ServiceTier>,
}

fn invalid<E: std::error::Error + Send + Sync + 'static>(e: E) -> ModelError {
    ModelError::Rejected("invalid request".to_owned(), boxed(e))
}

fn parts(req: &ModelRequest) -> Result<Parts, ModelError> {
    let messages = req.messages.iter().map(|m| to_message(m.role, &m.text)).collect::<Result<Vec<_>, _>>()?;
    let max_tokens = i32::try_from(req.max_tokens).unwrap_or(i32::MAX);
    let inference = InferenceConfiguration::builder().max_tokens(max_tokens).temperature(req.temperature).build();
    let metadata: HashMap<String, String> = req.metadata.iter().cloned().collect();
    // Stable first: the long cached prefix, its checkpoint, then the (per-intent) system prompt.
    let mut system = Vec::with_capacity(3);
    if let Some(prefix) = &req.system_prefix {
        system.push(SystemContentBlock::Text(prefix.to_string()));
        if req.levers.cache_point {
            let point = CachePointBlock::builder().r#type(CachePointType::Default).build().map_err(invalid)?;
            system.push(SystemContentBlock::CachePoint(point));
        }
    }
    system.push(SystemContentBlock::Text(req.system.clone()));
    let performance = req
        .levers
        .latency_optimized
        .then(|| PerformanceConfiguration::builder().latency(PerformanceConfigLatency::Optimized).build());
    let tier = match req.levers.priority_tier {
        true => Some(ServiceTier::builder().r#type(ServiceTierType::Priority).build().map_err(invalid)?),
        false => None,
    };
    Ok(Parts { system, messages, inference, metadata: (!metadata.is_empty()).then_some(metadata), performance, tier })
}

/// `Converse` and `ConverseStream` take the same fields through different builders: one list of them.
macro_rules! with_parts {
    ($builder:expr, $req:expr, $p:expr) => {
        $builder
            .model_id(&$req.model_id)
            .set_system(Some($p.system))
            .set_messages(Some($p.messages))
            .inference_config($p.inference)
            .set_request_metadata($p.metadata)
            .set_performance_config($p.performance)
            .set_service_tier($p.tier)
    };
}

impl ModelClient for BedrockModel {
    type Stream = BedrockStream;

    async fn complete(&self, req: &ModelRequest) -> Result<Completion, ModelError> {
        let p = parts(req)?;
        let out = with_parts!(self.client.converse(), req, p).send().await.map_err(model_error)?;
        let (input_tokens, output_tokens) =
            out.usage.as_ref().map_or((0, 0), |u| (tokens(Some(u.input_tokens)), tokens(Some(u.output_tokens))));
        let text = match out.output {
            Some(ConverseOutput::Message(m)) => m
                .content
                .into_iter()
                .filter_map(|b| if let ContentBlock::Text(t) = b { Some(t) } else { None })
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        Ok(Completion { text, input_tokens, output_tokens })
    }

    async fn converse_stream(&self, req: &ModelRequest) -> Result<BedrockStream, ModelError> {
        let p = parts(req)?;
        let out = with_parts!(self.client.converse_stream(), req, p).send().await.map_err(model_error)?;
        Ok(BedrockStream { rx: out.stream, pending: None })
    }
}

fn tokens(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

impl ModelStream for BedrockStream {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(ev) = self.pending.take() {
            return Some(Ok(ev));
        }
        loop {
            let ev = match self.rx.recv().await {
                Ok(Some(ev)) => ev,
                Ok(None) => return None,
                Err(e) => return Some(Err(model_error(e))),
            };
            let mapped = match ev {
                ConverseStreamOutput::ContentBlockDelta(d) => match d.delta {
                    Some(ContentBlockDelta::Text(t)) => Some(ModelEvent::Text(t)),
                    _ => None,
                },
                ConverseStreamOutput::MessageStop(s) => Some(ModelEvent::Stop(s.stop_reason.as_str().to_owned())),
                ConverseStreamOutput::Metadata(m) => {
                    let served = ModelEvent::Served {
                        latency: m.performance_config.as_ref().map(|p| p.latency().as_str().to_owned()),
                        service_tier: m.service_tier.as_ref().map(|t| t.r#type().as_str().to_owned()),
                    };
                    match m.usage {
                        Some(u) => {
                            self.pending = Some(served);
                            Some(ModelEvent::Usage {
                                input_tokens: tokens(Some(u.input_tokens)),
                                output_tokens: tokens(Some(u.output_tokens)),
                                cache_read_tokens: tokens(u.cache_read_input_tokens),
                                cache_write_tokens: tokens(u.cache_write_input_tokens),
                            })
                        }
                        None => Some(served),
                    }
                }
                _ => None,
            };
            if let Some(ev) = mapped {
                return Some(Ok(ev));
            }
        }
    }
}
