//! `bench --scenario followups`: follow-up TTFT with speculative prefetch on and off.

use std::path::PathBuf;
use std::time::Duration;

use mangaassist_core::memory_store::MemoryStore;
use serde_json::json;

use super::ScriptedMessage;
use super::driver::run_turn;
use super::stats::{pcts, write_json};
use crate::client::ChatClient;
use crate::system::{SystemOptions, start};

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
