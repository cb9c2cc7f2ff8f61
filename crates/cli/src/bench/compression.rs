//! `bench --scenario compression`: raw vs compressed prompt tokens, compression ratio and CPU time per
//! compression over a corpus; optionally the end-to-end TTFT with compression on and off.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mangaassist_core::ports::memory::MemoryStore;
use serde_json::json;

use super::driver::{print_table, run};
use super::report::Recorder;
use super::stats::{Dist, dist, write_json};
use super::{Conversation, ScriptedMessage, read_jsonl};
use mangaassist_local::system::{SystemOptions, start};

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

fn read_corpus(path: &PathBuf) -> anyhow::Result<Vec<mangaassist_local::embedded::corpus::CorpusRequest>> {
    read_jsonl(path, "a corpus request")
}

/// Long conversations for the end-to-end comparison: `turns` questions each, from the generator.
fn long_conversations(seed: u64, n: usize, turns: usize) -> Vec<Conversation> {
    let mut g = mangaassist_local::embedded::corpus::Generator::new(seed, 300);
    (0..n)
        .map(|_| {
            let r = g.request();
            let page = serde_json::to_value(&r.page_context).ok();
            let mut messages = Vec::with_capacity(turns);
            for _ in 0..turns {
                let q = g.request().user_message;
                messages.push(ScriptedMessage { text: q, page_context: page.clone(), expect: None });
            }
            Conversation { messages }
        })
        .collect()
}

/// Runs `f` once: its result and its time, µs.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let start = std::time::Instant::now();
    let v = f();
    (v, start.elapsed().as_secs_f64() * 1e6)
}

/// Passes over the corpus; each request's CPU cost is its fastest pass. The passes are seconds apart, so
/// the slow phases of a shared 2-vCPU machine (which single runs turned into a 1.5-2x spread at p99) are
/// left out, and what remains is the cost of the request itself.
const PASSES: usize = 3;

/// Raw vs compressed tokens, compression ratio and CPU time per compression over a corpus; optionally the
/// end-to-end TTFT with compression on and off.
#[expect(clippy::print_stdout, reason = "the scenario's tables are the command's output (progress goes to stderr)")]
pub async fn compression(opts: CompressionOptions, rec: &Recorder) -> anyhow::Result<()> {
    use mangaassist_core::intent::{self, Intent};
    use mangaassist_core::ports::sources::Passage;
    use mangaassist_core::ports::{ChatMessage, Role};
    use mangaassist_core::prompt::compress::{CompressInput, PromptBudget, PromptCompressor, raw_tokens};
    use mangaassist_core::tokenizer::{Cl100k, Tokenizer};

    // Cold initialisation of the BPE tables: the first count in this process.
    let t = std::time::Instant::now();
    let _ = Cl100k.count("warm up");
    let tokenizer_init_ms = t.elapsed().as_secs_f64() * 1000.0;

    let requests = match &opts.corpus {
        Some(p) => read_corpus(p)?,
        None => mangaassist_local::embedded::corpus::generate(opts.seed, opts.requests),
    };
    let budget = PromptBudget::default();
    let compressor = PromptCompressor::new(budget);
    let (mut raw, mut sent, mut ratio, mut over, mut rejected) = (vec![], vec![], vec![], 0u64, 0u64);
    // Per request: the fastest pass of each path (nothing counted, first turn, later turns), µs.
    let mut best = vec![[f64::INFINITY; 3]; requests.len()];
    let mut per_intent: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
    for (pass, (i, r)) in (0..PASSES).flat_map(|p| requests.iter().enumerate().map(move |r| (p, r))) {
        let first_pass = pass == 0;
        let conversation: Vec<ChatMessage> = r
            .conversation
            .iter()
            .map(|m| ChatMessage {
                role: if m.role == "assistant" { Role::Assistant } else { Role::User },
                text: m.content.clone(),
            })
            .collect();
        let chunks: Vec<Passage> =
            r.rag_chunks.iter().map(|c| Passage { content: c.content.clone(), score: c.score, tokens: None }).collect();
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
        let classify_us = start.elapsed().as_secs_f64() * 1e6;
        // Nothing counted before, not even by an earlier request: the worst case, for reference.
        let (out, elapsed_us) = timed(|| {
            compressor.counts.clear();
            compressor.compress(&Cl100k, &input, &budget)
        });
        let Ok(out) = out else {
            rejected += u64::from(first_pass);
            best[i] = [f64::NAN; 3];
            continue;
        };
        best[i][0] = best[i][0].min(classify_us + elapsed_us);
        let exact = Cl100k.count(&out.system) + Cl100k.count(&out.user);
        let r_tokens = raw_tokens(&Cl100k, &input).max(1);
        if first_pass {
            over += u64::from(exact > budget.total);
            raw.push(r_tokens as f64);
            sent.push(exact as f64);
            ratio.push(exact as f64 / r_tokens as f64);
            let e = per_intent.entry(intent.as_str()).or_default();
            e.0 += 1;
            e.1 += exact as f64 / r_tokens as f64;
        }

        // The first turn of a session, as production runs it: passages fresh from the index carry the count
        // made when they were indexed (the embedded index and the OpenSearch `tokens` field), and there is
        // no history yet.
        let counted: Vec<Passage> =
            chunks.iter().map(|c| Passage { tokens: Some(Cl100k.count(c.content.trim())), ..c.clone() }).collect();
        input.rag_chunks = &counted;
        let first_turn = CompressInput { conversation: &[], conversation_tokens: &[], summary: None, ..input };
        let (first, first_us) = timed(|| {
            compressor.counts.clear();
            compressor.compress(&Cl100k, &first_turn, &budget)
        });
        best[i][1] = best[i][1].min(classify_us + first_us);

        // Later turns: stored turns carry their counts too (made off the critical path).
        let known: Vec<Option<usize>> = conversation.iter().map(|m| Some(Cl100k.count(m.text.trim()))).collect();
        input.conversation_tokens = &known;
        let (again, again_us) = timed(|| compressor.compress(&Cl100k, &input, &budget));
        best[i][2] = best[i][2].min(classify_us + again_us);
        for p in [first, again].into_iter().flatten().filter(|_| first_pass) {
            over += u64::from(Cl100k.count(&p.system) + Cl100k.count(&p.user) > budget.total);
        }
    }
    let path = |k: usize| -> Vec<f64> { best.iter().map(|b| b[k]).filter(|t| t.is_finite()).collect() };
    let (us, us_first, us_cached) = (path(0), path(1), path(2));
    let (raw_d, sent_d, ratio_d, us_d, us_first_d, us_cached_d) =
        (dist(&raw), dist(&sent), dist(&ratio), dist(&us), dist(&us_first), dist(&us_cached));
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
    row("compress CPU µs, nothing ever counted (reference)", &us_d, 1);
    row("compress CPU µs, first turn of a session (passages counted at indexing)", &us_first_d, 1);
    row("compress CPU µs, later turns (history with stored counts)", &us_cached_d, 1);
    println!(
        "over budget: {over}; prompts under 2,000 tokens: {under_2000:.1}%; tokenizer cold init: {tokenizer_init_ms:.1} ms"
    );
    let by_intent: BTreeMap<&str, f64> = per_intent.iter().map(|(k, (n, s))| (*k, s / *n as f64)).collect();
    println!("mean compression ratio by intent: {by_intent:?}");

    let mut doc = json!({
        "raw_tokens": raw_d, "prompt_tokens": sent_d, "compression_ratio": ratio_d, "compress_us": us_d, "compress_us_first_turn": us_first_d, "compress_us_stored_counts": us_cached_d,
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
            runs.push(run(&system.bare_ws_url(), &script, convs, convs, Some(&system.emulator), label, rec).await);
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
