//! Configuration of the chat function, read from the environment once at cold start.
//!
//! Endpoints of AWS services are not here: the SDK's own `AWS_ENDPOINT_URL_<SERVICE>` variables override
//! them (`AWS_ENDPOINT_URL_BEDROCK_RUNTIME`, `AWS_ENDPOINT_URL_DYNAMODB`).

use std::time::Duration;

use mangaassist_adapters::bedrock::StreamOpen;
pub use mangaassist_adapters::env::ConfigError;
use mangaassist_adapters::env::{
    Env, FromEnv, SourceSettings, pregen_settings, prompt_budget, region, safety_settings,
};
use mangaassist_core::admit::limits::{AddressLimits, LimitConfig, Tier};
use mangaassist_core::ahead::speculate::SpeculationConfig;
use mangaassist_core::ahead::typed::TypedAheadConfig;
use mangaassist_core::answer::hedge::{HedgeConfig, HedgeDelay};
use mangaassist_core::answer::relay::{RelayConfig, RelayMode};
use mangaassist_core::answer::routes::FailoverConfig;
use mangaassist_core::gather::ContextConfig;
use mangaassist_core::gather::summary::SummaryConfig;
use mangaassist_core::models::{
    CLAUDE_HAIKU_4_5, Levers, ModelConfigError, ModelRouting, NOVA_2_LITE, check, profile_for_region,
};
use mangaassist_core::prompt::PromptConfig;
use mangaassist_core::turn::TurnConfig;
use std::sync::Arc;

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
    pub connections: ConnectionSettings,
}

/// How the hot-path connections are kept (see `mangaassist_adapters::warm` and `::bedrock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    /// `BEDROCK_FIRST_BYTE_MS` (default 2000; 0: no deadline and no retry on a fresh connection).
    pub stream_open: StreamOpen,
    /// `WARM_CONNECTIONS` (default true): open the connections at init, refresh them on `$connect` and
    /// `typing` after `WARM_IDLE_MS` (default 20000) of idle.
    pub warm: bool,
    pub warm_idle: Duration,
}

impl ConnectionSettings {
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let d = StreamOpen::default();
        let first_byte = env.millis("BEDROCK_FIRST_BYTE_MS", d.first_byte.unwrap_or_default())?;
        Ok(Self {
            stream_open: StreamOpen { first_byte: (!first_byte.is_zero()).then_some(first_byte), ..d },
            warm: env.parse("WARM_CONNECTIONS", true, "expected true or false")?,
            warm_idle: env.millis("WARM_IDLE_MS", mangaassist_adapters::warm::DEFAULT_IDLE)?,
        })
    }
}

/// Why the chat function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ChatConfigError {
    #[error(transparent)]
    Setting(#[from] ConfigError),
    #[error("invalid model setting {name}: {source}")]
    Models {
        name: &'static str,
        #[source]
        source: ModelConfigError,
    },
    #[error("could not read {name}={path:?}")]
    File {
        name: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl ChatConfigError {
    /// The setting at fault.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Setting(e) => e.name,
            Self::Models { name, .. } | Self::File { name, .. } => name,
        }
    }
}

fn models(name: &'static str) -> impl FnOnce(ModelConfigError) -> ChatConfigError {
    move |source| ChatConfigError::Models { name, source }
}

/// Which model answers which intent: `MODEL_ID` (default: Claude Haiku 4.5 through the stack region's
/// inference profile) for product questions and recommendations, `SMALL_MODEL_ID` (Nova 2 Lite, same
/// profile rule) for the simple intents, unless `MODEL_BY_INTENT=off`; then the overrides.
fn routing<F: Fn(&str) -> Option<String>>(env: &Env<F>, region: &str) -> Result<ModelRouting, ChatConfigError> {
    let main = env.nonempty("MODEL_ID").unwrap_or_else(|| profile_for_region(region, CLAUDE_HAIKU_4_5));
    let small = env.nonempty("SMALL_MODEL_ID").unwrap_or_else(|| profile_for_region(region, NOVA_2_LITE));
    let max_tokens = env.parse("MAX_TOKENS", 400, "expected a token count")?;
    let simple_max = env.parse("SIMPLE_MAX_TOKENS", 200, "expected a token count")?;
    let by_intent = env.nonempty("MODEL_BY_INTENT").unwrap_or_default();
    let base = match by_intent.as_str() {
        "off" | "none" => ModelRouting::single(main, max_tokens),
        _ => ModelRouting::split(&main, &small, max_tokens, simple_max),
    };
    let by_intent = if matches!(by_intent.as_str(), "off" | "none") { "" } else { by_intent.as_str() };
    let max_by_intent = env.nonempty("MAX_TOKENS_BY_INTENT").unwrap_or_default();
    base.with_overrides(by_intent, &max_by_intent).map_err(models("MODEL_BY_INTENT"))
}

/// The per-user limits: `RATE_PER_MINUTE`, `DAILY_TOKENS`, `MAX_CONNECTIONS` for signed-in users, the
/// same with a `GUEST_` prefix for guests; `TYPING_PER_MINUTE` typing frames per user (all connections);
/// `GUEST_CONNECTS_PER_ADDRESS`, `GUEST_TURNS_PER_ADDRESS`, `GUEST_TYPING_PER_ADDRESS` per minute from one
/// source address, whatever guest tokens it holds.
fn limits<F: Fn(&str) -> Option<String>>(env: &Env<F>, d: &LimitConfig) -> Result<LimitConfig, ChatConfigError> {
    let tier = |prefix: &str, t: Tier| -> Result<Tier, ChatConfigError> {
        let name = |n: &str| -> &'static str {
            match (prefix, n) {
                ("", "r") => "RATE_PER_MINUTE",
                ("", "t") => "DAILY_TOKENS",
                ("", _) => "MAX_CONNECTIONS",
                (_, "r") => "GUEST_RATE_PER_MINUTE",
                (_, "t") => "GUEST_DAILY_TOKENS",
                _ => "GUEST_MAX_CONNECTIONS",
            }
        };
        Ok(Tier {
            requests_per_minute: env.parse(name("r"), t.requests_per_minute, "expected a count")?,
            tokens_per_day: env.parse(name("t"), t.tokens_per_day, "expected a token count")?,
            connections: env.parse(name("c"), t.connections, "expected a count")?,
        })
    };
    Ok(LimitConfig {
        user: tier("", d.user)?,
        guest: tier("GUEST_", d.guest)?,
        deadline: d.deadline,
        typing_per_minute: env.parse("TYPING_PER_MINUTE", d.typing_per_minute, "expected a count")?,
        guest_address: AddressLimits {
            connects_per_minute: env.parse(
                "GUEST_CONNECTS_PER_ADDRESS",
                d.guest_address.connects_per_minute,
                "expected a count",
            )?,
            turns_per_minute: env.parse(
                "GUEST_TURNS_PER_ADDRESS",
                d.guest_address.turns_per_minute,
                "expected a count",
            )?,
            typing_per_minute: env.parse(
                "GUEST_TYPING_PER_ADDRESS",
                d.guest_address.typing_per_minute,
                "expected a count",
            )?,
        },
    })
}

/// Hedging of a late first token: `HEDGE` (on/off), `HEDGE_DELAY_MS` (`p90`, the route's learned p90, or a
/// fixed delay in ms), `HEDGE_INITIAL_DELAY_MS` (the delay until the p90 is learned), `HEDGE_SHARE` (the
/// share of turns that may be hedged, 0..=1), `HEDGE_BURST` (the most hedges saved up, at least 1).
fn hedge<F: Fn(&str) -> Option<String>>(env: &Env<F>, d: &HedgeConfig) -> Result<HedgeConfig, ChatConfigError> {
    let initial = match d.delay {
        HedgeDelay::Learned { initial } | HedgeDelay::Fixed(initial) => initial,
    };
    let initial = env.millis("HEDGE_INITIAL_DELAY_MS", initial)?;
    let delay = match env.nonempty("HEDGE_DELAY_MS").as_deref() {
        None | Some("p90") => HedgeDelay::Learned { initial },
        Some(_) => HedgeDelay::Fixed(env.millis("HEDGE_DELAY_MS", initial)?),
    };
    let share: f64 = env.parse("HEDGE_SHARE", d.share, "expected a share of turns, 0..=1")?;
    if !(0.0..=1.0).contains(&share) {
        let e = ConfigError { name: "HEDGE_SHARE", value: share.to_string(), reason: "expected 0..=1" };
        return Err(e.into());
    }
    let burst: u32 = env.parse("HEDGE_BURST", d.burst, "expected a whole number of hedges, at least 1")?;
    if burst == 0 {
        let e = ConfigError { name: "HEDGE_BURST", value: "0".into(), reason: "expected at least 1" };
        return Err(e.into());
    }
    Ok(HedgeConfig { enabled: env.switch("HEDGE", d.enabled)?, delay, share, burst, ..*d })
}

impl FromEnv for ChatConfig {
    type Error = ChatConfigError;

    /// Reads the configuration through `get` (the process environment in `main`, a map in tests).
    /// Reads the settings from `env` (the process environment in `main`, a map in tests and locally).
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, Self::Error> {
        let d = TurnConfig::default();
        let region = region(env);
        let pregen = pregen_settings(env)?;
        let routing = routing(env, &region)?;
        let fallback = env.nonempty("FALLBACK_MODEL_ID");
        if let Some(f) = &fallback {
            check(f).map_err(models("FALLBACK_MODEL_ID"))?;
        }
        let summary_model = match env.nonempty("SUMMARY_MODEL_ID").as_deref() {
            Some("off" | "none") => None,
            Some(m) => Some(m.to_owned()),
            None => Some(env.nonempty("SMALL_MODEL_ID").unwrap_or_else(|| profile_for_region(&region, NOVA_2_LITE))),
        };
        if let Some(m) = &summary_model {
            check(m).map_err(models("SUMMARY_MODEL_ID"))?;
        }
        let cached_prefix = match env.nonempty("CACHED_PREFIX_FILE") {
            None => None,
            Some(path) => Some(Arc::<str>::from(
                std::fs::read_to_string(&path)
                    .map_err(|source| ChatConfigError::File { name: "CACHED_PREFIX_FILE", path, source })?
                    .trim(),
            )),
        };
        let levers = Levers {
            latency_optimized: env.switch("LATENCY_OPTIMIZED", false)?,
            priority_tier: env.switch("PRIORITY_TIER", false)?,
            prompt_cache: env.switch("PROMPT_CACHE", true)?,
        };
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
            let e = ConfigError { name: "TEMPERATURE", value: temperature.to_string(), reason: "expected 0..=1" };
            return Err(e.into());
        }
        let turn = TurnConfig {
            models: routing,
            fallback_model_id: fallback,
            provisioned_model: env.nonempty("PROVISIONED_MODEL_ID"),
            prompt: PromptConfig { temperature, levers, cached_prefix },
            relay,
            failover: FailoverConfig {
                attempts: env.parse("MODEL_ATTEMPTS", d.failover.attempts, "expected a count")?.max(1),
                first_token_timeout: env.millis("FIRST_TOKEN_TIMEOUT_MS", d.failover.first_token_timeout)?,
                throttle_retry_budget: env.millis("THROTTLE_RETRY_BUDGET_MS", d.failover.throttle_retry_budget)?,
                hedge: hedge(env, &d.failover.hedge)?,
                ..d.failover
            },
            budget: prompt_budget(env)?,
            compression: env.switch("COMPRESSION", d.compression)?,
            summary: SummaryConfig { model_id: summary_model, ..d.summary.clone() },
            emf: env.switch("EMF_METRICS", true)?,
            context: ContextConfig {
                memory: env.millis("MEMORY_DEADLINE_MS", d.context.memory)?,
                retrieval: env.millis("RETRIEVAL_DEADLINE_MS", d.context.retrieval)?,
                cache: env.millis("CACHE_DEADLINE_MS", d.context.cache)?,
                services: env.millis("SERVICES_DEADLINE_MS", d.context.services)?,
                overall: env.millis("CONTEXT_DEADLINE_MS", d.context.overall)?,
                top_k: env.parse("RAG_TOP_K", d.context.top_k, "expected a count")?,
                memory_turns: env.parse("MEMORY_TURNS", d.context.memory_turns, "expected a count")?,
                pregen: pregen.mode.is_on(),
                ..d.context
            },
            session: d.session,
            turn_ttl: Duration::from_secs(
                env.parse("TURN_TTL_DAYS", d.turn_ttl.as_secs() / 86_400, "expected days")? * 86_400,
            ),
            claim_ttl: d.claim_ttl,
            prefetch_handoff: d.prefetch_handoff,
            pregen,
            limits: limits(env, &d.limits)?,
            turn_deadline: env.millis("TURN_DEADLINE_MS", d.turn_deadline)?,
            claim_deadline: env.millis("CLAIM_DEADLINE_MS", d.claim_deadline)?,
            store_attempts: env.parse("STORE_ATTEMPTS", d.store_attempts, "expected a count")?.max(1),
            safety: safety_settings(env)?,
            speculation: SpeculationConfig {
                enabled: env.switch("TYPING_SPECULATION", true)?,
                ttl: Duration::from_secs(env.parse(
                    "TYPING_SPECULATION_TTL_SECS",
                    d.speculation.ttl.as_secs(),
                    "expected seconds",
                )?),
                ..d.speculation
            },
            typed: TypedAheadConfig {
                enabled: env.switch("ANSWER_SPECULATION", false)?,
                per_minute: env.parse("ANSWER_SPECULATION_PER_MINUTE", d.typed.per_minute, "expected a count")?,
                per_message: env.parse("ANSWER_SPECULATION_PER_MESSAGE", d.typed.per_message, "expected a count")?,
                ttl: Duration::from_secs(env.parse(
                    "ANSWER_SPECULATION_TTL_SECS",
                    d.typed.ttl.as_secs(),
                    "expected seconds",
                )?),
                ..d.typed
            },
        };
        Ok(Self {
            table_name: env.nonempty("TABLE_NAME").unwrap_or_else(|| "mangaassist".to_owned()),
            management_endpoint: env.nonempty("APIGW_MANAGEMENT_ENDPOINT"),
            route_cache: Duration::from_secs(env.parse("ROUTE_CACHE_SECS", 30, "expected seconds")?),
            prefetch_function: env.nonempty("PREFETCH_FUNCTION_NAME"),
            sources: SourceSettings::read(env)?,
            turn,
            connections: ConnectionSettings::read(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mangaassist_core::intent::Intent;

    fn cfg(pairs: &[(&str, &str)]) -> Result<ChatConfig, ChatConfigError> {
        ChatConfig::from_pairs(pairs)
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
        assert_eq!(err.name(), "MAX_TOKENS");
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
        let c = cfg(&[
            ("RELAY_MODE", "per_token"),
            ("FIRST_TOKEN_TIMEOUT_MS", "900"),
            ("THROTTLE_RETRY_BUDGET_MS", "0"),
            ("MODEL_ID", "us.amazon.nova-pro-v1:0"),
        ])
        .unwrap();
        assert_eq!(c.turn.relay.mode, RelayMode::PerToken);
        assert_eq!(c.turn.failover.first_token_timeout, Duration::from_millis(900));
        assert_eq!(c.turn.failover.throttle_retry_budget, Duration::ZERO);
        assert_eq!(cfg(&[]).unwrap().turn.failover.throttle_retry_budget, Duration::from_millis(1500));
        assert_eq!(c.turn.models.default.model_id, "us.amazon.nova-pro-v1:0");
    }

    #[test]
    fn the_default_models_are_current_and_follow_the_stack_region() {
        let c = cfg(&[("AWS_REGION", "ap-northeast-1")]).unwrap();
        let r = &c.turn.models;
        assert_eq!(r.for_intent(Intent::Recommendation).model_id, "jp.anthropic.claude-haiku-4-5-20251001-v1:0");
        assert_eq!(r.for_intent(Intent::Faq).model_id, "jp.amazon.nova-2-lite-v1:0");
        assert_eq!(r.for_intent(Intent::Faq).max_tokens, 200);
        assert_eq!(c.turn.summary.model_id.as_deref(), Some("jp.amazon.nova-2-lite-v1:0"));
        let c = cfg(&[("AWS_REGION", "us-west-2"), ("MODEL_BY_INTENT", "off")]).unwrap();
        assert_eq!(c.turn.models.for_intent(Intent::Faq).model_id, "global.anthropic.claude-haiku-4-5-20251001-v1:0");
    }

    #[test]
    fn a_retired_or_unknown_model_or_a_bad_routing_table_stops_the_start() {
        let e = cfg(&[("MODEL_ID", "anthropic.claude-3-5-haiku-20241022-v1:0")]).unwrap_err();
        assert_eq!(e.name(), "MODEL_BY_INTENT");
        assert!(e.to_string().contains("end of life"), "{e}");
        let e = cfg(&[("SUMMARY_MODEL_ID", "anthropic.claude-3-haiku-20240307-v1:0")]).unwrap_err();
        assert_eq!(e.name(), "SUMMARY_MODEL_ID");
        assert!(cfg(&[("MODEL_BY_INTENT", "shopping=jp.amazon.nova-2-lite-v1:0")]).is_err());
        assert!(cfg(&[("FALLBACK_MODEL_ID", "nope")]).is_err());
        assert!(cfg(&[("CACHED_PREFIX_FILE", "/no/such/file")]).is_err());
    }

    #[test]
    fn limits_are_configurable_per_tier() {
        let c =
            cfg(&[("RATE_PER_MINUTE", "30"), ("GUEST_DAILY_TOKENS", "5000"), ("TURN_DEADLINE_MS", "15000")]).unwrap();
        assert_eq!(c.turn.limits.user.requests_per_minute, 30);
        assert_eq!(c.turn.limits.guest.tokens_per_day, 5000);
        assert_eq!(c.turn.limits.guest.requests_per_minute, LimitConfig::default().guest.requests_per_minute);
        let g = cfg(&[("GUEST_TURNS_PER_ADDRESS", "40")]).unwrap();
        assert_eq!(g.turn.limits.guest_address.turns_per_minute, 40);
        assert_eq!(g.turn.limits.guest_address.connects_per_minute, AddressLimits::default().connects_per_minute);
        assert_eq!(cfg(&[("GUEST_CONNECTS_PER_ADDRESS", "x")]).unwrap_err().name(), "GUEST_CONNECTS_PER_ADDRESS");
        assert_eq!(c.turn.turn_deadline, Duration::from_millis(15_000));
        assert_eq!(cfg(&[("GUEST_MAX_CONNECTIONS", "x")]).unwrap_err().name(), "GUEST_MAX_CONNECTIONS");
    }

    #[test]
    fn typing_speculation_is_on_unless_turned_off() {
        assert!(cfg(&[]).unwrap().turn.speculation.enabled);
        let c = cfg(&[("TYPING_SPECULATION", "off"), ("TYPING_PER_MINUTE", "30")]).unwrap();
        assert!(!c.turn.speculation.enabled);
        assert_eq!(c.turn.limits.typing_per_minute, 30);
        assert_eq!(cfg(&[("TYPING_SPECULATION", "maybe")]).unwrap_err().name(), "TYPING_SPECULATION");
    }

    #[test]
    fn hedging_is_a_switch_with_a_learned_or_fixed_delay_and_a_share() {
        let d = HedgeConfig::default();
        assert_eq!(cfg(&[]).unwrap().turn.failover.hedge, d);
        let c = cfg(&[("HEDGE", "on"), ("HEDGE_INITIAL_DELAY_MS", "1200"), ("HEDGE_SHARE", "0.05")]).unwrap();
        let h = c.turn.failover.hedge;
        assert!(h.enabled);
        assert_eq!(h.delay, HedgeDelay::Learned { initial: Duration::from_millis(1200) });
        assert!((h.share - 0.05).abs() < 1e-9);
        let c = cfg(&[("HEDGE", "off"), ("HEDGE_DELAY_MS", "900")]).unwrap();
        assert!(!c.turn.failover.hedge.enabled);
        assert_eq!(c.turn.failover.hedge.delay, HedgeDelay::Fixed(Duration::from_millis(900)));
        assert_eq!(cfg(&[("HEDGE_DELAY_MS", "p90")]).unwrap().turn.failover.hedge.delay, d.delay);
        assert_eq!(cfg(&[("HEDGE_SHARE", "1.5")]).unwrap_err().name(), "HEDGE_SHARE");
        assert_eq!(cfg(&[("HEDGE_BURST", "2")]).unwrap().turn.failover.hedge.burst, 2);
        assert_eq!(cfg(&[("HEDGE_BURST", "0")]).unwrap_err().name(), "HEDGE_BURST");
        assert_eq!(cfg(&[("HEDGE_BURST", "-1")]).unwrap_err().name(), "HEDGE_BURST");
        assert_eq!(cfg(&[("HEDGE_DELAY_MS", "soon")]).unwrap_err().name(), "HEDGE_DELAY_MS");
        assert_eq!(cfg(&[("HEDGE", "maybe")]).unwrap_err().name(), "HEDGE");
    }

    #[test]
    fn levers_are_switches() {
        let c = cfg(&[("LATENCY_OPTIMIZED", "true"), ("PRIORITY_TIER", "true"), ("PROMPT_CACHE", "false")]).unwrap();
        assert_eq!(c.turn.prompt.levers, Levers { latency_optimized: true, priority_tier: true, prompt_cache: false });
        assert!(cfg(&[("PRIORITY_TIER", "maybe")]).is_err());
    }
}
