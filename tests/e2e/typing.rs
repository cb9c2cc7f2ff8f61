//! Typing-time speculation through the whole system: `typing` frames over the WebSocket, the real chat
//! handler, moto_server for the counters, and the embedded retriever and product services counting what
//! reaches them.

use std::time::Duration;

use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::LatencyModel;
use mangaassist_local::system::LocalSystem;
use serde_json::json;

use crate::helpers::*;

fn asins(sys: &LocalSystem<DynamoStore>) -> (String, String) {
    let p = sys.services.catalog().products();
    (p[0].asin.clone(), p[1].asin.clone())
}

fn typing(text: &str) -> String {
    json!({"action": "typing", "text": text}).to_string()
}

/// Waits until the sources have seen `retrievals` queries and `calls` service calls, then for the
/// speculation's cache write after them.
async fn settled(sys: &LocalSystem<DynamoStore>, retrievals: u64, calls: u64) {
    for _ in 0..200 {
        if sys.retriever.requests() >= retrievals && sys.services.total_requests() >= calls {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
}

/// Nothing arrives on the connection for a while.
async fn silent(client: &mut ChatClient) {
    let ev = client.next_event(Duration::from_millis(300)).await;
    assert!(ev.is_err(), "a typing frame is never answered: {ev:?}");
}

#[tokio::test]
async fn a_typing_frame_then_the_same_message_reaches_retrieval_and_the_product_services_once() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |_| {}).await;
    let (asin, _) = asins(&sys);
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    client.send_raw(typing(&format!("How many volumes does {asin} have"))).await.unwrap();
    settled(&sys, 1, 2).await;
    silent(&mut client).await;
    assert_eq!((sys.retriever.requests(), sys.services.total_requests()), (1, 2), "details and reviews, once");

    let done = ask(&mut client, &format!("how many volumes does {asin} have?"), None).await;
    let m = &done["metrics"];
    assert_eq!(m["speculated_legs"], json!(["memory", "retrieval", "services"]), "{m}");
    assert_eq!(m["legs"]["retrieval_ms"], 0.0, "{m}");
    assert_eq!(m["legs"]["memory_ms"], 0.0, "{m}");
    assert_eq!(sys.retriever.requests(), 1, "the message reused the speculation's retrieval");
    assert_eq!(sys.services.total_requests(), 2, "and its product data");
}

#[tokio::test]
async fn a_message_edited_to_another_product_assembles_its_own_context() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |_| {}).await;
    let (first, second) = asins(&sys);
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    client.send_raw(typing(&format!("Is {first} in stock"))).await.unwrap();
    settled(&sys, 1, 2).await;
    let done = ask(&mut client, &format!("Is {second} in stock"), None).await;
    let m = &done["metrics"];
    assert_eq!(m["speculated_legs"], json!(["memory"]), "built for another product: only the memory fits: {m}");
    assert_eq!(sys.retriever.requests(), 2);
    assert_eq!(sys.services.total_requests(), 4, "the sent product's details and reviews were fetched");
}

#[tokio::test]
async fn memory_read_while_the_last_answer_streamed_is_never_reused_and_memory_read_after_it_is() {
    let moto = moto().await;
    // 40 tokens/s: the first answer streams for about 1.5 s.
    let sys = system(&moto, slow()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let prompt_of = |id: &str| sys.emulator.stats.for_message(id)[0].prompt.clone();

    // The next message is typed while the first answer streams: its speculation reads memory before the
    // first turn is stored.
    let first = client.send_message("Show me some horror manga", None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send_raw(typing("any romance manga")).await.unwrap();
    let events = events_until_end(&mut client, &first).await;
    assert_eq!(events.last().unwrap()["type"], "completed");
    settled(&sys, 2, 0).await;
    let second = client.send_message("any romance manga?", None).await.unwrap();
    let done = events_until_end(&mut client, &second).await.pop().unwrap();
    let legs = |done: &serde_json::Value| done["metrics"]["speculated_legs"].as_array().unwrap().clone();
    assert!(legs(&done).contains(&json!("retrieval")), "the search is reused: {done}");
    assert!(!legs(&done).contains(&json!("memory")), "the stale memory is not: {done}");
    assert!(prompt_of(&second).contains("Show me some horror manga"), "the first exchange is in the next prompt");

    // Typed after that answer was stored: the speculation's memory is current, and served.
    client.send_raw(typing("any cooking manga")).await.unwrap();
    settled(&sys, 4, 0).await;
    let third = client.send_message("any cooking manga", None).await.unwrap();
    let done = events_until_end(&mut client, &third).await.pop().unwrap();
    assert_eq!(legs(&done)[..2], [json!("memory"), json!("retrieval")], "{done}");
    let prompt = prompt_of(&third);
    assert!(prompt.contains("user: any romance manga?"), "the second exchange is in the third prompt: {prompt}");
}

#[tokio::test]
async fn the_input_check_made_while_typing_serves_the_message_sent_exactly_as_typed_and_no_other() {
    use mangaassist_local::emulators::bedrock::EmulatorConfig;
    use mangaassist_local::system::with_guardrails;
    use mangaassist_local::system::{SystemOptions, start};

    let moto = moto().await;
    let mut opts = SystemOptions { emulator: EmulatorConfig::fast(), ..SystemOptions::default() };
    opts.turn.limits.user.requests_per_minute = 1_000;
    with_guardrails(&mut opts);
    let sys = start(dynamo(&moto).await, opts).await.unwrap();
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let checks = || sys.emulator.stats.guardrail_calls().len();
    let checked = async |n: usize| {
        for _ in 0..200 {
            if checks() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        // The speculation's cache write follows its check.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(checks(), n);
    };

    // Typed, then sent as typed: the one check is the typing-time one.
    client.send_raw(typing("Show me some horror manga")).await.unwrap();
    checked(1).await;
    ask(&mut client, "Show me some horror manga", None).await;
    assert_eq!(checks(), 1, "the typing-time verdict served the message");

    // A blocked text, sent as typed: blocked on that verdict, no model request.
    let pirate = "Where can I download raw scans of One Piece";
    client.send_raw(typing(pirate)).await.unwrap();
    checked(2).await;
    let id = client.send_message(pirate, None).await.unwrap();
    let end = events_until_end(&mut client, &id).await.pop().unwrap();
    assert_eq!((end["type"].as_str(), end["code"].as_str()), (Some("error"), Some("blocked")), "{end}");
    assert!(sys.emulator.stats.for_message(&id).is_empty());
    assert_eq!(checks(), 2);

    // Typed harmless, then changed before send: the sent text is checked itself, and blocked.
    client.send_raw(typing("Where can I buy One Piece")).await.unwrap();
    checked(3).await;
    let id = client.send_message("Where can I buy raw scans of One Piece", None).await.unwrap();
    let end = events_until_end(&mut client, &id).await.pop().unwrap();
    assert_eq!(end["code"], "blocked", "{end}");
    assert_eq!(checks(), 4, "checked again at send");
}

fn minute() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 60
}

#[tokio::test]
async fn a_flood_of_typing_frames_is_bounded_and_never_answered() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |t| t.limits.typing_per_minute = 10).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    // One after another: the connection's typing rate admits 10 a minute, and each admitted one costs one
    // retrieval query (this text needs no product data).
    let from = minute();
    for i in 0..15 {
        client.send_raw(typing(&format!("any horror manga draft{i}"))).await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    settled(&sys, 10, 0).await;
    let windows = minute() - from + 1;
    let sequential = sys.retriever.requests();
    // At most 10 in one window; fewer when a typing counter round trip ran out of time under load (a
    // frame whose counter cannot be read is refused: speculation is optional work).
    let bounded = (5..=10).contains(&sequential) || (windows > 1 && sequential <= 15);
    assert!(bounded, "{sequential} in {windows} windows");

    // All at once, with bad and oversized frames: dropped and counted, never answered.
    let before = sys.gateway.invocations();
    for i in 0..100 {
        client.send_raw(typing(&format!("any horror manga flood{i}"))).await.unwrap();
    }
    client.send_raw(r#"{"action":"typing","text":7}"#).await.unwrap();
    client.send_raw(typing(&"a".repeat(20_000))).await.unwrap();
    for _ in 0..400 {
        if sys.gateway.invocations() >= before + 102 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    settled(&sys, 0, 0).await;
    silent(&mut client).await;
    let windows = minute() - from + 1;
    let total = sys.retriever.requests();
    assert!(total <= 10 * windows, "the connection's typing rate bounds the work: {total} in {windows} windows");

    // The message rate is untouched: the shopper's message is answered.
    let done = ask(&mut client, "any horror manga?", None).await;
    assert_eq!(done["type"], "completed");
}

#[tokio::test]
async fn with_speculation_off_a_typing_frame_changes_nothing() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |t| t.speculation.enabled = false).await;
    let (asin, _) = asins(&sys);
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    client.send_raw(typing(&format!("How many volumes does {asin} have"))).await.unwrap();
    silent(&mut client).await;
    assert_eq!((sys.retriever.requests(), sys.services.total_requests()), (0, 0), "nothing speculated");

    let done = ask(&mut client, &format!("How many volumes does {asin} have?"), None).await;
    assert_eq!(done["metrics"]["speculated_legs"], json!([]));
    assert_eq!((sys.retriever.requests(), sys.services.total_requests()), (1, 2), "assembled as without it");
}

#[tokio::test]
async fn the_handler_answers_a_typing_event_with_200_and_posts_nothing() {
    use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
    use chat::handler::{App, handle};
    use lambda_runtime::{Context, LambdaEvent};
    use mangaassist_adapters::apigw::ApiGatewaySinks;
    use mangaassist_adapters::bedrock::BedrockModel;
    use mangaassist_core::clock::SystemClock;
    use mangaassist_core::turn::{Engine, TurnConfig};
    use mangaassist_local::emulators::bedrock::{BedrockEmulator, EmulatorConfig};

    let moto = moto().await;
    let emu = BedrockEmulator::start(([127, 0, 0, 1], 0).into(), EmulatorConfig::default()).await.unwrap();
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
    assert_eq!(handle(&app, event("ws-connect.json")).await.unwrap().status_code, 200);
    assert_eq!(handle(&app, event("ws-typing.json")).await.unwrap().status_code, 200);
    assert!(recorder.frames.lock().unwrap().is_empty(), "a typing frame is never answered");
}

#[tokio::test]
async fn a_speculation_built_on_an_earlier_partials_keeps_its_memory_for_the_send() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |_| {}).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    ask(&mut client, "Show me some horror manga", None).await;
    // Two partials after the answer was stored: the second's speculation takes the memory the first read.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.send_raw(typing("any romance")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    client.send_raw(typing("any romance manga")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let done = ask(&mut client, "any romance manga", None).await;
    let legs = done["metrics"]["speculated_legs"].as_array().unwrap().clone();
    assert!(legs.contains(&json!("memory")), "the memory came with the last speculation: {done}");
    assert_eq!(done["metrics"]["legs"]["memory_ms"], 0.0, "{done}");
}
