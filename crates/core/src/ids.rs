//! Validated identifiers. Each has a `parse` constructor that rejects what could not have come from a
//! well-behaved client, from API Gateway or from the catalog, so the rest of the code never re-checks them.
//! They (de)serialize as plain strings, validated on the way in: a stored record or an async-invoke
//! payload with a malformed id fails to parse instead of travelling on.

use std::fmt;

use serde::{Deserialize, Serialize};

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
    ($(#[$doc:meta])* $name:ident, $field:literal, $example:literal, $max:expr, $ok:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validate and wrap.
            pub fn parse(s: impl Into<String>) -> Result<Self, InvalidId> {
                let s = s.into();
                check($field, &s, $max, $ok)?;
                extra_check($field, &s)?;
                Ok(Self(s))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// A valid example value, for documentation and the tests that hold docs to code.
            pub fn example() -> Self {
                Self($example.to_owned())
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

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<Self, InvalidId> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

/// Rules beyond length and alphabet (an ASIN's fixed length and prefix).
fn extra_check(field: &'static str, s: &str) -> Result<(), InvalidId> {
    if field == "asin" && !Asin::is_valid(s) {
        return Err(InvalidId { field, reason: "is not 10 characters starting with B0" });
    }
    Ok(())
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

id_type!(
    /// Client-chosen id of one user message (a UUID in practice); the idempotency key of a turn.
    MessageId, "message_id", "0f8e8f2c-example", 64, token_char
);
id_type!(
    /// API Gateway's id for a WebSocket connection, such as `L0SM9cOFvHcCIhw=`.
    ConnectionId, "connection_id", "L0SM9cOFvHcCIhw=", 128, |c: char| c.is_ascii_alphanumeric() || matches!(c, '=' | '-' | '_' | '+')
);
id_type!(
    /// A shopper's conversation; survives reconnects when the client passes it back on `$connect`.
    SessionId, "session_id", "5e55104e5e55104e5e55104e5e55104e", 64, token_char
);
id_type!(
    /// The signed-in shopper, or `anon`.
    UserId, "user_id", "u-example", 128, |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@')
);

id_type!(
    /// A store product id: 10 upper-case letters and digits starting with `B0` (book ISBN-10s, all digits,
    /// are not products of this store). What the prompt, the cache keys and the product cards are keyed by.
    Asin, "asin", "B0EXAMPLE1", 10, |c: char| c.is_ascii_uppercase() || c.is_ascii_digit()
);

impl Asin {
    /// Whether `s` is an ASIN, without allocating.
    pub fn is_valid(s: &str) -> bool {
        s.len() == 10 && s.starts_with("B0") && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    }

    /// The ASINs `text` mentions, in order of first mention, without repeats.
    pub fn all_in(text: &str) -> Vec<Asin> {
        let mut out: Vec<Asin> = Vec::new();
        for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
            if Self::is_valid(word) && !out.iter().any(|a| a.0 == word) {
                out.push(Self(word.to_owned()));
            }
        }
        out
    }
}

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

/// The network a frame came from, as API Gateway reports it (`requestContext.identity.sourceIp`): what the
/// guests' per-address limits count. An IPv4 address stands for itself; an IPv6 address for its /64, the
/// block one subscriber line is given (RFC 6177), so that stepping through one's own /64 does not make a
/// new address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SourceAddr(std::net::IpAddr);

impl SourceAddr {
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let ip: std::net::IpAddr =
            s.trim().parse().map_err(|_| InvalidId { field: "source_ip", reason: "is not an IP address" })?;
        Ok(Self(match ip {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => std::net::IpAddr::V4(v4),
                None => {
                    let mut seg = v6.segments();
                    seg[4..].fill(0);
                    std::net::IpAddr::V6(std::net::Ipv6Addr::from(seg))
                }
            },
            v4 => v4,
        }))
    }
}

impl fmt::Display for SourceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            std::net::IpAddr::V4(v4) => write!(f, "{v4}"),
            std::net::IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_source_stands_for_its_64_block_and_an_ipv4_for_itself() {
        let a = SourceAddr::parse("2001:db8:1:2:aaaa::1").unwrap();
        assert_eq!(a, SourceAddr::parse("2001:db8:1:2:bbbb:cccc:dddd:eeee").unwrap());
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_ne!(a, SourceAddr::parse("2001:db8:1:3::1").unwrap());
        assert_eq!(SourceAddr::parse("::ffff:203.0.113.7").unwrap().to_string(), "203.0.113.7");
        assert_eq!(SourceAddr::parse("203.0.113.7").unwrap().to_string(), "203.0.113.7");
        assert!(SourceAddr::parse("not-an-ip").is_err());
    }

    #[test]
    fn every_example_is_valid() {
        assert!(MessageId::parse(MessageId::example().as_str()).is_ok());
        assert!(ConnectionId::parse(ConnectionId::example().as_str()).is_ok());
        assert!(SessionId::parse(SessionId::example().as_str()).is_ok());
        assert!(UserId::parse(UserId::example().as_str()).is_ok());
        assert!(Asin::parse(Asin::example().as_str()).is_ok());
    }

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
    fn asins_are_ten_upper_case_characters_starting_with_b0() {
        assert!(Asin::parse("B0UZUMAKI1").is_ok());
        for bad in ["B0abc", "XB0ABCDEF1", "B0ABCDEF12X", "4088820010", "b0uzumaki1"] {
            assert!(Asin::parse(bad).is_err(), "{bad}");
        }
        let found = Asin::all_in("Try B0ABCDEF12 (進撃の巨人), or B0ZZZZZZZ9; B0ABCDEF12 again. Not B0abc.");
        assert_eq!(found, ["B0ABCDEF12", "B0ZZZZZZZ9"]);
    }

    #[test]
    fn ids_deserialize_only_when_valid() {
        let ok: Asin = serde_json::from_str("\"B0UZUMAKI1\"").unwrap();
        assert_eq!(ok.as_str(), "B0UZUMAKI1");
        assert!(serde_json::from_str::<Asin>("\"nope\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"B0UZUMAKI1\"");
    }

    #[test]
    fn empty_and_oversized_ids_are_rejected() {
        assert!(SessionId::parse("").is_err());
        assert!(MessageId::parse("x".repeat(65)).is_err());
        assert!(MessageId::parse("x".repeat(64)).is_ok());
    }
}
