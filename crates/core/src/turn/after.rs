//! Step 5 of the turn, after the stream: the event that ends it for the client and the stored turn, side
//! by side; then what outlives the stream (EMF, summary, cache write-back, the mark on a served
//! pre-generated answer, the prefetch hand-off), awaited before the handler returns.

use bytes::Bytes;

use super::{Engine, Turn, TurnResult, send_error};
use crate::clock::Clock;
use crate::context::{Assembler, Gathered};
use crate::deadline::within;
use crate::error::{SinkError, chain, retry_store};
use crate::ids::{Asin, ConnectionId};
use crate::metrics;
use crate::ports::{ConnectionSink, ModelClient, Store, TurnRecord, TurnStatus};
use crate::prefetch::{Exchange, PrefetchJob, PrefetchQueue};
use crate::pregen::{Ask, PregenEntry};
use crate::protocol::{ProductRef, ServerEvent, TurnMetrics};
use crate::relay::{RelayEnd, RelayOutcome, post_with_retry};
use crate::safety::{Direction, KnownProducts, is_japanese, page_asins, retract_message};
use crate::serve::Serving;
use crate::sources::ContextSources;
use crate::speculate;
use crate::summary::maybe_summarize;

/// What became of a finished turn's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    Kept,
    /// Nothing reached the client: nothing to store (the claim was given back).
    Skipped,
    /// The store refused it after every attempt (logged with its ids, counted in EMF).
    Failed,
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// After the stream: tell the client how it ended and store the turn, side by side.
    pub(super) async fn finish<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        turn: &Turn,
        out: RelayOutcome,
        mut metrics: TurnMetrics,
        gathered: &Gathered,
    ) -> (TurnResult, TurnRecord, Stored) {
        let status = match &out.end {
            RelayEnd::Completed => TurnStatus::Complete,
            RelayEnd::ClientGone => TurnStatus::ClientGone,
            RelayEnd::ModelFailed(_) | RelayEnd::SinkFailed(_) => TurnStatus::Partial,
            RelayEnd::Retracted => TurnStatus::Blocked,
        };
        // The products the answer names that this turn's context holds (an ASIN the model invented gets no
        // card, and is counted); an answer about "the first one" that names it only by title is about that
        // product. A stopped answer names none.
        let about = gathered.entities.resolved.as_ref();
        let mut products = Vec::new();
        if status != TurnStatus::Blocked {
            let (kept, unknown) = known_products(turn, gathered).keep(Asin::all_in(&out.text));
            metrics.unknown_asins = unknown;
            products = kept;
            if products.is_empty() {
                products.extend(about.cloned());
            }
        }
        if metrics.unknown_asins > 0 {
            tracing::warn!(unknown = metrics.unknown_asins, "the answer named products its context did not hold");
        }
        let japanese = is_japanese(&turn.msg.text);
        let (assistant_text, guardrail) = match status {
            TurnStatus::Blocked => {
                let policies = out.guardrail.as_ref().map(|a| a.policies.join(",")).unwrap_or_default();
                (retract_message(japanese).to_owned(), Some(format!("output:{policies}")))
            }
            _ => (out.text.clone(), None),
        };
        let record = TurnRecord {
            session_id: turn.session.clone(),
            message_id: turn.msg.message_id.clone(),
            ts_ms: turn.ts_ms,
            user_text: turn.msg.text.clone(),
            assistant_text: assistant_text.clone(),
            products: products.clone(),
            intent: Some(metrics.intent),
            status,
            model: metrics.served_by.clone(),
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            user_tokens: self.prompter.exact_count(&turn.msg.text),
            assistant_tokens: self.prompter.exact_count(&assistant_text),
            guardrail,
            expires_at: turn.ts_ms / 1000 + self.cfg.turn_ttl.as_secs(),
        };
        // Nothing reached the client: give the claim back before telling it, so it may resend the same id
        // the moment it reads the error.
        let nothing_sent = !out.sent_anything() && !status.settles_claim();
        if nothing_sent && turn.claimed {
            self.release(turn).await;
        }
        let store = async {
            if nothing_sent {
                return Stored::Skipped;
            }
            let saved = retry_store("turn", self.cfg.store_attempts, || self.store.save_turn(&record)).await;
            if saved.is_ok() {
                // Before the connection's next message is admitted: no speculation's copy of the memory
                // from before this turn counts as current any more.
                self.memory_changed(turn, "t").await;
            }
            match saved {
                Ok(()) => Stored::Kept,
                Err(e) => {
                    // Reported, never silent: the ids to find the answer in the log, and an EMF count.
                    tracing::error!(
                        session_id = %record.session_id,
                        message_id = %record.message_id,
                        status = status.as_str(),
                        code = e.code(),
                        error = %chain(&e),
                        output_tokens = record.output_tokens,
                        "TURN NOT STORED after every attempt"
                    );
                    Stored::Failed
                }
            }
        };
        let cards: Vec<ProductRef> = products.into_iter().map(|asin| ProductRef { asin }).collect();
        let notify = self.notify(sink, conn, turn, &out, &cards, &metrics);
        let (stored, result) = if status == TurnStatus::Partial {
            // Storing a partial turn gives its claim back: done before the error, which invites a resend.
            let stored = store.await;
            (stored, notify.await)
        } else {
            tokio::join!(store, notify)
        };
        if status == TurnStatus::Blocked {
            let policies = out.guardrail.as_ref().map(|a| a.policies.clone()).unwrap_or_default();
            tracing::warn!(policies = ?policies, frames = out.frames, "the guardrail stopped the answer; retracted");
            if self.cfg.emf {
                metrics::guardrail_record(self.clock.now_ms(), Direction::Output, &policies).emit();
            }
        }
        log_turn(&metrics, status);
        (result, record, stored)
    }

    /// The event that ends the turn for the client: `completed`, or a typed `error`.
    async fn notify<S: ConnectionSink>(
        &self,
        sink: &S,
        conn: &ConnectionId,
        turn: &Turn,
        out: &RelayOutcome,
        products: &[ProductRef],
        metrics: &TurnMetrics,
    ) -> TurnResult {
        let rcfg = &self.cfg.relay;
        let mid = turn.msg.message_id.as_str();
        // The stream is over: the connection may send its next message from the moment it hears so.
        self.free_slot(conn, turn).await;
        match &out.end {
            RelayEnd::Completed => {
                let ev = ServerEvent::Completed { message_id: mid, seq: out.frames, products, metrics };
                match post_with_retry(sink, conn, Bytes::from(ev.to_frame()), rcfg).await {
                    Ok(()) | Err(SinkError::Gone) => {}
                    Err(e) => tracing::warn!(error = %chain(&e), "could not deliver completed event"),
                }
                TurnResult::Completed(Box::new(metrics.clone()))
            }
            RelayEnd::ClientGone => {
                tracing::info!(frames = out.frames, "client left mid-answer; generation cancelled");
                TurnResult::ClientGone
            }
            RelayEnd::ModelFailed(e) => {
                tracing::error!(code = e.code(), error = %chain(e), "model stream failed mid-answer");
                let text = if out.sent_anything() {
                    format!("{}; the answer above is incomplete, you may send the message again", e.client_message())
                } else {
                    format!("{}; nothing was answered, please send it again", e.client_message())
                };
                send_error(sink, conn, rcfg, Some(mid), e.code(), &text, e.is_retryable()).await;
                TurnResult::Failed(e.code())
            }
            RelayEnd::SinkFailed(e) => {
                tracing::error!(error = %chain(e), "posting to the client failed");
                TurnResult::Failed("delivery_failed")
            }
            RelayEnd::Retracted => {
                // After the last delta: the client replaces what it showed for this message.
                let message = retract_message(crate::safety::is_japanese(&turn.msg.text));
                let ev = ServerEvent::Retract { message_id: mid, seq: out.frames, message };
                match post_with_retry(sink, conn, Bytes::from(ev.to_frame()), rcfg).await {
                    Ok(()) | Err(SinkError::Gone) => {}
                    Err(e) => tracing::warn!(error = %chain(&e), "could not deliver the retract event"),
                }
                TurnResult::Blocked(Direction::Output)
            }
        }
    }

    /// What outlives the stream, awaited before the handler returns (Lambda freezes afterwards): the EMF
    /// record of a completed turn, and side by side the summary (when the turn was stored), the cache
    /// write-back, the mark on a served pre-generated answer, and the prefetch hand-off (when it completed).
    pub(super) async fn after_answer(
        &self,
        turn: &Turn,
        gathered: &Gathered,
        result: &TurnResult,
        record: &TurnRecord,
        stored: Stored,
        serving: &Serving,
    ) {
        let completed = match result {
            TurnResult::Completed(m) => Some(m),
            _ => None,
        };
        if let (true, Some(m)) = (self.cfg.emf, completed) {
            let lookups = f64::from(m.cache_lookups);
            let hit_rate = (lookups > 0.0).then(|| m.cache_hits.len() as f64 / lookups);
            // Of the overview requests a pre-generated answer could have served: served or not.
            let overview = matches!(gathered.context.ask, Some(Ask::Overview(_))) && self.cfg.pregen.mode.is_on();
            let pregen_hit = overview.then(|| f64::from(u8::from(matches!(serving, Serving::Pregen(_)))));
            let mut record = metrics::turn_record(m, turn.ts_ms, Some(m.assembly_ms), hit_rate, pregen_hit);
            if self.cfg.speculation.enabled {
                // A hit: the speculation fitted the message (its context legs served it), not only its memory.
                let hit = f64::from(u8::from(m.speculated_legs.iter().any(|l| *l != "memory")));
                record = record.metric(metrics::SPECULATION_HIT, hit, metrics::Unit::None);
            }
            record.emit();
        }
        let summarize = async {
            // A turn the guardrail stopped is not summarized (nor handed to prefetch: it did not complete).
            if stored == Stored::Kept && record.status != TurnStatus::Blocked {
                let (cfg, memory) = (&self.cfg.summary, &gathered.memory);
                if maybe_summarize(&self.model, &self.store, cfg, &turn.session, memory, record).await {
                    self.memory_changed(turn, "s").await;
                }
            }
        };
        let mark_served = async {
            if let (Serving::Pregen(entry), Some(Ask::Overview(asin))) = (serving, &gathered.context.ask) {
                let key = PregenEntry::key(&turn.session, asin);
                let served = PregenEntry { served: true, ..entry.clone() }.encode();
                let set = self.sources.cache_set(&key, &served, self.cfg.pregen.ttl);
                if !matches!(within("pregen mark", self.cfg.context.cache, set).await, Ok(Ok(()))) {
                    tracing::debug!(key, "could not mark the pre-generated answer served");
                }
            }
        };
        let prefetch = async {
            if completed.is_some() {
                self.hand_to_prefetch(&self.prefetch_job(turn, gathered, record)).await;
            }
        };
        let assembler = Assembler { sources: &self.sources, store: &self.store, cfg: &self.cfg.context };
        tokio::join!(summarize, assembler.write_back(&gathered.context), mark_served, prefetch);
    }

    /// A turn or summary of the session was stored: a new memory epoch marker ([`speculate::mark_stored`]).
    async fn memory_changed(&self, turn: &Turn, what: &str) {
        let marker = format!("{what}.{}.{}", turn.msg.message_id, self.clock.now_ms());
        let (sources, cfg) = (&self.sources, &self.cfg);
        speculate::mark_stored(sources, cfg.context.cache, &cfg.speculation, &turn.session, &marker).await;
    }

    /// What the prefetch worker needs to predict, prefetch and pre-generate the next turn: this exchange
    /// and the ones the next prompt keeps verbatim, the summary, the products of this answer and the last.
    fn prefetch_job(&self, turn: &Turn, gathered: &Gathered, record: &TurnRecord) -> PrefetchJob {
        let memory = &gathered.memory;
        let keep = self.cfg.summary.verbatim_exchanges.saturating_sub(1);
        let mut history: Vec<Exchange> = memory
            .turns
            .iter()
            .take(keep)
            .rev()
            .map(|t| Exchange { user: t.user_text.clone(), assistant: t.assistant_text.clone() })
            .collect();
        history.push(Exchange { user: record.user_text.clone(), assistant: record.assistant_text.clone() });
        PrefetchJob {
            session_id: turn.session.clone(),
            user_id: turn.who.user.clone(),
            message_id: turn.msg.message_id.clone(),
            previous_intent: memory.previous_intent(),
            intent: gathered.intent,
            products: record.products.clone(),
            page_context: turn.msg.page_context.clone(),
            history,
            summary: memory.summary.as_ref().map(|s| s.text.clone()),
            previous_products: memory.previous_products().to_vec(),
        }
    }

    /// Hands the finished turn to speculative prefetch: bounded, and a failure only costs the next turn
    /// its cache hits.
    async fn hand_to_prefetch(&self, job: &PrefetchJob) {
        match within("prefetch hand-off", self.cfg.prefetch_handoff, self.prefetch.enqueue(job)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %chain(&e), "prefetch not started"),
            Err(e) => tracing::warn!(error = %e, "prefetch hand-off timed out"),
        }
    }
}

/// The products this turn's context holds: retrieved passages and service data, the page context, the
/// products of earlier answers, the product an ordinal resolved to. The shopper's own words do not count:
/// typing an ASIN does not make it a product.
fn known_products(turn: &Turn, gathered: &Gathered) -> KnownProducts {
    let mut known = KnownProducts::default();
    for p in &gathered.context.passages {
        known.add_all_in(&p.content);
    }
    for (_, value) in &gathered.context.values {
        known.add_all_in(value);
    }
    for a in page_asins(&turn.msg.page_context) {
        known.add(a);
    }
    for t in &gathered.memory.turns {
        for a in &t.products {
            known.add(a.as_str());
        }
    }
    if let Some(a) = &gathered.entities.resolved {
        known.add(a.as_str());
    }
    known
}

/// The one log line of a finished turn, with its figures.
fn log_turn(metrics: &TurnMetrics, status: TurnStatus) {
    tracing::info!(
        status = status.as_str(),
        first_token_ms = metrics.first_token_ms,
        model_first_token_ms = metrics.model_first_token_ms,
        total_ms = metrics.total_ms,
        input_tokens = metrics.input_tokens,
        output_tokens = metrics.output_tokens,
        frames = metrics.frames,
        model = %metrics.served_by,
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
}
