//! The authorizer's configuration, read once at cold start (see `mangaassist_adapters::auth::settings`).

use mangaassist_adapters::auth::settings::AuthSettings;
use mangaassist_adapters::env::{ConfigError, Env, FromEnv};

/// Everything the authorizer reads from the environment.
#[derive(Debug, Clone)]
pub struct AuthorizerConfig {
    pub auth: AuthSettings,
}

impl FromEnv for AuthorizerConfig {
    type Error = ConfigError;

    /// Reads the settings from `env` (the process environment in `main`, a map in tests and locally).
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, Self::Error> {
        Ok(Self { auth: AuthSettings::from_env(env)? })
    }
}
