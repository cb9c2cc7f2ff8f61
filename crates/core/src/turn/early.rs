//! Beside step 5 (stream), early pre-generation: the overview of each product the answer lists is
//! generated as soon as the answer names it, while the rest of the answer streams, so that "tell me more
//! about the first one" finds its answer ready when the shopper has read the list
//! ([`crate::pregen`] decides which follow-ups it may serve).
//!
//! ```text
//! stream ── delta "1. Paper Diary (B03KAY3107)…" ──── delta "2. …(B04G6OLIWV)" ──── completed
//!              └─ facts (cache, else services) ── Converse ── pregen:{session}:B03KAY3107
//!                                                   └─ facts ── Converse ── pregen:{session}:B04G6OLIWV
//! ```
//!
//! - What the client was shown is what counts: the step reads the text of the delta frames the gateway
//!   accepted ([`Tap`]), and a product is a target only when the turn's context holds it (an ASIN the model
//!   invented is never pre-generated).
//! - The turn's context is reused: the memory it read (the conversation the follow-up's prompt keeps, the
//!   summary), the page, and every fact it already looked up; only missing facts are read from the cache
//!   or fetched.
//! - Only turns whose follow-up is likely a product question pre-generate (the prefetch prior's rows at or
//!   above its threshold: recommendations and discovery); the prefetch job says so, and the prefetch
//!   worker then only prefetches context. Any other turn is left to the worker as before.
//! - Readiness, the time from the answer's last frame to each entry being cached (0 when it was ready
//!   before), is written as `pregen.ready_ms` once the turn has ended; Lambda freezes after the handler
//!   returns, so the generations are awaited (each bounded by `PREGEN_TIMEOUT_MS` and the invocation's
//!   deadline) after the client has its `completed`.

use std::collections::HashSet;

use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Engine;
use super::open::Turn;
use crate::ahead::prefetch::{DEFAULT_THRESHOLD, Generator, Outcome, PrefetchJob, PrefetchQueue, PregenReport, prior};
use crate::clock::Clock;
use crate::error::SinkError;
use crate::gather::Gathered;
use crate::ids::{Asin, ConnectionId};
use crate::intent::Intent;
use crate::ports::sources::ContextSources;
use crate::ports::{ConnectionSink, ModelClient, Store};
use crate::safety::KnownProducts;

/// A sink that passes every frame on and, when `on`, keeps the text of the delta frames the gateway
/// accepted.
pub(super) struct Tap<'a, S> {
    sink: &'a S,
    shown: Option<watch::Sender<String>>,
}

impl<'a, S: ConnectionSink> Tap<'a, S> {
    /// The tap, and the text shown so far (closed when the tap is dropped: the stream is over).
    pub(super) fn new(sink: &'a S, on: bool) -> (Self, watch::Receiver<String>) {
        let (shown, rx) = watch::channel(String::new());
        (Self { sink, shown: on.then_some(shown) }, rx)
    }
}

#[derive(Deserialize)]
struct DeltaText<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(borrow)]
    text: std::borrow::Cow<'a, str>,
}

impl<S: ConnectionSink> ConnectionSink for Tap<'_, S> {
    async fn post(&self, conn: &ConnectionId, frame: bytes::Bytes) -> Result<(), SinkError> {
        let Some(shown) = &self.shown else { return self.sink.post(conn, frame).await };
        // Parsed before the post (the frame moves into it); a few microseconds per coalesced frame.
        let delta = serde_json::from_slice::<DeltaText<'_>>(&frame).ok().filter(|d| d.kind == "delta");
        let text = delta.map(|d| d.text.into_owned());
        self.sink.post(conn, frame).await?;
        if let Some(t) = text.filter(|t| !t.is_empty()) {
            shown.send_modify(|shown| shown.push_str(&t));
        }
        Ok(())
    }
}

/// What the turn keeps for its early pre-generation: owned, so the step outlives the turn's own values.
pub(super) struct EarlyInput {
    job: PrefetchJob,
    known: KnownProducts,
    /// The facts the turn's context already holds, by cache key.
    values: Vec<(String, String)>,
}

/// What early pre-generation did: the report, and when each generated entry was cached.
#[derive(Debug, Default)]
pub(super) struct Early {
    pub report: PregenReport,
    pub ready_at: Vec<Instant>,
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// Whether this turn pre-generates its listed products' overviews while it streams.
    pub(super) fn pregenerates(&self, intent: Intent) -> bool {
        let likely =
            prior(intent).iter().any(|t| t.next == Intent::ProductQuestion && t.probability >= DEFAULT_THRESHOLD);
        self.cfg.pregen.mode.is_on() && self.cfg.context.pregen && likely
    }

    /// The early step's input, when this turn pre-generates.
    pub(super) fn early_input(&self, turn: &Turn, gathered: &Gathered, question: &str) -> Option<EarlyInput> {
        if !self.pregenerates(gathered.intent) {
            return None;
        }
        let job = self.prefetch_job_for(turn, gathered, question, String::new(), Vec::new());
        let values = gathered.context.values.iter().map(|(l, v)| (l.key(), v.clone())).collect();
        Some(EarlyInput { job, known: super::conclude::known_products(turn, gathered), values })
    }

    /// Watches the text shown until the stream is over, starting one generation per new product the
    /// context holds (at most `PREGEN_MAX`), then waits for those started.
    pub(super) async fn pregenerate_early(
        &self,
        turn: &Turn,
        input: Option<EarlyInput>,
        mut shown: watch::Receiver<String>,
    ) -> Option<Early> {
        let EarlyInput { job, known, values } = input?;
        let generator =
            Generator { model: &self.model, prompter: &self.prompter, cfg: &self.cfg.pregen, clock: &self.clock };
        let mut early = Early::default();
        let mut started: Vec<Asin> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut runs = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                changed = shown.changed(), if open => {
                    open = changed.is_ok();
                    let text = shown.borrow_and_update().clone();
                    for asin in Asin::all_in(&text) {
                        if started.len() >= self.cfg.pregen.max || !seen.insert(asin.as_str().to_owned()) {
                            continue;
                        }
                        if known.contains(&asin) {
                            // The conversation so far: this exchange as far as the shopper has read it.
                            let mut job = job.clone();
                            if let Some(last) = job.history.last_mut() {
                                last.assistant.clone_from(&text);
                            }
                            // The entries of the last list are counted as waste once, with the first.
                            if !started.is_empty() {
                                job.previous_products.clear();
                            }
                            job.products = vec![asin.clone()];
                            started.push(asin);
                            runs.push(self.pregenerate_one(&generator, turn, job, &values));
                        }
                    }
                }
                Some((report, ready)) = runs.next() => {
                    merge(&mut early.report, report);
                    early.ready_at.extend(ready);
                }
                else => break,
            }
        }
        Some(early)
    }

    /// One product: its facts (the turn's, else cached, else fetched) and its generation.
    async fn pregenerate_one(
        &self,
        g: &Generator<'_, M, C>,
        turn: &Turn,
        job: PrefetchJob,
        known: &[(String, String)],
    ) -> (PregenReport, Option<Instant>) {
        let mut report = PregenReport::default();
        let deadline = (Instant::now() + self.cfg.pregen.timeout).min(turn.deadline);
        let targets: Vec<&Asin> = job.products.iter().collect();
        let gone: Vec<&Asin> = job.previous_products.iter().filter(|a| !targets.contains(a)).collect();
        let facts = match Box::pin(g.read_facts(&self.sources, &job, &targets, &gone, known, deadline)).await {
            Ok((facts, wasted)) => {
                report.wasted_tokens = wasted;
                facts
            }
            Err(e) => {
                report.errors.push(e);
                return (report, None);
            }
        };
        let (Some(asin), Some(facts)) = (targets.first(), facts.into_iter().next()) else { return (report, None) };
        // Boxed: the generation holds the SDK's deep futures.
        let res = Box::pin(g.one(&self.sources, &job, asin, facts, deadline)).await;
        let ready = matches!(res, Ok(Outcome::Generated(..))).then(Instant::now);
        report.add(res);
        (report, ready)
    }
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// The early step's EMF: tokens spent and wasted, and each entry's readiness after the answer's last
    /// frame (for a completed turn).
    pub(super) fn record_early(&self, turn: &Turn, result: &super::TurnResult, early: Option<Early>) {
        let Some(early) = early else { return };
        let now = self.clock.now_ms();
        let r = &early.report;
        if !r.generated.is_empty() || r.wasted_tokens > 0 {
            self.metrics.record(&crate::metrics::pregen_record(now, r.output_tokens, r.wasted_tokens));
        }
        if let super::TurnResult::Completed(m) = result {
            let ended = turn.started + std::time::Duration::from_secs_f64(m.total_ms.max(0.0) / 1000.0);
            for at in &early.ready_at {
                let ms = at.saturating_duration_since(ended).as_secs_f64() * 1000.0;
                self.metrics.record(&crate::metrics::pregen_ready_record(now, ms));
            }
        }
        tracing::info!(
            generated = r.generated.len(),
            kept = r.kept.len(),
            errors = ?r.errors,
            output_tokens = r.output_tokens,
            wasted_tokens = r.wasted_tokens,
            "pre-generated while streaming"
        );
    }
}

/// Adds `more` to `into`.
fn merge(into: &mut PregenReport, more: PregenReport) {
    into.generated.extend(more.generated);
    into.kept.extend(more.kept);
    into.input_tokens += more.input_tokens;
    into.output_tokens += more.output_tokens;
    into.wasted_tokens += more.wasted_tokens;
    into.errors.extend(more.errors);
    into.blocked.extend(more.blocked);
}
