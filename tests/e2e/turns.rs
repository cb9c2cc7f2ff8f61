//! The chat turn as a shopper sees it, and as it is stored.

use std::time::Duration;

use mangaassist_core::ids::{ConnectionId, SessionId};
use mangaassist_core::ports::{Store, TurnStatus};
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{Fault, LatencyModel};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn deltas_arrive_in_order_before_completed_and_match_the_stored_answer() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let session = client.session().await.unwrap();
    let session = session.as_str();
    // Products the catalog holds (a page-context ASIN becomes a card only when it exists).
    let looked_at: Vec<String> = sys.services.catalog().products()[..2].iter().map(|p| p.asin.clone()).collect();
    let pc = json!({"browsing_history": looked_at});
    let id = client.send_message("Show me horror manga", Some(&pc)).await.unwrap();
    let events = events_until_end(&mut client, &id).await;

    let (last, deltas) = events.split_last().unwrap();
    assert_eq!(last["type"], "completed", "{last}");
    assert!(!deltas.is_empty());
    for (i, d) in deltas.iter().enumerate() {
        assert_eq!(d["type"], "delta");
        assert_eq!(d["seq"], i as u64, "sequence numbers are contiguous from 0");
    }
    assert_eq!(last["seq"], deltas.len() as u64);
    assert_eq!(last["metrics"]["frames"], deltas.len() as u64);
    assert!(last["metrics"]["output_tokens"].as_u64().unwrap() > 0);
    assert!(last["metrics"]["first_token_ms"].as_f64().unwrap() > 0.0);
    let products: Vec<&str> =
        last["products"].as_array().unwrap().iter().map(|p| p["asin"].as_str().unwrap()).collect();
    assert_eq!(products[..2], looked_at, "the products the shopper was looking at come first");
    assert!(products.len() <= 3, "{products:?}");

    let text = deltas_text(deltas);
    let stored = stored_turns(&sys.app.engine.store, session, 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].assistant_text, text, "what the client saw is what was stored");
    assert_eq!(stored[0].user_text, "Show me horror manga");
    assert_eq!(stored[0].status, TurnStatus::Complete);
    assert_eq!(stored[0].message_id.as_str(), id);
}

#[tokio::test]
async fn a_repeated_message_id_is_answered_once() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let id = client.send_message("Any new fantasy?", None).await.unwrap();
    let first = events_until_end(&mut client, &id).await;
    assert_eq!(first.last().unwrap()["type"], "completed");

    client.send_with_id(&id, "Any new fantasy?", None).await.unwrap();
    let second = events_until_end(&mut client, &id).await;
    assert_eq!(second.len(), 1, "no deltas the second time: {second:?}");
    assert_eq!(second[0]["code"], "duplicate_message");
    assert_eq!(second[0]["retryable"], false);

    // The second delivery may reach the model before the claim says no, but is cancelled, never relayed.
    assert!(sys.emulator.stats.for_message(&id).len() <= 2);
    let next = client.send_message("And horror?", None).await.unwrap();
    assert_eq!(events_until_end(&mut client, &next).await.last().unwrap()["type"], "completed");
}

#[tokio::test]
async fn a_client_leaving_mid_stream_stops_generation() {
    let moto = moto().await;
    let sys = system(&moto, slow()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let session = client.session().await.unwrap();
    let session = session.as_str();
    let id = client.send_message("Tell me about B0BERSERK1 at length", None).await.unwrap();
    let first = client.next_event(WAIT).await.unwrap();
    assert_eq!(first["type"], "delta");
    drop(client); // the socket closes without a close frame, as when a tab is closed

    let mut rec = None;
    for _ in 0..100 {
        let r = sys.emulator.stats.for_message(&id);
        if r.first().is_some_and(|r| r.cancelled) {
            rec = r.first().cloned();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rec = rec.expect("the model stream was cancelled");
    assert!(!rec.completed);
    assert!(rec.deltas_sent < rec.deltas_planned, "stopped at {} of {}", rec.deltas_sent, rec.deltas_planned);

    // What the shopper saw before leaving is kept, marked as such.
    let session = SessionId::parse(session).unwrap();
    let mut stored = Vec::new();
    for _ in 0..50 {
        stored = sys.app.engine.store.recent_turns(&session, 5).await.unwrap();
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, TurnStatus::ClientGone);
    assert!(!stored[0].assistant_text.is_empty());
    assert_eq!(sys.gateway.connection_count(), 0);
}

#[tokio::test]
async fn bad_frames_get_typed_errors_and_the_connection_stays_usable() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let huge = "漫".repeat(70_000); // ~210 KB
    let cases = [
        ("not json".to_owned(), "bad_frame"),
        (json!({"action": "dance", "message_id": "m1"}).to_string(), "unknown_action"),
        (json!({"action": "sendMessage", "message_id": "m2"}).to_string(), "missing_field"),
        (json!({"action": "sendMessage", "text": "hi"}).to_string(), "missing_field"),
        (json!({"action": "sendMessage", "message_id": "m3", "text": huge}).to_string(), "message_too_long"),
        (
            json!({"action": "sendMessage", "message_id": "m4", "text": "hi", "page_context": [1]}).to_string(),
            "invalid_field",
        ),
    ];
    for (frame, code) in cases {
        client.send_raw(frame).await.unwrap();
        let ev = client.next_event(WAIT).await.unwrap();
        assert_eq!(ev["type"], "error", "{ev}");
        assert_eq!(ev["code"], code, "{ev}");
        assert!(ev["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(ev["retryable"], false);
    }
    assert_eq!(sys.emulator.stats.total_requests(), 0, "bad frames never reach the model");
    let id = client.send_message("Still there?", None).await.unwrap();
    assert_eq!(events_until_end(&mut client, &id).await.last().unwrap()["type"], "completed");
}

#[tokio::test]
async fn a_throttle_before_the_first_token_is_retried_and_the_client_sees_one_clean_answer() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    sys.emulator.inject(Fault::ThrottleBeforeStream);
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let id =
        client.send_message("Recommend a short series", Some(&json!({"current_asin": "B0MONSTER1"}))).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    assert!(events.iter().all(|e| e["type"] != "error"), "{events:?}");
    assert_eq!(events.last().unwrap()["type"], "completed");
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].fault, Some(Fault::ThrottleBeforeStream));
    assert!(reqs[1].completed);
}

#[tokio::test]
async fn a_model_failure_mid_answer_is_a_typed_error_and_the_partial_answer_is_kept() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    sys.emulator.inject(Fault::ExceptionAfter { deltas: 5, exception_type: "throttlingException" });
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let session = client.session().await.unwrap();
    let session = session.as_str();
    let id = client.send_message("What is popular this week?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error");
    assert_eq!(last["code"], "model_throttled");
    assert_eq!(last["retryable"], true);
    let seen = deltas_text(&events);
    assert!(!seen.is_empty());

    let stored = stored_turns(&sys.app.engine.store, session, 1).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, TurnStatus::Partial);
    assert_eq!(stored[0].assistant_text, seen);
}

#[tokio::test]
async fn the_handler_serves_the_sample_events() {
    use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
    use chat::handler::{App, handle};
    use lambda_runtime::{Context, LambdaEvent};
    use mangaassist_adapters::apigw::ApiGatewaySinks;
    use mangaassist_adapters::bedrock::BedrockModel;
    use mangaassist_core::clock::SystemClock;
    use mangaassist_core::turn::{Engine, TurnConfig};
    use mangaassist_local::emulators::bedrock::{BedrockEmulator, EmulatorConfig};

    let moto = moto().await;
    let emu = BedrockEmulator::start(
        ([127, 0, 0, 1], 0).into(),
        EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 40, ..EmulatorConfig::default() },
    )
    .await
    .unwrap();
    let (endpoint, recorder) = recording_endpoint().await;
    let sdk = mangaassist_adapters::sdk::local(&emu.url()).await;
    let app = App::new(
        Engine::new(BedrockModel::new(&sdk), dynamo(&moto).await, SystemClock, TurnConfig::default()),
        ApiGatewaySinks::new(sdk, Some(endpoint)),
        mangaassist_adapters::warm::Warmer::default(),
    );
    let event = |name: &str| -> LambdaEvent<ApiGatewayWebsocketProxyRequest> {
        let path = format!("{}/../events/{name}", env!("CARGO_MANIFEST_DIR"));
        let payload = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        LambdaEvent::new(payload, Context::default())
    };
    let conn = ConnectionId::parse("PvCHrcAtNjMCJHg=").unwrap();

    // Without the authorizer's principal, $connect is refused.
    let mut anonymous = event("ws-connect.json");
    anonymous.payload.request_context.authorizer = Default::default();
    assert_eq!(handle(&app, anonymous).await.unwrap().status_code, 403);
    assert!(app.engine.store.get_connection(&conn).await.unwrap().is_none());

    let resp = handle(&app, event("ws-connect.json")).await.unwrap();
    assert_eq!(resp.status_code, 200);
    let rec = app.engine.store.get_connection(&conn).await.unwrap().expect("connection stored");
    assert_eq!(rec.user_id.as_str(), "u-3f2a9c71", "the authorizer's principal");
    // The session asked for was never issued to this user: a new one starts.
    assert_ne!(rec.session_id.as_str(), "5e55a1c0d2b34f6e9a7b8c9d0e1f2a3b");
    assert!(rec.expires_at > rec.connected_at_ms / 1000);

    let resp = handle(&app, event("ws-send-message.json")).await.unwrap();
    assert_eq!(resp.status_code, 200);
    let frames = recorder.frames.lock().unwrap().clone();
    assert!(frames.iter().all(|(id, _)| id == conn.as_str()));
    let (last, deltas) = frames.split_last().unwrap();
    assert_eq!(last.1["type"], "completed");
    assert_eq!(last.1["message_id"], "0f8e7d6c-5b4a-4938-8271-605f4e3d2c1b");
    assert!(deltas.iter().all(|(_, f)| f["type"] == "delta"));
    assert!(deltas_text(&deltas.iter().map(|(_, f)| f.clone()).collect::<Vec<_>>()).contains("B0UZUMAKI1"));

    let resp = handle(&app, event("ws-disconnect.json")).await.unwrap();
    assert_eq!(resp.status_code, 200);
    assert!(app.engine.store.get_connection(&conn).await.unwrap().is_none());
}
