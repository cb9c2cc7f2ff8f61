//! Speculative pre-generation: after an answer that lists products, the prefetch worker generates the
//! answer to the predicted follow-up "tell me more about <product>" for the top products, and the next turn
//! streams it at once when the shopper asks exactly that, with no model call.
//!
//! - [`PregenEntry`] is the cache entry (`pregen:{session}:{asin}`): the answer, the model and its usage,
//!   and a [`fingerprint`] of the facts it was generated from (the product record and its reviews).
//! - [`ask`] decides, from the classifier's output and the words of the message, whether a follow-up is a
//!   *generic* request for an overview of one product of the last answer (served from the entry) or a
//!   *specific* question about it (never served the overview). Unsure is specific.
//! - In `full+opening` mode a specific question about a product with an entry starts with the entry's first
//!   sentence (a neutral introduction of the product), and the model continues from it (assistant prefill,
//!   only for models that accept one).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ids::Asin;
use crate::intent::{Entities, Intent, is_japanese};

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

/// Words that ask for something particular about a product (English, lower case).
const SPECIFIC_EN: &[&str] = &[
    "price",
    "cost",
    "how much",
    "stock",
    "available",
    "availab",
    "scary",
    "funny",
    "sad",
    "violent",
    "gore",
    "romance",
    "volume",
    "how many",
    "how long",
    "ending",
    "finished",
    "complete",
    "compare",
    " vs",
    "versus",
    "better",
    "worse",
    "release",
    "when",
    "author",
    "who ",
    "age",
    "kids",
    "child",
    "similar",
    "like it",
    "english",
    "digital",
    "box set",
    "deliver",
    "ship",
    "order",
    "buy",
    "cart",
    "is it",
    "does it",
    "can i",
    "should i",
    "which",
    "why",
    "review",
    "rating",
    "anime",
    "sequel",
    "spoiler",
    "worth",
];
/// The same in Japanese.
const SPECIFIC_JA: &[&str] = &[
    "値段",
    "価格",
    "いくら",
    "在庫",
    "怖い",
    "こわい",
    "面白い",
    "泣け",
    "グロ",
    "何巻",
    "巻数",
    "比較",
    "比べ",
    "どっち",
    "どちら",
    "発売",
    "いつ発",
    "いつ出",
    "作者",
    "誰",
    "年齢",
    "子供",
    "似た",
    "全巻",
    "配送",
    "届",
    "購入",
    "カート",
    "完結",
    "最新刊",
    "英語",
    "電子",
    "レビュー",
    "評価",
    "アニメ",
    "続編",
    "ネタバレ",
    "おすすめ",
];
/// Words that ask for an overview.
const GENERIC_EN: &[&str] =
    &["tell me more", "more about", "tell me about", "details", "overview", "describe", "what's it about", "about?"];
const GENERIC_JA: &[&str] = &[
    "詳しく",
    "どんな作品",
    "どんな話",
    "どんな内容",
    "どんなマンガ",
    "どんな漫画",
    "について教えて",
    "紹介",
    "あらすじ",
    "教えて",
];

/// Decides what a follow-up asks (see [`Ask`]): a product question whose ordinal resolved to one product of
/// the last answer, generic when it has an overview phrase and no word asking for something particular.
pub fn ask(text: &str, intent: Intent, entities: &Entities) -> Ask {
    if intent != Intent::ProductQuestion || entities.ordinal.is_none() {
        return Ask::Other;
    }
    let Some(asin) = entities.resolved.clone() else { return Ask::Other };
    if entities.asins.iter().any(|a| *a != asin) {
        return Ask::Other;
    }
    let lower = text.to_lowercase();
    let specific = SPECIFIC_EN.iter().any(|w| lower.contains(w)) || SPECIFIC_JA.iter().any(|w| text.contains(w));
    let generic = GENERIC_EN.iter().any(|w| lower.contains(w))
        || GENERIC_JA.iter().any(|w| text.contains(w))
        || (lower.starts_with("what") && lower.trim_end_matches(['?', '!', '.', ' ']).ends_with(" about"));
    if generic && !specific { Ask::Overview(asin) } else { Ask::Specific(asin) }
}

/// Whether an entry may answer a message in this language.
pub fn same_language(entry: &PregenEntry, text: &str) -> bool {
    entry.japanese == is_japanese(text)
}

#[cfg(test)]
mod tests;
