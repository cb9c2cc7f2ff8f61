//! Intent classification and entity extraction, in English and Japanese, in a few microseconds.
//!
//! Keyword scoring, not a model: the intents decide which page-context fields and which optional system
//! instructions reach the prompt (and, later, which context sources are queried), so a wrong guess costs a
//! little relevance, never correctness. Ordinals ("the first one", "2つ目", "最後の") are resolved against
//! the products of the previous answer.

use serde::{Deserialize, Serialize};

use crate::ids::Asin;

/// What the shopper wants. `General` is the fallback. Serialized as its name (`product_question`, ...).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    ProductQuestion,
    Recommendation,
    ProductDiscovery,
    OrderTracking,
    ReturnRequest,
    Faq,
    Promotion,
    CheckoutHelp,
    #[default]
    General,
}

impl Intent {
    pub const ALL: [Intent; 9] = [
        Self::ProductQuestion,
        Self::Recommendation,
        Self::ProductDiscovery,
        Self::OrderTracking,
        Self::ReturnRequest,
        Self::Faq,
        Self::Promotion,
        Self::CheckoutHelp,
        Self::General,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProductQuestion => "product_question",
            Self::Recommendation => "recommendation",
            Self::ProductDiscovery => "product_discovery",
            Self::OrderTracking => "order_tracking",
            Self::ReturnRequest => "return_request",
            Self::Faq => "faq",
            Self::Promotion => "promotion",
            Self::CheckoutHelp => "checkout_help",
            Self::General => "general",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

impl std::fmt::Display for Intent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `text` is Japanese: it has kana or kanji (answers follow the shopper's language).
pub fn is_japanese(text: &str) -> bool {
    text.chars().any(|c| matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF))
}

/// Keywords per intent with weights; English ones are matched on the lower-cased text.
const RULES: &[(Intent, &[(&str, u8)])] = &[
    (
        Intent::OrderTracking,
        &[
            ("where is my order", 4),
            ("track", 3),
            ("order status", 4),
            ("my order", 3),
            ("shipped", 2),
            ("delivery status", 3),
            ("hasn't arrived", 3),
            ("not arrived", 3),
            ("注文", 3),
            ("配送状況", 4),
            ("届かない", 4),
            ("いつ届", 4),
            ("追跡", 4),
            ("発送", 2),
        ],
    ),
    (
        Intent::ReturnRequest,
        &[
            ("return", 3),
            ("refund", 4),
            ("damaged", 3),
            ("exchange", 3),
            ("broken", 2),
            ("wrong item", 3),
            ("返品", 4),
            ("返金", 4),
            ("交換", 3),
            ("破損", 3),
            ("不良", 3),
        ],
    ),
    (
        Intent::CheckoutHelp,
        &[
            ("cart", 3),
            ("checkout", 4),
            ("payment", 3),
            ("pay with", 3),
            ("credit card", 3),
            ("add to", 2),
            ("カート", 4),
            ("決済", 4),
            ("支払", 4),
            ("購入手続", 4),
            ("レジ", 3),
        ],
    ),
    (
        Intent::Promotion,
        &[
            ("sale", 3),
            ("discount", 4),
            ("deal", 2),
            ("promotion", 4),
            ("coupon", 4),
            ("% off", 4),
            ("campaign", 3),
            ("セール", 4),
            ("割引", 4),
            ("キャンペーン", 4),
            ("クーポン", 4),
            ("ポイント", 2),
        ],
    ),
    (
        Intent::Faq,
        &[
            ("how do i", 2),
            ("policy", 3),
            ("shipping cost", 4),
            ("shipping fee", 4),
            ("how long does", 2),
            ("account", 2),
            ("membership", 3),
            ("gift wrap", 3),
            ("送料", 4),
            ("会員", 3),
            ("ポリシー", 3),
            ("方法", 2),
            ("ギフト", 2),
        ],
    ),
    (
        Intent::Recommendation,
        &[
            ("recommend", 4),
            ("suggest", 3),
            ("something like", 4),
            ("similar to", 4),
            ("should i read", 4),
            ("like ", 1),
            ("best", 1),
            ("おすすめ", 4),
            ("オススメ", 4),
            ("似た", 3),
            ("ような", 1),
            ("みたいな", 2),
        ],
    ),
    (
        Intent::ProductDiscovery,
        &[
            ("show me", 3),
            ("looking for", 3),
            ("find", 2),
            ("any ", 1),
            ("new release", 3),
            ("genre", 2),
            ("manga about", 3),
            ("search", 2),
            ("探して", 3),
            ("ありますか", 1),
            ("新刊", 3),
            ("ジャンル", 2),
            ("漫画", 1),
        ],
    ),
    (
        Intent::ProductQuestion,
        &[
            ("tell me more", 4),
            ("more about", 3),
            ("how many volumes", 4),
            ("in stock", 3),
            ("price", 3),
            ("volume", 1),
            ("review", 2),
            ("is it", 1),
            ("release date", 3),
            ("について", 2),
            ("詳しく", 3),
            ("在庫", 3),
            ("何巻", 4),
            ("値段", 3),
            ("価格", 3),
            ("レビュー", 2),
            ("発売", 2),
            ("最新刊", 3),
        ],
    ),
];

/// Classifies `text`. Ties go to the intent listed first in [`RULES`] (the more specific ones).
pub fn classify(text: &str, entities: &Entities) -> Intent {
    let lower = text.to_lowercase();
    let mut best = (Intent::General, 0u32);
    for (intent, words) in RULES {
        let mut score: u32 = words.iter().filter(|(w, _)| lower.contains(w)).map(|(_, s)| u32::from(*s)).sum();
        if *intent == Intent::ProductQuestion && (entities.ordinal.is_some() || !entities.asins.is_empty()) {
            score += 2;
        }
        if *intent == Intent::OrderTracking && !entities.order_ids.is_empty() {
            score += 4;
        }
        if score > best.1 {
            best = (*intent, score);
        }
    }
    best.0
}

/// A reference by position to the previous answer's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordinal {
    /// 1-based.
    Nth(usize),
    Last,
}

/// What a message names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entities {
    /// ASINs written in the message.
    pub asins: Vec<Asin>,
    /// Amazon-style order ids (`123-1234567-1234567`).
    pub order_ids: Vec<String>,
    pub ordinal: Option<Ordinal>,
    /// The product the ordinal points at in the previous answer, when it exists.
    pub resolved: Option<Asin>,
}

const EN_ORDINALS: &[(&str, usize)] = &[
    ("first", 1),
    ("1st", 1),
    ("second", 2),
    ("2nd", 2),
    ("third", 3),
    ("3rd", 3),
    ("fourth", 4),
    ("4th", 4),
    ("fifth", 5),
    ("5th", 5),
];

const JA_NUMERALS: &[(&str, usize)] = &[
    ("1", 1),
    ("１", 1),
    ("一", 1),
    ("ひと", 1),
    ("2", 2),
    ("２", 2),
    ("二", 2),
    ("ふた", 2),
    ("3", 3),
    ("３", 3),
    ("三", 3),
    ("みっ", 3),
    ("4", 4),
    ("４", 4),
    ("四", 4),
    ("よっ", 4),
    ("5", 5),
    ("５", 5),
    ("五", 5),
    ("いつ", 5),
];

fn japanese_ordinal(text: &str) -> Option<Ordinal> {
    if text.contains("最初") {
        return Some(Ordinal::Nth(1));
    }
    if text.contains("最後") {
        return Some(Ordinal::Last);
    }
    for suffix in ["つ目", "番目", "冊目", "個目"] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(suffix) {
            let before = &text[..from + pos];
            if let Some((_, n)) = JA_NUMERALS.iter().find(|(num, _)| before.ends_with(num)) {
                return Some(Ordinal::Nth(*n));
            }
            from += pos + suffix.len();
        }
    }
    None
}

fn english_ordinal(lower: &str) -> Option<Ordinal> {
    let words: Vec<&str> =
        lower.split(|c: char| !c.is_ascii_alphanumeric() && c != '#').filter(|w| !w.is_empty()).collect();
    for (i, w) in words.iter().enumerate() {
        if let Some((_, n)) = EN_ORDINALS.iter().find(|(o, _)| o == w) {
            // "first" in "first volume" is about volumes, not the list; "the first one/title/manga" is.
            let next = words.get(i + 1).copied().unwrap_or("");
            if matches!(next, "volume" | "vol" | "time" | "edition") {
                continue;
            }
            return Some(Ordinal::Nth(*n));
        }
        if *w == "last" && matches!(words.get(i + 1).copied(), Some("one" | "title" | "manga" | "series" | "book")) {
            return Some(Ordinal::Last);
        }
        if let Some(n) = w.strip_prefix('#').and_then(|d| d.parse::<usize>().ok()).filter(|n| (1..=9).contains(n)) {
            return Some(Ordinal::Nth(n));
        }
        if *w == "number"
            && let Some(n) = words.get(i + 1).and_then(|d| d.parse::<usize>().ok()).filter(|n| (1..=9).contains(n))
        {
            return Some(Ordinal::Nth(n));
        }
    }
    None
}

fn is_order_id(w: &str) -> bool {
    let parts: Vec<&str> = w.split('-').collect();
    parts.len() == 3
        && [3, 7, 7].iter().zip(&parts).all(|(len, p)| p.len() == *len && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Extracts entities from `text`, resolving ordinals against `previous` (the last answer's products).
pub fn extract(text: &str, previous: &[Asin]) -> Entities {
    let mut e = Entities::default();
    for w in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
        if let Ok(a) = Asin::parse(w) {
            if !e.asins.contains(&a) {
                e.asins.push(a);
            }
        } else if is_order_id(w) && !e.order_ids.iter().any(|o| o == w) {
            e.order_ids.push(w.to_owned());
        }
    }
    let lower = text.to_lowercase();
    e.ordinal = japanese_ordinal(text).or_else(|| english_ordinal(&lower));
    e.resolve(previous);
    e
}

impl Entities {
    /// Points the ordinal at a product of `previous` (the last answer's products), once memory has them.
    pub fn resolve(&mut self, previous: &[Asin]) {
        self.resolved = match self.ordinal {
            Some(Ordinal::Nth(n)) => previous.get(n - 1).cloned(),
            Some(Ordinal::Last) => previous.last().cloned(),
            None => None,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(text: &str) -> Intent {
        classify(text, &extract(text, &[]))
    }

    #[test]
    fn each_intent_is_recognised_in_english_and_japanese() {
        let cases = [
            ("Where is my order 112-1234567-1234567?", Intent::OrderTracking),
            ("注文した本がまだ届かない", Intent::OrderTracking),
            ("I want a refund, the cover was damaged", Intent::ReturnRequest),
            ("返品できますか?", Intent::ReturnRequest),
            ("My cart won't let me checkout", Intent::CheckoutHelp),
            ("カートに入れた商品の支払い方法は?", Intent::CheckoutHelp),
            ("Any coupon or discount this week?", Intent::Promotion),
            ("今月のセールは?", Intent::Promotion),
            ("What is your shipping fee policy?", Intent::Faq),
            ("送料はいくらですか", Intent::Faq),
            ("Can you recommend something like Berserk?", Intent::Recommendation),
            ("おすすめのファンタジー漫画は?", Intent::Recommendation),
            ("Show me new releases in horror", Intent::ProductDiscovery),
            ("ホラーの新刊を探しています", Intent::ProductDiscovery),
            ("Tell me more about the first one", Intent::ProductQuestion),
            ("2つ目について詳しく教えて", Intent::ProductQuestion),
            ("How many volumes does B0BERSERK1 have?", Intent::ProductQuestion),
            ("hello!", Intent::General),
        ];
        for (text, want) in cases {
            assert_eq!(intent(text), want, "{text}");
        }
    }

    #[test]
    fn ordinals_resolve_against_the_previous_answer() {
        let prev: Vec<Asin> =
            ["B0AAAAAAA1", "B0BBBBBBB2", "B0CCCCCCC3"].iter().map(|a| Asin::parse(*a).unwrap()).collect();
        let cases = [
            ("tell me more about the first one", Some(Ordinal::Nth(1)), Some("B0AAAAAAA1")),
            ("what about the 2nd?", Some(Ordinal::Nth(2)), Some("B0BBBBBBB2")),
            ("and the third manga", Some(Ordinal::Nth(3)), Some("B0CCCCCCC3")),
            ("the last one please", Some(Ordinal::Last), Some("B0CCCCCCC3")),
            ("number 2 looks good", Some(Ordinal::Nth(2)), Some("B0BBBBBBB2")),
            ("2つ目について", Some(Ordinal::Nth(2)), Some("B0BBBBBBB2")),
            ("二番目のは?", Some(Ordinal::Nth(2)), Some("B0BBBBBBB2")),
            ("１つ目", Some(Ordinal::Nth(1)), Some("B0AAAAAAA1")),
            ("最初のやつ", Some(Ordinal::Nth(1)), Some("B0AAAAAAA1")),
            ("最後の作品", Some(Ordinal::Last), Some("B0CCCCCCC3")),
            ("the fifth one", Some(Ordinal::Nth(5)), None),
            ("is the first volume in stock?", None, None),
            ("no ordinal here", None, None),
        ];
        for (text, ord, asin) in cases {
            let e = extract(text, &prev);
            assert_eq!(e.ordinal, ord, "{text}");
            assert_eq!(e.resolved.as_ref().map(Asin::as_str), asin, "{text}");
        }
    }

    #[test]
    fn asins_and_order_ids_are_extracted() {
        let e = extract("Is B0BERSERK1 in order 112-1234567-1234567? (not 12-34)", &[]);
        assert_eq!(e.asins, ["B0BERSERK1"]);
        assert_eq!(e.order_ids, ["112-1234567-1234567"]);
    }

    #[test]
    fn intents_round_trip_through_their_names() {
        for i in Intent::ALL {
            assert_eq!(Intent::parse(i.as_str()), Some(i));
            assert_eq!(serde_json::to_string(&i).unwrap(), format!("\"{i}\""));
        }
    }
}
