//! `bench --scenario context`: sequential vs parallel context assembly under the design's latency profile.

use std::path::PathBuf;
use std::time::Duration;

use mangaassist_core::ports::memory::MemoryStore;
use serde_json::json;

use super::builtin_conversations;
use super::driver::{print_table, run};
use super::report::Recorder;
use super::stats::write_json;
use mangaassist_local::system::{SystemOptions, start};

/// Sequential vs parallel context assembly over the same turns, with the design's latency profile
/// (memory 50 ms, retrieval 200 ms, product services 100 ms; classification here takes microseconds).
#[expect(clippy::print_stdout, reason = "the scenario's tables are the command's output (progress goes to stderr)")]
pub async fn context(quick: bool, json_path: Option<PathBuf>, rec: &Recorder) -> anyhow::Result<()> {
    use mangaassist_local::system::SourceLatency;
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
        runs.push(run(&system.bare_ws_url(), &script, conversations, 1, Some(&system.emulator), label, rec).await);
    }
    print_table(&runs);
    println!("| assembly | p50 ms | p95 ms | slowest leg p95 ms | assembly beyond its slowest leg p50 / p95 ms |");
    println!("|---|---|---|---|---|");
    for r in &runs {
        let (a, l, x) = (&r.assembly_ms, &r.slowest_leg_ms, &r.assembly_excess_ms);
        println!("| {} | {:.1} | {:.1} | {:.1} | {:.1} / {:.1} |", r.relay, a.p50, a.p95, l.p95, x.p50, x.p95);
    }
    let doc = json!({
        "assembly_ms_sequential": runs[0].assembly_ms, "assembly_ms_parallel": runs[1].assembly_ms,
        "slowest_leg_ms_parallel": runs[1].slowest_leg_ms, "assembly_excess_ms_parallel": runs[1].assembly_excess_ms,
        "ttft_ms_sequential": runs[0].ttft_ms, "ttft_ms_parallel": runs[1].ttft_ms,
    });
    if let Some(path) = &json_path {
        write_json(path, &doc)?;
    }
    let errors: u64 = runs.iter().map(|r| r.errors).sum();
    anyhow::ensure!(errors == 0, "{errors} turns failed");
    Ok(())
}
