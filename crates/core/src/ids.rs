//! Validated identifiers. Each has a `parse` constructor that rejects what could not have come from a
//! well-behaved client or from API Gateway, so the rest of the code never re-checks them.

use std::fmt;

/// Why an identifier was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {reason}")]
pub struct InvalidId {
    pub field: &'static str,
    pub reason: &'static str,
}

fn check(field: &'static str, s: &str, max: usize, ok: impl Fn(char) -> bool) -> Result<(), InvalidId> {
    if s.is_empty() {
        return Err(InvalidId { field, reason: "is empty" });
    }
    if s.len() > max {
        return Err(InvalidId { field, reason: "is too long" });
    }
    if !s.chars().all(ok) {
        return Err(InvalidId { field, reason: "has characters outside the allowed set" });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $max:expr, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap.
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                check($field, &s, $max, $ok)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

id_type!(
    /// Client-chosen id of one user message (a UUID in practice); the idempotency key of a turn.
    MessageId, "message_id", 64, token_char
);
id_type!(
    /// API Gateway's id for a WebSocket connection, such as `L0SM9cOFvHcCIhw=`.
    ConnectionId, "connection_id", 128, |c: char| c.is_ascii_alphanumeric() || matches!(c, '=' | '-' | '_' | '+')
);
id_type!(
    /// A shopper's conversation; survives reconnects when the client passes it back on `$connect`.
    SessionId, "session_id", 64, token_char
);
id_type!(
    /// The signed-in shopper, or `anon`.
    UserId, "user_id", 128, |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')
);

impl SessionId {
    /// A new random session id (128 bits, hex).
    pub fn random() -> Self {
        Self(format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)))
    }
}

impl UserId {
    /// The user id of a shopper who is not signed in.
    pub fn anonymous() -> Self {
        Self("anon".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_gateway_connection_ids_are_accepted() {
        assert!(ConnectionId::parse("L0SM9cOFvHcCIhw=").is_ok());
    }

    #[test]
    fn a_message_id_with_a_slash_is_rejected() {
        let err = MessageId::parse("a/b").unwrap_err();
        assert_eq!(err.field, "message_id");
    }

    #[test]
    fn empty_and_oversized_ids_are_rejected() {
        assert!(SessionId::parse("").is_err());
        assert!(MessageId::parse("x".repeat(65)).is_err());
        assert!(MessageId::parse("x".repeat(64)).is_ok());
    }
}
