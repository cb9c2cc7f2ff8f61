//! One function per prompt section: RAG passages (near-duplicates dropped, whole passages by score, the
//! next one cut at a sentence), the conversation (recent messages verbatim, older ones as a summary or a
//! digest), and the page context (the fields the intent needs). Each returns the section's text and its
//! token cost, never above its budget.

use std::collections::HashMap;
use std::sync::Mutex;

use super::page_fields;
use crate::cache::Passage;
use crate::intent::Intent;
use crate::ports::{ChatMessage, Role};
use crate::protocol::PageContext;
use crate::safety::{inert, inert_line};
use crate::tokenizer::{Tokenizer, grapheme_floor};

/// Cuts `text` to `max` tokens at the last sentence end, else word break, else grapheme boundary.
pub fn truncate_at_boundary<'a, T: Tokenizer + ?Sized>(tok: &T, text: &'a str, max: usize) -> &'a str {
    let cut = tok.truncate(text, max);
    if cut.len() == text.len() {
        return text;
    }
    let sentence = cut.char_indices().rev().find(|(_, c)| matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '\n'));
    if let Some((i, c)) = sentence
        && i > cut.len() / 2
    {
        return &cut[..i + c.len_utf8()];
    }
    if let Some(i) = cut.rfind(char::is_whitespace)
        && i > cut.len() / 2
    {
        return &cut[..grapheme_floor(cut, i)];
    }
    cut
}

/// FNV-1a: shingles are compared within one request, so a fast non-keyed hash is enough.
fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Separates words for shingling: ASCII white space and punctuation (bytes: the scan never decodes UTF-8).
fn is_separator(b: u8) -> bool {
    b.is_ascii_whitespace() || b.is_ascii_punctuation()
}

/// Word (ASCII, case-folded) or character-bigram (other scripts) shingles, hashed, sorted, deduplicated.
/// One pass over the bytes: words end at ASCII separators, which are always character boundaries.
fn shingles(text: &str) -> Vec<u64> {
    let bytes = text.as_bytes();
    let mut out: Vec<u64> = Vec::with_capacity(bytes.len() / 4);
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && is_separator(bytes[i]) {
            i += 1;
        }
        let (start, mut ascii) = (i, true);
        while i < bytes.len() && !is_separator(bytes[i]) {
            ascii &= bytes[i].is_ascii();
            i += 1;
        }
        let word = &text[start..i];
        if word.is_empty() {
            break;
        }
        if ascii {
            out.push(fnv(word.bytes().map(|b| b.to_ascii_lowercase())));
            continue;
        }
        // Overlapping pairs of characters; a one-character word stands alone.
        let (mut two_back, mut one_back, mut paired) = (None, None, false);
        for k in word.char_indices().map(|(k, _)| k).chain(std::iter::once(word.len())) {
            if let Some(a) = two_back {
                out.push(fnv(word[a..k].bytes()));
                paired = true;
            }
            (two_back, one_back) = (one_back, Some(k));
        }
        if !paired {
            out.push(fnv(word.bytes()));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

fn jaccard(a: &[u64], b: &[u64]) -> f32 {
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f32 / (a.len() + b.len() - inter) as f32
}

/// Chunks at or above this Jaccard similarity to a better one are dropped.
pub const NEAR_DUPLICATE: f32 = 0.8;

const RAG_SEPARATOR: &str = "\n---\n";

/// Fits RAG chunks into `budget`; returns the section text and its token cost (joins included).
/// Token counts of passages seen before, by a hash of their text: a passage that arrives without a count
/// (service data, a source that does not count at indexing) is counted once per container, not once per
/// turn. Bounded: cleared when full.
#[derive(Debug, Default)]
pub struct CountMemo(Mutex<HashMap<u64, usize>>);

impl CountMemo {
    const CAP: usize = 8192;

    fn key(text: &str) -> u64 {
        fnv(text.bytes())
    }

    fn get(&self, key: u64) -> Option<usize> {
        self.0.lock().ok()?.get(&key).copied()
    }

    fn put(&self, key: u64, n: usize) {
        if let Ok(mut m) = self.0.lock() {
            if m.len() >= Self::CAP {
                m.clear();
            }
            m.insert(key, n);
        }
    }

    /// Forgets every count (the bench's cold row).
    pub fn clear(&self) {
        if let Ok(mut m) = self.0.lock() {
            m.clear();
        }
    }
}

pub(super) fn compress_rag<T: Tokenizer + ?Sized>(
    tok: &T,
    chunks: &[Passage],
    budget: usize,
    min_chunk: usize,
    memo: &CountMemo,
) -> (String, usize) {
    // Retrieved text is data: made inert (a changed text's stored count no longer applies).
    let cleaned: Vec<std::borrow::Cow<'_, str>> = chunks.iter().map(|c| inert(c.content.trim())).collect();
    let mut order: Vec<(usize, &str, f32, Option<usize>)> = chunks
        .iter()
        .zip(&cleaned)
        .enumerate()
        .map(|(i, (c, t))| (i, t.as_ref(), c.score, c.tokens.filter(|_| matches!(t, std::borrow::Cow::Borrowed(_)))))
        .filter(|(_, t, _, _)| !t.is_empty())
        .collect();
    order.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    // Each piece after the first costs its separator, plus one slack token for merges at the join.
    let join_cost = tok.count_fixed(RAG_SEPARATOR) + 1;
    let mut kept_shingles: Vec<Vec<u64>> = Vec::new();
    let mut used = 0;
    let mut picked: Vec<(usize, &str)> = Vec::new();
    let mut first_left_out: Option<&str> = None;
    for (_, text, _, known) in order {
        let join = if picked.is_empty() { 0 } else { join_cost };
        let room = budget.saturating_sub(used + join);
        if room == 0 {
            break;
        }
        let sh = shingles(text);
        if kept_shingles.iter().any(|k| jaccard(k, &sh) >= NEAR_DUPLICATE) {
            continue;
        }
        let key = known.is_none().then(|| CountMemo::key(text));
        let fits = match known.or_else(|| key.and_then(|k| memo.get(k))) {
            Some(n) => (n <= room).then_some(n),
            None => {
                // Counting stops at `room`: only a passage that fits gets a complete count to remember.
                let n = tok.count_up_to(text, room);
                if let (Some(k), Some(n)) = (key, n) {
                    memo.put(k, n);
                }
                n
            }
        };
        match fits {
            Some(n) => {
                used += n + join;
                picked.push((picked.len(), text));
                kept_shingles.push(sh);
            }
            None => {
                if first_left_out.is_none() {
                    first_left_out = Some(text);
                    kept_shingles.push(sh);
                }
            }
        }
    }
    if let Some(text) = first_left_out {
        let join = if picked.is_empty() { 0 } else { join_cost };
        let room = budget.saturating_sub(used + join);
        if room >= min_chunk {
            let cut = truncate_at_boundary(tok, text, room);
            if !cut.trim().is_empty() {
                used += tok.count(cut) + join;
                picked.push((picked.len(), cut));
            }
        }
    }
    let text = picked.iter().map(|(_, t)| *t).collect::<Vec<_>>().join(RAG_SEPARATOR);
    (text, used)
}

pub(super) fn role_prefix(role: Role) -> &'static str {
    match role {
        Role::User => "user: ",
        Role::Assistant => "assistant: ",
    }
}

/// Fits the conversation into `budget` (see module docs); returns the section text and its cost. Lines are
/// taken newest first, so older material is only looked at while budget remains.
pub(super) fn compress_conversation<T: Tokenizer + ?Sized>(
    tok: &T,
    messages: &[ChatMessage],
    known: &[Option<usize>],
    summary: Option<&str>,
    budget: usize,
    verbatim: usize,
) -> (String, usize) {
    let split = messages.len().saturating_sub(verbatim);
    let (older, recent) = messages.split_at(split);
    let mut lines: Vec<String> = Vec::with_capacity(recent.len() + 1); // newest first
    let mut used = 0;
    for (i, m) in recent.iter().enumerate().rev() {
        // One line per message, inert: a message cannot fake a line of its own or close the section.
        let text = inert_line(m.text.trim());
        let line = format!("{}{}", role_prefix(m.role), text);
        let room = budget.saturating_sub(used + 1); // +1: the newline joining it to the next line
        // A stored count covers the text (unless making it inert changed it); the prefix costs its own
        // tokens plus one for the join.
        let stored = known.get(split + i).copied().flatten().filter(|_| matches!(text, std::borrow::Cow::Borrowed(_)));
        let fits = match stored {
            Some(n) => {
                let n = n + tok.count_fixed(role_prefix(m.role)) + 1;
                (n <= room).then_some(n)
            }
            None => tok.count_up_to(&line, room),
        };
        match fits {
            Some(n) => {
                used += n + 1;
                lines.push(line);
            }
            None if lines.is_empty() => {
                // A newest message longer than the whole budget: keep its beginning.
                let cut = truncate_at_boundary(tok, &line, budget.saturating_sub(1));
                let n = tok.count(cut) + usize::from(!cut.is_empty());
                return (cut.to_owned(), n);
            }
            None => return (join_reversed(&lines), used),
        }
    }
    let room = budget.saturating_sub(used + 1);
    let earlier = match summary.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) if room > 0 => Some(format!("[Earlier: {}]", inert_line(s))),
        None if room > 8 && !older.is_empty() => {
            // A digest of the shopper's older questions, newest first until the room is used.
            let mut asked: Vec<String> = Vec::new();
            let mut cost = 8;
            for m in older.iter().rev().filter(|m| m.role == Role::User) {
                let clean = inert_line(m.text.trim());
                let q = truncate_at_boundary(tok, &clean, 16).to_owned();
                let n = tok.count(&q) + 1;
                if q.is_empty() || cost + n > room {
                    break;
                }
                cost += n;
                asked.push(q);
            }
            asked.reverse();
            (!asked.is_empty()).then(|| format!("[Earlier the shopper asked: {}]", asked.join(" | ")))
        }
        _ => None,
    };
    if let Some(line) = earlier
        && let Some(n) = tok.count_up_to(&line, room)
    {
        used += n + 1;
        lines.push(line);
    }
    (join_reversed(&lines), used)
}

fn join_reversed(lines: &[String]) -> String {
    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines.iter().rev() {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(l);
    }
    out
}

pub(super) fn compress_page<T: Tokenizer + ?Sized>(
    tok: &T,
    page: &PageContext,
    notes: &[(&str, String)],
    intent: Intent,
    budget: usize,
) -> (String, usize) {
    let fields = page_fields(intent);
    let mut out = String::new();
    // Keys and values were checked against the page schema at parse; made inert all the same (a page
    // context may come from elsewhere, e.g. a stored prefetch job).
    let mut push = |k: &str, v: &str| {
        if v.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(&inert_line(k));
        out.push('=');
        out.push_str(&inert_line(v));
    };
    for (k, v) in notes {
        push(k, v);
    }
    for (field, v) in page.entries() {
        if fields.is_some_and(|f| !f.contains(&field)) {
            continue;
        }
        push(field.key(), &v);
    }
    // One pass in the common case (it fits); a cut costs a second.
    if let Some(n) = tok.count_up_to(&out, budget) {
        return (out, n);
    }
    let cut = truncate_at_boundary(tok, &out, budget).trim_end_matches([';', ' ', ',']);
    (cut.to_owned(), tok.count(cut))
}
