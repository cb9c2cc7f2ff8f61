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
    let none = Entities::default();
    assert!(same_language(&entry, "2つ目は？", &none) && !same_language(&entry, "the second?", &none));
    assert_eq!(PregenMode::parse("full+opening"), Some(PregenMode::FullOpening));
    assert_eq!(PregenMode::parse("on"), None);
}

fn listed() -> Vec<crate::intent::Listed> {
    [
        ("B0AAAAAAA1", "Paper Diary", "紙の日記"),
        ("B0BBBBBBB2", "Star Hunter", "星降る狩人"),
        ("B0CCCCCCC3", "Last Dragon", "最後の竜"),
    ]
    .iter()
    .map(|(a, en, ja)| crate::intent::Listed {
        asin: Asin::parse(*a).unwrap(),
        title_en: (*en).into(),
        title_ja: (*ja).into(),
    })
    .collect()
}

/// What the turn decides with the list's titles and what came before.
fn decide_after(text: &str, before: Before<'_>) -> Ask {
    let mut e = extract(text, &[]);
    let intent = classify(text, &e);
    e.resolve_listed(text, &listed());
    ask_after(text, intent, &e, before)
}

#[test]
fn generic_requests_phrased_any_way_are_served_the_overview() {
    for (text, want) in [
        ("I'm curious about the second one", overview(2)),
        ("could you give me some info on the first one please", overview(1)),
        ("details on #2?", overview(2)),
        ("no. 3 - what kind of manga is it?", overview(3)),
        ("the middle one sounds interesting, what's it about?", overview(2)),
        ("More about the last one pls 🙏", overview(3)),
        ("TELL ME MORE ABOUT THE FIRST ONE!!", overview(1)),
        ("ｔｅｌｌ ｍｅ ａｂｏｕｔ ｔｈｅ ｓｅｃｏｎｄ ｏｎｅ", overview(2)),
        ("tell me abotu the thrid one", overview(3)),
        ("can u give me the detials on the 1st", overview(1)),
        ("Tell me more about Paper Diary", overview(1)),
        ("star hunter - what's the premise?", overview(2)),
        ("Last Dragon? what's that about", overview(3)),
        ("What is the middle one like?", overview(2)),
        ("2つ目について詳しく教えていただけますか？", overview(2)),
        ("最後のやつ気になる！どんな話？", overview(3)),
        ("真ん中のってどんな漫画なの？", overview(2)),
        ("１つ目kwsk", overview(1)),
        ("二番目の作品を紹介してください", overview(2)),
        ("紙の日記ってどんな作品？", overview(1)),
        ("最後の竜について教えて〜", overview(3)),
        ("the second one?", overview(2)),
        ("2つ目は？", overview(2)),
    ] {
        assert_eq!(decide_after(text, Before::List), want, "{text}");
    }
}

#[test]
fn specific_questions_wrapped_in_overview_words_are_never_served_the_overview() {
    for text in [
        "tell me more about the price of the first one",
        "Can you tell me if the first one is finished?",
        "what's the first one rated",
        "is the second one any good?",
        "can I get the first one?",
        "do you have the first one?",
        "I'd like the second one",
        "what's the first one like compared to Berserk?",
        "what about the first one's ending?",
        "tell me about the second one in Japanese",
        "tell me the plot of the first one without spoilers",
        "details on the first one's price",
        "info on delivery for #2",
        "Is the first one recommended?",
        "the first one",
        "more volumes of the second one?",
        "is paper diary scary",
        "Star Hunter, how many volumes?",
        "1つ目の値段について教えて",
        "2つ目について詳しく、あと在庫も",
        "2つ目はどうですか？",
        "2つ目はいいですか？",
        "2つ目にします",
        "2つ目が欲しいです",
        "2つ目の作者について教えて",
        "2つ目のあらすじ、ネタバレなしで",
        "2つ目は何巻まで？",
        "なんで2つ目がおすすめなの？",
        "2つ目ってこわい？",
        "2つ目っていくら？",
        "紙の日記は完結してる？",
        "1つ目と3つ目どっちが怖い？",
        "tell me about the first and the third",
        "Paper Diary or Star Hunter?",
    ] {
        assert!(!matches!(decide_after(text, Before::List), Ask::Overview(_)), "{text}");
    }
}

#[test]
fn a_reply_that_only_points_asks_what_was_asked_last() {
    let l = listed();
    let after_specific = Before::FollowUp("Is the first one scary?", &l);
    let after_generic = Before::FollowUp("tell me more about the first one", &l);
    assert_eq!(decide_after("and the second one?", Before::List), overview(2));
    assert_eq!(decide_after("and the second one?", after_generic), overview(2));
    assert_ne!(decide_after("and the second one?", after_specific), overview(2));
    assert_ne!(decide_after("2つ目も？", Before::FollowUp("1つ目は怖い？", &l)), overview(2));
    assert_ne!(decide_after("and the second one?", Before::Unknown), overview(2));
    // An explicit request stands on its own.
    assert_eq!(decide_after("tell me about the second one", after_specific), overview(2));
}

#[test]
fn asking_again_about_the_product_whose_overview_was_just_given_goes_to_the_model() {
    let l = listed();
    let before = Before::FollowUp("tell me more about the first one", &l);
    assert!(!matches!(decide_after("tell me more about the first one", before), Ask::Overview(_)));
    assert!(!matches!(
        decide_after("1つ目をもっと詳しく", Before::FollowUp("1つ目について教えて", &l)),
        Ask::Overview(_)
    ));
}

#[test]
fn a_title_that_contains_a_position_word_names_its_own_product() {
    assert_eq!(decide_after("最後の竜について教えて", Before::List), overview(3));
    let mut e = extract("最後の竜について教えて", &[]);
    e.resolve_listed("最後の竜について教えて", &listed());
    assert_eq!(e.ordinal, None);
    // Title and ordinal pointing at different products: nothing is resolved.
    assert_eq!(decide_after("the first one, Star Hunter", Before::List), Ask::Other);
}

#[test]
fn a_part_of_a_title_can_ask_for_an_overview_but_never_opens_a_specific_answer() {
    assert_eq!(decide_after("tell me about the diary one", Before::List), overview(1));
    assert_eq!(decide_after("is the diary one scary?", Before::List), Ask::Other);
}

#[test]
fn the_language_of_a_message_is_that_of_its_own_words_not_of_the_titles_it_names() {
    let l = listed();
    let lang = |text: &str| {
        let mut e = extract(text, &[]);
        e.resolve_listed(text, &l);
        language(text, &e)
    };
    assert_eq!(lang("Paper Diaryについて教えて"), Some(true));
    assert_eq!(lang("tell me about 紙の日記"), Some(false));
    assert_eq!(lang("紙の日記？"), None);
    assert_eq!(lang("#2?"), None);
    assert_eq!(lang("２つ目は？"), Some(true));
    let entry = |japanese| PregenEntry {
        text: "x".into(),
        fingerprint: String::new(),
        model: String::new(),
        input_tokens: 0,
        output_tokens: 0,
        created_at_ms: 0,
        japanese,
        served: false,
    };
    let mut e = extract("Paper Diary?", &[]);
    e.resolve_listed("Paper Diary?", &l);
    assert!(same_language(&entry(true), "Paper Diary?", &e), "a title alone follows the conversation");
    assert!(!same_language(&entry(false), "2つ目について", &Entities::default()));
}
