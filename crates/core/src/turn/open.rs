//! Step 2 of the turn: the message becomes a [`Turn`], complete and immutable from here on: who sent it, in
//! which session, when it arrived, and by when it must end.

use tokio::time::Instant;

use super::{Engine, Invocation};
use crate::admit::session::{Principal, SessionUnavailable};
use crate::clock::Clock;
use crate::ids::{ConnectionId, SessionId};
use crate::intent::is_japanese;
use crate::ports::{ModelClient, Store};
use crate::protocol::ClientMessage;

/// One message being answered.
#[derive(Debug)]
pub(super) struct Turn {
    pub msg: ClientMessage,
    pub conn: ConnectionId,
    pub session: SessionId,
    pub who: Principal,
    /// Arrival, Unix ms: orders the session's turns.
    pub ts_ms: u64,
    /// The invocation's start: the first-token clock.
    pub started: Instant,
    /// The turn's overall deadline.
    pub deadline: Instant,
    /// The shopper wrote in Japanese: the language of every sentence the service itself says.
    pub japanese: bool,
}

impl<M: ModelClient, St: Store, C: Clock, X, Q> Engine<M, St, C, X, Q> {
    /// Opens the turn: the connection's session (cached per warm container, bounded like a memory read)
    /// and the turn's deadline, the earlier of the invocation's and `TURN_DEADLINE_MS`. A session that
    /// cannot be read refuses the message (handed back with why): it holds nothing yet.
    pub(super) async fn open(
        &self,
        inv: &Invocation<'_>,
        msg: ClientMessage,
    ) -> Result<Turn, (ClientMessage, SessionUnavailable)> {
        tracing::Span::current().record("message_id", msg.message_id.as_str());
        let (session, who) = match self.sessions.session_of(&self.store, &inv.conn, inv.caller.as_ref()).await {
            Ok(v) => v,
            Err(e) => return Err((msg, e)),
        };
        tracing::Span::current().record("session_id", session.as_str());
        let japanese = is_japanese(&msg.text);
        Ok(Turn {
            msg,
            conn: inv.conn.clone(),
            session,
            who,
            ts_ms: self.clock.now_ms(),
            started: inv.started,
            deadline: inv.deadline.min(inv.started + self.cfg.turn_deadline),
            japanese,
        })
    }
}
