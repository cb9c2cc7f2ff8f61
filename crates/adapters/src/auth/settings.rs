//! What the authorizer and the token function read from the environment at cold start.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ISSUER_URL` | unset | the OIDC issuer, exactly as tokens carry it in `iss`; unset: guests only |
//! | `JWKS_URL` | `{ISSUER_URL}/.well-known/jwks.json` | its keys (Cognito's path; set it for issuers that differ) |
//! | `AUDIENCE` | (required with `ISSUER_URL`) | accepted audiences / Cognito app client ids, comma-separated |
//! | `ALLOW_GUESTS` | `false` | accept guest tokens (authorizer) and issue them (token endpoint) |
//! | `GUEST_SECRET_ARN` | unset | the Secrets Manager secret guest tokens are signed with |
//! | `AUTH_LEEWAY_SECS` | `60` | clock skew tolerated on `exp`/`nbf` |
//! | `JWKS_CACHE_SECS` | `3600` | how long fetched keys are used |

use std::time::Duration;

use super::jwks::{Jwks, JwksConfig};
use super::verify::{DEFAULT_LEEWAY_SECS, OidcIssuer};
use crate::env::{ConfigError, Env};

/// The authentication settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    pub issuer: Option<IssuerSettings>,
    pub allow_guests: bool,
    pub guest_secret_arn: Option<String>,
    pub leeway_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerSettings {
    pub issuer: String,
    pub jwks_url: String,
    pub audiences: Vec<String>,
    pub jwks_ttl: Duration,
}

impl IssuerSettings {
    /// The issuer with its (empty, lazily fetched) key cache.
    pub fn build(&self) -> OidcIssuer {
        let mut cfg = JwksConfig::new(&self.jwks_url);
        cfg.ttl = self.jwks_ttl;
        OidcIssuer { issuer: self.issuer.clone(), audiences: self.audiences.clone(), jwks: Jwks::new(cfg) }
    }
}

impl AuthSettings {
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let issuer = match env.nonempty("ISSUER_URL") {
            None => None,
            Some(url) => {
                let issuer = url.trim_end_matches('/').to_owned();
                let audiences: Vec<String> = env
                    .nonempty("AUDIENCE")
                    .map(|a| a.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
                    .unwrap_or_default();
                if audiences.is_empty() {
                    return Err(ConfigError {
                        name: "AUDIENCE",
                        value: String::new(),
                        reason: "required with ISSUER_URL (the app client id or audience)",
                    });
                }
                let jwks_url = env.nonempty("JWKS_URL").unwrap_or_else(|| format!("{issuer}/.well-known/jwks.json"));
                let jwks_ttl = Duration::from_secs(env.parse("JWKS_CACHE_SECS", 3600, "expected seconds")?);
                Some(IssuerSettings { issuer, jwks_url, audiences, jwks_ttl })
            }
        };
        Ok(Self {
            issuer,
            allow_guests: env.switch("ALLOW_GUESTS", false)?,
            guest_secret_arn: env.nonempty("GUEST_SECRET_ARN"),
            leeway_secs: env.parse("AUTH_LEEWAY_SECS", DEFAULT_LEEWAY_SECS, "expected seconds")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Env(move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn a_cognito_issuer_gets_its_jwks_path_and_audiences() {
        let s = AuthSettings::from_env(&env(&[
            ("ISSUER_URL", "https://cognito-idp.ap-northeast-1.amazonaws.com/ap-northeast-1_abc/"),
            ("AUDIENCE", "client1, client2"),
            ("ALLOW_GUESTS", "true"),
        ]))
        .unwrap();
        let i = s.issuer.unwrap();
        assert_eq!(i.issuer, "https://cognito-idp.ap-northeast-1.amazonaws.com/ap-northeast-1_abc");
        assert_eq!(
            i.jwks_url,
            "https://cognito-idp.ap-northeast-1.amazonaws.com/ap-northeast-1_abc/.well-known/jwks.json"
        );
        assert_eq!(i.audiences, ["client1", "client2"]);
        assert!(s.allow_guests);
    }

    #[test]
    fn an_issuer_without_an_audience_is_a_configuration_error_and_guests_are_off_by_default() {
        assert!(AuthSettings::from_env(&env(&[("ISSUER_URL", "https://issuer")])).is_err());
        let s = AuthSettings::from_env(&env(&[])).unwrap();
        assert!(s.issuer.is_none() && !s.allow_guests);
    }
}
