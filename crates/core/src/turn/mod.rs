//! One chat turn, from the client's frame to the stored answer. [`Engine::send_message`] is the pipeline of
//! the README's "The turn", one call per step, each consuming the previous step's value:
//!
//! 1. **parse** the frame ([`ClientMessage::parse`]); a bad one ends the turn with its typed error.
//! 2. **open** ([`open`]): the session of the connection, read once and cached per container, and the
//!    message's arrival: a complete, immutable [`open::Turn`].
//! 3. **gather** ([`ready`]), side by side under the overall context cap (`CONTEXT_DEADLINE_MS`): the
//!    limits and the connection's turn slot, the message-id claim, the route, the context (memory, retrieval,
//!    cache, services, or what a typing-time speculation gathered) and the input guardrail's check. The
//!    result is [`ready::Ready`]: a [`end::TurnHold`] owning the claim and the slot, the gathered context,
//!    the checked question and the route.
//! 4. **compose** ([`compose`]): the intent's model and route plan, where the answer comes from (the
//!    model, or a pre-generated answer), and the request compressed to the token budget.
//! 5. **stream** ([`crate::answer::serve`]): the answer relayed as sequenced frames.
//! 6. **conclude** ([`conclude`]): the metrics built once, the record stored beside the event that ends
//!    the turn for the client, then what outlives the stream (summary, cache write-back, prefetch).
//!
//! Every way a turn ends goes through one step, [`end`]: it settles what the turn holds (the claim given
//! back when nothing was answered for good, the slot freed before the client hears the end, so it may
//! send its next message at once), posts the final event, and the pipeline then writes the turn's EMF
//! outcome and counts its tokens. Before the first token a failed model attempt fails over; after it, a
//! failure is a typed `error` and the partial answer is stored. Past the turn's overall deadline the stream
//! is cut, what was sent is stored as `partial`, and the claim is given back.

use std::sync::Arc;

use bytes::Bytes;
use tokio::time::Instant;

use crate::admit::limits::Limiter;
use crate::admit::session::{Connected, Principal, SessionConfig, Sessions};
use crate::ahead::prefetch::{NoPrefetch, PrefetchQueue};
use crate::answer::relay::post_with_retry;
use crate::answer::routes::Routes;
use crate::clock::Clock;
use crate::error::{ErrorCode, StoreError, chain};
use crate::ids::ConnectionId;
use crate::metrics::{self, Outcome};
use crate::ports::answers::AnswerBuffer;
use crate::ports::sources::{ContextSources, NoSources};
use crate::ports::{ConnectionSink, Metrics, ModelClient, Store, metrics_for};
use crate::prompt::Prompter;
use crate::protocol::{ACTION_SESSION, ACTION_TYPING, ClientMessage, ServerEvent, TurnMetrics, action_of};
use crate::safety::Direction;

mod compose;
mod conclude;
mod config;
mod early;
mod end;
mod open;
mod ready;
mod stream;
mod typed;
mod typing;

pub use config::TurnConfig;
pub use typing::TypingOutcome;

/// One invocation of the chat function for a frame after `$connect`: who sent what, and when.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub conn: ConnectionId,
    /// The frame as received.
    pub body: &'a str,
    /// When the event arrived: the first-token clock.
    pub started: Instant,
    /// When the invocation must have ended (the Lambda's deadline minus a margin); the turn's own deadline
    /// is the earlier of this and `TURN_DEADLINE_MS` from `started`.
    pub deadline: Instant,
    /// The process CPU clock, started with the invocation (`completed.metrics.cpu_us`); `None`: not measured.
    pub cpu: Option<crate::clock::CpuMeter>,
    /// Who sent it, as the event says (the authorizer's principal and the source address); `None`: the
    /// connection record says ([`Sessions::session_of`]).
    pub caller: Option<Principal>,
}

impl<'a> Invocation<'a> {
    /// A frame arriving now, bounded only by the turn's own deadline.
    pub fn now(conn: ConnectionId, body: &'a str) -> Self {
        let started = Instant::now();
        let deadline = started + std::time::Duration::from_secs(24 * 3600);
        Self { conn, body, started, deadline, cpu: None, caller: None }
    }

    /// The same frame, sent by `caller`.
    pub fn from_caller(self, caller: Option<Principal>) -> Self {
        Self { caller, ..self }
    }
}

/// How an invocation ended (for logs, metrics, the function's status code and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnResult {
    /// The frame or the message was refused with this error (`bad_frame`, `message_too_long`, ...).
    Rejected(ErrorCode),
    /// A limit refused the message (`busy`, `rate_limited`).
    Limited(ErrorCode),
    /// A `session` frame, answered with the connection's session id.
    Session,
    /// The message id had been claimed before: not answered again.
    Duplicate,
    /// The answer streamed to the end.
    Completed(Box<TurnMetrics>),
    /// The client left mid-answer.
    ClientGone,
    /// The model failed, or the turn ran out of time, with this error.
    Failed(ErrorCode),
    /// Posting to the client failed for good (not because it left): nobody could be told.
    Undelivered,
    /// A guardrail blocked the message (input: no model call) or stopped the answer (output: retracted).
    Blocked(Direction),
    /// A `typing` frame: nothing is answered.
    Typing(TypingOutcome),
}

impl TurnResult {
    /// The `outcome` dimension of the turn's EMF record.
    fn outcome(&self) -> Outcome {
        match self {
            Self::Completed(_) => Outcome::Completed,
            Self::Rejected(_) | Self::Duplicate | Self::Session => Outcome::Rejected,
            Self::Limited(_) => Outcome::Limited,
            Self::Failed(_) | Self::Undelivered => Outcome::Failed,
            Self::ClientGone => Outcome::ClientGone,
            Self::Blocked(_) => Outcome::Blocked,
            // Never counted as a turn (a typing frame has its own record).
            Self::Typing(_) => Outcome::Rejected,
        }
    }
}

/// The turn engine: model client, store, clock, context sources and prefetch queue, built once per
/// container.
pub struct Engine<M, St, C, X = NoSources, Q = NoPrefetch> {
    pub model: M,
    pub store: St,
    pub clock: C,
    pub sources: X,
    /// Where finished turns are handed for speculative prefetch of the likely follow-up.
    pub prefetch: Q,
    pub cfg: TurnConfig,
    sessions: Sessions,
    prompter: Prompter,
    routes: Routes,
    metrics: Arc<dyn Metrics>,
}

/// Why `$connect` refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the user has the most connections allowed open already")]
    TooManyConnections,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a finished turn spent and whether its answer was kept: counted once the client knows the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Spent {
    /// Model tokens (input and output) against the user's day.
    tokens: u64,
    /// The answer could not be stored after every attempt.
    store_failed: bool,
}

/// Posts an event; a failure to deliver it is only logged (there is nobody else to tell).
async fn post_event<S: ConnectionSink>(
    sink: &S,
    conn: &ConnectionId,
    cfg: &crate::answer::relay::RelayConfig,
    ev: &ServerEvent<'_>,
) {
    if let Err(e) = post_with_retry(sink, conn, Bytes::from(ev.to_frame()), cfg).await {
        tracing::warn!(error = %chain(&e), "could not deliver an event");
    }
}

impl<M: ModelClient, St: Store, C: Clock> Engine<M, St, C, NoSources, NoPrefetch> {
    /// An engine without context sources (memory and the message only); see [`Engine::with_sources`].
    /// Metrics go to stdout as EMF when `cfg.emf` is set ([`Engine::with_metrics`] for another sink).
    pub fn new(model: M, store: St, clock: C, cfg: TurnConfig) -> Self {
        let prompter = Prompter::new(cfg.prompt.clone(), cfg.budget, cfg.compression);
        let sessions = Sessions::new(SessionConfig { lookup_deadline: cfg.context.memory, ..cfg.session });
        let metrics = metrics_for(cfg.emf);
        let routes = Routes::default();
        Self { model, store, clock, sources: NoSources, prefetch: NoPrefetch, cfg, sessions, prompter, routes, metrics }
    }

    /// Gathers retrieval, cache and product-service context for every turn. Answers typed ahead need the
    /// cache's answer buffer: without one they are off, and the log says so once.
    pub fn with_sources<X: ContextSources>(mut self, sources: X) -> Engine<M, St, C, X, NoPrefetch> {
        if self.cfg.typed.enabled && !sources.answers().supported() {
            tracing::warn!("ANSWER_SPECULATION is on but there is no cache to buffer answers in (REDIS_URL): off");
            self.cfg.typed.enabled = false;
        }
        self.with_parts(|_| sources, NoPrefetch)
    }
}

impl<M, St, C, X, Q> Engine<M, St, C, X, Q> {
    /// The same engine with its context sources mapped and another prefetch queue.
    fn with_parts<X2, Q2>(self, sources: impl FnOnce(X) -> X2, prefetch: Q2) -> Engine<M, St, C, X2, Q2> {
        let Self { model, store, clock, sources: old, prefetch: _, cfg, sessions, prompter, routes, metrics } = self;
        Engine { model, store, clock, sources: sources(old), prefetch, cfg, sessions, prompter, routes, metrics }
    }

    fn limiter(&self) -> Limiter<'_, St, C> {
        Limiter { store: &self.store, clock: &self.clock, cfg: &self.cfg.limits }
    }

    /// Sends every metric record to `metrics` instead.
    pub fn with_metrics(mut self, metrics: Arc<dyn Metrics>) -> Self {
        self.metrics = metrics;
        self
    }
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// Hands each answered turn to `prefetch` (the async prefetch Lambda in production).
    pub fn with_prefetch<Q2: PrefetchQueue>(self, prefetch: Q2) -> Engine<M, St, C, X, Q2> {
        self.with_parts(|sources| sources, prefetch)
    }

    /// Routes to provisioned throughput while the reconciler's record says it is in service.
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// `$connect`: counts the connection against the user's cap, then stores its record, resuming the
    /// requested session when `who` owns it (see [`Sessions::connect`]).
    pub async fn connect(
        &self,
        conn: ConnectionId,
        requested_session: Option<&str>,
        who: &Principal,
    ) -> Result<Connected, ConnectError> {
        if !self.limiter().open_connection(who).await {
            return Err(ConnectError::TooManyConnections);
        }
        Ok(self.sessions.connect(&self.store, &self.clock, conn, requested_session, who).await?)
    }

    /// `$disconnect`: forgets the connection (its turns stay with the session) and counts it closed.
    pub async fn disconnect(&self, conn: &ConnectionId) -> Result<(), StoreError> {
        match self.sessions.session_of(&self.store, conn, None).await {
            Ok((_, who)) if who != Principal::unknown() => self.limiter().close_connection(&who.user).await,
            Ok(_) => {}
            // The count heals when its item expires (`CounterKey::Connections`).
            Err(e) => tracing::warn!(error = %chain(&e), "could not count the connection closed"),
        }
        self.sessions.disconnect(&self.store, conn).await
    }

    /// Any frame after `$connect`, by its action: `session` is answered with the connection's session id,
    /// `typing` speculates ([`Engine::typing`]) and is answered with nothing; anything else is a turn
    /// ([`Engine::send_message`]), where an unknown action gets its typed error.
    pub async fn handle_frame<S: ConnectionSink>(&self, sink: &S, inv: &Invocation<'_>) -> TurnResult {
        match action_of(inv.body).as_deref() {
            Some(ACTION_SESSION) => match self.sessions.session_of(&self.store, &inv.conn, inv.caller.as_ref()).await {
                Ok((session, _)) => {
                    let ev = ServerEvent::Session { session_id: session.as_str() };
                    post_event(sink, &inv.conn, &self.cfg.relay, &ev).await;
                    TurnResult::Session
                }
                Err(e) => self.session_unavailable(sink, inv, None, &e).await,
            },
            Some(ACTION_TYPING) => TurnResult::Typing(Box::pin(self.typing(inv)).await),
            _ => self.send_message(sink, inv).await,
        }
    }

    /// `sendMessage`: the README's "The turn", one step per call. Never fails: every outcome is told to
    /// the client where possible, written as one EMF record, and returned for logging.
    pub async fn send_message<S: ConnectionSink>(&self, sink: &S, inv: &Invocation<'_>) -> TurnResult {
        // Boxed: the turn's state machine is deep (the SDK's futures inside); one allocation per turn keeps
        // every caller's future small.
        let (result, spent) = Box::pin(self.turn(sink, inv)).await;
        self.metrics.record(&metrics::outcome_record(self.clock.now_ms(), result.outcome(), spent.store_failed));
        result
    }

    async fn turn<S: ConnectionSink>(&self, sink: &S, inv: &Invocation<'_>) -> (TurnResult, Spent) {
        let msg = match ClientMessage::parse(inv.body) {
            Ok(msg) => msg,
            Err(rejected) => return (self.reject_frame(sink, inv, rejected).await, Spent::default()),
        };
        let turn = match self.open(inv, msg).await {
            Ok(turn) => turn,
            Err((msg, e)) => return (self.session_unavailable(sink, inv, Some(&msg), &e).await, Spent::default()),
        };
        let ready = match Box::pin(self.gather(&turn)).await {
            Ok(ready) => ready,
            Err((hold, stop)) => return self.stopped(sink, &turn, hold, stop).await,
        };
        let composed = match self.compose(&compose::Asked::of(&turn, &ready)) {
            Ok(composed) => composed,
            Err(stop) => return self.stopped(sink, &turn, ready.hold, stop).await,
        };
        // Beside the stream: the listed products' answers, pre-generated as the answer names them.
        let early_input = self.early_input(&turn, &ready.gathered, &ready.question, &composed.request);
        let (tap, shown) = early::Tap::new(sink, early_input.is_some());
        let early = self.pregenerate_early(&turn, early_input, shown);
        let answer = async {
            let streamed = Box::pin(self.stream(&tap, &turn, &composed)).await;
            // The stream is over: no product named from here on is pre-generated early.
            drop(tap);
            match streamed {
                Ok(streamed) => Box::pin(self.conclude(sink, &turn, ready, composed, streamed, inv.cpu)).await,
                Err(stop) => self.stopped(sink, &turn, ready.hold, stop).await,
            }
        };
        // Boxed: both are deep state machines (the SDK's futures inside); the turn's own future stays small.
        let ((result, spent), early) = tokio::join!(Box::pin(answer), Box::pin(early));
        // What was generated early for the shopper is spent against their day too.
        let early_tokens =
            early.as_ref().map_or(0, |e| u64::from(e.report.input_tokens) + u64::from(e.report.output_tokens));
        self.record_early(&turn, &result, early);
        self.limiter().spend(&turn.who, spent.tokens + early_tokens).await;
        (result, spent)
    }

    /// A turn that stopped before anything was answered: it spent nothing.
    async fn stopped<S: ConnectionSink>(
        &self,
        sink: &S,
        turn: &open::Turn,
        hold: end::TurnHold,
        stop: end::Stop,
    ) -> (TurnResult, Spent) {
        (self.end(sink, turn, hold, end::Ending::Stopped(stop)).await, Spent::default())
    }
}

#[cfg(test)]
mod tests;
