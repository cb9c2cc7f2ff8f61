//! The wire protocol between the browser and the chat Lambda: JSON text frames.
//!
//! - client -> `{"action":"sendMessage","message_id":"<uuid>","text":"...","page_context":{...}}`
//! - client -> `{"action":"typing","text":"<typed so far>","page_context":{...}}` ([`TypingFrame`]; answered
//!   with nothing: the server speculates the context, see [`crate::ahead::speculate`])
//! - server -> `delta`, `completed`, `retract` (the guardrail stopped the answer), `error`, `session` events
//!   ([`ServerEvent`]).
//!
//! Parsing is strict about what matters (types, sizes, ids) and lenient about unknown extra fields, so an
//! older Lambda keeps serving a newer client.

use serde::Serialize;
use serde_json::Value;

use crate::error::{ErrorCode, FrameError};
use crate::ids::{Asin, MessageId};
use crate::intent::Intent;

mod frame;
mod page;

pub use frame::{MessageFields, message_fields, read_object};
pub use page::{MAX_PAGE_LIST, MAX_SECTION_CHARS, PageContext, PageField, Section};

/// The longest raw `text` read at all, in bytes of UTF-8: a cheap bound checked before anything else
/// (the token limit below is the one a shopper meets).
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// The message limit, in tokens of the normalized text (cl100k; see [`crate::tokenizer::count_at_most`]),
/// checked at the parse before any work. About 250 Japanese or 1,000 English characters: three times a
/// typical two-to-three-sentence question (72-89 tokens in Japanese, 32-48 in English; README, Limits).
/// The prompt reserves `BUDGET_USER_MESSAGE_TOKENS` for the message; a longer one takes the difference
/// from the retrieved context, so the prompt's total holds ([`crate::prompt::compress`]).
pub const MAX_MESSAGE_TOKENS: usize = 300;
/// The largest `page_context` accepted, serialized.
pub const MAX_PAGE_CONTEXT_BYTES: usize = 4 * 1024;
/// API Gateway WebSocket frames are limited to 32 KB; every frame we post stays under this.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;

/// The action names a client may send.
pub const ACTION_SEND_MESSAGE: &str = "sendMessage";
/// Asks for the connection's session id (answered with a `session` event).
pub const ACTION_SESSION: &str = "session";
/// What the shopper has typed so far (debounced by the client): lets the server assemble the context
/// before the message is sent. Never answered.
pub const ACTION_TYPING: &str = "typing";
/// The largest `typing` frame read at all: the text and page-context limits plus the JSON around them.
/// A larger one is dropped unparsed (and counted).
pub const MAX_TYPING_FRAME_BYTES: usize = MAX_TEXT_BYTES + MAX_PAGE_CONTEXT_BYTES + 512;

/// The action a frame names, when it is a JSON object (without duplicate keys: [`read_object`], the
/// reader every parser uses) with a string `action`. Routing only; the frame is validated by the action's
/// parser, which refuses whatever this cannot read.
pub fn action_of(frame: &str) -> Option<String> {
    match read_object(frame).ok()?.remove("action")? {
        Value::String(a) => Some(a),
        _ => None,
    }
}

/// A validated client message.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientMessage {
    pub message_id: MessageId,
    /// Normalized and masked ([`crate::safety::shopper_text`]), within [`MAX_MESSAGE_TOKENS`], not empty.
    pub text: String,
    /// What the shopper is looking at (current ASIN, store section, cart, ...), validated.
    pub page_context: PageContext,
}

/// A rejected frame, with the message id when one could be read (so the client can match the error).
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    pub message_id: Option<String>,
    pub error: FrameError,
}

impl ClientMessage {
    /// Parses one WebSocket text frame.
    pub fn parse(frame: &str) -> Result<Self, Rejected> {
        let reject = |message_id: Option<String>, error| Rejected { message_id, error };
        let mut obj = read_object(frame).map_err(|e| reject(None, e))?;
        // Echo the id back on errors only if it is well-formed: never reflect arbitrary input.
        let raw_id = obj.get("message_id").and_then(Value::as_str).map(str::to_owned);
        let echo_id = raw_id.as_deref().and_then(|s| MessageId::parse(s).ok()).map(|m| m.to_string());

        match obj.get("action") {
            Some(Value::String(a)) if a == ACTION_SEND_MESSAGE => {}
            Some(Value::String(a)) => {
                let shown: String = a.chars().take(40).collect();
                return Err(reject(echo_id, FrameError::UnknownAction(shown)));
            }
            Some(_) => return Err(reject(echo_id, FrameError::UnknownAction("<not a string>".to_owned()))),
            None => return Err(reject(echo_id, FrameError::MissingField("action"))),
        }

        let Some(raw_id) = raw_id else {
            return Err(reject(None, FrameError::MissingField("message_id")));
        };
        let message_id = MessageId::parse(raw_id)
            .map_err(|e| reject(None, FrameError::InvalidField { field: "message_id", reason: e.reason.to_owned() }))?;
        let echo = Some(message_id.to_string());

        let MessageFields { text, page_context } = message_fields(&mut obj).map_err(|e| reject(echo.clone(), e))?;
        if text.is_empty() {
            return Err(reject(echo, FrameError::InvalidField { field: "text", reason: "is empty".into() }));
        }
        Ok(Self { message_id, text, page_context })
    }
}

/// A validated `typing` frame: the partial text and the page it is typed on.
#[derive(Debug, Clone, PartialEq)]
pub struct TypingFrame {
    /// Normalized, masked and trimmed, as a sent message's; may be empty (the shopper cleared the box).
    pub text: String,
    pub page_context: PageContext,
}

impl TypingFrame {
    /// Parses one `typing` frame with the limits of `sendMessage` (and a bound on the raw frame before
    /// any parsing). A typing frame is never answered, so the error is only counted.
    pub fn parse(frame: &str) -> Result<Self, FrameError> {
        if frame.len() > MAX_TYPING_FRAME_BYTES {
            return Err(FrameError::MessageTooLong { len: frame.len(), limit: MAX_TYPING_FRAME_BYTES });
        }
        let mut obj = read_object(frame)?;
        if obj.get("action").and_then(Value::as_str) != Some(ACTION_TYPING) {
            return Err(FrameError::UnknownAction("<not typing>".to_owned()));
        }
        let MessageFields { text, page_context } = message_fields(&mut obj)?;
        Ok(Self { text, page_context })
    }
}

/// A product the answer mentions, sent in `completed` so the page can render cards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductRef {
    pub asin: Asin,
}

/// Which capacity answered a turn: on-demand (a model id or inference profile) or provisioned throughput.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum Route {
    #[default]
    #[serde(rename = "on-demand")]
    OnDemand,
    #[serde(rename = "provisioned")]
    Provisioned,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand",
            Self::Provisioned => "provisioned",
        }
    }
}

impl std::fmt::Display for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a turn's answer came from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Served {
    /// The model answered.
    #[default]
    Model,
    /// A pre-generated answer, with no model call.
    Pregen,
    /// A pre-generated answer's first sentence, continued by the model.
    PregenOpening,
    /// The model's answer to the text as typed, started before the message was sent.
    TypedAhead,
}

/// A leg of context assembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Leg {
    /// Conversation memory (recent turns and the summary, from the store).
    Memory,
    /// Retrieved passages.
    Retrieval,
    /// The prefetched cache.
    Cache,
    /// The product services.
    Services,
}

impl Leg {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Retrieval => "retrieval",
            Self::Cache => "cache",
            Self::Services => "services",
        }
    }
}

impl PartialEq<&str> for Leg {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Per-leg timings of context assembly, ms (0 for a leg that did not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LegTimings {
    pub memory_ms: f64,
    pub retrieval_ms: f64,
    pub cache_ms: f64,
    pub services_ms: f64,
}

/// Timings and sizes of one turn, sent in `completed` and logged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TurnMetrics {
    /// Turn start (event received) -> first delta accepted by API Gateway.
    pub first_token_ms: f64,
    /// Model request sent -> first text delta received: the model's (and network's) share.
    pub model_first_token_ms: f64,
    /// Turn start -> last delta accepted.
    pub total_ms: f64,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Input tokens read from Bedrock's prompt cache, and written to it.
    pub cache_read_tokens: u32,
    pub cache_write_tokens: u32,
    /// The performance tier that served the request as Bedrock reported it (`standard` / `optimized`).
    pub performance: Option<String>,
    /// The service tier that served it (`priority`, `default`, ...), when Bedrock said.
    pub service_tier: Option<String>,
    /// The answer cap this intent's route allowed.
    pub max_tokens: u32,
    /// Delta frames posted (fewer than output tokens when coalescing works).
    pub frames: u32,
    /// Our count of the prompt as sent (cl100k estimate).
    pub prompt_tokens: u32,
    /// Our count of the same prompt uncompressed.
    pub raw_tokens: u32,
    /// `prompt_tokens / raw_tokens`.
    pub compression_ratio: f64,
    pub intent: Intent,
    /// The model that answered, as a client may be told it: the intent's model id (or the fallback's, or the
    /// pre-generating model's), never a provisioned-throughput ARN with its account id
    /// ([`crate::models::ModelId::client_name_of`]; serialized through it again, so no ARN can reach a client).
    #[serde(serialize_with = "client_safe_model")]
    pub model: String,
    /// The exact model id or provisioned-throughput ARN the request went to: logs and the stored record
    /// only, never sent.
    #[serde(skip)]
    pub served_by: String,
    pub route: Route,
    /// Context assembly, turn start to everything gathered.
    pub assembly_ms: f64,
    /// Building the request after assembly: compression to the budget and the prompt.
    pub compress_ms: f64,
    /// First text delta from the model -> its frame accepted by API Gateway (the relay's share).
    pub relay_ms: f64,
    pub legs: LegTimings,
    /// Legs that failed or were cut at their deadline (`leg: why`).
    pub context_errors: Vec<String>,
    /// Lookups served from the cache (filled by speculative prefetch), e.g. `product:B0...`.
    pub cache_hits: Vec<String>,
    /// Lookups made (cache hits + service calls).
    pub cache_lookups: u32,
    /// Attempts that failed before the first token and were retried on the next route.
    pub failovers: u32,
    /// The model, a pre-generated answer, or a pre-generated opening continued by the model.
    pub served: Served,
    /// ASINs the answer named that were not in this turn's context (no card was made for them).
    pub unknown_asins: u32,
    /// Context legs served by a typing-time speculation (`retrieval`, `services`) instead of run at send.
    pub speculated_legs: Vec<Leg>,
    /// Of a typed-ahead answer: how much of the model's first-token time had passed when the message was
    /// sent (the part the shopper did not wait for), ms; 0 otherwise.
    pub ahead_ms: f64,
    /// The first token was late and a second stream was started on the next route (hedging).
    pub hedge_started: bool,
    /// That second stream answered (first, or after the first attempt failed).
    pub hedged: bool,
    /// Model tokens spent for nothing by the hedge race: the prompt's estimate (`prompt_tokens`) when a
    /// stream was dropped while still running (its input was sent; it had produced no text), else 0.
    pub hedge_extra_tokens: u32,
    /// The process's CPU time spent by this invocation up to this event, µs (0: not measured). On Lambda one
    /// invocation runs per process at a time, so it is the invocation's own CPU; where invocations share a
    /// process (the local system), it includes whatever else ran meanwhile.
    pub cpu_us: u64,
}

/// `model` as a client may see it, whatever was put in it (defense in depth: an ARN never leaves).
fn client_safe_model<S: serde::Serializer>(model: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::models::ModelId::client_name_of(model, ""))
}

/// Server -> client events.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent<'a> {
    Delta {
        message_id: &'a str,
        seq: u32,
        text: &'a str,
    },
    Completed {
        message_id: &'a str,
        seq: u32,
        products: &'a [ProductRef],
        metrics: &'a TurnMetrics,
    },
    Error {
        message_id: Option<&'a str>,
        code: ErrorCode,
        message: &'a str,
        retryable: bool,
        /// When to try again (`rate_limited`).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// The guardrail stopped the answer: the text shown for this message so far is to be replaced by
    /// `message`. Ends the message (no `completed` follows); `seq` follows the last delta's.
    Retract {
        message_id: &'a str,
        seq: u32,
        message: &'a str,
    },
    /// The connection's session (answer to a `session` frame): the id to pass back as `session_id` on a
    /// later `$connect` to resume the conversation.
    Session {
        session_id: &'a str,
    },
}

impl ServerEvent<'_> {
    /// The frame bytes. Serializing these types cannot fail (no maps with non-string keys, no floats
    /// that are not finite: metrics are finite by construction), but a failure still yields valid JSON.
    pub fn to_frame(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| br#"{"type":"error","code":"internal"}"#.to_vec())
    }
}

/// Bytes `s` takes inside a JSON string literal (as `serde_json` writes it: non-ASCII stays UTF-8).
pub fn json_escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{08}' | '\u{0c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// The longest prefix of `text` (ending on a char boundary) whose JSON-escaped form fits in `budget` bytes.
/// Returns the prefix's length in bytes.
pub fn prefix_fitting(text: &str, budget: usize) -> usize {
    let mut used = 0;
    for (i, c) in text.char_indices() {
        used += json_escaped_len(c);
        if used > budget {
            return i;
        }
    }
    text.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(frame: &str) -> ErrorCode {
        ClientMessage::parse(frame).unwrap_err().error.code()
    }

    #[test]
    fn a_well_formed_send_message_parses() {
        let m = ClientMessage::parse(
            r#"{"action":"sendMessage","message_id":"m-1","text":"  おすすめは? ","page_context":{"current_asin":"B0TEST0001"}}"#,
        )
        .unwrap();
        assert_eq!(m.message_id.as_str(), "m-1");
        assert_eq!(m.text, "おすすめは?");
        assert_eq!(m.page_context.current_asin.as_ref().map(Asin::as_str), Some("B0TEST0001"));
    }

    #[test]
    fn each_bad_frame_gets_its_own_code() {
        assert_eq!(code("not json"), "bad_frame");
        assert_eq!(code("[1,2]"), "bad_frame");
        assert_eq!(code(r#"{"action":"dance","message_id":"m"}"#), "unknown_action");
        assert_eq!(code(r#"{"message_id":"m","text":"hi"}"#), "missing_field");
        assert_eq!(code(r#"{"action":"sendMessage","text":"hi"}"#), "missing_field");
        assert_eq!(code(r#"{"action":"sendMessage","message_id":"m"}"#), "missing_field");
        assert_eq!(code(r#"{"action":"sendMessage","message_id":"m","text":7}"#), "invalid_field");
        assert_eq!(code(r#"{"action":"sendMessage","message_id":"m","text":"   "}"#), "invalid_field");
        assert_eq!(code(r#"{"action":"sendMessage","message_id":"a b","text":"hi"}"#), "invalid_field");
        assert_eq!(code(r#"{"action":"sendMessage","message_id":"m","text":"hi","page_context":3}"#), "invalid_field");
    }

    #[test]
    fn an_oversized_text_is_rejected_with_its_message_id() {
        let frame = format!(r#"{{"action":"sendMessage","message_id":"m-9","text":"{}"}}"#, "a".repeat(200_000));
        let r = ClientMessage::parse(&frame).unwrap_err();
        assert_eq!(r.error.code(), "message_too_long");
        assert_eq!(r.message_id.as_deref(), Some("m-9"));
    }

    #[test]
    fn a_typing_frame_parses_with_the_limits_of_a_message() {
        let t = TypingFrame::parse(
            r#"{"action":"typing","text":" horror ma ","page_context":{"current_asin":"B0TEST0001"}}"#,
        )
        .unwrap();
        assert_eq!(t.text, "horror ma");
        assert_eq!(t.page_context.current_asin.as_ref().map(Asin::as_str), Some("B0TEST0001"));
        assert_eq!(TypingFrame::parse(r#"{"action":"typing","text":""}"#).unwrap().text, "");
        let code = |f: &str| TypingFrame::parse(f).unwrap_err().code();
        assert_eq!(code("nope"), "bad_frame");
        assert_eq!(code(r#"{"action":"typing"}"#), "missing_field");
        assert_eq!(code(r#"{"action":"typing","text":3}"#), "invalid_field");
        assert_eq!(code(r#"{"action":"sendMessage","text":"hi"}"#), "unknown_action");
        let long = format!(r#"{{"action":"typing","text":"{}"}}"#, "a".repeat(MAX_TEXT_BYTES + 1));
        assert_eq!(code(&long), "message_too_long");
        let huge = format!(r#"{{"action":"typing","text":"{}"}}"#, "a".repeat(MAX_TYPING_FRAME_BYTES));
        assert_eq!(code(&huge), "message_too_long", "refused before parsing");
    }

    #[test]
    fn a_frame_with_a_duplicate_key_is_neither_routed_nor_processed() {
        for frame in [
            r#"{"action":"typing","action":"sendMessage","message_id":"m-1","text":"hi"}"#,
            r#"{"action":"sendMessage","message_id":"m-1","text":"hi","text":"raw scans"}"#,
            r#"{"action":"sendMessage","message_id":"m-1","text":"hi","page_context":{"current_asin":"B0UZUMAKI1","current_asin":"B0FAKE0001"}}"#,
            r#"{"action":"sendMessage","message_id":"m-1","text":"hi","page_context":{"x":[{"a":1,"a":2}]}}"#,
        ] {
            assert_eq!(action_of(frame), None, "the router reads no action from {frame}");
            assert_eq!(code(frame), "bad_frame", "{frame}");
            let typing = frame.replacen(r#""action":"sendMessage""#, r#""action":"typing""#, 1);
            assert_eq!(TypingFrame::parse(&typing).unwrap_err().code(), "bad_frame", "{typing}");
        }
        assert_eq!(action_of(r#"{"action":"typing","text":"a"}"#).as_deref(), Some("typing"));
        assert_eq!(action_of(r#"{"action":"typing"} trailing"#), None);
    }

    #[test]
    fn the_message_limit_is_tokens_checked_at_the_parse() {
        let frame =
            |text: &str| serde_json::json!({"action": "sendMessage", "message_id": "m-1", "text": text}).to_string();
        // Three sentences in Japanese, three times over: about 250 tokens, admitted.
        let ja = "ホラー漫画が好きで、伊藤潤二の『うずまき』はもう読みました。同じくらい怖くて、できれば10巻以内で完結している作品はありますか？電子書籍ではなく紙の本で探しています。";
        assert!(ClientMessage::parse(&frame(&ja.repeat(3))).is_ok());
        let r = ClientMessage::parse(&frame(&ja.repeat(4))).unwrap_err();
        assert_eq!((r.error.code().as_str(), r.message_id.as_deref()), ("message_too_long", Some("m-1")));
        let en = "I loved Uzumaki and I'm looking for something equally unsettling, ideally a completed series. ";
        assert!(ClientMessage::parse(&frame(&en.repeat(10))).is_ok());
        assert_eq!(code(&frame(&en.repeat(20))), "message_too_long");
        let typing = serde_json::json!({"action": "typing", "text": ja.repeat(4)}).to_string();
        assert_eq!(TypingFrame::parse(&typing).unwrap_err().code(), "message_too_long");
    }

    #[test]
    fn the_parsed_text_is_normalized_and_masked() {
        let m = ClientMessage::parse(
            r#"{"action":"sendMessage","message_id":"m-1","text":" ｒａｗ\u200b scаns? card 4111 1111 1111 1111, tel 090-1234-5678 "}"#,
        )
        .unwrap();
        assert_eq!(m.text, "raw scans? card {CREDIT_DEBIT_CARD_NUMBER}, tel {PHONE}");
        let t = TypingFrame::parse(r#"{"action":"typing","text":"call 090-1234-5678"}"#).unwrap();
        assert_eq!(t.text, "call {PHONE}");
        assert_eq!(code(r#"{"action":"sendMessage","message_id":"m","text":"\u200b\u2060"}"#), "invalid_field");
    }

    #[test]
    fn a_completed_event_never_carries_the_model_arn() {
        let arn = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc123";
        let metrics = TurnMetrics { model: arn.into(), served_by: arn.into(), ..TurnMetrics::default() };
        let f = ServerEvent::Completed { message_id: "m", seq: 1, products: &[], metrics: &metrics }.to_frame();
        let text = String::from_utf8(f).unwrap();
        assert!(!text.contains("arn:") && !text.contains("123456789012"), "{text}");
    }

    #[test]
    fn prefix_fitting_never_splits_a_character() {
        let text = "進撃の巨人";
        let n = prefix_fitting(text, 7);
        assert_eq!(&text[..n], "進撃");
        assert_eq!(prefix_fitting("a\"b", 2), 1);
        assert_eq!(prefix_fitting("abc", 10), 3);
    }

    #[test]
    fn delta_frames_have_the_documented_shape() {
        let f = ServerEvent::Delta { message_id: "m", seq: 3, text: "hi" }.to_frame();
        let v: Value = serde_json::from_slice(&f).unwrap();
        assert_eq!(v, serde_json::json!({"type":"delta","message_id":"m","seq":3,"text":"hi"}));
    }
}
