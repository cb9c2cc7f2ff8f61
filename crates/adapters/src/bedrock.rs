//! Bedrock `ConverseStream` behind the core's `ModelClient`.
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
    ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput, ConverseStreamOutput, InferenceConfiguration,
    Message, SystemContentBlock,
};
use mangaassist_core::error::ModelError;
use mangaassist_core::ports::{ModelClient, ModelEvent, ModelRequest, ModelStream, Role};

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
}

fn boxed<E: std::error::Error + Send + Sync + 'static>(e: E) -> mangaassist_core::error::BoxError {
    Box::new(e)
}

/// The Bedrock runtime's error kinds, as every operation's error type names them.
trait BedrockErrorKind {
    fn is_throttling(&self) -> bool;
    /// Transient on Bedrock's side: unavailable, not ready, internal, timed out.
    fn is_unavailable(&self) -> bool;
    /// The request itself is refused: invalid, not allowed, unknown model, the model erred on it.
    fn is_rejected(&self) -> bool;
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
                self.is_validation_exception()
                    || self.is_access_denied_exception()
                    || self.is_resource_not_found_exception()
                    || self.is_model_error_exception()
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
}

/// The one retry rule of the Bedrock runtime, for `Converse`, `ConverseStream` and the stream's events
/// alike: throttling and transient failures (including timeouts and broken connections) are worth another
/// attempt (on the other route), a refused request is not.
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

/// The SDK pieces of a request: messages, inference settings, request metadata.
type Parts = (Vec<Message>, InferenceConfiguration, Option<HashMap<String, String>>);

fn parts(req: &ModelRequest) -> Result<Parts, ModelError> {
    let messages = req.messages.iter().map(|m| to_message(m.role, &m.text)).collect::<Result<Vec<_>, _>>()?;
    let max_tokens = i32::try_from(req.max_tokens).unwrap_or(i32::MAX);
    let inference = InferenceConfiguration::builder().max_tokens(max_tokens).temperature(req.temperature).build();
    let metadata: HashMap<String, String> = req.metadata.iter().cloned().collect();
    Ok((messages, inference, (!metadata.is_empty()).then_some(metadata)))
}

impl ModelClient for BedrockModel {
    type Stream = BedrockStream;

    async fn complete(&self, req: &ModelRequest) -> Result<String, ModelError> {
        let (messages, inference, metadata) = parts(req)?;
        let out = self
            .client
            .converse()
            .model_id(&req.model_id)
            .system(SystemContentBlock::Text(req.system.clone()))
            .set_messages(Some(messages))
            .inference_config(inference)
            .set_request_metadata(metadata)
            .send()
            .await
            .map_err(model_error)?;
        let text = match out.output {
            Some(ConverseOutput::Message(m)) => m
                .content
                .into_iter()
                .filter_map(|b| if let ContentBlock::Text(t) = b { Some(t) } else { None })
                .collect::<Vec<_>>()
                .join(""),
            _ => String::new(),
        };
        Ok(text)
    }

    async fn converse_stream(&self, req: &ModelRequest) -> Result<BedrockStream, ModelError> {
        let (messages, inference, metadata) = parts(req)?;
        let out = self
            .client
            .converse_stream()
            .model_id(&req.model_id)
            .system(SystemContentBlock::Text(req.system.clone()))
            .set_messages(Some(messages))
            .inference_config(inference)
            .set_request_metadata(metadata)
            .send()
            .await
            .map_err(model_error)?;
        Ok(BedrockStream { rx: out.stream })
    }
}

impl ModelStream for BedrockStream {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
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
                ConverseStreamOutput::Metadata(m) => m.usage.map(|u| ModelEvent::Usage {
                    input_tokens: u32::try_from(u.input_tokens).unwrap_or(0),
                    output_tokens: u32::try_from(u.output_tokens).unwrap_or(0),
                }),
                _ => None,
            };
            if let Some(ev) = mapped {
                return Some(Ok(ev));
            }
        }
    }
}
