//! Token counting for prompt budgets.
//!
//! Claude's tokenizer is not public, so counts are estimates: the OpenAI `cl100k_base` BPE (the
//! `bpe-openai` tokenizer, nothing downloaded) gives the shape, and a per-model [`Calibration`] learned
//! online from the `inputTokens` Bedrock reports corrects the scale.
//!
//! The binary carries the vocabulary, not the BPE: `bpe-openai` embeds its automata already built, 15 MB of
//! serialized tables that were half the chat binary and kept its package over 10 MB zipped. `build.rs` packs
//! the 100,256 tokens instead (0.45 MB deflated), and the first use rebuilds the same BPE from them (same
//! tokens, same hash factor, same pre-tokenizer: the counts are identical, a test compares them with
//! `bpe-openai`'s own). Rebuilding takes about half a second of one core (the README's "Package size and cold
//! start" has the figures), which must not land on a shopper's request, so [`Estimator`] starts it on a
//! background thread at cold start and answers with a cheap character-class estimate until it is ready.
//!
//! Truncation never splits a UTF-8 character or a grapheme cluster: it cuts on the BPE pre-tokenizer's
//! piece boundaries, then steps back to the nearest grapheme boundary.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use unicode_segmentation::GraphemeCursor;

/// Counts and truncates text in tokens.
pub trait Tokenizer: Send + Sync {
    fn count(&self, text: &str) -> usize;
    /// `Some(count)` when `text` is at most `limit` tokens, else `None`; may stop counting early.
    fn count_up_to(&self, text: &str, limit: usize) -> Option<usize> {
        let n = self.count(text);
        (n <= limit).then_some(n)
    }
    /// The longest prefix of `text` of at most `max` tokens, ending on a grapheme boundary.
    fn truncate<'a>(&self, text: &'a str, max: usize) -> &'a str;
    /// The count of a fixed piece of markup (a tag, a separator, a role prefix): the same on every call, so
    /// tokenizers may remember it.
    fn count_fixed(&self, text: &'static str) -> usize {
        self.count(text)
    }
}

/// Counts of fixed markup under the BPE, remembered by address (the strings are `'static`).
fn fixed_count(text: &'static str) -> usize {
    static COUNTS: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());
    let key = (text.as_ptr() as usize, text.len());
    if let Ok(v) = COUNTS.lock()
        && let Some(&(_, _, n)) = v.iter().find(|(p, l, _)| (*p, *l) == key)
    {
        return n;
    }
    let n = Cl100k.count(text);
    if let Ok(mut v) = COUNTS.lock()
        && v.len() < 64
    {
        v.push((key.0, key.1, n));
    }
    n
}

/// Steps `idx` back to the nearest grapheme-cluster boundary of `text`.
pub fn grapheme_floor(text: &str, mut idx: usize) -> usize {
    idx = idx.min(text.len());
    while !text.is_char_boundary(idx) {
        idx -= 1;
    }
    let mut cursor = GraphemeCursor::new(idx, text.len(), true);
    match cursor.is_boundary(text, 0) {
        Ok(true) => idx,
        _ => cursor.prev_boundary(text, 0).ok().flatten().unwrap_or(0),
    }
}

/// The `cl100k_base` vocabulary packed by `build.rs`: each token as a length byte and its bytes, deflated.
const PACKED_CL100K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_tokens.deflate"));
/// The hash factor `bpe-openai` builds `cl100k_base` with (its token hash table is collision-free with it).
const CL100K_HASH_FACTOR: u64 = 17_846_336_922_010_275_747;
/// `cl100k_base`'s pre-tokenizer, as tiktoken defines it, with its negative look-ahead `\s+(?!\S)` written
/// as a one-character look-ahead pattern (`true`: its last character is not part of the match), which is the
/// form `bpe_openai::Tokenizer::new_lookahead` takes; `\s+$` covers the end of the text.
const CL100K_PATTERNS: [(&str, bool); 3] = [
    (
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+$",
        false,
    ),
    ("\\s+\\s", true),
    ("\\s+", false),
];

/// The BPE, rebuilt once from the packed vocabulary; `None` only if the packed data were corrupt (then the
/// counts fall back to [`Heuristic`] and the error is logged once).
static CL100K: LazyLock<Option<bpe_openai::Tokenizer>> = LazyLock::new(|| {
    let started = std::time::Instant::now();
    let built = build_cl100k();
    match &built {
        Ok(_) => tracing::info!(ready_ms = started.elapsed().as_secs_f64() * 1000.0, "tokenizer ready"),
        Err(why) => tracing::error!(why, "the cl100k vocabulary could not be rebuilt; counting with the estimate"),
    }
    built.ok()
});

fn build_cl100k() -> Result<bpe_openai::Tokenizer, &'static str> {
    let raw =
        miniz_oxide::inflate::decompress_to_vec(PACKED_CL100K).map_err(|_| "the packed vocabulary does not inflate")?;
    let mut tokens = Vec::with_capacity(100_256);
    let mut rest = raw.as_slice();
    while let Some((&len, tail)) = rest.split_first() {
        let (token, tail) = tail.split_at_checked(usize::from(len)).ok_or("the packed vocabulary is truncated")?;
        tokens.push(token.to_vec());
        rest = tail;
    }
    // `from_dictionary` asserts on inputs it cannot index; the input is fixed at build time and tested, but a
    // panic here would take the warm-up thread and leave the estimate in place, which is what we want anyway.
    let bpe = std::panic::catch_unwind(|| {
        bpe_openai::byte_pair_encoding::BytePairEncoding::from_dictionary(tokens, Some(CL100K_HASH_FACTOR))
    })
    .map_err(|_| "the vocabulary does not build a BPE")?;
    bpe_openai::Tokenizer::new_lookahead(bpe, &CL100K_PATTERNS, false).map_err(|_| "the pre-tokenizer does not compile")
}

/// The `cl100k_base` BPE. Its first use builds it (about half a second; [`Estimator`] does that off the
/// request path); should that fail, it counts like [`Heuristic`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Cl100k;

impl Cl100k {
    fn bpe() -> Option<&'static bpe_openai::Tokenizer> {
        CL100K.as_ref()
    }

    /// Builds the BPE now if it is not built yet; whether it is usable.
    pub fn load() -> bool {
        Self::bpe().is_some()
    }
}

impl Tokenizer for Cl100k {
    fn count(&self, text: &str) -> usize {
        match Self::bpe() {
            Some(bpe) => bpe.count(text),
            None => Heuristic.count(text),
        }
    }

    fn count_up_to(&self, text: &str, limit: usize) -> Option<usize> {
        let Some(bpe) = Self::bpe() else { return Heuristic.count_up_to(text, limit) };
        let mut used = 0;
        for piece in bpe.split(text) {
            used += bpe.bpe.count(piece.as_bytes());
            if used > limit {
                return None;
            }
        }
        Some(used)
    }

    fn count_fixed(&self, text: &'static str) -> usize {
        fixed_count(text)
    }

    fn truncate<'a>(&self, text: &'a str, max: usize) -> &'a str {
        let Some(bpe) = Self::bpe() else { return Heuristic.truncate(text, max) };
        let mut used = 0;
        let mut end = 0;
        for piece in bpe.split(text) {
            let n = bpe.bpe.count(piece.as_bytes());
            if used + n > max {
                break;
            }
            used += n;
            end += piece.len();
        }
        &text[..grapheme_floor(text, end)]
    }
}

/// A BPE-free estimate: one token per 4 ASCII bytes (rounded up per word), one per non-ASCII character.
/// Within ~15% of cl100k on English and Japanese; used only until the BPE is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Heuristic;

fn heuristic_char_cost(c: char) -> f32 {
    if c.is_ascii() { 0.25 } else { 1.0 }
}

impl Tokenizer for Heuristic {
    fn count(&self, text: &str) -> usize {
        text.chars().map(heuristic_char_cost).sum::<f32>().ceil() as usize
    }

    fn truncate<'a>(&self, text: &'a str, max: usize) -> &'a str {
        let mut used = 0.0f32;
        let mut end = 0;
        for (i, c) in text.char_indices() {
            used += heuristic_char_cost(c);
            if used.ceil() as usize > max {
                break;
            }
            end = i + c.len_utf8();
        }
        &text[..grapheme_floor(text, end)]
    }
}

/// The BPE once it is loaded, the heuristic before.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    ready: Arc<AtomicBool>,
}

impl Estimator {
    /// Starts building the BPE on a background thread and returns at once; the counts are exact from when it
    /// is ready (never, should it fail to build: the estimate stays).
    pub fn warm_in_background() -> Self {
        let est = Self::default();
        let ready = est.ready.clone();
        let spawned = std::thread::Builder::new().name("bpe-warmup".into()).spawn(move || {
            ready.store(Cl100k::load(), Ordering::Release);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the tokenizer warm-up thread; using the estimate");
        }
        est
    }

    /// Builds the BPE now (benchmarks, tests).
    pub fn loaded() -> Self {
        Self { ready: Arc::new(AtomicBool::new(Cl100k::load())) }
    }

    pub fn is_exact(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }
}

impl Tokenizer for Estimator {
    fn count(&self, text: &str) -> usize {
        if self.is_exact() { Cl100k.count(text) } else { Heuristic.count(text) }
    }

    fn count_up_to(&self, text: &str, limit: usize) -> Option<usize> {
        if self.is_exact() { Cl100k.count_up_to(text, limit) } else { Heuristic.count_up_to(text, limit) }
    }

    fn truncate<'a>(&self, text: &'a str, max: usize) -> &'a str {
        if self.is_exact() { Cl100k.truncate(text, max) } else { Heuristic.truncate(text, max) }
    }

    fn count_fixed(&self, text: &'static str) -> usize {
        if self.is_exact() { fixed_count(text) } else { Heuristic.count(text) }
    }
}

/// `Some(bound)` when `text` costs at most `limit` tokens under every counter here (the BPE and the warm-up
/// heuristic), `bound` being at least what either counts; `None` when it may cost more. For admitting a
/// message at the parse, so that the compressor, whichever counter it has at hand then, never finds it
/// longer. A cl100k token is at least one byte and the heuristic counts at most one per byte, so a text of
/// at most `limit` bytes is admitted without counting; a longer one is counted with the BPE (which waits
/// for the tables if the warm-up thread is still building them: once per container, and only for a
/// message longer than `limit` bytes in its first tens of milliseconds), stopping at the limit.
pub fn count_at_most(text: &str, limit: usize) -> Option<usize> {
    if text.len() <= limit {
        return Some(text.len());
    }
    let heuristic = Heuristic.count(text);
    if heuristic > limit {
        return None;
    }
    Cl100k.count_up_to(text, limit).map(|bpe| bpe.max(heuristic))
}

/// Per-model ratio of the tokens Bedrock bills to the tokens we estimated for the same request, learned
/// as an exponentially weighted average (weight 0.2 per observation, clamped to 0.5..=2.0).
#[derive(Debug, Default)]
pub struct Calibration {
    factors: Mutex<HashMap<String, f32>>,
}

impl Calibration {
    const WEIGHT: f32 = 0.2;

    /// The current factor for `model` (1.0 until something was observed).
    pub fn factor(&self, model: &str) -> f32 {
        self.factors.lock().ok().and_then(|m| m.get(model).copied()).unwrap_or(1.0)
    }

    /// Records that a request we estimated at `estimated` tokens was billed `reported` input tokens.
    pub fn observe(&self, model: &str, estimated: usize, reported: u32) {
        if estimated == 0 || reported == 0 {
            return;
        }
        let ratio = (reported as f32 / estimated as f32).clamp(0.5, 2.0);
        if let Ok(mut m) = self.factors.lock() {
            let f = m.entry(model.to_owned()).or_insert(ratio);
            *f += Self::WEIGHT * (ratio - *f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bpe_counts_like_cl100k() {
        assert_eq!(Cl100k.count("Hello, world!"), 4);
        assert_eq!(Cl100k.count(""), 0);
    }

    #[test]
    fn truncation_keeps_whole_graphemes_and_stays_within_the_limit() {
        let text = "進撃の巨人は面白い。👨‍👩‍👧 family e\u{301}dition";
        for max in 0..30 {
            for t in [&Cl100k as &dyn Tokenizer, &Heuristic] {
                let cut = t.truncate(text, max);
                assert!(t.count(cut) <= max, "{cut:?} over {max}");
                assert!(text.starts_with(cut));
                assert_eq!(grapheme_floor(text, cut.len()), cut.len(), "{cut:?} splits a grapheme");
            }
        }
        assert_eq!(Cl100k.truncate(text, 1000), text);
    }

    #[test]
    fn the_heuristic_is_near_the_bpe_on_typical_text() {
        for text in [
            "Could you recommend a horror manga similar to Uzumaki with fewer volumes?",
            "おすすめのファンタジー漫画はありますか?全巻セットだと嬉しいです。",
        ] {
            let (h, b) = (Heuristic.count(text) as f32, Cl100k.count(text) as f32);
            assert!((h / b - 1.0).abs() < 0.5, "heuristic {h} vs bpe {b} for {text}");
        }
    }

    #[test]
    fn counting_up_to_a_limit_agrees_with_counting() {
        let text = "Spiral Chronicle (渦巻く年代記) is a horror series in 12 volumes. ".repeat(5);
        let n = Cl100k.count(&text);
        assert_eq!(Cl100k.count_up_to(&text, n), Some(n));
        assert_eq!(Cl100k.count_up_to(&text, n - 1), None);
        assert_eq!(Heuristic.count_up_to(&text, 10), None);
    }

    /// The rebuilt BPE against `bpe-openai`'s own `cl100k_base` (its embedded automata: only this test
    /// binary carries them), on the store's kinds of text and on arbitrary strings.
    #[test]
    fn the_rebuilt_bpe_counts_and_splits_exactly_like_bpe_openai() {
        let reference = bpe_openai::cl100k_base();
        let ours = Cl100k::bpe().expect("the packed vocabulary builds");
        assert_eq!(ours.bpe.num_tokens(), reference.bpe.num_tokens());
        let fixed = [
            "Hello, world!",
            "進撃の巨人は面白い。👨‍👩‍👧 family e\u{301}dition",
            "  leading and trailing spaces  \n\n\ttabs\r\nand CRLF ",
            "I'm sure they'll've read it; it's 1,234,567 yen (税込) — ¥1,980!",
            "おすすめのファンタジー漫画はありますか?全巻セットだと嬉しいです。",
            "https://example.com/manga?asin=B0C1234567&ref=chat#top",
        ];
        let mut rng = fastrand::Rng::with_seed(27);
        let alphabet: Vec<char> = "ab Z9 \n\t'.,!?進撃巨人のはを、。ー🙂é\u{301}".chars().collect();
        let random = (0..300).map(|_| {
            let len = rng.usize(0..60);
            (0..len).map(|_| alphabet[rng.usize(0..alphabet.len())]).collect::<String>()
        });
        for text in fixed.iter().map(|t| (*t).to_owned()).chain(random) {
            assert_eq!(ours.count(text.as_str()), reference.count(text.as_str()), "{text:?}");
            let a: Vec<&str> = ours.split(&text).collect();
            let b: Vec<&str> = reference.split(&text).collect();
            assert_eq!(a, b, "{text:?}");
        }
    }

    #[test]
    fn the_estimator_turns_exact_once_the_background_build_is_done() {
        let est = Estimator::warm_in_background();
        for _ in 0..600 {
            if est.is_exact() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(est.is_exact());
        assert_eq!(est.count("Hello, world!"), 4);
    }

    #[test]
    fn a_bound_at_most_the_limit_is_never_below_either_count() {
        let texts = [
            "Could you recommend a horror manga similar to Uzumaki with fewer volumes?".repeat(4),
            "おすすめのファンタジー漫画はありますか?全巻セットだと嬉しいです。".repeat(6),
            "aaaa aaaa aaaa ".repeat(30),
            "x9$Qz".repeat(40),
            "龘靐齉".repeat(50),
        ];
        for text in &texts {
            for limit in [10, 50, 100, 300, 1000] {
                let (bpe, h) = (Cl100k.count(text), Heuristic.count(text));
                match count_at_most(text, limit) {
                    Some(bound) => assert!(bound >= bpe && bound >= h && bound <= limit),
                    None => assert!(bpe.max(h) > limit, "{text}: bpe {bpe} heuristic {h} limit {limit}"),
                }
            }
        }
    }

    #[test]
    fn calibration_moves_toward_what_bedrock_reports() {
        let c = Calibration::default();
        assert_eq!(c.factor("m"), 1.0);
        for _ in 0..20 {
            c.observe("m", 100, 130);
        }
        assert!((c.factor("m") - 1.3).abs() < 0.01);
        c.observe("m", 100, 100_000);
        assert!(c.factor("m") <= 2.0);
        assert_eq!(c.factor("other"), 1.0);
    }
}
