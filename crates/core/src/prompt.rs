//! The model request for a turn: a stable system prompt first (cacheable prefix), then recent history,
//! then the per-turn context and the user message. The compression pipeline (token budgets per section)
//! builds on this layout.

use serde_json::{Map, Value};

use crate::ports::{ChatMessage, ModelRequest, Role, TurnRecord};
use crate::protocol::{ClientMessage, ProductRef};

/// The system prompt: short on purpose, every token costs prefill time on every turn.
pub const SYSTEM_PROMPT: &str = "You are MangaAssist, the shopping assistant of a Japanese manga store. \
Answer in the shopper's language, briefly: at most 3 short sentences or a list of at most 5 titles. \
Recommend only products that appear in the context, with their ASIN. \
If you do not know, say so and suggest how to find out.";

/// Model parameters of a turn.
#[derive(Debug, Clone)]
pub struct PromptConfig {
    pub max_tokens: u32,
    pub temperature: f32,
}

/// Renders page context as compact `key=value` pairs; strings unquoted, other values as JSON.
pub fn render_page_context(ctx: &Map<String, Value>) -> String {
    let mut out = String::new();
    for (k, v) in ctx {
        if v.is_null() {
            continue;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(k);
        out.push('=');
        match v {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

/// Builds the request: system prompt, the given history (oldest first), then this message with its page
/// context.
pub fn build_request(
    model_id: &str,
    cfg: &PromptConfig,
    msg: &ClientMessage,
    history: &[TurnRecord],
    metadata: Vec<(String, String)>,
) -> ModelRequest {
    let mut messages = Vec::with_capacity(history.len() * 2 + 1);
    for t in history {
        messages.push(ChatMessage { role: Role::User, text: t.user_text.clone() });
        if !t.assistant_text.is_empty() {
            messages.push(ChatMessage { role: Role::Assistant, text: t.assistant_text.clone() });
        }
    }
    let page = render_page_context(&msg.page_context);
    let text = if page.is_empty() { msg.text.clone() } else { format!("[page] {page}\n{}", msg.text) };
    messages.push(ChatMessage { role: Role::User, text });
    ModelRequest {
        model_id: model_id.to_owned(),
        system: SYSTEM_PROMPT.to_owned(),
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

    #[test]
    fn page_context_renders_compactly() {
        let ctx: Map<String, Value> =
            serde_json::from_str(r#"{"current_asin":"B0ABCDEF12","cart":["a","b"],"x":null}"#).unwrap();
        assert_eq!(render_page_context(&ctx), r#"cart=["a","b"]; current_asin=B0ABCDEF12"#);
    }
}
