//! The Bedrock emulator's answers: deterministic functions of the prompt, so tests and benchmarks can
//! assert on them, written to read like a shop assistant's answers.
//!
//! - The products (ASINs) that appear in the prompt are recommended: those of the question, the page, this
//!   turn's context, then the rest of the prompt (history), each in order of appearance (only the one named by
//!   the `refers_to` note when the prompt has it), each by its title with its ASIN in brackets (the
//!   system prompt asks for the ASIN: the turn finds the answer's products by it), its genre, length, price
//!   and stock: from the product record in the context when there is one, else from the embedded catalog.
//! - Without products, the first help passage in the question's language is quoted (shipping, returns...).
//! - In Japanese when the question is Japanese.
//! - Lengthened to about the requested number of tokens with sentences about the same products, then a
//!   few general ones; no sentence is ever said twice, and nothing is added once the target is reached.
//!
//! The prompt's sections are found through the compressor's own tags.

use mangaassist_core::intent::is_japanese;
use std::sync::LazyLock;

use mangaassist_core::ids::Asin;
use mangaassist_core::prompt::compress::{CONTEXT, PAGE, QUESTION, REFERS_TO, Tag};
use serde_json::Value;

use crate::embedded::catalog::{Catalog, genre_ja};

/// The catalog `serve` and the bench use: where a title missing from the prompt is looked up.
static CATALOG: LazyLock<Catalog> = LazyLock::new(Catalog::default);

/// Token estimate for answer lengths (the core's BPE-free estimate).
pub fn estimate_tokens(text: &str) -> u32 {
    u32::try_from(mangaassist_core::tokenizer::Tokenizer::count(&mangaassist_core::tokenizer::Heuristic, text))
        .unwrap_or(u32::MAX)
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

/// What the answer says about one product.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    asin: Asin,
    title_en: String,
    title_ja: String,
    genre: String,
    volumes: u64,
    price_jpy: Option<u64>,
    in_stock: Option<bool>,
    complete: Option<bool>,
    rating: Option<f64>,
    reviews: Option<u64>,
}

impl Facts {
    /// The product record the context holds (`product:<asin>: {json}`), completed from the catalog; `None`
    /// when neither knows the product.
    fn lookup(context: &str, asin: &Asin) -> Option<Self> {
        let record = record_in(context, asin);
        let known = CATALOG.product(asin.as_str());
        if record.is_none() && known.is_none() {
            return None;
        }
        let field = |k: &str| record.as_ref().and_then(|r| r.get(k));
        let text = |k: &str| field(k).and_then(Value::as_str).map(str::to_owned);
        let title_en = text("title_en").or_else(|| known.map(|p| p.title_en.clone()));
        let title_ja = text("title_ja").or_else(|| known.map(|p| p.title_ja.clone()));
        let (title_en, title_ja) = match (title_en, title_ja) {
            (Some(en), Some(ja)) => (en, ja),
            (Some(one), None) | (None, Some(one)) => (one.clone(), one),
            (None, None) => return None,
        };
        Some(Self {
            asin: asin.clone(),
            title_en,
            title_ja,
            genre: text("genre").or_else(|| known.map(|p| p.genre.to_owned())).unwrap_or_else(|| "manga".into()),
            volumes: field("volumes").and_then(Value::as_u64).or(known.map(|p| u64::from(p.volumes))).unwrap_or(1),
            price_jpy: field("price_jpy").and_then(Value::as_u64).or(known.map(|p| u64::from(p.price_jpy))),
            in_stock: field("in_stock").and_then(Value::as_bool).or(known.map(|p| p.in_stock)),
            complete: field("complete").and_then(Value::as_bool).or(known.map(|p| p.complete)),
            rating: known.map(|p| f64::from(p.rating)),
            reviews: known.map(|p| u64::from(p.review_count)),
        })
    }

    /// The neutral first sentence of an answer about this product alone (what a pre-generated answer's
    /// opening is, so it must not depend on the question's wording).
    fn introduction(&self, ja: bool) -> String {
        if ja {
            format!("{}は全{}巻の{}作品です。", self.title_ja, self.volumes, genre_ja(&self.genre))
        } else {
            format!("{} is {} {} manga in {} volumes.", self.title_en, article(&self.genre), self.genre, self.volumes)
        }
    }

    /// One line of a list: `1. Title (ASIN): a complete horror series in 12 volumes, ¥594 a volume, in stock.`
    fn list_item(&self, n: usize, ja: bool) -> String {
        let mut parts = Vec::new();
        if ja {
            let status = match self.complete {
                Some(true) => "完結済みの",
                Some(false) => "連載中の",
                None => "",
            };
            parts.push(format!("全{}巻の{status}{}作品", self.volumes, genre_ja(&self.genre)));
            parts.extend(self.price_jpy.map(|p| format!("1冊{p}円")));
            parts.extend(self.in_stock.map(|s| if s { "在庫あり" } else { "現在在庫切れ" }.to_owned()));
            format!("{n}. {}({}):{}。", self.title_ja, self.asin, parts.join("、"))
        } else {
            let status = match self.complete {
                Some(true) => "complete ",
                Some(false) => "ongoing ",
                None => "",
            };
            let what = format!("{status}{} series in {} volumes", self.genre, self.volumes);
            parts.push(format!("{} {what}", article(&what)));
            parts.extend(self.price_jpy.map(|p| format!("¥{p} a volume")));
            parts.extend(self.in_stock.map(|s| if s { "in stock" } else { "out of stock for now" }.to_owned()));
            format!("{n}. {} ({}): {}.", self.title_en, self.asin, parts.join(", "))
        }
    }

    /// What readers think, when the catalog knows.
    fn reception(&self, ja: bool) -> Option<String> {
        let (rating, count) = (self.rating?, self.reviews.filter(|&c| c > 0)?);
        Some(if ja {
            format!("{}は{count}件のレビューで平均{rating:.1}点です。", self.title_ja)
        } else {
            format!(" {} is rated {rating:.1} by {count} readers.", self.title_en)
        })
    }
}

/// `a` or `an` before `word`.
fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" }
}

/// The JSON record that follows `product:<asin>: ` in the context, if any.
fn record_in(context: &str, asin: &Asin) -> Option<Value> {
    let marker = format!("product:{asin}: ");
    let start = context.find(&marker)? + marker.len();
    serde_json::Deserializer::from_str(&context[start..]).into_iter::<Value>().next()?.ok().filter(Value::is_object)
}

/// FNV-1a: picks one of several phrasings deterministically from the question.
fn pick<'a>(options: &[&'a str], key: &str) -> &'a str {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    options[usize::try_from(h % options.len() as u64).unwrap_or(0)]
}

/// The first help passage (no product in it, not a service record) in the answer's language: its first
/// two sentences.
fn help_passage(context: &str, ja: bool) -> Option<String> {
    let body = CONTEXT.section(context)?;
    let passage = body.split("\n---\n").map(str::trim).find(|p| {
        !p.is_empty()
            && Asin::all_in(p).is_empty()
            && !p.contains(": {")
            && is_japanese(p) == ja
            && (if ja { p.chars().count() > 12 } else { p.split_whitespace().count() > 3 })
    })?;
    let sentences = split_sentences(passage, ja);
    // A policy page opens with its name ("Shipping policy.", "配送について。"): skip it.
    let heading = |s: &str| if ja { s.chars().count() <= 8 } else { s.split_whitespace().count() <= 2 };
    let skip = usize::from(sentences.first().is_some_and(|s| heading(s)));
    let picked: Vec<&str> = sentences.iter().skip(skip).take(2).map(String::as_str).collect();
    (!picked.is_empty()).then(|| picked.join(if ja { "" } else { " " }))
}

fn split_sentences(text: &str, ja: bool) -> Vec<String> {
    let end: &[char] = if ja { &['。', '?', '？'] } else { &['.', '?', '!'] };
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        cur.push(c);
        let at_end = end.contains(&c) && (ja || chars.peek().is_none_or(|n| n.is_whitespace()));
        if at_end {
            out.push(cur.trim().to_owned());
            cur.clear();
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_owned());
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
            // This turn's retrieved context before the history the rest of the prompt holds.
            let ordered = [asked, section(PAGE), section(CONTEXT), context].map(Asin::all_in).concat();
            for a in ordered {
                if !v.contains(&a) {
                    v.push(a);
                }
            }
            v
        }
    };
    let ja = is_japanese(asked);
    let mut out = String::new();
    // Sentences that may lengthen the answer, most relevant first.
    let mut more: Vec<String> = Vec::new();
    if let Some(facts) = focus.as_ref().and_then(|a| Facts::lookup(context, a)) {
        // One product in focus: a neutral introduction first (what a pre-generated answer's opening is).
        out.push_str(&facts.introduction(ja));
        out.push_str(if ja {
            "絵と構成の評価が高く、第1巻から読み始めるのがおすすめです。"
        } else {
            " Readers praise its art and pacing; volume 1 is the best place to start."
        });
        let price = facts.price_jpy.map(|p| if ja { format!("1冊{p}円") } else { format!("¥{p} a volume") });
        match (price, facts.in_stock) {
            (Some(p), Some(true)) => out.push_str(&if ja {
                format!("{p}で、在庫があります。")
            } else {
                format!(" It is {p} and in stock.")
            }),
            (Some(p), Some(false)) => out.push_str(&if ja {
                format!("{p}ですが、現在在庫切れです。")
            } else {
                format!(" It is {p}, but out of stock for now.")
            }),
            (Some(p), None) => {
                out.push_str(&if ja { format!("価格は{p}です。") } else { format!(" It is {p}.") })
            }
            (None, _) => {}
        }
        more.extend(facts.reception(ja));
    } else if !products.is_empty() {
        let listed: Vec<(Asin, Option<Facts>)> =
            products.iter().take(3).map(|a| (a.clone(), Facts::lookup(context, a))).collect();
        out.push_str(&if ja {
            pick(
                &[
                    "おすすめの作品はこちらです。\n",
                    "こちらの作品はいかがでしょうか。\n",
                    "お探しの作品に近いものを選びました。\n",
                ],
                asked,
            )
            .to_owned()
        } else {
            let n = ["one", "two", "three"][listed.len() - 1];
            let pick_one = pick(
                &["Here are {n} I think you'll enjoy:\n", "You might like these {n}:\n", "I'd start with these {n}:\n"],
                asked,
            );
            pick_one.replace("{n}", n)
        });
        for (i, (asin, facts)) in listed.iter().enumerate() {
            let line = match facts {
                Some(f) => f.list_item(i + 1, ja),
                None if ja => format!("{}. {asin}:ご覧のページで詳細をご確認いただけます。", i + 1),
                None => format!("{}. {asin}: details are on its product page.", i + 1),
            };
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(if ja {
            "気になる作品があれば「1つ目について詳しく」のようにお尋ねください。"
        } else {
            "Ask me about any of them (\"tell me more about the first one\") for details."
        });
        more.extend(listed.iter().filter_map(|(_, f)| f.as_ref()?.reception(ja)));
    } else if let Some(help) = help_passage(context, ja) {
        out.push_str(if ja { "ご案内します。" } else { "Here's how it works: " });
        out.push_str(&help);
    } else {
        out.push_str(if ja {
            "ご質問ありがとうございます。該当する作品が見つかりませんでした。好きなジャンルや作品名を教えていただければ、もう一度お探しします。"
        } else {
            "Thanks for asking! I couldn't find a matching title; tell me a genre or a series you like and I'll look again."
        });
    }
    // Lengthening to about the requested size: the products' own sentences, then general ones; each once.
    // A general sentence whose subject the answer already covers (its key) is left out.
    let general = if ja { MORE_JA } else { MORE_EN };
    let fresh = general.iter().filter(|(key, _)| !out.contains(key)).map(|(_, s)| *s).collect::<Vec<_>>();
    for s in more.iter().map(String::as_str).chain(fresh) {
        if estimate_tokens(&out) >= target_tokens {
            break;
        }
        if !out.contains(s.trim()) {
            if !ja && !s.starts_with(' ') && !out.ends_with(['\n', ' ']) {
                out.push(' ');
            }
            out.push_str(s);
        }
    }
    out
}

/// `(key, sentence)`: general sentences that may lengthen an answer that does not mention `key` yet.
const MORE_EN: &[(&str, &str)] = &[
    ("2,000", " Orders of ¥2,000 or more ship free within Japan."),
    ("box set", " Complete box sets cost about 10% less than single volumes."),
    ("point", " Every ¥100 you spend earns one point toward your next order."),
    ("igital", " Digital editions open in the reader app right after purchase."),
];
const MORE_JA: &[(&str, &str)] = &[
    ("2,000円", "2,000円以上のご注文は国内送料無料です。"),
    ("全巻セット", "全巻セットは1巻ずつ買うより約10%お得です。"),
    ("ポイント", "お買い物100円ごとに1ポイントが貯まります。"),
    ("電子", "電子版はご購入後すぐにリーダーアプリで読めます。"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog_asins(n: usize) -> Vec<String> {
        CATALOG.products().iter().take(n).map(|p| p.asin.clone()).collect()
    }

    fn sentences(text: &str) -> Vec<String> {
        text.split(['.', '。', '\n']).map(str::trim).filter(|s| s.len() > 3).map(str::to_owned).collect()
    }

    #[test]
    fn answers_mention_context_products_in_order() {
        let a = answer_for("see B0AAAAAAA1 and B0BBBBBBB2", "any horror?", 10);
        let first = a.find("B0AAAAAAA1").unwrap();
        let second = a.find("B0BBBBBBB2").unwrap();
        assert!(first < second);
    }

    #[test]
    fn a_recommendation_names_each_product_by_its_catalog_title_with_its_asin() {
        let asins = catalog_asins(3);
        let ctx = format!(
            "<context>\n{}\n</context>\n<question>\nShow me some horror manga\n</question>",
            asins.join("\n---\n")
        );
        let a = answer_for(&ctx, &ctx, 90);
        for asin in &asins {
            let p = CATALOG.product(asin).unwrap();
            assert!(a.contains(&format!("{} ({asin})", p.title_en)), "{a}");
            assert!(a.contains(&format!("¥{} a volume", p.price_jpy)), "{a}");
        }
        assert!(!a.contains("popular series") && !a.contains(" a ongoing") && !a.contains(" a action"), "{a}");
    }

    #[test]
    fn no_sentence_is_said_twice_at_any_length() {
        let asins = catalog_asins(3);
        for target in [10, 90, 200, 400] {
            for q in ["Show me some horror manga", "ホラー漫画を教えて"] {
                let ctx = format!("{}\n<question>\n{q}\n</question>", asins.join(" "));
                let a = answer_for(&ctx, &ctx, target);
                let s = sentences(&a);
                let mut unique = s.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), s.len(), "{a}");
            }
        }
    }

    #[test]
    fn the_answer_is_near_the_requested_length_and_deterministic() {
        let asins = catalog_asins(3);
        let ctx = format!("{}\n<question>\nany recommendations?\n</question>", asins.join(" "));
        let a = answer_for(&ctx, &ctx, 90);
        assert_eq!(a, answer_for(&ctx, &ctx, 90));
        let n = estimate_tokens(&a);
        assert!((70..=130).contains(&n), "{n} tokens: {a}");
    }

    #[test]
    fn the_language_follows_the_question_not_the_retrieved_context() {
        let prompt =
            "<context>\n渦巻く年代記は人気シリーズです。\n</context>\n<question>\nShow me horror manga\n</question>";
        assert!(!is_japanese(&answer_for(prompt, prompt, 10)));
        let prompt = "<context>\nSpiral Chronicle is popular.\n</context>\n<question>\nおすすめは?\n</question>";
        assert!(is_japanese(&answer_for(prompt, prompt, 10)));
    }

    #[test]
    fn japanese_questions_get_japanese_answers() {
        let asin = &catalog_asins(1)[0];
        let a = answer_for(asin, "おすすめは?", 10);
        assert!(a.contains(&format!("{}({asin})", CATALOG.product(asin).unwrap().title_ja)), "{a}");
    }

    #[test]
    fn a_help_question_quotes_the_passage_in_its_language() {
        let ctx = "<context>\nShipping policy. Orders of 2,000 yen or more ship free within Japan; smaller orders pay a \
                   410 yen shipping fee. Standard delivery takes one to two days.\n---\n配送について。2,000円以上のご注文は\
                   送料無料です。\n</context>\n<question>\nHow much is shipping?\n</question>";
        let a = answer_for(ctx, ctx, 10);
        assert!(a.contains("Orders of 2,000 yen or more ship free within Japan"), "{a}");
        assert!(!a.contains("Shipping policy."), "{a}");
        let ja = ctx.replace("How much is shipping?", "送料はいくら?");
        let a = answer_for(&ja, &ja, 90);
        assert!(a.contains("2,000円以上のご注文は送料無料です。") && !a.contains("配送について"), "{a}");
        assert_eq!(a.matches("2,000円").count(), 1, "the shipping rule is said once: {a}");
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
product:B0SPIRAL01: {"asin":"B0SPIRAL01","title_en":"Spiral Chronicle","title_ja":"渦巻く年代記","genre":"horror","volumes":12,"price_jpy":594,"in_stock":true}
</context>
<page>refers_to=B0SPIRAL01</page>
<question>
Tell me more about the first one
</question>"#;
        let a = answer_for(ctx, ctx, 400);
        assert!(a.starts_with("Spiral Chronicle is a horror manga in 12 volumes."), "{a}");
        assert!(a.contains("It is ¥594 a volume and in stock."), "{a}");
        for (_, s) in MORE_EN {
            assert!(a.matches(s.trim()).count() <= 1, "{a}");
        }
        let ja = ctx.replace("Tell me more about the first one", "1つ目について詳しく教えて");
        assert!(answer_for(&ja, &ja, 90).starts_with("渦巻く年代記は全12巻のホラー作品です。"));
    }
}
