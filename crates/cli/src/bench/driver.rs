//! Runs scripted conversations over real WebSocket connections and measures each turn on the client:
//! first-token latency (send -> first `delta`) and total latency (send -> `completed`). The model's own
//! first-token time comes from the Bedrock emulator's record of that very request (joined on
//! `requestMetadata.message_id`), or from the `completed` metrics when the system is remote;
//! `overhead = ttft - model_ttft` per turn is our share: gateway, handler, SDK, relay, and the WebSocket hop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::report::Recorder;
use super::stats::{Pcts, pcts};
use super::{Conversation, ScriptedMessage};
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::BedrockEmulator;

/// Results of one run (one system configuration at one concurrency).
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub relay: String,
    pub concurrency: usize,
    pub conversations: usize,
    pub turns: u64,
    pub errors: u64,
    pub ttft_ms: Pcts,
    pub model_ttft_ms: Pcts,
    pub overhead_ms: Pcts,
    pub total_ms: Pcts,
    pub frames_per_turn: f64,
    pub output_tokens_per_turn: f64,
    /// Input tokens the model reported, per turn.
    pub input_tokens_per_turn: f64,
    /// Turns that failed over to another route before their first token.
    pub failovers: u64,
    /// Context assembly as the turns reported it.
    pub assembly_ms: Pcts,
    /// Each turn's slowest context leg (memory, retrieval, or the cache read and the service calls after
    /// it), and how much longer than it the whole assembly took (what a chain of legs costs).
    pub slowest_leg_ms: Pcts,
    pub assembly_excess_ms: Pcts,
    pub wall_s: f64,
}

#[derive(Default)]
struct Acc {
    ttft: Vec<f64>,
    model: Vec<f64>,
    overhead: Vec<f64>,
    total: Vec<f64>,
    turns: u64,
    errors: u64,
    frames: u64,
    out_tokens: u64,
    in_tokens: u64,
    failovers: u64,
    assembly: Vec<f64>,
    slowest_leg: Vec<f64>,
    excess: Vec<f64>,
    first_errors: Vec<String>,
}

pub struct TurnSample {
    pub ttft_ms: f64,
    pub total_ms: f64,
    pub completed: Value,
    pub message_id: String,
}

/// Sends one message and waits for its `completed` event.
pub async fn run_turn(client: &mut ChatClient, msg: &ScriptedMessage) -> anyhow::Result<TurnSample> {
    let t0 = Instant::now();
    let id = client.send_message(&msg.text, msg.page_context.as_ref()).await?;
    let mut first = None;
    loop {
        let ev = client.next_event(Duration::from_secs(30)).await?;
        if ev.get("message_id").and_then(Value::as_str) != Some(id.as_str()) {
            continue;
        }
        match ev.get("type").and_then(Value::as_str) {
            Some("delta") => {
                first.get_or_insert_with(|| t0.elapsed());
            }
            Some("completed") => {
                let total = t0.elapsed();
                let first = first.context("completed without any delta")?;
                return Ok(TurnSample {
                    ttft_ms: first.as_secs_f64() * 1000.0,
                    total_ms: total.as_secs_f64() * 1000.0,
                    completed: ev,
                    message_id: id,
                });
            }
            Some("error") => anyhow::bail!("error event: {ev}"),
            _ => {}
        }
    }
}

/// Drives `conversations` conversations (cycling through `script`) at `concurrency` against `url`; a `url`
/// without a token gets one shopper per conversation, signed in at the `serve` behind it. Each turn goes to
/// `rec` under the label `<relay> · <concurrency> at once`.
pub async fn run(
    url: &str,
    script: &[Conversation],
    conversations: usize,
    concurrency: usize,
    emulator: Option<&BedrockEmulator>,
    relay: &str,
    rec: &Recorder,
) -> RunReport {
    let next = Arc::new(AtomicUsize::new(0));
    let acc = Arc::new(Mutex::new(Acc::default()));
    let script = Arc::new(script.to_vec());
    let started = Instant::now();
    let label = format!("{relay} · {concurrency} at once");
    let expected: usize = (0..conversations).map(|i| script[i % script.len().max(1)].messages.len()).sum();
    let progress = Arc::new(super::report::Progress::start(&label, expected as u64));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, acc, script, url) = (next.clone(), acc.clone(), script.clone(), url.to_owned());
        let (progress, label, rec) = (progress.clone(), label.clone(), rec.clone());
        let emu = emulator.cloned();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= conversations {
                    return;
                }
                let conv = &script[i % script.len()];
                // A URL without a token (a local `serve`, in-process or not) gets one shopper per conversation.
                let connected = match mangaassist_local::client::authenticated(&url, &format!("bench-{i}")).await {
                    Ok(url) => ChatClient::connect(&url).await,
                    Err(e) => Err(e),
                };
                let mut client = match connected {
                    Ok(c) => c,
                    Err(e) => {
                        for _ in &conv.messages {
                            progress.tick();
                            rec.record_error(&label);
                        }
                        let mut a = acc.lock().await;
                        a.errors += conv.messages.len() as u64;
                        if a.first_errors.len() < 3 {
                            a.first_errors.push(format!("{e:#}"));
                        }
                        continue;
                    }
                };
                for msg in &conv.messages {
                    let res = run_turn(&mut client, msg).await;
                    progress.tick();
                    match &res {
                        Ok(s) => rec.record(&label, s),
                        Err(_) => rec.record_error(&label),
                    }
                    let mut a = acc.lock().await;
                    match res {
                        Ok(s) => {
                            let m = &s.completed["metrics"];
                            let model = emu
                                .as_ref()
                                .and_then(|e| {
                                    e.stats.for_message(&s.message_id).last().and_then(|r| r.first_token_ms())
                                })
                                .or_else(|| m["model_first_token_ms"].as_f64())
                                .unwrap_or(0.0);
                            a.turns += 1;
                            a.frames += m["frames"].as_u64().unwrap_or(0);
                            a.out_tokens += m["output_tokens"].as_u64().unwrap_or(0);
                            a.in_tokens += m["input_tokens"].as_u64().unwrap_or(0);
                            a.failovers += m["failovers"].as_u64().unwrap_or(0);
                            let assembly = m["assembly_ms"].as_f64().unwrap_or(0.0);
                            let leg = |k: &str| m["legs"][k].as_f64().unwrap_or(0.0);
                            let slowest =
                                leg("memory_ms").max(leg("retrieval_ms")).max(leg("cache_ms") + leg("services_ms"));
                            a.assembly.push(assembly);
                            a.slowest_leg.push(slowest);
                            a.excess.push(assembly - slowest);
                            a.ttft.push(s.ttft_ms);
                            a.total.push(s.total_ms);
                            a.model.push(model);
                            a.overhead.push(s.ttft_ms - model);
                        }
                        Err(e) => {
                            a.errors += 1;
                            if a.first_errors.len() < 3 {
                                a.first_errors.push(format!("{e:#}"));
                            }
                        }
                    }
                }
                client.close().await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let a = acc.lock().await;
    for e in &a.first_errors {
        eprintln!("  error: {e}");
    }
    let per_turn = |x: u64| if a.turns == 0 { 0.0 } else { x as f64 / a.turns as f64 };
    RunReport {
        relay: relay.to_owned(),
        concurrency,
        conversations,
        turns: a.turns,
        errors: a.errors,
        ttft_ms: pcts(&a.ttft),
        model_ttft_ms: pcts(&a.model),
        overhead_ms: pcts(&a.overhead),
        total_ms: pcts(&a.total),
        frames_per_turn: per_turn(a.frames),
        output_tokens_per_turn: per_turn(a.out_tokens),
        input_tokens_per_turn: per_turn(a.in_tokens),
        failovers: a.failovers,
        assembly_ms: pcts(&a.assembly),
        slowest_leg_ms: pcts(&a.slowest_leg),
        assembly_excess_ms: pcts(&a.excess),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// Prints runs as a Markdown table.
#[expect(clippy::print_stdout, reason = "the runs' table is the command's output (progress goes to stderr)")]
pub fn print_table(runs: &[RunReport]) {
    println!(
        "| relay | conc | turns | err | ttft p50/p95/p99 ms | model ttft p50/p95/p99 ms | overhead p50/p95/p99 ms | total p50/p95/p99 ms | frames/turn | out tok/turn |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let f = |p: &Pcts| format!("{:.1} / {:.1} / {:.1}", p.p50, p.p95, p.p99);
    let g = |p: &Pcts| format!("{:.2} / {:.2} / {:.2}", p.p50, p.p95, p.p99);
    for r in runs {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} |",
            r.relay,
            r.concurrency,
            r.turns,
            r.errors,
            f(&r.ttft_ms),
            f(&r.model_ttft_ms),
            g(&r.overhead_ms),
            f(&r.total_ms),
            r.frames_per_turn,
            r.output_tokens_per_turn
        );
    }
}
