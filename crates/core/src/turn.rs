//! One chat turn, from the client's frame to the stored answer, plus `$connect` / `$disconnect`.
//!
//! The critical path to the first token is: parse -> open the model stream -> first delta -> post. Everything
//! else runs beside it (session lookup, message-id claim) or after the stream (the `completed` event, the
//! stored turn). Before the first token has been sent, a failed or silent model attempt is retried (once, by
//! default, on the fallback model when one is configured); after it, a failure is a typed `error` event and
//! the partial answer is stored.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::compress::{CompressInput, PromptBudget, PromptCompressor, raw_tokens};
use crate::context::{
    Assembled, ContextConfig, ContextSources, Lookup, NoSources, cached_lookups, focus_products, lookups, memory_leg,
    retrieval,
};
use crate::error::{ModelError, SinkError, StoreError, chain};
use crate::ids::{ConnectionId, MessageId, SessionId, UserId};
use crate::intent;
use crate::intent::{Entities, Intent};
use crate::metrics;
use crate::ports::{
    ChatMessage, Claim, ConnectionRecord, ConnectionSink, ModelClient, ModelEvent, ModelRequest, ModelStream, Role,
    Store, Summary, TurnRecord, TurnStatus,
};
use crate::prefetch::{NoPrefetch, PrefetchJob, PrefetchQueue};
use crate::prompt::{PromptConfig, SYSTEM_PROMPT, compressed_request, products_in, uncompressed_request};
use crate::protocol::{ClientMessage, ProductRef, ServerEvent, TurnMetrics};
use crate::relay::{RelayConfig, RelayEnd, RelayOutcome, post_with_retry, relay};
use crate::routes::{Route, Routes, plan};
use crate::tokenizer::{Calibration, Estimator, Tokenizer};

/// Settings of the turn, read once at cold start.
#[derive(Debug, Clone)]
pub struct TurnConfig {
    /// On-demand model id (or inference-profile id).
    pub model_id: String,
    /// Tried when the first attempt fails before its first token; defaults to `model_id` again.
    pub fallback_model_id: Option<String>,
    pub prompt: PromptConfig,
    pub relay: RelayConfig,
    /// Attempts to get a first token before anything is sent (1 = no retry).
    pub model_attempts: u32,
    /// Deadline for one attempt's first token.
    pub first_token_timeout: Duration,
    /// Token budgets of the prompt sections.
    pub budget: PromptBudget,
    /// Compress the prompt (off only for the ablation benchmark).
    pub compression: bool,
    /// Exchanges loaded from memory each turn: the verbatim window plus material for the digest and the
    /// next summary.
    pub memory_turns: u32,
    /// Model for conversation summaries (a small, fast one); `None` disables summaries.
    pub summary_model_id: Option<String>,
    /// Summarize once this many exchanges older than the verbatim window are not yet covered.
    pub summarize_after: usize,
    /// Deadlines of the context legs.
    pub context: ContextConfig,
    /// Write one CloudWatch EMF record per answered turn to stdout (on in Lambda; off locally, where stdout
    /// is the terminal).
    pub emf: bool,
    pub connection_ttl: Duration,
    pub turn_ttl: Duration,
    pub claim_ttl: Duration,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".to_owned(),
            fallback_model_id: None,
            prompt: PromptConfig { max_tokens: 400, temperature: 0.3 },
            relay: RelayConfig::default(),
            model_attempts: 2,
            first_token_timeout: Duration::from_secs(5),
            budget: PromptBudget::default(),
            compression: true,
            memory_turns: 8,
            summary_model_id: Some("anthropic.claude-3-haiku-20240307-v1:0".to_owned()),
            summarize_after: 2,
            context: ContextConfig::default(),
            emf: false,
            connection_ttl: Duration::from_secs(3 * 3600),
            turn_ttl: Duration::from_secs(30 * 24 * 3600),
            claim_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// How a `sendMessage` invocation ended (for logs, metrics and tests).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnResult {
    /// The frame was rejected with this error code.
    Rejected(&'static str),
    /// The message id had been claimed before: not answered again.
    Duplicate,
    /// The answer streamed to the end.
    Completed(Box<TurnMetrics>),
    /// The client left mid-answer.
    ClientGone,
    /// The turn failed with this error code.
    Failed(&'static str),
}

/// Connection id -> session id. Connection records never change after `$connect`, so a warm container can
/// skip the store lookup on every turn after a connection's first.
#[derive(Debug, Default)]
struct SessionCache(Mutex<HashMap<ConnectionId, (SessionId, UserId)>>);

impl SessionCache {
    const CAP: usize = 10_000;

    fn get(&self, id: &ConnectionId) -> Option<(SessionId, UserId)> {
        self.0.lock().ok()?.get(id).cloned()
    }

    fn put(&self, id: ConnectionId, v: (SessionId, UserId)) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::CAP {
                m.clear();
            }
            m.insert(id, v);
        }
    }

    fn remove(&self, id: &ConnectionId) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }
}

/// The turn engine: model client, store, clock and context sources, built once per container.
pub struct Engine<M, St, C, X = NoSources, Q = NoPrefetch> {
    pub model: M,
    pub store: St,
    pub clock: C,
    pub sources: X,
    /// Where finished turns are handed for speculative prefetch of the likely follow-up.
    pub prefetch: Q,
    pub cfg: TurnConfig,
    sessions: SessionCache,
    tokens: Estimator,
    calibration: Calibration,
    compressor: PromptCompressor,
    routes: Routes,
}

/// What the store remembers of a session: recent exchanges (newest first) and the running summary.
#[derive(Debug, Default)]
struct Memory {
    turns: Vec<TurnRecord>,
    summary: Option<Summary>,
}

impl Memory {
    /// The exchanges the summary does not cover, as messages oldest first, with their stored token counts.
    fn messages(&self) -> (Vec<ChatMessage>, Vec<Option<usize>>) {
        let covered = self.summary.as_ref().map_or(0, |s| s.covers_until_ms);
        let mut out = Vec::with_capacity(self.turns.len() * 2);
        let mut counts = Vec::with_capacity(self.turns.len() * 2);
        let n = |c: Option<u32>| c.map(|c| c as usize);
        for t in self.turns.iter().rev().filter(|t| t.ts_ms > covered) {
            out.push(ChatMessage { role: Role::User, text: t.user_text.clone() });
            counts.push(n(t.user_tokens));
            if !t.assistant_text.is_empty() {
                out.push(ChatMessage { role: Role::Assistant, text: t.assistant_text.clone() });
                counts.push(n(t.assistant_tokens));
            }
        }
        (out, counts)
    }
}

/// Instructions for the summary model.
const SUMMARY_PROMPT: &str = "Summarize this manga-store chat for the assistant's memory in at most 60 words: \
what the shopper wants, titles and ASINs discussed, open questions. Same language as the chat.";

/// A model stream whose first events were read while deciding whether to retry.
struct Primed<S> {
    head: std::vec::IntoIter<ModelEvent>,
    rest: S,
}

impl<S: ModelStream> ModelStream for Primed<S> {
    async fn next(&mut self) -> Option<Result<ModelEvent, ModelError>> {
        match self.head.next() {
            Some(ev) => Some(Ok(ev)),
            None => self.rest.next().await,
        }
    }
}

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

fn ms_since(from: Instant, to: Option<Instant>) -> f64 {
    to.map_or(0.0, |t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
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
    let frame = ServerEvent::Error { message_id, code, message, retryable }.to_frame();
    if let Err(e) = post_with_retry(sink, conn, Bytes::from(frame), cfg).await {
        tracing::warn!(code, error = %chain(&e), "could not deliver error event");
    }
}

impl<M: ModelClient, St: Store, C: Clock> Engine<M, St, C, NoSources, NoPrefetch> {
    /// An engine without context sources (memory and the message only); see [`Engine::with_sources`].
    pub fn new(model: M, store: St, clock: C, cfg: TurnConfig) -> Self {
        let compressor = PromptCompressor::new(cfg.budget);
        Self {
            model,
            store,
            clock,
            sources: NoSources,
            prefetch: NoPrefetch,
            cfg,
            sessions: SessionCache::default(),
            tokens: Estimator::warm_in_background(),
            calibration: Calibration::default(),
            compressor,
            routes: Routes::default(),
        }
    }

    /// Gathers retrieval, cache and product-service context for every turn.
    pub fn with_sources<X: ContextSources>(self, sources: X) -> Engine<M, St, C, X, NoPrefetch> {
        self.with_parts(|_| sources, NoPrefetch)
    }
}

impl<M, St, C, X, Q> Engine<M, St, C, X, Q> {
    /// The same engine with its context sources mapped and another prefetch queue.
    fn with_parts<X2, Q2>(self, sources: impl FnOnce(X) -> X2, prefetch: Q2) -> Engine<M, St, C, X2, Q2> {
        Engine {
            model: self.model,
            store: self.store,
            clock: self.clock,
            sources: sources(self.sources),
            prefetch,
            cfg: self.cfg,
            sessions: self.sessions,
            tokens: self.tokens,
            calibration: self.calibration,
            compressor: self.compressor,
            routes: self.routes,
        }
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

    /// `$connect`: stores the connection record. A valid `session_id` from the client resumes that session;
    /// otherwise a new one starts.
    pub async fn connect(
        &self,
        conn: ConnectionId,
        session_id: Option<&str>,
        user_id: Option<&str>,
    ) -> Result<ConnectionRecord, StoreError> {
        let session_id = match session_id.map(SessionId::parse) {
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "ignoring invalid session_id on connect; starting a new session");
                SessionId::random()
            }
            None => SessionId::random(),
        };
        let user_id = user_id.and_then(|u| UserId::parse(u).ok()).unwrap_or_else(UserId::anonymous);
        let now = self.clock.now_ms();
        let rec = ConnectionRecord {
            connection_id: conn,
            session_id,
            user_id,
            connected_at_ms: now,
            expires_at: now / 1000 + secs(self.cfg.connection_ttl),
        };
        self.store.put_connection(&rec).await?;
        self.sessions.put(rec.connection_id.clone(), (rec.session_id.clone(), rec.user_id.clone()));
        Ok(rec)
    }

    /// `$disconnect`: forgets the connection (its turns stay with the session).
    pub async fn disconnect(&self, conn: &ConnectionId) -> Result<(), StoreError> {
        self.sessions.remove(conn);
        self.store.delete_connection(conn).await
    }

    /// The session of a connection. A connection without a record (expired TTL, lost write) gets a session
    /// of its own, keyed by the connection id, rather than a failed turn.
    async fn session_of(&self, conn: &ConnectionId) -> (SessionId, UserId) {
        if let Some(v) = self.sessions.get(conn) {
            return v;
        }
        let fallback = || {
            let s = SessionId::parse(conn.as_str().replace(['=', '+'], "_")).unwrap_or_else(|_| SessionId::random());
            (s, UserId::anonymous())
        };
        // Bounded like a memory read: a throttled table must not hold the first token hostage.
        let lookup = tokio::time::timeout(self.cfg.context.memory, self.store.get_connection(conn)).await;
        let lookup = lookup.unwrap_or_else(|_| Err(StoreError::Other("connection lookup timed out".into())));
        let v = match lookup {
            Ok(Some(rec)) => (rec.session_id, rec.user_id),
            Ok(None) => {
                tracing::warn!(connection_id = %conn, "no connection record; using a connection-scoped session");
                fallback()
            }
            Err(e) => {
                tracing::error!(connection_id = %conn, error = %chain(&e), "connection lookup failed");
                fallback()
            }
        };
        self.sessions.put(conn.clone(), v.clone());
        v
    }

    /// Opens the model stream and waits for its first text delta, retrying (on the fallback model, when one
    /// is configured) while nothing has been sent. Returns the primed stream, the model that answers and
    /// when its request was sent.
    async fn open_stream(
        &self,
        base: &ModelRequest,
        plan: &[(String, Route); 2],
    ) -> Result<(Primed<M::Stream>, String, Route, u32, Instant), ModelError> {
        let attempts = self.cfg.model_attempts.clamp(1, 2);
        let mut last_err = ModelError::Timeout(0);
        let mut req = base.clone();
        for attempt in 1..=attempts {
            let (model_id, route) = &plan[attempt as usize - 1];
            let model_id = model_id.as_str();
            req.model_id.clear();
            req.model_id.push_str(model_id);
            let sent = Instant::now();
            let first = async {
                let mut stream = self.model.converse_stream(&req).await?;
                let mut head = Vec::new();
                loop {
                    match stream.next().await {
                        Some(Ok(ev @ ModelEvent::Text(_))) => {
                            head.push(ev);
                            return Ok((stream, head));
                        }
                        Some(Ok(ev)) => head.push(ev),
                        Some(Err(e)) => return Err(e),
                        None => return Ok((stream, head)),
                    }
                }
            };
            let timeout_ms = u64::try_from(self.cfg.first_token_timeout.as_millis()).unwrap_or(u64::MAX);
            match tokio::time::timeout(self.cfg.first_token_timeout, first).await {
                Ok(Ok((rest, head))) => {
                    return Ok((
                        Primed { head: head.into_iter(), rest },
                        model_id.to_owned(),
                        *route,
                        attempt - 1,
                        sent,
                    ));
                }
                Ok(Err(e)) if e.is_retryable() && attempt < attempts => {
                    tracing::warn!(attempt, model_id, error = %chain(&e), "model attempt failed before first token; retrying");
                    last_err = e;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) if attempt < attempts => {
                    tracing::warn!(attempt, model_id, timeout_ms, "no first token in time; retrying");
                    last_err = ModelError::Timeout(timeout_ms);
                }
                Err(_) => return Err(ModelError::Timeout(timeout_ms)),
            }
        }
        Err(last_err)
    }

    /// `sendMessage` (and `$default`): runs one turn. Never fails: every outcome is reported to the client
    /// as an event where possible, and returned for logging.
    pub async fn send_message<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        body: &str,
        started: Instant,
    ) -> TurnResult {
        let rcfg = &self.cfg.relay;
        let msg = match ClientMessage::parse(body) {
            Ok(m) => m,
            Err(r) => {
                let code = r.error.code();
                tracing::info!(code, error = %r.error, "rejected frame");
                send_error(sink, conn, rcfg, r.message_id.as_deref(), code, &r.error.to_string(), false).await;
                return TurnResult::Rejected(code);
            }
        };
        let ts_ms = self.clock.now_ms();
        let mid = msg.message_id.as_str();
        tracing::Span::current().record("message_id", mid);

        // Who is this (cached per warm container), then, side by side: has this message been answered
        // already, and what does the session remember?
        let (session, user) = self.session_of(conn).await;
        tracing::Span::current().record("session_id", session.as_str());
        let expires = ts_ms / 1000 + secs(self.cfg.claim_ttl);
        let claim = async {
            let deadline = self.cfg.context.memory;
            let claim = tokio::time::timeout(deadline, self.store.claim_message(&msg.message_id, &session, expires));
            claim.await.unwrap_or_else(|_| Err(StoreError::Other("message claim timed out".into())))
        };
        let ((claim, provisioned), (memory, entities, intent, asm)) = tokio::join!(
            async { tokio::join!(claim, self.routes.provisioned()) },
            self.assemble(&msg, &session, &user)
        );
        let plan = plan(provisioned.as_deref(), &self.cfg.model_id, self.cfg.fallback_model_id.as_deref());
        let claimed = match claim {
            Ok(Claim::Claimed) => true,
            Ok(Claim::Duplicate) => {
                tracing::info!(message_id = mid, "duplicate message id; not answering twice");
                let text = "this message_id has already been answered or is being answered";
                send_error(sink, conn, rcfg, Some(mid), "duplicate_message", text, false).await;
                return TurnResult::Duplicate;
            }
            Err(e) => {
                // Answer anyway: a shopper waiting beats a perfect dedupe. Logged for the alarm.
                tracing::error!(message_id = mid, error = %chain(&e), "message claim failed; answering without dedupe");
                false
            }
        };

        // Compress everything that arrived to the budget.
        let (conversation, conversation_tokens) = memory.messages();
        let notes: Vec<(&str, String)> = entities.resolved.iter().map(|p| ("refers_to", p.asin.clone())).collect();
        let input = CompressInput {
            system_prompt: SYSTEM_PROMPT,
            rag_chunks: &asm.chunks,
            conversation: &conversation,
            conversation_tokens: &conversation_tokens,
            summary: memory.summary.as_ref().map(|s| s.text.as_str()),
            page_context: &msg.page_context,
            notes: &notes,
            user_message: &msg.text,
            intent,
        };
        let metadata = vec![("message_id".to_owned(), msg.message_id.to_string())];
        let request = if self.cfg.compression {
            let budget = self.cfg.budget.calibrated(self.calibration.factor(&plan[0].0));
            match self.compressor.compress(&self.tokens, &input, &budget) {
                Ok(p) => compressed_request(&plan[0].0, &self.cfg.prompt, &p, metadata),
                Err(e) => {
                    if claimed {
                        self.release(&msg.message_id).await;
                    }
                    send_error(sink, conn, rcfg, Some(mid), "message_too_long", &e.to_string(), false).await;
                    return TurnResult::Rejected("message_too_long");
                }
            }
        } else {
            uncompressed_request(&plan[0].0, &self.cfg.prompt, &input, metadata)
        };

        let (mut stream, model, route, failovers, sent) = match self.open_stream(&request, &plan).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(message_id = mid, code = e.code(), error = %chain(&e), "model failed before first token");
                if claimed {
                    self.release(&msg.message_id).await;
                }
                let text = format!("{e}; nothing was answered, please send it again");
                send_error(sink, conn, rcfg, Some(mid), e.code(), &text, e.is_retryable()).await;
                return TurnResult::Failed(e.code());
            }
        };

        let out = relay(&mut stream, sink, conn, &msg.message_id, rcfg).await;
        drop(stream); // cancels generation if the relay stopped early

        // Off the critical path from here: what the uncompressed prompt would have cost, and what Bedrock
        // says this one cost (which calibrates the next budgets).
        let prompt_tokens = self.tokens.count(&request.system)
            + request.messages.iter().map(|m| self.tokens.count(&m.text)).sum::<usize>();
        let raw = raw_tokens(&self.tokens, &input).max(1);
        if self.tokens.is_exact() {
            self.calibration.observe(&model, prompt_tokens, out.input_tokens);
        }
        let metrics = TurnMetrics {
            first_token_ms: ms_since(started, out.first_post_at),
            model_first_token_ms: ms_since(sent, out.first_delta_at),
            total_ms: ms_since(started, out.last_post_at),
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            frames: out.frames,
            prompt_tokens: u32::try_from(prompt_tokens).unwrap_or(u32::MAX),
            raw_tokens: u32::try_from(raw).unwrap_or(u32::MAX),
            compression_ratio: prompt_tokens as f64 / raw as f64,
            intent: intent.as_str().to_owned(),
            model,
            route: route.as_str().to_owned(),
            failovers,
            assembly_ms: asm.assembly_ms,
            legs: asm.legs,
            context_errors: asm.errors.clone(),
            cache_hits: asm.cache_hits.clone(),
            cache_lookups: u32::try_from(asm.lookups).unwrap_or(u32::MAX),
        };
        let emf = self.cfg.emf.then(|| {
            let hit_rate =
                (metrics.cache_lookups > 0).then(|| metrics.cache_hits.len() as f64 / f64::from(metrics.cache_lookups));
            metrics::turn_record(&metrics, &metrics.route, ts_ms, Some(metrics.assembly_ms), hit_rate)
        });
        let products = products_in(&out.text);
        let job = PrefetchJob {
            session_id: session.to_string(),
            user_id: user.to_string(),
            message_id: msg.message_id.to_string(),
            previous_intent: memory.turns.first().and_then(|t| t.intent.clone()),
            intent: intent.as_str().to_owned(),
            products: products.iter().map(|p| p.asin.clone()).collect(),
            page_context: msg.page_context.clone(),
        };
        let (result, record) = self.finish(sink, conn, &msg, &session, ts_ms, claimed, out, products, metrics).await;
        if let (Some(emf), TurnResult::Completed(_)) = (emf, &result) {
            emf.emit();
        }
        // After the answer, side by side: fold old turns into the summary, and keep what the services
        // returned in the cache (cache-aside) for the next turn.
        let summarize = async {
            if let Some(record) = &record {
                self.maybe_summarize(&session, &memory, record).await;
            }
        };
        let prefetch = async {
            if matches!(result, TurnResult::Completed(_)) {
                self.hand_to_prefetch(&job).await;
            }
        };
        tokio::join!(summarize, self.write_back(&asm), prefetch);
        result
    }

    /// Hands the finished turn to speculative prefetch: bounded, and a failure only costs the next turn
    /// its cache hits.
    async fn hand_to_prefetch(&self, job: &PrefetchJob) {
        match tokio::time::timeout(Duration::from_secs(1), self.prefetch.enqueue(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(message_id = %job.message_id, error = %chain(&e), "prefetch not started"),
            Err(_) => tracing::warn!(message_id = %job.message_id, "prefetch hand-off timed out"),
        }
    }

    /// Context for the turn. Concurrently: retrieval (needs only the message and its intent) and memory,
    /// then the cache and product-service lookups that memory's resolved ordinals point at. With
    /// `context.sequential` (the benchmark's baseline) the same legs run one after another.
    async fn assemble(
        &self,
        msg: &ClientMessage,
        session: &SessionId,
        user: &UserId,
    ) -> (Memory, Entities, Intent, Assembled) {
        let cfg = &self.cfg.context;
        let start = Instant::now();
        let cap = start + cfg.overall;
        // The intent does not depend on what an ordinal resolves to, so classify before memory arrives.
        let early = intent::extract(&msg.text, &[]);
        let intent = intent::classify(&msg.text, &early);
        // "Tell me more about the first one": its words are useless to a text search. Its passages come
        // from the product it points at, as a (prefetchable) lookup once memory has resolved it.
        let follow_up = early.ordinal.is_some();
        let after_memory = async {
            let (memory, memory_ms) = memory_leg(cfg, cap, self.load_memory(session)).await;
            let cut = memory.is_none();
            let memory = memory.unwrap_or_default();
            let previous = memory.turns.first().map(|t| t.products.as_slice()).unwrap_or_default();
            let mut entities = early.clone();
            entities.resolve(previous);
            let mut asm = Assembled::default();
            asm.legs.memory_ms = memory_ms;
            if cut {
                asm.errors.push(format!("memory: deadline of {} ms", cfg.memory.as_millis()));
            }
            let products = focus_products(&entities, &msg.page_context, cfg.max_products);
            let mut wanted = lookups(intent, &products, user.as_str());
            if follow_up && let Some(asin) = entities.resolved.as_ref().map(|p| p.asin.clone()) {
                wanted.push(Lookup::Rag { intent, asin });
            }
            (memory, entities, asm, wanted)
        };
        let search = async {
            if follow_up {
                (Vec::new(), 0.0, None)
            } else {
                retrieval(&self.sources, cfg, cap, &msg.text, intent).await
            }
        };
        let (memory, entities, mut asm, chunks) = if cfg.sequential {
            let (memory, entities, mut asm, wanted) = after_memory.await;
            let (chunks, took, err) = search.await;
            asm.legs.retrieval_ms = took;
            asm.errors.extend(err);
            cached_lookups(&self.sources, cfg, cap, wanted, &mut asm).await;
            (memory, entities, asm, chunks)
        } else {
            let with_lookups = async {
                let (memory, entities, mut asm, wanted) = after_memory.await;
                cached_lookups(&self.sources, cfg, cap, wanted, &mut asm).await;
                (memory, entities, asm)
            };
            let ((memory, entities, mut asm), (chunks, took, err)) = tokio::join!(with_lookups, search);
            asm.legs.retrieval_ms = took;
            asm.errors.extend(err);
            (memory, entities, asm, chunks)
        };
        asm.chunks.extend(chunks);
        asm.assembly_ms = start.elapsed().as_secs_f64() * 1000.0;
        (memory, entities, intent, asm)
    }

    /// Cache-aside: what the services returned this turn goes into the cache with its TTL.
    async fn write_back(&self, asm: &Assembled) {
        let writes = asm.fetched.iter().map(|(l, v)| async move {
            let key = l.key();
            let res = tokio::time::timeout(self.cfg.context.cache, self.sources.cache_set(&key, v, l.ttl())).await;
            if !matches!(res, Ok(Ok(()))) {
                tracing::debug!(key, "cache write-back failed");
            }
        });
        futures_util::future::join_all(writes).await;
    }

    /// Recent exchanges and the summary, side by side; a failure leaves the turn without memory.
    async fn load_memory(&self, session: &SessionId) -> Memory {
        let (turns, summary) =
            tokio::join!(self.store.recent_turns(session, self.cfg.memory_turns), self.store.get_summary(session));
        let turns = turns.unwrap_or_else(|e| {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not load recent turns; answering without them");
            Vec::new()
        });
        let summary = summary.unwrap_or_else(|e| {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not load the summary");
            None
        });
        Memory { turns, summary }
    }

    /// After the answer: when enough exchanges have left the verbatim window uncovered, fold them into
    /// the session's summary with a small model. Bounded by a deadline; a failure only means the digest
    /// of older questions is used until the next try.
    async fn maybe_summarize(&self, session: &SessionId, memory: &Memory, latest: &TurnRecord) {
        let Some(model_id) = &self.cfg.summary_model_id else { return };
        let covered = memory.summary.as_ref().map_or(0, |s| s.covers_until_ms);
        let window = self.cfg.budget.verbatim_messages.div_ceil(2);
        let older: Vec<&TurnRecord> =
            std::iter::once(latest).chain(memory.turns.iter()).skip(window).filter(|t| t.ts_ms > covered).collect();
        if older.len() < self.cfg.summarize_after.max(1) {
            return;
        }
        let mut text = String::new();
        if let Some(s) = &memory.summary {
            text.push_str("Summary so far: ");
            text.push_str(&s.text);
            text.push('\n');
        }
        for t in older.iter().rev() {
            text.push_str("user: ");
            text.push_str(&t.user_text);
            text.push_str("\nassistant: ");
            text.push_str(&t.assistant_text);
            text.push('\n');
        }
        let req = ModelRequest {
            model_id: model_id.clone(),
            system: SUMMARY_PROMPT.to_owned(),
            messages: vec![ChatMessage { role: Role::User, text }],
            max_tokens: 120,
            temperature: 0.0,
            metadata: vec![("purpose".to_owned(), "summary".to_owned())],
        };
        let summary = match tokio::time::timeout(Duration::from_secs(5), self.model.complete(&req)).await {
            Ok(Ok(t)) if !t.trim().is_empty() => t.trim().to_owned(),
            Ok(Ok(_)) => return,
            Ok(Err(e)) => return tracing::warn!(session_id = %session, error = %chain(&e), "summary failed"),
            Err(_) => return tracing::warn!(session_id = %session, "summary timed out"),
        };
        let s = Summary {
            text: summary,
            covers_until_ms: older.first().map_or(covered, |t| t.ts_ms),
            expires_at: latest.expires_at,
        };
        if let Err(e) = self.store.put_summary(session, &s).await {
            tracing::warn!(session_id = %session, error = %chain(&e), "could not store the summary");
        }
    }

    /// A count worth storing: only the BPE's, never the warm-up estimate.
    fn exact_count(&self, text: &str) -> Option<u32> {
        self.tokens.is_exact().then(|| u32::try_from(self.tokens.count(text.trim())).unwrap_or(u32::MAX))
    }

    async fn release(&self, id: &MessageId) {
        if let Err(e) = self.store.release_claim(id).await {
            tracing::error!(message_id = %id, error = %chain(&e), "could not release message claim");
        }
    }

    /// After the stream: tell the client how it ended and store the turn, side by side.
    #[allow(clippy::too_many_arguments)]
    async fn finish<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        msg: &ClientMessage,
        session: &SessionId,
        ts_ms: u64,
        claimed: bool,
        out: RelayOutcome,
        products: Vec<ProductRef>,
        metrics: TurnMetrics,
    ) -> (TurnResult, Option<TurnRecord>) {
        let rcfg = &self.cfg.relay;
        let mid = msg.message_id.as_str();
        let status = match &out.end {
            RelayEnd::Completed => TurnStatus::Complete,
            RelayEnd::ClientGone => TurnStatus::ClientGone,
            RelayEnd::ModelFailed(_) | RelayEnd::SinkFailed(_) => TurnStatus::Partial,
        };
        let record = TurnRecord {
            session_id: session.clone(),
            message_id: msg.message_id.clone(),
            ts_ms,
            user_text: msg.text.clone(),
            assistant_text: out.text.clone(),
            products: products.clone(),
            intent: Some(metrics.intent.clone()),
            status,
            model: metrics.model.clone(),
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            user_tokens: self.exact_count(&msg.text),
            assistant_tokens: self.exact_count(&out.text),
            expires_at: ts_ms / 1000 + secs(self.cfg.turn_ttl),
        };
        let store = async {
            if !out.sent_anything() && status != TurnStatus::Complete {
                // Nothing reached the client: let it retry the same message id.
                if claimed {
                    self.release(&msg.message_id).await;
                }
                return false;
            }
            match self.store.save_turn(&record).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(message_id = mid, error = %chain(&e), "could not store turn");
                    false
                }
            }
        };
        let notify = async {
            match &out.end {
                RelayEnd::Completed => {
                    let ev = ServerEvent::Completed {
                        message_id: mid,
                        seq: out.frames,
                        products: &products,
                        metrics: &metrics,
                    };
                    match post_with_retry(sink, conn, Bytes::from(ev.to_frame()), rcfg).await {
                        Ok(()) | Err(SinkError::Gone) => {}
                        Err(e) => {
                            tracing::warn!(message_id = mid, error = %chain(&e), "could not deliver completed event")
                        }
                    }
                    TurnResult::Completed(Box::new(metrics.clone()))
                }
                RelayEnd::ClientGone => {
                    tracing::info!(
                        message_id = mid,
                        frames = out.frames,
                        "client left mid-answer; generation cancelled"
                    );
                    TurnResult::ClientGone
                }
                RelayEnd::ModelFailed(e) => {
                    tracing::error!(message_id = mid, code = e.code(), error = %chain(e), "model stream failed mid-answer");
                    let text = if out.sent_anything() {
                        format!("{e}; the answer above is incomplete")
                    } else {
                        format!("{e}; nothing was answered, please send it again")
                    };
                    send_error(sink, conn, rcfg, Some(mid), e.code(), &text, e.is_retryable()).await;
                    TurnResult::Failed(e.code())
                }
                RelayEnd::SinkFailed(e) => {
                    tracing::error!(message_id = mid, error = %chain(e), "posting to the client failed");
                    TurnResult::Failed("delivery_failed")
                }
            }
        };
        let (stored, result) = tokio::join!(store, notify);
        tracing::info!(
            message_id = mid,
            session_id = %session,
            status = status.as_str(),
            first_token_ms = metrics.first_token_ms,
            model_first_token_ms = metrics.model_first_token_ms,
            total_ms = metrics.total_ms,
            input_tokens = metrics.input_tokens,
            output_tokens = metrics.output_tokens,
            frames = metrics.frames,
            model = %metrics.model,
            prompt_tokens = metrics.prompt_tokens,
            raw_tokens = metrics.raw_tokens,
            compression_ratio = metrics.compression_ratio,
            intent = %metrics.intent,
            route = %metrics.route,
            failovers = metrics.failovers,
            assembly_ms = metrics.assembly_ms,
            context_errors = ?metrics.context_errors,
            cache_hits = metrics.cache_hits.len(),
            "turn finished"
        );
        (result, stored.then_some(record))
    }
}
