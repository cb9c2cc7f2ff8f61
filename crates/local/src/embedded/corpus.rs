//! A synthetic, seeded, reproducible request corpus: a manga catalog with Japanese and English titles (the
//! embedded [`super::catalog`] is built on it), and for the compression benchmark (`mangaassist bench
//! --scenario compression`) RAG chunks of varied length and score (with near-duplicates), conversations
//! of 1-30 messages, page contexts, and shoppers' questions in both languages.
//!
//! One request mirrors the compressor's inputs; the JSONL format of `bench --corpus FILE` is the same:
//! `{"system_prompt":"...","rag_chunks":[{"content":"...","score":0.8}],"conversation":[{"role":"user",
//! "content":"..."}],"summary":null,"page_context":{...},"user_message":"...","intent":null}`.

use mangaassist_core::ids::Asin;
use mangaassist_core::protocol::{PageContext, Section};
use serde::{Deserialize, Serialize};

/// One product of the generated catalog.
#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub asin: String,
    pub title_en: String,
    pub title_ja: String,
    pub genre: &'static str,
    pub volumes: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorpusChunk {
    pub content: String,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorpusMessage {
    pub role: String,
    pub content: String,
}

/// One compressor input.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CorpusRequest {
    pub system_prompt: String,
    #[serde(default)]
    pub rag_chunks: Vec<CorpusChunk>,
    #[serde(default)]
    pub conversation: Vec<CorpusMessage>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub page_context: PageContext,
    pub user_message: String,
    /// `null`: classify the message.
    #[serde(default)]
    pub intent: Option<String>,
}

const EN_A: [&str; 12] =
    ["Blade", "Moon", "Iron", "Spiral", "Silent", "Crimson", "Last", "Paper", "Hollow", "Star", "Ghost", "Summer"];
const EN_B: [&str; 12] = [
    "Chronicle",
    "Academy",
    "Hunter",
    "Garden",
    "Requiem",
    "Kitchen",
    "Frontier",
    "Detective",
    "Saga",
    "Diary",
    "Circus",
    "Dragon",
];
const JA_A: [&str; 12] =
    ["蒼き", "月下の", "鋼の", "渦巻く", "静かなる", "紅の", "最後の", "紙の", "虚ろな", "星降る", "幽霊の", "夏の"];
const JA_B: [&str; 12] =
    ["年代記", "学園", "狩人", "庭園", "鎮魂歌", "食卓", "辺境", "探偵", "物語", "日記", "曲芸団", "竜"];
const GENRES: [&str; 8] = ["horror", "fantasy", "romance", "sports", "mystery", "sci-fi", "slice-of-life", "action"];

const EN_QUESTIONS: [&str; 10] = [
    "Can you recommend something like {t}?",
    "Tell me more about the first one",
    "How many volumes does {t} have and is it finished?",
    "Is volume 1 of {t} in stock?",
    "Show me new {g} releases this month",
    "Where is my order 112-4433221-7788990?",
    "I want to return a damaged copy of {t}",
    "Any discount on {g} manga this week?",
    "My cart won't let me checkout with a coupon",
    "What is the shipping fee to Okinawa?",
];
const JA_QUESTIONS: [&str; 8] = [
    "{t}みたいなおすすめの漫画はありますか?",
    "2つ目について詳しく教えてください",
    "{t}は全何巻ですか?完結していますか?",
    "{g}の新刊を探しています",
    "注文した本がまだ届かないのですが",
    "{t}を返品したいです",
    "今週のセールはありますか?",
    "送料はいくらですか?",
];

/// A seeded generator.
pub struct Generator {
    rng: fastrand::Rng,
    pub catalog: Vec<Product>,
}

impl Generator {
    pub fn new(seed: u64, catalog_size: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let catalog = (0..catalog_size)
            .map(|i| {
                let (a, b) = (rng.usize(..EN_A.len()), rng.usize(..EN_B.len()));
                let suffix: String = (0..7).map(|_| rng.alphanumeric().to_ascii_uppercase()).collect();
                Product {
                    asin: format!("B0{}{suffix}", i % 10),
                    title_en: format!("{} {}", EN_A[a], EN_B[b]),
                    title_ja: format!("{}{}", JA_A[a], JA_B[b]),
                    genre: GENRES[rng.usize(..GENRES.len())],
                    volumes: rng.u32(1..=60),
                }
            })
            .collect();
        Self { rng, catalog }
    }

    fn product(&mut self) -> Product {
        self.catalog[self.rng.usize(..self.catalog.len())].clone()
    }

    fn description(&mut self, p: &Product) -> String {
        let sentences = [
            format!("{} ({}) is a {} series in {} volumes.", p.title_en, p.title_ja, p.genre, p.volumes),
            format!("ASIN {}. Readers praise its art and pacing; the first volume sets up the world quickly.", p.asin),
            "The story follows a young protagonist who discovers a hidden talent and a dangerous secret.".to_owned(),
            "Later arcs widen the cast and the stakes, with several volumes of tournament-style battles.".to_owned(),
            format!("{}は{}巻まで刊行されている人気シリーズです。", p.title_ja, p.volumes),
            "Deluxe hardcover editions collect two volumes each and include colour pages.".to_owned(),
            "The anime adaptation covers roughly the first third of the manga.".to_owned(),
            "Shipping usually takes one to two days within Japan; Okinawa and remote islands take longer.".to_owned(),
        ];
        let n = self.rng.usize(1..=sentences.len());
        let start = self.rng.usize(..sentences.len());
        (0..n).map(|i| sentences[(start + i) % sentences.len()].clone()).collect::<Vec<_>>().join(" ")
    }

    fn question(&mut self, p: &Product) -> String {
        let ja = self.rng.f32() < 0.4;
        let t = if ja { &p.title_ja } else { &p.title_en };
        let tpl = if ja {
            JA_QUESTIONS[self.rng.usize(..JA_QUESTIONS.len())]
        } else {
            EN_QUESTIONS[self.rng.usize(..EN_QUESTIONS.len())]
        };
        tpl.replace("{t}", t).replace("{g}", p.genre)
    }

    fn answer(&mut self, p: &Product) -> String {
        let mut a = format!(
            "{} ({}, ASIN {}) is a {} series with {} volumes. Readers like the art and the pacing.",
            p.title_en, p.title_ja, p.asin, p.genre, p.volumes
        );
        for _ in 0..self.rng.usize(0..4) {
            let q = self.product();
            a.push_str(&format!(" You might also enjoy {} (ASIN {}), {} volumes.", q.title_en, q.asin, q.volumes));
        }
        a
    }

    /// The verbose system prompt a first draft would send: the template with indentation and blank lines.
    fn system_prompt(&mut self) -> String {
        let mut s = String::new();
        for line in mangaassist_core::prompt::SYSTEM_PROMPT.lines() {
            s.push_str("    ");
            s.push_str(line);
            s.push_str("\n\n");
        }
        s
    }

    /// One request.
    pub fn request(&mut self) -> CorpusRequest {
        let p = self.product();
        let rag_chunks = (0..self.rng.usize(3..=8))
            .map(|_| {
                let q = self.product();
                CorpusChunk { content: self.description(&q), score: self.rng.f32() * 0.8 + 0.15 }
            })
            .collect::<Vec<_>>();
        let mut rag_chunks = rag_chunks;
        if self.rng.f32() < 0.3
            && let Some(c) = rag_chunks.first().cloned()
        {
            rag_chunks.push(CorpusChunk { content: format!("{} ", c.content), score: c.score * 0.9 });
        }
        let len = self.rng.usize(1..=30);
        let conversation: Vec<CorpusMessage> = (0..len)
            .map(|i| {
                let q = self.product();
                if i % 2 == 0 {
                    CorpusMessage { role: "user".into(), content: self.question(&q) }
                } else {
                    CorpusMessage { role: "assistant".into(), content: self.answer(&q) }
                }
            })
            .collect();
        let summary = (len > 4 && self.rng.bool()).then(|| {
            format!("The shopper is looking for {} manga and asked about {} (ASIN {}).", p.genre, p.title_en, p.asin)
        });
        // The catalog's ASINs and genre names are well formed (the corpus test checks every page).
        let asin = |a: String| Asin::parse(a).ok();
        let current_asin = if self.rng.bool() { asin(p.asin.clone()) } else { None };
        let store_section = Section::parse(p.genre).ok();
        let browsing_history = (0..self.rng.usize(0..=6)).filter_map(|_| asin(self.product().asin)).collect();
        let cart_asins = (0..self.rng.usize(0..=4)).filter_map(|_| asin(self.product().asin)).collect();
        let page = PageContext { browsing_history, cart_asins, current_asin, store_section };
        CorpusRequest {
            system_prompt: self.system_prompt(),
            rag_chunks,
            conversation,
            summary,
            page_context: page,
            user_message: self.question(&p),
            intent: None,
        }
    }
}

/// `n` requests from `seed`.
pub fn generate(seed: u64, n: usize) -> Vec<CorpusRequest> {
    let mut g = Generator::new(seed, 300);
    (0..n).map(|_| g.request()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_is_reproducible_from_its_seed() {
        let a = serde_json::to_string(&generate(7, 20)).unwrap();
        assert_eq!(a, serde_json::to_string(&generate(7, 20)).unwrap());
        assert_ne!(a, serde_json::to_string(&generate(8, 20)).unwrap());
    }

    #[test]
    fn requests_round_trip_through_the_jsonl_format() {
        for r in generate(1, 5) {
            let line = serde_json::to_string(&r).unwrap();
            let back: CorpusRequest = serde_json::from_str(&line).unwrap();
            assert_eq!(back.user_message, r.user_message);
            assert!((1..=30).contains(&back.conversation.len()));
            assert_eq!(back.page_context, r.page_context);
        }
    }

    #[test]
    fn every_page_is_well_formed() {
        // The generator drops a malformed ASIN or section instead of failing: there is none to drop.
        let g = Generator::new(3, 300);
        assert!(g.catalog.iter().all(|p| Asin::is_valid(&p.asin) && Section::parse(p.genre).is_ok()));
        let requests = generate(3, 300);
        assert!(requests.iter().all(|r| r.page_context.store_section.is_some()));
        assert!(requests.iter().any(|r| r.page_context.current_asin.is_some()));
        assert!(requests.iter().any(|r| !r.page_context.browsing_history.is_empty()));
        assert!(requests.iter().any(|r| !r.page_context.cart_asins.is_empty()));
    }
}
