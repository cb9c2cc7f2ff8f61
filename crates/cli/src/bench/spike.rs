//! `bench --scenario spike`: a concurrency ramp against on-demand-only routing and against provisioned
//! routing, side by side.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mangaassist_core::memory_store::MemoryStore;
use mangaassist_core::models::CLAUDE_HAIKU_4_5;
use serde_json::{Value, json};

use super::driver::{print_table, run};
use super::report::Recorder;
use super::stats::write_json;
use super::{Conversation, builtin_conversations};
use mangaassist_local::emulators::bedrock::BedrockEmulator;
use mangaassist_local::system::SystemOptions;

/// A route loader the bench sets once its provisioned throughput is in service.
#[derive(Clone, Default)]
pub(super) struct SharedRoute(Arc<std::sync::Mutex<Option<String>>>);

impl SharedRoute {
    pub(super) fn set(&self, arn: String) {
        if let Ok(mut r) = self.0.lock() {
            *r = Some(arn);
        }
    }
}

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
#[expect(clippy::print_stdout, reason = "the scenario's table is the command's output (progress goes to stderr)")]
pub async fn spike(opts: SpikeOptions, rec: &Recorder) -> anyhow::Result<()> {
    use mangaassist_core::routes::Routes;
    let script: Vec<Conversation> = builtin_conversations();
    let mut report = serde_json::Map::new();
    let mut rows = Vec::new();
    for provisioned in [false, true] {
        let label = if provisioned { "provisioned" } else { "on_demand" };
        let mut sys = SystemOptions::default();
        // One model for every intent, so every turn can take the provisioned route; the fallback is the
        // same model through the global profile.
        sys.turn.models = mangaassist_core::models::ModelRouting::single(format!("jp.{CLAUDE_HAIKU_4_5}"), 400);
        sys.turn.fallback_model_id = Some(format!("global.{CLAUDE_HAIKU_4_5}"));
        let route = SharedRoute::default();
        let routes = Routes::new(route.clone(), Duration::from_secs(1));
        let system = mangaassist_local::system::start_routed(MemoryStore::default(), sys, routes).await?;
        if provisioned {
            route.set(buy_provisioned(&system.emulator, opts.model_units).await?);
        }
        let throttled_before = system.emulator.stats.throttled();
        let (mut ttft, mut failovers, mut errors, mut turns) = (Vec::new(), 0u64, 0u64, 0u64);
        for &conc in &opts.steps {
            eprintln!("bench: spike {label}: {conc} concurrent conversations");
            let r = run(&system.bare_ws_url(), &script, conc * 2, conc, Some(&system.emulator), label, rec).await;
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
pub(super) async fn buy_provisioned(emulator: &BedrockEmulator, units: u32) -> anyhow::Result<String> {
    use mangaassist_adapters::bedrock_control::BedrockControl;
    use mangaassist_core::throughput::{ThroughputControl, ThroughputSpec, ThroughputStatus};
    emulator.control.set_creating_delay(Duration::from_millis(200));
    let sdk = mangaassist_adapters::sdk::local(&emulator.url()).await;
    let control = BedrockControl::new(&sdk);
    let spec = ThroughputSpec {
        name: "bench-spike".to_owned(),
        model_id: format!("{CLAUDE_HAIKU_4_5}:200k"),
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
