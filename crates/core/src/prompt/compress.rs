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
//! - The user message is never cut. Its limit is checked at the parse ([`MAX_MESSAGE_TOKENS`], counted so
//!   that no counter here finds an admitted message longer); the budget's `user_message` is the share the
//!   prompt reserves for it, and a longer message takes the difference from the RAG section. Only a message
//!   that cannot fit the total at all (which a budget that passes [`PromptBudget::check`] never meets for an
//!   admitted message) is an error.
//!
//! The total is guaranteed by construction: every section is counted as cut, joins are charged a slack
//! token each, and the framing is counted once. What an uncompressed prompt would have cost
//! ([`raw_tokens`]) is only needed for the `compression_ratio` metric, so the turn computes it after the
//! request has been sent, off the path to the first token.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::cache::Passage;
use crate::intent::Intent;
use crate::ports::ChatMessage;
use crate::protocol::{MAX_MESSAGE_TOKENS, PageContext, PageField};
use crate::tokenizer::Tokenizer;

mod sections;

pub use sections::{CountMemo, NEAR_DUPLICATE, truncate_at_boundary};
use sections::{compress_conversation, compress_page, compress_rag};

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
    /// Reserved for the shopper's message; a longer one (up to [`MAX_MESSAGE_TOKENS`]) takes the rest from
    /// `rag`.
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

/// Tokens set aside for the tags and joins around the sections when checking a budget (the compressor
/// counts them exactly; four sections cost well under this).
pub const FRAMING_ALLOWANCE: usize = 64;

/// Why a budget cannot hold every message the parse admits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the system, conversation and page budgets ({fixed} tokens) leave no room for a {MAX_MESSAGE_TOKENS}-token message within the total of {total} at the strongest calibration (x2)"
)]
pub struct BudgetError {
    pub fixed: usize,
    pub total: usize,
}

impl PromptBudget {
    /// Whether every message the parse admits fits this budget whatever the calibration: at the strongest
    /// (x2) every section and the total halve, and the message (whose limit is a protocol constant) does
    /// not, so `(system + conversation + page) / 2 + MAX_MESSAGE_TOKENS + FRAMING_ALLOWANCE <= total / 2`.
    /// Checked once at cold start; the defaults leave 386 tokens to spare.
    pub fn check(&self) -> Result<(), BudgetError> {
        let fixed = self.system + self.conversation + self.page;
        if fixed / 2 + MAX_MESSAGE_TOKENS + FRAMING_ALLOWANCE <= self.total / 2 {
            Ok(())
        } else {
            Err(BudgetError { fixed, total: self.total })
        }
    }

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
    pub page_context: &'a PageContext,
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
    /// The message alone (with the system prompt and its tags) is over the total: unreachable for a
    /// message admitted at the parse under a budget that passes [`PromptBudget::check`].
    #[error("the message is about {tokens} tokens; the prompt's total leaves it {limit}")]
    UserMessageTooLong { tokens: usize, limit: usize },
}

/// Page-context fields each intent needs (the design's table). `General` keeps all.
pub fn page_fields(intent: Intent) -> Option<&'static [PageField]> {
    use PageField::{BrowsingHistory, CartAsins, CurrentAsin, StoreSection};
    Some(match intent {
        Intent::ProductQuestion => &[CurrentAsin, StoreSection],
        Intent::Recommendation => &[BrowsingHistory, StoreSection],
        Intent::ProductDiscovery => &[StoreSection, BrowsingHistory],
        Intent::OrderTracking => &[],
        Intent::ReturnRequest => &[CurrentAsin],
        Intent::Faq => &[StoreSection],
        Intent::Promotion => &[StoreSection, CartAsins],
        Intent::CheckoutHelp => &[CartAsins],
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
    /// Counts of passages that arrived without one.
    pub counts: CountMemo,
}

impl PromptCompressor {
    pub fn new(budget: PromptBudget) -> Self {
        Self { budget, system_cache: Mutex::new(HashMap::new()), counts: CountMemo::default() }
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
        // The shopper's words are data: inert, so they cannot close `<question>` or open another section.
        let question = crate::safety::inert(input.user_message.trim());
        let question = question.as_ref();
        let user_tokens = tok.count(question);
        let (system, system_tokens) = self.system(tok, input.system_prompt, input.intent, budget.system);
        let room = budget
            .total
            .saturating_sub(system_tokens + tok.count_fixed(QUESTION.open) + tok.count_fixed(QUESTION.close) + 4);
        if user_tokens > room {
            return Err(CompressError::UserMessageTooLong { tokens: user_tokens, limit: room });
        }
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
        let framed = |t: Tag| tok.count_fixed(t.open) + tok.count_fixed(t.close) + 2 + 2;
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
        // A message longer than its reserved share takes the difference from the retrieved context.
        let over = user_tokens.saturating_sub(budget.user_message);
        let rag_budget =
            (budget.rag + unused).saturating_sub(over).min(budget.total.saturating_sub(fixed + ctx_framing));
        let (rag, rag_tokens) = compress_rag(tok, input.rag_chunks, rag_budget, budget.min_chunk, &self.counts);
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
        + tok.count(&input.page_context.to_json())
        + tok.count(input.user_message)
}

#[cfg(test)]
mod tests;
