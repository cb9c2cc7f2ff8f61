//! Warm connections against the Bedrock emulator's connection model: the production `BedrockModel` and
//! `Warmer` over the unmodified SDK, a new connection costing a handshake, idle connections dropped.
//!
//! `first_tokens_after_idle_gaps_are_cold_without_warming_and_warm_with_it` prints the figures quoted in the
//! README ("Warm connections"): `cargo test -p mangaassist-tests --test e2e connections -- --nocapture`.

use std::time::Duration;

use mangaassist_adapters::bedrock::{BedrockModel, StreamOpen};
use mangaassist_adapters::warm::Warmer;
use mangaassist_core::ports::{ChatMessage, ModelClient, ModelEvent, ModelRequest, ModelStream, Role};
use mangaassist_local::emulators::bedrock::{BedrockEmulator, ConnectionModel, EmulatorConfig};
use tokio::time::Instant;

const MODEL: &str = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";

async fn emulator(connection: ConnectionModel) -> BedrockEmulator {
    // The emulator's tokenizer loads its vocabulary on first use (slow in a debug build): not inside a
    // first-byte deadline.
    mangaassist_local::emulators::bedrock::billed_tokens("warm up", 1);
    let cfg = EmulatorConfig { connection, ..EmulatorConfig::fast() };
    BedrockEmulator::start(([127, 0, 0, 1], 0).into(), cfg).await.unwrap()
}

async fn model(emu: &BedrockEmulator, open: StreamOpen) -> BedrockModel {
    BedrockModel::new(&mangaassist_adapters::sdk::local(&emu.url()).await).with_stream_open(open)
}

fn request() -> ModelRequest {
    ModelRequest {
        model_id: MODEL.to_owned(),
        system: "You are a manga store assistant.".to_owned(),
        messages: vec![ChatMessage { role: Role::User, text: "Any horror manga like Uzumaki?".to_owned() }],
        max_tokens: 100,
        ..ModelRequest::default()
    }
}

/// One whole stream (drained, so its connection goes back to the pool); the time to its first text.
async fn first_token(m: &BedrockModel) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = m.converse_stream(&request()).await.map_err(|e| e.to_string())?;
    let mut first = None;
    while let Some(ev) = stream.next().await {
        if let ModelEvent::Text(_) = ev.map_err(|e| e.to_string())? {
            first.get_or_insert_with(|| started.elapsed());
        }
    }
    first.ok_or_else(|| "no text".to_owned())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test]
async fn a_stream_on_a_silently_dropped_connection_is_retried_once_on_a_fresh_one() {
    let stale = ConnectionModel { idle_timeout: Some(Duration::from_millis(200)), silent: true, ..Default::default() };
    let emu = emulator(stale).await;
    let open = StreamOpen { first_byte: Some(Duration::from_millis(500)), ..StreamOpen::default() };
    let m = model(&emu, open).await;
    first_token(&m).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after_idle = first_token(&m).await.unwrap();
    assert!(after_idle >= Duration::from_millis(500), "the stale socket is given its first-byte deadline");
    assert!(after_idle < Duration::from_millis(1500), "then a fresh connection answers: {after_idle:?}");
    assert_eq!((emu.stats.connections(), emu.stats.idle_drops(), emu.stats.total_requests()), (2, 1, 2));

    // Without the deadline the same request stalls on the stale socket (until the client's own timeout).
    let emu = emulator(stale).await;
    let m = model(&emu, StreamOpen::off()).await;
    first_token(&m).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stalled = tokio::time::timeout(Duration::from_secs(2), first_token(&m)).await;
    assert!(stalled.is_err(), "no answer within 2 s without the first-byte deadline");
}

#[tokio::test]
async fn a_service_error_is_not_retried_on_a_fresh_connection() {
    let emu = emulator(ConnectionModel::default()).await;
    let m = model(&emu, StreamOpen::default()).await;
    emu.inject(mangaassist_local::emulators::bedrock::Fault::ThrottleBeforeStream);
    let err = m.converse_stream(&request()).await.err().unwrap();
    assert!(matches!(err, mangaassist_core::error::ModelError::Throttled(_)), "{err}");
    assert_eq!(emu.stats.total_requests(), 1, "the throttle goes to the turn's failover, not to a retry here");
}

#[tokio::test]
async fn first_tokens_after_idle_gaps_are_cold_without_warming_and_warm_with_it() {
    let handshake = Duration::from_millis(150);
    let idle = Duration::from_millis(300);
    let connection = ConnectionModel { handshake, idle_timeout: Some(idle), silent: false };
    let emu = emulator(connection).await;
    let m = model(&emu, StreamOpen::default()).await;
    let warmer = Warmer::default().with_idle(Duration::from_millis(100)).with_bedrock(m.clone());
    assert_eq!(warmer.warm_all(None).await.ok, 1, "init opens the connection");
    let warm_start = first_token(&m).await.unwrap();

    // Each gap is longer than the endpoint's idle timeout: the pooled connection is gone.
    let gap = idle + Duration::from_millis(200);
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        tokio::time::sleep(gap).await;
        cold.push(first_token(&m).await.unwrap());
        tokio::time::sleep(gap).await;
        // What a `typing` frame does a moment before the message.
        assert!(warmer.refresh_if_idle(None).await.is_some_and(|w| w.ok == 1));
        warm.push(first_token(&m).await.unwrap());
    }
    cold.sort();
    warm.sort();
    eprintln!(
        "first token after an idle gap of {} ms (handshake {} ms): cold p50 {:.0} ms max {:.0} ms; warmed p50 {:.0} ms max {:.0} ms; after init warm-up {:.0} ms",
        gap.as_millis(),
        handshake.as_millis(),
        ms(cold[2]),
        ms(cold[4]),
        ms(warm[2]),
        ms(warm[4]),
        ms(warm_start),
    );
    assert!(warm_start < handshake, "the init warm-up paid the handshake: {warm_start:?}");
    assert!(cold[0] >= handshake, "every cold turn pays the handshake: {cold:?}");
    assert!(warm[4] < handshake, "no warmed turn pays it: {warm:?}");
    assert!(warmer.refresh_if_idle(None).await.is_none(), "a connection just used is not refreshed");
}
