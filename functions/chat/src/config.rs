//! Configuration of the chat function, read from the environment once at cold start.
//!
//! Endpoints of AWS services are not here: the SDK's own `AWS_ENDPOINT_URL_<SERVICE>` variables override
//! them (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, `AWS_ENDPOINT_URL_DYNAMODB`).

use std::time::Duration;

pub use mangaassist_adapters::env::ConfigError;
use mangaassist_adapters::env::{Env, SourceSettings};
use mangaassist_core::compress::PromptBudget;
use mangaassist_core::context::ContextConfig;
use mangaassist_core::prompt::PromptConfig;
use mangaassist_core::relay::{RelayConfig, RelayMode};
use mangaassist_core::routes::FailoverConfig;
use mangaassist_core::summary::SummaryConfig;
use mangaassist_core::turn::TurnConfig;

/// Everything the chat function reads from its environment.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// DynamoDB table (`TABLE_NAME`).
    pub table_name: String,
    /// Replaces `https://{domainName}/{stage}` as the `@connections` endpoint (`APIGW_MANAGEMENT_ENDPOINT`).
    pub management_endpoint: Option<String>,
    /// How long the provisioned-throughput record is cached (`ROUTE_CACHE_SECS`, default 30; 0 turns
    /// provisioned routing off).
    pub route_cache: Duration,
    /// Context sources; each is optional (unset: that leg answers empty).
    pub sources: SourceSettings,
    /// The prefetch function invoked asynchronously after each answer (`PREFETCH_FUNCTION_NAME`).
    pub prefetch_function: Option<String>,
    pub turn: TurnConfig,
}

impl ChatConfig {
    /// Reads the configuration through `get` (the process environment in `main`, a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let d = TurnConfig::default();
        let env = Env(get);
        let mode = match env.nonempty("RELAY_MODE") {
            None => RelayMode::Coalesce,
            Some(v) => RelayMode::parse(&v).ok_or(ConfigError {
                name: "RELAY_MODE",
                value: v,
                reason: "expected coalesce or per_token",
            })?,
        };
        let relay = RelayConfig {
            mode,
            post_attempts: env.parse("POST_ATTEMPTS", d.relay.post_attempts, "expected a count")?.max(1),
            post_timeout: env.millis("POST_TIMEOUT_MS", d.relay.post_timeout)?,
            idle_timeout: env.millis("STREAM_IDLE_TIMEOUT_MS", d.relay.idle_timeout)?,
            ..d.relay
        };
        let temperature: f32 = env.parse("TEMPERATURE", d.prompt.temperature, "expected a number")?;
        if !(0.0..=1.0).contains(&temperature) {
            return Err(ConfigError { name: "TEMPERATURE", value: temperature.to_string(), reason: "expected 0..=1" });
        }
        let turn = TurnConfig {
            model_id: env.nonempty("MODEL_ID").unwrap_or(d.model_id),
            fallback_model_id: env.nonempty("FALLBACK_MODEL_ID"),
            prompt: PromptConfig {
                max_tokens: env.parse("MAX_TOKENS", d.prompt.max_tokens, "expected a token count")?,
                temperature,
            },
            relay,
            failover: FailoverConfig {
                attempts: env.parse("MODEL_ATTEMPTS", d.failover.attempts, "expected a count")?.max(1),
                first_token_timeout: env.millis("FIRST_TOKEN_TIMEOUT_MS", d.failover.first_token_timeout)?,
            },
            budget: PromptBudget {
                system: env.parse("BUDGET_SYSTEM_TOKENS", d.budget.system, "expected a token count")?,
                rag: env.parse("BUDGET_RAG_TOKENS", d.budget.rag, "expected a token count")?,
                conversation: env.parse(
                    "BUDGET_CONVERSATION_TOKENS",
                    d.budget.conversation,
                    "expected a token count",
                )?,
                page: env.parse("BUDGET_PAGE_TOKENS", d.budget.page, "expected a token count")?,
                user_message: env.parse(
                    "BUDGET_USER_MESSAGE_TOKENS",
                    d.budget.user_message,
                    "expected a token count",
                )?,
                total: env.parse("BUDGET_TOTAL_TOKENS", d.budget.total, "expected a token count")?,
                ..d.budget
            },
            compression: env.parse("COMPRESSION", d.compression, "expected true or false")?,
            summary: SummaryConfig {
                model_id: match env.nonempty("SUMMARY_MODEL_ID").as_deref() {
                    None => d.summary.model_id.clone(),
                    Some("off" | "none") => None,
                    Some(m) => Some(m.to_owned()),
                },
                ..d.summary.clone()
            },
            emf: env.parse("EMF_METRICS", true, "expected true or false")?,
            context: ContextConfig {
                memory: env.millis("MEMORY_DEADLINE_MS", d.context.memory)?,
                retrieval: env.millis("RETRIEVAL_DEADLINE_MS", d.context.retrieval)?,
                cache: env.millis("CACHE_DEADLINE_MS", d.context.cache)?,
                services: env.millis("SERVICES_DEADLINE_MS", d.context.services)?,
                overall: env.millis("CONTEXT_DEADLINE_MS", d.context.overall)?,
                top_k: env.parse("RAG_TOP_K", d.context.top_k, "expected a count")?,
                memory_turns: env.parse("MEMORY_TURNS", d.context.memory_turns, "expected a count")?,
                ..d.context
            },
            session: d.session,
            turn_ttl: Duration::from_secs(
                env.parse("TURN_TTL_DAYS", d.turn_ttl.as_secs() / 86_400, "expected days")? * 86_400,
            ),
            claim_ttl: d.claim_ttl,
            prefetch_handoff: d.prefetch_handoff,
        };
        Ok(Self {
            table_name: env.nonempty("TABLE_NAME").unwrap_or_else(|| "mangaassist".to_owned()),
            management_endpoint: env.nonempty("APIGW_MANAGEMENT_ENDPOINT"),
            route_cache: Duration::from_secs(env.parse("ROUTE_CACHE_SECS", 30, "expected seconds")?),
            prefetch_function: env.nonempty("PREFETCH_FUNCTION_NAME"),
            sources: SourceSettings::read(&env)?,
            turn,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<ChatConfig, ConfigError> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        ChatConfig::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults_need_no_environment() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.table_name, "mangaassist");
        assert_eq!(c.turn.relay.mode, RelayMode::Coalesce);
        assert!(c.management_endpoint.is_none());
    }

    #[test]
    fn a_bad_number_names_the_setting() {
        let err = cfg(&[("MAX_TOKENS", "lots")]).unwrap_err();
        assert_eq!(err.name, "MAX_TOKENS");
        assert!(cfg(&[("RELAY_MODE", "fast")]).is_err());
        assert!(cfg(&[("TEMPERATURE", "3")]).is_err());
    }

    #[test]
    fn budgets_and_summaries_are_configurable() {
        let c = cfg(&[("BUDGET_TOTAL_TOKENS", "1500"), ("COMPRESSION", "false"), ("SUMMARY_MODEL_ID", "off")]).unwrap();
        assert_eq!(c.turn.budget.total, 1500);
        assert_eq!(c.turn.budget.rag, 350);
        assert!(!c.turn.compression);
        assert!(c.turn.summary.model_id.is_none());
    }

    #[test]
    fn settings_are_read() {
        let c = cfg(&[("RELAY_MODE", "per_token"), ("FIRST_TOKEN_TIMEOUT_MS", "900"), ("MODEL_ID", "m")]).unwrap();
        assert_eq!(c.turn.relay.mode, RelayMode::PerToken);
        assert_eq!(c.turn.failover.first_token_timeout, Duration::from_millis(900));
        assert_eq!(c.turn.model_id, "m");
    }
}
