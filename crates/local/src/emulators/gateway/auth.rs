//! SigV4 on the emulator's `@connections` management API, as on AWS: the real API refuses a request that is
//! not signed for `execute-api` by credentials allowed `execute-api:ManageConnections` (AWS docs, "Control
//! access to WebSocket APIs with IAM authorization"). Here the only credentials allowed are a key pair made
//! for the run ([`ManagementKey::random`]), which the system hands to the chat handler's SDK client and to
//! nobody else, so a caller who learns a connection id cannot read its address, post to it or close it.
//!
//! The check re-signs what arrived with the aws-sigv4 crate the SDK signs with (the headers the request
//! says it signed, its `x-amz-date`, the body) and compares signatures in constant time. Refusals are 403
//! with the error types API Gateway uses (`MissingAuthenticationTokenException`,
//! `UnrecognizedClientException`, `InvalidSignatureException`).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::HeaderMap;

/// The signing name of the management API.
pub const SERVICE: &str = "execute-api";
/// How far a request's `x-amz-date` may be from now: "a request must reach AWS within five minutes of the
/// time stamp in the request" (IAM User Guide, "AWS Signature Version 4 for API requests",
/// docs.aws.amazon.com/IAM/latest/UserGuide/reference_aws-signing.html).
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The credentials allowed to manage connections, made for one run.
#[derive(Clone, PartialEq, Eq)]
pub struct ManagementKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The Region requests are signed for (the local SDK configuration's).
    pub region: String,
}

impl std::fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagementKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("region", &self.region)
            .finish()
    }
}

impl ManagementKey {
    /// A fresh key pair: a 20-character access key id (`LOCAL` + random) and a 40-character secret, from the
    /// OS's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 40];
        let secret: String = if aws_lc_rs::rand::fill(&mut bytes).is_ok() {
            const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()
        } else {
            // Never expected; still unguessable enough for a laptop run that fastrand was seeded from the OS.
            (0..40).map(|_| fastrand::alphanumeric()).collect()
        };
        let id: String = (0..15).map(|_| fastrand::uppercase()).collect();
        Self { access_key_id: format!("LOCAL{id}"), secret_access_key: secret, region: "us-east-1".to_owned() }
    }
}

/// Why a management request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("Missing Authentication Token")]
    Missing,
    #[error("The security token included in the request is invalid.")]
    UnknownKey,
    #[error("Signature expired or not yet valid: the request time is more than 5 minutes from now.")]
    Skewed,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method."
    )]
    Mismatch,
}

impl Refusal {
    /// The `x-amzn-ErrorType` API Gateway sends.
    pub fn error_type(self) -> &'static str {
        match self {
            Self::Missing => "MissingAuthenticationTokenException",
            Self::UnknownKey => "UnrecognizedClientException",
            Self::Skewed | Self::Mismatch => "InvalidSignatureException",
        }
    }
}

/// The parts of `AWS4-HMAC-SHA256 Credential=<id>/<date>/<region>/<service>/aws4_request, SignedHeaders=a;b,
/// Signature=<hex>`.
struct Authorization<'a> {
    access_key_id: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let mut scope = credential?.split('/');
    let access_key_id = scope.next()?;
    let _date = scope.next()?;
    let region = scope.next()?;
    let service = scope.next()?;
    (scope.next()? == "aws4_request").then_some(())?;
    Some(Authorization {
        access_key_id,
        region,
        service,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// `20261203T101500Z` as a time.
fn parse_amz_date(v: &str) -> Option<SystemTime> {
    let b = v.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let rfc3339 = format!("{}-{}-{}T{}:{}:{}Z", &v[0..4], &v[4..6], &v[6..8], &v[9..11], &v[11..13], &v[13..15]);
    let dt = aws_smithy_types::DateTime::from_str(&rfc3339, aws_smithy_types::date_time::Format::DateTime).ok()?;
    SystemTime::try_from(dt).ok()
}

/// Whether the request (`uri` as received: path and query) is signed by `key` for the management API.
pub fn verify(
    key: &ManagementKey,
    method: &str,
    uri: &str,
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> Result<(), Refusal> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let auth = header("authorization").ok_or(Refusal::Missing)?;
    let auth = parse_authorization(auth).ok_or(Refusal::Missing)?;
    if auth.access_key_id != key.access_key_id {
        return Err(Refusal::UnknownKey);
    }
    if auth.service != SERVICE || auth.region != key.region {
        return Err(Refusal::Mismatch);
    }
    let time = header("x-amz-date").and_then(parse_amz_date).ok_or(Refusal::Mismatch)?;
    let skew = now.duration_since(time).unwrap_or_else(|e| e.duration());
    if skew > MAX_SKEW {
        return Err(Refusal::Skewed);
    }
    let mut signed: Vec<(&str, &str)> = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let mut any = false;
        for value in headers.get_all(*name) {
            signed.push((name, value.to_str().map_err(|_| Refusal::Mismatch)?));
            any = true;
        }
        if !any {
            return Err(Refusal::Mismatch);
        }
    }
    let host = header("host").ok_or(Refusal::Mismatch)?;
    let identity = Identity::from(Credentials::new(&key.access_key_id, &key.secret_access_key, None, None, "gateway"));
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&key.region)
        .name(SERVICE)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|_| Refusal::Mismatch)?
        .into();
    let url = format!("http://{host}{uri}");
    let signable = SignableRequest::new(method, url, signed.into_iter(), SignableBody::Bytes(body))
        .map_err(|_| Refusal::Mismatch)?;
    let (_, expected) = sign(signable, &params).map_err(|_| Refusal::Mismatch)?.into_parts();
    aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), auth.signature.as_bytes())
        .map_err(|_| Refusal::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_random_and_never_printed_by_debug() {
        let (a, b) = (ManagementKey::random(), ManagementKey::random());
        assert_ne!(a.secret_access_key, b.secret_access_key);
        assert_eq!(a.secret_access_key.len(), 40);
        assert!(!format!("{a:?}").contains(&a.secret_access_key));
    }

    #[test]
    fn an_unsigned_or_foreign_request_is_refused_with_apigateways_error_types() {
        let key = ManagementKey::random();
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        let v = verify(&key, "GET", "/local/@connections/abc%3D", &h, b"", now);
        assert_eq!(v, Err(Refusal::Missing));
        assert_eq!(Refusal::Missing.error_type(), "MissingAuthenticationTokenException");
        h.insert(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/execute-api/aws4_request, SignedHeaders=host, Signature=00"
                .parse()
                .unwrap(),
        );
        assert_eq!(verify(&key, "GET", "/x", &h, b"", now), Err(Refusal::UnknownKey));
        assert_eq!(parse_amz_date("20261203T101500Z").map(|t| t > SystemTime::UNIX_EPOCH), Some(true));
        assert_eq!(parse_amz_date("2026-12-03"), None);
    }
}
