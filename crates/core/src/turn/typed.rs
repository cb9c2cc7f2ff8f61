//! The typing step's second half: answering a settled partial ahead ([`crate::ahead::typed`]). The request is
//! composed exactly as the turn composes it (same intent model, compressor, prompt, guardrail, routes), the
//! generation is made the session's in the answer buffer, and the model's events are appended as they
//! arrive until the answer ends, or until the buffer says the generation is no longer wanted (a newer
//! partial replaced it, or the message sent was another): then the model stream is dropped, which stops it.
//!
//! Bounded: a per-user rate and a per-message ceiling (store counters, refused when they cannot be read:
//! this is optional work), the turn's own deadline, and every token generated counts against the user's
//! daily budget at once, served or not.

use tokio::time::Instant;

use super::Engine;
use super::compose::Asked;
use crate::admit::session::Principal;
use crate::ahead::prefetch::PrefetchQueue;
use crate::ahead::typed::{AnswerBasis, finished_usage, per_message_counter, per_minute_counter, verdict_key};
use crate::answer::routes::open_stream;
use crate::answer::serve::Serving;
use crate::clock::Clock;
use crate::deadline::within;
use crate::gather::Gathered;
use crate::ids::{ConnectionId, SessionId};
use crate::metrics;
use crate::ports::answers::{AnswerBuffer, Buffered, GenerationHead};
use crate::ports::sources::ContextSources;
use crate::ports::{ModelClient, ModelEvent, ModelStream, Store};
use crate::protocol::PageContext;
use crate::safety::{GuardrailRef, InputVerdict};

/// A settled partial, with what the typing step gathered for it.
pub(super) struct Partial<'a> {
    pub conn: &'a ConnectionId,
    pub session: &'a SessionId,
    pub who: &'a Principal,
    pub text: &'a str,
    pub page: &'a PageContext,
    pub gathered: &'a Gathered,
    /// The input guardrail's verdict on exactly this text (`None`: none configured, or the check failed).
    pub verdict: Option<&'a InputVerdict>,
    /// The memory epoch marker read before memory (`None`: the read failed).
    pub epoch: &'a Option<Option<String>>,
}

/// How an answer ahead ended, for the log and the metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ahead {
    /// Not started: no buffer, unchecked input, a budget, or a pre-generated answer would serve it.
    Skipped(&'static str),
    /// Written to the end.
    Answered,
    /// The buffer said stop (replaced or cancelled).
    Stopped,
    /// The model failed.
    Failed,
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// Answers `p` ahead into the session's answer buffer.
    pub(super) async fn answer_ahead(&self, p: Partial<'_>) -> Ahead {
        let buffer = self.sources.answers();
        if !buffer.supported() {
            return Ahead::Skipped("no answer buffer");
        }
        let Some(epoch) = p.epoch else { return Ahead::Skipped("memory epoch unknown") };
        // With an input guardrail, only a partial it checked (and did not block) is answered ahead.
        let guardrail = self.cfg.safety.input.as_ref().map(GuardrailRef::name);
        let (question, verdict) = match (&guardrail, p.verdict) {
            (None, _) => (p.text.to_owned(), verdict_key(None, None)),
            (Some(_), None) => return Ahead::Skipped("input unchecked"),
            (Some(_), Some(v)) if v.blocked => return Ahead::Skipped("input blocked"),
            (Some(g), Some(v)) => match &v.masked {
                Some(m) => (m.clone(), verdict_key(Some(g), Some(m))),
                None => (p.text.to_owned(), verdict_key(Some(g), None)),
            },
        };
        let provisioned = self.routes.provisioned().await;
        let priority = self.routes.priority_tier_now(&self.cfg.models.for_intent(p.gathered.intent).model_id).await;
        let id = format!("{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
        let request_id = format!("typed-{id}");
        let asked = Asked {
            request_id: &request_id,
            text: p.text,
            page: p.page,
            question: &question,
            gathered: p.gathered,
            provisioned: provisioned.as_deref(),
            priority,
            verdict: &verdict,
            epoch: p.epoch,
        };
        let composed = match self.compose(&asked) {
            Ok(c) if c.serving == Serving::Model => c,
            Ok(_) => return Ahead::Skipped("a pre-generated answer fits"),
            Err(_) => return Ahead::Skipped("over the message budget"),
        };
        if let Err(over) = self.admit_answer_ahead(p.conn, p.who, epoch.as_deref()).await {
            self.record_ahead("refused", 0, 0);
            tracing::debug!(over, chars = p.text.chars().count(), "answer ahead refused by its budget");
            return Ahead::Skipped("over a typed-ahead budget");
        }
        let model = composed.choice.model_id.clone();
        let basis = AnswerBasis::new(p.text, p.page, epoch.clone(), verdict, &model).key();
        let head = GenerationHead { id, basis, model, started_at_ms: self.clock.now_ms() };
        match within("typed-ahead begin", self.cfg.context.cache, buffer.begin(p.session, &head, self.cfg.typed.ttl))
            .await
        {
            Ok(Ok(replaced)) => {
                if let Some(old) = replaced {
                    // A finished one nobody claimed is waste; a running one counts its own when told to stop.
                    let cache = self.cfg.context.cache;
                    if let Some((input, output)) = finished_usage(buffer, p.session, &old.id, cache).await {
                        self.record_ahead("wasted", input, output);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::chain(&e), "could not start a typed-ahead generation");
                return Ahead::Skipped("answer buffer unavailable");
            }
            Err(_) => return Ahead::Skipped("answer buffer timed out"),
        }
        self.record_ahead("started", 0, 0);
        let estimate = u32::try_from(self.prompter.sent_tokens(&composed.request)).unwrap_or(u32::MAX);
        let deadline = Instant::now() + self.cfg.turn_deadline.min(self.cfg.typed.ttl);
        let (outcome, input, output) = self.pump(p.session, &head, &composed, deadline, estimate).await;
        let spent = u64::from(input) + u64::from(output);
        self.limiter().spend(p.who, spent).await;
        match outcome {
            Ahead::Stopped => self.record_ahead("stopped", input, output),
            Ahead::Failed => self.record_ahead("failed", input, output),
            _ => {}
        }
        tracing::info!(generation = head.id, ?outcome, input, output, "typed-ahead generation");
        outcome
    }

    /// Counts one generation against the user's per-minute and the connection's per-message budgets, both
    /// in the store; `Err` names the budget that refused (or `unavailable`: a count could not be read).
    async fn admit_answer_ahead(
        &self,
        conn: &ConnectionId,
        who: &Principal,
        epoch: Option<&str>,
    ) -> Result<(), &'static str> {
        let now = self.clock.now_ms();
        let cfg = &self.cfg.typed;
        let (minute, message) =
            (per_minute_counter(&who.user, now / 60_000), per_message_counter(&who.user, conn, epoch));
        let bound = self.cfg.limits.deadline;
        let count = |c, limit: u32| {
            let add = self.store.add_to_counter(c, 1, Some(i64::from(limit)), c.expires_at(now));
            within("typed-ahead budget", bound, add)
        };
        let (a, b) = tokio::join!(count(&minute, cfg.per_minute), count(&message, cfg.per_message));
        match (a, b) {
            (Ok(Ok(Some(_))), Ok(Ok(Some(_)))) => Ok(()),
            (Ok(Ok(None)), _) => Err("per minute"),
            (_, Ok(Ok(None))) => Err("per message"),
            _ => Err("unavailable"),
        }
    }

    /// Opens the model stream and appends its events to the buffer until the answer ends, the buffer says
    /// stop, or `deadline`. The outcome and the tokens spent (the stream's usage; where it stopped before
    /// reporting any, our count of the prompt and of the text received).
    async fn pump(
        &self,
        session: &SessionId,
        head: &GenerationHead,
        composed: &super::compose::Composed,
        deadline: Instant,
        prompt_estimate: u32,
    ) -> (Ahead, u32, u32) {
        let buffer = self.sources.answers();
        let append = |events: Vec<Buffered>| async move {
            let write = buffer.append(session, &head.id, &events);
            matches!(within("typed-ahead append", self.cfg.context.cache, write).await, Ok(Ok(true)))
        };
        let sent_at = Instant::now();
        let open = open_stream(&self.model, &composed.request, &composed.plan, &self.cfg.failover, &self.routes);
        let mut opened = match tokio::time::timeout_at(deadline, open).await {
            Ok(Ok(o)) => o,
            Ok(Err(e)) => {
                let failed = Buffered::Failed { code: e.code().as_str().to_owned(), retryable: e.is_retryable() };
                append(vec![failed]).await;
                return (Ahead::Failed, 0, 0);
            }
            Err(_) => return (Ahead::Failed, 0, 0),
        };
        let (mut usage, mut text_chars) = (None, 0usize);
        loop {
            let next = tokio::time::timeout_at(deadline, opened.stream.next()).await;
            let at_ms = u32::try_from(sent_at.elapsed().as_millis()).unwrap_or(u32::MAX);
            let (events, done, outcome) = match next {
                Ok(Some(Ok(event))) => {
                    match &event {
                        ModelEvent::Usage { input_tokens, output_tokens, .. } => {
                            usage = Some((*input_tokens, *output_tokens));
                        }
                        ModelEvent::Text(t) => text_chars += t.chars().count(),
                        _ => {}
                    }
                    (vec![Buffered::Model { at_ms, event }], false, Ahead::Answered)
                }
                Ok(None) => (vec![Buffered::End], true, Ahead::Answered),
                Ok(Some(Err(e))) => {
                    let code = e.code().as_str().to_owned();
                    (vec![Buffered::Failed { code, retryable: e.is_retryable() }], true, Ahead::Failed)
                }
                Err(_) => {
                    (vec![Buffered::Failed { code: "deadline_exceeded".into(), retryable: true }], true, Ahead::Failed)
                }
            };
            let current = append(events).await;
            if !current {
                // Dropping the stream stops the model: nothing more is billed.
                drop(opened);
                let (input, output) = usage.unwrap_or((prompt_estimate, u32::try_from(text_chars / 3).unwrap_or(0)));
                return (Ahead::Stopped, input, output);
            }
            if done {
                let (input, output) = usage.unwrap_or((prompt_estimate, u32::try_from(text_chars / 3).unwrap_or(0)));
                return (outcome, input, output);
            }
        }
    }

    fn record_ahead(&self, outcome: &str, input: u32, output: u32) {
        self.metrics.record(&metrics::typed_ahead_record(self.clock.now_ms(), outcome, input, output));
    }
}
