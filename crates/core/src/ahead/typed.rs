//! Answers that start while the shopper types ("typed ahead"): when a partial has settled, the typing
//! invocation asks the model the turn's own question and writes the answer into the session's answer buffer
//! ([`crate::ports::answers`]) as it arrives; a `sendMessage` whose final text has the same [`AnswerBasis`]
//! claims it and relays what is buffered at once, then the rest live. Anything else cancels it.
//!
//! This module holds what both sides agree on: the settings, the basis a generation is keyed by, when a
//! partial counts as settled, and the budget counters. The writer is the typing step
//! (`turn/typing.rs`); the reader is the answer step ([`crate::answer::serve`]).

use std::time::Duration;

use crate::ahead::speculate::normalize;
use crate::cache::CounterKey;
use crate::deadline::best_effort;
use crate::ids::SessionId;
use crate::ids::{ConnectionId, UserId};
use crate::intent::is_japanese;
use crate::ports::Counter;
use crate::ports::ModelEvent;
use crate::ports::answers::{AnswerBuffer, Buffered};
use crate::protocol::PageContext;

/// Settings of typed-ahead answers (`ANSWER_SPECULATION`, off unless named, and only with a cache).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TypedAheadConfig {
    pub enabled: bool,
    /// A partial shorter than this (normalized characters) is not answered ahead.
    pub min_chars: usize,
    /// English partials need at least this many words (a question of fewer is rarely finished).
    pub min_words: usize,
    /// How long a generation stays claimable (and its buffer kept).
    pub ttl: Duration,
    /// Generations started per sent message (per connection and memory epoch), at most.
    pub per_message: u32,
    /// Generations started per user per minute, at most.
    pub per_minute: u32,
    /// How long a claimant waits for the generation's next event before giving it up (before the first
    /// token: the turn asks the model itself).
    pub wait: Duration,
}

impl Default for TypedAheadConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_chars: 8,
            min_words: 3,
            ttl: Duration::from_secs(30),
            per_message: 5,
            per_minute: 12,
            wait: Duration::from_secs(5),
        }
    }
}

/// What a generation was built from. A message may take a generation only when every part is equal: the
/// same text (normalized as speculation compares texts), page context, memory (the session's epoch marker:
/// no turn stored since), input verdict and model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerBasis {
    pub text: String,
    pub page: String,
    pub epoch: Option<String>,
    /// `none`, `pass@<guardrail>` or `mask@<guardrail>:<masked text>`.
    pub verdict: String,
    pub model: String,
}

impl AnswerBasis {
    pub fn new(text: &str, page: &PageContext, epoch: Option<String>, verdict: String, model: &str) -> Self {
        let page = page.to_json();
        Self { text: normalize(text), page, epoch, verdict, model: model.to_owned() }
    }

    /// The basis as one string (its parts joined by the unit separator, which no part contains: the text is
    /// made inert of control characters before it is used, the page context is JSON).
    pub fn key(&self) -> String {
        let epoch = self.epoch.as_deref().unwrap_or("-");
        [self.model.as_str(), epoch, &self.verdict, &self.page, &self.text].join("\u{1f}")
    }
}

/// The parts of [`AnswerBasis::key`], in order.
const BASIS_PARTS: [&str; 5] = ["model", "epoch", "verdict", "page", "text"];

/// Which parts two basis keys differ in (for the log line of a cancelled generation; never their values,
/// which hold the shopper's text).
pub fn basis_difference(a: &str, b: &str) -> Vec<&'static str> {
    let (mut x, mut y) = (a.split('\u{1f}'), b.split('\u{1f}'));
    BASIS_PARTS.into_iter().filter(|_| x.next() != y.next()).collect()
}

/// The verdict part of a basis: no input guardrail, passed by it, or masked by it.
pub fn verdict_key(guardrail: Option<&str>, masked: Option<&str>) -> String {
    match (guardrail, masked) {
        (None, _) => "none".to_owned(),
        (Some(g), None) => format!("pass@{g}"),
        (Some(g), Some(m)) => format!("mask@{g}:{m}"),
    }
}

/// Whether a partial has settled enough to be answered ahead: long enough, and for English, enough words,
/// not ending on a word that leaves the question open ("… about", "… the", "… for"). The typing frame
/// itself arrives after the client's debounce pause, and the generation starts only if no newer partial
/// arrived while the context was gathered (the caller's check); the measurements behind these rules are in
/// the README ("Answers that start while the shopper types").
pub fn settled(text: &str, cfg: &TypedAheadConfig) -> bool {
    let norm = normalize(text);
    if norm.chars().count() < cfg.min_chars {
        return false;
    }
    if is_japanese(&norm) {
        // A Japanese question that stops on a particle is unfinished ("…について", "…の", "…を").
        return !OPEN_JA.iter().any(|open| norm.ends_with(open));
    }
    let words: Vec<&str> = norm.split_whitespace().collect();
    words.len() >= cfg.min_words && words.last().is_none_or(|w| !OPEN_EN.contains(w))
}

/// English words a finished question rarely ends on.
const OPEN_EN: &[&str] = &[
    "a", "an", "the", "about", "for", "of", "to", "in", "on", "with", "like", "and", "or", "but", "my", "your", "is",
    "are", "me", "some", "any", "more", "than", "from", "by", "at", "if", "that", "this", "what", "which", "how",
];

/// Japanese endings that leave a question open (particles and connectives; not "〜て", which ends a request:
/// "教えて", "見せて").
const OPEN_JA: &[&str] =
    &["について", "に関して", "の", "を", "に", "は", "が", "と", "で", "や", "も", "へ", "、", "けど", "から", "より"];

/// The per-message budget: generations of one connection since the session's memory last changed (every
/// sent and stored message renews the epoch).
pub fn per_message_counter(user: &UserId, conn: &ConnectionId, epoch: Option<&str>) -> Counter {
    Counter::new(user, CounterKey::AnswersPerMessage { conn: conn.clone(), epoch: epoch.unwrap_or("-").to_owned() })
}

/// The per-minute budget of a user's generations.
pub fn per_minute_counter(user: &UserId, minute: u64) -> Counter {
    Counter::new(user, CounterKey::AnswersPerMinute { minute })
}

/// The tokens a generation spent, when it has ended (`None` while it runs: its writer counts its own waste
/// when it is told to stop). One read of its log.
pub async fn finished_usage<B: AnswerBuffer>(
    buffer: &B,
    session: &SessionId,
    id: &str,
    within: Duration,
) -> Option<(u32, u32)> {
    let events = best_effort("typed-ahead usage", within, buffer.read(session, id, 0, Duration::ZERO)).await?;
    if !events.iter().any(|e| matches!(e, Buffered::End)) {
        return None;
    }
    Some(events.iter().fold((0, 0), |acc, e| match e {
        Buffered::Model { event: ModelEvent::Usage { input_tokens, output_tokens, .. }, .. } => {
            (*input_tokens, *output_tokens)
        }
        _ => acc,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> TypedAheadConfig {
        TypedAheadConfig { enabled: true, ..TypedAheadConfig::default() }
    }

    #[test]
    fn a_basis_differs_when_any_part_does_and_not_for_case_or_a_final_question_mark() {
        let page = PageContext::default();
        let b = |t: &str, e: Option<&str>, v: &str, m: &str| {
            AnswerBasis::new(t, &page, e.map(str::to_owned), v.to_owned(), m).key()
        };
        let base = b("Is Spiral scary", Some("e1"), "none", "m");
        assert_eq!(base, b("is spiral scary?", Some("e1"), "none", "m"));
        assert_ne!(base, b("Is Spiral gory", Some("e1"), "none", "m"), "text");
        assert_ne!(base, b("Is Spiral scary", Some("e2"), "none", "m"), "a turn was stored");
        assert_ne!(base, b("Is Spiral scary", None, "none", "m"), "no marker then");
        assert_ne!(base, b("Is Spiral scary", Some("e1"), "pass@g:1", "m"), "verdict");
        assert_ne!(base, b("Is Spiral scary", Some("e1"), "none", "n"), "model");
        let shelf =
            PageContext { store_section: Some("horror".to_owned().try_into().unwrap()), ..PageContext::default() };
        let other_page = AnswerBasis::new("Is Spiral scary", &shelf, Some("e1".into()), "none".into(), "m").key();
        assert_eq!(basis_difference(&base, &other_page), ["page"]);
        assert_eq!(basis_difference(&base, &b("Is Spiral gory", Some("e2"), "none", "m")), ["epoch", "text"]);
        assert!(basis_difference(&base, &base).is_empty());
        assert_ne!(base, other_page, "page context");
    }

    #[test]
    fn a_partial_settles_when_it_is_long_enough_and_does_not_stop_on_an_open_word() {
        let c = cfg();
        assert!(settled("Show me some horror manga", &c));
        assert!(!settled("Show me some", &c), "ends on an open word");
        assert!(!settled("Show me", &c), "too few words");
        assert!(!settled("Tell me more about", &c));
        assert!(settled("Is B0UZUMAKI1 in stock", &c));
        assert!(settled("おすすめのファンタジー漫画を教えてください", &c));
        assert!(!settled("おすすめのファンタジー漫画を", &c), "stops on a particle");
        assert!(!settled("2つ目", &c), "too short");
        assert!(settled("2つ目について詳しく教えて", &c), "a request ending in 〜て is finished");
        assert!(!settled("2つ目の作品について", &c), "…について is not");
    }

    #[test]
    fn verdicts_name_their_guardrail_and_what_it_masked() {
        assert_eq!(verdict_key(None, None), "none");
        assert_eq!(verdict_key(Some("g:1"), None), "pass@g:1");
        assert_eq!(verdict_key(Some("g:1"), Some("call {PHONE}")), "mask@g:1:call {PHONE}");
    }
}
