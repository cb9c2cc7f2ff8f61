//! Step 4 of the turn, compose: the intent's model and the routes to try (provisioned throughput when it
//! serves that model, on-demand, the fallback), where the answer comes from (the model, or a pre-generated
//! answer that fits: [`crate::answer::serve::decide`]), and the request compressed to the token budget.

use super::Engine;
use super::end::Stop;
use super::open::Turn;
use super::ready::Ready;
use crate::ahead::typed::AnswerBasis;
use crate::answer::routes::{Route, plan};
use crate::answer::serve::{self, Serving};
use crate::clock::Clock;
use crate::gather::Gathered;
use crate::models::{ModelChoice, same_base_model};
use crate::ports::{ModelClient, ModelRequest, Store};
use crate::prompt::PromptParts;

/// What the turn will ask, and of whom.
#[derive(Debug)]
pub(super) struct Composed {
    /// The intent's model and answer cap.
    pub choice: ModelChoice,
    /// The routes to try before the first token, in order.
    pub plan: Vec<(String, Route)>,
    pub serving: Serving,
    pub request: ModelRequest,
    /// The prompt's owned pieces, kept to count the uncompressed prompt after the answer.
    pub parts: PromptParts,
    /// Compression and request building, ms.
    pub compress_ms: f64,
    /// The basis a typed-ahead answer must have to answer this message (`None`: none may).
    pub typed_basis: Option<String>,
}

/// What a request is composed from: the message (as sent, and as the input check left it), what was gathered
/// for it, and what a typed-ahead basis names. The turn builds it from its `Turn` and `Ready`; the typing
/// step from the partial it answers ahead.
pub(super) struct Asked<'a> {
    /// Names the request in Bedrock's invocation logs (`requestMetadata`).
    pub request_id: &'a str,
    /// The text as the shopper sent (or typed) it.
    pub text: &'a str,
    pub page: &'a crate::protocol::PageContext,
    /// The text the model sees (masked where the input guardrail masked).
    pub question: &'a str,
    pub gathered: &'a Gathered,
    pub provisioned: Option<&'a str>,
    /// The peak's priority tier is in force for the intent's model (`CONFIG/THROUGHPUT`, the capability
    /// table): its on-demand requests carry `serviceTier = priority`.
    pub priority: bool,
    pub verdict: &'a str,
    /// The memory epoch marker (`None`: unknown, so no typed-ahead basis).
    pub epoch: &'a Option<Option<String>>,
}

impl<'a> Asked<'a> {
    pub(super) fn of(turn: &'a Turn, ready: &'a Ready) -> Self {
        Self {
            request_id: turn.msg.message_id.as_str(),
            text: &turn.msg.text,
            page: &turn.msg.page_context,
            question: &ready.question,
            gathered: &ready.gathered,
            provisioned: ready.provisioned.as_deref(),
            priority: ready.priority,
            verdict: &ready.verdict,
            epoch: &ready.epoch,
        }
    }
}

impl<M: ModelClient, St: Store, C: Clock, X, Q> Engine<M, St, C, X, Q> {
    /// Composes the request. A message over its budget stops the turn here (`message_too_long`).
    pub(super) fn compose(&self, asked: &Asked<'_>) -> Result<Composed, Stop> {
        let gathered = asked.gathered;
        let choice = self.cfg.models.for_intent(gathered.intent).clone();
        let provisioned = asked.provisioned.filter(|_| self.provisioned_serves(&choice.model_id));
        let plan = plan(provisioned, &choice.model_id, self.cfg.fallback_model_id.as_deref());
        let serving = serve::decide(self.cfg.pregen.mode, asked.question, gathered, &choice.model_id);

        let compress_start = std::time::Instant::now();
        let parts = PromptParts::new(gathered);
        let input = parts.input(asked.question, asked.page, gathered);
        let metadata = vec![("message_id".to_owned(), asked.request_id.to_owned())];
        let request = self.prompter.request(&input, &choice, metadata).map_err(|e| Stop::TooLong(e.to_string()))?;
        let mut request = ModelRequest { guardrail: self.cfg.safety.output.clone(), ..request };
        // At peak, where the Region sells no provisioned throughput (or the plan says priority), the
        // intent's on-demand requests are served first by the priority tier.
        if asked.priority && provisioned.is_none() {
            request.levers.priority_tier = true;
        }
        let compress_ms = compress_start.elapsed().as_secs_f64() * 1000.0;
        // Only where the model would answer, and only with a known memory epoch.
        let typed_basis = match (&serving, asked.epoch) {
            (Serving::Model, Some(epoch)) if self.cfg.typed.enabled => {
                let verdict = asked.verdict.to_owned();
                Some(AnswerBasis::new(asked.text, asked.page, epoch.clone(), verdict, &choice.model_id).key())
            }
            _ => None,
        };
        Ok(Composed { choice, plan, serving, request, parts, compress_ms, typed_basis })
    }

    /// Whether the provisioned throughput serves `model_id` (same base model).
    fn provisioned_serves(&self, model_id: &str) -> bool {
        let pt = self.cfg.provisioned_model.as_deref().unwrap_or(&self.cfg.models.default.model_id);
        same_base_model(pt, model_id)
    }
}
