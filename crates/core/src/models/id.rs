//! One grammar for the model identifiers Bedrock accepts as `modelId`, parsed once into [`ModelId`].
//!
//! - a base model id: `provider.name[:version[:context]]` (`anthropic.claude-haiku-4-5-20251001-v1:0`; a
//!   third part is the context-length variant provisioned throughput is bought for, `...-v1:0:200k`);
//! - a cross-Region inference profile: a geography prefix before a base id (`jp.`, `global.`, ...,
//!   [`ProfilePrefix`]);
//! - an ARN, `arn:<partition>:bedrock:<region>:<account>:<type>/<resource>`, of a foundation model, a
//!   system inference profile, an application inference profile, a provisioned throughput or a custom model.
//!
//! Everything that asks "which base model is this", "is this a provisioned-throughput ARN", "what may a
//! client be told", or "can provisioned throughput be bought for this" asks a [`ModelId`], so the prefix list
//! and the ARN shapes are written down once.

use std::fmt;
use std::str::FromStr;

/// The geography prefix of a cross-Region (system-defined) inference profile id.
///
/// Bedrock user guide, "Geographic cross-Region inference" (profiles tied to a geography such as US, EU,
/// APAC) and the CDK's `CrossRegionInferenceProfileRegion` (GLOBAL, US, EU, US_GOV, APAC, JP, AU); `in.` and
/// `ca.` are the India and Canada geographies the capability table's model cards name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProfilePrefix {
    Global,
    Us,
    Eu,
    Jp,
    Apac,
    Au,
    In,
    Ca,
    UsGov,
}

impl ProfilePrefix {
    /// Every prefix Bedrock uses.
    pub const ALL: [Self; 9] =
        [Self::Global, Self::Us, Self::Eu, Self::Jp, Self::Apac, Self::Au, Self::In, Self::Ca, Self::UsGov];

    /// The prefix as written before the base id (without its dot).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::Us => "us",
            Self::Eu => "eu",
            Self::Jp => "jp",
            Self::Apac => "apac",
            Self::Au => "au",
            Self::In => "in",
            Self::Ca => "ca",
            Self::UsGov => "us-gov",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// Which of the accepted shapes an id has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelKind {
    /// `anthropic.claude-haiku-4-5-20251001-v1:0`, with or without a context variant (`:200k`).
    Base,
    /// `jp.anthropic.claude-haiku-4-5-20251001-v1:0`.
    Profile(ProfilePrefix),
    /// `arn:aws:bedrock:<region>::foundation-model/<base id>`.
    FoundationModelArn,
    /// `arn:aws:bedrock:<region>:<account>:inference-profile/<profile id>` (system-defined).
    InferenceProfileArn(ProfilePrefix),
    /// `arn:aws:bedrock:<region>:<account>:application-inference-profile/<id>`: names no model.
    ApplicationProfileArn,
    /// `arn:aws:bedrock:<region>:<account>:provisioned-model/<id>`: names no model.
    ProvisionedArn,
    /// `arn:aws:bedrock:<region>:<account>:custom-model/<...>`: a customized model, not its base.
    CustomModelArn,
}

/// Where the base id sits in the text: `start..end` is the base id without its context variant; the
/// provider ends at `dot`; the context variant, if any, runs from `context` to the end of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BaseSpan {
    start: usize,
    dot: usize,
    end: usize,
    context: Option<usize>,
}

/// A model identifier, checked against the grammar of the module docs; it keeps its text as given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelId {
    text: String,
    kind: ModelKind,
    base: Option<BaseSpan>,
}

/// Why a string is not a model identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed model id {id:?}: {why}")]
pub struct ModelIdError {
    pub id: String,
    pub why: &'static str,
}

impl ModelIdError {
    /// Stable machine-readable code.
    pub const fn code(&self) -> &'static str {
        "invalid_model_id"
    }

    /// A malformed id stays malformed.
    pub const fn is_retryable(&self) -> bool {
        false
    }
}

/// `provider.name[:version[:context]]` at `text[start..]`, or why not.
fn base_span(text: &str, start: usize) -> Result<BaseSpan, &'static str> {
    let s = &text[start..];
    let Some((provider, rest)) = s.split_once('.') else { return Err("expected provider.model") };
    if provider.is_empty() || !provider.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Err("the provider is not [a-z0-9-]+");
    }
    let mut parts = rest.split(':');
    let name = parts.next().unwrap_or_default();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        return Err("the model name is not [A-Za-z0-9._-]+");
    }
    let version = parts.next();
    if version.is_some_and(|v| v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the version is not a number");
    }
    let context = parts.next();
    if context.is_some_and(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())) {
        return Err("the context variant is not [a-z0-9]+");
    }
    if parts.next().is_some() {
        return Err("more than three ':' parts");
    }
    let dot = start + provider.len();
    let context_start = context.map(|c| text.len() - c.len());
    let end = context_start.map_or(text.len(), |c| c - 1);
    Ok(BaseSpan { start, dot, end, context: context_start })
}

/// A base id, or a profile prefix and a base id, at `text[start..]`.
fn id_at(text: &str, start: usize) -> Result<(Option<ProfilePrefix>, BaseSpan), &'static str> {
    let s = &text[start..];
    if let Some((head, _)) = s.split_once('.')
        && let Some(prefix) = ProfilePrefix::parse(head)
    {
        return Ok((Some(prefix), base_span(text, start + head.len() + 1)?));
    }
    Ok((None, base_span(text, start)?))
}

fn arn(text: &str) -> Result<(ModelKind, Option<BaseSpan>), &'static str> {
    let mut fields = text.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(region), Some(account), Some(resource)) =
        (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err("expected arn:<partition>:bedrock:<region>:<account>:<type>/<resource>");
    };
    if partition.is_empty() || service != "bedrock" || region.is_empty() {
        return Err("not a Bedrock ARN with a partition and a Region");
    }
    if !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the account is not a number");
    }
    let Some((kind, id)) = resource.split_once('/') else { return Err("expected <type>/<resource>") };
    let at = text.len() - id.len();
    let opaque = |kind| if id.is_empty() { Err("empty resource id") } else { Ok((kind, None)) };
    match kind {
        "foundation-model" => match id_at(text, at)? {
            (None, base) => Ok((ModelKind::FoundationModelArn, Some(base))),
            (Some(_), _) => Err("a foundation-model ARN names a base id, not a profile"),
        },
        "inference-profile" => match id_at(text, at)? {
            (Some(prefix), base) => Ok((ModelKind::InferenceProfileArn(prefix), Some(base))),
            (None, _) => Err("an inference-profile ARN names a profile id"),
        },
        "application-inference-profile" if !id.contains('/') => opaque(ModelKind::ApplicationProfileArn),
        "provisioned-model" if !id.contains('/') => opaque(ModelKind::ProvisionedArn),
        "custom-model" => opaque(ModelKind::CustomModelArn),
        _ => Err("not a model resource of Bedrock"),
    }
}

impl ModelId {
    /// Parses `id` against the grammar of the module docs.
    pub fn parse(id: &str) -> Result<Self, ModelIdError> {
        let parsed = if id.starts_with("arn:") {
            arn(id)
        } else {
            id_at(id, 0).map(|(prefix, base)| (prefix.map_or(ModelKind::Base, ModelKind::Profile), Some(base)))
        };
        match parsed {
            Ok((kind, base)) => Ok(Self { text: id.to_owned(), kind, base }),
            Err(why) => Err(ModelIdError { id: id.to_owned(), why }),
        }
    }

    /// The id as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub const fn kind(&self) -> ModelKind {
        self.kind
    }

    /// The base model id behind a base id, a profile or a foundation-model or system-profile ARN, without
    /// its context variant: what the capability table is keyed by. `None` for an ARN that names no model
    /// (application profile, provisioned throughput) or a customized one.
    pub fn base(&self) -> Option<&str> {
        self.base.map(|b| &self.text[b.start..b.end])
    }

    /// The provider of the base model (`anthropic`).
    pub fn provider(&self) -> Option<&str> {
        self.base.map(|b| &self.text[b.start..b.dot])
    }

    /// The model's version (`0` in `...-v1:0`), when the id has one.
    pub fn version(&self) -> Option<&str> {
        let base = self.base()?;
        let (_, name) = base.split_once('.')?;
        name.split_once(':').map(|(_, v)| v)
    }

    /// The context-length variant (`200k` in `...-v1:0:200k`).
    pub fn context(&self) -> Option<&str> {
        self.base.and_then(|b| b.context).map(|c| &self.text[c..])
    }

    /// The geography of a profile id or system-profile ARN.
    pub const fn profile(&self) -> Option<ProfilePrefix> {
        match self.kind {
            ModelKind::Profile(p) | ModelKind::InferenceProfileArn(p) => Some(p),
            _ => None,
        }
    }

    pub const fn is_arn(&self) -> bool {
        !matches!(self.kind, ModelKind::Base | ModelKind::Profile(_))
    }

    /// A provisioned-throughput ARN: served by what the reconciler bought, so never checked against the
    /// capability table, and never shown to a client (it names the account).
    pub const fn is_provisioned(&self) -> bool {
        matches!(self.kind, ModelKind::ProvisionedArn)
    }

    /// Whether both name the same base model (a context variant and a profile do not matter).
    pub fn same_base(&self, other: &Self) -> bool {
        self.base().is_some() && self.base() == other.base()
    }

    /// What `CreateProvisionedModelThroughput` accepts as `modelId` here: a base id with its context-length
    /// variant (`anthropic.claude-haiku-4-5-20251001-v1:0:200k`, a number of thousands of tokens), or a custom
    /// model's ARN. A bare on-demand id or an inference profile (`jp.`, `global.`) is refused by Bedrock.
    pub fn provisioned_purchase_ok(&self) -> bool {
        match self.kind {
            ModelKind::CustomModelArn => true,
            ModelKind::Base => {
                self.version().is_some()
                    && self
                        .context()
                        .and_then(|c| c.strip_suffix('k'))
                        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            }
            _ => false,
        }
    }

    /// The model a client is told answered, when this id served the request and `intent_model` is the id
    /// the intent's route asked for: this id when it is a model or profile id; the model or profile id inside
    /// a foundation-model or system-profile ARN; otherwise (an ARN that names an account and no model)
    /// `intent_model` (provisioned throughput serves that same base model), or, when that too is an ARN, its
    /// family's name. Never an ARN, never an account id.
    pub fn client_name(&self, intent_model: &str) -> String {
        match self.kind {
            ModelKind::Base | ModelKind::Profile(_) => self.text.clone(),
            ModelKind::FoundationModelArn | ModelKind::InferenceProfileArn(_) => {
                let start = self.base.map_or(0, |b| b.start);
                let start = self.text[..start].rfind('/').map_or(start, |slash| slash + 1);
                self.text[start..].to_owned()
            }
            ModelKind::ApplicationProfileArn | ModelKind::ProvisionedArn | ModelKind::CustomModelArn => {
                Self::opaque_name(intent_model)
            }
        }
    }

    /// [`Self::client_name`] of `served`, which may not parse: a malformed ARN is named like an opaque one;
    /// any other text passes as it is.
    pub fn client_name_of(served: &str, intent_model: &str) -> String {
        match Self::parse(served) {
            Ok(id) => id.client_name(intent_model),
            Err(_) if served.starts_with("arn:") => Self::opaque_name(intent_model),
            Err(_) => served.to_owned(),
        }
    }

    /// The name for an ARN that names no model: the intent's model id, or its family's name.
    fn opaque_name(intent_model: &str) -> String {
        if !intent_model.is_empty() && !intent_model.starts_with("arn:") {
            return intent_model.to_owned();
        }
        super::family(intent_model).map_or_else(|| "provisioned".to_owned(), |f| f.name.to_owned())
    }
}

impl FromStr for ModelId {
    type Err = ModelIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for ModelId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HAIKU: &str = "anthropic.claude-haiku-4-5-20251001-v1:0";

    fn id(s: &str) -> ModelId {
        ModelId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn every_profile_prefix_reduces_to_the_base_id() {
        for prefix in ProfilePrefix::ALL {
            let profile = id(&format!("{}.{HAIKU}", prefix.as_str()));
            assert_eq!(profile.kind(), ModelKind::Profile(prefix), "{profile}");
            assert_eq!(profile.profile(), Some(prefix));
            assert_eq!(profile.base(), Some(HAIKU), "{profile}");
            assert_eq!(profile.provider(), Some("anthropic"));
            assert!(!profile.is_arn() && !profile.is_provisioned() && !profile.provisioned_purchase_ok());
        }
        assert_eq!(id("in.amazon.nova-lite-v1:0").profile(), Some(ProfilePrefix::In));
        assert_eq!(id("us-gov.amazon.nova-lite-v1:0").base(), Some("amazon.nova-lite-v1:0"));
        assert_eq!(id(HAIKU).kind(), ModelKind::Base);
        assert_eq!(id(HAIKU).profile(), None);
    }

    #[test]
    fn a_context_variant_is_kept_apart_from_the_base_id() {
        let pt = id("anthropic.claude-haiku-4-5-20251001-v1:0:200k");
        assert_eq!((pt.base(), pt.version(), pt.context()), (Some(HAIKU), Some("0"), Some("200k")));
        assert_eq!(id(HAIKU).context(), None);
        assert_eq!(id(HAIKU).version(), Some("0"));
        let unversioned = id("amazon.titan-embed-text-v1");
        assert_eq!((unversioned.base(), unversioned.version()), (Some("amazon.titan-embed-text-v1"), None));
        let profiled = id("jp.amazon.nova-lite-v1:0:300k");
        assert_eq!((profiled.base(), profiled.context()), (Some("amazon.nova-lite-v1:0"), Some("300k")));
        assert!(id("amazon.nova-lite-v1:0:300k").same_base(&id("apac.amazon.nova-lite-v1:0")));
        assert!(!id("amazon.nova-lite-v1:0").same_base(&id("amazon.nova-micro-v1:0")));
    }

    #[test]
    fn each_arn_kind_is_recognised_and_only_model_arns_name_a_base() {
        let fm = id("arn:aws:bedrock:ap-northeast-3::foundation-model/anthropic.claude-haiku-4-5-20251001-v1:0");
        assert_eq!((fm.kind(), fm.base()), (ModelKind::FoundationModelArn, Some(HAIKU)));
        let ip = id("arn:aws:bedrock:ap-northeast-1:123456789012:inference-profile/jp.amazon.nova-2-lite-v1:0");
        assert_eq!(ip.kind(), ModelKind::InferenceProfileArn(ProfilePrefix::Jp));
        assert_eq!(ip.base(), Some("amazon.nova-2-lite-v1:0"));
        let gov =
            id("arn:aws-us-gov:bedrock:us-gov-west-1:123456789012:inference-profile/us-gov.amazon.nova-lite-v1:0");
        assert_eq!(gov.profile(), Some(ProfilePrefix::UsGov));
        for (arn, kind) in [
            (
                "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3",
                ModelKind::ApplicationProfileArn,
            ),
            ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123xyz", ModelKind::ProvisionedArn),
            (
                "arn:aws:bedrock:ap-northeast-1:123456789012:custom-model/amazon.nova-lite-v1:0:300k/abc123",
                ModelKind::CustomModelArn,
            ),
        ] {
            let m = id(arn);
            assert_eq!(m.kind(), kind, "{arn}");
            assert!(m.is_arn() && m.base().is_none() && m.profile().is_none(), "{arn}");
            assert_eq!(m.is_provisioned(), kind == ModelKind::ProvisionedArn, "{arn}");
        }
        assert!(!fm.is_provisioned() && !ip.is_provisioned());
    }

    #[test]
    fn provisioned_throughput_is_bought_for_a_context_variant_or_a_custom_model_only() {
        for ok in [
            "anthropic.claude-haiku-4-5-20251001-v1:0:200k",
            "amazon.nova-lite-v1:0:300k",
            "arn:aws:bedrock:ap-northeast-1:123456789012:custom-model/amazon.nova-lite-v1:0:300k/abc123",
        ] {
            assert!(id(ok).provisioned_purchase_ok(), "{ok}");
        }
        for bad in [
            HAIKU,
            "in.anthropic.claude-haiku-4-5-20251001-v1:0:200k",
            "jp.anthropic.claude-haiku-4-5-20251001-v1:0:200k",
            "global.amazon.nova-2-lite-v1:0:300k",
            "anthropic.claude-haiku-4-5-20251001-v1:0:200",
            "anthropic.claude-haiku-4-5-20251001-v1:0:k",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc",
            "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0:300k",
        ] {
            assert!(!id(bad).provisioned_purchase_ok(), "{bad}");
        }
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        for bad in [
            "",
            "m",
            "jp.",
            "global.m",
            ".claude",
            "anthropic.",
            "Anthropic.claude-v1:0",
            "anthropic.claude haiku:0",
            "anthropic.claude-v1:x",
            "anthropic.claude-v1:0:",
            "anthropic.claude-v1:0:200K",
            "anthropic.claude-v1:0:200k:1",
            "arn:aws:bedrock",
            "arn:aws:s3:us-east-1:123456789012:provisioned-model/abc",
            "arn::bedrock:us-east-1:123456789012:provisioned-model/abc",
            "arn:aws:bedrock:us-east-1:acct:provisioned-model/abc",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/",
            "arn:aws:bedrock:us-east-1:123456789012:provisioned-model",
            "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc",
            "arn:aws:bedrock:us-east-1::foundation-model/jp.amazon.nova-lite-v1:0",
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/amazon.nova-lite-v1:0",
        ] {
            let e = ModelId::parse(bad).unwrap_err();
            assert_eq!((e.id.as_str(), e.code(), e.is_retryable()), (bad, "invalid_model_id", false));
            assert!(e.to_string().contains(e.why), "{e}");
        }
    }

    #[test]
    fn an_id_keeps_its_text() {
        let text = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";
        let m: ModelId = text.parse().unwrap();
        assert_eq!((m.as_str(), m.to_string().as_str(), m.as_ref()), (text, text, text));
    }
}
