//! Intent classification and entity extraction, in English and Japanese, in a few microseconds.
//!
//! Keyword scoring, not a model: the intents decide which page-context fields and which optional system
//! instructions reach the prompt (and, later, which context sources are queried), so a wrong guess costs a
//! little relevance, never correctness. Ordinals ("the first one", "2つ目", "最後の") and titles ("tell me
//! more about Paper Diary") are resolved against the products of the previous answer ([`refs`]).

use serde::{Deserialize, Serialize};

use crate::ids::Asin;

mod refs;

pub use refs::{Listed, Ordinal, OrdinalAt, TitleMention, fold, listed_from_answer, ordinals, title_mentions};
pub(crate) use refs::{REF_NOUNS, blank, near, words};

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

/// What a message names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entities {
    /// ASINs written in the message.
    pub asins: Vec<Asin>,
    /// Amazon-style order ids (`123-1234567-1234567`).
    pub order_ids: Vec<String>,
    pub ordinal: Option<Ordinal>,
    /// Titles of the last answer's list the message names ([`Entities::resolve_listed`]; empty until then).
    pub titles: Vec<TitleMention>,
    /// The product the ordinal (or title) points at in the previous answer, when it exists.
    pub resolved: Option<Asin>,
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
    e.ordinal = ordinals(&fold(text)).first().map(|o| o.ordinal);
    e.resolve(previous);
    e
}

impl Entities {
    /// Points the ordinal at a product of `previous` (the last answer's products), once memory has them.
    pub fn resolve(&mut self, previous: &[Asin]) {
        self.resolved = self.ordinal.and_then(|o| o.index(previous.len())).map(|i| previous[i].clone());
    }

    /// [`Entities::resolve`] knowing the titles of the last answer's products too: a whole title named
    /// in `text` ("tell me more about Paper Diary") points at its product; an ordinal is then read from
    /// the rest of the message only (so "最後の日記", a title, is not "the last one"), and one that points
    /// elsewhere makes the reference ambiguous (nothing resolved). A distinctive part of a title ("the
    /// Diary one") counts only when there is no ordinal. Titles of several products resolve nothing.
    pub fn resolve_listed(&mut self, text: &str, listed: &[Listed]) {
        let folded = fold(text);
        self.titles = title_mentions(&folded, listed);
        let rest = blank(&folded, self.titles.iter().map(|m| m.span.clone()));
        self.ordinal = ordinals(&rest).first().map(|o| o.ordinal);
        let previous: Vec<Asin> = listed.iter().map(|l| l.asin.clone()).collect();
        self.resolve(&previous);
        let distinct = |whole: bool| {
            let mut v: Vec<&Asin> = Vec::new();
            for m in self.titles.iter().filter(|m| m.whole == whole) {
                if !v.contains(&&m.asin) {
                    v.push(&m.asin);
                }
            }
            v
        };
        let (whole, part) = (distinct(true), distinct(false));
        self.resolved = match (whole.as_slice(), part.as_slice(), &self.resolved) {
            ([one], _, Some(by_ordinal)) if *one != by_ordinal => None,
            ([one], _, _) => Some((*one).clone()),
            ([_, _, ..], _, _) => None,
            (_, _, Some(by_ordinal)) => Some(by_ordinal.clone()),
            (_, [one], None) if self.ordinal.is_none() => Some((*one).clone()),
            _ => None,
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
