//! Authentication at `$connect`: who is on the other end of a WebSocket, decided once per connection by the
//! REQUEST authorizer (`functions/authorizer`) from the `token` query parameter (browsers cannot set headers on
//! a WebSocket), and the guest tokens a storefront hands to anonymous shoppers (`functions/token`).
//!
//! # Layout
//! - [`jwks`]: the issuer's signing keys (JWKS), fetched with timeouts and cached per container.
//! - [`guest`]: guest tokens: the signing key (Secrets Manager in production, fixed locally) and issuing.
//! - [`verify`]: [`verify::Verifier`]: which key and algorithm a token may use, then `iss`, `aud`, `exp`/`nbf`.
//! - [`limit`]: the token endpoint's per-source-IP rate limit (a DynamoDB counter, or in memory).
//! - [`settings`]: the environment both functions read (`ISSUER_URL`, `AUDIENCE`, `ALLOW_GUESTS`, ...).
//!
//! Here, below them: the [`Principal`] a token proves, its user id, and [`AuthError`].

pub mod guest;
pub mod jwks;
pub mod limit;
pub mod settings;
pub mod verify;

use mangaassist_core::ids::UserId;

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `u-<sub>` for a signed-in user of the issuer, `g-<random>` for a guest: the two never collide.
    pub user_id: UserId,
    /// A guest holds a guest token: the chat function may give it tighter limits.
    pub guest: bool,
}

/// The user id of an issuer's subject: `u-<sub>` when that is a valid [`UserId`] (Cognito's UUIDs are),
/// otherwise `u_` and the first 128 bits of the subject's SHA-256 in hex, so any `sub` maps to one stable id
/// and no `sub` can pose as another one (the prefixes differ) or as a guest (`g-`).
pub fn user_id_for_subject(sub: &str) -> Option<UserId> {
    if sub.is_empty() {
        return None;
    }
    if let Ok(id) = UserId::parse(format!("u-{sub}")) {
        return Some(id);
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, sub.as_bytes());
    let hex: String = digest.as_ref()[..16].iter().map(|b| format!("{b:02x}")).collect();
    UserId::parse(format!("u_{hex}")).ok()
}

/// The longest part of an untrusted value (a token header field) kept in an error or a log line.
pub const SHOWN_CHARS: usize = 64;

/// An untrusted value as it may be logged: its first [`SHOWN_CHARS`] characters, and how long it was when
/// cut (an attacker chooses a `kid` of any length; the log line must not grow with it).
pub fn shown(untrusted: &str) -> String {
    match untrusted.char_indices().nth(SHOWN_CHARS) {
        None => untrusted.to_owned(),
        Some((cut, _)) => format!("{}… ({} bytes)", &untrusted[..cut], untrusted.len()),
    }
}

/// Why a connection is not let in. [`AuthError::is_refusal`] separates a valid token this deployment refuses
/// (the authorizer answers a Deny policy: 403) from a token that proves nothing (`Unauthorized`: 401);
/// [`AuthError::is_server_fault`] marks failures that are ours, not the client's (a Lambda error: 500).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token issuer is not trusted")]
    UnknownIssuer,
    #[error("algorithm {0:?} is not accepted for this issuer")]
    Algorithm(jsonwebtoken::Algorithm),
    /// The `kid` is cut to [`SHOWN_CHARS`] characters ([`shown`]).
    #[error("no key {0:?} in the issuer's JWKS")]
    UnknownKey(String),
    #[error("token rejected: {0}")]
    Invalid(#[source] jsonwebtoken::errors::Error),
    #[error("token audience is not accepted")]
    Audience,
    #[error("token subject is missing or unusable")]
    Subject,
    #[error("guest tokens are not accepted here")]
    GuestsForbidden,
    #[error("the issuer's keys are unavailable: {0}")]
    Keys(#[source] jwks::JwksError),
}

impl AuthError {
    /// A stable machine-readable code, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed(_) => "malformed",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Algorithm(_) => "algorithm",
            Self::UnknownKey(_) => "unknown_key",
            Self::Invalid(e) => match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired",
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "not_yet_valid",
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "bad_signature",
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => "issuer",
                jsonwebtoken::errors::ErrorKind::InvalidAudience => "audience",
                _ => "invalid",
            },
            Self::Audience => "audience",
            Self::Subject => "subject",
            Self::GuestsForbidden => "guests_forbidden",
            Self::Keys(_) => "keys_unavailable",
        }
    }

    /// The token is genuine but not welcome here (guests when guests are off): Deny, 403.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::GuestsForbidden)
    }

    /// We could not decide (the issuer's JWKS is unreachable): an error, not a verdict on the client.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, Self::Keys(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uuid_subject_keeps_its_value_under_the_user_prefix() {
        let id = user_id_for_subject("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0").unwrap();
        assert_eq!(id, "u-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
    }

    #[test]
    fn an_unusable_subject_is_hashed_to_a_stable_valid_id() {
        let a = user_id_for_subject("auth0|user with spaces/and:colons").unwrap();
        let b = user_id_for_subject("auth0|user with spaces/and:colons").unwrap();
        assert_eq!(a, b);
        assert!(a.as_str().starts_with("u_") && a.as_str().len() == 34, "{a}");
        assert_ne!(user_id_for_subject(&"x".repeat(200)).unwrap(), a);
        assert!(user_id_for_subject("").is_none());
    }
}
