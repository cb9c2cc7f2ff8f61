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
use crate::ports::{ConnectionSink, ModelClient, ModelRequest, Store};
use crate::prompt::compress;
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
    /// The products the answer will most likely list: the first `PREGEN_MAX` the prompt presents, those the
    /// question names first, then the page's, then the context's.
    expected: Vec<Asin>,
    /// The facts the turn's context already holds, by cache key.
    values: Vec<(String, String)>,
    /// What the turn itself may still spend (its prompt and its answer's ceiling): generations start only
    /// when the user's day has room beyond it.
    reserve: u64,
}

/// What early pre-generation did: the report, when each generated entry was cached, and how many head
/// starts the answer did not confirm (dropped before their end).
#[derive(Debug, Default)]
pub(super) struct Early {
    pub report: PregenReport,
    pub ready_at: Vec<Instant>,
    pub unconfirmed: usize,
}

impl<M: ModelClient, St: Store, C: Clock, X: ContextSources, Q: PrefetchQueue> Engine<M, St, C, X, Q> {
    /// Whether this turn pre-generates its listed products' overviews while it streams.
    pub(super) fn pregenerates(&self, intent: Intent) -> bool {
        let likely =
            prior(intent).iter().any(|t| t.next == Intent::ProductQuestion && t.probability >= DEFAULT_THRESHOLD);
        self.cfg.pregen.mode.is_on() && self.cfg.context.pregen && likely
    }

    /// The early step's input, when this turn pre-generates.
    pub(super) fn early_input(
        &self,
        turn: &Turn,
        gathered: &Gathered,
        question: &str,
        request: &ModelRequest,
    ) -> Option<EarlyInput> {
        if !self.pregenerates(gathered.intent) {
            return None;
        }
        let job = self.prefetch_job_for(turn, gathered, question, String::new(), Vec::new());
        let values = gathered.context.values.iter().map(|(l, v)| (l.key(), v.clone())).collect();
        // Page-context products count too: a generation reads the product's record first (the cache, else
        // the product service) and generates nothing for one neither knows, so no overview is ever written
        // for a product that does not exist.
        let page: Vec<Asin> = turn.msg.page_context.asins().cloned().collect();
        let known = super::conclude::known_products(gathered, &page);
        // The order an answer names products in, as far as the prompt tells: the ones the question names,
        // the page the shopper is looking at, then the rest of the context.
        let prompt = request.messages.last().map_or("", |m| m.text.as_str());
        let section = |tag: compress::Tag| tag.section(prompt).unwrap_or_default();
        let sections = [compress::QUESTION, compress::PAGE, compress::CONTEXT].map(section);
        let mut expected: Vec<Asin> = Vec::new();
        for asin in sections.iter().flat_map(|s| Asin::all_in(s)) {
            if known.contains(&asin) && !expected.contains(&asin) && expected.len() < self.cfg.pregen.max {
                expected.push(asin);
            }
        }
        let reserve = self.prompter.sent_tokens(request) as u64 + u64::from(request.max_tokens);
        Some(EarlyInput { job, known, expected, values, reserve })
    }

    /// Starts the products the answer will most likely list at once (a head start, dropped if the answer
    /// ends without naming it), then watches the text shown until the stream is over, starting each other
    /// product the context holds as it is named (the first `PREGEN_MAX` named count), and waits for those
    /// started.
    pub(super) async fn pregenerate_early(
        &self,
        turn: &Turn,
        input: Option<EarlyInput>,
        mut shown: watch::Receiver<String>,
    ) -> Option<Early> {
        let EarlyInput { job, known, expected, values, reserve } = input?;
        // Pre-generation is paid work on the user's day: none for a day this turn may use up.
        let tier = if turn.who.guest { self.cfg.limits.guest } else { self.cfg.limits.user };
        if !self.limiter().has_room(&turn.who.user, tier, reserve).await {
            tracing::info!(reserve, "the user's day has no room for pre-generation");
            return None;
        }
        let generator =
            Generator { model: &self.model, prompter: &self.prompter, cfg: &self.cfg.pregen, clock: &self.clock };
        let mut early = Early::default();
        let mut started: Vec<Asin> = Vec::new();
        let mut named: Vec<Asin> = Vec::new();
        let mut runs = FuturesUnordered::new();
        let watcher = shown.clone();
        let start = |asin: Asin, text: &str, started: &mut Vec<Asin>| {
            // The conversation so far: this exchange as far as the shopper has read it.
            let mut job = job.clone();
            if let Some(last) = job.history.last_mut() {
                last.assistant = text.to_owned();
            }
            // The entries of the last list are counted as waste once, with the first.
            if !started.is_empty() {
                job.previous_products.clear();
            }
            job.products = vec![asin.clone()];
            started.push(asin.clone());
            let run = self.pregenerate_one(&generator, turn, job, &values);
            unless_unnamed(run, asin, watcher.clone())
        };
        for asin in expected {
            runs.push(start(asin, "", &mut started));
        }
        let mut open = true;
        loop {
            tokio::select! {
                changed = shown.changed(), if open => {
                    open = changed.is_ok();
                    let text = shown.borrow_and_update().clone();
                    for asin in Asin::all_in(&text) {
                        if named.len() >= self.cfg.pregen.max || named.contains(&asin) || !known.contains(&asin) {
                            continue;
                        }
                        named.push(asin.clone());
                        if !started.contains(&asin) {
                            runs.push(start(asin, &text, &mut started));
                        }
                    }
                }
                Some(run) = runs.next() => match run {
                    Some((report, ready)) => {
                        merge(&mut early.report, report);
                        early.ready_at.extend(ready);
                    }
                    None => early.unconfirmed += 1,
                },
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
            unconfirmed = early.unconfirmed,
            output_tokens = r.output_tokens,
            wasted_tokens = r.wasted_tokens,
            "pre-generated while streaming"
        );
    }
}

/// Runs `work` unless the stream ends without having shown `asin`: a head start the answer did not
/// confirm is dropped (its request cancelled) and gives `None`.
async fn unless_unnamed<F: Future>(work: F, asin: Asin, mut shown: watch::Receiver<String>) -> Option<F::Output> {
    let unconfirmed = async {
        loop {
            if Asin::all_in(&shown.borrow_and_update()).contains(&asin) {
                return std::future::pending::<()>().await;
            }
            if shown.changed().await.is_err() {
                if Asin::all_in(&shown.borrow()).contains(&asin) {
                    std::future::pending::<()>().await;
                }
                return;
            }
        }
    };
    tokio::select! {
        out = work => Some(out),
        () = unconfirmed => None,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NAMED: &str = "B03KAY3107";

    fn asin() -> Asin {
        Asin::parse(NAMED).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A generation that takes `ms` and says it finished.
    async fn generation(ms: u64) -> &'static str {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        "cached"
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_start_the_answer_never_names_is_dropped_when_the_stream_ends() {
        let (tx, rx) = watch::channel(String::new());
        let run = tokio::spawn(unless_unnamed(generation(1_000), asin(), rx));
        tx.send_replace("1. Star Hunter (B04G6OLIWV)".into());
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(tx);
        let started = Instant::now();
        assert_eq!(run.await.ok().flatten(), None);
        assert!(started.elapsed() < Duration::from_millis(50), "dropped at once, not awaited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_start_the_answer_names_runs_to_its_end_after_the_stream() {
        let (tx, rx) = watch::channel(String::new());
        let run = tokio::spawn(unless_unnamed(generation(1_000), asin(), rx));
        tx.send_replace(format!("1. Paper Diary ({NAMED})"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(tx);
        assert_eq!(run.await.ok().flatten(), Some("cached"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_generation_that_ends_before_the_stream_is_kept_whatever_the_answer_says() {
        let (tx, rx) = watch::channel(String::new());
        assert_eq!(unless_unnamed(generation(10), asin(), rx).await, Some("cached"));
        drop(tx);
    }
}
