//! The model request for a turn: the system prompt template, and the request built from a compressed
//! prompt (stable system block first, so Bedrock prompt caching can hit) or, for the ablation, from the
//! uncompressed inputs.

use crate::compress::{CompressInput, CompressedPrompt};
use crate::ports::{ChatMessage, ModelRequest, Role};
use crate::protocol::ProductRef;

/// The system prompt template. Lines starting with `@intent,...:` are optional blocks that the
/// compressor keeps only for those intents; the rest is always sent (minified).
pub const SYSTEM_PROMPT: &str = "\
You are MangaAssist, the shopping assistant of a Japanese manga store.
Answer in the shopper's language, briefly: at most 3 short sentences, or a list of at most 5 titles.
Recommend only products that appear in the context, and give each one's ASIN.
If you do not know, say so and suggest how to find out. Never invent prices, stock or dates.
@order_tracking: For orders, ask for the order id (123-1234567-1234567) if it is missing; never guess a delivery date.
@return_request: Returns are accepted within 30 days for unread or damaged volumes; explain the steps, do not promise refunds.
@checkout_help: For checkout problems, suggest checking the cart, the payment method and coupon conditions, in that order.
@promotion: Mention only promotions that appear in the context, with their end dates.
@recommendation,product_discovery: Prefer complete or ongoing series with high ratings; say how many volumes each has.
@product_question: Answer about the product the shopper refers to; if it is ambiguous, ask which one.
";

/// Model parameters of a turn.
#[derive(Debug, Clone)]
pub struct PromptConfig {
    pub max_tokens: u32,
    pub temperature: f32,
}

/// A request carrying a compressed prompt: the system block, then one user message.
pub fn compressed_request(
    model_id: &str,
    cfg: &PromptConfig,
    prompt: &CompressedPrompt,
    metadata: Vec<(String, String)>,
) -> ModelRequest {
    ModelRequest {
        model_id: model_id.to_owned(),
        system: prompt.system.clone(),
        messages: vec![ChatMessage { role: Role::User, text: prompt.user.clone() }],
        max_tokens: cfg.max_tokens,
        temperature: cfg.temperature,
        metadata,
    }
}

/// The uncompressed request (the ablation baseline): the whole system prompt template, every message of
/// the history as its own turn, all retrieved text, the page context as JSON, the message.
pub fn uncompressed_request(
    model_id: &str,
    cfg: &PromptConfig,
    input: &CompressInput<'_>,
    metadata: Vec<(String, String)>,
) -> ModelRequest {
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(input.conversation.len() + 1);
    for m in input.conversation {
        // Converse needs alternating roles starting with the user: merge runs of one role.
        match messages.last_mut() {
            Some(last) if last.role == m.role => {
                last.text.push('\n');
                last.text.push_str(&m.text);
            }
            None if m.role == Role::Assistant => {}
            _ => messages.push(m.clone()),
        }
    }
    let mut text = String::new();
    if let Some(s) = input.summary {
        text.push_str(s);
        text.push('\n');
    }
    for c in input.rag_chunks {
        text.push_str(&c.content);
        text.push('\n');
    }
    if !input.page_context.is_empty() {
        text.push_str(&serde_json::to_string(input.page_context).unwrap_or_default());
        text.push('\n');
    }
    for (k, v) in input.notes {
        text.push_str(&format!("{k}={v}\n"));
    }
    text.push_str(input.user_message);
    if messages.last().is_some_and(|m| m.role == Role::User) {
        messages.pop();
    }
    messages.push(ChatMessage { role: Role::User, text });
    ModelRequest {
        model_id: model_id.to_owned(),
        system: input.system_prompt.to_owned(),
        messages,
        max_tokens: cfg.max_tokens,
        temperature: cfg.temperature,
        metadata,
    }
}

/// Whether `s` is an ASIN: 10 characters, upper-case letters and digits (store ASINs start with `B0`,
/// book ISBN-10s are digits).
pub fn is_asin(s: &str) -> bool {
    s.len() == 10 && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()) && s.starts_with("B0")
}

/// The ASINs a text mentions, in order of first mention, without repeats.
pub fn products_in(text: &str) -> Vec<ProductRef> {
    let mut out: Vec<ProductRef> = Vec::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()) {
        if is_asin(word) && !out.iter().any(|p| p.asin == word) {
            out.push(ProductRef { asin: word.to_owned() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asins_are_found_in_order_without_repeats() {
        let p =
            products_in("Try B0ABCDEF12 (進撃の巨人), or B0ZZZZZZZ9; B0ABCDEF12 again. Not B0abc, not XB0ABCDEF12.");
        let asins: Vec<_> = p.iter().map(|p| p.asin.as_str()).collect();
        assert_eq!(asins, ["B0ABCDEF12", "B0ZZZZZZZ9"]);
    }
}
