//! How the Bedrock emulator treats each model family and request lever: which model ids it accepts,
//! what it refuses the way Bedrock does, and how fast each model answers.
//!
//! The families and what they accept are the core's capability table ([`mangaassist_core::models`]); the
//! speeds here are the emulator's own, relative to its reference latency model (a Claude Haiku-class model:
//! [`super::bedrock::LatencyModel::bedrock_like`]), each from a published measurement:
//!
//! | family | first token | decode | source |
//! |---|---|---|---|
//! | Claude Haiku 4.5 | x1.0 (~0.6 s) | x1.0 (75 tokens/s) | Artificial Analysis, Anthropic API: 0.48 s, 53-88 tokens/s; one Bedrock global-profile call ~0.86 s |
//! | Amazon Nova 2 Lite | x0.5 (~0.3 s) | x3.1 (~233 tokens/s) | Vercel AI Gateway (Bedrock provider): p50 0.3 s, 233 tokens/s; AWS aiperf dashboard (geo profile): 203-303 tokens/s |
//! | Amazon Nova Micro | x0.5 | x5.0 (~375 tokens/s) | AWS aiperf dashboard (aiperf.ghast.people.aws.dev, checked 2026-12-04): in-Region first byte 0.21-0.33 s (eu-west-2, us-east-1, ap-southeast-2), 298-575 tokens/s; Vercel AI Gateway p50 0.3 s |
//! | Amazon Nova Lite | x0.67 (~0.4 s) | x3.0 | Vercel AI Gateway p50 0.4 s |
//! | Amazon Nova Pro | x0.8 | x1.3 | not measured here: an assumption between Lite and the Claude reference |
//!
//! The spread around these medians is the emulator's (uniform jitter, or the heavy tail of
//! [`super::bedrock::HeavyTail`] when it is on), the same for every family: no per-family percentiles are
//! published.
//!
//! Levers:
//! - latency-optimized inference: first token x0.8, decode x1.5 (Artificial Analysis, Claude 3.5 Haiku on
//!   Bedrock: 0.70-0.81 s standard vs 0.59-0.62 s optimized; ~65 vs ~101 tokens/s);
//! - priority tier: decode x1.25 (AWS: "up to 25% better output tokens per second");
//! - prompt cache: a cached prefix read back costs 10% of its prefill time (cache reads skip the prefix's
//!   computation; Anthropic cites up to 85% lower latency for long prompts); the first request writes it
//!   at the full cost; entries live 5 minutes.
//!
//! Refusals, as Bedrock answers them: an unknown model id is a `ValidationException` ("The provided model
//! identifier is invalid."), a model past its end of life a `ResourceNotFoundException`, a lever the model
//! does not offer a `ValidationException`, and so is a prefill (trailing assistant message) to a model
//! that rejects it or one that ends in white space.

use mangaassist_core::models::{Family, Lifecycle, family};

/// How one family's speed relates to the reference latency model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Speed {
    pub first_token: f64,
    pub decode: f64,
}

/// The emulator's speed of a family (see the module table).
pub fn speed(f: &Family) -> Speed {
    let (first_token, decode) = match f.name {
        "Amazon Nova 2 Lite" => (0.5, 3.1),
        "Amazon Nova Micro" => (0.5, 5.0),
        "Amazon Nova Lite" => (0.67, 3.0),
        "Amazon Nova Pro" => (0.8, 1.3),
        _ => (1.0, 1.0),
    };
    Speed { first_token, decode }
}

/// Latency-optimized inference: first token and decode factors.
pub const OPTIMIZED: Speed = Speed { first_token: 0.8, decode: 1.5 };
/// The priority tier's decode factor.
pub const PRIORITY_DECODE: f64 = 1.25;
/// Share of a cached prefix's prefill time that a cache read still costs.
pub const CACHE_READ_COST: f64 = 0.1;

/// A refusal: HTTP status, error type, message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error_type: &'static str,
    pub message: String,
}

fn validation(message: impl Into<String>) -> Refusal {
    Refusal { status: 400, error_type: "ValidationException", message: message.into() }
}

/// What a request asks of the model, as the emulator read it from the body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Asked {
    pub latency_optimized: bool,
    pub service_tier: Option<String>,
    pub cache_point: bool,
    /// The trailing assistant message, when the request ends with one.
    pub prefill: Option<String>,
}

/// The family serving `model_id`, or Bedrock's refusal of the request.
pub fn admit(model_id: &str, asked: &Asked) -> Result<&'static Family, Refusal> {
    let f = family(model_id).ok_or_else(|| validation("The provided model identifier is invalid."))?;
    if let Lifecycle::EndOfLife { .. } = f.lifecycle {
        return Err(Refusal {
            status: 404,
            error_type: "ResourceNotFoundException",
            message: "This model version has reached the end of its life. Please refer to the AWS documentation for more details.".to_owned(),
        });
    }
    if asked.latency_optimized && !f.latency_optimized {
        return Err(validation("Latency-optimized inference is not supported for this model."));
    }
    if asked.service_tier.as_deref().is_some_and(|t| t != "default") && !f.priority_tier {
        return Err(validation("The requested service tier is not supported for this model."));
    }
    if asked.cache_point && f.cache_min_tokens.is_none() {
        return Err(validation("Prompt caching is not supported for this model."));
    }
    if let Some(prefill) = &asked.prefill {
        if !f.prefill {
            return Err(validation("This model does not support assistant message prefill."));
        }
        if prefill.ends_with(char::is_whitespace) {
            return Err(validation("final assistant content cannot end with trailing whitespace"));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_retired_models_are_refused_like_bedrock() {
        let none = Asked::default();
        assert_eq!(admit("made.up-v1:0", &none).unwrap_err().error_type, "ValidationException");
        let eol = admit("anthropic.claude-3-5-haiku-20241022-v1:0", &none).unwrap_err();
        assert_eq!((eol.status, eol.error_type), (404, "ResourceNotFoundException"));
        assert!(admit("jp.anthropic.claude-haiku-4-5-20251001-v1:0", &none).is_ok());
    }

    #[test]
    fn a_lever_or_a_prefill_the_model_does_not_take_is_refused() {
        let haiku = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";
        let nova = "jp.amazon.nova-2-lite-v1:0";
        assert!(admit(haiku, &Asked { latency_optimized: true, ..Asked::default() }).is_err());
        assert!(admit(haiku, &Asked { service_tier: Some("priority".into()), ..Asked::default() }).is_err());
        assert!(admit(nova, &Asked { service_tier: Some("priority".into()), ..Asked::default() }).is_ok());
        assert!(admit(nova, &Asked { cache_point: true, ..Asked::default() }).is_err());
        assert!(admit(haiku, &Asked { prefill: Some("Spiral is".into()), ..Asked::default() }).is_ok());
        assert!(admit(haiku, &Asked { prefill: Some("Spiral is ".into()), ..Asked::default() }).is_err());
        assert!(admit(nova, &Asked { prefill: Some("Spiral is".into()), ..Asked::default() }).is_err());
    }

    #[test]
    fn small_models_are_faster_than_the_reference() {
        let nova = speed(family("jp.amazon.nova-2-lite-v1:0").unwrap());
        assert!(nova.first_token < 1.0 && nova.decode > 1.0);
        assert_eq!(
            speed(family("anthropic.claude-haiku-4-5-20251001-v1:0").unwrap()),
            Speed { first_token: 1.0, decode: 1.0 }
        );
    }
}
