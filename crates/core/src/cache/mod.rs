//! What the cache holds: one type per entry kind, with its key and TTL beside it. Speculative prefetch
//! writes these entries, the turn reads them (and writes back what it had to fetch), and both go through
//! [`Lookup`], so a key, a TTL or a top-k is defined once.
//!
//! | entry | key | TTL | value |
//! |---|---|---|---|
//! | product details | `product:{asin}` | 5 min | the product service's JSON |
//! | reviews | `review:{asin}` | 1 h | the review service's JSON |
//! | recommendations | `reco:{user}:{asin}` | 15 min | the recommendation service's JSON |
//! | promotions | `promo:{placement}` | 15 min | the promotion service's JSON |
//! | passages | `rag:{intent}:{asin}` | 15 min | [`RagEntry`]: the top [`RagEntry::TOP_K`] passages about the product |
//! | prefetch claim | `prefetch:{message_id}` | 1 h | `1`: a retried async prefetch of this message does nothing |
//! | pre-generated answer | `pregen:{session}:{asin}` | `PREGEN_TTL_SECS` (10 min) | [`crate::pregen::PregenEntry`] |

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

mod keys;

pub use keys::{CacheKey, CounterKey};

use crate::ids::{Asin, MessageId, UserId};
use crate::intent::Intent;

/// A retrieved passage (or a piece of service data shown to the model as one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub content: String,
    pub score: f32,
    /// Its token count, when known (counted once, at indexing or when cached, not on every turn).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<usize>,
}

/// The promotions placement the chat shows.
pub const PROMO_PLACEMENT: &str = "manga-home";

/// The claim that makes a retried prefetch of `message_id` a no-op (`SET NX`; its TTL outlives Lambda's
/// async retries, see `PrefetchConfig::claim_ttl`).
pub fn prefetch_claim(message_id: &MessageId) -> String {
    CacheKey::PrefetchClaim(message_id.clone()).render()
}

/// One cache entry, named by what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    Product(Asin),
    Review(Asin),
    Reco {
        user: UserId,
        asin: Asin,
    },
    Promo,
    /// The passages a turn of `intent` about `asin` retrieves (a follow-up such as "the first one", whose
    /// own words are useless to a text search): a [`RagEntry`].
    Rag {
        intent: Intent,
        asin: Asin,
    },
}

impl Lookup {
    /// One of each kind.
    pub fn examples() -> Vec<Self> {
        let (asin, user) = (Asin::example(), UserId::example());
        vec![
            Self::Product(asin.clone()),
            Self::Review(asin.clone()),
            Self::Reco { user, asin: asin.clone() },
            Self::Promo,
            Self::Rag { intent: Intent::ProductQuestion, asin },
        ]
    }

    pub fn key(&self) -> String {
        match self {
            Self::Product(a) => format!("product:{a}"),
            Self::Review(a) => format!("review:{a}"),
            Self::Reco { user, asin } => format!("reco:{user}:{asin}"),
            Self::Promo => format!("promo:{PROMO_PLACEMENT}"),
            Self::Rag { intent, asin } => format!("rag:{intent}:{asin}"),
        }
    }

    /// How long the entry stays cached (the design's table).
    pub fn ttl(&self) -> Duration {
        match self {
            Self::Product(_) => Duration::from_secs(300),
            Self::Review(_) => Duration::from_secs(3600),
            Self::Reco { .. } | Self::Promo => Duration::from_secs(900),
            Self::Rag { .. } => RagEntry::TTL,
        }
    }

    /// How strongly the compressor should prefer this over retrieved text.
    fn score(&self) -> f32 {
        match self {
            Self::Product(_) => 1.0,
            Self::Review(_) => 0.97,
            Self::Reco { .. } => 0.95,
            Self::Promo => 0.93,
            Self::Rag { .. } => 0.9,
        }
    }

    /// The passages a cached (or fetched) value stands for: a [`RagEntry`] its passages, service data one
    /// passage named by its key.
    pub fn passages(&self, value: &str) -> Vec<Passage> {
        if let Self::Rag { .. } = self {
            return RagEntry::decode(value).map(|e| e.0).unwrap_or_default();
        }
        vec![Passage { content: format!("{}: {value}", self.key()), score: self.score(), tokens: None }]
    }
}

/// The passages cached for a predicted follow-up about one product.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RagEntry(pub Vec<Passage>);

impl RagEntry {
    /// Passages retrieved (and cached) per entry: what a follow-up about one product needs.
    pub const TOP_K: usize = 3;
    pub const TTL: Duration = Duration::from_secs(900);

    /// The cached form, `None` when there is nothing worth caching.
    pub fn into_value(self) -> Option<Value> {
        if self.0.is_empty() {
            return None;
        }
        serde_json::to_value(self).ok()
    }

    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asin(s: &str) -> Asin {
        Asin::parse(s).unwrap()
    }

    #[test]
    fn keys_and_ttls_follow_the_designs_table() {
        let a = asin("B0AAAAAAA1");
        assert_eq!(Lookup::Product(a.clone()).key(), "product:B0AAAAAAA1");
        assert_eq!(Lookup::Review(a.clone()).ttl(), Duration::from_secs(3600));
        let reco = Lookup::Reco { user: UserId::anonymous(), asin: a.clone() };
        assert_eq!(reco.key(), "reco:anon:B0AAAAAAA1");
        assert_eq!(Lookup::Promo.key(), "promo:manga-home");
        assert_eq!(Lookup::Rag { intent: Intent::ProductQuestion, asin: a }.key(), "rag:product_question:B0AAAAAAA1");
    }

    #[test]
    fn a_rag_entry_round_trips_through_the_cache_with_its_counts() {
        let entry = RagEntry(vec![Passage { content: "Spiral horror.".into(), score: 0.8, tokens: Some(4) }]);
        let text = entry.clone().into_value().unwrap().to_string();
        let l = Lookup::Rag { intent: Intent::ProductQuestion, asin: asin("B0AAAAAAA1") };
        assert_eq!(l.passages(&text), entry.0);
        assert!(RagEntry(Vec::new()).into_value().is_none(), "nothing to cache");
        assert!(l.passages("not json").is_empty());
    }

    #[test]
    fn service_data_is_one_passage_named_by_its_key() {
        let p = Lookup::Product(asin("B0AAAAAAA1")).passages(r#"{"title":"Spiral"}"#);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].content, r#"product:B0AAAAAAA1: {"title":"Spiral"}"#);
    }
}
