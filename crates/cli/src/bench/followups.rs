//! `bench --scenario followups`: follow-up first-token latency three ways side by side (no prefetch;
//! context prefetch only; prefetch with speculative pre-generation, the `PREGEN` default), per kind of
//! follow-up: a generic overview request a pre-generated answer fits (`expect: pregen`), a specific question
//! about the same product it must never answer (`expect: model`), and unlabelled turns.
//!
//! Each conversation asks for recommendations, then its follow-ups. Between turns the shopper reads for
//! `--read-ms` (default 2,500 ms), whatever prefetch and pre-generation are still doing: a follow-up sent
//! before its entry is ready goes to the model, as it would on AWS. The pre-generation hit rate is also
//! reported at 1,000 and 5,000 ms, and the readiness of the listed products' entries (their creation time
//! against the client's `completed`). Conversations run 8 side by side. Perceived TTFT is the first
//! `delta` at the client.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::StreamExt;
use mangaassist_core::cache::CacheKey;
use mangaassist_core::ids::{Asin, SessionId};
use mangaassist_core::ports::memory::MemoryStore;
use mangaassist_core::ports::sources::Cache;
use mangaassist_core::pregen::{PregenEntry, PregenMode};
use serde::Serialize;
use serde_json::{Value, json};

use super::driver::run_turn;
use super::report::Recorder;
use super::stats::{Pcts, pcts, write_json};
use super::{Conversation, ScriptedMessage, read_script};
use mangaassist_local::client::ChatClient;
use mangaassist_local::embedded::catalog::Catalog;
use mangaassist_local::emulators::bedrock::RequestRecord;
use mangaassist_local::system::{LocalSystem, SourceLatency, SystemOptions, start};

const GENERIC_EN: &[&str] = &[
    "Tell me more about the {n} one",
    "What's the {n} one about?",
    "Can you give me details on the {n} one?",
    "tell me more about the {n}",
    "Describe the {n} one for me",
    "I'd like an overview of the {n} one",
];
const GENERIC_JA: &[&str] = &["{n}はどんな作品？", "{n}について詳しく教えて", "{n}のあらすじを教えて", "{n}を紹介して"];
const SPECIFIC_EN: &[&str] =
    &["Is the {n} one scary?", "How many volumes does the {n} one have?", "What's the price of the {n} one?"];
const SPECIFIC_JA: &[&str] = &["{n}は怖いですか？", "{n}の値段は？", "{n}は何巻まで出ていますか？"];
const ORDINALS_EN: &[&str] = &["first", "second", "third"];
const ORDINALS_JA: &[&str] = &["1つ目", "2つ目", "3つ目"];

fn labelled(text: String, expect: &str) -> ScriptedMessage {
    ScriptedMessage { text, page_context: None, expect: Some(expect.to_owned()) }
}

/// The built-in conversations: English and Japanese in turn, each a recommendation seeded by three catalog
/// products, a generic follow-up (phrased a different way each time), a specific one, and an order question.
fn conversations(catalog: &Catalog, n: usize) -> Vec<Conversation> {
    let products = catalog.products();
    (0..n)
        .map(|i| {
            let group = &products[(i * 3) % products.len()..][..3];
            let ja = i % 2 == 1;
            let page = json!({"store_section": group[0].genre, "browsing_history": group.iter().map(|p| p.asin.clone()).collect::<Vec<_>>()});
            let (first, generic, specific, ordinals) = if ja {
                (format!("{}みたいなおすすめはありますか?", group[0].title_ja), GENERIC_JA, SPECIFIC_JA, ORDINALS_JA)
            } else {
                (format!("Can you recommend something like {}?", group[0].title_en), GENERIC_EN, SPECIFIC_EN, ORDINALS_EN)
            };
            let fill = |t: &str, k: usize| t.replace("{n}", ordinals[k % 3]);
            Conversation {
                messages: vec![
                    ScriptedMessage { text: first, page_context: Some(page), expect: None },
                    labelled(fill(generic[i % generic.len()], i), "pregen"),
                    labelled(fill(specific[i % specific.len()], i + 1), "model"),
                    ScriptedMessage { text: "Where is my order 112-4433221-7788990?".to_owned(), page_context: None, expect: None },
                ],
            }
        })
        .collect()
}

/// One way of running the same conversations.
#[derive(Debug, Clone, Copy)]
struct Way {
    name: &'static str,
    prefetch: bool,
    pregen: PregenMode,
}

const WAYS: [Way; 3] = [
    Way { name: "off", prefetch: false, pregen: PregenMode::Off },
    Way { name: "prefetch", prefetch: true, pregen: PregenMode::Off },
    Way { name: "pregen", prefetch: true, pregen: PregenMode::FullOpening },
];

/// The reading pauses the pre-generation hit rate is also reported at.
const READ_SWEEP_MS: [u64; 3] = [1_000, 2_500, 5_000];

/// Conversations run side by side (each its own shopper): the pauses dominate a run, not the turns.
const PARALLEL: usize = 8;

/// Per follow-up label, what one way saw.
#[derive(Debug, Default)]
struct Seen {
    ttft: Vec<f64>,
    served_full: u64,
    served_opening: u64,
    /// Follow-ups labelled `pregen` that were not served a pre-generated answer, and how they were served.
    missed: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct WayResult {
    by_expect: BTreeMap<String, Seen>,
    /// Follow-ups (every turn after a conversation's first).
    followups: Vec<f64>,
    turns: u64,
    /// Model tokens every request of the run cost (input + output), pre-generation included.
    model_tokens: u64,
    /// Follow-ups' context lookups, and those the cache answered.
    lookups: u64,
    cache_hits: u64,
    errors: u64,
    /// Per pre-generated entry of a listed product: ms from the client's `completed` to the entry being
    /// in the cache (0 when it was there before); `None`: not there when the reading pause ended.
    ready_ms: Vec<Option<f64>>,
}

impl WayResult {
    fn add(&mut self, other: WayResult) {
        for (label, seen) in other.by_expect {
            let mine = self.by_expect.entry(label).or_default();
            mine.ttft.extend(seen.ttft);
            mine.served_full += seen.served_full;
            mine.served_opening += seen.served_opening;
            mine.missed.extend(seen.missed);
        }
        self.followups.extend(other.followups);
        self.turns += other.turns;
        self.lookups += other.lookups;
        self.cache_hits += other.cache_hits;
        self.errors += other.errors;
        self.ready_ms.extend(other.ready_ms);
    }
}

fn wall_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn run_way(way: Way, read_ms: u64, script: &[Conversation], rec: &Recorder) -> anyhow::Result<WayResult> {
    let mut sys =
        SystemOptions { sources: SourceLatency::design(), prefetch: way.prefetch, ..SystemOptions::default() };
    sys.turn.pregen.mode = way.pregen;
    sys.turn.context.pregen = way.pregen.is_on();
    let system = start(MemoryStore::with_latency(Duration::from_millis(50)), sys).await?;
    let runs: Vec<WayResult> = futures_util::stream::iter(script)
        .map(|conv| conversation(&system, way, read_ms, conv, rec))
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    let mut r = WayResult::default();
    for run in runs {
        r.add(run);
    }
    r.model_tokens = system.emulator.stats.requests().iter().map(RequestRecord::billed_tokens).sum();
    Ok(r)
}

/// One shopper's conversation: each turn, then the reading pause before the next.
async fn conversation(
    system: &LocalSystem<MemoryStore>,
    way: Way,
    read_ms: u64,
    conv: &Conversation,
    rec: &Recorder,
) -> WayResult {
    let mut r = WayResult::default();
    let mut client = match ChatClient::connect(&system.ws_url()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("  error: {e:#}");
            r.errors += 1;
            return r;
        }
    };
    let session = match way.pregen.is_on() {
        true => client.session().await.ok().and_then(|s| SessionId::parse(s).ok()),
        false => None,
    };
    for (n, msg) in conv.messages.iter().enumerate() {
        let res = run_turn(&mut client, msg).await;
        let completed_at = wall_ms();
        match &res {
            Ok(s) => rec.record(way.name, s),
            Err(_) => rec.record_error(way.name),
        }
        let s = match res {
            Ok(s) => s,
            Err(e) => {
                r.errors += 1;
                eprintln!("  error: {e:#}");
                continue;
            }
        };
        r.turns += 1;
        if n > 0 {
            let m = &s.completed["metrics"];
            r.lookups += m["cache_lookups"].as_u64().unwrap_or(0);
            r.cache_hits += m["cache_hits"].as_array().map_or(0, |h| h.len() as u64);
            r.followups.push(s.ttft_ms);
            let seen = r.by_expect.entry(msg.expect.clone().unwrap_or_else(|| "none".into())).or_default();
            seen.ttft.push(s.ttft_ms);
            match s.completed["metrics"]["served"].as_str() {
                Some("pregen") => seen.served_full += 1,
                Some("pregen_opening") => seen.served_opening += 1,
                _ => {}
            }
            if msg.expect.as_deref() == Some("pregen") && s.completed["metrics"]["served"] != "pregen" {
                let how = s.completed["metrics"]["served"].as_str().unwrap_or("model").to_owned();
                seen.missed.push((msg.text.clone(), how));
            }
        }
        if n + 1 == conv.messages.len() {
            break;
        }
        // The shopper reads the answer (and types) before the follow-up is sent.
        tokio::time::sleep(Duration::from_millis(read_ms)).await;
        // The first answer is the list the follow-ups point into: its products are the ones pre-generated.
        if let (Some(session), 0) = (&session, n) {
            r.ready_ms.extend(readiness(system, session, &s.completed, completed_at).await);
        }
    }
    client.close().await;
    r
}

/// For each product the answer listed, when its pre-generated entry became servable, relative to the
/// client's `completed` (the entry's own creation time; 0 when before), or `None` when it is not cached.
async fn readiness(
    system: &LocalSystem<MemoryStore>,
    session: &SessionId,
    completed: &Value,
    completed_at: f64,
) -> Vec<Option<f64>> {
    let asins: Vec<Asin> = completed["products"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["asin"].as_str().and_then(|a| Asin::parse(a).ok()))
        .collect();
    let keys: Vec<String> = asins.into_iter().map(|a| CacheKey::Pregen(session.clone(), a).render()).collect();
    let values = system.app.engine.sources.cache.get_many(&keys).await.unwrap_or_else(|_| vec![None; keys.len()]);
    values
        .iter()
        .map(|v| {
            let entry = PregenEntry::decode(v.as_deref()?)?;
            Some((entry.created_at_ms as f64 - completed_at).max(0.0))
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct ExpectReport {
    count: usize,
    ttft_ms_off: Pcts,
    ttft_ms_prefetch: Pcts,
    ttft_ms_pregen: Pcts,
    served_full: u64,
    served_opening: u64,
}

/// Runs the follow-ups three ways and prints and writes the report.
#[expect(clippy::print_stdout, reason = "the scenario's tables are the command's output (progress goes to stderr)")]
pub async fn followups(
    quick: bool,
    script: Option<PathBuf>,
    read_ms: u64,
    json_path: Option<PathBuf>,
    rec: &Recorder,
) -> anyhow::Result<()> {
    let script = match &script {
        Some(p) => read_script(p)?,
        None => conversations(&Catalog::default(), if quick { 4 } else { 16 }),
    };
    let mut results = BTreeMap::new();
    for way in WAYS {
        eprintln!("bench: {} conversations with follow-ups, {}, reading {read_ms} ms", script.len(), way.name);
        results.insert(way.name, run_way(way, read_ms, &script, rec).await?);
    }
    // The hit rate at other reading pauses: pre-generation only, the list and its first follow-up.
    let short: Vec<Conversation> =
        script.iter().map(|c| Conversation { messages: c.messages.iter().take(2).cloned().collect() }).collect();
    let mut by_read = BTreeMap::new();
    for pause in READ_SWEEP_MS {
        let r = if pause == read_ms {
            None
        } else {
            eprintln!("bench: {} conversations, pregen, reading {pause} ms", short.len());
            Some(run_way(WAYS[2], pause, &short, &Recorder::default()).await?)
        };
        let r = r.as_ref().unwrap_or(&results["pregen"]);
        let generic = r.by_expect.get("pregen");
        let rate = generic.map_or(0.0, |g| g.served_full as f64 / g.ttft.len().max(1) as f64);
        by_read.insert(pause.to_string(), json!(rate));
    }
    let (off, pre, pg) = (&results["off"], &results["prefetch"], &results["pregen"]);
    let labels: Vec<String> = pg.by_expect.keys().cloned().collect();
    let empty = Seen::default();
    let seen = |r: &WayResult, l: &str| -> Pcts { pcts(&r.by_expect.get(l).unwrap_or(&empty).ttft) };
    let mut by_expect = serde_json::Map::new();
    println!("| follow-up | count | ttft p50/p95/p99 ms: off | prefetch | prefetch + pregen | served whole | opened |");
    println!("|---|---|---|---|---|---|---|");
    let f = |p: &Pcts| format!("{:.0} / {:.0} / {:.0}", p.p50, p.p95, p.p99);
    for l in &labels {
        let g = pg.by_expect.get(l).unwrap_or(&empty);
        let rep = ExpectReport {
            count: g.ttft.len(),
            ttft_ms_off: seen(off, l),
            ttft_ms_prefetch: seen(pre, l),
            ttft_ms_pregen: seen(pg, l),
            served_full: g.served_full,
            served_opening: g.served_opening,
        };
        println!(
            "| expect {l} | {} | {} | {} | {} | {} | {} |",
            rep.count,
            f(&rep.ttft_ms_off),
            f(&rep.ttft_ms_prefetch),
            f(&rep.ttft_ms_pregen),
            rep.served_full,
            rep.served_opening
        );
        by_expect.insert(l.clone(), serde_json::to_value(&rep)?);
    }
    let served = |l: &str| pg.by_expect.get(l).map_or(0, |s| s.served_full);
    let asked = |l: &str| pg.by_expect.get(l).map_or(0, |s| s.ttft.len());
    let false_serves = served("model");
    let hit_rate = if asked("pregen") == 0 { 0.0 } else { served("pregen") as f64 / asked("pregen") as f64 };
    let (p_off, p_gen) = (pcts(&off.followups).p50, pcts(&pg.followups).p50);
    let reduction = if p_off > 0.0 { (p_off - p_gen) / p_off * 100.0 } else { 0.0 };
    let generic_reduction = {
        let (o, g) = (seen(off, "pregen").p50, seen(pg, "pregen").p50);
        if o > 0.0 { (o - g) / o * 100.0 } else { 0.0 }
    };
    // What pre-generation adds to the model bill: every request of the run against the same conversations
    // without it (the answers are the same; the difference is the generations, served or not).
    let extra = pg.model_tokens.saturating_sub(pre.model_tokens) as f64 / pg.turns.max(1) as f64;
    let ready: Vec<f64> = pg.ready_ms.iter().flatten().copied().collect();
    let not_ready = pg.ready_ms.iter().filter(|r| r.is_none()).count();
    let ready_pcts = pcts(&ready);
    // Context prefetch alone, as the scenario measured it before pre-generation (keys kept).
    let p_pre = pcts(&pre.followups).p50;
    let context_reduction = if p_off > 0.0 { (p_off - p_pre) / p_off * 100.0 } else { 0.0 };
    println!(
        "generic follow-ups: p50 {generic_reduction:.1}% below no prefetch; all follow-ups: p50 {reduction:.1}% below; \
         hit rate {hit_rate:.2}; false serves {false_serves}; extra model tokens per turn {extra:.0}"
    );
    println!(
        "pre-generated entries ready after `completed` (ms; 0: before it): p50 {:.0}, p95 {:.0}, max {:.0}; \
         {} of {} not ready after {read_ms} ms; hit rate by reading pause: {}",
        ready_pcts.p50,
        ready_pcts.p95,
        ready.iter().copied().fold(0.0, f64::max),
        not_ready,
        pg.ready_ms.len(),
        by_read.iter().map(|(k, v)| format!("{k} ms {:.2}", v.as_f64().unwrap_or(0.0))).collect::<Vec<_>>().join(", ")
    );
    let errors: u64 = results.values().map(|r| r.errors).sum();
    let doc = json!({
        "by_expect": Value::Object(by_expect),
        "pregen_false_serves": false_serves,
        "pregen_hit_rate": hit_rate,
        "pregen_reduction_pct": reduction,
        "pregen_generic_reduction_pct": generic_reduction,
        "extra_model_tokens_per_turn": extra,
        "followup_ttft_ms_off": pcts(&off.followups),
        "followup_ttft_ms_no_prefetch": pcts(&off.followups),
        "followup_ttft_ms_prefetch": pcts(&pre.followups),
        "reduction_pct": context_reduction,
        "hit_rate": if pre.lookups == 0 { 0.0 } else { pre.cache_hits as f64 / pre.lookups as f64 },
        "followup_ttft_ms_pregen": pcts(&pg.followups),
        "read_ms": read_ms,
        "ready_ms": {"p50": ready_pcts.p50, "p95": ready_pcts.p95},
        "entries_not_ready": not_ready,
        "hit_rate_by_read_ms": Value::Object(by_read.into_iter().collect()),
        "pregen_missed": pg.by_expect.get("pregen").map_or(Vec::new(), |s| s.missed.clone()),
        "errors": errors,
    });
    if let Some(path) = &json_path {
        write_json(path, &doc)?;
    }
    anyhow::ensure!(errors == 0, "{errors} turns failed");
    Ok(())
}
