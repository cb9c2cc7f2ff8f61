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
//!
//! # Opening a stream: first byte, one retry on a fresh connection
//! A pooled connection the endpoint (or a middlebox) has dropped shows up as an immediate transport error
//! or as a request that is never answered. [`StreamOpen::first_byte`] bounds the wait for the response's
//! first byte (its headers: Bedrock answers them before the first token, and with its HTTP error when it
//! refuses); on a transport failure or that deadline the request is sent once more on a connection opened
//! for it (an HTTP client that pools nothing), and for [`StreamOpen::suspect_for`] afterwards every stream
//! opens on a fresh connection, so the turn's own failover cannot land on another stale socket.
//!
//! How this fits the turn (`crates/core/src/routes.rs`): the turn bounds each attempt's *first token*
//! (`FIRST_TOKEN_TIMEOUT_MS`, 5 s) and fails over to the next route on throttling, unavailability or that
//! timeout. The retry here is for *connection* failures only (never a service error: a 429 or 503 goes to
//! the turn untouched), happens before any byte arrived, and fits inside one turn attempt: two first-byte
//! deadlines (2 x 2 s) are shorter than one first-token timeout. A service that is slow to answer but
//! reachable is never retried here. The retry can bill a second request only when the first reached the
//! endpoint and its headers were later than the deadline.
//!
//! # Warm connections
//! [`BedrockModel::warm`] opens (or reuses) a pooled connection with a call that has no side effects, and
//! [`BedrockModel::refresh_if_idle`] does so when no request used the client for a while; the chat function
//! calls them at init and on `$connect`/`typing` ([`crate::warm::Warmer`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

mod guardrail;
use guardrail::{assess, converse_guardrail, stream_guardrail, trace_assessment};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_sdk_bedrockruntime::Client;
use aws_sdk_bedrockruntime::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_bedrockruntime::operation::apply_guardrail::ApplyGuardrailError;
use aws_sdk_bedrockruntime::operation::converse::ConverseError;
use aws_sdk_bedrockruntime::operation::converse_stream::ConverseStreamError;
use aws_sdk_bedrockruntime::operation::converse_stream::builders::ConverseStreamFluentBuilder;
use aws_sdk_bedrockruntime::primitives::event_stream::EventReceiver;
use aws_sdk_bedrockruntime::types::error::ConverseStreamOutputError;
use aws_sdk_bedrockruntime::types::{
    CachePointBlock, CachePointType, ContentBlock, ContentBlockDelta, ConversationRole, ConverseOutput,
    ConverseStreamOutput, GuardrailAction, GuardrailAssessment, GuardrailConfiguration, GuardrailContentBlock,
    GuardrailContentSource, GuardrailStreamConfiguration, GuardrailStreamProcessingMode, GuardrailTextBlock,
    GuardrailTrace, GuardrailTraceAssessment, InferenceConfiguration, Message, PerformanceConfigLatency,
    PerformanceConfiguration, ServiceTier, ServiceTierType, StopReason, SystemContentBlock,
};
use mangaassist_core::deadline::within;
use mangaassist_core::error::ModelError;
use mangaassist_core::ports::{Completion, ModelClient, ModelEvent, ModelRequest, ModelStream, Role};
use mangaassist_core::safety::{Assessment, Direction, GuardrailPolicy, GuardrailRef};

/// How a `ConverseStream` is opened (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOpen {
    /// Deadline for the response's first byte on a pooled connection, then once more on a fresh one;
    /// `None`: no deadline and no retry (the SDK's behaviour).
    pub first_byte: Option<Duration>,
    /// After a pooled connection failed, how long streams open on fresh connections only.
    pub suspect_for: Duration,
}

impl Default for StreamOpen {
    /// First byte within 2 s: headers come back one round trip after Bedrock admits the request, so 2 s
    /// leaves room for a new connection's handshake (+100 to +450 ms published) and admission, and two of
    /// them fit in the turn's 5 s first-token timeout.
    fn default() -> Self {
        Self { first_byte: Some(Duration::from_secs(2)), suspect_for: Duration::from_secs(10) }
    }
}

impl StreamOpen {
    /// No deadline, no retry.
    pub fn off() -> Self {
        Self { first_byte: None, ..Self::default() }
    }
}

/// When the client last carried traffic, and until when its pool is not trusted.
#[derive(Debug)]
struct Activity {
    origin: std::time::Instant,
    last_ms: AtomicU64,
    suspect_until_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self { origin: std::time::Instant::now(), last_ms: AtomicU64::new(0), suspect_until_ms: AtomicU64::new(0) }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    fn suspect(&self) -> bool {
        self.now_ms() < self.suspect_until_ms.load(Ordering::Relaxed)
    }

    fn distrust_pool_for(&self, d: Duration) {
        let until = self.now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.suspect_until_ms.store(until, Ordering::Relaxed);
    }
}

/// `ModelClient` over `aws-sdk-bedrockruntime`.
#[derive(Clone, Debug)]
pub struct BedrockModel {
    /// On the shared, pooled HTTP client.
    client: Client,
    /// The same client on an HTTP client that pools nothing: every request opens its own connection.
    fresh: Client,
    open: StreamOpen,
    activity: Arc<Activity>,
}

impl BedrockModel {
    pub fn new(sdk: &SdkConfig) -> Self {
        let conf = aws_sdk_bedrockruntime::config::Builder::from(sdk).retry_config(RetryConfig::disabled()).build();
        Self::from_client(Client::from_conf(conf))
    }

    pub fn from_client(client: Client) -> Self {
        let fresh = client.config().to_builder().http_client(crate::sdk::fresh_http_client()).build();
        let fresh = Client::from_conf(fresh);
        Self { client, fresh, open: StreamOpen::default(), activity: Arc::new(Activity::new()) }
    }

    /// With another first-byte deadline and retry rule.
    pub fn with_stream_open(mut self, open: StreamOpen) -> Self {
        self.open = open;
        self
    }

    /// Time since a request last used (or warmed) the connection.
    pub fn idle(&self) -> Duration {
        self.activity.idle()
    }

    /// Opens, or reuses, a pooled connection to the runtime endpoint with a call that has no side effects:
    /// `ListAsyncInvokes` for one result. Any HTTP answer leaves a connection in the pool, a refusal
    /// included (`AccessDeniedException` when the role lacks `bedrock:ListAsyncInvokes`); only a transport
    /// failure is an error. Bounded by the SDK's connect timeout; callers bound the whole.
    pub async fn warm(&self) -> Result<(), ModelError> {
        let res = self.client.list_async_invokes().max_results(1).send().await;
        self.activity.touch();
        match res {
            Ok(_) | Err(SdkError::ServiceError(_)) => Ok(()),
            Err(e) => Err(ModelError::Unavailable(boxed(e))),
        }
    }

    /// [`Self::warm`] when no request used the connection for `idle` or longer; whether it warmed.
    pub async fn refresh_if_idle(&self, idle: Duration) -> Result<bool, ModelError> {
        if self.activity.idle() < idle {
            return Ok(false);
        }
        self.warm().await.map(|()| true)
    }

    /// Opens the stream under [`StreamOpen`]: the pooled connection first (unless it failed lately), then
    /// once on a fresh one after a transport failure or a late first byte.
    async fn open_stream(&self, req: &ModelRequest) -> Result<BedrockStream, ModelError> {
        self.activity.touch();
        let Some(limit) = self.open.first_byte else {
            return self.stream_once(&self.client, req).await.map_err(model_error);
        };
        let suspect = self.activity.suspect();
        let first = if suspect { &self.fresh } else { &self.client };
        let failure = match within("bedrock first byte", limit, self.stream_once(first, req)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) if suspect || !crate::sdk::is_transport(&e) => return Err(model_error(e)),
            Err(late) if suspect => return Err(ModelError::Timeout(late.ms)),
            Ok(Err(e)) => mangaassist_core::error::chain(&e),
            Err(late) => late.to_string(),
        };
        tracing::warn!(error = %failure, "pooled Bedrock connection failed before the first byte; retrying once on a fresh connection");
        self.activity.distrust_pool_for(self.open.suspect_for);
        match within("bedrock first byte (fresh connection)", limit, self.stream_once(&self.fresh, req)).await {
            Ok(res) => res.map_err(model_error),
            Err(late) => Err(ModelError::Timeout(late.ms)),
        }
    }

    /// One `ConverseStream` request on `client`, up to the response headers.
    async fn stream_once(
        &self,
        client: &Client,
        req: &ModelRequest,
    ) -> Result<BedrockStream, SdkError<ConverseStreamError, HttpResponse>> {
        let call = match stream_call(client, req) {
            Ok(c) => c,
            // An invalid request is refused by the SDK before anything is sent; it is not a transport failure.
            Err(e) => return Err(SdkError::construction_failure(e)),
        };
        let out = call.send().await?;
        Ok(BedrockStream { rx: out.stream, pending: Vec::new(), activity: self.activity.clone() })
    }
}

type HttpResponse = aws_sdk_bedrockruntime::config::http::HttpResponse;

/// An open `ConverseStream` response.
pub struct BedrockStream {
    rx: EventReceiver<ConverseStreamOutput, ConverseStreamOutputError>,
    /// The further events a `metadata` event maps to (usage, then how it was served, then the guardrail's
    /// trace), next first.
    pending: Vec<ModelEvent>,
    /// The connection was in use until the stream is dropped.
    activity: Arc<Activity>,
}

impl Drop for BedrockStream {
    fn drop(&mut self) {
        self.activity.touch();
    }
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

impl BedrockErrorKind for ApplyGuardrailError {
    fn is_throttling(&self) -> bool {
        self.is_throttling_exception()
    }
    fn is_unavailable(&self) -> bool {
        self.is_service_unavailable_exception() || self.is_internal_server_exception()
    }
    fn is_rejected(&self) -> bool {
        self.is_validation_exception() || self.is_access_denied_exception()
    }
    fn is_not_found(&self) -> bool {
        self.is_resource_not_found_exception()
    }
}

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
        _ if crate::sdk::is_transport(&err) => ModelError::Unavailable(boxed(err)),
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
    guardrail: Option<GuardrailRef>,
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
    let metadata = (!metadata.is_empty()).then_some(metadata);
    Ok(Parts { system, messages, inference, metadata, performance, tier, guardrail: req.guardrail.clone() })
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

/// The `ConverseStream` call for `req` on `client`, ready to send.
fn stream_call(client: &Client, req: &ModelRequest) -> Result<ConverseStreamFluentBuilder, ModelError> {
    let p = parts(req)?;
    let guardrail = p.guardrail.as_ref().map(stream_guardrail);
    Ok(with_parts!(client.converse_stream(), req, p).set_guardrail_config(guardrail))
}

impl ModelClient for BedrockModel {
    type Stream = BedrockStream;

    async fn apply_guardrail(
        &self,
        guardrail: &GuardrailRef,
        direction: Direction,
        texts: &[&str],
    ) -> Result<Assessment, ModelError> {
        let source = match direction {
            Direction::Input => GuardrailContentSource::Input,
            Direction::Output => GuardrailContentSource::Output,
        };
        let content = texts
            .iter()
            .map(|t| GuardrailTextBlock::builder().text(*t).build().map(GuardrailContentBlock::Text).map_err(invalid))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .apply_guardrail()
            .guardrail_identifier(&guardrail.id)
            .guardrail_version(&guardrail.version)
            .source(source)
            .set_content(Some(content))
            .send()
            .await
            .map_err(model_error)?;
        let mut a = Assessment::default();
        if out.action == GuardrailAction::GuardrailIntervened {
            a.intervened = true;
            for one in &out.assessments {
                assess(&mut a, one);
            }
            // An intervention is a mask only when the sensitive-information policy is what acted and nothing
            // blocked; any other (a policy this reader does not know included) is a block, never a "masked"
            // text that would be the guardrail's blocked message.
            if !a.policies.contains(&GuardrailPolicy::SensitiveInformation) {
                a.blocked = true;
            }
            // The texts as the guardrail returned them (masked), when it returned one per text.
            a.outputs = out.outputs.into_iter().filter_map(|o| o.text).collect();
        }
        Ok(a)
    }

    async fn complete(&self, req: &ModelRequest) -> Result<Completion, ModelError> {
        self.activity.touch();
        let p = parts(req)?;
        let guardrail = p.guardrail.as_ref().map(converse_guardrail);
        let out = with_parts!(self.client.converse(), req, p)
            .set_guardrail_config(guardrail)
            .send()
            .await
            .map_err(model_error)?;
        let intervened = out.stop_reason == StopReason::GuardrailIntervened;
        let guardrail = intervened.then(|| {
            let mut a = out.trace.as_ref().and_then(|t| t.guardrail.as_ref()).map(trace_assessment).unwrap_or_default();
            a.intervened = true;
            a.blocked = true;
            a
        });
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
        Ok(Completion { text, input_tokens, output_tokens, guardrail })
    }

    async fn converse_stream(&self, req: &ModelRequest) -> Result<BedrockStream, ModelError> {
        // A request the SDK cannot even build is refused as such, not sent.
        stream_call(&self.client, req)?;
        self.open_stream(req).await
    }
}

fn tokens(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

impl ModelStream for BedrockStream {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        if let Some(ev) = self.pending.pop() {
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
                    // Queued in reverse: `pending` pops from the end.
                    if let Some(g) = m.trace.as_ref().and_then(|t| t.guardrail.as_ref()) {
                        let a = trace_assessment(g);
                        if a.intervened {
                            self.pending.push(ModelEvent::Guardrail(a));
                        }
                    }
                    self.pending.push(ModelEvent::Served {
                        latency: m.performance_config.as_ref().map(|p| p.latency().as_str().to_owned()),
                        service_tier: m.service_tier.as_ref().map(|t| t.r#type().as_str().to_owned()),
                    });
                    if let Some(u) = m.usage {
                        self.pending.push(ModelEvent::Usage {
                            input_tokens: tokens(Some(u.input_tokens)),
                            output_tokens: tokens(Some(u.output_tokens)),
                            cache_read_tokens: tokens(u.cache_read_input_tokens),
                            cache_write_tokens: tokens(u.cache_write_input_tokens),
                        });
                    }
                    self.pending.pop()
                }
                _ => None,
            };
            if let Some(ev) = mapped {
                return Some(Ok(ev));
            }
        }
    }
}
