//! The `typing` action: a typing-time speculation ([`crate::ahead::speculate`]), off any turn's path (its own
//! invocation), answered with nothing. Bounded at every step: the frame's size (refused before parsing),
//! the connection's typing rate ([`crate::admit::limits::Limiter::admit_typing`]), the context legs' own
//! deadlines, and the connection's generation (a superseded speculation is not written). A dropped frame
//! is logged at debug level and counted (`typing.frames` by outcome), never answered: no error storm.

use crate::ahead::prefetch::PrefetchQueue;
use crate::ahead::speculate::{self, Basis, SpeculationEntry, generation_counter};
use std::sync::Arc;

use futures_util::FutureExt as _;

use crate::clock::Clock;
use crate::deadline::{best_effort, within};
use crate::error::ErrorCode;
use crate::gather::{Assembler, ContextConfig, SourceCalls};
use crate::ids::MessageId;
use crate::metrics;
use crate::ports::sources::ContextSources;
use crate::ports::{ModelClient, Store};
use crate::protocol::{ClientMessage, TypingFrame};
use crate::safety::InputVerdict;

use super::ready::InputCheck;
use super::typed::Partial;
use super::{Engine, Invocation};
use crate::ahead::typed;

/// How a `typing` frame ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypingOutcome {
    /// Speculation is off (`TYPING_SPECULATION=off`): ignored.
    Off,
    /// Too short to be worth a speculation (or empty: the box was cleared).
    Skipped,
    /// Dropped unparsed or invalid (the frame error's code) or over the connection's typing rate
    /// (`rate_limited`).
    Dropped(ErrorCode),
    /// The context was gathered and cached, at this cost.
    Speculated(SourceCalls),
    /// A newer partial of the connection arrived meanwhile: gathered at this cost, not cached.
    Superseded(SourceCalls),
}

impl TypingOutcome {
    /// The `outcome` dimension of `typing.frames`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Skipped => "skipped",
            Self::Dropped(code) => code.as_str(),
            Self::Speculated(_) => "speculated",
            Self::Superseded(_) => "superseded",
        }
    }

    /// The source calls made.
    pub fn calls(self) -> SourceCalls {
        match self {
            Self::Speculated(c) | Self::Superseded(c) => c,
            _ => SourceCalls::default(),
        }
    }
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// A `typing` frame: gathers the context of the partial text into the session's speculation entry.
    /// Never posts to the client; every outcome but `Off` writes one EMF record.
    pub async fn typing(&self, inv: &Invocation<'_>) -> TypingOutcome {
        // Boxed: the speculation's state machine (the context legs' inside) is deep.
        let outcome = Box::pin(self.speculate(inv)).await;
        if outcome != TypingOutcome::Off {
            let calls = outcome.calls();
            let now = self.clock.now_ms();
            self.metrics.record(&metrics::typing_record(now, outcome.as_str(), calls.retrievals, calls.services));
        }
        outcome
    }

    async fn speculate(&self, inv: &Invocation<'_>) -> TypingOutcome {
        let (conn, body) = (&inv.conn, inv.body);
        let spec = &self.cfg.speculation;
        if !spec.enabled {
            return TypingOutcome::Off;
        }
        let frame = match TypingFrame::parse(body) {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!(code = %e.code(), error = %e, "dropped a typing frame");
                return TypingOutcome::Dropped(e.code());
            }
        };
        let basis = Basis::of(&frame.text, &frame.page_context);
        let Ok(message_id) = MessageId::parse("typing") else { return TypingOutcome::Skipped };
        if basis.text.chars().count() < spec.min_chars {
            return TypingOutcome::Skipped;
        }
        let (session, who) = match self.sessions.session_of(&self.store, conn, inv.caller.as_ref()).await {
            Ok(v) => v,
            Err(e) => return TypingOutcome::Dropped(e.code()),
        };
        if !self.limiter().admit_typing(&who).await {
            tracing::debug!("dropped a typing frame over the user's typing rate or day");
            return TypingOutcome::Dropped(ErrorCode::RateLimited);
        }
        // This partial's generation: a newer one of the connection supersedes it.
        let generations = generation_counter(&who.user, conn);
        let bound = self.cfg.limits.deadline;
        let bump = self.store.add_to_counter(&generations, 1, None, generations.expires_at(self.clock.now_ms()));
        // The memory epoch is read before memory: a turn stored after this read changes it.
        let epoch = speculate::read_epoch(&self.sources, self.cfg.context.cache, &session);
        let (bumped, epoch) = tokio::join!(within("typing generation", bound, bump), epoch);
        let generation = match bumped {
            Ok(Ok(Some(g))) => g,
            // Unknown: speculate anyway; the reuse decision, not the generation, keeps the turn right.
            _ => 0,
        };

        let cfg = ContextConfig { pregen: false, sequential: false, ..self.cfg.context };
        let assembler = Assembler { sources: &self.sources, store: &self.store, cfg: &cfg };
        let msg = ClientMessage { message_id, text: frame.text, page_context: frame.page_context };
        // What the previous partial gathered, where it fits this one (the rule the turn applies at send): an
        // extended partial of the same intent and products need not retrieve again.
        let now = self.clock.now_ms();
        let prior = speculate::lookup(&self.sources, self.cfg.context.cache, spec, &session, basis.clone(), now);
        let gather = Box::pin(assembler.assemble_reusing(&msg, &session, &who.user, prior.map(|p| p.map(Arc::new))));
        let (gathered, input) = tokio::join!(gather, Box::pin(self.input_verdict(&msg)));
        let calls = gathered.context.calls;

        if generation > 0 {
            let latest = within("typing generation", bound, self.store.counter(&generations)).await;
            if let Ok(Ok(latest)) = latest
                && latest > generation
            {
                tracing::debug!(generation, latest, "typing speculation superseded");
                return TypingOutcome::Superseded(calls);
            }
        }
        let settled = self.cfg.typed.enabled && typed::settled(&msg.text, &self.cfg.typed);
        let mut entry =
            SpeculationEntry::new(session.clone(), generation, self.clock.now_ms(), basis, &gathered, epoch.clone());
        entry.input = input.clone();
        let key = SpeculationEntry::key(&session);
        let value = entry.encode();
        let write = async {
            best_effort("typing speculation write", cfg.cache, self.sources.cache_set(&key, &value, spec.ttl)).await;
        };
        // What the services returned is shared with every later turn, as a turn's own fetches are.
        tokio::join!(write, assembler.write_back(&gathered.context));
        if settled {
            let partial = Partial {
                conn,
                session: &session,
                who: &who,
                text: &msg.text,
                page: &msg.page_context,
                gathered: &gathered,
                verdict: input.as_ref(),
                epoch: &epoch,
            };
            let ahead = Box::pin(self.answer_ahead(partial)).await;
            tracing::debug!(?ahead, "answer ahead");
        }
        TypingOutcome::Speculated(calls)
    }

    /// The input guardrail's verdict on the partial, beside its context, so that the message sent as typed
    /// needs no check at send (`None`: no input guardrail, or the check failed; the turn checks itself).
    /// Not counted as an intervention here: the turn that takes it counts it.
    async fn input_verdict(&self, msg: &ClientMessage) -> Option<InputVerdict> {
        let g = self.cfg.safety.input.as_ref()?;
        let page = msg.page_context.to_json();
        let a = self.assess_input(g, &msg.text, &page).await?;
        let masked = match InputCheck::of(&a, &msg.text) {
            InputCheck::Masked(m) => Some(m),
            _ => None,
        };
        let guardrail = g.name();
        Some(InputVerdict { guardrail, text: msg.text.clone(), page, blocked: a.blocked, policies: a.policies, masked })
    }
}
