//! What a follow-up asks beyond naming a product: generic (an overview fits) or specific.
//!
//! Not a list of known generic phrasings: the product reference (ordinal, title, ASIN) is taken out of
//! the [`fold`]ed message, then the request's framing (politeness, "can you tell me", "I'm curious
//! about", "info", "what's it about", "について教えてください", "ってどんな話？", particles) is taken out
//! word by word, and the follow-up is generic only when nothing else is left and the framing asks for
//! information. Any other word (a price, "scary", "anime", "完結", a typo of something unknown) is left over
//! and makes it specific: unsure is specific, so a specific question is never answered with the overview.
//!
//! The framing vocabulary is closed-class words and request forms, not questions: what it lacks costs
//! recall (the model answers), never precision. Typos are forgiven on framing words of four letters or
//! more ([`crate::intent`]'s `near`), never turning a content word into framing (`gore` is not `more`).
//!
//! A reply that only points ("and the second one?", "2つ目は？") asks for whatever was asked last: after
//! the list, an overview; after a specific question ("is the first one scary?"), the same question about
//! another product. So its reading depends on [`Before`].

use std::sync::LazyLock;

use crate::ids::Asin;
use crate::intent::{Entities, Listed, REF_NOUNS, blank, fold, near, ordinals, words};

/// How strongly the framing asks for information about the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cue {
    /// Politeness, fillers, particles: "please", "the", "は".
    None,
    /// A reply that only points: "and", "what about", "?", "について", "も".
    Weak,
    /// An explicit request for information: "tell me", "details", "what's it about", "教えて", "どんな".
    Strong,
}

/// What the shopper said just before this follow-up.
#[derive(Debug, Clone, Copy)]
pub enum Before<'a> {
    /// Not known: a reply that only points is specific.
    Unknown,
    /// The message whose answer is the list the follow-up points into.
    List,
    /// An earlier follow-up about the same list (its text, and the list's titles).
    FollowUp(&'a str, &'a [Listed]),
}

/// How a follow-up reads once its product reference is taken out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// Words outside the framing vocabulary are left: it asks for something particular.
    pub asks_more: bool,
    /// The strongest request for information in its framing.
    pub cue: Cue,
    /// It names more than one product (two ordinals, two titles, another ASIN).
    pub several: bool,
}

impl Reading {
    /// Whether an overview answers it (see the module docs).
    pub fn is_generic(&self, before: Before<'_>) -> bool {
        if self.asks_more || self.several {
            return false;
        }
        match (self.cue, before) {
            (Cue::Strong, _) | (Cue::Weak, Before::List) => true,
            (Cue::Weak, Before::FollowUp(prev, listed)) => {
                let mut e = Entities::default();
                e.resolve_listed(prev, listed);
                let p = read(prev, &e);
                !p.asks_more && !p.several && p.cue == Cue::Strong
            }
            _ => false,
        }
    }
}

/// English framing: words and phrases, each with its cue. Single words of four letters or more also
/// match a typo of them (see the module docs).
const EN: &[(&str, Cue)] = &[
    // Requests for information.
    ("tell", Cue::Strong),
    ("tel", Cue::Strong),
    ("describe", Cue::Strong),
    ("explain", Cue::Strong),
    ("summarize", Cue::Strong),
    ("summarise", Cue::Strong),
    ("sum up", Cue::Strong),
    ("summary", Cue::Strong),
    ("overview", Cue::Strong),
    ("synopsis", Cue::Strong),
    ("plot", Cue::Strong),
    ("premise", Cue::Strong),
    ("story", Cue::Strong),
    ("storyline", Cue::Strong),
    ("gist", Cue::Strong),
    ("rundown", Cue::Strong),
    ("lowdown", Cue::Strong),
    ("info", Cue::Strong),
    ("infos", Cue::Strong),
    ("information", Cue::Strong),
    ("detail", Cue::Strong),
    ("details", Cue::Strong),
    ("detailed", Cue::Strong),
    ("deets", Cue::Strong),
    ("intro", Cue::Strong),
    ("introduction", Cue::Strong),
    ("introduce", Cue::Strong),
    ("elaborate", Cue::Strong),
    ("expand on", Cue::Strong),
    ("background", Cue::Strong),
    ("description", Cue::Strong),
    ("more about", Cue::Strong),
    ("more on", Cue::Strong),
    ("more please", Cue::Strong),
    ("more pls", Cue::Strong),
    ("more plz", Cue::Strong),
    ("know", Cue::Strong),
    ("learn", Cue::Strong),
    ("hear", Cue::Strong),
    ("curious", Cue::Strong),
    ("interested", Cue::Strong),
    ("intrigued", Cue::Strong),
    ("talk about", Cue::Strong),
    ("fill me in", Cue::Strong),
    ("walk me through", Cue::Strong),
    ("run me through", Cue::Strong),
    ("go over", Cue::Strong),
    ("what", Cue::Strong),
    ("what's", Cue::Strong),
    ("whats", Cue::Strong),
    ("wat", Cue::Strong),
    ("what kind of", Cue::Strong),
    ("what sort of", Cue::Strong),
    ("what type of", Cue::Strong),
    ("what is it like", Cue::Strong),
    ("what's it like", Cue::Strong),
    ("whats it like", Cue::Strong),
    // "What's <the product> like?", once the product is taken out.
    ("what's like", Cue::Strong),
    ("what is like", Cue::Strong),
    ("whats like", Cue::Strong),
    ("kwsk", Cue::Strong),
    // Replies that only point.
    ("about", Cue::Weak),
    ("abt", Cue::Weak),
    ("bout", Cue::Weak),
    ("and", Cue::Weak),
    ("also", Cue::Weak),
    ("too", Cue::Weak),
    ("as well", Cue::Weak),
    ("what about", Cue::Weak),
    ("how about", Cue::Weak),
    ("what of", Cue::Weak),
    // "More" alone may ask for more copies or volumes: only a pointer.
    ("more", Cue::Weak),
    // Framing that asks nothing by itself.
    ("please", Cue::None),
    ("pls", Cue::None),
    ("plz", Cue::None),
    ("kindly", Cue::None),
    ("thanks", Cue::None),
    ("thank", Cue::None),
    ("thx", Cue::None),
    ("ty", Cue::None),
    ("cheers", Cue::None),
    ("can", Cue::None),
    ("could", Cue::None),
    ("would", Cue::None),
    ("will", Cue::None),
    ("may", Cue::None),
    ("do", Cue::None),
    ("you", Cue::None),
    ("u", Cue::None),
    ("ya", Cue::None),
    ("your", Cue::None),
    ("ur", Cue::None),
    ("i", Cue::None),
    ("i'm", Cue::None),
    ("im", Cue::None),
    ("i'd", Cue::None),
    ("i've", Cue::None),
    ("me", Cue::None),
    ("my", Cue::None),
    ("we", Cue::None),
    ("us", Cue::None),
    ("the", Cue::None),
    ("a", Cue::None),
    ("an", Cue::None),
    ("this", Cue::None),
    ("that", Cue::None),
    ("that's", Cue::None),
    ("thats", Cue::None),
    ("it", Cue::None),
    ("it's", Cue::None),
    ("its", Cue::None),
    ("thing", Cue::None),
    ("is", Cue::None),
    ("are", Cue::None),
    ("was", Cue::None),
    ("be", Cue::None),
    ("to", Cue::None),
    ("of", Cue::None),
    ("on", Cue::None),
    ("for", Cue::None),
    ("in", Cue::None),
    ("from", Cue::None),
    ("with", Cue::None),
    ("regarding", Cue::None),
    ("re", Cue::None),
    ("concerning", Cue::None),
    ("some", Cue::None),
    ("any", Cue::None),
    ("all", Cue::None),
    ("everything", Cue::None),
    ("anything", Cue::None),
    ("something", Cue::None),
    ("bit", Cue::None),
    ("little", Cue::None),
    ("quick", Cue::None),
    ("quickly", Cue::None),
    ("brief", Cue::None),
    ("briefly", Cue::None),
    ("short", Cue::None),
    ("general", Cue::None),
    ("basic", Cue::None),
    ("basics", Cue::None),
    ("overall", Cue::None),
    ("exactly", Cue::None),
    ("just", Cue::None),
    ("so", Cue::None),
    ("ok", Cue::None),
    ("okay", Cue::None),
    ("oh", Cue::None),
    ("ooh", Cue::None),
    ("ah", Cue::None),
    ("hey", Cue::None),
    ("hi", Cue::None),
    ("hmm", Cue::None),
    ("um", Cue::None),
    ("uh", Cue::None),
    ("well", Cue::None),
    ("then", Cue::None),
    ("now", Cue::None),
    ("cool", Cue::None),
    ("nice", Cue::None),
    ("neat", Cue::None),
    ("awesome", Cue::None),
    ("wow", Cue::None),
    ("really", Cue::None),
    ("actually", Cue::None),
    ("maybe", Cue::None),
    ("btw", Cue::None),
    ("lol", Cue::None),
    ("haha", Cue::None),
    ("w", Cue::None),
    ("ww", Cue::None),
    ("www", Cue::None),
    ("again", Cue::None),
    ("further", Cue::None),
    ("give", Cue::None),
    ("show", Cue::None),
    ("share", Cue::None),
    ("want to", Cue::None),
    ("wanna", Cue::None),
    ("like to", Cue::None),
    ("love to", Cue::None),
    ("keen to", Cue::None),
    // Words that point into the list ("the one you mentioned", "on your list").
    // ("Is it recommended?" asks: these only frame after "you".)
    ("you mentioned", Cue::None),
    ("you listed", Cue::None),
    ("you recommended", Cue::None),
    ("you suggested", Cue::None),
    ("you said", Cue::None),
    ("you showed", Cue::None),
    ("you gave", Cue::None),
    ("you picked", Cue::None),
    ("list", Cue::None),
    ("above", Cue::None),
    ("earlier", Cue::None),
];

/// "sounds good", "looks interesting": a reaction to the list, not a question about the product.
const REACTION_VERBS: &[&str] = &["sounds", "looks", "seems"];
const REACTION_WORDS: &[&str] = &[
    "good",
    "cool",
    "interesting",
    "fun",
    "great",
    "nice",
    "neat",
    "promising",
    "intriguing",
    "awesome",
    "amazing",
    "fascinating",
];

/// Words a slip away from a framing word that mean something else: never forgiven as a typo.
const NOT_A_TYPO: &[&str] = &["retail", "promise", "store", "stores", "detailing", "tall"];

/// Japanese framing, matched longest first along the text (see the module docs).
const JA: &[(&str, Cue)] = &[
    // Requests for information.
    ("教えて", Cue::Strong),
    ("おしえて", Cue::Strong),
    ("教え", Cue::Strong),
    ("詳しく", Cue::Strong),
    ("くわしく", Cue::Strong),
    ("詳しい", Cue::Strong),
    ("詳細", Cue::Strong),
    ("知りたい", Cue::Strong),
    ("しりたい", Cue::Strong),
    ("聞きたい", Cue::Strong),
    ("聞かせて", Cue::Strong),
    ("紹介", Cue::Strong),
    ("しょうかい", Cue::Strong),
    ("あらすじ", Cue::Strong),
    ("粗筋", Cue::Strong),
    ("概要", Cue::Strong),
    ("内容", Cue::Strong),
    ("ストーリー", Cue::Strong),
    ("説明", Cue::Strong),
    ("解説", Cue::Strong),
    ("どんな話", Cue::Strong),
    ("何の話", Cue::Strong),
    ("なんの話", Cue::Strong),
    ("どういう話", Cue::Strong),
    ("どんな", Cue::Strong),
    ("どういう", Cue::Strong),
    ("どのような", Cue::Strong),
    ("何", Cue::Strong),
    ("なに", Cue::Strong),
    ("なん", Cue::Strong),
    ("気になる", Cue::Strong),
    ("気になります", Cue::Strong),
    ("気になって", Cue::Strong),
    ("気になった", Cue::Strong),
    ("興味", Cue::Strong),
    // Replies that only point.
    ("について", Cue::Weak),
    ("に関して", Cue::Weak),
    ("に関する", Cue::Weak),
    ("のこと", Cue::Weak),
    ("も", Cue::Weak),
    // Request forms and politeness.
    ("ください", Cue::None),
    ("下さい", Cue::None),
    ("くれ", Cue::None),
    ("くれる", Cue::None),
    ("くれます", Cue::None),
    ("くれません", Cue::None),
    ("もらえ", Cue::None),
    ("もらえる", Cue::None),
    ("もらえます", Cue::None),
    ("もらえません", Cue::None),
    ("いただけ", Cue::None),
    ("いただけます", Cue::None),
    ("いただけません", Cue::None),
    ("いただきたい", Cue::None),
    ("頂け", Cue::None),
    ("ほしい", Cue::None),
    ("欲しい", Cue::None),
    ("お願い", Cue::None),
    ("おねがい", Cue::None),
    ("願います", Cue::None),
    ("よろしく", Cue::None),
    ("もっと", Cue::None),
    ("もう少し", Cue::None),
    ("もうちょっと", Cue::None),
    ("ちょっと", Cue::None),
    ("少し", Cue::None),
    ("すこし", Cue::None),
    ("して", Cue::None),
    ("します", Cue::None),
    ("する", Cue::None),
    ("感じ", Cue::None),
    ("ちなみに", Cue::None),
    ("じゃあ", Cue::None),
    ("では", Cue::None),
    ("えっと", Cue::None),
    ("なるほど", Cue::None),
    ("笑", Cue::None),
    ("ありがとう", Cue::None),
    ("ございます", Cue::None),
    ("すみません", Cue::None),
    ("すいません", Cue::None),
    // What the product is called and pointed at with.
    ("作品", Cue::None),
    ("漫画", Cue::None),
    ("マンガ", Cue::None),
    ("まんが", Cue::None),
    ("本", Cue::None),
    ("タイトル", Cue::None),
    ("シリーズ", Cue::None),
    ("やつ", Cue::None),
    ("奴", Cue::None),
    ("もの", Cue::None),
    ("こと", Cue::None),
    ("方", Cue::None),
    ("ほう", Cue::None),
    ("それ", Cue::None),
    ("これ", Cue::None),
    ("あれ", Cue::None),
    ("その", Cue::None),
    ("この", Cue::None),
    ("あの", Cue::None),
    ("そちら", Cue::None),
    ("こちら", Cue::None),
    ("さっき", Cue::None),
    ("先ほど", Cue::None),
    ("挙げてくれた", Cue::None),
    ("挙げた", Cue::None),
    ("紹介してくれた", Cue::Strong),
    ("おすすめしてくれた", Cue::None),
    ("おすすめされた", Cue::None),
    ("リスト", Cue::None),
    ("中で", Cue::None),
    // Particles and endings.
    ("でしょうか", Cue::None),
    ("でしょう", Cue::None),
    ("ですか", Cue::None),
    ("ますか", Cue::None),
    ("ですが", Cue::None),
    ("ですけど", Cue::None),
    ("んですが", Cue::None),
    ("んですけど", Cue::None),
    ("んだけど", Cue::None),
    ("けど", Cue::None),
    ("です", Cue::None),
    ("でした", Cue::None),
    ("ます", Cue::None),
    ("ました", Cue::None),
    ("なの", Cue::None),
    ("って", Cue::None),
    ("は", Cue::None),
    ("が", Cue::None),
    ("を", Cue::None),
    ("に", Cue::None),
    ("で", Cue::None),
    ("と", Cue::None),
    ("の", Cue::None),
    ("や", Cue::None),
    ("へ", Cue::None),
    ("か", Cue::None),
    ("な", Cue::None),
    ("ね", Cue::None),
    ("よ", Cue::None),
    ("わ", Cue::None),
    ("さ", Cue::None),
    ("ぞ", Cue::None),
    ("だ", Cue::None),
    ("て", Cue::None),
    ("っ", Cue::None),
    ("ん", Cue::None),
];

/// Japanese words made of framing pieces that ask something: "why" (なんで = なん + で), and counted
/// quantities ("何巻", how many volumes).
const JA_ASKS: &[&str] = &[
    "なんで",
    "何で",
    "なぜ",
    "何故",
    "どうして",
    "何歳",
    "何巻",
    "何冊",
    "何話",
    "何円",
    "何年",
    "何月",
    "何日",
    "何人",
    "何回",
    "何時",
];

/// [`EN`] split into words, with the reactions ("sounds good") and the list's nouns ("one", "title").
static EN_PHRASES: LazyLock<Vec<(Vec<&'static str>, Cue)>> = LazyLock::new(|| {
    let mut v: Vec<(Vec<&'static str>, Cue)> = EN.iter().map(|(p, c)| (p.split_whitespace().collect(), *c)).collect();
    for verb in REACTION_VERBS {
        for word in REACTION_WORDS {
            v.push((vec![verb, word], Cue::None));
        }
    }
    v.extend(REF_NOUNS.iter().map(|n| (vec![*n], Cue::None)));
    // Longest first, so "what about" wins over "what".
    v.sort_by_key(|(words, _)| std::cmp::Reverse(words.len()));
    v
});

/// [`JA`], longest first.
static JA_PHRASES: LazyLock<Vec<(&'static str, Cue)>> = LazyLock::new(|| {
    let mut v = JA.to_vec();
    v.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    v
});

fn word_matches(typed: &str, framing: &str) -> bool {
    typed == framing
        || (framing.len() >= 4
            && typed.len().abs_diff(framing.len()) <= 1
            && !NOT_A_TYPO.contains(&typed)
            && near(typed, framing))
}

/// The English framing of `rest` (product reference blanked): the strongest cue, and whether a word
/// outside the framing is left.
fn english(rest: &str) -> (bool, Cue) {
    let ws: Vec<&str> = words(rest).iter().map(|w| w.text).filter(|w| *w != "#").collect();
    let mut cue = Cue::None;
    let mut i = 0;
    while i < ws.len() {
        let hit = EN_PHRASES.iter().find(|(phrase, _)| {
            ws.len() - i >= phrase.len() && phrase.iter().enumerate().all(|(k, p)| word_matches(ws[i + k], p))
        });
        match hit {
            Some((phrase, c)) => {
                cue = cue.max(*c);
                i += phrase.len();
            }
            None => return (true, cue),
        }
    }
    (false, cue)
}

/// Characters that neither ask nor frame: punctuation, symbols, emoji, the long-vowel mark and the wave
/// dash of casual writing ("教えて〜", "詳しくー").
fn ignorable(c: char) -> bool {
    !c.is_alphanumeric() || matches!(c, 'ー' | '〜' | '～' | '々')
}

/// The Japanese framing of `rest`: as [`english`], over the text that is not ASCII.
fn japanese(rest: &str) -> (bool, Cue) {
    let mut cue = Cue::None;
    let mut i = 0;
    while i < rest.len() {
        let tail = &rest[i..];
        let Some(c) = tail.chars().next() else { break };
        if c.is_ascii() || ignorable(c) {
            i += c.len_utf8();
            continue;
        }
        if JA_ASKS.iter().any(|a| tail.starts_with(a)) {
            return (true, cue);
        }
        match JA_PHRASES.iter().find(|(p, _)| tail.starts_with(p)) {
            Some((p, k)) => {
                cue = cue.max(*k);
                i += p.len();
            }
            None => return (true, cue),
        }
    }
    (false, cue)
}

/// ASINs written in a folded message (lower case there), with where.
fn written_asins(folded: &str) -> Vec<(String, std::ops::Range<usize>)> {
    words(folded)
        .into_iter()
        .filter(|w| w.text.len() == 10 && w.text.starts_with("b0"))
        .map(|w| (w.text.to_ascii_uppercase(), w.start..w.end))
        .collect()
}

/// Reads `text` (see the module docs): the product reference `entities` found (its ordinals, the titles
/// of [`Entities::resolve_listed`] that name the resolved product, its ASINs) is taken out, then the
/// framing.
pub fn read(text: &str, entities: &Entities) -> Reading {
    let folded = fold(text);
    let target = entities.resolved.as_ref();
    let mut spans: Vec<std::ops::Range<usize>> = Vec::new();
    let mut several = false;
    for m in &entities.titles {
        if Some(&m.asin) == target {
            spans.push(m.span.clone());
        } else if m.whole {
            several = true;
        }
    }
    let untitled = blank(&folded, spans.iter().cloned());
    let found = ordinals(&untitled);
    several |= found.iter().any(|o| o.ordinal != found[0].ordinal);
    spans.extend(found.into_iter().map(|o| o.span));
    for (asin, span) in written_asins(&folded) {
        several |= target.is_some_and(|t| t.as_str() != asin);
        spans.push(span);
    }
    let rest = blank(&folded, spans);
    let (en_more, en_cue) = english(&rest);
    let (ja_more, ja_cue) = japanese(&rest);
    let question = if rest.contains('?') { Cue::Weak } else { Cue::None };
    Reading { asks_more: en_more || ja_more, cue: en_cue.max(ja_cue).max(question), several }
}

/// Whether `asin` was resolved from a part of a title only ("the Diary one"), with no ordinal and no
/// whole title: good enough for an overview, not for opening a specific answer about it.
pub fn by_part_only(entities: &Entities, asin: &Asin) -> bool {
    entities.ordinal.is_none()
        && entities.asins.is_empty()
        && !entities.titles.iter().any(|m| m.whole && m.asin == *asin)
        && entities.titles.iter().any(|m| m.asin == *asin)
}

/// Whether the message is in Japanese, in English, or neither (`None`: only a product reference,
/// digits and punctuation, such as "#2?" or a title alone), once the titles and ASINs it names are
/// taken out: "Paper Diaryについて教えて" is Japanese, "Tell me about 紙の日記" English.
pub fn language(text: &str, entities: &Entities) -> Option<bool> {
    let folded = fold(text);
    let mut spans: Vec<std::ops::Range<usize>> = entities.titles.iter().map(|m| m.span.clone()).collect();
    spans.extend(written_asins(&folded).into_iter().map(|(_, s)| s));
    let rest = blank(&folded, spans);
    if crate::intent::is_japanese(&rest) {
        Some(true)
    } else if rest.chars().any(|c| c.is_ascii_alphabetic()) {
        Some(false)
    } else {
        None
    }
}
