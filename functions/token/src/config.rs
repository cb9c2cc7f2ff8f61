//! The token function's configuration, read once at cold start.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `ALLOW_GUESTS` | `false` | issue guest tokens; `false`: every request gets 403 |
//! | `GUEST_SECRET_ARN` | (required when guests are allowed) | the Secrets Manager secret tokens are signed with |
//! | `GUEST_TOKEN_TTL_SECS` | `900` | a guest token's life |
//! | `TABLE_NAME` | `mangaassist` | the table holding the per-IP counters |
//! | `TOKEN_RATE_PER_MINUTE` | `10` | tokens per source IP per minute |

use std::time::Duration;

use mangaassist_adapters::auth::settings::AuthSettings;
use mangaassist_adapters::env::{ConfigError, Env, FromEnv};

#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub auth: AuthSettings,
    pub ttl: Duration,
    pub table_name: String,
    pub per_minute: u32,
}

impl FromEnv for TokenConfig {
    type Error = ConfigError;

    /// Reads the settings from `env` (the process environment in `main`, a map in tests and locally).
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, Self::Error> {
        let auth = AuthSettings::from_env(env)?;
        if auth.allow_guests && auth.guest_secret_arn.is_none() {
            return Err(ConfigError {
                name: "GUEST_SECRET_ARN",
                value: String::new(),
                reason: "required when ALLOW_GUESTS is true",
            });
        }
        Ok(Self {
            auth,
            ttl: Duration::from_secs(env.parse("GUEST_TOKEN_TTL_SECS", 900, "expected seconds")?),
            table_name: env.nonempty("TABLE_NAME").unwrap_or_else(|| "mangaassist".to_owned()),
            per_minute: env.parse("TOKEN_RATE_PER_MINUTE", 10, "expected a count")?,
        })
    }
}
