//! Step 5 of the turn, stream: the answer the composition chose (the model stream opened with failover, or a
//! pre-generated answer), relayed to the client as sequenced frames ([`crate::answer::serve::Answerer`]) until
//! it ends or the turn's deadline cuts it.

use super::Engine;
use super::compose::Composed;
use super::end::Stop;
use super::open::Turn;
use crate::answer::serve::{Answerer, Streamed};
use crate::clock::Clock;
use crate::ports::{ConnectionSink, ModelClient, Store};

impl<M: ModelClient, St: Store, C: Clock, X, Q> Engine<M, St, C, X, Q> {
    /// Streams the answer. A model that fails before anything was sent stops the turn here.
    pub(super) async fn stream<S: ConnectionSink>(
        &self,
        sink: &S,
        turn: &Turn,
        c: &Composed,
    ) -> Result<Streamed, Stop> {
        let (relay, failover, routes, deadline) = (&self.cfg.relay, &self.cfg.failover, &self.routes, turn.deadline);
        let answerer = Answerer { model: &self.model, relay, failover, routes, deadline };
        let message_id = &turn.msg.message_id;
        answerer.answer(sink, &turn.conn, message_id, &c.request, &c.plan, c.serving.clone()).await.map_err(Stop::Model)
    }
}
