//! The prediction and planning tables, and the worker over a fake cache: claims, skips, deadlines.

use super::*;
use crate::testkit::ScriptedSources;
use std::collections::HashSet;
use std::sync::Mutex;

fn asins(n: usize) -> Vec<Asin> {
    (1..=n).map(|i| Asin::parse(format!("B0AAAAAAA{i}")).unwrap()).collect()
}

fn user() -> UserId {
    UserId::parse("u1").unwrap()
}

fn counts(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn the_prior_is_the_design_table_and_its_rows_sum_below_one() {
    assert_eq!(PRIOR.len(), 3);
    for (from, rows) in PRIOR {
        let sum: f64 = rows.iter().map(|r| r.probability).sum();
        assert!(sum <= 1.0, "{from:?}");
    }
    let (basis, p) = predict(Intent::ProductDiscovery, &HashMap::new(), 20);
    assert_eq!(basis, Basis::Prior);
    let names: Vec<_> = p.iter().map(|p| (p.intent, p.probability)).collect();
    assert_eq!(names, [(Intent::ProductQuestion, 0.45), (Intent::Recommendation, 0.30), (Intent::CheckoutHelp, 0.10)]);
}

#[test]
fn only_predictions_at_or_above_the_threshold_are_selected() {
    let (_, p) = predict(Intent::ProductQuestion, &HashMap::new(), 20);
    let kept: Vec<_> = select(p, DEFAULT_THRESHOLD).into_iter().map(|p| p.intent).collect();
    assert_eq!(kept, [Intent::CheckoutHelp, Intent::Recommendation], "0.25 is kept, 0.20 is not");
    let (_, p) = predict(Intent::General, &HashMap::new(), 20);
    assert!(p.is_empty(), "no data on general chat: nothing is predicted");
}

#[test]
fn observed_frequencies_replace_the_prior_once_there_are_enough() {
    let few = counts(&[("faq", 19)]);
    assert_eq!(predict(Intent::ProductDiscovery, &few, 20).0, Basis::Prior);
    let enough = counts(&[("promotion", 12), ("product_question", 6), ("faq", 2), ("not_an_intent", 0)]);
    let (basis, p) = predict(Intent::ProductDiscovery, &enough, 20);
    assert_eq!(basis, Basis::Learned);
    let got: Vec<_> = p.iter().map(|p| (p.intent, p.probability)).collect();
    assert_eq!(got, [(Intent::Promotion, 0.6), (Intent::ProductQuestion, 0.3), (Intent::Faq, 0.1)]);
    assert_eq!(p[0].kinds, &[Promotions]);
    assert_eq!(p[1].kinds, &[ProductDetails, Reviews], "the prior's row is kept for a known pair");
}

#[test]
fn a_discovery_turn_plans_details_reviews_similar_items_and_rag_for_the_first_product() {
    let (_, p) = predict(Intent::ProductDiscovery, &HashMap::new(), 20);
    let w = plan(&select(p, DEFAULT_THRESHOLD), &asins(4), &user(), 3);
    let a = asins(3);
    let mut want: Vec<Lookup> = a.iter().map(|x| Lookup::Product(x.clone())).collect();
    want.extend(a.iter().map(|x| Lookup::Review(x.clone())));
    want.push(Lookup::Reco { user: user(), asin: a[0].clone() });
    want.push(Lookup::Rag { intent: Intent::ProductQuestion, asin: a[0].clone() });
    want.push(Lookup::Rag { intent: Intent::Recommendation, asin: a[0].clone() });
    assert_eq!(w, want);
}

#[test]
fn cart_context_is_skipped_and_promotions_are_deduplicated() {
    let p = vec![
        Prediction { intent: Intent::CheckoutHelp, probability: 0.5, kinds: &[CartContext, Promotions] },
        Prediction { intent: Intent::ProductDiscovery, probability: 0.3, kinds: &[TrendingItems] },
    ];
    let w = plan(&p, &[], &user(), 3);
    assert_eq!(w, [Lookup::Promo], "no product, nothing to retrieve about");
}

#[test]
fn the_job_round_trips_through_json_and_rejects_unknown_fields() {
    let job: PrefetchJob = serde_json::from_value(serde_json::json!({
        "session_id": "s", "user_id": "u", "message_id": "m", "intent": "recommendation",
        "previous_intent": "product_discovery", "products": ["B0AAAAAAA1"], "page_context": {"a": 1}
    }))
    .unwrap();
    assert_eq!(serde_json::from_value::<PrefetchJob>(serde_json::to_value(&job).unwrap()).unwrap(), job);
    let extra = serde_json::json!({"session_id": "s", "user_id": "u", "message_id": "m", "intent": "faq", "y": 1});
    assert!(serde_json::from_value::<PrefetchJob>(extra).is_err());
    let unknown = serde_json::json!({"session_id": "s", "user_id": "u", "message_id": "m", "intent": "shopping"});
    assert!(serde_json::from_value::<PrefetchJob>(unknown).is_err(), "an unknown intent is refused at the door");
    let bad_asin =
        serde_json::json!({"session_id": "s", "user_id": "u", "message_id": "m", "intent": "faq", "products": ["x"]});
    assert!(serde_json::from_value::<PrefetchJob>(bad_asin).is_err());
}

#[derive(Default)]
struct Counts(Mutex<HashMap<(Intent, Intent), u64>>);

impl TransitionStore for Counts {
    async fn observe(&self, from: Intent, to: Intent) -> Result<(), SourceError> {
        *self.0.lock().unwrap().entry((from, to)).or_default() += 1;
        Ok(())
    }
    async fn counts(&self, from: Intent) -> Result<HashMap<String, u64>, SourceError> {
        let m = self.0.lock().unwrap();
        Ok(m.iter().filter(|((f, _), _)| *f == from).map(|((_, t), n)| (t.as_str().to_owned(), *n)).collect())
    }
}

fn job(id: &str) -> PrefetchJob {
    PrefetchJob {
        session_id: SessionId::parse("s").unwrap(),
        user_id: user(),
        guest: false,
        message_id: MessageId::parse(id).unwrap(),
        previous_intent: Some(Intent::ProductDiscovery),
        intent: Intent::Recommendation,
        products: asins(2),
        page_context: PageContext::default(),
        history: Vec::new(),
        summary: None,
        previous_products: Vec::new(),
        pregenerated: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_second_run_for_the_same_message_does_nothing() {
    let p = Prefetcher::new(ScriptedSources::new(), Counts::default(), PrefetchConfig::default());
    let first = p.run(&job("m1")).await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    let written: HashSet<_> = first.written.iter().cloned().collect();
    let want: HashSet<String> = ["product:B0AAAAAAA1", "product:B0AAAAAAA2", "review:B0AAAAAAA1", "review:B0AAAAAAA2"]
        .into_iter()
        .map(String::from)
        .chain(["rag:product_question:B0AAAAAAA1".to_owned()])
        .collect();
    assert_eq!(written, want, "recommendation -> product_question (0.50) only");
    let calls = p.sources().calls().len();

    let again = p.run(&job("m1")).await;
    assert!(again.duplicate && again.written.is_empty());
    assert_eq!(p.sources().calls().len(), calls);
    let c = p.transitions().counts(Intent::ProductDiscovery).await.unwrap();
    assert_eq!(c.get("recommendation"), Some(&1), "the retry was not counted");

    let other = p.run(&job("m2")).await;
    assert_eq!(other.written, Vec::<String>::new(), "a new message finds everything cached");
    assert_eq!(other.skipped.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_service_is_cut_at_the_overall_deadline() {
    let fake = ScriptedSources::new().service_latency(Duration::from_secs(60));
    let cfg = PrefetchConfig { timeout: Duration::from_millis(300), ..PrefetchConfig::default() };
    let p = Prefetcher::new(fake, Counts::default(), cfg);
    let r = p.run(&job("m1")).await;
    assert!((300.0..301.0).contains(&r.elapsed_ms), "{}", r.elapsed_ms);
    assert_eq!(r.errors.len(), 4, "{:?}", r.errors);
    assert_eq!(r.written, ["rag:product_question:B0AAAAAAA1"], "retrieval still landed");
    assert_eq!(r.errors[0], "product:B0AAAAAAA1: deadline of 300 ms");
}

/// Counts its runs.
#[derive(Default)]
struct CountingPregen(Mutex<u32>);

impl Pregenerate for CountingPregen {
    async fn pregenerate<X: ContextSources>(&self, _: &X, _: &PrefetchJob) -> PregenReport {
        *self.0.lock().unwrap() += 1;
        PregenReport::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_retried_event_pregenerates_once_and_only_after_a_predicted_product_question() {
    let p = Prefetcher::new(ScriptedSources::new(), Counts::default(), PrefetchConfig::default())
        .with_pregen(CountingPregen::default());
    assert!(p.run(&job("m1")).await.pregen.is_some(), "recommendation -> product_question (0.50)");
    assert!(p.run(&job("m1")).await.duplicate);
    assert_eq!(*p.pregen.0.lock().unwrap(), 1);
    let faq = PrefetchJob { intent: Intent::Faq, previous_intent: None, ..job("m2") };
    assert!(p.run(&faq).await.pregen.is_none(), "nothing predicted after an FAQ");
}
