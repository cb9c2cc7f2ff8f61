//! A Bedrock emulator that the unmodified `aws-sdk-bedrockruntime` client talks to.
//!
//! It serves `POST /model/{modelId}/converse-stream` in the real `application/vnd.amazon.eventstream`
//! framing (written with `aws-smithy-eventstream`, the SDK's own codec): `messageStart`,
//! `contentBlockDelta`..., `contentBlockStop`, `messageStop`, `metadata`. Errors are real too: an HTTP 429
//! with `x-amzn-ErrorType: ThrottlingException` before the stream, an `exception` message inside it.
//!
//! # Latency model
//! For a request with `n` input tokens and an answer of `m` tokens:
//! - first token after `overhead_ms + n * prefill_ms_per_token`, times a uniform factor in `1 ± jitter`;
//! - then one token every `1000 / decode_tokens_per_sec` ms, on an absolute schedule (no drift).
//!
//! The defaults ([`LatencyModel::bedrock_like`]) put a ~450-token prompt's first token near 0.6 s and decode
//! at 75 tokens/s, inside the published on-demand Claude ranges (0.6-0.95 s, 50-100 tokens/s). Input
//! tokens are the `cl100k_base` count times [`CLAUDE_TOKENS_PER_CL100K`], plus 3 per message.
//!
//! # The tail and the connection (off by default)
//! - [`EmulatorConfig::tail`]: [`HeavyTail::published`] replaces the uniform jitter of on-demand routes with
//!   a lognormal body and a slow mode: p95 ≈ 2.0x and p99 ≈ 2.8x the median, from the one published
//!   percentile table of Bedrock's first token (see [`HeavyTail`]).
//! - [`EmulatorConfig::connection`]: [`ConnectionModel::published`] holds the first request of every new TCP
//!   connection for a TCP+TLS handshake (100 ms) and drops connections idle for 60 s, gracefully or
//!   silently (a stale pooled socket that stalls until the client's timeout); see [`connection`].
//!
//! [`EmulatorConfig::with_published_tail`] turns both on. `GET /async-invoke` (`ListAsyncInvokes`) answers
//! an empty list at once: the cheap call a client makes to open (warm) its connection.
//!
//! `POST /model/{modelId}/converse` (non-streaming, used for conversation summaries) answers with a
//! deterministic summary of the shopper's lines after the same latency model's full generation time.
//!
//! # Answers
//! Deterministic functions of the prompt ([`super::answers`]), padded to about `answer_tokens`.
//!
//! Every request is recorded ([`Stats`]) under its `requestMetadata.message_id`, so the bench can tell the
//! model's own first-token time from ours (the record's clock starts after a new connection's handshake,
//! which the record notes apart: [`RequestRecord::new_connection`], [`RequestRecord::handshake`]).
//!
//! # Guardrails
//! The policy and its wire shapes are [`super::guardrail`]'s. Every guardrail identifier exists except
//! [`super::guardrail::MISSING_GUARDRAIL`] (404 `ResourceNotFoundException`).
//! - `POST /guardrail/{guardrailIdentifier}/version/{guardrailVersion}/apply` (`ApplyGuardrail`) assesses
//!   `content[].text.text` for its `source` and answers after [`EmulatorConfig::guardrail_ms`]; every call is
//!   recorded ([`Stats::guardrail_calls`]).
//! - `guardrailConfig` on `ConverseStream` checks the output only: the deployed guardrail's input policies
//!   are off for in-call use (inputs go through `ApplyGuardrail` before the model), so the emulator never
//!   assesses the prompt in-call. In `async` mode deltas go out undelayed and the text so far is assessed
//!   after each; after the first delta that makes it violate the policy no more text is sent, and the
//!   stream ends `contentBlockStop`, `messageStop` `{"stopReason":"guardrail_intervened"}`, `metadata` (with
//!   `trace.guardrail` when `trace` is on). In `sync` mode (the API's default) the guardrail holds
//!   [`SYNC_CHUNK_TOKENS`] tokens, scans them for `guardrail_ms`, and sends them only when they pass: no
//!   violating text is ever sent, at the cost of a later first token.
//! - `guardrailConfig` on `Converse` assesses the whole answer; a violation replaces it with
//!   [`super::guardrail::BLOCKED_MESSAGE`] and `stopReason` `guardrail_intervened`.
//!
//! # Layout
//! - [`latency`]: the latency, tail and capacity model and the settings ([`EmulatorConfig`]).
//! - [`connection`]: new-connection cost and idle timeout, at the socket.
//! - [`request`]: reading a request, choosing its family and its answer.
//! - [`handlers`]: the HTTP handlers (`ConverseStream`, `Converse`, `ApplyGuardrail`, `ListAsyncInvokes`).
//! - [`wire`]: event-stream frames and error shapes.
//! - [`record`]: faults to inject and what the emulator recorded ([`Stats`]).

pub mod connection;
mod handlers;
pub mod latency;
pub mod record;
mod request;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use tokio::time::Instant;

pub use connection::ConnectionModel;
pub use latency::{CapacityModel, EmulatorConfig, HeavyTail, LatencyModel, SYNC_CHUNK_TOKENS};
pub use record::{Fault, GuardrailCall, RequestRecord, Stats};
pub use request::{CLAUDE_TOKENS_PER_CL100K, billed_tokens};

use connection::{ConnInfo, ConnListener, pay_for_new_connection};
use handlers::{apply_guardrail, converse, converse_stream, list_async_invokes};

pub(crate) struct Shared {
    cfg: EmulatorConfig,
    stats: Arc<Stats>,
    faults: Mutex<VecDeque<Fault>>,
    counter: std::sync::atomic::AtomicU64,
    control: Arc<crate::emulators::control_plane::ControlPlane>,
    /// Streams in flight per model id or ARN.
    active: Arc<Mutex<HashMap<String, usize>>>,
    /// Cached prompt prefixes (model and prefix) -> when the entry expires.
    prompt_cache: Mutex<HashMap<String, Instant>>,
}

/// A running emulator.
#[derive(Clone)]
pub struct BedrockEmulator {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    /// The provisioned-throughput control plane served on the same address.
    pub control: Arc<crate::emulators::control_plane::ControlPlane>,
    shared: Arc<Shared>,
}

impl BedrockEmulator {
    /// Binds `addr` (use port 0 for an ephemeral port) and serves until the runtime stops.
    pub async fn start(addr: SocketAddr, cfg: EmulatorConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let control = Arc::new(crate::emulators::control_plane::ControlPlane::default());
        let shared_control = control.clone();
        let shared = Arc::new(Shared {
            cfg,
            stats: stats.clone(),
            faults: Mutex::new(VecDeque::new()),
            counter: std::sync::atomic::AtomicU64::new(0),
            control: shared_control,
            active: Arc::new(Mutex::new(HashMap::new())),
            prompt_cache: Mutex::new(HashMap::new()),
        });
        let app = Router::new()
            .route("/model/{model_id}/converse-stream", post(converse_stream))
            .route("/model/{model_id}/converse", post(converse))
            .route("/guardrail/{guardrail_id}/version/{version}/apply", post(apply_guardrail))
            .route("/async-invoke", get(list_async_invokes))
            .with_state(shared.clone())
            .merge(crate::emulators::control_plane::router(control.clone()))
            .layer(axum::middleware::from_fn_with_state((cfg.connection, stats.clone()), pay_for_new_connection));
        let listener = ConnListener::new(listener, cfg.connection, stats.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<ConnInfo>()).await {
                tracing::error!(error = %e, "bedrock emulator stopped");
            }
        });
        Ok(Self { addr, stats, control, shared })
    }

    /// `http://addr`, for `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or an SDK config's `endpoint_url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Applies `fault` to the next request (queued in order).
    pub fn inject(&self, fault: Fault) {
        if let Ok(mut q) = self.shared.faults.lock() {
            q.push_back(fault);
        }
    }
}
