//! The local system's own token issuer, so that `serve`, `chat`, `bench` and the tests connect through the same
//! `$connect` authorizer as on AWS: an ES256 key pair generated at start, its JWKS at
//! `GET /.well-known/jwks.json` of the gateway's address (the issuer URL is `http://<gateway addr>`, so the
//! authorizer's default JWKS path finds it), a development login `POST /local/login?user=NAME` answering a
//! user token (what a Cognito sign-in would hand the browser), and the guest endpoint `POST /token`, served
//! by the token function's own `issue` with an in-process guest key and rate limiter.
//!
//! The development login signs anyone in as anyone, so it answers only a loopback peer that also named a
//! loopback `Host` (`localhost`, `127.0.0.1`, `[::1]`): a page on another site that resolves its own name to
//! 127.0.0.1 (DNS rebinding) sends its own `Host` and is refused, and so is any other machine when `serve`
//! is exposed on the network. An empty user name is refused (the authorizer would refuse its token).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use axum::Router;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use mangaassist_adapters::auth::guest::{GuestIssuer, GuestKey, IssuedToken};
use mangaassist_adapters::auth::jwks::{Jwks, JwksConfig};
use mangaassist_adapters::auth::limit::MemoryRateLimiter;
use mangaassist_adapters::auth::verify::{DEFAULT_LEEWAY_SECS, OidcIssuer, Verifier};
use serde_json::{Value, json};

/// The audience (app client id) of local user tokens.
pub const LOCAL_AUDIENCE: &str = "mangaassist-local";
/// How long a local user token lives.
pub const USER_TOKEN_TTL: Duration = Duration::from_secs(3600);
/// Guest tokens per source IP per minute at the local `POST /token` (generous: tests and benches share 127.0.0.1).
pub const LOCAL_GUEST_RATE: u32 = 10_000;

/// The local issuer of user and guest tokens.
pub struct LocalIssuer {
    issuer: String,
    kid: String,
    key: EncodingKey,
    jwks: Value,
    guest_key: GuestKey,
    /// The token function's state, as the local `POST /token` serves it.
    pub token_app: token::handler::App<MemoryRateLimiter>,
}

fn now_secs() -> u64 {
    token::handler::now_secs()
}

impl LocalIssuer {
    /// A fresh key pair for the issuer at `http://{addr}`; guest tokens issued when `allow_guests`.
    pub fn new(addr: SocketAddr, allow_guests: bool) -> anyhow::Result<Self> {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
            .map_err(|_| anyhow::anyhow!("Failed to generate the local issuer's key"))?;
        let der = pair.to_pkcs8v1().map_err(|_| anyhow::anyhow!("Failed to encode the local issuer's key"))?;
        let key = EncodingKey::from_ec_der(der.as_ref());
        let kid = format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).context("Failed to describe the key as a JWK")?;
        jwk.common.key_id = Some(kid.clone());
        let guest_key = GuestKey::random();
        let token_app = token::handler::App {
            issuer: allow_guests.then(|| GuestIssuer::new(guest_key.clone(), Duration::from_secs(900))),
            limiter: MemoryRateLimiter::new(LOCAL_GUEST_RATE),
        };
        Ok(Self { issuer: format!("http://{addr}"), kid, key, jwks: json!({ "keys": [jwk] }), guest_key, token_app })
    }

    /// The `iss` of user tokens (`ISSUER_URL` for an authorizer run elsewhere).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The verifier the local authorizer runs: this issuer's JWKS fetched over HTTP, as on AWS.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            oidc: Some(OidcIssuer {
                issuer: self.issuer.clone(),
                audiences: vec![LOCAL_AUDIENCE.to_owned()],
                jwks: Jwks::new(JwksConfig::new(format!("{}/.well-known/jwks.json", self.issuer))),
            }),
            guest_key: Some(self.guest_key.clone()),
            allow_guests: self.token_app.issuer.is_some(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }

    /// Any claims, signed with the issuer's key (tests use it for expired tokens and foreign audiences).
    pub fn sign(&self, claims: &Value) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).context("Failed to sign a token")
    }

    /// The claims of a user token for `user`, valid for an hour.
    pub fn user_claims(&self, user: &str) -> Value {
        let now = now_secs();
        json!({
            "iss": self.issuer, "aud": LOCAL_AUDIENCE, "sub": user, "token_use": "id",
            "iat": now, "exp": now + USER_TOKEN_TTL.as_secs(),
        })
    }

    /// A user token for `user` (its user id is `u-<user>`).
    pub fn user_token(&self, user: &str) -> anyhow::Result<String> {
        self.sign(&self.user_claims(user))
    }

    /// A guest token, when guests are allowed.
    pub fn guest_token(&self) -> anyhow::Result<IssuedToken> {
        let issuer = self.token_app.issuer.as_ref().context("guests are not allowed")?;
        issuer.issue(now_secs()).context("Failed to sign a guest token")
    }

    /// The issuer's endpoints, merged into the gateway's router.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/local/login", post(login))
            .route("/token", post(guest))
            .with_state(self)
    }
}

async fn jwks(State(i): State<Arc<LocalIssuer>>) -> Response {
    axum::Json(i.jwks.clone()).into_response()
}

#[derive(serde::Deserialize)]
struct Login {
    user: Option<String>,
}

/// Whether a `Host` header names this machine's loopback (`localhost`, `127.0.0.1`, `[::1]`, any port).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(inside, _)| inside),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A development sign-in: no password, any user name (valid as a user id); loopback only (module docs).
async fn login(
    State(i): State<Arc<LocalIssuer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<Login>,
) -> Response {
    let host = headers.get("host").and_then(|h| h.to_str().ok()).unwrap_or_default();
    if !peer.ip().to_canonical().is_loopback() || !is_loopback_host(host) {
        tracing::warn!(peer = %peer.ip(), "refused a development login from outside this machine");
        let body = json!({ "error": "loopback_only", "message": "the development login answers only this machine (http://127.0.0.1:PORT)" });
        return (StatusCode::FORBIDDEN, axum::Json(body)).into_response();
    }
    let user = q.user.unwrap_or_else(|| "local-shopper".to_owned());
    if user.trim().is_empty() || mangaassist_core::ids::UserId::parse(format!("u-{user}")).is_err() {
        return (StatusCode::BAD_REQUEST, axum::Json(json!({ "error": "invalid_user" }))).into_response();
    }
    match i.user_token(&user) {
        Ok(token) => axum::Json(json!({
            "token": token, "expires_in": USER_TOKEN_TTL.as_secs(), "user_id": format!("u-{user}"),
        }))
        .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")).into_response(),
    }
}

/// `POST /token`: the token function's decision, for the caller's address.
async fn guest(State(i): State<Arc<LocalIssuer>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let reply = token::handler::issue(&i.token_app, &peer.ip().to_string(), now_secs()).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, axum::Json(reply.body)).into_response();
    if let Some(s) = reply.retry_after_secs.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
        resp.headers_mut().insert("retry-after", s);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in ["localhost", "LOCALHOST:8080", "127.0.0.1:8080", "127.0.0.2", "[::1]:8080", "[::1]"] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["", "evil.example:8080", "localhost.evil.example", "192.168.1.20:8080", "[fe80::1]:80", "0.0.0.0:8080"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }
}
