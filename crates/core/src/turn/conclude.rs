//! Step 6 of the turn, conclude: the metrics built once, the stored record beside the event that ends the
//! turn for the client ([`Engine::end`]), then what outlives the stream, awaited before the handler returns
//! (Lambda freezes afterwards): the EMF record, the summary, the cache write-back, the mark on a served
//! pre-generated answer and the prefetch hand-off.

use super::compose::Composed;
use super::end::Ending;
use super::open::Turn;
use super::ready::Ready;
use super::{Engine, Spent, TurnResult};
use crate::admit::metered::Metered;
use crate::admit::session::Memory;
use crate::ahead::prefetch::{Exchange, PrefetchJob, PrefetchQueue};
use crate::ahead::speculate;
use crate::answer::cards::vouched_page_asins;
use crate::answer::relay::{RelayEnd, RelayOutcome};
use crate::answer::serve::{Serving, Streamed};
use crate::cache::CacheKey;
use crate::clock::{Clock, CpuMeter};
use crate::deadline::best_effort;
use crate::error::{chain, retry_store};
use crate::gather::recall::Recall;
use crate::gather::summary::maybe_summarize;
use crate::gather::{Assembler, Gathered};
use crate::ids::Asin;
use crate::metrics;
use crate::ports::sources::ContextSources;
use crate::ports::{ConnectionSink, ModelClient, Store, TurnRecord, TurnStatus};
use crate::pregen::{Ask, PregenEntry};
use crate::protocol::{Leg, ProductRef, Served, TurnMetrics};
use crate::safety::{Direction, KnownProducts, policy_list, retract_message};

/// What became of a finished turn's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    Kept,
    /// Nothing reached the client: nothing to store (the claim was given back).
    Skipped,
    /// The store refused it after every attempt (logged with its ids, counted in EMF).
    Failed,
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// Concludes a streamed turn: metrics, record, store and the last event, then the work that outlives it.
    pub(super) async fn conclude<S: ConnectionSink>(
        &self,
        sink: &S,
        turn: &Turn,
        ready: Ready,
        composed: Composed,
        streamed: Streamed,
        cpu: Option<CpuMeter>,
    ) -> (TurnResult, Spent) {
        let Ready { hold, gathered, question, .. } = ready;
        let Streamed { out, model, route, failovers, model_first_token_ms, served, ahead_ms, hedge } = streamed;
        let status = match &out.end {
            RelayEnd::Completed => TurnStatus::Complete,
            RelayEnd::ClientGone => TurnStatus::ClientGone,
            RelayEnd::ModelFailed(_) | RelayEnd::SinkFailed(_) => TurnStatus::Partial,
            RelayEnd::Retracted => TurnStatus::Blocked,
        };
        // The products the answer names that this turn's context holds (an ASIN the model invented gets no
        // card, and is counted); an answer about "the first one" that names it only by title is about that
        // product. A stopped answer names none.
        let (products, unknown_asins) = if status == TurnStatus::Blocked {
            (Vec::new(), 0)
        } else {
            let (sources, deadline) = (&self.sources, self.cfg.context.services);
            let page =
                Box::pin(vouched_page_asins(sources, &turn.msg.page_context, &gathered, &out.text, deadline)).await;
            let (mut kept, unknown) = known_products(&gathered, &page).keep(Asin::all_in(&out.text));
            if kept.is_empty() {
                kept.extend(gathered.entities.resolved.iter().cloned());
            }
            (kept, unknown)
        };
        if unknown_asins > 0 {
            tracing::warn!(unknown = unknown_asins, "the answer named products its context did not hold");
        }

        // Counting the prompt as sent and uncompressed is off the critical path: the answer has streamed.
        let input = composed.parts.input(&question, &turn.msg.page_context, &gathered);
        let (prompt_tokens, raw_tokens) = self.prompter.account(&composed.request, &input, &model, out.input_tokens);
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
            max_tokens: composed.choice.max_tokens,
            frames: out.frames,
            prompt_tokens,
            raw_tokens,
            compression_ratio: f64::from(prompt_tokens) / f64::from(raw_tokens.max(1)),
            intent: gathered.intent,
            model: crate::models::ModelId::client_name_of(&model, &composed.choice.model_id),
            served_by: model,
            route,
            failovers,
            assembly_ms: gathered.context.assembly_ms,
            compress_ms: composed.compress_ms,
            relay_ms: out.first_delta_at.map_or(0.0, |d| ms_since(d, out.first_post_at)),
            legs: gathered.context.legs,
            context_errors: gathered.context.errors.clone(),
            cache_hits: gathered.context.cache_hits.clone(),
            cache_lookups: u32::try_from(gathered.context.lookups).unwrap_or(u32::MAX),
            served,
            unknown_asins,
            speculated_legs: gathered.context.speculated.clone(),
            ahead_ms,
            hedge_started: hedge.started,
            hedged: hedge.won,
            // The loser's input (the same prompt); its output is nothing we saw.
            hedge_extra_tokens: if hedge.loser_cancelled { prompt_tokens } else { 0 },
            // Up to here: the completed event that carries it is posted next.
            cpu_us: cpu.and_then(|c| c.used()).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        };
        let record = self.record(turn, &question, &out, status, &products, &metrics);

        // Nothing reached the client and nothing is stored: the claim goes back before it is told.
        let nothing_sent = !out.sent_anything() && !status.settles_claim();
        let cards: Vec<ProductRef> = products.into_iter().map(|asin| ProductRef { asin }).collect();
        // The steps after the answer are boxed: built inline, each state machine passes through this one's
        // stack frame, and in a debug build their sum overflowed a 2 MiB thread stack (a test thread's).
        let store = Box::pin(self.store_turn(turn, &gathered.memory, &record, nothing_sent));
        let ending = Ending::Streamed { out: &out, products: &cards, metrics: &metrics, claim_back: nothing_sent };
        let end = Box::pin(self.end(sink, turn, hold, ending));
        let (stored, result) = if status == TurnStatus::Partial {
            // Storing a partial turn gives its claim back: done before the error, which invites a resend.
            let stored = store.await;
            (stored, end.await)
        } else {
            tokio::join!(store, end)
        };
        if status == TurnStatus::Blocked {
            let policies = out.guardrail.as_ref().map(|a| a.policies.clone()).unwrap_or_default();
            tracing::warn!(policies = ?policies, frames = out.frames, "the guardrail stopped the answer; retracted");
            self.metrics
                .record_all(metrics::guardrail_record(self.clock.now_ms(), Direction::Output, &policies).records());
        }
        log_turn(&metrics, status);
        Box::pin(self.after_answer(turn, &gathered, &result, &record, stored, &composed.serving)).await;
        // A typed-ahead or pre-generated answer's tokens were counted against the user's day when they were
        // generated (the turn reports them all the same).
        let tokens = if served == Served::Pregen {
            0
        } else if served == Served::TypedAhead {
            self.metrics.record(&metrics::typed_ahead_record(
                self.clock.now_ms(),
                "served",
                record.input_tokens,
                record.output_tokens,
            ));
            0
        } else {
            u64::from(record.input_tokens) + u64::from(record.output_tokens)
        };
        (result, Spent { tokens, store_failed: stored == Stored::Failed })
    }

    /// The stored turn: what the client saw (or, when the guardrail stopped it, what it was shown instead).
    fn record(
        &self,
        turn: &Turn,
        question: &str,
        out: &RelayOutcome,
        status: TurnStatus,
        products: &[Asin],
        metrics: &TurnMetrics,
    ) -> TurnRecord {
        let (assistant_text, guardrail) = match status {
            TurnStatus::Blocked => {
                let policies = out.guardrail.as_ref().map(|a| policy_list(&a.policies)).unwrap_or_default();
                (retract_message(turn.japanese).to_owned(), Some(format!("output:{policies}")))
            }
            _ => (out.text.clone(), None),
        };
        TurnRecord {
            session_id: turn.session.clone(),
            message_id: turn.msg.message_id.clone(),
            ts_ms: turn.ts_ms,
            user_text: question.to_owned(),
            user_tokens: self.prompter.exact_count(question),
            assistant_tokens: self.prompter.exact_count(&assistant_text),
            assistant_text,
            products: products.to_vec(),
            intent: Some(metrics.intent),
            status,
            model: metrics.served_by.clone(),
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            guardrail,
            expires_at: turn.ts_ms / 1000 + self.cfg.turn_ttl.as_secs(),
        }
    }

    /// Stores the turn (retried with backoff) and marks the session's memory changed; `Skipped` when
    /// nothing reached the client.
    async fn store_turn(&self, turn: &Turn, memory: &Memory, record: &TurnRecord, nothing_sent: bool) -> Stored {
        if nothing_sent {
            return Stored::Skipped;
        }
        match retry_store("turn", self.cfg.store_attempts, || self.store.save_turn(record)).await {
            Ok(()) => {
                // Before the connection's next message is admitted: no speculation's copy of the memory from
                // before this turn counts as current any more.
                self.memory_changed(turn, "t", memory, record).await;
                Stored::Kept
            }
            Err(e) => {
                // Reported, never silent: the ids to find the answer in the log, and an EMF count.
                tracing::error!(
                    session_id = %record.session_id,
                    message_id = %record.message_id,
                    status = record.status.as_str(),
                    code = e.code(),
                    error = %chain(&e),
                    output_tokens = record.output_tokens,
                    "TURN NOT STORED after every attempt"
                );
                Stored::Failed
            }
        }
    }

    /// What outlives the stream, awaited before the handler returns (Lambda freezes afterwards): the EMF
    /// record of a completed turn, and side by side the summary (when the turn was stored), the cache
    /// write-back, the mark on a served pre-generated answer, and the prefetch hand-off (when it completed).
    async fn after_answer(
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
        if let Some(m) = completed {
            let lookups = f64::from(m.cache_lookups);
            let hit_rate = (lookups > 0.0).then(|| m.cache_hits.len() as f64 / lookups);
            // Of the overview requests a pre-generated answer could have served: served or not.
            let overview = matches!(gathered.context.ask, Some(Ask::Overview(_))) && self.cfg.pregen.mode.is_on();
            let pregen_hit = overview.then(|| f64::from(u8::from(matches!(serving, Serving::Pregen(_)))));
            let mut emf = metrics::turn_record(m, turn.ts_ms, Some(m.assembly_ms), hit_rate, pregen_hit);
            if self.cfg.speculation.enabled {
                // A hit: the speculation fitted the message (its context legs served it), not only its memory.
                let hit = f64::from(u8::from(m.speculated_legs.iter().any(|l| *l != Leg::Memory)));
                emf = emf.metric(metrics::SPECULATION_HIT, hit, metrics::Unit::None);
            }
            self.metrics.record(&emf);
            if m.hedge_started {
                self.metrics.record(&metrics::hedge_record(turn.ts_ms, m.hedged, m.hedge_extra_tokens));
            }
        }
        let summarize = async {
            // A turn the guardrail stopped is not summarized (nor handed to prefetch: it did not complete).
            if stored == Stored::Kept && record.status != TurnStatus::Blocked {
                let (cfg, memory) = (&self.cfg.summary, &gathered.memory);
                // The summary is the shopper's work too: its tokens count against their day.
                let model = Metered::new(&self.model);
                if maybe_summarize(&model, &self.store, cfg, &turn.session, memory, record).await {
                    self.memory_changed(turn, "s", memory, record).await;
                }
                self.limiter().spend(&turn.who, model.tokens()).await;
            }
        };
        let mark_served = async {
            if let (Serving::Pregen(entry), Some(Ask::Overview(asin))) = (serving, &gathered.context.ask) {
                let key = CacheKey::Pregen(turn.session.clone(), asin.clone()).render();
                let served = PregenEntry { served: true, ..entry.clone() }.encode();
                let set = self.sources.cache_set(&key, &served, self.cfg.pregen.ttl);
                if best_effort("pregen mark", self.cfg.context.cache, set).await.is_none() {
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
        let write_back = assembler.write_back(&gathered.context);
        tokio::join!(Box::pin(summarize), Box::pin(write_back), Box::pin(mark_served), Box::pin(prefetch));
    }

    /// A turn or summary of the session was stored: a new memory epoch marker ([`speculate::mark_stored`]),
    /// with what the next follow-up resolves against: the memory this turn read with its own record in front.
    async fn memory_changed(&self, turn: &Turn, what: &str, memory: &Memory, record: &TurnRecord) {
        let marker = format!("{what}.{}.{}", turn.msg.message_id, self.clock.now_ms());
        let (sources, cfg) = (&self.sources, &self.cfg);
        let window = usize::try_from(cfg.context.memory_turns).unwrap_or(usize::MAX);
        let turns = std::iter::once(record).chain(&memory.turns).take(window);
        let recall = Some(Recall::of(turns));
        speculate::mark_stored(sources, cfg.context.cache, &cfg.speculation, &turn.session, &marker, recall).await;
    }

    /// What the prefetch worker needs to predict, prefetch and pre-generate the next turn: this exchange
    /// and the ones the next prompt keeps verbatim, the summary, the products of this answer and the last.
    fn prefetch_job(&self, turn: &Turn, gathered: &Gathered, record: &TurnRecord) -> PrefetchJob {
        let (user, assistant) = (&record.user_text, record.assistant_text.clone());
        PrefetchJob {
            pregenerated: self.pregenerates(gathered.intent),
            ..self.prefetch_job_for(turn, gathered, user, assistant, record.products.clone())
        }
    }

    /// A prefetch job for this turn, its exchange being `user` and `assistant` naming `products`.
    pub(super) fn prefetch_job_for(
        &self,
        turn: &Turn,
        gathered: &Gathered,
        user: &str,
        assistant: String,
        products: Vec<Asin>,
    ) -> PrefetchJob {
        let memory = &gathered.memory;
        let keep = self.cfg.summary.verbatim_exchanges.saturating_sub(1);
        let mut history: Vec<Exchange> = memory
            .turns
            .iter()
            .take(keep)
            .rev()
            .map(|t| Exchange { user: t.user_text.clone(), assistant: t.assistant_text.clone() })
            .collect();
        history.push(Exchange { user: user.to_owned(), assistant });
        PrefetchJob {
            session_id: turn.session.clone(),
            user_id: turn.who.user.clone(),
            guest: turn.who.guest,
            message_id: turn.msg.message_id.clone(),
            previous_intent: memory.previous_intent(),
            intent: gathered.intent,
            products,
            page_context: turn.msg.page_context.clone(),
            history,
            summary: memory.summary.as_ref().map(|s| s.text.clone()),
            previous_products: memory.previous_products().to_vec(),
            pregenerated: false,
        }
    }

    /// Hands the finished turn to speculative prefetch: bounded, and a failure only costs the next turn
    /// its cache hits.
    async fn hand_to_prefetch(&self, job: &PrefetchJob) {
        best_effort("prefetch hand-off", self.cfg.prefetch_handoff, self.prefetch.enqueue(job)).await;
    }
}

/// The products this turn's context holds: retrieved passages and service data, the page-context products
/// that exist (`page`: [`vouched_page_asins`]), the products of earlier answers, the product an ordinal
/// resolved to. The shopper's own words do not count: typing an ASIN does not make it a product.
pub(super) fn known_products(gathered: &Gathered, page: &[Asin]) -> KnownProducts {
    let mut known = KnownProducts::default();
    for p in &gathered.context.passages {
        known.add_all_in(&p.content);
    }
    for (_, value) in &gathered.context.values {
        known.add_all_in(value);
    }
    for a in page {
        known.add(a.as_str());
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

fn ms_since(from: tokio::time::Instant, to: Option<tokio::time::Instant>) -> f64 {
    to.map_or(0.0, |t| t.saturating_duration_since(from).as_secs_f64() * 1000.0)
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
