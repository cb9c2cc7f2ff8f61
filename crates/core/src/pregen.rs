//! Speculative pre-generation: after an answer that lists products, the prefetch worker generates the
//! answer to the predicted follow-up "tell me more about <product>" for the top products, and the next turn
//! streams it at once when the shopper asks exactly that, with no model call.
//!
//! - [`PregenEntry`] is the cache entry (`pregen:{session}:{asin}`): the answer, the model and its usage,
//!   and a [`fingerprint`] of the facts it was generated from (the product record and its reviews).
//! - [`ask_after`] decides whether a follow-up is a *generic* request for an overview of one product of the
//!   last answer (served from the entry) or a *specific* question about it (never served the overview),
//!   by what it asks beyond the product reference ([`reading`]). Unsure is specific.
//! - In `full+opening` mode a specific question about a product with an entry starts with the entry's first
//!   sentence (a neutral introduction of the product), and the model continues from it (assistant prefill,
//!   only for models that accept one).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::Asin;
use crate::intent::{Entities, Intent};

mod reading;

pub use reading::{Before, Cue, Reading, by_part_only, language, read};

/// What pre-generation does (`PREGEN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PregenMode {
    /// Context prefetch only.
    Off,
    /// Generic overview follow-ups are served from the entry.
    Full,
    /// And specific questions about the product start with the entry's first sentence.
    #[default]
    FullOpening,
}

impl PregenMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "off" => Some(Self::Off),
            "full" => Some(Self::Full),
            "full+opening" => Some(Self::FullOpening),
            _ => None,
        }
    }

    pub fn is_on(self) -> bool {
        self != Self::Off
    }
}

/// Settings of pre-generation, read by the prefetch function (generation) and the chat function (serving).
#[derive(Debug, Clone, PartialEq)]
pub struct PregenConfig {
    pub mode: PregenMode,
    /// Products of the last answer an answer is generated for (`PREGEN_MAX`).
    pub max: usize,
    /// How long an entry may be served (`PREGEN_TTL_SECS`).
    pub ttl: Duration,
    /// The model that generates (`PREGEN_MODEL_ID`; default: the chat's model for product questions).
    pub model_id: String,
    pub max_tokens: u32,
    /// Bound of the whole generation step (the Converse calls run side by side).
    pub timeout: Duration,
    /// The output guardrail each generated answer is assessed with (`GUARDRAIL_ID`); a stopped answer is
    /// not cached.
    pub guardrail: Option<crate::safety::GuardrailRef>,
}

impl Default for PregenConfig {
    fn default() -> Self {
        Self {
            mode: PregenMode::FullOpening,
            max: 3,
            ttl: Duration::from_secs(600),
            model_id: format!("jp.{}", crate::models::CLAUDE_HAIKU_4_5),
            max_tokens: 400,
            timeout: Duration::from_secs(8),
            guardrail: None,
        }
    }
}

/// A pre-generated answer, as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PregenEntry {
    pub text: String,
    /// [`fingerprint`] of the facts the answer was generated from.
    pub fingerprint: String,
    /// The model that generated it.
    pub model: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub created_at_ms: u64,
    /// Written in Japanese (served only to a question in the same language).
    pub japanese: bool,
    /// A turn has served it (it is not wasted).
    #[serde(default)]
    pub served: bool,
}

impl PregenEntry {
    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The neutral first sentence that opening mode streams before the model continues.
    pub fn opening(&self) -> Option<&str> {
        first_sentence(&self.text)
    }
}

/// FNV-1a over the facts, hex: a change of price, stock or any other field of the product record (or of its
/// reviews) makes a different fingerprint. Values are compared as their canonical JSON.
pub fn fingerprint(product: &Value, reviews: Option<&Value>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(product.to_string().as_bytes());
    eat(b"\0");
    eat(reviews.map(Value::to_string).unwrap_or_default().as_bytes());
    format!("{h:016x}")
}

/// The title of a product record in the shopper's language, as the product service spells it.
pub fn product_title(product: &Value, japanese: bool) -> Option<String> {
    let keys: &[&str] = if japanese { &["title_ja", "title", "title_en"] } else { &["title_en", "title", "title_ja"] };
    keys.iter().find_map(|k| product.get(*k).and_then(Value::as_str)).map(str::to_owned)
}

/// The question a pre-generated answer answers: "tell me more about <title>", in the shopper's language.
pub fn canonical_question(title: &str, japanese: bool) -> String {
    if japanese {
        format!("{title}について詳しく教えてください。")
    } else {
        format!("Tell me more about {title}.")
    }
}

/// The first sentence of `text` (through its `.`, `!`, `?` or `。`), without trailing white space; `None`
/// when the text has no sentence end.
pub fn first_sentence(text: &str) -> Option<&str> {
    let t = text.trim_start();
    let end = t.char_indices().find_map(|(i, c)| match c {
        '。' | '！' | '？' => Some(i + c.len_utf8()),
        '.' | '!' | '?' => {
            let next = t[i + 1..].chars().next();
            (next.is_none_or(char::is_whitespace)).then_some(i + 1)
        }
        _ => None,
    })?;
    Some(t[..end].trim_end())
}

/// What a follow-up asks of the product it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// A generic request for an overview: the pre-generated answer fits.
    Overview(Asin),
    /// A specific question about it: never served the overview.
    Specific(Asin),
    /// Not about one product of the last answer (or an intent pre-generation never serves).
    Other,
}

/// Decides what a follow-up asks (see [`Ask`]) when what came before it is not known: [`ask_after`]
/// with [`Before::Unknown`].
pub fn ask(text: &str, intent: Intent, entities: &Entities) -> Ask {
    ask_after(text, intent, entities, Before::Unknown)
}

/// Decides what a follow-up asks: about one product of the last answer (its ordinal or title resolved,
/// no other product named), an overview when [`reading::read`] finds nothing asked beyond the framing
/// (whatever the classifier made of it: a message of framing words only has no other intent), else a
/// specific question when the classifier calls it a product question and the product was named by more
/// than a part of its title. Everything else is [`Ask::Other`]. Unsure is specific.
pub fn ask_after(text: &str, intent: Intent, entities: &Entities, before: Before<'_>) -> Ask {
    let Some(asin) = entities.resolved.clone() else { return Ask::Other };
    if entities.asins.iter().any(|a| *a != asin) {
        return Ask::Other;
    }
    let reading = read(text, entities);
    if reading.several {
        return Ask::Other;
    }
    if reading.is_generic(before) && !just_given(before, &asin) {
        return Ask::Overview(asin);
    }
    if intent == Intent::ProductQuestion && !by_part_only(entities, &asin) { Ask::Specific(asin) } else { Ask::Other }
}

/// Whether the message before asked for the overview of this same product: asking for it again ("tell
/// me more about it", "詳しく") wants more than the overview already given, so the model answers.
fn just_given(before: Before<'_>, asin: &Asin) -> bool {
    let Before::FollowUp(prev, listed) = before else { return false };
    let mut e = Entities::default();
    e.resolve_listed(prev, listed);
    e.resolved.as_ref() == Some(asin) && read(prev, &e).is_generic(Before::List)
}

/// Whether an entry may answer a message in this language: the message's own words (its titles and
/// ASINs aside) are in the entry's language, or in neither ("#2?", a title alone), in which case the
/// conversation's language, the entry's, stands. A message in the other language is answered by the
/// model (see the README, "Speculative pre-generation": an entry per language would cost a `Converse`
/// call per list for a rare follow-up; a translation would cost a model call on the path).
pub fn same_language(entry: &PregenEntry, text: &str, entities: &Entities) -> bool {
    reading::language(text, entities).is_none_or(|japanese| japanese == entry.japanese)
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;
