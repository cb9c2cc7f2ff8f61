//! The assembler through its production path: [`Assembler::assemble`] over the embedded store and
//! scripted sources, on tokio's paused clock.

use super::*;
use crate::ports::memory::MemoryStore;
use crate::protocol::PageContext;
use crate::testkit::{ScriptedSources, turn};

/// Sources with scripted latencies (cache reads take 1 ms); they log queries, service calls and cache writes.
fn sources() -> ScriptedSources {
    ScriptedSources::new().cache_latency(Duration::from_millis(1))
}

/// The same, with retrieval taking `retrieval` and each service call `service`.
fn slow(retrieval: Duration, service: Duration) -> ScriptedSources {
    sources().retrieval_latency(retrieval).service_latency(service)
}

fn message(text: &str, page: &str) -> ClientMessage {
    let frame = serde_json::json!({"action": "sendMessage", "message_id": "m-1", "text": text, "page_context": serde_json::from_str::<serde_json::Value>(page).unwrap()});
    ClientMessage::parse(&frame.to_string()).unwrap()
}

fn session() -> SessionId {
    SessionId::parse("s-1").unwrap()
}

async fn assemble(src: &ScriptedSources, store: &MemoryStore, text: &str, page: &str) -> Gathered {
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: src, store, cfg: &cfg };
    asm.assemble(&message(text, page), &session(), &UserId::anonymous()).await
}

/// A store whose memory reads take 50 ms, holding one earlier answer that named two products.
async fn store_with_an_answer() -> MemoryStore {
    let store = MemoryStore::with_latency(Duration::from_millis(50));
    let turn = turn("s-1", "m-0")
        .user_text("horror please")
        .answer("B0AAAAAAA1 and B0BBBBBBB2")
        .products(&["B0AAAAAAA1", "B0BBBBBBB2"])
        .intent(Intent::ProductDiscovery)
        .build();
    store.save_turn(&turn).await.unwrap();
    store
}

const ABOUT_A: &str = r#"{"current_asin":"B0AAAAAAA1"}"#;

#[tokio::test(start_paused = true)]
async fn the_legs_cost_the_slowest_not_the_sum() {
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let store = store_with_an_answer().await;
    let g = assemble(&src, &store, "Is it in stock?", ABOUT_A).await;
    let asm = &g.context;
    assert!(asm.errors.is_empty(), "{:?}", asm.errors);
    assert!((200.0..205.0).contains(&asm.assembly_ms), "{}", asm.assembly_ms);
    assert_eq!(g.intent, Intent::ProductQuestion);
    assert_eq!(asm.passages.len(), 3, "product, review, retrieved passage");
    assert_eq!(src.calls().len(), 2);
    assert_eq!(g.memory.turns.len(), 1, "memory arrived");
}

#[tokio::test(start_paused = true)]
async fn sequential_assembly_costs_the_sum() {
    let src = slow(Duration::from_millis(100), Duration::from_millis(60));
    let store = store_with_an_answer().await;
    let cfg = ContextConfig { sequential: true, ..ContextConfig::default() };
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let g = asm.assemble(&message("Is it in stock?", ABOUT_A), &session(), &UserId::anonymous()).await;
    assert!(g.context.assembly_ms >= 50.0 + 1.0 + 60.0 + 100.0, "{}", g.context.assembly_ms);
}

#[tokio::test(start_paused = true)]
async fn a_slow_leg_is_cut_at_its_deadline_and_the_rest_arrives() {
    let src = slow(Duration::from_secs(5), Duration::from_millis(10));
    let store = MemoryStore::default();
    let g = assemble(&src, &store, "Is it in stock?", ABOUT_A).await;
    assert_eq!(g.context.errors, ["retrieval: deadline of 240 ms"]);
    assert!(g.context.assembly_ms <= 250.0 + 1.0, "{}", g.context.assembly_ms);
    assert_eq!(g.context.passages.len(), 2, "the service data still arrived");
}

#[tokio::test(start_paused = true)]
async fn a_cache_hit_skips_the_service_call_and_misses_are_written_back() {
    let src =
        sources().service_latency(Duration::from_millis(100)).cached("product:B0AAAAAAA1", r#"{"title":"cached"}"#);
    let store = MemoryStore::default();
    let g = assemble(&src, &store, "Is it in stock?", ABOUT_A).await;
    assert_eq!(g.context.cache_hits, ["product:B0AAAAAAA1"]);
    assert_eq!(src.calls(), ["review:B0AAAAAAA1"]);
    let cfg = ContextConfig::default();
    Assembler { sources: &src, store: &store, cfg: &cfg }.write_back(&g.context).await;
    assert_eq!(src.written(), ["review:B0AAAAAAA1"]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_cache_falls_back_to_the_services() {
    let src = sources().cache_down();
    let store = MemoryStore::default();
    let g = assemble(&src, &store, "Is it in stock?", ABOUT_A).await;
    assert_eq!(g.context.errors.len(), 1);
    assert!(g.context.errors[0].starts_with("cache:"));
    assert_eq!(src.calls().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_ordinal_follow_up_reads_its_products_passages_instead_of_searching_its_words() {
    let src = sources();
    let store = store_with_an_answer().await;
    let g = assemble(&src, &store, "Tell me more about the second one", "{}").await;
    assert_eq!(g.entities.resolved.as_ref().map(Asin::as_str), Some("B0BBBBBBB2"));
    assert!(src.queries().is_empty(), "no text search for an ordinal");
    assert_eq!(src.calls(), ["product:B0BBBBBBB2", "review:B0BBBBBBB2", "rag:product_question:B0BBBBBBB2"]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_memory_is_cut_and_the_turn_goes_on_without_it() {
    let src = sources();
    let store = MemoryStore::with_latency(Duration::from_secs(2));
    let g = assemble(&src, &store, "Show me horror manga", "{}").await;
    assert_eq!(g.context.errors, ["memory: deadline of 150 ms"]);
    assert!(g.memory.turns.is_empty());
    assert!(g.context.passages.iter().any(|p| p.content == "about Show me horror manga"), "retrieval still arrived");
}

#[test]
fn focus_prefers_named_products_then_the_ordinal_then_the_page() {
    let e = Entities {
        asins: vec![Asin::parse("B0NAMED001").unwrap()],
        resolved: Some(Asin::parse("B0ORDINAL1").unwrap()),
        ..Entities::default()
    };
    let page: PageContext =
        serde_json::from_str(r#"{"current_asin":"B0CURRENT1","browsing_history":["B0HISTORY1"]}"#).unwrap();
    assert_eq!(focus_products(&e, &page, 3), ["B0NAMED001", "B0ORDINAL1", "B0CURRENT1"]);
    assert_eq!(focus_products(&Entities::default(), &page, 3), ["B0CURRENT1", "B0HISTORY1"]);
}

#[tokio::test(start_paused = true)]
async fn a_fitting_speculation_serves_retrieval_and_services_and_only_memory_runs() {
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let store = MemoryStore::with_latency(Duration::from_millis(50));
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let msg = message("Is B0AAAAAAA1 in stock?", "{}");
    let prior = Reusable {
        retrieved: Some(vec![Passage { content: "typed".into(), score: 0.5, tokens: None }]),
        values: vec![
            ("product:B0AAAAAAA1".into(), r#"{"stock":3}"#.into()),
            ("review:B0AAAAAAA1".into(), r#"{"stars":4}"#.into()),
        ],
        resolved: None,
        ..Reusable::default()
    };
    let start = Instant::now();
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { Some(Arc::new(prior)) }).await;
    assert_eq!(g.context.speculated, ["retrieval", "services"]);
    assert!(src.queries().is_empty() && src.calls().is_empty());
    assert_eq!(g.context.calls, SourceCalls::default());
    assert!(g.context.passages.iter().any(|p| p.content == "typed"));
    assert_eq!(g.context.values.len(), 2);
    assert!(start.elapsed() < Duration::from_millis(60), "memory alone: {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_speculations_values_stand_only_for_the_product_its_ordinal_resolved_to() {
    let src = sources();
    let store = store_with_an_answer().await;
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    // Built when "the first one" pointed at another product than memory now says.
    let prior = Reusable {
        retrieved: None,
        values: vec![("product:B0AAAAAAA1".into(), "{}".into())],
        resolved: Some(Asin::parse("B0BBBBBBB2").unwrap()),
        ..Reusable::default()
    };
    let msg = message("Is the first one in stock?", "{}");
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { Some(Arc::new(prior)) }).await;
    assert!(g.context.speculated.is_empty(), "{:?}", g.context.speculated);
    assert!(src.calls().contains(&"product:B0AAAAAAA1".to_owned()), "fetched at send");
}

/// A speculation of "Is B0AAAAAAA1 in stock?" holding the session's memory: one earlier answer.
async fn speculation_with_memory() -> Reusable {
    let memory = Memory::load(&store_with_an_answer().await, &session(), 6).await;
    assert_eq!(memory.turns.len(), 1);
    Reusable {
        retrieved: Some(vec![Passage { content: "typed".into(), score: 0.5, tokens: None }]),
        values: vec![("product:B0AAAAAAA1".into(), "{}".into())],
        resolved: None,
        absent: vec!["review:B0AAAAAAA1".into()],
        memory: Some(memory),
        input: None,
        epoch: Some(None),
        recall: None,
    }
}

#[tokio::test(start_paused = true)]
async fn a_speculation_with_current_memory_serves_every_leg_and_the_store_is_not_waited_for() {
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    // An empty store that answers in 50 ms: the memory must come from the speculation.
    let store = MemoryStore::with_latency(Duration::from_millis(50));
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let prior = speculation_with_memory().await;
    let start = Instant::now();
    let msg = message("Is B0AAAAAAA1 in stock?", "{}");
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { Some(Arc::new(prior)) }).await;
    assert!(start.elapsed() < Duration::from_millis(5), "no leg waited for: {:?}", start.elapsed());
    assert_eq!(g.context.speculated, ["memory", "retrieval", "services"]);
    assert_eq!(g.memory.turns.len(), 1, "the speculation's memory");
    assert!(!g.context.memory_whole, "a copy is never kept again as read from the store");
    assert!(src.calls().is_empty(), "the absent review was not asked again");
    assert_eq!(g.context.absent.len(), 1);
    assert_eq!(g.context.legs.memory_ms, 0.0);
}

#[tokio::test(start_paused = true)]
async fn a_speculation_slower_than_the_store_leaves_the_memory_to_the_store() {
    let src = sources();
    let store = MemoryStore::with_latency(Duration::from_millis(50));
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let prior = speculation_with_memory().await;
    let late = async {
        tokio::time::sleep(Duration::from_millis(80)).await;
        Some(Arc::new(prior))
    };
    let msg = message("Is B0AAAAAAA1 in stock?", "{}");
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), late).await;
    assert!(g.memory.turns.is_empty(), "the store's own (empty) memory");
    assert!(g.context.memory_whole);
    assert_eq!(g.context.speculated, ["retrieval", "services"]);
}

#[tokio::test(start_paused = true)]
async fn a_lookup_its_source_does_not_know_is_recorded_absent() {
    let src = sources().missing("review:B0AAAAAAA1");
    let store = MemoryStore::default();
    let g = assemble(&src, &store, "Is B0AAAAAAA1 in stock?", "{}").await;
    let absent: Vec<String> = g.context.absent.iter().map(Lookup::key).collect();
    assert_eq!(absent, ["review:B0AAAAAAA1"]);
    assert!(g.context.memory_whole);
    assert_eq!(g.context.values.len(), 1);
}

/// The epoch's recall of [`store_with_an_answer`]'s memory, as the turn that stored it wrote it.
async fn recall_of(store: &MemoryStore) -> Recall {
    Recall::of(&Memory::load(store, &session(), 8).await.turns)
}

#[tokio::test(start_paused = true)]
async fn a_follow_up_resolved_by_the_epochs_recall_waits_for_no_chain() {
    // Memory 50 ms, retrieval 200 ms: chained, the product's passages would arrive at 250 ms.
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let store = store_with_an_answer().await;
    let recall = recall_of(&store).await;
    assert_eq!(recall.asked, recall::Asked::List);
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let prior = Reusable { recall: Some(recall), epoch: Some(Some("t.m-0".into())), ..Reusable::default() };
    let msg = message("Tell me more about the second one", "{}");
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { Some(Arc::new(prior)) }).await;
    assert_eq!(g.entities.resolved.as_ref().map(Asin::as_str), Some("B0BBBBBBB2"));
    assert_eq!(src.calls(), ["product:B0BBBBBBB2", "review:B0BBBBBBB2", "rag:product_question:B0BBBBBBB2"]);
    assert!(
        (200.0..205.0).contains(&g.context.assembly_ms),
        "the slowest leg, not memory + it: {}",
        g.context.assembly_ms
    );
    assert_eq!(g.memory.turns.len(), 1, "memory still arrives for the prompt");
    assert_eq!(g.context.passages.len(), 3);
    assert!(matches!(g.context.ask, Some(Ask::Overview(_))), "{:?}", g.context.ask);

    // Without a recall the same follow-up waits for memory first.
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { None }).await;
    assert!(g.context.assembly_ms >= 250.0, "{}", g.context.assembly_ms);
}

#[tokio::test(start_paused = true)]
async fn a_recall_that_memory_contradicts_is_looked_up_again_from_memory() {
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let store = store_with_an_answer().await;
    // A recall of another list (a turn stored by another instance after this marker was written).
    let stale = Recall {
        listed: ["B0CCCCCCC3", "B0DDDDDDD4"]
            .iter()
            .map(|a| crate::intent::Listed {
                asin: Asin::parse(*a).unwrap(),
                title_en: String::new(),
                title_ja: String::new(),
            })
            .collect(),
        asked: recall::Asked::List,
    };
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let prior = Reusable { recall: Some(stale), epoch: Some(Some("t.m-0".into())), ..Reusable::default() };
    let msg = message("Tell me more about the second one", "{}");
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { Some(Arc::new(prior)) }).await;
    assert_eq!(g.entities.resolved.as_ref().map(Asin::as_str), Some("B0BBBBBBB2"), "memory decides");
    let values: Vec<String> = g.context.values.iter().map(|(l, _)| l.key()).collect();
    assert_eq!(values, ["product:B0BBBBBBB2", "review:B0BBBBBBB2", "rag:product_question:B0BBBBBBB2"]);
    assert!(
        g.context.passages.iter().all(|p| !p.content.contains("B0DDDDDDD4")),
        "nothing of the wrong product reaches the prompt"
    );
    assert!(g.context.assembly_ms >= 250.0, "the chain, as without a recall: {}", g.context.assembly_ms);
}

#[test]
fn the_recall_is_what_the_memory_says_and_survives_the_cache() {
    let list = turn("s-1", "m-0")
        .user_text("horror please")
        .answer("Paper Diary (B0AAAAAAA1) and Star (B0BBBBBBB2)")
        .products(&["B0AAAAAAA1", "B0BBBBBBB2"])
        .build();
    let follow =
        turn("s-1", "m-1").user_text("is the first one scary?").answer("Yes").products(&["B0AAAAAAA1"]).build();
    let r = Recall::of([&follow, &list]);
    assert_eq!(r.listed.iter().map(|l| l.asin.as_str()).collect::<Vec<_>>(), ["B0AAAAAAA1", "B0BBBBBBB2"]);
    assert_eq!(r.listed[0].title_en, "Paper Diary");
    assert_eq!(r.asked, recall::Asked::FollowUp("is the first one scary?".into()));
    assert_eq!(Recall::of([] as [&crate::ports::TurnRecord; 0]), Recall::default());
    let v = recall::EpochValue { marker: "t.m-1.5.0a".into(), recall: Some(r) };
    assert_eq!(recall::EpochValue::decode(&v.encode()), v);
    // A marker written before recalls were: a marker, no recall.
    assert_eq!(
        recall::EpochValue::decode("t.m-1.5.0a"),
        recall::EpochValue { marker: "t.m-1.5.0a".into(), recall: None }
    );
}

#[tokio::test(start_paused = true)]
async fn a_listed_title_asked_about_in_passing_is_a_question_about_that_product() {
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let store = MemoryStore::with_latency(Duration::from_millis(50));
    let turn = turn("s-1", "m-0")
        .user_text("Can you recommend a creepy horror manga?")
        .answer("1. Paper Diary (B0AAAAAAA1): a horror series.\n2. Star Hunter (B0BBBBBBB2): a horror series.")
        .products(&["B0AAAAAAA1", "B0BBBBBBB2"])
        .intent(Intent::Recommendation)
        .build();
    store.save_turn(&turn).await.unwrap();
    let text = "what's star hunter about?";
    assert_eq!(intent::classify(text, &intent::extract(text, &[])), Intent::General, "the words alone");
    let g = assemble(&src, &store, text, "{}").await;
    assert_eq!(g.intent, Intent::ProductQuestion);
    assert_eq!(g.entities.resolved.as_ref().map(Asin::as_str), Some("B0BBBBBBB2"));
    let values: Vec<String> = g.context.values.iter().map(|(l, _)| l.key()).collect();
    assert!(values.contains(&"product:B0BBBBBBB2".to_owned()), "its facts are looked up: {values:?}");
    assert!(matches!(g.context.ask, Some(Ask::Overview(_))), "{:?}", g.context.ask);
}

#[tokio::test(start_paused = true)]
async fn a_listed_title_known_from_the_recall_is_looked_up_like_an_ordinal_not_searched() {
    let src = slow(Duration::from_millis(200), Duration::from_millis(100));
    let store = MemoryStore::with_latency(Duration::from_millis(50));
    let turn = turn("s-1", "m-0")
        .user_text("Can you recommend a creepy horror manga?")
        .answer("1. Paper Diary (B0AAAAAAA1): a horror series.\n2. Star Hunter (B0BBBBBBB2): a horror series.")
        .products(&["B0AAAAAAA1", "B0BBBBBBB2"])
        .intent(Intent::Recommendation)
        .build();
    store.save_turn(&turn).await.unwrap();
    let recall = recall_of(&store).await;
    let cfg = ContextConfig::default();
    let asm = Assembler { sources: &src, store: &store, cfg: &cfg };
    let prior = Reusable { recall: Some(recall), epoch: Some(Some("t.m-0".into())), ..Reusable::default() };
    let msg = message("what's star hunter about?", "{}");
    let g = asm.assemble_reusing(&msg, &session(), &UserId::anonymous(), async { Some(Arc::new(prior)) }).await;
    assert_eq!(src.calls(), ["product:B0BBBBBBB2", "review:B0BBBBBBB2", "rag:product_question:B0BBBBBBB2"]);
    assert!(
        src.queries().iter().all(|q| !q.contains("star hunter")),
        "its words were not searched: {:?}",
        src.queries()
    );
    assert!(g.context.assembly_ms < 205.0, "{}", g.context.assembly_ms);
}
