//! The narrow traits a turn depends on. Handlers are generic over them (static dispatch on the streaming
//! path); `mangaassist-adapters` implements them with the AWS SDK, `mangaassist-local` with embedded
//! in-process versions.

pub mod answers;
pub mod memory;
pub mod sources;

use std::future::Future;

use bytes::Bytes;

use crate::cache::CounterKey;
use crate::error::{ModelError, SinkError, StoreError};
use crate::ids::{Asin, ConnectionId, MessageId, SessionId, SourceAddr, UserId};
use crate::intent::Intent;
use crate::metrics::Emf;
use crate::models::RequestLevers;
use crate::safety::{Assessment, Direction, GuardrailRef};

/// Who said a message in the conversation sent to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: Role,
    pub text: String,
}

/// A ConverseStream request, independent of the SDK.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ModelRequest {
    /// A model id, inference-profile id or provisioned-throughput ARN.
    pub model_id: String,
    /// A long stable prefix of the system prompt (store policies, catalog facts), sent first; a prompt-cache
    /// checkpoint follows it when `levers.cache_point` is set.
    pub system_prefix: Option<std::sync::Arc<str>>,
    /// The system prompt, sent as its own block (stable, so it can be cached).
    pub system: String,
    pub messages: Vec<ChatMessage>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Sent as Bedrock `requestMetadata`: lets invocation logs be joined with our turn logs.
    pub metadata: Vec<(String, String)>,
    /// Latency-optimized inference, the priority tier, the cache checkpoint: only what the model supports.
    pub levers: RequestLevers,
    /// The guardrail on the answer (`guardrailConfig`; asynchronous mode on a stream, trace on).
    pub guardrail: Option<GuardrailRef>,
}

/// What the model stream yields.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ModelEvent {
    /// A piece of the answer text.
    Text(String),
    /// Token counts from the stream's `metadata` event (cache reads and writes are part of the input).
    Usage { input_tokens: u32, output_tokens: u32, cache_read_tokens: u32, cache_write_tokens: u32 },
    /// How the request was served, from the `metadata` event: the performance tier (`standard` or
    /// `optimized`; a request over the optimized quota silently runs standard) and the service tier.
    Served { latency: Option<String>, service_tier: Option<String> },
    /// Why generation stopped (`end_turn`, `max_tokens`, `guardrail_intervened`, ...).
    Stop(String),
    /// The guardrail's trace of the answer, from the `metadata` event, when it intervened.
    Guardrail(Assessment),
}

/// The stop reason of an answer the guardrail stopped.
pub const STOP_GUARDRAIL: &str = "guardrail_intervened";

/// An open model response stream. Dropping it cancels the request.
pub trait ModelStream: Send {
    /// The next event; `None` at the end of the stream.
    fn next(&mut self) -> impl Future<Output = Option<Result<ModelEvent, ModelError>>> + Send;
}

/// A whole answer and what it cost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Set when the guardrail stopped the answer (`text` is then the guardrail's message, not an answer).
    pub guardrail: Option<Assessment>,
}

/// Starts model response streams (Bedrock `ConverseStream`) and runs short non-streaming calls
/// (Bedrock `Converse`, for summaries).
pub trait ModelClient: Send + Sync {
    type Stream: ModelStream;
    /// Resolves once the response has started (headers received), before the first token.
    fn converse_stream(&self, req: &ModelRequest) -> impl Future<Output = Result<Self::Stream, ModelError>> + Send;
    /// The whole answer at once (Bedrock `Converse`).
    fn complete(&self, req: &ModelRequest) -> impl Future<Output = Result<Completion, ModelError>> + Send;
    /// Assesses `texts` with a guardrail (Bedrock `ApplyGuardrail`), as model input or output. A client
    /// without guardrails refuses.
    fn apply_guardrail(
        &self,
        guardrail: &GuardrailRef,
        direction: Direction,
        texts: &[&str],
    ) -> impl Future<Output = Result<Assessment, ModelError>> + Send {
        let _ = (guardrail, direction, texts);
        async { Err(ModelError::Rejected("this model client has no guardrails".to_owned(), "unsupported".into())) }
    }
}

/// Posts frames to a WebSocket client (API Gateway `PostToConnection`).
pub trait ConnectionSink: Send + Sync {
    fn post(&self, conn: &ConnectionId, frame: Bytes) -> impl Future<Output = Result<(), SinkError>> + Send;
}

/// The `CONN#<id>` record written on `$connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub connection_id: ConnectionId,
    pub session_id: SessionId,
    pub user_id: UserId,
    /// Signed in with a guest token (tighter limits).
    pub guest: bool,
    pub connected_at_ms: u64,
    /// TTL, Unix seconds.
    pub expires_at: u64,
}

/// How a turn ended, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnStatus {
    /// The whole answer streamed.
    Complete,
    /// The stream broke after some text had been sent; the text is what the client saw.
    Partial,
    /// The client left mid-answer.
    ClientGone,
    /// The guardrail stopped the answer; the stored answer is the message the client was shown instead.
    Blocked,
}

impl TurnStatus {
    /// The message is answered for good (complete, or stopped by the guardrail): its claim is kept, so the
    /// same id is not answered again. Any other end gives the claim back.
    pub fn settles_claim(self) -> bool {
        matches!(self, Self::Complete | Self::Blocked)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::Partial => "partial",
            Self::ClientGone => "client_gone",
            Self::Blocked => "blocked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "complete" => Some(Self::Complete),
            "partial" => Some(Self::Partial),
            "client_gone" => Some(Self::ClientGone),
            "blocked" => Some(Self::Blocked),
            _ => None,
        }
    }
}

/// One exchange (user message + assistant answer) under `SESSION#<id>`. Serializable for a typing-time
/// speculation's memory snapshot ([`crate::ahead::speculate`]); the store has its own attribute mapping.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TurnRecord {
    pub session_id: SessionId,
    pub message_id: MessageId,
    /// When the user message arrived, Unix ms: orders the turns of a session.
    pub ts_ms: u64,
    pub user_text: String,
    pub assistant_text: String,
    /// The products the answer named, in order (what "the first one" of the next turn points into).
    pub products: Vec<Asin>,
    /// The intent the message was classified as (what the next turn's prefetch prediction starts from).
    pub intent: Option<Intent>,
    pub status: TurnStatus,
    pub model: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Our token counts of `user_text` and `assistant_text`, stored so later prompts need not recount.
    pub user_tokens: Option<u32>,
    pub assistant_tokens: Option<u32>,
    /// For a `Blocked` turn, the guardrail's assessment: `output:topic,sensitive_information`.
    pub guardrail: Option<String>,
    /// TTL, Unix seconds.
    pub expires_at: u64,
}

/// The running summary of a session's turns older than the verbatim window (`SESSION#<id>` / `SUMMARY`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub text: String,
    /// The newest turn (`ts_ms`) the summary covers.
    pub covers_until_ms: u64,
    /// TTL, Unix seconds.
    pub expires_at: u64,
}

/// The result of claiming a message id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This invocation owns the message: answer it.
    Claimed,
    /// Another invocation has claimed (or answered) it already: do not answer twice.
    Duplicate,
}

/// Whose a counter is: a user's, or a source address's (what guests do from one network, whatever guest
/// tokens they hold).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CounterOwner {
    User(UserId),
    Address(SourceAddr),
}

/// The owner as the stores key it: the user id, or `ip#<address>` (a user id never holds `#`), the
/// partition the token endpoint counts an address's guest tokens in.
impl std::fmt::Display for CounterOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User(u) => write!(f, "{u}"),
            Self::Address(a) => write!(f, "ip#{a}"),
        }
    }
}

/// One counter: whose, and what it counts ([`CounterKey`]; each store renders its own key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Counter {
    pub owner: CounterOwner,
    pub key: CounterKey,
}

impl Counter {
    pub fn new(user: &UserId, key: CounterKey) -> Self {
        Self { owner: CounterOwner::User(user.clone()), key }
    }

    /// A counter of what comes from `addr`.
    pub fn of_address(addr: SourceAddr, key: CounterKey) -> Self {
        Self { owner: CounterOwner::Address(addr), key }
    }

    /// When the counter may expire, Unix seconds, for a write at `now_ms`.
    pub fn expires_at(&self, now_ms: u64) -> u64 {
        now_ms / 1000 + self.key.ttl_from(now_ms).as_secs()
    }
}

/// Conversation state: connections, sessions and their owners, message-id claims, turns, and the users'
/// limit counters.
pub trait Store: Send + Sync {
    fn put_connection(&self, rec: &ConnectionRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn get_connection(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, StoreError>> + Send;
    fn delete_connection(&self, id: &ConnectionId) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Atomically claims a message id so it is answered once, however often it is delivered.
    fn claim_message(
        &self,
        id: &MessageId,
        session: &SessionId,
        expires_at: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    /// Gives a claim back (the turn failed before anything was sent), so the client may retry the same id.
    fn release_claim(&self, id: &MessageId, session: &SessionId)
    -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Stores a turn; storing the same turn twice is a no-op. A complete turn marks its claim answered;
    /// any other gives the claim back, so the shopper may send the same message again.
    fn save_turn(&self, turn: &TurnRecord) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Who owns a session (`None`: unknown or expired).
    fn session_owner(&self, session: &SessionId) -> impl Future<Output = Result<Option<UserId>, StoreError>> + Send;
    /// Records the owner of a new session (server-issued ids; an existing owner is never replaced). Recording
    /// the same owner again succeeds (a retried write whose first attempt landed); a session another user
    /// owns is refused with a non-retryable error.
    fn create_session(
        &self,
        session: &SessionId,
        user: &UserId,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Takes the connection's one turn slot for `msg` until `until_ms`, unless another message holds it
    /// (a slot past its time is free). `false`: busy.
    fn begin_turn(
        &self,
        conn: &ConnectionId,
        msg: &MessageId,
        now_ms: u64,
        until_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Frees the connection's turn slot if `msg` holds it.
    fn end_turn(&self, conn: &ConnectionId, msg: &MessageId) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Adds `delta` to one of a user's counters atomically, unless the result would pass `limit` (or go
    /// below zero). `None`: refused, unchanged; else the new value.
    fn add_to_counter(
        &self,
        counter: &Counter,
        delta: i64,
        limit: Option<i64>,
        expires_at: u64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send;
    /// A counter's value (0 when absent).
    fn counter(&self, counter: &Counter) -> impl Future<Output = Result<i64, StoreError>> + Send;
    fn get_summary(&self, session: &SessionId) -> impl Future<Output = Result<Option<Summary>, StoreError>> + Send;
    fn put_summary(
        &self,
        session: &SessionId,
        summary: &Summary,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The newest `limit` turns of a session, newest first (none for a `limit` of 0).
    fn recent_turns(
        &self,
        session: &SessionId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TurnRecord>, StoreError>> + Send;
}

/// A shared store (the local system and tests keep a handle to inspect it).
impl<T: Store> Store for std::sync::Arc<T> {
    fn put_connection(&self, rec: &ConnectionRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put_connection(rec)
    }
    fn get_connection(
        &self,
        id: &ConnectionId,
    ) -> impl Future<Output = Result<Option<ConnectionRecord>, StoreError>> + Send {
        (**self).get_connection(id)
    }
    fn delete_connection(&self, id: &ConnectionId) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).delete_connection(id)
    }
    fn claim_message(
        &self,
        id: &MessageId,
        session: &SessionId,
        expires_at: u64,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send {
        (**self).claim_message(id, session, expires_at)
    }
    fn release_claim(
        &self,
        id: &MessageId,
        session: &SessionId,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).release_claim(id, session)
    }
    fn save_turn(&self, turn: &TurnRecord) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).save_turn(turn)
    }
    fn session_owner(&self, session: &SessionId) -> impl Future<Output = Result<Option<UserId>, StoreError>> + Send {
        (**self).session_owner(session)
    }
    fn create_session(
        &self,
        session: &SessionId,
        user: &UserId,
        expires_at: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).create_session(session, user, expires_at)
    }
    fn begin_turn(
        &self,
        conn: &ConnectionId,
        msg: &MessageId,
        now_ms: u64,
        until_ms: u64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        (**self).begin_turn(conn, msg, now_ms, until_ms)
    }
    fn end_turn(&self, conn: &ConnectionId, msg: &MessageId) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).end_turn(conn, msg)
    }
    fn add_to_counter(
        &self,
        counter: &Counter,
        delta: i64,
        limit: Option<i64>,
        expires_at: u64,
    ) -> impl Future<Output = Result<Option<i64>, StoreError>> + Send {
        (**self).add_to_counter(counter, delta, limit, expires_at)
    }
    fn counter(&self, counter: &Counter) -> impl Future<Output = Result<i64, StoreError>> + Send {
        (**self).counter(counter)
    }
    fn get_summary(&self, session: &SessionId) -> impl Future<Output = Result<Option<Summary>, StoreError>> + Send {
        (**self).get_summary(session)
    }
    fn put_summary(
        &self,
        session: &SessionId,
        summary: &Summary,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).put_summary(session, summary)
    }
    fn recent_turns(
        &self,
        session: &SessionId,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TurnRecord>, StoreError>> + Send {
        (**self).recent_turns(session, limit)
    }
}

/// Where metric records go: CloudWatch Embedded Metric Format lines on stdout in Lambda ([`EmfStdout`]),
/// nowhere locally unless asked ([`NoMetrics`]), a recorder in tests. Metrics are never on a turn's
/// critical path, so the engine holds this behind a pointer.
pub trait Metrics: Send + Sync {
    fn record(&self, emf: &Emf);

    /// Several records at once (a guardrail intervention writes one per policy).
    fn record_all(&self, records: &[Emf]) {
        records.iter().for_each(|r| self.record(r));
    }
}

/// Writes each record to stdout as one line, which Lambda ships to CloudWatch Logs: the one writer of
/// stdout in the functions (logs go to stderr). The line is written under the stdout lock in one call, so
/// it never interleaves. A failed write is ignored: a lost metric must not fail a turn, and there is
/// nowhere else to report it.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmfStdout;

impl Metrics for EmfStdout {
    #[expect(clippy::disallowed_methods, reason = "the EMF writer: stdout is where Lambda's EMF records go")]
    fn record(&self, emf: &Emf) {
        use std::io::Write as _;
        let mut line = emf.to_json();
        line.push('\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }
}

/// Drops every record.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoMetrics;

impl Metrics for NoMetrics {
    fn record(&self, _: &Emf) {}
}

/// The sink the `EMF_METRICS` switch asks for.
pub fn metrics_for(emf: bool) -> std::sync::Arc<dyn Metrics> {
    if emf { std::sync::Arc::new(EmfStdout) } else { std::sync::Arc::new(NoMetrics) }
}
