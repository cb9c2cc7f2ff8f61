//! One chat turn, from the client's frame to the stored answer: [`Engine::send_message`] is the pipeline
//! of the README's "The turn", one step per call, each step in the module that owns it.
//!
//! 1. Parse the frame ([`crate::protocol`]); a bad one gets a typed `error` event.
//! 2. Gather, side by side: the session ([`crate::session`]), the message-id claim, the limits
//!    ([`crate::limits`]: one turn per connection, rate, daily tokens), the route ([`crate::routes`]) and
//!    the context ([`crate::context`]), taking what a typing-time speculation gathered when it fits
//!    ([`crate::speculate`]; the speculation itself is the `typing` action, `turn/typing.rs`).
//! 3. Compress to the token budget ([`crate::prompt`], [`crate::compress`]).
//! 4. Stream ([`crate::serve`]): a pre-generated answer when one fits, else the model stream opened with
//!    failover ([`crate::routes::open_stream`]); the deltas relayed ([`crate::relay`]).
//! 5. After the stream (`turn/after.rs`): the `completed` event and the stored turn side by side, then the
//!    EMF record, the summary ([`crate::summary`]), the cache write-back, the mark on a served
//!    pre-generated answer and the prefetch hand-off ([`crate::prefetch`]).
//!
//! Before the first token has been sent, a failed or silent model attempt fails over; after it, a failure
//! is a typed `error` event and the partial answer is stored. Every turn has an overall deadline (below
//! the Lambda's): past it the stream is cut, what was sent is stored as `partial`, and the claim is given
//! back so the shopper can send the message again. Every outcome writes one EMF record.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt as _;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::compress::PromptBudget;
use crate::context::{Assembler, ContextConfig, Reusable};
use crate::deadline::within;
use crate::error::{StoreError, chain, retry_store};
use crate::ids::{ConnectionId, SessionId};
use crate::limits::{LimitConfig, Limiter, Refusal};
use crate::metrics::{self, Outcome};
use crate::models::{CLAUDE_HAIKU_4_5, ModelRouting, NOVA_2_LITE, base_model_id};
use crate::ports::{Claim, ConnectionSink, ModelClient, Store};
use crate::prefetch::{NoPrefetch, PrefetchQueue};
use crate::pregen::PregenConfig;
use crate::prompt::{PromptConfig, PromptParts, Prompter};
use crate::protocol::{ACTION_SESSION, ACTION_TYPING, ClientMessage, Rejected, ServerEvent, TurnMetrics, action_of};
use crate::relay::{RelayConfig, post_with_retry};
use crate::routes::{FailoverConfig, Routes, plan};
use crate::safety::{Assessment, Direction, GuardrailRef, POLICIES, SafetyConfig, blocked_input_message, is_japanese};
use crate::serve::{self, Answerer, Streamed};
use crate::session::{Connected, Principal, SessionConfig, Sessions};
use crate::sources::{ContextSources, NoSources};
use crate::speculate::{self, Basis, SpeculationConfig};
use crate::summary::SummaryConfig;

/// Settings of the turn, read once at cold start.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// Which model (on-demand model id or inference profile) answers each intent, with its answer cap.
    pub models: ModelRouting,
    /// Tried when the first attempt fails before its first token; defaults to the intent's model again.
    pub fallback_model_id: Option<String>,
    /// The model the provisioned throughput serves (its base id decides which intents may use it); `None`:
    /// the default route's model.
    pub provisioned_model: Option<String>,
    pub prompt: PromptConfig,
    pub relay: RelayConfig,
    pub failover: FailoverConfig,
    /// Token budgets of the prompt sections.
    pub budget: PromptBudget,
    /// Compress the prompt (off only for the ablation benchmark).
    pub compression: bool,
    pub summary: SummaryConfig,
    /// Deadlines of the context legs (and of the memory read).
    pub context: ContextConfig,
    pub session: SessionConfig,
    /// Write one CloudWatch EMF record per answered turn to stdout (on in Lambda; off locally, where stdout
    /// is the terminal).
    pub emf: bool,
    pub turn_ttl: Duration,
    pub claim_ttl: Duration,
    /// Bound of the hand-off to the prefetch worker.
    pub prefetch_handoff: Duration,
    /// Serving pre-generated answers (`PREGEN`); the entries' TTL.
    pub pregen: PregenConfig,
    /// Per-user and per-connection limits.
    pub limits: LimitConfig,
    /// A turn's overall deadline from its start (the handler lowers it to the Lambda's own deadline minus
    /// a margin); under API Gateway's 29 s integration timeout.
    pub turn_deadline: Duration,
    /// How long the message claim may take before the turn gives up on answering it (a slow claim delays
    /// the first token rather than risk a second answer).
    pub claim_deadline: Duration,
    /// Attempts to store a finished turn (retryable store errors, with backoff).
    pub store_attempts: u32,
    /// Guardrails on the answer and on the shopper's input (off unless configured).
    pub safety: SafetyConfig,
    /// Typing-time speculation (`TYPING_SPECULATION`).
    pub speculation: SpeculationConfig,
}

impl Default for TurnConfig {
    fn default() -> Self {
        let budget = PromptBudget::default();
        Self {
            models: ModelRouting::split(&format!("jp.{CLAUDE_HAIKU_4_5}"), &format!("jp.{NOVA_2_LITE}"), 400, 200),
            fallback_model_id: None,
            provisioned_model: None,
            prompt: PromptConfig::default(),
            relay: RelayConfig::default(),
            failover: FailoverConfig::default(),
            budget,
            compression: true,
            summary: SummaryConfig {
                model_id: Some(format!("jp.{NOVA_2_LITE}")),
                verbatim_exchanges: budget.verbatim_messages.div_ceil(2),
                ..SummaryConfig::default()
            },
            context: ContextConfig::default(),
            session: SessionConfig::default(),
            emf: false,
            turn_ttl: Duration::from_secs(30 * 24 * 3600),
            claim_ttl: Duration::from_secs(24 * 3600),
            prefetch_handoff: Duration::from_secs(1),
            pregen: PregenConfig::default(),
            limits: LimitConfig::default(),
            turn_deadline: Duration::from_secs(20),
            claim_deadline: Duration::from_secs(2),
            store_attempts: 4,
            safety: SafetyConfig::default(),
            speculation: SpeculationConfig::default(),
        }
    }
}

/// How a `sendMessage` invocation ended (for logs, metrics and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnResult {
    /// The frame was rejected with this error code.
    Rejected(&'static str),
    /// A limit refused the message (`busy`, `rate_limited`).
    Limited(&'static str),
    /// A `session` frame, answered with the connection's session id.
    Session,
    /// The message id had been claimed before: not answered again.
    Duplicate,
    /// The answer streamed to the end.
    Completed(Box<TurnMetrics>),
    /// The client left mid-answer.
    ClientGone,
    /// The turn failed with this error code.
    Failed(&'static str),
    /// A guardrail blocked the message (input: no model call) or stopped the answer (output: retracted).
    Blocked(Direction),
    /// A `typing` frame: nothing is answered.
    Typing(TypingOutcome),
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
}

/// One message being answered: who sent it, and when.
struct Turn {
    msg: ClientMessage,
    session: SessionId,
    who: Principal,
    /// Arrival, Unix ms: orders the session's turns.
    ts_ms: u64,
    /// The invocation's start: the first-token clock.
    started: Instant,
    /// The turn's overall deadline.
    deadline: Instant,
    /// This invocation owns the message id's claim (release it if nothing reaches the client).
    claimed: bool,
    /// This turn holds the connection's turn slot (freed as soon as the client is told the end).
    slot: std::sync::atomic::AtomicBool,
}

/// Posts an event; a failure to deliver it is only logged (there is nobody else to tell).
async fn post_event<S: ConnectionSink>(sink: &S, conn: &ConnectionId, cfg: &RelayConfig, ev: &ServerEvent<'_>) {
    if let Err(e) = post_with_retry(sink, conn, Bytes::from(ev.to_frame()), cfg).await {
        tracing::warn!(error = %chain(&e), "could not deliver an event");
    }
}

/// Posts an `error` event; a failure to deliver it is only logged (there is nobody else to tell).
pub async fn send_error<S: ConnectionSink>(
    sink: &S,
    conn: &ConnectionId,
    cfg: &RelayConfig,
    message_id: Option<&str>,
    code: &str,
    message: &str,
    retryable: bool,
) {
    post_event(sink, conn, cfg, &ServerEvent::Error { message_id, code, message, retryable, retry_after_ms: None })
        .await;
}

/// Why `$connect` refused a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the user has the most connections allowed open already")]
    TooManyConnections,
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn ms_since(from: Instant, to: Option<Instant>) -> f64 {
    to.map_or(0.0, |t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
}

impl<M: ModelClient, St: Store, C: Clock> Engine<M, St, C, NoSources, NoPrefetch> {
    /// An engine without context sources (memory and the message only); see [`Engine::with_sources`].
    pub fn new(model: M, store: St, clock: C, cfg: TurnConfig) -> Self {
        let prompter = Prompter::new(cfg.prompt.clone(), cfg.budget, cfg.compression);
        let sessions = Sessions::new(SessionConfig { lookup_deadline: cfg.context.memory, ..cfg.session });
        let routes = Routes::default();
        Self { model, store, clock, sources: NoSources, prefetch: NoPrefetch, cfg, sessions, prompter, routes }
    }

    /// Gathers retrieval, cache and product-service context for every turn.
    pub fn with_sources<X: ContextSources>(self, sources: X) -> Engine<M, St, C, X, NoPrefetch> {
        self.with_parts(|_| sources, NoPrefetch)
    }
}

impl<M, St, C, X, Q> Engine<M, St, C, X, Q> {
    /// The same engine with its context sources mapped and another prefetch queue.
    fn with_parts<X2, Q2>(self, sources: impl FnOnce(X) -> X2, prefetch: Q2) -> Engine<M, St, C, X2, Q2> {
        let Self { model, store, clock, sources: old, prefetch: _, cfg, sessions, prompter, routes } = self;
        Engine { model, store, clock, sources: sources(old), prefetch, cfg, sessions, prompter, routes }
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

    fn limiter(&self) -> Limiter<'_, St, C> {
        Limiter { store: &self.store, clock: &self.clock, cfg: &self.cfg.limits }
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
        let (_, who) = self.sessions.session_of(&self.store, conn).await;
        if who != Principal::unknown() {
            self.limiter().close_connection(&who.user).await;
        }
        self.sessions.disconnect(&self.store, conn).await
    }

    /// Any frame after `$connect`: a `session` frame is answered with the connection's session id, a
    /// `typing` frame speculates the context and is answered with nothing ([`Engine::typing`]); anything
    /// else is a turn ([`Engine::send_message_until`]).
    pub async fn handle_frame<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        body: &str,
        started: Instant,
        deadline: Instant,
    ) -> TurnResult {
        match action_of(body).as_deref() {
            Some(ACTION_SESSION) => {
                let (session, _) = self.sessions.session_of(&self.store, conn).await;
                post_event(sink, conn, &self.cfg.relay, &ServerEvent::Session { session_id: session.as_str() }).await;
                return TurnResult::Session;
            }
            Some(ACTION_TYPING) => return TurnResult::Typing(Box::pin(self.typing(conn, body)).await),
            _ => {}
        }
        self.send_message_until(sink, conn, body, started, deadline).await
    }

    /// `sendMessage` (and `$default`) under the configured deadline: see [`Engine::send_message_until`].
    pub async fn send_message<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        body: &str,
        started: Instant,
    ) -> TurnResult {
        self.send_message_until(sink, conn, body, started, started + self.cfg.turn_deadline).await
    }

    /// Runs one turn, ending it by `deadline`. Never fails: every outcome is reported to the client as an
    /// event where possible, written as one EMF record, and returned for logging.
    pub async fn send_message_until<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        body: &str,
        started: Instant,
        deadline: Instant,
    ) -> TurnResult {
        let deadline = deadline.min(started + self.cfg.turn_deadline);
        let (result, store_failed) = Box::pin(self.turn(sink, conn, body, started, deadline)).await;
        if self.cfg.emf {
            metrics::outcome_record(self.clock.now_ms(), outcome(&result), store_failed).emit();
        }
        result
    }

    /// The turn; the flag tells that its answer could not be stored.
    async fn turn<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        body: &str,
        started: Instant,
        deadline: Instant,
    ) -> (TurnResult, bool) {
        // 1. Parse: a bad frame gets a typed error event and the connection stays open.
        let msg = match ClientMessage::parse(body) {
            Ok(m) => m,
            Err(r) => return (self.reject_frame(sink, conn, r).await, false),
        };
        tracing::Span::current().record("message_id", msg.message_id.as_str());
        let (session, who) = self.sessions.session_of(&self.store, conn).await;
        tracing::Span::current().record("session_id", session.as_str());
        let ts_ms = self.clock.now_ms();
        let slot = std::sync::atomic::AtomicBool::new(false);
        let mut turn = Turn { msg, session, who, ts_ms, started, deadline, claimed: false, slot };

        // 2. Gather, side by side: may this connection and user send now, is this message answered
        // already, which route, what context.
        let limiter = self.limiter();
        let assembler = Assembler { sources: &self.sources, store: &self.store, cfg: &self.cfg.context };
        let slot_for = deadline.saturating_duration_since(Instant::now());
        let admit = Box::pin(limiter.admit(conn, &turn.msg.message_id, &turn.who, slot_for));
        let ((admitted, claim, provisioned), (gathered, checked)) = tokio::join!(
            async { tokio::join!(admit, self.claim(&turn), self.routes.provisioned()) },
            // Boxed: both are deep state machines; the turn's own future stays small.
            async {
                let (msg, session, user) = (&turn.msg, &turn.session, &turn.who.user);
                let prior = self.speculated(&turn).map(|p| p.map(Arc::new)).shared();
                let assemble = Box::pin(assembler.assemble_reusing(msg, session, user, prior.clone()));
                tokio::join!(assemble, Box::pin(self.check_input(&turn.msg, prior)))
            },
        );
        match admitted {
            Ok(a) => turn.slot = a.slot.into(),
            Err(refusal) => {
                if matches!(claim, Ok(Claim::Claimed)) {
                    self.release(&turn).await;
                }
                return (self.refuse(sink, conn, &turn, refusal).await, false);
            }
        }
        let (result, tokens, store_failed) = match self.check_claim(sink, conn, &turn, claim).await {
            Some(claimed) if checked == InputCheck::Blocked => {
                turn.claimed = claimed;
                let text = blocked_input_message(is_japanese(&turn.msg.text));
                (self.abort(sink, conn, &turn, "blocked", text, false).await, 0, false)
            }
            Some(claimed) => {
                turn.claimed = claimed;
                if let InputCheck::Masked(text) = checked {
                    // What the guardrail masked (card and phone numbers) never reaches the model or the store.
                    turn.msg.text = text;
                }
                // Boxed: the answer's state machine is deep (the SDK's futures inside), and one allocation per
                // turn keeps every caller's future small.
                Box::pin(self.answer(sink, conn, &turn, gathered, provisioned)).await
            }
            None => (TurnResult::Duplicate, 0, false),
        };
        tokio::join!(self.free_slot(conn, &turn), limiter.spend(&turn.who, tokens));
        (result, store_failed)
    }

    /// The at-send lookup of the session's typing-time speculation: what of it fits this message (one
    /// cache read under the cache leg's deadline; `None` when speculation is off or nothing fits).
    async fn speculated(&self, turn: &Turn) -> Option<Reusable> {
        let spec = &self.cfg.speculation;
        if !spec.enabled {
            return None;
        }
        let basis = Basis::of(&turn.msg.text, &turn.msg.page_context);
        let deadline = self.cfg.context.cache;
        speculate::lookup(&self.sources, deadline, spec, &turn.session, basis, self.clock.now_ms()).await
    }

    /// The input guardrail's verdict on the shopper's text and page context (`Pass` when none is
    /// configured). Runs beside context assembly; bounded, and a failure lets the turn go on (logged and
    /// counted): the output guardrail still watches the answer. A typing-time speculation's verdict on
    /// exactly this text and page context, by the same guardrail, is taken instead of a new check.
    async fn check_input(&self, msg: &ClientMessage, prior: impl Future<Output = Option<Arc<Reusable>>>) -> InputCheck {
        let Some(g) = &self.cfg.safety.input else { return InputCheck::Pass };
        let page = page_json(msg);
        let name = guardrail_name(g);
        if self.cfg.speculation.enabled
            && let Some(p) = prior.await
            && let Some(v) = p.input.as_ref().filter(|v| v.fits(&name, &msg.text, &page))
        {
            let policies: Vec<&'static str> =
                v.policies.iter().filter_map(|p| POLICIES.iter().find(|q| **q == p.as_str()).copied()).collect();
            let check = match (&v.masked, v.blocked) {
                (_, true) => InputCheck::Blocked,
                (Some(masked), false) => InputCheck::Masked(masked.clone()),
                (None, false) => InputCheck::Pass,
            };
            if check != InputCheck::Pass && self.cfg.emf {
                metrics::guardrail_record(self.clock.now_ms(), Direction::Input, &policies).emit();
            }
            tracing::debug!(?check, "input check taken from the typing-time speculation");
            return check;
        }
        let Some(assessment) = self.assess_input(g, &msg.text, &page).await else {
            self.check_failed();
            return InputCheck::Pass;
        };
        let check = input_check(&assessment, &msg.text);
        if assessment.intervened && self.cfg.emf {
            metrics::guardrail_record(self.clock.now_ms(), Direction::Input, &assessment.policies).emit();
        }
        match &check {
            InputCheck::Blocked => {
                tracing::info!(policies = ?assessment.policies, "the input guardrail blocked the message")
            }
            InputCheck::Masked(_) => {
                tracing::info!(policies = ?assessment.policies, "the input guardrail masked the message")
            }
            InputCheck::Pass => {}
        }
        check
    }

    /// One bounded `ApplyGuardrail` call on a message's text and page context JSON; `None` (logged) when it
    /// failed or timed out.
    async fn assess_input(&self, g: &GuardrailRef, text: &str, page: &str) -> Option<Assessment> {
        // The text first (its masked form is the first output), then the page, then the folded variant
        // that reads spellings meant to slip past a policy (only when it differs: `guard_variant`).
        let variant = crate::safety::normalize::guard_variant(text);
        let texts: Vec<&str> =
            [Some(text), Some(page), variant.as_deref()].into_iter().flatten().filter(|t| !t.is_empty()).collect();
        let check = self.model.apply_guardrail(g, Direction::Input, &texts);
        match within("input guardrail", self.cfg.safety.input_deadline, check).await {
            Ok(Ok(a)) => Some(a),
            Ok(Err(e)) => {
                tracing::warn!(code = e.code(), error = %chain(&e), "input guardrail check failed; going on unchecked");
                None
            }
            Err(e) => {
                tracing::warn!(error = %e, "input guardrail check timed out; going on unchecked");
                None
            }
        }
    }

    fn check_failed(&self) {
        if self.cfg.emf {
            metrics::guardrail_check_failed_record(self.clock.now_ms()).emit();
        }
    }

    /// Frees the connection's turn slot if this turn still holds it: once the client has been told the
    /// end, its next message may come.
    async fn free_slot(&self, conn: &ConnectionId, turn: &Turn) {
        if turn.slot.swap(false, std::sync::atomic::Ordering::AcqRel) {
            self.limiter().release(conn, &turn.msg.message_id).await;
        }
    }

    /// Steps 3 to 5 of an admitted turn: the result, the model tokens it cost, and whether its answer
    /// could not be stored.
    async fn answer<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        turn: &Turn,
        gathered: crate::context::Gathered,
        provisioned: Option<String>,
    ) -> (TurnResult, u64, bool) {
        // The intent's model, on provisioned throughput when that serves this model; or a pre-generated
        // answer, when one fits.
        let choice = self.cfg.models.for_intent(gathered.intent);
        let provisioned = provisioned.filter(|_| self.provisioned_serves(&choice.model_id));
        let plan = plan(provisioned.as_deref(), &choice.model_id, self.cfg.fallback_model_id.as_deref());
        let serving = serve::decide(self.cfg.pregen.mode, &turn.msg.text, &gathered, &choice.model_id);

        // 3. Compress everything that arrived to the budget.
        let compress_start = std::time::Instant::now();
        let parts = PromptParts::new(&gathered);
        let input = parts.input(&turn.msg, &gathered);
        let metadata = vec![("message_id".to_owned(), turn.msg.message_id.to_string())];
        let request = match self.prompter.request(&input, choice, metadata) {
            Ok(r) => crate::ports::ModelRequest { guardrail: self.cfg.safety.output.clone(), ..r },
            Err(e) => return (self.abort(sink, conn, turn, "message_too_long", &e.to_string(), false).await, 0, false),
        };
        let compress_ms = compress_start.elapsed().as_secs_f64() * 1000.0;

        // 4. Stream: the model's first attempt that yields a token (or the pre-generated answer), relayed.
        let (relay, failover, routes, deadline) = (&self.cfg.relay, &self.cfg.failover, &self.routes, turn.deadline);
        let answerer = Answerer { model: &self.model, relay, failover, routes, deadline };
        let streamed = answerer.answer(sink, conn, &turn.msg.message_id, &request, &plan, serving.clone()).await;
        let Streamed { out, model, route, failovers, model_first_token_ms, served } = match streamed {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(code = e.code(), error = %chain(&e), "model failed before first token");
                let text = format!("{}; nothing was answered, please send it again", e.client_message());
                return (self.abort(sink, conn, turn, e.code(), &text, e.is_retryable()).await, 0, false);
            }
        };

        // 5. After the stream: tell the client and store the turn, then the work that outlives it.
        let (prompt_tokens, raw_tokens) = self.prompter.account(&request, &input, &model, out.input_tokens);
        let metrics = TurnMetrics {
            first_token_ms: ms_since(turn.started, out.first_post_at),
            model_first_token_ms,
            total_ms: ms_since(turn.started, out.last_post_at),
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            cache_read_tokens: out.cache_read_tokens,
            cache_write_tokens: out.cache_write_tokens,
            performance: out.latency.clone(),
            service_tier: out.service_tier.clone(),
            max_tokens: choice.max_tokens,
            frames: out.frames,
            prompt_tokens,
            raw_tokens,
            compression_ratio: f64::from(prompt_tokens) / f64::from(raw_tokens.max(1)),
            intent: gathered.intent,
            model: crate::models::client_model_id(&model, &choice.model_id),
            served_by: model,
            route,
            failovers,
            assembly_ms: gathered.context.assembly_ms,
            compress_ms,
            relay_ms: out.first_delta_at.map_or(0.0, |d| ms_since(d, out.first_post_at)),
            legs: gathered.context.legs,
            context_errors: gathered.context.errors.clone(),
            cache_hits: gathered.context.cache_hits.clone(),
            cache_lookups: u32::try_from(gathered.context.lookups).unwrap_or(u32::MAX),
            served,
            unknown_asins: 0,
            speculated_legs: gathered.context.speculated.clone(),
        };
        let (result, record, stored) = self.finish(sink, conn, turn, out, metrics, &gathered).await;
        self.after_answer(turn, &gathered, &result, &record, stored, &serving).await;
        let tokens = u64::from(record.input_tokens) + u64::from(record.output_tokens);
        (result, tokens, stored == Stored::Failed)
    }

    /// A limit's refusal: a typed, retryable error with when to try again.
    async fn refuse<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        turn: &Turn,
        refusal: Refusal,
    ) -> TurnResult {
        tracing::info!(code = refusal.code(), user_id = %turn.who.user, "refused by a limit");
        let ev = ServerEvent::Error {
            message_id: Some(turn.msg.message_id.as_str()),
            code: refusal.code(),
            message: refusal.message(),
            retryable: true,
            retry_after_ms: refusal.retry_after_ms(),
        };
        post_event(sink, conn, &self.cfg.relay, &ev).await;
        TurnResult::Limited(refusal.code())
    }

    /// Whether the provisioned throughput serves `model_id` (same base model).
    fn provisioned_serves(&self, model_id: &str) -> bool {
        let pt = self.cfg.provisioned_model.as_deref().unwrap_or(&self.cfg.models.default.model_id);
        base_model_id(pt) == base_model_id(model_id)
    }

    /// Step 1's failure: the frame's typed error.
    async fn reject_frame<S: ConnectionSink>(&self, sink: &S, conn: &ConnectionId, r: Rejected) -> TurnResult {
        let code = r.error.code();
        tracing::info!(code, error = %r.error, "rejected frame");
        send_error(sink, conn, &self.cfg.relay, r.message_id.as_deref(), code, &r.error.to_string(), false).await;
        TurnResult::Rejected(code)
    }

    /// Claims the message id in its session. Bounded, but generously: a slow claim delays the first token
    /// (it runs beside the context, so only a claim slower than that costs anything) rather than risk
    /// answering the same message twice.
    async fn claim(&self, turn: &Turn) -> Result<Claim, StoreError> {
        let expires = turn.ts_ms / 1000 + self.cfg.claim_ttl.as_secs();
        let claim = self.store.claim_message(&turn.msg.message_id, &turn.session, expires);
        within("message claim", self.cfg.claim_deadline, claim).await?
    }

    /// `Some(owned)` to answer (`owned`: this invocation holds the claim), `None` for a duplicate, which
    /// has been told so.
    async fn check_claim<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        turn: &Turn,
        claim: Result<Claim, StoreError>,
    ) -> Option<bool> {
        match claim {
            Ok(Claim::Claimed) => Some(true),
            Ok(Claim::Duplicate) => {
                tracing::info!("duplicate message id; not answering twice");
                self.free_slot(conn, turn).await;
                let text = "this message_id has already been answered or is being answered";
                let mid = Some(turn.msg.message_id.as_str());
                send_error(sink, conn, &self.cfg.relay, mid, "duplicate_message", text, false).await;
                None
            }
            Err(e) => {
                // Answer anyway: a shopper waiting beats a perfect dedupe. Logged for the alarm.
                tracing::error!(code = e.code(), error = %chain(&e), "message claim failed; answering without dedupe");
                Some(false)
            }
        }
    }

    /// Ends a turn before anything was sent: the claim is released (the same id may be sent again) and the
    /// client is told why.
    async fn abort<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        turn: &Turn,
        code: &'static str,
        text: &str,
        retryable: bool,
    ) -> TurnResult {
        // Claim and slot first: the client may resend the moment it reads the error.
        tokio::join!(
            async {
                if turn.claimed {
                    self.release(turn).await;
                }
            },
            self.free_slot(conn, turn)
        );
        send_error(sink, conn, &self.cfg.relay, Some(turn.msg.message_id.as_str()), code, text, retryable).await;
        match code {
            "message_too_long" => TurnResult::Rejected(code),
            "blocked" => TurnResult::Blocked(Direction::Input),
            _ => TurnResult::Failed(code),
        }
    }

    /// Gives the claim back (retried: a claim left behind would refuse the shopper's resend for a day).
    async fn release(&self, turn: &Turn) {
        let (id, session) = (&turn.msg.message_id, &turn.session);
        let attempts = self.cfg.store_attempts;
        if let Err(e) = retry_store("claim release", attempts, || self.store.release_claim(id, session)).await {
            tracing::error!(error = %chain(&e), "could not release message claim");
        }
    }
}

/// What the input guardrail made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum InputCheck {
    Pass,
    /// The message with what the guardrail masked replaced (`{CREDIT_DEBIT_CARD_NUMBER}`, `{PHONE}`).
    Masked(String),
    Blocked,
}

/// The verdict of an assessment of `text`: blocked, masked (a non-empty masked text that differs), or pass.
fn input_check(a: &Assessment, text: &str) -> InputCheck {
    if !a.intervened {
        return InputCheck::Pass;
    }
    if a.blocked {
        return InputCheck::Blocked;
    }
    match a.outputs.first() {
        Some(masked) if !masked.trim().is_empty() && masked != text => InputCheck::Masked(masked.trim().to_owned()),
        _ => InputCheck::Pass,
    }
}

/// The page context as the input guardrail reads it: JSON, or empty when there is none.
fn page_json(msg: &ClientMessage) -> String {
    if msg.page_context.is_empty() {
        String::new()
    } else {
        serde_json::to_string(&msg.page_context).unwrap_or_default()
    }
}

/// `id:version`: which guardrail gave a verdict.
fn guardrail_name(g: &GuardrailRef) -> String {
    format!("{}:{}", g.id, g.version)
}

/// The `outcome` dimension of a turn's result.
fn outcome(result: &TurnResult) -> Outcome {
    match result {
        TurnResult::Completed(_) => Outcome::Completed,
        TurnResult::Rejected(_) | TurnResult::Duplicate | TurnResult::Session => Outcome::Rejected,
        TurnResult::Limited(_) => Outcome::Limited,
        TurnResult::Failed(_) => Outcome::Failed,
        TurnResult::ClientGone => Outcome::ClientGone,
        TurnResult::Blocked(_) => Outcome::Blocked,
        // Never counted as a turn (a typing frame has its own record).
        TurnResult::Typing(_) => Outcome::Rejected,
    }
}

mod after;
mod typing;
use after::Stored;
pub use typing::TypingOutcome;

#[cfg(test)]
mod tests;
