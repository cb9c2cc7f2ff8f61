//! Parallel context assembly: everything the prompt needs at the cost of the slowest leg, never held
//! hostage by one slow or failing source.
//!
//! ```text
//! t=0 ── classify (µs) ── retrieval ────────────────────────────────┐
//!    ├── epoch (cache) ── resolve ordinals ── cache ── services ────┤
//!    └── memory (store) ── same resolution? (else look up again) ───┴─> prompt compressor
//! ```
//!
//! Retrieval needs only the message and its intent, so it starts at once. The cache and product-service
//! legs need to know what an ordinal such as "the first one" points at (the previous answer's list): the
//! session's memory epoch carries that list ([`recall`]), read in one cache round trip at send, so they
//! start at once too; when memory arrives, the resolution is checked against it and looked up again in
//! the rare case they differ (without a recall, the lookups follow memory). Services are asked only for
//! what the cache (filled by speculative prefetch) did not have.
//! Every leg has its own deadline, all capped by an overall one; a leg that errors or times out is
//! recorded and the turn goes on with what arrived. Service data reaches the compressor as top-scored
//! passages. After the answer, what the services returned is written back to the cache ([`Assembler::write_back`]).
//!
//! A typing-time speculation ([`crate::ahead::speculate`]) may have gathered the context already: then
//! [`Assembler::assemble_reusing`] takes its retrieval and service legs from it (one cache read, under the
//! cache leg's deadline, before retrieval starts) and runs only memory and what the speculation lacked.

mod plan;
pub mod recall;
pub mod summary;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use tokio::time::Instant;

use crate::admit::session::Memory;
use crate::cache::CacheKey;
use crate::cache::Lookup;
use crate::cache::Passage;
use crate::deadline::{bounded, within};
use crate::ids::{Asin, SessionId, UserId};
use crate::intent::{self, Entities, Intent};
use crate::ports::Store;
use crate::ports::sources::{ContextSources, SourceError};
use crate::pregen::{self, Ask, PregenEntry};
use crate::protocol::{ClientMessage, Leg, LegTimings};
use plan::Resolution;
pub use plan::{focus_products, lookups};
use recall::Recall;

/// Deadlines and sizes of the context legs.
#[derive(Debug, Clone, Copy)]
pub struct ContextConfig {
    pub memory: Duration,
    pub retrieval: Duration,
    pub cache: Duration,
    pub services: Duration,
    /// No leg runs past this, counted from the start of assembly.
    pub overall: Duration,
    pub top_k: usize,
    /// Products looked up per turn (details + reviews).
    pub max_products: usize,
    /// Exchanges loaded from memory each turn: the verbatim window plus material for the digest and the
    /// next summary.
    pub memory_turns: u32,
    /// Run the legs one after another (the benchmark's baseline), not side by side.
    pub sequential: bool,
    /// Read the pre-generated answer for a follow-up about one product of the last answer, in the same
    /// cache read as its facts.
    pub pregen: bool,
}

impl Default for ContextConfig {
    fn default() -> Self {
        Self {
            memory: Duration::from_millis(150),
            retrieval: Duration::from_millis(240),
            cache: Duration::from_millis(40),
            services: Duration::from_millis(150),
            // A follow-up's passages come after memory: 50 + 200 ms in the design's profile.
            overall: Duration::from_millis(300),
            top_k: 5,
            max_products: 3,
            memory_turns: 8,
            sequential: false,
            pregen: true,
        }
    }
}

/// What assembly produced.
#[derive(Debug, Clone, Default)]
pub struct Assembled {
    /// Retrieved passages and service data, for the compressor.
    pub passages: Vec<Passage>,
    /// Cache keys served from the cache (prefetched), in lookup order.
    pub cache_hits: Vec<String>,
    /// Entries fetched from their sources (written back to the cache after the answer).
    pub fetched: Vec<(Lookup, String)>,
    /// Every entry's value, from the cache or its source: the facts a pre-generated answer is checked
    /// against.
    pub values: Vec<(Lookup, String)>,
    /// What the follow-up asks of one product of the last answer.
    pub ask: Option<Ask>,
    /// The pre-generated answer for that product, when the cache had one.
    pub pregen: Option<PregenEntry>,
    /// Entries looked up in total.
    pub lookups: usize,
    /// `leg: error` for each leg that failed or was cut at its deadline.
    pub errors: Vec<String>,
    pub legs: LegTimings,
    pub assembly_ms: f64,
    /// What the retrieval leg returned, when it ran and answered (a speculation keeps it).
    pub retrieved: Option<Vec<Passage>>,
    /// Calls made to the sources (retrieval queries, product-service calls): the work this assembly cost.
    pub calls: SourceCalls,
    /// Legs a typing-time speculation served (`memory`, `retrieval`, `services`).
    pub speculated: Vec<Leg>,
    /// Lookups their source answered "no such thing" (an ASIN no product has): a speculation keeps them,
    /// so the message it serves does not ask again.
    pub absent: Vec<Lookup>,
    /// The memory leg read both parts (recent turns and summary) in time, from the store: only such a
    /// memory may be kept by a speculation.
    pub memory_whole: bool,
    /// When the memory is a speculation's copy: the epoch it was found current under. A speculation built
    /// on this assembly keeps the copy only under that same epoch (a turn stored since would change it).
    pub memory_copy_epoch: Option<Option<String>>,
}

/// What a turn may take from a typing-time speculation ([`crate::ahead::speculate`]): the context legs when it
/// fits the message, the memory when it is still current.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reusable {
    /// The retrieval leg's passages (`None`: the speculation has none; retrieval runs).
    pub retrieved: Option<Vec<Passage>>,
    /// Lookup values by cache key.
    pub values: Vec<(String, String)>,
    /// The product the speculation's ordinal resolved to: its values stand only for that one.
    pub resolved: Option<Asin>,
    /// Lookup keys their source answered "no such thing" for.
    pub absent: Vec<String>,
    /// The session's memory, when no turn has been stored since the speculation read it
    /// ([`crate::ahead::speculate`]'s epoch check): the memory leg need not run.
    pub memory: Option<Memory>,
    /// The input guardrail's verdict on the exact text and page context it was typed with.
    pub input: Option<crate::safety::InputVerdict>,
    /// The session's memory epoch marker as read at send (`None`: the read failed; `Some(None)`: no marker):
    /// part of what a typed-ahead answer must match.
    pub epoch: Option<Option<String>>,
    /// What the epoch says a follow-up resolves against ([`recall`]): its lookups start before memory
    /// arrives.
    pub recall: Option<Recall>,
}

/// Calls an assembly made to its sources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SourceCalls {
    /// Retrieval queries (the text search, and the passages of a follow-up's product).
    pub retrievals: u32,
    /// Product-service calls (details, reviews, recommendations, promotions).
    pub services: u32,
}

/// Everything a turn knows once its context is gathered.
#[derive(Debug, Clone, Default)]
pub struct Gathered {
    pub intent: Intent,
    /// With the ordinal resolved against the previous answer.
    pub entities: Entities,
    pub memory: Memory,
    pub context: Assembled,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs one leg under its deadline (capped at `cap`): its value, its time, and what went wrong.
async fn leg<T>(
    name: Leg,
    deadline: Duration,
    cap: Instant,
    fut: impl Future<Output = Result<T, SourceError>>,
) -> (Option<T>, f64, Option<String>) {
    let start = Instant::now();
    let res = bounded(name.as_str(), (start + deadline).min(cap), fut).await;
    let took = ms(start.elapsed());
    match res {
        Ok(v) => (Some(v), took, None),
        Err(e) => (None, took, Some(e)),
    }
}

/// The memory leg, unless a typing-time speculation that fits holds the session's current memory: both
/// start at once; a speculation that answers first with a memory ends the leg (its read is dropped), else
/// the leg's own read is used. Also returns what the speculation offers for the other legs.
async fn memory_or_prior<L, P>(load: L, prior: P, asm: &mut Assembled) -> (Memory, Option<Arc<Reusable>>)
where
    L: Future<Output = (Option<(Memory, bool)>, f64, Option<String>)>,
    P: Future<Output = Option<Arc<Reusable>>>,
{
    let (mut load, mut prior) = (std::pin::pin!(load), std::pin::pin!(prior));
    let read = |asm: &mut Assembled, (memory, took, err): (Option<(Memory, bool)>, f64, Option<String>)| {
        asm.legs.memory_ms = took;
        asm.errors.extend(err);
        let (memory, whole) = memory.unwrap_or_default();
        asm.memory_whole = whole;
        memory
    };
    tokio::select! {
        biased;
        p = &mut prior => {
            if let Some(memory) = p.as_deref().and_then(|p| p.memory.clone()) {
                asm.speculated.push(Leg::Memory);
                // A copy, checked against this epoch: a speculation built on it may keep it under the same one.
                asm.memory_copy_epoch = p.as_deref().and_then(|p| p.epoch.clone());
                return (memory, p);
            }
            (read(asm, load.await), p)
        }
        l = &mut load => {
            let memory = read(asm, l);
            (memory, prior.await)
        }
    }
}

impl Assembled {
    /// Takes the lookups' part of `other` (assembled beside the memory leg, which `self` holds).
    fn merge_lookups(&mut self, other: Self) {
        self.passages.extend(other.passages);
        self.cache_hits.extend(other.cache_hits);
        self.fetched.extend(other.fetched);
        self.values.extend(other.values);
        self.ask = other.ask;
        self.pregen = other.pregen;
        self.lookups = other.lookups;
        self.errors.extend(other.errors);
        self.legs.cache_ms = other.legs.cache_ms;
        self.legs.services_ms = other.legs.services_ms;
        self.calls.retrievals += other.calls.retrievals;
        self.calls.services += other.calls.services;
        self.speculated.extend(other.speculated);
        self.absent.extend(other.absent);
    }
}

/// Gathers a turn's context from the store (memory) and the context sources.
#[derive(Debug)]
pub struct Assembler<'a, X, St> {
    pub sources: &'a X,
    pub store: &'a St,
    pub cfg: &'a ContextConfig,
}

impl<X: ContextSources, St: Store> Assembler<'_, X, St> {
    /// Context for the turn. Concurrently: retrieval (needs only the message and its intent) and memory,
    /// then the cache and product-service lookups that memory's resolved ordinals point at. With
    /// `sequential` (the benchmark's baseline) the same legs run one after another.
    pub async fn assemble(&self, msg: &ClientMessage, session: &SessionId, user: &UserId) -> Gathered {
        self.assemble_reusing(msg, session, user, std::future::ready(None)).await
    }

    /// [`Assembler::assemble`], taking what `prior` (the at-send lookup of a typing-time speculation) can
    /// serve: its memory when current (racing the store's read), its passages instead of the retrieval leg
    /// (which waits for `prior`, bounded by the cache leg's deadline), its service values instead of their
    /// cache reads and service calls (once memory has resolved the same ordinal).
    pub async fn assemble_reusing(
        &self,
        msg: &ClientMessage,
        session: &SessionId,
        user: &UserId,
        prior: impl Future<Output = Option<Arc<Reusable>>> + Send,
    ) -> Gathered {
        let start = Instant::now();
        let cap = start + self.cfg.overall;
        let prior = prior.shared();
        // The intent does not depend on what an ordinal resolves to, so classify before memory arrives.
        let early = intent::extract(&msg.text, &[]);
        let intent = intent::classify(&msg.text, &early);
        // "Tell me more about the first one": its words are useless to a text search. Its passages come
        // from the product it points at, as a (prefetchable) lookup once memory has resolved it.
        let follow_up = early.ordinal.is_some();
        let with_memory = self.memory_then_lookups(msg, session, user, intent, early, cap, prior.clone());
        let search = async {
            // (passages, took, error, served by a speculation, searched)
            if follow_up {
                return (None, 0.0, None, false, false);
            }
            let reusable = prior.await;
            if let Some(passages) = reusable.as_ref().and_then(|p| p.retrieved.clone()) {
                return (Some(passages), 0.0, None, true, false);
            }
            // A title of the last list ("what's Star Hunter about?"), known from the epoch's recall: like an
            // ordinal, its passages come from the product's lookup, not from a search of its words.
            if let Some(recall) = reusable.as_ref().and_then(|p| p.recall.as_ref()) {
                let mut pointed = intent::Entities::default();
                pointed.resolve_listed(&msg.text, &recall.listed);
                if pointed.resolved.is_some() {
                    return (None, 0.0, None, false, false);
                }
            }
            let (passages, took, err) = self.retrieval(&msg.text, intent, cap).await;
            (err.is_none().then_some(passages), took, err, false, true)
        };
        let ((memory, entities, intent, mut asm), (passages, took, err, speculated, searched)) = if self.cfg.sequential
        {
            let first = with_memory.await;
            (first, search.await)
        } else {
            tokio::join!(with_memory, search)
        };
        asm.legs.retrieval_ms = took;
        asm.errors.extend(err);
        if speculated {
            asm.speculated.push(Leg::Retrieval);
        } else if searched {
            asm.calls.retrievals += 1;
        }
        asm.speculated.sort();
        asm.passages.extend(passages.iter().flatten().cloned());
        asm.retrieved = passages;
        asm.assembly_ms = ms(start.elapsed());
        Gathered { intent, entities, memory, context: asm }
    }

    /// The memory leg and the lookups that depend on what the message points at (an ordinal or title
    /// resolved against the last answer), side by side when the epoch read at send carries the session's
    /// [`Recall`]; those `prior` holds for the same resolved product are taken from it.
    #[expect(
        clippy::too_many_arguments,
        reason = "the turn's inputs to the memory leg, read once each; a struct would only carry them one call down"
    )]
    async fn memory_then_lookups(
        &self,
        msg: &ClientMessage,
        session: &SessionId,
        user: &UserId,
        intent: Intent,
        entities: Entities,
        cap: Instant,
        prior: impl Future<Output = Option<Arc<Reusable>>> + Clone,
    ) -> (Memory, Entities, Intent, Assembled) {
        let mut asm = Assembled::default();
        let load = async { Ok::<_, SourceError>(Memory::load_whole(self.store, session, self.cfg.memory_turns).await) };
        // Boxed: the store's futures (the SDK's inside) are deep, and the race below polls them in place.
        let load = Box::pin(leg(Leg::Memory, self.cfg.memory, cap, load));
        // Early: resolved against the epoch's recall, looked up while memory is read. Not when the
        // speculation holds a current memory (then there is no wait to save).
        let assumed = |p: &Option<Arc<Reusable>>| -> Option<Recall> {
            let p = p.as_deref()?;
            p.recall.clone().filter(|_| p.memory.is_none() && !self.cfg.sequential)
        };
        let (early_prior, early_entities) = (prior.clone(), entities.clone());
        let early = async {
            let p = early_prior.await;
            let recall = assumed(&p)?;
            let resolution = self.resolve(msg, session, user, intent, early_entities, &recall);
            let mut asm = Assembled::default();
            let wanted = resolution.served(p.as_deref(), &mut asm);
            Box::pin(self.cached_lookups(wanted, resolution.entry.clone(), cap, &mut asm)).await;
            Some((resolution, asm))
        };
        // Boxed, as the lookups below: the sources' futures are large, and held inline they would make
        // every frame above this one as large (a debug build's stack overflowed).
        let mut early = Box::pin(early);
        let mut finished = None;
        let (memory, prior) = {
            let mut memory = std::pin::pin!(memory_or_prior(load, prior, &mut asm));
            loop {
                tokio::select! {
                    m = &mut memory => break m,
                    e = &mut early, if finished.is_none() => finished = Some(e),
                }
            }
        };
        let recall = Recall::of(&memory.turns);
        match assumed(&prior) {
            Some(assumed) if assumed == recall => {
                let looked_up = match finished {
                    Some(done) => done,
                    None => early.await,
                };
                if let Some((resolution, looked_up)) = looked_up {
                    asm.merge_lookups(looked_up);
                    return (memory, resolution.entities, resolution.intent, asm);
                }
            }
            // Dropped (its lookups cancelled): it pointed into another list than memory holds.
            Some(_) => tracing::info!("the epoch's recall differs from memory; looking up again"),
            None => {}
        }
        let resolution = self.resolve(msg, session, user, intent, entities, &recall);
        let wanted = resolution.served(prior.as_deref(), &mut asm);
        Box::pin(self.cached_lookups(wanted, resolution.entry.clone(), cap, &mut asm)).await;
        (memory, resolution.entities, resolution.intent, asm)
    }

    /// What the message points at, given what it may point into; its lookups and pre-generated entry.
    fn resolve(
        &self,
        msg: &ClientMessage,
        session: &SessionId,
        user: &UserId,
        intent: Intent,
        mut entities: Entities,
        recall: &Recall,
    ) -> Resolution {
        // "The first one", "最後の", or a title of the last list.
        entities.resolve_listed(&msg.text, &recall.listed);
        // "What's Star Hunter about?" reads as small talk until the title is known to be a listed product's:
        // then it is a question about that product (its facts are looked up, its overview may be served).
        let intent = match intent {
            Intent::General if entities.resolved.is_some() => Intent::ProductQuestion,
            other => other,
        };
        let products = focus_products(&entities, &msg.page_context, self.cfg.max_products);
        let mut wanted = lookups(intent, &products, user);
        if let Some(asin) = entities.resolved.clone() {
            wanted.push(Lookup::Rag { intent, asin });
        }
        // What was asked just before decides what a bare pointer ("and the second?") repeats.
        let ask = pregen::ask_after(&msg.text, intent, &entities, recall.before());
        let entry = match (&ask, self.cfg.pregen) {
            (Ask::Overview(a) | Ask::Specific(a), true) => Some(CacheKey::Pregen(session.clone(), a.clone()).render()),
            _ => None,
        };
        Resolution { entities, intent, wanted, entry, ask }
    }

    /// The retrieval leg.
    async fn retrieval(&self, query: &str, intent: Intent, cap: Instant) -> (Vec<Passage>, f64, Option<String>) {
        let search = self.sources.retrieve(query, intent, self.cfg.top_k);
        let (v, took, err) = leg(Leg::Retrieval, self.cfg.retrieval, cap, search).await;
        (v.unwrap_or_default(), took, err)
    }

    /// Fetches `lookups`: the cache first, their sources for misses, all side by side.
    async fn cached_lookups(&self, lookups: Vec<Lookup>, entry: Option<String>, cap: Instant, out: &mut Assembled) {
        if lookups.is_empty() && entry.is_none() {
            return;
        }
        out.lookups = lookups.len();
        let mut keys: Vec<String> = lookups.iter().map(Lookup::key).collect();
        keys.extend(entry);
        let (hits, took, err) = leg(Leg::Cache, self.cfg.cache, cap, self.sources.cache_get(&keys)).await;
        out.legs.cache_ms = took;
        out.errors.extend(err);
        let mut hits = hits.unwrap_or_else(|| vec![None; keys.len()]).into_iter();
        let mut misses = Vec::new();
        for (l, key) in lookups.into_iter().zip(keys) {
            match hits.next().flatten() {
                Some(v) => {
                    out.passages.extend(l.passages(&v));
                    out.cache_hits.push(key);
                    out.values.push((l, v));
                }
                None => misses.push(l),
            }
        }
        out.pregen = hits.next().flatten().as_deref().and_then(PregenEntry::decode);
        if misses.is_empty() {
            return;
        }
        let start = Instant::now();
        for l in &misses {
            match l {
                Lookup::Rag { .. } => out.calls.retrievals += 1,
                _ => out.calls.services += 1,
            }
        }
        let calls = misses.iter().map(|l| {
            // Passages come from the retriever, under its deadline; everything else from a product service.
            let (name, deadline) = match l {
                Lookup::Rag { .. } => (Leg::Retrieval, self.cfg.retrieval),
                _ => (Leg::Services, self.cfg.services),
            };
            leg(name, deadline, cap, self.sources.fetch(l))
        });
        let results = futures_util::future::join_all(calls).await;
        out.legs.services_ms = ms(start.elapsed());
        for (l, (v, _, err)) in misses.into_iter().zip(results) {
            out.errors.extend(err);
            match v {
                Some(Some(v)) => {
                    let text = v.to_string();
                    out.passages.extend(l.passages(&text));
                    out.values.push((l.clone(), text.clone()));
                    out.fetched.push((l, text));
                }
                Some(None) => out.absent.push(l),
                None => {}
            }
        }
    }

    /// Cache-aside, after the answer (or after a speculation): what the sources returned this turn goes into
    /// the cache with its TTL.
    pub async fn write_back(&self, asm: &Assembled) {
        let writes = asm.fetched.iter().map(|(l, v)| async move {
            let key = l.key();
            let res = within("cache write-back", self.cfg.cache, self.sources.cache_set(&key, v, l.ttl())).await;
            if !matches!(res, Ok(Ok(()))) {
                tracing::debug!(key, "cache write-back failed");
            }
        });
        futures_util::future::join_all(writes).await;
    }
}

#[cfg(test)]
mod tests;
