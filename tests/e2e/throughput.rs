//! The provisioned-throughput reconciler end to end: the throughput Lambda's handler, invoked with the
//! sample events in `events/`, drives the emulator's Bedrock control plane through the real
//! `aws-sdk-bedrock` client and keeps its state in the `CONFIG/THROUGHPUT` item in moto's DynamoDB.

use std::collections::HashMap;
use std::time::Duration;

use ::throughput::handler::handle;
use aws_sdk_dynamodb::types::AttributeValue;
use lambda_runtime::{Context, LambdaEvent};
use mangaassist_adapters::bedrock_control::BedrockControl;
use mangaassist_adapters::dynamo::ensure_table;
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_core::capacity::{Action, Reconciler, ThroughputControl, ThroughputSpec, ThroughputStatus};
use mangaassist_core::testkit::TestClock;
use mangaassist_local::emulators::bedrock::{BedrockEmulator, EmulatorConfig};
use serde_json::Value;

use crate::helpers::*;

/// 2026-11-28 10:00 JST (peak) and 02:00 JST (off-peak), Unix ms.
const JST_1000: u64 = 1_795_827_600_000;
const JST_0200: u64 = 1_795_798_800_000;
const CREATING: Duration = Duration::from_millis(300);

struct Rig {
    _moto: Moto,
    emulator: BedrockEmulator,
    dynamo: aws_sdk_dynamodb::Client,
    table: String,
    reconciler: Reconciler<BedrockControl, DynamoThroughputState, TestClock>,
}

async fn rig(now_ms: u64) -> Rig {
    let moto = moto().await;
    let emulator = BedrockEmulator::start(([127, 0, 0, 1], 0).into(), EmulatorConfig::default()).await.unwrap();
    emulator.control.set_creating_delay(CREATING);
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let dynamo = aws_sdk_dynamodb::Client::new(&mangaassist_adapters::sdk::local(&moto.url).await);
    ensure_table(&dynamo, &table).await.unwrap();
    let spec = ThroughputSpec {
        name: "mangaassist-peak".into(),
        model_id: "anthropic.claude-haiku-4-5-20251001-v1:0:200k".into(),
        model_units: 1,
        commitment: None,
    };
    let reconciler = Reconciler::new(
        BedrockControl::new(&mangaassist_adapters::sdk::local(&emulator.url()).await),
        DynamoThroughputState::from_client(dynamo.clone(), &table),
        TestClock::at(now_ms),
        spec,
    );
    Rig { _moto: moto, emulator, dynamo, table, reconciler }
}

fn event(name: &str) -> LambdaEvent<Value> {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    LambdaEvent::new(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(), Context::default())
}

impl Rig {
    /// The `CONFIG/THROUGHPUT` item as stored.
    async fn item(&self) -> HashMap<String, AttributeValue> {
        let out = self
            .dynamo
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S("CONFIG".into()))
            .key("sk", AttributeValue::S("THROUGHPUT".into()))
            .consistent_read(true)
            .send()
            .await
            .unwrap();
        out.item.expect("the CONFIG/THROUGHPUT item exists")
    }

    async fn attr(&self, name: &str) -> Option<String> {
        self.item().await.get(name).map(|v| v.as_s().or_else(|_| v.as_n()).unwrap().clone())
    }
}

#[tokio::test]
async fn scale_up_buys_once_goes_in_service_and_scale_down_deletes_it() {
    let rig = rig(JST_1000).await;
    let cp = &rig.emulator.control;

    let up = handle(&rig.reconciler, event("schedule-scale-up.json")).await.unwrap();
    let arn = up.state.arn.clone().unwrap();
    assert_eq!(up.actions, vec![Action::Created(arn.clone())]);
    let listed = cp.list();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].status), ("mangaassist-peak", "Creating"));
    assert_eq!(rig.attr("status").await.as_deref(), Some("Creating"));
    assert_eq!(rig.attr("desired").await.as_deref(), Some("Provisioned"));
    assert_eq!(rig.attr("arn").await.as_deref(), Some(arn.as_str()));
    assert_eq!(up.state.route(), None, "not routed to until InService");

    tokio::time::sleep(CREATING + Duration::from_millis(100)).await;
    let rec = handle(&rig.reconciler, event("schedule-reconcile.json")).await.unwrap();
    assert!(rec.actions.is_empty());
    assert_eq!(rec.state.status, ThroughputStatus::InService);
    assert_eq!(rig.attr("status").await.as_deref(), Some("InService"));
    assert_eq!(rec.state.route(), Some(arn.as_str()));
    let by_arn = rig.reconciler.control.get(&arn).await.unwrap().expect("found by its ARN");
    assert_eq!((by_arn.name.as_str(), by_arn.model_units), ("mangaassist-peak", 1));

    let again = handle(&rig.reconciler, event("schedule-scale-up.json")).await.unwrap();
    assert!(again.actions.is_empty(), "{:?}", again.actions);
    assert_eq!(cp.created_count(), 1, "a repeated scale_up buys nothing");
    assert_eq!(cp.list().len(), 1);

    let version_before: u64 = rig.attr("version").await.unwrap().parse().unwrap();
    let down = handle(&rig.reconciler, event("schedule-scale-down.json")).await.unwrap();
    assert_eq!(down.actions, vec![Action::Deleted(arn)]);
    assert!(cp.list().is_empty());
    assert_eq!(cp.deleted_count(), 1);
    let item = rig.item().await;
    assert_eq!(item["status"].as_s().unwrap(), "NotProvisioned");
    assert_eq!(item["desired"].as_s().unwrap(), "OnDemand");
    assert!(!item.contains_key("arn"));
    assert!(item["version"].as_n().unwrap().parse::<u64>().unwrap() > version_before);
}

#[tokio::test]
async fn a_commitment_term_purchase_is_kept_at_scale_down_with_its_term_end_recorded() {
    let mut rig = rig(JST_1000).await;
    rig.reconciler.spec.commitment = Some(mangaassist_core::capacity::Commitment::OneMonth);
    let cp = &rig.emulator.control;
    let up = handle(&rig.reconciler, event("schedule-scale-up.json")).await.unwrap();
    let arn = up.state.arn.clone().unwrap();
    // The control plane's `commitmentExpirationTime`, a month after the purchase (the emulator's wall clock).
    let ends = up.state.commitment_ends_ms.expect("the term end is recorded");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    assert!(ends > now + 29 * 86_400_000 && ends < now + 31 * 86_400_000, "{ends} vs {now}");
    assert_eq!(rig.attr("commitment_ends").await, Some(ends.to_string()));

    tokio::time::sleep(CREATING + Duration::from_millis(100)).await;
    handle(&rig.reconciler, event("schedule-reconcile.json")).await.unwrap();
    let down = handle(&rig.reconciler, event("schedule-scale-down.json")).await.unwrap();
    assert_eq!(down.actions, vec![Action::KeptForCommitment(arn.clone())]);
    assert_eq!(cp.deleted_count(), 0);
    assert_eq!(cp.list().len(), 1);
    assert_eq!(down.state.route(), Some(arn.as_str()), "paid for: still routed to");
    assert_eq!(rig.attr("desired").await.as_deref(), Some("OnDemand"));
    // The emulator refuses the delete too, as Bedrock does before the term ends.
    let refused = rig.reconciler.control.delete(&arn).await.unwrap_err();
    assert_eq!(refused.code(), "control_rejected", "{refused}");
}

#[tokio::test]
async fn an_off_peak_alarm_buys_and_a_failed_purchase_is_bought_again_on_the_next_reconcile() {
    let rig = rig(JST_0200).await;
    let cp = &rig.emulator.control;
    cp.fail_next_creation();

    let fired = handle(&rig.reconciler, event("alarm-scale-up.json")).await.unwrap();
    assert_eq!(fired.actions.len(), 1);
    assert_eq!(rig.attr("desired_source").await.as_deref(), Some("Alarm"));

    tokio::time::sleep(CREATING + Duration::from_millis(100)).await;
    let reported = handle(&rig.reconciler, event("schedule-reconcile.json")).await.unwrap();
    assert_eq!(reported.state.status, ThroughputStatus::Failed);
    assert!(reported.actions.is_empty(), "reported first, bought again on the next pass");
    let last_error = rig.attr("last_error").await.unwrap();
    assert!(last_error.contains("Insufficient capacity"), "{last_error}");

    let retried = handle(&rig.reconciler, event("schedule-reconcile.json")).await.unwrap();
    assert!(matches!(retried.actions.as_slice(), [Action::Deleted(_), Action::Created(_)]), "{:?}", retried.actions);
    assert_eq!(cp.created_count(), 2);
    assert_eq!(rig.attr("last_error").await, None);

    tokio::time::sleep(CREATING + Duration::from_millis(100)).await;
    let settled = handle(&rig.reconciler, event("schedule-reconcile.json")).await.unwrap();
    assert_eq!(settled.state.status, ThroughputStatus::InService);
    assert_eq!(cp.list().len(), 1);
}

#[tokio::test]
async fn the_emulated_control_plane_is_idempotent_on_the_client_token_and_rejects_bad_requests() {
    let rig = rig(JST_1000).await;
    let control = &rig.reconciler.control;
    let spec = &rig.reconciler.spec;

    let first = control.create(spec, "mangaassist-peak-20261128-v0").await.unwrap();
    let retried = control.create(spec, "mangaassist-peak-20261128-v0").await.unwrap();
    assert_eq!(first, retried, "the same token buys once");
    assert_eq!(rig.emulator.control.created_count(), 1);

    let taken = control.create(spec, "mangaassist-peak-20261128-v1").await.unwrap_err();
    assert_eq!(taken.code(), "control_rejected", "{taken}");
    assert!(!taken.is_retryable());
    let bad = ThroughputSpec { name: "no spaces allowed".into(), ..spec.clone() };
    assert_eq!(control.create(&bad, "t1").await.unwrap_err().code(), "control_rejected");

    assert!(control.get("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/nope").await.unwrap().is_none());
    control.delete(&first).await.unwrap();
    control.delete(&first).await.unwrap(); // already gone: still done
    assert!(control.find_by_name(&spec.name).await.unwrap().is_none());
}

#[tokio::test]
async fn the_state_item_is_written_only_over_the_version_that_was_read() {
    use mangaassist_core::capacity::{SaveOutcome, ThroughputState, ThroughputStateStore};
    let rig = rig(JST_1000).await;
    let store = &rig.reconciler.store;
    assert_eq!(store.load().await.unwrap(), None);

    let v1 = ThroughputState { version: 1, updated_at_ms: JST_1000, ..ThroughputState::default() };
    assert_eq!(store.save(&v1, 0).await.unwrap(), SaveOutcome::Saved);
    assert_eq!(store.save(&v1, 0).await.unwrap(), SaveOutcome::Conflict, "the item exists already");
    let v2 = ThroughputState { version: 2, arn: Some("arn:pt".into()), ..v1.clone() };
    assert_eq!(store.save(&v2, 1).await.unwrap(), SaveOutcome::Saved);
    let stale = ThroughputState { version: 2, last_error: Some("late".into()), ..v1 };
    assert_eq!(store.save(&stale, 1).await.unwrap(), SaveOutcome::Conflict, "a writer that read v1 lost");
    assert_eq!(store.load().await.unwrap(), Some(v2));
}
