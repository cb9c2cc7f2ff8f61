//! The serve/skip decision over a table of phrasings, the fingerprint, and the entry's opening.

use serde_json::json;

use super::*;
use crate::intent::{classify, extract};

fn previous() -> Vec<Asin> {
    ["B0AAAAAAA1", "B0BBBBBBB2", "B0CCCCCCC3"].iter().map(|a| Asin::parse(*a).unwrap()).collect()
}

fn decide(text: &str) -> Ask {
    let e = extract(text, &previous());
    ask(text, classify(text, &e), &e)
}

fn overview(n: usize) -> Ask {
    Ask::Overview(previous()[n - 1].clone())
}

fn specific(n: usize) -> Ask {
    Ask::Specific(previous()[n - 1].clone())
}

#[test]
fn generic_overview_requests_are_served_in_english_and_japanese() {
    for (text, want) in [
        ("Tell me more about the first one", overview(1)),
        ("tell me more about the 2nd", overview(2)),
        ("What's the third one about?", overview(3)),
        ("Can you give me details on the last one?", overview(3)),
        ("2つ目はどんな作品？", overview(2)),
        ("2つ目について詳しく教えて", overview(2)),
        ("最初のやつを紹介して", overview(1)),
        ("三番目のあらすじを教えて", overview(3)),
    ] {
        assert_eq!(decide(text), want, "{text}");
    }
}

#[test]
fn specific_questions_are_never_served_the_overview() {
    for (text, want) in [
        ("Is the first one scary?", specific(1)),
        ("How many volumes does the second one have?", specific(2)),
        ("Tell me more about the first one, is it in stock?", specific(1)),
        ("What's the price of the third one?", specific(3)),
        ("2つ目の値段は？", specific(2)),
        ("最初のやつは怖いですか", specific(1)),
        ("1つ目は何巻まで出ていますか", specific(1)),
        ("the first one", specific(1)),
    ] {
        assert_eq!(decide(text), want, "{text}");
    }
}

#[test]
fn other_intents_missing_ordinals_and_out_of_range_ordinals_are_not_about_one_product() {
    for text in [
        "compare 1 and 3",
        "Tell me more about Berserk",
        "Where is my order 112-1234567-1234567?",
        "I want to return the first one",
        "Add the first one to my cart",
        "Tell me more about the fifth one",
        "Tell me more about the first one and B0ZZZZZZZ9",
    ] {
        assert_eq!(decide(text), Ask::Other, "{text}");
    }
}

#[test]
fn a_changed_price_or_stock_changes_the_fingerprint() {
    let product = json!({"asin": "B0AAAAAAA1", "price_jpy": 715, "in_stock": true});
    let reviews = json!({"rating": 4.6});
    let f = fingerprint(&product, Some(&reviews));
    assert_eq!(f, fingerprint(&product.clone(), Some(&reviews.clone())));
    assert_ne!(f, fingerprint(&json!({"asin": "B0AAAAAAA1", "price_jpy": 660, "in_stock": true}), Some(&reviews)));
    assert_ne!(f, fingerprint(&json!({"asin": "B0AAAAAAA1", "price_jpy": 715, "in_stock": false}), Some(&reviews)));
    assert_ne!(f, fingerprint(&product, None));
}

#[test]
fn the_opening_is_the_first_sentence_without_trailing_space() {
    assert_eq!(
        first_sentence("Spiral is a horror series in 12 volumes. It follows Kirie."),
        Some("Spiral is a horror series in 12 volumes.")
    );
    assert_eq!(
        first_sentence("渦巻く年代記は全12巻のホラーです。第1巻から..."),
        Some("渦巻く年代記は全12巻のホラーです。")
    );
    assert_eq!(first_sentence("Version 1.5 is out! More soon"), Some("Version 1.5 is out!"));
    assert_eq!(first_sentence("no end"), None);
}

#[test]
fn the_canonical_question_names_the_title_in_the_shoppers_language() {
    let p = json!({"title_en": "Spiral Chronicle", "title_ja": "渦巻く年代記"});
    assert_eq!(canonical_question(&product_title(&p, false).unwrap(), false), "Tell me more about Spiral Chronicle.");
    assert_eq!(
        canonical_question(&product_title(&p, true).unwrap(), true),
        "渦巻く年代記について詳しく教えてください。"
    );
    let entry = PregenEntry {
        text: "x".into(),
        fingerprint: String::new(),
        model: String::new(),
        input_tokens: 0,
        output_tokens: 0,
        created_at_ms: 0,
        japanese: true,
        served: false,
    };
    assert!(same_language(&entry, "2つ目は？") && !same_language(&entry, "the second?"));
    assert_eq!(PregenMode::parse("full+opening"), Some(PregenMode::FullOpening));
    assert_eq!(PregenMode::parse("on"), None);
}
