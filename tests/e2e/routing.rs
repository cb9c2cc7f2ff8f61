//! Routing in the chat turn: provisioned throughput while the reconciler's record says `InService`,
//! on-demand otherwise, and failover to on-demand before the first token.

use std::time::Duration;

use mangaassist_adapters::bedrock_control::BedrockControl;
use mangaassist_adapters::dynamo::{DynamoStore, ensure_table};
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_core::clock::Clock;
use mangaassist_core::routes::Routes;
use mangaassist_core::throughput::{Reconciler, ThroughputSpec, Trigger};
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, Fault, LatencyModel};
use mangaassist_local::system::{SystemOptions, start_routed};

use crate::helpers::*;

/// 2026-11-28 10:00 JST: peak hours, whatever the machine's clock says.
struct PeakClock;

impl Clock for PeakClock {
    fn now_ms(&self) -> u64 {
        1_795_827_600_000
    }
}

#[tokio::test]
async fn turns_use_provisioned_capacity_only_once_it_is_in_service_and_fail_over_to_on_demand() {
    let moto = moto().await;
    let sdk = mangaassist_adapters::sdk::local(&moto.url).await;
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::new(&sdk, &table);
    ensure_table(store.client(), &table).await.unwrap();
    // TTL zero: every turn reads the record, so the test sees each state change at once.
    let routes = Routes::new(DynamoThroughputState::new(&sdk, &table), Duration::ZERO);
    let opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 30, ..EmulatorConfig::default() },
        ..SystemOptions::default()
    };
    let sys = start_routed(store, opts, routes).await.unwrap();
    sys.emulator.control.set_creating_delay(Duration::from_millis(400));
    let reconciler = Reconciler::new(
        BedrockControl::new(&mangaassist_adapters::sdk::local(&sys.emulator.url()).await),
        DynamoThroughputState::new(&sdk, &table),
        PeakClock,
        ThroughputSpec {
            name: "mangaassist-peak".into(),
            model_id: "anthropic.claude-haiku-4-5-20251001-v1:0:200k".into(),
            model_units: 1,
            commitment: None,
        },
    );
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    // Nothing provisioned: on-demand.
    let done = ask(&mut client, "Any horror manga?", None).await;
    assert_eq!(done["metrics"]["route"], "on-demand");

    // Bought, still Creating: still on-demand.
    reconciler.run(Trigger::ScaleUp).await.unwrap();
    let done = ask(&mut client, "Any fantasy manga?", None).await;
    assert_eq!(done["metrics"]["route"], "on-demand");

    // InService after the reconcile that observes it: the ARN answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    reconciler.run(Trigger::Reconcile).await.unwrap();
    let arn = sys.emulator.control.list()[0].arn.clone();
    let done = ask(&mut client, "Any sports manga?", None).await;
    assert_eq!(done["metrics"]["route"], "provisioned", "{done}");
    assert_eq!(done["metrics"]["model"], arn.as_str());
    assert_eq!(done["metrics"]["failovers"], 0);

    // The provisioned route throttles before the first token: one clean answer from on-demand.
    sys.emulator.inject(Fault::ThrottleBeforeStream);
    let id = client.send_message("Any romance manga?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed");
    assert_eq!(done["metrics"]["route"], "on-demand");
    assert_eq!(done["metrics"]["failovers"], 1);
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].model_id, arn);
}
