//! The one place a turn ends: [`Engine::end`] settles what the turn holds ([`TurnHold`]: the message claim
//! and the connection's turn slot) and then tells the client, whatever the ending: a [`Stop`] before
//! anything was answered, or the end of a stream. Nothing else in the turn frees a slot or gives a claim
//! back.
//!
//! Settling comes first because the client may act the moment it reads the last event: send its next
//! message (the slot must be free), or send the same message again after a retryable error (the claim
//! must be back).

use std::borrow::Cow;

use bytes::Bytes;

use super::open::Turn;
use super::{Engine, Invocation, TurnResult, post_event};
use crate::admit::limits::Refusal;
use crate::admit::session::SessionUnavailable;
use crate::answer::relay::{RelayEnd, RelayOutcome, post_with_retry};
use crate::clock::Clock;
use crate::error::{ErrorCode, FrameError, ModelError, SinkError, chain, retry_store};
use crate::ports::{ConnectionSink, ModelClient, Store};
use crate::protocol::{ClientMessage, ProductRef, Rejected, ServerEvent, TurnMetrics};
use crate::safety::{Direction, blocked_input_message, retract_message};

/// What a turn holds until it ends: whether it owns the message's claim (`false`: another invocation owns
/// it, or the claim write failed and the turn answers without dedupe) and the connection's turn slot.
/// Settled once, by [`Engine::end`], which consumes it.
#[derive(Debug)]
#[must_use = "a turn's hold is settled by `Engine::end`"]
pub(super) struct TurnHold {
    claim: bool,
    slot: bool,
}

impl TurnHold {
    pub(super) fn new(claim: bool, slot: bool) -> Self {
        Self { claim, slot }
    }
}

/// Why a turn stopped before anything was answered. Each is one typed `error` event.
#[derive(Debug)]
pub(super) enum Stop {
    /// The frame was malformed (the message id is echoed when it was well-formed).
    Frame(FrameError),
    /// The message does not fit the prompt's budget for it.
    TooLong(String),
    /// A limit refused the message.
    Limited(Refusal),
    /// The message id was claimed before.
    Duplicate,
    /// The input guardrail blocked the message; no model was asked.
    Blocked,
    /// The model failed (or the deadline passed) before the first token.
    Model(ModelError),
}

impl Stop {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Frame(e) => e.code(),
            Self::TooLong(_) => ErrorCode::MessageTooLong,
            Self::Limited(r) => r.code(),
            Self::Duplicate => ErrorCode::DuplicateMessage,
            Self::Blocked => ErrorCode::Blocked,
            Self::Model(e) => e.code(),
        }
    }

    /// The safe sentence the client reads, in the shopper's language where the service speaks for itself.
    fn message(&self, japanese: bool) -> Cow<'static, str> {
        match self {
            Self::Frame(e) => e.to_string().into(),
            Self::TooLong(why) => why.clone().into(),
            Self::Limited(r) => r.message().into(),
            Self::Duplicate => "this message_id has already been answered or is being answered".into(),
            Self::Blocked => blocked_input_message(japanese).into(),
            Self::Model(e) => format!("{}; nothing was answered, please send it again", e.client_message()).into(),
        }
    }

    /// Whether sending the same message again may succeed.
    fn retryable(&self) -> bool {
        match self {
            Self::Limited(_) => true,
            Self::Model(e) => e.is_retryable(),
            Self::Frame(_) | Self::TooLong(_) | Self::Duplicate | Self::Blocked => false,
        }
    }

    fn result(&self) -> TurnResult {
        match self {
            Self::Frame(_) | Self::TooLong(_) => TurnResult::Rejected(self.code()),
            Self::Limited(r) => TurnResult::Limited(r.code()),
            Self::Duplicate => TurnResult::Duplicate,
            Self::Blocked => TurnResult::Blocked(Direction::Input),
            Self::Model(e) => TurnResult::Failed(e.code()),
        }
    }

    fn log(&self) {
        match self {
            Self::Frame(e) => tracing::info!(code = %e.code(), error = %e, "rejected frame"),
            Self::TooLong(why) => tracing::info!(why, "message over its budget"),
            Self::Limited(r) => tracing::info!(code = %r.code(), "refused by a limit"),
            Self::Duplicate => tracing::info!("duplicate message id; not answering twice"),
            Self::Blocked => tracing::info!("the input guardrail blocked the message"),
            Self::Model(e) => tracing::error!(code = %e.code(), error = %chain(e), "model failed before first token"),
        }
    }
}

/// How a turn ends for the client.
#[derive(Debug)]
pub(super) enum Ending<'a> {
    /// Nothing was answered: the claim goes back (when this invocation owns it) and the stop's error is
    /// posted.
    Stopped(Stop),
    /// The stream ran: the event its end calls for. `claim_back` when nothing reached the client and the
    /// turn is not stored (a stored turn settles its claim itself: answered, or given back).
    Streamed { out: &'a RelayOutcome, products: &'a [ProductRef], metrics: &'a TurnMetrics, claim_back: bool },
}

impl<M: ModelClient, St: Store, C: Clock, X, Q> Engine<M, St, C, X, Q> {
    /// Ends the turn: settles `hold`, then posts the event `ending` calls for; the result says how.
    pub(super) async fn end<S: ConnectionSink>(
        &self,
        sink: &S,
        turn: &Turn,
        hold: TurnHold,
        ending: Ending<'_>,
    ) -> TurnResult {
        let claim_back = match &ending {
            Ending::Stopped(_) => true,
            Ending::Streamed { claim_back, .. } => *claim_back,
        };
        self.settle(turn, hold, claim_back).await;
        let mid = Some(turn.msg.message_id.as_str());
        match ending {
            Ending::Stopped(stop) => {
                stop.log();
                let (message, retryable) = (stop.message(turn.japanese), stop.retryable());
                let retry_after_ms = match &stop {
                    Stop::Limited(r) => r.retry_after_ms(),
                    _ => None,
                };
                let ev = ServerEvent::Error {
                    message_id: mid,
                    code: stop.code(),
                    message: &message,
                    retryable,
                    retry_after_ms,
                };
                post_event(sink, &turn.conn, &self.cfg.relay, &ev).await;
                stop.result()
            }
            Ending::Streamed { out, products, metrics, .. } => {
                self.tell_the_end(sink, turn, out, products, metrics).await
            }
        }
    }

    /// A frame refused before a turn could open: its typed error, echoing the message id when it was
    /// well-formed. It holds nothing.
    pub(super) async fn reject_frame<S: ConnectionSink>(
        &self,
        sink: &S,
        inv: &Invocation<'_>,
        r: Rejected,
    ) -> TurnResult {
        let stop = Stop::Frame(r.error);
        stop.log();
        let message = stop.message(false);
        let ev = ServerEvent::Error {
            message_id: r.message_id.as_deref(),
            code: stop.code(),
            message: &message,
            retryable: false,
            retry_after_ms: None,
        };
        post_event(sink, &inv.conn, &self.cfg.relay, &ev).await;
        stop.result()
    }

    /// A frame refused because the connection's session could not be read: a retryable
    /// `session_unavailable`, echoing the message id of a message. Nothing was taken, so nothing is held.
    pub(super) async fn session_unavailable<S: ConnectionSink>(
        &self,
        sink: &S,
        inv: &Invocation<'_>,
        msg: Option<&ClientMessage>,
        e: &SessionUnavailable,
    ) -> TurnResult {
        let japanese = msg.is_some_and(|m| crate::intent::is_japanese(&m.text));
        let message = if japanese {
            "ただいまセッションを読み込めませんでした。もう一度お送りください。"
        } else {
            e.client_message()
        };
        let ev = ServerEvent::Error {
            message_id: msg.map(|m| m.message_id.as_str()),
            code: e.code(),
            message,
            retryable: e.is_retryable(),
            retry_after_ms: None,
        };
        post_event(sink, &inv.conn, &self.cfg.relay, &ev).await;
        TurnResult::Failed(e.code())
    }

    /// Gives back what the turn holds: the claim when `claim_back` and this invocation owns it (retried: a
    /// claim left behind refuses the shopper's resend for a day), and the slot (retried inside; it expires
    /// at the turn's deadline anyway), side by side.
    async fn settle(&self, turn: &Turn, hold: TurnHold, claim_back: bool) {
        let release = async {
            if hold.claim && claim_back {
                let (id, session) = (&turn.msg.message_id, &turn.session);
                let attempts = self.cfg.store_attempts;
                if let Err(e) = retry_store("claim release", attempts, || self.store.release_claim(id, session)).await {
                    tracing::error!(error = %chain(&e), "could not release message claim");
                }
            }
        };
        let free = async {
            if hold.slot {
                self.limiter().release(&turn.conn, &turn.msg.message_id).await;
            }
        };
        tokio::join!(release, free);
    }

    /// The event that ends a streamed turn for the client: `completed`, `retract`, or a typed `error`.
    async fn tell_the_end<S: ConnectionSink>(
        &self,
        sink: &S,
        turn: &Turn,
        out: &RelayOutcome,
        products: &[ProductRef],
        metrics: &TurnMetrics,
    ) -> TurnResult {
        let (rcfg, mid) = (&self.cfg.relay, turn.msg.message_id.as_str());
        let post = |frame: Vec<u8>| async move {
            match post_with_retry(sink, &turn.conn, Bytes::from(frame), rcfg).await {
                Ok(()) | Err(SinkError::Gone) => {}
                Err(e) => tracing::warn!(error = %chain(&e), "could not deliver the turn's last event"),
            }
        };
        match &out.end {
            RelayEnd::Completed => {
                post(ServerEvent::Completed { message_id: mid, seq: out.frames, products, metrics }.to_frame()).await;
                TurnResult::Completed(Box::new(metrics.clone()))
            }
            RelayEnd::ClientGone => {
                tracing::info!(frames = out.frames, "client left mid-answer; generation cancelled");
                TurnResult::ClientGone
            }
            RelayEnd::ModelFailed(e) => {
                tracing::error!(code = %e.code(), error = %chain(e), "model stream failed mid-answer");
                let text = if out.sent_anything() {
                    format!("{}; the answer above is incomplete, you may send the message again", e.client_message())
                } else {
                    format!("{}; nothing was answered, please send it again", e.client_message())
                };
                let retryable = e.is_retryable();
                let (message_id, code) = (Some(mid), e.code());
                post_event(
                    sink,
                    &turn.conn,
                    rcfg,
                    &ServerEvent::Error { message_id, code, message: &text, retryable, retry_after_ms: None },
                )
                .await;
                TurnResult::Failed(e.code())
            }
            RelayEnd::SinkFailed(e) => {
                tracing::error!(error = %chain(e), "posting to the client failed");
                TurnResult::Undelivered
            }
            RelayEnd::Retracted => {
                // After the last delta: the client replaces what it showed for this message.
                let message = retract_message(turn.japanese);
                post(ServerEvent::Retract { message_id: mid, seq: out.frames, message }.to_frame()).await;
                TurnResult::Blocked(Direction::Output)
            }
        }
    }
}
