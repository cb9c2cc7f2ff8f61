//! The engine in process: the embedded store, a scripted model client and a recording sink, no sockets.
//! One test per branch of the pipeline.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::admit::session::Principal;
use crate::error::{ErrorCode, ModelError};
use crate::gather::summary::SummaryConfig;
use crate::ports::ModelEvent;
use crate::ports::{TurnRecord, TurnStatus};
use crate::testkit::{MemoryStore, RecordingQueue, RecordingSink, Script, ScriptedModel, ScriptedSources, TestClock};

/// The sources are a catalog that knows every product (a page-context product becomes a card only when one does).
type TestEngine = Engine<Arc<ScriptedModel>, Arc<MemoryStore>, TestClock, ScriptedSources, Arc<RecordingQueue>>;

struct Harness {
    engine: TestEngine,
    model: Arc<ScriptedModel>,
    store: Arc<MemoryStore>,
    jobs: Arc<RecordingQueue>,
}

fn harness(model: ScriptedModel, cfg: TurnConfig) -> Harness {
    let (model, store, jobs) = (Arc::new(model), Arc::new(MemoryStore::default()), Arc::new(RecordingQueue::default()));
    let clock = TestClock::ticking(1_800_000_000_000);
    let engine = Engine::new(model.clone(), store.clone(), clock, cfg)
        .with_sources(ScriptedSources::new())
        .with_prefetch(jobs.clone());
    Harness { engine, model, store, jobs }
}

fn config() -> TurnConfig {
    TurnConfig { fallback_model_id: Some("fallback".into()), ..TurnConfig::default() }
}

fn conn() -> ConnectionId {
    ConnectionId::parse("conn-1").unwrap()
}

/// A message from a page whose browsing history holds the products the scripted model names (so they
/// are in the turn's context and may become cards).
fn frame(id: &str, text: &str) -> String {
    let page = serde_json::json!({"browsing_history": ["B0AAAAAAA1", "B0BBBBBBB2"]});
    serde_json::json!({"action": "sendMessage", "message_id": id, "text": text, "page_context": page}).to_string()
}

impl Harness {
    async fn send(&self, sink: &RecordingSink, id: &str, text: &str) -> TurnResult {
        self.engine.send_message(sink, &Invocation::now(conn(), &frame(id, text))).await
    }

    async fn turns(&self) -> Vec<TurnRecord> {
        let (session, _) = self.engine.sessions.session_of(&*self.store, &conn(), None).await.unwrap();
        self.store.recent_turns(&session, 10).await.unwrap()
    }
}

fn completed_intent(r: &TurnResult) -> Intent {
    match r {
        TurnResult::Completed(m) => m.intent,
        other => panic!("not completed: {other:?}"),
    }
}

use crate::intent::Intent;

#[tokio::test(start_paused = true)]
async fn an_answer_streams_then_completes_and_is_stored_and_handed_to_prefetch() {
    let h = harness(ScriptedModel::default(), config());
    let who = Principal::user(crate::ids::UserId::parse("u-1").unwrap());
    let session = h.engine.connect(conn(), None, &who).await.unwrap().record.session_id;
    let sink = RecordingSink::new();
    let r = h.send(&sink, "m-1", "Show me some horror manga").await;
    assert_eq!(completed_intent(&r), Intent::ProductDiscovery);
    let types = sink.types();
    assert!(types.len() >= 2 && types[..types.len() - 1].iter().all(|t| t == "delta"), "{types:?}");
    let done = sink.last();
    assert_eq!(done["type"], "completed");
    assert_eq!(done["products"], serde_json::json!([{"asin": "B0AAAAAAA1"}, {"asin": "B0BBBBBBB2"}]));
    assert_eq!(done["metrics"]["route"], "on-demand");
    let turns = h.turns().await;
    assert_eq!(turns.len(), 1);
    assert_eq!(turns[0].status, TurnStatus::Complete);
    assert_eq!(turns[0].products, ["B0AAAAAAA1", "B0BBBBBBB2"]);
    let jobs = h.jobs.jobs();
    assert_eq!(jobs.len(), 1);
    assert_eq!((&jobs[0].session_id, jobs[0].user_id.as_str()), (&session, "u-1"));
    assert_eq!(jobs[0].products, ["B0AAAAAAA1", "B0BBBBBBB2"]);
}

#[tokio::test(start_paused = true)]
async fn a_bad_frame_gets_a_typed_error_and_never_reaches_the_model() {
    let h = harness(ScriptedModel::default(), config());
    let sink = RecordingSink::new();
    let r = h.engine.send_message(&sink, &Invocation::now(conn(), "{not json")).await;
    assert_eq!(r, TurnResult::Rejected(ErrorCode::BadFrame));
    assert_eq!(sink.last()["code"], "bad_frame");
    assert!(h.model.requests().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_message_id_is_answered_once() {
    let h = harness(ScriptedModel::default(), config());
    let sink = RecordingSink::new();
    completed_intent(&h.send(&sink, "m-1", "hello").await);
    let again = RecordingSink::new();
    assert_eq!(h.send(&again, "m-1", "hello").await, TurnResult::Duplicate);
    assert_eq!(again.last()["code"], "duplicate_message");
    assert_eq!(h.model.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_over_long_message_is_refused_and_its_id_can_be_sent_again() {
    let h = harness(ScriptedModel::default(), config());
    let sink = RecordingSink::new();
    let r = h.send(&sink, "m-1", &"manga ".repeat(300)).await;
    assert_eq!(r, TurnResult::Rejected(ErrorCode::MessageTooLong));
    assert!(h.model.requests().is_empty());
    completed_intent(&h.send(&sink, "m-1", "shorter, then").await);
}

#[tokio::test(start_paused = true)]
async fn a_throttle_before_the_first_token_fails_over_to_the_fallback_model() {
    let model = ScriptedModel::default().then(Script::Refuse(ModelError::Throttled("429".into())));
    let h = harness(model, config());
    let sink = RecordingSink::new();
    let r = h.send(&sink, "m-1", "hello").await;
    let TurnResult::Completed(m) = r else { panic!("{r:?}") };
    assert_eq!((m.failovers, m.model.as_str()), (1, "fallback"));
    let asked: Vec<String> = h.model.requests().into_iter().map(|r| r.model_id).collect();
    let first = TurnConfig::default().models.for_intent(Intent::General).model_id.clone();
    assert_eq!(asked, [first, "fallback".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_model_that_fails_before_any_token_releases_the_claim() {
    let model = ScriptedModel::default()
        .then(Script::Refuse(ModelError::Unavailable("503".into())))
        .then(Script::Refuse(ModelError::Unavailable("503".into())));
    let h = harness(model, config());
    let sink = RecordingSink::new();
    assert_eq!(h.send(&sink, "m-1", "hello").await, TurnResult::Failed(ErrorCode::ModelUnavailable));
    let err = sink.last();
    assert_eq!((err["code"].as_str(), err["retryable"].as_bool()), (Some("model_unavailable"), Some(true)));
    assert!(h.turns().await.is_empty(), "nothing was answered, nothing stored");
    completed_intent(&h.send(&sink, "m-1", "hello").await);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_breaks_mid_answer_is_stored_as_partial() {
    let broken = Script::stream(vec![
        (Duration::from_millis(5), Ok(ModelEvent::Text("The first part ".into()))),
        (Duration::from_millis(5), Err(ModelError::Unavailable("reset".into()))),
    ]);
    let h = harness(ScriptedModel::default().then(broken), config());
    let sink = RecordingSink::new();
    assert_eq!(h.send(&sink, "m-1", "hello").await, TurnResult::Failed(ErrorCode::ModelUnavailable));
    assert_eq!(sink.types(), ["delta", "error"]);
    let turns = h.turns().await;
    assert_eq!((turns[0].status, turns[0].assistant_text.as_str()), (TurnStatus::Partial, "The first part "));
    assert!(h.jobs.jobs().is_empty(), "no prefetch for a failed turn");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_leaves_stops_the_stream_and_the_turn_is_stored_as_client_gone() {
    let h = harness(ScriptedModel::default(), config());
    let sink = RecordingSink::new().gone_from(1);
    assert_eq!(h.send(&sink, "m-1", "hello").await, TurnResult::ClientGone);
    assert_eq!(h.turns().await[0].status, TurnStatus::ClientGone);
}

#[tokio::test(start_paused = true)]
async fn products_the_context_does_not_hold_get_no_card_and_are_counted() {
    let h = harness(ScriptedModel::default(), config());
    let sink = RecordingSink::new();
    let bare = serde_json::json!({"action": "sendMessage", "message_id": "m-1", "text": "Show me some horror manga"});
    let r = h.engine.send_message(&sink, &Invocation::now(conn(), &bare.to_string())).await;
    let TurnResult::Completed(m) = r else { panic!("{r:?}") };
    assert_eq!(m.unknown_asins, 2);
    assert_eq!(sink.last()["products"], serde_json::json!([]));
    assert!(h.turns().await[0].products.is_empty(), "an invented product is not remembered either");
}

#[tokio::test(start_paused = true)]
async fn the_first_one_resolves_against_the_previous_answer() {
    // Without pre-generation: with it, the listed products' overviews are generated while the first answer
    // streams, and this generic follow-up is served one without a model request.
    let mut cfg = config();
    cfg.pregen.mode = crate::pregen::PregenMode::Off;
    let h = harness(ScriptedModel::default(), cfg);
    let sink = RecordingSink::new();
    completed_intent(&h.send(&sink, "m-1", "Show me some horror manga").await);
    let r = h.send(&sink, "m-2", "Tell me more about the second one").await;
    assert_eq!(completed_intent(&r), Intent::ProductQuestion);
    let prompt = &h.model.requests()[1].messages[0].text;
    assert!(prompt.contains("refers_to=B0BBBBBBB2"), "{prompt}");
    assert!(prompt.contains("user: Show me some horror manga"), "the first exchange is in the history: {prompt}");
    let jobs = h.jobs.jobs();
    assert_eq!(jobs[1].previous_intent, Some(Intent::ProductDiscovery));
}

#[tokio::test(start_paused = true)]
async fn older_exchanges_are_summarized_by_the_small_model() {
    let cfg = TurnConfig { summary: SummaryConfig { model_id: Some("small".into()), ..config().summary }, ..config() };
    let h = harness(ScriptedModel::default().completion_usage(500, 30), cfg);
    let sink = RecordingSink::new();
    for (i, text) in ["hello", "horror please", "anything scary?", "and funny?"].iter().enumerate() {
        completed_intent(&h.send(&sink, &format!("m-{i}"), text).await);
    }
    let summaries = h.model.completions();
    assert_eq!(summaries.len(), 1, "two exchanges left the verbatim window once");
    assert_eq!(summaries[0].model_id, "small");
    let (session, who) = h.engine.sessions.session_of(&*h.store, &conn(), None).await.unwrap();
    assert!(h.store.get_summary(&session).await.unwrap().is_some());
    // The summary's tokens count against the shopper's day, beside their turns'.
    let turns: u64 = h.turns().await.iter().map(|t| u64::from(t.input_tokens) + u64::from(t.output_tokens)).sum();
    let day = crate::clock::jst_day(h.engine.clock.now_ms()).0;
    let tokens = crate::ports::Counter::new(&who.user, crate::cache::CounterKey::Tokens { jst_day: day });
    assert_eq!(h.store.counter(&tokens).await.unwrap(), i64::try_from(turns + 530).unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_second_message_while_one_streams_is_busy_and_can_be_sent_after_it() {
    let h = harness(ScriptedModel::default(), config());
    let (first, second) = (RecordingSink::new(), RecordingSink::new());
    let (r1, r2) = tokio::join!(h.send(&first, "m-1", "Show me some horror manga"), async {
        tokio::time::sleep(Duration::from_millis(2)).await;
        h.send(&second, "m-2", "and comedy?").await
    });
    completed_intent(&r1);
    assert_eq!(r2, TurnResult::Limited(ErrorCode::Busy));
    let busy = second.last();
    assert_eq!((busy["code"].as_str(), busy["retryable"].as_bool()), (Some("busy"), Some(true)));
    assert_eq!(h.model.requests().len(), 1);
    completed_intent(&h.send(&second, "m-2", "and comedy?").await);
}

#[tokio::test(start_paused = true)]
async fn over_the_rate_a_message_is_refused_with_when_to_retry() {
    let mut cfg = config();
    cfg.limits.guest.requests_per_minute = 2;
    let h = harness(ScriptedModel::default(), cfg);
    let sink = RecordingSink::new();
    completed_intent(&h.send(&sink, "m-1", "hello").await);
    completed_intent(&h.send(&sink, "m-2", "hello again").await);
    assert_eq!(h.send(&sink, "m-3", "and again").await, TurnResult::Limited(ErrorCode::RateLimited));
    let e = sink.last();
    assert_eq!((e["code"].as_str(), e["retryable"].as_bool()), (Some("rate_limited"), Some(true)));
    let after = e["retry_after_ms"].as_u64().unwrap();
    assert!((59_000..=60_000).contains(&after), "the clock starts on a minute boundary: {after}");
    assert_eq!(h.model.requests().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_stalled_past_the_deadline_ends_with_an_error_and_a_partial_turn_and_can_be_retried() {
    let stalled = Script::stream(vec![
        (Duration::from_millis(5), Ok(ModelEvent::Text("The first part ".into()))),
        (Duration::from_secs(8), Ok(ModelEvent::Text("too late".into()))),
    ]);
    let cfg = TurnConfig { turn_deadline: Duration::from_secs(3), ..config() };
    let h = harness(ScriptedModel::default().then(stalled), cfg);
    let sink = RecordingSink::new();
    let started = Instant::now();
    assert_eq!(h.send(&sink, "m-1", "hello").await, TurnResult::Failed(ErrorCode::DeadlineExceeded));
    assert!(started.elapsed() < Duration::from_secs(4), "ended at the deadline, not at the idle timeout");
    assert_eq!(sink.types(), ["delta", "error"]);
    assert_eq!(sink.last()["retryable"], true);
    let turns = h.turns().await;
    assert_eq!((turns[0].status, turns[0].assistant_text.as_str()), (TurnStatus::Partial, "The first part "));
    completed_intent(&h.send(&sink, "m-1", "hello").await);
    assert_eq!(h.turns().await[0].status, TurnStatus::Complete, "the retry answered the same id");
}

#[tokio::test(start_paused = true)]
async fn an_upstream_error_reaches_the_client_as_a_code_and_a_safe_sentence() {
    let arn = "arn:aws:bedrock:ap-northeast-1:123456789012:provisioned-model/abc123";
    let denied = || {
        let text = format!("User is not authorized to perform bedrock:InvokeModel on {arn}");
        Script::Refuse(ModelError::Rejected(text.clone(), text.into()))
    };
    let h = harness(ScriptedModel::default().then(denied()).then(denied()), config());
    let sink = RecordingSink::new();
    assert_eq!(h.send(&sink, "m-1", "hello").await, TurnResult::Failed(ErrorCode::ModelRejected));
    let e = sink.last().to_string();
    assert!(e.contains("model_rejected") && e.contains("could not answer"), "{e}");
    for secret in ["arn:", "123456789012", "authorized", "bedrock:"] {
        assert!(!e.contains(secret), "{secret} leaked: {e}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_session_frame_is_answered_with_the_session_id() {
    let h = harness(ScriptedModel::default(), config());
    let who = Principal::user(crate::ids::UserId::parse("u-1").unwrap());
    let session = h.engine.connect(conn(), None, &who).await.unwrap().record.session_id;
    let sink = RecordingSink::new();
    let r = h.engine.handle_frame(&sink, &Invocation::now(conn(), r#"{"action":"session"}"#)).await;
    assert_eq!(r, TurnResult::Session);
    assert_eq!(sink.last(), serde_json::json!({"type": "session", "session_id": session.as_str()}));
}
