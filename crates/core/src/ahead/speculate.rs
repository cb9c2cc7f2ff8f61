//! Typing-time speculation: the context is gathered while the shopper types, so it is ready when the
//! message is sent.
//!
//! The page sends `{"action":"typing","text":"<typed so far>"}` after a short pause in typing. The chat
//! function (off any turn's path: its own invocation, answered with nothing) classifies the partial text,
//! runs the memory, retrieval and product-service legs for it, and keeps what they returned in the cache
//! as one [`SpeculationEntry`] under the session, with what it was built from ([`Basis`]: normalized text,
//! intent, entities, the page's products). At send, one cache read ([`lookup`], under the cache leg's
//! deadline) fetches the entry and [`decide`] says whether the final message would have needed the same
//! context; if so the turn takes its legs from the entry ([`crate::gather::Assembler::assemble_reusing`]).
//!
//! | entry | key | TTL | value |
//! |---|---|---|---|
//! | speculated context | `spec:{session}` | `SpeculationConfig::ttl` (60 s) | [`SpeculationEntry`] |
//! | memory epoch | `epoch:{session}` | [`SpeculationConfig::epoch_ttl`] (10 min) | a marker, new for every stored turn |
//!
//! The entry also keeps the session's memory (recent turns and summary), so a turn it serves need not
//! read the store either; but a turn stored after the speculation read memory makes that copy stale.
//! The memory epoch says so without a store read: every stored turn (and summary) writes a new marker
//! under `epoch:{session}` ([`mark_stored`]) before the connection's next message is admitted; a
//! speculation reads the marker *before* it reads memory and keeps it with the copy; the turn reads the
//! marker in the same cache round trip as the entry, and takes the copy only when the two are equal.
//! Any turn stored after the speculation's read changed the marker, so a stale copy never matches. The
//! marker outlives any entry ([`SpeculationConfig::epoch_ttl`] is many entry lifetimes), so "absent
//! then, absent now" cannot hide a turn either, unless the cache evicts a key minutes young.
//!
//! A connection's partials are ordered by a generation counter in the store (`TYPEGEN#<connection>`, one
//! atomic increment per typing frame): a speculation whose generation is no longer the newest when it has
//! finished is dropped unwritten, so a newer partial supersedes an older one. Correctness never rests on
//! the generation: an entry is reused only when [`decide`] finds it fits the final message.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::admit::session::Memory;
use crate::cache::Passage;
use crate::cache::{CacheKey, CounterKey};
use crate::deadline::within;
use crate::gather::recall::{EpochValue, Recall};
use crate::gather::{Gathered, Reusable, focus_products};
use crate::ids::{Asin, ConnectionId, SessionId, UserId};
use crate::intent::{self, Entities, Intent, Ordinal};
use crate::ports::Counter;
use crate::ports::sources::ContextSources;
use crate::protocol::PageContext;
use crate::safety::InputVerdict;

/// Settings of typing-time speculation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpeculationConfig {
    /// `TYPING_SPECULATION=off` turns it off: typing frames are ignored and no turn reads an entry.
    pub enabled: bool,
    /// How long an entry lives, and the oldest entry a turn reuses.
    pub ttl: Duration,
    /// Of an extended message, the least word overlap with the partial (Jaccard over words, and over
    /// character bigrams for Japanese) for its retrieval to stand for the final text's.
    pub min_similarity: f64,
    /// Partials shorter than this (characters, normalized) are not worth a speculation.
    pub min_chars: usize,
}

impl Default for SpeculationConfig {
    fn default() -> Self {
        let ttl = CacheKey::Speculation(SessionId::example()).default_ttl().unwrap_or(Duration::from_secs(60));
        Self { enabled: true, ttl, min_similarity: 0.7, min_chars: 4 }
    }
}

impl SpeculationConfig {
    /// How long a memory epoch marker lives: ten entry lifetimes, at least ten minutes, so a marker
    /// written after a speculation read the epoch is still there when any turn reads that entry.
    pub fn epoch_ttl(&self) -> Duration {
        (self.ttl * 10).max(Duration::from_secs(600))
    }
}

/// The text as compared: trimmed, lower case, whitespace collapsed, trailing punctuation dropped
/// ("Any horror manga?" and "any horror manga" need the same context).
pub fn normalize(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().collect();
    let joined = words.join(" ");
    let end = |c: char| c.is_whitespace() || matches!(c, '?' | '!' | '.' | ',' | '？' | '！' | '。' | '、' | '…');
    joined.trim_end_matches(end).to_owned()
}

/// Words (ASCII) and character bigrams (other scripts, which do not separate words by spaces).
fn terms(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut word = String::new();
    let mut run: Vec<char> = Vec::new();
    let flush_run = |run: &mut Vec<char>, out: &mut std::collections::BTreeSet<String>| {
        match run.len() {
            0 => {}
            1 => {
                out.insert(run[0].to_string());
            }
            _ => out.extend(run.windows(2).map(|w| w.iter().collect::<String>())),
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            flush_run(&mut run, &mut out);
            word.push(c.to_ascii_lowercase());
        } else {
            if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
            if c.is_alphanumeric() {
                run.push(c);
            } else {
                flush_run(&mut run, &mut out);
            }
        }
    }
    if !word.is_empty() {
        out.insert(word);
    }
    flush_run(&mut run, &mut out);
    out
}

/// How close two queries are, 0..=1: the Jaccard index of their [`terms`].
pub fn similarity(a: &str, b: &str) -> f64 {
    let (a, b) = (terms(a), terms(b));
    let union = a.union(&b).count();
    if union == 0 {
        return 1.0;
    }
    a.intersection(&b).count() as f64 / union as f64
}

/// Whether `full` is `partial` typed further, from a word boundary: "show me horror" extends to "show me
/// horror manga", "show me horr" does not (its retrieval searched for a word that is not there).
/// Japanese has no spaces: every prefix is a boundary.
fn extends(full: &str, partial: &str) -> bool {
    let Some(rest) = full.strip_prefix(partial) else { return false };
    let inside_word = |c: char| c.is_ascii_alphanumeric();
    rest.is_empty() || !partial.chars().last().is_some_and(inside_word) || !rest.chars().next().is_some_and(inside_word)
}

/// What a context was built from: two texts with the same basis (or a partial and the text extending it
/// with the same intent and entities) need the same context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Basis {
    /// [`normalize`]d.
    pub text: String,
    pub intent: Intent,
    pub asins: Vec<Asin>,
    pub order_ids: Vec<String>,
    /// The ordinal ("the first one"), unresolved.
    pub ordinal: Option<Ordinal>,
    /// The products the page context points at (current product, browsing history).
    pub page: Vec<Asin>,
}

impl Basis {
    /// Classifies `text` and reads its entities the way the turn does.
    pub fn of(text: &str, page: &PageContext) -> Self {
        let entities = intent::extract(text, &[]);
        let intent = intent::classify(text, &entities);
        Self {
            text: normalize(text),
            intent,
            asins: entities.asins,
            order_ids: entities.order_ids,
            ordinal: entities.ordinal,
            page: focus_products(&Entities::default(), page, 8),
        }
    }

    fn same_entities(&self, other: &Self) -> bool {
        self.asins == other.asins && self.order_ids == other.order_ids && self.ordinal == other.ordinal
    }
}

/// A speculated context, cached under the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeculationEntry {
    pub session: SessionId,
    /// The connection's typing generation it was built for.
    pub generation: i64,
    /// Unix ms.
    pub built_at_ms: u64,
    pub basis: Basis,
    /// The product its ordinal resolved to against memory at typing time.
    pub resolved: Option<Asin>,
    /// What the retrieval leg returned (`None`: it did not run, or failed).
    pub retrieved: Option<Vec<Passage>>,
    /// The lookups' values, by cache key (from the cache or the services).
    pub values: Vec<(String, String)>,
    /// Lookup keys their source answered "no such thing" for.
    #[serde(default)]
    pub absent: Vec<String>,
    /// The session's memory as the speculation read it, with the epoch read before it (`None`: the
    /// memory leg or the epoch read failed; the turn reads memory itself).
    #[serde(default)]
    pub memory: Option<MemorySnapshot>,
    /// The input guardrail's verdict on the partial (`None`: no input guardrail, or its check failed).
    #[serde(default)]
    pub input: Option<InputVerdict>,
}

/// A speculation's copy of the session's memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySnapshot {
    /// The session's epoch marker read just before the memory (`None`: no marker then).
    pub epoch: Option<String>,
    pub memory: Memory,
}

/// The key of a session's memory epoch marker.
pub fn epoch_key(session: &SessionId) -> String {
    CacheKey::Epoch(session.clone()).render()
}

/// The copy's memory, when the session's marker now (`current`) is the one read before the copy: no turn
/// has been stored since.
pub fn fresh_memory(snapshot: Option<MemorySnapshot>, current: &Option<String>) -> Option<Memory> {
    snapshot.filter(|s| &s.epoch == current).map(|s| s.memory)
}

/// The session's epoch marker before a speculation reads memory: `Some(marker)` when the read answered
/// (the marker may be absent), `None` when it failed or ran out of time (the memory is then not kept).
pub async fn read_epoch<X: ContextSources>(
    sources: &X,
    deadline: Duration,
    session: &SessionId,
) -> Option<Option<String>> {
    let keys = [epoch_key(session)];
    match within("epoch read", deadline, sources.cache_get(&keys)).await {
        Ok(Ok(mut v)) => Some(v.pop().flatten().map(|t| EpochValue::decode(&t).marker)),
        _ => None,
    }
}

/// After a turn (or summary) of `session` is stored: a new epoch marker, so no speculation's copy of the
/// memory from before counts as current, with the [`Recall`] of the memory as it now is (what the next
/// follow-up resolves against before memory is read: [`crate::gather::recall`]). `marker` must be new for
/// every write (the stored turn's message id and store time, and a random part). A failed write is
/// logged: until the marker changes, a copy from before this turn could serve one turn of the session (at
/// most `ttl` after it was built).
pub async fn mark_stored<X: ContextSources>(
    sources: &X,
    deadline: Duration,
    cfg: &SpeculationConfig,
    session: &SessionId,
    marker: &str,
    recall: Option<Recall>,
) {
    // Written with speculation off too: while `TYPING_SPECULATION` changes, instances of both settings
    // serve one session, and no copy may outlive a turn an instance without speculation stored.
    let key = epoch_key(session);
    let value = EpochValue { marker: format!("{marker}.{:08x}", fastrand::u32(..)), recall }.encode();
    crate::deadline::best_effort("memory epoch renewal", deadline, sources.cache_set(&key, &value, cfg.epoch_ttl()))
        .await;
}

impl SpeculationEntry {
    pub fn key(session: &SessionId) -> String {
        CacheKey::Speculation(session.clone()).render()
    }

    /// The entry a speculation's assembly makes; `epoch` is what [`read_epoch`] returned before it.
    pub fn new(
        session: SessionId,
        generation: i64,
        built_at_ms: u64,
        basis: Basis,
        gathered: &Gathered,
        epoch: Option<Option<String>>,
    ) -> Self {
        let asm = &gathered.context;
        let memory = match epoch {
            Some(epoch) if asm.memory_whole || asm.memory_copy_epoch.as_ref() == Some(&epoch) => {
                Some(MemorySnapshot { epoch, memory: gathered.memory.clone() })
            }
            _ => None,
        };
        Self {
            session,
            generation,
            built_at_ms,
            basis,
            resolved: gathered.entities.resolved.clone(),
            retrieved: asm.retrieved.clone(),
            values: asm.values.iter().map(|(l, v)| (l.key(), v.clone())).collect(),
            absent: asm.absent.iter().map(|l| l.key()).collect(),
            memory,
            input: None,
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The counter that orders a connection's typing frames (under its user's limit counters).
pub fn generation_counter(user: &UserId, conn: &ConnectionId) -> Counter {
    Counter::new(user, CounterKey::TypingGeneration { conn: conn.clone() })
}

/// Why an entry was not reused (the `reason` in logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Miss {
    Absent,
    OtherSession,
    Stale,
    /// The final text is neither the partial nor the partial typed further from a word boundary.
    NotAnExtension,
    ChangedIntent,
    /// Another ASIN, order id or ordinal.
    ChangedEntities,
    /// The shopper is on another product's page.
    ChangedPage,
    /// Extended too far for the partial's retrieval to stand for it.
    TooDifferent,
}

/// Whether a speculation fits the final message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Same normalized text, same page.
    Equal,
    /// The final text extends the partial, with the same intent, entities and page, and a close query.
    Extended,
    Miss(Miss),
}

/// The reuse decision: may the turn of `session` sending a message of basis `fin` at `now_ms` take its
/// context from `entry`?
pub fn decide(
    entry: Option<&SpeculationEntry>,
    session: &SessionId,
    now_ms: u64,
    fin: &Basis,
    cfg: &SpeculationConfig,
) -> Reuse {
    let Some(e) = entry else { return Reuse::Miss(Miss::Absent) };
    if &e.session != session {
        return Reuse::Miss(Miss::OtherSession);
    }
    let ttl_ms = u64::try_from(cfg.ttl.as_millis()).unwrap_or(u64::MAX);
    if now_ms.saturating_sub(e.built_at_ms) > ttl_ms || e.built_at_ms > now_ms.saturating_add(ttl_ms) {
        return Reuse::Miss(Miss::Stale);
    }
    let b = &e.basis;
    let equal = b.text == fin.text;
    if !equal && !extends(&fin.text, &b.text) {
        return Reuse::Miss(Miss::NotAnExtension);
    }
    if b.intent != fin.intent {
        return Reuse::Miss(Miss::ChangedIntent);
    }
    if !b.same_entities(fin) {
        return Reuse::Miss(Miss::ChangedEntities);
    }
    if b.page != fin.page {
        return Reuse::Miss(Miss::ChangedPage);
    }
    if equal {
        return Reuse::Equal;
    }
    if similarity(&b.text, &fin.text) < cfg.min_similarity {
        return Reuse::Miss(Miss::TooDifferent);
    }
    Reuse::Extended
}

/// The at-send lookup: one cache read of the session's epoch and entry under `deadline` (the cache leg's),
/// and the decision. `None` when the read failed or ran out of time (the turn assembles as without
/// speculation); else at least the epoch marker and its recall, and what of the entry fits. The entry's
/// memory comes along only when still current. With speculation off only the epoch is read.
pub async fn lookup<X: ContextSources>(
    sources: &X,
    deadline: Duration,
    cfg: &SpeculationConfig,
    session: &SessionId,
    fin: Basis,
    now_ms: u64,
) -> Option<Reusable> {
    // Speculation off: the epoch alone (its recall resolves a follow-up before memory arrives).
    let keys =
        if cfg.enabled { vec![epoch_key(session), SpeculationEntry::key(session)] } else { vec![epoch_key(session)] };
    let (entry, epoch) = match within("speculation read", deadline, sources.cache_get(&keys)).await {
        Ok(Ok(v)) => {
            let mut v = v.into_iter();
            let epoch = v.next().flatten().map(|t| EpochValue::decode(&t));
            (v.next().flatten().and_then(|t| SpeculationEntry::decode(&t)), Some(epoch))
        }
        Ok(Err(e)) => {
            tracing::debug!(code = e.code(), "speculation read failed");
            (None, None)
        }
        Err(_) => (None, None),
    };
    let recall = epoch.as_ref().and_then(|e| e.as_ref()?.recall.clone());
    let epoch = epoch.map(|e| e.map(|e| e.marker));
    let reuse = decide(entry.as_ref(), session, now_ms, &fin, cfg);
    tracing::debug!(?reuse, "typing speculation");
    // The marker read is kept whatever fits: a typed-ahead answer is matched against it.
    let nothing = Reusable { epoch: epoch.clone(), recall, ..Reusable::default() };
    let Some(e) = entry else { return epoch.is_some().then_some(nothing) };
    let memory = fresh_memory(e.memory, epoch.as_ref().unwrap_or(&None));
    match reuse {
        Reuse::Equal | Reuse::Extended => {
            let (retrieved, values, resolved, absent, input) = (e.retrieved, e.values, e.resolved, e.absent, e.input);
            Some(Reusable { retrieved, values, resolved, absent, memory, input, ..nothing })
        }
        // The memory does not depend on the text: a current copy serves any message of the session (an
        // ordinal follow-up's lookups wait for it), while everything else is assembled anew.
        Reuse::Miss(
            Miss::NotAnExtension | Miss::ChangedIntent | Miss::ChangedEntities | Miss::ChangedPage | Miss::TooDifferent,
        ) => Some(Reusable { memory, ..nothing }),
        Reuse::Miss(Miss::Absent | Miss::OtherSession | Miss::Stale) => Some(nothing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn session(s: &str) -> SessionId {
        SessionId::parse(s).unwrap()
    }

    fn page(v: serde_json::Value) -> PageContext {
        PageContext::parse(v.as_object().cloned().unwrap_or_default()).unwrap()
    }

    const NOW: u64 = 1_800_000_000_000;

    fn entry(partial: &str, pc: Value, built_at_ms: u64) -> SpeculationEntry {
        SpeculationEntry {
            session: session("s-1"),
            generation: 1,
            built_at_ms,
            basis: Basis::of(partial, &page(pc)),
            resolved: None,
            retrieved: Some(Vec::new()),
            values: Vec::new(),
            absent: Vec::new(),
            memory: None,
            input: None,
        }
    }

    /// The decision for a partial typed on one page and a final message sent on another (or the same).
    fn case(partial: &str, final_text: &str, pc: Value, final_pc: Value) -> Reuse {
        let e = entry(partial, pc, NOW - 2_000);
        decide(Some(&e), &session("s-1"), NOW, &Basis::of(final_text, &page(final_pc)), &SpeculationConfig::default())
    }

    #[test]
    fn the_reuse_decision_follows_its_table_in_english_and_japanese() {
        use Miss::*;
        use Reuse::{Equal, Extended};
        let miss = Reuse::Miss;
        let none = Value::Null;
        let on = |a: &str| serde_json::json!({"current_asin": a});
        let table: &[(&str, &str, Value, Value, Reuse)] = &[
            // Equal text, modulo case, spaces and final punctuation.
            ("Any horror manga like Uzumaki", "any horror manga  like uzumaki?", none.clone(), none.clone(), Equal),
            ("おすすめのホラー漫画は", "おすすめのホラー漫画は？", none.clone(), none.clone(), Equal),
            // Extended, same intent and entities, close enough.
            (
                "can you recommend horror manga like uzumaki",
                "can you recommend horror manga like uzumaki please",
                none.clone(),
                none.clone(),
                Extended,
            ),
            (
                "おすすめのホラー漫画を教えて",
                "おすすめのホラー漫画を教えてください",
                none.clone(),
                none.clone(),
                Extended,
            ),
            // Extended too far: the partial's search does not stand for it.
            (
                "recommend some manga",
                "recommend some manga about cooking for teenagers",
                none.clone(),
                none.clone(),
                miss(TooDifferent),
            ),
            // Typed mid-word: the partial searched for a word that is not there.
            ("show me horr", "show me horror", none.clone(), none.clone(), miss(NotAnExtension)),
            // Edited after the last partial.
            ("recommend horror manga", "recommend romance manga", none.clone(), none.clone(), miss(NotAnExtension)),
            // Changed intent.
            ("can i return", "can i return manga? where is my order", none.clone(), none.clone(), miss(ChangedIntent)),
            ("おすすめの漫画", "おすすめの漫画の返品はできますか", none.clone(), none.clone(), miss(ChangedIntent)),
            // Changed ordinal or ASIN.
            (
                "tell me more about the",
                "tell me more about the first one",
                none.clone(),
                none.clone(),
                miss(ChangedEntities),
            ),
            (
                "Is B0UZUMAKI1 in stock",
                "Is B0UZUMAKI1 in stock or B0CHAINSAW",
                none.clone(),
                none.clone(),
                miss(ChangedEntities),
            ),
            ("詳しく教えて", "詳しく教えて 2つ目", none.clone(), none.clone(), miss(ChangedEntities)),
            // Same text on another product's page.
            ("is it in stock", "is it in stock", on("B0UZUMAKI1"), on("B0CHAINSAW"), miss(ChangedPage)),
            ("在庫はありますか", "在庫はありますか", on("B0UZUMAKI1"), on("B0UZUMAKI1"), Equal),
        ];
        for (partial, fin, pc, fpc, want) in table {
            assert_eq!(case(partial, fin, pc.clone(), fpc.clone()), *want, "{partial:?} -> {fin:?}");
        }
    }

    #[test]
    fn a_stale_entry_another_sessions_entry_and_no_entry_are_never_reused() {
        let cfg = SpeculationConfig::default();
        let fin = Basis::of("any horror manga", &PageContext::default());
        let old = entry("any horror manga", Value::Null, NOW - 61_000);
        assert_eq!(decide(Some(&old), &session("s-1"), NOW, &fin, &cfg), Reuse::Miss(Miss::Stale));
        let fresh = entry("any horror manga", Value::Null, NOW - 1_000);
        assert_eq!(decide(Some(&fresh), &session("s-2"), NOW, &fin, &cfg), Reuse::Miss(Miss::OtherSession));
        assert_eq!(decide(None, &session("s-1"), NOW, &fin, &cfg), Reuse::Miss(Miss::Absent));
        assert_eq!(decide(Some(&fresh), &session("s-1"), NOW, &fin, &cfg), Reuse::Equal);
    }

    #[test]
    fn similarity_counts_words_and_japanese_bigrams() {
        assert!((similarity("horror manga", "horror manga") - 1.0).abs() < f64::EPSILON);
        assert!((similarity("horror manga", "horror manga please now") - 0.5).abs() < 1e-9);
        assert!(similarity("ホラー漫画", "ホラー漫画を") > 0.7);
        assert!(similarity("ホラー漫画", "恋愛小説") < 0.1);
    }

    #[test]
    fn an_entry_round_trips_through_the_cache() {
        let e = entry("おすすめのホラー漫画", serde_json::json!({"current_asin":"B0UZUMAKI1"}), NOW);
        assert_eq!(SpeculationEntry::decode(&e.encode()), Some(e));
        assert_eq!(SpeculationEntry::key(&session("s-1")), "spec:s-1");
        assert!(SpeculationEntry::decode("{}").is_none());
    }

    fn gathered(whole: bool) -> Gathered {
        let mut g = Gathered {
            intent: Intent::default(),
            entities: Entities::default(),
            memory: Memory::default(),
            context: crate::gather::Assembled::default(),
        };
        g.memory.summary =
            Some(crate::ports::Summary { text: "asked for horror".into(), covers_until_ms: 1, expires_at: 2 });
        g.context.memory_whole = whole;
        g.context.retrieved = Some(vec![Passage { content: "horror".into(), score: 0.5, tokens: None }]);
        g
    }

    #[test]
    fn memory_is_kept_only_when_whole_and_after_an_epoch_read_and_served_only_while_the_epoch_holds() {
        let basis = || Basis::of("any horror manga", &PageContext::default());
        let new = |whole, epoch| SpeculationEntry::new(session("s-1"), 1, NOW, basis(), &gathered(whole), epoch);
        assert!(new(false, Some(None)).memory.is_none(), "a memory missing a part");
        assert!(new(true, None).memory.is_none(), "the epoch read failed");
        let kept = new(true, Some(Some("t.m-1.5".into()))).memory;
        assert!(kept.is_some());
        let table: &[(Option<&str>, Option<&str>, bool)] = &[
            (None, None, true),
            (Some("t.m-1.5"), Some("t.m-1.5"), true),
            (None, Some("t.m-1.5"), false),
            (Some("t.m-1.5"), Some("t.m-2.9"), false),
            (Some("t.m-1.5"), None, false),
        ];
        for &(then, current, fresh) in table {
            let snap = MemorySnapshot { epoch: then.map(Into::into), memory: Memory::default() };
            let got = fresh_memory(Some(snap), &current.map(Into::into));
            assert_eq!(got.is_some(), fresh, "epoch then {then:?}, now {current:?}");
        }
        assert!(fresh_memory(None, &None).is_none());
    }

    #[tokio::test]
    async fn a_turn_stored_after_the_speculation_read_memory_makes_its_copy_stale() {
        // The memory epoch's protocol runs on the cache alone.
        let cache = crate::testkit::ScriptedSources::new();
        let cfg = SpeculationConfig::default();
        let (s, d) = (session("s-1"), Duration::from_millis(50));
        let speculate = async |epoch| {
            let e = SpeculationEntry::new(
                s.clone(),
                1,
                NOW,
                Basis::of("any horror manga", &PageContext::default()),
                &gathered(true),
                epoch,
            );
            cache.cache_set(&SpeculationEntry::key(&s), &e.encode(), cfg.ttl).await.unwrap();
        };
        let send = async || {
            let fin = Basis::of("any horror manga?", &PageContext::default());
            lookup(&cache, d, &cfg, &s, fin, NOW + 1_000).await.expect("the entry fits")
        };
        // No turn stored in between (and none ever: no marker at all): the copy is current.
        speculate(read_epoch(&cache, d, &s).await).await;
        assert!(send().await.memory.is_some());
        // The epoch is read, then a turn is stored, then the send: the copy is stale.
        let epoch = read_epoch(&cache, d, &s).await;
        mark_stored(&cache, d, &cfg, &s, "t.m-1.5", None).await;
        speculate(epoch).await;
        let r = send().await;
        assert!(r.memory.is_none(), "stale memory never served");
        assert!(r.retrieved.is_some(), "the other legs still are");
        // Read after the turn: current again; and every marker is new, even for the same message.
        speculate(read_epoch(&cache, d, &s).await).await;
        assert!(send().await.memory.is_some());
        let epoch = read_epoch(&cache, d, &s).await;
        mark_stored(&cache, d, &cfg, &s, "t.m-1.5", None).await;
        speculate(epoch).await;
        assert!(send().await.memory.is_none(), "the same message stored again is a new epoch");
        // A message the entry does not fit still takes a current memory, and nothing else; a stale entry,
        // or another session's, gives nothing.
        speculate(read_epoch(&cache, d, &s).await).await;
        let other = Basis::of("where is my order", &PageContext::default());
        let r = lookup(&cache, d, &cfg, &s, other.clone(), NOW + 1_000).await.expect("the memory");
        assert!(r.memory.is_some() && r.retrieved.is_none() && r.values.is_empty() && r.absent.is_empty());
        // Nothing but the marker read at send (for a typed-ahead answer's basis).
        let nothing = |r: Option<Reusable>| r.is_some_and(|r| Reusable { epoch: None, ..r } == Reusable::default());
        assert!(nothing(lookup(&cache, d, &cfg, &s, other.clone(), NOW + 61_000).await), "stale");
        assert!(nothing(lookup(&cache, d, &cfg, &session("s-2"), other, NOW + 1_000).await), "no entry of s-2");
        assert!(cfg.epoch_ttl() >= cfg.ttl * 10);
    }

    #[test]
    fn an_entry_from_before_the_memory_copy_still_decodes() {
        let mut v: Value = serde_json::from_str(&entry("any horror manga", Value::Null, NOW).encode()).unwrap();
        let o = v.as_object_mut().unwrap();
        o.remove("absent");
        o.remove("memory");
        let e = SpeculationEntry::decode(&v.to_string()).expect("decodes");
        assert!(e.memory.is_none() && e.absent.is_empty());
        let mut with = entry("any horror manga", Value::Null, NOW);
        with.memory = Some(MemorySnapshot { epoch: Some("t.m-1.5".into()), memory: gathered(true).memory });
        assert_eq!(SpeculationEntry::decode(&with.encode()), Some(with));
    }

    #[test]
    fn an_input_verdict_fits_only_the_same_guardrail_text_and_page() {
        let v = InputVerdict {
            guardrail: "g:1".into(),
            text: "Show me horror manga".into(),
            page: String::new(),
            blocked: false,
            policies: Vec::new(),
            masked: None,
        };
        assert!(v.fits("g:1", "Show me horror manga", ""));
        assert!(!v.fits("g:2", "Show me horror manga", ""), "another guardrail version");
        assert!(!v.fits("g:1", "Show me horror manga?", ""), "the exact text, not the normalized one");
        assert!(!v.fits("g:1", "Show me horror manga", r#"{"current_asin":"B0UZUMAKI1"}"#), "another page");
    }
}
