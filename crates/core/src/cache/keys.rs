//! Every key of the project's two key spaces, each defined once with its lifetime beside it:
//!
//! - [`CacheKey`]: what the cache (ElastiCache; the embedded TTL cache locally) holds. The key's text is
//!   rendered here, since Redis has no other syntax.
//! - [`CounterKey`]: a user's counters in the store (`LIMIT#<user>` items in DynamoDB). Only what the
//!   counter counts is defined here; each store adapter renders its own sort-key syntax from it.
//!
//! The README's "Data" tables and the DynamoDB adapter's key table are tested against these.

use std::time::Duration;

use super::Lookup;
use crate::ids::{Asin, ConnectionId, MessageId, SessionId};
use crate::intent::Intent;

/// A cache key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    /// Context a turn looks up (product details, reviews, recommendations, promotions, passages).
    Lookup(Lookup),
    /// `prefetch:{message_id}`: the claim that makes a retried async prefetch of a message a no-op.
    PrefetchClaim(MessageId),
    /// `pregen:{session}:{asin}`: an answer generated ahead for a product of the session's last list.
    Pregen(SessionId, Asin),
    /// `spec:{session}`: the typing-time speculation of the session's next message.
    Speculation(SessionId),
    /// `epoch:{session}`: the session's memory epoch marker, new with every stored turn or summary.
    Epoch(SessionId),
    /// `transitions:{intent}`: observed next intents after `intent` (a hash of counts).
    Transitions(Intent),
}

impl CacheKey {
    /// The key's text.
    pub fn render(&self) -> String {
        match self {
            Self::Lookup(l) => l.key(),
            Self::PrefetchClaim(m) => format!("prefetch:{m}"),
            Self::Pregen(session, asin) => format!("pregen:{session}:{asin}"),
            Self::Speculation(session) => format!("spec:{session}"),
            Self::Epoch(session) => format!("epoch:{session}"),
            Self::Transitions(intent) => format!("transitions:{intent}"),
        }
    }

    /// How long an entry lives by default. Some are settings (`PREGEN_TTL_SECS`,
    /// `TYPING_SPECULATION_TTL_SECS`), whose defaults these are; `None`: kept until evicted.
    pub fn default_ttl(&self) -> Option<Duration> {
        match self {
            Self::Lookup(l) => Some(l.ttl()),
            // Outlives Lambda's asynchronous retries (up to 6 h of event age, in practice minutes).
            Self::PrefetchClaim(_) => Some(Duration::from_secs(3600)),
            Self::Pregen(..) => Some(Duration::from_secs(600)),
            Self::Speculation(_) => Some(Duration::from_secs(60)),
            // Ten times the speculation's life: a marker never expires under a speculation that read it.
            Self::Epoch(_) => Some(Duration::from_secs(600)),
            Self::Transitions(_) => None,
        }
    }

    /// One example of each kind, for the tests that hold documentation to these keys.
    pub fn examples() -> Vec<Self> {
        let (asin, session) = (Asin::example(), SessionId::example());
        let mut out: Vec<Self> = Lookup::examples().into_iter().map(Self::Lookup).collect();
        out.extend([
            Self::PrefetchClaim(MessageId::example()),
            Self::Pregen(session.clone(), asin),
            Self::Speculation(session.clone()),
            Self::Epoch(session),
            Self::Transitions(Intent::Recommendation),
        ]);
        out
    }

    /// The key's pattern, as the README's tables write it (`pregen:{session}:{asin}`).
    pub fn pattern(&self) -> &'static str {
        match self {
            Self::Lookup(Lookup::Product(_)) => "product:{asin}",
            Self::Lookup(Lookup::Review(_)) => "review:{asin}",
            Self::Lookup(Lookup::Reco { .. }) => "reco:{user}:{asin}",
            Self::Lookup(Lookup::Promo) => "promo:{placement}",
            Self::Lookup(Lookup::Rag { .. }) => "rag:{intent}:{asin}",
            Self::PrefetchClaim(_) => "prefetch:{message_id}",
            Self::Pregen(..) => "pregen:{session}:{asin}",
            Self::Speculation(_) => "spec:{session}",
            Self::Epoch(_) => "epoch:{session}",
            Self::Transitions(_) => "transitions:{intent}",
        }
    }
}

/// One counter in the store (a user's, or a guest address's: [`crate::ports::CounterOwner`]): what it
/// counts, in which window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CounterKey {
    /// `sendMessage` requests in one UTC minute (minutes since the epoch).
    Rate { minute: u64 },
    /// Model tokens in one JST day (days since the epoch, counted in JST): turns, typed-ahead and
    /// pre-generated answers, summaries.
    Tokens { jst_day: u64 },
    /// `typing` frames of the user, all connections together, in one UTC minute.
    Typing { minute: u64 },
    /// Guest `$connect`s from one address in one UTC minute.
    GuestConnects { minute: u64 },
    /// Guest `sendMessage`s from one address in one UTC minute.
    GuestTurns { minute: u64 },
    /// Guest `typing` frames from one address in one UTC minute.
    GuestTyping { minute: u64 },
    /// The generation of a connection's latest typing frame (a newer one supersedes older speculations).
    TypingGeneration { conn: ConnectionId },
    /// The user's open connections.
    Connections,
    /// Typed-ahead generations a connection started for one message (the session's memory epoch names the
    /// message: it changes with every stored turn).
    AnswersPerMessage { conn: ConnectionId, epoch: String },
    /// Typed-ahead generations a user started in one UTC minute.
    AnswersPerMinute { minute: u64 },
}

impl CounterKey {
    /// How long the counter must live after `now_ms`: its window, with a margin for clock skew between
    /// containers.
    pub fn ttl_from(&self, now_ms: u64) -> Duration {
        const MINUTE: Duration = Duration::from_secs(60);
        match self {
            Self::Rate { .. }
            | Self::Typing { .. }
            | Self::AnswersPerMinute { .. }
            | Self::GuestConnects { .. }
            | Self::GuestTurns { .. }
            | Self::GuestTyping { .. } => 2 * MINUTE,
            Self::AnswersPerMessage { .. } => 30 * MINUTE,
            Self::Tokens { .. } => {
                let (_, left_ms) = crate::clock::jst_day(now_ms);
                Duration::from_millis(left_ms) + 60 * MINUTE
            }
            Self::TypingGeneration { .. } => 180 * MINUTE,
            // Past the longest a connection may stay open (API Gateway: 2 h), so a lost `$disconnect` heals.
            Self::Connections => 130 * MINUTE,
        }
    }

    /// Whether an address owns this kind of counter (the rest are a user's).
    pub fn of_address(&self) -> bool {
        matches!(self, Self::GuestConnects { .. } | Self::GuestTurns { .. } | Self::GuestTyping { .. })
    }

    /// One example of each kind.
    pub fn examples() -> Vec<Self> {
        let conn = ConnectionId::example();
        vec![
            Self::Rate { minute: 29_000_000 },
            Self::Tokens { jst_day: 20_000 },
            Self::Typing { minute: 29_000_000 },
            Self::GuestConnects { minute: 29_000_000 },
            Self::GuestTurns { minute: 29_000_000 },
            Self::GuestTyping { minute: 29_000_000 },
            Self::TypingGeneration { conn: conn.clone() },
            Self::Connections,
            Self::AnswersPerMessage { conn, epoch: "t.m-1.1800000000000".to_owned() },
            Self::AnswersPerMinute { minute: 29_000_000 },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_renders_its_pattern_with_its_values() {
        for key in CacheKey::examples() {
            let (rendered, pattern) = (key.render(), key.pattern());
            let prefix = pattern.split('{').next().unwrap();
            assert!(rendered.starts_with(prefix), "{rendered} vs {pattern}");
            assert_eq!(rendered.matches(':').count(), pattern.matches(':').count(), "{rendered} vs {pattern}");
        }
        let s = SessionId::example();
        assert_eq!(CacheKey::Epoch(s.clone()).render(), format!("epoch:{s}"));
    }

    #[test]
    fn the_readme_and_the_module_docs_list_every_cache_key() {
        let readme = include_str!("../../../../README.md");
        let docs = include_str!("mod.rs");
        for key in CacheKey::examples() {
            assert!(readme.contains(&format!("| `{}` |", key.pattern())), "README lacks {}", key.pattern());
            if matches!(key, CacheKey::Lookup(_) | CacheKey::PrefetchClaim(_) | CacheKey::Pregen(..)) {
                assert!(docs.contains(&format!("`{}`", key.pattern())), "cache/mod.rs lacks {}", key.pattern());
            }
        }
    }

    #[test]
    fn a_token_counter_lives_until_the_jst_day_ends_and_an_hour_more() {
        let utc_14_59 = 1_700_000_000_000 / 86_400_000 * 86_400_000 + 14 * 3_600_000 + 59 * 60_000;
        assert_eq!(CounterKey::Tokens { jst_day: 0 }.ttl_from(utc_14_59), Duration::from_secs(60 + 3600));
        assert_eq!(CounterKey::Rate { minute: 0 }.ttl_from(utc_14_59), Duration::from_secs(120));
    }
}
