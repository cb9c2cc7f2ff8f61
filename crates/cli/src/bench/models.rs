//! `bench --scenario models`: the same held conversations answered with one model for everything and with
//! per-intent routing, and each request lever on and off, reported per intent, with the seed's criteria
//! (first token p95 < 400 ms; a full answer under 500 tokens in < 1.5 s) as pass/fail lines.
//!
//! The model speeds and lever effects are the emulator's (documented, with their sources, in
//! `emulators/models.rs`); what is measured is what the shopper would see through our system with them:
//! context assembly under the design's latency profile, routing, compression, the relay.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mangaassist_core::intent::Intent;
use mangaassist_core::models::{CLAUDE_HAIKU_4_5, Levers, ModelRouting};
use mangaassist_core::ports::memory::MemoryStore;
use serde::Serialize;
use serde_json::{Value, json};

use super::Conversation;
use super::driver::run_turn;
use super::report::Recorder;
use super::stats::{Pcts, pcts, write_json};
use mangaassist_local::client::ChatClient;
use mangaassist_local::system::{SourceLatency, SystemOptions, start};

/// Held conversations: every intent, in English and Japanese.
fn conversations() -> Vec<Conversation> {
    let c = Conversation::of;
    vec![
        c(&[
            (
                "Show me some horror manga",
                json!({"store_section":"horror","browsing_history":["B0UZUMAKI1","B0CHAINSAW"]}),
            ),
            ("Tell me more about the first one", Value::Null),
            ("What is your shipping fee policy?", Value::Null),
        ]),
        c(&[
            ("おすすめのファンタジー漫画は?", json!({"store_section":"fantasy","browsing_history":["B0FRIEREN1"]})),
            ("2つ目について詳しく教えて", Value::Null),
            ("送料はいくらですか", Value::Null),
        ]),
        c(&[
            ("Where is my order 112-1234567-1234567?", Value::Null),
            ("Can I return a damaged volume?", json!({"current_asin":"B0ONEPIECE"})),
            ("My cart won't let me checkout", json!({"cart_asins":["B0SPYFAMLY"]})),
        ]),
        c(&[
            ("今月のセールは?", json!({"store_section":"promotions"})),
            ("注文した本がまだ届かない", Value::Null),
            ("hello!", Value::Null),
        ]),
        c(&[
            ("Can you recommend something like Vagabond?", json!({"current_asin":"B0VAGABOND"})),
            ("How many volumes does the first one have?", Value::Null),
            ("Any coupon or discount this week?", Value::Null),
        ]),
    ]
}

/// A long stable system prefix (store policies and catalog facts) for the prompt-cache lever: about 5,200
/// tokens, above Claude Haiku 4.5's 4,096-token minimum per checkpoint.
fn store_policies() -> String {
    let rules = [
        "Orders ship within two business days from our Saitama warehouse; delivery in Japan takes one to three days.",
        "Returns are accepted within 30 days for unread volumes and for volumes damaged in transit.",
        "Pre-orders are charged when the volume ships; a pre-order can be cancelled until then.",
        "Box sets ship together; single volumes of a set can be returned only as the whole set.",
        "Members earn one point per 100 yen; points expire twelve months after they were earned.",
        "Gift wrapping is free for orders over 3,000 yen and available for every physical volume.",
        "Digital editions are delivered to the reader app and cannot be returned once opened.",
        "Prices include consumption tax; shipping is free over 2,000 yen within Japan.",
    ];
    let mut out = String::from("Store policies and catalog facts:\n");
    for i in 0..150 {
        out.push_str(&format!("{}. {}\n", i + 1, rules[i % rules.len()]));
        out.push_str(&format!("   Series note {i}: volumes ship with obi where the publisher prints one.\n"));
    }
    out
}

/// One configuration under test.
struct Variant {
    name: &'static str,
    routing: ModelRouting,
    levers: Levers,
    prefix: Option<Arc<str>>,
}

fn variants() -> Vec<Variant> {
    let haiku = format!("jp.{CLAUDE_HAIKU_4_5}");
    let routed = mangaassist_core::turn::TurnConfig::default().models;
    let prefix: Arc<str> = Arc::from(store_policies());
    let cache = |on: bool| Levers { prompt_cache: on, ..Levers::default() };
    let pro = ModelRouting::single("us.amazon.nova-pro-v1:0", 400);
    vec![
        Variant { name: "single", routing: ModelRouting::single(&haiku, 400), levers: cache(false), prefix: None },
        Variant { name: "routed", routing: routed.clone(), levers: cache(false), prefix: None },
        Variant {
            name: "routed+priority",
            routing: routed.clone(),
            levers: Levers { priority_tier: true, ..Levers::default() },
            prefix: None,
        },
        Variant {
            name: "routed+prefix, cache off",
            routing: routed.clone(),
            levers: cache(false),
            prefix: Some(prefix.clone()),
        },
        Variant { name: "routed+prefix, cache on", routing: routed, levers: cache(true), prefix: Some(prefix) },
        Variant { name: "nova-pro standard", routing: pro.clone(), levers: Levers::default(), prefix: None },
        Variant {
            name: "nova-pro latency-optimized",
            routing: pro,
            levers: Levers { latency_optimized: true, ..Levers::default() },
            prefix: None,
        },
    ]
}

/// What one intent saw under one variant.
#[derive(Debug, Clone, Serialize)]
struct IntentReport {
    turns: usize,
    ttft_ms: Pcts,
    /// Answers under 500 output tokens, send -> `completed`.
    total_ms: Pcts,
    output_tokens: f64,
    models: Vec<String>,
}

/// Per-turn samples of one variant: intent -> (ttft, total, output tokens, model).
type Samples = BTreeMap<Intent, Vec<(f64, f64, u64, String)>>;

async fn run_variant(v: &Variant, rounds: usize, rec: &Recorder) -> anyhow::Result<(Samples, u64)> {
    let mut sys = SystemOptions { sources: SourceLatency::design(), ..SystemOptions::default() };
    sys.turn.models = v.routing.clone();
    sys.turn.prompt.levers = v.levers;
    sys.turn.prompt.cached_prefix.clone_from(&v.prefix);
    let system = start(MemoryStore::with_latency(Duration::from_millis(50)), sys).await?;
    let mut samples = Samples::new();
    let mut errors = 0;
    for _ in 0..rounds {
        for conv in conversations() {
            let mut client = ChatClient::connect(&system.ws_url()).await?;
            for msg in &conv.messages {
                let res = run_turn(&mut client, msg).await;
                match &res {
                    Ok(s) => rec.record(v.name, s),
                    Err(_) => rec.record_error(v.name),
                }
                match res {
                    Ok(s) => {
                        let m = &s.completed["metrics"];
                        let Some(intent) = m["intent"].as_str().and_then(Intent::parse) else { continue };
                        let out = m["output_tokens"].as_u64().unwrap_or(0);
                        let model = m["model"].as_str().unwrap_or_default().to_owned();
                        samples.entry(intent).or_default().push((s.ttft_ms, s.total_ms, out, model));
                    }
                    Err(e) => {
                        errors += 1;
                        eprintln!("  error: {e:#}");
                    }
                }
            }
            client.close().await;
        }
    }
    Ok((samples, errors))
}

fn report(turns: &[(f64, f64, u64, String)]) -> IntentReport {
    let ttft: Vec<f64> = turns.iter().map(|t| t.0).collect();
    let total: Vec<f64> = turns.iter().filter(|t| t.2 < 500).map(|t| t.1).collect();
    let mut models: Vec<String> = turns.iter().map(|t| t.3.clone()).collect();
    models.sort();
    models.dedup();
    let out = turns.iter().map(|t| t.2 as f64).sum::<f64>() / turns.len().max(1) as f64;
    IntentReport { turns: turns.len(), ttft_ms: pcts(&ttft), total_ms: pcts(&total), output_tokens: out, models }
}

/// Runs every variant and prints per-intent tables and the criteria.
#[expect(clippy::print_stdout, reason = "the scenario's tables are the command's output (progress goes to stderr)")]
pub async fn models(quick: bool, json_path: Option<PathBuf>, rec: &Recorder) -> anyhow::Result<()> {
    let rounds = if quick { 1 } else { 3 };
    let mut by_variant: BTreeMap<&str, BTreeMap<Intent, IntentReport>> = BTreeMap::new();
    let mut errors = 0;
    let all = variants();
    for v in &all {
        eprintln!("bench: models, {} ({rounds} rounds of {} conversations)", v.name, conversations().len());
        let (samples, e) = run_variant(v, rounds, rec).await?;
        errors += e;
        by_variant.insert(v.name, samples.iter().map(|(i, t)| (*i, report(t))).collect());
    }
    println!("| variant | intent | turns | ttft p50/p95/p99 ms | total (<500 tok) p50/p95/p99 ms | out tok | model |");
    println!("|---|---|---|---|---|---|---|");
    let f = |p: &Pcts| format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99);
    for v in &all {
        for (intent, r) in &by_variant[v.name] {
            println!(
                "| {} | {} | {} | {} | {} | {:.0} | {} |",
                v.name,
                intent,
                r.turns,
                f(&r.ttft_ms),
                f(&r.total_ms),
                r.output_tokens,
                r.models.join(", ")
            );
        }
    }
    // The seed's criteria, per variant: the intents that meet each.
    let mut criteria = serde_json::Map::new();
    for v in &all {
        let intents = &by_variant[v.name];
        let fast: Vec<&str> = intents.iter().filter(|(_, r)| r.ttft_ms.p95 < 400.0).map(|(i, _)| i.as_str()).collect();
        let whole: Vec<&str> =
            intents.iter().filter(|(_, r)| r.total_ms.p95 < 1500.0).map(|(i, _)| i.as_str()).collect();
        println!(
            "{}: first token p95 < 400 ms: {} ({}/{} intents: {}); full answer p95 < 1.5 s: {} ({}/{}: {})",
            v.name,
            pass(fast.len() == intents.len()),
            fast.len(),
            intents.len(),
            fast.join(", "),
            pass(whole.len() == intents.len()),
            whole.len(),
            intents.len(),
            whole.join(", ")
        );
        criteria.insert(v.name.to_owned(), json!({ "ttft_p95_under_400": fast, "total_under_1500": whole }));
    }
    let mut by_intent = serde_json::Map::new();
    for intent in Intent::ALL {
        let mut row = serde_json::Map::new();
        for (label, variant) in [("single", "single"), ("routed", "routed")] {
            if let Some(r) = by_variant.get(variant).and_then(|m| m.get(&intent)) {
                row.insert(label.to_owned(), serde_json::to_value(r)?);
            }
        }
        if !row.is_empty() {
            by_intent.insert(intent.as_str().to_owned(), Value::Object(row));
        }
    }
    let routed = &by_variant["routed"];
    let doc = json!({
        "by_intent": by_intent,
        "criteria": {
            "ttft_p95_under_400": routed.values().all(|r| r.ttft_ms.p95 < 400.0),
            "total_under_1500": routed.values().all(|r| r.total_ms.p95 < 1500.0),
        },
        "criteria_by_variant": criteria,
        "variants": by_variant.iter().map(|(k, v)| (k.to_string(), v.iter().map(|(i, r)| (i.as_str(), r.clone())).collect::<BTreeMap<_, _>>())).collect::<BTreeMap<_, _>>(),
        "errors": errors,
    });
    if let Some(path) = &json_path {
        write_json(path, &doc)?;
    }
    anyhow::ensure!(errors == 0, "{errors} turns failed");
    Ok(())
}

fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}
