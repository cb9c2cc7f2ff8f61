//! What the functions share at cold start: reading settings from the environment (one error type, the
//! parsing helpers), the context-source settings both the chat and the prefetch function read (OpenSearch,
//! the product services, ElastiCache) and their adapters, and JSON logging for Lambda.

use std::str::FromStr;
use std::time::Duration;

use mangaassist_core::models::{CLAUDE_HAIKU_4_5, check, profile_for_region};
use mangaassist_core::ports::sources::Sources;
use mangaassist_core::pregen::{PregenConfig, PregenMode};
use mangaassist_core::prompt::compress::PromptBudget;
use mangaassist_core::safety::{GuardrailRef, SafetyConfig};

use aws_config::SdkConfig;

use crate::http::HttpSettings;
use crate::opensearch::{OpenSearchConfig, OpenSearchRetriever};
use crate::redis_cache::{RedisCache, RedisConfig};
use crate::services::{HttpProductService, ServiceEndpoints};
use crate::sigv4::{RequestSigner, SigningService};

/// A setting that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Settings looked up by name (the process environment in `main`, a map in tests).
pub struct Env<F>(pub F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    /// The trimmed value, `None` when unset or blank.
    pub fn nonempty(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    /// The value parsed, `default` when unset or blank.
    pub fn parse<T: FromStr>(&self, name: &'static str, default: T, reason: &'static str) -> Result<T, ConfigError> {
        match self.nonempty(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| ConfigError { name, value: v, reason }),
        }
    }

    /// A switch, in the one grammar every switch of the project reads: `on`/`true` or `off`/`false` (any
    /// case); `default` when unset or blank.
    pub fn switch(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.nonempty(name).map(|v| (v.to_ascii_lowercase(), v)) {
            None => Ok(default),
            Some((l, _)) if l == "on" || l == "true" => Ok(true),
            Some((l, _)) if l == "off" || l == "false" => Ok(false),
            Some((_, value)) => Err(ConfigError { name, value, reason: "expected on or off (or true or false)" }),
        }
    }

    /// A duration given in milliseconds.
    pub fn millis(&self, name: &'static str, default: Duration) -> Result<Duration, ConfigError> {
        let ms = self.parse(name, u64::try_from(default.as_millis()).unwrap_or(u64::MAX), "expected milliseconds")?;
        Ok(Duration::from_millis(ms))
    }
}

/// How each function reads its settings at cold start, the one idiom of the five: [`FromEnv::read`] from
/// any [`Env`], [`FromEnv::from_env`] from the process environment (`main`), [`FromEnv::from_pairs`] from a
/// fixed list (tests; the last pair of a name wins).
pub trait FromEnv: Sized {
    type Error;

    /// The settings, read from `env`.
    fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, Self::Error>;

    /// The settings, read from the process environment.
    fn from_env() -> Result<Self, Self::Error> {
        Self::read(&process_env())
    }

    /// The settings, read from `pairs`.
    fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, Self::Error> {
        Self::read(&Env(|k: &str| pairs.iter().rev().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())))
    }
}

/// The process environment.
pub fn process_env() -> Env<impl Fn(&str) -> Option<String>> {
    Env(|k: &str| std::env::var(k).ok())
}

/// Where the context sources are; each is optional (unset: that leg answers empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceSettings {
    /// `OPENSEARCH_URL` and `OPENSEARCH_INDEX` (default `manga`).
    pub opensearch: Option<(String, String)>,
    /// `OPENSEARCH_SIGV4`: `es` (OpenSearch Service domain) or `aoss` (OpenSearch Serverless) signs every
    /// request with the function's credentials; unset, empty or `none`: unsigned.
    pub opensearch_signing: Option<SigningService>,
    /// `PRODUCTS_URL`; `REVIEWS_URL`, `RECOMMENDATIONS_URL`, `PROMOTIONS_URL` default to it.
    pub services: Option<ServiceEndpoints>,
    /// `REDIS_URL` (`rediss://` for TLS) and `REDIS_CLUSTER` (default false).
    pub redis: Option<(String, bool)>,
}

/// The adapters [`SourceSettings::build`] makes.
pub type ConfiguredSources = Sources<Option<OpenSearchRetriever>, Option<HttpProductService>, Option<RedisCache>>;

impl SourceSettings {
    pub fn read<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let redis = match env.nonempty("REDIS_URL") {
            None => None,
            Some(u) => Some((u, env.switch("REDIS_CLUSTER", false)?)),
        };
        let opensearch_signing = match env.nonempty("OPENSEARCH_SIGV4") {
            None => None,
            Some(v) if v == "none" => None,
            Some(v) => Some(SigningService::parse(&v).ok_or(ConfigError {
                name: "OPENSEARCH_SIGV4",
                value: v,
                reason: "expected none, es or aoss",
            })?),
        };
        Ok(Self {
            opensearch_signing,
            opensearch: env
                .nonempty("OPENSEARCH_URL")
                .map(|u| (u, env.nonempty("OPENSEARCH_INDEX").unwrap_or_else(|| "manga".to_owned()))),
            services: env.nonempty("PRODUCTS_URL").map(|p| ServiceEndpoints {
                reviews: env.nonempty("REVIEWS_URL").unwrap_or_else(|| p.clone()),
                recommendations: env.nonempty("RECOMMENDATIONS_URL").unwrap_or_else(|| p.clone()),
                promotions: env.nonempty("PROMOTIONS_URL").unwrap_or_else(|| p.clone()),
                products: p,
            }),
            redis,
        })
    }

    /// Builds the configured adapters (once, at cold start); `sdk` gives SigV4 signing its Region and
    /// credentials.
    pub fn build(&self, sdk: &SdkConfig) -> anyhow::Result<ConfiguredSources> {
        use anyhow::Context as _;
        let retriever = match &self.opensearch {
            Some((url, index)) => {
                let mut config = OpenSearchConfig::new(url, index);
                if let Some(service) = self.opensearch_signing {
                    let signer =
                        RequestSigner::from_sdk(service, sdk).context("Failed to set up OpenSearch signing")?;
                    config.sigv4 = Some(std::sync::Arc::new(signer));
                }
                Some(OpenSearchRetriever::new(config).context("Failed to configure OpenSearch")?)
            }
            None => None,
        };
        let products = match &self.services {
            Some(e) => {
                Some(HttpProductService::new(e, HttpSettings::default()).context("Failed to configure services")?)
            }
            None => None,
        };
        let cache = match &self.redis {
            Some((url, cluster)) => {
                Some(RedisCache::connect(&RedisConfig::new(url, *cluster)).context("Failed to configure ElastiCache")?)
            }
            None => None,
        };
        Ok(Sources { retriever, products, cache })
    }
}

/// The stack's Region (`AWS_REGION`, set by Lambda), which picks the default inference profiles.
pub fn region<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> String {
    env.nonempty("AWS_REGION").unwrap_or_else(|| "ap-northeast-1".to_owned())
}

/// The prompt budgets (`BUDGET_*_TOKENS`), the same for the chat turn and for pre-generation.
pub fn prompt_budget<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<PromptBudget, ConfigError> {
    let d = PromptBudget::default();
    let n = |name: &'static str, default: usize| env.parse(name, default, "expected a token count");
    Ok(PromptBudget {
        system: n("BUDGET_SYSTEM_TOKENS", d.system)?,
        rag: n("BUDGET_RAG_TOKENS", d.rag)?,
        conversation: n("BUDGET_CONVERSATION_TOKENS", d.conversation)?,
        page: n("BUDGET_PAGE_TOKENS", d.page)?,
        user_message: n("BUDGET_USER_MESSAGE_TOKENS", d.user_message)?,
        total: n("BUDGET_TOTAL_TOKENS", d.total)?,
        ..d
    })
    .and_then(|b| {
        // Every message the parse admits must fit the total at any calibration: refused at cold start,
        // never a shopper's `message_too_long` later.
        b.check().map(|()| b).map_err(|e| ConfigError {
            name: "BUDGET_TOTAL_TOKENS",
            value: e.total.to_string(),
            reason: "too small for the system, conversation and page budgets plus the longest message (see PromptBudget::check)",
        })
    })
}

/// Speculative pre-generation (`PREGEN` = `off` | `full` | `full+opening`, `PREGEN_MAX`, `PREGEN_TTL_SECS`,
/// `PREGEN_MODEL_ID`, `PREGEN_TIMEOUT_MS`): the prefetch function generates, the chat function serves.
pub fn pregen_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<PregenConfig, ConfigError> {
    let d = PregenConfig::default();
    let mode = match env.nonempty("PREGEN") {
        None => d.mode,
        Some(v) => PregenMode::parse(&v).ok_or(ConfigError {
            name: "PREGEN",
            value: v,
            reason: "expected off, full or full+opening",
        })?,
    };
    let model_id =
        env.nonempty("PREGEN_MODEL_ID").unwrap_or_else(|| profile_for_region(&region(env), CLAUDE_HAIKU_4_5));
    if check(&model_id).is_err() {
        return Err(ConfigError { name: "PREGEN_MODEL_ID", value: model_id, reason: "unknown or retired model" });
    }
    Ok(PregenConfig {
        mode,
        max: env.parse("PREGEN_MAX", d.max, "expected a count")?,
        ttl: Duration::from_secs(env.parse("PREGEN_TTL_SECS", d.ttl.as_secs(), "expected seconds")?),
        model_id,
        max_tokens: env.parse("MAX_TOKENS", d.max_tokens, "expected a token count")?,
        timeout: env.millis("PREGEN_TIMEOUT_MS", d.timeout)?,
        guardrail: safety_settings(env)?.output,
    })
}

/// A guardrail named by `{prefix}_ID` and `{prefix}_VERSION` (a number, or `DRAFT` when unset).
fn guardrail<F: Fn(&str) -> Option<String>>(
    env: &Env<F>,
    id_name: &'static str,
    version_name: &'static str,
) -> Result<Option<GuardrailRef>, ConfigError> {
    let Some(id) = env.nonempty(id_name) else { return Ok(None) };
    let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let arn = id.starts_with("arn:aws") && id.contains(":guardrail/");
    if !plain && !arn {
        return Err(ConfigError { name: id_name, value: id, reason: "expected a guardrail id or ARN" });
    }
    let version = env.nonempty(version_name).unwrap_or_else(|| "DRAFT".to_owned());
    if version != "DRAFT" && !(version.parse::<u32>().is_ok_and(|v| v >= 1)) {
        return Err(ConfigError { name: version_name, value: version, reason: "expected DRAFT or a version number" });
    }
    Ok(Some(GuardrailRef { id, version }))
}

/// Guardrails (`GUARDRAIL_ID` / `GUARDRAIL_VERSION` on every answer; `INPUT_GUARDRAIL_ID` /
/// `INPUT_GUARDRAIL_VERSION` for the input check, defaulting to the same guardrail, `off` for none;
/// `INPUT_GUARDRAIL_TIMEOUT_MS`). All off when `GUARDRAIL_ID` and `INPUT_GUARDRAIL_ID` are unset.
pub fn safety_settings<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<SafetyConfig, ConfigError> {
    let d = SafetyConfig::default();
    let output = guardrail(env, "GUARDRAIL_ID", "GUARDRAIL_VERSION")?;
    let input = match env.nonempty("INPUT_GUARDRAIL_ID").as_deref() {
        Some("off") => None,
        Some(_) => guardrail(env, "INPUT_GUARDRAIL_ID", "INPUT_GUARDRAIL_VERSION")?,
        None => output.clone(),
    };
    Ok(SafetyConfig { output, input, input_deadline: env.millis("INPUT_GUARDRAIL_TIMEOUT_MS", d.input_deadline)? })
}

/// JSON logs for CloudWatch (which stamps every line), filtered by `RUST_LOG` (default `info`), with the
/// current span's fields on every line.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_current_span(true)
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn guardrails_are_off_unless_named_and_checked_when_named() {
        let s = safety_settings(&env(&[])).unwrap();
        assert_eq!((s.output, s.input), (None, None));
        let s = safety_settings(&env(&[("GUARDRAIL_ID", "abc123"), ("GUARDRAIL_VERSION", "2")])).unwrap();
        let g = GuardrailRef { id: "abc123".into(), version: "2".into() };
        assert_eq!((s.output.as_ref(), s.input.as_ref()), (Some(&g), Some(&g)));
        let s = safety_settings(&env(&[
            ("GUARDRAIL_ID", "out1"),
            ("INPUT_GUARDRAIL_ID", "in1"),
            ("INPUT_GUARDRAIL_VERSION", "DRAFT"),
        ]))
        .unwrap();
        assert_eq!(s.input.unwrap().id, "in1");
        assert_eq!(s.output.unwrap().version, "DRAFT");
        let s = safety_settings(&env(&[("GUARDRAIL_ID", "out1"), ("INPUT_GUARDRAIL_ID", "off")])).unwrap();
        assert!(s.input.is_none() && s.output.is_some());
        assert!(safety_settings(&env(&[("GUARDRAIL_ID", "Bad Id")])).is_err());
        assert!(safety_settings(&env(&[("GUARDRAIL_ID", "abc"), ("GUARDRAIL_VERSION", "latest")])).is_err());
    }

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        Env(move |k: &str| m.get(k).cloned())
    }

    #[test]
    fn service_urls_default_to_the_products_one_and_unset_sources_stay_off() {
        let s = SourceSettings::read(&env(&[("PRODUCTS_URL", "http://p"), ("REVIEWS_URL", "http://r")])).unwrap();
        let e = s.services.unwrap();
        assert_eq!(
            (e.products.as_str(), e.reviews.as_str(), e.promotions.as_str()),
            ("http://p", "http://r", "http://p")
        );
        assert!(s.opensearch.is_none() && s.redis.is_none());
        assert_eq!(SourceSettings::read(&env(&[])).unwrap(), SourceSettings::default());
    }

    #[test]
    fn pregen_defaults_to_full_opening_with_haiku_in_the_regions_profile() {
        let p = pregen_settings(&env(&[("AWS_REGION", "ap-northeast-1")])).unwrap();
        assert_eq!(p.mode, PregenMode::FullOpening);
        assert_eq!(p.model_id, "jp.anthropic.claude-haiku-4-5-20251001-v1:0");
        assert_eq!((p.max, p.ttl), (3, Duration::from_secs(600)));
        assert_eq!(pregen_settings(&env(&[("PREGEN", "on")])).unwrap_err().name, "PREGEN");
        let retired = env(&[("PREGEN_MODEL_ID", "anthropic.claude-3-haiku-20240307-v1:0")]);
        assert_eq!(pregen_settings(&retired).unwrap_err().name, "PREGEN_MODEL_ID");
        assert_eq!(prompt_budget(&env(&[("BUDGET_RAG_TOKENS", "300")])).unwrap().rag, 300);
        assert_eq!(prompt_budget(&env(&[("BUDGET_TOTAL_TOKENS", "900")])).unwrap_err().name, "BUDGET_TOTAL_TOKENS");
    }

    #[test]
    fn opensearch_signing_is_es_aoss_or_none() {
        let read = |v: &str| SourceSettings::read(&env(&[("OPENSEARCH_URL", "https://x"), ("OPENSEARCH_SIGV4", v)]));
        assert_eq!(read("aoss").unwrap().opensearch_signing, Some(SigningService::OpenSearchServerless));
        assert_eq!(read("es").unwrap().opensearch_signing, Some(SigningService::OpenSearch));
        assert_eq!(read("none").unwrap().opensearch_signing, None);
        assert_eq!(read("").unwrap().opensearch_signing, None);
        assert_eq!(read("iam").unwrap_err().name, "OPENSEARCH_SIGV4");
    }

    #[test]
    fn every_switch_reads_on_off_true_false_in_any_case_and_nothing_else() {
        for (value, want) in [("on", true), ("ON", true), ("true", true), ("off", false), ("False", false)] {
            assert_eq!(env(&[("X", value)]).switch("X", !want).unwrap(), want, "{value}");
        }
        assert!(env(&[("X", "  ")]).switch("X", true).unwrap(), "blank is the default");
        assert_eq!(env(&[("X", "yes")]).switch("X", true).unwrap_err().name, "X");
    }

    #[test]
    fn a_bad_value_names_its_setting() {
        let err = SourceSettings::read(&env(&[("REDIS_URL", "redis://x"), ("REDIS_CLUSTER", "maybe")])).unwrap_err();
        assert_eq!(err.name, "REDIS_CLUSTER");
        assert_eq!(env(&[("X", " 7 ")]).parse("X", 1u32, "count").unwrap(), 7);
        assert_eq!(env(&[]).millis("X", Duration::from_millis(5)).unwrap(), Duration::from_millis(5));
    }
}
