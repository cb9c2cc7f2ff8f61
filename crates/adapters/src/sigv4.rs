//! AWS Signature Version 4 for the HTTP sources that AWS serves outside the SDK: an Amazon OpenSearch Service
//! domain (signing name `es`) or an OpenSearch Serverless collection (`aoss`), with the function role's
//! credentials.
//!
//! Every signed request carries `x-amz-date`, `authorization` (`AWS4-HMAC-SHA256 Credential=<key>/<date>/
//! <region>/<service>/aws4_request, SignedHeaders=..., Signature=<64 hex>`), `x-amz-content-sha256` (the
//! body's SHA-256; OpenSearch Serverless refuses a request without it) and, with temporary credentials (a
//! Lambda role's always are), `x-amz-security-token`. Signing is done by the `aws-sigv4` crate the SDK itself
//! uses; this module only picks the settings and applies the headers to a `reqwest` request.
//!
//! Credentials come from the SDK's provider chain (in Lambda: the role's, from the environment) and are kept
//! until five minutes before they expire, so a turn never waits for them after the first.

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningParams, SigningSettings, sign as sigv4_sign,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::header::{HeaderName, HeaderValue};
use tokio::sync::Mutex;

/// How long before their expiry cached credentials are replaced.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

/// Which AWS service the requests are signed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningService {
    /// Amazon OpenSearch Service (a domain).
    OpenSearch,
    /// Amazon OpenSearch Serverless (a collection).
    OpenSearchServerless,
}

impl SigningService {
    /// The SigV4 signing name.
    pub fn name(self) -> &'static str {
        match self {
            Self::OpenSearch => "es",
            Self::OpenSearchServerless => "aoss",
        }
    }

    /// `es` or `aoss`; `None` for anything else (including `none`: unsigned).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "es" => Some(Self::OpenSearch),
            "aoss" => Some(Self::OpenSearchServerless),
            _ => None,
        }
    }
}

/// Why a request could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no AWS credentials provider is configured")]
    NoProvider,
    #[error("no AWS Region is configured for request signing")]
    NoRegion,
    #[error("the AWS credentials could not be loaded")]
    Credentials(#[source] aws_credential_types::provider::error::CredentialsError),
    #[error("the request could not be signed")]
    Signing(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Signs requests for one service in one Region with the provider's credentials.
#[derive(Debug)]
pub struct RequestSigner {
    service: SigningService,
    region: String,
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl RequestSigner {
    pub fn new(service: SigningService, region: impl Into<String>, provider: SharedCredentialsProvider) -> Self {
        Self { service, region: region.into(), provider, cached: Mutex::new(None) }
    }

    /// The Region and credentials provider of the functions' shared SDK configuration.
    pub fn from_sdk(service: SigningService, sdk: &SdkConfig) -> Result<Self, SignError> {
        let region = sdk.region().ok_or(SignError::NoRegion)?.to_string();
        let provider = sdk.credentials_provider().ok_or(SignError::NoProvider)?;
        Ok(Self::new(service, region, provider))
    }

    pub fn service(&self) -> SigningService {
        self.service
    }

    /// The cached credentials, or fresh ones when there are none or they expire within five minutes.
    async fn credentials(&self) -> Result<Credentials, SignError> {
        let mut cached = self.cached.lock().await;
        let fresh_enough = |c: &Credentials| {
            c.expiry().is_none_or(|at| at.duration_since(SystemTime::now()).unwrap_or_default() > REFRESH_BEFORE_EXPIRY)
        };
        if let Some(c) = cached.as_ref().filter(|c| fresh_enough(c)) {
            return Ok(c.clone());
        }
        let creds = self.provider.provide_credentials().await.map_err(SignError::Credentials)?;
        *cached = Some(creds.clone());
        Ok(creds)
    }

    /// Signs `request` in place (its method, URL, headers and whole body) at the current time.
    pub async fn sign(&self, request: &mut reqwest::Request) -> Result<(), SignError> {
        self.sign_at(request, SystemTime::now()).await
    }

    /// Signs `request` as of `time` (a verifier re-signs what it received at the request's `x-amz-date`).
    pub async fn sign_at(&self, request: &mut reqwest::Request, time: SystemTime) -> Result<(), SignError> {
        let creds = self.credentials().await?;
        self.sign_with(request, &creds, time)
    }

    /// Signs `request` with `creds` as of `time`: adds `x-amz-date`, `x-amz-content-sha256`,
    /// `authorization` and, with a session token, `x-amz-security-token`.
    pub fn sign_with(
        &self,
        request: &mut reqwest::Request,
        creds: &Credentials,
        time: SystemTime,
    ) -> Result<(), SignError> {
        let failed = |e: Box<dyn std::error::Error + Send + Sync>| SignError::Signing(e);
        let body: &[u8] = request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default();
        let headers: Vec<(&str, &str)> =
            request.headers().iter().filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?))).collect();
        let identity = Identity::from(creds.clone());
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params: SigningParams<'_> = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(self.service.name())
            .time(time)
            .settings(settings)
            .build()
            .map_err(|e| failed(Box::new(e)))?
            .into();
        let signable = SignableRequest::new(
            request.method().as_str(),
            request.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .map_err(|e| failed(Box::new(e)))?;
        let (instructions, _signature) = sigv4_sign(signable, &params).map_err(|e| failed(Box::new(e)))?.into_parts();
        let (new_headers, _query) = instructions.into_parts();
        for header in new_headers {
            let name = HeaderName::from_bytes(header.name().as_bytes()).map_err(|e| failed(Box::new(e)))?;
            let mut value = HeaderValue::from_str(header.value()).map_err(|e| failed(Box::new(e)))?;
            value.set_sensitive(header.sensitive());
            request.headers_mut().insert(name, value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(service: SigningService) -> RequestSigner {
        let creds = Credentials::new("AKIDEXAMPLE", "secret", Some("session".into()), None, "test");
        RequestSigner::new(service, "ap-northeast-1", SharedCredentialsProvider::new(creds))
    }

    fn search_request() -> reqwest::Request {
        reqwest::Client::new()
            .post("https://abc123.ap-northeast-1.aoss.amazonaws.com/manga/_search")
            .header("content-type", "application/json")
            .body(r#"{"size":3}"#)
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn a_serverless_request_is_signed_for_aoss_with_its_body_hash_and_session_token() {
        let mut req = search_request();
        signer(SigningService::OpenSearchServerless).sign(&mut req).await.unwrap();
        let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let auth = h("authorization");
        assert!(auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"), "{auth}");
        assert!(auth.contains("/ap-northeast-1/aoss/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-content-sha256"), "the body hash is signed: {auth}");
        // sha256 of {"size":3}
        let expected = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, br#"{"size":3}"#);
        let hex: String = expected.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(h("x-amz-content-sha256"), hex);
        assert_eq!(h("x-amz-security-token"), "session");
        assert_eq!(h("x-amz-date").len(), "20261203T000000Z".len());
    }

    #[test]
    fn the_same_request_signed_twice_at_the_same_time_has_the_same_signature() {
        let s = signer(SigningService::OpenSearch);
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_256_000);
        let (mut a, mut b) = (search_request(), search_request());
        s.sign_with(&mut a, &creds, at).unwrap();
        s.sign_with(&mut b, &creds, at).unwrap();
        let auth = |r: &reqwest::Request| r.headers()["authorization"].to_str().unwrap().to_owned();
        assert_eq!(auth(&a), auth(&b));
        assert!(auth(&a).contains("/es/aws4_request"));
        assert!(a.headers().get("x-amz-security-token").is_none(), "no token with long-term keys");
        let mut c = search_request();
        *c.body_mut() = Some(reqwest::Body::from(r#"{"size":4}"#));
        s.sign_with(&mut c, &creds, at).unwrap();
        assert_ne!(auth(&a), auth(&c), "the body is part of the signature");
    }

    #[test]
    fn only_es_and_aoss_name_a_signing_service() {
        assert_eq!(SigningService::parse("aoss").map(SigningService::name), Some("aoss"));
        assert_eq!(SigningService::parse("es").map(SigningService::name), Some("es"));
        assert_eq!(SigningService::parse("none"), None);
    }
}
