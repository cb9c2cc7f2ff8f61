//! Reading a `Converse` / `ConverseStream` request: its text and token count, the levers and prefill it
//! asks for, its guardrail, the family that serves it, and the answer it gets.

use bytes::Bytes;
use serde_json::Value;

use super::Shared;
use super::record::Fault;
use super::wire::guardrail_not_found;
use crate::emulators::answers::{answer_for, tokenize_answer};
use crate::emulators::guardrail::{self, InCall};
use crate::emulators::models::{Asked, Refusal, admit};
use mangaassist_core::models::Family;

/// How many tokens Claude bills per `cl100k_base` token, on our mixed English/Japanese traffic. An
/// assumption (Claude's tokenizer is not public) that makes the emulator's `inputTokens` differ from our
/// estimate the way Bedrock's would, so the chat function's online calibration has something to learn.
pub const CLAUDE_TOKENS_PER_CL100K: f64 = 1.15;

/// The `inputTokens` the emulator reports for a request's text (`messages` framing adds 3 per message).
pub fn billed_tokens(text: &str, messages: usize) -> u32 {
    let n = mangaassist_core::tokenizer::Tokenizer::count(&mangaassist_core::tokenizer::Cl100k, text);
    ((n as f64) * CLAUDE_TOKENS_PER_CL100K).round() as u32 + 3 * u32::try_from(messages).unwrap_or(0)
}

pub(crate) fn text_of(content: &Value) -> String {
    content
        .as_array()
        .map(|blocks| {
            blocks.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
        })
        .unwrap_or_default()
}

/// What the emulator reads from a `Converse` / `ConverseStream` body.
pub(crate) struct Parsed {
    /// Every system text and message, as one context string (what the answer draws from).
    pub context: String,
    /// The shopper's message: the last user message.
    pub question: String,
    pub messages: usize,
    /// The system text before the cache checkpoint, when the request has one.
    pub cached_prefix: Option<String>,
    pub asked: Asked,
    pub max_tokens: u64,
    /// `requestMetadata.message_id`, or a counter.
    pub key: String,
    /// The `guardrailConfig` object, raw and read.
    pub guardrail_config: Option<Value>,
    pub guardrail: Option<InCall>,
}

pub(crate) fn parse(shared: &Shared, body: &Bytes) -> Result<Parsed, Refusal> {
    let bad = |m: &str| Refusal { status: 400, error_type: "ValidationException", message: m.to_owned() };
    let req: Value = serde_json::from_slice(body).map_err(|_| bad("malformed request body"))?;
    let blocks = req.get("system").and_then(Value::as_array).cloned().unwrap_or_default();
    let checkpoint = blocks.iter().position(|b| b.get("cachePoint").is_some());
    let cached_prefix = checkpoint.map(|n| text_of(&Value::Array(blocks[..n].to_vec())));
    let messages = req.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    if messages.is_empty() {
        return Err(bad("messages must not be empty"));
    }
    let role = |m: &Value| m.get("role").and_then(Value::as_str).unwrap_or("user").to_owned();
    let prefill =
        messages.last().filter(|m| role(m) == "assistant").map(|m| m.get("content").map(text_of).unwrap_or_default());
    let question = messages.iter().rev().find(|m| role(m) == "user").and_then(|m| m.get("content")).map(text_of);
    let mut context = text_of(&Value::Array(blocks));
    for m in &messages {
        context.push('\n');
        context.push_str(&m.get("content").map(text_of).unwrap_or_default());
    }
    let asked = Asked {
        latency_optimized: req.pointer("/performanceConfig/latency").and_then(Value::as_str) == Some("optimized"),
        service_tier: req.pointer("/serviceTier/type").and_then(Value::as_str).map(str::to_owned),
        cache_point: checkpoint.is_some(),
        prefill,
    };
    let guardrail_config = req.get("guardrailConfig").cloned();
    let guardrail = guardrail_config.as_ref().map(guardrail::parse_config).transpose().map_err(|m| bad(&m))?;
    if guardrail.as_ref().is_some_and(|g| g.id == guardrail::MISSING_GUARDRAIL) {
        return Err(guardrail_not_found());
    }
    let key = req
        .pointer("/requestMetadata/message_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("req-{}", shared.counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
    Ok(Parsed {
        context,
        question: question.unwrap_or_default(),
        messages: messages.len(),
        cached_prefix,
        asked,
        max_tokens: req.pointer("/inferenceConfig/maxTokens").and_then(Value::as_u64).unwrap_or(512),
        key,
        guardrail_config,
        guardrail,
    })
}

/// The family serving `model_id` (for a provisioned ARN, the model it was bought for), or the refusal.
pub(crate) fn family_of(shared: &Shared, model_id: &str, asked: &Asked) -> Result<&'static Family, Refusal> {
    let served = match model_id.contains(":provisioned-model/") {
        true => shared.control.list().into_iter().find(|p| p.arn == model_id).map(|p| p.model_arn),
        false => Some(model_id.to_owned()),
    };
    match served {
        Some(id) => admit(&id, asked),
        // Not a known provisioned throughput: the capacity check below answers for it.
        None => admit(mangaassist_core::models::CLAUDE_HAIKU_4_5, asked),
    }
}

/// The answer's tokens: the deterministic answer, continued after a prefill when there is one, saying
/// what a [`Fault::Say`] asks.
pub(crate) fn answer_tokens(shared: &Shared, parsed: &Parsed, fault: Option<&Fault>) -> (Vec<String>, &'static str) {
    let target = shared.cfg.answer_tokens.min(u32::try_from(parsed.max_tokens).unwrap_or(u32::MAX));
    let full = answer_for(&parsed.context, &parsed.question, target);
    let text = match &parsed.asked.prefill {
        Some(p) => continuation(&full, p),
        None => full,
    };
    let text = match fault {
        Some(Fault::Say(sentence)) => say_after_first_sentence(&text, sentence),
        _ => text,
    };
    let mut tokens = tokenize_answer(&text);
    if tokens.len() > parsed.max_tokens as usize {
        tokens.truncate(parsed.max_tokens as usize);
        return (tokens, "max_tokens");
    }
    (tokens, "end_turn")
}

/// `text` with `sentence` after its first sentence (after the first `.`, `!`, `?`, `。`, `！` or `？`
/// that ends one; at the end when none does).
pub(crate) fn say_after_first_sentence(text: &str, sentence: &str) -> String {
    let end = text
        .char_indices()
        .find(|&(i, c)| {
            let next = text[i + c.len_utf8()..].chars().next();
            matches!(c, '。' | '！' | '？') || (matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace))
        })
        .map_or(text.len(), |(i, c)| i + c.len_utf8());
    let space = if sentence.starts_with(|c: char| c.is_ascii()) { " " } else { "" };
    format!("{}{space}{sentence}{}", &text[..end], &text[end..])
}

/// What a model says after `prefill`: the rest of its answer when the answer starts the same way, else the
/// answer after a space (never repeating the prefill).
fn continuation(answer: &str, prefill: &str) -> String {
    match answer.strip_prefix(prefill) {
        Some(rest) => rest.to_owned(),
        None => format!(" {answer}"),
    }
}
