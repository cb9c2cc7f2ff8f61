//! `bench --scenario turns` (the default): first-token latency, total latency and our overhead per turn,
//! with the coalescing relay and the post-per-token baseline side by side.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mangaassist_core::answer::relay::RelayMode;
use mangaassist_core::ports::memory::MemoryStore;
use serde_json::Value;

use super::driver::{print_table, run};
use super::report::Recorder;
use super::stats::write_json;
use super::{builtin_conversations, read_script};
use mangaassist_local::emulators::bedrock::LatencyModel;
use mangaassist_local::system::{SystemOptions, start};

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

/// Runs the bench and prints (and optionally writes) the report.
pub async fn turns(opts: BenchOptions, rec: &Recorder) -> anyhow::Result<()> {
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
            runs.push(run(url, &script, conversations, conc, None, "remote", rec).await);
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
                run(&system.bare_ws_url(), &script, conversations, conc, Some(&system.emulator), relay_name(mode), rec)
                    .await,
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
