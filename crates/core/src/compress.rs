//! Prompt compression to a token budget.
//!
//! Sections and their budgets (the design's table; all configurable): system prompt 200, RAG chunks 350,
//! conversation 200, page context 100, user message 100, total 2,000. The prompt is laid out
//! stable-prefix-first so Bedrock prompt caching can hit: the system prompt is its own block; the user
//! message holds `<history>`, `<context>`, `<page>` and `<question>` in that order.
//!
//! - System prompt: whitespace collapsed, blank lines dropped, optional blocks (lines starting with
//!   `@intent,intent:`) kept only for those intents; the result is cached per intent.
//! - RAG: near-duplicates dropped, whole chunks by score first, then the best chunk that did not fit is
//!   cut at a sentence (else word, else grapheme) boundary if at least `min_chunk` tokens remain. Budget
//!   the other sections leave unused flows here.
//! - Conversation: the last `verbatim_messages` messages verbatim; older ones replaced by the stored
//!   summary, or a digest of the shopper's older questions; then lines are dropped from the oldest end
//!   until it fits.
//! - Page context: only the fields the intent needs, as `key=value` pairs.
//! - The user message is never cut: over its budget it is an error the client sees.
//!
//! The total is guaranteed by construction: every section is counted as cut, joins are charged a slack
//! token each, and the framing is counted once. What an uncompressed prompt would have cost
//! ([`raw_tokens`]) is only needed for the `compression_ratio` metric, so the turn computes it after the
//! request has been sent, off the path to the first token.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

use crate::intent::Intent;
use crate::ports::{ChatMessage, Role};
use crate::sources::Passage;
use crate::tokenizer::{Tokenizer, grapheme_floor};

/// A section of the prompt's user message, delimited by its tags. The constants below are the one
/// definition of the layout: the compressor writes them, and whatever reads a prompt (the emulator, tests)
/// finds the sections through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub open: &'static str,
    pub close: &'static str,
}

impl Tag {
    /// The text between this tag's first opening and the closing that follows it.
    pub fn section<'a>(&self, prompt: &'a str) -> Option<&'a str> {
        let start = prompt.find(self.open)? + self.open.len();
        let len = prompt[start..].find(self.close)?;
        Some(prompt[start..start + len].trim_matches('\n'))
    }
}

/// Older exchanges (summary or digest) and the verbatim recent ones.
pub const HISTORY: Tag = Tag { open: "<history>", close: "</history>" };
/// Retrieved passages and service data.
pub const CONTEXT: Tag = Tag { open: "<context>", close: "</context>" };
/// Page-context fields the intent needs, and notes such as [`REFERS_TO`].
pub const PAGE: Tag = Tag { open: "<page>", close: "</page>" };
/// The shopper's message.
pub const QUESTION: Tag = Tag { open: "<question>", close: "</question>" };
/// The note naming the product an ordinal ("the first one") resolved to: `refers_to=<ASIN>` in [`PAGE`].
pub const REFERS_TO: &str = "refers_to";

/// Token budget per section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptBudget {
    pub system: usize,
    pub rag: usize,
    pub conversation: usize,
    pub page: usize,
    pub user_message: usize,
    /// Hard limit of the whole prompt.
    pub total: usize,
    /// A RAG remainder smaller than this is dropped rather than cut.
    pub min_chunk: usize,
    /// Messages kept verbatim at the end of the conversation (4 = two exchanges).
    pub verbatim_messages: usize,
}

impl Default for PromptBudget {
    fn default() -> Self {
        Self {
            system: 200,
            rag: 350,
            conversation: 200,
            page: 100,
            user_message: 100,
            total: 2000,
            min_chunk: 50,
            verbatim_messages: 4,
        }
    }
}

impl PromptBudget {
    /// The same budget with every token limit scaled by `1 / factor` (the calibration: when Bedrock counts
    /// 1.2 tokens per estimated token, budgets shrink by 1.2 so the real prompt stays within them).
    pub fn calibrated(&self, factor: f32) -> Self {
        let f = factor.clamp(0.5, 2.0);
        let s = |n: usize| ((n as f32) / f).floor() as usize;
        Self {
            system: s(self.system),
            rag: s(self.rag),
            conversation: s(self.conversation),
            page: s(self.page),
            user_message: s(self.user_message),
            total: s(self.total),
            min_chunk: self.min_chunk,
            verbatim_messages: self.verbatim_messages,
        }
    }
}

/// Everything that may go into the prompt.
#[derive(Debug, Clone, Copy)]
pub struct CompressInput<'a> {
    pub system_prompt: &'a str,
    pub rag_chunks: &'a [Passage],
    /// Oldest first.
    pub conversation: &'a [ChatMessage],
    /// Token counts of `conversation`'s texts when known (stored with each turn), same order; may be empty.
    pub conversation_tokens: &'a [Option<usize>],
    /// The stored running summary of turns older than the verbatim window.
    pub summary: Option<&'a str>,
    pub page_context: &'a Map<String, Value>,
    /// Facts derived this turn (e.g. `refers_to=B0...` for an ordinal), always kept.
    pub notes: &'a [(&'a str, String)],
    pub user_message: &'a str,
    pub intent: Intent,
}

/// Tokens per section as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SectionTokens {
    pub system: usize,
    pub rag: usize,
    pub conversation: usize,
    pub page: usize,
    pub user_message: usize,
    pub framing: usize,
}

impl SectionTokens {
    pub fn total(&self) -> usize {
        self.system + self.rag + self.conversation + self.page + self.user_message + self.framing
    }
}

/// The compressed prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct CompressedPrompt {
    /// The system block.
    pub system: String,
    /// The single user message: history, context, page, question.
    pub user: String,
    pub sections: SectionTokens,
    /// Upper bound of the prompt's tokens (sections + framing + join slack), never above the limit.
    pub total_tokens: usize,
}

/// Why a prompt cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("the message is about {tokens} tokens; the limit is {limit}")]
    UserMessageTooLong { tokens: usize, limit: usize },
}

/// Page-context fields each intent needs (the design's table). `General` keeps all.
pub fn page_fields(intent: Intent) -> Option<&'static [&'static str]> {
    Some(match intent {
        Intent::ProductQuestion => &["current_asin", "store_section"],
        Intent::Recommendation => &["browsing_history", "store_section"],
        Intent::ProductDiscovery => &["store_section", "browsing_history"],
        Intent::OrderTracking => &[],
        Intent::ReturnRequest => &["current_asin"],
        Intent::Faq => &["store_section"],
        Intent::Promotion => &["store_section", "cart_asins"],
        Intent::CheckoutHelp => &["cart_asins"],
        Intent::General => return None,
    })
}

/// Collapses whitespace runs, drops blank lines, and keeps `@a,b:` blocks only for those intents.
pub fn minify_system_prompt(prompt: &str, intent: Intent) -> String {
    let mut out = String::with_capacity(prompt.len());
    for line in prompt.lines() {
        let line = line.trim();
        let body = match line.strip_prefix('@').and_then(|rest| rest.split_once(':')) {
            Some((intents, body)) => {
                if !intents.split(',').any(|i| i.trim() == intent.as_str()) {
                    continue;
                }
                body
            }
            None => line,
        };
        let mut words = body.split_whitespace().peekable();
        if words.peek().is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        for (i, w) in words.enumerate() {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(w);
        }
    }
    out
}

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

/// Word (ASCII, case-folded) or character-bigram (other scripts) shingles, hashed, sorted, deduplicated.
fn shingles(text: &str) -> Vec<u64> {
    let mut out: Vec<u64> = Vec::new();
    for w in text.split(|c: char| c.is_whitespace() || c.is_ascii_punctuation()).filter(|w| !w.is_empty()) {
        if w.is_ascii() {
            out.push(fnv(w.bytes().map(|b| b.to_ascii_lowercase())));
        } else {
            let mut prev: Option<usize> = None;
            let mut any = false;
            for (i, _) in w.char_indices().skip(1).chain(std::iter::once((w.len(), ' '))) {
                let start = prev.unwrap_or(0);
                if prev.is_some() {
                    out.push(fnv(w[start..i].bytes()));
                    any = true;
                }
                prev = Some(w[..i].char_indices().next_back().map_or(0, |(j, _)| j));
            }
            if !any {
                out.push(fnv(w.bytes()));
            }
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
fn compress_rag<T: Tokenizer + ?Sized>(
    tok: &T,
    chunks: &[Passage],
    budget: usize,
    min_chunk: usize,
) -> (String, usize) {
    let mut order: Vec<(usize, &str, f32, Option<usize>)> = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.content.trim(), c.score, c.tokens))
        .filter(|(_, t, _, _)| !t.is_empty())
        .collect();
    order.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    // Each piece after the first costs its separator, plus one slack token for merges at the join.
    let join_cost = tok.count(RAG_SEPARATOR) + 1;
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
        let fits = match known {
            Some(n) => (n <= room).then_some(n),
            None => tok.count_up_to(text, room),
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

fn role_prefix(role: Role) -> &'static str {
    match role {
        Role::User => "user: ",
        Role::Assistant => "assistant: ",
    }
}

/// Fits the conversation into `budget` (see module docs); returns the section text and its cost. Lines are
/// taken newest first, so older material is only looked at while budget remains.
fn compress_conversation<T: Tokenizer + ?Sized>(
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
        let line = format!("{}{}", role_prefix(m.role), m.text.trim());
        let room = budget.saturating_sub(used + 1); // +1: the newline joining it to the next line
        // A stored count covers the text; the prefix costs its own tokens plus one for the join.
        let fits = match known.get(split + i).copied().flatten() {
            Some(n) => {
                let n = n + tok.count(role_prefix(m.role)) + 1;
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
        Some(s) if room > 0 => Some(format!("[Earlier: {s}]")),
        None if room > 8 && !older.is_empty() => {
            // A digest of the shopper's older questions, newest first until the room is used.
            let mut asked: Vec<&str> = Vec::new();
            let mut cost = 8;
            for m in older.iter().rev().filter(|m| m.role == Role::User) {
                let q = truncate_at_boundary(tok, m.text.trim(), 16);
                let n = tok.count(q) + 1;
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

fn compress_page<T: Tokenizer + ?Sized>(
    tok: &T,
    page: &Map<String, Value>,
    notes: &[(&str, String)],
    intent: Intent,
    budget: usize,
) -> (String, usize) {
    let fields = page_fields(intent);
    let mut out = String::new();
    let mut push = |k: &str, v: &str| {
        if v.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    };
    for (k, v) in notes {
        push(k, v);
    }
    for (k, v) in page {
        if fields.is_some_and(|f| !f.contains(&k.as_str())) {
            continue;
        }
        match v {
            Value::Null => {}
            Value::String(s) => push(k, s),
            Value::Array(a) => {
                let items: Vec<String> =
                    a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned)).collect();
                push(k, &items.join(","));
            }
            other => push(k, &other.to_string()),
        }
    }
    let cut = truncate_at_boundary(tok, &out, budget);
    let cut = if cut.len() < out.len() { cut.trim_end_matches([';', ' ', ',']) } else { cut };
    (cut.to_owned(), tok.count(cut))
}

/// Appends `<tag>{sep}{body}{sep}</tag>\n`.
fn write_section(out: &mut String, t: Tag, body: &str, sep: &str) {
    out.push_str(t.open);
    out.push_str(sep);
    out.push_str(body);
    out.push_str(sep);
    out.push_str(t.close);
    out.push('\n');
}

/// Compresses prompts; caches the minified system prompt per intent.
#[derive(Debug, Default)]
pub struct PromptCompressor {
    pub budget: PromptBudget,
    system_cache: Mutex<HashMap<(usize, Intent), (String, usize)>>,
}

impl PromptCompressor {
    pub fn new(budget: PromptBudget) -> Self {
        Self { budget, system_cache: Mutex::new(HashMap::new()) }
    }

    fn system<T: Tokenizer + ?Sized>(&self, tok: &T, prompt: &str, intent: Intent, budget: usize) -> (String, usize) {
        let key = (prompt.as_ptr() as usize ^ prompt.len().rotate_left(32) ^ budget.rotate_left(48), intent);
        if let Some(hit) = self.system_cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return hit;
        }
        let min = minify_system_prompt(prompt, intent);
        let cut = truncate_at_boundary(tok, &min, budget).to_owned();
        let n = tok.count(&cut);
        if let Ok(mut c) = self.system_cache.lock() {
            if c.len() > 64 {
                c.clear();
            }
            c.insert(key, (cut.clone(), n));
        }
        (cut, n)
    }

    /// Builds the prompt within `budget` (normally `self.budget`, possibly calibrated).
    pub fn compress<T: Tokenizer + ?Sized>(
        &self,
        tok: &T,
        input: &CompressInput<'_>,
        budget: &PromptBudget,
    ) -> Result<CompressedPrompt, CompressError> {
        let question = input.user_message.trim();
        let user_tokens = tok.count(question);
        if user_tokens > budget.user_message {
            return Err(CompressError::UserMessageTooLong { tokens: user_tokens, limit: budget.user_message });
        }
        let (system, system_tokens) = self.system(tok, input.system_prompt, input.intent, budget.system);
        let (conversation, conv_tokens) = compress_conversation(
            tok,
            input.conversation,
            input.conversation_tokens,
            input.summary,
            budget.conversation,
            budget.verbatim_messages,
        );
        let (page, page_tokens) = compress_page(tok, input.page_context, input.notes, input.intent, budget.page);

        // Framing: the tags around each present section, counted once; +2 slack per section join.
        let framed = |t: Tag| tok.count(t.open) + tok.count(t.close) + 2 + 2;
        let mut framing = framed(QUESTION);
        if !conversation.is_empty() {
            framing += framed(HISTORY);
        }
        if !page.is_empty() {
            framing += framed(PAGE);
        }
        let ctx_framing = framed(CONTEXT);
        let fixed = system_tokens + conv_tokens + page_tokens + user_tokens + framing;
        let unused = budget.system.saturating_sub(system_tokens)
            + budget.conversation.saturating_sub(conv_tokens)
            + budget.page.saturating_sub(page_tokens)
            + budget.user_message.saturating_sub(user_tokens);
        let rag_budget = (budget.rag + unused).min(budget.total.saturating_sub(fixed + ctx_framing)).saturating_sub(0);
        let (rag, rag_tokens) = compress_rag(tok, input.rag_chunks, rag_budget, budget.min_chunk);
        if !rag.is_empty() {
            framing += ctx_framing;
        }

        let mut user = String::with_capacity(conversation.len() + rag.len() + page.len() + question.len() + 64);
        if !conversation.is_empty() {
            write_section(&mut user, HISTORY, &conversation, "\n");
        }
        if !rag.is_empty() {
            write_section(&mut user, CONTEXT, &rag, "\n");
        }
        if !page.is_empty() {
            write_section(&mut user, PAGE, &page, "");
        }
        write_section(&mut user, QUESTION, question, "\n");
        user.pop(); // no newline after the last section

        let sections = SectionTokens {
            system: system_tokens,
            rag: rag_tokens,
            conversation: conv_tokens,
            page: page_tokens,
            user_message: user_tokens,
            framing,
        };
        Ok(CompressedPrompt { system, user, total_tokens: sections.total(), sections })
    }
}

/// What the prompt would cost uncompressed: the whole system prompt, every chunk, every message, the
/// whole page context as JSON, the message. For the `compression_ratio` metric; not on the critical path.
pub fn raw_tokens<T: Tokenizer + ?Sized>(tok: &T, input: &CompressInput<'_>) -> usize {
    tok.count(input.system_prompt)
        + input.rag_chunks.iter().map(|c| c.tokens.unwrap_or_else(|| tok.count(&c.content))).sum::<usize>()
        + input
            .conversation
            .iter()
            .enumerate()
            .map(|(i, m)| input.conversation_tokens.get(i).copied().flatten().unwrap_or_else(|| tok.count(&m.text)) + 2)
            .sum::<usize>()
        + input.summary.map_or(0, |s| tok.count(s))
        + if input.page_context.is_empty() {
            0
        } else {
            tok.count(&serde_json::to_string(input.page_context).unwrap_or_default())
        }
        + tok.count(input.user_message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::Cl100k;
    use proptest::prelude::*;

    fn msg(role: Role, text: &str) -> ChatMessage {
        ChatMessage { role, text: text.to_owned() }
    }

    fn input<'a>(
        chunks: &'a [Passage],
        conv: &'a [ChatMessage],
        page: &'a Map<String, Value>,
        user: &'a str,
    ) -> CompressInput<'a> {
        CompressInput {
            system_prompt: "You are   MangaAssist.\n\n  Be brief.\n@order_tracking: Ask for the order id.\n",
            rag_chunks: chunks,
            conversation: conv,
            conversation_tokens: &[],
            summary: None,
            page_context: page,
            notes: &[],
            user_message: user,
            intent: Intent::Recommendation,
        }
    }

    #[test]
    fn the_system_prompt_is_minified_and_filtered_by_intent() {
        let p = "  You are   MangaAssist.\n\n\t Be brief.  \n@order_tracking,return_request: Ask for the order id.\n";
        assert_eq!(minify_system_prompt(p, Intent::Faq), "You are MangaAssist.\nBe brief.");
        assert_eq!(
            minify_system_prompt(p, Intent::ReturnRequest),
            "You are MangaAssist.\nBe brief.\nAsk for the order id."
        );
    }

    #[test]
    fn rag_keeps_whole_chunks_by_score_and_cuts_the_next_at_a_sentence() {
        let long = "Berserk is a dark fantasy. It follows Guts. ".repeat(40);
        let chunks = vec![
            Passage { content: "Uzumaki is a horror classic by Junji Ito.".into(), score: 0.9, tokens: None },
            Passage { content: long.clone(), score: 0.8, tokens: None },
            Passage { content: "Uzumaki is a horror classic by Junji Ito!".into(), score: 0.7, tokens: None },
        ];
        let (text, n) = compress_rag(&Cl100k, &chunks, 120, 50);
        assert!(text.starts_with("Uzumaki is a horror classic by Junji Ito."));
        assert_eq!(text.matches("Uzumaki").count(), 1, "the near-duplicate is gone: {text}");
        assert!(text.ends_with('.'), "cut at a sentence end: {text:?}");
        assert!(n <= 120 && Cl100k.count(&text) <= n);
    }

    #[test]
    fn a_tiny_remainder_is_dropped_rather_than_cut() {
        let chunks = vec![
            Passage { content: "word ".repeat(90), score: 0.9, tokens: None },
            Passage { content: "other ".repeat(90), score: 0.8, tokens: None },
        ];
        let (text, _) = compress_rag(&Cl100k, &chunks, 120, 50);
        assert!(!text.contains("other"));
    }

    #[test]
    fn older_turns_become_a_digest_and_the_last_four_stay_verbatim() {
        let conv = vec![
            msg(Role::User, "Do you have Berserk?"),
            msg(Role::Assistant, "Yes, all 42 volumes."),
            msg(Role::User, "And Vagabond?"),
            msg(Role::Assistant, "Yes, volumes 1-37."),
            msg(Role::User, "Which is shorter?"),
            msg(Role::Assistant, "Vagabond."),
        ];
        let (text, _) = compress_conversation(&Cl100k, &conv, &[], None, 200, 4);
        assert!(text.starts_with("[Earlier the shopper asked: Do you have Berserk?]"), "{text}");
        assert!(text.contains(
            "user: And Vagabond?\nassistant: Yes, volumes 1-37.\nuser: Which is shorter?\nassistant: Vagabond."
        ));
        let (with_summary, _) = compress_conversation(&Cl100k, &conv, &[], Some("asked about Berserk"), 200, 4);
        assert!(with_summary.starts_with("[Earlier: asked about Berserk]"));
    }

    #[test]
    fn page_context_keeps_only_what_the_intent_needs() {
        let page: Map<String, Value> = serde_json::from_str(
            r#"{"current_asin":"B0AAAAAAA1","store_section":"horror","cart_asins":["B0X","B0Y"],"browsing_history":["B0Z"]}"#,
        )
        .unwrap();
        let (p, _) = compress_page(&Cl100k, &page, &[], Intent::CheckoutHelp, 100);
        assert_eq!(p, "cart_asins=B0X,B0Y");
        let (p, _) = compress_page(&Cl100k, &page, &[("refers_to", "B0Q".into())], Intent::OrderTracking, 100);
        assert_eq!(p, "refers_to=B0Q");
    }

    #[test]
    fn an_over_long_user_message_is_an_error_not_a_cut() {
        let page = Map::new();
        let long = "manga ".repeat(300);
        let c = PromptCompressor::default();
        let err = c.compress(&Cl100k, &input(&[], &[], &page, &long), &PromptBudget::default()).unwrap_err();
        assert!(matches!(err, CompressError::UserMessageTooLong { limit: 100, .. }));
    }

    #[test]
    fn calibration_shrinks_budgets() {
        let b = PromptBudget::default().calibrated(1.25);
        assert_eq!((b.total, b.rag, b.user_message), (1600, 280, 80));
    }

    fn arb_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                Just("manga ".to_owned()),
                Just("進撃の巨人".to_owned()),
                Just("。".to_owned()),
                Just(". ".to_owned()),
                Just("e\u{301}".to_owned()),
                Just("👨‍👩‍👧".to_owned()),
                Just("\n".to_owned()),
                "[a-zA-Z]{1,12}",
                "[ぁ-んァ-ン一-龯]{1,6}",
            ],
            0..120,
        )
        .prop_map(|v| v.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn compression_never_exceeds_the_budget_and_keeps_the_message_and_recent_turns(
            chunks in proptest::collection::vec((arb_text(), 0.0f32..1.0), 0..8),
            turns in proptest::collection::vec(arb_text(), 0..30),
            summary in proptest::option::of(arb_text()),
            user in "[a-zA-Z ]{1,60}",
            total in 200usize..2000,
        ) {
            let chunks: Vec<Passage> = chunks.into_iter().map(|(content, score)| {
                let tokens = (score > 0.5).then(|| Cl100k.count(content.trim()));
                Passage { content, score, tokens }
            }).collect();
            let conv: Vec<ChatMessage> = turns.iter().enumerate()
                .map(|(i, t)| msg(if i % 2 == 0 { Role::User } else { Role::Assistant }, t)).collect();
            let page: Map<String, Value> = serde_json::from_str(r#"{"store_section":"horror","browsing_history":["B0AAAAAAA1"]}"#).unwrap();
            let known: Vec<Option<usize>> = conv.iter().enumerate().map(|(i, m)| (i % 3 == 0).then(|| Cl100k.count(m.text.trim()))).collect();
            let mut inp = input(&chunks, &conv, &page, &user);
            inp.summary = summary.as_deref();
            inp.conversation_tokens = &known;
            let budget = PromptBudget { total, ..PromptBudget::default() };
            let c = PromptCompressor::default();
            let Ok(out) = c.compress(&Cl100k, &inp, &budget) else { return Ok(()) };
            let exact = Cl100k.count(&out.system) + Cl100k.count(&out.user);
            prop_assert!(exact <= out.total_tokens, "exact {} > accounted {}", exact, out.total_tokens);
            prop_assert!(out.total_tokens <= budget.total.max(out.sections.system + out.sections.user_message + out.sections.conversation + out.sections.page + out.sections.framing));
            prop_assert!(out.total_tokens <= 2000);
            prop_assert!(out.user.contains(user.trim()), "the user message is intact");
            if let Some(last) = conv.last() {
                let line = format!("{}{}", role_prefix(last.role), last.text.trim());
                if Cl100k.count(&line) < budget.conversation && !last.text.trim().is_empty() {
                    prop_assert!(out.user.contains(&line), "the newest message is verbatim");
                }
            }
            let again = c.compress(&Cl100k, &inp, &budget).unwrap();
            prop_assert_eq!(&again, &out, "deterministic");
        }
    }
}
