//! The end-to-end benchmark: scripted conversations over real WebSocket connections, against the local
//! system (started in-process) or a deployed stage (`--url`).
//!
//! Per turn it measures, on the client: first-token latency (send -> first `delta`) and total latency
//! (send -> `completed`); and it takes the model's own first-token time from the Bedrock emulator's
//! record of that very request (joined on `requestMetadata.message_id`), or from the `completed` metrics
//! when the system is remote. `overhead = ttft - model_ttft` per turn is our share: gateway, handler,
//! SDK, relay, and the WebSocket hop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::bedrock::{BedrockEmulator, LatencyModel};
use crate::client::ChatClient;
use crate::memory::MemoryStore;
use crate::system::{SystemOptions, start};
use mangaassist_core::relay::RelayMode;

/// One scripted conversation: `{"messages":[{"text":"...","page_context":{...}}]}`.
#[derive(Debug, Clone, Deserialize)]
pub struct Conversation {
    pub messages: Vec<ScriptedMessage>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ScriptedMessage {
    pub text: String,
    #[serde(default)]
    pub page_context: Option<Value>,
}

/// The built-in conversations: English and Japanese, product questions, recommendations and follow-ups.
pub fn builtin_conversations() -> Vec<Conversation> {
    let c = |msgs: &[(&str, Value)]| Conversation {
        messages: msgs
            .iter()
            .map(|(t, pc)| ScriptedMessage { text: (*t).to_owned(), page_context: (!pc.is_null()).then(|| pc.clone()) })
            .collect(),
    };
    vec![
        c(&[
            (
                "Show me some horror manga",
                json!({"store_section":"horror","browsing_history":["B0UZUMAKI1","B0CHAINSAW"]}),
            ),
            ("Tell me more about the first one", json!({"current_asin":"B0UZUMAKI1"})),
            ("Is volume 1 in stock?", json!({"current_asin":"B0UZUMAKI1"})),
        ]),
        c(&[
            (
                "おすすめのファンタジー漫画はありますか?",
                json!({"store_section":"fantasy","browsing_history":["B0FRIEREN1","B0BERSERK1"]}),
            ),
            ("2つ目について詳しく教えて", json!({"current_asin":"B0BERSERK1"})),
            ("全巻セットはありますか?", Value::Null),
        ]),
        c(&[
            ("Where is my order 112-1234567-1234567?", Value::Null),
            ("Can I return a damaged volume?", json!({"current_asin":"B0ONEPIECE"})),
        ]),
        c(&[
            (
                "Something like Vagabond, but shorter?",
                json!({"current_asin":"B0VAGABOND","browsing_history":["B0VAGABOND","B0MONSTER1"]}),
            ),
            ("Which one has the best reviews?", json!({"browsing_history":["B0MONSTER1","B0AKIRA001"]})),
            ("Add the first one to my cart", json!({"cart_asins":["B0SPYFAMLY"]})),
        ]),
        c(&[
            ("今月のセールは?", json!({"store_section":"promotions"})),
            ("SPY×FAMILYの最新刊はいつ発売?", json!({"current_asin":"B0SPYFAMLY"})),
        ]),
    ]
}

/// Writes a report as pretty JSON.
fn write_json(path: &PathBuf, doc: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(doc)?)
        .with_context(|| format!("Failed to write {}", path.display()))?;
    eprintln!("bench: wrote {}", path.display());
    Ok(())
}

/// Reads one JSON value per non-empty line.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &PathBuf, what: &str) -> anyhow::Result<Vec<T>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("Failed to read {}", path.display()))?;
    let out: Vec<T> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not {what}", path.display(), i + 1)))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!out.is_empty(), "{} holds no {what}", path.display());
    Ok(out)
}

/// Reads conversations from a JSONL file.
pub fn read_script(path: &PathBuf) -> anyhow::Result<Vec<Conversation>> {
    let out: Vec<Conversation> = read_jsonl(path, "a conversation")?;
    anyhow::ensure!(out.iter().all(|c| !c.messages.is_empty()), "{}: a conversation needs messages", path.display());
    Ok(out)
}

/// p50/p95/p99 in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Pcts {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Exact percentiles (nearest rank) of a sample.
pub fn pcts(samples: &[f64]) -> Pcts {
    let d = dist(samples);
    Pcts { p50: d.p50, p95: d.p95, p99: d.p99 }
}

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
    first_errors: Vec<String>,
}

struct TurnSample {
    ttft_ms: f64,
    total_ms: f64,
    completed: Value,
    message_id: String,
}

async fn run_turn(client: &mut ChatClient, msg: &ScriptedMessage) -> anyhow::Result<TurnSample> {
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

/// Drives `conversations` conversations (cycling through `script`) at `concurrency` against `url`.
pub async fn run(
    url: &str,
    script: &[Conversation],
    conversations: usize,
    concurrency: usize,
    emulator: Option<&BedrockEmulator>,
    relay: &str,
) -> RunReport {
    let next = Arc::new(AtomicUsize::new(0));
    let acc = Arc::new(Mutex::new(Acc::default()));
    let script = Arc::new(script.to_vec());
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (next, acc, script, url) = (next.clone(), acc.clone(), script.clone(), url.to_owned());
        let emu = emulator.cloned();
        workers.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= conversations {
                    return;
                }
                let conv = &script[i % script.len()];
                let mut client = match ChatClient::connect(&url).await {
                    Ok(c) => c,
                    Err(e) => {
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
                            a.assembly.push(m["assembly_ms"].as_f64().unwrap_or(0.0));
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
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// What `mangaassist bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub url: Option<String>,
    pub script: Option<PathBuf>,
    pub conversations: Option<usize>,
    pub concurrency: Vec<usize>,
    pub relay: Vec<RelayMode>,
    pub quick: bool,
    pub post_latency: Duration,
    pub json: Option<PathBuf>,
}

fn relay_name(m: RelayMode) -> &'static str {
    match m {
        RelayMode::Coalesce => "coalesce",
        RelayMode::PerToken => "per_token",
    }
}

fn print_table(runs: &[RunReport]) {
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

/// Runs the bench and prints (and optionally writes) the report.
pub async fn main(opts: BenchOptions) -> anyhow::Result<()> {
    let script = match &opts.script {
        Some(p) => read_script(p)?,
        None => builtin_conversations(),
    };
    let mut runs = Vec::new();
    for &conc in &opts.concurrency {
        let conversations = opts.conversations.unwrap_or(match (opts.quick, conc) {
            (true, 1) => 3,
            (true, c) => c,
            (false, 1) => 10,
            (false, c) => c * 4,
        });
        if let Some(url) = &opts.url {
            eprintln!("bench: {conversations} conversations at concurrency {conc} against {url}");
            runs.push(run(url, &script, conversations, conc, None, "remote").await);
            continue;
        }
        for &mode in &opts.relay {
            let mut sys = SystemOptions::default();
            sys.emulator.latency = LatencyModel::bedrock_like();
            // This scenario measures our overhead, not Bedrock's capacity (that is `--scenario spike`).
            sys.emulator.capacity.on_demand_concurrency = usize::MAX;
            sys.turn.relay.mode = mode;
            sys.gateway.post_delay = opts.post_latency;
            let system = start(MemoryStore::default(), sys).await?;
            eprintln!("bench: {conversations} conversations at concurrency {conc}, relay {}", relay_name(mode));
            runs.push(
                run(&system.ws_url(), &script, conversations, conc, Some(&system.emulator), relay_name(mode)).await,
            );
        }
    }
    print_table(&runs);
    if let Some(path) = &opts.json {
        let mut doc: BTreeMap<&str, Value> = BTreeMap::new();
        if let Some(first) = runs.first() {
            let v = serde_json::to_value(first)?;
            for k in ["ttft_ms", "model_ttft_ms", "overhead_ms", "total_ms", "turns", "errors", "frames_per_turn"] {
                doc.insert(k, v[k].clone());
            }
        }
        doc.insert("runs", serde_json::to_value(&runs)?);
        write_json(path, &doc)?;
    }
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} turns failed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = pcts(&v);
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        assert_eq!(pcts(&[]).p99, 0.0);
    }
}

/// p50/p80/p95/p99/max.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Dist {
    pub p50: f64,
    pub p80: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Exact distribution (nearest rank) of a sample.
pub fn dist(samples: &[f64]) -> Dist {
    if samples.is_empty() {
        return Dist::default();
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let q = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Dist { p50: q(0.5), p80: q(0.8), p95: q(0.95), p99: q(0.99), max: v[v.len() - 1] }
}

/// What `bench --scenario compression` was asked to do.
#[derive(Debug, Clone)]
pub struct CompressionOptions {
    pub corpus: Option<PathBuf>,
    pub requests: usize,
    pub seed: u64,
    /// Also compare end-to-end TTFT with compression on and off (long conversations over WebSocket).
    pub e2e: bool,
    pub quick: bool,
    pub json: Option<PathBuf>,
}

fn read_corpus(path: &PathBuf) -> anyhow::Result<Vec<crate::corpus::CorpusRequest>> {
    read_jsonl(path, "a corpus request")
}

/// Long conversations for the end-to-end comparison: `turns` questions each, from the generator.
fn long_conversations(seed: u64, n: usize, turns: usize) -> Vec<Conversation> {
    let mut g = crate::corpus::Generator::new(seed, 300);
    (0..n)
        .map(|_| {
            let r = g.request();
            let page = Some(Value::Object(r.page_context.clone()));
            let mut messages = Vec::with_capacity(turns);
            for _ in 0..turns {
                let q = g.request().user_message;
                messages.push(ScriptedMessage { text: q, page_context: page.clone() });
            }
            Conversation { messages }
        })
        .collect()
}

/// Raw vs compressed tokens, compression ratio and CPU time per compression over a corpus; optionally the
/// end-to-end TTFT with compression on and off.
pub async fn compression(opts: CompressionOptions) -> anyhow::Result<()> {
    use mangaassist_core::compress::{CompressInput, PromptBudget, PromptCompressor, RagChunk, raw_tokens};
    use mangaassist_core::intent::{self, Intent};
    use mangaassist_core::ports::{ChatMessage, Role};
    use mangaassist_core::tokenizer::{Cl100k, Tokenizer};

    // Cold initialisation of the BPE tables: the first count in this process.
    let t = std::time::Instant::now();
    let _ = Cl100k.count("warm up");
    let tokenizer_init_ms = t.elapsed().as_secs_f64() * 1000.0;

    let requests = match &opts.corpus {
        Some(p) => read_corpus(p)?,
        None => crate::corpus::generate(opts.seed, opts.requests),
    };
    let budget = PromptBudget::default();
    let compressor = PromptCompressor::new(budget);
    let (mut raw, mut sent, mut ratio, mut us, mut us_cached, mut over, mut rejected) =
        (vec![], vec![], vec![], vec![], vec![], 0u64, 0u64);
    let mut per_intent: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
    for r in &requests {
        let conversation: Vec<ChatMessage> = r
            .conversation
            .iter()
            .map(|m| ChatMessage {
                role: if m.role == "assistant" { Role::Assistant } else { Role::User },
                text: m.content.clone(),
            })
            .collect();
        let chunks: Vec<RagChunk> = r
            .rag_chunks
            .iter()
            .map(|c| RagChunk { content: c.content.clone(), score: c.score, tokens: None })
            .collect();
        let start = std::time::Instant::now();
        let intent = match r.intent.as_deref().and_then(Intent::parse) {
            Some(i) => i,
            None => intent::classify(&r.user_message, &intent::extract(&r.user_message, &[])),
        };
        let mut input = CompressInput {
            system_prompt: &r.system_prompt,
            rag_chunks: &chunks,
            conversation: &conversation,
            conversation_tokens: &[],
            summary: r.summary.as_deref(),
            page_context: &r.page_context,
            notes: &[],
            user_message: &r.user_message,
            intent,
        };
        let out = compressor.compress(&Cl100k, &input, &budget);
        let elapsed_us = start.elapsed().as_secs_f64() * 1e6;
        let Ok(out) = out else {
            rejected += 1;
            continue;
        };
        us.push(elapsed_us);
        let exact = Cl100k.count(&out.system) + Cl100k.count(&out.user);
        let r_tokens = raw_tokens(&Cl100k, &input).max(1);
        if exact > budget.total {
            over += 1;
        }
        raw.push(r_tokens as f64);
        sent.push(exact as f64);
        ratio.push(exact as f64 / r_tokens as f64);
        let e = per_intent.entry(intent.as_str()).or_default();
        e.0 += 1;
        e.1 += exact as f64 / r_tokens as f64;

        // As in production: stored turns and indexed chunks carry their counts (made off the critical path).
        let known: Vec<Option<usize>> = conversation.iter().map(|m| Some(Cl100k.count(m.text.trim()))).collect();
        let counted: Vec<RagChunk> =
            chunks.iter().map(|c| RagChunk { tokens: Some(Cl100k.count(c.content.trim())), ..c.clone() }).collect();
        input.rag_chunks = &counted;
        input.conversation_tokens = &known;
        let start = std::time::Instant::now();
        let again = compressor.compress(&Cl100k, &input, &budget);
        us_cached.push(start.elapsed().as_secs_f64() * 1e6);
        if let Ok(p) = again
            && Cl100k.count(&p.system) + Cl100k.count(&p.user) > budget.total
        {
            over += 1;
        }
    }
    let (raw_d, sent_d, ratio_d, us_d, us_cached_d) =
        (dist(&raw), dist(&sent), dist(&ratio), dist(&us), dist(&us_cached));
    let under_2000 = sent.iter().filter(|&&t| t < 2000.0).count() as f64 / sent.len().max(1) as f64 * 100.0;
    println!("compression over {} requests ({} rejected as over-long messages)", sent.len(), rejected);
    println!("| metric | p50 | p80 | p95 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, d: &Dist, prec: usize| {
        println!(
            "| {name} | {:.prec$} | {:.prec$} | {:.prec$} | {:.prec$} | {:.prec$} |",
            d.p50, d.p80, d.p95, d.p99, d.max
        );
    };
    row("raw tokens", &raw_d, 0);
    row("prompt tokens", &sent_d, 0);
    row("compression ratio", &ratio_d, 3);
    row("compress CPU µs, nothing counted before", &us_d, 1);
    row("compress CPU µs, stored counts (production)", &us_cached_d, 1);
    println!(
        "over budget: {over}; prompts under 2,000 tokens: {under_2000:.1}%; tokenizer cold init: {tokenizer_init_ms:.1} ms"
    );
    let by_intent: BTreeMap<&str, f64> = per_intent.iter().map(|(k, (n, s))| (*k, s / *n as f64)).collect();
    println!("mean compression ratio by intent: {by_intent:?}");

    let mut doc = json!({
        "raw_tokens": raw_d, "prompt_tokens": sent_d, "compression_ratio": ratio_d, "compress_us": us_d, "compress_us_stored_counts": us_cached_d,
        "over_budget": over, "rejected": rejected, "requests": sent.len(), "under_2000_pct": under_2000,
        "tokenizer_init_ms": tokenizer_init_ms, "compression_ratio_by_intent": by_intent,
    });

    if opts.e2e {
        let (convs, turns) = if opts.quick { (4, 6) } else { (8, 12) };
        let script = long_conversations(opts.seed, convs, turns);
        let mut runs = Vec::new();
        for on in [true, false] {
            let mut sys = SystemOptions::default();
            sys.turn.compression = on;
            let system = start(MemoryStore::default(), sys).await?;
            let label = if on { "compressed" } else { "uncompressed" };
            eprintln!("bench: {convs} conversations of {turns} turns, prompt {label}");
            runs.push(run(&system.ws_url(), &script, convs, convs, Some(&system.emulator), label).await);
        }
        print_table(&runs);
        doc["ttft_ms_compressed"] = serde_json::to_value(runs[0].ttft_ms)?;
        doc["ttft_ms_uncompressed"] = serde_json::to_value(runs[1].ttft_ms)?;
        doc["input_tokens_per_turn_compressed"] = json!(runs[0].input_tokens_per_turn);
        doc["input_tokens_per_turn_uncompressed"] = json!(runs[1].input_tokens_per_turn);
        println!(
            "billed input tokens per turn: compressed {:.0}, uncompressed {:.0}",
            runs[0].input_tokens_per_turn, runs[1].input_tokens_per_turn
        );
    }
    if let Some(path) = &opts.json {
        write_json(path, &doc)?;
    }
    anyhow::ensure!(over == 0, "{over} prompts over budget");
    Ok(())
}

/// A route loader the bench sets once its provisioned throughput is in service.
#[derive(Clone, Default)]
struct SharedRoute(Arc<std::sync::Mutex<Option<String>>>);

impl mangaassist_core::routes::RouteLoader for SharedRoute {
    fn provisioned_arn(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Option<String>, mangaassist_core::error::StoreError>> {
        let arn = self.0.lock().ok().and_then(|a| a.clone());
        Box::pin(async move { Ok(arn) })
    }
}

/// What `bench --scenario spike` was asked to do.
#[derive(Debug, Clone)]
pub struct SpikeOptions {
    /// Concurrency of each phase of the ramp.
    pub steps: Vec<usize>,
    /// Model units bought for the provisioned run.
    pub model_units: u32,
    pub json: Option<PathBuf>,
}

/// Ramps concurrency against on-demand-only routing and against provisioned routing, side by side.
pub async fn spike(opts: SpikeOptions) -> anyhow::Result<()> {
    use mangaassist_core::routes::Routes;
    let script: Vec<Conversation> = builtin_conversations();
    let mut report = serde_json::Map::new();
    let mut rows = Vec::new();
    for provisioned in [false, true] {
        let label = if provisioned { "provisioned" } else { "on_demand" };
        let mut sys = SystemOptions::default();
        sys.turn.fallback_model_id = Some("anthropic.claude-3-haiku-20240307-v1:0".to_owned());
        let route = SharedRoute::default();
        let routes = Routes::new(route.clone(), Duration::from_secs(1));
        let system = crate::system::start_routed(MemoryStore::default(), sys, routes).await?;
        if provisioned {
            let arn = buy_provisioned(&system.emulator, opts.model_units).await?;
            if let Ok(mut r) = route.0.lock() {
                *r = Some(arn);
            }
        }
        let throttled_before = system.emulator.stats.throttled();
        let (mut ttft, mut failovers, mut errors, mut turns) = (Vec::new(), 0u64, 0u64, 0u64);
        for &conc in &opts.steps {
            eprintln!("bench: spike {label}: {conc} concurrent conversations");
            let r = run(&system.ws_url(), &script, conc * 2, conc, Some(&system.emulator), label).await;
            failovers += r.failovers;
            errors += r.errors;
            turns += r.turns;
            ttft.push(r.ttft_ms);
            rows.push(r);
        }
        let throttled = system.emulator.stats.throttled() - throttled_before;
        report.insert(
            label.to_owned(),
            json!({
                "ttft_ms_by_step": ttft, "throttled": throttled, "failovers": failovers,
                "client_errors": errors, "turns": turns, "steps": opts.steps,
                "ttft_ms": rows.last().map(|r| r.ttft_ms),
            }),
        );
    }
    print_table(&rows);
    for label in ["on_demand", "provisioned"] {
        let v = &report[label];
        println!(
            "{label}: throttled {} failovers {} client errors {} over {} turns",
            v["throttled"], v["failovers"], v["client_errors"], v["turns"]
        );
    }
    if let Some(path) = &opts.json {
        write_json(path, &Value::Object(report))?;
    }
    Ok(())
}

/// Buys provisioned throughput from the emulator's control plane with the real `aws-sdk-bedrock` client
/// and waits until it is in service.
async fn buy_provisioned(emulator: &BedrockEmulator, units: u32) -> anyhow::Result<String> {
    use mangaassist_adapters::bedrock_control::BedrockControl;
    use mangaassist_core::throughput::{ThroughputControl, ThroughputSpec, ThroughputStatus};
    emulator.control.set_creating_delay(Duration::from_millis(200));
    let sdk = mangaassist_adapters::sdk::local(&emulator.url()).await;
    let control = BedrockControl::new(&sdk);
    let spec = ThroughputSpec {
        name: "bench-spike".to_owned(),
        model_id: "anthropic.claude-3-5-haiku-20241022-v1:0".to_owned(),
        model_units: units,
        commitment: None,
    };
    let arn = control.create(&spec, "bench-spike-1").await.map_err(|e| anyhow::anyhow!("create failed: {e}"))?;
    for _ in 0..100 {
        let now = control.get(&arn).await.map_err(|e| anyhow::anyhow!("get failed: {e}"))?;
        if now.as_ref().is_some_and(|p| p.status == ThroughputStatus::InService) {
            return Ok(arn);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("provisioned throughput did not reach InService")
}

/// Sequential vs parallel context assembly over the same turns, with the design's latency profile
/// (memory 50 ms, retrieval 200 ms, product services 100 ms; classification here takes microseconds).
pub async fn context(quick: bool, json_path: Option<PathBuf>) -> anyhow::Result<()> {
    use crate::system::SourceLatency;
    let script = builtin_conversations();
    let conversations = if quick { 3 } else { 10 };
    let mut runs = Vec::new();
    for sequential in [true, false] {
        let mut sys = SystemOptions { sources: SourceLatency::design(), ..SystemOptions::default() };
        sys.turn.context.sequential = sequential;
        // Generous deadlines: this measures the shapes, not the cut-offs.
        sys.turn.context.overall = Duration::from_secs(2);
        sys.turn.context.retrieval = Duration::from_secs(1);
        sys.turn.context.services = Duration::from_secs(1);
        let store = MemoryStore::with_latency(Duration::from_millis(50));
        let system = start(store, sys).await?;
        let label = if sequential { "sequential" } else { "parallel" };
        eprintln!("bench: {conversations} conversations, {label} context assembly");
        runs.push(run(&system.ws_url(), &script, conversations, 1, Some(&system.emulator), label).await);
    }
    print_table(&runs);
    println!("| assembly | p50 ms | p95 ms |\n|---|---|---|");
    for r in &runs {
        println!("| {} | {:.1} | {:.1} |", r.relay, r.assembly_ms.p50, r.assembly_ms.p95);
    }
    let doc = json!({
        "assembly_ms_sequential": runs[0].assembly_ms, "assembly_ms_parallel": runs[1].assembly_ms,
        "ttft_ms_sequential": runs[0].ttft_ms, "ttft_ms_parallel": runs[1].ttft_ms,
    });
    if let Some(path) = &json_path {
        write_json(path, &doc)?;
    }
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} turns failed");
    Ok(())
}

/// Follow-up TTFT with speculative prefetch on and off, side by side. Each conversation asks for a
/// recommendation, then the predicted follow-up ("tell me more about the first one"), then one the
/// transition table does not predict (an order question). Between turns the bench waits for outstanding
/// prefetch work (a shopper takes seconds to type; prefetch takes a few hundred milliseconds).
pub async fn followups(quick: bool, json_path: Option<PathBuf>) -> anyhow::Result<()> {
    use crate::system::SourceLatency;
    let conversations = if quick { 4 } else { 12 };
    let mut report = serde_json::Map::new();
    let mut medians = Vec::new();
    for prefetch in [true, false] {
        let sys = SystemOptions { sources: SourceLatency::design(), prefetch, ..SystemOptions::default() };
        let system = start(MemoryStore::with_latency(Duration::from_millis(50)), sys).await?;
        let products: Vec<_> = system.services.catalog().products().iter().take(conversations * 3).cloned().collect();
        let (mut predicted, mut unpredicted, mut hits, mut lookups, mut errors) = (vec![], vec![], 0u64, 0u64, 0u64);
        let mut completed = 0u64;
        let label = if prefetch { "prefetch" } else { "no_prefetch" };
        eprintln!("bench: {conversations} conversations with follow-ups, {label}");
        for i in 0..conversations {
            let group = &products[i * 3..i * 3 + 3];
            let page = json!({
                "store_section": group[0].genre,
                "browsing_history": group.iter().map(|p| p.asin.clone()).collect::<Vec<_>>(),
            });
            let turns = [
                (format!("Can you recommend something like {}?", group[0].title_en), Some(page)),
                ("Tell me more about the first one".to_owned(), None),
                ("Where is my order 112-4433221-7788990?".to_owned(), None),
            ];
            let mut client = ChatClient::connect(&system.ws_url()).await?;
            for (n, (text, page)) in turns.iter().enumerate() {
                let msg = ScriptedMessage { text: text.clone(), page_context: page.clone() };
                match run_turn(&mut client, &msg).await {
                    Ok(s) => {
                        let m = &s.completed["metrics"];
                        match n {
                            1 => {
                                predicted.push(s.ttft_ms);
                                hits += m["cache_hits"].as_array().map_or(0, |a| a.len() as u64);
                                lookups += m["cache_lookups"].as_u64().unwrap_or(0);
                            }
                            2 => unpredicted.push(s.ttft_ms),
                            _ => {}
                        }
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("  error: {e:#}");
                    }
                }
                completed += 1;
                if let Some(q) = &system.prefetch {
                    q.drain_after(completed, Duration::from_secs(2)).await;
                }
            }
            client.close().await;
        }
        let hit_rate = if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 };
        medians.push(pcts(&predicted));
        report.insert(
            label.to_owned(),
            json!({ "followup_ttft_ms": pcts(&predicted), "unpredicted_ttft_ms": pcts(&unpredicted),
                    "hit_rate": hit_rate, "errors": errors }),
        );
    }
    let (on, off) = (medians[0], medians[1]);
    let reduction = if off.p50 > 0.0 { (off.p50 - on.p50) / off.p50 * 100.0 } else { 0.0 };
    let hit_rate = report["prefetch"]["hit_rate"].clone();
    println!("| follow-up | ttft p50 ms | ttft p95 ms |\n|---|---|---|");
    println!("| predicted, prefetch on | {:.1} | {:.1} |", on.p50, on.p95);
    println!("| predicted, prefetch off | {:.1} | {:.1} |", off.p50, off.p95);
    for label in ["prefetch", "no_prefetch"] {
        let u = &report[label]["unpredicted_ttft_ms"];
        println!(
            "| unpredicted, {label} | {:.1} | {:.1} |",
            u["p50"].as_f64().unwrap_or(0.0),
            u["p95"].as_f64().unwrap_or(0.0)
        );
    }
    println!("reduction of the predicted follow-up's TTFT (p50): {reduction:.1}%; prefetch hit rate: {hit_rate}");
    let doc = json!({
        "followup_ttft_ms_prefetch": on, "followup_ttft_ms_no_prefetch": off,
        "reduction_pct": reduction, "hit_rate": hit_rate, "detail": report,
    });
    if let Some(path) = &json_path {
        write_json(path, &doc)?;
    }
    Ok(())
}
