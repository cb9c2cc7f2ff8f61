//! [`Verifier`]: from a token to a [`Principal`], or a reason not to let the connection in.
//!
//! A token is routed by its (still unverified) `iss`: `mangaassist-guest` to the guest key (HS256 only),
//! the configured issuer to its JWKS (RS256 or ES256 only, and only the algorithm the key named by `kid` is
//! bound to); anything else is refused before any key is looked at. Then the signature, `iss`, `exp`
//! (required) and `nbf` (when present) with a small leeway for clock skew, and the audience: `aud` must name
//! one of the configured audiences, or, for a Cognito access token (`token_use` = `access`, no `aud`),
//! `client_id` must. So both Cognito ID tokens (`aud` = app client id) and access tokens are accepted.

use std::collections::HashSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::guest::{GUEST_AUDIENCE, GUEST_ISSUER, GuestClaims, GuestKey};
use super::jwks::Jwks;
use super::{AuthError, Principal, user_id_for_subject};
use mangaassist_core::ids::UserId;

/// Clock skew tolerated on `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

/// The OIDC issuer whose users may chat (a Cognito user pool by default).
pub struct OidcIssuer {
    /// Exactly the tokens' `iss` (for Cognito `https://cognito-idp.<region>.amazonaws.com/<pool id>`).
    pub issuer: String,
    /// Accepted `aud` values (Cognito: the app client id; it is also what an access token's `client_id` holds).
    pub audiences: Vec<String>,
    pub jwks: Jwks,
}

/// Decides who a token speaks for. Built once per container.
pub struct Verifier {
    pub oidc: Option<OidcIssuer>,
    /// The guest key; without it guest tokens cannot be verified (and are refused as invalid).
    pub guest_key: Option<GuestKey>,
    /// `ALLOW_GUESTS`: when false a genuine guest token is refused ([`AuthError::GuestsForbidden`]).
    pub allow_guests: bool,
    pub leeway_secs: u64,
}

#[derive(Deserialize)]
struct Peek {
    iss: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct OidcClaims {
    sub: Option<String>,
    aud: Option<Audience>,
    client_id: Option<String>,
    token_use: Option<String>,
}

impl Verifier {
    /// The principal `token` proves.
    pub async fn verify(&self, token: Option<&str>) -> Result<Principal, AuthError> {
        let token = token.map(str::trim).filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed("header"))?;
        let peek: Peek =
            jsonwebtoken::dangerous::insecure_decode_claims(token).map_err(|_| AuthError::Malformed("claims"))?;
        let iss = peek.iss.ok_or(AuthError::Malformed("no iss"))?;
        if iss == GUEST_ISSUER {
            return self.verify_guest(token, header.alg);
        }
        let oidc = self.oidc.as_ref().filter(|o| o.issuer == iss).ok_or(AuthError::UnknownIssuer)?;
        self.verify_oidc(oidc, token, &header).await
    }

    fn validation(&self, alg: Algorithm, issuer: &str) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.leeway_secs;
        v.validate_nbf = true;
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        v
    }

    fn verify_guest(&self, token: &str, alg: Algorithm) -> Result<Principal, AuthError> {
        if alg != Algorithm::HS256 {
            return Err(AuthError::Algorithm(alg));
        }
        let key = self.guest_key.as_ref().ok_or(AuthError::UnknownIssuer)?;
        let key = DecodingKey::from_secret(key.bytes()).map_err(AuthError::Invalid)?;
        let mut v = self.validation(Algorithm::HS256, GUEST_ISSUER);
        v.set_audience(&[GUEST_AUDIENCE]);
        let claims = jsonwebtoken::decode::<GuestClaims>(token, &key, &v).map_err(AuthError::Invalid)?.claims;
        if !claims.guest || !claims.sub.starts_with("g-") {
            return Err(AuthError::Subject);
        }
        let user_id = UserId::parse(claims.sub).map_err(|_| AuthError::Subject)?;
        if !self.allow_guests {
            return Err(AuthError::GuestsForbidden);
        }
        Ok(Principal { user_id, guest: true })
    }

    async fn verify_oidc(
        &self,
        oidc: &OidcIssuer,
        token: &str,
        header: &jsonwebtoken::Header,
    ) -> Result<Principal, AuthError> {
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(AuthError::Algorithm(header.alg));
        }
        let kid = header.kid.as_deref().ok_or(AuthError::Malformed("no kid"))?;
        let key = oidc
            .jwks
            .key(kid)
            .await
            .map_err(AuthError::Keys)?
            .ok_or_else(|| AuthError::UnknownKey(super::shown(kid)))?;
        if key.alg != header.alg {
            return Err(AuthError::Algorithm(header.alg));
        }
        let mut v = self.validation(key.alg, &oidc.issuer);
        v.validate_aud = false; // checked below: `aud`, or `client_id` on a Cognito access token
        let claims = jsonwebtoken::decode::<OidcClaims>(token, &key.key, &v).map_err(AuthError::Invalid)?.claims;
        let accepted: HashSet<&str> = oidc.audiences.iter().map(String::as_str).collect();
        let audience_ok = match (&claims.aud, claims.token_use.as_deref(), claims.client_id.as_deref()) {
            (Some(Audience::One(a)), _, _) => accepted.contains(a.as_str()),
            (Some(Audience::Many(all)), _, _) => all.iter().any(|a| accepted.contains(a.as_str())),
            (None, Some("access"), Some(client)) => accepted.contains(client),
            (None, _, _) => false,
        };
        if !audience_ok {
            return Err(AuthError::Audience);
        }
        let user_id = claims.sub.as_deref().and_then(user_id_for_subject).ok_or(AuthError::Subject)?;
        Ok(Principal { user_id, guest: false })
    }
}

#[cfg(test)]
mod tests;
