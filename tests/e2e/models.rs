//! Per-intent model routing and the request levers, end to end: the real SDK client against the Bedrock
//! emulator, which refuses (as Bedrock does) a lever or a model a family does not take.

use std::sync::Arc;

use mangaassist_core::models::{CLAUDE_HAIKU_4_5, Levers, NOVA_2_LITE};
use mangaassist_local::client::ChatClient;
use mangaassist_local::emulators::bedrock::{Fault, LatencyModel};

use crate::helpers::*;

const HAIKU: &str = "jp.anthropic.claude-haiku-4-5-20251001-v1:0";
const NOVA: &str = "jp.amazon.nova-2-lite-v1:0";

#[tokio::test]
async fn a_simple_intent_is_answered_by_the_small_model_and_a_product_question_by_haiku() {
    assert_eq!((HAIKU, NOVA), (format!("jp.{CLAUDE_HAIKU_4_5}").as_str(), format!("jp.{NOVA_2_LITE}").as_str()));
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    let faq = ask(&mut client, "What is your shipping fee policy?", None).await;
    assert_eq!(faq["metrics"]["intent"], "faq");
    assert_eq!(faq["metrics"]["model"], NOVA);
    assert_eq!(faq["metrics"]["max_tokens"], 200, "short answers for simple intents");

    let reco = ask(&mut client, "Can you recommend something like Berserk?", None).await;
    assert_eq!(reco["metrics"]["model"], HAIKU);
    assert_eq!(reco["metrics"]["max_tokens"], 400);
    let id = reco["message_id"].as_str().unwrap();
    let req = sys.emulator.stats.for_message(id);
    assert_eq!(req[0].model_id, HAIKU, "the request itself went to the Haiku profile");
}

#[tokio::test]
async fn failover_keeps_working_on_the_small_models_route() {
    let moto = moto().await;
    let sys = system(&moto, LatencyModel::fast()).await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    sys.emulator.inject(Fault::ThrottleBeforeStream);
    let done = ask(&mut client, "Where is my order 112-1234567-1234567?", None).await;
    assert_eq!(done["metrics"]["failovers"], 1);
    let reqs = sys.emulator.stats.for_message(done["message_id"].as_str().unwrap());
    let models: Vec<&str> = reqs.iter().map(|r| r.model_id.as_str()).collect();
    assert_eq!(models, [NOVA, NOVA], "no fallback configured: the same route is tried again");
}

#[tokio::test]
async fn each_lever_reaches_only_the_models_that_take_it() {
    let moto = moto().await;
    // About 5,000 tokens of store policies: above Haiku 4.5's 4,096-token minimum per cache checkpoint.
    let prefix: Arc<str> = Arc::from("Returns are accepted within 30 days for unread volumes. ".repeat(460));
    let sys = system_with(&moto, LatencyModel::fast(), |t| {
        t.prompt.levers = Levers { latency_optimized: true, priority_tier: true, prompt_cache: true };
        t.prompt.cached_prefix = Some(prefix);
    })
    .await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();

    // Nova 2 Lite offers the priority tier; not latency-optimized inference, not a cache checkpoint. An unsupported
    // lever would have been refused by the emulator, as Bedrock refuses it.
    let faq = ask(&mut client, "What is your shipping fee policy?", None).await;
    let asked = &sys.emulator.stats.for_message(faq["message_id"].as_str().unwrap())[0].asked;
    assert_eq!(asked.service_tier.as_deref(), Some("priority"));
    assert!(!asked.latency_optimized && !asked.cache_point);
    assert_eq!(faq["metrics"]["service_tier"], "priority");

    // Haiku 4.5: the checkpoint only (it offers neither of the other two). The first request writes the
    // cache, the next one reads it.
    let first = ask(&mut client, "Can you recommend something like Berserk?", None).await;
    let asked = &sys.emulator.stats.for_message(first["message_id"].as_str().unwrap())[0].asked;
    assert!(asked.cache_point && asked.service_tier.is_none() && !asked.latency_optimized, "{asked:?}");
    assert!(first["metrics"]["cache_write_tokens"].as_u64().unwrap() > 4096, "{}", first["metrics"]);
    let second = ask(&mut client, "Any horror manga like Uzumaki?", None).await;
    assert!(second["metrics"]["cache_read_tokens"].as_u64().unwrap() > 4096, "{}", second["metrics"]);
}

#[tokio::test]
async fn a_short_prefix_gets_no_checkpoint_and_a_retired_model_is_refused_like_bedrock() {
    let moto = moto().await;
    let sys = system_with(&moto, LatencyModel::fast(), |t| {
        t.prompt.levers = Levers { prompt_cache: true, ..Levers::default() };
        t.prompt.cached_prefix = Some(Arc::from("Returns within 30 days."));
        t.models = mangaassist_core::models::ModelRouting::single("anthropic.claude-3-5-haiku-20241022-v1:0", 400);
    })
    .await;
    let mut client = ChatClient::connect(&sys.ws_url()).await.unwrap();
    let id = client.send_message("Any horror manga?", None).await.unwrap();
    let events = events_until_end(&mut client, &id).await;
    let last = events.last().unwrap();
    assert_eq!(last["code"], "model_rejected", "{last}");
    assert_eq!(last["retryable"], false);
    let reqs = sys.emulator.stats.for_message(&id);
    assert_eq!(reqs.len(), 1, "a refused request is not retried");
    assert!(!reqs[0].asked.cache_point, "below the minimum no checkpoint is sent");
}
