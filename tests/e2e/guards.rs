//! Who may talk to the service, how much, and what survives failure, end to end: the real chat handler
//! behind the gateway emulator and the local issuer, DynamoDB on moto_server (wrapped in the fault
//! injector where a test needs a slow or throttled table), the Bedrock emulator.

use std::sync::Arc;
use std::time::Duration;

use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_core::ids::SessionId;
use mangaassist_core::ports::{Store, TurnStatus};
use mangaassist_core::turn::TurnConfig;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, Fault, LatencyModel};
use mangaassist_local::faults::{FaultyStore, StoreFaults};
use mangaassist_local::system::{LocalSystem, SystemOptions, start};
use serde_json::Value;

use crate::helpers::{Moto, dynamo, events_until_end, moto};

type Faulty = Arc<FaultyStore<DynamoStore>>;

async fn system(moto: &Moto, f: impl FnOnce(&mut TurnConfig)) -> (LocalSystem<Faulty>, Faulty) {
    let store = Arc::new(FaultyStore::new(dynamo(moto).await, StoreFaults::default()));
    let mut opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 40, ..EmulatorConfig::default() },
        ..SystemOptions::default()
    };
    f(&mut opts.turn);
    (start(store.clone(), opts).await.unwrap(), store)
}

/// The connection's session id (the `session` frame).
async fn session_of(client: &mut ChatClient) -> SessionId {
    client.send_raw(r#"{"action":"session"}"#).await.unwrap();
    loop {
        let ev = client.next_event(Duration::from_secs(10)).await.unwrap();
        if ev["type"] == "session" {
            return SessionId::parse(ev["session_id"].as_str().unwrap()).unwrap();
        }
    }
}

/// Events of message `id` until its `completed` or `error`.
async fn until_end(client: &mut ChatClient, id: &str) -> Vec<Value> {
    events_until_end(client, id).await
}

#[tokio::test]
async fn a_session_is_resumed_by_its_owner_and_never_by_another_user() {
    let moto = moto().await;
    let (sys, store) = system(&moto, |_| {}).await;
    let mut alice = ChatClient::connect(&sys.ws_url_for("alice")).await.unwrap();
    let a_session = session_of(&mut alice).await;
    let id = alice.send_message("Show me horror manga like Uzumaki, my secret wish", None).await.unwrap();
    assert_eq!(until_end(&mut alice, &id).await.last().unwrap()["type"], "completed");
    alice.close().await;

    // Bob asks to resume Alice's session: he gets a new one, and his prompt holds nothing of hers.
    let url = format!("{}&session_id={a_session}", sys.ws_url_for("bob"));
    let mut bob = ChatClient::connect(&url).await.unwrap();
    let b_session = session_of(&mut bob).await;
    assert_ne!(b_session, a_session);
    let id = bob.send_message("What did I ask you before?", None).await.unwrap();
    assert_eq!(until_end(&mut bob, &id).await.last().unwrap()["type"], "completed");
    let prompt = &sys.emulator.stats.for_message(&id)[0].prompt;
    assert!(!prompt.contains("secret wish"), "another user's turn leaked into the prompt: {prompt}");
    let a_turns = store.recent_turns(&a_session, 10).await.unwrap();
    assert_eq!(a_turns.len(), 1, "Alice's history is unchanged");

    // Alice herself resumes it, and her earlier turn is in the prompt.
    let url = format!("{}&session_id={a_session}", sys.ws_url_for("alice"));
    let mut alice = ChatClient::connect(&url).await.unwrap();
    assert_eq!(session_of(&mut alice).await, a_session);
    let id = alice.send_message("Anything else like that?", None).await.unwrap();
    assert_eq!(until_end(&mut alice, &id).await.last().unwrap()["type"], "completed");
    assert!(sys.emulator.stats.for_message(&id)[0].prompt.contains("secret wish"));
}

#[tokio::test]
async fn a_second_message_while_one_streams_is_busy() {
    let moto = moto().await;
    let (sys, _) = system(&moto, |_| {}).await;
    sys.emulator.inject(Fault::StallBeforeFirstToken(Duration::from_millis(600)));
    let mut c = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let first = c.send_message("Show me some horror manga", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let second = c.send_message("And comedy?", None).await.unwrap();
    let (mut first_end, mut second_end) = (None, None);
    while first_end.is_none() || second_end.is_none() {
        let ev = c.next_event(Duration::from_secs(10)).await.unwrap();
        let kind = ev["type"].as_str().unwrap_or_default().to_owned();
        if kind == "completed" || kind == "error" {
            if ev["message_id"] == first.as_str() {
                first_end = Some(ev);
            } else if ev["message_id"] == second.as_str() {
                second_end = Some(ev);
            }
        }
    }
    assert_eq!(first_end.unwrap()["type"], "completed");
    let busy = second_end.unwrap();
    assert_eq!((busy["code"].as_str(), busy["retryable"].as_bool()), (Some("busy"), Some(true)), "{busy}");
    assert!(sys.emulator.stats.for_message(&second).is_empty(), "a refused message never reaches the model");
    c.send_with_id(&second, "And comedy?", None).await.unwrap();
    assert_eq!(until_end(&mut c, &second).await.last().unwrap()["type"], "completed", "sent again after");
}

#[tokio::test]
async fn over_the_rate_a_message_gets_rate_limited_with_retry_after() {
    let moto = moto().await;
    let (sys, _) = system(&moto, |t| t.limits.user.requests_per_minute = 2).await;
    let mut c = ChatClient::connect(&sys.ws_url()).await.unwrap();
    for text in ["hello", "horror please"] {
        let id = c.send_message(text, None).await.unwrap();
        assert_eq!(until_end(&mut c, &id).await.last().unwrap()["type"], "completed");
    }
    let id = c.send_message("and more?", None).await.unwrap();
    let e = until_end(&mut c, &id).await.pop().unwrap();
    assert_eq!((e["code"].as_str(), e["retryable"].as_bool()), (Some("rate_limited"), Some(true)), "{e}");
    let after = e["retry_after_ms"].as_u64().unwrap();
    assert!((1..=60_000).contains(&after), "{after}");
}

#[tokio::test]
async fn a_stream_stalled_past_the_deadline_ends_with_an_error_and_a_partial_turn_then_the_id_is_retried() {
    let moto = moto().await;
    let (sys, store) = system(&moto, |t| t.turn_deadline = Duration::from_millis(1500)).await;
    sys.emulator.inject(Fault::StallAfter { deltas: 4, pause: Duration::from_secs(6) });
    let mut c = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let session = session_of(&mut c).await;
    let id = c.send_message("Show me some horror manga", None).await.unwrap();
    let started = std::time::Instant::now();
    let events = until_end(&mut c, &id).await;
    assert!(started.elapsed() < Duration::from_secs(4), "ended at the deadline: {:?}", started.elapsed());
    let end = events.last().unwrap();
    assert_eq!((end["code"].as_str(), end["retryable"].as_bool()), (Some("deadline_exceeded"), Some(true)));
    let shown: String = events.iter().filter(|e| e["type"] == "delta").map(|e| e["text"].as_str().unwrap()).collect();
    assert!(!shown.is_empty());
    let turns = store.recent_turns(&session, 10).await.unwrap();
    assert_eq!((turns[0].status, turns[0].assistant_text.as_str()), (TurnStatus::Partial, shown.as_str()));

    c.send_with_id(&id, "Show me some horror manga", None).await.unwrap();
    assert_eq!(until_end(&mut c, &id).await.last().unwrap()["type"], "completed", "the same id, answered");
    assert_eq!(store.recent_turns(&session, 10).await.unwrap()[0].status, TurnStatus::Complete);
}

#[tokio::test]
async fn a_throttled_turn_write_is_retried_and_a_lost_one_still_reaches_the_shopper() {
    let moto = moto().await;
    let (sys, store) = system(&moto, |_| {}).await;
    let mut c = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let session = session_of(&mut c).await;
    store.fail_next_saves(2);
    let id = c.send_message("Show me some horror manga", None).await.unwrap();
    assert_eq!(until_end(&mut c, &id).await.last().unwrap()["type"], "completed");
    // The turn is written by the handler before it returns; the completed event may arrive first.
    let mut stored = Vec::new();
    for _ in 0..50 {
        stored = store.recent_turns(&session, 10).await.unwrap();
        if !stored.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stored.len(), 1, "stored on the third attempt");
    assert_eq!(store.injected(), 2);

    // A table that refuses every attempt: the shopper still has the answer; the loss is reported (the
    // "TURN NOT STORED" log line and the turn.store_failed metric), after exactly the configured attempts.
    store.fail_next_saves(100);
    let id = c.send_message("And comedy?", None).await.unwrap();
    assert_eq!(until_end(&mut c, &id).await.last().unwrap()["type"], "completed");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(store.injected(), 2 + u64::from(TurnConfig::default().store_attempts));
    assert_eq!(store.recent_turns(&session, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_same_message_id_under_slow_claims_is_answered_once() {
    let moto = moto().await;
    let (sys, store) = system(&moto, |_| {}).await;
    store.set(StoreFaults { claim_delay: Duration::from_millis(300), ..StoreFaults::default() });
    let mut first = ChatClient::connect(&sys.ws_url_for("carol")).await.unwrap();
    let session = session_of(&mut first).await;
    let url = format!("{}&session_id={session}", sys.ws_url_for("carol"));
    let mut second = ChatClient::connect(&url).await.unwrap();
    let id = uuid::Uuid::new_v4().to_string();
    first.send_with_id(&id, "Show me some horror manga", None).await.unwrap();
    second.send_with_id(&id, "Show me some horror manga", None).await.unwrap();
    let (a, b) = tokio::join!(until_end(&mut first, &id), until_end(&mut second, &id));
    let ends = [a.last().unwrap()["type"].clone(), b.last().unwrap()["type"].clone()];
    assert_eq!(ends.iter().filter(|t| *t == "completed").count(), 1, "{ends:?}");
    let dup = if ends[0] == "error" { a.last().unwrap() } else { b.last().unwrap() };
    assert_eq!(dup["code"], "duplicate_message");
    assert_eq!(sys.emulator.stats.for_message(&id).len(), 1, "one model request");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.recent_turns(&session, 10).await.unwrap().len(), 1, "one TURN item");
}

#[tokio::test]
async fn an_access_denied_model_shows_the_client_a_code_and_no_arn() {
    let moto = moto().await;
    let (sys, _) = system(&moto, |_| {}).await;
    sys.emulator.inject(Fault::AccessDeniedBeforeStream);
    let mut c = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let id = c.send_message("hello", None).await.unwrap();
    let e = until_end(&mut c, &id).await.pop().unwrap();
    assert_eq!(e["code"], "model_rejected");
    let text = e.to_string();
    for secret in ["arn:", "123456789012", "assumed-role", "not authorized"] {
        assert!(!text.contains(secret), "{secret} reached the client: {text}");
    }
}
