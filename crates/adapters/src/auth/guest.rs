//! Guest tokens: what lets an anonymous shopper chat (within tighter limits) when the operator allows guests.
//! HS256 over a secret of at least 32 bytes that the stack keeps in Secrets Manager (`GUEST_SECRET_ARN`), read
//! once per container; locally a random in-process key. Issuer `mangaassist-guest`, audience
//! `mangaassist-chat`, a short life (15 minutes by default: long enough to connect, and a connection outlives
//! its token), subject `g-<random>`, claim `guest: true`.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_secretsmanager::error::SdkError;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mangaassist_core::ids::UserId;
use serde::{Deserialize, Serialize};

/// The `iss` of every guest token.
pub const GUEST_ISSUER: &str = "mangaassist-guest";
/// The `aud` of every guest token: the chat WebSocket.
pub const GUEST_AUDIENCE: &str = "mangaassist-chat";
/// The shortest secret accepted (HS256 wants at least its hash size).
pub const MIN_SECRET_BYTES: usize = 32;

/// Why the guest key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum GuestKeyError {
    #[error("the guest secret is {0} bytes; at least 32 are required")]
    TooShort(usize),
    #[error("reading the guest secret from Secrets Manager failed: {0}")]
    SecretsManager(#[source] Box<SdkError<GetSecretValueError>>),
    #[error("the guest secret has no SecretString")]
    NotAString,
    #[error("signing a guest token failed: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The HS256 key guest tokens are signed and verified with.
#[derive(Clone)]
pub struct GuestKey(Arc<[u8]>);

impl std::fmt::Debug for GuestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GuestKey(..)")
    }
}

impl GuestKey {
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, GuestKeyError> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(GuestKeyError::TooShort(secret.len()));
        }
        Ok(Self(secret.into()))
    }

    /// A fresh random key (the local system's; tokens die with the process).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        // SystemRandom only fails when the OS has no entropy source; then the uuid below is the fallback.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
            bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        }
        Self(Arc::new(bytes))
    }

    /// The secret `arn` holds (its `SecretString`, as CloudFormation's `GenerateSecretString` writes it).
    pub async fn from_secrets_manager(
        client: &aws_sdk_secretsmanager::Client,
        arn: &str,
    ) -> Result<Self, GuestKeyError> {
        let out = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| GuestKeyError::SecretsManager(Box::new(e)))?;
        let secret = out.secret_string().ok_or(GuestKeyError::NotAString)?;
        Self::new(secret.as_bytes().to_vec())
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The Secrets Manager client the functions read the guest key with: request timeouts, bounded retries.
pub fn secrets_client(sdk: &aws_config::SdkConfig) -> aws_sdk_secretsmanager::Client {
    let conf = aws_sdk_secretsmanager::config::Builder::from(sdk)
        .timeout_config(crate::sdk::request_timeouts())
        .retry_config(crate::sdk::request_retries())
        .build();
    aws_sdk_secretsmanager::Client::from_conf(conf)
}

/// The claims of a guest token.
#[derive(Debug, Serialize, Deserialize)]
pub struct GuestClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub iat: u64,
    pub exp: u64,
    pub guest: bool,
}

/// A token handed to a guest.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    pub token: String,
    /// Seconds until the token expires (connect before then).
    pub expires_in: u64,
    pub user_id: UserId,
}

/// Signs guest tokens.
#[derive(Debug, Clone)]
pub struct GuestIssuer {
    key: GuestKey,
    pub ttl: Duration,
}

impl GuestIssuer {
    pub fn new(key: GuestKey, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    /// A token for a new guest, valid from `now_secs` for `ttl`.
    pub fn issue(&self, now_secs: u64) -> Result<IssuedToken, GuestKeyError> {
        let user_id = new_guest_id();
        let claims = GuestClaims {
            iss: GUEST_ISSUER.to_owned(),
            aud: GUEST_AUDIENCE.to_owned(),
            sub: user_id.as_str().to_owned(),
            iat: now_secs,
            exp: now_secs + self.ttl.as_secs(),
            guest: true,
        };
        let key = EncodingKey::from_secret(self.key.bytes()).map_err(GuestKeyError::Sign)?;
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).map_err(GuestKeyError::Sign)?;
        Ok(IssuedToken { token, expires_in: self.ttl.as_secs(), user_id })
    }
}

/// `g-` and 128 random bits (a v4 UUID's, from the OS generator), in hex.
fn new_guest_id() -> UserId {
    let id = format!("g-{}", uuid::Uuid::new_v4().simple());
    UserId::parse(id).unwrap_or_else(|_| UserId::anonymous())
}
