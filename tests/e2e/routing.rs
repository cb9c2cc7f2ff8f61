//! Routing in the chat turn: provisioned throughput while the reconciler's record says `InService`,
//! on-demand otherwise, failover to on-demand before the first token (a provisioned throughput deleted
//! while its route was cached included), and throttles retried with backoff.

use std::time::Duration;

use mangaassist_adapters::bedrock_control::BedrockControl;
use mangaassist_adapters::dynamo::{DynamoStore, ensure_table};
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::capacity::{Reconciler, ThroughputSpec, Trigger};
use mangaassist_core::models::ModelId;
use mangaassist_core::testkit::TestClock;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, Fault, LatencyModel};
use mangaassist_local::system::{SystemOptions, start_routed};

use crate::helpers::*;

/// 2026-11-28 10:00 JST: peak hours, whatever the machine's clock says.
type PeakClock = TestClock;

fn peak() -> PeakClock {
    TestClock::at(1_795_827_600_000)
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
        peak(),
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
    // The client is told the intent's model, never the ARN (it names the account); the ARN is what the
    // request went to.
    let told = done["metrics"]["model"].as_str().unwrap();
    assert!(!told.contains("arn:") && !done.to_string().contains(arn.as_str()), "{done}");
    assert_eq!(ModelId::parse(told).unwrap().base(), Some("anthropic.claude-haiku-4-5-20251001-v1:0"), "{told}");
    let id = done["message_id"].as_str().unwrap();
    assert_eq!(sys.emulator.stats.for_message(id)[0].model_id, arn);
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

/// The rig of the tests below: moto's DynamoDB for the throughput record, the emulators, and a reconciler
/// over the emulated control plane (real `aws-sdk-bedrock` client), on a peak-hours clock.
async fn routed(
    route_ttl: Duration,
) -> (
    Moto,
    mangaassist_local::system::LocalSystem<DynamoStore>,
    Reconciler<BedrockControl, DynamoThroughputState, PeakClock>,
) {
    let moto = moto().await;
    let sdk = mangaassist_adapters::sdk::local(&moto.url).await;
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = DynamoStore::new(&sdk, &table);
    ensure_table(store.client(), &table).await.unwrap();
    let routes = Routes::new(DynamoThroughputState::new(&sdk, &table), route_ttl);
    let opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 30, ..EmulatorConfig::default() },
        ..SystemOptions::default()
    };
    let sys = start_routed(store, opts, routes).await.unwrap();
    sys.emulator.control.set_creating_delay(Duration::from_millis(100));
    let reconciler = Reconciler::new(
        BedrockControl::new(&mangaassist_adapters::sdk::local(&sys.emulator.url()).await),
        DynamoThroughputState::new(&sdk, &table),
        peak(),
        ThroughputSpec {
            name: "mangaassist-peak".into(),
            model_id: "anthropic.claude-haiku-4-5-20251001-v1:0:200k".into(),
            model_units: 1,
            commitment: None,
        },
    );
    (moto, sys, reconciler)
}

#[tokio::test]
async fn a_provisioned_arn_deleted_mid_cache_fails_over_and_the_answer_is_delivered() {
    // The production cache TTL: the chat keeps routing to the ARN for 30 s after the record changes.
    let (_moto, sys, reconciler) = routed(Duration::from_secs(30)).await;
    reconciler.run(Trigger::ScaleUp).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    reconciler.run(Trigger::Reconcile).await.unwrap();
    let arn = sys.emulator.control.list()[0].arn.clone();
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let done = ask(&mut client, "Any horror manga?", None).await;
    assert_eq!(done["metrics"]["route"], "provisioned", "{done}");

    // Deleted (the 23:00 scale-down) while the route is still cached: Bedrock answers
    // `ResourceNotFoundException` for the ARN, and the turn answers from on-demand with no error shown.
    reconciler.run(Trigger::ScaleDown).await.unwrap();
    assert!(sys.emulator.control.list().is_empty());
    let id = client.send_message("Any fantasy manga?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed");
    assert!(!deltas_text(&events).is_empty());
    assert_eq!(done["metrics"]["route"], "on-demand");
    assert_eq!(done["metrics"]["failovers"], 1);
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.iter().map(|r| r.model_id.as_str()).collect::<Vec<_>>()[..1], [arn.as_str()]);
    assert_eq!(reqs.len(), 2);

    // The route was refreshed: the next turn goes on-demand at once, well inside the 30 s TTL.
    let id = client.send_message("Any sports manga?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    assert_eq!(events.last().unwrap()["metrics"]["failovers"], 0);
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.len(), 1);
    assert_ne!(reqs[0].model_id, arn);
}

#[tokio::test]
async fn a_throttle_that_outlasts_the_failover_is_retried_with_backoff_and_answered() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    // The on-demand model throttles three times before the first token: the failover (same model, no
    // fallback configured) and then two retries after a jittered backoff.
    for _ in 0..3 {
        sys.emulator.inject(Fault::ThrottleBeforeStream);
    }
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let id = client.send_message("What is popular this week?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed");
    assert_eq!(done["metrics"]["failovers"], 3);
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.len(), 4);
    assert!(reqs[3].completed);
}
