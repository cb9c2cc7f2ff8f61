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
use aws_sdk_bedrockruntime::error::SdkError;
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

fn map_start_error(
    err: SdkError<ConverseStreamError, aws_sdk_bedrockruntime::config::http::HttpResponse>,
) -> ModelError {
    match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => ModelError::Unavailable(boxed(err)),
        SdkError::ServiceError(se) => {
            let e = se.err();
            if e.is_throttling_exception() {
                ModelError::Throttled(boxed(err))
            } else if e.is_service_unavailable_exception()
                || e.is_model_not_ready_exception()
                || e.is_internal_server_exception()
                || e.is_model_timeout_exception()
            {
                ModelError::Unavailable(boxed(err))
            } else if e.is_validation_exception()
                || e.is_access_denied_exception()
                || e.is_resource_not_found_exception()
                || e.is_model_error_exception()
            {
                let msg = e.meta().message().unwrap_or("rejected").to_owned();
                ModelError::Rejected(msg, boxed(err))
            } else {
                ModelError::Other(boxed(err))
            }
        }
        _ => ModelError::Other(boxed(err)),
    }
}

fn map_stream_error(
    err: SdkError<ConverseStreamOutputError, aws_smithy_types::event_stream::RawMessage>,
) -> ModelError {
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            if e.is_throttling_exception() {
                ModelError::Throttled(boxed(err))
            } else if e.is_service_unavailable_exception() || e.is_internal_server_exception() {
                ModelError::Unavailable(boxed(err))
            } else if e.is_validation_exception() {
                let msg = e.meta().message().unwrap_or("rejected").to_owned();
                ModelError::Rejected(msg, boxed(err))
            } else {
                ModelError::Other(boxed(err))
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ModelError::Unavailable(boxed(err))
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

fn map_converse_error(err: SdkError<ConverseError, aws_sdk_bedrockruntime::config::http::HttpResponse>) -> ModelError {
    match &err {
        SdkError::ServiceError(se) if se.err().is_throttling_exception() => ModelError::Throttled(boxed(err)),
        SdkError::ServiceError(se) if se.err().is_validation_exception() => {
            let msg = se.err().meta().message().unwrap_or("rejected").to_owned();
            ModelError::Rejected(msg, boxed(err))
        }
        SdkError::ServiceError(_) => ModelError::Other(boxed(err)),
        _ => ModelError::Unavailable(boxed(err)),
    }
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
            .map_err(map_converse_error)?;
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
            .map_err(map_start_error)?;
        Ok(BedrockStream { rx: out.stream })
    }
}

impl ModelStream for BedrockStream {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        loop {
            let ev = match self.rx.recv().await {
                Ok(Some(ev)) => ev,
                Ok(None) => return None,
                Err(e) => return Some(Err(map_stream_error(e))),
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
