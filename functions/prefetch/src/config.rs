//! Configuration of the prefetch function, read from the environment once at cold start.
//!
//! The sources are the chat function's (`REDIS_URL`, `REDIS_CLUSTER`, `OPENSEARCH_URL`, `OPENSEARCH_INDEX`,
//! `PRODUCTS_URL` and `REVIEWS_URL`, `RECOMMENDATIONS_URL`, `PROMOTIONS_URL` defaulting to it); an unset
//! source is skipped. Without `REDIS_URL` there is nowhere to prefetch into, so every run does nothing useful.
//!
//! Pre-generated answers are spent against the user's day in the chat table (`TABLE_NAME`, with the chat
//! function's `DAILY_TOKENS` and `GUEST_DAILY_TOKENS`); without `TABLE_NAME` they are not counted (logged at
//! cold start).

pub use mangaassist_adapters::env::ConfigError;
use mangaassist_adapters::env::{Env, FromEnv, SourceSettings, pregen_settings, prompt_budget};
use mangaassist_core::admit::limits::{LimitConfig, Tier};
use mangaassist_core::ahead::prefetch::PrefetchConfig;
use mangaassist_core::pregen::PregenConfig;
use mangaassist_core::prompt::compress::PromptBudget;

/// Everything the prefetch function reads from its environment.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefetchFnConfig {
    pub sources: SourceSettings,
    /// `PREFETCH_THRESHOLD` (default 0.25) and `PREFETCH_TIMEOUT_MS` (default 2000).
    pub prefetch: PrefetchConfig,
    /// Speculative pre-generation (`PREGEN`, ...; see `mangaassist_adapters::env::pregen_settings`).
    pub pregen: PregenConfig,
    /// The chat function's prompt budgets (`BUDGET_*_TOKENS`): a pre-generated answer's prompt is built
    /// as the turn's would be.
    pub budget: PromptBudget,
    /// The chat table (`TABLE_NAME`), where the users' days are counted; `None`: not counted.
    pub table_name: Option<String>,
    /// The users' daily token budgets (`DAILY_TOKENS`, `GUEST_DAILY_TOKENS`; the chat function's defaults).
    pub limits: LimitConfig,
}

impl FromEnv for PrefetchFnConfig {
    type Error = ConfigError;

    /// Reads the configuration through `get` (the process environment in `main`, a map in tests).
    /// Reads the settings from `env` (the process environment in `main`, a map in tests and locally).
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, Self::Error> {
        let d = PrefetchConfig::default();
        let threshold: f64 = env.parse("PREFETCH_THRESHOLD", d.threshold, "expected 0.0 to 1.0")?;
        if !(0.0..=1.0).contains(&threshold) {
            return Err(ConfigError {
                name: "PREFETCH_THRESHOLD",
                value: threshold.to_string(),
                reason: "expected 0.0 to 1.0",
            });
        }
        let timeout = env.millis("PREFETCH_TIMEOUT_MS", d.timeout)?;
        if timeout.is_zero() {
            return Err(ConfigError { name: "PREFETCH_TIMEOUT_MS", value: "0".into(), reason: "expected ms >= 1" });
        }
        let l = LimitConfig::default();
        let limits = LimitConfig {
            user: Tier {
                tokens_per_day: env.parse("DAILY_TOKENS", l.user.tokens_per_day, "expected a token count")?,
                ..l.user
            },
            guest: Tier {
                tokens_per_day: env.parse("GUEST_DAILY_TOKENS", l.guest.tokens_per_day, "expected a token count")?,
                ..l.guest
            },
            ..l
        };
        Ok(Self {
            table_name: env.nonempty("TABLE_NAME"),
            limits,
            sources: SourceSettings::read(env)?,
            prefetch: PrefetchConfig { threshold, timeout, ..d },
            pregen: pregen_settings(env)?,
            budget: prompt_budget(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(pairs: &[(&str, &str)]) -> Result<PrefetchFnConfig, ConfigError> {
        PrefetchFnConfig::from_pairs(pairs)
    }

    #[test]
    fn defaults_need_no_environment() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.sources, SourceSettings::default());
        assert_eq!(c.prefetch, PrefetchConfig::default());
        assert_eq!((c.table_name, c.limits), (None, LimitConfig::default()));
    }

    #[test]
    fn the_users_days_are_read_as_the_chat_function_reads_them() {
        let c = cfg(&[("TABLE_NAME", "chat"), ("GUEST_DAILY_TOKENS", "5000")]).unwrap();
        assert_eq!(c.table_name.as_deref(), Some("chat"));
        assert_eq!(c.limits.guest.tokens_per_day, 5000);
        assert_eq!(c.limits.user.tokens_per_day, LimitConfig::default().user.tokens_per_day);
        assert_eq!(cfg(&[("DAILY_TOKENS", "x")]).unwrap_err().name, "DAILY_TOKENS");
    }

    #[test]
    fn settings_are_read_and_service_urls_default_to_the_products_one() {
        let c = cfg(&[
            ("REDIS_URL", "rediss://cache:6379"),
            ("REDIS_CLUSTER", "true"),
            ("OPENSEARCH_URL", "http://os"),
            ("PRODUCTS_URL", "http://p"),
            ("REVIEWS_URL", "http://r"),
            ("PREFETCH_THRESHOLD", "0.4"),
            ("PREFETCH_TIMEOUT_MS", "500"),
        ])
        .unwrap();
        assert_eq!(c.sources.redis, Some(("rediss://cache:6379".into(), true)));
        assert_eq!(c.sources.opensearch, Some(("http://os".into(), "manga".into())));
        let s = c.sources.services.unwrap();
        assert_eq!((s.reviews.as_str(), s.promotions.as_str()), ("http://r", "http://p"));
        assert_eq!((c.prefetch.threshold, c.prefetch.timeout), (0.4, Duration::from_millis(500)));
    }

    #[test]
    fn bad_settings_are_named() {
        assert_eq!(cfg(&[("PREFETCH_THRESHOLD", "2")]).unwrap_err().name, "PREFETCH_THRESHOLD");
        assert_eq!(cfg(&[("PREFETCH_TIMEOUT_MS", "0")]).unwrap_err().name, "PREFETCH_TIMEOUT_MS");
        assert_eq!(cfg(&[("REDIS_URL", "redis://x"), ("REDIS_CLUSTER", "yes")]).unwrap_err().name, "REDIS_CLUSTER");
    }
}
