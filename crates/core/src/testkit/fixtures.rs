//! Ids from literals and records with defaults, so that a test names only what it is about.
#![expect(clippy::expect_used, reason = "fixtures: a malformed literal id is a bug in the test that wrote it")]

use crate::ids::{Asin, ConnectionId, MessageId, SessionId, UserId};
use crate::intent::Intent;
use crate::ports::{ConnectionRecord, TurnRecord, TurnStatus};

/// A TTL far ahead (2100-01-01, Unix seconds): records that must not expire during a test.
pub const FAR_FUTURE_S: u64 = 4_102_444_800;

pub fn conn(id: &str) -> ConnectionId {
    ConnectionId::parse(id).expect("a valid connection id")
}

pub fn session(id: &str) -> SessionId {
    SessionId::parse(id).expect("a valid session id")
}

pub fn message(id: &str) -> MessageId {
    MessageId::parse(id).expect("a valid message id")
}

pub fn user(id: &str) -> UserId {
    UserId::parse(id).expect("a valid user id")
}

pub fn asin(id: &str) -> Asin {
    Asin::parse(id).expect("a valid ASIN")
}

/// A stored exchange of `session`, message `message`: by default at `ts_ms` 1, `hello` answered by nothing,
/// complete, no products, model `m`, expiring in 2100. Change what the test is about, then
/// [`build`](TurnFixture::build).
pub fn turn(session_id: &str, message_id: &str) -> TurnFixture {
    TurnFixture(TurnRecord {
        session_id: session(session_id),
        message_id: message(message_id),
        ts_ms: 1,
        user_text: "hello".to_owned(),
        assistant_text: String::new(),
        products: Vec::new(),
        intent: None,
        status: TurnStatus::Complete,
        model: "m".to_owned(),
        input_tokens: 0,
        output_tokens: 0,
        user_tokens: None,
        assistant_tokens: None,
        guardrail: None,
        expires_at: FAR_FUTURE_S,
    })
}

/// A [`TurnRecord`] being built (see [`turn`]).
#[derive(Debug, Clone)]
pub struct TurnFixture(TurnRecord);

impl TurnFixture {
    /// When the message arrived (orders the session's turns).
    #[must_use]
    pub fn at(mut self, ts_ms: u64) -> Self {
        self.0.ts_ms = ts_ms;
        self
    }

    /// What the shopper wrote.
    #[must_use]
    pub fn user_text(mut self, text: &str) -> Self {
        text.clone_into(&mut self.0.user_text);
        self
    }

    /// What the assistant answered.
    #[must_use]
    pub fn answer(mut self, text: &str) -> Self {
        text.clone_into(&mut self.0.assistant_text);
        self
    }

    /// The products the answer named, in order.
    #[must_use]
    pub fn products(mut self, asins: &[&str]) -> Self {
        self.0.products = asins.iter().map(|a| asin(a)).collect();
        self
    }

    #[must_use]
    pub fn intent(mut self, intent: Intent) -> Self {
        self.0.intent = Some(intent);
        self
    }

    #[must_use]
    pub fn status(mut self, status: TurnStatus) -> Self {
        self.0.status = status;
        self
    }

    #[must_use]
    pub fn model(mut self, model: &str) -> Self {
        model.clone_into(&mut self.0.model);
        self
    }

    /// What the model reported: input and output tokens.
    #[must_use]
    pub fn usage(mut self, input: u32, output: u32) -> Self {
        (self.0.input_tokens, self.0.output_tokens) = (input, output);
        self
    }

    /// Our own counts of the user's and the assistant's text.
    #[must_use]
    pub fn counted(mut self, user: u32, assistant: u32) -> Self {
        (self.0.user_tokens, self.0.assistant_tokens) = (Some(user), Some(assistant));
        self
    }

    /// A blocked turn's guardrail assessment (`output:topic`).
    #[must_use]
    pub fn guardrail(mut self, assessment: &str) -> Self {
        self.0.guardrail = Some(assessment.to_owned());
        self
    }

    /// TTL, Unix seconds.
    #[must_use]
    pub fn expires_at(mut self, s: u64) -> Self {
        self.0.expires_at = s;
        self
    }

    pub fn build(self) -> TurnRecord {
        self.0
    }
}

impl From<TurnFixture> for TurnRecord {
    fn from(f: TurnFixture) -> Self {
        f.0
    }
}

/// The record `$connect` writes for `connection_id`: a signed-in user (not a guest), connected at 0,
/// expiring in 2100.
pub fn connection(connection_id: &str, session_id: &str, user_id: &str) -> ConnectionFixture {
    ConnectionFixture(ConnectionRecord {
        connection_id: conn(connection_id),
        session_id: session(session_id),
        user_id: user(user_id),
        guest: false,
        connected_at_ms: 0,
        expires_at: FAR_FUTURE_S,
    })
}

/// A [`ConnectionRecord`] being built (see [`connection`]).
#[derive(Debug, Clone)]
pub struct ConnectionFixture(ConnectionRecord);

impl ConnectionFixture {
    /// Signed in with a guest token.
    #[must_use]
    pub fn guest(mut self) -> Self {
        self.0.guest = true;
        self
    }

    #[must_use]
    pub fn connected_at(mut self, ms: u64) -> Self {
        self.0.connected_at_ms = ms;
        self
    }

    /// TTL, Unix seconds.
    #[must_use]
    pub fn expires_at(mut self, s: u64) -> Self {
        self.0.expires_at = s;
        self
    }

    pub fn build(self) -> ConnectionRecord {
        self.0
    }
}

impl From<ConnectionFixture> for ConnectionRecord {
    fn from(f: ConnectionFixture) -> Self {
        f.0
    }
}
