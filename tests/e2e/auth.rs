//! Authentication at `$connect`: the real authorizer, in the gateway emulator, against the local issuer's JWKS
//! (fetched over HTTP, as on AWS). A refused handshake is 401 or 403 and never reaches the chat function.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mangaassist_adapters::auth::guest::GuestKey;
use mangaassist_adapters::auth::limit::{Decision, DynamoRateLimiter, RateLimiter};
use mangaassist_adapters::dynamo::ensure_table;
use mangaassist_local::client::{ChatClient, with_token};
use mangaassist_local::embedded::issuer::LocalIssuer;
use mangaassist_local::emulators::bedrock::LatencyModel;
use mangaassist_local::emulators::gateway::{Gateway, GatewayConfig, Invoke};
use mangaassist_local::system::in_process_authorizer;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite;

use crate::helpers::*;

/// The handshake's HTTP status: 101 when the WebSocket opened.
async fn handshake(url: &str) -> u16 {
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url)).await.unwrap() {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("handshake failed without an HTTP status: {e}"),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn no_token_bad_signature_expired_and_wrong_audience_are_refused_before_the_chat_function() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let bare = sys.bare_ws_url();

    assert_eq!(handshake(&bare).await, 401, "no token");
    assert_eq!(handshake(&with_token(&bare, "")).await, 401, "empty token");
    assert_eq!(handshake(&with_token(&bare, "not-a-jwt")).await, 401, "garbage");

    // Alice's signature over Bob's claims.
    let alice = sys.issuer.user_token("alice").unwrap();
    let bob = sys.issuer.user_token("bob").unwrap();
    let (a, b): (Vec<&str>, Vec<&str>) = (alice.split('.').collect(), bob.split('.').collect());
    let forged = format!("{}.{}.{}", a[0], b[1], a[2]);
    assert_eq!(handshake(&with_token(&bare, &forged)).await, 401, "bad signature");

    // Signed by another issuer's key (same issuer URL, a key the JWKS does not hold).
    let other = LocalIssuer::new(sys.gateway.addr, true).unwrap();
    assert_eq!(handshake(&with_token(&bare, &other.user_token("alice").unwrap())).await, 401, "unknown key");

    let mut expired = sys.issuer.user_claims("alice");
    expired["exp"] = json!(now() - 600);
    assert_eq!(handshake(&with_token(&bare, &sys.issuer.sign(&expired).unwrap())).await, 401, "expired");

    let mut foreign = sys.issuer.user_claims("alice");
    foreign["aud"] = json!("another-app");
    assert_eq!(handshake(&with_token(&bare, &sys.issuer.sign(&foreign).unwrap())).await, 401, "wrong audience");

    assert_eq!(sys.gateway.invocations(), 0, "the chat function was never invoked");
    assert_eq!(sys.gateway.connection_count(), 0);

    // The same system lets a valid token in.
    let mut client = ChatClient::connect(&sys.ws_url_for("alice")).await.unwrap();
    let done = ask(&mut client, "Show me horror manga", None).await;
    assert_eq!(done["type"], "completed");
    assert!(sys.gateway.invocations() >= 2, "$connect and sendMessage reached the chat function");
}

/// A gateway with the real authorizer in front of a function that records its events.
async fn recording_gateway(allow_guests: bool) -> (Gateway, Arc<LocalIssuer>, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = Arc::new(LocalIssuer::new(listener.local_addr().unwrap(), true).unwrap());
    let mut verifier = issuer.verifier();
    verifier.allow_guests = allow_guests;
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let invoke: Invoke = Arc::new(move |ev: Value| {
        seen.lock().unwrap().push(ev);
        Box::pin(async { Ok(json!({ "statusCode": 200 })) })
    });
    let authorizer = in_process_authorizer(Arc::new(verifier));
    let gw = Gateway::start_with(listener, GatewayConfig::default(), invoke, Some(authorizer), issuer.clone().router())
        .unwrap();
    (gw, issuer, events)
}

async fn wait_for_events(events: &Mutex<Vec<Value>>, n: usize) -> Vec<Value> {
    for _ in 0..100 {
        let e = events.lock().unwrap().clone();
        if e.len() >= n {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    events.lock().unwrap().clone()
}

#[tokio::test]
async fn the_user_id_reaches_the_chat_function_on_connect_and_on_every_later_event() {
    let (gw, issuer, events) = recording_gateway(true).await;
    let mut client =
        ChatClient::connect(&with_token(&gw.ws_url(), &issuer.user_token("alice").unwrap())).await.unwrap();
    client.send_raw(json!({"action": "sendMessage", "message_id": "m1", "text": "hi"}).to_string()).await.unwrap();
    wait_for_events(&events, 2).await;
    client.close().await;
    let events = wait_for_events(&events, 3).await;
    let routes: Vec<&str> = events.iter().map(|e| e["requestContext"]["routeKey"].as_str().unwrap()).collect();
    assert_eq!(routes, ["$connect", "sendMessage", "$disconnect"]);
    for e in &events {
        let a = &e["requestContext"]["authorizer"];
        assert_eq!(a["principalId"], "u-alice", "{e}");
        assert_eq!(a["user_id"], "u-alice");
        assert_eq!(a["guest"], "false");
    }
}

#[tokio::test]
async fn a_guest_gets_a_token_from_the_token_endpoint_and_connects_as_a_guest() {
    let (gw, _issuer, events) = recording_gateway(true).await;
    let http = reqwest_client();
    let resp: Value = http.post(format!("http://{}/token", gw.addr)).send().await.unwrap().json().await.unwrap();
    assert_eq!(resp["expires_in"], 900);
    let user = resp["user_id"].as_str().unwrap();
    assert!(user.starts_with("g-"), "{resp}");
    let client = ChatClient::connect(&with_token(&gw.ws_url(), resp["token"].as_str().unwrap())).await.unwrap();
    client.close().await;
    let events = wait_for_events(&events, 1).await;
    let a = &events[0]["requestContext"]["authorizer"];
    assert_eq!(a["principalId"], user);
    assert_eq!(a["guest"], "true");
}

#[tokio::test]
async fn with_guests_off_a_genuine_guest_token_is_forbidden_and_the_endpoint_refuses() {
    let (gw, issuer, events) = recording_gateway(false).await;
    // The issuer still holds the key (as the stack does), so this token is genuine.
    let guest = issuer.guest_token().unwrap();
    assert_eq!(handshake(&with_token(&gw.ws_url(), &guest.token)).await, 403);
    assert_eq!(gw.invocations(), 0);
    assert!(events.lock().unwrap().is_empty());

    // A system started with guests off: its token endpoint answers 403.
    let moto = moto().await;
    let store = dynamo(&moto).await;
    let opts = mangaassist_local::system::SystemOptions { allow_guests: false, ..Default::default() };
    let sys = mangaassist_local::system::start(store, opts).await.unwrap();
    let resp = reqwest_client().post(format!("http://{}/token", sys.gateway.addr)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(handshake(&sys.guest_ws_url()).await, 401, "no guest token to be had: the bare URL");
}

fn reqwest_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(WAIT).build().unwrap()
}

#[tokio::test]
async fn the_guest_key_is_read_from_secrets_manager() {
    let moto = moto().await;
    let sdk = mangaassist_adapters::sdk::local(&moto.url).await;
    let client = mangaassist_adapters::auth::guest::secrets_client(&sdk);
    let secret = "k".repeat(64);
    let created = client.create_secret().name("guest-key").secret_string(&secret).send().await.unwrap();
    let arn = created.arn().unwrap();
    assert!(GuestKey::from_secrets_manager(&client, arn).await.is_ok());

    let short = client.create_secret().name("short").secret_string("too-short").send().await.unwrap();
    assert!(GuestKey::from_secrets_manager(&client, short.arn().unwrap()).await.is_err());
    assert!(
        GuestKey::from_secrets_manager(&client, "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_token_endpoint_counts_requests_per_source_ip_per_minute_in_the_table() {
    let moto = moto().await;
    let sdk = mangaassist_adapters::sdk::local(&moto.url).await;
    let table = format!("t{}", uuid::Uuid::new_v4().simple());
    ensure_table(&mangaassist_adapters::sdk::dynamodb(&sdk), &table).await.unwrap();
    let limiter = DynamoRateLimiter::new(&sdk, &table, 2);
    let t: u64 = 1_800_000_000; // a minute boundary (30,000,000 minutes)
    assert_eq!(limiter.check("203.0.113.7", t).await, Decision::Allow);
    assert_eq!(limiter.check("203.0.113.7", t + 1).await, Decision::Allow);
    assert_eq!(limiter.check("203.0.113.7", t + 20).await, Decision::Limited { retry_after_secs: 40 });
    assert_eq!(limiter.check("198.51.100.1", t + 20).await, Decision::Allow);
    assert_eq!(limiter.check("203.0.113.7", t + 60).await, Decision::Allow, "a new minute");
}
