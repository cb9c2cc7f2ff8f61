//! The Bedrock emulator's answers: deterministic functions of the prompt, so tests and benchmarks can
//! assert on them. The products (ASINs) that appear in the context are recommended in order of appearance
//! (only the one named by the `refers_to` note when the prompt has it), in Japanese when the question is
//! Japanese, padded to about the requested length. The prompt's sections are found through the
//! compressor's own tags.

use mangaassist_core::compress::{PAGE, QUESTION, REFERS_TO, Tag};
use mangaassist_core::ids::Asin;

/// Token estimate for answer lengths (the core's BPE-free estimate).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(mangaassist_core::tokenizer::Tokenizer::count(&mangaassist_core::tokenizer::Heuristic, text))
        .unwrap_or(u32::MAX)
}

fn is_japanese(text: &str) -> bool {
    text.chars().any(|c| matches!(c as u32, 0x3040..=0x30FF | 0x4E00..=0x9FFF))
}

/// Splits an answer into model-like tokens: a word with its leading space, long words in 4-byte pieces,
/// Japanese two characters at a time.
pub fn tokenize_answer(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in text.chars() {
        let boundary = (c == ' ' || c == '\n') && !cur.trim().is_empty();
        let full = if c.is_ascii() { cur.len() >= 6 && cur.is_ascii() } else { cur.chars().count() >= 2 };
        if boundary || full || (!c.is_ascii() && cur.is_ascii() && !cur.trim().is_empty()) {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The deterministic answer for a prompt (see module docs).
pub fn answer_for(context: &str, question: &str, target_tokens: u32) -> String {
    // What a model would put first: the product the shopper refers to (`refers_to=<ASIN>`), then ASINs in
    // the question, then the page the shopper is on, then the rest of the context.
    let section = |tag: Tag| tag.section(context).unwrap_or_default();
    // The shopper's own words: the question section of a compressed prompt, else the whole message.
    let asked = Some(section(QUESTION)).filter(|q| !q.is_empty()).unwrap_or(question);
    let focus = context
        .split(&format!("{REFERS_TO}="))
        .nth(1)
        .map(|rest| &rest[..rest.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(rest.len())])
        .and_then(|a| Asin::parse(a).ok());
    let products: Vec<Asin> = match &focus {
        Some(a) => vec![a.clone()],
        None => {
            let mut v: Vec<Asin> = Vec::new();
            for a in [Asin::all_in(asked), Asin::all_in(section(PAGE)), Asin::all_in(context)].concat() {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
            v
        }
    };
    let ja = is_japanese(asked);
    let mut out = String::new();
    if let Some(intro) = focus.as_ref().and_then(|a| introduction(context, a, ja)) {
        // One product in focus: a neutral introduction first (what a pre-generated answer's opening is).
        out.push_str(&intro);
        out.push_str(if ja {
            "絵と構成の評価が高く、第1巻から読み始めるのがおすすめです。"
        } else {
            " Readers praise its art and pacing; volume 1 is the best place to start."
        });
    } else if ja {
        out.push_str("ご質問ありがとうございます。");
        if products.is_empty() {
            out.push_str(
                "該当する商品は見つかりませんでしたが、ジャンルや好きな作品を教えていただければお探しします。",
            );
        } else {
            out.push_str("おすすめはこちらです:\n");
            for (i, p) in products.iter().take(3).enumerate() {
                out.push_str(&format!("{}. {p} は人気の高い作品で、第1巻から読み始めるのがおすすめです。\n", i + 1));
            }
        }
    } else {
        out.push_str("Thanks for asking! ");
        if products.is_empty() {
            out.push_str(
                "I could not find a matching title, but tell me a genre or a series you like and I will look again.",
            );
        } else {
            out.push_str("Here are my picks:\n");
            for (i, p) in products.iter().take(3).enumerate() {
                out.push_str(&format!(
                    "{}. {p} is a popular series with strong reviews; volume 1 is the best place to start.\n",
                    i + 1
                ));
            }
        }
    }
    // Padding to about the requested length: each sentence once, never the same one twice.
    let fillers: &[&str] = if ja { FILLER_JA } else { FILLER_EN };
    for f in fillers {
        if estimate_tokens(&out) >= target_tokens {
            break;
        }
        out.push_str(f);
    }
    out
}

const FILLER_EN: &[&str] = &[
    " You can also ask me about new volumes, stock or delivery times.",
    " Box sets ship together and usually arrive within one to three days.",
    " Members earn a point for every 100 yen on each volume.",
    " Tell me what you liked about it and I will suggest similar series.",
    " Digital editions are delivered to the reader app right after purchase.",
];
const FILLER_JA: &[&str] = &[
    "新刊の予約や在庫状況もお気軽にお尋ねください。",
    "全巻セットはまとめて発送し、通常1〜3日でお届けします。",
    "会員の方は100円ごとに1ポイントが貯まります。",
    "お好みを教えていただければ、似た作品もご紹介します。",
    "電子版はご購入後すぐにリーダーアプリでお読みいただけます。",
];

/// The product record the context holds for `asin` (`product:<asin>: {json}`), as a neutral first sentence:
/// its title, genre and length.
fn introduction(context: &str, asin: &Asin, ja: bool) -> Option<String> {
    let marker = format!("product:{asin}: ");
    let start = context.find(&marker)? + marker.len();
    let record: serde_json::Value = serde_json::Deserializer::from_str(&context[start..]).into_iter().next()?.ok()?;
    let text = |k: &str| record.get(k).and_then(serde_json::Value::as_str);
    let volumes = record.get("volumes").and_then(serde_json::Value::as_u64).unwrap_or(1);
    let genre = text("genre").unwrap_or("manga");
    Some(if ja {
        format!("{}は全{volumes}巻の{genre}作品です。", text("title_ja").or(text("title_en"))?)
    } else {
        format!("{} is a {genre} manga in {volumes} volumes.", text("title_en").or(text("title_ja"))?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_mention_context_products_in_order() {
        let a = answer_for("see B0AAAAAAA1 and B0BBBBBBB2", "any horror?", 10);
        let first = a.find("B0AAAAAAA1").unwrap();
        let second = a.find("B0BBBBBBB2").unwrap();
        assert!(first < second);
    }

    #[test]
    fn the_language_follows_the_question_not_the_retrieved_context() {
        let prompt =
            "<context>\n渦巻く年代記は人気シリーズです。\n</context>\n<question>\nShow me horror manga\n</question>";
        assert!(answer_for(prompt, prompt, 10).starts_with("Thanks for asking"));
        let prompt = "<context>\nSpiral Chronicle is popular.\n</context>\n<question>\nおすすめは?\n</question>";
        assert!(answer_for(prompt, prompt, 10).starts_with("ご質問"));
    }

    #[test]
    fn japanese_questions_get_japanese_answers() {
        assert!(answer_for("B0AAAAAAA1", "おすすめは?", 10).contains("おすすめ"));
    }

    #[test]
    fn tokens_concatenate_back_to_the_answer() {
        let a = answer_for("B0AAAAAAA1", "おすすめは? and more", 120);
        assert_eq!(tokenize_answer(&a).concat(), a);
        assert!(tokenize_answer(&a).len() > 20);
    }

    #[test]
    fn an_answer_about_one_product_opens_with_a_neutral_introduction_and_never_repeats_itself() {
        let ctx = r#"<context>
product:B0SPIRAL01: {"asin":"B0SPIRAL01","title_en":"Spiral Chronicle","title_ja":"渦巻く年代記","genre":"horror","volumes":12}
</context>
<page>refers_to=B0SPIRAL01</page>
<question>
Tell me more about the first one
</question>"#;
        let a = answer_for(ctx, ctx, 400);
        assert!(a.starts_with("Spiral Chronicle is a horror manga in 12 volumes."), "{a}");
        for f in FILLER_EN {
            assert!(a.matches(f.trim()).count() <= 1, "{a}");
        }
        let ja = ctx.replace("Tell me more about the first one", "1つ目について詳しく教えて");
        assert!(answer_for(&ja, &ja, 90).starts_with("渦巻く年代記は全12巻のhorror作品です。"));
    }
}
