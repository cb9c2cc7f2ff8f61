//! CPU cost of the compression path: token counting, truncation, and a whole-prompt compression of a
//! typical request (10-message conversation, 6 RAG chunks with one near-duplicate, page context); and of
//! the follow-up's generic-vs-specific decision (`followup_decision_*`).
//!
//! `cargo bench -p mangaassist-core --bench compress`

use criterion::{Criterion, criterion_group, criterion_main};
use mangaassist_core::ids::Asin;
use mangaassist_core::intent::{self, Intent};
use mangaassist_core::ports::sources::Passage;
use mangaassist_core::ports::{ChatMessage, Role};
use mangaassist_core::pregen;
use mangaassist_core::prompt::SYSTEM_PROMPT;
use mangaassist_core::prompt::compress::{CompressInput, PromptBudget, PromptCompressor, raw_tokens};
use mangaassist_core::protocol::PageContext;
use mangaassist_core::tokenizer::{Cl100k, Tokenizer};
use std::hint::black_box;

fn fixture() -> (Vec<Passage>, Vec<ChatMessage>, PageContext) {
    let chunk = |i: usize| {
        format!(
            "Spiral Chronicle {i} (渦巻く年代記) is a horror series in {} volumes. ASIN B0SPIRAL{i:02}. Readers praise its art \
             and pacing; the first volume sets up the world quickly. The story follows a young protagonist who discovers a \
             hidden talent and a dangerous secret. 渦巻く年代記は人気シリーズです。",
            10 + i
        )
    };
    let mut chunks: Vec<Passage> =
        (0..6).map(|i| Passage { content: chunk(i), score: 0.9 - i as f32 * 0.1, tokens: None }).collect();
    chunks.push(Passage { content: format!("{} ", chunk(0)), score: 0.5, tokens: None });
    let conversation = (0..10)
        .map(|i| ChatMessage {
            role: if i % 2 == 0 { Role::User } else { Role::Assistant },
            text: if i % 2 == 0 {
                "Can you recommend a horror manga like Uzumaki, with fewer volumes?".to_owned()
            } else {
                "Spiral Chronicle (ASIN B0SPIRAL01) has 12 volumes and a complete story; Ghost Garden (ASIN B0GHOSTG01) \
                 has 8. Both are praised for their art."
                    .to_owned()
            },
        })
        .collect();
    let page = serde_json::from_str(
        r#"{"current_asin":"B0SPIRAL01","store_section":"horror","browsing_history":["B0SPIRAL01","B0GHOSTG01"]}"#,
    )
    .unwrap_or_default();
    (chunks, conversation, page)
}

fn benches(c: &mut Criterion) {
    let _ = Cl100k.count("warm up");
    let (chunks, conversation, page) = fixture();
    let text1k: String = chunks.iter().map(|c| c.content.as_str()).collect::<Vec<_>>().join(" ");
    c.bench_function("count_1k_tokens", |b| b.iter(|| Cl100k.count(black_box(&text1k))));
    c.bench_function("truncate_to_200_tokens", |b| b.iter(|| Cl100k.truncate(black_box(&text1k), 200).len()));
    c.bench_function("classify_and_extract", |b| {
        b.iter(|| {
            let e = intent::extract(black_box("2つ目について詳しく教えてください"), &[]);
            intent::classify("2つ目について詳しく教えてください", &e)
        })
    });
    // The generic-vs-specific decision of a follow-up, as the turn runs it: entities, intent, the list's
    // titles, then what the message asks beyond them.
    let listed: Vec<intent::Listed> = [
        ("B03KAY3107", "Paper Diary", "紙の日記"),
        ("B04G6OLIWV", "Star Hunter", "星降る狩人"),
        ("B051ECPZS6", "Ghost Requiem", "幽霊の鎮魂歌"),
    ]
    .iter()
    .filter_map(|(a, en, ja)| {
        Some(intent::Listed { asin: Asin::parse(*a).ok()?, title_en: (*en).into(), title_ja: (*ja).into() })
    })
    .collect();
    for (name, text) in [
        ("followup_decision_en", "I'm curious about Star Hunter, could you tell me a bit about it?"),
        ("followup_decision_ja", "最後のやつ気になる！どんな話か詳しく教えてください"),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                let text = black_box(text);
                let mut e = intent::extract(text, &[]);
                let i = intent::classify(text, &e);
                e.resolve_listed(text, &listed);
                pregen::ask_after(text, i, &e, pregen::Before::List)
            })
        });
    }
    let compressor = PromptCompressor::new(PromptBudget::default());
    let input = CompressInput {
        system_prompt: SYSTEM_PROMPT,
        rag_chunks: &chunks,
        conversation: &conversation,
        conversation_tokens: &[],
        summary: Some("The shopper likes short horror series and asked about Uzumaki."),
        page_context: &page,
        notes: &[],
        user_message: "Tell me more about the first one",
        intent: Intent::ProductQuestion,
    };
    let budget = PromptBudget::default();
    c.bench_function("compress_typical_prompt", |b| {
        b.iter(|| compressor.compress(&Cl100k, black_box(&input), &budget).map(|p| p.total_tokens))
    });
    c.bench_function("raw_tokens_off_path", |b| b.iter(|| raw_tokens(&Cl100k, black_box(&input))));
    // As in production: stored turns and indexed chunks carry their token counts.
    let counted: Vec<Passage> =
        chunks.iter().map(|c| Passage { tokens: Some(Cl100k.count(c.content.trim())), ..c.clone() }).collect();
    let known: Vec<Option<usize>> = conversation.iter().map(|m| Some(Cl100k.count(m.text.trim()))).collect();
    let stored = CompressInput { rag_chunks: &counted, conversation_tokens: &known, ..input };
    c.bench_function("compress_typical_prompt_stored_counts", |b| {
        b.iter(|| compressor.compress(&Cl100k, black_box(&stored), &budget).map(|p| p.total_tokens))
    });
}

criterion_group!(compress, benches);
criterion_main!(compress);
