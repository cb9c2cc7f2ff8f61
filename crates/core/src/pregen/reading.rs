//! What a follow-up asks beyond naming a product: generic (an overview fits) or specific.
//!
//! Not a list of known generic phrasings: the product reference (ordinal, title, ASIN) is taken out of
//! the [`fold`]ed message, then the request's framing (politeness, "can you tell me", "I'm curious
//! about", "info", "what's it about", "について教えてください", "ってどんな話？", particles) is taken out
//! word by word, and the follow-up is generic only when nothing else is left and the framing asks for
//! information. Any other word (a price, "scary", "anime", "完結", a typo of something unknown) is left over
//! and makes it specific: unsure is specific, so a specific question is never answered with the overview.
//!
//! The framing vocabulary is closed-class words and request forms, not questions: what it lacks costs
//! recall (the model answers), never precision. Typos are forgiven on framing words of four letters or
//! more ([`crate::intent`]'s `near`), never turning a content word into framing (`gore` is not `more`).
//!
//! A reply that only points ("and the second one?", "2つ目は？") asks for whatever was asked last: after
//! the list, an overview; after a specific question ("is the first one scary?"), the same question about
//! another product. So its reading depends on [`Before`].

use std::sync::LazyLock;

use crate::ids::Asin;
use crate::intent::{Entities, Listed, REF_NOUNS, blank, fold, near, ordinals, words};

mod lexicon;
use lexicon::{EN, JA, JA_ASKS, NOT_A_TYPO, REACTION_VERBS, REACTION_WORDS};

/// How strongly the framing asks for information about the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cue {
    /// Politeness, fillers, particles: "please", "the", "は".
    None,
    /// A reply that only points: "and", "what about", "?", "について", "も".
    Weak,
    /// An explicit request for information: "tell me", "details", "what's it about", "教えて", "どんな".
    Strong,
}

/// What the shopper said just before this follow-up.
#[derive(Debug, Clone, Copy)]
pub enum Before<'a> {
    /// Not known: a reply that only points is specific.
    Unknown,
    /// The message whose answer is the list the follow-up points into.
    List,
    /// An earlier follow-up about the same list (its text, and the list's titles).
    FollowUp(&'a str, &'a [Listed]),
}

/// How a follow-up reads once its product reference is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Words outside the framing vocabulary are left: it asks for something particular.
    pub asks_more: bool,
    /// The strongest request for information in its framing.
    pub cue: Cue,
    /// It names more than one product (two ordinals, two titles, another ASIN).
    pub several: bool,
}

impl Reading {
    /// Whether an overview answers it (see the module docs).
    pub fn is_generic(&self, before: Before<'_>) -> bool {
        if self.asks_more || self.several {
            return false;
        }
        match (self.cue, before) {
            (Cue::Strong, _) | (Cue::Weak, Before::List) => true,
            (Cue::Weak, Before::FollowUp(prev, listed)) => {
                let mut e = Entities::default();
                e.resolve_listed(prev, listed);
                let p = read(prev, &e);
                !p.asks_more && !p.several && p.cue == Cue::Strong
            }
            _ => false,
        }
    }
}

/// [`EN`] split into words, with the reactions ("sounds good") and the list's nouns ("one", "title").
static EN_PHRASES: LazyLock<Vec<(Vec<&'static str>, Cue)>> = LazyLock::new(|| {
    let mut v: Vec<(Vec<&'static str>, Cue)> = EN.iter().map(|(p, c)| (p.split_whitespace().collect(), *c)).collect();
    for verb in REACTION_VERBS {
        for word in REACTION_WORDS {
            v.push((vec![verb, word], Cue::None));
        }
    }
    v.extend(REF_NOUNS.iter().map(|n| (vec![*n], Cue::None)));
    // Longest first, so "what about" wins over "what".
    v.sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
    v
});

/// [`JA`], longest first.
static JA_PHRASES: LazyLock<Vec<(&'static str, Cue)>> = LazyLock::new(|| {
    let mut v = JA.to_vec();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    v
});

fn word_matches(typed: &str, framing: &str) -> bool {
    typed == framing
        || (framing.len() >= 4
            && typed.len().abs_diff(framing.len()) <= 1
            && !NOT_A_TYPO.contains(&typed)
            && near(typed, framing))
}

/// The English framing of `rest` (product reference blanked): the strongest cue, and whether a word
/// outside the framing is left.
fn english(rest: &str) -> (bool, Cue) {
    let ws: Vec<&str> = words(rest).iter().map(|w| w.text).filter(|w| *w != "#").collect();
    let mut cue = Cue::None;
    let mut i = 0;
    while i < ws.len() {
        let hit = EN_PHRASES.iter().find(|(phrase, _)| {
            ws.len() - i >= phrase.len() && phrase.iter().enumerate().all(|(k, p)| word_matches(ws[i + k], p))
        });
        match hit {
            Some((phrase, c)) => {
                cue = cue.max(*c);
                i += phrase.len();
            }
            None => return (true, cue),
        }
    }
    (false, cue)
}

/// Characters that neither ask nor frame: punctuation, symbols, emoji, the long-vowel mark and the wave
/// dash of casual writing ("教えて〜", "詳しくー").
fn ignorable(c: char) -> bool {
    !c.is_alphanumeric() || matches!(c, 'ー' | '〜' | '～' | '々')
}

/// The Japanese framing of `rest`: as [`english`], over the text that is not ASCII.
fn japanese(rest: &str) -> (bool, Cue) {
    let mut cue = Cue::None;
    let mut i = 0;
    while i < rest.len() {
        let tail = &rest[i..];
        let Some(c) = tail.chars().next() else { break };
        if c.is_ascii() || ignorable(c) {
            i += c.len_utf8();
            continue;
        }
        if JA_ASKS.iter().any(|a| tail.starts_with(a)) {
            return (true, cue);
        }
        match JA_PHRASES.iter().find(|(p, _)| tail.starts_with(p)) {
            Some((p, k)) => {
                cue = cue.max(*k);
                i += p.len();
            }
            None => return (true, cue),
        }
    }
    (false, cue)
}

/// ASINs written in a folded message (lower case there), with where.
fn written_asins(folded: &str) -> Vec<(String, std::ops::Range<usize>)> {
    words(folded)
        .into_iter()
        .filter(|w| w.text.len() == 10 && w.text.starts_with("b0"))
        .map(|w| (w.text.to_ascii_uppercase(), w.start..w.end))
        .collect()
}

/// Reads `text` (see the module docs): the product reference `entities` found (its ordinals, the titles
/// of [`Entities::resolve_listed`] that name the resolved product, its ASINs) is taken out, then the
/// framing.
pub fn read(text: &str, entities: &Entities) -> Reading {
    let folded = fold(text);
    let target = entities.resolved.as_ref();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut several = false;
    for m in &entities.titles {
        if Some(&m.asin) == target {
            spans.push(m.span.clone());
        } else if m.whole {
            several = true;
        }
    }
    let untitled = blank(&folded, spans.iter().cloned());
    let found = ordinals(&untitled);
    several |= found.iter().any(|o| o.ordinal != found[0].ordinal);
    spans.extend(found.into_iter().map(|o| o.span));
    for (asin, span) in written_asins(&folded) {
        several |= target.is_some_and(|t| t.as_str() != asin);
        spans.push(span);
    }
    let rest = blank(&folded, spans);
    let (en_more, en_cue) = english(&rest);
    let (ja_more, ja_cue) = japanese(&rest);
    let question = if rest.contains('?') { Cue::Weak } else { Cue::None };
    Reading { asks_more: en_more || ja_more, cue: en_cue.max(ja_cue).max(question), several }
}

/// Whether `asin` was resolved from a part of a title only ("the Diary one"), with no ordinal and no
/// whole title: good enough for an overview, not for opening a specific answer about it.
pub fn by_part_only(entities: &Entities, asin: &Asin) -> bool {
    entities.ordinal.is_none()
        && entities.asins.is_empty()
        && !entities.titles.iter().any(|m| m.whole && m.asin == *asin)
        && entities.titles.iter().any(|m| m.asin == *asin)
}

/// Whether the message is in Japanese, in English, or neither (`None`: only a product reference,
/// digits and punctuation, such as "#2?" or a title alone), once the titles and ASINs it names are
/// taken out: "Paper Diaryについて教えて" is Japanese, "Tell me about 紙の日記" English.
pub fn language(text: &str, entities: &Entities) -> Option<bool> {
    let folded = fold(text);
    let mut spans: Vec<std::ops::Range<usize>> = entities.titles.iter().map(|m| m.span.clone()).collect();
    spans.extend(written_asins(&folded).into_iter().map(|(_, s)| s));
    let rest = blank(&folded, spans);
    if crate::intent::is_japanese(&rest) {
        Some(true)
    } else if rest.chars().any(|c| c.is_ascii_alphabetic()) {
        Some(false)
    } else {
        None
    }
}
