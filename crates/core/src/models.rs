//! Which model answers which intent, and what each model family accepts.
//!
//! - [`FAMILIES`] is the one capability table: per model family its lifecycle, whether it continues an
//!   assistant prefill, its minimum tokens per prompt-cache checkpoint, latency-optimized inference and the
//!   priority service tier, each row with its source. A lever is sent only to a family that supports it.
//! - [`ModelRouting`] maps intents to models (`MODEL_BY_INTENT`) and answer caps (`MAX_TOKENS_BY_INTENT`):
//!   simple intents go to a small fast model, product questions and recommendations to the Haiku-class one.
//! - [`check`] refuses, at cold start, a model id nobody can serve: unknown, or past its end of life.
//!
//! Model ids (base ids, inference profiles, context variants, ARNs) are parsed by one grammar, [`ModelId`]
//! (in `models/id.rs`); a family is found by the base id behind any of them.

use std::collections::BTreeMap;

use crate::intent::Intent;

mod id;

pub use id::{ModelId, ModelIdError, ModelKind, ProfilePrefix};

/// Where a model is in its life on Bedrock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    /// Still served; no new provisioned throughput; ends on `eol` (ISO date).
    Legacy {
        eol: &'static str,
    },
    /// Requests fail since `since` (ISO date).
    EndOfLife {
        since: &'static str,
    },
}

/// What a model family accepts, from its model card.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Family {
    pub name: &'static str,
    /// Base model ids of the family (without profile prefix or context suffix).
    pub base_ids: &'static [&'static str],
    pub lifecycle: Lifecycle,
    /// Continues a trailing assistant message (prefill); newer Claude models reject it.
    pub prefill: bool,
    /// Minimum tokens before a prompt-cache checkpoint takes effect; `None`: caching not offered (or not
    /// verified, which is treated the same).
    pub cache_min_tokens: Option<u32>,
    /// `performanceConfig.latency = optimized` is offered.
    pub latency_optimized: bool,
    /// `serviceTier.type = priority` is offered.
    pub priority_tier: bool,
    /// The cross-Region inference profiles the family is offered through (as far as verified; see
    /// `source`): what [`profile_for_region`] chooses from.
    pub profiles: &'static [ProfilePrefix],
    /// Where the row's facts come from.
    pub source: &'static str,
}

/// Claude Haiku 4.5: the chat default.
pub const CLAUDE_HAIKU_4_5: &str = "anthropic.claude-haiku-4-5-20251001-v1:0";
/// Amazon Nova 2 Lite: the small fast model for simple intents and summaries.
pub const NOVA_2_LITE: &str = "amazon.nova-2-lite-v1:0";

/// The capability table. Facts checked on 2026-12-02 against the pages named in `source` (the fast models
/// callable from ap-northeast-1 again on 2026-12-04: no Claude Haiku newer than 4.5 was found); a fact that
/// could not be verified is recorded as "not offered", so no lever is ever sent on a guess.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "Claude Haiku 4.5",
        base_ids: &[CLAUDE_HAIKU_4_5],
        lifecycle: Lifecycle::Active,
        prefill: true,
        cache_min_tokens: Some(4096),
        latency_optimized: false,
        priority_tier: false,
        profiles: &[ProfilePrefix::Global, ProfilePrefix::Us, ProfilePrefix::Eu, ProfilePrefix::Jp],
        source: "Bedrock model card model-card-anthropic-claude-haiku-4-5 (profiles global/us/eu/jp; caching 4,096 \
                 tokens per checkpoint, 4 checkpoints); latency-optimized-inference.html (not listed); \
                 service-tiers-inference.html (reserved tier only)",
    },
    Family {
        name: "Amazon Nova 2 Lite",
        base_ids: &[NOVA_2_LITE],
        lifecycle: Lifecycle::Active,
        prefill: false,
        cache_min_tokens: None,
        latency_optimized: false,
        priority_tier: true,
        profiles: &[ProfilePrefix::Global, ProfilePrefix::Us, ProfilePrefix::Eu, ProfilePrefix::Jp],
        source: "Bedrock model card model-card-amazon-nova-2-lite (profiles global/us/eu/jp, no in-Region \
                 endpoint); service-tiers-inference.html (priority and flex, ap-northeast-1 included); prefill and \
                 caching minimum not verified",
    },
    Family {
        name: "Amazon Nova Micro",
        base_ids: &["amazon.nova-micro-v1:0"],
        lifecycle: Lifecycle::Active,
        prefill: true,
        cache_min_tokens: Some(1536),
        latency_optimized: false,
        priority_tier: false,
        profiles: &[ProfilePrefix::Us, ProfilePrefix::Eu, ProfilePrefix::Apac],
        source: "Bedrock model card model-card-amazon-nova-micro; Nova user guide invoke.html (prefill); \
                 prompt-caching table (1K, 1,536 in AWS's agent toolkit: the larger is used); from ap-northeast-1 \
                 only through the apac. profile (batch-inference-supported table: inference profile from us-, eu- \
                 and ap- Regions; apac.amazon.nova-micro-v1:0 listed in ap-northeast-1): requests leave Japan, no jp. profile found",
    },
    Family {
        name: "Amazon Nova Lite",
        base_ids: &["amazon.nova-lite-v1:0"],
        lifecycle: Lifecycle::Active,
        prefill: true,
        cache_min_tokens: Some(1536),
        latency_optimized: false,
        priority_tier: false,
        profiles: &[ProfilePrefix::Us, ProfilePrefix::Eu, ProfilePrefix::Apac],
        source: "Bedrock model card model-card-amazon-nova-lite; Nova user guide invoke.html; prompt-caching table; \
                 from ap-northeast-1 only through the apac. profile (batch-inference-supported table: inference \
                 profile from us-, eu- and ap- Regions; no jp. profile found)",
    },
    Family {
        name: "Amazon Nova Pro",
        base_ids: &["amazon.nova-pro-v1:0"],
        lifecycle: Lifecycle::Active,
        prefill: true,
        cache_min_tokens: Some(1024),
        latency_optimized: true,
        priority_tier: true,
        profiles: &[ProfilePrefix::Us, ProfilePrefix::Eu, ProfilePrefix::Apac],
        source: "latency-optimized-inference.html (us-east-1/us-east-2 profiles); service-tiers-inference.html; \
                 batch-inference-supported table (inference profile from us-, eu- and ap- Regions, \
                 ap-northeast-1 included: us./eu./apac. profiles; no jp. profile found)",
    },
    Family {
        name: "Claude 3.5 Haiku",
        base_ids: &["anthropic.claude-3-5-haiku-20241022-v1:0"],
        lifecycle: Lifecycle::EndOfLife { since: "2026-06-19" },
        prefill: true,
        cache_min_tokens: Some(2048),
        latency_optimized: true,
        priority_tier: false,
        profiles: &[],
        source: "Bedrock model card model-card-anthropic-claude-3-5-haiku (EOL 2026-06-19)",
    },
    Family {
        name: "Claude 3 Haiku",
        base_ids: &["anthropic.claude-3-haiku-20240307-v1:0"],
        lifecycle: Lifecycle::EndOfLife { since: "2026-09-10" },
        prefill: true,
        cache_min_tokens: None,
        latency_optimized: false,
        priority_tier: false,
        profiles: &[],
        source: "Bedrock model card model-card-anthropic-claude-3-haiku (EOL 2026-09-10 in most Regions)",
    },
];

/// Whether `a` and `b` name the same base model (a profile or a context variant aside); `false` when either
/// names none (a provisioned-throughput or application-profile ARN) or is not a model id.
pub fn same_base_model(a: &str, b: &str) -> bool {
    matches!((ModelId::parse(a), ModelId::parse(b)), (Ok(a), Ok(b)) if a.same_base(&b))
}

/// The family of a model id, profile id or context-suffixed id.
pub fn family(id: &str) -> Option<&'static Family> {
    let id = ModelId::parse(id).ok()?;
    let base = id.base()?;
    FAMILIES.iter().find(|f| f.base_ids.contains(&base))
}

/// Why a configured model cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelConfigError {
    #[error("unknown model {0:?}: not in the capability table (crates/core/src/models.rs)")]
    Unknown(String),
    #[error("model {id:?} ({family}) reached its end of life on Bedrock on {since}; choose an active model")]
    EndOfLife { id: String, family: &'static str, since: &'static str },
    #[error("unknown intent {0:?} in the routing table; intents: {1}")]
    UnknownIntent(String, String),
    #[error("malformed routing entry {0:?}: expected intent=value")]
    Malformed(String),
    #[error("max tokens for {0:?} must be a positive number")]
    BadMaxTokens(String),
}

/// Refuses, at cold start, a model that no request could reach: unknown, or past its end of life.
/// Provisioned-throughput ARNs are not checked (the reconciler bought them for a known model).
pub fn check(id: &str) -> Result<Option<&'static Family>, ModelConfigError> {
    if ModelId::parse(id).is_ok_and(|m| m.is_provisioned()) {
        return Ok(None);
    }
    let f = family(id).ok_or_else(|| ModelConfigError::Unknown(id.to_owned()))?;
    match f.lifecycle {
        Lifecycle::EndOfLife { since } => Err(ModelConfigError::EndOfLife { id: id.to_owned(), family: f.name, since }),
        Lifecycle::Active | Lifecycle::Legacy { .. } => Ok(Some(f)),
    }
}

/// The model id to call `base` by from a stack in `region`, among the profiles its family is offered
/// through: in Tokyo and Osaka the Japan profile (requests stay in Japan), else the Asia Pacific one (Nova
/// Micro and Lite have no `jp.` profile), else the global one; elsewhere the global profile, else the
/// Region's geography; the base id itself (in-Region) when none of those is offered. A model outside the
/// capability table gets `jp.` in Japan and `global.` elsewhere.
pub fn profile_for_region(region: &str, base: &str) -> String {
    use ProfilePrefix::{Apac, Eu, Global, Jp, Us, UsGov};
    const UNKNOWN: &[ProfilePrefix] = &ProfilePrefix::ALL;
    let offered = family(base).map_or(UNKNOWN, |f| f.profiles);
    let preference: &[ProfilePrefix] = match region {
        "ap-northeast-1" | "ap-northeast-3" => &[Jp, Apac, Global],
        r if r.starts_with("us-gov-") => &[UsGov],
        r if r.starts_with("us-") => &[Global, Us],
        r if r.starts_with("eu-") => &[Global, Eu],
        r if r.starts_with("ap-") => &[Global, Apac],
        _ => &[Global],
    };
    preference
        .iter()
        .find(|p| offered.contains(p))
        .map_or_else(|| base.to_owned(), |p| format!("{}.{base}", p.as_str()))
}

/// Request levers the operator switched on; each reaches only models that support it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levers {
    /// `performanceConfig.latency = optimized`.
    pub latency_optimized: bool,
    /// `serviceTier = priority`.
    pub priority_tier: bool,
    /// A `cachePoint` after the stable system prefix, when it is long enough to be cached.
    pub prompt_cache: bool,
}

/// The levers one request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestLevers {
    pub latency_optimized: bool,
    pub priority_tier: bool,
    /// A `cachePoint` after the system prefix.
    pub cache_point: bool,
}

impl Levers {
    /// What a request to `model_id` may carry, given the tokens of its stable system prefix.
    pub fn for_model(&self, model_id: &str, prefix_tokens: usize) -> RequestLevers {
        let Some(f) = family(model_id) else { return RequestLevers::default() };
        RequestLevers {
            latency_optimized: self.latency_optimized && f.latency_optimized,
            priority_tier: self.priority_tier && f.priority_tier,
            cache_point: self.prompt_cache
                && f.cache_min_tokens.is_some_and(|min| prefix_tokens >= usize::try_from(min).unwrap_or(usize::MAX)),
        }
    }
}

/// The model (or profile) and answer cap for one intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelChoice {
    pub model_id: String,
    pub max_tokens: u32,
}

/// Intent -> model and answer cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRouting {
    pub default: ModelChoice,
    pub by_intent: BTreeMap<Intent, ModelChoice>,
}

/// The intents a small model answers well: short, policy- or status-shaped answers.
pub const SIMPLE_INTENTS: &[Intent] = &[
    Intent::Faq,
    Intent::OrderTracking,
    Intent::ReturnRequest,
    Intent::CheckoutHelp,
    Intent::Promotion,
    Intent::General,
];

fn entries(spec: &str) -> Result<Vec<(&str, &str)>, ModelConfigError> {
    spec.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| e.split_once('=').map(|(k, v)| (k.trim(), v.trim())).ok_or(ModelConfigError::Malformed(e.to_owned())))
        .collect()
}

fn intent_key(k: &str) -> Result<Option<Intent>, ModelConfigError> {
    if k == "default" {
        return Ok(None);
    }
    Intent::parse(k).map(Some).ok_or_else(|| {
        let names: Vec<&str> = Intent::ALL.iter().map(|i| i.as_str()).collect();
        ModelConfigError::UnknownIntent(k.to_owned(), format!("{}, default", names.join(", ")))
    })
}

impl ModelRouting {
    /// One model for everything.
    pub fn single(model_id: impl Into<String>, max_tokens: u32) -> Self {
        Self { default: ModelChoice { model_id: model_id.into(), max_tokens }, by_intent: BTreeMap::new() }
    }

    /// The default routing: [`SIMPLE_INTENTS`] to `small` with `simple_max_tokens`, the rest to `main`.
    pub fn split(main: &str, small: &str, max_tokens: u32, simple_max_tokens: u32) -> Self {
        let mut r = Self::single(main, max_tokens);
        for i in SIMPLE_INTENTS {
            r.by_intent.insert(*i, ModelChoice { model_id: small.to_owned(), max_tokens: simple_max_tokens });
        }
        r
    }

    /// Applies `MODEL_BY_INTENT` (`faq=<model>,order_tracking=<model>,default=<model>`) and
    /// `MAX_TOKENS_BY_INTENT` (`faq=150,default=400`) on top of `self`. Every model named is [`check`]ed.
    pub fn with_overrides(mut self, models: &str, max_tokens: &str) -> Result<Self, ModelConfigError> {
        for (k, v) in entries(models)? {
            match intent_key(k)? {
                None => self.default.model_id = v.to_owned(),
                Some(i) => {
                    let max = self.for_intent(i).max_tokens;
                    self.by_intent.insert(i, ModelChoice { model_id: v.to_owned(), max_tokens: max });
                }
            }
        }
        for (k, v) in entries(max_tokens)? {
            let n = v.parse::<u32>().ok().filter(|n| *n > 0).ok_or(ModelConfigError::BadMaxTokens(k.to_owned()))?;
            match intent_key(k)? {
                None => self.default.max_tokens = n,
                Some(i) => {
                    let model_id = self.for_intent(i).model_id.clone();
                    self.by_intent.insert(i, ModelChoice { model_id, max_tokens: n });
                }
            }
        }
        self.models().try_for_each(|m| check(m).map(|_| ()))?;
        Ok(self)
    }

    pub fn for_intent(&self, intent: Intent) -> &ModelChoice {
        self.by_intent.get(&intent).unwrap_or(&self.default)
    }

    /// Every model the routing can send to.
    pub fn models(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.default.model_id.as_str()).chain(self.by_intent.values().map(|c| c.model_id.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_never_told_an_arn_or_an_account() {
        let client_model_id = ModelId::client_name_of;
        let haiku = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";
        let pt = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123xyz";
        assert_eq!(client_model_id(pt, haiku), haiku);
        assert_eq!(client_model_id(haiku, "other"), haiku);
        assert_eq!(
            client_model_id("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0", haiku),
            "amazon.nova-lite-v1:0"
        );
        assert_eq!(
            client_model_id("arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.amazon.nova-lite-v1:0", ""),
            "us.amazon.nova-lite-v1:0"
        );
        let app = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3";
        assert_eq!(client_model_id(app, haiku), haiku);
        assert_eq!(client_model_id(pt, app), "provisioned");
        let custom = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-lite-v1:0:300k/abc";
        assert_eq!(client_model_id(custom, haiku), haiku);
        let fm = "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0";
        assert_eq!(client_model_id(pt, fm), "Amazon Nova Lite", "an ARN intent is named by its family");
        let malformed = "arn:aws:bedrock:us-east-1:123456789012:foundation-model/";
        assert_eq!(client_model_id(malformed, haiku), haiku);
        for out in [client_model_id(pt, haiku), client_model_id(app, pt), client_model_id(malformed, "")] {
            assert!(!out.contains("arn:") && !out.contains("123456789012"), "{out}");
        }
    }

    #[test]
    fn profile_ids_suffixes_and_arns_reduce_to_the_base_id() {
        for id in [
            "jp.anthropic.claude-haiku-4-5-20251001-v1:0",
            "global.anthropic.claude-haiku-4-5-20251001-v1:0",
            "anthropic.claude-haiku-4-5-20251001-v1:0:200k",
            "arn:aws:bedrock:ap-northeast-1:123456789012:inference-profile/jp.anthropic.claude-haiku-4-5-20251001-v1:0",
            "arn:aws:bedrock:ap-northeast-3::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0",
        ] {
            assert_eq!(ModelId::parse(id).unwrap().base(), Some(CLAUDE_HAIKU_4_5), "{id}");
            assert_eq!(family(id).map(|f| f.name), Some("Claude Haiku 4.5"), "{id}");
        }
        assert!(family("meta.llama-nope").is_none());
        assert!(family("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc").is_none());
        let pt = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc";
        assert!(same_base_model("anthropic.claude-haiku-4-5-20251001-v1:0:200k", &format!("jp.{CLAUDE_HAIKU_4_5}")));
        assert!(!same_base_model(pt, pt), "an ARN that names no model matches nothing");
        assert!(!same_base_model(NOVA_2_LITE, CLAUDE_HAIKU_4_5));
    }

    #[test]
    fn end_of_life_and_unknown_models_are_refused_at_start() {
        let eol = check("anthropic.claude-3-5-haiku-20241022-v1:0").unwrap_err();
        assert!(eol.to_string().contains("2026-06-19"), "{eol}");
        assert!(matches!(check("us.anthropic.claude-3-haiku-20240307-v1:0"), Err(ModelConfigError::EndOfLife { .. })));
        assert_eq!(check("nope.model"), Err(ModelConfigError::Unknown("nope.model".into())));
        assert!(check("jp.amazon.nova-2-lite-v1:0").is_ok());
        assert_eq!(check("arn:aws:bedrock:ap-northeast-1:1:provisioned-model/abc"), Ok(None));
    }

    #[test]
    fn the_stack_region_picks_the_japan_profile_or_the_global_one() {
        assert_eq!(profile_for_region("ap-northeast-1", CLAUDE_HAIKU_4_5), format!("jp.{CLAUDE_HAIKU_4_5}"));
        assert_eq!(profile_for_region("eu-west-1", NOVA_2_LITE), format!("global.{NOVA_2_LITE}"));
        assert_eq!(profile_for_region("ap-northeast-3", NOVA_2_LITE), format!("jp.{NOVA_2_LITE}"));
    }

    #[test]
    fn a_model_without_a_japan_profile_is_called_through_the_asia_pacific_one_from_tokyo() {
        for base in ["amazon.nova-micro-v1:0", "amazon.nova-lite-v1:0", "amazon.nova-pro-v1:0"] {
            assert_eq!(profile_for_region("ap-northeast-1", base), format!("apac.{base}"));
            assert_eq!(profile_for_region("ap-northeast-3", base), format!("apac.{base}"));
            assert_eq!(
                profile_for_region("us-east-1", base),
                format!("us.{base}"),
                "no global profile: the geography's"
            );
            assert_eq!(profile_for_region("eu-central-1", base), format!("eu.{base}"));
            assert_eq!(profile_for_region("sa-east-1", base), base, "no profile offered: the in-Region id");
        }
        // Every profile chosen names a profile the family is offered through.
        for f in FAMILIES {
            for region in ["ap-northeast-1", "ap-northeast-3", "us-east-1", "eu-west-1", "ap-southeast-2"] {
                let chosen = ModelId::parse(&profile_for_region(region, f.base_ids[0])).unwrap();
                assert!(chosen.profile().is_none_or(|p| f.profiles.contains(&p)), "{} in {region}: {chosen}", f.name);
            }
        }
        assert_eq!(profile_for_region("ap-northeast-1", "meta.unknown-v1:0"), "jp.meta.unknown-v1:0");
        assert_eq!(profile_for_region("us-west-2", "meta.unknown-v1:0"), "global.meta.unknown-v1:0");
    }

    #[test]
    fn each_lever_reaches_only_the_families_that_offer_it() {
        let all = Levers { latency_optimized: true, priority_tier: true, prompt_cache: true };
        let haiku = all.for_model("jp.anthropic.claude-haiku-4-5-20251001-v1:0", 5000);
        assert_eq!(haiku, RequestLevers { latency_optimized: false, priority_tier: false, cache_point: true });
        let short = all.for_model("jp.anthropic.claude-haiku-4-5-20251001-v1:0", 4095);
        assert!(!short.cache_point, "below 4,096 tokens a checkpoint would not cache: none is sent");
        let nova = all.for_model("jp.amazon.nova-2-lite-v1:0", 5000);
        assert_eq!(nova, RequestLevers { latency_optimized: false, priority_tier: true, cache_point: false });
        let pro = all.for_model("us.amazon.nova-pro-v1:0", 0);
        assert!(pro.latency_optimized && pro.priority_tier && !pro.cache_point);
        assert_eq!(Levers::default().for_model("us.amazon.nova-pro-v1:0", 9999), RequestLevers::default());
    }

    #[test]
    fn the_routing_table_sends_simple_intents_to_the_small_model_and_reads_overrides() {
        let main = format!("jp.{CLAUDE_HAIKU_4_5}");
        let small = format!("jp.{NOVA_2_LITE}");
        let r = ModelRouting::split(&main, &small, 400, 200);
        assert_eq!(r.for_intent(Intent::Faq), &ModelChoice { model_id: small.clone(), max_tokens: 200 });
        assert_eq!(r.for_intent(Intent::Recommendation).model_id, main);
        let r = r
            .with_overrides(
                "faq = jp.amazon.nova-2-lite-v1:0, product_question=us.amazon.nova-pro-v1:0",
                "faq=120,default=350",
            )
            .unwrap();
        assert_eq!(r.for_intent(Intent::Faq).max_tokens, 120);
        assert_eq!(r.for_intent(Intent::ProductQuestion).model_id, "us.amazon.nova-pro-v1:0");
        assert_eq!(r.for_intent(Intent::Recommendation).max_tokens, 350);
    }

    #[test]
    fn a_bad_routing_table_is_a_clear_startup_error() {
        let r = ModelRouting::single(format!("jp.{CLAUDE_HAIKU_4_5}"), 400);
        let e = r.clone().with_overrides("shopping=jp.amazon.nova-2-lite-v1:0", "").unwrap_err();
        assert!(matches!(&e, ModelConfigError::UnknownIntent(k, _) if k == "shopping"), "{e}");
        assert!(e.to_string().contains("order_tracking"), "the message lists the intents: {e}");
        assert!(matches!(r.clone().with_overrides("faq=made.up-v1:0", ""), Err(ModelConfigError::Unknown(_))));
        assert!(matches!(r.clone().with_overrides("faq", ""), Err(ModelConfigError::Malformed(_))));
        assert!(matches!(r.with_overrides("", "faq=0"), Err(ModelConfigError::BadMaxTokens(_))));
    }
}
