//! The authorizer's configuration, read once at cold start (see `mangaassist_adapters::auth::settings`).

use mangaassist_adapters::auth::settings::AuthSettings;
use mangaassist_adapters::env::{ConfigError, Env, process_env};

/// Everything the authorizer reads from the environment.
#[derive(Debug, Clone)]
pub struct AuthorizerConfig {
    pub auth: AuthSettings,
}

impl AuthorizerConfig {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(&process_env())
    }

    /// Reads the settings from `env` (the process environment in `main`, a map in tests and locally).
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        Ok(Self { auth: AuthSettings::from_env(env)? })
    }
}
