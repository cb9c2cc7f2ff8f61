//! What an outside tester abused (issue 28), end to end through the real authorizer and chat handler: the
//! paid work one user can cause outside their turns (typing frames on many connections, pre-generated
//! answers), guest tokens churned from one address, products named only by the page context, and a
//! connection lookup that does not answer in time.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mangaassist_adapters::dynamo::DynamoStore;
use mangaassist_adapters::redis_cache::{RedisCache, RedisConfig};
use mangaassist_core::answer::routes::Routes;
use mangaassist_core::cache::CounterKey;
use mangaassist_core::clock::{Clock, SystemClock, jst_day};
use mangaassist_core::ids::UserId;
use mangaassist_core::ports::{Counter, Store};
use mangaassist_core::turn::TurnConfig;
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{EmulatorConfig, Fault, LatencyModel};
use mangaassist_local::faults::{FaultyStore, StoreFaults};
use mangaassist_local::system::{LocalSystem, SystemOptions, start, start_full};
use serde_json::{Value, json};

use crate::helpers::*;

fn minute() -> u64 {
    SystemClock.now_ms() / 60_000
}

/// Model tokens counted against `user`'s day so far.
async fn day_of<St: Store>(store: &St, user: &str) -> i64 {
    let c =
        Counter::new(&UserId::parse(user).unwrap(), CounterKey::Tokens { jst_day: jst_day(SystemClock.now_ms()).0 });
    store.counter(&c).await.unwrap()
}

fn tokens_of(done: &Value) -> i64 {
    done["metrics"]["input_tokens"].as_i64().unwrap() + done["metrics"]["output_tokens"].as_i64().unwrap()
}

fn cards(done: &Value) -> Vec<String> {
    done["products"].as_array().unwrap().iter().map(|p| p["asin"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn one_user_on_five_connections_gets_one_typing_rate_not_five() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |t| t.limits.typing_per_minute = 10).await;
    let mut clients = Vec::new();
    for _ in 0..5 {
        clients.push(ChatClient::connect(&sys.ws_url_for("mallory")).await.unwrap());
    }
    let from = minute();
    // Six partials on each connection, each of them text that needs one retrieval query to speculate.
    for round in 0..6 {
        for (c, client) in clients.iter_mut().enumerate() {
            let frame = json!({"action": "typing", "text": format!("any horror manga c{c} r{round}")});
            client.send_raw(frame.to_string()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let windows = minute() - from + 1;
    let retrievals = sys.retriever.requests();
    assert!(retrievals >= 1, "speculation ran");
    assert!(
        retrievals <= 10 * windows,
        "{retrievals} retrievals for 30 frames in {windows} minute(s): one user, one rate"
    );
    // Another user is not held by mallory's rate.
    let mut other = ChatClient::connect(&sys.ws_url_for("olive")).await.unwrap();
    other.send_raw(json!({"action": "typing", "text": "any horror manga for olive"}).to_string()).await.unwrap();
    let before = retrievals;
    for _ in 0..100 {
        if sys.retriever.requests() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sys.retriever.requests() > before, "olive's typing was speculated");
}

#[tokio::test]
async fn pre_generated_answers_count_against_the_day_and_a_turn_served_from_one_reports_its_tokens() {
    let moto = moto().await;
    let redis = redis().await;
    let opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 60, ..EmulatorConfig::default() },
        prefetch: true,
        ..SystemOptions::default()
    };
    let cache = RedisCache::connect(&RedisConfig::new(&redis.url, false)).unwrap();
    let sys = start_full(dynamo(&moto).await, cache, opts, Routes::default()).await.unwrap();
    let store = &sys.app.engine.store;
    let mut client = ChatClient::connect(&sys.ws_url_for("pat")).await.unwrap();

    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    let done =
        ask(&mut client, "Can you recommend something similar?", Some(&json!({"browsing_history": group}))).await;
    // The turn pre-generated its listed products while it streamed; each entry says what it cost.
    let named: Vec<String> =
        done["products"].as_array().unwrap().iter().filter_map(|p| p["asin"].as_str().map(str::to_owned)).collect();
    assert!(!named.is_empty(), "{done}");
    let mut generated = 0i64;
    for asin in &named {
        let entry = cached_entry(redis.port, asin).await.expect("pre-generation ran");
        generated += entry["input_tokens"].as_i64().unwrap() + entry["output_tokens"].as_i64().unwrap();
    }
    assert!(generated > 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(day_of(store, "u-pat").await, tokens_of(&done) + generated, "the turn and what was generated for it");

    // Served from the entry: no model call, its tokens reported, and not counted a second time.
    let before = day_of(store, "u-pat").await;
    let served = ask(&mut client, "Tell me more about the first one", None).await;
    assert_eq!(served["metrics"]["served"], "pregen", "{served}");
    assert!(served["metrics"]["output_tokens"].as_u64().unwrap() > 0, "{served}");
    assert!(served["metrics"]["input_tokens"].as_u64().unwrap() > 0, "{served}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(day_of(store, "u-pat").await, before, "counted once, when it was generated");
}

#[tokio::test]
async fn a_user_whose_day_is_spent_gets_nothing_pre_generated() {
    let moto = moto().await;
    let redis = redis().await;
    let mut opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 60, ..EmulatorConfig::default() },
        prefetch: true,
        ..SystemOptions::default()
    };
    // One turn spends the day.
    opts.turn.limits.user.tokens_per_day = 100;
    let cache = RedisCache::connect(&RedisConfig::new(&redis.url, false)).unwrap();
    let sys = start_full(dynamo(&moto).await, cache, opts, Routes::default()).await.unwrap();
    let mut client = ChatClient::connect(&sys.ws_url_for("quinn")).await.unwrap();
    let group: Vec<String> = sys.services.catalog().products()[..3].iter().map(|p| p.asin.clone()).collect();
    let done =
        ask(&mut client, "Can you recommend something similar?", Some(&json!({"browsing_history": group}))).await;
    assert!(!done["products"].as_array().unwrap().is_empty(), "a list, whose follow-up is predicted: {done}");
    let reports = sys.prefetch.as_ref().unwrap().drain_after(1, Duration::from_secs(10)).await;
    assert!(reports[0].pregen.as_ref().is_none_or(|p| p.generated.is_empty() && p.input_tokens == 0));
    let overviews = sys.emulator.stats.requests().iter().filter(|r| r.prompt.contains("Tell me more about")).count();
    assert_eq!(overviews, 0, "nothing was generated, in the turn or by the worker");
}

/// The pre-generated entry of `asin` in any session, once cached (up to 10 s).
async fn cached_entry(redis_port: u16, asin: &str) -> Option<Value> {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < until {
        let keys = redis_command(redis_port, "KEYS pregen:*").await.unwrap_or_default();
        if let Some(k) = keys.lines().find(|k| k.starts_with("pregen:") && k.ends_with(asin)) {
            let reply = redis_command(redis_port, &format!("GET {k}")).await.ok()?;
            return reply.lines().find(|l| l.starts_with('{')).and_then(|l| serde_json::from_str(l).ok());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test]
async fn guest_churn_from_one_address_is_held_to_the_per_address_caps() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |t| {
        t.limits.guest_address.turns_per_minute = 8;
        // Thirty turns at once against moto_server: the counters get the time to answer (past their bound
        // a turn is admitted, by design: our slow table must not refuse a shopper).
        t.limits.deadline = Duration::from_secs(3);
    })
    .await;
    let from = minute();
    // 25 fresh guest tokens, two connections each, all from 127.0.0.1.
    let urls: Vec<String> = (0..25)
        .flat_map(|_| {
            let url = sys.guest_ws_url();
            [url.clone(), url]
        })
        .collect();
    let mut clients: Vec<ChatClient> = Vec::new();
    for url in &urls {
        if let Ok(c) = ChatClient::connect(url).await {
            clients.push(c);
        }
    }
    let connected = clients.len() as u64;
    // Three messages on each connection, side by side.
    let answered: Vec<usize> = join_all(clients.iter_mut().map(|c| async move {
        let mut n = 0;
        for text in ["any horror manga?", "and comedy?", "something short?"] {
            let id = c.send_message(text, None).await.unwrap();
            let end = events_until_end(c, &id).await.pop().unwrap();
            if end["type"] == "completed" {
                n += 1;
            } else {
                assert_eq!(end["code"], "rate_limited", "{end}");
                assert!(end["retry_after_ms"].as_u64().is_some(), "{end}");
            }
        }
        n
    }))
    .await;
    let answered: u64 = answered.iter().sum::<usize>() as u64;
    let windows = minute() - from + 1;
    assert!(connected >= 1 && connected <= 10 * windows, "{connected} of 50 guest connections in {windows} minute(s)");
    assert!(answered >= 1 && answered <= 8 * windows, "{answered} guest turns answered in {windows} minute(s)");
    // A signed-in shopper from the same address is not held by the guests' caps.
    let mut user = ChatClient::connect(&sys.ws_url_for("ursula")).await.unwrap();
    assert_eq!(ask(&mut user, "any horror manga?", None).await["type"], "completed");
}

#[tokio::test]
async fn an_unknown_page_asin_never_becomes_a_product_card() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let real = sys.services.catalog().products()[5].asin.clone();
    sys.emulator.inject(Fault::Say(format!("B0FAKE0003 and {real} are both worth a look.")));
    let page = json!({"current_asin": "B0FAKE0003", "browsing_history": [real]});
    let id = client.send_message("Recommend a short series", Some(&page)).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    let done = events.last().unwrap();
    assert_eq!(done["type"], "completed", "{events:?}");
    assert!(deltas_text(&events).contains("B0FAKE0003"), "the model did name it");
    let shown = cards(done);
    assert!(!shown.iter().any(|a| a == "B0FAKE0003"), "{shown:?}");
    assert!(shown.contains(&real), "a page product the catalog knows is still a card: {shown:?}");
    assert!(done["metrics"]["unknown_asins"].as_u64().unwrap() >= 1, "{done}");
}

#[tokio::test]
async fn a_slow_connection_lookup_refuses_the_frame_and_never_answers_as_someone_else() {
    let moto = moto().await;
    let store = Arc::new(FaultyStore::new(dynamo(&moto).await, StoreFaults::default()));
    let opts = SystemOptions {
        emulator: EmulatorConfig { latency: LatencyModel::fast(), answer_tokens: 40, ..EmulatorConfig::default() },
        turn: TurnConfig::default(),
        ..SystemOptions::default()
    };
    let sys: LocalSystem<Arc<FaultyStore<DynamoStore>>> = start(store.clone(), opts).await.unwrap();
    // The connection record is lost at $connect (accepted anyway), so every frame looks it up; then the
    // table turns slow.
    store.set(StoreFaults { write_throttle: 1.0, ..StoreFaults::default() });
    let mut client = ChatClient::connect(&sys.ws_url_for("alice")).await.unwrap();
    store.set(StoreFaults { lookup_delay: Duration::from_millis(600), ..StoreFaults::default() });

    let id = uuid::Uuid::new_v4().to_string();
    client.send_with_id(&id, "Show me some horror manga", None).await.unwrap();
    let end = events_until_end(&mut client, &id).await.pop().unwrap();
    assert_eq!(end["type"], "error", "{end}");
    assert_eq!((end["code"].as_str(), end["retryable"].as_bool()), (Some("session_unavailable"), Some(true)));
    assert!(sys.emulator.stats.for_message(&id).is_empty(), "nothing was asked of the model");
    client.send_raw(r#"{"action":"session"}"#).await.unwrap();
    let ev = client.next_event(Duration::from_secs(5)).await.unwrap();
    assert_eq!(ev["code"], "session_unavailable", "{ev}");

    // The table recovers: the same message is answered, as alice, never as the shared `anon` guest.
    store.set(StoreFaults::default());
    client.send_with_id(&id, "Show me some horror manga", None).await.unwrap();
    let done = events_until_end(&mut client, &id).await.pop().unwrap();
    assert_eq!(done["type"], "completed", "{done}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Alice's turn (and what it pre-generated for her), nobody else's.
    assert!(day_of(&*store, "u-alice").await >= tokens_of(&done), "alice's day");
    assert_eq!(day_of(&*store, "anon").await, 0, "nobody's shared day");
}
