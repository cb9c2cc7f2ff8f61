//! `bench --scenario capacity`: how many turns a fleet of concurrent shoppers gets answered, and how many
//! are refused as `model_throttled`, three ways:
//!
//! 1. **on-demand, no throttle retries**: a throttle fails over once (on-demand -> fallback profile), then
//!    it is the shopper's error (the behaviour before throttle retries);
//! 2. **on-demand + retries**: a throttle before the first token is retried with full-jitter backoff,
//!    round the routes, while `throttle_retry_budget` allows (`routes::open_stream`);
//! 3. **provisioned + retries**: the same, with enough provisioned model units for every connection.
//!
//! Every connection plays held-out conversations (not the built-in script the other scenarios tune on),
//! sending its next message as soon as the previous answer ends: the worst case of N shoppers typing at
//! once. Throttling follows the emulator's documented capacity model (on-demand: 40 concurrent streams per
//! model id; provisioned: 40 per model unit); what the shopper sees is our behaviour, measured.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mangaassist_core::answer::routes::Routes;
use mangaassist_core::models::{CLAUDE_HAIKU_4_5, ModelRouting};
use mangaassist_core::ports::memory::MemoryStore;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::Conversation;
use super::spike::{SharedRoute, buy_provisioned};
use super::stats::{Pcts, pcts};
use mangaassist_local::client::ChatClient;
use mangaassist_local::system::{SourceLatency, SystemOptions};

/// One way of running the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    OnDemand,
    OnDemandRetries,
    Provisioned,
}

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Self::OnDemand => "on-demand, no throttle retries",
            Self::OnDemandRetries => "on-demand + throttle retries",
            Self::Provisioned => "provisioned + throttle retries",
        }
    }
}

/// What one way measured.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityRun {
    pub label: String,
    pub connections: usize,
    /// Provisioned model units bought for this run (0: on-demand only).
    pub model_units: u32,
    /// The throttle-retry budget the turns ran with, ms (0: no retries).
    pub retry_budget_ms: u64,
    /// Messages sent.
    pub turns: u64,
    /// Messages answered to the end (`completed`).
    pub answered: u64,
    /// `error` events with code `model_throttled`: what the shopper is told to resend.
    pub throttled_shown: u64,
    /// Other failures, by error code (or `client` for a connection or protocol failure).
    pub other_errors: BTreeMap<String, u64>,
    /// Requests the Bedrock emulator refused for lack of capacity (each retry counts).
    pub bedrock_throttles: u64,
    /// Failed attempts before the answering one, summed over answered turns (failovers and retries).
    pub failovers: u64,
    /// Send -> first delta of answered turns.
    pub ttft_ms: Pcts,
    /// Send -> `completed` of answered turns.
    pub total_ms: Pcts,
    pub wall_s: f64,
}

/// The three runs side by side.
#[derive(Debug, Clone, Serialize)]
pub struct CapacityReport {
    pub connections: usize,
    pub conversations: usize,
    /// Concurrent streams the emulator serves on-demand per model id, and per provisioned model unit.
    pub on_demand_streams_per_model: usize,
    pub provisioned_streams_per_unit: usize,
    pub runs: Vec<CapacityRun>,
}

impl CapacityReport {
    /// The report as a Markdown table.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| run | connections | model units | turns | answered | `model_throttled` shown | other errors | Bedrock 429s | failed attempts | TTFT p50 / p95 ms |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        for r in &self.runs {
            let other: u64 = r.other_errors.values().sum();
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} / {:.0} |\n",
                r.label,
                r.connections,
                r.model_units,
                r.turns,
                r.answered,
                r.throttled_shown,
                other,
                r.bedrock_throttles,
                r.failovers,
                r.ttft_ms.p50,
                r.ttft_ms.p95
            ));
        }
        out
    }
}

/// Held-out conversations (`crates/cli/data/capacity-heldout.jsonl`): phrasings, genres and follow-ups the
/// built-in script does not use, English and Japanese, five messages each.
pub fn held_out_conversations() -> Vec<Conversation> {
    let text = include_str!("../../data/capacity-heldout.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).map_err(|e| eprintln!("bench: capacity-heldout.jsonl: {e}")).ok())
        .collect()
}

/// Runs the fleet three ways (`quick`: 80 connections instead of 200), one conversation per connection.
pub async fn capacity(quick: bool) -> anyhow::Result<CapacityReport> {
    let connections: usize = if quick { 80 } else { 200 };
    let script = held_out_conversations();
    let mut runs = Vec::new();
    let mut caps = (0usize, 0usize);
    for variant in [Variant::OnDemand, Variant::OnDemandRetries, Variant::Provisioned] {
        eprintln!("bench: capacity: {} ({connections} connections)", variant.label());
        let mut sys = SystemOptions { sources: SourceLatency::design(), ..SystemOptions::default() };
        caps = (sys.emulator.capacity.on_demand_concurrency, sys.emulator.capacity.provisioned_streams_per_unit);
        // One model for every intent (every turn may take the provisioned route); the fallback is the same
        // model through the global profile, a separate on-demand quota.
        sys.turn.models = ModelRouting::single(format!("jp.{CLAUDE_HAIKU_4_5}"), 400);
        sys.turn.fallback_model_id = Some(format!("global.{CLAUDE_HAIKU_4_5}"));
        if variant == Variant::OnDemand {
            sys.turn.failover.throttle_retry_budget = Duration::ZERO;
        }
        let retry_budget_ms = u64::try_from(sys.turn.failover.throttle_retry_budget.as_millis()).unwrap_or(0);
        let route = SharedRoute::default();
        let routes = Routes::new(route.clone(), Duration::from_secs(1));
        let system = mangaassist_local::system::start_routed(MemoryStore::default(), sys, routes).await?;
        let model_units = match variant {
            Variant::Provisioned => u32::try_from(connections.div_ceil(caps.1.max(1))).unwrap_or(1),
            _ => 0,
        };
        if model_units > 0 {
            // No turn has read the route yet, so the first one sees the ARN.
            route.set(buy_provisioned(&system.emulator, model_units).await?);
        }
        let throttled_before = system.emulator.stats.throttled();
        let mut run = fleet(&system.bare_ws_url(), &script, connections).await;
        run.label = variant.label().to_owned();
        run.model_units = model_units;
        run.retry_budget_ms = retry_budget_ms;
        run.bedrock_throttles = system.emulator.stats.throttled() - throttled_before;
        runs.push(run);
    }
    Ok(CapacityReport {
        connections,
        conversations: connections,
        on_demand_streams_per_model: caps.0,
        provisioned_streams_per_unit: caps.1,
        runs,
    })
}

#[derive(Default)]
struct Tally {
    turns: u64,
    answered: u64,
    throttled: u64,
    other: BTreeMap<String, u64>,
    failovers: u64,
    ttft: Vec<f64>,
    total: Vec<f64>,
}

/// How one message ended.
enum Ended {
    Answered { ttft_ms: f64, total_ms: f64, failovers: u64 },
    Error(String),
}

async fn one_turn(client: &mut ChatClient, msg: &super::ScriptedMessage) -> Ended {
    let t0 = Instant::now();
    let id = match client.send_message(&msg.text, msg.page_context.as_ref()).await {
        Ok(id) => id,
        Err(_) => return Ended::Error("client".into()),
    };
    let mut first = None;
    loop {
        let Ok(ev) = client.next_event(Duration::from_secs(60)).await else { return Ended::Error("client".into()) };
        if ev.get("message_id").and_then(Value::as_str) != Some(id.as_str()) {
            continue;
        }
        match ev.get("type").and_then(Value::as_str) {
            Some("delta") => {
                first.get_or_insert_with(|| t0.elapsed());
            }
            Some("completed") => {
                let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                let total = t0.elapsed();
                return Ended::Answered {
                    ttft_ms: ms(first.unwrap_or(total)),
                    total_ms: ms(total),
                    failovers: ev["metrics"]["failovers"].as_u64().unwrap_or(0),
                };
            }
            Some("error") => return Ended::Error(ev["code"].as_str().unwrap_or("unknown").to_owned()),
            _ => {}
        }
    }
}

/// `connections` clients at once, each playing one conversation of `script` (in turn) to its end.
async fn fleet(url: &str, script: &[Conversation], connections: usize) -> CapacityRun {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for i in 0..connections {
        let (tally, url) = (tally.clone(), url.to_owned());
        let conv = script[i % script.len()].clone();
        clients.spawn(async move {
            // One signed-in shopper per connection, as in the real fleet (a user may hold only a few).
            let connected = match mangaassist_local::client::authenticated(&url, &format!("capacity-{i}")).await {
                Ok(url) => ChatClient::connect(&url).await,
                Err(e) => Err(e),
            };
            let Ok(mut client) = connected else {
                let mut t = tally.lock().await;
                t.turns += conv.messages.len() as u64;
                *t.other.entry("client".into()).or_default() += conv.messages.len() as u64;
                return;
            };
            for msg in &conv.messages {
                let ended = one_turn(&mut client, msg).await;
                let mut t = tally.lock().await;
                t.turns += 1;
                match ended {
                    Ended::Answered { ttft_ms, total_ms, failovers } => {
                        t.answered += 1;
                        t.failovers += failovers;
                        t.ttft.push(ttft_ms);
                        t.total.push(total_ms);
                    }
                    Ended::Error(code) if code == "model_throttled" => t.throttled += 1,
                    Ended::Error(code) => *t.other.entry(code).or_default() += 1,
                }
            }
            client.close().await;
        });
    }
    while clients.join_next().await.is_some() {}
    let t = tally.lock().await;
    CapacityRun {
        label: String::new(),
        connections,
        model_units: 0,
        retry_budget_ms: 0,
        turns: t.turns,
        answered: t.answered,
        throttled_shown: t.throttled,
        other_errors: t.other.clone(),
        bedrock_throttles: 0,
        failovers: t.failovers,
        ttft_ms: pcts(&t.ttft),
        total_ms: pcts(&t.total),
        wall_s: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_held_out_conversation_is_read_with_its_five_messages() {
        let lines = include_str!("../../data/capacity-heldout.jsonl").lines().filter(|l| !l.trim().is_empty()).count();
        let script = held_out_conversations();
        assert_eq!(script.len(), lines);
        assert!(script.len() >= 6 && script.iter().all(|c| c.messages.len() == 5));
    }
}
