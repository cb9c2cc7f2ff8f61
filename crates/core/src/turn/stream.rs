//! Step 5 of the turn, stream: the answer the composition chose, relayed to the client as sequenced frames
//! ([`crate::answer::serve::Answerer`]) until it ends or the turn's deadline cuts it. Where the model would
//! answer, a generation started while the shopper typed this very message (same basis) is claimed first
//! and relayed instead: what it buffered at once, then the rest as it arrives.

use super::Engine;
use super::compose::Composed;
use super::end::Stop;
use super::open::Turn;
use crate::ahead::typed::finished_usage;
use crate::answer::serve::{Answerer, Serving, Streamed, TypedSource};
use crate::clock::Clock;
use crate::deadline::best_effort;
use crate::metrics;
use crate::ports::answers::{AnswerBuffer, Claimed, GenerationHead};
use crate::ports::sources::ContextSources;
use crate::ports::{ConnectionSink, ModelClient, Store};

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q> Engine<M, St, C, X, Q> {
    /// Streams the answer. A model that fails before anything was sent stops the turn here.
    pub(super) async fn stream<S: ConnectionSink>(
        &self,
        sink: &S,
        turn: &Turn,
        c: &Composed,
    ) -> Result<Streamed, Stop> {
        let (serving, cancelled) = match &c.typed_basis {
            Some(basis) => match self.claim_typed_ahead(turn, basis).await {
                Some(Claimed::Mine(head)) => (Serving::TypedAhead(head), None),
                Some(Claimed::Mismatch(head)) => (c.serving.clone(), Some(head)),
                _ => (c.serving.clone(), None),
            },
            None => (c.serving.clone(), None),
        };
        let (relay, failover, routes, deadline) = (&self.cfg.relay, &self.cfg.failover, &self.routes, turn.deadline);
        let typed = Some(TypedSource {
            buffer: self.sources.answers(),
            session: &turn.session,
            wait: self.cfg.typed.wait,
            sent_at_ms: turn.ts_ms,
        });
        let answerer = Answerer { model: &self.model, relay, failover, routes, deadline, typed };
        let message_id = &turn.msg.message_id;
        // Boxed, as the steps after the answer are: a debug build's frames must fit a 2 MiB thread stack.
        let answer = Box::pin(answerer.answer(sink, &turn.conn, message_id, &c.request, &c.plan, serving));
        // A cancelled generation that had finished is waste nobody else will count; read beside the answer.
        let (streamed, ()) = tokio::join!(answer, Box::pin(self.count_finished_waste(turn, cancelled)));
        streamed.map_err(Stop::Model)
    }

    async fn count_finished_waste(&self, turn: &Turn, cancelled: Option<GenerationHead>) {
        let Some(head) = cancelled else { return };
        let buffer = self.sources.answers();
        if let Some((input, output)) = finished_usage(buffer, &turn.session, &head.id, self.cfg.context.cache).await {
            self.metrics.record(&metrics::typed_ahead_record(self.clock.now_ms(), "wasted", input, output));
        }
    }

    /// Claims the session's typed-ahead generation when it was built from exactly this message (one cache
    /// round trip, under the cache leg's deadline). Another basis cancels it: its writer stops at its next
    /// append, and its cost is counted as waste by whoever sees it end.
    async fn claim_typed_ahead(&self, turn: &Turn, basis: &str) -> Option<Claimed> {
        let buffer = self.sources.answers();
        if !buffer.supported() {
            return None;
        }
        let claimed =
            best_effort("typed-ahead claim", self.cfg.context.cache, buffer.claim(&turn.session, basis)).await?;
        match &claimed {
            Claimed::Mine(head) => tracing::info!(generation = head.id, "serving the answer typed ahead"),
            Claimed::Mismatch(head) => {
                let differs = crate::ahead::typed::basis_difference(&head.basis, basis);
                tracing::info!(
                    generation = head.id,
                    ?differs,
                    "the answer typed ahead was for another basis; cancelled"
                );
                self.metrics.record(&metrics::typed_ahead_record(self.clock.now_ms(), "cancelled", 0, 0));
            }
            Claimed::Nothing => {}
        }
        Some(claimed)
    }
}
