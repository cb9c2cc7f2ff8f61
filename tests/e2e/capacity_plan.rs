//! The peak capacity plan end to end: the throughput Lambda's handler, with the plan and Region the template
//! gives it, asks the emulator's control plane (through the real `aws-sdk-bedrock` client) what the Region
//! sells, keeps `CONFIG/THROUGHPUT` in moto's DynamoDB, and the chat side reads the peak's priority tier from
//! that record through `Routes`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::throughput::handler::handle;
use lambda_runtime::{Context, LambdaEvent};
use mangaassist_adapters::bedrock_control::BedrockControl;
use mangaassist_adapters::dynamo::ensure_table;
use mangaassist_adapters::throughput_state::DynamoThroughputState;
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::capacity::{
    ControlError, Offer, PeakPlan, PlanConfig, Reconciler, ThroughputControl, ThroughputSpec, ThroughputStateStore,
};
use mangaassist_core::clock::Clock;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{BedrockEmulator, EmulatorConfig};
use mangaassist_local::emulators::control_plane::Catalog;
use mangaassist_local::system::{SystemOptions, start_routed};
use serde_json::Value;

use crate::helpers::*;

/// 2026-11-28 10:00 JST (peak) and 23:00 JST, Unix ms.
const JST_1000: u64 = 1_795_827_600_000;
const JST_2300: u64 = 1_795_874_400_000;
const HAIKU: &str = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";
const NOVA_2_LITE: &str = "jp.amazon.nova-2-lite-v1:0";

struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

struct Rig {
    _moto: Moto,
    emulator: BedrockEmulator,
    state: DynamoThroughputState,
    reconciler: Reconciler<BedrockControl, DynamoThroughputState, TestClock>,
}

async fn rig(catalog: Catalog, plan: PeakPlan, region: &str, pt_model: &str) -> Rig {
    let moto = moto().await;
    let emulator = BedrockEmulator::start(([127, 0, 0, 1], 0).into(), EmulatorConfig::default()).await.unwrap();
    emulator.control.set_catalog(catalog);
    emulator.control.set_creating_delay(Duration::from_millis(100));
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    let dynamo = aws_sdk_dynamodb::Client::new(&mangaassist_adapters::sdk::local(&moto.url).await);
    ensure_table(&dynamo, &table).await.unwrap();
    let spec =
        ThroughputSpec { name: "mangaassist-peak".into(), model_id: pt_model.into(), model_units: 1, commitment: None };
    let state = DynamoThroughputState::from_client(dynamo.clone(), &table);
    let reconciler = Reconciler::new(
        BedrockControl::new(&mangaassist_adapters::sdk::local(&emulator.url()).await),
        DynamoThroughputState::from_client(dynamo, &table),
        TestClock(AtomicU64::new(JST_1000)),
        spec,
    )
    .with_plan(PlanConfig { plan, region: region.into() });
    Rig { _moto: moto, emulator, state, reconciler }
}

fn event(name: &str) -> LambdaEvent<Value> {
    let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
    LambdaEvent::new(serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap(), Context::default())
}

#[tokio::test]
async fn in_tokyo_the_provisioned_plan_buys_nothing_asks_once_and_the_chat_sends_priority_to_nova_at_peak() {
    let rig = rig(
        Catalog::Documented("ap-northeast-1".into()),
        PeakPlan::Provisioned,
        "ap-northeast-1",
        "anthropic.claude-haiku-4-5-20251001-v1:0:200k",
    )
    .await;
    let cp = &rig.emulator.control;
    let up = handle(&rig.reconciler, event("schedule-scale-up.json")).await.unwrap();
    assert!(up.actions.is_empty(), "{:?}", up.actions);
    let check = up.state.plan_check.clone().expect("the answer is recorded");
    assert!(!check.sold && check.detail.contains("sold here: none"), "{check:?}");
    // The answer survives the store and later passes do not ask again, nor fail.
    let stored = rig.state.load().await.unwrap().unwrap();
    assert_eq!((stored.plan_check, stored.priority), (Some(check), true));
    let asked = cp.model_lookups();
    for _ in 0..3 {
        let out = handle(&rig.reconciler, event("schedule-reconcile.json")).await.unwrap();
        assert!(out.actions.is_empty() && out.state.last_error.is_none());
    }
    assert_eq!((cp.model_lookups(), cp.created_count()), (asked, 0));

    // The chat function's cached view of the same record.
    let routes = Routes::new(rig.state.clone(), Duration::ZERO);
    assert_eq!(routes.provisioned().await, None);
    assert!(routes.priority_tier_now(NOVA_2_LITE).await);
    assert!(!routes.priority_tier_now(HAIKU).await, "Claude Haiku 4.5 offers no priority tier");

    // A chat turn at peak: the order question goes to Nova 2 Lite with the priority tier, the recommendation
    // to Claude Haiku 4.5 without it.
    let opts = SystemOptions { emulator: EmulatorConfig::fast(), ..SystemOptions::default() };
    let sys =
        start_routed(dynamo(&rig._moto).await, opts, Routes::new(rig.state.clone(), Duration::ZERO)).await.unwrap();
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let tier = |id: &str| sys.emulator.stats.for_message(id).first().map(|r| r.asked.service_tier.clone());
    let order = client.send_message("Where is my order 112-4433221-7788990?", None).await.unwrap();
    assert_eq!(events_until_end(&mut client, &order).await.last().unwrap()["type"], "completed");
    assert_eq!(tier(&order), Some(Some("priority".to_owned())), "Nova 2 Lite at peak");
    let reco = client.send_message("Can you recommend a horror manga?", None).await.unwrap();
    assert_eq!(events_until_end(&mut client, &reco).await.last().unwrap()["type"], "completed");
    assert_eq!(tier(&reco), Some(None), "Claude Haiku 4.5 has no priority tier");

    rig.reconciler.clock.0.store(JST_2300, Ordering::SeqCst);
    handle(&rig.reconciler, event("schedule-scale-down.json")).await.unwrap();
    assert!(!routes.priority_tier_now(NOVA_2_LITE).await, "standard again after 23:00");
}

#[tokio::test]
async fn where_the_region_sells_it_the_control_plane_says_so_and_the_peak_buys_it() {
    let rig =
        rig(Catalog::Documented("us-east-1".into()), PeakPlan::Provisioned, "us-east-1", "amazon.nova-pro-v1:0:300k")
            .await;
    let control = &rig.reconciler.control;
    assert_eq!(control.provisioned_offer("amazon.nova-pro-v1:0:300k").await.unwrap(), Offer::Sold);
    let not_sold = control.provisioned_offer("anthropic.claude-haiku-4-5-20251001-v1:0:200k").await.unwrap();
    let Offer::NotSold { sold_here, .. } = not_sold else { panic!("{not_sold:?}") };
    assert!(sold_here.contains(&"amazon.nova-pro-v1:0:300k".to_owned()), "{sold_here:?}");
    let up = handle(&rig.reconciler, event("schedule-scale-up.json")).await.unwrap();
    assert_eq!(up.actions.len(), 1, "bought: {:?}", up.actions);
    assert!(up.state.plan_check.is_some_and(|c| c.sold));
}

#[tokio::test]
async fn buying_what_the_region_does_not_sell_is_refused_and_not_worth_retrying() {
    let rig = rig(
        Catalog::Documented("ap-northeast-1".into()),
        PeakPlan::Priority,
        "ap-northeast-1",
        "amazon.nova-pro-v1:0:300k",
    )
    .await;
    let err = rig.reconciler.control.create(&rig.reconciler.spec, "t-1").await.unwrap_err();
    assert!(matches!(err, ControlError::Rejected(..)) && !err.is_retryable(), "{err:?}");
    // The priority plan never gets that far: it buys nothing and asks nothing.
    let up = handle(&rig.reconciler, event("schedule-scale-up.json")).await.unwrap();
    assert!(up.actions.is_empty() && up.state.priority && up.state.plan_check.is_none());
    assert_eq!(rig.emulator.control.model_lookups(), 0);
}
