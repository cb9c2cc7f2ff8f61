//! Reading a client frame: one strict JSON reader for the router and every parser, and one validator of
//! the fields `sendMessage` and `typing` share.
//!
//! - [`read_object`] parses the frame as a JSON object and refuses a duplicate key at any depth (`bad_frame`).
//!   `serde_json` keeps the last of two equal keys silently, so a frame with two `action` keys could be
//!   routed on one and processed as the other; read here, it is neither. The check is free: the map insert
//!   that builds the object reports the key it replaced.
//! - [`message_fields`] validates `text` and `page_context`: types, the raw size, the text normalized and
//!   masked ([`crate::safety::shopper_text`]), and the message limit in tokens ([`MAX_MESSAGE_TOKENS`]),
//!   counted so that the compressor never finds an admitted message longer
//!   ([`crate::tokenizer::count_at_most`]).

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{MAX_MESSAGE_TOKENS, MAX_PAGE_CONTEXT_BYTES, MAX_TEXT_BYTES, PageContext};
use crate::error::FrameError;

/// Builds a `Value`, refusing duplicate keys in every object.
#[derive(Clone, Copy)]
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(v) = seq.next_element_seed(self)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            if let Some(_replaced) = out.insert(key, value) {
                // The key is not echoed: it is the sender's text.
                return Err(A::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(out))
    }
}

/// The frame as a JSON object with no duplicate key at any depth.
pub fn read_object(frame: &str) -> Result<Map<String, Value>, FrameError> {
    let mut de = serde_json::Deserializer::from_str(frame);
    let value = Strict.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match value {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(FrameError::BadFrame("expected an object".to_owned())),
        Err(e) => Err(FrameError::BadFrame(e.to_string())),
    }
}

/// What `sendMessage` and `typing` share, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageFields {
    /// Normalized, masked and trimmed ([`crate::safety::shopper_text`]); may be empty.
    pub text: String,
    /// Validated against the page schema ([`PageContext::parse`]).
    pub page_context: PageContext,
}

/// Takes `text` (required) and `page_context` (optional) out of a frame and validates them: the raw text
/// within [`MAX_TEXT_BYTES`], the normalized text within [`MAX_MESSAGE_TOKENS`], the page context within
/// [`MAX_PAGE_CONTEXT_BYTES`] and the page schema.
pub fn message_fields(obj: &mut Map<String, Value>) -> Result<MessageFields, FrameError> {
    let raw = match obj.remove("text") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(FrameError::InvalidField { field: "text", reason: "must be a string".into() }),
        None => return Err(FrameError::MissingField("text")),
    };
    if raw.len() > MAX_TEXT_BYTES {
        return Err(FrameError::MessageTooLong { len: raw.len(), limit: MAX_TEXT_BYTES });
    }
    let text = crate::safety::shopper_text(&raw);
    // What the compressor will count: the text as it goes into `<question>`.
    if crate::tokenizer::count_at_most(&crate::safety::inert(&text), MAX_MESSAGE_TOKENS).is_none() {
        return Err(FrameError::TooManyTokens { limit: MAX_MESSAGE_TOKENS });
    }
    let page_context = match obj.remove("page_context") {
        None | Some(Value::Null) => PageContext::default(),
        Some(Value::Object(m)) => {
            let size = serde_json::to_string(&m).map_or(usize::MAX, |s| s.len());
            if size > MAX_PAGE_CONTEXT_BYTES {
                let reason = format!("is {size} bytes; the limit is {MAX_PAGE_CONTEXT_BYTES}");
                return Err(FrameError::InvalidField { field: "page_context", reason });
            }
            PageContext::parse(m)?
        }
        Some(_) => {
            return Err(FrameError::InvalidField { field: "page_context", reason: "must be an object".into() });
        }
    };
    Ok(MessageFields { text, page_context })
}
