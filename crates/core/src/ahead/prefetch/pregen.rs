//! The generation half of speculative pre-generation ([`crate::pregen`]): for the top products of the
//! answer, the follow-up "tell me more about <title>" is answered now, with the prompt the chat turn would
//! build (same system prompt, compressor and budgets, the same cached context, the conversation the job
//! carries), one `Converse` call per product, side by side, under one deadline. Each answer is cached with
//! the fingerprint of the facts it used, the model and its usage.
//!
//! Entries of the previous answer's products that were never served can no longer be (an ordinal now points
//! into this answer): their tokens are counted as wasted.

use std::future::Future;

use serde::Serialize;
use tokio::time::Instant;

use super::PrefetchJob;
use crate::cache::CacheKey;
use crate::cache::Lookup;
use crate::cache::Passage;
use crate::clock::Clock;
use crate::deadline::bounded;
use crate::ids::Asin;
use crate::intent::{Intent, is_japanese};
use crate::models::ModelChoice;
use crate::ports::sources::ContextSources;
use crate::ports::{ChatMessage, Completion, ModelClient, ModelRequest, Role};
use crate::pregen::{PregenConfig, PregenEntry, canonical_question, fingerprint, product_title};
use crate::prompt::compress::{CompressInput, REFERS_TO};
use crate::prompt::{Prompter, SYSTEM_PROMPT};
use crate::safety::GuardrailPolicy;

/// What a pre-generation run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PregenReport {
    /// Entries written (`pregen:{session}:{asin}`).
    pub generated: Vec<String>,
    /// Entries already cached for the same facts, not generated again.
    pub kept: Vec<String>,
    /// Model tokens this run spent.
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Output tokens of earlier entries that were never served and now cannot be.
    pub wasted_tokens: u32,
    pub errors: Vec<String>,
    /// Answers the output guardrail stopped when they were generated: not cached, never served (the
    /// policy families that acted, per answer).
    pub blocked: Vec<Vec<GuardrailPolicy>>,
}

/// The pre-generation step of a prefetch run.
pub trait Pregenerate: Send + Sync {
    fn pregenerate<X: ContextSources>(
        &self,
        sources: &X,
        job: &PrefetchJob,
    ) -> impl Future<Output = PregenReport> + Send;
}

/// No pre-generation (context prefetch only).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPregen;

impl Pregenerate for NoPregen {
    async fn pregenerate<X: ContextSources>(&self, _: &X, _: &PrefetchJob) -> PregenReport {
        PregenReport::default()
    }
}

/// Generates with `model`, building prompts with `prompter`.
#[derive(Debug)]
pub struct Pregenerator<M, C> {
    pub model: M,
    pub prompter: Prompter,
    pub cfg: PregenConfig,
    pub clock: C,
}

/// The cached facts of one product, each `None` when missing.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub product: Option<String>,
    pub reviews: Option<String>,
    pub rag: Option<String>,
    /// The product's entry as cached (checked against the facts' fingerprint before generating again).
    pub entry: Option<String>,
}

impl<M: ModelClient, C: Clock> Pregenerator<M, C> {
    fn generator(&self) -> Generator<'_, M, C> {
        Generator { model: &self.model, prompter: &self.prompter, cfg: &self.cfg, clock: &self.clock }
    }
}

impl<M: ModelClient, C: Clock> Pregenerate for Pregenerator<M, C> {
    async fn pregenerate<X: ContextSources>(&self, sources: &X, job: &PrefetchJob) -> PregenReport {
        self.generator().pregenerate(sources, job).await
    }
}

/// What generates, borrowed: the prefetch worker's [`Pregenerator`], or the chat turn's own model and
/// settings when it pre-generates while its answer streams.
#[derive(Debug)]
pub struct Generator<'a, M, C> {
    pub model: &'a M,
    pub prompter: &'a Prompter,
    pub cfg: &'a PregenConfig,
    pub clock: &'a C,
}

/// One product's pre-generation, done.
#[derive(Debug)]
pub enum Outcome {
    Generated(String, PregenEntry),
    Kept(String),
    /// The guardrail stopped it (the policies that acted, what it cost).
    Blocked(String, Vec<GuardrailPolicy>, Completion),
    Skipped,
}

impl PregenReport {
    /// Counts one product's outcome.
    pub fn add(&mut self, res: Result<Outcome, String>) {
        match res {
            Ok(Outcome::Generated(key, entry)) => {
                self.input_tokens += entry.input_tokens;
                self.output_tokens += entry.output_tokens;
                self.generated.push(key);
            }
            Ok(Outcome::Kept(key)) => self.kept.push(key),
            Ok(Outcome::Blocked(key, policies, done)) => {
                tracing::warn!(key, policies = ?policies, "the guardrail stopped a pre-generated answer; not cached");
                self.input_tokens += done.input_tokens;
                self.output_tokens += done.output_tokens;
                self.blocked.push(policies);
            }
            Ok(Outcome::Skipped) => {}
            Err(e) => self.errors.push(e),
        }
    }
}

impl<M: ModelClient, C: Clock> Generator<'_, M, C> {
    /// Pre-generates for the job's top products: one cache read of their facts (and of the entries now
    /// out of reach, counted as waste), then one generation per product, side by side.
    pub async fn pregenerate<X: ContextSources>(&self, sources: &X, job: &PrefetchJob) -> PregenReport {
        let mut report = PregenReport::default();
        if !self.cfg.mode.is_on() {
            return report;
        }
        let deadline = Instant::now() + self.cfg.timeout;
        let targets: Vec<&Asin> = job.products.iter().take(self.cfg.max).collect();
        let gone: Vec<&Asin> = job.previous_products.iter().filter(|a| !targets.contains(a)).collect();
        let (facts, wasted) = match self.read_facts(sources, job, &targets, &gone, &[], deadline).await {
            Ok(v) => v,
            Err(e) => {
                report.errors.push(e);
                return report;
            }
        };
        report.wasted_tokens = wasted;
        let runs = targets.iter().zip(facts).map(|(a, f)| self.one(sources, job, a, f, deadline));
        for res in futures_util::future::join_all(runs).await {
            report.add(res);
        }
        report
    }

    /// One cache read: each target's facts (those in `known`, `(cache key, value)`, are not read) and
    /// entry, and the entries of `gone` (products now out of reach): the output tokens of those never
    /// served.
    pub async fn read_facts<X: ContextSources>(
        &self,
        sources: &X,
        job: &PrefetchJob,
        targets: &[&Asin],
        gone: &[&Asin],
        known: &[(String, String)],
        deadline: Instant,
    ) -> Result<(Vec<Facts>, u32), String> {
        let mut keys: Vec<String> = targets.iter().flat_map(|a| facts_keys(job, a)).collect();
        keys.extend(gone.iter().map(|a| CacheKey::Pregen(job.session_id.clone(), (*a).clone()).render()));
        let wanted: Vec<String> = keys.iter().filter(|k| !known.iter().any(|(kk, _)| kk == *k)).cloned().collect();
        let read = bounded("pregen cache", deadline, sources.cache_get(&wanted)).await?;
        let mut read = wanted.into_iter().zip(read);
        let mut values = keys.iter().map(|k| match known.iter().find(|(kk, _)| kk == k) {
            Some((_, v)) => Some(v.clone()),
            None => read.next().and_then(|(_, v)| v),
        });
        let mut facts = Vec::with_capacity(targets.len());
        for _ in targets {
            let mut next = || values.next().flatten();
            facts.push(Facts { product: next(), reviews: next(), rag: next(), entry: next() });
        }
        let wasted = values
            .flatten()
            .filter_map(|v| PregenEntry::decode(&v))
            .filter(|e| !e.served)
            .map(|e| e.output_tokens)
            .sum();
        Ok((facts, wasted))
    }
}

/// The cache keys of a product's facts, in [`Facts`] order.
pub fn facts_keys(job: &PrefetchJob, asin: &Asin) -> [String; 4] {
    [
        Lookup::Product(asin.clone()).key(),
        Lookup::Review(asin.clone()).key(),
        Lookup::Rag { intent: Intent::ProductQuestion, asin: asin.clone() }.key(),
        CacheKey::Pregen(job.session_id.clone(), asin.clone()).render(),
    ]
}

impl<M: ModelClient, C: Clock> Generator<'_, M, C> {
    /// A fact from the cache, else from its source (and then cached, so the follow-up finds it).
    async fn fact<X: ContextSources>(
        &self,
        sources: &X,
        l: Lookup,
        cached: Option<String>,
        deadline: Instant,
    ) -> Result<Option<String>, String> {
        if cached.is_some() {
            return Ok(cached);
        }
        let key = l.key();
        let Some(v) = bounded(&key, deadline, sources.fetch(&l)).await? else { return Ok(None) };
        let text = v.to_string();
        bounded(&key, deadline, sources.cache_set(&key, &text, l.ttl())).await?;
        Ok(Some(text))
    }

    /// Pre-generates the overview of `asin` (unless its entry is current for these facts) and caches it.
    pub async fn one<X: ContextSources>(
        &self,
        sources: &X,
        job: &PrefetchJob,
        asin: &Asin,
        f: Facts,
        deadline: Instant,
    ) -> Result<Outcome, String> {
        let rag_lookup = Lookup::Rag { intent: Intent::ProductQuestion, asin: asin.clone() };
        let (product, reviews, rag) = tokio::join!(
            self.fact(sources, Lookup::Product(asin.clone()), f.product, deadline),
            self.fact(sources, Lookup::Review(asin.clone()), f.reviews, deadline),
            self.fact(sources, rag_lookup.clone(), f.rag, deadline),
        );
        let (Some(product), reviews, rag) = (product?, reviews?, rag?) else { return Ok(Outcome::Skipped) };
        let parse = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap_or_default();
        let print = fingerprint(&parse(&product), reviews.as_deref().map(parse).as_ref());
        let key = CacheKey::Pregen(job.session_id.clone(), asin.clone()).render();
        if f.entry.as_deref().and_then(PregenEntry::decode).is_some_and(|e| e.fingerprint == print) {
            return Ok(Outcome::Kept(key));
        }
        let japanese = job.history.last().is_some_and(|x| is_japanese(&x.user));
        let title = product_title(&parse(&product), japanese).unwrap_or_else(|| asin.to_string());
        let question = canonical_question(&title, japanese);
        let mut passages: Vec<Passage> = Lookup::Product(asin.clone()).passages(&product);
        if let Some(r) = &reviews {
            passages.extend(Lookup::Review(asin.clone()).passages(r));
        }
        if let Some(r) = &rag {
            passages.extend(rag_lookup.passages(r));
        }
        let conversation: Vec<ChatMessage> = job
            .history
            .iter()
            .flat_map(|x| {
                [
                    ChatMessage { role: Role::User, text: x.user.clone() },
                    ChatMessage { role: Role::Assistant, text: x.assistant.clone() },
                ]
            })
            .collect();
        let notes = [(REFERS_TO, asin.to_string())];
        let input = CompressInput {
            system_prompt: SYSTEM_PROMPT,
            rag_chunks: &passages,
            conversation: &conversation,
            conversation_tokens: &[],
            summary: job.summary.as_deref(),
            page_context: &job.page_context,
            notes: &notes,
            user_message: &question,
            intent: Intent::ProductQuestion,
        };
        let choice = ModelChoice { model_id: self.cfg.model_id.clone(), max_tokens: self.cfg.max_tokens };
        let metadata =
            vec![("purpose".to_owned(), "pregen".to_owned()), ("message_id".to_owned(), job.message_id.to_string())];
        let req = self.prompter.request(&input, &choice, metadata).map_err(|e| format!("{key}: {e}"))?;
        // Assessed by the output guardrail as it is generated: a stopped answer is never cached.
        let req = ModelRequest { guardrail: self.cfg.guardrail.clone(), ..req };
        let mut done = bounded(&key, deadline, self.model.complete(&req)).await?;
        if let Some(a) = done.guardrail.take() {
            return Ok(Outcome::Blocked(key, a.policies, done));
        }
        if done.text.trim().is_empty() {
            return Ok(Outcome::Skipped);
        }
        let entry = PregenEntry {
            text: done.text.trim().to_owned(),
            fingerprint: print,
            model: choice.model_id,
            input_tokens: done.input_tokens,
            output_tokens: done.output_tokens,
            created_at_ms: self.clock.now_ms(),
            japanese,
            served: false,
        };
        bounded(&key, deadline, sources.cache_set(&key, &entry.encode(), self.cfg.ttl)).await?;
        Ok(Outcome::Generated(key, entry))
    }
}
