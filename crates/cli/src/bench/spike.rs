//! `bench --scenario spike`: a concurrency ramp under each peak capacity plan, side by side.
//!
//! | plan | routing | what it measures |
//! |---|---|---|
//! | `on_demand` | every intent on Claude Haiku 4.5 (`jp.`), fallback `global.` | the baseline |
//! | `provisioned` | the same, on provisioned throughput | a what-if: Tokyo sells none, and no Region sells it for Haiku 4.5 |
//! | `on_demand_routed` | the deployment's per-intent routing (Haiku 4.5, Nova 2 Lite for simple intents) | the baseline of the next |
//! | `priority_at_peak` | the same, with the priority tier where the model offers it (Nova 2 Lite) | what `PeakCapacity=priority` buys in Tokyo |
//!
//! The ramp runs at peak: the priority plan's requests carry `serviceTier = priority` exactly where
//! `Routes::priority_tier_now` would say so (the record's priority flag is set too). Throttling and queueing
//! follow the emulator's documented capacity model (`crates/local/src/emulators/bedrock/latency.rs`, `CapacityModel`):
//! priority shares the model's on-demand limit and skips its load penalty.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mangaassist_core::capacity::RouteRecord;
use mangaassist_core::models::{CLAUDE_HAIKU_4_5, ModelRouting};
use mangaassist_core::ports::memory::MemoryStore;
use serde_json::{Value, json};

use super::driver::{print_table, run};
use super::report::Recorder;
use super::stats::write_json;
use super::{Conversation, builtin_conversations};
use mangaassist_local::emulators::bedrock::BedrockEmulator;
use mangaassist_local::system::SystemOptions;

/// A route loader the bench sets once its provisioned throughput is in service (or its peak starts).
#[derive(Clone, Default)]
pub(super) struct SharedRoute(Arc<std::sync::Mutex<RouteRecord>>);

impl SharedRoute {
    pub(super) fn set(&self, arn: String) {
        if let Ok(mut r) = self.0.lock() {
            r.arn = Some(arn);
        }
    }

    fn set_priority(&self, on: bool) {
        if let Ok(mut r) = self.0.lock() {
            r.priority = on;
        }
    }
}

impl mangaassist_core::answer::routes::RouteLoader for SharedRoute {
    fn provisioned_arn(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<Option<String>, mangaassist_core::error::StoreError>> {
        let arn = self.0.lock().ok().and_then(|a| a.arn.clone());
        Box::pin(async move { Ok(arn) })
    }

    fn route_record(
        &self,
    ) -> futures_util::future::BoxFuture<'_, Result<RouteRecord, mangaassist_core::error::StoreError>> {
        let record = self.0.lock().map(|r| r.clone()).unwrap_or_default();
        Box::pin(async move { Ok(record) })
    }
}

/// One way of meeting the peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    OnDemand,
    Provisioned,
    OnDemandRouted,
    PriorityAtPeak,
}

impl Plan {
    const ALL: [Self; 4] = [Self::OnDemand, Self::Provisioned, Self::OnDemandRouted, Self::PriorityAtPeak];

    fn label(self) -> &'static str {
        match self {
            Self::OnDemand => "on_demand",
            Self::Provisioned => "provisioned",
            Self::OnDemandRouted => "on_demand_routed",
            Self::PriorityAtPeak => "priority_at_peak",
        }
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

/// Ramps concurrency under each plan ([`Plan`]), side by side.
#[expect(clippy::print_stdout, reason = "the scenario's table is the command's output (progress goes to stderr)")]
pub async fn spike(opts: SpikeOptions, rec: &Recorder) -> anyhow::Result<()> {
    use mangaassist_core::answer::routes::Routes;
    let script: Vec<Conversation> = builtin_conversations();
    let mut report = serde_json::Map::new();
    let mut rows = Vec::new();
    for plan in Plan::ALL {
        let label = plan.label();
        let mut sys = SystemOptions::default();
        match plan {
            // One model for every intent, so every turn can take the provisioned route; the fallback is the
            // same model through the global profile.
            Plan::OnDemand | Plan::Provisioned => {
                sys.turn.models = ModelRouting::single(format!("jp.{CLAUDE_HAIKU_4_5}"), 400);
                sys.turn.fallback_model_id = Some(format!("global.{CLAUDE_HAIKU_4_5}"));
            }
            // The deployment's per-intent routing (TurnConfig's default), its models through the Japan profile.
            Plan::OnDemandRouted | Plan::PriorityAtPeak => {}
        }
        // At peak the turn sends the priority tier to the models that offer it (Routes::priority_tier_now): the
        // lever, which reaches only those models, and the record that says the peak is on.
        sys.turn.prompt.levers.priority_tier = plan == Plan::PriorityAtPeak;
        let route = SharedRoute::default();
        route.set_priority(plan == Plan::PriorityAtPeak);
        let routes = Routes::new(route.clone(), Duration::from_secs(1));
        let system = mangaassist_local::system::start_routed(MemoryStore::default(), sys, routes).await?;
        if plan == Plan::Provisioned {
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
    for label in Plan::ALL.map(Plan::label) {
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
    use mangaassist_core::capacity::{ThroughputControl, ThroughputSpec, ThroughputStatus};
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
