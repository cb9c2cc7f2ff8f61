//! Step 4 of the turn, compose: the intent's model and the routes to try (provisioned throughput when it
//! serves that model, on-demand, the fallback), where the answer comes from (the model, or a pre-generated
//! answer that fits: [`crate::answer::serve::decide`]), and the request compressed to the token budget.

use super::Engine;
use super::end::Stop;
use super::open::Turn;
use super::ready::Ready;
use crate::answer::routes::{Route, plan};
use crate::answer::serve::{self, Serving};
use crate::clock::Clock;
use crate::models::{ModelChoice, base_model_id};
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
}

impl<M: ModelClient, St: Store, C: Clock, X, Q> Engine<M, St, C, X, Q> {
    /// Composes the request. A message over its budget stops the turn here (`message_too_long`).
    pub(super) fn compose(&self, turn: &Turn, ready: &Ready) -> Result<Composed, Stop> {
        let gathered = &ready.gathered;
        let choice = self.cfg.models.for_intent(gathered.intent).clone();
        let provisioned = ready.provisioned.as_deref().filter(|_| self.provisioned_serves(&choice.model_id));
        let plan = plan(provisioned, &choice.model_id, self.cfg.fallback_model_id.as_deref());
        let serving = serve::decide(self.cfg.pregen.mode, &ready.question, gathered, &choice.model_id);

        let compress_start = std::time::Instant::now();
        let parts = PromptParts::new(gathered);
        let input = parts.input(&ready.question, &turn.msg.page_context, gathered);
        let metadata = vec![("message_id".to_owned(), turn.msg.message_id.to_string())];
        let request = self.prompter.request(&input, &choice, metadata).map_err(|e| Stop::TooLong(e.to_string()))?;
        let request = ModelRequest { guardrail: self.cfg.safety.output.clone(), ..request };
        let compress_ms = compress_start.elapsed().as_secs_f64() * 1000.0;
        Ok(Composed { choice, plan, serving, request, parts, compress_ms })
    }

    /// Whether the provisioned throughput serves `model_id` (same base model).
    fn provisioned_serves(&self, model_id: &str) -> bool {
        let pt = self.cfg.provisioned_model.as_deref().unwrap_or(&self.cfg.models.default.model_id);
        base_model_id(pt) == base_model_id(model_id)
    }
}
