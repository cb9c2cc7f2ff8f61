//! Step 3 of the turn, gather: side by side, whether this connection and user may send now (the limits and
//! the connection's turn slot), whether this message is answered already (the claim), which route, what
//! context, and what the input guardrail makes of the message. The result is [`Ready`], or the [`Stop`]
//! that ends the turn together with what it holds.
//!
//! A typing-time speculation ([`crate::ahead::speculate`]) that fits the message serves its context legs and
//! its input verdict: it is looked up once, in one cache read, and shared by the context assembly and the
//! input check.

use std::future::Future;
use std::sync::Arc;

use futures_util::FutureExt as _;
use tokio::time::Instant;

use super::Engine;
use super::end::{Stop, TurnHold};
use super::open::Turn;
use crate::ahead::prefetch::PrefetchQueue;
use crate::ahead::speculate::{self, Basis};
use crate::ahead::typed::verdict_key;
use crate::clock::Clock;
use crate::deadline::{best_effort, within};
use crate::error::{StoreError, chain};
use crate::gather::{Assembler, Gathered, Reusable};
use crate::metrics;
use crate::ports::sources::ContextSources;
use crate::ports::{Claim, ModelClient, Store};
use crate::protocol::ClientMessage;
use crate::safety::{Assessment, Direction, GuardrailPolicy, GuardrailRef, InputVerdict};

/// A turn that may be answered: what it holds, what it knows, and the question as checked.
#[derive(Debug)]
pub(super) struct Ready {
    pub hold: TurnHold,
    pub gathered: Gathered,
    /// The text the model sees and the store keeps: the message as sent, or as the input guardrail masked
    /// it (card and phone numbers never reach the model or the table).
    pub question: String,
    /// The provisioned-throughput ARN in service, if any.
    pub provisioned: Option<String>,
    /// The peak's priority tier is in force for the intent's model.
    pub priority: bool,
    /// The input guardrail's verdict as a typed-ahead basis names it ([`crate::ahead::typed::verdict_key`]).
    pub verdict: String,
    /// The session's memory epoch marker read at send (`None`: unknown).
    pub epoch: Option<Option<String>>,
}

/// What the input guardrail made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum InputCheck {
    Pass,
    /// The message with what the guardrail masked replaced (`{CREDIT_DEBIT_CARD_NUMBER}`, `{PHONE}`).
    Masked(String),
    Blocked,
}

impl InputCheck {
    /// The verdict of an assessment of `text`: blocked, masked (a non-empty masked text that differs), or
    /// pass.
    pub(super) fn of(a: &Assessment, text: &str) -> Self {
        if !a.intervened {
            return Self::Pass;
        }
        if a.blocked {
            return Self::Blocked;
        }
        match a.outputs.first() {
            Some(masked) if !masked.trim().is_empty() && masked != text => Self::Masked(masked.trim().to_owned()),
            _ => Self::Pass,
        }
    }

    /// The verdict a typing-time check recorded.
    fn from_verdict(v: &InputVerdict) -> Self {
        match (&v.masked, v.blocked) {
            (_, true) => Self::Blocked,
            (Some(masked), false) => Self::Masked(masked.clone()),
            (None, false) => Self::Pass,
        }
    }
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// Gathers everything the turn needs before it can compose its request, side by side; the turn slot is
    /// held for as long as the turn may run.
    pub(super) async fn gather(&self, turn: &Turn) -> Result<Ready, (TurnHold, Stop)> {
        let limiter = self.limiter();
        let assembler = Assembler { sources: &self.sources, store: &self.store, cfg: &self.cfg.context };
        let slot_for = turn.deadline.saturating_duration_since(Instant::now());
        let admit = Box::pin(limiter.admit(&turn.conn, &turn.msg.message_id, &turn.who, slot_for));
        let prior = self.speculated(turn).map(|p| p.map(Arc::new)).shared();
        let (msg, session, user) = (&turn.msg, &turn.session, &turn.who.user);
        // Boxed: both are deep state machines; the turn's own future stays small.
        let assemble = Box::pin(assembler.assemble_reusing(msg, session, user, prior.clone()));
        let (admission, claim, provisioned, gathered, checked) = tokio::join!(
            admit,
            self.claim(turn),
            self.routes.provisioned(),
            assemble,
            Box::pin(self.check_input(msg, prior.clone())),
        );
        // Resolved by now (both legs awaited it).
        let epoch = prior.await.and_then(|p| p.epoch.clone());
        // The same cached record `provisioned()` just read: no second read.
        let priority = self.routes.priority_tier_now(&self.cfg.models.for_intent(gathered.intent).model_id).await;
        let owned = matches!(claim, Ok(Claim::Claimed));
        let hold = TurnHold::new(owned, admission.slot);
        if let Some(refusal) = admission.refusal {
            return Err((hold, Stop::Limited(refusal)));
        }
        match claim {
            Ok(Claim::Duplicate) => return Err((hold, Stop::Duplicate)),
            // Answer anyway: a shopper waiting beats a perfect dedupe. Logged for the alarm.
            Err(e) => {
                tracing::error!(code = e.code(), error = %chain(&e), "message claim failed; answering without dedupe")
            }
            Ok(Claim::Claimed) => {}
        }
        let guardrail = self.cfg.safety.input.as_ref().map(GuardrailRef::name);
        let (question, verdict) = match checked {
            InputCheck::Blocked => return Err((hold, Stop::Blocked)),
            InputCheck::Masked(masked) => {
                let verdict = verdict_key(guardrail.as_deref(), Some(&masked));
                (masked, verdict)
            }
            InputCheck::Pass => (turn.msg.text.clone(), verdict_key(guardrail.as_deref(), None)),
        };
        Ok(Ready { hold, gathered, question, provisioned, priority, verdict, epoch })
    }

    /// Claims the message id in its session. Bounded, but generously: a slow claim delays the first token
    /// (it runs beside the context, so only a claim slower than that costs anything) rather than risk
    /// answering the same message twice.
    async fn claim(&self, turn: &Turn) -> Result<Claim, StoreError> {
        let expires = turn.ts_ms / 1000 + self.cfg.claim_ttl.as_secs();
        let claim = self.store.claim_message(&turn.msg.message_id, &turn.session, expires);
        within("message claim", self.cfg.claim_deadline, claim).await?
    }

    /// The at-send read of the session's memory epoch (with its recall, [`crate::gather::recall`]) and
    /// typing-time speculation: what of it fits this message (one cache read under the cache leg's
    /// deadline; `None` when it failed).
    async fn speculated(&self, turn: &Turn) -> Option<Reusable> {
        let spec = &self.cfg.speculation;
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
        let page = msg.page_context.to_json();
        let name = g.name();
        if self.cfg.speculation.enabled
            && let Some(p) = prior.await
            && let Some(v) = p.input.as_ref().filter(|v| v.fits(&name, &msg.text, &page))
        {
            let check = InputCheck::from_verdict(v);
            if check != InputCheck::Pass {
                self.count_intervention(&v.policies);
            }
            tracing::debug!(?check, "input check taken from the typing-time speculation");
            return check;
        }
        let Some(assessment) = self.assess_input(g, &msg.text, &page).await else {
            self.metrics.record(&metrics::guardrail_check_failed_record(self.clock.now_ms()));
            return InputCheck::Pass;
        };
        let check = InputCheck::of(&assessment, &msg.text);
        if assessment.intervened {
            self.count_intervention(&assessment.policies);
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

    fn count_intervention(&self, policies: &[GuardrailPolicy]) {
        let records = metrics::guardrail_record(self.clock.now_ms(), Direction::Input, policies);
        self.metrics.record_all(records.records());
    }

    /// One bounded `ApplyGuardrail` call on a message's text and page context JSON; `None` (logged) when it
    /// failed or timed out.
    pub(super) async fn assess_input(&self, g: &GuardrailRef, text: &str, page: &str) -> Option<Assessment> {
        // The text first (its masked form is the first output), then the page, then the folded variant that
        // reads spellings meant to slip past a policy (only when it differs: `guard_variant`).
        let variant = crate::safety::normalize::guard_variant(text);
        let texts: Vec<&str> =
            [Some(text), Some(page), variant.as_deref()].into_iter().flatten().filter(|t| !t.is_empty()).collect();
        let check = self.model.apply_guardrail(g, Direction::Input, &texts);
        best_effort("input guardrail", self.cfg.safety.input_deadline, check).await
    }
}
