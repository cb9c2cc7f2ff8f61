//! Answers that start while the shopper types, through the whole system: `typing` frames over the
//! WebSocket, the real chat handler (writer and claimant), the local cache's answer buffer, the Bedrock
//! emulator counting what reaches it, moto_server for the budgets.

use std::time::Duration;

use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{LatencyModel, RequestRecord};
use mangaassist_local::system::LocalSystem;
use serde_json::{Value, json};

use crate::helpers::*;

fn typing(text: &str, page: Option<&Value>) -> String {
    let mut frame = json!({"action": "typing", "text": text});
    if let Some(p) = page {
        frame["page_context"] = p.clone();
    }
    frame.to_string()
}

async fn with_answers(moto: &Moto, latency: LatencyModel) -> LocalSystem<DynamoStore> {
    system_with(moto, latency, |t| t.typed.enabled = true).await
}

/// The model requests typed ahead (their request metadata names a typed-ahead generation).
fn ahead(sys: &LocalSystem<DynamoStore>) -> Vec<RequestRecord> {
    sys.emulator.stats.for_messages_starting("typed-")
}

async fn session_of(client: &mut ChatClient) -> String {
    client.session().await.unwrap()
}

/// Waits until `n` typed-ahead requests have reached the model and the last has ended (completed or
/// cancelled).
async fn generated(sys: &LocalSystem<DynamoStore>, n: usize) -> Vec<RequestRecord> {
    for _ in 0..400 {
        let a = ahead(sys);
        if a.len() >= n && a.iter().all(|r| r.completed || r.cancelled) {
            return a;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} typed-ahead generations, wanted {n}", ahead(sys).len());
}

/// Waits until the first `n` typed-ahead requests have ended.
async fn runs_end(sys: &LocalSystem<DynamoStore>, n: usize) {
    generated(sys, n).await;
}

/// Waits until `n` typed-ahead requests have reached the model (still streaming or not).
async fn asked(sys: &LocalSystem<DynamoStore>, n: usize) {
    for _ in 0..400 {
        if ahead(sys).len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} typed-ahead generations, wanted {n}", ahead(sys).len());
}

fn answer_text(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "delta").map(|e| e["text"].as_str().unwrap_or_default()).collect()
}

async fn send(client: &mut ChatClient, text: &str, page: Option<&Value>) -> (String, Vec<Value>) {
    let id = client.send_message(text, page).await.unwrap();
    let events = events_until_end(client, &id).await;
    assert_eq!(events.last().unwrap()["type"], "completed", "{events:?}");
    (id, events)
}

#[tokio::test]
async fn a_message_sent_as_typed_after_its_answer_was_generated_gets_it_at_once_with_no_model_call() {
    let moto = moto().await;
    let sys = with_answers(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    let runs = generated(&sys, 1).await;
    assert!(runs[0].completed, "the generation ran to its end");

    let (id, events) = send(&mut client, "show me some horror manga", None).await;
    let done = events.last().unwrap();
    assert_eq!(done["metrics"]["served"], "typed_ahead", "{done}");
    assert!(sys.emulator.stats.for_message(&id).is_empty(), "no model request at send");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1) && seqs[0] == 0, "the usual seq: {seqs:?}");
    assert!(answer_text(&events).len() > 20, "the whole answer: {events:?}");
    assert!(done["metrics"]["ahead_ms"].as_f64().unwrap() > 0.0, "{done}");
    assert!(done["metrics"]["output_tokens"].as_u64().unwrap() > 0, "metered as a normal turn: {done}");
    let stored = stored_turns(&sys.app.engine.store, &session_of(&mut client).await, 1).await;
    assert_eq!(stored[0].assistant_text, answer_text(&events), "stored as a normal turn");
}

#[tokio::test]
async fn a_message_sent_before_the_first_delta_still_gets_the_whole_answer_in_order() {
    let moto = moto().await;
    let slow = LatencyModel { overhead_ms: 600.0, prefill_ms_per_token: 0.0, decode_tokens_per_sec: 60.0, jitter: 0.0 };
    let sys = with_answers(&moto, slow).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    asked(&sys, 1).await;
    assert!(ahead(&sys)[0].first_delta_at.is_none(), "sent before the model's first token");
    let (_, events) = send(&mut client, "Show me some horror manga", None).await;
    let done = events.last().unwrap();
    assert_eq!(done["metrics"]["served"], "typed_ahead", "{done}");
    let runs = generated(&sys, 1).await;
    assert_eq!(runs[0].deltas_sent, runs[0].deltas_planned, "the generation was read to its end");
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "in order: {seqs:?}");
    // The shopper waited for part of the model's first token only.
    let m = &done["metrics"];
    assert!(m["ahead_ms"].as_f64().unwrap() < m["model_first_token_ms"].as_f64().unwrap(), "{m}");
}

#[tokio::test]
async fn an_edited_message_takes_the_normal_path_and_cancels_the_generation() {
    let moto = moto().await;
    let sys = with_answers(&moto, slow()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    asked(&sys, 1).await;
    let (id, events) = send(&mut client, "Show me some romance manga", None).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model");
    assert_eq!(sys.emulator.stats.for_message(&id).len(), 1, "the model answered the edited text");
    let runs = generated(&sys, 1).await;
    assert!(runs[0].cancelled, "the generation for the earlier text was stopped");
    assert!(!answer_text(&events).is_empty());
}

#[tokio::test]
async fn a_newer_settled_partial_supersedes_the_generation_in_flight_and_only_the_newer_is_served() {
    let moto = moto().await;
    let sys = with_answers(&moto, slow()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    asked(&sys, 1).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    client.send_raw(typing("Show me some romance manga", None)).await.unwrap();
    let runs = generated(&sys, 2).await;
    assert!(runs[0].cancelled && runs[0].deltas_sent < runs[0].deltas_planned, "the older one stopped mid-stream");
    let (id, events) = send(&mut client, "Show me some romance manga", None).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "typed_ahead");
    assert!(sys.emulator.stats.for_message(&id).is_empty());
    // The older text, sent now, gets the model: its generation is gone.
    let (id, events) = send(&mut client, "Show me some horror manga", None).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model");
    assert_eq!(sys.emulator.stats.for_message(&id).len(), 1);
}

#[tokio::test]
async fn a_turn_stored_between_typing_and_send_invalidates_the_generation() {
    let moto = moto().await;
    // 40 tokens/s: the first answer streams for about 1.5 s.
    let sys = with_answers(&moto, slow()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    // The next message is typed (and answered ahead) while the first answer streams: its generation read
    // the memory before the first exchange was stored.
    let first = client.send_message("What is your return policy", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    asked(&sys, 1).await;
    let events = events_until_end(&mut client, &first).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model");
    runs_end(&sys, 1).await;
    let (id, events) = send(&mut client, "Show me some horror manga", None).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model", "the memory changed since it was typed");
    let prompt = &sys.emulator.stats.for_message(&id)[0].prompt;
    assert!(prompt.contains("What is your return policy"), "the answer knows the first exchange: {prompt}");
}

#[tokio::test]
async fn another_page_context_takes_the_normal_path() {
    let moto = moto().await;
    let sys = with_answers(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let horror = json!({"store_section": "horror"});
    client.send_raw(typing("Show me some popular manga", Some(&horror))).await.unwrap();
    generated(&sys, 1).await;
    let romance = json!({"store_section": "romance"});
    let (_, events) = send(&mut client, "Show me some popular manga", Some(&romance)).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model");
}

#[tokio::test]
async fn two_sends_racing_for_one_generation_one_claims_it_and_the_other_asks_the_model() {
    let moto = moto().await;
    let sys = with_answers(&moto, slow()).await;
    let mut first = ChatClient::connect(&sys.ws_url_for("racer")).await.unwrap();
    let session = session_of(&mut first).await;
    let resume = format!("{}&session_id={session}", sys.ws_url_for("racer"));
    let mut second = ChatClient::connect(&resume).await.unwrap();
    assert_eq!(session_of(&mut second).await, session, "one session, two connections");
    first.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    asked(&sys, 1).await;
    let (a, b) = tokio::join!(
        send(&mut first, "Show me some horror manga", None),
        send(&mut second, "Show me some horror manga", None)
    );
    let served = |e: &[Value]| e.last().unwrap()["metrics"]["served"].as_str().unwrap().to_owned();
    let mut both = [served(&a.1), served(&b.1)];
    both.sort();
    assert_eq!(both, ["model", "typed_ahead"]);
}

#[tokio::test]
async fn with_answer_speculation_off_a_typing_frame_asks_no_model() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ahead(&sys).is_empty());
    assert_eq!(sys.emulator.stats.total_requests(), 0);
    let (_, events) = send(&mut client, "Show me some horror manga", None).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model");
}

#[tokio::test]
async fn an_unsettled_partial_is_not_answered_ahead() {
    let moto = moto().await;
    let sys = with_answers(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    client.send_raw(typing("Show me some", None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ahead(&sys).is_empty(), "a question that stops on 'some' is not finished");
}

#[tokio::test]
async fn a_generation_the_guardrail_stopped_is_never_served() {
    use mangaassist_core::answer::routes::Routes;
    use mangaassist_local::embedded::ttl_cache::TtlCache;
    use mangaassist_local::emulators::bedrock::{EmulatorConfig, Fault};
    use mangaassist_local::system::{SystemOptions, start_full, with_guardrails};

    let moto = moto().await;
    let mut opts = SystemOptions { emulator: EmulatorConfig::fast(), ..SystemOptions::default() };
    opts.emulator.answer_tokens = 40;
    opts.turn.typed.enabled = true;
    with_guardrails(&mut opts);
    let sys = start_full(dynamo(&moto).await, TtlCache::default(), opts, Routes::default()).await.unwrap();
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    // The answer typed ahead says something the output guardrail stops.
    sys.emulator.inject(Fault::Say("You can also read the raw scans on a free site.".into()));
    client.send_raw(typing("Show me some horror manga", None)).await.unwrap();
    let runs = generated(&sys, 1).await;
    assert!(runs[0].guardrail_intervened, "the guardrail stopped the generation");
    // The emulator records its stream's end a moment before the writer has appended the stop to the buffer;
    // this test is about a generation already stopped (one stopped while relayed is retracted instead).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (id, events) = send(&mut client, "Show me some horror manga", None).await;
    assert_eq!(events.last().unwrap()["metrics"]["served"], "model", "never served: the model answered anew");
    assert_eq!(sys.emulator.stats.for_message(&id).len(), 1);
    assert!(!answer_text(&events).contains("raw scans"));
}
